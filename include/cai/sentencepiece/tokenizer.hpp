// cai/sentencepiece/tokenizer.hpp — a SentencePiece model as a cai::tokenizer, with special tokens and a plain-string
// chat template. Standard library only: it reads SentencePiece .model files (the ModelProto protobuf) itself and
// encodes and decodes exactly as libsentencepiece 0.1.97 does, so a program that uses it does not load
// libsentencepiece (whose bundled protobuf clashes with LibTorch's in one process). Training a model is
// cai/sentencepiece/train.hpp (component cai::sentencepiece, which links libsentencepiece_train).
//
// What is implemented (from the ModelProto: pieces with score and type; trainer_spec model_type, byte_fallback,
// treat_whitespace_as_suffix, eos_piece, unk_surface; normalizer_spec and denormalizer_spec):
//   normalisation  user-defined symbols pass through unchanged (longest match), else the longest rule of the
//                  precompiled charsmap (nmt_nfkc, nfkc, nmt_nfkc_cf, nfkc_cf, custom rules), else one UTF-8
//                  character (an invalid byte becomes U+FFFD); then remove_extra_whitespaces, add_dummy_prefix
//                  and the " " -> "▁" escaping, as SentencePiece's normaliser does them;
//   unigram        the Viterbi segmentation of SentencePiece's optimised encoder (same float/double score
//                  arithmetic, user-defined pieces scored length * max_score - 0.1, unknown characters scored
//                  min_score - 10, the earlier start winning ties), O(n * longest piece) through a byte trie;
//   bpe            the merge loop of bpe_model.cc (the highest-scoring adjacent pair first, the leftmost among
//                  equal scores, user-defined symbols never merged, merges through UNUSED pieces undone) on a heap;
//   word, char     as word_model.cc and char_model.cc;
//   unknowns       a run of unknown pieces is one <unk> id; with byte_fallback each unknown character becomes its
//                  UTF-8 bytes as <0xNN> pieces;
//   decoding       pieces concatenated with "▁" -> " "; control pieces ""; <unk> as the model's unk_surface
//                  (default " ⁇ "); byte pieces reassembled into UTF-8 (each invalid byte -> U+FFFD, bytes spelling
//                  "▁" stay "▁"); the first piece's leading "▁" dropped when add_dummy_prefix or
//                  remove_extra_whitespaces is set (every leading "▁" while the text is empty under
//                  remove_extra_whitespaces); then the denormalizer charsmap, if the model has one.
// sentencepiece_encode / sentencepiece_decode give exactly libsentencepiece's Encode(text, &ids) / Decode(ids, &text);
// the tests train unigram and bpe models with libsentencepiece and compare ids and text on thousands of strings.
// Known differences from libsentencepiece 0.1.97 (none occurs with models its trainer writes):
//   - self_test_data in a model is not run (libsentencepiece refuses a model whose self test fails);
//   - a broken denormalizer charsmap is a parse_error here (libsentencepiece loads the model and decodes to "");
//   - a piece containing a NUL byte is never matched by encode (libsentencepiece's tries cut such keys at the NUL);
//   - a charsmap value pointing past its strings replaces with "" (libsentencepiece reads out of bounds).
//
// Special tokens: every CONTROL and USER_DEFINED piece of the model (<s>, </s>, <pad>, "<|im_start|>", "\n", ...;
// never <unk>, never the <0xNN> byte pieces) is a special token.
//   encode(text)  splits text at occurrences of special-token strings — at each position the longest special that
//                 starts there, scanning left to right — maps each to its single id, and encodes each run of plain
//                 text between them with SentencePiece's algorithm on its own (so a control piece such as "</s>",
//                 which SentencePiece itself would spell out character by character, is one id too).
//   decode(ids)   is the inverse: each special id becomes its piece text; each maximal run of ordinary ids between
//                 them is decoded as SentencePiece decodes one sequence. Ids outside [0, vocab_size()) are
//                 cai::invalid_argument naming "ids" (with the id and its index).
// Because plain runs are encoded independently, a rendering is prefix-stable (encode(a) is a token prefix of
// encode(a + b)) whenever a ends with a special token that no longer special straddling the boundary overrides —
// e.g. chat_format::chatml() on a model trained with the user-defined symbols "<|im_start|>", "<|im_end|>" and
// "\n": every turn boundary then is a special token, which is what cai::render_chat needs. A boundary inside plain
// text is not prefix-stable in general: SentencePiece may merge a trailing space into the next word, as it does
// after the "\n\nAssistant: " prompt of chat_format::human_assistant() — unless "\n\nHuman: " and
// "\n\nAssistant: " are user-defined symbols of the model (then it is prefix-stable too).
//
// Round trip. decode(encode(s)) == s for every valid UTF-8 string s that contains no U+2581 ("▁", SentencePiece's
// escaped space, which decodes to " "; invalid UTF-8 bytes come back as U+FFFD) when the model has
// (model_info().round_trip_exact()):
//   identity normalisation (normalization rule "identity", no rule table), remove_extra_whitespaces = false,
//   escape_whitespaces = true, byte_fallback = true (else characters outside the vocabulary decode as " ⁇ "),
//   treat_whitespace_as_suffix = false;
// with add_dummy_prefix either on or off. With add_dummy_prefix = true, SentencePiece 0.1.97 prepends "▁" to every
// plain run it encodes (so each run — the text after every special token — starts with a "▁"-piece) and its decoder
// drops one leading "▁" per run, which is why decode() decodes run by run; a run that itself starts with spaces keeps
// them (" x" -> "▁", "▁x"). Decoding ids a model generated after a special token therefore drops one leading space
// of that run, as its training data had it. train_sentencepiece's defaults (train.hpp) produce such a model. Under nmt_nfkc
// (SentencePiece's default) or remove_extra_whitespaces = true, decode(encode(s)) is the normalised s (leading,
// trailing and repeated spaces dropped, NFKC forms). encode(decode(ids)) == ids is not promised (SentencePiece picks
// one segmentation of a string; byte ids of a covered character, or text spelling a special, re-encode differently).
//
// Chat template (chat_format): a table of roles, each rendered as prefix + content + suffix, turns concatenated in
// order; add_generation_prompt appends generation_prompt. A role the format does not list is cai::invalid_argument
// naming "conversation[i].role". end_of_turn names the marker that closes an assistant turn (the eos_id() default).
//   chat_format::chatml():            "<|im_start|>" + role + "\n" + content + "<|im_end|>\n" for system, user and
//                                     assistant (others on request); prompt "<|im_start|>assistant\n"; end "<|im_end|>"
//   chat_format::human_assistant(e):  Anthropic hh-rlhf: user "\n\nHuman: " + content, assistant "\n\nAssistant: " +
//                                     content + e (the model's EOS piece, default "</s>"); prompt "\n\nAssistant: ";
//                                     end e; no system role (as in cai's hh dataset form)
//
// eos_id(): options.eos if given (it must be a piece of the model, else cai::invalid_argument naming "options.eos"),
// else the chat format's end_of_turn if it is a piece of the model, else the model's own eos piece (trainer_spec
// eos_piece, default "</s>", when it is a CONTROL piece, as libsentencepiece's eos_id()); if there is none,
// construction throws cai::invalid_argument naming "options.eos".
//
// Loading: a missing path (or a directory) is cai::invalid_argument naming "path"; bytes that are not a SentencePiece
// model (malformed or truncated protobuf, no pieces / trainer_spec / normalizer_spec, or a model libsentencepiece
// refuses: an empty or repeated piece, no or two <unk> pieces, byte pieces without byte_fallback or byte_fallback
// without all 256, a broken charsmap, a unigram model without normal pieces) are cai::parse_error naming "path"
// (from_serialized: "serialized").
// Thread safety: every member is const and the model is shared (std::shared_ptr<const ...>) and immutable after
// loading, so copies are cheap and concurrent encode/decode calls on one tokenizer or its copies are safe.
//
//   std::vector<std::string> corpus = ...;
//   auto bytes = cai::train_sentencepiece(corpus, {.vocab_size = 400,          // cai/sentencepiece/train.hpp
//                                                  .user_defined_symbols = {"<|im_start|>", "<|im_end|>", "\n"}});
//   auto tok = cai::sentencepiece_tokenizer::from_serialized(bytes, {.chat = cai::chat_format::chatml()});
//   auto ids = tok.encode(tok.apply_chat_template({{"user", "hi"}}, true));   // eos_id() == id of "<|im_end|>"
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../concepts/tokenizer.hpp"
#include "../concepts/types.hpp"
#include "../core/error.hpp"

namespace cai {

/// A chat template as plain strings: each known role renders as prefix + content + suffix.
struct chat_format {
  struct role_format {
    std::string role;
    std::string prefix;
    std::string suffix;
    friend bool operator==(const role_format&, const role_format&) = default;
  };
  std::vector<role_format> roles;
  std::string generation_prompt;  ///< appended when add_generation_prompt is true
  std::string end_of_turn;        ///< the marker closing an assistant turn ("" when none)

  /// ChatML: "<|im_start|>" + role + "\n" + content + "<|im_end|>\n" for each of `role_names`.
  static chat_format chatml(const std::vector<std::string>& role_names = {"system", "user", "assistant"}) {
    chat_format f;
    for (const auto& r : role_names) f.roles.push_back({r, "<|im_start|>" + r + "\n", "<|im_end|>\n"});
    f.generation_prompt = "<|im_start|>assistant\n";
    f.end_of_turn = "<|im_end|>";
    return f;
  }

  /// Anthropic hh-rlhf: "\n\nHuman: " + content, "\n\nAssistant: " + content + eos_piece.
  static chat_format human_assistant(std::string eos_piece = "</s>") {
    chat_format f;
    f.roles.push_back({"user", "\n\nHuman: ", ""});
    f.roles.push_back({"assistant", "\n\nAssistant: ", eos_piece});
    f.generation_prompt = "\n\nAssistant: ";
    f.end_of_turn = std::move(eos_piece);
    return f;
  }

  /// The entry for `role`, or nullptr.
  const role_format* find(std::string_view role) const noexcept {
    for (const auto& r : roles)
      if (r.role == role) return &r;
    return nullptr;
  }

  /// Renders `c`; an unknown role is cai::invalid_argument naming "conversation[i].role".
  std::string render(const conversation& c, bool add_generation_prompt,
                     std::string_view call = "cai::chat_format::render") const {
    std::string s;
    for (std::size_t i = 0; i < c.size(); ++i) {
      const role_format* r = find(c[i].role);
      if (r == nullptr) {
        std::string known;
        for (const auto& k : roles) known += (known.empty() ? "" : ", ") + k.role;
        detail::fail_argument(call, detail::concat("conversation[", i, "].role"),
                              detail::concat("a role of the chat format (", known, ")"),
                              detail::concat("'", c[i].role, "'"));
      }
      s += r->prefix;
      s += c[i].content;
      s += r->suffix;
    }
    if (add_generation_prompt) s += generation_prompt;
    return s;
  }

  friend bool operator==(const chat_format&, const chat_format&) = default;
};

/// How a sentencepiece_tokenizer reads its model.
struct sentencepiece_options {
  chat_format chat = chat_format::chatml();
  std::optional<std::string> eos = std::nullopt;  ///< the EOS piece; default: chat.end_of_turn, else the model's
};

/// One special token: a CONTROL or USER_DEFINED piece.
struct sentencepiece_special {
  std::string piece;
  std::int32_t id = 0;
  bool user_defined = false;  ///< false: CONTROL
};

enum class sentencepiece_model_type { unigram = 1, bpe = 2, word = 3, character = 4 };

/// What the model file says about itself (read from its ModelProto; absent fields take the proto defaults).
struct sentencepiece_model_info {
  sentencepiece_model_type model_type = sentencepiece_model_type::unigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string normalization;          ///< NormalizerSpec.name ("identity", "nmt_nfkc", ...; "" when unset)
  bool has_normalization_rules = false;  ///< a precompiled charsmap or a rule table is present
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;

  /// True when decode(encode(s)) == s for every valid UTF-8 s without U+2581 (see the header comment).
  bool round_trip_exact() const noexcept {
    return !has_normalization_rules && (normalization.empty() || normalization == "identity") &&
           !remove_extra_whitespaces && escape_whitespaces && byte_fallback && !treat_whitespace_as_suffix;
  }
};

namespace detail::sp {

inline constexpr std::string_view space_symbol = "\xe2\x96\x81";     // U+2581, SentencePiece's escaped space
inline constexpr std::string_view replacement_char = "\xef\xbf\xbd";  // U+FFFD

/// The byte length SentencePiece assigns to the character starting with `c` (from the lead byte alone).
inline std::size_t one_char_len(char c) noexcept {
  return static_cast<std::size_t>("\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[static_cast<unsigned char>(c) >> 4]);
}

/// Reads one UTF-8 character at the start of the non-empty `s` by SentencePiece's rules: `len` is its length (1 for
/// an invalid byte); false when it is invalid (overlong, surrogate, beyond U+10FFFF, truncated, stray trail byte).
inline bool utf8_prefix(std::string_view s, std::size_t& len) noexcept {
  const auto b = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(s[i])); };
  const auto trail = [&](std::size_t i) { return (b(i) & 0xc0u) == 0x80u; };
  const auto scalar = [](std::uint32_t cp) { return cp < 0xd800u || (cp >= 0xe000u && cp <= 0x10ffffu); };
  len = 1;
  const std::uint32_t c = b(0);
  if (c < 0x80u) return true;
  const std::size_t n = s.size();
  if (n >= 2 && (c & 0xe0u) == 0xc0u) {
    const std::uint32_t cp = ((c & 0x1fu) << 6) | (b(1) & 0x3fu);
    if (trail(1) && cp >= 0x80u && scalar(cp)) return len = 2, true;
  } else if (n >= 3 && (c & 0xf0u) == 0xe0u) {
    const std::uint32_t cp = ((c & 0x0fu) << 12) | ((b(1) & 0x3fu) << 6) | (b(2) & 0x3fu);
    if (trail(1) && trail(2) && cp >= 0x800u && scalar(cp)) return len = 3, true;
  } else if (n >= 4 && (c & 0xf8u) == 0xf0u) {
    const std::uint32_t cp = ((c & 0x07u) << 18) | ((b(1) & 0x3fu) << 12) | ((b(2) & 0x3fu) << 6) | (b(3) & 0x3fu);
    if (trail(1) && trail(2) && trail(3) && cp >= 0x10000u && scalar(cp)) return len = 4, true;
  }
  return false;
}

/// A minimal protobuf wire-format reader: enough to read a ModelProto.
class wire_reader {
 public:
  explicit wire_reader(std::string_view buf) noexcept : buf_(buf) {}

  struct field {
    std::uint32_t number = 0;
    std::uint32_t wire_type = 0;
    std::uint64_t value = 0;  ///< varint / fixed value
    std::string_view bytes;   ///< length-delimited payload
  };

  bool done() const noexcept { return pos_ >= buf_.size(); }

  /// Reads the next field; false on malformed or truncated input.
  bool next(field& f) noexcept {
    std::uint64_t key = 0;
    if (!varint(key)) return false;
    f.number = static_cast<std::uint32_t>(key >> 3);
    f.wire_type = static_cast<std::uint32_t>(key & 7u);
    if (f.number == 0 || (key >> 3) > 0x1fffffffu) return false;
    switch (f.wire_type) {
      case 0:
        return varint(f.value);
      case 1:
        return fixed(8, f.value);
      case 5:
        return fixed(4, f.value);
      case 2: {
        std::uint64_t n = 0;
        if (!varint(n) || n > buf_.size() - pos_) return false;
        f.bytes = buf_.substr(pos_, static_cast<std::size_t>(n));
        pos_ += static_cast<std::size_t>(n);
        return true;
      }
      default:  // groups (3, 4) do not occur in ModelProto; 6, 7 are invalid
        return false;
    }
  }

 private:
  bool varint(std::uint64_t& v) noexcept {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= buf_.size()) return false;
      const auto b = static_cast<unsigned char>(buf_[pos_++]);
      v |= static_cast<std::uint64_t>(b & 0x7fu) << shift;
      if ((b & 0x80u) == 0) return true;
    }
    return false;
  }
  bool fixed(std::size_t n, std::uint64_t& v) noexcept {
    if (n > buf_.size() - pos_) return false;
    v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(buf_[pos_ + i])) << (8 * i);
    pos_ += n;
    return true;
  }

  std::string_view buf_;
  std::size_t pos_ = 0;
};

/// Walks every field of `msg`; false when it is malformed or `f` returns false.
template <class F>
bool for_each_field(std::string_view msg, F&& f) {
  wire_reader r(msg);
  wire_reader::field fld;
  while (!r.done()) {
    if (!r.next(fld)) return false;
    if (!f(fld)) return false;
  }
  return true;
}

enum piece_type : std::uint8_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

/// A byte trie over a fixed key set: the common-prefix search SentencePiece does with its double-array tries.
/// Nodes are laid out breadth-first with their children contiguous and sorted by label; the root has a direct table.
class byte_trie {
 public:
  /// Builds from (key, value) pairs with distinct non-empty keys.
  void build(std::vector<std::pair<std::string_view, std::int32_t>> entries) {
    std::sort(entries.begin(), entries.end());
    nodes_.assign(1, node{});
    labels_.clear();
    targets_.clear();
    root_.fill(0);
    struct job {
      std::uint32_t id;
      std::size_t begin, end, depth;
    };
    std::vector<job> queue{{0, 0, entries.size(), 0}};
    for (std::size_t q = 0; q < queue.size(); ++q) {
      auto [id, b, e, depth] = queue[q];
      if (b < e && entries[b].first.size() == depth) nodes_[id].value = entries[b++].second;
      nodes_[id].first_child = static_cast<std::uint32_t>(labels_.size());
      for (std::size_t i = b; i < e;) {
        const auto label = static_cast<unsigned char>(entries[i].first[depth]);
        std::size_t j = i + 1;
        while (j < e && static_cast<unsigned char>(entries[j].first[depth]) == label) ++j;
        const auto child = static_cast<std::uint32_t>(nodes_.size());
        nodes_.push_back(node{});
        labels_.push_back(label);
        targets_.push_back(child);
        if (id == 0) root_[label] = child;
        queue.push_back({child, i, j, depth + 1});
        i = j;
      }
      nodes_[id].child_count = static_cast<std::uint32_t>(labels_.size()) - nodes_[id].first_child;
    }
  }

  bool empty() const noexcept { return nodes_.size() <= 1; }

  /// Calls f(length, value) for every key that is a prefix of `s`, shortest first.
  template <class F>
  void prefixes(std::string_view s, F&& f) const {
    if (s.empty() || nodes_.empty()) return;
    std::uint32_t id = root_[static_cast<unsigned char>(s[0])];
    for (std::size_t i = 1;; ++i) {
      if (id == 0) return;
      if (nodes_[id].value >= 0) f(i, nodes_[id].value);
      if (i == s.size()) return;
      id = child(id, static_cast<unsigned char>(s[i]));
    }
  }

  /// The length of the longest key that is a prefix of `s` (0 when none), its value in `value`.
  std::size_t longest_prefix(std::string_view s, std::int32_t& value) const {
    std::size_t best = 0;
    prefixes(s, [&](std::size_t len, std::int32_t v) {
      best = len;
      value = v;
    });
    return best;
  }

  /// The value of `key`, or -1.
  std::int32_t find(std::string_view key) const {
    if (key.empty() || nodes_.empty()) return -1;
    std::uint32_t id = root_[static_cast<unsigned char>(key[0])];
    for (std::size_t i = 1; id != 0 && i < key.size(); ++i) id = child(id, static_cast<unsigned char>(key[i]));
    return id == 0 ? -1 : nodes_[id].value;
  }

 private:
  struct node {
    std::uint32_t first_child = 0;
    std::uint32_t child_count = 0;
    std::int32_t value = -1;
  };

  std::uint32_t child(std::uint32_t id, unsigned char label) const noexcept {
    const node& n = nodes_[id];
    const unsigned char* first = labels_.data() + n.first_child;
    const unsigned char* last = first + n.child_count;
    const unsigned char* it = n.child_count <= 8 ? std::find(first, last, label) : std::lower_bound(first, last, label);
    return it != last && *it == label ? targets_[static_cast<std::size_t>(it - labels_.data())] : 0u;
  }

  std::vector<node> nodes_;
  std::vector<unsigned char> labels_;
  std::vector<std::uint32_t> targets_;
  std::array<std::uint32_t, 256> root_{};
};

/// A precompiled normalisation charsmap: a little-endian uint32 trie size, a darts-clone double array of that many
/// bytes, then NUL-terminated replacement strings that the array's values index.
class charsmap {
 public:
  /// False when the blob is broken (as SentencePiece's DecodePrecompiledCharsMap judges it).
  bool load(std::string_view blob) {
    if (blob.size() <= 4) return false;
    std::uint32_t trie_size = 0;
    for (std::size_t i = 0; i < 4; ++i) trie_size |= static_cast<std::uint32_t>(static_cast<unsigned char>(blob[i])) << (8 * i);
    if (trie_size >= blob.size() || trie_size > blob.size() - 4) return false;
    units_.resize(trie_size / 4);
    for (std::size_t k = 0; k < units_.size(); ++k) {
      std::uint32_t u = 0;
      for (std::size_t i = 0; i < 4; ++i) u |= static_cast<std::uint32_t>(static_cast<unsigned char>(blob[4 + 4 * k + i])) << (8 * i);
      units_[k] = u;
    }
    replacements_ = std::string(blob.substr(4 + trie_size));
    return true;
  }

  bool empty() const noexcept { return units_.empty(); }

  /// The length of the longest rule matching a prefix of `s` (0 when none) and its replacement.
  std::size_t longest(std::string_view s, std::string_view& replacement) const noexcept {
    if (units_.empty()) return 0;
    const auto offset = [](std::uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
    const auto label = [](std::uint32_t u) { return u & ((1u << 31) | 0xffu); };
    std::size_t best = 0;
    std::uint32_t value = 0;
    std::uint32_t pos = offset(units_[0]);
    for (std::size_t i = 0; i < s.size(); ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      pos ^= c;
      if (pos >= units_.size()) break;
      const std::uint32_t u = units_[pos];
      if (label(u) != c) break;
      pos ^= offset(u);
      if (((u >> 8) & 1u) != 0) {
        if (pos >= units_.size()) break;
        best = i + 1;
        value = units_[pos] & 0x7fffffffu;
      }
    }
    if (best == 0) return 0;
    // A value past the strings (a corrupt charsmap; libsentencepiece would read out of bounds) replaces with "".
    replacement = value < replacements_.size() ? std::string_view(replacements_.c_str() + value) : std::string_view();
    return best;
  }

 private:
  std::vector<std::uint32_t> units_;
  std::string replacements_;
};

/// NormalizerSpec as read from the model.
struct normalizer_spec {
  bool present = false;
  std::string name;
  std::string charsmap_blob;
  bool has_rule_tsv = false;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

/// SentencePiece's normaliser: user-defined symbols pass through whole (longest match), else the longest charsmap
/// rule, else one UTF-8 character (an invalid byte becomes U+FFFD); then the whitespace rules and "▁" escaping.
class normalizer {
 public:
  normalizer() = default;
  normalizer(const normalizer_spec& spec, charsmap map, const byte_trie* matcher, bool treat_whitespace_as_suffix)
      : map_(std::move(map)),
        matcher_(matcher != nullptr && !matcher->empty() ? matcher : nullptr),
        add_dummy_prefix_(spec.add_dummy_prefix),
        remove_extra_whitespaces_(spec.remove_extra_whitespaces),
        escape_whitespaces_(spec.escape_whitespaces),
        suffix_(treat_whitespace_as_suffix) {}

  /// `in` normalised into `out` (cleared first).
  void normalize(std::string_view in, std::string& out) const {
    out.clear();
    if (in.empty()) return;
    if (remove_extra_whitespaces_) {
      while (!in.empty()) {
        const auto [text, consumed] = prefix(in);
        if (text != " ") break;
        in.remove_prefix(consumed);
      }
      if (in.empty()) return;
    }
    const std::string_view ws = escape_whitespaces_ ? space_symbol : std::string_view(" ");
    out.reserve(in.size() + in.size() / 2 + 3);
    if (!suffix_ && add_dummy_prefix_) out += ws;
    bool prev_space = remove_extra_whitespaces_;
    while (!in.empty()) {
      auto [text, consumed] = prefix(in);
      if (prev_space)
        while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
      if (!text.empty()) {
        for (const char c : text) {
          if (c == ' ' && escape_whitespaces_)
            out += space_symbol;
          else
            out += c;
        }
        prev_space = text.back() == ' ';
      }
      in.remove_prefix(consumed);
      if (!remove_extra_whitespaces_) prev_space = false;
    }
    if (remove_extra_whitespaces_)
      while (out.size() >= ws.size() && std::string_view(out).substr(out.size() - ws.size()) == ws) out.resize(out.size() - ws.size());
    if (suffix_ && add_dummy_prefix_) out += ws;
  }

 private:
  /// The normalised text of the first unit of `in` (non-empty) and how many bytes of `in` it consumed.
  std::pair<std::string_view, std::size_t> prefix(std::string_view in) const {
    if (matcher_ != nullptr) {
      std::int32_t v = 0;
      if (const std::size_t n = matcher_->longest_prefix(in, v); n > 0) return {in.substr(0, n), n};
    }
    std::string_view replacement;
    if (const std::size_t n = map_.longest(in, replacement); n > 0) return {replacement, n};
    std::size_t len = 1;
    if (!utf8_prefix(in, len)) return {replacement_char, 1};
    return {in.substr(0, len), len};
  }

  charsmap map_;
  const byte_trie* matcher_ = nullptr;
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_whitespaces_ = true, suffix_ = false;
};

/// One piece of a segmentation: a span of the normalised text and its id.
struct segment {
  std::uint32_t begin = 0, length = 0;
  std::int32_t id = 0;
};

/// The immutable, shared part of a tokenizer: the model's pieces, its tries and normalisers, the special tokens.
struct model {
  std::string serialized;  ///< the serialized ModelProto it was loaded from
  sentencepiece_model_info info;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<std::uint8_t> types;  ///< piece_type per id
  // SentencePiece's PieceToId: CONTROL, UNKNOWN and BYTE pieces first, then NORMAL, USER_DEFINED and UNUSED ones.
  std::unordered_map<std::string_view, std::int32_t> reserved, ordinary;
  std::vector<std::int32_t> canonical;  ///< PieceToId(IdToPiece(id)): the id libsentencepiece's decoder sees
  std::vector<std::int16_t> byte_value;  ///< per id: the byte of a BYTE piece, else -1
  std::array<std::int32_t, 256> byte_ids{};
  std::int32_t unk_id = -1;
  std::int32_t model_eos = -1;  ///< SentencePieceProcessor::eos_id(): the eos piece when it is a CONTROL piece
  std::string unk_surface = " \xe2\x81\x87 ";
  float min_score = 0, max_score = 0;
  byte_trie piece_trie;    ///< NORMAL, USER_DEFINED, UNUSED pieces (the unigram lattice)
  byte_trie user_symbols;  ///< USER_DEFINED pieces (the normaliser's and BPE's prefix matcher)
  normalizer norm;
  std::optional<normalizer> denorm;

  std::vector<sentencepiece_special> specials;               ///< sorted by id
  std::array<std::vector<std::uint32_t>, 256> by_first_byte;  ///< indices into specials, longest first
  std::vector<std::uint8_t> is_special;                       ///< per id

  std::int32_t piece_to_id(std::string_view piece) const {
    if (auto it = reserved.find(piece); it != reserved.end()) return it->second;
    if (auto it = ordinary.find(piece); it != ordinary.end()) return it->second;
    return unk_id;
  }

  /// The prefix-matcher length SentencePiece's BPE and char models split with: a user-defined symbol (frozen) or one
  /// character.
  std::size_t symbol_length(std::string_view s, bool& frozen) const {
    std::int32_t v = 0;
    if (const std::size_t n = user_symbols.empty() ? 0 : user_symbols.longest_prefix(s, v); n > 0) {
      frozen = true;
      return n;
    }
    frozen = false;
    return std::min(one_char_len(s[0]), s.size());
  }

  /// Unigram: Viterbi over every piece that starts at each character, as libsentencepiece's optimised encoder.
  void encode_unigram(std::string_view text, std::vector<segment>& out) const {
    struct best_path {
      float score = 0;
      std::int32_t start = -1;
      std::int32_t id = -1;
    };
    const std::size_t n = text.size();
    std::vector<best_path> best(n + 1);
    const float unk_score = min_score - 10.0f;
    for (std::size_t start = 0; start < n;) {
      const float base = best[start].score;
      const std::size_t mblen = std::min(one_char_len(text[start]), n - start);
      bool has_single = false;
      piece_trie.prefixes(text.substr(start), [&](std::size_t length, std::int32_t id) {
        const auto type = types[static_cast<std::size_t>(id)];
        if (type == unused) return;
        // The arithmetic (a double candidate compared with, then stored as, a float) is libsentencepiece's.
        const double score = type == user_defined ? static_cast<double>(static_cast<float>(length) * max_score) - 0.1
                                                  : static_cast<double>(scores[static_cast<std::size_t>(id)]);
        const double candidate = score + static_cast<double>(base);
        best_path& target = best[start + length];
        if (target.start == -1 || candidate > static_cast<double>(target.score)) {
          target.score = static_cast<float>(candidate);
          target.start = static_cast<std::int32_t>(start);
          target.id = id;
        }
        if (length == mblen) has_single = true;
      });
      if (!has_single) {
        const float candidate = unk_score + base;
        best_path& target = best[start + mblen];
        if (target.start == -1 || candidate > target.score) {
          target.score = candidate;
          target.start = static_cast<std::int32_t>(start);
          target.id = unk_id;
        }
      }
      start += mblen;
    }
    const std::size_t first = out.size();
    for (std::size_t end = n; end > 0;) {
      const best_path& p = best[end];
      const auto s = static_cast<std::size_t>(p.start);
      out.push_back({static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(end - s), p.id});
      end = s;
    }
    std::reverse(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
  }

  /// BPE: characters (and whole user-defined symbols, never merged) merged pairwise, the highest-scoring adjacent
  /// pair first and the leftmost among equal scores; merges through UNUSED pieces are undone afterwards.
  void encode_bpe(std::string_view text, std::vector<segment>& out) const {
    struct symbol {
      std::int32_t prev, next;
      bool frozen;
      std::uint32_t begin, length;
    };
    struct pair_candidate {
      std::int32_t left, right;
      float score;
      std::size_t length;
    };
    struct lower_priority {
      bool operator()(const pair_candidate& a, const pair_candidate& b) const noexcept {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
      }
    };
    std::vector<symbol> symbols;
    symbols.reserve(text.size());
    for (std::size_t pos = 0; pos < text.size();) {
      bool frozen = false;
      const std::size_t len = symbol_length(text.substr(pos), frozen);
      const auto index = static_cast<std::int32_t>(symbols.size());
      symbols.push_back({index - 1, pos + len < text.size() ? index + 1 : -1, frozen, static_cast<std::uint32_t>(pos),
                         static_cast<std::uint32_t>(len)});
      pos += len;
    }
    if (symbols.empty()) return;
    std::priority_queue<pair_candidate, std::vector<pair_candidate>, lower_priority> agenda;
    std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> unmerge;
    const auto view = [&](const symbol& s) { return text.substr(s.begin, s.length); };
    const auto consider = [&](std::int32_t left, std::int32_t right) {
      if (left < 0 || right < 0) return;
      const symbol& l = symbols[static_cast<std::size_t>(left)];
      const symbol& r = symbols[static_cast<std::size_t>(right)];
      if (l.frozen || r.frozen) return;
      const std::string_view merged = text.substr(l.begin, std::size_t{l.length} + r.length);
      const auto it = ordinary.find(merged);
      if (it == ordinary.end()) return;
      agenda.push({left, right, scores[static_cast<std::size_t>(it->second)], merged.size()});
      if (types[static_cast<std::size_t>(it->second)] == unused) unmerge[merged] = {view(l), view(r)};
    };
    for (std::size_t i = 1; i < symbols.size(); ++i) consider(static_cast<std::int32_t>(i - 1), static_cast<std::int32_t>(i));
    while (!agenda.empty()) {
      const pair_candidate top = agenda.top();
      agenda.pop();
      symbol& l = symbols[static_cast<std::size_t>(top.left)];
      symbol& r = symbols[static_cast<std::size_t>(top.right)];
      if (l.length == 0 || r.length == 0 || std::size_t{l.length} + r.length != top.length) continue;  // stale
      l.length += r.length;
      l.next = r.next;
      if (r.next >= 0) symbols[static_cast<std::size_t>(r.next)].prev = top.left;
      r.length = 0;
      consider(l.prev, top.left);
      consider(top.left, l.next);
    }
    const auto emit = [&](auto& self, std::string_view w) -> void {
      const std::int32_t id = piece_to_id(w);
      if (id >= 0 && types[static_cast<std::size_t>(id)] == unused) {
        if (const auto it = unmerge.find(w); it != unmerge.end()) {
          self(self, it->second.first);
          self(self, it->second.second);
          return;
        }
      }
      out.push_back({static_cast<std::uint32_t>(w.data() - text.data()), static_cast<std::uint32_t>(w.size()), id});
    };
    for (std::int32_t i = 0; i != -1; i = symbols[static_cast<std::size_t>(i)].next) emit(emit, view(symbols[static_cast<std::size_t>(i)]));
  }

  /// Word: split before every "▁" (and at the start), each word looked up whole.
  void encode_word(std::string_view text, std::vector<segment>& out) const {
    std::size_t word_begin = 0;
    for (std::size_t pos = 0; pos < text.size();) {
      const std::size_t len = std::min(one_char_len(text[pos]), text.size() - pos);
      if (pos > 0 && text.substr(pos, len) == space_symbol) {
        const auto w = text.substr(word_begin, pos - word_begin);
        out.push_back({static_cast<std::uint32_t>(word_begin), static_cast<std::uint32_t>(w.size()), piece_to_id(w)});
        word_begin = pos;
      }
      pos += len;
    }
    const auto w = text.substr(word_begin);
    out.push_back({static_cast<std::uint32_t>(word_begin), static_cast<std::uint32_t>(w.size()), piece_to_id(w)});
  }

  /// Char: one character (or one user-defined symbol) per piece.
  void encode_char(std::string_view text, std::vector<segment>& out) const {
    for (std::size_t pos = 0; pos < text.size();) {
      bool frozen = false;
      const std::size_t len = symbol_length(text.substr(pos), frozen);
      out.push_back({static_cast<std::uint32_t>(pos), static_cast<std::uint32_t>(len), piece_to_id(text.substr(pos, len))});
      pos += len;
    }
  }

  /// libsentencepiece's SentencePieceProcessor::Encode(text, &ids), appended to `ids`.
  void encode(std::string_view text, std::vector<std::int32_t>& ids) const {
    std::string normalized;
    norm.normalize(text, normalized);
    if (normalized.empty()) return;
    std::vector<segment> segs;
    switch (info.model_type) {
      case sentencepiece_model_type::unigram: encode_unigram(normalized, segs); break;
      case sentencepiece_model_type::bpe: encode_bpe(normalized, segs); break;
      case sentencepiece_model_type::word: encode_word(normalized, segs); break;
      case sentencepiece_model_type::character: encode_char(normalized, segs); break;
    }
    bool prev_unknown = false;
    for (const segment& s : segs) {
      const auto type = types[static_cast<std::size_t>(s.id)];
      if (type == control)  // libsentencepiece fails here: a control piece consumes no text
        fail("cai::sentencepiece_tokenizer::encode",
             concat("sentencepiece fails on this text: its model produced the control piece '",
                    pieces[static_cast<std::size_t>(s.id)], "' (all normalized characters are not consumed)"));
      const bool is_unknown = type == unknown;
      if (is_unknown && info.byte_fallback) {
        for (std::uint32_t k = 0; k < s.length; ++k) ids.push_back(byte_ids[static_cast<unsigned char>(normalized[s.begin + k])]);
      } else if (!(is_unknown && prev_unknown)) {  // a run of unknown pieces is one <unk>
        ids.push_back(s.id);
      }
      prev_unknown = is_unknown;
    }
  }

  /// libsentencepiece's SentencePieceProcessor::Decode(ids, &text), appended to `out`; ids are in range.
  void decode(std::span<const std::int32_t> ids, std::string& out) const {
    std::string text, bytes;
    const auto flush_bytes = [&] {
      for (std::size_t k = 0; k < bytes.size();) {
        std::size_t len = 1;
        if (utf8_prefix(std::string_view(bytes).substr(k), len))
          text.append(bytes, k, len);
        else
          text += replacement_char;
        k += len;
      }
      bytes.clear();
    };
    const bool strip_leading = info.add_dummy_prefix || info.remove_extra_whitespaces;
    bool at_start = true, leading_space_taken = false;
    for (const std::int32_t raw : ids) {
      const auto id = static_cast<std::size_t>(canonical[static_cast<std::size_t>(raw)]);
      if (types[id] == byte) {
        bytes.push_back(static_cast<char>(byte_value[id]));
        continue;
      }
      flush_bytes();
      if (leading_space_taken || !text.empty()) at_start = false;
      leading_space_taken = false;
      if (types[id] == control) continue;
      if (types[id] == unknown) {
        text += unk_surface;
        continue;
      }
      std::string_view piece = pieces[id];
      if (at_start && strip_leading && piece.substr(0, space_symbol.size()) == space_symbol) {
        piece.remove_prefix(space_symbol.size());
        // With remove_extra_whitespaces every leading "▁" goes, not just the first.
        leading_space_taken = !info.remove_extra_whitespaces;
      }
      for (std::size_t k = 0; k < piece.size();) {
        if (piece.substr(k, space_symbol.size()) == space_symbol) {
          text += ' ';
          k += space_symbol.size();
        } else {
          text += piece[k++];
        }
      }
    }
    flush_bytes();
    if (denorm) {
      std::string d;
      denorm->normalize(text, d);
      text = std::move(d);
    }
    out += text;
  }
};

inline std::string describe_bytes(std::string_view bytes) { return concat(bytes.size(), " bytes"); }

/// "<0xNN>" (upper-case hex, as libsentencepiece spells byte pieces) -> NN, else -1.
inline int byte_piece_value(std::string_view p) noexcept {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  int v = 0;
  for (const char c : p.substr(3, 2)) {
    v *= 16;
    if (c >= '0' && c <= '9')
      v += c - '0';
    else if (c >= 'A' && c <= 'F')
      v += c - 'A' + 10;
    else
      return -1;
  }
  return v;
}

/// Parses and checks a ModelProto as libsentencepiece 0.1.97 loads it; returns a reason when it would refuse it.
inline std::optional<std::string> parse_model(std::string_view bytes, model& m) {
  std::string why;
  bool has_trainer_spec = false;
  normalizer_spec nspec, dspec;
  std::string eos_piece = "</s>";
  const auto read_normalizer_spec = [](std::string_view msg, normalizer_spec& s) {
    s.present = true;
    return for_each_field(msg, [&](const wire_reader::field& g) {
      if (g.wire_type == 2) {
        if (g.number == 1) s.name = std::string(g.bytes);
        if (g.number == 2) s.charsmap_blob = std::string(g.bytes);
        if (g.number == 6) s.has_rule_tsv = !g.bytes.empty();
      } else if (g.wire_type == 0) {
        if (g.number == 3) s.add_dummy_prefix = g.value != 0;
        if (g.number == 4) s.remove_extra_whitespaces = g.value != 0;
        if (g.number == 5) s.escape_whitespaces = g.value != 0;
      }
      return true;
    });
  };
  const bool ok = for_each_field(bytes, [&](const wire_reader::field& f) {
    if (f.number == 1 && f.wire_type == 2) {  // repeated SentencePiece pieces
      std::string piece;
      float score = 0;
      std::uint8_t type = normal;
      if (!for_each_field(f.bytes, [&](const wire_reader::field& g) {
            if (g.number == 1 && g.wire_type == 2) piece = std::string(g.bytes);
            if (g.number == 2 && g.wire_type == 5) {
              const auto bits = static_cast<std::uint32_t>(g.value);
              std::memcpy(&score, &bits, sizeof score);
            }
            // An enum value outside the type list is an unknown field to protobuf: the piece stays NORMAL.
            if (g.number == 3 && g.wire_type == 0 && g.value >= 1 && g.value <= 6) type = static_cast<std::uint8_t>(g.value);
            return true;
          })) {
        why = concat("a malformed piece (id ", m.pieces.size(), ")");
        return false;
      }
      m.pieces.push_back(std::move(piece));
      m.scores.push_back(score);
      m.types.push_back(type);
    } else if (f.number == 2 && f.wire_type == 2) {  // TrainerSpec
      has_trainer_spec = true;
      if (!for_each_field(f.bytes, [&](const wire_reader::field& g) {
            if (g.wire_type == 0) {
              if (g.number == 3 && g.value >= 1 && g.value <= 4) m.info.model_type = static_cast<sentencepiece_model_type>(g.value);
              if (g.number == 35) m.info.byte_fallback = g.value != 0;
              if (g.number == 24) m.info.treat_whitespace_as_suffix = g.value != 0;
            } else if (g.wire_type == 2) {
              if (g.number == 44) m.unk_surface = std::string(g.bytes.substr(0, g.bytes.find('\0')));  // read as a C string
              if (g.number == 47) eos_piece = g.bytes.empty() ? "</s>" : std::string(g.bytes);
            }
            return true;
          })) {
        why = "a malformed trainer_spec";
        return false;
      }
    } else if (f.number == 3 && f.wire_type == 2) {  // NormalizerSpec
      if (!read_normalizer_spec(f.bytes, nspec)) {
        why = "a malformed normalizer_spec";
        return false;
      }
    } else if (f.number == 5 && f.wire_type == 2) {  // denormalizer NormalizerSpec
      if (!read_normalizer_spec(f.bytes, dspec)) {
        why = "a malformed denormalizer_spec";
        return false;
      }
    }
    return true;
  });
  if (!ok) return why.empty() ? std::string("malformed or truncated protobuf") : why;
  if (m.pieces.empty()) return std::string("no pieces");
  if (!has_trainer_spec) return std::string("no trainer_spec");
  if (!nspec.present) return std::string("no normalizer_spec");
  m.info.normalization = nspec.name;
  m.info.has_normalization_rules = !nspec.charsmap_blob.empty() || nspec.has_rule_tsv;
  m.info.add_dummy_prefix = nspec.add_dummy_prefix;
  m.info.remove_extra_whitespaces = nspec.remove_extra_whitespaces;
  m.info.escape_whitespaces = nspec.escape_whitespaces;

  // libsentencepiece's InitializePieces checks.
  const std::size_t n = m.pieces.size();
  if (n > 0x7fffffffu) return std::string("too many pieces");
  m.byte_value.assign(n, -1);
  m.byte_ids.fill(-1);
  std::vector<std::pair<std::string_view, std::int32_t>> trie_entries, user_entries;
  float min_score = std::numeric_limits<float>::max(), max_score = std::numeric_limits<float>::min();
  for (std::size_t i = 0; i < n; ++i) {
    const auto id = static_cast<std::int32_t>(i);
    const std::string& p = m.pieces[i];
    const auto type = m.types[i];
    if (p.empty()) return concat("an empty piece (id ", i, ")");
    const bool ordinary = type == normal || type == user_defined || type == unused;
    if (!(ordinary ? m.ordinary : m.reserved).emplace(p, id).second) return concat("the piece '", p, "' defined twice (id ", i, ")");
    // Keys with NUL cannot live in libsentencepiece's tries (it cuts them at the NUL); they are never matched here.
    if (ordinary && p.find('\0') == std::string::npos) trie_entries.emplace_back(p, id);
    if (type == user_defined && p.find('\0') == std::string::npos) user_entries.emplace_back(p, id);
    if (type == unknown) {
      if (m.unk_id >= 0) return concat("a second unknown piece (id ", i, ")");
      m.unk_id = id;
    }
    if (type == byte) {
      if (!m.info.byte_fallback) return concat("the byte piece '", p, "' although byte_fallback is false");
      const int v = byte_piece_value(p);
      if (v < 0) return concat("an invalid byte piece '", p, "'");
      m.byte_value[i] = static_cast<std::int16_t>(v);
    }
    if (type == normal) {
      min_score = std::min(min_score, m.scores[i]);
      max_score = std::max(max_score, m.scores[i]);
    }
  }
  if (m.unk_id < 0) return std::string("no unknown piece");
  for (int b = 0; b < 256; ++b) {
    const std::int32_t id = m.piece_to_id(concat("<0x", "0123456789ABCDEF"[b >> 4], "0123456789ABCDEF"[b & 15], ">"));
    if (m.byte_value[static_cast<std::size_t>(id)] == b) m.byte_ids[static_cast<std::size_t>(b)] = id;
  }
  if (m.info.byte_fallback && std::find(m.byte_ids.begin(), m.byte_ids.end(), -1) != m.byte_ids.end())
    return std::string("byte_fallback without all 256 byte pieces");
  if (m.info.model_type == sentencepiece_model_type::unigram && trie_entries.empty())
    return std::string("a unigram model without normal pieces");
  m.min_score = min_score;
  m.max_score = max_score;
  m.canonical.resize(n);
  for (std::size_t i = 0; i < n; ++i) m.canonical[i] = m.piece_to_id(m.pieces[i]);
  m.piece_trie.build(std::move(trie_entries));
  m.user_symbols.build(std::move(user_entries));
  const std::int32_t eos = m.piece_to_id(eos_piece);
  m.model_eos = m.types[static_cast<std::size_t>(eos)] == control ? eos : -1;

  charsmap map;
  if (!nspec.charsmap_blob.empty() && !map.load(nspec.charsmap_blob)) return std::string("a broken precompiled_charsmap");
  m.norm = normalizer(nspec, std::move(map), &m.user_symbols, m.info.treat_whitespace_as_suffix);
  if (dspec.present && !dspec.charsmap_blob.empty()) {
    charsmap dmap;
    if (!dmap.load(dspec.charsmap_blob)) return std::string("a broken denormalizer precompiled_charsmap");
    m.denorm.emplace(dspec, std::move(dmap), nullptr, false);
  }
  return std::nullopt;
}

/// Loads `bytes`; failures are parse_error naming `arg`, with `what` saying which input it was.
inline std::shared_ptr<const model> load(std::string_view bytes, std::string_view call, std::string_view arg,
                                         const std::string& what) {
  static constexpr std::string_view expected = "a serialized SentencePiece model (ModelProto)";
  auto m = std::make_shared<model>();
  m->serialized = std::string(bytes);
  if (auto why = parse_model(m->serialized, *m))
    fail_argument<parse_error>(call, arg, expected, concat(what, " (", describe_bytes(bytes), ": ", *why, ")"));
  const std::size_t n = m->pieces.size();
  m->is_special.assign(n, 0);
  for (std::size_t id = 0; id < n; ++id) {
    const auto t = m->types[id];
    if (t != control && t != user_defined) continue;
    m->is_special[id] = 1;
    m->specials.push_back({m->pieces[id], static_cast<std::int32_t>(id), t == user_defined});
  }
  for (std::size_t k = 0; k < m->specials.size(); ++k)
    m->by_first_byte[static_cast<unsigned char>(m->specials[k].piece.front())].push_back(static_cast<std::uint32_t>(k));
  for (auto& bucket : m->by_first_byte)
    std::stable_sort(bucket.begin(), bucket.end(), [&](std::uint32_t a, std::uint32_t b) {
      return m->specials[a].piece.size() > m->specials[b].piece.size();
    });
  return m;
}

}  // namespace detail::sp

/// A SentencePiece model as a cai::tokenizer (see the header comment for the encoding and round-trip rules).
class sentencepiece_tokenizer {
 public:
  /// Loads the model file at `path`.
  explicit sentencepiece_tokenizer(const std::filesystem::path& path, sentencepiece_options options = {})
      : options_(std::move(options)) {
    static constexpr std::string_view call = "cai::sentencepiece_tokenizer";
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(status))
      detail::fail_argument(call, "path", "an existing SentencePiece model file", detail::concat(path, " (no such file)"));
    if (std::filesystem::is_directory(status))
      detail::fail_argument(call, "path", "a SentencePiece model file", detail::concat(path, " (a directory)"));
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::fail_argument(call, "path", "a readable SentencePiece model file", detail::concat(path, " (cannot be opened)"));
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) detail::fail_argument(call, "path", "a readable SentencePiece model file", detail::concat(path, " (read error)"));
    model_ = detail::sp::load(bytes, call, "path", detail::concat(path));
    eos_ = resolve_eos(call);
  }

  /// Loads a model from its serialized ModelProto (the bytes of a .model file, or train_sentencepiece's result).
  static sentencepiece_tokenizer from_serialized(std::string_view serialized, sentencepiece_options options = {}) {
    static constexpr std::string_view call = "cai::sentencepiece_tokenizer::from_serialized";
    return sentencepiece_tokenizer(detail::sp::load(serialized, call, "serialized", "the given bytes"), std::move(options), call);
  }

  /// Text to ids: specials by longest match, plain runs by SentencePiece's algorithm.
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    std::size_t plain_begin = 0, i = 0;
    while (i < text.size()) {
      const auto& bucket = model_->by_first_byte[static_cast<unsigned char>(text[i])];
      const sentencepiece_special* hit = nullptr;
      for (const std::uint32_t k : bucket) {
        const auto& sp = model_->specials[k];
        if (text.compare(i, sp.piece.size(), sp.piece) == 0) {
          hit = &sp;
          break;
        }
      }
      if (hit == nullptr) {
        ++i;
        continue;
      }
      if (i > plain_begin) model_->encode(text.substr(plain_begin, i - plain_begin), ids);
      ids.push_back(hit->id);
      i += hit->piece.size();
      plain_begin = i;
    }
    if (text.size() > plain_begin) model_->encode(text.substr(plain_begin), ids);
    return ids;
  }

  /// Ids to text: specials as their piece text, each run of ordinary ids decoded as SentencePiece decodes it.
  /// Ids outside [0, vocab_size()) are cai::invalid_argument naming "ids".
  std::string decode(std::span<const std::int32_t> ids) const {
    check_ids(ids, "cai::sentencepiece_tokenizer::decode");
    std::string out;
    std::size_t run_begin = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (model_->is_special[static_cast<std::size_t>(ids[i])] == 0) continue;
      if (i > run_begin) model_->decode(ids.subspan(run_begin, i - run_begin), out);
      out += model_->pieces[static_cast<std::size_t>(ids[i])];
      run_begin = i + 1;
    }
    if (ids.size() > run_begin) model_->decode(ids.subspan(run_begin), out);
    return out;
  }

  /// What libsentencepiece 0.1.97's SentencePieceProcessor::Encode(text, &ids) returns: no special-token splitting
  /// (user-defined symbols are still kept whole, as SentencePiece does; control pieces such as "</s>" in the text are
  /// spelt out as ordinary text). Throws cai::error where libsentencepiece returns an error status.
  std::vector<std::int32_t> sentencepiece_encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    model_->encode(text, ids);
    return ids;
  }

  /// What libsentencepiece 0.1.97's SentencePieceProcessor::Decode(ids, &text) returns: control pieces decode to ""
  /// and the leading-space rule applies once to the whole sequence. Ids outside [0, vocab_size()) are
  /// cai::invalid_argument naming "ids".
  std::string sentencepiece_decode(std::span<const std::int32_t> ids) const {
    check_ids(ids, "cai::sentencepiece_tokenizer::sentencepiece_decode");
    std::string out;
    model_->decode(ids, out);
    return out;
  }

  std::int32_t eos_id() const noexcept { return eos_; }
  std::int64_t vocab_size() const noexcept { return static_cast<std::int64_t>(model_->pieces.size()); }

  /// The options' chat format applied to `c` (unknown role: cai::invalid_argument naming "conversation[i].role").
  std::string apply_chat_template(const conversation& c, bool add_generation_prompt) const {
    return options_.chat.render(c, add_generation_prompt, "cai::sentencepiece_tokenizer::apply_chat_template");
  }

  /// The id of `piece` (any piece type), or nullopt when the vocabulary has no such piece.
  std::optional<std::int32_t> piece_to_id(std::string_view piece) const {
    if (auto it = model_->reserved.find(piece); it != model_->reserved.end()) return it->second;
    if (auto it = model_->ordinary.find(piece); it != model_->ordinary.end()) return it->second;
    return std::nullopt;
  }

  /// The piece of `id` as stored in the model ("▁" for spaces, "<0x41>" for byte pieces); id in [0, vocab_size()).
  const std::string& id_to_piece(std::int32_t id) const {
    if (id < 0 || id >= vocab_size())
      detail::fail_argument("cai::sentencepiece_tokenizer::id_to_piece", "id", detail::concat("an id in [0, ", vocab_size(), ")"), id);
    return model_->pieces[static_cast<std::size_t>(id)];
  }

  /// The model's unknown piece (every model has exactly one).
  std::int32_t unk_id() const noexcept { return model_->unk_id; }

  bool is_special(std::int32_t id) const noexcept {
    return id >= 0 && id < vocab_size() && model_->is_special[static_cast<std::size_t>(id)] != 0;
  }
  /// Every special token, by id.
  std::span<const sentencepiece_special> special_tokens() const noexcept { return model_->specials; }
  const sentencepiece_model_info& model_info() const noexcept { return model_->info; }
  const sentencepiece_options& options() const noexcept { return options_; }
  /// The model's serialized ModelProto: the bytes it was loaded from.
  const std::string& serialized_model() const noexcept { return model_->serialized; }

 private:
  sentencepiece_tokenizer(std::shared_ptr<const detail::sp::model> m, sentencepiece_options options, std::string_view call)
      : model_(std::move(m)), options_(std::move(options)) {
    eos_ = resolve_eos(call);
  }

  void check_ids(std::span<const std::int32_t> ids, std::string_view call) const {
    const auto n = vocab_size();
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= n)
        detail::fail_argument(call, "ids", detail::concat("ids in [0, ", n, ")"), detail::concat(ids[i], " at index ", i));
  }

  std::int32_t resolve_eos(std::string_view call) const {
    if (options_.eos) {
      if (auto id = piece_to_id(*options_.eos)) return *id;
      detail::fail_argument(call, "options.eos", "a piece of the model", detail::concat("'", *options_.eos, "' (not in the vocabulary)"));
    }
    if (!options_.chat.end_of_turn.empty())
      if (auto id = piece_to_id(options_.chat.end_of_turn)) return *id;
    if (model_->model_eos >= 0) return model_->model_eos;
    detail::fail_argument(call, "options.eos",
                          detail::concat("an EOS piece: options.eos, the chat format's end_of_turn ('",
                                         options_.chat.end_of_turn, "') as a piece of the model, or a model eos piece"),
                          "none of them");
  }

  std::shared_ptr<const detail::sp::model> model_;
  sentencepiece_options options_;
  std::int32_t eos_ = -1;
};

static_assert(tokenizer<sentencepiece_tokenizer>);

}  // namespace cai
