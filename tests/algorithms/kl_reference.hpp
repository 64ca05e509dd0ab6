// An independent long-double model of cai's KL estimators (k1, k2, k3 in its log-ratio form r - 1 - log r, abs, with
// the log-ratio and estimate clamps), shared by tests/algorithms/kl.cpp and tests/algorithms/rewards.cpp.
#pragma once

#include <cai/algorithms/kl.hpp>

#include <cmath>
#include <limits>
#include <tuple>

namespace cai_test::klref {

using ld = long double;
inline constexpr double inf = std::numeric_limits<double>::infinity();

enum class kind { k1, k2, k3, abs };
struct ref_plain {
  kind k;
  double lc = inf, kc = inf;
};
inline ld raw_value(kind k, ld d) {
  switch (k) {
    case kind::k1: return d;
    case kind::k2: return d * d / 2;
    case kind::k3: {
      const ld r = std::exp(-d);  // r = q / p = exp(ref_logp - logp)
      return r - 1 - std::log(r);
    }
    case kind::abs: return d < 0 ? -d : d;
  }
  return 0;
}
inline ld clamp_to(ld v, ld lo, ld hi) { return v < lo ? lo : (v > hi ? hi : v); }
inline ld ref_value(const ref_plain& e, ld d) {
  return clamp_to(raw_value(e.k, clamp_to(d, -static_cast<ld>(e.lc), static_cast<ld>(e.lc))), -static_cast<ld>(e.kc),
                  static_cast<ld>(e.kc));
}
// True when no clamp bound and no kink of |d| lies in [d - h, d + h] (where finite differences are meaningful).
inline bool smooth_near(const ref_plain& e, ld d, ld h) {
  auto side = [&](ld x) {
    const ld v = raw_value(e.k, clamp_to(x, -static_cast<ld>(e.lc), static_cast<ld>(e.lc)));
    return std::tuple{x < -e.lc, x > e.lc, v < -e.kc, v > e.kc, e.k == kind::abs && x < 0};
  };
  return side(d - h) == side(d + h);
}
inline ld ref_grad_fd(const ref_plain& e, ld d) {
  const ld h = 1e-6L * (1 + std::fabs(d));
  return (ref_value(e, d + h) - ref_value(e, d - h)) / (2 * h);
}

struct ref_est {
  ref_plain value, grad;
};
inline ref_est same_both(const ref_plain& e) { return {e, e}; }
inline ref_est ref_of(const cai::kl::k1& e) { return same_both({kind::k1, e.log_ratio_clamp, e.kl_clamp}); }
inline ref_est ref_of(const cai::kl::k2& e) { return same_both({kind::k2, e.log_ratio_clamp, e.kl_clamp}); }
inline ref_est ref_of(const cai::kl::k3& e) { return same_both({kind::k3, e.log_ratio_clamp, e.kl_clamp}); }
inline ref_est ref_of(const cai::kl::abs& e) { return same_both({kind::abs, e.log_ratio_clamp, e.kl_clamp}); }
template <class V, class G>
inline ref_est ref_of(const cai::kl::straight_through<V, G>& e) {
  return {ref_of(e.value_estimator).value, ref_of(e.grad_estimator).grad};
}
inline kind kind_of(cai::kl::any::kind k) {
  switch (k) {
    case cai::kl::any::kind::k1: return kind::k1;
    case cai::kl::any::kind::k2: return kind::k2;
    case cai::kl::any::kind::k3: return kind::k3;
    default: return kind::abs;
  }
}
// As documented: the grad_* clamps belong to the gradient estimator of a straight-through pair only.
inline ref_est ref_of(const cai::kl::any& e) {
  const ref_plain v{kind_of(e.value_kind), e.log_ratio_clamp, e.kl_clamp};
  if (e.value_kind == e.grad_kind) return {v, v};
  return {v, {kind_of(e.grad_kind), e.grad_log_ratio_clamp, e.grad_kl_clamp}};
}

}  // namespace cai_test::klref
