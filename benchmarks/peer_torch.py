#!/usr/bin/env python3
# benchmarks/peer_torch.py - the PyTorch peer of benchmarks/logprobs.cpp (cai_bench_logprobs launches it).
#
# Times the unfused PyTorch formulations of per-token log-probs that cai::token_logprobs replaces, on a
# torch.randn tensor of shape (N, V) (the values do not matter for timing), and prints one JSON line per
# (bench, threads) on stdout:
#   logprobs_fwd          torch.log_softmax(x, -1).gather(-1, idx)
#   logprobs_fwd_entropy  logp = log_softmax(x); logp.gather(-1, idx); -(logp.exp() * logp).sum(-1)
#   logprobs_bwd          autograd of loss = logp.gather(..).sum() + entropy.sum() (upstream gradients 1):
#                         peer_ms = forward (with graph) + loss.backward(); peer_bwd_only_ms = loss.backward() only
# Forward benches run under torch.inference_mode(). Each timing is the median of several repetitions after a
# warm-up on the first chunk; the fastest repetition (peer_min_ms), the median process CPU time (peer_cpu_ms,
# all threads; free of hypervisor steal time) and the machine's steal fraction during the repetitions
# (peer_steal) are reported too. Rows are processed in chunks of at most --chunk rows (default 2048) so that the
# (N, V) temporaries of the unfused formulation stay bounded (8192 x 151936 fp32 is 5 GB per temporary); the
# chunk loop is inside the timed region, so peer_ms is the time for all N rows. Like any PyTorch CPU program,
# the peer allocates its temporaries on every call (glibc serves blocks over 32 MB with fresh mmap'd pages, so
# their first-touch page faults are part of its time); that cost is inherent to the unfused formulation, which
# materialises (N, V) intermediates, whereas cai writes only (N) outputs (and dlogits, allocated once, for bwd).
#
# If torch cannot be imported, a single line {"error": ...} is printed and the exit status is 0; the C++
# program then reports "peer_ms": null.
import argparse
import json
import resource
import statistics
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--V", type=int, required=True, help="vocabulary size")
    ap.add_argument("--N", type=int, required=True, help="number of tokens (rows)")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--benches", default="logprobs_fwd,logprobs_fwd_entropy,logprobs_bwd")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    ap.add_argument("--min-reps", type=int, default=3, help="repetitions kept when --budget-s runs out")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs (over the first chunk) before timing")
    ap.add_argument("--budget-s", type=float, default=8.0, help="stop repeating after this many seconds")
    ap.add_argument("--chunk", type=int, default=2048, help="rows per torch call")
    return ap.parse_args()


def cpu_jiffies():
    """(all, stolen) jiffies of the machine, from the first line of /proc/stat; (0, 0) where unavailable."""
    try:
        with open("/proc/stat") as f:
            v = [float(t) for t in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(v), v[7]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def main():
    args = parse_args()
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means "no peer"
        print(json.dumps({"error": f"cannot import torch with {sys.executable}: {e}"}), flush=True)
        return 0

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    N, V, chunk = args.N, args.V, max(1, min(args.chunk, args.N))
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(N, V, generator=gen, dtype=torch.float32).to(dtype)
    idx = torch.randint(0, V, (N, 1), generator=gen, dtype=torch.int64)
    bounds = [(a, min(a + chunk, N)) for a in range(0, N, chunk)]

    def fwd(rows):
        with torch.inference_mode():
            for a, b in rows:
                lp = torch.log_softmax(x[a:b], -1).gather(-1, idx[a:b])
                del lp
        return 0.0

    def fwd_entropy(rows):
        with torch.inference_mode():
            for a, b in rows:
                logp = torch.log_softmax(x[a:b], -1)
                lp = logp.gather(-1, idx[a:b])
                ent = -(logp.exp() * logp).sum(-1)
                del logp, lp, ent
        return 0.0

    def fwd_bwd(rows):
        """Returns the backward-only seconds; the caller times the whole call."""
        bwd = 0.0
        for a, b in rows:
            xc = x[a:b].detach().requires_grad_(True)  # a fresh leaf: its .grad is allocated by backward
            logp = torch.log_softmax(xc, -1)
            lp = logp.gather(-1, idx[a:b]).squeeze(-1)
            ent = -(logp.exp() * logp).sum(-1)
            loss = lp.sum() + ent.sum()
            t0 = time.perf_counter()
            loss.backward()
            bwd += time.perf_counter() - t0
            del xc, logp, lp, ent, loss
        return bwd

    fns = {"logprobs_fwd": fwd, "logprobs_fwd_entropy": fwd_entropy, "logprobs_bwd": fwd_bwd}
    benches = [b for b in args.benches.split(",") if b]
    for threads in [int(t) for t in args.threads.split(",") if t]:
        torch.set_num_threads(threads)
        for bench in benches:
            fn = fns[bench]
            for _ in range(args.warmup):
                fn(bounds[:1])  # warm-up: allocator, thread pool, kernels
            totals, cpus, bwds = [], [], []
            start = time.perf_counter()
            j0 = cpu_jiffies()
            while len(totals) < args.reps:
                c0 = time.process_time()
                t0 = time.perf_counter()
                bwd = fn(bounds)
                totals.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                bwds.append(bwd)
                if len(totals) >= args.min_reps and time.perf_counter() - start > args.budget_s:
                    break
            j1 = cpu_jiffies()
            line = {
                "bench": bench,
                "threads": threads,
                "torch_threads": torch.get_num_threads(),
                "peer_ms": 1e3 * statistics.median(totals),
                "peer_min_ms": 1e3 * min(totals),
                "peer_cpu_ms": 1e3 * statistics.median(cpus),
                "peer_reps": len(totals),
                "peer_steal": (j1[1] - j0[1]) / (j1[0] - j0[0]) if j1[0] > j0[0] else 0.0,
            }
            if bench == "logprobs_bwd":
                line["peer_bwd_only_ms"] = 1e3 * statistics.median(bwds)
            print(json.dumps(line), flush=True)
    maxrss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    print(json.dumps({"peer": f"torch {torch.__version__}", "chunk_rows": chunk, "peer_max_rss_gb": maxrss_gb}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
