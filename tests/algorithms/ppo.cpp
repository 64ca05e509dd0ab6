// Tests for algorithms/ppo.hpp, aggregation.hpp, advantages.hpp and objective.hpp: fp64 references written
// differently from the library (torch's min form of the clipped surrogate), central finite differences along random
// directions away from kinks, run-time vs compile-time composition, thread-count independence, bad input.
#include <catch2/catch.hpp>

#include <cai/algorithms/advantages.hpp>
#include <cai/algorithms/objective.hpp>
#include <cai/algorithms/ppo.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "../support.hpp"

namespace {

struct batch_data {
  std::int64_t B, T;
  std::vector<double> x, o, A, ref, H;
  std::vector<std::uint8_t> m;
};

batch_data make_batch(std::int64_t B, std::int64_t T, unsigned seed, double spread = 0.15) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  batch_data d{B, T, {}, {}, {}, {}, {}, {}};
  const auto N = static_cast<std::size_t>(B * T);
  d.x.resize(N), d.o.resize(N), d.A.resize(N), d.ref.resize(N), d.H.resize(N), d.m.resize(N);
  for (std::size_t i = 0; i < N; ++i) {
    d.o[i] = -1.0 - std::abs(n(g));
    d.x[i] = d.o[i] + spread * n(g);
    d.ref[i] = d.o[i] + 0.3 * n(g);
    d.A[i] = n(g);
    d.H[i] = std::abs(n(g));
  }
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t len = b == 0 ? 0 : (b == 1 ? 1 : 1 + static_cast<std::int64_t>(g() % static_cast<std::uint64_t>(T)));
    for (std::int64_t t = 0; t < T; ++t) d.m[static_cast<std::size_t>(b * T + t)] = t < len && (t % 7 != 3);
  }
  return d;
}

template <class O>
double loss_at(const O& obj, const batch_data& d, const std::vector<double>& x) {
  cai::policy_batch<double> in{.logp = cai::make_view(x.data(), {d.B, d.T}),
                               .old_logp = cai::make_view(d.o.data(), {d.B, d.T}),
                               .advantages = cai::make_view(d.A.data(), {d.B, d.T}),
                               .mask = cai::make_view(d.m.data(), {d.B, d.T}),
                               .ref_logp = cai::make_view(d.ref.data(), {d.B, d.T}),
                               .entropy = cai::make_view(d.H.data(), {d.B, d.T})};
  return cai::policy_loss(cai::host{}, obj, in).loss;
}

/// Central differences along random directions; checks <g, u> against (L(x + hu) - L(x - hu)) / 2h.
template <class O>
void check_gradient(const O& obj, const batch_data& d) {
  std::vector<double> g(d.x.size()), gh(d.x.size());
  cai::policy_batch<double> in{.logp = cai::make_view(d.x.data(), {d.B, d.T}),
                               .old_logp = cai::make_view(d.o.data(), {d.B, d.T}),
                               .advantages = cai::make_view(d.A.data(), {d.B, d.T}),
                               .mask = cai::make_view(d.m.data(), {d.B, d.T}),
                               .ref_logp = cai::make_view(d.ref.data(), {d.B, d.T}),
                               .entropy = cai::make_view(d.H.data(), {d.B, d.T})};
  cai::policy_loss(cai::host{}, obj, in, {.dlogp = cai::make_view(g.data(), {d.B, d.T}), .dentropy = cai::make_view(gh.data(), {d.B, d.T})});
  std::mt19937_64 rng(7);
  std::normal_distribution<double> n(0.0, 1.0);
  for (int dir = 0; dir < 4; ++dir) {
    std::vector<double> u(d.x.size()), xp = d.x, xm = d.x;
    double gu = 0.0;
    const double h = 1e-6;
    for (std::size_t i = 0; i < u.size(); ++i) {
      u[i] = n(rng);
      gu += g[i] * u[i];
      xp[i] += h * u[i];
      xm[i] -= h * u[i];
    }
    const double fd = (loss_at(obj, d, xp) - loss_at(obj, d, xm)) / (2 * h);
    REQUIRE(gu == Approx(fd).epsilon(1e-6).margin(1e-9));
  }
  for (std::size_t i = 0; i < d.m.size(); ++i)
    if (!d.m[i]) REQUIRE(g[i] == 0.0);
}

}  // namespace

TEST_CASE("PPO clipped surrogate matches an fp64 reference written in torch's min form", "[ppo][aggregation]") {
  const batch_data d = make_batch(6, 9, 1, 0.4);
  const double el = 0.2, eh = 0.28;
  // Reference: token-mean of -min(r A, clip(r) A), dual clip max(., c A) for A < 0 (OpenRLHF's form).
  double s = 0.0, sd = 0.0, n = 0.0;
  for (std::size_t i = 0; i < d.x.size(); ++i) {
    if (!d.m[i]) continue;
    const double r = std::exp(d.x[i] - d.o[i]);
    const double s1 = r * d.A[i], s2 = std::clamp(r, 1 - el, 1 + eh) * d.A[i];
    const double c1 = std::min(s1, s2);
    s += -c1;
    sd += d.A[i] < 0 ? -std::max(c1, 3.0 * d.A[i]) : -c1;
    n += 1;
  }
  cai::ppo_objective<cai::pg::ppo_clip> clip{.clip = {el, eh}};
  cai::ppo_objective<cai::pg::dual_clip> dual{.clip = {el, eh, 3.0}};
  batch_data e = d;
  e.H.assign(e.H.size(), 0.0);
  REQUIRE(loss_at(clip, e, e.x) == Approx(s / n).epsilon(1e-12));
  REQUIRE(loss_at(dual, e, e.x) == Approx(sd / n).epsilon(1e-12));
}

TEST_CASE("Policy objectives have finite-difference gradients for every surrogate and aggregation", "[ppo][aggregation]") {
  const batch_data d = make_batch(5, 11, 2);
  using namespace cai;
  check_gradient(ppo_objective<pg::ppo_clip, kl::in_loss<kl::k3>, agg::token_mean>{.kl = {{}, 0.1}, .entropy_coef = 0.01}, d);
  check_gradient(ppo_objective<pg::dual_clip, kl::in_loss<kl::k2>, agg::seq_mean_token_sum>{.kl = {{}, 0.2}}, d);
  // GSPO's token-level gradient (sg(s_b) * pi / sg(pi)) is the derivative of its sequence objective when the
  // advantage is one per sequence (the estimators it is used with) and tokens are averaged per sequence.
  batch_data seq = d;
  for (std::int64_t b = 0; b < seq.B; ++b)
    for (std::int64_t t = 0; t < seq.T; ++t) seq.A[static_cast<std::size_t>(b * seq.T + t)] = d.A[static_cast<std::size_t>(b * seq.T)];
  check_gradient(ppo_objective<pg::gspo, kl::none, agg::seq_mean_token_mean>{.clip = {0.2, 0.2, 10.0}}, seq);
  check_gradient(ppo_objective<pg::sapo, kl::in_loss<kl::abs>, agg::seq_mean_token_sum_norm>{.kl = {{}, 0.05}}, d);
}

TEST_CASE("CISPO's gradient is the stop-gradient weight times the advantage", "[ppo]") {
  // The CISPO loss -sg(clip(r)) A logp has no finite-difference check (its value moves with r through the stopped
  // factor); its gradient is checked against the definition instead.
  const batch_data d = make_batch(5, 11, 9, 0.5);
  std::vector<double> g(d.x.size());
  cai::policy_batch<double> in{.logp = cai::make_view(d.x.data(), {5, 11}), .old_logp = cai::make_view(d.o.data(), {5, 11}),
                               .advantages = cai::make_view(d.A.data(), {5, 11}), .mask = cai::make_view(d.m.data(), {5, 11})};
  const auto r = cai::policy_loss(cai::host{}, cai::ppo_objective<cai::pg::cispo, cai::kl::none, cai::agg::seq_mean_token_sum_norm>{.clip = {0.2, 0.28}},
                                  in, {.dlogp = cai::make_view(g.data(), {5, 11})});
  double S = 0, loss = 0;
  for (std::int64_t b = 0; b < 5; ++b) {
    bool any = false;
    for (std::int64_t t = 0; t < 11; ++t) any |= d.m[static_cast<std::size_t>(b * 11 + t)] != 0;
    S += any;
  }
  for (std::size_t i = 0; i < d.x.size(); ++i) {
    const double rc = std::clamp(std::exp(d.x[i] - d.o[i]), 0.8, 1.28);
    REQUIRE(g[i] == Approx(d.m[i] ? -rc * d.A[i] / (S * 11) : 0.0).margin(1e-15));
    loss += d.m[i] ? -rc * d.A[i] * d.x[i] / (S * 11) : 0.0;
  }
  REQUIRE(r.loss == Approx(loss).epsilon(1e-12));
}

TEST_CASE("Entropy gradient is minus the coefficient times the aggregation weight", "[ppo]") {
  const batch_data d = make_batch(4, 6, 3);
  std::vector<double> gh(d.x.size());
  cai::policy_batch<double> in{.logp = cai::make_view(d.x.data(), {4, 6}), .old_logp = cai::make_view(d.o.data(), {4, 6}),
                               .advantages = cai::make_view(d.A.data(), {4, 6}), .mask = cai::make_view(d.m.data(), {4, 6}),
                               .entropy = cai::make_view(d.H.data(), {4, 6})};
  const auto r = cai::policy_loss(cai::host{}, cai::ppo_objective<>{.entropy_coef = 0.5}, in, {.dentropy = cai::make_view(gh.data(), {4, 6})});
  double n = 0, hs = 0;
  for (std::size_t i = 0; i < d.m.size(); ++i) n += d.m[i], hs += d.m[i] ? d.H[i] : 0.0;
  for (std::size_t i = 0; i < d.m.size(); ++i) REQUIRE(gh[i] == Approx(d.m[i] ? -0.5 / n : 0.0));
  REQUIRE(r.entropy_loss == Approx(hs / n));
  REQUIRE(r.loss == Approx(r.pg_loss - 0.5 * r.entropy_loss));
}

TEST_CASE("Clip boundaries split the gradient like torch max ties", "[ppo]") {
  // Inside the range both branches are equal: the full gradient -A r flows. Outside on the clipped side: 0.
  std::vector<double> x{std::log(1.1), std::log(1.5), std::log(0.5)}, o(3, 0.0), A{1.0, 1.0, -1.0}, g(3);
  cai::policy_batch<double> in{.logp = cai::make_view(x.data(), {1, 3}), .old_logp = cai::make_view(o.data(), {1, 3}),
                               .advantages = cai::make_view(A.data(), {1, 3})};
  const auto r = cai::policy_loss(cai::host{}, cai::ppo_objective<>{}, in, {.dlogp = cai::make_view(g.data(), {1, 3})});
  REQUIRE(g[0] == Approx(-1.1 / 3));
  REQUIRE(g[1] == 0.0);
  REQUIRE(g[2] == 0.0);
  REQUIRE(r.metrics.clip_fraction == Approx(2.0 / 3));
  REQUIRE(r.metrics.clip_fraction_high == Approx(1.0 / 3));
  REQUIRE(r.metrics.clip_fraction_low == Approx(1.0 / 3));
}

TEST_CASE("The run-time objective gives the same bits as the typed composition, on any thread count", "[ppo]") {
  const batch_data d = make_batch(9, 13, 4);
  std::vector<float> x(d.x.begin(), d.x.end()), o(d.o.begin(), d.o.end()), A(d.A.begin(), d.A.end()),
      ref(d.ref.begin(), d.ref.end()), g1(x.size()), g2(x.size()), g3(x.size());
  cai::policy_batch<float> in{.logp = cai::make_view(x.data(), {9, 13}), .old_logp = cai::make_view(o.data(), {9, 13}),
                              .advantages = cai::make_view(A.data(), {9, 13}), .mask = cai::make_view(d.m.data(), {9, 13}),
                              .ref_logp = cai::make_view(ref.data(), {9, 13})};
  using namespace cai;
  const ppo_objective<pg::dual_clip, kl::in_loss<kl::k3>, agg::seq_mean_token_mean> typed{.clip = {0.2, 0.28, 3.0}, .kl = {{}, 0.01}};
  const auto dyn = objective_from_string("clip=dual_clip:eps_low=0.2,eps_high=0.28,c=3; kl=in_loss:k3,coef=0.01; agg=seq-mean-token-mean");
  const auto a = policy_loss(host{}, typed, in, {.dlogp = make_view(g1.data(), {9, 13})});
  const auto b = policy_loss(host{}, dyn, in, {.dlogp = make_view(g2.data(), {9, 13})});
  const auto c = policy_loss(threaded_host(3), typed, in, {.dlogp = make_view(g3.data(), {9, 13})});
  REQUIRE(a.loss == b.loss);
  REQUIRE(a.loss == c.loss);
  REQUIRE(g1 == g2);
  REQUIRE(g1 == g3);
}

TEST_CASE("Packed and padded layouts give the same policy loss", "[ppo]") {
  const batch_data d = make_batch(4, 8, 5);
  std::vector<double> px, po, pA;
  std::vector<std::int64_t> cu{0};
  std::vector<std::uint8_t> pm;
  batch_data e = d;
  for (std::int64_t b = 0; b < 4; ++b) {
    const std::int64_t len = 2 + b;  // packed rows of different lengths; the padded copy masks the rest
    for (std::int64_t t = 0; t < 8; ++t) {
      const auto i = static_cast<std::size_t>(b * 8 + t);
      if (t < len) {
        px.push_back(d.x[i]), po.push_back(d.o[i]), pA.push_back(d.A[i]), pm.push_back(d.m[i]);
      } else {
        e.m[i] = 0;
      }
    }
    cu.push_back(static_cast<std::int64_t>(px.size()));
  }
  const auto N = static_cast<std::int64_t>(px.size());
  cai::policy_batch<double> packed{.logp = cai::make_view(px.data(), {1, N}), .old_logp = cai::make_view(po.data(), {1, N}),
                                   .advantages = cai::make_view(pA.data(), {1, N}), .mask = cai::make_view(pm.data(), {1, N}),
                                   .cu_seqlens = cai::make_view(cu.data(), {5})};
  cai::policy_batch<double> padded{.logp = cai::make_view(e.x.data(), {4, 8}), .old_logp = cai::make_view(e.o.data(), {4, 8}),
                                   .advantages = cai::make_view(e.A.data(), {4, 8}), .mask = cai::make_view(e.m.data(), {4, 8})};
  const cai::ppo_objective<cai::pg::ppo_clip, cai::kl::none, cai::agg::seq_mean_token_mean> obj{};
  REQUIRE(cai::policy_loss(cai::host{}, obj, packed).loss == Approx(cai::policy_loss(cai::host{}, obj, padded).loss).epsilon(1e-14));
}

TEST_CASE("Value loss: clipped formula and finite-difference gradient", "[value]") {
  const batch_data d = make_batch(5, 7, 6, 0.8);
  std::vector<double> g(d.x.size());
  cai::value_batch<double> vb{.values = cai::make_view(d.x.data(), {5, 7}), .old_values = cai::make_view(d.o.data(), {5, 7}),
                              .returns = cai::make_view(d.ref.data(), {5, 7}), .mask = cai::make_view(d.m.data(), {5, 7})};
  const auto r = cai::value_loss(cai::host{}, cai::vf::clipped{0.5}, cai::agg::token_mean{}, vb, cai::make_view(g.data(), {5, 7}));
  double s = 0, n = 0;
  for (std::size_t i = 0; i < d.x.size(); ++i)
    if (d.m[i]) {
      const double vc = d.o[i] + std::clamp(d.x[i] - d.o[i], -0.5, 0.5);  // OpenRLHF's form
      s += 0.5 * std::max((d.x[i] - d.ref[i]) * (d.x[i] - d.ref[i]), (vc - d.ref[i]) * (vc - d.ref[i]));
      n += 1;
    }
  REQUIRE(r.loss == Approx(s / n).epsilon(1e-12));
  std::vector<double> u(d.x.size()), xp = d.x, xm = d.x;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd;
  double gu = 0;
  for (std::size_t i = 0; i < u.size(); ++i) u[i] = nd(rng), gu += g[i] * u[i], xp[i] += 1e-6 * u[i], xm[i] -= 1e-6 * u[i];
  auto at = [&](std::vector<double>& v) {
    auto vv = vb;
    vv.values = cai::make_view(v.data(), {5, 7});
    return cai::value_loss(cai::host{}, cai::vf::clipped{0.5}, cai::agg::token_mean{}, vv).loss;
  };
  REQUIRE(gu == Approx((at(xp) - at(xm)) / 2e-6).epsilon(1e-6));
  CAI_REQUIRE_THROWS_NAMING((cai::value_loss(cai::host{}, cai::vf::clipped{0.0}, cai::agg::token_mean{}, vb)), cai::error, "clip");
}

TEST_CASE("Group advantage estimators follow their definitions, with the NaN and singleton rules", "[advantages]") {
  std::vector<double> s{1.0, 2.0, 4.0, std::nan(""), 3.0, 3.0, 3.0, 3.0}, a(8 * 2), seq(8);
  std::vector<std::uint8_t> m(16, 1);
  cai::advantage_inputs<double> in{.scores = cai::make_view(s.data(), {8}), .mask = cai::make_view(m.data(), {8, 2}), .group_size = 4};
  cai::advantage_outputs<double> out{.advantages = cai::make_view(a.data(), {8, 2}), .sequence_advantages = cai::make_view(seq.data(), {8})};
  auto sum = cai::advantages(cai::host{}, cai::adv::grpo{}, in, out);
  const double mean = 7.0 / 3, sd = std::sqrt(((1 - mean) * (1 - mean) + (2 - mean) * (2 - mean) + (4 - mean) * (4 - mean)) / 2);
  REQUIRE(seq[0] == Approx((1 - mean) / (sd + 1e-6)));
  REQUIRE(seq[3] == 0.0);
  for (int i = 4; i < 8; ++i) REQUIRE(seq[static_cast<std::size_t>(i)] == 0.0);
  REQUIRE(sum.unscored == 1);
  REQUIRE(sum.flat_groups == 1);
  cai::advantages(cai::host{}, cai::adv::rloo{}, in, out);
  REQUIRE(seq[2] == Approx(4.0 - 1.5));
  cai::advantages(cai::host{}, cai::adv::dr_grpo{}, in, out);
  REQUIRE(seq[1] == Approx(2.0 - mean));
  in.group_size = 3;
  CAI_REQUIRE_THROWS_NAMING((cai::advantages(cai::host{}, cai::adv::grpo{}, in, out)), cai::error, "group_size");
  in.group_size = 1;
  CAI_REQUIRE_THROWS_NAMING((cai::advantages(cai::host{}, cai::adv::rloo{}, in, out)), cai::error, "group_size");
  cai::advantages(cai::host{}, cai::adv::grpo{}, in, out);  // singleton groups: mean 0, std 1
  REQUIRE(seq[2] == Approx(4.0 / (1 + 1e-6)));
}

TEST_CASE("Policy loss rejects bad hyper-parameters and non-finite inputs by name", "[ppo]") {
  batch_data d = make_batch(3, 4, 8);
  cai::policy_batch<double> in{.logp = cai::make_view(d.x.data(), {3, 4}), .old_logp = cai::make_view(d.o.data(), {3, 4}),
                               .advantages = cai::make_view(d.A.data(), {3, 4}), .mask = cai::make_view(d.m.data(), {3, 4})};
  using namespace cai;
  CAI_REQUIRE_THROWS_NAMING((policy_loss(host{}, ppo_objective<>{.clip = {0.0, 0.2}}, in)), cai::error, "clip.eps_low");
  CAI_REQUIRE_THROWS_NAMING((policy_loss(host{}, ppo_objective<pg::dual_clip>{.clip = {0.2, 0.2, 1.0}}, in)), cai::error, "clip.c");
  CAI_REQUIRE_THROWS_NAMING((policy_loss(host{}, ppo_objective<pg::ppo_clip, kl::in_loss<kl::k3>>{}, in)), cai::error, "ref_logp");
  CAI_REQUIRE_THROWS_NAMING((policy_loss(host{}, ppo_objective<>{.entropy_coef = 0.1}, in)), cai::error, "entropy");
  CAI_REQUIRE_THROWS_NAMING((objective_from_string("clip=ppo2")), cai::error, "clip");
  CAI_REQUIRE_THROWS_NAMING((objective_from_string("agg=token-mean:foo=1")), cai::error, "agg");
  d.m[5] = 1;
  d.A[5] = std::nan("");
  CAI_REQUIRE_THROWS_NAMING((policy_loss(host{}, ppo_objective<>{}, in)), cai::error, "advantages");
  d.m[5] = 2;
  CAI_REQUIRE_THROWS_NAMING((policy_loss(host{}, ppo_objective<>{}, in)), cai::error, "mask");
}

TEST_CASE("Rollout corrections weight the surrogate as defined, and the gradient stays exact", "[ppo]") {
  batch_data d = make_batch(6, 10, 11, 0.3);
  std::vector<double> beh(d.x.size());
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd;
  for (std::size_t i = 0; i < beh.size(); ++i) beh[i] = d.o[i] + 0.6 * nd(rng);
  const double lo = 0.7, hi = 1.6;
  for (auto m : {cai::is::mode::token_truncate, cai::is::mode::token_mask, cai::is::mode::sequence_truncate,
                 cai::is::mode::sequence_mask}) {
    // Reference: per-token clip loss times the weight, token-mean.
    double s = 0.0, n = 0.0;
    for (std::int64_t b = 0; b < d.B; ++b) {
      double lr_sum = 0.0, cnt = 0.0;
      for (std::int64_t t = 0; t < d.T; ++t) {
        const auto i = static_cast<std::size_t>(b * d.T + t);
        if (d.m[i]) lr_sum += d.o[i] - beh[i], cnt += 1;
      }
      for (std::int64_t t = 0; t < d.T; ++t) {
        const auto i = static_cast<std::size_t>(b * d.T + t);
        if (!d.m[i]) continue;
        const double r = std::exp(d.x[i] - d.o[i]);
        const double l = -std::min(r * d.A[i], std::clamp(r, 0.8, 1.2) * d.A[i]);
        const double wt = std::exp(d.o[i] - beh[i]);
        double w = 0.0;
        switch (m) {
          case cai::is::mode::token_truncate: w = std::min(wt, hi); break;
          case cai::is::mode::token_mask: w = (wt >= lo && wt <= hi) ? wt : 0.0; break;
          case cai::is::mode::sequence_truncate: w = std::min(std::exp(lr_sum), hi); break;
          default: {
            const double gm = std::exp(lr_sum / cnt);
            w = (gm >= lo && gm <= hi) ? wt : 0.0;
          }
        }
        s += l * w;
        n += 1;
      }
    }
    cai::ppo_objective<> obj{.rollout = {m, lo, hi}};
    std::vector<double> g(d.x.size());
    cai::policy_batch<double> in{.logp = cai::make_view(d.x.data(), {d.B, d.T}), .old_logp = cai::make_view(d.o.data(), {d.B, d.T}),
                                 .advantages = cai::make_view(d.A.data(), {d.B, d.T}), .mask = cai::make_view(d.m.data(), {d.B, d.T}),
                                 .rollout_logp = cai::make_view(beh.data(), {d.B, d.T})};
    const auto res = cai::policy_loss(cai::host{}, obj, in, {.dlogp = cai::make_view(g.data(), {d.B, d.T})});
    INFO("mode " << static_cast<int>(m));
    REQUIRE(res.loss == Approx(s / n).epsilon(1e-12).margin(1e-15));
    // Finite differences (the weights do not depend on logp).
    std::vector<double> xp = d.x, xm = d.x, u(d.x.size());
    double gu = 0.0;
    for (std::size_t i = 0; i < u.size(); ++i) u[i] = nd(rng), gu += g[i] * u[i], xp[i] += 1e-6 * u[i], xm[i] -= 1e-6 * u[i];
    auto at = [&](const std::vector<double>& xx) {
      auto in2 = in;
      in2.logp = cai::make_view(xx.data(), {d.B, d.T});
      return cai::policy_loss(cai::host{}, obj, in2).loss;
    };
    REQUIRE(gu == Approx((at(xp) - at(xm)) / 2e-6).epsilon(1e-6).margin(1e-9));
  }
  CAI_REQUIRE_THROWS_NAMING((cai::policy_loss(cai::host{}, cai::ppo_objective<>{.rollout = {cai::is::mode::token_mask, 0.5, 2.0}},
                                              cai::policy_batch<double>{.logp = cai::make_view(d.x.data(), {d.B, d.T}),
                                                                        .old_logp = cai::make_view(d.o.data(), {d.B, d.T}),
                                                                        .advantages = cai::make_view(d.A.data(), {d.B, d.T})})),
                            cai::error, "rollout_logp");
}

TEST_CASE("SAPO and GSPO values follow their definitions", "[ppo]") {
  const batch_data d = make_batch(4, 6, 12, 0.3);
  cai::policy_batch<double> in{.logp = cai::make_view(d.x.data(), {4, 6}), .old_logp = cai::make_view(d.o.data(), {4, 6}),
                               .advantages = cai::make_view(d.A.data(), {4, 6}), .mask = cai::make_view(d.m.data(), {4, 6})};
  double sapo = 0.0, gspo = 0.0, n = 0.0, S = 0.0;
  for (std::int64_t b = 0; b < 4; ++b) {
    double lr = 0.0, c = 0.0;
    for (std::int64_t t = 0; t < 6; ++t) {
      const auto i = static_cast<std::size_t>(b * 6 + t);
      if (d.m[i]) lr += d.x[i] - d.o[i], c += 1;
    }
    if (c == 0) continue;
    S += 1;
    const double sr = std::exp(lr / c);
    double row = 0.0;
    for (std::int64_t t = 0; t < 6; ++t) {
      const auto i = static_cast<std::size_t>(b * 6 + t);
      if (!d.m[i]) continue;
      const double r = std::exp(d.x[i] - d.o[i]), tau = d.A[i] > 0 ? 1.0 : 1.05;
      sapo += -d.A[i] * (4.0 / tau) / (1.0 + std::exp(-tau * (r - 1.0)));
      n += 1;
      row += -std::min(sr * d.A[i], std::clamp(sr, 1 - 3e-4, 1 + 4e-4) * d.A[i]);
    }
    gspo += row / c;
  }
  REQUIRE(cai::policy_loss(cai::host{}, cai::ppo_objective<cai::pg::sapo>{}, in).loss == Approx(sapo / n).epsilon(1e-12));
  REQUIRE(cai::policy_loss(cai::host{}, cai::ppo_objective<cai::pg::gspo, cai::kl::none, cai::agg::seq_mean_token_mean>{}, in).loss ==
          Approx(gspo / S).epsilon(1e-12));
}

TEST_CASE("OPO, GPG, ReMax, REINFORCE++ and its baseline follow their definitions", "[advantages]") {
  std::vector<double> s{1.0, 0.0, 3.0, 2.0, 0.0, 0.0}, base{0.5, 0.5, 1.0, 1.0, 0.0, std::nan("")}, a(6 * 3), seq(6);
  std::vector<std::uint8_t> m{1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1};
  cai::advantage_inputs<double> in{.scores = cai::make_view(s.data(), {6}), .baseline_scores = cai::make_view(base.data(), {6}),
                                   .mask = cai::make_view(m.data(), {6, 3}), .group_size = 3};
  cai::advantage_outputs<double> out{.advantages = cai::make_view(a.data(), {6, 3}), .sequence_advantages = cai::make_view(seq.data(), {6})};
  cai::advantages(cai::host{}, cai::adv::opo{}, in, out);
  const double b0 = (2 * 1.0 + 1 * 0.0 + 3 * 3.0) / 6.0;  // lengths 2, 1, 3
  REQUIRE(seq[0] == Approx(1.0 - b0));
  REQUIRE(seq[2] == Approx(3.0 - b0));
  REQUIRE(a[2] == 0.0);  // masked token
  cai::advantages(cai::host{}, cai::adv::gpg{}, in, out);
  const double alpha = 6.0 / 3.0;  // three non-zero scores in six
  REQUIRE(seq[3] == Approx(alpha * (2.0 - 2.0 / 3)));
  cai::advantages(cai::host{}, cai::adv::remax{}, in, out);
  REQUIRE(seq[0] == Approx(0.5));
  REQUIRE(seq[5] == 0.0);  // NaN baseline: unscored
  cai::advantages(cai::host{}, cai::adv::reinforce_pp_baseline{}, in, out);
  // Whitened over counted tokens of (s - group mean): mean 0, unit (Bessel) variance.
  double sum = 0, sq = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (m[i]) sum += a[i], sq += a[i] * a[i], n += 1;
  REQUIRE(sum / n == Approx(0.0).margin(1e-12));
  REQUIRE((sq - sum * sum / n) / (n - 1) == Approx(1.0).epsilon(1e-6));
  // REINFORCE++: discounted returns of token rewards, then whitening.
  std::vector<double> r(18, 0.0), ret(18);
  for (int i = 0; i < 18; ++i) r[static_cast<std::size_t>(i)] = 0.1 * i;
  cai::advantage_inputs<double> tin{.token_rewards = cai::make_view(r.data(), {6, 3}), .mask = cai::make_view(m.data(), {6, 3})};
  cai::advantages(cai::host{}, cai::adv::reinforce_pp{0.9}, tin, {.advantages = cai::make_view(a.data(), {6, 3}), .returns = cai::make_view(ret.data(), {6, 3})});
  REQUIRE(ret[3] == Approx(0.3));                    // row 1: only token 0 counted
  REQUIRE(ret[6] == Approx(0.6 + 0.9 * (0.7 + 0.9 * 0.8)));  // row 2: all counted
  REQUIRE(ret[0] == Approx(0.0 + 0.9 * 0.1));        // row 0: tokens 0, 1
}
