// cai/kernels/batched.hpp — batched statistics and losses as Thrust algorithms over any Thrust execution policy.
//
// The device path of the small, memory-bound reductions of RLHF, written on Thrust so that one source runs
//   on the GPU      with cai::cuda: cai::batched::row_moments(gpu.policy(), ...)   (nvcc; thrust::cuda::par_nosync)
//   on host threads with Thrust's OpenMP system (g++ -fopenmp -DTHRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP),
//                   which is how CI tests these paths without a GPU (tests/kernels/batched.cpp).
// The per-element math is the host path's CAI_HD functions, not a copy: moments_of / merge (sequences.hpp),
// group_stats_of / group_advantage (advantages.hpp), dpo_pair_terms (dpo.hpp), bt_pair_terms (preference.hpp),
// token_ratio / pg::eval (ppo.hpp).
//
// Conventions (CUB-style, DESIGN.md): every input and output is memory the policy can address (device memory for
// cai::cuda); nothing allocates, nothing returns a host value, nothing synchronises (par_nosync). Results that the
// host API returns by value (a loss, a moments state) are written to a one-element output in the policy's memory.
// Values are not checked here (that costs a pass and a synchronisation): the host API checks them up front, device
// callers check upstream or read the outputs (a NaN input gives NaN outputs, never undefined behaviour).
//
// Determinism: one thread per row (or group, or pair) runs the host's sequential loop, and every cross-row total
// is folded by one thread in the host's order (the same chunking as the host's chunked_reduce), so results are the
// same bits from run to run, and on the OpenMP system the same bits as cai::host (no FMA contraction on x86-64 g++).
// On the GPU they agree with the host within the rounding of contracted multiply-adds (tests/kernels).
//
// Layout: rows of a token batch as in sequences.hpp, described by a row_layout whose cu (packed offsets) points
// into the policy's memory, and each view by its base pointer and row stride (elements; packed views: the (1, N) row).
#pragma once

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include <cstdint>
#include <string_view>
#include <type_traits>

#include "../algorithms/advantages.hpp"
#include "../algorithms/dpo.hpp"
#include "../algorithms/ppo.hpp"
#include "../algorithms/preference.hpp"
#include "../algorithms/sequences.hpp"
#include "../algorithms/stats.hpp"

namespace cai::batched {

/// A token view in the policy's memory: base pointer and the stride between rows (ignored when packed).
template <class T>
struct rows_of {
  T* data = nullptr;
  std::int64_t row_stride = 0;
  CAI_HD T* row(const row_layout& L, std::int64_t b) const noexcept {
    return L.cu ? data + L.cu[b] : data + b * row_stride;
  }
};

namespace detail {

/// A workspace smaller than the call needs is a cai::invalid_argument naming 'scratch' (CUB-style size check).
inline void require_scratch(std::string_view call, std::int64_t have, std::int64_t need) {
  if (have < need) ::cai::detail::fail_argument(call, "scratch", ::cai::detail::concat(need, " doubles or more"), have);
}

template <class Policy, class F>
void for_n(const Policy& policy, std::int64_t n, F f) {
  if (n <= 0) return;
  thrust::for_each(policy, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(n), f);
}

template <class T>
struct row_moments_op {
  rows_of<const T> x;
  rows_of<const std::uint8_t> mask;
  row_layout L;
  moments* out;
  struct keep_all {
    CAI_HD bool operator()(std::int64_t) const noexcept { return true; }
  };
  struct keep_masked {
    const std::uint8_t* m;
    CAI_HD bool operator()(std::int64_t t) const noexcept { return m[t] != 0; }
  };
  CAI_HD void operator()(std::int64_t b) const noexcept {
    const T* xr = x.row(L, b);
    const std::int64_t n = L.length(b);
    out[b] = mask.data ? ::cai::detail::moments_of(xr, n, keep_masked{mask.row(L, b)})
                       : ::cai::detail::moments_of(xr, n, keep_all{});
  }
};

/// Folds per-row states in the order of generic::masked_moments: chunks of stats_row_grain rows, then the chunks.
struct fold_moments_op {
  const moments* rows;
  std::int64_t n;
  moments* out;
  CAI_HD void operator()(std::int64_t) const noexcept {
    constexpr std::int64_t grain = ::cai::detail::stats_row_grain;
    moments total{};
    for (std::int64_t c0 = 0; c0 < n; c0 += grain) {
      moments chunk{};
      for (std::int64_t r = c0; r < n && r < c0 + grain; ++r) chunk = merge(chunk, rows[r]);
      total = merge(total, chunk);
    }
    *out = total;
  }
};

template <class T>
struct whiten_op {
  rows_of<const T> x;
  rows_of<const std::uint8_t> mask;
  row_layout L;
  const moments* stats;  // one state, or one per row
  bool per_row, bessel, shift_mean;
  double eps;
  rows_of<T> out;
  CAI_HD void operator()(std::int64_t b) const noexcept {
    ::cai::detail::whiten_row(x.row(L, b), out.row(L, b), mask.data ? mask.row(L, b) : nullptr, L.length(b),
                              per_row ? stats[b] : stats[0], bessel, shift_mean, eps);
  }
};

template <class T>
struct row_sums_op {
  rows_of<const T> x;
  rows_of<const std::uint8_t> mask;
  row_layout L;
  double* sums;
  double* means;
  CAI_HD void operator()(std::int64_t b) const noexcept {
    const T* xr = x.row(L, b);
    const std::uint8_t* m = mask.data ? mask.row(L, b) : nullptr;
    double s = 0.0;
    std::int64_t c = 0;
    for (std::int64_t t = 0; t < L.length(b); ++t)
      if (m == nullptr || m[t] != 0) {
        s += static_cast<double>(xr[t]);
        ++c;
      }
    if (sums) sums[b] = s;
    if (means) means[b] = c > 0 ? s / static_cast<double>(c) : 0.0;
  }
};

/// Batch-level scalars of the group estimators: [0] grpo's batch std, [1] gpg's alpha.
template <class E>
struct group_batch_op {
  E est;
  const double* scores;
  std::int64_t B;
  double* scalars;
  CAI_HD void operator()(std::int64_t) const noexcept {
    double batch_std = 1.0;
    if constexpr (std::same_as<E, adv::grpo>)
      if (est.std_scale == adv::scale::batch) batch_std = ::cai::detail::group_stats_of(scores, B).std;
    std::int64_t nonzero = 0;
    for (std::int64_t i = 0; i < B; ++i) nonzero += scores[i] == scores[i] && scores[i] != 0.0;
    scalars[0] = batch_std;
    scalars[1] = static_cast<double>(B) / static_cast<double>(nonzero > 0 ? nonzero : 1);
  }
};

template <class E>
struct group_op {
  E est;
  const double* scores;
  std::int64_t G;
  const double* scalars;
  double* adv;
  CAI_HD void operator()(std::int64_t g) const noexcept {
    const double* sg = scores + g * G;
    const ::cai::detail::group_stats st = ::cai::detail::group_stats_of(sg, G);
    for (std::int64_t i = 0; i < G; ++i) {
      const double x = sg[i];
      adv[g * G + i] = x == x ? ::cai::detail::group_advantage(est, x, st, scalars[0], scalars[1]) : 0.0;
    }
  }
};

template <class R>
struct broadcast_op {
  const double* a;
  rows_of<const std::uint8_t> mask;
  row_layout L;
  rows_of<R> out;
  R* sequence_out;
  CAI_HD void operator()(std::int64_t b) const noexcept {
    const R v = static_cast<R>(a[b]);
    ::cai::detail::broadcast_row(v, out.row(L, b), mask.data ? mask.row(L, b) : nullptr, L.length(b));
    if (sequence_out) sequence_out[b] = v;
  }
};

}  // namespace detail

/// out[b] = the moments {count, mean, M2} of row b's counted values (cai::row_moments). out: B states.
template <class Policy, class T>
void row_moments(const Policy& policy, rows_of<const T> x, rows_of<const std::uint8_t> mask, const row_layout& L,
                 moments* out) {
  detail::for_n(policy, L.rows, detail::row_moments_op<T>{x, mask, L, out});
}

/// *out = the merge of n row states in cai::masked_moments' order. With row_moments: cai::masked_moments.
template <class Policy>
void fold_moments(const Policy& policy, const moments* rows, std::int64_t n, moments* out) {
  detail::for_n(policy, 1, detail::fold_moments_op{rows, n, out});
}

/// cai::whiten with given statistics: one state (per_row = false) or one per row (per_row = true).
template <class Policy, class T>
void whiten(const Policy& policy, rows_of<const T> x, rows_of<const std::uint8_t> mask, const row_layout& L,
            const moments* stats, const whiten_options& opt, rows_of<T> out) {
  detail::for_n(policy, L.rows,
                detail::whiten_op<T>{x, mask, L, stats, opt.per_row, opt.bessel, opt.shift_mean, opt.eps, out});
}

/// Sequence sums and means of the counted values of each row (either output may be null). means[b] = 0 for a
/// row with no counted value.
template <class Policy, class T>
void row_sums(const Policy& policy, rows_of<const T> x, rows_of<const std::uint8_t> mask, const row_layout& L,
              double* sums, double* means) {
  detail::for_n(policy, L.rows, detail::row_sums_op<T>{x, mask, L, sums, means});
}

/// Workspace of group_advantages, in doubles.
inline constexpr std::int64_t group_advantages_scratch = 2;

/// Per-sample advantages of a group estimator (grpo, dr_grpo, rloo, reinforce_pp_baseline before its token
/// whitening, gpg) from scores (B; NaN = unscored, advantage 0) in consecutive groups of G: exactly the host's
/// per-sample formula. scratch: group_advantages_scratch doubles.
template <class Policy, ::cai::detail::group_estimator E>
void group_advantages(const Policy& policy, const E& est, const double* scores, std::int64_t B, std::int64_t G,
                      double* scratch, std::int64_t scratch_size, double* adv) {
  constexpr std::string_view call = "cai::batched::group_advantages";
  if (G < 1 || B % G != 0) ::cai::detail::fail_argument(call, "group_size", ::cai::detail::concat("a divisor of B = ", B), G);
  detail::require_scratch(call, scratch_size, group_advantages_scratch);
  if (B == 0) return;
  detail::for_n(policy, 1, detail::group_batch_op<E>{est, scores, B, scratch});
  detail::for_n(policy, B / G, detail::group_op<E>{est, scores, G, scratch, adv});
}

/// Writes a[b] to the counted tokens of row b (0 elsewhere), and to sequence_out[b] when given.
template <class Policy, class R>
void broadcast_rows(const Policy& policy, const double* a, rows_of<const std::uint8_t> mask, const row_layout& L,
                    rows_of<R> out, std::type_identity_t<R>* sequence_out = nullptr) {
  detail::for_n(policy, L.rows, detail::broadcast_op<R>{a, mask, L, out, sequence_out});
}

// ----- DPO-family losses over a batch of pairs ------------------------------------------------------------------

/// A pair batch in the policy's memory (dpo_batch's fields; null = absent).
template <class R>
struct pair_batch {
  const R *chosen = nullptr, *rejected = nullptr, *ref_chosen = nullptr, *ref_rejected = nullptr, *weights = nullptr;
  const std::int64_t *chosen_lengths = nullptr, *rejected_lengths = nullptr;
  std::int64_t n = 0;
};
/// Outputs (dpo_grads' fields; null = not wanted). total: [loss, count, chosen, rejected, margin, accuracy], as
/// preference_result (the metrics with the first member's beta).
template <class R>
struct pair_outputs {
  R *chosen = nullptr, *rejected = nullptr, *ref_chosen = nullptr, *ref_rejected = nullptr, *losses = nullptr;
  double* total = nullptr;
};

/// Workspace of pair_loss, in doubles, for n pairs.
inline constexpr std::int64_t pair_loss_scratch(std::int64_t n) { return 6 * n; }

namespace detail {

template <class R>
struct pair_view {
  pair_batch<R> in;
  CAI_HD double rho_c(std::int64_t i) const noexcept {
    return static_cast<double>(in.chosen[i]) - (in.ref_chosen ? static_cast<double>(in.ref_chosen[i]) : 0.0);
  }
  CAI_HD double rho_r(std::int64_t i) const noexcept {
    return static_cast<double>(in.rejected[i]) - (in.ref_rejected ? static_cast<double>(in.ref_rejected[i]) : 0.0);
  }
  CAI_HD double len(const std::int64_t* l, std::int64_t i) const noexcept {
    return l ? static_cast<double>(l[i] > 1 ? l[i] : 1) : 1.0;
  }
};

/// Adds one member's per-pair terms to the scratch accumulators (loss, d pc, d pr, d rc, d rr per pair).
template <class L, class F, class R>
struct pair_member_op {
  L loss;
  F div;
  double weight, inv;
  pair_view<R> v;
  double* acc;          // 5 n: loss, d pc, d rc, d pr, d rr (summed over the members)
  double* member_loss;  // n: this member's per-pair loss
  CAI_HD void operator()(std::int64_t i) const noexcept {
    const std::int64_t n = v.in.n;
    const double w = v.in.weights ? static_cast<double>(v.in.weights[i]) : 1.0;
    const ::cai::detail::pair_terms t =
        ::cai::detail::dpo_pair_terms(loss, div, weight * w, inv, v.rho_c(i), v.rho_r(i),
                                      v.len(v.in.chosen_lengths, i), v.len(v.in.rejected_lengths, i));
    member_loss[i] = t.loss;
    acc[i] += t.loss;
    acc[n + i] += t.dc;
    acc[2 * n + i] -= t.dc;
    acc[3 * n + i] += t.dr;
    acc[4 * n + i] -= t.dr;
  }
};

struct zero_op {
  double* p;
  CAI_HD void operator()(std::int64_t i) const noexcept { p[i] = 0.0; }
};

/// Writes the outputs and folds the total and the metrics in pair order (as generic::dpo_loss).
template <class R>
struct pair_finish_op {
  pair_view<R> v;
  const double* acc;
  double beta;
  pair_outputs<R> out;
  CAI_HD void operator()(std::int64_t) const noexcept {
    const std::int64_t n = v.in.n;
    pair_metrics_sum ms;
    for (std::int64_t i = 0; i < n; ++i) {
      ms.add(beta * v.rho_c(i), beta * v.rho_r(i));
      if (out.chosen) out.chosen[i] = static_cast<R>(acc[n + i]);
      if (out.ref_chosen) out.ref_chosen[i] = static_cast<R>(acc[2 * n + i]);
      if (out.rejected) out.rejected[i] = static_cast<R>(acc[3 * n + i]);
      if (out.ref_rejected) out.ref_rejected[i] = static_cast<R>(acc[4 * n + i]);
      if (out.losses) out.losses[i] = static_cast<R>(acc[i]);
    }
    if (out.total) {
      const pair_metrics m = ms.finish();
      out.total[1] = static_cast<double>(m.count);
      out.total[2] = m.chosen;
      out.total[3] = m.rejected;
      out.total[4] = m.margin;
      out.total[5] = m.accuracy;
    }
  }
};

/// One member's mean loss, added to total[0] (as generic::dpo_loss sums the members' means).
struct member_total_op {
  const double* member_losses;
  std::int64_t n;
  double* total;
  CAI_HD void operator()(std::int64_t) const noexcept {
    double s = 0.0;
    for (std::int64_t i = 0; i < n; ++i) s += member_losses[i];
    total[0] += s * (1.0 / static_cast<double>(n));
  }
};

}  // namespace detail

/// The DPO-family loss of `spec` (one per-pair loss, dpo::mix of them, or dpo::with_divergence) over n pairs:
/// cai::dpo_loss's loss, per-pair losses, gradients and metrics. Batch-coupled members (dpo::sft, dpo::aot) and
/// dpo::dynamic are host-only (a static_assert says so). scratch: pair_loss_scratch(n) doubles.
template <class Policy, class Spec, class R>
void pair_loss(const Policy& policy, const Spec& spec, const pair_batch<R>& in, const pair_outputs<R>& out,
               double* scratch, std::int64_t scratch_size) {
  static_assert(!std::same_as<Spec, dpo::dynamic>, "cai::batched::pair_loss: dpo::dynamic is host-only");
  using traits = ::cai::detail::dpo_spec_traits<Spec>;
  const std::int64_t n = in.n;
  detail::require_scratch("cai::batched::pair_loss", scratch_size, pair_loss_scratch(n));
  if (n <= 0) return;
  double* acc = scratch;
  double* member = scratch + 5 * n;
  detail::for_n(policy, 5 * n, detail::zero_op{acc});
  if (out.total) detail::for_n(policy, 6, detail::zero_op{out.total});
  const auto div = traits::div(spec);
  const detail::pair_view<R> v{in};
  ::cai::detail::for_each_member(spec, [&](const auto& l, double w) {
    using L = std::remove_cvref_t<decltype(l)>;
    static_assert(!std::same_as<L, dpo::sft> && !std::same_as<L, dpo::aot>,
                  "cai::batched::pair_loss: dpo::sft and dpo::aot couple the pairs of a batch; they are host-only");
    detail::for_n(policy, n,
                  detail::pair_member_op<L, decltype(div), R>{l, div, w, 1.0 / static_cast<double>(n), v, acc, member});
    if (out.total) detail::for_n(policy, 1, detail::member_total_op{member, n, out.total});
  });
  detail::for_n(policy, 1, detail::pair_finish_op<R>{v, acc, ::cai::detail::first_beta(spec), out});
}

// ----- Bradley-Terry reward-model loss ----------------------------------------------------------------------------

/// Reward pairs in the policy's memory (reward_pair_batch's fields; margin and labels may be null).
template <class R>
struct reward_pairs {
  const R *chosen = nullptr, *rejected = nullptr, *margin = nullptr, *labels = nullptr;
  std::int64_t n = 0;
};

namespace detail {

template <class R>
struct bt_pair_op {
  reward_pairs<R> in;
  bradley_terry_options opt;
  double inv;
  R *dchosen, *drejected;
  double* losses;  // n
  CAI_HD void operator()(std::int64_t i) const noexcept {
    const ::cai::detail::bt_terms t = ::cai::detail::bt_pair_terms(
        static_cast<double>(in.chosen[i]), static_cast<double>(in.rejected[i]),
        in.margin ? static_cast<double>(in.margin[i]) : 0.0, in.labels ? static_cast<double>(in.labels[i]) : 1.0, opt);
    losses[i] = t.loss;
    if (dchosen) dchosen[i] = static_cast<R>(t.dc * inv);
    if (drejected) drejected[i] = static_cast<R>(t.dr * inv);
  }
};

/// Folds the loss and the metrics in pair order (as generic::bradley_terry_loss).
template <class R>
struct bt_total_op {
  reward_pairs<R> in;
  const double* losses;
  R* out_losses;
  double* total;
  CAI_HD void operator()(std::int64_t) const noexcept {
    const std::int64_t n = in.n;
    double s = 0.0;
    pair_metrics_sum ms;
    for (std::int64_t i = 0; i < n; ++i) {
      s += losses[i];
      ms.add(static_cast<double>(in.chosen[i]), static_cast<double>(in.rejected[i]));
      if (out_losses) out_losses[i] = static_cast<R>(losses[i]);
    }
    const pair_metrics m = ms.finish();
    total[0] = s * (n > 0 ? 1.0 / static_cast<double>(n) : 0.0);
    total[1] = static_cast<double>(m.count);
    total[2] = m.chosen;
    total[3] = m.rejected;
    total[4] = m.margin;
    total[5] = m.accuracy;
  }
};

}  // namespace detail

/// cai::bradley_terry_loss over n reward pairs: d loss / d chosen, rejected (either may be null), per-pair losses
/// (may be null), and total = [loss, count, chosen, rejected, margin, accuracy]. scratch: n doubles.
template <class Policy, class R>
void bradley_terry(const Policy& policy, const reward_pairs<R>& in, const bradley_terry_options& opt,
                   std::type_identity_t<R>* dchosen, std::type_identity_t<R>* drejected, std::type_identity_t<R>* losses,
                   double* total, double* scratch, std::int64_t scratch_size) {
  detail::require_scratch("cai::batched::bradley_terry", scratch_size, in.n);
  if (in.n <= 0) return;
  detail::for_n(policy, in.n,
                detail::bt_pair_op<R>{in, opt, 1.0 / static_cast<double>(in.n), dchosen, drejected, scratch});
  detail::for_n(policy, 1, detail::bt_total_op<R>{in, scratch, losses, total});
}

// ----- PPO-family token surrogates ---------------------------------------------------------------------------------

/// A policy batch in the policy's memory: (B,T) or packed rows of logp (the variable), old_logp, advantages, mask.
template <class R>
struct token_batch {
  rows_of<const R> logp, old_logp, advantages;
  rows_of<const std::uint8_t> mask;
  row_layout L;
};

/// Workspace of surrogate_loss, in doubles, for B rows.
inline constexpr std::int64_t surrogate_loss_scratch(std::int64_t rows) { return 3 * rows + 2; }

namespace detail {

template <class R>
struct count_op {
  rows_of<const std::uint8_t> mask;
  row_layout L;
  double* counts;
  CAI_HD void operator()(std::int64_t b) const noexcept {
    std::int64_t c = L.length(b);
    if (mask.data) {
      const std::uint8_t* m = mask.row(L, b);
      c = 0;
      for (std::int64_t t = 0; t < L.length(b); ++t) c += m[t];
    }
    counts[b] = static_cast<double>(c);
  }
};

struct totals_op {
  const double* counts;
  std::int64_t rows;
  double* totals;  // tokens, sequences
  CAI_HD void operator()(std::int64_t) const noexcept {
    double tokens = 0.0, seqs = 0.0;
    for (std::int64_t b = 0; b < rows; ++b) {
      tokens += counts[b];
      seqs += counts[b] > 0.0;
    }
    totals[0] = tokens;
    totals[1] = seqs;
  }
};

template <class Clip, class Agg, class R>
struct surrogate_rows_op {
  Clip clip;
  Agg agg;
  R lrc;
  token_batch<R> in;
  const double* counts;
  const double* totals;
  rows_of<R> dlogp;
  double* row_loss;
  double* row_clipped;
  CAI_HD void operator()(std::int64_t b) const noexcept {
    const row_layout& L = in.L;
    const auto nb = static_cast<std::int64_t>(counts[b]);
    const double w = agg::row_weight(agg, nb, agg::totals{totals[0], totals[1], static_cast<double>(L.width)});
    const R* x = in.logp.row(L, b);
    const R* o = in.old_logp.row(L, b);
    const R* A = in.advantages.row(L, b);
    const std::uint8_t* m = in.mask.data ? in.mask.row(L, b) : nullptr;
    R* gx = dlogp.data ? dlogp.row(L, b) : nullptr;
    double pg = 0.0, clipped = 0.0;
    for (std::int64_t t = 0; t < L.length(b); ++t) {
      if (m && !m[t]) {
        if (gx) gx[t] = R(0);
        continue;
      }
      const ::cai::detail::ratio_point<R> q = ::cai::detail::token_ratio(x[t], o[t], lrc);
      const pg::point<R> pt = pg::eval(clip, q.r, q.dr, A[t], x[t]);
      pg += static_cast<double>(pt.loss);
      clipped += pt.clipped;
      if (gx) gx[t] = static_cast<R>(w * static_cast<double>(pt.dx));
    }
    row_loss[b] = w * pg;
    row_clipped[b] = clipped;
  }
};

/// Folds the rows in the order of cai::policy_loss (chunks of 8 rows, then the chunks).
struct surrogate_total_op {
  const double* row_loss;
  const double* row_clipped;
  const double* totals;
  std::int64_t rows;
  double* out;  // pg_loss, tokens, clip_fraction
  CAI_HD void operator()(std::int64_t) const noexcept {
    double pg = 0.0, clipped = 0.0;
    for (std::int64_t c0 = 0; c0 < rows; c0 += 8) {
      double cp = 0.0, cc = 0.0;
      for (std::int64_t b = c0; b < rows && b < c0 + 8; ++b) {
        cp += row_loss[b];
        cc += row_clipped[b];
      }
      pg += cp;
      clipped += cc;
    }
    out[0] = pg;
    out[1] = totals[0];
    out[2] = totals[0] > 0.0 ? clipped / totals[0] : 0.0;
  }
};

}  // namespace detail

/// The surrogate part of cai::policy_loss for a token-level surrogate (pg::ppo_clip, dual_clip, cispo, sapo; gspo's
/// sequence ratio and the KL, entropy and rollout-correction terms stay on the host API): dlogp = w_b dl/dx at
/// counted tokens (0 elsewhere) with the aggregation weight w_b of row b, and total = [pg_loss, counted tokens,
/// clip fraction] in cai::policy_loss's summation order. scratch: surrogate_loss_scratch(B) doubles.
template <class Policy, class Clip, agg::aggregation Agg, class R>
void surrogate_loss(const Policy& policy, const Clip& clip, const Agg& agg, double log_ratio_clamp,
                    const token_batch<R>& in, rows_of<R> dlogp, double* total, double* scratch,
                    std::int64_t scratch_size) {
  static_assert(pg::surrogate<Clip> && !std::same_as<Clip, pg::gspo>,
                "cai::batched::surrogate_loss: a token-level surrogate (gspo is host-only)");
  const std::int64_t B = in.L.rows;
  detail::require_scratch("cai::batched::surrogate_loss", scratch_size, surrogate_loss_scratch(B));
  double* counts = scratch;
  double* row_loss = scratch + B;
  double* row_clipped = scratch + 2 * B;
  double* totals = scratch + 3 * B;
  detail::for_n(policy, B, detail::count_op<R>{in.mask, in.L, counts});
  detail::for_n(policy, 1, detail::totals_op{counts, B, totals});
  detail::for_n(policy, B,
                detail::surrogate_rows_op<Clip, Agg, R>{clip, agg, static_cast<R>(log_ratio_clamp), in, counts, totals,
                                                        dlogp, row_loss, row_clipped});
  detail::for_n(policy, 1, detail::surrogate_total_op{row_loss, row_clipped, totals, B, total});
}

}  // namespace cai::batched
