// Online RL trainers (cai/trainers/ppo.hpp, safe_ppo.hpp): learning direction on tiny runs, determinism, bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cai/models/byte_tokenizer.hpp"
#include "cai/models/transformer.hpp"
#include "cai/models/transformer_scalar.hpp"
#include "cai/trainers/ppo.hpp"
#include "cai/trainers/safe_ppo.hpp"

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
