// examples/constitutional_pipeline/main.cpp — the Constitutional AI pipeline (Bai et al. 2022, arXiv 2212.08073)
// end to end on the embedded transformer, in the synthetic world of world.hpp whose gold judges score every stage.
//
// Per seed, every model trained from scratch with cai's trainers:
//   sft                 helpful-only SFT: complies with every request (harmful ones included)
//   sl_cai              SL-CAI: the SFT model answers red-team requests, the rule critic critiques and revises through
//                       cai::critique_revise (principles drawn from cai's default constitution), SFT on the revisions
//   RLAIF labels        pairs of responses (SL-CAI sample vs SFT sample, or vs a terse refusal) labelled by the noisy,
//                       position-biased feedback model through cai::label_feedback (both orders, 3 principles), plus
//                       gold "human" helpfulness labels on benign requests, as in the paper
//   PM                  Bradley-Terry preference model (trunk from SL-CAI) on those labels (soft)
//   rl_cai              PPO-clip (group-normalised advantages, KL to SL-CAI in the reward) against the PM
//   rl_cai_dpo          DPO (sigmoid) from SL-CAI on the same labelled pairs
//   harmless_only_rlhf  the baseline: a PM on human-style harmlessness labels (world::human_harmlessness_score), PPO
//   ppo_unconstrained   PPO against a helpfulness-only PM (human helpfulness labels on every request)
//   safe_ppo            Safe-PPO-Lagrangian: the same reward, cost = complying with a harmful request (the gold cost
//                       judge), threshold d, learned multiplier
//   controls            the feedback labels shuffled (each pair's orientation flipped at random): PM accuracy and the
//                       harmlessness of RL-CAI against that PM
// Evaluation: one response per held-out prompt (templates never seen in training), sampled at temperature 1 (the
// policy's own distribution), scored by the gold judges; KL to SFT is the k1 estimate sum_t (log pi - log pi_sft)
// over the sampled response tokens. Helpfulness is over benign prompts (look-alikes included), harmlessness over
// harmful prompts, evasiveness and cost rate over all.
// Output: progress and a table (stage x metric, mean ± 95% half-width over the pooled prompts of every seed), the
// curves as CSV (out/curves.csv) and SVG (out/curves.svg), and as the LAST stdout line one JSON object with the worst
// seed's values (see the contract).
//
//   cai_constitutional_pipeline [--seeds 1,2,3] [--out DIR]        (CAI_DEBUG=1: the PM's accuracy by kind of pair)
#include <cai/cai.hpp>
#include <cai/constitution/adapters.hpp>
#include <cai/constitution/critique_revise.hpp>
#include <cai/constitution/default_constitution.hpp>
#include <cai/constitution/feedback.hpp>
#include <cai/models/transformer.hpp>
#include <cai/models/transformer_scalar.hpp>
#include <cai/trainers/dpo.hpp>
#include <cai/trainers/ppo.hpp>
#include <cai/trainers/reward.hpp>
#include <cai/trainers/safe_ppo.hpp>
#include <cai/trainers/sft.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "world.hpp"

namespace {

using cai_demo::world;
using backend_t = cai::threaded_host;
using lm_t = cai::models::transformer_lm<backend_t>;
using sm_t = cai::models::transformer_scalar<backend_t>;
using rl_objective = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::grpo>;

// Settings (one place; the README quotes them).
constexpr double kl_cap = 150.0;          // nats: the stated cap on every RL stage's KL to SFT
constexpr double cost_threshold = 0.05;   // Safe-PPO: episode cost rate budget
constexpr double judge_noise = 0.25;      // the feedback model's label noise
constexpr double judge_position_bias = 1.0;  // logit added to the first-shown option
constexpr double judge_sharpness = 4.0;      // logit per unit of gold preference difference
constexpr double critic_mistakes = 0.1;   // look-alikes the rule critic misreads as harmful
constexpr int rl_iterations = 24;
constexpr double kl_beta = 0.03;          // KL (k1, to the RL run's initial policy) in the reward

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Per-prompt gold outcomes of one stage on one seed.
struct outcomes {
  std::vector<double> help, harm, evas, kl, cost;
  void append(const outcomes& o) {
    for (auto [to, from] : {std::pair{&help, &o.help}, {&harm, &o.harm}, {&evas, &o.evas}, {&kl, &o.kl}, {&cost, &o.cost}})
      to->insert(to->end(), from->begin(), from->end());
  }
};

double mean(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return x.empty() ? 0.0 : s / static_cast<double>(x.size());
}
/// The 95% normal half-width of the mean.
double half_width(const std::vector<double>& x) {
  if (x.size() < 2) return 0.0;
  const double m = mean(x);
  double q = 0;
  for (double v : x) q += (v - m) * (v - m);
  return 1.96 * std::sqrt(q / static_cast<double>(x.size() - 1)) / std::sqrt(static_cast<double>(x.size()));
}

struct context {
  const world& w;
  const cai_demo::word_tokenizer& tok;
  const cai::constitution& con;
  cai::models::transformer_config cfg;
  std::vector<cai_demo::request> train, eval;
  std::uint64_t seed;
  std::ofstream* curves;
};

outcomes evaluate(const context& cx, lm_t& policy, lm_t& sft, std::uint64_t salt) {
  std::vector<std::vector<std::int32_t>> rows;
  for (const auto& r : cx.eval) rows.push_back(cx.tok.encode(cx.tok.apply_chat_template({{"user", r.text}}, true)));
  const auto pb = cai::detail::adapt::pad(rows);
  const cai::sampling_params sp{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .max_new_tokens = 16,
                                .seed = cai::derive_seed(cx.seed, salt), .stop = {}};
  const auto s = policy.sample(pb.batch(), sp, cx.tok.eos_id());
  const std::int64_t B = s.batch, T = s.length;
  cai::tensor<float, 2> lp_sft({B, T});
  sft.log_probs({.tokens = {s.tokens.data(), {B, T}}, .mask = {s.mask.data(), {B, T}}}, lp_sft.view());
  outcomes o;
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<std::int32_t> resp;
    double k = 0;
    bool ended = false;
    for (std::int64_t t = 0; t < T; ++t) {
      const auto i = static_cast<std::size_t>(b * T + t);
      if (!s.response[i]) continue;
      k += static_cast<double>(s.logp[i]) - static_cast<double>(lp_sft(b, t));
      if (s.tokens[i] == cx.tok.eos_id()) ended = true;
      if (!ended) resp.push_back(s.tokens[i]);
    }
    const auto& r = cx.eval[static_cast<std::size_t>(b)];
    const auto g = cx.w.gold(r.action, cx.tok.decode(resp));
    (cx.w.at(r.action).harmful ? o.harm : o.help).push_back(cx.w.at(r.action).harmful ? g.harmlessness : g.helpfulness);
    o.evas.push_back(g.evasive);
    o.kl.push_back(k);
    o.cost.push_back(cx.w.at(r.action).harmful && g.complies ? 1.0 : 0.0);
  }
  return o;
}

/// A scalar model's score of (prompt, response) as the reward / cost callable of the RL trainers.
auto scorer(const cai_demo::word_tokenizer& tok, sm_t& model) {
  return [&tok, &model](const cai::conversation& c, const std::string& text) {
    cai::conversation full = c;
    full.push_back({"assistant", text});
    const auto ids = tok.encode(tok.apply_chat_template(full, false));
    const std::vector<std::uint8_t> m(ids.size(), 1);
    const auto n = static_cast<std::int64_t>(ids.size());
    return static_cast<double>(model.sequence_scores({.tokens = {ids.data(), {1, n}}, .mask = {m.data(), {1, n}}})[0]);
  };
}

sm_t train_pm(const context& cx, const lm_t& init, std::vector<cai::preference_record> data, std::uint64_t salt) {
  sm_t pm(cx.cfg, backend_t{}, cai::derive_seed(cx.seed, salt));
  pm.load_trunk(init);
  cai::train_reward_model(pm, cx.tok, std::span<const cai::preference_record>(data),
                          {.batch_size = 16, .epochs = 3, .schedule = cai::cosine_schedule(1e-3, 5, 3 * (static_cast<std::int64_t>(data.size()) / 16 + 1)),
                           .shuffle_seed = cai::derive_seed(cx.seed, salt + 1), .shuffle = true});
  return pm;
}

/// Held-out PM pairs: canonical responses to the eval prompts, ordered by the gold preference (ties left out).
std::vector<cai::preference_record> held_out_pairs(const context& cx) {
  std::vector<cai::preference_record> held;
  for (std::size_t i = 0; i < cx.eval.size(); ++i) {
    const auto a = cx.eval[i].action;
    const std::array<std::string, 3> cand{cx.w.comply(a), world::refuse_explained(), world::refuse_evasive()};
    const std::string& x = cand[i % 3];
    const std::string& y = cand[(i + 1) % 3];
    const double gx = cx.w.gold(a, x).preference, gy = cx.w.gold(a, y).preference;
    if (gx != gy) held.push_back({{{"user", cx.eval[i].text}}, gx > gy ? x : y, gx > gy ? y : x, 1.0});
  }
  return held;
}

/// RL prompts of iteration `it`: 32 training requests, a fresh slice each iteration.
std::vector<cai::conversation> rl_prompts(const context& cx, int it, std::size_t offset) {
  std::vector<cai::conversation> ps;
  for (std::size_t k = 0; k < 32; ++k) ps.push_back({{"user", cx.train[(offset + static_cast<std::size_t>(it) * 32 + k) % cx.train.size()].text}});
  return ps;
}

cai::rl_options rl_opts(const context& cx, std::uint64_t salt) {
  return {.group_size = 4, .epochs = 1, .minibatch_size = 64,
          .sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .max_new_tokens = 16, .seed = cai::derive_seed(cx.seed, salt), .stop = {}},
          .schedule = cai::constant_schedule(6e-4)};
}

void log_curve(const context& cx, const char* run, int it, const cai::metric_map& m) {
  const auto get = [&](const char* k) { return m.contains(k) ? m.at(k) : std::nan(""); };
  *cx.curves << cx.seed << ',' << run << ',' << it << ',' << get("reward_mean") << ',' << get("kl") << ',' << get("cost_mean") << ','
             << get("lambda") << '\n';
}

template <class Score>
lm_t run_ppo(const context& cx, const lm_t& init, Score score, const char* name, std::uint64_t salt) {
  lm_t policy = init;
  rl_objective obj;
  obj.kl.beta = kl_beta;
  cai::ppo_trainer tr(policy, init, cx.tok, std::move(score), obj, rl_opts(cx, salt));
  for (int it = 0; it < rl_iterations; ++it) log_curve(cx, name, it, tr.iterate(rl_prompts(cx, it, 3600 + salt * 97)));
  return policy;
}

struct seed_result {
  std::map<std::string, outcomes> stages;
  double pm_accuracy = 0, shuffled_pm_accuracy = 0, lambda_final = 0;
};

seed_result run_seed(context& cx) {
  const auto t0 = std::chrono::steady_clock::now();
  const world& w = cx.w;
  seed_result res;
  auto& train = cx.train;
  cai::rng_stream rng(cx.seed, 99);
  for (std::size_t i = train.size(); i > 1; --i) std::swap(train[i - 1], train[rng.below(static_cast<std::uint32_t>(i))]);
  const auto note = [&](const char* what) {
    std::string m;
    if (const auto it = res.stages.find(what); it != res.stages.end())
      m = cai::detail::concat("help ", mean(it->second.help), " harmless ", mean(it->second.harm), " evasive ", mean(it->second.evas), " cost ",
                              mean(it->second.cost));
    std::fprintf(stderr, "  seed %llu: %-22s %6.1f s  %s\n", static_cast<unsigned long long>(cx.seed), what, seconds_since(t0), m.c_str());
  };

  // SFT: helpful-only.
  std::vector<cai::sft_record> sft_data;
  for (std::size_t i = 0; i < 1600; ++i) sft_data.push_back({{{"user", train[i].text}}, w.comply(train[i].action)});
  lm_t sft(cx.cfg, backend_t{}, cx.seed);
  cai::train_sft(sft, cx.tok, std::span<const cai::sft_record>(sft_data), {.batch_size = 16, .epochs = 2, .schedule = cai::cosine_schedule(3e-3, 10, 200)});
  res.stages["sft"] = evaluate(cx, sft, sft, 1);
  note("sft");

  // SL-CAI: the SFT model's answers to red-team requests, critiqued and revised by the rule critic.
  cai::policy_generator gen(sft, cx.tok);
  cai_demo::rule_critic critic(w, cx.con, gen, critic_mistakes, cx.seed);
  std::vector<cai::prompt_record> red;
  // The SL-CAI red-team set covers half of the harmful actions (every other one), as a red team never covers every
  // harm: RL-CAI's feedback prompts cover them all. The red-team set is data, the same for every seed.
  const auto covered = [&](std::size_t a) {
    std::size_t rank = 0;
    for (std::size_t b = 0; b < a; ++b) rank += w.at(b).harmful ? 1 : 0;
    return rank % 2 == 1;
  };
  for (std::size_t i = 1600; i < train.size() && red.size() < 500; ++i)
    if (!w.at(train[i].action).harmful || covered(train[i].action)) red.push_back({cai::detail::concat("r", i), {{"user", train[i].text}}});
  const auto recs = cai::critique_revise(critic, cx.con, red,
                                         {.revisions = 1, .few_shot = 1, .seed = cx.seed, .sampling = {.max_new_tokens = 16}, .batch_size = 64, .progress = false});
  std::vector<cai::sft_record> rev;
  for (const auto& r : recs)
    if (r.ok()) rev.push_back(r.to_sft());
  // As in the paper, the SL-CAI fine-tune mixes helpful samples in with the revisions (here: benign SFT records).
  for (std::size_t i = 0, added = 0; i < sft_data.size() && added < 400; ++i)
    if (!w.at(train[i].action).harmful) {
      rev.push_back(sft_data[i]);
      ++added;
    }
  {
    cai::rng_stream mix(cx.seed, 98);
    for (std::size_t i = rev.size(); i > 1; --i) std::swap(rev[i - 1], rev[mix.below(static_cast<std::uint32_t>(i))]);
  }
  lm_t sl = sft;
  cai::train_sft(sl, cx.tok, std::span<const cai::sft_record>(rev), {.batch_size = 16, .epochs = 3, .schedule = cai::cosine_schedule(2e-3, 5, 170)});
  res.stages["sl_cai"] = evaluate(cx, sl, sft, 2);
  note("sl_cai");

  // RLAIF labels and the gold human helpfulness labels.
  std::vector<cai::comparison> items;
  {
    std::vector<cai::conversation> convs;
    // Red-team requests: harmful ones and their benign look-alikes.
    for (std::size_t i = 2400; i < train.size() && convs.size() < 700; ++i)
      if (w.kind(train[i].action) != cai_demo::request_kind::benign) convs.push_back({{"user", train[i].text}});
    cai::policy_generator gsl(sl, cx.tok);
    const cai::sampling_params sp{.max_new_tokens = 16, .seed = cai::derive_seed(cx.seed, 7)};
    const auto ra = gsl.generate(convs, sp);
    const auto rb = gen.generate(convs, sp);
    const std::string evasive = world::refuse_evasive();
    // The SL-CAI sample against the SFT sample, or (every third request) against the terse refusal a harmless-only
    // assistant gives; shown in alternating order; identical or empty responses are skipped (the trainers reject
    // empty responses).
    for (std::size_t k = 0; k < convs.size(); ++k) {
      const std::string& other = k % 3 == 2 ? evasive : rb[k];
      if (ra[k] == other || ra[k].empty() || other.empty()) continue;
      const bool swap = items.size() % 2 == 1;
      items.push_back({cai::detail::concat("f", k), convs[k], swap ? other : ra[k], swap ? ra[k] : other});
    }
  }
  cai_demo::noisy_judge judge(w, judge_noise, judge_position_bias, cx.seed, judge_sharpness);
  const auto labels = cai::label_feedback(judge, cx.con, items, {.principles = 3, .both_orders = true, .seed = cx.seed, .progress = false});
  std::vector<cai::preference_record> pairs;
  for (const auto& l : labels)
    if (l.ok()) pairs.push_back(l.to_preference());
  std::vector<cai::preference_record> help_pairs;  // gold human helpfulness: comply > refuse on benign requests
  for (std::size_t i = 2500; i < 3100; ++i) {
    if (w.at(train[i].action).harmful) continue;
    help_pairs.push_back({{{"user", train[i].text}}, w.comply(train[i].action), i % 2 ? world::refuse_explained() : world::refuse_evasive(), 1.0});
  }
  pairs.insert(pairs.end(), help_pairs.begin(), help_pairs.end());
  const auto held = held_out_pairs(cx);
  sm_t pm = train_pm(cx, sl, pairs, 11);
  res.pm_accuracy = cai::evaluate_reward_model(pm, cx.tok, std::span<const cai::preference_record>(held)).accuracy;
  if (std::getenv("CAI_DEBUG")) {  // the PM's held-out accuracy by kind of pair, and a few AI labels
    std::map<std::string, std::vector<cai::preference_record>> cat;
    for (const auto& h : held) {
      const auto a = *w.parse_request(h.prompt[0].content);
      const std::string k = std::string(w.at(a).harmful ? "harmful" : w.at(a).look_alike ? "lookalike" : "benign") + ":" + h.chosen.substr(0, 6) + ">" + h.rejected.substr(0, 6) +
                            (h.rejected.find("because") != std::string::npos ? "(expl)" : "");
      cat[k].push_back(h);
    }
    for (const auto& [k, v] : cat)
      std::fprintf(stderr, "    pm %-40s n=%3zu acc %.3f\n", k.c_str(), v.size(), cai::evaluate_reward_model(pm, cx.tok, std::span<const cai::preference_record>(v)).accuracy);
    std::fprintf(stderr, "    pm train acc %.3f (%zu pairs, %zu AI)\n", cai::evaluate_reward_model(pm, cx.tok, std::span<const cai::preference_record>(pairs)).accuracy, pairs.size(), labels.size());
    int shown = 0;
    for (const auto& l : labels) if (shown++ < 12) std::fprintf(stderr, "    [%s] a=[%s] b=[%s] label %.2f\n", l.dialogue[0].content.c_str(), l.a.c_str(), l.b.c_str(), l.label);
  }
  note("rlaif + pm");

  // RL-CAI (PPO against the PM) and DPO on the same pairs.
  {
    lm_t rl = run_ppo(cx, sl, scorer(cx.tok, pm), "rl_cai", 21);
    res.stages["rl_cai"] = evaluate(cx, rl, sft, 3);
  }
  note("rl_cai");
  {
    std::vector<cai::preference_record> oriented;
    for (const auto& p : pairs) {
      if (std::abs(p.label.value_or(1.0) - 0.5) < 0.05) continue;
      if (p.label.value_or(1.0) > 0.5) oriented.push_back({p.prompt, p.chosen, p.rejected, std::nullopt});
      else oriented.push_back({p.prompt, p.rejected, p.chosen, std::nullopt});
    }
    lm_t dpo = sl;
    cai::train_dpo(dpo, sl, cx.tok, std::span<const cai::preference_record>(oriented), cai::dpo::rpo(0.1, 1.0),
                   {.batch_size = 16, .epochs = 1, .schedule = cai::constant_schedule(3e-4), .shuffle_seed = cai::derive_seed(cx.seed, 31), .shuffle = true});
    res.stages["rl_cai_dpo"] = evaluate(cx, dpo, sft, 4);
  }
  note("rl_cai_dpo");

  // Baseline: harmless-only RLHF on human-style harmlessness labels over the same kinds of pairs.
  {
    std::vector<cai::preference_record> hpairs;
    for (const auto& it : items) {
      const auto a = *w.parse_request(it.dialogue[0].content);
      const double sa = w.human_harmlessness_score(a, it.a), sb = w.human_harmlessness_score(a, it.b);
      if (sa == sb) continue;
      hpairs.push_back({it.dialogue, sa > sb ? it.a : it.b, sa > sb ? it.b : it.a, 1.0});
    }
    for (std::size_t i = 2500; i < 3100; ++i) {  // the crowd-worker's view of the helpfulness prompts' pairs
      const auto a = train[i].action;
      if (w.at(a).harmful) continue;
      const std::string x = w.comply(a), y = i % 2 ? world::refuse_explained() : world::refuse_evasive();
      const double sx = w.human_harmlessness_score(a, x), sy = w.human_harmlessness_score(a, y);
      if (sx != sy) hpairs.push_back({{{"user", train[i].text}}, sx > sy ? x : y, sx > sy ? y : x, 1.0});
    }
    sm_t pmh = train_pm(cx, sl, hpairs, 41);
    lm_t rl = run_ppo(cx, sl, scorer(cx.tok, pmh), "harmless_only_rlhf", 43);
    res.stages["harmless_only_rlhf"] = evaluate(cx, rl, sft, 5);
  }
  note("harmless_only_rlhf");

  // Unconstrained PPO and Safe-PPO against a helpfulness-only PM (compliance preferred on every request).
  {
    std::vector<cai::preference_record> hp;
    for (std::size_t i = 2500; i < 3100; ++i)
      hp.push_back({{{"user", train[i].text}}, w.comply(train[i].action), i % 2 ? world::refuse_explained() : world::refuse_evasive(), 1.0});
    sm_t pmy = train_pm(cx, sl, hp, 51);
    lm_t un = run_ppo(cx, sl, scorer(cx.tok, pmy), "ppo_unconstrained", 53);
    res.stages["ppo_unconstrained"] = evaluate(cx, un, sft, 6);
    note("ppo_unconstrained");
    const auto gold_cost = [&w](const cai::conversation& c, const std::string& text) {
      const auto a = w.parse_request(c.back().content);
      return a && w.at(*a).harmful && w.gold(*a, text).complies ? 1.0 : 0.0;
    };
    lm_t safe = sl;
    rl_objective obj;
    obj.kl.beta = kl_beta;
    cai::safe_ppo_trainer tr(safe, sl, cx.tok, scorer(cx.tok, pmy), gold_cost, obj, rl_opts(cx, 55),
                             {.lambda_init = 2.0, .lambda_lr = 2.0, .lambda_max = 10.0, .threshold = cost_threshold, .window = 128});
    cai::metric_map last;
    for (int it = 0; it < rl_iterations; ++it) {
      last = tr.iterate(rl_prompts(cx, it, 3600 + 55 * 97));
      log_curve(cx, "safe_ppo", it, last);
    }
    res.lambda_final = last.at("lambda");
    res.stages["safe_ppo"] = evaluate(cx, safe, sft, 7);
  }
  note("safe_ppo");

  // Negative control: the feedback labels (and the helpfulness labels) shuffled.
  {
    auto shuffled = pairs;
    cai::rng_stream coin(cx.seed, 61);
    for (auto& p : shuffled)
      if (coin.below(2) == 1) std::swap(p.chosen, p.rejected);
    sm_t pms = train_pm(cx, sl, shuffled, 63);
    res.shuffled_pm_accuracy = cai::evaluate_reward_model(pms, cx.tok, std::span<const cai::preference_record>(held)).accuracy;
    lm_t rl = run_ppo(cx, sl, scorer(cx.tok, pms), "control_shuffled", 65);
    res.stages["control_shuffled_rl_cai"] = evaluate(cx, rl, sft, 8);
  }
  note("controls");
  return res;
}

void write_svg(const std::filesystem::path& csv, const std::filesystem::path& svg) {
  // reward_mean per iteration for every (seed, run), one polyline each, runs coloured.
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  double lo = 1e300, hi = -1e300, xmax = 1;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::size_t p = 0;
    for (std::size_t q; (q = line.find(',', p)) != std::string::npos; p = q + 1) f.push_back(line.substr(p, q - p));
    f.push_back(line.substr(p));
    if (f.size() < 4) continue;
    const double x = std::stod(f[2]), y = std::stod(f[3]);
    if (!std::isfinite(y)) continue;
    series[f[1] + " seed " + f[0]].push_back({x, y});
    lo = std::min(lo, y);
    hi = std::max(hi, y);
    xmax = std::max(xmax, x);
  }
  if (!(hi > lo)) hi = lo + 1;
  const std::map<std::string, std::string> colour{{"rl_cai", "#1f77b4"}, {"harmless_only_rlhf", "#ff7f0e"}, {"ppo_unconstrained", "#d62728"},
                                                  {"safe_ppo", "#2ca02c"}, {"control_shuffled", "#7f7f7f"}};
  std::ofstream out(svg);
  out << "<svg xmlns='http://www.w3.org/2000/svg' width='720' height='420'>\n<rect width='720' height='420' fill='white'/>\n"
      << "<text x='20' y='24' font-family='sans-serif' font-size='14'>mean reward (own reward model) per RL iteration</text>\n";
  int legend = 0;
  for (const auto& [name, pts] : series) {
    const std::string run = name.substr(0, name.find(" seed "));
    const std::string c = colour.contains(run) ? colour.at(run) : "#000000";
    out << "<polyline fill='none' stroke='" << c << "' stroke-width='1.5' points='";
    for (const auto& [x, y] : pts) out << 40 + 520 * x / xmax << ',' << 400 - 350 * (y - lo) / (hi - lo) << ' ';
    out << "'/>\n";
    if (name.ends_with(" seed 1") || legend == 0) {
      out << "<text x='580' y='" << 60 + 18 * legend << "' font-family='sans-serif' font-size='12' fill='" << c << "'>" << run << "</text>\n";
      ++legend;
    }
  }
  out << "</svg>\n";
}

}  // namespace

int main(int argc, char** argv) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::uint64_t> seeds{1, 2, 3};
  std::filesystem::path out_dir = "constitutional_pipeline_out";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seeds" && i + 1 < argc) {
      seeds.clear();
      std::string s = argv[++i];
      for (std::size_t p = 0; p < s.size();) {
        const auto q = s.find(',', p);
        seeds.push_back(std::stoull(s.substr(p, q == std::string::npos ? std::string::npos : q - p)));
        p = q == std::string::npos ? s.size() : q + 1;
      }
    } else if (a == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--seeds 1,2,3] [--out DIR]\n", argv[0]);
      return 2;
    }
  }
  if (seeds.empty()) {
    std::fprintf(stderr, "--seeds: at least one seed\n");
    return 2;
  }
  std::filesystem::create_directories(out_dir);
  const world w;
  const cai_demo::word_tokenizer tok(w);
  std::ofstream curves(out_dir / "curves.csv");
  curves << "seed,run,iteration,reward_mean,kl,cost_mean,lambda\n";
  std::vector<cai_demo::request> eval;
  const auto held = w.requests(true);
  for (std::size_t i = 0; i < held.size(); i += 3) eval.push_back(held[i]);
  std::printf("cai Constitutional AI pipeline: %zu actions (%zu harmful), %zu training requests, %zu held-out eval prompts, seeds",
              w.actions().size(), static_cast<std::size_t>(std::count_if(w.actions().begin(), w.actions().end(), [](const auto& a) { return a.harmful; })),
              w.requests(false).size(), eval.size());
  for (auto s : seeds) std::printf(" %llu", static_cast<unsigned long long>(s));
  std::printf("\n");

  std::vector<seed_result> results;
  for (auto seed : seeds) {
    context cx{w, tok, cai::default_constitution(),
               {.vocab = tok.vocab_size(), .d_model = 48, .n_heads = 4, .n_layers = 2, .d_ff = 128, .max_seq = 40},
               w.requests(false), eval, seed, &curves};
    results.push_back(run_seed(cx));
  }
  curves.close();
  write_svg(out_dir / "curves.csv", out_dir / "curves.svg");

  const std::vector<std::string> order{"sft", "sl_cai", "rl_cai", "rl_cai_dpo", "harmless_only_rlhf", "ppo_unconstrained", "safe_ppo",
                                       "control_shuffled_rl_cai"};
  std::printf("\n%-24s %-15s %-15s %-15s %-15s %-8s\n", "stage", "helpfulness", "harmlessness", "evasiveness", "KL to SFT", "cost");
  for (const auto& st : order) {
    outcomes all;
    for (const auto& r : results) all.append(r.stages.at(st));
    std::printf("%-24s %.3f ± %.3f   %.3f ± %.3f   %.3f ± %.3f   %6.2f ± %5.2f  %.3f\n", st.c_str(), mean(all.help), half_width(all.help),
                mean(all.harm), half_width(all.harm), mean(all.evas), half_width(all.evas), mean(all.kl), half_width(all.kl), mean(all.cost));
  }
  nlohmann::json j;
  j["seeds"] = seeds;
  j["eval_prompts"] = eval.size();
  nlohmann::json stages;
  for (const auto& st : order) {
    if (st.starts_with("control")) continue;
    double help = 1e300, harm = 1e300, evas = -1e300, kl = -1e300, cost = -1e300;
    for (const auto& r : results) {
      const auto& o = r.stages.at(st);
      help = std::min(help, mean(o.help));
      harm = std::min(harm, mean(o.harm));
      evas = std::max(evas, mean(o.evas));
      kl = std::max(kl, mean(o.kl));
      cost = std::max(cost, mean(o.cost));
    }
    double ratio = 1e300;  // this stage's helpfulness over SFT's, seed by seed
    for (const auto& r : results) ratio = std::min(ratio, mean(r.stages.at(st).help) / std::max(mean(r.stages.at("sft").help), 1e-12));
    nlohmann::json s{{"helpfulness", help}, {"harmlessness", harm}, {"evasiveness", evas}, {"kl_to_sft", kl}, {"helpfulness_vs_sft", ratio}};
    if (st == "ppo_unconstrained" || st == "safe_ppo") {
      if (st == "ppo_unconstrained") {  // the unconstrained run's LOWEST cost is its worst case against the bar
        cost = 1e300;
        for (const auto& r : results) cost = std::min(cost, mean(r.stages.at(st).cost));
      }
      s["cost_rate"] = cost;
      s["cost_threshold"] = cost_threshold;
    }
    if (st == "safe_ppo") {
      double lam = 1e300;
      for (const auto& r : results) lam = std::min(lam, r.lambda_final);
      s["lambda_final"] = lam;
    }
    stages[st] = s;
  }
  j["stages"] = stages;
  double pm = 1e300, spm = -1e300, sharm = -1e300;
  for (const auto& r : results) {
    pm = std::min(pm, r.pm_accuracy);
    spm = std::max(spm, r.shuffled_pm_accuracy);
    sharm = std::max(sharm, mean(r.stages.at("control_shuffled_rl_cai").harm));
  }
  j["pm_accuracy"] = pm;
  j["controls"] = {{"shuffled_pm_accuracy", spm}, {"shuffled_rl_cai_harmlessness", sharm}};
  j["kl_cap"] = kl_cap;
  j["judge"] = {{"noise", judge_noise}, {"position_bias", judge_position_bias}};
  j["seconds"] = seconds_since(t0);
  std::printf("curves: %s, %s\n", (out_dir / "curves.csv").string().c_str(), (out_dir / "curves.svg").string().c_str());
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
