// Compile-FAIL probe (tests/diagnostics.cmake): diagnosing a tokenizer without a chat template must fail with one
// readable line naming the missing requirement.
#include <cai/concepts/tokenizer.hpp>

struct tokenizer_without_chat {
  std::vector<std::int32_t> encode(std::string_view) const { return {}; }
  std::string decode(std::span<const std::int32_t>) const { return {}; }
  std::int32_t eos_id() const { return 0; }
  std::int64_t vocab_size() const { return 1; }
};
static_assert(cai::diagnose_tokenizer<tokenizer_without_chat>());
