// Tests for the Bradley-Terry reward-model losses of cai/algorithms/preference.hpp: the sequence-wise loss (margins,
// soft labels, centring, L2) and safe-rlhf's token-wise loss against long-double references written differently from
// the library (the literal log(1 + e^x) softplus and 1 / (1 + e^-x) sigmoid, batch-level regularisers summed on
// their own, explicit token lists); every gradient against finite differences along random directions; PyTorch
// autograd golden values (tests/golden/gen_preference.py); bad input.
#include <cai/algorithms/preference.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../golden/golden.hpp"
#include "../support.hpp"

namespace {

using ld = long double;
using vec = std::vector<double>;

std::size_t z(std::int64_t i) { return static_cast<std::size_t>(i); }
std::int64_t len(const auto& v) { return static_cast<std::int64_t>(v.size()); }

template <class R>
cai::tensor_view<const R, 1> cv(const std::vector<R>& v) {
  return cai::make_view(v.data(), {len(v)});
}
template <class R>
cai::tensor_view<R, 1> mv(std::vector<R>& v) {
  return cai::make_view(v.data(), {len(v)});
}
template <class R>
std::vector<R> to(const vec& v) {
  return std::vector<R>(v.begin(), v.end());
}

// The literal forms (long double has the exponent range for every |x| used here, up to 1e3).
ld softplus_literal(ld x) { return std::log(1.0L + std::exp(x)); }
ld sigmoid_literal(ld x) { return 1.0L / (1.0L + std::exp(-x)); }

/// Relative rounding of the stored type: results are computed in double, then stored in R.
template <class R>
constexpr double storage_eps() {
  return std::is_same_v<R, float> ? 1.2e-7 : 4e-16;
}

// ----- sequence-wise reference -------------------------------------------------------------------------------------

/// One sequence-wise problem; m and p empty mean "no margin" and "hard labels". Values are fp32-representable.
struct bt_inputs {
  vec c, r, m, p;
  double cc = 0.0, l2 = 0.0;
};

struct bt_reference {
  ld loss = 0;
  std::vector<ld> losses, gc, gr;
  std::vector<ld> grad_scale;  // magnitude of the terms that make up each gradient (they may cancel)
  ld mc = 0, mr = 0, mm = 0, acc = 0;
};

/// Long-double reference: the cross-entropy term per pair, the centring and L2 terms summed over the batch on their
/// own (L2 as a mean over the stacked 2B rewards, as safe-rlhf writes it), gradients from the chain rule by hand.
bt_reference reference_bt(const bt_inputs& in) {
  const std::size_t n = in.c.size();
  const ld B = static_cast<ld>(n), cc = in.cc, l2 = in.l2;
  bt_reference out;
  ld ce = 0, centre = 0;
  std::vector<ld> stacked;  // rejected rewards, then chosen rewards
  for (std::size_t i = 0; i < n; ++i) stacked.push_back(in.r[i]);
  for (std::size_t i = 0; i < n; ++i) stacked.push_back(in.c[i]);
  ld sq = 0;
  for (const ld x : stacked) sq += x * x;
  ld sum_c = 0, sum_r = 0, wins = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const ld c = in.c[i], r = in.r[i];
    const ld m = in.m.empty() ? 0.0L : static_cast<ld>(in.m[i]);
    const ld p = in.p.empty() ? 1.0L : static_cast<ld>(in.p[i]);
    const ld d = c - r - m;
    const ld ce_i = p * softplus_literal(-d) + (1.0L - p) * softplus_literal(d);
    ce += ce_i;
    centre += (c + r) * (c + r);
    out.losses.push_back(ce_i + cc * (c + r) * (c + r) + l2 * (c * c + r * r) / 2.0L);
    const ld s = sigmoid_literal(d);
    out.gc.push_back((s - p + 2.0L * cc * (c + r) + l2 * c) / B);
    out.gr.push_back((p - s + 2.0L * cc * (c + r) + l2 * r) / B);
    out.grad_scale.push_back((1.0L + 2.0L * cc * std::fabs(c + r) + l2 * std::max(std::fabs(c), std::fabs(r))) / B);
    sum_c += c;
    sum_r += r;
    if (c > r) wins += 1;
  }
  out.loss = n ? ce / B + cc * centre / B + l2 * sq / (2.0L * B) : 0.0L;
  if (n) {
    out.mc = sum_c / B;
    out.mr = sum_r / B;
    out.mm = out.mc - out.mr;
    out.acc = wins / B;
  }
  return out;
}

template <class R>
struct bt_run {
  cai::preference_result res;
  std::vector<R> gc, gr, losses;
};

/// Runs the library on `in` stored as R, with every output requested (sentinels first, to see they are written).
template <class R, class Backend = cai::host>
bt_run<R> run_bt(const bt_inputs& in, const Backend& bk = {}) {
  const auto c = to<R>(in.c), r = to<R>(in.r), m = to<R>(in.m), p = to<R>(in.p);
  cai::reward_pair_batch<R> batch{cv(c), cv(r), {}, {}};
  if (!m.empty()) batch.margin = cv(m);
  if (!p.empty()) batch.labels = cv(p);
  bt_run<R> out;
  out.gc.assign(c.size(), R(77));
  out.gr.assign(c.size(), R(77));
  out.losses.assign(c.size(), R(77));
  out.res = cai::bradley_terry_loss(bk, batch, cai::reward_pair_grads<R>{mv(out.gc), mv(out.gr), mv(out.losses)},
                                    {.center_coef = in.cc, .l2_coef = in.l2});
  return out;
}

/// The loss alone (no outputs), on inputs already stored as R.
template <class R>
double bt_loss(const std::vector<R>& c, const std::vector<R>& r, const std::vector<R>& m, const std::vector<R>& p,
               double cc, double l2) {
  cai::reward_pair_batch<R> batch{cv(c), cv(r), {}, {}};
  if (!m.empty()) batch.margin = cv(m);
  if (!p.empty()) batch.labels = cv(p);
  return cai::bradley_terry_loss(cai::host{}, batch, {}, {.center_coef = cc, .l2_coef = l2}).loss;
}

bool near(double got, ld ref, ld tol) { return std::fabs(static_cast<ld>(got) - ref) <= tol; }

/// Random fp32 rewards with the special pairs mixed in: ties (d = 0 exactly), confident and badly wrong pairs,
/// and |d| up to 1e3; labels in [0, 1] with 0, 0.5 and 1 among them.
bt_inputs random_bt(std::int64_t n, std::uint64_t seed, bool margin, bool labels, double cc, double l2) {
  const auto cf = cai_test::normal_floats(z(n), 3.0f, seed), rf = cai_test::normal_floats(z(n), 3.0f, seed + 1);
  const auto mf = cai_test::uniform_floats(z(n), 0.0f, 2.0f, seed + 2), pf = cai_test::uniform_floats(z(n), 0.0f, 1.0f, seed + 3);
  bt_inputs in;
  in.c = vec(cf.begin(), cf.end());
  in.r = vec(rf.begin(), rf.end());
  for (std::int64_t i = 0; i < n && n > 1; ++i) {
    switch (i % 9) {
      case 1: in.r[z(i)] = in.c[z(i)]; break;  // tie
      case 3: in.c[z(i)] = 600.0; in.r[z(i)] = -400.0; break;  // d = 1e3
      case 5: in.c[z(i)] = -350.5; in.r[z(i)] = 649.5; break;  // d = -1e3
      case 7: in.c[z(i)] = 21.0; in.r[z(i)] = -19.25; break;  // d = 40.25
      default: break;
    }
  }
  if (margin) in.m = vec(mf.begin(), mf.end());
  if (labels) {
    in.p = vec(pf.begin(), pf.end());
    for (std::int64_t i = 0; i < n; ++i) {
      if (i % 5 == 0) in.p[z(i)] = 0.0;
      if (i % 5 == 2) in.p[z(i)] = 0.5;
      if (i % 5 == 4) in.p[z(i)] = 1.0;
    }
  }
  in.cc = cc;
  in.l2 = l2;
  return in;
}

template <class R>
void check_against_reference(const bt_inputs& in) {
  const auto ref = reference_bt(in);
  const auto run = run_bt<R>(in);
  const ld eps = storage_eps<R>();
  // Every term of the loss is >= 0, so it is relatively accurate: the loss (returned in double whatever R is) to
  // 4e-15, each per-pair loss to R's rounding. 1e-18 absolute covers the literal softplus's own rounding where it
  // is tiny. Gradients may cancel (s - p against the regularisers): relative to the size of their terms.
  CHECK(near(run.res.loss, ref.loss, 4e-15L * ref.loss + 1e-18L));
  for (std::size_t i = 0; i < in.c.size(); ++i) {
    INFO("pair " << i << " c " << in.c[i] << " r " << in.r[i] << " d " << in.c[i] - in.r[i]);
    CHECK(near(static_cast<double>(run.losses[i]), ref.losses[i], 2 * eps * ref.losses[i] + 1e-18L));
    CHECK(near(static_cast<double>(run.gc[i]), ref.gc[i], 2 * eps * ref.grad_scale[i]));
    CHECK(near(static_cast<double>(run.gr[i]), ref.gr[i], 2 * eps * ref.grad_scale[i]));
  }
  const auto& mt = run.res.metrics;
  CHECK(mt.count == len(in.c));
  CHECK(near(mt.chosen, ref.mc, 1e-14L * (1 + std::fabs(ref.mc) + 1e3L)));
  CHECK(near(mt.rejected, ref.mr, 1e-14L * (1 + std::fabs(ref.mr) + 1e3L)));
  CHECK(near(mt.margin, ref.mm, 1e-14L * (1 + std::fabs(ref.mm) + 1e3L)));
  CHECK(mt.accuracy == static_cast<double>(ref.acc));
}

// ----- finite differences ------------------------------------------------------------------------------------------
//
// The perturbation is exact in both storage types: h = 2^-12 and directions k / 4 (k integer in [-8, 8]), so
// x +- h dir is a multiple of 2^-14, representable in float for |x| < 1024 (every value here). The central
// difference then carries only its truncation error and the rounding of the loss; the tolerance is
//   1e-9 sum_i |g_i dir_i| (float: 2e-7, the gradient's storage rounding) + 1e-13 |loss| / h + 1e-12
//   + 2 * trunc,  trunc = h^2 / 6 * max|softplus'''| (< 0.1) * sum over pairs (tokens) of |dc - dr|^3 / B,
// the bound on the O(h^2) term (the centring and L2 terms are quadratic: no third derivative).

constexpr double fd_h = 1.0 / 4096.0;

std::vector<double> fd_direction(std::size_t n, std::mt19937_64& gen) {
  std::uniform_int_distribution<int> k(-8, 8);
  std::vector<double> d(n);
  for (auto& x : d) x = k(gen) / 4.0;
  return d;
}

template <class R>
double fd_tolerance(double abs_dot, double loss, const std::vector<double>& dc, const std::vector<double>& dr, double B) {
  double cube = 0;
  for (std::size_t i = 0; i < dc.size(); ++i) cube += std::pow(std::fabs(dc[i] - dr[i]), 3.0);
  const double trunc = fd_h * fd_h / 6 * 0.1 * cube / B;
  return (std::is_same_v<R, float> ? 2e-7 : 1e-9) * abs_dot + 1e-13 * std::fabs(loss) / fd_h + 1e-12 + 2 * trunc;
}

template <class R>
void check_bt_fd(const bt_inputs& in, std::uint64_t seed) {
  const auto run = run_bt<R>(in);
  std::mt19937_64 gen(seed);
  const auto dc = fd_direction(in.c.size(), gen), dr = fd_direction(in.r.size(), gen);
  const auto m = to<R>(in.m), p = to<R>(in.p);
  const auto objective = [&](double h) {
    std::vector<R> c(in.c.size()), r(in.r.size());
    for (std::size_t i = 0; i < c.size(); ++i) {
      c[i] = static_cast<R>(in.c[i] + h * dc[i]);
      r[i] = static_cast<R>(in.r[i] + h * dr[i]);
      REQUIRE(static_cast<double>(c[i]) == in.c[i] + h * dc[i]);  // the perturbation is exact
      REQUIRE(static_cast<double>(r[i]) == in.r[i] + h * dr[i]);
    }
    return bt_loss(c, r, m, p, in.cc, in.l2);
  };
  const double fd = (objective(fd_h) - objective(-fd_h)) / (2 * fd_h);
  double an = 0, abs_dot = 0;
  for (std::size_t i = 0; i < dc.size(); ++i) {
    an += static_cast<double>(run.gc[i]) * dc[i] + static_cast<double>(run.gr[i]) * dr[i];
    abs_dot += std::fabs(static_cast<double>(run.gc[i]) * dc[i]) + std::fabs(static_cast<double>(run.gr[i]) * dr[i]);
  }
  INFO("analytic " << an << " finite difference " << fd << " loss " << run.res.loss);
  CHECK(std::fabs(an - fd) <= fd_tolerance<R>(abs_dot, run.res.loss, dc, dr, static_cast<double>(in.c.size())));
}

// ----- token-wise --------------------------------------------------------------------------------------------------

struct tok_batch {
  std::int64_t B = 0, T = 0;
  std::vector<std::int64_t> cid, rid;
  std::vector<std::uint8_t> cm, rm;
  vec hs, ls;  // chosen ("higher") and rejected ("lower") per-token scores, fp32-representable
};

/// Right-padded pairs (pad id 0, mask 0) sharing a prompt; row kinds cycle with b % 6:
///   0 answers differ inside both, 1 rejected = chosen + more tokens, 2 chosen = rejected + more tokens,
///   3 no prompt and different first tokens (divergence at 0), 4 both fill the row and differ only at the last token,
///   5 as 0 with holes in the masks (only each row's last mask-1 position matters).
tok_batch make_tok_batch(std::int64_t B, std::int64_t T, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  auto uni = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen); };
  tok_batch tb;
  tb.B = B;
  tb.T = T;
  tb.cid.assign(z(B * T), 0);
  tb.rid.assign(z(B * T), 0);
  tb.cm.assign(z(B * T), 0);
  tb.rm.assign(z(B * T), 0);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t kind = b % 6;
    std::int64_t P = kind == 3 ? 0 : uni(1, 4);
    std::int64_t lc = uni(1, T - P), lr = uni(1, T - P), shared = 0;
    switch (kind) {
      case 0: case 5: shared = uni(0, std::min(lc, lr) - 1); break;
      case 1: lc = uni(1, T - P - 1); lr = uni(lc + 1, T - P); shared = lc; break;
      case 2: lr = uni(1, T - P - 1); lc = uni(lr + 1, T - P); shared = lr; break;
      case 3: shared = 0; break;
      case 4: lc = lr = T - P; shared = lc - 1; break;
      default: break;
    }
    std::int64_t* ci = tb.cid.data() + b * T;
    std::int64_t* ri = tb.rid.data() + b * T;
    for (std::int64_t t = 0; t < P; ++t) ci[t] = ri[t] = uni(1, 50);
    for (std::int64_t k = 0; k < lc; ++k) ci[P + k] = uni(1, 50);
    for (std::int64_t k = 0; k < lr; ++k) ri[P + k] = k < shared ? ci[P + k] : uni(1, 50);
    if (shared < std::min(lc, lr)) ri[P + shared] = ci[P + shared] + 100;  // they differ right there
    for (std::int64_t t = 0; t < P + lc; ++t) tb.cm[z(b * T + t)] = 1;
    for (std::int64_t t = 0; t < P + lr; ++t) tb.rm[z(b * T + t)] = 1;
    if (kind == 5) {
      for (std::int64_t t = 0; t + 1 < P + lc; ++t)
        if (uni(0, 2) == 0) tb.cm[z(b * T + t)] = 0;
      for (std::int64_t t = 0; t + 1 < P + lr; ++t)
        if (uni(0, 2) == 0) tb.rm[z(b * T + t)] = 0;
    }
  }
  const auto h = cai_test::normal_floats(z(B * T), 2.0f, seed + 1), l = cai_test::normal_floats(z(B * T), 2.0f, seed + 2);
  tb.hs = vec(h.begin(), h.end());
  tb.ls = vec(l.begin(), l.end());
  // Some confident and some badly wrong tokens (|h - l| = 50 and 60).
  for (std::int64_t i = 0; i < B * T; i += 7) {
    tb.hs[z(i)] = 25.0;
    tb.ls[z(i)] = -25.0;
  }
  for (std::int64_t i = 3; i < B * T; i += 11) {
    tb.hs[z(i)] = -30.0;
    tb.ls[z(i)] = 30.0;
  }
  return tb;
}

struct tok_reference {
  ld loss = 0;
  std::vector<ld> losses, gc, gr;  // gc, gr (B,T), zero outside the slices
  std::vector<ld> gscale;           // (B,T) magnitude of the terms of each gradient
  std::vector<std::int64_t> begin, end;  // [begin, end] inclusive, per pair
  ld mc = 0, mr = 0, mm = 0, acc = 0;
};

/// Long-double reference: the divergence index from std::mismatch over the id rows, each end as the last mask-1
/// position found by a forward scan, then the explicit list of (h_t, l_t) pairs of the inclusive slice.
tok_reference reference_tok(const tok_batch& tb, double l2c) {
  const ld l2 = l2c, B = static_cast<ld>(tb.B);
  tok_reference out;
  out.gc.assign(z(tb.B * tb.T), 0.0L);
  out.gr.assign(z(tb.B * tb.T), 0.0L);
  out.gscale.assign(z(tb.B * tb.T), 0.0L);
  ld sum = 0, sum_c = 0, sum_r = 0, wins = 0;
  for (std::int64_t b = 0; b < tb.B; ++b) {
    const auto* ci = tb.cid.data() + b * tb.T;
    const auto* ri = tb.rid.data() + b * tb.T;
    const std::int64_t d = std::mismatch(ci, ci + tb.T, ri).first - ci;
    std::int64_t ec = -1, er = -1;
    for (std::int64_t t = 0; t < tb.T; ++t) {
      if (tb.cm[z(b * tb.T + t)]) ec = t;
      if (tb.rm[z(b * tb.T + t)]) er = t;
    }
    const std::int64_t e = ec > er ? ec : er;
    REQUIRE(d <= e);
    out.begin.push_back(d);
    out.end.push_back(e);
    std::vector<std::pair<ld, ld>> hl;
    for (std::int64_t t = d; t <= e; ++t) hl.emplace_back(tb.hs[z(b * tb.T + t)], tb.ls[z(b * tb.T + t)]);
    const ld k = static_cast<ld>(hl.size());
    ld nls = 0, sq = 0;
    for (const auto& [h, l] : hl) {
      nls += softplus_literal(l - h);
      sq += h * h + l * l;
    }
    const ld loss_b = nls / k + l2 * sq / (2.0L * k);
    out.losses.push_back(loss_b);
    sum += loss_b;
    for (std::int64_t t = d; t <= e; ++t) {
      const ld h = tb.hs[z(b * tb.T + t)], l = tb.ls[z(b * tb.T + t)];
      const ld s = sigmoid_literal(h - l);
      out.gc[z(b * tb.T + t)] = ((s - 1.0L) / k + l2 * h / k) / B;
      out.gr[z(b * tb.T + t)] = ((1.0L - s) / k + l2 * l / k) / B;
      out.gscale[z(b * tb.T + t)] = (1.0L + l2 * std::max(std::fabs(h), std::fabs(l))) / (k * B);
    }
    const ld hend = tb.hs[z(b * tb.T + ec)], lend = tb.ls[z(b * tb.T + er)];
    sum_c += hend;
    sum_r += lend;
    if (hend > lend) wins += 1;
  }
  out.loss = sum / B;
  out.mc = sum_c / B;
  out.mr = sum_r / B;
  out.mm = out.mc - out.mr;
  out.acc = wins / B;
  return out;
}

template <class R>
struct tok_run {
  cai::preference_result res;
  std::vector<R> gc, gr, losses;
};

template <class R>
struct tok_views {
  std::vector<R> h, l;
  cai::scored_tokens<R> c, r;
  tok_views(const tok_batch& tb, const vec& hs, const vec& ls) : h(to<R>(hs)), l(to<R>(ls)) {
    c = {cai::make_view<const R>(h.data(), {tb.B, tb.T}), cai::make_view(tb.cm.data(), {tb.B, tb.T}), cai::make_view(tb.cid.data(), {tb.B, tb.T})};
    r = {cai::make_view<const R>(l.data(), {tb.B, tb.T}), cai::make_view(tb.rm.data(), {tb.B, tb.T}), cai::make_view(tb.rid.data(), {tb.B, tb.T})};
  }
  tok_views(const tok_views&) = delete;
};

template <class R, class Backend = cai::host>
tok_run<R> run_tok(const tok_batch& tb, double l2, const Backend& bk = {}) {
  const tok_views<R> v(tb, tb.hs, tb.ls);
  tok_run<R> out;
  out.gc.assign(z(tb.B * tb.T), R(77));
  out.gr.assign(z(tb.B * tb.T), R(77));
  out.losses.assign(z(tb.B), R(77));
  const cai::token_pair_grads<R> g{cai::make_view(out.gc.data(), {tb.B, tb.T}), cai::make_view(out.gr.data(), {tb.B, tb.T}), mv(out.losses)};
  out.res = cai::bradley_terry_tokenwise_loss(bk, v.c, v.r, g, {.l2_coef = l2});
  return out;
}

const cai_test::golden& gold() {
  static const cai_test::golden g("preference.txt");
  return g;
}

}  // namespace

// ===== sequence-wise ===============================================================================================

TEMPLATE_TEST_CASE("bradley_terry_loss matches a long-double reference with margins, soft labels, centring and L2", "[preference]", float, double) {
  using R = TestType;
  std::uint64_t seed = 100;
  for (const std::int64_t n : {1, 7, 64})
    for (const bool margin : {false, true})
      for (const bool labels : {false, true})
        for (const double cc : {0.0, 0.01, 0.3})
          for (const double l2 : {0.0, 0.001, 0.05}) {
            INFO("B " << n << " margin " << margin << " labels " << labels << " center_coef " << cc << " l2_coef " << l2);
            check_against_reference<R>(random_bt(n, seed += 4, margin, labels, cc, l2));
          }
}

TEST_CASE("bradley_terry_loss with hard labels is -log sigmoid of the margin-shifted difference, per pair", "[preference]") {
  // Small hand-checked cases: p = 1 gives softplus(-d); p = 0 gives softplus(d); p = 1/2 at d = 0 gives log 2.
  const vec c{2.0, -1.0, 0.5}, r{1.0, 1.0, 0.5}, m{0.5, 0.0, 0.0};
  std::vector<double> gc(3), gr(3), losses(3);
  const auto res = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<double>{cv(c), cv(r), cv(m), {}},
                                           cai::reward_pair_grads<double>{mv(gc), mv(gr), mv(losses)});
  CHECK(losses[0] == Approx(std::log1p(std::exp(-0.5))).epsilon(1e-15));
  CHECK(losses[1] == Approx(std::log1p(std::exp(2.0))).epsilon(1e-15));
  CHECK(losses[2] == Approx(std::log(2.0)).epsilon(1e-15));
  CHECK(res.loss == Approx((losses[0] + losses[1] + losses[2]) / 3).epsilon(1e-15));
  CHECK(gc[2] == Approx(-0.5 / 3).epsilon(1e-15));  // (sigmoid(0) - 1) / B
  CHECK(gr[2] == Approx(0.5 / 3).epsilon(1e-15));
  const vec p{0.0, 0.0, 0.5};
  const auto soft = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<double>{cv(c), cv(r), cv(m), cv(p)},
                                            cai::reward_pair_grads<double>{mv(gc), mv(gr), mv(losses)});
  CHECK(losses[0] == Approx(std::log1p(std::exp(0.5))).epsilon(1e-15));
  CHECK(losses[1] == Approx(std::log1p(std::exp(-2.0))).epsilon(1e-15));
  CHECK(losses[2] == Approx(std::log(2.0)).epsilon(1e-15));
  CHECK(gc[2] == 0.0);  // sigmoid(0) - 1/2: the soft label's optimum
  CHECK(gr[2] == 0.0);
  CHECK(soft.loss == Approx((losses[0] + losses[1] + losses[2]) / 3).epsilon(1e-15));
}

TEST_CASE("Pair metrics are the raw reward means and a strict accuracy where ties count wrong", "[preference]") {
  const vec c{1.0, 2.0, 3.0, 0.5, -4.0}, r{1.0, 1.0, 4.0, -0.5, -4.0}, m(5, 10.0), p(5, 0.25);
  const auto res = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<double>{cv(c), cv(r), cv(m), cv(p)}, {},
                                           {.center_coef = 0.5, .l2_coef = 0.5});
  // Margins, labels and regularisers do not enter the metrics: margin = mean(c - r), not mean(c - r - m).
  CHECK(res.metrics.count == 5);
  CHECK(res.metrics.chosen == Approx(2.5 / 5).epsilon(1e-15));
  CHECK(res.metrics.rejected == Approx(1.5 / 5).epsilon(1e-15));
  CHECK(res.metrics.margin == Approx(1.0 / 5).epsilon(1e-15));
  CHECK(res.metrics.accuracy == 2.0 / 5);  // pairs 1 and 3; the ties (0 and 4) and pair 2 are wrong
}

TEMPLATE_TEST_CASE("bradley_terry_loss gradients match finite differences, extreme differences and ties included", "[preference]", float, double) {
  using R = TestType;
  std::uint64_t seed = 900;
  for (const std::int64_t n : {1, 2, 9, 40})
    for (const bool margin : {false, true})
      for (const bool labels : {false, true})
        for (const double cc : {0.0, 0.01, 0.3})
          for (const double l2 : {0.0, 0.05}) {
            INFO("B " << n << " margin " << margin << " labels " << labels << " center_coef " << cc << " l2_coef " << l2);
            auto in = random_bt(n, seed += 5, margin, labels, cc, l2);
            // Round the random values to multiples of 2^-14 so that the perturbations stay exact (see fd_h).
            for (auto* v : {&in.c, &in.r})
              for (auto& x : *v) x = std::ldexp(std::nearbyint(std::ldexp(x, 14)), -14);
            check_bt_fd<R>(in, seed);
          }
  SECTION("a single pair at the extremes, tied, and at the soft-label optimum") {
    for (const auto& pr : std::vector<std::pair<double, double>>{{600.0, -400.0}, {-400.0, 600.0}, {1.5, 1.5}, {0.0, 0.0}, {-900.0, -900.0}})
      for (const double p : {1.0, 0.0, 0.5}) {
        INFO("c " << pr.first << " r " << pr.second << " p " << p);
        const bt_inputs in{{pr.first}, {pr.second}, {}, {p}, 0.01, 0.001};
        check_bt_fd<R>(in, 7);
        check_against_reference<R>(in);
      }
  }
}

TEST_CASE("LogExpLoss log(1 + e^(r- - r+)) is the margin-0 loss, without its fp32 overflow", "[preference]") {
  const auto& g = gold();
  SECTION("the literal long-double form on moderate values, and torch's LogExpLoss") {
    for (const char* prefix : {"logexp", "bt"}) {
      const auto c = g.as<double>(std::string(prefix) + ".rc"), r = g.as<double>(std::string(prefix) + ".rr");
      ld lit = 0;
      for (std::size_t i = 0; i < c.size(); ++i) lit += std::log(1.0L + std::exp(static_cast<ld>(r[i]) - c[i]));
      lit /= static_cast<ld>(c.size());
      for (const bool as_float : {false, true}) {
        const double loss = as_float ? bt_loss(to<float>(c), to<float>(r), {}, {}, 0, 0) : bt_loss(c, r, {}, {}, 0, 0);
        INFO(prefix << " float " << as_float);
        CHECK(near(loss, lit, 1e-14L * (1 + std::fabs(lit))));
      }
    }
    const auto c = g.as<double>("logexp.rc"), r = g.as<double>("logexp.rr");
    std::vector<double> gc(c.size()), gr(c.size());
    const auto res = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<double>{cv(c), cv(r), {}, {}},
                                             cai::reward_pair_grads<double>{mv(gc), mv(gr), {}});
    CHECK(res.loss == Approx(g["logexp.loss"][0]).epsilon(1e-13));
    for (std::size_t i = 0; i < c.size(); ++i) {
      CHECK(std::fabs(gc[i] - g["logexp.dchosen"][i]) <= 1e-15);
      CHECK(std::fabs(gr[i] - g["logexp.drejected"][i]) <= 1e-15);
    }
  }
  SECTION("r- - r+ = 200: the literal fp32 form is inf, cai's is 200 with gradients -1 and +1") {
    CHECK(gold()["logexp.fp32_overflows_at_200"][0] == 1.0);  // torch fp32
    volatile float x = 200.0f;
    const float literal = std::log(1.0f + std::exp(static_cast<float>(x)));
    CHECK(std::isinf(literal));
    const std::vector<float> c{0.0f}, r{200.0f};
    std::vector<float> gc(1), gr(1), losses(1);
    const auto res = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<float>{cv(c), cv(r), {}, {}},
                                             cai::reward_pair_grads<float>{mv(gc), mv(gr), mv(losses)});
    CHECK(std::isfinite(res.loss));
    CHECK(res.loss == Approx(200.0).epsilon(1e-15));
    CHECK(losses[0] == 200.0f);
    CHECK(gc[0] == -1.0f);
    CHECK(gr[0] == 1.0f);
    // And far beyond: d = -1e30 (rewards within float's range, the difference near its top).
    const std::vector<float> c2{-1e30f}, r2{1e30f};
    const double huge = bt_loss(c2, r2, {}, {}, 0, 0);
    CHECK(std::isfinite(huge));
    CHECK(huge == Approx(2e30).epsilon(1e-7));
  }
}

TEMPLATE_TEST_CASE("bradley_terry_loss matches torch autograd golden values (TRL, OpenRLHF, safe-rlhf, soft labels)", "[preference][golden]", float, double) {
  using R = TestType;
  const auto& g = gold();
  const vec c = g["bt.rc"], r = g["bt.rr"], m = g["bt.margin"], p = g["bt.labels"];
  const double coef = g["bt.center_coef"][0], reg = g["bt.l2_coef"][0];
  struct gcase {
    const char* name;
    bool margin, labels;
    double cc, l2;
  };
  for (const gcase k : {gcase{"hard", false, false, 0.0, 0.0}, gcase{"trl_margin", true, false, 0.0, 0.0},
                        gcase{"trl_center", true, false, coef, 0.0}, gcase{"safe_seq", false, false, 0.0, reg},
                        gcase{"soft", false, true, 0.0, 0.0}, gcase{"all", true, true, coef, reg}}) {
    const std::string n = std::string("bt.") + k.name;
    INFO(n);
    const bt_inputs in{c, r, k.margin ? m : vec{}, k.labels ? p : vec{}, k.cc, k.l2};
    const auto run = run_bt<R>(in);
    const double eps = storage_eps<R>();
    CHECK(run.res.loss == Approx(g[n + ".loss"][0]).epsilon(1e-13));
    for (std::size_t i = 0; i < c.size(); ++i) {
      INFO("pair " << i);
      CHECK(std::fabs(static_cast<double>(run.gc[i]) - g[n + ".dchosen"][i]) <= 1e-15 + eps * std::fabs(g[n + ".dchosen"][i]) * 2);
      CHECK(std::fabs(static_cast<double>(run.gr[i]) - g[n + ".drejected"][i]) <= 1e-15 + eps * std::fabs(g[n + ".drejected"][i]) * 2);
      CHECK(std::fabs(static_cast<double>(run.losses[i]) - g[n + ".losses"][i]) <= 1e-14 + eps * std::fabs(g[n + ".losses"][i]) * 2);
    }
    const auto& gm = g["bt.metrics"];
    CHECK(run.res.metrics.chosen == Approx(gm[0]).epsilon(1e-14));
    CHECK(run.res.metrics.rejected == Approx(gm[1]).epsilon(1e-14));
    CHECK(run.res.metrics.margin == Approx(gm[2]).epsilon(1e-14));
    CHECK(run.res.metrics.accuracy == gm[3]);
  }
}

TEST_CASE("bradley_terry_loss: same bits on threaded_host, optional outputs, an empty batch", "[preference]") {
  const auto in = random_bt(37, 5, true, true, 0.01, 0.001);
  const auto a = run_bt<float>(in), b = run_bt<float>(in, cai::threaded_host{2});
  CHECK(a.res.loss == b.res.loss);
  CHECK(a.gc == b.gc);
  CHECK(a.gr == b.gr);
  CHECK(a.losses == b.losses);
  CHECK(a.res.metrics.accuracy == b.res.metrics.accuracy);
  // Outputs are optional: the loss alone, or one gradient only, gives the same numbers.
  const auto c = to<float>(in.c), r = to<float>(in.r), m = to<float>(in.m), p = to<float>(in.p);
  const cai::reward_pair_batch<float> batch{cv(c), cv(r), cv(m), cv(p)};
  const cai::bradley_terry_options opt{.center_coef = 0.01, .l2_coef = 0.001};
  CHECK(cai::bradley_terry_loss(cai::host{}, batch, {}, opt).loss == a.res.loss);
  std::vector<float> gr(c.size(), 5.0f);
  CHECK(cai::bradley_terry_loss(cai::host{}, batch, cai::reward_pair_grads<float>{{}, mv(gr), {}}, opt).loss == a.res.loss);
  CHECK(gr == a.gr);
  // B = 0: loss 0, no metrics.
  const std::vector<double> e;
  const auto res = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<double>{cv(e), cv(e), {}, {}});
  CHECK(res.loss == 0.0);
  CHECK(res.metrics.count == 0);
  CHECK(res.metrics.accuracy == 0.0);
}

// ===== token-wise ==================================================================================================

TEMPLATE_TEST_CASE("bradley_terry_tokenwise_loss matches a long-double reference over the divergence-to-end slices", "[preference]", float, double) {
  using R = TestType;
  const auto tb = make_tok_batch(30, 14, 41);
  for (const double l2 : {0.0, 0.001, 0.2}) {
    INFO("l2_coef " << l2);
    const auto ref = reference_tok(tb, l2);
    const auto run = run_tok<R>(tb, l2);
    const ld eps = storage_eps<R>();
    // As in the sequence-wise test: all loss terms are >= 0 (relative tolerances), gradients relative to their terms.
    CHECK(near(run.res.loss, ref.loss, 4e-15L * ref.loss + 1e-18L));
    for (std::int64_t b = 0; b < tb.B; ++b) {
      INFO("pair " << b << " slice [" << ref.begin[z(b)] << ", " << ref.end[z(b)] << "]");
      CHECK(near(static_cast<double>(run.losses[z(b)]), ref.losses[z(b)], 2 * eps * ref.losses[z(b)] + 1e-18L));
      for (std::int64_t t = 0; t < tb.T; ++t) {
        const std::size_t i = z(b * tb.T + t);
        const bool inside = t >= ref.begin[z(b)] && t <= ref.end[z(b)];
        INFO("token " << t << (inside ? " inside" : " outside"));
        if (!inside) {
          CHECK(run.gc[i] == R(0));  // exact zeros outside the slice
          CHECK(run.gr[i] == R(0));
          continue;
        }
        CHECK(near(static_cast<double>(run.gc[i]), ref.gc[i], 2 * eps * ref.gscale[i]));
        CHECK(near(static_cast<double>(run.gr[i]), ref.gr[i], 2 * eps * ref.gscale[i]));
      }
    }
    CHECK(run.res.metrics.count == tb.B);
    CHECK(near(run.res.metrics.chosen, ref.mc, 1e-14L * 30));  // sums of values up to 30 in magnitude
    CHECK(near(run.res.metrics.rejected, ref.mr, 1e-14L * 30));
    CHECK(near(run.res.metrics.margin, ref.mm, 1e-14L * 60));
    CHECK(run.res.metrics.accuracy == static_cast<double>(ref.acc));
    // threaded_host: the same bits.
    const auto th = run_tok<R>(tb, l2, cai::threaded_host{2});
    CHECK(th.res.loss == run.res.loss);
    CHECK(th.gc == run.gc);
    CHECK(th.gr == run.gr);
    CHECK(th.losses == run.losses);
  }
}

TEMPLATE_TEST_CASE("bradley_terry_tokenwise_loss gradients match finite differences; scores outside the slices do not matter", "[preference]", float, double) {
  using R = TestType;
  for (const std::int64_t B : {1, 6, 25}) {
    auto tb = make_tok_batch(B, 11, 70 + static_cast<std::uint64_t>(B));
    for (auto* v : {&tb.hs, &tb.ls})
      for (auto& x : *v) x = std::ldexp(std::nearbyint(std::ldexp(x, 14)), -14);
    for (const double l2 : {0.0, 0.001, 0.2}) {
      INFO("B " << B << " l2_coef " << l2);
      const auto run = run_tok<R>(tb, l2);
      std::mt19937_64 gen(static_cast<std::uint64_t>(B) * 3 + 1);
      const auto dc = fd_direction(tb.hs.size(), gen), dr = fd_direction(tb.ls.size(), gen);
      const auto loss_at = [&](const vec& hs, const vec& ls) {
        const tok_views<R> v(tb, hs, ls);
        for (std::size_t i = 0; i < hs.size(); ++i) REQUIRE(static_cast<double>(v.h[i]) == hs[i]);  // exact
        for (std::size_t i = 0; i < ls.size(); ++i) REQUIRE(static_cast<double>(v.l[i]) == ls[i]);
        return cai::bradley_terry_tokenwise_loss(cai::host{}, v.c, v.r, {}, {.l2_coef = l2}).loss;
      };
      const auto objective = [&](double h) {
        vec hs(tb.hs), ls(tb.ls);
        for (std::size_t i = 0; i < hs.size(); ++i) hs[i] += h * dc[i];
        for (std::size_t i = 0; i < ls.size(); ++i) ls[i] += h * dr[i];
        return loss_at(hs, ls);
      };
      const double fd = (objective(fd_h) - objective(-fd_h)) / (2 * fd_h);
      double an = 0, abs_dot = 0;
      for (std::size_t i = 0; i < dc.size(); ++i) {
        an += static_cast<double>(run.gc[i]) * dc[i] + static_cast<double>(run.gr[i]) * dr[i];
        abs_dot += std::fabs(static_cast<double>(run.gc[i]) * dc[i]) + std::fabs(static_cast<double>(run.gr[i]) * dr[i]);
      }
      INFO("analytic " << an << " finite difference " << fd);
      CHECK(std::fabs(an - fd) <= fd_tolerance<R>(abs_dot, run.res.loss, dc, dr, static_cast<double>(B)));
      // Changing every score outside the slices leaves the loss bit-identical.
      const auto ref = reference_tok(tb, l2);
      vec hs(tb.hs), ls(tb.ls);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t < tb.T; ++t)
          if (t < ref.begin[z(b)] || t > ref.end[z(b)]) {
            hs[z(b * tb.T + t)] += 3.0;
            ls[z(b * tb.T + t)] -= 5.0;
          }
      CHECK(loss_at(hs, ls) == run.res.loss);
    }
  }
}

TEMPLATE_TEST_CASE("bradley_terry_tokenwise_loss matches torch autograd golden values (safe-rlhf token-wise)", "[preference][golden]", float, double) {
  using R = TestType;
  const auto& g = gold();
  tok_batch tb;
  tb.B = static_cast<std::int64_t>(g["tok.shape"][0]);
  tb.T = static_cast<std::int64_t>(g["tok.shape"][1]);
  tb.cid = g.as<std::int64_t>("tok.chosen_ids");
  tb.rid = g.as<std::int64_t>("tok.rejected_ids");
  tb.cm = g.as<std::uint8_t>("tok.chosen_mask");
  tb.rm = g.as<std::uint8_t>("tok.rejected_mask");
  tb.hs = g["tok.chosen_scores"];
  tb.ls = g["tok.rejected_scores"];
  // The independent reference finds the same slices as the torch loop.
  const auto& sl = g["tok.slices"];
  const auto ref = reference_tok(tb, 0.0);
  for (std::int64_t b = 0; b < tb.B; ++b) {
    CHECK(ref.begin[z(b)] == static_cast<std::int64_t>(sl[z(2 * b)]));
    CHECK(ref.end[z(b)] + 1 == static_cast<std::int64_t>(sl[z(2 * b + 1)]));
  }
  const double eps = storage_eps<R>();
  for (const auto& [name, l2] : {std::pair{"tok.plain", 0.0}, std::pair{"tok.reg", g["tok.l2_coef"][0]}}) {
    INFO(name);
    const std::string n = name;
    const auto run = run_tok<R>(tb, l2);
    CHECK(run.res.loss == Approx(g[n + ".loss"][0]).epsilon(1e-13));
    for (std::int64_t b = 0; b < tb.B; ++b)
      CHECK(std::fabs(static_cast<double>(run.losses[z(b)]) - g[n + ".losses"][z(b)]) <= 1e-14 + 2 * eps * std::fabs(g[n + ".losses"][z(b)]));
    for (std::size_t i = 0; i < run.gc.size(); ++i) {
      INFO("position " << i);
      CHECK(std::fabs(static_cast<double>(run.gc[i]) - g[n + ".dchosen"][i]) <= 1e-16 + 2 * eps * std::fabs(g[n + ".dchosen"][i]));
      CHECK(std::fabs(static_cast<double>(run.gr[i]) - g[n + ".drejected"][i]) <= 1e-16 + 2 * eps * std::fabs(g[n + ".drejected"][i]));
    }
    const auto& gm = g["tok.metrics"];
    CHECK(run.res.metrics.chosen == Approx(gm[0]).epsilon(1e-14).margin(1e-15));
    CHECK(run.res.metrics.rejected == Approx(gm[1]).epsilon(1e-14).margin(1e-15));
    CHECK(run.res.metrics.margin == Approx(gm[2]).epsilon(1e-14).margin(1e-15));
    CHECK(run.res.metrics.accuracy == gm[3]);
  }
}

// ===== bad input ===================================================================================================

TEST_CASE("bradley_terry_loss rejects bad input naming the argument", "[preference]") {
  const cai::host h;
  using pb = cai::reward_pair_batch<float>;
  using pg = cai::reward_pair_grads<float>;
  std::vector<float> c{1, 2, 3}, r{0, 1, 2}, r2{0, 1}, m{0, 0, 0}, p{1, 0.5f, 0}, g(3), g2(2);
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r2), {}, {}})), cai::shape_error, "cai::bradley_terry_loss", "'rejected'", "(3)");
  c[1] = std::numeric_limits<float>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, {}})), cai::invalid_argument, "'chosen'", "finite");
  c[1] = 2;
  r[2] = -std::numeric_limits<float>::infinity();
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, {}})), cai::invalid_argument, "'rejected'", "finite");
  r[2] = 2;
  m[0] = std::numeric_limits<float>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), cv(m), {}})), cai::invalid_argument, "'margin'");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), cv(r2), {}})), cai::shape_error, "'margin'");
  for (const float bad : {-0.01f, 1.5f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    p[1] = bad;
    INFO("label " << bad);
    CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, cv(p)})), cai::invalid_argument, "'labels'", "[0, 1]");
  }
  p[1] = 0.5f;
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, cv(r2)})), cai::shape_error, "'labels'");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, {}}, {}, {.center_coef = -0.1})), cai::invalid_argument, "'center_coef'", ">= 0");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, {}}, {}, {.l2_coef = -1e-3})), cai::invalid_argument, "'l2_coef'", ">= 0");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, {}}, {}, {.l2_coef = std::numeric_limits<double>::quiet_NaN()})), cai::invalid_argument, "'l2_coef'");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, {}}, pg{mv(g2), {}, {}})), cai::shape_error, "'grads.chosen'");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, {}}, pg{mv(g), mv(g2), {}})), cai::shape_error, "'grads.rejected'");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_loss(h, pb{cv(c), cv(r), {}, {}}, pg{{}, {}, mv(g2)})), cai::shape_error, "'grads.losses'");
  CHECK_NOTHROW(cai::bradley_terry_loss(h, pb{cv(c), cv(r), cv(r), cv(p)}, pg{mv(g), {}, {}}));  // and the fixed input passes
}

TEST_CASE("bradley_terry_tokenwise_loss rejects bad input naming the argument", "[preference]") {
  const cai::host h;
  const std::int64_t B = 2, T = 5;
  std::vector<double> hs(10, 0.5), ls(10, -0.5), g(10), g2(8);
  std::vector<std::uint8_t> cm{1, 1, 1, 0, 0, 1, 1, 1, 1, 0}, rm{1, 1, 1, 1, 0, 1, 1, 0, 0, 0};
  std::vector<std::int64_t> ci{5, 6, 7, 0, 0, 5, 6, 7, 8, 0}, ri{5, 6, 9, 9, 0, 5, 6, 8, 0, 0};
  const auto side = [&](const std::vector<double>& s, const std::vector<std::uint8_t>& m, const std::vector<std::int64_t>& id) {
    return cai::scored_tokens<double>{cai::make_view(s.data(), {B, T}), cai::make_view(m.data(), {B, T}), cai::make_view(id.data(), {B, T})};
  };
  constexpr auto call = "cai::bradley_terry_tokenwise_loss";
  CHECK_NOTHROW(cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, rm, ri)));
  // Identical ids up to the later end: row 0 differs at index 2; row 1 only at index 4, past both ends (3 and 3).
  auto same = ci;
  same[2] = 9;
  same[9] = 4;
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, cm, same))), cai::invalid_argument, call, "'rejected.ids'", "row 1");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, rm, ci))), cai::invalid_argument, "'rejected.ids'", "row 0");
  // A row without counted tokens.
  auto empty = cm;
  std::fill(empty.begin() + 5, empty.end(), std::uint8_t{0});
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, empty, ci), side(ls, rm, ri))), cai::invalid_argument, "'chosen.mask'", "row 1");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, empty, ri))), cai::invalid_argument, "'rejected.mask'", "row 1");
  auto two = cm;
  two[1] = 2;
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, two, ci), side(ls, rm, ri))), cai::invalid_argument, "'chosen.mask'", "values 0 or 1");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, two, ri))), cai::invalid_argument, "'rejected.mask'", "values 0 or 1");
  // Shapes.
  const cai::scored_tokens<double> short_r{cai::make_view(ls.data(), {B, T - 1}), cai::make_view(rm.data(), {B, T - 1}), cai::make_view(ri.data(), {B, T - 1})};
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), short_r)), cai::shape_error, "'rejected.scores'", "(2, 5)");
  auto bad_mask = side(ls, rm, ri);
  bad_mask.mask = cai::make_view(rm.data(), {T, B});
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), bad_mask)), cai::shape_error, "'rejected.mask'");
  // Missing ids and masks.
  auto no_ids = side(hs, cm, ci);
  no_ids.ids = {};
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, no_ids, side(ls, rm, ri))), cai::invalid_argument, "'chosen.ids'", "token ids");
  auto no_rids = side(ls, rm, ri);
  no_rids.ids = {};
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), no_rids)), cai::invalid_argument, "'rejected.ids'", "token ids");
  auto no_mask = side(hs, cm, ci);
  no_mask.mask = {};
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, no_mask, side(ls, rm, ri))), cai::invalid_argument, "'chosen.mask'");
  // Non-finite scores inside a slice are named; outside every slice they are never read.
  // Slices: row 0 [2, 3] (ids differ at 2, ends 2 and 3), row 1 [2, 3] (ids differ at 2, ends 3 and 1).
  auto nan_h = hs;
  nan_h[5 + 3] = std::numeric_limits<double>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(nan_h, cm, ci), side(ls, rm, ri))), cai::invalid_argument, "'chosen.scores'", "row 1, token 3");
  auto inf_l = ls;
  inf_l[2] = std::numeric_limits<double>::infinity();
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(inf_l, rm, ri))), cai::invalid_argument, "'rejected.scores'", "row 0, token 2");
  auto nan_out = hs;
  nan_out[1] = nan_out[4] = nan_out[5 + 4] = std::numeric_limits<double>::quiet_NaN();  // before and after the slices
  CHECK(std::isfinite(cai::bradley_terry_tokenwise_loss(h, side(nan_out, cm, ci), side(ls, rm, ri)).loss));
  // ... except the end scores, which the metrics read even before the slice (row 1's rejected end is token 1).
  auto nan_end = ls;
  nan_end[5 + 1] = std::numeric_limits<double>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(nan_end, rm, ri))), cai::invalid_argument, "'rejected.scores'", "end score", "row 1, token 1");
  // Options and output shapes.
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, rm, ri), {}, {.center_coef = 0.01})), cai::invalid_argument, "'center_coef'", "0");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, rm, ri), {}, {.l2_coef = -1.0})), cai::invalid_argument, "'l2_coef'");
  using tg = cai::token_pair_grads<double>;
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, rm, ri), tg{cai::make_view(g2.data(), {B, T - 1}), {}, {}})), cai::shape_error, "'grads.chosen'");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, rm, ri), tg{{}, cai::make_view(g2.data(), {T - 1, B}), {}})), cai::shape_error, "'grads.rejected'");
  CAI_REQUIRE_THROWS_NAMING((cai::bradley_terry_tokenwise_loss(h, side(hs, cm, ci), side(ls, rm, ri), tg{{}, {}, cai::make_view(g2.data(), {3})})), cai::shape_error, "'grads.losses'");
}
