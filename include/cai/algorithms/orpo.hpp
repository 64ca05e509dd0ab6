// cai/algorithms/orpo.hpp — ORPO: odds-ratio preference optimisation, reference-free, with its SFT term.
//
// Hong et al. 2024, arXiv 2403.07691; TRL trl/experimental/orpo/orpo_trainer.py odds_ratio_loss. Per pair i, with
// a = the chosen and b = the rejected completion's MEAN token log-prob (cai::sequence_logps with seq_reduce::mean):
//   L_i   = (a - b) - (log(1 - e^a) - log(1 - e^b))         the log odds ratio, log1mexp evaluated stably
//   loss  = NLL - beta * mean_i log s(L_i)
//   NLL   = -sum_i n_i / sum_i k_i                           n_i = summed log-probs of the tokens the SFT term counts
//                                                            (TRL: prompt and chosen response), k_i their count
// Gradients, in a form that stays finite as a -> 0 (the chosen completion certain; trl #2564 is the NaN that the
// naive log1p(-exp(a)) gives there): with A = 1 - e^a, B = 1 - e^b and n the batch size,
//   d loss / d a_i = -beta / (n (A + e^(a-b) B)),    d loss / d b_i = beta A / (n B (A + e^(a-b) B)),
//   d loss / d n_i = -1 / sum_i k_i
// Log-probs must be <= 0. a = b gives L = 0 exactly; a = b = 0 (both completions certain, where the odds ratio has
// no limit) has gradient 0 by definition. b = 0 with a < 0 gives L = -inf and an infinite loss: the honest value.
// Metrics (TRL): rewards chosen = mean beta a, rejected = mean beta b, margin, accuracy; and nll, mean log s(L)
// ("log_odds_ratio"), mean L ("log_odds_chosen").
//
//   auto r = cai::orpo_loss(cai::host{}, cai::orpo{.beta = 0.1}, {.chosen = a, .rejected = b, .nll = {sums, counts}}, grads);
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/tensor_view.hpp"
#include "dispatch.hpp"
#include "preference.hpp"
#include "sequences.hpp"

namespace cai {

struct orpo {
  double beta = 0.1;  ///< the paper's lambda (TRL beta)
};

template <class R>
struct orpo_batch {
  tensor_view<const R, 1> chosen{}, rejected{};  ///< (B) mean token log-probs (<= 0)
  nll_inputs<R> nll{};                           ///< the SFT term's summed log-probs and token counts
};

template <class R>
struct orpo_grads {
  tensor_view<R, 1> chosen{}, rejected{};  ///< d loss / d mean log-prob
  tensor_view<R, 1> nll_logp{};            ///< d loss / d n_i
  tensor_view<R, 1> losses{};              ///< (B) -beta log s(L_i) (the per-pair odds-ratio term)
};

struct orpo_result {
  double loss = 0.0;
  pair_metrics metrics{};
  double nll = 0.0;
  double log_odds_ratio = 0.0;  ///< mean log s(L)
  double log_odds_chosen = 0.0;  ///< mean L
};

template <class R>
struct orpo_problem {
  orpo_batch<R> in;
  orpo_grads<R> out;
};

namespace detail {

struct odds_point {
  double L, loss, da, db;  // loss = -beta log s(L) (before the batch mean), da, db its derivatives
};

/// The odds-ratio term of one pair; CAI_HD, shared by all backends.
CAI_HD inline odds_point odds_ratio_point(double a, double b, double beta) noexcept {
  if (a == 0.0 && b == 0.0) return {0.0, -beta * log_sigmoid(0.0), 0.0, 0.0};
  const double A = -std::expm1(a), B = -std::expm1(b);
  const double L = a == b ? 0.0 : (a - b) - (log1mexp(a) - log1mexp(b));
  const double den = A + std::exp(a - b) * B;  // (1 + e^L) A
  return {L, -beta * log_sigmoid(L), -beta / den, beta * A / (B * den)};
}

}  // namespace detail

namespace generic {

template <bulk_backend Bk, class R>
orpo_result orpo_loss(const Bk&, const orpo& spec, const orpo_problem<R>& p) {
  const std::int64_t n = p.in.chosen.extent(0);
  orpo_result res;
  if (n == 0) return res;
  const double inv = 1.0 / static_cast<double>(n);
  const auto nll = detail::batch_nll(p.in.nll, n);
  double total = 0.0, ls = 0.0, lo = 0.0;
  pair_metrics_sum ms;
  for (std::int64_t i = 0; i < n; ++i) {
    const double a = static_cast<double>(p.in.chosen(i)), b = static_cast<double>(p.in.rejected(i));
    const detail::odds_point o = detail::odds_ratio_point(a, b, spec.beta);
    total += o.loss;
    ls += log_sigmoid(o.L);
    lo += o.L;
    ms.add(spec.beta * a, spec.beta * b);
    if (p.out.losses.data()) p.out.losses(i) = static_cast<R>(o.loss);
    if (p.out.chosen.data()) p.out.chosen(i) = static_cast<R>(o.da * inv);
    if (p.out.rejected.data()) p.out.rejected(i) = static_cast<R>(o.db * inv);
    if (p.out.nll_logp.data()) p.out.nll_logp(i) = static_cast<R>(nll.dlogp);
  }
  res.nll = nll.value;
  res.loss = nll.value + total * inv;
  res.metrics = ms.finish();
  res.log_odds_ratio = ls * inv;
  res.log_odds_chosen = lo * inv;
  return res;
}

}  // namespace generic

CAI_DETAIL_DISPATCH_CONFIGURED(orpo_loss)

namespace detail {

template <class R>
void check_log_probs(std::string_view call, std::string_view name, const tensor_view<const R, 1>& v) {
  for (std::int64_t i = 0; i < v.extent(0); ++i)
    if (!(v(i) <= R(0))) fail_argument(call, name, "finite log-probs <= 0", concat(v(i), " at ", i));
}

struct orpo_loss_fn {
  template <backend Bk, class R>
    requires token_real<R>
  orpo_result operator()(const Bk& b, const orpo& spec, const orpo_batch<R>& in, const orpo_grads<R>& out = {}) const {
    constexpr std::string_view call = "cai::orpo_loss";
    require_positive(call, "orpo.beta", spec.beta);
    check_pair_values(call, in.chosen, in.rejected);
    check_log_probs(call, "chosen", in.chosen);
    check_log_probs(call, "rejected", in.rejected);
    const std::int64_t n = in.chosen.extent(0);
    check_nll_inputs(call, in.nll, n, true);
    check_pair_grad(call, "grads.chosen", out.chosen, n);
    check_pair_grad(call, "grads.rejected", out.rejected, n);
    check_pair_grad(call, "grads.nll_logp", out.nll_logp, n);
    check_pair_grad(call, "grads.losses", out.losses, n);
    return orpo_loss_cpo::dispatch(b, spec, orpo_problem<R>{in, out});
  }
};

}  // namespace detail

/// ORPO loss, metrics and exact gradients. See the header comment.
inline constexpr detail::orpo_loss_fn orpo_loss{};

}  // namespace cai
