// cai/algorithms/objective.hpp — building policy objectives from configuration strings.
//
// Each axis maps separately onto the same types the compile-time composition uses, so the run-time objective
// instantiates one kernel per surrogate (5), not the product of all axes:
//   cai::dynamic_objective = cai::ppo_objective<pg::any, kl::any_placement, agg::any, adv::any>
//
// Axis grammar: NAME or NAME:ARG,ARG,... where an ARG is KEY=VALUE (or a bare estimator name for the KL axis).
//   clip       ppo_clip[:eps_low=,eps_high=]  dual_clip[:eps_low=,eps_high=,c=]  gspo[:eps_low=,eps_high=,
//              seq_log_ratio_clamp=]  cispo[:eps_low=,eps_high=]  sapo[:tau_pos=,tau_neg=]   ("eps=" sets both)
//   kl         none | in_reward:EST[,beta=] | in_loss:EST[,coef=] | in_reward_and_loss:EST,EST[,beta=,coef=]
//              EST = k1 | k2 | k3 | abs | low_var_kl (= k3) | kl (= k1) | mse (= k2), a trailing "+" = value of
//              EST with the gradient of k2 (verl's straight-through suffix); log_ratio_clamp= and kl_clamp= apply
//              to the (value) estimators
//   agg        token-mean[:global_tokens=] | seq-mean-token-sum[:global_seqs=] | seq-mean-token-mean[:global_seqs=]
//              | seq-mean-token-sum-norm[:norm=,global_seqs=]      ('_' and '-' are interchangeable)
//   estimator  gae[:gamma=,lambda=,whiten=0|1] | grpo[:scale=group|batch|none,eps=] | dr_grpo | rloo |
//              reinforce_pp[:gamma=] | reinforce_pp_baseline | remax | opo | gpg[:f_norm=]
//   rollout    none | token_truncate|token_mask|sequence_truncate|sequence_mask[:lo=,hi=]
// A whole objective: "clip=dual_clip:c=3; kl=in_loss:k3,coef=0.001; agg=token-mean; estimator=grpo;
// entropy_coef=0; log_ratio_clamp=20; rollout=none" (any subset, in any order; defaults as ppo_objective's).
// Unknown names, keys or malformed numbers throw cai::invalid_argument naming the axis and listing what is valid.
//
//   auto obj = cai::objective_from_string("clip=dual_clip:c=3; kl=in_loss:k3,coef=0.001; estimator=grpo");
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "advantages.hpp"
#include "config_text.hpp"
#include "aggregation.hpp"
#include "kl.hpp"
#include "ppo.hpp"

namespace cai {

using dynamic_objective = ppo_objective<pg::any, kl::any_placement, agg::any, adv::any>;

namespace detail::config {

inline kl::any::kind kl_kind(std::string_view axis, std::string_view n) {
  const std::string s = normalise(n);
  if (s == "k1" || s == "kl") return kl::any::kind::k1;
  if (s == "k2" || s == "mse") return kl::any::kind::k2;
  if (s == "k3" || s == "low_var_kl") return kl::any::kind::k3;
  if (s == "abs") return kl::any::kind::abs;
  unknown(axis, n, "k1 (kl), k2 (mse), k3 (low_var_kl), abs, each optionally with a trailing '+'");
}

}  // namespace detail::config

namespace pg {
/// A surrogate from its name and parameters (see objective.hpp).
inline any surrogate_from_name(std::string_view text) {
  auto s = cai::detail::config::parse("clip", text);
  any out;
  const auto eps = [&](auto c) {
    const double both = s.number("eps", -1.0);
    if (both >= 0.0) c.eps_low = c.eps_high = both;
    c.eps_low = s.number("eps_low", c.eps_low);
    c.eps_high = s.number("eps_high", c.eps_high);
    return c;
  };
  if (s.name == "ppo_clip" || s.name == "ppo" || s.name == "vanilla") out = eps(ppo_clip{});
  else if (s.name == "dual_clip") {
    dual_clip c = eps(dual_clip{});
    c.c = s.number("c", c.c);
    out = c;
  } else if (s.name == "gspo") {
    gspo c = eps(gspo{});
    c.seq_log_ratio_clamp = s.number("seq_log_ratio_clamp", c.seq_log_ratio_clamp);
    out = c;
  } else if (s.name == "cispo") out = eps(cispo{});
  else if (s.name == "sapo") out = sapo{s.number("tau_pos", 1.0), s.number("tau_neg", 1.05)};
  else cai::detail::config::unknown("clip", s.name, "ppo_clip, dual_clip, gspo, cispo, sapo");
  s.finish();
  return out;
}
}  // namespace pg

namespace kl {
/// A KL placement from its name (see objective.hpp).
inline any_placement placement_from_name(std::string_view text) {
  namespace cfg = cai::detail::config;
  auto s = cfg::parse("kl", text);
  any_placement p;
  std::vector<std::string_view> ests;
  for (std::size_t i = 0; i < s.args.size(); ++i)
    if (s.args[i].second.empty() && s.args[i].first.find('=') == std::string::npos) {
      ests.push_back(s.args[i].first);
      s.used[i] = true;
    }
  const double lc = s.number("log_ratio_clamp", -1.0), kc = s.number("kl_clamp", -1.0);
  const auto est = [&](std::string_view e) {
    any a;
    const bool st = !e.empty() && e.back() == '+';
    const std::string_view base = st ? e.substr(0, e.size() - 1) : e;
    a.value_kind = a.grad_kind = cfg::kl_kind("kl", base);
    if (a.value_kind == any::kind::k3) {
      a.log_ratio_clamp = a.grad_log_ratio_clamp = 20.0;  // k3's defaults (verl low_var_kl)
      a.kl_clamp = a.grad_kl_clamp = 10.0;
    }
    if (lc >= 0.0) a.log_ratio_clamp = a.grad_log_ratio_clamp = lc;
    if (kc >= 0.0) a.kl_clamp = a.grad_kl_clamp = kc;
    if (st) {
      a.grad_kind = any::kind::k2;
      a.grad_log_ratio_clamp = a.grad_kl_clamp = no_clamp;
    }
    return a;
  };
  if (s.name == "none") {
    if (!ests.empty()) cfg::unknown("kl", text, "no estimator after 'none'");
  } else if (s.name == "in_reward" || s.name == "in_loss") {
    if (ests.size() != 1) cfg::unknown("kl", text, cai::detail::concat(s.name, ":ESTIMATOR[,", s.name == "in_loss" ? "coef" : "beta", "=]"));
    if (s.name == "in_reward") {
      p.reward = true;
      p.reward_estimator = est(ests[0]);
      p.beta = s.number("beta", 0.05);
    } else {
      p.loss = true;
      p.loss_estimator = est(ests[0]);
      p.coef = s.number("coef", 0.001);
    }
  } else if (s.name == "in_reward_and_loss") {
    if (ests.size() != 2) cfg::unknown("kl", text, "in_reward_and_loss:REWARD_ESTIMATOR,LOSS_ESTIMATOR[,beta=,coef=]");
    p.reward = p.loss = true;
    p.reward_estimator = est(ests[0]);
    p.loss_estimator = est(ests[1]);
    p.beta = s.number("beta", 0.05);
    p.coef = s.number("coef", 0.001);
  } else {
    cfg::unknown("kl", s.name, "none, in_reward, in_loss, in_reward_and_loss");
  }
  s.finish();
  return p;
}
}  // namespace kl

namespace agg {
/// An aggregation mode from its name (see objective.hpp).
inline any from_name(std::string_view text) {
  auto s = cai::detail::config::parse("agg", text);
  any a;
  if (s.name == "token_mean") {
    a.m = any::mode::token_mean;
    a.global = s.number("global_tokens", 0.0);
  } else if (s.name == "seq_mean_token_sum" || s.name == "seq_mean_token_mean" || s.name == "seq_mean_token_sum_norm") {
    a.m = s.name == "seq_mean_token_sum"    ? any::mode::seq_mean_token_sum
          : s.name == "seq_mean_token_mean" ? any::mode::seq_mean_token_mean
                                            : any::mode::seq_mean_token_sum_norm;
    a.global = s.number("global_seqs", 0.0);
    if (a.m == any::mode::seq_mean_token_sum_norm) a.norm = s.number("norm", 0.0);
  } else {
    cai::detail::config::unknown("agg", s.name, "token-mean, seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm");
  }
  s.finish();
  return a;
}
}  // namespace agg

namespace adv {
/// An advantage estimator from its name (see objective.hpp).
inline any estimator_from_name(std::string_view text) {
  auto s = cai::detail::config::parse("estimator", text);
  any e;
  if (s.name == "gae") e = gae{s.number("gamma", 1.0), s.number("lambda", 0.95), s.number("whiten", 1.0) != 0.0};
  else if (s.name == "grpo") {
    grpo g;
    const std::string sc = cai::detail::config::normalise(s.word("scale", "group"));
    if (sc == "group") g.std_scale = scale::group;
    else if (sc == "batch") g.std_scale = scale::batch;
    else if (sc == "none") g.std_scale = scale::none;
    else cai::detail::config::unknown("estimator", sc, "scale=group, scale=batch, scale=none");
    g.eps = s.number("eps", g.eps);
    e = g;
  } else if (s.name == "dr_grpo") e = dr_grpo{};
  else if (s.name == "rloo") e = rloo{};
  else if (s.name == "reinforce_pp" || s.name == "reinforce++") e = reinforce_pp{s.number("gamma", 1.0)};
  else if (s.name == "reinforce_pp_baseline" || s.name == "reinforce++_baseline") e = reinforce_pp_baseline{};
  else if (s.name == "remax") e = remax{};
  else if (s.name == "opo") e = opo{};
  else if (s.name == "gpg") e = gpg{s.number("f_norm", 1.0)};
  else
    cai::detail::config::unknown("estimator", s.name,
                                 "gae, grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, remax, opo, gpg");
  s.finish();
  return e;
}
}  // namespace adv

namespace is {
/// A rollout correction from its name (see objective.hpp).
inline rollout_correction correction_from_name(std::string_view text) {
  auto s = cai::detail::config::parse("rollout", text);
  rollout_correction c;
  if (s.name == "none") c.m = mode::none;
  else if (s.name == "token_truncate" || s.name == "tis") c.m = mode::token_truncate;
  else if (s.name == "token_mask" || s.name == "icepop") c.m = mode::token_mask;
  else if (s.name == "sequence_truncate") c.m = mode::sequence_truncate;
  else if (s.name == "sequence_mask" || s.name == "seq_mask_tis") c.m = mode::sequence_mask;
  else
    cai::detail::config::unknown("rollout", s.name, "none, token_truncate, token_mask, sequence_truncate, sequence_mask");
  c.lo = s.number("lo", c.lo);
  c.hi = s.number("hi", c.hi);
  s.finish();
  return c;
}
}  // namespace is

/// A whole objective from "axis=value; axis=value" (see the header comment).
inline dynamic_objective objective_from_string(std::string_view text) {
  dynamic_objective o;
  o.clip = pg::ppo_clip{};
  o.estimator = adv::gae{};
  for (std::string_view item : detail::config::split(text, ';')) {
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      detail::fail_argument("cai::objective_from_string", "text", "entries of the form axis=value", detail::concat("'", item, "'"));
    const std::string key = detail::config::normalise(detail::config::trim(item.substr(0, eq)));
    const std::string_view value = detail::config::trim(item.substr(eq + 1));
    if (key == "clip") o.clip = pg::surrogate_from_name(value);
    else if (key == "kl") o.kl = kl::placement_from_name(value);
    else if (key == "agg") o.agg = agg::from_name(value);
    else if (key == "estimator") o.estimator = adv::estimator_from_name(value);
    else if (key == "rollout") o.rollout = is::correction_from_name(value);
    else if (key == "entropy_coef" || key == "log_ratio_clamp") {
      auto s = detail::config::parse(key, detail::concat("x:v=", value));
      (key == "entropy_coef" ? o.entropy_coef : o.log_ratio_clamp) = s.number("v", 0.0);
    } else
      detail::fail_argument("cai::objective_from_string", key,
                            "one of clip, kl, agg, estimator, rollout, entropy_coef, log_ratio_clamp", detail::concat("'", key, "'"));
  }
  return o;
}

}  // namespace cai
