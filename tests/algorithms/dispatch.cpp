// Tests for cai/algorithms/dispatch.hpp: the dispatch order of customisation-point objects.
#include <cai/algorithms/logprobs.hpp>

#include <atomic>
#include <cstring>
#include <vector>

#include "../support.hpp"

namespace user {

// A user backend derived from a built-in one, overriding one algorithm by an ADL overload.
struct traced_host : cai::host {
  mutable int calls = 0;
};
template <class T, class Idx>
cai::logprob_summary token_logprobs(const traced_host& b, const cai::logprob_problem<T, Idx, cai::host_space>& p) {
  ++b.calls;
  auto s = cai::generic::token_logprobs(static_cast<const cai::host&>(b), p);  // delegate, then mark
  s.scored_rows += 1000;
  return s;
}

// A backend that offers its own member implementation (the way cai::cuda plugs in kernels).
struct member_backend {
  using backend_concept = cai::backend_t;
  using memory_space = cai::host_space;
  mutable int calls = 0;
  template <class T, class Idx>
  cai::logprob_summary token_logprobs(const cai::logprob_problem<T, Idx, cai::host_space>&) const {
    ++calls;
    return {42, 0};
  }
};

// A backend with only the bulk primitive: every generic algorithm runs on it, through its own scheduling.
struct counting_bulk_backend {
  using backend_concept = cai::backend_t;
  using memory_space = cai::host_space;
  mutable std::atomic<std::int64_t> chunks{0};
  template <class F>
  void bulk(std::int64_t n, F&& f) const {
    for (std::int64_t i = n; i-- > 0;) {  // reverse order: results must not depend on chunk order
      ++chunks;
      f(i);
    }
  }
};

}  // namespace user

namespace {
struct problem_data {
  std::int64_t N = 64, V = 3000;
  std::vector<float> logits = cai_test::normal_floats(64 * 3000, 1.0f, 1);
  std::vector<std::int32_t> targets = cai_test::random_ids(64, 3000, 2);
  std::vector<float> logp = std::vector<float>(64);
  template <class B>
  cai::logprob_summary run(const B& b) {
    return cai::token_logprobs(b, cai::make_view(static_cast<const float*>(logits.data()), {N, V}),
                               cai::make_view(static_cast<const std::int32_t*>(targets.data()), {N}), cai::no_mask,
                               {.logp = cai::make_view(logp.data(), {N})});
  }
};
}  // namespace

TEST_CASE("a user's ADL overload wins, even for a backend derived from cai::host", "[dispatch]") {
  problem_data d;
  user::traced_host b;
  const auto s = d.run(b);
  CHECK(b.calls == 1);
  CHECK(s.scored_rows == 1064);
}

TEST_CASE("a backend's own member implementation is used when there is no ADL overload", "[dispatch]") {
  problem_data d;
  user::member_backend b;
  CHECK(d.run(b).scored_rows == 42);
  CHECK(b.calls == 1);
}

TEST_CASE("the generic implementation runs on any bulk backend through its bulk primitive, with the same bits",
          "[dispatch]") {
  problem_data d, ref;
  user::counting_bulk_backend b;
  CHECK(d.run(b).scored_rows == 64);
  CHECK(b.chunks.load() > 1);  // really chunked, not one sequential call
  ref.run(cai::host{});
  CHECK(std::memcmp(d.logp.data(), ref.logp.data(), d.logp.size() * sizeof(float)) == 0);
}

TEST_CASE("arguments are validated before dispatch, whatever the backend", "[dispatch]") {
  problem_data d;
  user::member_backend b;
  CAI_REQUIRE_THROWS_NAMING(cai::token_logprobs(b, cai::make_view(static_cast<const float*>(d.logits.data()), {d.N, d.V}),
                                                cai::make_view(static_cast<const std::int32_t*>(d.targets.data()), {d.N - 1}),
                                                cai::no_mask, {.logp = cai::make_view(d.logp.data(), {d.N})}),
                            cai::shape_error, "'targets'");
  CHECK(b.calls == 0);
}
