// cai/core/tensor.hpp — an owning, contiguous, row-major tensor with an allocator parameter.
//
//   cai::tensor<float, 2> logp({B, T});          // host, zero-initialised
//   cai::tensor_view<float, 2> v = logp.view();
//
// The memory space follows the allocator: an allocator type may declare `using memory_space = cai::device_space;`
// (the CUDA backend's allocators do); otherwise it is host memory. Host tensors are value-initialised; device
// tensors are left uninitialised (filling them needs a stream, which the backend owns).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

#include "tensor_view.hpp"

namespace cai {

template <class Alloc>
struct allocator_space {
  using type = host_space;
};
template <class Alloc>
  requires requires { typename Alloc::memory_space; }
struct allocator_space<Alloc> {
  using type = typename Alloc::memory_space;
};

template <class T, std::size_t Rank, class Alloc = std::allocator<T>>
class tensor {
  using traits = std::allocator_traits<Alloc>;

 public:
  using value_type = T;
  using allocator_type = Alloc;
  using space = typename allocator_space<Alloc>::type;
  using extents_type = std::array<std::int64_t, Rank>;
  static constexpr std::size_t rank = Rank;

  tensor() = default;
  explicit tensor(const extents_type& extents, const Alloc& alloc = Alloc()) : alloc_(alloc), extents_(extents) {
    std::int64_t n = 1;
    for (std::size_t d = 0; d < Rank; ++d) {
      if (extents_[d] < 0)
        throw invalid_argument(detail::concat("cai::tensor: extent ", d, " is negative (", extents_[d], ")"));
      n *= extents_[d];
    }
    size_ = n;
    if (n > 0) {
      data_ = traits::allocate(alloc_, static_cast<std::size_t>(n));
      if constexpr (std::is_same_v<space, host_space>)
        for (std::int64_t i = 0; i < n; ++i) traits::construct(alloc_, data_ + i);
    }
  }
  tensor(const tensor& o)
    requires std::is_same_v<space, host_space>
      : tensor(o.extents_, traits::select_on_container_copy_construction(o.alloc_)) {
    for (std::int64_t i = 0; i < size_; ++i) data_[i] = o.data_[i];
  }
  tensor(tensor&& o) noexcept
      : alloc_(std::move(o.alloc_)), data_(std::exchange(o.data_, nullptr)), extents_(o.extents_),
        size_(std::exchange(o.size_, 0)) {}
  tensor& operator=(tensor o) noexcept {
    swap(o);
    return *this;
  }
  ~tensor() { release(); }

  void swap(tensor& o) noexcept {
    using std::swap;
    swap(alloc_, o.alloc_);
    swap(data_, o.data_);
    swap(extents_, o.extents_);
    swap(size_, o.size_);
  }

  tensor_view<T, Rank, space> view() noexcept { return {data_, extents_}; }
  tensor_view<const T, Rank, space> view() const noexcept { return {data_, extents_}; }
  operator tensor_view<T, Rank, space>() noexcept { return view(); }              // NOLINT
  operator tensor_view<const T, Rank, space>() const noexcept { return view(); }  // NOLINT

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  const extents_type& extents() const noexcept { return extents_; }
  std::int64_t extent(std::size_t d) const noexcept { return extents_[d]; }
  std::int64_t size() const noexcept { return size_; }

  template <std::integral... I>
  T& operator()(I... i) noexcept { return view()(i...); }
  template <std::integral... I>
  const T& operator()(I... i) const noexcept { return view()(i...); }
  template <std::integral... I>
  T& at(I... i) { return view().at(i...); }

 private:
  void release() noexcept {
    if (data_) {
      if constexpr (std::is_same_v<space, host_space>)
        for (std::int64_t i = 0; i < size_; ++i) traits::destroy(alloc_, data_ + i);
      traits::deallocate(alloc_, data_, static_cast<std::size_t>(size_));
      data_ = nullptr;
    }
  }

  [[no_unique_address]] Alloc alloc_{};
  T* data_ = nullptr;
  extents_type extents_{};
  std::int64_t size_ = 0;
};

}  // namespace cai
