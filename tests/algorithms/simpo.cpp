// Tests for cai/algorithms/simpo.hpp: the reference-free pairwise objectives cpo::sigmoid (CPO, label smoothing),
// cpo::simpo (target margin gamma), cpo::hinge and cpo::ipo, with AlphaPO's reward transform and the NLL term,
// checked three ways:
//   * PyTorch golden values (tests/golden/gen_unpaired_orpo_simpo.py: TRL's CPOTrainer.cpo_loss, AlphaPO written as
//     TRL writes it, (1 - exp(l).pow(-alpha)) / alpha; torch fp64 autograd from fp32 inputs), on the float and
//     double paths;
//   * an independent long-double reference (-log s(x) as log1p(e^-x), the transform through powl(e^l, -alpha), the
//     derivatives by hand);
//   * central finite differences of the loss (away from the hinge's kink).
// Tolerances. The loss and metrics are formed in double: 1e-12 relative + 1e-14 absolute on both paths (1e-11 where
// AlphaPO's 1 - p^-alpha cancels in torch's form). Per-pair outputs are stored in R: float 3e-7 relative + 1e-9 x
// the record's largest magnitude, double 1e-11 relative + 1e-13 x that magnitude. Finite differences: h = 1e-6,
// |analytic - FD| <= 1e-6 x (|FD| + max |gradient|).
#include <cai/algorithms/simpo.hpp>
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
using CB = cai::cpo_batch<double>;

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

enum loss_type { sigmoid_t = 0, simpo_t = 1, hinge_t = 2, ipo_t = 3 };

/// Calls f with the cpo loss object of the given type.
template <class F>
cai::cpo_result with_loss(int type, double beta, double gamma, double eps, F&& f) {
  switch (type) {
    case sigmoid_t: return f(cai::cpo::sigmoid{.beta = beta, .label_smoothing = eps});
    case simpo_t: return f(cai::cpo::simpo{.beta = beta, .gamma = gamma, .label_smoothing = eps});
    case hinge_t: return f(cai::cpo::hinge{.beta = beta});
    default: return f(cai::cpo::ipo{.beta = beta});
  }
}

struct cpo_data {
  std::vector<double> lc, lr, sums;
  std::vector<std::int64_t> tokens;
};

/// Long-double reference.
struct cpo_ref {
  ld loss = 0, nll = 0, dnll = 0, mc = 0, mr = 0, acc = 0;
  std::vector<ld> losses, dlc, dlr;
  std::vector<bool> near_kink;
};

cpo_ref cpo_reference(int type, ld beta, ld gamma, ld eps, ld alpha, ld coef, const cpo_data& d) {
  cpo_ref r;
  const std::size_t n = d.lc.size();
  const auto transform = [&](ld l, ld& R, ld& dR) {
    if (alpha == 0) {
      R = l;
      dR = 1;
    } else {
      const ld p_pow = std::pow(std::exp(l), -alpha);  // p^-alpha
      R = (1 - p_pow) / alpha;
      dR = p_pow;
    }
  };
  for (std::size_t i = 0; i < n; ++i) {
    ld Rc, dc, Rr, dr;
    transform(d.lc[i], Rc, dc);
    transform(d.lr[i], Rr, dr);
    const ld z = Rc - Rr;
    ld l = 0, g = 0;  // loss and d loss / dz
    bool kink = false;
    if (type == sigmoid_t || type == simpo_t) {
      const ld x = beta * z - (type == simpo_t ? gamma : 0);
      const auto softplus = [](ld v) { return v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v)); };  // log(1 + e^v)
      l = (1 - eps) * softplus(-x) + (eps > 0 ? eps * softplus(x) : 0);
      g = beta * (-(1 - eps) / (1 + std::exp(x)) + eps / (1 + std::exp(-x)));
    } else if (type == hinge_t) {
      const ld m = 1 - beta * z;
      l = std::max<ld>(m, 0);
      g = m > 0 ? -beta : 0;
      kink = std::fabs(m) < 1e-4L;
    } else {
      const ld t = z - 1 / (2 * beta);
      l = t * t;
      g = 2 * t;
    }
    r.losses.push_back(l);
    r.dlc.push_back(g * dc / static_cast<ld>(n));
    r.dlr.push_back(-g * dr / static_cast<ld>(n));
    r.near_kink.push_back(kink);
    r.loss += l;
    r.mc += beta * Rc;
    r.mr += beta * Rr;
    r.acc += static_cast<double>(beta) * static_cast<double>(Rc) > static_cast<double>(beta) * static_cast<double>(Rr) ? 1 : 0;
  }
  r.loss /= static_cast<ld>(n);
  r.mc /= static_cast<ld>(n);
  r.mr /= static_cast<ld>(n);
  r.acc /= static_cast<ld>(n);
  if (coef > 0 && !d.sums.empty()) {
    ld s = 0, k = 0;
    for (std::size_t i = 0; i < n; ++i) {
      s += d.sums[i];
      k += static_cast<ld>(d.tokens[i]);
    }
    r.nll = -s / k;
    r.dnll = -coef / k;
    r.loss += coef * r.nll;
  }
  return r;
}

cpo_data make_random(std::size_t n, bool means, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(means ? -3.0 : -40.0, means ? -0.05 : -2.0);
  std::uniform_int_distribution<std::int64_t> k(3, 40);
  cpo_data d;
  for (std::size_t i = 0; i < n; ++i) {
    d.lc.push_back(u(gen));
    d.lr.push_back(u(gen));
    d.tokens.push_back(k(gen));
    d.sums.push_back(means ? d.lc.back() * static_cast<double>(d.tokens.back()) : d.lc.back());
  }
  d.lr[3] = d.lc[3];  // a tie
  return d;
}

CB batch_of(const cpo_data& d, bool with_nll) {
  CB b{.chosen = cv(d.lc), .rejected = cv(d.lr)};
  if (with_nll) b.nll = {.logp_sums = cv(d.sums), .tokens = cv(d.tokens)};
  return b;
}

}  // namespace

TEMPLATE_TEST_CASE("cpo_loss matches TRL's CPO, SimPO, hinge, IPO and AlphaPO losses, gradients and metrics (PyTorch golden)",
                   "[preference][simpo]", float, double) {
  using R = TestType;
  const cai_test::golden g("unpaired_orpo_simpo.txt");
  for (const std::string c : {"sigmoid", "sigmoid_ls", "hinge", "hinge_alpha", "simpo", "simpo_ls", "ipo", "ipo_alpha", "alphapo",
                              "alphapo_neg", "alphapo_sum"}) {
    const std::string p = "cpo." + c;
    INFO("case " << p);
    const std::string set = g[p + ".set"][0] == 0.0 ? "cpo.sum" : "cpo.mean";
    const auto lc = g.as<R>(set + ".lc"), lr = g.as<R>(set + ".lr"), sums = g.as<R>(set + ".nll_sums");
    std::vector<std::int64_t> tokens;
    for (const double t : g[set + ".nll_tokens"]) tokens.push_back(static_cast<std::int64_t>(t));
    const double coef = g[p + ".nll_coef"][0], alpha = g[p + ".alpha"][0];
    cai::cpo_batch<R> in{.chosen = cv(lc), .rejected = cv(lr)};
    if (coef > 0) in.nll = {.logp_sums = cv(sums), .tokens = cv(tokens)};
    std::vector<R> gc(lc.size(), R(7)), gr(lc.size(), R(7)), gn(lc.size(), R(7)), ls(lc.size(), R(7));
    const cai::cpo_options opt{.alpha = alpha, .nll_coef = coef};
    const auto res = with_loss(static_cast<int>(g[p + ".type"][0]), g[p + ".beta"][0], g[p + ".gamma"][0], g[p + ".eps"][0], [&](const auto& spec) {
      return cai::cpo_loss(cai::host{}, spec, in, {.chosen = mv(gc), .rejected = mv(gr), .nll_logp = coef > 0 ? mv(gn) : cai::tensor_view<R, 1>{}, .losses = mv(ls)}, opt);
    });
    const double lt = alpha != 0.0 ? 1e-11 : 1e-12;
    check_close(res.loss, g[p + ".loss"][0], lt, 1e-14, "loss");
    check_array(gc, g[p + ".dlc"], "d/dchosen");
    check_array(gr, g[p + ".dlr"], "d/drejected");
    if (coef > 0) check_array(gn, g[p + ".dnll"], "d/dnll");
    check_array(ls, g[p + ".losses"], "losses");
    check_close(res.nll, g[p + ".nll"][0], 1e-12, 1e-15, "nll");
    const auto& m = g[p + ".metrics"];
    CHECK(res.metrics.count == static_cast<std::int64_t>(lc.size()));
    check_close(res.metrics.chosen, m[0], lt, 1e-14, "rewards chosen");
    check_close(res.metrics.rejected, m[1], lt, 1e-14, "rewards rejected");
    check_close(res.metrics.margin, m[2], lt, 1e-14, "margin");
    CHECK(res.metrics.accuracy == m[3]);
  }
}

TEST_CASE("cpo_loss agrees with a long-double reference and finite differences for every loss, alpha and NLL weight",
          "[preference][simpo]") {
  for (const bool means : {false, true}) {
    const auto d = make_random(15, means, means ? 91 : 92);
    for (const int type : {sigmoid_t, simpo_t, hinge_t, ipo_t})
      for (const double alpha : {0.0, 0.25, -0.5})
        for (const double coef : {0.0, 1.0, 0.3}) {
          const double beta = type == simpo_t ? 2.5 : type == ipo_t ? 0.5 : means ? 1.0 : 0.1;
          const double gamma = type == simpo_t ? 1.375 : 0.0;
          const double eps = (type == sigmoid_t || type == simpo_t) && coef == 1.0 ? 0.15 : 0.0;
          INFO("means " << means << " type " << type << " alpha " << alpha << " nll_coef " << coef << " beta " << beta << " eps " << eps);
          const bool with_nll = coef > 0;
          std::vector<double> gc(15), gr(15), gn(15, 9.0), ls(15);
          const cai::cpo_options opt{.alpha = alpha, .nll_coef = coef};
          const auto run = [&](const cpo_data& x, const cai::cpo_grads<double>& out) {
            return with_loss(type, beta, gamma, eps, [&](const auto& spec) { return cai::cpo_loss(cai::host{}, spec, batch_of(x, with_nll), out, opt); });
          };
          const auto res = run(d, {.chosen = mv(gc), .rejected = mv(gr), .nll_logp = mv(gn), .losses = mv(ls)});
          const auto ref = cpo_reference(type, beta, gamma, eps, alpha, coef, d);
          check_close(res.loss, static_cast<double>(ref.loss), 1e-12, 1e-15, "loss");
          check_close(res.nll, static_cast<double>(ref.nll), 1e-13, 1e-16, "nll");
          check_close(res.metrics.chosen, static_cast<double>(ref.mc), 1e-12, 1e-15, "rewards chosen");
          check_close(res.metrics.rejected, static_cast<double>(ref.mr), 1e-12, 1e-15, "rewards rejected");
          check_close(res.metrics.margin, static_cast<double>(ref.mc - ref.mr), 1e-12, 1e-14, "margin");
          CHECK(res.metrics.accuracy == static_cast<double>(ref.acc));
          double scale = 0;
          for (std::size_t i = 0; i < 15; ++i) {
            const std::string at = "[" + std::to_string(i) + "]";
            check_close(ls[i], static_cast<double>(ref.losses[i]), 1e-11, 1e-15, "losses" + at);
            check_close(gc[i], static_cast<double>(ref.dlc[i]), 1e-11, 1e-16, "d/dchosen" + at);
            check_close(gr[i], static_cast<double>(ref.dlr[i]), 1e-11, 1e-16, "d/drejected" + at);
            check_close(gn[i], static_cast<double>(ref.dnll), 1e-14, 0, "d/dnll" + at);  // 0 when nll_coef = 0
            scale = std::max({scale, std::fabs(gc[i]), std::fabs(gr[i]), std::fabs(gn[i])});
          }
          // Finite differences (hinge: away from the kink).
          const double h = 1e-6;
          for (int side = 0; side < (with_nll ? 3 : 2); ++side)
            for (std::size_t i = 0; i < 15; ++i) {
              if (ref.near_kink[i] && side < 2) continue;
              cpo_data e = d;
              auto& x = side == 0 ? e.lc : side == 1 ? e.lr : e.sums;
              const double x0 = x[i];
              x[i] = x0 + h;
              const double up = run(e, {}).loss;
              x[i] = x0 - h;
              const double down = run(e, {}).loss;
              const double fd = (up - down) / (2 * h), an = (side == 0 ? gc : side == 1 ? gr : gn)[i];
              INFO("side " << side << " index " << i << ": analytic " << an << ", FD " << fd);
              CHECK(std::fabs(an - fd) <= 1e-6 * (std::fabs(fd) + scale));
            }
        }
  }
}

TEST_CASE("cpo_loss special points: the hinge's kink, IPO's minimum, SimPO at gamma 0, AlphaPO as alpha -> 0", "[preference][simpo]") {
  // Hinge exactly at the kink: beta z = 1 -> loss 0 and gradient 0 (relu'(0) = 0); either side of it.
  {
    const std::vector<double> lc{-1.0, -1.0, -1.0}, lr{-3.0, -3.5, -2.5};  // z = 2, 2.5, 1.5
    std::vector<double> gc(3), gr(3), ls(3);
    const auto res = cai::cpo_loss(cai::host{}, cai::cpo::hinge{.beta = 0.5}, CB{.chosen = cv(lc), .rejected = cv(lr)},
                                   {.chosen = mv(gc), .rejected = mv(gr), .losses = mv(ls)}, {.nll_coef = 0.0});
    CHECK(ls[0] == 0.0);
    CHECK(gc[0] == 0.0);
    CHECK(gr[0] == 0.0);
    CHECK(ls[1] == 0.0);  // beyond the margin
    CHECK(gc[1] == 0.0);
    check_close(ls[2], 0.25, 1e-15, 0, "inside the margin");
    check_close(gc[2], -0.5 / 3, 1e-15, 0, "hinge d/dchosen");
    check_close(gr[2], 0.5 / 3, 1e-15, 0, "hinge d/drejected");
    check_close(res.loss, 0.25 / 3, 1e-15, 0, "hinge loss");
  }
  // IPO at its minimum z = 1 / (2 beta): loss 0, gradient 0.
  {
    const std::vector<double> lc{-0.5}, lr{-1.5};  // z = 1 = 1 / (2 * 0.5)
    std::vector<double> gc(1), gr(1);
    const auto res = cai::cpo_loss(cai::host{}, cai::cpo::ipo{.beta = 0.5}, CB{.chosen = cv(lc), .rejected = cv(lr)}, {.chosen = mv(gc), .rejected = mv(gr)},
                                   {.nll_coef = 0.0});
    CHECK(res.loss == 0.0);
    CHECK(gc[0] == 0.0);
    CHECK(gr[0] == 0.0);
  }
  const auto d = make_random(11, true, 101);
  // SimPO with gamma = 0 is the sigmoid loss; with eps = 0 it is -log s(beta z - gamma).
  {
    const auto a = cai::cpo_loss(cai::host{}, cai::cpo::simpo{.beta = 2.0, .gamma = 0.0, .label_smoothing = 0.1}, batch_of(d, false), {}, {.nll_coef = 0.0});
    const auto b = cai::cpo_loss(cai::host{}, cai::cpo::sigmoid{.beta = 2.0, .label_smoothing = 0.1}, batch_of(d, false), {}, {.nll_coef = 0.0});
    check_close(a.loss, b.loss, 1e-15, 0, "simpo gamma 0 = sigmoid");
    std::vector<double> ls(11);
    (void)cai::cpo_loss(cai::host{}, cai::cpo::simpo{.beta = 2.5, .gamma = 1.375}, batch_of(d, false), {.losses = mv(ls)}, {.nll_coef = 0.0});
    for (std::size_t i = 0; i < 11; ++i) {
      const ld x = 2.5L * (static_cast<ld>(d.lc[i]) - static_cast<ld>(d.lr[i])) - 1.375L;
      check_close(ls[i], static_cast<double>(-std::log(1 / (1 + std::exp(-x)))), 1e-13, 1e-16, "-log s(beta z - gamma)");
    }
  }
  // AlphaPO is continuous at alpha = 0: R(l) = (1 - e^(-alpha l)) / alpha -> l.
  {
    std::vector<double> g0(11), g1(11);
    const auto a = cai::cpo_loss(cai::host{}, cai::cpo::sigmoid{.beta = 1.0}, batch_of(d, false), {.chosen = mv(g0)}, {.alpha = 0.0, .nll_coef = 0.0});
    const auto b = cai::cpo_loss(cai::host{}, cai::cpo::sigmoid{.beta = 1.0}, batch_of(d, false), {.chosen = mv(g1)}, {.alpha = 1e-9, .nll_coef = 0.0});
    check_close(b.loss, a.loss, 1e-8, 0, "alpha 1e-9");
    check_close(b.metrics.margin, a.metrics.margin, 1e-8, 0, "alpha 1e-9 margin");
    for (std::size_t i = 0; i < 11; ++i) check_close(g1[i], g0[i], 1e-8, 0, "alpha 1e-9 gradient");
  }
  // Metrics use beta R(l): with alpha = 0.25, chosen = mean beta (1 - e^(-l/4)) * 4.
  {
    const auto r = cai::cpo_loss(cai::host{}, cai::cpo::ipo{.beta = 0.2}, batch_of(d, false), {}, {.alpha = 0.25, .nll_coef = 0.0});
    ld mc = 0;
    for (const double l : d.lc) mc += 0.2L * (1 - std::exp(-0.25L * static_cast<ld>(l))) / 0.25L;
    check_close(r.metrics.chosen, static_cast<double>(mc / 11), 1e-13, 0, "beta R(l)");
  }
}

TEST_CASE("cpo_loss's NLL term: required when nll_coef > 0, a constant 0 when nll_coef = 0", "[preference][simpo]") {
  const auto d = make_random(7, false, 111);
  const cai::cpo::sigmoid spec{.beta = 0.1};
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(cai::host{}, spec, batch_of(d, false))), cai::invalid_argument, "cai::cpo_loss", "'nll.logp_sums'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(cai::host{}, spec, batch_of(d, false), {}, {.nll_coef = 0.5})), cai::invalid_argument, "'nll.logp_sums'");
  // nll_coef = 0: the NLL inputs may be absent; given, they change nothing (TRL: NLL is a constant 0).
  std::vector<double> gn(7, 9.0);
  const auto without = cai::cpo_loss(cai::host{}, spec, batch_of(d, false), {}, {.nll_coef = 0.0});
  const auto with = cai::cpo_loss(cai::host{}, spec, batch_of(d, true), {.nll_logp = mv(gn)}, {.nll_coef = 0.0});
  CHECK(with.loss == without.loss);
  CHECK(with.nll == 0.0);
  for (const double g : gn) CHECK(g == 0.0);
  // nll_coef = 1 (TRL cpo_alpha default): the preference term plus the chosen tokens' mean NLL.
  const auto one = cai::cpo_loss(cai::host{}, spec, batch_of(d, true));
  ld s = 0, k = 0;
  for (std::size_t i = 0; i < 7; ++i) {
    s += d.sums[i];
    k += static_cast<ld>(d.tokens[i]);
  }
  check_close(one.nll, static_cast<double>(-s / k), 1e-14, 0, "nll");
  check_close(one.loss, without.loss + static_cast<double>(-s / k), 1e-13, 0, "loss = preference + nll");
}

TEST_CASE("cpo_loss rejects bad input naming the argument", "[preference][simpo]") {
  const cai::host h;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> a{-5.0, -1.0, -2.0}, b{-1.5, -3.2, -2.5}, s{-3.0, -4.0, -5.0}, bad_nan{-1.0, nan, -1.0}, short2{-1.0, -1.0};
  const std::vector<std::int64_t> k{3, 4, 5}, k_neg{3, 4, -2};
  std::vector<double> g2(2);
  const CB ok{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s), .tokens = cv(k)}};
  const cai::nll_inputs<double> nll{.logp_sums = cv(s), .tokens = cv(k)};
  CHECK_NOTHROW(cai::cpo_loss(h, cai::cpo::sigmoid{}, ok));
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{.beta = 0.0}, ok)), cai::invalid_argument, "'sigmoid.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::simpo{.beta = -2.0}, ok)), cai::invalid_argument, "'simpo.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::hinge{.beta = nan}, ok)), cai::invalid_argument, "'hinge.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::ipo{.beta = 0.0}, ok)), cai::invalid_argument, "'ipo.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{.label_smoothing = 0.6}, ok)), cai::invalid_argument, "'sigmoid.label_smoothing'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::simpo{.label_smoothing = -0.1}, ok)), cai::invalid_argument, "'simpo.label_smoothing'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{.label_smoothing = nan}, ok)), cai::invalid_argument, "'sigmoid.label_smoothing'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::simpo{.gamma = nan}, ok)), cai::invalid_argument, "'simpo.gamma'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, ok, {}, {.alpha = nan})), cai::invalid_argument, "'alpha'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, ok, {}, {.nll_coef = -1.0})), cai::invalid_argument, "'nll_coef'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, ok, {}, {.nll_coef = nan})), cai::invalid_argument, "'nll_coef'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, CB{.chosen = cv(bad_nan), .rejected = cv(b), .nll = nll})), cai::invalid_argument, "'chosen'", "at 1");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, CB{.chosen = cv(a), .rejected = cv(bad_nan), .nll = nll})), cai::invalid_argument, "'rejected'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, CB{.chosen = cv(a), .rejected = cv(short2), .nll = nll})), cai::shape_error, "'rejected'", "(3)");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, CB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s), .tokens = cv(k_neg)}})),
                            cai::invalid_argument, "'nll.tokens'", "-2 at 2");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, CB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s)}})), cai::invalid_argument, "'nll.tokens'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, CB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(short2), .tokens = cv(k)}})),
                            cai::shape_error, "'nll.logp_sums'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, CB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(bad_nan), .tokens = cv(k)}})),
                            cai::invalid_argument, "'nll.logp_sums'");
  // Checked even when nll_coef = 0 makes them unused.
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, CB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s), .tokens = cv(k_neg)}}, {}, {.nll_coef = 0.0})),
                            cai::invalid_argument, "'nll.tokens'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, ok, {.chosen = mv(g2)})), cai::shape_error, "'grads.chosen'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, ok, {.rejected = mv(g2)})), cai::shape_error, "'grads.rejected'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, ok, {.nll_logp = mv(g2)})), cai::shape_error, "'grads.nll_logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::cpo_loss(h, cai::cpo::sigmoid{}, ok, {.losses = mv(g2)})), cai::shape_error, "'grads.losses'");
  CHECK(cai::cpo_loss(h, cai::cpo::ipo{}, CB{}).loss == 0.0);  // an empty batch needs no NLL
}
