// The README's policy-gradient example: one PPO-family objective, typed and from a config string.
#include <cai/algorithms.hpp>

#include <cstdio>
#include <vector>

int main() {
  constexpr std::int64_t B = 2, T = 4;
  std::vector<float> lp{-1.0f, -0.5f, -2.0f, -1.2f, -0.7f, -0.9f, -1.5f, -3.0f};
  std::vector<float> old_lp{-1.1f, -0.5f, -1.8f, -1.2f, -0.8f, -0.9f, -1.4f, -3.0f};
  std::vector<float> ref_lp(old_lp), advantage{0.5f, 0.5f, 0.5f, 0.0f, -1.0f, -1.0f, 0.0f, 0.0f}, grad(B * T);
  std::vector<std::uint8_t> m{1, 1, 1, 0, 1, 1, 0, 0};
  const cai::tensor_view<const float, 2> logp = cai::make_view(lp.data(), {B, T}),
                                         old_logp = cai::make_view(old_lp.data(), {B, T}),
                                         ref_logp = cai::make_view(ref_lp.data(), {B, T}),
                                         adv = cai::make_view(advantage.data(), {B, T});
  const cai::tensor_view<const std::uint8_t, 2> mask = cai::make_view(m.data(), {B, T});
  const cai::tensor_view<float, 2> dlogp = cai::make_view(grad.data(), {B, T});

  using objective = cai::ppo_objective<cai::pg::dual_clip, cai::kl::in_loss<cai::kl::k3>, cai::agg::token_mean>;
  auto res = cai::policy_loss(cai::host{}, objective{}, {.logp = logp, .old_logp = old_logp, .advantages = adv,
                                                         .mask = mask, .ref_logp = ref_logp}, {.dlogp = dlogp});
  // the same objective from a config string (each axis mapped separately):
  auto dyn = cai::objective_from_string("clip=dual_clip:c=3; kl=in_loss:k3,coef=0.001; agg=token-mean");
  const auto res2 = cai::policy_loss(cai::host{}, dyn, {.logp = logp, .old_logp = old_logp, .advantages = adv,
                                                        .mask = mask, .ref_logp = ref_logp});
  std::printf("loss %.6f (from the config string %.6f), clip fraction %.3f, approx KL %.4f\n", res.loss, res2.loss,
              res.metrics.clip_fraction, res.metrics.approx_kl);
  return res.loss == res2.loss ? 0 : 1;
}
