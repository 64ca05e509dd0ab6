// cai/core/rng.hpp — counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3", SC 2011).
//
// philox4x32(counter, key) is a pure function, so any thread on the host or the GPU can draw element i of stream
// s directly: same seed, same stream, same index -> the same bits everywhere. This is what makes sampling,
// dropout-free training and the Constitutional-AI pipelines reproducible and resumable per record.
//
//   cai::rng_stream r{seed, stream_id};   // stream_id: e.g. a record id
//   float u = r.uniform();                // [0, 1), 24 random bits
//   auto blk = cai::philox4x32({i, 0, s_lo, s_hi}, {k0, k1});   // stateless, CAI_HD
#pragma once

#include <array>
#include <cstdint>

#include "config.hpp"

namespace cai {

struct philox_block {
  std::uint32_t v[4];
};

namespace detail {
CAI_HD constexpr void mulhilo32(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) noexcept {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}
}  // namespace detail

/// Philox4x32 with 10 rounds: four 32-bit outputs for a 128-bit counter and a 64-bit key.
CAI_HD constexpr philox_block philox4x32(philox_block ctr, std::uint32_t key0, std::uint32_t key1) noexcept {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0 = 0, lo0 = 0, hi1 = 0, lo1 = 0;
    detail::mulhilo32(m0, ctr.v[0], hi0, lo0);
    detail::mulhilo32(m1, ctr.v[2], hi1, lo1);
    ctr = philox_block{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
    key0 += w0;
    key1 += w1;
  }
  return ctr;
}

/// Maps 32 random bits to a float uniform in [0, 1) with 24 bits of resolution (never returns 1).
CAI_HD constexpr float uniform_float(std::uint32_t bits) noexcept {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}
/// Maps 64 random bits to a double uniform in [0, 1) with 53 bits of resolution.
CAI_HD constexpr double uniform_double(std::uint32_t hi, std::uint32_t lo) noexcept {
  const std::uint64_t b = ((static_cast<std::uint64_t>(hi) << 32) | lo) >> 11;
  return static_cast<double>(b) * (1.0 / 9007199254740992.0);
}

/// A sequential view of one Philox stream: element i of stream `stream` under `seed`.
/// Element i of the stream is word (i % 4) of philox4x32({i/4 lo, i/4 hi, stream lo, stream hi}, seed), so
/// rng_stream{seed, s}.skip(i) on the host and a device thread computing the same block agree bit for bit.
class rng_stream {
 public:
  CAI_HD constexpr rng_stream(std::uint64_t seed, std::uint64_t stream = 0) noexcept : seed_(seed), stream_(stream) {}

  /// The next 32 random bits.
  CAI_HD constexpr std::uint32_t next_u32() noexcept {
    const std::uint64_t block = index_ >> 2;
    const unsigned word = static_cast<unsigned>(index_ & 3u);
    if (word == 0 || block != cached_block_) {
      cache_ = at_block(block);
      cached_block_ = block;
    }
    ++index_;
    return cache_.v[word];
  }
  CAI_HD constexpr float uniform() noexcept { return uniform_float(next_u32()); }
  CAI_HD constexpr double uniform_double() noexcept {
    const std::uint32_t hi = next_u32();
    return cai::uniform_double(hi, next_u32());
  }
  /// Uniform integer in [0, n) by Lemire's multiply-shift with rejection (unbiased). n must be > 0.
  CAI_HD constexpr std::uint32_t below(std::uint32_t n) noexcept {
    std::uint64_t m = static_cast<std::uint64_t>(next_u32()) * n;
    auto low = static_cast<std::uint32_t>(m);
    if (low < n) {
      const std::uint32_t threshold = static_cast<std::uint32_t>(-n) % n;
      while (low < threshold) {
        m = static_cast<std::uint64_t>(next_u32()) * n;
        low = static_cast<std::uint32_t>(m);
      }
    }
    return static_cast<std::uint32_t>(m >> 32);
  }
  /// Jumps to element `index` of the stream.
  CAI_HD constexpr void seek(std::uint64_t index) noexcept { index_ = index; }
  CAI_HD constexpr std::uint64_t position() const noexcept { return index_; }

  /// The Philox block `block` of this stream (stateless).
  CAI_HD constexpr philox_block at_block(std::uint64_t block) const noexcept {
    return philox4x32(philox_block{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                                    static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32)}},
                      static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32));
  }

 private:
  std::uint64_t seed_;
  std::uint64_t stream_;
  std::uint64_t index_ = 0;
  std::uint64_t cached_block_ = ~std::uint64_t{0};
  philox_block cache_{};
};

/// Derives an independent 64-bit key from a run seed and a record id (SplitMix64 finaliser over both), so that
/// every record of a pipeline draws from its own stream regardless of processing order.
CAI_HD constexpr std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t id) noexcept {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (id + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace cai
