// cai/torch/tensor.hpp — zero-copy views between LibTorch tensors, DLPack tensors and cai views (component cai::torch).
//
//   torch_any_view(t, call, arg)          at::Tensor -> cai::any_view: the same memory (storage offset included), its
//                                          strides in elements, dtype, and memory space (CPU -> host, CUDA -> device).
//   torch_view<T, R, Space>(t, call, arg) at::Tensor -> tensor_view<T, R, Space>, checked: dtype, rank, device.
//   torch_tensor(view, device_index)      tensor_view / any_view -> at::Tensor over the same memory (torch::from_blob,
//                                          non-owning: the caller keeps the memory alive while the tensor is used).
//   dlpack_view(dl, call, arg)            DLTensor -> cai::any_view (the DLPack capsule stays the owner).
//   to_dlpack(view, keep_alive, device)   any_view -> DLManagedTensor* that any DLPack consumer (at::fromDLPack, CuPy,
//                                          JAX, NumPy) takes over; its deleter releases `keep_alive`.
// LibTorch's own at::toDLPack / at::fromDLPack (<ATen/DLConvertor.h>) complete the round trip.
//
// Nothing is copied anywhere here. A view of a tensor is valid while the tensor's storage is; a tensor or capsule made
// from a view is valid while the viewed memory is. Bad input is a cai exception naming `arg`: an undefined or sparse
// tensor (cai::invalid_argument), a dtype cai has no element type for (cai::dtype_error), a rank other than R
// (cai::shape_error), a device that is neither CPU nor CUDA — e.g. "meta" — or the wrong one for Space
// (cai::memory_space_error); DLPack vector lanes, complex types, unknown devices or a byte_offset that is not a
// multiple of the element size likewise; to_dlpack refuses read-only (const) views, since a consumer may write.
// Device indices: torch_tensor and to_dlpack label device memory with the index they are given (default 0).
//
//   at::Tensor logits = model->forward(ids);                                  // (B, T, V) float on the CPU
//   auto v = cai::torch_view<const float, 3>(logits, "my_call", "logits");    // same memory, checked
//   cai::token_logprobs(cai::host{}, v, tokens, mask, {.logp = logp});
#pragma once

#include <ATen/DLConvertor.h>
#include <ATen/dlpack.h>
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

#include "../core/any_view.hpp"
#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/tensor_view.hpp"

namespace cai {

/// cai's run-time dtype for a LibTorch scalar type; cai::dtype_error naming `arg` for one cai has no element for.
inline dtype from_torch_dtype(c10::ScalarType s, std::string_view call, std::string_view arg) {
  switch (s) {
    case c10::ScalarType::Float: return dtype::f32;
    case c10::ScalarType::Double: return dtype::f64;
    case c10::ScalarType::BFloat16: return dtype::bf16;
    case c10::ScalarType::Half: return dtype::f16;
    case c10::ScalarType::Int: return dtype::i32;
    case c10::ScalarType::Long: return dtype::i64;
    case c10::ScalarType::Byte: return dtype::u8;
    case c10::ScalarType::Char: return dtype::i8;
    case c10::ScalarType::Bool: return dtype::boolean;
    default:
      detail::fail_argument<dtype_error>(call, arg, "float32, float64, bfloat16, float16, int32, int64, uint8, int8 or bool",
                                         c10::toString(s));
  }
}

/// The LibTorch scalar type of a cai dtype.
inline c10::ScalarType to_torch_dtype(dtype d) noexcept {
  switch (d) {
    case dtype::f32: return c10::ScalarType::Float;
    case dtype::f64: return c10::ScalarType::Double;
    case dtype::bf16: return c10::ScalarType::BFloat16;
    case dtype::f16: return c10::ScalarType::Half;
    case dtype::i32: return c10::ScalarType::Int;
    case dtype::i64: return c10::ScalarType::Long;
    case dtype::u8: return c10::ScalarType::Byte;
    case dtype::i8: return c10::ScalarType::Char;
    case dtype::boolean: return c10::ScalarType::Bool;
  }
  return c10::ScalarType::Float;
}

/// A type-erased view of `t`'s memory (see the header comment).
inline any_view torch_any_view(const at::Tensor& t, std::string_view call = "cai::torch_any_view", std::string_view arg = "tensor") {
  if (!t.defined()) detail::fail_argument(call, arg, "a defined tensor", "an undefined tensor");
  if (t.layout() != c10::kStrided)
    detail::fail_argument(call, arg, "a dense (strided) tensor", detail::concat("layout ", c10::toString(t.layout())));
  if (static_cast<std::size_t>(t.dim()) > any_view::max_rank)
    detail::fail_argument<shape_error>(call, arg, detail::concat("rank <= ", any_view::max_rank), detail::concat("rank ", t.dim()));
  any_view v;
  v.type = from_torch_dtype(t.scalar_type(), call, arg);
  if (t.device().is_cpu()) v.space = memory_space::host;
  else if (t.device().is_cuda()) v.space = memory_space::device;
  else
    detail::fail_argument<memory_space_error>(call, arg, "a CPU or CUDA tensor", detail::concat("a tensor on ", t.device().str()));
  v.rank = static_cast<std::size_t>(t.dim());
  for (std::size_t d = 0; d < v.rank; ++d) {
    v.extents[d] = t.size(static_cast<std::int64_t>(d));
    v.strides[d] = t.stride(static_cast<std::int64_t>(d));
  }
  v.data = t.numel() > 0 ? t.data_ptr() : nullptr;
  v.read_only = false;
  return v;
}

/// A typed view of `t`'s memory; every property checked (see the header comment).
template <class T, std::size_t R, memory_space_tag Space = host_space>
tensor_view<T, R, Space> torch_view(const at::Tensor& t, std::string_view call = "cai::torch_view", std::string_view arg = "tensor") {
  return torch_any_view(t, call, arg).template as<T, R, Space>(call, arg);
}

/// A tensor over the viewed memory (non-owning; see the header comment). Device views give CUDA tensors on
/// `device_index`.
inline at::Tensor torch_tensor(const any_view& v, int device_index = 0) {
  std::vector<std::int64_t> sizes(v.extents.begin(), v.extents.begin() + static_cast<std::ptrdiff_t>(v.rank));
  std::vector<std::int64_t> strides(v.strides.begin(), v.strides.begin() + static_cast<std::ptrdiff_t>(v.rank));
  const c10::Device dev = v.space == memory_space::host
                              ? c10::Device(c10::kCPU)
                              : c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device_index));
  return ::torch::from_blob(v.data, sizes, strides, ::torch::TensorOptions().dtype(to_torch_dtype(v.type)).device(dev));
}
template <class T, std::size_t R, class S>
at::Tensor torch_tensor(const tensor_view<T, R, S>& v, int device_index = 0) {
  return torch_tensor(any_view(v), device_index);
}

/// A view of a DLPack tensor's memory (see the header comment).
inline any_view dlpack_view(const DLTensor& dl, std::string_view call = "cai::dlpack_view", std::string_view arg = "tensor") {
  any_view v;
  if (dl.dtype.lanes != 1)
    detail::fail_argument<dtype_error>(call, arg, "scalar elements (lanes = 1)", detail::concat("lanes = ", dl.dtype.lanes));
  const auto code = dl.dtype.code, bits = dl.dtype.bits;
  if (code == kDLFloat && bits == 32) v.type = dtype::f32;
  else if (code == kDLFloat && bits == 64) v.type = dtype::f64;
  else if (code == kDLFloat && bits == 16) v.type = dtype::f16;
  else if (code == kDLBfloat && bits == 16) v.type = dtype::bf16;
  else if (code == kDLInt && bits == 32) v.type = dtype::i32;
  else if (code == kDLInt && bits == 64) v.type = dtype::i64;
  else if (code == kDLInt && bits == 8) v.type = dtype::i8;
  else if (code == kDLUInt && bits == 8) v.type = dtype::u8;
  else
    detail::fail_argument<dtype_error>(call, arg, "float32/64/16, bfloat16, int32/64/8 or uint8",
                                       detail::concat("DLPack type code ", int(code), " with ", int(bits), " bits"));
  switch (dl.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost: v.space = memory_space::host; break;
    case kDLCUDA:
    case kDLCUDAManaged: v.space = memory_space::device; break;
    default:
      detail::fail_argument<memory_space_error>(call, arg, "a CPU, CUDA-host, CUDA or CUDA-managed tensor",
                                                detail::concat("DLPack device type ", int(dl.device.device_type)));
  }
  if (dl.ndim < 0 || static_cast<std::size_t>(dl.ndim) > any_view::max_rank)
    detail::fail_argument<shape_error>(call, arg, detail::concat("rank in [0, ", any_view::max_rank, "]"), detail::concat("rank ", dl.ndim));
  v.rank = static_cast<std::size_t>(dl.ndim);
  std::int64_t s = 1;
  for (std::size_t d = v.rank; d-- > 0;) {
    v.extents[d] = dl.shape[d];
    if (v.extents[d] < 0) detail::fail_argument<shape_error>(call, arg, "non-negative extents", v.extents[d]);
    v.strides[d] = dl.strides ? dl.strides[d] : s;  // DLPack: null strides mean compact row-major
    if (v.strides[d] < 0) detail::fail_argument<layout_error>(call, arg, "non-negative strides", v.strides[d]);
    s *= v.extents[d];
  }
  if (dl.byte_offset % size_of(v.type) != 0)
    detail::fail_argument<layout_error>(call, arg, detail::concat("a byte_offset that is a multiple of ", size_of(v.type)),
                                        dl.byte_offset);
  v.data = dl.data ? static_cast<char*>(dl.data) + dl.byte_offset : nullptr;
  return v;
}

namespace detail::tch {
struct dlpack_owner {
  DLManagedTensor managed{};
  std::array<std::int64_t, any_view::max_rank> shape{}, strides{};
  std::shared_ptr<void> keep_alive;
};
}  // namespace detail::tch

/// Exports a view as a DLPack capsule; the consumer calls its deleter, which releases `keep_alive` (see the header
/// comment). Device views are exported as kDLCUDA on `device_id`.
inline DLManagedTensor* to_dlpack(const any_view& v, std::shared_ptr<void> keep_alive = {}, int device_id = 0) {
  if (v.read_only)  // a DLPack consumer may write through the capsule
    detail::fail_argument("cai::to_dlpack", "view", "a writable view", "a read-only view");
  auto owner = std::make_unique<detail::tch::dlpack_owner>();
  owner->keep_alive = std::move(keep_alive);
  DLTensor& dl = owner->managed.dl_tensor;
  dl.data = v.data;
  dl.device = DLDevice{v.space == memory_space::host ? kDLCPU : kDLCUDA, v.space == memory_space::host ? 0 : device_id};
  dl.ndim = static_cast<int>(v.rank);
  switch (v.type) {
    case dtype::f32: dl.dtype = {kDLFloat, 32, 1}; break;
    case dtype::f64: dl.dtype = {kDLFloat, 64, 1}; break;
    case dtype::f16: dl.dtype = {kDLFloat, 16, 1}; break;
    case dtype::bf16: dl.dtype = {kDLBfloat, 16, 1}; break;
    case dtype::i32: dl.dtype = {kDLInt, 32, 1}; break;
    case dtype::i64: dl.dtype = {kDLInt, 64, 1}; break;
    case dtype::i8: dl.dtype = {kDLInt, 8, 1}; break;
    case dtype::u8: dl.dtype = {kDLUInt, 8, 1}; break;
    case dtype::boolean:  // DLPack 0.6 (LibTorch 1.13's) has no boolean type code
      detail::fail_argument<dtype_error>("cai::to_dlpack", "view", "a dtype DLPack 0.6 can express (not bool)", "bool");
  }
  for (std::size_t d = 0; d < v.rank; ++d) {
    owner->shape[d] = v.extents[d];
    owner->strides[d] = v.strides[d];
  }
  dl.shape = owner->shape.data();
  dl.strides = owner->strides.data();
  dl.byte_offset = 0;
  owner->managed.manager_ctx = owner.get();
  owner->managed.deleter = [](DLManagedTensor* self) { delete static_cast<detail::tch::dlpack_owner*>(self->manager_ctx); };
  return &owner.release()->managed;
}

}  // namespace cai
