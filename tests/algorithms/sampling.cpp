// cai/algorithms/sampling.hpp: the token draw every sampling policy shares. Checked against fp64 log-softmax written
// independently, and by the frequencies of many draws against the (restricted, renormalised) distribution.
#include <cai/algorithms/sampling.hpp>

#include <cmath>
#include <map>
#include <vector>

#include "../support.hpp"

namespace {

std::vector<double> softmax64(const std::vector<float>& z) {
  double mx = -INFINITY;
  for (float v : z) mx = std::max(mx, static_cast<double>(v));
  std::vector<double> p(z.size());
  double s = 0;
  for (std::size_t i = 0; i < z.size(); ++i) s += (p[i] = std::exp(static_cast<double>(z[i]) - mx));
  for (auto& x : p) x /= s;
  return p;
}

/// Draw frequencies over n draws from one stream.
std::vector<double> frequencies(const std::vector<float>& z, const cai::sampling_params& sp, int n, std::uint64_t seed) {
  cai::rng_stream r(seed, 0);
  std::vector<double> f(z.size(), 0.0);
  for (int i = 0; i < n; ++i) f[static_cast<std::size_t>(cai::draw_token(z, sp, r).first)] += 1.0 / n;
  return f;
}

}  // namespace

TEST_CASE("draw_token returns the unrestricted log-softmax of the drawn token", "[sampling]") {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const auto z = cai_test::normal_floats(50, 3.0f, seed);
    const auto p = softmax64(z);
    cai::rng_stream r(seed, 0);
    for (const cai::sampling_params& sp : {cai::sampling_params{}, cai::sampling_params{.top_k = 3}, cai::sampling_params{.top_p = 0.5f}}) {
      const auto [tok, lp] = cai::draw_token(z, sp, r);
      REQUIRE((tok >= 0 && tok < 50));
      CHECK(lp == Approx(std::log(p[static_cast<std::size_t>(tok)])).margin(1e-5));
    }
  }
}

TEST_CASE("draw_token follows softmax(z), restricted by top-k then top-p and renormalised", "[sampling]") {
  const std::vector<float> z{0.5f, 2.0f, -1.0f, 1.0f, 1.5f};
  const auto p = softmax64(z);  // order by probability: 1, 4, 3, 0, 2
  const int n = 40000;
  auto within = [&](const std::vector<double>& f, const std::vector<double>& q) {
    for (std::size_t i = 0; i < q.size(); ++i) {
      const double sd = std::sqrt(q[i] * (1 - q[i]) / n);
      INFO("token " << i << " frequency " << f[i] << " expected " << q[i]);
      CHECK(std::abs(f[i] - q[i]) <= 5 * sd + 1e-9);
    }
  };
  within(frequencies(z, {}, n, 7), p);
  // top_k = 2: tokens 1 and 4 only.
  {
    std::vector<double> q(5, 0.0);
    q[1] = p[1] / (p[1] + p[4]);
    q[4] = p[4] / (p[1] + p[4]);
    within(frequencies(z, {.top_k = 2}, n, 8), q);
  }
  // top_p: the smallest prefix (in probability order) whose mass reaches top_p.
  {
    const float top_p = static_cast<float>(p[1] + p[4] + 0.5 * p[3]);  // needs tokens 1, 4, 3
    const double m = p[1] + p[4] + p[3];
    std::vector<double> q(5, 0.0);
    for (int i : {1, 4, 3}) q[static_cast<std::size_t>(i)] = p[static_cast<std::size_t>(i)] / m;
    within(frequencies(z, {.top_p = top_p}, n, 9), q);
    // top_k applies first: k = 2 caps the nucleus at tokens 1 and 4.
    std::vector<double> q2(5, 0.0);
    q2[1] = p[1] / (p[1] + p[4]);
    q2[4] = p[4] / (p[1] + p[4]);
    within(frequencies(z, {.top_k = 2, .top_p = top_p}, n, 10), q2);
    // top_p measures the top-k distribution renormalised (Hugging Face / vLLM order): with k = 3 (tokens 1, 4, 3) and
    // top_p between token 1's unrestricted mass p1 and its renormalised mass p1 / k3, token 1 alone reaches top_p —
    // measured against the unrestricted distribution it would not, and token 4 would be drawn too.
    const double k3 = p[1] + p[4] + p[3];
    const auto mid = static_cast<float>(0.5 * (p[1] + p[1] / k3));
    REQUIRE((mid > p[1] && mid < p[1] / k3));
    std::vector<double> q3(5, 0.0);
    q3[1] = 1.0;
    within(frequencies(z, {.top_k = 3, .top_p = mid}, n, 12), q3);
    // Unrestricted (top_k = 0) the same top_p is measured against the whole distribution.
    const float above_p1 = static_cast<float>(p[1] + 0.01);
    std::vector<double> q4(5, 0.0);
    q4[1] = p[1] / (p[1] + p[4]);
    q4[4] = p[4] / (p[1] + p[4]);
    within(frequencies(z, {.top_p = above_p1}, n, 13), q4);
  }
  // Ties keep the lower id: with equal logits, top_k = 1 always draws the first of them.
  const std::vector<float> tie{1.0f, 3.0f, 3.0f, 0.0f};
  cai::rng_stream r(3, 0);
  for (int i = 0; i < 100; ++i) CHECK(cai::draw_token(tie, {.top_k = 1}, r).first == 1);
  // -inf logits are never drawn.
  const std::vector<float> masked{-INFINITY, 0.0f, -INFINITY};
  for (int i = 0; i < 100; ++i) CHECK(cai::draw_token(masked, {}, r).first == 1);
}

TEST_CASE("draw_token is deterministic for the stream and check_sampling_params names each bad field", "[sampling]") {
  const auto z = cai_test::normal_floats(30, 2.0f, 5);
  cai::rng_stream a(11, 4), b(11, 4);
  for (int i = 0; i < 50; ++i) CHECK(cai::draw_token(z, {.top_p = 0.9f}, a) == cai::draw_token(z, {.top_p = 0.9f}, b));
  CAI_REQUIRE_THROWS_NAMING(cai::draw_token(std::span<const float>(), {}, a), cai::invalid_argument, "z");
  for (const std::vector<float>& bad : {std::vector<float>{0.0f, NAN}, std::vector<float>{1.0f, INFINITY},
                                        std::vector<float>{-INFINITY, -INFINITY}})
    for (const cai::sampling_params& sp : {cai::sampling_params{}, cai::sampling_params{.top_k = 1}, cai::sampling_params{.top_p = 0.5f}})
      CAI_REQUIRE_THROWS_NAMING(cai::draw_token(bad, sp, a), cai::invalid_argument, "z", "finite log-sum-exp");
  const auto check = [](const cai::sampling_params& sp) { cai::check_sampling_params("call", sp); };
  CAI_REQUIRE_THROWS_NAMING(check({.temperature = 0.0f}), cai::invalid_argument, "temperature");
  CAI_REQUIRE_THROWS_NAMING(check({.temperature = NAN}), cai::invalid_argument, "temperature");
  CAI_REQUIRE_THROWS_NAMING(check({.top_k = -1}), cai::invalid_argument, "top_k");
  CAI_REQUIRE_THROWS_NAMING(check({.top_p = 0.0f}), cai::invalid_argument, "top_p");
  CAI_REQUIRE_THROWS_NAMING(check({.top_p = 1.5f}), cai::invalid_argument, "top_p");
  CAI_REQUIRE_THROWS_NAMING(check({.max_new_tokens = -1}), cai::invalid_argument, "max_new_tokens");
  check({});
}
