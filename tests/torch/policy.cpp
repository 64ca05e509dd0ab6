// cai/torch/policy.hpp: LibTorch models as cai policies. The models are tiny TorchScript exports made at test time
// (tests/torch/tiny_models.py). Every gradient cai pushes through torch autograd is compared with the gradient torch
// computes for the same loss written in torch operations (an independent implementation of the loss and of the
// log-probs), and the two log-prob paths (cai_host, torch_ops) are compared with each other.
#include <cai/algorithms/dpo.hpp>
#include <cai/algorithms/ppo.hpp>
#include <cai/concepts/policy.hpp>
#include <cai/concepts/scalar_model.hpp>
#include <cai/torch/policy.hpp>
#include <cai/trainers/dpo.hpp>
#include <cai/trainers/ppo.hpp>
#include <cai/trainers/reward.hpp>

#include <cmath>
#include <fstream>
#include <vector>

#include "../support.hpp"
#include "models.hpp"

namespace {

using jit_lm = cai::torch_lm<torch::jit::script::Module>;
using jit_rm = cai::torch_scalar_model<torch::jit::script::Module>;
static_assert(cai::trainable_policy<jit_lm> && cai::sampling_policy<jit_lm>);
static_assert(cai::scalar_model<jit_rm> && cai::trainable_scalar_model<jit_rm>);
static_assert(!std::copy_constructible<jit_lm>, "a copy would share parameters with the original");

constexpr std::int64_t V = 48;

jit_lm load_lm(const char* file = "lm.pt", cai::torch_model_options o = {}) {
  return jit_lm(cai::load_torchscript(cai_test::torch_models() / file), std::move(o));
}

/// A right-padded batch with rows of different lengths; loss_mask marks the "completion" (the last `resp` tokens).
struct test_batch {
  std::int64_t B, T;
  std::vector<std::int32_t> tokens;
  std::vector<std::uint8_t> mask, loss_mask;
  test_batch(std::vector<std::int64_t> lens, std::int64_t resp, std::uint64_t seed) : B(static_cast<std::int64_t>(lens.size())), T(0) {
    for (auto l : lens) T = std::max(T, l);
    const auto ids = cai_test::random_ids(static_cast<std::size_t>(B * T), V, seed);
    tokens.assign(ids.begin(), ids.end());
    mask.assign(tokens.size(), 0);
    loss_mask.assign(tokens.size(), 0);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < lens[static_cast<std::size_t>(b)]; ++t) {
        mask[static_cast<std::size_t>(b * T + t)] = 1;
        loss_mask[static_cast<std::size_t>(b * T + t)] = t >= lens[static_cast<std::size_t>(b)] - resp ? 1 : 0;
      }
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (!mask[i]) tokens[i] = 47;  // garbage on padding: must not matter
  }
  cai::token_batch batch(bool with_loss_mask = true) const {
    return {.tokens = {tokens.data(), {B, T}}, .mask = {mask.data(), {B, T}},
            .loss_mask = with_loss_mask ? cai::tensor_view<const std::uint8_t, 2>(loss_mask.data(), {B, T})
                                        : cai::tensor_view<const std::uint8_t, 2>{}};
  }
  torch::Tensor ids() const {
    auto t = torch::empty({B, T}, torch::kLong);
    for (std::int64_t i = 0; i < B * T; ++i) t.data_ptr<std::int64_t>()[i] = mask[static_cast<std::size_t>(i)] ? tokens[static_cast<std::size_t>(i)] : 0;
    return t;
  }
  /// Scored positions as torch sees them, (B, T - 1) floats for positions 1..T-1.
  torch::Tensor scored(bool with_loss_mask = true) const {
    auto t = torch::zeros({B, T}, torch::kFloat);
    for (std::int64_t i = 0; i < B * T; ++i)
      t.data_ptr<float>()[i] = mask[static_cast<std::size_t>(i)] && (!with_loss_mask || loss_mask[static_cast<std::size_t>(i)]) ? 1.0f : 0.0f;
    return t.narrow(1, 1, T - 1);
  }
};

/// Per-token log-probs written in torch operations, independently of cai: (B, T - 1) for positions 1..T-1.
torch::Tensor torch_token_logp(torch::jit::script::Module& m, const test_batch& tb, double temperature = 1.0) {
  auto logits = m.forward({tb.ids()}).toTensor().to(torch::kDouble) / temperature;
  auto lsm = torch::log_softmax(logits.narrow(1, 0, tb.T - 1), -1);
  return lsm.gather(-1, tb.ids().narrow(1, 1, tb.T - 1).unsqueeze(-1)).squeeze(-1);
}

std::vector<torch::Tensor> grads_of(jit_lm& lm) {
  std::vector<torch::Tensor> g;
  for (auto& p : lm.parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return g;
}

/// max |a - b| / max |b| over all parameters.
double relative_gap(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, (a[i].to(torch::kDouble) - b[i].to(torch::kDouble)).abs().max().item<double>());
    den = std::max(den, b[i].abs().max().item<double>());
  }
  return num / den;
}

void zero_all(jit_lm& lm) {
  for (auto& p : lm.parameters())
    if (p.grad().defined()) p.grad().zero_();
}

const cai::torch_logits_path both_paths[] = {cai::torch_logits_path::cai_host, cai::torch_logits_path::torch_ops};

}  // namespace

TEST_CASE("torch_lm log-probs and entropy equal an fp64 torch computation on both paths", "[torch]") {
  const test_batch tb({7, 5, 9}, 3, 1);
  for (const auto path : both_paths)
    for (const double tau : {1.0, 0.7})
    for (const bool with_loss_mask : {false, true}) {
      auto lm = load_lm("lm.pt", {.logits_path = path});
      REQUIRE(lm.vocab_size() == V);
      auto h = lm.train_forward(tb.batch(with_loss_mask), {.entropy = true, .temperature = static_cast<float>(tau)});
      auto mod = lm.module();
      torch::NoGradGuard ng;
      const auto ref = torch_token_logp(mod, tb, tau);
      auto logits = mod.forward({tb.ids()}).toTensor().to(torch::kDouble) / tau;
      auto lsm = torch::log_softmax(logits.narrow(1, 0, tb.T - 1), -1);
      const auto ent = -(lsm.exp() * lsm).sum(-1);
      const auto sc = tb.scored(with_loss_mask);
      for (std::int64_t b = 0; b < tb.B; ++b) {
        CHECK(h.logp()(b, 0) == 0.0f);
        for (std::int64_t t = 1; t < tb.T; ++t) {
          const bool s = sc[b][t - 1].item<float>() != 0;
          CHECK(h.logp()(b, t) == Approx(s ? ref[b][t - 1].item<double>() : 0.0).margin(2e-5));
          CHECK(h.entropy()(b, t) == Approx(s ? ent[b][t - 1].item<double>() : 0.0).margin(2e-5));
        }
      }
      std::vector<float> out(static_cast<std::size_t>(tb.B * tb.T));
      lm.log_probs(tb.batch(with_loss_mask), cai::make_view(out.data(), {tb.B, tb.T}), static_cast<float>(tau));
      for (std::int64_t i = 0; i < tb.B * tb.T; ++i) CHECK(out[static_cast<std::size_t>(i)] == h.logp()(i / tb.T, i % tb.T));
    }
}

TEST_CASE("torch_lm: cai's DPO loss gradients through torch autograd equal torch's gradients of DPO written in torch", "[torch][dpo]") {
  // Pairs (row 2i chosen, row 2i + 1 rejected) with completions of different lengths; reference log-probs constants.
  const test_batch chosen({8, 6, 9}, 4, 11), rejected({7, 9, 5}, 3, 12);
  const std::vector<float> ref_c{-20.0f, -15.5f, -22.0f}, ref_r{-18.0f, -25.0f, -12.0f};
  const double beta = 0.3;
  for (const auto path : both_paths) {
    auto lm = load_lm("lm.pt", {.logits_path = path});
    // cai: per-token log-probs -> sequence sums -> cai::dpo_loss -> dlogp -> backward through torch autograd.
    zero_all(lm);
    auto hc = lm.train_forward(chosen.batch(), {});
    auto hr = lm.train_forward(rejected.batch(), {});
    const std::int64_t B = 3;
    std::vector<float> pc(3, 0.0f), pr(3, 0.0f), dpc(3), dpr(3);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < chosen.T; ++t) pc[static_cast<std::size_t>(b)] += hc.logp()(b, t);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < rejected.T; ++t) pr[static_cast<std::size_t>(b)] += hr.logp()(b, t);
    const auto res = cai::dpo_loss(cai::host{}, cai::dpo::sigmoid{.beta = beta},
                                   cai::dpo_batch<float>{.chosen = {pc.data(), {B}}, .rejected = {pr.data(), {B}},
                                                         .ref_chosen = {ref_c.data(), {B}}, .ref_rejected = {ref_r.data(), {B}}},
                                   cai::dpo_grads<float>{.chosen = {dpc.data(), {B}}, .rejected = {dpr.data(), {B}}});
    std::vector<float> gc(static_cast<std::size_t>(B * chosen.T)), gr(static_cast<std::size_t>(B * rejected.T));
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t t = 0; t < chosen.T; ++t) gc[static_cast<std::size_t>(b * chosen.T + t)] = dpc[static_cast<std::size_t>(b)];
      for (std::int64_t t = 0; t < rejected.T; ++t) gr[static_cast<std::size_t>(b * rejected.T + t)] = dpr[static_cast<std::size_t>(b)];
    }
    lm.backward(std::move(hc), {.dlogp = cai::make_view(static_cast<const float*>(gc.data()), {B, chosen.T})});
    lm.backward(std::move(hr), {.dlogp = cai::make_view(static_cast<const float*>(gr.data()), {B, rejected.T})});
    const auto g_cai = grads_of(lm);
    // torch: the same loss written with torch operations, in fp64, differentiated by autograd.
    zero_all(lm);
    auto mod = lm.module();
    const auto sc = (torch_token_logp(mod, chosen) * chosen.scored()).sum(1);
    const auto sr = (torch_token_logp(mod, rejected) * rejected.scored()).sum(1);
    const auto rc = torch::tensor(std::vector<double>(ref_c.begin(), ref_c.end()), torch::kDouble);
    const auto rr = torch::tensor(std::vector<double>(ref_r.begin(), ref_r.end()), torch::kDouble);
    const auto loss = -torch::log_sigmoid(beta * ((sc - rc) - (sr - rr))).mean();
    loss.backward();
    const auto g_torch = grads_of(lm);
    INFO("path " << static_cast<int>(path));
    CHECK(res.loss == Approx(loss.item<double>()).epsilon(1e-5));
    CHECK(relative_gap(g_cai, g_torch) < 1e-4);
  }
}

TEST_CASE("torch_lm: cai's PPO-clip loss with an entropy bonus, through autograd, equals torch's own gradients", "[torch][ppo]") {
  const test_batch tb({9, 7, 8, 6}, 4, 21);
  const std::int64_t B = tb.B, T = tb.T;
  const auto adv = cai_test::normal_floats(static_cast<std::size_t>(B * T), 1.0f, 22);
  const double entropy_coef = 0.01;
  for (const auto path : both_paths) {
    auto lm = load_lm("lm.pt", {.logits_path = path});
    std::vector<float> old(static_cast<std::size_t>(B * T));
    lm.log_probs(tb.batch(), cai::make_view(old.data(), {B, T}));
    // Perturb the old log-probs so that some ratios leave the clip range on both sides.
    const auto noise = cai_test::normal_floats(old.size(), 0.3f, 23);
    for (std::size_t i = 0; i < old.size(); ++i) old[i] += noise[i];
    zero_all(lm);
    auto h = lm.train_forward(tb.batch(), {.entropy = true});
    std::vector<float> dlogp(old.size()), dent(old.size());
    const auto obj = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean, cai::adv::grpo>{.entropy_coef = entropy_coef};
    const auto res = cai::policy_loss(cai::host{}, obj,
                                      cai::policy_batch<float>{.logp = h.logp(), .old_logp = {old.data(), {B, T}},
                                                               .advantages = {adv.data(), {B, T}}, .mask = {tb.loss_mask.data(), {B, T}},
                                                               .entropy = h.entropy()},
                                      cai::policy_grads<float>{.dlogp = {dlogp.data(), {B, T}}, .dentropy = {dent.data(), {B, T}}});
    CHECK(res.metrics.clip_fraction > 0.05);
    lm.backward(std::move(h), {.dlogp = cai::make_view(static_cast<const float*>(dlogp.data()), {B, T}),
                               .dentropy = cai::make_view(static_cast<const float*>(dent.data()), {B, T})});
    const auto g_cai = grads_of(lm);
    zero_all(lm);
    auto mod = lm.module();
    auto logits = mod.forward({tb.ids()}).toTensor().to(torch::kDouble);
    auto lsm = torch::log_softmax(logits.narrow(1, 0, T - 1), -1);
    const auto lp = lsm.gather(-1, tb.ids().narrow(1, 1, T - 1).unsqueeze(-1)).squeeze(-1);
    const auto ent = -(lsm.exp() * lsm).sum(-1);
    const auto m = tb.scored();
    const auto o = torch::tensor(std::vector<double>(old.begin(), old.end()), torch::kDouble).view({B, T}).narrow(1, 1, T - 1);
    const auto a = torch::tensor(std::vector<double>(adv.begin(), adv.end()), torch::kDouble).view({B, T}).narrow(1, 1, T - 1);
    const auto ratio = torch::exp(lp - o);
    const auto surr = torch::max(-a * ratio, -a * torch::clamp(ratio, 0.8, 1.2));  // PPO-clip (Schulman et al. 2017)
    const auto loss = ((surr - entropy_coef * ent) * m).sum() / m.sum();
    loss.backward();
    const auto g_torch = grads_of(lm);
    INFO("path " << static_cast<int>(path));
    CHECK(res.loss == Approx(loss.item<double>()).epsilon(1e-4));
    CHECK(relative_gap(g_cai, g_torch) < 1e-4);
  }
}

TEST_CASE("torch_lm: a DPO step and a PPO step through torch::optim move their losses the right way", "[torch][dpo][ppo]") {
  const test_batch chosen({8, 6, 9, 7}, 4, 31), rejected({7, 9, 5, 8}, 3, 32);
  auto lm = load_lm("lm.pt");
  const std::int64_t B = chosen.B;
  std::vector<float> ref_c(4), ref_r(4);
  auto seq = [&](jit_lm& m, const test_batch& tb, std::vector<float>& out) {
    std::vector<float> lp(static_cast<std::size_t>(tb.B * tb.T));
    m.log_probs(tb.batch(), cai::make_view(lp.data(), {tb.B, tb.T}));
    out.assign(static_cast<std::size_t>(tb.B), 0.0f);
    for (std::int64_t i = 0; i < tb.B * tb.T; ++i) out[static_cast<std::size_t>(i / tb.T)] += lp[static_cast<std::size_t>(i)];
  };
  seq(lm, chosen, ref_c);
  seq(lm, rejected, ref_r);
  auto dpo_value = [&](bool step) {
    std::vector<float> pc, pr, dpc(4), dpr(4);
    lm.zero_grad();
    auto hc = lm.train_forward(chosen.batch(), {});
    auto hr = lm.train_forward(rejected.batch(), {});
    pc.assign(4, 0.0f);
    pr.assign(4, 0.0f);
    for (std::int64_t i = 0; i < B * chosen.T; ++i) pc[static_cast<std::size_t>(i / chosen.T)] += hc.logp()(i / chosen.T, i % chosen.T);
    for (std::int64_t i = 0; i < B * rejected.T; ++i) pr[static_cast<std::size_t>(i / rejected.T)] += hr.logp()(i / rejected.T, i % rejected.T);
    const auto res = cai::dpo_loss(cai::host{}, cai::dpo::sigmoid{.beta = 0.1},
                                   cai::dpo_batch<float>{.chosen = {pc.data(), {B}}, .rejected = {pr.data(), {B}},
                                                         .ref_chosen = {ref_c.data(), {B}}, .ref_rejected = {ref_r.data(), {B}}},
                                   cai::dpo_grads<float>{.chosen = {dpc.data(), {B}}, .rejected = {dpr.data(), {B}}});
    if (step) {
      std::vector<float> gc(static_cast<std::size_t>(B * chosen.T)), gr(static_cast<std::size_t>(B * rejected.T));
      for (std::size_t i = 0; i < gc.size(); ++i) gc[i] = dpc[i / static_cast<std::size_t>(chosen.T)];
      for (std::size_t i = 0; i < gr.size(); ++i) gr[i] = dpr[i / static_cast<std::size_t>(rejected.T)];
      lm.backward(std::move(hc), {.dlogp = cai::make_view(static_cast<const float*>(gc.data()), {B, chosen.T})});
      lm.backward(std::move(hr), {.dlogp = cai::make_view(static_cast<const float*>(gr.data()), {B, rejected.T})});
      const float norm = lm.step(1e-3);
      CHECK(norm > 0.0f);
    }
    return res;
  };
  const auto before = dpo_value(true);
  CHECK(before.loss == Approx(std::log(2.0)).margin(1e-6));  // policy == reference
  const auto after = dpo_value(false);
  CHECK(after.loss < before.loss - 1e-3);
  CHECK(after.metrics.margin > 0.0);

  // PPO: positive advantages on one row's completion, negative on another's; one clipped-surrogate step.
  const test_batch tb({9, 9}, 5, 41);
  std::vector<float> old(static_cast<std::size_t>(tb.B * tb.T)), adv(old.size(), 0.0f);
  lm.log_probs(tb.batch(), cai::make_view(old.data(), {tb.B, tb.T}));
  for (std::int64_t t = 0; t < tb.T; ++t) {
    adv[static_cast<std::size_t>(t)] = 1.0f;
    adv[static_cast<std::size_t>(tb.T + t)] = -1.0f;
  }
  const auto obj = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::token_mean, cai::adv::grpo>{};
  auto ppo_value = [&](bool step) {
    std::vector<float> dlogp(old.size());
    lm.zero_grad();
    auto h = lm.train_forward(tb.batch(), {});
    const auto res = cai::policy_loss(cai::host{}, obj,
                                      cai::policy_batch<float>{.logp = h.logp(), .old_logp = {old.data(), {tb.B, tb.T}},
                                                               .advantages = {adv.data(), {tb.B, tb.T}}, .mask = {tb.loss_mask.data(), {tb.B, tb.T}}},
                                      cai::policy_grads<float>{.dlogp = {dlogp.data(), {tb.B, tb.T}}});
    if (step) {
      lm.backward(std::move(h), {.dlogp = cai::make_view(static_cast<const float*>(dlogp.data()), {tb.B, tb.T})});
      lm.step(1e-3);
    }
    return res.loss;
  };
  const double l0 = ppo_value(true), l1 = ppo_value(false);
  CHECK(l0 == Approx(0.0).margin(1e-6));  // ratio 1, advantages of both signs over equal counts
  CHECK(l1 < l0 - 1e-3);
  std::vector<float> now(old.size());
  lm.log_probs(tb.batch(), cai::make_view(now.data(), {tb.B, tb.T}));
  double up = 0, down = 0;
  for (std::int64_t t = 0; t < tb.T; ++t)
    if (tb.loss_mask[static_cast<std::size_t>(t)]) {
      up += now[static_cast<std::size_t>(t)] - old[static_cast<std::size_t>(t)];
      down += now[static_cast<std::size_t>(tb.T + t)] - old[static_cast<std::size_t>(tb.T + t)];
    }
  CHECK(up > 0.0);
  CHECK(down < 0.0);
}

TEST_CASE("torch_lm sampling: behaviour log-probs equal the training forward's, with and without the KV cache", "[torch]") {
  // Prompts of three lengths (rows grouped by length decode in lockstep), right-padded.
  const std::vector<std::vector<std::int32_t>> prompts{{1, 2, 3}, {4, 5}, {6, 7, 8, 9, 10}, {11, 12, 13}};
  const std::int64_t B = 4, Tp = 5;
  std::vector<std::int32_t> tok(static_cast<std::size_t>(B * Tp), 0);
  std::vector<std::uint8_t> msk(tok.size(), 0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::size_t t = 0; t < prompts[static_cast<std::size_t>(b)].size(); ++t) {
      tok[static_cast<std::size_t>(b * Tp) + t] = prompts[static_cast<std::size_t>(b)][t];
      msk[static_cast<std::size_t>(b * Tp) + t] = 1;
    }
  const cai::token_batch pb{.tokens = {tok.data(), {B, Tp}}, .mask = {msk.data(), {B, Tp}}};
  std::int64_t stops = 0;
  for (const char* file : {"lm.pt", "lm_nocache.pt"})
    for (const cai::sampling_params& sp : {cai::sampling_params{.temperature = 1.0f, .max_new_tokens = 12, .seed = 5},
                                          cai::sampling_params{.temperature = 0.7f, .top_k = 5, .max_new_tokens = 12, .seed = 6},
                                          cai::sampling_params{.temperature = 1.3f, .top_p = 0.8f, .max_new_tokens = 12, .seed = 7}}) {
      auto lm = load_lm(file);
      CHECK(lm.uses_cache() == (std::string(file) == "lm.pt"));
      const auto s = lm.sample(pb, sp, /*eos_id=*/3);
      REQUIRE(s.batch == B);
      REQUIRE(s.length == Tp + 12);
      const cai::token_batch sb{.tokens = {s.tokens.data(), {B, s.length}}, .mask = {s.mask.data(), {B, s.length}},
                                .loss_mask = {s.response.data(), {B, s.length}}};
      std::vector<float> lp(s.logp.size());
      lm.log_probs(sb, cai::make_view(lp.data(), {B, s.length}), sp.temperature);
      std::int64_t sampled = 0;
      for (std::int64_t b = 0; b < B; ++b) {
        const auto plen = static_cast<std::int64_t>(prompts[static_cast<std::size_t>(b)].size());
        for (std::int64_t t = 0; t < s.length; ++t) {
          const auto i = static_cast<std::size_t>(b * s.length + t);
          if (t < plen) CHECK((s.mask[i] == 1 && s.response[i] == 0 && s.tokens[i] == prompts[static_cast<std::size_t>(b)][static_cast<std::size_t>(t)]));
          if (!s.response[i]) continue;
          ++sampled;
          CHECK(s.logp[i] == Approx(lp[i]).margin(1e-4));
          CHECK((s.tokens[i] >= 0 && s.tokens[i] < V));
          if (s.tokens[i] == 3) {  // stops at eos
            CHECK((t + 1 == s.length || s.mask[i + 1] == 0));
            ++stops;
          }
        }
      }
      CHECK(sampled > 8);
      // A top-k draw only takes one of the k most likely tokens (its rank among the logits < k); a top-p draw only
      // one of the nucleus (the probability mass strictly above it < top_p).
      if (sp.top_k > 0 || sp.top_p < 1.0f) {
        const auto lg = lm.logits(sb);
        for (std::int64_t b = 0; b < B; ++b)
          for (std::int64_t t = 1; t < s.length; ++t) {
            const auto i = static_cast<std::size_t>(b * s.length + t);
            if (!s.response[i]) continue;
            const auto row = lg[b][t - 1];
            if (sp.top_k > 0) CHECK((row > row[s.tokens[i]]).sum().item<std::int64_t>() < sp.top_k);
            if (sp.top_p < 1.0f) {
              const auto p = torch::softmax(row.to(torch::kDouble) / sp.temperature, -1);
              CHECK((p * (p > p[s.tokens[i]])).sum().item<double>() < sp.top_p + 1e-6);
            }
          }
      }
      // Deterministic for the seed.
      const auto again = lm.sample(pb, sp, 3);
      CHECK(again.tokens == s.tokens);
    }
  CHECK(stops > 0);  // the eos check above was exercised
  // With and without the cache the same seed draws the same tokens (the logits agree to float rounding).
  auto a = load_lm("lm.pt"), b = load_lm("lm_nocache.pt");
  const cai::sampling_params sp{.max_new_tokens = 10, .seed = 9};
  CHECK(a.sample(pb, sp).tokens == b.sample(pb, sp).tokens);
}

TEST_CASE("torch_lm eval mode switches dropout off, so repeated forwards agree", "[torch]") {
  const test_batch tb({6, 5}, 2, 51);
  auto lm = load_lm("dropout.pt");
  std::vector<float> x(static_cast<std::size_t>(tb.B * tb.T)), y(x.size());
  lm.log_probs(tb.batch(), cai::make_view(x.data(), {tb.B, tb.T}));
  lm.log_probs(tb.batch(), cai::make_view(y.data(), {tb.B, tb.T}));
  CHECK(x == y);
  auto train = load_lm("dropout.pt", {.eval_mode = false});
  train.log_probs(tb.batch(), cai::make_view(y.data(), {tb.B, tb.T}));
  CHECK(x != y);
}

TEST_CASE("torch_scalar_model: values, masked padding, and Bradley-Terry gradients equal torch's", "[torch][reward]") {
  auto rm = jit_rm(cai::load_torchscript(cai_test::torch_models() / "reward.pt"));
  const test_batch tb({7, 4, 6, 5}, 1, 61);
  std::vector<float> v(static_cast<std::size_t>(tb.B * tb.T));
  rm.scalars(tb.batch(), cai::make_view(v.data(), {tb.B, tb.T}));
  auto mod = rm.module();
  torch::Tensor ref;
  {
    torch::NoGradGuard ng;
    ref = mod.forward({tb.ids()}).toTensor();
  }
  for (std::int64_t i = 0; i < tb.B * tb.T; ++i)
    CHECK(v[static_cast<std::size_t>(i)] == (tb.mask[static_cast<std::size_t>(i)] ? ref.view(-1)[i].item<float>() : 0.0f));
  // Loss: -log sigmoid(r_0 - r_1) - log sigmoid(r_2 - r_3) on the last real tokens (rows 0, 2 chosen).
  const std::int64_t last[4] = {6, 3, 5, 4};
  rm.zero_grad();
  auto h = rm.train_forward(tb.batch());
  std::vector<float> dv(v.size(), 0.0f);
  for (int k = 0; k < 2; ++k) {
    const double d = h.values()(2 * k, last[2 * k]) - h.values()(2 * k + 1, last[2 * k + 1]);
    const double g = -1.0 / (1.0 + std::exp(d));  // d/dd of -log sigmoid(d)
    dv[static_cast<std::size_t>(2 * k * tb.T + last[2 * k])] = static_cast<float>(g);
    dv[static_cast<std::size_t>((2 * k + 1) * tb.T + last[2 * k + 1])] = static_cast<float>(-g);
  }
  rm.backward(std::move(h), cai::make_view(static_cast<const float*>(dv.data()), {tb.B, tb.T}));
  std::vector<torch::Tensor> g_cai, g_torch;
  for (auto& p : rm.parameters()) g_cai.push_back(p.grad().clone());
  rm.zero_grad();
  for (auto& p : rm.parameters())
    if (p.grad().defined()) p.grad().zero_();
  const auto out = mod.forward({tb.ids()}).toTensor().to(torch::kDouble);
  const auto loss = -torch::log_sigmoid(out[0][last[0]] - out[1][last[1]]) - torch::log_sigmoid(out[2][last[2]] - out[3][last[3]]);
  loss.backward();
  for (auto& p : rm.parameters()) g_torch.push_back(p.grad().clone());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < g_cai.size(); ++i) {
    num = std::max(num, (g_cai[i] - g_torch[i]).abs().max().item<double>());
    den = std::max(den, g_torch[i].abs().max().item<double>());
  }
  CHECK(num / den < 1e-5);
}

TEST_CASE("torch adapters reject bad modules, batches, gradients and files with cai errors naming the argument", "[torch]") {
  const auto dir = cai_test::torch_models();
  CAI_REQUIRE_THROWS_NAMING(jit_lm(cai::load_torchscript(dir / "bad_rank.pt")), cai::shape_error, "module", "rank-2");
  {  // a declared vocabulary skips the probe forward; the first forward checks it
    auto declared = load_lm("lm.pt", {.vocab = 50});
    CHECK(declared.vocab_size() == 50);
    const test_batch one({3}, 1, 70);
    std::vector<float> o(3);
    CAI_REQUIRE_THROWS_NAMING(declared.log_probs(one.batch(), cai::make_view(o.data(), {1, 3})), cai::shape_error, "module",
                              "vocabulary of 50", "48");
  }
  CAI_REQUIRE_THROWS_NAMING(cai::load_torchscript(dir / "missing.pt"), cai::invalid_argument, "path", "missing.pt");
  {
    const auto bad = dir / "corrupt.pt";
    std::ofstream(bad) << "this is not a zip archive";
    CAI_REQUIRE_THROWS_NAMING(cai::load_torchscript(bad), cai::parse_error, "path", "corrupt.pt");
  }
  CAI_REQUIRE_THROWS_NAMING(load_lm("lm.pt", {.max_grad_norm = -1}), cai::invalid_argument, "options.max_grad_norm");
  auto lm = load_lm();
  test_batch tb({5, 4}, 2, 71);
  tb.tokens[1] = 48;  // out of the vocabulary on a real position
  CAI_REQUIRE_THROWS_NAMING(lm.train_forward(tb.batch(), {}), cai::invalid_argument, "batch.tokens", "48", "at 0,1");
  tb.tokens[1] = 2;
  auto h = lm.train_forward(tb.batch(), {});
  std::vector<float> g(3 * tb.T, 0.0f);
  CAI_REQUIRE_THROWS_NAMING(lm.backward(std::move(h), {.dlogp = cai::make_view(static_cast<const float*>(g.data()), {3, tb.T})}),
                            cai::shape_error, "grads.dlogp");
  // The rejected call did not consume the handle: it can be retried, and only then is it gone.
  std::vector<float> ok(static_cast<std::size_t>(tb.B * tb.T), 0.0f);
  lm.backward(std::move(h), {.dlogp = cai::make_view(static_cast<const float*>(ok.data()), {tb.B, tb.T})});
  CAI_REQUIRE_THROWS_NAMING(lm.backward(std::move(h), {.dlogp = cai::make_view(static_cast<const float*>(ok.data()), {tb.B, tb.T})}),
                            cai::invalid_argument, "handle", "moved-from");
  CAI_REQUIRE_THROWS_NAMING(h.logp(), cai::invalid_argument, "handle");
  // A sequence longer than the model's position table (64): inside TorchScript without options.max_seq — a cai::error
  // quoting the interpreter's cause —, named up front with it.
  const test_batch long_batch({70}, 2, 72);
  CAI_REQUIRE_THROWS_NAMING(lm.train_forward(long_batch.batch(), {}), cai::error, "cai::torch_lm::train_forward", "LibTorch raised",
                            "index out of range");
  CAI_REQUIRE_THROWS_NAMING(load_lm("lm.pt", {.max_seq = 64}).train_forward(long_batch.batch(), {}), cai::invalid_argument,
                            "batch.tokens", "max_seq = 64");
  CAI_REQUIRE_THROWS_NAMING(load_lm("lm.pt", {.pad_id = 48}), cai::invalid_argument, "options.pad_id", "[0, 48)");
  {
    auto rm = jit_rm(cai::load_torchscript(dir / "reward.pt"));
    test_batch neg({4}, 1, 73);
    neg.tokens[2] = -1;
    std::vector<float> vals(4);
    CAI_REQUIRE_THROWS_NAMING(rm.scalars(neg.batch(), cai::make_view(vals.data(), {1, 4})), cai::invalid_argument, "batch.tokens", "-1");
  }
  auto h2 = lm.train_forward(tb.batch(), {.entropy = false});
  std::vector<float> g2(static_cast<std::size_t>(tb.B * tb.T), 0.0f);
  CAI_REQUIRE_THROWS_NAMING(lm.backward(std::move(h2), {.dlogp = cai::make_view(static_cast<const float*>(g2.data()), {tb.B, tb.T}),
                                                        .dentropy = cai::make_view(static_cast<const float*>(g2.data()), {tb.B, tb.T})}),
                            cai::invalid_argument, "grads.dentropy");
  CAI_REQUIRE_THROWS_NAMING(lm.train_forward(tb.batch(), {.temperature = 0.0f}), cai::invalid_argument, "temperature");
  CAI_REQUIRE_THROWS_NAMING(lm.sample(tb.batch(false), {.top_p = 0.0f}), cai::invalid_argument, "top_p");
  auto capped = load_lm("lm.pt", {.max_seq = 8});
  CAI_REQUIRE_THROWS_NAMING(capped.sample(tb.batch(false), {.max_new_tokens = 4}), cai::invalid_argument, "max_new_tokens", "max_seq = 8");
  CAI_REQUIRE_THROWS_NAMING(lm.step(-1.0), cai::invalid_argument, "learning_rate");
  // The scalar adapter refuses an LM's (B, T, V) output.
  CAI_REQUIRE_THROWS_NAMING(jit_rm(cai::load_torchscript(dir / "lm.pt")).scalars(tb.batch(), cai::tensor_view<float, 2>(g2.data(), {tb.B, tb.T})),
                            cai::shape_error, "module", "rank-3");
}

TEST_CASE("torch_lm drives cai's trainers: DPO raises the chosen margin, PPO with a torch reward model runs", "[torch][trainer]") {
  // A byte-free toy tokenizer over the 48-token vocabulary: characters 'a'..'z' and a few markers.
  struct toy_tokenizer {
    std::int64_t vocab_size() const { return V; }
    std::int32_t eos_id() const { return 1; }
    std::vector<std::int32_t> encode(std::string_view s) const {
      std::vector<std::int32_t> ids;
      for (char c : s) {
        if (c == '|') ids.push_back(1);        // end of turn (eos)
        else if (c == '>') ids.push_back(2);   // role marker
        else if (c >= 'a' && c <= 'z') ids.push_back(10 + (c - 'a'));
        else ids.push_back(3);
      }
      return ids;
    }
    std::string decode(std::span<const std::int32_t> ids) const {
      std::string s;
      for (auto i : ids) s += i == 1 ? '|' : i == 2 ? '>' : (i >= 10 && i < 36) ? static_cast<char>('a' + (i - 10)) : ' ';
      return s;
    }
    std::string apply_chat_template(const cai::conversation& c, bool gen) const {
      std::string s;
      for (const auto& m : c) s += ">" + std::string(m.role == "user" ? "u" : "a") + m.content + "|";
      if (gen) s += ">a";
      return s;
    }
  };
  static_assert(cai::tokenizer<toy_tokenizer>);
  toy_tokenizer tok;
  std::vector<cai::preference_record> pairs;
  for (const char* p : {"hello", "what", "tell", "give"})
    pairs.push_back({.prompt = {{"user", p}}, .chosen = "yes sure", .rejected = "no way"});
  auto lm = load_lm();
  auto ref = load_lm();
  std::vector<double> losses;
  cai::train_dpo(lm, ref, tok, pairs, cai::dpo::sigmoid{.beta = 0.5},
                 {.batch_size = 4, .epochs = 6, .schedule = cai::constant_schedule(3e-3),
                  .on_metrics = [&](std::int64_t, const cai::metric_map& m) { losses.push_back(m.at("loss")); }});
  REQUIRE(losses.size() == 6);
  CHECK(losses.front() == Approx(std::log(2.0)).margin(1e-5));
  CHECK(losses.back() < 0.5 * losses.front());

  auto rm = jit_rm(cai::load_torchscript(cai_test::torch_models() / "reward.pt"));
  auto reward = [&](const cai::conversation& prompt, const std::string& response) {
    cai::conversation c = prompt;
    c.push_back({"assistant", response.empty() ? std::string(" ") : response});
    const auto ids = tok.encode(tok.apply_chat_template(c, false));
    const auto n = static_cast<std::int64_t>(ids.size());
    std::vector<std::uint8_t> m(ids.size(), 1);
    std::vector<float> out(ids.size());
    rm.scalars({.tokens = {ids.data(), {1, n}}, .mask = {m.data(), {1, n}}}, cai::make_view(out.data(), {1, n}));
    return static_cast<double>(out.back());
  };
  auto policy = load_lm("lm.pt", {.max_seq = 64});
  auto frozen = load_lm();
  cai::ppo_trainer tr(policy, frozen, tok, reward,
                      cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::grpo>{.kl = {.beta = 0.05}},
                      {.group_size = 4, .sampling = {.max_new_tokens = 8, .seed = 3}, .schedule = cai::constant_schedule(1e-3)});
  std::vector<cai::conversation> prompts{{{"user", "hi"}}, {{"user", "ok"}}};
  for (int i = 0; i < 3; ++i) {
    const auto m = tr.iterate(prompts);
    CHECK(std::isfinite(m.at("policy_loss")));
    CHECK(m.at("response_length") > 0.0);
  }
  CHECK(tr.optimizer_steps() == 3);
}

namespace {
// A C++ torch::nn module (no TorchScript): an embedding, a causal running mean of the embeddings, a linear head.
struct tiny_cpp_lmImpl : torch::nn::Module {
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear head{nullptr};
  tiny_cpp_lmImpl() {
    torch::manual_seed(3);
    emb = register_module("emb", torch::nn::Embedding(V, 16));
    head = register_module("head", torch::nn::Linear(16, V));
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    auto x = emb(ids);                                                              // (B, T, 16)
    auto n = torch::arange(1, ids.size(1) + 1, torch::kFloat).view({1, -1, 1});
    return head(x.cumsum(1) / n);
  }
};
TORCH_MODULE(tiny_cpp_lm);
}  // namespace

TEST_CASE("torch_lm adapts a C++ torch::nn module: log-prob gradients equal torch's, and it saves", "[torch]") {
  using cpp_lm = cai::torch_lm<tiny_cpp_lm>;
  static_assert(cai::trainable_policy<cpp_lm> && cai::sampling_policy<cpp_lm>);
  tiny_cpp_lm module;
  cpp_lm lm(module);
  REQUIRE(lm.vocab_size() == V);
  CHECK(!lm.uses_cache());
  const test_batch tb({6, 4, 5}, 3, 81);
  // L = sum over scored tokens of w_t * logp_t with random weights; cai path vs torch written directly.
  const auto w = cai_test::normal_floats(static_cast<std::size_t>(tb.B * tb.T), 1.0f, 82);
  lm.zero_grad();
  auto h = lm.train_forward(tb.batch(), {});
  lm.backward(std::move(h), {.dlogp = cai::make_view(w.data(), {tb.B, tb.T})});
  std::vector<torch::Tensor> g_cai;
  for (auto& p : module->parameters()) g_cai.push_back(p.grad().clone());
  lm.zero_grad();
  for (auto& p : module->parameters())
    if (p.grad().defined()) p.grad().zero_();
  auto lsm = torch::log_softmax(module->forward(tb.ids()).to(torch::kDouble).narrow(1, 0, tb.T - 1), -1);
  auto lp = lsm.gather(-1, tb.ids().narrow(1, 1, tb.T - 1).unsqueeze(-1)).squeeze(-1);
  auto wt = torch::tensor(std::vector<double>(w.begin(), w.end()), torch::kDouble).view({tb.B, tb.T}).narrow(1, 1, tb.T - 1);
  (lp * wt * tb.scored()).sum().backward();
  double num = 0, den = 0;
  std::size_t i = 0;
  for (auto& p : module->parameters()) {
    num = std::max(num, (g_cai[i++] - p.grad()).abs().max().item<double>());
    den = std::max(den, p.grad().abs().max().item<double>());
  }
  CHECK(num / den < 1e-5);
  // Sampling without a cache re-runs the prefix; the behaviour log-probs match the forward.
  const std::vector<std::int32_t> prompt{5, 6, 7};
  const std::vector<std::uint8_t> pm(3, 1);
  const auto s = lm.sample({.tokens = {prompt.data(), {1, 3}}, .mask = {pm.data(), {1, 3}}}, {.max_new_tokens = 6, .seed = 2});
  std::vector<float> lpv(s.logp.size());
  lm.log_probs({.tokens = {s.tokens.data(), {1, s.length}}, .mask = {s.mask.data(), {1, s.length}}}, cai::make_view(lpv.data(), {1, s.length}));
  for (std::size_t k = 3; k < lpv.size(); ++k) CHECK(s.logp[k] == Approx(lpv[k]).margin(1e-5));
  // save() writes a torch::save archive that torch::load reads back into a fresh module.
  const auto path = std::filesystem::temp_directory_path() / ("cai_cpp_lm_" + std::to_string(::getpid()) + ".pt");
  lm.save(path);
  tiny_cpp_lm other;
  torch::load(other, path.string());
  CHECK(torch::equal(other->head->weight, module->head->weight));
  std::filesystem::remove(path);
  CAI_REQUIRE_THROWS_NAMING(lm.save("/nonexistent-dir/x.pt"), cai::error, "cai::torch_lm::save", "/nonexistent-dir/x.pt");
}

TEST_CASE("torch_lm::save writes a TorchScript module that loads back with the trained weights", "[torch]") {
  auto lm = load_lm();
  const test_batch tb({6, 5}, 2, 91);
  std::vector<float> w(static_cast<std::size_t>(tb.B * tb.T), 1.0f);
  lm.zero_grad();
  auto h = lm.train_forward(tb.batch(), {});
  lm.backward(std::move(h), {.dlogp = cai::make_view(static_cast<const float*>(w.data()), {tb.B, tb.T})});
  lm.step(1e-2);
  const auto path = std::filesystem::temp_directory_path() / ("cai_jit_lm_" + std::to_string(::getpid()) + ".pt");
  lm.save(path);
  jit_lm back(cai::load_torchscript(path));
  std::filesystem::remove(path);
  std::vector<float> a(w.size()), b(w.size()), fresh(w.size());
  lm.log_probs(tb.batch(), cai::make_view(a.data(), {tb.B, tb.T}));
  back.log_probs(tb.batch(), cai::make_view(b.data(), {tb.B, tb.T}));
  load_lm().log_probs(tb.batch(), cai::make_view(fresh.data(), {tb.B, tb.T}));
  CHECK(a == b);
  CHECK(a != fresh);
}

TEST_CASE("torch_lm with bf16 logits: the cai_host path (bf16 dlogits) and the torch_ops path agree", "[torch]") {
  const test_batch tb({8, 6, 7}, 4, 101);
  const auto w = cai_test::normal_floats(static_cast<std::size_t>(tb.B * tb.T), 1.0f, 102);
  const auto u = cai_test::normal_floats(w.size(), 0.1f, 103);
  std::vector<std::vector<torch::Tensor>> grads;
  std::vector<std::vector<float>> logps;
  for (const auto path : both_paths) {
    auto module = cai::load_torchscript(cai_test::torch_models() / "lm.pt");
    module.to(torch::kBFloat16);
    jit_lm lm(module, {.logits_path = path});
    lm.zero_grad();
    auto h = lm.train_forward(tb.batch(), {.entropy = true, .temperature = 0.9f});
    logps.emplace_back(h.logp().data(), h.logp().data() + w.size());
    lm.backward(std::move(h), {.dlogp = cai::make_view(w.data(), {tb.B, tb.T}), .dentropy = cai::make_view(u.data(), {tb.B, tb.T})});
    std::vector<torch::Tensor> g;
    for (auto& p : lm.parameters()) g.push_back(p.grad().to(torch::kFloat).clone());
    grads.push_back(std::move(g));
  }
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(logps[0][i] == Approx(logps[1][i]).margin(1e-4));
  // bf16 parameter gradients: the cai path rounds dlogits to bf16 once, autograd's log_softmax backward in its own
  // order; the relative gap stays at a few bf16 ulps.
  CHECK(relative_gap(grads[0], grads[1]) < 3e-2);
}

TEST_CASE("torch_lm: what padding holds reaches neither the log-probs nor the gradients", "[torch]") {
  const test_batch tb({6, 4, 5}, 2, 111);
  std::vector<float> a(static_cast<std::size_t>(tb.B * tb.T)), b(a.size());
  load_lm().log_probs(tb.batch(), cai::make_view(a.data(), {tb.B, tb.T}));
  load_lm("lm.pt", {.pad_id = 5}).log_probs(tb.batch(), cai::make_view(b.data(), {tb.B, tb.T}));
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(b[i]).margin(1e-6));
}

namespace {
// A C++ module whose logits are NaN wherever the input is the pad id 47 (as a model that masks padding may produce).
struct nan_pad_lmImpl : torch::nn::Module {
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear head{nullptr};
  nan_pad_lmImpl() {
    torch::manual_seed(5);
    emb = register_module("emb", torch::nn::Embedding(V, 8));
    head = register_module("head", torch::nn::Linear(8, V));
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    auto logits = head(emb(ids).cumsum(1));
    return torch::where((ids == 47).unsqueeze(-1), torch::full_like(logits, std::numeric_limits<float>::quiet_NaN()), logits);
  }
};
TORCH_MODULE(nan_pad_lm);
}  // namespace

TEST_CASE("torch_lm: NaN logits on padding give finite log-probs, entropy and gradients on both paths", "[torch]") {
  const test_batch tb({6, 3, 5}, 2, 121);
  const auto w = cai_test::normal_floats(static_cast<std::size_t>(tb.B * tb.T), 1.0f, 122);
  for (const auto path : both_paths) {
    nan_pad_lm module;
    cai::torch_lm lm(module, {.pad_id = 47, .logits_path = path});
    lm.zero_grad();
    auto h = lm.train_forward(tb.batch(), {.entropy = true});
    for (std::int64_t i = 0; i < tb.B * tb.T; ++i) {
      CHECK(std::isfinite(h.logp()(i / tb.T, i % tb.T)));
      CHECK(std::isfinite(h.entropy()(i / tb.T, i % tb.T)));
      if (!tb.mask[static_cast<std::size_t>(i)]) CHECK(h.logp()(i / tb.T, i % tb.T) == 0.0f);
    }
    lm.backward(std::move(h), {.dlogp = cai::make_view(w.data(), {tb.B, tb.T}), .dentropy = cai::make_view(w.data(), {tb.B, tb.T})});
    for (auto& p : module->parameters()) CHECK(torch::isfinite(p.grad()).all().item<bool>());
    CHECK(std::isfinite(lm.step(1e-3)));
  }
}

TEST_CASE("torch_lm on CUDA (where LibTorch has it): the torch_ops path matches the CPU, views are device views", "[torch][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("LibTorch has no CUDA device here: the CUDA path of the adapters is not exercised");
    return;
  }
  const test_batch tb({8, 6, 7}, 4, 131);
  const auto w = cai_test::normal_floats(static_cast<std::size_t>(tb.B * tb.T), 1.0f, 132);
  std::vector<std::vector<torch::Tensor>> grads;
  std::vector<std::vector<float>> logps;
  for (const auto dev : {torch::Device(torch::kCPU), torch::Device(torch::kCUDA)}) {
    auto module = cai::load_torchscript(cai_test::torch_models() / "lm.pt", dev);
    jit_lm lm(module, {.logits_path = cai::torch_logits_path::torch_ops});
    REQUIRE(lm.device() == dev);
    lm.zero_grad();
    auto h = lm.train_forward(tb.batch(), {.entropy = true});
    logps.emplace_back(h.logp().data(), h.logp().data() + w.size());
    lm.backward(std::move(h), {.dlogp = cai::make_view(w.data(), {tb.B, tb.T})});
    std::vector<torch::Tensor> g;
    for (auto& p : lm.parameters()) g.push_back(p.grad().to(torch::kCPU).clone());
    grads.push_back(std::move(g));
    // The automatic path on CUDA logits is torch_ops; a request for cai_host is refused, naming the option.
    CAI_REQUIRE_THROWS_NAMING(jit_lm(module, {.logits_path = cai::torch_logits_path::cai_host}).train_forward(tb.batch(), {}),
                              cai::invalid_argument, "options.logits_path");
  }
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(logps[0][i] == Approx(logps[1][i]).margin(1e-4));
  CHECK(relative_gap(grads[1], grads[0]) < 1e-3);
  auto t = torch::arange(12, torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA)).view({3, 4});
  const auto v = cai::torch_view<const float, 2, cai::device_space>(t, "test", "t");
  CHECK(v.data() == t.data_ptr<float>());
  CAI_REQUIRE_THROWS_NAMING((cai::torch_view<const float, 2>(t, "test", "t")), cai::memory_space_error, "t", "host memory");
  DLManagedTensor* cap = at::toDLPack(t);
  CHECK(cai::dlpack_view(cap->dl_tensor).space == cai::memory_space::device);
  cap->deleter(cap);
  // Sampling on the GPU: behaviour log-probs match the training forward's.
  auto lm = jit_lm(cai::load_torchscript(cai_test::torch_models() / "lm.pt", torch::kCUDA));
  const std::vector<std::int32_t> prompt{5, 6, 7, 8};
  const std::vector<std::uint8_t> pm(4, 1);
  const auto s = lm.sample({.tokens = {prompt.data(), {1, 4}}, .mask = {pm.data(), {1, 4}}}, {.max_new_tokens = 10, .seed = 4});
  std::vector<float> lp(s.logp.size());
  lm.log_probs({.tokens = {s.tokens.data(), {1, s.length}}, .mask = {s.mask.data(), {1, s.length}}, .loss_mask = {s.response.data(), {1, s.length}}},
               cai::make_view(lp.data(), {1, s.length}));
  for (std::size_t k = 0; k < lp.size(); ++k)
    if (s.response[k]) CHECK(s.logp[k] == Approx(lp[k]).margin(1e-4));
}
