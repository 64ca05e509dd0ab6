// cai/algorithms/sampling.hpp — drawing the next token from logits, shared by every sampling policy (the embedded
// models and the LibTorch adapter), so that their behaviour log-probs follow one rule.
//
// draw_token(z, sp, rng): z = logits / temperature (V values). The draw is from softmax(z) restricted first to the
// top_k largest (top_k = 0: no limit), then to the smallest prefix of that order whose probability mass — renormalised
// over the top-k tokens, as Hugging Face's and vLLM's top-p after top-k — reaches top_p (top_p = 1: no limit); ties
// keep the lower id first (a stable sort). One uniform number is consumed per draw. Logits whose log-sum-exp is not
// finite (a NaN or +inf logit, or every logit -inf) are cai::invalid_argument naming "z": there is no distribution.
// It returns the token and its log-probability under the UNRESTRICTED softmax(z) — the behaviour log-prob that equals
// a training forward's log-prob at the same temperature (top-k / top-p change which tokens can be drawn, not how the
// policy scores them; the same convention as TRL's and OpenRLHF's rollouts, which score with the full distribution).
// The log-sum-exp is accumulated in double.
//
// check_sampling_params(call, sp) rejects a temperature that is not finite and > 0, max_new_tokens < 0, top_k < 0
// and top_p outside (0, 1] with cai::invalid_argument naming the field.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "../concepts/types.hpp"
#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/rng.hpp"

namespace cai {

inline void check_sampling_params(std::string_view call, const sampling_params& sp) {
  if (!(sp.temperature > 0.0f) || !std::isfinite(sp.temperature))
    detail::fail_argument(call, "temperature", "a finite value > 0", sp.temperature);
  if (sp.max_new_tokens < 0) detail::fail_argument(call, "max_new_tokens", "a value >= 0", sp.max_new_tokens);
  if (sp.top_k < 0) detail::fail_argument(call, "top_k", "a value >= 0", sp.top_k);
  if (!(sp.top_p > 0.0f && sp.top_p <= 1.0f)) detail::fail_argument(call, "top_p", "a value in (0, 1]", sp.top_p);
}

/// Starts the sample_batch of a sampling policy: (B, Tp + max_new_tokens) with each prompt row's real tokens moved to
/// the front (mask 1, response 0, logp 0; the rest 0). Returns each row's prompt length, with max_seq > 0 checked
/// (prompt length + max_new_tokens <= max_seq, else cai::invalid_argument naming "max_new_tokens"); a row without
/// real tokens is cai::invalid_argument naming "prompts". The prompts' shapes must already be checked.
inline std::vector<std::int64_t> start_samples(std::string_view call, const token_batch& prompts, std::int32_t max_new_tokens,
                                               std::int64_t max_seq, sample_batch& out) {
  const std::int64_t B = prompts.tokens.extent(0), Tp = prompts.tokens.extent(1), T = Tp + max_new_tokens;
  out.batch = B;
  out.length = T;
  const auto n = static_cast<std::size_t>(B * T);
  out.tokens.assign(n, 0);
  out.mask.assign(n, 0);
  out.response.assign(n, 0);
  out.logp.assign(n, 0.0f);
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(B), 0);
  for (std::int64_t b = 0; b < B; ++b) {
    std::int64_t len = 0;
    for (std::int64_t t = 0; t < Tp; ++t)
      if (prompts.mask(b, t)) {
        out.tokens[static_cast<std::size_t>(b * T + len)] = prompts.tokens(b, t);
        out.mask[static_cast<std::size_t>(b * T + len)] = 1;
        ++len;
      }
    if (len == 0) detail::fail_argument(call, "prompts", "at least one real token per row", detail::concat("an empty row ", b));
    if (max_seq > 0 && len + max_new_tokens > max_seq)
      detail::fail_argument(call, "max_new_tokens", detail::concat("prompt length + max_new_tokens <= max_seq = ", max_seq),
                            detail::concat(len, " + ", max_new_tokens, " in row ", b));
    lengths[static_cast<std::size_t>(b)] = len;
  }
  return lengths;
}

/// Draws one token from softmax(z) restricted by top-k / top-p; see the header comment.
inline std::pair<std::int32_t, float> draw_token(std::span<const float> z, const sampling_params& sp, rng_stream& r) {
  const auto V = static_cast<std::int64_t>(z.size());
  if (V == 0) detail::fail_argument("cai::draw_token", "z", "at least one logit", "none");
  softmax_state<double> st;
  for (float v : z) st.push(v);
  const double lse = st.lse();
  if (!std::isfinite(lse))
    detail::fail_argument("cai::draw_token", "z", "logits with a finite log-sum-exp (no NaN or +inf, not all -inf)", lse);
  std::vector<std::int32_t> order(static_cast<std::size_t>(V));
  for (std::int64_t j = 0; j < V; ++j) order[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j);
  const auto zi = [&](std::int64_t k) { return static_cast<double>(z[static_cast<std::size_t>(order[static_cast<std::size_t>(k)])]); };
  std::int64_t keep = V;
  if (sp.top_k > 0 || sp.top_p < 1.0f) {
    std::stable_sort(order.begin(), order.end(),
                     [&](std::int32_t a, std::int32_t b) { return z[static_cast<std::size_t>(a)] > z[static_cast<std::size_t>(b)]; });
    if (sp.top_k > 0) keep = std::min<std::int64_t>(keep, sp.top_k);
    if (sp.top_p < 1.0f) {
      double kept = 1.0;  // the top-k mass, so that top-p measures the renormalised distribution
      if (keep < V) {
        kept = 0.0;
        for (std::int64_t k = 0; k < keep; ++k) kept += std::exp(zi(k) - lse);
      }
      double mass = 0;
      std::int64_t k = 0;
      while (k < keep) {
        mass += std::exp(zi(k) - lse);
        ++k;
        if (mass >= sp.top_p * kept) break;
      }
      keep = k;
    }
  }
  double total = 0;
  for (std::int64_t k = 0; k < keep; ++k) total += std::exp(zi(k) - lse);
  double u = r.uniform_double() * total;
  std::int32_t pick = order[static_cast<std::size_t>(keep - 1)];
  for (std::int64_t k = 0; k < keep; ++k) {
    u -= std::exp(zi(k) - lse);
    if (u < 0) {
      pick = order[static_cast<std::size_t>(k)];
      break;
    }
  }
  return {pick, static_cast<float>(static_cast<double>(z[static_cast<std::size_t>(pick)]) - lse)};
}

}  // namespace cai
