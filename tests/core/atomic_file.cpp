// cai/core/atomic_file.hpp: the file appears whole or not at all; every failure is a cai::error naming the call.
#include <catch2/catch.hpp>

#include <cai/core/atomic_file.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {
std::string read_all(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}
}  // namespace

TEST_CASE("write_file_atomic replaces the file whole and leaves no temporary", "[core]") {
  const auto dir = std::filesystem::temp_directory_path() / "cai_atomic_file_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto path = dir / "state.json";
  cai::detail::write_file_atomic(path, "cai::test", [](std::ostream& f) { f << "first\n"; });
  REQUIRE(read_all(path) == "first\n");
  cai::detail::write_file_atomic(path, "cai::test", [](std::ostream& f) { f << "second, longer\n"; });
  REQUIRE(read_all(path) == "second, longer\n");
  REQUIRE_FALSE(std::filesystem::exists(dir / "state.json.tmp"));

  // A writer that throws leaves the old file in place (the temporary is not renamed).
  REQUIRE_THROWS(cai::detail::write_file_atomic(path, "cai::test", [](std::ostream& f) {
    f << "partial";
    throw std::runtime_error("killed");
  }));
  REQUIRE(read_all(path) == "second, longer\n");

  // Failures are cai::error naming the call and the file, never std::filesystem::filesystem_error.
  REQUIRE_THROWS_AS(cai::detail::write_file_atomic(dir / "missing" / "x", "cai::test", [](std::ostream&) {}), cai::error);
  REQUIRE_THROWS_WITH(cai::detail::write_file_atomic(dir / "missing" / "x", "cai::test", [](std::ostream&) {}),
                      Catch::Contains("cai::test") && Catch::Contains("cannot open"));
  std::filesystem::create_directories(dir / "taken" / "child");  // rename over a non-empty directory fails
  REQUIRE_THROWS_WITH(cai::detail::write_file_atomic(dir / "taken", "cai::test", [](std::ostream& f) { f << "x"; }),
                      Catch::Contains("cannot rename"));
  std::filesystem::remove_all(dir);
}
