#!/usr/bin/python3
"""Golden values for tests/algorithms/preference.cpp: Bradley-Terry reward-model losses, computed with PyTorch
autograd in fp64 from fp32 inputs.

Run with /usr/bin/python3 (the interpreter that has torch):  /usr/bin/python3 tests/golden/gen_preference.py
It writes tests/golden/preference.txt next to this script, in the format of kl_gae.txt (see gen_kl_gae.py and
golden.hpp):

    <name> <count> <v_1> ... <v_count>

Every input is drawn in fp32 and written with 17 significant digits, so the C++ test reads the identical values in
float (and, widened exactly, in double). The references are computed in torch float64 from those values, so one file
serves cai's float path and its double path; the peers compute in fp32 (or bf16), fp64 here removes torch's own
rounding from the comparison. The one exception is the literal fp32 LogExpLoss at r- - r+ = 200, recorded only as
"does it overflow" (1 or 0), because the golden reader does not parse "inf".

Written from the peers' documented formulas, not copied from them (rc = chosen reward, rr = rejected reward):
  TRL RewardTrainer.compute_loss (trl/trainer/reward_trainer.py):
      loss = -F.logsigmoid(rc - rr - margin).mean() + coef * torch.mean((rc + rr) ** 2)
  OpenRLHF PairWiseLoss / LogExpLoss (openrlhf/models/loss.py):
      -F.logsigmoid(rc - rr - margin).mean()      /      torch.log(1 + torch.exp(rr - rc)).mean()
  safe-rlhf RewardTrainer.loss (safe_rlhf/values/reward/trainer.py), sequence-wise with `regularization` reg:
      -F.logsigmoid(h - l).mean() + reg * torch.stack([l, h]).square().mean()
  soft labels p = P(chosen preferred) (AI-feedback preference probabilities): the binary cross-entropy with logits
      F.binary_cross_entropy_with_logits(rc - rr - margin, p)
  all combined: soft-label cross-entropy (with margin) + coef * mean((rc + rr)^2) + reg * mean over the 2B rewards of
      r^2; the per-pair losses are p softplus(-d) + (1 - p) softplus(d) + coef (rc + rr)^2 + reg (rc^2 + rr^2) / 2,
      whose mean is the loss.
  safe-rlhf token-wise: per pair i, diverge = first index where the ids differ, end = max of the two last indices
      with attention mask 1; h = higher[i, diverge:end + 1], l = lower[i, diverge:end + 1];
      loss_i = -F.logsigmoid(h - l).mean() + reg * torch.stack([l, h]).square().mean(); loss = mean_i loss_i.
      Metrics use the end scores (the score at each sequence's last mask-1 index): accuracy = mean(h_end > l_end).
Gradients are autograd's, w.r.t. rc and rr (sequence-wise) and w.r.t. both (B, T) score tensors (token-wise).
"""
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20240917)
out_lines = []


def put(name, tensor):
    # Python lists go through float64 (torch.as_tensor would round them to fp32: 0.01 would be written as 0.0099999998).
    t = tensor if torch.is_tensor(tensor) else torch.as_tensor(tensor, dtype=torch.float64)
    flat = [float(v) for v in t.detach().reshape(-1).tolist()]
    out_lines.append(name + " " + str(len(flat)) + " " + " ".join("%.17g" % v for v in flat))


def f32(t):
    """fp32-representable values, held in float64 for the computation."""
    return t.to(torch.float32).to(torch.float64)


# ----- sequence-wise (fp32 inputs, fp64 computation) --------------------------------------------------------------
B = 16
rc0 = f32(torch.randn(B, dtype=torch.float64) * 2.0 + 0.3)
rr0 = f32(torch.randn(B, dtype=torch.float64) * 2.0)
rr0[3] = rc0[3]  # a tie (accuracy counts it wrong)
rc0[7], rr0[7] = 30.0, -25.0  # a confident pair (d = 55)
rc0[11], rr0[11] = -12.0, 18.5  # a badly wrong pair (d = -30.5)
margin = f32(torch.rand(B, dtype=torch.float64) * 1.5)
labels = f32(torch.rand(B, dtype=torch.float64))
labels[0], labels[1], labels[2], labels[5] = 0.0, 0.5, 1.0, 0.0
coef, reg = 0.01, 0.001
put("bt.rc", rc0)
put("bt.rr", rr0)
put("bt.margin", margin)
put("bt.labels", labels)
put("bt.center_coef", [coef])
put("bt.l2_coef", [reg])


def trl(rc, rr, m, c):  # TRL RewardTrainer
    loss = -F.logsigmoid(rc - rr - m).mean()
    if c > 0:
        loss = loss + c * torch.mean((rc + rr) ** 2)
    return loss


def pairwise(rc, rr):  # OpenRLHF PairWiseLoss, margin None
    return -F.logsigmoid(rc - rr).mean()


def safe_seq(rc, rr, r):  # safe-rlhf sequence-wise (h = chosen, l = rejected)
    return -F.logsigmoid(rc - rr).mean() + r * torch.stack([rr, rc]).square().mean()


def soft(rc, rr, p):
    return F.binary_cross_entropy_with_logits(rc - rr, p)


# softplus(x) is written -logsigmoid(-x): F.softplus returns x itself for x > 20 (its `threshold`), 1e-14 off at 30.
def sp(x):
    return -F.logsigmoid(-x)


def combined_pairs(rc, rr, m, p, c, r):
    d = rc - rr - m
    return p * sp(-d) + (1 - p) * sp(d) + c * (rc + rr) ** 2 + r * 0.5 * (rc ** 2 + rr ** 2)


def combined(rc, rr, m, p, c, r):
    # Written as the sum of the three documented terms, not as the mean of combined_pairs.
    return (F.binary_cross_entropy_with_logits(rc - rr - m, p) + c * torch.mean((rc + rr) ** 2)
            + r * torch.stack([rr, rc]).square().mean())


cases = [
    ("hard", lambda a, b: pairwise(a, b), lambda a, b: sp(-(a - b))),
    ("trl_margin", lambda a, b: trl(a, b, margin, 0.0), lambda a, b: sp(-(a - b - margin))),
    ("trl_center", lambda a, b: trl(a, b, margin, coef), lambda a, b: sp(-(a - b - margin)) + coef * (a + b) ** 2),
    ("safe_seq", lambda a, b: safe_seq(a, b, reg), lambda a, b: sp(b - a) + reg * 0.5 * (a * a + b * b)),
    ("soft", lambda a, b: soft(a, b, labels), lambda a, b: combined_pairs(a, b, 0.0, labels, 0.0, 0.0)),
    ("all", lambda a, b: combined(a, b, margin, labels, coef, reg),
     lambda a, b: combined_pairs(a, b, margin, labels, coef, reg)),
]
for name, fn, pairs in cases:
    a = rc0.clone().requires_grad_(True)
    b = rr0.clone().requires_grad_(True)
    loss = fn(a, b)
    loss.backward()
    with torch.no_grad():
        per = pairs(rc0, rr0)
        assert abs(float(per.mean()) - float(loss)) < 1e-12 * (1 + abs(float(loss))), name
    put("bt." + name + ".loss", [loss])
    put("bt." + name + ".dchosen", a.grad)
    put("bt." + name + ".drejected", b.grad)
    put("bt." + name + ".losses", per)
with torch.no_grad():
    put("bt.metrics", [rc0.mean(), rr0.mean(), (rc0 - rr0).mean(), (rc0 > rr0).double().mean()])

# OpenRLHF LogExpLoss, literally log(1 + exp(r- - r+)), on moderate values (fp64) ...
lrc = f32(torch.randn(B, dtype=torch.float64) * 3.0)
lrr = f32(torch.randn(B, dtype=torch.float64) * 3.0)
put("logexp.rc", lrc)
put("logexp.rr", lrr)
a = lrc.clone().requires_grad_(True)
b = lrr.clone().requires_grad_(True)
loss = torch.log(1 + torch.exp(b - a)).mean()
loss.backward()
put("logexp.loss", [loss])
put("logexp.dchosen", a.grad)
put("logexp.drejected", b.grad)
# ... and in fp32 where r- - r+ = 200: exp overflows, the literal loss is inf.
big = torch.log(1 + torch.exp(torch.tensor([200.0], dtype=torch.float32) - torch.tensor([0.0], dtype=torch.float32)))
put("logexp.fp32_overflows_at_200", [1.0 if torch.isinf(big).item() else 0.0])

# ----- token-wise (safe-rlhf) ---------------------------------------------------------------------------------------
# Rows (T = 12, pad id 0 and mask 0 to the right; the mask covers prompt and answer, as safe-rlhf's attention mask):
#   0: prompt 3, chosen answer 5, rejected answer 7, answers differ from their first token
#   1: prompt 4, chosen answer 6, rejected answer 2 (chosen longer), differ at the second answer token
#   2: rejected = chosen + 3 more tokens (diverge right after chosen's end: chosen's end score lies before the slice)
#   3: prompt 1, both answers fill the row (T), differ only at the last token (a one-token slice)
#   4: diverge at position 0 (different first token), chosen 2 tokens long, rejected 10
#   5: equal lengths, differ in the middle; the chosen end score below the rejected one
TT = 12
rows = []


def row(prompt, ca, ra):
    c = prompt + ca
    r = prompt + ra
    assert len(c) <= TT and len(r) <= TT
    return c, r


rows.append(row([5, 6, 7], [10, 11, 12, 13, 14], [20, 21, 22, 23, 24, 25, 26]))
rows.append(row([5, 6, 7, 8], [30, 31, 32, 33, 34, 35], [30, 40]))
rows.append(row([9, 9], [41, 42, 43], [41, 42, 43, 44, 45, 46]))
rows.append(row([3], [50 + k for k in range(11)], [50 + k for k in range(10)] + [99]))
rows.append(row([], [60, 61], [70, 71, 72, 73, 74, 75, 76, 77, 78, 79]))
rows.append(row([5, 5, 5], [80, 81, 82, 83, 84, 85], [80, 81, 92, 93, 94, 95]))
BT = len(rows)
cid = torch.zeros(BT, TT, dtype=torch.int64)
rid = torch.zeros(BT, TT, dtype=torch.int64)
cmask = torch.zeros(BT, TT, dtype=torch.int64)
rmask = torch.zeros(BT, TT, dtype=torch.int64)
for i, (c, r) in enumerate(rows):
    cid[i, :len(c)] = torch.tensor(c)
    rid[i, :len(r)] = torch.tensor(r)
    cmask[i, :len(c)] = 1
    rmask[i, :len(r)] = 1
hs = f32(torch.randn(BT, TT, dtype=torch.float64) * 1.5)
ls = f32(torch.randn(BT, TT, dtype=torch.float64) * 1.5)
hs[5, 8], ls[5, 8] = -1.0, 2.0  # row 5: chosen end score < rejected end score
hs[1, 9], ls[1, 5] = 0.25, 0.25  # row 1: equal end scores (a tie)
put("tok.shape", [BT, TT])
put("tok.l2_coef", [reg])
put("tok.chosen_ids", cid)
put("tok.rejected_ids", rid)
put("tok.chosen_mask", cmask)
put("tok.rejected_mask", rmask)
put("tok.chosen_scores", hs)
put("tok.rejected_scores", ls)


def tokenwise(higher, lower, r):
    losses = []
    h_end, l_end, slices = [], [], []
    for i in range(BT):
        assert not torch.all(torch.eq(cid[i], rid[i]))
        higher_end_index = cmask[i].nonzero()[-1].item()
        lower_end_index = rmask[i].nonzero()[-1].item()
        end_index = max(higher_end_index, lower_end_index)
        diverge_index = (cid[i] != rid[i]).nonzero()[0].item()
        assert diverge_index <= end_index
        ht = higher[i, diverge_index:end_index + 1]
        lt = lower[i, diverge_index:end_index + 1]
        loss_i = -F.logsigmoid(ht - lt).mean()
        if r > 0.0:
            loss_i = loss_i + r * torch.stack([lt, ht]).square().mean()
        losses.append(loss_i)
        h_end.append(higher[i, higher_end_index])
        l_end.append(lower[i, lower_end_index])
        slices += [diverge_index, end_index + 1]
    return torch.stack(losses), torch.stack(h_end), torch.stack(l_end), slices


for name, r in [("tok.plain", 0.0), ("tok.reg", reg)]:
    a = hs.clone().requires_grad_(True)
    b = ls.clone().requires_grad_(True)
    per, he, le, slices = tokenwise(a, b, r)
    loss = per.mean()
    loss.backward()
    put(name + ".loss", [loss])
    put(name + ".losses", per)
    put(name + ".dchosen", a.grad)
    put(name + ".drejected", b.grad)
    if r == 0.0:
        put("tok.slices", slices)
        with torch.no_grad():
            put("tok.metrics", [he.mean(), le.mean(), (he - le).mean(), (he > le).double().mean()])

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preference.txt")
with open(path, "w") as f:
    f.write("# Generated by tests/golden/gen_preference.py with torch " + torch.__version__ + "; do not edit.\n")
    f.write("# <name> <count> <values...>\n")
    for line in out_lines:
        f.write(line + "\n")
print("wrote", path, len(out_lines), "records")
