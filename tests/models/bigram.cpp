// Tests for cai/models/bigram.hpp beyond the concept tests (tests/concepts/concepts.cpp): exact gradients
// against finite differences of the fp64 reference, backend independence and bad input.
#include <cai/models/bigram.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "../support.hpp"

namespace {
// fp64 reference of L = sum_t a_t logp_t over the scored positions, from the weights directly.
double reference_loss(const cai::tensor_view<const float, 2>& W, const std::vector<std::int32_t>& tok, std::int64_t T,
                      const std::vector<double>& a) {
  const std::int64_t V = W.extent(0);
  std::vector<double> row(static_cast<std::size_t>(V));
  double L = 0;
  for (std::int64_t t = 1; t < T; ++t) {
    for (std::int64_t j = 0; j < V; ++j) row[static_cast<std::size_t>(j)] = W(tok[static_cast<std::size_t>(t - 1)], j);
    L += a[static_cast<std::size_t>(t)] * cai_test::reference_row(row.data(), V, tok[static_cast<std::size_t>(t)], 1.0).logp;
  }
  return L;
}
}  // namespace

TEST_CASE("bigram gradients match finite differences and do not depend on the backend", "[models]") {
  const std::int64_t V = 9, T = 12;
  const auto tok = cai_test::random_ids(T, V, 5);
  const std::vector<std::uint8_t> mask(T, 1);
  const cai::token_batch batch{cai::make_view(tok.data(), {1, T}), cai::make_view(mask.data(), {1, T})};
  const auto a = cai_test::normal_floats(T, 1.0f, 6);
  cai::models::bigram_lm<> lm(V, cai::host{}, 3, 0.5f);
  cai::models::bigram_lm<cai::threaded_host> lm2(V, cai::threaded_host(2), 3, 0.5f);
  lm.zero_grad();
  lm2.zero_grad();
  lm.backward(lm.train_forward(batch, {}), {.dlogp = cai::make_view(a.data(), {1, T})});
  lm2.backward(lm2.train_forward(batch, {}), {.dlogp = cai::make_view(a.data(), {1, T})});
  CHECK(std::memcmp(lm.grads().data(), lm2.grads().data(), static_cast<std::size_t>(V * V) * sizeof(float)) == 0);

  const std::vector<double> ad(a.begin(), a.end());
  const auto u = cai_test::normal_floats(V * V, 1.0f, 7);
  std::vector<float> W0(lm.weights().data(), lm.weights().data() + V * V);
  const double eps = 1e-3;
  auto loss_at = [&](double sign) {
    for (std::int64_t i = 0; i < V * V; ++i) lm.weights().data()[i] = W0[static_cast<std::size_t>(i)] + static_cast<float>(sign * eps) * u[static_cast<std::size_t>(i)];
    return reference_loss(lm.weights(), tok, T, ad);
  };
  const double fd = (loss_at(1) - loss_at(-1)) / (2 * eps);
  double analytic = 0;
  for (std::int64_t i = 0; i < V * V; ++i) analytic += static_cast<double>(lm.grads().data()[i]) * u[static_cast<std::size_t>(i)];
  INFO("analytic " << analytic << " fd " << fd);
  CHECK(std::fabs(analytic - fd) <= 1e-3 * (1 + std::fabs(fd)));
}

TEST_CASE("the bigram model rejects bad input naming the argument", "[models]") {
  CAI_REQUIRE_THROWS_NAMING(cai::models::bigram_lm<>(1), cai::invalid_argument, "'vocab'");
  cai::models::bigram_lm<> lm(4);
  CAI_REQUIRE_THROWS_NAMING(lm.step(-1.0), cai::invalid_argument, "'learning_rate'");
  const std::vector<std::int32_t> tok{1, 2, 3};
  const std::vector<std::uint8_t> mask{1, 1};
  CAI_REQUIRE_THROWS_NAMING(lm.train_forward({cai::make_view(tok.data(), {1, 3}), cai::make_view(mask.data(), {1, 2})}, {}),
                            cai::shape_error, "'batch.mask'");
  decltype(lm)::forward_handle empty;
  const std::vector<float> g(3);
  CAI_REQUIRE_THROWS_NAMING(lm.backward(std::move(empty), {.dlogp = cai::make_view(g.data(), {1, 3})}), cai::invalid_argument,
                            "'handle'");
}
