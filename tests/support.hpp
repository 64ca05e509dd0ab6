// Shared helpers for cai's tests: seeded data and fp64 reference computations written independently of the
// library (plain loops in double, different formulas where possible).
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cai_test {

inline std::vector<float> normal_floats(std::size_t n, float scale, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

inline std::vector<float> uniform_floats(std::size_t n, float lo, float hi, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

template <class Idx = std::int32_t>
std::vector<Idx> random_ids(std::size_t n, std::int64_t vocab, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<std::int64_t> d(0, vocab - 1);
  std::vector<Idx> v(n);
  for (auto& x : v) x = static_cast<Idx>(d(gen));
  return v;
}

/// fp64 two-pass reference for one row: log softmax(z)[y] and the entropy -sum p log p, z = x / temperature.
struct ref_row {
  double logp, entropy, lse;
};
inline ref_row reference_row(const double* x, std::int64_t V, std::int64_t y, double temperature) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < V; ++j) m = std::max(m, x[j] / temperature);
  double s = 0;
  for (std::int64_t j = 0; j < V; ++j) s += std::exp(x[j] / temperature - m);
  const double lse = m + std::log(s);
  double h = 0;
  for (std::int64_t j = 0; j < V; ++j) {
    const double lp = x[j] / temperature - lse;
    const double p = std::exp(lp);
    if (p > 0) h -= p * lp;
  }
  return {x[y] / temperature - lse, h, lse};
}

/// fp64 reference gradient of a * logp + b * entropy for one row, from dH/dz_j = -p_j (log p_j + H).
inline void reference_row_grad(const double* x, std::int64_t V, std::int64_t y, double temperature, double a,
                               double b, double* g) {
  const ref_row r = reference_row(x, V, y, temperature);
  for (std::int64_t j = 0; j < V; ++j) {
    const double lp = x[j] / temperature - r.lse;
    const double p = std::exp(lp);
    const double dh = p > 0 ? -p * (lp + r.entropy) : 0.0;
    g[j] = (a * ((j == y ? 1.0 : 0.0) - p) + b * dh) / temperature;
  }
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace cai_test

/// REQUIRE that `expr` throws exception type E whose message contains every one of the given fragments.
#define CAI_REQUIRE_THROWS_NAMING(expr, E, ...)                                            \
  do {                                                                                     \
    bool cai_thrown_ = false;                                                              \
    try {                                                                                  \
      (void)(expr);                                                                        \
    } catch (const E& cai_e_) {                                                            \
      cai_thrown_ = true;                                                                  \
      const std::string cai_msg_ = cai_e_.what();                                          \
      for (const char* frag : {__VA_ARGS__}) {                                             \
        INFO("message: " << cai_msg_ << "  expected fragment: " << frag);                  \
        CHECK(cai_test::contains(cai_msg_, frag));                                         \
      }                                                                                    \
    }                                                                                      \
    INFO("expected " #E " from " #expr);                                                   \
    REQUIRE(cai_thrown_);                                                                  \
  } while (0)
