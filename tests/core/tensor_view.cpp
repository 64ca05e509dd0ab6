// Tests for cai/core/tensor_view.hpp, tensor.hpp and any_view.hpp.
#include <cai/core/any_view.hpp>
#include <cai/core/tensor.hpp>
#include <cai/core/tensor_view.hpp>
#include <cai/core/view_traits.hpp>

#include <numeric>
#include <vector>

#include "../support.hpp"

TEST_CASE("tensor_view has 64-bit extents, row-major strides and unchecked and checked access", "[core]") {
  std::vector<int> data(2 * 3 * 4);
  std::iota(data.begin(), data.end(), 0);
  const auto v = cai::make_view(data.data(), {2, 3, 4});
  static_assert(std::is_same_v<decltype(v.extent(0)), std::int64_t>);
  CHECK(v.size() == 24);
  CHECK(v.stride(0) == 12);
  CHECK(v.stride(1) == 4);
  CHECK(v.stride(2) == 1);
  CHECK(v.is_contiguous());
  CHECK(v(1, 2, 3) == 23);
  CHECK(v.at(1, 0, 2) == 14);
  CHECK(v[1](2, 1) == 21);
  CAI_REQUIRE_THROWS_NAMING(v.at(2, 0, 0), cai::shape_error, "index 2", "[0, 2)", "dimension 0");
  CAI_REQUIRE_THROWS_NAMING(v.at(0, 0, -1), cai::shape_error, "index -1", "dimension 2");
}

TEST_CASE("a view's extent can exceed 2^31 elements without overflow", "[core]") {
  // No memory is touched: only the index arithmetic is exercised.
  const cai::tensor_view<const float, 2> v(nullptr, {32768, 151936});
  CHECK(v.size() == 32768LL * 151936LL);
  CHECK(&v(32767, 151935) - v.data() == 32768LL * 151936LL - 1);
}

TEST_CASE("strided views report contiguity and reject negative extents and strides", "[core]") {
  std::vector<float> data(20);
  const cai::tensor_view<float, 2> every_other(data.data(), {4, 2}, {5, 2});
  CHECK_FALSE(every_other.is_contiguous());
  CHECK_FALSE(every_other.is_row_contiguous());
  const cai::tensor_view<float, 2> padded_rows(data.data(), {4, 3}, {5, 1});
  CHECK_FALSE(padded_rows.is_contiguous());
  CHECK(padded_rows.is_row_contiguous());
  CAI_REQUIRE_THROWS_NAMING((cai::make_view(data.data(), {2, -3})), cai::invalid_argument, "extent 1 is negative", "-3");
  CAI_REQUIRE_THROWS_NAMING((cai::tensor_view<float, 1>(data.data(), {2}, {-1})), cai::invalid_argument, "'strides'");
  CAI_REQUIRE_THROWS_NAMING((cai::tensor<float, 2>({3, -1})), cai::invalid_argument, "negative");
}

TEST_CASE("the memory space is part of the view type and checked layouts do not depend on build flags",
          "[core]") {
  static_assert(!std::is_convertible_v<cai::tensor_view<float, 1, cai::device_space>, cai::tensor_view<float, 1>>);
  static_assert(std::is_convertible_v<cai::tensor_view<float, 1>, cai::tensor_view<const float, 1>>);
  static_assert(!std::is_convertible_v<cai::tensor_view<const float, 1>, cai::tensor_view<float, 1>>);
  // Same size in every build: a pointer and two extent arrays, nothing added by debug checks.
  static_assert(sizeof(cai::tensor_view<float, 2>) == sizeof(void*) + 4 * sizeof(std::int64_t));
  static_assert(std::is_trivially_copyable_v<cai::tensor_view<float, 3>>);
}

TEST_CASE("an owning tensor allocates zeroed host memory, copies deeply and moves cheaply", "[core]") {
  cai::tensor<float, 2> t({3, 4});
  CHECK(t.size() == 12);
  for (std::int64_t i = 0; i < t.size(); ++i) CHECK(t.data()[i] == 0.0f);
  t(1, 2) = 5.0f;
  cai::tensor<float, 2> copy = t;
  copy(1, 2) = 6.0f;
  CHECK(t(1, 2) == 5.0f);
  const float* p = t.data();
  cai::tensor<float, 2> moved = std::move(t);
  CHECK(moved.data() == p);
  CHECK(moved.view()(1, 2) == 5.0f);
  cai::tensor<float, 1> empty({0});
  CHECK(empty.view().empty());
  static_assert(std::is_same_v<cai::space_of_t<cai::tensor<float, 2>>, cai::host_space>);
}

namespace {
template <class T>
struct counting_allocator {
  using value_type = T;
  int* live;
  explicit counting_allocator(int* l) : live(l) {}
  template <class U>
  counting_allocator(const counting_allocator<U>& o) : live(o.live) {}  // NOLINT
  T* allocate(std::size_t n) {
    ++*live;
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) {
    --*live;
    std::allocator<T>().deallocate(p, n);
  }
  bool operator==(const counting_allocator&) const = default;
};
}  // namespace

TEST_CASE("an owning tensor uses its allocator parameter", "[core]") {
  int live = 0;
  {
    cai::tensor<double, 1, counting_allocator<double>> t({10}, counting_allocator<double>(&live));
    CHECK(live == 1);
  }
  CHECK(live == 0);
}

TEST_CASE("any_view recovers typed views and names the argument on dtype, rank, space or constness errors",
          "[core]") {
  std::vector<cai::bfloat16> data(6);
  const cai::any_view a = cai::make_view(data.data(), {2, 3});
  CHECK(a.type == cai::dtype::bf16);
  CHECK(a.rank == 2);
  CHECK_FALSE(a.read_only);
  const auto back = a.as<cai::bfloat16, 2>("test", "x");
  CHECK(back.data() == data.data());
  CHECK(back.extent(1) == 3);
  CAI_REQUIRE_THROWS_NAMING((a.as<float, 2>("cai::f", "logits")), cai::dtype_error, "cai::f", "'logits'", "float32", "bfloat16");
  CAI_REQUIRE_THROWS_NAMING((a.as<cai::bfloat16, 3>("cai::f", "logits")), cai::shape_error, "rank 3", "rank 2");
  CAI_REQUIRE_THROWS_NAMING((a.as<cai::bfloat16, 2, cai::device_space>("cai::f", "logits")), cai::memory_space_error,
                            "device memory", "host memory");
  const cai::any_view ro = cai::make_view(static_cast<const cai::bfloat16*>(data.data()), {6});
  CAI_REQUIRE_THROWS_NAMING((ro.as<cai::bfloat16, 1>("cai::f", "out")), cai::invalid_argument, "'out'", "writable");
  CHECK(ro.as<const cai::bfloat16, 1>("cai::f", "out").size() == 6);
  CHECK(cai::size_of(cai::dtype::f16) == 2);
}
