// cai's demo until the embedded transformer lands: a byte-level bigram language model trained from scratch on
// a short text with cai's fused log-prob/entropy forward and exact backward, on every core, then sampled with
// behaviour log-probs checked against the scoring forward.
//
//   cai_demo [steps] [threads]
#include <cai/cai.hpp>
#include <cai/models/bigram.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::string_view corpus =
    "A helpful assistant answers the question that was asked. When a request could cause harm, it says why it "
    "will not help and offers a safer way forward instead of a flat refusal. It is honest about what it does not "
    "know, it respects the choices of the person it talks to, and it explains its reasoning in plain words. "
    "Asked how to kill a stuck process, it explains the command; asked how to hurt someone, it declines and "
    "says why. The assistant is calibrated: it states uncertainty when it is unsure and does not invent facts. ";

std::string decode(const std::vector<std::int32_t>& ids, std::size_t from, std::size_t to) {
  std::string s;
  for (std::size_t i = from; i < to; ++i) s.push_back(static_cast<char>(ids[i]));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 300;
  const unsigned threads = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 0;
  const std::int64_t V = 256, B = 8, T = 64;
  cai::models::bigram_lm<cai::threaded_host> lm(V, cai::threaded_host(threads), /*seed=*/7);
  std::printf("cai %d.%d.%d demo: byte-level bigram LM, V=%lld, batch %lldx%lld, %u threads\n", cai::version.major,
              cai::version.minor, cai::version.patch, static_cast<long long>(V), static_cast<long long>(B),
              static_cast<long long>(T), threads ? threads : std::thread::hardware_concurrency());

  // Training windows cut from the corpus (deterministic for the seed).
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(B * T));
  const std::vector<std::uint8_t> mask(static_cast<std::size_t>(B * T), 1);
  const std::vector<float> zeros(static_cast<std::size_t>(B * T), 0.0f);
  std::vector<float> dlogp(static_cast<std::size_t>(B * T));
  cai::rng_stream rng(7, 1);
  const auto t0 = std::chrono::steady_clock::now();
  std::printf("%6s %10s %10s\n", "step", "nll/token", "entropy");
  for (int step = 0; step < steps; ++step) {
    for (std::int64_t b = 0; b < B; ++b) {
      const auto start = rng.below(static_cast<std::uint32_t>(corpus.size() - static_cast<std::size_t>(T)));
      for (std::int64_t t = 0; t < T; ++t)
        tokens[static_cast<std::size_t>(b * T + t)] = static_cast<unsigned char>(corpus[start + static_cast<std::size_t>(t)]);
    }
    const cai::token_batch batch{cai::make_view(static_cast<const std::int32_t*>(tokens.data()), {B, T}),
                                 cai::make_view(mask.data(), {B, T})};
    auto h = lm.train_forward(batch, {.entropy = true});
    const auto lp = h.logp();
    const auto H = h.entropy();
    double nll = 0, ent = 0;
    const double scored = static_cast<double>(B * (T - 1));
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 1; t < T; ++t) {
        nll -= lp(b, t);
        ent += H(b, t);
      }
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) dlogp[static_cast<std::size_t>(b * T + t)] = t > 0 ? static_cast<float>(-1.0 / scored) : 0.0f;
    lm.zero_grad();
    lm.backward(std::move(h), {.dlogp = cai::make_view(static_cast<const float*>(dlogp.data()), {B, T})});
    lm.step(20.0);
    if (step % (steps / 10 > 0 ? steps / 10 : 1) == 0 || step + 1 == steps)
      std::printf("%6d %10.4f %10.4f\n", step, nll / scored, ent / scored);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("trained %d steps in %.2f s (%.0f tokens/s through forward + backward)\n", steps, secs,
              steps * static_cast<double>(B * T) / secs);

  // Sample, and check that the behaviour log-probs equal the scoring forward's.
  const std::vector<std::int32_t> prompt{'T', 'h', 'e', ' '};
  const std::vector<std::uint8_t> pmask(4, 1);
  const auto s = lm.sample({cai::make_view(prompt.data(), {1, 4}), cai::make_view(pmask.data(), {1, 4})},
                           {.temperature = 0.8f, .top_k = 20, .max_new_tokens = 120, .seed = 3});
  std::vector<float> rescored(s.tokens.size());
  lm.log_probs({cai::make_view(s.tokens.data(), {1, s.length}), cai::make_view(s.mask.data(), {1, s.length})},
               cai::make_view(rescored.data(), {1, s.length}), 0.8f);
  double worst = 0;
  for (std::size_t i = 0; i < s.tokens.size(); ++i)
    if (s.response[i]) worst = std::max(worst, std::fabs(static_cast<double>(rescored[i] - s.logp[i])));
  std::printf("sample (T=0.8, top-k 20): \"%s\"\n", decode(s.tokens, 0, s.tokens.size()).c_str());
  std::printf("behaviour log-probs vs scoring forward: max |diff| = %.2e\n", worst);
  return worst < 1e-5 ? 0 : 1;
}
