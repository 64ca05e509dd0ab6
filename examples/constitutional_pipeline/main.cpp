// examples/constitutional_pipeline/main.cpp — the Constitutional AI pipeline (Bai et al. 2022) end to end on the
// embedded transformer in a synthetic world with gold judges (world.hpp):
//   SFT (helpful-only) -> SL-CAI (critique-revise by the rule critic through cai::critique_revise, fine-tune)
//   -> RLAIF labels (noisy, position-biased feedback model through cai::label_feedback) + gold "human" helpfulness
//   labels -> preference model -> RL-CAI (PPO-clip against the PM) and DPO on the same labels
// evaluated on held-out request templates with the gold judges.
//
// STATUS (issue 8, in progress): one seed, stages SFT, SL-CAI, RLAIF, PM, RL-CAI. Measured on 2 cores (seed 1):
// SFT helpfulness 0.63 (the word copy of the action is still imperfect when sampling at T = 1), SL-CAI harmlessness
// 0.98 with helpfulness 0.70; the AI labels are 15% on the wrong side of gold; the preference model trained from
// scratch does NOT learn yet (held-out accuracy 0.56), so RL-CAI drifts towards compliance. Still to do: PM init from
// the SFT trunk / more data, DPO, the baselines (harmless-only RLHF, unconstrained PPO vs Safe-PPO), negative
// controls, 3 seeds, table with intervals, CSV/SVG curves, the JSON line, the README demo command, CI assertions.
//
//   cai_constitutional_pipeline
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
#include <cai/trainers/sft.hpp>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "world.hpp"

namespace {

using cai_demo::world;
using backend_t = cai::threaded_host;
using lm_t = cai::models::transformer_lm<backend_t>;
using sm_t = cai::models::transformer_scalar<backend_t>;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct stage_result {
  double helpfulness = 0, harmlessness = 0, evasiveness = 0, kl_to_sft = 0, cost_rate = 0;
  double help_hw = 0, harm_hw = 0, evas_hw = 0, kl_hw = 0;  // 95% half-widths
};

/// Mean and the 95% normal half-width of a sample.
std::pair<double, double> mean_ci(const std::vector<double>& x) {
  if (x.empty()) return {0.0, 0.0};
  double s = 0;
  for (double v : x) s += v;
  const double m = s / static_cast<double>(x.size());
  double q = 0;
  for (double v : x) q += (v - m) * (v - m);
  const double sd = x.size() > 1 ? std::sqrt(q / static_cast<double>(x.size() - 1)) : 0.0;
  return {m, 1.96 * sd / std::sqrt(static_cast<double>(x.size()))};
}

/// Samples one response per eval prompt from `policy` (temperature 1: the policy's own distribution) and scores it
/// with the gold judges; KL to SFT is the k1 estimate sum_t (log pi - log pi_sft) over the response tokens.
stage_result evaluate(const world& w, const cai_demo::word_tokenizer& tok, lm_t& policy, lm_t& sft,
                      const std::vector<cai_demo::request>& eval, std::uint64_t seed) {
  std::vector<std::vector<std::int32_t>> rows;
  for (const auto& r : eval) rows.push_back(tok.encode(tok.apply_chat_template({{"user", r.text}}, true)));
  const auto pb = cai::detail::adapt::pad(rows);
  const cai::sampling_params sp{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .max_new_tokens = 24, .seed = seed, .stop = {}};
  const auto s = policy.sample(pb.batch(), sp, tok.eos_id());
  const std::int64_t B = s.batch, T = s.length;
  cai::tensor<float, 2> lp_sft({B, T});
  const cai::token_batch tb{.tokens = {s.tokens.data(), {B, T}}, .mask = {s.mask.data(), {B, T}}};
  sft.log_probs(tb, lp_sft.view());
  std::vector<double> help, harm, evas, kl;
  double cost = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<std::int32_t> resp;
    double k = 0;
    bool ended = false;
    for (std::int64_t t = 0; t < T; ++t) {
      const auto i = static_cast<std::size_t>(b * T + t);
      if (!s.response[i]) continue;
      k += static_cast<double>(s.logp[i]) - static_cast<double>(lp_sft(b, t));
      if (s.tokens[i] == tok.eos_id()) ended = true;
      if (!ended) resp.push_back(s.tokens[i]);
    }
    const auto& r = eval[static_cast<std::size_t>(b)];
    const auto g = w.gold(r.action, tok.decode(resp));
    if (w.at(r.action).harmful) harm.push_back(g.harmlessness);
    else help.push_back(g.helpfulness);
    evas.push_back(g.evasive);
    kl.push_back(k);
    cost += w.at(r.action).harmful && g.complies ? 1.0 : 0.0;
  }
  stage_result out;
  std::tie(out.helpfulness, out.help_hw) = mean_ci(help);
  std::tie(out.harmlessness, out.harm_hw) = mean_ci(harm);
  std::tie(out.evasiveness, out.evas_hw) = mean_ci(evas);
  std::tie(out.kl_to_sft, out.kl_hw) = mean_ci(kl);
  out.cost_rate = cost / static_cast<double>(B);
  return out;
}

void print_row(const char* name, const stage_result& r) {
  std::printf("  %-20s help %.3f±%.3f  harmless %.3f±%.3f  evasive %.3f±%.3f  KL %.2f±%.2f  cost %.3f\n", name, r.helpfulness,
              r.help_hw, r.harmlessness, r.harm_hw, r.evasiveness, r.evas_hw, r.kl_to_sft, r.kl_hw, r.cost_rate);
}

}  // namespace

int main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  const auto t0 = std::chrono::steady_clock::now();
  const world w;
  const cai_demo::word_tokenizer tok(w);
  const cai::constitution& con = cai::default_constitution();
  const std::uint64_t seed = 1;
  const cai::models::transformer_config cfg{.vocab = tok.vocab_size(), .d_model = 48, .n_heads = 4, .n_layers = 2, .d_ff = 128, .max_seq = 48};

  auto train = w.requests(false);
  auto eval_all = w.requests(true);
  std::vector<cai_demo::request> eval;
  for (std::size_t i = 0; i < eval_all.size(); i += 2) eval.push_back(eval_all[i]);
  // Shuffle the training requests (deterministic for the seed).
  cai::rng_stream rng(seed, 99);
  for (std::size_t i = train.size(); i > 1; --i) std::swap(train[i - 1], train[rng.below(static_cast<std::uint32_t>(i))]);

  // SFT: helpful-only.
  std::vector<cai::sft_record> sft_data;
  for (std::size_t i = 0; i < 1600; ++i) sft_data.push_back({{{"user", train[i].text}}, world::comply(w.at(train[i].action).text)});
  lm_t sft(cfg, backend_t{}, seed);
  auto s1 = cai::train_sft(sft, tok, std::span<const cai::sft_record>(sft_data),
                           {.batch_size = 16, .epochs = 3, .schedule = cai::cosine_schedule(3e-3, 10, 300)});
  std::printf("sft: loss %.3f -> %.3f, %lld steps (%.1f s)\n", s1.first_loss, s1.last_loss, static_cast<long long>(s1.steps), seconds_since(t0));
  const auto e_sft = evaluate(w, tok, sft, sft, eval, 5);
  print_row("sft", e_sft);
  std::printf("(%.1f s)\n", seconds_since(t0));

  // SL-CAI.
  cai::policy_generator gen(sft, tok);
  cai_demo::rule_critic critic(w, con, gen, 0.1, seed);
  std::vector<cai::prompt_record> red;
  for (std::size_t i = 1600; i < 2400; ++i) red.push_back({cai::detail::concat("r", i), {{"user", train[i].text}}});
  const auto recs = cai::critique_revise(critic, con, red,
                                         {.revisions = 1, .few_shot = 1, .seed = seed, .sampling = {.max_new_tokens = 24}, .batch_size = 64, .progress = false});
  std::vector<cai::sft_record> rev;
  for (const auto& r : recs)
    if (r.ok()) rev.push_back(r.to_sft());
  lm_t sl = sft;
  auto s2 = cai::train_sft(sl, tok, std::span<const cai::sft_record>(rev),
                           {.batch_size = 16, .epochs = 3, .schedule = cai::cosine_schedule(2e-3, 5, 150)});
  std::printf("sl-cai: %zu revisions, loss %.3f -> %.3f (%.1f s)\n", rev.size(), s2.first_loss, s2.last_loss, seconds_since(t0));
  const auto e_sl = evaluate(w, tok, sl, sft, eval, 6);
  print_row("sl_cai", e_sl);
  std::printf("(%.1f s)\n", seconds_since(t0));

  // RLAIF: pairs of responses (SL-CAI sample, SFT sample) to red-team requests, labelled by the noisy feedback model
  // through cai::label_feedback (both orders, an ensemble of principles); gold "human" helpfulness labels on benign
  // requests.
  std::vector<cai::comparison> items;
  {
    std::vector<cai::conversation> convs;
    for (std::size_t i = 2400; i < 3000; ++i) convs.push_back({{"user", train[i].text}});
    cai::policy_generator gsl(sl, tok);
    const cai::sampling_params sp{.max_new_tokens = 24, .seed = seed + 7};
    const auto ra = gsl.generate(convs, sp);
    auto rb = gen.generate(convs, sp);
    for (std::size_t k = 0; k < convs.size(); ++k) {
      // A third of the pairs set the SL-CAI sample against the terse refusal a harmless-only assistant gives.
      if (k % 3 == 2) rb[k] = world::refuse_evasive();
      if (ra[k] == rb[k]) continue;
      const bool swap = k % 2 == 1;
      items.push_back({cai::detail::concat("f", k), convs[k], swap ? rb[k] : ra[k], swap ? ra[k] : rb[k]});
    }
  }
  cai_demo::noisy_judge judge(w, 0.25, 1.0, seed);
  const auto labels = cai::label_feedback(judge, con, items, {.principles = 3, .both_orders = true, .seed = seed, .progress = false});
  std::vector<cai::preference_record> pm_data;
  int wrong = 0, counted = 0;
  for (const auto& l : labels) {
    if (!l.ok()) continue;
    pm_data.push_back(l.to_preference());
    const auto a = *w.parse_request(l.dialogue[0].content);
    const double ga = w.gold(a, l.a).preference, gb = w.gold(a, l.b).preference;
    if (ga != gb) {
      ++counted;
      wrong += (l.label > 0.5) != (ga > gb) ? 1 : 0;
    }
  }
  std::size_t human = 0;
  for (std::size_t i = 3000; i < 3600 && human < 300; ++i) {
    if (w.at(train[i].action).harmful) continue;
    const auto& act = w.at(train[i].action).text;
    pm_data.push_back({{{"user", train[i].text}}, world::comply(act), human % 2 ? world::refuse_explained(act) : world::refuse_evasive(), 1.0});
    ++human;
  }
  for (std::size_t i = pm_data.size(); i > 1; --i) std::swap(pm_data[i - 1], pm_data[rng.below(static_cast<std::uint32_t>(i))]);
  std::printf("rlaif: %zu AI labels (%.1f%% on the wrong side of gold), %zu human helpfulness labels (%.1f s)\n", labels.size(),
              100.0 * wrong / std::max(counted, 1), human, seconds_since(t0));

  // Preference model.
  sm_t pm(cfg, backend_t{}, seed + 1);
  auto s3 = cai::train_reward_model(pm, tok, std::span<const cai::preference_record>(pm_data),
                                    {.batch_size = 16, .epochs = 5, .schedule = cai::cosine_schedule(2e-3, 5, 250)});
  std::vector<cai::preference_record> held;
  for (std::size_t i = 0; i < eval.size(); ++i) {
    const auto& act = w.at(eval[i].action).text;
    const std::array<std::string, 3> cand{world::comply(act), world::refuse_explained(act), world::refuse_evasive()};
    const std::string& x = cand[i % 3];
    const std::string& y = cand[(i + 1) % 3];
    const double gx = w.gold(eval[i].action, x).preference, gy = w.gold(eval[i].action, y).preference;
    if (gx == gy) continue;
    held.push_back({{{"user", eval[i].text}}, gx > gy ? x : y, gx > gy ? y : x, 1.0});
  }
  const auto pmm = cai::evaluate_reward_model(pm, tok, std::span<const cai::preference_record>(held));
  std::printf("pm: loss %.3f -> %.3f, held-out accuracy %.3f on %zu pairs (%.1f s)\n", s3.first_loss, s3.last_loss, pmm.accuracy, held.size(),
              seconds_since(t0));

  // RL-CAI: PPO-clip with group-normalised advantages against the PM, KL to SL-CAI in the reward.
  const auto pm_score = [&](const cai::conversation& c, const std::string& text) {
    cai::conversation full = c;
    full.push_back({"assistant", text});
    const auto ids = tok.encode(tok.apply_chat_template(full, false));
    const std::vector<std::uint8_t> m(ids.size(), 1);
    const auto n = static_cast<std::int64_t>(ids.size());
    return static_cast<double>(pm.sequence_scores({.tokens = {ids.data(), {1, n}}, .mask = {m.data(), {1, n}}})[0]);
  };
  lm_t rl = sl;
  cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::grpo> obj;
  obj.kl.beta = 0.05;
  cai::ppo_trainer tr(rl, sl, tok, pm_score, obj,
                      cai::rl_options{.group_size = 4, .epochs = 2, .minibatch_size = 64,
                                      .sampling = {.max_new_tokens = 20, .seed = seed + 11},
                                      .schedule = cai::constant_schedule(1e-3)});
  for (int it = 0; it < 20; ++it) {
    std::vector<cai::conversation> ps;
    for (std::size_t k = 0; k < 32; ++k) ps.push_back({{"user", train[(3600 + static_cast<std::size_t>(it) * 32 + k) % train.size()].text}});
    const auto m = tr.iterate(ps);
    if (it % 5 == 4) std::printf("  rl iter %d reward %.3f kl %.3f\n", it + 1, m.at("reward_mean"), m.at("kl"));
  }
  const auto e_rl = evaluate(w, tok, rl, sft, eval, 7);
  print_row("rl_cai", e_rl);
  std::printf("(%.1f s)\n", seconds_since(t0));
  return 0;
}
