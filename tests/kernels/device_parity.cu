// Device side of the CUDA parity tests (tests/kernels/device_parity.cpp): runs cai's CAI_HD element functions in
// kernels and copies the results back so the host test can compare them with the host path.
#include <cuda_bf16.h>  // first, so that half.hpp's layout static_asserts against CUDA's types fire
#include <cuda_fp16.h>

#include <cai/core/half.hpp>
#include <cai/core/math.hpp>
#include <cai/core/rng.hpp>
#include <cai/kernels/cuda_backend.cuh>

#include <vector>

#include "device_parity.hpp"

namespace {

__global__ void philox_kernel(std::uint64_t seed, std::uint64_t stream, std::uint32_t* out, int blocks) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= blocks) return;
  const cai::rng_stream r(seed, stream);
  const cai::philox_block b = r.at_block(static_cast<std::uint64_t>(i));
  for (int w = 0; w < 4; ++w) out[4 * i + w] = b.v[w];
}

__global__ void convert_kernel(const float* in, std::uint16_t* bf, std::uint16_t* hf, float* back_bf, float* back_hf,
                               int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const cai::bfloat16 b = cai::bfloat16::from_float(in[i]);
  const cai::float16 h = cai::float16::from_float(in[i]);
  bf[i] = b.bits;
  hf[i] = h.bits;
  back_bf[i] = b.to_float();
  back_hf[i] = h.to_float();
}

__global__ void math_kernel(const float* in, float* softplus, float* log_sigmoid, float* lse, float* entropy, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  softplus[i] = cai::softplus(in[i]);
  log_sigmoid[i] = cai::log_sigmoid(in[i]);
  if (i == 0) {
    cai::softmax_state<float> s;
    for (int j = 0; j < n; ++j) s.push(in[j]);
    *lse = s.lse();
    *entropy = s.entropy();
  }
}

template <class T>
struct device_buffer {
  T* p = nullptr;
  explicit device_buffer(std::size_t n) { cai::detail::cuda_check(cudaMalloc(&p, n * sizeof(T)), "device_parity", "cudaMalloc"); }
  ~device_buffer() { cudaFree(p); }
  void to_host(std::vector<T>& v) const {
    cai::detail::cuda_check(cudaMemcpy(v.data(), p, v.size() * sizeof(T), cudaMemcpyDeviceToHost), "device_parity", "cudaMemcpy");
  }
};

}  // namespace

namespace cai_test {

bool cuda_device_present() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  (void)cudaGetLastError();
  return ok;
}

std::vector<std::uint32_t> device_philox(std::uint64_t seed, std::uint64_t stream, int blocks) {
  device_buffer<std::uint32_t> d(static_cast<std::size_t>(4 * blocks));
  philox_kernel<<<(blocks + 127) / 128, 128>>>(seed, stream, d.p, blocks);
  cai::cuda{}.synchronize("device_philox");
  std::vector<std::uint32_t> out(static_cast<std::size_t>(4 * blocks));
  d.to_host(out);
  return out;
}

device_conversions device_convert(const std::vector<float>& in) {
  const auto n = in.size();
  device_buffer<float> din(n), bbf(n), bhf(n);
  device_buffer<std::uint16_t> dbf(n), dhf(n);
  cai::detail::cuda_check(cudaMemcpy(din.p, in.data(), n * sizeof(float), cudaMemcpyHostToDevice), "device_convert", "cudaMemcpy");
  convert_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(din.p, dbf.p, dhf.p, bbf.p, bhf.p, static_cast<int>(n));
  cai::cuda{}.synchronize("device_convert");
  device_conversions r{std::vector<std::uint16_t>(n), std::vector<std::uint16_t>(n), std::vector<float>(n), std::vector<float>(n)};
  dbf.to_host(r.bf16_bits);
  dhf.to_host(r.fp16_bits);
  bbf.to_host(r.bf16_back);
  bhf.to_host(r.fp16_back);
  return r;
}

device_math device_math_of(const std::vector<float>& in) {
  const auto n = in.size();
  device_buffer<float> din(n), sp(n), ls(n), lse(1), ent(1);
  cai::detail::cuda_check(cudaMemcpy(din.p, in.data(), n * sizeof(float), cudaMemcpyHostToDevice), "device_math", "cudaMemcpy");
  math_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(din.p, sp.p, ls.p, lse.p, ent.p, static_cast<int>(n));
  cai::cuda{}.synchronize("device_math");
  device_math r{std::vector<float>(n), std::vector<float>(n), 0.0f, 0.0f};
  sp.to_host(r.softplus);
  ls.to_host(r.log_sigmoid);
  std::vector<float> one(1);
  lse.to_host(one);
  r.lse = one[0];
  ent.to_host(one);
  r.entropy = one[0];
  return r;
}

void require_device_pointer_of_host_memory() {
  std::vector<float> host(4);
  cai::cuda::require_device_pointer(host.data(), "cai::test", "logits");
}

}  // namespace cai_test
