// cai/algorithms/safe_rlhf.hpp — Safe-RLHF: the cost-model loss, the PPO-Lagrangian multiplier, and the combined
// advantage and reward-shaping baseline, for one or K constraints.
//
// Cost model (Dai et al. 2023, arXiv 2310.12773; safe-rlhf safe_rlhf/values/cost/trainer.py CostTrainer.loss). A pair
// holds the safer response (cost c_l, should be lower) and the unsafer one (c_h); each response is labelled safe or
// unsafe, and its cost sign is sigma = +1 for unsafe, -1 for safe, so that -log s(sigma c) pushes a safe response's
// cost below 0 and an unsafe one's above 0:
//   sequence-wise  loss = mean_i [ -ls(c_h - c_l) - ls(sigma_l c_l) - ls(sigma_h c_h) ] + l2 mean over the 2B costs c^2
//   token-wise     per pair, on the slice [first differing token id, later last counted position] (as the token-wise
//                  Bradley-Terry loss of preference.hpp): mean_t -ls(h_t - l_t) + mean_t -ls(sigma_l l_t)
//                  + mean_t -ls(sigma_h h_t) + l2 mean over the 2k slice values of x^2; loss = mean_i
// Metrics: accuracy = mean 1[c_h > c_l] (end costs), sign accuracy = mean over both responses of 1[sigma c > 0].
//
// PPO-Lagrangian (safe-rlhf safe_rlhf/algorithms/ppo_lag/trainer.py): the multiplier lambda = e^(log_lambda), a
// learned parameter. Each update takes J_c = the mean episode cost over a moving window of the latest episodes and
// steps the lambda-loss -(J_c - d) lambda by SGD on log_lambda:
//   log_lambda <- log_lambda + lr (J_c - d) lambda,   then log_lambda <= log(lambda_max) when lambda_max is set
// skipped while fewer than update_delay updates have been requested (safe-rlhf lambda_update_delay_steps). Defaults
// are safe-rlhf's: lambda_init 1, lr 0.1, threshold d = 0, window 128, no cap (its scripts use lambda_max 5).
// For K constraints each has its own multiplier, threshold and window. The actor's advantage (lambda detached):
//   A = (A_r - sum_k lambda_k A_c,k) / (1 + sum_k lambda_k)
// and the fixed reward-shaping baseline (safe_rlhf/algorithms/ppo_reward_shaping): score' = R - sum_k lambda_k C_k.
// Per-token costs for the cost critic use cai::token_rewards with the KL entering the cost with the opposite sign:
// cai::token_costs below.
//
//   auto r = cai::cost_model_loss(cai::host{}, batch, grads, {.l2_coef = 0.001});
//   cai::lagrange_multiplier lag({.lambda_max = 5.0});  lag.record(episode_costs);  lag.update();
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/tensor_view.hpp"
#include "dispatch.hpp"
#include "preference.hpp"
#include "rewards.hpp"
#include "sequences.hpp"

namespace cai {

// ----- the cost model --------------------------------------------------------------------------------------------

template <class R>
struct cost_pair_batch {
  tensor_view<const R, 1> safer{}, unsafer{};             ///< (B) end costs c_l, c_h
  tensor_view<const std::uint8_t, 1> safer_is_safe{};     ///< (B) 1 = the safer response is safe
  tensor_view<const std::uint8_t, 1> unsafer_is_safe{};   ///< (B) 1 = the unsafer response is safe
};

template <class R>
struct cost_pair_grads {
  tensor_view<R, 1> safer{}, unsafer{}, losses{};
};

struct cost_model_options {
  double l2_coef = 0.0;  ///< safe-rlhf `regularization` (0.001 in its scripts)
};

struct cost_model_result {
  double loss = 0.0;
  double accuracy = 0.0;       ///< mean 1[c_h > c_l]
  double sign_accuracy = 0.0;  ///< mean over both responses of 1[sigma c > 0]
  double safer_mean = 0.0, unsafer_mean = 0.0;
  std::int64_t count = 0;
};

template <class R>
struct cost_problem {
  cost_pair_batch<R> in;
  cost_pair_grads<R> out;
  double l2 = 0.0;
};

namespace detail {
CAI_HD inline double cost_sign(bool is_safe) noexcept { return is_safe ? -1.0 : 1.0; }

/// Accumulates a cost-model batch's loss and metrics in index order (shared by both forms).
struct cost_metrics_sum {
  double total = 0.0, acc = 0.0, sacc = 0.0, sl = 0.0, sh = 0.0;
  /// Pair loss l; end costs cl (safer), ch (unsafer) with their signs gl, gh.
  void add(double l, double cl, double ch, double gl, double gh) noexcept {
    total += l;
    acc += ch > cl ? 1.0 : 0.0;
    sacc += (gl * cl > 0.0 ? 0.5 : 0.0) + (gh * ch > 0.0 ? 0.5 : 0.0);
    sl += cl;
    sh += ch;
  }
  cost_model_result finish(std::int64_t n) const noexcept {
    cost_model_result r;
    r.count = n;
    if (n == 0) return r;
    const double inv = 1.0 / static_cast<double>(n);
    r.loss = total * inv;
    r.accuracy = acc * inv;
    r.sign_accuracy = sacc * inv;
    r.safer_mean = sl * inv;
    r.unsafer_mean = sh * inv;
    return r;
  }
};
}  // namespace detail

namespace generic {

template <bulk_backend B, class R>
cost_model_result cost_model_loss(const B&, const cost_problem<R>& p) {
  const std::int64_t n = p.in.safer.extent(0);
  if (n == 0) return detail::cost_metrics_sum{}.finish(0);
  const double inv = 1.0 / static_cast<double>(n);
  detail::cost_metrics_sum sum;
  for (std::int64_t i = 0; i < n; ++i) {
    const double cl = static_cast<double>(p.in.safer(i)), ch = static_cast<double>(p.in.unsafer(i));
    const double gl = detail::cost_sign(p.in.safer_is_safe(i) != 0), gh = detail::cost_sign(p.in.unsafer_is_safe(i) != 0);
    const double l = -log_sigmoid(ch - cl) - log_sigmoid(gl * cl) - log_sigmoid(gh * ch) + p.l2 * 0.5 * (cl * cl + ch * ch);
    const double dpair = -sigmoid(cl - ch);  // d/dc_h of -ls(c_h - c_l)
    const double dl = -dpair - gl * sigmoid(-gl * cl) + p.l2 * cl;
    const double dh = dpair - gh * sigmoid(-gh * ch) + p.l2 * ch;
    sum.add(l, cl, ch, gl, gh);
    if (p.out.losses.data()) p.out.losses(i) = static_cast<R>(l);
    if (p.out.safer.data()) p.out.safer(i) = static_cast<R>(dl * inv);
    if (p.out.unsafer.data()) p.out.unsafer(i) = static_cast<R>(dh * inv);
  }
  return sum.finish(n);
}

}  // namespace generic

CAI_DETAIL_DISPATCH(cost_model_loss)

// Token-wise: the unsafer response plays "chosen" (the higher value) of preference.hpp's slices.
template <class R>
struct cost_token_problem {
  scored_tokens<R> unsafer, safer;
  tensor_view<const std::uint8_t, 1> safer_is_safe, unsafer_is_safe;
  const token_slice* slices = nullptr;
  token_pair_grads<R> out;  // .chosen = d/d unsafer costs, .rejected = d/d safer costs
  double l2 = 0.0;
};

namespace generic {

template <bulk_backend B, class R>
cost_model_result cost_model_tokenwise_loss(const B&, const cost_token_problem<R>& p) {
  const std::int64_t n = p.unsafer.scores.extent(0), T = p.unsafer.scores.extent(1);
  if (n == 0) return detail::cost_metrics_sum{}.finish(0);
  const double inv = 1.0 / static_cast<double>(n);
  detail::cost_metrics_sum sum;
  for (std::int64_t i = 0; i < n; ++i) {
    const token_slice s = p.slices[i];
    const double k = static_cast<double>(s.end - s.begin), reg = p.l2 / (2.0 * k);
    const double gl = detail::cost_sign(p.safer_is_safe(i) != 0), gh = detail::cost_sign(p.unsafer_is_safe(i) != 0);
    R* dh_out = p.out.chosen.data() ? &p.out.chosen(i, 0) : nullptr;
    R* dl_out = p.out.rejected.data() ? &p.out.rejected(i, 0) : nullptr;
    for (std::int64_t t = 0; t < T; ++t) {
      if (dh_out) dh_out[t] = R(0);
      if (dl_out) dl_out[t] = R(0);
    }
    double l = 0.0;
    for (std::int64_t t = s.begin; t < s.end; ++t) {
      const double h = static_cast<double>(p.unsafer.scores(i, t)), c = static_cast<double>(p.safer.scores(i, t));
      l += (-log_sigmoid(h - c) - log_sigmoid(gl * c) - log_sigmoid(gh * h)) / k + reg * (h * h + c * c);
      const double dpair = -sigmoid(c - h);
      if (dh_out) dh_out[t] = static_cast<R>(((dpair - gh * sigmoid(-gh * h)) / k + 2.0 * reg * h) * inv);
      if (dl_out) dl_out[t] = static_cast<R>(((-dpair - gl * sigmoid(-gl * c)) / k + 2.0 * reg * c) * inv);
    }
    const double ch = static_cast<double>(p.unsafer.scores(i, detail::last_counted(p.unsafer.mask, i)));
    const double cl = static_cast<double>(p.safer.scores(i, detail::last_counted(p.safer.mask, i)));
    sum.add(l, cl, ch, gl, gh);
    if (p.out.losses.data()) p.out.losses(i) = static_cast<R>(l);
  }
  return sum.finish(n);
}

}  // namespace generic

CAI_DETAIL_DISPATCH(cost_model_tokenwise_loss)

namespace detail {

inline void check_flags(std::string_view call, std::string_view name, const tensor_view<const std::uint8_t, 1>& v, std::int64_t n) {
  if (!v.data() && n > 0) fail_argument(call, name, "(B) safety labels 0/1", "none");
  require_per_row(call, name, v, n);
  for (std::int64_t i = 0; i < n; ++i)
    if (v(i) > 1) fail_argument(call, name, "values 0 or 1", concat(int(v(i)), " at ", i));
}

struct cost_model_loss_fn {
  /// Sequence-wise cost-model loss with the safety-sign terms. See the header comment.
  template <backend Bk, class R>
    requires token_real<R>
  cost_model_result operator()(const Bk& b, const cost_pair_batch<R>& in, const cost_pair_grads<R>& out = {},
                               const cost_model_options& opt = {}) const {
    constexpr std::string_view call = "cai::cost_model_loss";
    check_pair_values(call, in.safer, in.unsafer, "safer", "unsafer");
    const std::int64_t n = in.safer.extent(0);
    check_flags(call, "safer_is_safe", in.safer_is_safe, n);
    check_flags(call, "unsafer_is_safe", in.unsafer_is_safe, n);
    check_pair_grad(call, "grads.safer", out.safer, n);
    check_pair_grad(call, "grads.unsafer", out.unsafer, n);
    check_pair_grad(call, "grads.losses", out.losses, n);
    require_non_negative(call, "l2_coef", opt.l2_coef);
    return cost_model_loss_cpo::dispatch(b, cost_problem<R>{in, out, opt.l2_coef});
  }
};

struct cost_model_tokenwise_loss_fn {
  /// Token-wise cost-model loss (safe-rlhf). grads.chosen receives d/d unsafer costs, grads.rejected d/d safer.
  template <backend Bk, class R>
    requires token_real<R>
  cost_model_result operator()(const Bk& b, const scored_tokens<R>& unsafer, const scored_tokens<R>& safer,
                               const tensor_view<const std::uint8_t, 1>& unsafer_is_safe,
                               const tensor_view<const std::uint8_t, 1>& safer_is_safe, const token_pair_grads<R>& out = {},
                               const cost_model_options& opt = {}) const {
    constexpr std::string_view call = "cai::cost_model_tokenwise_loss";
    const auto slices = token_pair_slices(call, unsafer, safer);
    const std::int64_t n = unsafer.scores.extent(0);
    check_flags(call, "unsafer_is_safe", unsafer_is_safe, n);
    check_flags(call, "safer_is_safe", safer_is_safe, n);
    if (out.chosen.data()) require_like(call, "grads.chosen", out.chosen, "chosen.scores", unsafer.scores);
    if (out.rejected.data()) require_like(call, "grads.rejected", out.rejected, "chosen.scores", unsafer.scores);
    check_pair_grad(call, "grads.losses", out.losses, n);
    require_non_negative(call, "l2_coef", opt.l2_coef);
    return cost_model_tokenwise_loss_cpo::dispatch(
        b, cost_token_problem<R>{unsafer, safer, safer_is_safe, unsafer_is_safe, slices.data(), out, opt.l2_coef});
  }
};

}  // namespace detail

/// Safe-RLHF cost-model loss (sequence-wise). See the header comment.
inline constexpr detail::cost_model_loss_fn cost_model_loss{};
/// Safe-RLHF cost-model loss (token-wise). See the header comment.
inline constexpr detail::cost_model_tokenwise_loss_fn cost_model_tokenwise_loss{};

// ----- the Lagrange multiplier ------------------------------------------------------------------------------------

struct lagrange_options {
  double lambda_init = 1.0;  ///< > 0
  double lambda_lr = 0.1;    ///< SGD step on log lambda; > 0
  double lambda_max = 0.0;   ///< cap; 0 = none (safe-rlhf's scripts: 5)
  double threshold = 0.0;    ///< d: the cost budget J_c should stay below
  std::int64_t window = 128;       ///< episodes in the moving cost window; >= 1
  std::int64_t update_delay = 0;   ///< updates skipped at the start
};

/// The learned multiplier of one constraint. State (log lambda, the window, the update count) can be saved and
/// restored exactly through state()/restore() for checkpoint and resume.
class lagrange_multiplier {
 public:
  struct saved {
    double log_lambda = 0.0;
    std::int64_t updates = 0;
    std::vector<double> window;
  };

  explicit lagrange_multiplier(const lagrange_options& opt = {}) : opt_(opt) {
    constexpr std::string_view call = "cai::lagrange_multiplier";
    detail::require_positive(call, "lambda_init", opt.lambda_init);
    detail::require_positive(call, "lambda_lr", opt.lambda_lr);
    detail::require_non_negative(call, "lambda_max", opt.lambda_max);
    if (opt.lambda_max > 0.0 && opt.lambda_init > opt.lambda_max)
      detail::fail_argument(call, "lambda_init", detail::concat("<= lambda_max (", opt.lambda_max, ")"), opt.lambda_init);
    if (!std::isfinite(opt.threshold)) detail::fail_argument(call, "threshold", "a finite value", opt.threshold);
    if (opt.window < 1) detail::fail_argument(call, "window", "at least 1 episode", opt.window);
    if (opt.update_delay < 0) detail::fail_argument(call, "update_delay", "a count >= 0", opt.update_delay);
    log_lambda_ = std::log(opt.lambda_init);
  }

  double lambda() const noexcept { return std::exp(log_lambda_); }
  double log_lambda() const noexcept { return log_lambda_; }
  const lagrange_options& options() const noexcept { return opt_; }

  /// Appends episode costs to the moving window (the oldest fall out). Costs must be finite.
  void record(std::span<const double> costs) {
    for (std::size_t i = 0; i < costs.size(); ++i)
      if (!std::isfinite(costs[i])) detail::fail_argument("cai::lagrange_multiplier::record", "costs", "finite costs", detail::concat(costs[i], " at ", i));
    for (double c : costs) {
      window_.push_back(c);
      if (static_cast<std::int64_t>(window_.size()) > opt_.window) window_.pop_front();
    }
  }
  /// The mean episode cost over the window (J_c), 0 when empty.
  double mean_cost() const noexcept {
    if (window_.empty()) return 0.0;
    double s = 0.0;
    for (double c : window_) s += c;
    return s / static_cast<double>(window_.size());
  }

  /// One multiplier step with J_c = the window's mean; returns whether lambda moved (false while delayed or with an
  /// empty window). Distributed training: pass the all-reduced mean to update(double) instead.
  bool update() {
    if (window_.empty()) {
      ++updates_;
      return false;
    }
    return update(mean_cost());
  }
  /// One step with a given J_c (for instance the mean over all ranks' windows).
  bool update(double mean_episode_cost) {
    if (!std::isfinite(mean_episode_cost))
      detail::fail_argument("cai::lagrange_multiplier::update", "mean_episode_cost", "a finite value", mean_episode_cost);
    const bool live = updates_ >= opt_.update_delay;
    ++updates_;
    if (!live) return false;
    // d/d log_lambda of -(J_c - d) e^log_lambda is -(J_c - d) lambda; SGD subtracts lr times it.
    log_lambda_ += opt_.lambda_lr * (mean_episode_cost - opt_.threshold) * lambda();
    if (opt_.lambda_max > 0.0) log_lambda_ = std::min(log_lambda_, std::log(opt_.lambda_max));
    return true;
  }

  saved state() const { return {log_lambda_, updates_, std::vector<double>(window_.begin(), window_.end())}; }
  void restore(const saved& s) {
    constexpr std::string_view call = "cai::lagrange_multiplier::restore";
    if (!std::isfinite(s.log_lambda)) detail::fail_argument(call, "log_lambda", "a finite value", s.log_lambda);
    if (s.updates < 0) detail::fail_argument(call, "updates", "a count >= 0", s.updates);
    if (static_cast<std::int64_t>(s.window.size()) > opt_.window)
      detail::fail_argument(call, "window", detail::concat("at most ", opt_.window, " costs"), s.window.size());
    window_.assign(s.window.begin(), s.window.end());
    log_lambda_ = s.log_lambda;
    updates_ = s.updates;
  }

 private:
  lagrange_options opt_;
  double log_lambda_ = 0.0;
  std::int64_t updates_ = 0;
  std::deque<double> window_;
};

// ----- combining rewards and costs -------------------------------------------------------------------------------

namespace detail {
inline double lambda_sum(std::string_view call, std::span<const double> lambdas) {
  double s = 0.0;
  for (std::size_t k = 0; k < lambdas.size(); ++k) {
    if (!(lambdas[k] >= 0.0) || !std::isfinite(lambdas[k]))
      fail_argument(call, "lambdas", "finite multipliers >= 0", concat(lambdas[k], " at ", k));
    s += lambdas[k];
  }
  return s;
}
}  // namespace detail

/// out = (A_r - sum_k lambda_k A_c,k) / (1 + sum_k lambda_k) at counted tokens, 0 elsewhere (advantages (B,T) or
/// packed (1,N); one cost-advantage view per constraint; the multipliers are constants).
template <backend Bk, class R>
  requires detail::token_real<R>
void lagrangian_advantages(const Bk& b, tensor_view<const R, 2> reward_adv, std::span<const tensor_view<const R, 2>> cost_adv,
                           std::span<const double> lambdas, const auto& mask_in, tensor_view<R, 2> out,
                           tensor_view<const std::int64_t, 1> cu_seqlens = {}) {
  constexpr std::string_view call = "cai::lagrangian_advantages";
  if (cost_adv.size() != lambdas.size())
    detail::fail_argument(call, "lambdas", detail::concat("one multiplier per cost advantage (", cost_adv.size(), ")"), lambdas.size());
  const double denom = 1.0 + detail::lambda_sum(call, lambdas);
  const auto mask = detail::token_mask_of(mask_in);
  const row_layout L = detail::make_layout(call, "reward_adv", reward_adv, cu_seqlens);
  detail::require_row_contiguous(call, "reward_adv", reward_adv);
  detail::require_like(call, "out", out, "reward_adv", reward_adv);
  if (mask.data()) detail::require_like(call, "mask", mask, "reward_adv", reward_adv);
  detail::check_mask_values(call, mask, L);
  detail::check_finite_tokens(call, "reward_adv", reward_adv, mask, L);
  for (std::size_t k = 0; k < cost_adv.size(); ++k) {
    const std::string name = detail::concat("cost_adv[", k, "]");
    detail::require_like(call, name, cost_adv[k], "reward_adv", reward_adv);
    detail::check_finite_tokens(call, name, cost_adv[k], mask, L);
  }
  parallel_for(b, L.rows, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const R* a = L.row(reward_adv, r);
      const std::uint8_t* m = mask.data() ? L.row(mask, r) : nullptr;
      R* o = L.row(out, r);
      for (std::int64_t t = 0; t < L.length(r); ++t) {
        if (m && !m[t]) {
          o[t] = R(0);
          continue;
        }
        double v = static_cast<double>(a[t]);
        for (std::size_t k = 0; k < cost_adv.size(); ++k) v -= lambdas[k] * static_cast<double>(L.row(cost_adv[k], r)[t]);
        o[t] = static_cast<R>(v / denom);
      }
    }
  });
}

/// The fixed reward-shaping baseline: out_i = R_i - sum_k lambda_k C_k,i (sequence scores, (B) each).
template <class R>
  requires detail::token_real<R>
void shaped_scores(tensor_view<const R, 1> scores, std::span<const tensor_view<const R, 1>> costs, std::span<const double> lambdas,
                   tensor_view<R, 1> out) {
  constexpr std::string_view call = "cai::shaped_scores";
  if (costs.size() != lambdas.size())
    detail::fail_argument(call, "lambdas", detail::concat("one multiplier per cost (", costs.size(), ")"), lambdas.size());
  detail::lambda_sum(call, lambdas);
  const std::int64_t n = scores.extent(0);
  detail::check_finite_values(call, "scores", scores);
  detail::require_per_row(call, "out", out, n);
  for (std::size_t k = 0; k < costs.size(); ++k) {
    const std::string name = detail::concat("costs[", k, "]");
    detail::require_per_row(call, name, costs[k], n);
    detail::check_finite_values(call, name, costs[k]);
  }
  for (std::int64_t i = 0; i < n; ++i) {
    double v = static_cast<double>(scores(i));
    for (std::size_t k = 0; k < costs.size(); ++k) v -= lambdas[k] * static_cast<double>(costs[k](i));
    out(i) = static_cast<R>(v);
  }
}

/// Per-token costs for the cost critic (safe-rlhf PPOLagTrainer): c_t = +beta E(logp - ref_logp)_t + [t = last] C,
/// with C clamped to [score_min, score_max] (safe-rlhf clamps the whole per-token cost; equal unless the clamp binds):
/// the KL enters the cost with the opposite sign of the reward's.
/// Implemented as -token_rewards(placement, -C) so that both share one definition; the summary is token_rewards'
/// for the negated costs (mean_score = -mean cost, mean_non_score_reward = -mean KL cost).
template <backend Bk, kl::placement P, class R>
  requires detail::token_real<R>
token_reward_summary token_costs(const Bk& b, const P& placement, tensor_view<const R, 1> costs, tensor_view<const R, 2> logp,
                                 tensor_view<const R, 2> ref_logp, const auto& mask, tensor_view<R, 2> out,
                                 const token_reward_options& opt = {}) {
  constexpr std::string_view call = "cai::token_costs";
  detail::check_finite_values(call, "costs", costs);
  const row_layout L0 = detail::make_layout(call, "out", out, opt.cu_seqlens);
  detail::require_per_row(call, "costs", costs, L0.rows);
  if (!(opt.score_min <= opt.score_max) || std::isnan(opt.score_min))
    detail::fail_argument(call, "score_min", detail::concat("score_min <= score_max (", opt.score_max, ")"), opt.score_min);
  if (opt.missing_eos_penalty != 0.0)
    detail::fail_argument(call, "missing_eos_penalty", "0 (a reward-side option)", opt.missing_eos_penalty);
  std::vector<R> neg(static_cast<std::size_t>(costs.extent(0)));
  for (std::int64_t i = 0; i < costs.extent(0); ++i) neg[static_cast<std::size_t>(i)] = -costs(i);
  token_reward_options o = opt;
  o.score_min = -opt.score_max;
  o.score_max = -opt.score_min;
  const auto summary = token_rewards(b, placement, make_view<const R>(neg.data(), {costs.extent(0)}), logp, ref_logp, mask, out, o);
  for (std::int64_t r = 0; r < L0.rows; ++r) {
    R* o_row = L0.row(out, r);
    for (std::int64_t t = 0; t < L0.length(r); ++t) o_row[t] = o_row[t] == R(0) ? R(0) : -o_row[t];  // no -0
  }
  return summary;
}

}  // namespace cai
