// Tests for cai/constitution/critique_revise.hpp (SL-CAI) with deterministic scripted generators whose completions
// encode the conversation length, its last message and the sampling seed:
//   * the conversations sent to the generator follow the documented layout exactly (initial; critique with the
//     constitution's few-shot exchanges; revision), one generate() call per stage per batch;
//   * principles and few-shot picks depend only on (seed, id) — not on batch size, position or neighbours — and are
//     drawn uniformly over the default constitution; transcripts export as SFT and preference records;
//   * faults: retried calls, a prompt that always fails (only its record carries the error), wrong completion counts;
//   * transcripts round trip through JSON; bad options and prompts are rejected naming the argument;
//   * the resumable pipeline: a child process running run_critique_revise is killed with SIGKILL at several points
//     (and a half-written record is appended), then resumed — the records equal those of an uninterrupted run.
#include <cai/constitution/critique_revise.hpp>
#include <cai/constitution/default_constitution.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "../file_support.hpp"
#include "../support.hpp"

namespace {

namespace fs = std::filesystem;
using cai_test::slurp;

/// This file's temporary JSONL files.
struct temp_file : cai_test::temp_file {
  explicit temp_file(const std::string& stem) : cai_test::temp_file("cr", stem) {}
};
using json = nlohmann::json;
using cai::conversation;

/// A completion that encodes what the generator saw: the conversation length, the sampling seed, optionally the
/// number of conversations in the call (a batched generator whose output depends on its batch), and the last message.
std::string reply(const conversation& c, std::uint64_t seed, std::size_t batch = 0) {
  std::string s = "[n=" + std::to_string(c.size()) + " seed=" + std::to_string(seed);
  if (batch != 0) s += " of=" + std::to_string(batch);
  return s + "]\nre: " + (c.empty() ? std::string() : c.back().content);
}

/// The deterministic scripted generator: records every call (conversations and sampling parameters).
struct scripted_generator {
  bool record = true;
  bool encode_batch = false;
  int sleep_ms = 0;
  std::vector<std::vector<conversation>> calls;
  std::vector<cai::sampling_params> params;

  std::vector<std::string> generate(std::span<const conversation> convs, const cai::sampling_params& sp) {
    if (sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    if (record) {
      calls.emplace_back(convs.begin(), convs.end());
      params.push_back(sp);
    }
    std::vector<std::string> out;
    for (const auto& c : convs) out.push_back(reply(c, sp.seed, encode_batch ? convs.size() : 0));
    return out;
  }
};
static_assert(cai::text_generator<scripted_generator>);

/// Throws on the calls whose (0-based) index is in fail_on, otherwise answers like scripted_generator.
struct flaky_generator {
  std::set<std::size_t> fail_on;
  std::size_t count = 0;
  scripted_generator inner{};
  std::vector<std::string> generate(std::span<const conversation> convs, const cai::sampling_params& sp) {
    const std::size_t k = count++;
    if (fail_on.count(k)) throw std::runtime_error("flaky call " + std::to_string(k));
    return inner.generate(convs, sp);
  }
};

/// Throws whenever a conversation holds a message containing `token` (and, if set, ends with a message starting
/// with `stage_prefix`): a prompt the generator can never answer.
struct poisoned_generator {
  std::string token;
  std::string stage_prefix;
  std::size_t count = 0, empty_calls = 0;
  scripted_generator inner{};
  std::vector<std::string> generate(std::span<const conversation> convs, const cai::sampling_params& sp) {
    ++count;
    empty_calls += convs.empty() ? 1 : 0;
    for (const auto& c : convs) {
      const bool has = std::any_of(c.begin(), c.end(), [&](const cai::chat_message& m) { return cai_test::contains(m.content, token); });
      if (has && c.back().content.rfind(stage_prefix, 0) == 0) throw std::runtime_error("cannot answer " + token);
    }
    return inner.generate(convs, sp);
  }
};

/// Returns the wrong number of completions: one too many for batched calls, or none at all.
struct miscounting_generator {
  bool always_empty = false;
  std::size_t count = 0, empty_calls = 0;
  scripted_generator inner{};
  std::vector<std::string> generate(std::span<const conversation> convs, const cai::sampling_params& sp) {
    ++count;
    empty_calls += convs.empty() ? 1 : 0;
    if (always_empty) return {};
    std::vector<std::string> out = inner.generate(convs, sp);
    if (convs.size() > 1) out.push_back("extra");
    return out;
  }
};

/// A generator that answers at once and records nothing (for runs over many prompts).
struct cheap_generator {
  std::vector<std::string> generate(std::span<const conversation> convs, const cai::sampling_params&) {
    return std::vector<std::string>(convs.size(), "ok");
  }
};

const char* const small_constitution = R"({
  "format": "cai.constitution/1",
  "name": "small",
  "principles": [
    {"id": "a", "critique_request": "Critique A.", "revision_request": "Revise A.", "comparison_question": "A?"},
    {"id": "b", "critique_request": "Critique B.", "revision_request": "Revise B.", "comparison_question": "B?"},
    {"id": "c", "critique_request": "Critique C.", "revision_request": "Revise C.", "comparison_question": "C?"}
  ],
  "critique_examples": [
    {"principle": "a", "conversation": [{"role": "user", "content": "Ex1 question"}], "response": "Ex1 response", "critique": "Ex1 critique", "revision": "Ex1 revision"},
    {"critique_request": "Inline critique.", "revision_request": "Inline revision.",
     "conversation": [{"role": "user", "content": "Ex2 q1"}, {"role": "assistant", "content": "Ex2 a1"}, {"role": "user", "content": "Ex2 q2"}],
     "response": "Ex2 response", "critique": "Ex2 critique", "revision": "Ex2 revision"},
    {"principle": "c", "conversation": [{"role": "user", "content": "Ex3 question"}], "response": "Ex3 response", "critique": "Ex3 critique", "revision": "Ex3 revision"}
  ]
})";

const cai::constitution& small() {
  static const cai::constitution c = cai::parse_constitution(small_constitution, "small.json");
  return c;
}

std::vector<cai::prompt_record> layout_prompts() {
  return {
      {"alpha", {{"user", "How do I bake bread?"}}},
      {"beta", {{"user", "Hi"}, {"assistant", "Hello."}, {"user", "What is the capital of France?"}}},
      {"gamma", {{"user", "Write a haiku\nabout rain \xe2\x98\x94."}}},
      {"delta", {{"system", "Be brief."}, {"user", "Why is the sky blue?"}}},
      {"epsilon", {{"user", "Tell me a secret."}}},
  };
}

/// n prompts with ids "q-000", ... each a single user turn naming its id.
std::vector<cai::prompt_record> many_prompts(std::size_t n, const std::string& prefix = "q-") {
  std::vector<cai::prompt_record> v;
  for (std::size_t i = 0; i < n; ++i) {
    std::string id = std::to_string(i);
    id = prefix + std::string(3 - std::min<std::size_t>(3, id.size()), '0') + id;
    if (i % 3 == 1) v.push_back({id, {{"user", "Earlier question " + id}, {"assistant", "Earlier answer."}, {"user", "Question " + id + "?"}}});
    else v.push_back({id, {{"user", "Question " + id + "?"}}});
  }
  return v;
}

/// A few-shot exchange as the header documents it, built independently of the library.
conversation exchange(const cai::critique_example& e) {
  conversation x = e.dialogue;
  x.push_back({"assistant", e.response});
  x.push_back({"user", e.critique_request});
  x.push_back({"assistant", e.critique});
  x.push_back({"user", e.revision_request});
  x.push_back({"assistant", e.revision});
  return x;
}

/// Splits conv[begin, end) into whole few-shot exchanges; the indices of the examples, or nullopt if it is not
/// such a concatenation.
std::optional<std::vector<std::size_t>> parse_shots(const cai::constitution& c, const conversation& conv, std::size_t begin, std::size_t end) {
  std::vector<std::size_t> shots;
  std::size_t pos = begin;
  while (pos < end) {
    bool matched = false;
    for (std::size_t e = 0; e < c.critique_examples.size() && !matched; ++e) {
      const conversation x = exchange(c.critique_examples[e]);
      if (pos + x.size() <= end && std::equal(x.begin(), x.end(), conv.begin() + static_cast<std::ptrdiff_t>(pos))) {
        shots.push_back(e);
        pos += x.size();
        matched = true;
      }
    }
    if (!matched) return std::nullopt;
  }
  return shots;
}

/// Per record id: the few-shot section (the messages before the dialogue) of each critique conversation sent.
/// Needs a run without faults (every batch makes 1 + 2 * revisions calls).
std::map<std::string, std::vector<conversation>> few_shot_sections(const scripted_generator& g, const std::vector<cai::prompt_record>& prompts,
                                                                   std::size_t revisions) {
  std::map<std::string, std::vector<conversation>> out;
  const std::size_t per_batch = 1 + 2 * revisions;
  for (std::size_t k = 0; k < g.calls.size(); ++k) {
    const std::size_t stage = k % per_batch;
    if (stage % 2 == 0) continue;  // initial or revision
    for (const conversation& conv : g.calls[k]) {
      bool found = false;
      for (const auto& p : prompts) {
        const std::size_t d = p.dialogue.size();
        if (conv.size() < d + 2) continue;
        const auto at = conv.begin() + static_cast<std::ptrdiff_t>(conv.size() - d - 2);
        if (std::equal(p.dialogue.begin(), p.dialogue.end(), at)) {
          out[p.id].emplace_back(conv.begin(), at);
          found = true;
          break;
        }
      }
      CHECK(found);
    }
  }
  return out;
}

std::vector<std::string> principles_of(const cai::critique_transcript& t) {
  std::vector<std::string> v;
  for (const auto& s : t.steps) v.push_back(s.principle);
  return v;
}



std::size_t count_lines(const fs::path& p) {
  const std::string s = slurp(p);
  return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n'));
}

/// The records of a pipeline output file by id; duplicates counted.
struct record_set {
  std::map<std::string, json> by_id;
  std::size_t lines = 0, duplicates = 0;
};
record_set read_records(const fs::path& p) {
  record_set r;
  cai::read_jsonl(p, [&](const json& j, std::size_t) {
    ++r.lines;
    if (!r.by_id.emplace(j.at("id").get<std::string>(), j).second) ++r.duplicates;
  });
  return r;
}

cai::critique_revise_options quiet(cai::critique_revise_options o) {
  o.progress = false;
  return o;
}

}  // namespace

TEST_CASE("critique-revise sends the documented conversations, one generate call per stage per batch", "[constitution]") {
  const cai::constitution& c = small();
  const auto prompts = layout_prompts();
  cai::critique_revise_options o;
  o.revisions = 2;
  o.few_shot = 2;
  o.seed = 17;
  o.batch_size = 2;
  o.system_prompt = "You are a careful assistant.";
  o.sampling.temperature = 0.7f;
  o.sampling.top_k = 40;
  o.sampling.top_p = 0.9f;
  o.sampling.max_new_tokens = 64;
  o.sampling.seed = 999;
  o.sampling.stop = {"\n\nHuman:"};
  scripted_generator g;
  const auto recs = cai::critique_revise(g, c, prompts, o);
  REQUIRE(recs.size() == prompts.size());

  // 3 batches (2, 2, 1) x (initial + 2 x (critique, revision)).
  const std::size_t per_batch = 1 + 2 * o.revisions;
  REQUIRE(g.calls.size() == 3 * per_batch);
  std::set<std::uint64_t> seeds;
  for (std::size_t k = 0; k < g.calls.size(); ++k) {
    INFO("call " << k);
    CHECK(g.calls[k].size() == (k / per_batch < 2 ? 2u : 1u));
    const auto& sp = g.params[k];
    CHECK(sp.temperature == 0.7f);
    CHECK(sp.top_k == 40);
    CHECK(sp.top_p == 0.9f);
    CHECK(sp.max_new_tokens == 64);
    CHECK(sp.stop == std::vector<std::string>{"\n\nHuman:"});
    seeds.insert(sp.seed);
  }
  CHECK(seeds.size() == g.calls.size());  // every call samples with its own seed

  const conversation sys = {{"system", o.system_prompt}};
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    INFO("record " << prompts[i].id);
    const auto& t = recs[i];
    const auto& d = prompts[i].dialogue;
    const std::size_t b = i / 2, pos = i % 2;
    const auto call = [&](std::size_t stage) -> const conversation& { return g.calls[b * per_batch + stage].at(pos); };
    const auto seed = [&](std::size_t stage) { return g.params[b * per_batch + stage].seed; };
    CHECK(t.id == prompts[i].id);
    CHECK(t.prompt == d);
    CHECK(t.ok());

    // initial: [system] + dialogue
    conversation initial = sys;
    initial.insert(initial.end(), d.begin(), d.end());
    CHECK(call(0) == initial);
    CHECK(t.initial == reply(initial, seed(0)));

    // The few-shot exchanges: two different examples, the same ones in every round.
    const conversation& first = call(1);
    REQUIRE(first.size() >= 1 + d.size() + 2);
    const auto shots = parse_shots(c, first, 1, first.size() - d.size() - 2);
    REQUIRE(shots.has_value());
    REQUIRE(shots->size() == 2);
    CHECK((*shots)[0] != (*shots)[1]);

    REQUIRE(t.steps.size() == o.revisions);
    for (std::size_t r = 0; r < o.revisions; ++r) {
      INFO("round " << r);
      const auto& s = t.steps[r];
      const cai::principle& p = c.find(s.principle);
      CHECK(s.critique_request == p.critique_request);
      CHECK(s.revision_request == p.revision_request);
      // critique: [system] + exchanges + dialogue + assistant(current response) + user(critique request)
      conversation crit = sys;
      for (std::size_t e : *shots) {
        const conversation x = exchange(c.critique_examples[e]);
        crit.insert(crit.end(), x.begin(), x.end());
      }
      crit.insert(crit.end(), d.begin(), d.end());
      crit.push_back({"assistant", r == 0 ? t.initial : t.steps[r - 1].revision});
      crit.push_back({"user", p.critique_request});
      CHECK(call(1 + 2 * r) == crit);
      CHECK(s.critique == reply(crit, seed(1 + 2 * r)));
      // revision: the critique conversation + assistant(critique) + user(revision request)
      conversation rev = crit;
      rev.push_back({"assistant", s.critique});
      rev.push_back({"user", p.revision_request});
      CHECK(call(2 + 2 * r) == rev);
      CHECK(s.revision == reply(rev, seed(2 + 2 * r)));
    }
  }

  // Without a system prompt there is no system turn; with few_shot = 0 no exchanges; with few_shot above the
  // number of examples every example once.
  for (std::size_t shots : {std::size_t{0}, std::size_t{5}}) {
    INFO("few_shot " << shots);
    cai::critique_revise_options o2;
    o2.few_shot = shots;
    scripted_generator g2;
    const std::vector<cai::prompt_record> one = {prompts[0]};
    const auto r2 = cai::critique_revise(g2, c, one, o2);
    REQUIRE(g2.calls.size() == 3);
    CHECK(g2.calls[0][0] == prompts[0].dialogue);
    const conversation& crit = g2.calls[1][0];
    const auto got = parse_shots(c, crit, 0, crit.size() - prompts[0].dialogue.size() - 2);
    REQUIRE(got.has_value());
    if (shots == 0) {
      CHECK(got->empty());
    } else {
      CHECK(std::set<std::size_t>(got->begin(), got->end()) == std::set<std::size_t>{0, 1, 2});
    }
    CHECK(r2[0].ok());
  }
  // The seeds sent do not depend on the prompts' content or on sampling.seed (which is replaced per call).
  scripted_generator g3;
  cai::critique_revise_options o3 = o;
  o3.sampling.seed = 123456;
  (void)cai::critique_revise(g3, c, many_prompts(5), o3);
  REQUIRE(g3.params.size() == g.params.size());
  for (std::size_t k = 0; k < g.params.size(); ++k) CHECK(g3.params[k].seed == g.params[k].seed);
  // No prompts: no calls.
  scripted_generator g4;
  CHECK(cai::critique_revise(g4, c, std::vector<cai::prompt_record>{}, o).empty());
  CHECK(g4.calls.empty());
}

TEST_CASE("principles and few-shot picks depend only on the seed and the record id", "[constitution]") {
  const cai::constitution& c = cai::default_constitution();
  const auto prompts = many_prompts(12);
  cai::critique_revise_options o;
  o.revisions = 3;
  o.few_shot = 2;
  o.seed = 11;

  struct run {
    std::map<std::string, std::vector<std::string>> principles;
    std::map<std::string, std::vector<conversation>> shots;
  };
  const auto go = [&](const std::vector<cai::prompt_record>& ps, std::size_t batch_size, std::uint64_t seed) {
    cai::critique_revise_options oo = o;
    oo.batch_size = batch_size;
    oo.seed = seed;
    scripted_generator g;
    const auto recs = cai::critique_revise(g, c, ps, oo);
    run r;
    for (const auto& t : recs) {
      CHECK(t.ok());
      CHECK(t.steps.size() == 3);
      r.principles[t.id] = principles_of(t);
    }
    r.shots = few_shot_sections(g, ps, oo.revisions);
    return r;
  };
  const run all = go(prompts, 12, 11);
  REQUIRE(all.principles.size() == 12);
  REQUIRE(all.shots.size() == 12);
  for (const auto& [id, sections] : all.shots) {
    REQUIRE(sections.size() == 3);  // one critique per round, always with the same examples
    CHECK(sections[1] == sections[0]);
    CHECK(sections[2] == sections[0]);
    const auto picks = parse_shots(c, sections[0], 0, sections[0].size());
    REQUIRE(picks.has_value());
    CHECK(picks->size() == 2);
  }

  std::vector<cai::prompt_record> reversed(prompts.rbegin(), prompts.rend());
  const std::vector<run> others = {go(prompts, 5, 11), go(reversed, 3, 11), go(prompts, 1, 11)};
  for (const run& r : others) {
    CHECK(r.principles == all.principles);
    CHECK(r.shots == all.shots);
  }
  // Each prompt on its own, with different neighbours.
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    INFO(prompts[i].id);
    const run alone = go({prompts[i]}, 4, 11);
    CHECK(alone.principles.at(prompts[i].id) == all.principles.at(prompts[i].id));
    CHECK(alone.shots.at(prompts[i].id) == all.shots.at(prompts[i].id));
    auto mixed = many_prompts(3, "other-");
    mixed.insert(mixed.begin() + 1, prompts[i]);
    const run among = go(mixed, 2, 11);
    CHECK(among.principles.at(prompts[i].id) == all.principles.at(prompts[i].id));
  }
  // Another seed draws other principles (3 draws from 16: almost every record differs) and other examples.
  const run other_seed = go(prompts, 12, 12);
  std::size_t differ = 0, shots_differ = 0;
  for (const auto& p : prompts) {
    differ += other_seed.principles.at(p.id) != all.principles.at(p.id) ? 1 : 0;
    shots_differ += other_seed.shots.at(p.id) != all.shots.at(p.id) ? 1 : 0;
  }
  CHECK(differ >= 10);
  CHECK(shots_differ >= 1);
  // The same run twice gives the same transcripts.
  scripted_generator g1, g2;
  CHECK(cai::critique_revise(g1, c, prompts, o) == cai::critique_revise(g2, c, prompts, o));
}

TEST_CASE("transcripts give the final revision as SFT target and the pair (final, initial) as preference", "[constitution]") {
  const cai::constitution& c = cai::default_constitution();
  cai::critique_revise_options o;
  o.revisions = 3;
  o.seed = 5;
  scripted_generator g;
  const auto prompts = layout_prompts();
  const auto recs = cai::critique_revise(g, c, prompts, o);
  REQUIRE(recs.size() == prompts.size());
  for (const auto& t : recs) {
    INFO(t.id);
    REQUIRE(t.steps.size() == 3);
    CHECK(t.final_response() == t.steps[2].revision);
    CHECK(t.final_response() != t.initial);
    const cai::sft_record s = t.to_sft();
    CHECK(s.prompt == t.prompt);
    CHECK(s.response == t.steps[2].revision);
    const cai::preference_record p = t.to_preference();
    CHECK(p.prompt == t.prompt);
    CHECK(p.chosen == t.steps[2].revision);
    CHECK(p.rejected == t.initial);
    CHECK_FALSE(p.label.has_value());
    // Export: messages always; hh and text when the prompt has only user and assistant turns.
    const json m = cai::to_json(p, cai::dataset_format::messages);
    CHECK(m["chosen"][0]["content"] == t.steps[2].revision);
    CHECK(m["rejected"][0]["content"] == t.initial);
    CHECK(cai::preference_from_json(m) == p);
    CHECK(cai::sft_from_json(cai::to_json(s, cai::dataset_format::messages)) == s);
    const bool has_system = std::any_of(t.prompt.begin(), t.prompt.end(), [](const cai::chat_message& x) { return x.role == "system"; });
    if (has_system) {
      CHECK_THROWS_AS(cai::to_json(p, cai::dataset_format::hh), cai::invalid_argument);
    } else {
      const json hh = cai::to_json(p, cai::dataset_format::hh);
      CHECK(hh["chosen"] == cai::hh_transcript(t.prompt) + "\n\nAssistant: " + t.steps[2].revision);
      CHECK(cai::preference_from_json(hh) == p);
      CHECK(cai::preference_from_json(cai::to_json(p, cai::dataset_format::text)) == p);
      CHECK(cai::sft_from_json(cai::to_json(s, cai::dataset_format::text)) == s);
    }
  }
  // Without steps the final response is the initial one.
  cai::critique_transcript bare;
  bare.prompt = {{"user", "q"}};
  bare.initial = "first";
  CHECK(bare.final_response() == "first");
  CHECK(bare.to_sft().response == "first");
}

TEST_CASE("principles are drawn uniformly from the default constitution over many ids", "[constitution]") {
  const cai::constitution& c = cai::default_constitution();
  const std::size_t n = 1600;
  cai::critique_revise_options o;
  o.revisions = 2;
  o.few_shot = 1;
  o.seed = 99;
  o.batch_size = 200;
  cheap_generator g;
  const auto recs = cai::critique_revise(g, c, many_prompts(n, "u-"), o);
  REQUIRE(recs.size() == n);
  std::map<std::string, std::size_t> counts;
  std::size_t same_twice = 0;
  for (const auto& t : recs) {
    REQUIRE(t.steps.size() == 2);
    for (const auto& s : t.steps) ++counts[s.principle];
    same_twice += t.steps[0].principle == t.steps[1].principle ? 1 : 0;
  }
  REQUIRE(counts.size() == c.principles.size());  // every principle drawn
  const double expected = static_cast<double>(2 * n) / static_cast<double>(c.principles.size());
  double chi2 = 0.0;
  for (const auto& [id, k] : counts) chi2 += (static_cast<double>(k) - expected) * (static_cast<double>(k) - expected) / expected;
  INFO("chi-square " << chi2 << " (15 degrees of freedom; mean 15, P(> 60) ~ 1e-7)");
  CHECK(chi2 < 60.0);
  // Rounds draw independently: the same principle twice about 1/16 of the time.
  CHECK(same_twice > n / 32);
  CHECK(same_twice < n / 8);
}

TEST_CASE("a failing generate call is retried and a failing batch falls back to one call per record", "[constitution]") {
  const cai::constitution& c = small();
  const auto prompts = many_prompts(3);
  cai::critique_revise_options o;
  o.revisions = 1;
  o.batch_size = 3;
  o.retries = 2;
  scripted_generator clean;
  const auto expected = cai::critique_revise(clean, c, prompts, o);
  REQUIRE(clean.calls.size() == 3);

  SECTION("a call that fails twice then succeeds") {
    flaky_generator g{{0, 2, 3}};
    CHECK(cai::critique_revise(g, c, prompts, o) == expected);
    CHECK(g.count == 6);  // 3 calls + 3 retries
  }
  SECTION("a call that fails every attempt: the records are run one by one") {
    flaky_generator g{{0, 1, 2}};
    CHECK(cai::critique_revise(g, c, prompts, o) == expected);
    CHECK(g.count == 3 + 3 + 2);  // 3 failed attempts, 3 single calls, then the 2 later stages batched
    for (std::size_t k = 0; k < 3; ++k) CHECK(g.inner.calls[k].size() == 1);
  }
  SECTION("no retries: the first failure falls back at once") {
    cai::critique_revise_options o0 = o;
    o0.retries = 0;
    flaky_generator g{{1}};
    CHECK(cai::critique_revise(g, c, prompts, o0) == expected);
    CHECK(g.count == 1 + 1 + 3 + 1);  // initial, failed critique, 3 single critiques, revision
  }
}

TEST_CASE("a prompt the generator can never answer fails alone and keeps what was produced", "[constitution]") {
  const cai::constitution& c = small();
  auto prompts = many_prompts(4);
  prompts[2].dialogue.back().content += " POISON";
  cai::critique_revise_options o;
  o.revisions = 2;
  o.batch_size = 4;
  o.retries = 2;
  scripted_generator clean;
  const auto expected = cai::critique_revise(clean, c, prompts, o);

  SECTION("failing from the first stage") {
    poisoned_generator g{"POISON", ""};
    const auto recs = cai::critique_revise(g, c, prompts, o);
    REQUIRE(recs.size() == 4);
    for (std::size_t i : {0, 1, 3}) CHECK(recs[i] == expected[i]);
    const auto& bad = recs[2];
    CHECK_FALSE(bad.ok());
    CHECK(bad.id == prompts[2].id);
    CHECK(bad.prompt == prompts[2].dialogue);
    CHECK(cai_test::contains(bad.error, "cannot answer POISON"));
    CHECK(cai_test::contains(bad.error, "3 attempts"));
    CHECK(bad.initial.empty());
    CHECK(bad.steps.empty());
    // initial: 3 batched attempts, 3 good single calls, 3 attempts for the bad one; then 4 batched stages of 3.
    CHECK(g.count == 3 + 3 + 3 + 4);
    for (std::size_t k = g.inner.calls.size() - 4; k < g.inner.calls.size(); ++k) CHECK(g.inner.calls[k].size() == 3);
  }
  SECTION("failing at the first revision") {
    poisoned_generator g{"POISON", "Revise"};
    const auto recs = cai::critique_revise(g, c, prompts, o);
    for (std::size_t i : {0, 1, 3}) CHECK(recs[i] == expected[i]);
    const auto& bad = recs[2];
    CHECK_FALSE(bad.ok());
    CHECK(bad.initial == expected[2].initial);
    REQUIRE(bad.steps.size() == 1);  // no second round
    CHECK(bad.steps[0].principle == expected[2].steps[0].principle);
    CHECK(bad.steps[0].critique == expected[2].steps[0].critique);
    CHECK(bad.steps[0].revision.empty());
  }
  SECTION("a batch whose every record fails makes no further calls") {
    auto ps = prompts;
    ps[0].dialogue.back().content += " POISON";
    ps[1].dialogue.back().content += " POISON";
    cai::critique_revise_options o2 = o;
    o2.batch_size = 2;
    poisoned_generator g{"POISON", ""};
    const auto recs = cai::critique_revise(g, c, ps, o2);
    CHECK_FALSE(recs[0].ok());
    CHECK_FALSE(recs[1].ok());
    CHECK_FALSE(recs[2].ok());
    CHECK(recs[3].ok());
    // batch 0: 3 batched attempts + 2 x 3 single attempts, nothing after; batch 1: the same, then 4 stages for record 3.
    CHECK(g.count == (3 + 6) + (3 + 3 + 1 + 4));
    CHECK(g.empty_calls == 0);
  }
  SECTION("the pipeline writes the failed record once and does not retry it on resume") {
    temp_file f("poison");
    poisoned_generator g{"POISON", ""};
    const auto rep = cai::run_critique_revise(g, c, prompts, f.path, quiet(o));
    CHECK(rep.written == 4);
    CHECK(rep.failed == 1);
    CHECK(rep.skipped == 0);
    const record_set rs = read_records(f.path);
    REQUIRE(rs.by_id.size() == 4);
    CHECK(rs.by_id.at(prompts[2].id).contains("error"));
    CHECK_FALSE(rs.by_id.at(prompts[0].id).contains("error"));
    const std::string before = slurp(f.path);
    g.count = 0;
    const auto again = cai::run_critique_revise(g, c, prompts, f.path, quiet(o));
    CHECK(again.written == 0);
    CHECK(again.skipped == 4);
    CHECK(g.count == 0);
    CHECK(slurp(f.path) == before);
  }
}

TEST_CASE("a generator returning the wrong number of completions counts as a failed call", "[constitution]") {
  const cai::constitution& c = small();
  const auto prompts = many_prompts(3);
  cai::critique_revise_options o;
  o.revisions = 1;
  o.batch_size = 3;
  o.retries = 1;
  scripted_generator clean;
  const auto expected = cai::critique_revise(clean, c, prompts, o);

  miscounting_generator extra;
  CHECK(cai::critique_revise(extra, c, prompts, o) == expected);  // batched calls fail, single calls are right
  CHECK(extra.count == 3 * (2 + 3));

  miscounting_generator none{true};
  const auto recs = cai::critique_revise(none, c, prompts, o);
  REQUIRE(recs.size() == 3);
  for (const auto& t : recs) {
    CHECK_FALSE(t.ok());
    CHECK(cai_test::contains(t.error, "returned 0 completions for 1 conversations"));
    CHECK(cai_test::contains(t.error, "2 attempts"));
  }
  CHECK(none.count == 2 + 3 * 2);  // and no calls for the later stages, where no record is left
  CHECK(none.empty_calls == 0);
}

TEST_CASE("transcripts round trip through JSON and malformed ones are parse errors", "[constitution]") {
  const cai::constitution& c = small();
  auto prompts = layout_prompts();
  prompts[1].dialogue.back().content += " POISON";
  cai::critique_revise_options o;
  o.revisions = 2;
  poisoned_generator g{"POISON", "Revise"};
  const auto recs = cai::critique_revise(g, c, prompts, o);
  REQUIRE_FALSE(recs[1].ok());
  for (const auto& t : recs) {
    INFO(t.id);
    const json j = cai::to_json(t);
    CHECK(j["id"] == t.id);
    CHECK(j["initial"] == t.initial);
    CHECK(j["steps"].size() == t.steps.size());
    CHECK(j.contains("error") == !t.ok());
    CHECK(cai::transcript_from_json(j) == t);
    CHECK(cai::transcript_from_json(json::parse(j.dump())) == t);
  }
  json j = cai::to_json(recs[0]);
  CAI_REQUIRE_THROWS_NAMING((cai::transcript_from_json(json::array())), cai::parse_error, "expected an object");
  json k = j;
  k.erase("steps");
  CAI_REQUIRE_THROWS_NAMING((cai::transcript_from_json(k)), cai::parse_error, "'steps'");
  k = j;
  k.erase("id");
  CAI_REQUIRE_THROWS_NAMING((cai::transcript_from_json(k)), cai::parse_error, "'id'");
  k = j;
  k["steps"][0].erase("revision");
  CAI_REQUIRE_THROWS_NAMING((cai::transcript_from_json(k)), cai::parse_error, "'revision'");
  k = j;
  k["prompt"] = "text";
  CAI_REQUIRE_THROWS_NAMING((cai::transcript_from_json(k)), cai::parse_error, "'prompt'");
  k = j;
  k["error"] = 3;
  CAI_REQUIRE_THROWS_NAMING((cai::transcript_from_json(k)), cai::parse_error, "'error'");
}

TEST_CASE("bad prompts and options are rejected naming the argument", "[constitution]") {
  const cai::constitution& c = small();
  scripted_generator g;
  const auto run = [&](const std::vector<cai::prompt_record>& ps, const cai::critique_revise_options& o) { return cai::critique_revise(g, c, ps, o); };
  const std::vector<cai::prompt_record> good = {{"a", {{"user", "x"}}}, {"b", {{"user", "y"}}}};
  cai::critique_revise_options o;
  CAI_REQUIRE_THROWS_NAMING((run({{"a", {{"user", "x"}}}, {"a", {{"user", "y"}}}}, o)), cai::invalid_argument, "cai::critique_revise",
                            "prompts[1].id", "unique", "'a'");
  CAI_REQUIRE_THROWS_NAMING((run({{"a", {{"user", "x"}}}, {"", {{"user", "y"}}}}, o)), cai::invalid_argument, "prompts[1].id", "non-empty");
  CAI_REQUIRE_THROWS_NAMING((run({{"a", {{"user", "x"}, {"assistant", "y"}}}}, o)), cai::invalid_argument, "prompts[0].dialogue",
                            "ending with a user turn", "'assistant'");
  CAI_REQUIRE_THROWS_NAMING((run({{"a", {}}}, o)), cai::invalid_argument, "prompts[0].dialogue", "empty");
  cai::critique_revise_options bad = o;
  bad.revisions = 0;
  CAI_REQUIRE_THROWS_NAMING((run(good, bad)), cai::invalid_argument, "'revisions'");
  bad = o;
  bad.batch_size = 0;
  CAI_REQUIRE_THROWS_NAMING((run(good, bad)), cai::invalid_argument, "'batch_size'");
  cai::constitution empty = c;
  empty.principles.clear();
  CAI_REQUIRE_THROWS_NAMING((cai::critique_revise(g, empty, good, o)), cai::invalid_argument, "'constitution'");
  CHECK(g.calls.empty());  // nothing was generated

  // The pipeline checks the same before touching its output file.
  temp_file f("bad_args");
  bad = quiet(o);
  bad.batch_size = 0;
  CAI_REQUIRE_THROWS_NAMING((cai::run_critique_revise(g, c, good, f.path, bad)), cai::invalid_argument, "cai::run_critique_revise",
                            "'batch_size'");
  CHECK_FALSE(fs::exists(f.path));
  // An output line without an id is an error naming the file and the line.
  {
    std::ofstream out(f.path, std::ios::binary);
    out << "{\"id\":\"a\"}\n{\"no_id\":1}\n";
  }
  const std::string where = f.path.string() + ":2";
  CAI_REQUIRE_THROWS_NAMING((cai::run_critique_revise(g, c, good, f.path, quiet(o))), cai::parse_error, where.c_str(), "\"id\"");
}

namespace {

/// Runs run_critique_revise in a child process (a slow generator: `sleep_ms` per call) and kills it with SIGKILL
/// once the output holds at least `kill_at` lines. Returns whether the child was killed before finishing.
bool run_and_kill(const cai::constitution& c, const std::vector<cai::prompt_record>& prompts, const cai::critique_revise_options& o,
                  const fs::path& out, std::size_t kill_at, int sleep_ms) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // the child: no Catch, no destructors of the parent's objects
    int rc = 0;
    try {
      scripted_generator slow;
      slow.record = false;
      slow.encode_batch = true;
      slow.sleep_ms = sleep_ms;
      (void)cai::run_critique_revise(slow, c, prompts, out, o);
    } catch (...) {
      rc = 3;
    }
    ::_exit(rc);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool killed = false, exited = false;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (count_lines(out) >= kill_at) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!killed && !exited) ::kill(pid, SIGKILL);  // timed out: never leave the child behind
  if (!exited) ::waitpid(pid, &status, 0);
  INFO("child status " << status << (exited ? " (exited on its own)" : ""));
  CHECK(killed);
  if (killed) {
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
  }
  return killed;
}

}  // namespace

TEST_CASE("a pipeline killed with SIGKILL and resumed has exactly the records of an uninterrupted run", "[constitution]") {
  const cai::constitution& c = cai::default_constitution();
  const auto prompts = many_prompts(40, "r-");
  cai::critique_revise_options o;
  o.revisions = 2;
  o.few_shot = 1;
  o.seed = 2024;
  o.batch_size = 4;
  o.progress = false;
  o.system_prompt = "Be helpful and harmless.";

  // The uninterrupted run. The generator's completions depend on the whole batch ("of=" the call's size), so a
  // resumed run must re-run partly written batches whole to reproduce them.
  temp_file ref("reference");
  scripted_generator fast;
  fast.record = false;
  fast.encode_batch = true;
  const auto full = cai::run_critique_revise(fast, c, prompts, ref.path, o);
  CHECK(full.written == 40);
  CHECK(full.skipped == 0);
  CHECK(full.failed == 0);
  const record_set reference = read_records(ref.path);
  REQUIRE(reference.by_id.size() == 40);
  REQUIRE(reference.duplicates == 0);
  // And it equals the in-memory pipeline's records.
  scripted_generator mem;
  mem.encode_batch = true;
  const auto recs = cai::critique_revise(mem, c, prompts, o);
  for (const auto& t : recs) CHECK(reference.by_id.at(t.id) == cai::to_json(t));

  const auto resume_and_compare = [&](const fs::path& out) {
    const record_set before = read_records(out);
    CHECK(before.duplicates == 0);
    scripted_generator again;
    again.record = false;
    again.encode_batch = true;
    const auto rep = cai::run_critique_revise(again, c, prompts, out, o);
    CHECK(rep.skipped == before.by_id.size());
    CHECK(rep.written == 40 - before.by_id.size());
    CHECK(rep.failed == 0);
    const record_set after = read_records(out);
    CHECK(after.duplicates == 0);
    CHECK(after.lines == 40);
    CHECK(after.by_id.size() == 40);
    for (const auto& [id, j] : reference.by_id) {
      INFO(id);
      REQUIRE(after.by_id.count(id) == 1);
      CHECK(after.by_id.at(id) == j);
    }
    // A second resume has nothing left to do.
    const std::string done = slurp(out);
    const auto rep2 = cai::run_critique_revise(again, c, prompts, out, o);
    CHECK(rep2.written == 0);
    CHECK(rep2.skipped == 40);
    CHECK(slurp(out) == done);
  };

  temp_file out("killed");
  const std::size_t kill_points[] = {5, 13, 21};  // of 40 lines, written 4 at a time, one batch per ~100 ms
  for (std::size_t n = 0; n < 3; ++n) {
    const std::size_t kill_at = kill_points[n];
    INFO("killed after " << kill_at << " lines");
    fs::remove(out.path);
    if (!run_and_kill(c, prompts, o, out.path, kill_at, 20)) continue;
    INFO("lines at the kill: " << count_lines(out.path));
    const std::size_t lines = count_lines(out.path);
    CHECK(lines >= kill_at);
    CHECK(lines < 40);
    if (n == 1) {
      // A kill in the middle of a record: half of a missing record's line at the end.
      const record_set have = read_records(out.path);
      std::string half;
      for (const auto& [id, j] : reference.by_id)
        if (!have.by_id.count(id)) {
          half = j.dump();
          break;
        }
      REQUIRE(half.size() > 10);
      std::ofstream(out.path, std::ios::binary | std::ios::app) << half.substr(0, half.size() / 2);
      cai::jsonl_scan scan = cai::read_jsonl(out.path, [](const json&, std::size_t) {});
      CHECK(scan.truncated_tail);
    }
    resume_and_compare(out.path);
  }

  // A batch written in part (records 0-5 of batches 0 and 1, then half of record 6) is re-run whole.
  {
    std::istringstream lines(slurp(ref.path));
    std::string line, head;
    for (std::size_t i = 0; i < 6 && std::getline(lines, line); ++i) head += line + "\n";
    REQUIRE(std::getline(lines, line));
    head += line.substr(0, line.size() / 3);
    fs::remove(out.path);
    std::ofstream(out.path, std::ios::binary) << head;
    resume_and_compare(out.path);
  }
}
