// cai/concepts/types.hpp — the plain data types the concepts speak in.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../core/tensor_view.hpp"

namespace cai {

/// One chat turn. role: "system", "user" or "assistant" (others are passed through to the chat template).
struct chat_message {
  std::string role;
  std::string content;
  friend bool operator==(const chat_message&, const chat_message&) = default;
};
using conversation = std::vector<chat_message>;

/// A right-padded token batch: tokens (B, T) and mask (B, T) with 1 on real tokens. `loss_mask`, when present,
/// marks the positions whose log-probs matter (e.g. every assistant span of a multi-turn conversation).
struct token_batch {
  tensor_view<const std::int32_t, 2> tokens;
  tensor_view<const std::uint8_t, 2> mask;
  tensor_view<const std::uint8_t, 2> loss_mask{};
};

/// Sampling settings shared by policies and text generators. top_k = 0 and top_p = 1 disable the filters.
struct sampling_params {
  float temperature = 1.0f;
  std::int32_t top_k = 0;
  float top_p = 1.0f;
  std::int32_t max_new_tokens = 128;
  std::uint64_t seed = 0;
  std::vector<std::string> stop{};
};

/// What a sampling policy returns: the prompt plus completion tokens (right-padded) and, per position, the
/// behaviour log-probs of the sampled tokens at the sampling temperature (0 on prompt and padding positions).
struct sample_batch {
  std::vector<std::int32_t> tokens;    ///< (B, T) row-major
  std::vector<std::uint8_t> mask;      ///< (B, T): 1 on real tokens
  std::vector<std::uint8_t> response;  ///< (B, T): 1 on sampled tokens
  std::vector<float> logp;             ///< (B, T): behaviour log-probs on sampled tokens
  std::int64_t batch = 0, length = 0;
};

/// Which per-token outputs a training forward must produce.
struct forward_request {
  bool entropy = false;
  float temperature = 1.0f;
};

/// Gradients of a loss with respect to the per-token outputs of a training forward (B, T); entropy may be empty.
struct per_token_grads {
  tensor_view<const float, 2> dlogp;
  tensor_view<const float, 2> dentropy{};
};

/// A multiple-choice scoring request for a judge: the log-probability of each option given the prompt.
struct judge_request {
  conversation prompt;
  std::vector<std::string> options;
};

}  // namespace cai
