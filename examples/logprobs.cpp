// The README's usage example: per-token log-probs and entropy of a causal LM's logits, and the exact gradient,
// on the host and then on all cores with the same bits.
#include <cai/cai.hpp>

#include <cstdio>
#include <vector>

int main() {
  const std::int64_t B = 2, T = 4, V = 5;  // batch, sequence length, vocabulary
  std::vector<float> logits(B * T * V);     // what a causal LM emits: logits[b, t] predicts tokens[b, t + 1]
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = 0.1f * static_cast<float>(i % 7);
  const std::vector<std::int32_t> tokens{1, 2, 3, 4, 0, 2, 2, 0};
  const std::vector<std::uint8_t> mask{0, 1, 1, 1, 0, 1, 1, 0};  // score the response tokens; row 1 is padded

  std::vector<float> logp(B * T), entropy(B * T);
  const auto summary = cai::token_logprobs(
      cai::host{}, cai::make_view(logits.data(), {B, T, V}), cai::make_view(tokens.data(), {B, T}),
      cai::make_view(mask.data(), {B, T}),
      {.logp = cai::make_view(logp.data(), {B, T}), .entropy = cai::make_view(entropy.data(), {B, T})});

  // Gradient of the mean negative log-likelihood over the scored tokens, on every core.
  std::vector<float> dlogp(B * T), dlogits(B * T * V);
  for (std::size_t i = 0; i < mask.size(); ++i) dlogp[i] = mask[i] ? -1.0f / static_cast<float>(summary.scored_rows) : 0.0f;
  cai::token_logprobs_backward(cai::threaded_host{}, cai::make_view(logits.data(), {B, T, V}),
                               cai::make_view(tokens.data(), {B, T}), cai::make_view(mask.data(), {B, T}),
                               {.dlogp = cai::make_view(dlogp.data(), {B, T})}, cai::make_view(dlogits.data(), {B, T, V}));

  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      std::printf("b=%lld t=%lld token=%d logp=%+.4f entropy=%.4f\n", static_cast<long long>(b),
                  static_cast<long long>(t), tokens[static_cast<std::size_t>(b * T + t)],
                  static_cast<double>(logp[static_cast<std::size_t>(b * T + t)]),
                  static_cast<double>(entropy[static_cast<std::size_t>(b * T + t)]));
  std::printf("scored %lld tokens; dL/dlogits[0, 0, 2] = %+.5f\n", static_cast<long long>(summary.scored_rows),
              static_cast<double>(dlogits[2]));
}
