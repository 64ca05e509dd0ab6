// cai/concepts/backend.hpp — what a backend is.
//
// A backend says where and how the math runs (like a Thrust execution policy). Opt in with
//   struct my_backend { using backend_concept = cai::backend_t; using memory_space = cai::host_space; };
// and the algorithms accept it. A backend that also offers the bulk primitive
//   void bulk(std::int64_t n, F f) const;   // f(i) for every i in [0, n), possibly concurrently
// gets every generic algorithm for free (bulk_backend). Backends may override any single algorithm by an ADL
// overload or a member function; see algorithms/dispatch.hpp for the order.
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "../core/host.hpp"
#include "../core/tensor_view.hpp"

namespace cai {

namespace detail {
struct bulk_probe {
  void operator()(std::int64_t) const noexcept {}
};
}  // namespace detail

/// A type that opted in as a backend and names its memory space.
template <class B>
concept backend = requires {
  typename std::remove_cvref_t<B>::backend_concept;
  typename std::remove_cvref_t<B>::memory_space;
} && std::derived_from<typename std::remove_cvref_t<B>::backend_concept, backend_t> &&
                  memory_space_tag<typename std::remove_cvref_t<B>::memory_space>;

/// A host backend offering the bulk primitive, on which the generic algorithms are written.
template <class B>
concept bulk_backend = backend<B> && std::same_as<typename std::remove_cvref_t<B>::memory_space, host_space> &&
                       requires(const std::remove_cvref_t<B>& b, detail::bulk_probe f) { b.bulk(std::int64_t{1}, f); };

template <backend B>
using backend_space_t = typename std::remove_cvref_t<B>::memory_space;

static_assert(bulk_backend<host> && bulk_backend<threaded_host>);

}  // namespace cai
