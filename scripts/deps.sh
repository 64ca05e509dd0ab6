#!/usr/bin/env bash
# Installs the Debian packages cai's build, tests and demo need, when they are missing. Safe to run repeatedly.
# Optional extras: CAI_DEPS_EXTRA="python3-torch python3-numpy" (benchmarks against PyTorch).
set -euo pipefail
need=(build-essential cmake pkg-config catch2 nlohmann-json3-dev librange-v3-dev libcpp-httplib-dev clang libclang-rt-14-dev)
# The LibTorch adapters (cai::torch) and the SentencePiece tokenizer's trainer (cai::sentencepiece): Debian's LibTorch
# 1.13, python3-torch to export the TorchScript models the [torch] tests and examples load, libsentencepiece.
need+=(libtorch-dev python3-torch libsentencepiece-dev)
# shellcheck disable=SC2206
need+=(${CAI_DEPS_EXTRA:-})
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "cai: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nvcc is optional: the CUDA translation units are compiled when it is found (CUDA 13 lives in /usr/local/cuda).
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "cai: nvcc found at /usr/local/cuda/bin (add it to PATH to build the CUDA parts outside these scripts)"
fi
