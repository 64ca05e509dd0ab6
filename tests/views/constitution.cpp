// Tests for cai/views/constitution.hpp: the lazy stages run nothing until iterated, run one batch at a time, and give
// exactly the records of the eager functions; the conversions keep only successful records.
#include <cai/constitution/default_constitution.hpp>
#include <cai/views/constitution.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace {

struct scripted_generator {
  int calls = 0;
  std::vector<std::string> generate(std::span<const cai::conversation> convs, const cai::sampling_params& sp) {
    ++calls;
    std::vector<std::string> out;
    for (const auto& c : convs) {
      if (c.back().content.find("poison") != std::string::npos) throw std::runtime_error("cannot answer");
      out.push_back("reply#" + std::to_string(c.size()) + ":" + c.back().content.substr(0, 8) + "@" + std::to_string(sp.seed % 997));
    }
    return out;
  }
};

/// Prefers the option that mentions "reply#1" less often: a deterministic, content-dependent judge.
struct scripted_judge {
  std::vector<std::vector<double>> score(std::span<const cai::judge_request> rs) {
    std::vector<std::vector<double>> out;
    for (const auto& r : rs) {
      const std::string& q = r.prompt.back().content;
      const auto a = q.find("(A) "), b = q.find("(B) ");
      out.push_back({-static_cast<double>((q.substr(a, b - a).size() % 7)) * 0.1, -static_cast<double>((q.substr(b).size() % 5)) * 0.1});
    }
    return out;
  }
};

std::vector<cai::prompt_record> prompts(int n) {
  std::vector<cai::prompt_record> ps;
  for (int i = 0; i < n; ++i) ps.push_back({"p" + std::to_string(i), {{"user", (i == 3 ? "poison " : "question ") + std::to_string(i)}}});
  return ps;
}

}  // namespace

TEST_CASE("views::critique_revise is lazy, batched, and equal to the eager critique_revise", "[constitution][views]") {
  const auto ps = prompts(7);
  const cai::critique_revise_options o{.revisions = 2, .seed = 11, .batch_size = 3, .retries = 0};
  scripted_generator g;
  auto v = ps | cai::views::critique_revise(g, cai::default_constitution(), o);
  CHECK(g.calls == 0);  // building the pipeline runs nothing
  auto it = ranges::begin(v);
  CHECK(g.calls >= 5);  // the first batch: initial + 2 x (critique, revision) stages
  CHECK(g.calls < 10);  // ... and not the second
  (void)it;
  const auto lazy = ps | cai::views::critique_revise(g, cai::default_constitution(), o) | ranges::to<std::vector<cai::critique_transcript>>();
  scripted_generator g2;
  const auto eager = cai::critique_revise(g2, cai::default_constitution(), std::span<const cai::prompt_record>(ps), o);
  CHECK(lazy == eager);
  REQUIRE(lazy.size() == 7);
  CHECK(!lazy[3].ok());  // the poisoned prompt fails alone
  const auto pairs = lazy | cai::views::to_preference_pairs | ranges::to<std::vector<cai::preference_record>>();
  CHECK(pairs.size() == 6);
  CHECK(pairs[0].chosen == lazy[0].final_response());
  CHECK(pairs[0].rejected == lazy[0].initial);
  const auto sft = lazy | cai::views::to_sft | ranges::to<std::vector<cai::sft_record>>();
  CHECK(sft.size() == 6);
}

TEST_CASE("views compose critique-revise into AI-feedback labels, equal to the eager labeller", "[constitution][views][rlaif]") {
  const auto ps = prompts(5);
  scripted_generator g;
  scripted_judge j;
  const cai::feedback_options fo{.principles = 3, .seed = 5, .batch_size = 2};
  // A chained stage reads an input range (the batches of the stage before are produced once, on demand).
  auto chained = ps | cai::views::critique_revise(g, cai::default_constitution(), {.batch_size = 2, .retries = 0}) |
                 cai::views::to_comparisons | cai::views::label_feedback(j, cai::default_constitution(), fo);
  std::vector<cai::feedback_label> labels;
  for (auto&& l : chained) labels.push_back(l);
  REQUIRE(labels.size() == 4);  // the failed prompt has no comparison
  std::vector<cai::comparison> cmp;
  scripted_generator g2;
  for (const auto& t : cai::critique_revise(g2, cai::default_constitution(), std::span<const cai::prompt_record>(ps), {.batch_size = 2, .retries = 0}))
    if (t.ok()) cmp.push_back({t.id, t.prompt, t.final_response(), t.initial});
  scripted_judge j2;
  CHECK(labels == cai::label_feedback(j2, cai::default_constitution(), std::span<const cai::comparison>(cmp), fo));
  for (const auto& l : labels) CHECK((l.ok() && l.label > 0.0 && l.label < 1.0));
  CHECK_THROWS_AS(cai::views::critique_revise(g, cai::default_constitution(), {.batch_size = 0}), cai::invalid_argument);
}
