// cai/constitution/critique_revise.hpp — supervised Constitutional AI (SL-CAI): critique and revise responses
// against sampled principles, over any cai::text_generator, as a batched, resumable pipeline.
//
// Bai et al. 2022 (arXiv 2212.08073, section 3): for each prompt the model answers, then for N rounds a principle is
// drawn at random, the model critiques its latest response against the principle's critique request and rewrites it
// following the revision request; few-shot critique-revision exchanges are prepended. The final revision is the SFT
// target; (final revision, initial response) is a preference pair.
//
// Conversations sent to the generator (one generate() call per stage per batch):
//   initial    [system] + dialogue
//   critique   [system] + few-shot exchanges + dialogue + assistant(current) + user(critique request)
//   revision   the critique conversation + assistant(critique) + user(revision request)
// a few-shot exchange being: example dialogue, assistant(response), user(critique request), assistant(critique),
// user(revision request), assistant(revision). Each round starts from the dialogue with the latest revision as the
// response (the transcript keeps every round).
//
// Randomness: a record's principles and few-shot examples come from a Philox stream keyed by (seed, its id), so they
// do not depend on batching or order. Batches are fixed by position in the prompt list; each generate() call gets
// sampling seed derive_seed(derive_seed(seed, batch), stage), so a deterministic generator yields the same records however a run
// is split, killed and resumed.
//
// Faults: a generate() call that throws is retried `retries` times; if it still fails, the batch's records are
// retried one by one, and a record that still fails is kept with its error (written, never lost or retried forever).
// A generator returning the wrong number of completions is a failure of that call.
//
// run_critique_revise() writes one JSONL line per record (flushed), skips ids already in the output file, cuts a
// truncated last line left by a killed run, and re-runs a partly written batch whole, writing only its missing
// records: an interrupted and resumed run has exactly the records of an uninterrupted one.
//
//   cai::critique_revise_options opt{.revisions = 2, .seed = 7};
//   auto recs = cai::critique_revise(generator, cai::default_constitution(), prompts, opt);
//   nlohmann::json pair = cai::to_json(recs[0].to_preference(), cai::dataset_format::messages);
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../concepts/text_generator.hpp"
#include "../concepts/types.hpp"
#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../io/datasets.hpp"
#include "../io/jsonl.hpp"
#include "../io/pipeline.hpp"
#include "constitution.hpp"

namespace cai {

/// A prompt to work on: a stable id (keys its randomness and its output record) and the dialogue so far, ending
/// with a user turn.
struct prompt_record {
  std::string id;
  conversation dialogue;
};

struct critique_revise_options {
  std::size_t revisions = 1;   ///< critique-revision rounds per prompt (the paper used up to 4); >= 1
  std::size_t few_shot = 1;    ///< critique examples prepended (drawn without replacement; at most those available)
  std::uint64_t seed = 0;
  sampling_params sampling{};  ///< passed to the generator (its seed is replaced per call)
  std::size_t batch_size = 16;  ///< conversations per generate() call; >= 1
  std::size_t retries = 2;      ///< extra attempts of a failing generate() call
  std::string system_prompt{};  ///< optional system turn prepended to every conversation
  bool progress = true;         ///< progress line on a terminal (run_critique_revise)
};

struct revision_step {
  std::string principle;  ///< the principle's id
  std::string critique_request, critique, revision_request, revision;
  friend bool operator==(const revision_step&, const revision_step&) = default;
};

/// Everything one prompt went through.
struct critique_transcript {
  std::string id;
  conversation prompt;
  std::string initial;
  std::vector<revision_step> steps;
  std::string error;  ///< non-empty: the record failed (its fields hold what was produced before the failure)

  bool ok() const noexcept { return error.empty(); }
  const std::string& final_response() const noexcept { return steps.empty() ? initial : steps.back().revision; }
  sft_record to_sft() const { return {prompt, final_response()}; }
  preference_record to_preference() const { return {prompt, final_response(), initial, std::nullopt}; }
  friend bool operator==(const critique_transcript&, const critique_transcript&) = default;
};

namespace detail::cr {

/// FNV-1a of a record id (the record's key for derive_seed).
inline std::uint64_t id_key(std::string_view id) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : id) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

struct plan {
  std::vector<std::size_t> shots;       // indices into critique_examples
  std::vector<std::size_t> principles;  // one per round
};

inline plan plan_for(const constitution& c, std::string_view id, const critique_revise_options& o) {
  rng_stream rng(derive_seed(o.seed, id_key(id)));
  plan p;
  std::vector<std::size_t> pool(c.critique_examples.size());
  for (std::size_t i = 0; i < pool.size(); ++i) pool[i] = i;
  const std::size_t k = std::min(o.few_shot, pool.size());
  for (std::size_t i = 0; i < k; ++i) {  // partial Fisher-Yates
    const std::size_t j = i + rng.below(static_cast<std::uint32_t>(pool.size() - i));
    std::swap(pool[i], pool[j]);
    p.shots.push_back(pool[i]);
  }
  for (std::size_t r = 0; r < o.revisions; ++r) p.principles.push_back(rng.below(static_cast<std::uint32_t>(c.principles.size())));
  return p;
}

inline conversation with_system(const critique_revise_options& o) {
  conversation c;
  if (!o.system_prompt.empty()) c.push_back({"system", o.system_prompt});
  return c;
}

inline void append(conversation& to, const conversation& from) { to.insert(to.end(), from.begin(), from.end()); }

inline conversation critique_conversation(const constitution& c, const plan& pl, const prompt_record& pr, const critique_revise_options& o,
                                          const std::string& response, const principle& p) {
  conversation conv = with_system(o);
  for (std::size_t s : pl.shots) {
    const critique_example& e = c.critique_examples[s];
    append(conv, e.dialogue);
    conv.push_back({"assistant", e.response});
    conv.push_back({"user", e.critique_request});
    conv.push_back({"assistant", e.critique});
    conv.push_back({"user", e.revision_request});
    conv.push_back({"assistant", e.revision});
  }
  append(conv, pr.dialogue);
  conv.push_back({"assistant", response});
  conv.push_back({"user", p.critique_request});
  return conv;
}

/// One generate() call with retries; throws the last error when every attempt failed.
template <text_generator G>
std::vector<std::string> generate_checked(G& gen, std::span<const conversation> convs, const sampling_params& sp, std::size_t retries) {
  std::string last;
  for (std::size_t attempt = 0; attempt <= retries; ++attempt) {
    try {
      std::vector<std::string> out = gen.generate(convs, sp);
      if (out.size() != convs.size())
        throw error(concat("the generator returned ", out.size(), " completions for ", convs.size(), " conversations"));
      return out;
    } catch (const std::exception& e) {
      last = e.what();
    }
  }
  throw error(concat("generate failed after ", retries + 1, " attempts: ", last));
}

}  // namespace detail::cr

/// Runs critique-revise on one batch (all records advance stage by stage; see the header comment).
template <text_generator G>
std::vector<critique_transcript> critique_revise_batch(G& gen, const constitution& c, std::span<const prompt_record> batch,
                                                       std::uint64_t batch_index, const critique_revise_options& o) {
  namespace cr = detail::cr;
  std::vector<critique_transcript> out(batch.size());
  std::vector<cr::plan> plans;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    out[i].id = batch[i].id;
    out[i].prompt = batch[i].dialogue;
    plans.push_back(cr::plan_for(c, batch[i].id, o));
  }
  // Runs one stage for the live records: a batched call, then (if it fails) one call per record.
  const auto stage = [&](std::uint64_t stage_no, const std::vector<std::size_t>& live, const std::vector<conversation>& convs,
                         auto&& accept) {
    if (live.empty()) return;  // every record of the batch has failed: no call with an empty batch
    sampling_params sp = o.sampling;
    sp.seed = derive_seed(derive_seed(o.seed, batch_index), stage_no);
    try {
      const auto res = cr::generate_checked(gen, std::span<const conversation>(convs), sp, o.retries);
      for (std::size_t k = 0; k < live.size(); ++k) accept(live[k], res[k]);
    } catch (const std::exception&) {
      for (std::size_t k = 0; k < live.size(); ++k) {
        try {
          const auto res = cr::generate_checked(gen, std::span<const conversation>(&convs[k], 1), sp, o.retries);
          accept(live[k], res[0]);
        } catch (const std::exception& e) {
          out[live[k]].error = e.what();
        }
      }
    }
  };
  const auto live_ids = [&] {
    std::vector<std::size_t> v;
    for (std::size_t i = 0; i < out.size(); ++i)
      if (out[i].ok()) v.push_back(i);
    return v;
  };
  {
    const auto live = live_ids();
    std::vector<conversation> convs;
    for (std::size_t i : live) {
      conversation conv = cr::with_system(o);
      cr::append(conv, batch[i].dialogue);
      convs.push_back(std::move(conv));
    }
    stage(0, live, convs, [&](std::size_t i, const std::string& s) { out[i].initial = s; });
  }
  for (std::size_t r = 0; r < o.revisions; ++r) {
    auto live = live_ids();
    std::vector<conversation> crit;
    for (std::size_t i : live) {
      const principle& p = c.principles[plans[i].principles[r]];
      const std::string current = r == 0 ? out[i].initial : out[i].steps[r - 1].revision;
      out[i].steps.push_back({p.id, p.critique_request, {}, p.revision_request, {}});
      crit.push_back(cr::critique_conversation(c, plans[i], batch[i], o, current, p));
    }
    stage(2 * r + 1, live, crit, [&](std::size_t i, const std::string& s) { out[i].steps[r].critique = s; });
    std::vector<std::size_t> live2;
    std::vector<conversation> rev;
    for (std::size_t k = 0; k < live.size(); ++k) {
      const std::size_t i = live[k];
      if (!out[i].ok()) continue;
      conversation conv = crit[k];
      conv.push_back({"assistant", out[i].steps[r].critique});
      conv.push_back({"user", out[i].steps[r].revision_request});
      live2.push_back(i);
      rev.push_back(std::move(conv));
    }
    stage(2 * r + 2, live2, rev, [&](std::size_t i, const std::string& s) { out[i].steps[r].revision = s; });
  }
  return out;
}

namespace detail::cr {
inline void check_options(std::string_view call, const constitution& c, std::span<const prompt_record> prompts, const critique_revise_options& o) {
  if (c.principles.empty()) fail_argument(call, "constitution", "at least one principle", "none");
  if (o.revisions < 1) fail_argument(call, "revisions", "at least 1 round", o.revisions);
  if (o.batch_size < 1) fail_argument(call, "batch_size", "at least 1", o.batch_size);
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i];
    if (p.id.empty()) fail_argument(call, concat("prompts[", i, "].id"), "a non-empty id", "\"\"");
    if (!seen.insert(p.id).second) fail_argument(call, concat("prompts[", i, "].id"), "ids unique in the run", concat("a second '", p.id, "'"));
    if (p.dialogue.empty() || p.dialogue.back().role != "user")
      fail_argument(call, concat("prompts[", i, "].dialogue"), "a conversation ending with a user turn",
                    p.dialogue.empty() ? std::string("an empty one") : concat("one ending with '", p.dialogue.back().role, "'"));
  }
}
}  // namespace detail::cr

/// Critique-revise over all prompts in memory (batches of batch_size). See the header comment.
template <text_generator G>
std::vector<critique_transcript> critique_revise(G& gen, const constitution& c, std::span<const prompt_record> prompts,
                                                 const critique_revise_options& o = {}) {
  detail::cr::check_options("cai::critique_revise", c, prompts, o);
  std::vector<critique_transcript> out;
  for (std::size_t b = 0; b * o.batch_size < prompts.size(); ++b) {
    const auto batch = prompts.subspan(b * o.batch_size, std::min(o.batch_size, prompts.size() - b * o.batch_size));
    auto recs = critique_revise_batch(gen, c, batch, b, o);
    for (auto& r : recs) out.push_back(std::move(r));
  }
  return out;
}

/// A transcript as one JSON object (the record format of run_critique_revise's output).
inline nlohmann::json to_json(const critique_transcript& t) {
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& s : t.steps)
    steps.push_back({{"principle", s.principle}, {"critique_request", s.critique_request}, {"critique", s.critique},
                     {"revision_request", s.revision_request}, {"revision", s.revision}});
  nlohmann::json j = {{"id", t.id}, {"prompt", detail::ds::turns(t.prompt)}, {"initial", t.initial}, {"steps", steps}};
  if (!t.ok()) j["error"] = t.error;
  return j;
}

/// Reads a transcript written by to_json (cai::parse_error naming the field).
inline critique_transcript transcript_from_json(const nlohmann::json& j) {
  using detail::ds::str;
  if (!j.is_object()) throw parse_error("cai::transcript_from_json: expected an object");
  critique_transcript t;
  t.id = str(j, "id");
  t.prompt = detail::ds::turns_from(j.contains("prompt") ? j["prompt"] : nlohmann::json(), "prompt");
  t.initial = str(j, "initial");
  if (!j.contains("steps") || !j["steps"].is_array()) throw parse_error("cai::transcript_from_json: expected an array 'steps'");
  for (const auto& s : j["steps"])
    t.steps.push_back({str(s, "principle"), str(s, "critique_request"), str(s, "critique"), str(s, "revision_request"), str(s, "revision")});
  if (j.contains("error")) t.error = str(j, "error");
  return t;
}

/// The resumable pipeline: critique-revise every prompt not yet in `out_path`, appending one record per line
/// (cai::run_resumable in io/pipeline.hpp: batches fixed by position, partly written batches re-run whole).
template <text_generator G>
pipeline_report run_critique_revise(G& gen, const constitution& c, std::span<const prompt_record> prompts,
                                    const std::filesystem::path& out_path, const critique_revise_options& o = {}) {
  detail::cr::check_options("cai::run_critique_revise", c, prompts, o);
  return run_resumable(
      "run_critique_revise", prompts, o.batch_size, out_path, o.progress,
      [&](std::span<const prompt_record> batch, std::size_t b) { return critique_revise_batch(gen, c, batch, b, o); },
      [](const critique_transcript& t) { return to_json(t); }, [](const critique_transcript& t) { return !t.ok(); });
}

}  // namespace cai
