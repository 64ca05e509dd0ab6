// Tests for cai/algorithms/wpo.hpp: log sum_v p_v^2 against an explicit softmax in long double (rows and causal
// layouts, fp32 and bf16 logits, large logits), the pair weights against a reference that forms w(y) as a product
// of per-token probability ratios, and bad input.
#include <cai/algorithms/wpo.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../support.hpp"

namespace {
using ld = long double;

/// log sum_v p_v^2 with p = softmax(z), written as log of a sum of squared probabilities.
ld reference_lss(const float* z, std::int64_t V) {
  ld m = -std::numeric_limits<ld>::infinity();
  for (std::int64_t j = 0; j < V; ++j) m = std::max(m, static_cast<ld>(z[j]));
  ld s = 0;
  for (std::int64_t j = 0; j < V; ++j) s += std::exp(static_cast<ld>(z[j]) - m);
  ld q = 0;
  for (std::int64_t j = 0; j < V; ++j) {
    const ld p = std::exp(static_cast<ld>(z[j]) - m) / s;
    q += p * p;
  }
  return std::log(q);
}
}  // namespace

TEST_CASE("log_sum_sq_probs equals log of the summed squared softmax probabilities", "[preference][dpo][wpo]") {
  for (const std::int64_t V : {1, 7, 64, 1000, 32001}) {
    for (const float scale : {1.0f, 8.0f, 1e3f}) {
      const std::int64_t N = 5;
      auto z = cai_test::normal_floats(static_cast<std::size_t>(N * V), scale, static_cast<std::uint64_t>(V) + 3);
      std::vector<float> out(static_cast<std::size_t>(N), 7.0f);
      std::vector<std::uint8_t> m{1, 0, 1, 1, 1};
      cai::log_sum_sq_probs(cai::host{}, cai::make_view<const float>(z.data(), {N, V}), cai::make_view<const std::uint8_t>(m.data(), {N}),
                            cai::make_view(out.data(), {N}));
      for (std::int64_t i = 0; i < N; ++i) {
        INFO("V " << V << " scale " << scale << " row " << i);
        if (!m[static_cast<std::size_t>(i)]) {
          CHECK(out[static_cast<std::size_t>(i)] == 0.0f);
          continue;
        }
        const ld ref = reference_lss(z.data() + i * V, V);
        // fp32 log-sum-exps: ~1e-6 relative of |lse| each, and lse(2z) ~ 2 max|z|.
        CHECK(std::fabs(static_cast<ld>(out[static_cast<std::size_t>(i)]) - ref) <= 4e-6L * (1 + 2 * 4 * scale) + 1e-5L * std::fabs(ref));
        CHECK(out[static_cast<std::size_t>(i)] <= 1e-6f);  // sum p^2 <= 1
      }
    }
  }
}

TEST_CASE("log_sum_sq_probs on the causal layout reads logits of position t - 1 and handles bf16", "[preference][dpo][wpo]") {
  const std::int64_t B = 2, T = 4, V = 50;
  const auto z = cai_test::normal_floats(static_cast<std::size_t>(B * T * V), 3.0f, 77);
  std::vector<cai::bfloat16> zb(z.size());
  std::vector<float> zr(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) {
    zb[i] = cai::bfloat16::from_float(z[i]);
    zr[i] = cai::to_float(zb[i]);
  }
  std::vector<float> out(static_cast<std::size_t>(B * T), 9.0f), outb(out.size(), 9.0f);
  cai::log_sum_sq_probs(cai::host{}, cai::make_view<const float>(zr.data(), {B, T, V}), cai::no_mask, cai::make_view(out.data(), {B, T}));
  cai::log_sum_sq_probs(cai::threaded_host{}, cai::make_view<const cai::bfloat16>(zb.data(), {B, T, V}), cai::no_mask, cai::make_view(outb.data(), {B, T}));
  for (std::int64_t b = 0; b < B; ++b) {
    CHECK(out[static_cast<std::size_t>(b * T)] == 0.0f);
    for (std::int64_t t = 1; t < T; ++t) {
      const ld ref = reference_lss(zr.data() + (b * T + t - 1) * V, V);
      CHECK(std::fabs(static_cast<ld>(out[static_cast<std::size_t>(b * T + t)]) - ref) <= 1e-4L);
      CHECK(outb[static_cast<std::size_t>(b * T + t)] == out[static_cast<std::size_t>(b * T + t)]);  // same values read
    }
  }
}

TEST_CASE("wpo_weights multiplies the per-token-normalised sequence likelihoods of both completions", "[preference][dpo][wpo]") {
  const std::int64_t B = 6, Tc = 5, Tr = 7;
  const auto lc = cai_test::uniform_floats(static_cast<std::size_t>(B * Tc), -4.0f, -0.01f, 1);
  const auto sc = cai_test::uniform_floats(static_cast<std::size_t>(B * Tc), -3.0f, -0.01f, 2);
  const auto lr = cai_test::uniform_floats(static_cast<std::size_t>(B * Tr), -4.0f, -0.01f, 3);
  const auto sr = cai_test::uniform_floats(static_cast<std::size_t>(B * Tr), -3.0f, -0.01f, 4);
  std::vector<std::uint8_t> mc(lc.size(), 1), mr(lr.size(), 1);
  for (std::int64_t b = 0; b < B; ++b) {
    mc[static_cast<std::size_t>(b * Tc)] = 0;            // a prompt position
    mr[static_cast<std::size_t>(b * Tr + Tr - 1)] = b % 2 == 0 ? 0 : 1;  // some right padding
  }
  std::fill(mr.begin() + 5 * Tr, mr.end(), std::uint8_t{0});  // row 5: an empty rejected completion (w = 1)
  std::vector<double> w(static_cast<std::size_t>(B));
  const cai::wpo_side<float> cs{cai::make_view(lc.data(), {B, Tc}), cai::make_view(sc.data(), {B, Tc}), cai::make_view(mc.data(), {B, Tc})};
  const cai::wpo_side<float> rs{cai::make_view(lr.data(), {B, Tr}), cai::make_view(sr.data(), {B, Tr}), cai::make_view(mr.data(), {B, Tr})};
  std::vector<float> wf(static_cast<std::size_t>(B));
  cai::wpo_weights(cai::host{}, cs, rs, cai::make_view(wf.data(), {B}));
  for (std::int64_t b = 0; b < B; ++b) {
    // Geometric mean of the per-token ratios p_t / sum_v p_v^2, as a product of powers.
    const auto side = [&](const std::vector<float>& l, const std::vector<float>& s, const std::vector<std::uint8_t>& m, std::int64_t T) {
      ld prod = 1;
      int n = 0;
      for (std::int64_t t = 0; t < T; ++t)
        if (m[static_cast<std::size_t>(b * T + t)]) ++n;
      for (std::int64_t t = 0; t < T; ++t)
        if (m[static_cast<std::size_t>(b * T + t)])
          prod *= std::pow(std::exp(static_cast<ld>(l[static_cast<std::size_t>(b * T + t)])) / std::exp(static_cast<ld>(s[static_cast<std::size_t>(b * T + t)])), 1.0L / n);
      return n ? prod : 1.0L;
    };
    const ld ref = side(lc, sc, mc, Tc) * side(lr, sr, mr, Tr);
    CHECK(std::fabs(static_cast<ld>(wf[static_cast<std::size_t>(b)]) - ref) <= 2e-6L * ref);
  }
}

TEST_CASE("wpo rejects non-finite logits and mismatched views naming the argument", "[preference][dpo][wpo]") {
  std::vector<float> z(12, 0.0f), out(3);
  z[5] = std::numeric_limits<float>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING((cai::log_sum_sq_probs(cai::host{}, cai::make_view<const float>(z.data(), {3, 4}), cai::no_mask, cai::make_view(out.data(), {3}))),
                            cai::invalid_argument, "cai::log_sum_sq_probs", "'logits'", "row 1");
  std::vector<std::uint8_t> m{1, 0, 1};
  CHECK_NOTHROW(cai::log_sum_sq_probs(cai::host{}, cai::make_view<const float>(z.data(), {3, 4}), cai::make_view<const std::uint8_t>(m.data(), {3}), cai::make_view(out.data(), {3})));
  CAI_REQUIRE_THROWS_NAMING((cai::log_sum_sq_probs(cai::host{}, cai::make_view<const float>(z.data(), {3, 4}), cai::no_mask, cai::make_view(out.data(), {2}))),
                            cai::shape_error, "'out'");
  std::vector<float> a(6, -1.0f), s(6, -0.5f), w(2);
  const cai::wpo_side<float> good{cai::make_view<const float>(a.data(), {2, 3}), cai::make_view<const float>(s.data(), {2, 3})};
  const cai::wpo_side<float> short_ls{cai::make_view<const float>(a.data(), {2, 3}), cai::make_view<const float>(s.data(), {3, 2})};
  CAI_REQUIRE_THROWS_NAMING((cai::wpo_weights(cai::host{}, good, short_ls, cai::make_view(w.data(), {2}))), cai::shape_error, "'rejected.log_sum_sq'");
  CAI_REQUIRE_THROWS_NAMING((cai::wpo_weights(cai::host{}, good, good, cai::make_view(w.data(), {1}))), cai::shape_error, "'out'");
  a[4] = std::numeric_limits<float>::infinity();
  CAI_REQUIRE_THROWS_NAMING((cai::wpo_weights(cai::host{}, good, good, cai::make_view(w.data(), {2}))), cai::invalid_argument, "'chosen.logp'", "row 1, token 1");
}
