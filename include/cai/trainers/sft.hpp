// cai/trainers/sft.hpp — supervised fine-tuning of any cai::trainable_policy on chat conversations, and the chat
// rendering the other trainers share (render_chat, padded_rows).
//
// Rendering (render_chat): a conversation becomes tok.encode(tok.apply_chat_template(c, false)). The tokens of
// assistant turn i are found generically, from the template alone:
//   begin = |encode(template(c[0, i), add_generation_prompt = true))|,  end = |encode(template(c[0, i]))|
// cut after the last eos_id() token in [begin, end) when there is one, so a span is the turn's content plus its end
// marker (the byte tokenizer's "<|end|>"), and not the role header or the newline after the marker. The template must
// be prefix-stable (each of those renderings' tokens a prefix of the whole conversation's); if not, cai::invalid_argument
// names the argument "tokenizer". An empty assistant turn is an error naming "conversation[i].content".
//
// SFT objective (train_sft): for an optimiser batch of records with assistant-span tokens S (every assistant turn of
// every conversation, so multi-turn data trains all assistant turns and nothing else),
//   loss = -(1 / |S|) sum_{(b, t) in S} logp[b, t]                                 (token-mean NLL over the batch)
// The batch is fed in micro-batches of micro_batch_size records; each micro-batch gets dlogp = -1 / |S| on its own
// span tokens (|S| counted over the whole batch), so the accumulated gradient is that of the whole batch at once
// (up to float summation order). dlogp is 0 on every other position: system / user turns, role headers, padding.
// Records are taken in order, or with shuffle = true in a per-epoch permutation drawn from cai's counter-based RNG
// keyed by (shuffle_seed, epoch) — deterministic for the seed and independent of interruptions; a final partial
// batch is a (smaller) step. With checkpoint.every > 0 the run writes checkpoints and resumes from them
// (cai/trainers/checkpoint.hpp: the policy must be cai::checkpointable; a resumed run ends with the parameters and
// summary of the uninterrupted one).
// Sequences longer than max_length (default: the policy's config().max_seq when it has one) are an error,
// cai::invalid_argument naming the record ("data[i]") — never truncated silently.
// After every optimiser step on_metrics(step, {loss, lr, tokens, grad_norm*}) is called (grad_norm when the policy's
// step() returns a number); `progress` draws a cai::progress_line on stderr.
//
//   cai::models::byte_tokenizer tok;
//   auto summary = cai::train_sft(lm, tok, std::span<const cai::conversation>(chats),
//                                 {.batch_size = 8, .micro_batch_size = 2, .schedule = cai::cosine_schedule(1e-3, 10, 200)});
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../concepts/policy.hpp"
#include "../concepts/tokenizer.hpp"
#include "../concepts/types.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../io/datasets.hpp"
#include "../io/progress.hpp"
#include "checkpoint.hpp"
#include "metrics.hpp"
#include "schedule.hpp"

namespace cai {

/// A rendered conversation: its tokens and the [begin, end) token ranges of its assistant turns (in order).
struct rendered_chat {
  std::vector<std::int32_t> tokens;
  std::vector<std::pair<std::int64_t, std::int64_t>> assistant_spans;

  /// 1 on the tokens of every assistant span (or only the last one), 0 elsewhere.
  std::vector<std::uint8_t> loss_mask(bool last_only = false) const {
    std::vector<std::uint8_t> m(tokens.size(), 0);
    for (std::size_t k = last_only && !assistant_spans.empty() ? assistant_spans.size() - 1 : 0; k < assistant_spans.size(); ++k)
      for (std::int64_t t = assistant_spans[k].first; t < assistant_spans[k].second; ++t) m[static_cast<std::size_t>(t)] = 1;
    return m;
  }
};

/// Renders `c` with the tokenizer's chat template and locates its assistant spans (see the header comment).
template <tokenizer Tok>
rendered_chat render_chat(const Tok& tok, const conversation& c, std::string_view call = "cai::render_chat") {
  rendered_chat r;
  {
    auto ids = tok.encode(tok.apply_chat_template(c, false));
    r.tokens.assign(ids.begin(), ids.end());
  }
  const std::int32_t eos = tok.eos_id();
  const auto is_prefix = [&](const std::vector<std::int32_t>& p) {
    return p.size() <= r.tokens.size() && std::equal(p.begin(), p.end(), r.tokens.begin());
  };
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (c[i].role != "assistant") continue;
    if (c[i].content.empty())
      detail::fail_argument(call, detail::concat("conversation[", i, "].content"), "a non-empty assistant turn", "\"\"");
    const conversation before(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(i));
    const conversation upto(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(i + 1));
    std::vector<std::int32_t> a = tok.encode(tok.apply_chat_template(before, true));
    std::vector<std::int32_t> b = tok.encode(tok.apply_chat_template(upto, false));
    if (!is_prefix(a) || !is_prefix(b) || a.size() > b.size())
      detail::fail_argument(call, "tokenizer",
                            "a prefix-stable chat template (the tokens of each conversation prefix a prefix of the whole)",
                            detail::concat("a mismatch at turn ", i));
    const auto begin = static_cast<std::int64_t>(a.size());
    auto end = static_cast<std::int64_t>(b.size());
    for (std::int64_t t = end - 1; t >= begin; --t)
      if (r.tokens[static_cast<std::size_t>(t)] == eos) {
        end = t + 1;
        break;
      }
    if (end <= begin)
      detail::fail_argument(call, detail::concat("conversation[", i, "].content"), "an assistant turn with tokens", "none");
    r.assistant_spans.emplace_back(begin, end);
  }
  return r;
}

/// Right-padded rows (B, T) with mask and loss_mask, owning their storage; batch() views them.
struct padded_rows {
  std::int64_t rows = 0, width = 0;
  std::vector<std::int32_t> tokens;
  std::vector<std::uint8_t> mask, loss_mask;

  void add(std::span<const std::int32_t> toks, std::span<const std::uint8_t> lmask) {
    pending_.emplace_back(std::vector<std::int32_t>(toks.begin(), toks.end()), std::vector<std::uint8_t>(lmask.begin(), lmask.end()));
  }
  /// Lays the added rows out (width = the longest row, at least 1).
  void finish() {
    rows = static_cast<std::int64_t>(pending_.size());
    width = 1;
    for (const auto& [t, m] : pending_) width = std::max(width, static_cast<std::int64_t>(t.size()));
    tokens.assign(static_cast<std::size_t>(rows * width), 0);
    mask.assign(tokens.size(), 0);
    loss_mask.assign(tokens.size(), 0);
    for (std::int64_t b = 0; b < rows; ++b) {
      const auto& [t, m] = pending_[static_cast<std::size_t>(b)];
      for (std::size_t j = 0; j < t.size(); ++j) {
        const auto k = static_cast<std::size_t>(b * width) + j;
        tokens[k] = t[j];
        mask[k] = 1;
        loss_mask[k] = j < m.size() ? m[j] : 0;
      }
    }
    pending_.clear();
  }
  token_batch batch() const {
    return token_batch{.tokens = {tokens.data(), {rows, width}}, .mask = {mask.data(), {rows, width}},
                       .loss_mask = {loss_mask.data(), {rows, width}}};
  }

 private:
  std::vector<std::pair<std::vector<std::int32_t>, std::vector<std::uint8_t>>> pending_;
};

struct sft_options {
  std::int64_t batch_size = 8;        ///< records per optimiser step; >= 1
  std::int64_t micro_batch_size = 0;  ///< records per forward/backward; 0 = batch_size; in [0, batch_size]
  std::int64_t epochs = 1;            ///< passes over the data; >= 1
  lr_schedule schedule{};             ///< learning rate per optimiser step (validated)
  std::int64_t max_length = 0;        ///< longest accepted sequence; 0 = the policy's config().max_seq, if any
  metrics_callback on_metrics{};
  bool progress = false;
  std::uint64_t shuffle_seed = 0;     ///< keys the per-epoch permutation when shuffle is set
  bool shuffle = false;               ///< visit each epoch's records in a seeded permutation (see the header comment)
  checkpoint_options checkpoint{};    ///< periodic checkpoints and resume (cai/trainers/checkpoint.hpp)
};

namespace detail::trn {

template <class P>
std::int64_t model_max_length(const P& p, std::int64_t requested) {
  if (requested > 0) return requested;
  if constexpr (requires { { p.config().max_seq } -> std::convertible_to<std::int64_t>; })
    return static_cast<std::int64_t>(p.config().max_seq);
  return 0;
}

inline void check_loop_options(std::string_view call, std::int64_t batch, std::int64_t micro, std::int64_t epochs,
                               std::int64_t max_length, const lr_schedule& s) {
  if (batch < 1) fail_argument(call, "batch_size", "a value >= 1", batch);
  if (micro < 0 || micro > batch) fail_argument(call, "micro_batch_size", concat("a value in [0, batch_size = ", batch, "]"), micro);
  if (epochs < 1) fail_argument(call, "epochs", "a value >= 1", epochs);
  if (max_length < 0) fail_argument(call, "max_length", "a value >= 0 (0 = the model's)", max_length);
  s.validate(concat(call, ": schedule"));
}

/// policy.step(lr), recording its return value as "grad_norm" when it is a number.
template <class P>
void step_and_record(P& p, double lr, metric_map& m) {
  if constexpr (requires { { p.step(lr) } -> std::convertible_to<double>; }) m["grad_norm"] = static_cast<double>(p.step(lr));
  else p.step(lr);
}

/// The end of every optimiser step of the trainers: step (recording the gradient norm), then the summary, the
/// metrics callback and the progress line.
template <class P, class Callback>
void finish_step(P& p, double lr, double loss, metric_map& m, train_summary& sum, const Callback& on_metrics, progress_line& bar) {
  step_and_record(p, lr, m);
  if (sum.steps == 0) sum.first_loss = loss;
  sum.last_loss = loss;
  if (on_metrics) on_metrics(sum.steps, m);
  ++sum.steps;
  bar.advance();
}

}  // namespace detail::trn

/// Token-mean NLL of `policy` on the assistant spans of `data` (no training; policy.log_probs on each record).
template <policy P, tokenizer Tok>
double sft_nll(P& policy, const Tok& tok, std::span<const conversation> data) {
  constexpr std::string_view call = "cai::sft_nll";
  if (data.empty()) detail::fail_argument(call, "data", "at least one conversation", "none");
  double sum = 0.0;
  std::int64_t n = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const auto r = render_chat(tok, data[i], call);
    const auto lm = r.loss_mask();
    padded_rows rows;
    rows.add(r.tokens, lm);
    rows.finish();
    tensor<float, 2> lp({1, rows.width});
    policy.log_probs(rows.batch(), lp.view());
    for (std::int64_t t = 0; t < rows.width; ++t)
      if (rows.loss_mask[static_cast<std::size_t>(t)]) {
        sum -= lp(0, t);
        ++n;
      }
  }
  return n > 0 ? sum / static_cast<double>(n) : 0.0;
}

/// Supervised fine-tuning on conversations (loss on every assistant turn). See the header comment.
template <trainable_policy P, tokenizer Tok>
train_summary train_sft(P& policy, const Tok& tok, std::span<const conversation> data, const sft_options& opt = {}) {
  constexpr std::string_view call = "cai::train_sft";
  detail::trn::check_loop_options(call, opt.batch_size, opt.micro_batch_size, opt.epochs, opt.max_length, opt.schedule);
  detail::trn::check_checkpoint_options<P>(call, opt.checkpoint);
  if (data.empty()) detail::fail_argument(call, "data", "at least one conversation", "an empty dataset");
  const std::int64_t max_len = detail::trn::model_max_length(policy, opt.max_length);
  std::vector<rendered_chat> rendered;
  std::vector<std::vector<std::uint8_t>> masks;
  rendered.reserve(data.size());
  for (std::size_t i = 0; i < data.size(); ++i) {
    rendered.push_back(render_chat(tok, data[i], detail::concat(call, ": data[", i, "]")));
    const auto& r = rendered.back();
    if (r.assistant_spans.empty())
      detail::fail_argument(call, detail::concat("data[", i, "]"), "a conversation with an assistant turn", "none");
    if (max_len > 0 && static_cast<std::int64_t>(r.tokens.size()) > max_len)
      detail::fail_argument(call, detail::concat("data[", i, "]"), detail::concat("at most max_length = ", max_len, " tokens"),
                            detail::concat(r.tokens.size(), " tokens"));
    masks.push_back(r.loss_mask());
  }
  const std::int64_t micro = opt.micro_batch_size == 0 ? opt.batch_size : opt.micro_batch_size;
  // One optimiser step on the records `batch` (indices into data, in the epoch's order).
  const auto one_step = [&](std::span<const std::int64_t> batch, train_summary& sum, progress_line& bar) {
    const auto n = static_cast<std::int64_t>(batch.size());
    std::int64_t count = 0;
    for (const std::int64_t i : batch)
      for (auto m : masks[static_cast<std::size_t>(i)]) count += m;
    const float g = -1.0f / static_cast<float>(count);
    double loss = 0.0;
    policy.zero_grad();
    for (std::int64_t mlo = 0; mlo < n; mlo += micro) {
      const std::int64_t mhi = std::min(n, mlo + micro);
      padded_rows rows;
      for (std::int64_t k = mlo; k < mhi; ++k) {
        const auto i = static_cast<std::size_t>(batch[static_cast<std::size_t>(k)]);
        rows.add(rendered[i].tokens, masks[i]);
      }
      rows.finish();
      auto h = policy.train_forward(rows.batch(), forward_request{});
      std::vector<float> dlogp(rows.loss_mask.size(), 0.0f);
      {
        const tensor_view<const float, 2> lp = h.logp();
        for (std::int64_t b = 0; b < rows.rows; ++b)
          for (std::int64_t t = 0; t < rows.width; ++t)
            if (rows.loss_mask[static_cast<std::size_t>(b * rows.width + t)]) {
              loss -= static_cast<double>(lp(b, t));
              dlogp[static_cast<std::size_t>(b * rows.width + t)] = g;
            }
      }
      policy.backward(std::move(h), per_token_grads{.dlogp = {dlogp.data(), {rows.rows, rows.width}}});
    }
    loss /= static_cast<double>(count);
    const double lr = opt.schedule.lr(sum.steps);
    metric_map m{{"loss", loss}, {"lr", lr}, {"tokens", static_cast<double>(count)}};
    detail::trn::finish_step(policy, lr, loss, m, sum, opt.on_metrics, bar);
  };
  return detail::trn::run_epochs(call, "sft", policy, data.size(), opt, one_step);
}

/// sft_record form: each record is prompt + one assistant turn (the response, which must not be empty).
template <trainable_policy P, tokenizer Tok>
train_summary train_sft(P& policy, const Tok& tok, std::span<const sft_record> data, const sft_options& opt = {}) {
  std::vector<conversation> convs;
  convs.reserve(data.size());
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (data[i].response.empty())
      detail::fail_argument("cai::train_sft", detail::concat("data[", i, "].response"), "a non-empty response", "\"\"");
    convs.push_back(data[i].prompt);
    convs.back().push_back({"assistant", data[i].response});
  }
  return train_sft(policy, tok, std::span<const conversation>(convs), opt);
}

}  // namespace cai
