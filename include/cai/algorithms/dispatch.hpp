// cai/algorithms/dispatch.hpp — customisation-point objects and the generic primitives.
//
// Every public algorithm is an object `cai::NAME` whose call takes the backend first. Its implementation is
// chosen at compile time, in this order:
//   1. a function NAME(backend, problem) found by argument-dependent lookup — a user's overload for their own
//      backend type, which wins even when that type derives from a built-in backend;
//   2. the backend's own member, backend.NAME(problem) (how cai::cuda plugs in its kernels, kernels/cuda_backend.cuh);
//   3. the generic implementation cai::generic::NAME(backend, problem), written on the bulk primitive, so a
//      threaded backend runs it in parallel;
//   4. otherwise a static_assert that names the algorithm.
// The CPO validates arguments before dispatching, so every implementation receives a checked problem.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "../concepts/backend.hpp"

namespace cai {

template <class>
inline constexpr bool dependent_false_v = false;

/// Defines the dispatch object detail::NAME##_cpo::fn for algorithm NAME (used by the algorithm headers).
#define CAI_DETAIL_DISPATCH(NAME)                                                                                 \
  namespace generic {}                                                                                            \
  namespace detail::NAME##_cpo {                                                                                  \
  void NAME() = delete; /* blocks ordinary lookup of the CPO object, so step 1 sees ADL overloads only */         \
  template <class B, class P>                                                                                     \
  concept has_adl = requires(const B& b, const P& p) { NAME(b, p); };                                             \
  template <class B, class P>                                                                                     \
  concept has_member = requires(const B& b, const P& p) { b.NAME(p); };                                           \
  template <class B, class P>                                                                                     \
  concept has_generic = requires(const B& b, const P& p) { ::cai::generic::NAME(b, p); };                         \
  template <class B, class P>                                                                                     \
  decltype(auto) dispatch(const B& b, const P& p) {                                                               \
    if constexpr (has_adl<B, P>) return NAME(b, p);                                                               \
    else if constexpr (has_member<B, P>) return b.NAME(p);                                                        \
    else if constexpr (has_generic<B, P>) return ::cai::generic::NAME(b, p);                                      \
    else                                                                                                          \
      static_assert(::cai::dependent_false_v<B>,                                                                  \
                    "cai::" #NAME ": this backend has no implementation (no ADL overload " #NAME                  \
                    "(backend, problem), no member backend." #NAME "(problem), and it is not a bulk_backend). "   \
                    "cai::cuda implements the algorithms of <cai/kernels/cuda_backend.cuh> (include it in a .cu file).");                    \
  }                                                                                                               \
  }

/// As CAI_DETAIL_DISPATCH for algorithms called with a typed configuration (an objective, an estimator, a KL
/// placement) before the problem: NAME(backend, config, problem), backend.NAME(config, problem),
/// cai::generic::NAME(backend, config, problem).
#define CAI_DETAIL_DISPATCH_CONFIGURED(NAME)                                                                      \
  namespace generic {}                                                                                            \
  namespace detail::NAME##_cpo {                                                                                  \
  void NAME() = delete;                                                                                           \
  template <class B, class C, class P>                                                                            \
  decltype(auto) dispatch(const B& b, const C& c, const P& p) {                                                   \
    if constexpr (requires { NAME(b, c, p); }) return NAME(b, c, p);                                              \
    else if constexpr (requires { b.NAME(c, p); }) return b.NAME(c, p);                                           \
    else if constexpr (requires { ::cai::generic::NAME(b, c, p); }) return ::cai::generic::NAME(b, c, p);         \
    else                                                                                                          \
      static_assert(::cai::dependent_false_v<B>, "cai::" #NAME ": this backend has no implementation (no ADL "     \
                                                 "overload, no member, and it is not a bulk_backend).");          \
  }                                                                                                               \
  }

namespace detail {

/// Number of fixed-size chunks covering n items.
constexpr std::int64_t chunk_count(std::int64_t n, std::int64_t grain) noexcept {
  return n <= 0 ? 0 : (n + grain - 1) / grain;
}

}  // namespace detail

/// Calls f(begin, end) over [0, n) cut into chunks of `grain` items (the last may be shorter). Chunk boundaries
/// depend on n and grain only.
template <bulk_backend B, class F>
void parallel_for(const B& b, std::int64_t n, std::int64_t grain, F&& f) {
  grain = std::max<std::int64_t>(grain, 1);
  b.bulk(detail::chunk_count(n, grain), [&](std::int64_t c) { f(c * grain, std::min(n, (c + 1) * grain)); });
}

/// Chunked reduction: map(begin, end) -> T per chunk, then a left fold of the chunk results in chunk order with
/// combine(T, T). The result is bitwise independent of the backend's thread count.
template <bulk_backend B, class T, class Map, class Combine>
T chunked_reduce(const B& b, std::int64_t n, std::int64_t grain, T init, Map&& map, Combine&& combine) {
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t chunks = detail::chunk_count(n, grain);
  std::vector<T> partial(static_cast<std::size_t>(chunks), init);
  b.bulk(chunks, [&](std::int64_t c) {
    partial[static_cast<std::size_t>(c)] = map(c * grain, std::min(n, (c + 1) * grain));
  });
  T acc = init;
  for (const T& p : partial) acc = combine(acc, p);
  return acc;
}

/// Chunked inclusive scan of x[0..n) with an associative op into out (may alias x): each chunk is reduced, the
/// chunk totals are scanned in order, then each chunk is rescanned from its carry. Same bits at any thread count.
template <bulk_backend B, class T, class Op>
void chunked_inclusive_scan(const B& b, const T* x, T* out, std::int64_t n, std::int64_t grain, T identity, Op op) {
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t chunks = detail::chunk_count(n, grain);
  std::vector<T> carry(static_cast<std::size_t>(chunks), identity);
  b.bulk(chunks, [&](std::int64_t c) {
    T acc = identity;
    for (std::int64_t i = c * grain, e = std::min(n, (c + 1) * grain); i < e; ++i) acc = op(acc, x[i]);
    carry[static_cast<std::size_t>(c)] = acc;
  });
  T run = identity;
  for (auto& c : carry) {
    const T total = c;
    c = run;
    run = op(run, total);
  }
  b.bulk(chunks, [&](std::int64_t c) {
    T acc = carry[static_cast<std::size_t>(c)];
    for (std::int64_t i = c * grain, e = std::min(n, (c + 1) * grain); i < e; ++i) out[i] = acc = op(acc, x[i]);
  });
}

}  // namespace cai
