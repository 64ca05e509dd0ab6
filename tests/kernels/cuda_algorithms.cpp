// CUDA algorithm tests [cuda]: cai::token_logprobs, cai::token_logprobs_backward, cai::gae and
// cai::discounted_returns on cai::cuda against the host path (cai::host) and an fp64 reference, bitwise run-to-run
// determinism, and the device-side reports of bad input. The GPU side is tests/kernels/cuda_algorithms.cu; the
// runner (tests/kernels/device_parity.cpp) exits 77 (skipped) where no GPU is present.
#include <catch2/catch.hpp>

#include <cai/algorithms/advantages.hpp>
#include <cai/algorithms/dpo.hpp>
#include <cai/algorithms/gae.hpp>
#include <cai/algorithms/logprobs.hpp>
#include <cai/algorithms/ppo.hpp>
#include <cai/algorithms/preference.hpp>
#include <cai/algorithms/stats.hpp>
#include <cai/core/error.hpp>
#include <cai/core/half.hpp>
#include <cai/core/host.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "cuda_algorithms.hpp"

namespace {

using cai_test::logit_type;

/// Random logits of the case's type: normal(0, scale), with optional -inf entries; the float values actually
/// stored (after narrowing) are returned for the references.
std::vector<float> fill_logits(cai_test::logprob_case& c, float scale, std::uint32_t seed, double neg_inf_fraction = 0.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const std::size_t n = static_cast<std::size_t>(c.N * c.V);
  std::vector<float> stored(n);
  c.f32.clear();
  c.h16.clear();
  for (std::size_t i = 0; i < n; ++i) {
    float x = nd(gen);
    if (u(gen) < neg_inf_fraction && i % static_cast<std::size_t>(c.V) != 0) x = -std::numeric_limits<float>::infinity();
    if (c.type == logit_type::f32) {
      c.f32.push_back(x);
      stored[i] = x;
    } else if (c.type == logit_type::bf16) {
      const auto b = cai::bfloat16::from_float(x);
      c.h16.push_back(b.bits);
      stored[i] = b.to_float();
    } else {
      const auto h = cai::float16::from_float(std::isinf(x) ? x : std::clamp(x, -60000.0f, 60000.0f));
      c.h16.push_back(h.bits);
      stored[i] = h.to_float();
    }
  }
  return stored;
}

void fill_targets(cai_test::logprob_case& c, std::uint32_t seed, double masked_fraction) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<std::int64_t> tok(0, c.V - 1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  c.targets.resize(static_cast<std::size_t>(c.N));
  c.mask.assign(static_cast<std::size_t>(c.N), 1);
  for (std::int64_t i = 0; i < c.N; ++i) {
    c.targets[static_cast<std::size_t>(i)] = tok(gen);
    if (u(gen) < masked_fraction) {
      c.mask[static_cast<std::size_t>(i)] = 0;
      c.targets[static_cast<std::size_t>(i)] = -100;  // unscored targets may hold anything
    }
  }
}

/// Scored targets must not point at a -inf logit (their log-prob would be -inf on both sides); column 0 never is.
void avoid_neg_inf_targets(cai_test::logprob_case& c, const std::vector<float>& stored) {
  for (std::int64_t i = 0; i < c.N; ++i) {
    auto& y = c.targets[static_cast<std::size_t>(i)];
    if (y >= 0 && std::isinf(stored[static_cast<std::size_t>(i * c.V + y)])) y = 0;
  }
}

/// fp64 two-pass reference of one row: log-prob of y and entropy at temperature tau.
void reference_row(const float* x, std::int64_t V, std::int64_t y, double tau, double& logp, double& entropy) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < V; ++j) m = std::max(m, static_cast<double>(x[j]) / tau);
  double s = 0.0, t = 0.0;
  for (std::int64_t j = 0; j < V; ++j) {
    const double z = static_cast<double>(x[j]) / tau;
    if (z == -std::numeric_limits<double>::infinity()) continue;
    s += std::exp(z - m);
    t += std::exp(z - m) * (z - m);
  }
  logp = static_cast<double>(x[y]) / tau - m - std::log(s);
  entropy = std::log(s) - t / s;
}

/// The host path's outputs for the same case (rows layout).
struct host_out {
  std::vector<float> logp, entropy, saved;
  cai::logprob_summary summary;
};
host_out host_logprobs(const cai_test::logprob_case& c, const std::vector<float>& stored) {
  host_out h{std::vector<float>(static_cast<std::size_t>(c.N)), std::vector<float>(static_cast<std::size_t>(c.N)),
             std::vector<float>(static_cast<std::size_t>(3 * c.N)), {}};
  const auto L = cai::make_view(stored.data(), {c.N, c.V});
  const auto Y = cai::make_view(c.targets.data(), {c.N});
  const auto M = cai::make_view(c.mask.data(), {c.N});
  h.summary = cai::token_logprobs(cai::host{}, L, Y, M,
                                  {.logp = cai::make_view(h.logp.data(), {c.N}),
                                   .entropy = cai::make_view(h.entropy.data(), {c.N}),
                                   .saved = cai::make_view(h.saved.data(), {c.N, 3})},
                                  {.temperature = c.temperature});
  return h;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("token_logprobs on cai::cuda matches the host path and an fp64 reference", "[cuda][logprobs]") {
  struct shape {
    std::int64_t N, V;
  };
  const shape shapes[] = {{64, 2}, {37, 7}, {33, 1000}, {16, 32000}, {3, 152064}};
  const logit_type types[] = {logit_type::f32, logit_type::bf16, logit_type::f16};
  std::uint32_t seed = 1;
  for (const shape s : shapes)
    for (const logit_type type : types)
      for (const float tau : {1.0f, 0.7f})
        for (const std::int64_t offset : {std::int64_t{0}, std::int64_t{1}}) {
          CAPTURE(s.N, s.V, static_cast<int>(type), tau, offset);
          cai_test::logprob_case c;
          c.type = type;
          c.N = s.N;
          c.V = s.V;
          c.temperature = tau;
          c.offset = offset;
          const auto stored = fill_logits(c, type == logit_type::f16 ? 4.0f : 8.0f, ++seed, 0.01);
          fill_targets(c, ++seed, 0.2);
          avoid_neg_inf_targets(c, stored);
          const auto d = cai_test::device_logprobs(c);
          const auto h = host_logprobs(c, stored);
          REQUIRE(d.deferred);
          REQUIRE(d.scored_rows == h.summary.scored_rows);
          REQUIRE(d.nonfinite_rows == 0);
          for (std::int64_t i = 0; i < c.N; ++i) {
            const auto k = static_cast<std::size_t>(i);
            if (!c.mask[k]) {
              REQUIRE(d.logp[k] == 0.0f);
              REQUIRE(d.entropy[k] == 0.0f);
              continue;
            }
            double lp = 0, ent = 0;
            reference_row(stored.data() + i * c.V, c.V, c.targets[k], tau, lp, ent);
            // Bound: __expf and a different summation order against the host's exp; both in fp32.
            REQUIRE(std::fabs(d.logp[k] - lp) <= 1e-4 * (1.0 + std::fabs(lp)));
            REQUIRE(std::fabs(d.entropy[k] - ent) <= 1e-4 * (1.0 + std::fabs(ent)));
            REQUIRE(std::fabs(d.logp[k] - h.logp[k]) <= 1e-4 * (1.0 + std::fabs(h.logp[k])));
            REQUIRE(d.saved[3 * k] == h.saved[3 * k]);  // the maximum is exact
          }
          const auto again = cai_test::device_logprobs(c);
          REQUIRE(same_bits(d.logp, again.logp));
          REQUIRE(same_bits(d.entropy, again.entropy));
          REQUIRE(same_bits(d.saved, again.saved));
        }
}

TEST_CASE("token_logprobs on cai::cuda handles extreme logits, -inf, NaN rows and fully masked input",
          "[cuda][logprobs]") {
  cai_test::logprob_case c;
  c.N = 6;
  c.V = 4099;
  std::mt19937 gen(9);
  std::uniform_real_distribution<float> u(-1e4f, 1e4f);
  for (std::int64_t i = 0; i < c.N * c.V; ++i) c.f32.push_back(u(gen));
  c.f32[static_cast<std::size_t>(2 * c.V + 5)] = std::numeric_limits<float>::quiet_NaN();   // row 2: NaN
  c.f32[static_cast<std::size_t>(3 * c.V + 7)] = std::numeric_limits<float>::infinity();    // row 3: +inf
  for (std::int64_t j = 1; j < c.V; ++j) c.f32[static_cast<std::size_t>(4 * c.V + j)] = -std::numeric_limits<float>::infinity();
  c.targets = {0, 1, 2, 3, 0, 5};
  c.mask = {1, 1, 1, 1, 1, 0};
  const auto d = cai_test::device_logprobs(c);
  REQUIRE(d.scored_rows == 5);
  REQUIRE(d.nonfinite_rows == 2);
  REQUIRE(std::isnan(d.logp[2]));
  REQUIRE(std::isnan(d.logp[3]));
  REQUIRE(d.logp[4] == 0.0f);  // one finite logit: probability 1
  REQUIRE(d.entropy[4] == 0.0f);
  for (int i : {0, 1}) {
    double lp = 0, ent = 0;
    reference_row(c.f32.data() + i * c.V, c.V, c.targets[static_cast<std::size_t>(i)], 1.0, lp, ent);
    REQUIRE(std::fabs(d.logp[static_cast<std::size_t>(i)] - lp) <= 1e-4 * (1.0 + std::fabs(lp)));
    REQUIRE(std::fabs(d.entropy[static_cast<std::size_t>(i)] - ent) <= 1e-4 * (1.0 + std::fabs(ent)));
  }
  c.mask.assign(6, 0);
  const auto none = cai_test::device_logprobs(c);
  REQUIRE(none.scored_rows == 0);
  REQUIRE(std::all_of(none.logp.begin(), none.logp.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("token_logprobs on cai::cuda in the causal (B, T, V) layout matches the host path", "[cuda][logprobs]") {
  cai_test::logprob_case c;
  c.type = logit_type::bf16;
  c.B = 3;
  c.N = 3 * 17;
  c.V = 5003;
  const auto stored = fill_logits(c, 6.0f, 77);
  fill_targets(c, 78, 0.1);
  const auto d = cai_test::device_logprobs(c);
  std::vector<float> logp(static_cast<std::size_t>(c.N)), ent(static_cast<std::size_t>(c.N));
  const auto T = c.N / c.B;
  cai::token_logprobs(cai::host{}, cai::make_view(stored.data(), {c.B, T, c.V}), cai::make_view(c.targets.data(), {c.B, T}),
                      cai::make_view(c.mask.data(), {c.B, T}),
                      {.logp = cai::make_view(logp.data(), {c.B, T}), .entropy = cai::make_view(ent.data(), {c.B, T})});
  for (std::size_t k = 0; k < logp.size(); ++k) {
    REQUIRE(std::fabs(d.logp[k] - logp[k]) <= 1e-4 * (1.0 + std::fabs(logp[k])));
    REQUIRE(std::fabs(d.entropy[k] - ent[k]) <= 1e-4 * (1.0 + std::fabs(ent[k])));
  }
}

TEST_CASE("token_logprobs_backward on cai::cuda matches the host backward", "[cuda][logprobs]") {
  for (const logit_type type : {logit_type::f32, logit_type::bf16})
    for (const logit_type gtype : {logit_type::f32, logit_type::bf16})
      for (const bool with_saved : {true, false})
        for (const std::int64_t V : {std::int64_t{3}, std::int64_t{4097}, std::int64_t{32000}}) {
          CAPTURE(static_cast<int>(type), static_cast<int>(gtype), with_saved, V);
          cai_test::logprob_case c;
          c.type = type;
          c.N = 9;
          c.V = V;
          c.temperature = 0.8f;
          c.offset = V == 4097 ? 1 : 0;
          const auto stored = fill_logits(c, 5.0f, static_cast<std::uint32_t>(V) + 3u, 0.02);
          fill_targets(c, 11, 0.25);
          avoid_neg_inf_targets(c, stored);
          std::vector<float> g(static_cast<std::size_t>(c.N)), h(static_cast<std::size_t>(c.N));
          std::mt19937 gen(5);
          std::normal_distribution<float> nd;
          for (auto& v : g) v = nd(gen);
          for (auto& v : h) v = nd(gen);
          const auto d = cai_test::device_logprobs_backward(c, g, h, with_saved, gtype);
          std::vector<float> ref(stored.size());
          cai::token_logprobs_backward(cai::host{}, cai::make_view(stored.data(), {c.N, c.V}),
                                       cai::make_view(c.targets.data(), {c.N}), cai::make_view(c.mask.data(), {c.N}),
                                       {.dlogp = cai::make_view(std::as_const(g).data(), {c.N}),
                                        .dentropy = cai::make_view(std::as_const(h).data(), {c.N})},
                                       cai::make_view(ref.data(), {c.N, c.V}), {.temperature = c.temperature});
          float scale = 0.0f;
          for (float v : ref) scale = std::max(scale, std::fabs(v));
          // fp32 dlogits: exp differences only; bf16 dlogits: one bf16 rounding (2^-8 relative) on top.
          const double rel = gtype == logit_type::f32 ? 1e-5 : 1.0 / 128.0;
          REQUIRE(d.size() == ref.size());
          for (std::size_t i = 0; i < ref.size(); ++i) {
            // Absolute floor: a few ulp of the row's upstream gradients (log s and exp differ in the last bits).
            const auto row = i / static_cast<std::size_t>(c.V);
            const double floor = 4e-7 * (std::fabs(g[row]) + std::fabs(h[row])) / c.temperature;
            REQUIRE(std::fabs(d[i] - ref[i]) <= rel * std::fabs(ref[i]) + 1e-6 * scale + floor);
          }
          REQUIRE(same_bits(d, cai_test::device_logprobs_backward(c, g, h, with_saved, gtype)));
        }
}

TEST_CASE("cai::cuda reports bad input: host memory, misaligned views, and ids or masks found bad on the device",
          "[cuda][logprobs]") {
  REQUIRE_THROWS_AS(cai_test::device_logprobs_with_host_pointer(), cai::memory_space_error);
  REQUIRE_THROWS_WITH(cai_test::device_logprobs_with_host_pointer(), Catch::Contains("'logits'"));
  REQUIRE_THROWS_AS(cai_test::device_logprobs_with_misaligned_logits(), cai::layout_error);
  cai_test::logprob_case c;
  c.N = 4;
  c.V = 10;
  c.f32.assign(40, 0.5f);
  c.targets = {1, 2, 10, 3};
  REQUIRE_THROWS_AS(cai_test::device_logprobs(c), cai::invalid_argument);
  REQUIRE_THROWS_WITH(cai_test::device_logprobs(c), Catch::Contains("'targets'") && Catch::Contains("10"));
  c.targets = {1, 2, 3, 3};
  c.mask = {1, 2, 1, 1};
  REQUIRE_THROWS_WITH(cai_test::device_logprobs(c), Catch::Contains("'mask'"));
  // On one backend: the throwing synchronize resets the status block, so the next good call reports nothing.
  cai_test::logprob_case good = c;
  good.mask = {1, 1, 1, 1};
  c.targets = {1, 2, 10, 3};
  REQUIRE(cai_test::device_logprobs_after_error(c, good) == 4);
}

TEST_CASE("token_logprobs_ppo fuses the PPO surrogate into the forward", "[cuda][logprobs][ppo]") {
  cai_test::logprob_case c;
  c.N = 40;
  c.V = 3001;
  const auto stored = fill_logits(c, 3.0f, 31);
  fill_targets(c, 32, 0.25);
  std::mt19937 gen(33);
  std::normal_distribution<float> nd;
  const auto h = host_logprobs(c, stored);
  std::vector<float> old(static_cast<std::size_t>(c.N)), adv(old.size());
  for (std::size_t i = 0; i < old.size(); ++i) {
    old[i] = h.logp[i] + 0.3f * nd(gen);
    adv[i] = nd(gen);
  }
  std::int64_t counted = 0;
  for (auto m : c.mask) counted += m;
  const auto d = cai_test::device_logprobs_ppo(c, old, adv, 1.0f / static_cast<float>(counted));
  // The reference: cai::policy_loss (token_mean) on the GPU's own log-probs, as (1, N) rows.
  std::vector<float> g(old.size());
  const auto v = [&](const std::vector<float>& y) { return cai::make_view(y.data(), {1, c.N}); };
  const auto r = cai::policy_loss(cai::host{}, cai::ppo_objective<>{},
                                  {.logp = v(d.logp), .old_logp = v(old), .advantages = v(adv),
                                   .mask = cai::make_view(c.mask.data(), {1, c.N})},
                                  {.dlogp = cai::make_view(g.data(), {1, c.N})});
  double loss = 0.0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    REQUIRE(std::fabs(d.dlogp[i] - g[i]) <= 1e-6 * (1.0 + std::fabs(g[i])));
    if (!c.mask[i]) REQUIRE(d.dlogp[i] == 0.0f);
    loss += d.loss[i];
  }
  REQUIRE(std::fabs(loss - r.pg_loss) <= 1e-5 * (1.0 + std::fabs(r.pg_loss)));
}

namespace {

cai_test::gae_case random_gae(std::int64_t B, std::int64_t T, std::uint32_t seed, bool fp32) {
  cai_test::gae_case c;
  c.B = B;
  c.T = T;
  c.fp32 = fp32;
  c.gamma = 0.99;
  c.lambda = 0.95;
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (std::int64_t i = 0; i < B * T; ++i) {
    c.rewards.push_back(fp32 ? static_cast<float>(nd(gen)) : nd(gen));
    c.values.push_back(fp32 ? static_cast<float>(nd(gen)) : nd(gen));
    c.mask.push_back(u(gen) < 0.8 ? 1 : 0);
  }
  for (std::int64_t b = 0; b < B; ++b) c.bootstrap.push_back(fp32 ? static_cast<float>(nd(gen)) : nd(gen));
  return c;
}

/// The host path on the same case (R = float or double).
template <class R>
cai_test::gae_device_result host_gae(const cai_test::gae_case& c) {
  std::vector<R> rw(c.rewards.begin(), c.rewards.end()), vv(c.values.begin(), c.values.end()),
      bs(c.bootstrap.begin(), c.bootstrap.end()), adv(rw.size()), ret(rw.size());
  const auto rewards = cai::make_view(std::as_const(rw).data(), {c.B, c.T});
  const auto values = cai::make_view(std::as_const(vv).data(), {c.B, c.T});
  const auto mask = cai::make_view(c.mask.data(), {c.B, c.T});
  const cai::tensor_view<const R, 1> boot =
      bs.empty() ? cai::tensor_view<const R, 1>{} : cai::make_view(std::as_const(bs).data(), {static_cast<std::int64_t>(bs.size())});
  const cai::tensor_view<const std::int64_t, 1> cu =
      c.cu.empty() ? cai::tensor_view<const std::int64_t, 1>{}
                   : cai::make_view(c.cu.data(), {static_cast<std::int64_t>(c.cu.size())});
  if (c.returns_only)
    cai::discounted_returns(cai::host{}, rewards, mask, cai::make_view(ret.data(), {c.B, c.T}),
                            {.gamma = c.gamma, .bootstrap_values = boot, .cu_seqlens = cu});
  else
    cai::gae(cai::host{}, rewards, values, mask,
             {.advantages = cai::make_view(adv.data(), {c.B, c.T}), .returns = cai::make_view(ret.data(), {c.B, c.T})},
             {.gamma = c.gamma, .lambda = c.lambda, .bootstrap_values = boot, .cu_seqlens = cu});
  return {std::vector<double>(adv.begin(), adv.end()), std::vector<double>(ret.begin(), ret.end())};
}

void require_close(const std::vector<double>& a, const std::vector<double>& b, double rel) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(std::fabs(a[i] - b[i]) <= rel * (1.0 + std::fabs(b[i])));
}

}  // namespace

TEST_CASE("gae and discounted_returns on cai::cuda match the host recursion, padded and packed", "[cuda][gae]") {
  for (const bool fp32 : {false, true}) {
    // fp64 scans associate differently from the host's sequential recursion: agreement to ~1e-12 in fp64,
    // and to one fp32 rounding when stored as float.
    const double rel = fp32 ? 4e-7 : 1e-11;
    for (const std::int64_t T : {std::int64_t{1}, std::int64_t{300}, std::int64_t{5000}}) {
      CAPTURE(fp32, T);
      auto c = random_gae(7, T, static_cast<std::uint32_t>(T), fp32);
      const auto d = cai_test::device_gae(c);
      const auto h = fp32 ? host_gae<float>(c) : host_gae<double>(c);
      require_close(d.advantages, h.advantages, rel);
      require_close(d.returns, h.returns, rel);
      const auto again = cai_test::device_gae(c);
      REQUIRE(std::memcmp(again.advantages.data(), d.advantages.data(), d.advantages.size() * sizeof(double)) == 0);
      c.returns_only = true;
      require_close(cai_test::device_gae(c).returns, (fp32 ? host_gae<float>(c) : host_gae<double>(c)).returns, rel);
    }
    // Packed: sequences of lengths 0, 1, 2049, 300, 4097 back to back in one (1, N) row.
    auto c = random_gae(1, 0 + 1 + 2049 + 300 + 4097, 99, fp32);
    c.cu = {0, 0, 1, 2050, 2350, 6447};
    c.bootstrap.resize(5, 0.5);
    const auto d = cai_test::device_gae(c);
    const auto h = fp32 ? host_gae<float>(c) : host_gae<double>(c);
    require_close(d.advantages, h.advantages, rel);
    require_close(d.returns, h.returns, rel);
  }
}

TEST_CASE("gae on cai::cuda reports non-finite inputs and invalid cu_seqlens at synchronize", "[cuda][gae]") {
  auto c = random_gae(2, 10, 3, false);
  c.mask[4] = 1;
  c.rewards[4] = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(cai_test::device_gae(c), Catch::Contains("'rewards'"));
  c.mask[4] = 0;  // a masked step may hold anything
  REQUIRE_NOTHROW(cai_test::device_gae(c));
  auto p = random_gae(1, 10, 4, false);
  p.cu = {0, 6, 4, 10};
  p.bootstrap.clear();
  REQUIRE_THROWS_WITH(cai_test::device_gae(p), Catch::Contains("'cu_seqlens'"));
}

TEST_CASE("cai::batched on the GPU matches the host path", "[cuda][thrust]") {
  cai_test::batched_case c;
  c.B = 33;
  c.T = 40;
  c.G = 3;
  std::mt19937 gen(21);
  std::normal_distribution<double> nd;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (std::int64_t i = 0; i < c.B * c.T; ++i) {
    c.x.push_back(1.0 + nd(gen));
    c.mask.push_back(u(gen) < 0.7 ? 1 : 0);
    c.logp.push_back(-2.0 + 0.3 * nd(gen));
    c.old_logp.push_back(c.logp.back() + 0.2 * nd(gen));
    c.adv.push_back(nd(gen));
  }
  for (std::int64_t i = 0; i < c.B; ++i) {
    c.scores.push_back(nd(gen));
    c.pc.push_back(-30.0 + 5.0 * nd(gen));
    c.pr.push_back(-30.0 + 5.0 * nd(gen));
    c.rc.push_back(-30.0 + 5.0 * nd(gen));
    c.rr.push_back(-30.0 + 5.0 * nd(gen));
  }
  c.scores[4] = std::numeric_limits<double>::quiet_NaN();
  const auto d = cai_test::device_batched(c);
  // The GPU contracts multiply-adds (FMA) where the host rounds twice: agreement to ~1e-12 relative, not bits.
  const auto close = [](double a, double b) { return std::fabs(a - b) <= 1e-12 * (1.0 + std::fabs(b)); };
  const auto X = cai::make_view(c.x.data(), {c.B, c.T});
  const auto M = cai::make_view(c.mask.data(), {c.B, c.T});
  const cai::moments all = cai::masked_moments(cai::host{}, X, M);
  REQUIRE(d.count == all.count);
  REQUIRE(close(d.mean, all.mean));
  REQUIRE(close(d.m2, all.m2));
  std::vector<cai::moments> rows(static_cast<std::size_t>(c.B));
  cai::row_moments(cai::host{}, X, M, cai::make_view(rows.data(), {c.B}));
  for (std::size_t b = 0; b < rows.size(); ++b) {
    REQUIRE(d.row_count[b] == rows[b].count);
    REQUIRE(close(d.row_mean[b], rows[b].mean));
    REQUIRE(close(d.row_m2[b], rows[b].m2));
  }
  std::vector<double> seq(static_cast<std::size_t>(c.B)), tok(static_cast<std::size_t>(c.B * c.T));
  cai::advantages(cai::host{}, cai::adv::grpo{}, {.scores = cai::make_view(c.scores.data(), {c.B}), .group_size = c.G},
                  {.advantages = cai::make_view(tok.data(), {c.B, c.T}), .sequence_advantages = cai::make_view(seq.data(), {c.B})});
  for (std::size_t b = 0; b < seq.size(); ++b) REQUIRE(close(d.grpo[b], seq[b]));
  std::vector<double> dc(static_cast<std::size_t>(c.B));
  const auto v1 = [&](const std::vector<double>& y) { return cai::make_view(y.data(), {c.B}); };
  const auto pr = cai::dpo_loss(cai::host{}, cai::dpo::sigmoid{.beta = 0.1},
                                cai::dpo_batch<double>{v1(c.pc), v1(c.pr), v1(c.rc), v1(c.rr), {}, {}, {}},
                                {.chosen = cai::make_view(dc.data(), {c.B})});
  REQUIRE(close(d.pair_total[0], pr.loss));
  REQUIRE(close(d.pair_total[5], pr.metrics.accuracy));
  for (std::size_t i = 0; i < dc.size(); ++i) REQUIRE(close(d.pair_dchosen[i], dc[i]));
  std::vector<double> bc(static_cast<std::size_t>(c.B));
  const auto bt = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<double>{v1(c.pc), v1(c.pr), {}, {}},
                                          {.chosen = cai::make_view(bc.data(), {c.B})}, {.center_coef = 0.01});
  REQUIRE(close(d.bt_total[0], bt.loss));
  for (std::size_t i = 0; i < bc.size(); ++i) REQUIRE(close(d.bt_dchosen[i], bc[i]));
  std::vector<double> g(c.logp.size());
  const auto v2 = [&](const std::vector<double>& y) { return cai::make_view(y.data(), {c.B, c.T}); };
  const auto pl = cai::policy_loss(cai::host{}, cai::ppo_objective<>{},
                                   {.logp = v2(c.logp), .old_logp = v2(c.old_logp), .advantages = v2(c.adv), .mask = M},
                                   {.dlogp = cai::make_view(g.data(), {c.B, c.T})});
  REQUIRE(close(d.surrogate_total[0], pl.pg_loss));
  REQUIRE(d.surrogate_total[2] == pl.metrics.clip_fraction);
  for (std::size_t i = 0; i < g.size(); ++i) REQUIRE(close(d.surrogate_dlogp[i], g[i]));
}
