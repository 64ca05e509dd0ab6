// Tests for cai/core/half.hpp: exhaustive widening, narrowing against independent references.
#include <cai/core/half.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "../support.hpp"

namespace {
// Independent fp16 narrowing: pick the nearest of the two neighbouring fp16 values in double arithmetic, ties to
// the even mantissa; compare by decoding candidates with an fp64 formula.
double f16_value(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 0x1f) return m ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  if (e == 0) return sign * std::ldexp(m, -24);
  return sign * std::ldexp(1024 + m, e - 25);
}
double bf16_value(std::uint16_t h) {
  std::uint32_t u = std::uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <class Decode>
std::uint16_t nearest_even(double x, Decode decode, std::uint16_t max_finite_bits) {
  // Search over magnitudes (monotone in the bit pattern for non-negative values).
  const double ax = std::fabs(x);
  std::uint16_t lo = 0, hi = max_finite_bits;
  if (ax >= decode(max_finite_bits)) {
    const double top = decode(max_finite_bits), below = decode(static_cast<std::uint16_t>(max_finite_bits - 1));
    // Overflow threshold: values at or above max + half an ulp round to infinity.
    if (ax >= top + (top - below) / 2) lo = hi = static_cast<std::uint16_t>(max_finite_bits + 1);
    else lo = hi = max_finite_bits;
  } else {
    while (hi - lo > 1) {
      const auto mid = static_cast<std::uint16_t>((lo + hi) / 2);
      if (decode(mid) <= ax) lo = mid;
      else hi = mid;
    }
    const double dl = ax - decode(lo), dh = decode(hi) - ax;
    if (dh < dl || (dh == dl && (hi & 1) == 0)) lo = hi;
  }
  return static_cast<std::uint16_t>(lo | (std::signbit(x) ? 0x8000 : 0));
}
}  // namespace

TEST_CASE("every fp16 and bf16 value widens exactly and narrows back to itself", "[core]") {
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float f = cai::float16::from_bits(bits).to_float();
    const double ref = f16_value(bits);
    if (std::isnan(ref)) {
      REQUIRE(std::isnan(f));
      REQUIRE(std::isnan(cai::float16::from_float(f).to_float()));
    } else {
      REQUIRE(static_cast<double>(f) == ref);
      REQUIRE(cai::float16::from_float(f).bits == bits);
    }
    const float g = cai::bfloat16::from_bits(bits).to_float();
    if (std::isnan(g)) REQUIRE(std::isnan(cai::bfloat16::from_float(g).to_float()));
    else REQUIRE(cai::bfloat16::from_float(g).bits == bits);
  }
}

TEST_CASE("fp16 and bf16 narrowing rounds to nearest even, underflows gradually and overflows to inf", "[core]") {
  std::mt19937 gen(7);
  std::uniform_int_distribution<std::uint32_t> bits;
  int checked = 0;
  for (int i = 0; i < 400000; ++i) {
    std::uint32_t u = bits(gen);
    // Concentrate half of the samples on the fp16 range (exponents 100..145) to cover subnormals and overflow.
    if (i & 1) u = (u & 0x807fffffu) | ((100u + (u >> 23) % 46u) << 23);
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f)) continue;
    const auto want16 = nearest_even(f, f16_value, 0x7bff);
    INFO("x=" << f);
    REQUIRE(cai::float16::from_float(f).bits == want16);
    const auto want_bf = nearest_even(f, bf16_value, 0x7f7f);
    REQUIRE(cai::bfloat16::from_float(f).bits == want_bf);
    ++checked;
  }
  CHECK(checked > 300000);
  // Ties: 1 + 2^-11 lies halfway between two fp16 values and rounds to the even one (1.0).
  CHECK(cai::float16::from_float(1.0f + 0.00048828125f).bits == 0x3c00);
  CHECK(cai::float16::from_float(65520.0f).bits == 0x7c00);
  CHECK(cai::float16::from_float(65519.0f).bits == 0x7bff);
  CHECK(cai::float16::from_float(5.9604644775390625e-8f).bits == 0x0001);      // 2^-24, smallest subnormal
  CHECK(cai::float16::from_float(2.98023223876953125e-8f).bits == 0x0000);     // 2^-25 ties to even zero
  CHECK(cai::float16::from_float(-std::numeric_limits<float>::infinity()).bits == 0xfc00);
  CHECK(cai::bfloat16::from_float(std::numeric_limits<float>::max()).bits == 0x7f80);  // rounds to inf
  CHECK(std::isnan(cai::bfloat16::from_float(std::numeric_limits<float>::quiet_NaN()).to_float()));
  CHECK(std::isnan(cai::float16::from_float(-std::numeric_limits<float>::quiet_NaN()).to_float()));
  CHECK(cai::float16::from_float(-0.0f).bits == 0x8000);
}

#if defined(__FLT16_MANT_DIG__) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
TEST_CASE("fp16 narrowing agrees with the compiler's _Float16 conversion", "[core]") {
  std::mt19937 gen(9);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    std::uint32_t u = (bits(gen) & 0x807fffffu) | ((96u + bits(gen) % 56u) << 23);
    float f;
    std::memcpy(&f, &u, 4);
    const _Float16 h = static_cast<_Float16>(f);
    std::uint16_t hb;
    std::memcpy(&hb, &h, 2);
    REQUIRE(cai::float16::from_float(f).bits == hb);
  }
}
#endif
