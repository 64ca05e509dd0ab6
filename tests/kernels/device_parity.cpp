// CUDA parity tests [cuda]: the CAI_HD element functions give the same results on the GPU as on the host.
// The executable exits with code 77 (ctest: skipped) where no GPU is present.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cai/core/error.hpp>
#include <cai/core/half.hpp>
#include <cai/core/math.hpp>
#include <cai/core/rng.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "device_parity.hpp"

TEST_CASE("the Philox stream is the same on the GPU as on the host", "[cuda][core]") {
  const auto d = cai_test::device_philox(2026, 17, 4096);
  cai::rng_stream host(2026, 17);
  for (std::size_t i = 0; i < d.size(); ++i) REQUIRE(d[i] == host.next_u32());
}

TEST_CASE("bf16 and fp16 conversions give the same bits on the GPU as on the host", "[cuda][core]") {
  std::mt19937 gen(3);
  std::uniform_int_distribution<std::uint32_t> bits;
  std::vector<float> in(1 << 18);
  for (std::size_t i = 0; i < in.size(); ++i) {
    std::uint32_t u = bits(gen);
    if (i & 1) u = (u & 0x807fffffu) | ((96u + (u >> 23) % 56u) << 23);
    std::memcpy(&in[i], &u, 4);
  }
  const auto d = cai_test::device_convert(in);
  for (std::size_t i = 0; i < in.size(); ++i) {
    REQUIRE(d.bf16_bits[i] == cai::bfloat16::from_float(in[i]).bits);
    REQUIRE(d.fp16_bits[i] == cai::float16::from_float(in[i]).bits);
  }
}

TEST_CASE("stable scalar math and the soft-max state agree with the host within 4 ulp", "[cuda][core]") {
  std::vector<float> in{-1e4f, -100.0f, -1.0f, 0.0f, 1e-30f, 0.5f, 3.0f, 100.0f, 1e4f};
  const auto d = cai_test::device_math_of(in);
  auto close = [](float a, float b) { return a == b || std::fabs(a - b) <= 4 * std::fabs(std::nextafter(b, 0.0f) - b) + 1e-44f; };
  cai::softmax_state<float> s;
  for (std::size_t i = 0; i < in.size(); ++i) {
    CHECK(close(d.softplus[i], cai::softplus(in[i])));
    CHECK(close(d.log_sigmoid[i], cai::log_sigmoid(in[i])));
    s.push(in[i]);
  }
  CHECK(close(d.lse, s.lse()));
  CHECK(std::fabs(d.entropy - s.entropy()) <= 1e-6f);
}

TEST_CASE("the CUDA backend rejects host memory where device memory is required", "[cuda]") {
  CHECK_THROWS_AS(cai_test::require_device_pointer_of_host_memory(), cai::memory_space_error);
}

int main(int argc, char** argv) {
  if (!cai_test::cuda_device_present()) {
    std::puts("cai_cuda_tests: no CUDA device present; skipping the [cuda] tests");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
