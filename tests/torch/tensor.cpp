// cai/torch/tensor.hpp: zero-copy views between torch tensors, DLPack capsules and cai views, and their errors.
#include <cai/torch/tensor.hpp>

#include <memory>
#include <vector>

#include "../support.hpp"

TEST_CASE("torch_view sees a tensor's memory: strides, storage offset, dtype; writes go both ways", "[torch]") {
  auto t = torch::arange(24, torch::kFloat).view({2, 3, 4});
  const auto v = cai::torch_view<float, 3>(t, "test", "t");
  CHECK(v.data() == t.data_ptr<float>());
  CHECK(v.extents() == std::array<std::int64_t, 3>{2, 3, 4});
  CHECK(v(1, 2, 3) == 23.0f);
  v(0, 1, 2) = -1.0f;
  CHECK(t[0][1][2].item<float>() == -1.0f);
  // A transposed, offset slice: same memory, torch's strides.
  auto s = t.select(0, 1).t();  // (4, 3), strides (1, 4), offset 12
  const auto sv = cai::torch_view<const float, 2>(s, "test", "s");
  CHECK(sv.strides() == std::array<std::int64_t, 2>{1, 4});
  for (std::int64_t i = 0; i < 4; ++i)
    for (std::int64_t j = 0; j < 3; ++j) CHECK(sv(i, j) == s[i][j].item<float>());
  // bf16 and fp16 map onto cai's types bit for bit.
  auto h = torch::randn({5}).to(torch::kBFloat16);
  const auto hv = cai::torch_view<const cai::bfloat16, 1>(h, "test", "h");
  for (std::int64_t i = 0; i < 5; ++i) CHECK(hv(i).to_float() == h[i].item<float>());
}

TEST_CASE("torch_tensor wraps a cai view without copying", "[torch]") {
  std::vector<float> buf(12);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  const auto v = cai::make_view(buf.data(), {3, 4});
  auto t = cai::torch_tensor(v);
  CHECK(t.data_ptr<float>() == buf.data());
  CHECK(t.sizes() == torch::IntArrayRef({3, 4}));
  t.mul_(2.0f);
  CHECK(buf[5] == 10.0f);
  std::vector<std::int32_t> ids{1, 2, 3, 4, 5, 6};
  const cai::tensor_view<std::int32_t, 2> strided(ids.data(), {3, 1}, {2, 1});
  auto ti = cai::torch_tensor(strided);
  CHECK(ti.scalar_type() == torch::kInt);
  CHECK(ti[2][0].item<int>() == 5);
}

TEST_CASE("DLPack: torch -> cai and cai -> torch share memory, and the capsule's deleter releases its owner", "[torch]") {
  auto t = torch::arange(6, torch::kLong).view({2, 3}).t();  // strided
  DLManagedTensor* cap = at::toDLPack(t);
  const auto av = cai::dlpack_view(cap->dl_tensor, "test", "cap");
  const auto v = av.as<const std::int64_t, 2>("test", "cap");
  CHECK(v.data() == t.data_ptr<std::int64_t>());
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 2; ++j) CHECK(v(i, j) == t[i][j].item<std::int64_t>());
  cap->deleter(cap);

  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4, 5, 6});
  std::weak_ptr<std::vector<float>> watch = owner;
  {
    auto tt = at::fromDLPack(cai::to_dlpack(cai::any_view(cai::make_view(owner->data(), {2, 3})), owner));
    owner.reset();
    CHECK(!watch.expired());  // the tensor keeps the memory alive through the capsule
    CHECK(tt[1][2].item<float>() == 6.0f);
    tt[0][0] = 10.0f;
    CHECK(watch.lock()->at(0) == 10.0f);
  }
  CHECK(watch.expired());
}

TEST_CASE("torch and DLPack views reject the wrong dtype, rank, device and layout, naming the argument", "[torch]") {
  auto f = torch::zeros({2, 3});
  CAI_REQUIRE_THROWS_NAMING((cai::torch_view<const double, 2>(f, "call", "logits")), cai::dtype_error, "logits", "float64", "float32");
  CAI_REQUIRE_THROWS_NAMING((cai::torch_view<const float, 3>(f, "call", "logits")), cai::shape_error, "logits", "rank 3", "rank 2");
  CAI_REQUIRE_THROWS_NAMING((cai::torch_view<const float, 2, cai::device_space>(f, "call", "logits")), cai::memory_space_error, "logits",
                            "device memory", "host memory");
  auto meta = torch::empty({2, 3}, torch::TensorOptions().device(torch::kMeta));
  CAI_REQUIRE_THROWS_NAMING((cai::torch_view<const float, 2>(meta, "call", "logits")), cai::memory_space_error, "logits", "meta");
  CAI_REQUIRE_THROWS_NAMING((cai::torch_view<const float, 2>(torch::Tensor(), "call", "logits")), cai::invalid_argument, "undefined");
  CAI_REQUIRE_THROWS_NAMING((cai::torch_view<const float, 1>(torch::zeros({2}, torch::kComplexFloat), "call", "x")), cai::dtype_error, "x");
  auto sparse = torch::zeros({2, 2}).to_sparse();
  CAI_REQUIRE_THROWS_NAMING((cai::torch_view<const float, 2>(sparse, "call", "x")), cai::invalid_argument, "x", "dense");
  DLTensor dl{};
  std::int64_t shape[1] = {4};
  float data[4] = {};
  dl.data = data;
  dl.ndim = 1;
  dl.shape = shape;
  dl.device = {kDLCPU, 0};
  dl.dtype = {kDLFloat, 32, 4};
  CAI_REQUIRE_THROWS_NAMING(cai::dlpack_view(dl, "call", "cap"), cai::dtype_error, "cap", "lanes = 4");
  dl.dtype = {kDLFloat, 32, 1};
  dl.device = {kDLVulkan, 0};
  CAI_REQUIRE_THROWS_NAMING(cai::dlpack_view(dl, "call", "cap"), cai::memory_space_error, "cap");
  dl.device = {kDLCPU, 0};
  CHECK(cai::dlpack_view(dl, "call", "cap").as<const float, 1>("call", "cap")(3) == 0.0f);
  std::vector<std::uint8_t> b(2);
  CAI_REQUIRE_THROWS_NAMING(cai::to_dlpack(cai::any_view(cai::make_view(static_cast<const std::uint8_t*>(b.data()), {2}))),
                            cai::invalid_argument, "view", "read-only");
}
