#!/usr/bin/env bash
# benchmarks/run_cuda.sh — the GPU performance record: builds cai_bench_cuda, runs it and the PyTorch peers
# (benchmarks/peer_torch_cuda.py) on the same GPU, and writes one JSON line per case with cai_ms, gbps,
# copy_fraction, peer_ms and ratio = peer_ms / cai_ms (peer_ms of the matching forward; the extra peer forms are
# reported as peer_<form>_ms and ratio_<form>).
#
#   benchmarks/run_cuda.sh [OUTPUT.jsonl] [--quick]
#
# Environment: PYTHON (an interpreter with a CUDA build of torch; default python3), BUILD_DIR (default
# <repo>/build-bench-cuda), JOBS (default 8). Needs nvcc and a GPU; runs in under 10 minutes on an H100.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${root}/benchmarks/results/cuda.jsonl"
if [[ $# -gt 0 && "$1" != -* ]]; then
  out="$1"
  shift
fi
build="${BUILD_DIR:-${root}/build-bench-cuda}"
python="${PYTHON:-python3}"

cmake -S "${root}" -B "${build}" -DCMAKE_BUILD_TYPE=Release -DCAI_BUILD_BENCHMARKS=ON -DCAI_BUILD_TESTS=OFF \
      -DCAI_BUILD_EXAMPLES=OFF -DCAI_ENABLE_TORCH=OFF -DCAI_ENABLE_SENTENCEPIECE=OFF >&2
cmake --build "${build}" --target cai_bench_cuda -j "${JOBS:-8}" >&2

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
"${build}/benchmarks/cai_bench_cuda" "$@" > "${tmp}/cai.jsonl"
"${python}" "${root}/benchmarks/peer_torch_cuda.py" "$@" > "${tmp}/peer.jsonl" || true

mkdir -p "$(dirname "${out}")"
"${python}" - "${tmp}/cai.jsonl" "${tmp}/peer.jsonl" > "${out}" <<'PY'
import json, sys
cai = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
peer = {}
for l in open(sys.argv[2]):
    if l.strip():
        d = json.loads(l)
        if "bench" in d:
            peer[(d["bench"], d["shape"], d["dtype"])] = d
# Which peer forms each cai case is compared with; the first is "the" peer (ratio).
forms = {
    "logprobs_fwd_entropy": ["logprobs_fwd_entropy", "logprobs_fwd", "logprobs_fwd_selective", "logprobs_selective_entropy"],
    "logprobs_fwd_saved": ["logprobs_fwd_entropy"],
    "logprobs_bwd": ["logprobs_bwd"],
    "gae": ["gae"],
}
for c in cai:
    if "bench" not in c:
        print(json.dumps(c))
        continue
    for i, f in enumerate(forms.get(c["bench"], [])):
        p = peer.get((f, c["shape"], c["dtype"]))
        ms = p.get("peer_ms") if p else None
        key = "peer_ms" if i == 0 else "peer_%s_ms" % f
        c[key] = ms
        c[("ratio" if i == 0 else "ratio_%s" % f)] = round(ms / c["cai_ms"], 2) if ms else None
    print(json.dumps(c))
PY
cat "${out}"
echo "wrote ${out}" >&2
