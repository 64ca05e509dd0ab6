#!/usr/bin/python3
"""Golden values for tests/algorithms/kto.cpp (KTO, APO-zero unpaired, BCO), tests/algorithms/orpo.cpp (ORPO) and
tests/algorithms/simpo.cpp (CPO / SimPO / AlphaPO), computed with PyTorch autograd in fp64.

Run with /usr/bin/python3 (the interpreter that has torch):  /usr/bin/python3 tests/golden/gen_unpaired_orpo_simpo.py
It writes tests/golden/unpaired_orpo_simpo.txt next to this script, in the format of kl_gae.txt (see gen_kl_gae.py
and golden.hpp):

    <name> <count> <v_1> ... <v_count>

Every input is drawn in fp32 and written with 17 significant digits, so the C++ test reads identical values in float
and (widened exactly) in double; the references are evaluated in torch float64 from those values. TRL evaluates in
the model's dtype (and BCO's RunningMoments in fp32): fp64 here removes torch's own rounding from the comparison,
the formulas are TRL's.

Written the way TRL writes them (HEAD f2cd577 / the mirror's snapshot), with F.sigmoid / F.logsigmoid / torch.relu:
  KTO (trl/trainer/kto_trainer.py KTOTrainer._compute_loss), rho = logp - ref_logp, losses concatenated
  [desirable ; undesirable] and averaged with nanmean:
      z0 = clamp_min(mean(KL_logp - KL_ref), 0)   (the mismatched pairs, no gradient)
      desirable:   desirable_weight   * (1 - F.sigmoid(beta * (rho - z0)))
      undesirable: undesirable_weight * (1 - F.sigmoid(beta * (z0 - rho)))
    loss_type "apo_zero_unpaired": desirable 1 - F.sigmoid(beta * rho), undesirable F.sigmoid(beta * rho).
  BCO (trl/experimental/bco/bco_trainer.py bco_loss, RunningMoments): R = beta * rho; on a training step the
    running mean is updated with the vector of this batch's R first (count-weighted: mean += (x_mean - mean) n / N,
    initial count 1e-24), then delta = the running mean; desirable -F.logsigmoid(R - delta), undesirable
    -F.logsigmoid(-(R - delta)) * w (UDM weight; desirable examples weight 1); loss = nanmean.
  ORPO (trl/experimental/orpo/orpo_trainer.py odds_ratio_loss, log1mexp): a, b mean log-probs,
      log1mexp(x) = torch.where(x < -ln 2, log1p(-exp(x)), log(-expm1(x)))
      log_odds = (a - b) - (log1mexp(a) - log1mexp(b));  ratio = F.logsigmoid(log_odds)
      loss = nll - (beta * ratio).mean(),  nll = -sum(nll_sums) / sum(nll_tokens)  (CrossEntropyLoss token mean)
  CPO (trl/experimental/cpo/cpo_trainer.py cpo_loss): alpha != 0: R = (1 - exp(l).pow(-alpha)) / alpha, else R = l;
      logits = R_c - R_r;  simpo: logits -= gamma / beta, then (simpo and sigmoid)
      -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps;
      hinge: torch.relu(1 - beta * logits);  ipo: (logits - 1 / (2 * beta)) ** 2
      loss = losses.mean() + cpo_alpha * nll  (nll as ORPO's, on the chosen completion tokens).
Gradients are autograd's w.r.t. every log-prob input (d/d ref_logp too, which TRL detaches) and the NLL sums.

Records:
  kto.logp kto.ref kto.desirable (B), kto.kl_logp kto.kl_ref (B, mismatched pairs, mean ratio > 0),
  kto.kl_logp_neg kto.kl_ref_neg (mean ratio < 0); per case kto.<case>.{beta, wd, wu, z0, loss, dlogp, dref,
  losses, metrics (rewards chosen, rejected, margin, #desirable, #undesirable)}; the apo case has z0 = 0.
  bco.b<k>.{logp, ref, desirable, weights (b2 only), update (0/1), delta, loss, dlogp, dref, losses, metrics}
  run in order b1, b2, b3 (b3 is an evaluation step: no update); bco.beta.
  orpo.a orpo.b orpo.nll_sums orpo.nll_tokens; orpo.<case>.{beta, loss, da, db, dnll, losses (-beta log s(L)), L,
  metrics (chosen, rejected, margin, accuracy), nll, log_odds_ratio, log_odds_chosen}.
  cpo.<set>.{lc, lr, nll_sums, nll_tokens} for set sum and mean; cpo.<case>.{set (0 sum, 1 mean), type (0 sigmoid,
  1 simpo, 2 hinge, 3 ipo), beta, gamma, eps, alpha, nll_coef, loss, dlc, dlr, dnll, losses, metrics, nll}.
"""
import math
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20240923)
F32, F64 = torch.float32, torch.float64
out_lines = []


def put(name, tensor):
    flat = [float(v) for v in torch.as_tensor(tensor, dtype=F64).detach().reshape(-1).tolist()]
    out_lines.append(name + " " + str(len(flat)) + " " + " ".join("%.17g" % v for v in flat))


def f32(t):
    """fp32-representable values, held in float64 for the computation."""
    return torch.as_tensor(t, dtype=F64).to(F32).to(F64)


def leaf(t):
    return t.clone().detach().requires_grad_(True)


# ----- KTO ---------------------------------------------------------------------------------------------------------
B = 12
kto_logp = f32(-torch.rand(B, dtype=F64) * 70.0 - 10.0)
kto_ref = f32(kto_logp + torch.randn(B, dtype=F64) * 6.0)
kto_des = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1], dtype=F64)
kto_ref[4] = kto_logp[4]  # rho = 0
kl_logp = f32(-torch.rand(B, dtype=F64) * 70.0 - 10.0)
kl_ref = f32(kl_logp - torch.rand(B, dtype=F64) * 4.0 + 1.0)  # mean ratio ~ +1
kl_logp_neg = f32(-torch.rand(B, dtype=F64) * 70.0 - 10.0)
kl_ref_neg = f32(kl_logp_neg + torch.rand(B, dtype=F64) * 4.0 + 0.5)  # mean ratio < 0
put("kto.logp", kto_logp)
put("kto.ref", kto_ref)
put("kto.desirable", kto_des)
put("kto.kl_logp", kl_logp)
put("kto.kl_ref", kl_ref)
put("kto.kl_logp_neg", kl_logp_neg)
put("kto.kl_ref_neg", kl_ref_neg)


def kto_case(name, beta, wd, wu, kl_pair, apo):
    if apo:
        z0 = torch.zeros((), dtype=F64)
    else:
        z0 = (kl_pair[0] - kl_pair[1]).mean().detach().clamp(min=0)
    lp, rf = leaf(kto_logp), leaf(kto_ref)
    d_idx = torch.nonzero(kto_des == 1).reshape(-1)
    u_idx = torch.nonzero(kto_des == 0).reshape(-1)
    c_ratio = lp[d_idx] - rf[d_idx]
    r_ratio = lp[u_idx] - rf[u_idx]
    if apo:
        c_losses = 1 - F.sigmoid(beta * c_ratio)
        r_losses = F.sigmoid(beta * r_ratio)
    else:
        c_losses = 1 - F.sigmoid(beta * (c_ratio - z0))
        r_losses = 1 - F.sigmoid(beta * (z0 - r_ratio))
    losses = torch.cat((wd * c_losses, wu * r_losses), 0)
    loss = losses.nanmean()
    loss.backward()
    per = torch.zeros(B, dtype=F64)
    per[d_idx] = (wd * c_losses).detach()
    per[u_idx] = (wu * r_losses).detach()
    rc = (beta * c_ratio).detach().mean()
    rr = (beta * r_ratio).detach().mean()
    p = "kto." + name
    put(p + ".beta", [beta])
    put(p + ".wd", [wd])
    put(p + ".wu", [wu])
    put(p + ".z0", [z0])
    put(p + ".loss", [loss])
    put(p + ".dlogp", lp.grad)
    put(p + ".dref", rf.grad)
    put(p + ".losses", per)
    put(p + ".metrics", [rc, rr, rc - rr, len(d_idx), len(u_idx)])


kto_case("default", 0.1, 1.0, 1.0, (kl_logp, kl_ref), False)
kto_case("weighted", 0.5, 1.33, 0.75, (kl_logp, kl_ref), False)
kto_case("z0_clamped", 0.25, 1.0, 1.0, (kl_logp_neg, kl_ref_neg), False)
kto_case("apo", 0.2, 0.8, 1.2, None, True)

# ----- BCO ---------------------------------------------------------------------------------------------------------
bco_beta = 0.2
put("bco.beta", [bco_beta])
running_mean, running_count = 0.0, 1e-24  # TRL RunningMoments initial state (in fp64 here)
for k, (n, des, update) in enumerate([(10, [1, 0, 0, 1, 1, 0, 1, 0, 1, 1], True),
                                      (7, [0, 1, 0, 0, 1, 0, 1], True),
                                      (5, [1, 0, 1, 0, 0], False)], start=1):
    logp = f32(-torch.rand(n, dtype=F64) * 60.0 - 5.0)
    ref = f32(logp + torch.randn(n, dtype=F64) * 8.0 + (3.0 if k == 2 else 0.0))
    des_t = torch.tensor(des, dtype=F64)
    d_idx = torch.nonzero(des_t == 1).reshape(-1)
    u_idx = torch.nonzero(des_t == 0).reshape(-1)
    udm = k == 2
    w = torch.ones(n, dtype=F64)
    if udm:
        w[u_idx] = f32(torch.clamp(torch.rand(len(u_idx), dtype=F64) * 12.0, 0.5, 10.0))
    lp, rf = leaf(logp), leaf(ref)
    c_rewards = bco_beta * (lp[d_idx] - rf[d_idx])
    r_rewards = bco_beta * (lp[u_idx] - rf[u_idx])
    if update:
        xs = torch.cat((c_rewards, r_rewards), 0).detach()
        xs_count = xs.numel()
        delta_m = xs.mean().item() - running_mean
        tot = running_count + xs_count
        running_mean += delta_m * xs_count / tot
        running_count = tot
    delta = torch.as_tensor(running_mean, dtype=F64)
    c_losses = -F.logsigmoid(c_rewards - delta)
    r_losses = -F.logsigmoid(-(r_rewards - delta))
    if udm:
        losses = torch.cat((torch.ones_like(c_losses) * c_losses, w[u_idx] * r_losses), dim=0)
    else:
        losses = torch.cat((c_losses, r_losses), 0)
    loss = losses.nanmean()
    loss.backward()
    per = torch.zeros(n, dtype=F64)
    per[d_idx] = c_losses.detach()
    per[u_idx] = (w[u_idx] * r_losses).detach()
    rc, rr = c_rewards.detach().mean(), r_rewards.detach().mean()
    p = "bco.b%d" % k
    put(p + ".logp", logp)
    put(p + ".ref", ref)
    put(p + ".desirable", des_t)
    if udm:
        put(p + ".weights", w)
    put(p + ".update", [1.0 if update else 0.0])
    put(p + ".delta", [delta])
    put(p + ".loss", [loss])
    put(p + ".dlogp", lp.grad)
    put(p + ".dref", rf.grad)
    put(p + ".losses", per)
    put(p + ".metrics", [rc, rr, rc - rr, len(d_idx), len(u_idx)])

# ----- ORPO --------------------------------------------------------------------------------------------------------


def log1mexp(x):  # TRL orpo_trainer.log1mexp
    t = -0.6931471805599453
    return torch.where(x < t, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


B = 10
oa = f32(-torch.rand(B, dtype=F64) * 2.5 - 0.05)
ob = f32(-torch.rand(B, dtype=F64) * 2.5 - 0.05)
oa[2] = f32(-1e-6)     # chosen almost certain
ob[5] = oa[5]          # a tie: L = 0
oa[7] = f32(-1e-12)    # chosen "certain" to fp64 accuracy 1e-12
oa[8], ob[8] = f32(-2.5), f32(-1e-5)  # rejected almost certain: L very negative
oa[9], ob[9] = f32(-0.5), f32(-0.9)   # either side of -ln 2
nll_tokens = torch.randint(10, 100, (B,)).to(F64)
nll_sums = f32(-torch.rand(B, dtype=F64) * 1.5 * nll_tokens)
put("orpo.a", oa)
put("orpo.b", ob)
put("orpo.nll_sums", nll_sums)
put("orpo.nll_tokens", nll_tokens)
for case, beta in [("b01", 0.1), ("b1", 1.0)]:
    a, b, s = leaf(oa), leaf(ob), leaf(nll_sums)
    log_odds = (a - b) - (log1mexp(a) - log1mexp(b))
    ratio = F.logsigmoid(log_odds)
    losses = beta * ratio
    nll = -s.sum() / nll_tokens.sum()
    loss = nll - losses.mean()
    loss.backward()
    rc, rr = beta * oa, beta * ob
    p = "orpo." + case
    put(p + ".beta", [beta])
    put(p + ".loss", [loss])
    put(p + ".da", a.grad)
    put(p + ".db", b.grad)
    put(p + ".dnll", s.grad)
    put(p + ".losses", -losses)
    put(p + ".L", log_odds)
    put(p + ".metrics", [rc.mean(), rr.mean(), (rc - rr).mean(), (rc > rr).to(F64).mean()])
    put(p + ".nll", [nll])
    put(p + ".log_odds_ratio", [ratio.mean()])
    put(p + ".log_odds_chosen", [log_odds.mean()])

# ----- CPO / SimPO / AlphaPO ---------------------------------------------------------------------------------------
B = 10
yc = torch.randint(3, 40, (B,)).to(F64)
yr = torch.randint(3, 40, (B,)).to(F64)
sum_c = f32(-torch.rand(B, dtype=F64) * 38.0 - 2.0)
sum_r = f32(-torch.rand(B, dtype=F64) * 38.0 - 2.0)
sum_r[3] = sum_c[3]  # a tie (accuracy counts it wrong)
sets = {
    "sum": (sum_c, sum_r, sum_c, yc),
    "mean": (f32(sum_c / yc), f32(sum_r / yr), sum_c, yc),
}
for name, (lc, lr, ns, nt) in sets.items():
    put("cpo." + name + ".lc", lc)
    put("cpo." + name + ".lr", lr)
    put("cpo." + name + ".nll_sums", ns)
    put("cpo." + name + ".nll_tokens", nt)

TYPES = {"sigmoid": 0, "simpo": 1, "hinge": 2, "ipo": 3}
cases = [  # name, set, type, beta, gamma, eps, alpha, nll_coef
    ("sigmoid", "sum", "sigmoid", 0.1, 0.0, 0.0, 0.0, 1.0),
    ("sigmoid_ls", "sum", "sigmoid", 0.1, 0.0, 0.2, 0.0, 1.0),
    ("hinge", "sum", "hinge", 0.1, 0.0, 0.0, 0.0, 0.5),
    ("hinge_alpha", "sum", "hinge", 0.1, 0.0, 0.0, 0.25, 0.0),
    ("simpo", "mean", "simpo", 2.5, 1.375, 0.0, 0.0, 0.0),
    ("simpo_ls", "mean", "simpo", 2.0, 0.5, 0.1, 0.0, 1.0),
    ("ipo", "mean", "ipo", 0.1, 0.0, 0.0, 0.0, 1.0),
    ("ipo_alpha", "mean", "ipo", 0.5, 0.0, 0.0, -0.5, 1.0),
    ("alphapo", "mean", "simpo", 2.5, 0.1, 0.0, 0.25, 0.0),
    ("alphapo_neg", "mean", "sigmoid", 1.0, 0.0, 0.0, -0.5, 1.0),
    ("alphapo_sum", "sum", "sigmoid", 0.05, 0.0, 0.1, 0.25, 1.0),
]
for case, st, typ, beta, gamma, eps, alpha, coef in cases:
    lc0, lr0, ns0, nt0 = sets[st]
    lc, lr, ns = leaf(lc0), leaf(lr0), leaf(ns0)
    if alpha != 0.0:
        rc = (1 - torch.exp(lc).pow(-alpha)) / alpha
        rr = (1 - torch.exp(lr).pow(-alpha)) / alpha
    else:
        rc, rr = lc, lr
    logits = rc - rr
    if typ == "simpo":
        logits = logits - gamma / beta
    if typ in ("simpo", "sigmoid"):
        losses = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    elif typ == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:
        losses = (logits - 1 / (2 * beta)) ** 2
    nll = -ns.sum() / nt0.sum() if coef != 0.0 else torch.zeros((), dtype=F64)
    loss = losses.mean() + coef * nll
    loss.backward()
    crw, rrw = beta * rc.detach(), beta * rr.detach()
    p = "cpo." + case
    put(p + ".set", [0.0 if st == "sum" else 1.0])
    put(p + ".type", [TYPES[typ]])
    put(p + ".beta", [beta])
    put(p + ".gamma", [gamma])
    put(p + ".eps", [eps])
    put(p + ".alpha", [alpha])
    put(p + ".nll_coef", [coef])
    put(p + ".loss", [loss])
    put(p + ".dlc", lc.grad)
    put(p + ".dlr", lr.grad)
    put(p + ".dnll", ns.grad if ns.grad is not None else torch.zeros(B, dtype=F64))
    put(p + ".losses", losses)
    put(p + ".metrics", [crw.mean(), rrw.mean(), (crw - rrw).mean(), (crw > rrw).to(F64).mean()])
    put(p + ".nll", [nll])

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unpaired_orpo_simpo.txt")
with open(path, "w") as f:
    f.write("# Generated by tests/golden/gen_unpaired_orpo_simpo.py with torch " + torch.__version__ + "; do not edit.\n")
    f.write("# <name> <count> <values...>\n")
    for line in out_lines:
        f.write(line + "\n")
print("wrote", path, len(out_lines), "records")
