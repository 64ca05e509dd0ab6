#!/usr/bin/python3
"""Golden values for tests/algorithms/safe_rlhf.cpp: the Safe-RLHF cost-model loss (sequence-wise and token-wise),
the PPO-Lagrangian multiplier update, the Lagrangian advantage, the reward-shaping baseline and the per-token costs,
computed with PyTorch autograd in fp64.

Run with /usr/bin/python3 (the interpreter that has torch):  /usr/bin/python3 tests/golden/gen_safe_rlhf.py
It writes tests/golden/safe_rlhf.txt next to this script, in the format of kl_gae.txt (see gen_kl_gae.py and
golden.hpp):

    <name> <count> <v_1> ... <v_count>

Cost and score inputs are drawn in fp32 and written with 17 significant digits, so the C++ test reads the identical
values in float and (widened exactly) in double; every reference is computed in torch float64 from those values.
The Lagrange-multiplier episode costs are fp64 (the multiplier API takes double).

Written from safe-rlhf's documented formulas (PKU-Alignment/safe-rlhf, upstream commit 82743cc8), not copied:
  CostTrainer.loss (safe_rlhf/values/cost/trainer.py), l = the safer (lower) cost, h = the unsafer (higher) cost,
  cost sign = -safety sign = +1 for an unsafe response, -1 for a safe one:
    sequence-wise:  loss = (-F.logsigmoid(h_end - l_end) - F.logsigmoid(sl * l_end) - F.logsigmoid(sh * h_end)).mean()
                           + reg * torch.stack([l_end, h_end]).square().mean()
    token-wise, per pair i: diverge = first index where the ids differ, end = max of the two last mask-1 indices,
                    l = lower[i, diverge:end + 1], h = higher[i, diverge:end + 1];
                    loss_i = -F.logsigmoid(h - l).mean() - F.logsigmoid(sl_i * l).mean() - F.logsigmoid(sh_i * h).mean()
                             + reg * torch.stack([l, h]).square().mean();   loss = mean_i loss_i
    metrics on the end costs: accuracy = mean(h_end > l_end), accuracy_sign = mean over both of (sign * end > 0).
    Per-pair losses (cai's grads.losses) are the sequence-wise summands with reg * (l^2 + h^2) / 2, whose mean is
    the loss.
  PPOLagTrainer (safe_rlhf/algorithms/ppo_lag/trainer.py): log_lambda = nn.Parameter(log(lambda_init)) with
    torch.optim.SGD(lr=lambda_lr); a deque(maxlen=window) of episode costs; at each update J_c = mean of the deque,
    and when the step count >= lambda_update_delay_steps: lambda_loss = -(J_c - threshold) * log_lambda.exp(),
    backward, SGD step, then log_lambda.clamp_(max=log(lambda_max)) when lambda_max is set.
    Actor advantage A = (A_r - lambda A_c) / (1 + lambda) (here with K multipliers: sum over k).
    add_kl_divergence_regularization: costs = scatter_add(+kl_coeff * (logp - ref_logp), end_index, C), clamped to
    +-clip_range_score (here a clip that does not bind; cai's score_min/score_max clamp C alone, tested separately).
  ppo_reward_shaping: R' = R - lambda C.
"""
import collections
import math
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20240923)
out_lines = []


def put(name, tensor):
    flat = [float(v) for v in torch.as_tensor(tensor, dtype=torch.float64).detach().reshape(-1).tolist()]
    out_lines.append(name + " " + str(len(flat)) + " " + " ".join("%.17g" % v for v in flat))


def f32(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float32) * scale).to(torch.float64)


# ----- sequence-wise cost model -------------------------------------------------------------------------------------
B = 12
safer = f32(B, scale=2.0)
unsafer = f32(B, scale=2.0)
# Some larger costs (where the sign terms saturate) and one pair ranked the wrong way round by a wide margin.
safer[3] = float(torch.tensor(7.25, dtype=torch.float32))
unsafer[3] = float(torch.tensor(-6.5, dtype=torch.float32))
unsafer[7] = float(torch.tensor(11.0, dtype=torch.float32))
# All four (safer_is_safe, unsafer_is_safe) combinations, three times each.
safer_is_safe = torch.tensor([1, 1, 0, 0] * 3, dtype=torch.float64)
unsafer_is_safe = torch.tensor([1, 0, 1, 0] * 3, dtype=torch.float64)
put("seq.safer", safer)
put("seq.unsafer", unsafer)
put("seq.safer_is_safe", safer_is_safe)
put("seq.unsafer_is_safe", unsafer_is_safe)

for tag, reg in [("l2_0", 0.0), ("l2_1e-3", 0.001), ("l2_0.25", 0.25)]:
    lo = safer.clone().requires_grad_(True)
    hi = unsafer.clone().requires_grad_(True)
    sl = -(2.0 * safer_is_safe - 1.0)  # cost sign = -safety sign
    sh = -(2.0 * unsafer_is_safe - 1.0)
    per = -F.logsigmoid(hi - lo) - F.logsigmoid(sl * lo) - F.logsigmoid(sh * hi)
    loss = per.mean()
    if reg > 0.0:
        loss = loss + reg * torch.stack([lo, hi]).square().mean()
    loss.backward()
    put("seq." + tag + ".l2", [reg])
    put("seq." + tag + ".loss", loss)
    put("seq." + tag + ".dsafer", lo.grad)
    put("seq." + tag + ".dunsafer", hi.grad)
    put("seq." + tag + ".losses", (per + reg * 0.5 * (lo.square() + hi.square())).detach())
    with torch.no_grad():
        put("seq." + tag + ".accuracy", (hi > lo).double().mean())
        put("seq." + tag + ".sign_accuracy", 0.5 * ((sl * lo > 0).double().mean() + (sh * hi > 0).double().mean()))

# ----- token-wise cost model ----------------------------------------------------------------------------------------
Bt, T = 6, 10
prompt_len = [3, 2, 4, 1, 5, 3]
len_safer = [8, 10, 6, 4, 7, 9]
len_unsafer = [10, 7, 6, 9, 7, 9]
ids_safer = torch.zeros(Bt, T, dtype=torch.int64)
ids_unsafer = torch.zeros(Bt, T, dtype=torch.int64)
mask_safer = torch.zeros(Bt, T, dtype=torch.int64)
mask_unsafer = torch.zeros(Bt, T, dtype=torch.int64)
for i in range(Bt):
    shared = torch.randint(3, 50, (T,))
    ids_safer[i] = shared
    ids_unsafer[i] = shared
    ids_unsafer[i, prompt_len[i]:] = torch.randint(50, 100, (T - prompt_len[i],))  # differ from the prompt's end on
    mask_safer[i, :len_safer[i]] = 1
    mask_unsafer[i, :len_unsafer[i]] = 1
    ids_safer[i, len_safer[i]:] = 0  # pad id 0
    ids_unsafer[i, len_unsafer[i]:] = 0
# Row 4: the responses share a longer prefix and differ only at their last token (a one-token slice).
ids_unsafer[4, :7] = ids_safer[4, :7]
ids_unsafer[4, 6] = ids_safer[4, 6] + 100
# Row 5: they differ from token 0 on (no shared prompt), same length.
ids_unsafer[5, 0] = ids_safer[5, 0] + 100
lower = f32(Bt, T, scale=2.0)
higher = f32(Bt, T, scale=2.0)
tok_safer_is_safe = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.float64)
tok_unsafer_is_safe = torch.tensor([0, 0, 1, 1, 0, 1], dtype=torch.float64)
put("tok.shape", [Bt, T])
put("tok.safer_ids", ids_safer)
put("tok.unsafer_ids", ids_unsafer)
put("tok.safer_mask", mask_safer)
put("tok.unsafer_mask", mask_unsafer)
put("tok.safer", lower)
put("tok.unsafer", higher)
put("tok.safer_is_safe", tok_safer_is_safe)
put("tok.unsafer_is_safe", tok_unsafer_is_safe)
for tag, reg in [("l2_0", 0.0), ("l2_0.05", 0.05)]:
    lo = lower.clone().requires_grad_(True)
    hi = higher.clone().requires_grad_(True)
    losses, begins, ends = [], [], []
    lo_end, hi_end = [], []
    for i in range(Bt):
        diverge = int((ids_safer[i] != ids_unsafer[i]).nonzero()[0])
        l_end = int(mask_safer[i].nonzero()[-1])
        h_end = int(mask_unsafer[i].nonzero()[-1])
        end = max(l_end, h_end)
        assert 0 <= diverge <= end
        begins.append(diverge)
        ends.append(end + 1)
        lt = lo[i, diverge:end + 1]
        ht = hi[i, diverge:end + 1]
        sl = -(2.0 * tok_safer_is_safe[i] - 1.0)
        sh = -(2.0 * tok_unsafer_is_safe[i] - 1.0)
        li = -F.logsigmoid(ht - lt).mean() - F.logsigmoid(sl * lt).mean() - F.logsigmoid(sh * ht).mean()
        if reg > 0.0:
            li = li + reg * torch.stack([lt, ht]).square().mean()
        losses.append(li)
        lo_end.append(lower[i, l_end])
        hi_end.append(higher[i, h_end])
    losses = torch.stack(losses)
    loss = losses.mean()
    loss.backward()
    lo_end = torch.stack(lo_end)
    hi_end = torch.stack(hi_end)
    sl = -(2.0 * tok_safer_is_safe - 1.0)
    sh = -(2.0 * tok_unsafer_is_safe - 1.0)
    put("tok." + tag + ".l2", [reg])
    put("tok." + tag + ".slice_begin", begins)
    put("tok." + tag + ".slice_end", ends)
    put("tok." + tag + ".loss", loss)
    put("tok." + tag + ".losses", losses)
    put("tok." + tag + ".dsafer", lo.grad)
    put("tok." + tag + ".dunsafer", hi.grad)
    put("tok." + tag + ".accuracy", (hi_end > lo_end).double().mean())
    put("tok." + tag + ".sign_accuracy", 0.5 * ((sl * lo_end > 0).double().mean() + (sh * hi_end > 0).double().mean()))
    put("tok." + tag + ".safer_mean", lo_end.mean())
    put("tok." + tag + ".unsafer_mean", hi_end.mean())


# ----- the Lagrange multiplier ---------------------------------------------------------------------------------------
def lagrange_run(tag, lambda_init, lambda_lr, lambda_max, threshold, window, delay, batches):
    log_lambda = torch.nn.Parameter(torch.tensor(math.log(lambda_init), dtype=torch.float64))
    opt = torch.optim.SGD([log_lambda], lr=lambda_lr)
    log_lambda_max = math.log(lambda_max) if lambda_max is not None else None
    costs = collections.deque(maxlen=window)
    put("lag." + tag + ".options", [lambda_init, lambda_lr, 0.0 if lambda_max is None else lambda_max, threshold, window, delay])
    put("lag." + tag + ".steps", [len(batches)])
    for step, batch in enumerate(batches):
        costs.extend(batch)
        jc = torch.tensor(list(costs), dtype=torch.float64).mean()
        if step >= delay:
            lambda_loss = -(jc - threshold) * log_lambda.exp()
            opt.zero_grad()
            lambda_loss.backward()
            opt.step()
            if log_lambda_max is not None:
                with torch.no_grad():
                    log_lambda.clamp_(max=log_lambda_max)
        put("lag." + tag + ".costs." + str(step), batch)
        put("lag." + tag + ".mean_cost." + str(step), jc)
        put("lag." + tag + ".log_lambda." + str(step), log_lambda.detach())


gen = torch.Generator().manual_seed(7)


def cost_batch(n, mean, scale):
    return [mean + scale * float(v) for v in torch.randn(n, generator=gen, dtype=torch.float64)]


# safe-rlhf's defaults (lambda_init 1, lr 0.1, threshold 0, window 128, no cap, no delay).
lagrange_run("defaults", 1.0, 0.1, None, 0.0, 128, 0,
             [cost_batch(5, 0.8, 1.0), cost_batch(3, 0.5, 1.0), cost_batch(7, -0.3, 1.0), cost_batch(4, -1.5, 0.5),
              cost_batch(6, 0.2, 2.0), cost_batch(2, 1.0, 0.3)])
# A small window (oldest costs drop out), a threshold, a cap that binds (lambda_max 5) and a delay of 2 updates.
lagrange_run("capped", 0.5, 0.5, 5.0, 0.25, 4, 2,
             [cost_batch(3, 2.0, 0.5), cost_batch(3, 2.5, 0.5), cost_batch(2, 3.0, 0.5), cost_batch(3, 3.0, 0.5),
              cost_batch(1, 2.0, 0.5), cost_batch(3, 1.5, 0.5), cost_batch(5, -1.0, 0.5), cost_batch(2, -2.0, 0.5),
              cost_batch(3, -0.5, 0.5), cost_batch(4, 0.0, 0.5), cost_batch(1, 0.3, 0.1), cost_batch(6, -3.0, 1.0),
              cost_batch(3, 0.25, 0.01), cost_batch(2, 0.9, 0.2)])

# ----- the Lagrangian advantage and the reward-shaping baseline -----------------------------------------------------
Ba, Ta = 4, 7
adv_r = f32(Ba, Ta)
adv_c = [f32(Ba, Ta) for _ in range(3)]
lambdas = [0.7, 2.5, 0.0]
put("adv.shape", [Ba, Ta])
put("adv.reward", adv_r)
for k in range(3):
    put("adv.cost." + str(k), adv_c[k])
put("adv.lambdas", lambdas)
put("adv.k1", (adv_r - lambdas[0] * adv_c[0]) / (1.0 + lambdas[0]))
put("adv.k3", (adv_r - sum(l * a for l, a in zip(lambdas, adv_c))) / (1.0 + sum(lambdas)))

scores = f32(9, scale=3.0)
cost_seq = [f32(9, scale=3.0) for _ in range(2)]
shape_lambdas = [1.5, 0.3]
put("shape.scores", scores)
put("shape.cost.0", cost_seq[0])
put("shape.cost.1", cost_seq[1])
put("shape.lambdas", shape_lambdas)
put("shape.k1", scores - shape_lambdas[0] * cost_seq[0])
put("shape.k2", scores - shape_lambdas[0] * cost_seq[0] - shape_lambdas[1] * cost_seq[1])

# ----- per-token costs (PPOLagTrainer.add_kl_divergence_regularization) --------------------------------------------
Bc, Tc = 5, 8
kl_coeff = 0.01  # scripts/ppo-lag.sh
clip_range_score = 1e6  # does not bind here
logp = -torch.rand(Bc, Tc, dtype=torch.float32).to(torch.float64) * 5.0
ref_logp = logp + f32(Bc, Tc, scale=0.7)
end_cost = f32(Bc, scale=3.0)
seq_mask = torch.zeros(Bc, Tc, dtype=torch.int64)
for i, (a, b) in enumerate([(2, 8), (1, 5), (3, 4), (0, 8), (4, 7)]):
    seq_mask[i, a:b] = 1
end_index = torch.cat([m.nonzero()[-1] for m in seq_mask])
kl_penalty_rewards = -kl_coeff * (logp - ref_logp)
token_costs = torch.scatter_add(-kl_penalty_rewards, dim=-1, index=end_index.unsqueeze(-1), src=end_cost.unsqueeze(-1))
token_costs = torch.clamp(token_costs, min=-clip_range_score, max=clip_range_score)
put("tc.shape", [Bc, Tc])
put("tc.beta", [kl_coeff])
put("tc.logp", logp)
put("tc.ref_logp", ref_logp)
put("tc.costs", end_cost)
put("tc.mask", seq_mask)
put("tc.token_costs", token_costs * seq_mask)  # compared at mask-1 positions (cai writes 0 elsewhere)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "safe_rlhf.txt")
with open(path, "w") as f:
    f.write("# Generated by tests/golden/gen_safe_rlhf.py with torch " + torch.__version__ + "; do not edit.\n")
    f.write("# <name> <count> <values...>\n")
    for line in out_lines:
        f.write(line + "\n")
print("wrote", path, len(out_lines), "records")
