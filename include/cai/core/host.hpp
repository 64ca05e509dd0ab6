// cai/core/host.hpp — the host backends: cai::host (sequential) and cai::threaded_host (a fixed thread pool).
//
// Both expose the one primitive the generic algorithms are written on:
//   b.bulk(n, f)   calls f(i) once for every i in [0, n), in any order and possibly concurrently.
// Work is always cut into chunks whose boundaries depend on the problem size alone (never on the thread count),
// and every reduction combines chunk results in chunk order, so the same input gives the same bits on cai::host
// and on a threaded_host of any size.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "error.hpp"
#include "tensor_view.hpp"

namespace cai {

/// Opt-in tag: a backend declares `using backend_concept = cai::backend_t;` (see concepts/backend.hpp).
struct backend_t {};

/// The sequential host backend: the reference path, vectorised by cai's own SIMD code.
struct host {
  using backend_concept = backend_t;
  using memory_space = host_space;
  static constexpr const char* name = "cai::host";

  template <class F>
  void bulk(std::int64_t n, F&& f) const {
    for (std::int64_t i = 0; i < n; ++i) f(i);
  }
  static constexpr unsigned concurrency() noexcept { return 1; }
};

namespace detail {

/// A fixed pool of worker threads executing one bulk job at a time; the calling thread takes part.
class thread_pool {
 public:
  explicit thread_pool(unsigned threads) : size_(threads == 0 ? 1 : threads) {
    workers_.reserve(size_ - 1);
    for (unsigned i = 0; i + 1 < size_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  unsigned size() const noexcept { return size_; }

  /// Runs task(i) for i in [0, n); rethrows the first exception a task threw (the others still finish).
  void run(std::int64_t n, const std::function<void(std::int64_t)>& task) {
    if (n <= 0) return;
    if (size_ == 1 || n == 1 || in_worker()) {  // nested bulk from inside a task runs inline: no deadlock
      for (std::int64_t i = 0; i < n; ++i) task(i);
      return;
    }
    std::lock_guard job_lock(job_mu_);  // one job at a time per pool
    {
      std::lock_guard lk(mu_);
      task_ = &task;
      n_ = n;
      next_.store(0);
      done_ = 0;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    std::int64_t mine = 0;
    {
      // The caller works as a worker: nested bulk calls from its tasks must run inline, as on the workers.
      struct flag_guard {
        bool saved = std::exchange(in_worker(), true);
        ~flag_guard() { in_worker() = saved; }
      } guard;
      mine = drain(task, n);
    }
    std::unique_lock lk(mu_);
    done_ += mine;
    // Every worker that joined this job is counted in active_; waiting for it to reach zero guarantees that
    // no worker still touches next_ when the next job resets it.
    done_cv_.wait(lk, [&] { return done_ == n_ && active_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  static bool& in_worker() {
    thread_local bool flag = false;
    return flag;
  }
  std::int64_t drain(const std::function<void(std::int64_t)>& task, std::int64_t n) {
    std::int64_t count = 0;
    for (;;) {
      const std::int64_t i = next_.fetch_add(1);
      if (i >= n) break;
      try {
        task(i);
      } catch (...) {
        std::lock_guard lk(mu_);
        if (!error_) error_ = std::current_exception();
      }
      ++count;
    }
    return count;
  }
  void worker_loop() {
    in_worker() = true;
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(std::int64_t)>* task = nullptr;
      std::int64_t n = 0;
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (!task_) continue;
        task = task_;
        n = n_;
        ++active_;
      }
      const std::int64_t mine = drain(*task, n);
      std::lock_guard lk(mu_);
      done_ += mine;
      --active_;
      if (done_ == n_ && active_ == 0) done_cv_.notify_all();
    }
  }

  unsigned size_;
  std::vector<std::thread> workers_;
  std::mutex job_mu_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(std::int64_t)>* task_ = nullptr;
  std::int64_t n_ = 0;
  std::atomic<std::int64_t> next_{0};
  std::int64_t done_ = 0;
  int active_ = 0;
  std::uint64_t generation_ = 0;
  std::exception_ptr error_;
  bool stop_ = false;
};

}  // namespace detail

/// The multi-threaded host backend. Copies share one pool. Results are bitwise identical to cai::host.
class threaded_host {
 public:
  using backend_concept = backend_t;
  using memory_space = host_space;
  static constexpr const char* name = "cai::threaded_host";

  /// Uses the process-wide pool of std::thread::hardware_concurrency() threads, created on first use, so that
  /// `cai::threaded_host{}` at a call site costs no thread creation.
  threaded_host() : pool_(shared_pool()) {}
  /// A private pool of `threads` threads (0 means hardware_concurrency()).
  explicit threaded_host(unsigned threads)
      : pool_(threads ? std::make_shared<detail::thread_pool>(threads) : shared_pool()) {}

  template <class F>
  void bulk(std::int64_t n, F&& f) const {
    const std::function<void(std::int64_t)> task = [&f](std::int64_t i) { f(i); };
    pool_->run(n, task);
  }
  unsigned concurrency() const noexcept { return pool_->size(); }

 private:
  static std::shared_ptr<detail::thread_pool> shared_pool() {
    static const auto pool = std::make_shared<detail::thread_pool>(std::max(1u, std::thread::hardware_concurrency()));
    return pool;
  }
  std::shared_ptr<detail::thread_pool> pool_;
};

}  // namespace cai
