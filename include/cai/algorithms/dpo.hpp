// cai/algorithms/dpo.hpp — direct preference optimisation: the DPO family of losses over sequence log-probs.
//
// Inputs per pair i (all (B) views; sequence log-probs from cai::sequence_logps / pair_sequence_logps):
//   pc, pr  policy log-probs of the chosen and rejected completions;   rc, rr  reference log-probs (constants)
//   rho_c = pc - rc, rho_r = pr - rr      (reference-free: rc = rr = 0, only with reference_free = true)
//   s(.) = the f-divergence score of a log-ratio, D = s(rho_c) - s(rho_r), Dn = s(rho_c)/|yc| - s(rho_r)/|yr|
// Losses (beta > 0; eps = label smoothing; sources: TRL trainer/dpo_trainer.py DPOTrainer._compute_loss at
// f2cd577, and DPOTrainer.dpo_loss at v0.28.0 for cDPO and the bco_pair delta; the papers cited per type):
//   sigmoid       -(1-eps) ls(beta D) - eps ls(-beta D)        DPO, Rafailov et al. 2023, arXiv 2305.18290;
//                                                              eps > 0 = cDPO (Mitchell 2023; TRL <= 0.28)
//   robust        [-(1-eps) ls(beta D) + eps ls(-beta D)] / (1 - 2 eps), eps in [0, 1/2)   arXiv 2403.00409
//   hinge         relu(1 - beta D)                             SLiC, arXiv 2305.10425 (RSO 2309.06657)
//   ipo           (Dn - 1/(2 beta))^2                          IPO, arXiv 2310.12036 (length-normalised as TRL)
//   exo_pair      q (ls(z) - log(1-eps)) + (1-q) (ls(-z) - log eps), z = beta D, q = s(z), eps in (0,1)  2402.00856
//   nca_pair      -ls(a) - ls(-a)/2 - ls(-b)/2, a = beta s(rho_c), b = beta s(rho_r)                    2402.05369
//   bco_pair      -ls(beta s(rho_c) - delta) - ls(-(beta s(rho_r) - delta))    BCO, arXiv 2404.04656; delta is
//                 the running reward mean of TRL <= 0.28 (cai::running_mean), 0 = TRL's current form
//   sppo_hard     (s(rho_c) - 1/(2 beta))^2 + (s(rho_r) + 1/(2 beta))^2                              2405.00675
//   aot           -(1-eps) ls(beta x_j) - eps ls(-beta x_j), x = sort(pc - pr) - sort(rc - rr)      AOT 2406.05882
//   aot_unpaired  the same with x = sort(rho_c) - sort(rho_r)  (TRL's former "aot_pair")
//   apo_zero      1 - s(beta rho_c) + s(beta rho_r)            APO, arXiv 2408.06266, eq. 7
//   apo_down      s(beta rho_c) + 1 - s(beta D)                APO, eq. 8
//   discopop      (1 - m) (-ls(z)) + m e^-z, z = beta D, m = s(z / tau) (not detached), tau = 0.05     2406.08414
//   sigmoid_norm  -ls(beta Dn)                                 TRL (SimPO appendix / Tulu 3 length norm)
//   sft           NLL of the chosen completions: -sum_i pc_i / sum_i |yc_i| (a batch scalar, pc being sums)
// where ls = log sigmoid, s = sigmoid (the logistic s(x); the f-divergence score s(rho) is written with rho).
// f-divergence scores (TRL f_divergence_type; Wang et al. 2023, arXiv 2309.16240):
//   reverse_kl  s = rho;  forward_kl  s = -e^-rho;  js_divergence  s = ls(rho);
//   alpha{a}    s = e^t / (a - 1), t = min((a - 1) rho, 80)  (ds/drho = e^t where unclamped, else 0; |a-1| < 1e-6: s = rho)
// D feeds sigmoid, robust, hinge, ipo, exo_pair, discopop, sigmoid_norm and the second term of apo_down;
// nca_pair, bco_pair and sppo_hard take s(rho_c), s(rho_r); apo_zero, the first term of apo_down and the aot
// losses take the raw log-ratios — exactly where TRL applies the transform.
//
// Batch: loss = sum_k w_k mean_i(W_i l_k,i) for a mix (RPO = sigmoid + alpha sft, arXiv 2404.19733; MPO = 0.8
// sigmoid + 0.2 bco_pair + sft, arXiv 2411.10442), W_i the optional per-pair weights (WPO, arXiv 2406.11827:
// detached; cai::wpo_weights computes them), 1 by default. The sft term counts as mean_i(W_i) * NLL.
// Gradients: exact d loss / d pc, pr, rc, rr (the reference gradients are -d/dpc, -d/dpr: useful when the
// reference is itself trained, as in TR-DPO); at kinks (hinge at beta D = 1, the alpha clamp, ties in the aot sort)
// they follow PyTorch autograd (relu'(0) = 0, clamp passes at the bound, sort's permutation is stable here).
// Metrics (TRL): rewards chosen = mean beta rho_c, rejected = mean beta rho_r, margin, accuracy = mean 1[rho_c >
// rho_r]; beta of the first member of a mix; rho is the plain log-ratio whatever the divergence.
//
//   auto r = cai::dpo_loss(cai::host{}, cai::dpo::sigmoid{.beta = 0.1}, batch, grads);
//   auto m = cai::dpo_loss(cai::host{}, cai::dpo::mix{cai::dpo::sigmoid{}, cai::dpo::sft{}}.weighted(1.0, 1.0), batch, grads);
//   auto d = cai::dpo_loss(cai::host{}, cai::dpo::from_string("0.8*sigmoid + 0.2*bco_pair + sft", "js"), batch, grads);
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numeric>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/tensor_view.hpp"
#include "config_text.hpp"
#include "dispatch.hpp"
#include "preference.hpp"
#include "sequences.hpp"

namespace cai {

/// A pair batch of sequence log-probs, (B) each. Lengths (completion token counts) are needed by ipo,
/// sigmoid_norm and sft; weights are optional per-pair weights W_i (WPO), treated as constants.
template <class R>
struct dpo_batch {
  tensor_view<const R, 1> chosen{}, rejected{};          ///< policy pc, pr
  tensor_view<const R, 1> ref_chosen{}, ref_rejected{};  ///< reference rc, rr (empty only with reference_free)
  tensor_view<const std::int64_t, 1> chosen_lengths{}, rejected_lengths{};
  tensor_view<const R, 1> weights{};
};

/// Gradients of the loss w.r.t. each float input (any may be empty), and the optional per-pair loss.
template <class R>
struct dpo_grads {
  tensor_view<R, 1> chosen{}, rejected{}, ref_chosen{}, ref_rejected{};
  tensor_view<R, 1> losses{};  ///< (B) sum_k w_k l_k,i (the sft share included); the aot members by sorted rank
};

struct dpo_options {
  bool reference_free = false;  ///< rho = pc, pr (no reference views may be given)
};

// ----- f-divergence scores ---------------------------------------------------------------------------------------

namespace fdiv {

struct score {
  double s, ds;
};

struct reverse_kl {
  CAI_HD score operator()(double rho) const noexcept { return {rho, 1.0}; }
};
struct forward_kl {
  CAI_HD score operator()(double rho) const noexcept {
    const double e = std::exp(-rho);
    return {-e, e};
  }
};
struct js_divergence {
  CAI_HD score operator()(double rho) const noexcept { return {log_sigmoid(rho), sigmoid(-rho)}; }
};
struct alpha_divergence {
  double alpha = 0.5;  ///< TRL f_alpha_divergence_coef (current default 0.5)
  CAI_HD score operator()(double rho) const noexcept {
    const double a1 = alpha - 1.0;
    if (std::fabs(a1) < 1e-6) return {rho, 1.0};
    const double t = a1 * rho;
    if (t > 80.0) return {std::exp(80.0) / a1, 0.0};  // torch.clamp(max = 80): the gradient stops above the bound
    const double e = std::exp(t);
    return {e / a1, e};
  }
};

/// A divergence chosen at run time (one scalar switch; no variant, so a run-time loss instantiates once).
struct any {
  enum class kind : std::uint8_t { reverse_kl, forward_kl, js_divergence, alpha_divergence };
  kind k = kind::reverse_kl;
  double alpha = 0.5;
  CAI_HD score operator()(double rho) const noexcept {
    switch (k) {
      case kind::forward_kl: return forward_kl{}(rho);
      case kind::js_divergence: return js_divergence{}(rho);
      case kind::alpha_divergence: return alpha_divergence{alpha}(rho);
      default: return reverse_kl{}(rho);
    }
  }
};

/// reverse_kl | forward_kl | js_divergence (js) | alpha_divergence[:alpha=] (alpha), as TRL's f_divergence_type.
inline any from_name(std::string_view text) {
  namespace cfg = cai::detail::config;
  auto s = cfg::parse("divergence", text);
  any a;
  if (s.name == "reverse_kl") a.k = any::kind::reverse_kl;
  else if (s.name == "forward_kl") a.k = any::kind::forward_kl;
  else if (s.name == "js_divergence" || s.name == "js") a.k = any::kind::js_divergence;
  else if (s.name == "alpha_divergence" || s.name == "alpha") {
    a.k = any::kind::alpha_divergence;
    a.alpha = s.number("alpha", a.alpha);
  } else cfg::unknown("divergence", s.name, "reverse_kl, forward_kl, js_divergence, alpha_divergence[:alpha=]");
  s.finish();
  return a;
}

}  // namespace fdiv

template <class F>
concept f_divergence = requires(const F& f, double r) {
  { f(r) } -> std::same_as<fdiv::score>;
};

// ----- the losses ------------------------------------------------------------------------------------------------

namespace dpo {

/// What a pointwise loss sees of pair i: the scores s(rho), the raw log-ratios, and the completion lengths.
struct pair_point {
  double sc, sr;      // s(rho_c), s(rho_r)
  double rc, rr;      // rho_c, rho_r
  double lc, lr;      // |yc|, |yr| (>= 1; 1 when no lengths are given)
};

/// A loss value and its partial derivatives w.r.t. the scores and the raw log-ratios.
struct pair_value {
  double loss = 0.0;
  double dsc = 0.0, dsr = 0.0;
  double drc = 0.0, drr = 0.0;
};

namespace detail {
CAI_HD inline double ls(double x) noexcept { return log_sigmoid(x); }
CAI_HD inline double sg(double x) noexcept { return sigmoid(x); }
/// -(1-eps) ls(z) - eps ls(-z) and its derivative in z.
CAI_HD inline void smoothed_logistic(double z, double eps, double& l, double& dz) noexcept {
  l = -(1.0 - eps) * ls(z) - eps * ls(-z);
  dz = -(1.0 - eps) * sg(-z) + eps * sg(z);
}
}  // namespace detail

struct sigmoid {
  double beta = 0.1;
  double label_smoothing = 0.0;  ///< cDPO eps in [0, 1/2]
  static constexpr std::string_view name = "sigmoid";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    double l, dz;
    detail::smoothed_logistic(beta * (p.sc - p.sr), label_smoothing, l, dz);
    return {l, beta * dz, -beta * dz, 0.0, 0.0};
  }
};

struct robust {
  double beta = 0.1;
  double label_smoothing = 0.0;  ///< eps in [0, 1/2)
  static constexpr std::string_view name = "robust";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double z = beta * (p.sc - p.sr), e = label_smoothing, k = 1.0 / (1.0 - 2.0 * e);
    const double l = (-(1.0 - e) * detail::ls(z) + e * detail::ls(-z)) * k;
    const double dz = (-(1.0 - e) * detail::sg(-z) - e * detail::sg(z)) * k;
    return {l, beta * dz, -beta * dz, 0.0, 0.0};
  }
};

struct hinge {
  double beta = 0.1;
  static constexpr std::string_view name = "hinge";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double u = 1.0 - beta * (p.sc - p.sr);
    const double dz = u > 0.0 ? -1.0 : 0.0;  // relu'(0) = 0, as torch
    return {u > 0.0 ? u : 0.0, beta * dz, -beta * dz, 0.0, 0.0};
  }
};

struct ipo {
  double beta = 0.1;
  static constexpr std::string_view name = "ipo";
  static constexpr bool needs_lengths = true;
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double u = p.sc / p.lc - p.sr / p.lr - 1.0 / (2.0 * beta);
    return {u * u, 2.0 * u / p.lc, -2.0 * u / p.lr, 0.0, 0.0};
  }
};

struct exo_pair {
  double beta = 0.1;
  double label_smoothing = 1e-3;  ///< eps in (0, 1); TRL recommends 1e-3
  static constexpr std::string_view name = "exo_pair";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double z = beta * (p.sc - p.sr), e = label_smoothing, q = detail::sg(z);
    const double l = q * (detail::ls(z) - std::log1p(-e)) + (1.0 - q) * (detail::ls(-z) - std::log(e));
    const double dz = q * (1.0 - q) * (z - std::log((1.0 - e) / e));
    return {l, beta * dz, -beta * dz, 0.0, 0.0};
  }
};

struct nca_pair {
  double beta = 0.1;
  static constexpr std::string_view name = "nca_pair";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double a = beta * p.sc, b = beta * p.sr;
    const double l = -detail::ls(a) - 0.5 * detail::ls(-a) - 0.5 * detail::ls(-b);
    const double da = -detail::sg(-a) + 0.5 * detail::sg(a), db = 0.5 * detail::sg(b);
    return {l, beta * da, beta * db, 0.0, 0.0};
  }
};

struct bco_pair {
  double beta = 0.1;
  double delta = 0.0;  ///< reward shift (TRL <= 0.28: running mean of beta * rho; see cai::running_mean)
  static constexpr std::string_view name = "bco_pair";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double a = beta * p.sc - delta, b = beta * p.sr - delta;
    return {-detail::ls(a) - detail::ls(-b), -beta * detail::sg(-a), beta * detail::sg(b), 0.0, 0.0};
  }
};

struct sppo_hard {
  double beta = 0.1;
  static constexpr std::string_view name = "sppo_hard";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double h = 1.0 / (2.0 * beta), a = p.sc - h, b = p.sr + h;
    return {a * a + b * b, 2.0 * a, 2.0 * b, 0.0, 0.0};
  }
};

struct apo_zero {
  double beta = 0.1;
  static constexpr std::string_view name = "apo_zero";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double sc = detail::sg(beta * p.rc), sr = detail::sg(beta * p.rr);
    return {1.0 - sc + sr, 0.0, 0.0, -beta * sc * (1.0 - sc), beta * sr * (1.0 - sr)};
  }
};

struct apo_down {
  double beta = 0.1;
  static constexpr std::string_view name = "apo_down";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double sc = detail::sg(beta * p.rc), sd = detail::sg(beta * (p.sc - p.sr));
    const double dz = -beta * sd * (1.0 - sd);
    return {sc + 1.0 - sd, dz, -dz, beta * sc * (1.0 - sc), 0.0};
  }
};

struct discopop {
  double beta = 0.1;
  double tau = 0.05;  ///< TRL discopop_tau
  static constexpr std::string_view name = "discopop";
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double z = beta * (p.sc - p.sr), m = detail::sg(z / tau), lz = detail::ls(z);
    const double mez = std::exp(detail::ls(z / tau) - z);  // m e^-z, finite where e^-z alone overflows (z << 0)
    const double l = (1.0 - m) * (-lz) + mez;
    const double dz = (1.0 - m) / tau * (mez + m * lz) - (1.0 - m) * detail::sg(-z) - mez;
    return {l, beta * dz, -beta * dz, 0.0, 0.0};
  }
};

struct sigmoid_norm {
  double beta = 0.1;
  static constexpr std::string_view name = "sigmoid_norm";
  static constexpr bool needs_lengths = true;
  CAI_HD pair_value operator()(const pair_point& p) const noexcept {
    const double z = beta * (p.sc / p.lc - p.sr / p.lr), dz = -beta * detail::sg(-z);
    return {-detail::ls(z), dz / p.lc, -dz / p.lr, 0.0, 0.0};
  }
};

/// AOT (batch-sorted): the losses of the sorted differences; `unpaired` = TRL aot_unpaired.
struct aot {
  double beta = 0.1;
  double label_smoothing = 0.0;
  bool unpaired = false;
  static constexpr std::string_view name = "aot";
  static constexpr bool batch_sorted = true;
};

/// The chosen completions' negative log-likelihood per token (RPO's and MPO's SFT term).
struct sft {
  static constexpr std::string_view name = "sft";
  static constexpr bool needs_lengths = true;
  static constexpr bool batch_nll = true;
  static constexpr double beta = 0.0;  ///< no reward scale of its own (the metrics use the mix's first beta)
};

template <class L>
concept pointwise_loss = requires(const L& l, const pair_point& p) {
  { l(p) } -> std::same_as<pair_value>;
  { l.beta } -> std::convertible_to<double>;
};

template <class L>
concept loss = pointwise_loss<L> || std::same_as<L, aot> || std::same_as<L, sft>;

/// A weighted sum of losses, sum_k w_k L_k (RPO, MPO, or any other mix). mix{a, b}.weighted(1.0, 0.5).
template <loss... Ls>
  requires(sizeof...(Ls) >= 1)
struct mix {
  std::tuple<Ls...> parts;
  std::array<double, sizeof...(Ls)> weights;
  constexpr mix(Ls... ls) : parts(ls...) { weights.fill(1.0); }
  template <class... W>
    requires(sizeof...(W) == sizeof...(Ls))
  constexpr mix weighted(W... w) const {
    mix m = *this;
    m.weights = {static_cast<double>(w)...};
    return m;
  }
};

/// RPO (Pang et al. 2024, arXiv 2404.19733): DPO sigmoid plus alpha times the chosen NLL.
inline mix<sigmoid, sft> rpo(double beta = 0.1, double alpha = 1.0) { return mix{sigmoid{.beta = beta}, sft{}}.weighted(1.0, alpha); }
/// MPO (Wang et al. 2024, arXiv 2411.10442; TRL's recipe): 0.8 sigmoid + 0.2 bco_pair + 1.0 sft.
inline mix<sigmoid, bco_pair, sft> mpo(double beta = 0.1) {
  return mix{sigmoid{.beta = beta}, bco_pair{.beta = beta}, sft{}}.weighted(0.8, 0.2, 1.0);
}

template <class T>
inline constexpr bool is_mix_v = false;
template <class... Ls>
inline constexpr bool is_mix_v<mix<Ls...>> = true;

/// A loss (or mix) with an f-divergence other than the reverse KL (one divergence: no nesting).
template <class Loss, f_divergence F>
  requires(loss<Loss> || is_mix_v<Loss>)
struct with_divergence {
  Loss loss;
  F divergence;
};

/// Any one loss, chosen at run time.
using any = std::variant<sigmoid, robust, hinge, ipo, exo_pair, nca_pair, bco_pair, sppo_hard, apo_zero, apo_down,
                         discopop, sigmoid_norm, aot, sft>;

/// A weighted mix chosen at run time (TRL's loss_type list with loss_weights, and f_divergence_type).
struct dynamic {
  std::vector<any> losses;
  std::vector<double> weights;  ///< one per loss
  fdiv::any divergence{};
};

/// One loss from NAME[:KEY=VALUE,...] with TRL's names and keys (beta, label_smoothing, tau, delta) — sigmoid,
/// robust, hinge, ipo, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired (aot_pair), apo_zero, apo_down,
/// discopop, sigmoid_norm, sft.
inline any loss_from_name(std::string_view text) {
  namespace cfg = cai::detail::config;
  auto s = cfg::parse("dpo_loss", text);
  const auto b = [&](auto l) {
    l.beta = s.number("beta", l.beta);
    if constexpr (requires { l.label_smoothing; }) l.label_smoothing = s.number("label_smoothing", l.label_smoothing);
    return l;
  };
  any out;
  const std::string& n = s.name;
  if (n == "sigmoid") out = b(sigmoid{});
  else if (n == "robust") out = b(robust{});
  else if (n == "hinge") out = b(hinge{});
  else if (n == "ipo") out = b(ipo{});
  else if (n == "exo_pair") out = b(exo_pair{});
  else if (n == "nca_pair") out = b(nca_pair{});
  else if (n == "bco_pair") {
    bco_pair l = b(bco_pair{});
    l.delta = s.number("delta", l.delta);
    out = l;
  } else if (n == "sppo_hard") out = b(sppo_hard{});
  else if (n == "aot" || n == "aot_unpaired" || n == "aot_pair") {
    aot l = b(aot{});
    l.unpaired = n != "aot";
    out = l;
  } else if (n == "apo_zero") out = b(apo_zero{});
  else if (n == "apo_down") out = b(apo_down{});
  else if (n == "discopop") {
    discopop l = b(discopop{});
    l.tau = s.number("tau", l.tau);
    out = l;
  } else if (n == "sigmoid_norm") out = b(sigmoid_norm{});
  else if (n == "sft") out = sft{};
  else
    cfg::unknown("dpo_loss", n,
                 "sigmoid, robust, hinge, ipo, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, "
                 "apo_down, discopop, sigmoid_norm, sft");
  s.finish();
  return out;
}

/// A run-time mix from "[W*]LOSS[:ARGS] + [W*]LOSS[:ARGS] ..." (weights default to 1) and a divergence name, e.g.
/// dpo::from_string("0.8*sigmoid:beta=0.1 + 0.2*bco_pair:beta=0.1 + sft") (MPO) or ("sigmoid + 0.5*sft") (RPO).
inline dynamic from_string(std::string_view text, std::string_view divergence = "reverse_kl") {
  namespace cfg = cai::detail::config;
  dynamic d;
  for (std::string_view term : cfg::split(text, '+')) {
    if (term.empty()) cai::detail::fail_argument("cai::dpo::from_string", "text", "terms [W*]LOSS separated by '+'", cai::detail::concat("'", text, "'"));
    double w = 1.0;
    const std::size_t star = term.find('*');
    if (star != std::string_view::npos) {
      const std::string_view ws = cfg::trim(term.substr(0, star));
      const auto [end, ec] = std::from_chars(ws.data(), ws.data() + ws.size(), w);
      if (ec != std::errc{} || end != ws.data() + ws.size() || ws.empty())
        cai::detail::fail_argument("cai::dpo::from_string", "weight", "a number before '*'", cai::detail::concat("'", ws, "'"));
      term = cfg::trim(term.substr(star + 1));
    }
    d.losses.push_back(loss_from_name(term));
    d.weights.push_back(w);
  }
  d.divergence = fdiv::from_name(divergence);
  return d;
}

}  // namespace dpo

template <class R>
struct dpo_problem {
  dpo_batch<R> in;
  dpo_grads<R> out;
  bool reference_free = false;
};

namespace detail {

template <class L>
constexpr bool loss_needs_lengths() {
  if constexpr (requires { L::needs_lengths; }) return L::needs_lengths;
  else return false;
}

template <class Spec>
struct dpo_spec_traits {  // a single loss
  using divergence = fdiv::reverse_kl;
  static auto parts(const Spec& s) { return std::tuple<Spec>{s}; }
  static std::array<double, 1> weights(const Spec&) { return {1.0}; }
  static divergence div(const Spec&) { return {}; }
};
template <class... Ls>
struct dpo_spec_traits<dpo::mix<Ls...>> {
  using divergence = fdiv::reverse_kl;
  static auto parts(const dpo::mix<Ls...>& s) { return s.parts; }
  static auto weights(const dpo::mix<Ls...>& s) { return s.weights; }
  static divergence div(const dpo::mix<Ls...>&) { return {}; }
};
template <>
struct dpo_spec_traits<dpo::dynamic> {
  using divergence = fdiv::any;
  static divergence div(const dpo::dynamic& s) { return s.divergence; }
};
template <class Loss, class F>
struct dpo_spec_traits<dpo::with_divergence<Loss, F>> {
  using divergence = F;
  static auto parts(const dpo::with_divergence<Loss, F>& s) { return dpo_spec_traits<Loss>::parts(s.loss); }
  static auto weights(const dpo::with_divergence<Loss, F>& s) { return dpo_spec_traits<Loss>::weights(s.loss); }
  static F div(const dpo::with_divergence<Loss, F>& s) { return s.divergence; }
};

/// Accumulates d loss / d pc, pr, rc, rr and the per-pair loss.
struct dpo_accum {
  std::vector<double> dpc, dpr, drc, drr, losses;
  explicit dpo_accum(std::size_t n) : dpc(n, 0.0), dpr(n, 0.0), drc(n, 0.0), drr(n, 0.0), losses(n, 0.0) {}
  void add_rho(std::size_t i, double dc, double dr) noexcept {  // d loss / d rho_c, rho_r
    dpc[i] += dc;
    drc[i] -= dc;
    dpr[i] += dr;
    drr[i] -= dr;
  }
};

template <class R>
struct dpo_view {
  const dpo_problem<R>& p;
  std::int64_t n;
  double pc(std::int64_t i) const { return static_cast<double>(p.in.chosen(i)); }
  double pr(std::int64_t i) const { return static_cast<double>(p.in.rejected(i)); }
  double rc(std::int64_t i) const { return p.reference_free ? 0.0 : static_cast<double>(p.in.ref_chosen(i)); }
  double rr(std::int64_t i) const { return p.reference_free ? 0.0 : static_cast<double>(p.in.ref_rejected(i)); }
  double w(std::int64_t i) const { return p.in.weights.data() ? static_cast<double>(p.in.weights(i)) : 1.0; }
  double lc(std::int64_t i) const {
    return p.in.chosen_lengths.data() ? static_cast<double>(std::max<std::int64_t>(p.in.chosen_lengths(i), 1)) : 1.0;
  }
  double lr(std::int64_t i) const {
    return p.in.rejected_lengths.data() ? static_cast<double>(std::max<std::int64_t>(p.in.rejected_lengths(i), 1)) : 1.0;
  }
};

/// One pair's term of a per-pair loss l under divergence f, with k = member weight * pair weight and inv = 1 / n:
/// loss = k l, and the gradients d(mean loss)/d rho_c, d rho_r (rho = policy - reference log-prob of a side).
/// Written once for the host loop below and the device path (kernels/batched.hpp).
struct pair_terms {
  double loss, dc, dr;
};
template <class L, class F>
CAI_HD pair_terms dpo_pair_terms(const L& l, const F& f, double k, double inv, double rc, double rr, double lc,
                                 double lr) noexcept {
  const fdiv::score fc = f(rc), fr = f(rr);
  const dpo::pair_value pv = l(dpo::pair_point{fc.s, fr.s, rc, rr, lc, lr});
  return {k * pv.loss, k * inv * (pv.dsc * fc.ds + pv.drc), k * inv * (pv.dsr * fr.ds + pv.drr)};
}

/// Adds weight * mean_i(W_i l_i) of one member to the total; returns its contribution.
template <class L, class F, class R>
double dpo_member(const L& l, const F& f, double weight, const dpo_view<R>& v, dpo_accum& acc) {
  const std::int64_t n = v.n;
  const double inv = 1.0 / static_cast<double>(n);
  double total = 0.0;
  if constexpr (std::same_as<L, dpo::sft>) {
    // NLL = -sum pc / sum |yc|: one scalar for the batch, weighted by mean(W) (TRL broadcasts it to every pair).
    double len = 0.0, s = 0.0, wbar = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      len += static_cast<double>(v.p.in.chosen_lengths(i));
      s += v.pc(i);
      wbar += v.w(i);
    }
    wbar *= inv;
    if (len <= 0.0) return 0.0;  // no chosen tokens at all: the term is 0 (cross-entropy over nothing)
    const double nll = -s / len;
    for (std::int64_t i = 0; i < n; ++i) {
      acc.dpc[static_cast<std::size_t>(i)] += -weight * wbar / len;
      acc.losses[static_cast<std::size_t>(i)] += weight * nll * v.w(i);
    }
    return weight * wbar * nll;
  } else if constexpr (std::same_as<L, dpo::aot>) {
    std::vector<double> x(static_cast<std::size_t>(n)), y(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      x[static_cast<std::size_t>(i)] = l.unpaired ? v.pc(i) - v.rc(i) : v.pc(i) - v.pr(i);
      y[static_cast<std::size_t>(i)] = l.unpaired ? v.pr(i) - v.rr(i) : v.rc(i) - v.rr(i);
    }
    std::vector<std::int64_t> px(static_cast<std::size_t>(n)), py(static_cast<std::size_t>(n));
    std::iota(px.begin(), px.end(), std::int64_t{0});
    std::iota(py.begin(), py.end(), std::int64_t{0});
    std::stable_sort(px.begin(), px.end(), [&](auto a, auto b) { return x[static_cast<std::size_t>(a)] < x[static_cast<std::size_t>(b)]; });
    std::stable_sort(py.begin(), py.end(), [&](auto a, auto b) { return y[static_cast<std::size_t>(a)] < y[static_cast<std::size_t>(b)]; });
    for (std::int64_t j = 0; j < n; ++j) {
      const auto a = static_cast<std::size_t>(px[static_cast<std::size_t>(j)]), b = static_cast<std::size_t>(py[static_cast<std::size_t>(j)]);
      double lj, dz;
      dpo::detail::smoothed_logistic(l.beta * (x[a] - y[b]), l.label_smoothing, lj, dz);
      total += lj;
      acc.losses[static_cast<std::size_t>(j)] += weight * lj;
      const double g = weight * inv * l.beta * dz;  // d loss / d (x_a - y_b)
      if (l.unpaired) {  // x = rho_c of pair a, y = rho_r of pair b
        acc.add_rho(a, g, 0.0);
        acc.add_rho(b, 0.0, -g);
      } else {  // x = pc - pr of pair a, y = rc - rr of pair b
        acc.dpc[a] += g;
        acc.dpr[a] -= g;
        acc.drc[b] -= g;
        acc.drr[b] += g;
      }
    }
    return weight * total * inv;
  } else {
    for (std::int64_t i = 0; i < n; ++i) {
      const pair_terms t = dpo_pair_terms(l, f, weight * v.w(i), inv, v.pc(i) - v.rc(i), v.pr(i) - v.rr(i), v.lc(i), v.lr(i));
      total += t.loss;
      acc.losses[static_cast<std::size_t>(i)] += t.loss;
      acc.add_rho(static_cast<std::size_t>(i), t.dc, t.dr);
    }
    return total * inv;
  }
}

template <class Spec>
double first_beta(const Spec& spec) {
  if constexpr (std::same_as<Spec, dpo::dynamic>) {
    return spec.losses.empty() ? 0.0 : std::visit([](const auto& l) { return static_cast<double>(l.beta); }, spec.losses.front());
  } else {
    const auto parts = dpo_spec_traits<Spec>::parts(spec);
    return std::get<0>(parts).beta;
  }
}

/// Calls f(loss, weight) for each member of a spec (a loss, a mix, with_divergence, or dpo::dynamic).
template <class Spec, class F>
void for_each_member(const Spec& spec, F&& f) {
  if constexpr (std::same_as<Spec, dpo::dynamic>) {
    for (std::size_t k = 0; k < spec.losses.size(); ++k) std::visit([&](const auto& l) { f(l, spec.weights[k]); }, spec.losses[k]);
  } else {
    const auto parts = dpo_spec_traits<Spec>::parts(spec);
    const auto weights = dpo_spec_traits<Spec>::weights(spec);
    [&]<std::size_t... K>(std::index_sequence<K...>) {
      (f(std::get<K>(parts), weights[K]), ...);
    }(std::make_index_sequence<std::tuple_size_v<std::remove_cvref_t<decltype(parts)>>>{});
  }
}

}  // namespace detail

namespace generic {

template <bulk_backend B, class Spec, class R>
preference_result dpo_loss(const B&, const Spec& spec, const dpo_problem<R>& p) {
  using T = detail::dpo_spec_traits<Spec>;
  const std::int64_t n = p.in.chosen.extent(0);
  if (n == 0) return {};
  detail::dpo_view<R> v{p, n};
  detail::dpo_accum acc(static_cast<std::size_t>(n));
  const auto f = T::div(spec);
  double loss = 0.0;
  detail::for_each_member(spec, [&](const auto& l, double w) { loss += detail::dpo_member(l, f, w, v, acc); });
  const double beta = detail::first_beta(spec);
  pair_metrics_sum ms;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    ms.add(beta * (v.pc(i) - v.rc(i)), beta * (v.pr(i) - v.rr(i)));
    if (p.out.chosen.data()) p.out.chosen(i) = static_cast<R>(acc.dpc[k]);
    if (p.out.rejected.data()) p.out.rejected(i) = static_cast<R>(acc.dpr[k]);
    if (p.out.ref_chosen.data()) p.out.ref_chosen(i) = static_cast<R>(acc.drc[k]);
    if (p.out.ref_rejected.data()) p.out.ref_rejected(i) = static_cast<R>(acc.drr[k]);
    if (p.out.losses.data()) p.out.losses(i) = static_cast<R>(acc.losses[k]);
  }
  return {loss, ms.finish()};
}

}  // namespace generic

CAI_DETAIL_DISPATCH_CONFIGURED(dpo_loss)

namespace detail {

template <class L>
void check_dpo_member(std::string_view call, const L& l, bool has_weights) {
  if constexpr (!std::same_as<L, dpo::sft>) require_positive(call, concat(L::name, ".beta"), l.beta);
  if constexpr (requires { l.label_smoothing; }) {
    const double e = l.label_smoothing;
    if constexpr (std::same_as<L, dpo::robust>) {
      if (!(e >= 0.0 && e < 0.5)) fail_argument(call, "robust.label_smoothing", "a value in [0, 0.5)", e);
    } else if constexpr (std::same_as<L, dpo::exo_pair>) {
      if (!(e > 0.0 && e < 1.0)) fail_argument(call, "exo_pair.label_smoothing", "a value in (0, 1)", e);
    } else {
      if (!(e >= 0.0 && e <= 0.5)) fail_argument(call, concat(L::name, ".label_smoothing"), "a value in [0, 0.5]", e);
    }
  }
  if constexpr (std::same_as<L, dpo::discopop>) require_positive(call, "discopop.tau", l.tau);
  if constexpr (std::same_as<L, dpo::bco_pair>)
    if (!std::isfinite(l.delta)) fail_argument(call, "bco_pair.delta", "a finite value", l.delta);
  if constexpr (std::same_as<L, dpo::aot>)
    if (has_weights) fail_argument(call, "weights", "none with aot (the sorted pairs have no per-pair weight)", "weights");
}

struct dpo_loss_fn {
  /// The DPO-family loss of `spec` (a loss, a dpo::mix, or dpo::with_divergence) over a pair batch.
  template <backend Bk, class Spec, class R>
    requires token_real<R>
  preference_result operator()(const Bk& b, const Spec& spec, const dpo_batch<R>& in, const dpo_grads<R>& out = {},
                               const dpo_options& opt = {}) const {
    constexpr std::string_view call = "cai::dpo_loss";
    const std::int64_t n = in.chosen.extent(0);
    if constexpr (std::same_as<Spec, dpo::dynamic>) {
      if (spec.losses.empty()) fail_argument(call, "spec.losses", "at least one loss", "none");
      if (spec.weights.size() != spec.losses.size())
        fail_argument(call, "spec.weights", concat("one weight per loss (", spec.losses.size(), ")"), spec.weights.size());
    }
    bool lengths = false;
    std::size_t k = 0;
    for_each_member(spec, [&](const auto& l, double w) {
      check_dpo_member(call, l, in.weights.data() != nullptr);
      lengths = lengths || loss_needs_lengths<std::remove_cvref_t<decltype(l)>>();
      if (!(w >= 0.0) || !std::isfinite(w)) fail_argument(call, "mix.weights", "finite values >= 0", concat(w, " at ", k));
      ++k;
    });
    if constexpr (requires { spec.divergence.alpha; })
      if (!std::isfinite(spec.divergence.alpha)) fail_argument(call, "divergence.alpha", "a finite value", spec.divergence.alpha);
    check_pair_values(call, in.chosen, in.rejected);
    if (opt.reference_free) {
      if (in.ref_chosen.data() || in.ref_rejected.data())
        fail_argument(call, "ref_chosen", "no reference views with reference_free = true", "a view");
      if (out.ref_chosen.data() || out.ref_rejected.data())
        fail_argument(call, "grads.ref_chosen", "no reference gradients with reference_free = true", "a view");
    } else {
      if (!in.ref_chosen.data() && n > 0)
        fail_argument(call, "ref_chosen", "reference log-probs (or dpo_options::reference_free = true)", "none");
      if (!in.ref_rejected.data() && n > 0)
        fail_argument(call, "ref_rejected", "reference log-probs (or dpo_options::reference_free = true)", "none");
      if (n > 0) require_per_row(call, "ref_chosen", in.ref_chosen, n);
      if (n > 0) check_pair_values(call, in.ref_chosen, in.ref_rejected, "ref_chosen", "ref_rejected");
    }
    if (lengths) {
      const std::pair<decltype(in.chosen_lengths), const char*> lens[] = {{in.chosen_lengths, "chosen_lengths"},
                                                                          {in.rejected_lengths, "rejected_lengths"}};
      for (const auto& [v, name] : lens) {
        if (!v.data() && n > 0) fail_argument(call, name, "completion token counts (the loss is length-normalised)", "none");
        require_per_row(call, name, v, n);
        for (std::int64_t i = 0; i < n; ++i)
          if (v(i) < 0) fail_argument(call, name, "counts >= 0", concat(v(i), " at ", i));
      }
    }
    if (in.weights.data()) {
      require_per_row(call, "weights", in.weights, n);
      for (std::int64_t i = 0; i < n; ++i)
        if (!(in.weights(i) >= R(0)) || !std::isfinite(in.weights(i)))
          fail_argument(call, "weights", "finite values >= 0", concat(in.weights(i), " at ", i));
    }
    check_pair_grad(call, "grads.chosen", out.chosen, n);
    check_pair_grad(call, "grads.rejected", out.rejected, n);
    check_pair_grad(call, "grads.ref_chosen", out.ref_chosen, n);
    check_pair_grad(call, "grads.ref_rejected", out.ref_rejected, n);
    check_pair_grad(call, "grads.losses", out.losses, n);
    return dpo_loss_cpo::dispatch(b, spec, dpo_problem<R>{in, out, opt.reference_free});
  }
};

}  // namespace detail

/// DPO-family loss, metrics and exact gradients. See the header comment.
inline constexpr detail::dpo_loss_fn dpo_loss{};

}  // namespace cai
