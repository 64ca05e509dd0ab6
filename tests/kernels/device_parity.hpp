// Host-callable entry points of tests/kernels/device_parity.cu (compiled by nvcc).
#pragma once

#include <cstdint>
#include <vector>

namespace cai_test {

bool cuda_device_present();
std::vector<std::uint32_t> device_philox(std::uint64_t seed, std::uint64_t stream, int blocks);

struct device_conversions {
  std::vector<std::uint16_t> bf16_bits, fp16_bits;
  std::vector<float> bf16_back, fp16_back;
};
device_conversions device_convert(const std::vector<float>& in);

struct device_math {
  std::vector<float> softplus, log_sigmoid;
  float lse, entropy;
};
device_math device_math_of(const std::vector<float>& in);

void require_device_pointer_of_host_memory();

}  // namespace cai_test
