// cai/algorithms/gae.hpp — generalised advantage estimation and discounted returns, padding-aware.
//
// GAE (Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"), per row,
// backwards over the counted steps t (mask 1) with the value after the last step = bootstrap_b (0 by default):
//   delta_t = r_t + gamma * V_next - V_t
//   A_t     = delta_t + gamma * lambda * A_next
//   R_t     = A_t + V_t                                          (the value targets, "returns")
// A masked step (mask 0) is the identity: V_next and A_next carry across it unchanged, so observation tokens inside
// a multi-turn response are skipped by the TD recursion (gamma applies once per counted step) — verl's
// compute_gae_advantage_return semantics (verl/trainer/ppo/core_algos.py). Outputs at masked steps are written 0
// (verl writes the carried value there; every consumer masks it away).
//
// Discounted returns for REINFORCE-style estimators (REINFORCE++, verl compute_reinforce_plus_plus_outcome_
// advantage; OpenRLHF get_cumulative_returns), same masking rule:
//   G_t = r_t + gamma * G_next
//
// rewards, values, outputs: (B,T) or packed (1,N), float or double; mask uint8 or cai::no_mask. The recursion runs
// in double precision whatever the storage type; rows are independent, so results are identical on cai::host and
// cai::threaded_host. Inputs at counted steps must be finite; gamma and lambda lie in [0, 1].
//
// On cai::cuda (device views) the same calls run the scans of kernels/gae.cuh; values are then checked on the device
// and reported at the backend's next synchronize().
//
//   cai::gae(cai::host{}, rewards, values, mask, {.advantages = adv, .returns = ret}, {.gamma = 1.0, .lambda = 0.95});
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "dispatch.hpp"
#include "sequences.hpp"

namespace cai {

/// Outputs of cai::gae; S is the memory space of every view (device_space with the cai::cuda backend).
template <class R, class S = host_space>
struct gae_outputs {
  tensor_view<R, 2, S> advantages{};
  tensor_view<R, 2, S> returns{};
};

template <class R, class S = host_space>
struct gae_options {
  double gamma = 1.0;
  double lambda = 0.95;
  tensor_view<const R, 1, S> bootstrap_values{};     ///< (B) value after each row's last step (truncated rollouts)
  tensor_view<const std::int64_t, 1, S> cu_seqlens{};  ///< packed layout offsets (B + 1); empty = padded
};

template <class R, class S = host_space>
struct returns_options {
  double gamma = 1.0;
  tensor_view<const R, 1, S> bootstrap_values{};
  tensor_view<const std::int64_t, 1, S> cu_seqlens{};
};

/// The problem a device backend receives: shapes checked on the host; values (finite inputs, 0/1 masks, valid
/// cu_seqlens) are checked by the kernels, which report to the backend's status block. rows = B.
template <class R>
struct device_gae_problem {
  tensor_view<const R, 2, device_space> rewards, values;  // values empty: discounted returns
  tensor_view<const std::uint8_t, 2, device_space> mask;
  tensor_view<R, 2, device_space> advantages, returns;
  tensor_view<const R, 1, device_space> bootstrap;
  tensor_view<const std::int64_t, 1, device_space> cu_seqlens;
  std::int64_t rows = 0;
  double gamma = 1.0, lambda = 1.0;
};

template <class R>
struct gae_problem {
  tensor_view<const R, 2> rewards, values;  // values empty: discounted returns
  detail::mask_view2 mask;
  row_layout layout;
  tensor_view<R, 2> advantages, returns;  // for discounted returns only `returns` is used
  tensor_view<const R, 1> bootstrap;
  double gamma = 1.0, lambda = 1.0;
};

namespace detail {

/// The number of rows advanced together: independent recursions interleaved so that the latency of one
/// multiply-add chain overlaps another. Measured at 1, 2, 4, 8 on (512, 4096): 2 was fastest (12.7, 8.3, 18.4,
/// 27.6 ms); wider groups thrash L1 sets because rows T * 4 bytes apart alias. A transposed-tile, SIMD-across-rows
/// kernel is the next step (issue 6 / benchmarks/pg.cpp).
inline constexpr int gae_lanes = 2;

template <bool HasValues, int K, class R>
void gae_rows(const gae_problem<R>& p, std::int64_t r0) noexcept {
  const row_layout& L = p.layout;
  const double g = p.gamma, gl = p.gamma * p.lambda;
  const R* rw[K];
  const R* vv[K];
  const std::uint8_t* mm[K];
  R* aa[K];
  R* rr[K];
  double A[K], nv[K];
  std::int64_t n = 0;
  for (int k = 0; k < K; ++k) {
    rw[k] = L.row(p.rewards, r0 + k);
    vv[k] = HasValues ? L.row(p.values, r0 + k) : nullptr;
    mm[k] = p.mask.data() ? L.row(p.mask, r0 + k) : nullptr;
    aa[k] = p.advantages.data() ? L.row(p.advantages, r0 + k) : nullptr;
    rr[k] = p.returns.data() ? L.row(p.returns, r0 + k) : nullptr;
    A[k] = 0.0;
    nv[k] = p.bootstrap.data() ? static_cast<double>(p.bootstrap(r0 + k)) : 0.0;
    n = L.length(r0 + k);  // K > 1 only for equal-length rows
  }
  for (std::int64_t t = n; t-- > 0;) {
    for (int k = 0; k < K; ++k) {
      const bool keep = !mm[k] || mm[k][t];
      const double r = static_cast<double>(rw[k][t]);
      if constexpr (HasValues) {
        const double v = static_cast<double>(vv[k][t]);
        const double a = (r + g * nv[k] - v) + gl * A[k];
        A[k] = keep ? a : A[k];
        nv[k] = keep ? v : nv[k];
        if (aa[k]) aa[k][t] = keep ? static_cast<R>(a) : R(0);
        if (rr[k]) rr[k][t] = keep ? static_cast<R>(a + v) : R(0);
      } else {
        const double G = r + g * nv[k];
        nv[k] = keep ? G : nv[k];
        rr[k][t] = keep ? static_cast<R>(G) : R(0);
      }
    }
  }
}

template <bool HasValues, class R>
void gae_all(const auto& b, const gae_problem<R>& p) {
  const row_layout& L = p.layout;
  constexpr int K = gae_lanes;
  if (!L.is_packed()) {
    const std::int64_t groups = L.rows / K;
    const std::int64_t grain = std::max<std::int64_t>(1, 65536 / (K * std::max<std::int64_t>(L.width, 1)));
    parallel_for(b, groups, grain, [&](std::int64_t g0, std::int64_t g1) {
      for (std::int64_t g = g0; g < g1; ++g) gae_rows<HasValues, K>(p, g * K);
    });
    for (std::int64_t r = groups * K; r < L.rows; ++r) gae_rows<HasValues, 1>(p, r);
  } else {
    parallel_for(b, L.rows, 16, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) gae_rows<HasValues, 1>(p, r);
    });
  }
}

}  // namespace detail

namespace generic {
template <bulk_backend B, class R>
void gae(const B& b, const gae_problem<R>& p) {
  detail::gae_all<true>(b, p);
}
template <bulk_backend B, class R>
void discounted_returns(const B& b, const gae_problem<R>& p) {
  detail::gae_all<false>(b, p);
}
}  // namespace generic

CAI_DETAIL_DISPATCH(gae)
CAI_DETAIL_DISPATCH(discounted_returns)

namespace detail {

template <class R>
gae_problem<R> make_gae_problem(std::string_view call, tensor_view<const R, 2> rewards, tensor_view<const R, 2> values,
                                const mask_view2& mask, tensor_view<R, 2> adv, tensor_view<R, 2> ret,
                                tensor_view<const R, 1> bootstrap, const tensor_view<const std::int64_t, 1>& cu,
                                double gamma, double lambda) {
  require_unit_interval(call, "gamma", gamma);
  require_unit_interval(call, "lambda", lambda);
  const row_layout L = make_layout(call, "rewards", rewards, cu);
  require_row_contiguous(call, "rewards", rewards);
  if (values.data() || !values.empty()) require_like(call, "values", values, "rewards", rewards);
  if (mask.data()) require_like(call, "mask", mask, "rewards", rewards);
  if (adv.data()) require_like(call, "advantages", adv, "rewards", rewards);
  if (ret.data()) require_like(call, "returns", ret, "rewards", rewards);
  if (bootstrap.data()) {
    require_per_row(call, "bootstrap_values", bootstrap, L.rows);
    check_finite_values(call, "bootstrap_values", bootstrap);
  }
  check_mask_values(call, mask, L);
  check_finite_tokens(call, "rewards", rewards, mask, L);
  if (values.data()) check_finite_tokens(call, "values", values, mask, L);
  return gae_problem<R>{rewards, values, mask, L, adv, ret, bootstrap, gamma, lambda};
}

/// The shape checks of the device path (values are checked by the kernels).
template <class R>
device_gae_problem<R> make_device_gae_problem(std::string_view call, tensor_view<const R, 2, device_space> rewards,
                                              tensor_view<const R, 2, device_space> values,
                                              tensor_view<const std::uint8_t, 2, device_space> mask,
                                              tensor_view<R, 2, device_space> adv, tensor_view<R, 2, device_space> ret,
                                              tensor_view<const R, 1, device_space> bootstrap,
                                              tensor_view<const std::int64_t, 1, device_space> cu, double gamma,
                                              double lambda) {
  require_unit_interval(call, "gamma", gamma);
  require_unit_interval(call, "lambda", lambda);
  require_row_contiguous(call, "rewards", rewards);
  std::int64_t rows = rewards.extent(0);
  if (cu.data() != nullptr || !cu.empty()) {
    if (rewards.extent(0) != 1)
      fail_argument<shape_error>(call, "rewards", "a (1, N) view in the packed layout (cu_seqlens given)",
                                 concat("(", rewards.extent(0), ", ", rewards.extent(1), ")"));
    if (cu.extent(0) < 1) fail_argument<shape_error>(call, "cu_seqlens", "B + 1 >= 1 offsets", cu.extent(0));
    if (cu.stride(0) != 1 && cu.extent(0) > 1)
      fail_argument<layout_error>(call, "cu_seqlens", "a contiguous view", concat("stride ", cu.stride(0)));
    rows = cu.extent(0) - 1;
  }
  if (values.data() || !values.empty()) require_like(call, "values", values, "rewards", rewards);
  if (mask.data()) require_like(call, "mask", mask, "rewards", rewards);
  if (adv.data()) require_like(call, "advantages", adv, "rewards", rewards);
  if (ret.data()) require_like(call, "returns", ret, "rewards", rewards);
  if (bootstrap.data()) require_per_row(call, "bootstrap_values", bootstrap, rows);
  return device_gae_problem<R>{rewards, values, mask, adv, ret, bootstrap, cu, rows, gamma, lambda};
}

/// Host views get the host problem (every value checked up front); device views the device problem.
template <class R, class S>
auto make_any_gae_problem(std::string_view call, tensor_view<const R, 2, S> rewards, tensor_view<const R, 2, S> values,
                          tensor_view<const std::uint8_t, 2, S> mask, tensor_view<R, 2, S> adv,
                          tensor_view<R, 2, S> ret, tensor_view<const R, 1, S> bootstrap,
                          tensor_view<const std::int64_t, 1, S> cu, double gamma, double lambda) {
  if constexpr (std::is_same_v<S, host_space>)
    return make_gae_problem<R>(call, rewards, values, mask, adv, ret, bootstrap, cu, gamma, lambda);
  else
    return make_device_gae_problem<R>(call, rewards, values, mask, adv, ret, bootstrap, cu, gamma, lambda);
}

struct gae_fn {
  template <backend Bk, viewable X, viewable V, class M, class R = element_of_t<X>, class S = space_of_t<X>>
    requires token_real<R> && std::same_as<element_of_t<X>, R> && std::same_as<element_of_t<V>, R> &&
             (rank_of_v<X> == 2) && (rank_of_v<V> == 2) && std::same_as<space_of_t<V>, S> &&
             std::same_as<backend_space_t<Bk>, S>
  void operator()(const Bk& b, const X& rewards, const V& values, const M& mask, const gae_outputs<R, S>& out,
                  const gae_options<R, S>& opt = {}) const {
    constexpr std::string_view call = "cai::gae";
    if (!out.advantages.data() && !out.returns.data())
      fail_argument(call, "out", "at least one of .advantages, .returns", "none");
    if (!as_const_view(values).data() && !as_const_view(rewards).empty())
      fail_argument(call, "values", "a view of the shape of 'rewards'", "none");
    gae_cpo::dispatch(b, make_any_gae_problem<R, S>(call, as_const_view(rewards), as_const_view(values),
                                                    token_mask_of<M, S>(mask), out.advantages, out.returns,
                                                    opt.bootstrap_values, opt.cu_seqlens, opt.gamma, opt.lambda));
  }
};

struct discounted_returns_fn {
  template <backend Bk, viewable X, class M, class R = element_of_t<X>, class S = space_of_t<X>>
    requires token_real<R> && std::same_as<element_of_t<X>, R> && (rank_of_v<X> == 2) &&
             std::same_as<backend_space_t<Bk>, S>
  void operator()(const Bk& b, const X& rewards, const M& mask, tensor_view<R, 2, S> returns,
                  const returns_options<R, S>& opt = {}) const {
    constexpr std::string_view call = "cai::discounted_returns";
    // A missing output is an error unless there is nothing to write (the checks below skip a null view's shape).
    if (!returns.data() && !as_const_view(rewards).empty()) fail_argument(call, "returns", "an output view", "none");
    discounted_returns_cpo::dispatch(b, make_any_gae_problem<R, S>(call, as_const_view(rewards), {},
                                                                   token_mask_of<M, S>(mask), {}, returns,
                                                                   opt.bootstrap_values, opt.cu_seqlens, opt.gamma,
                                                                   1.0));
  }
};

}  // namespace detail

/// Generalised advantage estimation with padding-aware (identity) masked steps. See the header comment.
inline constexpr detail::gae_fn gae{};
/// Discounted returns G_t = r_t + gamma G_next with identity masked steps. See the header comment.
inline constexpr detail::discounted_returns_fn discounted_returns{};

}  // namespace cai
