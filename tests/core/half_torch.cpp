// Built where LibTorch is found: cai's bf16/fp16 are layout- and bit-compatible with c10::BFloat16 / c10::Half.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cai/core/half.hpp>

#include <cstring>
#include <random>

#include "../support.hpp"

static_assert(sizeof(cai::bfloat16) == sizeof(c10::BFloat16) && alignof(cai::bfloat16) == alignof(c10::BFloat16));
static_assert(sizeof(cai::float16) == sizeof(c10::Half) && alignof(cai::float16) == alignof(c10::Half));

TEST_CASE("bf16 and fp16 narrowing agree bit for bit with LibTorch's c10 types", "[core]") {
  std::mt19937 gen(11);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    std::uint32_t u = bits(gen);
    if (i & 1) u = (u & 0x807fffffu) | ((96u + (u >> 23) % 56u) << 23);
    float f;
    std::memcpy(&f, &u, 4);
    if (f != f) continue;  // NaN payloads are not specified
    const c10::BFloat16 tb(f);
    const c10::Half th(f);
    REQUIRE(cai::bfloat16::from_float(f).bits == tb.x);
    REQUIRE(cai::float16::from_float(f).bits == th.x);
  }
}
