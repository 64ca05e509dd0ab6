// Tests for cai/io/datasets.hpp: SFT and preference records in the hh, text and messages forms — byte-exact
// transcripts, round trips of every record shape through every form (multi-turn prompts, empty responses, responses
// with leading spaces and newlines, soft labels), system turns refused by the hh form, a hand-written hh-rlhf line,
// records through a JSONL file, and the parse errors for malformed input.
#include <cai/io/datasets.hpp>
#include <cai/io/jsonl.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "../support.hpp"

namespace {

using json = nlohmann::json;
using cai::dataset_format;

constexpr dataset_format all_formats[] = {dataset_format::hh, dataset_format::text, dataset_format::messages};

const char* format_name(dataset_format f) {
  switch (f) {
    case dataset_format::hh: return "hh";
    case dataset_format::text: return "text";
    case dataset_format::messages: return "messages";
  }
  return "?";
}

const cai::conversation one_turn = {{"user", "What is 2 + 2?"}};
const cai::conversation multi_turn = {{"user", "Hi there."},
                                      {"assistant", "Hello! How can I help?"},
                                      {"user", "Tell me a joke,\nin two lines.\n\nPlease."}};
const cai::conversation with_system = {{"system", "You are terse."}, {"user", "Name a colour."}};

std::vector<cai::preference_record> preference_cases() {
  return {
      {one_turn, "4.", "Five.", std::nullopt},
      {multi_turn, "Why did the chicken...\n\n...cross the road?", "No.", 0.75},
      {multi_turn, "", "", std::nullopt},                      // empty responses
      {one_turn, " leading space", "trailing space ", 0.0},    // spaces at the edges survive the text form's " "
      {one_turn, "caf\xc3\xa9 \xe2\x80\x94 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x99\x82", "plain", 1.0},  // unicode
      {{{"user", ""}}, "answer to nothing", "", 0.5},         // an empty user turn
      {{{"user", "a"}, {"assistant", ""}, {"user", "b"}}, "c", "d", std::nullopt},  // an empty assistant turn mid-dialogue
  };
}

std::vector<cai::sft_record> sft_cases() {
  return {
      {one_turn, "4."},
      {multi_turn, "Line one.\nLine two.\n\nLine four."},
      {multi_turn, ""},
      {one_turn, " leading space"},
      {{{"user", "\xe2\x9c\x93 unicode?"}}, "\xe2\x9c\x93 yes"},
  };
}

}  // namespace

TEST_CASE("hh_transcript writes Human and Assistant turns byte for byte and refuses other roles naming the turn", "[io]") {
  CHECK(cai::hh_transcript(one_turn) == "\n\nHuman: What is 2 + 2?");
  CHECK(cai::hh_transcript(multi_turn) ==
        "\n\nHuman: Hi there.\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke,\nin two lines.\n\nPlease.");
  CHECK(cai::hh_transcript({}).empty());
  CAI_REQUIRE_THROWS_NAMING((cai::hh_transcript(with_system)), cai::invalid_argument, "cai::hh_transcript", "conversation[0].role",
                            "\"system\"", "messages form");
  CAI_REQUIRE_THROWS_NAMING((cai::hh_transcript({{"user", "a"}, {"assistant", "b"}, {"tool", "c"}})), cai::invalid_argument,
                            "conversation[2].role", "\"tool\"");
  // parse_hh inverts it, and takes a bare "\n\nAssistant:" ending as an empty assistant turn.
  CHECK(cai::parse_hh(cai::hh_transcript(multi_turn)) == multi_turn);
  CHECK(cai::parse_hh("\n\nHuman: q\n\nAssistant:") == cai::conversation{{"user", "q"}, {"assistant", ""}});
  CHECK(cai::parse_hh("\n\nHuman: q\n\nAssistant: ") == cai::conversation{{"user", "q"}, {"assistant", ""}});
  CAI_REQUIRE_THROWS_NAMING((cai::parse_hh("Human: q\n\nAssistant: a")), cai::parse_error, "cai::parse_hh", "start with", "Human: q");
  CAI_REQUIRE_THROWS_NAMING((cai::parse_hh("")), cai::parse_error, "cai::parse_hh");
  CAI_REQUIRE_THROWS_NAMING((cai::parse_hh("\n\nAssistant: a")), cai::parse_error, "cai::parse_hh");
}

TEST_CASE("preference records are written byte for byte in the hh, text and messages forms", "[io]") {
  const cai::preference_record r{multi_turn, "Sure: a joke.", "No.", std::nullopt};
  const std::string p = "\n\nHuman: Hi there.\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke,\nin two lines.\n\nPlease.";

  const json hh = cai::to_json(r, dataset_format::hh);
  CHECK(hh == json{{"chosen", p + "\n\nAssistant: Sure: a joke."}, {"rejected", p + "\n\nAssistant: No."}});

  const json text = cai::to_json(r, dataset_format::text);
  CHECK(text == json{{"prompt", p + "\n\nAssistant:"}, {"chosen", " Sure: a joke."}, {"rejected", " No."}});
  const std::string tp = text["prompt"].get<std::string>();
  CHECK(tp.substr(tp.size() - 12) == "\n\nAssistant:");
  CHECK(text["chosen"].get<std::string>().front() == ' ');
  // prompt + chosen is the hh transcript.
  CHECK(tp + text["chosen"].get<std::string>() == hh["chosen"].get<std::string>());

  const json msgs = cai::to_json(r, dataset_format::messages);
  const json turns = json::array({{{"role", "user"}, {"content", "Hi there."}},
                                  {{"role", "assistant"}, {"content", "Hello! How can I help?"}},
                                  {{"role", "user"}, {"content", "Tell me a joke,\nin two lines.\n\nPlease."}}});
  CHECK(msgs == json{{"prompt", turns},
                     {"chosen", json::array({{{"role", "assistant"}, {"content", "Sure: a joke."}}})},
                     {"rejected", json::array({{{"role", "assistant"}, {"content", "No."}}})}});

  // No label: no "label" field in any form; a soft label is written as "label".
  for (dataset_format f : all_formats) {
    INFO(format_name(f));
    CHECK_FALSE(cai::to_json(r, f).contains("label"));
    cai::preference_record soft = r;
    soft.label = 0.25;
    const json j = cai::to_json(soft, f);
    REQUIRE(j.contains("label"));
    CHECK(j["label"].get<double>() == 0.25);
  }
}

TEST_CASE("SFT records are written byte for byte in the hh, text and messages forms", "[io]") {
  const cai::sft_record r{multi_turn, "Knock knock."};
  const std::string p = "\n\nHuman: Hi there.\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke,\nin two lines.\n\nPlease.";
  const json hh = cai::to_json(r, dataset_format::hh);
  CHECK(hh == json{{"text", p + "\n\nAssistant: Knock knock."}});
  const json text = cai::to_json(r, dataset_format::text);
  CHECK(text == json{{"prompt", p + "\n\nAssistant:"}, {"completion", " Knock knock."}});
  CHECK(text["prompt"].get<std::string>() + text["completion"].get<std::string>() == hh["text"].get<std::string>());
  const json msgs = cai::to_json(r, dataset_format::messages);
  CHECK(msgs == json{{"messages", json::array({{{"role", "user"}, {"content", "Hi there."}},
                                               {{"role", "assistant"}, {"content", "Hello! How can I help?"}},
                                               {{"role", "user"}, {"content", "Tell me a joke,\nin two lines.\n\nPlease."}},
                                               {{"role", "assistant"}, {"content", "Knock knock."}}})}});
  CHECK_FALSE(hh.contains("label"));
}

TEST_CASE("every preference record round trips through every form, soft labels included", "[io]") {
  for (const auto& r : preference_cases())
    for (dataset_format f : all_formats) {
      INFO("form " << format_name(f) << ", chosen '" << r.chosen << "'");
      const json j = cai::to_json(r, f);
      CHECK(cai::preference_from_json(j) == r);
      // And through text: serialised and parsed again.
      CHECK(cai::preference_from_json(json::parse(j.dump())) == r);
    }
  // System turns survive the messages form.
  const cai::preference_record sys{with_system, "Blue.", "I like many colours, for instance...", 0.9};
  CHECK(cai::preference_from_json(cai::to_json(sys, dataset_format::messages)) == sys);
  for (dataset_format f : {dataset_format::hh, dataset_format::text}) {
    INFO(format_name(f));
    CAI_REQUIRE_THROWS_NAMING((cai::to_json(sys, f)), cai::invalid_argument, "conversation[0].role", "system");
  }
}

TEST_CASE("every SFT record round trips through every form", "[io]") {
  for (const auto& r : sft_cases())
    for (dataset_format f : all_formats) {
      INFO("form " << format_name(f) << ", response '" << r.response << "'");
      const json j = cai::to_json(r, f);
      CHECK(cai::sft_from_json(j) == r);
      CHECK(cai::sft_from_json(json::parse(j.dump())) == r);
    }
  const cai::sft_record sys{with_system, "Blue."};
  CHECK(cai::sft_from_json(cai::to_json(sys, dataset_format::messages)) == sys);
  CAI_REQUIRE_THROWS_NAMING((cai::to_json(sys, dataset_format::hh)), cai::invalid_argument, "conversation[0].role");
  CAI_REQUIRE_THROWS_NAMING((cai::to_json(sys, dataset_format::text)), cai::invalid_argument, "conversation[0].role");
}

TEST_CASE("soft labels are read when present, absent otherwise, and rejected outside 0 to 1", "[io]") {
  const cai::preference_record r{one_turn, "4.", "5.", std::nullopt};
  for (dataset_format f : all_formats) {
    INFO(format_name(f));
    json j = cai::to_json(r, f);
    CHECK_FALSE(cai::preference_from_json(j).label.has_value());
    for (double v : {0.0, 0.3, 1.0}) {
      j["label"] = v;
      const auto back = cai::preference_from_json(j);
      REQUIRE(back.label.has_value());
      CHECK(*back.label == v);
    }
    j["label"] = 1;  // an integer is a number too
    CHECK(cai::preference_from_json(j).label == std::optional<double>(1.0));
    j["label"] = 1.5;
    CAI_REQUIRE_THROWS_NAMING((cai::preference_from_json(j)), cai::parse_error, "'label'", "[0, 1]", "1.5");
    j["label"] = -0.1;
    CAI_REQUIRE_THROWS_NAMING((cai::preference_from_json(j)), cai::parse_error, "'label'", "[0, 1]", "-0.1");
    j["label"] = "0.5";
    CAI_REQUIRE_THROWS_NAMING((cai::preference_from_json(j)), cai::parse_error, "'label' must be a number");
    j["label"] = true;
    CAI_REQUIRE_THROWS_NAMING((cai::preference_from_json(j)), cai::parse_error, "'label' must be a number");
    j["label"] = nullptr;
    CAI_REQUIRE_THROWS_NAMING((cai::preference_from_json(j)), cai::parse_error, "'label'");
  }
}

TEST_CASE("a real hh-rlhf style line parses into a multi-turn prompt and writes back byte for byte", "[io]") {
  // The layout of Anthropic/hh-rlhf's JSONL: two full transcripts sharing the prompt, paragraph breaks inside
  // turns, non-ASCII punctuation as \u escapes.
  const std::string line =
      R"({"chosen": "\n\nHuman: What should I pack for a weekend of hiking in the mountains?\n\nAssistant: Layers, mostly. Here\u2019s a short list:\n\nA rain shell, a warm mid-layer, sturdy boots.\n\nHuman: What about food?\n\nAssistant: Bring more than you think you need: nuts, dried fruit and something hot for the evening.", )"
      R"("rejected": "\n\nHuman: What should I pack for a weekend of hiking in the mountains?\n\nAssistant: Layers, mostly. Here\u2019s a short list:\n\nA rain shell, a warm mid-layer, sturdy boots.\n\nHuman: What about food?\n\nAssistant: Whatever."})";
  const json j = json::parse(line);
  const cai::preference_record r = cai::preference_from_json(j);
  REQUIRE(r.prompt.size() == 3);
  CHECK(r.prompt[0] == cai::chat_message{"user", "What should I pack for a weekend of hiking in the mountains?"});
  CHECK(r.prompt[1] == cai::chat_message{"assistant",
                                         "Layers, mostly. Here\xe2\x80\x99s a short list:\n\nA rain shell, a warm mid-layer, sturdy boots."});
  CHECK(r.prompt[2] == cai::chat_message{"user", "What about food?"});
  CHECK(r.chosen == "Bring more than you think you need: nuts, dried fruit and something hot for the evening.");
  CHECK(r.rejected == "Whatever.");
  CHECK_FALSE(r.label.has_value());
  CHECK(cai::to_json(r, dataset_format::hh) == j);  // same strings, byte for byte
  // The other forms carry the same record.
  const json text = cai::to_json(r, dataset_format::text);
  CHECK(text["prompt"].get<std::string>() + text["chosen"].get<std::string>() == j["chosen"].get<std::string>());
  CHECK(cai::preference_from_json(cai::to_json(r, dataset_format::messages)) == r);
  // Each side is an SFT transcript in the hh form as well.
  const cai::sft_record s = cai::sft_from_json(json{{"text", j["chosen"]}});
  CHECK(s.prompt == r.prompt);
  CHECK(s.response == r.chosen);
}

TEST_CASE("text-form fields written without the leading space are read as they are", "[io]") {
  const json j = {{"prompt", "\n\nHuman: q\n\nAssistant:"}, {"chosen", "yes"}, {"rejected", " no"}};
  const auto r = cai::preference_from_json(j);
  CHECK(r.prompt == cai::conversation{{"user", "q"}});
  CHECK(r.chosen == "yes");
  CHECK(r.rejected == "no");
  const auto s = cai::sft_from_json(json{{"prompt", "\n\nHuman: q\n\nAssistant:"}, {"completion", "yes"}});
  CHECK(s.response == "yes");
}

TEST_CASE("malformed preference records are parse errors saying what is wrong", "[io]") {
  using cai::parse_error;
  const auto pref = [](const json& j) { return cai::preference_from_json(j); };
  CAI_REQUIRE_THROWS_NAMING((pref(json::array())), parse_error, "expected an object");
  // hh
  CAI_REQUIRE_THROWS_NAMING((pref({{"chosen", "Human: a\n\nAssistant: b"}, {"rejected", "\n\nHuman: a\n\nAssistant: c"}})), parse_error,
                            "start with");
  CAI_REQUIRE_THROWS_NAMING((pref({{"chosen", "\n\nHuman: a\n\nAssistant: b"}, {"rejected", "\n\nHuman: x\n\nAssistant: c"}})), parse_error,
                            "'chosen' and 'rejected'", "different prompts");
  CAI_REQUIRE_THROWS_NAMING((pref({{"chosen", "\n\nHuman: a\n\nAssistant: b"}, {"rejected", "\n\nHuman: a\n\nAssistant: b\n\nHuman: more\n\nAssistant: c"}})),
                            parse_error, "different prompts");
  CAI_REQUIRE_THROWS_NAMING((pref({{"chosen", "\n\nHuman: a"}, {"rejected", "\n\nHuman: a\n\nAssistant: c"}})), parse_error,
                            "'chosen' must end with an Assistant turn");
  CAI_REQUIRE_THROWS_NAMING((pref({{"chosen", "\n\nHuman: a\n\nAssistant: b"}, {"rejected", "\n\nHuman: a\n\nAssistant: c\n\nHuman: d"}})),
                            parse_error, "'rejected' must end with an Assistant turn");
  CAI_REQUIRE_THROWS_NAMING((pref({{"chosen", "\n\nHuman: a\n\nAssistant: b"}})), parse_error, "'rejected'");
  CAI_REQUIRE_THROWS_NAMING((pref({{"rejected", "\n\nHuman: a\n\nAssistant: b"}})), parse_error, "'chosen'");
  CAI_REQUIRE_THROWS_NAMING((pref({{"chosen", 3}, {"rejected", "\n\nHuman: a\n\nAssistant: b"}})), parse_error,
                            "expected a string field 'chosen'");
  CAI_REQUIRE_THROWS_NAMING((pref(json::object())), parse_error, "'chosen'");
  // text
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", "\n\nHuman: a"}, {"chosen", " b"}, {"rejected", " c"}})), parse_error,
                            "text 'prompt' must end with");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", "\n\nHuman: a\n\nAssistant: b"}, {"chosen", " b"}, {"rejected", " c"}})), parse_error,
                            "text 'prompt' must end with");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", "Human: a\n\nAssistant:"}, {"chosen", " b"}, {"rejected", " c"}})), parse_error, "start with");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", "\n\nHuman: a\n\nAssistant:"}, {"rejected", " c"}})), parse_error, "'chosen'");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", "\n\nHuman: a\n\nAssistant:"}, {"chosen", " b"}, {"rejected", json::array()}})), parse_error,
                            "'rejected'");
  // messages
  const json turns = json::array({{{"role", "user"}, {"content", "a"}}});
  const json asst = json::array({{{"role", "assistant"}, {"content", "b"}}});
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", turns}, {"chosen", json::array({{{"role", "user"}, {"content", "b"}}})}, {"rejected", asst}})),
                            parse_error, "'chosen' must hold one assistant turn");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", turns}, {"chosen", asst}, {"rejected", json::array()}})), parse_error,
                            "'rejected' must hold one assistant turn");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", turns}, {"chosen", asst}, {"rejected", json::array({asst[0], asst[0]})}})), parse_error,
                            "'rejected' must hold one assistant turn");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", turns}, {"chosen", asst}})), parse_error, "'rejected' must be a list");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", turns}, {"chosen", "b"}, {"rejected", asst}})), parse_error, "'chosen' must be a list");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", json::array({turns[0], {{"role", "assistant"}}})}, {"chosen", asst}, {"rejected", asst}})),
                            parse_error, "'prompt'[1]", "{\"role\": string, \"content\": string}");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", json::array({{{"role", 1}, {"content", "a"}}})}, {"chosen", asst}, {"rejected", asst}})),
                            parse_error, "'prompt'[0]");
  CAI_REQUIRE_THROWS_NAMING((pref({{"prompt", 7}, {"chosen", asst}, {"rejected", asst}})), parse_error, "'prompt' must be a list");
}

TEST_CASE("malformed SFT records are parse errors saying what is wrong", "[io]") {
  using cai::parse_error;
  const auto sft = [](const json& j) { return cai::sft_from_json(j); };
  CAI_REQUIRE_THROWS_NAMING((sft("text")), parse_error, "expected an object");
  CAI_REQUIRE_THROWS_NAMING((sft({{"messages", json::array({{{"role", "user"}, {"content", "a"}}})}})), parse_error,
                            "'messages' must end with an assistant turn");
  CAI_REQUIRE_THROWS_NAMING((sft({{"messages", json::array()}})), parse_error, "'messages' must end with an assistant turn");
  CAI_REQUIRE_THROWS_NAMING((sft({{"messages", "hi"}})), parse_error, "'messages' must be a list");
  CAI_REQUIRE_THROWS_NAMING((sft({{"messages", json::array({{{"content", "a"}}})}})), parse_error, "'messages'[0]");
  CAI_REQUIRE_THROWS_NAMING((sft({{"text", "\n\nHuman: a"}})), parse_error, "'text' must end with an Assistant turn");
  CAI_REQUIRE_THROWS_NAMING((sft({{"text", "Assistant: a"}})), parse_error, "start with");
  CAI_REQUIRE_THROWS_NAMING((sft({{"text", 5}})), parse_error, "expected a string field 'text'");
  CAI_REQUIRE_THROWS_NAMING((sft({{"prompt", "\n\nHuman: a"}, {"completion", " b"}})), parse_error, "text 'prompt' must end with");
  CAI_REQUIRE_THROWS_NAMING((sft({{"prompt", "\n\nHuman: a\n\nAssistant:"}})), parse_error, "'completion'");
  CAI_REQUIRE_THROWS_NAMING((sft(json::object())), parse_error, "'prompt'");
}

TEST_CASE("dataset records of every form go through a JSONL file unchanged", "[io]") {
  const auto path = std::filesystem::temp_directory_path() / ("cai_test_datasets_" + std::to_string(::getpid()) + ".jsonl");
  std::filesystem::remove(path);
  const auto prefs = preference_cases();
  const auto sfts = sft_cases();
  {
    cai::jsonl_writer w(path);
    for (dataset_format f : all_formats) {
      for (const auto& r : prefs) w.write(cai::to_json(r, f));
      for (const auto& r : sfts) w.write(cai::to_json(r, f));
    }
  }
  std::vector<json> back;
  cai::read_jsonl(path, [&](const json& j, std::size_t) { back.push_back(j); });
  std::filesystem::remove(path);
  REQUIRE(back.size() == 3 * (prefs.size() + sfts.size()));
  std::size_t k = 0;
  for (dataset_format f : all_formats) {
    INFO(format_name(f));
    for (const auto& r : prefs) CHECK(cai::preference_from_json(back[k++]) == r);
    for (const auto& r : sfts) CHECK(cai::sft_from_json(back[k++]) == r);
  }
}
