// Tests for cai/algorithms/dpo.hpp: the DPO family of preference losses (cai::dpo_loss).
//
// Every loss, mix and f-divergence is checked twice, on the same inputs:
//   * against tests/golden/dpo.txt, written by tests/golden/gen_dpo.py: TRL's formulas (DPOTrainer._compute_loss,
//     and dpo_loss of v0.28 for cDPO and the bco_pair shift) in torch with F.logsigmoid, torch.sort, torch.clamp and
//     torch.relu, differentiated by autograd in fp64 from fp32 inputs;
//   * against a long-double reference written here from the papers' formulas (log s(x) = -log1p(e^-x), the
//     logistic s(x) = 1 / (1 + e^-x) without branches, cDPO as a soft-label cross-entropy, rDPO as the de-biased
//     combination of L(z) and L(-z), EXO as the KL divergence sum p log(p / q), the JS score as log(2u / (1 + u))
//     less log 2, DiscoPOP's e^-z s(z / tau) as e^-z / (1 + e^(-z / tau)), AOT by std::sort), whose gradients are
//     5-point central differences in long double, taken pair by pair (untouched pairs cancel exactly).
// Then the library's own gradients against central differences of its own loss along random directions at
// |beta D| = 1e-3 ... 1e3, D = 0, a batch of 1, reference-free mode, per-pair (WPO) weights, metrics, the run-time
// spec (dpo::from_string), bad input.
//
// Tolerances (|got - want| <= rel |want| + abs, abs = a factor times the largest |value| of the record):
//   loss and metrics, either storage: rel 1e-12, abs 1e-13 x scale. cai reads fp32 inputs exactly and computes in
//       double on both storages; the remaining difference is libm's exp / log1p against torch's and the order of
//       the sums (~1e-15 relative).
//   gradients and per-pair losses: double storage rel 1e-12, fp32 storage rel 2e-7 (the one rounding to fp32 on
//       output, <= 2^-24 relative, plus the double-path difference), abs 1e-13 x scale either way.
//   gradients vs the long-double 5-point differences (step h = 1e-5 x max(1, max|input| / 100); truncation
//       O(h^4) < 1e-15): the rel above + 1e-9 x the case's largest |gradient| + the differences' rounding bound
//       64 eps_ld (sum of the touched pairs' |loss| + |l_i|) / (B h) (it matters only where a loss is flat to long
//       double, e.g. s(-1000)-sized gradients, or next to the alpha clamp's 1e34-sized pairs).
//   cai's gradient vs central differences of cai's own double loss along a random direction u (step h = 1e-6 x
//       max(1, max|input| / 100)): |<g, u> - fd| <= 1e-6 sum_i |g_i u_i| + 64 eps (|L| + mean_i |l_i|) / h + 1e-14
//       (truncation O(h^2), and the loss's rounding noise divided by h).
//   fp32 storage, the same along directions whose end points are rounded to fp32 (step 1e-3 x max(1, max|input| /
//       64), at most 1/20 of the smallest gap between AOT's sorted values; the exact rounded displacement d is
//       used): 1e-3 sum_i |g_i d_i| + 64 eps (|L| + mean_i |l_i|) + 1e-12 (the fp32 end points are not symmetric
//       about x: an O(h ulp |H|) term, and O(h^3) truncation).
//   fp32 storage vs double storage on the same fp32 inputs: the loss rel 1e-12; gradients and per-pair losses rel
//       2e-7, abs fp32's denorm_min (values below fp32's normal range).
#include <cai/algorithms/dpo.hpp>
#include <cai/core/host.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../golden/golden.hpp"
#include "../support.hpp"

namespace {

namespace dpo = cai::dpo;
namespace fdiv = cai::fdiv;
using ld = long double;
using cai_test::golden;

const golden& gold() {
  static const golden g("dpo.txt");
  return g;
}

// ----- data and the library call -----------------------------------------------------------------------------------

/// A pair batch: v = {pc, pr, rc, rr} (fp32-representable values held in double), lengths, weights.
struct pairs {
  std::array<std::vector<double>, 4> v;
  std::vector<std::int64_t> lc, lr;
  std::vector<double> w;
  std::size_t size() const { return v[0].size(); }
};

const char* const group_name[4] = {"chosen", "rejected", "ref_chosen", "ref_rejected"};

std::vector<std::int64_t> as_counts(const std::vector<double>& x) {
  std::vector<std::int64_t> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<std::int64_t>(x[i]);
  return out;
}

pairs golden_set(const std::string& set) {
  const auto& g = gold();
  pairs d;
  d.v = {g[set + ".pc"], g[set + ".pr"], g[set + ".rc"], g[set + ".rr"]};
  d.lc = as_counts(g[set + ".lc"]);
  d.lr = as_counts(g[set + ".lr"]);
  d.w = g[set + ".w"];
  return d;
}

template <class R>
std::vector<R> to(const std::vector<double>& x) {
  std::vector<R> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<R>(x[i]);
  return out;
}
template <class R>
std::vector<double> from(const std::vector<R>& x) {
  std::vector<double> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<double>(x[i]);
  return out;
}

struct call {
  bool weights = false;   ///< pass pairs::w as the per-pair weights
  bool ref_free = false;  ///< dpo_options::reference_free, no reference views
};

struct outcome {
  double loss = 0.0;
  cai::pair_metrics metrics{};
  std::array<std::vector<double>, 4> grad;  ///< d loss / d pc, pr, rc, rr (rc, rr empty when reference-free)
  std::vector<double> losses;
};

template <class R, class Spec>
outcome run(const Spec& spec, const pairs& d, const call& c = {}) {
  const auto n = static_cast<std::int64_t>(d.size());
  std::array<std::vector<R>, 4> x, g;
  for (std::size_t k = 0; k < 4; ++k) {
    x[k] = to<R>(d.v[k]);
    g[k].assign(d.size(), R(-777));
  }
  const std::vector<R> w = to<R>(d.w);
  std::vector<R> l(d.size(), R(-777));
  const auto cv = [n](const std::vector<R>& v) { return cai::make_view<const R>(v.data(), {n}); };
  const auto mv = [n](std::vector<R>& v) { return cai::make_view(v.data(), {n}); };
  cai::dpo_batch<R> in{.chosen = cv(x[0]), .rejected = cv(x[1])};
  cai::dpo_grads<R> out{.chosen = mv(g[0]), .rejected = mv(g[1]), .losses = mv(l)};
  if (!c.ref_free) {
    in.ref_chosen = cv(x[2]);
    in.ref_rejected = cv(x[3]);
    out.ref_chosen = mv(g[2]);
    out.ref_rejected = mv(g[3]);
  }
  in.chosen_lengths = cai::make_view<const std::int64_t>(d.lc.data(), {n});
  in.rejected_lengths = cai::make_view<const std::int64_t>(d.lr.data(), {n});
  if (c.weights) in.weights = cv(w);
  const auto r = cai::dpo_loss(cai::host{}, spec, in, out, cai::dpo_options{.reference_free = c.ref_free});
  outcome o{r.loss, r.metrics, {}, from(l)};
  for (std::size_t k = 0; k < (c.ref_free ? 2u : 4u); ++k) o.grad[k] = from(g[k]);
  return o;
}

std::vector<double> metrics_of(const cai::pair_metrics& m) { return {m.chosen, m.rejected, m.margin, m.accuracy}; }

// ----- comparisons -------------------------------------------------------------------------------------------------

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

bool all_finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

void check_close_abs(const std::string& what, const std::vector<double>& got, const std::vector<double>& want, double rel,
                     double abs_tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(what << "[" << i << "]: got " << std::setprecision(17) << got[i] << ", want " << want[i] << " (tolerance "
              << rel * std::fabs(want[i]) + abs_tol << ")");
    CHECK(std::fabs(got[i] - want[i]) <= rel * std::fabs(want[i]) + abs_tol);
  }
}

/// rel |want| + scaled x max |want| per element.
void check_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& want, double rel,
                 double scaled) {
  check_close_abs(what, got, want, rel, scaled * max_abs(want));
}

template <class R>
struct tol {
  static constexpr bool fp32 = std::is_same_v<R, float>;
  static constexpr double value = 1e-12;            ///< loss, metrics (double arithmetic on both storages)
  static constexpr double out = fp32 ? 2e-7 : 1e-12;  ///< gradients, per-pair losses (fp32: one rounding on output)
  static constexpr double scaled = 1e-13;           ///< x the record's largest |value|
  static constexpr double fd = 1e-9;                ///< x the case's largest |gradient|, vs the long-double differences
};

// ----- the long-double reference -------------------------------------------------------------------------------------

ld lsig(ld x) { return x < 0.0L ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x)); }  // log s(x) = -log(1 + e^-x)
ld sig(ld x) { return 1.0L / (1.0L + std::exp(-x)); }

enum class K { sigmoid, robust, hinge, ipo, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm, sft };

struct term {
  K kind = K::sigmoid;
  ld weight = 1.0L;
  ld beta = 0.1L;
  ld eps = 0.0L;
  ld delta = 0.0L;
  ld tau = 0.05L;
};

enum class Dv { reverse_kl, forward_kl, js, alpha };
struct divergence {
  Dv kind = Dv::reverse_kl;
  ld a = 0.5L;
};

struct problem {
  std::vector<term> terms;
  divergence div{};
};

struct ref_in {
  std::array<std::vector<ld>, 4> v;  // pc, pr, rc, rr
  std::vector<ld> w;                 // empty: all 1
  std::vector<std::int64_t> lc, lr;
  std::size_t size() const { return v[0].size(); }
};

ref_in to_ref(const pairs& d, bool weighted, bool ref_free = false) {
  ref_in x;
  for (std::size_t k = 0; k < 4; ++k) {
    x.v[k].resize(d.size());
    for (std::size_t i = 0; i < d.size(); ++i) x.v[k][i] = (ref_free && k >= 2) ? 0.0L : static_cast<ld>(d.v[k][i]);
  }
  if (weighted)
    for (double w : d.w) x.w.push_back(static_cast<ld>(w));
  x.lc = d.lc;
  x.lr = d.lr;
  return x;
}

ld score(const divergence& f, ld rho) {
  switch (f.kind) {
    case Dv::reverse_kl: return rho;
    case Dv::forward_kl: return -std::exp(-rho);                 // f'(u) = -1/u at u = pi/pi_ref
    case Dv::js: {  // f'(u) = log(2u / (1 + u)) at u = e^rho, less the constant log 2: log(1 / (1 + 1/u))
      return -std::log1p(std::exp(-rho));
    }
    case Dv::alpha: return std::exp(std::min((f.a - 1.0L) * rho, 80.0L)) / (f.a - 1.0L);  // u^(a-1)/(a-1), t <= 80
  }
  return 0.0L;
}

/// One pair's loss from the papers' formulas (sc, sr: the scores; rc, rr: the raw log-ratios; nc, nr: lengths >= 1).
ld pointwise(const term& t, ld sc, ld sr, ld rho_c, ld rho_r, ld nc, ld nr) {
  const ld b = t.beta, e = t.eps, z = b * (sc - sr);
  switch (t.kind) {
    case K::sigmoid: {  // binary cross-entropy of P(chosen wins) = s(z) against the soft label p = 1 - e
      const ld p = 1.0L - e;
      return -p * lsig(z) - (e > 0.0L ? (1.0L - p) * lsig(-z) : 0.0L);  // log(1 - s(z)) = log s(-z)
    }
    case K::robust: {  // rDPO: ((1 - e) L(z) - e L(-z)) / (1 - 2e), L(z) = -log s(z)
      const ld Lp = -lsig(z), Lm = -lsig(-z);
      return ((1.0L - e) * Lp - e * Lm) / (1.0L - 2.0L * e);
    }
    case K::hinge: return std::max(0.0L, 1.0L - z);
    case K::ipo: {
      const ld u = sc / nc - sr / nr - 1.0L / (2.0L * b);
      return u * u;
    }
    case K::exo_pair: {  // KL( (s(z), s(-z)) || (1 - e, e) )
      const ld p1 = sig(z), p2 = sig(-z);
      return p1 * (lsig(z) - std::log(1.0L - e)) + p2 * (lsig(-z) - std::log(e));
    }
    case K::nca_pair: return -lsig(b * sc) - 0.5L * lsig(-b * sc) - 0.5L * lsig(-b * sr);
    case K::bco_pair: return -lsig(b * sc - t.delta) - lsig(t.delta - b * sr);
    case K::sppo_hard: {
      const ld h = 1.0L / (2.0L * b);
      return (sc - h) * (sc - h) + (sr + h) * (sr + h);
    }
    case K::apo_zero: return (1.0L - sig(b * rho_c)) + sig(b * rho_r);
    case K::apo_down: return sig(b * rho_c) + (1.0L - sig(z));
    case K::discopop: {
      const ld m = sig(z / t.tau);
      return -(1.0L - m) * lsig(z) + std::exp(-z) / (1.0L + std::exp(-z / t.tau));
    }
    case K::sigmoid_norm: return -lsig(b * (sc / nc - sr / nr));
    case K::aot:
    case K::aot_unpaired:
    case K::sft: break;
  }
  return std::numeric_limits<ld>::quiet_NaN();
}

/// sum_k w_k mean_i(W_i l_k,i); per_pair (optional) = sum_k w_k W_i l_k,i (aot: by sorted rank, no W).
ld ref_loss(const problem& P, const ref_in& x, std::vector<ld>* per_pair) {
  const std::size_t n = x.size();
  const auto W = [&](std::size_t i) { return x.w.empty() ? 1.0L : x.w[i]; };
  std::vector<ld> pp(n, 0.0L);
  ld total = 0.0L;
  for (const term& t : P.terms) {
    if (t.kind == K::sft) {
      ld s = 0.0L, len = 0.0L, wsum = 0.0L;
      for (std::size_t i = 0; i < n; ++i) {
        s += x.v[0][i];
        len += static_cast<ld>(x.lc[i]);
        wsum += W(i);
      }
      const ld nll = len > 0.0L ? -s / len : 0.0L;
      total += t.weight * (wsum / static_cast<ld>(n)) * nll;
      for (std::size_t i = 0; i < n; ++i) pp[i] += t.weight * W(i) * nll;
    } else if (t.kind == K::aot || t.kind == K::aot_unpaired) {
      std::vector<ld> a(n), b(n);
      for (std::size_t i = 0; i < n; ++i) {
        a[i] = t.kind == K::aot ? x.v[0][i] - x.v[1][i] : x.v[0][i] - x.v[2][i];
        b[i] = t.kind == K::aot ? x.v[2][i] - x.v[3][i] : x.v[1][i] - x.v[3][i];
      }
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      for (std::size_t j = 0; j < n; ++j) {
        const ld z = t.beta * (a[j] - b[j]);
        const ld l = -(1.0L - t.eps) * lsig(z) - t.eps * lsig(-z);
        total += t.weight * l / static_cast<ld>(n);
        pp[j] += t.weight * l;
      }
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        const ld rho_c = x.v[0][i] - x.v[2][i], rho_r = x.v[1][i] - x.v[3][i];
        const ld nc = static_cast<ld>(std::max<std::int64_t>(x.lc[i], 1)), nr = static_cast<ld>(std::max<std::int64_t>(x.lr[i], 1));
        const ld l = pointwise(t, score(P.div, rho_c), score(P.div, rho_r), rho_c, rho_r, nc, nr);
        total += t.weight * W(i) * l / static_cast<ld>(n);
        pp[i] += t.weight * W(i) * l;
      }
    }
  }
  if (per_pair) *per_pair = pp;
  return total;
}

/// 5-point central differences of ref_loss in long double, w.r.t. every input (rc, rr skipped when reference-free),
/// summed per pair: loss = sum_j pp_j / n, and the pairs an input does not touch cancel exactly, so a pair with a
/// huge loss (the alpha clamp's 1e34) does not drown the others. noise[k][i]: the rounding bound of that difference,
/// 64 eps_ld (sum_{j touched} |pp_j| + |pp_i|) / (n h).
struct ref_grad {
  std::array<std::vector<double>, 4> g, noise;
};
ref_grad ref_gradient(const problem& P, ref_in x, bool ref_free = false) {
  ld scale = 1.0L;
  for (const auto& v : x.v)
    for (ld a : v) scale = std::max(scale, std::fabs(a) / 100.0L);
  const ld h = 1e-5L * scale, n = static_cast<ld>(x.size());
  std::vector<ld> base;
  ref_loss(P, x, &base);
  ref_grad out;
  for (std::size_t k = 0; k < (ref_free ? 2u : 4u); ++k) {
    out.g[k].resize(x.size());
    out.noise[k].resize(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const ld x0 = x.v[k][i];
      std::array<std::vector<ld>, 4> pp;
      const ld steps[4] = {2 * h, h, -h, -2 * h};
      for (std::size_t s = 0; s < 4; ++s) {
        x.v[k][i] = x0 + steps[s];
        ref_loss(P, x, &pp[s]);
      }
      x.v[k][i] = x0;
      ld d = 0.0L, touched = 0.0L;
      for (std::size_t j = 0; j < x.size(); ++j) {
        d += (pp[3][j] - pp[0][j]) + 8 * (pp[1][j] - pp[2][j]);  // differences first: 0 exactly where untouched
        if (pp[0][j] != base[j] || pp[1][j] != base[j] || pp[2][j] != base[j] || pp[3][j] != base[j]) touched += std::fabs(base[j]);
      }
      out.g[k][i] = static_cast<double>(d / (12 * h * n));
      // pair i's own loss counts as touched even where the differences vanish (a loss flat to long double)
      out.noise[k][i] = static_cast<double>(64 * std::numeric_limits<ld>::epsilon() * (touched + std::fabs(base[i])) / (n * h));
    }
  }
  return out;
}

std::vector<double> ref_metrics(const problem& P, const ref_in& x) {
  const ld beta = P.terms.front().kind == K::sft ? 0.0L : P.terms.front().beta;
  ld c = 0, r = 0, a = 0;
  const std::size_t n = x.size();
  for (std::size_t i = 0; i < n; ++i) {
    const ld bc = beta * (x.v[0][i] - x.v[2][i]), br = beta * (x.v[1][i] - x.v[3][i]);
    c += bc;
    r += br;
    a += bc > br ? 1.0L : 0.0L;
  }
  const ld k = static_cast<ld>(n);
  return {static_cast<double>(c / k), static_cast<double>(r / k), static_cast<double>((c - r) / k), static_cast<double>(a / k)};
}

std::vector<double> to_double(const std::vector<ld>& v) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(v[i]);
  return out;
}

bool has_aot(const problem& P) {
  return std::any_of(P.terms.begin(), P.terms.end(), [](const term& t) { return t.kind == K::aot || t.kind == K::aot_unpaired; });
}

/// The library against the long-double reference: loss, per-pair losses, metrics and (fd) the gradients.
template <class R, class Spec>
void check_reference(const Spec& spec, const problem& P, const pairs& d, const call& c, bool fd = true) {
  using Tol = tol<R>;
  const outcome o = run<R>(spec, d, c);
  const ref_in x = to_ref(d, c.weights, c.ref_free);
  std::vector<ld> per;
  const ld L = ref_loss(P, x, &per);
  check_close("reference loss", {o.loss}, {static_cast<double>(L)}, Tol::value, Tol::scaled);
  check_close("reference per-pair losses", o.losses, to_double(per), Tol::out, Tol::scaled);
  check_close("reference metrics", metrics_of(o.metrics), ref_metrics(P, x), Tol::value, Tol::scaled);
  CHECK(o.metrics.count == static_cast<std::int64_t>(d.size()));
  if (!fd) return;
  const ref_grad G = ref_gradient(P, x, c.ref_free);
  double s = 0.0;
  for (const auto& gk : G.g) s = std::max(s, max_abs(gk));
  for (std::size_t k = 0; k < (c.ref_free ? 2u : 4u); ++k)
    for (std::size_t i = 0; i < d.size(); ++i) {
      const double got = o.grad[k][i], want = G.g[k][i], t = Tol::out * std::fabs(want) + Tol::fd * s + G.noise[k][i];
      INFO("reference gradient d/d " << group_name[k] << "[" << i << "]: got " << std::setprecision(17) << got << ", want " << want
                                     << " (tolerance " << t << ")");
      CHECK(std::fabs(got - want) <= t);
    }
}

/// The library against tests/golden/dpo.txt (torch) and against the long-double reference, float and double.
template <class R, class Spec>
void check_golden(const std::string& set, const std::string& name, const Spec& spec, const problem& P, bool weighted, bool fd) {
  using Tol = tol<R>;
  const std::string key = set + "." + name;
  INFO("case " << key << (Tol::fp32 ? ", fp32 storage" : ", fp64 storage"));
  const pairs d = golden_set(set);
  const outcome o = run<R>(spec, d, {.weights = weighted});
  const auto& g = gold();
  static const char* const field[4] = {".dpc", ".dpr", ".drc", ".drr"};
  check_close("torch loss", {o.loss}, g[key + ".loss"], Tol::value, Tol::scaled);
  for (std::size_t k = 0; k < 4; ++k)
    check_close(std::string("torch gradient d/d ") + group_name[k], o.grad[k], g[key + field[k]], Tol::out, Tol::scaled);
  check_close("torch per-pair losses", o.losses, g[key + ".losses"], Tol::out, Tol::scaled);
  check_close("torch metrics", metrics_of(o.metrics), g[key + ".metrics"], Tol::value, Tol::scaled);
  check_reference<R>(spec, P, d, {.weights = weighted}, fd);
}

template <class Spec>
void golden_case(const std::string& set, const std::string& name, const Spec& spec, const problem& P, bool weighted = false,
                 bool fd = true, bool fp32 = true) {
  check_golden<double>(set, name, spec, P, weighted, fd);
  if (fp32) check_golden<float>(set, name, spec, P, weighted, fd);
}

template <class L, class F>
dpo::with_divergence<L, F> with(const L& l, const F& f) {
  return {l, f};
}
template <class S>
constexpr bool is_with_divergence = false;
template <class L, class F>
constexpr bool is_with_divergence<dpo::with_divergence<L, F>> = true;

term T(K kind, ld beta = 0.1L, ld eps = 0.0L, ld weight = 1.0L) { return term{.kind = kind, .weight = weight, .beta = beta, .eps = eps}; }

const divergence FKL{Dv::forward_kl}, JS{Dv::js};
divergence ALPHA(ld a) { return {Dv::alpha, a}; }

// ----- every spec, for the loops -------------------------------------------------------------------------------------

template <class Spec>
struct entry {
  const char* label;
  Spec spec;
  problem ref;
  double max_m = 1e4;        ///< the largest |beta D| magnitude at which the scores are finite in double
  double max_m_fp32 = 1e4;   ///< ... and the per-pair losses fit in fp32
};
template <class Spec>
entry<Spec> E(const char* label, const Spec& spec, problem ref, double max_m = 1e4, double max_m_fp32 = 1e4) {
  return {label, spec, std::move(ref), max_m, max_m_fp32};
}

/// Every loss (beta = 0.1 throughout, so the magnitude sets' |beta D| bounds hold), the mixes, the divergences.
auto all_specs() {
  return std::make_tuple(
      E("sigmoid", dpo::sigmoid{.beta = 0.1}, {{T(K::sigmoid)}}),
      E("cdpo", dpo::sigmoid{.beta = 0.1, .label_smoothing = 0.1}, {{T(K::sigmoid, 0.1L, 0.1L)}}),
      E("robust", dpo::robust{.beta = 0.1, .label_smoothing = 0.1}, {{T(K::robust, 0.1L, 0.1L)}}),
      E("hinge", dpo::hinge{.beta = 0.1}, {{T(K::hinge)}}),
      E("ipo", dpo::ipo{.beta = 0.1}, {{T(K::ipo)}}),
      E("exo_pair", dpo::exo_pair{.beta = 0.1, .label_smoothing = 1e-3}, {{T(K::exo_pair, 0.1L, 1e-3L)}}),
      E("nca_pair", dpo::nca_pair{.beta = 0.1}, {{T(K::nca_pair)}}),
      E("bco_pair", dpo::bco_pair{.beta = 0.1}, {{T(K::bco_pair)}}),
      E("bco_pair delta 0.3", dpo::bco_pair{.beta = 0.1, .delta = 0.3}, {{term{.kind = K::bco_pair, .delta = 0.3L}}}),
      E("sppo_hard", dpo::sppo_hard{.beta = 0.1}, {{T(K::sppo_hard)}}),
      E("aot", dpo::aot{.beta = 0.1}, {{T(K::aot)}}),
      E("aot eps 0.1", dpo::aot{.beta = 0.1, .label_smoothing = 0.1}, {{T(K::aot, 0.1L, 0.1L)}}),
      E("aot_unpaired", dpo::aot{.beta = 0.1, .unpaired = true}, {{T(K::aot_unpaired)}}),
      E("apo_zero", dpo::apo_zero{.beta = 0.1}, {{T(K::apo_zero)}}),
      E("apo_down", dpo::apo_down{.beta = 0.1}, {{T(K::apo_down)}}),
      E("discopop", dpo::discopop{.beta = 0.1}, {{T(K::discopop)}}),
      E("sigmoid_norm", dpo::sigmoid_norm{.beta = 0.1}, {{T(K::sigmoid_norm)}}),
      E("sft", dpo::sft{}, {{T(K::sft, 0.0L)}}),
      E("rpo", dpo::rpo(0.1, 0.5), {{T(K::sigmoid), T(K::sft, 0.0L, 0.0L, 0.5L)}}),
      E("mpo", dpo::mpo(0.1), {{T(K::sigmoid, 0.1L, 0.0L, 0.8L), T(K::bco_pair, 0.1L, 0.0L, 0.2L), T(K::sft, 0.0L)}}),
      E("custom mix", dpo::mix{dpo::hinge{.beta = 0.1}, dpo::exo_pair{.beta = 0.1, .label_smoothing = 0.05}, dpo::apo_down{.beta = 0.1},
                               dpo::aot{.beta = 0.1, .unpaired = true}, dpo::sft{}}
                          .weighted(0.3, 1.5, 0.7, 0.4, 0.25),
        {{T(K::hinge, 0.1L, 0.0L, 0.3L), T(K::exo_pair, 0.1L, 0.05L, 1.5L), T(K::apo_down, 0.1L, 0.0L, 0.7L), T(K::aot_unpaired, 0.1L, 0.0L, 0.4L),
          T(K::sft, 0.0L, 0.0L, 0.25L)}}),
      // forward_kl: s = -e^-rho overflows double for rho < -709 (|beta D| = 1e3 here) and the losses fp32 beyond ~ 30
      E("sigmoid forward_kl", with(dpo::sigmoid{.beta = 0.1}, fdiv::forward_kl{}), {{T(K::sigmoid)}, FKL}, 30.0, 2.0),
      E("apo_down forward_kl", with(dpo::apo_down{.beta = 0.1}, fdiv::forward_kl{}), {{T(K::apo_down)}, FKL}, 30.0, 2.0),
      E("sigmoid js", with(dpo::sigmoid{.beta = 0.1}, fdiv::js_divergence{}), {{T(K::sigmoid)}, JS}),
      E("ipo js", with(dpo::ipo{.beta = 0.1}, fdiv::js_divergence{}), {{T(K::ipo)}, JS}),
      E("nca_pair js", with(dpo::nca_pair{.beta = 0.1}, fdiv::js_divergence{}), {{T(K::nca_pair)}, JS}),
      E("sigmoid alpha 0.5", with(dpo::sigmoid{.beta = 0.1}, fdiv::alpha_divergence{0.5}), {{T(K::sigmoid)}, ALPHA(0.5L)}),
      E("sigmoid alpha 0.3", with(dpo::sigmoid{.beta = 0.1}, fdiv::alpha_divergence{0.3}), {{T(K::sigmoid)}, ALPHA(0.3L)}),
      E("bco_pair alpha 0.5", with(dpo::bco_pair{.beta = 0.1}, fdiv::alpha_divergence{0.5}), {{T(K::bco_pair)}, ALPHA(0.5L)}),
      E("mpo js", with(dpo::mpo(0.1), fdiv::js_divergence{}),
        {{T(K::sigmoid, 0.1L, 0.0L, 0.8L), T(K::bco_pair, 0.1L, 0.0L, 0.2L), T(K::sft, 0.0L)}, JS}));
}

template <class Tuple, class F>
void for_each_entry(const Tuple& t, F&& f) {
  std::apply([&](const auto&... e) { (f(e), ...); }, t);
}

// ----- magnitude sets and finite differences of the library ---------------------------------------------------------

/// B pairs with beta D spread over [-m, m] at beta = 0.1 (pairs 0 and 1 at +-0.999 m when B > 1), fp32 values.
pairs magnitude_set(std::size_t B, double m, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> ref(-60.0, -5.0), u(-0.5, 0.5), wd(0.2, 1.5);
  std::uniform_int_distribution<std::int64_t> len(1, 50);
  pairs d;
  for (auto& v : d.v) v.resize(B);
  d.lc.resize(B);
  d.lr.resize(B);
  d.w.resize(B);
  const double span = m / 0.1;  // |rho| up to span / 2 each, |D| <= span
  for (std::size_t i = 0; i < B; ++i) {
    double uc = u(gen), ur = u(gen);
    if (B > 1 && i < 2) uc = ur = (i == 0 ? 0.4995 : -0.4995);
    d.v[2][i] = static_cast<double>(static_cast<float>(ref(gen)));
    d.v[3][i] = static_cast<double>(static_cast<float>(ref(gen)));
    d.v[0][i] = static_cast<double>(static_cast<float>(d.v[2][i] + span * uc));
    d.v[1][i] = static_cast<double>(static_cast<float>(d.v[3][i] - span * ur));
    d.lc[i] = len(gen);
    d.lr[i] = len(gen);
    d.w[i] = static_cast<double>(static_cast<float>(wd(gen)));
  }
  return d;
}

/// D = 0 in every pair: pc = pr and rc = rr (different across pairs).
pairs equal_set() {
  pairs d = magnitude_set(5, 1.0, 77);
  d.v[1] = d.v[0];
  d.v[3] = d.v[2];
  return d;
}

/// The smallest non-zero gap between sorted values. Exact ties are harmless here: they only occur as whole tied
/// arrays (D = 0: pc - pr = rc - rr = 0 in every pair), where every rank has the same loss and the order is moot.
double min_gap(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double g = std::numeric_limits<double>::infinity();
  for (std::size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[i - 1]) g = std::min(g, v[i] - v[i - 1]);
  return g;
}

/// The smallest gap between the values AOT sorts (its gradient follows the sort; differences must not reorder them).
double aot_gap(const pairs& d) {
  std::vector<double> a(d.size()), b(d.size()), c(d.size()), e(d.size());
  for (std::size_t i = 0; i < d.size(); ++i) {
    a[i] = d.v[0][i] - d.v[1][i];
    b[i] = d.v[2][i] - d.v[3][i];
    c[i] = d.v[0][i] - d.v[2][i];
    e[i] = d.v[1][i] - d.v[3][i];
  }
  return std::min({min_gap(a), min_gap(b), min_gap(c), min_gap(e)});
}

/// cai's gradient against central differences of cai's own double loss, one direction per input group and one
/// through all of them.
template <class Spec>
void check_directional(const Spec& spec, const pairs& d, double h, const call& c, std::uint64_t seed) {
  const outcome o = run<double>(spec, d, c);
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> nd;
  const std::size_t groups = c.ref_free ? 2 : 4;
  for (std::size_t dir = 0; dir <= groups; ++dir) {
    pairs p = d, m = d;
    double gu = 0.0, gabs = 0.0;
    for (std::size_t k = 0; k < groups; ++k) {
      if (dir != groups && dir != k) continue;
      for (std::size_t i = 0; i < d.size(); ++i) {
        const double u = nd(gen);
        p.v[k][i] += h * u;
        m.v[k][i] -= h * u;
        gu += o.grad[k][i] * u;
        gabs += std::fabs(o.grad[k][i] * u);
      }
    }
    const outcome op = run<double>(spec, p, c), om = run<double>(spec, m, c);
    const double fd = (op.loss - om.loss) / (2.0 * h);
    double per = 0.0;
    for (double l : o.losses) per += std::fabs(l);
    const double noise = 64.0 * std::numeric_limits<double>::epsilon() * (std::fabs(o.loss) + per / static_cast<double>(d.size())) / h;
    INFO("direction " << dir << " (" << (dir == groups ? "all inputs" : group_name[dir]) << "): <g, u> = " << std::setprecision(17) << gu
                      << ", central difference " << fd << ", h = " << h);
    CHECK(std::fabs(gu - fd) <= 1e-6 * gabs + noise + 1e-14);
  }
}

/// The same for fp32 storage: end points rounded to fp32, compared with <g, xp - xm> over the exact displacement.
template <class Spec>
void check_directional_fp32(const Spec& spec, const pairs& d, double h, std::uint64_t seed) {
  const outcome o = run<float>(spec, d);
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> nd;
  for (std::size_t dir = 0; dir <= 4; ++dir) {
    pairs p = d, m = d;
    double gd = 0.0, gabs = 0.0;
    for (std::size_t k = 0; k < 4; ++k) {
      if (dir != 4 && dir != k) continue;
      for (std::size_t i = 0; i < d.size(); ++i) {
        const double u = nd(gen);
        p.v[k][i] = static_cast<double>(static_cast<float>(d.v[k][i] + h * u));
        m.v[k][i] = static_cast<double>(static_cast<float>(d.v[k][i] - h * u));
        gd += o.grad[k][i] * (p.v[k][i] - m.v[k][i]);
        gabs += std::fabs(o.grad[k][i] * (p.v[k][i] - m.v[k][i]));
      }
    }
    const double fd = run<float>(spec, p).loss - run<float>(spec, m).loss;
    double per = 0.0;
    for (double l : o.losses) per += std::fabs(l);
    const double noise = 64.0 * std::numeric_limits<double>::epsilon() * (std::fabs(o.loss) + per / static_cast<double>(d.size()));
    INFO("fp32 direction " << dir << ": <g, xp - xm> = " << std::setprecision(17) << gd << ", L(xp) - L(xm) = " << fd << ", h = " << h);
    CHECK(std::fabs(gd - fd) <= 1e-3 * gabs + noise + 1e-12);
  }
}

/// The whole battery for one spec on one set: finite values, the long-double reference, cai's own differences on
/// double storage, and fp32 storage against double storage and its own differences.
template <class Spec>
void battery(const entry<Spec>& e, const pairs& d, double m, std::uint64_t seed) {
  INFO("spec " << e.label << ", |beta D| <= " << m << ", B = " << d.size());
  if (m > e.max_m) return;
  const outcome o = run<double>(e.spec, d);
  REQUIRE(std::isfinite(o.loss));
  for (const auto& g : o.grad) REQUIRE(all_finite(g));
  REQUIRE(all_finite(o.losses));
  check_reference<double>(e.spec, e.ref, d, {});
  double xmax = 1.0;
  for (const auto& v : d.v) xmax = std::max(xmax, max_abs(v));
  check_directional(e.spec, d, 1e-6 * std::max(1.0, xmax / 100.0), {}, seed);
  if (!has_aot(e.ref)) {  // per-pair weights (aot takes none)
    check_reference<double>(e.spec, e.ref, d, {.weights = true});
    check_directional(e.spec, d, 1e-6 * std::max(1.0, xmax / 100.0), {.weights = true}, seed + 1);
  }
  if (m > e.max_m_fp32) return;
  const outcome f = run<float>(e.spec, d);
  REQUIRE(std::isfinite(f.loss));
  for (const auto& g : f.grad) REQUIRE(all_finite(g));
  REQUIRE(all_finite(f.losses));
  // fp32 storage reads the same values and computes in double: the loss agrees to double rounding, the outputs to
  // one fp32 rounding (denorm_min: gradients below fp32's normal range, e.g. s(-95) beta / B).
  check_close("fp32 loss vs fp64 loss", {f.loss}, {o.loss}, 1e-12, 1e-13);
  const double tiny = static_cast<double>(std::numeric_limits<float>::denorm_min());
  for (std::size_t k = 0; k < 4; ++k) check_close_abs(std::string("fp32 vs fp64 d/d ") + group_name[k], f.grad[k], o.grad[k], 2e-7, tiny);
  check_close_abs("fp32 vs fp64 per-pair losses", f.losses, o.losses, 2e-7, tiny);
  check_directional_fp32(e.spec, d, std::min(1e-3 * std::max(1.0, xmax / 64.0), aot_gap(d) / 20.0), seed + 2);
}

}  // namespace

// =====================================================================================================================

TEST_CASE("Each DPO-family loss matches TRL's formulas in torch and a long-double reference", "[preference][dpo]") {
  golden_case("base", "sigmoid", dpo::sigmoid{.beta = 0.1}, {{T(K::sigmoid)}});
  golden_case("base", "cdpo", dpo::sigmoid{.beta = 0.1, .label_smoothing = 0.1}, {{T(K::sigmoid, 0.1L, 0.1L)}});
  golden_case("base", "robust", dpo::robust{.beta = 0.1, .label_smoothing = 0.1}, {{T(K::robust, 0.1L, 0.1L)}});
  golden_case("base", "hinge", dpo::hinge{.beta = 0.1}, {{T(K::hinge)}});
  golden_case("base", "hinge05", dpo::hinge{.beta = 0.5}, {{T(K::hinge, 0.5L)}});
  golden_case("base", "ipo", dpo::ipo{.beta = 0.1}, {{T(K::ipo)}});
  golden_case("base", "exo_pair", dpo::exo_pair{.beta = 0.1, .label_smoothing = 1e-3}, {{T(K::exo_pair, 0.1L, 1e-3L)}});
  golden_case("base", "exo_pair02", dpo::exo_pair{.beta = 0.5, .label_smoothing = 0.2}, {{T(K::exo_pair, 0.5L, 0.2L)}});
  golden_case("base", "nca_pair", dpo::nca_pair{.beta = 0.1}, {{T(K::nca_pair)}});
  golden_case("base", "bco_pair", dpo::bco_pair{.beta = 0.1}, {{T(K::bco_pair)}});
  golden_case("base", "bco_pair_delta", dpo::bco_pair{.beta = 0.1, .delta = 0.3}, {{term{.kind = K::bco_pair, .delta = 0.3L}}});
  golden_case("base", "sppo_hard", dpo::sppo_hard{.beta = 0.1}, {{T(K::sppo_hard)}});
  golden_case("base", "aot", dpo::aot{.beta = 0.1}, {{T(K::aot)}});
  golden_case("base", "aot_ls", dpo::aot{.beta = 0.2, .label_smoothing = 0.1}, {{T(K::aot, 0.2L, 0.1L)}});
  golden_case("base", "aot_unpaired", dpo::aot{.beta = 0.1, .unpaired = true}, {{T(K::aot_unpaired)}});
  golden_case("base", "apo_zero", dpo::apo_zero{.beta = 0.1}, {{T(K::apo_zero)}});
  golden_case("base", "apo_down", dpo::apo_down{.beta = 0.1}, {{T(K::apo_down)}});
  golden_case("base", "discopop", dpo::discopop{.beta = 0.1}, {{T(K::discopop)}});
  golden_case("base", "discopop_tau", dpo::discopop{.beta = 0.5, .tau = 0.2}, {{term{.kind = K::discopop, .beta = 0.5L, .tau = 0.2L}}});
  golden_case("base", "sigmoid_norm", dpo::sigmoid_norm{.beta = 0.1}, {{T(K::sigmoid_norm)}});
  golden_case("base", "sft", dpo::sft{}, {{T(K::sft, 0.0L)}});
}

TEST_CASE("The same losses hold at wide margins and for a batch of one", "[preference][dpo]") {
  golden_case("wide", "sigmoid", dpo::sigmoid{.beta = 0.1}, {{T(K::sigmoid)}});
  golden_case("wide", "cdpo", dpo::sigmoid{.beta = 0.1, .label_smoothing = 0.1}, {{T(K::sigmoid, 0.1L, 0.1L)}});
  golden_case("wide", "robust", dpo::robust{.beta = 0.1, .label_smoothing = 0.1}, {{T(K::robust, 0.1L, 0.1L)}});
  golden_case("wide", "hinge", dpo::hinge{.beta = 0.1}, {{T(K::hinge)}});
  golden_case("wide", "ipo", dpo::ipo{.beta = 0.1}, {{T(K::ipo)}});
  golden_case("wide", "exo_pair", dpo::exo_pair{.beta = 0.1, .label_smoothing = 1e-3}, {{T(K::exo_pair, 0.1L, 1e-3L)}});
  golden_case("wide", "nca_pair", dpo::nca_pair{.beta = 0.1}, {{T(K::nca_pair)}});
  golden_case("wide", "bco_pair", dpo::bco_pair{.beta = 0.1}, {{T(K::bco_pair)}});
  golden_case("wide", "sppo_hard", dpo::sppo_hard{.beta = 0.1}, {{T(K::sppo_hard)}});
  golden_case("wide", "aot", dpo::aot{.beta = 0.1}, {{T(K::aot)}});
  golden_case("wide", "aot_unpaired", dpo::aot{.beta = 0.1, .unpaired = true}, {{T(K::aot_unpaired)}});
  golden_case("wide", "apo_zero", dpo::apo_zero{.beta = 0.1}, {{T(K::apo_zero)}});
  golden_case("wide", "apo_down", dpo::apo_down{.beta = 0.1}, {{T(K::apo_down)}});
  golden_case("wide", "discopop", dpo::discopop{.beta = 0.1}, {{T(K::discopop)}});
  golden_case("wide", "sigmoid_norm", dpo::sigmoid_norm{.beta = 0.1}, {{T(K::sigmoid_norm)}});

  golden_case("one", "sigmoid", dpo::sigmoid{.beta = 0.1}, {{T(K::sigmoid)}});
  golden_case("one", "ipo", dpo::ipo{.beta = 0.1}, {{T(K::ipo)}});
  golden_case("one", "aot", dpo::aot{.beta = 0.1}, {{T(K::aot)}});
  golden_case("one", "aot_unpaired", dpo::aot{.beta = 0.1, .unpaired = true}, {{T(K::aot_unpaired)}});
  golden_case("one", "mpo", dpo::mpo(0.1), {{T(K::sigmoid, 0.1L, 0.0L, 0.8L), T(K::bco_pair, 0.1L, 0.0L, 0.2L), T(K::sft, 0.0L)}});
  golden_case("one", "rpo_w", dpo::rpo(0.1, 0.5), {{T(K::sigmoid), T(K::sft, 0.0L, 0.0L, 0.5L)}}, true);
}

TEST_CASE("Mixes sum their members with the mix weights: RPO and MPO and a custom weighted mix", "[preference][dpo]") {
  const problem rpo{{T(K::sigmoid), T(K::sft, 0.0L, 0.0L, 0.5L)}};
  const problem mpo{{T(K::sigmoid, 0.1L, 0.0L, 0.8L), T(K::bco_pair, 0.1L, 0.0L, 0.2L), T(K::sft, 0.0L)}};
  golden_case("base", "rpo", dpo::rpo(0.1, 0.5), rpo);
  golden_case("base", "mpo", dpo::mpo(0.1), mpo);
  golden_case("base", "mix",
              dpo::mix{dpo::hinge{.beta = 0.2}, dpo::ipo{.beta = 0.3}, dpo::apo_zero{.beta = 0.1}, dpo::aot{.beta = 0.1, .unpaired = true},
                       dpo::sft{}}
                  .weighted(0.3, 1.5, 0.7, 0.4, 0.25),
              {{T(K::hinge, 0.2L, 0.0L, 0.3L), T(K::ipo, 0.3L, 0.0L, 1.5L), T(K::apo_zero, 0.1L, 0.0L, 0.7L), T(K::aot_unpaired, 0.1L, 0.0L, 0.4L),
                T(K::sft, 0.0L, 0.0L, 0.25L)}});

  // The mix is the weighted sum of its members run alone (values, gradients, per-pair losses).
  const pairs d = golden_set("base");
  const outcome s = run<double>(dpo::sigmoid{.beta = 0.1}, d), b = run<double>(dpo::bco_pair{.beta = 0.1}, d), f = run<double>(dpo::sft{}, d);
  const outcome m = run<double>(dpo::mpo(0.1), d);
  CHECK(m.loss == Approx(0.8 * s.loss + 0.2 * b.loss + f.loss).epsilon(1e-14));
  for (std::size_t k = 0; k < 4; ++k)
    for (std::size_t i = 0; i < d.size(); ++i) CHECK(m.grad[k][i] == Approx(0.8 * s.grad[k][i] + 0.2 * b.grad[k][i] + f.grad[k][i]).epsilon(1e-13).margin(1e-16));
  for (std::size_t i = 0; i < d.size(); ++i) CHECK(m.losses[i] == Approx(0.8 * s.losses[i] + 0.2 * b.losses[i] + f.losses[i]).epsilon(1e-14));
  // A mix of one member with weight 1 is that member; the mix's metrics use its first member's beta.
  const outcome one = run<double>(dpo::mix{dpo::sigmoid{.beta = 0.1}}, d);
  CHECK(one.loss == s.loss);
  const outcome sft_first = run<double>(dpo::mix{dpo::sft{}, dpo::sigmoid{.beta = 0.1}}, d);
  CHECK(sft_first.metrics.chosen == 0.0);  // sft has no beta of its own: the rewards are 0 x rho
  CHECK(sft_first.metrics.accuracy == 0.0);
}

TEST_CASE("Per-pair weights (WPO) multiply each pointwise loss and the sft term by the mean weight", "[preference][dpo]") {
  golden_case("base", "sigmoid_w", dpo::sigmoid{.beta = 0.1}, {{T(K::sigmoid)}}, true);
  golden_case("base", "ipo_w", dpo::ipo{.beta = 0.1}, {{T(K::ipo)}}, true);
  golden_case("base", "bco_pair_w", dpo::bco_pair{.beta = 0.1}, {{T(K::bco_pair)}}, true);
  golden_case("base", "sigmoid_norm_w", dpo::sigmoid_norm{.beta = 0.1}, {{T(K::sigmoid_norm)}}, true);
  golden_case("base", "rpo_w", dpo::rpo(0.1, 0.5), {{T(K::sigmoid), T(K::sft, 0.0L, 0.0L, 0.5L)}}, true);
  golden_case("base", "mpo_w", dpo::mpo(0.1), {{T(K::sigmoid, 0.1L, 0.0L, 0.8L), T(K::bco_pair, 0.1L, 0.0L, 0.2L), T(K::sft, 0.0L)}}, true);

  const pairs d = golden_set("base");
  const std::size_t n = d.size();
  double wbar = 0.0;
  for (double w : d.w) wbar += w;
  wbar /= static_cast<double>(n);
  for_each_entry(std::make_tuple(dpo::sigmoid{.beta = 0.1}, dpo::hinge{.beta = 0.5}, dpo::apo_zero{.beta = 0.1}, dpo::discopop{.beta = 0.1}), [&](const auto& spec) {
    const outcome u = run<double>(spec, d), w = run<double>(spec, d, {.weights = true});
    double mean = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      CHECK(w.losses[i] == Approx(d.w[i] * u.losses[i]).epsilon(1e-15));
      for (std::size_t k = 0; k < 4; ++k) CHECK(w.grad[k][i] == Approx(d.w[i] * u.grad[k][i]).epsilon(1e-15).margin(1e-300));
      mean += d.w[i] * u.losses[i];
    }
    CHECK(w.loss == Approx(mean / static_cast<double>(n)).epsilon(1e-14));
    CHECK(metrics_of(w.metrics) == metrics_of(u.metrics));  // the metrics are unweighted
  });
  // sft: loss = mean(W) NLL, per pair W_i NLL, d/d pc_i = -mean(W) / sum |yc| for every pair.
  const outcome su = run<double>(dpo::sft{}, d), sw = run<double>(dpo::sft{}, d, {.weights = true});
  double len = 0.0;
  for (auto l : d.lc) len += static_cast<double>(l);
  CHECK(sw.loss == Approx(wbar * su.loss).epsilon(1e-14));
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(sw.losses[i] == Approx(d.w[i] * su.loss).epsilon(1e-14));
    CHECK(sw.grad[0][i] == Approx(-wbar / len).epsilon(1e-14));
    CHECK(sw.grad[1][i] == 0.0);
    CHECK(sw.grad[2][i] == 0.0);
    CHECK(sw.grad[3][i] == 0.0);
  }
  // Weights of 0 drop a pair; weights of 1 are the unweighted loss bit for bit.
  pairs z = d;
  std::fill(z.w.begin(), z.w.end(), 1.0);
  CHECK(run<double>(dpo::ipo{.beta = 0.1}, z, {.weights = true}).loss == run<double>(dpo::ipo{.beta = 0.1}, z).loss);
  z.w[2] = 0.0;
  const outcome dropped = run<double>(dpo::sigmoid{.beta = 0.1}, z, {.weights = true});
  for (std::size_t k = 0; k < 4; ++k) CHECK(dropped.grad[k][2] == 0.0);
  CHECK(dropped.losses[2] == 0.0);
}

TEST_CASE("f-divergence scores match TRL's f_divergence_type and reverse KL is the plain loss", "[preference][dpo]") {
  golden_case("base", "sigmoid_fkl", with(dpo::sigmoid{.beta = 0.1}, fdiv::forward_kl{}), {{T(K::sigmoid)}, FKL});
  golden_case("base", "sigmoid_js", with(dpo::sigmoid{.beta = 0.1}, fdiv::js_divergence{}), {{T(K::sigmoid)}, JS});
  golden_case("base", "sigmoid_alpha05", with(dpo::sigmoid{.beta = 0.1}, fdiv::alpha_divergence{0.5}), {{T(K::sigmoid)}, ALPHA(0.5L)});
  golden_case("base", "sigmoid_alpha03", with(dpo::sigmoid{.beta = 0.1}, fdiv::alpha_divergence{0.3}), {{T(K::sigmoid)}, ALPHA(0.3L)});
  golden_case("base", "robust_fkl", with(dpo::robust{.beta = 0.1, .label_smoothing = 0.2}, fdiv::forward_kl{}), {{T(K::robust, 0.1L, 0.2L)}, FKL});
  golden_case("base", "hinge_js", with(dpo::hinge{.beta = 0.5}, fdiv::js_divergence{}), {{T(K::hinge, 0.5L)}, JS});
  golden_case("base", "ipo_fkl", with(dpo::ipo{.beta = 0.1}, fdiv::forward_kl{}), {{T(K::ipo)}, FKL});
  golden_case("base", "exo_pair_js", with(dpo::exo_pair{.beta = 0.5, .label_smoothing = 1e-3}, fdiv::js_divergence{}), {{T(K::exo_pair, 0.5L, 1e-3L)}, JS});
  golden_case("base", "nca_pair_js", with(dpo::nca_pair{.beta = 0.5}, fdiv::js_divergence{}), {{T(K::nca_pair, 0.5L)}, JS});
  golden_case("base", "bco_pair_alpha05", with(dpo::bco_pair{.beta = 0.1}, fdiv::alpha_divergence{0.5}), {{T(K::bco_pair)}, ALPHA(0.5L)});
  golden_case("base", "sppo_hard_fkl", with(dpo::sppo_hard{.beta = 0.1}, fdiv::forward_kl{}), {{T(K::sppo_hard)}, FKL});
  golden_case("base", "apo_zero_js", with(dpo::apo_zero{.beta = 0.1}, fdiv::js_divergence{}), {{T(K::apo_zero)}, JS});
  golden_case("base", "apo_down_fkl", with(dpo::apo_down{.beta = 0.1}, fdiv::forward_kl{}), {{T(K::apo_down)}, FKL});
  golden_case("base", "aot_js", with(dpo::aot{.beta = 0.1}, fdiv::js_divergence{}), {{T(K::aot)}, JS});
  golden_case("base", "discopop_fkl", with(dpo::discopop{.beta = 0.1}, fdiv::forward_kl{}), {{T(K::discopop)}, FKL});
  golden_case("base", "sigmoid_norm_js", with(dpo::sigmoid_norm{.beta = 0.5}, fdiv::js_divergence{}), {{T(K::sigmoid_norm, 0.5L)}, JS});
  golden_case("base", "mpo_js", with(dpo::mpo(0.1), fdiv::js_divergence{}),
              {{T(K::sigmoid, 0.1L, 0.0L, 0.8L), T(K::bco_pair, 0.1L, 0.0L, 0.2L), T(K::sft, 0.0L)}, JS});

  // apo_zero and aot take the raw log-ratios (as TRL): the divergence changes nothing.
  const pairs d = golden_set("base");
  CHECK(run<double>(with(dpo::apo_zero{.beta = 0.1}, fdiv::js_divergence{}), d).loss == run<double>(dpo::apo_zero{.beta = 0.1}, d).loss);
  CHECK(run<double>(with(dpo::aot{.beta = 0.1}, fdiv::forward_kl{}), d).loss == run<double>(dpo::aot{.beta = 0.1}, d).loss);
  // reverse_kl, and alpha within 1e-6 of 1, are the plain loss bit for bit; the metrics ignore the divergence.
  for_each_entry(all_specs(), [&](const auto& e) {
    INFO(e.label);
    if constexpr (!is_with_divergence<std::remove_cvref_t<decltype(e.spec)>>) {
    const outcome plain = run<double>(e.spec, d);
    for (const outcome& o : {run<double>(with(e.spec, fdiv::reverse_kl{}), d), run<double>(with(e.spec, fdiv::alpha_divergence{1.0 + 5e-7}), d)}) {
      CHECK(o.loss == plain.loss);
      for (std::size_t k = 0; k < 4; ++k) CHECK(o.grad[k] == plain.grad[k]);
      CHECK(o.losses == plain.losses);
    }
    CHECK(metrics_of(run<double>(with(e.spec, fdiv::forward_kl{}), d).metrics) == metrics_of(plain.metrics));
    }
  });
}

TEST_CASE("The alpha divergence clamps (a-1) rho at 80 with zero gradient beyond as torch.clamp", "[preference][dpo]") {
  // Values up to 1e68 (the ipo square of e^80): double storage only; no finite differences across the clamp bound.
  golden_case("clamp", "sigmoid_alpha05", with(dpo::sigmoid{.beta = 0.1}, fdiv::alpha_divergence{0.5}), {{T(K::sigmoid)}, ALPHA(0.5L)}, false, false, false);
  golden_case("clamp", "sigmoid_alpha03", with(dpo::sigmoid{.beta = 0.1}, fdiv::alpha_divergence{0.3}), {{T(K::sigmoid)}, ALPHA(0.3L)}, false, false, false);
  golden_case("clamp", "ipo_alpha05", with(dpo::ipo{.beta = 0.1}, fdiv::alpha_divergence{0.5}), {{T(K::ipo)}, ALPHA(0.5L)}, false, false, false);
  golden_case("clamp", "nca_pair_alpha03", with(dpo::nca_pair{.beta = 0.1}, fdiv::alpha_divergence{0.3}), {{T(K::nca_pair)}, ALPHA(0.3L)}, false, false,
              false);

  // rho_c of pair 0 = -200, rho_r of pair 1 = -200: (a-1) rho = 100 > 80 (a = 0.5), the score is the constant
  // e^80 / (a-1) and its gradient exactly 0; pair 2's rho_c = -160 sits on the bound (t = 80): the gradient passes.
  const pairs d = golden_set("clamp");
  const double beta = 0.1, n = static_cast<double>(d.size());
  const outcome o = run<double>(with(dpo::sigmoid{.beta = beta}, fdiv::alpha_divergence{0.5}), d);
  CHECK(o.grad[0][0] == 0.0);
  CHECK(o.grad[2][0] == 0.0);
  CHECK(o.grad[1][1] == 0.0);
  CHECK(o.grad[3][1] == 0.0);
  REQUIRE(d.v[0][2] - d.v[2][2] == -160.0);
  const double sc = std::exp(80.0) / -0.5, sr = std::exp(-0.5 * (d.v[1][2] - d.v[3][2])) / -0.5;
  const double dz = -1.0 / (1.0 + std::exp(beta * (sc - sr)));  // d/dz of -log s(z)
  CHECK(o.grad[0][2] == Approx(beta * dz * std::exp(80.0) / n).epsilon(1e-13));
  CHECK(o.grad[2][2] == -o.grad[0][2]);
  // a = 0.3: rho = -120 clamps too ((a-1) rho = 84).
  const outcome p = run<double>(with(dpo::sigmoid{.beta = beta}, fdiv::alpha_divergence{0.3}), d);
  REQUIRE(d.v[0][4] - d.v[2][4] == -120.0);
  CHECK(p.grad[0][4] == 0.0);
  CHECK(o.grad[0][4] != 0.0);  // not clamped at a = 0.5 ((a-1) rho = 60)
}

TEST_CASE("The hinge loss at its kink beta D = 1 has gradient 0 as torch's relu", "[preference][dpo]") {
  golden_case("kink", "hinge05", dpo::hinge{.beta = 0.5}, {{T(K::hinge, 0.5L)}}, false, false);
  golden_case("kink", "hinge05_w", dpo::hinge{.beta = 0.5}, {{T(K::hinge, 0.5L)}}, true, false);
  const pairs d = golden_set("kink");
  REQUIRE((d.v[0][0] - d.v[2][0]) - (d.v[1][0] - d.v[3][0]) == 2.0);  // beta D = 0.5 x 2 = 1 exactly
  const outcome o = run<double>(dpo::hinge{.beta = 0.5}, d);
  for (std::size_t k = 0; k < 4; ++k) CHECK(o.grad[k][0] == 0.0);
  CHECK(o.losses[0] == 0.0);
  // Beyond the kink (beta D = 1.125): 0; before it: -beta / B.
  CHECK(o.grad[0][1] == 0.0);
  CHECK(o.grad[0][2] == -0.5 / 4.0);
  CHECK(o.grad[1][2] == 0.5 / 4.0);
}

TEST_CASE("AOT's gradient follows the sort permutation to the pairs each rank came from", "[preference][dpo]") {
  // rho_c = (0.3, -1, 2) sorts to ranks (1, 0, 2); rho_r = (1, 0.5, -2) to ranks (2, 1, 0). Rank j pairs
  // rho_c of pair (1, 0, 2)[j] with rho_r of pair (2, 1, 0)[j]: deltas (1, -0.2, 1).
  pairs d;
  d.v = {std::vector<double>{-9.7, -11.0, -8.0}, {-9.0, -9.5, -12.0}, {-10.0, -10.0, -10.0}, {-10.0, -10.0, -10.0}};
  d.lc = d.lr = {1, 1, 1};
  d.w = {1, 1, 1};
  const double beta = 0.5;
  const outcome o = run<double>(dpo::aot{.beta = beta, .unpaired = true}, d);
  const auto dl = [&](double delta) { return -beta * cai::sigmoid(-beta * delta) / 3.0; };  // d (l_j / 3) / d delta
  const double g0 = dl(-1.0 - (-2.0)), g1 = dl(0.3 - 0.5), g2 = dl(2.0 - 1.0);
  CHECK(o.grad[0][1] == Approx(g0).epsilon(1e-14));
  CHECK(o.grad[0][0] == Approx(g1).epsilon(1e-14));
  CHECK(o.grad[0][2] == Approx(g2).epsilon(1e-14));
  CHECK(o.grad[1][2] == Approx(-g0).epsilon(1e-14));
  CHECK(o.grad[1][1] == Approx(-g1).epsilon(1e-14));
  CHECK(o.grad[1][0] == Approx(-g2).epsilon(1e-14));
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(o.grad[2][i] == -o.grad[0][i]);
    CHECK(o.grad[3][i] == -o.grad[1][i]);
  }
  CHECK(o.losses[0] == Approx(-cai::log_sigmoid(beta * 1.0)).epsilon(1e-14));  // per sorted rank
  CHECK(o.losses[1] == Approx(-cai::log_sigmoid(beta * -0.2)).epsilon(1e-14));
  // Paired AOT sorts pc - pr = (-0.7, -1.5, 4) and rc - rr = (0, 0, 0): rank j is pair (1, 0, 2)[j] against a tie.
  const outcome p = run<double>(dpo::aot{.beta = beta}, d);
  CHECK(p.grad[0][1] == Approx(dl(-1.5)).epsilon(1e-14));
  CHECK(p.grad[1][1] == Approx(-dl(-1.5)).epsilon(1e-14));
  CHECK(p.losses[0] == Approx(-cai::log_sigmoid(beta * -1.5)).epsilon(1e-14));
}

TEST_CASE("Every loss has finite-difference gradients at beta D from 1e-3 to 1e3 and at D = 0 and for one pair", "[preference][dpo]") {
  const auto specs = all_specs();
  std::uint64_t seed = 100;
  for (const double m : {1e-3, 1.0, 30.0, 1e3}) {
    // The first seed whose AOT values are 1e-4 (x the input scale) apart: well above every difference step here.
    std::uint64_t s = static_cast<std::uint64_t>(m * 1000) + 5;
    pairs d = magnitude_set(8, m, s);
    while (aot_gap(d) <= 1e-4 * std::max(1.0, m / 0.1 / 100.0)) d = magnitude_set(8, m, ++s);
    for_each_entry(specs, [&](const auto& e) {
      if (std::string(e.label) == "discopop" && m >= 1e3) return;  // see the next test case
      battery(e, d, m, ++seed);
    });
  }
  const pairs eq = equal_set();
  const pairs one = magnitude_set(1, 2.0, 9);
  for_each_entry(specs, [&](const auto& e) {
    battery(e, eq, 1.0, ++seed);
    battery(e, one, 2.0, ++seed);
  });
  // D = 0: the metrics count every pair as a tie.
  const outcome o = run<double>(dpo::sigmoid{.beta = 0.1}, eq);
  CHECK(o.metrics.accuracy == 0.0);
  CHECK(o.metrics.margin == 0.0);
  CHECK(o.loss == Approx(std::log(2.0)).epsilon(1e-15));
}

TEST_CASE("DiscoPOP stays finite at beta D = -1e3", "[preference][dpo]") {
  // z = beta D = -1000: e^-z overflows double while s(z / tau) underflows to 0; the loss is -log s(z) ~ 1000.
  const auto specs = all_specs();
  std::uint64_t s = 1000005;  // the set of the previous test case at 1e3
  pairs d = magnitude_set(8, 1e3, s);
  while (aot_gap(d) <= 1e-4 * 1e3 / 0.1 / 100.0) d = magnitude_set(8, 1e3, ++s);
  battery(std::get<15>(specs), d, 1e3, 999);
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(std::get<15>(specs).spec)>, dpo::discopop>);
}

TEST_CASE("Reference-free mode is the reference loss with zero reference log-probs", "[preference][dpo]") {
  const pairs d = magnitude_set(8, 1.0, 4242);
  pairs zero = d;
  std::fill(zero.v[2].begin(), zero.v[2].end(), 0.0);
  std::fill(zero.v[3].begin(), zero.v[3].end(), 0.0);
  std::uint64_t seed = 500;
  for_each_entry(all_specs(), [&](const auto& e) {
    INFO(e.label);
    const outcome f = run<double>(e.spec, d, {.ref_free = true}), z = run<double>(e.spec, zero);
    // Same arithmetic (rho = pc - 0): equal bit for bit.
    CHECK(f.loss == z.loss);
    CHECK(f.grad[0] == z.grad[0]);
    CHECK(f.grad[1] == z.grad[1]);
    CHECK(f.losses == z.losses);
    CHECK(metrics_of(f.metrics) == metrics_of(z.metrics));
    check_reference<double>(e.spec, e.ref, d, {.ref_free = true});
    check_directional(e.spec, d, 1e-6, {.ref_free = true}, ++seed);
  });
}

TEST_CASE("A run-time spec from dpo::from_string is the typed spec bit for bit", "[preference][dpo]") {
  const pairs d = golden_set("base");
  const auto same = [&](const std::string& text, const std::string& div, const auto& typed) {
    INFO(text << " / " << div);
    const outcome a = run<double>(dpo::from_string(text, div), d), b = run<double>(typed, d);
    CHECK(a.loss == b.loss);
    for (std::size_t k = 0; k < 4; ++k) CHECK(a.grad[k] == b.grad[k]);
    CHECK(a.losses == b.losses);
    CHECK(metrics_of(a.metrics) == metrics_of(b.metrics));
  };
  same("sigmoid:beta=0.1,label_smoothing=0.1", "reverse_kl", dpo::sigmoid{.beta = 0.1, .label_smoothing = 0.1});
  same("robust:label_smoothing=0.2", "forward_kl", with(dpo::robust{.label_smoothing = 0.2}, fdiv::forward_kl{}));
  same("exo_pair:beta=0.5,label_smoothing=0.01", "js", with(dpo::exo_pair{.beta = 0.5, .label_smoothing = 0.01}, fdiv::js_divergence{}));
  same("bco_pair:delta=0.3", "alpha:alpha=0.3", with(dpo::bco_pair{.delta = 0.3}, fdiv::alpha_divergence{0.3}));
  same("discopop:beta=0.5,tau=0.2", "reverse_kl", dpo::discopop{.beta = 0.5, .tau = 0.2});
  same("aot_unpaired:beta=0.2", "reverse_kl", dpo::aot{.beta = 0.2, .unpaired = true});
  same("sigmoid + 0.5*sft", "reverse_kl", dpo::rpo(0.1, 0.5));
  same("0.8*sigmoid:beta=0.1 + 0.2*bco_pair:beta=0.1 + sft", "js_divergence", with(dpo::mpo(0.1), fdiv::js_divergence{}));
  same("0.3*hinge:beta=0.2 + 1.5*ipo:beta=0.3 + 0.7*apo_zero + 0.4*aot_unpaired + 0.25*sft", "reverse_kl",
       dpo::mix{dpo::hinge{.beta = 0.2}, dpo::ipo{.beta = 0.3}, dpo::apo_zero{}, dpo::aot{.unpaired = true}, dpo::sft{}}.weighted(0.3, 1.5, 0.7, 0.4, 0.25));
  // The run-time spec goes through the same checks.
  const cai::dpo_batch<double> in{.chosen = cai::make_view<const double>(d.v[0].data(), {8}), .rejected = cai::make_view<const double>(d.v[1].data(), {8}),
                                  .ref_chosen = cai::make_view<const double>(d.v[2].data(), {8}),
                                  .ref_rejected = cai::make_view<const double>(d.v[3].data(), {8})};
  CAI_REQUIRE_THROWS_NAMING((cai::dpo_loss(cai::host{}, dpo::from_string("sigmoid:beta=-1"), in)), cai::invalid_argument, "'sigmoid.beta'");
  CAI_REQUIRE_THROWS_NAMING((cai::dpo_loss(cai::host{}, dpo::from_string("sigmoid + -1*hinge"), in)), cai::invalid_argument, "'mix.weights'");
  CAI_REQUIRE_THROWS_NAMING((cai::dpo_loss(cai::host{}, dpo::from_string("ipo"), in)), cai::invalid_argument, "'chosen_lengths'");
  CAI_REQUIRE_THROWS_NAMING((cai::dpo_loss(cai::host{}, dpo::from_string("sigmoid", "alpha:alpha=nan"), in)), cai::invalid_argument, "alpha");
  CAI_REQUIRE_THROWS_NAMING((cai::dpo_loss(cai::host{}, dpo::dynamic{}, in)), cai::invalid_argument, "'spec.losses'");
  dpo::dynamic two = dpo::from_string("sigmoid + hinge");
  two.weights.pop_back();
  CAI_REQUIRE_THROWS_NAMING((cai::dpo_loss(cai::host{}, two, in)), cai::invalid_argument, "'spec.weights'");
  CAI_REQUIRE_THROWS_NAMING((dpo::from_string("sigmoid + kto")), cai::invalid_argument, "'kto'");
  CAI_REQUIRE_THROWS_NAMING((dpo::from_string("x*sigmoid")), cai::invalid_argument, "'weight'");
  CAI_REQUIRE_THROWS_NAMING((dpo::from_string("sigmoid", "kl")), cai::invalid_argument, "'kl'");
}

TEST_CASE("Metrics are TRL's mean beta rho per side and their margin and strict accuracy", "[preference][dpo]") {
  pairs d;
  d.v = {std::vector<double>{-3.0, -5.0, -1.0, -2.0}, {-4.0, -6.0, -1.0, -9.0}, {-3.5, -5.5, -0.5, -2.5}, {-4.0, -6.5, -1.0, -8.0}};
  d.lc = d.lr = {1, 1, 1, 1};
  d.w = {1, 1, 1, 1};
  // rho_c = (0.5, 0.5, -0.5, 0.5), rho_r = (0, 0.5, 0, -1): wins, tie, loss, win.
  const outcome o = run<double>(dpo::ipo{.beta = 0.25}, d);
  CHECK(o.metrics.count == 4);
  CHECK(o.metrics.chosen == Approx(0.25 * 1.0 / 4.0).epsilon(1e-15));
  CHECK(o.metrics.rejected == Approx(0.25 * -0.5 / 4.0).epsilon(1e-15));
  CHECK(o.metrics.margin == Approx(0.25 * 1.5 / 4.0).epsilon(1e-15));
  CHECK(o.metrics.accuracy == 0.5);  // the tie counts as wrong
  // The plain log-ratio whatever the divergence or the length normalisation.
  CHECK(metrics_of(run<double>(with(dpo::ipo{.beta = 0.25}, fdiv::forward_kl{}), d).metrics) == metrics_of(o.metrics));
  // An empty batch: loss 0, count 0, nothing required.
  const cai::dpo_batch<double> none{};
  const auto r = cai::dpo_loss(cai::host{}, dpo::sigmoid{}, none);
  CHECK(r.loss == 0.0);
  CHECK(r.metrics.count == 0);
}

TEST_CASE("dpo_loss rejects bad hyper-parameters and values and shapes naming the argument", "[preference][dpo]") {
  const pairs d = golden_set("base");
  const auto n = static_cast<std::int64_t>(d.size());
  const auto cv = [](const std::vector<double>& v) { return cai::make_view<const double>(v.data(), {static_cast<std::int64_t>(v.size())}); };
  const auto lv = [](const std::vector<std::int64_t>& v) {
    return cai::make_view<const std::int64_t>(v.data(), {static_cast<std::int64_t>(v.size())});
  };
  const cai::dpo_batch<double> in{.chosen = cv(d.v[0]), .rejected = cv(d.v[1]), .ref_chosen = cv(d.v[2]), .ref_rejected = cv(d.v[3]),
                                  .chosen_lengths = lv(d.lc), .rejected_lengths = lv(d.lr)};
  const auto loss = [&](const auto& spec, const cai::dpo_batch<double>& b, const cai::dpo_grads<double>& g = {}, cai::dpo_options o = {}) {
    return cai::dpo_loss(cai::host{}, spec, b, g, o).loss;
  };
  using cai::invalid_argument;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();

  SECTION("beta > 0 and finite, for every loss and mix member") {
    for (const double b : {0.0, -0.1, nan, inf}) {
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{.beta = b}, in)), invalid_argument, "cai::dpo_loss", "'sigmoid.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::robust{.beta = b}, in)), invalid_argument, "'robust.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::hinge{.beta = b}, in)), invalid_argument, "'hinge.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::ipo{.beta = b}, in)), invalid_argument, "'ipo.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::exo_pair{.beta = b}, in)), invalid_argument, "'exo_pair.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::nca_pair{.beta = b}, in)), invalid_argument, "'nca_pair.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::bco_pair{.beta = b}, in)), invalid_argument, "'bco_pair.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::sppo_hard{.beta = b}, in)), invalid_argument, "'sppo_hard.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::aot{.beta = b}, in)), invalid_argument, "'aot.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::apo_zero{.beta = b}, in)), invalid_argument, "'apo_zero.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::apo_down{.beta = b}, in)), invalid_argument, "'apo_down.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::discopop{.beta = b}, in)), invalid_argument, "'discopop.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid_norm{.beta = b}, in)), invalid_argument, "'sigmoid_norm.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::mpo(b), in)), invalid_argument, "'sigmoid.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::mix{dpo::sigmoid{}, dpo::bco_pair{.beta = b}}, in)), invalid_argument, "'bco_pair.beta'");
      CAI_REQUIRE_THROWS_NAMING((loss(with(dpo::hinge{.beta = b}, fdiv::js_divergence{}), in)), invalid_argument, "'hinge.beta'");
    }
  }
  SECTION("label smoothing within each loss's range") {
    for (const double e : {-0.01, 0.5, 0.7, nan})
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::robust{.label_smoothing = e}, in)), invalid_argument, "'robust.label_smoothing'", "[0, 0.5)");
    for (const double e : {0.0, 1.0, -0.2, 1.5, nan})
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::exo_pair{.label_smoothing = e}, in)), invalid_argument, "'exo_pair.label_smoothing'", "(0, 1)");
    for (const double e : {-0.01, 0.51, nan}) {
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{.label_smoothing = e}, in)), invalid_argument, "'sigmoid.label_smoothing'", "[0, 0.5]");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::aot{.label_smoothing = e}, in)), invalid_argument, "'aot.label_smoothing'");
    }
    // The bounds that are allowed.
    CHECK(std::isfinite(loss(dpo::sigmoid{.label_smoothing = 0.5}, in)));
    CHECK(std::isfinite(loss(dpo::robust{.label_smoothing = 0.0}, in)));
    CHECK(std::isfinite(loss(dpo::robust{.label_smoothing = 0.49}, in)));
    CHECK(std::isfinite(loss(dpo::exo_pair{.label_smoothing = 0.999}, in)));
  }
  SECTION("discopop tau, the bco_pair shift, the alpha coefficient, the mix weights") {
    for (const double t : {0.0, -0.05, nan, inf})
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::discopop{.tau = t}, in)), invalid_argument, "'discopop.tau'");
    for (const double x : {nan, inf}) {
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::bco_pair{.delta = x}, in)), invalid_argument, "'bco_pair.delta'");
      CAI_REQUIRE_THROWS_NAMING((loss(with(dpo::sigmoid{}, fdiv::alpha_divergence{x}), in)), invalid_argument, "'divergence.alpha'");
    }
    for (const double w : {-1.0, nan, inf}) {
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::rpo(0.1, w), in)), invalid_argument, "'mix.weights'");
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::mix{dpo::sigmoid{}, dpo::hinge{}}.weighted(w, 1.0), in)), invalid_argument, "'mix.weights'", "at 0");
    }
    CHECK(loss(dpo::mix{dpo::sigmoid{}, dpo::hinge{}}.weighted(0.0, 0.0), in) == 0.0);  // zero weights are allowed
  }
  SECTION("non-finite log-probs name their view") {
    for (std::size_t k = 0; k < 4; ++k)
      for (const double x : {nan, inf, -inf}) {
        std::vector<double> bad = d.v[k];
        bad[3] = x;
        cai::dpo_batch<double> b = in;
        (k == 0 ? b.chosen : k == 1 ? b.rejected : k == 2 ? b.ref_chosen : b.ref_rejected) = cv(bad);
        const std::string quoted = std::string("'") + group_name[k] + "'";
        CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b)), invalid_argument, quoted.c_str(), "finite", "at 3");
      }
  }
  SECTION("mismatched sizes are shape errors naming the view") {
    const std::vector<double> short_v(d.v[0].begin(), d.v[0].end() - 1);
    const std::vector<std::int64_t> short_l(d.lc.begin(), d.lc.end() - 1);
    for (std::size_t k = 1; k < 4; ++k) {
      cai::dpo_batch<double> b = in;
      (k == 1 ? b.rejected : k == 2 ? b.ref_chosen : b.ref_rejected) = cv(short_v);
      const std::string quoted = std::string("'") + group_name[k] + "'";
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b)), cai::shape_error, quoted.c_str());
    }
    cai::dpo_batch<double> b = in;
    b.chosen_lengths = lv(short_l);
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::ipo{}, b)), cai::shape_error, "'chosen_lengths'");
    b = in;
    b.rejected_lengths = lv(short_l);
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid_norm{}, b)), cai::shape_error, "'rejected_lengths'");
    b = in;
    b.weights = cv(short_v);
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b)), cai::shape_error, "'weights'");
    std::vector<double> g(d.size() - 1), g_ok(d.size());
    const auto gv = cai::make_view(g.data(), {n - 1});
    const auto gok = cai::make_view(g_ok.data(), {n});
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, in, {.chosen = gv})), cai::shape_error, "'grads.chosen'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, in, {.chosen = gok, .rejected = gv})), cai::shape_error, "'grads.rejected'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, in, {.ref_chosen = gv})), cai::shape_error, "'grads.ref_chosen'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, in, {.ref_rejected = gv})), cai::shape_error, "'grads.ref_rejected'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, in, {.losses = gv})), cai::shape_error, "'grads.losses'");
  }
  SECTION("the reference: required unless reference_free, and then forbidden") {
    cai::dpo_batch<double> b = in;
    b.ref_chosen = {};
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b)), invalid_argument, "'ref_chosen'", "reference_free");
    b.ref_rejected = {};
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b)), invalid_argument, "'ref_chosen'");
    b = in;
    b.ref_rejected = {};
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b)), invalid_argument, "'ref_rejected'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, in, {}, {.reference_free = true})), invalid_argument, "'ref_chosen'", "reference_free");
    b = in;
    b.ref_chosen = {};
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b, {}, {.reference_free = true})), invalid_argument, "'ref_chosen'");
    b.ref_rejected = {};
    std::vector<double> g(d.size());
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b, {.ref_chosen = cai::make_view(g.data(), {n})}, {.reference_free = true})), invalid_argument,
                              "'grads.ref_chosen'");
    CHECK(std::isfinite(loss(dpo::sigmoid{}, b, {}, {.reference_free = true})));
  }
  SECTION("completion lengths: required by ipo, sigmoid_norm and sft, counts >= 0") {
    cai::dpo_batch<double> b = in;
    b.chosen_lengths = {};
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::ipo{}, b)), invalid_argument, "'chosen_lengths'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid_norm{}, b)), invalid_argument, "'chosen_lengths'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sft{}, b)), invalid_argument, "'chosen_lengths'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::rpo(), b)), invalid_argument, "'chosen_lengths'");
    CAI_REQUIRE_THROWS_NAMING((loss(with(dpo::ipo{}, fdiv::js_divergence{}), b)), invalid_argument, "'chosen_lengths'");
    CHECK(std::isfinite(loss(dpo::sigmoid{}, b)));  // not needed there
    b = in;
    b.rejected_lengths = {};
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::ipo{}, b)), invalid_argument, "'rejected_lengths'");
    std::vector<std::int64_t> neg = d.lc;
    neg[2] = -1;
    b = in;
    b.chosen_lengths = lv(neg);
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::ipo{}, b)), invalid_argument, "'chosen_lengths'", ">= 0", "at 2");
    b = in;
    b.rejected_lengths = lv(neg);
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::sft{} , b)), invalid_argument, "'rejected_lengths'");
  }
  SECTION("per-pair weights: finite, >= 0, and none with aot") {
    for (const double w : {-0.5, nan, inf}) {
      std::vector<double> bad = d.w;
      bad[5] = w;
      cai::dpo_batch<double> b = in;
      b.weights = cv(bad);
      CAI_REQUIRE_THROWS_NAMING((loss(dpo::sigmoid{}, b)), invalid_argument, "'weights'", "at 5");
    }
    cai::dpo_batch<double> b = in;
    b.weights = cv(d.w);
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::aot{}, b)), invalid_argument, "'weights'", "aot");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::aot{.unpaired = true}, b)), invalid_argument, "'weights'");
    CAI_REQUIRE_THROWS_NAMING((loss(dpo::mix{dpo::sigmoid{}, dpo::aot{}}, b)), invalid_argument, "'weights'");
  }
}
