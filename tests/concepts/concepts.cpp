// Tests for cai/concepts/*: positive and negative compile-time checks, and proof that three very different
// models fit before the concepts are frozen:
//   1. a LibTorch-style module: parameters behind an autograd-like graph; train_forward returns a handle that
//      owns the graph; backward takes the gradients of the per-token outputs (log-probs and entropy);
//   2. an HTTP LLM server client: generation and scoring only (text_generator + judge, not a policy);
//   3. an in-process model: cai::models::bigram_lm (trainable and sampling).
#include <cai/concepts.hpp>
#include <cai/models/bigram.hpp>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../support.hpp"

namespace {

// ---- 1. LibTorch-style: embedding (V x D) -> linear (D x V); the handle owns the "graph" -------------------------
class torch_style_lm {
 public:
  struct graph {  // what autograd would keep: inputs, activations, outputs
    std::vector<std::int32_t> tokens;
    std::vector<std::uint8_t> mask;
    std::int64_t B = 0, T = 0;
    std::vector<float> hidden, logits, logp, entropy, saved;
  };
  class forward_handle {
   public:
    cai::tensor_view<const float, 2> logp() const { return cai::make_view(static_cast<const float*>(g_->logp.data()), {g_->B, g_->T}); }
    cai::tensor_view<const float, 2> entropy() const { return cai::make_view(static_cast<const float*>(g_->entropy.data()), {g_->B, g_->T}); }

   private:
    friend class torch_style_lm;
    std::shared_ptr<graph> g_;
  };

  torch_style_lm(std::int64_t V, std::int64_t D) : V_(V), D_(D), E_(cai_test::normal_floats(V * D, 0.5f, 1)), W_(cai_test::normal_floats(D * V, 0.5f, 2)),
                                                   dE_(E_.size()), dW_(W_.size()) {}
  std::int64_t vocab_size() const { return V_; }
  void log_probs(const cai::token_batch& b, cai::tensor_view<float, 2> out) {
    const auto g = run(b);
    for (std::int64_t i = 0; i < g->B; ++i)
      for (std::int64_t t = 0; t < g->T; ++t) out(i, t) = g->logp[static_cast<std::size_t>(i * g->T + t)];
  }
  forward_handle train_forward(const cai::token_batch& b, const cai::forward_request&) {
    forward_handle h;
    h.g_ = run(b);
    return h;
  }
  void backward(forward_handle&& h, const cai::per_token_grads& grads) {
    auto g = std::move(h.g_);
    const std::int64_t N = g->B * g->T;
    std::vector<float> dlogits(static_cast<std::size_t>(N * V_));
    cai::token_logprobs_backward(cai::host{}, cai::make_view(static_cast<const float*>(g->logits.data()), {g->B, g->T, V_}),
                                 cai::make_view(static_cast<const std::int32_t*>(g->tokens.data()), {g->B, g->T}),
                                 cai::make_view(static_cast<const std::uint8_t*>(g->mask.data()), {g->B, g->T}),
                                 {.dlogp = grads.dlogp, .dentropy = grads.dentropy,
                                  .saved = cai::make_view(static_cast<const float*>(g->saved.data()), {g->B, g->T, 3})},
                                 cai::make_view(dlogits.data(), {g->B, g->T, V_}));
    for (std::int64_t n = 0; n < N; ++n) {  // chain rule through logits = hidden @ W, hidden = E[token]
      const std::int32_t tok = g->tokens[static_cast<std::size_t>(n)];
      for (std::int64_t d = 0; d < D_; ++d) {
        double acc = 0;
        for (std::int64_t v = 0; v < V_; ++v) {
          const float dl = dlogits[static_cast<std::size_t>(n * V_ + v)];
          dW_[static_cast<std::size_t>(d * V_ + v)] += g->hidden[static_cast<std::size_t>(n * D_ + d)] * dl;
          acc += static_cast<double>(W_[static_cast<std::size_t>(d * V_ + v)]) * dl;
        }
        dE_[static_cast<std::size_t>(tok * D_ + d)] += static_cast<float>(acc);
      }
    }
  }
  void zero_grad() {
    std::fill(dE_.begin(), dE_.end(), 0.0f);
    std::fill(dW_.begin(), dW_.end(), 0.0f);
  }
  void step(double lr) {
    for (std::size_t i = 0; i < E_.size(); ++i) E_[i] -= static_cast<float>(lr) * dE_[i];
    for (std::size_t i = 0; i < W_.size(); ++i) W_[i] -= static_cast<float>(lr) * dW_[i];
  }
  std::vector<float>& E() { return E_; }
  const std::vector<float>& dE() const { return dE_; }

 private:
  std::shared_ptr<graph> run(const cai::token_batch& b) const {
    auto g = std::make_shared<graph>();
    g->B = b.tokens.extent(0);
    g->T = b.tokens.extent(1);
    const std::int64_t N = g->B * g->T;
    for (std::int64_t i = 0; i < g->B; ++i)
      for (std::int64_t t = 0; t < g->T; ++t) {
        g->tokens.push_back(b.tokens(i, t));
        g->mask.push_back(b.mask(i, t));
      }
    g->hidden.resize(static_cast<std::size_t>(N * D_));
    g->logits.assign(static_cast<std::size_t>(N * V_), 0.0f);
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t d = 0; d < D_; ++d) {
        const float h = E_[static_cast<std::size_t>(g->tokens[static_cast<std::size_t>(n)] * D_ + d)];
        g->hidden[static_cast<std::size_t>(n * D_ + d)] = h;
        for (std::int64_t v = 0; v < V_; ++v) g->logits[static_cast<std::size_t>(n * V_ + v)] += h * W_[static_cast<std::size_t>(d * V_ + v)];
      }
    g->logp.resize(static_cast<std::size_t>(N));
    g->entropy.resize(static_cast<std::size_t>(N));
    g->saved.resize(static_cast<std::size_t>(N * 3));
    cai::token_logprobs(cai::host{}, cai::make_view(static_cast<const float*>(g->logits.data()), {g->B, g->T, V_}),
                        cai::make_view(static_cast<const std::int32_t*>(g->tokens.data()), {g->B, g->T}),
                        cai::make_view(static_cast<const std::uint8_t*>(g->mask.data()), {g->B, g->T}),
                        {.logp = cai::make_view(g->logp.data(), {g->B, g->T}), .entropy = cai::make_view(g->entropy.data(), {g->B, g->T}),
                         .saved = cai::make_view(g->saved.data(), {g->B, g->T, 3})});
    return g;
  }
  std::int64_t V_, D_;
  std::vector<float> E_, W_, dE_, dW_;
};

// ---- 2. An HTTP LLM server client: generation and scoring only -----------------------------------------------------
struct http_server_client {
  std::map<std::string, double> option_logprob{{"(A)", -0.2}, {"(B)", -1.7}};
  std::vector<std::string> generate(std::span<const cai::conversation> prompts, const cai::sampling_params&) {
    std::vector<std::string> out;
    for (const auto& c : prompts) out.push_back("reply to: " + c.back().content);
    return out;
  }
  std::vector<std::vector<double>> score(std::span<const cai::judge_request> reqs) {
    std::vector<std::vector<double>> out;
    for (const auto& r : reqs) {
      std::vector<double> row;
      for (const auto& o : r.options) row.push_back(option_logprob.count(o) ? option_logprob.at(o) : -30.0);
      out.push_back(row);
    }
    return out;
  }
};

// ---- negative examples ---------------------------------------------------------------------------------------------
struct byte_tokenizer {
  std::vector<std::int32_t> encode(std::string_view s) const { return {s.begin(), s.end()}; }
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string s;
    for (auto i : ids) s.push_back(static_cast<char>(i));
    return s;
  }
  std::int32_t eos_id() const { return 0; }
  std::int64_t vocab_size() const { return 256; }
  std::string apply_chat_template(const cai::conversation& c, bool gen) const {
    std::string s;
    for (const auto& m : c) s += m.role + ": " + m.content + "\n";
    return gen ? s + "assistant: " : s;
  }
};
struct tokenizer_without_chat {
  std::vector<std::int32_t> encode(std::string_view) const { return {}; }
  std::string decode(std::span<const std::int32_t>) const { return {}; }
  std::int32_t eos_id() const { return 0; }
  std::int64_t vocab_size() const { return 1; }
};
struct policy_without_backward {
  struct forward_handle {
    cai::tensor_view<const float, 2> logp() const { return {}; }
    cai::tensor_view<const float, 2> entropy() const { return {}; }
  };
  std::int64_t vocab_size() const { return 2; }
  void log_probs(const cai::token_batch&, cai::tensor_view<float, 2>) {}
  forward_handle train_forward(const cai::token_batch&, const cai::forward_request&) { return {}; }
  void zero_grad() {}
  void step(double) {}
};
struct reward_model {
  void scalars(const cai::token_batch&, cai::tensor_view<float, 2> out) {
    for (std::int64_t b = 0; b < out.extent(0); ++b)
      for (std::int64_t t = 0; t < out.extent(1); ++t) out(b, t) = static_cast<float>(t);
  }
};
struct not_a_backend {
  using memory_space = cai::host_space;
};
struct device_only_backend {
  using backend_concept = cai::backend_t;
  using memory_space = cai::device_space;
};

// Compile-time: positive and negative.
static_assert(cai::trainable_policy<torch_style_lm> && !cai::sampling_policy<torch_style_lm>);
static_assert(cai::text_generator<http_server_client> && cai::judge<http_server_client>);
static_assert(!cai::policy<http_server_client> && !cai::trainable_policy<http_server_client>);
static_assert(cai::trainable_policy<cai::models::bigram_lm<>> && cai::sampling_policy<cai::models::bigram_lm<>>);
static_assert(cai::trainable_policy<cai::models::bigram_lm<cai::threaded_host>>);
static_assert(cai::tokenizer<byte_tokenizer> && !cai::tokenizer<tokenizer_without_chat>);
static_assert(cai::policy<policy_without_backward> && !cai::trainable_policy<policy_without_backward>);
static_assert(cai::scalar_model<reward_model> && !cai::scalar_model<byte_tokenizer>);
static_assert(!cai::text_generator<byte_tokenizer> && !cai::judge<reward_model>);
static_assert(cai::backend<cai::host> && cai::backend<cai::threaded_host> && cai::backend<device_only_backend>);
static_assert(!cai::backend<not_a_backend> && !cai::backend<int>);
static_assert(cai::bulk_backend<cai::host> && !cai::bulk_backend<device_only_backend>);
static_assert(cai::diagnose_tokenizer<byte_tokenizer>() && cai::diagnose_trainable_policy<torch_style_lm>());
static_assert(cai::diagnose_text_generator<http_server_client>() && cai::diagnose_judge<http_server_client>());
static_assert(cai::diagnose_scalar_model<reward_model>() && cai::diagnose_sampling_policy<cai::models::bigram_lm<>>());
// Instantiating cai::diagnose_tokenizer<tokenizer_without_chat>() fails with exactly one line:
//   "cai::tokenizer: missing `apply_chat_template(const cai::conversation&, bool) const` -> std::string"
// (tests/concepts/diagnostics.cmake compiles it and checks the message).

template <cai::trainable_policy P>
double objective_and_grad(P& p, const cai::token_batch& b, const std::vector<float>& a, const std::vector<float>& c,
                          bool do_backward) {
  auto h = p.train_forward(b, {.entropy = true});
  const auto lp = h.logp();
  const auto H = h.entropy();
  double L = 0;
  for (std::int64_t i = 0; i < lp.extent(0); ++i)
    for (std::int64_t t = 0; t < lp.extent(1); ++t)
      L += a[static_cast<std::size_t>(i * lp.extent(1) + t)] * lp(i, t) + c[static_cast<std::size_t>(i * lp.extent(1) + t)] * H(i, t);
  if (do_backward)
    p.backward(std::move(h), {.dlogp = cai::make_view(a.data(), {lp.extent(0), lp.extent(1)}),
                              .dentropy = cai::make_view(c.data(), {lp.extent(0), lp.extent(1)})});
  return L;
}

}  // namespace

TEST_CASE("a LibTorch-style module fits trainable_policy: handles keep two forwards apart and backward is exact",
          "[concepts]") {
  torch_style_lm m(11, 4);
  const std::int64_t B = 2, T = 6;
  const auto tok = cai_test::random_ids(B * T, 11, 3);
  std::vector<std::uint8_t> mask(B * T, 1);
  mask[11] = 0;
  const cai::token_batch batch{cai::make_view(tok.data(), {B, T}), cai::make_view(static_cast<const std::uint8_t*>(mask.data()), {B, T})};
  const auto a = cai_test::normal_floats(B * T, 1.0f, 4), c = cai_test::normal_floats(B * T, 1.0f, 5);
  // Two live forwards (as policy and reference would be); backward of the second first.
  auto h1 = m.train_forward(batch, {});
  auto h2 = m.train_forward(batch, {});
  CHECK(h1.logp()(1, 3) == h2.logp()(1, 3));
  m.zero_grad();
  m.backward(std::move(h2), {.dlogp = cai::make_view(a.data(), {B, T})});
  m.backward(std::move(h1), {.dlogp = cai::make_view(a.data(), {B, T})});
  const std::vector<float> twice = m.dE();
  m.zero_grad();
  objective_and_grad(m, batch, a, c, true);
  const std::vector<float> analytic = m.dE();
  // Finite differences along a random direction in the embedding parameters.
  const auto u = cai_test::normal_floats(m.E().size(), 1.0f, 6);
  const std::vector<float> E0 = m.E();
  const float eps = 1e-2f;
  for (std::size_t i = 0; i < E0.size(); ++i) m.E()[i] = E0[i] + eps * u[i];
  const double Lp = objective_and_grad(m, batch, a, c, false);
  for (std::size_t i = 0; i < E0.size(); ++i) m.E()[i] = E0[i] - eps * u[i];
  const double Lm = objective_and_grad(m, batch, a, c, false);
  m.E() = E0;
  double dir = 0;
  for (std::size_t i = 0; i < E0.size(); ++i) dir += static_cast<double>(analytic[i]) * u[i];
  const double fd = (Lp - Lm) / (2.0 * eps);
  INFO("analytic " << dir << " fd " << fd);
  CHECK(std::fabs(dir - fd) <= 2e-3 * (1.0 + std::fabs(fd)));
  double nonzero = 0;
  for (float g : twice) nonzero += std::fabs(g);
  CHECK(nonzero > 0);
}

TEST_CASE("an HTTP server client fits text_generator and judge without being a policy", "[concepts]") {
  http_server_client s;
  const std::vector<cai::conversation> prompts{{{"user", "hi"}}};
  CHECK(s.generate(prompts, {}).at(0) == "reply to: hi");
  const std::vector<cai::judge_request> reqs{{prompts[0], {"(A)", "(B)", "(C)"}}};
  const auto lp = s.score(reqs);
  CHECK(lp.at(0).size() == 3);
  CHECK(lp[0][0] > lp[0][1]);
}

TEST_CASE("the in-process bigram model samples with behaviour log-probs equal to its scoring forward",
          "[concepts]") {
  cai::models::bigram_lm<cai::threaded_host> lm(7, cai::threaded_host(2), 9, 1.0f);
  const std::vector<std::int32_t> prompt{1, 2, 3, 0};
  const std::vector<std::uint8_t> pmask{1, 1, 1, 0};
  const cai::token_batch prompts{cai::make_view(prompt.data(), {2, 2}), cai::make_view(pmask.data(), {2, 2})};
  for (float temperature : {1.0f, 0.7f}) {
    for (std::int32_t top_k : {0, 3}) {
      const auto s = lm.sample(prompts, {.temperature = temperature, .top_k = top_k, .max_new_tokens = 5, .seed = 4});
      CHECK(s.length == 7);
      std::vector<float> lp(static_cast<std::size_t>(s.batch * s.length));
      lm.log_probs({cai::make_view(s.tokens.data(), {s.batch, s.length}), cai::make_view(s.mask.data(), {s.batch, s.length})},
                   cai::make_view(lp.data(), {s.batch, s.length}), temperature);
      int sampled = 0;
      for (std::size_t i = 0; i < lp.size(); ++i)
        if (s.response[i]) {
          ++sampled;
          CHECK(std::fabs(lp[i] - s.logp[i]) <= 2e-6f);
        }
      CHECK(sampled == 10);
      const auto again = lm.sample(prompts, {.temperature = temperature, .top_k = top_k, .max_new_tokens = 5, .seed = 4});
      CHECK(again.tokens == s.tokens);
    }
  }
  CAI_REQUIRE_THROWS_NAMING(lm.sample(prompts, {.temperature = 0.0f}), cai::invalid_argument, "'temperature'");
  CAI_REQUIRE_THROWS_NAMING(lm.sample(prompts, {.top_p = 1.5f}), cai::invalid_argument, "'top_p'");
  const std::vector<std::int32_t> bad{1, 9, 3, 0};
  CAI_REQUIRE_THROWS_NAMING(lm.sample({cai::make_view(bad.data(), {2, 2}), cai::make_view(pmask.data(), {2, 2})}, {}),
                            cai::invalid_argument, "'batch.tokens'", "9 at 0,1");
}

TEST_CASE("training the bigram model through the concept lowers the loss", "[concepts]") {
  cai::models::bigram_lm<> lm(5, cai::host{}, 1);
  // A deterministic cycle 1 -> 2 -> 3 -> 4 -> 1.
  std::vector<std::int32_t> tok;
  for (int i = 0; i < 16; ++i) tok.push_back(1 + i % 4);
  const std::vector<std::uint8_t> mask(16, 1);
  const cai::token_batch batch{cai::make_view(tok.data(), {1, 16}), cai::make_view(mask.data(), {1, 16})};
  const std::vector<float> g(16, -1.0f / 15.0f), zeros(16, 0.0f);  // minimise mean NLL
  double first = 0, last = 0;
  for (int step = 0; step < 50; ++step) {
    lm.zero_grad();
    const double L = -objective_and_grad(lm, batch, std::vector<float>(16, 1.0f / 15.0f), zeros, false);
    objective_and_grad(lm, batch, g, zeros, true);
    lm.step(2.0);
    if (step == 0) first = L;
    last = L;
  }
  CHECK(first > 1.5);   // ~ log 5 at initialisation
  CHECK(last < 0.1);
}
