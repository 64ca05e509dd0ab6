// The same calls on the GPU: a PPO step's hot loops on cai::cuda — GAE over the rollout, the fused log-prob +
// entropy forward with the PPO surrogate's dL/dlogp in the same pass, and its backward to dlogits. Device views
// select the CUDA kernels; nothing synchronises until gpu.synchronize(), which also reports problems the kernels
// found in the data. Exits 77 (ctest: skipped) where no GPU is present.
#include <cai/algorithms/gae.hpp>
#include <cai/algorithms/logprobs.hpp>
#include <cai/kernels/cuda_backend.cuh>

#include <cstdio>
#include <vector>

namespace {
template <class T>
T* device_copy(const std::vector<T>& v) {
  T* p = nullptr;
  cai::detail::cuda_check(cudaMalloc(&p, v.size() * sizeof(T)), "cuda_step", "cudaMalloc");
  cai::detail::cuda_check(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "cuda_step", "cudaMemcpy");
  return p;
}
}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::puts("cai_example_cuda_step: no CUDA device; skipped");
    return 77;
  }
  const std::int64_t B = 4, T = 64, V = 32000;
  std::vector<float> logits_h(static_cast<std::size_t>(B * T * V)), rewards_h(static_cast<std::size_t>(B * T), 0.0f),
      values_h(static_cast<std::size_t>(B * T), 0.1f), old_h(static_cast<std::size_t>(B * T), -10.0f);
  for (std::size_t i = 0; i < logits_h.size(); ++i) logits_h[i] = 0.001f * static_cast<float>(i % 997);
  std::vector<std::int64_t> tokens_h(static_cast<std::size_t>(B * T));
  std::vector<std::uint8_t> mask_h(static_cast<std::size_t>(B * T));
  for (std::int64_t i = 0; i < B * T; ++i) {
    tokens_h[static_cast<std::size_t>(i)] = (i * 7919) % V;
    mask_h[static_cast<std::size_t>(i)] = (i % T) >= 16;  // the response: positions 16..T-1
    if (i % T == T - 1) rewards_h[static_cast<std::size_t>(i)] = 1.0f;  // outcome reward on the last token
  }
  const float* logits = device_copy(logits_h);
  const std::int64_t* tokens = device_copy(tokens_h);
  const std::uint8_t* mask = device_copy(mask_h);
  const float* rewards = device_copy(rewards_h);
  const float* values = device_copy(values_h);
  const float* old_logp = device_copy(old_h);
  float *adv = nullptr, *ret = nullptr, *logp = nullptr, *entropy = nullptr, *dlogp = nullptr, *dlogits = nullptr;
  for (float** p : {&adv, &ret, &logp, &entropy, &dlogp})
    cai::detail::cuda_check(cudaMalloc(p, static_cast<std::size_t>(B * T) * sizeof(float)), "cuda_step", "cudaMalloc");
  cai::detail::cuda_check(cudaMalloc(&dlogits, logits_h.size() * sizeof(float)), "cuda_step", "cudaMalloc");

  const cai::cuda gpu;  // default stream; pass a stream and a caching allocator to share a framework's
  const auto bt = [&](auto* p) { return cai::make_device_view(p, {B, T}); };
  cai::gae(gpu, bt(rewards), bt(values), bt(mask), {.advantages = bt(adv), .returns = bt(ret)},
           {.gamma = 1.0, .lambda = 0.95});
  // Causal layout: logits (B, T, V) predict tokens (B, T) one position later.
  gpu.token_logprobs_ppo(cai::make_device_view(logits, {B, T, V}), bt(tokens), bt(mask),
                         {.logp = bt(logp), .entropy = bt(entropy)},
                         cai::ppo_epilogue<2>{.old_logp = bt(static_cast<const float*>(old_logp)),
                                              .advantages = bt(static_cast<const float*>(adv)),
                                              .dlogp = bt(dlogp),
                                              .weight = 1.0f / static_cast<float>(B * (T - 16))});
  cai::token_logprobs_backward(gpu, cai::make_device_view(logits, {B, T, V}), bt(tokens), bt(mask),
                               {.dlogp = bt(static_cast<const float*>(dlogp))},
                               cai::make_device_view(dlogits, {B, T, V}));
  const cai::cuda_report report = gpu.synchronize();

  std::vector<float> logp_h(static_cast<std::size_t>(B * T)), adv_h(logp_h.size());
  cai::detail::cuda_check(cudaMemcpy(logp_h.data(), logp, logp_h.size() * sizeof(float), cudaMemcpyDeviceToHost), "cuda_step", "cudaMemcpy");
  cai::detail::cuda_check(cudaMemcpy(adv_h.data(), adv, adv_h.size() * sizeof(float), cudaMemcpyDeviceToHost), "cuda_step", "cudaMemcpy");
  std::printf("scored %lld positions (%lld with non-finite logits); logp[0, 16] = %+.4f, advantage[0, 16] = %+.4f\n",
              static_cast<long long>(report.scored_rows), static_cast<long long>(report.nonfinite_rows),
              static_cast<double>(logp_h[16]), static_cast<double>(adv_h[16]));
  for (const void* p : {static_cast<const void*>(logits), static_cast<const void*>(tokens), static_cast<const void*>(mask),
                        static_cast<const void*>(rewards), static_cast<const void*>(values), static_cast<const void*>(old_logp)})
    cudaFree(const_cast<void*>(p));
  for (float* p : {adv, ret, logp, entropy, dlogp, dlogits}) cudaFree(p);
  return 0;
}
