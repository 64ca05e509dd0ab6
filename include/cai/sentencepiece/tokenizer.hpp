// cai/sentencepiece/tokenizer.hpp — a SentencePiece model as a cai::tokenizer, with special tokens, a plain-string
// chat template, and a training helper (component cai::sentencepiece: libsentencepiece, libsentencepiece_train).
//
// Special tokens: every CONTROL and USER_DEFINED piece of the model (<s>, </s>, <pad>, "<|im_start|>", "\n", ...;
// never <unk>, never the <0xNN> byte pieces) is a special token.
//   encode(text)  splits text at occurrences of special-token strings — at each position the longest special that
//                 starts there, scanning left to right — maps each to its single id, and encodes each run of plain
//                 text between them with SentencePiece on its own (so a control piece such as "</s>", which
//                 SentencePiece itself would spell out character by character, is one id too).
//   decode(ids)   is the inverse: each special id becomes its piece text; each maximal run of ordinary ids between
//                 them is decoded by SentencePiece as one run. Ids outside [0, vocab_size()) are
//                 cai::invalid_argument naming "ids" (with the id and its index).
// Because plain runs are encoded independently, a rendering is prefix-stable (encode(a) is a token prefix of
// encode(a + b)) whenever a ends with a special token — e.g. chat_format::chatml() on a model trained with the
// user-defined symbols "<|im_start|>", "<|im_end|>" and "\n": every turn boundary then is a special token, which
// is what cai::render_chat needs. A boundary inside plain text (the "\n\nAssistant: " prompt of
// chat_format::human_assistant() before its content, unless those strings are pieces of the model) is not
// prefix-stable in general: SentencePiece may merge the trailing space into the next word.
//
// Round trip. decode(encode(s)) == s for every valid UTF-8 string s that contains no U+2581 ("▁", SentencePiece's
// escaped space, which decodes to " ") when the model has (model_info().round_trip_exact()):
//   identity normalisation (normalization rule "identity", no rule table), remove_extra_whitespaces = false,
//   escape_whitespaces = true, byte_fallback = true (else characters outside the vocabulary decode as " ⁇ "),
//   treat_whitespace_as_suffix = false;
// with add_dummy_prefix either on or off. With add_dummy_prefix = true, SentencePiece 0.1.97 prepends "▁" to every
// plain run it encodes (so each run — the text after every special token — starts with a "▁"-piece) and its decoder
// drops one leading "▁" per run, which is why decode() decodes run by run; a run that itself starts with spaces keeps
// them (" x" -> "▁", "▁x"). Decoding ids a model generated after a special token therefore drops one leading space
// of that run, as its training data had it. train_sentencepiece's defaults produce such a model. Under nmt_nfkc
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
// else the chat format's end_of_turn if it is a piece of the model, else the model's own eos id; if there is none,
// construction throws cai::invalid_argument naming "options.eos".
//
// Loading: a missing path (or a directory) is cai::invalid_argument naming "path"; bytes that are not a SentencePiece
// model (malformed or truncated protobuf, no trainer_spec / normalizer_spec, or a model SentencePiece refuses) are
// cai::parse_error naming "path" (from_serialized: "serialized"). No sentencepiece::util::Status escapes.
// Thread safety: every member is const and the processor is shared (std::shared_ptr<const ...>) and immutable after
// loading, so copies are cheap and concurrent encode/decode calls on one tokenizer or its copies are safe.
//
// Training (train_sentencepiece): an in-memory corpus and typed options -> the serialized model (or a model file).
// Options are checked first (cai::invalid_argument naming "options.<field>" or "sentences"); a failure inside
// SentencePiece is cai::error carrying its message. SentencePiece 0.1.97 draws no random numbers on this path, so
// a model is a pure function of the corpus and the options (num_threads included: it fixes how float sums are
// split). SentencePiece's INFO log is silenced by setting its process-wide minloglevel (1, or 0 with verbose).
//
//   std::vector<std::string> corpus = ...;
//   auto bytes = cai::train_sentencepiece(corpus, {.vocab_size = 400,
//                                                  .user_defined_symbols = {"<|im_start|>", "<|im_end|>", "\n"}});
//   auto tok = cai::sentencepiece_tokenizer::from_serialized(bytes, {.chat = cai::chat_format::chatml()});
//   auto ids = tok.encode(tok.apply_chat_template({{"user", "hi"}}, true));   // eos_id() == id of "<|im_end|>"
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

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

/// A minimal protobuf wire-format reader: enough to validate a ModelProto and read the fields cai needs.
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
  std::size_t position() const noexcept { return pos_; }

  /// Reads the next field; false (position() at the fault) on malformed or truncated input.
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

/// Walks every field of `msg`; false when it is malformed.
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

struct proto_summary {
  std::vector<std::uint8_t> types;  ///< piece_type per id
  bool has_trainer_spec = false, has_normalizer_spec = false;
  sentencepiece_model_info info;
};

/// Reads the ModelProto fields cai uses; returns a reason when `bytes` is not a well-formed ModelProto.
inline std::optional<std::string> summarize(std::string_view bytes, proto_summary& out) {
  std::string why;
  const bool ok = for_each_field(bytes, [&](const wire_reader::field& f) {
    if (f.number == 1) {  // repeated SentencePiece pieces
      if (f.wire_type != 2) return false;
      std::uint8_t type = normal;
      bool has_piece = false;
      if (!for_each_field(f.bytes, [&](const wire_reader::field& g) {
            if (g.number == 1 && g.wire_type == 2) has_piece = !g.bytes.empty();
            if (g.number == 3 && g.wire_type == 0) {
              if (g.value < 1 || g.value > 6) return false;
              type = static_cast<std::uint8_t>(g.value);
            }
            return true;
          })) {
        why = concat("a malformed piece (id ", out.types.size(), ")");
        return false;
      }
      if (!has_piece) {
        why = concat("an empty piece (id ", out.types.size(), ")");
        return false;
      }
      out.types.push_back(type);
    } else if (f.number == 2) {  // TrainerSpec
      if (f.wire_type != 2) return false;
      out.has_trainer_spec = true;
      if (!for_each_field(f.bytes, [&](const wire_reader::field& g) {
            if (g.wire_type != 0) return true;
            if (g.number == 3 && g.value >= 1 && g.value <= 4) out.info.model_type = static_cast<sentencepiece_model_type>(g.value);
            if (g.number == 35) out.info.byte_fallback = g.value != 0;
            if (g.number == 24) out.info.treat_whitespace_as_suffix = g.value != 0;
            return true;
          })) {
        why = "a malformed trainer_spec";
        return false;
      }
    } else if (f.number == 3) {  // NormalizerSpec
      if (f.wire_type != 2) return false;
      out.has_normalizer_spec = true;
      if (!for_each_field(f.bytes, [&](const wire_reader::field& g) {
            if (g.wire_type == 2) {
              if (g.number == 1) out.info.normalization = std::string(g.bytes);
              if ((g.number == 2 || g.number == 6) && !g.bytes.empty()) out.info.has_normalization_rules = true;
            } else if (g.wire_type == 0) {
              if (g.number == 3) out.info.add_dummy_prefix = g.value != 0;
              if (g.number == 4) out.info.remove_extra_whitespaces = g.value != 0;
              if (g.number == 5) out.info.escape_whitespaces = g.value != 0;
            }
            return true;
          })) {
        why = "a malformed normalizer_spec";
        return false;
      }
    }
    return true;
  });
  if (!ok) return why.empty() ? std::string("malformed or truncated protobuf") : why;
  if (out.types.empty()) return std::string("no pieces");
  if (!out.has_trainer_spec) return std::string("no trainer_spec");
  if (!out.has_normalizer_spec) return std::string("no normalizer_spec");
  return std::nullopt;
}

/// The immutable, shared part of a tokenizer: the processor and the special-token tables.
struct model {
  sentencepiece::SentencePieceProcessor processor;
  proto_summary summary;
  std::vector<sentencepiece_special> specials;               ///< sorted by id
  std::array<std::vector<std::uint32_t>, 256> by_first_byte;  ///< indices into specials, longest first
  std::vector<std::uint8_t> is_special;                       ///< per id
};

inline std::string describe_bytes(std::string_view bytes) { return concat(bytes.size(), " bytes"); }

/// Loads `bytes`; failures are parse_error naming `arg`, with `what` saying which input it was.
inline std::shared_ptr<const model> load(std::string_view bytes, std::string_view call, std::string_view arg,
                                         const std::string& what) {
  static constexpr std::string_view expected = "a serialized SentencePiece model (ModelProto)";
  auto m = std::make_shared<model>();
  if (auto why = summarize(bytes, m->summary))
    fail_argument<parse_error>(call, arg, expected, concat(what, " (", describe_bytes(bytes), ": ", *why, ")"));
  const auto st = m->processor.LoadFromSerializedProto(bytes);
  if (!st.ok())
    fail_argument<parse_error>(call, arg, expected,
                               concat(what, " (", describe_bytes(bytes), ", refused by sentencepiece: ", st.ToString(), ")"));
  const int n = m->processor.GetPieceSize();
  if (n <= 0 || static_cast<std::size_t>(n) != m->summary.types.size())
    fail_argument<parse_error>(call, arg, expected,
                               concat(what, " (", m->summary.types.size(), " pieces in the proto, ", n, " loaded)"));
  m->is_special.assign(static_cast<std::size_t>(n), 0);
  for (int id = 0; id < n; ++id) {
    const auto t = m->summary.types[static_cast<std::size_t>(id)];
    if (t != control && t != user_defined) continue;
    const std::string& piece = m->processor.IdToPiece(id);
    if (piece.empty()) continue;
    m->is_special[static_cast<std::size_t>(id)] = 1;
    m->specials.push_back({piece, static_cast<std::int32_t>(id), t == user_defined});
  }
  for (std::size_t k = 0; k < m->specials.size(); ++k)
    m->by_first_byte[static_cast<unsigned char>(m->specials[k].piece.front())].push_back(static_cast<std::uint32_t>(k));
  for (auto& bucket : m->by_first_byte)
    std::stable_sort(bucket.begin(), bucket.end(), [&](std::uint32_t a, std::uint32_t b) {
      return m->specials[a].piece.size() > m->specials[b].piece.size();
    });
  return m;
}

/// A SentenceIterator over an in-memory corpus.
class span_iterator final : public sentencepiece::SentenceIterator {
 public:
  explicit span_iterator(std::span<const std::string> s) noexcept : s_(s) {}
  bool done() const override { return i_ >= s_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return s_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::span<const std::string> s_;
  std::size_t i_ = 0;
};

/// SentencePiece's repeated-string flags are CSV: quote every entry, doubling embedded quotes.
inline std::string csv(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) {
    if (!s.empty()) s += ',';
    s += '"';
    for (char c : x) {
      if (c == '"') s += '"';
      s += c;
    }
    s += '"';
  }
  return s;
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

  /// Text to ids: specials by longest match, plain runs by SentencePiece.
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    std::vector<int> run;
    const auto flush = [&](std::string_view plain) {
      if (plain.empty()) return;
      run.clear();
      const auto st = model_->processor.Encode(plain, &run);
      if (!st.ok()) detail::fail("cai::sentencepiece_tokenizer::encode", detail::concat("sentencepiece failed: ", st.ToString()));
      ids.insert(ids.end(), run.begin(), run.end());
    };
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
      flush(text.substr(plain_begin, i - plain_begin));
      ids.push_back(hit->id);
      i += hit->piece.size();
      plain_begin = i;
    }
    flush(text.substr(plain_begin));
    return ids;
  }

  /// Ids to text: specials as their piece text, runs of ordinary ids through SentencePiece.
  std::string decode(std::span<const std::int32_t> ids) const {
    const auto n = static_cast<std::int32_t>(model_->is_special.size());
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= n)
        detail::fail_argument("cai::sentencepiece_tokenizer::decode", "ids", detail::concat("ids in [0, ", n, ")"),
                              detail::concat(ids[i], " at index ", i));
    std::string out;
    std::vector<int> run;
    std::string piece_text;
    const auto flush = [&] {
      if (run.empty()) return;
      piece_text.clear();
      const auto st = model_->processor.Decode(run, &piece_text);
      if (!st.ok()) detail::fail("cai::sentencepiece_tokenizer::decode", detail::concat("sentencepiece failed: ", st.ToString()));
      out += piece_text;
      run.clear();
    };
    for (const std::int32_t id : ids) {
      if (model_->is_special[static_cast<std::size_t>(id)] != 0) {
        flush();
        out += model_->processor.IdToPiece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }

  std::int32_t eos_id() const noexcept { return eos_; }
  std::int64_t vocab_size() const noexcept { return static_cast<std::int64_t>(model_->is_special.size()); }

  /// The options' chat format applied to `c` (unknown role: cai::invalid_argument naming "conversation[i].role").
  std::string apply_chat_template(const conversation& c, bool add_generation_prompt) const {
    return options_.chat.render(c, add_generation_prompt, "cai::sentencepiece_tokenizer::apply_chat_template");
  }

  /// The id of `piece` (any piece type), or nullopt when the vocabulary has no such piece.
  std::optional<std::int32_t> piece_to_id(std::string_view piece) const {
    if (piece.empty()) return std::nullopt;
    const int id = model_->processor.PieceToId(piece);
    if (id < 0 || id >= static_cast<int>(model_->is_special.size()) || model_->processor.IdToPiece(id) != piece) return std::nullopt;
    return static_cast<std::int32_t>(id);
  }

  /// The piece of `id` as stored in the model ("▁" for spaces, "<0x41>" for byte pieces); id in [0, vocab_size()).
  const std::string& id_to_piece(std::int32_t id) const {
    if (id < 0 || id >= vocab_size())
      detail::fail_argument("cai::sentencepiece_tokenizer::id_to_piece", "id", detail::concat("an id in [0, ", vocab_size(), ")"), id);
    return model_->processor.IdToPiece(id);
  }

  bool is_special(std::int32_t id) const noexcept {
    return id >= 0 && id < vocab_size() && model_->is_special[static_cast<std::size_t>(id)] != 0;
  }
  /// Every special token, by id.
  std::span<const sentencepiece_special> special_tokens() const noexcept { return model_->specials; }
  const sentencepiece_model_info& model_info() const noexcept { return model_->summary.info; }
  const sentencepiece_options& options() const noexcept { return options_; }
  /// The underlying processor (shared and immutable; use only its const members).
  const sentencepiece::SentencePieceProcessor& processor() const noexcept { return model_->processor; }
  /// The model's serialized ModelProto.
  std::string serialized_model() const { return model_->processor.serialized_model_proto(); }

 private:
  sentencepiece_tokenizer(std::shared_ptr<const detail::sp::model> m, sentencepiece_options options, std::string_view call)
      : model_(std::move(m)), options_(std::move(options)) {
    eos_ = resolve_eos(call);
  }

  std::int32_t resolve_eos(std::string_view call) const {
    if (options_.eos) {
      if (auto id = piece_to_id(*options_.eos)) return *id;
      detail::fail_argument(call, "options.eos", "a piece of the model", detail::concat("'", *options_.eos, "' (not in the vocabulary)"));
    }
    if (!options_.chat.end_of_turn.empty())
      if (auto id = piece_to_id(options_.chat.end_of_turn)) return *id;
    const int model_eos = model_->processor.eos_id();
    if (model_eos >= 0 && model_eos < static_cast<int>(model_->is_special.size())) return static_cast<std::int32_t>(model_eos);
    detail::fail_argument(call, "options.eos",
                          detail::concat("an EOS piece: options.eos, the chat format's end_of_turn ('",
                                         options_.chat.end_of_turn, "') as a piece of the model, or a model eos_id"),
                          "none of them");
  }

  std::shared_ptr<const detail::sp::model> model_;
  sentencepiece_options options_;
  std::int32_t eos_ = -1;
};

static_assert(tokenizer<sentencepiece_tokenizer>);

/// Options for train_sentencepiece; the defaults make a model for which decode(encode(s)) == s (header comment).
struct sentencepiece_train_options {
  std::int32_t vocab_size = 8000;
  sentencepiece_model_type model_type = sentencepiece_model_type::unigram;
  std::vector<std::string> user_defined_symbols{};  ///< pieces always kept whole (chat markers, "\n")
  std::vector<std::string> control_symbols{};       ///< pieces never produced from text by SentencePiece itself
  bool byte_fallback = true;                        ///< uncovered characters become <0xNN> byte pieces, not <unk>
  std::string normalization = "identity";           ///< identity, nmt_nfkc, nfkc, nmt_nfkc_cf, nfkc_cf
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  double character_coverage = 1.0;                  ///< in [0.98, 1]
  bool hard_vocab_limit = true;                     ///< false: vocab_size is an upper bound
  bool split_digits = false;
  std::int32_t max_sentencepiece_length = 16;       ///< in [1, 512] characters per piece
  std::int32_t max_sentence_length = 1 << 16;       ///< bytes; longer sentences are an error, never skipped
  std::int32_t num_threads = 1;                     ///< in [1, 128]; part of what determines the model
  std::int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;  ///< -1 disables (unk must exist)
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
  bool verbose = false;                             ///< keep SentencePiece's INFO log on stderr
};

/// Trains a SentencePiece model on `sentences` (one training sentence each; newlines inside are kept as text) and
/// returns its serialized ModelProto (load it with sentencepiece_tokenizer::from_serialized).
inline std::string train_sentencepiece(std::span<const std::string> sentences, const sentencepiece_train_options& o = {}) {
  static constexpr std::string_view call = "cai::train_sentencepiece";
  using detail::concat;
  using detail::fail_argument;
  if (std::none_of(sentences.begin(), sentences.end(), [](const std::string& s) { return !s.empty(); }))
    fail_argument(call, "sentences", "a corpus with at least one non-empty sentence", concat(sentences.size(), " empty sentences"));
  for (std::size_t i = 0; i < sentences.size(); ++i)
    if (sentences[i].size() > static_cast<std::size_t>(std::max(o.max_sentence_length, 0)))
      fail_argument(call, concat("sentences[", i, "]"), concat("at most options.max_sentence_length = ", o.max_sentence_length, " bytes"),
                    concat(sentences[i].size(), " bytes"));

  // Reserved pieces: the enabled unk/bos/eos/pad pieces, the symbols, and the 256 byte pieces.
  std::vector<std::string> meta;
  const std::pair<const char*, std::int32_t> ids[] = {{"unk", o.unk_id}, {"bos", o.bos_id}, {"eos", o.eos_id}, {"pad", o.pad_id}};
  const std::string* pieces[] = {&o.unk_piece, &o.bos_piece, &o.eos_piece, &o.pad_piece};
  if (o.unk_id < 0) fail_argument(call, "options.unk_id", "an id >= 0 (the <unk> piece must exist)", o.unk_id);
  for (std::size_t k = 0; k < 4; ++k) {
    const auto [name, id] = ids[k];
    if (id < -1 || (o.vocab_size > 0 && id >= o.vocab_size))
      fail_argument(call, concat("options.", name, "_id"), concat("-1 or an id in [0, ", o.vocab_size, ")"), id);
    if (pieces[k]->empty() || pieces[k]->find('\0') != std::string::npos)
      fail_argument(call, concat("options.", name, "_piece"), "a non-empty piece without NUL", concat("'", *pieces[k], "'"));
    if (id < 0) continue;
    for (std::size_t j = 0; j < k; ++j) {
      if (ids[j].second < 0) continue;
      if (id == ids[j].second)
        fail_argument(call, concat("options.", name, "_id"), concat("an id other than options.", ids[j].first, "_id"), id);
      if (*pieces[k] == *pieces[j])
        fail_argument(call, concat("options.", name, "_piece"), concat("a piece other than options.", ids[j].first, "_piece"),
                      concat("'", *pieces[k], "'"));
    }
    meta.push_back(*pieces[k]);
  }
  // SentencePiece's rules: a symbol must be unique across both lists and must not be the unk piece; a symbol equal
  // to an enabled bos/eos/pad piece retypes that piece and takes no slot of its own.
  std::vector<std::string> seen;
  const auto check_symbols = [&](const std::vector<std::string>& v, std::string_view list) {
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::string arg = concat("options.", list, "[", i, "]");
      if (v[i].empty() || v[i].find('\0') != std::string::npos)
        fail_argument(call, arg, "a non-empty symbol without NUL", concat("'", v[i], "'"));
      if (v[i] == o.unk_piece) fail_argument(call, arg, "a symbol other than options.unk_piece", concat("'", v[i], "'"));
      if (std::find(seen.begin(), seen.end(), v[i]) != seen.end())
        fail_argument(call, arg, "a symbol given once (across control_symbols and user_defined_symbols)", concat("'", v[i], "' again"));
      seen.push_back(v[i]);
      if (std::find(meta.begin(), meta.end(), v[i]) == meta.end()) meta.push_back(v[i]);
    }
  };
  check_symbols(o.control_symbols, "control_symbols");
  check_symbols(o.user_defined_symbols, "user_defined_symbols");
  const std::size_t reserved = meta.size() + (o.byte_fallback ? 256u : 0u);
  if (o.vocab_size <= 0 || static_cast<std::size_t>(o.vocab_size) <= reserved)
    fail_argument(call, "options.vocab_size",
                  concat("more than the ", reserved, " reserved pieces (special pieces and symbols",
                         o.byte_fallback ? ", 256 byte pieces" : "", ")"),
                  o.vocab_size);
  if (!(o.character_coverage >= 0.98 && o.character_coverage <= 1.0))
    fail_argument(call, "options.character_coverage", "a value in [0.98, 1]", o.character_coverage);
  if (o.num_threads < 1 || o.num_threads > 128) fail_argument(call, "options.num_threads", "a value in [1, 128]", o.num_threads);
  if (o.max_sentencepiece_length < 1 || o.max_sentencepiece_length > 512)
    fail_argument(call, "options.max_sentencepiece_length", "a value in [1, 512]", o.max_sentencepiece_length);
  if (o.max_sentence_length < 10) fail_argument(call, "options.max_sentence_length", "a value >= 10", o.max_sentence_length);
  static constexpr std::string_view norms[] = {"identity", "nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf"};
  if (std::find(std::begin(norms), std::end(norms), o.normalization) == std::end(norms))
    fail_argument(call, "options.normalization", "one of identity, nmt_nfkc, nfkc, nmt_nfkc_cf, nfkc_cf", concat("'", o.normalization, "'"));
  const char* type = nullptr;
  switch (o.model_type) {
    case sentencepiece_model_type::unigram: type = "unigram"; break;
    case sentencepiece_model_type::bpe: type = "bpe"; break;
    case sentencepiece_model_type::word: type = "word"; break;
    case sentencepiece_model_type::character: type = "char"; break;
  }
  if (type == nullptr) fail_argument(call, "options.model_type", "unigram, bpe, word or character", static_cast<int>(o.model_type));

  const auto b = [](bool v) { return std::string(v ? "true" : "false"); };
  std::ostringstream coverage;
  coverage.precision(17);
  coverage << o.character_coverage;
  std::unordered_map<std::string, std::string> kw{
      {"vocab_size", concat(o.vocab_size)},
      {"model_type", type},
      {"byte_fallback", b(o.byte_fallback)},
      {"normalization_rule_name", o.normalization},
      {"add_dummy_prefix", b(o.add_dummy_prefix)},
      {"remove_extra_whitespaces", b(o.remove_extra_whitespaces)},
      {"character_coverage", coverage.str()},
      {"hard_vocab_limit", b(o.hard_vocab_limit)},
      {"split_digits", b(o.split_digits)},
      {"max_sentencepiece_length", concat(o.max_sentencepiece_length)},
      {"max_sentence_length", concat(o.max_sentence_length)},
      {"num_threads", concat(o.num_threads)},
      {"unk_id", concat(o.unk_id)},
      {"bos_id", concat(o.bos_id)},
      {"eos_id", concat(o.eos_id)},
      {"pad_id", concat(o.pad_id)},
      {"unk_piece", o.unk_piece},
      {"bos_piece", o.bos_piece},
      {"eos_piece", o.eos_piece},
      {"pad_piece", o.pad_piece},
      {"minloglevel", o.verbose ? "0" : "1"},
  };
  if (!o.user_defined_symbols.empty()) kw.emplace("user_defined_symbols", detail::sp::csv(o.user_defined_symbols));
  if (!o.control_symbols.empty()) kw.emplace("control_symbols", detail::sp::csv(o.control_symbols));

  detail::sp::span_iterator it(sentences);
  std::string model;
  const auto st = sentencepiece::SentencePieceTrainer::Train(kw, &it, &model);
  if (!st.ok()) detail::fail(call, concat("sentencepiece training failed: ", st.ToString()));
  if (model.empty()) detail::fail(call, "sentencepiece training produced no model");
  return model;
}

/// Trains as above and writes the model to `model_file` (a .model file, loadable by sentencepiece_tokenizer).
inline void train_sentencepiece(std::span<const std::string> sentences, const sentencepiece_train_options& o,
                                const std::filesystem::path& model_file) {
  std::error_code ec;
  const auto parent = model_file.parent_path();
  if (model_file.filename().empty() || (!parent.empty() && !std::filesystem::is_directory(parent, ec)))
    detail::fail_argument("cai::train_sentencepiece", "model_file", "a file path in an existing directory", detail::concat(model_file));
  const std::string model = train_sentencepiece(sentences, o);
  std::ofstream out(model_file, std::ios::binary | std::ios::trunc);
  if (!out) detail::fail_argument("cai::train_sentencepiece", "model_file", "a writable path", detail::concat(model_file));
  out.write(model.data(), static_cast<std::streamsize>(model.size()));
  out.close();
  if (!out) detail::fail_argument("cai::train_sentencepiece", "model_file", "a writable path", detail::concat(model_file, " (write failed)"));
}

}  // namespace cai
