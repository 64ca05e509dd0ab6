// Tests for cai/core/simd.hpp: the vectorised exp against long double, special values, and the widening and
// narrowing conversions against the scalar bf16/fp16 types.
#include <cai/core/simd.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../support.hpp"

#if CAI_HAS_VECTOR_EXT
namespace {
float ulp_of(float x) {
  return std::nextafter(std::fabs(x), std::numeric_limits<float>::infinity()) - std::fabs(x);
}
}  // namespace

TEST_CASE("the vectorised exp is within 2 ulp over the finite range and keeps inf and NaN", "[core]") {
  using namespace cai::simd;
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> d(-103.0f, 88.7f);
  double worst_ulp = 0;
  for (int i = 0; i < 200000; i += lanes) {
    f32v x;
    for (int j = 0; j < lanes; ++j) x[j] = d(gen);
    if (i == 0) {
      x[0] = 0.0f;
      x[1] = -87.5f;   // result is subnormal
      x[2] = 88.72f;   // close to FLT_MAX
    }
    const f32v y = cai::simd::exp(x);
    for (int j = 0; j < lanes; ++j) {
      const long double want = std::exp(static_cast<long double>(x[j]));
      const float wf = static_cast<float>(want);
      const double err = static_cast<double>(std::fabs(static_cast<long double>(y[j]) - want));
      // Below FLT_MIN the spacing is the subnormal spacing 2^-149.
      const double u = std::max<double>(ulp_of(wf), std::ldexp(1.0, -149));
      worst_ulp = std::max(worst_ulp, err / u);
    }
  }
  INFO("worst error in ulp: " << worst_ulp);
  CHECK(worst_ulp <= 2.0);
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(cai::simd::exp(-inf) == 0.0f);
  CHECK(cai::simd::exp(inf) == inf);
  CHECK(cai::simd::exp(89.0f) == inf);
  CHECK(cai::simd::exp(-200.0f) == 0.0f);
  CHECK(std::isnan(cai::simd::exp(std::nanf(""))));
  CHECK(cai::simd::exp(0.0f) == 1.0f);
}

TEST_CASE("exp_nonpos matches exp for x >= -87.3 and is exactly 0 below -88", "[core]") {
  using namespace cai::simd;
  std::mt19937 gen(2);
  std::uniform_real_distribution<float> d(-87.3f, 0.0f);
  for (int i = 0; i < 100000; ++i) {
    const float x = d(gen);
    REQUIRE(cai::simd::exp_nonpos(x) == cai::simd::exp(x));
  }
  CHECK(cai::simd::exp_nonpos(-88.0f) == 0.0f);
  CHECK(cai::simd::exp_nonpos(-1e4f) == 0.0f);
  CHECK(cai::simd::exp_nonpos(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(std::isnan(cai::simd::exp_nonpos(std::nanf(""))));
  CHECK(cai::simd::exp_nonpos(0.0f) == 1.0f);
}

TEST_CASE("vector widening and narrowing of bf16 and fp16 match the scalar conversions bit for bit", "[core]") {
  using namespace cai::simd;
  // Widening: every 16-bit pattern.
  std::vector<cai::float16> h(0x10000);
  std::vector<cai::bfloat16> b(0x10000);
  for (std::uint32_t i = 0; i < 0x10000; ++i) {
    h[i] = cai::float16::from_bits(static_cast<std::uint16_t>(i));
    b[i] = cai::bfloat16::from_bits(static_cast<std::uint16_t>(i));
  }
  for (std::uint32_t i = 0; i < 0x10000; i += lanes) {
    const f32v fh = load(h.data() + i), fb = load(b.data() + i);
    for (int j = 0; j < lanes; ++j) {
      const float sh = h[i + static_cast<std::uint32_t>(j)].to_float(), sb = b[i + static_cast<std::uint32_t>(j)].to_float();
      if (std::isnan(sh)) REQUIRE(std::isnan(fh[j]));
      else REQUIRE(std::memcmp(&sh, &fh[j], 4) == 0);
      if (std::isnan(sb)) REQUIRE(std::isnan(fb[j]));
      else REQUIRE(std::memcmp(&sb, &fb[j], 4) == 0);
    }
  }
  // Narrowing: random floats over the whole range plus the fp16 range.
  std::mt19937 gen(5);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 300000; i += lanes) {
    f32v x;
    for (int j = 0; j < lanes; ++j) {
      std::uint32_t u = bits(gen);
      if (j & 1) u = (u & 0x807fffffu) | ((96u + (u >> 23) % 56u) << 23);
      std::memcpy(&x[j], &u, 4);
    }
    cai::float16 oh[lanes];
    cai::bfloat16 ob[lanes];
    store(oh, x);
    store(ob, x);
    for (int j = 0; j < lanes; ++j) {
      if (std::isnan(x[j])) {
        REQUIRE(std::isnan(oh[j].to_float()));
        REQUIRE(std::isnan(ob[j].to_float()));
        continue;
      }
      REQUIRE(oh[j].bits == cai::float16::from_float(x[j]).bits);
      REQUIRE(ob[j].bits == cai::bfloat16::from_float(x[j]).bits);
    }
  }
}

TEST_CASE("horizontal reductions use a fixed pairwise order", "[core]") {
  using namespace cai::simd;
  f32v v;
  for (int j = 0; j < lanes; ++j) v[j] = static_cast<float>(j + 1);
  CHECK(reduce_add(v) == static_cast<float>(lanes * (lanes + 1) / 2));
  CHECK(reduce_max(v) == static_cast<float>(lanes));
}
#endif
