// Tests for cai/core/math.hpp at +-1e4, subnormals, +-inf and NaN, against long-double references.
#include <cai/core/math.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "../support.hpp"

namespace {
constexpr double inf = std::numeric_limits<double>::infinity();
long double ref_softplus(long double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
// For x < -ln 2 the series -sum_k e^{kx} / k converges fast and is independent of the implementation's formula.
long double ref_log1mexp(long double x) {
  if (x > -0.7L) return std::log(-std::expm1(x));
  long double sum = 0, term = 1;
  const long double e = std::exp(x);
  for (int k = 1; k < 200; ++k) {
    term *= e;
    sum -= term / k;
    if (term < 1e-40L) break;
  }
  return sum;
}
// Relative tolerance, with an absolute floor of `abs` for results in the subnormal range of the type under test.
bool close(double got, long double want, double rel, double abs = 1e-320) {
  if (std::isnan(static_cast<double>(want))) return std::isnan(got);
  if (std::isinf(static_cast<double>(want))) return got == static_cast<double>(want);
  const double err = std::fabs(got - static_cast<double>(want));
  return err <= abs || err <= rel * std::fabs(static_cast<double>(want));
}
constexpr double float_denorm = 1.401298464324817e-45;
}  // namespace

TEST_CASE("softplus, log_sigmoid and sigmoid are accurate and finite from -1e4 to 1e4 and at subnormals",
          "[core]") {
  std::vector<double> xs = {-1e4, -745.0, -100.0, -30.0, -1.0, -1e-300, -4.9e-324, 0.0, 4.9e-324, 1e-300, 1e-8,
                            0.5, 1.0, 30.0, 100.0, 745.0, 1e4};
  for (double x : xs) {
    INFO("x=" << x);
    CHECK(close(cai::softplus(x), ref_softplus(x), 1e-15));
    CHECK(close(cai::log_sigmoid(x), -ref_softplus(-static_cast<long double>(x)), 1e-15));
    const float xf = static_cast<float>(x);
    CHECK(close(cai::softplus(xf), ref_softplus(xf), 2e-7, float_denorm));
    CHECK(close(cai::log_sigmoid(xf), -ref_softplus(-static_cast<long double>(xf)), 2e-7, float_denorm));
    CHECK(std::isfinite(cai::log_sigmoid(x)));
    const double s = cai::sigmoid(x);
    CHECK((s >= 0.0 && s <= 1.0));
  }
  CHECK(cai::log_sigmoid(-1e4) == -1e4);
  CHECK(cai::softplus(1e4f) == 1e4f);
  CHECK(cai::softplus(inf) == inf);
  CHECK(cai::softplus(-inf) == 0.0);
  CHECK(cai::log_sigmoid(-inf) == -inf);
  CHECK(cai::log_sigmoid(inf) == 0.0);
  CHECK(cai::sigmoid(-inf) == 0.0);
  CHECK(cai::sigmoid(inf) == 1.0);
  CHECK(std::isnan(cai::softplus(std::nan(""))));
  CHECK(std::isnan(cai::log_sigmoid(std::nanf(""))));
  CHECK(std::isnan(cai::sigmoid(std::nan(""))));
}

TEST_CASE("log1mexp is accurate on both sides of -ln 2 and defined at the ends of its domain", "[core]") {
  for (double x : {-1e4, -50.0, -1.0, -0.6931471805599453, -0.69, -0.1, -1e-5, -1e-20, -4.9e-324}) {
    INFO("x=" << x);
    CHECK(close(cai::log1mexp(x), ref_log1mexp(x), 1e-14));
    CHECK(close(cai::log1mexp(static_cast<float>(x)), ref_log1mexp(static_cast<float>(x)), 4e-7, float_denorm));
  }
  CHECK(cai::log1mexp(0.0) == -inf);
  CHECK(cai::log1mexp(-inf) == 0.0);
  CHECK(std::isnan(cai::log1mexp(0.5)));
  CHECK(std::isnan(cai::log1mexp(std::nan(""))));
}

TEST_CASE("online log-sum-exp and soft-max states merge associatively and match a two-pass fp64 reference",
          "[core]") {
  std::mt19937 gen(3);
  std::normal_distribution<double> d(0.0, 1e3);
  std::vector<double> xs(1000);
  for (auto& x : xs) x = d(gen);
  xs[10] = -inf;
  double m = -inf;
  for (double x : xs) m = std::max(m, x);
  long double s = 0, ex = 0;
  for (double x : xs) s += std::exp(static_cast<long double>(x - m));
  for (double x : xs)
    if (std::isfinite(x)) ex += std::exp(static_cast<long double>(x - m)) * x;
  const long double lse = m + std::log(s);
  const long double H = lse - ex / s;

  // Sequential pushes.
  cai::lse_state<double> a;
  cai::softmax_state<double> sa;
  for (double x : xs) {
    a.push(x);
    sa.push(x);
  }
  CHECK(close(a.value(), lse, 1e-13));
  CHECK(close(sa.lse(), lse, 1e-13));
  CHECK(std::fabs(sa.entropy() - static_cast<double>(H)) <= 1e-9 * (1 + std::fabs(static_cast<double>(H))));

  // A tree of merges over uneven chunks gives the same value.
  std::vector<cai::softmax_state<double>> parts;
  std::vector<cai::lse_state<double>> lparts;
  for (std::size_t i = 0; i < xs.size();) {
    const std::size_t n = 1 + (i * 7) % 37;
    cai::softmax_state<double> p;
    cai::lse_state<double> l;
    for (std::size_t j = i; j < std::min(xs.size(), i + n); ++j) {
      p.push(xs[j]);
      l.push(xs[j]);
    }
    parts.push_back(p);
    lparts.push_back(l);
    i += n;
  }
  while (parts.size() > 1) {
    std::vector<cai::softmax_state<double>> next;
    std::vector<cai::lse_state<double>> lnext;
    for (std::size_t i = 0; i + 1 < parts.size(); i += 2) {
      next.push_back(cai::softmax_state<double>::merge(parts[i], parts[i + 1]));
      lnext.push_back(cai::lse_state<double>::merge(lparts[i], lparts[i + 1]));
    }
    if (parts.size() % 2) {
      next.push_back(parts.back());
      lnext.push_back(lparts.back());
    }
    parts.swap(next);
    lparts.swap(lnext);
  }
  CHECK(close(parts[0].lse(), lse, 1e-13));
  CHECK(close(lparts[0].value(), lse, 1e-13));
  CHECK(std::fabs(parts[0].entropy() - static_cast<double>(H)) <= 1e-9 * (1 + std::fabs(static_cast<double>(H))));
}

TEST_CASE("soft-max state edge cases: empty, one-hot, +inf and NaN", "[core]") {
  cai::softmax_state<float> e;
  CHECK(e.lse() == -std::numeric_limits<float>::infinity());
  CHECK(cai::softmax_state<float>::merge(e, e).empty());
  cai::softmax_state<float> one;
  one.push(1e4f);
  one.push(-std::numeric_limits<float>::infinity());
  CHECK(one.lse() == 1e4f);
  CHECK(one.entropy() == 0.0f);
  cai::softmax_state<float> two;
  two.push(1e4f);
  two.push(1e4f);
  CHECK(std::fabs(two.entropy() - std::log(2.0f)) < 1e-6f);  // no cancellation at 1e4
  cai::softmax_state<float> bad = one;
  bad.push(std::numeric_limits<float>::infinity());
  CHECK(std::isnan(bad.lse()));
  cai::softmax_state<float> nan = one;
  nan.push(std::nanf(""));
  CHECK(std::isnan(nan.entropy()));
  cai::lse_state<float> l;
  l.push(std::numeric_limits<float>::infinity());
  l.push(3.0f);
  CHECK(l.value() == std::numeric_limits<float>::infinity());
  cai::lse_state<float> ln;
  ln.push(std::nanf(""));
  ln.push(3.0f);
  CHECK(std::isnan(ln.value()));
}
