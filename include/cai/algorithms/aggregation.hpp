// cai/algorithms/aggregation.hpp — how per-token losses become one number (loss aggregation modes).
//
// Every mode is a per-row weight w_b, loss = sum_b w_b sum_t mask_bt l_bt, so dloss/dl_bt = w_b mask_bt:
//   token_mean               w_b = 1 / N                 N = counted tokens (or global_tokens)
//   seq_mean_token_sum       w_b = 1 / S                 S = rows with >= 1 counted token (or global_seqs)
//   seq_mean_token_mean      w_b = 1 / (S n_b)           n_b = counted tokens of row b
//   seq_mean_token_sum_norm  w_b = 1 / (S norm)          norm = a constant length (Dr.GRPO's L_max; default the
//                                                        padded width T, or the longest packed sequence)
// Sources: verl verl/trainer/ppo/core_algos.py agg_loss (token-mean, seq-mean-token-sum, seq-mean-token-mean,
// seq-mean-token-sum-norm; verl's sum-norm divides by the length only and leaves the sequence mean to its trainer's
// scaling); TRL grpo_trainer.py loss_type bnpo (= token_mean), grpo (= seq_mean_token_mean), dr_grpo (=
// seq_mean_token_sum_norm with max_completion_length), dapo (= token_mean with the global count); Liu et al. 2025
// (Dr.GRPO) on the length bias of per-sequence normalisation (trl #3021). TRL's grpo and dr_grpo divide by the
// batch size B, fully masked rows included; S here counts rows with tokens (verl) — pass global_seqs = B for TRL's.
// Gradient accumulation: give the whole step's counts (global_tokens / global_seqs, summed over micro-batches and
// ranks) and the micro-batch losses add up to the full-batch loss exactly. Rows without counted tokens contribute 0
// in every mode (verl's seq-mean-token-mean would divide 0 by 1e-8 there).
#pragma once

#include <cstdint>
#include <string_view>
#include <type_traits>

#include "../core/config.hpp"

namespace cai::agg {

struct token_mean {
  static constexpr std::string_view name = "token-mean";
  double global_tokens = 0.0;  ///< > 0: divide by this count instead of the micro-batch's
};
struct seq_mean_token_sum {
  static constexpr std::string_view name = "seq-mean-token-sum";
  double global_seqs = 0.0;
};
struct seq_mean_token_mean {
  static constexpr std::string_view name = "seq-mean-token-mean";
  double global_seqs = 0.0;
};
struct seq_mean_token_sum_norm {
  static constexpr std::string_view name = "seq-mean-token-sum-norm";
  double norm = 0.0;  ///< > 0: the constant length; 0: the padded width
  double global_seqs = 0.0;
};

/// Run-time mode (config files): one type whose weight switches on the mode.
struct any {
  enum class mode : std::uint8_t { token_mean, seq_mean_token_sum, seq_mean_token_mean, seq_mean_token_sum_norm };
  mode m = mode::token_mean;
  double global = 0.0;  ///< global_tokens or global_seqs
  double norm = 0.0;
};

/// The batch counts a weight needs.
struct totals {
  double tokens = 0.0;     ///< counted tokens in the batch
  double sequences = 0.0;  ///< rows with >= 1 counted token
  double width = 0.0;      ///< padded width T (longest packed sequence)
};

namespace detail {
CAI_HD inline double inv_or_zero(double x) noexcept { return x > 0.0 ? 1.0 / x : 0.0; }
CAI_HD inline double pick(double global, double local) noexcept { return global > 0.0 ? global : local; }
}  // namespace detail

/// Weight of every counted token of a row with n counted tokens.
CAI_HD inline double row_weight(const token_mean& a, std::int64_t n, const totals& t) noexcept {
  return n > 0 ? detail::inv_or_zero(detail::pick(a.global_tokens, t.tokens)) : 0.0;
}
CAI_HD inline double row_weight(const seq_mean_token_sum& a, std::int64_t n, const totals& t) noexcept {
  return n > 0 ? detail::inv_or_zero(detail::pick(a.global_seqs, t.sequences)) : 0.0;
}
CAI_HD inline double row_weight(const seq_mean_token_mean& a, std::int64_t n, const totals& t) noexcept {
  return n > 0 ? detail::inv_or_zero(detail::pick(a.global_seqs, t.sequences) * static_cast<double>(n)) : 0.0;
}
CAI_HD inline double row_weight(const seq_mean_token_sum_norm& a, std::int64_t n, const totals& t) noexcept {
  return n > 0 ? detail::inv_or_zero(detail::pick(a.global_seqs, t.sequences) * (a.norm > 0.0 ? a.norm : t.width)) : 0.0;
}
CAI_HD inline double row_weight(const any& a, std::int64_t n, const totals& t) noexcept {
  switch (a.m) {
    case any::mode::token_mean: return row_weight(token_mean{a.global}, n, t);
    case any::mode::seq_mean_token_sum: return row_weight(seq_mean_token_sum{a.global}, n, t);
    case any::mode::seq_mean_token_mean: return row_weight(seq_mean_token_mean{a.global}, n, t);
    default: return row_weight(seq_mean_token_sum_norm{a.norm, a.global}, n, t);
  }
}

/// An aggregation mode: a per-row weight from the row's count and the batch totals.
template <class A>
concept aggregation = requires(const A& a, std::int64_t n, const totals& t) {
  { row_weight(a, n, t) } -> std::same_as<double>;
};

/// Checks the mode's parameters (finite, >= 0); returns the name of the first bad one or an empty view.
template <aggregation A>
std::string_view bad_parameter(const A& a) noexcept {
  auto bad = [](double x) { return !(x >= 0.0) || x == __builtin_inf(); };
  if constexpr (std::is_same_v<A, token_mean>) return bad(a.global_tokens) ? "global_tokens" : "";
  else if constexpr (std::is_same_v<A, seq_mean_token_sum_norm>) return bad(a.norm) ? "norm" : bad(a.global_seqs) ? "global_seqs" : "";
  else if constexpr (std::is_same_v<A, any>) return bad(a.norm) ? "norm" : bad(a.global) ? "global" : "";
  else return bad(a.global_seqs) ? "global_seqs" : "";
}

}  // namespace cai::agg
