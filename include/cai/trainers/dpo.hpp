// cai/trainers/dpo.hpp — DPO-family training of any cai::trainable_policy against a frozen reference.
//
// Spec: anything cai::dpo_loss accepts (a loss such as cai::dpo::sigmoid{.beta = 0.1}, a cai::dpo::mix, a
// divergence-wrapped loss, cai::dpo::dynamic from a config string); it is checked by dpo_loss on the first step.
//
// Per preference_record: prompt + assistant(chosen) and prompt + assistant(rejected) are rendered with the chat
// template (cai::render_chat); the completion tokens are the LAST assistant span (content + end marker). For a batch
// of B pairs the policy runs two training forwards, one over the B chosen rows and one over the B rejected rows
// (the handle design keeps them apart), each with loss_mask = the completion tokens. Then
//   pc, pr       = cai::pair_sequence_logps(logp_chosen, logp_rejected; options.sequence: sum / mean,
//                  from_divergence, ld_alpha)
//   rc, rr       = the same for the reference, computed ONCE per record before training and cached
//   loss, dpc, dpr = cai::dpo_loss(spec, {pc, pr, rc, rr, lengths = completion token counts})
//   dlogp        = cai::pair_sequence_logps_backward(dpc, dpr)  ->  policy.backward(chosen), policy.backward(rejected)
// The reference log-probs: compute_reference_logps runs reference.log_probs (any cai::policy: a second model
// instance, or train_dpo's copy of the initial policy) over every record once (two forwards per batch). With a
// cache path they are also written as JSONL, one line per record {"index": i, "chosen": rc_i, "rejected": rr_i};
// a later run reads the file instead of running the reference, after checking that it holds exactly one entry per
// record index 0..n-1 (otherwise cai::invalid_argument naming "reference_cache"). The cache is keyed by index only:
// delete it when the data, the template or options.sequence change. The file is written to <cache>.tmp and renamed,
// so an interrupted first run leaves no partial cache behind.
// on_metrics(step, {loss, accuracy, margin, chosen, rejected, lr, grad_norm*}) per optimiser step; chosen /
// rejected / margin are dpo_loss's rewards (beta * log-ratios), measured before the step. Records are taken in order,
// or with shuffle = true in a per-epoch permutation drawn from cai's counter-based RNG keyed by (shuffle_seed, epoch) —
// deterministic for the seed and independent of interruptions.
// Checkpoints: with checkpoint.every > 0 the run writes checkpoints and resumes from them (cai/trainers/checkpoint.hpp:
// the policy must be cai::checkpointable; a resumed run ends with the parameters and summary of the uninterrupted
// one). The reference log-probs must not be recomputed by a resumed run (the reference may be the initial policy,
// which a resumed process no longer has): the forms that run a reference read them from reference_cache, and when
// that is unset while checkpointing they use checkpoint.path / "reference_logps.jsonl" as the cache.
// Errors: empty dataset ("data"), empty responses ("data[i].chosen"), too-long sequences, bad options, and every
// argument error of dpo_loss (beta <= 0, ...) — all cai::invalid_argument naming the argument.
//
//   auto ref = cai::compute_reference_logps(ref_model, tok, pairs, {}, 8, "ref.jsonl");
//   cai::train_dpo(lm, tok, pairs, cai::dpo::sigmoid{.beta = 0.1}, ref, {.batch_size = 8});
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../algorithms/dpo.hpp"
#include "../algorithms/sequence_logps.hpp"
#include "../concepts/policy.hpp"
#include "../concepts/tokenizer.hpp"
#include "../core/atomic_file.hpp"
#include "../core/host.hpp"
#include "../core/tensor.hpp"
#include "../io/datasets.hpp"
#include "../io/jsonl.hpp"
#include "../io/progress.hpp"
#include "checkpoint.hpp"
#include "metrics.hpp"
#include "reward.hpp"
#include "schedule.hpp"
#include "sft.hpp"

namespace cai {

/// Reference sequence log-probs, one per record and side.
struct reference_logps {
  std::vector<float> chosen, rejected;
  std::size_t size() const noexcept { return chosen.size(); }
};

struct dpo_train_options {
  std::int64_t batch_size = 8;  ///< pairs per optimiser step; >= 1
  std::int64_t epochs = 1;      ///< >= 1
  lr_schedule schedule{};
  pair_logps_options sequence{};               ///< how token log-probs become sequence log-probs
  std::filesystem::path reference_cache{};     ///< JSONL cache of the reference log-probs (train_dpo with a reference)
  std::int64_t max_length = 0;                 ///< 0 = the policy's config().max_seq, if any
  metrics_callback on_metrics{};
  bool progress = false;
  std::uint64_t shuffle_seed = 0;              ///< keys the per-epoch permutation when shuffle is set
  bool shuffle = false;                        ///< visit each epoch's records in a seeded permutation (see the header comment)
  checkpoint_options checkpoint{};             ///< periodic checkpoints and resume (cai/trainers/checkpoint.hpp)
};

namespace detail::trn {

/// The padded chosen and rejected rows of the given records (in that order) with completion masks and int64 ids.
struct pair_rows {
  padded_rows chosen, rejected;
  std::vector<std::int64_t> chosen_ids, rejected_ids, chosen_len, rejected_len;
  std::int64_t B = 0;

  pair_rows(const std::vector<rendered_chat>& r, std::span<const std::int64_t> records)
      : B(static_cast<std::int64_t>(records.size())) {
    for (const std::int64_t i : records) {
      const auto& c = r[static_cast<std::size_t>(2 * i)];
      const auto& j = r[static_cast<std::size_t>(2 * i + 1)];
      const auto cm = c.loss_mask(true), jm = j.loss_mask(true);
      chosen.add(c.tokens, cm);
      rejected.add(j.tokens, jm);
      chosen_len.push_back(std::count(cm.begin(), cm.end(), std::uint8_t{1}));
      rejected_len.push_back(std::count(jm.begin(), jm.end(), std::uint8_t{1}));
    }
    chosen.finish();
    rejected.finish();
    chosen_ids.assign(chosen.tokens.begin(), chosen.tokens.end());
    rejected_ids.assign(rejected.tokens.begin(), rejected.tokens.end());
  }
  token_side<float> side(bool c, const float* logp) const {
    const padded_rows& p = c ? chosen : rejected;
    const auto& ids = c ? chosen_ids : rejected_ids;
    return {.logp = {logp, {B, p.width}}, .mask = {p.loss_mask.data(), {B, p.width}}, .ids = {ids.data(), {B, p.width}}};
  }
};

}  // namespace detail::trn

/// Reference sequence log-probs of every record (see the header comment), from `cache` when it exists.
template <policy R, tokenizer Tok>
reference_logps compute_reference_logps(R& reference, const Tok& tok, std::span<const preference_record> data,
                                        const pair_logps_options& sequence = {}, std::int64_t batch_size = 8,
                                        const std::filesystem::path& cache = {}, std::int64_t max_length = 0) {
  constexpr std::string_view call = "cai::compute_reference_logps";
  if (batch_size < 1) detail::fail_argument(call, "batch_size", "a value >= 1", batch_size);
  const auto rendered = detail::trn::render_pairs(call, tok, data, detail::trn::model_max_length(reference, max_length));
  const std::size_t n = data.size();
  reference_logps out;
  if (!cache.empty() && std::filesystem::exists(cache)) {
    out.chosen.assign(n, 0.0f);
    out.rejected.assign(n, 0.0f);
    std::vector<std::uint8_t> seen(n, 0);
    std::size_t count = 0;
    read_jsonl(cache, [&](const nlohmann::json& j, std::size_t line) {
      if (!j.is_object() || !j.contains("index") || !j["index"].is_number_integer() || !j.contains("chosen") ||
          !j["chosen"].is_number() || !j.contains("rejected") || !j["rejected"].is_number())
        throw parse_error(detail::concat(call, ": ", cache.string(), ":", line,
                                         ": expected {\"index\": int, \"chosen\": number, \"rejected\": number}"));
      const auto i = j["index"].get<std::int64_t>();
      if (i < 0 || static_cast<std::size_t>(i) >= n || seen[static_cast<std::size_t>(i)])
        detail::fail_argument(call, "reference_cache", detail::concat("one entry per record index in [0, ", n, ")"),
                              detail::concat(i < 0 || static_cast<std::size_t>(i) >= n ? "an out-of-range" : "a repeated", " index ", i, " at line ", line, " of '", cache.string(), "'"));
      seen[static_cast<std::size_t>(i)] = 1;
      out.chosen[static_cast<std::size_t>(i)] = j["chosen"].get<float>();
      out.rejected[static_cast<std::size_t>(i)] = j["rejected"].get<float>();
      ++count;
    });
    if (count != n)
      detail::fail_argument(call, "reference_cache", detail::concat(n, " entries (one per record)"),
                            detail::concat(count, " in '", cache.string(), "'"));
    return out;
  }
  const auto N = static_cast<std::int64_t>(n);
  for (std::int64_t lo = 0; lo < N; lo += batch_size) {
    const std::int64_t hi = std::min(N, lo + batch_size);
    std::vector<std::int64_t> records(static_cast<std::size_t>(hi - lo));
    std::iota(records.begin(), records.end(), lo);
    const detail::trn::pair_rows rows(rendered, records);
    tensor<float, 2> lc({rows.B, rows.chosen.width}), lr({rows.B, rows.rejected.width});
    reference.log_probs(rows.chosen.batch(), lc.view());
    reference.log_probs(rows.rejected.batch(), lr.view());
    std::vector<float> pc(static_cast<std::size_t>(rows.B)), pr(pc.size());
    pair_sequence_logps(host{}, rows.side(true, lc.data()), rows.side(false, lr.data()),
                        pair_outputs<float>{.chosen = {pc.data(), {rows.B}}, .rejected = {pr.data(), {rows.B}}}, sequence);
    out.chosen.insert(out.chosen.end(), pc.begin(), pc.end());
    out.rejected.insert(out.rejected.end(), pr.begin(), pr.end());
  }
  if (!cache.empty())
    detail::write_file_atomic(cache, "cai::compute_reference_logps", [&](std::ostream& f) {
      for (std::size_t i = 0; i < n; ++i)
        f << nlohmann::json{{"index", i}, {"chosen", static_cast<double>(out.chosen[i])},
                            {"rejected", static_cast<double>(out.rejected[i])}}
                 .dump()
          << '\n';
    });
  return out;
}

/// DPO-family training against precomputed reference log-probs. See the header comment.
template <trainable_policy P, tokenizer Tok, class Spec>
train_summary train_dpo(P& policy, const Tok& tok, std::span<const preference_record> data, const Spec& spec,
                        const reference_logps& ref, const dpo_train_options& opt = {}) {
  constexpr std::string_view call = "cai::train_dpo";
  detail::trn::check_loop_options(call, opt.batch_size, 0, opt.epochs, opt.max_length, opt.schedule);
  detail::trn::check_checkpoint_options<P>(call, opt.checkpoint);
  const auto rendered = detail::trn::render_pairs(call, tok, data, detail::trn::model_max_length(policy, opt.max_length));
  if (ref.chosen.size() != data.size() || ref.rejected.size() != data.size())
    detail::fail_argument(call, "reference", detail::concat(data.size(), " reference log-probs per side (one per record)"),
                          detail::concat(ref.chosen.size(), " chosen, ", ref.rejected.size(), " rejected"));
  // One optimiser step on the pairs `batch` (indices into data, in the epoch's order).
  const auto one_step = [&](std::span<const std::int64_t> batch, train_summary& sum, progress_line& bar) {
    const detail::trn::pair_rows rows(rendered, batch);
    const std::int64_t B = rows.B;
    std::vector<float> ref_c(static_cast<std::size_t>(B)), ref_r(ref_c.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      ref_c[i] = ref.chosen[static_cast<std::size_t>(batch[i])];
      ref_r[i] = ref.rejected[static_cast<std::size_t>(batch[i])];
    }
    policy.zero_grad();
    auto hc = policy.train_forward(rows.chosen.batch(), forward_request{});
    auto hr = policy.train_forward(rows.rejected.batch(), forward_request{});
    // Dense copies: the handles' views may be strided, and pair_sequence_logps wants (B, T) views it can index.
    tensor<float, 2> lc({B, rows.chosen.width}), lr({B, rows.rejected.width});
    {
      const tensor_view<const float, 2> a = hc.logp(), b = hr.logp();
      for (std::int64_t i = 0; i < B; ++i) {
        for (std::int64_t t = 0; t < rows.chosen.width; ++t) lc(i, t) = a(i, t);
        for (std::int64_t t = 0; t < rows.rejected.width; ++t) lr(i, t) = b(i, t);
      }
    }
    const auto cs = rows.side(true, lc.data()), rs = rows.side(false, lr.data());
    std::vector<float> pc(static_cast<std::size_t>(B)), pr(pc.size()), dpc(pc.size()), dpr(pc.size());
    pair_sequence_logps(host{}, cs, rs, pair_outputs<float>{.chosen = {pc.data(), {B}}, .rejected = {pr.data(), {B}}}, opt.sequence);
    const auto res = dpo_loss(host{}, spec,
                              dpo_batch<float>{.chosen = {pc.data(), {B}}, .rejected = {pr.data(), {B}},
                                               .ref_chosen = {ref_c.data(), {B}}, .ref_rejected = {ref_r.data(), {B}},
                                               .chosen_lengths = {rows.chosen_len.data(), {B}},
                                               .rejected_lengths = {rows.rejected_len.data(), {B}}},
                              dpo_grads<float>{.chosen = {dpc.data(), {B}}, .rejected = {dpr.data(), {B}}});
    tensor<float, 2> gc({B, rows.chosen.width}), gr({B, rows.rejected.width});
    pair_sequence_logps_backward(host{}, cs, rs, tensor_view<const float, 1>(dpc.data(), {B}),
                                 tensor_view<const float, 1>(dpr.data(), {B}),
                                 pair_token_grads<float>{.chosen = gc.view(), .rejected = gr.view()}, opt.sequence);
    policy.backward(std::move(hc), per_token_grads{.dlogp = gc.view()});
    policy.backward(std::move(hr), per_token_grads{.dlogp = gr.view()});
    const double rate = opt.schedule.lr(sum.steps);
    metric_map m{{"loss", res.loss},          {"accuracy", res.metrics.accuracy}, {"margin", res.metrics.margin},
                 {"chosen", res.metrics.chosen}, {"rejected", res.metrics.rejected}, {"lr", rate}};
    detail::trn::finish_step(policy, rate, res.loss, m, sum, opt.on_metrics, bar);
  };
  return detail::trn::run_epochs(call, "dpo", policy, data.size(), opt, one_step);
}

/// DPO against a frozen `reference` policy: its log-probs are computed once (compute_reference_logps, cached at
/// opt.reference_cache when set, else at checkpoint.path / "reference_logps.jsonl" when checkpointing), then
/// train_dpo as above.
template <trainable_policy P, policy R, tokenizer Tok, class Spec>
  requires(!std::same_as<std::remove_cvref_t<R>, reference_logps>)
train_summary train_dpo(P& policy, R& reference, const Tok& tok, std::span<const preference_record> data, const Spec& spec,
                        const dpo_train_options& opt = {}) {
  constexpr std::string_view call = "cai::train_dpo";
  if (opt.batch_size < 1) detail::fail_argument(call, "batch_size", "a value >= 1", opt.batch_size);
  detail::trn::check_checkpoint_options<P>(call, opt.checkpoint);
  std::filesystem::path cache = opt.reference_cache;
  if (cache.empty() && opt.checkpoint.every > 0) {
    std::error_code ec;
    std::filesystem::create_directories(opt.checkpoint.path, ec);
    if (ec) detail::fail(call, detail::concat("cannot create the checkpoint directory '", opt.checkpoint.path.string(), "': ", ec.message()));
    cache = opt.checkpoint.path / "reference_logps.jsonl";
  }
  const auto ref = compute_reference_logps(reference, tok, data, opt.sequence, opt.batch_size, cache, opt.max_length);
  return train_dpo(policy, tok, data, spec, ref, opt);
}

/// DPO with the policy's initial copy as the frozen reference (P must be copy-constructible).
template <trainable_policy P, tokenizer Tok, class Spec>
  requires std::copy_constructible<P>
train_summary train_dpo(P& policy, const Tok& tok, std::span<const preference_record> data, const Spec& spec,
                        const dpo_train_options& opt = {}) {
  P reference = policy;
  return train_dpo(policy, reference, tok, data, spec, opt);
}

}  // namespace cai
