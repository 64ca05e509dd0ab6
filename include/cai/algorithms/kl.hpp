// cai/algorithms/kl.hpp — KL estimators between the policy and a reference, their placement, and the exact KL.
//
// Sample-based estimators of KL(pi || pi_ref) at a token sampled from pi, with d = logp - ref_logp (Schulman,
// "Approximating KL divergence", 2020; OpenRLHF openrlhf/models/utils.py compute_approx_kl; verl
// verl/trainer/ppo/core_algos.py kl_penalty_forward):
//   k1   d                        gradient 1                    (verl "kl"/"k1", OpenRLHF k1, TRL "k1")
//   k2   d^2 / 2                  gradient d                    (verl "mse"/"k2", OpenRLHF k2)
//   k3   e^-d - 1 + d             gradient 1 - e^-d             (verl "low_var_kl"/"k3", OpenRLHF k3, TRL "k3")
//   abs  |d|                      gradient sign(d), 0 at d = 0  (verl "abs"; torch.abs' gradient)
//   straight_through<V, G>        value of V, gradient of G     (verl's "+" suffix: value of k3, gradient of k2)
// Gradients are with respect to logp (the reference is frozen). Each estimator carries two documented clamps:
// d is clamped to [-log_ratio_clamp, +log_ratio_clamp] before the estimator, and the estimate to
// [-kl_clamp, +kl_clamp] after it; as torch.clamp does, the gradient passes where the input lies inside the closed
// interval and is 0 outside. Defaults: no clamps, except k3 = verl's low_var_kl (log ratio +-20, estimate +-10).
//
// Placement (where the KL penalty acts), one type shared by token_rewards (algorithms/rewards.hpp) and the
// policy objective (algorithms/ppo.hpp), so that the KL cannot be counted twice unless the type says so:
//   kl::none                        no KL penalty
//   kl::in_reward<E>{.beta}         r_t -= beta * E(d_t) in the token rewards (TRL, OpenRLHF, verl use_kl_in_reward)
//   kl::in_loss<E>{.coef}           loss += coef * E(d_t), aggregated like the policy loss (GRPO, verl use_kl_loss)
//   kl::in_reward_and_loss<ER, EL>  both, explicitly (a known mistake, OpenRLHF #768/#777, made deliberate)
//
// Exact KL over the vocabulary from two logit tensors (policy z, reference y), per position:
//   KL = sum_j p_j (log p_j - log q_j),  p = softmax(z), q = softmax(y)
//   dKL/dz_j = p_j (log p_j - log q_j - KL)        dKL/dy_j = q_j - p_j
// Layouts as cai::token_logprobs: rows (N, V) or causal (B, T, V) where kl[b, t] compares logits[b, t - 1].
// A counted row of NaN, +inf or only -inf in either tensor is rejected (cai::invalid_argument naming the tensor and
// the row); full_kl_backward expects inputs the forward accepted (on others its gradients are NaN, never UB).
//
//   cai::kl_tokens(cai::host{}, cai::kl::k3{}, logp, ref_logp, mask, {.kl = kl, .dkl = dkl});
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/math.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "dispatch.hpp"
#include "logprobs.hpp"
#include "sequences.hpp"

namespace cai {
namespace kl {

inline constexpr double no_clamp = std::numeric_limits<double>::infinity();

/// The per-token result: estimate and d(estimate)/d(logp).
template <class R>
struct point {
  R value;
  R grad;
};

/// k1 = d: unbiased, high variance, can be negative.
struct k1 {
  static constexpr std::string_view name = "k1";
  double log_ratio_clamp = no_clamp;
  double kl_clamp = no_clamp;
  template <class R>
  CAI_HD static R value(R d) noexcept { return d; }
  template <class R>
  CAI_HD static R grad(R) noexcept { return R(1); }
};
/// k2 = d^2 / 2: biased, low variance, non-negative; its gradient d is the true KL gradient to first order.
struct k2 {
  static constexpr std::string_view name = "k2";
  double log_ratio_clamp = no_clamp;
  double kl_clamp = no_clamp;
  template <class R>
  CAI_HD static R value(R d) noexcept { return R(0.5) * d * d; }
  template <class R>
  CAI_HD static R grad(R d) noexcept { return d; }
};
/// k3 = e^-d - 1 + d: unbiased, low variance, non-negative. Defaults are verl's low_var_kl clamps.
struct k3 {
  static constexpr std::string_view name = "k3";
  double log_ratio_clamp = 20.0;
  double kl_clamp = 10.0;
  template <class R>
  CAI_HD static R value(R d) noexcept {
    using std::exp;
    using std::expm1;
    return expm1(-d) + d;  // e^-d - 1 without cancellation near d = 0
  }
  template <class R>
  CAI_HD static R grad(R d) noexcept {
    using std::expm1;
    return -expm1(-d);
  }
  /// Both at once: one expm1 instead of two.
  template <class R>
  CAI_HD static point<R> value_and_grad(R d) noexcept {
    using std::expm1;
    const R e = expm1(-d);
    return {e + d, -e};
  }
};
/// |d|.
struct abs {
  static constexpr std::string_view name = "abs";
  double log_ratio_clamp = no_clamp;
  double kl_clamp = no_clamp;
  template <class R>
  CAI_HD static R value(R d) noexcept { return d < R(0) ? -d : d; }
  template <class R>
  CAI_HD static R grad(R d) noexcept { return d > R(0) ? R(1) : (d < R(0) ? R(-1) : R(0)); }
};

/// The value of one estimator with the gradient of another (each with its own clamps).
template <class Value, class Grad>
struct straight_through {
  Value value_estimator{};
  Grad grad_estimator{};
};

/// A sample-based estimator: a plain one (value, grad, clamps) or a straight-through pair.
template <class E>
concept plain_estimator = requires(const E& e, float d) {
  { E::value(d) } -> std::same_as<float>;
  { E::grad(d) } -> std::same_as<float>;
  { e.log_ratio_clamp } -> std::convertible_to<double>;
  { e.kl_clamp } -> std::convertible_to<double>;
};

namespace detail {
template <class E, class R>
CAI_HD point<R> eval_plain(const E& e, R d) noexcept {
  const R lc = static_cast<R>(e.log_ratio_clamp), kc = static_cast<R>(e.kl_clamp);
  const bool pass_d = d >= -lc && d <= lc;  // torch.clamp: gradient flows on the closed interval
  const R dc = d < -lc ? -lc : (d > lc ? lc : d);
  point<R> est;
  if constexpr (requires { E::value_and_grad(dc); }) est = E::value_and_grad(dc);
  else est = {E::value(dc), E::grad(dc)};
  const bool pass_v = est.value >= -kc && est.value <= kc;
  const R vc = est.value < -kc ? -kc : (est.value > kc ? kc : est.value);
  return {vc, (pass_d && pass_v) ? est.grad : R(0)};
}
template <class>
inline constexpr bool is_straight_through_v = false;
template <class V, class G>
inline constexpr bool is_straight_through_v<straight_through<V, G>> = true;
}  // namespace detail

/// A run-time choice among k1, k2, k3, abs and straight-through pairs of them (for config files); the policy
/// objective built from names uses it so that the estimator axis is not multiplied into the other axes.
struct any {
  enum class kind : std::uint8_t { k1, k2, k3, abs };
  kind value_kind = kind::k1;
  kind grad_kind = kind::k1;
  double log_ratio_clamp = no_clamp;
  double kl_clamp = no_clamp;
  double grad_log_ratio_clamp = no_clamp;  ///< clamps of the gradient estimator (straight-through only)
  double grad_kl_clamp = no_clamp;
};

template <class E>
concept estimator = plain_estimator<E> || detail::is_straight_through_v<E> || std::same_as<E, any>;

namespace detail {
template <class R>
CAI_HD point<R> eval_kind(any::kind k, double lc, double kc, R d) noexcept {
  switch (k) {
    case any::kind::k1: return eval_plain(k1{lc, kc}, d);
    case any::kind::k2: return eval_plain(k2{lc, kc}, d);
    case any::kind::k3: return eval_plain(k3{lc, kc}, d);
    default: return eval_plain(abs{lc, kc}, d);
  }
}
}  // namespace detail

/// Estimate and gradient at log ratio d = logp - ref_logp, clamps applied.
template <estimator E, class R>
CAI_HD point<R> eval(const E& e, R d) noexcept {
  if constexpr (plain_estimator<E>) {
    return detail::eval_plain(e, d);
  } else if constexpr (std::same_as<E, any>) {
    const point<R> v = detail::eval_kind(e.value_kind, e.log_ratio_clamp, e.kl_clamp, d);
    if (e.value_kind == e.grad_kind) return v;  // not straight-through: the grad_* clamps do not apply
    return {v.value, detail::eval_kind(e.grad_kind, e.grad_log_ratio_clamp, e.grad_kl_clamp, d).grad};
  } else {
    return {eval(e.value_estimator, d).value, eval(e.grad_estimator, d).grad};
  }
}

// ----- placement -------------------------------------------------------------------------------------------------
struct none {};
template <estimator E>
struct in_reward {
  E estimator{};
  double beta = 0.05;  ///< TRL's kl_coef default; >= 0
};
template <estimator E>
struct in_loss {
  E estimator{};
  double coef = 0.001;  ///< verl's kl_loss_coef default; >= 0
};
template <estimator ER, estimator EL>
struct in_reward_and_loss {
  in_reward<ER> reward{};
  in_loss<EL> loss{};
};
/// The run-time placement built from a config string (kl::placement_from_name in algorithms/objective.hpp).
struct any_placement {
  bool reward = false, loss = false;
  any reward_estimator{}, loss_estimator{};
  double beta = 0.0, coef = 0.0;
};

namespace detail {
template <class>
inline constexpr int placement_kind_v = -1;
template <>
inline constexpr int placement_kind_v<none> = 0;
template <class E>
inline constexpr int placement_kind_v<in_reward<E>> = 1;
template <class E>
inline constexpr int placement_kind_v<in_loss<E>> = 2;
template <class ER, class EL>
inline constexpr int placement_kind_v<in_reward_and_loss<ER, EL>> = 3;
template <>
inline constexpr int placement_kind_v<any_placement> = 4;
}  // namespace detail

template <class P>
concept placement = detail::placement_kind_v<std::remove_cvref_t<P>> >= 0;

/// Calls f(estimator, beta) when the placement puts a KL penalty into the token rewards.
template <placement P, class F>
void visit_reward(const P& p, F&& f) {
  constexpr int k = detail::placement_kind_v<P>;
  if constexpr (k == 1) f(p.estimator, p.beta);
  else if constexpr (k == 3) f(p.reward.estimator, p.reward.beta);
  else if constexpr (k == 4) {
    if (p.reward) f(p.reward_estimator, p.beta);
  }
}
/// Calls f(estimator, coef) when the placement puts a KL term into the policy loss.
template <placement P, class F>
void visit_loss(const P& p, F&& f) {
  constexpr int k = detail::placement_kind_v<P>;
  if constexpr (k == 2) f(p.estimator, p.coef);
  else if constexpr (k == 3) f(p.loss.estimator, p.loss.coef);
  else if constexpr (k == 4) {
    if (p.loss) f(p.loss_estimator, p.coef);
  }
}

}  // namespace kl

// ----- per-token estimates ------------------------------------------------------------------------------------------

/// Outputs of kl_tokens; either may be empty. dkl holds d(kl_t)/d(logp_t) (the reference is frozen).
template <class R>
struct kl_outputs {
  tensor_view<R, 2> kl{};
  tensor_view<R, 2> dkl{};
};

struct kl_options {
  tensor_view<const std::int64_t, 1> cu_seqlens{};  ///< packed layout offsets (B + 1); empty = padded
};

template <class E, class R>
struct kl_tokens_problem {
  E estimator;
  tensor_view<const R, 2> logp, ref_logp;
  detail::mask_view2 mask;
  row_layout layout;
  kl_outputs<R> out;
};

namespace generic {
/// Returns the moments of the estimate over the counted tokens (mergeable across micro-batches).
template <bulk_backend B, class E, class R>
moments kl_tokens(const B& b, const kl_tokens_problem<E, R>& p) {
  const auto& L = p.layout;
  return chunked_reduce(
      b, L.rows, 16, moments{},
      [&](std::int64_t r0, std::int64_t r1) {
        moments acc;
        for (std::int64_t r = r0; r < r1; ++r) {
          const R* x = L.row(p.logp, r);
          const R* y = L.row(p.ref_logp, r);
          const std::uint8_t* m = p.mask.data() ? L.row(p.mask, r) : nullptr;
          R* kv = p.out.kl.data() ? L.row(p.out.kl, r) : nullptr;
          R* kg = p.out.dkl.data() ? L.row(p.out.dkl, r) : nullptr;
          const std::int64_t n = L.length(r);
          std::int64_t c = 0;
          double s = 0.0;
          for (std::int64_t t = 0; t < n; ++t) {
            const bool keep = !m || m[t];
            const kl::point<R> e = keep ? kl::eval(p.estimator, R(x[t] - y[t])) : kl::point<R>{R(0), R(0)};
            if (kv) kv[t] = e.value;
            if (kg) kg[t] = e.grad;
            s += static_cast<double>(e.value);
            c += keep;
          }
          moments row{c, c ? s / static_cast<double>(c) : 0.0, 0.0};
          if (c > 1) {
            for (std::int64_t t = 0; t < n; ++t)
              if (!m || m[t]) {
                const double dv = static_cast<double>(kl::eval(p.estimator, R(x[t] - y[t])).value) - row.mean;
                row.m2 += dv * dv;
              }
          }
          acc = merge(acc, row);
        }
        return acc;
      },
      [](const moments& a, const moments& c2) { return merge(a, c2); });
}
}  // namespace generic

CAI_DETAIL_DISPATCH(kl_tokens)

// ----- exact KL over the vocabulary ------------------------------------------------------------------------------

template <class T, class S = host_space>
struct full_kl_problem {
  tensor_view<const T, 3, S> logits, ref_logits;   // (B, R, V)
  tensor_view<const std::uint8_t, 2, S> mask;       // (B, R + shift) or empty
  tensor_view<float, 2, S> kl;                      // forward output (B, R + shift)
  tensor_view<const float, 2, S> dkl;               // backward input
  tensor_view<float, 3, S> dlogits, dref_logits;    // backward outputs (either may be empty)
  std::int64_t shift = 0;
};

namespace detail {

struct kl_row_state {
  float lse_p, lse_q, kl;
};

/// Two passes over a row pair: log-sum-exps, then sum_j p_j (z_j - y_j).
template <class T>
kl_row_state kl_row(const T* z, const T* y, std::int64_t V) noexcept {
  // The vectorised many-lane state of logprobs.hpp: one sequential fp32 state would lose ~1e-4 in the log-sum-exp
  // at V = 152064 (every push rounds the running sum).
  const float lp = row_softmax_state(z, V, 1.0f).lse(), lq = row_softmax_state(y, V, 1.0f).lse();
  double acc = 0.0;
  for (std::int64_t j = 0; j < V; ++j) {
    const float zj = to_float(z[j]), yj = to_float(y[j]);
    const float lpj = zj - lp;
    if (lpj == -std::numeric_limits<float>::infinity()) continue;  // p_j = 0 contributes 0 (0 * log 0 = 0)
    acc += static_cast<double>(std::exp(lpj)) * static_cast<double>(lpj - (yj - lq));
  }
  return {lp, lq, static_cast<float>(acc)};
}

}  // namespace detail

namespace generic {

template <bulk_backend B, class T>
moments full_kl(const B& b, const full_kl_problem<T>& p) {
  const std::int64_t rows = p.logits.extent(1), V = p.logits.extent(2), Bn = p.logits.extent(0);
  struct state {
    moments m;
    std::int64_t bad_p = -1, bad_q = -1;  // first flat row index whose logits / ref_logits were not finite
  };
  const auto first = [](std::int64_t a, std::int64_t c) { return a < 0 ? c : (c < 0 ? a : std::min(a, c)); };
  const state s = chunked_reduce(
      b, Bn * rows, 1, state{},
      [&](std::int64_t i0, std::int64_t i1) {
        state acc;
        for (std::int64_t i = i0; i < i1; ++i) {
          const std::int64_t bb = i / rows, r = i % rows, pos = r + p.shift;
          if (p.shift == 1 && r == 0) p.kl(bb, 0) = 0.0f;
          if (pos >= p.kl.extent(1)) continue;
          if (p.mask.data() && !p.mask(bb, pos)) {
            p.kl(bb, pos) = 0.0f;
            continue;
          }
          const detail::kl_row_state st = detail::kl_row(&p.logits(bb, r, 0), &p.ref_logits(bb, r, 0), V);
          // A log-sum-exp that is not finite means NaN or +inf in the row, or a row of -inf (no distribution).
          if (!std::isfinite(st.lse_p) && acc.bad_p < 0) acc.bad_p = i;
          if (!std::isfinite(st.lse_q) && acc.bad_q < 0) acc.bad_q = i;
          p.kl(bb, pos) = st.kl;
          acc.m = merge(acc.m, moments{1, static_cast<double>(st.kl), 0.0});
        }
        return acc;
      },
      [&](const state& a, const state& c) { return state{merge(a.m, c.m), first(a.bad_p, c.bad_p), first(a.bad_q, c.bad_q)}; });
  const std::pair<std::int64_t, const char*> bad_rows[] = {{s.bad_p, "logits"}, {s.bad_q, "ref_logits"}};
  for (const auto& [bad, name] : bad_rows)
    if (bad >= 0)
      detail::fail_argument("cai::full_kl", name, "finite values (and not all -inf) in every counted row",
                            p.shift == 1 ? detail::concat("NaN or inf at sequence ", bad / rows, ", position ", bad % rows)
                                         : detail::concat("NaN or inf in row ", bad % rows));
  return s.m;
}

template <bulk_backend B, class T>
void full_kl_backward(const B& b, const full_kl_problem<T>& p) {
  const std::int64_t rows = p.logits.extent(1), V = p.logits.extent(2), Bn = p.logits.extent(0);
  b.bulk(Bn * rows, [&](std::int64_t i) {
    const std::int64_t bb = i / rows, r = i % rows, pos = r + p.shift;
    float* gz = p.dlogits.data() ? &p.dlogits(bb, r, 0) : nullptr;
    float* gy = p.dref_logits.data() ? &p.dref_logits(bb, r, 0) : nullptr;
    const bool live = pos < p.dkl.extent(1) && (!p.mask.data() || p.mask(bb, pos)) && p.dkl(bb, pos) != 0.0f;
    if (!live) {
      for (std::int64_t j = 0; j < V; ++j) {
        if (gz) gz[j] = 0.0f;
        if (gy) gy[j] = 0.0f;
      }
      return;
    }
    const float g = p.dkl(bb, pos);
    const T* z = &p.logits(bb, r, 0);
    const T* y = &p.ref_logits(bb, r, 0);
    const detail::kl_row_state st = detail::kl_row(z, y, V);
    for (std::int64_t j = 0; j < V; ++j) {
      const float lpj = to_float(z[j]) - st.lse_p, lqj = to_float(y[j]) - st.lse_q;
      const float pj = std::exp(lpj), qj = std::exp(lqj);
      if (gz) gz[j] = pj == 0.0f ? 0.0f : g * pj * ((lpj - lqj) - st.kl);
      if (gy) gy[j] = g * (qj - pj);
    }
  });
}

}  // namespace generic

CAI_DETAIL_DISPATCH(full_kl)
CAI_DETAIL_DISPATCH(full_kl_backward)

namespace detail {

struct kl_tokens_fn {
  /// Per-token estimates (and their gradients) into out; returns the moments of the estimate over counted tokens.
  template <backend Bk, kl::estimator E, viewable X, viewable Y, class M, class R = element_of_t<X>>
    requires token_real<R> && std::same_as<element_of_t<X>, R> && std::same_as<element_of_t<Y>, R> &&
             (rank_of_v<X> == 2) && (rank_of_v<Y> == 2)
  moments operator()(const Bk& b, const E& est, const X& logp_in, const Y& ref_in, const M& mask_in,
                     const kl_outputs<R>& out, const kl_options& opt = {}) const {
    constexpr std::string_view call = "cai::kl_tokens";
    const tensor_view<const R, 2> logp = as_const_view(logp_in), ref = as_const_view(ref_in);
    const mask_view2 mask = token_mask_of(mask_in);
    const row_layout L = make_layout(call, "logp", logp, opt.cu_seqlens);
    require_row_contiguous(call, "logp", logp);
    require_like(call, "ref_logp", ref, "logp", logp);
    if (mask.data()) require_like(call, "mask", mask, "logp", logp);
    if (out.kl.data()) require_like(call, "out.kl", out.kl, "logp", logp);
    if (out.dkl.data()) require_like(call, "out.dkl", out.dkl, "logp", logp);
    check_estimator(call, est);
    check_mask_values(call, mask, L);
    check_finite_tokens(call, "logp", logp, mask, L);
    check_finite_tokens(call, "ref_logp", ref, mask, L);
    return kl_tokens_cpo::dispatch(b, kl_tokens_problem<E, R>{est, logp, ref, mask, L, out});
  }

  template <class E>
  static void check_estimator(std::string_view call, const E& e) {
    if constexpr (kl::plain_estimator<E> || std::same_as<E, kl::any>) {
      if (!(e.log_ratio_clamp > 0.0)) fail_argument(call, "estimator.log_ratio_clamp", "a value > 0", e.log_ratio_clamp);
      if (!(e.kl_clamp > 0.0)) fail_argument(call, "estimator.kl_clamp", "a value > 0", e.kl_clamp);
      if constexpr (std::same_as<E, kl::any>) {
        if (!(e.grad_log_ratio_clamp > 0.0))
          fail_argument(call, "estimator.grad_log_ratio_clamp", "a value > 0", e.grad_log_ratio_clamp);
        if (!(e.grad_kl_clamp > 0.0)) fail_argument(call, "estimator.grad_kl_clamp", "a value > 0", e.grad_kl_clamp);
      }
    } else {
      check_estimator(call, e.value_estimator);
      check_estimator(call, e.grad_estimator);
    }
  }
};

template <class LP, class LQ>
auto make_full_kl_problem(std::string_view call, const LP& lp_in, const LQ& lq_in, const auto& mask_in,
                          tensor_view<float, rank_of_v<LP> - 1> kl_out, tensor_view<const float, rank_of_v<LP> - 1> dkl,
                          tensor_view<float, rank_of_v<LP>> dl, tensor_view<float, rank_of_v<LP>> dr) {
  constexpr std::size_t R = rank_of_v<LP>;
  const auto logits = as_const_view(lp_in);
  const auto ref = as_const_view(lq_in);
  check_common(call, logits, 1.0f);
  require_row_contiguous(call, "ref_logits", ref);
  for (std::size_t d = 0; d < R; ++d) require_extent(call, "ref_logits", ref, d, logits.extent(d), "the shape of 'logits'");
  const auto mask = mask_view<R - 1, host_space>(mask_in);
  if (mask.data()) check_same_lead(call, "mask", mask, logits);
  if (kl_out.data()) check_same_lead(call, "kl", kl_out, logits);
  if (dkl.data()) check_same_lead(call, "dkl", dkl, logits);
  for (std::size_t d = 0; d < R; ++d) {
    if (dl.data()) require_extent(call, "dlogits", dl, d, logits.extent(d), "the shape of 'logits'");
    if (dr.data()) require_extent(call, "dref_logits", dr, d, logits.extent(d), "the shape of 'logits'");
  }
  if (dl.data()) require_row_contiguous(call, "dlogits", dl);
  if (dr.data()) require_row_contiguous(call, "dref_logits", dr);
  const auto m2 = as_rows2(mask);
  if (m2.data())
    for (std::int64_t i = 0; i < m2.extent(0); ++i)
      for (std::int64_t t = 0; t < m2.extent(1); ++t)
        if (m2(i, t) > 1) fail_argument(call, "mask", "values 0 or 1", concat(int(m2(i, t)), " at ", i, ",", t));
  return full_kl_problem<element_of_t<LP>>{as_rows3(logits), as_rows3(ref),    m2, as_rows2(kl_out), as_rows2(dkl),
                                           as_rows3(dl),     as_rows3(dr),     R == 3 ? 1 : 0};
}

struct full_kl_fn {
  /// kl = KL(softmax(logits) || softmax(ref_logits)) per position; returns its moments over counted positions.
  template <backend Bk, viewable LP, viewable LQ, class M>
    requires logit_element<element_of_t<LP>> && std::same_as<element_of_t<LP>, element_of_t<LQ>> &&
             (rank_of_v<LP> == 2 || rank_of_v<LP> == 3) && (rank_of_v<LQ> == rank_of_v<LP>)
  moments operator()(const Bk& b, const LP& logits, const LQ& ref_logits, const M& mask,
                     tensor_view<float, rank_of_v<LP> - 1> kl_out) const {
    // A missing output is an error unless there is nothing to write (the checks below skip a null view's shape).
    if (!kl_out.data() && !as_const_view(logits).empty()) fail_argument("cai::full_kl", "kl", "an output view", "none");
    auto p = make_full_kl_problem("cai::full_kl", logits, ref_logits, mask, kl_out, {}, {}, {});
    return full_kl_cpo::dispatch(b, p);
  }
};

struct full_kl_backward_fn {
  /// dlogits = dkl * dKL/dz and dref_logits = dkl * dKL/dy (either may be empty).
  template <backend Bk, viewable LP, viewable LQ, class M>
    requires logit_element<element_of_t<LP>> && std::same_as<element_of_t<LP>, element_of_t<LQ>> &&
             (rank_of_v<LP> == 2 || rank_of_v<LP> == 3) && (rank_of_v<LQ> == rank_of_v<LP>)
  void operator()(const Bk& b, const LP& logits, const LQ& ref_logits, const M& mask,
                  tensor_view<const float, rank_of_v<LP> - 1> dkl, tensor_view<float, rank_of_v<LP>> dlogits,
                  tensor_view<float, rank_of_v<LP>> dref_logits = {}) const {
    constexpr std::string_view call = "cai::full_kl_backward";
    if (!dkl.data()) fail_argument(call, "dkl", "the upstream gradient", "none");
    auto p = make_full_kl_problem(call, logits, ref_logits, mask, {}, dkl, dlogits, dref_logits);
    full_kl_backward_cpo::dispatch(b, p);
  }
};

}  // namespace detail

/// Per-token KL estimates and their gradients w.r.t. logp. See the header comment.
inline constexpr detail::kl_tokens_fn kl_tokens{};
/// Exact per-position KL between two logit tensors. See the header comment.
inline constexpr detail::full_kl_fn full_kl{};
/// Exact backward of full_kl. See the header comment.
inline constexpr detail::full_kl_backward_fn full_kl_backward{};

}  // namespace cai
