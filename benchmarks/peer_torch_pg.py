#!/usr/bin/env python3
# benchmarks/peer_torch_pg.py - the PyTorch peers of benchmarks/pg.cpp (cai_bench_pg launches it).
#
# For one (B, T), on one thread, prints JSON lines {"bench", "B", "T", "peer_ms", "peer_min_ms"}:
#   gae        the per-timestep Python loop over T that verl (compute_gae_advantage_return, masked carry), OpenRLHF
#              and TRL run, on fp32 (B, T) tensors, under torch.no_grad()
#   ppo_loss   the verl-style objective with autograd: ratio = exp(clamp(logp - old, +-20)), dual clip (c = 3),
#              k3 KL in the loss (clamps +-20 / +-10) with coefficient 0.001, entropy bonus 0.01, token-mean
#              aggregation; peer_ms = forward + backward (gradients w.r.t. logp and entropy)
# Each timing is the median of --reps repetitions after one warm-up. Inputs are random (values do not matter).
import argparse
import json
import statistics
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, required=True)
    ap.add_argument("--T", type=int, required=True)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"torch unavailable: {e}"}))
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    B, T = args.B, args.T
    rewards = torch.randn(B, T)
    values = torch.randn(B, T)
    lens = torch.randint(1, T + 1, (B,))
    mask = (torch.arange(T)[None, :] < lens[:, None]).float()
    gamma, lam = 1.0, 0.95

    def gae():
        with torch.no_grad():
            nextvalues = torch.zeros(B)
            lastgaelam = torch.zeros(B)
            out = []
            for t in reversed(range(T)):
                delta = rewards[:, t] + gamma * nextvalues - values[:, t]
                lgl = delta + gamma * lam * lastgaelam
                nextvalues = values[:, t] * mask[:, t] + (1 - mask[:, t]) * nextvalues
                lastgaelam = lgl * mask[:, t] + (1 - mask[:, t]) * lastgaelam
                out.append(lastgaelam)
            adv = torch.stack(out[::-1], dim=1)
            return adv, adv + values

    old = -torch.rand(B, T) * 3
    logp0 = old + 0.1 * torch.randn(B, T)
    ref = old + 0.1 * torch.randn(B, T)
    adv = torch.randn(B, T)
    ent0 = torch.rand(B, T)

    def ppo():
        logp = logp0.clone().requires_grad_(True)
        ent = ent0.clone().requires_grad_(True)
        lr = torch.clamp(logp - old, -20.0, 20.0)
        ratio = torch.exp(lr)
        l1 = -adv * ratio
        l2 = -adv * torch.clamp(ratio, 0.8, 1.2)
        c1 = torch.maximum(l1, l2)
        l3 = -adv * 3.0
        c2 = torch.min(l3, c1)
        pg = torch.where(adv < 0, c2, c1)
        n = mask.sum()
        pg_loss = (pg * mask).sum() / n
        kl = torch.clamp(ref - logp, -20.0, 20.0)
        k3 = torch.clamp(torch.exp(kl) - kl - 1, -10.0, 10.0)
        kl_loss = (k3 * mask).sum() / n
        ent_loss = (ent * mask).sum() / n
        loss = pg_loss + 0.001 * kl_loss - 0.01 * ent_loss
        loss.backward()
        return loss

    for name, fn in (("gae", gae), ("ppo_loss", ppo)):
        fn()
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        print(json.dumps({"bench": name, "B": B, "T": T, "peer_ms": statistics.median(ts), "peer_min_ms": min(ts)}), flush=True)


if __name__ == "__main__":
    main()
