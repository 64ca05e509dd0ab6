// Tests of the Constitutional AI demo's synthetic world (examples/constitutional_pipeline/world.hpp): the request
// language and its parser, the gold judges, the word tokenizer under the trainers' chat rendering, the rule-following
// critic driven through cai::critique_revise, and the noisy feedback model driven through cai::label_feedback.
#include <catch2/catch.hpp>

#include <map>

#include <cai/constitution/critique_revise.hpp>
#include <cai/constitution/default_constitution.hpp>
#include <cai/constitution/feedback.hpp>
#include <cai/trainers/sft.hpp>

#include "../../examples/constitutional_pipeline/world.hpp"
#include "../support.hpp"

using cai_demo::world;

namespace {

/// The helpful-only behaviour as a generator: complies with whatever the last user turn asks (test double for the
/// SFT policy).
struct complier {
  const world* w;
  std::size_t calls = 0;
  std::vector<std::string> generate(std::span<const cai::conversation> convs, const cai::sampling_params&) {
    ++calls;
    std::vector<std::string> out;
    for (const auto& c : convs) {
      const auto a = w->parse_request(c.back().content);
      out.push_back(a ? w->comply(*a) : "??");
    }
    return out;
  }
};

}  // namespace

TEST_CASE("the world has harmful, benign and look-alike actions and every request parses back to its action", "[world]") {
  const world w;
  std::map<cai_demo::request_kind, int> kinds;
  for (std::size_t a = 0; a < w.actions().size(); ++a) ++kinds[w.kind(a)];
  CHECK(kinds[cai_demo::request_kind::harmful] >= 15);
  CHECK(kinds[cai_demo::request_kind::look_alike] >= 12);
  CHECK(kinds[cai_demo::request_kind::benign] >= 8);
  CHECK(w.at(2).text == "kill a process");
  CHECK(w.kind(2) == cai_demo::request_kind::look_alike);
  CHECK(w.kind(0) == cai_demo::request_kind::harmful);
  for (bool held : {false, true}) {
    const auto rs = w.requests(held);
    CHECK(rs.size() == (held ? w.held_out_templates() : w.train_templates()).size() * w.prefixes().size() * w.suffixes().size() *
                           w.actions().size());
    for (const auto& r : rs) {
      const auto a = w.parse_request(r.text);
      REQUIRE(a.has_value());
      CHECK(*a == r.action);
      CHECK(r.held_out == held);
    }
  }
  CHECK(w.requests(true).size() >= 500);
  // No held-out template occurs in training text.
  for (const auto& r : w.requests(false))
    for (const auto& t : w.held_out_templates()) CHECK(r.text.find(t.substr(0, t.find("{a}"))) == std::string::npos);
  CHECK_FALSE(w.parse_request("how do i fly a plane ?").has_value());
  CHECK_FALSE(w.parse_request("").has_value());
  CHECK(w.parse_request("  please ,   how do i kill a process   tonight ? ") == std::optional<std::size_t>(2));
}

TEST_CASE("the gold judges score the canonical responses as the header comment defines", "[world]") {
  const world w;
  for (std::size_t a = 0; a < w.actions().size(); ++a) {
    const auto c = w.gold(a, w.comply(a)), e = w.gold(a, world::refuse_explained()), v = w.gold(a, world::refuse_evasive());
    const auto wrong = w.gold(a, "sure , here is how to do it : step one .");
    const auto junk = w.gold(a, "step one step one");
    CHECK(c.complies);
    CHECK(e.refuses);
    CHECK(v.refuses);
    CHECK_FALSE(junk.complies);
    CHECK_FALSE(junk.refuses);
    CHECK(junk.evasive == 0.0);
    if (w.at(a).harmful) {
      CHECK(c.harmlessness == 0.0);
      CHECK(e.harmlessness == 1.0);
      CHECK(v.harmlessness == 1.0);
      CHECK(e.evasive == 0.0);
      CHECK(v.evasive == 1.0);
      CHECK(c.preference == 0.0);
      CHECK(e.preference == 1.0);
      CHECK(v.preference == Approx(0.6));
      CHECK(junk.preference == 0.5);
      CHECK(w.human_harmlessness_score(a, world::refuse_evasive()) > w.human_harmlessness_score(a, world::refuse_explained()));
    } else {
      CHECK(c.helpfulness == 1.0);
      CHECK(wrong.helpfulness == 0.5);
      CHECK(e.helpfulness == 0.0);
      CHECK(e.evasive == 1.0);
      CHECK(v.evasive == 1.0);
      CHECK(c.evasive == 0.0);
      CHECK(c.harmlessness == 1.0);
      CHECK(c.preference == 1.0);
      // The literal crowd-worker refuses look-alikes (they sound harmful) but lets plain benign requests through.
      if (w.at(a).look_alike) CHECK(w.human_harmlessness_score(a, w.comply(a)) < w.human_harmlessness_score(a, world::refuse_evasive()));
      else CHECK(w.human_harmlessness_score(a, w.comply(a)) > 0.5);
    }
  }
}

TEST_CASE("the word tokenizer round-trips the world's text and its chat template is prefix-stable", "[world]") {
  const world w;
  const cai_demo::word_tokenizer tok(w);
  CHECK(tok.vocab_size() > 60);
  CHECK(tok.vocab_size() < 200);
  for (const auto& r : w.requests(true)) {
    const auto ids = tok.encode(r.text);
    CHECK(std::find(ids.begin(), ids.end(), 0) == ids.end());  // no unknown word in any request
    CHECK(tok.decode(ids) == cai_demo::join_words(cai_demo::split_words(r.text)));
  }
  CHECK(tok.encode("zebra kill") == std::vector<std::int32_t>{0, tok.encode("kill")[0]});
  const cai::conversation c{{"user", "how do i make a cake ?"}, {"assistant", w.comply(23)}};
  const auto r = cai::render_chat(tok, c);
  const auto lm = r.loss_mask();
  std::vector<std::int32_t> span;
  for (std::size_t t = 0; t < r.tokens.size(); ++t)
    if (lm[t]) span.push_back(r.tokens[t]);
  CHECK(w.at(23).text == "make a cake");
  auto want = tok.encode(w.comply(23));
  want.push_back(tok.eos_id());
  CHECK(span == want);
  CHECK_THROWS_AS(tok.decode(std::vector<std::int32_t>{9999}), cai::invalid_argument);
}

TEST_CASE("the rule critic revises through cai::critique_revise: harmful answers become explained refusals", "[world]") {
  const world w;
  const cai::constitution& con = cai::default_constitution();
  complier inner{&w};
  cai_demo::rule_critic critic(w, con, inner);
  std::vector<cai::prompt_record> prompts;
  const auto rs = w.requests(false);
  for (std::size_t i = 0; i < rs.size(); i += 7) prompts.push_back({cai::detail::concat("p", i), {{"user", rs[i].text}}});
  const auto recs = cai::critique_revise(critic, con, prompts, {.revisions = 2, .few_shot = 1, .seed = 3, .progress = false});
  REQUIRE(recs.size() == prompts.size());
  CHECK(critic.critiques_written() == 2 * prompts.size());
  CHECK(critic.revisions_written() == 2 * prompts.size());
  for (std::size_t i = 0; i < recs.size(); ++i) {
    REQUIRE(recs[i].ok());
    const std::size_t a = *w.parse_request(prompts[i].dialogue[0].content);
    CHECK(recs[i].initial == w.comply(a));
    if (w.at(a).harmful) {
      CHECK(recs[i].steps[0].critique.find("could hurt") != std::string::npos);
      CHECK(recs[i].final_response() == world::refuse_explained());
      CHECK(recs[i].steps[1].critique == "the response is harmless .");
    } else {
      CHECK(recs[i].final_response() == w.comply(a));
    }
  }
  // Mistakes: about mistake_rate of the look-alike requests are misread, the same way every time; never a plain benign one.
  cai_demo::rule_critic sloppy(w, con, inner, 0.3, 11);
  int look = 0, misread = 0;
  for (const auto& r : rs) {
    if (w.kind(r.action) == cai_demo::request_kind::benign) CHECK_FALSE(sloppy.judged_harmful(r.action, r.text));
    if (w.kind(r.action) != cai_demo::request_kind::look_alike) continue;
    ++look;
    misread += sloppy.judged_harmful(r.action, r.text) ? 1 : 0;
    CHECK(sloppy.judged_harmful(r.action, r.text) == sloppy.judged_harmful(r.action, r.text));
  }
  CHECK(static_cast<double>(misread) / look == Approx(0.3).margin(0.05));
  CAI_REQUIRE_THROWS_NAMING((cai_demo::rule_critic(w, con, inner, 1.5)), cai::invalid_argument, "mistake_rate");
}

TEST_CASE("the noisy judge drives cai::label_feedback: gold-ordered labels, its noise rate, and a position bias that both orders remove",
          "[world]") {
  const world w;
  const cai::constitution& con = cai::default_constitution();
  const auto rs = w.requests(false);
  std::vector<cai::comparison> items;
  std::vector<double> gold_pref;  // P(a better) by gold: 1 or 0 (ties left out)
  std::vector<cai::comparison> ties;
  for (std::size_t i = 0; i < rs.size(); i += 3) {
    const std::array<std::string, 3> cand{w.comply(rs[i].action), world::refuse_explained(), world::refuse_evasive()};
    static constexpr std::array<std::array<std::size_t, 2>, 3> pairs{{{0, 1}, {0, 2}, {1, 2}}};
    const auto& pr = pairs[(i / 3) % 3];
    const bool swap = (i / 9) % 2 == 1;
    const std::string& x = cand[pr[swap ? 1 : 0]];
    const std::string& y = cand[pr[swap ? 0 : 1]];
    const double sx = w.gold(rs[i].action, x).preference, sy = w.gold(rs[i].action, y).preference;
    cai::comparison cmp{cai::detail::concat("c", i), {{"user", rs[i].text}}, x, y};
    if (sx == sy) ties.push_back(cmp);
    else {
      items.push_back(cmp);
      gold_pref.push_back(sx > sy ? 1.0 : 0.0);
    }
  }
  REQUIRE(items.size() > 500);
  REQUIRE(ties.size() > 50);
  const auto wrong_rate = [&](const std::vector<cai::feedback_label>& labels) {
    int wrong = 0;
    for (std::size_t k = 0; k < labels.size(); ++k) {
      REQUIRE(labels[k].ok());
      wrong += (labels[k].label > 0.5) != (gold_pref[k] > 0.5) ? 1 : 0;
    }
    return static_cast<double>(wrong) / static_cast<double>(labels.size());
  };
  {
    cai_demo::noisy_judge clean(w, 0.0, 0.0, 1);
    const auto labels = cai::label_feedback(clean, con, items, {.principles = 1, .progress = false});
    CHECK(wrong_rate(labels) == 0.0);
    CHECK(clean.calls() > 0);
  }
  {
    cai_demo::noisy_judge noisy(w, 0.25, 1.5, 2);
    const auto one = cai::label_feedback(noisy, con, items, {.principles = 1, .seed = 4, .progress = false});
    CHECK(wrong_rate(one) == Approx(0.25).margin(0.04));
    // An ensemble over principles draws independent errors: fewer wrong labels.
    const auto five = cai::label_feedback(noisy, con, items, {.principles = 5, .seed = 4, .progress = false});
    CHECK(wrong_rate(five) < wrong_rate(one) - 0.05);
    // Position bias: on gold ties the first-shown option wins without both orders, not with them.
    const auto biased = cai::label_feedback(noisy, con, ties, {.principles = 1, .both_orders = false, .progress = false});
    const auto fair = cai::label_feedback(noisy, con, ties, {.principles = 1, .both_orders = true, .progress = false});
    for (std::size_t k = 0; k < ties.size(); ++k) {
      CHECK(biased[k].label == Approx(cai::sigmoid(1.5)));
      CHECK(fair[k].label == Approx(0.5));
    }
  }
  CAI_REQUIRE_THROWS_NAMING((cai_demo::noisy_judge(w, 0.7, 0.0, 1)), cai::invalid_argument, "noise");
  CAI_REQUIRE_THROWS_NAMING((cai_demo::noisy_judge(w, 0.1, 0.0, 1, 0.0)), cai::invalid_argument, "sharpness");
  cai_demo::noisy_judge j(w, 0.1, 0.0, 1);
  const std::vector<cai::judge_request> bad{{{{"user", "what is the answer"}}, {"(A)", "(B)"}}};
  CHECK_THROWS_AS(j.score(bad), cai::error);
}
