// Tests for cai/algorithms/gae.hpp: GAE and discounted returns against the explicit sums over counted steps
// (A_t = sum_k (gamma lambda)^k delta_{t+k}, G_t = sum_k gamma^k r_{t+k}, in long double; the library runs the
// backward recursion in double), masked steps as the identity, bootstrap values, the packed layout, bitwise equality
// across backends, PyTorch golden values of verl's masked loop, and bad input.
#include <cai/algorithms/gae.hpp>
#include <cai/core/host.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../golden/golden.hpp"
#include "../support.hpp"
#include "sequence_batch.hpp"

namespace {

using cai_test::make_seq_batch;
using cai_test::seq_batch;
using ld = long double;

struct ref_out {
  std::vector<ld> adv, ret, scale;  // scale: sum of |terms| of each explicit sum (for the tolerance)
};

// One row of n steps at x[0..n) with mask m (null: all counted). Without values: discounted returns.
template <class R>
void reference_row(const R* r, const R* v, const std::uint8_t* m, std::int64_t n, ld gamma, ld lambda, ld bootstrap,
                   ld* adv, ld* ret, ld* scale) {
  std::vector<std::int64_t> pos;
  for (std::int64_t t = 0; t < n; ++t) {
    adv[t] = ret[t] = scale[t] = 0;
    if (!m || m[t]) pos.push_back(t);
  }
  const auto cnt = static_cast<std::int64_t>(pos.size());
  auto P = [&](std::int64_t i) { return static_cast<std::size_t>(pos[static_cast<std::size_t>(i)]); };
  if (v) {
    std::vector<ld> delta(static_cast<std::size_t>(cnt));
    for (std::int64_t i = 0; i < cnt; ++i) {
      const ld next = i + 1 < cnt ? static_cast<ld>(v[P(i + 1)]) : bootstrap;
      delta[static_cast<std::size_t>(i)] = static_cast<ld>(r[P(i)]) + gamma * next - static_cast<ld>(v[P(i)]);
    }
    for (std::int64_t i = 0; i < cnt; ++i) {
      ld a = 0, s = 0, f = 1;  // f = (gamma lambda)^k
      for (std::int64_t k = 0; i + k < cnt; ++k, f *= gamma * lambda) {
        const ld term = f * delta[static_cast<std::size_t>(i + k)];
        a += term;
        s += std::fabs(term);
      }
      adv[P(i)] = a;
      ret[P(i)] = a + static_cast<ld>(v[P(i)]);
      scale[P(i)] = s + std::fabs(static_cast<ld>(v[P(i)]));
    }
  } else {
    for (std::int64_t i = 0; i < cnt; ++i) {
      ld g = 0, s = 0, f = 1;  // f = gamma^k
      for (std::int64_t k = 0; i + k < cnt; ++k, f *= gamma) {
        const ld term = f * static_cast<ld>(r[P(i + k)]);
        g += term;
        s += std::fabs(term);
      }
      const ld tail = f * bootstrap;
      ret[P(i)] = g + tail;
      scale[P(i)] = s + std::fabs(tail);
    }
  }
}

template <class R>
ref_out reference(const seq_batch& s, const std::vector<R>& r, const std::vector<R>* v, bool use_mask, double gamma,
                  double lambda, const std::vector<R>* bootstrap) {
  ref_out o{std::vector<ld>(r.size()), std::vector<ld>(r.size()), std::vector<ld>(r.size())};
  for (std::int64_t b = 0; b < s.B; ++b) {
    const std::int64_t off = b * s.T;
    reference_row(r.data() + off, v ? v->data() + off : nullptr, use_mask ? s.mask.data() + off : nullptr, s.T, gamma, lambda,
                  bootstrap ? static_cast<ld>((*bootstrap)[static_cast<std::size_t>(b)]) : 0.0L, o.adv.data() + off,
                  o.ret.data() + off, o.scale.data() + off);
  }
  return o;
}

template <class R>
bool close(R got, ld want, ld scale, std::int64_t steps) {
  // The recursion's fp64 rounding, a few ulp per step relative to the sum of |terms|; for float storage, plus the
  // final rounding to fp32.
  const ld rec = 4.5e-16L * static_cast<ld>(4 + steps) * scale + 1e-300L;
  const ld tol = std::is_same_v<R, float> ? 1.2e-7L * std::fabs(want) + rec : rec;
  return std::fabs(static_cast<ld>(got) - want) <= tol;
}

template <class R>
void check_gae(std::int64_t B, std::int64_t T, double gamma, double lambda, bool use_mask, bool with_bootstrap, std::uint64_t seed) {
  const seq_batch s = make_seq_batch(B, T, seed);
  const auto n = static_cast<std::size_t>(B * T);
  std::vector<R> r(n), v(n), boot(static_cast<std::size_t>(B));
  const auto rf = cai_test::normal_floats(n, 1.0f, seed + 1), vf = cai_test::normal_floats(n, 2.0f, seed + 2);
  const auto bf = cai_test::normal_floats(static_cast<std::size_t>(B), 2.0f, seed + 3);
  for (std::size_t i = 0; i < n; ++i) {
    r[i] = static_cast<R>(rf[i]);
    v[i] = static_cast<R>(vf[i]);
    if (use_mask && !s.mask[i] && i % 2) r[i] = v[i] = std::numeric_limits<R>::quiet_NaN();  // masked: never used
  }
  for (std::size_t b = 0; b < boot.size(); ++b) boot[b] = static_cast<R>(bf[b]);
  std::vector<R> adv(n, R(9)), ret(n, R(9)), dret(n, R(9));
  const auto rv = cai::make_view(r.data(), {B, T});
  const auto vv = cai::make_view(v.data(), {B, T});
  const auto bv = with_bootstrap ? cai::make_view(static_cast<const R*>(boot.data()), {B}) : cai::tensor_view<const R, 1>{};
  auto run = [&](const auto& mask) {
    cai::gae(cai::host{}, rv, vv, mask, {.advantages = cai::make_view(adv.data(), {B, T}), .returns = cai::make_view(ret.data(), {B, T})},
             {.gamma = gamma, .lambda = lambda, .bootstrap_values = bv});
    cai::discounted_returns(cai::host{}, rv, mask, cai::make_view(dret.data(), {B, T}), {.gamma = gamma, .bootstrap_values = bv});
  };
  if (use_mask) run(cai::make_view(s.mask.data(), {B, T}));
  else run(cai::no_mask);
  const auto* bp = with_bootstrap ? &boot : nullptr;
  const ref_out g = reference(s, r, &v, use_mask, gamma, lambda, bp);
  const ref_out d = reference(s, r, static_cast<const std::vector<R>*>(nullptr), use_mask, gamma, lambda, bp);
  for (std::size_t i = 0; i < n; ++i) {
    INFO("B " << B << " T " << T << " gamma " << gamma << " lambda " << lambda << " token " << i << " adv " << adv[i] << " want "
              << static_cast<double>(g.adv[i]) << " ret " << ret[i] << " want " << static_cast<double>(g.ret[i]) << " G " << dret[i]
              << " want " << static_cast<double>(d.ret[i]));
    if (use_mask && !s.mask[i]) {  // outputs at masked steps are 0
      CHECK(adv[i] == R(0));
      CHECK(ret[i] == R(0));
      CHECK(dret[i] == R(0));
      continue;
    }
    CHECK(close(adv[i], g.adv[i], g.scale[i], T));
    CHECK(close(ret[i], g.ret[i], g.scale[i], T));
    CHECK(close(dret[i], d.ret[i], d.scale[i], T));
  }
}

}  // namespace

TEST_CASE("gae and discounted returns match the explicit sums over counted steps", "[gae]") {
  const std::pair<double, double> params[] = {{1.0, 0.95}, {0.99, 0.95}, {0.9, 1.0}, {1.0, 1.0}, {0.0, 0.5}, {0.7, 0.0}, {0.5, 0.3}};
  for (const auto& [gamma, lambda] : params) {
    const std::string p = " gamma " + std::to_string(gamma) + " lambda " + std::to_string(lambda);
    SECTION("double, multi-span masks, 13 rows" + p) { check_gae<double>(13, 10, gamma, lambda, true, false, 1); }
    SECTION("float, multi-span masks, 37 rows" + p) { check_gae<float>(37, 12, gamma, lambda, true, false, 2); }
    SECTION("double, bootstrap values" + p) { check_gae<double>(19, 7, gamma, lambda, true, true, 3); }
    SECTION("float, bootstrap values, no mask" + p) { check_gae<float>(9, 11, gamma, lambda, false, true, 4); }
    SECTION("double, no mask, length-1 rows" + p) { check_gae<double>(10, 1, gamma, lambda, false, false, 5); }
  }
  SECTION("long rows: T = 2000") { check_gae<double>(3, 2000, 1.0, 1.0, true, true, 6); }
}

TEST_CASE("a masked step is the identity: value and advantage carry across it and its output is 0", "[gae]") {
  // A compact row of 6 counted steps, and the same steps spread over 14 positions with masked steps (holding NaN or
  // garbage) before, between and after them.
  const std::vector<double> r{0.3, -1.2, 0.0, 2.5, 0.7, -0.4}, v{1.0, 0.5, -0.3, 0.8, 1.1, -2.0};
  const std::int64_t at[] = {1, 2, 5, 9, 10, 12};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> rs(14, nan), vs(14, 1e6);
  std::vector<std::uint8_t> ms(14, 0);
  for (std::size_t i = 0; i < 6; ++i) {
    rs[static_cast<std::size_t>(at[i])] = r[i];
    vs[static_cast<std::size_t>(at[i])] = v[i];
    ms[static_cast<std::size_t>(at[i])] = 1;
  }
  const double boot = 0.25;
  std::vector<double> a(6), ret(6), as(14, 7.0), rets(14, 7.0), g(6), gs(14, 7.0);
  const cai::gae_options<double> opt{.gamma = 0.97, .lambda = 0.9, .bootstrap_values = cai::make_view(&boot, {1})};
  cai::gae(cai::host{}, cai::make_view(r.data(), {1, 6}), cai::make_view(v.data(), {1, 6}), cai::no_mask,
           {.advantages = cai::make_view(a.data(), {1, 6}), .returns = cai::make_view(ret.data(), {1, 6})}, opt);
  cai::gae(cai::host{}, cai::make_view(rs.data(), {1, 14}), cai::make_view(vs.data(), {1, 14}), cai::make_view(ms.data(), {1, 14}),
           {.advantages = cai::make_view(as.data(), {1, 14}), .returns = cai::make_view(rets.data(), {1, 14})}, opt);
  cai::discounted_returns(cai::host{}, cai::make_view(r.data(), {1, 6}), cai::no_mask, cai::make_view(g.data(), {1, 6}),
                          {.gamma = 0.97, .bootstrap_values = cai::make_view(&boot, {1})});
  cai::discounted_returns(cai::host{}, cai::make_view(rs.data(), {1, 14}), cai::make_view(ms.data(), {1, 14}),
                          cai::make_view(gs.data(), {1, 14}), {.gamma = 0.97, .bootstrap_values = cai::make_view(&boot, {1})});
  std::size_t k = 0;
  for (std::size_t t = 0; t < 14; ++t) {
    INFO("position " << t);
    if (!ms[t]) {
      CHECK(as[t] == 0.0);
      CHECK(rets[t] == 0.0);
      CHECK(gs[t] == 0.0);
      continue;
    }
    CHECK(as[t] == a[k]);  // the same operations on the same numbers
    CHECK(rets[t] == ret[k]);
    CHECK(gs[t] == g[k]);
    ++k;
  }
  // By hand for the last counted step: delta = r + gamma * bootstrap - V, A = delta, return = A + V.
  CHECK(a[5] == Approx(-0.4 + 0.97 * 0.25 + 2.0).epsilon(1e-14));
  CHECK(ret[5] == Approx(-0.4 + 0.97 * 0.25).epsilon(1e-14));
  CHECK(a[4] == Approx((0.7 + 0.97 * -2.0 - 1.1) + 0.97 * 0.9 * a[5]).epsilon(1e-14));
}

TEST_CASE("fully masked rows give zeros and rows may request only advantages or only returns", "[gae]") {
  const std::vector<float> r{1, 2, 3, 4, 5, 6}, v{0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
  const std::vector<std::uint8_t> m{0, 0, 0, 1, 1, 1};
  std::vector<float> a(6, 9.0f), ret(6, 9.0f), a2(6, 9.0f), ret2(6, 9.0f);
  const auto rv = cai::make_view(r.data(), {2, 3});
  const auto vv = cai::make_view(v.data(), {2, 3});
  const auto mv = cai::make_view(m.data(), {2, 3});
  cai::gae(cai::host{}, rv, vv, mv, {.advantages = cai::make_view(a.data(), {2, 3}), .returns = cai::make_view(ret.data(), {2, 3})});
  cai::gae(cai::host{}, rv, vv, mv, {.advantages = cai::make_view(a2.data(), {2, 3})});
  cai::gae(cai::host{}, rv, vv, mv, {.returns = cai::make_view(ret2.data(), {2, 3})});
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(a[i] == 0.0f);
    CHECK(ret[i] == 0.0f);
  }
  CHECK(a2 == a);
  CHECK(ret2 == ret);
  for (float x : ret2) CHECK(x != 9.0f);
  // gamma = 1, lambda = 0.95 by hand on row 1: deltas 4, 5, 5.5 (the last has no next value).
  CHECK(a[5] == Approx(5.5f));
  CHECK(a[4] == Approx(5.0 + 0.95 * 5.5));
  CHECK(a[3] == Approx(4.0 + 0.95 * (5.0 + 0.95 * 5.5)));
  // No rows, no tokens: nothing to do.
  REQUIRE_NOTHROW(cai::gae(cai::host{}, cai::make_view(r.data(), {0, 3}), cai::make_view(v.data(), {0, 3}), cai::no_mask,
                           {.advantages = cai::make_view(a.data(), {0, 3})}));
  REQUIRE_NOTHROW(cai::discounted_returns(cai::host{}, cai::make_view(r.data(), {2, 0}), cai::no_mask, cai::tensor_view<float, 2>{}));
}

TEST_CASE("the packed layout with cu_seqlens gives the padded layout's results, bootstrap values included", "[gae]") {
  const seq_batch s = make_seq_batch(45, 17, 31);
  const auto n = static_cast<std::size_t>(s.B * s.T);
  const auto r = cai_test::normal_floats(n, 1.0f, 32), v = cai_test::normal_floats(n, 1.0f, 33);
  const auto boot = cai_test::normal_floats(static_cast<std::size_t>(s.B), 1.0f, 34);
  std::vector<float> a(n), ret(n), g(n);
  const auto bv = cai::make_view(boot.data(), {s.B});
  cai::gae(cai::host{}, cai::make_view(r.data(), {s.B, s.T}), cai::make_view(v.data(), {s.B, s.T}), cai::make_view(s.mask.data(), {s.B, s.T}),
           {.advantages = cai::make_view(a.data(), {s.B, s.T}), .returns = cai::make_view(ret.data(), {s.B, s.T})},
           {.gamma = 0.99, .lambda = 0.95, .bootstrap_values = bv});
  cai::discounted_returns(cai::host{}, cai::make_view(r.data(), {s.B, s.T}), cai::make_view(s.mask.data(), {s.B, s.T}),
                          cai::make_view(g.data(), {s.B, s.T}), {.gamma = 0.99, .bootstrap_values = bv});
  const auto pr = s.pack(r), pv = s.pack(v);
  const std::int64_t N = s.N();
  std::vector<float> pa(static_cast<std::size_t>(N)), pret(static_cast<std::size_t>(N)), pg(static_cast<std::size_t>(N));
  cai::gae(cai::host{}, cai::packed(cai::make_view(pr.data(), {N})), cai::packed(cai::make_view(pv.data(), {N})),
           cai::packed(cai::make_view(s.pmask.data(), {N})),
           {.advantages = cai::packed(cai::make_view(pa.data(), {N})), .returns = cai::packed(cai::make_view(pret.data(), {N}))},
           {.gamma = 0.99, .lambda = 0.95, .bootstrap_values = bv, .cu_seqlens = s.cu_view()});
  cai::discounted_returns(cai::host{}, cai::packed(cai::make_view(pr.data(), {N})), cai::packed(cai::make_view(s.pmask.data(), {N})),
                          cai::packed(cai::make_view(pg.data(), {N})), {.gamma = 0.99, .bootstrap_values = bv, .cu_seqlens = s.cu_view()});
  // The same double-precision operations per row; the padded path runs eight rows as vector lanes, so allow one
  // fp32 rounding step in case the compiler contracts differently there.
  auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
    REQUIRE(x.size() == y.size());
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(std::fabs(x[i] - y[i]) <= 2.4e-7f * std::fabs(x[i]));
  };
  same(s.pack(a), pa);
  same(s.pack(ret), pret);
  same(s.pack(g), pg);
}

TEST_CASE("gae and discounted returns give the same bits on host and threaded_host(3)", "[gae][dispatch]") {
  const seq_batch s = make_seq_batch(203, 33, 41);  // 25 groups of 8 lanes and 3 remaining rows
  const auto n = static_cast<std::size_t>(s.B * s.T);
  const auto r = cai_test::normal_floats(n, 1.0f, 42), v = cai_test::normal_floats(n, 1.0f, 43);
  auto run = [&](const auto& backend, std::vector<float>& a, std::vector<float>& ret, std::vector<float>& g, std::vector<float>& pa) {
    a.assign(n, 0.0f);
    ret.assign(n, 0.0f);
    g.assign(n, 0.0f);
    const auto mv = cai::make_view(s.mask.data(), {s.B, s.T});
    cai::gae(backend, cai::make_view(r.data(), {s.B, s.T}), cai::make_view(v.data(), {s.B, s.T}), mv,
             {.advantages = cai::make_view(a.data(), {s.B, s.T}), .returns = cai::make_view(ret.data(), {s.B, s.T})}, {.gamma = 0.99});
    cai::discounted_returns(backend, cai::make_view(r.data(), {s.B, s.T}), mv, cai::make_view(g.data(), {s.B, s.T}), {.gamma = 0.9});
    const auto pr = s.pack(r), pv = s.pack(v);
    const std::int64_t N = s.N();
    pa.assign(static_cast<std::size_t>(N), 0.0f);
    cai::gae(backend, cai::packed(cai::make_view(pr.data(), {N})), cai::packed(cai::make_view(pv.data(), {N})),
             cai::packed(cai::make_view(s.pmask.data(), {N})), {.advantages = cai::packed(cai::make_view(pa.data(), {N}))},
             {.cu_seqlens = s.cu_view()});
  };
  std::vector<float> a0, r0, g0, p0, a1, r1, g1, p1;
  run(cai::host{}, a0, r0, g0, p0);
  run(cai::threaded_host(3), a1, r1, g1, p1);
  CHECK(std::memcmp(a0.data(), a1.data(), n * 4) == 0);
  CHECK(std::memcmp(r0.data(), r1.data(), n * 4) == 0);
  CHECK(std::memcmp(g0.data(), g1.data(), n * 4) == 0);
  CHECK(std::memcmp(p0.data(), p1.data(), p0.size() * 4) == 0);
}

// Golden values: verl's compute_gae_advantage_return loop in torch fp32 (tests/golden/gen_kl_gae.py), compared at
// mask = 1 positions (verl writes the carried values at masked steps, cai writes 0). Tolerance 1e-5 relative plus
// 1e-6 absolute: torch accumulates in fp32, cai in fp64 and rounds once.
TEST_CASE("gae matches verl's masked GAE loop computed by torch", "[gae]") {
  const cai_test::golden gold("kl_gae.txt");
  const auto shape = gold["gae.shape"];
  const auto B = static_cast<std::int64_t>(shape[0]), T = static_cast<std::int64_t>(shape[1]);
  const auto r = gold.as<float>("gae.rewards"), v = gold.as<float>("gae.values");
  const auto mask = gold.as<std::uint8_t>("gae.mask");
  const auto want_a = gold["gae.advantages"], want_r = gold["gae.returns"];
  const double gamma = gold["gae.gamma"][0], lambda = gold["gae.lambda"][0];
  std::vector<float> a(r.size()), ret(r.size());
  cai::gae(cai::host{}, cai::make_view(r.data(), {B, T}), cai::make_view(v.data(), {B, T}), cai::make_view(mask.data(), {B, T}),
           {.advantages = cai::make_view(a.data(), {B, T}), .returns = cai::make_view(ret.data(), {B, T})}, {.gamma = gamma, .lambda = lambda});
  std::int64_t compared = 0;
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (!mask[i]) {
      CHECK(a[i] == 0.0f);
      continue;
    }
    ++compared;
    INFO("position " << i << " adv " << a[i] << " torch " << want_a[i] << " ret " << ret[i] << " torch " << want_r[i]);
    CHECK(std::fabs(a[i] - want_a[i]) <= 1e-6 + 1e-5 * std::fabs(want_a[i]));
    CHECK(std::fabs(ret[i] - want_r[i]) <= 1e-6 + 1e-5 * std::fabs(want_r[i]));
  }
  CHECK(compared == 17);
}

TEST_CASE("gae and discounted_returns reject bad input with exceptions naming the argument", "[gae]") {
  cai::host h;
  const std::int64_t B = 2, T = 3;
  std::vector<double> r{1, 2, 3, 4, 5, 6}, v{0, 0, 0, 1, 1, 1}, a(6), ret(6), boot{0.5, 0.5};
  std::vector<std::uint8_t> m{1, 1, 0, 0, 1, 1};
  const auto rv = cai::make_view(r.data(), {B, T});
  const auto vv = cai::make_view(v.data(), {B, T});
  const auto mv = cai::make_view(m.data(), {B, T});
  const cai::gae_outputs<double> out{.advantages = cai::make_view(a.data(), {B, T}), .returns = cai::make_view(ret.data(), {B, T})};
  REQUIRE_NOTHROW(cai::gae(h, rv, vv, mv, out));

  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, cai::make_view(v.data(), {T, B}), mv, out), cai::shape_error, "cai::gae", "'values'", "(2, 3)", "(3, 2)");
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, cai::make_view(m.data(), {1, 6}), out), cai::shape_error, "'mask'");
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, {.advantages = cai::make_view(a.data(), {B, T - 1})}), cai::shape_error, "'advantages'");
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, {.returns = cai::make_view(ret.data(), {B - 1, T})}), cai::shape_error, "'returns'");
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, cai::gae_outputs<double>{}), cai::invalid_argument, "'out'");
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, cai::tensor_view<const double, 2>{}, mv, out), cai::invalid_argument, "'values'");
  m[1] = 2;
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, out), cai::invalid_argument, "'mask'", "0 or 1", "2 at row 0, token 1");
  m[1] = 1;
  for (double bad : {-0.01, 1.01, std::numeric_limits<double>::quiet_NaN()}) {
    CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, out, {.gamma = bad}), cai::invalid_argument, "'gamma'", "[0, 1]");
    CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, out, {.lambda = bad}), cai::invalid_argument, "'lambda'", "[0, 1]");
    CAI_REQUIRE_THROWS_NAMING(cai::discounted_returns(h, rv, mv, cai::make_view(ret.data(), {B, T}), {.gamma = bad}), cai::invalid_argument,
                              "cai::discounted_returns", "'gamma'");
  }
  r[4] = std::numeric_limits<double>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, out), cai::invalid_argument, "'rewards'", "finite", "row 1, token 1");
  CAI_REQUIRE_THROWS_NAMING(cai::discounted_returns(h, rv, mv, cai::make_view(ret.data(), {B, T})), cai::invalid_argument, "'rewards'");
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, cai::no_mask, out), cai::invalid_argument, "'rewards'", "row 1, token 1");
  r[4] = 5;
  r[2] = std::numeric_limits<double>::quiet_NaN();  // masked: fine
  v[3] = std::numeric_limits<double>::infinity();   // masked: fine
  REQUIRE_NOTHROW(cai::gae(h, rv, vv, mv, out));
  CHECK(a[2] == 0.0);
  v[5] = -std::numeric_limits<double>::infinity();
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, out), cai::invalid_argument, "'values'", "-inf at row 1, token 2");
  v[5] = 1;
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, out, {.bootstrap_values = cai::make_view(boot.data(), {1})}), cai::shape_error,
                            "'bootstrap_values'", "one value per sequence (2)");
  boot[1] = std::numeric_limits<double>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, mv, out, {.bootstrap_values = cai::make_view(boot.data(), {2})}), cai::invalid_argument,
                            "'bootstrap_values'", "finite");
  CAI_REQUIRE_THROWS_NAMING(cai::discounted_returns(h, rv, mv, cai::make_view(ret.data(), {B, T}), {.bootstrap_values = cai::make_view(boot.data(), {2})}),
                            cai::invalid_argument, "'bootstrap_values'");
  CAI_REQUIRE_THROWS_NAMING(cai::discounted_returns(h, rv, mv, cai::tensor_view<double, 2>{}), cai::invalid_argument, "'returns'");
  CAI_REQUIRE_THROWS_NAMING(cai::discounted_returns(h, rv, mv, cai::make_view(ret.data(), {B, 2})), cai::shape_error, "'returns'");

  r[2] = 3;
  v[3] = 1;
  const std::vector<std::int64_t> bad_cu{0, 2, 1, 6}, ok_cu{0, 2, 6};
  const auto packed_r = cai::packed(cai::make_view(r.data(), {6}));
  const auto packed_v = cai::packed(cai::make_view(v.data(), {6}));
  const auto packed_a = cai::packed(cai::make_view(a.data(), {6}));
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, packed_r, packed_v, cai::no_mask, {.advantages = packed_a}, {.cu_seqlens = cai::make_view(bad_cu.data(), {4})}),
                            cai::invalid_argument, "'cu_seqlens'", "non-decreasing");
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, rv, vv, cai::no_mask, out, {.cu_seqlens = cai::make_view(ok_cu.data(), {3})}), cai::shape_error, "'rewards'",
                            "(1, N)");
  CAI_REQUIRE_THROWS_NAMING(cai::gae(h, packed_r, vv, cai::no_mask, {.advantages = packed_a}, {.cu_seqlens = cai::make_view(ok_cu.data(), {3})}),
                            cai::shape_error, "'values'");
  REQUIRE_NOTHROW(cai::gae(h, packed_r, packed_v, cai::no_mask, {.advantages = packed_a}, {.cu_seqlens = cai::make_view(ok_cu.data(), {3})}));
}
