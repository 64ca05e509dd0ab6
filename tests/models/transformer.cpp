// Tests for cai/models/transformer.hpp: exact gradients of every parameter tensor against finite differences,
// AdamW training on a repeating byte pattern, backend independence, KV-cache sampling against a full
// recomputation, the file format and bad input.
#include <cai/models/transformer.hpp>

#include <cai/concepts/policy.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../support.hpp"

static_assert(cai::trainable_policy<cai::models::transformer_lm<>>);
static_assert(cai::sampling_policy<cai::models::transformer_lm<>>);
static_assert(cai::trainable_policy<cai::models::transformer_lm<cai::threaded_host>>);

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
double scalar_loss(M& lm, const owned_batch& b, const std::vector<float>& g, const std::vector<float>& h) {
  auto hd = lm.train_forward(b.view(), {.entropy = true});
  double L = 0;
  for (std::int64_t i = 0; i < b.B * b.T; ++i)
    L += static_cast<double>(g[i]) * hd.logp().data()[i] + static_cast<double>(h[i]) * hd.entropy().data()[i];
  return L;
}

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("cai_tf_test_" + name)).string();
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

// fp32 central differences with step eps = 1e-2: the truncation error is O(eps^2 f''') ~ 1e-4 relative, and the
// fp32 rounding of the loss (~18 terms of size ~2, each with relative error ~1e-6) contributes ~2e-6 / (2 eps)
// ~ 1e-4 absolute. A 2e-2 relative tolerance (plus 2e-3 absolute for near-zero entries) therefore leaves a wide
// margin while still catching any wrong term (a missing factor or a dropped path changes the gradient by O(1)).
TEST_CASE("transformer gradients of every parameter tensor match finite differences", "[models][transformer]") {
  const auto b = fd_batch();
  const auto g = cai_test::normal_floats(18, 1.0f, 31);
  const auto h = cai_test::normal_floats(18, 1.0f, 32);
  cai::models::transformer_lm<> lm(tiny, cai::host{}, 7, {.init_std = 0.4f});
  // Non-trivial LayerNorm gains and biases so that their gradients are exercised off the identity.
  for (const auto& pi : lm.parameter_table())
    if (pi.name.ends_with("_g") || pi.name.ends_with("_b")) {
      const auto r = cai_test::normal_floats(static_cast<std::size_t>(pi.size), 0.3f, static_cast<std::uint64_t>(pi.offset) + 5);
      for (std::int64_t i = 0; i < pi.size; ++i) lm.parameters()[pi.offset + i] += r[i];
    }
  lm.zero_grad();
  lm.backward(lm.train_forward(b.view(), {.entropy = true}),
              {.dlogp = cai::make_view(g.data(), {3, 6}), .dentropy = cai::make_view(h.data(), {3, 6})});
  const std::vector<float> grad(lm.gradients().begin(), lm.gradients().end());
  const std::vector<float> p0(lm.parameters().begin(), lm.parameters().end());
  const float eps = 1e-2f;
  double worst_dir = 0, worst_entry = 0, worst_abs = 0;
  std::size_t tensors = 0;
  for (const auto& pi : lm.parameter_table()) {
    ++tensors;
    // A random unit direction over the whole tensor.
    auto u = cai_test::normal_floats(static_cast<std::size_t>(pi.size), 1.0f, static_cast<std::uint64_t>(pi.offset) + 100);
    double nrm = 0;
    for (float x : u) nrm += static_cast<double>(x) * x;
    for (float& x : u) x = static_cast<float>(x / std::sqrt(nrm));
    auto loss_at = [&](float s) {
      for (std::int64_t i = 0; i < pi.size; ++i) lm.parameters()[pi.offset + i] = p0[pi.offset + i] + s * eps * u[i];
      return scalar_loss(lm, b, g, h);
    };
    const double fd = (loss_at(1) - loss_at(-1)) / (2.0 * eps);
    for (std::int64_t i = 0; i < pi.size; ++i) lm.parameters()[pi.offset + i] = p0[pi.offset + i];
    double an = 0;
    for (std::int64_t i = 0; i < pi.size; ++i) an += static_cast<double>(grad[pi.offset + i]) * u[i];
    INFO(pi.name << " direction: analytic " << an << " fd " << fd);
    CHECK(std::fabs(an - fd) <= 2e-2 * std::max(std::fabs(fd), std::fabs(an)) + 2e-3);
    worst_dir = std::max(worst_dir, std::fabs(an - fd) / (std::fabs(fd) + 1e-3));
    // Three individual entries (the first, the last and one in between).
    for (std::int64_t i : {std::int64_t{0}, pi.size / 2 + 1 < pi.size ? pi.size / 2 + 1 : 0, pi.size - 1}) {
      auto at = [&](float s) {
        lm.parameters()[pi.offset + i] = p0[pi.offset + i] + s * eps;
        return scalar_loss(lm, b, g, h);
      };
      const double fde = (at(1) - at(-1)) / (2.0 * eps);
      lm.parameters()[pi.offset + i] = p0[pi.offset + i];
      const double ane = grad[pi.offset + i];
      INFO(pi.name << "[" << i << "]: analytic " << ane << " fd " << fde);
      CHECK(std::fabs(ane - fde) <= 2e-2 * std::max(std::fabs(fde), std::fabs(ane)) + 2e-3);
      // Entries with |gradient| < 1e-2 (e.g. key biases, to which softmax is invariant: exactly 0) sit at the
      // fp32 noise floor of the difference quotient (~1e-4 absolute) and are reported by absolute error instead.
      if (std::fabs(fde) > 1e-2) worst_entry = std::max(worst_entry, std::fabs(ane - fde) / std::fabs(fde));
      worst_abs = std::max(worst_abs, std::fabs(ane - fde));
    }
  }
  CHECK(tensors == 2 + 12 * 2 + 4);
  std::printf("[transformer FD] %zu tensors: worst relative error along a direction %.3g, of one entry (|g| > 1e-2) "
              "%.3g, worst absolute error of one entry %.3g\n", tensors, worst_dir, worst_entry, worst_abs);

  // The padded positions (junk ids 99 and -4) are neither read nor given gradient: wpe rows 6 and 7 stay 0.
  for (const auto& pi : lm.parameter_table())
    if (pi.name == "wpe")
      for (std::int64_t i = 6 * 8; i < 8 * 8; ++i) CHECK(grad[pi.offset + i] == 0.0f);

  // The same gradients, bit for bit, on the threaded backend.
  cai::models::transformer_lm<cai::threaded_host> lm2(tiny, cai::threaded_host(2), 7, {.init_std = 0.4f});
  std::copy(p0.begin(), p0.end(), lm2.parameters().begin());
  lm2.zero_grad();
  lm2.backward(lm2.train_forward(b.view(), {.entropy = true}),
               {.dlogp = cai::make_view(g.data(), {3, 6}), .dentropy = cai::make_view(h.data(), {3, 6})});
  CHECK(std::memcmp(grad.data(), lm2.gradients().data(), grad.size() * sizeof(float)) == 0);
}

namespace {
template <class Backend>
std::pair<double, double> train_pattern(cai::models::transformer_lm<Backend>& lm, int steps) {
  const std::string pattern = "hello world! ";
  const std::int64_t B = 4, T = 24;
  owned_batch b;
  b.B = B;
  b.T = T;
  for (std::int64_t r = 0; r < B; ++r)
    for (std::int64_t t = 0; t < T; ++t) b.tok.push_back(static_cast<unsigned char>(pattern[static_cast<std::size_t>(r * 3 + t) % pattern.size()]));
  b.mask.assign(static_cast<std::size_t>(B * T), 1);
  const auto n = static_cast<float>(B * (T - 1));
  std::vector<float> dlogp(static_cast<std::size_t>(B * T), -1.0f / n);
  double first = 0, last = 0;
  for (int s = 0; s < steps; ++s) {
    auto h = lm.train_forward(b.view(), {});
    double loss = 0;
    for (std::int64_t i = 0; i < B * T; ++i) loss -= h.logp().data()[i];
    loss /= n;
    if (s == 0) first = loss;
    last = loss;
    lm.zero_grad();
    lm.backward(std::move(h), {.dlogp = cai::make_view(dlogp.data(), {B, T})});
    lm.step(1e-2);
  }
  return {first, last};
}
}  // namespace

TEST_CASE("AdamW training on a repeating byte pattern lowers the loss deterministically on both backends",
          "[models][transformer]") {
  const cai::models::transformer_config cfg{.vocab = 257, .d_model = 16, .n_heads = 2, .n_layers = 2, .d_ff = 32, .max_seq = 32};
  const cai::models::transformer_options opt{.init_std = 0.1f, .weight_decay = 0.01f, .max_grad_norm = 1.0f};
  const auto t0 = std::chrono::steady_clock::now();
  cai::models::transformer_lm<> lm(cfg, cai::host{}, 3, opt);
  const auto [first, last] = train_pattern(lm, 100);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[transformer train] loss %.4f -> %.4f after 100 AdamW steps (%.2f s, %lld parameters)\n", first, last, secs,
              static_cast<long long>(lm.parameter_count()));
  CHECK(first > 5.0);  // ~ log 257 at initialisation
  CHECK(last < first / 5);
  CHECK(lm.steps_taken() == 100);
  CHECK(lm.last_grad_norm() > 0.0f);

  cai::models::transformer_lm<> again(cfg, cai::host{}, 3, opt);
  cai::models::transformer_lm<cai::threaded_host> threaded(cfg, cai::threaded_host(2), 3, opt);
  const auto a = train_pattern(again, 100);
  const auto c = train_pattern(threaded, 100);
  CHECK(a.second == last);
  CHECK(c.second == last);
  const auto P = static_cast<std::size_t>(lm.parameter_count());
  CHECK(std::memcmp(lm.parameters().data(), again.parameters().data(), P * sizeof(float)) == 0);
  CHECK(std::memcmp(lm.parameters().data(), threaded.parameters().data(), P * sizeof(float)) == 0);
}

TEST_CASE("transformer AdamW clips the global gradient norm and skips decay outside the matrices", "[models][transformer]") {
  const auto b = fd_batch();
  const auto g = cai_test::normal_floats(18, 10.0f, 41);
  cai::models::transformer_lm<> lm(tiny, cai::host{}, 1, {.init_std = 0.4f, .weight_decay = 0.5f, .max_grad_norm = 0.25f});
  const std::vector<float> p0(lm.parameters().begin(), lm.parameters().end());
  lm.zero_grad();
  lm.backward(lm.train_forward(b.view(), {}), {.dlogp = cai::make_view(g.data(), {3, 6})});
  double sq = 0;
  for (float x : lm.gradients()) sq += static_cast<double>(x) * x;
  const float reported = lm.step(1e-3);
  CHECK(reported == Approx(std::sqrt(sq)).epsilon(1e-5));
  CHECK(reported > 0.25f);
  for (const auto& pi : lm.parameter_table())
    for (std::int64_t i = 0; i < pi.size; ++i) {
      const std::int64_t j = pi.offset + i;
      const double gj = lm.gradients()[j];
      // First Adam step with clipped gradient c = g * 0.25 / norm: m_hat = c, v_hat = c^2, update c / (|c| + eps).
      const double cj = gj * 0.25 / reported;
      const double expect = p0[j] - 1e-3 * (cj / (std::fabs(cj) + 1e-8) + (pi.decay ? 0.5 * p0[j] : 0.0));
      if (std::fabs(lm.parameters()[j] - expect) > 1e-6) {
        INFO(pi.name << "[" << i << "] " << lm.parameters()[j] << " vs " << expect);
        CHECK(false);
      }
    }
}

namespace {
owned_batch from_sample(const cai::sample_batch& s) {
  owned_batch b;
  b.B = s.batch;
  b.T = s.length;
  b.tok = s.tokens;
  b.mask = s.mask;
  return b;
}
owned_batch prompts() {
  owned_batch p;
  p.B = 3;
  p.T = 3;
  p.tok = {1, 2, 3, 4, 5, 0, 9, 0, 0};
  p.mask = {1, 1, 1, 1, 1, 0, 1, 0, 0};
  return p;
}
}  // namespace

TEST_CASE("transformer sampling: behaviour log-probs equal log_probs, greedy top-k, seeds, KV cache", "[models][transformer]") {
  const cai::models::transformer_config cfg{.vocab = 11, .d_model = 8, .n_heads = 2, .n_layers = 2, .d_ff = 16, .max_seq = 12};
  cai::models::transformer_lm<> lm(cfg, cai::host{}, 5, {.init_std = 0.6f});
  const auto p = prompts();
  for (const auto& sp : {cai::sampling_params{.temperature = 0.7f, .max_new_tokens = 7, .seed = 3},
                         cai::sampling_params{.temperature = 0.7f, .top_k = 3, .top_p = 0.8f, .max_new_tokens = 7, .seed = 4}}) {
    const auto s = lm.sample(p.view(), sp);
    REQUIRE(s.length == 10);
    const auto sb = from_sample(s);
    std::vector<float> lp(static_cast<std::size_t>(s.batch * s.length));
    // The full (no-cache) recomputation of every sampled position.
    lm.log_probs(sb.view(), cai::make_view(lp.data(), {s.batch, s.length}), 0.7f);
    std::size_t sampled = 0;
    double worst = 0;
    for (std::size_t i = 0; i < lp.size(); ++i)
      if (s.response[i]) {
        ++sampled;
        worst = std::max(worst, static_cast<double>(std::fabs(lp[i] - s.logp[i])));
        CHECK(s.logp[i] == Approx(lp[i]).margin(1e-5));
      } else {
        CHECK(s.logp[i] == 0.0f);
      }
    CHECK(sampled == 21);
    std::printf("[transformer sample] top_k %d top_p %.1f: worst |behaviour - log_probs| = %.3g\n", sp.top_k,
                static_cast<double>(sp.top_p), worst);
    // Same seed, same sample; and the threaded backend draws the same.
    const auto s2 = lm.sample(p.view(), sp);
    CHECK(s2.tokens == s.tokens);
    CHECK(s2.logp == s.logp);
    cai::models::transformer_lm<cai::threaded_host> lt(cfg, cai::threaded_host(2), 5, {.init_std = 0.6f});
    const auto s3 = lt.sample(p.view(), sp);
    CHECK(s3.tokens == s.tokens);
    CHECK(s3.logp == s.logp);
  }
  // Different seeds give different samples (overwhelmingly likely at this temperature).
  const auto a = lm.sample(p.view(), {.temperature = 1.5f, .max_new_tokens = 7, .seed = 1});
  const auto c = lm.sample(p.view(), {.temperature = 1.5f, .max_new_tokens = 7, .seed = 2});
  CHECK(a.tokens != c.tokens);

  // top_k = 1 is greedy: each new token is the argmax of the full forward's logits at the previous position, and
  // the KV-cached logits agree with the recomputation (the log-probs above already compare them at every position).
  const auto gsmp = lm.sample(p.view(), {.temperature = 0.7f, .top_k = 1, .max_new_tokens = 7, .seed = 9});
  const auto gb = from_sample(gsmp);
  const auto logits = lm.logits(gb.view());
  for (std::int64_t r = 0; r < gsmp.batch; ++r)
    for (std::int64_t t = 1; t < gsmp.length; ++t)
      if (gsmp.response[static_cast<std::size_t>(r * gsmp.length + t)]) {
        std::int32_t best = 0;
        for (std::int32_t j = 1; j < 11; ++j)
          if (logits(r, t - 1, j) > logits(r, t - 1, best)) best = j;
        CHECK(gsmp.tokens[static_cast<std::size_t>(r * gsmp.length + t)] == best);
      }

  // eos stops a row: the row ends right after the first eos.
  const auto e = lm.sample(p.view(), {.temperature = 2.0f, .max_new_tokens = 7, .seed = 11}, /*eos_id=*/gsmp.tokens[3]);
  for (std::int64_t r = 0; r < e.batch; ++r) {
    bool seen = false;
    for (std::int64_t t = 0; t < e.length; ++t) {
      const auto i = static_cast<std::size_t>(r * e.length + t);
      if (seen) CHECK(e.mask[i] == 0);
      if (e.response[i] && e.tokens[i] == gsmp.tokens[3]) seen = true;
    }
  }
}

TEST_CASE("transformer save and load round-trip and reject damaged files naming the problem", "[models][transformer]") {
  cai::models::transformer_lm<> lm(tiny, cai::host{}, 8, {.init_std = 0.5f});
  const std::string path = temp_file("model.bin"), bad = temp_file("bad.bin");
  lm.save(path);
  cai::models::transformer_lm<> other(tiny, cai::host{}, 9, {.init_std = 0.5f});
  const auto b = fd_batch();
  std::vector<float> l1(18), l2(18);
  lm.log_probs(b.view(), cai::make_view(l1.data(), {3, 6}));
  other.log_probs(b.view(), cai::make_view(l2.data(), {3, 6}));
  CHECK(l1 != l2);
  other.load(path);
  other.log_probs(b.view(), cai::make_view(l2.data(), {3, 6}));
  CHECK(l1 == l2);

  const auto good = read_all(path);
  auto damaged = [&](auto edit) {
    auto v = good;
    edit(v);
    write_all(bad, v);
    return bad;
  };
  const std::vector<float> before(other.parameters().begin(), other.parameters().end());
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v.resize(v.size() - 5); })), cai::parse_error, "truncated");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v.resize(20); })), cai::parse_error, "truncated");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v[0] = 'X'; })), cai::parse_error, "bad magic");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v[8] = 2; })), cai::parse_error, "unsupported version");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v[100] ^= 0x10; })), cai::parse_error, "checksum mismatch");
  CAI_REQUIRE_THROWS_NAMING(other.load(damaged([](auto& v) { v.push_back(0); })), cai::parse_error, "trailing bytes");
  auto cfg2 = tiny;
  cfg2.d_ff = 12;
  cai::models::transformer_lm<> wider(cfg2);
  wider.save(bad);
  CAI_REQUIRE_THROWS_NAMING(other.load(bad), cai::parse_error, "config mismatch", "d_ff");
  CAI_REQUIRE_THROWS_NAMING(other.load(temp_file("does_not_exist.bin")), cai::error, "cannot open");
  CHECK(std::vector<float>(other.parameters().begin(), other.parameters().end()) == before);
  std::filesystem::remove(path);
  std::filesystem::remove(bad);
}

TEST_CASE("transformer rejects bad configs and bad input naming the field", "[models][transformer]") {
  using cfg_t = cai::models::transformer_config;
  using lm_t = cai::models::transformer_lm<>;
  auto with = [](auto edit) {
    cfg_t c = tiny;
    edit(c);
    return c;
  };
  CAI_REQUIRE_THROWS_NAMING(lm_t(with([](cfg_t& c) { c.vocab = 1; })), cai::invalid_argument, "'config.vocab'");
  CAI_REQUIRE_THROWS_NAMING(lm_t(with([](cfg_t& c) { c.d_model = 0; })), cai::invalid_argument, "'config.d_model'");
  CAI_REQUIRE_THROWS_NAMING(lm_t(with([](cfg_t& c) { c.n_heads = 3; })), cai::invalid_argument, "'config.n_heads'");
  CAI_REQUIRE_THROWS_NAMING(lm_t(with([](cfg_t& c) { c.n_heads = 0; })), cai::invalid_argument, "'config.n_heads'");
  CAI_REQUIRE_THROWS_NAMING(lm_t(with([](cfg_t& c) { c.n_layers = 0; })), cai::invalid_argument, "'config.n_layers'");
  CAI_REQUIRE_THROWS_NAMING(lm_t(with([](cfg_t& c) { c.d_ff = -1; })), cai::invalid_argument, "'config.d_ff'");
  CAI_REQUIRE_THROWS_NAMING(lm_t(with([](cfg_t& c) { c.max_seq = 0; })), cai::invalid_argument, "'config.max_seq'");
  CAI_REQUIRE_THROWS_NAMING(lm_t(tiny, cai::host{}, 0, {.max_grad_norm = -1.0f}), cai::invalid_argument, "'options.max_grad_norm'");
  CAI_REQUIRE_THROWS_NAMING(lm_t(tiny, cai::host{}, 0, {.weight_decay = -1.0f}), cai::invalid_argument, "'options.weight_decay'");

  lm_t lm(tiny);
  CAI_REQUIRE_THROWS_NAMING(lm.step(-1.0), cai::invalid_argument, "'learning_rate'");
  std::vector<float> out(9);
  {
    const std::vector<std::int32_t> tok{1, 11, 3};
    const std::vector<std::uint8_t> mask{1, 1, 1};
    const cai::token_batch bb{cai::make_view(tok.data(), {1, 3}), cai::make_view(mask.data(), {1, 3})};
    CAI_REQUIRE_THROWS_NAMING(lm.log_probs(bb, cai::make_view(out.data(), {1, 3})), cai::invalid_argument, "'batch.tokens'", "[0, 11)");
    const std::vector<std::int32_t> neg{1, -1, 3};
    const cai::token_batch bn{cai::make_view(neg.data(), {1, 3}), cai::make_view(mask.data(), {1, 3})};
    CAI_REQUIRE_THROWS_NAMING(lm.train_forward(bn, {}), cai::invalid_argument, "'batch.tokens'");
    CAI_REQUIRE_THROWS_NAMING(lm.log_probs(bb, cai::make_view(out.data(), {1, 2})), cai::shape_error, "'out'");
  }
  {
    const std::vector<std::int32_t> tok(9, 1);
    const std::vector<std::uint8_t> mask(9, 1);
    const cai::token_batch bb{cai::make_view(tok.data(), {1, 9}), cai::make_view(mask.data(), {1, 9})};
    CAI_REQUIRE_THROWS_NAMING(lm.log_probs(bb, cai::make_view(out.data(), {1, 9})), cai::invalid_argument, "'batch.tokens'", "max_seq = 8");
    // Padding beyond max_seq is fine: only real tokens count.
    const std::vector<std::uint8_t> short_mask{1, 1, 1, 0, 0, 0, 0, 0, 0};
    const cai::token_batch bs{cai::make_view(tok.data(), {1, 9}), cai::make_view(short_mask.data(), {1, 9})};
    lm.log_probs(bs, cai::make_view(out.data(), {1, 9}));
    CHECK(out[0] == 0.0f);
    CHECK(out[1] < 0.0f);
  }
  const auto p = prompts();
  CAI_REQUIRE_THROWS_NAMING(lm.sample(p.view(), {.temperature = 0.0f}), cai::invalid_argument, "'temperature'");
  CAI_REQUIRE_THROWS_NAMING(lm.sample(p.view(), {.top_p = 0.0f}), cai::invalid_argument, "'top_p'");
  CAI_REQUIRE_THROWS_NAMING(lm.sample(p.view(), {.top_k = -1}), cai::invalid_argument, "'top_k'");
  CAI_REQUIRE_THROWS_NAMING(lm.sample(p.view(), {.max_new_tokens = 6}), cai::invalid_argument, "'max_new_tokens'", "max_seq");
  auto h = lm.train_forward(p.view(), {});
  const std::vector<float> g(9, 1.0f);
  lm.backward(std::move(h), {.dlogp = cai::make_view(g.data(), {3, 3})});
  CAI_REQUIRE_THROWS_NAMING(lm.backward(std::move(h), {.dlogp = cai::make_view(g.data(), {3, 3})}), cai::invalid_argument, "'handle'");
}

TEST_CASE("transformer loss_mask selects the scored positions without changing them", "[models][transformer]") {
  cai::models::transformer_lm<> lm(tiny, cai::host{}, 2, {.init_std = 0.5f});
  const auto b = fd_batch();
  std::vector<std::uint8_t> lmask(18, 1);
  lmask[1] = lmask[9] = 0;
  cai::token_batch bl = b.view();
  bl.loss_mask = cai::make_view(lmask.data(), {3, 6});
  std::vector<float> all(18), some(18);
  lm.log_probs(b.view(), cai::make_view(all.data(), {3, 6}));
  lm.log_probs(bl, cai::make_view(some.data(), {3, 6}));
  for (std::size_t i = 0; i < 18; ++i) {
    const bool scored = i % 6 != 0 && b.mask[i] && lmask[i];
    CHECK(some[i] == (scored ? all[i] : 0.0f));
  }
  // Temperature: log_probs at tau equal log-softmax of logits / tau.
  const auto lg = lm.logits(b.view());
  std::vector<float> hot(18);
  lm.log_probs(b.view(), cai::make_view(hot.data(), {3, 6}), 0.7f);
  std::vector<double> row(11);
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int64_t t = 1; t < 6; ++t) {
      if (!b.mask[static_cast<std::size_t>(r * 6 + t)]) continue;
      for (std::int64_t j = 0; j < 11; ++j) row[static_cast<std::size_t>(j)] = lg(r, t - 1, j);
      const auto ref = cai_test::reference_row(row.data(), 11, b.tok[static_cast<std::size_t>(r * 6 + t)], 0.7);
      CHECK(hot[static_cast<std::size_t>(r * 6 + t)] == Approx(ref.logp).margin(1e-5));
    }
}

TEST_CASE("transformer checkpoints resume AdamW training bit for bit and reject damaged files naming the problem",
          "[models][transformer]") {
  const cai::models::transformer_config cfg{.vocab = 257, .d_model = 16, .n_heads = 2, .n_layers = 1, .d_ff = 32, .max_seq = 32};
  const cai::models::transformer_options opt{.init_std = 0.1f, .weight_decay = 0.01f, .max_grad_norm = 1.0f};
  const std::string ckpt = temp_file("model.ckpt"), weights = temp_file("weights.bin"), bad = temp_file("bad.ckpt");
  // k = 5 steps, checkpoint, m = 7 more: A. A fresh model (other seed) loads the checkpoint and takes the same 7: B.
  cai::models::transformer_lm<> a(cfg, cai::host{}, 3, opt);
  train_pattern(a, 5);
  a.save_checkpoint(ckpt);
  CHECK_FALSE(std::filesystem::exists(ckpt + ".tmp"));  // written to .tmp and renamed
  const auto tail_a = train_pattern(a, 7);
  cai::models::transformer_lm<> b(cfg, cai::host{}, 99, opt);
  b.load_checkpoint(ckpt);
  CHECK(b.steps_taken() == 5);
  const auto tail_b = train_pattern(b, 7);
  CHECK(tail_a == tail_b);
  CHECK(b.steps_taken() == 12);
  const auto P = static_cast<std::size_t>(a.parameter_count());
  CHECK(std::memcmp(a.parameters().data(), b.parameters().data(), P * sizeof(float)) == 0);
  // Weights alone (load) reset the moments and the bias-correction count: the continuation differs.
  cai::models::transformer_lm<> c(cfg, cai::host{}, 3, opt);
  train_pattern(c, 5);
  c.save(weights);
  cai::models::transformer_lm<> d(cfg, cai::host{}, 99, opt);
  d.load(weights);
  train_pattern(d, 7);
  CHECK(std::memcmp(a.parameters().data(), d.parameters().data(), P * sizeof(float)) != 0);

  const auto good = read_all(ckpt);
  CHECK(std::memcmp(good.data(), "CAITFLC1", 8) == 0);
  CHECK(good.size() == 8 + 4 + 48 + 8 + P * 4 + 8 + 2 * P * 4 + 8);
  auto damaged = [&](auto edit) {
    auto v = good;
    edit(v);
    write_all(bad, v);
    return bad;
  };
  cai::models::transformer_lm<> e(cfg, cai::host{}, 7, opt);
  train_pattern(e, 2);
  const std::vector<float> before(e.parameters().begin(), e.parameters().end());
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v.resize(v.size() - 5); })), cai::parse_error, "truncated");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v.resize(30); })), cai::parse_error, "truncated");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v[0] = 'X'; })), cai::parse_error, "bad magic", "checkpoint");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v[8] = 2; })), cai::parse_error, "unsupported version");
  // A flipped bit in the moments (past the parameters) is caught as well as one in the parameters.
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v[100] ^= 0x10; })), cai::parse_error, "checksum mismatch");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([&](auto& v) { v[v.size() - 20] ^= 0x01; })), cai::parse_error,
                            "checksum mismatch");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(damaged([](auto& v) { v.push_back(0); })), cai::parse_error, "trailing bytes");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(weights), cai::parse_error, "bad magic", "weights-only", "load()");
  CAI_REQUIRE_THROWS_NAMING(e.load(ckpt), cai::parse_error, "bad magic", "load_checkpoint()");
  auto cfg2 = cfg;
  cfg2.n_layers = 2;
  cai::models::transformer_lm<> deeper(cfg2);
  deeper.save_checkpoint(bad);
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(bad), cai::parse_error, "config mismatch", "n_layers");
  CAI_REQUIRE_THROWS_NAMING(e.load_checkpoint(temp_file("does_not_exist.ckpt")), cai::error, "cannot open");
  CHECK(std::vector<float>(e.parameters().begin(), e.parameters().end()) == before);
  CHECK(e.steps_taken() == 2);
  for (const auto& p : {ckpt, weights, bad}) std::filesystem::remove(p);
}
