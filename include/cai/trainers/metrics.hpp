// cai/trainers/metrics.hpp — what trainers report after every optimiser step, and two writers for it.
//
// metrics_callback: std::function<void(std::int64_t step, const metric_map&)>, called once per optimiser step with
// step = 0, 1, ... and a small name -> value map (loss, lr, grad_norm, accuracy, ...; each trainer documents its keys).
// Writers (each usable as a callback through std::ref, as they are move-only):
//   csv_metrics_writer    "step,<keys of the first record in map order>" header, then one row per record. Columns
//                         are fixed by the first record: a later record with a key the header lacks is an error
//                         (cai::invalid_argument naming the key); a missing key leaves its cell empty. Values are
//                         written with 17 significant digits (round-trip), NaN / inf as "nan" / "inf" / "-inf".
//   jsonl_metrics_writer  {"step": s, "<key>": value, ...} per line through cai::jsonl_writer (flushed per record;
//                         non-finite values become null, as JSON has no NaN).
// Both flush after every record, so a killed run keeps every step it reported.
//
//   cai::csv_metrics_writer csv("train.csv");
//   opts.on_metrics = std::ref(csv);
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../io/jsonl.hpp"

namespace cai {

using metric_map = std::map<std::string, double>;
using metrics_callback = std::function<void(std::int64_t step, const metric_map&)>;

class csv_metrics_writer {
 public:
  /// Creates (truncates) `path`.
  explicit csv_metrics_writer(const std::filesystem::path& path) : path_(path) {
    file_ = std::fopen(path.string().c_str(), "wb");
    if (!file_) throw error(detail::concat("cai::csv_metrics_writer: cannot open '", path.string(), "' for writing"));
  }
  csv_metrics_writer(csv_metrics_writer&& o) noexcept
      : path_(std::move(o.path_)), file_(std::exchange(o.file_, nullptr)), columns_(std::move(o.columns_)) {}
  csv_metrics_writer& operator=(csv_metrics_writer&&) = delete;
  csv_metrics_writer(const csv_metrics_writer&) = delete;
  csv_metrics_writer& operator=(const csv_metrics_writer&) = delete;
  ~csv_metrics_writer() {
    if (file_) std::fclose(file_);
  }

  void operator()(std::int64_t step, const metric_map& m) { write(step, m); }

  void write(std::int64_t step, const metric_map& m) {
    constexpr const char* call = "cai::csv_metrics_writer::write";
    if (!file_) throw error(detail::concat(call, ": the writer is not open"));
    std::string line;
    if (columns_.empty() && !header_done_) {
      line = "step";
      for (const auto& [k, v] : m) {
        if (k == "step" || k.find_first_of(",\"\n\r") != std::string::npos)
          detail::fail_argument(call, "record", "metric names other than \"step\", without ',', '\"' or line breaks", detail::concat("\"", k, "\""));
        columns_.push_back(k);
        line += ',';
        line += k;
      }
      line += '\n';
      header_done_ = true;
    }
    for (const auto& [k, v] : m) {
      bool known = false;
      for (const auto& c : columns_) known = known || c == k;
      if (!known)
        detail::fail_argument(call, "record", "only the columns of the first record (the header is fixed)",
                              detail::concat("a new key \"", k, "\" at step ", step));
    }
    line += std::to_string(step);
    for (const auto& c : columns_) {
      line += ',';
      const auto it = m.find(c);
      if (it != m.end()) line += format(it->second);
    }
    line += '\n';
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
      throw error(detail::concat(call, ": writing '", path_.string(), "' failed"));
  }

  const std::vector<std::string>& columns() const noexcept { return columns_; }

 private:
  static std::string format(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  }
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
  std::vector<std::string> columns_;
  bool header_done_ = false;
};

class jsonl_metrics_writer {
 public:
  /// Opens `path` for appending (cai::jsonl_writer::open_for_resume: a half-written last line is cut off).
  explicit jsonl_metrics_writer(const std::filesystem::path& path) : out_(jsonl_writer::open_for_resume(path)) {}

  void operator()(std::int64_t step, const metric_map& m) { write(step, m); }

  void write(std::int64_t step, const metric_map& m) {
    nlohmann::json j = nlohmann::json::object();
    j["step"] = step;
    for (const auto& [k, v] : m) {
      if (k == "step") detail::fail_argument("cai::jsonl_metrics_writer::write", "record", "no metric named \"step\"", "\"step\"");
      j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    }
    out_.write(j);
  }

 private:
  jsonl_writer out_;
};

}  // namespace cai
