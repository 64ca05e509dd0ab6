// Tests for cai/algorithms/kto.hpp: KTO (with its mergeable KL reference point and APO-zero unpaired) and BCO (with
// its running reward mean), each checked three ways:
//   * PyTorch golden values (tests/golden/gen_unpaired_orpo_simpo.py: TRL's formulas in torch fp64 autograd from
//     fp32 inputs), on cai's float and double paths;
//   * an independent long-double reference written differently (1 - s(u) as 1 / (1 + e^u), -log s(x) as
//     log1p(e^-x), the derivatives by hand);
//   * central finite differences of the loss itself (z0, delta and the weights held constant).
// Tolerances. cai forms every term in double from the inputs, so the loss and metrics match the fp64 references to
// rounding: 1e-12 relative + 1e-14 absolute on both paths. Per-example outputs are stored in R: float 3e-7 relative
// + 1e-9 x the record's largest magnitude, double 1e-11 relative + 1e-13 x that magnitude. Finite differences:
// h = 1e-5, |analytic - FD| <= 1e-7 x (|FD| + max |gradient|).
#include <cai/algorithms/kto.hpp>
#include <cai/core/host.hpp>

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
using UB = cai::unpaired_batch<double>;

template <class T>
cai::tensor_view<const T, 1> cv(const std::vector<T>& v) {
  return cai::make_view<const T>(v.data(), {static_cast<std::int64_t>(v.size())});
}
template <class T>
cai::tensor_view<T, 1> mv(std::vector<T>& v) {
  return cai::make_view(v.data(), {static_cast<std::int64_t>(v.size())});
}

void check_close(double got, double want, double rel, double abs, const std::string& what) {
  INFO(what << ": got " << got << ", want " << want);
  CHECK(std::isfinite(got));
  CHECK(std::fabs(got - want) <= abs + rel * std::fabs(want));
}

template <class R>
void check_array(const std::vector<R>& got, const std::vector<double>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  double scale = 0;
  for (const double w : want) scale = std::max(scale, std::fabs(w));
  const bool f = std::is_same_v<R, float>;
  for (std::size_t i = 0; i < got.size(); ++i)
    check_close(static_cast<double>(got[i]), want[i], f ? 3e-7 : 1e-11, (f ? 1e-9 : 1e-13) * scale, what + "[" + std::to_string(i) + "]");
}

std::vector<std::uint8_t> labels_of(const std::vector<double>& v) {
  std::vector<std::uint8_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = v[i] != 0.0 ? 1 : 0;
  return out;
}

/// Independent long-double reference for KTO (bco = false) and BCO (bco = true); ref = z0 or delta.
struct reference_result {
  ld loss = 0;
  std::vector<ld> losses, dlogp;  // per-example loss (weighted), d loss / d logp_i
  ld rewards_chosen = 0, rewards_rejected = 0;
  std::int64_t nd = 0, nu = 0;
};

reference_result unpaired_reference(bool bco, ld beta, ld wd, ld wu, ld ref, const std::vector<double>& logp,
                                    const std::vector<double>& ref_logp, const std::vector<std::uint8_t>& des,
                                    const std::vector<double>* weights = nullptr) {
  reference_result r;
  const std::size_t n = logp.size();
  r.losses.resize(n);
  r.dlogp.resize(n);
  ld sum_c = 0, sum_r = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const ld rho = static_cast<ld>(logp[i]) - static_cast<ld>(ref_logp[i]);
    const ld w = weights ? static_cast<ld>((*weights)[i]) : 1.0L;
    ld l, d;
    if (!bco) {
      // desirable: lambda_D / (1 + e^(beta (rho - z0))); undesirable: lambda_U / (1 + e^(beta (z0 - rho)))
      const ld e = des[i] ? std::exp(beta * (rho - ref)) : std::exp(beta * (ref - rho));
      const ld lam = des[i] ? wd : wu;
      l = lam / (1 + e);
      d = (des[i] ? -1.0L : 1.0L) * lam * beta * e / ((1 + e) * (1 + e));
    } else {
      // desirable: log(1 + e^-(R - delta)); undesirable: log(1 + e^(R - delta)); R = beta rho
      const ld x = beta * rho - ref;
      if (des[i]) {
        l = std::log1p(std::exp(-x));
        d = -beta / (1 + std::exp(x));
      } else {
        l = std::log1p(std::exp(x));
        d = beta / (1 + std::exp(-x));
      }
    }
    r.losses[i] = w * l;
    r.dlogp[i] = w * d / static_cast<ld>(n);
    r.loss += w * l;
    if (des[i]) {
      sum_c += beta * rho;
      ++r.nd;
    } else {
      sum_r += beta * rho;
      ++r.nu;
    }
  }
  r.loss /= static_cast<ld>(n);
  r.rewards_chosen = r.nd ? sum_c / static_cast<ld>(r.nd) : 0;
  r.rewards_rejected = r.nu ? sum_r / static_cast<ld>(r.nu) : 0;
  return r;
}

void check_against_reference(const cai::unpaired_result& res, const reference_result& ref, const std::vector<double>& glogp,
                             const std::vector<double>& gref, const std::vector<double>& losses) {
  check_close(res.loss, static_cast<double>(ref.loss), 1e-12, 1e-14, "loss");
  check_close(res.rewards_chosen, static_cast<double>(ref.rewards_chosen), 1e-12, 1e-14, "rewards_chosen");
  check_close(res.rewards_rejected, static_cast<double>(ref.rewards_rejected), 1e-12, 1e-14, "rewards_rejected");
  check_close(res.margin, static_cast<double>(ref.rewards_chosen - ref.rewards_rejected), 1e-12, 1e-14, "margin");
  CHECK(res.desirable == ref.nd);
  CHECK(res.undesirable == ref.nu);
  double scale = 0;
  for (const ld d : ref.dlogp) scale = std::max(scale, std::fabs(static_cast<double>(d)));
  for (std::size_t i = 0; i < glogp.size(); ++i) {
    const std::string at = "[" + std::to_string(i) + "]";
    check_close(glogp[i], static_cast<double>(ref.dlogp[i]), 1e-11, 1e-14 * scale, "dlogp" + at);
    CHECK(gref[i] == -glogp[i]);  // d loss / d ref_logp = -d loss / d logp, exactly
    check_close(losses[i], static_cast<double>(ref.losses[i]), 1e-11, 1e-14, "losses" + at);
  }
}

/// Central finite differences of `loss(logp, ref_logp)` against the analytic gradients, every element.
template <class F>
void check_fd(F&& loss, std::vector<double> logp, std::vector<double> ref_logp, const std::vector<double>& glogp,
              const std::vector<double>& gref) {
  double scale = 0;
  for (const double g : glogp) scale = std::max(scale, std::fabs(g));
  const double h = 1e-5;
  for (std::size_t i = 0; i < logp.size(); ++i) {
    for (int side = 0; side < 2; ++side) {
      auto& x = side == 0 ? logp : ref_logp;
      const double x0 = x[i];
      x[i] = x0 + h;
      const double up = loss(logp, ref_logp);
      x[i] = x0 - h;
      const double down = loss(logp, ref_logp);
      x[i] = x0;
      const double fd = (up - down) / (2 * h), an = (side == 0 ? glogp : gref)[i];
      INFO((side == 0 ? "d/dlogp[" : "d/dref_logp[") << i << "]: analytic " << an << ", FD " << fd);
      CHECK(std::fabs(an - fd) <= 1e-7 * (std::fabs(fd) + scale));
    }
  }
}

struct random_unpaired {
  std::vector<double> logp, ref;
  std::vector<std::uint8_t> des;
};

random_unpaired make_random(std::size_t n, double spread, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(-80.0, -5.0);
  std::normal_distribution<double> nd(0.0, spread);
  random_unpaired r;
  for (std::size_t i = 0; i < n; ++i) {
    r.logp.push_back(u(gen));
    r.ref.push_back(r.logp.back() - nd(gen));
    r.des.push_back(static_cast<std::uint8_t>(gen() % 3 != 0));
  }
  return r;
}

}  // namespace

// ----- KTO -----------------------------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("kto_loss matches TRL's KTO and APO-zero unpaired losses, gradients and metrics (PyTorch golden)",
                   "[preference][kto]", float, double) {
  using R = TestType;
  const cai_test::golden g("unpaired_orpo_simpo.txt");
  const auto logp = g.as<R>("kto.logp"), ref = g.as<R>("kto.ref");
  const auto des = labels_of(g["kto.desirable"]);
  const auto kl_logp = g.as<R>("kto.kl_logp"), kl_ref = g.as<R>("kto.kl_ref");
  const auto kl_logp_neg = g.as<R>("kto.kl_logp_neg"), kl_ref_neg = g.as<R>("kto.kl_ref_neg");
  const std::int64_t B = static_cast<std::int64_t>(logp.size());
  for (const std::string c : {"default", "weighted", "z0_clamped", "apo"}) {
    const std::string p = "kto." + c;
    INFO("case " << p);
    double z0 = 0.0;
    if (c == "default" || c == "weighted") z0 = cai::kto_reference_point(cai::kto_kl_moments(cai::host{}, cv(kl_logp), cv(kl_ref)));
    if (c == "z0_clamped") {
      const auto st = cai::kto_kl_moments(cai::host{}, cv(kl_logp_neg), cv(kl_ref_neg));
      CHECK(st.mean < 0.0);
      z0 = cai::kto_reference_point(st);
      CHECK(z0 == 0.0);
    }
    check_close(z0, g[p + ".z0"][0], 1e-12, 1e-15, "z0");
    const cai::kto spec{.beta = g[p + ".beta"][0], .desirable_weight = g[p + ".wd"][0], .undesirable_weight = g[p + ".wu"][0]};
    std::vector<R> gl(logp.size(), R(7)), gr(logp.size(), R(7)), ls(logp.size(), R(7));
    const cai::unpaired_batch<R> in{.logp = cv(logp), .ref_logp = cv(ref), .desirable = cai::make_view<const std::uint8_t>(des.data(), {B})};
    const auto res = cai::kto_loss(cai::host{}, spec, in, z0, {.logp = mv(gl), .ref_logp = mv(gr), .losses = mv(ls)});
    check_close(res.loss, g[p + ".loss"][0], 1e-12, 1e-14, "loss");
    check_array(gl, g[p + ".dlogp"], "dlogp");
    check_array(gr, g[p + ".dref"], "dref");
    check_array(ls, g[p + ".losses"], "losses");
    const auto& m = g[p + ".metrics"];
    check_close(res.rewards_chosen, m[0], 1e-12, 1e-14, "rewards_chosen");
    check_close(res.rewards_rejected, m[1], 1e-12, 1e-14, "rewards_rejected");
    check_close(res.margin, m[2], 1e-12, 1e-14, "margin");
    CHECK(static_cast<double>(res.desirable) == m[3]);
    CHECK(static_cast<double>(res.undesirable) == m[4]);
    CHECK(res.reference == z0);
    // Without any gradient output: the same loss and metrics, bit for bit.
    const auto bare = cai::kto_loss(cai::host{}, spec, in, z0);
    CHECK(bare.loss == res.loss);
    CHECK(bare.margin == res.margin);
  }
}

TEST_CASE("kto_loss agrees with a long-double reference and with finite differences", "[preference][kto]") {
  const auto d = make_random(23, 12.0, 31);
  const std::int64_t B = 23;
  struct setting {
    double beta, wd, wu, z0;
  };
  for (const setting s : {setting{0.1, 1.0, 1.0, 0.0}, setting{0.1, 1.0, 1.0, 0.8}, setting{0.5, 1.33, 0.7, 2.5},
                          setting{2.0, 0.0, 1.0, 0.3}, setting{0.05, 2.0, 0.0, 11.0}}) {
    INFO("beta " << s.beta << " lambda_D " << s.wd << " lambda_U " << s.wu << " z0 " << s.z0);
    const cai::kto spec{.beta = s.beta, .desirable_weight = s.wd, .undesirable_weight = s.wu};
    const auto des = cai::make_view<const std::uint8_t>(d.des.data(), {B});
    std::vector<double> gl(23), gr(23), ls(23);
    const auto res = cai::kto_loss(cai::host{}, spec, UB{.logp = cv(d.logp), .ref_logp = cv(d.ref), .desirable = des}, s.z0,
                                   {.logp = mv(gl), .ref_logp = mv(gr), .losses = mv(ls)});
    const auto ref = unpaired_reference(false, s.beta, s.wd, s.wu, s.z0, d.logp, d.ref, d.des);
    check_against_reference(res, ref, gl, gr, ls);
    CHECK(res.reference == s.z0);
    const auto loss = [&](const std::vector<double>& lp, const std::vector<double>& rf) {
      return cai::kto_loss(cai::host{}, spec, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = des}, s.z0).loss;
    };
    check_fd(loss, d.logp, d.ref, gl, gr);
    // The threaded host gives the same bits.
    std::vector<double> gl2(23);
    const auto res2 = cai::kto_loss(cai::threaded_host{}, spec, UB{.logp = cv(d.logp), .ref_logp = cv(d.ref), .desirable = des}, s.z0,
                                    {.logp = mv(gl2)});
    CHECK(res2.loss == res.loss);
    CHECK(gl2 == gl);
  }
}

TEST_CASE("kto_loss with z0 = 0 is APO-zero unpaired: 1 - s(beta rho) desirable, s(beta rho) undesirable", "[preference][kto]") {
  const auto d = make_random(17, 20.0, 41);
  const std::int64_t B = 17;
  const double beta = 0.2;
  std::vector<double> ls(17), gl(17);
  const auto res = cai::kto_loss(cai::host{}, cai::kto{.beta = beta},
                                 UB{.logp = cv(d.logp), .ref_logp = cv(d.ref), .desirable = cai::make_view<const std::uint8_t>(d.des.data(), {B})},
                                 0.0, {.logp = mv(gl), .losses = mv(ls)});
  ld total = 0;
  for (std::size_t i = 0; i < 17; ++i) {
    const ld x = beta * (static_cast<ld>(d.logp[i]) - static_cast<ld>(d.ref[i]));
    const ld s = 1 / (1 + std::exp(-x));
    const ld want = d.des[i] ? 1 - s : s;  // APO-zero unpaired (TRL loss_type "apo_zero_unpaired")
    total += want;
    check_close(ls[i], static_cast<double>(want), 1e-12, 1e-15, "loss[" + std::to_string(i) + "]");
    // d/d logp: -beta s (1 - s) for desirable, +beta s (1 - s) for undesirable, over B
    const ld dwant = (d.des[i] ? -1 : 1) * beta * s * (1 - s) / 17;
    check_close(gl[i], static_cast<double>(dwant), 1e-11, 1e-16, "dlogp[" + std::to_string(i) + "]");
  }
  check_close(res.loss, static_cast<double>(total / 17), 1e-12, 1e-15, "loss");
}

TEST_CASE("kto_kl_moments and kto_reference_point: the mismatched pairs' mean log-ratio clamped at 0, mergeable", "[preference][kto]") {
  std::mt19937_64 gen(51);
  std::normal_distribution<double> nd(0.7, 2.0);
  std::uniform_real_distribution<double> u(-60.0, -3.0);
  std::vector<double> p(37), q(37);
  for (std::size_t i = 0; i < 37; ++i) {
    p[i] = u(gen);
    q[i] = p[i] - nd(gen);
  }
  const auto whole = cai::kto_kl_moments(cai::host{}, cv(p), cv(q));
  ld mean = 0;
  for (std::size_t i = 0; i < 37; ++i) mean += static_cast<ld>(p[i]) - static_cast<ld>(q[i]);
  mean /= 37;
  ld m2 = 0;
  for (std::size_t i = 0; i < 37; ++i) {
    const ld dv = static_cast<ld>(p[i]) - static_cast<ld>(q[i]) - mean;
    m2 += dv * dv;
  }
  CHECK(whole.count == 37);
  check_close(whole.mean, static_cast<double>(mean), 1e-13, 1e-15, "mean");
  check_close(whole.m2, static_cast<double>(m2), 1e-12, 1e-14, "m2");
  REQUIRE(whole.mean > 0.0);
  CHECK(cai::kto_reference_point(whole) == whole.mean);

  // Micro-batches / ranks: the moments of two halves merged equal the moments of the whole.
  const std::vector<double> p1(p.begin(), p.begin() + 15), q1(q.begin(), q.begin() + 15), p2(p.begin() + 15, p.end()),
      q2(q.begin() + 15, q.end());
  const auto merged = merge(cai::kto_kl_moments(cai::host{}, cv(p1), cv(q1)), cai::kto_kl_moments(cai::host{}, cv(p2), cv(q2)));
  CHECK(merged.count == whole.count);
  check_close(merged.mean, whole.mean, 1e-14, 1e-15, "merged mean");
  check_close(merged.m2, whole.m2, 1e-12, 1e-14, "merged m2");
  check_close(cai::kto_reference_point(merged), cai::kto_reference_point(whole), 1e-14, 1e-15, "merged z0");
  // The empty state is the identity of merge, and its reference point is 0.
  const cai::moments empty{};
  CHECK(cai::kto_reference_point(empty) == 0.0);
  CHECK(merge(empty, whole).mean == whole.mean);
  CHECK(merge(whole, empty).count == whole.count);
  const auto none = cai::kto_kl_moments(cai::host{}, cai::tensor_view<const double, 1>{}, cai::tensor_view<const double, 1>{});
  CHECK(none.count == 0);
  CHECK(cai::kto_reference_point(none) == 0.0);

  // A negative mean is clamped to 0 (the policy is closer to the reference than the reference is to itself).
  std::vector<double> qn(q);
  for (std::size_t i = 0; i < 37; ++i) qn[i] = p[i] + std::fabs(p[i] - q[i]) + 0.1;
  const auto neg = cai::kto_kl_moments(cai::host{}, cv(p), cv(qn));
  CHECK(neg.mean < 0.0);
  CHECK(cai::kto_reference_point(neg) == 0.0);
  // The float path: the differences are formed in double from the float inputs.
  const std::vector<float> pf(p.begin(), p.end()), qf(q.begin(), q.end());
  ld meanf = 0;
  for (std::size_t i = 0; i < 37; ++i) meanf += static_cast<ld>(pf[i]) - static_cast<ld>(qf[i]);
  check_close(cai::kto_kl_moments(cai::host{}, cv(pf), cv(qf)).mean, static_cast<double>(meanf / 37), 1e-13, 1e-15, "float mean");
}

TEST_CASE("kto_loss handles all-desirable and all-undesirable batches, a batch of 1, an empty batch and extreme log-ratios",
          "[preference][kto]") {
  const auto d = make_random(9, 8.0, 61);
  const std::int64_t B = 9;
  const cai::kto spec{.beta = 0.3, .desirable_weight = 1.2, .undesirable_weight = 0.9};
  for (const std::uint8_t label : {std::uint8_t{0}, std::uint8_t{1}}) {
    INFO("all labels " << int(label));
    const std::vector<std::uint8_t> des(9, label);
    std::vector<double> gl(9), gr(9), ls(9);
    const auto res = cai::kto_loss(cai::host{}, spec, UB{.logp = cv(d.logp), .ref_logp = cv(d.ref), .desirable = cai::make_view<const std::uint8_t>(des.data(), {B})},
                                   0.4, {.logp = mv(gl), .ref_logp = mv(gr), .losses = mv(ls)});
    const auto ref = unpaired_reference(false, 0.3, 1.2, 0.9, 0.4, d.logp, d.ref, des);
    check_against_reference(res, ref, gl, gr, ls);
    CHECK((label ? res.rewards_rejected : res.rewards_chosen) == 0.0);  // no examples: 0
    CHECK((label ? res.undesirable : res.desirable) == 0);
    CHECK(res.margin == res.rewards_chosen - res.rewards_rejected);
  }
  // A batch of one.
  {
    const std::vector<double> lp{-12.5}, rf{-14.0};
    const std::vector<std::uint8_t> des{1};
    std::vector<double> gl(1), gr(1);
    const auto res = cai::kto_loss(cai::host{}, spec, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = cai::make_view<const std::uint8_t>(des.data(), {1})},
                                   0.25, {.logp = mv(gl), .ref_logp = mv(gr)});
    const ld e = std::exp(0.3L * (1.5L - 0.25L));
    check_close(res.loss, static_cast<double>(1.2L / (1 + e)), 1e-13, 1e-16, "loss");
    check_close(gl[0], static_cast<double>(-1.2L * 0.3L * e / ((1 + e) * (1 + e))), 1e-12, 1e-16, "dlogp");
    CHECK(gr[0] == -gl[0]);
    check_close(res.rewards_chosen, 0.3 * 1.5, 1e-14, 1e-16, "rewards_chosen");
    CHECK(res.desirable == 1);
    CHECK(res.undesirable == 0);
  }
  // An empty batch: loss 0, nothing read.
  {
    const auto res = cai::kto_loss(cai::host{}, spec, cai::unpaired_batch<double>{}, 0.0);
    CHECK(res.loss == 0.0);
    CHECK(res.desirable + res.undesirable == 0);
  }
  // Extreme log-ratios: |beta rho| up to 1e3 in both directions and for both labels; everything stays finite and
  // matches the long-double reference (which has the range to form e^1000).
  {
    const std::vector<double> rho{1e4, -1e4, 3e3, -3e3, 1e3, -1e3, 0.0, 1e4, -1e4};
    const std::vector<std::uint8_t> des{1, 1, 0, 0, 1, 0, 1, 0, 0};
    std::vector<double> lp(9), rf(9, -5.0);
    for (std::size_t i = 0; i < 9; ++i) lp[i] = rf[i] + rho[i];
    for (const double beta : {0.1, 0.3333}) {
      std::vector<double> gl(9), gr(9), ls(9);
      const cai::kto sp{.beta = beta};
      const auto res = cai::kto_loss(cai::host{}, sp, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = cai::make_view<const std::uint8_t>(des.data(), {B})},
                                     0.0, {.logp = mv(gl), .ref_logp = mv(gr), .losses = mv(ls)});
      CHECK(std::isfinite(res.loss));
      for (std::size_t i = 0; i < 9; ++i) {
        CHECK(std::isfinite(gl[i]));
        CHECK(ls[i] >= 0.0);
        CHECK(ls[i] <= 1.0);
      }
      const auto ref = unpaired_reference(false, beta, 1.0, 1.0, 0.0, lp, rf, des);
      check_against_reference(res, ref, gl, gr, ls);
    }
  }
}

// ----- BCO -----------------------------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("bco_loss matches TRL's BCO over a training sequence and an evaluation step (PyTorch golden)",
                   "[preference][kto][bco]", float, double) {
  using R = TestType;
  const cai_test::golden g("unpaired_orpo_simpo.txt");
  const cai::bco spec{.beta = g["bco.beta"][0]};
  cai::moments running{};
  std::int64_t seen = 0;
  for (const std::string k : {"b1", "b2", "b3"}) {
    const std::string p = "bco." + k;
    INFO("step " << p);
    const auto logp = g.as<R>(p + ".logp"), ref = g.as<R>(p + ".ref");
    const auto des = labels_of(g[p + ".desirable"]);
    const std::int64_t B = static_cast<std::int64_t>(logp.size());
    const bool update = g[p + ".update"][0] != 0.0;
    std::vector<R> w;
    cai::unpaired_batch<R> in{.logp = cv(logp), .ref_logp = cv(ref), .desirable = cai::make_view<const std::uint8_t>(des.data(), {B})};
    if (k == "b2") {
      w = g.as<R>(p + ".weights");
      in.weights = cv(w);
    }
    std::vector<R> gl(logp.size(), R(7)), gr(logp.size(), R(7)), ls(logp.size(), R(7));
    const auto res = cai::bco_loss(cai::host{}, spec, in, {.running = &running, .update = update},
                                   {.logp = mv(gl), .ref_logp = mv(gr), .losses = mv(ls)});
    if (update) seen += B;
    CHECK(running.count == seen);
    check_close(running.mean, g[p + ".delta"][0], 1e-12, 1e-15, "running mean");
    check_close(res.reference, g[p + ".delta"][0], 1e-12, 1e-15, "delta");
    check_close(res.loss, g[p + ".loss"][0], 1e-12, 1e-14, "loss");
    check_array(gl, g[p + ".dlogp"], "dlogp");
    check_array(gr, g[p + ".dref"], "dref");
    check_array(ls, g[p + ".losses"], "losses");
    const auto& m = g[p + ".metrics"];
    check_close(res.rewards_chosen, m[0], 1e-12, 1e-14, "rewards_chosen");
    check_close(res.rewards_rejected, m[1], 1e-12, 1e-14, "rewards_rejected");
    check_close(res.margin, m[2], 1e-12, 1e-14, "margin");
    CHECK(static_cast<double>(res.desirable) == m[3]);
    CHECK(static_cast<double>(res.undesirable) == m[4]);
  }
}

TEST_CASE("bco_loss keeps a count-weighted running reward mean and agrees with long-double and finite-difference references",
          "[preference][kto][bco]") {
  const auto b1 = make_random(13, 10.0, 71), b2 = make_random(6, 10.0, 72);
  const double beta = 0.15;
  const cai::bco spec{.beta = beta};
  const auto des1 = cai::make_view<const std::uint8_t>(b1.des.data(), {13});
  const auto des2 = cai::make_view<const std::uint8_t>(b2.des.data(), {6});
  ld s1 = 0, s2 = 0;
  for (std::size_t i = 0; i < 13; ++i) s1 += beta * (static_cast<ld>(b1.logp[i]) - static_cast<ld>(b1.ref[i]));
  for (std::size_t i = 0; i < 6; ++i) s2 += beta * (static_cast<ld>(b2.logp[i]) - static_cast<ld>(b2.ref[i]));

  cai::moments running{};
  // First call on an empty state: delta = this batch's mean of beta rho.
  std::vector<double> gl(13), gr(13), ls(13);
  const auto r1 = cai::bco_loss(cai::host{}, spec, UB{.logp = cv(b1.logp), .ref_logp = cv(b1.ref), .desirable = des1}, {.running = &running},
                                {.logp = mv(gl), .ref_logp = mv(gr), .losses = mv(ls)});
  CHECK(running.count == 13);
  check_close(r1.reference, static_cast<double>(s1 / 13), 1e-13, 1e-15, "first delta");
  check_against_reference(r1, unpaired_reference(true, beta, 1, 1, r1.reference, b1.logp, b1.ref, b1.des), gl, gr, ls);
  // Gradients by finite differences with delta held constant (an evaluation call on a copy of the state).
  const cai::moments after1 = running;
  check_fd(
      [&](const std::vector<double>& lp, const std::vector<double>& rf) {
        cai::moments st = after1;
        return cai::bco_loss(cai::host{}, spec, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = des1}, {.running = &st, .update = false}).loss;
      },
      b1.logp, b1.ref, gl, gr);

  // Second call: delta = the running mean over both batches, weighted by their sizes.
  std::vector<double> w(6);
  for (std::size_t i = 0; i < 6; ++i) w[i] = b2.des[i] ? 1.0 : 0.5 + 1.7 * static_cast<double>(i);  // UDM: desirable weight 1
  std::vector<double> gl2(6), gr2(6), ls2(6);
  const auto r2 = cai::bco_loss(cai::host{}, spec, UB{.logp = cv(b2.logp), .ref_logp = cv(b2.ref), .desirable = des2, .weights = cv(w)},
                                {.running = &running}, {.logp = mv(gl2), .ref_logp = mv(gr2), .losses = mv(ls2)});
  CHECK(running.count == 19);
  const ld both = (s1 + s2) / 19;
  check_close(r2.reference, static_cast<double>(both), 1e-13, 1e-15, "second delta");
  CHECK(std::fabs(r2.reference - static_cast<double>(s2 / 6)) > 1e-3);  // not this batch's mean alone
  check_against_reference(r2, unpaired_reference(true, beta, 1, 1, r2.reference, b2.logp, b2.ref, b2.des, &w), gl2, gr2, ls2);
  // The weights multiply each loss (the unweighted reference times w).
  const auto unweighted = unpaired_reference(true, beta, 1, 1, r2.reference, b2.logp, b2.ref, b2.des);
  for (std::size_t i = 0; i < 6; ++i) check_close(ls2[i], static_cast<double>(unweighted.losses[i]) * w[i], 1e-12, 1e-15, "weighted loss");
  // A weight given on a desirable row is ignored (UDM reweighs undesirable examples only, as TRL).
  {
    std::vector<double> w9(w), ls9(6);
    for (std::size_t i = 0; i < 6; ++i)
      if (b2.des[i]) w9[i] = 9.0;
    cai::moments st = after1;
    cai::bco_loss(cai::host{}, spec, UB{.logp = cv(b2.logp), .ref_logp = cv(b2.ref), .desirable = des2, .weights = cv(w9)},
                  {.running = &st}, {.losses = mv(ls9)});
    for (std::size_t i = 0; i < 6; ++i) CHECK(ls9[i] == ls2[i]);
  }
  const cai::moments after2 = running;
  check_fd(
      [&](const std::vector<double>& lp, const std::vector<double>& rf) {
        cai::moments st = after2;
        return cai::bco_loss(cai::host{}, spec, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = des2, .weights = cv(w)},
                             {.running = &st, .update = false})
            .loss;
      },
      b2.logp, b2.ref, gl2, gr2);

  // update = false: the state is left alone, and delta is its mean.
  const auto r3 = cai::bco_loss(cai::host{}, spec, UB{.logp = cv(b1.logp), .ref_logp = cv(b1.ref), .desirable = des1}, {.running = &running, .update = false});
  CHECK(running.count == after2.count);
  CHECK(running.mean == after2.mean);
  CHECK(running.m2 == after2.m2);
  CHECK(r3.reference == after2.mean);
  check_close(r3.loss, static_cast<double>(unpaired_reference(true, beta, 1, 1, after2.mean, b1.logp, b1.ref, b1.des).loss), 1e-12, 1e-15, "eval loss");
  // Evaluating on an empty state: delta = 0, state still empty.
  cai::moments fresh{};
  const auto r4 = cai::bco_loss(cai::host{}, spec, UB{.logp = cv(b1.logp), .ref_logp = cv(b1.ref), .desirable = des1}, {.running = &fresh, .update = false});
  CHECK(fresh.count == 0);
  CHECK(r4.reference == 0.0);
  // Two ranks: merging the per-rank running states gives the state of one process that saw both batches.
  cai::moments rank0{}, rank1{};
  (void)cai::bco_loss(cai::host{}, spec, UB{.logp = cv(b1.logp), .ref_logp = cv(b1.ref), .desirable = des1}, {.running = &rank0});
  (void)cai::bco_loss(cai::host{}, spec, UB{.logp = cv(b2.logp), .ref_logp = cv(b2.ref), .desirable = des2}, {.running = &rank1});
  const auto m = merge(rank0, rank1);
  CHECK(m.count == after2.count);
  check_close(m.mean, after2.mean, 1e-14, 1e-16, "merged ranks");
}

TEST_CASE("bco_loss stays finite at extreme rewards and handles one-label batches", "[preference][kto][bco]") {
  const std::vector<double> rho{1e4, -1e4, 5e3, -5e3, 0.0, 1e4};
  const std::vector<std::uint8_t> des{1, 1, 0, 0, 1, 0};
  std::vector<double> lp(6), rf(6, -3.0);
  for (std::size_t i = 0; i < 6; ++i) lp[i] = rf[i] + rho[i];
  cai::moments st{};
  std::vector<double> gl(6), gr(6), ls(6);
  const auto res = cai::bco_loss(cai::host{}, cai::bco{.beta = 0.1}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = cai::make_view<const std::uint8_t>(des.data(), {6})},
                                 {.running = &st}, {.logp = mv(gl), .ref_logp = mv(gr), .losses = mv(ls)});
  CHECK(std::isfinite(res.loss));
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(std::isfinite(gl[i]));
    CHECK(std::isfinite(ls[i]));
  }
  check_against_reference(res, unpaired_reference(true, 0.1, 1, 1, res.reference, lp, rf, des), gl, gr, ls);
  // All undesirable.
  const std::vector<std::uint8_t> none(6, 0);
  cai::moments st2{};
  const auto r2 = cai::bco_loss(cai::host{}, cai::bco{.beta = 0.1}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = cai::make_view<const std::uint8_t>(none.data(), {6})},
                                {.running = &st2});
  CHECK(r2.desirable == 0);
  CHECK(r2.rewards_chosen == 0.0);
  check_close(r2.loss, static_cast<double>(unpaired_reference(true, 0.1, 1, 1, r2.reference, lp, rf, none).loss), 1e-12, 1e-15, "loss");
}

// ----- bad input -----------------------------------------------------------------------------------------------------

TEST_CASE("kto_loss, bco_loss and kto_kl_moments reject bad input naming the argument", "[preference][kto][bco]") {
  const cai::host h;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> lp{-3, -4, -5}, rf{-3.5, -4.5, -4}, lp_nan{-3, nan, -5}, short_rf{-1, -2}, w{1, 0.5, 2}, w_bad{1, -0.5, 2};
  std::vector<std::uint8_t> des{1, 0, 1}, des_bad{1, 2, 0}, des_short{1, 0};
  std::vector<double> g3(3), g2(2);
  const auto dv = cai::make_view<const std::uint8_t>(des.data(), {3});
  const cai::unpaired_batch<double> ok{.logp = cv(lp), .ref_logp = cv(rf), .desirable = dv};

  CHECK_NOTHROW(cai::kto_loss(h, cai::kto{}, ok, 0.0));
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{.beta = 0.0}, ok, 0.0)), cai::invalid_argument, "cai::kto_loss", "'kto.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{.beta = -0.1}, ok, 0.0)), cai::invalid_argument, "'kto.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{.beta = nan}, ok, 0.0)), cai::invalid_argument, "'kto.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{.desirable_weight = -1.0}, ok, 0.0)), cai::invalid_argument, "'kto.desirable_weight'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{.undesirable_weight = nan}, ok, 0.0)), cai::invalid_argument, "'kto.undesirable_weight'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, ok, -0.5)), cai::invalid_argument, "'z0'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, ok, nan)), cai::invalid_argument, "'z0'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, UB{.logp = cv(lp_nan), .ref_logp = cv(rf), .desirable = dv}, 0.0)), cai::invalid_argument, "'logp'", "at 1");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, UB{.logp = cv(lp), .ref_logp = cv(lp_nan), .desirable = dv}, 0.0)), cai::invalid_argument, "'ref_logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, UB{.logp = cv(lp), .desirable = dv}, 0.0)), cai::invalid_argument, "'ref_logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, UB{.logp = cv(lp), .ref_logp = cv(short_rf), .desirable = dv}, 0.0)), cai::shape_error, "'ref_logp'", "(3)");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, UB{.logp = cv(lp), .ref_logp = cv(rf)}, 0.0)), cai::invalid_argument, "'desirable'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = cai::make_view<const std::uint8_t>(des_short.data(), {2})}, 0.0)),
                            cai::shape_error, "'desirable'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = cai::make_view<const std::uint8_t>(des_bad.data(), {3})}, 0.0)),
                            cai::invalid_argument, "'desirable'", "values 0 or 1", "2 at 1");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = dv, .weights = cv(w)}, 0.0)),
                            cai::invalid_argument, "'weights'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, ok, 0.0, {.logp = mv(g2)})), cai::shape_error, "'grads.logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, ok, 0.0, {.ref_logp = mv(g2)})), cai::shape_error, "'grads.ref_logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_loss(h, cai::kto{}, ok, 0.0, {.losses = mv(g2)})), cai::shape_error, "'grads.losses'");

  CAI_REQUIRE_THROWS_NAMING((cai::kto_kl_moments(h, cv(lp), cv(short_rf))), cai::shape_error, "cai::kto_kl_moments", "'ref_logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_kl_moments(h, cv(lp_nan), cv(rf))), cai::invalid_argument, "'logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::kto_kl_moments(h, cv(rf), cv(lp_nan))), cai::invalid_argument, "'ref_logp'");

  cai::moments st{};
  CHECK_NOTHROW(cai::bco_loss(h, cai::bco{}, ok, {.running = &st}));
  const cai::moments before = st;
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, ok, {})), cai::invalid_argument, "cai::bco_loss", "'running'");
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{.beta = 0.0}, ok, {.running = &st})), cai::invalid_argument, "'bco.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{.beta = nan}, ok, {.running = &st})), cai::invalid_argument, "'bco.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, UB{.logp = cv(lp), .ref_logp = cv(lp_nan), .desirable = dv}, {.running = &st})), cai::invalid_argument, "'ref_logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, UB{.logp = cv(lp), .ref_logp = cv(short_rf), .desirable = dv}, {.running = &st})), cai::shape_error, "'ref_logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = cai::make_view<const std::uint8_t>(des_bad.data(), {3})}, {.running = &st})),
                            cai::invalid_argument, "'desirable'");
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = dv, .weights = cv(w_bad)}, {.running = &st})),
                            cai::invalid_argument, "'weights'", "at 1");
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = dv, .weights = cv(short_rf)}, {.running = &st})),
                            cai::shape_error, "'weights'");
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, ok, {.running = &st}, {.losses = mv(g2)})), cai::shape_error, "'grads.losses'");
  // A rejected call leaves the running state as it was.
  CHECK(st.count == before.count);
  CHECK(st.mean == before.mean);
  cai::moments bad{.count = -1};
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, ok, {.running = &bad})), cai::invalid_argument, "'running'");
  cai::moments bad_mean{.count = 3, .mean = nan};
  CAI_REQUIRE_THROWS_NAMING((cai::bco_loss(h, cai::bco{}, ok, {.running = &bad_mean})), cai::invalid_argument, "'running'");
  CHECK_NOTHROW(cai::bco_loss(h, cai::bco{}, UB{.logp = cv(lp), .ref_logp = cv(rf), .desirable = dv, .weights = cv(w)}, {.running = &st}, {.logp = mv(g3)}));
}
