// cai/constitution/feedback.hpp — AI-feedback preference labels (RLAIF) over any cai::judge.
//
// Bai et al. 2022 (arXiv 2212.08073, section 4): the feedback model sees the conversation, a principle's comparison
// question and the two responses as a multiple-choice question; the normalised probabilities of the option strings
// are the soft preference label; labels are ensembled over principles; with chain-of-thought the model first
// reasons (the generator), then chooses (the judge), and because those probabilities are extreme the labels are
// clamped to [0.4, 0.6].
//
// For a comparison (dialogue, response a, response b), K principles drawn without replacement from the record's
// Philox stream (keyed by seed and id), and for each order (a, b) and, when both_orders is set, (b, a):
//   request  [system] + few-shot turns + user(question) [+ assistant(reasoning + answer lead) in CoT mode]
//   question "Consider the following conversation between a human and an assistant:\n" + <hh transcript, which
//             starts "\n\nHuman: "> + "\n\n
//             <comparison question>\nOptions:\n(A) <first>\n(B) <second>\n" + "The answer is:" (or, with CoT,
//             "Let's think step by step:" — the generator's reasoning follows, then "Therefore, the answer is:")
//   scored   the option strings (default "(A)", "(B)") as the continuation of the assistant turn
//   p_first  = e^{l_A} / (e^{l_A} + e^{l_B})                    (normalised option probability, computed stably)
// P(a preferred) per principle = p_first(a, b), or its mean with 1 - p_first(b, a) (position-bias removal: the label
// becomes antisymmetric — swapping a and b gives 1 - label, a tie gives 1/2 — and a constant preference for the
// first position cancels to first order; it cannot be undone exactly through the logistic link); the
// label is the mean over the K principles, clamped to [cot_min, cot_max] in CoT mode. A few-shot feedback example
// becomes a user(question) / assistant("(A)" or "(B)", after its reasoning in CoT mode) exchange.
// The output record is a preference pair with chosen = a, rejected = b and label = P(a preferred): the soft label
// cai::bradley_terry_loss reads (reward_pair_batch::labels). Non-finite or NaN log-probs from the judge, and
// judge or generator calls that keep failing after the retries, make that record a failed record (kept, with its
// error), never a crash or a lost record.
//
//   auto labels = cai::label_feedback(judge, cai::default_constitution(), comparisons, {.principles = 4, .seed = 1});
//   cai::run_feedback(judge, generator, constitution, comparisons, "labels.jsonl", {.chain_of_thought = true});
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../concepts/judge.hpp"
#include "../concepts/text_generator.hpp"
#include "../concepts/types.hpp"
#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/rng.hpp"
#include "../io/datasets.hpp"
#include "../io/pipeline.hpp"
#include "constitution.hpp"
#include "critique_revise.hpp"

namespace cai {

/// Two responses to label: the dialogue (ending with a user turn) and the candidate answers a and b.
struct comparison {
  std::string id;
  conversation dialogue;
  std::string a, b;
};

struct feedback_options {
  std::size_t principles = 1;   ///< K: principles per comparison (ensemble), drawn without replacement
  bool both_orders = true;      ///< score (a, b) and (b, a) and average (removes position bias)
  std::size_t few_shot = 0;     ///< feedback examples prepended
  std::uint64_t seed = 0;
  std::vector<std::string> option_strings{"(A)", "(B)"};
  bool chain_of_thought = false;  ///< generator reasons first (needs a text_generator), labels clamped
  double cot_min = 0.4, cot_max = 0.6;
  sampling_params sampling{};     ///< for the CoT reasoning
  std::size_t batch_size = 16;    ///< comparisons per judge/generator call
  std::size_t retries = 2;
  std::string system_prompt{};
  bool progress = true;
};

/// One principle's vote.
struct feedback_vote {
  std::string principle;
  double p_ab = 0.5;        ///< P(first option) with a shown first
  double p_ba = 0.5;        ///< P(first option) with b shown first (both_orders; else unused)
  double p = 0.5;           ///< this principle's P(a preferred)
  std::string reasoning_ab, reasoning_ba;  ///< CoT reasoning
  friend bool operator==(const feedback_vote&, const feedback_vote&) = default;
};

struct feedback_label {
  std::string id;
  conversation dialogue;
  std::string a, b;
  double label = 0.5;  ///< P(a preferred) after the ensemble (and the CoT clamp)
  std::vector<feedback_vote> votes;
  std::string error;
  bool ok() const noexcept { return error.empty(); }
  preference_record to_preference() const { return {dialogue, a, b, label}; }
  friend bool operator==(const feedback_label&, const feedback_label&) = default;
};

namespace detail::fb {

inline std::string question(const conversation& dialogue, const std::string& q, const std::string& first, const std::string& second) {
  return concat("Consider the following conversation between a human and an assistant:\n", hh_transcript(dialogue), "\n\n", q,
                "\nOptions:\n(A) ", first, "\n(B) ", second, "\n");
}
inline constexpr std::string_view answer_lead = "The answer is:";
inline constexpr std::string_view cot_lead = "Let's think step by step:";
inline constexpr std::string_view cot_answer = "\nTherefore, the answer is:";

/// P(first option) from the two log-probs, or NaN when they are not usable.
inline double first_probability(double la, double lb) noexcept {
  if (std::isnan(la) || std::isnan(lb) || la == INFINITY || lb == INFINITY) return std::nan("");
  if (la == -INFINITY && lb == -INFINITY) return std::nan("");
  return sigmoid(la - lb);  // e^la / (e^la + e^lb)
}

struct plan {
  std::vector<std::size_t> principles, shots;
};

inline plan plan_for(const constitution& c, std::string_view id, const feedback_options& o) {
  rng_stream rng(derive_seed(o.seed ^ 0x5eedfeedull, detail::cr::id_key(id)));
  const auto draw = [&](std::size_t n, std::size_t k) {
    std::vector<std::size_t> pool(n), out;
    for (std::size_t i = 0; i < n; ++i) pool[i] = i;
    for (std::size_t i = 0; i < std::min(k, n); ++i) {
      const std::size_t j = i + rng.below(static_cast<std::uint32_t>(n - i));
      std::swap(pool[i], pool[j]);
      out.push_back(pool[i]);
    }
    return out;
  };
  plan p;
  p.principles = draw(c.principles.size(), o.principles);
  p.shots = draw(c.feedback_examples.size(), o.few_shot);
  return p;
}

inline conversation prefix(const constitution& c, const plan& pl, const feedback_options& o) {
  conversation conv;
  if (!o.system_prompt.empty()) conv.push_back({"system", o.system_prompt});
  for (std::size_t s : pl.shots) {
    const feedback_example& e = c.feedback_examples[s];
    // Two-option examples only (checked by the callers: the labeller asks A-or-B questions).
    const std::string q = question(e.dialogue, e.comparison_question, e.options[0], e.options[1]);
    const std::string ans = e.answer == 0 ? o.option_strings[0] : o.option_strings[1];
    if (o.chain_of_thought) {
      conv.push_back({"user", concat(q, cot_lead)});
      conv.push_back({"assistant", concat(e.reasoning.empty() ? std::string() : e.reasoning, cot_answer, " ", ans)});
    } else {
      conv.push_back({"user", concat(q, answer_lead)});
      conv.push_back({"assistant", ans});
    }
  }
  return conv;
}

}  // namespace detail::fb

/// Labels one batch (see the header comment). `gen` is used only in chain-of-thought mode (may be null otherwise).
template <judge J, class G>
std::vector<feedback_label> label_feedback_batch(J& jdg, G* gen, const constitution& c, std::span<const comparison> batch,
                                                 std::uint64_t batch_index, const feedback_options& o) {
  namespace fb = detail::fb;
  if (o.chain_of_thought && gen == nullptr)
    detail::fail_argument("cai::label_feedback_batch", "generator", "a text_generator for chain_of_thought", "none");
  std::vector<feedback_label> out(batch.size());
  struct slot {
    std::size_t rec, vote;
    bool swapped;
  };
  std::vector<slot> slots;
  std::vector<conversation> questions;  // the user question per slot (with its prefix)
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const comparison& cmp = batch[i];
    out[i].id = cmp.id;
    out[i].dialogue = cmp.dialogue;
    out[i].a = cmp.a;
    out[i].b = cmp.b;
    const fb::plan pl = fb::plan_for(c, cmp.id, o);
    const conversation pre = fb::prefix(c, pl, o);
    for (std::size_t k = 0; k < pl.principles.size(); ++k) {
      const principle& p = c.principles[pl.principles[k]];
      out[i].votes.push_back({p.id, 0.5, 0.5, 0.5, {}, {}});
      for (int order = 0; order < (o.both_orders ? 2 : 1); ++order) {
        conversation conv = pre;
        const bool sw = order == 1;
        conv.push_back({"user", detail::concat(fb::question(cmp.dialogue, p.comparison_question, sw ? cmp.b : cmp.a, sw ? cmp.a : cmp.b),
                                               o.chain_of_thought ? fb::cot_lead : fb::answer_lead)});
        slots.push_back({i, k, sw});
        questions.push_back(std::move(conv));
      }
    }
  }
  // Chain of thought: the generator reasons for every question first (one call; on failure, one call per question so
  // that a bad conversation fails only its own record).
  if (o.chain_of_thought) {
    sampling_params sp = o.sampling;
    sp.seed = derive_seed(derive_seed(o.seed, batch_index), 1);
    std::vector<std::string> reasons(slots.size());
    std::vector<bool> have(slots.size(), false);
    try {
      reasons = detail::cr::generate_checked(*gen, std::span<const conversation>(questions), sp, o.retries);
      std::fill(have.begin(), have.end(), true);
    } catch (const std::exception&) {
      for (std::size_t s = 0; s < slots.size(); ++s) {
        if (!out[slots[s].rec].ok()) continue;
        try {
          reasons[s] = detail::cr::generate_checked(*gen, std::span<const conversation>(&questions[s], 1), sp, o.retries)[0];
          have[s] = true;
        } catch (const std::exception& e) {
          out[slots[s].rec].error = e.what();
        }
      }
    }
    for (std::size_t s = 0; s < slots.size(); ++s) {
      if (!have[s]) continue;
      auto& v = out[slots[s].rec].votes[slots[s].vote];
      (slots[s].swapped ? v.reasoning_ba : v.reasoning_ab) = reasons[s];
      questions[s].push_back({"assistant", detail::concat(reasons[s], fb::cot_answer)});
    }
  }
  // One judge call for every live question (retried), then per record on failure.
  std::vector<judge_request> reqs;
  std::vector<std::size_t> live;
  for (std::size_t s = 0; s < slots.size(); ++s)
    if (out[slots[s].rec].ok()) {
      reqs.push_back({questions[s], o.option_strings});
      live.push_back(s);
    }
  const auto score = [&](std::span<const judge_request> rs) {
    std::string last;
    for (std::size_t attempt = 0; attempt <= o.retries; ++attempt) {
      try {
        std::vector<std::vector<double>> r = jdg.score(rs);
        if (r.size() != rs.size()) throw error(detail::concat("the judge returned ", r.size(), " results for ", rs.size(), " requests"));
        for (std::size_t k = 0; k < r.size(); ++k)
          if (r[k].size() != rs[k].options.size())
            throw error(detail::concat("the judge returned ", r[k].size(), " log-probs for ", rs[k].options.size(), " options"));
        return r;
      } catch (const std::exception& e) {
        last = e.what();
      }
    }
    throw error(detail::concat("judge failed after ", o.retries + 1, " attempts: ", last));
  };
  std::vector<std::vector<double>> lps(live.size());
  if (!live.empty()) try {
    lps = score(std::span<const judge_request>(reqs));
  } catch (const std::exception&) {
    for (std::size_t k = 0; k < live.size(); ++k) {
      if (!out[slots[live[k]].rec].ok()) continue;
      try {
        lps[k] = score(std::span<const judge_request>(&reqs[k], 1))[0];
      } catch (const std::exception& e) {
        out[slots[live[k]].rec].error = e.what();
      }
    }
  }
  for (std::size_t k = 0; k < live.size(); ++k) {
    const slot& sl = slots[live[k]];
    feedback_label& rec = out[sl.rec];
    if (!rec.ok()) continue;
    const double pf = fb::first_probability(lps[k][0], lps[k][1]);
    if (std::isnan(pf)) {
      rec.error = detail::concat("the judge returned unusable log-probs (", lps[k][0], ", ", lps[k][1], ") for principle '",
                                 rec.votes[sl.vote].principle, "'");
      continue;
    }
    (sl.swapped ? rec.votes[sl.vote].p_ba : rec.votes[sl.vote].p_ab) = pf;
  }
  for (auto& rec : out) {
    if (!rec.ok()) continue;
    double sum = 0.0;
    for (auto& v : rec.votes) {
      v.p = o.both_orders ? 0.5 * (v.p_ab + (1.0 - v.p_ba)) : v.p_ab;
      sum += v.p;
    }
    rec.label = rec.votes.empty() ? 0.5 : sum / static_cast<double>(rec.votes.size());
    if (o.chain_of_thought) rec.label = std::clamp(rec.label, o.cot_min, o.cot_max);
  }
  return out;
}

namespace detail::fb {
inline void check(std::string_view call, const constitution& c, std::span<const comparison> items, const feedback_options& o, bool has_gen) {
  if (c.principles.empty()) fail_argument(call, "constitution", "at least one principle", "none");
  if (o.principles < 1 || o.principles > c.principles.size())
    fail_argument(call, "principles", concat("between 1 and the constitution's ", c.principles.size()), o.principles);
  if (o.option_strings.size() != 2 || o.option_strings[0].empty() || o.option_strings[1].empty() || o.option_strings[0] == o.option_strings[1])
    fail_argument(call, "option_strings", "two distinct non-empty strings",
                  o.option_strings.size() == 2 ? concat("\"", o.option_strings[0], "\" and \"", o.option_strings[1], "\"")
                                               : concat(o.option_strings.size(), " strings"));
  if (o.chain_of_thought && !has_gen) fail_argument(call, "generator", "a text_generator for chain_of_thought", "none");
  if (!(o.cot_min >= 0.0 && o.cot_min <= o.cot_max && o.cot_max <= 1.0))
    fail_argument(call, "cot_min", concat("0 <= cot_min <= cot_max (", o.cot_max, ") <= 1"), o.cot_min);
  if (o.batch_size < 1) fail_argument(call, "batch_size", "at least 1", o.batch_size);
  if (o.few_shot > 0)
    for (std::size_t i = 0; i < c.feedback_examples.size(); ++i)
      if (c.feedback_examples[i].options.size() != 2)
        fail_argument(call, concat("constitution.feedback_examples[", i, "].options"), "two options (the labeller asks A or B)",
                      c.feedback_examples[i].options.size());
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    if (it.id.empty()) fail_argument(call, concat("comparisons[", i, "].id"), "a non-empty id", "\"\"");
    if (!seen.insert(it.id).second) fail_argument(call, concat("comparisons[", i, "].id"), "ids unique in the run", concat("a second '", it.id, "'"));
    if (it.dialogue.empty() || it.dialogue.back().role != "user")
      fail_argument(call, concat("comparisons[", i, "].dialogue"), "a conversation ending with a user turn", "another");
    for (const auto& m : it.dialogue)
      if (m.role != "user" && m.role != "assistant")
        fail_argument(call, concat("comparisons[", i, "].dialogue"), "user and assistant turns (shown as a transcript)", concat("role '", m.role, "'"));
  }
}
struct no_generator {
  std::vector<std::string> generate(std::span<const conversation>, const sampling_params&) { return {}; }
};
}  // namespace detail::fb

/// Labels comparisons in memory with a judge (no chain of thought).
template <judge J>
std::vector<feedback_label> label_feedback(J& jdg, const constitution& c, std::span<const comparison> items, const feedback_options& o = {}) {
  detail::fb::check("cai::label_feedback", c, items, o, false);
  std::vector<feedback_label> out;
  for (std::size_t b = 0; b * o.batch_size < items.size(); ++b) {
    const auto batch = items.subspan(b * o.batch_size, std::min(o.batch_size, items.size() - b * o.batch_size));
    for (auto& r : label_feedback_batch(jdg, static_cast<detail::fb::no_generator*>(nullptr), c, batch, b, o)) out.push_back(std::move(r));
  }
  return out;
}

/// Labels comparisons in memory, chain of thought allowed (the generator reasons).
template <judge J, text_generator G>
std::vector<feedback_label> label_feedback(J& jdg, G& gen, const constitution& c, std::span<const comparison> items,
                                           const feedback_options& o = {}) {
  detail::fb::check("cai::label_feedback", c, items, o, true);
  std::vector<feedback_label> out;
  for (std::size_t b = 0; b * o.batch_size < items.size(); ++b) {
    const auto batch = items.subspan(b * o.batch_size, std::min(o.batch_size, items.size() - b * o.batch_size));
    for (auto& r : label_feedback_batch(jdg, &gen, c, batch, b, o)) out.push_back(std::move(r));
  }
  return out;
}

/// A label as one JSON record: the messages-form preference pair (prompt, chosen = a, rejected = b, label) plus
/// the id, the votes and any error.
inline nlohmann::json to_json(const feedback_label& f) {
  nlohmann::json j = to_json(f.to_preference(), dataset_format::messages);
  j["id"] = f.id;
  nlohmann::json votes = nlohmann::json::array();
  for (const auto& v : f.votes) {
    nlohmann::json x = {{"principle", v.principle}, {"p", v.p}, {"p_ab", v.p_ab}, {"p_ba", v.p_ba}};
    if (!v.reasoning_ab.empty()) x["reasoning_ab"] = v.reasoning_ab;
    if (!v.reasoning_ba.empty()) x["reasoning_ba"] = v.reasoning_ba;
    votes.push_back(x);
  }
  j["votes"] = votes;
  if (!f.ok()) {
    j["error"] = f.error;
    j.erase("label");  // no label for a failed record
  }
  return j;
}

/// The resumable pipeline (see io/pipeline.hpp), with a generator for chain-of-thought mode.
template <judge J, text_generator G>
pipeline_report run_feedback(J& jdg, G& gen, const constitution& c, std::span<const comparison> items,
                             const std::filesystem::path& out_path, const feedback_options& o = {}) {
  detail::fb::check("cai::run_feedback", c, items, o, true);
  return run_resumable(
      "run_feedback", items, o.batch_size, out_path, o.progress,
      [&](std::span<const comparison> batch, std::size_t b) { return label_feedback_batch(jdg, &gen, c, batch, b, o); },
      [](const feedback_label& f) { return to_json(f); }, [](const feedback_label& f) { return !f.ok(); });
}

/// The resumable pipeline with a judge alone (no chain of thought).
template <judge J>
pipeline_report run_feedback(J& jdg, const constitution& c, std::span<const comparison> items, const std::filesystem::path& out_path,
                             const feedback_options& o = {}) {
  detail::fb::check("cai::run_feedback", c, items, o, false);
  return run_resumable(
      "run_feedback", items, o.batch_size, out_path, o.progress,
      [&](std::span<const comparison> batch, std::size_t b) {
        return label_feedback_batch(jdg, static_cast<detail::fb::no_generator*>(nullptr), c, batch, b, o);
      },
      [](const feedback_label& f) { return to_json(f); }, [](const feedback_label& f) { return !f.ok(); });
}

}  // namespace cai
