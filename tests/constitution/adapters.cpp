// Tests for cai/constitution/adapters.hpp and cai/models/byte_tokenizer.hpp: the judge's option log-probs equal the
// policy's per-token log-probs summed by hand over the option's ids; the generator renders the chat template,
// stops at EOS and at stop strings, and passes the EOS id to samplers that take it; both drive the pipelines.
#include <cai/constitution/adapters.hpp>
#include <cai/constitution/critique_revise.hpp>
#include <cai/constitution/default_constitution.hpp>
#include <cai/constitution/feedback.hpp>
#include <cai/models/bigram.hpp>
#include <cai/models/byte_tokenizer.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "../support.hpp"

namespace {

/// A sampling policy that replays a fixed script of tokens after each prompt and records what it was given.
struct scripted_policy {
  std::vector<std::vector<std::int32_t>> scripts;  // per row
  std::vector<std::vector<std::int32_t>> seen;     // prompts received (unpadded)
  int eos_calls = 0;
  std::int64_t vocab_size() const { return 257; }
  void log_probs(const cai::token_batch&, cai::tensor_view<float, 2>) {}
  cai::sample_batch sample(const cai::token_batch& p, const cai::sampling_params&) {
    seen.clear();
    const std::int64_t B = p.tokens.extent(0), Tp = p.tokens.extent(1);
    std::int64_t longest = 0;
    for (const auto& s : scripts) longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(s.size()));
    cai::sample_batch out;
    out.batch = B;
    out.length = Tp + longest;
    out.tokens.assign(static_cast<std::size_t>(B * out.length), 0);
    out.mask.assign(out.tokens.size(), 0);
    out.response.assign(out.tokens.size(), 0);
    out.logp.assign(out.tokens.size(), 0.0f);
    for (std::int64_t b = 0; b < B; ++b) {
      std::vector<std::int32_t> row;
      for (std::int64_t t = 0; t < Tp; ++t)
        if (p.mask(b, t)) row.push_back(p.tokens(b, t));
      seen.push_back(row);
      std::int64_t len = 0;
      for (auto id : row) out.tokens[static_cast<std::size_t>(b * out.length + len++)] = id;
      for (auto id : scripts[static_cast<std::size_t>(b) % scripts.size()]) {
        const auto k = static_cast<std::size_t>(b * out.length + len++);
        out.tokens[k] = id;
        out.response[k] = 1;
      }
    }
    return out;
  }
};
static_assert(cai::sampling_policy<scripted_policy>);

std::vector<std::int32_t> ids_of(const std::string& s) { return cai::models::byte_tokenizer{}.encode(s); }

}  // namespace

TEST_CASE("byte_tokenizer round-trips text, maps the end marker to its id and renders the chat template", "[constitution]") {
  const cai::models::byte_tokenizer tok;
  CHECK(cai::tokenizer<cai::models::byte_tokenizer>);
  const std::string s = "h\xc3\xa9llo <|end|> w\x01rld";
  const auto ids = tok.encode(s);
  CHECK(tok.decode(ids) == s);
  CHECK(std::count(ids.begin(), ids.end(), 256) == 1);
  CHECK(tok.apply_chat_template({{"system", "S"}, {"user", "U"}}, true) == "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n");
  CHECK(tok.apply_chat_template({{"user", "U"}}, false) == "<|user|>\nU<|end|>\n");
  const std::vector<std::int32_t> bad{65, 300};
  CAI_REQUIRE_THROWS_NAMING((tok.decode(bad)), cai::invalid_argument, "'ids'", "300 at 1");
}

TEST_CASE("policy_judge scores each option as the sum of the policy's log-probs over the option's token ids", "[constitution]") {
  const cai::models::byte_tokenizer tok;
  cai::models::bigram_lm<> lm(tok.vocab_size(), cai::host{}, 7, 0.5f);
  cai::policy_judge jdg(lm, tok);
  const std::vector<cai::judge_request> reqs{{{{"user", "Which?"}}, {"(A)", "(B)", "neither"}},
                                             {{{"user", "Q"}, {"assistant", "I think"}}, {" yes", " no"}}};
  const auto got = jdg.score(reqs);
  REQUIRE(got.size() == 2);
  REQUIRE(got[0].size() == 3);
  // Reference: score each (prompt, option) alone with log_probs and sum the option positions.
  const auto reference = [&](const std::string& prompt_text, const std::string& option) {
    auto row = ids_of(prompt_text);
    const auto start = static_cast<std::int64_t>(row.size());
    const auto oid = ids_of(option);
    row.insert(row.end(), oid.begin(), oid.end());
    const auto T = static_cast<std::int64_t>(row.size());
    std::vector<std::uint8_t> m(row.size(), 1);
    std::vector<float> lp(row.size());
    lm.log_probs({cai::make_view<const std::int32_t>(row.data(), {1, T}), cai::make_view<const std::uint8_t>(m.data(), {1, T})},
                 cai::make_view(lp.data(), {1, T}));
    double s = 0;
    for (std::int64_t t = start; t < T; ++t) s += lp[static_cast<std::size_t>(t)];
    return s;
  };
  const std::string p0 = tok.apply_chat_template({{"user", "Which?"}}, true);
  CHECK(got[0][0] == Approx(reference(p0, "(A)")).epsilon(1e-12));
  CHECK(got[0][2] == Approx(reference(p0, "neither")).epsilon(1e-12));
  // A prompt ending with an assistant turn: the options continue that turn.
  const std::string p1 = tok.apply_chat_template({{"user", "Q"}}, true) + "I think";
  CHECK(got[1][0] == Approx(reference(p1, " yes")).epsilon(1e-12));
  CHECK(got[1][1] == Approx(reference(p1, " no")).epsilon(1e-12));
  for (const auto& r : got)
    for (double v : r) CHECK((std::isfinite(v) && v < 0.0));
  const std::vector<cai::judge_request> empty_opt{{{{"user", "Q"}}, {""}}};
  CAI_REQUIRE_THROWS_NAMING((jdg.score(empty_opt)), cai::invalid_argument, "requests[0].options[0]");
}

TEST_CASE("policy_generator renders the chat template, stops at EOS and at stop strings", "[constitution]") {
  const cai::models::byte_tokenizer tok;
  scripted_policy pol;
  auto with_eos = ids_of("Sure thing");
  with_eos.push_back(256);
  const auto tail = ids_of("ignored");
  with_eos.insert(with_eos.end(), tail.begin(), tail.end());
  pol.scripts = {with_eos, ids_of("Hello STOP more"), ids_of("")};
  cai::policy_generator gen(pol, tok);
  const std::vector<cai::conversation> convs{{{"user", "a"}}, {{"system", "s"}, {"user", "bb"}}, {{"user", "c"}}};
  const auto out = gen.generate(convs, {.stop = {"STOP"}});
  REQUIRE(out.size() == 3);
  CHECK(out[0] == "Sure thing");     // EOS ends the reply
  CHECK(out[1] == "Hello ");         // cut at the stop string
  CHECK(out[2].empty());
  REQUIRE(pol.seen.size() == 3);
  CHECK(pol.seen[1] == ids_of(tok.apply_chat_template(convs[1], true)));  // the template, unpadded
  CHECK(gen.generate(std::span<const cai::conversation>{}, {}).empty());
}

TEST_CASE("an in-process policy drives critique-revise and AI feedback end to end through the adapters", "[constitution][rlaif]") {
  const cai::models::byte_tokenizer tok;
  cai::models::bigram_lm<> lm(tok.vocab_size(), cai::host{}, 3, 1.0f);
  cai::policy_generator gen(lm, tok);
  cai::policy_judge jdg(lm, tok);
  const std::vector<cai::prompt_record> prompts{{"p1", {{"user", "How do I stop a stuck process?"}}}, {"p2", {{"user", "Tell me a joke."}}}};
  const auto recs = cai::critique_revise(gen, cai::default_constitution(), prompts, {.revisions = 2, .seed = 4, .sampling = {.max_new_tokens = 12, .seed = 0}});
  REQUIRE(recs.size() == 2);
  for (const auto& r : recs) {
    CHECK(r.ok());
    CHECK(r.steps.size() == 2);
  }
  // Deterministic: the same run again gives the same transcripts.
  CHECK(cai::critique_revise(gen, cai::default_constitution(), prompts, {.revisions = 2, .seed = 4, .sampling = {.max_new_tokens = 12, .seed = 0}}) == recs);
  std::vector<cai::comparison> cmp;
  for (const auto& r : recs) cmp.push_back({r.id, r.prompt, r.final_response(), r.initial});
  const auto labels = cai::label_feedback(jdg, cai::default_constitution(), cmp, {.principles = 3, .seed = 9});
  for (const auto& l : labels) {
    CHECK(l.ok());
    CHECK((l.label > 0.0 && l.label < 1.0));
  }
}
