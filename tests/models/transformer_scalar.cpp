// Tests for cai/models/transformer_scalar.hpp: exact gradients of every parameter tensor against finite
// differences, backend independence, a small AdamW regression, the scalar_model concept, sequence scores at the
// last real token, the file format and bad input.
#include <cai/models/transformer_scalar.hpp>

#include <cai/concepts/scalar_model.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../support.hpp"

static_assert(cai::scalar_model<cai::models::transformer_scalar<>>);
static_assert(cai::scalar_model<cai::models::transformer_scalar<cai::threaded_host>>);
static_assert(cai::diagnose_scalar_model<cai::models::transformer_scalar<>>());

namespace {

const cai::models::transformer_config tiny{.vocab = 11, .d_model = 8, .n_heads = 2, .n_layers = 2, .d_ff = 16, .max_seq = 8};

struct owned_batch {
  std::vector<std::int32_t> tok;
  std::vector<std::uint8_t> mask;
  std::int64_t B = 0, T = 0;
  cai::token_batch view() const { return {cai::make_view(tok.data(), {B, T}), cai::make_view(mask.data(), {B, T})}; }
};

// B = 3, T = 6; row 2 has 4 real tokens and 2 padding positions holding junk ids.
owned_batch fd_batch() {
  owned_batch b;
  b.B = 3;
  b.T = 6;
  b.tok = cai_test::random_ids(18, 11, 21);
  b.mask.assign(18, 1);
  b.mask[16] = b.mask[17] = 0;
  b.tok[16] = 99;
  b.tok[17] = -4;
  return b;
}

template <class M>
double weighted_values(M& m, const owned_batch& b, const std::vector<float>& dv) {
  auto h = m.train_forward(b.view());
  double L = 0;
  for (std::int64_t i = 0; i < b.B * b.T; ++i) L += static_cast<double>(dv[i]) * h.values().data()[i];
  return L;
}

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("cai_tfs_test_" + name)).string();
}

std::vector<unsigned char> read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void write_all(const std::string& p, const std::vector<unsigned char>& v) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size()));
}

}  // namespace

// The loss is L = sum_t dv_t value_t with random dv (padding entries included: they must be ignored). fp32
// central differences with eps = 1e-2, as in tests/models/transformer.cpp: truncation O(eps^2) ~ 1e-4 relative
// and the fp32 rounding of L (18 terms of size ~1) ~ 1e-6 / (2 eps) ~ 1e-4 absolute, so a 2e-2 relative
// (+ 2e-3 absolute) tolerance leaves a wide margin while any wrong term changes the gradient by O(1).
TEST_CASE("transformer_scalar gradients of every parameter tensor match finite differences", "[models][transformer]") {
  const auto b = fd_batch();
  const auto dv = cai_test::normal_floats(18, 1.0f, 31);
  cai::models::transformer_scalar<> m(tiny, cai::host{}, 7, {.init_std = 0.4f});
  for (const auto& pi : m.parameter_table())
    if (pi.name.ends_with("_g") || pi.name.ends_with("_b")) {
      const auto r = cai_test::normal_floats(static_cast<std::size_t>(pi.size), 0.3f, static_cast<std::uint64_t>(pi.offset) + 5);
      for (std::int64_t i = 0; i < pi.size; ++i) m.parameters()[pi.offset + i] += r[i];
    }
  m.zero_grad();
  auto h0 = m.train_forward(b.view());
  // Padding positions hold 0.
  CHECK(h0.values()(2, 4) == 0.0f);
  CHECK(h0.values()(2, 5) == 0.0f);
  CHECK(h0.values()(0, 0) != 0.0f);
  const std::vector<float> vals0(h0.values().data(), h0.values().data() + 18);
  m.backward(std::move(h0), cai::make_view(dv.data(), {3, 6}));
  const std::vector<float> grad(m.gradients().begin(), m.gradients().end());
  const std::vector<float> p0(m.parameters().begin(), m.parameters().end());
  const float eps = 1e-2f;
  double worst_dir = 0, worst_entry = 0, worst_abs = 0;
  std::size_t tensors = 0;
  for (const auto& pi : m.parameter_table()) {
    ++tensors;
    auto u = cai_test::normal_floats(static_cast<std::size_t>(pi.size), 1.0f, static_cast<std::uint64_t>(pi.offset) + 100);
    double nrm = 0;
    for (float x : u) nrm += static_cast<double>(x) * x;
    for (float& x : u) x = static_cast<float>(x / std::sqrt(nrm));
    auto loss_at = [&](float s) {
      for (std::int64_t i = 0; i < pi.size; ++i) m.parameters()[pi.offset + i] = p0[pi.offset + i] + s * eps * u[i];
      return weighted_values(m, b, dv);
    };
    const double fd = (loss_at(1) - loss_at(-1)) / (2.0 * eps);
    for (std::int64_t i = 0; i < pi.size; ++i) m.parameters()[pi.offset + i] = p0[pi.offset + i];
    double an = 0;
    for (std::int64_t i = 0; i < pi.size; ++i) an += static_cast<double>(grad[pi.offset + i]) * u[i];
    INFO(pi.name << " direction: analytic " << an << " fd " << fd);
    CHECK(std::fabs(an - fd) <= 2e-2 * std::max(std::fabs(fd), std::fabs(an)) + 2e-3);
    worst_dir = std::max(worst_dir, std::fabs(an - fd) / (std::fabs(fd) + 1e-3));
    for (std::int64_t i : {std::int64_t{0}, pi.size / 2 + 1 < pi.size ? pi.size / 2 + 1 : 0, pi.size - 1}) {
      auto at = [&](float s) {
        m.parameters()[pi.offset + i] = p0[pi.offset + i] + s * eps;
        return weighted_values(m, b, dv);
      };
      const double fde = (at(1) - at(-1)) / (2.0 * eps);
      m.parameters()[pi.offset + i] = p0[pi.offset + i];
      const double ane = grad[pi.offset + i];
      INFO(pi.name << "[" << i << "]: analytic " << ane << " fd " << fde);
      CHECK(std::fabs(ane - fde) <= 2e-2 * std::max(std::fabs(fde), std::fabs(ane)) + 2e-3);
      if (std::fabs(fde) > 1e-2) worst_entry = std::max(worst_entry, std::fabs(ane - fde) / std::fabs(fde));
      worst_abs = std::max(worst_abs, std::fabs(ane - fde));
    }
  }
  CHECK(tensors == 2 + 12 * 2 + 2 + 2);
  std::printf("[transformer_scalar FD] %zu tensors: worst relative error along a direction %.3g, of one entry "
              "(|g| > 1e-2) %.3g, worst absolute error of one entry %.3g\n", tensors, worst_dir, worst_entry, worst_abs);

  // value_b's gradient is exactly the sum of dv over real positions; wpe rows 6 and 7 (never real) stay 0.
  double sum_dv = 0;
  for (std::size_t i = 0; i < 18; ++i)
    if (b.mask[i]) sum_dv += dv[i];
  for (const auto& pi : m.parameter_table()) {
    if (pi.name == "value_b") CHECK(grad[pi.offset] == Approx(sum_dv).margin(1e-5));
    if (pi.name == "wpe")
      for (std::int64_t i = 6 * 8; i < 8 * 8; ++i) CHECK(grad[pi.offset + i] == 0.0f);
  }

  // The same values and gradients, bit for bit, on the threaded backend.
  cai::models::transformer_scalar<cai::threaded_host> m2(tiny, cai::threaded_host(2), 7, {.init_std = 0.4f});
  std::copy(p0.begin(), p0.end(), m2.parameters().begin());
  m2.zero_grad();
  auto h2 = m2.train_forward(b.view());
  CHECK(std::memcmp(vals0.data(), h2.values().data(), vals0.size() * sizeof(float)) == 0);
  m2.backward(std::move(h2), cai::make_view(dv.data(), {3, 6}));
  CHECK(std::memcmp(grad.data(), m2.gradients().data(), grad.size() * sizeof(float)) == 0);
}

TEST_CASE("transformer_scalar shares the LM's trunk: same seed, same trunk weights and parameter layout",
          "[models][transformer]") {
  cai::models::transformer_lm<> lm(tiny, cai::host{}, 4);
  cai::models::transformer_scalar<> sc(tiny, cai::host{}, 4);
  const auto& tl = lm.parameter_table();
  const auto& ts = sc.parameter_table();
  REQUIRE(ts.size() == tl.size());
  for (std::size_t k = 0; k + 2 < ts.size(); ++k) {
    CHECK(ts[k].name == tl[k].name);
    CHECK(ts[k].offset == tl[k].offset);
    CHECK(std::memcmp(sc.parameters().data() + ts[k].offset, lm.parameters().data() + tl[k].offset,
                      static_cast<std::size_t>(ts[k].size) * sizeof(float)) == 0);
  }
  CHECK(ts[ts.size() - 2].name == "value_w");
  CHECK(ts[ts.size() - 2].decay);
  CHECK(ts.back().name == "value_b");
  CHECK(!ts.back().decay);
  CHECK(sc.parameters()[ts.back().offset] == 0.0f);
}

TEST_CASE("transformer_scalar load_trunk copies a trained LM's trunk, keeps its head and resets AdamW", "[models][transformer]") {
  cai::models::transformer_lm<> lm(tiny, cai::host{}, 4);
  for (auto& x : lm.parameters()) x += 0.25f;  // a trunk unlike any fresh initialisation
  cai::models::transformer_scalar<> sc(tiny, cai::host{}, 9);
  const auto& ts = sc.parameter_table();
  const std::vector<float> head(sc.parameters().begin() + ts[ts.size() - 2].offset, sc.parameters().end());
  sc.load_trunk(lm);
  for (std::size_t k = 0; k + 2 < ts.size(); ++k)
    CHECK(std::memcmp(sc.parameters().data() + ts[k].offset, lm.parameters().data() + lm.parameter_table()[k].offset,
                      static_cast<std::size_t>(ts[k].size) * sizeof(float)) == 0);
  CHECK(std::equal(head.begin(), head.end(), sc.parameters().begin() + ts[ts.size() - 2].offset));
  CHECK(sc.steps_taken() == 0);
  auto other = tiny;
  other.d_ff = 32;
  const cai::models::transformer_lm<> wide(other, cai::host{}, 4);
  const std::vector<float> before(sc.parameters().begin(), sc.parameters().end());
  CAI_REQUIRE_THROWS_NAMING(sc.load_trunk(wide), cai::invalid_argument, "lm");
  CHECK(std::equal(before.begin(), before.end(), sc.parameters().begin()));
}

TEST_CASE("transformer_scalar values are causal, 0 on padding, and sequence scores read the last real token",
          "[models][transformer]") {
  cai::models::transformer_scalar<> m(tiny, cai::host{}, 3, {.init_std = 0.5f});
  auto b = fd_batch();
  std::vector<float> v1(18), v2(18);
  m.scalars(b.view(), cai::make_view(v1.data(), {3, 6}));
  // Changing token 3 of row 0 leaves positions 0..2 of that row (and other rows) unchanged, and changes 3..5.
  b.tok[3] = (b.tok[3] + 1) % 11;
  m.scalars(b.view(), cai::make_view(v2.data(), {3, 6}));
  for (std::size_t i = 0; i < 18; ++i) {
    if (i >= 3 && i < 6) CHECK(v1[i] != v2[i]);
    else CHECK(v1[i] == v2[i]);
  }
  CHECK(v2[16] == 0.0f);
  CHECK(v2[17] == 0.0f);
  const auto s = m.sequence_scores(b.view());
  REQUIRE(s.size() == 3);
  CHECK(s[0] == v2[5]);
  CHECK(s[1] == v2[11]);
  CHECK(s[2] == v2[15]);
  // Padding after a row's last real token does not change its values (junk ids are never read).
  owned_batch shorter;
  shorter.B = 1;
  shorter.T = 4;
  shorter.tok.assign(b.tok.begin() + 12, b.tok.begin() + 16);
  shorter.mask.assign(4, 1);
  std::vector<float> v3(4);
  m.scalars(shorter.view(), cai::make_view(v3.data(), {1, 4}));
  for (std::size_t t = 0; t < 4; ++t) CHECK(v3[t] == v2[12 + t]);
  // train_forward's values are scalars()'s.
  auto h = m.train_forward(b.view());
  CHECK(std::memcmp(h.values().data(), v2.data(), 18 * sizeof(float)) == 0);
}

namespace {
// Fits value[b, t] = target(token, position) by mean squared error over real positions; returns the first and
// last losses.
template <class Backend>
std::pair<double, double> regress(cai::models::transformer_scalar<Backend>& m, int steps) {
  const std::int64_t B = 4, T = 16;
  owned_batch b;
  b.B = B;
  b.T = T;
  b.tok = cai_test::random_ids(static_cast<std::size_t>(B * T), 11, 5);
  b.mask.assign(static_cast<std::size_t>(B * T), 1);
  for (std::int64_t t = 12; t < T; ++t) b.mask[static_cast<std::size_t>(3 * T + t)] = 0;  // row 3 padded
  std::vector<float> y(static_cast<std::size_t>(B * T), 0.0f);
  double n = 0;
  for (std::size_t i = 0; i < y.size(); ++i)
    if (b.mask[i]) {
      y[i] = 0.5f * static_cast<float>(b.tok[i] % 4) - 0.75f + 0.05f * static_cast<float>(static_cast<std::int64_t>(i) % T);
      ++n;
    }
  std::vector<float> dv(y.size());
  double first = 0, last = 0;
  for (int s = 0; s < steps; ++s) {
    auto h = m.train_forward(b.view());
    double loss = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      const float e = b.mask[i] ? h.values().data()[i] - y[i] : 0.0f;
      loss += static_cast<double>(e) * e;
      dv[i] = static_cast<float>(2.0 * e / n);
    }
    loss /= n;
    if (s == 0) first = loss;
    last = loss;
    m.zero_grad();
    m.backward(std::move(h), cai::make_view(dv.data(), {B, T}));
    m.step(1e-2);
  }
  return {first, last};
}
}  // namespace

TEST_CASE("transformer_scalar AdamW regression to a per-position target lowers the loss 10x on both backends",
          "[models][transformer]") {
  const cai::models::transformer_config cfg{.vocab = 11, .d_model = 16, .n_heads = 2, .n_layers = 2, .d_ff = 32, .max_seq = 16};
  const cai::models::transformer_options opt{.init_std = 0.1f, .weight_decay = 0.01f, .max_grad_norm = 1.0f};
  cai::models::transformer_scalar<> m(cfg, cai::host{}, 3, opt);
  const auto [first, last] = regress(m, 100);
  std::printf("[transformer_scalar regression] MSE %.4g -> %.3g after 100 AdamW steps (%lld parameters)\n", first, last,
              static_cast<long long>(m.parameter_count()));
  CHECK(last < first / 10);
  CHECK(m.steps_taken() == 100);
  CHECK(m.last_grad_norm() > 0.0f);
  cai::models::transformer_scalar<cai::threaded_host> mt(cfg, cai::threaded_host(2), 3, opt);
  const auto c = regress(mt, 100);
  CHECK(c.second == last);
  CHECK(std::memcmp(m.parameters().data(), mt.parameters().data(), m.parameters().size() * sizeof(float)) == 0);
}

TEST_CASE("transformer_scalar save and load round-trip and reject damaged files naming the problem",
          "[models][transformer]") {
  cai::models::transformer_scalar<> m(tiny, cai::host{}, 8, {.init_std = 0.5f});
  const std::string path = temp_file("model.bin"), bad = temp_file("bad.bin");
  m.save(path);
  cai::models::transformer_scalar<> other(tiny, cai::host{}, 9, {.init_std = 0.5f});
  const auto b = fd_batch();
  std::vector<float> v1(18), v2(18);
  m.scalars(b.view(), cai::make_view(v1.data(), {3, 6}));
  other.scalars(b.view(), cai::make_view(v2.data(), {3, 6}));
  CHECK(v1 != v2);
  other.load(path);
  other.scalars(b.view(), cai::make_view(v2.data(), {3, 6}));
  CHECK(v1 == v2);
  const auto good = read_all(path);
  CHECK(std::memcmp(good.data(), "CAITFSC1", 8) == 0);
  CHECK(good.size() == 8 + 4 + 48 + 8 + static_cast<std::size_t>(m.parameter_count()) * 4 + 8);

  auto damaged = [&](auto edit) {
    auto v = good;
    edit(v);
    write_all(bad, v);
    return bad;
  };
  const std::vector<float> before(other.parameters().begin(), other.parameters().end());
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v.resize(v.size() - 5); })), cai::parse_error, "truncated");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v.resize(20); })), cai::parse_error, "truncated");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v[0] = 'X'; })), cai::parse_error, "bad magic", "transformer_scalar");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v[8] = 2; })), cai::parse_error, "unsupported version");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v[100] ^= 0x10; })), cai::parse_error, "checksum mismatch");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v[v.size() - 1] ^= 0x01; })), cai::parse_error, "checksum mismatch");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v.push_back(0); })), cai::parse_error, "trailing bytes");
  auto cfg2 = tiny;
  cfg2.d_ff = 12;
  cai::models::transformer_scalar<> wider(cfg2);
  wider.save(bad);
  CAI_REQUIRE_THROWS_NAMING(other.load(bad), cai::parse_error, "config mismatch", "d_ff");
  // A language model's file (same trunk, other head) is refused by its magic, and vice versa.
  cai::models::transformer_lm<> lm(tiny);
  lm.save(bad);
  CAI_REQUIRE_THROWS_NAMING(other.load(bad), cai::parse_error, "bad magic");
  CAI_REQUIRE_THROWS_NAMING(lm.load(path), cai::parse_error, "bad magic");
  CAI_REQUIRE_THROWS_NAMING(other.load(temp_file("does_not_exist.bin")), cai::error, "cannot open");
  CHECK(std::vector<float>(other.parameters().begin(), other.parameters().end()) == before);
  std::filesystem::remove(path);
  std::filesystem::remove(bad);
}

TEST_CASE("transformer_scalar rejects bad configs and bad input naming the field", "[models][transformer]") {
  using cfg_t = cai::models::transformer_config;
  using m_t = cai::models::transformer_scalar<>;
  auto with = [](auto edit) {
    cfg_t c = tiny;
    edit(c);
    return c;
  };
  CAI_REQUIRE_THROWS_NAMING(m_t(with([](cfg_t& c) { c.vocab = 1; })), cai::invalid_argument, "'config.vocab'");
  CAI_REQUIRE_THROWS_NAMING(m_t(with([](cfg_t& c) { c.n_heads = 3; })), cai::invalid_argument, "'config.n_heads'");
  CAI_REQUIRE_THROWS_NAMING(m_t(with([](cfg_t& c) { c.n_layers = 0; })), cai::invalid_argument, "'config.n_layers'");
  CAI_REQUIRE_THROWS_NAMING(m_t(with([](cfg_t& c) { c.max_seq = 0; })), cai::invalid_argument, "'config.max_seq'");
  CAI_REQUIRE_THROWS_NAMING(m_t(tiny, cai::host{}, 0, {.init_std = -1.0f}), cai::invalid_argument, "'options.init_std'");
  CAI_REQUIRE_THROWS_NAMING(m_t(tiny, cai::host{}, 0, {.beta1 = 1.0f}), cai::invalid_argument, "'options.beta1'");

  m_t m(tiny);
  CAI_REQUIRE_THROWS_NAMING(m.step(-1.0), cai::invalid_argument, "'learning_rate'");
  std::vector<float> out(9);
  const std::vector<std::uint8_t> mask{1, 1, 1};
  {
    const std::vector<std::int32_t> tok{1, 11, 3};
    const cai::token_batch bb{cai::make_view(tok.data(), {1, 3}), cai::make_view(mask.data(), {1, 3})};
    CAI_REQUIRE_THROWS_NAMING(m.scalars(bb, cai::make_view(out.data(), {1, 3})), cai::invalid_argument, "'batch.tokens'", "[0, 11)");
    CAI_REQUIRE_THROWS_NAMING(m.train_forward(bb), cai::invalid_argument, "'batch.tokens'");
  }
  const std::vector<std::int32_t> tok{1, 2, 3};
  const cai::token_batch good{cai::make_view(tok.data(), {1, 3}), cai::make_view(mask.data(), {1, 3})};
  CAI_REQUIRE_THROWS_NAMING(m.scalars(good, cai::make_view(out.data(), {1, 2})), cai::shape_error, "'out'");
  const cai::token_batch mismatched{cai::make_view(tok.data(), {1, 3}), cai::make_view(mask.data(), {3, 1})};
  CAI_REQUIRE_THROWS_NAMING(m.scalars(mismatched, cai::make_view(out.data(), {1, 3})), cai::shape_error, "'batch.mask'");
  {
    const std::vector<std::int32_t> long_tok(9, 1);
    const std::vector<std::uint8_t> long_mask(9, 1);
    const cai::token_batch bl{cai::make_view(long_tok.data(), {1, 9}), cai::make_view(long_mask.data(), {1, 9})};
    CAI_REQUIRE_THROWS_NAMING(m.scalars(bl, cai::make_view(out.data(), {1, 9})), cai::invalid_argument, "'batch.tokens'", "max_seq = 8");
  }
  const std::vector<float> g(3, 1.0f);
  auto h = m.train_forward(good);
  CAI_REQUIRE_THROWS_NAMING(m.backward(std::move(h), cai::make_view(g.data(), {3, 1})), cai::shape_error, "'dvalues'");
  m.backward(std::move(h), cai::make_view(g.data(), {1, 3}));
  CAI_REQUIRE_THROWS_NAMING(m.backward(std::move(h), cai::make_view(g.data(), {1, 3})), cai::invalid_argument, "'handle'");
  // An all-padding batch is fine: values 0, no gradient.
  const std::vector<std::uint8_t> none{0, 0, 0};
  const cai::token_batch empty{cai::make_view(tok.data(), {1, 3}), cai::make_view(none.data(), {1, 3})};
  m.zero_grad();
  m.scalars(empty, cai::make_view(out.data(), {1, 3}));
  CHECK((out[0] == 0.0f && out[1] == 0.0f && out[2] == 0.0f));
  m.backward(m.train_forward(empty), cai::make_view(g.data(), {1, 3}));
  for (float x : m.gradients()) CHECK(x == 0.0f);
  CHECK(m.sequence_scores(empty) == std::vector<float>{0.0f});
}

TEST_CASE("transformer_scalar checkpoints resume AdamW training bit for bit and reject damaged files naming the problem",
          "[models][transformer]") {
  const cai::models::transformer_config cfg{.vocab = 11, .d_model = 16, .n_heads = 2, .n_layers = 1, .d_ff = 32, .max_seq = 16};
  const cai::models::transformer_options opt{.init_std = 0.1f, .weight_decay = 0.01f, .max_grad_norm = 1.0f};
  const std::string ckpt = temp_file("model.ckpt"), weights = temp_file("weights.bin"), bad = temp_file("bad.ckpt");
  cai::models::transformer_scalar<> a(cfg, cai::host{}, 3, opt);
  regress(a, 4);
  a.save_checkpoint(ckpt);
  const auto tail_a = regress(a, 6);
  cai::models::transformer_scalar<cai::threaded_host> b(cfg, cai::threaded_host(2), 42, opt);  // any backend reads it
  b.load_checkpoint(ckpt);
  const auto tail_b = regress(b, 6);
  CHECK(tail_a == tail_b);
  CHECK(b.steps_taken() == 10);
  CHECK(std::memcmp(a.parameters().data(), b.parameters().data(), a.parameters().size() * sizeof(float)) == 0);

  const auto good = read_all(ckpt);
  CHECK(std::memcmp(good.data(), "CAITSCC1", 8) == 0);
  auto damaged = [&](auto edit) {
    auto v = good;
    edit(v);
    write_all(bad, v);
    return bad;
  };
  cai::models::transformer_scalar<> e(cfg, cai::host{}, 7, opt);
  const std::vector<float> before(e.parameters().begin(), e.parameters().end());
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v.resize(v.size() - 9); })), cai::parse_error, "truncated");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v[3] ^= 0x01; })), cai::parse_error, "bad magic");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v[8] = 7; })), cai::parse_error, "unsupported version");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v[v.size() / 2] ^= 0x40; })), cai::parse_error, "checksum mismatch");
  a.save(weights);
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(weights), cai::parse_error, "bad magic", "weights-only");
  // The LM's checkpoint (same trunk, other head) is refused by its magic.
  cai::models::transformer_lm<> lm(cfg);
  lm.save_checkpoint(bad);
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(bad), cai::parse_error, "bad magic", "transformer_scalar checkpoint");
  auto cfg2 = cfg;
  cfg2.max_seq = 12;
  cai::models::transformer_scalar<> shorter(cfg2);
  shorter.save_checkpoint(bad);
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(bad), cai::parse_error, "config mismatch", "max_seq");
  CHECK(std::vector<float>(e.parameters().begin(), e.parameters().end()) == before);
  CHECK(e.steps_taken() == 0);
  for (const auto& p : {ckpt, weights, bad}) std::filesystem::remove(p);
}
