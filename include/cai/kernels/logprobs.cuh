// cai/kernels/logprobs.cuh — CUDA kernels of cai::token_logprobs and cai::token_logprobs_backward
// (algorithms/logprobs.hpp holds the formulas, the shapes and the host path).
//
// Forward: one thread block per output position. The block reads its logits row once, with 16-byte vector loads
// when every row of the call is 16-byte aligned (element loads otherwise); each thread keeps an online soft-max
// state (m, s, t) with ONE exp per logit (the running maximum moves once per vector, not per element), and
// cub::BlockReduce merges the thread states with softmax_state::merge (core/math.hpp) in a fixed tree. The mapping
// of elements to threads and the reduction tree depend only on V, the block size and whether the call's rows are
// aligned — not on the row's position in the batch — so results are the same bits from run to run and for the
// same row in any batch of the same layout. Indices are 64-bit throughout (N * V exceeds 2^31 at RLHF shapes); no
// (N, V) temporary exists. Masked positions are not read.
//
// Optional epilogue (cai::ppo_epilogue): the per-token PPO/GRPO surrogate applied to each log-prob as thread 0
// forms it, writing dL/dlogp (and the per-token loss) in the same pass.
//
// Backward: one block per logits row, dlogits written in one pass over the logits (one read, one write) from the
// forward's saved statistics, or with a reduction pass first when they are not given. The per-element gradient is
// detail::logit_grad, the function the host path uses.
//
// Host and device differ in exp (__expf here, cai's vectorised exp on the host), in the summation order and in
// contracted multiply-adds (nvcc's default -fmad): tests/kernels states the bounds. Problems found in data (target
// outside [0, V), mask byte > 1) go to the status block (kernels/cuda_common.cuh); the affected outputs (log-prob,
// or the row's dlogits) are NaN.
#pragma once

#include <cub/block/block_reduce.cuh>

#include <cfloat>
#include <climits>
#include <cstdint>

#include "../algorithms/logprobs.hpp"
#include "../algorithms/ppo.hpp"
#include "cuda_common.cuh"

namespace cai {

/// The optional epilogue of cai::cuda::token_logprobs_ppo: the per-token loss of a token-level PPO surrogate
/// (pg::ppo_clip, dual_clip, cispo, sapo), applied to each log-prob as it is formed, in the same pass over the
/// logits. At every scored position, with x = logp, o = old_logp, A = advantage and w = weight:
///   dlogp = w dl/dx,  loss = w l      (the per-token terms of cai::policy_loss: token_ratio and pg::eval, ppo.hpp)
/// and 0 at unscored positions. weight is the aggregation weight of a token (1 / counted tokens of the batch for
/// agg::token_mean; pass the global count across micro-batches); the loss is the sum of `loss` (cai::batched::
/// row_sums + fold, or any reduction). Views have the shape of the targets; `loss` may be empty.
template <std::size_t R, class Clip = pg::ppo_clip>
struct ppo_epilogue {
  tensor_view<const float, R, device_space> old_logp{}, advantages{};
  tensor_view<float, R, device_space> dlogp{}, loss{};
  Clip clip{};
  float weight = 1.0f;
  float log_ratio_clamp = 20.0f;
};

namespace kernels {

/// No epilogue: the plain forward.
struct no_epilogue {
  static constexpr bool active = false;
  __device__ void apply(std::int64_t, std::int64_t, float) const {}
  __device__ void skip(std::int64_t, std::int64_t) const {}
};

/// The PPO epilogue on (B, T) rows (the kernel's layout).
template <class Clip>
struct ppo_rows_epilogue {
  static constexpr bool active = true;
  tensor_view<const float, 2, device_space> old_logp, advantages;
  tensor_view<float, 2, device_space> dlogp, loss;
  Clip clip;
  float weight, lrc;
  __device__ void apply(std::int64_t b, std::int64_t t, float x) const {
    const detail::ratio_point<float> q = detail::token_ratio(x, old_logp(b, t), lrc);
    const pg::point<float> pt = pg::eval(clip, q.r, q.dr, advantages(b, t), x);
    dlogp(b, t) = static_cast<float>(static_cast<double>(weight) * static_cast<double>(pt.dx));
    if (loss.data()) loss(b, t) = weight * pt.loss;
  }
  __device__ void skip(std::int64_t b, std::int64_t t) const {
    dlogp(b, t) = 0.0f;
    if (loss.data()) loss(b, t) = 0.0f;
  }
};

}  // namespace kernels
}  // namespace cai

namespace cai::kernels {

inline constexpr int logprob_block = 256;

/// Per-thread online soft-max accumulator: the state of core/math.hpp (m, s = sum e^(z-m), t = sum e^(z-m)(z-m))
/// updated a vector at a time.
struct softmax_acc {
  float m = -infinity_v<float>();
  float s = 0.0f;
  float t = 0.0f;

  template <int N>
  __device__ __forceinline__ void add(const float (&z)[N]) {
    constexpr float neg_inf = -infinity_v<float>();
    float mx = z[0];
#pragma unroll
    for (int k = 1; k < N; ++k) mx = fmaxf(mx, z[k]);
    if (mx > m) {
      if (m == neg_inf) {
        m = mx;
      } else {
        const float d = m - mx;  // < 0
        const float r = __expf(d);
        t = r * fmaf(d, s, t);
        s *= r;
        m = mx;
      }
    }
    if (m == neg_inf) {  // nothing but -inf so far: fmaxf dropped any NaN of this vector, so look for one
#pragma unroll
      for (int k = 0; k < N; ++k)
        if (z[k] != z[k]) m = s = t = z[k];
      return;
    }
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float d = z[k] - m;  // NaN for a NaN logit or when m = +inf: the state becomes NaN, as on the host
      const float e = __expf(d);
      s += e;
      t = fmaf(e, fmaxf(d, -FLT_MAX), t);  // d = -inf has e = 0: contributes 0, not NaN
    }
  }
  __device__ __forceinline__ softmax_state<float> state() const {
    softmax_state<float> st;
    st.m = m;
    st.s = s;
    st.t = t;
    return st;
  }
};

struct softmax_merge {
  __device__ __forceinline__ softmax_state<float> operator()(const softmax_state<float>& a,
                                                             const softmax_state<float>& b) const {
    return softmax_state<float>::merge(a, b);
  }
};

__device__ __forceinline__ bool finite(float v) { return v - v == 0.0f; }

/// True when every logits row of `v` (B, R, V) starts on a 16-byte boundary (host side, once per call).
template <class T, class S>
bool rows_aligned16(const tensor_view<const T, 3, S>& v) {
  const auto bytes = [](std::int64_t elems) { return static_cast<std::uint64_t>(elems) * sizeof(T); };
  return reinterpret_cast<std::uintptr_t>(v.data()) % 16 == 0 && (v.extent(0) <= 1 || bytes(v.stride(0)) % 16 == 0) &&
         (v.extent(1) <= 1 || bytes(v.stride(1)) % 16 == 0);
}

/// Calls f(j, z) for every element of the row x[0, V) owned by this thread, z = x[j] * inv_t; with `vec` (every
/// row of the call 16-byte aligned) vectors of vec_elems<T> go through f as one call with their first index
/// (template on the array size), the tail element by element.
template <int Block, class T, class F>
__device__ __forceinline__ void for_row(const T* x, std::int64_t V, float inv_t, bool vec, F&& f) {
  constexpr int N = vec_elems<T>;
  if (!vec) {
    for (std::int64_t j = threadIdx.x; j < V; j += Block) {
      float z[1] = {load_one(x + j) * inv_t};
      f(j, z);
    }
    return;
  }
  const std::int64_t nvec = V / N;
  for (std::int64_t k = threadIdx.x; k < nvec; k += Block) {
    float z[N];
    load_vec(x + k * N, z);
#pragma unroll
    for (int e = 0; e < N; ++e) z[e] *= inv_t;
    f(k * N, z);
  }
  for (std::int64_t j = nvec * N + threadIdx.x; j < V; j += Block) {
    float z[1] = {load_one(x + j) * inv_t};
    f(j, z);
  }
}

/// The soft-max statistics of one row, valid in thread 0 of the block.
template <int Block, class T>
__device__ __forceinline__ softmax_state<float> row_state(const T* x, std::int64_t V, float inv_t, bool vec,
                                                          typename cub::BlockReduce<softmax_state<float>, Block>::TempStorage& tmp) {
  softmax_acc acc;
  for_row<Block>(x, V, inv_t, vec, [&](std::int64_t, const auto& z) { acc.add(z); });
  return cub::BlockReduce<softmax_state<float>, Block>(tmp).Reduce(acc.state(), softmax_merge{});
}

template <class T, class Idx, int Block, class Epi>
__global__ void __launch_bounds__(Block) token_logprobs_kernel(logprob_problem<T, Idx, device_space> p,
                                                               cuda_status_block* st, Epi epi, bool vec) {
  using reduce_t = cub::BlockReduce<softmax_state<float>, Block>;
  __shared__ typename reduce_t::TempStorage tmp;
  const std::int64_t nr = p.logits.extent(1), V = p.logits.extent(2);
  const std::int64_t items = p.logits.extent(0) * nr;
  const bool has_mask = !p.mask.empty(), want_logp = !p.logp.empty(), want_h = !p.entropy.empty(),
             want_saved = !p.saved.empty();
  const float nan = quiet_nan_v<float>();
  unsigned long long scored = 0, nonfinite = 0;
  for (std::int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const std::int64_t bi = item / nr, pos = item % nr;
    bool active = pos >= p.shift;
    if (active && has_mask) {
      const std::uint8_t mv = p.mask(bi, pos);
      if (mv > 1 && threadIdx.x == 0)
        report_problem(st, cuda_call::token_logprobs, cuda_problem::mask_not_binary, item, mv);
      active = mv != 0;
    }
    if (!active) {  // uniform across the block: no barrier is skipped by part of it
      if (threadIdx.x == 0) {
        epi.skip(bi, pos);
        if (want_logp) p.logp(bi, pos) = 0.0f;
        if (want_h) p.entropy(bi, pos) = 0.0f;
        if (want_saved)
          for (int k = 0; k < 3; ++k) p.saved(bi, pos, k) = 0.0f;
      }
      continue;
    }
    const T* x = &p.logits(bi, pos - p.shift, 0);
    const softmax_state<float> total = row_state<Block>(x, V, p.inv_temperature, vec, tmp);
    if (threadIdx.x == 0) {
      const detail::row_stats rs = detail::stats_of(total);
      ++scored;
      if (!finite(rs.m) || !finite(rs.log_s) || !finite(rs.mu)) ++nonfinite;
      if (want_logp || Epi::active) {
        const auto y = static_cast<std::int64_t>(p.targets(bi, pos));
        float lp = nan;
        if (y < 0 || y >= V) report_problem(st, cuda_call::token_logprobs, cuda_problem::target_out_of_range, item, y);
        else lp = (load_one(x + y) * p.inv_temperature - rs.m) - rs.log_s;
        if (want_logp) p.logp(bi, pos) = lp;
        epi.apply(bi, pos, lp);
      }
      if (want_h) p.entropy(bi, pos) = rs.log_s - rs.mu;
      if (want_saved) {
        p.saved(bi, pos, 0) = rs.m;
        p.saved(bi, pos, 1) = rs.log_s;
        p.saved(bi, pos, 2) = rs.mu;
      }
    }
    __syncthreads();  // tmp is reused by the next row
  }
  if (threadIdx.x == 0 && st != nullptr && scored != 0) {
    atomicAdd(&st->scored_rows, scored);
    if (nonfinite != 0) atomicAdd(&st->nonfinite_rows, nonfinite);
  }
}

template <class T, class Idx, class G, int Block>
__global__ void __launch_bounds__(Block) token_logprobs_backward_kernel(logprob_backward_problem<T, Idx, G, device_space> p,
                                                                        cuda_status_block* st, bool vec) {
  using reduce_t = cub::BlockReduce<softmax_state<float>, Block>;
  __shared__ typename reduce_t::TempStorage tmp;
  __shared__ detail::row_stats shared_rs;
  const std::int64_t nr = p.logits.extent(1), V = p.logits.extent(2);
  const std::int64_t items = p.logits.extent(0) * nr, rows = nr - p.shift;
  const bool has_mask = !p.mask.empty(), has_g = !p.dlogp.empty(), has_h = !p.dentropy.empty(),
             has_saved = !p.saved.empty();
  const float inv_t = p.inv_temperature;
  for (std::int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const std::int64_t bi = item / nr, r = item % nr, pos = r + p.shift;
    G* dx = &p.dlogits(bi, r, 0);
    bool active = r < rows;
    if (active && has_mask) {
      const std::uint8_t mv = p.mask(bi, pos);
      if (mv > 1 && threadIdx.x == 0)
        report_problem(st, cuda_call::token_logprobs_backward, cuda_problem::mask_not_binary, bi * nr + pos, mv);
      active = mv != 0;
    }
    if (!active) {
      for (std::int64_t j = threadIdx.x; j < V; j += Block) dx[j] = G{};
      continue;
    }
    const T* x = &p.logits(bi, r, 0);
    detail::row_stats rs;
    if (has_saved) {
      rs = detail::row_stats{p.saved(bi, pos, 0), p.saved(bi, pos, 1), p.saved(bi, pos, 2)};
    } else {
      const softmax_state<float> total = row_state<Block>(x, V, inv_t, vec, tmp);
      if (threadIdx.x == 0) shared_rs = detail::stats_of(total);
      __syncthreads();
      rs = shared_rs;
    }
    const auto y = static_cast<std::int64_t>(p.targets(bi, pos));
    const bool bad_target = y < 0 || y >= V;
    if (bad_target && threadIdx.x == 0)
      report_problem(st, cuda_call::token_logprobs_backward, cuda_problem::target_out_of_range, bi * nr + pos, y);
    const float nan = quiet_nan_v<float>();
    const float g = has_g ? p.dlogp(bi, pos) : 0.0f, h = has_h ? p.dentropy(bi, pos) : 0.0f;
    const float floor = rs.log_s - 88.0f;
    // dL/dz_j as the host's row_backward forms it: d = z_j - m clamped at log s - 88 (below it p underflows to 0)
    for_row<Block>(x, V, inv_t, vec, [&](std::int64_t j0, const auto& z) {
      constexpr int N = static_cast<int>(sizeof(z) / sizeof(float));
      float out[N];
#pragma unroll
      for (int e = 0; e < N; ++e) {
        float d = z[e] - rs.m;
        if (d < floor) d = floor;
        const float pj = d - rs.log_s <= -88.0f ? 0.0f : __expf(d - rs.log_s);
        out[e] = bad_target ? nan : (detail::logit_grad(pj, d, rs.mu, g, h) + (j0 + e == y ? g : 0.0f)) * inv_t;
      }
      store_vec<G>(dx + j0, out);
    });
    if (!has_saved) __syncthreads();  // tmp and shared_rs are reused by the next row
  }
}

/// Grid for `items` independent rows (each block loops when items exceed the grid).
inline unsigned row_grid(std::int64_t items) {
  return static_cast<unsigned>(items < INT_MAX ? items : INT_MAX);
}

/// Launches the forward on `stream`; CUB-style: no allocation, no synchronisation, the launch status returned.
/// `status` may be null (problems found in data are then not reported). Preconditions (cai::cuda checks them):
/// device memory, each view aligned to its element, logits rows contiguous.
template <class T, class Idx, class Epi = no_epilogue>
cudaError_t token_logprobs(const logprob_problem<T, Idx, device_space>& p, cuda_status_block* status,
                           cudaStream_t stream, const Epi& epi = {}) {
  const std::int64_t items = p.logits.extent(0) * p.logits.extent(1);
  if (items == 0) return cudaSuccess;
  token_logprobs_kernel<T, Idx, logprob_block, Epi>
      <<<row_grid(items), logprob_block, 0, stream>>>(p, status, epi, rows_aligned16(p.logits));
  return cudaGetLastError();
}

/// Launches the backward on `stream` (see token_logprobs).
template <class T, class Idx, class G>
cudaError_t token_logprobs_backward(const logprob_backward_problem<T, Idx, G, device_space>& p,
                                    cuda_status_block* status, cudaStream_t stream) {
  const std::int64_t items = p.logits.extent(0) * p.logits.extent(1);
  if (items == 0) return cudaSuccess;
  token_logprobs_backward_kernel<T, Idx, G, logprob_block>
      <<<row_grid(items), logprob_block, 0, stream>>>(p, status, rows_aligned16(p.logits));
  return cudaGetLastError();
}

}  // namespace cai::kernels
