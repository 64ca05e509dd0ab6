// examples/torch_ppo/main.cpp — PPO on a TorchScript policy against a TorchScript scalar reward model, from C++.
//
// The policy and its frozen reference are two loads of one TorchScript LM (cai::torch_lm), the reward model a
// TorchScript scalar head (cai::torch_scalar_model) read at the last token of prompt + response. cai::ppo_trainer
// samples with the LM's key-value cache (forward_cached), scores, computes GRPO advantages with the KL to the
// reference in the reward, and takes PPO-clip steps through torch autograd and torch::optim.
//
//   cai_torch_ppo --policy lm.pt --reward reward.pt [--iterations 30] [--group 8] [--tokens 16] [--lr 1e-2]
//                 [--beta 0.02] [--seed 1] [--max-seq 256]
// scripts/torch_models.py exports a byte-level LM and a rule-weighted reward model (vowel_reward.pt: the fraction of
// the bytes a, e, i, o, u up to each position), so the reward's rise is easy to read:
//   /usr/bin/python3 scripts/torch_models.py out --vocab 257 --max-seq 256
// Output: one line per iteration, and as the last line one JSON object; exits 1 if the mean reward of the last five
// iterations is not above that of the first five.
#include <cai/models/byte_tokenizer.hpp>
#include <cai/torch/policy.hpp>
#include <cai/trainers/ppo.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

struct args {
  std::string policy, reward;
  std::int64_t iterations = 30, group = 8, tokens = 16, max_seq = 256;
  double lr = 1e-2, beta = 0.02;
  std::uint64_t seed = 1;
};

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw cai::invalid_argument("cai_torch_ppo: " + k + " needs a value");
      return argv[++i];
    };
    if (k == "--policy") a.policy = next();
    else if (k == "--reward") a.reward = next();
    else if (k == "--iterations") a.iterations = std::stoll(next());
    else if (k == "--group") a.group = std::stoll(next());
    else if (k == "--tokens") a.tokens = std::stoll(next());
    else if (k == "--lr") a.lr = std::stod(next());
    else if (k == "--beta") a.beta = std::stod(next());
    else if (k == "--seed") a.seed = std::stoull(next());
    else if (k == "--max-seq") a.max_seq = std::stoll(next());
    else throw cai::invalid_argument("cai_torch_ppo: unknown argument " + k);
  }
  if (a.policy.empty() || a.reward.empty()) throw cai::invalid_argument("cai_torch_ppo: --policy and --reward are required");
  return a;
}

int run(const args& a) {
  const cai::models::byte_tokenizer tok;
  // max_seq: the exported models' position table (scripts/torch_models.py --max-seq 256); cai then rejects longer
  // sequences with an error naming the argument instead of the model failing inside its embedding.
  const cai::torch_model_options lm_options{.max_seq = a.max_seq};
  cai::torch_lm policy(cai::load_torchscript(a.policy), lm_options);
  cai::torch_lm reference(cai::load_torchscript(a.policy), lm_options);
  cai::torch_scalar_model reward_model(cai::load_torchscript(a.reward), lm_options);
  if (policy.vocab_size() < tok.vocab_size())
    throw cai::invalid_argument("cai_torch_ppo: the policy's vocabulary (" + std::to_string(policy.vocab_size()) +
                                ") is smaller than the byte tokenizer's 257 ids");
  // The reward of a response: the reward model's value at the last token of the rendered conversation.
  auto reward = [&](const cai::conversation& prompt, const std::string& response) {
    cai::conversation c = prompt;
    c.push_back({"assistant", response});
    const auto ids = tok.encode(tok.apply_chat_template(c, false));
    const auto n = static_cast<std::int64_t>(ids.size());
    const std::vector<std::uint8_t> mask(ids.size(), 1);
    std::vector<float> values(ids.size());
    reward_model.scalars({.tokens = {ids.data(), {1, n}}, .mask = {mask.data(), {1, n}}}, cai::make_view(values.data(), {1, n}));
    return static_cast<double>(values.back());
  };
  const std::vector<cai::conversation> prompts{{{"user", "Say something."}}, {{"user", "Tell me a word."}},
                                               {{"user", "Write a line."}}, {{"user", "Hi!"}}};
  using objective = cai::ppo_objective<cai::pg::ppo_clip, cai::kl::in_reward<cai::kl::k1>, cai::agg::token_mean, cai::adv::grpo>;
  cai::ppo_trainer trainer(policy, reference, tok, reward, objective{.kl = {.beta = a.beta}},
                           {.group_size = a.group,
                            .sampling = {.max_new_tokens = static_cast<std::int32_t>(a.tokens), .seed = a.seed},
                            .schedule = cai::constant_schedule(a.lr)});
  std::vector<double> rewards;
  for (std::int64_t it = 0; it < a.iterations; ++it) {
    const auto m = trainer.iterate(prompts);
    rewards.push_back(m.at("reward_mean"));
    std::printf("iteration %3lld  reward %.4f  kl %.3f  clip %.3f  entropy %.3f  length %.1f\n", static_cast<long long>(it),
                m.at("reward_mean"), m.at("kl"), m.at("clip_fraction"), m.at("entropy"), m.at("response_length"));
  }
  const auto window = std::min<std::size_t>(5, rewards.size());
  double head = 0, tail = 0;
  for (std::size_t i = 0; i < window; ++i) {
    head += rewards[i] / static_cast<double>(window);
    tail += rewards[rewards.size() - 1 - i] / static_cast<double>(window);
  }
  nlohmann::json out{{"example", "torch_ppo"}, {"iterations", a.iterations}, {"reward_first5", head}, {"reward_last5", tail},
                     {"uses_kv_cache", policy.uses_cache()}};
  std::printf("%s\n", out.dump().c_str());
  return tail > head ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
