// Tests for cai/algorithms/kl.hpp: the sample-based estimators (k1, k2, k3, abs, straight-through, run-time `any`)
// against long-double references (k3 in its log-ratio form r - 1 - log r), their gradients against central finite
// differences away from the clamp kinks, the clamps at and beyond their bounds (torch.clamp's convention), the
// exact KL over the vocabulary against an explicit softmax in long double with its gradients checked against the
// analytic formula and finite differences, layouts, backends, PyTorch golden values, placements and bad input.
#include <cai/algorithms/kl.hpp>
#include <cai/core/host.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "../golden/golden.hpp"
#include "../support.hpp"
#include "kl_reference.hpp"
#include "sequence_batch.hpp"

namespace {

using cai_test::make_seq_batch;
using cai_test::seq_batch;
using namespace cai_test::klref;
namespace kl = cai::kl;

// Log ratios that matter: 0, small, moderate, around and beyond every clamp used below, and +-50.
ld draw_log_ratio(std::mt19937_64& gen) {
  static const double special[] = {0.0, 1e-4, -1e-4, 0.5, -0.5, 2.0, -2.0, 2.5, -3.0, 4.0, -4.0, 11.5, -2.7,
                                   19.5, -19.5, 20.0, -20.0, 25.0, -25.0, 50.0, -50.0};
  const double u = std::uniform_real_distribution<double>(0, 1)(gen);
  if (u < 0.15) return special[std::uniform_int_distribution<std::size_t>(0, std::size(special) - 1)(gen)];
  if (u < 0.65) return std::uniform_real_distribution<double>(-3, 3)(gen);
  return std::uniform_real_distribution<double>(-30, 30)(gen);
}

template <class R, class E>
void check_estimator_tokens(const E& est, std::uint64_t seed) {
  const ref_est ref = ref_of(est);
  const seq_batch s = make_seq_batch(23, 11, seed);
  const auto n = static_cast<std::size_t>(s.B * s.T);
  std::mt19937_64 gen(seed);
  std::vector<R> logp(n), refl(n);
  for (std::size_t i = 0; i < n; ++i) {
    refl[i] = static_cast<R>(std::uniform_real_distribution<double>(-12, -0.1)(gen));
    logp[i] = static_cast<R>(static_cast<ld>(refl[i]) + draw_log_ratio(gen));
    if (!s.mask[i] && i % 2) logp[i] = std::numeric_limits<R>::quiet_NaN();  // never read at masked positions
  }
  std::vector<R> kv(n, R(7)), kg(n, R(7));
  const auto mask = cai::make_view(s.mask.data(), {s.B, s.T});
  const cai::moments st = cai::kl_tokens(cai::host{}, est, cai::make_view(logp.data(), {s.B, s.T}),
                                         cai::make_view(refl.data(), {s.B, s.T}), mask,
                                         {.kl = cai::make_view(kv.data(), {s.B, s.T}), .dkl = cai::make_view(kg.data(), {s.B, s.T})});
  constexpr bool is_float = std::is_same_v<R, float>;
  const auto u = cai_test::normal_floats(n, 1.0f, seed + 1), w = cai_test::normal_floats(n, 1.0f, seed + 2);
  ld analytic = 0, fd_plus = 0, fd_minus = 0, scale = 0, s1 = 0, s2 = 0;
  const ld eps = 1e-6L;
  std::int64_t counted = 0, fd_checked = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!s.mask[i]) {
      CHECK(kv[i] == R(0));
      CHECK(kg[i] == R(0));
      continue;
    }
    ++counted;
    // The reference is evaluated at the log ratio the library forms in the storage type R.
    const ld d = static_cast<ld>(static_cast<R>(logp[i] - refl[i]));
    const ld v = ref_value(ref.value, d);
    s1 += v;
    s2 += v * v;
    const ld tol_v = is_float ? 1e-6L * (1 + std::fabs(v)) : 1e-14L * (1 + std::fabs(v)) + 1e-15L * std::fabs(d);
    INFO("token " << i << " d " << static_cast<double>(d) << " value " << kv[i] << " ref " << static_cast<double>(v));
    CHECK(std::fabs(static_cast<ld>(kv[i]) - v) <= tol_v);
    if (!smooth_near(ref.grad, d, 1e-4L)) continue;
    const ld g = ref_grad_fd(ref.grad, d);
    INFO("grad " << kg[i] << " finite difference " << static_cast<double>(g));
    CHECK(std::fabs(static_cast<ld>(kg[i]) - g) <= (is_float ? 2e-6L : 1e-8L) * (1 + std::fabs(g)));
    ++fd_checked;
    // Directional derivative of sum_i w_i E_grad(d_i) along u, over the smooth counted tokens.
    analytic += static_cast<ld>(w[i]) * u[i] * static_cast<ld>(kg[i]);
    fd_plus += w[i] * ref_value(ref.grad, d + eps * u[i]);
    fd_minus += w[i] * ref_value(ref.grad, d - eps * u[i]);
    scale += std::fabs(static_cast<ld>(w[i]) * u[i] * g);
  }
  REQUIRE(fd_checked > counted / 2);
  const ld fd = (fd_plus - fd_minus) / (2 * eps);
  INFO("directional: analytic " << static_cast<double>(analytic) << " fd " << static_cast<double>(fd));
  CHECK(std::fabs(analytic - fd) <= (is_float ? 1e-5L : 1e-7L) * (scale + 1));
  // The returned moments summarise the estimate over the counted tokens.
  REQUIRE(st.count == counted);
  const ld mean = s1 / counted, m2 = s2 - s1 * s1 / counted;
  CHECK(std::fabs(static_cast<ld>(st.mean) - mean) <= (is_float ? 1e-6L : 1e-12L) * (1 + std::fabs(mean)));
  CHECK(std::fabs(static_cast<ld>(st.m2) - m2) <= (is_float ? 1e-5L : 1e-10L) * (1 + m2));
}

template <class E>
void check_estimator_both(const E& est, std::uint64_t seed) {
  check_estimator_tokens<double>(est, seed);
  check_estimator_tokens<float>(est, seed + 100);
}

}  // namespace

TEST_CASE("k1, k2, k3 and abs match long-double references, gradients match finite differences", "[kl]") {
  SECTION("k1") { check_estimator_both(kl::k1{}, 1); }
  SECTION("k2") { check_estimator_both(kl::k2{}, 2); }
  SECTION("k3 with verl's low_var_kl clamps (log ratio 20, estimate 10)") { check_estimator_both(kl::k3{}, 3); }
  SECTION("k3 unclamped within log ratio 5") { check_estimator_both(kl::k3{.log_ratio_clamp = 5, .kl_clamp = kl::no_clamp}, 4); }
  SECTION("abs") { check_estimator_both(kl::abs{}, 5); }
  SECTION("k1 with both clamps") { check_estimator_both(kl::k1{.log_ratio_clamp = 3, .kl_clamp = 2}, 6); }
  SECTION("k2 with both clamps") { check_estimator_both(kl::k2{.log_ratio_clamp = 2.5, .kl_clamp = 1.5}, 7); }
  SECTION("abs with a log ratio clamp") { check_estimator_both(kl::abs{.log_ratio_clamp = 1.5}, 8); }
}

TEST_CASE("straight-through pairs and kl::any take the value of one estimator and the gradient of another", "[kl]") {
  SECTION("value of k3, gradient of k2 (verl's k3+)") { check_estimator_both(kl::straight_through<kl::k3, kl::k2>{}, 11); }
  SECTION("value of k1, gradient of clamped k3") {
    check_estimator_both(kl::straight_through<kl::k1, kl::k3>{{}, {.log_ratio_clamp = 2, .kl_clamp = 1}}, 12);
  }
  SECTION("any: k3 with clamps") {
    check_estimator_both(kl::any{.value_kind = kl::any::kind::k3, .grad_kind = kl::any::kind::k3, .log_ratio_clamp = 20, .kl_clamp = 10}, 13);
  }
  SECTION("any: value abs, gradient k2 with its own clamps") {
    check_estimator_both(kl::any{.value_kind = kl::any::kind::abs, .grad_kind = kl::any::kind::k2, .log_ratio_clamp = 4,
                                 .kl_clamp = 3, .grad_log_ratio_clamp = 2, .grad_kl_clamp = 1},
                         14);
  }
  SECTION("any: k1") { check_estimator_both(kl::any{}, 15); }
}

TEST_CASE("kl::any gives the same bits as the typed estimator it names", "[kl]") {
  using K = kl::any::kind;
  std::vector<double> ds;
  for (double d = -60; d <= 60; d += 0.37) ds.push_back(d);
  for (double d : {0.0, 20.0, -20.0, 10.0, -10.0, 2.0, -2.0, 50.0, -50.0}) ds.push_back(d);
  auto same = [&](const auto& typed, const kl::any& any) {
    for (double d : ds) {
      const auto a = kl::eval(typed, d), b = kl::eval(any, d);
      INFO("d " << d << " typed " << a.value << "/" << a.grad << " any " << b.value << "/" << b.grad);
      CHECK(std::memcmp(&a, &b, sizeof a) == 0);
      const auto af = kl::eval(typed, static_cast<float>(d)), bf = kl::eval(any, static_cast<float>(d));
      CHECK(std::memcmp(&af, &bf, sizeof af) == 0);
    }
  };
  same(kl::k3{}, kl::any{.value_kind = K::k3, .grad_kind = K::k3, .log_ratio_clamp = 20, .kl_clamp = 10});
  same(kl::k1{}, kl::any{});
  same(kl::k2{.kl_clamp = 3}, kl::any{.value_kind = K::k2, .grad_kind = K::k2, .kl_clamp = 3});
  same(kl::abs{.log_ratio_clamp = 7}, kl::any{.value_kind = K::abs, .grad_kind = K::abs, .log_ratio_clamp = 7});
  same(kl::straight_through<kl::k3, kl::k2>{},
       kl::any{.value_kind = K::k3, .grad_kind = K::k2, .log_ratio_clamp = 20, .kl_clamp = 10});
  same(kl::straight_through<kl::k2, kl::k3>{{.log_ratio_clamp = 5}, {}},
       kl::any{.value_kind = K::k2, .grad_kind = K::k3, .log_ratio_clamp = 5, .grad_log_ratio_clamp = 20, .grad_kl_clamp = 10});
}

namespace {
template <class R, class E>
void expect_point(const E& e, double d, double value_in, double grad_in, double tol = 0.0) {
  const kl::point<R> p = kl::eval(e, static_cast<R>(d));
  const auto value = static_cast<double>(static_cast<R>(value_in)), grad = static_cast<double>(static_cast<R>(grad_in));
  INFO("d " << d << " value " << p.value << " (want " << value << ") grad " << p.grad << " (want " << grad << ")");
  CHECK(std::fabs(static_cast<double>(p.value) - value) <= tol * (1 + std::fabs(value)));
  CHECK(std::fabs(static_cast<double>(p.grad) - grad) <= tol * (1 + std::fabs(grad)));
}

template <class R>
void check_clamp_points() {
  const double tol = std::is_same_v<R, float> ? 1e-6 : 1e-15;
  // Estimate clamp [-2, 2] on k1: the gradient passes at exactly +-2 and is 0 beyond.
  const kl::k1 k1c{.kl_clamp = 2};
  expect_point<R>(k1c, 2.0, 2.0, 1.0);
  expect_point<R>(k1c, -2.0, -2.0, 1.0);
  expect_point<R>(k1c, 2.5, 2.0, 0.0);
  expect_point<R>(k1c, -2.5, -2.0, 0.0);
  expect_point<R>(k1c, std::nextafter(static_cast<R>(2), static_cast<R>(3)), 2.0, 0.0);
  expect_point<R>(k1c, std::nextafter(static_cast<R>(2), static_cast<R>(1)), static_cast<double>(std::nextafter(static_cast<R>(2), static_cast<R>(1))), 1.0);
  // Log-ratio clamp [-1, 1] on k2: at the bound the gradient is d itself, beyond it 0 and the value stays 1/2.
  const kl::k2 k2c{.log_ratio_clamp = 1};
  expect_point<R>(k2c, 1.0, 0.5, 1.0);
  expect_point<R>(k2c, -1.0, 0.5, -1.0);
  expect_point<R>(k2c, 1.5, 0.5, 0.0);
  expect_point<R>(k2c, -3.0, 0.5, 0.0);
  // Estimate clamp reached exactly: k2 = 8 at d = +-4.
  const kl::k2 k2e{.kl_clamp = 8};
  expect_point<R>(k2e, 4.0, 8.0, 4.0);
  expect_point<R>(k2e, -4.0, 8.0, -4.0);
  expect_point<R>(k2e, 4.5, 8.0, 0.0);
  // k3 with verl's clamps: beyond either bound the estimate is clamped at 10 and the gradient is 0.
  for (double d : {-50.0, -25.0, -20.0, -3.0, 11.5, 20.0, 25.0, 50.0}) expect_point<R>(kl::k3{}, d, 10.0, 0.0);
  expect_point<R>(kl::k3{}, 1.0, std::exp(-1.0) - 1 + 1.0, 1 - std::exp(-1.0), tol);
  // k3 with only the log-ratio clamp: the gradient passes at exactly +-20.
  const kl::k3 k3r{.log_ratio_clamp = 20, .kl_clamp = kl::no_clamp};
  expect_point<R>(k3r, 20.0, std::exp(-20.0) + 19.0, 1 - std::exp(-20.0), tol);
  expect_point<R>(k3r, 25.0, std::exp(-20.0) + 19.0, 0.0, tol);
  expect_point<R>(k3r, -20.0, std::exp(20.0) - 21.0, 1 - std::exp(20.0), tol);
  expect_point<R>(k3r, -25.0, std::exp(20.0) - 21.0, 0.0, tol);
  // Unclamped estimators at extreme log ratios.
  expect_point<R>(kl::k1{}, 50.0, 50.0, 1.0);
  expect_point<R>(kl::k1{}, -50.0, -50.0, 1.0);
  expect_point<R>(kl::k2{}, 50.0, 1250.0, 50.0);
  expect_point<R>(kl::k2{}, -50.0, 1250.0, -50.0);
  expect_point<R>(kl::abs{}, -50.0, 50.0, -1.0);
  expect_point<R>(kl::abs{}, 50.0, 50.0, 1.0);
  // |d| at 0: torch.abs' gradient sign(0) = 0.
  expect_point<R>(kl::abs{}, 0.0, 0.0, 0.0);
  expect_point<R>(kl::abs{}, 1e-30, 1e-30, 1.0);
  const kl::abs absc{.kl_clamp = 3};
  expect_point<R>(absc, 3.0, 3.0, 1.0);
  expect_point<R>(absc, -3.0, 3.0, -1.0);
  expect_point<R>(absc, -3.5, 3.0, 0.0);
  // k3 at d = 0 is exactly 0 with gradient 0, and tiny d keeps full relative accuracy (expm1).
  expect_point<R>(kl::k3{}, 0.0, 0.0, 0.0);
  if constexpr (std::is_same_v<R, double>) {
    const kl::point<R> tiny = kl::eval(kl::k3{}, 1e-4);
    CHECK(std::fabs(tiny.value - (5e-9 - 1e-12 / 6 + 1e-16 / 24)) <= 1e-9 * 5e-9);
  }
}
}  // namespace

TEST_CASE("clamps follow torch.clamp: the gradient passes on the closed interval and is 0 outside it", "[kl]") {
  SECTION("double") { check_clamp_points<double>(); }
  SECTION("float") { check_clamp_points<float>(); }
  SECTION("through kl_tokens, with log ratios of +-50") {
    const std::vector<double> ref(8, -1.0);
    const std::vector<double> d{50, -50, 20, -20, 2, -2, 0, 1};
    std::vector<double> logp(8), v(8), g(8);
    for (std::size_t i = 0; i < 8; ++i) logp[i] = ref[i] + d[i];
    const auto st = cai::kl_tokens(cai::host{}, kl::k3{}, cai::make_view(logp.data(), {1, 8}), cai::make_view(ref.data(), {1, 8}),
                                   cai::no_mask, {.kl = cai::make_view(v.data(), {1, 8}), .dkl = cai::make_view(g.data(), {1, 8})});
    for (std::size_t i = 0; i < 4; ++i) {  // +-50 and +-20: the estimate is clamped at 10, no gradient
      CHECK(v[i] == 10.0);
      CHECK(g[i] == 0.0);
    }
    CHECK(v[4] == std::expm1(-2.0) + 2.0);
    CHECK(g[4] == -std::expm1(-2.0));
    CHECK(v[5] == std::expm1(2.0) - 2.0);
    CHECK(g[5] == -std::expm1(2.0));
    CHECK(v[6] == 0.0);
    CHECK(g[6] == 0.0);
    CHECK(st.count == 8);
  }
}

TEST_CASE("kl_tokens: packed equals padded, outputs are optional, and host equals threaded_host(3) bitwise", "[kl]") {
  const seq_batch s = make_seq_batch(70, 19, 31);
  const auto n = static_cast<std::size_t>(s.B * s.T);
  const auto refv = cai_test::uniform_floats(n, -8.0f, -0.5f, 32);
  auto logp = cai_test::normal_floats(n, 1.5f, 33);
  for (std::size_t i = 0; i < n; ++i) logp[i] += refv[i];
  const auto est = kl::straight_through<kl::k3, kl::k2>{};
  const auto lp = cai::make_view(logp.data(), {s.B, s.T});
  const auto rf = cai::make_view(refv.data(), {s.B, s.T});
  const auto mask = cai::make_view(s.mask.data(), {s.B, s.T});
  std::vector<float> v0(n), g0(n), v1(n), g1(n);
  const auto m0 = cai::kl_tokens(cai::host{}, est, lp, rf, mask, {.kl = cai::make_view(v0.data(), {s.B, s.T}), .dkl = cai::make_view(g0.data(), {s.B, s.T})});
  const auto m1 = cai::kl_tokens(cai::threaded_host(3), est, lp, rf, mask,
                                 {.kl = cai::make_view(v1.data(), {s.B, s.T}), .dkl = cai::make_view(g1.data(), {s.B, s.T})});
  CHECK(std::memcmp(v0.data(), v1.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(g0.data(), g1.data(), n * sizeof(float)) == 0);
  CHECK((m0.count == m1.count && std::memcmp(&m0.mean, &m1.mean, 8) == 0 && std::memcmp(&m0.m2, &m1.m2, 8) == 0));

  // Only one output, or none (the moments alone): the same numbers.
  std::vector<float> v2(n);
  const auto m2 = cai::kl_tokens(cai::host{}, est, lp, rf, mask, {.kl = cai::make_view(v2.data(), {s.B, s.T})});
  const auto m3 = cai::kl_tokens(cai::host{}, est, lp, rf, mask, cai::kl_outputs<float>{});
  CHECK(v2 == v0);
  CHECK((m2.count == m0.count && m2.mean == m0.mean && m2.m2 == m0.m2));
  CHECK((m3.count == m0.count && m3.mean == m0.mean && m3.m2 == m0.m2));

  // The packed layout: the same sequences back to back with cu_seqlens.
  const auto plp = s.pack(logp), prf = s.pack(refv);
  const std::int64_t N = s.N();
  std::vector<float> pv(static_cast<std::size_t>(N)), pg(static_cast<std::size_t>(N));
  const auto mp = cai::kl_tokens(cai::threaded_host(3), est, cai::packed(cai::make_view(plp.data(), {N})),
                                 cai::packed(cai::make_view(prf.data(), {N})), cai::packed(cai::make_view(s.pmask.data(), {N})),
                                 {.kl = cai::packed(cai::make_view(pv.data(), {N})), .dkl = cai::packed(cai::make_view(pg.data(), {N}))},
                                 {.cu_seqlens = s.cu_view()});
  CHECK(pv == s.pack(v0));
  CHECK(pg == s.pack(g0));
  CHECK((mp.count == m0.count && mp.mean == m0.mean && mp.m2 == m0.m2));
}

// ----- exact KL over the vocabulary ------------------------------------------------------------------------------
namespace {

struct ref_full {
  ld kl;
  std::vector<ld> p, q;  // softmax(z), softmax(y)
};

// Explicit softmax (max-shifted, normalised by the sum) in long double; KL = sum_j p_j (log p_j - log q_j).
ref_full reference_full_kl(const double* z, const double* y, std::int64_t V) {
  ref_full r{0, std::vector<ld>(static_cast<std::size_t>(V)), std::vector<ld>(static_cast<std::size_t>(V))};
  auto softmax = [&](const double* x, std::vector<ld>& out) {
    ld m = -std::numeric_limits<ld>::infinity();
    for (std::int64_t j = 0; j < V; ++j) m = std::max(m, static_cast<ld>(x[j]));
    ld sum = 0;
    for (std::int64_t j = 0; j < V; ++j) sum += out[static_cast<std::size_t>(j)] = std::exp(static_cast<ld>(x[j]) - m);
    for (auto& v : out) v /= sum;
  };
  softmax(z, r.p);
  softmax(y, r.q);
  for (std::size_t j = 0; j < r.p.size(); ++j)
    if (r.p[j] > 0) r.kl += r.p[j] * (std::log(r.p[j]) - std::log(r.q[j]));
  return r;
}

template <class T>
std::vector<T> to_storage(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = cai::from_float<T>(v[i]);
  return out;
}
template <class T>
std::vector<double> widened(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(cai::to_float(v[i]));
  return out;
}
double absmax(const double* x, std::int64_t n) {
  double m = 0;
  for (std::int64_t i = 0; i < n; ++i)
    if (std::isfinite(x[i])) m = std::max(m, std::fabs(x[i]));
  return m;
}
// fp32 log-sum-exps: errors of order ulp(|logit| + |lse|) in each log-probability.
double kl_tol(ld kl, double zmax) { return 2e-6 + 1e-5 * static_cast<double>(kl) + 5e-7 * zmax; }

template <class T>
void check_full_kl_rows(std::int64_t N, std::int64_t V, float scale, std::uint64_t seed) {
  auto zf = cai_test::normal_floats(static_cast<std::size_t>(N * V), scale, seed);
  auto yf = cai_test::normal_floats(static_cast<std::size_t>(N * V), scale, seed + 1);
  const float ninf = -std::numeric_limits<float>::infinity();
  if (V > 3) {
    for (std::int64_t j = 0; j < V; j += 5) zf[static_cast<std::size_t>(j)] = ninf;  // row 0: p_j = 0 entries
    zf[static_cast<std::size_t>(V + 1)] = yf[static_cast<std::size_t>(V + 1)] = ninf;  // row 1: p_j = q_j = 0
  }
  const auto z = to_storage<T>(zf), y = to_storage<T>(yf);
  const auto zd = widened(z), yd = widened(y);
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(N), 1);
  if (N > 2) mask[2] = 0;
  std::vector<float> klv(static_cast<std::size_t>(N), 9.0f);
  const auto st = cai::full_kl(cai::host{}, cai::make_view(z.data(), {N, V}), cai::make_view(y.data(), {N, V}),
                               cai::make_view(mask.data(), {N}), cai::make_view(klv.data(), {N}));
  std::int64_t counted = 0;
  ld sum = 0;
  for (std::int64_t i = 0; i < N; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    if (!mask[ui]) {
      CHECK(klv[ui] == 0.0f);
      continue;
    }
    const auto r = reference_full_kl(zd.data() + i * V, yd.data() + i * V, V);
    const double zmax = std::max(absmax(zd.data() + i * V, V), absmax(yd.data() + i * V, V));
    INFO("V " << V << " row " << i << " kl " << klv[ui] << " ref " << static_cast<double>(r.kl));
    CHECK(std::fabs(static_cast<ld>(klv[ui]) - r.kl) <= kl_tol(r.kl, zmax));
    ++counted;
    sum += klv[ui];
  }
  CHECK(st.count == counted);
  CHECK(std::fabs(static_cast<ld>(st.mean) - sum / counted) <= 1e-12L * (1 + std::fabs(sum / counted)));
}

}  // namespace

TEST_CASE("full_kl matches an explicit softmax in long double from V = 1 to 152064", "[kl]") {
  SECTION("fp32 V=152064") { check_full_kl_rows<float>(3, 152064, 3.0f, 152064); }
  for (std::int64_t V : {1, 2, 7, 1000, 32000}) {
    SECTION("fp32 V=" + std::to_string(V)) { check_full_kl_rows<float>(5, V, 2.0f, static_cast<std::uint64_t>(V)); }
    SECTION("bf16 V=" + std::to_string(V)) { check_full_kl_rows<cai::bfloat16>(5, V, 3.0f, static_cast<std::uint64_t>(V) + 7); }
    SECTION("fp64 storage V=" + std::to_string(V)) { check_full_kl_rows<double>(4, V, 1.0f, static_cast<std::uint64_t>(V) + 9); }
  }
  SECTION("identical distributions give 0, and V = 1 always 0") {
    const auto z = cai_test::normal_floats(3 * 50, 4.0f, 5);
    std::vector<float> k(3);
    cai::full_kl(cai::host{}, cai::make_view(z.data(), {3, 50}), cai::make_view(z.data(), {3, 50}), cai::no_mask, cai::make_view(k.data(), {3}));
    for (float v : k) CHECK(std::fabs(v) <= 1e-6f);
  }
  SECTION("a NaN, +inf or all -inf row at a counted position is rejected naming the tensor and the row") {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    auto z = cai_test::normal_floats(3 * 8, 1.0f, 8), y = cai_test::normal_floats(3 * 8, 1.0f, 9);
    std::vector<float> k(3);
    const auto run = [&](const std::vector<std::uint8_t>* m) {
      if (m) return cai::full_kl(cai::host{}, cai::make_view(z.data(), {3, 8}), cai::make_view(y.data(), {3, 8}), cai::make_view(m->data(), {3}), cai::make_view(k.data(), {3}));
      return cai::full_kl(cai::host{}, cai::make_view(z.data(), {3, 8}), cai::make_view(y.data(), {3, 8}), cai::no_mask, cai::make_view(k.data(), {3}));
    };
    z[1 * 8 + 3] = nan;
    CAI_REQUIRE_THROWS_NAMING((run(nullptr)), cai::invalid_argument, "cai::full_kl", "'logits'", "row 1");
    const std::vector<std::uint8_t> skip1{1, 0, 1};
    CHECK(run(&skip1).count == 2);  // the masked row is never read
    z[1 * 8 + 3] = 0.0f;
    y[2 * 8 + 5] = inf;
    CAI_REQUIRE_THROWS_NAMING((run(nullptr)), cai::invalid_argument, "'ref_logits'", "row 2");
    y[2 * 8 + 5] = 0.0f;
    for (int j = 0; j < 8; ++j) z[j] = -inf;
    CAI_REQUIRE_THROWS_NAMING((run(nullptr)), cai::invalid_argument, "'logits'", "row 0");
  }
  SECTION("logits up to +-1e4") {
    auto z = cai_test::uniform_floats(4 * 300, -1e4f, 1e4f, 6), y = cai_test::uniform_floats(4 * 300, -1e4f, 1e4f, 7);
    std::vector<float> k(4);
    cai::full_kl(cai::host{}, cai::make_view(z.data(), {4, 300}), cai::make_view(y.data(), {4, 300}), cai::no_mask, cai::make_view(k.data(), {4}));
    const std::vector<double> zd(z.begin(), z.end()), yd(y.begin(), y.end());
    for (std::int64_t i = 0; i < 4; ++i) {
      const auto r = reference_full_kl(zd.data() + i * 300, yd.data() + i * 300, 300);
      CHECK(std::fabs(static_cast<ld>(k[static_cast<std::size_t>(i)]) - r.kl) <= kl_tol(r.kl, 2e4));
    }
  }
}

TEST_CASE("full_kl on the causal (B,T,V) layout compares the logits of position t-1 at position t and zeroes position 0", "[kl]") {
  const std::int64_t B = 3, T = 6, V = 40;
  const auto z = cai_test::normal_floats(B * T * V, 2.0f, 41), y = cai_test::normal_floats(B * T * V, 2.0f, 42);
  std::vector<std::uint8_t> mask(B * T, 1);
  mask[1 * T + 3] = 0;
  for (std::int64_t t = 0; t < T; ++t) mask[static_cast<std::size_t>(2 * T + t)] = t < 4 ? 1 : 0;
  std::vector<float> k(B * T, 9.0f);
  const auto st = cai::full_kl(cai::host{}, cai::make_view(z.data(), {B, T, V}), cai::make_view(y.data(), {B, T, V}),
                               cai::make_view(mask.data(), {B, T}), cai::make_view(k.data(), {B, T}));
  const std::vector<double> zd(z.begin(), z.end()), yd(y.begin(), y.end());
  std::int64_t counted = 0;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t) {
      const auto i = static_cast<std::size_t>(b * T + t);
      if (t == 0 || !mask[i]) {
        CHECK(k[i] == 0.0f);
        continue;
      }
      ++counted;
      const auto r = reference_full_kl(zd.data() + (b * T + t - 1) * V, yd.data() + (b * T + t - 1) * V, V);
      CHECK(std::fabs(static_cast<ld>(k[i]) - r.kl) <= kl_tol(r.kl, 10.0));
    }
  CHECK(st.count == counted);
}

namespace {

// L = sum_i g_i KL_i over counted rows, in long double.
ld reference_objective(const std::vector<double>& z, const std::vector<double>& y, std::int64_t N, std::int64_t V,
                       const std::vector<float>& g, const std::vector<std::uint8_t>& mask) {
  ld L = 0;
  for (std::int64_t i = 0; i < N; ++i)
    if (mask[static_cast<std::size_t>(i)])
      L += g[static_cast<std::size_t>(i)] * reference_full_kl(z.data() + i * V, y.data() + i * V, V).kl;
  return L;
}

void check_full_kl_backward(std::int64_t N, std::int64_t V, float scale, std::uint64_t seed) {
  const auto zf = cai_test::normal_floats(static_cast<std::size_t>(N * V), scale, seed);
  const auto yf = cai_test::normal_floats(static_cast<std::size_t>(N * V), scale, seed + 1);
  auto g = cai_test::normal_floats(static_cast<std::size_t>(N), 1.0f, seed + 2);
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(N), 1);
  if (N > 3) {
    mask[1] = 0;
    g[3] = 0.0f;  // a zero upstream gradient
  }
  std::vector<float> dz(static_cast<std::size_t>(N * V), 9.0f), dy(static_cast<std::size_t>(N * V), 9.0f);
  cai::full_kl_backward(cai::host{}, cai::make_view(zf.data(), {N, V}), cai::make_view(yf.data(), {N, V}),
                        cai::make_view(mask.data(), {N}), cai::make_view(g.data(), {N}), cai::make_view(dz.data(), {N, V}),
                        cai::make_view(dy.data(), {N, V}));
  const std::vector<double> zd(zf.begin(), zf.end()), yd(yf.begin(), yf.end());
  // 1. Element-wise against dKL/dz_j = p_j (log p_j - log q_j - KL) and dKL/dy_j = q_j - p_j.
  for (std::int64_t i = 0; i < N; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    const auto r = reference_full_kl(zd.data() + i * V, yd.data() + i * V, V);
    const double zmax = std::max(absmax(zd.data() + i * V, V), absmax(yd.data() + i * V, V));
    for (std::int64_t j = 0; j < V; ++j) {
      const auto uj = static_cast<std::size_t>(j), k = static_cast<std::size_t>(i * V + j);
      if (!mask[ui] || g[ui] == 0.0f) {
        CHECK(dz[k] == 0.0f);
        CHECK(dy[k] == 0.0f);
        continue;
      }
      const ld p = r.p[uj], q = r.q[uj];
      const ld wz = g[ui] * p * (std::log(p) - std::log(q) - r.kl), wy = g[ui] * (q - p);
      const ld tol_z = std::fabs(g[ui]) * p * (4e-6L + 1e-6L * zmax) + 1e-5L * std::fabs(wz) + 1e-10L;
      const ld tol_y = std::fabs(g[ui]) * (p + q) * (2e-6L + 5e-7L * zmax) + 1e-10L;
      INFO("row " << i << " j " << j << " dz " << dz[k] << " want " << static_cast<double>(wz) << " dy " << dy[k]
                  << " want " << static_cast<double>(wy));
      CHECK(std::fabs(static_cast<ld>(dz[k]) - wz) <= tol_z);
      CHECK(std::fabs(static_cast<ld>(dy[k]) - wy) <= tol_y);
    }
  }
  // 2. Central finite differences of the long-double objective along random directions, for each input.
  for (int which = 0; which < 2; ++which)
    for (int dir = 0; dir < 2; ++dir) {
      const auto u = cai_test::normal_floats(static_cast<std::size_t>(N * V), 1.0f, seed + 10 + static_cast<std::uint64_t>(2 * which + dir));
      const double eps = 1e-4;
      std::vector<double> p1 = which ? yd : zd, m1 = p1;
      const std::vector<float>& grad = which ? dy : dz;
      ld analytic = 0, unorm = 0;
      for (std::size_t k = 0; k < p1.size(); ++k) {
        p1[k] += eps * u[k];
        m1[k] -= eps * u[k];
        analytic += static_cast<ld>(grad[k]) * u[k];
        unorm += static_cast<ld>(u[k]) * u[k];
      }
      const ld fd = which ? (reference_objective(zd, p1, N, V, g, mask) - reference_objective(zd, m1, N, V, g, mask)) / (2 * eps)
                          : (reference_objective(p1, yd, N, V, g, mask) - reference_objective(m1, yd, N, V, g, mask)) / (2 * eps);
      INFO((which ? "dref_logits" : "dlogits") << " direction " << dir << " analytic " << static_cast<double>(analytic)
                                              << " fd " << static_cast<double>(fd));
      CHECK(std::fabs(analytic - fd) <= 1e-4L * (std::fabs(fd) + 1e-3L * std::sqrt(unorm)));
    }
}

}  // namespace

TEST_CASE("full_kl_backward matches the analytic gradients and finite differences for both logit tensors", "[kl]") {
  SECTION("V=2") { check_full_kl_backward(5, 2, 1.0f, 51); }
  SECTION("V=17") { check_full_kl_backward(6, 17, 2.0f, 52); }
  SECTION("V=1000") { check_full_kl_backward(5, 1000, 3.0f, 53); }
  SECTION("V=32000") { check_full_kl_backward(2, 32000, 2.0f, 54); }
}

TEST_CASE("the causal full_kl_backward zeroes masked positions and the last logits row", "[kl]") {
  const std::int64_t B = 2, T = 5, V = 23;
  const auto z = cai_test::normal_floats(B * T * V, 1.5f, 61), y = cai_test::normal_floats(B * T * V, 1.5f, 62);
  const auto g = cai_test::normal_floats(B * T, 1.0f, 63);
  std::vector<std::uint8_t> mask(B * T, 1);
  mask[1 * T + 2] = 0;
  std::vector<float> dz(B * T * V, 7.0f), dy(B * T * V, 7.0f);
  cai::full_kl_backward(cai::host{}, cai::make_view(z.data(), {B, T, V}), cai::make_view(y.data(), {B, T, V}),
                        cai::make_view(mask.data(), {B, T}), cai::make_view(g.data(), {B, T}), cai::make_view(dz.data(), {B, T, V}),
                        cai::make_view(dy.data(), {B, T, V}));
  const std::vector<double> zd(z.begin(), z.end()), yd(y.begin(), y.end());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t r = 0; r < T; ++r) {
      const bool zero = r == T - 1 || !mask[static_cast<std::size_t>(b * T + r + 1)];
      const auto ref = reference_full_kl(zd.data() + (b * T + r) * V, yd.data() + (b * T + r) * V, V);
      const float gg = zero ? 0.0f : g[static_cast<std::size_t>(b * T + r + 1)];
      for (std::int64_t j = 0; j < V; ++j) {
        const auto k = static_cast<std::size_t>((b * T + r) * V + j);
        const auto uj = static_cast<std::size_t>(j);
        if (zero) {
          CHECK(dz[k] == 0.0f);
          CHECK(dy[k] == 0.0f);
          continue;
        }
        const ld wz = gg * ref.p[uj] * (std::log(ref.p[uj]) - std::log(ref.q[uj]) - ref.kl), wy = gg * (ref.q[uj] - ref.p[uj]);
        CHECK(std::fabs(static_cast<ld>(dz[k]) - wz) <= 1e-6L + 1e-4L * std::fabs(wz));
        CHECK(std::fabs(static_cast<ld>(dy[k]) - wy) <= 1e-6L + 1e-4L * std::fabs(wy));
      }
    }
  // Only one of the two gradients requested.
  std::vector<float> dz2(B * T * V, 7.0f);
  cai::full_kl_backward(cai::host{}, cai::make_view(z.data(), {B, T, V}), cai::make_view(y.data(), {B, T, V}),
                        cai::make_view(mask.data(), {B, T}), cai::make_view(g.data(), {B, T}), cai::make_view(dz2.data(), {B, T, V}));
  CHECK(dz2 == dz);
}

TEST_CASE("full_kl and its backward give the same bits on host and threaded_host(3)", "[kl][dispatch]") {
  const std::int64_t N = 37, V = 3001;
  const auto z = cai_test::normal_floats(N * V, 2.0f, 71), y = cai_test::normal_floats(N * V, 2.0f, 72);
  const auto g = cai_test::normal_floats(N, 1.0f, 73);
  std::vector<std::uint8_t> mask(N, 1);
  mask[5] = 0;
  auto run = [&](const auto& backend, std::vector<float>& k, std::vector<float>& dz, std::vector<float>& dy) {
    k.assign(N, 0.0f);
    dz.assign(N * V, 0.0f);
    dy.assign(N * V, 0.0f);
    const auto m = cai::full_kl(backend, cai::make_view(z.data(), {N, V}), cai::make_view(y.data(), {N, V}),
                                cai::make_view(mask.data(), {N}), cai::make_view(k.data(), {N}));
    cai::full_kl_backward(backend, cai::make_view(z.data(), {N, V}), cai::make_view(y.data(), {N, V}), cai::make_view(mask.data(), {N}),
                          cai::make_view(g.data(), {N}), cai::make_view(dz.data(), {N, V}), cai::make_view(dy.data(), {N, V}));
    return m;
  };
  std::vector<float> k0, dz0, dy0, k1, dz1, dy1;
  const auto m0 = run(cai::host{}, k0, dz0, dy0);
  const auto m1 = run(cai::threaded_host(3), k1, dz1, dy1);
  CHECK(std::memcmp(k0.data(), k1.data(), k0.size() * 4) == 0);
  CHECK(std::memcmp(dz0.data(), dz1.data(), dz0.size() * 4) == 0);
  CHECK(std::memcmp(dy0.data(), dy1.data(), dy0.size() * 4) == 0);
  CHECK((m0.count == m1.count && std::memcmp(&m0.mean, &m1.mean, 8) == 0 && std::memcmp(&m0.m2, &m1.m2, 8) == 0));
}

// ----- PyTorch golden values (tests/golden/gen_kl_gae.py, fp32 autograd) -------------------------------------------
// Tolerance against torch's fp32: 1e-5 relative plus 1e-6 absolute for the estimators (torch computes in fp32 like
// cai's float path; the two differ only in exp/expm1 rounding), 2e-5 relative plus 2e-6 absolute for the exact KL
// and its gradients (different log-sum-exp and summation orders).
namespace {
bool near(double got, double want, double rel, double abs_tol) { return std::fabs(got - want) <= abs_tol + rel * std::fabs(want); }

template <class E>
void check_golden_estimator(const cai_test::golden& gold, const std::string& name, const E& est) {
  const auto logp = gold.as<float>("kl.logp"), ref = gold.as<float>("kl.ref_logp");
  const auto want_v = gold["kl." + name + ".value"], want_g = gold["kl." + name + ".grad"];
  const auto n = static_cast<std::int64_t>(logp.size());
  REQUIRE(want_v.size() == logp.size());
  std::vector<float> v(logp.size()), g(logp.size());
  cai::kl_tokens(cai::host{}, est, cai::make_view(logp.data(), {1, n}), cai::make_view(ref.data(), {1, n}), cai::no_mask,
                 {.kl = cai::make_view(v.data(), {1, n}), .dkl = cai::make_view(g.data(), {1, n})});
  for (std::size_t i = 0; i < logp.size(); ++i) {
    INFO(name << " token " << i << " d " << logp[i] - ref[i] << " value " << v[i] << " torch " << want_v[i] << " grad " << g[i]
              << " torch " << want_g[i]);
    CHECK(near(v[i], want_v[i], 1e-5, 1e-6));
    CHECK(near(g[i], want_g[i], 1e-5, 1e-6));
  }
}
}  // namespace

TEST_CASE("k1, k2, k3 (verl low_var_kl) and clamped variants match torch autograd golden values", "[kl]") {
  const cai_test::golden gold("kl_gae.txt");
  check_golden_estimator(gold, "k1", kl::k1{});
  check_golden_estimator(gold, "k2", kl::k2{});
  check_golden_estimator(gold, "k3", kl::k3{});
  check_golden_estimator(gold, "k1_clamp2", kl::k1{.kl_clamp = 2});
  check_golden_estimator(gold, "k2_ratio1", kl::k2{.log_ratio_clamp = 1});
}

TEST_CASE("full_kl and full_kl_backward match torch log_softmax autograd golden values", "[kl]") {
  const cai_test::golden gold("kl_gae.txt");
  const auto shape = gold["full_kl.shape"];
  const auto N = static_cast<std::int64_t>(shape[0]), V = static_cast<std::int64_t>(shape[1]);
  const auto z = gold.as<float>("full_kl.logits"), y = gold.as<float>("full_kl.ref_logits"), g = gold.as<float>("full_kl.g");
  const auto want_kl = gold["full_kl.kl"], want_dz = gold["full_kl.dlogits"], want_dy = gold["full_kl.dref_logits"];
  std::vector<float> k(static_cast<std::size_t>(N)), dz(z.size()), dy(y.size());
  cai::full_kl(cai::host{}, cai::make_view(z.data(), {N, V}), cai::make_view(y.data(), {N, V}), cai::no_mask, cai::make_view(k.data(), {N}));
  cai::full_kl_backward(cai::host{}, cai::make_view(z.data(), {N, V}), cai::make_view(y.data(), {N, V}), cai::no_mask,
                        cai::make_view(g.data(), {N}), cai::make_view(dz.data(), {N, V}), cai::make_view(dy.data(), {N, V}));
  for (std::size_t i = 0; i < k.size(); ++i) CHECK(near(k[i], want_kl[i], 2e-5, 2e-6));
  for (std::size_t i = 0; i < dz.size(); ++i) {
    INFO("entry " << i << " dz " << dz[i] << " torch " << want_dz[i] << " dy " << dy[i] << " torch " << want_dy[i]);
    CHECK(near(dz[i], want_dz[i], 2e-5, 2e-6));
    CHECK(near(dy[i], want_dy[i], 2e-5, 2e-6));
  }
}

TEST_CASE("placements route the KL to the rewards, the loss, both or neither", "[kl]") {
  int reward_calls = 0, loss_calls = 0;
  double beta_seen = -1, coef_seen = -1;
  auto on_reward = [&](const auto&, double beta) {
    ++reward_calls;
    beta_seen = beta;
  };
  auto on_loss = [&](const auto&, double coef) {
    ++loss_calls;
    coef_seen = coef;
  };
  auto visit = [&](const auto& p) {
    reward_calls = loss_calls = 0;
    beta_seen = coef_seen = -1;
    kl::visit_reward(p, on_reward);
    kl::visit_loss(p, on_loss);
  };
  visit(kl::none{});
  CHECK((reward_calls == 0 && loss_calls == 0));
  visit(kl::in_reward<kl::k1>{.beta = 0.1});
  CHECK((reward_calls == 1 && loss_calls == 0 && beta_seen == 0.1));
  visit(kl::in_loss<kl::k3>{.coef = 0.2});
  CHECK((reward_calls == 0 && loss_calls == 1 && coef_seen == 0.2));
  visit(kl::in_reward_and_loss<kl::k1, kl::k3>{.reward = {.beta = 0.3}, .loss = {.coef = 0.4}});
  CHECK((reward_calls == 1 && loss_calls == 1 && beta_seen == 0.3 && coef_seen == 0.4));
  visit(kl::any_placement{.reward = true, .beta = 0.5, .coef = 0.6});
  CHECK((reward_calls == 1 && loss_calls == 0 && beta_seen == 0.5));
  visit(kl::any_placement{.loss = true, .beta = 0.5, .coef = 0.6});
  CHECK((reward_calls == 0 && loss_calls == 1 && coef_seen == 0.6));
  visit(kl::any_placement{});
  CHECK((reward_calls == 0 && loss_calls == 0));
  // Defaults: TRL's kl_coef for rewards, verl's kl_loss_coef for the loss.
  CHECK(kl::in_reward<kl::k1>{}.beta == 0.05);
  CHECK(kl::in_loss<kl::k3>{}.coef == 0.001);
  CHECK(kl::k3{}.log_ratio_clamp == 20.0);
  CHECK(kl::k3{}.kl_clamp == 10.0);
  STATIC_REQUIRE(kl::placement<kl::none>);
  STATIC_REQUIRE(kl::placement<kl::in_reward_and_loss<kl::k2, kl::any>>);
  STATIC_REQUIRE(!kl::placement<kl::k1>);
  STATIC_REQUIRE(kl::estimator<kl::straight_through<kl::k3, kl::k2>>);
  STATIC_REQUIRE(!kl::estimator<kl::none>);
}

TEST_CASE("kl_tokens and full_kl reject bad input with exceptions naming the argument", "[kl]") {
  cai::host h;
  const std::int64_t B = 2, T = 4;
  std::vector<double> lp{-1, -2, -3, -4, -1.5, -2.5, -3.5, -4.5}, rf{-1.1, -2, -2.9, -4, -1, -2, -3, -4};
  std::vector<double> v(8), g(8);
  std::vector<std::uint8_t> m{1, 1, 1, 0, 0, 1, 1, 1};
  const auto lpv = cai::make_view(lp.data(), {B, T});
  const auto rfv = cai::make_view(rf.data(), {B, T});
  const auto mv = cai::make_view(m.data(), {B, T});
  const cai::kl_outputs<double> out{.kl = cai::make_view(v.data(), {B, T}), .dkl = cai::make_view(g.data(), {B, T})};
  REQUIRE(cai::kl_tokens(h, kl::k3{}, lpv, rfv, mv, out).count == 6);

  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{}, lpv, cai::make_view(rf.data(), {T, B}), mv, out), cai::shape_error,
                            "cai::kl_tokens", "'ref_logp'", "(2, 4)", "(4, 2)");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{}, lpv, rfv, cai::make_view(m.data(), {1, 8}), out), cai::shape_error, "'mask'");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{}, lpv, rfv, mv, {.kl = cai::make_view(v.data(), {B, T - 1})}), cai::shape_error, "'out.kl'");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{}, lpv, rfv, mv, {.dkl = cai::make_view(g.data(), {1, T})}), cai::shape_error, "'out.dkl'");
  m[2] = 3;
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{}, lpv, rfv, mv, out), cai::invalid_argument, "'mask'", "0 or 1", "3 at row 0, token 2");
  m[2] = 1;
  lp[1] = std::numeric_limits<double>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{}, lpv, rfv, mv, out), cai::invalid_argument, "'logp'", "finite", "row 0, token 1");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{}, lpv, rfv, cai::no_mask, out), cai::invalid_argument, "'logp'", "row 0, token 1");
  lp[1] = -2;
  lp[3] = std::numeric_limits<double>::quiet_NaN();  // masked: fine
  rf[4] = -std::numeric_limits<double>::infinity();  // masked: fine
  REQUIRE(cai::kl_tokens(h, kl::k3{}, lpv, rfv, mv, out).count == 6);
  CHECK(v[3] == 0.0);
  rf[6] = std::numeric_limits<double>::infinity();
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{}, lpv, rfv, mv, out), cai::invalid_argument, "'ref_logp'", "inf at row 1, token 2");
  rf[6] = -3;

  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k3{.log_ratio_clamp = -1}, lpv, rfv, mv, out), cai::invalid_argument,
                            "'estimator.log_ratio_clamp'", "> 0", "-1");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k1{.kl_clamp = -2}, lpv, rfv, mv, out), cai::invalid_argument, "'estimator.kl_clamp'");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k2{.kl_clamp = 0}, lpv, rfv, mv, out), cai::invalid_argument, "'estimator.kl_clamp'");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::abs{.log_ratio_clamp = std::numeric_limits<double>::quiet_NaN()}, lpv, rfv, mv, out),
                            cai::invalid_argument, "'estimator.log_ratio_clamp'");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::straight_through<kl::k3, kl::k2>{{}, {.kl_clamp = -1}}, lpv, rfv, mv, out),
                            cai::invalid_argument, "'estimator.kl_clamp'");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::any{.grad_log_ratio_clamp = -3}, lpv, rfv, mv, out), cai::invalid_argument,
                            "'estimator.grad_log_ratio_clamp'");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::any{.grad_kl_clamp = 0}, lpv, rfv, mv, out), cai::invalid_argument, "'estimator.grad_kl_clamp'");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::any{.kl_clamp = -0.5}, lpv, rfv, mv, out), cai::invalid_argument, "'estimator.kl_clamp'");

  // Packed layout: offsets must cover the (1, N) row.
  const std::vector<std::int64_t> cu_bad{0, 3, 9};
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k1{}, cai::make_view(lp.data(), {1, 8}), cai::make_view(rf.data(), {1, 8}), cai::no_mask,
                                           cai::kl_outputs<double>{}, {.cu_seqlens = cai::make_view(cu_bad.data(), {3})}),
                            cai::shape_error, "'cu_seqlens'", "last offset");
  CAI_REQUIRE_THROWS_NAMING(cai::kl_tokens(h, kl::k1{}, lpv, rfv, cai::no_mask, cai::kl_outputs<double>{},
                                           {.cu_seqlens = cai::make_view(cu_bad.data(), {3})}),
                            cai::shape_error, "'logp'", "(1, N)");

  // Exact KL.
  const std::int64_t N = 3, V = 5;
  const auto z = cai_test::normal_floats(N * V, 1.0f, 81), y = cai_test::normal_floats(N * V, 1.0f, 82);
  std::vector<float> k(N), dk(N, 1.0f), dz(N * V), dy(N * V);
  std::vector<std::uint8_t> mk(N, 1);
  const auto zv = cai::make_view(z.data(), {N, V});
  const auto yv = cai::make_view(y.data(), {N, V});
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl(h, zv, cai::make_view(y.data(), {N, V - 1}), cai::no_mask, cai::make_view(k.data(), {N})),
                            cai::shape_error, "cai::full_kl", "'ref_logits'");
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl(h, zv, yv, cai::make_view(mk.data(), {N - 1}), cai::make_view(k.data(), {N})), cai::shape_error, "'mask'");
  mk[1] = 2;
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl(h, zv, yv, cai::make_view(mk.data(), {N}), cai::make_view(k.data(), {N})), cai::invalid_argument,
                            "'mask'", "0 or 1");
  mk[1] = 1;
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl(h, zv, yv, cai::no_mask, cai::make_view(k.data(), {N - 1})), cai::shape_error, "'kl'");
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl(h, zv, yv, cai::no_mask, cai::tensor_view<float, 1>{}), cai::invalid_argument, "'kl'");
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl(h, cai::make_view(z.data(), {1, N, V}), cai::make_view(y.data(), {1, N, V}), cai::no_mask,
                                         cai::tensor_view<float, 2>{}),
                            cai::invalid_argument, "'kl'");
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl(h, cai::make_view(z.data(), {N * V, 0}), cai::make_view(y.data(), {N * V, 0}), cai::no_mask,
                                         cai::make_view(k.data(), {N * V})),
                            cai::shape_error, "'logits'", "vocabulary");
  const cai::tensor_view<const float, 2> strided(z.data(), {N, 2}, {V, 2});
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl(h, strided, strided, cai::no_mask, cai::make_view(k.data(), {N})), cai::layout_error, "'logits'");
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl_backward(h, zv, yv, cai::no_mask, cai::tensor_view<const float, 1>{}, cai::make_view(dz.data(), {N, V})),
                            cai::invalid_argument, "cai::full_kl_backward", "'dkl'");
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl_backward(h, zv, yv, cai::no_mask, cai::make_view(dk.data(), {N - 1}), cai::make_view(dz.data(), {N, V})),
                            cai::shape_error, "'dkl'");
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl_backward(h, zv, yv, cai::no_mask, cai::make_view(dk.data(), {N}), cai::make_view(dz.data(), {N, V - 1})),
                            cai::shape_error, "'dlogits'");
  CAI_REQUIRE_THROWS_NAMING(cai::full_kl_backward(h, zv, yv, cai::no_mask, cai::make_view(dk.data(), {N}), cai::make_view(dz.data(), {N, V}),
                                                  cai::make_view(dy.data(), {N - 1, V})),
                            cai::shape_error, "'dref_logits'");
  // An empty batch is not an error and writes nothing.
  REQUIRE(cai::full_kl(h, cai::make_view(z.data(), {0, V}), cai::make_view(y.data(), {0, V}), cai::no_mask, cai::tensor_view<float, 1>{}).count == 0);
}
