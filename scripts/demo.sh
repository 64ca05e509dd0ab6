#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs cai's main demo: the Constitutional AI pipeline on the embedded
# transformer in a synthetic world with gold judges (examples/constitutional_pipeline). Usage:
#   bash scripts/demo.sh [--seeds 1,2,3] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DCAI_BUILD_TESTS=OFF -DCAI_BUILD_BENCHMARKS=OFF \
      -DCAI_ENABLE_CUDA=OFF >/dev/null
cmake --build build/demo --target cai_constitutional_pipeline -j"$(nproc)"
./build/demo/examples/cai_constitutional_pipeline "$@"
