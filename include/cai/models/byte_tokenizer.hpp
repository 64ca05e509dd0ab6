// cai/models/byte_tokenizer.hpp — a byte-level tokenizer with a chat template, for the embedded models.
//
// Ids 0-255 are the bytes of the UTF-8 text; id 256 is the end-of-turn token, written "<|end|>" in text (encode
// maps that marker to 256, decode maps 256 back to it), and it doubles as EOS. vocab_size() = 257.
// Chat template (one turn per message, roles as written):
//   "<|user|>\n" + content + "<|end|>\n"  ...  and, with add_generation_prompt, a trailing "<|assistant|>\n"
// so a model trained on it stops by emitting id 256 at the end of its turn. decode(encode(s)) == s for every string;
// encode(decode(ids)) == ids unless the byte ids themselves spell "<|end|>" (which then reads back as id 256).
//
//   cai::models::byte_tokenizer tok;
//   auto ids = tok.encode(tok.apply_chat_template({{"user", "hi"}}, true));
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../concepts/types.hpp"
#include "../core/error.hpp"

namespace cai::models {

class byte_tokenizer {
 public:
  static constexpr std::int32_t end_id = 256;
  static constexpr std::string_view end_marker = "<|end|>";

  std::int64_t vocab_size() const noexcept { return 257; }
  std::int32_t eos_id() const noexcept { return end_id; }

  std::vector<std::int32_t> encode(std::string_view s) const {
    std::vector<std::int32_t> ids;
    ids.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
      if (s.compare(i, end_marker.size(), end_marker) == 0) {
        ids.push_back(end_id);
        i += end_marker.size();
      } else {
        ids.push_back(static_cast<std::int32_t>(static_cast<unsigned char>(s[i])));
        ++i;
      }
    }
    return ids;
  }

  std::string decode(std::span<const std::int32_t> ids) const {
    std::string s;
    s.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::int32_t id = ids[i];
      if (id == end_id) s += end_marker;
      else if (id >= 0 && id < 256) s.push_back(static_cast<char>(static_cast<unsigned char>(id)));
      else detail::fail_argument("cai::models::byte_tokenizer::decode", "ids", "ids in [0, 257)", detail::concat(id, " at ", i));
    }
    return s;
  }

  std::string apply_chat_template(const conversation& c, bool add_generation_prompt) const {
    std::string s;
    for (const auto& m : c) {
      s += "<|";
      s += m.role;
      s += "|>\n";
      s += m.content;
      s += end_marker;
      s += '\n';
    }
    if (add_generation_prompt) s += "<|assistant|>\n";
    return s;
  }
};

}  // namespace cai::models
