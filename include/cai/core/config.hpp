// cai/core/config.hpp — configuration macros shared by every cai header.
//
// CAI_HD marks functions that run on the host and, under nvcc, on the device too. The per-element math of
// every algorithm is written once as CAI_HD functions so the host and CUDA paths cannot drift apart.
#pragma once

#define CAI_VERSION_MAJOR 0
#define CAI_VERSION_MINOR 1
#define CAI_VERSION_PATCH 0

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CAI_HD __host__ __device__
#define CAI_DEVICE_COMPILER 1
#else
#define CAI_HD
#define CAI_DEVICE_COMPILER 0
#endif

// True while compiling device code (the device pass of nvcc); host-only facilities such as exceptions and
// the vectorised host loops are compiled out there.
#if defined(__CUDA_ARCH__)
#define CAI_DEVICE_PASS 1
#else
#define CAI_DEVICE_PASS 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CAI_RESTRICT __restrict__
#define CAI_FORCE_INLINE inline __attribute__((always_inline))
#define CAI_LIKELY(x) __builtin_expect(!!(x), 1)
#define CAI_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define CAI_RESTRICT
#define CAI_FORCE_INLINE inline
#define CAI_LIKELY(x) (x)
#define CAI_UNLIKELY(x) (x)
#endif

// GNU vector extensions drive the host hot loops (our own vectorised exp, bf16/fp16 widening). They exist in
// g++ and clang; elsewhere the loops fall back to scalar code with identical results.
#if (defined(__GNUC__) || defined(__clang__)) && !CAI_DEVICE_PASS
#define CAI_HAS_VECTOR_EXT 1
#else
#define CAI_HAS_VECTOR_EXT 0
#endif

namespace cai {
/// Library version as {major, minor, patch}.
struct version_info {
  int major, minor, patch;
};
inline constexpr version_info version{CAI_VERSION_MAJOR, CAI_VERSION_MINOR, CAI_VERSION_PATCH};
}  // namespace cai
