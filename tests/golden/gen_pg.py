#!/usr/bin/python3
"""Golden values for tests/algorithms/golden_pg.cpp: PPO-family policy losses, the value loss and the group
advantage estimators, computed with PyTorch autograd in fp64 from fp32 inputs.

Run with /usr/bin/python3 (the interpreter that has torch):  /usr/bin/python3 tests/golden/gen_pg.py
It writes tests/golden/pg.txt next to this script, in the format of kl_gae.txt (see gen_kl_gae.py and golden.hpp):

    <name> <count> <v_1> ... <v_count>

Every input is drawn in fp32 and written with 17 significant digits, so the C++ test reads the identical values in
float (and, widened exactly, in double). The references are computed in torch float64 from those values (the inputs
upcast exactly), so one file serves cai's float path (compared at about 1e-5 relative) and its double path (about
1e-11). verl computes in fp32; fp64 here removes torch's own rounding from the comparison. Inputs are kept away
from every kink (clip bounds, the dual-clip bound, value-clip bounds, ties of two different branches of a max) by
at least 2e-3 relative (GSPO's sequence ratios: at least 1.5e-4 from its 1 - 3e-4 / 1 + 4e-4 window, a thousand
times float's rounding), so the branch taken never depends on the precision; where a kink is crossed on purpose
(the +-20 log-ratio clamp, GSPO's sequence log-ratio clamp, the k3 clamps) it is crossed by a wide margin.

Written from the peers' documented formulas (verl verl/trainer/ppo/core_algos.py, TRL grpo_trainer.py, OpenRLHF
openrlhf/models/loss.py), not copied from them.

Policy surrogates (x = logp, the variable; o = old_logp; A = advantage; m = response mask):
  ratio        lr = clamp(x - o, -20, 20), r = exp(lr)                       (verl negative_approx_kl clamp)
  ppo_clip     l = max(-A r, -A clamp(r, 1 - eps_low, 1 + eps_high))        (verl compute_policy_loss_vanilla with no
               dual clip; OpenRLHF PolicyLoss; DAPO clip-higher when eps_high > eps_low)
               clip_fraction = mean(l2 > l1) (verl pg_clipfrac), split by r < 1 / r > 1
  dual_clip    for A < 0: l = min(ppo_clip, -A c) (verl clip_ratio_c = 3; pg_clipfrac_lower = mean((l > -A c) & A<0))
  gspo         s_b = sum_t m (x - o) / max(n_b, 1); log r_bt = min(x - sg(x) + sg(s_b), seq_log_ratio_clamp),
               then the ppo_clip max on r_bt (verl compute_policy_loss_gspo: the value is the sequence ratio, the
               gradient per token is r_b); clip_fraction = mean(l2 > l1)
  cispo        l = -sg(clamp(r, 1 - eps_low, 1 + eps_high)) A x; clip_fraction = mean(r != clamp(r)) (verl
               compute_policy_loss_cispo; MiniMax-M1)
  sapo         tau = A > 0 ? tau_pos : tau_neg, l = -A (4 / tau) sigmoid(tau (r - 1)) (verl compute_policy_loss_sapo;
               TRL loss_type "sapo"); no clipping, so its clip fractions are 0
  KL in loss   + coef * agg(E(x - ref)), E = k1 (x - ref) or k3 = verl low_var_kl (kl = clamp(ref - x, +-20),
               clamp(exp(kl) - kl - 1, +-10)) (verl use_kl_loss: policy_loss = pg_loss + kl_loss * kl_loss_coef)
  entropy      - entropy_coef * agg(H), H an input tensor (verl: policy_loss = pg_loss - entropy_coeff * entropy_loss)
Aggregation (verl agg_loss with its current seq_mask convention: rows without counted tokens are left out of the
sequence count S; n_b = counted tokens of row b; N = sum n_b):
  token_mean               sum(l m) / N
  seq_mean_token_sum       sum_b [n_b > 0] sum_t l m / S
  seq_mean_token_mean      sum_b [n_b > 0] (sum_t l m / n_b) / S   (verl adds 1e-8 to n_b: < 1e-8 relative, omitted)
  seq_mean_token_sum_norm  sum_b [n_b > 0] sum_t l m / S / norm, norm = the padded width T unless given
                           (verl loss_scale_factor; TRL dr_grpo divides by the max completion length)
Outputs: loss, pg_loss, kl_loss, entropy_loss, dloss/dlogp, dloss/dentropy (autograd), and the metrics
[tokens, clip_fraction, clip_fraction_low, clip_fraction_high, dual_clip_fraction, approx_kl = mean(o - x)].
'<case>.scale' is the aggregate of |each term| (a bound on cancellation, for the absolute tolerance).

Value loss (verl compute_value_loss, OpenRLHF ValueLoss): vc = clamp(v, v_old - c, v_old + c) (torch.clamp with
tensor bounds), l = 0.5 max((v - R)^2, (vc - R)^2) (clipped) or 0.5 (v - R)^2, aggregated as above; outputs the loss,
dloss/dv, [tokens, clip_fraction = mean((vc - R)^2 > (v - R)^2), value_mean, return_mean, explained_variance =
1 - Var(R - v) / Var(R)].

Advantages (scores s_i, groups of consecutive group_size rows; mean / std = torch.mean / torch.std (Bessel); a
group of one sample has mean 0 and std 1; sequence advantages are broadcast to the counted tokens):
  grpo         (s - mean_g) / (std_g + 1e-6)              verl compute_grpo_outcome_advantage
  grpo batch   (s - mean_g) / (std_batch + 1e-4)          TRL scale_rewards="batch" (TRL's eps 1e-4)
  dr_grpo      s - mean_g                                  verl norm_adv_by_std_in_grpo=False (Dr.GRPO)
  rloo         s n/(n-1) - mean_g n/(n-1)                  verl compute_rloo_outcome_advantage
  opo          s - sum_g(L s) / sum_g(L), L = counted tokens    verl compute_opo_outcome_advantage
  gpg          alpha (s - mean_g) / f_norm, alpha = B / max(count_nonzero(s), 1)    verl compute_gpg_outcome_advantage
  reinforce_pp_baseline   masked_whiten((s - mean_g) broadcast)    verl compute_reinforce_plus_plus_baseline_...
  reinforce_pp  verl's loop: running = r_t + gamma running; returns_t = running; running *= m_t (reset after EOS),
                then masked_whiten (mean, unbiased var, rsqrt(var + 1e-8)). The masks used here are single spans
                (optionally after masked prompt-side tokens), where that reset and cai's "masked steps are the
                identity" rule coincide.
  remax        returns = reverse cumsum of r m; advantages = returns - b m      verl compute_remax_outcome_advantage
               (and, from scores alone, s - b)
Scores given directly, or (grpo_tok) as the sum of the counted token rewards; the token rewards carry nonzero
values at masked positions, which verl never has (its token_level_rewards are 0 there) and which cai's documented
rule ignores. verl leaves returns (remax, reinforce_pp) and remax advantages nonzero at masked positions; cai writes
0 there (documented), so only counted positions are compared with the reference.
"""
import math
import os

import torch

torch.manual_seed(20250301)
out_lines = []
F32, F64 = torch.float32, torch.float64


def put(name, tensor):
    flat = [float(v) for v in torch.as_tensor(tensor, dtype=F64 if isinstance(tensor, list) else None).detach().reshape(-1).tolist()]
    out_lines.append(name + " " + str(len(flat)) + " " + " ".join("%.17g" % v for v in flat))


def near_any(v, points, rel):
    return any(abs(v - p) <= rel * abs(p) for p in points)


# ----- aggregation (verl agg_loss semantics, see the docstring) -----------------------------------------------------
def aggregate(lmat, m, mode, norm=None):
    n = m.sum(-1)
    has = (n > 0).to(lmat.dtype)
    S = has.sum()
    row_sum = (lmat * m).sum(-1)
    if mode == "token_mean":
        return row_sum.sum() / n.sum()
    if mode == "seq_mean_token_sum":
        return (row_sum * has).sum() / S
    if mode == "seq_mean_token_mean":
        return (row_sum / n.clamp(min=1) * has).sum() / S
    if mode == "seq_mean_token_sum_norm":
        return (row_sum * has).sum() / S / (norm if norm is not None else m.shape[-1])
    raise ValueError(mode)


# ----- policy batch -------------------------------------------------------------------------------------------------
B, T = 8, 12
pmask = torch.zeros(B, T, dtype=F32)
pmask[0, :] = 1  # full row (holds the +-25 log ratios beyond the +-20 clamp)
pmask[1, :7] = 1  # right padding
pmask[2, :1] = 1  # a length-1 row
# row 3: fully masked
pmask[4, 1:10] = 1  # a masked prompt-side token, then padding
pmask[5] = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 0], dtype=F32)  # several spans
pmask[6, :4] = 1
pmask[7, 2:] = 1

# Kinks to stay away from: clip bounds of every eps used, the dual-clip bound c = 3, and r = 1.
RATIO_KINKS = [0.8, 1.2, 1.28, 3.0, 1.0]


def draw_policy_inputs():
    old = -(torch.rand(B, T, dtype=F32) * 3.0 + 0.2)
    d = torch.randn(B, T, dtype=F32) * 0.35
    adv = torch.randn(B, T, dtype=F32)
    # Tokens for the dual clip: A < 0 with r well above c = 3 (and one between 1.28 and 3).
    for (b, t, dd) in [(1, 2, 1.45), (4, 5, 1.9), (7, 8, 1.25), (5, 4, 0.6), (0, 9, 2.3)]:
        d[b, t] = dd
        adv[b, t] = -abs(adv[b, t]) - 0.3
    adv[6, 1] = 0.0  # A = 0: both branches 0, no gradient
    logp = old + d
    # Beyond the +-20 log-ratio clamp (A > 0 so the loss stays O(1)): exp(clamp) with zero gradient.
    old[0, 3], logp[0, 3], adv[0, 3] = -26.5, -1.5, 0.8
    old[0, 7], logp[0, 7], adv[0, 7] = -0.5, -25.5, 1.1
    # Keep counted tokens off every kink (recomputed from the fp32 values actually written).
    for b in range(B):
        for t in range(T):
            if not pmask[b, t] or (b == 0 and t in (3, 7)):
                continue
            while near_any(math.exp(float(logp[b, t].double() - old[b, t].double())), RATIO_KINKS, 2e-3):
                logp[b, t] = old[b, t] + torch.randn(1, dtype=F32) * 0.35
    ref = logp + torch.randn(B, T, dtype=F32) * 0.3
    # KL estimator clamps: d = x - ref = 25 (beyond k3's +-20 log-ratio clamp), d = -12.5 (k3 = e^12.5 - 13.5, above
    # its estimate clamp 10); d = -2 (k3 = 4.39, inside both).
    ref[0, 3], ref[0, 7], ref[7, 4] = logp[0, 3] - 25.0, logp[0, 7] + 12.5, logp[7, 4] + 2.0
    ent = torch.randn(B, T, dtype=F32).abs() * 2.0
    # Values cai must never read at masked positions: large but finite (NaN cannot be written in this format).
    garbage = pmask == 0
    logp = torch.where(garbage, old + 7.0, logp)
    adv = torch.where(garbage, torch.full_like(adv, -5.0), adv)
    ref = torch.where(garbage, logp - 30.0, ref)
    ent = torch.where(garbage, torch.full_like(ent, 99.0), ent)
    return logp, old, adv, ref, ent


logp, old, adv, ref, ent = draw_policy_inputs()

# GSPO inputs: each row's mean log-ratio is set (inside the default window [0.9997, 1.0004], clipped on either side,
# far outside it, above the sequence clamp 0.5 of the second case), advantages constant per row (GRPO-like).
gspo_row_mean = [1.0e-4, 2.5e-3, -0.3, 0.0, -4.0e-3, -1.5e-4, 0.7, 0.3]
gspo_row_adv = [0.9, 1.3, -0.6, 0.4, -1.1, -0.7, -0.8, 0.5]
gspo_logp = logp.clone()
for b in range(B):
    idx = pmask[b].nonzero().flatten()
    if len(idx) == 0:
        continue
    while True:
        noise = torch.randn(len(idx), dtype=torch.float64) * 0.05
        noise -= noise.mean()
        vals = (old[b, idx].double() + gspo_row_mean[b] + noise).to(F32)
        s = float((vals.double() - old[b, idx].double()).mean())
        # the realised mean stays within 5e-5 of the target: far from 1 - 3e-4, 1 + 4e-4, 1 +- 0.2 and 0.5
        if abs(s - gspo_row_mean[b]) < 5e-6:
            break
    gspo_logp[b, idx] = vals
gspo_adv = torch.tensor(gspo_row_adv, dtype=F32).unsqueeze(-1).expand(B, T).contiguous()

put("pg.shape", [B, T])
put("pg.mask", pmask)
put("pg.logp", logp)
put("pg.old_logp", old)
put("pg.advantages", adv)
put("pg.ref_logp", ref)
put("pg.entropy", ent)
put("pg.gspo_logp", gspo_logp)
put("pg.gspo_advantages", gspo_adv)


def k1(x, r):
    return x - r


def k3(x, r):
    kl = torch.clamp(r - x, min=-20, max=20)
    return torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)


def policy_case(name, surrogate, agg, norm=None, kl=None, entropy_coef=0.0, gspo_inputs=False, **p):
    m = pmask.double()
    x = (gspo_logp if gspo_inputs else logp).double().requires_grad_(True)
    o = old.double()
    A = (gspo_adv if gspo_inputs else adv).double()
    H = ent.double().requires_grad_(True)
    rf = ref.double()
    cnt = m > 0
    dual = torch.zeros_like(cnt)
    if surrogate == "gspo":
        n = m.sum(-1).clamp(min=1)
        s = ((x - o) * m).sum(-1) / n
        lr = torch.clamp(x - x.detach() + s.detach().unsqueeze(-1), max=p.get("seq_log_ratio_clamp", 10.0))
    else:
        lr = torch.clamp(x - o, min=-20.0, max=20.0)
    r = torch.exp(lr)
    if surrogate in ("ppo_clip", "dual_clip", "gspo"):
        l1 = -A * r
        l2 = -A * torch.clamp(r, 1 - p["eps_low"], 1 + p["eps_high"])
        l = torch.maximum(l1, l2)
        clipped = l2 > l1
        if surrogate == "dual_clip":
            l3 = -A * p["c"]
            dual = (l > l3) & (A < 0)
            l = torch.where(A < 0, torch.minimum(l, l3), l)
    elif surrogate == "cispo":
        rc = torch.clamp(r, 1 - p["eps_low"], 1 + p["eps_high"]).detach()
        l = -rc * A * x
        clipped = r != rc
    elif surrogate == "sapo":
        tau = torch.where(A > 0, torch.full_like(A, p["tau_pos"]), torch.full_like(A, p["tau_neg"]))
        l = -A * torch.sigmoid(tau * (r - 1.0)) * (4.0 / tau)
        clipped = torch.zeros_like(cnt)
    else:
        raise ValueError(surrogate)
    pg = aggregate(l, m, agg, norm)
    scale = aggregate(l.abs(), m, agg, norm)
    loss = pg
    kl_loss = torch.zeros((), dtype=F64)
    if kl is not None:
        est, coef = kl
        kv = est(x, rf)
        kl_loss = aggregate(kv, m, agg, norm)
        loss = loss + coef * kl_loss
        scale = scale + coef * aggregate(kv.abs(), m, agg, norm)
    ent_loss = aggregate(H, m, agg, norm)
    loss = loss - entropy_coef * ent_loss
    scale = scale + abs(entropy_coef) * ent_loss
    loss.backward()
    rr = r.detach()
    N = cnt.sum()
    metrics = [
        float(N),
        float((clipped & cnt).sum()) / float(N),
        float((clipped & cnt & (rr < 1)).sum()) / float(N),
        float((clipped & cnt & (rr > 1)).sum()) / float(N),
        float((dual & cnt).sum()) / float(N),
        float(((o - x.detach()) * m).sum() / m.sum()),
    ]
    put(name + ".loss", loss)
    put(name + ".pg_loss", pg)
    put(name + ".kl_loss", kl_loss)
    put(name + ".entropy_loss", ent_loss)
    put(name + ".scale", scale)
    put(name + ".dlogp", x.grad)
    put(name + ".dentropy", H.grad)
    put(name + ".metrics", metrics)


# The objective of each case is spelled in golden_pg.cpp as a cai::objective_from_string string.
policy_case("ppo_sym_tm", "ppo_clip", "token_mean", eps_low=0.2, eps_high=0.2)
policy_case("ppo_sym_smtm", "ppo_clip", "seq_mean_token_mean", eps_low=0.2, eps_high=0.2)
policy_case("ppo_asym_smts", "ppo_clip", "seq_mean_token_sum", eps_low=0.2, eps_high=0.28)
policy_case("ppo_asym_norm", "ppo_clip", "seq_mean_token_sum_norm", eps_low=0.2, eps_high=0.28)
policy_case("dual_tm", "dual_clip", "token_mean", eps_low=0.2, eps_high=0.28, c=3.0)
policy_case("dual_smts", "dual_clip", "seq_mean_token_sum", eps_low=0.2, eps_high=0.2, c=3.0)
policy_case("gspo_smtm", "gspo", "seq_mean_token_mean", gspo_inputs=True, eps_low=3e-4, eps_high=4e-4)
policy_case("gspo_tm_cap", "gspo", "token_mean", gspo_inputs=True, eps_low=0.2, eps_high=0.2, seq_log_ratio_clamp=0.5)
policy_case("cispo_tm", "cispo", "token_mean", eps_low=0.2, eps_high=0.28)
policy_case("cispo_norm16", "cispo", "seq_mean_token_sum_norm", norm=16.0, eps_low=0.2, eps_high=0.28)
policy_case("sapo_smtm", "sapo", "seq_mean_token_mean", tau_pos=1.0, tau_neg=1.05)
policy_case("sapo_smts", "sapo", "seq_mean_token_sum", tau_pos=1.0, tau_neg=1.05)
policy_case("ppo_k3_ent_tm", "ppo_clip", "token_mean", kl=(k3, 0.1), entropy_coef=0.01, eps_low=0.2, eps_high=0.28)
policy_case("dual_k1_ent_smtm", "dual_clip", "seq_mean_token_mean", kl=(k1, 0.05), entropy_coef=0.02,
            eps_low=0.2, eps_high=0.2, c=3.0)

# ----- value loss ---------------------------------------------------------------------------------------------------
values = torch.randn(B, T, dtype=F32)
old_values = values + torch.randn(B, T, dtype=F32) * 0.5
returns = torch.randn(B, T, dtype=F32)
for b in range(B):
    for t in range(T):
        if not pmask[b, t]:
            continue
        while True:
            v, vo, R = (float(z[b, t]) for z in (values, old_values, returns))
            ok = all(abs(abs(v - vo) - c) > 2e-3 for c in (0.5, 0.2))
            for c in (0.5, 0.2):  # no tie between the two squared errors when the clip is active
                vc = min(max(v, vo - c), vo + c)
                if vc != v and abs((v - R) ** 2 - (vc - R) ** 2) < 2e-3 * max((v - R) ** 2, 1e-3):
                    ok = False
            if ok:
                break
            old_values[b, t] = values[b, t] + torch.randn(1, dtype=F32) * 0.5
values = torch.where(pmask == 0, torch.full_like(values, 50.0), values)
put("vf.values", values)
put("vf.old_values", old_values)
put("vf.returns", returns)


def value_case(name, clip, agg):
    m = pmask.double()
    v = values.double().requires_grad_(True)
    vo, R = old_values.double(), returns.double()
    e1 = (v - R) ** 2
    if clip is None:
        l = 0.5 * e1
        clipped = torch.zeros_like(m, dtype=torch.bool)
    else:
        vc = torch.clamp(v, vo - clip, vo + clip)
        e2 = (vc - R) ** 2
        l = 0.5 * torch.maximum(e1, e2)
        clipped = e2 > e1
    loss = aggregate(l, m, agg)
    loss.backward()
    cnt = m > 0
    N = cnt.sum()
    vv = v.detach()[cnt]
    RR = R[cnt]
    ev = 1.0 - torch.var(RR - vv) / torch.var(RR)
    put(name + ".loss", loss)
    put(name + ".scale", aggregate(l.abs(), m, agg))
    put(name + ".dvalues", v.grad)
    put(name + ".metrics", [float(N), float((clipped & cnt).sum()) / float(N), float(vv.mean()), float(RR.mean()), float(ev)])


value_case("vf_clip05_tm", 0.5, "token_mean")
value_case("vf_clip02_smtm", 0.2, "seq_mean_token_mean")
value_case("vf_unclipped_tm", None, "token_mean")
value_case("vf_unclipped_smts", None, "seq_mean_token_sum")

# ----- advantages ---------------------------------------------------------------------------------------------------
AB, AT, G = 12, 6, 4
lengths = [6, 3, 1, 0, 5, 5, 2, 4, 1, 4, 3, 5]
starts = [0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1]  # rows 5, 9, 11 begin with masked prompt-side tokens
amask = torch.zeros(AB, AT, dtype=F32)
for i, (s0, L) in enumerate(zip(starts, lengths)):
    amask[i, s0:s0 + L] = 1 if L else 0
    if s0 + L > AT:
        raise ValueError("row too long")
scores = torch.cat([torch.randn(4, dtype=F32),  # group 0: generic
                    torch.full((4,), 0.75, dtype=F32),  # group 1: all equal
                    torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=F32)])  # group 2: binary (zeros for gpg's alpha)
baseline = torch.randn(AB, dtype=F32)
token_rewards = torch.randn(AB, AT, dtype=F32) * 0.5
token_rewards = torch.where(amask == 0, torch.full_like(token_rewards, 3.0), token_rewards)  # ignored positions
put("adv.shape", [AB, AT])
put("adv.group_size", [G])
put("adv.mask", amask)
put("adv.scores", scores)
put("adv.baseline_scores", baseline)
put("adv.token_rewards", token_rewards)

am = amask.double()
lens = am.sum(-1)


def groups_of(s, g):
    return [list(range(k, k + g)) for k in range(0, len(s), g)]


def group_outcome(s, g, kind, f_norm=1.0, eps=1e-6):
    """Per-sample advantages of the group estimators (fp64)."""
    s = s.double()
    a = torch.zeros_like(s)
    batch_std = torch.std(s)
    alpha = len(s) / max(int(torch.count_nonzero(s)), 1)
    for idx in groups_of(s, g):
        sg = s[idx]
        single = len(idx) == 1
        mean = torch.tensor(0.0, dtype=F64) if single else sg.mean()
        std = torch.tensor(1.0, dtype=F64) if single else torch.std(sg)
        for i in idx:
            if kind == "grpo":
                a[i] = (s[i] - mean) / (std + eps)
            elif kind == "grpo_batch":
                a[i] = (s[i] - mean) / (batch_std + eps)
            elif kind in ("dr_grpo", "centred"):
                a[i] = s[i] - mean
            elif kind == "rloo":
                n = len(idx)
                a[i] = s[i] * n / (n - 1) - mean * n / (n - 1) if n > 1 else s[i]
            elif kind == "opo":
                L = lens[idx]
                bsl = torch.tensor(0.0, dtype=F64) if single else (L * sg).sum() / L.sum()
                a[i] = s[i] - bsl
            elif kind == "gpg":
                a[i] = alpha * (s[i] - mean) / f_norm
            else:
                raise ValueError(kind)
    return a


def masked_whiten(x, m, eps=1e-8):
    mean = (x * m).sum() / m.sum()
    c = x - mean
    var = (c * c * m).sum() / (m.sum() - 1)  # unbiased (verl masked_var)
    return c * torch.rsqrt(var + eps)


def put_adv(name, seq_adv=None, tok=None, ret=None):
    if tok is None:
        tok = seq_adv.unsqueeze(-1) * am
    put(name + ".advantages", tok)
    if seq_adv is not None:
        put(name + ".seq", seq_adv)
    if ret is not None:
        put(name + ".returns", ret)


for kind in ("grpo", "dr_grpo", "rloo", "opo"):
    put_adv(kind, group_outcome(scores, G, kind))
put_adv("grpo_batch", group_outcome(scores, G, "grpo_batch", eps=1e-4))
put_adv("gpg", group_outcome(scores, G, "gpg"))
put_adv("gpg_f2", group_outcome(scores, G, "gpg", f_norm=2.0))
put_adv("grpo_single", group_outcome(scores, 1, "grpo"))  # groups of one: mean 0, std 1
put_adv("grpo_tok", group_outcome((token_rewards.double() * am).sum(-1), G, "grpo"))  # scores from token rewards
put_adv("rpp_baseline", tok=masked_whiten(group_outcome(scores, G, "centred").unsqueeze(-1) * am, am) * am)
put_adv("remax_scores", scores.double() - baseline.double())


def remax_tokens():
    ret = (token_rewards.double() * am).flip(dims=[-1]).cumsum(dim=-1).flip(dims=[-1])
    return ret - baseline.double().unsqueeze(-1) * am, ret


a_rm, r_rm = remax_tokens()
put_adv("remax_tok", tok=a_rm, ret=r_rm)


def reinforce_pp(gamma):
    r = token_rewards.double()
    ret = torch.zeros_like(r)
    running = torch.zeros(AB, dtype=F64)
    for t in reversed(range(AT)):
        running = r[:, t] + gamma * running
        ret[:, t] = running
        running = running * am[:, t]
    return masked_whiten(ret, am) * am, ret


for gname, gamma in (("rpp_g1", 1.0), ("rpp_g09", 0.9)):
    a_r, r_r = reinforce_pp(gamma)
    put_adv(gname, tok=a_r, ret=r_r)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg.txt")
with open(path, "w") as f:
    f.write("# Generated by tests/golden/gen_pg.py with torch " + torch.__version__ + "; do not edit.\n")
    f.write("# <name> <count> <values...>\n")
    for line in out_lines:
        f.write(line + "\n")
print("wrote", path, len(out_lines), "records", os.path.getsize(path), "bytes")
