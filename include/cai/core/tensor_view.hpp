// cai/core/tensor_view.hpp — non-owning strided views with 64-bit extents and the memory space in the type.
//
//   tensor_view<const float, 2>                    host (N, V) logits
//   tensor_view<float, 1, device_space>            device (N) output
//
// Extents and strides are std::int64_t: RLHF shapes such as 32768 tokens x 151936 vocabulary exceed 2^31
// elements. Strides count elements, not bytes. The memory space is part of the type, so handing device memory
// to a host loop is a compile-time error; the type-erased any_view (any_view.hpp) checks it at run time.
//
// Access: operator() is unchecked and usable in device code; at() checks every index and throws
// cai::shape_error on the host. Debug checks never change the layout (three pointers' worth of state in every
// build), so translation units compiled with different flags can share views.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"

namespace cai {

/// Where memory lives. The run-time twin of the space tags below.
enum class memory_space : std::uint8_t { host, device };

/// Memory-space tag for memory the CPU reads directly.
struct host_space {
  static constexpr memory_space value = memory_space::host;
  static constexpr const char* name = "host";
};
/// Memory-space tag for GPU global memory.
struct device_space {
  static constexpr memory_space value = memory_space::device;
  static constexpr const char* name = "device";
};

inline constexpr const char* to_string(memory_space s) noexcept { return s == memory_space::host ? "host" : "device"; }

template <class S>
concept memory_space_tag = std::same_as<S, host_space> || std::same_as<S, device_space>;

/// A strided, non-owning view of `Rank` dimensions over elements of type T living in `Space`.
template <class T, std::size_t Rank, memory_space_tag Space = host_space>
class tensor_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using space = Space;
  using index_type = std::int64_t;
  using extents_type = std::array<std::int64_t, Rank>;
  static constexpr std::size_t rank = Rank;

  constexpr tensor_view() noexcept = default;

  /// A row-major contiguous view. Throws cai::invalid_argument (host) for a negative extent.
  constexpr tensor_view(T* data, const extents_type& extents) : data_(data) {
    for (std::size_t d = 0; d < Rank; ++d) extents_[d] = extents[d];
    check_extents();
    std::int64_t s = 1;
    for (std::size_t d = Rank; d-- > 0;) {
      strides_[d] = s;
      s *= extents_[d];
    }
  }
  /// A strided view. Throws cai::invalid_argument (host) for a negative extent or stride.
  constexpr tensor_view(T* data, const extents_type& extents, const extents_type& strides)
      : data_(data) {
    for (std::size_t d = 0; d < Rank; ++d) {
      extents_[d] = extents[d];
      strides_[d] = strides[d];
    }
    check_extents();
    for (std::size_t d = 0; d < Rank; ++d)
      if (strides_[d] < 0)
        detail::fail_argument("cai::tensor_view", "strides", "non-negative strides", strides_[d]);
  }

  /// Views of T convert to views of const T in the same space.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  constexpr tensor_view(const tensor_view<U, Rank, Space>& o) noexcept  // NOLINT(google-explicit-constructor)
      : data_(o.data_) {
    for (std::size_t d = 0; d < Rank; ++d) {
      extents_[d] = o.extents_[d];
      strides_[d] = o.strides_[d];
    }
  }

  CAI_HD constexpr T* data() const noexcept { return data_; }
  constexpr extents_type extents() const noexcept { return to_array(extents_); }
  constexpr extents_type strides() const noexcept { return to_array(strides_); }
  CAI_HD constexpr std::int64_t extent(std::size_t d) const noexcept { return extents_[d]; }
  CAI_HD constexpr std::int64_t stride(std::size_t d) const noexcept { return strides_[d]; }
  /// Number of elements (product of extents).
  CAI_HD constexpr std::int64_t size() const noexcept {
    std::int64_t n = 1;
    for (std::size_t d = 0; d < Rank; ++d) n *= extents_[d];
    return n;
  }
  CAI_HD constexpr bool empty() const noexcept { return size() == 0; }
  /// True when the view is row-major without gaps (extent-1 dimensions may have any stride).
  CAI_HD constexpr bool is_contiguous() const noexcept {
    std::int64_t s = 1;
    for (std::size_t d = Rank; d-- > 0;) {
      if (extents_[d] != 1 && strides_[d] != s) return false;
      s *= extents_[d];
    }
    return true;
  }
  /// True when the last dimension is dense (stride 1), which the row kernels require.
  CAI_HD constexpr bool is_row_contiguous() const noexcept {
    if constexpr (Rank == 0) return true;
    else return extents_[Rank - 1] <= 1 || strides_[Rank - 1] == 1;
  }

  /// Unchecked element access; usable on the device.
  template <std::integral... I>
    requires(sizeof...(I) == Rank)
  CAI_HD constexpr T& operator()(I... idx) const noexcept {
    return data_[offset_of(static_cast<std::int64_t>(idx)...)];
  }

  /// Checked element access on the host: throws cai::shape_error naming the dimension that is out of range.
  template <std::integral... I>
    requires(sizeof...(I) == Rank)
  constexpr T& at(I... idx) const {
    const std::array<std::int64_t, Rank> ix{static_cast<std::int64_t>(idx)...};
    for (std::size_t d = 0; d < Rank; ++d)
      if (ix[d] < 0 || ix[d] >= extents_[d])
        throw shape_error(detail::concat("cai::tensor_view::at: index ", ix[d], " out of range [0, ", extents_[d],
                                         ") in dimension ", d));
    return data_[offset_of(static_cast<std::int64_t>(idx)...)];
  }

  /// The (Rank-1)-dimensional view at index i of the first dimension (unchecked).
  CAI_HD constexpr auto operator[](std::int64_t i) const noexcept
    requires(Rank >= 2)
  {
    tensor_view<T, Rank - 1, Space> v;
    v.data_ = data_ + i * strides_[0];
    for (std::size_t d = 1; d < Rank; ++d) {
      v.extents_[d - 1] = extents_[d];
      v.strides_[d - 1] = strides_[d];
    }
    return v;
  }

 private:
  template <class, std::size_t, memory_space_tag>
  friend class tensor_view;

  template <class... I>
  CAI_HD constexpr std::int64_t offset_of(I... idx) const noexcept {
    std::int64_t off = 0;
    std::size_t d = 0;
    ((off += idx * strides_[d++]), ...);
    return off;
  }
  constexpr void check_extents() const {
    for (std::size_t d = 0; d < Rank; ++d)
      if (extents_[d] < 0)
        throw invalid_argument(
            detail::concat("cai::tensor_view: extent ", d, " is negative (", extents_[d], "); sizes must be >= 0"));
  }

  static constexpr extents_type to_array(const std::int64_t (&a)[Rank == 0 ? 1 : Rank]) noexcept {
    extents_type r{};
    for (std::size_t d = 0; d < Rank; ++d) r[d] = a[d];
    return r;
  }

  // Plain arrays, not std::array: their subscript is usable in device code without --expt-relaxed-constexpr.
  T* data_ = nullptr;
  std::int64_t extents_[Rank == 0 ? 1 : Rank]{};
  std::int64_t strides_[Rank == 0 ? 1 : Rank]{};
};

template <class T, std::size_t R>
using device_view = tensor_view<T, R, device_space>;

/// Contiguous host view over `data` with the given extents, e.g. make_view(p, {B, T}).
template <class T, std::size_t R>
constexpr tensor_view<T, R> make_view(T* data, const std::int64_t (&extents)[R]) {
  std::array<std::int64_t, R> e{};
  for (std::size_t d = 0; d < R; ++d) e[d] = extents[d];
  return tensor_view<T, R>(data, e);
}
/// Contiguous device view (the pointer must be device memory; the CUDA backend checks it at its boundary).
template <class T, std::size_t R>
constexpr tensor_view<T, R, device_space> make_device_view(T* data, const std::int64_t (&extents)[R]) {
  std::array<std::int64_t, R> e{};
  for (std::size_t d = 0; d < R; ++d) e[d] = extents[d];
  return tensor_view<T, R, device_space>(data, e);
}

template <class V>
inline constexpr bool is_tensor_view_v = false;
template <class T, std::size_t R, class S>
inline constexpr bool is_tensor_view_v<tensor_view<T, R, S>> = true;

namespace detail {

template <class T, std::size_t R, class S>
void require_extent(std::string_view call, std::string_view arg, const tensor_view<T, R, S>& v, std::size_t dim,
                    std::int64_t expected, std::string_view why) {
  if (v.extent(dim) != expected)
    fail_argument<shape_error>(call, arg, concat("extent(", dim, ") == ", expected, " (", why, ")"), v.extent(dim));
}

template <class T, std::size_t R, class S>
void require_contiguous(std::string_view call, std::string_view arg, const tensor_view<T, R, S>& v) {
  if (!v.is_contiguous()) fail_argument<layout_error>(call, arg, "a contiguous row-major view", "strided view");
}

template <class T, std::size_t R, class S>
void require_row_contiguous(std::string_view call, std::string_view arg, const tensor_view<T, R, S>& v) {
  if (!v.is_row_contiguous())
    fail_argument<layout_error>(call, arg, "stride 1 in the last dimension", concat("stride ", v.stride(R - 1)));
}

}  // namespace detail
}  // namespace cai
