// Tests for cai/algorithms/orpo.hpp: the ORPO loss NLL - beta mean log s(L), its gradients w.r.t. the chosen and
// rejected mean log-probs and the NLL sums, and its metrics, checked three ways:
//   * PyTorch golden values (tests/golden/gen_unpaired_orpo_simpo.py: TRL's odds_ratio_loss with its stable
//     log1mexp, torch fp64 autograd from fp32 inputs), on cai's float and double paths;
//   * an independent long-double reference written from the odds themselves, L = log[(p/(1-p)) / (q/(1-q))], with
//     the chain rule dL/da = 1/(1 - e^a), dL/db = -1/(1 - e^b) (cai uses the rearranged A + e^(a-b) B form);
//   * central finite differences of the loss.
// The stability cases (a -> 0, a = b, a = b = 0, b = 0) are compared with their long-double limits.
// Tolerances. The loss and metrics are formed in double from the inputs: 1e-12 relative + 1e-14 absolute on both
// paths. Gradients and per-pair losses are stored in R: float 3e-7 relative + 1e-9 x the record's largest
// magnitude, double 1e-11 relative + 1e-13 x that magnitude. Finite differences: h = 1e-6, |analytic - FD| <=
// 1e-6 x (|FD| + max |gradient|).
#include <cai/algorithms/orpo.hpp>
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
using OB = cai::orpo_batch<double>;

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
  CHECK(std::fabs(got - want) <= abs + rel * std::fabs(want));
}

template <class R>
void check_array(const std::vector<R>& got, const std::vector<double>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  double scale = 0;
  for (const double w : want) scale = std::max(scale, std::fabs(w));
  const bool f = std::is_same_v<R, float>;
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK(std::isfinite(static_cast<double>(got[i])));
    check_close(static_cast<double>(got[i]), want[i], f ? 3e-7 : 1e-11, (f ? 1e-9 : 1e-13) * scale, what + "[" + std::to_string(i) + "]");
  }
}

std::vector<std::int64_t> counts_of(const std::vector<double>& v) {
  std::vector<std::int64_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<std::int64_t>(v[i]);
  return out;
}

/// Long-double reference of one pair: L from the odds, the pair term beta log(1 + e^-L) and its derivatives (not yet
/// divided by the batch size).
struct pair_ref {
  ld L, term, da, db;
};
pair_ref odds_reference(ld a, ld b, ld beta) {
  const ld p = std::exp(a), q = std::exp(b);
  const ld one_p = -std::expm1(a), one_q = -std::expm1(b);  // 1 - p, 1 - q without cancellation
  const ld L = std::log((p / one_p) / (q / one_q));
  const ld eL = std::exp(L);
  return {L, beta * std::log1p(1 / eL), -beta / ((1 + eL) * one_p), beta / ((1 + eL) * one_q)};
}

struct orpo_data {
  std::vector<double> a, b, sums;
  std::vector<std::int64_t> tokens;
};

orpo_data make_random(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(-4.0, -0.01), su(-3.0, -0.05);
  std::uniform_int_distribution<std::int64_t> k(5, 60);
  orpo_data d;
  for (std::size_t i = 0; i < n; ++i) {
    d.a.push_back(u(gen));
    d.b.push_back(u(gen));
    d.tokens.push_back(k(gen));
    d.sums.push_back(su(gen) * static_cast<double>(d.tokens.back()));
  }
  return d;
}

OB batch_of(const orpo_data& d) {
  return OB{.chosen = cv(d.a), .rejected = cv(d.b), .nll = {.logp_sums = cv(d.sums), .tokens = cv(d.tokens)}};
}

}  // namespace

TEMPLATE_TEST_CASE("orpo_loss matches TRL's ORPO loss, gradients and metrics (PyTorch golden)", "[preference][orpo]", float, double) {
  using R = TestType;
  const cai_test::golden g("unpaired_orpo_simpo.txt");
  const auto a = g.as<R>("orpo.a"), b = g.as<R>("orpo.b"), sums = g.as<R>("orpo.nll_sums");
  const auto tokens = counts_of(g["orpo.nll_tokens"]);
  const cai::orpo_batch<R> in{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(sums), .tokens = cv(tokens)}};
  for (const std::string c : {"b01", "b1"}) {
    const std::string p = "orpo." + c;
    INFO("case " << p);
    std::vector<R> ga(a.size(), R(7)), gb(a.size(), R(7)), gn(a.size(), R(7)), ls(a.size(), R(7));
    const auto res = cai::orpo_loss(cai::host{}, cai::orpo{.beta = g[p + ".beta"][0]}, in,
                                    {.chosen = mv(ga), .rejected = mv(gb), .nll_logp = mv(gn), .losses = mv(ls)});
    check_close(res.loss, g[p + ".loss"][0], 1e-12, 1e-14, "loss");
    check_array(ga, g[p + ".da"], "d/da");
    check_array(gb, g[p + ".db"], "d/db");
    check_array(gn, g[p + ".dnll"], "d/dnll");
    check_array(ls, g[p + ".losses"], "losses");
    check_close(res.nll, g[p + ".nll"][0], 1e-12, 1e-14, "nll");
    check_close(res.log_odds_ratio, g[p + ".log_odds_ratio"][0], 1e-12, 1e-14, "log_odds_ratio");
    check_close(res.log_odds_chosen, g[p + ".log_odds_chosen"][0], 1e-12, 1e-14, "log_odds_chosen");
    const auto& m = g[p + ".metrics"];
    CHECK(res.metrics.count == static_cast<std::int64_t>(a.size()));
    check_close(res.metrics.chosen, m[0], 1e-12, 1e-15, "rewards chosen");
    check_close(res.metrics.rejected, m[1], 1e-12, 1e-15, "rewards rejected");
    check_close(res.metrics.margin, m[2], 1e-12, 1e-15, "margin");
    CHECK(res.metrics.accuracy == m[3]);  // includes a tie, counted wrong
    const auto bare = cai::orpo_loss(cai::host{}, cai::orpo{.beta = g[p + ".beta"][0]}, in);
    CHECK(bare.loss == res.loss);
  }
}

TEST_CASE("orpo_loss agrees with a long-double reference from the odds and with finite differences", "[preference][orpo]") {
  const auto d = make_random(19, 81);
  for (const double beta : {0.1, 0.5, 2.0}) {
    INFO("beta " << beta);
    std::vector<double> ga(19), gb(19), gn(19), ls(19);
    const auto res = cai::orpo_loss(cai::host{}, cai::orpo{.beta = beta}, batch_of(d),
                                    {.chosen = mv(ga), .rejected = mv(gb), .nll_logp = mv(gn), .losses = mv(ls)});
    ld term = 0, sum_ls = 0, sum_L = 0, s = 0, k = 0, mc = 0, mr = 0, acc = 0;
    for (std::size_t i = 0; i < 19; ++i) {
      const auto r = odds_reference(d.a[i], d.b[i], beta);
      term += r.term;
      sum_ls += -std::log1p(std::exp(-r.L));
      sum_L += r.L;
      s += d.sums[i];
      k += static_cast<ld>(d.tokens[i]);
      mc += beta * static_cast<ld>(d.a[i]);
      mr += beta * static_cast<ld>(d.b[i]);
      acc += beta * d.a[i] > beta * d.b[i] ? 1 : 0;
      const std::string at = "[" + std::to_string(i) + "]";
      check_close(ls[i], static_cast<double>(r.term), 1e-12, 1e-16, "pair term" + at);
      check_close(ga[i], static_cast<double>(r.da / 19), 1e-11, 1e-16, "d/da" + at);
      check_close(gb[i], static_cast<double>(r.db / 19), 1e-11, 1e-16, "d/db" + at);
    }
    const ld nll = -s / k;
    check_close(res.nll, static_cast<double>(nll), 1e-13, 1e-15, "nll");
    for (std::size_t i = 0; i < 19; ++i) check_close(gn[i], static_cast<double>(-1 / k), 1e-14, 0, "d/dnll");
    check_close(res.loss, static_cast<double>(nll + term / 19), 1e-12, 1e-15, "loss");
    check_close(res.log_odds_ratio, static_cast<double>(sum_ls / 19), 1e-12, 1e-15, "log_odds_ratio");
    check_close(res.log_odds_chosen, static_cast<double>(sum_L / 19), 1e-12, 1e-15, "log_odds_chosen");
    check_close(res.metrics.chosen, static_cast<double>(mc / 19), 1e-13, 1e-16, "rewards chosen");
    check_close(res.metrics.rejected, static_cast<double>(mr / 19), 1e-13, 1e-16, "rewards rejected");
    check_close(res.metrics.margin, static_cast<double>((mc - mr) / 19), 1e-12, 1e-15, "margin");
    CHECK(res.metrics.accuracy == static_cast<double>(acc / 19));

    // Finite differences over every chosen, rejected and NLL input.
    double scale = 0;
    for (std::size_t i = 0; i < 19; ++i) scale = std::max({scale, std::fabs(ga[i]), std::fabs(gb[i]), std::fabs(gn[i])});
    const double h = 1e-6;
    for (int side = 0; side < 3; ++side)
      for (std::size_t i = 0; i < 19; ++i) {
        orpo_data e = d;
        auto& x = side == 0 ? e.a : side == 1 ? e.b : e.sums;
        const double x0 = x[i];
        x[i] = x0 + h;
        const double up = cai::orpo_loss(cai::host{}, cai::orpo{.beta = beta}, batch_of(e)).loss;
        x[i] = x0 - h;
        const double down = cai::orpo_loss(cai::host{}, cai::orpo{.beta = beta}, batch_of(e)).loss;
        const double fd = (up - down) / (2 * h), an = (side == 0 ? ga : side == 1 ? gb : gn)[i];
        INFO("side " << side << " index " << i << ": analytic " << an << ", FD " << fd);
        CHECK(std::fabs(an - fd) <= 1e-6 * (std::fabs(fd) + scale));
      }
  }
}

TEST_CASE("orpo_loss stays finite as the chosen completion becomes certain and at the documented limits", "[preference][orpo]") {
  const double beta = 0.25;
  const std::vector<double> sums{-10.0, -20.0, -5.0, -7.5, -1.0, -3.0};
  const std::vector<std::int64_t> tokens{10, 12, 3, 8, 1, 4};
  // Pairs: chosen -1e-12 and exactly 0 against ordinary rejected values; a tie; both certain.
  const std::vector<double> a{-1e-12, 0.0, -1e-12, 0.0, -0.7, 0.0};
  const std::vector<double> b{-0.3, -0.3, -2.0, -2.0, -0.7, 0.0};
  std::vector<double> ga(6), gb(6), gn(6), ls(6);
  const auto res = cai::orpo_loss(cai::host{}, cai::orpo{.beta = beta}, OB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(sums), .tokens = cv(tokens)}},
                                  {.chosen = mv(ga), .rejected = mv(gb), .nll_logp = mv(gn), .losses = mv(ls)});
  REQUIRE(std::isfinite(res.loss));
  CHECK(std::isfinite(res.log_odds_ratio));
  for (std::size_t i = 0; i < 6; ++i) {
    INFO("pair " << i);
    CHECK(std::isfinite(ga[i]));
    CHECK(std::isfinite(gb[i]));
    CHECK(std::isfinite(ls[i]));
  }
  // a = -1e-12: the long-double reference (expm1l keeps 1 - e^a exact to ~1e-19 relative).
  for (const std::size_t i : {std::size_t{0}, std::size_t{2}}) {
    const auto r = odds_reference(a[i], b[i], beta);
    check_close(ls[i], static_cast<double>(r.term), 1e-10, 1e-20, "pair term at a = -1e-12");
    check_close(ga[i], static_cast<double>(r.da / 6), 1e-10, 1e-20, "d/da at a = -1e-12");
    check_close(gb[i], static_cast<double>(r.db / 6), 1e-10, 1e-20, "d/db at a = -1e-12");
  }
  // a = 0: the limit a -> 0- of the long-double expressions: L -> +inf, the term -> 0, d/db -> 0 and
  // d/da -> -beta e^b / (1 - e^b) / n; and continuity with a = -1e-12.
  for (const std::size_t i : {std::size_t{1}, std::size_t{3}}) {
    const ld eb = std::exp(static_cast<ld>(b[i]));
    CHECK(ls[i] == 0.0);
    CHECK(gb[i] == 0.0);
    check_close(ga[i], static_cast<double>(-beta * eb / (1 - eb) / 6), 1e-12, 1e-20, "d/da at a = 0");
    check_close(ga[i], ga[i - 1], 1e-9, 0, "d/da continuous at a = 0");
  }
  // a == b: L = 0 exactly, term beta log 2, d/da = -d/db = -beta / (2 (1 - e^a)) / n.
  check_close(ls[4], beta * std::log(2.0), 1e-15, 0, "tie term");
  const ld one_p = -std::expm1(-0.7L);
  check_close(ga[4], static_cast<double>(-beta / (2 * one_p) / 6), 1e-13, 0, "tie d/da");
  check_close(gb[4], -ga[4], 1e-13, 0, "tie d/db");
  // a = b = 0: L = 0 (no limit exists; defined), term beta log 2, gradient exactly 0.
  check_close(ls[5], beta * std::log(2.0), 1e-15, 0, "certain pair term");
  CHECK(ga[5] == 0.0);
  CHECK(gb[5] == 0.0);
  // The mean L counts the ties as 0, and a = 0 rows as +inf: log_odds_chosen is +inf, the honest mean.
  CHECK(std::isinf(res.log_odds_chosen));
  CHECK(res.log_odds_chosen > 0);

  // Ties alone: L = 0 exactly for every pair, in float as in double.
  {
    const std::vector<float> t{-0.25f, -3.0f, -1e-7f, 0.0f}, s{-1.0f, -1.0f, -1.0f, -1.0f};
    const std::vector<std::int64_t> k{2, 2, 2, 2};
    std::vector<float> g1(4), g2(4);
    const auto r = cai::orpo_loss(cai::host{}, cai::orpo{.beta = 0.1}, cai::orpo_batch<float>{.chosen = cv(t), .rejected = cv(t), .nll = {.logp_sums = cv(s), .tokens = cv(k)}},
                                  {.chosen = mv(g1), .rejected = mv(g2)});
    CHECK(r.log_odds_chosen == 0.0);
    check_close(r.log_odds_ratio, -std::log(2.0), 1e-15, 0, "log s(0)");
    for (std::size_t i = 0; i < 4; ++i) CHECK(g1[i] == -g2[i]);
    CHECK(r.metrics.accuracy == 0.0);
  }

  // b = 0 with a < 0: L = -inf and an infinite loss (the honest value, documented); d/da stays finite, no NaN.
  {
    const std::vector<double> a1{-0.5, -1.0}, b1{0.0, -0.5}, s1{-1.0, -1.0};
    const std::vector<std::int64_t> k1{1, 1};
    std::vector<double> g1(2), g2(2), l1(2);
    const auto r = cai::orpo_loss(cai::host{}, cai::orpo{.beta = beta}, OB{.chosen = cv(a1), .rejected = cv(b1), .nll = {.logp_sums = cv(s1), .tokens = cv(k1)}},
                                  {.chosen = mv(g1), .rejected = mv(g2), .losses = mv(l1)});
    CHECK(std::isinf(r.loss));
    CHECK(r.loss > 0);
    CHECK(std::isinf(l1[0]));
    CHECK(std::isinf(r.log_odds_chosen));
    CHECK(r.log_odds_chosen < 0);
    check_close(g1[0], static_cast<double>(-beta / -std::expm1(-0.5L) / 2), 1e-13, 0, "d/da at b = 0");
    CHECK(!std::isnan(g2[0]));
    CHECK(std::isfinite(l1[1]));
  }

  // Very unlikely completions (a, b ~ -50): log(1 - e^x) ~ -e^x, L ~ a - b.
  {
    const std::vector<double> a1{-40.0, -60.0}, b1{-45.0, -30.0}, s1{-100.0, -100.0};
    const std::vector<std::int64_t> k1{3, 3};
    std::vector<double> g1(2), g2(2);
    const auto r = cai::orpo_loss(cai::host{}, cai::orpo{.beta = beta}, OB{.chosen = cv(a1), .rejected = cv(b1), .nll = {.logp_sums = cv(s1), .tokens = cv(k1)}},
                                  {.chosen = mv(g1), .rejected = mv(g2)});
    check_close(r.log_odds_chosen, static_cast<double>((odds_reference(-40, -45, beta).L + odds_reference(-60, -30, beta).L) / 2), 1e-14, 0, "L far from 0");
    for (std::size_t i = 0; i < 2; ++i) {
      const auto ref = odds_reference(a1[i], b1[i], beta);
      check_close(g1[i], static_cast<double>(ref.da / 2), 1e-12, 0, "d/da far from 0");
      check_close(g2[i], static_cast<double>(ref.db / 2), 1e-12, 0, "d/db far from 0");
    }
  }

  // No counted NLL tokens: the NLL term is 0 with gradient 0.
  {
    const std::vector<double> a1{-0.5}, b1{-1.5}, s1{0.0};
    const std::vector<std::int64_t> k1{0};
    std::vector<double> gn1(1, 9.0);
    const auto r = cai::orpo_loss(cai::host{}, cai::orpo{.beta = beta}, OB{.chosen = cv(a1), .rejected = cv(b1), .nll = {.logp_sums = cv(s1), .tokens = cv(k1)}},
                                  {.nll_logp = mv(gn1)});
    CHECK(r.nll == 0.0);
    CHECK(gn1[0] == 0.0);
    check_close(r.loss, static_cast<double>(odds_reference(-0.5, -1.5, beta).term), 1e-13, 0, "loss without NLL tokens");
  }
}

TEST_CASE("orpo_loss rejects bad input naming the argument", "[preference][orpo]") {
  const cai::host h;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> a{-0.5, -1.0, -2.0}, b{-1.5, -0.2, -2.5}, s{-3.0, -4.0, -5.0}, bad_nan{-1.0, nan, -1.0},
      pos{-1.0, -1.0, 1e-12}, short2{-1.0, -1.0}, s_pos{-3.0, 0.5, -1.0};
  const std::vector<std::int64_t> k{3, 4, 5}, k_neg{3, -1, 5}, k_short{3, 4};
  std::vector<double> g2(2);
  const OB ok{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s), .tokens = cv(k)}};
  const cai::nll_inputs<double> nll{.logp_sums = cv(s), .tokens = cv(k)};
  CHECK_NOTHROW(cai::orpo_loss(h, cai::orpo{}, ok));
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{.beta = 0.0}, ok)), cai::invalid_argument, "cai::orpo_loss", "'orpo.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{.beta = -1.0}, ok)), cai::invalid_argument, "'orpo.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{.beta = nan}, ok)), cai::invalid_argument, "'orpo.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(bad_nan), .rejected = cv(b), .nll = nll})), cai::invalid_argument, "'chosen'", "at 1");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(bad_nan), .nll = nll})), cai::invalid_argument, "'rejected'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(short2), .nll = nll})), cai::shape_error, "'rejected'", "(3)");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(pos), .rejected = cv(b), .nll = nll})), cai::invalid_argument, "'chosen'", "<= 0", "at 2");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(pos), .nll = nll})), cai::invalid_argument, "'rejected'", "<= 0");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(b)})), cai::invalid_argument, "'nll.logp_sums'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s)}})), cai::invalid_argument, "'nll.tokens'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s), .tokens = cv(k_neg)}})),
                            cai::invalid_argument, "'nll.tokens'", "-1 at 1");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s), .tokens = cv(k_short)}})),
                            cai::shape_error, "'nll.tokens'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(short2), .tokens = cv(k)}})),
                            cai::shape_error, "'nll.logp_sums'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(s_pos), .tokens = cv(k)}})),
                            cai::invalid_argument, "'nll.logp_sums'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, OB{.chosen = cv(a), .rejected = cv(b), .nll = {.logp_sums = cv(bad_nan), .tokens = cv(k)}})),
                            cai::invalid_argument, "'nll.logp_sums'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, ok, {.chosen = mv(g2)})), cai::shape_error, "'grads.chosen'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, ok, {.rejected = mv(g2)})), cai::shape_error, "'grads.rejected'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, ok, {.nll_logp = mv(g2)})), cai::shape_error, "'grads.nll_logp'");
  CAI_REQUIRE_THROWS_NAMING((cai::orpo_loss(h, cai::orpo{}, ok, {.losses = mv(g2)})), cai::shape_error, "'grads.losses'");
  // An empty batch needs no NLL and gives 0.
  CHECK(cai::orpo_loss(h, cai::orpo{}, OB{}).loss == 0.0);
}
