#!/usr/bin/env bash
# Builds and runs every test: the Release build, then the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer. Does all set-up first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
jobs=$(nproc)

echo "== tests (Release) =="
ctest --test-dir build --output-on-failure -j"$jobs" -LE gpu

echo "== tests (ASan + UBSan) =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DFI_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs" >/dev/null
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -LE "gpu|slow"

# The CUDA backend is compiled (not run: CI has no GPU) wherever nvcc exists.
if command -v nvcc >/dev/null; then
  echo "== CUDA backend (compile only; run 'ctest -L gpu' on a GPU machine) =="
  cmake -S . -B build-cuda-ci -DCMAKE_BUILD_TYPE=Release -DFI_CUDA=ON >/dev/null
  cmake --build build-cuda-ci --target flexinfer_cuda test_gpu_attn test_gpu_expr fi_cuda_bench -j"$jobs" >/dev/null
  # Its NVRTC checks (compile errors, expression rules) need no GPU; the rest skips.
  build-cuda-ci/tests/gpu/test_gpu_expr
fi
