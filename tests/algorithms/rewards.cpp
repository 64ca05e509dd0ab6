// Tests for cai/algorithms/rewards.hpp: per-token rewards (KL shaping by placement plus the sequence score at the
// last counted token) against a long-double reference, the placements that shape and those that do not, score
// clamping and the missing-EOS penalty, the summary, the packed layout, bitwise equality across backends, bad input.
#include <cai/algorithms/rewards.hpp>
#include <cai/core/host.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <vector>

#include "../support.hpp"
#include "kl_reference.hpp"
#include "sequence_batch.hpp"

namespace {

using cai_test::make_seq_batch;
using cai_test::seq_batch;
using namespace cai_test::klref;
namespace kl = cai::kl;

struct ref_summary {
  std::vector<ld> rewards;  // (B, T)
  std::int64_t counted = 0, rows_without_tokens = 0, rows_missing_eos = 0, placed = 0;
  ld kl_sum = 0, kl_sq = 0, score_sum = 0;
};

// r_bt = -beta E(d_bt) at counted tokens (when `shaping` holds an estimator), plus the clamped, penalised score at the
// row's last counted token; written as a sweep that first collects each row's counted positions.
template <class R>
ref_summary reference_rewards(const seq_batch& s, const std::vector<R>& scores, const std::vector<R>& logp,
                              const std::vector<R>& ref, const std::optional<ref_plain>& shaping, double beta,
                              const cai::token_reward_options& opt, const std::vector<std::uint8_t>& eos) {
  ref_summary out;
  out.rewards.assign(static_cast<std::size_t>(s.B * s.T), 0);
  for (std::int64_t b = 0; b < s.B; ++b) {
    std::vector<std::int64_t> pos;
    for (std::int64_t t = 0; t < s.T; ++t)
      if (s.counted(b, t)) pos.push_back(t);
    for (std::int64_t t : pos) {
      const auto i = static_cast<std::size_t>(b * s.T + t);
      if (!shaping) continue;
      const ld v = ref_value(*shaping, static_cast<ld>(static_cast<R>(logp[i] - ref[i])));
      out.rewards[i] = -static_cast<ld>(beta) * v;
      out.kl_sum += v;
      out.kl_sq += v * v;
      ++out.counted;
    }
    if (pos.empty()) {
      ++out.rows_without_tokens;
      continue;
    }
    ld score = static_cast<ld>(scores[static_cast<std::size_t>(b)]);
    if (opt.missing_eos_penalty > 0 && !eos[static_cast<std::size_t>(b)]) {
      score -= static_cast<ld>(opt.missing_eos_penalty);
      ++out.rows_missing_eos;
    }
    score = std::min<ld>(std::max<ld>(score, opt.score_min), opt.score_max);
    out.rewards[static_cast<std::size_t>(b * s.T + pos.back())] += score;
    out.score_sum += score;
    ++out.placed;
  }
  return out;
}

template <class R>
struct reward_case {
  seq_batch s;
  std::vector<R> scores, logp, ref;
  std::vector<std::uint8_t> eos;
};

template <class R>
reward_case<R> make_reward_case(std::int64_t B, std::int64_t T, std::uint64_t seed) {
  reward_case<R> c{make_seq_batch(B, T, seed), {}, {}, {}, {}};
  std::mt19937_64 gen(seed);
  const auto n = static_cast<std::size_t>(B * T);
  c.scores.resize(static_cast<std::size_t>(B));
  for (auto& x : c.scores) x = static_cast<R>(std::uniform_real_distribution<double>(-4, 4)(gen));
  c.logp.resize(n);
  c.ref.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    c.ref[i] = static_cast<R>(std::uniform_real_distribution<double>(-9, -0.1)(gen));
    const double u = std::uniform_real_distribution<double>(0, 1)(gen);
    const double d = u < 0.1 ? (u < 0.05 ? 50.0 : -50.0) : std::uniform_real_distribution<double>(-2, 2)(gen);  // extremes too
    c.logp[i] = static_cast<R>(c.ref[i] + d);
    if (!c.s.mask[i] && i % 3 == 0) c.ref[i] = std::numeric_limits<R>::quiet_NaN();  // never read when masked
  }
  c.eos.resize(static_cast<std::size_t>(B));
  for (auto& e : c.eos) e = static_cast<std::uint8_t>(std::uniform_int_distribution<int>(0, 1)(gen));
  return c;
}

template <class R>
cai::tensor_view<const R, 2> v2(const std::vector<R>& v, std::int64_t B, std::int64_t T) {
  return cai::make_view(v.data(), {B, T});
}

template <class R>
void check_against_reference(const reward_case<R>& c, const std::vector<R>& got, const cai::token_reward_summary& sum,
                             const ref_summary& want, double beta) {
  constexpr bool is_float = std::is_same_v<R, float>;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const ld w = want.rewards[i];
    INFO("token " << i << " got " << got[i] << " want " << static_cast<double>(w));
    if (!c.s.mask[i]) CHECK(got[i] == R(0));
    // -beta E rounded to R, then the score added and rounded again.
    CHECK(std::fabs(static_cast<ld>(got[i]) - w) <= (is_float ? 3e-6L : 1e-14L) * (1 + std::fabs(w) + 10 * beta));
  }
  CHECK(sum.rows_without_tokens == want.rows_without_tokens);
  CHECK(sum.rows_missing_eos == want.rows_missing_eos);
  CHECK(sum.kl_per_token.count == want.counted);
  const ld rows = static_cast<ld>(c.s.B);
  const ld tol = is_float ? 1e-6L : 1e-12L;
  if (want.counted > 0) {
    const ld mean = want.kl_sum / want.counted;
    CHECK(std::fabs(static_cast<ld>(sum.kl_per_token.mean) - mean) <= tol * (1 + std::fabs(mean)));
    const ld m2 = want.kl_sq - want.kl_sum * want.kl_sum / want.counted;
    CHECK(std::fabs(static_cast<ld>(sum.kl_per_token.m2) - m2) <= tol * (1 + m2) * 10);
  }
  CHECK(std::fabs(static_cast<ld>(sum.mean_kl_per_sequence) - want.kl_sum / rows) <= tol * (1 + std::fabs(want.kl_sum / rows)));
  CHECK(std::fabs(static_cast<ld>(sum.mean_non_score_reward) + static_cast<ld>(beta) * want.kl_sum / rows) <=
        tol * (1 + std::fabs(beta * want.kl_sum / rows)));
  const ld mean_score = want.placed ? want.score_sum / want.placed : 0;
  CHECK(std::fabs(static_cast<ld>(sum.mean_score) - mean_score) <= 1e-12L * (1 + std::fabs(mean_score)));
}

template <class R, class P>
void check_placement(const P& placement, const std::optional<ref_plain>& shaping, double beta, const cai::token_reward_options& opt_in,
                     std::uint64_t seed) {
  const auto c = make_reward_case<R>(31, 12, seed);  // 31 rows: two chunks of 16 rows
  cai::token_reward_options opt = opt_in;
  if (opt.missing_eos_penalty > 0) opt.ends_with_eos = cai::make_view(c.eos.data(), {c.s.B});
  std::vector<R> out(c.logp.size(), R(5));
  const auto sum = cai::token_rewards(cai::host{}, placement, cai::make_view(c.scores.data(), {c.s.B}), v2(c.logp, c.s.B, c.s.T),
                                      v2(c.ref, c.s.B, c.s.T), cai::make_view(c.s.mask.data(), {c.s.B, c.s.T}),
                                      cai::make_view(out.data(), {c.s.B, c.s.T}), opt);
  check_against_reference(c, out, sum, reference_rewards(c.s, c.scores, c.logp, c.ref, shaping, beta, opt, c.eos), beta);
}

}  // namespace

TEST_CASE("kl::in_reward shapes every counted token and places the score at the last counted token", "[kl][rewards]") {
  const ref_plain k3_ref{kind::k3, 20, 10}, k1_ref{kind::k1};
  SECTION("k3 (clamped at log ratios of +-50), double") { check_placement<double>(kl::in_reward<kl::k3>{.beta = 0.1}, k3_ref, 0.1, {}, 1); }
  SECTION("k3, float") { check_placement<float>(kl::in_reward<kl::k3>{.beta = 0.1}, k3_ref, 0.1, {}, 2); }
  SECTION("k1, double, default beta 0.05") { check_placement<double>(kl::in_reward<kl::k1>{}, k1_ref, 0.05, {}, 3); }
  SECTION("k1, float, beta 0.3") { check_placement<float>(kl::in_reward<kl::k1>{.beta = 0.3}, k1_ref, 0.3, {}, 4); }
  SECTION("in_reward_and_loss shapes with its reward part") {
    check_placement<double>(kl::in_reward_and_loss<kl::k3, kl::k1>{.reward = {.beta = 0.2}, .loss = {.coef = 0.5}}, k3_ref, 0.2, {}, 5);
  }
  SECTION("any_placement with reward = true shapes with its reward estimator") {
    const kl::any est{.value_kind = kl::any::kind::k1, .grad_kind = kl::any::kind::k1, .kl_clamp = 1.5};
    check_placement<float>(kl::any_placement{.reward = true, .reward_estimator = est, .beta = 0.07}, ref_plain{kind::k1, inf, 1.5}, 0.07, {}, 6);
  }
}

TEST_CASE("kl::in_loss, kl::none and any_placement without reward give the score alone", "[kl][rewards]") {
  SECTION("in_loss, double") { check_placement<double>(kl::in_loss<kl::k3>{.coef = 0.1}, std::nullopt, 0.0, {}, 11); }
  SECTION("none, float") { check_placement<float>(kl::none{}, std::nullopt, 0.0, {}, 12); }
  SECTION("any_placement{loss = true}") { check_placement<double>(kl::any_placement{.loss = true, .beta = 0.5, .coef = 0.5}, std::nullopt, 0.0, {}, 13); }
  SECTION("without reward KL the log-probs are neither needed nor read") {
    const auto c = make_reward_case<double>(20, 7, 14);
    std::vector<double> a(c.logp.size()), b(c.logp.size(), 3.0);
    std::vector<double> nan_logp(c.logp.size(), std::numeric_limits<double>::quiet_NaN());
    const auto scores = cai::make_view(c.scores.data(), {c.s.B});
    const auto mask = cai::make_view(c.s.mask.data(), {c.s.B, c.s.T});
    const auto sa = cai::token_rewards(cai::host{}, kl::none{}, scores, {}, {}, mask, cai::make_view(a.data(), {c.s.B, c.s.T}));
    const auto sb = cai::token_rewards(cai::host{}, kl::in_loss<kl::k1>{}, scores, v2(nan_logp, c.s.B, c.s.T), v2(nan_logp, c.s.B, c.s.T),
                                       mask, cai::make_view(b.data(), {c.s.B, c.s.T}));
    CHECK(a == b);
    CHECK(sa.kl_per_token.count == 0);
    CHECK(sa.mean_kl_per_sequence == 0.0);
    CHECK(sa.mean_non_score_reward == 0.0);
    CHECK(sb.kl_per_token.count == 0);
    CHECK(sa.mean_score == sb.mean_score);
  }
}

TEST_CASE("placements that name the same reward KL give the same bits", "[kl][rewards]") {
  const auto c = make_reward_case<float>(40, 9, 21);
  auto run = [&](const auto& placement) {
    std::vector<float> out(c.logp.size());
    const auto sum = cai::token_rewards(cai::host{}, placement, cai::make_view(c.scores.data(), {c.s.B}), v2(c.logp, c.s.B, c.s.T),
                                        v2(c.ref, c.s.B, c.s.T), cai::make_view(c.s.mask.data(), {c.s.B, c.s.T}),
                                        cai::make_view(out.data(), {c.s.B, c.s.T}));
    CHECK(sum.kl_per_token.count >= 0);
    return out;
  };
  const auto base = run(kl::in_reward<kl::k3>{.beta = 0.1});
  CHECK(run(kl::in_reward_and_loss<kl::k3, kl::k2>{.reward = {.beta = 0.1}}) == base);
  const kl::any k3any{.value_kind = kl::any::kind::k3, .grad_kind = kl::any::kind::k3, .log_ratio_clamp = 20, .kl_clamp = 10};
  CHECK(run(kl::any_placement{.reward = true, .loss = true, .reward_estimator = k3any, .beta = 0.1}) == base);
  CHECK(run(kl::in_reward<kl::k3>{.beta = 0.0}) == run(kl::none{}));  // beta 0: the score alone (the estimates are -0 * E)
  CHECK(run(kl::any_placement{.loss = true, .loss_estimator = k3any, .beta = 0.1, .coef = 0.1}) == run(kl::none{}));
}

TEST_CASE("the score lands on the last counted token of a multi-span row, right-padded or packed", "[kl][rewards]") {
  // Two sequences: [p p a a o a a .] with the last counted token at 6, and [a o a] ending on a counted token.
  const std::vector<std::uint8_t> mask{0, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0};
  const std::vector<double> scores{2.5, -1.0};
  std::vector<double> logp(16), ref(16);
  for (std::size_t i = 0; i < 16; ++i) {
    ref[i] = -1.0 - 0.1 * static_cast<double>(i);
    logp[i] = ref[i] + 0.05 * static_cast<double>(i % 5);
  }
  std::vector<double> out(16);
  cai::token_rewards(cai::host{}, kl::in_reward<kl::k1>{.beta = 0.5}, cai::make_view(scores.data(), {2}), cai::make_view(logp.data(), {2, 8}),
                     cai::make_view(ref.data(), {2, 8}), cai::make_view(mask.data(), {2, 8}), cai::make_view(out.data(), {2, 8}));
  for (std::size_t i = 0; i < 16; ++i) {
    const double shaping = mask[i] ? -0.5 * (logp[i] - ref[i]) : 0.0;
    const double score = i == 6 ? 2.5 : (i == 10 ? -1.0 : 0.0);
    INFO("token " << i);
    CHECK(out[i] == Approx(shaping + score).margin(1e-15));
  }
  // The same sequences packed: lengths 8 and 3 (the second row's padding dropped).
  const std::vector<std::int64_t> cu{0, 8, 11};
  std::vector<double> pout(11);
  cai::token_rewards(cai::host{}, kl::in_reward<kl::k1>{.beta = 0.5}, cai::make_view(scores.data(), {2}),
                     cai::packed(cai::make_view(logp.data(), {11})), cai::packed(cai::make_view(ref.data(), {11})),
                     cai::packed(cai::make_view(mask.data(), {11})), cai::packed(cai::make_view(pout.data(), {11})),
                     {.cu_seqlens = cai::make_view(cu.data(), {3})});
  CHECK(std::vector<double>(out.begin(), out.begin() + 11) == pout);
  // Without a mask every token counts: the score goes to each sequence's last token.
  std::vector<double> nout(11);
  cai::token_rewards(cai::host{}, kl::none{}, cai::make_view(scores.data(), {2}), {}, {}, cai::no_mask,
                     cai::packed(cai::make_view(nout.data(), {11})), {.cu_seqlens = cai::make_view(cu.data(), {3})});
  CHECK(nout == std::vector<double>{0, 0, 0, 0, 0, 0, 0, 2.5, 0, 0, -1.0});
}

TEST_CASE("scores are penalised for a missing EOS and then clamped to score_min and score_max", "[kl][rewards]") {
  SECTION("random batch against the reference") {
    const cai::token_reward_options opt{.score_min = -1.0, .score_max = 2.0, .missing_eos_penalty = 1.5};
    check_placement<double>(kl::in_reward<kl::k3>{.beta = 0.1}, ref_plain{kind::k3, 20, 10}, 0.1, opt, 31);
    check_placement<float>(kl::none{}, std::nullopt, 0.0, opt, 32);
    check_placement<double>(kl::none{}, std::nullopt, 0.0, {.score_min = 0.5}, 33);
    check_placement<double>(kl::none{}, std::nullopt, 0.0, {.score_max = -0.5}, 34);
  }
  SECTION("by hand") {
    const std::vector<double> scores{0.5, 0.5, 9.0, -9.0, 1.0};
    const std::vector<std::uint8_t> eos{1, 0, 0, 1, 0};
    std::vector<std::uint8_t> mask(10, 1);
    mask[8] = mask[9] = 0;  // row 4 has no counted token: no score, no penalty counted
    std::vector<double> out(10);
    const auto sum = cai::token_rewards(cai::host{}, kl::none{}, cai::make_view(scores.data(), {5}), {}, {}, cai::make_view(mask.data(), {5, 2}),
                                        cai::make_view(out.data(), {5, 2}),
                                        {.score_min = -1.0, .score_max = 2.0, .missing_eos_penalty = 3.0, .ends_with_eos = cai::make_view(eos.data(), {5})});
    CHECK(out == std::vector<double>{0, 0.5, 0, -1.0 /* 0.5 - 3 clamped */, 0, 2.0 /* 9 - 3 clamped */, 0, -1.0, 0, 0});
    CHECK(sum.rows_missing_eos == 2);
    CHECK(sum.rows_without_tokens == 1);
    CHECK(sum.mean_score == Approx((0.5 - 1.0 + 2.0 - 1.0) / 4).epsilon(1e-15));
  }
}

TEST_CASE("token_rewards on the packed layout equals the padded layout, and host equals threaded_host(3) bitwise",
          "[kl][rewards]") {
  const auto c = make_reward_case<float>(70, 15, 41);
  const cai::token_reward_options opt{.score_min = -3, .score_max = 3, .missing_eos_penalty = 0.5,
                                      .ends_with_eos = cai::make_view(c.eos.data(), {c.s.B})};
  const auto placement = kl::in_reward<kl::straight_through<kl::k3, kl::k2>>{.beta = 0.2};
  auto run = [&](const auto& backend, std::vector<float>& out) {
    out.assign(c.logp.size(), 0.0f);
    return cai::token_rewards(backend, placement, cai::make_view(c.scores.data(), {c.s.B}), v2(c.logp, c.s.B, c.s.T), v2(c.ref, c.s.B, c.s.T),
                              cai::make_view(c.s.mask.data(), {c.s.B, c.s.T}), cai::make_view(out.data(), {c.s.B, c.s.T}), opt);
  };
  std::vector<float> a, b;
  const auto sa = run(cai::host{}, a);
  const auto sb = run(cai::threaded_host(3), b);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(&sa.kl_per_token.mean, &sb.kl_per_token.mean, 8) == 0);
  CHECK(std::memcmp(&sa.kl_per_token.m2, &sb.kl_per_token.m2, 8) == 0);
  CHECK(std::memcmp(&sa.mean_kl_per_sequence, &sb.mean_kl_per_sequence, 8) == 0);
  CHECK(std::memcmp(&sa.mean_non_score_reward, &sb.mean_non_score_reward, 8) == 0);
  CHECK(std::memcmp(&sa.mean_score, &sb.mean_score, 8) == 0);
  CHECK((sa.rows_without_tokens == sb.rows_without_tokens && sa.rows_missing_eos == sb.rows_missing_eos));

  const auto plp = c.s.pack(c.logp), prf = c.s.pack(c.ref);
  const std::int64_t N = c.s.N();
  std::vector<float> p(static_cast<std::size_t>(N));
  cai::token_reward_options popt = opt;
  popt.cu_seqlens = c.s.cu_view();
  const auto sp = cai::token_rewards(cai::threaded_host(3), placement, cai::make_view(c.scores.data(), {c.s.B}),
                                     cai::packed(cai::make_view(plp.data(), {N})), cai::packed(cai::make_view(prf.data(), {N})),
                                     cai::packed(cai::make_view(c.s.pmask.data(), {N})), cai::packed(cai::make_view(p.data(), {N})), popt);
  CHECK(p == c.s.pack(a));
  CHECK((sp.kl_per_token.count == sa.kl_per_token.count && sp.kl_per_token.mean == sa.kl_per_token.mean));
  CHECK((sp.mean_kl_per_sequence == sa.mean_kl_per_sequence && sp.mean_score == sa.mean_score));
  CHECK((sp.rows_without_tokens == sa.rows_without_tokens && sp.rows_missing_eos == sa.rows_missing_eos));
}

TEST_CASE("token_rewards rejects bad input with exceptions naming the argument", "[kl][rewards]") {
  cai::host h;
  const std::int64_t B = 2, T = 3;
  std::vector<double> scores{1.0, 2.0}, lp{-1, -2, -3, -1, -2, -3}, rf{-1.5, -2, -2, -1, -1, -1}, out(6);
  std::vector<std::uint8_t> m{0, 1, 1, 1, 1, 0}, eos{1, 0};
  const auto sv = cai::make_view(scores.data(), {B});
  const auto lpv = cai::make_view(lp.data(), {B, T});
  const auto rfv = cai::make_view(rf.data(), {B, T});
  const auto mv = cai::make_view(m.data(), {B, T});
  const auto ov = cai::make_view(out.data(), {B, T});
  const kl::in_reward<kl::k3> shaped{.beta = 0.1};
  REQUIRE(cai::token_rewards(h, shaped, sv, lpv, rfv, mv, ov).kl_per_token.count == 4);

  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, shaped, cai::make_view(scores.data(), {1}), lpv, rfv, mv, ov), cai::shape_error,
                            "cai::token_rewards", "'scores'", "one value per sequence (2)", "got 1");
  scores[1] = std::numeric_limits<double>::infinity();
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, shaped, sv, lpv, rfv, mv, ov), cai::invalid_argument, "'scores'", "finite", "inf at 1");
  scores[1] = 2.0;
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, shaped, sv, lpv, rfv, cai::make_view(m.data(), {T, B}), ov), cai::shape_error, "'mask'");
  m[4] = 7;
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, mv, ov), cai::invalid_argument, "'mask'", "0 or 1");
  m[4] = 1;
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, shaped, sv, cai::make_view(lp.data(), {B, T - 1}), rfv, mv, ov), cai::shape_error, "'logp'");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, shaped, sv, lpv, cai::tensor_view<const double, 2>{}, mv, ov), cai::shape_error, "'ref_logp'");
  lp[1] = std::numeric_limits<double>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, shaped, sv, lpv, rfv, mv, ov), cai::invalid_argument, "'logp'", "finite", "row 0, token 1");
  lp[1] = -2;
  lp[0] = std::numeric_limits<double>::quiet_NaN();  // masked: fine
  rf[5] = -std::numeric_limits<double>::infinity();  // masked: fine
  REQUIRE_NOTHROW(cai::token_rewards(h, shaped, sv, lpv, rfv, mv, ov));
  rf[3] = std::numeric_limits<double>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, shaped, sv, lpv, rfv, mv, ov), cai::invalid_argument, "'ref_logp'", "row 1, token 0");
  rf[3] = -1;

  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::in_reward<kl::k1>{.beta = -0.1}, sv, lpv, rfv, mv, ov), cai::invalid_argument, "'beta'", ">= 0");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::in_reward<kl::k1>{.beta = std::numeric_limits<double>::quiet_NaN()}, sv, lpv, rfv, mv, ov),
                            cai::invalid_argument, "'beta'");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::in_reward<kl::k3>{.estimator = {.kl_clamp = -10}}, sv, lpv, rfv, mv, ov),
                            cai::invalid_argument, "'estimator.kl_clamp'");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::any_placement{.reward = true, .reward_estimator = {.log_ratio_clamp = -1}, .beta = 0.1},
                                               sv, lpv, rfv, mv, ov),
                            cai::invalid_argument, "'estimator.log_ratio_clamp'");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, mv, ov, {.score_min = 3, .score_max = 2}), cai::invalid_argument,
                            "'score_min'", "score_min <= score_max");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, mv, ov, {.score_min = std::numeric_limits<double>::quiet_NaN()}),
                            cai::invalid_argument, "'score_min'");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, mv, ov, {.missing_eos_penalty = -1}), cai::invalid_argument,
                            "'missing_eos_penalty'", ">= 0");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, mv, ov, {.missing_eos_penalty = 1}), cai::invalid_argument,
                            "'ends_with_eos'", "when missing_eos_penalty > 0");
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, mv, ov,
                                               {.missing_eos_penalty = 1, .ends_with_eos = cai::make_view(eos.data(), {1})}),
                            cai::shape_error, "'ends_with_eos'", "got 1");
  eos[1] = 2;
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, mv, ov,
                                               {.missing_eos_penalty = 1, .ends_with_eos = cai::make_view(eos.data(), {2})}),
                            cai::invalid_argument, "'ends_with_eos'", "0 or 1");
  const std::vector<std::int64_t> cu{0, 4, 5};
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, cai::no_mask, cai::packed(cai::make_view(out.data(), {6})),
                                               {.cu_seqlens = cai::make_view(cu.data(), {3})}),
                            cai::shape_error, "'cu_seqlens'", "last offset");
  const std::vector<std::int64_t> cu_ok{0, 4, 6};
  CAI_REQUIRE_THROWS_NAMING(cai::token_rewards(h, kl::none{}, sv, {}, {}, cai::no_mask, ov, {.cu_seqlens = cai::make_view(cu_ok.data(), {3})}),
                            cai::shape_error, "'out'", "(1, N)");
}
