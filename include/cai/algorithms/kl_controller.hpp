// cai/algorithms/kl_controller.hpp — the KL coefficient schedule: fixed, or adaptive towards a target KL.
//
// Adaptive (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", section 2.2; TRL
// trl/trainer/utils.py AdaptiveKLController, OpenRLHF openrlhf/models/utils.py and verl core_algos.py
// AdaptiveKLController — all three agree):
//   e    = clip(current_kl / target - 1, -error_clip, +error_clip)
//   beta = beta * (1 + e * n_steps / horizon)
// so beta grows while the measured KL exceeds the target and shrinks while it is below. Defaults follow
// Ziegler et al. / TRL (init 0.2, target 6, horizon 10000, clip 0.2); verl's example config uses target 0.1.
// current_kl is the batch mean of per-sequence KL sums (TRL) or of per-token means (verl): pass the same quantity
// the target was chosen for. Both controllers are plain values (copyable, serialisable as their fields).
//
//   cai::adaptive_kl_controller ctl{{.init = 0.2, .target = 6.0, .horizon = 10000}};
//   ctl.update(measured_kl, batch_size);  double beta = ctl.value();
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

#include "../core/error.hpp"

namespace cai {

/// A constant coefficient.
class fixed_kl_controller {
 public:
  explicit fixed_kl_controller(double beta = 0.05) : beta_(beta) {
    if (!(beta >= 0.0) || !std::isfinite(beta)) detail::fail_argument("cai::fixed_kl_controller", "beta", "a finite value >= 0", beta);
  }
  double value() const noexcept { return beta_; }
  /// Validates its arguments like the adaptive controller and changes nothing.
  void update(double current_kl, std::int64_t n_steps) const {
    if (!std::isfinite(current_kl)) detail::fail_argument("cai::fixed_kl_controller::update", "current_kl", "a finite value", current_kl);
    if (n_steps < 0) detail::fail_argument("cai::fixed_kl_controller::update", "n_steps", "n_steps >= 0", n_steps);
  }

 private:
  double beta_;
};

struct adaptive_kl_options {
  double init = 0.2;        ///< initial coefficient, finite and > 0
  double target = 6.0;      ///< target KL, > 0
  double horizon = 10000;   ///< steps over which a full clipped error changes beta by that fraction, > 0
  double error_clip = 0.2;  ///< bound on the proportional error, > 0
};

/// Multiplicative proportional controller of beta: see the header comment.
class adaptive_kl_controller {
 public:
  explicit adaptive_kl_controller(const adaptive_kl_options& o = {}) : o_(o), beta_(o.init) {
    constexpr std::string_view call = "cai::adaptive_kl_controller";
    if (!(o.init > 0.0) || !std::isfinite(o.init)) detail::fail_argument(call, "init", "a finite value > 0", o.init);
    if (!(o.target > 0.0) || !std::isfinite(o.target)) detail::fail_argument(call, "target", "a finite value > 0", o.target);
    if (!(o.horizon > 0.0) || !std::isfinite(o.horizon)) detail::fail_argument(call, "horizon", "a finite value > 0", o.horizon);
    if (!(o.error_clip > 0.0) || !std::isfinite(o.error_clip))
      detail::fail_argument(call, "error_clip", "a finite value > 0", o.error_clip);
  }
  double value() const noexcept { return beta_; }
  const adaptive_kl_options& options() const noexcept { return o_; }

  /// One update after n_steps samples whose KL was current_kl. Returns the new coefficient.
  double update(double current_kl, std::int64_t n_steps) {
    constexpr std::string_view call = "cai::adaptive_kl_controller::update";
    if (!std::isfinite(current_kl)) detail::fail_argument(call, "current_kl", "a finite value", current_kl);
    if (n_steps < 0) detail::fail_argument(call, "n_steps", "n_steps >= 0", n_steps);
    double e = current_kl / o_.target - 1.0;
    e = e < -o_.error_clip ? -o_.error_clip : (e > o_.error_clip ? o_.error_clip : e);
    const double mult = 1.0 + e * static_cast<double>(n_steps) / o_.horizon;
    // A multiplier <= 0 (n_steps >> horizon with a negative error) would flip or zero beta; keep it positive.
    beta_ *= mult > 1e-3 ? mult : 1e-3;
    return beta_;
  }
  /// Restores a saved coefficient (resuming a run).
  void set_value(double beta) {
    if (!(beta > 0.0) || !std::isfinite(beta)) detail::fail_argument("cai::adaptive_kl_controller::set_value", "beta", "a finite value > 0", beta);
    beta_ = beta;
  }

 private:
  adaptive_kl_options o_;
  double beta_;
};

}  // namespace cai
