#!/usr/bin/python3
"""Golden values for tests/algorithms/dpo.cpp (cai/algorithms/dpo.hpp), computed with PyTorch autograd in fp64.

Run with /usr/bin/python3 (the interpreter that has torch):  /usr/bin/python3 tests/golden/gen_dpo.py
It writes tests/golden/dpo.txt next to this script: one record per line,

    <name> <count> <v_1> ... <v_count>

values in decimal with 17 significant digits. Lines starting with '#' are comments. Inputs are written too, so the
C++ test needs nothing but this file.

Precision: every input is drawn in fp32 (so it is exact in the file and identical on cai's float and double paths)
and the losses are evaluated in fp64 torch. TRL evaluates them in the model's dtype (fp32 / bf16; the alpha
divergence's clamp in fp32); fp64 here removes torch's own rounding from the comparison, the formulas are TRL's.

The losses are written the way TRL writes them (trl/trainer/dpo_trainer.py DPOTrainer._compute_loss at f2cd577;
DPOTrainer.dpo_loss at v0.28.0 for cDPO label smoothing and the bco_pair running-mean shift delta), with
F.logsigmoid / torch.sigmoid / torch.relu / torch.sort / torch.clamp, and differentiated by autograd:
  rho_c = pc - rc, rho_r = pr - rr; s = the f-divergence score (TRL f_divergence_type); logits = s(rho_c) - s(rho_r)
  per-pair losses l_k (aot: per sorted rank), batch loss = sum_k w_k mean_i(W_i l_k,i) (TRL loss_weights, WPO
  weights W), the sft term = -sum(pc) / sum(|yc|) broadcast to every pair.
Gradients are taken w.r.t. all four log-prob tensors (TRL detaches the reference; cai reports d/d ref as well).

Records per input set <set>:  <set>.pc .pr .rc .rr (B) fp32 values, <set>.lc .lr completion lengths, <set>.w weights.
Records per case <set>.<case>: .loss (1), .dpc .dpr .drc .drr (B) gradients, .losses (B) per-pair loss
(sum_k w_k W_i l_k,i; aot by sorted rank), .metrics (4) = mean beta rho_c, mean beta rho_r, mean margin, accuracy
(strict >), beta being the first member's.
"""
import math
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20240917)
F32, F64 = torch.float32, torch.float64
out_lines = []


def put(name, tensor):
    flat = [float(v) for v in torch.as_tensor(tensor, dtype=F64).detach().reshape(-1).tolist()]
    out_lines.append(name + " " + str(len(flat)) + " " + " ".join("%.17g" % v for v in flat))


# ----- the TRL formulas ---------------------------------------------------------------------------------------------
def score(div, rho):
    """TRL f_divergence_type applied to a log-ratio (DPOTrainer._compute_loss)."""
    kind, a = div
    if kind == "reverse_kl":
        return rho
    if kind == "forward_kl":
        return -torch.exp(-rho)
    if kind == "js_divergence":
        return F.logsigmoid(rho)
    if kind == "alpha_divergence":
        if abs(a - 1.0) < 1e-6:
            return rho
        t = torch.clamp((a - 1.0) * rho, max=80.0)
        return torch.exp(t) / (a - 1.0)
    raise ValueError(kind)


def member_losses(kind, p, pc, pr, rc, rr, lc, lr, div):
    """Per-pair losses of one loss_type (B values; aot: one per sorted rank)."""
    beta = p.get("beta", 0.1)
    eps = p.get("eps", 0.0)
    rho_c, rho_r = pc - rc, pr - rr
    sc, sr = score(div, rho_c), score(div, rho_r)
    logits = sc - sr
    lcn, lrn = lc.clamp(min=1).to(F64), lr.clamp(min=1).to(F64)
    if kind == "sigmoid":  # cDPO form of TRL 0.28 (eps = 0: TRL-new's sigmoid)
        return -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    if kind == "robust":
        return (-F.logsigmoid(beta * logits) * (1 - eps) + F.logsigmoid(-beta * logits) * eps) / (1 - 2 * eps)
    if kind == "hinge":
        return torch.relu(1 - beta * logits)
    if kind == "ipo":
        ln = sc / lcn - sr / lrn
        return (ln - 1 / (2 * beta)) ** 2
    if kind == "exo_pair":
        return (beta * logits).sigmoid() * (F.logsigmoid(beta * logits) - math.log(1 - eps)) + \
            (-beta * logits).sigmoid() * (F.logsigmoid(-beta * logits) - math.log(eps))
    if kind == "nca_pair":
        cr, rw = sc * beta, sr * beta
        return -F.logsigmoid(cr) - 0.5 * F.logsigmoid(-cr) - 0.5 * F.logsigmoid(-rw)
    if kind == "bco_pair":
        delta = p.get("delta", 0.0)
        cr, rw = sc * beta, sr * beta
        return -F.logsigmoid(cr - delta) - F.logsigmoid(-(rw - delta))
    if kind == "sppo_hard":
        a, b = sc - 0.5 / beta, sr + 0.5 / beta
        return a ** 2 + b ** 2
    if kind == "aot":
        x, _ = torch.sort(pc - pr, dim=0)
        y, _ = torch.sort(rc - rr, dim=0)
        d = x - y
        return -F.logsigmoid(beta * d) * (1 - eps) - F.logsigmoid(-beta * d) * eps
    if kind == "aot_unpaired":
        x, _ = torch.sort(rho_c, dim=0)
        y, _ = torch.sort(rho_r, dim=0)
        d = x - y
        return -F.logsigmoid(beta * d) * (1 - eps) - F.logsigmoid(-beta * d) * eps
    if kind == "apo_zero":
        return 1 - torch.sigmoid(beta * rho_c) + torch.sigmoid(beta * rho_r)
    if kind == "apo_down":
        return torch.sigmoid(beta * rho_c) + 1 - torch.sigmoid(beta * logits)
    if kind == "discopop":
        tau = p.get("tau", 0.05)
        z = logits * beta
        m = torch.sigmoid(z / tau)
        return -F.logsigmoid(z) * (1 - m) + torch.exp(-z) * m
    if kind == "sigmoid_norm":
        return -F.logsigmoid(beta * (sc / lcn - sr / lrn))
    if kind == "sft":  # token-mean NLL over every chosen completion token of the batch, broadcast
        nll = -pc.sum() / lc.sum().to(F64)
        return nll.expand(pc.shape[0])
    raise ValueError(kind)


def run_case(inputs, members, div, weighted):
    pc0, pr0, rc0, rr0, lc, lr, w = inputs
    pc, pr, rc, rr = (t.clone().requires_grad_(True) for t in (pc0, pr0, rc0, rr0))
    W = w if weighted else torch.ones_like(pc0)
    total = torch.zeros((), dtype=F64)
    per_pair = torch.zeros_like(pc0)
    for kind, p, wk in members:
        l = member_losses(kind, p, pc, pr, rc, rr, lc, lr, div)
        lw = l if kind.startswith("aot") else l * W
        total = total + wk * lw.mean()
        per_pair = per_pair + wk * lw.detach()
    total.backward()
    beta0 = members[0][1].get("beta", 0.1) if members[0][0] != "sft" else 0.0
    with torch.no_grad():
        cr, rw = beta0 * (pc0 - rc0), beta0 * (pr0 - rr0)
        metrics = [cr.mean(), rw.mean(), (cr - rw).mean(), (cr > rw).to(F64).mean()]
    grads = [t.grad if t.grad is not None else torch.zeros_like(pc0) for t in (pc, pr, rc, rr)]  # unused input: 0
    return (total, *grads, per_pair, metrics)


# ----- input sets (fp32 values) ----------------------------------------------------------------------------------------
def f32(t):
    return t.to(F32).to(F64)


def min_gap(v):
    s, _ = torch.sort(v)
    return float((s[1:] - s[:-1]).min()) if v.numel() > 1 else math.inf


def check_aot_gaps(pc, pr, rc, rr, gap):
    # AOT's gradient flows through the sort permutation: the sorted values must be distinct (ties: see dpo.hpp).
    for v in (pc - pr, rc - rr, pc - rc, pr - rr):
        assert min_gap(v) > gap, min_gap(v)


sets = {}


def base_set():
    B = 8
    while True:
        pc = f32(-(torch.rand(B, dtype=F64) * 40 + 5))
        pr = f32(-(torch.rand(B, dtype=F64) * 40 + 5))
        rc = f32(pc + torch.randn(B, dtype=F64) * 3)
        rr = f32(pr + torch.randn(B, dtype=F64) * 3)
        # pair 6: rho_c == rho_r exactly (D = 0, an accuracy tie); dyadic values, exact in fp32
        pc[6], rc[6], pr[6], rr[6] = -20.5, -21.25, -30.25, -31.0
        D = (pc - rc) - (pr - rr)
        # hinge kinks at beta D = 1 for beta = 0.1, 0.2, 0.5: stay 5e-3 away (in beta D); AOT gaps
        ok = all(float((1 - b * D).abs().min()) > 5e-3 for b in (0.1, 0.2, 0.5))
        try:
            check_aot_gaps(pc, pr, rc, rr, 1e-2)
        except AssertionError:
            ok = False
        if ok:
            break
    lc = torch.randint(1, 40, (B,))
    lr = torch.randint(1, 40, (B,))
    lc[3] = 0  # an empty completion: ipo / sigmoid_norm clamp the count to 1 (TRL clamp(min=1))
    lr[5] = 0
    w = f32(torch.rand(B, dtype=F64) * 1.3 + 0.2)
    return pc, pr, rc, rr, lc, lr, w


def wide_set():
    # Log-ratio margins of tens to hundreds (beta D up to about +-60 at beta = 0.1): the logistic tails.
    B = 8
    while True:
        pc = f32(-(torch.rand(B, dtype=F64) * 200 + 5))
        pr = f32(-(torch.rand(B, dtype=F64) * 200 + 5))
        rc = f32(pc + torch.randn(B, dtype=F64) * 150)
        rr = f32(pr + torch.randn(B, dtype=F64) * 150)
        D = (pc - rc) - (pr - rr)
        ok = float((1 - 0.1 * D).abs().min()) > 5e-3
        try:
            check_aot_gaps(pc, pr, rc, rr, 1e-2)
        except AssertionError:
            ok = False
        if ok:
            break
    lc = torch.randint(1, 300, (B,))
    lr = torch.randint(1, 300, (B,))
    w = f32(torch.rand(B, dtype=F64) + 0.5)
    return pc, pr, rc, rr, lc, lr, w


def kink_set():
    # beta = 0.5: pair 0 has rho_c = 1, rho_r = -1, so beta D = 1 exactly (hinge kink: relu'(0) = 0);
    # the others sit on either side.
    pc = torch.tensor([-3.0, -7.5, -12.0, -2.25], dtype=F64)
    rc = torch.tensor([-4.0, -8.0, -10.0, -2.0], dtype=F64)
    pr = torch.tensor([-5.0, -9.0, -6.5, -4.0], dtype=F64)
    rr = torch.tensor([-4.0, -7.25, -7.0, -3.75], dtype=F64)
    lc = torch.tensor([3, 5, 7, 2])
    lr = torch.tensor([4, 6, 1, 9])
    w = torch.tensor([1.0, 0.5, 0.75, 1.25], dtype=F64)
    return pc, pr, rc, rr, lc, lr, w


def clamp_set():
    # alpha divergence clamp t = min((a-1) rho, 80): rho = -200 (clamped at a = 0.5 and 0.3), rho = -160 exactly
    # (a = 0.5: t = 80, on the bound: torch.clamp passes the gradient there), rho = -120 (clamped at a = 0.3 only,
    # t = 84), and small log-ratios.
    pc = torch.tensor([-210.0, -12.0, -170.0, -5.0, -130.0, -9.0], dtype=F64)
    rc = torch.tensor([-10.0, -13.5, -10.0, -4.0, -10.0, -11.0], dtype=F64)
    pr = torch.tensor([-20.0, -215.0, -22.0, -6.5, -14.0, -8.0], dtype=F64)
    rr = torch.tensor([-21.0, -15.0, -20.0, -5.0, -16.0, -7.5], dtype=F64)
    lc = torch.tensor([10, 4, 8, 3, 12, 5])
    lr = torch.tensor([9, 11, 6, 2, 7, 5])
    w = torch.ones(6, dtype=F64)
    return pc, pr, rc, rr, lc, lr, w


def one_set():
    pc = f32(torch.tensor([-17.3], dtype=F64))
    pr = f32(torch.tensor([-21.9], dtype=F64))
    rc = f32(torch.tensor([-18.1], dtype=F64))
    rr = f32(torch.tensor([-20.6], dtype=F64))
    return pc, pr, rc, rr, torch.tensor([13]), torch.tensor([17]), f32(torch.tensor([0.7], dtype=F64))


sets["base"] = base_set()
sets["wide"] = wide_set()
sets["kink"] = kink_set()
sets["clamp"] = clamp_set()
sets["one"] = one_set()

RKL = ("reverse_kl", None)
FKL = ("forward_kl", None)
JS = ("js_divergence", None)


def ALPHA(a):
    return ("alpha_divergence", a)


def M(kind, w=1.0, **p):
    return (kind, p, w)


# (set, case name, members, divergence, weighted). Case names are the C++ test's keys.
cases = []
for nm, members in [
    ("sigmoid", [M("sigmoid", beta=0.1)]),
    ("cdpo", [M("sigmoid", beta=0.1, eps=0.1)]),
    ("robust", [M("robust", beta=0.1, eps=0.1)]),
    ("hinge", [M("hinge", beta=0.1)]),
    ("hinge05", [M("hinge", beta=0.5)]),
    ("ipo", [M("ipo", beta=0.1)]),
    ("exo_pair", [M("exo_pair", beta=0.1, eps=1e-3)]),
    ("exo_pair02", [M("exo_pair", beta=0.5, eps=0.2)]),
    ("nca_pair", [M("nca_pair", beta=0.1)]),
    ("bco_pair", [M("bco_pair", beta=0.1)]),
    ("bco_pair_delta", [M("bco_pair", beta=0.1, delta=0.3)]),
    ("sppo_hard", [M("sppo_hard", beta=0.1)]),
    ("aot", [M("aot", beta=0.1)]),
    ("aot_ls", [M("aot", beta=0.2, eps=0.1)]),
    ("aot_unpaired", [M("aot_unpaired", beta=0.1)]),
    ("apo_zero", [M("apo_zero", beta=0.1)]),
    ("apo_down", [M("apo_down", beta=0.1)]),
    ("discopop", [M("discopop", beta=0.1)]),
    ("discopop_tau", [M("discopop", beta=0.5, tau=0.2)]),
    ("sigmoid_norm", [M("sigmoid_norm", beta=0.1)]),
    ("sft", [M("sft")]),
    ("rpo", [M("sigmoid", beta=0.1), M("sft", 0.5)]),
    ("mpo", [M("sigmoid", 0.8, beta=0.1), M("bco_pair", 0.2, beta=0.1), M("sft", 1.0)]),
    ("mix", [M("hinge", 0.3, beta=0.2), M("ipo", 1.5, beta=0.3), M("apo_zero", 0.7, beta=0.1), M("aot_unpaired", 0.4, beta=0.1),
             M("sft", 0.25)]),
]:
    cases.append(("base", nm, members, RKL, False))
for nm, members in [
    ("sigmoid", [M("sigmoid", beta=0.1)]),
    ("ipo", [M("ipo", beta=0.1)]),
    ("bco_pair", [M("bco_pair", beta=0.1)]),
    ("sigmoid_norm", [M("sigmoid_norm", beta=0.1)]),
    ("rpo", [M("sigmoid", beta=0.1), M("sft", 0.5)]),
    ("mpo", [M("sigmoid", 0.8, beta=0.1), M("bco_pair", 0.2, beta=0.1), M("sft", 1.0)]),
]:
    cases.append(("base", nm + "_w", members, RKL, True))
for nm, members, div in [
    ("sigmoid_fkl", [M("sigmoid", beta=0.1)], FKL),
    ("sigmoid_js", [M("sigmoid", beta=0.1)], JS),
    ("sigmoid_alpha05", [M("sigmoid", beta=0.1)], ALPHA(0.5)),
    ("sigmoid_alpha03", [M("sigmoid", beta=0.1)], ALPHA(0.3)),
    ("robust_fkl", [M("robust", beta=0.1, eps=0.2)], FKL),
    ("hinge_js", [M("hinge", beta=0.5)], JS),
    ("ipo_fkl", [M("ipo", beta=0.1)], FKL),
    ("exo_pair_js", [M("exo_pair", beta=0.5, eps=1e-3)], JS),
    ("nca_pair_js", [M("nca_pair", beta=0.5)], JS),
    ("bco_pair_alpha05", [M("bco_pair", beta=0.1)], ALPHA(0.5)),
    ("sppo_hard_fkl", [M("sppo_hard", beta=0.1)], FKL),
    ("apo_zero_js", [M("apo_zero", beta=0.1)], JS),  # raw log-ratios: equals apo_zero
    ("apo_down_fkl", [M("apo_down", beta=0.1)], FKL),  # first term raw, second on D
    ("aot_js", [M("aot", beta=0.1)], JS),  # raw: equals aot
    ("discopop_fkl", [M("discopop", beta=0.1)], FKL),
    ("sigmoid_norm_js", [M("sigmoid_norm", beta=0.5)], JS),
    ("mpo_js", [M("sigmoid", 0.8, beta=0.1), M("bco_pair", 0.2, beta=0.1), M("sft", 1.0)], JS),
]:
    cases.append(("base", nm, members, div, False))
for nm, members in [
    ("sigmoid", [M("sigmoid", beta=0.1)]),
    ("cdpo", [M("sigmoid", beta=0.1, eps=0.1)]),
    ("robust", [M("robust", beta=0.1, eps=0.1)]),
    ("hinge", [M("hinge", beta=0.1)]),
    ("ipo", [M("ipo", beta=0.1)]),
    ("exo_pair", [M("exo_pair", beta=0.1, eps=1e-3)]),
    ("nca_pair", [M("nca_pair", beta=0.1)]),
    ("bco_pair", [M("bco_pair", beta=0.1)]),
    ("sppo_hard", [M("sppo_hard", beta=0.1)]),
    ("aot", [M("aot", beta=0.1)]),
    ("aot_unpaired", [M("aot_unpaired", beta=0.1)]),
    ("apo_zero", [M("apo_zero", beta=0.1)]),
    ("apo_down", [M("apo_down", beta=0.1)]),
    ("discopop", [M("discopop", beta=0.1)]),
    ("sigmoid_norm", [M("sigmoid_norm", beta=0.1)]),
]:
    cases.append(("wide", nm, members, RKL, False))
cases.append(("kink", "hinge05", [M("hinge", beta=0.5)], RKL, False))
cases.append(("kink", "hinge05_w", [M("hinge", beta=0.5)], RKL, True))
for nm, members, div in [
    ("sigmoid_alpha05", [M("sigmoid", beta=0.1)], ALPHA(0.5)),
    ("sigmoid_alpha03", [M("sigmoid", beta=0.1)], ALPHA(0.3)),
    ("ipo_alpha05", [M("ipo", beta=0.1)], ALPHA(0.5)),
    ("nca_pair_alpha03", [M("nca_pair", beta=0.1)], ALPHA(0.3)),
]:
    cases.append(("clamp", nm, members, div, False))
for nm, members in [
    ("sigmoid", [M("sigmoid", beta=0.1)]),
    ("ipo", [M("ipo", beta=0.1)]),
    ("aot", [M("aot", beta=0.1)]),
    ("aot_unpaired", [M("aot_unpaired", beta=0.1)]),
    ("mpo", [M("sigmoid", 0.8, beta=0.1), M("bco_pair", 0.2, beta=0.1), M("sft", 1.0)]),
]:
    cases.append(("one", nm, members, RKL, False))
cases.append(("one", "rpo_w", [M("sigmoid", beta=0.1), M("sft", 0.5)], RKL, True))

for name, (pc, pr, rc, rr, lc, lr, w) in sets.items():
    put(name + ".pc", pc)
    put(name + ".pr", pr)
    put(name + ".rc", rc)
    put(name + ".rr", rr)
    put(name + ".lc", lc)
    put(name + ".lr", lr)
    put(name + ".w", w)

for set_name, nm, members, div, weighted in cases:
    loss, dpc, dpr, drc, drr, per_pair, metrics = run_case(sets[set_name], members, div, weighted)
    for t in (loss, dpc, dpr, drc, drr, per_pair):
        assert torch.isfinite(t).all(), (set_name, nm)
    key = set_name + "." + nm
    put(key + ".loss", [float(loss)])
    put(key + ".dpc", dpc)
    put(key + ".dpr", dpr)
    put(key + ".drc", drc)
    put(key + ".drr", drr)
    put(key + ".losses", per_pair)
    put(key + ".metrics", [float(m) for m in metrics])

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dpo.txt")
with open(path, "w") as f:
    f.write("# Generated by tests/golden/gen_dpo.py with torch " + torch.__version__ + " (fp64 from fp32 inputs); do not edit.\n")
    f.write("# <name> <count> <values...>\n")
    for line in out_lines:
        f.write(line + "\n")
print("wrote", path, len(out_lines), "records,", len(cases), "cases")
