// Tests for cai/sentencepiece/tokenizer.hpp (and train.hpp): SentencePiece models trained at test time with
// libsentencepiece (an in-memory corpus of generated English-like sentences with newlines and non-ASCII words), loaded
// by cai's own std-only reader as a cai::tokenizer, and compared id for id with libsentencepiece's processor.
#include "../support.hpp"
#include "../file_support.hpp"

#include <cai/sentencepiece/tokenizer.hpp>
#include <cai/sentencepiece/train.hpp>
#include <cai/trainers/sft.hpp>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using ids_t = std::vector<std::int32_t>;

constexpr const char* im_start = "<|im_start|>";
constexpr const char* im_end = "<|im_end|>";

/// A deterministic corpus: sentences of common words, some non-ASCII words, some line breaks, some chat transcripts.
std::vector<std::string> make_corpus(std::size_t n, std::uint64_t seed) {
  static const char* words[] = {"the",     "a",      "model",   "answer", "question", "is",     "was",      "helpful",
                                "harmless", "honest", "please",  "explain", "why",     "what",   "how",      "you",
                                "I",       "we",     "think",   "about",  "this",     "that",   "and",      "or",
                                "not",     "can",    "will",    "should", "would",    "user",   "assistant", "system",
                                "Human:",  "Assistant:", "hello", "world", "thanks",  "sure",   "here",     "is",
                                "café",    "naïve",  "über",    "résumé", "日本語",   "привет", "Ελληνικά", "—",
                                "2024",    "42",     "3.14",    "(yes)",  "no!",      "ok?",    "\"quoted\"", "it's"};
  std::mt19937_64 g(seed);
  const auto pick = [&](std::size_t k) { return static_cast<std::size_t>(g() % k); };
  std::vector<std::string> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::string s;
    if (i % 10 == 0) {  // a chat transcript, so the markers sit in context
      s = std::string(im_start) + "user\n";
      for (std::size_t k = 0, m = 3 + pick(6); k < m; ++k) s += (k ? " " : "") + std::string(words[pick(std::size(words))]);
      s += std::string(im_end) + "\n" + im_start + "assistant\n";
      for (std::size_t k = 0, m = 3 + pick(6); k < m; ++k) s += (k ? " " : "") + std::string(words[pick(std::size(words))]);
      s += im_end;
    } else {
      const std::size_t m = 4 + pick(11);
      for (std::size_t k = 0; k < m; ++k) {
        if (k) s += pick(9) == 0 ? "\n" : " ";
        s += words[pick(std::size(words))];
      }
      s += pick(3) == 0 ? "?" : ".";
    }
    out.push_back(std::move(s));
  }
  return out;
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> c = make_corpus(400, 7);
  return c;
}

/// The options the tests train with: chatml markers plus "\n" as user-defined symbols, "<|im" to exercise longest
/// match, byte fallback, identity normalisation, no whitespace removal.
cai::sentencepiece_train_options test_options(bool add_dummy_prefix) {
  cai::sentencepiece_train_options o;
  o.vocab_size = 360;
  o.user_defined_symbols = {im_start, im_end, "\n", "<|im"};
  o.add_dummy_prefix = add_dummy_prefix;
  o.hard_vocab_limit = false;
  return o;
}

const std::string& model_bytes(bool add_dummy_prefix) {
  static const std::string with = cai::train_sentencepiece(corpus(), test_options(true));
  static const std::string without = cai::train_sentencepiece(corpus(), test_options(false));
  return add_dummy_prefix ? with : without;
}

cai::sentencepiece_tokenizer make_tok(bool add_dummy_prefix = true, cai::sentencepiece_options o = {}) {
  return cai::sentencepiece_tokenizer::from_serialized(model_bytes(add_dummy_prefix), std::move(o));
}

/// libsentencepiece's own processor for `bytes` (the reference cai's reader is compared with).
sentencepiece::SentencePieceProcessor& sp_processor(const std::string& bytes) {
  static std::vector<std::pair<std::string, std::unique_ptr<sentencepiece::SentencePieceProcessor>>> cache;
  for (auto& [b, p] : cache)
    if (b == bytes) return *p;
  auto p = std::make_unique<sentencepiece::SentencePieceProcessor>();
  REQUIRE(p->LoadFromSerializedProto(bytes).ok());
  cache.emplace_back(bytes, std::move(p));
  return *cache.back().second;
}

bool is_prefix(const ids_t& p, const ids_t& whole) {
  return p.size() <= whole.size() && std::equal(p.begin(), p.end(), whole.begin());
}

/// Strings that must round-trip under the test settings (either add_dummy_prefix).
std::vector<std::string> round_trip_strings() {
  std::vector<std::string> v = {
      "",
      " ",
      "  ",
      "hello world",
      " leading space",
      "trailing space ",
      "double  space",
      "   three leading and three trailing   ",
      "tabs\tand\nnewlines\n",
      "\n",
      "\n\n\n",
      " \n ",
      "ends with newline\n",
      "\r\nwindows line\r\n",
      "emoji 😀 and 🎉 (not in the corpus: byte fallback)",
      "日本語のテキスト",
      "ünïcödé  with  spaces ",
      "e\u0301 combining, ＡＢＣ fullwidth (identity keeps both)",
      std::string("nul \0 inside", 12),
      "\x01\x7f control bytes",
      "\u2585 (SentencePiece's unk marker in training) is plain text here",
      "<|im_start|>user\nhi<|im_end|>\n",
      "<|im_start|><|im_end|><|im_start|>",
      "text<|im_end|>text",
      "partial markers: <|im_sta <|im_end| <|im <| |>",
      "<|im",
      "a</s>b<s>c",
      "<unk> and <0x41> are plain text",
      "  <|im_start|>  spaces around specials  <|im_end|>  ",
      "the model is helpful and harmless",
      "Human: why?\n\nAssistant: because.</s>",
  };
  // Random strings over an alphabet of words, spaces, newlines, non-ASCII characters and specials.
  static const char* atoms[] = {"a", "the", " ", "  ", "\n", "é", "日", "😀", "<|im_start|>", "<|im_end|>", "</s>", "<s>",
                                "<|im", "x", "Q", "7", ".", "\t", "model", "привет"};
  std::mt19937_64 g(11);
  for (int i = 0; i < 300; ++i) {
    std::string s;
    for (std::size_t k = 0, m = static_cast<std::size_t>(g() % 12); k < m; ++k) s += atoms[g() % std::size(atoms)];
    v.push_back(std::move(s));
  }
  return v;
}

}  // namespace

TEST_CASE("sentencepiece_tokenizer satisfies cai::tokenizer", "[sentencepiece]") {
  static_assert(cai::tokenizer<cai::sentencepiece_tokenizer>);
  static_assert(cai::diagnose_tokenizer<cai::sentencepiece_tokenizer>());
  static_assert(std::is_copy_constructible_v<cai::sentencepiece_tokenizer>);
  const auto tok = make_tok();
  CHECK(tok.vocab_size() > 256);
  CHECK(tok.vocab_size() <= 360);
  CHECK(tok.model_info().round_trip_exact());
  CHECK(tok.model_info().normalization == "identity");
  CHECK(tok.model_info().byte_fallback);
  CHECK_FALSE(tok.model_info().remove_extra_whitespaces);
  CHECK(tok.model_info().model_type == cai::sentencepiece_model_type::unigram);
}

TEST_CASE("decode(encode(s)) == s under identity normalisation with byte fallback, with and without add_dummy_prefix",
          "[sentencepiece]") {
  for (const bool dummy : {true, false}) {
    const auto tok = make_tok(dummy);
    CHECK(tok.model_info().add_dummy_prefix == dummy);
    CHECK(tok.model_info().round_trip_exact());
    for (const auto& s : round_trip_strings()) {
      INFO("add_dummy_prefix = " << dummy << ", s = [" << s << "]");
      const auto ids = tok.encode(s);
      CHECK(tok.decode(ids) == s);
    }
  }
}

TEST_CASE("documented exceptions to the round trip: U+2581 reads back as a space, invalid UTF-8 as U+FFFD",
          "[sentencepiece]") {
  for (const bool dummy : {true, false}) {
    const auto tok = make_tok(dummy);
    CHECK(tok.decode(tok.encode("a\u2581b")) == "a b");
    CHECK(tok.decode(tok.encode("\xff")) == "\xef\xbf\xbd");
  }
}

TEST_CASE("add_dummy_prefix puts a leading ▁ on every plain run, after each special token", "[sentencepiece]") {
  const std::string ws = "\u2581";
  const auto starts_ws = [&](const cai::sentencepiece_tokenizer& t, std::int32_t id) { return t.id_to_piece(id).rfind(ws, 0) == 0; };
  const auto on = make_tok(true), off = make_tok(false);

  // On: "model" -> "▁model..."; the run after <|im_start|> starts with ▁ too; " x" keeps its own space.
  auto ids = on.encode("model");
  REQUIRE_FALSE(ids.empty());
  CHECK(starts_ws(on, ids.front()));
  ids = on.encode("<|im_start|>model");
  REQUIRE(ids.size() >= 2);
  CHECK(ids.front() == *on.piece_to_id(im_start));
  CHECK(starts_ws(on, ids[1]));
  CHECK(on.decode(ids) == "<|im_start|>model");
  // Runs decode independently: each drops exactly one leading ▁ of its own.
  const auto a = on.encode("model"), b = on.encode(" model");
  CHECK(b.size() > a.size());
  CHECK(on.decode(b) == " model");

  // Off: no ▁ unless the text has a space.
  ids = off.encode("model");
  REQUIRE_FALSE(ids.empty());
  CHECK_FALSE(starts_ws(off, ids.front()));
  ids = off.encode("<|im_start|>model");
  REQUIRE(ids.size() >= 2);
  CHECK_FALSE(starts_ws(off, ids[1]));
  ids = off.encode(" model");
  CHECK(starts_ws(off, ids.front()));

  // SentencePiece itself would prepend ▁ before a special at the start of the text; cai's split does not.
  std::vector<int> raw;
  REQUIRE(sp_processor(model_bytes(true)).Encode(im_end, &raw).ok());
  CHECK(raw.size() == 2);
  CHECK(on.sentencepiece_encode(im_end) == ids_t(raw.begin(), raw.end()));
  CHECK(on.encode(im_end) == ids_t{*on.piece_to_id(im_end)});
}

TEST_CASE("every control and user-defined piece is a special token with a single id", "[sentencepiece]") {
  const auto tok = make_tok();
  const auto specials = tok.special_tokens();
  std::vector<std::string> names;
  for (const auto& s : specials) names.push_back(s.piece);
  CHECK(names == std::vector<std::string>{"<s>", "</s>", im_start, im_end, "\n", "<|im"});
  for (const auto& s : specials) {
    INFO("special " << s.piece);
    CHECK(tok.is_special(s.id));
    CHECK(tok.encode(s.piece) == ids_t{s.id});
    CHECK(tok.decode(ids_t{s.id}) == s.piece);
    CHECK(tok.piece_to_id(s.piece) == s.id);
    CHECK(tok.id_to_piece(s.id) == s.piece);
  }
  CHECK(specials[0].user_defined == false);  // <s>: control
  CHECK(specials[2].user_defined == true);
  // <unk> and byte pieces are not special; <unk> in text is plain text.
  CHECK(tok.unk_id() == sp_processor(model_bytes(true)).unk_id());
  CHECK_FALSE(tok.is_special(tok.unk_id()));
  CHECK_FALSE(tok.is_special(*tok.piece_to_id("<0x41>")));
  CHECK(tok.encode("<unk>").size() > 1);
  CHECK_FALSE(tok.is_special(-1));
  CHECK_FALSE(tok.is_special(static_cast<std::int32_t>(tok.vocab_size())));

  // Longest match at each position, left to right.
  const auto start = *tok.piece_to_id(im_start), end = *tok.piece_to_id(im_end), nl = *tok.piece_to_id("\n"),
             im = *tok.piece_to_id("<|im"), eos = *tok.piece_to_id("</s>");
  CHECK(tok.encode("<|im_start|>") == ids_t{start});
  CHECK(tok.encode("<|im<|im_end|>") == ids_t{im, end});
  CHECK(tok.encode("\n\n") == ids_t{nl, nl});
  const auto partial = tok.encode("<|im_sta");
  REQUIRE(partial.size() >= 2);
  CHECK(partial.front() == im);
  CHECK(std::find(partial.begin() + 1, partial.end(), start) == partial.end());
  const auto mixed = tok.encode("x</s>y");
  CHECK(std::count(mixed.begin(), mixed.end(), eos) == 1);
  // Control pieces decode as their text (SentencePiece alone makes them invisible).
  std::string invisible;
  REQUIRE(sp_processor(model_bytes(true)).Decode(std::vector<int>{eos}, &invisible).ok());
  CHECK(invisible.empty());
  CHECK(tok.sentencepiece_decode(ids_t{eos}).empty());
  CHECK(tok.decode(ids_t{eos}) == "</s>");
}

TEST_CASE("user-defined symbols with commas and quotes survive SentencePiece's CSV flag parsing", "[sentencepiece]") {
  auto o = test_options(true);
  o.user_defined_symbols = {"a,b", "\"q\"", "<x>"};
  const auto tok = cai::sentencepiece_tokenizer::from_serialized(cai::train_sentencepiece(corpus(), o));
  for (const std::string s : {"a,b", "\"q\"", "<x>"}) {
    INFO(s);
    REQUIRE(tok.piece_to_id(s).has_value());
    CHECK(tok.encode(s) == ids_t{*tok.piece_to_id(s)});
  }
  const auto a = tok.piece_to_id("a");
  CHECK_FALSE((a.has_value() && tok.is_special(*a)));
}

TEST_CASE("the chat formats render exactly as documented", "[sentencepiece]") {
  const cai::conversation c = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}};
  const auto chatml = make_tok();
  CHECK(chatml.apply_chat_template(c, false) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n");
  CHECK(chatml.apply_chat_template(c, true) == chatml.apply_chat_template(c, false) + "<|im_start|>assistant\n");
  CHECK(chatml.apply_chat_template({}, true) == "<|im_start|>assistant\n");
  CHECK(chatml.apply_chat_template({}, false).empty());
  CAI_REQUIRE_THROWS_NAMING(chatml.apply_chat_template({{"user", "a"}, {"tool", "b"}}, false), cai::invalid_argument,
                            "conversation[1].role", "'tool'", "system, user, assistant");

  // Extra roles on request.
  const auto tool = make_tok(true, {.chat = cai::chat_format::chatml({"user", "assistant", "tool"})});
  CHECK(tool.apply_chat_template({{"tool", "42"}}, false) == "<|im_start|>tool\n42<|im_end|>\n");
  CAI_REQUIRE_THROWS_NAMING(tool.apply_chat_template({{"system", "x"}}, false), cai::invalid_argument, "conversation[0].role");

  const auto hh = make_tok(true, {.chat = cai::chat_format::human_assistant()});
  const cai::conversation d = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Why?"}};
  CHECK(hh.apply_chat_template(d, false) == "\n\nHuman: Hi\n\nAssistant: Hello!</s>\n\nHuman: Why?");
  CHECK(hh.apply_chat_template(d, true) == "\n\nHuman: Hi\n\nAssistant: Hello!</s>\n\nHuman: Why?\n\nAssistant: ");
  CAI_REQUIRE_THROWS_NAMING(hh.apply_chat_template(c, false), cai::invalid_argument, "conversation[0].role", "'system'");
  CHECK(cai::chat_format::human_assistant("<|endoftext|>").roles[1].suffix == "<|endoftext|>");
  CHECK(cai::chat_format::human_assistant("<|endoftext|>").end_of_turn == "<|endoftext|>");

  // The rendered hh text keeps the EOS piece as one id per assistant turn, and round-trips.
  const auto ids = hh.encode(hh.apply_chat_template(d, false));
  CHECK(std::count(ids.begin(), ids.end(), hh.eos_id()) == 1);
  CHECK(hh.decode(ids) == hh.apply_chat_template(d, false));
}

TEST_CASE("chatml renderings are prefix-stable when its boundaries are special tokens", "[sentencepiece]") {
  const std::vector<cai::conversation> chats = {
      {{"user", "hello"}, {"assistant", "hello world"}},
      {{"system", "You are helpful."}, {"user", "why is the model honest?"}, {"assistant", "Because  it was\ntrained so."},
       {"user", " leading space and 日本語"}, {"assistant", "sure 😀 "}, {"user", "thanks"}, {"assistant", "ok"}},
      {{"user", "<|im"}, {"assistant", "\n"}, {"user", ""}, {"assistant", "  "}},
  };
  for (const bool dummy : {true, false}) {
    const auto tok = make_tok(dummy);
    for (const auto& c : chats) {
      const auto whole = tok.encode(tok.apply_chat_template(c, false));
      CHECK(tok.decode(whole) == tok.apply_chat_template(c, false));
      for (std::size_t i = 0; i <= c.size(); ++i) {
        INFO("add_dummy_prefix = " << dummy << ", turns = " << i);
        const cai::conversation upto(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(i));
        CHECK(is_prefix(tok.encode(tok.apply_chat_template(upto, false)), whole));
        if (i < c.size() && c[i].role == "assistant") {
          const auto prompt = tok.encode(tok.apply_chat_template(upto, true));
          CHECK(is_prefix(prompt, whole));
          CHECK(prompt.back() != tok.eos_id());
        }
      }
    }
  }
}

TEST_CASE("cai::render_chat finds the assistant spans of a chatml conversation", "[sentencepiece]") {
  const auto tok = make_tok();
  const cai::conversation c = {{"system", "Be brief."}, {"user", "why?"}, {"assistant", "because the model is honest"},
                               {"user", "and?"},       {"assistant", " 日本語\nok"}};
  const auto r = cai::render_chat(tok, c);
  REQUIRE(r.assistant_spans.size() == 2);
  CHECK(r.tokens == tok.encode(tok.apply_chat_template(c, false)));
  const std::size_t turn[] = {2, 4};
  for (std::size_t k = 0; k < 2; ++k) {
    const auto [b, e] = r.assistant_spans[k];
    const ids_t span(r.tokens.begin() + b, r.tokens.begin() + e);
    CHECK(span.back() == tok.eos_id());
    CHECK(tok.decode(span) == c[turn[k]].content + "<|im_end|>");
  }
  const auto mask = r.loss_mask();
  CHECK(std::count(mask.begin(), mask.end(), 1) ==
        (r.assistant_spans[0].second - r.assistant_spans[0].first) + (r.assistant_spans[1].second - r.assistant_spans[1].first));
}

TEST_CASE("eos_id: options.eos, else the chat format's end-of-turn piece, else the model's eos", "[sentencepiece]") {
  const auto chatml = make_tok();
  CHECK(chatml.eos_id() == *chatml.piece_to_id(im_end));
  const auto hh = make_tok(true, {.chat = cai::chat_format::human_assistant()});
  CHECK(hh.eos_id() == *hh.piece_to_id("</s>"));
  CHECK(hh.eos_id() == sp_processor(model_bytes(true)).eos_id());
  CHECK(make_tok(true, {.eos = "<s>"}).eos_id() == *chatml.piece_to_id("<s>"));
  CHECK(make_tok(true, {.eos = "\n"}).eos_id() == *chatml.piece_to_id("\n"));
  auto other = cai::chat_format::chatml();
  other.end_of_turn = "<|eot|>";  // not a piece: falls through to the model's eos
  CHECK(make_tok(true, {.chat = other}).eos_id() == sp_processor(model_bytes(true)).eos_id());
  CAI_REQUIRE_THROWS_NAMING(make_tok(true, {.eos = "<|eot|>"}), cai::invalid_argument, "options.eos", "<|eot|>");
  CAI_REQUIRE_THROWS_NAMING(make_tok(true, {.eos = ""}), cai::invalid_argument, "options.eos");

  // A model without an eos piece: only the options or the chat format can supply one.
  auto o = test_options(true);
  o.eos_id = -1;
  const std::string no_eos = cai::train_sentencepiece(corpus(), o);
  CHECK(cai::sentencepiece_tokenizer::from_serialized(no_eos).eos_id() >= 0);  // chatml: <|im_end|>
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer::from_serialized(no_eos, {.chat = other}), cai::invalid_argument,
                            "options.eos", "<|eot|>");
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer::from_serialized(no_eos, {.chat = cai::chat_format::human_assistant()}),
                            cai::invalid_argument, "options.eos");
}

TEST_CASE("models load from files and from bytes; bad files are errors naming the path", "[sentencepiece]") {
  cai_test::temp_dir dir("sentencepiece");
  std::filesystem::create_directories(dir.path);
  const auto file = dir.path / "m.model";
  cai::train_sentencepiece(corpus(), test_options(true), file);
  REQUIRE(std::filesystem::exists(file));
  CHECK(cai_test::slurp(file) == model_bytes(true));
  const cai::sentencepiece_tokenizer from_file(file);
  const auto from_bytes = make_tok();
  CHECK(from_file.vocab_size() == from_bytes.vocab_size());
  CHECK(from_file.serialized_model() == model_bytes(true));
  for (const auto& s : round_trip_strings()) CHECK(from_file.encode(s) == from_bytes.encode(s));

  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer(dir.path / "missing.model"), cai::invalid_argument, "'path'",
                            "missing.model", "no such file");
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer(dir.path), cai::invalid_argument, "'path'", "directory");

  const auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir.path / name, std::ios::binary) << bytes;
    return dir.path / name;
  };
  std::mt19937_64 g(3);
  std::string junk(4096, '\0');
  for (auto& ch : junk) ch = static_cast<char>(g() & 0xff);
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer(write("junk.model", junk)), cai::parse_error, "'path'", "junk.model",
                            "SentencePiece model");
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer(write("empty.model", "")), cai::parse_error, "'path'", "0 bytes");
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer(write("text.model", "{\"not\": \"a model\"}\n")), cai::parse_error,
                            "'path'");
  const std::string& real = model_bytes(true);
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer(write("half.model", real.substr(0, real.size() / 2))), cai::parse_error,
                            "'path'", "half.model");
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer::from_serialized(junk), cai::parse_error, "'serialized'");
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer::from_serialized(std::string_view("\x08\x01", 2)), cai::parse_error,
                            "'serialized'");

  // Every truncation of a real model is refused (its last field, the normalizer spec, is required).
  std::size_t refused = 0;
  for (std::size_t k = 0; k < real.size(); ++k) {
    try {
      (void)cai::sentencepiece_tokenizer::from_serialized(std::string_view(real).substr(0, k));
    } catch (const cai::parse_error& e) {
      refused += cai_test::contains(e.what(), "'serialized'") ? 1 : 0;
    }
  }
  CHECK(refused == real.size());
}

TEST_CASE("decode and id_to_piece reject out-of-range ids, naming the id and its index", "[sentencepiece]") {
  const auto tok = make_tok();
  const auto v = static_cast<std::int32_t>(tok.vocab_size());
  CAI_REQUIRE_THROWS_NAMING(tok.decode(ids_t{5, -1}), cai::invalid_argument, "'ids'", "-1 at index 1");
  const std::string v_at_0 = std::to_string(v) + " at index 0";
  CAI_REQUIRE_THROWS_NAMING(tok.decode(ids_t{v}), cai::invalid_argument, "'ids'", v_at_0.c_str());
  CAI_REQUIRE_THROWS_NAMING(tok.id_to_piece(v), cai::invalid_argument, "'id'");
  CAI_REQUIRE_THROWS_NAMING(tok.id_to_piece(-3), cai::invalid_argument, "'id'", "-3");
  CHECK(tok.decode(ids_t{}).empty());
  CHECK_FALSE(tok.piece_to_id("definitely not a piece").has_value());
  CHECK_FALSE(tok.piece_to_id("").has_value());
  CHECK(tok.piece_to_id("<unk>") == tok.unk_id());
  // Every id decodes (byte pieces alone may read as U+FFFD, <unk> as " ⁇ ").
  ids_t all(static_cast<std::size_t>(v));
  for (std::int32_t i = 0; i < v; ++i) all[static_cast<std::size_t>(i)] = i;
  CHECK_NOTHROW(tok.decode(all));
}

TEST_CASE("training options are checked and SentencePiece failures become cai::error", "[sentencepiece]") {
  const auto& c = corpus();
  const auto with = [](auto f) {
    auto o = test_options(true);
    f(o);
    return o;
  };
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(std::vector<std::string>{}, test_options(true)), cai::invalid_argument,
                            "'sentences'", "non-empty");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(std::vector<std::string>{"", ""}, test_options(true)), cai::invalid_argument,
                            "'sentences'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.vocab_size = 200; })), cai::invalid_argument,
                            "'options.vocab_size'", "reserved", "200");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.vocab_size = 0; })), cai::invalid_argument,
                            "'options.vocab_size'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.character_coverage = 0.5; })),
                            cai::invalid_argument, "'options.character_coverage'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.num_threads = 0; })), cai::invalid_argument,
                            "'options.num_threads'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.normalization = "nfd"; })), cai::invalid_argument,
                            "'options.normalization'", "'nfd'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.user_defined_symbols.push_back(""); })),
                            cai::invalid_argument, "'options.user_defined_symbols[4]'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.user_defined_symbols.push_back("\n"); })),
                            cai::invalid_argument, "'options.user_defined_symbols[4]'", "once");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.control_symbols = {"<unk>"}; })),
                            cai::invalid_argument, "'options.control_symbols[0]'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.unk_id = -1; })), cai::invalid_argument,
                            "'options.unk_id'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.eos_id = 1; })), cai::invalid_argument,
                            "'options.eos_id'", "options.bos_id");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.pad_id = 3;
    o.pad_piece = "</s>"; })),
                            cai::invalid_argument, "'options.pad_piece'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, with([](auto& o) { o.max_sentencepiece_length = 0; })),
                            cai::invalid_argument, "'options.max_sentencepiece_length'");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(std::vector<std::string>{"short", std::string(100, 'x')},
                                                     with([](auto& o) { o.max_sentence_length = 50; })),
                            cai::invalid_argument, "'sentences[1]'", "100 bytes");
  cai_test::temp_dir dir("sentencepiece_train");  // never created: the model file cannot be written
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, test_options(true), dir.path / "m.model"), cai::invalid_argument,
                            "'model_file'");

  // A hard vocabulary limit the corpus cannot reach: SentencePiece's own message, as cai::error.
  const auto too_big = with([](auto& o) {
    o.vocab_size = 5000;
    o.hard_vocab_limit = true;
  });
  CAI_REQUIRE_THROWS_NAMING(cai::train_sentencepiece(c, too_big), cai::error, "cai::train_sentencepiece", "sentencepiece",
                            "Vocabulary size");
  bool was_invalid_argument = false;
  try {
    (void)cai::train_sentencepiece(c, too_big);
  } catch (const cai::invalid_argument&) {
    was_invalid_argument = true;
  } catch (const cai::error&) {
  }
  CHECK_FALSE(was_invalid_argument);
}

TEST_CASE("training is a deterministic function of the corpus and the options; bpe works too", "[sentencepiece]") {
  CHECK(cai::train_sentencepiece(corpus(), test_options(true)) == model_bytes(true));
  auto two = test_options(true);
  two.num_threads = 2;
  CHECK(cai::train_sentencepiece(corpus(), two) == cai::train_sentencepiece(corpus(), two));

  auto bpe = test_options(true);
  bpe.model_type = cai::sentencepiece_model_type::bpe;
  const std::string bytes = cai::train_sentencepiece(corpus(), bpe);
  CHECK(bytes == cai::train_sentencepiece(corpus(), bpe));
  const auto tok = cai::sentencepiece_tokenizer::from_serialized(bytes);
  CHECK(tok.model_info().model_type == cai::sentencepiece_model_type::bpe);
  CHECK(tok.model_info().round_trip_exact());
  for (const auto& s : round_trip_strings()) {
    INFO("bpe, s = [" << s << "]");
    CHECK(tok.decode(tok.encode(s)) == s);
  }
}

TEST_CASE("nmt_nfkc with whitespace removal is not round_trip_exact and normalises", "[sentencepiece]") {
  auto o = test_options(true);
  o.normalization = "nmt_nfkc";
  o.remove_extra_whitespaces = true;
  const auto tok = cai::sentencepiece_tokenizer::from_serialized(cai::train_sentencepiece(corpus(), o));
  CHECK_FALSE(tok.model_info().round_trip_exact());
  CHECK(tok.model_info().remove_extra_whitespaces);
  CHECK(tok.decode(tok.encode("  the   model  ")) == "the model");
  CHECK(tok.decode(tok.encode("ＡＢＣ")) == "ABC");
}

TEST_CASE("copies share one model and encode concurrently with the same results", "[sentencepiece]") {
  const auto tok = make_tok();
  const auto copy = tok;
  CHECK(&copy.serialized_model() == &tok.serialized_model());
  const auto strings = round_trip_strings();
  std::vector<ids_t> expected;
  for (const auto& s : strings) expected.push_back(tok.encode(s));
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      const auto mine = t % 2 ? copy : tok;
      bool all = true;
      for (int rep = 0; rep < 3; ++rep)
        for (std::size_t i = 0; i < strings.size(); ++i) {
          const auto ids = mine.encode(strings[i]);
          all = all && ids == expected[i] && mine.decode(ids) == strings[i];
        }
      ok[static_cast<std::size_t>(t)] = all ? 1 : 0;
    });
  for (auto& th : threads) th.join();
  CHECK(ok == std::vector<int>{1, 1, 1, 1});
}

TEST_CASE("human_assistant is prefix-stable only when its turn markers are special tokens", "[sentencepiece]") {
  const cai::conversation c = {{"user", "why is the model honest?"}, {"assistant", "the model is helpful"}, {"user", "and?"},
                               {"assistant", "thanks"}};
  // On the chatml test model "\n" is special but "Assistant: " is plain text: the prompt's trailing "▁" merges with
  // the reply's first word, so the prompt is not a token prefix and render_chat refuses the tokenizer.
  const auto plain = make_tok(true, {.chat = cai::chat_format::human_assistant()});
  CAI_REQUIRE_THROWS_NAMING(cai::render_chat(plain, c), cai::invalid_argument, "'tokenizer'", "prefix-stable");

  // With the markers as user-defined symbols (longest match beats "\n"), the same conversation renders.
  auto o = test_options(true);
  o.user_defined_symbols = {"\n\nHuman: ", "\n\nAssistant: ", "\n"};
  const auto hh = cai::sentencepiece_tokenizer::from_serialized(cai::train_sentencepiece(corpus(), o),
                                                                {.chat = cai::chat_format::human_assistant()});
  CHECK(hh.encode("\n\nAssistant: ") == ids_t{*hh.piece_to_id("\n\nAssistant: ")});
  CHECK(hh.eos_id() == *hh.piece_to_id("</s>"));
  const auto r = cai::render_chat(hh, c);
  REQUIRE(r.assistant_spans.size() == 2);
  const std::size_t turn[] = {1, 3};
  for (std::size_t k = 0; k < 2; ++k) {
    const auto [b, e] = r.assistant_spans[k];
    CHECK(hh.decode(ids_t(r.tokens.begin() + b, r.tokens.begin() + e)) == c[turn[k]].content + "</s>");
  }
  CHECK(hh.decode(r.tokens) == hh.apply_chat_template(c, false));
}

TEST_CASE("the header's usage snippet works as written", "[sentencepiece]") {
  const std::vector<std::string>& corpus_ = corpus();
  auto bytes = cai::train_sentencepiece(corpus_, {.vocab_size = 400, .user_defined_symbols = {"<|im_start|>", "<|im_end|>", "\n"}});
  auto tok = cai::sentencepiece_tokenizer::from_serialized(bytes, {.chat = cai::chat_format::chatml()});
  auto ids = tok.encode(tok.apply_chat_template({{"user", "hi"}}, true));
  CHECK(tok.eos_id() == *tok.piece_to_id("<|im_end|>"));
  CHECK(tok.vocab_size() == 400);
  CHECK(tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

// ---------------------------------------------------------------------------------------------------------------------
// Exactness: cai's std-only encoder and decoder against libsentencepiece 0.1.97 itself.

namespace {

/// The corpus plus lines with characters NFKC changes (fullwidth, ligatures, circled and roman numerals, halfwidth
/// katakana, no-break and ideographic spaces, combining accents), emoji and tabs, some rare enough that
/// character_coverage = 0.98 leaves them out of the vocabulary.
const std::vector<std::string>& exactness_corpus() {
  static const std::vector<std::string> c = [] {
    std::vector<std::string> v = corpus();
    static const char* words[] = {"ＡＢＣ", "ｆｕｌｌ", "ﬁne", "ﬂow", "①", "Ⅻ", "ｶﾞｷﾞ", "a\u00a0b", "x\u3000y", "e\u0301",
                                  "Å", "㎏", "😀", "🎉", "\t", "  ", "model", "the", "answer", "²", "½", "Ǆ"};
    std::mt19937_64 g(19);
    for (int i = 0; i < 120; ++i) {
      std::string s;
      for (std::size_t k = 0, m = 3 + g() % 8; k < m; ++k) s += (k ? " " : "") + std::string(words[g() % std::size(words)]);
      v.push_back(std::move(s));
    }
    return v;
  }();
  return c;
}

/// The strings every configuration is checked on: the corpus lines, the round-trip strings, whitespace edge cases,
/// and random mixtures of ASCII, non-ASCII, compatibility characters, emoji, "▁", U+FFFD, controls, NUL and invalid
/// UTF-8 (stray continuation bytes, truncated sequences, overlong forms, surrogates, random bytes).
const std::vector<std::string>& exactness_strings() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> out = exactness_corpus();
    for (auto& s : round_trip_strings()) out.push_back(s);
    for (const char* s : {" ", "  ", "   a", "a   ", " a b  c ", "\t", "\n \n", "\u3000", "\u00a0a\u00a0", "▁", "▁▁a▁", " ▁ ",
                          "\xe2\x96", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xef\xbf\xbd", "ＡＢＣ  ＤＥＦ", "ﬁ ﬂ", "①②③",
                          "e\u0301\u0301", "Ǆ ǅ ǆ", "𝐀𝐁", "a\x80" "b", "\xff\xfe", "\xf0\x9f\x98", "ab\xe6\x97"})
      out.emplace_back(s);
    static const char* atoms[] = {"a", "the", "model", " ", "  ", "\n", "\t", "\r\n", "é", "e\u0301", "日", "本", "привет", "😀",
                                  "🎉", "x", "Q", "7", "42", ".", ",", "ＡＢＣ", "ｆ", "ﬁ", "①", "Ⅻ", "ｶﾞ", "㎏", "\u00a0",
                                  "\u3000", "\u200b", "▁", "\xef\xbf\xbd", "\x01", "\x7f", "\xff", "\xc3", "\x80", "\xe2\x96",
                                  "\xed\xa0\x80", "\xc1\xbf", "Ω", "Å", "²"};
    std::mt19937_64 g(23);
    for (int i = 0; i < 2000; ++i) {
      std::string s;
      for (std::size_t k = 0, m = g() % 16; k < m; ++k) s += atoms[g() % std::size(atoms)];
      if (i % 7 == 0) s.push_back('\0');
      if (i % 5 == 0)
        for (std::size_t k = 0, m = 1 + g() % 6; k < m; ++k) s.push_back(static_cast<char>(g() & 0xff));
      out.push_back(std::move(s));
    }
    return out;
  }();
  return v;
}

struct exactness_counts {
  std::size_t strings = 0, unknown_ids = 0, byte_ids = 0, random_decodes = 0;
};

/// Compares cai with libsentencepiece on every exactness string: ids of sentencepiece_encode (and of encode where
/// the text holds no special), sentencepiece_decode and decode of those ids, and the decoding of random id sequences.
exactness_counts check_exact(const std::string& bytes, const std::string& what) {
  const auto tok = cai::sentencepiece_tokenizer::from_serialized(bytes);
  auto& sp = sp_processor(bytes);
  REQUIRE(tok.vocab_size() == sp.GetPieceSize());
  exactness_counts n;
  std::mt19937_64 g(29);
  std::size_t mismatches = 0;
  for (const auto& s : exactness_strings()) {
    std::vector<int> ref;
    REQUIRE(sp.Encode(s, &ref).ok());
    const ids_t expected(ref.begin(), ref.end());
    const ids_t got = tok.sentencepiece_encode(s);
    std::string ref_text;
    REQUIRE(sp.Decode(ref, &ref_text).ok());
    const bool has_special = std::any_of(tok.special_tokens().begin(), tok.special_tokens().end(),
                                         [&](const cai::sentencepiece_special& t) { return s.find(t.piece) != std::string::npos; });
    const bool ids_special = std::any_of(expected.begin(), expected.end(), [&](std::int32_t id) { return tok.is_special(id); });
    bool ok = got == expected && tok.sentencepiece_decode(got) == ref_text;
    if (!has_special) ok = ok && tok.encode(s) == expected;
    if (!ids_special) ok = ok && tok.decode(got) == ref_text;
    // Arbitrary id sequences (byte pieces in any order, controls, <unk>, pieces starting with ▁ anywhere).
    std::vector<int> random(g() % 10);
    for (auto& id : random) id = static_cast<int>(g() % static_cast<std::uint64_t>(tok.vocab_size()));
    std::string ref_random;
    REQUIRE(sp.Decode(random, &ref_random).ok());
    ok = ok && tok.sentencepiece_decode(ids_t(random.begin(), random.end())) == ref_random;
    if (!ok && ++mismatches <= 3) {
      std::string hex;
      for (const unsigned char c : s) hex += cai::detail::concat(std::hex, static_cast<int>(c), " ");
      UNSCOPED_INFO(what << ": mismatch on bytes [" << hex << "]");
      CHECK(got == expected);
      CHECK(tok.sentencepiece_decode(got) == ref_text);
    }
    ++n.strings;
    ++n.random_decodes;
    for (const int id : ref) {
      n.unknown_ids += sp.IsUnknown(id) ? 1 : 0;
      n.byte_ids += sp.IsByte(id) ? 1 : 0;
    }
  }
  INFO(what << ": " << mismatches << " of " << n.strings << " strings differ");
  CHECK(mismatches == 0);
  return n;
}

/// Appends protobuf fields to a serialized model: protobuf merges a repeated sub-message into the first one, so this
/// sets fields that train_sentencepiece cannot (escape_whitespaces = false, a denormalizer, whitespace as suffix).
std::string with_field(std::string bytes, std::uint32_t field, const std::string& payload) {
  const auto varint = [](std::string& out, std::uint64_t v) {
    do {
      const auto b = static_cast<unsigned char>(v & 0x7fu);
      v >>= 7;
      out.push_back(static_cast<char>(v ? (b | 0x80u) : b));
    } while (v != 0);
  };
  varint(bytes, (std::uint64_t{field} << 3) | 2u);
  varint(bytes, payload.size());
  bytes += payload;
  return bytes;
}

/// The precompiled_charsmap of a model's normalizer_spec.
std::string charsmap_of(const std::string& bytes) {
  std::string out;
  cai::detail::sp::for_each_field(bytes, [&](const cai::detail::sp::wire_reader::field& f) {
    if (f.number == 3 && f.wire_type == 2)
      cai::detail::sp::for_each_field(f.bytes, [&](const cai::detail::sp::wire_reader::field& g) {
        if (g.number == 2 && g.wire_type == 2) out = std::string(g.bytes);
        return true;
      });
    return true;
  });
  return out;
}

}  // namespace

TEST_CASE("cai encodes and decodes exactly as libsentencepiece: unigram and bpe, identity and nmt_nfkc, every "
          "whitespace and byte-fallback setting",
          "[sentencepiece][exact]") {
  std::size_t configs = 0, strings = 0, unknowns = 0, bytes_seen = 0;
  for (const auto type : {cai::sentencepiece_model_type::unigram, cai::sentencepiece_model_type::bpe})
    for (const std::string norm : {"identity", "nmt_nfkc"})
      for (const bool dummy : {true, false})
        for (const bool remove : {false, true})
          for (const bool fallback : {true, false}) {
            cai::sentencepiece_train_options o;
            o.model_type = type;
            o.normalization = norm;
            o.add_dummy_prefix = dummy;
            o.remove_extra_whitespaces = remove;
            o.byte_fallback = fallback;
            o.vocab_size = fallback ? 380 : 110;  // small: uncovered characters are unknown or byte pieces
            o.hard_vocab_limit = false;
            o.character_coverage = 0.98;
            const std::string what = cai::detail::concat(type == cai::sentencepiece_model_type::bpe ? "bpe" : "unigram", " ", norm,
                                                         " add_dummy_prefix=", dummy, " remove_extra_whitespaces=", remove,
                                                         " byte_fallback=", fallback);
            const auto n = check_exact(cai::train_sentencepiece(exactness_corpus(), o), what);
            ++configs;
            strings += n.strings;
            unknowns += n.unknown_ids;
            bytes_seen += n.byte_ids;
            if (fallback)
              CHECK(n.byte_ids > 0);
            else
              CHECK(n.unknown_ids > 0);
          }
  CHECK(configs == 32);
  CHECK(strings >= 32 * 2500);
  CHECK(unknowns > 0);
  CHECK(bytes_seen > 0);
}

TEST_CASE("cai matches libsentencepiece with user-defined and control symbols, nfkc_cf, word and char models",
          "[sentencepiece][exact]") {
  // The chatml test model: user-defined "<|im_start|>", "<|im_end|>", "\n", "<|im" (kept whole inside plain text by
  // SentencePiece itself, and split out as specials by encode).
  check_exact(model_bytes(true), "chatml test model, add_dummy_prefix");
  check_exact(model_bytes(false), "chatml test model, no add_dummy_prefix");
  for (const auto type : {cai::sentencepiece_model_type::unigram, cai::sentencepiece_model_type::bpe}) {
    auto o = test_options(true);
    o.model_type = type;
    o.normalization = "nfkc_cf";
    o.user_defined_symbols = {"ＡＢ", "ab c", "mo"};  // one NFKC would change, one with a space
    o.control_symbols = {"<ctrl>"};
    o.vocab_size = 400;
    o.character_coverage = 0.98;
    check_exact(cai::train_sentencepiece(exactness_corpus(), o), "nfkc_cf with symbols");
  }
  for (const auto type : {cai::sentencepiece_model_type::word, cai::sentencepiece_model_type::character}) {
    cai::sentencepiece_train_options o;
    o.model_type = type;
    o.byte_fallback = false;
    o.vocab_size = 120;
    o.hard_vocab_limit = false;
    o.character_coverage = 0.98;
    check_exact(cai::train_sentencepiece(exactness_corpus(), o), "word / char");
  }
}

TEST_CASE("cai matches libsentencepiece on spec settings its trainer does not write: escape_whitespaces off, a "
          "denormalizer, whitespace as suffix, a custom unk surface",
          "[sentencepiece][exact]") {
  for (const auto type : {cai::sentencepiece_model_type::unigram, cai::sentencepiece_model_type::bpe}) {
    auto o = test_options(true);
    o.model_type = type;
    o.normalization = "nmt_nfkc";
    o.remove_extra_whitespaces = true;
    const std::string base = cai::train_sentencepiece(exactness_corpus(), o);
    // normalizer_spec.escape_whitespaces = false (field 5 of field 3).
    const std::string no_escape = with_field(base, 3, std::string("\x28\x00", 2));
    CHECK_FALSE(cai::sentencepiece_tokenizer::from_serialized(no_escape).model_info().escape_whitespaces);
    check_exact(no_escape, "escape_whitespaces=false");
    // denormalizer_spec (field 5) with the nmt_nfkc charsmap: decoded text is NFKC-normalised again.
    const std::string map = charsmap_of(base);
    REQUIRE(map.size() > 4);
    const std::string denorm_spec = with_field(std::string(), 2, map) + std::string("\x18\x00\x20\x00", 4);
    const std::string denorm = with_field(base, 5, denorm_spec);
    check_exact(denorm, "denormalizer");
    const auto tok = cai::sentencepiece_tokenizer::from_serialized(denorm);
    // Byte pieces spelling "ﬁ" decode to "fi" through the denormalizer, to "ﬁ" without it.
    const ids_t fi = {*tok.piece_to_id("<0xEF>"), *tok.piece_to_id("<0xAC>"), *tok.piece_to_id("<0x81>")};
    CHECK(tok.sentencepiece_decode(fi) == "fi");
    CHECK(cai::sentencepiece_tokenizer::from_serialized(base).sentencepiece_decode(fi) == "ﬁ");
    std::string ref;
    REQUIRE(sp_processor(denorm).Decode(std::vector<int>(fi.begin(), fi.end()), &ref).ok());
    CHECK(ref == "fi");
    // trainer_spec.treat_whitespace_as_suffix = true (field 24 of field 2) and unk_surface = "<?>" (field 44).
    const std::string suffix = with_field(base, 2, std::string("\xc0\x01\x01", 3));
    CHECK(cai::sentencepiece_tokenizer::from_serialized(suffix).model_info().treat_whitespace_as_suffix);
    check_exact(suffix, "treat_whitespace_as_suffix");
    check_exact(with_field(base, 2, std::string("\xe2\x02\x03<?>", 6)), "unk_surface");
  }
  // A broken charsmap is refused, as libsentencepiece refuses it.
  const std::string broken = with_field(model_bytes(true), 3, with_field(std::string(), 2, std::string("\xff\xff\x00\x00xy", 6)));
  sentencepiece::SentencePieceProcessor sp;
  CHECK_FALSE(sp.LoadFromSerializedProto(broken).ok());
  CAI_REQUIRE_THROWS_NAMING(cai::sentencepiece_tokenizer::from_serialized(broken), cai::parse_error, "'serialized'", "charsmap");
}

TEST_CASE("the encoder is linear in the text: one long line encodes like its parts", "[sentencepiece]") {
  const auto tok = make_tok();
  std::string big;
  for (int rep = 0; rep < 40; ++rep)
    for (const auto& s : corpus()) big += s + " ";
  std::vector<int> ref;
  REQUIRE(sp_processor(model_bytes(true)).Encode(big, &ref).ok());
  CHECK(tok.sentencepiece_encode(big) == ids_t(ref.begin(), ref.end()));
}
