// Files for the io and pipeline tests: a per-process temporary path removed on scope exit, and whole-file reads.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include <unistd.h>

namespace cai_test {

/// A file name under the temp directory, unique to this process (prefix + stem + pid), removed on scope exit.
struct temp_file {
  std::filesystem::path path;
  temp_file(const std::string& prefix, const std::string& stem)
      : path(std::filesystem::temp_directory_path() / ("cai_test_" + prefix + "_" + stem + "_" + std::to_string(::getpid()) + ".jsonl")) {
    std::filesystem::remove(path);
  }
  ~temp_file() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
};

/// The whole file as bytes ("" when it cannot be read).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace cai_test
