// cai/algorithms/stats.hpp — masked statistics and whitening over token batches, as mergeable states.
//
//   masked_moments(b, x, mask, opt)            -> cai::moments {count, mean, M2} of the counted tokens
//   row_moments(b, x, mask, out, opt)          out[b] = moments of row b (out: (B) cai::moments)
//   whiten(b, x, mask, out, opt)               out = (x - mean) / sqrt(var + eps) (+ mean when !shift_mean)
//
// x: (B,T) or packed (1,N) of float or double; mask: uint8 of x's shape or cai::no_mask; out of x's shape and type.
// Variance uses Bessel's correction by default (torch.var / verl masked_var(unbiased=True)); opt.bessel = false
// divides by n. Whitening is per batch, or per row with opt.per_row. For gradient accumulation over micro-batches
// (and, later, ranks), compute masked_moments on each part, merge() them in a fixed order, and pass the merged state
// as opt.stats: every part is then whitened with the full batch's statistics.
//
// Uncounted positions of `out` are written 0. A row with no counted token (per_row) or a batch with none leaves all
// outputs 0; a single counted token has variance 0 (Bessel) and whitens to 0 (shift) or to itself (no shift).
// Counted values must be finite (cai::invalid_argument naming 'x' otherwise). Sums are formed per fixed chunk of
// rows in double precision and merged in row order: the same bits on cai::host and any cai::threaded_host.
// References: verl verl/utils/torch_functional.py masked_mean / masked_var / masked_whiten; TRL trl/core.py
// masked_whiten (shift_mean); OpenRLHF openrlhf/models/utils.py masked_mean.
//
//   const cai::moments m = cai::masked_moments(cai::host{}, adv, mask);
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "dispatch.hpp"
#include "sequences.hpp"

namespace cai {

struct stats_options {
  tensor_view<const std::int64_t, 1> cu_seqlens{};  ///< packed layout offsets (B + 1); empty = padded
};

struct whiten_options {
  bool shift_mean = true;  ///< false adds the mean back (TRL's shift_mean=False keeps the location)
  bool bessel = true;      ///< unbiased variance (n - 1)
  bool per_row = false;    ///< statistics of each row instead of the whole batch
  double eps = 1e-8;       ///< added to the variance; finite, >= 0 (0 with a flat set whitens to 0)
  const moments* stats = nullptr;  ///< whole-batch statistics to use instead of this batch's (not with per_row)
  tensor_view<const std::int64_t, 1> cu_seqlens{};
};

template <class T>
struct stats_problem {
  tensor_view<const T, 2> x;
  detail::mask_view2 mask;
  row_layout layout;
};

template <class T>
struct row_moments_problem {
  stats_problem<T> in;
  moments* out;  // (B)
};

template <class T>
struct whiten_problem {
  stats_problem<T> in;
  tensor_view<T, 2> out;
  whiten_options opt;
};

namespace detail {
inline constexpr std::int64_t stats_row_grain = 16;

/// Whitens one row of n values with statistics st: y = (x - mean) / sqrt(var + eps) (+ mean without shift) at
/// counted positions, 0 elsewhere; eps = 0 with a flat set whitens to 0, not 0 * inf. Shared by generic::whiten
/// and cai::batched::whiten.
template <class T>
CAI_HD void whiten_row(const T* x, T* y, const std::uint8_t* m, std::int64_t n, const moments& st, bool bessel,
                       bool shift_mean, double eps) noexcept {
  using std::sqrt;
  const double mean = st.mean;
  const double denom = st.variance(bessel) + eps;
  const double inv = denom > 0.0 ? 1.0 / sqrt(denom) : 0.0;
  const double back = shift_mean ? 0.0 : mean;
  for (std::int64_t t = 0; t < n; ++t) {
    const bool keep = (m == nullptr || m[t] != 0) && st.count > 0;
    y[t] = keep ? static_cast<T>((static_cast<double>(x[t]) - mean) * inv + back) : T(0);
  }
}

template <class T>
moments row_moments_of(const stats_problem<T>& p, std::int64_t b) noexcept {
  const T* x = p.layout.row(p.x, b);
  const std::int64_t n = p.layout.length(b);
  if (p.mask.data() == nullptr) return moments_of(x, n, [](std::int64_t) { return true; });
  const std::uint8_t* m = p.layout.row(p.mask, b);
  return moments_of(x, n, [m](std::int64_t t) { return m[t] != 0; });
}
}  // namespace detail

namespace generic {

template <bulk_backend B, class T>
moments masked_moments(const B& b, const stats_problem<T>& p) {
  return chunked_reduce(
      b, p.layout.rows, detail::stats_row_grain, moments{},
      [&](std::int64_t r0, std::int64_t r1) {
        moments acc;
        for (std::int64_t r = r0; r < r1; ++r) acc = merge(acc, detail::row_moments_of(p, r));
        return acc;
      },
      [](const moments& a, const moments& c) { return merge(a, c); });
}

template <bulk_backend B, class T>
void row_moments(const B& b, const row_moments_problem<T>& p) {
  parallel_for(b, p.in.layout.rows, detail::stats_row_grain, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) p.out[r] = detail::row_moments_of(p.in, r);
  });
}

template <bulk_backend B, class T>
moments whiten(const B& b, const whiten_problem<T>& p) {
  const auto& in = p.in;
  moments whole{};
  if (!p.opt.per_row) whole = p.opt.stats ? *p.opt.stats : masked_moments(b, in);
  parallel_for(b, in.layout.rows, detail::stats_row_grain, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const moments st = p.opt.per_row ? detail::row_moments_of(in, r) : whole;
      detail::whiten_row(in.layout.row(in.x, r), in.layout.row(p.out, r),
                         in.mask.data() ? in.layout.row(in.mask, r) : nullptr, in.layout.length(r), st, p.opt.bessel,
                         p.opt.shift_mean, p.opt.eps);
    }
  });
  return whole;
}

}  // namespace generic

CAI_DETAIL_DISPATCH(masked_moments)
CAI_DETAIL_DISPATCH(row_moments)
CAI_DETAIL_DISPATCH(whiten)

namespace detail {

template <class T>
concept stats_real = std::same_as<T, float> || std::same_as<T, double>;

template <class X, class M>
auto make_stats_problem(std::string_view call, const X& x_in, const M& mask_in,
                        const tensor_view<const std::int64_t, 1>& cu) {
  using T = element_of_t<X>;
  const tensor_view<const T, 2> x = as_const_view(x_in);
  const mask_view2 mask = token_mask_of(mask_in);
  const row_layout L = make_layout(call, "x", x, cu);
  require_row_contiguous(call, "x", x);
  if (mask.data() != nullptr || !mask.empty()) {
    require_like(call, "mask", mask, "x", x);
    check_mask_values(call, mask, L);
  }
  check_finite_tokens(call, "x", x, mask, L);
  return stats_problem<T>{x, mask, L};
}

struct masked_moments_fn {
  template <backend Bk, viewable X, class M = no_mask_t>
    requires stats_real<element_of_t<X>> && (rank_of_v<X> == 2)
  moments operator()(const Bk& b, const X& x, const M& mask = no_mask, const stats_options& opt = {}) const {
    return masked_moments_cpo::dispatch(b, make_stats_problem("cai::masked_moments", x, mask, opt.cu_seqlens));
  }
};

struct row_moments_fn {
  template <backend Bk, viewable X, class M>
    requires stats_real<element_of_t<X>> && (rank_of_v<X> == 2)
  void operator()(const Bk& b, const X& x, const M& mask, tensor_view<moments, 1> out,
                  const stats_options& opt = {}) const {
    constexpr std::string_view call = "cai::row_moments";
    auto in = make_stats_problem(call, x, mask, opt.cu_seqlens);
    require_per_row(call, "out", out, in.layout.rows);
    require_row_contiguous(call, "out", out);
    row_moments_cpo::dispatch(b, row_moments_problem<element_of_t<X>>{in, out.data()});
  }
};

struct whiten_fn {
  /// Returns the whole-batch statistics used ({} with per_row).
  template <backend Bk, viewable X, class M, class T>
    requires stats_real<T> && std::same_as<element_of_t<X>, T> && (rank_of_v<X> == 2)
  moments operator()(const Bk& b, const X& x, const M& mask, tensor_view<T, 2> out,
                     const whiten_options& opt = {}) const {
    constexpr std::string_view call = "cai::whiten";
    if (!(opt.eps >= 0.0) || !std::isfinite(opt.eps)) fail_argument(call, "eps", "a finite value >= 0", opt.eps);
    if (opt.per_row && opt.stats) fail_argument(call, "stats", "no external statistics with per_row", "both");
    if (opt.stats && (opt.stats->count < 0 || !std::isfinite(opt.stats->mean) || !(opt.stats->m2 >= 0.0)))
      fail_argument(call, "stats", "a valid moments state (count >= 0, finite mean, M2 >= 0)", opt.stats->m2);
    auto in = make_stats_problem(call, x, mask, opt.cu_seqlens);
    require_like(call, "out", out, "x", in.x);
    return whiten_cpo::dispatch(b, whiten_problem<T>{in, out, opt});
  }
};

}  // namespace detail

/// Mergeable moments {count, mean, M2} of the counted tokens of x. See the header comment.
inline constexpr detail::masked_moments_fn masked_moments{};
/// Moments of each row (sequence) of x into out (B). See the header comment.
inline constexpr detail::row_moments_fn row_moments{};
/// Masked whitening per batch (optionally with merged micro-batch statistics) or per row. See the header comment.
inline constexpr detail::whiten_fn whiten{};

}  // namespace cai
