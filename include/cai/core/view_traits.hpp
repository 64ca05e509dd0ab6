// cai/core/view_traits.hpp — normalising the many things users pass as tensors into const/mutable views.
#pragma once

#include <cstddef>
#include <type_traits>

#include "tensor.hpp"
#include "tensor_view.hpp"

namespace cai {

namespace detail {
template <class X>
struct view_traits {
  static constexpr bool is_view = false;
};
template <class T, std::size_t R, class S>
struct view_traits<tensor_view<T, R, S>> {
  static constexpr bool is_view = true;
  using element = std::remove_const_t<T>;
  using space = S;
  static constexpr std::size_t rank = R;
  static tensor_view<const element, R, S> as_const(const tensor_view<T, R, S>& v) { return v; }
};
template <class T, std::size_t R, class A>
struct view_traits<tensor<T, R, A>> {
  static constexpr bool is_view = true;
  using element = T;
  using space = typename tensor<T, R, A>::space;
  static constexpr std::size_t rank = R;
  static tensor_view<const T, R, space> as_const(const tensor<T, R, A>& t) { return t.view(); }
};
}  // namespace detail

/// A tensor_view or an owning tensor (anything cai can read as a view).
template <class X>
concept viewable = detail::view_traits<std::remove_cvref_t<X>>::is_view;

template <viewable X>
using element_of_t = typename detail::view_traits<std::remove_cvref_t<X>>::element;
template <viewable X>
using space_of_t = typename detail::view_traits<std::remove_cvref_t<X>>::space;
template <viewable X>
inline constexpr std::size_t rank_of_v = detail::view_traits<std::remove_cvref_t<X>>::rank;

/// The read-only view of x.
template <viewable X>
auto as_const_view(const X& x) {
  return detail::view_traits<std::remove_cvref_t<X>>::as_const(x);
}

/// Tag meaning "no mask: every position counts".
struct no_mask_t {
  explicit constexpr no_mask_t() = default;
};
inline constexpr no_mask_t no_mask{};

}  // namespace cai
