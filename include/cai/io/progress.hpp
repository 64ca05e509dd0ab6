// cai/io/progress.hpp — a progress line for long pipelines: records done, records/s and the time left, redrawn in
// place on a terminal (stderr is a tty) at most a few times a second, silent otherwise.
//
//   cai::progress_line bar("critique-revise", total);  bar.advance(n);  ...  bar.finish();
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>

#include <unistd.h>

namespace cai {

class progress_line {
 public:
  progress_line(std::string label, std::size_t total, std::size_t already_done = 0, bool enabled = ::isatty(2) != 0)
      : label_(std::move(label)), total_(total), done_(already_done), start_done_(already_done), enabled_(enabled) {}

  void advance(std::size_t n = 1) {
    done_ += n;
    const auto now = clock::now();
    if (enabled_ && (now - last_ > std::chrono::milliseconds(200) || done_ >= total_)) {
      last_ = now;
      std::fprintf(stderr, "\r%s", text().c_str());
      std::fflush(stderr);
    }
  }
  void finish() {
    if (enabled_) {
      std::fprintf(stderr, "\r%s\n", text().c_str());
      std::fflush(stderr);
    }
    enabled_ = false;
  }
  /// The line as it would be printed: "label: done/total records, r rec/s, ETA mm:ss".
  std::string text() const {
    const double secs = std::chrono::duration<double>(clock::now() - start_).count();
    const double rate = secs > 0.0 ? static_cast<double>(done_ - start_done_) / secs : 0.0;
    const double left = rate > 0.0 ? static_cast<double>(total_ > done_ ? total_ - done_ : 0) / rate : 0.0;
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s: %zu/%zu records, %.1f rec/s, ETA %02d:%02d   ", label_.c_str(), done_, total_, rate,
                  static_cast<int>(left) / 60, static_cast<int>(left) % 60);
    return buf;
  }
  std::size_t done() const noexcept { return done_; }

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  std::size_t total_, done_, start_done_;
  bool enabled_;
  clock::time_point start_ = clock::now(), last_{};
};

}  // namespace cai
