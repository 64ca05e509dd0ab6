#!/usr/bin/env python3
# benchmarks/peer_torch_cuda.py - the PyTorch peers of benchmarks/cuda_kernels.cu on the same GPU.
#
# Prints one JSON line per (bench, shape, dtype) with peer_ms (median of CUDA-event timings after warm-up):
#   logprobs_fwd           torch.log_softmax(x, -1).gather(-1, y)                          (the plain formulation)
#   logprobs_fwd_selective TRL's selective_log_softmax (trl/trainer/utils.py): fp32/fp64 logits gather then
#                          subtract a row-by-row logsumexp; bf16/fp16 logits run log_softmax row-chunk by row-chunk
#   logprobs_fwd_entropy   logp = log_softmax(x); gather; -(logp.exp() * logp).sum(-1)  (verl/OpenRLHF's pair)
#   logprobs_selective_entropy  TRL's selective log-softmax plus verl's entropy_from_logits
#                          (logsumexp(x) - sum(softmax(x) * x)), the pair a PPO step computes
#   logprobs_bwd           autograd of logp.sum() + entropy.sum() through log_softmax (forward excluded)
#   gae                    the per-timestep reverse loop of verl compute_gae_advantage_return / OpenRLHF / TRL
# Rows are processed in chunks of --chunk rows (the (N, V) temporaries of the unfused forms would not fit at
# N = 32768, V = 151936); the chunk loop is inside the timed region. A case that runs out of memory prints
# "peer_ms": null with the error.
import argparse
import json
import sys


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=4096)
    return ap.parse_args()


def main():
    args = parse_args()
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": "torch: %s" % e}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch: no CUDA device"}))
        return 0
    dev = torch.device("cuda")

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(args.reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
        ts.sort()
        return ts[len(ts) // 2]

    def emit(bench, shape, dtype, fn):
        try:
            ms = timed(fn)
            print(json.dumps({"bench": bench, "shape": shape, "dtype": dtype, "peer_ms": round(ms, 4),
                              "torch": torch.__version__}))
        except torch.cuda.OutOfMemoryError as e:
            print(json.dumps({"bench": bench, "shape": shape, "dtype": dtype, "peer_ms": None,
                              "error": "out of memory: %s" % str(e).splitlines()[0]}))
        torch.cuda.empty_cache()
        sys.stdout.flush()

    N = 4096 if args.quick else 32768
    C = args.chunk
    shapes = [(N, V) for V in (32000, 128256, 151936)]
    if not args.quick:
        shapes.append((8192, 151936))
    for (n, V) in shapes:
        for dtype_name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            if (n, V) == (8192, 151936) and dtype_name == "fp32":
                continue
            shape = "%dx%d" % (n, V)
            try:
                x = (torch.randn(n, V, device=dev, dtype=torch.float32) * 4).to(dtype)
            except torch.cuda.OutOfMemoryError:
                print(json.dumps({"bench": "logprobs_fwd", "shape": shape, "dtype": dtype_name, "peer_ms": None,
                                  "error": "out of memory allocating the logits"}))
                continue
            y = torch.randint(0, V, (n,), device=dev)

            def plain():
                with torch.inference_mode():
                    for i in range(0, n, C):
                        torch.log_softmax(x[i:i + C], -1).gather(-1, y[i:i + C, None])

            def selective():
                with torch.inference_mode():
                    if dtype in (torch.float32, torch.float64):
                        for i in range(0, n, C):
                            sel = x[i:i + C].gather(-1, y[i:i + C, None]).squeeze(-1)
                            lse = torch.stack([torch.logsumexp(r, -1) for r in x[i:i + C]])
                            sel - lse
                    else:
                        for i in range(0, n, C):
                            torch.log_softmax(x[i:i + C], -1).gather(-1, y[i:i + C, None])

            def with_entropy():
                with torch.inference_mode():
                    for i in range(0, n, C):
                        lp = torch.log_softmax(x[i:i + C].float(), -1)
                        lp.gather(-1, y[i:i + C, None])
                        -(lp.exp() * lp).sum(-1)

            def selective_entropy():
                with torch.inference_mode():
                    for i in range(0, n, C):
                        xc = x[i:i + C]
                        sel = xc.gather(-1, y[i:i + C, None]).squeeze(-1).float()
                        lse = torch.logsumexp(xc.float(), -1)
                        sel - lse
                        p = torch.softmax(xc.float(), -1)
                        lse - (p * xc.float()).sum(-1)

            def backward():
                for i in range(0, n, C):
                    xc = x[i:i + C].detach().requires_grad_(True)
                    lp = torch.log_softmax(xc.float(), -1)
                    loss = lp.gather(-1, y[i:i + C, None]).sum() - (lp.exp() * lp).sum()
                    loss.backward()

            emit("logprobs_fwd", shape, dtype_name, plain)
            emit("logprobs_fwd_selective", shape, dtype_name, selective)
            emit("logprobs_fwd_entropy", shape, dtype_name, with_entropy)
            emit("logprobs_selective_entropy", shape, dtype_name, selective_entropy)
            emit("logprobs_bwd", shape, dtype_name, backward)
            del x, y
            torch.cuda.empty_cache()

    B, T = (512 if args.quick else 4096), 4096
    r = torch.randn(B, T, device=dev)
    v = torch.randn(B, T, device=dev)
    m = (torch.arange(B * T, device=dev).reshape(B, T) % 97 != 0).float()

    def gae_loop():
        # verl compute_gae_advantage_return: a Python loop over t with masked carries.
        nextvalues = torch.zeros(B, device=dev)
        lastgaelam = torch.zeros(B, device=dev)
        out = []
        for t in reversed(range(T)):
            delta = r[:, t] + 0.99 * nextvalues - v[:, t]
            lastgaelam_ = delta + 0.99 * 0.95 * lastgaelam
            nextvalues = v[:, t] * m[:, t] + (1 - m[:, t]) * nextvalues
            lastgaelam = lastgaelam_ * m[:, t] + (1 - m[:, t]) * lastgaelam
            out.append(lastgaelam)
        adv = torch.stack(out[::-1], dim=1)
        return adv, adv + v

    emit("gae", "%dx%d" % (B, T), "fp32", gae_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
