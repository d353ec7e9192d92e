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
