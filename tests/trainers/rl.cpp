// Online RL trainers (cai/trainers/ppo.hpp, safe_ppo.hpp): learning direction on tiny runs, determinism, bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cai/models/byte_tokenizer.hpp"
#include "cai/models/transformer.hpp"
#include "cai/models/transformer_scalar.hpp"
#include "cai/trainers/ppo.hpp"
#include "cai/trainers/safe_ppo.hpp"
#include "../file_support.hpp"
#include "../support.hpp"

namespace {

using lm_t = cai::models::transformer_lm<>;
using vm_t = cai::models::transformer_scalar<>;
const cai::models::transformer_config tiny{.vocab = 257, .d_model = 16, .n_heads = 2, .n_layers = 1, .d_ff = 32, .max_seq = 48};
const cai::models::byte_tokenizer tok;

static_assert(cai::rl_critic<vm_t>);

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const cai::invalid_argument& e) {
    return e.what();
  }
  return "(no cai::invalid_argument)";
}

/// Fraction of response bytes in [lo, hi] (0 for an empty response): dense enough for a tiny model to learn.
double frac_in(const std::string& s, char lo, char hi) {
  if (s.empty()) return 0.0;
  double n = 0;
  for (char c : s) n += (c >= lo && c <= hi) ? 1.0 : 0.0;
  return n / static_cast<double>(s.size());
}
// Reward: the share of letters a..p. Cost: the share of letters a..h (half the rewarded set: correlated).
auto reward_fn = [](const cai::conversation&, const std::string& r) { return frac_in(r, 'a', 'p'); };
auto cost_fn = [](const cai::conversation&, const std::string& r) { return frac_in(r, 'a', 'h'); };

const std::vector<cai::conversation> prompts{{{"user", "hi"}}, {{"user", "yo"}}};

cai::rl_options base_options(std::int64_t group) {
  cai::rl_options o;
  o.group_size = group;
  o.epochs = 2;
  o.minibatch_size = 0;
  o.sampling.max_new_tokens = 5;
  o.sampling.seed = 7;
  o.schedule = cai::constant_schedule(2e-2);
  o.critic_schedule = cai::constant_schedule(1e-2);
  return o;
}

double mean_first(const std::vector<double>& v, std::size_t k) {
  double s = 0;
  for (std::size_t i = 0; i < k; ++i) s += v[i];
  return s / static_cast<double>(k);
}
double mean_last(const std::vector<double>& v, std::size_t k) {
  double s = 0;
  for (std::size_t i = v.size() - k; i < v.size(); ++i) s += v[i];
  return s / static_cast<double>(k);
}

template <class Obj, class Critic = cai::no_critic>
std::vector<double> run_rewards(const Obj& obj, std::int64_t group, int iters, Critic* critic = nullptr, cai::rl_options o = base_options(1),
                                std::vector<double>* kls = nullptr) {
  lm_t lm(tiny, cai::host{}, 3);
  const lm_t ref(tiny, cai::host{}, 3);
  o.group_size = group;
  cai::ppo_trainer tr(lm, ref, tok, reward_fn, obj, o, critic);
  std::vector<double> rewards;
  for (int i = 0; i < iters; ++i) {
    const auto m = tr.iterate(prompts);
    rewards.push_back(m.at("reward_mean"));
    if (kls) kls->push_back(m.at("kl"));
  }
  return rewards;
}

}  // namespace

TEST_CASE("ppo with a critic raises the mean reward", "[trainer]") {
  const auto t0 = std::chrono::steady_clock::now();
  vm_t critic(tiny, cai::host{}, 5);
  cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::gae> obj;
  obj.kl.beta = 0.01;
  obj.estimator.gamma = 1.0;
  obj.estimator.lambda = 0.95;
  std::vector<double> kls;
  const auto r = run_rewards(obj, 4, 30, &critic, base_options(4), &kls);
  const double before = mean_first(r, 5), after = mean_last(r, 5);
  std::printf("ppo+critic: reward %.3f -> %.3f, last kl %.4f (%.2f s)\n", before, after, kls.back(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  CHECK(after > before + 0.15);
  for (double k : kls) CHECK(std::isfinite(k));
}

TEST_CASE("grpo without a critic raises the mean reward", "[trainer]") {
  const auto t0 = std::chrono::steady_clock::now();
  cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_loss<cai::kl::k3>, cai::agg::token_mean, cai::adv::grpo> obj;
  obj.kl.coef = 0.01;
  std::vector<double> kls;
  const auto r = run_rewards(obj, 4, 30, static_cast<cai::no_critic*>(nullptr), base_options(4), &kls);
  const double before = mean_first(r, 5), after = mean_last(r, 5);
  std::printf("grpo: reward %.3f -> %.3f, last kl %.4f (%.2f s)\n", before, after, kls.back(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  CHECK(after > before + 0.15);
  for (double k : kls) CHECK(std::isfinite(k));
}

TEST_CASE("rloo without a critic raises the mean reward", "[trainer]") {
  const auto t0 = std::chrono::steady_clock::now();
  cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean, cai::adv::rloo> obj;
  const auto r = run_rewards(obj, 4, 30);
  const double before = mean_first(r, 5), after = mean_last(r, 5);
  std::printf("rloo: reward %.3f -> %.3f (%.2f s)\n", before, after,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  CHECK(after > before + 0.15);
}

TEST_CASE("rl runs are deterministic for a seed", "[trainer]") {
  cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean, cai::adv::grpo> obj;
  const auto a = run_rewards(obj, 4, 4);
  const auto b = run_rewards(obj, 4, 4);
  CHECK(a == b);
}

TEST_CASE("the adaptive kl controller moves beta toward its target", "[trainer]") {
  cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::grpo> obj;
  lm_t lm(tiny, cai::host{}, 3);
  const lm_t ref(tiny, cai::host{}, 3);
  auto o = base_options(4);
  // The policy starts equal to the reference (KL 0 < target): beta must shrink every iteration.
  o.adaptive_kl = cai::adaptive_kl_controller({.init = 0.2, .target = 1.0, .horizon = 40, .error_clip = 0.2});
  std::vector<double> betas;
  o.on_metrics = [&](std::int64_t, const cai::metric_map& m) { betas.push_back(m.at("beta")); };
  cai::ppo_trainer tr(lm, ref, tok, reward_fn, obj, o);
  double kl = 0;
  for (int i = 0; i < 6; ++i) kl = tr.iterate(prompts).at("kl");
  REQUIRE(betas.size() == 6);
  std::printf("adaptive kl: beta %.4f -> %.4f, kl %.4f (target 1)\n", 0.2, betas.back(), kl);
  CHECK(betas[0] < 0.2);
  for (std::size_t i = 1; i < betas.size(); ++i) CHECK(betas[i] < betas[i - 1]);
  CHECK(std::isfinite(kl));
  CHECK(kl < 1.0);
}

TEST_CASE("rl trainers reject bad input naming the argument", "[trainer]") {
  lm_t lm(tiny, cai::host{}, 3);
  const lm_t ref(tiny, cai::host{}, 3);
  cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean, cai::adv::grpo> obj;
  auto o = base_options(0);
  CHECK(error_of([&] { cai::ppo_trainer tr(lm, ref, tok, reward_fn, obj, o); }).find("group_size") != std::string::npos);
  o = base_options(2);
  o.epochs = 0;
  CHECK(error_of([&] { cai::ppo_trainer tr(lm, ref, tok, reward_fn, obj, o); }).find("epochs") != std::string::npos);
  o = base_options(2);
  cai::ppo_trainer tr(lm, ref, tok, reward_fn, obj, o);
  CHECK(error_of([&] { tr.iterate(std::span<const cai::conversation>{}); }).find("prompts") != std::string::npos);
  cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean, cai::adv::rloo> rloo;
  o = base_options(1);
  CHECK(error_of([&] { cai::ppo_trainer t2(lm, ref, tok, reward_fn, rloo, o); }).find("group_size") != std::string::npos);
  auto bad = [](const cai::conversation&, const std::string&) { return std::nan(""); };
  cai::ppo_trainer t3(lm, ref, tok, bad, obj, base_options(2));
  CHECK(error_of([&] { t3.iterate(prompts); }).find("reward") != std::string::npos);
}

TEST_CASE("safe ppo lagrangian keeps the cost below the unconstrained run", "[trainer]") {
  const auto t0 = std::chrono::steady_clock::now();
  using obj_t = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean, cai::adv::grpo>;
  const int iters = 30;
  // Unconstrained: reward only; its cost (a..h, half the rewarded letters) rises along with the reward.
  std::vector<double> free_cost, free_reward;
  {
    lm_t lm(tiny, cai::host{}, 3);
    const lm_t ref(tiny, cai::host{}, 3);
    cai::ppo_trainer tr(lm, ref, tok, reward_fn, obj_t{}, base_options(4));
    for (int i = 0; i < iters; ++i) {
      const auto m = tr.iterate(prompts);
      free_reward.push_back(m.at("reward_mean"));
    }
  }
  std::vector<double> safe_cost, safe_reward, lambdas;
  {
    lm_t lm(tiny, cai::host{}, 3);
    const lm_t ref(tiny, cai::host{}, 3);
    cai::safe_ppo_trainer tr(lm, ref, tok, reward_fn, cost_fn, obj_t{}, base_options(4),
                             {.lambda_init = 1.0, .lambda_lr = 0.5, .lambda_max = 20.0, .threshold = 0.05, .window = 16});
    for (int i = 0; i < iters; ++i) {
      const auto m = tr.iterate(prompts);
      safe_cost.push_back(m.at("cost_mean"));
      safe_reward.push_back(m.at("reward_mean"));
      lambdas.push_back(m.at("lambda"));
    }
  }
  // The same unconstrained run through safe_ppo_trainer with a negligible multiplier that cannot grow, to log costs.
  {
    lm_t lm(tiny, cai::host{}, 3);
    const lm_t ref(tiny, cai::host{}, 3);
    cai::safe_ppo_trainer tr(lm, ref, tok, reward_fn, cost_fn, obj_t{}, base_options(4),
                             {.lambda_init = 1e-9, .lambda_lr = 1e-9, .lambda_max = 1e-9, .threshold = 0.0, .window = 16});
    for (int i = 0; i < iters; ++i) free_cost.push_back(tr.iterate(prompts).at("cost_mean"));
  }
  const double fc = mean_last(free_cost, 5), sc = mean_last(safe_cost, 5);
  std::printf("safe ppo: free reward %.3f -> %.3f, free cost %.3f -> %.3f; safe reward %.3f -> %.3f, safe cost %.3f -> %.3f, "
              "lambda %.3f (max %.3f) (%.2f s)\n",
              mean_first(free_reward, 5), mean_last(free_reward, 5), mean_first(free_cost, 5), fc, mean_first(safe_reward, 5),
              mean_last(safe_reward, 5), mean_first(safe_cost, 5), sc, lambdas.back(), *std::max_element(lambdas.begin(), lambdas.end()),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  CHECK(sc < fc - 0.1);
  CHECK(lambdas.back() > 0.0);
  CHECK(mean_last(safe_reward, 5) > mean_first(safe_reward, 5));
}

TEST_CASE("safe ppo with reward and cost critics runs and reports its metrics", "[trainer]") {
  using obj_t = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::gae>;
  lm_t lm(tiny, cai::host{}, 3);
  const lm_t ref(tiny, cai::host{}, 3);
  vm_t rc(tiny, cai::host{}, 5), cc(tiny, cai::host{}, 6);
  auto o = base_options(2);
  o.minibatch_size = 2;
  cai::safe_ppo_trainer tr(lm, ref, tok, reward_fn, cost_fn, obj_t{}, o, {.threshold = 0.05}, &rc, &cc);
  cai::metric_map m;
  for (int i = 0; i < 4; ++i) m = tr.iterate(prompts);
  for (const char* k : {"reward_mean", "cost_mean", "lambda", "kl", "value_loss", "cost_value_loss", "clip_fraction", "entropy"}) {
    INFO(k);
    REQUIRE(m.count(k) == 1);
    CHECK(std::isfinite(m.at(k)));
  }
  CHECK(tr.optimizer_steps() == 4 * 2 * 2);
  CHECK(error_of([&] { cai::safe_ppo_trainer t2(lm, ref, tok, reward_fn, cost_fn, obj_t{}, o, {}, &rc, &rc); }).find("cost_critic") !=
        std::string::npos);
}

namespace {
template <class M>
bool same_bits(const M& a, const M& b) {
  return std::memcmp(a.parameters().data(), b.parameters().data(), a.parameters().size() * sizeof(float)) == 0;
}
void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}
}  // namespace

TEST_CASE("ppo resumed from saved trainer state and model checkpoints continues bit for bit", "[trainer]") {
  using obj_t = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::gae>;
  auto o = base_options(2);
  o.minibatch_size = 2;
  o.adaptive_kl = cai::adaptive_kl_controller({.init = 0.2, .target = 1.0, .horizon = 40, .error_clip = 0.2});
  const lm_t ref(tiny, cai::host{}, 3);
  cai_test::temp_file state("rl", "ppo_state"), pol("rl", "ppo_policy"), crit("rl", "ppo_critic");
  // k = 2 iterations, save, m = 2 more: A.
  lm_t a(tiny, cai::host{}, 3);
  vm_t ca(tiny, cai::host{}, 5);
  cai::ppo_trainer ta(a, ref, tok, reward_fn, obj_t{}, o, &ca);
  for (int i = 0; i < 2; ++i) ta.iterate(prompts);
  ta.save_state(state.path);
  a.save_checkpoint(pol.path);
  ca.save_checkpoint(crit.path);
  CHECK_FALSE(std::filesystem::exists(state.path.string() + ".tmp"));
  std::vector<double> betas_a;
  for (int i = 0; i < 2; ++i) betas_a.push_back(ta.iterate(prompts).at("beta"));
  // Fresh models and trainer: restore, then the same m iterations: B.
  lm_t b(tiny, cai::host{}, 30);
  vm_t cb(tiny, cai::host{}, 50);
  b.load_checkpoint(pol.path);
  cb.load_checkpoint(crit.path);
  cai::ppo_trainer tb(b, ref, tok, reward_fn, obj_t{}, o, &cb);
  tb.load_state(state.path);
  CHECK(tb.iterations() == 2);
  CHECK(tb.optimizer_steps() == 2 * 2 * 2);
  CHECK(tb.options().adaptive_kl->value() != 0.2);  // the controller's beta, not its init
  std::vector<double> betas_b;
  for (int i = 0; i < 2; ++i) betas_b.push_back(tb.iterate(prompts).at("beta"));
  CHECK(betas_a == betas_b);
  CHECK(same_bits(a, b));
  CHECK(same_bits(ca, cb));
  CHECK(ta.optimizer_steps() == tb.optimizer_steps());
  // Without the trainer state the continuation differs (the iteration keys the sampling seed).
  lm_t c(tiny, cai::host{}, 3);
  vm_t cc(tiny, cai::host{}, 5);
  c.load_checkpoint(pol.path);
  cc.load_checkpoint(crit.path);
  cai::ppo_trainer tc(c, ref, tok, reward_fn, obj_t{}, o, &cc);
  for (int i = 0; i < 2; ++i) tc.iterate(prompts);
  CHECK_FALSE(same_bits(a, c));
}

TEST_CASE("safe ppo resumed from saved state, multiplier included, continues bit for bit", "[trainer]") {
  using obj_t = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::gae>;
  auto o = base_options(2);
  o.minibatch_size = 2;
  const cai::lagrange_options lo{.lambda_init = 1.0, .lambda_lr = 0.5, .threshold = 0.05, .window = 6};
  const lm_t ref(tiny, cai::host{}, 3);
  cai_test::temp_file state("rl", "safe_state"), pol("rl", "safe_policy"), rcf("rl", "safe_rc"), ccf("rl", "safe_cc");
  lm_t a(tiny, cai::host{}, 3);
  vm_t ra(tiny, cai::host{}, 5), cost_a(tiny, cai::host{}, 6);
  cai::safe_ppo_trainer ta(a, ref, tok, reward_fn, cost_fn, obj_t{}, o, lo, &ra, &cost_a);
  for (int i = 0; i < 3; ++i) ta.iterate(prompts);
  ta.save_state(state.path);
  a.save_checkpoint(pol.path);
  ra.save_checkpoint(rcf.path);
  cost_a.save_checkpoint(ccf.path);
  std::vector<double> lambdas_a;
  for (int i = 0; i < 2; ++i) lambdas_a.push_back(ta.iterate(prompts).at("lambda"));

  lm_t b(tiny, cai::host{}, 31);
  vm_t rb(tiny, cai::host{}, 51), cost_b(tiny, cai::host{}, 61);
  b.load_checkpoint(pol.path);
  rb.load_checkpoint(rcf.path);
  cost_b.load_checkpoint(ccf.path);
  cai::safe_ppo_trainer tb(b, ref, tok, reward_fn, cost_fn, obj_t{}, o, lo, &rb, &cost_b);
  tb.load_state(state.path);
  CHECK(tb.iterations() == 3);
  CHECK(tb.multiplier().state().window.size() == 6);  // 3 iterations x 4 rows, the last 6 kept
  std::vector<double> lambdas_b;
  for (int i = 0; i < 2; ++i) lambdas_b.push_back(tb.iterate(prompts).at("lambda"));
  CHECK(lambdas_a == lambdas_b);
  CHECK(ta.multiplier().log_lambda() == tb.multiplier().log_lambda());
  CHECK(same_bits(a, b));
  CHECK(same_bits(ra, rb));
  CHECK(same_bits(cost_a, cost_b));
}

TEST_CASE("rl trainer state files are checked before anything changes", "[trainer]") {
  using obj_t = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean, cai::adv::grpo>;
  lm_t lm(tiny, cai::host{}, 3);
  const lm_t ref(tiny, cai::host{}, 3);
  cai_test::temp_file ppo_state("rl", "bad_ppo"), safe_state("rl", "bad_safe"), bad("rl", "bad_state");
  cai::ppo_trainer tp(lm, ref, tok, reward_fn, obj_t{}, base_options(2));
  tp.iterate(prompts);
  tp.save_state(ppo_state.path);
  cai::safe_ppo_trainer ts(lm, ref, tok, reward_fn, cost_fn, obj_t{}, base_options(2), {.window = 8});
  ts.iterate(prompts);
  ts.save_state(safe_state.path);

  cai::ppo_trainer fresh(lm, ref, tok, reward_fn, obj_t{}, base_options(2));
  cai::safe_ppo_trainer fresh_safe(lm, ref, tok, reward_fn, cost_fn, obj_t{}, base_options(2), {.window = 2});
  write_text(bad.path, "{\"format\": ");
  const std::string bad_name = bad.path.string();
  CAI_REQUIRE_THROWS_NAMING(fresh.load_state(bad.path), cai::parse_error, bad_name.c_str(), "not valid JSON");
  auto j = nlohmann::json::parse(cai_test::slurp(ppo_state.path));
  j["iteration"] = -1;
  write_text(bad.path, j.dump());
  CAI_REQUIRE_THROWS_NAMING(fresh.load_state(bad.path), cai::parse_error, "\"iteration\"");
  j = nlohmann::json::parse(cai_test::slurp(ppo_state.path));
  j.erase("optimizer_steps");
  write_text(bad.path, j.dump());
  CAI_REQUIRE_THROWS_NAMING(fresh.load_state(bad.path), cai::parse_error, "\"optimizer_steps\"", "missing");
  // Another trainer's state, and a state with an adaptive beta for a trainer without a controller.
  CAI_REQUIRE_THROWS_NAMING(fresh.load_state(safe_state.path), cai::invalid_argument, "'path'", "safe_ppo");
  CAI_REQUIRE_THROWS_NAMING(fresh_safe.load_state(ppo_state.path), cai::invalid_argument, "'path'", "ppo trainer");
  j = nlohmann::json::parse(cai_test::slurp(ppo_state.path));
  j["adaptive_kl_beta"] = 0.3;
  write_text(bad.path, j.dump());
  CAI_REQUIRE_THROWS_NAMING(fresh.load_state(bad.path), cai::invalid_argument, "'path'", "adaptive");
  // A safe state whose window (4 costs) exceeds this multiplier's window (2): lagrange_multiplier::restore refuses it.
  CAI_REQUIRE_THROWS_NAMING(fresh_safe.load_state(safe_state.path), cai::invalid_argument, "window");
  j = nlohmann::json::parse(cai_test::slurp(safe_state.path));
  j["lagrange"]["window"] = "many";
  write_text(bad.path, j.dump());
  CAI_REQUIRE_THROWS_NAMING(fresh_safe.load_state(bad.path), cai::parse_error, "\"window\"");
  CHECK(fresh.iterations() == 0);
  CHECK(fresh_safe.iterations() == 0);
  CHECK(fresh_safe.multiplier().state().window.empty());
  CAI_REQUIRE_THROWS_NAMING(fresh.load_state(std::filesystem::temp_directory_path() / "cai_no_such_state.json"), cai::error,
                            "cannot open");
}
