// cai/kernels/cuda_backend.cuh — the cai::cuda backend: a stream, a pluggable device allocator, the device status
// block, workspaces, and the algorithms it runs on the GPU.
//
// Compiled by nvcc only. The backend's members are the dispatch step 2 of every algorithm it implements
// (algorithms/dispatch.hpp): token_logprobs, token_logprobs_backward (kernels/logprobs.cuh), gae and
// discounted_returns (kernels/gae.cuh); the batched statistics and losses (kernels/batched.hpp) run on policy().
// Each member checks its views at the boundary (device memory, element alignment), launches on the backend's
// stream, and throws cai::cuda_error naming the call if the launch fails.
// Nothing here synchronises implicitly: problems found in data go to the status block, which synchronize() reads,
// resets and turns into the exception the host path would have thrown (cai::invalid_argument naming the argument).
//
//   cai::cuda gpu{stream};                       // default allocator: cudaMallocAsync on that stream
//   cai::cuda gpu{stream, my_caching_allocator}; // or hand in a framework's caching allocator
//   cai::token_logprobs(gpu, logits, targets, mask, {.logp = logp});   // device views: runs on the GPU
//   const cai::cuda_report r = gpu.synchronize();                      // r.nonfinite_rows, or a throw
//
// Copies of a cai::cuda share its stream, allocator and status block. A backend must not outlive its stream.
#pragma once

#include <cuda_runtime.h>
#include <thrust/system/cuda/execution_policy.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>

#include "../concepts/backend.hpp"
#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "cuda_common.cuh"
#include "gae.cuh"
#include "logprobs.cuh"

namespace cai {

/// The CUDA backend.
class cuda {
 public:
  using backend_concept = backend_t;
  using memory_space = device_space;
  static constexpr const char* name = "cai::cuda";

  /// Runs on `stream` (the legacy default stream when null) and takes device memory from `alloc`
  /// (cudaMallocAsync on the stream when null). Touches no device until the first call that needs one.
  explicit cuda(cudaStream_t stream = nullptr, std::shared_ptr<device_allocator> alloc = nullptr)
      : state_(std::make_shared<state>(stream, alloc ? std::move(alloc) : std::make_shared<stream_ordered_allocator>())) {}

  cudaStream_t stream() const noexcept { return state_->stream; }
  device_allocator& allocator() const noexcept { return *state_->alloc; }

  /// Waits for the stream, then reports, in this order: a failed launch or device fault (cai::cuda_error naming
  /// `call`), and the first problem the kernels found in data since the last synchronize (the exception the host
  /// path throws up front, naming the argument). Returns the counts of the status block and resets it.
  cuda_report synchronize(std::string_view call = "cai::cuda::synchronize") const {
    detail::cuda_check(cudaStreamSynchronize(stream()), call, "cudaStreamSynchronize");
    detail::cuda_check(cudaGetLastError(), call, "a kernel launch");
    cuda_status_block* st = state_->status.load(std::memory_order_acquire);
    if (st == nullptr) return {};
    cuda_status_block h{};
    detail::cuda_check(cudaMemcpyAsync(&h, st, sizeof h, cudaMemcpyDeviceToHost, stream()), call,
                       "cudaMemcpyAsync of the status block");
    detail::cuda_check(cudaStreamSynchronize(stream()), call, "cudaStreamSynchronize");
    detail::cuda_check(cudaMemsetAsync(st, 0, sizeof h, stream()), call, "cudaMemsetAsync");
    if (h.code != 0) throw_problem(h);
    return cuda_report{static_cast<std::int64_t>(h.scored_rows), static_cast<std::int64_t>(h.nonfinite_rows)};
  }

  /// The device status block the kernels write to (allocated and zeroed on first use, on the stream).
  cuda_status_block* status_block() const {
    std::call_once(state_->status_once, [&] {
      auto* p = static_cast<cuda_status_block*>(allocator().allocate(sizeof(cuda_status_block), stream()));
      detail::cuda_check(cudaMemsetAsync(p, 0, sizeof(cuda_status_block), stream()), "cai::cuda", "cudaMemsetAsync");
      state_->status.store(p, std::memory_order_release);
    });
    return state_->status.load(std::memory_order_acquire);
  }

  /// Device scratch memory from the backend's allocator, released on the stream when it goes out of scope
  /// (stream order makes that safe while kernels that use it are still queued).
  class workspace {
   public:
    workspace(const cuda& b, std::size_t bytes) : b_(&b), bytes_(bytes), p_(b.allocator().allocate(bytes, b.stream())) {}
    workspace(const workspace&) = delete;
    workspace& operator=(const workspace&) = delete;
    ~workspace() { b_->allocator().deallocate(p_, bytes_, b_->stream()); }
    void* get() const noexcept { return p_; }
    std::size_t size() const noexcept { return bytes_; }

   private:
    const cuda* b_;
    std::size_t bytes_;
    void* p_;
  };

  /// The Thrust execution policy of this backend, for cai::batched (kernels/batched.hpp): its stream, and no
  /// synchronisation after each algorithm (thrust::cuda::par_nosync).
  auto policy() const { return thrust::cuda::par_nosync.on(stream()); }

  /// Throws cai::memory_space_error naming `arg` when p is not device-accessible memory (e.g. a host pointer
  /// passed in a device view).
  static void require_device_pointer(const void* p, std::string_view call, std::string_view arg) {
    if (p == nullptr) return;
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, p);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear the error state of this query
      detail::fail_argument<memory_space_error>(call, arg, "device memory", "an unknown pointer");
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
      detail::fail_argument<memory_space_error>(call, arg, "device memory", "host memory");
  }

  /// The checks every member makes on a device view it receives: device memory, aligned to its element.
  template <class T, std::size_t R>
  static void require_device_view(std::string_view call, std::string_view arg, const tensor_view<T, R, device_space>& v) {
    if (v.data() == nullptr) return;
    require_device_pointer(v.data(), call, arg);
    if (reinterpret_cast<std::uintptr_t>(v.data()) % alignof(std::remove_cv_t<T>) != 0)
      detail::fail_argument<layout_error>(call, arg, detail::concat("data aligned to ", alignof(std::remove_cv_t<T>), " bytes"),
                                          "a misaligned pointer");
  }

  /// require_device_view over (name, view) pairs.
  static void require_device_views(std::string_view) {}
  template <class V, class... Rest>
  static void require_device_views(std::string_view call, std::string_view arg, const V& v, const Rest&... rest) {
    require_device_view(call, arg, v);
    require_device_views(call, rest...);
  }

  // ----- algorithms (dispatch step 2; the public objects have already checked shapes and parameters) -----------

  template <class T, class Idx>
  logprob_summary token_logprobs(const logprob_problem<T, Idx, device_space>& p) const {
    constexpr std::string_view call = "cai::token_logprobs";
    require_problem_views(call, p);
    if (p.logits.extent(0) * p.logits.extent(1) == 0) return {};
    detail::cuda_check(kernels::token_logprobs(p, status_block(), stream()), call, "the kernel launch");
    logprob_summary s;
    s.deferred = true;
    return s;
  }

  /// cai::token_logprobs with the fused PPO epilogue (cai::ppo_epilogue, kernels/logprobs.cuh): log-probs, entropy
  /// and the surrogate's dL/dlogp in one pass over the logits. Arguments as cai::token_logprobs (at least one of
  /// out.logp, .entropy, .saved), plus the epilogue's views, shaped like the targets.
  template <viewable L, viewable Y, class M, std::size_t R, class Clip>
    requires(R + 1 == rank_of_v<L>)
  logprob_summary token_logprobs_ppo(const L& logits, const Y& targets, const M& mask,
                                     const logprob_outputs<R, device_space>& out, const ppo_epilogue<R, Clip>& epi,
                                     const logprob_options& opt = {}) const {
    static_assert(pg::surrogate<Clip> && !std::same_as<Clip, pg::gspo>,
                  "cai::cuda::token_logprobs_ppo: a token-level surrogate (gspo's ratio is a sequence mean)");
    constexpr std::string_view call = "cai::cuda::token_logprobs_ppo";
    const auto p = detail::make_logprob_problem(call, logits, targets, mask, out, opt);
    const auto lv = as_const_view(logits);
    detail::check_surrogate(call, epi.clip);
    if (!(epi.weight >= 0.0f) || !(epi.weight - epi.weight == 0.0f))
      detail::fail_argument(call, "epilogue.weight", "a finite value >= 0", epi.weight);
    if (!(epi.log_ratio_clamp > 0.0f)) detail::fail_argument(call, "epilogue.log_ratio_clamp", "a value > 0", epi.log_ratio_clamp);
    const auto need = [&](std::string_view arg, const auto& v) {
      if (v.data() == nullptr && lv.size() != 0) detail::fail_argument(call, arg, "a view shaped like the targets", "none");
      detail::check_same_lead(call, arg, v, lv);
      require_device_view(call, arg, v);
    };
    need("epilogue.old_logp", epi.old_logp);
    need("epilogue.advantages", epi.advantages);
    need("epilogue.dlogp", epi.dlogp);
    if (epi.loss.data() != nullptr) need("epilogue.loss", epi.loss);
    require_problem_views(call, p);
    if (p.logits.extent(0) * p.logits.extent(1) == 0) return {};
    const kernels::ppo_rows_epilogue<Clip> e{detail::as_rows2(epi.old_logp), detail::as_rows2(epi.advantages),
                                             detail::as_rows2(epi.dlogp),    detail::as_rows2(epi.loss),
                                             epi.clip,                       epi.weight,
                                             epi.log_ratio_clamp};
    detail::cuda_check(kernels::token_logprobs(p, status_block(), stream(), e), call, "the kernel launch");
    logprob_summary s;
    s.deferred = true;
    return s;
  }

  template <class T, class Idx, class G>
  void token_logprobs_backward(const logprob_backward_problem<T, Idx, G, device_space>& p) const {
    constexpr std::string_view call = "cai::token_logprobs_backward";
    require_device_views(call, "logits", p.logits, "targets", p.targets, "mask", p.mask, "grads.dlogp", p.dlogp,
                         "grads.dentropy", p.dentropy, "grads.saved", p.saved, "dlogits", p.dlogits);
    if (p.logits.extent(0) * p.logits.extent(1) == 0) return;
    detail::cuda_check(kernels::token_logprobs_backward(p, status_block(), stream()), call, "the kernel launch");
  }

  template <class R>
  void gae(const device_gae_problem<R>& p) const {
    run_gae<true>("cai::gae", p);
  }
  template <class R>
  void discounted_returns(const device_gae_problem<R>& p) const {
    run_gae<false>("cai::discounted_returns", p);
  }

 private:
  struct state {
    state(cudaStream_t s, std::shared_ptr<device_allocator> a) : stream(s), alloc(std::move(a)) {}
    state(const state&) = delete;
    state& operator=(const state&) = delete;
    ~state() {
      if (cuda_status_block* p = status.load()) alloc->deallocate(p, sizeof(cuda_status_block), stream);
    }
    cudaStream_t stream;
    std::shared_ptr<device_allocator> alloc;
    std::once_flag status_once;
    std::atomic<cuda_status_block*> status{nullptr};
  };

  template <class T, class Idx>
  static void require_problem_views(std::string_view call, const logprob_problem<T, Idx, device_space>& p) {
    require_device_views(call, "logits", p.logits, "targets", p.targets, "mask", p.mask, "out.logp", p.logp,
                         "out.entropy", p.entropy, "out.saved", p.saved);
  }

  template <bool Values, class R>
  void run_gae(std::string_view call, const device_gae_problem<R>& p) const {
    require_device_views(call, "rewards", p.rewards, "values", p.values, "mask", p.mask, "advantages", p.advantages,
                         "returns", p.returns, "bootstrap_values", p.bootstrap, "cu_seqlens", p.cu_seqlens);
    if (p.rows == 0) return;
    detail::cuda_check(kernels::gae<Values>(p, status_block(), stream()), call, "the kernel launch");
  }

  [[noreturn]] static void throw_problem(const cuda_status_block& h) {
    const auto call_id = static_cast<cuda_call>(h.code >> 8);
    const auto what = static_cast<cuda_problem>(h.code & 0xffu);
    const char* call = call_id == cuda_call::token_logprobs            ? "cai::token_logprobs"
                       : call_id == cuda_call::token_logprobs_backward ? "cai::token_logprobs_backward"
                       : call_id == cuda_call::gae                     ? "cai::gae"
                       : call_id == cuda_call::discounted_returns      ? "cai::discounted_returns"
                                                                       : "cai::cuda";
    const auto where = detail::concat(h.value, " at flat position ", h.index, " (found on the device)");
    switch (what) {
      case cuda_problem::target_out_of_range:
        detail::fail_argument(call, "targets", "token ids in [0, V)", where);
      case cuda_problem::mask_not_binary:
        detail::fail_argument(call, "mask", "values 0 or 1", where);
      case cuda_problem::nonfinite_input:
        detail::fail_argument(call, h.value == 1 ? "values" : h.value == 2 ? "bootstrap_values" : "rewards",
                              "finite values at counted steps", detail::concat("a non-finite value at flat position ",
                                                                               h.index, " (found on the device)"));
      case cuda_problem::bad_offsets:
        detail::fail_argument(call, "cu_seqlens", "offsets from 0 to N, non-decreasing",
                              detail::concat("an invalid range ending at ", h.value, " for sequence ", h.index,
                                             " (found on the device)"));
      default:
        detail::fail<cuda_error>(call, detail::concat("unknown device status code ", h.code));
    }
  }

  std::shared_ptr<state> state_;
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
