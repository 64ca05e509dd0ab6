#!/usr/bin/python3
"""Golden values for tests/algorithms/kl.cpp and tests/algorithms/gae.cpp, computed with PyTorch (fp32) autograd.

Run with /usr/bin/python3 (the interpreter that has torch):  /usr/bin/python3 tests/golden/gen_kl_gae.py
It writes tests/golden/kl_gae.txt next to this script: one record per line,

    <name> <count> <v_1> ... <v_count>

values in decimal with 17 significant digits (fp32 inputs and outputs are exact in that form). Lines starting with
'#' are comments. Inputs are written too, so the C++ test needs nothing but this file.

What is computed (the references the C++ library is compared with):
  * GAE: verl's compute_gae_advantage_return loop (verl/trainer/ppo/core_algos.py) without the final whitening:
      nextvalues = V*M + (1-M)*nextvalues ; lastgaelam = lgl*M + (1-M)*lastgaelam  (masked steps carry both).
    returns = advantages + values. cai writes 0 at masked steps, so only mask == 1 positions are compared.
  * k1 = logp - ref, k2 = (logp - ref)^2 / 2, k3 = verl's low_var_kl: kl = clamp(ref - logp, -20, 20),
    k3 = clamp(exp(kl) - kl - 1, -10, 10); with autograd gradients w.r.t. logp. Also k1 clamped to [-2, 2]
    and k2 with its log ratio clamped to [-1, 1] (torch.clamp's gradient convention at and beyond the bounds).
  * exact KL per row: sum_j p_j (log p_j - log q_j) with torch.log_softmax, and the autograd gradients of
    sum_i g_i KL_i w.r.t. both logit tensors.
"""
import os

import torch

torch.manual_seed(20240611)
out_lines = []


def put(name, tensor):
    flat = [float(v) for v in torch.as_tensor(tensor).detach().reshape(-1).tolist()]
    out_lines.append(name + " " + str(len(flat)) + " " + " ".join("%.17g" % v for v in flat))


# ----- GAE (fp32, like verl) ---------------------------------------------------------------------------------------
B, T = 4, 9
gamma, lam = 0.99, 0.95
rewards = torch.randn(B, T, dtype=torch.float32)
values = torch.randn(B, T, dtype=torch.float32)
mask = torch.tensor([
    [0, 1, 1, 1, 1, 1, 1, 0, 0],  # one span with right padding
    [1, 1, 0, 0, 1, 1, 0, 1, 0],  # several spans (multi-turn): observation tokens inside
    [0, 0, 0, 0, 0, 0, 0, 0, 1],  # a single counted token at the end
    [1, 0, 1, 0, 1, 0, 1, 0, 1],  # alternating
], dtype=torch.float32)
with torch.no_grad():
    nextvalues = torch.zeros(B)
    lastgaelam = torch.zeros(B)
    adv_rev = []
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = values[:, t] * mask[:, t] + (1 - mask[:, t]) * nextvalues
        lastgaelam = lastgaelam_ * mask[:, t] + (1 - mask[:, t]) * lastgaelam
        adv_rev.append(lastgaelam)
    advantages = torch.stack(adv_rev[::-1], dim=1)
    returns = advantages + values
put("gae.shape", [B, T])
put("gae.gamma", [gamma])
put("gae.lambda", [lam])
put("gae.rewards", rewards)
put("gae.values", values)
put("gae.mask", mask)
put("gae.advantages", advantages)
put("gae.returns", returns)

# ----- sample-based KL estimators (fp32) ----------------------------------------------------------------------------
n_rand = 24
logp = -torch.rand(n_rand, dtype=torch.float32) * 6.0
ref = logp + torch.randn(n_rand, dtype=torch.float32) * 1.5
# Extreme and boundary log ratios d = logp - ref: +-50 (beyond the +-20 clamp), exactly +-20 and +-2, +-1 (the
# boundaries of the clamped variants below), and values whose k3 exceeds the estimate clamp 10.
d_extra = torch.tensor([50.0, -50.0, 20.0, -20.0, 25.0, -25.0, 2.0, -2.0, 1.0, -1.0, 2.5, -3.0, 0.0, 11.5, -2.7],
                       dtype=torch.float32)
ref_extra = torch.full_like(d_extra, -1.0)
logp_all = torch.cat([logp, ref_extra + d_extra])
ref_all = torch.cat([ref, ref_extra])


def k1(lp, rf):
    return lp - rf


def k2(lp, rf):
    return 0.5 * (lp - rf).square()


def k3_low_var(lp, rf):  # verl kl_penalty_forward, "low_var_kl"
    kl = rf - lp
    kl = torch.clamp(kl, min=-20, max=20)
    ratio = torch.exp(kl)
    kld = (ratio - kl - 1).contiguous()
    return torch.clamp(kld, min=-10, max=10)


def k1_clamped(lp, rf):  # estimate clamp 2
    return torch.clamp(lp - rf, min=-2, max=2)


def k2_ratio_clamped(lp, rf):  # log-ratio clamp 1
    d = torch.clamp(lp - rf, min=-1, max=1)
    return 0.5 * d.square()


put("kl.logp", logp_all)
put("kl.ref_logp", ref_all)
for name, fn in [("k1", k1), ("k2", k2), ("k3", k3_low_var), ("k1_clamp2", k1_clamped), ("k2_ratio1", k2_ratio_clamped)]:
    x = logp_all.clone().requires_grad_(True)
    v = fn(x, ref_all)
    v.sum().backward()
    put("kl." + name + ".value", v)
    put("kl." + name + ".grad", x.grad)

# ----- exact KL over the vocabulary (fp32) --------------------------------------------------------------------------
N, V = 5, 11
z = torch.randn(N, V, dtype=torch.float32) * 2.0
y = torch.randn(N, V, dtype=torch.float32) * 2.0
z[3] *= 8.0  # a peaked row
g = torch.randn(N, dtype=torch.float32)
zz = z.clone().requires_grad_(True)
yy = y.clone().requires_grad_(True)
lp = torch.log_softmax(zz, dim=-1)
lq = torch.log_softmax(yy, dim=-1)
klv = (lp.exp() * (lp - lq)).sum(-1)
(klv * g).sum().backward()
put("full_kl.shape", [N, V])
put("full_kl.logits", z)
put("full_kl.ref_logits", y)
put("full_kl.g", g)
put("full_kl.kl", klv)
put("full_kl.dlogits", zz.grad)
put("full_kl.dref_logits", yy.grad)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kl_gae.txt")
with open(path, "w") as f:
    f.write("# Generated by tests/golden/gen_kl_gae.py with torch " + torch.__version__ + "; do not edit.\n")
    f.write("# <name> <count> <values...>\n")
    for line in out_lines:
        f.write(line + "\n")
print("wrote", path, len(out_lines), "records")
