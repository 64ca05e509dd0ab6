// cai/trainers/ppo.hpp — online RL (PPO with a critic, GRPO / RLOO / other group estimators without one) over any
// cai::sampling_policy + cai::trainable_policy, a frozen reference cai::policy, a reward callable and, optionally, a
// critic (cai::trainable_scalar_model that is also a cai::scalar_model).
//
// ppo_trainer<Policy, Ref, Tok, RewardFn, Objective, Critic>::iterate(prompts) runs ONE ITERATION:
//   1. Rollout. Each prompt conversation is rendered tok.encode(tok.apply_chat_template(c, true)) and repeated
//      group_size times (G consecutive rows per prompt: the groups of the outcome estimators). The policy samples
//      with options.sampling, whose seed is replaced by derive_seed(sampling.seed, iteration) (deterministic per
//      seed, fresh each iteration); the tokenizer's eos_id() stops a row when the policy's sample() takes an eos id.
//      The response text is tok.decode(the sampled tokens, without a final eos).
//   2. Scores: score_b = reward(prompt conversation, response text) (any callable -> double; a scalar-model scorer
//      or a programmatic judge). A non-finite score is cai::invalid_argument naming "reward".
//   3. Old log-probs = the behaviour log-probs of sample() (at the sampling temperature, which is also the training
//      forward's temperature). Reference log-probs = ref.log_probs(batch) (with the temperature when the reference
//      takes one). Counted tokens = the response tokens (sample_batch::response).
//   4. Token rewards = cai::token_rewards(objective.kl placement, scores, old, ref): the KL enters the rewards only
//      for kl::in_reward / in_reward_and_loss placements; with options.adaptive_kl set, the reward-side beta is the
//      controller's value, and after the iteration the controller is updated with the measured mean per-sequence KL
//      (sum over response tokens of old - ref, k1) and n_steps = the number of rows.
//   5. Advantages with objective.estimator: adv::gae needs the critic — V_t is the critic's value at position t - 1
//      (the state in which response token t was chosen), returns = A + V; the other estimators take the
//      per-row sum of token rewards (the score, minus the KL penalty when it is in the reward) with group_size.
//   6. Updates: options.epochs passes over the rows in order, in minibatches of minibatch_size rows (0 = all):
//      policy.train_forward (entropy requested) -> cai::policy_loss(objective) -> policy.backward -> step(lr), and
//      for a critic cai::value_loss(vf::clipped{value_clip} or unclipped when value_clip == 0, token mean) on the same
//      minibatch -> critic.backward (gradients on position t - 1) -> critic.step(critic lr). The learning rates
//      follow options.schedule / critic_schedule, indexed by the global optimiser step.
//   7. on_metrics(iteration, {reward_mean, kl, beta, clip_fraction, approx_kl, entropy, pg_loss, policy_loss,
//      response_length, lr, value_loss*, value_mean*, explained_variance*}) — averages over the iteration's
//      minibatch steps (* with a critic). iterate() returns the same map.
// Bad options (group_size < 1, epochs < 1, minibatch_size < 0, RLOO with group_size < 2, ...) and empty prompts are
// cai::invalid_argument naming the argument.
//
// Checkpoint and resume: the trainer holds references to its models, so it saves only its own state:
// save_state(path) writes {"format": "cai.rl_trainer_state", "version": 1, "trainer": "ppo", "iteration",
// "optimizer_steps", "adaptive_kl_beta" (null without options.adaptive_kl)} as JSON, atomically (path + ".tmp", then
// renamed). The caller checkpoints the models beside it (policy.save_checkpoint, critic->save_checkpoint for the
// embedded models; the reference is frozen). A fresh trainer built with the same options over models restored from
// those checkpoints, after load_state(path), continues bit for bit: the iteration counter keys the sampling seed and
// the schedules' step index, and the controller's beta sets the reward-side KL. load_state checks everything before
// changing anything: a file that is not such JSON is cai::parse_error naming it; a state of another trainer kind, or
// with / without an adaptive beta where this trainer has none / one, is cai::invalid_argument naming "path".
//
//   cai::ppo_trainer tr(lm, ref, tok, reward_fn, cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean,
//                       cai::adv::grpo>{}, {.group_size = 4});
//   for (int i = 0; i < 30; ++i) tr.iterate(prompts);
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../algorithms/advantages.hpp"
#include "../algorithms/kl_controller.hpp"
#include "../algorithms/ppo.hpp"
#include "../algorithms/rewards.hpp"
#include "../concepts/policy.hpp"
#include "../concepts/scalar_model.hpp"
#include "../concepts/tokenizer.hpp"
#include "../concepts/types.hpp"
#include "../core/error.hpp"
#include "../core/host.hpp"
#include "../core/rng.hpp"
#include "checkpoint.hpp"
#include "metrics.hpp"
#include "reward.hpp"
#include "schedule.hpp"

namespace cai {

/// The "no critic" marker of the RL trainers (group estimators).
struct no_critic {};

template <class M>
concept rl_critic = trainable_scalar_model<M> && scalar_model<M>;

struct rl_options {
  std::int64_t group_size = 1;      ///< samples per prompt (consecutive rows); >= 1
  std::int64_t epochs = 1;          ///< passes over the rollout per iteration; >= 1
  std::int64_t minibatch_size = 0;  ///< rows per optimiser step; 0 = all rows; >= 0
  sampling_params sampling{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .max_new_tokens = 8, .seed = 0, .stop = {}};
  lr_schedule schedule{};           ///< policy learning rate per optimiser step
  lr_schedule critic_schedule{};    ///< critic learning rate per optimiser step
  double value_clip = 0.2;          ///< vf::clipped bound; 0 = unclipped
  std::optional<adaptive_kl_controller> adaptive_kl{};  ///< replaces the reward-side beta when set
  metrics_callback on_metrics{};
};

namespace detail::rl {

inline void check_options(std::string_view call, const rl_options& o) {
  if (o.group_size < 1) fail_argument(call, "group_size", "a value >= 1", o.group_size);
  if (o.epochs < 1) fail_argument(call, "epochs", "a value >= 1", o.epochs);
  if (o.minibatch_size < 0) fail_argument(call, "minibatch_size", "a value >= 0 (0 = all rows)", o.minibatch_size);
  if (!(o.value_clip >= 0.0) || !std::isfinite(o.value_clip)) fail_argument(call, "value_clip", "a finite value >= 0", o.value_clip);
  o.schedule.validate(concat(call, ": schedule"));
  o.critic_schedule.validate(concat(call, ": critic_schedule"));
}

/// Sets the reward-side beta of a placement (no-op when it has none).
template <class P>
void set_reward_beta(P& p, double beta) {
  if constexpr (requires { p.beta; } && requires { p.estimator; }) p.beta = beta;
  else if constexpr (requires { p.reward.beta; }) p.reward.beta = beta;
  else if constexpr (requires { p.beta; p.reward; }) p.beta = beta;
}
template <class P>
bool has_reward_kl(const P& p) {
  bool r = false;
  kl::visit_reward(p, [&](const auto&, double) { r = true; });
  return r;
}

/// One rollout: (B, T) rows, their prompts' indices and the response texts.
struct rollout {
  sample_batch s;
  std::vector<std::size_t> prompt_of;
  std::vector<std::string> texts;
  std::vector<float> ref_logp;
  std::int64_t B = 0, T = 0;
  token_batch batch() const {
    return token_batch{.tokens = {s.tokens.data(), {B, T}}, .mask = {s.mask.data(), {B, T}}, .loss_mask = {s.response.data(), {B, T}}};
  }
  tensor_view<const std::uint8_t, 2> response() const { return {s.response.data(), {B, T}}; }
  tensor_view<const float, 2> old_logp() const { return {s.logp.data(), {B, T}}; }
  tensor_view<const float, 2> ref() const { return {ref_logp.data(), {B, T}}; }
  /// Mean per-sequence sum of old - ref over response tokens (k1).
  double mean_kl() const {
    double s_ = 0.0;
    for (std::size_t k = 0; k < s.response.size(); ++k)
      if (s.response[k]) s_ += static_cast<double>(s.logp[k]) - static_cast<double>(ref_logp[k]);
    return B > 0 ? s_ / static_cast<double>(B) : 0.0;
  }
  double mean_length() const {
    double n = 0.0;
    for (auto r : s.response) n += r;
    return B > 0 ? n / static_cast<double>(B) : 0.0;
  }
};

template <class Policy, class Ref, class Tok>
rollout sample_rollout(std::string_view call, Policy& policy, Ref& ref, const Tok& tok, std::span<const conversation> prompts,
                       const rl_options& o, std::int64_t iteration) {
  if (prompts.empty()) fail_argument(call, "prompts", "at least one prompt conversation", "none");
  rollout r;
  padded_rows rows;
  std::vector<std::vector<std::int32_t>> enc;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    auto ids = tok.encode(tok.apply_chat_template(prompts[i], true));
    if (ids.empty()) fail_argument(call, concat("prompts[", i, "]"), "a prompt with tokens", "none");
    enc.emplace_back(ids.begin(), ids.end());
  }
  for (std::size_t i = 0; i < prompts.size(); ++i)
    for (std::int64_t g = 0; g < o.group_size; ++g) {
      rows.add(enc[i], {});
      r.prompt_of.push_back(i);
    }
  rows.finish();
  sampling_params sp = o.sampling;
  sp.seed = derive_seed(o.sampling.seed, static_cast<std::uint64_t>(iteration));
  const std::int32_t eos = tok.eos_id();
  if constexpr (requires { policy.sample(rows.batch(), sp, eos); }) r.s = policy.sample(rows.batch(), sp, eos);
  else r.s = policy.sample(rows.batch(), sp);
  r.B = r.s.batch;
  r.T = r.s.length;
  for (std::int64_t b = 0; b < r.B; ++b) {
    std::vector<std::int32_t> resp;
    for (std::int64_t t = 0; t < r.T; ++t)
      if (r.s.response[static_cast<std::size_t>(b * r.T + t)]) resp.push_back(r.s.tokens[static_cast<std::size_t>(b * r.T + t)]);
    if (!resp.empty() && resp.back() == eos) resp.pop_back();
    r.texts.push_back(std::string(tok.decode(std::span<const std::int32_t>(resp))));
  }
  r.ref_logp.assign(static_cast<std::size_t>(r.B * r.T), 0.0f);
  tensor_view<float, 2> out(r.ref_logp.data(), {r.B, r.T});
  if constexpr (requires { ref.log_probs(r.batch(), out, sp.temperature); }) ref.log_probs(r.batch(), out, sp.temperature);
  else ref.log_probs(r.batch(), out);
  return r;
}

/// Scores each row with fn(prompt, response text); non-finite scores name `what`.
template <class Fn>
std::vector<float> score_rows(std::string_view call, std::string_view what, Fn& fn, const rollout& r,
                              std::span<const conversation> prompts) {
  std::vector<float> s(static_cast<std::size_t>(r.B));
  for (std::int64_t b = 0; b < r.B; ++b) {
    const double v = static_cast<double>(fn(prompts[r.prompt_of[static_cast<std::size_t>(b)]], r.texts[static_cast<std::size_t>(b)]));
    if (!std::isfinite(v)) fail_argument(call, what, "a finite score for every response", concat(v, " for row ", b));
    s[static_cast<std::size_t>(b)] = static_cast<float>(v);
  }
  return s;
}

/// Critic values V_t = value at position t - 1, on response tokens (0 elsewhere).
template <class Critic>
std::vector<float> critic_values(Critic& c, const rollout& r) {
  std::vector<float> raw(static_cast<std::size_t>(r.B * r.T)), v(raw.size(), 0.0f);
  c.scalars(token_batch{.tokens = {r.s.tokens.data(), {r.B, r.T}}, .mask = {r.s.mask.data(), {r.B, r.T}}},
            tensor_view<float, 2>(raw.data(), {r.B, r.T}));
  for (std::int64_t b = 0; b < r.B; ++b)
    for (std::int64_t t = 1; t < r.T; ++t)
      if (r.s.response[static_cast<std::size_t>(b * r.T + t)]) v[static_cast<std::size_t>(b * r.T + t)] = raw[static_cast<std::size_t>(b * r.T + t - 1)];
  return v;
}

/// Advantages (and returns, with a critic) for one signal: token signals `tok_r` (B, T) from token_rewards/costs.
template <class Est, class Critic>
void estimate(std::string_view call, const Est& est, Critic* critic, const rollout& r, std::vector<float>& tok_r,
              std::int64_t group_size, std::vector<float>& adv, std::vector<float>& values, std::vector<float>& returns) {
  const std::int64_t B = r.B, T = r.T;
  adv.assign(static_cast<std::size_t>(B * T), 0.0f);
  if constexpr (std::same_as<Est, adv::gae>) {
    static_assert(!std::same_as<Critic, no_critic>, "cai RL trainers: adv::gae needs a critic");
    values = critic_values(*critic, r);
    returns.assign(adv.size(), 0.0f);
    advantages(host{}, est, advantage_inputs<float>{.token_rewards = {tok_r.data(), {B, T}}, .values = {values.data(), {B, T}}, .mask = r.response()},
               advantage_outputs<float>{.advantages = {adv.data(), {B, T}}, .returns = {returns.data(), {B, T}}});
  } else {
    static_assert(std::same_as<Critic, no_critic>, "cai RL trainers: a critic is used with adv::gae only");
    (void)critic;
    (void)call;
    advantages(host{}, est, advantage_inputs<float>{.token_rewards = {tok_r.data(), {B, T}}, .mask = r.response(), .group_size = group_size},
               advantage_outputs<float>{.advantages = {adv.data(), {B, T}}});
  }
}

/// Copies rows [lo, hi) of a (B, T) array.
template <class V>
std::vector<V> slice_rows(const std::vector<V>& a, std::int64_t T, std::int64_t lo, std::int64_t hi) {
  return std::vector<V>(a.begin() + lo * T, a.begin() + hi * T);
}

struct update_sums {
  double clip = 0, approx_kl = 0, entropy = 0, pg = 0, loss = 0, vloss = 0, vmean = 0, ev = 0, lr = 0;
  std::int64_t steps = 0;
};

/// One critic minibatch step on rows [lo, hi): cai::value_loss on V_t = value at t - 1, gradients to t - 1.
template <class Critic>
void critic_step(Critic& critic, const rollout& r, std::int64_t lo, std::int64_t hi, const std::vector<float>& old_values,
                 const std::vector<float>& returns, const rl_options& o, double lr, update_sums& acc) {
  const std::int64_t T = r.T, n = hi - lo;
  const auto tokens = slice_rows(r.s.tokens, T, lo, hi);
  const auto mask = slice_rows(r.s.mask, T, lo, hi);
  const auto resp = slice_rows(r.s.response, T, lo, hi);
  const auto ov = slice_rows(old_values, T, lo, hi);
  const auto ret = slice_rows(returns, T, lo, hi);
  critic.zero_grad();
  auto ch = critic.train_forward(token_batch{.tokens = {tokens.data(), {n, T}}, .mask = {mask.data(), {n, T}}});
  std::vector<float> v(static_cast<std::size_t>(n * T), 0.0f), dv(v.size(), 0.0f), draw(v.size(), 0.0f);
  {
    const tensor_view<const float, 2> raw = ch.values();
    for (std::int64_t b = 0; b < n; ++b)
      for (std::int64_t t = 1; t < T; ++t)
        if (resp[static_cast<std::size_t>(b * T + t)]) v[static_cast<std::size_t>(b * T + t)] = raw(b, t - 1);
  }
  const value_batch<float> vb{.values = {v.data(), {n, T}}, .old_values = {ov.data(), {n, T}}, .returns = {ret.data(), {n, T}},
                              .mask = {resp.data(), {n, T}}};
  const auto vr = o.value_clip > 0.0 ? value_loss(host{}, vf::clipped{o.value_clip}, agg::token_mean{}, vb, tensor_view<float, 2>(dv.data(), {n, T}))
                                     : value_loss(host{}, vf::unclipped{}, agg::token_mean{}, vb, tensor_view<float, 2>(dv.data(), {n, T}));
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t t = 1; t < T; ++t) draw[static_cast<std::size_t>(b * T + t - 1)] += dv[static_cast<std::size_t>(b * T + t)];
  critic.backward(std::move(ch), tensor_view<const float, 2>(draw.data(), {n, T}));
  critic.step(lr);
  acc.vloss += vr.loss;
  acc.vmean += vr.value_mean;
  acc.ev += vr.explained_variance;
}

/// The minibatch rows [lo, hi) of every optimiser step of one iteration, in order (epochs x minibatches).
inline std::vector<std::pair<std::int64_t, std::int64_t>> minibatches(std::int64_t B, const rl_options& o) {
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  const std::int64_t mb = o.minibatch_size == 0 ? B : std::min(o.minibatch_size, B);
  for (std::int64_t e = 0; e < o.epochs; ++e)
    for (std::int64_t lo = 0; lo < B; lo += mb) out.emplace_back(lo, std::min(B, lo + mb));
  return out;
}

/// One epoch-loop of minibatch policy (and critic) updates with the given advantages / returns.
template <class Policy, class Obj, class Critic>
void update(Policy& policy, const Obj& obj, Critic* critic, const rollout& r, const std::vector<float>& adv,
            const std::vector<float>& old_values, const std::vector<float>& returns, const rl_options& o, std::int64_t& step,
            update_sums& acc) {
  const std::int64_t T = r.T;
  for (const auto& [lo, hi] : minibatches(r.B, o)) {
      const std::int64_t n = hi - lo;
      const auto tokens = slice_rows(r.s.tokens, T, lo, hi);
      const auto mask = slice_rows(r.s.mask, T, lo, hi);
      const auto resp = slice_rows(r.s.response, T, lo, hi);
      const auto old = slice_rows(r.s.logp, T, lo, hi);
      const auto ref = slice_rows(r.ref_logp, T, lo, hi);
      const auto a = slice_rows(adv, T, lo, hi);
      const token_batch tb{.tokens = {tokens.data(), {n, T}}, .mask = {mask.data(), {n, T}}, .loss_mask = {resp.data(), {n, T}}};
      std::vector<float> dlogp(static_cast<std::size_t>(n * T), 0.0f), dent(dlogp.size(), 0.0f);
      policy.zero_grad();
      auto h = policy.train_forward(tb, forward_request{.entropy = true, .temperature = o.sampling.temperature});
      const auto res = policy_loss(host{}, obj,
                                   policy_batch<float>{.logp = h.logp(), .old_logp = {old.data(), {n, T}}, .advantages = {a.data(), {n, T}},
                                                       .mask = {resp.data(), {n, T}}, .ref_logp = {ref.data(), {n, T}},
                                                       .entropy = h.entropy()},
                                   policy_grads<float>{.dlogp = {dlogp.data(), {n, T}}, .dentropy = {dent.data(), {n, T}}});
      policy.backward(std::move(h), per_token_grads{.dlogp = {dlogp.data(), {n, T}},
                                                    .dentropy = obj.entropy_coef != 0.0 ? tensor_view<const float, 2>(dent.data(), {n, T})
                                                                                        : tensor_view<const float, 2>{}});
      const double lr = o.schedule.lr(step);
      policy.step(lr);
      acc.clip += res.metrics.clip_fraction;
      acc.approx_kl += res.metrics.approx_kl;
      acc.entropy += res.metrics.entropy_mean;
      acc.pg += res.pg_loss;
      acc.loss += res.loss;
      acc.lr += lr;
      if constexpr (!std::same_as<Critic, no_critic>)
        critic_step(*critic, r, lo, hi, old_values, returns, o, o.critic_schedule.lr(step), acc);
      ++acc.steps;
      ++step;
    }
}

inline void put_update_metrics(metric_map& m, const update_sums& a, bool critic) {
  const double n = a.steps > 0 ? static_cast<double>(a.steps) : 1.0;
  m["clip_fraction"] = a.clip / n;
  m["approx_kl"] = a.approx_kl / n;
  m["entropy"] = a.entropy / n;
  m["pg_loss"] = a.pg / n;
  m["policy_loss"] = a.loss / n;
  m["lr"] = a.lr / n;
  if (critic) {
    m["value_loss"] = a.vloss / n;
    m["value_mean"] = a.vmean / n;
    m["explained_variance"] = a.ev / n;
  }
}

/// The state common to the RL trainers (see the header comment), as written by save_state.
inline nlohmann::json state_json(std::string_view trainer, std::int64_t iteration, std::int64_t steps, const rl_options& o) {
  return {{"format", "cai.rl_trainer_state"}, {"version", 1}, {"trainer", trainer}, {"iteration", iteration}, {"optimizer_steps", steps},
          {"adaptive_kl_beta", o.adaptive_kl ? nlohmann::json(o.adaptive_kl->value()) : nlohmann::json(nullptr)}};
}

struct saved_state {
  std::int64_t iteration = 0, steps = 0;
  double beta = 0.0;  ///< the adaptive controller's value (when the trainer has one)
  nlohmann::json j;
};

/// Reads and checks a state file against this trainer (kind, adaptive controller); changes nothing.
inline saved_state read_state(std::string_view call, std::string_view trainer, const std::filesystem::path& path, const rl_options& o) {
  saved_state st;
  st.j = read_json_object(path, call);
  const auto& j = st.j;
  const auto is_int = [](const nlohmann::json& v) { return v.is_number_integer(); };
  const auto is_str = [](const nlohmann::json& v) { return v.is_string(); };
  if (json_field(j, "format", "a string", is_str, path, call).get<std::string>() != "cai.rl_trainer_state")
    fail<parse_error>(call, concat("'", path.string(), "': field \"format\": expected \"cai.rl_trainer_state\", got ", j["format"].dump()));
  if (const auto v = json_field(j, "version", "an integer", is_int, path, call).get<std::int64_t>(); v != 1)
    fail<parse_error>(call, concat("'", path.string(), "': unsupported version ", v, " (this build reads version 1)"));
  const auto kind = json_field(j, "trainer", "a string", is_str, path, call).get<std::string>();
  st.iteration = json_field(j, "iteration", "an integer >= 0", [](const nlohmann::json& v) { return v.is_number_integer() && v.get<std::int64_t>() >= 0; },
                            path, call).get<std::int64_t>();
  st.steps = json_field(j, "optimizer_steps", "an integer >= 0", [](const nlohmann::json& v) { return v.is_number_integer() && v.get<std::int64_t>() >= 0; },
                        path, call).get<std::int64_t>();
  const auto& beta = json_field(j, "adaptive_kl_beta", "a finite number > 0 or null",
                                [](const nlohmann::json& v) { return v.is_null() || (v.is_number() && v.get<double>() > 0.0 && std::isfinite(v.get<double>())); },
                                path, call);
  if (kind != trainer)
    fail_argument(call, "path", concat("the state of a ", trainer, " trainer"), concat("one of a ", kind, " trainer in '", path.string(), "'"));
  if (beta.is_null() != !o.adaptive_kl)
    fail_argument(call, "path", o.adaptive_kl ? "a state with an adaptive KL coefficient (options.adaptive_kl is set)"
                                              : "a state without an adaptive KL coefficient (options.adaptive_kl is not set)",
                  concat("adaptive_kl_beta ", beta.dump(), " in '", path.string(), "'"));
  if (!beta.is_null()) st.beta = beta.get<double>();
  return st;
}

inline double mean_of(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += static_cast<double>(x);
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

}  // namespace detail::rl

/// One-iteration-at-a-time online RL trainer; see the header comment for exactly what iterate() does.
template <class Policy, class Ref, class Tok, class RewardFn, policy_objective Obj, class Critic = no_critic>
  requires sampling_policy<Policy> && trainable_policy<Policy> && policy<Ref> && tokenizer<Tok> &&
           (std::same_as<Critic, no_critic> || rl_critic<Critic>)
class ppo_trainer {
 public:
  ppo_trainer(Policy& p, Ref& ref, const Tok& tok, RewardFn reward, const Obj& objective, rl_options options = {},
              Critic* critic = nullptr)
      : p_(p), ref_(ref), tok_(tok), reward_(std::move(reward)), obj_(objective), o_(std::move(options)), critic_(critic) {
    constexpr std::string_view call = "cai::ppo_trainer";
    detail::rl::check_options(call, o_);
    if constexpr (!std::same_as<Critic, no_critic>)
      if (!critic_) detail::fail_argument(call, "critic", "a critic model", "nullptr");
    if constexpr (std::same_as<typename Obj::estimator_type, adv::rloo>)
      if (o_.group_size < 2) detail::fail_argument(call, "group_size", "a value >= 2 for RLOO", o_.group_size);
  }

  /// One rollout-and-update iteration over `prompts`; returns (and reports) its metrics.
  metric_map iterate(std::span<const conversation> prompts) {
    constexpr std::string_view call = "cai::ppo_trainer::iterate";
    if (o_.adaptive_kl) detail::rl::set_reward_beta(obj_.kl, o_.adaptive_kl->value());
    auto r = detail::rl::sample_rollout(call, p_, ref_, tok_, prompts, o_, iteration_);
    const auto scores = detail::rl::score_rows(call, "reward", reward_, r, prompts);
    std::vector<float> tr(static_cast<std::size_t>(r.B * r.T), 0.0f), adv, values, returns;
    token_rewards(host{}, obj_.kl, tensor_view<const float, 1>(scores.data(), {r.B}), r.old_logp(), r.ref(), r.response(),
                  tensor_view<float, 2>(tr.data(), {r.B, r.T}));
    detail::rl::estimate(call, obj_.estimator, critic_, r, tr, o_.group_size, adv, values, returns);
    detail::rl::update_sums acc;
    detail::rl::update(p_, obj_, critic_, r, adv, values, returns, o_, step_, acc);
    const double kl = r.mean_kl();
    double beta = 0.0;
    kl::visit_reward(obj_.kl, [&](const auto&, double b) { beta = b; });
    if (o_.adaptive_kl) beta = o_.adaptive_kl->update(kl, r.B);
    metric_map m{{"reward_mean", detail::rl::mean_of(scores)}, {"kl", kl}, {"beta", beta}, {"response_length", r.mean_length()}};
    detail::rl::put_update_metrics(m, acc, !std::same_as<Critic, no_critic>);
    if (o_.on_metrics) o_.on_metrics(iteration_, m);
    ++iteration_;
    return m;
  }

  std::int64_t iterations() const noexcept { return iteration_; }
  std::int64_t optimizer_steps() const noexcept { return step_; }
  const Obj& objective() const noexcept { return obj_; }
  const rl_options& options() const noexcept { return o_; }

  /// Writes the trainer's own state (iteration, optimiser steps, adaptive KL coefficient) as JSON, atomically. The
  /// models are the caller's to checkpoint (see the header comment).
  void save_state(const std::filesystem::path& path) const {
    detail::write_json_atomic(path, detail::rl::state_json("ppo", iteration_, step_, o_), "cai::ppo_trainer::save_state");
  }
  /// Restores what save_state wrote; checked before anything changes (see the header comment).
  void load_state(const std::filesystem::path& path) {
    const auto st = detail::rl::read_state("cai::ppo_trainer::load_state", "ppo", path, o_);
    if (o_.adaptive_kl) o_.adaptive_kl->set_value(st.beta);
    iteration_ = st.iteration;
    step_ = st.steps;
  }

 private:
  Policy& p_;
  Ref& ref_;
  const Tok& tok_;
  RewardFn reward_;
  Obj obj_;
  rl_options o_;
  Critic* critic_;
  std::int64_t iteration_ = 0, step_ = 0;
};

}  // namespace cai
