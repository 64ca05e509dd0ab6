// Tests for cai/algorithms/logprobs.hpp: forward against an fp64 two-pass reference, backward against an fp64
// analytic gradient written with a different formula and against central finite differences along random
// directions, layouts, dtypes, determinism across backends, extremes and bad input.
#include <cai/algorithms/logprobs.hpp>
#include <cai/core/any_view.hpp>
#include <cai/core/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../support.hpp"

namespace {

using cai_test::reference_row;

struct case_data {
  std::int64_t N, V;
  std::vector<float> logits;
  std::vector<std::int32_t> targets;
  std::vector<std::uint8_t> mask;
};

case_data make_case(std::int64_t N, std::int64_t V, float scale, std::uint64_t seed, bool with_neg_inf = false) {
  case_data c{N, V, cai_test::normal_floats(static_cast<std::size_t>(N * V), scale, seed),
              cai_test::random_ids(static_cast<std::size_t>(N), V, seed + 1), std::vector<std::uint8_t>(N, 1)};
  if (with_neg_inf)
    for (std::int64_t i = 0; i < N * V; i += 7) c.logits[static_cast<std::size_t>(i)] = -std::numeric_limits<float>::infinity();
  for (std::int64_t i = 0; i < N; ++i) {  // targets must stay finite for the reference comparison
    const auto t = static_cast<std::size_t>(i * V + c.targets[static_cast<std::size_t>(i)]);
    if (std::isinf(c.logits[t])) c.logits[t] = 0.5f;
  }
  return c;
}

template <class T>
std::vector<T> convert(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = cai::from_float<T>(v[i]);
  return out;
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(cai::to_float(v[i]));
  return out;
}

// Stated tolerances (fp32 accumulation over up to 152064 entries): absolute 2e-5 plus a relative term for the
// rounding of z = x / tau and of z_y - max z, whose size scales with the largest |z| in the row.
double logp_tol(double zmax) { return 2e-5 + 4e-7 * zmax; }
double entropy_tol(double h, double zmax) { return 2e-5 * (1.0 + h) + 4e-7 * zmax; }

double row_absmax(const std::vector<double>& x, std::int64_t row, std::int64_t V, double tau) {
  double m = 0;
  for (std::int64_t j = 0; j < V; ++j) {
    const double v = x[static_cast<std::size_t>(row * V + j)];
    if (std::isfinite(v)) m = std::max(m, std::fabs(v / tau));
  }
  return m;
}

template <class T>
void check_forward(const case_data& c, float tau) {
  const auto lx = convert<T>(c.logits);
  const auto xd = widen(lx);
  std::vector<float> logp(c.N), ent(c.N);
  const auto summary = cai::token_logprobs(
      cai::host{}, cai::make_view(lx.data(), {c.N, c.V}), cai::make_view(c.targets.data(), {c.N}),
      cai::make_view(c.mask.data(), {c.N}), {.logp = cai::make_view(logp.data(), {c.N}), .entropy = cai::make_view(ent.data(), {c.N})},
      {.temperature = tau});
  std::int64_t scored = 0;
  for (std::int64_t i = 0; i < c.N; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    if (!c.mask[ui]) {
      CHECK(logp[ui] == 0.0f);
      CHECK(ent[ui] == 0.0f);
      continue;
    }
    ++scored;
    const auto r = reference_row(xd.data() + i * c.V, c.V, c.targets[ui], tau);
    const double zmax = row_absmax(xd, i, c.V, tau);
    INFO("V=" << c.V << " row=" << i << " tau=" << tau << " ref logp=" << r.logp << " got " << logp[ui]
              << " ref H=" << r.entropy << " got " << ent[ui]);
    CHECK(std::fabs(logp[ui] - r.logp) <= logp_tol(zmax));
    CHECK(std::fabs(ent[ui] - r.entropy) <= entropy_tol(r.entropy, zmax));
  }
  CHECK(summary.scored_rows == scored);
  CHECK(summary.nonfinite_rows == 0);
}

}  // namespace

TEST_CASE("token log-probs and entropy match an fp64 two-pass reference from V = 2 to 152064", "[logprobs]") {
  const std::int64_t vocabs[] = {2, 3, 15, 16, 17, 1000, 1025, 32000, 152064};
  for (std::int64_t V : vocabs) {
    const std::int64_t N = V > 10000 ? 3 : 9;
    auto c = make_case(N, V, 3.0f, static_cast<std::uint64_t>(V));
    c.mask[1] = 0;  // a masked row among scored ones
    SECTION("fp32 V=" + std::to_string(V)) { check_forward<float>(c, 1.0f); }
    SECTION("bf16 V=" + std::to_string(V)) { check_forward<cai::bfloat16>(c, 1.0f); }
    SECTION("fp16 V=" + std::to_string(V)) { check_forward<cai::float16>(c, 1.0f); }
    SECTION("fp32 with temperature 0.7 V=" + std::to_string(V)) { check_forward<float>(c, 0.7f); }
    SECTION("fp64 input V=" + std::to_string(V)) { check_forward<double>(c, 1.3f); }
  }
}

TEST_CASE("token log-probs stay accurate for logits up to +-1e4 and with -inf entries", "[logprobs]") {
  for (std::int64_t V : {2, 33, 4096, 152064}) {
    case_data c = make_case(V > 10000 ? 2 : 6, V, 1.0f, 77 + static_cast<std::uint64_t>(V), true);
    auto big = cai_test::uniform_floats(c.logits.size(), -1e4f, 1e4f, 5);
    for (std::size_t i = 0; i < big.size(); ++i)
      if (!std::isinf(c.logits[i])) c.logits[i] = big[i];
    check_forward<float>(c, 1.0f);
    check_forward<cai::bfloat16>(c, 2.0f);
  }
}

TEST_CASE("a fully masked batch scores nothing, reads no logits and writes zeros", "[logprobs]") {
  const std::int64_t N = 3, V = 8;
  std::vector<float> logits(N * V, std::numeric_limits<float>::quiet_NaN());  // never read
  const std::vector<std::int32_t> targets{-100, -100, -100};                // padding ids are fine when masked
  const std::vector<std::uint8_t> mask(N, 0);
  std::vector<float> logp(N, 5.0f), dx(N * V, 5.0f);
  const auto s = cai::token_logprobs(cai::host{}, cai::make_view(logits.data(), {N, V}), cai::make_view(targets.data(), {N}),
                                     cai::make_view(mask.data(), {N}), {.logp = cai::make_view(logp.data(), {N})});
  CHECK(s.scored_rows == 0);
  CHECK(s.nonfinite_rows == 0);
  for (float v : logp) CHECK(v == 0.0f);
  const std::vector<float> g(N, 1.0f);
  cai::token_logprobs_backward(cai::host{}, cai::make_view(logits.data(), {N, V}), cai::make_view(targets.data(), {N}),
                               cai::make_view(mask.data(), {N}), {.dlogp = cai::make_view(g.data(), {N})},
                               cai::make_view(dx.data(), {N, V}));
  for (float v : dx) CHECK(v == 0.0f);
}

TEST_CASE("rows with NaN or +inf logits give NaN outputs and are counted, and a -inf target gives -inf", "[logprobs]") {
  const std::int64_t N = 4, V = 40;
  auto c = make_case(N, V, 1.0f, 3);
  c.logits[5] = std::numeric_limits<float>::quiet_NaN();               // row 0
  c.logits[V + 3] = std::numeric_limits<float>::infinity();            // row 1
  for (std::int64_t j = 0; j < V; ++j) c.logits[static_cast<std::size_t>(2 * V + j)] = -std::numeric_limits<float>::infinity();  // row 2
  c.logits[static_cast<std::size_t>(3 * V + (c.targets[3] + 1) % V)] = 0.0f;
  c.logits[static_cast<std::size_t>(3 * V + c.targets[3])] = -std::numeric_limits<float>::infinity();  // row 3
  std::vector<float> logp(N), ent(N);
  const auto s = cai::token_logprobs(cai::host{}, cai::make_view(c.logits.data(), {N, V}),
                                     cai::make_view(c.targets.data(), {N}), cai::no_mask,
                                     {.logp = cai::make_view(logp.data(), {N}), .entropy = cai::make_view(ent.data(), {N})});
  CHECK(std::isnan(logp[0]));
  CHECK(std::isnan(ent[0]));
  CHECK(std::isnan(logp[1]));
  CHECK(std::isnan(logp[2]));
  CHECK(logp[3] == -std::numeric_limits<float>::infinity());
  CHECK(std::isfinite(ent[3]));
  CHECK(s.scored_rows == 4);
  CHECK(s.nonfinite_rows == 3);
}

TEST_CASE("negative infinite logits get gradient 0, and a negative infinite target gets the finite gradient g", "[logprobs]") {
  const std::int64_t N = 2, V = 37;
  auto x = cai_test::normal_floats(N * V, 1.0f, 71);
  const float ninf = -std::numeric_limits<float>::infinity();
  const std::vector<std::int32_t> targets{3, 5};
  for (std::int64_t j = 0; j < V; j += 4) x[static_cast<std::size_t>(j)] = ninf;       // row 0: some -inf entries
  x[static_cast<std::size_t>(V + 5)] = ninf;                                           // row 1: -inf target
  const std::vector<float> g{0.7f, -1.3f}, h{0.4f, 0.9f};
  std::vector<float> dx(N * V);
  cai::token_logprobs_backward(cai::host{}, cai::make_view(x.data(), {N, V}), cai::make_view(targets.data(), {N}), cai::no_mask,
                               {.dlogp = cai::make_view(g.data(), {N}), .dentropy = cai::make_view(h.data(), {N})},
                               cai::make_view(dx.data(), {N, V}));
  std::vector<double> xd(x.begin(), x.end()), ref(V);
  for (std::int64_t i = 0; i < N; ++i) {
    cai_test::reference_row_grad(xd.data() + i * V, V, targets[static_cast<std::size_t>(i)], 1.0, g[static_cast<std::size_t>(i)],
                                 h[static_cast<std::size_t>(i)], ref.data());
    if (i == 1) ref[5] = g[1];  // p = 0 at the target: d logp / d x_y = 1 - p = 1 (the reference gives NaN there)
    for (std::int64_t j = 0; j < V; ++j) {
      const float got = dx[static_cast<std::size_t>(i * V + j)];
      INFO("row " << i << " j " << j << " got " << got << " want " << ref[static_cast<std::size_t>(j)]);
      REQUIRE(std::isfinite(got));
      if (std::isinf(x[static_cast<std::size_t>(i * V + j)]) && !(i == 1 && j == 5)) CHECK(got == 0.0f);
      else CHECK(std::fabs(got - ref[static_cast<std::size_t>(j)]) <= 1e-6 + 1e-4 * std::fabs(ref[static_cast<std::size_t>(j)]));
    }
  }
}

TEST_CASE("the causal (B,T,V) layout scores each token with the logits of the previous position and zeroes position 0", "[logprobs]") {
  const std::int64_t B = 4, T = 7, V = 50;
  const auto logits = cai_test::normal_floats(B * T * V, 2.0f, 11);
  const auto tokens = cai_test::random_ids(B * T, V, 12);
  std::vector<std::uint8_t> mask(B * T, 1);
  mask[0 * T + 3] = 0;
  for (std::int64_t t = 5; t < T; ++t) mask[static_cast<std::size_t>(2 * T + t)] = 0;  // right padding
  for (std::int64_t t = 0; t < T; ++t) mask[static_cast<std::size_t>(3 * T + t)] = 0;  // a fully masked row
  std::vector<float> logp(B * T, 9.0f), ent(B * T, 9.0f);
  cai::token_logprobs(cai::host{}, cai::make_view(logits.data(), {B, T, V}), cai::make_view(tokens.data(), {B, T}),
                      cai::make_view(mask.data(), {B, T}),
                      {.logp = cai::make_view(logp.data(), {B, T}), .entropy = cai::make_view(ent.data(), {B, T})});
  std::vector<double> xd(logits.begin(), logits.end());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t) {
      const auto i = static_cast<std::size_t>(b * T + t);
      if (t == 0 || !mask[i]) {
        CHECK(logp[i] == 0.0f);
        CHECK(ent[i] == 0.0f);
        continue;
      }
      const auto r = reference_row(xd.data() + (b * T + t - 1) * V, V, tokens[i], 1.0);
      CHECK(std::fabs(logp[i] - r.logp) <= 2e-5);
      CHECK(std::fabs(ent[i] - r.entropy) <= 2e-5 * (1 + r.entropy));
    }
}

namespace {

// L = sum_i a_i logp_i + b_i H_i, evaluated in fp64 by the reference (rows layout).
double reference_objective(const std::vector<double>& x, const case_data& c, const std::vector<double>& a,
                           const std::vector<double>& b, double tau) {
  double L = 0;
  for (std::int64_t i = 0; i < c.N; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    if (!c.mask[ui]) continue;
    const auto r = reference_row(x.data() + i * c.V, c.V, c.targets[ui], tau);
    L += a[ui] * r.logp + b[ui] * r.entropy;
  }
  return L;
}

template <class T, class G>
void check_backward(std::int64_t N, std::int64_t V, float tau, bool use_saved, std::uint64_t seed) {
  auto c = make_case(N, V, 2.0f, seed);
  if (N > 2) c.mask[2] = 0;
  const auto lx = convert<T>(c.logits);
  const auto xd = widen(lx);
  const auto a64 = cai_test::normal_floats(N, 1.0f, seed + 5), b64 = cai_test::normal_floats(N, 1.0f, seed + 6);
  std::vector<float> ga(a64.begin(), a64.end()), gb(b64.begin(), b64.end());
  std::vector<float> saved(N * 3);
  std::vector<G> dx(N * V);
  const auto logits = cai::make_view(lx.data(), {N, V});
  const auto targets = cai::make_view(c.targets.data(), {N});
  const auto mask = cai::make_view(c.mask.data(), {N});
  cai::tensor_view<const float, 2> saved_in{};
  if (use_saved) {
    std::vector<float> lp(N);
    cai::token_logprobs(cai::host{}, logits, targets, mask,
                        {.logp = cai::make_view(lp.data(), {N}), .saved = cai::make_view(saved.data(), {N, 3})},
                        {.temperature = tau});
    saved_in = cai::make_view(static_cast<const float*>(saved.data()), {N, 3});
  }
  cai::token_logprobs_backward(cai::host{}, logits, targets, mask,
                               {.dlogp = cai::make_view(static_cast<const float*>(ga.data()), {N}),
                                .dentropy = cai::make_view(static_cast<const float*>(gb.data()), {N}),
                                .saved = saved_in},
                               cai::make_view(dx.data(), {N, V}), {.temperature = tau});

  // 1. Element-wise against the fp64 analytic gradient (different formula for the entropy term).
  std::vector<double> gref(static_cast<std::size_t>(V));
  double worst = 0;
  for (std::int64_t i = 0; i < N; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    if (!c.mask[ui]) {
      for (std::int64_t j = 0; j < V; ++j) CHECK(cai::to_float(dx[static_cast<std::size_t>(i * V + j)]) == 0.0f);
      continue;
    }
    cai_test::reference_row_grad(xd.data() + i * V, V, c.targets[ui], tau, ga[ui], gb[ui], gref.data());
    for (std::int64_t j = 0; j < V; ++j) {
      const double got = cai::to_float(dx[static_cast<std::size_t>(i * V + j)]);
      const double tol = std::is_same_v<G, float> ? 2e-6 + 1e-4 * std::fabs(gref[static_cast<std::size_t>(j)])
                                                  : 1e-6 + 1e-2 * std::fabs(gref[static_cast<std::size_t>(j)]);
      worst = std::max(worst, std::fabs(got - gref[static_cast<std::size_t>(j)]) - tol);
    }
  }
  INFO("V=" << V << " worst excess over tolerance " << worst);
  CHECK(worst <= 0.0);

  // 2. Central finite differences of the fp64 objective along random directions.
  std::vector<double> a(ga.begin(), ga.end()), b(gb.begin(), gb.end());
  for (int dir = 0; dir < 3; ++dir) {
    const auto u = cai_test::normal_floats(static_cast<std::size_t>(N * V), 1.0f, seed + 100 + static_cast<std::uint64_t>(dir));
    const double eps = 1e-3;
    std::vector<double> xp = xd, xm = xd;
    double analytic = 0, unorm = 0;
    for (std::size_t k = 0; k < xd.size(); ++k) {
      xp[k] += eps * u[k];
      xm[k] -= eps * u[k];
      analytic += static_cast<double>(cai::to_float(dx[k])) * u[k];
      unorm += u[k] * u[k];
    }
    const double fd = (reference_objective(xp, c, a, b, tau) - reference_objective(xm, c, a, b, tau)) / (2 * eps);
    INFO("direction " << dir << " analytic " << analytic << " fd " << fd);
    const double tol = std::is_same_v<G, float> ? 1e-4 : 1e-2;
    CHECK(std::fabs(analytic - fd) <= tol * (std::fabs(fd) + 1e-3 * std::sqrt(unorm)));
  }
}

}  // namespace

TEST_CASE("the backward matches the fp64 gradient and finite differences along random directions", "[logprobs]") {
  for (std::int64_t V : {2, 17, 1000, 32000}) {
    const std::int64_t N = V > 10000 ? 3 : 5;
    SECTION("fp32 logits, fp32 grads, recomputed stats, V=" + std::to_string(V)) { check_backward<float, float>(N, V, 1.0f, false, 21); }
    SECTION("fp32 logits, saved stats, temperature 0.6, V=" + std::to_string(V)) { check_backward<float, float>(N, V, 0.6f, true, 22); }
    SECTION("bf16 logits, fp32 grads, V=" + std::to_string(V)) { check_backward<cai::bfloat16, float>(N, V, 1.0f, true, 23); }
    SECTION("fp16 logits, bf16 grads, V=" + std::to_string(V)) { check_backward<cai::float16, cai::bfloat16>(N, V, 1.0f, false, 24); }
    SECTION("bf16 logits, fp16 grads, V=" + std::to_string(V)) { check_backward<cai::bfloat16, cai::float16>(N, V, 1.5f, true, 25); }
  }
  SECTION("V=152064") { check_backward<float, float>(2, 152064, 1.0f, true, 26); }
}

TEST_CASE("saved statistics and recomputation give the same bits, and in-place backward equals out-of-place",
          "[logprobs]") {
  const std::int64_t N = 6, V = 3001;
  auto c = make_case(N, V, 2.0f, 31);
  const auto g = cai_test::normal_floats(N, 1.0f, 32), h = cai_test::normal_floats(N, 1.0f, 33);
  std::vector<float> saved(N * 3), lp(N);
  const auto logits = cai::make_view(static_cast<const float*>(c.logits.data()), {N, V});
  const auto targets = cai::make_view(c.targets.data(), {N});
  cai::token_logprobs(cai::host{}, logits, targets, cai::no_mask,
                      {.logp = cai::make_view(lp.data(), {N}), .saved = cai::make_view(saved.data(), {N, 3})});
  std::vector<float> d1(N * V), d2(N * V);
  const cai::logprob_grads<1> grads{.dlogp = cai::make_view(g.data(), {N}), .dentropy = cai::make_view(h.data(), {N})};
  auto with_saved = grads;
  with_saved.saved = cai::make_view(static_cast<const float*>(saved.data()), {N, 3});
  cai::token_logprobs_backward(cai::host{}, logits, targets, cai::no_mask, grads, cai::make_view(d1.data(), {N, V}));
  cai::token_logprobs_backward(cai::host{}, logits, targets, cai::no_mask, with_saved, cai::make_view(d2.data(), {N, V}));
  CHECK(std::memcmp(d1.data(), d2.data(), d1.size() * sizeof(float)) == 0);
  std::vector<float> inplace = c.logits;
  cai::token_logprobs_backward(cai::host{}, cai::make_view(static_cast<const float*>(inplace.data()), {N, V}), targets,
                               cai::no_mask, with_saved, cai::make_view(inplace.data(), {N, V}));
  CHECK(std::memcmp(d1.data(), inplace.data(), d1.size() * sizeof(float)) == 0);
}

TEST_CASE("the causal backward writes zero for masked positions and for the last logits row", "[logprobs]") {
  const std::int64_t B = 2, T = 5, V = 23;
  const auto logits = cai_test::normal_floats(B * T * V, 1.5f, 41);
  const auto tokens = cai_test::random_ids(B * T, V, 42);
  std::vector<std::uint8_t> mask(B * T, 1);
  mask[1 * T + 2] = 0;
  const auto g = cai_test::normal_floats(B * T, 1.0f, 43);
  std::vector<float> d(B * T * V, 7.0f);
  cai::token_logprobs_backward(cai::host{}, cai::make_view(logits.data(), {B, T, V}),
                               cai::make_view(tokens.data(), {B, T}), cai::make_view(mask.data(), {B, T}),
                               {.dlogp = cai::make_view(g.data(), {B, T})}, cai::make_view(d.data(), {B, T, V}));
  std::vector<double> xd(logits.begin(), logits.end()), gref(V);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t r = 0; r < T; ++r) {
      const bool zero = r == T - 1 || !mask[static_cast<std::size_t>(b * T + r + 1)];
      if (!zero)
        cai_test::reference_row_grad(xd.data() + (b * T + r) * V, V, tokens[static_cast<std::size_t>(b * T + r + 1)], 1.0,
                                     g[static_cast<std::size_t>(b * T + r + 1)], 0.0, gref.data());
      for (std::int64_t j = 0; j < V; ++j) {
        const float got = d[static_cast<std::size_t>((b * T + r) * V + j)];
        if (zero) CHECK(got == 0.0f);
        else CHECK(std::fabs(got - gref[static_cast<std::size_t>(j)]) <= 1e-6 + 1e-4 * std::fabs(gref[static_cast<std::size_t>(j)]));
      }
    }
}

TEST_CASE("threaded_host gives the same bits as host at 1, 2 and 3 threads", "[logprobs][dispatch]") {
  const std::int64_t N = 37, V = 5003;
  auto c = make_case(N, V, 3.0f, 51);
  c.mask[4] = 0;
  const auto g = cai_test::normal_floats(N, 1.0f, 52);
  auto run = [&](const auto& backend, std::vector<float>& lp, std::vector<float>& h, std::vector<float>& dx) {
    lp.assign(N, 0);
    h.assign(N, 0);
    dx.assign(N * V, 0);
    const auto logits = cai::make_view(static_cast<const float*>(c.logits.data()), {N, V});
    const auto targets = cai::make_view(c.targets.data(), {N});
    const auto mask = cai::make_view(c.mask.data(), {N});
    cai::token_logprobs(backend, logits, targets, mask,
                        {.logp = cai::make_view(lp.data(), {N}), .entropy = cai::make_view(h.data(), {N})});
    cai::token_logprobs_backward(backend, logits, targets, mask, {.dlogp = cai::make_view(g.data(), {N}), .dentropy = cai::make_view(static_cast<const float*>(h.data()), {N})},
                                 cai::make_view(dx.data(), {N, V}));
  };
  std::vector<float> lp0, h0, d0;
  run(cai::host{}, lp0, h0, d0);
  for (unsigned threads : {1u, 2u, 3u}) {
    std::vector<float> lp, h, d;
    run(cai::threaded_host(threads), lp, h, d);
    CHECK(std::memcmp(lp.data(), lp0.data(), lp.size() * 4) == 0);
    CHECK(std::memcmp(h.data(), h0.data(), h.size() * 4) == 0);
    CHECK(std::memcmp(d.data(), d0.data(), d.size() * 4) == 0);
  }
}

TEST_CASE("token_logprobs rejects bad input with exceptions naming the argument", "[logprobs]") {
  const std::int64_t N = 4, V = 10;
  auto c = make_case(N, V, 1.0f, 61);
  std::vector<float> lp(N);
  const auto logits = cai::make_view(static_cast<const float*>(c.logits.data()), {N, V});
  const auto targets = cai::make_view(c.targets.data(), {N});
  const cai::logprob_outputs<1> out{.logp = cai::make_view(lp.data(), {N})};
  cai::host h;

  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, logits, cai::make_view(c.targets.data(), {N - 1}), cai::no_mask, out),
                            cai::shape_error, "cai::token_logprobs", "'targets'", "extent(0) == 4", "got 3");
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, logits, targets, cai::no_mask, {.logp = cai::make_view(lp.data(), {N - 2})}),
                            cai::shape_error, "'out.logp'");
  std::vector<std::int32_t> bad = c.targets;
  bad[2] = static_cast<std::int32_t>(V);
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, logits, cai::make_view(bad.data(), {N}), cai::no_mask, out),
                            cai::invalid_argument, "'targets'", "[0, 10)", "10 at 0,2");
  bad[2] = -1;
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, logits, cai::make_view(bad.data(), {N}), cai::no_mask, out),
                            cai::invalid_argument, "'targets'", "-1");
  std::vector<std::uint8_t> m(N, 1);
  m[2] = 0;  // a masked row may hold any target (e.g. -100 padding)
  REQUIRE_NOTHROW(cai::token_logprobs(h, logits, cai::make_view(bad.data(), {N}), cai::make_view(m.data(), {N}), out));
  m[1] = 2;
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, logits, targets, cai::make_view(m.data(), {N}), out),
                            cai::invalid_argument, "'mask'", "0 or 1");
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, logits, targets, cai::no_mask, out, {.temperature = 0.0f}),
                            cai::invalid_argument, "'temperature'");
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, logits, targets, cai::no_mask, out,
                                                {.temperature = std::numeric_limits<float>::quiet_NaN()}),
                            cai::invalid_argument, "'temperature'");
  // Every other column: stride 2 in the vocabulary dimension.
  const cai::tensor_view<const float, 2> strided(c.logits.data(), {N, V / 2}, {V, 2});
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, strided, targets, cai::no_mask, out), cai::layout_error,
                            "'logits'", "stride 1");
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, logits, targets, cai::no_mask, cai::logprob_outputs<1>{}),
                            cai::invalid_argument, "'out'");
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(h, cai::make_view(c.logits.data(), {N, 0}), targets, cai::no_mask, out),
                            cai::shape_error, "'logits'", "vocabulary");
  std::vector<float> dx(N * V);
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs_backward(h, logits, targets, cai::no_mask, {.dlogp = cai::make_view(static_cast<const float*>(lp.data()), {N})},
                                                         cai::make_view(dx.data(), {N, V - 1})),
                            cai::shape_error, "cai::token_logprobs_backward", "'dlogits'");
  std::vector<float> sv(N * 2);
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs_backward(h, logits, targets, cai::no_mask,
                                                         {.saved = cai::make_view(static_cast<const float*>(sv.data()), {N, 2})},
                                                         cai::make_view(dx.data(), {N, V})),
                            cai::shape_error, "'saved'");

  SECTION("type-erased views are checked for dtype, rank and memory space") {
    const cai::any_view ints = cai::make_view(c.targets.data(), {N});
    auto call = [&](const cai::any_view& v) {
      return cai::visit_floating<2>(v, "cai::token_logprobs", "logits", [&](auto typed) {
        return cai::token_logprobs(h, typed, targets, cai::no_mask, out);
      });
    };
    CAI_REQUIRE_THROWS_NAMING(call(ints), cai::dtype_error, "'logits'", "floating", "int32");
    CAI_REQUIRE_THROWS_NAMING(call(cai::any_view(cai::make_view(c.logits.data(), {N * V}))), cai::shape_error,
                              "'logits'", "rank 2", "rank 1");
    cai::any_view dev = logits;
    dev.space = cai::memory_space::device;
    CAI_REQUIRE_THROWS_NAMING(call(dev), cai::memory_space_error, "'logits'", "host memory", "device memory");
    REQUIRE(call(cai::any_view(logits)).scored_rows == N);
  }
}
