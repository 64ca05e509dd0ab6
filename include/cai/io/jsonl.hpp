// cai/io/jsonl.hpp — append-only JSON Lines files that survive a killed process.
//
// jsonl_writer appends one JSON object per line and flushes it to the kernel after every record (a SIGKILL loses
// nothing that write() returned for; surviving power loss would need fsync, which it does not do). A process killed in the
// middle of a record leaves a final line without its '\n': read_jsonl reports it as truncated (not as data), and
// jsonl_writer::open_for_resume() cuts it off before appending, so a resumed pipeline never sees half a record.
// Malformed complete lines are errors (cai::parse_error naming the file and the line number).
//
//   cai::jsonl_writer out = cai::jsonl_writer::open_for_resume("records.jsonl");
//   out.write({{"id", "p-1"}, {"text", "..."}});
//   cai::read_jsonl("records.jsonl", [](const nlohmann::json& j, std::size_t line) { ... });
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"

namespace cai {

/// What read_jsonl found besides the records it passed on.
struct jsonl_scan {
  std::size_t records = 0;          ///< complete, well-formed lines
  std::size_t valid_bytes = 0;      ///< length of the prefix made of complete lines
  bool truncated_tail = false;      ///< the file ends inside a line (a killed writer)
};

/// Calls f(record, line_number) for every complete line of JSONL text (blank lines skipped); `source` names it in
/// errors. A final line without '\n' is not passed on when it is not valid JSON (a record cut short by a killed
/// writer: reported as truncated_tail) and accepted when it is (a file written without the final newline).
inline jsonl_scan scan_jsonl(std::string_view text, std::string_view source,
                             const std::function<void(const nlohmann::json&, std::size_t)>& f) {
  jsonl_scan scan;
  std::size_t number = 0, offset = 0;
  while (offset < text.size()) {
    ++number;
    const std::size_t nl = text.find('\n', offset);
    const bool complete = nl != std::string_view::npos;
    const std::string_view line = text.substr(offset, (complete ? nl : text.size()) - offset);
    const std::size_t next = complete ? nl + 1 : text.size();
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
      offset = next;
      if (complete) scan.valid_bytes = offset;
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      if (!complete) {
        scan.truncated_tail = true;
        return scan;
      }
      throw parse_error(detail::concat("cai::read_jsonl: ", source, ":", number, ": malformed JSON at byte ", e.byte));
    }
    f(j, number);
    ++scan.records;
    offset = next;
    scan.valid_bytes = offset;
  }
  return scan;
}

/// scan_jsonl over a file. A missing file reads as empty.
inline jsonl_scan read_jsonl(const std::filesystem::path& path, const std::function<void(const nlohmann::json&, std::size_t)>& f) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (std::filesystem::exists(path)) throw parse_error(detail::concat("cai::read_jsonl: cannot open '", path.string(), "'"));
    return {};
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  return scan_jsonl(text, path.string(), f);
}

/// Appends JSON records, one per line, flushed after each.
class jsonl_writer {
 public:
  jsonl_writer() = default;
  /// Opens `path` for appending (created if missing).
  explicit jsonl_writer(const std::filesystem::path& path) : path_(path) {
    file_ = std::fopen(path.string().c_str(), "ab");
    if (!file_) throw error(detail::concat("cai::jsonl_writer: cannot open '", path.string(), "' for appending"));
  }
  /// Cuts a truncated final line (left by a killed writer) off `path`, then opens it for appending.
  static jsonl_writer open_for_resume(const std::filesystem::path& path) {
    if (std::filesystem::exists(path)) {
      const jsonl_scan s = read_jsonl(path, [](const nlohmann::json&, std::size_t) {});
      if (std::filesystem::file_size(path) != s.valid_bytes) std::filesystem::resize_file(path, s.valid_bytes);
    }
    jsonl_writer w(path);
    // A complete last record written without its newline (by another tool) gets one before anything is appended.
    if (std::filesystem::file_size(path) > 0) {
      std::ifstream in(path, std::ios::binary);
      in.seekg(-1, std::ios::end);
      char last = '\n';
      in.get(last);
      if (last != '\n' && (std::fputc('\n', w.file_) == EOF || std::fflush(w.file_) != 0))
        throw error(detail::concat("cai::jsonl_writer: writing '", path.string(), "' failed"));
    }
    return w;
  }
  jsonl_writer(jsonl_writer&& o) noexcept : path_(std::move(o.path_)), file_(std::exchange(o.file_, nullptr)) {}
  jsonl_writer& operator=(jsonl_writer&& o) noexcept {
    if (this != &o) {
      close();
      path_ = std::move(o.path_);
      file_ = std::exchange(o.file_, nullptr);
    }
    return *this;
  }
  jsonl_writer(const jsonl_writer&) = delete;
  jsonl_writer& operator=(const jsonl_writer&) = delete;
  ~jsonl_writer() { close(); }

  /// Writes one record (serialised on one line) and flushes it.
  void write(const nlohmann::json& record) {
    if (!file_) throw error("cai::jsonl_writer::write: the writer is not open");
    std::string s = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    s.push_back('\n');
    if (std::fwrite(s.data(), 1, s.size(), file_) != s.size() || std::fflush(file_) != 0)
      throw error(detail::concat("cai::jsonl_writer::write: writing '", path_.string(), "' failed"));
  }
  void close() noexcept {
    if (file_) std::fclose(file_);
    file_ = nullptr;
  }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace cai
