// Tests for cai/algorithms/sequence_logps.hpp: sums and means against an fp64 reference written as explicit lists of
// counted positions; the pair rules (divergence start, LD-DPO tail weights) against a reference that builds each
// side's token list first; backwards against finite differences; bad input.
#include <cai/algorithms/sequence_logps.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "../support.hpp"
#include "sequence_batch.hpp"

namespace {

/// Counted positions of row b from position `start` on.
std::vector<std::int64_t> counted_positions(const std::vector<std::uint8_t>& mask, std::int64_t T, std::int64_t b,
                                            std::int64_t start) {
  std::vector<std::int64_t> out;
  for (std::int64_t t = start; t < T; ++t)
    if (mask[static_cast<std::size_t>(b * T + t)]) out.push_back(t);
  return out;
}

/// Reference: weights 1 for the first `shared` listed positions, alpha after; the mean divides by the list size.
double reference_reduce(const std::vector<double>& x, std::int64_t T, std::int64_t b, const std::vector<std::int64_t>& pos,
                        std::size_t shared, double alpha, bool mean) {
  long double s = 0;
  for (std::size_t k = 0; k < pos.size(); ++k)
    s += static_cast<long double>(k < shared ? 1.0 : alpha) * static_cast<long double>(x[static_cast<std::size_t>(b * T + pos[k])]);
  if (mean) s = pos.empty() ? 0.0L : s / static_cast<long double>(pos.size());
  return static_cast<double>(s);
}

template <class R>
std::vector<R> as(const std::vector<float>& v) {
  return std::vector<R>(v.begin(), v.end());
}

}  // namespace

TEMPLATE_TEST_CASE("sequence_logps sums and means the counted tokens, padded and packed", "[preference][sequence_logps]", float, double) {
  using R = TestType;
  const auto sb = cai_test::make_seq_batch(27, 13, 5);
  const auto x = as<R>(cai_test::normal_floats(static_cast<std::size_t>(sb.B * sb.T), 2.0f, 6));
  const std::vector<double> xd(x.begin(), x.end());
  const auto xv = cai::make_view(x.data(), {sb.B, sb.T});
  const auto mv = cai::make_view(sb.mask.data(), {sb.B, sb.T});
  for (const auto mode : {cai::seq_reduce::sum, cai::seq_reduce::mean}) {
    const bool mean = mode == cai::seq_reduce::mean;
    std::vector<R> out(static_cast<std::size_t>(sb.B), R(-7)), packed(static_cast<std::size_t>(sb.B), R(-7));
    cai::sequence_logps(cai::host{}, xv, mv, cai::make_view(out.data(), {sb.B}), {.reduce = mode});
    const auto xp = sb.pack(x);
    cai::sequence_logps(cai::threaded_host{}, cai::packed(cai::make_view(xp.data(), {sb.N()})),
                        cai::packed(cai::make_view(sb.pmask.data(), {sb.N()})), cai::make_view(packed.data(), {sb.B}),
                        {.reduce = mode, .cu_seqlens = sb.cu_view()});
    const double tol = std::is_same_v<R, float> ? 2e-6 : 1e-14;
    for (std::int64_t b = 0; b < sb.B; ++b) {
      const auto pos = counted_positions(sb.mask, sb.T, b, 0);
      const double ref = reference_reduce(xd, sb.T, b, pos, pos.size(), 1.0, mean);
      INFO("row " << b << " mean " << mean);
      CHECK(std::fabs(static_cast<double>(out[static_cast<std::size_t>(b)]) - ref) <= tol * (1.0 + std::fabs(ref) + static_cast<double>(pos.size())));
      CHECK(packed[static_cast<std::size_t>(b)] == out[static_cast<std::size_t>(b)]);  // same order, same bits
    }
  }
}

TEST_CASE("sequence_logps_backward is the gradient of sequence_logps along random directions", "[preference][sequence_logps]") {
  const auto sb = cai_test::make_seq_batch(18, 11, 9);
  const auto xf = cai_test::normal_floats(static_cast<std::size_t>(sb.B * sb.T), 1.0f, 10);
  std::vector<double> x(xf.begin(), xf.end());
  const auto mv = cai::make_view(sb.mask.data(), {sb.B, sb.T});
  std::mt19937_64 gen(11);
  std::normal_distribution<double> nd;
  for (const auto mode : {cai::seq_reduce::sum, cai::seq_reduce::mean}) {
    std::vector<double> up(static_cast<std::size_t>(sb.B)), g(x.size(), 99.0), dir(x.size());
    for (auto& u : up) u = nd(gen);
    for (auto& d : dir) d = nd(gen);
    cai::sequence_logps_backward(cai::host{}, cai::make_view(x.data(), {sb.B, sb.T}), mv, cai::make_view<const double>(up.data(), {sb.B}),
                                 cai::make_view(g.data(), {sb.B, sb.T}), {.reduce = mode});
    const auto objective = [&](double h) {
      std::vector<double> xs(x), o(static_cast<std::size_t>(sb.B));
      for (std::size_t i = 0; i < xs.size(); ++i) xs[i] += h * dir[i];
      cai::sequence_logps(cai::host{}, cai::make_view(xs.data(), {sb.B, sb.T}), mv, cai::make_view(o.data(), {sb.B}), {.reduce = mode});
      double s = 0;
      for (std::size_t i = 0; i < o.size(); ++i) s += up[i] * o[i];
      return s;
    };
    const double h = 1e-4, fd = (objective(h) - objective(-h)) / (2 * h);
    double an = 0;
    for (std::size_t i = 0; i < x.size(); ++i) an += g[i] * dir[i];
    CHECK(std::fabs(an - fd) <= 1e-8 * (1 + std::fabs(fd)));
    for (std::int64_t b = 0; b < sb.B; ++b)
      for (std::int64_t t = 0; t < sb.T; ++t)
        if (!sb.counted(b, t)) CHECK(g[static_cast<std::size_t>(b * sb.T + t)] == 0.0);  // padding gets an exact 0
  }
}

TEST_CASE("pair_sequence_logps counts from the first differing token and weighs the LD-DPO tail", "[preference][sequence_logps]") {
  const std::int64_t B = 40, Tc = 12, Tr = 9;
  std::mt19937_64 gen(21);
  auto uni = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen); };
  // Shared prompt of random length, then answers that differ from a random position (or never, within Tr).
  std::vector<std::int64_t> ci(static_cast<std::size_t>(B * Tc)), ri(static_cast<std::size_t>(B * Tr));
  std::vector<std::uint8_t> cm(ci.size(), 0), rm(ri.size(), 0);
  std::vector<std::int64_t> diverge(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t d = b % 7 == 3 ? Tr : uni(0, Tr - 1);  // b % 7 == 3: rejected is a prefix of chosen
    diverge[static_cast<std::size_t>(b)] = d;
    const std::int64_t prompt = uni(1, 4), lc = uni(prompt, Tc), lr = uni(prompt, Tr);
    for (std::int64_t t = 0; t < Tc; ++t) ci[static_cast<std::size_t>(b * Tc + t)] = 100 + t;
    for (std::int64_t t = 0; t < Tr; ++t) ri[static_cast<std::size_t>(b * Tr + t)] = t < d ? 100 + t : 500 + t;
    for (std::int64_t t = prompt; t < lc; ++t) cm[static_cast<std::size_t>(b * Tc + t)] = 1;
    for (std::int64_t t = prompt; t < lr; ++t) rm[static_cast<std::size_t>(b * Tr + t)] = 1;
    if (b % 9 == 5) std::fill(rm.begin() + b * Tr, rm.begin() + (b + 1) * Tr, std::uint8_t{0});  // empty rejected
  }
  const auto cf = cai_test::normal_floats(ci.size(), 1.5f, 22), rf = cai_test::normal_floats(ri.size(), 1.5f, 23);
  const std::vector<double> cx(cf.begin(), cf.end()), rx(rf.begin(), rf.end());
  const cai::token_side<double> cs{cai::make_view(cx.data(), {B, Tc}), cai::make_view(cm.data(), {B, Tc}), cai::make_view(ci.data(), {B, Tc})};
  const cai::token_side<double> rs{cai::make_view(rx.data(), {B, Tr}), cai::make_view(rm.data(), {B, Tr}), cai::make_view(ri.data(), {B, Tr})};
  for (const bool div : {false, true})
    for (const double alpha : {1.0, 0.5, 0.0})
      for (const auto mode : {cai::seq_reduce::sum, cai::seq_reduce::mean}) {
        const bool mean = mode == cai::seq_reduce::mean;
        std::vector<double> oc(static_cast<std::size_t>(B)), orj(static_cast<std::size_t>(B));
        const cai::pair_logps_options opt{.reduce = mode, .from_divergence = div, .ld_alpha = alpha};
        cai::pair_sequence_logps(cai::host{}, cs, rs, {cai::make_view(oc.data(), {B}), cai::make_view(orj.data(), {B})}, opt);
        for (std::int64_t b = 0; b < B; ++b) {
          const std::int64_t start = div ? diverge[static_cast<std::size_t>(b)] : 0;
          const auto pc = counted_positions(cm, Tc, b, start), pr = counted_positions(rm, Tr, b, start);
          const std::size_t shared = alpha == 1.0 ? std::max(pc.size(), pr.size()) : std::min(pc.size(), pr.size());
          INFO("row " << b << " divergence " << div << " alpha " << alpha << " mean " << mean);
          CHECK(std::fabs(oc[static_cast<std::size_t>(b)] - reference_reduce(cx, Tc, b, pc, shared, alpha, mean)) <= 1e-13);
          CHECK(std::fabs(orj[static_cast<std::size_t>(b)] - reference_reduce(rx, Tr, b, pr, shared, alpha, mean)) <= 1e-13);
        }
        // The backward along a random direction (both sides at once).
        std::vector<double> uc(static_cast<std::size_t>(B)), ur(static_cast<std::size_t>(B)), gc(cx.size(), 5.0), gr(rx.size(), 5.0);
        std::normal_distribution<double> nd;
        for (auto& u : uc) u = nd(gen);
        for (auto& u : ur) u = nd(gen);
        cai::pair_sequence_logps_backward(cai::host{}, cs, rs, cai::make_view<const double>(uc.data(), {B}),
                                          cai::make_view<const double>(ur.data(), {B}),
                                          {cai::make_view(gc.data(), {B, Tc}), cai::make_view(gr.data(), {B, Tr})}, opt);
        std::vector<double> dc(cx.size()), dr(rx.size());
        for (auto& d : dc) d = nd(gen);
        for (auto& d : dr) d = nd(gen);
        const auto objective = [&](double h) {
          std::vector<double> a(cx), c(rx), o1(static_cast<std::size_t>(B)), o2(static_cast<std::size_t>(B));
          for (std::size_t i = 0; i < a.size(); ++i) a[i] += h * dc[i];
          for (std::size_t i = 0; i < c.size(); ++i) c[i] += h * dr[i];
          const cai::token_side<double> s1{cai::make_view(a.data(), {B, Tc}), cs.mask, cs.ids}, s2{cai::make_view(c.data(), {B, Tr}), rs.mask, rs.ids};
          cai::pair_sequence_logps(cai::host{}, s1, s2, {cai::make_view(o1.data(), {B}), cai::make_view(o2.data(), {B})}, opt);
          double s = 0;
          for (std::size_t i = 0; i < o1.size(); ++i) s += uc[i] * o1[i] + ur[i] * o2[i];
          return s;
        };
        const double h = 1e-4, fd = (objective(h) - objective(-h)) / (2 * h);
        double an = 0;
        for (std::size_t i = 0; i < gc.size(); ++i) an += gc[i] * dc[i];
        for (std::size_t i = 0; i < gr.size(); ++i) an += gr[i] * dr[i];
        CHECK(std::fabs(an - fd) <= 1e-8 * (1 + std::fabs(fd)));
      }
}

TEST_CASE("sequence_logps rejects bad input naming the argument", "[preference][sequence_logps]") {
  const cai::host h;
  std::vector<float> x(12, -1.0f), o(3);
  std::vector<std::uint8_t> m(12, 1);
  const auto xv = cai::make_view(x.data(), {3, 4});
  CAI_REQUIRE_THROWS_NAMING(cai::sequence_logps(h, xv, cai::make_view(m.data(), {4, 3}), cai::make_view(o.data(), {3})), cai::shape_error, "cai::sequence_logps", "'mask'");
  CAI_REQUIRE_THROWS_NAMING(cai::sequence_logps(h, xv, cai::no_mask, cai::make_view(o.data(), {2})), cai::shape_error, "'out'", "one value per sequence (3)");
  m[5] = 2;
  CAI_REQUIRE_THROWS_NAMING(cai::sequence_logps(h, xv, cai::make_view(m.data(), {3, 4}), cai::make_view(o.data(), {3})), cai::invalid_argument, "'mask'", "values 0 or 1");
  m[5] = 1;
  x[6] = std::numeric_limits<float>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING(cai::sequence_logps(h, xv, cai::make_view(m.data(), {3, 4}), cai::make_view(o.data(), {3})), cai::invalid_argument, "'logp'", "row 1, token 2");
  m[6] = 0;  // a NaN at a token that does not count is never read
  CHECK_NOTHROW(cai::sequence_logps(h, xv, cai::make_view(m.data(), {3, 4}), cai::make_view(o.data(), {3})));
  x[6] = -1.0f;
  std::vector<float> up{1, 2, 3}, g(12);
  CAI_REQUIRE_THROWS_NAMING(cai::sequence_logps_backward(h, xv, cai::no_mask, cai::make_view<const float>(up.data(), {3}), cai::make_view(g.data(), {4, 3})), cai::shape_error, "'dlogp'");
  up[1] = std::numeric_limits<float>::infinity();
  CAI_REQUIRE_THROWS_NAMING(cai::sequence_logps_backward(h, xv, cai::no_mask, cai::make_view<const float>(up.data(), {3}), cai::make_view(g.data(), {3, 4})), cai::invalid_argument, "'dout'");

  std::vector<float> r(8, -1.0f), oc(3), orj(3);
  const cai::token_side<float> cs{cai::make_view<const float>(x.data(), {3, 4})}, rs{cai::make_view<const float>(r.data(), {2, 4})};
  const cai::pair_outputs<float> out{cai::make_view(oc.data(), {3}), cai::make_view(orj.data(), {3})};
  CAI_REQUIRE_THROWS_NAMING(cai::pair_sequence_logps(h, cs, rs, out), cai::shape_error, "cai::pair_sequence_logps", "'rejected.logp'", "(3)");
  const cai::token_side<float> rs3{cai::make_view<const float>(x.data(), {3, 4})};
  CAI_REQUIRE_THROWS_NAMING(cai::pair_sequence_logps(h, cs, rs3, out, {.from_divergence = true}), cai::invalid_argument, "'chosen.ids'", "from_divergence");
  CAI_REQUIRE_THROWS_NAMING(cai::pair_sequence_logps(h, cs, rs3, out, {.ld_alpha = 1.5}), cai::invalid_argument, "'ld_alpha'", "[0, 1]");
  CAI_REQUIRE_THROWS_NAMING(cai::pair_sequence_logps(h, cs, rs3, out, {.ld_alpha = std::numeric_limits<double>::quiet_NaN()}), cai::invalid_argument, "'ld_alpha'");
  CAI_REQUIRE_THROWS_NAMING(cai::pair_sequence_logps(h, cs, rs3, {cai::make_view(oc.data(), {2}), out.rejected}), cai::shape_error, "'out.chosen'");
}
