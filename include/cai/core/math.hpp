// cai/core/math.hpp — numerically stable scalar math shared by the host and device paths.
//
// All functions are CAI_HD templates over float and double, defined on the whole extended real line:
//   softplus(x)     = log(1 + e^x)         = max(x, 0) + log1p(e^-|x|)           softplus(+inf) = +inf
//   log_sigmoid(x)  = log(1 / (1 + e^-x))  = min(x, 0) - log1p(e^-|x|)           log_sigmoid(-inf) = -inf
//   log1mexp(x)     = log(1 - e^x), x <= 0 (Maechler 2012: log(-expm1 x) for x > -ln 2, else log1p(-e^x))
//                     log1mexp(0) = -inf; x > 0 gives NaN (outside the domain).
// NaN in gives NaN out. Nothing overflows for finite input of any magnitude (checked at +-1e4 and at
// subnormals in tests/core/math.cpp).
//
// Online soft-max statistics: softmax_state holds (m, s, t) over a set of values x_i with
//   m = max x_i,   s = sum e^(x_i - m),   t = sum e^(x_i - m) (x_i - m)
// so that  lse = m + log s  and the entropy of softmax(x) is  H = log s - t / s.  Keeping t relative to m avoids
// the cancellation of lse - E[x] when |x| ~ 1e4. merge() is associative and commutative up to rounding, with
// the empty state (m = -inf) as identity; -inf values contribute nothing.
#pragma once

#include <cmath>
#include <limits>

#include "config.hpp"

namespace cai {

/// +infinity and a quiet NaN of R, usable in host and device code (std::numeric_limits is host-only under nvcc).
template <class R>
CAI_HD constexpr R infinity_v() noexcept {
  if constexpr (sizeof(R) == sizeof(float)) return __builtin_huge_valf();
  else return __builtin_huge_val();
}
template <class R>
CAI_HD constexpr R quiet_nan_v() noexcept {
  if constexpr (sizeof(R) == sizeof(float)) return __builtin_nanf("");
  else return __builtin_nan("");
}

template <class R>
CAI_HD inline R softplus(R x) noexcept {
  using std::exp;
  using std::fabs;
  using std::log1p;
  const R pos = x > R(0) ? x : R(0);
  return pos + log1p(exp(-fabs(x)));
}

template <class R>
CAI_HD inline R log_sigmoid(R x) noexcept {
  using std::exp;
  using std::fabs;
  using std::log1p;
  const R neg = x < R(0) ? x : R(0);
  return neg - log1p(exp(-fabs(x)));
}

/// sigmoid(x) = 1 / (1 + e^-x), evaluated without overflow for either sign.
template <class R>
CAI_HD inline R sigmoid(R x) noexcept {
  using std::exp;
  if (x >= R(0)) return R(1) / (R(1) + exp(-x));
  const R e = exp(x);
  return e / (R(1) + e);
}

template <class R>
CAI_HD inline R log1mexp(R x) noexcept {
  using std::exp;
  using std::expm1;
  using std::log;
  using std::log1p;
  if (x > R(0)) return quiet_nan_v<R>();
  constexpr R minus_ln2 = R(-0.693147180559945309417232121458176568);
  return x > minus_ln2 ? log(-expm1(x)) : log1p(-exp(x));
}

/// Online log-sum-exp: (m, s) with s = sum e^(x - m). Identity: m = -inf, s = 0.
template <class R>
struct lse_state {
  R m = -infinity_v<R>();
  R s = R(0);

  CAI_HD void push(R x) noexcept { *this = merge(*this, lse_state{x, R(1)}); }
  CAI_HD R value() const noexcept {
    using std::log;
    return m + log(s);
  }
  /// Associative merge. NaN in either state gives NaN; +inf gives +inf; the empty state is the identity.
  CAI_HD static lse_state merge(const lse_state& a, const lse_state& b) noexcept {
    using std::exp;
    constexpr R inf = infinity_v<R>();
    if (a.m != a.m || b.m != b.m) return lse_state{a.m + b.m, R(1)};
    if (a.s == R(0)) return b;
    if (b.s == R(0)) return a;
    if (a.m == inf || b.m == inf) return lse_state{inf, R(1)};
    const R m = a.m > b.m ? a.m : b.m;
    return lse_state{m, a.s * exp(a.m - m) + b.s * exp(b.m - m)};
  }
};

/// Online soft-max statistics (m, s, t); see the header comment.
template <class R>
struct softmax_state {
  R m = -infinity_v<R>();
  R s = R(0);
  R t = R(0);

  /// Adds one value. -inf adds nothing; +inf or NaN make the state NaN (the distribution is undefined).
  CAI_HD void push(R x) noexcept {
    if (x == -infinity_v<R>()) return;
    *this = merge(*this, softmax_state{x, R(1), R(0)});
  }
  CAI_HD bool empty() const noexcept { return s == R(0) && t == R(0) && m == -infinity_v<R>(); }

  CAI_HD static softmax_state merge(const softmax_state& a, const softmax_state& b) noexcept {
    using std::exp;
    if (a.empty()) return b;
    if (b.empty()) return a;
    const R m = a.m > b.m ? a.m : b.m;
    if (!(m - m == R(0))) return nan_state();  // NaN or +inf somewhere
    const R da = a.m - m, db = b.m - m;         // both <= 0 and finite
    const R ea = exp(da), eb = exp(db);
    return softmax_state{m, a.s * ea + b.s * eb, ea * (a.t + da * a.s) + eb * (b.t + db * b.s)};
  }
  /// log sum e^x: -inf for the empty state, NaN for a poisoned one.
  CAI_HD R lse() const noexcept {
    using std::log;
    return m + log(s);
  }
  /// Entropy of softmax(x): log s - t / s (0 for a one-hot distribution).
  CAI_HD R entropy() const noexcept {
    using std::log;
    return log(s) - t / s;
  }
  CAI_HD static softmax_state nan_state() noexcept {
    const R n = quiet_nan_v<R>();
    return softmax_state{n, n, n};
  }
};

}  // namespace cai
