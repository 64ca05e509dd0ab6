// cai/algorithms/sequence_logps.hpp — sequence log-probs from per-token log-probs, for preference objectives.
//
// Every reduction is a weighted sum over a row's counted tokens (mask 1), S_b = sum_t w_bt logp_bt, so the exact
// backward is dlogp_bt = dS_b * w_bt (0 at tokens that do not count). The weights:
//   sum                S = sum of counted log-probs (TRL/OpenRLHF/safe-rlhf "sum", the DPO default)
//   mean               S = sum / n_b, n_b = counted tokens (IPO, SimPO, ORPO average_log_prob; 0 for an empty row)
// For a chosen/rejected pair (pair_sequence_logps) two more rules decide which tokens count:
//   from_divergence    only tokens at positions >= the first position where the chosen and rejected token ids
//                      differ (safe-rlhf safe_rlhf/algorithms/dpo/trainer.py and values/*/trainer.py: diverge_index;
//                      the shared prompt and any shared prefix of the answers cancel between the two sequences)
//   ld_alpha < 1       LD-DPO (Liu et al. 2024, arXiv 2409.06411; TRL dpo_trainer.py `ld_alpha`): of each
//                      sequence's counted tokens, the first min(n_chosen, n_rejected) weigh 1 and the rest ld_alpha,
//                      which damps the length bias of the longer answer. With mean, S divides by n_b (the count of
//                      counted tokens, not the weight sum).
//
// Layouts (sequences.hpp): (B,T) + uint8 mask (or cai::no_mask), or packed (1,N) + cu_seqlens; out (B). The sums run
// in double whatever the storage type, left to right along each row, so results do not depend on the backend or the
// thread count. Counted log-probs must be finite (NaN/inf: cai::invalid_argument naming the argument and position).
//
//   cai::sequence_logps(cai::host{}, logp, mask, out, {.reduce = cai::seq_reduce::mean});
//   cai::pair_sequence_logps(cai::host{}, {.logp = cl, .mask = cm, .ids = ci}, {.logp = rl, .mask = rm, .ids = ri},
//                            {.chosen = c, .rejected = r}, {.from_divergence = true});
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../core/view_traits.hpp"
#include "dispatch.hpp"
#include "sequences.hpp"

namespace cai {

enum class seq_reduce : std::uint8_t { sum, mean };

struct sequence_logps_options {
  seq_reduce reduce = seq_reduce::sum;
  tensor_view<const std::int64_t, 1> cu_seqlens{};  ///< packed layout offsets (B + 1); empty = padded
};

/// One side of a preference pair at the token level. `ids` (int32 or int64 token ids laid out like `logp`) is
/// needed only for `from_divergence`; the padded layout only (positions must correspond between the two sides).
template <class R>
struct token_side {
  tensor_view<const R, 2> logp{};
  detail::mask_view2 mask{};
  tensor_view<const std::int64_t, 2> ids{};
};

struct pair_logps_options {
  seq_reduce reduce = seq_reduce::sum;
  bool from_divergence = false;  ///< count only positions from the first differing token id on (needs ids)
  double ld_alpha = 1.0;         ///< LD-DPO weight of the tokens beyond the shared length, in [0, 1]; 1 = off
};

template <class R>
struct pair_outputs {
  tensor_view<R, 1> chosen{}, rejected{};
};

template <class R>
struct pair_token_grads {
  tensor_view<R, 2> chosen{}, rejected{};
};

// ----- problems (checked once at the boundary, then dispatched) --------------------------------------------------

template <class R>
struct seq_side_problem {
  tensor_view<const R, 2> logp;
  detail::mask_view2 mask;
  row_layout layout;
  tensor_view<const std::int64_t, 2> ids;
};

/// For one row pair: the first position that counts (divergence) and the shared counted length (LD-DPO).
struct pair_row_rule {
  std::int64_t start = 0;                                   // positions < start do not count
  std::int64_t shared = std::numeric_limits<std::int64_t>::max();  // counted tokens beyond this weigh ld_alpha
};

template <class R>
struct sequence_logps_problem {
  seq_side_problem<R> side;
  seq_reduce reduce = seq_reduce::sum;
  double ld_alpha = 1.0;
  const pair_row_rule* rules = nullptr;  // per row; null: every counted token weighs 1
  tensor_view<R, 1> out;                 // forward output
  tensor_view<const R, 1> dout;          // backward input
  tensor_view<R, 2> dlogp;               // backward output
};

namespace detail {

/// Calls f(t, w) for each counted token t of row b with its weight w (before the mean's 1/n), and returns n.
template <class R, class F>
std::int64_t for_counted(const sequence_logps_problem<R>& p, std::int64_t b, F&& f) {
  const row_layout& L = p.side.layout;
  const std::uint8_t* m = p.side.mask.data() ? L.row(p.side.mask, b) : nullptr;
  const std::int64_t len = L.length(b);
  const pair_row_rule rule = p.rules ? p.rules[b] : pair_row_rule{};
  std::int64_t n = 0;
  for (std::int64_t t = std::min(rule.start, len); t < len; ++t) {
    if (m && !m[t]) continue;
    f(t, n < rule.shared ? 1.0 : p.ld_alpha);
    ++n;
  }
  return n;
}

}  // namespace detail

namespace generic {

template <bulk_backend B, class R>
void sequence_logps(const B& b, const sequence_logps_problem<R>& p) {
  parallel_for(b, p.side.layout.rows, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const R* x = p.side.layout.row(p.side.logp, r);
      double s = 0.0;
      const std::int64_t n = detail::for_counted(p, r, [&](std::int64_t t, double w) { s += w * static_cast<double>(x[t]); });
      p.out(r) = static_cast<R>(p.reduce == seq_reduce::mean ? (n > 0 ? s / static_cast<double>(n) : 0.0) : s);
    }
  });
}

template <bulk_backend B, class R>
void sequence_logps_backward(const B& b, const sequence_logps_problem<R>& p) {
  parallel_for(b, p.side.layout.rows, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      R* g = p.side.layout.row(p.dlogp, r);
      const std::int64_t len = p.side.layout.length(r);
      std::fill(g, g + len, R(0));
      std::int64_t n = 0;
      if (p.reduce == seq_reduce::mean) n = detail::for_counted(p, r, [](std::int64_t, double) {});
      const double scale = static_cast<double>(p.dout(r)) / (n > 0 ? static_cast<double>(n) : 1.0);
      detail::for_counted(p, r, [&](std::int64_t t, double w) { g[t] = static_cast<R>(scale * w); });
    }
  });
}

}  // namespace generic

CAI_DETAIL_DISPATCH(sequence_logps)
CAI_DETAIL_DISPATCH(sequence_logps_backward)

namespace detail {

template <class R>
seq_side_problem<R> make_side(std::string_view call, std::string_view logp_name, std::string_view mask_name,
                              const tensor_view<const R, 2>& logp, const mask_view2& mask,
                              const tensor_view<const std::int64_t, 1>& cu) {
  const row_layout L = make_layout(call, logp_name, logp, cu);
  require_row_contiguous(call, logp_name, logp);
  if (mask.data()) require_like(call, mask_name, mask, logp_name, logp);
  check_mask_values(call, mask, L, mask_name);
  check_finite_tokens(call, logp_name, logp, mask, L);
  return {logp, mask, L, {}};
}

template <class R>
void check_grad_out(std::string_view call, std::string_view name, const tensor_view<R, 2>& g, std::string_view ref_name,
                    const tensor_view<const R, 2>& ref) {
  if (!g.data() && !ref.empty()) fail_argument(call, name, "an output view", "none");
  if (g.data()) require_like(call, name, g, ref_name, ref);
}

struct sequence_logps_fn {
  /// out[b] = sum (or mean) of row b's counted log-probs.
  template <backend Bk, viewable X, class M, class R = element_of_t<X>>
    requires token_real<R> && (rank_of_v<X> == 2)
  void operator()(const Bk& b, const X& logp, const M& mask, tensor_view<R, 1> out,
                  const sequence_logps_options& opt = {}) const {
    constexpr std::string_view call = "cai::sequence_logps";
    sequence_logps_problem<R> p{};
    p.side = make_side<R>(call, "logp", "mask", as_const_view(logp), token_mask_of(mask), opt.cu_seqlens);
    if (!out.data() && p.side.layout.rows > 0) fail_argument(call, "out", "an output view", "none");
    require_per_row(call, "out", out, p.side.layout.rows);
    p.reduce = opt.reduce;
    p.out = out;
    sequence_logps_cpo::dispatch(b, p);
  }
};

struct sequence_logps_backward_fn {
  /// dlogp[b, t] = dout[b] * w_bt: the exact gradient of sequence_logps (0 at tokens that do not count).
  template <backend Bk, viewable X, class M, class R = element_of_t<X>>
    requires token_real<R> && (rank_of_v<X> == 2)
  void operator()(const Bk& b, const X& logp, const M& mask, tensor_view<const R, 1> dout, tensor_view<R, 2> dlogp,
                  const sequence_logps_options& opt = {}) const {
    constexpr std::string_view call = "cai::sequence_logps_backward";
    sequence_logps_problem<R> p{};
    const auto x = as_const_view(logp);
    const row_layout L = make_layout(call, "logp", x, opt.cu_seqlens);
    const auto m = token_mask_of(mask);
    if (m.data()) require_like(call, "mask", m, "logp", x);
    check_mask_values(call, m, L);
    p.side = {x, m, L, {}};
    require_per_row(call, "dout", dout, L.rows);
    check_finite_values(call, "dout", dout);
    check_grad_out(call, "dlogp", dlogp, "logp", x);
    p.reduce = opt.reduce;
    p.dout = dout;
    p.dlogp = dlogp;
    sequence_logps_backward_cpo::dispatch(b, p);
  }
};

/// The per-row rules of a pair (divergence start, shared counted length); checks the two sides against each other.
template <class R>
std::vector<pair_row_rule> pair_rules(std::string_view call, const seq_side_problem<R>& c, const seq_side_problem<R>& r,
                                      const pair_logps_options& opt) {
  if (c.layout.rows != r.layout.rows)
    fail_argument<shape_error>(call, "rejected.logp", concat("as many sequences as chosen.logp (", c.layout.rows, ")"),
                               r.layout.rows);
  if (!(opt.ld_alpha >= 0.0 && opt.ld_alpha <= 1.0)) fail_argument(call, "ld_alpha", "a value in [0, 1]", opt.ld_alpha);
  const std::int64_t B = c.layout.rows;
  std::vector<pair_row_rule> rules(static_cast<std::size_t>(2 * B));  // [0, B) chosen, [B, 2B) rejected
  if (opt.from_divergence) {
    if (!c.ids.data()) fail_argument(call, "chosen.ids", "token ids (from_divergence)", "none");
    if (!r.ids.data()) fail_argument(call, "rejected.ids", "token ids (from_divergence)", "none");
    require_like(call, "chosen.ids", c.ids, "chosen.logp", c.logp);
    require_like(call, "rejected.ids", r.ids, "rejected.logp", r.logp);
    const std::int64_t Tmin = std::min(c.layout.width, r.layout.width);
    for (std::int64_t b = 0; b < B; ++b) {
      std::int64_t d = 0;
      while (d < Tmin && c.ids(b, d) == r.ids(b, d)) ++d;
      rules[static_cast<std::size_t>(b)].start = rules[static_cast<std::size_t>(B + b)].start = d;
    }
  }
  if (opt.ld_alpha != 1.0) {
    const auto count = [](const seq_side_problem<R>& s, std::int64_t b, std::int64_t start) {
      const std::uint8_t* m = s.mask.data() ? s.layout.row(s.mask, b) : nullptr;
      std::int64_t n = 0;
      for (std::int64_t t = std::min(start, s.layout.length(b)); t < s.layout.length(b); ++t) n += m ? m[t] : 1;
      return n;
    };
    for (std::int64_t b = 0; b < B; ++b) {
      auto& rc = rules[static_cast<std::size_t>(b)];
      auto& rr = rules[static_cast<std::size_t>(B + b)];
      rc.shared = rr.shared = std::min(count(c, b, rc.start), count(r, b, rr.start));
    }
  }
  return rules;
}

template <class R>
struct pair_setup {
  seq_side_problem<R> c, r;
  std::vector<pair_row_rule> rules;
};

template <class R>
pair_setup<R> make_pair_setup(std::string_view call, const token_side<R>& chosen, const token_side<R>& rejected,
                              const pair_logps_options& opt, bool check_values) {
  pair_setup<R> s;
  const auto side = [&](const token_side<R>& t, std::string_view ln, std::string_view mn) {
    if (check_values) return make_side<R>(call, ln, mn, t.logp, t.mask, {});
    const row_layout L = make_layout(call, ln, t.logp, {});
    if (t.mask.data()) require_like(call, mn, t.mask, ln, t.logp);
    check_mask_values(call, t.mask, L, mn);
    return seq_side_problem<R>{t.logp, t.mask, L, {}};
  };
  s.c = side(chosen, "chosen.logp", "chosen.mask");
  s.r = side(rejected, "rejected.logp", "rejected.mask");
  s.c.ids = chosen.ids;
  s.r.ids = rejected.ids;
  s.rules = pair_rules(call, s.c, s.r, opt);
  return s;
}

struct pair_sequence_logps_fn {
  /// Sequence log-probs of chosen and rejected under the pair rules (divergence start, LD-DPO weights).
  template <backend Bk, class R>
    requires token_real<R>
  void operator()(const Bk& b, const token_side<R>& chosen, const token_side<R>& rejected, const pair_outputs<R>& out,
                  const pair_logps_options& opt = {}) const {
    constexpr std::string_view call = "cai::pair_sequence_logps";
    const auto s = make_pair_setup(call, chosen, rejected, opt, true);
    const std::int64_t B = s.c.layout.rows;
    if (!out.chosen.data() && B > 0) fail_argument(call, "out.chosen", "an output view", "none");
    if (!out.rejected.data() && B > 0) fail_argument(call, "out.rejected", "an output view", "none");
    require_per_row(call, "out.chosen", out.chosen, B);
    require_per_row(call, "out.rejected", out.rejected, B);
    sequence_logps_problem<R> p{s.c, opt.reduce, opt.ld_alpha, s.rules.data(), out.chosen, {}, {}};
    sequence_logps_cpo::dispatch(b, p);
    p.side = s.r;
    p.rules = s.rules.data() + B;
    p.out = out.rejected;
    sequence_logps_cpo::dispatch(b, p);
  }
};

struct pair_sequence_logps_backward_fn {
  /// The exact backward of pair_sequence_logps: token gradients of both sides from the two (B) upstream gradients.
  template <backend Bk, class R>
    requires token_real<R>
  void operator()(const Bk& b, const token_side<R>& chosen, const token_side<R>& rejected,
                  tensor_view<const R, 1> dchosen, tensor_view<const R, 1> drejected, const pair_token_grads<R>& grads,
                  const pair_logps_options& opt = {}) const {
    constexpr std::string_view call = "cai::pair_sequence_logps_backward";
    const auto s = make_pair_setup(call, chosen, rejected, opt, false);
    const std::int64_t B = s.c.layout.rows;
    require_per_row(call, "dchosen", dchosen, B);
    require_per_row(call, "drejected", drejected, B);
    check_finite_values(call, "dchosen", dchosen);
    check_finite_values(call, "drejected", drejected);
    check_grad_out(call, "grads.chosen", grads.chosen, "chosen.logp", chosen.logp);
    check_grad_out(call, "grads.rejected", grads.rejected, "rejected.logp", rejected.logp);
    sequence_logps_problem<R> p{s.c, opt.reduce, opt.ld_alpha, s.rules.data(), {}, dchosen, grads.chosen};
    sequence_logps_backward_cpo::dispatch(b, p);
    p.side = s.r;
    p.rules = s.rules.data() + B;
    p.dout = drejected;
    p.dlogp = grads.rejected;
    sequence_logps_backward_cpo::dispatch(b, p);
  }
};

}  // namespace detail

/// Sum or mean of each row's counted log-probs. See the header comment.
inline constexpr detail::sequence_logps_fn sequence_logps{};
/// Exact backward of sequence_logps.
inline constexpr detail::sequence_logps_backward_fn sequence_logps_backward{};
/// Chosen and rejected sequence log-probs with the pair rules (from the first differing token; LD-DPO).
inline constexpr detail::pair_sequence_logps_fn pair_sequence_logps{};
/// Exact backward of pair_sequence_logps.
inline constexpr detail::pair_sequence_logps_backward_fn pair_sequence_logps_backward{};

}  // namespace cai
