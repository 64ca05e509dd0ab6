// Tests for cai/constitution/constitution.hpp and default_constitution.hpp: the default constitution (16 principles,
// identical to data/constitution.json), round trips through the file format, every validation error naming the
// field's JSON pointer, truncated input at every length, and the open-recipe importer.
#include <cai/constitution/constitution.hpp>
#include <cai/constitution/default_constitution.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "../support.hpp"

#ifndef CAI_DATA_DIR
#error "CAI_DATA_DIR must name the data directory (tests/CMakeLists.txt defines it)"
#endif

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A small valid constitution, edited by the error tests.
const char* const small = R"({
  "format": "cai.constitution/1",
  "name": "small",
  "principles": [
    {"id": "a", "critique_request": "Critique A.", "revision_request": "Revise A.", "comparison_question": "Which is better for A?"},
    {"id": "b", "critique_request": "Critique B.", "revision_request": "Revise B.", "comparison_question": "Which is better for B?"}
  ],
  "critique_examples": [
    {"principle": "a", "conversation": [{"role": "user", "content": "Hi"}], "response": "R", "critique": "C", "revision": "V"},
    {"critique_request": "Inline critique.", "revision_request": "Inline revision.",
     "conversation": [{"role": "user", "content": "Q"}], "response": "R2", "critique": "C2", "revision": "V2"}
  ],
  "feedback_examples": [
    {"principle": "b", "conversation": [{"role": "user", "content": "Q"}], "options": ["x", "y"], "answer": 1, "reasoning": "because"}
  ]
})";

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto k = s.find(from);
  REQUIRE(k != std::string::npos);
  return s.replace(k, from.size(), to);
}

}  // namespace

TEST_CASE("the default constitution has 16 principles covering the required themes and equals data/constitution.json", "[constitution][io]") {
  const cai::constitution& c = cai::default_constitution();
  CHECK(c.principles.size() == 16);
  std::set<std::string> ids;
  for (const auto& p : c.principles) {
    ids.insert(p.id);
    CHECK(!p.critique_request.empty());
    CHECK(!p.revision_request.empty());
    CHECK(p.comparison_question.find('?') != std::string::npos);
  }
  CHECK(ids.size() == 16);
  for (const char* theme : {"physical-harm", "legality", "honesty", "calibration", "non-evasiveness", "autonomy", "age-appropriate"})
    CHECK(ids.count(theme) == 1);
  CHECK(c.critique_examples.size() >= 2);
  CHECK(c.feedback_examples.size() >= 2);
  // Examples that name a principle carry its texts.
  for (const auto& e : c.critique_examples) CHECK(e.critique_request == c.find(e.principle).critique_request);
  // The compiled-in text is the data file, byte for byte (scripts/embed_constitution.py regenerates it).
  CHECK(std::string(cai::default_constitution_json) == read_file(std::string(CAI_DATA_DIR) + "/constitution.json"));
  CHECK(cai::load_constitution(std::string(CAI_DATA_DIR) + "/constitution.json") == c);
}

TEST_CASE("a constitution survives to_json and parse_constitution unchanged", "[constitution][io]") {
  const cai::constitution c = cai::parse_constitution(small, "small.json");
  CHECK(c.principles.size() == 2);
  CHECK(c.critique_examples[0].critique_request == "Critique A.");
  CHECK(c.critique_examples[1].principle.empty());
  CHECK(c.critique_examples[1].revision_request == "Inline revision.");
  CHECK(c.feedback_examples[0].comparison_question == "Which is better for B?");
  CHECK(c.feedback_examples[0].answer == 1);
  CHECK(cai::parse_constitution(cai::to_json(c)) == c);
  CHECK(cai::parse_constitution(cai::to_json(cai::default_constitution(), 0)) == cai::default_constitution());
  const auto path = std::filesystem::temp_directory_path() / "cai_test_constitution.json";
  std::ofstream(path) << cai::to_json(c);
  CHECK(cai::load_constitution(path) == c);
  std::filesystem::remove(path);
  CHECK_THROWS_AS(c.find("zzz"), cai::invalid_argument);
}

TEST_CASE("invalid constitutions are rejected naming the JSON pointer of the field", "[constitution][io]") {
  const std::string s = small;
  const auto bad = [](const std::string& text) { return cai::parse_constitution(text, "t.json"); };
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "\"comparison_question\": \"Which is better for A?\"", "\"comparison_qestion\": \"x\""))),
                            cai::parse_error, "t.json", "/principles/0/comparison_qestion", "unknown field");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "\"revision_request\": \"Revise B.\", ", ""))), cai::parse_error, "/principles/1/revision_request", "missing");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "\"id\": \"b\"", "\"id\": \"a\""))), cai::parse_error, "/principles/1/id", "duplicate");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "\"id\": \"b\"", "\"id\": \"\""))), cai::parse_error, "/principles/1/id", "non-empty");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "\"id\": \"b\"", "\"id\": 7"))), cai::parse_error, "/principles/1/id", "expected a string, got number");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "cai.constitution/1", "cai.constitution/9"))), cai::parse_error, "/format");
  CAI_REQUIRE_THROWS_NAMING((bad(R"({"format": "cai.constitution/1", "name": "x", "principles": []})")), cai::parse_error, "/principles", "at least one");
  CAI_REQUIRE_THROWS_NAMING((bad(R"({"format": "cai.constitution/1", "name": "x"})")), cai::parse_error, "/principles", "missing");
  CAI_REQUIRE_THROWS_NAMING((bad(R"([1, 2])")), cai::parse_error, "expected an object, got array");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "{\"principle\": \"a\", \"conversation\"", "{\"principle\": \"q\", \"conversation\""))), cai::parse_error,
                            "/critique_examples/0/principle", "unknown principle id 'q'");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "\"answer\": 1", "\"answer\": 2"))), cai::parse_error, "/feedback_examples/0/answer", "[0, 2)");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "\"answer\": 1", "\"answer\": -1"))), cai::parse_error, "/feedback_examples/0/answer");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "\"options\": [\"x\", \"y\"]", "\"options\": [\"x\"]"))), cai::parse_error, "/feedback_examples/0/options", "at least 2");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "[{\"role\": \"user\", \"content\": \"Hi\"}]", "[{\"role\": \"user\"}]"))), cai::parse_error,
                            "/critique_examples/0/conversation/0/content", "missing");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "[{\"role\": \"user\", \"content\": \"Hi\"}]", "[]"))), cai::parse_error, "/critique_examples/0/conversation");
  CAI_REQUIRE_THROWS_NAMING((bad(replaced(s, "{\"principle\": \"a\", \"conversation\"", "{\"principle\": \"a\", \"critique_request\": \"x\", \"conversation\""))),
                            cai::parse_error, "/critique_examples/0", "not both");
  CAI_REQUIRE_THROWS_NAMING((cai::load_constitution("/nonexistent/cai.json")), cai::parse_error, "cannot open", "/nonexistent/cai.json");
}

TEST_CASE("every truncation of a constitution file is a parse_error, never a crash", "[constitution][io]") {
  const std::string s = cai::to_json(cai::parse_constitution(small), 0);
  for (std::size_t n = 0; n < s.size(); ++n) {
    INFO("length " << n);
    CHECK_THROWS_AS(cai::parse_constitution(std::string_view(s).substr(0, n)), cai::parse_error);
  }
  CAI_REQUIRE_THROWS_NAMING((cai::parse_constitution("{\"format\": ", "cut.json")), cai::parse_error, "cut.json", "malformed JSON at byte");
}

TEST_CASE("the open-recipe layout imports as principles and critique examples", "[constitution][io]") {
  const char* recipe = R"({
    "constitutions": [
      {"critic": "Is the response harmful?", "revision": "Make it harmless."},
      {"critic": "Is the response rude?", "revision": "Make it polite."}
    ],
    "system_chat": [
      [
        {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "bad answer"},
        {"role": "user", "content": "Is the response harmful?"}, {"role": "assistant", "content": "It is."},
        {"role": "user", "content": "Make it harmless."}, {"role": "assistant", "content": "good answer"}
      ],
      [
        {"role": "user", "content": "Tell me about X"}, {"role": "assistant", "content": "X is..."},
        {"role": "user", "content": "And Y?"}, {"role": "assistant", "content": "Y is wrong"},
        {"role": "user", "content": "Was that truthful?"}, {"role": "assistant", "content": "Not quite."},
        {"role": "user", "content": "Rewrite it truthfully."}, {"role": "assistant", "content": "Y is..."}
      ]
    ]
  })";
  const cai::constitution c = cai::import_constitution_recipe(recipe, "recipe.json", "grok");
  REQUIRE(c.principles.size() == 2);
  CHECK(c.principles[1].id == "principle-2");
  CHECK(c.principles[1].revision_request == "Make it polite.");
  CHECK(c.principles[0].comparison_question.find("Is the response harmful?") != std::string::npos);
  REQUIRE(c.critique_examples.size() == 2);
  CHECK(c.critique_examples[0].principle == "principle-1");
  CHECK(c.critique_examples[0].dialogue == cai::conversation{{"user", "Q1"}});
  CHECK(c.critique_examples[0].revision == "good answer");
  CHECK(c.critique_examples[1].principle.empty());  // its requests are not among the principles: kept inline
  CHECK(c.critique_examples[1].dialogue.size() == 3);
  CHECK(c.critique_examples[1].critique_request == "Was that truthful?");
  // The import writes out in cai's own format and reads back identically.
  CHECK(cai::parse_constitution(cai::to_json(c)) == c);

  CAI_REQUIRE_THROWS_NAMING((cai::import_constitution_recipe(R"({"constitutions": [{"critic": "x"}]})", "r.json")), cai::parse_error, "/constitutions/0/revision");
  CAI_REQUIRE_THROWS_NAMING((cai::import_constitution_recipe(R"({"constitutions": [{"critic": "x", "revision": "y"}], "system_chat": [[{"role": "user", "content": "a"}]]})", "r.json")),
                            cai::parse_error, "/system_chat/0", ">= 6 messages");
  CAI_REQUIRE_THROWS_NAMING((cai::import_constitution_recipe(R"({"constitutions": [], "extra": 1})", "r.json")), cai::parse_error, "/extra", "unknown field");
}
