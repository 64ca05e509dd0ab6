// Tests for cai/algorithms/safe_rlhf.hpp: the Safe-RLHF cost-model loss (sequence-wise and token-wise) against
// PyTorch autograd golden values (tests/golden/gen_safe_rlhf.py), an independent long-double reference and finite
// differences; the PPO-Lagrangian multiplier against torch SGD on log lambda step by step, with its cap, delay,
// window and state round trip; the Lagrangian advantage and the reward-shaping baseline for K constraints; the
// per-token costs as the mirror image of token_rewards; and bad input rejected with the argument named.
#include <cai/algorithms/safe_rlhf.hpp>
#include <cai/core/host.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../golden/golden.hpp"
#include "../support.hpp"
#include "kl_reference.hpp"
#include "sequence_batch.hpp"

namespace {

using ld = long double;
namespace kl = cai::kl;
constexpr double nan_d = std::numeric_limits<double>::quiet_NaN();

const cai_test::golden& gold() {
  static const cai_test::golden g("safe_rlhf.txt");
  return g;
}

// -log s(x) = softplus(-x), written as max(-x, 0) + log(1 + e^-|x|) in long double.
ld nls(ld x) { return (x < 0 ? -x : 0.0L) + std::log1p(std::exp(-std::fabs(x))); }
// s(x) through tanh (a different route from the library's exp form).
ld sig(ld x) { return 0.5L + 0.5L * std::tanh(x / 2); }
// Cost sign: +1 for an unsafe response (is_safe = 0), -1 for a safe one.
ld csign(std::uint8_t is_safe) { return is_safe ? -1.0L : 1.0L; }

/// |got - want| <= rel |want| + abs.
bool within(ld got, ld want, ld rel, ld abs) { return std::fabs(got - want) <= rel * std::fabs(want) + abs; }

template <class R>
struct tol_of {
  static constexpr ld rel = std::is_same_v<R, float> ? 1.2e-7L : 1e-13L;  // one fp32 rounding of a double result
  static constexpr ld abs = std::is_same_v<R, float> ? 1e-30L : 1e-16L;
};

template <class T>
std::vector<std::uint8_t> as_u8(const std::vector<T>& v) {
  std::vector<std::uint8_t> o(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) o[i] = static_cast<std::uint8_t>(v[i]);
  return o;
}

// ----- sequence-wise reference ---------------------------------------------------------------------------------------

struct seq_ref {
  ld loss = 0, acc = 0, sacc = 0, mean_l = 0, mean_h = 0;
  std::vector<ld> dl, dh, losses;
};

template <class R>
seq_ref reference_seq(const std::vector<R>& l, const std::vector<R>& h, const std::vector<std::uint8_t>& ls,
                      const std::vector<std::uint8_t>& hs, double reg) {
  const std::size_t n = l.size();
  seq_ref r;
  r.dl.resize(n);
  r.dh.resize(n);
  r.losses.resize(n);
  const ld B = static_cast<ld>(n);
  ld sq = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const ld cl = static_cast<ld>(l[i]), ch = static_cast<ld>(h[i]), gl = csign(ls[i]), gh = csign(hs[i]);
    const ld pair = nls(ch - cl) + nls(gl * cl) + nls(gh * ch);
    r.losses[i] = pair + static_cast<ld>(reg) * (cl * cl + ch * ch) / 2;
    r.loss += pair / B;
    sq += cl * cl + ch * ch;
    // d/dx softplus(-x) = -s(-x).
    r.dl[i] = (sig(cl - ch) - gl * sig(-gl * cl) + static_cast<ld>(reg) * cl) / B;
    r.dh[i] = (-sig(cl - ch) - gh * sig(-gh * ch) + static_cast<ld>(reg) * ch) / B;
    r.acc += (ch > cl ? 1.0L : 0.0L) / B;
    r.sacc += ((gl * cl > 0 ? 0.5L : 0.0L) + (gh * ch > 0 ? 0.5L : 0.0L)) / B;
    r.mean_l += cl / B;
    r.mean_h += ch / B;
  }
  r.loss += static_cast<ld>(reg) * sq / (2 * B);
  return r;
}

template <class R>
struct seq_run {
  cai::cost_model_result res;
  std::vector<R> dl, dh, losses;
};

template <class R>
seq_run<R> run_seq(const std::vector<R>& l, const std::vector<R>& h, const std::vector<std::uint8_t>& ls,
                   const std::vector<std::uint8_t>& hs, double reg) {
  const auto n = static_cast<std::int64_t>(l.size());
  seq_run<R> o;
  o.dl.assign(l.size(), R(77));
  o.dh.assign(l.size(), R(77));
  o.losses.assign(l.size(), R(77));
  o.res = cai::cost_model_loss(cai::host{},
                               cai::cost_pair_batch<R>{cai::make_view(l.data(), {n}), cai::make_view(h.data(), {n}),
                                                       cai::make_view(ls.data(), {n}), cai::make_view(hs.data(), {n})},
                               cai::cost_pair_grads<R>{cai::make_view(o.dl.data(), {n}), cai::make_view(o.dh.data(), {n}),
                                                       cai::make_view(o.losses.data(), {n})},
                               {.l2_coef = reg});
  return o;
}

template <class R>
double seq_loss_only(const std::vector<R>& l, const std::vector<R>& h, const std::vector<std::uint8_t>& ls,
                     const std::vector<std::uint8_t>& hs, double reg) {
  const auto n = static_cast<std::int64_t>(l.size());
  return cai::cost_model_loss(cai::host{},
                              cai::cost_pair_batch<R>{cai::make_view(l.data(), {n}), cai::make_view(h.data(), {n}),
                                                      cai::make_view(ls.data(), {n}), cai::make_view(hs.data(), {n})},
                              {}, {.l2_coef = reg})
      .loss;
}

template <class R>
void check_seq_against(const seq_run<R>& got, const seq_ref& want, std::size_t n) {
  using tol = tol_of<R>;
  CHECK(got.res.count == static_cast<std::int64_t>(n));
  INFO("loss " << got.res.loss << " want " << static_cast<double>(want.loss));
  CHECK(within(got.res.loss, want.loss, 1e-13L, 1e-16L));  // computed in double from the stored values
  CHECK(within(got.res.accuracy, want.acc, 1e-15L, 0));  // count * (1/B) against count / B
  CHECK(within(got.res.sign_accuracy, want.sacc, 1e-15L, 0));
  CHECK(within(got.res.safer_mean, want.mean_l, 1e-13L, 1e-15L));
  CHECK(within(got.res.unsafer_mean, want.mean_h, 1e-13L, 1e-15L));
  for (std::size_t i = 0; i < n; ++i) {
    INFO("pair " << i << " dl " << got.dl[i] << " want " << static_cast<double>(want.dl[i]) << " dh " << got.dh[i] << " want "
                 << static_cast<double>(want.dh[i]) << " loss " << got.losses[i] << " want " << static_cast<double>(want.losses[i]));
    CHECK(within(got.dl[i], want.dl[i], tol::rel, tol::abs));
    CHECK(within(got.dh[i], want.dh[i], tol::rel, tol::abs));
    CHECK(within(got.losses[i], want.losses[i], tol::rel, tol::abs));
  }
}

// ----- token-wise reference ------------------------------------------------------------------------------------------

struct tok_case {
  std::int64_t B = 0, T = 0;
  std::vector<double> safer, unsafer;  // (B, T) costs
  std::vector<std::uint8_t> safer_mask, unsafer_mask, safer_is_safe, unsafer_is_safe;
  std::vector<std::int64_t> safer_ids, unsafer_ids;
  std::size_t at(std::int64_t i, std::int64_t t) const { return static_cast<std::size_t>(i * T + t); }
};

struct tok_ref {
  ld loss = 0, acc = 0, sacc = 0, mean_l = 0, mean_h = 0;
  std::vector<ld> dl, dh, losses;
  std::vector<std::int64_t> begin, end;
};

std::int64_t last_one(const std::vector<std::uint8_t>& m, std::int64_t T, std::int64_t i) {
  std::int64_t e = -1;
  for (std::int64_t t = 0; t < T; ++t)
    if (m[static_cast<std::size_t>(i * T + t)]) e = t;
  return e;
}

// The slice [first differing id, later last mask-1 index] found by a forward scan, then the three means and the L2
// mean over the 2k slice values; gradients written term by term.
template <class R>
tok_ref reference_tok(const tok_case& c, const std::vector<R>& lo, const std::vector<R>& hi, double reg) {
  tok_ref r;
  const auto n = static_cast<std::size_t>(c.B * c.T);
  r.dl.assign(n, 0);
  r.dh.assign(n, 0);
  const ld B = static_cast<ld>(c.B);
  for (std::int64_t i = 0; i < c.B; ++i) {
    std::int64_t d = 0;
    while (c.safer_ids[c.at(i, d)] == c.unsafer_ids[c.at(i, d)]) ++d;
    const std::int64_t el = last_one(c.safer_mask, c.T, i), eh = last_one(c.unsafer_mask, c.T, i);
    const std::int64_t e = std::max(el, eh);
    r.begin.push_back(d);
    r.end.push_back(e + 1);
    const ld k = static_cast<ld>(e + 1 - d), gl = csign(c.safer_is_safe[static_cast<std::size_t>(i)]),
             gh = csign(c.unsafer_is_safe[static_cast<std::size_t>(i)]);
    ld pair = 0, sl = 0, sh = 0, sq = 0;
    for (std::int64_t t = d; t <= e; ++t) {
      const ld x = static_cast<ld>(lo[c.at(i, t)]), y = static_cast<ld>(hi[c.at(i, t)]);
      pair += nls(y - x);
      sl += nls(gl * x);
      sh += nls(gh * y);
      sq += x * x + y * y;
      r.dl[c.at(i, t)] = (sig(x - y) / k - gl * sig(-gl * x) / k + static_cast<ld>(reg) * x / k) / B;
      r.dh[c.at(i, t)] = (-sig(x - y) / k - gh * sig(-gh * y) / k + static_cast<ld>(reg) * y / k) / B;
    }
    const ld li = pair / k + sl / k + sh / k + static_cast<ld>(reg) * sq / (2 * k);
    r.losses.push_back(li);
    r.loss += li / B;
    const ld xl = static_cast<ld>(lo[c.at(i, el)]), xh = static_cast<ld>(hi[c.at(i, eh)]);
    r.acc += (xh > xl ? 1.0L : 0.0L) / B;
    r.sacc += ((gl * xl > 0 ? 0.5L : 0.0L) + (gh * xh > 0 ? 0.5L : 0.0L)) / B;
    r.mean_l += xl / B;
    r.mean_h += xh / B;
  }
  return r;
}

template <class R>
struct tok_run {
  cai::cost_model_result res;
  std::vector<R> dl, dh, losses;
};

template <class R>
tok_run<R> run_tok(const tok_case& c, const std::vector<R>& lo, const std::vector<R>& hi, double reg, bool grads = true) {
  tok_run<R> o;
  const auto n = static_cast<std::size_t>(c.B * c.T);
  o.dl.assign(n, R(55));
  o.dh.assign(n, R(55));
  o.losses.assign(static_cast<std::size_t>(c.B), R(55));
  const cai::scored_tokens<R> un{cai::make_view(hi.data(), {c.B, c.T}), cai::make_view(c.unsafer_mask.data(), {c.B, c.T}),
                                 cai::make_view(c.unsafer_ids.data(), {c.B, c.T})};
  const cai::scored_tokens<R> sa{cai::make_view(lo.data(), {c.B, c.T}), cai::make_view(c.safer_mask.data(), {c.B, c.T}),
                                 cai::make_view(c.safer_ids.data(), {c.B, c.T})};
  cai::token_pair_grads<R> g{};
  if (grads)
    g = {cai::make_view(o.dh.data(), {c.B, c.T}), cai::make_view(o.dl.data(), {c.B, c.T}), cai::make_view(o.losses.data(), {c.B})};
  o.res = cai::cost_model_tokenwise_loss(cai::host{}, un, sa, cai::make_view(c.unsafer_is_safe.data(), {c.B}),
                                         cai::make_view(c.safer_is_safe.data(), {c.B}), g, {.l2_coef = reg});
  return o;
}

template <class R>
void check_tok_against(const tok_case& c, const tok_run<R>& got, const tok_ref& want) {
  using tol = tol_of<R>;
  CHECK(got.res.count == c.B);
  INFO("loss " << got.res.loss << " want " << static_cast<double>(want.loss));
  CHECK(within(got.res.loss, want.loss, 1e-13L, 1e-16L));
  CHECK(within(got.res.accuracy, want.acc, 1e-15L, 0));  // count * (1/B) against count / B
  CHECK(within(got.res.sign_accuracy, want.sacc, 1e-15L, 0));
  CHECK(within(got.res.safer_mean, want.mean_l, 1e-13L, 1e-15L));
  CHECK(within(got.res.unsafer_mean, want.mean_h, 1e-13L, 1e-15L));
  for (std::int64_t i = 0; i < c.B; ++i) {
    INFO("pair " << i << " loss " << got.losses[static_cast<std::size_t>(i)] << " want " << static_cast<double>(want.losses[static_cast<std::size_t>(i)]));
    CHECK(within(got.losses[static_cast<std::size_t>(i)], want.losses[static_cast<std::size_t>(i)], tol::rel, tol::abs));
    for (std::int64_t t = 0; t < c.T; ++t) {
      const std::size_t k = c.at(i, t);
      const bool inside = t >= want.begin[static_cast<std::size_t>(i)] && t < want.end[static_cast<std::size_t>(i)];
      INFO("token " << t << " inside " << inside << " dl " << got.dl[k] << " want " << static_cast<double>(want.dl[k]) << " dh "
                    << got.dh[k] << " want " << static_cast<double>(want.dh[k]));
      if (!inside) {
        CHECK(got.dl[k] == R(0));
        CHECK(got.dh[k] == R(0));
      } else {
        CHECK(within(got.dl[k], want.dl[k], tol::rel, tol::abs));
        CHECK(within(got.dh[k], want.dh[k], tol::rel, tol::abs));
      }
    }
  }
}

/// Random token-wise pairs: a shared prefix of p ids (p = 0 in some rows), then different ids; right padding with
/// id 0; one row where the unsafer response extends the safer one (they differ at the safer one's first pad), one
/// where the responses differ only at their last token.
tok_case make_tok_case(std::int64_t B, std::int64_t T, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  auto uni = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen); };
  std::normal_distribution<double> nd(0.0, 2.0);
  tok_case c;
  c.B = B;
  c.T = T;
  const auto n = static_cast<std::size_t>(B * T);
  c.safer.resize(n);
  c.unsafer.resize(n);
  for (auto& x : c.safer) x = nd(gen);
  for (auto& x : c.unsafer) x = nd(gen);
  c.safer_mask.assign(n, 0);
  c.unsafer_mask.assign(n, 0);
  c.safer_ids.assign(n, 0);
  c.unsafer_ids.assign(n, 0);
  for (std::int64_t i = 0; i < B; ++i) {
    std::int64_t p = uni(0, T / 2), ls = uni(p + 1, T), lh = uni(p + 1, T);
    if (i % 5 == 3) {  // the unsafer response extends the safer one
      ls = uni(1, T - 1);
      lh = uni(ls + 1, T);
      p = ls;
    }
    if (i % 5 == 4) {  // the same ids up to the last token of equally long responses
      ls = lh = uni(1, T);
      p = ls - 1;
    }
    for (std::int64_t t = 0; t < ls; ++t) {
      c.safer_ids[c.at(i, t)] = uni(1, 49);
      c.safer_mask[c.at(i, t)] = 1;
    }
    for (std::int64_t t = 0; t < lh; ++t) {
      c.unsafer_ids[c.at(i, t)] = t < p ? c.safer_ids[c.at(i, t)] : uni(50, 99);
      c.unsafer_mask[c.at(i, t)] = 1;
    }
    c.safer_is_safe.push_back(static_cast<std::uint8_t>(i % 2));
    c.unsafer_is_safe.push_back(static_cast<std::uint8_t>((i / 2) % 2));
  }
  // End costs of exactly 0 (a sign counts only when sigma c > 0 strictly).
  c.safer[c.at(0, last_one(c.safer_mask, T, 0))] = 0.0;
  if (B > 2) c.unsafer[c.at(2, last_one(c.unsafer_mask, T, 2))] = 0.0;
  return c;
}

template <class R>
std::vector<R> to(const std::vector<double>& v) {
  return std::vector<R>(v.begin(), v.end());
}

tok_case golden_tok_case() {
  const auto& g = gold();
  tok_case c;
  c.B = static_cast<std::int64_t>(g["tok.shape"][0]);
  c.T = static_cast<std::int64_t>(g["tok.shape"][1]);
  c.safer = g["tok.safer"];
  c.unsafer = g["tok.unsafer"];
  c.safer_mask = as_u8(g["tok.safer_mask"]);
  c.unsafer_mask = as_u8(g["tok.unsafer_mask"]);
  c.safer_is_safe = as_u8(g["tok.safer_is_safe"]);
  c.unsafer_is_safe = as_u8(g["tok.unsafer_is_safe"]);
  c.safer_ids = g.as<std::int64_t>("tok.safer_ids");
  c.unsafer_ids = g.as<std::int64_t>("tok.unsafer_ids");
  return c;
}

}  // namespace

// =====================================================================================================================
// cost_model_loss (sequence-wise)
// =====================================================================================================================

TEMPLATE_TEST_CASE("cost_model_loss matches the safe-rlhf torch autograd golden values", "[preference][safe_rlhf][golden]", float, double) {
  using R = TestType;
  using tol = tol_of<R>;
  const auto& g = gold();
  const auto l = g.as<R>("seq.safer"), h = g.as<R>("seq.unsafer");
  const auto ls = as_u8(g["seq.safer_is_safe"]), hs = as_u8(g["seq.unsafer_is_safe"]);
  for (const std::string tag : {"l2_0", "l2_1e-3", "l2_0.25"}) {
    const std::string p = "seq." + tag + ".";
    INFO("case " << tag);
    const double reg = g[p + "l2"][0];
    const auto got = run_seq(l, h, ls, hs, reg);
    CHECK(within(got.res.loss, g[p + "loss"][0], 1e-14L, 0));
    CHECK(within(got.res.accuracy, g[p + "accuracy"][0], 1e-15L, 0));
    CHECK(within(got.res.sign_accuracy, g[p + "sign_accuracy"][0], 1e-15L, 0));
    CHECK(got.res.count == static_cast<std::int64_t>(l.size()));
    for (std::size_t i = 0; i < l.size(); ++i) {
      INFO("pair " << i);
      CHECK(within(got.dl[i], g[p + "dsafer"][i], tol::rel, tol::abs));
      CHECK(within(got.dh[i], g[p + "dunsafer"][i], tol::rel, tol::abs));
      CHECK(within(got.losses[i], g[p + "losses"][i], tol::rel, tol::abs));
    }
  }
}

TEMPLATE_TEST_CASE("cost_model_loss matches a long-double reference for every safety-label combination and L2", "[preference][safe_rlhf]", float, double) {
  using R = TestType;
  std::mt19937_64 gen(101);
  std::normal_distribution<double> nd(0.0, 3.0);
  const std::size_t n = 24;
  std::vector<R> l(n), h(n);
  std::vector<std::uint8_t> ls(n), hs(n);
  for (std::size_t i = 0; i < n; ++i) {
    l[i] = static_cast<R>(nd(gen));
    h[i] = static_cast<R>(nd(gen));
    ls[i] = static_cast<std::uint8_t>(i % 2);
    hs[i] = static_cast<std::uint8_t>((i / 2) % 2);
  }
  h[5] = l[5];  // a tie: counts as wrong
  for (const double reg : {0.0, 0.001, 0.3}) {
    INFO("l2 " << reg);
    check_seq_against(run_seq(l, h, ls, hs, reg), reference_seq(l, h, ls, hs, reg), n);
  }
  SECTION("each label combination on its own") {
    for (std::uint8_t a = 0; a < 2; ++a)
      for (std::uint8_t b = 0; b < 2; ++b) {
        INFO("safer_is_safe " << int(a) << " unsafer_is_safe " << int(b));
        const std::vector<std::uint8_t> la(n, a), lb(n, b);
        check_seq_against(run_seq(l, h, la, lb, 0.01), reference_seq(l, h, la, lb, 0.01), n);
      }
  }
  SECTION("by hand: both costs 0 give 3 log 2 per pair and sign accuracy 0") {
    const std::vector<R> z(3, R(0));
    const std::vector<std::uint8_t> la{1, 0, 1}, lb{0, 0, 1};
    const auto got = run_seq(z, z, la, lb, 0.5);
    CHECK(got.res.loss == Approx(3 * std::log(2.0)).epsilon(1e-15));
    CHECK(got.res.accuracy == 0.0);
    CHECK(got.res.sign_accuracy == 0.0);
    // d/dc_l = (s(0) - sigma_l s(0)) / 3: 0 for an unsafe safer response (sigma +1), 1/3 for a safe one.
    CHECK(static_cast<double>(got.dl[0]) == Approx(1.0 / 3).epsilon(1e-7));
    CHECK(got.dl[1] == R(0));
    CHECK(static_cast<double>(got.dh[1]) == Approx(-1.0 / 3).epsilon(1e-7));
    CHECK(got.dh[2] == R(0));
  }
}

TEST_CASE("cost_model_loss gradients match finite differences of its loss", "[preference][safe_rlhf]") {
  std::mt19937_64 gen(202);
  std::normal_distribution<double> nd(0.0, 2.5);
  const std::size_t n = 16;
  std::vector<double> l(n), h(n);
  std::vector<std::uint8_t> ls(n), hs(n);
  for (std::size_t i = 0; i < n; ++i) {
    l[i] = nd(gen);
    h[i] = nd(gen);
    ls[i] = static_cast<std::uint8_t>((i * 7) % 2);
    hs[i] = static_cast<std::uint8_t>((i / 3) % 2);
  }
  for (const double reg : {0.0, 0.2}) {
    const auto got = run_seq(l, h, ls, hs, reg);
    for (std::size_t i = 0; i < n; ++i)
      for (int side = 0; side < 2; ++side) {
        auto& v = side == 0 ? l : h;
        const double x = v[i], step = 1e-5 * (1 + std::fabs(x));
        v[i] = x + step;
        const double up = seq_loss_only(l, h, ls, hs, reg);
        v[i] = x - step;
        const double down = seq_loss_only(l, h, ls, hs, reg);
        v[i] = x;
        const double fd = (up - down) / (2 * step), an = side == 0 ? got.dl[i] : got.dh[i];
        INFO("l2 " << reg << " pair " << i << " side " << side << " fd " << fd << " analytic " << an);
        CHECK(std::fabs(fd - an) <= 1e-8 + 1e-6 * std::fabs(an));
      }
  }
}

TEMPLATE_TEST_CASE("cost_model_loss stays finite at extreme costs and handles a batch of one", "[preference][safe_rlhf]", float, double) {
  using R = TestType;
  SECTION("costs up to +-1e3") {
    const std::vector<R> l{R(1000), R(-1000), R(1000), R(-1000), R(0), R(500), R(-700), R(1000)};
    const std::vector<R> h{R(-1000), R(1000), R(1000), R(-1000), R(1000), R(-500), R(-699.5), R(999)};
    const std::vector<std::uint8_t> ls{1, 0, 1, 0, 1, 1, 0, 0}, hs{0, 1, 1, 0, 0, 1, 0, 1};
    for (const double reg : {0.0, 0.001}) {
      const auto got = run_seq(l, h, ls, hs, reg);
      CHECK(std::isfinite(got.res.loss));
      for (std::size_t i = 0; i < l.size(); ++i) {
        CHECK(std::isfinite(got.dl[i]));
        CHECK(std::isfinite(got.dh[i]));
        CHECK(std::isfinite(got.losses[i]));
      }
      check_seq_against(got, reference_seq(l, h, ls, hs, reg), l.size());
    }
    // Pair 0: a safe safer response at +1000 above an unsafe one at -1000: each term costs about 2000, 1000, 1000.
    const auto got = run_seq(l, h, ls, hs, 0.0);
    CHECK(static_cast<double>(got.losses[0]) == Approx(4000.0).epsilon(1e-7));
    CHECK(static_cast<double>(got.dl[0]) == Approx(2.0 / 8).epsilon(1e-7));
    CHECK(static_cast<double>(got.dh[0]) == Approx(-2.0 / 8).epsilon(1e-7));
  }
  SECTION("a batch of one: the gradient is not divided") {
    const std::vector<R> l{R(-0.5)}, h{R(1.25)};
    const std::vector<std::uint8_t> ls{1}, hs{0};
    const auto got = run_seq(l, h, ls, hs, 0.1);
    check_seq_against(got, reference_seq(l, h, ls, hs, 0.1), 1);
    CHECK(got.res.loss == Approx(static_cast<double>(got.losses[0])).epsilon(1e-7));
    CHECK(got.res.accuracy == 1.0);
    CHECK(got.res.sign_accuracy == 1.0);
    CHECK(got.res.safer_mean == -0.5);
    CHECK(got.res.unsafer_mean == 1.25);
  }
  SECTION("an empty batch gives zeros") {
    const std::vector<R> e;
    const std::vector<std::uint8_t> f;
    const auto r = cai::cost_model_loss(cai::host{}, cai::cost_pair_batch<R>{cai::make_view(e.data(), {0}), cai::make_view(e.data(), {0}),
                                                                              cai::make_view(f.data(), {0}), cai::make_view(f.data(), {0})});
    CHECK(r.count == 0);
    CHECK(r.loss == 0.0);
  }
  SECTION("gradient and loss outputs are optional") {
    const std::vector<R> l{R(0.5), R(-2)}, h{R(1.25), R(3)};
    const std::vector<std::uint8_t> ls{1, 1}, hs{0, 0};
    std::vector<R> dh(2, R(9));
    const auto r = cai::cost_model_loss(cai::host{},
                                        cai::cost_pair_batch<R>{cai::make_view(l.data(), {2}), cai::make_view(h.data(), {2}),
                                                                cai::make_view(ls.data(), {2}), cai::make_view(hs.data(), {2})},
                                        cai::cost_pair_grads<R>{.unsafer = cai::make_view(dh.data(), {2})});
    const auto full = run_seq(l, h, ls, hs, 0.0);
    CHECK(r.loss == full.res.loss);
    CHECK(dh == full.dh);
  }
}

TEST_CASE("cost_model_loss rejects bad input naming the argument", "[preference][safe_rlhf]") {
  cai::host hb;
  std::vector<double> l{0.5, 1.0, -1.0}, h{1.0, 2.0, 0.0}, g(3), g2(2);
  std::vector<std::uint8_t> ls{1, 0, 1}, hs{0, 0, 1};
  auto batch = [&](std::int64_t nh) {
    return cai::cost_pair_batch<double>{cai::make_view(l.data(), {3}), cai::make_view(h.data(), {nh}), cai::make_view(ls.data(), {3}),
                                        cai::make_view(hs.data(), {3})};
  };
  REQUIRE(cai::cost_model_loss(hb, batch(3)).count == 3);
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(2))), cai::shape_error, "cai::cost_model_loss", "'unsafer'", "one value per sequence (3)", "got 2");
  h[1] = nan_d;
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3))), cai::invalid_argument, "'unsafer'", "finite values", "nan at 1");
  h[1] = 2.0;
  l[2] = std::numeric_limits<double>::infinity();
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3))), cai::invalid_argument, "'safer'", "finite values", "inf at 2");
  l[2] = -1.0;
  ls[1] = 2;
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3))), cai::invalid_argument, "'safer_is_safe'", "values 0 or 1", "2 at 1");
  ls[1] = 0;
  hs[0] = 255;
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3))), cai::invalid_argument, "'unsafer_is_safe'", "values 0 or 1", "255 at 0");
  hs[0] = 0;
  auto no_labels = batch(3);
  no_labels.unsafer_is_safe = {};
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, no_labels)), cai::invalid_argument, "'unsafer_is_safe'", "safety labels", "none");
  auto short_labels = batch(3);
  short_labels.safer_is_safe = cai::make_view(ls.data(), {2});
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, short_labels)), cai::shape_error, "'safer_is_safe'", "got 2");
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3), cai::cost_pair_grads<double>{.safer = cai::make_view(g2.data(), {2})})),
                            cai::shape_error, "'grads.safer'", "got 2");
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3), cai::cost_pair_grads<double>{.unsafer = cai::make_view(g2.data(), {2})})),
                            cai::shape_error, "'grads.unsafer'");
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3), cai::cost_pair_grads<double>{.losses = cai::make_view(g2.data(), {2})})),
                            cai::shape_error, "'grads.losses'");
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3), {}, {.l2_coef = -0.1})), cai::invalid_argument, "'l2_coef'", ">= 0");
  CAI_REQUIRE_THROWS_NAMING((cai::cost_model_loss(hb, batch(3), {}, {.l2_coef = nan_d})), cai::invalid_argument, "'l2_coef'");
}

// =====================================================================================================================
// cost_model_tokenwise_loss
// =====================================================================================================================

TEMPLATE_TEST_CASE("cost_model_tokenwise_loss matches the safe-rlhf torch autograd golden values", "[preference][safe_rlhf][golden]", float, double) {
  using R = TestType;
  using tol = tol_of<R>;
  const auto& g = gold();
  const tok_case c = golden_tok_case();
  const auto lo = to<R>(c.safer), hi = to<R>(c.unsafer);
  for (const std::string tag : {"l2_0", "l2_0.05"}) {
    const std::string p = "tok." + tag + ".";
    INFO("case " << tag);
    const double reg = g[p + "l2"][0];
    const auto got = run_tok(c, lo, hi, reg);
    CHECK(within(got.res.loss, g[p + "loss"][0], 1e-14L, 0));
    CHECK(within(got.res.accuracy, g[p + "accuracy"][0], 1e-15L, 0));
    CHECK(within(got.res.sign_accuracy, g[p + "sign_accuracy"][0], 1e-15L, 0));
    CHECK(within(got.res.safer_mean, g[p + "safer_mean"][0], 1e-14L, 1e-16L));
    CHECK(within(got.res.unsafer_mean, g[p + "unsafer_mean"][0], 1e-14L, 1e-16L));
    const auto& sbeg = g[p + "slice_begin"];
    const auto& send = g[p + "slice_end"];
    for (std::int64_t i = 0; i < c.B; ++i) {
      INFO("pair " << i);
      CHECK(within(got.losses[static_cast<std::size_t>(i)], g[p + "losses"][static_cast<std::size_t>(i)], tol::rel, tol::abs));
      for (std::int64_t t = 0; t < c.T; ++t) {
        INFO("token " << t);
        const std::size_t k = c.at(i, t);
        const bool inside = static_cast<double>(t) >= sbeg[static_cast<std::size_t>(i)] && static_cast<double>(t) < send[static_cast<std::size_t>(i)];
        CHECK(within(got.dl[k], g[p + "dsafer"][k], tol::rel, tol::abs));
        CHECK(within(got.dh[k], g[p + "dunsafer"][k], tol::rel, tol::abs));
        if (!inside) CHECK((got.dl[k] == R(0) && got.dh[k] == R(0)));
      }
    }
    // The independent reference finds the same slices.
    const auto ref = reference_tok(c, lo, hi, reg);
    for (std::size_t i = 0; i < static_cast<std::size_t>(c.B); ++i) {
      CHECK(static_cast<double>(ref.begin[i]) == sbeg[i]);
      CHECK(static_cast<double>(ref.end[i]) == send[i]);
    }
    check_tok_against(c, got, ref);
  }
}

TEMPLATE_TEST_CASE("cost_model_tokenwise_loss matches a long-double reference on random pairs", "[preference][safe_rlhf]", float, double) {
  using R = TestType;
  for (const std::uint64_t seed : {1u, 2u, 3u}) {
    const tok_case c = make_tok_case(20, 11, seed);
    const auto lo = to<R>(c.safer), hi = to<R>(c.unsafer);
    for (const double reg : {0.0, 0.001, 0.4}) {
      INFO("seed " << seed << " l2 " << reg);
      check_tok_against(c, run_tok(c, lo, hi, reg), reference_tok(c, lo, hi, reg));
    }
  }
}

TEST_CASE("cost_model_tokenwise_loss gradients match finite differences and vanish outside the slices", "[preference][safe_rlhf]") {
  tok_case c = make_tok_case(10, 9, 17);
  for (const double reg : {0.0, 0.25}) {
    const auto got = run_tok(c, c.safer, c.unsafer, reg);
    for (int side = 0; side < 2; ++side)
      for (std::size_t k = 0; k < c.safer.size(); ++k) {
        auto& v = side == 0 ? c.safer : c.unsafer;
        const double x = v[k], step = 1e-5 * (1 + std::fabs(x));
        v[k] = x + step;
        const double up = run_tok(c, c.safer, c.unsafer, reg, false).res.loss;
        v[k] = x - step;
        const double down = run_tok(c, c.safer, c.unsafer, reg, false).res.loss;
        v[k] = x;
        const double fd = (up - down) / (2 * step), an = side == 0 ? got.dl[k] : got.dh[k];
        INFO("l2 " << reg << " side " << side << " element " << k << " fd " << fd << " analytic " << an);
        CHECK(std::fabs(fd - an) <= 1e-8 + 1e-6 * std::fabs(an));
        if (an == 0.0) CHECK(fd == 0.0);  // outside the slice the loss does not move at all
      }
  }
}

TEST_CASE("cost_model_tokenwise_loss reads nothing outside the slices but the end costs of its metrics", "[preference][safe_rlhf]") {
  const tok_case c = make_tok_case(15, 10, 23);
  const auto ref = reference_tok(c, c.safer, c.unsafer, 0.01);
  tok_case poisoned = c;
  for (std::int64_t i = 0; i < c.B; ++i) {
    const std::int64_t el = last_one(c.safer_mask, c.T, i), eh = last_one(c.unsafer_mask, c.T, i);
    for (std::int64_t t = 0; t < c.T; ++t) {
      if (t >= ref.begin[static_cast<std::size_t>(i)] && t < ref.end[static_cast<std::size_t>(i)]) continue;
      if (t != el) poisoned.safer[c.at(i, t)] = nan_d;
      if (t != eh) poisoned.unsafer[c.at(i, t)] = std::numeric_limits<double>::infinity();
    }
  }
  const auto a = run_tok(c, c.safer, c.unsafer, 0.01), b = run_tok(poisoned, poisoned.safer, poisoned.unsafer, 0.01);
  CHECK(std::memcmp(&a.res, &b.res, sizeof a.res) == 0);
  CHECK(a.dl == b.dl);
  CHECK(a.dh == b.dh);
  CHECK(a.losses == b.losses);
}

TEST_CASE("cost_model_tokenwise_loss rejects bad input naming the argument", "[preference][safe_rlhf]") {
  cai::host hb;
  tok_case c = make_tok_case(3, 6, 5);
  std::vector<double> g(18), g2(12), gl(3);
  auto call = [&](const cai::token_pair_grads<double>& out = {}, double reg = 0.0) {
    const cai::scored_tokens<double> un{cai::make_view(c.unsafer.data(), {3, 6}), cai::make_view(c.unsafer_mask.data(), {3, 6}),
                                        cai::make_view(c.unsafer_ids.data(), {3, 6})};
    const cai::scored_tokens<double> sa{cai::make_view(c.safer.data(), {3, 6}), cai::make_view(c.safer_mask.data(), {3, 6}),
                                        cai::make_view(c.safer_ids.data(), {3, 6})};
    return cai::cost_model_tokenwise_loss(hb, un, sa, cai::make_view(c.unsafer_is_safe.data(), {3}), cai::make_view(c.safer_is_safe.data(), {3}),
                                          out, {.l2_coef = reg});
  };
  REQUIRE(call().count == 3);
  {
    const auto saved = c.unsafer_ids;
    for (std::int64_t t = 0; t < 6; ++t) c.unsafer_ids[c.at(1, t)] = c.safer_ids[c.at(1, t)];
    c.unsafer_mask = c.safer_mask;
    CAI_REQUIRE_THROWS_NAMING((call()), cai::invalid_argument, "cai::cost_model_tokenwise_loss", "'rejected.ids'",
                              "identical token ids up to the end in row 1");
    c.unsafer_ids = saved;
    c = make_tok_case(3, 6, 5);
  }
  c.safer_is_safe[2] = 3;
  CAI_REQUIRE_THROWS_NAMING((call()), cai::invalid_argument, "'safer_is_safe'", "values 0 or 1", "3 at 2");
  c.safer_is_safe[2] = 1;
  c.unsafer_is_safe[0] = 9;
  CAI_REQUIRE_THROWS_NAMING((call()), cai::invalid_argument, "'unsafer_is_safe'", "values 0 or 1", "9 at 0");
  c.unsafer_is_safe[0] = 0;
  {
    const auto ref = reference_tok(c, c.safer, c.unsafer, 0.0);
    const std::size_t k = c.at(2, ref.begin[2]);
    c.unsafer[k] = nan_d;
    CAI_REQUIRE_THROWS_NAMING((call()), cai::invalid_argument, "'chosen.scores'", "finite scores in each pair's slice", "row 2");
    c.unsafer[k] = 0.5;
    c.safer[k] = -std::numeric_limits<double>::infinity();
    CAI_REQUIRE_THROWS_NAMING((call()), cai::invalid_argument, "'rejected.scores'", "row 2");
    c.safer[k] = 0.5;
  }
  for (std::int64_t t = 0; t < 6; ++t) c.safer_mask[c.at(0, t)] = 0;
  CAI_REQUIRE_THROWS_NAMING((call()), cai::invalid_argument, "'rejected.mask'", "at least one counted token", "none in row 0");
  c = make_tok_case(3, 6, 5);
  c.unsafer_mask[4] = 2;
  CAI_REQUIRE_THROWS_NAMING((call()), cai::invalid_argument, "'chosen.mask'", "values 0 or 1", "2 at row 0, token 4");
  c = make_tok_case(3, 6, 5);
  CAI_REQUIRE_THROWS_NAMING((call({.chosen = cai::make_view(g2.data(), {2, 6})})), cai::shape_error, "'grads.chosen'");
  CAI_REQUIRE_THROWS_NAMING((call({.rejected = cai::make_view(g2.data(), {3, 4})})), cai::shape_error, "'grads.rejected'");
  CAI_REQUIRE_THROWS_NAMING((call({.losses = cai::make_view(gl.data(), {2})})), cai::shape_error, "'grads.losses'");
  CAI_REQUIRE_THROWS_NAMING((call({}, -1.0)), cai::invalid_argument, "'l2_coef'");
  REQUIRE(call({.chosen = cai::make_view(g.data(), {3, 6}), .losses = cai::make_view(gl.data(), {3})}, 0.5).count == 3);
}

// =====================================================================================================================
// lagrange_multiplier
// =====================================================================================================================

TEST_CASE("lagrange_multiplier follows torch SGD on log lambda step by step", "[preference][safe_rlhf][golden]") {
  const auto& g = gold();
  for (const std::string tag : {"defaults", "capped"}) {
    const std::string p = "lag." + tag + ".";
    const auto& o = g[p + "options"];
    INFO("run " << tag);
    const cai::lagrange_options opt{.lambda_init = o[0], .lambda_lr = o[1], .lambda_max = o[2], .threshold = o[3],
                                    .window = static_cast<std::int64_t>(o[4]), .update_delay = static_cast<std::int64_t>(o[5])};
    cai::lagrange_multiplier lag(opt);
    if (tag == "defaults") {  // the golden run uses safe-rlhf's defaults, which are cai's
      const cai::lagrange_options d{};
      CHECK((d.lambda_init == opt.lambda_init && d.lambda_lr == opt.lambda_lr && d.lambda_max == opt.lambda_max &&
             d.threshold == opt.threshold && d.window == opt.window && d.update_delay == opt.update_delay));
    }
    CHECK(lag.lambda() == Approx(opt.lambda_init).epsilon(1e-15));
    // An independent long-double model of the same run.
    std::deque<ld> window;
    ld log_lambda = std::log(static_cast<ld>(opt.lambda_init));
    const auto steps = static_cast<std::int64_t>(g[p + "steps"][0]);
    for (std::int64_t s = 0; s < steps; ++s) {
      const std::string k = std::to_string(s);
      const auto& costs = g[p + "costs." + k];
      lag.record(costs);
      for (double x : costs) {
        window.push_back(x);
        if (static_cast<std::int64_t>(window.size()) > opt.window) window.pop_front();
      }
      ld jc = 0;
      for (ld x : window) jc += x;
      jc /= static_cast<ld>(window.size());
      const bool live = s >= opt.update_delay;
      if (live) {
        log_lambda -= static_cast<ld>(opt.lambda_lr) * (-(jc - static_cast<ld>(opt.threshold)) * std::exp(log_lambda));
        if (opt.lambda_max > 0) log_lambda = std::min(log_lambda, std::log(static_cast<ld>(opt.lambda_max)));
      }
      const double want_jc = g[p + "mean_cost." + k][0], want_ll = g[p + "log_lambda." + k][0];
      CHECK(within(lag.mean_cost(), want_jc, 1e-14L, 1e-15L));
      CHECK(within(lag.mean_cost(), jc, 1e-14L, 1e-15L));
      const bool moved = lag.update();
      INFO("step " << s << " log_lambda " << lag.log_lambda() << " torch " << want_ll << " long double " << static_cast<double>(log_lambda));
      CHECK(moved == live);
      CHECK(within(lag.log_lambda(), want_ll, 1e-13L, 1e-14L));
      CHECK(within(lag.log_lambda(), log_lambda, 1e-13L, 1e-14L));
      CHECK(lag.lambda() == std::exp(lag.log_lambda()));
      if (opt.lambda_max > 0) CHECK(lag.lambda() <= opt.lambda_max * (1 + 1e-15));
    }
  }
}

TEST_CASE("lagrange_multiplier caps lambda at lambda_max and comes down from the cap", "[preference][safe_rlhf]") {
  cai::lagrange_multiplier lag({.lambda_init = 4.0, .lambda_lr = 1.0, .lambda_max = 5.0});
  const std::vector<double> big{10.0, 10.0};
  lag.record(big);
  CHECK(lag.update());
  CHECK(lag.log_lambda() == std::log(5.0));
  CHECK(lag.lambda() == Approx(5.0).epsilon(1e-15));
  CHECK(lag.update());  // still pushed up: stays at the cap
  CHECK(lag.log_lambda() == std::log(5.0));
  CHECK(lag.update(-0.1));  // J_c below the threshold 0: lambda falls by lr * J_c * lambda in log space
  CHECK(lag.log_lambda() == Approx(std::log(5.0) - 0.1 * 5.0).epsilon(1e-14));
  SECTION("without a cap it grows freely") {
    cai::lagrange_multiplier uncapped({.lambda_init = 4.0, .lambda_lr = 1.0});
    uncapped.record(big);
    uncapped.update();
    CHECK(uncapped.log_lambda() == Approx(std::log(4.0) + 10.0 * 4.0).epsilon(1e-14));
  }
  SECTION("lambda_init equal to lambda_max is allowed") {
    cai::lagrange_multiplier at({.lambda_init = 5.0, .lambda_max = 5.0});
    CHECK(at.lambda() == Approx(5.0).epsilon(1e-15));
  }
}

TEST_CASE("lagrange_multiplier skips the first update_delay updates", "[preference][safe_rlhf]") {
  cai::lagrange_multiplier lag({.lambda_init = 2.0, .lambda_lr = 0.05, .threshold = 0.5, .update_delay = 3});
  const std::vector<double> costs{1.5, 2.5};
  lag.record(costs);
  const double start = lag.log_lambda();
  CHECK_FALSE(lag.update());
  CHECK_FALSE(lag.update(7.0));
  CHECK_FALSE(lag.update());
  CHECK(lag.log_lambda() == start);
  CHECK(lag.update());
  CHECK(lag.log_lambda() == Approx(start + 0.05 * (2.0 - 0.5) * 2.0).epsilon(1e-15));
  SECTION("an update with an empty window moves nothing (and counts as a step)") {
    cai::lagrange_multiplier empty({.update_delay = 1});
    CHECK(empty.mean_cost() == 0.0);
    CHECK_FALSE(empty.update());
    CHECK_FALSE(empty.update());  // the window is still empty
    CHECK(empty.log_lambda() == 0.0);
    empty.record(costs);
    CHECK(empty.update());  // the delay was spent by the empty steps
    CHECK(empty.log_lambda() == Approx(0.1 * 2.0).epsilon(1e-15));
  }
}

TEST_CASE("lagrange_multiplier keeps the latest window costs and accepts an all-reduced J_c", "[preference][safe_rlhf]") {
  cai::lagrange_multiplier lag({.lambda_lr = 0.1, .threshold = 1.0, .window = 3});
  const std::vector<double> a{1.0, 2.0, 3.0, 4.0, 5.0}, b{10.0};
  lag.record(a);
  CHECK(lag.mean_cost() == 4.0);  // 3, 4, 5
  lag.record(b);
  CHECK(lag.mean_cost() == Approx((4.0 + 5.0 + 10.0) / 3).epsilon(1e-15));
  lag.record(std::vector<double>{});
  CHECK(lag.mean_cost() == Approx((4.0 + 5.0 + 10.0) / 3).epsilon(1e-15));
  // update(J_c) uses the given mean, not the window's.
  CHECK(lag.update(0.25));
  CHECK(lag.log_lambda() == Approx(0.1 * (0.25 - 1.0) * 1.0).epsilon(1e-15));
  CHECK(lag.mean_cost() == Approx((4.0 + 5.0 + 10.0) / 3).epsilon(1e-15));
  SECTION("a window of one") {
    cai::lagrange_multiplier one({.window = 1});
    one.record(a);
    CHECK(one.mean_cost() == 5.0);
  }
}

TEST_CASE("lagrange_multiplier state and restore continue a run identically", "[preference][safe_rlhf]") {
  const cai::lagrange_options opt{.lambda_init = 0.7, .lambda_lr = 0.3, .lambda_max = 3.0, .threshold = 0.2, .window = 5, .update_delay = 4};
  std::mt19937_64 gen(31);
  std::normal_distribution<double> nd(0.5, 1.0);
  std::vector<std::vector<double>> batches(12);
  for (std::size_t s = 0; s < batches.size(); ++s) {
    batches[s].resize(1 + s % 3);
    for (auto& x : batches[s]) x = nd(gen);
  }
  cai::lagrange_multiplier a(opt);
  for (std::size_t s = 0; s < 3; ++s) {  // stop inside the delay, so the update count must survive too
    a.record(batches[s]);
    a.update();
  }
  const auto saved = a.state();
  CHECK(saved.updates == 3);
  CHECK(saved.window.size() == 5u);
  cai::lagrange_multiplier b(opt);
  b.restore(saved);
  const double restored = b.log_lambda();
  CHECK(std::memcmp(&saved.log_lambda, &restored, sizeof(double)) == 0);
  for (std::size_t s = 3; s < batches.size(); ++s) {
    a.record(batches[s]);
    b.record(batches[s]);
    const bool ma = a.update(), mb = b.update();
    INFO("step " << s);
    CHECK(ma == mb);
    CHECK(ma == (s >= 4));
    const double la = a.log_lambda(), lb = b.log_lambda(), ja = a.mean_cost(), jb = b.mean_cost();
    CHECK(std::memcmp(&la, &lb, sizeof la) == 0);
    CHECK(std::memcmp(&ja, &jb, sizeof ja) == 0);
  }
  const auto sa = a.state(), sb = b.state();
  CHECK((sa.updates == sb.updates && sa.window == sb.window));
  SECTION("restore rejects a bad state naming the field") {
    cai::lagrange_multiplier c(opt);
    auto bad = saved;
    bad.log_lambda = nan_d;
    CAI_REQUIRE_THROWS_NAMING((c.restore(bad)), cai::invalid_argument, "cai::lagrange_multiplier::restore", "'log_lambda'");
    bad = saved;
    bad.updates = -1;
    CAI_REQUIRE_THROWS_NAMING((c.restore(bad)), cai::invalid_argument, "'updates'");
    bad = saved;
    bad.window.assign(6, 1.0);
    CAI_REQUIRE_THROWS_NAMING((c.restore(bad)), cai::invalid_argument, "'window'", "at most 5 costs", "got 6");
  }
}

TEST_CASE("lagrange_multiplier rejects bad options and costs naming the field", "[preference][safe_rlhf]") {
  using lm = cai::lagrange_multiplier;
  const std::string call = "cai::lagrange_multiplier";
  CAI_REQUIRE_THROWS_NAMING((lm({.lambda_init = 0.0})), cai::invalid_argument, call.c_str(), "'lambda_init'", "> 0");
  CAI_REQUIRE_THROWS_NAMING((lm({.lambda_init = -1.0})), cai::invalid_argument, "'lambda_init'");
  CAI_REQUIRE_THROWS_NAMING((lm({.lambda_init = nan_d})), cai::invalid_argument, "'lambda_init'");
  CAI_REQUIRE_THROWS_NAMING((lm({.lambda_lr = 0.0})), cai::invalid_argument, "'lambda_lr'", "> 0");
  CAI_REQUIRE_THROWS_NAMING((lm({.lambda_lr = -0.1})), cai::invalid_argument, "'lambda_lr'");
  CAI_REQUIRE_THROWS_NAMING((lm({.lambda_max = -5.0})), cai::invalid_argument, "'lambda_max'");
  CAI_REQUIRE_THROWS_NAMING((lm({.lambda_init = 6.0, .lambda_max = 5.0})), cai::invalid_argument, "'lambda_init'", "<= lambda_max (5)", "got 6");
  CAI_REQUIRE_THROWS_NAMING((lm({.threshold = nan_d})), cai::invalid_argument, "'threshold'", "finite");
  CAI_REQUIRE_THROWS_NAMING((lm({.threshold = std::numeric_limits<double>::infinity()})), cai::invalid_argument, "'threshold'");
  CAI_REQUIRE_THROWS_NAMING((lm({.window = 0})), cai::invalid_argument, "'window'", "at least 1", "got 0");
  CAI_REQUIRE_THROWS_NAMING((lm({.update_delay = -1})), cai::invalid_argument, "'update_delay'");
  lm lag;
  const std::vector<double> bad{1.0, nan_d, 2.0};
  CAI_REQUIRE_THROWS_NAMING((lag.record(bad)), cai::invalid_argument, "cai::lagrange_multiplier::record", "'costs'", "finite", "nan at 1");
  CHECK(lag.mean_cost() == 0.0);  // nothing of the rejected batch was recorded
  const std::vector<double> inf_cost{-std::numeric_limits<double>::infinity()};
  CAI_REQUIRE_THROWS_NAMING((lag.record(inf_cost)), cai::invalid_argument, "'costs'", "-inf at 0");
  CAI_REQUIRE_THROWS_NAMING((lag.update(nan_d)), cai::invalid_argument, "cai::lagrange_multiplier::update", "'mean_episode_cost'");
  CHECK(lag.log_lambda() == 0.0);
}

// =====================================================================================================================
// lagrangian_advantages and shaped_scores
// =====================================================================================================================

namespace {

template <class R>
using cview2 = cai::tensor_view<const R, 2>;

template <class R>
void lagr(const cview2<R>& ar, const std::vector<cview2<R>>& ac, const std::vector<double>& lam, const auto& mask, cai::tensor_view<R, 2> out,
          cai::tensor_view<const std::int64_t, 1> cu = {}) {
  cai::lagrangian_advantages(cai::host{}, ar, std::span<const cview2<R>>(ac), std::span<const double>(lam), mask, out, cu);
}

}  // namespace

TEMPLATE_TEST_CASE("lagrangian_advantages matches torch for one and three constraints, masked tokens 0", "[preference][safe_rlhf][golden]", float, double) {
  using R = TestType;
  using tol = tol_of<R>;
  const auto& g = gold();
  const auto B = static_cast<std::int64_t>(g["adv.shape"][0]), T = static_cast<std::int64_t>(g["adv.shape"][1]);
  const auto n = static_cast<std::size_t>(B * T);
  auto ar = g.as<R>("adv.reward");
  std::vector<std::vector<R>> ac;
  for (int k = 0; k < 3; ++k) ac.push_back(g.as<R>("adv.cost." + std::to_string(k)));
  const auto lam = g["adv.lambdas"];
  // Mask: row 0 full, row 1 right-padded, row 2 with holes, row 3 a single token; NaN where masked (never read).
  std::vector<std::uint8_t> mask(n, 1);
  for (std::int64_t t = 4; t < T; ++t) mask[static_cast<std::size_t>(T + t)] = 0;
  for (std::int64_t t = 0; t < T; t += 2) mask[static_cast<std::size_t>(2 * T + t)] = 0;
  for (std::int64_t t = 0; t < T; ++t) mask[static_cast<std::size_t>(3 * T + t)] = static_cast<std::uint8_t>(t == 3);
  for (std::size_t i = 0; i < n; ++i)
    if (!mask[i]) {
      ar[i] = std::numeric_limits<R>::quiet_NaN();
      for (auto& a : ac) a[i] = std::numeric_limits<R>::quiet_NaN();
    }
  const auto mv = cai::make_view(mask.data(), {B, T});
  for (const std::size_t K : {std::size_t{1}, std::size_t{3}}) {
    INFO("K " << K);
    std::vector<cview2<R>> views;
    for (std::size_t k = 0; k < K; ++k) views.push_back(cai::make_view(ac[k].data(), {B, T}));
    const std::vector<double> lk(lam.begin(), lam.begin() + static_cast<std::ptrdiff_t>(K));
    std::vector<R> out(n, R(3));
    lagr<R>(cai::make_view(ar.data(), {B, T}), views, lk, mv, cai::make_view(out.data(), {B, T}));
    const auto& want = g[K == 1 ? "adv.k1" : "adv.k3"];
    ld denom = 1;
    for (double x : lk) denom += x;
    for (std::size_t i = 0; i < n; ++i) {
      INFO("token " << i << " got " << out[i] << " want " << want[i]);
      if (!mask[i]) {
        CHECK(out[i] == R(0));
        CHECK_FALSE(std::signbit(out[i]));
        continue;
      }
      CHECK(within(out[i], want[i], tol::rel, std::is_same_v<R, float> ? 0 : 1e-15L));
      // The long-double form of the same formula.
      ld v = static_cast<ld>(ar[i]);
      for (std::size_t k = 0; k < K; ++k) v -= static_cast<ld>(lk[k]) * static_cast<ld>(ac[k][i]);
      CHECK(within(out[i], v / denom, tol::rel, std::is_same_v<R, float> ? 0 : 1e-15L));
    }
  }
  SECTION("K = 0 and no mask: the reward advantage itself") {
    const auto ar2 = g.as<R>("adv.reward");
    std::vector<R> out(n);
    lagr<R>(cai::make_view(ar2.data(), {B, T}), {}, {}, cai::no_mask, cai::make_view(out.data(), {B, T}));
    CHECK(out == ar2);
  }
  SECTION("all multipliers 0: the reward advantage itself") {
    const auto ar2 = g.as<R>("adv.reward");
    const auto c0 = g.as<R>("adv.cost.0");
    std::vector<R> out(n);
    lagr<R>(cai::make_view(ar2.data(), {B, T}), {cai::make_view(c0.data(), {B, T})}, {0.0}, cai::no_mask, cai::make_view(out.data(), {B, T}));
    CHECK(out == ar2);
  }
}

TEMPLATE_TEST_CASE("lagrangian_advantages gives the same bits padded and packed", "[preference][safe_rlhf]", float, double) {
  using R = TestType;
  using tol = tol_of<R>;
  const auto sb = cai_test::make_seq_batch(29, 10, 71);
  const auto n = static_cast<std::size_t>(sb.B * sb.T);
  const auto ar = cai_test::normal_floats(n, 1.5f, 72);
  const auto c0 = cai_test::normal_floats(n, 1.0f, 73), c1 = cai_test::normal_floats(n, 2.0f, 74);
  const std::vector<R> a(ar.begin(), ar.end()), x0(c0.begin(), c0.end()), x1(c1.begin(), c1.end());
  const std::vector<double> lam{0.4, 3.0};
  std::vector<R> out(n, R(9));
  lagr<R>(cai::make_view(a.data(), {sb.B, sb.T}), {cai::make_view(x0.data(), {sb.B, sb.T}), cai::make_view(x1.data(), {sb.B, sb.T})}, lam,
          cai::make_view(sb.mask.data(), {sb.B, sb.T}), cai::make_view(out.data(), {sb.B, sb.T}));
  for (std::size_t i = 0; i < n; ++i) {
    INFO("token " << i);
    if (!sb.mask[i]) {
      CHECK(out[i] == R(0));
      continue;
    }
    const ld want = (static_cast<ld>(a[i]) - 0.4L * static_cast<ld>(x0[i]) - 3.0L * static_cast<ld>(x1[i])) / 4.4L;
    CHECK(within(out[i], want, tol::rel, std::is_same_v<R, float> ? 0 : 1e-15L));
  }
  const auto pa = sb.pack(a), p0 = sb.pack(x0), p1 = sb.pack(x1);
  const std::int64_t N = sb.N();
  std::vector<R> pout(static_cast<std::size_t>(N), R(9));
  lagr<R>(cai::packed(cai::make_view(pa.data(), {N})), {cai::packed(cai::make_view(p0.data(), {N})), cai::packed(cai::make_view(p1.data(), {N}))},
          lam, cai::packed(cai::make_view(sb.pmask.data(), {N})), cai::packed(cai::make_view(pout.data(), {N})), sb.cu_view());
  CHECK(pout == sb.pack(out));
}

TEST_CASE("lagrangian_advantages rejects bad input naming the argument", "[preference][safe_rlhf]") {
  const std::int64_t B = 2, T = 3;
  std::vector<double> ar{1, 2, 3, 4, 5, 6}, c0{0, 1, 0, 1, 0, 1}, c1{1, 1, 1, 1, 1, 1}, out(6), small(4);
  std::vector<std::uint8_t> m{1, 1, 0, 1, 1, 1};
  const auto arv = cai::make_view(static_cast<const double*>(ar.data()), {B, T});
  const auto mv = cai::make_view(m.data(), {B, T});
  const auto ov = cai::make_view(out.data(), {B, T});
  const std::vector<cview2<double>> two{cai::make_view(static_cast<const double*>(c0.data()), {B, T}),
                                        cai::make_view(static_cast<const double*>(c1.data()), {B, T})};
  REQUIRE_NOTHROW(lagr<double>(arv, two, {0.5, 1.0}, mv, ov));
  CHECK(out[4] == Approx((5 - 0.5 * 0 - 1.0 * 1) / 2.5).epsilon(1e-15));
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {0.5}, mv, ov)), cai::invalid_argument, "cai::lagrangian_advantages", "'lambdas'",
                            "one multiplier per cost advantage (2)", "got 1");
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {0.5, -0.25}, mv, ov)), cai::invalid_argument, "'lambdas'", "finite multipliers >= 0",
                            "-0.25 at 1");
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {nan_d, 1.0}, mv, ov)), cai::invalid_argument, "'lambdas'", "nan at 0");
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {std::numeric_limits<double>::infinity(), 1.0}, mv, ov)), cai::invalid_argument,
                            "'lambdas'", "inf at 0");
  const std::vector<cview2<double>> bad_shape{two[0], cai::make_view(static_cast<const double*>(c1.data()), {B, T - 1})};
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, bad_shape, {0.5, 1.0}, mv, ov)), cai::shape_error, "'cost_adv[1]'", "the shape of 'reward_adv' (2, 3)");
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {0.5, 1.0}, mv, cai::make_view(small.data(), {B, 2}))), cai::shape_error, "'out'");
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {0.5, 1.0}, cai::make_view(m.data(), {T, B}), ov)), cai::shape_error, "'mask'");
  ar[4] = nan_d;
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {0.5, 1.0}, mv, ov)), cai::invalid_argument, "'reward_adv'", "finite values at counted tokens",
                            "row 1, token 1");
  ar[4] = 5;
  c1[3] = -std::numeric_limits<double>::infinity();
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {0.5, 1.0}, mv, ov)), cai::invalid_argument, "'cost_adv[1]'", "row 1, token 0");
  c1[3] = 1;
  c0[2] = nan_d;  // masked: fine
  ar[2] = nan_d;
  REQUIRE_NOTHROW(lagr<double>(arv, two, {0.5, 1.0}, mv, ov));
  CHECK(out[2] == 0.0);
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {0.5, 1.0}, cai::no_mask, ov)), cai::invalid_argument, "'reward_adv'", "row 0, token 2");
  m[1] = 4;
  CAI_REQUIRE_THROWS_NAMING((lagr<double>(arv, two, {0.5, 1.0}, mv, ov)), cai::invalid_argument, "'mask'", "values 0 or 1");
}

TEMPLATE_TEST_CASE("shaped_scores is R - sum_k lambda_k C_k for K = 0, 1, 2", "[preference][safe_rlhf][golden]", float, double) {
  using R = TestType;
  using tol = tol_of<R>;
  const auto& g = gold();
  const auto s = g.as<R>("shape.scores"), c0 = g.as<R>("shape.cost.0"), c1 = g.as<R>("shape.cost.1");
  const auto lam = g["shape.lambdas"];
  const auto n = static_cast<std::int64_t>(s.size());
  using cv1 = cai::tensor_view<const R, 1>;
  const std::vector<cv1> views{cai::make_view(c0.data(), {n}), cai::make_view(c1.data(), {n})};
  for (std::size_t K = 0; K <= 2; ++K) {
    INFO("K " << K);
    std::vector<R> out(s.size(), R(-8));
    const std::vector<double> lk(lam.begin(), lam.begin() + static_cast<std::ptrdiff_t>(K));
    cai::shaped_scores(cai::make_view(s.data(), {n}), std::span<const cv1>(views.data(), K), std::span<const double>(lk), cai::make_view(out.data(), {n}));
    for (std::size_t i = 0; i < s.size(); ++i) {
      INFO("row " << i);
      if (K == 0) {
        CHECK(out[i] == s[i]);
        continue;
      }
      CHECK(within(out[i], g[K == 1 ? "shape.k1" : "shape.k2"][i], tol::rel, std::is_same_v<R, float> ? 0 : 1e-15L));
      ld v = static_cast<ld>(s[i]) - static_cast<ld>(lam[0]) * static_cast<ld>(c0[i]);
      if (K == 2) v -= static_cast<ld>(lam[1]) * static_cast<ld>(c1[i]);
      CHECK(within(out[i], v, tol::rel, std::is_same_v<R, float> ? 0 : 1e-15L));
    }
  }
}

TEST_CASE("shaped_scores rejects bad input naming the argument", "[preference][safe_rlhf]") {
  std::vector<double> s{1, 2, 3}, c0{0.5, 0.5, 0.5}, c1{1, 2, 3}, out(3);
  using cv1 = cai::tensor_view<const double, 1>;
  const cv1 sv = cai::make_view(static_cast<const double*>(s.data()), {3});
  const auto ov = cai::make_view(out.data(), {3});
  std::vector<cv1> two{cai::make_view(static_cast<const double*>(c0.data()), {3}), cai::make_view(static_cast<const double*>(c1.data()), {3})};
  auto call = [&](const std::vector<cv1>& cs, const std::vector<double>& lam, cai::tensor_view<double, 1> o) {
    cai::shaped_scores(sv, std::span<const cv1>(cs), std::span<const double>(lam), o);
  };
  REQUIRE_NOTHROW(call(two, {2.0, 1.0}, ov));
  CHECK(out == std::vector<double>{-1.0, -1.0, -1.0});
  CAI_REQUIRE_THROWS_NAMING((call(two, {2.0}, ov)), cai::invalid_argument, "cai::shaped_scores", "'lambdas'", "one multiplier per cost (2)", "got 1");
  CAI_REQUIRE_THROWS_NAMING((call(two, {2.0, -1.0}, ov)), cai::invalid_argument, "'lambdas'", "-1 at 1");
  CAI_REQUIRE_THROWS_NAMING((call(two, {nan_d, 1.0}, ov)), cai::invalid_argument, "'lambdas'");
  CAI_REQUIRE_THROWS_NAMING((call(two, {2.0, 1.0}, cai::make_view(out.data(), {2}))), cai::shape_error, "'out'", "one value per sequence (3)");
  two[1] = cai::make_view(static_cast<const double*>(c1.data()), {2});
  CAI_REQUIRE_THROWS_NAMING((call(two, {2.0, 1.0}, ov)), cai::shape_error, "'costs[1]'", "got 2");
  two[1] = cai::make_view(static_cast<const double*>(c1.data()), {3});
  c0[2] = nan_d;
  CAI_REQUIRE_THROWS_NAMING((call(two, {2.0, 1.0}, ov)), cai::invalid_argument, "'costs[0]'", "nan at 2");
  c0[2] = 0.5;
  s[0] = std::numeric_limits<double>::infinity();
  CAI_REQUIRE_THROWS_NAMING((call(two, {2.0, 1.0}, ov)), cai::invalid_argument, "'scores'", "inf at 0");
}

// =====================================================================================================================
// token_costs
// =====================================================================================================================

TEST_CASE("token_costs matches safe-rlhf's per-token costs (+beta KL plus the cost at the end)", "[preference][safe_rlhf][golden]") {
  const auto& g = gold();
  const auto B = static_cast<std::int64_t>(g["tc.shape"][0]), T = static_cast<std::int64_t>(g["tc.shape"][1]);
  const auto& logp = g["tc.logp"];
  const auto& ref = g["tc.ref_logp"];
  const auto& costs = g["tc.costs"];
  const auto mask = as_u8(g["tc.mask"]);
  const auto& want = g["tc.token_costs"];
  const double beta = g["tc.beta"][0];
  std::vector<double> out(static_cast<std::size_t>(B * T), 4.0);
  const auto sum = cai::token_costs(cai::host{}, kl::in_reward<kl::k1>{.beta = beta}, cai::make_view(costs.data(), {B}),
                                    cai::make_view(logp.data(), {B, T}), cai::make_view(ref.data(), {B, T}), cai::make_view(mask.data(), {B, T}),
                                    cai::make_view(out.data(), {B, T}));
  for (std::size_t i = 0; i < out.size(); ++i) {
    INFO("token " << i << " got " << out[i] << " want " << want[i]);
    if (!mask[i]) {
      CHECK(out[i] == 0.0);
      CHECK_FALSE(std::signbit(out[i]));
    } else {
      CHECK(within(out[i], want[i], 1e-14L, 1e-16L));
    }
  }
  ld mean_cost = 0;
  for (double c : costs) mean_cost += c;
  mean_cost /= static_cast<ld>(B);
  CHECK(within(sum.mean_score, -mean_cost, 1e-14L, 1e-16L));  // token_rewards' summary of the negated costs
  CHECK(sum.rows_without_tokens == 0);
}

namespace {

template <class R, class P>
void check_token_costs(const P& placement, const std::optional<cai_test::klref::ref_plain>& shaping, double beta, double smin, double smax,
                       std::uint64_t seed) {
  using namespace cai_test::klref;
  const auto sb = cai_test::make_seq_batch(31, 11, seed);
  const auto n = static_cast<std::size_t>(sb.B * sb.T);
  std::mt19937_64 gen(seed + 1000);
  std::vector<R> costs(static_cast<std::size_t>(sb.B)), logp(n), ref(n);
  for (auto& c : costs) c = static_cast<R>(std::uniform_real_distribution<double>(-6, 6)(gen));
  for (std::size_t i = 0; i < n; ++i) {
    ref[i] = static_cast<R>(std::uniform_real_distribution<double>(-9, -0.1)(gen));
    const double u = std::uniform_real_distribution<double>(0, 1)(gen);
    // some log ratios exactly 0 (a zero KL term: no -0 may come out), some extreme
    logp[i] = u < 0.15 ? ref[i] : static_cast<R>(ref[i] + (u > 0.95 ? 30.0 : std::uniform_real_distribution<double>(-2, 2)(gen)));
    if (!sb.mask[i]) logp[i] = std::numeric_limits<R>::quiet_NaN();  // never read
  }
  const cai::token_reward_options opt{.score_min = smin, .score_max = smax};
  std::vector<R> out(n, R(7));
  const auto mv = cai::make_view(sb.mask.data(), {sb.B, sb.T});
  const auto lv = cai::make_view(static_cast<const R*>(logp.data()), {sb.B, sb.T});
  const auto rv = cai::make_view(static_cast<const R*>(ref.data()), {sb.B, sb.T});
  const auto sum = cai::token_costs(cai::host{}, placement, cai::make_view(static_cast<const R*>(costs.data()), {sb.B}), lv, rv, mv,
                                    cai::make_view(out.data(), {sb.B, sb.T}), opt);
  // Reference: c_t = +beta E(logp - ref) at counted tokens, plus clamp(C, smin, smax) at the last counted token.
  ld kl_sum = 0, kl_abs = 0, cost_sum = 0;
  std::int64_t placed = 0, empty = 0;
  const bool is_float = std::is_same_v<R, float>;
  for (std::int64_t b = 0; b < sb.B; ++b) {
    std::int64_t last = -1;
    for (std::int64_t t = 0; t < sb.T; ++t)
      if (sb.counted(b, t)) last = t;
    if (last < 0) ++empty;
    for (std::int64_t t = 0; t < sb.T; ++t) {
      const auto i = static_cast<std::size_t>(b * sb.T + t);
      INFO("row " << b << " token " << t << " got " << out[i]);
      if (!sb.counted(b, t)) {
        CHECK(out[i] == R(0));
        CHECK_FALSE(std::signbit(out[i]));
        continue;
      }
      ld want = 0;
      if (shaping) {
        const ld v = ref_value(*shaping, static_cast<ld>(static_cast<R>(logp[i] - ref[i])));
        want = static_cast<ld>(beta) * v;
        kl_sum += v;
        kl_abs += std::fabs(v);
      }
      if (t == last) {
        const ld c = std::min<ld>(std::max<ld>(static_cast<ld>(costs[static_cast<std::size_t>(b)]), smin), smax);
        want += c;
        cost_sum += c;
        ++placed;
      }
      CHECK(std::fabs(static_cast<ld>(out[i]) - want) <= (is_float ? 3e-6L : 1e-14L) * (1 + std::fabs(want) + 10 * beta));
      if (out[i] == R(0)) CHECK_FALSE(std::signbit(out[i]));
    }
  }
  CHECK(sum.rows_without_tokens == empty);
  CHECK(within(sum.mean_score, placed ? -cost_sum / placed : 0.0L, 1e-13L, 1e-15L));
  CHECK(std::fabs(static_cast<ld>(sum.mean_non_score_reward) + static_cast<ld>(beta) * kl_sum / static_cast<ld>(sb.B)) <=
        (is_float ? 1e-6L : 1e-13L) * (1 + static_cast<ld>(beta) * kl_abs / static_cast<ld>(sb.B)));
  // The mirror image of token_rewards with -C and the clamp bounds flipped, bit for bit (up to the sign of 0).
  std::vector<R> neg(costs.size()), rew(n, R(7));
  for (std::size_t b = 0; b < costs.size(); ++b) neg[b] = -costs[b];
  const auto rsum = cai::token_rewards(cai::host{}, placement, cai::make_view(static_cast<const R*>(neg.data()), {sb.B}), lv, rv, mv,
                                       cai::make_view(rew.data(), {sb.B, sb.T}), {.score_min = -smax, .score_max = -smin});
  for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == -rew[i]);
  CHECK(std::memcmp(&sum.mean_score, &rsum.mean_score, sizeof(double)) == 0);
  CHECK(std::memcmp(&sum.mean_non_score_reward, &rsum.mean_non_score_reward, sizeof(double)) == 0);
  CHECK(std::memcmp(&sum.kl_per_token.mean, &rsum.kl_per_token.mean, sizeof(double)) == 0);
  CHECK(sum.kl_per_token.count == rsum.kl_per_token.count);
  // The packed layout gives the same bits.
  const auto plp = sb.pack(logp), prf = sb.pack(ref);
  const std::int64_t N = sb.N();
  std::vector<R> pout(static_cast<std::size_t>(N), R(7));
  cai::token_reward_options popt = opt;
  popt.cu_seqlens = sb.cu_view();
  cai::token_costs(cai::host{}, placement, cai::make_view(static_cast<const R*>(costs.data()), {sb.B}),
                   cai::packed(cai::make_view(static_cast<const R*>(plp.data()), {N})), cai::packed(cai::make_view(static_cast<const R*>(prf.data()), {N})),
                   cai::packed(cai::make_view(sb.pmask.data(), {N})), cai::packed(cai::make_view(pout.data(), {N})), popt);
  CHECK(pout == sb.pack(out));
  for (const R x : pout)
    if (x == R(0)) CHECK_FALSE(std::signbit(x));
}

}  // namespace

TEMPLATE_TEST_CASE("token_costs is +beta KL plus the clamped cost at the last counted token, the mirror of token_rewards", "[preference][safe_rlhf]",
                   float, double) {
  using R = TestType;
  using cai_test::klref::kind;
  using cai_test::klref::ref_plain;
  constexpr double inf = std::numeric_limits<double>::infinity();
  SECTION("k1, no clamp") { check_token_costs<R>(kl::in_reward<kl::k1>{.beta = 0.1}, ref_plain{kind::k1}, 0.1, -inf, inf, 1); }
  SECTION("k3 (verl's clamps), cost clamped to [-2, 3]") {
    check_token_costs<R>(kl::in_reward<kl::k3>{.beta = 0.05}, ref_plain{kind::k3, 20, 10}, 0.05, -2.0, 3.0, 2);
  }
  SECTION("k1, only an upper clamp") { check_token_costs<R>(kl::in_reward<kl::k1>{.beta = 0.2}, ref_plain{kind::k1}, 0.2, -inf, 1.0, 3); }
  SECTION("k2, only a lower clamp") { check_token_costs<R>(kl::in_reward<kl::k2>{.beta = 0.3}, ref_plain{kind::k2}, 0.3, 0.5, inf, 4); }
  SECTION("no reward KL: the cost alone, and no -0 anywhere") { check_token_costs<R>(kl::none{}, std::nullopt, 0.0, -inf, inf, 5); }
  SECTION("in_loss placement: the cost alone") { check_token_costs<R>(kl::in_loss<kl::k3>{.coef = 0.1}, std::nullopt, 0.0, -1.0, 1.0, 6); }
}

TEST_CASE("token_costs clamps the cost itself, by hand", "[preference][safe_rlhf]") {
  const std::vector<double> costs{9.0, -9.0, 0.5};
  const std::vector<std::uint8_t> mask{1, 1, 0, 1, 0, 0, 0, 1, 1};
  std::vector<double> out(9, 5.0);
  cai::token_costs(cai::host{}, kl::none{}, cai::make_view(costs.data(), {3}), cai::tensor_view<const double, 2>{}, cai::tensor_view<const double, 2>{},
                   cai::make_view(mask.data(), {3, 3}), cai::make_view(out.data(), {3, 3}), {.score_min = -1.0, .score_max = 2.0});
  CHECK(out == std::vector<double>{0, 2.0, 0, -1.0, 0, 0, 0, 0, 0.5});
  for (double x : out)
    if (x == 0.0) CHECK_FALSE(std::signbit(x));
}

TEST_CASE("token_costs rejects bad input naming the argument", "[preference][safe_rlhf]") {
  std::vector<double> costs{1.0, 2.0}, lp{-1, -2, -3, -1, -2, -3}, rf{-1.5, -2, -2, -1, -1, -1}, out(6);
  std::vector<std::uint8_t> m{0, 1, 1, 1, 1, 0}, eos{1, 0};
  const auto cv = cai::make_view(static_cast<const double*>(costs.data()), {2});
  const auto lpv = cai::make_view(static_cast<const double*>(lp.data()), {2, 3});
  const auto rfv = cai::make_view(static_cast<const double*>(rf.data()), {2, 3});
  const auto mv = cai::make_view(m.data(), {2, 3});
  const auto ov = cai::make_view(out.data(), {2, 3});
  const kl::in_reward<kl::k1> shaped{.beta = 0.1};
  REQUIRE_NOTHROW(cai::token_costs(cai::host{}, shaped, cv, lpv, rfv, mv, ov));
  CAI_REQUIRE_THROWS_NAMING((cai::token_costs(cai::host{}, shaped, cv, lpv, rfv, mv, ov,
                                              {.missing_eos_penalty = 1.0, .ends_with_eos = cai::make_view(eos.data(), {2})})),
                            cai::invalid_argument, "cai::token_costs", "'missing_eos_penalty'", "0 (a reward-side option)", "got 1");
  CAI_REQUIRE_THROWS_NAMING((cai::token_costs(cai::host{}, shaped, cv, lpv, rfv, mv, ov, {.missing_eos_penalty = -0.5})), cai::invalid_argument,
                            "cai::token_costs", "'missing_eos_penalty'");
  costs[1] = nan_d;
  CAI_REQUIRE_THROWS_NAMING((cai::token_costs(cai::host{}, shaped, cv, lpv, rfv, mv, ov)), cai::invalid_argument, "cai::token_costs", "'costs'",
                            "finite values", "nan at 1");
  costs[1] = 2.0;
  CAI_REQUIRE_THROWS_NAMING((cai::token_costs(cai::host{}, shaped, cai::make_view(static_cast<const double*>(costs.data()), {1}), lpv, rfv, mv, ov)),
                            cai::shape_error, "one value per sequence (2)", "got 1");
  lp[1] = nan_d;
  CAI_REQUIRE_THROWS_NAMING((cai::token_costs(cai::host{}, shaped, cv, lpv, rfv, mv, ov)), cai::invalid_argument, "'logp'", "row 0, token 1");
}
