// cai/sentencepiece/train.hpp — training SentencePiece models in memory (component cai::sentencepiece: links
// libsentencepiece and libsentencepiece_train). This is the only cai header that includes SentencePiece's headers;
// loading and running a model (cai/sentencepiece/tokenizer.hpp) needs the standard library alone.
//
// train_sentencepiece: an in-memory corpus and typed options -> the serialized model (or a model file).
// Options are checked first (cai::invalid_argument naming "options.<field>" or "sentences"); a failure inside
// SentencePiece is cai::error carrying its message. SentencePiece 0.1.97 draws no random numbers on this path, so
// a model is a pure function of the corpus and the options (num_threads included: it fixes how float sums are
// split). SentencePiece's INFO log is silenced by setting its process-wide minloglevel (1, or 0 with verbose).
//
//   std::vector<std::string> corpus = ...;
//   auto bytes = cai::train_sentencepiece(corpus, {.vocab_size = 400,
//                                                  .user_defined_symbols = {"<|im_start|>", "<|im_end|>", "\n"}});
//   auto tok = cai::sentencepiece_tokenizer::from_serialized(bytes, {.chat = cai::chat_format::chatml()});
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
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

#include "../core/error.hpp"
#include "tokenizer.hpp"

namespace cai {

namespace detail::sp_train {

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

}  // namespace detail::sp_train

/// Options for train_sentencepiece; the defaults make a model for which decode(encode(s)) == s (see the round-trip
/// rules in cai/sentencepiece/tokenizer.hpp).
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
  if (!o.user_defined_symbols.empty()) kw.emplace("user_defined_symbols", detail::sp_train::csv(o.user_defined_symbols));
  if (!o.control_symbols.empty()) kw.emplace("control_symbols", detail::sp_train::csv(o.control_symbols));

  detail::sp_train::span_iterator it(sentences);
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
