// Shared main of the packaging consumers (find_package, add_subdirectory, fetchcontent): computes something real
// with cai and checks it. CAI_PKG_NAME names the consumer; CAI_PKG_WITH_IO adds the cai::io check.
// Computes per-token log-probs and entropies of two rows of logits with cai::host and checks them against values
// worked out by hand (double precision, Python's math module): logp = x_y - logsumexp(x),
// entropy = logsumexp(x) - sum_j softmax(x)_j x_j.
#include <cai/cai.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>

static_assert(__cplusplus >= 202002L, "cai::cai must carry cxx_std_20 to its consumers");

#ifndef CAI_PKG_NAME
#error "define CAI_PKG_NAME"
#endif
#ifndef CAI_PKG_WITH_IO
#define CAI_PKG_WITH_IO 0
#endif
#if CAI_PKG_WITH_IO
int cai_pkg_io_check();  // io/io_check.cpp, built against cai::io
#endif

int main() {
  constexpr std::int64_t N = 2, V = 3;
  const float logits[N * V] = {1.0f, 2.0f, 3.0f,  // row 0
                               -1.0f, 0.5f, 0.25f};  // row 1
  const std::int32_t targets[N] = {2, 0};
  const double expected_logp[N] = {-0.4076059644443806, -2.1941121864019144};
  const double expected_entropy[N] = {0.8323955818399398, 0.9585545927613641};

  float logp[N] = {};
  float entropy[N] = {};
  const auto summary =
      cai::token_logprobs(cai::host{}, cai::make_view(logits, {N, V}), cai::make_view(targets, {N}), cai::no_mask,
                          {.logp = cai::make_view(logp, {N}), .entropy = cai::make_view(entropy, {N})});

  int failures = 0;
  if (summary.scored_rows != N || summary.nonfinite_rows != 0) {
    std::printf("summary: scored_rows %lld (expected %lld), nonfinite_rows %lld (expected 0)\n",
                static_cast<long long>(summary.scored_rows), static_cast<long long>(N),
                static_cast<long long>(summary.nonfinite_rows));
    ++failures;
  }
  for (std::int64_t i = 0; i < N; ++i) {
    // Negated comparisons so that a NaN result counts as a mismatch.
    if (!(std::fabs(logp[i] - expected_logp[i]) <= 1e-6)) {
      std::printf("logp[%lld] = %.9g, expected %.9g\n", static_cast<long long>(i), logp[i], expected_logp[i]);
      ++failures;
    }
    if (!(std::fabs(entropy[i] - expected_entropy[i]) <= 1e-6)) {
      std::printf("entropy[%lld] = %.9g, expected %.9g\n", static_cast<long long>(i), entropy[i],
                  expected_entropy[i]);
      ++failures;
    }
  }
#if CAI_PKG_WITH_IO
  if (cai_pkg_io_check() != 0) {
    std::printf("the cai::io consumer check failed\n");
    ++failures;
  }
  std::printf("cai::io component: checked\n");
#else
  std::printf("cai::io component: not in this installation\n");
#endif
  std::printf("cai packaging consumer (%s): %s\n", CAI_PKG_NAME, failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
