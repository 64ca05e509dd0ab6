// cai/core/atomic_file.hpp — writing a file so that no reader ever sees it half-written.
//
// The bytes go to `path` + ".tmp", which is then renamed over `path` (atomic on POSIX file systems): a reader, or
// a run killed mid-write and resumed, sees the old file or the new one, never a mixture. Every failure (open,
// write, rename) is a cai::error naming the call and the file, never a std::filesystem exception.
//
//   cai::detail::write_file_atomic(path, "cai::my_call", [&](std::ostream& out) { out << text; });
#pragma once

#include <filesystem>
#include <fstream>
#include <ostream>
#include <string_view>
#include <system_error>

#include "error.hpp"

namespace cai::detail {

/// Calls write(stream) on a stream to path + ".tmp" (truncated first), then renames it over `path`.
template <class Write>
void write_file_atomic(const std::filesystem::path& path, std::string_view call, Write&& write) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail(call, concat("cannot open '", tmp.string(), "' for writing"));
    write(static_cast<std::ostream&>(f));
    f.close();
    if (!f) fail(call, concat("cannot write '", tmp.string(), "'"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(call, concat("cannot rename '", tmp.string(), "' to '", path.string(), "': ", ec.message()));
}

}  // namespace cai::detail
