// benchmarks/pg.cpp — cai::gae and a whole PPO objective (loss + gradient) against PyTorch, side by side.
//
// For B in {64, 512} and T in {512, 4096}, single-threaded (GAE also on two threads), prints one JSON line per (bench, B, T):
//   gae       cai::gae (advantages + returns, fp32, gamma 1, lambda 0.95, right-padded mask)
//             vs the per-timestep torch loop of verl/OpenRLHF/TRL (benchmarks/peer_torch_pg.py)
//   ppo_loss  cai::policy_loss with dual clip (c = 3), k3 KL in the loss (coef 0.001), entropy 0.01, token-mean,
//             writing dlogp and dentropy, vs torch autograd of the same objective
// ratio = peer_ms / cai_ms (both medians, measured in the same run). probe_ms is a memory-bandwidth probe over the
// same bytes the cai call must move (reads of its inputs, writes of its outputs), and probe_fraction = probe_ms /
// cai_ms: how close cai is to the machine's streaming limit. The first line holds the flags and the commit.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include <cai/algorithms/gae.hpp>
#include <cai/algorithms/ppo.hpp>
#include <cai/core/host.hpp>

namespace {

template <class F>
double median_ms(F&& f) {
  return cai_bench::median_ms(std::forward<F>(f), 7);
}

/// Streams `reads` arrays and writes `writes` arrays of n floats: the traffic floor of an elementwise pass.
double probe_ms(std::int64_t n, int reads, int writes) {
  std::vector<std::vector<float>> in(static_cast<std::size_t>(reads), std::vector<float>(static_cast<std::size_t>(n), 1.0f));
  std::vector<std::vector<float>> out(static_cast<std::size_t>(writes), std::vector<float>(static_cast<std::size_t>(n)));
  volatile float sink = 0;
  return median_ms([&] {
    float acc = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      float s = 0;
      for (auto& v : in) s += v[static_cast<std::size_t>(i)];
      for (auto& v : out) v[static_cast<std::size_t>(i)] = s;
      acc += s;
    }
    sink = acc;
  });
}

}  // namespace

int main() {
  std::printf("{\"flags\": \"%s\", \"git\": \"%s\"}\n", CAI_BENCH_FLAGS, CAI_BENCH_GIT);
  std::fflush(stdout);
  for (std::int64_t B : {64, 512})
    for (std::int64_t T : {512, 4096}) {
      const auto N = static_cast<std::size_t>(B * T);
      std::mt19937 g(1);
      std::normal_distribution<float> nd;
      std::vector<float> r(N), v(N), a(N), ret(N), x(N), o(N), ref(N), A(N), H(N), gx(N), gh(N);
      std::vector<std::uint8_t> m(N);
      for (std::size_t i = 0; i < N; ++i) {
        r[i] = nd(g), v[i] = nd(g), o[i] = -std::abs(nd(g)), x[i] = o[i] + 0.1f * nd(g), ref[i] = o[i] + 0.1f * nd(g);
        A[i] = nd(g), H[i] = std::abs(nd(g));
      }
      for (std::int64_t b = 0; b < B; ++b) {
        const std::int64_t len = 1 + static_cast<std::int64_t>(g() % static_cast<unsigned>(T));
        for (std::int64_t t = 0; t < T; ++t) m[static_cast<std::size_t>(b * T + t)] = t < len;
      }
      const cai::tensor_view<const float, 2> rv = cai::make_view(r.data(), {B, T}), vv = cai::make_view(v.data(), {B, T});
      const cai::tensor_view<const std::uint8_t, 2> mv = cai::make_view(m.data(), {B, T});
      const double gae_ms = median_ms([&] {
        cai::gae(cai::host{}, rv, vv, mv, cai::gae_outputs<float>{cai::make_view(a.data(), {B, T}), cai::make_view(ret.data(), {B, T})});
      });
      // The same call on two threads (rows split between them): at B = 512 one thread already runs near the streaming
      // probe, so more bandwidth (a second core) is what can still move the ratio.
      const cai::threaded_host two(2);
      const double gae2_ms = median_ms([&] {
        cai::gae(two, rv, vv, mv, cai::gae_outputs<float>{cai::make_view(a.data(), {B, T}), cai::make_view(ret.data(), {B, T})});
      });
      const cai::ppo_objective<cai::pg::dual_clip, cai::kl::in_loss<cai::kl::k3>, cai::agg::token_mean> obj{
          .clip = {0.2, 0.2, 3.0}, .kl = {{}, 0.001}, .entropy_coef = 0.01};
      const cai::policy_batch<float> pb{.logp = cai::make_view(x.data(), {B, T}), .old_logp = cai::make_view(o.data(), {B, T}),
                                        .advantages = cai::make_view(A.data(), {B, T}), .mask = mv,
                                        .ref_logp = cai::make_view(ref.data(), {B, T}), .entropy = cai::make_view(H.data(), {B, T})};
      const double ppo_ms = median_ms([&] {
        cai::policy_loss(cai::host{}, obj, pb, {.dlogp = cai::make_view(gx.data(), {B, T}), .dentropy = cai::make_view(gh.data(), {B, T})});
      });
      const double gae_probe = probe_ms(B * T, 2, 2), ppo_probe = probe_ms(B * T, 5, 2);  // mask bytes left out
      double peer_gae = -1, peer_ppo = -1;
      const std::string cmd = std::string(CAI_BENCH_PYTHON) + " " + CAI_BENCH_PEER_SCRIPT + " --B " + std::to_string(B) +
                              " --T " + std::to_string(T);
      if (FILE* p = popen(cmd.c_str(), "r")) {
        char line[512];
        while (std::fgets(line, sizeof line, p)) {
          const std::string s(line);
          const auto k = s.find("\"peer_ms\": ");
          if (k == std::string::npos) continue;
          const double ms = std::stod(s.substr(k + 11));
          (s.find("\"gae\"") != std::string::npos ? peer_gae : peer_ppo) = ms;
        }
        pclose(p);
      }
      const auto emit = [&](const char* bench, double cai_ms, double peer, double probe, int threads = 1) {
        std::printf("{\"bench\": \"%s\", \"B\": %lld, \"T\": %lld, \"threads\": %d, \"cai_ms\": %.4g, \"peer\": \"torch\", "
                    "\"peer_ms\": %.4g, \"ratio\": %.4g, \"probe_ms\": %.4g, \"probe_fraction\": %.3g}\n",
                    bench, static_cast<long long>(B), static_cast<long long>(T), threads, cai_ms, peer, peer > 0 ? peer / cai_ms : 0.0,
                    probe, probe / cai_ms);
        std::fflush(stdout);
      };
      emit("gae", gae_ms, peer_gae, gae_probe);
      emit("gae", gae2_ms, peer_gae, gae_probe, 2);  // probe_fraction against the one-thread probe
      emit("ppo_loss", ppo_ms, peer_ppo, ppo_probe);
    }
}
