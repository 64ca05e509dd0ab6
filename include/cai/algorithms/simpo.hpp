// cai/algorithms/simpo.hpp — reference-free pairwise objectives: CPO, SimPO and AlphaPO.
//
// TRL trl/experimental/cpo/cpo_trainer.py CPOTrainer.cpo_loss; CPO (Xu et al. 2024, arXiv 2401.08417), SimPO (Meng
// et al. 2024, arXiv 2405.14734), AlphaPO (arXiv 2501.03884). Per pair i, with l_c, l_r the policy log-probs of the
// chosen and rejected completions (sums for cpo::sigmoid and cpo::hinge, MEANS for cpo::simpo and cpo::ipo, as TRL
// feeds them; cai::sequence_logps computes either), and the reward transform
//   R(l) = l                            (alpha = 0)
//   R(l) = (1 - e^(-alpha l)) / alpha   (AlphaPO, alpha != 0;  dR/dl = e^(-alpha l))
// z_i = R(l_c) - R(l_r), and the per-pair loss
//   cpo::sigmoid{beta, eps}        -(1-eps) log s(beta z) - eps log s(-beta z)              (CPO eq. 3)
//   cpo::simpo{beta, gamma, eps}   the same at z - gamma / beta: -log s(beta z - gamma) at eps = 0 (gamma = the
//                                  target margin itself, TRL simpo_gamma)
//   cpo::hinge{beta}               relu(1 - beta z)                                           (relu'(0) = 0)
//   cpo::ipo{beta}                 (z - 1/(2 beta))^2
//   loss = mean_i l_i + nll_coef * NLL     (TRL cpo_alpha, default 1: CPO = preference term + NLL on chosen;
//                                           nll_coef = 0 is pure SimPO/AlphaPO)
// NLL as cai::nll_inputs (TRL: the chosen completion tokens only). Gradients: exact d loss / d l_c, l_r and the NLL
// sums. Metrics (TRL): rewards chosen = mean beta R(l_c), rejected = mean beta R(l_r), margin, accuracy.
//
//   auto r = cai::cpo_loss(cai::host{}, cai::cpo::simpo{.beta = 2.5, .gamma = 1.375}, batch, grads, {.nll_coef = 0});
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <string_view>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/tensor_view.hpp"
#include "dispatch.hpp"
#include "dpo.hpp"
#include "preference.hpp"
#include "sequences.hpp"

namespace cai {

namespace cpo {

/// One pair's loss and its derivative in z.
struct z_value {
  double loss, dz;
};

struct sigmoid {
  double beta = 0.1;
  double label_smoothing = 0.0;
  static constexpr std::string_view name = "sigmoid";
  CAI_HD z_value operator()(double z) const noexcept {
    double l, d;
    dpo::detail::smoothed_logistic(beta * z, label_smoothing, l, d);
    return {l, beta * d};
  }
};

struct simpo {
  double beta = 2.0;   ///< SimPO's paper range 2.0-2.5 (TRL's CPOConfig default beta is 0.1: set it)
  double gamma = 0.5;  ///< target reward margin (TRL simpo_gamma)
  double label_smoothing = 0.0;
  static constexpr std::string_view name = "simpo";
  CAI_HD z_value operator()(double z) const noexcept {
    double l, d;
    dpo::detail::smoothed_logistic(beta * z - gamma, label_smoothing, l, d);
    return {l, beta * d};
  }
};

struct hinge {
  double beta = 0.1;
  static constexpr std::string_view name = "hinge";
  CAI_HD z_value operator()(double z) const noexcept {
    const double u = 1.0 - beta * z;
    return {u > 0.0 ? u : 0.0, u > 0.0 ? -beta : 0.0};
  }
};

struct ipo {
  double beta = 0.1;
  static constexpr std::string_view name = "ipo";
  CAI_HD z_value operator()(double z) const noexcept {
    const double u = z - 1.0 / (2.0 * beta);
    return {u * u, 2.0 * u};
  }
};

template <class L>
concept loss = requires(const L& l, double z) {
  { l(z) } -> std::same_as<z_value>;
  { l.beta } -> std::convertible_to<double>;
};

}  // namespace cpo

struct cpo_options {
  double alpha = 0.0;     ///< AlphaPO reward shape; 0 = the log-prob itself
  double nll_coef = 1.0;  ///< TRL cpo_alpha; > 0 needs batch.nll
};

template <class R>
struct cpo_batch {
  tensor_view<const R, 1> chosen{}, rejected{};  ///< (B) policy log-probs (sums or means, see above)
  nll_inputs<R> nll{};
};

template <class R>
struct cpo_grads {
  tensor_view<R, 1> chosen{}, rejected{}, nll_logp{}, losses{};
};

struct cpo_result {
  double loss = 0.0;
  pair_metrics metrics{};
  double nll = 0.0;
};

template <class R>
struct cpo_problem {
  cpo_batch<R> in;
  cpo_grads<R> out;
  cpo_options opt;
};

namespace detail {
/// AlphaPO's reward transform and its derivative.
CAI_HD inline void alpha_reward(double l, double alpha, double& r, double& dr) noexcept {
  if (alpha == 0.0) {
    r = l;
    dr = 1.0;
    return;
  }
  const double e = std::exp(-alpha * l);
  r = -std::expm1(-alpha * l) / alpha;
  dr = e;
}
}  // namespace detail

namespace generic {

template <bulk_backend Bk, cpo::loss L, class R>
cpo_result cpo_loss(const Bk&, const L& spec, const cpo_problem<R>& p) {
  const std::int64_t n = p.in.chosen.extent(0);
  cpo_result res;
  if (n == 0) return res;
  const double inv = 1.0 / static_cast<double>(n);
  const auto nll = p.opt.nll_coef > 0.0 ? detail::batch_nll(p.in.nll, n) : detail::nll_value{};
  double total = 0.0;
  pair_metrics_sum ms;
  for (std::int64_t i = 0; i < n; ++i) {
    double rc, dc, rr, dr;
    detail::alpha_reward(static_cast<double>(p.in.chosen(i)), p.opt.alpha, rc, dc);
    detail::alpha_reward(static_cast<double>(p.in.rejected(i)), p.opt.alpha, rr, dr);
    const cpo::z_value v = spec(rc - rr);
    total += v.loss;
    ms.add(spec.beta * rc, spec.beta * rr);
    if (p.out.losses.data()) p.out.losses(i) = static_cast<R>(v.loss);
    if (p.out.chosen.data()) p.out.chosen(i) = static_cast<R>(v.dz * dc * inv);
    if (p.out.rejected.data()) p.out.rejected(i) = static_cast<R>(-v.dz * dr * inv);
    if (p.out.nll_logp.data()) p.out.nll_logp(i) = static_cast<R>(p.opt.nll_coef * nll.dlogp);
  }
  res.nll = nll.value;
  res.loss = total * inv + p.opt.nll_coef * nll.value;
  res.metrics = ms.finish();
  return res;
}

}  // namespace generic

CAI_DETAIL_DISPATCH_CONFIGURED(cpo_loss)

namespace detail {

struct cpo_loss_fn {
  template <backend Bk, cpo::loss L, class R>
    requires token_real<R>
  cpo_result operator()(const Bk& b, const L& spec, const cpo_batch<R>& in, const cpo_grads<R>& out = {},
                        const cpo_options& opt = {}) const {
    constexpr std::string_view call = "cai::cpo_loss";
    require_positive(call, concat(L::name, ".beta"), spec.beta);
    if constexpr (requires { spec.label_smoothing; })
      if (!(spec.label_smoothing >= 0.0 && spec.label_smoothing <= 0.5))
        fail_argument(call, concat(L::name, ".label_smoothing"), "a value in [0, 0.5]", spec.label_smoothing);
    if constexpr (requires { spec.gamma; })
      if (!std::isfinite(spec.gamma)) fail_argument(call, "simpo.gamma", "a finite value", spec.gamma);
    if (!std::isfinite(opt.alpha)) fail_argument(call, "alpha", "a finite value", opt.alpha);
    require_non_negative(call, "nll_coef", opt.nll_coef);
    check_pair_values(call, in.chosen, in.rejected);
    const std::int64_t n = in.chosen.extent(0);
    check_nll_inputs(call, in.nll, n, opt.nll_coef > 0.0);
    check_pair_grad(call, "grads.chosen", out.chosen, n);
    check_pair_grad(call, "grads.rejected", out.rejected, n);
    check_pair_grad(call, "grads.nll_logp", out.nll_logp, n);
    check_pair_grad(call, "grads.losses", out.losses, n);
    return cpo_loss_cpo::dispatch(b, spec, cpo_problem<R>{in, out, opt});
  }
};

}  // namespace detail

/// CPO / SimPO / AlphaPO loss, metrics and exact gradients. See the header comment.
inline constexpr detail::cpo_loss_fn cpo_loss{};

}  // namespace cai
