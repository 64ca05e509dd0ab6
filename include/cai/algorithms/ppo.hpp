// cai/algorithms/ppo.hpp — PPO-family policy objectives and the value loss, with exact gradients and metrics.
//
// An objective is a composition of types, checked by concepts at compile time:
//   cai::ppo_objective<Clip, KlPlacement, Aggregation, Estimator>
//     Clip         pg::ppo_clip | pg::dual_clip | pg::gspo | pg::cispo | pg::sapo     (the per-token surrogate)
//     KlPlacement  kl::none | kl::in_reward<E> | kl::in_loss<E> | kl::in_reward_and_loss<E1, E2>   (kl.hpp)
//     Aggregation  agg::token_mean | agg::seq_mean_token_sum | ... (aggregation.hpp)
//     Estimator    adv::gae | adv::grpo | ... (advantages.hpp; carried so a trainer computes advantages with it)
// plus entropy_coef, log_ratio_clamp and a rollout importance-sampling correction. algorithms/objective.hpp builds
// the same types from configuration strings.
//
// Per counted token, with x = logp (the variable), o = old_logp, A = advantage, lr = clamp(x - o, +-log_ratio_clamp),
// r = e^lr (torch.clamp gradient convention: dr/dx = r inside the closed interval, 0 outside):
//   ppo_clip   l = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))         (Schulman et al. 2017, eq. 7;
//              asymmetric bounds: DAPO's clip-higher, Yu et al. 2025; OpenRLHF PolicyLoss, TRL. verl's
//              compute_policy_loss_vanilla always adds the dual clip (clip_ratio_c = 3): it is dual_clip{c = 3})
//   dual_clip  l = A < 0 ? min(ppo_clip, -A c) : ppo_clip, c > 1            (Ye et al. 2020, "Mastering Complex
//              Control in MOBA Games", dual-clip PPO; verl clip_ratio_c = 3; OpenRLHF PolicyLoss dual_clip)
//   gspo       r_b = exp(min(sg(mean_t (x - o)) + x - sg(x), seq_log_ratio_clamp)), then ppo_clip on r_b
//              (Zheng et al. 2025, Group Sequence Policy Optimization; verl compute_policy_loss_gspo): the value
//              is the sequence ratio, the gradient per token is r_b (token-level form)
//   cispo      l = -sg(clip(r, 1 - eps_low, 1 + eps_high)) A x              (MiniMax-M1, 2025; verl
//              compute_policy_loss_cispo: the value includes x, the gradient is -clip(r) A)
//   sapo       l = -A (4 / tau) sigmoid(tau (r - 1)), tau = A > 0 ? tau_pos : tau_neg  (Soft Adaptive Policy
//              Optimisation, Qwen 2025; verl compute_policy_loss_sapo; TRL loss_type "sapo")
// then l *= w_is (rollout correction, detached; see cai::is), and the objective adds
//   + coef * E(x - ref_logp)      when the placement puts the KL in the loss (E from kl.hpp, with its gradient)
//   - entropy_coef * H            when entropy is given (gradient written to dentropy, for token_logprobs_backward)
// and aggregates with per-row weights (aggregation.hpp): loss = sum_b w_b sum_t (...).
// At kinks the gradient follows torch autograd: max/min ties split the gradient equally between both branches,
// torch.where sends it to the chosen branch, clamp passes it on the closed interval.
//
// Value loss (verl compute_value_loss, OpenRLHF ValueLoss; Schulman et al. 2017 clipped value objective):
//   vf::clipped{c}  l = 0.5 max((v - R)^2, (clamp(v, v_old - c, v_old + c) - R)^2)      vf::unclipped  l = 0.5 (v - R)^2
// aggregated the same way; the gradient is written w.r.t. v.
//
// Layouts: (B,T) with mask, or packed (1,N) with cu_seqlens (sequences.hpp). Inputs float or double; every sum is in
// double, per row, combined in row order (same bits on any thread count). Counted tokens of every given input must
// be finite; uncounted positions are never read into the results and get 0 gradients.
//
//   auto res = cai::policy_loss(cai::host{}, cai::ppo_objective<cai::pg::dual_clip>{}, batch, {.dlogp = dlogp});
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/tensor_view.hpp"
#include "advantages.hpp"
#include "aggregation.hpp"
#include "dispatch.hpp"
#include "kl.hpp"
#include "sequences.hpp"

namespace cai {
namespace pg {

struct ppo_clip {
  static constexpr std::string_view name = "ppo_clip";
  double eps_low = 0.2;
  double eps_high = 0.2;
};
struct dual_clip {
  static constexpr std::string_view name = "dual_clip";
  double eps_low = 0.2;
  double eps_high = 0.2;
  double c = 3.0;
};
struct gspo {
  static constexpr std::string_view name = "gspo";
  double eps_low = 3e-4;  ///< the GSPO paper's and verl's example values (not verl code defaults)
  double eps_high = 4e-4;
  double seq_log_ratio_clamp = 10.0;  ///< upper clamp of the sequence log-ratio (verl)
};
struct cispo {
  static constexpr std::string_view name = "cispo";
  double eps_low = 0.2;
  double eps_high = 0.2;
};
struct sapo {
  static constexpr std::string_view name = "sapo";
  double tau_pos = 1.0;
  double tau_neg = 1.05;
};

template <class C>
concept surrogate = std::same_as<C, ppo_clip> || std::same_as<C, dual_clip> || std::same_as<C, gspo> ||
                    std::same_as<C, cispo> || std::same_as<C, sapo>;

/// Run-time surrogate (config files): cai::policy_loss visits it, instantiating one kernel per surrogate.
using any = std::variant<ppo_clip, dual_clip, gspo, cispo, sapo>;

template <class C>
concept surrogate_or_any = surrogate<C> || std::same_as<C, any>;

/// One token's surrogate loss, its derivative w.r.t. x, and what happened (for the metrics).
template <class R>
struct point {
  R loss, dx;
  bool clipped, dual;
};

namespace detail {
/// torch.maximum / torch.minimum gradient: all to the winner, half to each on a tie.
template <class R>
CAI_HD R max_grad(R a, R b, R da, R db) noexcept {
  return a > b ? da : (a < b ? db : R(0.5) * (da + db));
}
template <class R>
CAI_HD point<R> clipped_surrogate(R r, R dr, R A, double eps_low, double eps_high) noexcept {
  const R lo = static_cast<R>(1.0 - eps_low), hi = static_cast<R>(1.0 + eps_high);
  const R rc = r < lo ? lo : (r > hi ? hi : r);
  const bool pass = r >= lo && r <= hi;
  const R l1 = -A * r, l2 = -A * rc;
  const R d1 = -A * dr, d2 = pass ? -A * dr : R(0);
  return {l1 > l2 ? l1 : l2, max_grad(l1, l2, d1, d2), l2 > l1, false};
}
}  // namespace detail

/// Surrogate at ratio r (dr = dr/dx), advantage A, log-prob x.
template <class R>
CAI_HD point<R> eval(const ppo_clip& c, R r, R dr, R A, R) noexcept {
  return detail::clipped_surrogate(r, dr, A, c.eps_low, c.eps_high);
}
template <class R>
CAI_HD point<R> eval(const gspo& c, R r, R dr, R A, R) noexcept {
  return detail::clipped_surrogate(r, dr, A, c.eps_low, c.eps_high);
}
template <class R>
CAI_HD point<R> eval(const dual_clip& c, R r, R dr, R A, R) noexcept {
  point<R> p = detail::clipped_surrogate(r, dr, A, c.eps_low, c.eps_high);
  if (!(A < R(0))) return p;
  const R l3 = -A * static_cast<R>(c.c);
  // min(l3, C1): the constant branch has gradient 0.
  const R d = p.loss < l3 ? p.dx : (p.loss > l3 ? R(0) : R(0.5) * p.dx);
  p.dual = p.loss > l3;
  p.loss = p.loss < l3 ? p.loss : l3;
  p.dx = d;
  return p;
}
template <class R>
CAI_HD point<R> eval(const cispo& c, R r, R, R A, R x) noexcept {
  const R lo = static_cast<R>(1.0 - c.eps_low), hi = static_cast<R>(1.0 + c.eps_high);
  const R rc = r < lo ? lo : (r > hi ? hi : r);
  return {-rc * A * x, -rc * A, rc != r, false};
}
template <class R>
CAI_HD point<R> eval(const sapo& c, R r, R dr, R A, R) noexcept {
  const R tau = static_cast<R>(A > R(0) ? c.tau_pos : c.tau_neg);
  const R z = tau * (r - R(1)), s = sigmoid(z);
  // s(z) s(-z), not s (1 - s): 1 - s cancels to a few ulp of s when s is near 1.
  return {-A * s * (R(4) / tau), -A * R(4) * s * sigmoid(-z) * dr, false, false};
}

}  // namespace pg

/// Rollout importance-sampling correction for a behaviour (rollout engine) policy that differs from the old policy:
/// w_t = exp(clamp(old_logp - rollout_logp, +-20)), detached, multiplies the surrogate.
namespace is {
enum class mode : std::uint8_t {
  none,
  token_truncate,     ///< w = min(w_t, hi)                                (TIS; verl rollout_is token, OpenRLHF tis)
  token_mask,         ///< w = w_t [lo <= w_t <= hi]                       (IcePop; OpenRLHF icepop, TRL token_mask)
  sequence_truncate,  ///< w = min(exp(clamp(sum_t lr, +-20)), hi) per row (verl rollout_is sequence)
  sequence_mask,      ///< w = w_t [lo <= exp(mean_t lr) <= hi]            (OpenRLHF seq-mask-tis)
};
struct rollout_correction {
  mode m = mode::none;
  double lo = 0.5;  ///< OpenRLHF's default bounds [0.5, 5]; verl's TIS threshold default 2
  double hi = 2.0;
};
}  // namespace is

template <pg::surrogate_or_any Clip = pg::ppo_clip, kl::placement Kl = kl::none, agg::aggregation Agg = agg::token_mean,
          class Est = adv::gae>
struct ppo_objective {
  using clip_type = Clip;
  using kl_type = Kl;
  using agg_type = Agg;
  using estimator_type = Est;
  Clip clip{};
  Kl kl{};
  Agg agg{};
  Est estimator{};
  double entropy_coef = 0.0;
  double log_ratio_clamp = 20.0;  ///< verl / OpenRLHF clamp of logp - old_logp before exp
  is::rollout_correction rollout{};
};

template <class O>
inline constexpr bool is_ppo_objective_v = false;
template <class C, class K, class A, class E>
inline constexpr bool is_ppo_objective_v<ppo_objective<C, K, A, E>> = true;

/// A policy objective: a ppo_objective composition whose axes satisfy their concepts.
template <class O>
concept policy_objective = is_ppo_objective_v<std::remove_cvref_t<O>>;

template <class R>
struct policy_batch {
  tensor_view<const R, 2> logp{};          ///< new policy log-probs (the variable)
  tensor_view<const R, 2> old_logp{};      ///< log-probs under the policy that generated the rollout batch
  tensor_view<const R, 2> advantages{};
  tensor_view<const std::uint8_t, 2> mask{};  ///< counted tokens; empty = all
  tensor_view<const R, 2> ref_logp{};      ///< required when the placement puts the KL in the loss
  tensor_view<const R, 2> entropy{};       ///< per-token entropy; required when entropy_coef != 0
  tensor_view<const R, 2> rollout_logp{};  ///< behaviour-policy log-probs; required with a rollout correction
  tensor_view<const std::int64_t, 1> cu_seqlens{};
};

template <class R>
struct policy_grads {
  tensor_view<R, 2> dlogp{};     ///< dloss/dlogp (0 at uncounted positions)
  tensor_view<R, 2> dentropy{};  ///< dloss/dentropy (written when given and entropy is used)
};

/// Metrics over counted tokens (fractions and means are per token).
struct policy_metrics {
  std::int64_t tokens = 0;
  double clip_fraction = 0.0;       ///< surrogate took the clipped branch (verl pg_clipfrac)
  double clip_fraction_low = 0.0;   ///< ... with r < 1
  double clip_fraction_high = 0.0;  ///< ... with r > 1
  double dual_clip_fraction = 0.0;  ///< dual clip bound active (verl pg_clipfrac_lower)
  double approx_kl = 0.0;           ///< mean(old_logp - logp) (verl ppo_kl)
  double approx_kl_k3 = 0.0;        ///< mean((r - 1) - log r), r = pi / pi_old
  double ratio_mean = 0.0, ratio_min = 0.0, ratio_max = 0.0;
  moments advantages{};
  double entropy_mean = 0.0;        ///< when entropy is given
  double kl_mean = 0.0;             ///< mean loss-side KL estimate, when the KL is in the loss
  double is_weight_mean = 0.0;      ///< mean rollout-correction weight (1 without correction)
  double is_masked_fraction = 0.0;  ///< tokens whose weight a mask mode set to 0
};

struct policy_loss_result {
  double loss = 0.0;          ///< pg_loss + kl term - entropy_coef * entropy_loss
  double pg_loss = 0.0;       ///< aggregated surrogate
  double kl_loss = 0.0;       ///< aggregated KL estimate (before its coefficient)
  double entropy_loss = 0.0;  ///< aggregated entropy
  policy_metrics metrics{};
};

template <class R>
struct policy_problem {
  policy_batch<R> in;
  policy_grads<R> out;
  row_layout layout;
};

namespace detail {

/// Counted tokens per row and the batch totals the aggregation weights need.
inline agg::totals row_counts(const row_layout& L, const mask_view2& mask, std::vector<std::int64_t>& n) {
  n.assign(static_cast<std::size_t>(L.rows), 0);
  agg::totals t;
  t.width = static_cast<double>(L.width);
  for (std::int64_t r = 0; r < L.rows; ++r) {
    std::int64_t c = L.length(r);
    if (mask.data()) {
      const std::uint8_t* m = L.row(mask, r);
      c = 0;
      for (std::int64_t i = 0; i < L.length(r); ++i) c += m[i];
    }
    n[static_cast<std::size_t>(r)] = c;
    t.tokens += static_cast<double>(c);
    t.sequences += c > 0;
  }
  return t;
}

struct pg_acc {
  double pg = 0, kl = 0, ent = 0;  // weighted (aggregated) sums
  double clipped = 0, clip_low = 0, clip_high = 0, dual = 0, lr = 0, k3 = 0, ratio = 0, kl_sum = 0, ent_sum = 0,
         isw = 0, ismasked = 0;
  double rmin = std::numeric_limits<double>::infinity(), rmax = -std::numeric_limits<double>::infinity();
  moments adv{};
  std::int64_t tokens = 0;
};

inline pg_acc combine(const pg_acc& a, const pg_acc& b) noexcept {
  pg_acc o;
  o.pg = a.pg + b.pg;
  o.kl = a.kl + b.kl;
  o.ent = a.ent + b.ent;
  o.clipped = a.clipped + b.clipped;
  o.clip_low = a.clip_low + b.clip_low;
  o.clip_high = a.clip_high + b.clip_high;
  o.dual = a.dual + b.dual;
  o.lr = a.lr + b.lr;
  o.k3 = a.k3 + b.k3;
  o.ratio = a.ratio + b.ratio;
  o.kl_sum = a.kl_sum + b.kl_sum;
  o.ent_sum = a.ent_sum + b.ent_sum;
  o.isw = a.isw + b.isw;
  o.ismasked = a.ismasked + b.ismasked;
  o.rmin = std::min(a.rmin, b.rmin);
  o.rmax = std::max(a.rmax, b.rmax);
  o.adv = merge(a.adv, b.adv);
  o.tokens = a.tokens + b.tokens;
  return o;
}

template <class R>
CAI_HD R clamp_sym(R x, R c) noexcept {
  return x < -c ? -c : (x > c ? c : x);
}

/// The token-level ratio of every surrogate but gspo: lr = clamp(x - o, +-c), r = e^lr, dr = dr/dx with torch.clamp's
/// gradient convention (r on the closed interval, 0 outside). Shared by the host loop below and the CUDA epilogue of
/// kernels/logprobs.cuh / the device path of kernels/batched.hpp.
template <class R>
struct ratio_point {
  R lr, r, dr;
};
template <class R>
CAI_HD ratio_point<R> token_ratio(R x, R o, R c) noexcept {
  using std::exp;
  const R d = x - o;
  const R lr = clamp_sym(d, c);
  const R r = exp(lr);
  return {lr, r, (d >= -c && d <= c) ? r : R(0)};
}

/// The kernel for one concrete surrogate; the KL placement and the aggregation may be run-time types.
template <class Clip, class ObjClip, class Kl, class Agg, class Est, class R>
policy_loss_result policy_loss_rows(const auto& b, const ppo_objective<ObjClip, Kl, Agg, Est>& obj, const Clip& clip,
                                    const policy_problem<R>& p) {
  const row_layout& L = p.layout;
  const auto& in = p.in;
  std::vector<std::int64_t> counts;
  const agg::totals tot = row_counts(L, in.mask, counts);
  const R lrc = static_cast<R>(obj.log_ratio_clamp);
  const bool use_entropy = in.entropy.data() != nullptr;
  const is::rollout_correction rc = obj.rollout;

  const pg_acc total = chunked_reduce(
      b, L.rows, 8, pg_acc{},
      [&](std::int64_t r0, std::int64_t r1) {
        pg_acc acc;
        for (std::int64_t row = r0; row < r1; ++row) {
          const std::int64_t n = L.length(row), nb = counts[static_cast<std::size_t>(row)];
          const double w = agg::row_weight(obj.agg, nb, tot);
          const R* x = L.row(in.logp, row);
          const R* o = L.row(in.old_logp, row);
          const R* A = L.row(in.advantages, row);
          const std::uint8_t* m = in.mask.data() ? L.row(in.mask, row) : nullptr;
          const R* beh = in.rollout_logp.data() ? L.row(in.rollout_logp, row) : nullptr;
          R* gx = p.out.dlogp.data() ? L.row(p.out.dlogp, row) : nullptr;
          // Row-level quantities: GSPO's sequence log-ratio, the sequence-level rollout weights.
          double seq_lr = 0.0, seq_is = 0.0;
          if (nb > 0 && (std::is_same_v<Clip, pg::gspo> || rc.m == is::mode::sequence_truncate ||
                         rc.m == is::mode::sequence_mask)) {
            for (std::int64_t t = 0; t < n; ++t)
              if (!m || m[t]) {
                seq_lr += static_cast<double>(x[t] - o[t]);
                if (beh) seq_is += static_cast<double>(o[t] - beh[t]);
              }
            seq_lr /= static_cast<double>(nb);
          }
          R row_w = R(1);
          bool row_masked = false;
          if (rc.m == is::mode::sequence_truncate) row_w = static_cast<R>(std::min(std::exp(std::clamp(seq_is, -20.0, 20.0)), rc.hi));
          if (rc.m == is::mode::sequence_mask) {
            const double gm = nb > 0 ? std::exp(seq_is / static_cast<double>(nb)) : 1.0;
            row_masked = !(gm >= rc.lo && gm <= rc.hi);
          }
          double row_pg = 0.0;
          for (std::int64_t t = 0; t < n; ++t) {
            if (m && !m[t]) {
              if (gx) gx[t] = R(0);
              continue;
            }
            R r, dr, lr;  // lr: the (clamped) log-ratio whose exp is r
            if constexpr (std::is_same_v<Clip, pg::gspo>) {
              const R s = static_cast<R>(seq_lr), cap = static_cast<R>(clip.seq_log_ratio_clamp);
              lr = s < cap ? s : cap;
              r = std::exp(lr);
              dr = s <= cap ? r : R(0);
            } else {
              const ratio_point<R> q = token_ratio(x[t], o[t], lrc);
              lr = q.lr;
              r = q.r;
              dr = q.dr;
            }
            const pg::point<R> pt = pg::eval(clip, r, dr, A[t], x[t]);
            R wis = R(1);
            if (rc.m != is::mode::none) {
              const R wt = std::exp(clamp_sym(R(o[t] - beh[t]), R(20)));
              switch (rc.m) {
                case is::mode::token_truncate: wis = wt < static_cast<R>(rc.hi) ? wt : static_cast<R>(rc.hi); break;
                case is::mode::token_mask:
                  wis = (wt >= static_cast<R>(rc.lo) && wt <= static_cast<R>(rc.hi)) ? wt : R(0);
                  break;
                case is::mode::sequence_truncate: wis = row_w; break;
                default: wis = row_masked ? R(0) : wt; break;
              }
              acc.isw += static_cast<double>(wis);
              acc.ismasked += wis == R(0);
            } else {
              acc.isw += 1.0;
            }
            row_pg += static_cast<double>(pt.loss * wis);
            if (gx) gx[t] = static_cast<R>(w * static_cast<double>(pt.dx * wis));
            acc.clipped += pt.clipped;
            acc.clip_low += pt.clipped && r < R(1);
            acc.clip_high += pt.clipped && r > R(1);
            acc.dual += pt.dual;
            acc.lr -= static_cast<double>(x[t] - o[t]);
            // (r - 1) - log r from the ratio already formed (a metric: absolute error ~ one rounding of r).
            acc.k3 += (static_cast<double>(r) - 1.0) - static_cast<double>(lr);
            acc.ratio += static_cast<double>(r);
            acc.rmin = std::min(acc.rmin, static_cast<double>(r));
            acc.rmax = std::max(acc.rmax, static_cast<double>(r));
          }
          acc.pg += w * row_pg;
          acc.tokens += nb;
          acc.adv = merge(acc.adv, moments_of(A, n, [m](std::int64_t t) { return !m || m[t] != 0; }));
          kl::visit_loss(obj.kl, [&](const auto& est, double coef) {
            const R* q = L.row(in.ref_logp, row);
            double s = 0.0;
            for (std::int64_t t = 0; t < n; ++t)
              if (!m || m[t]) {
                const kl::point<R> e = kl::eval(est, R(x[t] - q[t]));
                s += static_cast<double>(e.value);
                if (gx) gx[t] = static_cast<R>(static_cast<double>(gx[t]) + w * coef * static_cast<double>(e.grad));
              }
            acc.kl += w * s;
            acc.kl_sum += s;
          });
          if (use_entropy) {
            const R* h = L.row(in.entropy, row);
            R* gh = p.out.dentropy.data() ? L.row(p.out.dentropy, row) : nullptr;
            double s = 0.0;
            for (std::int64_t t = 0; t < n; ++t) {
              const bool keep = !m || m[t];
              if (keep) s += static_cast<double>(h[t]);
              if (gh) gh[t] = keep ? static_cast<R>(-obj.entropy_coef * w) : R(0);
            }
            acc.ent += w * s;
            acc.ent_sum += s;
          }
        }
        return acc;
      },
      [](const pg_acc& a, const pg_acc& c) { return combine(a, c); });

  policy_loss_result res;
  double kl_coef = 0.0;
  kl::visit_loss(obj.kl, [&](const auto&, double coef) { kl_coef = coef; });
  res.pg_loss = total.pg;
  res.kl_loss = total.kl;
  res.entropy_loss = total.ent;
  res.loss = total.pg + kl_coef * total.kl - obj.entropy_coef * total.ent;
  policy_metrics& mt = res.metrics;
  const double nt = total.tokens > 0 ? static_cast<double>(total.tokens) : 1.0;
  mt.tokens = total.tokens;
  mt.clip_fraction = total.clipped / nt;
  mt.clip_fraction_low = total.clip_low / nt;
  mt.clip_fraction_high = total.clip_high / nt;
  mt.dual_clip_fraction = total.dual / nt;
  mt.approx_kl = total.lr / nt;
  mt.approx_kl_k3 = total.k3 / nt;
  mt.ratio_mean = total.ratio / nt;
  mt.ratio_min = total.tokens > 0 ? total.rmin : 0.0;
  mt.ratio_max = total.tokens > 0 ? total.rmax : 0.0;
  mt.advantages = total.adv;
  mt.entropy_mean = total.ent_sum / nt;
  mt.kl_mean = total.kl_sum / nt;
  mt.is_weight_mean = total.tokens > 0 ? total.isw / nt : 1.0;
  mt.is_masked_fraction = total.ismasked / nt;
  return res;
}

}  // namespace detail

// ----- value loss --------------------------------------------------------------------------------------------------
namespace vf {
struct clipped {
  static constexpr std::string_view name = "clipped";
  double clip = 0.5;  ///< verl / OpenRLHF 0.5, TRL 0.2, safe-rlhf 5.0; > 0
};
struct unclipped {
  static constexpr std::string_view name = "unclipped";
};
template <class V>
concept value_clip = std::same_as<V, clipped> || std::same_as<V, unclipped>;

template <class R>
struct point {
  R loss, dv;
  bool clipped;
};
template <class R>
CAI_HD point<R> eval(const unclipped&, R v, R, R ret) noexcept {
  const R e = v - ret;
  return {R(0.5) * e * e, e, false};
}
template <class R>
CAI_HD point<R> eval(const clipped& c, R v, R vold, R ret) noexcept {
  const R lo = vold - static_cast<R>(c.clip), hi = vold + static_cast<R>(c.clip);
  const R vc = v < lo ? lo : (v > hi ? hi : v);
  const bool pass = v >= lo && v <= hi;
  const R e1 = v - ret, e2 = vc - ret;
  const R l1 = e1 * e1, l2 = e2 * e2;
  const R d1 = R(2) * e1, d2 = pass ? R(2) * e2 : R(0);
  return {R(0.5) * (l1 > l2 ? l1 : l2), R(0.5) * pg::detail::max_grad(l1, l2, d1, d2), l2 > l1};
}
}  // namespace vf

template <class R>
struct value_batch {
  tensor_view<const R, 2> values{};      ///< new value predictions (the variable)
  tensor_view<const R, 2> old_values{};  ///< values at rollout time (required when clipped)
  tensor_view<const R, 2> returns{};     ///< targets
  tensor_view<const std::uint8_t, 2> mask{};
  tensor_view<const std::int64_t, 1> cu_seqlens{};
};

struct value_loss_result {
  double loss = 0.0;
  double clip_fraction = 0.0;  ///< (clipped - R)^2 > (v - R)^2 (verl vf_clipfrac)
  double value_mean = 0.0;
  double return_mean = 0.0;
  double explained_variance = 0.0;  ///< 1 - Var(R - v) / Var(R) over counted tokens (0 when Var(R) = 0)
  std::int64_t tokens = 0;
};

template <class V, class A, class R>
struct value_problem {
  V clip;
  A agg;
  value_batch<R> in;
  tensor_view<R, 2> dvalues;
  row_layout layout;
};

namespace generic {

template <bulk_backend B, class Clip, class Kl, class Agg, class Est, class R>
policy_loss_result policy_loss(const B& b, const ppo_objective<Clip, Kl, Agg, Est>& obj, const policy_problem<R>& p) {
  if constexpr (std::same_as<Clip, pg::any>)
    return std::visit([&](const auto& c) { return detail::policy_loss_rows(b, obj, c, p); }, obj.clip);
  else
    return detail::policy_loss_rows(b, obj, obj.clip, p);
}

template <bulk_backend B, class V, class A, class R>
value_loss_result value_loss(const B& b, const value_problem<V, A, R>& p) {
  const row_layout& L = p.layout;
  std::vector<std::int64_t> counts;
  const agg::totals tot = detail::row_counts(L, p.in.mask, counts);
  struct acc_t {
    double loss = 0, clipped = 0, v = 0, ret = 0;
    moments err{}, rets{};
  };
  const acc_t total = chunked_reduce(
      b, L.rows, 16, acc_t{},
      [&](std::int64_t r0, std::int64_t r1) {
        acc_t acc;
        for (std::int64_t row = r0; row < r1; ++row) {
          const std::int64_t n = L.length(row);
          const double w = agg::row_weight(p.agg, counts[static_cast<std::size_t>(row)], tot);
          const R* v = L.row(p.in.values, row);
          const R* vo = p.in.old_values.data() ? L.row(p.in.old_values, row) : nullptr;
          const R* ret = L.row(p.in.returns, row);
          const std::uint8_t* m = p.in.mask.data() ? L.row(p.in.mask, row) : nullptr;
          R* g = p.dvalues.data() ? L.row(p.dvalues, row) : nullptr;
          double s = 0.0;
          for (std::int64_t t = 0; t < n; ++t) {
            if (m && !m[t]) {
              if (g) g[t] = R(0);
              continue;
            }
            const vf::point<R> pt = vf::eval(p.clip, v[t], vo ? vo[t] : v[t], ret[t]);
            s += static_cast<double>(pt.loss);
            if (g) g[t] = static_cast<R>(w * static_cast<double>(pt.dv));
            acc.clipped += pt.clipped;
            acc.v += static_cast<double>(v[t]);
            acc.ret += static_cast<double>(ret[t]);
          }
          acc.loss += w * s;
          const auto keep = [m](std::int64_t t) { return !m || m[t] != 0; };
          acc.rets = merge(acc.rets, detail::moments_of(ret, n, keep));
          // Residuals R - v, formed in double (no per-row buffer).
          acc.err = merge(acc.err, detail::moments_of_values(
                                       n, [&](std::int64_t t) { return static_cast<double>(ret[t]) - static_cast<double>(v[t]); },
                                       keep));
        }
        return acc;
      },
      [](const acc_t& a, const acc_t& c) {
        acc_t o;
        o.loss = a.loss + c.loss;
        o.clipped = a.clipped + c.clipped;
        o.v = a.v + c.v;
        o.ret = a.ret + c.ret;
        o.err = merge(a.err, c.err);
        o.rets = merge(a.rets, c.rets);
        return o;
      });
  value_loss_result res;
  res.tokens = total.rets.count;
  const double nt = res.tokens > 0 ? static_cast<double>(res.tokens) : 1.0;
  res.loss = total.loss;
  res.clip_fraction = total.clipped / nt;
  res.value_mean = total.v / nt;
  res.return_mean = total.ret / nt;
  const double vr = total.rets.variance(false);
  res.explained_variance = vr > 0.0 ? 1.0 - total.err.variance(false) / vr : 0.0;
  return res;
}

}  // namespace generic

CAI_DETAIL_DISPATCH_CONFIGURED(policy_loss)
CAI_DETAIL_DISPATCH(value_loss)

namespace detail {

template <class C>
void check_surrogate(std::string_view call, const C& c) {
  if constexpr (std::same_as<C, pg::any>) {
    std::visit([&](const auto& x) { check_surrogate(call, x); }, c);
  } else if constexpr (std::same_as<C, pg::sapo>) {
    require_positive(call, "clip.tau_pos", c.tau_pos);
    require_positive(call, "clip.tau_neg", c.tau_neg);
  } else {
    if (!(c.eps_low > 0.0) || !std::isfinite(c.eps_low)) fail_argument(call, "clip.eps_low", "a finite value > 0", c.eps_low);
    if constexpr (!std::same_as<C, pg::cispo>)
      if (!(c.eps_low < 1.0)) fail_argument(call, "clip.eps_low", "a value < 1 (1 - eps_low > 0)", c.eps_low);
    require_positive(call, "clip.eps_high", c.eps_high);
    if constexpr (std::same_as<C, pg::dual_clip>)
      if (!(c.c > 1.0) || !std::isfinite(c.c)) fail_argument(call, "clip.c", "a finite dual-clip bound c > 1", c.c);
    if constexpr (std::same_as<C, pg::gspo>) require_positive(call, "clip.seq_log_ratio_clamp", c.seq_log_ratio_clamp);
  }
}

struct policy_loss_fn {
  // One overload per element type, so that braced (designated-initializer) batches work without naming the type.
  template <backend Bk, policy_objective O>
  policy_loss_result operator()(const Bk& b, const O& obj, const policy_batch<float>& in,
                                const policy_grads<float>& out = {}) const {
    return run(b, obj, in, out);
  }
  template <backend Bk, policy_objective O>
  policy_loss_result operator()(const Bk& b, const O& obj, const policy_batch<double>& in,
                                const policy_grads<double>& out = {}) const {
    return run(b, obj, in, out);
  }

 private:
  template <class Bk, class O, class R>
  static policy_loss_result run(const Bk& b, const O& obj, const policy_batch<R>& in, const policy_grads<R>& out) {
    constexpr std::string_view call = "cai::policy_loss";
    check_surrogate(call, obj.clip);
    require_positive(call, "log_ratio_clamp", obj.log_ratio_clamp);
    if (!std::isfinite(obj.entropy_coef)) fail_argument(call, "entropy_coef", "a finite value", obj.entropy_coef);
    if (const std::string_view bad = agg::bad_parameter(obj.agg); !bad.empty())
      fail_argument(call, concat("agg.", bad), "a finite value >= 0", "another");
    if (!in.logp.data() && in.logp.size() != 0) fail_argument(call, "logp", "a (B,T) view", "none");
    const row_layout L = make_layout(call, "logp", in.logp, in.cu_seqlens);
    require_row_contiguous(call, "logp", in.logp);
    const auto need = [&](std::string_view name, const tensor_view<const R, 2>& v) {
      require_like(call, name, v, "logp", in.logp);
      check_finite_tokens(call, name, v, in.mask, L);
    };
    if (in.mask.data()) require_like(call, "mask", in.mask, "logp", in.logp);
    check_mask_values(call, in.mask, L);
    need("logp", in.logp);
    need("old_logp", in.old_logp);
    need("advantages", in.advantages);
    kl::visit_loss(obj.kl, [&](const auto& est, double coef) {
      require_non_negative(call, "kl.coef", coef);
      kl_tokens_fn::check_estimator(call, est);
      if (!in.ref_logp.data() && in.logp.size() != 0)
        fail_argument(call, "ref_logp", "reference log-probs (the KL placement puts the KL in the loss)", "none");
      need("ref_logp", in.ref_logp);
    });
    if (obj.entropy_coef != 0.0 && !in.entropy.data() && in.logp.size() != 0)
      fail_argument(call, "entropy", "per-token entropy (entropy_coef != 0)", "none");
    if (in.entropy.data()) need("entropy", in.entropy);
    if (obj.rollout.m != is::mode::none) {
      if (!in.rollout_logp.data() && in.logp.size() != 0)
        fail_argument(call, "rollout_logp", "behaviour-policy log-probs (a rollout correction is set)", "none");
      need("rollout_logp", in.rollout_logp);
      require_positive(call, "rollout.hi", obj.rollout.hi);
      if (!(obj.rollout.lo >= 0.0 && obj.rollout.lo <= obj.rollout.hi))
        fail_argument(call, "rollout.lo", concat("0 <= lo <= hi (", obj.rollout.hi, ")"), obj.rollout.lo);
    }
    if (out.dlogp.data()) require_like(call, "dlogp", out.dlogp, "logp", in.logp);
    if (out.dentropy.data()) require_like(call, "dentropy", out.dentropy, "logp", in.logp);
    return policy_loss_cpo::dispatch(b, obj, policy_problem<R>{in, out, L});
  }
};

struct value_loss_fn {
  template <backend Bk, vf::value_clip V, agg::aggregation A>
  value_loss_result operator()(const Bk& b, const V& clip, const A& aggregation, const value_batch<float>& in,
                               tensor_view<float, 2> dvalues = {}) const {
    return run(b, clip, aggregation, in, dvalues);
  }
  template <backend Bk, vf::value_clip V, agg::aggregation A>
  value_loss_result operator()(const Bk& b, const V& clip, const A& aggregation, const value_batch<double>& in,
                               tensor_view<double, 2> dvalues = {}) const {
    return run(b, clip, aggregation, in, dvalues);
  }

 private:
  template <class Bk, class V, class A, class R>
  static value_loss_result run(const Bk& b, const V& clip, const A& aggregation, const value_batch<R>& in,
                               tensor_view<R, 2> dvalues) {
    constexpr std::string_view call = "cai::value_loss";
    if constexpr (std::same_as<V, vf::clipped>) require_positive(call, "clip", clip.clip);
    if (const std::string_view bad = agg::bad_parameter(aggregation); !bad.empty())
      fail_argument(call, concat("agg.", bad), "a finite value >= 0", "another");
    const row_layout L = make_layout(call, "values", in.values, in.cu_seqlens);
    require_row_contiguous(call, "values", in.values);
    const auto need = [&](std::string_view name, const tensor_view<const R, 2>& v) {
      require_like(call, name, v, "values", in.values);
      check_finite_tokens(call, name, v, in.mask, L);
    };
    if (in.mask.data()) require_like(call, "mask", in.mask, "values", in.values);
    check_mask_values(call, in.mask, L);
    need("values", in.values);
    need("returns", in.returns);
    if constexpr (std::same_as<V, vf::clipped>) {
      if (!in.old_values.data() && in.values.size() != 0)
        fail_argument(call, "old_values", "rollout-time values (clipped value loss)", "none");
      need("old_values", in.old_values);
    }
    if (dvalues.data()) require_like(call, "dvalues", dvalues, "values", in.values);
    return value_loss_cpo::dispatch(b, value_problem<V, A, R>{clip, aggregation, in, dvalues, L});
  }
};

}  // namespace detail

/// The policy objective's loss, metrics and exact gradients. See the header comment.
inline constexpr detail::policy_loss_fn policy_loss{};
/// Clipped or unclipped value loss with its gradient w.r.t. the values. See the header comment.
inline constexpr detail::value_loss_fn value_loss{};

}  // namespace cai
