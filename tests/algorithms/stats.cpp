// Tests for cai/algorithms/stats.hpp (and the layout checks of cai/algorithms/sequences.hpp): masked moments against
// a long-double reference written with the sum-of-squares formula (the library uses two passes and Chan's merge),
// merging micro-batch states, whitening (batch, per row, external statistics, no shift, no Bessel correction), the
// packed layout against the padded one, bitwise equality across backends, and bad input.
#include <cai/algorithms/stats.hpp>
#include <cai/core/host.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../support.hpp"
#include "sequence_batch.hpp"

namespace {

using cai_test::make_seq_batch;
using cai_test::seq_batch;

struct ref_moments {
  std::int64_t n = 0;
  long double mean = 0, m2 = 0;
};

// Sum and sum of squares in long double (64-bit mantissa): M2 = S2 - S1^2 / n loses only a few bits here, far below
// the 1e-12 relative tolerance, and is a different formula from the library's two-pass / merge computation.
template <class T, class Keep>
ref_moments reference_moments(const T* x, std::int64_t n, Keep keep) {
  long double s1 = 0, s2 = 0;
  std::int64_t c = 0;
  for (std::int64_t i = 0; i < n; ++i)
    if (keep(i)) {
      const long double v = static_cast<long double>(x[i]);
      s1 += v;
      s2 += v * v;
      ++c;
    }
  if (c == 0) return {};
  return {c, s1 / c, s2 - s1 * s1 / c};
}

bool close_rel(double got, long double want, double rel) {
  return std::fabs(static_cast<long double>(got) - want) <= rel * (std::fabs(want) + 1e-300L) + 1e-300;
}

void check_moments(const cai::moments& got, const ref_moments& want, double rel = 1e-12) {
  INFO("count " << got.count << " / " << want.n << "  mean " << got.mean << " / " << static_cast<double>(want.mean)
                << "  m2 " << got.m2 << " / " << static_cast<double>(want.m2));
  REQUIRE(got.count == want.n);
  CHECK(close_rel(got.mean, want.mean, rel));
  CHECK(std::fabs(static_cast<long double>(got.m2) - want.m2) <= rel * want.m2 + 1e-300L);  // M2 = 0 must be exact
}

template <class T>
std::vector<T> values_for(const seq_batch& s, float mean, float scale, std::uint64_t seed) {
  const auto v = cai_test::normal_floats(static_cast<std::size_t>(s.B * s.T), scale, seed);
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<T>(v[i] + mean);
  return out;
}

template <class T>
cai::tensor_view<const T, 2> view2(const std::vector<T>& v, std::int64_t B, std::int64_t T_) {
  return cai::make_view(v.data(), {B, T_});
}

template <class T>
void check_masked_moments_against_reference() {
  const seq_batch s = make_seq_batch(53, 17, 3);  // 53 rows: several 16-row chunks and a partial one
  const auto x = values_for<T>(s, 3.0f, 2.0f, 4);
  const auto got = cai::masked_moments(cai::host{}, view2(x, s.B, s.T), cai::make_view(s.mask.data(), {s.B, s.T}));
  check_moments(got, reference_moments(x.data(), s.B * s.T, [&](std::int64_t i) { return s.mask[static_cast<std::size_t>(i)] != 0; }));
  const auto all = cai::masked_moments(cai::host{}, view2(x, s.B, s.T));
  check_moments(all, reference_moments(x.data(), s.B * s.T, [](std::int64_t) { return true; }));
  // The same numbers through the moments' own accessors.
  const auto r = reference_moments(x.data(), s.B * s.T, [&](std::int64_t i) { return s.mask[static_cast<std::size_t>(i)] != 0; });
  CHECK(close_rel(got.variance(), r.m2 / (r.n - 1), 1e-12));
  CHECK(close_rel(got.variance(false), r.m2 / r.n, 1e-12));
  CHECK(close_rel(got.stddev(), std::sqrt(r.m2 / (r.n - 1)), 1e-12));
}

}  // namespace

TEST_CASE("masked moments match a long-double reference over variable-length and multi-span masks", "[stats]") {
  SECTION("float values") { check_masked_moments_against_reference<float>(); }
  SECTION("double values") { check_masked_moments_against_reference<double>(); }
  SECTION("a large offset does not cost accuracy (two passes per row)") {
    const seq_batch s = make_seq_batch(20, 31, 5);
    auto x = values_for<double>(s, 0.0f, 1e-3f, 6);
    for (auto& v : x) v += 1e6;
    const auto got = cai::masked_moments(cai::host{}, view2(x, s.B, s.T), cai::make_view(s.mask.data(), {s.B, s.T}));
    // Here the sum-of-squares reference would cancel catastrophically: a two-pass reference in long double instead.
    long double s1 = 0, m2 = 0;
    std::int64_t n = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
      if (s.mask[i]) s1 += x[i], ++n;
    const long double mean = s1 / n;
    for (std::size_t i = 0; i < x.size(); ++i)
      if (s.mask[i]) m2 += (x[i] - mean) * (x[i] - mean);
    REQUIRE(got.count == n);
    CHECK(close_rel(got.mean, mean, 1e-14));
    // Row means carry rounding ~ulp(1e6) ~ 1e-10, a 1e-6 part of the spread between rows: M2 keeps ~1e-9 relative
    // (a one-pass sum of squares in double would lose everything: eps * 1e18 / 1e-6 >> 1).
    CHECK(close_rel(got.m2, m2, 1e-7));
    CHECK(m2 > 0);
  }
}

TEST_CASE("moments of zero, one and two values, and the variance conventions", "[stats]") {
  const cai::moments none{};
  CHECK(none.variance() == 0.0);
  CHECK(none.variance(false) == 0.0);
  const cai::moments one{1, 2.5, 0.0};
  CHECK(one.variance() == 0.0);  // Bessel's correction with n = 1: defined as 0
  CHECK(one.variance(false) == 0.0);
  const cai::moments two = merge(one, cai::moments{1, 4.5, 0.0});
  CHECK(two.count == 2);
  CHECK(two.mean == 3.5);
  CHECK(two.m2 == 2.0);
  CHECK(two.variance() == 2.0);
  CHECK(two.variance(false) == 1.0);
  // The empty state is the identity of merge, on either side, bit for bit.
  const cai::moments m{7, -1.25, 3.75};
  const cai::moments m1 = merge(m, none), m2 = merge(none, m);
  CHECK((m1.count == m.count && m1.mean == m.mean && m1.m2 == m.m2));
  CHECK((m2.count == m.count && m2.mean == m.mean && m2.m2 == m.m2));
}

TEST_CASE("merging micro-batch moments gives the whole-batch moments within 1e-12 relative", "[stats]") {
  const seq_batch s = make_seq_batch(64, 23, 7);
  const auto x = values_for<double>(s, -2.0f, 3.0f, 8);
  const auto whole = cai::masked_moments(cai::host{}, view2(x, s.B, s.T), cai::make_view(s.mask.data(), {s.B, s.T}));
  const std::int64_t cuts[] = {0, 5, 22, 23, 40, 64};  // uneven micro-batches, one of a single row
  cai::moments merged{}, reversed{};
  std::vector<cai::moments> parts;
  for (std::size_t i = 0; i + 1 < std::size(cuts); ++i) {
    const std::int64_t r0 = cuts[i], rows = cuts[i + 1] - cuts[i];
    parts.push_back(cai::masked_moments(cai::host{}, cai::make_view(x.data() + r0 * s.T, {rows, s.T}),
                                        cai::make_view(s.mask.data() + r0 * s.T, {rows, s.T})));
    merged = merge(merged, parts.back());
  }
  for (std::size_t i = parts.size(); i-- > 0;) reversed = merge(reversed, parts[i]);
  const ref_moments w{whole.count, whole.mean, whole.m2};
  check_moments(merged, w);
  check_moments(reversed, w);  // merge is commutative up to rounding
  check_moments(whole, reference_moments(x.data(), s.B * s.T, [&](std::int64_t i) { return s.mask[static_cast<std::size_t>(i)] != 0; }));
}

TEST_CASE("row moments give each sequence's statistics and count 0 for a fully masked or empty row", "[stats]") {
  const seq_batch s = make_seq_batch(27, 12, 9);
  const auto x = values_for<float>(s, 1.0f, 2.0f, 10);
  std::vector<cai::moments> rows(static_cast<std::size_t>(s.B), cai::moments{99, 9.0, 9.0});
  cai::row_moments(cai::host{}, view2(x, s.B, s.T), cai::make_view(s.mask.data(), {s.B, s.T}),
                   cai::make_view(rows.data(), {s.B}));
  for (std::int64_t b = 0; b < s.B; ++b) {
    const auto* m = s.mask.data() + b * s.T;
    INFO("row " << b);
    check_moments(rows[static_cast<std::size_t>(b)],
                  reference_moments(x.data() + b * s.T, s.T, [&](std::int64_t t) { return m[t] != 0; }));
  }
  CHECK(rows[4].count == 0);  // kind 4: fully masked
  CHECK(rows[4].mean == 0.0);
  CHECK(rows[6].count == 1);  // kind 6: length 1
  CHECK(rows[6].m2 == 0.0);
  // Without a mask every token of the row counts.
  cai::row_moments(cai::host{}, view2(x, s.B, s.T), cai::no_mask, cai::make_view(rows.data(), {s.B}));
  for (std::int64_t b = 0; b < s.B; ++b)
    check_moments(rows[static_cast<std::size_t>(b)], reference_moments(x.data() + b * s.T, s.T, [](std::int64_t) { return true; }));
}

namespace {

// out = (x - mean) / sqrt(var + eps) (+ mean without shift) at counted tokens, 0 elsewhere, in long double.
template <class T>
void check_whitened(const std::vector<T>& x, const std::vector<T>& y, const std::vector<std::uint8_t>& mask,
                    std::int64_t i0, std::int64_t i1, const ref_moments& st, const cai::whiten_options& opt) {
  const long double var = opt.bessel ? (st.n > 1 ? st.m2 / (st.n - 1) : 0.0L) : (st.n > 0 ? st.m2 / st.n : 0.0L);
  const long double sd = std::sqrt(var + static_cast<long double>(opt.eps));
  const double rel = std::is_same_v<T, float> ? 3e-7 : 1e-12;
  for (std::int64_t i = i0; i < i1; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    if (!mask[ui] || st.n == 0) {
      CHECK(y[ui] == T(0));
      continue;
    }
    const long double want = (static_cast<long double>(x[ui]) - st.mean) / sd + (opt.shift_mean ? 0.0L : st.mean);
    INFO("i " << i << " got " << y[ui] << " want " << static_cast<double>(want));
    CHECK(std::fabs(static_cast<long double>(y[ui]) - want) <= rel * (1 + std::fabs(want)));
  }
}

template <class T>
void check_whiten_batch(const cai::whiten_options& opt) {
  const seq_batch s = make_seq_batch(40, 15, 11);
  const auto x = values_for<T>(s, 4.0f, 3.0f, 12);
  std::vector<T> y(x.size(), T(7));
  const auto used = cai::whiten(cai::host{}, view2(x, s.B, s.T), cai::make_view(s.mask.data(), {s.B, s.T}),
                                cai::make_view(y.data(), {s.B, s.T}), opt);
  const auto st = reference_moments(x.data(), s.B * s.T, [&](std::int64_t i) { return s.mask[static_cast<std::size_t>(i)] != 0; });
  check_moments(used, st);
  check_whitened(x, y, s.mask, 0, s.B * s.T, st, opt);
}

}  // namespace

TEST_CASE("whiten uses the batch's masked statistics and writes 0 at uncounted positions", "[stats]") {
  SECTION("float, defaults (shift, Bessel)") { check_whiten_batch<float>({}); }
  SECTION("double, defaults") { check_whiten_batch<double>({}); }
  SECTION("double, shift_mean false keeps the mean") { check_whiten_batch<double>({.shift_mean = false}); }
  SECTION("float, shift_mean false") { check_whiten_batch<float>({.shift_mean = false}); }
  SECTION("double, bessel false divides by n") { check_whiten_batch<double>({.bessel = false}); }
  SECTION("double, eps 0.5") { check_whiten_batch<double>({.eps = 0.5}); }
  SECTION("the whitened counted values have mean 0 and variance 1 - eps / (var + eps)") {
    const seq_batch s = make_seq_batch(30, 10, 13);
    const auto x = values_for<double>(s, 2.0f, 5.0f, 14);
    std::vector<double> y(x.size());
    const auto mask = cai::make_view(s.mask.data(), {s.B, s.T});
    const auto st = cai::whiten(cai::host{}, view2(x, s.B, s.T), mask, cai::make_view(y.data(), {s.B, s.T}));
    const auto after = cai::masked_moments(cai::host{}, view2(y, s.B, s.T), mask);
    CHECK(std::fabs(after.mean) <= 1e-13);
    CHECK(std::fabs(after.variance() - st.variance() / (st.variance() + 1e-8)) <= 1e-12);
  }
}

TEST_CASE("per-row whitening uses each row's statistics, empty rows stay 0 and a single token whitens to 0 or itself",
          "[stats]") {
  const seq_batch s = make_seq_batch(18, 9, 15);
  const auto x = values_for<double>(s, -1.0f, 2.0f, 16);
  for (bool shift : {true, false}) {
    const cai::whiten_options opt{.shift_mean = shift, .per_row = true};
    std::vector<double> y(x.size(), 5.0);
    const auto used = cai::whiten(cai::host{}, view2(x, s.B, s.T), cai::make_view(s.mask.data(), {s.B, s.T}),
                                  cai::make_view(y.data(), {s.B, s.T}), opt);
    CHECK(used.count == 0);  // per_row returns no whole-batch statistics
    for (std::int64_t b = 0; b < s.B; ++b) {
      const auto* m = s.mask.data() + b * s.T;
      const auto st = reference_moments(x.data() + b * s.T, s.T, [&](std::int64_t t) { return m[t] != 0; });
      INFO("row " << b << " shift " << shift);
      check_whitened(x, y, s.mask, b * s.T, (b + 1) * s.T, st, opt);
    }
    // Kind 3 (one counted token) and kind 6 (length 1): 0 with the shift, the value itself without it.
    for (std::int64_t b : {3, 6, 12, 15}) {
      for (std::int64_t t = 0; t < s.T; ++t) {
        const auto i = static_cast<std::size_t>(b * s.T + t);
        if (s.mask[i]) CHECK(y[i] == (shift ? 0.0 : x[i]));
        else CHECK(y[i] == 0.0);
      }
    }
    for (std::int64_t t = 0; t < s.T; ++t) CHECK(y[static_cast<std::size_t>(4 * s.T + t)] == 0.0);  // fully masked
  }
}

TEST_CASE("whitening micro-batches with merged external statistics matches whitening the whole batch", "[stats]") {
  const seq_batch s = make_seq_batch(50, 14, 17);
  const auto x = values_for<double>(s, 3.0f, 1.5f, 18);
  const auto mask = cai::make_view(s.mask.data(), {s.B, s.T});
  std::vector<double> whole(x.size()), parts(x.size()), exact(x.size());
  const auto st = cai::whiten(cai::host{}, view2(x, s.B, s.T), mask, cai::make_view(whole.data(), {s.B, s.T}));
  const std::int64_t cuts[] = {0, 13, 14, 37, 50};
  cai::moments merged{};
  for (std::size_t i = 0; i + 1 < std::size(cuts); ++i)
    merged = merge(merged, cai::masked_moments(cai::host{}, cai::make_view(x.data() + cuts[i] * s.T, {cuts[i + 1] - cuts[i], s.T}),
                                               cai::make_view(s.mask.data() + cuts[i] * s.T, {cuts[i + 1] - cuts[i], s.T})));
  for (std::size_t i = 0; i + 1 < std::size(cuts); ++i) {
    const std::int64_t r0 = cuts[i], rows = cuts[i + 1] - cuts[i];
    const auto xs = cai::make_view(x.data() + r0 * s.T, {rows, s.T});
    const auto ms = cai::make_view(s.mask.data() + r0 * s.T, {rows, s.T});
    const auto used = cai::whiten(cai::host{}, xs, ms, cai::make_view(parts.data() + r0 * s.T, {rows, s.T}), {.stats = &merged});
    CHECK((used.count == merged.count && used.mean == merged.mean && used.m2 == merged.m2));
    cai::whiten(cai::host{}, xs, ms, cai::make_view(exact.data() + r0 * s.T, {rows, s.T}), {.stats = &st});
  }
  CHECK(std::memcmp(exact.data(), whole.data(), whole.size() * sizeof(double)) == 0);  // same statistics, same bits
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(std::fabs(parts[i] - whole[i]) <= 1e-12 * (1 + std::fabs(whole[i])));
  // An external state with no values whitens nothing.
  const cai::moments empty{};
  std::vector<double> z(x.size(), 3.0);
  cai::whiten(cai::host{}, view2(x, s.B, s.T), mask, cai::make_view(z.data(), {s.B, s.T}), {.stats = &empty});
  for (double v : z) CHECK(v == 0.0);
}

TEST_CASE("statistics of a single token, a fully masked batch and an empty batch", "[stats]") {
  SECTION("one counted token") {
    const std::vector<float> x{1.5f, 2.5f, -4.0f, 8.0f};
    const std::vector<std::uint8_t> m{0, 0, 1, 0};
    std::vector<float> y(4, 9.0f), z(4, 9.0f);
    const auto xv = cai::make_view(x.data(), {2, 2});
    const auto mv = cai::make_view(m.data(), {2, 2});
    const auto st = cai::masked_moments(cai::host{}, xv, mv);
    CHECK(st.count == 1);
    CHECK(st.mean == -4.0);
    CHECK(st.m2 == 0.0);
    cai::whiten(cai::host{}, xv, mv, cai::make_view(y.data(), {2, 2}));
    cai::whiten(cai::host{}, xv, mv, cai::make_view(z.data(), {2, 2}), {.shift_mean = false});
    CHECK(y == std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f});
    CHECK(z == std::vector<float>{0.0f, 0.0f, -4.0f, 0.0f});
  }
  SECTION("every token masked: NaN there is never read, and the outputs are 0") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> x{nan, 1.0f, nan, 2.0f, 3.0f, nan};
    const std::vector<std::uint8_t> m(6, 0);
    std::vector<float> y(6, 9.0f);
    const auto st = cai::masked_moments(cai::host{}, cai::make_view(x.data(), {2, 3}), cai::make_view(m.data(), {2, 3}));
    CHECK(st.count == 0);
    const auto w = cai::whiten(cai::host{}, cai::make_view(x.data(), {2, 3}), cai::make_view(m.data(), {2, 3}),
                               cai::make_view(y.data(), {2, 3}));
    CHECK(w.count == 0);
    for (float v : y) CHECK(v == 0.0f);
  }
  SECTION("no rows and no tokens") {
    std::vector<double> x(3), y(3);
    CHECK(cai::masked_moments(cai::host{}, cai::make_view(x.data(), {0, 3})).count == 0);
    CHECK(cai::masked_moments(cai::host{}, cai::make_view(x.data(), {3, 0})).count == 0);
    CHECK(cai::whiten(cai::host{}, cai::make_view(x.data(), {0, 3}), cai::no_mask, cai::make_view(y.data(), {0, 3})).count == 0);
    std::vector<cai::moments> none;
    REQUIRE_NOTHROW(cai::row_moments(cai::host{}, cai::make_view(x.data(), {0, 3}), cai::no_mask, cai::make_view(none.data(), {0})));
    const std::vector<std::int64_t> cu{0};  // packed, B = 0
    CHECK(cai::masked_moments(cai::host{}, cai::make_view(x.data(), {1, 0}), cai::no_mask, {.cu_seqlens = cai::make_view(cu.data(), {1})}).count == 0);
  }
}

TEST_CASE("the packed layout with cu_seqlens gives the same statistics as the padded layout", "[stats]") {
  const seq_batch s = make_seq_batch(41, 13, 19);
  const auto x = values_for<double>(s, 1.0f, 2.0f, 20);
  const auto xp = s.pack(x);
  const std::int64_t N = s.N();
  const cai::tensor_view<const double, 2> packed_x = cai::packed(cai::make_view(xp.data(), {N}));
  REQUIRE(packed_x.extent(0) == 1);
  REQUIRE(packed_x.extent(1) == N);
  const auto packed_m = cai::packed(cai::make_view(s.pmask.data(), {N}));
  const auto pad_m = cai::make_view(s.mask.data(), {s.B, s.T});

  const auto a = cai::masked_moments(cai::host{}, view2(x, s.B, s.T), pad_m);
  const auto b = cai::masked_moments(cai::host{}, packed_x, packed_m, {.cu_seqlens = s.cu_view()});
  CHECK((a.count == b.count && a.mean == b.mean && a.m2 == b.m2));  // same rows, same order: same bits

  std::vector<cai::moments> ra(static_cast<std::size_t>(s.B)), rb(static_cast<std::size_t>(s.B));
  cai::row_moments(cai::host{}, view2(x, s.B, s.T), pad_m, cai::make_view(ra.data(), {s.B}));
  cai::row_moments(cai::host{}, packed_x, packed_m, cai::make_view(rb.data(), {s.B}), {.cu_seqlens = s.cu_view()});
  for (std::size_t i = 0; i < ra.size(); ++i) CHECK((ra[i].count == rb[i].count && ra[i].mean == rb[i].mean && ra[i].m2 == rb[i].m2));

  for (bool per_row : {false, true}) {
    std::vector<double> ya(x.size()), yb(xp.size());
    cai::whiten(cai::host{}, view2(x, s.B, s.T), pad_m, cai::make_view(ya.data(), {s.B, s.T}), {.per_row = per_row});
    cai::whiten(cai::host{}, packed_x, packed_m, cai::packed(cai::make_view(yb.data(), {N})),
                {.per_row = per_row, .cu_seqlens = s.cu_view()});
    CHECK(s.pack(ya) == yb);
  }
  // Without a mask, the packed layout counts every token of every sequence (and nothing of the padding).
  const auto c = cai::masked_moments(cai::host{}, packed_x, cai::no_mask, {.cu_seqlens = s.cu_view()});
  check_moments(c, reference_moments(xp.data(), N, [](std::int64_t) { return true; }));
}

TEST_CASE("statistics are bitwise identical on host and threaded_host(3)", "[stats][dispatch]") {
  const seq_batch s = make_seq_batch(150, 21, 21);
  const auto x = values_for<float>(s, 0.5f, 2.0f, 22);
  const auto xv = view2(x, s.B, s.T);
  const auto mv = cai::make_view(s.mask.data(), {s.B, s.T});
  auto run = [&](const auto& backend, cai::moments& m, std::vector<cai::moments>& rows, std::vector<float>& w,
                 std::vector<float>& wr) {
    m = cai::masked_moments(backend, xv, mv);
    rows.assign(static_cast<std::size_t>(s.B), {});
    cai::row_moments(backend, xv, mv, cai::make_view(rows.data(), {s.B}));
    w.assign(x.size(), 0.0f);
    wr.assign(x.size(), 0.0f);
    cai::whiten(backend, xv, mv, cai::make_view(w.data(), {s.B, s.T}));
    cai::whiten(backend, xv, mv, cai::make_view(wr.data(), {s.B, s.T}), {.shift_mean = false, .per_row = true});
  };
  cai::moments m0, m1;
  std::vector<cai::moments> r0, r1;
  std::vector<float> w0, w1, q0, q1;
  run(cai::host{}, m0, r0, w0, q0);
  run(cai::threaded_host(3), m1, r1, w1, q1);
  CHECK((m0.count == m1.count && std::memcmp(&m0.mean, &m1.mean, 8) == 0 && std::memcmp(&m0.m2, &m1.m2, 8) == 0));
  for (std::size_t i = 0; i < r0.size(); ++i) CHECK((r0[i].count == r1[i].count && r0[i].mean == r1[i].mean && r0[i].m2 == r1[i].m2));
  CHECK(std::memcmp(w0.data(), w1.data(), w0.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(q0.data(), q1.data(), q0.size() * sizeof(float)) == 0);
}

TEST_CASE("sequence layouts reject bad cu_seqlens, shapes and masks with exceptions naming the argument", "[stats]") {
  cai::host h;
  const std::vector<double> x{1, 2, 3, 4, 5, 6};
  const auto packed_x = cai::packed(cai::make_view(x.data(), {6}));
  auto with_cu = [&](const std::vector<std::int64_t>& cu) {
    return cai::masked_moments(h, packed_x, cai::no_mask, {.cu_seqlens = cai::make_view(cu.data(), {static_cast<std::int64_t>(cu.size())})});
  };
  REQUIRE(with_cu({0, 2, 2, 6}).count == 6);
  CAI_REQUIRE_THROWS_NAMING(with_cu({1, 2, 6}), cai::invalid_argument, "cai::masked_moments", "'cu_seqlens'", "cu_seqlens[0] == 0", "got 1");
  CAI_REQUIRE_THROWS_NAMING(with_cu({0, 4, 3, 6}), cai::invalid_argument, "'cu_seqlens'", "non-decreasing", "4 then 3");
  CAI_REQUIRE_THROWS_NAMING(with_cu({0, 2, 5}), cai::shape_error, "'cu_seqlens'", "last offset == N == 6", "got 5");
  CAI_REQUIRE_THROWS_NAMING(with_cu({0, 2, 7}), cai::shape_error, "'cu_seqlens'", "got 7");
  const std::vector<std::int64_t> cu{0, 3, 6};
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, packed_x, cai::no_mask, {.cu_seqlens = cai::make_view(cu.data(), {0})}),
                            cai::shape_error, "'cu_seqlens'", "B + 1 >= 1");
  const std::vector<std::int64_t> cu_spread{0, 9, 3, 9, 6};  // stride 2 holds 0, 3, 6
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, packed_x, cai::no_mask,
                                                {.cu_seqlens = cai::tensor_view<const std::int64_t, 1>(cu_spread.data(), {3}, {2})}),
                            cai::layout_error, "'cu_seqlens'", "contiguous");
  // cu_seqlens with a (B, T) view: the packed layout is a single (1, N) row.
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, cai::make_view(x.data(), {2, 3}), cai::no_mask, {.cu_seqlens = cai::make_view(cu.data(), {3})}),
                            cai::shape_error, "'x'", "(1, N)", "(2, 3)");

  std::vector<std::uint8_t> m{1, 1, 0, 1, 1, 1};
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, cai::make_view(x.data(), {2, 3}), cai::make_view(m.data(), {3, 2})),
                            cai::shape_error, "'mask'", "(2, 3)", "(3, 2)");
  m[4] = 2;
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, cai::make_view(x.data(), {2, 3}), cai::make_view(m.data(), {2, 3})),
                            cai::invalid_argument, "'mask'", "0 or 1", "2 at row 1, token 1");
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, packed_x, cai::packed(cai::make_view(m.data(), {6})), {.cu_seqlens = cai::make_view(cu.data(), {3})}),
                            cai::invalid_argument, "'mask'", "2 at row 1, token 1");
  m[4] = 1;

  std::vector<double> bad = x;
  bad[2] = std::numeric_limits<double>::quiet_NaN();
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, cai::make_view(bad.data(), {2, 3})), cai::invalid_argument, "'x'", "finite", "row 0, token 2");
  REQUIRE(cai::masked_moments(h, cai::make_view(bad.data(), {2, 3}), cai::make_view(m.data(), {2, 3})).count == 5);  // masked NaN is fine
  bad[3] = -std::numeric_limits<double>::infinity();
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, cai::make_view(bad.data(), {2, 3}), cai::make_view(m.data(), {2, 3})),
                            cai::invalid_argument, "'x'", "-inf at row 1, token 0");

  const cai::tensor_view<const double, 2> strided(x.data(), {2, 2}, {3, 2});
  CAI_REQUIRE_THROWS_NAMING(cai::masked_moments(h, strided), cai::layout_error, "'x'", "stride 1");

  std::vector<cai::moments> rows(3);
  CAI_REQUIRE_THROWS_NAMING(cai::row_moments(h, cai::make_view(x.data(), {2, 3}), cai::no_mask, cai::make_view(rows.data(), {3})),
                            cai::shape_error, "cai::row_moments", "'out'", "one value per sequence (2)", "got 3");

  std::vector<double> y(6);
  const auto xv = cai::make_view(x.data(), {2, 3});
  const auto yv = cai::make_view(y.data(), {2, 3});
  CAI_REQUIRE_THROWS_NAMING(cai::whiten(h, xv, cai::no_mask, cai::make_view(y.data(), {3, 2})), cai::shape_error, "cai::whiten", "'out'");
  CAI_REQUIRE_THROWS_NAMING(cai::whiten(h, xv, cai::no_mask, yv, {.eps = -1e-8}), cai::invalid_argument, "'eps'", ">= 0");
  CAI_REQUIRE_THROWS_NAMING(cai::whiten(h, xv, cai::no_mask, yv, {.eps = std::numeric_limits<double>::quiet_NaN()}), cai::invalid_argument, "'eps'");
  CAI_REQUIRE_THROWS_NAMING(cai::whiten(h, xv, cai::no_mask, yv, {.eps = std::numeric_limits<double>::infinity()}), cai::invalid_argument, "'eps'");
  {
    // eps = 0 is allowed: a flat set (variance 0) whitens to exactly 0, or to its mean without the shift — not NaN.
    std::vector<double> flat(6, 2.5), w(6, -1.0);
    cai::whiten(h, cai::make_view(flat.data(), {2, 3}), cai::no_mask, cai::make_view(w.data(), {2, 3}), {.eps = 0.0});
    for (double v : w) CHECK(v == 0.0);
    cai::whiten(h, cai::make_view(flat.data(), {2, 3}), cai::no_mask, cai::make_view(w.data(), {2, 3}), {.shift_mean = false, .per_row = true, .eps = 0.0});
    for (double v : w) CHECK(v == 2.5);
  }
  const cai::moments st{6, 3.5, 17.5};
  CAI_REQUIRE_THROWS_NAMING(cai::whiten(h, xv, cai::no_mask, yv, {.per_row = true, .stats = &st}), cai::invalid_argument, "'stats'", "per_row");
  const cai::moments negative_m2{6, 3.5, -1.0}, negative_count{-1, 0.0, 0.0}, nan_mean{3, std::numeric_limits<double>::quiet_NaN(), 1.0};
  CAI_REQUIRE_THROWS_NAMING(cai::whiten(h, xv, cai::no_mask, yv, {.stats = &negative_m2}), cai::invalid_argument, "'stats'");
  CAI_REQUIRE_THROWS_NAMING(cai::whiten(h, xv, cai::no_mask, yv, {.stats = &negative_count}), cai::invalid_argument, "'stats'");
  CAI_REQUIRE_THROWS_NAMING(cai::whiten(h, xv, cai::no_mask, yv, {.stats = &nan_mean}), cai::invalid_argument, "'stats'");
}
