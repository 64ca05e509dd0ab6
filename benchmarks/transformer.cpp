// benchmarks/transformer.cpp — throughput of the embedded transformer (cai::models::transformer_lm): training and
// KV-cache sampling, in tokens per second.
//
// Two configs, small (d_model 64, 2 layers, 4 heads, d_ff 256) and medium (d_model 128, 4 layers, 4 heads,
// d_ff 512), both with the byte vocabulary (257) and max_seq 256, on cai::host (1 thread) and cai::threaded_host
// (hardware_concurrency() threads). One JSON line per (bench, config, backend):
//   transformer_train   one training step on B x T tokens: train_forward + backward (dL/dlogp = -1 / tokens)
//                       + AdamW step; tokens_per_s = B * T / step time
//   transformer_sample  sample() of max_new_tokens (no eos, so every row runs to the end) after a P-token prompt
//                       for B rows, KV cache; tokens_per_s = B * max_new_tokens / call time (prefill included in ms)
// ms is the median of 5 timed calls after one warm-up. The first line holds the flags and the commit.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "bench_common.hpp"
#include <cai/core/host.hpp>
#include <cai/models/transformer.hpp>


namespace {

using cai_bench::median_ms;

void emit(const char* bench, const cai::models::transformer_config& cfg, std::int64_t T, std::int64_t B, unsigned threads,
          double tokens, double ms) {
  std::printf("{\"bench\": \"%s\", \"d_model\": %lld, \"n_layers\": %lld, \"T\": %lld, \"B\": %lld, \"threads\": %u, "
              "\"tokens_per_s\": %.4g, \"ms\": %.4g}\n",
              bench, static_cast<long long>(cfg.d_model), static_cast<long long>(cfg.n_layers), static_cast<long long>(T),
              static_cast<long long>(B), threads, tokens / (ms / 1000.0), ms);
  std::fflush(stdout);
}

template <class Backend>
void run(const cai::models::transformer_config& cfg, const Backend& backend, unsigned threads) {
  cai::models::transformer_lm<Backend> lm(cfg, backend, 1, {.init_std = 0.02f, .weight_decay = 0.01f});
  // Training: B x T tokens of a deterministic byte stream.
  {
    const std::int64_t B = 8, T = 128;
    std::vector<std::int32_t> tok(static_cast<std::size_t>(B * T));
    for (std::size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<std::int32_t>((i * 131 + i / 7) % 256);
    const std::vector<std::uint8_t> mask(tok.size(), 1);
    const cai::token_batch batch{cai::make_view(tok.data(), {B, T}), cai::make_view(mask.data(), {B, T})};
    const std::vector<float> dlogp(tok.size(), -1.0f / static_cast<float>(B * (T - 1)));
    const double ms = median_ms([&] {
      auto h = lm.train_forward(batch, {});
      lm.zero_grad();
      lm.backward(std::move(h), {.dlogp = cai::make_view(dlogp.data(), {B, T})});
      lm.step(1e-4);
    });
    emit("transformer_train", cfg, T, B, threads, static_cast<double>(B * T), ms);
  }
  // Sampling: B rows, a P-token prompt each, max_new_tokens new tokens.
  {
    const std::int64_t B = 8, P = 16;
    const std::int32_t new_tokens = 112;
    std::vector<std::int32_t> tok(static_cast<std::size_t>(B * P));
    for (std::size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<std::int32_t>((i * 37 + 5) % 256);
    const std::vector<std::uint8_t> mask(tok.size(), 1);
    const cai::token_batch prompts{cai::make_view(tok.data(), {B, P}), cai::make_view(mask.data(), {B, P})};
    std::int64_t produced = 0;
    const double ms = median_ms([&] {
      const auto s = lm.sample(prompts, {.temperature = 1.0f, .max_new_tokens = new_tokens, .seed = 7});
      produced = 0;
      for (auto r : s.response) produced += r;
    });
    emit("transformer_sample", cfg, P + new_tokens, B, threads, static_cast<double>(produced), ms);
  }
}

}  // namespace

int main() {
  std::printf("{\"flags\": \"%s\", \"git\": \"%s\"}\n", CAI_BENCH_FLAGS, CAI_BENCH_GIT);
  std::fflush(stdout);
  const cai::models::transformer_config small{.vocab = 257, .d_model = 64, .n_heads = 4, .n_layers = 2, .d_ff = 256, .max_seq = 256};
  const cai::models::transformer_config medium{.vocab = 257, .d_model = 128, .n_heads = 4, .n_layers = 4, .d_ff = 512, .max_seq = 256};
  const cai::threaded_host threaded;
  for (const auto& cfg : {small, medium}) {
    run(cfg, cai::host{}, 1u);
    run(cfg, threaded, threaded.concurrency());
  }
}
