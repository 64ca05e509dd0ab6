// examples/spm_train.cpp — train a SentencePiece model for cai::sentencepiece_tokenizer from a text or JSONL corpus.
//
//   cai_spm_train --input corpus.txt|data.jsonl --model out.model --vocab N [--type unigram|bpe]
//                 [--user-defined-symbols a,b,c] [--chatml]
// A .txt corpus (any extension but .jsonl) gives one training sentence per line. A .jsonl corpus gives every string
// value of every record, found recursively through objects and arrays (so a preference dataset — hh "chosen" /
// "rejected" transcripts, prompt/chosen/rejected, TRL messages — is its own corpus). --chatml adds "<|im_start|>",
// "<|im_end|>" and "\n" as user-defined symbols, which makes chat_format::chatml() renderings prefix-stable.
// The model uses train_sentencepiece's defaults otherwise (identity normalisation, byte fallback, no whitespace
// removal: decode(encode(s)) == s). Training needs libsentencepiece_train; the model it writes is read by
// cai/sentencepiece/tokenizer.hpp without libsentencepiece (so it can be used next to LibTorch).
// Prints a one-line summary; exit code 2 on bad arguments or input.
#include <cai/sentencepiece/train.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

struct args {
  std::string input, model, type = "unigram";
  std::int32_t vocab = 0;
  std::vector<std::string> symbols;
  bool chatml = false;
};

[[noreturn]] void usage(const std::string& why) {
  throw cai::invalid_argument("cai_spm_train: " + why +
                              "\nusage: cai_spm_train --input corpus.txt|file.jsonl --model out.model --vocab N "
                              "[--type unigram|bpe] [--user-defined-symbols a,b,c] [--chatml]");
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (const char c : s) {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(k + " needs a value");
      return argv[++i];
    };
    if (k == "--input") {
      a.input = next();
    } else if (k == "--model") {
      a.model = next();
    } else if (k == "--vocab") {
      const std::string v = next();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n <= 0 || n > 1000000) usage("--vocab takes a positive integer, got '" + v + "'");
      a.vocab = static_cast<std::int32_t>(n);
    } else if (k == "--type") {
      a.type = next();
      if (a.type != "unigram" && a.type != "bpe") usage("--type takes unigram or bpe, got '" + a.type + "'");
    } else if (k == "--user-defined-symbols") {
      for (auto& s : split_commas(next())) a.symbols.push_back(std::move(s));
    } else if (k == "--chatml") {
      a.chatml = true;
    } else {
      usage("unknown argument " + k);
    }
  }
  if (a.input.empty() || a.model.empty() || a.vocab == 0) usage("--input, --model and --vocab are required");
  return a;
}

/// Every string value inside `j`, depth first.
void collect_strings(const nlohmann::json& j, std::vector<std::string>& out) {
  if (j.is_string()) {
    if (!j.get_ref<const std::string&>().empty()) out.push_back(j.get<std::string>());
  } else if (j.is_object() || j.is_array()) {
    for (const auto& v : j) collect_strings(v, out);
  }
}

std::vector<std::string> read_corpus(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) usage("cannot open --input '" + path + "'");
  const bool jsonl = path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
  std::vector<std::string> corpus;
  std::string line;
  std::size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (!jsonl) {
      corpus.push_back(line);
      continue;
    }
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw cai::parse_error("cai_spm_train: " + path + ":" + std::to_string(line_no) + ": not JSON (" + e.what() + ")");
    }
    collect_strings(record, corpus);
  }
  if (corpus.empty()) usage("--input '" + path + "' holds no text");
  return corpus;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const args a = parse(argc, argv);
    const std::vector<std::string> corpus = read_corpus(a.input);
    cai::sentencepiece_train_options o;
    o.vocab_size = a.vocab;
    o.model_type = a.type == "bpe" ? cai::sentencepiece_model_type::bpe : cai::sentencepiece_model_type::unigram;
    o.hard_vocab_limit = false;  // a small corpus may not fill --vocab; the model then has fewer pieces
    o.max_sentence_length = 1 << 20;
    if (a.chatml)
      for (const char* s : {"<|im_start|>", "<|im_end|>", "\n"}) o.user_defined_symbols.emplace_back(s);
    for (const auto& s : a.symbols)
      if (std::find(o.user_defined_symbols.begin(), o.user_defined_symbols.end(), s) == o.user_defined_symbols.end())
        o.user_defined_symbols.push_back(s);
    cai::train_sentencepiece(corpus, o, a.model);
    const cai::sentencepiece_tokenizer tok(a.model);
    std::printf("cai_spm_train: %zu sentences -> %s (%s, %lld pieces, %zu special tokens)\n", corpus.size(), a.model.c_str(),
                a.type.c_str(), static_cast<long long>(tok.vocab_size()), tok.special_tokens().size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
