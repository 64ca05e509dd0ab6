// cai/trainers/safe_ppo.hpp — Safe-PPO-Lagrangian (Dai et al. 2023, Safe RLHF; safe-rlhf ppo_lag/trainer.py) over the
// same generic pieces as cai::ppo_trainer (cai/trainers/ppo.hpp): a sampling + trainable policy, a frozen reference,
// a reward scorer and a COST scorer (callables (prompt conversation, response text) -> double), and either two
// critics (reward and cost, both cai::rl_critic, with adv::gae) or a group estimator for both signals.
//
// safe_ppo_trainer::iterate(prompts) runs ONE ITERATION:
//   1. Rollout, scores, old and reference log-probs exactly as ppo_trainer (steps 1-3 there); costs
//      C_b = cost(prompt, response) (non-finite: cai::invalid_argument naming "cost").
//   2. Token rewards = cai::token_rewards(objective.kl, scores, old, ref) (adaptive beta as in ppo_trainer) and
//      token costs = cai::token_costs(objective.kl, costs, old, ref) (the KL enters the cost with the other sign).
//   3. Reward advantages A_r and cost advantages A_c with objective.estimator (GAE with the reward / cost critic, or
//      the group estimator over the per-row sums of the token signals).
//   4. The multiplier: lagrange.record(episode costs C_b); lagrange.update() (J_c = the window's mean, SGD on
//      log lambda towards J_c <= threshold). The updated lambda is used for this iteration's policy update.
//   5. A = cai::lagrangian_advantages(A_r, {A_c}, {lambda}) = (A_r - lambda A_c) / (1 + lambda).
//   6. Minibatch updates as ppo_trainer (policy with A; the reward critic on the reward returns on the same
//      minibatches), then the cost critic on the cost returns over the same minibatch schedule.
//   7. on_metrics(iteration, ppo_trainer's keys + {cost_mean (this batch's mean episode cost), cost_window_mean
//      (J_c), lambda, cost_value_loss*}).
//
// Checkpoint and resume as ppo_trainer (save_state / load_state; the caller checkpoints the policy and both critics):
// the state adds "trainer": "safe_ppo" and "lagrange": {"log_lambda", "updates", "window": [episode costs]}, the
// multiplier's state() — restored with lagrange_multiplier::restore, whose argument errors (a window longer than
// lagrange_options::window) surface unchanged; a missing or mistyped field is cai::parse_error naming the file.
//
//   cai::safe_ppo_trainer tr(lm, ref, tok, reward_fn, cost_fn, objective, {.group_size = 4}, {.threshold = 0.1});
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "../algorithms/safe_rlhf.hpp"
#include "ppo.hpp"

namespace cai {

namespace detail::rl {

/// The "lagrange" object of a safe_ppo state file (lagrange_multiplier::saved); cai::parse_error naming the file.
inline lagrange_multiplier::saved read_lagrange(std::string_view call, const nlohmann::json& j, const std::filesystem::path& path) {
  const auto& l = json_field(j, "lagrange", "an object", [](const nlohmann::json& v) { return v.is_object(); }, path, call);
  lagrange_multiplier::saved ls;
  ls.log_lambda = json_field(l, "log_lambda", "a number", [](const nlohmann::json& v) { return v.is_number(); }, path, call).get<double>();
  ls.updates = json_field(l, "updates", "an integer", [](const nlohmann::json& v) { return v.is_number_integer(); }, path, call)
                   .get<std::int64_t>();
  const auto& w = json_field(l, "window", "an array of numbers",
                             [](const nlohmann::json& v) {
                               return v.is_array() && std::all_of(v.begin(), v.end(), [](const nlohmann::json& x) { return x.is_number(); });
                             },
                             path, call);
  for (const auto& x : w) ls.window.push_back(x.get<double>());
  return ls;
}

}  // namespace detail::rl

template <class Policy, class Ref, class Tok, class RewardFn, class CostFn, policy_objective Obj, class Critic = no_critic>
  requires sampling_policy<Policy> && trainable_policy<Policy> && policy<Ref> && tokenizer<Tok> &&
           (std::same_as<Critic, no_critic> || rl_critic<Critic>)
class safe_ppo_trainer {
 public:
  safe_ppo_trainer(Policy& p, Ref& ref, const Tok& tok, RewardFn reward, CostFn cost, const Obj& objective, rl_options options = {},
                   const lagrange_options& lagrange = {}, Critic* reward_critic = nullptr, Critic* cost_critic = nullptr)
      : p_(p), ref_(ref), tok_(tok), reward_(std::move(reward)), cost_(std::move(cost)), obj_(objective), o_(std::move(options)),
        lag_(lagrange), rc_(reward_critic), cc_(cost_critic) {
    constexpr std::string_view call = "cai::safe_ppo_trainer";
    detail::rl::check_options(call, o_);
    if constexpr (!std::same_as<Critic, no_critic>) {
      if (!rc_) detail::fail_argument(call, "reward_critic", "a critic model", "nullptr");
      if (!cc_) detail::fail_argument(call, "cost_critic", "a critic model", "nullptr");
      if (rc_ == cc_) detail::fail_argument(call, "cost_critic", "a model other than reward_critic", "the same model");
    }
    if constexpr (std::same_as<typename Obj::estimator_type, adv::rloo>)
      if (o_.group_size < 2) detail::fail_argument(call, "group_size", "a value >= 2 for RLOO", o_.group_size);
  }

  /// One rollout-and-update iteration over `prompts`; returns (and reports) its metrics.
  metric_map iterate(std::span<const conversation> prompts) {
    constexpr std::string_view call = "cai::safe_ppo_trainer::iterate";
    if (o_.adaptive_kl) detail::rl::set_reward_beta(obj_.kl, o_.adaptive_kl->value());
    auto r = detail::rl::sample_rollout(call, p_, ref_, tok_, prompts, o_, iteration_);
    const auto scores = detail::rl::score_rows(call, "reward", reward_, r, prompts);
    const auto costs = detail::rl::score_rows(call, "cost", cost_, r, prompts);
    const std::int64_t B = r.B, T = r.T;
    std::vector<float> tr(static_cast<std::size_t>(B * T), 0.0f), tc(tr.size(), 0.0f);
    token_rewards(host{}, obj_.kl, tensor_view<const float, 1>(scores.data(), {B}), r.old_logp(), r.ref(), r.response(),
                  tensor_view<float, 2>(tr.data(), {B, T}));
    token_costs(host{}, obj_.kl, tensor_view<const float, 1>(costs.data(), {B}), r.old_logp(), r.ref(), r.response(),
                tensor_view<float, 2>(tc.data(), {B, T}));
    std::vector<float> ar, vr, retr, ac, vc, retc;
    detail::rl::estimate(call, obj_.estimator, rc_, r, tr, o_.group_size, ar, vr, retr);
    detail::rl::estimate(call, obj_.estimator, cc_, r, tc, o_.group_size, ac, vc, retc);
    const std::vector<double> episode(costs.begin(), costs.end());
    lag_.record(episode);
    lag_.update();
    const double lambda = lag_.lambda();
    std::vector<float> a(tr.size(), 0.0f);
    const tensor_view<const float, 2> cost_adv(ac.data(), {B, T});
    lagrangian_advantages(host{}, tensor_view<const float, 2>(ar.data(), {B, T}), std::span<const tensor_view<const float, 2>>(&cost_adv, 1),
                          std::span<const double>(&lambda, 1), r.response(), tensor_view<float, 2>(a.data(), {B, T}));
    const std::int64_t step0 = step_;
    detail::rl::update_sums acc, cacc;
    detail::rl::update(p_, obj_, rc_, r, a, vr, retr, o_, step_, acc);
    if constexpr (!std::same_as<Critic, no_critic>) {
      std::int64_t s = step0;
      for (const auto& [lo, hi] : detail::rl::minibatches(B, o_)) {
        detail::rl::critic_step(*cc_, r, lo, hi, vc, retc, o_, o_.critic_schedule.lr(s++), cacc);
        ++cacc.steps;
      }
    }
    const double kl = r.mean_kl();
    double beta = 0.0;
    kl::visit_reward(obj_.kl, [&](const auto&, double b) { beta = b; });
    if (o_.adaptive_kl) beta = o_.adaptive_kl->update(kl, B);
    metric_map m{{"reward_mean", detail::rl::mean_of(scores)}, {"cost_mean", detail::rl::mean_of(costs)},
                 {"cost_window_mean", lag_.mean_cost()}, {"lambda", lambda}, {"kl", kl}, {"beta", beta},
                 {"response_length", r.mean_length()}};
    detail::rl::put_update_metrics(m, acc, !std::same_as<Critic, no_critic>);
    if constexpr (!std::same_as<Critic, no_critic>)
      m["cost_value_loss"] = cacc.vloss / static_cast<double>(cacc.steps > 0 ? cacc.steps : 1);
    if (o_.on_metrics) o_.on_metrics(iteration_, m);
    ++iteration_;
    return m;
  }

  const lagrange_multiplier& multiplier() const noexcept { return lag_; }
  std::int64_t iterations() const noexcept { return iteration_; }
  std::int64_t optimizer_steps() const noexcept { return step_; }

  /// Writes the trainer's own state (iteration, optimiser steps, adaptive KL coefficient, the multiplier's state) as
  /// JSON, atomically. The models are the caller's to checkpoint (see the header comment).
  void save_state(const std::filesystem::path& path) const {
    auto j = detail::rl::state_json("safe_ppo", iteration_, step_, o_);
    const auto ls = lag_.state();
    j["lagrange"] = {{"log_lambda", ls.log_lambda}, {"updates", ls.updates}, {"window", ls.window}};
    detail::write_json_atomic(path, j, "cai::safe_ppo_trainer::save_state");
  }
  /// Restores what save_state wrote; checked before anything changes (see the header comment).
  void load_state(const std::filesystem::path& path) {
    constexpr std::string_view call = "cai::safe_ppo_trainer::load_state";
    const auto st = detail::rl::read_state(call, "safe_ppo", path, o_);
    const auto ls = detail::rl::read_lagrange(call, st.j, path);
    lag_.restore(ls);  // validates before it changes the multiplier; nothing else has changed yet
    if (o_.adaptive_kl) o_.adaptive_kl->set_value(st.beta);
    iteration_ = st.iteration;
    step_ = st.steps;
  }

 private:
  Policy& p_;
  Ref& ref_;
  const Tok& tok_;
  RewardFn reward_;
  CostFn cost_;
  Obj obj_;
  rl_options o_;
  lagrange_multiplier lag_;
  Critic* rc_;
  Critic* cc_;
  std::int64_t iteration_ = 0, step_ = 0;
};

}  // namespace cai
