// Compile-FAIL probe (tests/diagnostics.cmake): a backend with no implementation of an algorithm must fail with the
// static_assert that names the algorithm.
#include <cai/algorithms/logprobs.hpp>

struct device_backend_without_kernels {
  using backend_concept = cai::backend_t;
  using memory_space = cai::device_space;
};

int main() {
  float* logits = nullptr;
  std::int32_t* targets = nullptr;
  float* out = nullptr;
  cai::token_logprobs(device_backend_without_kernels{}, cai::make_device_view(logits, {2, 3}),
                      cai::make_device_view(targets, {2}), cai::no_mask,
                      {.logp = cai::make_device_view(out, {2})});
}
