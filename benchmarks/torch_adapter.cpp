// benchmarks/torch_adapter.cpp — what cai's LibTorch adapter costs and saves, side by side with LibTorch itself in
// one run (the same LibTorch 1.13 that Debian's python3-torch wraps).
//
//   logprobs_step   the hot loop alone on (N, V) logits that require grad: per-token log-probs + entropy forward,
//                   then the backward of L = sum(w * logp) + sum(u * entropy) into dlogits.
//                     peer: log_softmax + gather + entropy (-sum p log p) as torch ops, autograd backward
//                     cai:  cai::token_logprobs + cai::token_logprobs_backward on zero-copy views (cai::torch_view),
//                           then nothing else (dlogits written directly)
//                   ratio = peer_ms / cai_ms; fp32 and bf16 logits.
//   lm_train_step   one training step of a TorchScript LM (d 64, 2 layers, V = 32000) through cai::torch_lm:
//                   train_forward (entropy) + backward + AdamW step, logits_path cai_host vs torch_ops;
//                   ratio = torch_ops_ms / cai_host_ms.
//   lm_sample       cai::torch_lm::sample of 32 new tokens for 8 rows, with the model's KV cache vs re-running the
//                   prefix; tokens_per_s and ratio = no_cache_ms / cache_ms.
// Threads: LibTorch's intra-op pool and cai::threaded_host both use every core (2 on the benchmark VM); the lines
// with "threads": 1 pin both to one. ms is the median of 5 timed calls after one warm-up. The first line holds the
// flags and the commit. The LM is exported at start-up with CAI_BENCH_PYTHON (scripts/torch_models.py).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "bench_common.hpp"
#include <cai/algorithms/logprobs.hpp>
#include <cai/torch/policy.hpp>

#ifndef CAI_BENCH_PYTHON
#define CAI_BENCH_PYTHON "/usr/bin/python3"
#endif
#ifndef CAI_BENCH_SCRIPTS
#define CAI_BENCH_SCRIPTS "scripts"
#endif

namespace {

using cai_bench::median_ms;

void logprobs_step(std::int64_t B, std::int64_t T, std::int64_t V, at::ScalarType dt, int threads) {
  torch::manual_seed(1);
  const auto logits = (torch::randn({B, T, V}) * 2.0).to(dt);
  const auto ids = torch::randint(0, V, {B, T}, torch::kLong);
  const auto ids32 = ids.to(torch::kInt);
  const auto mask = torch::ones({B, T}, torch::kByte);
  const auto w = torch::randn({B, T}), u = torch::randn({B, T}) * 0.01;
  // peer: the usual PyTorch formulation (TRL / OpenRLHF style), autograd backward.
  const double peer = median_ms([&] {
    auto x = logits.detach().requires_grad_(true);
    auto lsm = torch::log_softmax(x.narrow(1, 0, T - 1).to(torch::kFloat), -1);
    auto lp = lsm.gather(-1, ids.narrow(1, 1, T - 1).unsqueeze(-1)).squeeze(-1);
    auto ent = -(lsm.exp() * lsm).sum(-1);
    auto loss = (lp * w.narrow(1, 1, T - 1)).sum() + (ent * u.narrow(1, 1, T - 1)).sum();
    loss.backward();
  });
  // cai: forward + backward straight into dlogits, the views zero-copy over the same tensors.
  auto logp = torch::empty({B, T}), ent = torch::empty({B, T}), saved = torch::empty({B, T, 3});
  auto dlogits = torch::empty_like(logits);
  const auto run_cai = [&](const auto& be) {
    return median_ms([&] {
      const auto tv = cai::torch_view<const std::int32_t, 2>(ids32, "bench", "ids");
      const auto mv = cai::torch_view<const std::uint8_t, 2>(mask, "bench", "mask");
      cai::visit_floating<3>(cai::torch_any_view(logits, "bench", "logits"), "bench", "logits", [&](auto x) {
        using E = std::remove_const_t<typename decltype(x)::element_type>;
        cai::token_logprobs(be, x, tv, mv,
                            cai::logprob_outputs<2>{.logp = cai::torch_view<float, 2>(logp), .entropy = cai::torch_view<float, 2>(ent),
                                                    .saved = cai::torch_view<float, 3>(saved)});
        cai::token_logprobs_backward(be, x, tv, mv,
                                     cai::logprob_grads<2>{.dlogp = cai::torch_view<const float, 2>(w),
                                                           .dentropy = cai::torch_view<const float, 2>(u),
                                                           .saved = cai::torch_view<const float, 3>(saved)},
                                     cai::torch_view<E, 3>(dlogits));
      });
    });
  };
  const double mine = threads == 1 ? run_cai(cai::host{}) : run_cai(cai::threaded_host{});
  std::printf("{\"bench\": \"logprobs_step\", \"N\": %lld, \"V\": %lld, \"dtype\": \"%s\", \"threads\": %d, \"peer_ms\": %.3f, "
              "\"cai_ms\": %.3f, \"ratio\": %.2f}\n",
              static_cast<long long>(B * T), static_cast<long long>(V), c10::toString(dt), threads, peer, mine, peer / mine);
  std::fflush(stdout);
}

void lm_train_step(const std::filesystem::path& dir, int threads) {
  const std::int64_t B = 8, T = 128;
  const auto ids = torch::randint(0, 32000, {B, T}, torch::kInt);
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(B * T), 1);
  const cai::token_batch batch{.tokens = cai::torch_view<const std::int32_t, 2>(ids), .mask = {mask.data(), {B, T}}};
  std::vector<float> g(static_cast<std::size_t>(B * T), -1.0f / static_cast<float>(B * T));
  double ms[2];
  int k = 0;
  for (const auto path : {cai::torch_logits_path::cai_host, cai::torch_logits_path::torch_ops}) {
    cai::torch_lm lm(cai::load_torchscript(dir / "lm.pt"), {.logits_path = path, .threaded = threads != 1});
    ms[k++] = median_ms([&] {
      lm.zero_grad();
      auto h = lm.train_forward(batch, {.entropy = true});
      lm.backward(std::move(h), {.dlogp = cai::make_view(static_cast<const float*>(g.data()), {B, T}),
                                 .dentropy = cai::make_view(static_cast<const float*>(g.data()), {B, T})});
      lm.step(1e-4);
    });
  }
  std::printf("{\"bench\": \"lm_train_step\", \"B\": %lld, \"T\": %lld, \"V\": 32000, \"threads\": %d, \"cai_host_ms\": %.2f, "
              "\"torch_ops_ms\": %.2f, \"ratio\": %.2f}\n",
              static_cast<long long>(B), static_cast<long long>(T), threads, ms[0], ms[1], ms[1] / ms[0]);
  std::fflush(stdout);
}

void lm_sample(const std::filesystem::path& dir, int threads) {
  const std::int64_t B = 8, P = 16;
  const auto ids = torch::randint(0, 32000, {B, P}, torch::kInt);
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(B * P), 1);
  const cai::token_batch prompts{.tokens = cai::torch_view<const std::int32_t, 2>(ids), .mask = {mask.data(), {B, P}}};
  double ms[2];
  int k = 0;
  for (const bool cache : {true, false}) {
    cai::torch_lm lm(cai::load_torchscript(dir / "lm.pt"), {.use_cache = cache});
    ms[k++] = median_ms([&] { (void)lm.sample(prompts, {.max_new_tokens = 32, .seed = 1}); });
  }
  std::printf("{\"bench\": \"lm_sample\", \"B\": %lld, \"prompt\": %lld, \"new_tokens\": 32, \"V\": 32000, \"threads\": %d, "
              "\"cache_ms\": %.2f, \"no_cache_ms\": %.2f, \"tokens_per_s\": %.0f, \"ratio\": %.2f}\n",
              static_cast<long long>(B), static_cast<long long>(P), threads, ms[0], ms[1], static_cast<double>(B * 32) / (ms[0] / 1e3),
              ms[1] / ms[0]);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::printf("{\"flags\": \"%s\", \"git\": \"%s\", \"torch_threads\": %d}\n", CAI_BENCH_FLAGS, CAI_BENCH_GIT, at::get_num_threads());
  const auto dir = std::filesystem::temp_directory_path() / ("cai_bench_torch_" + std::to_string(::getpid()));
  const std::string cmd = std::string(CAI_BENCH_PYTHON) + " " + CAI_BENCH_SCRIPTS +
                          "/torch_models.py " + dir.string() + " --vocab 32000 --d 64 --layers 2 --max-seq 512";
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "exporting the benchmark models failed: %s\n", cmd.c_str());
    return 1;
  }
  // LibTorch may start with one intra-op thread (Debian's build reports 1 here): ask for every core explicitly.
  const int all = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (const int threads : all > 1 ? std::vector<int>{all, 1} : std::vector<int>{1}) {
    at::set_num_threads(threads);
    for (const auto dt : {at::kFloat, at::kBFloat16}) logprobs_step(quick ? 2 : 8, 512, 32000, dt, threads);
    if (!quick) logprobs_step(4, 512, 128256, at::kBFloat16, threads);
    lm_train_step(dir, threads);
    lm_sample(dir, threads);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
