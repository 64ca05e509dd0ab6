// cai/trainers/reward.hpp — Bradley-Terry reward-model training over any trainable scalar model.
//
// trainable_scalar_model (the training API of cai::models::transformer_scalar):
//   typename M::forward_handle;  train_forward(const token_batch&) -> forward_handle;
//   handle.values() -> tensor_view<const float, 2> (B, T);  backward(forward_handle&&, tensor_view<const float, 2>
//   dvalues);  zero_grad();  step(double lr)
//
// Each preference_record is rendered twice with the tokenizer's chat template (cai::render_chat): prompt + an
// assistant turn holding `chosen`, and prompt + `rejected`. One forward runs the 2B rows of a batch (chosen rows
// first); a row's score is its value at its LAST REAL TOKEN (cai/concepts/scalar_model.hpp). Then
//   loss = cai::bradley_terry_loss(r+, r-, margin = options.margin (when != 0), labels = record.label or 1)
// with options.bt (center_coef, l2_coef) passed through; the loss's gradients go to the last-token positions only.
// Soft labels (record.label = P(chosen preferred)) give the cross-entropy against s(r+ - r-): label 0.5 pulls the
// margin towards 0. Empty chosen / rejected responses, labels outside [0, 1], sequences longer than max_length
// (default: the model's config().max_seq) are cai::invalid_argument naming the record ("data[i].chosen", ...).
// on_metrics(step, {loss, accuracy, margin, chosen, rejected, lr, grad_norm*}) after every optimiser step
// (cai::pair_metrics of the batch, before the step). Records are taken in order, or with shuffle = true in a
// per-epoch permutation drawn from cai's counter-based RNG keyed by (shuffle_seed, epoch) — deterministic for the seed
// and independent of interruptions. With checkpoint.every > 0 the run writes checkpoints and resumes from them
// (cai/trainers/checkpoint.hpp: the model must be cai::checkpointable; a resumed run ends with the parameters and
// summary of the uninterrupted one).
//
//   auto s = cai::train_reward_model(rm, tok, std::span<const cai::preference_record>(pairs), {.batch_size = 8});
//   auto m = cai::evaluate_reward_model(rm, tok, pairs);   // m.accuracy
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "../algorithms/preference.hpp"
#include "../concepts/scalar_model.hpp"
#include "../concepts/tokenizer.hpp"
#include "../core/host.hpp"
#include "../io/datasets.hpp"
#include "../io/progress.hpp"
#include "checkpoint.hpp"
#include "metrics.hpp"
#include "schedule.hpp"
#include "sft.hpp"

namespace cai {

template <class M>
concept trainable_scalar_model =
    requires { typename M::forward_handle; } && std::movable<typename M::forward_handle> &&
    requires(M& m, const token_batch& b, typename M::forward_handle&& h, const typename M::forward_handle& ch,
             tensor_view<const float, 2> dv, double lr) {
      { m.train_forward(b) } -> std::same_as<typename M::forward_handle>;
      { ch.values() } -> std::convertible_to<tensor_view<const float, 2>>;
      m.backward(std::move(h), dv);
      m.zero_grad();
      m.step(lr);
    };

struct reward_options {
  std::int64_t batch_size = 8;  ///< pairs per optimiser step; >= 1
  std::int64_t epochs = 1;      ///< >= 1
  lr_schedule schedule{};
  double margin = 0.0;          ///< required margin m of every pair (finite); 0 = none
  bradley_terry_options bt{};   ///< center_coef, l2_coef (checked by cai::bradley_terry_loss)
  std::int64_t max_length = 0;  ///< 0 = the model's config().max_seq, if any
  metrics_callback on_metrics{};
  bool progress = false;
  std::uint64_t shuffle_seed = 0;   ///< keys the per-epoch permutation when shuffle is set
  bool shuffle = false;             ///< visit each epoch's records in a seeded permutation (see the header comment)
  checkpoint_options checkpoint{};  ///< periodic checkpoints and resume (cai/trainers/checkpoint.hpp)
};

namespace detail::trn {

/// Tokens of prompt + assistant(response) for each side of each record, checked.
template <tokenizer Tok>
std::vector<rendered_chat> render_pairs(std::string_view call, const Tok& tok, std::span<const preference_record> data,
                                        std::int64_t max_len) {
  if (data.empty()) fail_argument(call, "data", "at least one preference pair", "an empty dataset");
  std::vector<rendered_chat> out;
  out.reserve(2 * data.size());
  for (std::size_t i = 0; i < data.size(); ++i) {
    const auto& r = data[i];
    if (r.label && !(*r.label >= 0.0 && *r.label <= 1.0))
      fail_argument(call, concat("data[", i, "].label"), "a probability in [0, 1]", *r.label);
    for (const auto& [text, name] : {std::pair{&r.chosen, "chosen"}, std::pair{&r.rejected, "rejected"}}) {
      if (text->empty()) fail_argument(call, concat("data[", i, "].", name), "a non-empty response", "\"\"");
      conversation c = r.prompt;
      c.push_back({"assistant", *text});
      out.push_back(render_chat(tok, c, concat(call, ": data[", i, "].", name)));
      if (max_len > 0 && static_cast<std::int64_t>(out.back().tokens.size()) > max_len)
        fail_argument(call, concat("data[", i, "].", name), concat("at most max_length = ", max_len, " tokens"),
                      concat(out.back().tokens.size(), " tokens"));
    }
  }
  return out;  // [2i] chosen, [2i + 1] rejected
}

}  // namespace detail::trn

/// Pair metrics (mean chosen / rejected score, margin, accuracy) of a scalar model on preference pairs.
template <scalar_model M, tokenizer Tok>
pair_metrics evaluate_reward_model(M& model, const Tok& tok, std::span<const preference_record> data) {
  const auto rendered = detail::trn::render_pairs("cai::evaluate_reward_model", tok, data, 0);
  pair_metrics_sum acc;
  for (std::size_t i = 0; i < data.size(); ++i) {
    padded_rows rows;
    rows.add(rendered[2 * i].tokens, {});
    rows.add(rendered[2 * i + 1].tokens, {});
    rows.finish();
    tensor<float, 2> v({2, rows.width});
    model.scalars(rows.batch(), v.view());
    acc.add(v(0, static_cast<std::int64_t>(rendered[2 * i].tokens.size()) - 1),
            v(1, static_cast<std::int64_t>(rendered[2 * i + 1].tokens.size()) - 1));
  }
  return acc.finish();
}

/// Bradley-Terry reward-model training. See the header comment.
template <trainable_scalar_model M, tokenizer Tok>
train_summary train_reward_model(M& model, const Tok& tok, std::span<const preference_record> data,
                                 const reward_options& opt = {}) {
  constexpr std::string_view call = "cai::train_reward_model";
  detail::trn::check_loop_options(call, opt.batch_size, 0, opt.epochs, opt.max_length, opt.schedule);
  if (!std::isfinite(opt.margin)) detail::fail_argument(call, "margin", "a finite value", opt.margin);
  detail::trn::check_checkpoint_options<M>(call, opt.checkpoint);
  const auto rendered = detail::trn::render_pairs(call, tok, data, detail::trn::model_max_length(model, opt.max_length));
  // One optimiser step on the pairs `batch` (indices into data, in the epoch's order).
  const auto one_step = [&](std::span<const std::int64_t> batch, train_summary& sum, progress_line& bar) {
    const auto B = static_cast<std::int64_t>(batch.size());
    const auto rec = [&](std::int64_t i) { return static_cast<std::size_t>(batch[static_cast<std::size_t>(i)]); };
    padded_rows rows;
    for (std::int64_t i = 0; i < B; ++i) rows.add(rendered[2 * rec(i)].tokens, {});
    for (std::int64_t i = 0; i < B; ++i) rows.add(rendered[2 * rec(i) + 1].tokens, {});
    rows.finish();
    std::vector<std::int64_t> last(static_cast<std::size_t>(2 * B));
    for (std::int64_t i = 0; i < B; ++i) {
      last[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(rendered[2 * rec(i)].tokens.size()) - 1;
      last[static_cast<std::size_t>(B + i)] = static_cast<std::int64_t>(rendered[2 * rec(i) + 1].tokens.size()) - 1;
    }
    std::vector<float> rc(static_cast<std::size_t>(B)), rr(rc.size()), labels(rc.size()), margin(rc.size(), static_cast<float>(opt.margin));
    std::vector<float> gc(rc.size()), gr(rc.size());
    model.zero_grad();
    auto h = model.train_forward(rows.batch());
    {
      const tensor_view<const float, 2> v = h.values();
      for (std::int64_t i = 0; i < B; ++i) {
        rc[static_cast<std::size_t>(i)] = v(i, last[static_cast<std::size_t>(i)]);
        rr[static_cast<std::size_t>(i)] = v(B + i, last[static_cast<std::size_t>(B + i)]);
        const auto& lab = data[rec(i)].label;
        labels[static_cast<std::size_t>(i)] = static_cast<float>(lab ? *lab : 1.0);
      }
    }
    const auto res = bradley_terry_loss(
        host{},
        reward_pair_batch<float>{.chosen = {rc.data(), {B}}, .rejected = {rr.data(), {B}},
                                 .margin = opt.margin != 0.0 ? tensor_view<const float, 1>(margin.data(), {B}) : tensor_view<const float, 1>{},
                                 .labels = {labels.data(), {B}}},
        reward_pair_grads<float>{.chosen = {gc.data(), {B}}, .rejected = {gr.data(), {B}}}, opt.bt);
    std::vector<float> dv(static_cast<std::size_t>(2 * B * rows.width), 0.0f);
    for (std::int64_t i = 0; i < B; ++i) {
      dv[static_cast<std::size_t>(i * rows.width + last[static_cast<std::size_t>(i)])] = gc[static_cast<std::size_t>(i)];
      dv[static_cast<std::size_t>((B + i) * rows.width + last[static_cast<std::size_t>(B + i)])] = gr[static_cast<std::size_t>(i)];
    }
    model.backward(std::move(h), tensor_view<const float, 2>(dv.data(), {2 * B, rows.width}));
    const double lr = opt.schedule.lr(sum.steps);
    metric_map m{{"loss", res.loss},          {"accuracy", res.metrics.accuracy}, {"margin", res.metrics.margin},
                 {"chosen", res.metrics.chosen}, {"rejected", res.metrics.rejected}, {"lr", lr}};
    detail::trn::finish_step(model, lr, res.loss, m, sum, opt.on_metrics, bar);
  };
  return detail::trn::run_epochs(call, "reward", model, data.size(), opt, one_step);
}

}  // namespace cai
