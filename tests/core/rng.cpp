// Tests for cai/core/rng.hpp: Philox known-answer vectors, stream semantics, uniformity.
#include <cai/core/rng.hpp>

#include <array>
#include <cmath>
#include <set>
#include <vector>

#include "../support.hpp"

TEST_CASE("philox4x32-10 reproduces the published known-answer vectors", "[core]") {
  // Known-answer tests of Random123 (kat_vectors, philox4x32 with 10 rounds).
  struct kat {
    cai::philox_block ctr;
    std::uint32_t k0, k1;
    std::array<std::uint32_t, 4> out;
  };
  const kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const auto& k : kats) {
    const auto r = cai::philox4x32(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) CHECK(r.v[i] == k.out[static_cast<std::size_t>(i)]);
  }
  static_assert(cai::philox4x32({{0, 0, 0, 0}}, 0, 0).v[0] == 0x6627e8d5u, "usable in constant expressions");
}

TEST_CASE("rng streams are reproducible, seekable and independent across seeds and stream ids", "[core]") {
  cai::rng_stream a(42, 7), b(42, 7), c(42, 8), d(43, 7);
  std::vector<std::uint32_t> va, vb;
  for (int i = 0; i < 100; ++i) {
    va.push_back(a.next_u32());
    vb.push_back(b.next_u32());
  }
  CHECK(va == vb);
  int same_c = 0, same_d = 0;
  for (int i = 0; i < 100; ++i) {
    same_c += c.next_u32() == va[static_cast<std::size_t>(i)];
    same_d += d.next_u32() == va[static_cast<std::size_t>(i)];
  }
  CHECK(same_c < 3);
  CHECK(same_d < 3);
  cai::rng_stream s(42, 7);
  s.seek(37);
  CHECK(s.next_u32() == va[37]);
  CHECK(s.position() == 38);
  // Element i is word i % 4 of block i / 4: what a device thread computes statelessly.
  CHECK(cai::rng_stream(42, 7).at_block(9).v[1] == va[37]);
  CHECK(cai::derive_seed(1, 2) != cai::derive_seed(2, 1));
  CHECK(cai::derive_seed(1, 2) == cai::derive_seed(1, 2));
}

TEST_CASE("uniform floats lie in the half-open unit interval, below(n) is unbiased, and moments match", "[core]") {
  cai::rng_stream r(2026, 0);
  const int n = 200000;
  double sum = 0, sum2 = 0;
  std::array<int, 7> counts{};
  for (int i = 0; i < n; ++i) {
    const float u = r.uniform();
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    sum += u;
    sum2 += static_cast<double>(u) * u;
    ++counts[r.below(7)];
  }
  CHECK(std::fabs(sum / n - 0.5) < 0.005);
  CHECK(std::fabs(sum2 / n - 1.0 / 3.0) < 0.005);
  for (int c : counts) CHECK(std::fabs(c - n / 7.0) < 5 * std::sqrt(n / 7.0));
  CHECK(cai::uniform_float(0xffffffffu) < 1.0f);
  CHECK(cai::uniform_double(0xffffffffu, 0xffffffffu) < 1.0);
  const double ud = r.uniform_double();
  CHECK((ud >= 0.0 && ud < 1.0));
}
