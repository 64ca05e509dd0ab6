#!/usr/bin/env bash
# Builds fuzz/parsers.cpp with clang's libFuzzer (plus ASan and UBSan) and runs it for a while on a copy of the seed
# corpus (fuzz/corpus: the default constitution, an open-recipe constitution, dataset records). Usage:
#   bash fuzz/run.sh [seconds=30] [build dir=build/fuzz]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
out=${2:-build/fuzz}
mkdir -p "$out/corpus"
cp fuzz/corpus/* data/constitution.json "$out/corpus/"
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude \
  fuzz/parsers.cpp -o "$out/parsers"
"$out/parsers" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$out/corpus" 2>&1 | tail -n 12
