// benchmarks/bench_common.hpp — what the benchmark programs share: the build facts CMake passes in (with defaults for a
// build outside CMake) and the median-of-runs timer.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

#ifndef CAI_BENCH_FLAGS
#define CAI_BENCH_FLAGS "unknown (built outside CMake)"
#endif
#ifndef CAI_BENCH_GIT
#define CAI_BENCH_GIT "unknown"
#endif

namespace cai_bench {

/// Median wall time in ms of `reps` calls of f, after one warm-up call.
template <class F>
double median_ms(F&& f, int reps = 5) {
  f();
  std::vector<double> ts;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ts.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

}  // namespace cai_bench
