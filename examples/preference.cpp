// The README's preference example: token log-probs of a chosen/rejected pair -> sequence log-probs -> a DPO-family
// loss with its metrics -> gradients back to every token, typed and from TRL-style names.
#include <cai/algorithms.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  constexpr std::int64_t B = 2, T = 4;
  // Per-token log-probs (logp[b, t] scores token t), with masks marking the completion tokens.
  std::vector<float> pol_c{0, -0.4f, -0.6f, -0.2f, 0, -1.0f, -0.3f, 0}, pol_r{0, -0.9f, -1.4f, -0.8f, 0, -0.7f, -0.5f, -0.6f};
  std::vector<float> ref_c{0, -0.5f, -0.7f, -0.3f, 0, -0.9f, -0.4f, 0}, ref_r{0, -0.8f, -1.2f, -0.7f, 0, -0.8f, -0.5f, -0.5f};
  std::vector<std::uint8_t> mask_c{0, 1, 1, 1, 0, 1, 1, 0}, mask_r{0, 1, 1, 1, 0, 1, 1, 1};
  const auto side = [&](const std::vector<float>& lp, const std::vector<std::uint8_t>& m) {
    return cai::token_side<float>{cai::make_view(lp.data(), {B, T}), cai::make_view(m.data(), {B, T})};
  };
  std::vector<float> pc(B), pr(B), rc(B), rr(B);
  cai::pair_sequence_logps(cai::host{}, side(pol_c, mask_c), side(pol_r, mask_r), {cai::make_view(pc.data(), {B}), cai::make_view(pr.data(), {B})});
  cai::pair_sequence_logps(cai::host{}, side(ref_c, mask_c), side(ref_r, mask_r), {cai::make_view(rc.data(), {B}), cai::make_view(rr.data(), {B})});

  std::vector<std::int64_t> len_c{3, 2}, len_r{3, 3};
  const cai::dpo_batch<float> batch{.chosen = cai::make_view(pc.data(), {B}), .rejected = cai::make_view(pr.data(), {B}),
                                    .ref_chosen = cai::make_view(rc.data(), {B}), .ref_rejected = cai::make_view(rr.data(), {B}),
                                    .chosen_lengths = cai::make_view(len_c.data(), {B}),
                                    .rejected_lengths = cai::make_view(len_r.data(), {B})};
  std::vector<float> gc(B), gr(B);
  // RPO = DPO sigmoid + 0.5 * NLL of the chosen completions, as a typed mix and by name.
  const auto typed = cai::dpo_loss(cai::host{}, cai::dpo::rpo(0.1, 0.5), batch, {.chosen = cai::make_view(gc.data(), {B}), .rejected = cai::make_view(gr.data(), {B})});
  const auto named = cai::dpo_loss(cai::host{}, cai::dpo::from_string("sigmoid:beta=0.1 + 0.5*sft"), batch);

  // Chain the sequence gradients back to the tokens of the policy.
  std::vector<float> dtok_c(B * T), dtok_r(B * T);
  cai::pair_sequence_logps_backward(cai::host{}, side(pol_c, mask_c), side(pol_r, mask_r), cai::make_view<const float>(gc.data(), {B}),
                                    cai::make_view<const float>(gr.data(), {B}),
                                    {cai::make_view(dtok_c.data(), {B, T}), cai::make_view(dtok_r.data(), {B, T})});
  std::printf("RPO loss %.6f (by name %.6f); rewards chosen %.4f rejected %.4f, accuracy %.2f; dL/dlogp[0,1] = %.5f\n",
              typed.loss, named.loss, typed.metrics.chosen, typed.metrics.rejected, typed.metrics.accuracy, dtok_c[1]);
  return typed.loss == named.loss && std::isfinite(typed.loss) && dtok_c[0] == 0.0f ? 0 : 1;
}
