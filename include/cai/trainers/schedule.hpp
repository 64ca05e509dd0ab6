// cai/trainers/schedule.hpp — learning-rate schedules for the trainers: constant, linear decay and cosine decay,
// each after a linear warm-up.
//
// For optimiser step s = 0, 1, 2, ... (the step about to be taken), W = warmup_steps, N = total_steps:
//   s < W            lr = peak * s / W                                  (HF get_*_schedule_with_warmup: step 0 is 0)
//   constant         lr = peak                                          (N is not read)
//   linear           lr = min_lr + (peak - min_lr) * (1 - p)            p = clamp((s - W) / (N - W), 0, 1)
//   cosine           lr = min_lr + (peak - min_lr) * (1 + cos(pi p)) / 2
// (for N == W the decay phase has length 0: lr = min_lr from step W on). Steps past N keep min_lr.
// Validated on construction by the factories and by validate(): peak finite > 0, warmup >= 0, min_lr in [0, peak],
// and for the decaying schedules total >= 1 and warmup <= total; cai::invalid_argument names the field.
//
//   auto s = cai::cosine_schedule(3e-4, /*warmup=*/10, /*total=*/100);   s.lr(0) == 0;  s.lr(10) == 3e-4
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string_view>

#include "../core/error.hpp"

namespace cai {

enum class lr_decay : std::uint8_t { constant, linear, cosine };

struct lr_schedule {
  double peak = 1e-3;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 0;  ///< optimiser steps the decay spans (not read by constant)
  lr_decay decay = lr_decay::constant;
  double min_lr = 0.0;           ///< the final learning rate of linear and cosine

  /// Throws cai::invalid_argument naming the first bad field.
  void validate(std::string_view call = "cai::lr_schedule") const {
    if (!(peak > 0.0) || !std::isfinite(peak)) detail::fail_argument(call, "peak", "a finite learning rate > 0", peak);
    if (warmup_steps < 0) detail::fail_argument(call, "warmup_steps", "a value >= 0", warmup_steps);
    if (!(min_lr >= 0.0 && min_lr <= peak)) detail::fail_argument(call, "min_lr", detail::concat("a value in [0, peak = ", peak, "]"), min_lr);
    if (decay != lr_decay::constant) {
      if (total_steps < 1) detail::fail_argument(call, "total_steps", "a value >= 1", total_steps);
      if (warmup_steps > total_steps)
        detail::fail_argument(call, "warmup_steps", detail::concat("a value <= total_steps = ", total_steps), warmup_steps);
    }
  }

  /// The learning rate of optimiser step `step` (>= 0).
  double lr(std::int64_t step) const {
    if (step < 0) detail::fail_argument("cai::lr_schedule::lr", "step", "a value >= 0", step);
    if (step < warmup_steps) return peak * static_cast<double>(step) / static_cast<double>(warmup_steps);
    if (decay == lr_decay::constant) return peak;
    const std::int64_t span = total_steps - warmup_steps;
    const double p = span <= 0 ? 1.0 : std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(span), 0.0, 1.0);
    const double f = decay == lr_decay::linear ? 1.0 - p : 0.5 * (1.0 + std::cos(std::numbers::pi * p));
    return min_lr + (peak - min_lr) * f;
  }
};

/// peak after `warmup` linear steps, then constant.
inline lr_schedule constant_schedule(double peak, std::int64_t warmup = 0) {
  lr_schedule s{.peak = peak, .warmup_steps = warmup, .total_steps = 0, .decay = lr_decay::constant, .min_lr = 0.0};
  s.validate("cai::constant_schedule");
  return s;
}
/// Linear warm-up to peak, then linear decay to min_lr at step `total`.
inline lr_schedule linear_schedule(double peak, std::int64_t warmup, std::int64_t total, double min_lr = 0.0) {
  lr_schedule s{.peak = peak, .warmup_steps = warmup, .total_steps = total, .decay = lr_decay::linear, .min_lr = min_lr};
  s.validate("cai::linear_schedule");
  return s;
}
/// Linear warm-up to peak, then half-cosine decay to min_lr at step `total`.
inline lr_schedule cosine_schedule(double peak, std::int64_t warmup, std::int64_t total, double min_lr = 0.0) {
  lr_schedule s{.peak = peak, .warmup_steps = warmup, .total_steps = total, .decay = lr_decay::cosine, .min_lr = min_lr};
  s.validate("cai::cosine_schedule");
  return s;
}

}  // namespace cai
