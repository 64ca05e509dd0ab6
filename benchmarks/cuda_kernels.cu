// benchmarks/cuda_kernels.cu — cai's CUDA hot loops against the memory-bandwidth limit (cai_bench_cuda).
//
// For every case: the kernel's time by CUDA events (median of --reps after --warmup launches), the bytes it must
// move at the least (logits read once by the forward; read once and dlogits written once by the backward; GAE's
// inputs read and outputs written once), its bandwidth "gbps" = bytes / time, and a device-to-device copy of the
// same number of bytes timed in the same run: copy_fraction = copy_ms / cai_ms (1.0 = as fast as a copy of what
// the kernel must move). One JSON line per case on stdout; benchmarks/run_cuda.sh adds PyTorch's times
// (benchmarks/peer_torch_cuda.py) and the ratio peer_ms / cai_ms.
//
//   cai_bench_cuda [--quick] [--reps R] [--warmup W]
//
// Cases: token_logprobs forward (log-prob + entropy, and + saved statistics), backward (from saved statistics),
// at N = 32768 tokens x V in {32000, 128256, 151936}, bf16 and fp32 (--quick: N = 4096); gae and
// discounted_returns at B = 4096 x T = 4096 fp32 (--quick: 512 x 4096). The logits are random normal (cai's
// Philox stream on the device); timings do not depend on the values.
#include <cai/algorithms/gae.hpp>
#include <cai/algorithms/logprobs.hpp>
#include <cai/core/rng.hpp>
#include <cai/kernels/cuda_backend.cuh>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace {

void check(cudaError_t e, const char* what) { cai::detail::cuda_check(e, "cai_bench_cuda", what); }

template <class T>
struct dmem {
  T* p = nullptr;
  std::size_t n = 0;
  explicit dmem(std::size_t count) : n(count) { check(cudaMalloc(&p, (n ? n : 1) * sizeof(T)), "cudaMalloc"); }
  dmem(const dmem&) = delete;
  dmem& operator=(const dmem&) = delete;
  ~dmem() { cudaFree(p); }
};

template <class T>
__global__ void fill_normal(T* x, std::int64_t n, std::uint64_t seed, float scale) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    cai::rng_stream r(seed, static_cast<std::uint64_t>(i));
    const float u1 = r.uniform() + 1e-7f, u2 = r.uniform();
    const float z = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2) * scale;
    if constexpr (std::is_same_v<T, float>) x[i] = z;
    else x[i] = T::from_float(z);
  }
}

template <class T>
__global__ void fill_tokens(T* y, std::int64_t n, std::int64_t V) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = static_cast<T>((i * 2654435761ll) % V);
}

__global__ void fill_mask(std::uint8_t* m, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    m[i] = static_cast<std::uint8_t>((i % 97) != 0);  // about 1% padding
}

/// Median ms of `reps` runs of f on the default stream (CUDA events), after `warmup` runs.
template <class F>
double event_ms(F&& f, int reps, int warmup) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < warmup; ++i) f();
  check(cudaDeviceSynchronize(), "warm-up");
  std::vector<float> ts;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a), "cudaEventRecord");
    f();
    check(cudaEventRecord(b), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    ts.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ts.begin(), ts.end());
  return static_cast<double>(ts[ts.size() / 2]);
}

struct options {
  bool quick = false;
  int reps = 20, warmup = 3;
};

/// A device-to-device copy of `bytes` (half read, half written), the yardstick of the same run.
double copy_ms(std::size_t bytes, const options& o) {
  const std::size_t half = bytes / 2;
  dmem<char> src(half), dst(half);
  check(cudaMemset(src.p, 1, half), "cudaMemset");
  return event_ms([&] { check(cudaMemcpyAsync(dst.p, src.p, half, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync"); },
                  o.reps, o.warmup);
}

void emit(const char* bench, const std::string& shape, const char* dtype, double ms, double bytes, double cms) {
  std::printf("{\"bench\": \"%s\", \"shape\": \"%s\", \"dtype\": \"%s\", \"cai_ms\": %.4f, \"bytes\": %.0f, "
              "\"gbps\": %.1f, \"copy_ms\": %.4f, \"copy_fraction\": %.3f}\n",
              bench, shape.c_str(), dtype, ms, bytes, bytes / ms / 1e6, cms, cms / ms);
  std::fflush(stdout);
}

template <class T>
void logprob_cases(std::int64_t N, std::int64_t V, const char* dtype, const options& o) {
  const cai::cuda gpu;
  const auto nv = static_cast<std::size_t>(N * V);
  dmem<T> logits(nv);
  dmem<std::int64_t> targets(static_cast<std::size_t>(N));
  dmem<std::uint8_t> mask(static_cast<std::size_t>(N));
  dmem<float> logp(static_cast<std::size_t>(N)), ent(static_cast<std::size_t>(N)), saved(static_cast<std::size_t>(3 * N)),
      g(static_cast<std::size_t>(N)), h(static_cast<std::size_t>(N));
  fill_normal<<<1024, 256>>>(logits.p, N * V, 7, 4.0f);
  fill_normal<<<64, 256>>>(g.p, N, 8, 1.0f);
  fill_normal<<<64, 256>>>(h.p, N, 9, 1.0f);
  fill_tokens<<<64, 256>>>(targets.p, N, V);
  fill_mask<<<64, 256>>>(mask.p, N);
  check(cudaDeviceSynchronize(), "fill");
  const auto L = cai::make_device_view(static_cast<const T*>(logits.p), {N, V});
  const auto Y = cai::make_device_view(static_cast<const std::int64_t*>(targets.p), {N});
  const auto M = cai::make_device_view(static_cast<const std::uint8_t*>(mask.p), {N});
  const auto out1 = [&](float* p) { return cai::make_device_view(p, {N}); };
  const std::string shape = std::to_string(N) + "x" + std::to_string(V);
  const double in_bytes = static_cast<double>(nv * sizeof(T));
  const double cms = copy_ms(static_cast<std::size_t>(in_bytes) * 2, o) / 2.0;  // the time to move in_bytes once
  // Forward: log-prob + entropy (what the peers compute).
  const double f = event_ms([&] { cai::token_logprobs(gpu, L, Y, M, {.logp = out1(logp.p), .entropy = out1(ent.p)}); },
                            o.reps, o.warmup);
  emit("logprobs_fwd_entropy", shape, dtype, f, in_bytes, cms);
  const double fs = event_ms(
      [&] {
        cai::token_logprobs(gpu, L, Y, M,
                            {.logp = out1(logp.p), .entropy = out1(ent.p), .saved = cai::make_device_view(saved.p, {N, 3})});
      },
      o.reps, o.warmup);
  emit("logprobs_fwd_saved", shape, dtype, fs, in_bytes, cms);
  // Backward from the saved statistics: one read of the logits, one write of dlogits (of the logits' type).
  dmem<T> dlogits(nv);
  const auto grads = cai::logprob_grads<1, cai::device_space>{cai::make_device_view(static_cast<const float*>(g.p), {N}),
                                                             cai::make_device_view(static_cast<const float*>(h.p), {N}),
                                                             cai::make_device_view(static_cast<const float*>(saved.p), {N, 3})};
  const double b = event_ms(
      [&] { cai::token_logprobs_backward(gpu, L, Y, M, grads, cai::make_device_view(dlogits.p, {N, V})); }, o.reps,
      o.warmup);
  emit("logprobs_bwd", shape, dtype, b, 2.0 * in_bytes, 2.0 * cms);
  gpu.synchronize("cai_bench_cuda");
}

void gae_cases(std::int64_t B, std::int64_t T, const options& o) {
  const cai::cuda gpu;
  const auto n = static_cast<std::size_t>(B * T);
  dmem<float> r(n), v(n), adv(n), ret(n);
  dmem<std::uint8_t> mask(n);
  fill_normal<<<1024, 256>>>(r.p, B * T, 11, 1.0f);
  fill_normal<<<1024, 256>>>(v.p, B * T, 12, 1.0f);
  fill_mask<<<1024, 256>>>(mask.p, B * T);
  check(cudaDeviceSynchronize(), "fill");
  const auto bt = [&](auto* p) { return cai::make_device_view(p, {B, T}); };
  const std::string shape = std::to_string(B) + "x" + std::to_string(T);
  const double gae_bytes = static_cast<double>(n) * (4 + 4 + 1 + 4 + 4);
  const double g = event_ms(
      [&] {
        cai::gae(gpu, bt(static_cast<const float*>(r.p)), bt(static_cast<const float*>(v.p)),
                 bt(static_cast<const std::uint8_t*>(mask.p)), {.advantages = bt(adv.p), .returns = bt(ret.p)},
                 {.gamma = 0.99, .lambda = 0.95});
      },
      o.reps, o.warmup);
  emit("gae", shape, "fp32", g, gae_bytes, copy_ms(static_cast<std::size_t>(gae_bytes), o));
  const double ret_bytes = static_cast<double>(n) * (4 + 1 + 4);
  const double d = event_ms(
      [&] {
        cai::discounted_returns(gpu, bt(static_cast<const float*>(r.p)), bt(static_cast<const std::uint8_t*>(mask.p)),
                                bt(ret.p), {.gamma = 0.99});
      },
      o.reps, o.warmup);
  emit("discounted_returns", shape, "fp32", d, ret_bytes, copy_ms(static_cast<std::size_t>(ret_bytes), o));
  gpu.synchronize("cai_bench_cuda");
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) o.quick = true;
    else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) o.reps = std::max(1, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) o.warmup = std::max(0, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: cai_bench_cuda [--quick] [--reps R] [--warmup W]\n");
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "cai_bench_cuda: no CUDA device\n");
    return 77;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("{\"build\": \"%s\", \"git\": \"%s\", \"device\": \"%s\", \"sm\": %d%d}\n", CAI_BENCH_FLAGS, CAI_BENCH_GIT,
              prop.name, prop.major, prop.minor);
  const std::int64_t N = o.quick ? 4096 : 32768;
  for (const std::int64_t V : {std::int64_t{32000}, std::int64_t{128256}, std::int64_t{151936}}) {
    logprob_cases<cai::bfloat16>(N, V, "bf16", o);
    logprob_cases<float>(N, V, "fp32", o);
  }
  if (!o.quick) logprob_cases<cai::bfloat16>(8192, 151936, "bf16", o);  // the published Triton kernel's shape
  gae_cases(o.quick ? 512 : 4096, 4096, o);
  return 0;
}
