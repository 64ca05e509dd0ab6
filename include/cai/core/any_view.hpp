// cai/core/any_view.hpp — a type-erased strided view with a run-time dtype, memory space and rank.
//
// Adapters (LibTorch tensors, DLPack capsules, Python buffers) hand cai an any_view; as<T, Rank, Space>()
// recovers the typed view after checking all three, and visit_floating() dispatches fp32/bf16/fp16/fp64 logits to
// a typed call. Each failure is an exception naming the call and the argument.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "half.hpp"
#include "tensor_view.hpp"

namespace cai {

/// Run-time element types.
enum class dtype : std::uint8_t { f32, f64, bf16, f16, i32, i64, u8, i8, boolean };

inline constexpr const char* to_string(dtype d) noexcept {
  switch (d) {
    case dtype::f32: return "float32";
    case dtype::f64: return "float64";
    case dtype::bf16: return "bfloat16";
    case dtype::f16: return "float16";
    case dtype::i32: return "int32";
    case dtype::i64: return "int64";
    case dtype::u8: return "uint8";
    case dtype::i8: return "int8";
    case dtype::boolean: return "bool";
  }
  return "unknown";
}

inline constexpr std::size_t size_of(dtype d) noexcept {
  switch (d) {
    case dtype::f64:
    case dtype::i64: return 8;
    case dtype::f32:
    case dtype::i32: return 4;
    case dtype::bf16:
    case dtype::f16: return 2;
    default: return 1;
  }
}

template <class T>
inline constexpr bool has_dtype_v = false;
template <class T>
inline constexpr dtype dtype_of_v = dtype::f32;
#define CAI_DETAIL_DTYPE(T, D)                    \
  template <>                                     \
  inline constexpr bool has_dtype_v<T> = true;    \
  template <>                                     \
  inline constexpr dtype dtype_of_v<T> = dtype::D;
CAI_DETAIL_DTYPE(float, f32)
CAI_DETAIL_DTYPE(double, f64)
CAI_DETAIL_DTYPE(bfloat16, bf16)
CAI_DETAIL_DTYPE(float16, f16)
CAI_DETAIL_DTYPE(std::int32_t, i32)
CAI_DETAIL_DTYPE(std::int64_t, i64)
CAI_DETAIL_DTYPE(std::uint8_t, u8)
CAI_DETAIL_DTYPE(std::int8_t, i8)
CAI_DETAIL_DTYPE(bool, boolean)
#undef CAI_DETAIL_DTYPE

/// A type-erased view. Up to max_rank dimensions; strides in elements.
struct any_view {
  static constexpr std::size_t max_rank = 8;

  void* data = nullptr;
  dtype type = dtype::f32;
  memory_space space = memory_space::host;
  bool read_only = false;
  std::size_t rank = 0;
  std::array<std::int64_t, max_rank> extents{};
  std::array<std::int64_t, max_rank> strides{};

  any_view() = default;

  /// Erases a typed view (const element types give a read-only any_view).
  template <class T, std::size_t R, class S>
    requires has_dtype_v<std::remove_const_t<T>> && (R <= max_rank)
  any_view(const tensor_view<T, R, S>& v) noexcept  // NOLINT(google-explicit-constructor)
      : data(const_cast<std::remove_const_t<T>*>(v.data())), type(dtype_of_v<std::remove_const_t<T>>),
        space(S::value), read_only(std::is_const_v<T>), rank(R) {
    for (std::size_t d = 0; d < R; ++d) {
      extents[d] = v.extent(d);
      strides[d] = v.stride(d);
    }
  }

  /// Recovers the typed view; throws dtype_error, shape_error (rank) or memory_space_error naming `arg`.
  template <class T, std::size_t R, class S = host_space>
  tensor_view<T, R, S> as(std::string_view call, std::string_view arg) const {
    using U = std::remove_const_t<T>;
    static_assert(has_dtype_v<U>, "cai::any_view::as: element type has no run-time dtype");
    if (type != dtype_of_v<U>) detail::fail_argument<dtype_error>(call, arg, to_string(dtype_of_v<U>), to_string(type));
    if (rank != R) detail::fail_argument<shape_error>(call, arg, detail::concat("rank ", R), detail::concat("rank ", rank));
    if (space != S::value)
      detail::fail_argument<memory_space_error>(call, arg, detail::concat(S::name, " memory"),
                                                detail::concat(to_string(space), " memory"));
    if (read_only && !std::is_const_v<T>)
      detail::fail_argument<invalid_argument>(call, arg, "a writable view", "a read-only view");
    std::array<std::int64_t, R> e{}, s{};
    for (std::size_t d = 0; d < R; ++d) {
      e[d] = extents[d];
      s[d] = strides[d];
    }
    return tensor_view<T, R, S>(static_cast<T*>(data), e, s);
  }
};

/// Calls f(tensor_view<const T, R, S>) with T the floating element type of `v` (fp32, fp64, bf16, fp16);
/// throws dtype_error naming `arg` for any other dtype.
template <std::size_t R, class S = host_space, class F>
decltype(auto) visit_floating(const any_view& v, std::string_view call, std::string_view arg, F&& f) {
  switch (v.type) {
    case dtype::f32: return f(v.as<const float, R, S>(call, arg));
    case dtype::f64: return f(v.as<const double, R, S>(call, arg));
    case dtype::bf16: return f(v.as<const bfloat16, R, S>(call, arg));
    case dtype::f16: return f(v.as<const float16, R, S>(call, arg));
    default:
      detail::fail_argument<dtype_error>(call, arg, "a floating dtype (float32, float64, bfloat16, float16)",
                                         to_string(v.type));
  }
}

}  // namespace cai
