// Thrust paths of cai/kernels/batched.hpp [thrust], built with g++ against Thrust's OpenMP system (no GPU needed):
// every result must equal the host path (cai::host) bit for bit, since both run the same CAI_HD functions in the
// same order. The CUDA build of the same header is exercised by tests/kernels/cuda_algorithms.*.
#include <catch2/catch.hpp>

#include <thrust/system/omp/execution_policy.h>

#include <cai/algorithms/advantages.hpp>
#include <cai/algorithms/dpo.hpp>
#include <cai/algorithms/ppo.hpp>
#include <cai/algorithms/preference.hpp>
#include <cai/algorithms/stats.hpp>
#include <cai/core/host.hpp>
#include <cai/kernels/batched.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace {

const auto omp = thrust::omp::par;

struct token_data {
  std::int64_t B = 0, T = 0;
  std::vector<double> x;
  std::vector<std::uint8_t> mask;
  std::vector<std::int64_t> cu;  // packed layout when non-empty (then B = 1, T = N)
};

token_data random_tokens(std::int64_t B, std::int64_t T, std::uint32_t seed, double keep = 0.7) {
  token_data d{B, T, {}, {}, {}};
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd(0.5, 2.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (std::int64_t i = 0; i < B * T; ++i) {
    d.x.push_back(nd(gen));
    d.mask.push_back(u(gen) < keep ? 1 : 0);
  }
  return d;
}

cai::row_layout layout_of(const token_data& d) {
  if (d.cu.empty()) return cai::row_layout{d.B, d.T, nullptr};
  std::int64_t widest = 0;
  for (std::size_t b = 1; b < d.cu.size(); ++b) widest = std::max(widest, d.cu[b] - d.cu[b - 1]);
  return cai::row_layout{static_cast<std::int64_t>(d.cu.size()) - 1, widest, d.cu.data()};
}

template <class T>
cai::batched::rows_of<const T> rows(const std::vector<T>& v, std::int64_t stride) {
  return {v.data(), stride};
}

bool same(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same(const cai::moments& a, const cai::moments& b) {
  return a.count == b.count && same(a.mean, b.mean) && same(a.m2, b.m2);
}

cai::stats_options stats_opt(const token_data& d) {
  cai::stats_options o;
  if (!d.cu.empty()) o.cu_seqlens = cai::make_view(d.cu.data(), {static_cast<std::int64_t>(d.cu.size())});
  return o;
}

}  // namespace

TEST_CASE("batched moments, whitening and sequence sums equal the host path bit for bit", "[thrust][stats]") {
  token_data padded = random_tokens(37, 53, 1);
  token_data packed = random_tokens(1, 700, 2);
  packed.cu = {0, 5, 5, 300, 301, 640, 700};
  for (const token_data* d : {&padded, &packed}) {
    const cai::row_layout L = layout_of(*d);
    const auto X = cai::make_view(d->x.data(), {d->B, d->T});
    const auto M = cai::make_view(d->mask.data(), {d->B, d->T});
    std::vector<cai::moments> rm(static_cast<std::size_t>(L.rows)), host_rm(rm.size());
    cai::batched::row_moments(omp, rows(d->x, d->T), rows(d->mask, d->T), L, rm.data());
    cai::row_moments(cai::host{}, X, M, cai::make_view(host_rm.data(), {L.rows}), stats_opt(*d));
    for (std::size_t b = 0; b < rm.size(); ++b) REQUIRE(same(rm[b], host_rm[b]));
    cai::moments all;
    cai::batched::fold_moments(omp, rm.data(), L.rows, &all);
    const cai::moments host_all = cai::masked_moments(cai::host{}, X, M, stats_opt(*d));
    REQUIRE(same(all, host_all));
    REQUIRE(all.count > 0);

    for (const bool per_row : {false, true})
      for (const bool shift : {true, false}) {
        cai::whiten_options o;
        o.per_row = per_row;
        o.shift_mean = shift;
        o.cu_seqlens = stats_opt(*d).cu_seqlens;
        std::vector<double> w(d->x.size(), -1.0), host_w(d->x.size(), -2.0);
        cai::batched::whiten(omp, rows(d->x, d->T), rows(d->mask, d->T), L, per_row ? rm.data() : &all, o,
                             cai::batched::rows_of<double>{w.data(), d->T});
        cai::whiten(cai::host{}, X, M, cai::make_view(host_w.data(), {d->B, d->T}), o);
        for (std::size_t i = 0; i < w.size(); ++i) REQUIRE(same(w[i], host_w[i]));
      }

    std::vector<double> sums(static_cast<std::size_t>(L.rows)), means(sums.size());
    cai::batched::row_sums(omp, rows(d->x, d->T), rows(d->mask, d->T), L, sums.data(), means.data());
    for (std::int64_t b = 0; b < L.rows; ++b) {  // independent: a plain loop over the row
      double s = 0.0;
      std::int64_t c = 0;
      const std::int64_t begin = d->cu.empty() ? b * d->T : d->cu[static_cast<std::size_t>(b)];
      for (std::int64_t t = 0; t < L.length(b); ++t)
        if (d->mask[static_cast<std::size_t>(begin + t)]) {
          s += d->x[static_cast<std::size_t>(begin + t)];
          ++c;
        }
      REQUIRE(same(sums[static_cast<std::size_t>(b)], s));
      REQUIRE(same(means[static_cast<std::size_t>(b)], c ? s / static_cast<double>(c) : 0.0));
    }
  }
}

TEMPLATE_TEST_CASE("batched group advantages equal cai::advantages bit for bit", "[thrust][advantages]",
                   cai::adv::grpo, cai::adv::dr_grpo, cai::adv::rloo, cai::adv::gpg) {
  const std::int64_t B = 24, G = 4, T = 9;
  std::mt19937 gen(7);
  std::normal_distribution<double> nd;
  std::vector<double> scores(static_cast<std::size_t>(B));
  for (auto& s : scores) s = nd(gen);
  scores[1] = std::numeric_limits<double>::quiet_NaN();           // unscored sample
  for (int i : {8, 9, 10}) scores[static_cast<std::size_t>(i)] = std::numeric_limits<double>::quiet_NaN();  // singleton group
  for (int i : {12, 13, 14, 15}) scores[static_cast<std::size_t>(i)] = 0.25;  // flat group
  scores[20] = 0.0;
  const token_data toks = random_tokens(B, T, 8);
  std::vector<TestType> ests{TestType{}};
  if constexpr (std::is_same_v<TestType, cai::adv::grpo>) {
    ests.push_back(cai::adv::grpo{.std_scale = cai::adv::scale::batch, .eps = 1e-4});
    ests.push_back(cai::adv::grpo{.std_scale = cai::adv::scale::none});
  }
  if constexpr (std::is_same_v<TestType, cai::adv::gpg>) ests.push_back(cai::adv::gpg{.f_norm = 0.5});
  for (const TestType& est : ests) {
    std::vector<double> scratch(cai::batched::group_advantages_scratch), a(static_cast<std::size_t>(B), -1.0);
    cai::batched::group_advantages(omp, est, scores.data(), B, G, scratch.data(), cai::batched::group_advantages_scratch,
                                   a.data());
    std::vector<double> tok(static_cast<std::size_t>(B * T), -1.0), seq(static_cast<std::size_t>(B), -1.0);
    const cai::row_layout L{B, T, nullptr};
    cai::batched::broadcast_rows(omp, a.data(), rows(toks.mask, T), L, cai::batched::rows_of<double>{tok.data(), T},
                                 seq.data());
    std::vector<double> host_tok(tok.size()), host_seq(seq.size());
    cai::advantages(cai::host{}, est,
                    {.scores = cai::make_view(scores.data(), {B}), .mask = cai::make_view(toks.mask.data(), {B, T}),
                     .group_size = G},
                    {.advantages = cai::make_view(host_tok.data(), {B, T}),
                     .sequence_advantages = cai::make_view(host_seq.data(), {B})});
    for (std::size_t i = 0; i < tok.size(); ++i) REQUIRE(same(tok[i], host_tok[i]));
    for (std::size_t i = 0; i < seq.size(); ++i) REQUIRE(same(seq[i], host_seq[i]));
  }
}

namespace {

struct pair_data {
  std::int64_t n = 0;
  std::vector<double> pc, pr, rc, rr, w;
  std::vector<std::int64_t> lc, lr;
};

pair_data random_pairs(std::int64_t n, std::uint32_t seed) {
  pair_data d;
  d.n = n;
  std::mt19937 gen(seed);
  std::normal_distribution<double> lp(-40.0, 8.0);
  std::uniform_real_distribution<double> u(0.2, 1.5);
  std::uniform_int_distribution<std::int64_t> len(0, 60);
  for (std::int64_t i = 0; i < n; ++i) {
    d.pc.push_back(lp(gen));
    d.pr.push_back(lp(gen));
    d.rc.push_back(lp(gen));
    d.rr.push_back(lp(gen));
    d.w.push_back(u(gen));
    d.lc.push_back(len(gen));
    d.lr.push_back(len(gen));
  }
  return d;
}

template <class Spec>
void check_pair_loss(const Spec& spec, const pair_data& d, bool weights) {
  const std::int64_t n = d.n;
  cai::batched::pair_batch<double> in{d.pc.data(), d.pr.data(), d.rc.data(), d.rr.data(), weights ? d.w.data() : nullptr,
                                      d.lc.data(), d.lr.data(), n};
  std::vector<double> g[5];
  for (auto& v : g) v.assign(static_cast<std::size_t>(n), -7.0);
  double total[6];
  std::vector<double> scratch(static_cast<std::size_t>(cai::batched::pair_loss_scratch(n)));
  cai::batched::pair_loss(omp, spec, in, {g[0].data(), g[1].data(), g[2].data(), g[3].data(), g[4].data(), total},
                          scratch.data(), static_cast<std::int64_t>(scratch.size()));
  std::vector<double> h[5];
  for (auto& v : h) v.assign(static_cast<std::size_t>(n), -9.0);
  const auto view = [n](const std::vector<double>& v) { return cai::make_view(v.data(), {n}); };
  cai::dpo_batch<double> hb{view(d.pc), view(d.pr), view(d.rc), view(d.rr), cai::make_view(d.lc.data(), {n}),
                            cai::make_view(d.lr.data(), {n}), {}};
  if (weights) hb.weights = view(d.w);
  const auto mview = [n](std::vector<double>& v) { return cai::make_view(v.data(), {n}); };
  const cai::preference_result r =
      cai::dpo_loss(cai::host{}, spec, hb, {mview(h[0]), mview(h[1]), mview(h[2]), mview(h[3]), mview(h[4])});
  REQUIRE(same(total[0], r.loss));
  REQUIRE(total[1] == static_cast<double>(r.metrics.count));
  REQUIRE(same(total[2], r.metrics.chosen));
  REQUIRE(same(total[3], r.metrics.rejected));
  REQUIRE(same(total[4], r.metrics.margin));
  REQUIRE(same(total[5], r.metrics.accuracy));
  for (int k = 0; k < 5; ++k)
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) REQUIRE(same(g[k][i], h[k][i]));
}

}  // namespace

TEST_CASE("batched DPO-family pair losses equal cai::dpo_loss bit for bit", "[thrust][dpo]") {
  namespace dpo = cai::dpo;
  const pair_data d = random_pairs(41, 3);
  for (const bool weights : {false, true}) {
    check_pair_loss(dpo::sigmoid{.beta = 0.1}, d, weights);
    check_pair_loss(dpo::robust{.beta = 0.2, .label_smoothing = 0.1}, d, weights);
    check_pair_loss(dpo::ipo{.beta = 0.3}, d, weights);
    check_pair_loss(dpo::sigmoid_norm{.beta = 0.5}, d, weights);
    check_pair_loss(dpo::mix{dpo::hinge{.beta = 0.1}, dpo::exo_pair{.beta = 0.1, .label_smoothing = 0.05},
                             dpo::apo_down{.beta = 0.1}}
                        .weighted(1.0, 0.5, 0.25),
                    d, weights);
    check_pair_loss(dpo::with_divergence<dpo::sigmoid, cai::fdiv::js_divergence>{dpo::sigmoid{.beta = 0.1}, {}}, d, weights);
  }
}

TEST_CASE("batched Bradley-Terry equals cai::bradley_terry_loss bit for bit", "[thrust][preference]") {
  const pair_data d = random_pairs(29, 9);
  const std::int64_t n = d.n;
  std::vector<double> margin(d.pc.size()), labels(d.pc.size());
  for (std::size_t i = 0; i < margin.size(); ++i) {
    margin[i] = 0.1 * static_cast<double>(i % 3);
    labels[i] = 0.5 + 0.4 * std::sin(static_cast<double>(i));
  }
  for (const bool soft : {false, true}) {
    const cai::bradley_terry_options o{.center_coef = 0.01, .l2_coef = 0.001};
    std::vector<double> gc(d.pc.size()), gr(gc.size()), ls(gc.size()), scratch(gc.size());
    double total[6];
    cai::batched::bradley_terry(omp, cai::batched::reward_pairs<double>{d.pc.data(), d.pr.data(), margin.data(),
                                                                        soft ? labels.data() : nullptr, n},
                                o, gc.data(), gr.data(), ls.data(), total, scratch.data(), n);
    std::vector<double> hc(gc.size()), hr(gc.size()), hl(gc.size());
    const auto v = [n](const std::vector<double>& y) { return cai::make_view(y.data(), {n}); };
    cai::reward_pair_batch<double> in{v(d.pc), v(d.pr), v(margin), {}};
    if (soft) in.labels = v(labels);
    const auto r = cai::bradley_terry_loss(cai::host{}, in,
                                           {cai::make_view(hc.data(), {n}), cai::make_view(hr.data(), {n}),
                                            cai::make_view(hl.data(), {n})},
                                           o);
    REQUIRE(same(total[0], r.loss));
    REQUIRE(same(total[5], r.metrics.accuracy));
    REQUIRE(same(total[4], r.metrics.margin));
    for (std::size_t i = 0; i < gc.size(); ++i) {
      REQUIRE(same(gc[i], hc[i]));
      REQUIRE(same(gr[i], hr[i]));
      REQUIRE(same(ls[i], hl[i]));
    }
  }
}

namespace {

template <class Clip, class Agg>
void check_surrogate(const Clip& clip, const Agg& agg, const token_data& d, std::uint32_t seed) {
  const std::int64_t B = d.B, T = d.T;
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd;
  std::vector<double> x(d.x.size()), o(d.x.size()), A(d.x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = -2.0 + 0.3 * nd(gen);
    o[i] = x[i] + 0.25 * nd(gen);
    A[i] = nd(gen);
  }
  const cai::row_layout L{B, T, nullptr};
  const cai::batched::token_batch<double> in{rows(x, T), rows(o, T), rows(A, T), rows(d.mask, T), L};
  std::vector<double> g(x.size(), -3.0), scratch(static_cast<std::size_t>(cai::batched::surrogate_loss_scratch(B)));
  double total[3];
  cai::batched::surrogate_loss(omp, clip, agg, 20.0, in, cai::batched::rows_of<double>{g.data(), T}, total, scratch.data(),
                               static_cast<std::int64_t>(scratch.size()));
  std::vector<double> hg(x.size(), -4.0);
  const auto v = [&](const std::vector<double>& y) { return cai::make_view(y.data(), {B, T}); };
  const auto r = cai::policy_loss(cai::host{}, cai::ppo_objective<Clip, cai::kl::none, Agg>{.clip = clip, .agg = agg},
                                  {.logp = v(x), .old_logp = v(o), .advantages = v(A), .mask = cai::make_view(d.mask.data(), {B, T})},
                                  {.dlogp = cai::make_view(hg.data(), {B, T})});
  REQUIRE(same(total[0], r.pg_loss));
  REQUIRE(total[1] == static_cast<double>(r.metrics.tokens));
  REQUIRE(same(total[2], r.metrics.clip_fraction));
  if constexpr (!std::is_same_v<Clip, cai::pg::sapo>) REQUIRE(r.metrics.clip_fraction > 0.0);  // sapo never clips
  for (std::size_t i = 0; i < g.size(); ++i) REQUIRE(same(g[i], hg[i]));
}

}  // namespace

TEST_CASE("batched token surrogates equal the surrogate part of cai::policy_loss bit for bit", "[thrust][ppo]") {
  token_data d = random_tokens(19, 31, 5);
  for (int t = 0; t < 31; ++t) d.mask[static_cast<std::size_t>(4 * 31 + t)] = 0;  // a row with no counted token
  check_surrogate(cai::pg::ppo_clip{}, cai::agg::token_mean{}, d, 1);
  check_surrogate(cai::pg::ppo_clip{.eps_low = 0.2, .eps_high = 0.28}, cai::agg::seq_mean_token_mean{}, d, 2);
  check_surrogate(cai::pg::dual_clip{}, cai::agg::seq_mean_token_sum{}, d, 3);
  check_surrogate(cai::pg::cispo{}, cai::agg::seq_mean_token_sum_norm{}, d, 4);
  check_surrogate(cai::pg::sapo{}, cai::agg::token_mean{.global_tokens = 1000.0}, d, 5);
}

TEST_CASE("batched calls reject a workspace that is too small and a group size that does not divide the batch",
          "[thrust]") {
  std::vector<double> scores(6, 1.0), a(6), scratch(1);
  REQUIRE_THROWS_WITH(cai::batched::group_advantages(omp, cai::adv::grpo{}, scores.data(), 6, 2, scratch.data(), 1, a.data()),
                      Catch::Contains("'scratch'") && Catch::Contains("group_advantages"));
  REQUIRE_THROWS_WITH(cai::batched::group_advantages(omp, cai::adv::grpo{}, scores.data(), 6, 4, scratch.data(), 2, a.data()),
                      Catch::Contains("'group_size'"));
  const pair_data d = random_pairs(3, 1);
  const cai::batched::pair_batch<double> in{d.pc.data(), d.pr.data(), d.rc.data(), d.rr.data(), nullptr, nullptr, nullptr, 3};
  std::vector<double> small(static_cast<std::size_t>(cai::batched::pair_loss_scratch(3) - 1));
  REQUIRE_THROWS_WITH(cai::batched::pair_loss(omp, cai::dpo::sigmoid{}, in, {}, small.data(), static_cast<std::int64_t>(small.size())),
                      Catch::Contains("'scratch'"));
}
