// cai/kernels/cuda_common.cuh — what every CUDA kernel header of cai shares: runtime error checks, the device
// status block, allocators, and vectorised loads and stores of logits.
//
// Kernels never throw and never synchronise. Problems they find in data (a token id outside the vocabulary, a mask
// value other than 0/1) are recorded in a cuda_status_block in device memory; cai::cuda::synchronize() reads it at
// the caller's next synchronisation and throws there. Counts that the host path returns at once (scored rows, rows
// with non-finite logits) accumulate in the same block.
#pragma once

#if !defined(__CUDACC__)
#error "cai/kernels/*.cuh must be compiled by nvcc (include them from a .cu file)"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/half.hpp"

namespace cai {

namespace detail {
/// Throws cai::cuda_error naming the call when a CUDA runtime call failed.
inline void cuda_check(cudaError_t e, std::string_view call, std::string_view what) {
  if (e != cudaSuccess)
    throw cuda_error(concat(call, ": ", what, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}
}  // namespace detail

/// Stream-ordered device memory provider. Implement it to route cai's workspaces through a framework's caching
/// allocator (PyTorch's, RMM, ...). allocate() may throw; deallocate() must not.
class device_allocator {
 public:
  virtual ~device_allocator() = default;
  virtual void* allocate(std::size_t bytes, cudaStream_t stream) = 0;
  virtual void deallocate(void* p, std::size_t bytes, cudaStream_t stream) noexcept = 0;
};

/// The default allocator: cudaMallocAsync / cudaFreeAsync on the backend's stream.
class stream_ordered_allocator final : public device_allocator {
 public:
  void* allocate(std::size_t bytes, cudaStream_t stream) override {
    void* p = nullptr;
    if (bytes == 0) return nullptr;
    detail::cuda_check(cudaMallocAsync(&p, bytes, stream), "cai::cuda", "cudaMallocAsync");
    return p;
  }
  void deallocate(void* p, std::size_t, cudaStream_t stream) noexcept override {
    if (p) (void)cudaFreeAsync(p, stream);
  }
};

/// Which call recorded a problem in the status block.
enum class cuda_call : unsigned { none = 0, token_logprobs = 1, token_logprobs_backward = 2, gae = 3, discounted_returns = 4 };
/// What the problem was.
enum class cuda_problem : unsigned { none = 0, target_out_of_range = 1, mask_not_binary = 2, nonfinite_input = 3, bad_offsets = 4 };

/// Device-resident report of the kernels launched since the last cai::cuda::synchronize(). Only the first problem
/// is kept (which one is first when several blocks find one at once is not specified).
struct cuda_status_block {
  unsigned long long scored_rows;     ///< token_logprobs: rows whose log-prob was computed
  unsigned long long nonfinite_rows;  ///< token_logprobs: scored rows whose logits held NaN or +inf
  unsigned int code;                  ///< (cuda_call << 8) | cuda_problem of the first problem; 0 = none
  unsigned int reserved;
  long long index;  ///< flat position of that problem (row for logits, b * T + t for (B, T) inputs)
  long long value;  ///< the offending value (token id, mask byte)
};

/// What synchronize() returns: the counts of the status block.
struct cuda_report {
  std::int64_t scored_rows = 0;
  std::int64_t nonfinite_rows = 0;
};

namespace kernels {

/// Records the first problem found on the device.
__device__ inline void report_problem(cuda_status_block* st, cuda_call call, cuda_problem what, long long index,
                                      long long value) {
  if (st == nullptr) return;
  const unsigned code = (static_cast<unsigned>(call) << 8) | static_cast<unsigned>(what);
  if (atomicCAS(&st->code, 0u, code) == 0u) {
    st->index = index;
    st->value = value;
  }
}

/// Elements of T in one 16-byte vector.
template <class T>
inline constexpr int vec_elems = static_cast<int>(16 / sizeof(T));

/// Loads the 16-byte vector at p (16-byte aligned) and widens it to floats.
template <class T>
__device__ __forceinline__ void load_vec(const T* p, float (&z)[vec_elems<T>]) {
  // A plain (coherent) load, not __ldg: the backward may write dlogits over the logits it reads (in place).
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  if constexpr (std::is_same_v<T, float>) {
    z[0] = __uint_as_float(raw.x);
    z[1] = __uint_as_float(raw.y);
    z[2] = __uint_as_float(raw.z);
    z[3] = __uint_as_float(raw.w);
  } else if constexpr (std::is_same_v<T, double>) {
    z[0] = static_cast<float>(__hiloint2double(static_cast<int>(raw.y), static_cast<int>(raw.x)));
    z[1] = static_cast<float>(__hiloint2double(static_cast<int>(raw.w), static_cast<int>(raw.z)));
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {  // bf16 -> fp32 is exact: the bits move to the high half
      z[2 * k] = __uint_as_float(w[k] << 16);
      z[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
  } else {
    static_assert(std::is_same_v<T, float16>);
    const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      __half2 h2;
      static_assert(sizeof(h2) == sizeof(unsigned));
      memcpy(&h2, &w[k], sizeof(h2));
      const float2 f = __half22float2(h2);
      z[2 * k] = f.x;
      z[2 * k + 1] = f.y;
    }
  }
}

/// One element of T widened to float.
template <class T>
__device__ __forceinline__ float load_one(const T* p) {
  if constexpr (std::is_same_v<T, float>) return *p;
  else if constexpr (std::is_same_v<T, double>) return static_cast<float>(*p);
  else if constexpr (std::is_same_v<T, bfloat16>) return __uint_as_float(static_cast<unsigned>(p->bits) << 16);
  else return __half2float(__ushort_as_half(p->bits));
}

/// Narrows a float to G with round-to-nearest-even: the host path's conversion (core/half.hpp), bit for bit.
template <class G>
__device__ __forceinline__ G narrow(float v) {
  if constexpr (std::is_same_v<G, float>) return v;
  else if constexpr (std::is_same_v<G, double>) return static_cast<double>(v);
  else return G::from_float(v);
}

/// Stores N floats narrowed to G at p, with 16-byte stores when p is 16-byte aligned and N * sizeof(G) is a
/// multiple of 16 (element stores otherwise).
template <class G, int N>
__device__ __forceinline__ void store_vec(G* p, const float (&v)[N]) {
  if constexpr ((N * sizeof(G)) % 16 == 0) {
    if ((reinterpret_cast<std::uintptr_t>(p) & 15u) == 0) {
      alignas(16) G pack[N];
#pragma unroll
      for (int k = 0; k < N; ++k) pack[k] = narrow<G>(v[k]);
      uint4* dst = reinterpret_cast<uint4*>(p);
#pragma unroll
      for (int k = 0; k < static_cast<int>(N * sizeof(G) / 16); ++k) {
        uint4 u;
        memcpy(&u, reinterpret_cast<const char*>(pack) + 16 * k, sizeof u);  // no aliasing of G as uint4
        dst[k] = u;
      }
      return;
    }
  }
#pragma unroll
  for (int k = 0; k < N; ++k) p[k] = narrow<G>(v[k]);
}

/// True when p is aligned to `bytes`.
__device__ __forceinline__ bool aligned_to(const void* p, unsigned bytes) {
  return (reinterpret_cast<std::uintptr_t>(p) & (bytes - 1u)) == 0;
}

}  // namespace kernels
}  // namespace cai
