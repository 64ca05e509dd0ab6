// cai/core/half.hpp — bf16 and fp16 storage types.
//
// Both are 2-byte trivially copyable structs holding the IEEE bit pattern, layout-compatible with CUDA's
// __nv_bfloat16 / __half and LibTorch's c10::BFloat16 / c10::Half (static_asserts below check CUDA's wherever
// cuda_bf16.h / cuda_fp16.h are included first; tests/core/half_torch.cpp checks c10's). They are storage
// formats: arithmetic happens in fp32 after widening.
//
// Conversions:
//   widen   — exact (every bf16/fp16 value is a float).
//   narrow  — round to nearest, ties to even; overflow goes to +-inf; NaN stays NaN (quiet, sign kept);
//             fp16 subnormals are produced exactly (gradual underflow).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"

namespace cai {

namespace detail {
CAI_HD constexpr std::uint32_t float_bits(float f) noexcept {
#if CAI_DEVICE_PASS
  return __float_as_uint(f);
#else
  return std::bit_cast<std::uint32_t>(f);
#endif
}
CAI_HD constexpr float bits_float(std::uint32_t u) noexcept {
#if CAI_DEVICE_PASS
  return __uint_as_float(u);
#else
  return std::bit_cast<float>(u);
#endif
}
}  // namespace detail

/// bfloat16: 1 sign, 8 exponent, 7 mantissa bits (the upper half of an IEEE float).
struct bfloat16 {
  std::uint16_t bits = 0;

  static CAI_HD constexpr bfloat16 from_bits(std::uint16_t b) noexcept {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  /// Round-to-nearest-even narrowing from float.
  static CAI_HD constexpr bfloat16 from_float(float f) noexcept {
    const std::uint32_t u = detail::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: keep sign and the top payload bits, force quiet
      return from_bits(static_cast<std::uint16_t>((u >> 16) | 0x0040u));
    // Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into the exponent is the correct
    // result (including overflow of the largest finite values to infinity).
    const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    return from_bits(static_cast<std::uint16_t>(rounded >> 16));
  }
  CAI_HD constexpr float to_float() const noexcept { return detail::bits_float(std::uint32_t{bits} << 16); }
  CAI_HD constexpr explicit operator float() const noexcept { return to_float(); }
  friend CAI_HD constexpr bool operator==(bfloat16 a, bfloat16 b) noexcept { return a.bits == b.bits; }
};

/// IEEE binary16: 1 sign, 5 exponent, 10 mantissa bits.
struct float16 {
  std::uint16_t bits = 0;

  static CAI_HD constexpr float16 from_bits(std::uint16_t b) noexcept {
    float16 h;
    h.bits = b;
    return h;
  }
  /// Round-to-nearest-even narrowing from float, with gradual underflow and overflow to infinity.
  static CAI_HD constexpr float16 from_float(float f) noexcept {
    const std::uint32_t u = detail::float_bits(f);
    const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    const std::uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)  // NaN -> quiet NaN with the top payload bits
      return from_bits(static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x03ffu)));
    if (a >= 0x477ff000u)  // >= 65520 rounds to infinity (65504 is the largest finite value)
      return from_bits(static_cast<std::uint16_t>(sign | 0x7c00u));
    if (a < 0x38800000u) {  // below 2^-14: subnormal result (or zero)
      if (a < 0x33000000u) return from_bits(sign);  // < 2^-25: rounds to zero (2^-25 itself ties to 0)
      const std::uint32_t e = a >> 23;              // biased float exponent, 102..112
      const std::uint32_t m = (a & 0x007fffffu) | 0x00800000u;
      const std::uint32_t shift = 126u - e;  // brings the value to units of 2^-24
      const std::uint32_t q = m >> shift;
      const std::uint32_t rem = m & ((1u << shift) - 1u);
      const std::uint32_t half = 1u << (shift - 1u);
      const std::uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
      return from_bits(static_cast<std::uint16_t>(sign | r));
    }
    // Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even; a carry
    // propagates into the exponent correctly.
    const std::uint32_t rebased = a - (112u << 23);
    const std::uint32_t r = (rebased + 0x0fffu + ((rebased >> 13) & 1u)) >> 13;
    return from_bits(static_cast<std::uint16_t>(sign | r));
  }
  CAI_HD constexpr float to_float() const noexcept {
    const std::uint32_t sign = std::uint32_t{bits & 0x8000u} << 16;
    const std::uint32_t e = (bits >> 10) & 0x1fu;
    const std::uint32_t m = bits & 0x03ffu;
    if (e == 0x1fu) return detail::bits_float(sign | 0x7f800000u | (m << 13));  // inf / NaN
    if (e != 0) return detail::bits_float(sign | ((e + 112u) << 23) | (m << 13));
    if (m == 0) return detail::bits_float(sign);
    // Subnormal: value = m * 2^-24, exact in float.
    const float mag = static_cast<float>(m) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  CAI_HD constexpr explicit operator float() const noexcept { return to_float(); }
  friend CAI_HD constexpr bool operator==(float16 a, float16 b) noexcept { return a.bits == b.bits; }
};

static_assert(sizeof(bfloat16) == 2 && alignof(bfloat16) == 2 && std::is_trivially_copyable_v<bfloat16>);
static_assert(sizeof(float16) == 2 && alignof(float16) == 2 && std::is_trivially_copyable_v<float16>);
static_assert(std::is_standard_layout_v<bfloat16> && std::is_standard_layout_v<float16>);

#if defined(__CUDA_BF16_TYPES_EXIST__) || defined(__CUDA_BF16_H__)
static_assert(sizeof(bfloat16) == sizeof(__nv_bfloat16) && alignof(bfloat16) == alignof(__nv_bfloat16),
              "cai::bfloat16 must be layout-compatible with __nv_bfloat16");
#endif
#if defined(__CUDA_FP16_TYPES_EXIST__) || defined(__CUDA_FP16_H__)
static_assert(sizeof(float16) == sizeof(__half) && alignof(float16) == alignof(__half),
              "cai::float16 must be layout-compatible with __half");
#endif
// LibTorch's c10 headers use #pragma once (no macro to detect them); the c10 layout check lives in
// tests/core/half_torch.cpp, built where LibTorch is found, and in the cai::torch adapters.

/// Widens any supported element type to float (identity for float; double narrows, used only by tests).
template <class T>
CAI_HD constexpr float to_float(T x) noexcept {
  if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>) return x.to_float();
  else return static_cast<float>(x);
}

/// Narrows float to T with round-to-nearest-even.
template <class T>
CAI_HD constexpr T from_float(float x) noexcept {
  if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>) return T::from_float(x);
  else return static_cast<T>(x);
}

template <class T>
concept logit_element = std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bfloat16> ||
                        std::is_same_v<T, float16>;

}  // namespace cai
