// cai/algorithms/kto.hpp — unpaired preference objectives: KTO and BCO.
//
// Input per example i (all (B)): policy and reference sequence log-probs p_i, q_i of the example's own completion,
// and a label desirable_i in {0, 1}; rho_i = p_i - q_i.
//
// KTO (Ethayarajh et al. 2024, arXiv 2402.01306; TRL trl/trainer/kto_trainer.py KTOTrainer._compute_loss):
//   desirable    l_i = lambda_D (1 - s(beta (rho_i - z0)))
//   undesirable  l_i = lambda_U (1 - s(beta (z0 - rho_i)))
//   loss = mean_i l_i                         (over all B examples; not normalised by the weights, as TRL)
// z0 is the KL reference point, a constant: z0 = max(0, mean of (p - q) over mismatched pairs (x_i, y_{i-1})), the
// policy side computed without gradient. cai::kto_kl_moments gives the mean as a mergeable state, so micro-batches
// and ranks combine exactly; cai::kto_reference_point(state) = max(0, mean). (TRL averages the per-process means
// with equal weight: the same when the per-process batches are equally large.) z0 = 0 gives APO-zero unpaired
// (TRL loss_type "apo_zero_unpaired": 1 - s(beta rho) for desirable, s(beta rho) for undesirable).
//
// BCO (Jung et al. 2024, arXiv 2404.04656; TRL trl/experimental/bco/bco_trainer.py bco_loss):
//   R_i = beta rho_i;  delta = the running mean of every R seen so far, this batch included (updated first)
//   desirable    l_i = -log s(R_i - delta)
//   undesirable  l_i = -log s(-(R_i - delta)) * u_i      (u_i: optional UDM density-ratio weights, constants)
//   loss = mean_i l_i
// The running mean is a cai::moments state the caller keeps (and may merge across ranks); bco_options::update =
// false evaluates without updating it (TRL's evaluation step).
//
// Gradients: d loss / d p_i and d loss / d q_i = -d loss / d p_i (z0, delta and the weights are constants).
// Metrics: rewards chosen = mean beta rho over desirable examples, rejected = over undesirable ones, margin = the
// difference of those means (no pairs, no accuracy, as TRL), and the reference point used.
//
//   auto st = cai::kto_kl_moments(cai::host{}, mismatched_logp, mismatched_ref_logp);
//   auto r = cai::kto_loss(cai::host{}, cai::kto{.beta = 0.1}, batch, cai::kto_reference_point(st), grads);
#pragma once

#include <algorithm>
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

template <class R>
struct unpaired_batch {
  tensor_view<const R, 1> logp{}, ref_logp{};      ///< (B) sequence log-probs of each example's completion
  tensor_view<const std::uint8_t, 1> desirable{};  ///< (B) 1 = desirable, 0 = undesirable
  tensor_view<const R, 1> weights{};               ///< (B) optional BCO UDM density ratios (undesirable rows only)
};

template <class R>
struct unpaired_grads {
  tensor_view<R, 1> logp{}, ref_logp{}, losses{};
};

/// KTO hyper-parameters (TRL defaults).
struct kto {
  double beta = 0.1;
  double desirable_weight = 1.0;    ///< lambda_D
  double undesirable_weight = 1.0;  ///< lambda_U
};

/// BCO hyper-parameters.
struct bco {
  double beta = 0.1;
};

struct bco_options {
  moments* running = nullptr;  ///< the running reward state (required); updated with this batch's rewards first
  bool update = true;          ///< false: evaluation (delta = the current state's mean, state untouched)
};

struct unpaired_result {
  double loss = 0.0;
  double rewards_chosen = 0.0;    ///< mean beta rho over desirable examples (0 if none)
  double rewards_rejected = 0.0;  ///< mean beta rho over undesirable examples (0 if none)
  double margin = 0.0;            ///< rewards_chosen - rewards_rejected
  std::int64_t desirable = 0, undesirable = 0;
  double reference = 0.0;  ///< z0 (KTO) or delta (BCO)
};

template <class R>
struct unpaired_problem {
  unpaired_batch<R> in;
  unpaired_grads<R> out;
  double reference = 0.0;  // z0 or delta
};

/// max(0, mean) of the mismatched-pair KL state: KTO's reference point z0.
inline double kto_reference_point(const moments& kl) noexcept { return kl.count > 0 ? std::max(0.0, kl.mean) : 0.0; }

namespace detail {

/// Per-example loss and d loss / d rho of KTO (bco = false) or BCO (bco = true); CAI_HD, shared by all backends.
CAI_HD inline void unpaired_point(bool is_bco, double beta, double wd, double wu, double rho, double ref, bool desirable,
                                  double& loss, double& drho) noexcept {
  if (is_bco) {
    const double u = beta * rho - ref;
    if (desirable) {
      loss = -log_sigmoid(u);
      drho = -beta * sigmoid(-u);
    } else {
      loss = -log_sigmoid(-u);
      drho = beta * sigmoid(u);
    }
  } else {
    const double u = beta * (rho - ref);
    // 1 - s(x) is written s(-x): exact where s(x) rounds to 1.
    if (desirable) {  // 1 - s(u), d/du = -s(u) s(-u)
      const double s = sigmoid(u);
      loss = wd * sigmoid(-u);
      drho = -wd * beta * s * sigmoid(-u);
    } else {  // 1 - s(-u)
      const double s = sigmoid(-u);
      loss = wu * sigmoid(u);
      drho = wu * beta * s * sigmoid(u);
    }
  }
}

template <class R>
unpaired_result unpaired_loss(bool is_bco, double beta, double wd, double wu, const unpaired_problem<R>& p) {
  const auto& in = p.in;
  const std::int64_t n = in.logp.extent(0);
  unpaired_result res;
  res.reference = p.reference;
  if (n == 0) return res;
  const double inv = 1.0 / static_cast<double>(n);
  double total = 0.0, rc = 0.0, rr = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double rho = static_cast<double>(in.logp(i)) - static_cast<double>(in.ref_logp(i));
    const bool des = in.desirable(i) != 0;
    // The UDM weights reweigh undesirable examples only (TRL bco_trainer: desirable examples weigh 1).
    const double w = in.weights.data() && !des ? static_cast<double>(in.weights(i)) : 1.0;
    double l = 0.0, d = 0.0;
    unpaired_point(is_bco, beta, wd, wu, rho, p.reference, des, l, d);
    l *= w;
    d *= w;
    total += l;
    (des ? rc : rr) += beta * rho;
    (des ? res.desirable : res.undesirable) += 1;
    if (p.out.losses.data()) p.out.losses(i) = static_cast<R>(l);
    if (p.out.logp.data()) p.out.logp(i) = static_cast<R>(d * inv);
    if (p.out.ref_logp.data()) p.out.ref_logp(i) = static_cast<R>(-d * inv);
  }
  res.loss = total * inv;
  res.rewards_chosen = res.desirable ? rc / static_cast<double>(res.desirable) : 0.0;
  res.rewards_rejected = res.undesirable ? rr / static_cast<double>(res.undesirable) : 0.0;
  res.margin = res.rewards_chosen - res.rewards_rejected;
  return res;
}

}  // namespace detail

namespace generic {
template <bulk_backend B, class R>
unpaired_result kto_loss(const B&, const kto& spec, const unpaired_problem<R>& p) {
  return detail::unpaired_loss(false, spec.beta, spec.desirable_weight, spec.undesirable_weight, p);
}
template <bulk_backend B, class R>
unpaired_result bco_loss(const B&, const bco& spec, const unpaired_problem<R>& p) {
  return detail::unpaired_loss(true, spec.beta, 1.0, 1.0, p);
}
}  // namespace generic

CAI_DETAIL_DISPATCH_CONFIGURED(kto_loss)
CAI_DETAIL_DISPATCH_CONFIGURED(bco_loss)

namespace detail {

template <class R>
void check_unpaired(std::string_view call, const unpaired_batch<R>& in, const unpaired_grads<R>& out, bool weights_allowed) {
  const std::int64_t n = in.logp.extent(0);
  check_finite_values(call, "logp", in.logp);
  if (!in.ref_logp.data() && n > 0) fail_argument(call, "ref_logp", "reference log-probs (B)", "none");
  require_per_row(call, "ref_logp", in.ref_logp, n);
  check_finite_values(call, "ref_logp", in.ref_logp);
  if (!in.desirable.data() && n > 0) fail_argument(call, "desirable", "(B) labels 0/1", "none");
  require_per_row(call, "desirable", in.desirable, n);
  for (std::int64_t i = 0; i < n; ++i)
    if (in.desirable(i) > 1) fail_argument(call, "desirable", "values 0 or 1", concat(int(in.desirable(i)), " at ", i));
  if (in.weights.data()) {
    if (!weights_allowed) fail_argument(call, "weights", "none (KTO weighs by desirable_weight / undesirable_weight)", "a view");
    require_per_row(call, "weights", in.weights, n);
    for (std::int64_t i = 0; i < n; ++i)
      if (!(in.weights(i) >= R(0)) || !std::isfinite(in.weights(i)))
        fail_argument(call, "weights", "finite values >= 0", concat(in.weights(i), " at ", i));
  }
  check_pair_grad(call, "grads.logp", out.logp, n);
  check_pair_grad(call, "grads.ref_logp", out.ref_logp, n);
  check_pair_grad(call, "grads.losses", out.losses, n);
}

struct kto_kl_moments_fn {
  /// Moments of p - q over the mismatched pairs (the mean's state; merge across micro-batches and ranks).
  template <backend Bk, class R>
    requires token_real<R>
  moments operator()(const Bk&, const tensor_view<const R, 1>& logp,
                     const tensor_view<const R, 1>& ref_logp) const {
    constexpr std::string_view call = "cai::kto_kl_moments";
    check_pair_values(call, logp, ref_logp, "logp", "ref_logp");
    return moments_of_values(
        logp.extent(0), [&](std::int64_t i) { return static_cast<double>(logp(i)) - static_cast<double>(ref_logp(i)); },
        [](std::int64_t) { return true; });
  }
};

struct kto_loss_fn {
  /// KTO loss with the reference point z0 (a constant, >= 0). See the header comment.
  template <backend Bk, class R>
    requires token_real<R>
  unpaired_result operator()(const Bk& b, const kto& spec, const unpaired_batch<R>& in, double z0,
                             const unpaired_grads<R>& out = {}) const {
    constexpr std::string_view call = "cai::kto_loss";
    require_positive(call, "kto.beta", spec.beta);
    require_non_negative(call, "kto.desirable_weight", spec.desirable_weight);
    require_non_negative(call, "kto.undesirable_weight", spec.undesirable_weight);
    require_non_negative(call, "z0", z0);
    check_unpaired(call, in, out, false);
    return kto_loss_cpo::dispatch(b, spec, unpaired_problem<R>{in, out, z0});
  }
};

struct bco_loss_fn {
  /// BCO loss with the running reward mean (updated with this batch first unless opt.update is false).
  template <backend Bk, class R>
    requires token_real<R>
  unpaired_result operator()(const Bk& b, const bco& spec, const unpaired_batch<R>& in, const bco_options& opt,
                             const unpaired_grads<R>& out = {}) const {
    constexpr std::string_view call = "cai::bco_loss";
    require_positive(call, "bco.beta", spec.beta);
    if (!opt.running) fail_argument(call, "running", "the running reward state (a cai::moments the caller keeps)", "null");
    if (opt.running->count < 0 || !std::isfinite(opt.running->mean))
      fail_argument(call, "running", "a valid state (count >= 0, finite mean)", concat(opt.running->count, ", ", opt.running->mean));
    check_unpaired(call, in, out, true);
    if (opt.update) {
      const auto batch = moments_of_values(
          in.logp.extent(0),
          [&](std::int64_t i) { return spec.beta * (static_cast<double>(in.logp(i)) - static_cast<double>(in.ref_logp(i))); },
          [](std::int64_t) { return true; });
      *opt.running = merge(*opt.running, batch);
    }
    return bco_loss_cpo::dispatch(b, spec, unpaired_problem<R>{in, out, opt.running->count > 0 ? opt.running->mean : 0.0});
  }
};

}  // namespace detail

/// Mergeable moments of the mismatched-pair log-ratios (KTO's KL estimate).
inline constexpr detail::kto_kl_moments_fn kto_kl_moments{};
/// KTO (and APO-zero unpaired with z0 = 0). See the header comment.
inline constexpr detail::kto_loss_fn kto_loss{};
/// BCO with a running reward mean. See the header comment.
inline constexpr detail::bco_loss_fn bco_loss{};

}  // namespace cai
