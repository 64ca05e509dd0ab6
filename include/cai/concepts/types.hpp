// cai/concepts/types.hpp — the plain data types the concepts speak in.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
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

/// Checks a token batch for a model: mask and loss_mask have the tokens' shape (cai::shape_error), and every real
/// token is an id in [0, vocab) (ids >= 0 when vocab is 0, i.e. unknown) at a position below max_seq (unchecked when
/// max_seq is 0) — cai::invalid_argument naming "batch.tokens" with the offending id or position. Models call it first,
/// so every policy rejects a bad batch the same way.
inline void check_token_batch(std::string_view call, const token_batch& batch, std::int64_t vocab, std::int64_t max_seq = 0) {
  if (batch.mask.extents() != batch.tokens.extents())
    detail::fail_argument<shape_error>(call, "batch.mask", "the shape of batch.tokens",
                                       detail::concat(batch.mask.extent(0), "x", batch.mask.extent(1)));
  if (!batch.loss_mask.empty() && batch.loss_mask.extents() != batch.tokens.extents())
    detail::fail_argument<shape_error>(call, "batch.loss_mask", "the shape of batch.tokens",
                                       detail::concat(batch.loss_mask.extent(0), "x", batch.loss_mask.extent(1)));
  for (std::int64_t b = 0; b < batch.tokens.extent(0); ++b)
    for (std::int64_t t = 0; t < batch.tokens.extent(1); ++t)
      if (batch.mask(b, t)) {
        const std::int64_t id = batch.tokens(b, t);
        if (id < 0 || (vocab > 0 && id >= vocab))
          detail::fail_argument(call, "batch.tokens", vocab > 0 ? detail::concat("ids in [0, ", vocab, ")") : std::string("ids >= 0"),
                                detail::concat(id, " at ", b, ",", t));
        if (max_seq > 0 && t >= max_seq)
          detail::fail_argument(call, "batch.tokens", detail::concat("rows of at most max_seq = ", max_seq, " tokens"),
                                detail::concat("a real token at position ", t, " of row ", b));
      }
}

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
