// cai/core/simd.hpp — the small vector toolkit behind cai's host hot loops (host only).
//
// A float vector (GNU vector extension) as wide as the widest register the target enables: 16 lanes with
// AVX-512, 8 with AVX, 4 otherwise (SSE2, NEON). Matching the enabled ISA keeps every vector in registers and
// avoids ABI changes. Reductions run in a fixed order for a given build, so results are deterministic run to run
// and at any thread count; builds for different ISAs may differ in the last bits (different lane counts).
//
// exp(): our own vectorised exponential (no -ffast-math, so +-inf and NaN keep their meaning):
//   n = round(x / ln 2), r = x - n ln 2 (Cody-Waite, two constants), e^r by its degree-7 Taylor polynomial on
//   |r| <= ln2/2 (truncation < 6e-9 relative), scaled by 2^n in two halves so that subnormal results and overflow
//   to +inf are both exact IEEE behaviour. Max error about 2 ulp over the finite range (tests/core/simd.cpp).
//   exp(-inf) = 0, exp(+inf) = +inf, exp(NaN) = NaN.
#pragma once

#include "config.hpp"

#if CAI_HAS_VECTOR_EXT

#include <cstdint>
#include <cstring>
#include <limits>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "half.hpp"

namespace cai::simd {

#if defined(__AVX512F__)
inline constexpr int vector_bytes = 64;
#elif defined(__AVX__)
inline constexpr int vector_bytes = 32;
#else
inline constexpr int vector_bytes = 16;
#endif
inline constexpr int lanes = vector_bytes / 4;

// Hardware fp16 conversion (F16C) for the full vector width, where the ISA has it.
#if defined(__F16C__) && defined(__AVX512F__)
#define CAI_SIMD_HW_F16 16
#elif defined(__F16C__) && defined(__AVX__) && !defined(__AVX512F__)
#define CAI_SIMD_HW_F16 8
#else
#define CAI_SIMD_HW_F16 0
#endif
using f32v = float __attribute__((vector_size(vector_bytes)));
using i32v = std::int32_t __attribute__((vector_size(vector_bytes)));
using u32v = std::uint32_t __attribute__((vector_size(vector_bytes)));
using u16v = std::uint16_t __attribute__((vector_size(vector_bytes / 2)));

CAI_FORCE_INLINE f32v splat(float x) noexcept { return f32v{} + x; }
CAI_FORCE_INLINE i32v splat_i(std::int32_t x) noexcept { return i32v{} + x; }
CAI_FORCE_INLINE u32v splat_u(std::uint32_t x) noexcept { return u32v{} + x; }
CAI_FORCE_INLINE f32v as_f(u32v v) noexcept { return __builtin_bit_cast(f32v, v); }
CAI_FORCE_INLINE f32v as_f(i32v v) noexcept { return __builtin_bit_cast(f32v, v); }
CAI_FORCE_INLINE u32v as_u(f32v v) noexcept { return __builtin_bit_cast(u32v, v); }
CAI_FORCE_INLINE i32v as_i(f32v v) noexcept { return __builtin_bit_cast(i32v, v); }
CAI_FORCE_INLINE i32v as_i(u32v v) noexcept { return __builtin_bit_cast(i32v, v); }

/// Lane-wise select: m is a comparison result (all ones / all zeros per lane).
CAI_FORCE_INLINE f32v select(i32v m, f32v a, f32v b) noexcept { return m ? a : b; }
/// max that propagates NaN from `a` (a NaN in a stays; a NaN in b is replaced by a).
CAI_FORCE_INLINE f32v max_keep_nan(f32v a, f32v b) noexcept { return a < b ? b : a; }

CAI_FORCE_INLINE f32v load(const float* p) noexcept {
  f32v v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
CAI_FORCE_INLINE void store(float* p, f32v v) noexcept { std::memcpy(p, &v, sizeof v); }

/// Widening loads of `lanes` elements to fp32 (exact).
CAI_FORCE_INLINE f32v load(const double* p) noexcept {
  f32v v;
  for (int i = 0; i < lanes; ++i) v[i] = static_cast<float>(p[i]);
  return v;
}
CAI_FORCE_INLINE f32v load(const bfloat16* p) noexcept {
  u16v h;
  std::memcpy(&h, static_cast<const void*>(p), sizeof h);
  return as_f(__builtin_convertvector(h, u32v) << 16);
}
/// Widens 2 * lanes bf16 values at once from one full-width load: the even-indexed elements go to `even`, the
/// odd-indexed ones to `odd` (2 integer ops for 2 vectors, against 5 per vector for an order-keeping widening on
/// AVX-512). For reductions, where the order of the elements within a block does not matter.
CAI_FORCE_INLINE void load_deinterleaved(const bfloat16* p, f32v& even, f32v& odd) noexcept {
  u32v w;
  std::memcpy(&w, static_cast<const void*>(p), sizeof w);
  even = as_f(w << 16);
  odd = as_f(w & 0xffff0000u);
}

/// fp16 -> fp32, exact. With F16C (and AVX-512 for 16 lanes) one hardware conversion; otherwise without F16C:
/// rebias the exponent, fix inf/NaN, and renormalise subnormals with one float subtraction (exact, since the
/// result is representable).
CAI_FORCE_INLINE f32v load(const float16* p) noexcept {
#if CAI_SIMD_HW_F16 == 16
  __m256i h;
  std::memcpy(&h, static_cast<const void*>(p), sizeof h);
  // The zero-masked forms avoid _mm512_undefined_*, which g++ 12 flags as maybe-uninitialized (GCC PR 105593).
  return reinterpret_cast<f32v>(_mm512_maskz_cvtph_ps(static_cast<__mmask16>(0xffff), h));
#elif CAI_SIMD_HW_F16 == 8
  __m128i h;
  std::memcpy(&h, static_cast<const void*>(p), sizeof h);
  return reinterpret_cast<f32v>(_mm256_cvtph_ps(h));
#else
  u16v h;
  std::memcpy(&h, static_cast<const void*>(p), sizeof h);
  const u32v w = __builtin_convertvector(h, u32v);
  const u32v sign = (w & 0x8000u) << 16;
  const u32v em = (w & 0x7fffu) << 13;  // exponent and mantissa in float position, still biased by 15
  const u32v exp_bits = em & (0x1fu << 23);
  u32v o = em + ((127u - 15u) << 23);
  const i32v is_special = as_i(exp_bits) == static_cast<std::int32_t>(0x1fu << 23);
  const i32v is_sub = as_i(exp_bits) == 0;
  o = is_special ? o + ((128u - 16u) << 23) : o;
  // subnormal (or zero): o currently encodes 2^-14 * (1 + m/1024); subtracting 2^-14 leaves m * 2^-24.
  const f32v sub = as_f(o + (1u << 23)) - splat(6.103515625e-05f);
  const f32v mag = is_sub ? sub : as_f(o);
  return as_f(as_u(mag) | sign);
#endif
}

CAI_FORCE_INLINE void store(double* p, f32v v) noexcept {
  for (int i = 0; i < lanes; ++i) p[i] = static_cast<double>(v[i]);
}
/// fp32 -> bf16 with round-to-nearest-even; NaN stays a quiet NaN (matches bfloat16::from_float).
CAI_FORCE_INLINE void store(bfloat16* p, f32v v) noexcept {
  const u32v u = as_u(v);
  const u32v rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const u32v quiet = (u >> 16) | 0x40u;
  const i32v nan = v != v;
  const u32v r = nan ? quiet : rounded;
  const u16v h = __builtin_convertvector(r, u16v);
  std::memcpy(static_cast<void*>(p), &h, sizeof h);
}
/// fp32 -> fp16 with round-to-nearest-even, gradual underflow and overflow to inf (matches float16::from_float
/// for every non-NaN input; NaN becomes a quiet NaN).
CAI_FORCE_INLINE void store(float16* p, f32v v) noexcept {
#if CAI_SIMD_HW_F16 == 16
  const __m256i h = _mm512_maskz_cvtps_ph(static_cast<__mmask16>(0xffff), reinterpret_cast<__m512>(v),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  std::memcpy(static_cast<void*>(p), &h, sizeof h);
#elif CAI_SIMD_HW_F16 == 8
  const __m128i h = _mm256_cvtps_ph(reinterpret_cast<__m256>(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  std::memcpy(static_cast<void*>(p), &h, sizeof h);
#else
  const u32v u = as_u(v);
  const u32v sign = (u >> 16) & 0x8000u;
  const u32v a = u & 0x7fffffffu;
  // normal range: rebias and round the 13 dropped bits to nearest even
  const u32v rebased = a - (112u << 23);
  const u32v normal = (rebased + 0x0fffu + ((rebased >> 13) & 1u)) >> 13;
  // subnormal range: adding 0.5 (2^-1) aligns the value's units of 2^-24 with the float's last mantissa bit,
  // so the hardware addition performs the round-to-nearest-even for us.
  const f32v sub_sum = as_f(a) + splat(0.5f);
  const u32v subnormal = as_u(sub_sum) - as_u(splat(0.5f));
  const i32v ai = as_i(a);
  u32v r = ai < static_cast<std::int32_t>(0x38800000u) ? subnormal : normal;
  r = ai >= static_cast<std::int32_t>(0x477ff000u) ? splat_u(0x7c00u) : r;
  r = ai > static_cast<std::int32_t>(0x7f800000u) ? splat_u(0x7e00u) | ((a >> 13) & 0x03ffu) : r;
  const u16v h = __builtin_convertvector(r | sign, u16v);
  std::memcpy(static_cast<void*>(p), &h, sizeof h);
#endif
}

namespace detail {
/// e^r on |r| <= ln2/2 by its degree-7 Taylor polynomial (Horner).
CAI_FORCE_INLINE f32v exp_poly(f32v r) noexcept {
  f32v p = splat(1.0f / 5040.0f);
  p = p * r + splat(1.0f / 720.0f);
  p = p * r + splat(1.0f / 120.0f);
  p = p * r + splat(1.0f / 24.0f);
  p = p * r + splat(1.0f / 6.0f);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.0f);
  return p * r + splat(1.0f);
}
/// Range reduction x = n ln2 + r with n = round(x / ln 2) (Cody-Waite, two constants); returns e^r and n.
CAI_FORCE_INLINE f32v exp_reduced(f32v x, i32v& n_out) noexcept {
  constexpr float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low bits
  const f32v t = x * splat(1.44269504088896341f) + splat(magic);
  const f32v n = t - splat(magic);
  n_out = as_i(t) - as_i(splat(magic));
  f32v r = x - n * splat(0.693359375f);  // ln2 high part: 9 significant bits, exact product for |n| < 2^15
  r = r - n * splat(-2.12194440e-4f);     // ln2 - 0.693359375
  return exp_poly(r);
}
}  // namespace detail

/// Vectorised e^x; see the header comment for the method and its accuracy.
CAI_FORCE_INLINE f32v exp(f32v x) noexcept {
  const f32v xc = max_keep_nan(x > splat(88.8f) ? splat(88.8f) : x, splat(-110.0f));  // both keep NaN
  i32v n;
  const f32v p = detail::exp_reduced(xc, n);
  // 2^n in two halves, so that subnormal results and overflow to +inf are exact IEEE behaviour.
  const i32v n1 = n >> 1;
  return p * as_f((n1 + 127) << 23) * as_f((n - n1 + 127) << 23);  // a NaN x propagates through p
}

/// e^x for x <= 0 (and NaN), the hot-loop variant: results below 2^-126 are flushed to zero. The soft-max loops
/// only ever exponentiate x - max(x) <= 0, where such terms are below fp32 resolution of any sum >= 1; dropping the
/// two-step scaling and the upper clamp saves a fifth of the instructions. Same polynomial and accuracy as exp()
/// for x >= -87.3; exp_nonpos(-inf) = 0; positive x is outside the contract.
CAI_FORCE_INLINE f32v exp_nonpos_clamped(f32v x) noexcept;
CAI_FORCE_INLINE f32v exp_nonpos(f32v x) noexcept {
  // Clamping at -88 makes n >= -127, where the exponent field (n + 127) is 0: the scale becomes exactly 0.
  return exp_nonpos_clamped(max_keep_nan(x, splat(-88.0f)));
}
/// exp_nonpos for arguments the caller already clamped to [-88, 0] (or NaN): saves the clamp in hot loops.
CAI_FORCE_INLINE f32v exp_nonpos_clamped(f32v x) noexcept {
  i32v n;
  const f32v p = detail::exp_reduced(x, n);
  return p * as_f((n + 127) << 23);
}

/// Fixed-order horizontal reductions (a pairwise tree over the lanes).
CAI_FORCE_INLINE float reduce_add(f32v v) noexcept {
  for (int w = lanes / 2; w > 0; w /= 2)
    for (int i = 0; i < w; ++i) v[i] = v[i] + v[i + w];
  return v[0];
}
CAI_FORCE_INLINE float reduce_max(f32v v) noexcept {
  for (int w = lanes / 2; w > 0; w /= 2)
    for (int i = 0; i < w; ++i) v[i] = v[i] < v[i + w] ? v[i + w] : v[i];
  return v[0];
}

/// Scalar e^x with exactly the vector's arithmetic (for tails and single elements).
inline float exp(float x) noexcept { return exp(splat(x))[0]; }
inline float exp_nonpos(float x) noexcept { return exp_nonpos(splat(x))[0]; }

}  // namespace cai::simd

#endif  // CAI_HAS_VECTOR_EXT
