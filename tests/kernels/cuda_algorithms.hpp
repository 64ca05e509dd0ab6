// Host-callable entry points of tests/kernels/cuda_algorithms.cu (compiled by nvcc): each copies its inputs to the
// GPU, runs the public cai call with the cai::cuda backend on device views, synchronises and copies back, so that
// tests/kernels/cuda_algorithms.cpp (compiled by g++) can compare with the host path.
#pragma once

#include <cstdint>
#include <vector>

namespace cai_test {

enum class logit_type { f32, bf16, f16 };

/// Logits as raw element bits (fp32 as float bits in `f32`, bf16 / fp16 as 16-bit patterns in `h16`).
struct logprob_case {
  logit_type type = logit_type::f32;
  std::vector<float> f32;
  std::vector<std::uint16_t> h16;
  std::int64_t B = 0;  ///< 0: rows layout logits (N, V); else causal (B, N / B, V)
  std::int64_t N = 0, V = 0;
  std::vector<std::int64_t> targets;
  std::vector<std::uint8_t> mask;  ///< empty: no mask
  float temperature = 1.0f;
  std::int64_t offset = 0;  ///< elements between the device allocation and the logits (misaligned rows)
};

struct logprob_device_result {
  std::vector<float> logp, entropy, saved;
  std::int64_t scored_rows = 0, nonfinite_rows = 0;
  bool deferred = false;
};
logprob_device_result device_logprobs(const logprob_case& c);
/// On ONE backend: runs `bad` (its synchronize must throw cai::invalid_argument; returns -1 if not), then `good`;
/// returns good's scored rows as that backend's next synchronize reports them.
std::int64_t device_logprobs_after_error(const logprob_case& bad, const logprob_case& good);

/// dlogits widened to float; grad_type is the dlogits element type; with_saved passes the forward's statistics.
std::vector<float> device_logprobs_backward(const logprob_case& c, const std::vector<float>& dlogp,
                                            const std::vector<float>& dentropy, bool with_saved, logit_type grad_type);

/// token_logprobs_ppo (rows layout) with the ppo_clip epilogue at token weight `weight`.
struct ppo_epilogue_result {
  std::vector<float> logp, dlogp, loss;
};
ppo_epilogue_result device_logprobs_ppo(const logprob_case& c, const std::vector<float>& old_logp,
                                        const std::vector<float>& advantages, float weight);

struct gae_case {
  std::int64_t B = 0, T = 0;  ///< padded (B, T); packed when cu is given (then B = 1 and T = N)
  std::vector<double> rewards, values, bootstrap;
  std::vector<std::uint8_t> mask;
  std::vector<std::int64_t> cu;
  double gamma = 1.0, lambda = 0.95;
  bool fp32 = false;
  bool returns_only = false;  ///< cai::discounted_returns instead of cai::gae
};
struct gae_device_result {
  std::vector<double> advantages, returns;
};
gae_device_result device_gae(const gae_case& c);

/// cai::batched (kernels/batched.hpp) on the GPU through cai::cuda::policy(): moments of x (B, T) under mask, grpo
/// advantages of scores in groups of G, the sigmoid DPO loss of pairs (pc, pr, rc, rr), and the ppo_clip surrogate
/// (token_mean) of logp / old_logp / adv under mask, and the Bradley-Terry loss of rewards (pc, pr).
struct batched_case {
  std::int64_t B = 0, T = 0, G = 1;
  std::vector<double> x, scores, pc, pr, rc, rr, logp, old_logp, adv;
  std::vector<std::uint8_t> mask;
};
struct batched_device_result {
  std::vector<double> row_mean, row_m2;
  std::vector<std::int64_t> row_count;
  double mean = 0, m2 = 0;
  std::int64_t count = 0;
  std::vector<double> grpo, pair_total, pair_dchosen, surrogate_total, surrogate_dlogp, bt_total, bt_dchosen;
};
batched_device_result device_batched(const batched_case& c);

// Bad input: each throws the cai exception the test expects.
void device_logprobs_with_host_pointer();
void device_logprobs_with_misaligned_logits();

}  // namespace cai_test
