// cai/models/bigram.hpp — the smallest in-process language model: a trainable bigram table.
//
// logits(next | prev) = W[prev, :], W of shape (V, V). It satisfies cai::trainable_policy and
// cai::sampling_policy with exact gradients through cai::token_logprobs_backward, and serves as the reference
// model of tests and as the demo model until the embedded transformer lands. Forward and backward run on any
// bulk backend (cai::host, cai::threaded_host) with the same bits.
//
//   cai::models::bigram_lm<cai::threaded_host> lm(256, cai::threaded_host{}, /*seed=*/1);
//   auto h = lm.train_forward(batch, {.entropy = true});
//   lm.backward(std::move(h), {.dlogp = g});  lm.step(0.5);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "../algorithms/logprobs.hpp"
#include "../algorithms/sampling.hpp"
#include "../concepts/backend.hpp"
#include "../concepts/types.hpp"
#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"

namespace cai::models {

template <bulk_backend Backend = host>
class bigram_lm {
 public:
  /// What train_forward computed: the logits of the batch and their per-token outputs, kept alive until backward.
  class forward_handle {
   public:
    tensor_view<const float, 2> logp() const noexcept { return state_->logp.view(); }
    tensor_view<const float, 2> entropy() const noexcept { return state_->entropy.view(); }

   private:
    friend class bigram_lm;
    struct state {
      tensor<std::int32_t, 2> tokens;
      tensor<std::uint8_t, 2> mask;
      tensor<float, 3> logits;
      tensor<float, 2> logp, entropy;
      tensor<float, 3> saved;
      float temperature = 1.0f;
    };
    std::shared_ptr<state> state_;
  };

  /// A V x V table initialised with N(0, init_scale^2) from `seed`.
  explicit bigram_lm(std::int64_t vocab, Backend backend = Backend{}, std::uint64_t seed = 0, float init_scale = 0.02f)
      : backend_(std::move(backend)), vocab_(vocab) {
    if (vocab < 2) detail::fail_argument("cai::models::bigram_lm", "vocab", "a vocabulary of at least 2", vocab);
    weights_ = tensor<float, 2>({vocab, vocab});
    grads_ = tensor<float, 2>({vocab, vocab});
    rng_stream r(seed, 0);
    for (std::int64_t i = 0; i < weights_.size(); ++i) {
      // Box-Muller from two uniforms (deterministic for the seed).
      const double u1 = 1.0 - r.uniform_double(), u2 = r.uniform_double();
      weights_.data()[i] = static_cast<float>(init_scale * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
  }

  std::int64_t vocab_size() const noexcept { return vocab_; }
  tensor_view<float, 2> weights() noexcept { return weights_.view(); }
  tensor_view<const float, 2> weights() const noexcept { return weights_.view(); }
  tensor_view<const float, 2> grads() const noexcept { return grads_.view(); }

  /// Per-token log-probs (B, T) of `batch` (position 0 and padding get 0).
  void log_probs(const token_batch& batch, tensor_view<float, 2> out, float temperature = 1.0f) const {
    auto st = run_forward(batch, forward_request{.entropy = false, .temperature = temperature});
    copy_into(st->logp.view(), out, "out");
  }

  forward_handle train_forward(const token_batch& batch, const forward_request& req) {
    forward_handle h;
    h.state_ = run_forward(batch, req);
    return h;
  }

  /// Accumulates dL/dW from the gradients of the handle's per-token outputs.
  void backward(forward_handle&& h, const per_token_grads& g) {
    if (!h.state_) detail::fail_argument("cai::models::bigram_lm::backward", "handle", "a live forward handle", "a moved-from handle");
    auto st = std::move(h.state_);
    const std::int64_t B = st->tokens.extent(0), T = st->tokens.extent(1), V = vocab_;
    tensor<float, 3> dlogits({B, T, V});
    token_logprobs_backward(backend_, st->logits, st->tokens, st->mask,
                            logprob_grads<2>{.dlogp = g.dlogp, .dentropy = g.dentropy, .saved = st->saved.view()},
                            dlogits.view(), {.temperature = st->temperature});
    // dW[prev] += dlogits[b, t] where prev = tokens[b, t]; rows of W are owned by one chunk each, so the
    // accumulation is race-free and in a fixed order.
    const auto tok = st->tokens.view();
    auto gw = grads_.view();
    const auto dl = dlogits.view();
    parallel_for(backend_, V, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t + 1 < T; ++t) {
          const std::int64_t prev = tok(b, t);
          if (prev < lo || prev >= hi) continue;
          float* row = &gw(prev, 0);
          const float* d = &dl(b, t, 0);
          for (std::int64_t j = 0; j < V; ++j) row[j] += d[j];
        }
    });
  }

  void zero_grad() noexcept {
    for (std::int64_t i = 0; i < grads_.size(); ++i) grads_.data()[i] = 0.0f;
  }
  /// Plain SGD: W -= lr * dW.
  void step(double learning_rate) {
    if (!(learning_rate >= 0.0) || !std::isfinite(learning_rate))
      detail::fail_argument("cai::models::bigram_lm::step", "learning_rate", "a finite value >= 0", learning_rate);
    const auto lr = static_cast<float>(learning_rate);
    for (std::int64_t i = 0; i < weights_.size(); ++i) weights_.data()[i] -= lr * grads_.data()[i];
  }

  /// Samples max_new_tokens after each prompt row (prompts right-padded; mask marks real tokens). Stops a row at
  /// eos_id when given (>= 0). Behaviour log-probs are those of the sampled tokens at the sampling temperature.
  sample_batch sample(const token_batch& prompts, const sampling_params& sp, std::int32_t eos_id = -1) const {
    constexpr std::string_view call = "cai::models::bigram_lm::sample";
    check_sampling_params(call, sp);
    check_batch(prompts, call);
    const std::int64_t B = prompts.tokens.extent(0);
    sample_batch out;
    const auto lengths = start_samples(call, prompts, sp.max_new_tokens, 0, out);
    const std::int64_t T = out.length;
    std::vector<float> z(static_cast<std::size_t>(vocab_));
    for (std::int64_t b = 0; b < B; ++b) {
      std::int64_t len = lengths[static_cast<std::size_t>(b)];
      rng_stream r(derive_seed(sp.seed, static_cast<std::uint64_t>(b)), 0);
      for (std::int32_t k = 0; k < sp.max_new_tokens; ++k) {
        const std::int32_t prev = out.tokens[static_cast<std::size_t>(b * T + len - 1)];
        const float* w = &weights_.view()(prev, 0);
        for (std::int64_t j = 0; j < vocab_; ++j) z[static_cast<std::size_t>(j)] = w[j] / sp.temperature;
        const auto [tok, lp] = draw_token(z, sp, r);
        const auto at = static_cast<std::size_t>(b * T + len);
        out.tokens[at] = tok;
        out.mask[at] = 1;
        out.response[at] = 1;
        out.logp[at] = lp;
        ++len;
        if (tok == eos_id) break;
      }
    }
    return out;
  }

 private:
  void check_batch(const token_batch& batch, std::string_view call) const { check_token_batch(call, batch, vocab_); }

  std::shared_ptr<typename forward_handle::state> run_forward(const token_batch& batch, const forward_request& req) const {
    check_batch(batch, "cai::models::bigram_lm::forward");
    const std::int64_t B = batch.tokens.extent(0), T = batch.tokens.extent(1), V = vocab_;
    auto st = std::make_shared<typename forward_handle::state>();
    st->tokens = tensor<std::int32_t, 2>({B, T});
    st->mask = tensor<std::uint8_t, 2>({B, T});
    const auto scored = batch.loss_mask.empty() ? batch.mask : batch.loss_mask;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) {
        st->tokens(b, t) = batch.mask(b, t) ? batch.tokens(b, t) : 0;
        st->mask(b, t) = static_cast<std::uint8_t>(batch.mask(b, t) && scored(b, t) ? 1 : 0);
      }
    st->logits = tensor<float, 3>({B, T, V});
    const auto w = weights_.view();
    auto lg = st->logits.view();
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) {
        const float* src = &w(st->tokens(b, t), 0);
        float* dst = &lg(b, t, 0);
        for (std::int64_t j = 0; j < V; ++j) dst[j] = src[j];
      }
    st->logp = tensor<float, 2>({B, T});
    st->entropy = tensor<float, 2>(req.entropy ? std::array<std::int64_t, 2>{B, T} : std::array<std::int64_t, 2>{0, 0});
    st->saved = tensor<float, 3>({B, T, 3});
    st->temperature = req.temperature;
    token_logprobs(backend_, st->logits, st->tokens, st->mask,
                   logprob_outputs<2>{.logp = st->logp.view(), .entropy = st->entropy.view(), .saved = st->saved.view()},
                   {.temperature = req.temperature});
    return st;
  }

  static void copy_into(tensor_view<const float, 2> src, tensor_view<float, 2> dst, std::string_view arg) {
    if (dst.extents() != src.extents())
      detail::fail_argument<shape_error>("cai::models::bigram_lm::log_probs", arg, "the shape of batch.tokens",
                                         detail::concat(dst.extent(0), "x", dst.extent(1)));
    for (std::int64_t b = 0; b < src.extent(0); ++b)
      for (std::int64_t t = 0; t < src.extent(1); ++t) dst(b, t) = src(b, t);
  }

  Backend backend_;
  std::int64_t vocab_;
  tensor<float, 2> weights_;
  tensor<float, 2> grads_;
};

}  // namespace cai::models
