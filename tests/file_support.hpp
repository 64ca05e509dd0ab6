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
/// A per-process directory under the temp directory, removed (with its contents) on scope exit.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& stem)
      : path(std::filesystem::temp_directory_path() / ("cai_test_dir_" + stem + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

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
