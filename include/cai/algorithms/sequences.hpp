// cai/algorithms/sequences.hpp — the two token layouts every sequence algorithm accepts, and their checks.
//
// DESIGN.md, data conventions: token-level data comes either
//   right-padded   (B, T) views with a (B, T) uint8 mask (1 = counted; several spans per row allowed), or
//   packed         (1, N) views holding B sequences back to back, with offsets cu_seqlens (B + 1):
//                  sequence b occupies [cu_seqlens[b], cu_seqlens[b + 1]); cu_seqlens[0] = 0, non-decreasing,
//                  cu_seqlens[B] = N (flash-attention's convention). cai::packed(v) turns an (N) view into (1, N).
// Either way an algorithm sees B rows, row b being a contiguous run of length L_b (T when padded). Masks are
// optional in the packed layout (every token counts) and always may be cai::no_mask.
//
// Per-sequence quantities (scores, sequence advantages, per-row statistics) are (B) in both layouts.
#pragma once

#include <bit>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"

namespace cai {

/// Views an (N) buffer as the (1, N) row of the packed layout.
template <class T, class S>
tensor_view<T, 2, S> packed(const tensor_view<T, 1, S>& v) {
  return tensor_view<T, 2, S>(v.data(), {1, v.extent(0)}, {v.extent(0) * v.stride(0), v.stride(0)});
}

/// Where the rows of a token batch are: B rows, row b starting at element begin(b) of its view's (flattened) data
/// and holding length(b) tokens. Built and checked by detail::make_layout.
struct row_layout {
  std::int64_t rows = 0;           ///< B
  std::int64_t width = 0;          ///< T when padded; the longest sequence when packed
  const std::int64_t* cu = nullptr;  ///< packed offsets (B + 1), or null when padded

  CAI_HD constexpr bool is_packed() const noexcept { return cu != nullptr; }
  CAI_HD constexpr std::int64_t length(std::int64_t b) const noexcept { return cu ? cu[b + 1] - cu[b] : width; }
  /// Pointer to the first token of row b in a view laid out like the batch's reference view.
  template <class T>
  CAI_HD T* row(const tensor_view<T, 2, host_space>& v, std::int64_t b) const noexcept {
    return cu ? v.data() + cu[b] * v.stride(1) : v.data() + b * v.stride(0);
  }
};

/// A mergeable summary of values: count, mean and the sum of squared deviations M2 (Chan et al. 1979, the
/// parallel form of Welford's update). Merging micro-batch states gives the full-batch state, so statistics
/// combine exactly across micro-batches and ranks (send the three numbers).
struct moments {
  std::int64_t count = 0;
  double mean = 0.0;
  double m2 = 0.0;

  /// The state of the union of two disjoint sets of values. Not commutative in the last bits: merge in a fixed order.
  friend CAI_HD constexpr moments merge(const moments& a, const moments& b) noexcept {
    if (a.count == 0) return b;
    if (b.count == 0) return a;
    const double na = static_cast<double>(a.count), nb = static_cast<double>(b.count), n = na + nb;
    const double delta = b.mean - a.mean;
    return moments{a.count + b.count, a.mean + delta * (nb / n), a.m2 + b.m2 + delta * delta * (na * nb / n)};
  }
  /// Variance: M2 / (n - 1) with Bessel's correction (0 when n < 2), else M2 / n (0 when n = 0).
  CAI_HD constexpr double variance(bool bessel = true) const noexcept {
    if (bessel) return count > 1 ? m2 / static_cast<double>(count - 1) : 0.0;
    return count > 0 ? m2 / static_cast<double>(count) : 0.0;
  }
  double stddev(bool bessel = true) const noexcept { return std::sqrt(variance(bessel)); }
};

namespace detail {

/// Moments of value(i) for i in [0, n) where keep(i); two passes (mean, then squared deviations) so a chunk's M2
/// keeps full accuracy even when the mean is large compared with the spread.
template <class Value, class Keep>
CAI_HD moments moments_of_values(std::int64_t n, Value&& value, Keep&& keep) noexcept {
  std::int64_t c = 0;
  double s = 0.0;
  for (std::int64_t i = 0; i < n; ++i)
    if (keep(i)) {
      s += static_cast<double>(value(i));
      ++c;
    }
  if (c == 0) return {};
  const double mean = s / static_cast<double>(c);
  double m2 = 0.0;
  for (std::int64_t i = 0; i < n; ++i)
    if (keep(i)) {
      const double d = static_cast<double>(value(i)) - mean;
      m2 += d * d;
    }
  return moments{c, mean, m2};
}

/// Moments of x[i] for i in [0, n) where keep(i).
template <class T, class Keep>
CAI_HD moments moments_of(const T* x, std::int64_t n, Keep&& keep) noexcept {
  return moments_of_values(n, [x](std::int64_t i) { return x[i]; }, keep);
}

using mask_view2 = tensor_view<const std::uint8_t, 2, host_space>;

/// Storage types of token-level float data (log-probs, rewards, values, advantages).
template <class R>
concept token_real = std::same_as<R, float> || std::same_as<R, double>;

/// The mask as a view ({} for cai::no_mask), in memory space S.
template <class M, class S = host_space>
tensor_view<const std::uint8_t, 2, S> token_mask_of(const M& mask) {
  if constexpr (std::is_same_v<std::remove_cvref_t<M>, no_mask_t>) {
    return {};
  } else {
    static_assert(viewable<M>, "mask: pass a uint8 (B,T) or (1,N) view/tensor, or cai::no_mask");
    static_assert(std::is_same_v<element_of_t<M>, std::uint8_t>, "mask: element type must be std::uint8_t (0/1)");
    static_assert(rank_of_v<M> == 2, "mask: must be (B,T), or (1,N) in the packed layout");
    static_assert(std::is_same_v<space_of_t<M>, S>, "mask: must live in the memory space of the other inputs");
    return as_const_view(mask);
  }
}

/// Checks cu_seqlens (if given) against the reference view `ref` named `ref_name`, and returns the layout.
template <class T>
row_layout make_layout(std::string_view call, std::string_view ref_name, const tensor_view<T, 2, host_space>& ref,
                       const tensor_view<const std::int64_t, 1, host_space>& cu) {
  row_layout L;
  if (cu.data() == nullptr && cu.empty()) {
    L.rows = ref.extent(0);
    L.width = ref.extent(1);
    return L;
  }
  if (ref.extent(0) != 1)
    fail_argument<shape_error>(call, ref_name, "a (1, N) view in the packed layout (cu_seqlens given)",
                               concat("(", ref.extent(0), ", ", ref.extent(1), ")"));
  if (cu.extent(0) < 1) fail_argument<shape_error>(call, "cu_seqlens", "B + 1 >= 1 offsets", cu.extent(0));
  if (cu.stride(0) != 1 && cu.extent(0) > 1)
    fail_argument<layout_error>(call, "cu_seqlens", "a contiguous view", concat("stride ", cu.stride(0)));
  const std::int64_t* c = cu.data();
  if (c[0] != 0) fail_argument(call, "cu_seqlens", "cu_seqlens[0] == 0", c[0]);
  std::int64_t widest = 0;
  for (std::int64_t b = 1; b < cu.extent(0); ++b) {
    if (c[b] < c[b - 1])
      fail_argument(call, "cu_seqlens", "non-decreasing offsets", concat(c[b - 1], " then ", c[b], " at ", b));
    widest = c[b] - c[b - 1] > widest ? c[b] - c[b - 1] : widest;
  }
  if (c[cu.extent(0) - 1] != ref.extent(1))
    fail_argument<shape_error>(call, "cu_seqlens", concat("last offset == N == ", ref.extent(1)),
                               c[cu.extent(0) - 1]);
  L.rows = cu.extent(0) - 1;
  L.width = widest;
  L.cu = c;
  return L;
}

/// A token view must match the reference view's shape and be contiguous along the tokens.
template <class T, class U, class S>
void require_like(std::string_view call, std::string_view name, const tensor_view<T, 2, S>& v,
                  std::string_view ref_name, const tensor_view<U, 2, S>& ref) {
  if (v.extent(0) != ref.extent(0) || v.extent(1) != ref.extent(1))
    fail_argument<shape_error>(call, name,
                               concat("the shape of '", ref_name, "' (", ref.extent(0), ", ", ref.extent(1), ")"),
                               concat("(", v.extent(0), ", ", v.extent(1), ")"));
  require_row_contiguous(call, name, v);
}

/// A per-sequence view must hold one value per row.
template <class T, class S>
void require_per_row(std::string_view call, std::string_view name, const tensor_view<T, 1, S>& v,
                     std::int64_t rows) {
  if (v.extent(0) != rows) fail_argument<shape_error>(call, name, concat("one value per sequence (", rows, ")"), v.extent(0));
}

/// Mask values must be 0 or 1 (checked over the tokens that belong to a row).
inline void check_mask_values(std::string_view call, const mask_view2& mask, const row_layout& L,
                              std::string_view name = "mask") {
  if (mask.data() == nullptr) return;
  for (std::int64_t b = 0; b < L.rows; ++b) {
    const std::uint8_t* m = L.row(mask, b);
    const std::int64_t n = L.length(b);
    std::uint8_t bad = 0;
    for (std::int64_t t = 0; t < n; ++t) bad |= static_cast<std::uint8_t>(m[t] & 0xFEu);
    if (bad)
      for (std::int64_t t = 0; t < n; ++t)
        if (m[t] > 1) fail_argument(call, name, "values 0 or 1", concat(int(m[t]), " at row ", b, ", token ", t));
  }
}

/// Counted tokens of x (mask 1, or all without a mask) must be finite.
template <class T>
void check_finite_tokens(std::string_view call, std::string_view name, const tensor_view<const T, 2, host_space>& x,
                         const mask_view2& mask, const row_layout& L) {
  for (std::int64_t b = 0; b < L.rows; ++b) {
    const T* p = L.row(x, b);
    const std::uint8_t* m = mask.data() ? L.row(mask, b) : nullptr;
    const std::int64_t n = L.length(b);
    // Branch-free integer test first (all exponent bits set = inf or NaN), which the compiler vectorises (a
    // floating-point reduction it may not reorder); locate the culprit only on failure.
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr U exp_mask = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
    U bad = 0;
    if (m)
      for (std::int64_t t = 0; t < n; ++t) bad |= ((std::bit_cast<U>(p[t]) & exp_mask) == exp_mask) & (m[t] != 0);
    else
      for (std::int64_t t = 0; t < n; ++t) bad |= (std::bit_cast<U>(p[t]) & exp_mask) == exp_mask;
    if (bad)
      for (std::int64_t t = 0; t < n; ++t)
        if ((!m || m[t]) && !std::isfinite(p[t]))
          fail_argument(call, name, "finite values at counted tokens", concat(p[t], " at row ", b, ", token ", t));
  }
}

template <class T>
void check_finite_values(std::string_view call, std::string_view name, const tensor_view<const T, 1, host_space>& x) {
  for (std::int64_t i = 0; i < x.extent(0); ++i)
    if (!std::isfinite(x(i))) fail_argument(call, name, "finite values", concat(x(i), " at ", i));
}

inline void require_unit_interval(std::string_view call, std::string_view name, double v) {
  if (!(v >= 0.0 && v <= 1.0)) fail_argument(call, name, "a value in [0, 1]", v);
}
inline void require_positive(std::string_view call, std::string_view name, double v) {
  if (!(v > 0.0) || !std::isfinite(v)) fail_argument(call, name, "a finite value > 0", v);
}
inline void require_non_negative(std::string_view call, std::string_view name, double v) {
  if (!(v >= 0.0) || !std::isfinite(v)) fail_argument(call, name, "a finite value >= 0", v);
}

}  // namespace detail
}  // namespace cai
