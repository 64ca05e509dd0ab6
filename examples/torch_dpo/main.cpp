// examples/torch_dpo/main.cpp — DPO on a TorchScript causal LM from a JSONL preference dataset, from C++.
//
// The policy and the frozen reference are two loads of the same TorchScript file (cai::torch_lm over
// torch::jit::script::Module); the records are read with cai::preference_from_json (hh, TRL text or TRL messages
// form); cai::train_dpo does the rest: chat rendering, reference log-probs, the DPO loss with its exact gradient pushed
// through torch autograd, torch::optim AdamW steps. Some records are held out: their implicit-reward accuracy
// (beta * [(pc - rc) - (pr - rr)] > 0) before and after training shows whether the preference generalised.
//
//   cai_torch_dpo --model lm.pt --data prefs.jsonl [--tokenizer byte | --spm tokenizer.model] [--epochs 8]
//                 [--beta 0.1] [--lr 1e-3] [--batch 8] [--holdout 6] [--max-seq 256] [--save trained.pt]
// The byte tokenizer (cai::models::byte_tokenizer, 257 ids) needs a model with a vocabulary of at least 257;
// --spm takes a SentencePiece model, read by cai::sentencepiece_tokenizer (plain C++, so it lives beside LibTorch)
// with the ChatML format; cai_spm_train (examples/spm_train.cpp) trains one on the dataset itself:
//   cai_spm_train --input prefs.jsonl --model spm.model --vocab 400 --chatml
// scripts/torch_models.py exports a suitable LM (a vocabulary at least the tokenizer's):
//   /usr/bin/python3 scripts/torch_models.py out --vocab 400 --max-seq 256
// Output: progress, and as the last line one JSON object; exits 1 if the loss did not fall.
#include <cai/io/datasets.hpp>
#include <cai/io/jsonl.hpp>
#include <cai/models/byte_tokenizer.hpp>
#include <cai/sentencepiece/tokenizer.hpp>
#include <cai/torch/policy.hpp>
#include <cai/trainers/dpo.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

struct args {
  std::string model, data, save, spm;
  std::int64_t epochs = 8, batch = 8, holdout = 6, max_seq = 256;
  double beta = 0.1, lr = 1e-3;
};

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw cai::invalid_argument("cai_torch_dpo: " + k + " needs a value");
      return argv[++i];
    };
    if (k == "--model") a.model = next();
    else if (k == "--data") a.data = next();
    else if (k == "--save") a.save = next();
    else if (k == "--spm") a.spm = next();
    else if (k == "--tokenizer") { if (next() != "byte") throw cai::invalid_argument("cai_torch_dpo: --tokenizer takes 'byte' (or use --spm)"); }
    else if (k == "--epochs") a.epochs = std::stoll(next());
    else if (k == "--batch") a.batch = std::stoll(next());
    else if (k == "--holdout") a.holdout = std::stoll(next());
    else if (k == "--beta") a.beta = std::stod(next());
    else if (k == "--lr") a.lr = std::stod(next());
    else if (k == "--max-seq") a.max_seq = std::stoll(next());
    else throw cai::invalid_argument("cai_torch_dpo: unknown argument " + k);
  }
  if (a.model.empty() || a.data.empty()) throw cai::invalid_argument("cai_torch_dpo: --model and --data are required");
  return a;
}

/// Held-out implicit-reward accuracy and mean margin of `policy` against `ref`.
template <class Tok>
std::pair<double, double> implicit_reward(cai::torch_lm<torch::jit::script::Module>& policy, const cai::reference_logps& ref,
                                          const Tok& tok, std::span<const cai::preference_record> held, double beta) {
  const auto now = cai::compute_reference_logps(policy, tok, held);
  double acc = 0, margin = 0;
  for (std::size_t i = 0; i < held.size(); ++i) {
    const double m = beta * ((now.chosen[i] - ref.chosen[i]) - (now.rejected[i] - ref.rejected[i]));
    acc += m > 0 ? 1.0 : 0.0;
    margin += m;
  }
  const auto n = static_cast<double>(held.size());
  return {acc / n, margin / n};
}

template <class Tok>
int run(const args& a, const Tok& tok) {
  std::vector<cai::preference_record> data;
  cai::read_jsonl(a.data, [&](const nlohmann::json& j, std::size_t) { data.push_back(cai::preference_from_json(j)); });
  if (a.holdout < 1 || a.holdout >= static_cast<std::int64_t>(data.size()))
    throw cai::invalid_argument("cai_torch_dpo: --holdout must leave at least one training record and hold out at least one");
  const std::span<const cai::preference_record> all(data);
  const auto train = all.subspan(0, data.size() - static_cast<std::size_t>(a.holdout));
  const auto held = all.subspan(data.size() - static_cast<std::size_t>(a.holdout));

  // max_seq: the exported model's position table (scripts/torch_models.py --max-seq 256); longer records are then an
  // error naming the record instead of a failure inside the model.
  const cai::torch_model_options lm_options{.max_seq = a.max_seq};
  cai::torch_lm policy(cai::load_torchscript(a.model), lm_options);
  cai::torch_lm reference(cai::load_torchscript(a.model), lm_options);
  if (tok.vocab_size() > policy.vocab_size())
    throw cai::invalid_argument("cai_torch_dpo: the tokenizer has " + std::to_string(tok.vocab_size()) + " ids but the model's vocabulary is " +
                                std::to_string(policy.vocab_size()));
  std::printf("torch_dpo: %zu training pairs, %zu held out, model vocabulary %lld\n", train.size(), held.size(),
              static_cast<long long>(policy.vocab_size()));
  const auto ref_held = cai::compute_reference_logps(reference, tok, held);
  const auto [acc0, margin0] = implicit_reward(policy, ref_held, tok, held, a.beta);
  double first_acc = 0, last_acc = 0;
  bool first = true;
  const auto summary = cai::train_dpo(
      policy, reference, tok, train, cai::dpo::sigmoid{.beta = a.beta},
      {.batch_size = a.batch, .epochs = a.epochs, .schedule = cai::constant_schedule(a.lr),
       .on_metrics = [&](std::int64_t step, const cai::metric_map& m) {
         if (first) first_acc = m.at("accuracy");
         first = false;
         last_acc = m.at("accuracy");
         std::printf("step %3lld  loss %.4f  accuracy %.2f  margin %+.4f\n", static_cast<long long>(step), m.at("loss"),
                     m.at("accuracy"), m.at("margin"));
       }});
  const auto [acc1, margin1] = implicit_reward(policy, ref_held, tok, held, a.beta);
  std::printf("held-out implicit-reward accuracy %.2f -> %.2f, margin %+.4f -> %+.4f\n", acc0, acc1, margin0, margin1);
  if (!a.save.empty()) policy.save(a.save);
  nlohmann::json out{{"example", "torch_dpo"}, {"steps", summary.steps}, {"loss_first", summary.first_loss},
                     {"loss_last", summary.last_loss}, {"train_accuracy_first", first_acc}, {"train_accuracy_last", last_acc},
                     {"heldout_accuracy_before", acc0}, {"heldout_accuracy_after", acc1},
                     {"heldout_margin_before", margin0}, {"heldout_margin_after", margin1}};
  std::printf("%s\n", out.dump().c_str());
  return summary.last_loss < summary.first_loss ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const args a = parse(argc, argv);
    if (!a.spm.empty()) return run(a, cai::sentencepiece_tokenizer(a.spm));
    return run(a, cai::models::byte_tokenizer{});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
