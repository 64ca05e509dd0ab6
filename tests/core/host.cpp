// Tests for cai/core/host.hpp and the generic primitives of algorithms/dispatch.hpp.
#include <cai/algorithms/dispatch.hpp>
#include <cai/core/host.hpp>

#include <atomic>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "../support.hpp"

TEST_CASE("bulk runs every index exactly once on host and threaded_host", "[core][dispatch]") {
  for (unsigned threads : {1u, 2u, 4u}) {
    cai::threaded_host b(threads);
    CHECK(b.concurrency() == threads);
    std::vector<std::atomic<int>> hits(10007);
    b.bulk(10007, [&](std::int64_t i) { hits[static_cast<std::size_t>(i)].fetch_add(1); });
    for (auto& h : hits) REQUIRE(h.load() == 1);
    b.bulk(0, [&](std::int64_t) { FAIL("no work expected"); });
  }
}

TEST_CASE("the thread pool runs many small jobs back to back and nested bulk calls without deadlock",
          "[core][dispatch]") {
  cai::threaded_host b(3);
  std::atomic<std::int64_t> total{0};
  for (int job = 0; job < 2000; ++job) b.bulk(5, [&](std::int64_t i) { total += i; });
  CHECK(total.load() == 2000 * 10);
  std::atomic<int> inner{0};
  b.bulk(4, [&](std::int64_t) { b.bulk(3, [&](std::int64_t) { ++inner; }); });
  CHECK(inner.load() == 12);
}

TEST_CASE("an exception thrown by a task reaches the caller after the other tasks finish", "[core][dispatch]") {
  cai::threaded_host b(2);
  std::atomic<int> ran{0};
  CHECK_THROWS_AS(b.bulk(100,
                         [&](std::int64_t i) {
                           ++ran;
                           if (i == 17) throw std::runtime_error("task 17");
                         }),
                  std::runtime_error);
  CHECK(ran.load() == 100);
  int after = 0;  // the pool stays usable
  b.bulk(1, [&](std::int64_t) { ++after; });
  CHECK(after == 1);
}

TEST_CASE("chunked reductions and scans give the same bits at every thread count", "[core][dispatch]") {
  const auto xs = cai_test::normal_floats(100003, 1.0f, 9);
  auto sum_with = [&](const auto& b) {
    return cai::chunked_reduce(
        b, static_cast<std::int64_t>(xs.size()), 1000, 0.0f,
        [&](std::int64_t lo, std::int64_t hi) {
          float s = 0;
          for (std::int64_t i = lo; i < hi; ++i) s += xs[static_cast<std::size_t>(i)];
          return s;
        },
        [](float a, float c) { return a + c; });
  };
  const float s1 = sum_with(cai::host{});
  double ref = 0;
  for (float x : xs) ref += x;
  CHECK(std::fabs(s1 - ref) < 1e-2);
  std::vector<float> scan1(xs.size());
  cai::chunked_inclusive_scan(cai::host{}, xs.data(), scan1.data(), static_cast<std::int64_t>(xs.size()), 777, 0.0f,
                              [](float a, float c) { return a + c; });
  CHECK(std::fabs(scan1.back() - ref) < 1e-2);
  for (unsigned t : {2u, 3u}) {
    cai::threaded_host b(t);
    const float s = sum_with(b);
    CHECK(std::memcmp(&s, &s1, sizeof s) == 0);
    std::vector<float> scan(xs.size());
    cai::chunked_inclusive_scan(b, xs.data(), scan.data(), static_cast<std::int64_t>(xs.size()), 777, 0.0f,
                                [](float a, float c) { return a + c; });
    CHECK(std::memcmp(scan.data(), scan1.data(), scan.size() * sizeof(float)) == 0);
  }
  std::vector<int> ones(10, 1), out(10);
  cai::chunked_inclusive_scan(cai::host{}, ones.data(), out.data(), 10, 3, 0, [](int a, int c) { return a + c; });
  CHECK(out == std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
}
