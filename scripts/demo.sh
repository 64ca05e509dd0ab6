#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs cai's main demo. Usage: bash scripts/demo.sh [steps] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DCAI_BUILD_TESTS=OFF -DCAI_BUILD_BENCHMARKS=OFF \
      -DCAI_ENABLE_CUDA=OFF >/dev/null
cmake --build build/demo --target cai_demo -j"$(nproc)"
./build/demo/examples/cai_demo "$@"
