// Compiled against cai::io only: its usage requirements must bring both cai's headers and nlohmann_json's.
#include <cai/cai.hpp>
#if __has_include(<cai/io.hpp>)
#include <cai/io.hpp>
#endif
#include <nlohmann/json.hpp>

#include <string>

int cai_pkg_io_check() {
  const auto record = nlohmann::json::parse(R"({"prompt": "p", "chosen": "a", "rejected": "b"})");
  return record.at("chosen").get<std::string>() == "a" && record.at("rejected").get<std::string>() == "b" ? 0 : 1;
}
