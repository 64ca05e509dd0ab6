// Token batches for the sequence algorithms' tests (stats, kl, rewards, gae): a right-padded (B, T) mask whose rows
// cover the cases that matter (full rows, right padding, several spans per row, a single counted token, fully masked
// rows, zero-length sequences, length-1 rows, random masks), and the same sequences in the packed layout.
#pragma once

#include <cai/core/tensor_view.hpp>

#include <cstdint>
#include <random>
#include <vector>

namespace cai_test {

/// Row b holds a sequence of length len[b] <= T (then right padding, mask 0); mask marks the counted tokens.
struct seq_batch {
  std::int64_t B = 0, T = 0;
  std::vector<std::int64_t> len;    // (B)
  std::vector<std::uint8_t> mask;   // (B, T)
  std::vector<std::int64_t> cu;     // (B + 1) offsets of the packed layout
  std::vector<std::uint8_t> pmask;  // (N) the mask in the packed layout

  std::int64_t N() const { return cu.back(); }
  bool counted(std::int64_t b, std::int64_t t) const { return mask[static_cast<std::size_t>(b * T + t)] != 0; }

  /// The first len[b] entries of each padded row, back to back.
  template <class X>
  std::vector<X> pack(const std::vector<X>& padded) const {
    std::vector<X> out;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < len[static_cast<std::size_t>(b)]; ++t) out.push_back(padded[static_cast<std::size_t>(b * T + t)]);
    return out;
  }
  cai::tensor_view<const std::int64_t, 1> cu_view() const { return cai::make_view(cu.data(), {B + 1}); }
};

/// Row kinds cycle with b % 9; lengths and spans are drawn from `seed`.
inline seq_batch make_seq_batch(std::int64_t B, std::int64_t T, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  auto uni = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen); };
  seq_batch s;
  s.B = B;
  s.T = T;
  s.len.assign(static_cast<std::size_t>(B), 0);
  s.mask.assign(static_cast<std::size_t>(B * T), 0);
  for (std::int64_t b = 0; b < B; ++b) {
    std::uint8_t* m = s.mask.data() + b * T;
    std::int64_t L = T;
    switch (b % 9) {
      case 0:  // every token counts
        for (std::int64_t t = 0; t < T; ++t) m[t] = 1;
        break;
      case 1:  // position 0 (the prompt side) masked, right padding after L
        L = uni(1, T);
        for (std::int64_t t = 1; t < L; ++t) m[t] = 1;
        break;
      case 2: {  // several assistant spans (runs of 1 to 3) with observation tokens (runs of 1 or 2) between them
        std::int64_t t = uni(0, 1);
        while (t < T) {
          for (std::int64_t k = uni(1, 3); k > 0 && t < T; --k) m[t++] = 1;
          t += uni(1, 2);
        }
        break;
      }
      case 3:  // a single counted token inside a longer sequence
        L = uni(1, T);
        m[uni(0, L - 1)] = 1;
        break;
      case 4:  // fully masked row
        L = uni(1, T);
        break;
      case 5:  // zero-length sequence
        L = 0;
        break;
      case 6:  // length-1 sequence
        L = 1;
        m[0] = 1;
        break;
      case 7:  // counted tokens end before the sequence does (trailing masked tokens)
        L = T;
        for (std::int64_t t = 0; t < (T + 1) / 2; ++t) m[t] = 1;
        break;
      default:  // random mask
        L = uni(1, T);
        for (std::int64_t t = 0; t < L; ++t) m[t] = static_cast<std::uint8_t>(uni(0, 1));
        break;
    }
    s.len[static_cast<std::size_t>(b)] = L;
  }
  s.cu.assign(static_cast<std::size_t>(B + 1), 0);
  for (std::int64_t b = 0; b < B; ++b) s.cu[static_cast<std::size_t>(b + 1)] = s.cu[static_cast<std::size_t>(b)] + s.len[static_cast<std::size_t>(b)];
  s.pmask = s.pack(s.mask);
  return s;
}

}  // namespace cai_test
