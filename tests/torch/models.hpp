// The [torch] tests' models: exported once per test process by scripts/torch_models.py with Debian's python3 and
// python3-torch (CAI_TORCH_PYTHON), into a per-process temporary directory.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

#include <unistd.h>

namespace cai_test {

/// The directory holding lm.pt, lm_nocache.pt, reward.pt, bad_rank.pt and dropout.pt (vocabulary 48).
inline const std::filesystem::path& torch_models() {
  static const std::filesystem::path dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("cai_torch_models_" + std::to_string(::getpid()));
    const std::string cmd = std::string(CAI_TORCH_PYTHON) + " " + CAI_TORCH_SCRIPTS + "/torch_models.py " + d.string();
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("exporting the TorchScript test models failed: " + cmd);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(std::filesystem::temp_directory_path() / ("cai_torch_models_" + std::to_string(::getpid())), ec);
    });
    return d;
  }();
  return dir;
}

}  // namespace cai_test
