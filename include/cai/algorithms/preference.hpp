// cai/algorithms/preference.hpp — Bradley-Terry reward-model losses, and the pair metrics every preference
// objective reports.
//
// Sequence-wise (per pair i, r+ = chosen reward, r- = rejected reward, m = margin, p = P(chosen preferred)):
//   d_i   = r+_i - r-_i - m_i
//   loss  = mean_i [ -p_i log s(d_i) - (1 - p_i) log s(-d_i) ]                    (s = logistic sigmoid)
//         + center_coef * mean_i (r+_i + r-_i)^2                                  (reward centring)
//         + l2_coef * mean over the 2B rewards of r^2                             (safe-rlhf regularisation)
//   d loss / d r+_i = [s(d_i) - p_i + 2 center_coef (r+_i + r-_i) + l2_coef r+_i] / B, and symmetrically for r-.
// With p = 1 (hard labels, the default) this is -log s(r+ - r- - m): TRL trainer/reward_trainer.py
// RewardTrainer.compute_loss (margin column, center_rewards_coefficient from Eisenstein et al. 2023, arXiv
// 2312.09244), OpenRLHF openrlhf/models/loss.py PairWiseLoss, safe-rlhf values/reward/trainer.py (sequence-wise,
// `regularization`). OpenRLHF's LogExpLoss log(1 + e^(r- - r+)) is the same function at m = 0 (softplus(-d) =
// -log s(d)); cai evaluates it in the stable form, where the literal one overflows for r- - r+ > 88 in fp32.
// Soft labels p in [0, 1] are AI-feedback preference probabilities (Bai et al. 2022, arXiv 2212.08073, the
// preference model trained on RLAIF labels): the cross-entropy against P(chosen) = s(d).
//
// Token-wise (safe-rlhf values/reward/trainer.py, loss_type "token-wise"): the score model's per-token rewards of
// both sequences, padded to one length T; for pair i, with d_i = the first position where the token ids differ and
// e_i = the later of the two last counted positions,
//   loss_i = mean_{t = d_i..e_i} -log s(h_t - l_t) + l2_coef * mean over the 2 (e_i - d_i + 1) values of x^2
//   loss   = mean_i loss_i
// (positions past the shorter sequence's end are scored, as in safe-rlhf; identical sequences are an error).
//
// Metrics (pair_metrics): means of the chosen and rejected values, of their margin, and the accuracy
// mean 1[chosen > rejected] (strict: a tie counts as wrong, as TRL and safe-rlhf count it).
// All sums run in double in index order: the same input gives the same bits on every backend.
//
//   auto r = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<float>{.chosen = rc, .rejected = rr},
//                                    cai::reward_pair_grads<float>{.chosen = gc, .rejected = gr});
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "dispatch.hpp"
#include "sequence_logps.hpp"
#include "sequences.hpp"

namespace cai {

/// What every pairwise objective reports: the mean chosen and rejected value (a reward, or beta * log-ratio for
/// DPO), the mean margin and the accuracy, over `count` pairs.
struct pair_metrics {
  std::int64_t count = 0;
  double chosen = 0.0;
  double rejected = 0.0;
  double margin = 0.0;
  double accuracy = 0.0;
};

/// Accumulates pair_metrics in index order.
struct pair_metrics_sum {
  double c = 0.0, r = 0.0, m = 0.0, a = 0.0;
  std::int64_t n = 0;
  CAI_HD void add(double chosen, double rejected) noexcept {
    c += chosen;
    r += rejected;
    m += chosen - rejected;
    a += chosen > rejected ? 1.0 : 0.0;
    ++n;
  }
  CAI_HD pair_metrics finish() const noexcept {
    if (n == 0) return {};
    const double k = static_cast<double>(n);
    return {n, c / k, r / k, m / k, a / k};
  }
};

template <class R>
struct reward_pair_batch {
  tensor_view<const R, 1> chosen{}, rejected{};  ///< (B) rewards of the chosen and rejected responses
  tensor_view<const R, 1> margin{};              ///< (B) optional required margin m
  tensor_view<const R, 1> labels{};              ///< (B) optional soft labels P(chosen preferred) in [0, 1]
};

template <class R>
struct reward_pair_grads {
  tensor_view<R, 1> chosen{}, rejected{};  ///< (B) d loss / d reward; either may be empty
  tensor_view<R, 1> losses{};              ///< (B) optional per-pair loss (before the mean)
};

struct bradley_terry_options {
  double center_coef = 0.0;  ///< TRL center_rewards_coefficient (0.01 recommended); >= 0
  double l2_coef = 0.0;      ///< safe-rlhf `regularization` (0.001 in its scripts); >= 0
};

struct preference_result {
  double loss = 0.0;
  pair_metrics metrics{};
};

/// The SFT (negative log-likelihood) term some objectives add: NLL = -sum_i logp_sums_i / sum_i tokens_i, a token
/// mean over the batch (cross-entropy over every counted token), with d NLL / d logp_sums_i = -1 / sum tokens.
template <class R>
struct nll_inputs {
  tensor_view<const R, 1> logp_sums{};              ///< (B) summed log-probs of the tokens the NLL counts
  tensor_view<const std::int64_t, 1> tokens{};      ///< (B) how many tokens each sum holds
};

template <class R>
struct bt_problem {
  reward_pair_batch<R> in;
  reward_pair_grads<R> out;
  bradley_terry_options opt;
};

namespace detail {

/// -p log s(d) - (1 - p) log s(-d) and its derivative s(d) - p (CAI_HD: shared by every backend).
CAI_HD inline void soft_logistic(double d, double p, double& loss, double& grad) noexcept {
  loss = -p * log_sigmoid(d) - (1.0 - p) * log_sigmoid(-d);
  grad = sigmoid(d) - p;
}

/// One pair of the Bradley-Terry loss: rewards c, r, margin m, label p -> the pair's loss and d loss / d c, d r
/// (before the 1 / n of the mean). Shared by the host loop below and cai::batched::bradley_terry.
struct bt_terms {
  double loss, dc, dr;
};
CAI_HD inline bt_terms bt_pair_terms(double c, double r, double m, double lab, const bradley_terry_options& o) noexcept {
  double l = 0.0, g = 0.0;
  soft_logistic(c - r - m, lab, l, g);
  const double sum = c + r;
  l += o.center_coef * sum * sum + o.l2_coef * 0.5 * (c * c + r * r);
  return {l, g + 2.0 * o.center_coef * sum + o.l2_coef * c, -g + 2.0 * o.center_coef * sum + o.l2_coef * r};
}

struct nll_value {
  double value = 0.0, dlogp = 0.0;  // NLL and d NLL / d logp_sums_i (the same for every i)
};

/// The batch NLL of checked nll_inputs (0, with gradient 0, when no token counts).
template <class R>
nll_value batch_nll(const nll_inputs<R>& in, std::int64_t n) noexcept {
  if (!in.logp_sums.data()) return {};
  double s = 0.0, k = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    s += static_cast<double>(in.logp_sums(i));
    k += static_cast<double>(in.tokens(i));
  }
  return k > 0.0 ? nll_value{-s / k, -1.0 / k} : nll_value{};
}

template <class R>
void check_nll_inputs(std::string_view call, const nll_inputs<R>& in, std::int64_t n, bool required) {
  if (!in.logp_sums.data()) {
    if (required && n > 0) fail_argument(call, "nll.logp_sums", "(B) summed log-probs of the SFT term", "none");
    return;
  }
  require_per_row(call, "nll.logp_sums", in.logp_sums, n);
  for (std::int64_t i = 0; i < n; ++i)
    if (!(in.logp_sums(i) <= R(0)) || !std::isfinite(in.logp_sums(i)))
      fail_argument(call, "nll.logp_sums", "finite log-prob sums <= 0", concat(in.logp_sums(i), " at ", i));
  if (!in.tokens.data()) fail_argument(call, "nll.tokens", "(B) token counts", "none");
  require_per_row(call, "nll.tokens", in.tokens, n);
  for (std::int64_t i = 0; i < n; ++i)
    if (in.tokens(i) < 0) fail_argument(call, "nll.tokens", "counts >= 0", concat(in.tokens(i), " at ", i));
}

/// The last position of row i whose mask is 1, or -1.
inline std::int64_t last_counted(const mask_view2& m, std::int64_t i) noexcept {
  for (std::int64_t t = m.extent(1); t-- > 0;)
    if (m(i, t)) return t;
  return -1;
}

}  // namespace detail

namespace generic {

template <bulk_backend B, class R>
preference_result bradley_terry_loss(const B&, const bt_problem<R>& p) {
  const auto& in = p.in;
  const std::int64_t n = in.chosen.extent(0);
  const double inv = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
  double total = 0.0;
  pair_metrics_sum ms;
  for (std::int64_t i = 0; i < n; ++i) {
    const double c = static_cast<double>(in.chosen(i)), r = static_cast<double>(in.rejected(i));
    const double m = in.margin.data() ? static_cast<double>(in.margin(i)) : 0.0;
    const double lab = in.labels.data() ? static_cast<double>(in.labels(i)) : 1.0;
    const detail::bt_terms t = detail::bt_pair_terms(c, r, m, lab, p.opt);
    total += t.loss;
    ms.add(c, r);
    if (p.out.losses.data()) p.out.losses(i) = static_cast<R>(t.loss);
    if (p.out.chosen.data()) p.out.chosen(i) = static_cast<R>(t.dc * inv);
    if (p.out.rejected.data()) p.out.rejected(i) = static_cast<R>(t.dr * inv);
  }
  return {total * inv, ms.finish()};
}

}  // namespace generic

CAI_DETAIL_DISPATCH(bradley_terry_loss)

// ----- token-wise ------------------------------------------------------------------------------------------------

/// One side of a token-wise pair: per-token scores (B,T), the attention mask (1 = a real token) and the token ids.
template <class R>
struct scored_tokens {
  tensor_view<const R, 2> scores{};
  detail::mask_view2 mask{};
  tensor_view<const std::int64_t, 2> ids{};
};

template <class R>
struct token_pair_grads {
  tensor_view<R, 2> chosen{}, rejected{};  ///< (B,T) d loss / d score (0 outside each pair's slice)
  tensor_view<R, 1> losses{};              ///< (B) optional per-pair loss
};

struct token_slice {
  std::int64_t begin = 0, end = 0;  // [begin, end)
};

template <class R>
struct bt_token_problem {
  scored_tokens<R> chosen, rejected;
  const token_slice* slices = nullptr;
  token_pair_grads<R> out;
  double l2_coef = 0.0;
};

namespace generic {

template <bulk_backend B, class R>
preference_result bradley_terry_tokenwise_loss(const B&, const bt_token_problem<R>& p) {
  const std::int64_t n = p.chosen.scores.extent(0), T = p.chosen.scores.extent(1);
  const double inv = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
  double total = 0.0;
  pair_metrics_sum ms;
  for (std::int64_t i = 0; i < n; ++i) {
    const token_slice s = p.slices[i];
    const double k = static_cast<double>(s.end - s.begin), reg = p.l2_coef / (2.0 * k);
    double l = 0.0;
    R* gc = p.out.chosen.data() ? &p.out.chosen(i, 0) : nullptr;
    R* gr = p.out.rejected.data() ? &p.out.rejected(i, 0) : nullptr;
    for (std::int64_t t = 0; t < T; ++t) {
      if (gc) gc[t] = R(0);
      if (gr) gr[t] = R(0);
    }
    for (std::int64_t t = s.begin; t < s.end; ++t) {
      const double h = static_cast<double>(p.chosen.scores(i, t)), w = static_cast<double>(p.rejected.scores(i, t));
      double lt = 0.0, g = 0.0;
      detail::soft_logistic(h - w, 1.0, lt, g);
      l += lt / k + reg * (h * h + w * w);
      if (gc) gc[t] = static_cast<R>((g / k + 2.0 * reg * h) * inv);
      if (gr) gr[t] = static_cast<R>((-g / k + 2.0 * reg * w) * inv);
    }
    total += l;
    // The metrics compare the end scores (the last counted token of each sequence), as safe-rlhf's accuracy does.
    ms.add(static_cast<double>(p.chosen.scores(i, detail::last_counted(p.chosen.mask, i))),
           static_cast<double>(p.rejected.scores(i, detail::last_counted(p.rejected.mask, i))));
    if (p.out.losses.data()) p.out.losses(i) = static_cast<R>(l);
  }
  return {total * inv, ms.finish()};
}

}  // namespace generic

CAI_DETAIL_DISPATCH(bradley_terry_tokenwise_loss)

namespace detail {

template <class R>
void check_pair_values(std::string_view call, const tensor_view<const R, 1>& chosen, const tensor_view<const R, 1>& rejected,
                       std::string_view cname = "chosen", std::string_view rname = "rejected") {
  require_per_row(call, rname, rejected, chosen.extent(0));
  check_finite_values(call, cname, chosen);
  check_finite_values(call, rname, rejected);
}

template <class R>
void check_pair_grad(std::string_view call, std::string_view name, const tensor_view<R, 1>& g, std::int64_t n) {
  if (g.data()) require_per_row(call, name, g, n);
}

/// Per-pair slices [first differing id, later last counted position + 1]; checks the two sides.
template <class R>
std::vector<token_slice> token_pair_slices(std::string_view call, const scored_tokens<R>& c, const scored_tokens<R>& r) {
  const auto& cs = c.scores;
  if (!cs.data() && !cs.empty()) fail_argument(call, "chosen.scores", "a (B,T) view", "none");
  require_row_contiguous(call, "chosen.scores", cs);
  require_like(call, "rejected.scores", r.scores, "chosen.scores", cs);
  // Named arrays, not braced lists of std::pair: nvcc 13's front end rejects the latter in a range-for.
  const std::pair<decltype(c.mask), const char*> masks[] = {{c.mask, "chosen.mask"}, {r.mask, "rejected.mask"}};
  for (const auto& [v, name] : masks) {
    if (!v.data() && !cs.empty()) fail_argument(call, name, "the attention mask (B,T)", "none");
    require_like(call, name, v, "chosen.scores", cs);
  }
  const std::pair<decltype(c.ids), const char*> ids[] = {{c.ids, "chosen.ids"}, {r.ids, "rejected.ids"}};
  for (const auto& [v, name] : ids) {
    if (!v.data() && !cs.empty()) fail_argument(call, name, "the token ids (B,T)", "none");
    require_like(call, name, v, "chosen.scores", cs);
  }
  const row_layout L{cs.extent(0), cs.extent(1), nullptr};
  check_mask_values(call, c.mask, L, "chosen.mask");
  check_mask_values(call, r.mask, L, "rejected.mask");
  std::vector<token_slice> out(static_cast<std::size_t>(L.rows));
  for (std::int64_t i = 0; i < L.rows; ++i) {
    std::int64_t d = 0;
    while (d < L.width && c.ids(i, d) == r.ids(i, d)) ++d;
    const std::int64_t ec = last_counted(c.mask, i), er = last_counted(r.mask, i);
    if (ec < 0) fail_argument(call, "chosen.mask", "at least one counted token per row", concat("none in row ", i));
    if (er < 0) fail_argument(call, "rejected.mask", "at least one counted token per row", concat("none in row ", i));
    const std::int64_t e = std::max(ec, er);
    if (d > e)
      fail_argument(call, "rejected.ids", "a sequence that differs from the chosen one",
                    concat("identical token ids up to the end in row ", i));
    out[static_cast<std::size_t>(i)] = {d, e + 1};
    // The end scores feed the metrics even when they lie before the slice (the shorter sequence's end).
    if (!std::isfinite(cs(i, ec))) fail_argument(call, "chosen.scores", "a finite end score", concat("non-finite at row ", i, ", token ", ec));
    if (!std::isfinite(r.scores(i, er))) fail_argument(call, "rejected.scores", "a finite end score", concat("non-finite at row ", i, ", token ", er));
    for (std::int64_t t = d; t <= e; ++t)
      if (!std::isfinite(cs(i, t)) || !std::isfinite(r.scores(i, t)))
        fail_argument(call, std::isfinite(cs(i, t)) ? "rejected.scores" : "chosen.scores", "finite scores in each pair's slice",
                      concat("non-finite at row ", i, ", token ", t));
  }
  return out;
}

struct bradley_terry_loss_fn {
  /// Bradley-Terry loss over (B) reward pairs, with margins, soft labels, centring and L2. See the header comment.
  template <backend Bk, class R>
    requires token_real<R>
  preference_result operator()(const Bk& b, const reward_pair_batch<R>& in, const reward_pair_grads<R>& out = {},
                               const bradley_terry_options& opt = {}) const {
    constexpr std::string_view call = "cai::bradley_terry_loss";
    check_pair_values(call, in.chosen, in.rejected);
    const std::int64_t n = in.chosen.extent(0);
    if (in.margin.data()) {
      require_per_row(call, "margin", in.margin, n);
      check_finite_values(call, "margin", in.margin);
    }
    if (in.labels.data()) {
      require_per_row(call, "labels", in.labels, n);
      for (std::int64_t i = 0; i < n; ++i)
        if (!(in.labels(i) >= R(0) && in.labels(i) <= R(1)))
          fail_argument(call, "labels", "probabilities in [0, 1]", concat(in.labels(i), " at ", i));
    }
    check_pair_grad(call, "grads.chosen", out.chosen, n);
    check_pair_grad(call, "grads.rejected", out.rejected, n);
    check_pair_grad(call, "grads.losses", out.losses, n);
    require_non_negative(call, "center_coef", opt.center_coef);
    require_non_negative(call, "l2_coef", opt.l2_coef);
    return bradley_terry_loss_cpo::dispatch(b, bt_problem<R>{in, out, opt});
  }
};

struct bradley_terry_tokenwise_loss_fn {
  /// safe-rlhf's token-wise Bradley-Terry loss over per-token scores. See the header comment.
  template <backend Bk, class R>
    requires token_real<R>
  preference_result operator()(const Bk& b, const scored_tokens<R>& chosen, const scored_tokens<R>& rejected,
                               const token_pair_grads<R>& out = {}, const bradley_terry_options& opt = {}) const {
    constexpr std::string_view call = "cai::bradley_terry_tokenwise_loss";
    const auto slices = token_pair_slices(call, chosen, rejected);
    if (out.chosen.data()) require_like(call, "grads.chosen", out.chosen, "chosen.scores", chosen.scores);
    if (out.rejected.data()) require_like(call, "grads.rejected", out.rejected, "chosen.scores", chosen.scores);
    check_pair_grad(call, "grads.losses", out.losses, chosen.scores.extent(0));
    if (opt.center_coef != 0.0) fail_argument(call, "center_coef", "0 (the token-wise loss has no centring term)", opt.center_coef);
    require_non_negative(call, "l2_coef", opt.l2_coef);
    return bradley_terry_tokenwise_loss_cpo::dispatch(b, bt_token_problem<R>{chosen, rejected, slices.data(), out, opt.l2_coef});
  }
};

}  // namespace detail

/// Bradley-Terry reward-model loss (margins, soft labels, centring, L2). See the header comment.
inline constexpr detail::bradley_terry_loss_fn bradley_terry_loss{};
/// Token-wise Bradley-Terry loss (safe-rlhf). See the header comment.
inline constexpr detail::bradley_terry_tokenwise_loss_fn bradley_terry_tokenwise_loss{};

}  // namespace cai
