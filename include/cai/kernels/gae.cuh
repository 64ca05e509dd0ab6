// cai/kernels/gae.cuh — CUDA kernels of cai::gae and cai::discounted_returns (algorithms/gae.hpp holds the
// formulas, the masking rule and the host path).
//
// The backward recursion is a composition of per-step maps on the carried state x = (x1, x2):
//   GAE, counted step t:      (A, V_next) -> (gamma lambda A + gamma V_next + (r_t - V_t),  V_t)
//   returns, counted step t:  (G, -)      -> (gamma G + r_t, 0)
//   masked step:              identity (A and V_next carry across unchanged)
// Counted maps all have the form x -> (a x1 + b x2 + c1, c2); a composition of them has it too, and with the
// identity added the set is closed under composition, which is associative. So each row is ONE reverse inclusive
// scan (cub::BlockScan, fp64 state whatever the storage type, as the host recursion) over tiles of
// Block * Items steps, the carry of the later tiles entering through the block-prefix callback. The output at a
// counted step is the first component of (composed map)(x_end), x_end = (0, bootstrap) for GAE and
// (bootstrap, 0) for returns. One block per row (per sequence in the packed layout); the association order
// depends only on the row length, so results are the same bits from run to run.
#pragma once

#include <cub/block/block_scan.cuh>

#include <climits>
#include <cstdint>

#include "../algorithms/gae.hpp"
#include "cuda_common.cuh"

namespace cai::kernels {

inline constexpr int gae_block = 256;
inline constexpr int gae_items = 8;

/// An affine step map x -> (a x1 + b x2 + c1, c2), or the identity.
struct step_map {
  double a, b, c1, c2;
  bool identity;

  /// first ∘ second is "apply `later` first, then `earlier`": the scan runs from the end of the row.
  __device__ __forceinline__ static step_map compose(const step_map& later, const step_map& earlier) {
    if (earlier.identity) return later;
    if (later.identity) return earlier;
    return step_map{earlier.a * later.a, earlier.a * later.b,
                    fma(earlier.a, later.c1, fma(earlier.b, later.c2, earlier.c1)), earlier.c2, false};
  }
};

struct step_compose {
  __device__ __forceinline__ step_map operator()(const step_map& acc, const step_map& next) const {
    return step_map::compose(acc, next);
  }
};

/// Seeds each tile's scan with the composition of the tiles after it, and keeps the running total.
struct tile_carry {
  step_map total{1.0, 0.0, 0.0, 0.0, true};
  __device__ __forceinline__ step_map operator()(const step_map& tile_aggregate) {
    const step_map before = total;
    total = step_map::compose(total, tile_aggregate);
    return before;
  }
};

template <bool Values, class R>
__global__ void __launch_bounds__(gae_block) gae_kernel(device_gae_problem<R> p, cuda_status_block* st) {
  using scan_t = cub::BlockScan<step_map, gae_block>;
  __shared__ typename scan_t::TempStorage tmp;
  const cuda_call call = Values ? cuda_call::gae : cuda_call::discounted_returns;
  const bool packed = p.cu_seqlens.data() != nullptr;
  const std::int64_t N = p.rewards.extent(1);
  const bool has_mask = p.mask.data() != nullptr, want_a = p.advantages.data() != nullptr,
             want_r = p.returns.data() != nullptr;
  const double g = p.gamma, gl = p.gamma * p.lambda;
  for (std::int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    // The row's first element in each view and its length; packed offsets are validated here, on the device.
    std::int64_t b = row, base = 0, n = N;
    if (packed) {
      const std::int64_t lo = p.cu_seqlens(row), hi = p.cu_seqlens(row + 1);
      if (lo < 0 || hi < lo || hi > N || (row == 0 && lo != 0) || (row + 1 == p.rows && hi != N)) {
        if (threadIdx.x == 0) report_problem(st, call, cuda_problem::bad_offsets, row, hi);
        continue;
      }
      b = 0;
      base = lo;
      n = hi - lo;
    }
    double boot = 0.0;
    if (p.bootstrap.data() != nullptr) {
      boot = static_cast<double>(p.bootstrap(row));
      if (!(boot - boot == 0.0) && threadIdx.x == 0) report_problem(st, call, cuda_problem::nonfinite_input, row, 2);
    }
    const double x1 = Values ? 0.0 : boot, x2 = Values ? boot : 0.0;
    tile_carry carry;
    constexpr std::int64_t tile = static_cast<std::int64_t>(gae_block) * gae_items;
    // Tiles from the end of the row; within a tile, thread k owns reversed steps [k * items, (k + 1) * items).
    for (std::int64_t end = n; end > 0; end -= tile) {
      step_map m[gae_items];
      bool counted[gae_items];
      double v_at[gae_items];
#pragma unroll
      for (int i = 0; i < gae_items; ++i) {
        const std::int64_t t = end - 1 - (static_cast<std::int64_t>(threadIdx.x) * gae_items + i);
        counted[i] = false;
        v_at[i] = 0.0;
        m[i] = step_map{1.0, 0.0, 0.0, 0.0, true};
        if (t < 0) continue;
        const std::int64_t col = base + t;
        if (has_mask) {
          const std::uint8_t mv = p.mask(b, col);
          if (mv > 1) report_problem(st, call, cuda_problem::mask_not_binary, b * N + col, mv);
          if (mv == 0) continue;
        }
        counted[i] = true;
        const double r = static_cast<double>(p.rewards(b, col));
        if (!(r - r == 0.0)) report_problem(st, call, cuda_problem::nonfinite_input, b * N + col, 0);
        if constexpr (Values) {
          const double v = static_cast<double>(p.values(b, col));
          if (!(v - v == 0.0)) report_problem(st, call, cuda_problem::nonfinite_input, b * N + col, 1);
          v_at[i] = v;
          m[i] = step_map{gl, g, r - v, v, false};
        } else {
          m[i] = step_map{g, 0.0, r, 0.0, false};
        }
      }
      scan_t(tmp).InclusiveScan(m, m, step_compose{}, carry);
#pragma unroll
      for (int i = 0; i < gae_items; ++i) {
        const std::int64_t t = end - 1 - (static_cast<std::int64_t>(threadIdx.x) * gae_items + i);
        if (t < 0) continue;
        const std::int64_t col = base + t;
        // m[i] is the composition of every step from t to the row's end; apply it to the state after the end.
        const double out = counted[i] ? fma(m[i].a, x1, fma(m[i].b, x2, m[i].c1)) : 0.0;
        if constexpr (Values) {
          if (want_a) p.advantages(b, col) = counted[i] ? static_cast<R>(out) : R(0);
          if (want_r) p.returns(b, col) = counted[i] ? static_cast<R>(out + v_at[i]) : R(0);
        } else {
          p.returns(b, col) = counted[i] ? static_cast<R>(out) : R(0);
        }
      }
      __syncthreads();  // tmp is reused by the next tile
    }
  }
}

/// Launches GAE (Values = true) or discounted returns on `stream`; CUB-style: no allocation, no synchronisation.
template <bool Values, class R>
cudaError_t gae(const device_gae_problem<R>& p, cuda_status_block* status, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(p.rows < INT_MAX ? p.rows : INT_MAX);
  gae_kernel<Values, R><<<grid, gae_block, 0, stream>>>(p, status);
  return cudaGetLastError();
}

}  // namespace cai::kernels
