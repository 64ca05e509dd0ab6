// cai/algorithms/advantages.hpp — advantage estimators: GAE and the group/outcome estimators of current RLHF.
//
//   cai::advantages(backend, estimator, inputs, outputs) -> advantage_summary
//
// Estimators (types in cai::adv; s_i = the score of sample i, groups = consecutive runs of group_size samples,
// mean_g / std_g over the group's scored samples, std with Bessel's correction as torch.std):
//   gae{gamma, lambda, whiten}   token rewards + values -> GAE (algorithms/gae.hpp), returns = A + V, then masked
//                                batch whitening of A (verl compute_gae_advantage_return + masked_whiten; TRL PPO)
//   grpo{scale, eps}             A_i = (s_i - mean_g) / (std + eps), std = std_g (scale::group), the batch std
//                                (scale::batch, TRL scale_rewards="batch") or 1 (scale::none = Dr.GRPO, Liu et al.
//                                2025 "Understanding R1-Zero-Like Training"); verl compute_grpo_outcome_advantage,
//                                TRL grpo_trainer.py; DeepSeekMath (Shao et al. 2024) eq. for outcome supervision
//   dr_grpo{}                    grpo with scale::none
//   rloo{}                       A_i = s_i - (sum_g - s_i) / (n_g - 1) (Ahmadian et al. 2024; verl
//                                compute_rloo_outcome_advantage; OpenRLHF "rloo")
//   reinforce_pp{gamma}          G = discounted returns of the token rewards, A = masked batch whitening of G (Hu
//                                2025, REINFORCE++; verl compute_reinforce_plus_plus_outcome_advantage). A masked
//                                token inside a row is the identity (G carries across it, as in cai::gae: the
//                                multi-turn rule); verl resets G at every masked token. Single-span rows agree.
//   reinforce_pp_baseline{}      A = batch whitening of (s_i - mean_g) broadcast to tokens (verl
//                                compute_reinforce_plus_plus_baseline_outcome_advantage)
//   remax{}                      A_t = (sum_{t' >= t} r_t') - b_i with b_i = baseline_scores[i], the greedy rollout's
//                                score (Li et al. 2023, ReMax; verl compute_remax_outcome_advantage); from scores
//                                alone A = s_i - b_i
//   opo{}                        A_i = s_i - sum_g L_j s_j / sum_g L_j, L = counted tokens (Hao et al. 2025, On-Policy
//                                RL with Optimal reward baseline; verl compute_opo_outcome_advantage)
//   gpg{f_norm}                  A_i = alpha (s_i - mean_g) / f_norm, alpha = B / max(#nonzero scores, 1) (Chu et al.
//                                2025, GPG; verl compute_gpg_outcome_advantage)
// Outcome estimators take scores (B), or, when scores is empty, the sum of each row's counted token rewards (verl's
// convention). Sequence advantages are broadcast to the counted tokens of the row; other positions get 0.
//
// Defined edge cases (documented rules, never UB):
//   - NaN score: the sample is left out of its group's (and the batch's) statistics and gets advantage 0 (TRL
//     treats NaN as "no reward function scored it"). A group with no scored sample gives 0 everywhere. +-inf
//     scores are rejected.
//   - group of one scored sample: mean 0 and std 1 (verl's rule) for grpo/dr_grpo/reinforce_pp_baseline/gpg; opo
//     baseline 0; rloo leaves the score as the advantage (verl's loop version). group_size = 1 is rejected for rloo.
//   - all-equal scores: grpo gives exactly 0 (the difference is exact), no division by ~0 blow-up.
// Batch not divisible by group_size, group_size < 1, missing inputs an estimator needs: cai::invalid_argument /
// shape_error naming the argument.
//
//   cai::advantages(cai::host{}, cai::adv::grpo{}, {.scores = s, .mask = m, .group_size = 8}, {.advantages = a});
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "dispatch.hpp"
#include "gae.hpp"
#include "sequences.hpp"
#include "stats.hpp"

namespace cai {
namespace adv {

enum class scale : std::uint8_t { group, batch, none };

struct gae {
  static constexpr std::string_view name = "gae";
  double gamma = 1.0;
  double lambda = 0.95;
  bool whiten = true;
};
struct grpo {
  static constexpr std::string_view name = "grpo";
  scale std_scale = scale::group;
  double eps = 1e-6;  ///< verl's value; TRL uses 1e-4
};
struct dr_grpo {
  static constexpr std::string_view name = "dr_grpo";
};
struct rloo {
  static constexpr std::string_view name = "rloo";
};
struct reinforce_pp {
  static constexpr std::string_view name = "reinforce_pp";
  double gamma = 1.0;
};
struct reinforce_pp_baseline {
  static constexpr std::string_view name = "reinforce_pp_baseline";
};
struct remax {
  static constexpr std::string_view name = "remax";
};
struct opo {
  static constexpr std::string_view name = "opo";
};
struct gpg {
  static constexpr std::string_view name = "gpg";
  double f_norm = 1.0;
};

template <class E>
concept estimator = std::same_as<E, gae> || std::same_as<E, grpo> || std::same_as<E, dr_grpo> ||
                    std::same_as<E, rloo> || std::same_as<E, reinforce_pp> || std::same_as<E, reinforce_pp_baseline> ||
                    std::same_as<E, remax> || std::same_as<E, opo> || std::same_as<E, gpg>;

/// Run-time choice of estimator (config files); cai::advantages visits it.
using any = std::variant<gae, grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, remax, opo, gpg>;

}  // namespace adv

template <class R>
struct advantage_inputs {
  tensor_view<const R, 1> scores{};           ///< (B) outcome scores; NaN = unscored
  tensor_view<const R, 2> token_rewards{};    ///< (B,T) for gae, reinforce_pp, remax (or to derive scores)
  tensor_view<const R, 2> values{};           ///< (B,T) for gae
  tensor_view<const R, 1> baseline_scores{};  ///< (B) greedy-rollout scores for remax
  tensor_view<const std::uint8_t, 2> mask{};  ///< (B,T) counted (response) tokens; empty = all
  std::int64_t group_size = 1;                ///< consecutive samples of one prompt
  tensor_view<const std::int64_t, 1> cu_seqlens{};
};

template <class R>
struct advantage_outputs {
  tensor_view<R, 2> advantages{};           ///< (B,T) token advantages (required)
  tensor_view<R, 2> returns{};              ///< (B,T) value targets (gae) or returns (reinforce_pp, remax); optional
  tensor_view<R, 1> sequence_advantages{};  ///< (B) per-sample advantage of outcome estimators, before any token
                                            ///< whitening (reinforce_pp_baseline: s - mean_g); optional
};

struct advantage_summary {
  moments token_advantages{};       ///< over counted tokens, after any whitening
  std::int64_t unscored = 0;        ///< samples with a NaN score (advantage 0)
  std::int64_t singleton_groups = 0;  ///< groups with exactly one scored sample
  std::int64_t flat_groups = 0;     ///< groups (>= 2 scored) whose scores are all equal (advantage 0)
};

template <class R>
struct advantage_problem {
  advantage_inputs<R> in;
  advantage_outputs<R> out;
  row_layout layout;
};

namespace detail {

struct group_stats {
  std::int64_t n = 0;
  double mean = 0.0, std = 0.0, sum = 0.0;
};

/// Statistics of the scored (non-NaN) values of s[0, g): count, mean, std (Bessel), sum.
CAI_HD inline group_stats group_stats_of(const double* s, std::int64_t g) noexcept {
  using std::sqrt;
  group_stats st;
  for (std::int64_t i = 0; i < g; ++i)
    if (s[i] == s[i]) {  // not NaN
      st.sum += s[i];
      ++st.n;
    }
  if (st.n == 0) return st;
  st.mean = st.sum / static_cast<double>(st.n);
  double m2 = 0.0;
  for (std::int64_t i = 0; i < g; ++i)
    if (s[i] == s[i]) m2 += (s[i] - st.mean) * (s[i] - st.mean);
  st.std = st.n > 1 ? sqrt(m2 / static_cast<double>(st.n - 1)) : 0.0;
  return st;
}

/// The estimators whose per-sample advantage depends on the sample and its group's statistics only.
template <class E>
concept group_estimator = std::same_as<E, adv::grpo> || std::same_as<E, adv::dr_grpo> || std::same_as<E, adv::rloo> ||
                          std::same_as<E, adv::reinforce_pp_baseline> || std::same_as<E, adv::gpg>;

/// Advantage of a scored sample x in a group with statistics st (the formulas of the header comment, written once
/// for the host loop below and the device path of kernels/batched.hpp). batch_std: grpo with scale::batch; alpha:
/// gpg's B / max(#nonzero scores, 1).
template <group_estimator E>
CAI_HD double group_advantage(const E& est, double x, const group_stats& st, double batch_std, double alpha) noexcept {
  const double mean = st.n == 1 ? 0.0 : st.mean;  // verl's singleton rule: mean 0, std 1
  if constexpr (std::same_as<E, adv::grpo>) {
    const double sd = est.std_scale == adv::scale::group   ? (st.n == 1 ? 1.0 : st.std)
                      : est.std_scale == adv::scale::batch ? batch_std
                                                           : 1.0;
    const double centred = x - mean;
    return est.std_scale == adv::scale::none ? centred : centred / (sd + est.eps);
  } else if constexpr (std::same_as<E, adv::dr_grpo> || std::same_as<E, adv::reinforce_pp_baseline>) {
    return x - mean;
  } else if constexpr (std::same_as<E, adv::rloo>) {
    return st.n >= 2 ? x - (st.sum - x) / static_cast<double>(st.n - 1) : x;
  } else {
    return alpha * (x - mean) / est.f_norm;
  }
}

template <class R>
std::int64_t counted_tokens(const advantage_problem<R>& p, std::int64_t r) noexcept {
  const std::int64_t n = p.layout.length(r);
  if (!p.in.mask.data()) return n;
  const std::uint8_t* m = p.layout.row(p.in.mask, r);
  std::int64_t c = 0;
  for (std::int64_t t = 0; t < n; ++t) c += m[t];
  return c;
}

/// Scores as doubles: the given ones, or the sum of counted token rewards per row.
template <class R>
std::vector<double> scores_of(const advantage_problem<R>& p) {
  const row_layout& L = p.layout;
  std::vector<double> s(static_cast<std::size_t>(L.rows));
  for (std::int64_t r = 0; r < L.rows; ++r) {
    if (p.in.scores.data()) {
      s[static_cast<std::size_t>(r)] = static_cast<double>(p.in.scores(r));
      continue;
    }
    const R* x = L.row(p.in.token_rewards, r);
    const std::uint8_t* m = p.in.mask.data() ? L.row(p.in.mask, r) : nullptr;
    double acc = 0.0;
    for (std::int64_t t = 0; t < L.length(r); ++t)
      if (!m || m[t]) acc += static_cast<double>(x[t]);
    s[static_cast<std::size_t>(r)] = acc;
  }
  return s;
}

/// y[t] = v at the counted tokens of a row of n (m null: all), 0 elsewhere. Shared with cai::batched::broadcast_rows.
template <class R>
CAI_HD void broadcast_row(R v, R* y, const std::uint8_t* m, std::int64_t n) noexcept {
  for (std::int64_t t = 0; t < n; ++t) y[t] = (!m || m[t]) ? v : R(0);
}

/// Writes a per-row advantage to the row's counted tokens (0 elsewhere) and to sequence_advantages.
template <class R>
void broadcast_rows(const auto& b, const advantage_problem<R>& p, const std::vector<double>& a) {
  const row_layout& L = p.layout;
  parallel_for(b, L.rows, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const R v = static_cast<R>(a[static_cast<std::size_t>(r)]);
      broadcast_row(v, L.row(p.out.advantages, r), p.in.mask.data() ? L.row(p.in.mask, r) : nullptr, L.length(r));
      if (p.out.sequence_advantages.data()) p.out.sequence_advantages(r) = v;
    }
  });
}

template <class R>
moments token_moments(const auto& b, const advantage_problem<R>& p) {
  return generic::masked_moments(b, stats_problem<R>{p.out.advantages, p.in.mask, p.layout});
}

template <class R>
void whiten_tokens(const auto& b, const advantage_problem<R>& p) {
  whiten_options o;
  generic::whiten(b, whiten_problem<R>{stats_problem<R>{p.out.advantages, p.in.mask, p.layout}, p.out.advantages, o});
}

}  // namespace detail

namespace generic {

template <bulk_backend B, adv::estimator E, class R>
advantage_summary advantages(const B& b, const E& est, const advantage_problem<R>& p) {
  const row_layout& L = p.layout;
  advantage_summary sum;
  if constexpr (std::same_as<E, adv::gae>) {
    gae(b, gae_problem<R>{p.in.token_rewards, p.in.values, p.in.mask, L, p.out.advantages, p.out.returns, {},
                          est.gamma, est.lambda});
    if (est.whiten) detail::whiten_tokens(b, p);
  } else if constexpr (std::same_as<E, adv::reinforce_pp>) {
    discounted_returns(b, gae_problem<R>{p.in.token_rewards, {}, p.in.mask, L, {}, p.out.advantages, {}, est.gamma, 1.0});
    if (p.out.returns.data())
      for (std::int64_t r = 0; r < L.rows; ++r)
        for (std::int64_t t = 0; t < L.length(r); ++t) L.row(p.out.returns, r)[t] = L.row(p.out.advantages, r)[t];
    detail::whiten_tokens(b, p);
  } else if constexpr (std::same_as<E, adv::remax>) {
    std::vector<double> base(static_cast<std::size_t>(L.rows));
    for (std::int64_t r = 0; r < L.rows; ++r) base[static_cast<std::size_t>(r)] = static_cast<double>(p.in.baseline_scores(r));
    if (p.in.token_rewards.data() && !p.in.scores.data()) {
      // Reverse cumulative sum of the counted token rewards (gamma = 1), minus the greedy baseline.
      discounted_returns(b, gae_problem<R>{p.in.token_rewards, {}, p.in.mask, L, {}, p.out.advantages, {}, 1.0, 1.0});
      for (std::int64_t r = 0; r < L.rows; ++r) {
        R* y = L.row(p.out.advantages, r);
        const std::uint8_t* m = p.in.mask.data() ? L.row(p.in.mask, r) : nullptr;
        const double bb = base[static_cast<std::size_t>(r)];
        for (std::int64_t t = 0; t < L.length(r); ++t) {
          if (p.out.returns.data()) L.row(p.out.returns, r)[t] = y[t];
          y[t] = (!m || m[t]) && !std::isnan(bb) ? static_cast<R>(static_cast<double>(y[t]) - bb) : R(0);
        }
        if (std::isnan(bb)) ++sum.unscored;
        if (p.out.sequence_advantages.data()) p.out.sequence_advantages(r) = R(0);
      }
    } else {
      const std::vector<double> s = detail::scores_of(p);
      std::vector<double> a(s.size());
      for (std::size_t i = 0; i < s.size(); ++i) {
        const bool ok = !std::isnan(s[i]) && !std::isnan(base[i]);
        a[i] = ok ? s[i] - base[i] : 0.0;
        sum.unscored += !ok;
      }
      detail::broadcast_rows(b, p, a);
    }
  } else {
    // Outcome estimators over groups.
    const std::vector<double> s = detail::scores_of(p);
    const std::int64_t G = p.in.group_size, groups = L.rows / G;
    std::vector<double> a(s.size(), 0.0);
    double batch_std = 1.0;
    if constexpr (std::same_as<E, adv::grpo>) {
      if (est.std_scale == adv::scale::batch) batch_std = detail::group_stats_of(s.data(), L.rows).std;
    }
    std::int64_t nonzero = 0;
    for (double x : s) nonzero += !std::isnan(x) && x != 0.0;
    for (std::int64_t g = 0; g < groups; ++g) {
      const double* sg = s.data() + g * G;
      double* ag = a.data() + g * G;
      const detail::group_stats st = detail::group_stats_of(sg, G);
      sum.singleton_groups += st.n == 1;
      if (st.n >= 2) {
        bool flat = true;
        for (std::int64_t i = 0; i < G; ++i) flat &= std::isnan(sg[i]) || sg[i] == st.mean;
        sum.flat_groups += flat;
      }
      const double alpha = static_cast<double>(L.rows) / static_cast<double>(nonzero > 0 ? nonzero : 1);
      for (std::int64_t i = 0; i < G; ++i) {
        const double x = sg[i];
        if (std::isnan(x)) continue;
        if constexpr (detail::group_estimator<E>) {
          ag[i] = detail::group_advantage(est, x, st, batch_std, alpha);
        } else if constexpr (std::same_as<E, adv::opo>) {
          double num = 0.0, den = 0.0;
          if (st.n >= 2)
            for (std::int64_t j = 0; j < G; ++j)
              if (!std::isnan(sg[j])) {
                const double len = static_cast<double>(detail::counted_tokens(p, g * G + j));
                num += len * sg[j];
                den += len;
              }
          ag[i] = x - (den > 0.0 ? num / den : 0.0);
        }
      }
    }
    for (double x : s) sum.unscored += std::isnan(x);
    detail::broadcast_rows(b, p, a);
    if constexpr (std::same_as<E, adv::reinforce_pp_baseline>) detail::whiten_tokens(b, p);
  }
  sum.token_advantages = detail::token_moments(b, p);
  return sum;
}

}  // namespace generic

CAI_DETAIL_DISPATCH_CONFIGURED(advantages)

namespace detail {

struct advantages_fn {
  // One overload per element type (braced inputs need no type name), and one for the run-time estimator.
  template <backend Bk, adv::estimator E>
  advantage_summary operator()(const Bk& b, const E& est, const advantage_inputs<float>& in,
                               const advantage_outputs<float>& out) const {
    return run(b, est, in, out);
  }
  template <backend Bk, adv::estimator E>
  advantage_summary operator()(const Bk& b, const E& est, const advantage_inputs<double>& in,
                               const advantage_outputs<double>& out) const {
    return run(b, est, in, out);
  }
  template <backend Bk>
  advantage_summary operator()(const Bk& b, const adv::any& est, const advantage_inputs<float>& in,
                               const advantage_outputs<float>& out) const {
    return std::visit([&](const auto& e) { return run(b, e, in, out); }, est);
  }
  template <backend Bk>
  advantage_summary operator()(const Bk& b, const adv::any& est, const advantage_inputs<double>& in,
                               const advantage_outputs<double>& out) const {
    return std::visit([&](const auto& e) { return run(b, e, in, out); }, est);
  }

 private:
  template <class Bk, class E, class R>
  static advantage_summary run(const Bk& b, const E& est, const advantage_inputs<R>& in, const advantage_outputs<R>& out) {
    constexpr std::string_view call = "cai::advantages";
    if (!out.advantages.data() && out.advantages.size() != 0)
      fail_argument(call, "out.advantages", "a (B,T) output view", "none");
    const row_layout L = make_layout(call, "out.advantages", out.advantages, in.cu_seqlens);
    require_row_contiguous(call, "out.advantages", out.advantages);
    const auto like = [&](std::string_view name, const auto& v) { require_like(call, name, v, "out.advantages", out.advantages); };
    if (in.mask.data()) like("mask", in.mask);
    check_mask_values(call, in.mask, L);
    if (out.returns.data()) like("out.returns", out.returns);
    if (out.sequence_advantages.data()) require_per_row(call, "out.sequence_advantages", out.sequence_advantages, L.rows);
    const auto need_tokens = [&](std::string_view name, const tensor_view<const R, 2>& v) {
      if (!v.data() && L.rows * L.width > 0) fail_argument(call, name, concat("(B,T) input for ", E::name), "none");
      like(name, v);
      check_finite_tokens(call, name, v, in.mask, L);
    };
    if constexpr (std::same_as<E, adv::gae>) {
      require_unit_interval(call, "gamma", est.gamma);
      require_unit_interval(call, "lambda", est.lambda);
      need_tokens("token_rewards", in.token_rewards);
      need_tokens("values", in.values);
    } else if constexpr (std::same_as<E, adv::reinforce_pp>) {
      require_unit_interval(call, "gamma", est.gamma);
      need_tokens("token_rewards", in.token_rewards);
    } else {
      if (in.scores.data() || in.scores.extent(0) != 0) {
        require_per_row(call, "scores", in.scores, L.rows);
        for (std::int64_t i = 0; i < L.rows; ++i)
          if (std::isinf(in.scores(i))) fail_argument(call, "scores", "finite values or NaN (unscored)", concat(in.scores(i), " at ", i));
      } else {
        need_tokens("token_rewards", in.token_rewards);
      }
      if (in.token_rewards.data()) {
        like("token_rewards", in.token_rewards);
        check_finite_tokens(call, "token_rewards", in.token_rewards, in.mask, L);
      }
      if constexpr (std::same_as<E, adv::remax>) {
        if (!in.baseline_scores.data()) fail_argument(call, "baseline_scores", "(B) greedy-rollout scores for remax", "none");
        require_per_row(call, "baseline_scores", in.baseline_scores, L.rows);
      } else {
        if (in.group_size < 1) fail_argument(call, "group_size", "group_size >= 1", in.group_size);
        if (L.rows % in.group_size != 0)
          fail_argument(call, "group_size", concat("a divisor of the batch size ", L.rows), in.group_size);
        if constexpr (std::same_as<E, adv::rloo>)
          if (in.group_size < 2) fail_argument(call, "group_size", "group_size >= 2 (leave-one-out baseline)", in.group_size);
        if constexpr (std::same_as<E, adv::grpo>) require_non_negative(call, "eps", est.eps);
        if constexpr (std::same_as<E, adv::gpg>) require_positive(call, "f_norm", est.f_norm);
      }
    }
    return advantages_cpo::dispatch(b, est, advantage_problem<R>{in, out, L});
  }
};

}  // namespace detail

/// Token advantages (and returns) from an estimator; see the header comment for each estimator's definition.
inline constexpr detail::advantages_fn advantages{};

}  // namespace cai
