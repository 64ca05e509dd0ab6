// cai/algorithms/wpo.hpp — WPO pair weights (Zhou et al. 2024, "WPO: Enhancing RLHF with Weighted Preference
// Optimization", arXiv 2406.11827, eq. 2; TRL trl/trainer/dpo_trainer.py use_weighting).
//
// The weight of a pair is how likely the current policy is to have produced both completions itself, normalised
// per token by the policy's own peakedness:
//   w(y) = exp( (1/|y|) sum_t [ log p(y_t | .) - log sum_v p(v | .)^2 ] ),     W_i = w(yc_i) w(yr_i)
// constants for the loss (detached; pass them as cai::dpo_batch::weights). TRL's current form (no clamp at 1).
//   log_sum_sq_probs   per position, log sum_v p_v^2 = lse(2 z) - 2 lse(z) from the logits, in one pass per term,
//                      fp32 accumulation; layouts as cai::token_logprobs: rows (N, V) -> (N), or causal
//                      (B, T, V) -> (B, T) where position t reads logits[b, t - 1] and position 0 is 0.
//   wpo_weights        W_i from the per-token log-probs and log_sum_sq of both completions and their masks
//                      ((B, T) each side; a completion without counted tokens has w = 1).
// Rows with NaN or +inf logits are rejected (cai::invalid_argument naming 'logits' and the row).
//
//   cai::log_sum_sq_probs(cai::host{}, logits, mask, lss);
//   cai::wpo_weights(cai::host{}, {logp_c, lss_c, mask_c}, {logp_r, lss_r, mask_r}, weights);
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "dispatch.hpp"
#include "logprobs.hpp"
#include "sequences.hpp"

namespace cai {

template <class T>
struct lss_problem {
  tensor_view<const T, 3> logits;               // (B, R, V)
  tensor_view<const std::uint8_t, 2> mask;      // (B, R + shift) or empty
  tensor_view<float, 2> out;                    // (B, R + shift)
  std::int64_t shift = 0;
};

namespace generic {

template <bulk_backend B, class T>
std::int64_t log_sum_sq_probs(const B& b, const lss_problem<T>& p) {
  const std::int64_t Bn = p.logits.extent(0), rows = p.logits.extent(1), V = p.logits.extent(2);
  return chunked_reduce(
      b, Bn * rows, 16, std::int64_t{-1},
      [&](std::int64_t i0, std::int64_t i1) {
        std::int64_t bad = -1;
        for (std::int64_t i = i0; i < i1; ++i) {
          const std::int64_t bb = i / rows, r = i % rows, pos = r + p.shift;
          if (p.shift == 1 && r == 0) p.out(bb, 0) = 0.0f;
          if (pos >= p.out.extent(1)) continue;
          if (p.mask.data() && !p.mask(bb, pos)) {
            p.out(bb, pos) = 0.0f;
            continue;
          }
          const T* z = &p.logits(bb, r, 0);
          const float l1 = detail::row_softmax_state(z, V, 1.0f).lse(), l2 = detail::row_softmax_state(z, V, 2.0f).lse();
          if (!std::isfinite(l1) || !std::isfinite(l2)) bad = bad < 0 ? i : bad;
          p.out(bb, pos) = l2 - 2.0f * l1;
        }
        return bad;
      },
      [](std::int64_t a, std::int64_t c) { return a >= 0 ? a : c; });
}

}  // namespace generic

CAI_DETAIL_DISPATCH(log_sum_sq_probs)

template <class R>
struct wpo_side {
  tensor_view<const R, 2> logp{};        ///< (B, T) per-token log-probs of the completion
  tensor_view<const R, 2> log_sum_sq{};  ///< (B, T) from cai::log_sum_sq_probs
  detail::mask_view2 mask{};             ///< (B, T) completion tokens
};

namespace detail {

struct log_sum_sq_probs_fn {
  template <backend Bk, viewable L, class M>
    requires logit_element<element_of_t<L>> && (rank_of_v<L> == 2 || rank_of_v<L> == 3)
  void operator()(const Bk& b, const L& logits_in, const M& mask_in, tensor_view<float, rank_of_v<L> - 1> out) const {
    constexpr std::string_view call = "cai::log_sum_sq_probs";
    constexpr std::size_t R = rank_of_v<L>;
    const auto logits = as_const_view(logits_in);
    check_common(call, logits, 1.0f);
    if (!out.data() && !logits.empty()) fail_argument(call, "out", "an output view", "none");
    check_same_lead(call, "out", out, logits);
    const auto mask = mask_view<R - 1, host_space>(mask_in);
    if (mask.data()) check_same_lead(call, "mask", mask, logits);
    const auto m2 = as_rows2(mask);
    for (std::int64_t i = 0; i < m2.extent(0); ++i)
      for (std::int64_t t = 0; t < m2.extent(1); ++t)
        if (m2(i, t) > 1) fail_argument(call, "mask", "values 0 or 1", concat(int(m2(i, t)), " at ", i, ",", t));
    const lss_problem<element_of_t<L>> p{as_rows3(logits), m2, as_rows2(out), R == 3 ? 1 : 0};
    const std::int64_t bad = log_sum_sq_probs_cpo::dispatch(b, p);
    if (bad >= 0)
      fail_argument(call, "logits", "finite values (and not all -inf) in every scored row",
                    R == 3 ? concat("NaN or inf at sequence ", bad / p.logits.extent(1), ", position ", bad % p.logits.extent(1))
                           : concat("NaN or inf in row ", bad));
  }
};

template <class R>
double wpo_side_weight(const wpo_side<R>& s, std::int64_t i) {
  double acc = 0.0;
  std::int64_t n = 0;
  for (std::int64_t t = 0; t < s.logp.extent(1); ++t) {
    if (s.mask.data() && !s.mask(i, t)) continue;
    acc += static_cast<double>(s.logp(i, t)) - static_cast<double>(s.log_sum_sq(i, t));
    ++n;
  }
  return n > 0 ? std::exp(acc / static_cast<double>(n)) : 1.0;
}

struct wpo_weights_fn {
  /// W_i = w(chosen_i) w(rejected_i); see the header comment.
  template <backend Bk, class R>
    requires token_real<R>
  void operator()(const Bk&, const wpo_side<R>& chosen, const wpo_side<R>& rejected, tensor_view<R, 1> out) const {
    constexpr std::string_view call = "cai::wpo_weights";
    const auto check = [&](const wpo_side<R>& s, std::string_view side) {
      const std::string lp = concat(side, ".logp"), ls = concat(side, ".log_sum_sq"), mk = concat(side, ".mask");
      if (!s.logp.data() && !s.logp.empty()) fail_argument(call, lp, "a (B,T) view", "none");
      require_row_contiguous(call, lp, s.logp);
      require_like(call, ls, s.log_sum_sq, lp, s.logp);
      if (s.mask.data()) require_like(call, mk, s.mask, lp, s.logp);
      const row_layout L{s.logp.extent(0), s.logp.extent(1), nullptr};
      check_mask_values(call, s.mask, L, mk);
      check_finite_tokens(call, lp, s.logp, s.mask, L);
      check_finite_tokens(call, ls, s.log_sum_sq, s.mask, L);
    };
    check(chosen, "chosen");
    check(rejected, "rejected");
    const std::int64_t n = chosen.logp.extent(0);
    if (rejected.logp.extent(0) != n)
      fail_argument<shape_error>(call, "rejected.logp", concat("as many sequences as chosen.logp (", n, ")"), rejected.logp.extent(0));
    if (!out.data() && n > 0) fail_argument(call, "out", "an output view", "none");
    require_per_row(call, "out", out, n);
    for (std::int64_t i = 0; i < n; ++i) out(i) = static_cast<R>(wpo_side_weight(chosen, i) * wpo_side_weight(rejected, i));
  }
};

}  // namespace detail

/// log sum_v p_v^2 per position from logits. See the header comment.
inline constexpr detail::log_sum_sq_probs_fn log_sum_sq_probs{};
/// WPO pair weights. See the header comment.
inline constexpr detail::wpo_weights_fn wpo_weights{};

}  // namespace cai
