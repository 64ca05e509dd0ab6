// cai/algorithms/logprobs.hpp — per-token log-probabilities and entropy from logits, and their exact backward.
//
// Forward, for each scored row with logits x (V values), temperature tau, z = x / tau and target y:
//   logp    = z_y - log sum_j e^{z_j}
//   entropy = -sum_j p_j log p_j = log sum_j e^{z_j} - sum_j p_j z_j,            p = softmax(z)
// computed in ONE pass over the vocabulary with the online state (m, s, t) of core/math.hpp (no (N, V)
// temporary), accumulated in fp32 whatever the logit type (fp32, bf16, fp16; fp64 accepted and read as fp32).
//
// Backward, given upstream gradients g = dL/dlogp and h = dL/dentropy per row:
//   dL/dx_j = (1/tau) * [ g (1{j = y} - p_j) + h p_j (E_p[z] - z_j) ]
// in one read of the logits and one write of dlogits when the forward's saved statistics are passed in
// (otherwise the statistics are recomputed first: two reads).
//
// Two layouts (DESIGN.md, data conventions):
//   rows    logits (N, V), targets (N), mask (N)           logp[i] scores targets[i] with logits[i]
//   causal  logits (B, T, V), tokens (B, T), mask (B, T)   logp[b, t] = log p(tokens[b, t] | tokens[b, < t]),
//           read from logits[b, t - 1] as a causal LM emits them; position 0 has no log-prob: its outputs are 0
//           and mask[b, 0] is ignored. dlogits[b, T - 1, :] (which predicts nothing) is written as 0.
//
// Masks are uint8 0/1 (1 = scored) or cai::no_mask. Unscored rows are not read; their outputs and gradients are
// 0, and their targets may hold anything (e.g. -100 padding). Token ids of scored rows must lie in [0, V).
//
// Numerics: logp is formed as (z_y - m) - log s, which keeps full relative accuracy for logits up to +-1e4.
// -inf logits are valid (probability 0). A row containing NaN or +inf gives NaN outputs and is counted in
// logprob_summary::nonfinite_rows. Results are deterministic: rows are independent and each row is reduced in a
// fixed order, so cai::host and cai::threaded_host at any thread count give the same bits.
//
// Template parameters: the backend satisfies cai::backend (concepts/backend.hpp); logits are
// tensor_view/tensor of a cai::logit_element; targets int32 or int64; outputs fp32.
//
//   cai::token_logprobs(cai::host{}, logits, targets, cai::no_mask, {.logp = logp, .entropy = entropy});
//   (examples/logprobs.cpp compiles this)
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/math.hpp"
#include "../core/simd.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "dispatch.hpp"

namespace cai {

/// Options shared by the forward and the backward.
struct logprob_options {
  float temperature = 1.0f;  ///< logits are divided by it; finite and > 0
};

/// Outputs of token_logprobs. Each may be left empty (not computed). `saved` holds per-position statistics
/// (m, log s, t / s) that let token_logprobs_backward make one pass instead of two.
template <std::size_t R, class S = host_space>
struct logprob_outputs {
  tensor_view<float, R, S> logp{};
  tensor_view<float, R, S> entropy{};
  tensor_view<float, R + 1, S> saved{};
};

/// Upstream gradients for token_logprobs_backward: dL/dlogp and dL/dentropy (either may be empty = zero), and
/// optionally the forward's saved statistics.
template <std::size_t R, class S = host_space>
struct logprob_grads {
  tensor_view<const float, R, S> dlogp{};
  tensor_view<const float, R, S> dentropy{};
  tensor_view<const float, R + 1, S> saved{};
};

/// What token_logprobs reports besides its outputs.
struct logprob_summary {
  std::int64_t scored_rows = 0;    ///< rows whose log-prob was computed
  std::int64_t nonfinite_rows = 0;  ///< scored rows whose logits held NaN or +inf (their outputs are NaN)
  /// cai::cuda: the counts above are not known without a synchronisation; they accumulate on the device and
  /// cai::cuda::synchronize() returns them (a cai::cuda_report). Both counts are 0 here then.
  bool deferred = false;
};

/// The checked problem every implementation receives. Logits are (B, R, V) with stride 1 over V; the other
/// views are (B, R) (saved: (B, R, 3)). Logits row r scores position r + shift (shift = 0 for rows, 1 causal);
/// positions [0, shift) get 0 outputs. Empty views mean "absent".
template <class T, class Idx, class S>
struct logprob_problem {
  tensor_view<const T, 3, S> logits;
  tensor_view<const Idx, 2, S> targets;
  tensor_view<const std::uint8_t, 2, S> mask;
  tensor_view<float, 2, S> logp;
  tensor_view<float, 2, S> entropy;
  tensor_view<float, 3, S> saved;
  std::int64_t shift = 0;
  float inv_temperature = 1.0f;
};

/// The checked backward problem; dlogits has the shape of logits.
template <class T, class Idx, class G, class S>
struct logprob_backward_problem {
  tensor_view<const T, 3, S> logits;
  tensor_view<const Idx, 2, S> targets;
  tensor_view<const std::uint8_t, 2, S> mask;
  tensor_view<const float, 2, S> dlogp;
  tensor_view<const float, 2, S> dentropy;
  tensor_view<const float, 3, S> saved;
  tensor_view<G, 3, S> dlogits;
  std::int64_t shift = 0;
  float inv_temperature = 1.0f;
};

// ---------------------------------------------------------------------------------------------------------------
// Element math shared by every path (host scalar, host SIMD with V = simd::f32v, CUDA).
namespace detail {

/// dL/dz_j for one vocabulary entry (without the 1{j = y} g term): p = e^{d - log s}, d = z_j - m,
/// mu = t / s = E_p[z] - m. Written as (p h)(mu - d) - p g so that p = 0 gives exactly 0 even when d = -inf
/// was clamped to -FLT_MAX.
template <class V>
CAI_HD CAI_FORCE_INLINE V logit_grad(V p, V d, V mu, V g, V h) noexcept {
  return (p * h) * (mu - d) - p * g;
}

struct row_stats {
  float m, log_s, mu;  // saved statistics: max, log sum e^(z-m), E_p[z] - m
};

CAI_HD inline row_stats stats_of(const softmax_state<float>& st) noexcept {
  using std::log;
  return row_stats{st.m, log(st.s), st.t / st.s};
}

// ----- host row kernels -----------------------------------------------------------------------------------------
#if CAI_HAS_VECTOR_EXT

/// Prefetches `Lines` cache lines starting `bytes` past `p`. The address is formed as an integer, never as an
/// out-of-range pointer, and prefetches never fault, so running past the end of a row is harmless.
template <int Lines>
CAI_FORCE_INLINE void prefetch_lines(const void* p, std::int64_t bytes) noexcept {
  const auto base = reinterpret_cast<std::uintptr_t>(p) + static_cast<std::uintptr_t>(bytes);
  for (int l = 0; l < Lines; ++l) __builtin_prefetch(reinterpret_cast<const void*>(base + 64u * static_cast<unsigned>(l)));
}

/// Online soft-max statistics of z = x * inv_t over one row, vectorised: blocks of `block` elements are scanned
/// twice while they sit in L1 (max, then exp-and-sum), so memory is read once and the running state is rescaled
/// once per block instead of once per element. `Scaled` = false skips the temperature multiply (inv_t == 1).
template <bool Scaled, class T>
softmax_state<float> row_softmax_state_impl(const T* x, std::int64_t V, float inv_t) noexcept {
  using namespace simd;
  constexpr std::int64_t block = 1024;
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  const f32v scale = splat(inv_t);
  auto z_of = [&](const T* p) {
    if constexpr (Scaled) return load(p) * scale;
    else return load(p);
  };
  f32v M = splat(neg_inf), S = splat(0.0f), Tt = splat(0.0f);

  // Narrow types are widened once, in the max pass, into an L1 buffer that the exp pass reads back.
  constexpr bool widen_once = !std::is_same_v<T, float>;
  alignas(64) float zbuf[widen_once ? block : 1];
  auto consume = [&](const T* p, std::int64_t n) {  // n: multiple of `lanes`
    // Four independent max chains: one chain would be bound by the latency of max, not by throughput.
    f32v m0 = splat(neg_inf), m1 = m0, m2 = m0, m3 = m0;
    auto peek = [&](std::int64_t k) {
      const f32v z = z_of(p + k);
      if constexpr (widen_once) store(zbuf + k, z);
      return z;
    };
    std::int64_t i = 0;
    for (; i + 4 * lanes <= n; i += 4 * lanes) {
      f32v z0, z1, z2, z3;
      if constexpr (std::is_same_v<T, bfloat16> && !Scaled) {
        // Cheaper widening that permutes elements within the block: the buffer is only reduced, never indexed.
        load_deinterleaved(p + i, z0, z1);
        load_deinterleaved(p + i + 2 * lanes, z2, z3);
        store(zbuf + i, z0);
        store(zbuf + i + lanes, z1);
        store(zbuf + i + 2 * lanes, z2);
        store(zbuf + i + 3 * lanes, z3);
      } else {
        z0 = peek(i);
        z1 = peek(i + lanes);
        z2 = peek(i + 2 * lanes);
        z3 = peek(i + 3 * lanes);
      }
      m0 = m0 < z0 ? z0 : m0;
      m1 = m1 < z1 ? z1 : m1;
      m2 = m2 < z2 ? z2 : m2;
      m3 = m3 < z3 ? z3 : m3;
    }
    for (; i < n; i += lanes) {
      const f32v z0 = peek(i);
      m0 = m0 < z0 ? z0 : m0;
    }
    m0 = m0 < m1 ? m1 : m0;
    m2 = m2 < m3 ? m3 : m2;
    const f32v bm = m0 < m2 ? m2 : m0;
    const f32v Mn = M < bm ? bm : M;
    // Lanes that saw only -inf so far have S = Tt = 0: rebasing them must not multiply 0 by e^(+huge) = inf.
    const f32v new_safe = Mn == splat(neg_inf) ? splat(0.0f) : Mn;
    const f32v old_safe = M == splat(neg_inf) ? new_safe : M;
    const f32v delta = old_safe - new_safe;
    const f32v alpha = simd::exp_nonpos(delta);
    Tt = alpha * (Tt + delta * S);
    S = alpha * S;
    M = Mn;
    // d = z - max <= 0 is clamped at -88 (where exp_nonpos is exactly 0), so -inf logits add 0 to S and 0 * -88
    // = 0 to Tt; a NaN (or +inf, through inf - inf) poisons both, as documented.
    const f32v floor = splat(-88.0f);
    auto term = [&](std::int64_t k, f32v& s_acc, f32v& t_acc) {
      f32v z;
      if constexpr (widen_once) z = load(zbuf + k);
      else z = z_of(p + k);
      const f32v d = max_keep_nan(z - new_safe, floor);
      const f32v e = simd::exp_nonpos_clamped(d);
      s_acc += e;
      t_acc += e * d;
    };
    f32v s0 = splat(0.0f), s1 = s0, s2 = s0, s3 = s0, t0 = s0, t1 = s0, t2 = s0, t3 = s0;
    i = 0;
    for (; i + 4 * lanes <= n; i += 4 * lanes) {  // four independent chains hide the exp latency
      // This pass reads L1; fetch the next block meanwhile, so that memory and the exp work overlap.
      prefetch_lines<4>(p + i, block * static_cast<std::int64_t>(sizeof(T)));
      term(i, s0, t0);
      term(i + lanes, s1, t1);
      term(i + 2 * lanes, s2, t2);
      term(i + 3 * lanes, s3, t3);
    }
    for (; i < n; i += lanes) term(i, s0, t0);
    S += (s0 + s1) + (s2 + s3);
    Tt += (t0 + t1) + (t2 + t3);
  };

  const std::int64_t main = V - V % lanes;
  for (std::int64_t b = 0; b < main; b += block) consume(x + b, (main - b) < block ? main - b : block);
  if (main < V) {
    T tail[lanes];
    for (int j = 0; j < lanes; ++j) tail[j] = main + j < V ? x[main + j] : from_float<T>(neg_inf);
    consume(tail, lanes);
  }
  // Fixed pairwise merge of the lane states.
  softmax_state<float> st[lanes];
  for (int j = 0; j < lanes; ++j) st[j] = softmax_state<float>{M[j], S[j], Tt[j]};
  for (int w = lanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) st[j] = softmax_state<float>::merge(st[j], st[j + w]);
  return st[0];
}

template <class T>
softmax_state<float> row_softmax_state(const T* x, std::int64_t V, float inv_t) noexcept {
  return inv_t == 1.0f ? row_softmax_state_impl<false>(x, V, inv_t) : row_softmax_state_impl<true>(x, V, inv_t);
}

/// Writes dlogits for one row; see the header comment. `dx` may alias `x` exactly (in-place backward).
/// `Scaled` = false skips the two temperature multiplies (inv_t == 1).
template <bool Scaled, class T, class G>
void row_backward_impl(const T* x, G* dx, std::int64_t V, std::int64_t y, float inv_t, const row_stats& rs, float g,
                       float h) noexcept {
  using namespace simd;
  const float zy = to_float(x[y]) * inv_t;  // read before an in-place write can overwrite it
  const f32v scale = splat(inv_t), m = splat(rs.m), ls = splat(rs.log_s), mu = splat(rs.mu), gv = splat(g),
             hv = splat(h);
  // d is clamped at log s - 88, where p = e^(d - log s) is exactly 0 and so is (p h)(mu - d) - p g; a -inf
  // logit thus gets gradient 0 rather than 0 * inf = NaN.
  const f32v floor = splat(-88.0f) + ls;
  auto grad_of = [&](f32v xv) {
    if constexpr (Scaled) xv = xv * scale;
    const f32v d = max_keep_nan(xv - m, floor);
    const f32v p = simd::exp_nonpos_clamped(d - ls);  // d - ls >= -88 by the clamp above
    const f32v gz = logit_grad(p, d, mu, gv, hv);
    if constexpr (Scaled) return gz * scale;
    else return gz;
  };
  constexpr std::int64_t ahead = 1024;  // elements: prefetch distance of the streaming read
  const std::int64_t main = V - V % lanes;
  std::int64_t i = 0;
  for (; i + 2 * lanes <= main; i += 2 * lanes) {
    prefetch_lines<2>(x + i, ahead * static_cast<std::int64_t>(sizeof(T)));
    const f32v g0 = grad_of(load(x + i)), g1 = grad_of(load(x + i + lanes));
    store(dx + i, g0);
    store(dx + i + lanes, g1);
  }
  for (; i < main; i += lanes) store(dx + i, grad_of(load(x + i)));
  if (main < V) {
    T tin[lanes];
    G tout[lanes];
    for (int j = 0; j < lanes; ++j) tin[j] = main + j < V ? x[main + j] : T{};
    store(tout, grad_of(load(tin)));
    for (std::int64_t j = 0; main + j < V; ++j) dx[main + j] = tout[j];
  }
  // The target entry gets its +g term, evaluated in fp32 and rounded once.
  float d = zy - rs.m;
  if (d < rs.log_s - 88.0f) d = rs.log_s - 88.0f;
  const float p = simd::exp_nonpos(d - rs.log_s);
  dx[y] = from_float<G>((logit_grad(p, d, rs.mu, g, h) + g) * inv_t);
}

template <class T, class G>
void row_backward(const T* x, G* dx, std::int64_t V, std::int64_t y, float inv_t, const row_stats& rs, float g,
                  float h) noexcept {
  if (inv_t == 1.0f) row_backward_impl<false>(x, dx, V, y, inv_t, rs, g, h);
  else row_backward_impl<true>(x, dx, V, y, inv_t, rs, g, h);
}

#else  // portable scalar fallback: the same formulas and clamps with std::exp

template <class T>
softmax_state<float> row_softmax_state(const T* x, std::int64_t V, float inv_t) noexcept {
  softmax_state<float> st;
  for (std::int64_t j = 0; j < V; ++j) st.push(to_float(x[j]) * inv_t);
  return st;
}

template <class T, class G>
void row_backward(const T* x, G* dx, std::int64_t V, std::int64_t y, float inv_t, const row_stats& rs, float g,
                  float h) noexcept {
  const float zy = to_float(x[y]) * inv_t;
  for (std::int64_t j = 0; j < V; ++j) {
    float d = to_float(x[j]) * inv_t - rs.m;
    if (d < rs.log_s - 88.0f) d = rs.log_s - 88.0f;
    const float p = d - rs.log_s <= -88.0f ? 0.0f : std::exp(d - rs.log_s);
    dx[j] = from_float<G>(logit_grad(p, d, rs.mu, g, h) * inv_t);
  }
  float d = zy - rs.m;
  if (d < rs.log_s - 88.0f) d = rs.log_s - 88.0f;
  const float p = d - rs.log_s <= -88.0f ? 0.0f : std::exp(d - rs.log_s);
  dx[y] = from_float<G>((logit_grad(p, d, rs.mu, g, h) + g) * inv_t);
}

#endif

/// Rows per chunk: about 64k logits per chunk keeps scheduling overhead negligible at any vocabulary size.
inline std::int64_t logprob_grain(std::int64_t V) noexcept { return V >= 65536 ? 1 : 65536 / V; }

}  // namespace detail

// ---------------------------------------------------------------------------------------------------------------
// Generic implementations (any bulk_backend).
namespace generic {

template <bulk_backend B, class T, class Idx>
logprob_summary token_logprobs(const B& b, const logprob_problem<T, Idx, host_space>& p) {
  const std::int64_t nb = p.logits.extent(0), nr = p.logits.extent(1), V = p.logits.extent(2);
  const std::int64_t rows = nr - p.shift;
  const bool has_mask = !p.mask.empty(), want_logp = !p.logp.empty(), want_h = !p.entropy.empty(),
             want_saved = !p.saved.empty();
  for (std::int64_t bi = 0; bi < nb; ++bi)
    for (std::int64_t r = 0; r < p.shift && r < nr; ++r) {
      if (want_logp) p.logp(bi, r) = 0.0f;
      if (want_h) p.entropy(bi, r) = 0.0f;
      if (want_saved)
        for (int k = 0; k < 3; ++k) p.saved(bi, r, k) = 0.0f;
    }
  if (rows <= 0) return {};
  struct counts {
    std::int64_t scored = 0, nonfinite = 0;
  };
  const counts c = chunked_reduce(
      b, nb * rows, detail::logprob_grain(V), counts{},
      [&](std::int64_t begin, std::int64_t end) {
        counts local;
        for (std::int64_t i = begin; i < end; ++i) {
          const std::int64_t bi = i / rows, r = i % rows, pos = r + p.shift;
          if (has_mask && p.mask(bi, pos) == 0) {
            if (want_logp) p.logp(bi, pos) = 0.0f;
            if (want_h) p.entropy(bi, pos) = 0.0f;
            if (want_saved)
              for (int k = 0; k < 3; ++k) p.saved(bi, pos, k) = 0.0f;
            continue;
          }
          const T* x = &p.logits(bi, r, 0);
          const auto st = detail::row_softmax_state(x, V, p.inv_temperature);
          const auto rs = detail::stats_of(st);
          ++local.scored;
          if (!std::isfinite(rs.m) || !std::isfinite(rs.log_s) || !std::isfinite(rs.mu)) ++local.nonfinite;
          if (want_logp) {
            const auto y = static_cast<std::int64_t>(p.targets(bi, pos));
            p.logp(bi, pos) = (to_float(x[y]) * p.inv_temperature - rs.m) - rs.log_s;
          }
          if (want_h) p.entropy(bi, pos) = rs.log_s - rs.mu;
          if (want_saved) {
            p.saved(bi, pos, 0) = rs.m;
            p.saved(bi, pos, 1) = rs.log_s;
            p.saved(bi, pos, 2) = rs.mu;
          }
        }
        return local;
      },
      [](counts a, counts x) { return counts{a.scored + x.scored, a.nonfinite + x.nonfinite}; });
  return {c.scored, c.nonfinite};
}

template <bulk_backend B, class T, class Idx, class G>
void token_logprobs_backward(const B& b, const logprob_backward_problem<T, Idx, G, host_space>& p) {
  const std::int64_t nb = p.logits.extent(0), nr = p.logits.extent(1), V = p.logits.extent(2);
  const std::int64_t rows = nr - p.shift;
  const bool has_mask = !p.mask.empty(), has_g = !p.dlogp.empty(), has_h = !p.dentropy.empty(),
             has_saved = !p.saved.empty();
  parallel_for(b, nb * nr, detail::logprob_grain(V), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const std::int64_t bi = i / nr, r = i % nr, pos = r + p.shift;
      G* dx = &p.dlogits(bi, r, 0);
      if (r >= rows || (has_mask && p.mask(bi, pos) == 0)) {
        for (std::int64_t j = 0; j < V; ++j) dx[j] = G{};
        continue;
      }
      const T* x = &p.logits(bi, r, 0);
      const detail::row_stats rs =
          has_saved ? detail::row_stats{p.saved(bi, pos, 0), p.saved(bi, pos, 1), p.saved(bi, pos, 2)}
                    : detail::stats_of(detail::row_softmax_state(x, V, p.inv_temperature));
      detail::row_backward(x, dx, V, static_cast<std::int64_t>(p.targets(bi, pos)), p.inv_temperature, rs,
                           has_g ? p.dlogp(bi, pos) : 0.0f, has_h ? p.dentropy(bi, pos) : 0.0f);
    }
  });
}

}  // namespace generic

CAI_DETAIL_DISPATCH(token_logprobs)
CAI_DETAIL_DISPATCH(token_logprobs_backward)

// ---------------------------------------------------------------------------------------------------------------
// Argument checking and the public objects.
namespace detail {

template <class Idx>
concept token_index = std::same_as<Idx, std::int32_t> || std::same_as<Idx, std::int64_t>;

template <std::size_t R, class S, class M>
tensor_view<const std::uint8_t, R, S> mask_view(const M& mask) {
  if constexpr (std::is_same_v<std::remove_cvref_t<M>, no_mask_t>) {
    return {};
  } else {
    static_assert(viewable<M>, "mask: pass a uint8 view/tensor or cai::no_mask");
    static_assert(std::is_same_v<element_of_t<M>, std::uint8_t>, "mask: element type must be std::uint8_t (0/1)");
    static_assert(rank_of_v<M> == R, "mask: must have the rank of targets");
    static_assert(std::is_same_v<space_of_t<M>, S>, "mask: must live in the memory space of logits");
    return as_const_view(mask);
  }
}

/// Views (N) as (1, N) and (B, T) as itself, so both layouts share one implementation.
template <class T, std::size_t R, class S>
tensor_view<T, 2, S> as_rows2(const tensor_view<T, R, S>& v) {
  if constexpr (R == 2) return v;
  else return tensor_view<T, 2, S>(v.data(), {1, v.extent(0)}, {v.extent(0) * v.stride(0), v.stride(0)});
}
template <class T, std::size_t R, class S>
tensor_view<T, 3, S> as_rows3(const tensor_view<T, R, S>& v) {
  if constexpr (R == 3) return v;
  else
    return tensor_view<T, 3, S>(v.data(), {1, v.extent(0), v.extent(1)},
                                {v.extent(0) * v.stride(0), v.stride(0), v.stride(1)});
}

template <class T, std::size_t R, class S>
void check_same_lead(std::string_view call, std::string_view arg, const tensor_view<T, R, S>& v,
                     const auto& logits) {
  for (std::size_t d = 0; d < R; ++d) require_extent(call, arg, v, d, logits.extent(d), "leading extents of 'logits'");
}

template <class T, std::size_t R, class S>
void check_saved(std::string_view call, const tensor_view<T, R, S>& saved, const auto& logits) {
  if (saved.empty() && saved.data() == nullptr) return;
  for (std::size_t d = 0; d + 1 < R; ++d) require_extent(call, "saved", saved, d, logits.extent(d), "leading extents of 'logits'");
  require_extent(call, "saved", saved, R - 1, 3, "three statistics per position");
}

inline void check_common(std::string_view call, const auto& logits, float temperature) {
  if (!(temperature > 0.0f) || !std::isfinite(temperature))
    fail_argument(call, "temperature", "a finite value > 0", temperature);
  require_row_contiguous(call, "logits", logits);
  constexpr std::size_t R = std::remove_cvref_t<decltype(logits)>::rank;
  if (logits.extent(R - 1) < 1) fail_argument<shape_error>(call, "logits", "a vocabulary extent >= 1", logits.extent(R - 1));
}

/// Host-side value checks: mask entries are 0/1 and scored targets lie in [0, V).
template <class Idx>
void check_values(std::string_view call, const tensor_view<const Idx, 2>& targets,
                  const tensor_view<const std::uint8_t, 2>& mask, std::int64_t shift, std::int64_t V) {
  const bool has_mask = !mask.empty();
  for (std::int64_t b = 0; b < targets.extent(0); ++b)
    for (std::int64_t t = shift; t < targets.extent(1); ++t) {
      if (has_mask) {
        const auto mv = mask(b, t);
        if (mv > 1) fail_argument(call, "mask", "values 0 or 1", concat(int(mv), " at ", b, ",", t));
        if (mv == 0) continue;
      }
      const auto y = static_cast<std::int64_t>(targets(b, t));
      if (y < 0 || y >= V)
        fail_argument(call, "targets", concat("token ids in [0, ", V, ")"), concat(y, " at ", b, ",", t));
    }
}

/// The input checks the forward and the backward share; returns the views (logits, targets, mask) as const views.
template <class L, class Y, class M>
auto checked_inputs(std::string_view call, const L& logits_in, const Y& targets_in, const M& mask_in, float temperature) {
  constexpr std::size_t R = rank_of_v<L>;
  const auto logits = as_const_view(logits_in);
  const auto targets = as_const_view(targets_in);
  const auto mask = mask_view<R - 1, space_of_t<L>>(mask_in);
  check_common(call, logits, temperature);
  check_same_lead(call, "targets", targets, logits);
  if (!mask.empty() || mask.data()) check_same_lead(call, "mask", mask, logits);
  return std::tuple{logits, targets, mask};
}

/// The checks of cai::token_logprobs and the problem they build (shared with cai::cuda's fused PPO forward).
template <viewable L, viewable Y, class M>
  requires logit_element<element_of_t<L>> && token_index<element_of_t<Y>> && (rank_of_v<L> == 2 || rank_of_v<L> == 3) &&
           (rank_of_v<Y> + 1 == rank_of_v<L>) && std::same_as<space_of_t<Y>, space_of_t<L>>
auto make_logprob_problem(std::string_view call, const L& logits_in, const Y& targets_in, const M& mask_in,
                          const logprob_outputs<rank_of_v<L> - 1, space_of_t<L>>& out, const logprob_options& opt) {
  constexpr std::size_t R = rank_of_v<L>;
  using S = space_of_t<L>;
  const auto [logits, targets, mask] = checked_inputs(call, logits_in, targets_in, mask_in, opt.temperature);
  const bool any_out = !out.logp.empty() || !out.entropy.empty() || !out.saved.empty();
  if (!any_out && logits.size() != 0)
    fail_argument(call, "out", "at least one of .logp, .entropy, .saved", "none");
  if (!out.logp.empty()) check_same_lead(call, "out.logp", out.logp, logits);
  if (!out.entropy.empty()) check_same_lead(call, "out.entropy", out.entropy, logits);
  check_saved(call, out.saved, logits);
  const std::int64_t shift = R == 3 ? 1 : 0;
  if constexpr (std::is_same_v<S, host_space>)
    check_values(call, as_rows2(targets), as_rows2(mask), shift, logits.extent(R - 1));
  return logprob_problem<element_of_t<L>, element_of_t<Y>, S>{
      as_rows3(logits), as_rows2(targets), as_rows2(mask), as_rows2(out.logp), as_rows2(out.entropy),
      as_rows3(out.saved), shift, 1.0f / opt.temperature};
}

struct token_logprobs_fn {
  /// logits (N, V) with targets (N), or logits (B, T, V) with tokens (B, T) (causal); see the header comment.
  template <backend Bk, viewable L, viewable Y, class M>
    requires logit_element<element_of_t<L>> && token_index<element_of_t<Y>> &&
             (rank_of_v<L> == 2 || rank_of_v<L> == 3) && (rank_of_v<Y> + 1 == rank_of_v<L>) &&
             std::same_as<space_of_t<L>, backend_space_t<Bk>> && std::same_as<space_of_t<Y>, space_of_t<L>>
  logprob_summary operator()(const Bk& b, const L& logits_in, const Y& targets_in, const M& mask_in,
                             const logprob_outputs<rank_of_v<L> - 1, space_of_t<L>>& out,
                             const logprob_options& opt = {}) const {
    return token_logprobs_cpo::dispatch(
        b, make_logprob_problem("cai::token_logprobs", logits_in, targets_in, mask_in, out, opt));
  }
};

struct token_logprobs_backward_fn {
  /// Writes dlogits (the shape of logits; fp32, fp64, bf16 or fp16) from the upstream gradients.
  template <backend Bk, viewable L, viewable Y, class M, class G, std::size_t GR, class GS>
    requires logit_element<element_of_t<L>> && token_index<element_of_t<Y>> && logit_element<G> &&
             (!std::is_const_v<G>) && (rank_of_v<L> == 2 || rank_of_v<L> == 3) &&
             (rank_of_v<Y> + 1 == rank_of_v<L>) && (GR == rank_of_v<L>) && std::same_as<GS, space_of_t<L>> &&
             std::same_as<space_of_t<L>, backend_space_t<Bk>> && std::same_as<space_of_t<Y>, space_of_t<L>>
  void operator()(const Bk& b, const L& logits_in, const Y& targets_in, const M& mask_in,
                  const logprob_grads<rank_of_v<L> - 1, space_of_t<L>>& grads, const tensor_view<G, GR, GS>& dlogits,
                  const logprob_options& opt = {}) const {
    constexpr std::string_view call = "cai::token_logprobs_backward";
    constexpr std::size_t R = rank_of_v<L>;
    using S = space_of_t<L>;
    const auto [logits, targets, mask] = checked_inputs(call, logits_in, targets_in, mask_in, opt.temperature);
    if (!grads.dlogp.empty()) check_same_lead(call, "grads.dlogp", grads.dlogp, logits);
    if (!grads.dentropy.empty()) check_same_lead(call, "grads.dentropy", grads.dentropy, logits);
    check_saved(call, grads.saved, logits);
    for (std::size_t d = 0; d < R; ++d)
      require_extent(call, "dlogits", dlogits, d, logits.extent(d), "the shape of 'logits'");
    require_row_contiguous(call, "dlogits", dlogits);
    const std::int64_t shift = R == 3 ? 1 : 0;
    if constexpr (std::is_same_v<S, host_space>)
      check_values(call, as_rows2(targets), as_rows2(mask), shift, logits.extent(R - 1));
    logprob_backward_problem<element_of_t<L>, element_of_t<Y>, G, S> p{
        as_rows3(logits), as_rows2(targets),    as_rows2(mask), as_rows2(grads.dlogp), as_rows2(grads.dentropy),
        as_rows3(grads.saved), as_rows3(dlogits), shift,         1.0f / opt.temperature};
    token_logprobs_backward_cpo::dispatch(b, p);
  }
};

}  // namespace detail

/// Per-token log-probs (and entropy) from logits in one pass over the vocabulary. See the header comment.
inline constexpr detail::token_logprobs_fn token_logprobs{};
/// Exact backward of token_logprobs: dlogits from dL/dlogp and dL/dentropy. See the header comment.
inline constexpr detail::token_logprobs_backward_fn token_logprobs_backward{};

}  // namespace cai
