// cai/algorithms/rewards.hpp — per-token rewards for PPO-style training: KL shaping plus the sequence score.
//
// For each row b with counted (response) tokens t and last counted token e_b:
//   s_b  = clamp(score_b - missing_eos_penalty * [ends_with_eos_b == 0], score_min, score_max)
//   r_bt = -beta * E(logp_bt - ref_logp_bt)  +  [t == e_b] * s_b        (counted tokens; 0 elsewhere)
// where (E, beta) come from the KL placement: only kl::in_reward / kl::in_reward_and_loss (or a run-time
// placement with reward = true) shape the rewards; with kl::in_loss or kl::none the rewards are the score alone, so
// the same placement object passed here and to the policy objective can never count the KL twice by accident.
// logp is the rollout (old) policy's log-probs; both log-prob views may be empty when the placement has no reward
// KL. The score lands on the last counted token, found from the mask itself (right-padded or packed, never
// left-padded: the trl #2778 bug cannot occur). A row with no counted token receives nothing and is counted in
// token_reward_summary::rows_without_tokens.
// Sources: Ziegler et al. 2019 (eq. 2); TRL trl/experimental/ppo/ppo_trainer.py (missing_eos_penalty, kl in
// rewards); OpenRLHF openrlhf/models/utils.py compute_reward (reward_clip_range, last-1-in-mask placement); verl
// ray_trainer.py apply_kl_penalty.
//
//   cai::token_rewards(cai::host{}, objective.kl, scores, old_logp, ref_logp, mask, rewards);
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "dispatch.hpp"
#include "kl.hpp"
#include "sequences.hpp"

namespace cai {

struct token_reward_options {
  double score_min = -std::numeric_limits<double>::infinity();  ///< scores are clamped to [score_min, score_max]
  double score_max = std::numeric_limits<double>::infinity();
  double missing_eos_penalty = 0.0;                   ///< >= 0; subtracted where ends_with_eos[b] == 0 (TRL)
  tensor_view<const std::uint8_t, 1> ends_with_eos{};  ///< (B) 0/1; required when missing_eos_penalty > 0
  tensor_view<const std::int64_t, 1> cu_seqlens{};     ///< packed layout offsets (B + 1); empty = padded
};

/// What token_rewards reports (for logging and the adaptive KL controller).
struct token_reward_summary {
  moments kl_per_token{};              ///< the reward-side estimate over counted tokens (count 0 without one)
  double mean_kl_per_sequence = 0.0;   ///< mean over rows of the per-row sum of the estimate (TRL's "objective/kl")
  double mean_non_score_reward = 0.0;  ///< mean over rows of sum_t -beta * E_t
  double mean_score = 0.0;             ///< mean of the placed (penalised, clamped) scores
  std::int64_t rows_without_tokens = 0;
  std::int64_t rows_missing_eos = 0;   ///< rows penalised for a missing EOS
};

template <class R>
struct token_reward_problem {
  tensor_view<const R, 1> scores;
  tensor_view<const R, 2> logp, ref_logp;
  detail::mask_view2 mask;
  row_layout layout;
  tensor_view<R, 2> out;
  token_reward_options opt;
};

namespace generic {

template <bulk_backend B, kl::placement P, class R>
token_reward_summary token_rewards(const B& b, const P& placement, const token_reward_problem<R>& p) {
  struct part {
    moments kl{};
    double kl_seq = 0.0, non_score = 0.0, score = 0.0;
    std::int64_t empty = 0, no_eos = 0, placed = 0;
  };
  const auto& L = p.layout;
  const part total = chunked_reduce(
      b, L.rows, 16, part{},
      [&](std::int64_t r0, std::int64_t r1) {
        part acc;
        for (std::int64_t r = r0; r < r1; ++r) {
          R* y = L.row(p.out, r);
          const std::uint8_t* m = p.mask.data() ? L.row(p.mask, r) : nullptr;
          const std::int64_t n = L.length(r);
          std::int64_t last = -1;
          for (std::int64_t t = n; t-- > 0;)
            if (!m || m[t]) {
              last = t;
              break;
            }
          for (std::int64_t t = 0; t < n; ++t) y[t] = R(0);
          double row_kl = 0.0;
          bool shaped = false;
          kl::visit_reward(placement, [&](const auto& est, double beta) {
            shaped = true;
            const R* x = L.row(p.logp, r);
            const R* q = L.row(p.ref_logp, r);
            std::int64_t c = 0;
            double s = 0.0, s2 = 0.0;
            for (std::int64_t t = 0; t < n; ++t)
              if (!m || m[t]) {
                const R v = kl::eval(est, R(x[t] - q[t])).value;
                y[t] = static_cast<R>(-beta * static_cast<double>(v));
                s += static_cast<double>(v);
                ++c;
              }
            if (c > 0) {
              const double mean = s / static_cast<double>(c);
              for (std::int64_t t = 0; t < n; ++t)
                if (!m || m[t]) {
                  const double d = static_cast<double>(kl::eval(est, R(x[t] - q[t])).value) - mean;
                  s2 += d * d;
                }
              acc.kl = merge(acc.kl, moments{c, mean, s2});
            }
            row_kl = s;
            acc.non_score += -beta * s;
          });
          (void)shaped;
          acc.kl_seq += row_kl;
          if (last < 0) {
            ++acc.empty;
            continue;
          }
          double s = static_cast<double>(p.scores(r));
          if (p.opt.missing_eos_penalty > 0.0 && p.opt.ends_with_eos(r) == 0) {
            s -= p.opt.missing_eos_penalty;
            ++acc.no_eos;
          }
          s = s < p.opt.score_min ? p.opt.score_min : (s > p.opt.score_max ? p.opt.score_max : s);
          y[last] = static_cast<R>(static_cast<double>(y[last]) + s);
          acc.score += s;
          ++acc.placed;
        }
        return acc;
      },
      [](const part& a, const part& c) {
        part o;
        o.kl = merge(a.kl, c.kl);
        o.kl_seq = a.kl_seq + c.kl_seq;
        o.non_score = a.non_score + c.non_score;
        o.score = a.score + c.score;
        o.empty = a.empty + c.empty;
        o.no_eos = a.no_eos + c.no_eos;
        o.placed = a.placed + c.placed;
        return o;
      });
  token_reward_summary s;
  s.kl_per_token = total.kl;
  const double rows = L.rows > 0 ? static_cast<double>(L.rows) : 1.0;
  s.mean_kl_per_sequence = total.kl_seq / rows;
  s.mean_non_score_reward = total.non_score / rows;
  s.mean_score = total.placed > 0 ? total.score / static_cast<double>(total.placed) : 0.0;
  s.rows_without_tokens = total.empty;
  s.rows_missing_eos = total.no_eos;
  return s;
}

}  // namespace generic

CAI_DETAIL_DISPATCH_CONFIGURED(token_rewards)

namespace detail {

struct token_rewards_fn {
  template <backend Bk, kl::placement P, class R>
    requires token_real<R>
  token_reward_summary operator()(const Bk& b, const P& placement, std::type_identity_t<tensor_view<const R, 1>> scores,
                                  std::type_identity_t<tensor_view<const R, 2>> logp,
                                  std::type_identity_t<tensor_view<const R, 2>> ref_logp, const auto& mask_in,
                                  tensor_view<R, 2> out, const token_reward_options& opt = {}) const {
    constexpr std::string_view call = "cai::token_rewards";
    const mask_view2 mask = token_mask_of(mask_in);
    const row_layout L = make_layout(call, "out", out, opt.cu_seqlens);
    require_row_contiguous(call, "out", out);
    require_per_row(call, "scores", scores, L.rows);
    check_finite_values(call, "scores", scores);
    if (mask.data()) require_like(call, "mask", mask, "out", out);
    check_mask_values(call, mask, L);
    if (!(opt.score_min <= opt.score_max) || std::isnan(opt.score_min))
      fail_argument(call, "score_min", concat("score_min <= score_max (", opt.score_max, ")"), opt.score_min);
    require_non_negative(call, "missing_eos_penalty", opt.missing_eos_penalty);
    if (opt.missing_eos_penalty > 0.0) {
      if (!opt.ends_with_eos.data()) fail_argument(call, "ends_with_eos", "(B) flags when missing_eos_penalty > 0", "none");
      require_per_row(call, "ends_with_eos", opt.ends_with_eos, L.rows);
      for (std::int64_t i = 0; i < L.rows; ++i)
        if (opt.ends_with_eos(i) > 1) fail_argument(call, "ends_with_eos", "values 0 or 1", concat(int(opt.ends_with_eos(i)), " at ", i));
    }
    kl::visit_reward(placement, [&](const auto& est, double beta) {
      require_non_negative(call, "beta", beta);
      kl_tokens_fn::check_estimator(call, est);
      require_like(call, "logp", logp, "out", out);
      require_like(call, "ref_logp", ref_logp, "out", out);
      check_finite_tokens(call, "logp", logp, mask, L);
      check_finite_tokens(call, "ref_logp", ref_logp, mask, L);
    });
    return token_rewards_cpo::dispatch(b, placement, token_reward_problem<R>{scores, logp, ref_logp, mask, L, out, opt});
  }
};

}  // namespace detail

/// Per-token rewards: KL shaping (when the placement puts KL in the reward) plus the score at the last counted token.
inline constexpr detail::token_rewards_fn token_rewards{};

}  // namespace cai
