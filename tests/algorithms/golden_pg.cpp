// PyTorch golden values for algorithms/ppo.hpp, aggregation.hpp and advantages.hpp (tests/golden/gen_pg.py writes
// tests/golden/pg.txt): the PPO-family surrogates under the four aggregation modes, the KL-in-loss and entropy terms,
// the value loss, and the group / outcome advantage estimators, each against the peers' formulas (verl core_algos.py,
// TRL, OpenRLHF) evaluated with torch autograd in fp64 from fp32 inputs. Every case runs on cai's float and double
// paths; policy cases run both the typed composition and the objective parsed from its configuration string.
//
// Tolerances. The references are fp64, so they carry no rounding of their own at these magnitudes:
//   float path   values 1e-5 relative + 1e-6 x scale (scale = the aggregate of |each term|, written by the
//                generator: cai forms every term in float, about 1e-7 relative each, and sums in double);
//                gradients 1e-5 relative + 1e-6 x the case's largest |gradient|; advantages 1e-5 relative + 1e-6
//   double path  1e-11 relative + 1e-13 x scale (libm exp / sigmoid against torch's, summation order)
//   clip / dual-clip fractions and token counts exactly (to 1e-12); the inputs keep every counted token at least
//   2e-3 relative away from each kink (GSPO's sequence ratios 1.5e-4 from its narrow window), so both precisions
//   take the branches torch takes. Largest float-path error seen: 0.46 of the tolerance (SAPO's gradient
//   A 4 s (1 - s) r where the sigmoid s nears 1 and 1 - s cancels in float, as it does in torch fp32).
#include <cai/algorithms/advantages.hpp>
#include <cai/algorithms/objective.hpp>
#include <cai/algorithms/ppo.hpp>
#include <cai/core/host.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../golden/golden.hpp"
#include "../support.hpp"

namespace {

using cai_test::golden;

const golden& gold() {
  static const golden g("pg.txt");
  return g;
}

template <class R>
struct tolerance {
  static constexpr bool fp32 = std::is_same_v<R, float>;
  static constexpr double rel = fp32 ? 1e-5 : 1e-11;
  static constexpr double scaled = fp32 ? 1e-6 : 1e-13;  ///< times the term scale or the largest gradient
  static constexpr double adv_abs = fp32 ? 1e-6 : 1e-12;
};

bool near(double got, double want, double rel, double abs_tol) { return std::fabs(got - want) <= abs_tol + rel * std::fabs(want); }

std::vector<std::uint8_t> mask_of(const std::string& name) {
  const auto& v = gold()[name];
  std::vector<std::uint8_t> m(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) m[i] = v[i] != 0.0 ? 1 : 0;
  return m;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// ----- policy loss ---------------------------------------------------------------------------------------------------

template <class R>
struct pg_data {
  std::int64_t B = 0, T = 0;
  std::vector<R> logp, old_logp, adv, ref, ent, gspo_logp, gspo_adv;
  std::vector<std::uint8_t> mask;
  pg_data() {
    const auto& g = gold();
    B = static_cast<std::int64_t>(g["pg.shape"][0]);
    T = static_cast<std::int64_t>(g["pg.shape"][1]);
    logp = g.as<R>("pg.logp");
    old_logp = g.as<R>("pg.old_logp");
    adv = g.as<R>("pg.advantages");
    ref = g.as<R>("pg.ref_logp");
    ent = g.as<R>("pg.entropy");
    gspo_logp = g.as<R>("pg.gspo_logp");
    gspo_adv = g.as<R>("pg.gspo_advantages");
    mask = mask_of("pg.mask");
    REQUIRE(logp.size() == static_cast<std::size_t>(B * T));
    REQUIRE(mask.size() == logp.size());
  }
};

enum class inputs : std::uint8_t { token, gspo };

template <class R, class O>
void check_policy_case(const std::string& name, const O& obj, inputs which, const char* how) {
  static const pg_data<R> d;
  using tol = tolerance<R>;
  const auto& g = gold();
  const std::int64_t B = d.B, T = d.T;
  const std::vector<R>& x = which == inputs::gspo ? d.gspo_logp : d.logp;
  const std::vector<R>& A = which == inputs::gspo ? d.gspo_adv : d.adv;
  std::vector<R> dlogp(x.size(), R(7)), dent(x.size(), R(7));  // sentinels: every position must be written
  const cai::policy_batch<R> in{.logp = cai::make_view(x.data(), {B, T}),
                                .old_logp = cai::make_view(d.old_logp.data(), {B, T}),
                                .advantages = cai::make_view(A.data(), {B, T}),
                                .mask = cai::make_view(d.mask.data(), {B, T}),
                                .ref_logp = cai::make_view(d.ref.data(), {B, T}),
                                .entropy = cai::make_view(d.ent.data(), {B, T})};
  const cai::policy_loss_result res =
      cai::policy_loss(cai::host{}, obj, in, {.dlogp = cai::make_view(dlogp.data(), {B, T}), .dentropy = cai::make_view(dent.data(), {B, T})});

  const double scale = g[name + ".scale"][0];
  INFO("case " << name << " (" << how << ", " << (tol::fp32 ? "float" : "double") << ")");
  const auto value = [&](const char* what, double got) {
    const double want = g[name + "." + what][0];
    INFO(what << " " << got << " torch " << want << " diff " << got - want << " scale " << scale);
    CHECK(near(got, want, tol::rel, tol::scaled * scale));
  };
  value("loss", res.loss);
  value("pg_loss", res.pg_loss);
  value("kl_loss", res.kl_loss);
  value("entropy_loss", res.entropy_loss);

  const auto grads = [&](const char* what, const std::vector<R>& got) {
    const auto& want = g[name + "." + what];
    REQUIRE(want.size() == got.size());
    const double gmax = max_abs(want);
    for (std::size_t i = 0; i < got.size(); ++i) {
      INFO(what << " at (" << static_cast<std::int64_t>(i) / T << ", " << static_cast<std::int64_t>(i) % T << ") mask "
                << int(d.mask[i]) << " got " << got[i] << " torch " << want[i]);
      if (!d.mask[i]) CHECK(got[i] == R(0));
      else CHECK(near(static_cast<double>(got[i]), want[i], tol::rel, tol::scaled * gmax));
    }
  };
  grads("dlogp", dlogp);
  grads("dentropy", dent);

  // [tokens, clip_fraction, clip_fraction_low, clip_fraction_high, dual_clip_fraction, approx_kl]
  const auto& mt = g[name + ".metrics"];
  const cai::policy_metrics& m = res.metrics;
  INFO("metrics: tokens " << m.tokens << " clip " << m.clip_fraction << " low " << m.clip_fraction_low << " high "
                          << m.clip_fraction_high << " dual " << m.dual_clip_fraction << " approx_kl " << m.approx_kl);
  CHECK(static_cast<double>(m.tokens) == mt[0]);
  CHECK(near(m.clip_fraction, mt[1], 0.0, 1e-12));
  CHECK(near(m.clip_fraction_low, mt[2], 0.0, 1e-12));
  CHECK(near(m.clip_fraction_high, mt[3], 0.0, 1e-12));
  CHECK(near(m.dual_clip_fraction, mt[4], 0.0, 1e-12));
  CHECK(near(m.approx_kl, mt[5], tol::rel, tol::fp32 ? 1e-7 : 1e-14));
}

/// The typed composition and the same objective parsed from its configuration string.
template <class R, class O>
void check_policy(const std::string& name, const O& typed, const char* config, inputs which = inputs::token) {
  check_policy_case<R>(name, typed, which, "typed");
  check_policy_case<R>(name, cai::objective_from_string(config), which, config);
}

template <class R>
void check_surrogates() {
  using namespace cai;
  check_policy<R>("ppo_sym_tm", ppo_objective<pg::ppo_clip, kl::none, agg::token_mean>{.clip = {0.2, 0.2}},
                  "clip=ppo_clip:eps=0.2; agg=token-mean");
  check_policy<R>("ppo_sym_smtm", ppo_objective<pg::ppo_clip, kl::none, agg::seq_mean_token_mean>{.clip = {0.2, 0.2}},
                  "clip=ppo_clip:eps=0.2; agg=seq-mean-token-mean");
  check_policy<R>("ppo_asym_smts", ppo_objective<pg::ppo_clip, kl::none, agg::seq_mean_token_sum>{.clip = {0.2, 0.28}},
                  "clip=ppo_clip:eps_low=0.2,eps_high=0.28; agg=seq-mean-token-sum");
  check_policy<R>("ppo_asym_norm", ppo_objective<pg::ppo_clip, kl::none, agg::seq_mean_token_sum_norm>{.clip = {0.2, 0.28}},
                  "clip=ppo_clip:eps_low=0.2,eps_high=0.28; agg=seq-mean-token-sum-norm");
  check_policy<R>("dual_tm", ppo_objective<pg::dual_clip, kl::none, agg::token_mean>{.clip = {0.2, 0.28, 3.0}},
                  "clip=dual_clip:eps_low=0.2,eps_high=0.28,c=3; agg=token-mean");
  check_policy<R>("dual_smts", ppo_objective<pg::dual_clip, kl::none, agg::seq_mean_token_sum>{.clip = {0.2, 0.2, 3.0}},
                  "clip=dual_clip:eps=0.2,c=3; agg=seq-mean-token-sum");
  check_policy<R>("gspo_smtm", ppo_objective<pg::gspo, kl::none, agg::seq_mean_token_mean>{},
                  "clip=gspo; agg=seq-mean-token-mean", inputs::gspo);
  check_policy<R>("gspo_tm_cap", ppo_objective<pg::gspo, kl::none, agg::token_mean>{.clip = {0.2, 0.2, 0.5}},
                  "clip=gspo:eps=0.2,seq_log_ratio_clamp=0.5; agg=token-mean", inputs::gspo);
  check_policy<R>("cispo_tm", ppo_objective<pg::cispo, kl::none, agg::token_mean>{.clip = {0.2, 0.28}},
                  "clip=cispo:eps_low=0.2,eps_high=0.28; agg=token-mean");
  check_policy<R>("cispo_norm16", ppo_objective<pg::cispo, kl::none, agg::seq_mean_token_sum_norm>{.clip = {0.2, 0.28}, .agg = {16.0}},
                  "clip=cispo:eps_low=0.2,eps_high=0.28; agg=seq-mean-token-sum-norm:norm=16");
  check_policy<R>("sapo_smtm", ppo_objective<pg::sapo, kl::none, agg::seq_mean_token_mean>{},
                  "clip=sapo; agg=seq-mean-token-mean");
  check_policy<R>("sapo_smts", ppo_objective<pg::sapo, kl::none, agg::seq_mean_token_sum>{.clip = {1.0, 1.05}},
                  "clip=sapo:tau_pos=1,tau_neg=1.05; agg=seq-mean-token-sum");
}

template <class R>
void check_kl_and_entropy() {
  using namespace cai;
  check_policy<R>("ppo_k3_ent_tm",
                  ppo_objective<pg::ppo_clip, kl::in_loss<kl::k3>, agg::token_mean>{.clip = {0.2, 0.28}, .kl = {{}, 0.1}, .entropy_coef = 0.01},
                  "clip=ppo_clip:eps_low=0.2,eps_high=0.28; kl=in_loss:k3,coef=0.1; agg=token-mean; entropy_coef=0.01");
  check_policy<R>("dual_k1_ent_smtm",
                  ppo_objective<pg::dual_clip, kl::in_loss<kl::k1>, agg::seq_mean_token_mean>{
                      .clip = {0.2, 0.2, 3.0}, .kl = {{}, 0.05}, .entropy_coef = 0.02},
                  "clip=dual_clip:eps=0.2,c=3; kl=in_loss:k1,coef=0.05; agg=seq-mean-token-mean; entropy_coef=0.02");
}

// ----- value loss ----------------------------------------------------------------------------------------------------

template <class R, class V, class A>
void check_value_case(const std::string& name, const V& clip, const A& aggregation) {
  using tol = tolerance<R>;
  const auto& g = gold();
  const auto B = static_cast<std::int64_t>(g["pg.shape"][0]), T = static_cast<std::int64_t>(g["pg.shape"][1]);
  const auto v = g.as<R>("vf.values"), vo = g.as<R>("vf.old_values"), ret = g.as<R>("vf.returns");
  const auto mask = mask_of("pg.mask");
  std::vector<R> dv(v.size(), R(7));
  cai::value_batch<R> in{.values = cai::make_view(v.data(), {B, T}), .returns = cai::make_view(ret.data(), {B, T}),
                         .mask = cai::make_view(mask.data(), {B, T})};
  if constexpr (std::is_same_v<V, cai::vf::clipped>) in.old_values = cai::make_view(vo.data(), {B, T});
  const cai::value_loss_result res = cai::value_loss(cai::host{}, clip, aggregation, in, cai::make_view(dv.data(), {B, T}));
  INFO("case " << name << " (" << (tol::fp32 ? "float" : "double") << ")");
  const double want = g[name + ".loss"][0], scale = g[name + ".scale"][0];
  INFO("loss " << res.loss << " torch " << want);
  CHECK(near(res.loss, want, tol::rel, tol::scaled * scale));
  const auto& wg = g[name + ".dvalues"];
  const double gmax = max_abs(wg);
  for (std::size_t i = 0; i < dv.size(); ++i) {
    INFO("dvalues at " << i << " mask " << int(mask[i]) << " got " << dv[i] << " torch " << wg[i]);
    if (!mask[i]) CHECK(dv[i] == R(0));
    else CHECK(near(static_cast<double>(dv[i]), wg[i], tol::rel, tol::scaled * gmax));
  }
  // [tokens, clip_fraction, value_mean, return_mean, explained_variance]
  const auto& mt = g[name + ".metrics"];
  CHECK(static_cast<double>(res.tokens) == mt[0]);
  CHECK(near(res.clip_fraction, mt[1], 0.0, 1e-12));
  CHECK(near(res.value_mean, mt[2], tol::rel, tol::adv_abs));
  CHECK(near(res.return_mean, mt[3], tol::rel, tol::adv_abs));
  CHECK(near(res.explained_variance, mt[4], tol::rel, tol::adv_abs));
}

template <class R>
void check_values() {
  using namespace cai;
  check_value_case<R>("vf_clip05_tm", vf::clipped{}, agg::token_mean{});  // cai's default clip 0.5 (verl, OpenRLHF)
  check_value_case<R>("vf_clip02_smtm", vf::clipped{0.2}, agg::seq_mean_token_mean{});
  check_value_case<R>("vf_unclipped_tm", vf::unclipped{}, agg::token_mean{});
  check_value_case<R>("vf_unclipped_smts", vf::unclipped{}, agg::seq_mean_token_sum{});
}

// ----- advantages ----------------------------------------------------------------------------------------------------

enum source : std::uint8_t { scores = 1, token_rewards = 2, baseline = 4 };

template <class R, class E>
void check_adv_case(const std::string& name, const E& est, unsigned src, std::int64_t group_size) {
  using tol = tolerance<R>;
  const auto& g = gold();
  const auto B = static_cast<std::int64_t>(g["adv.shape"][0]), T = static_cast<std::int64_t>(g["adv.shape"][1]);
  const auto s = g.as<R>("adv.scores"), b = g.as<R>("adv.baseline_scores"), r = g.as<R>("adv.token_rewards");
  const auto mask = mask_of("adv.mask");
  std::vector<R> a(mask.size(), R(7)), ret(mask.size(), R(7)), seq(static_cast<std::size_t>(B), R(7));
  cai::advantage_inputs<R> in{.mask = cai::make_view(mask.data(), {B, T}), .group_size = group_size};
  if (src & scores) in.scores = cai::make_view(s.data(), {B});
  if (src & token_rewards) in.token_rewards = cai::make_view(r.data(), {B, T});
  if (src & baseline) in.baseline_scores = cai::make_view(b.data(), {B});
  const std::string rec = name + ".returns", srec = name + ".seq";
  const bool with_returns = [&] {
    try {
      (void)g[rec];
      return true;
    } catch (const std::runtime_error&) {
      return false;
    }
  }();
  const bool with_seq = [&] {
    try {
      (void)g[srec];
      return true;
    } catch (const std::runtime_error&) {
      return false;
    }
  }();
  cai::advantage_outputs<R> out{.advantages = cai::make_view(a.data(), {B, T})};
  if (with_returns) out.returns = cai::make_view(ret.data(), {B, T});
  if (with_seq) out.sequence_advantages = cai::make_view(seq.data(), {B});
  cai::advantages(cai::host{}, est, in, out);

  INFO("estimator " << name << " (" << (tol::fp32 ? "float" : "double") << ")");
  // Counted positions against the reference; cai writes 0 at the others (documented), where verl may not.
  const auto tokens = [&](const char* what, const std::vector<R>& got, const std::vector<double>& want) {
    REQUIRE(want.size() == got.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      INFO(what << " at (" << static_cast<std::int64_t>(i) / T << ", " << static_cast<std::int64_t>(i) % T << ") mask "
                << int(mask[i]) << " got " << got[i] << " torch " << want[i]);
      if (!mask[i]) CHECK(got[i] == R(0));
      else CHECK(near(static_cast<double>(got[i]), want[i], tol::rel, tol::adv_abs));
    }
  };
  tokens("advantages", a, g[name + ".advantages"]);
  if (with_returns) tokens("returns", ret, g[rec]);
  if (with_seq) {
    const auto& want = g[srec];
    REQUIRE(want.size() == seq.size());
    for (std::size_t i = 0; i < seq.size(); ++i) {
      INFO("sequence advantage " << i << " got " << seq[i] << " torch " << want[i]);
      CHECK(near(static_cast<double>(seq[i]), want[i], tol::rel, tol::adv_abs));
    }
  }
}

template <class R>
void check_estimators() {
  using namespace cai;
  const auto G = static_cast<std::int64_t>(gold()["adv.group_size"][0]);
  check_adv_case<R>("grpo", adv::grpo{}, scores, G);
  check_adv_case<R>("grpo_batch", adv::grpo{adv::scale::batch, 1e-4}, scores, G);
  check_adv_case<R>("dr_grpo", adv::dr_grpo{}, scores, G);
  check_adv_case<R>("dr_grpo", adv::grpo{adv::scale::none}, scores, G);  // the same estimator spelled as grpo
  check_adv_case<R>("rloo", adv::rloo{}, scores, G);
  check_adv_case<R>("opo", adv::opo{}, scores, G);
  check_adv_case<R>("gpg", adv::gpg{}, scores, G);
  check_adv_case<R>("gpg_f2", adv::gpg{2.0}, scores, G);
  check_adv_case<R>("grpo_single", adv::grpo{}, scores, 1);
  check_adv_case<R>("grpo_tok", adv::grpo{}, token_rewards, G);
  check_adv_case<R>("rpp_baseline", adv::reinforce_pp_baseline{}, scores, G);
  check_adv_case<R>("remax_scores", adv::remax{}, scores | baseline, 1);
  check_adv_case<R>("remax_tok", adv::remax{}, token_rewards | baseline, 1);
  check_adv_case<R>("rpp_g1", adv::reinforce_pp{}, token_rewards, 1);
  check_adv_case<R>("rpp_g09", adv::reinforce_pp{0.9}, token_rewards, 1);
}

}  // namespace

TEST_CASE("PPO-family surrogates match torch autograd golden values under every aggregation mode", "[ppo][aggregation][golden]") {
  SECTION("float") { check_surrogates<float>(); }
  SECTION("double") { check_surrogates<double>(); }
}

TEST_CASE("Policy loss with the KL in the loss and an entropy bonus matches torch autograd golden values", "[ppo][kl][golden]") {
  SECTION("float") { check_kl_and_entropy<float>(); }
  SECTION("double") { check_kl_and_entropy<double>(); }
}

TEST_CASE("Value loss, clipped and unclipped, matches torch autograd golden values", "[value][aggregation][golden]") {
  SECTION("float") { check_values<float>(); }
  SECTION("double") { check_values<double>(); }
}

TEST_CASE("Group and outcome advantage estimators match the peers' formulas (torch golden values)", "[advantages][golden]") {
  SECTION("float") { check_estimators<float>(); }
  SECTION("double") { check_estimators<double>(); }
}
