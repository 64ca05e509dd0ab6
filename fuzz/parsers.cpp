// libFuzzer target for cai's text parsers: constitutions (cai.constitution/1 and the open-recipe layout), JSON Lines,
// dataset records in the hh / text / messages forms, and hh transcripts. Any input must give a result or a cai::error
// — never a crash, a hang, an uncaught exception of another type, or a sanitizer report.
//   bash fuzz/run.sh [seconds]      (clang with -fsanitize=fuzzer,address,undefined)
#include <cai/constitution/constitution.hpp>
#include <cai/io/datasets.hpp>
#include <cai/io/jsonl.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const cai::constitution c = cai::parse_constitution(text, "fuzz");
    // A valid constitution must survive its own serialisation.
    if (!(cai::parse_constitution(cai::to_json(c), "fuzz-roundtrip") == c)) __builtin_trap();
  } catch (const cai::error&) {
  }
  try {
    (void)cai::import_constitution_recipe(text, "fuzz");
  } catch (const cai::error&) {
  }
  try {
    cai::scan_jsonl(text, "fuzz", [](const nlohmann::json& j, std::size_t) {
      try {
        (void)cai::preference_from_json(j);
      } catch (const cai::error&) {
      }
      try {
        (void)cai::sft_from_json(j);
      } catch (const cai::error&) {
      }
    });
  } catch (const cai::error&) {
  }
  try {
    const cai::conversation c = cai::parse_hh(text);
    (void)cai::hh_transcript(c);
  } catch (const cai::error&) {
  }
  return 0;
}
