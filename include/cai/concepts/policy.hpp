// cai/concepts/policy.hpp — the model, as the algorithms and trainers see it.
//
// policy            scores tokens:  vocab_size() -> int64;  log_probs(const token_batch&, tensor_view<float, 2> out)
//                   writes out[b, t] = log p(tokens[b, t] | tokens[b, < t]) (DESIGN.md alignment; position 0 is 0).
// sampling_policy   a policy that also samples: sample(const token_batch& prompts, const sampling_params&)
//                   -> sample_batch, whose behaviour log-probs equal log_probs() at the same temperature.
// trainable_policy  a policy with a training forward that returns a handle to what it computed:
//                     typename P::forward_handle;
//                     train_forward(const token_batch&, const forward_request&) -> forward_handle
//                     handle.logp() / handle.entropy() -> tensor_view<const float, 2>   (B, T)
//                     backward(forward_handle&&, const per_token_grads&)   accumulates parameter gradients
//                     zero_grad();  step(double learning_rate)
//                   Handles keep two forwards apart (policy and reference, chosen and rejected) and map directly
//                   onto an autograd graph (LibTorch), an in-process model's saved activations, or a fused
//                   hidden-state path.
// Each has a diagnose_*() that static_asserts the requirements one by one with readable messages.
#pragma once

#include <concepts>
#include <cstdint>
#include <utility>

#include "../core/tensor_view.hpp"
#include "types.hpp"

namespace cai {

namespace detail::pol {
template <class P>
concept has_vocab = requires(const P& p) {
  { p.vocab_size() } -> std::convertible_to<std::int64_t>;
};
template <class P>
concept has_log_probs = requires(P& p, const token_batch& b, tensor_view<float, 2> out) { p.log_probs(b, out); };
template <class P>
concept has_sample = requires(P& p, const token_batch& prompts, const sampling_params& sp) {
  { p.sample(prompts, sp) } -> std::same_as<sample_batch>;
};
template <class P>
concept has_handle = requires { typename P::forward_handle; } && std::movable<typename P::forward_handle>;
template <class P>
concept has_train_forward = has_handle<P> && requires(P& p, const token_batch& b, const forward_request& r) {
  { p.train_forward(b, r) } -> std::same_as<typename P::forward_handle>;
};
template <class P>
concept handle_outputs = has_handle<P> && requires(const typename P::forward_handle& h) {
  { h.logp() } -> std::convertible_to<tensor_view<const float, 2>>;
  { h.entropy() } -> std::convertible_to<tensor_view<const float, 2>>;
};
template <class P>
concept has_backward = has_handle<P> && requires(P& p, typename P::forward_handle&& h, const per_token_grads& g) {
  p.backward(std::move(h), g);
};
template <class P>
concept has_optimizer = requires(P& p, double lr) {
  p.zero_grad();
  p.step(lr);
};
}  // namespace detail::pol

template <class P>
concept policy = detail::pol::has_vocab<P> && detail::pol::has_log_probs<P>;

template <class P>
concept sampling_policy = policy<P> && detail::pol::has_sample<P>;

template <class P>
concept trainable_policy = policy<P> && detail::pol::has_train_forward<P> && detail::pol::handle_outputs<P> &&
                           detail::pol::has_backward<P> && detail::pol::has_optimizer<P>;

template <class P>
consteval bool diagnose_policy() {
  static_assert(detail::pol::has_vocab<P>, "cai::policy: missing `vocab_size() const` -> std::int64_t");
  static_assert(detail::pol::has_log_probs<P>,
                "cai::policy: missing `log_probs(const cai::token_batch&, cai::tensor_view<float, 2>)`");
  return policy<P>;
}

template <class P>
consteval bool diagnose_sampling_policy() {
  diagnose_policy<P>();
  static_assert(detail::pol::has_sample<P>,
                "cai::sampling_policy: missing `sample(const cai::token_batch&, const cai::sampling_params&)` -> "
                "cai::sample_batch");
  return sampling_policy<P>;
}

template <class P>
consteval bool diagnose_trainable_policy() {
  diagnose_policy<P>();
  static_assert(detail::pol::has_handle<P>, "cai::trainable_policy: missing movable `typename P::forward_handle`");
  static_assert(detail::pol::has_train_forward<P>,
                "cai::trainable_policy: missing `train_forward(const cai::token_batch&, const cai::forward_request&)` "
                "-> P::forward_handle");
  static_assert(detail::pol::handle_outputs<P>,
                "cai::trainable_policy: forward_handle lacks `logp() const` / `entropy() const` -> "
                "cai::tensor_view<const float, 2>");
  static_assert(detail::pol::has_backward<P>,
                "cai::trainable_policy: missing `backward(P::forward_handle&&, const cai::per_token_grads&)`");
  static_assert(detail::pol::has_optimizer<P>, "cai::trainable_policy: missing `zero_grad()` and `step(double)`");
  return trainable_policy<P>;
}

}  // namespace cai
