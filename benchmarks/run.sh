#!/usr/bin/env bash
# benchmarks/run.sh — configure a Release build in build-bench/, build cai_bench_logprobs and run it.
#
#   benchmarks/run.sh [OUTPUT.jsonl] [--] [arguments for cai_bench_logprobs, e.g. --quick]
#
# The JSON lines (the first one holds the compiler flags) go to OUTPUT (default benchmarks/results/logprobs.jsonl)
# and to the terminal; progress goes to stderr. Environment: BUILD_DIR (default <repo>/build-bench), JOBS
# (default 1: the benchmark machine has 2 cores, keep the second one for the measured threads).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${root}/benchmarks/results/logprobs.jsonl"
if [[ $# -gt 0 && "$1" != -* ]]; then
  out="$1"
  shift
fi
if [[ $# -gt 0 && "$1" == "--" ]]; then
  shift
fi
build="${BUILD_DIR:-${root}/build-bench}"

cmake -S "${root}" -B "${build}" -DCMAKE_BUILD_TYPE=Release -DCAI_BUILD_BENCHMARKS=ON -DCAI_BUILD_TESTS=OFF \
      -DCAI_BUILD_EXAMPLES=OFF >&2
cmake --build "${build}" --target cai_bench_logprobs -j "${JOBS:-1}" >&2

mkdir -p "$(dirname "${out}")"
"${build}/benchmarks/cai_bench_logprobs" "$@" | tee "${out}"
echo "wrote ${out}" >&2
