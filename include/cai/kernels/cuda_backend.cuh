// cai/kernels/cuda_backend.cuh — the cai::cuda backend: a stream, a pluggable device allocator, error checking.
//
// Compiled by nvcc only. Algorithms reach their CUDA kernels through member functions of cai::cuda declared in the
// kernel headers of this folder (dispatch step 2); where a kernel header is not included, the call fails at
// compile time with the static_assert that names the algorithm. Nothing here synchronises implicitly: device
// problems found in data are written to a status word that synchronize() reads and turns into a cai::cuda_error.
//
//   cai::cuda gpu{stream};                       // default allocator: cudaMallocAsync on that stream
//   cai::cuda gpu{stream, my_caching_allocator}; // or hand in a framework's caching allocator
#pragma once

#if !defined(__CUDACC__)
#error "cai/kernels/cuda_backend.cuh must be compiled by nvcc (include it from a .cu file)"
#endif

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "../concepts/backend.hpp"
#include "../core/error.hpp"
#include "../core/tensor_view.hpp"

namespace cai {

namespace detail {
/// Throws cai::cuda_error naming the call when a CUDA runtime call failed.
inline void cuda_check(cudaError_t e, std::string_view call, std::string_view what) {
  if (e != cudaSuccess)
    throw cuda_error(concat(call, ": ", what, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}
}  // namespace detail

/// Stream-ordered device memory provider. Implement it to route cai's workspaces through a framework's caching
/// allocator (PyTorch's, RMM, ...).
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

/// The CUDA backend.
class cuda {
 public:
  using backend_concept = backend_t;
  using memory_space = device_space;
  static constexpr const char* name = "cai::cuda";

  explicit cuda(cudaStream_t stream = nullptr, std::shared_ptr<device_allocator> alloc = nullptr)
      : stream_(stream), alloc_(alloc ? std::move(alloc) : std::make_shared<stream_ordered_allocator>()) {}

  cudaStream_t stream() const noexcept { return stream_; }
  device_allocator& allocator() const noexcept { return *alloc_; }

  /// Waits for the stream and reports any launch or device-side error as cai::cuda_error naming `call`.
  void synchronize(std::string_view call = "cai::cuda::synchronize") const {
    detail::cuda_check(cudaStreamSynchronize(stream_), call, "cudaStreamSynchronize");
    detail::cuda_check(cudaGetLastError(), call, "a kernel launch");
  }

  /// Throws cai::memory_space_error naming `arg` when p is not device-accessible memory (e.g. a host pointer
  /// passed in a device view).
  static void require_device_pointer(const void* p, std::string_view call, std::string_view arg) {
    if (p == nullptr) return;
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, p);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky-free error state of this query
      detail::fail_argument<memory_space_error>(call, arg, "device memory", "an unknown pointer");
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
      detail::fail_argument<memory_space_error>(call, arg, "device memory", "host memory");
  }

 private:
  cudaStream_t stream_;
  std::shared_ptr<device_allocator> alloc_;
};

static_assert(backend<cuda> && !bulk_backend<cuda>);

/// A std-style allocator for cai::tensor<T, R, device_allocator_for<T>>: device memory, synchronous.
template <class T>
struct cuda_tensor_allocator {
  using value_type = T;
  using memory_space = device_space;
  cuda_tensor_allocator() = default;
  template <class U>
  cuda_tensor_allocator(const cuda_tensor_allocator<U>&) noexcept {}  // NOLINT
  T* allocate(std::size_t n) {
    void* p = nullptr;
    detail::cuda_check(cudaMalloc(&p, n * sizeof(T)), "cai::cuda_tensor_allocator", "cudaMalloc");
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { (void)cudaFree(p); }
  friend bool operator==(const cuda_tensor_allocator&, const cuda_tensor_allocator&) noexcept { return true; }
};

}  // namespace cai
