#!/usr/bin/env bash
# One pass on the GPU machine: build the CUDA backend, run the GPU tests (also
# under compute-sanitizer memcheck and racecheck on small shapes), the PyTorch
# cross-check and the side-by-side benchmark. Logs go to $OUT (default /tmp/fi-gpu).
# Debian packages the build needs (pcre2, cmocka, pkg-config) may be supplied as
# .deb files in $FI_DEBS when the machine has no package access.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/fi-gpu}
mkdir -p "$OUT"
DEBS=${FI_DEBS:-}
BUILD=${FI_GPU_BUILD:-build-gpu}
STEPS=${FI_GPU_STEPS:-build test sanitize check bench}

unpack() { for pat in "$@"; do for f in "$DEBS"/$pat*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done; done; }
if [ -n "$DEBS" ]; then
  command -v pkg-config >/dev/null || unpack pkgconf_ pkgconf-bin_ libpkgconf3_
  [ -e /usr/include/pcre2.h ] || unpack libpcre2-dev_
  ls /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0 >/dev/null 2>&1 || unpack libpcre2-8-0_
  ls /usr/lib/x86_64-linux-gnu/libpcre2-16.so.0 >/dev/null 2>&1 || unpack libpcre2-16-0_
  ls /usr/lib/x86_64-linux-gnu/libpcre2-32.so.0 >/dev/null 2>&1 || unpack libpcre2-32-0_
  ls /usr/lib/x86_64-linux-gnu/libpcre2-posix.so.3 >/dev/null 2>&1 || unpack libpcre2-posix3_
  [ -e /usr/include/cmocka.h ] || unpack libcmocka-dev_ libcmocka0_
  ldconfig
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/device.txt"

for step in $STEPS; do case $step in
build)
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFI_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >"$OUT/build.log" 2>&1
  for t in flexinfer_cuda fi_cuda_bench flexinfer_cli $(cd tests/gpu && ls test_*.c | sed 's/\.c$//'); do
    cmake --build "$BUILD" --target $t -j16 >>"$OUT/build.log" 2>&1 || echo "BUILD FAILED: $t (see build.log)"
  done
  grep -E "error|spill|warning" "$OUT/build.log" | head -20
  cuobjdump --dump-resource-usage "$BUILD/libflexinfer_cuda.a" 2>&1 | grep -E "Function|REG" | paste - - |
    sed -E 's/.*Function ([^:]*):.*REG:([0-9]+) STACK:([0-9]+) SHARED:([0-9]+).*/\1 REG \2 STACK \3 SHARED \4/' >"$OUT/resources.txt"
  cat "$OUT/resources.txt" ;;
fibench)
  "$BUILD/fi_cuda_bench" --iters 10 2>&1 | tee "$OUT/fibench.txt" ;;
test)
  ctest --test-dir "$BUILD" -L gpu --output-on-failure -V >"$OUT/test_gpu.log" 2>&1; echo "ctest -L gpu: rc=$?"
  grep -E "max\||PASSED|FAILED|seed" "$OUT/test_gpu.log" | tail -60
  # Again on the portable prefill kernel (FI_CUDA_WGMMA=0; test_gpu_wgmma runs both itself).
  FI_CUDA_WGMMA=0 ctest --test-dir "$BUILD" -L gpu -E test_gpu_wgmma --output-on-failure -V >"$OUT/test_gpu_portable.log" 2>&1
  echo "ctest -L gpu, FI_CUDA_WGMMA=0: rc=$?"; grep -E "PASSED|FAILED" "$OUT/test_gpu_portable.log" | tail -10 ;;
sanitize)
  for prog in test_gpu_attn test_gpu_wgmma; do for tool in memcheck racecheck; do
    FI_GPU_TEST_SMALL=1 timeout ${FI_SANITIZE_TIMEOUT:-200} compute-sanitizer --tool $tool --error-exitcode 9 "$BUILD/tests/gpu/$prog" \
      >"$OUT/sanitize_${prog}_$tool.log" 2>&1; echo "compute-sanitizer $tool $prog: rc=$?"; tail -3 "$OUT/sanitize_${prog}_$tool.log"
  done; done ;;
check)
  python3 bench/cuda/torch_check.py --flexinfer "$BUILD/flexinfer" --out "$OUT/torch_check.md" >"$OUT/torch_check.log" 2>&1
  echo "torch_check: rc=$?"; tail -20 "$OUT/torch_check.log" ;;
bench)
  python3 bench/cuda/bench_torch.py --fi-bench "$BUILD/fi_cuda_bench" --out "$OUT/bench.md" >"$OUT/bench.log" 2>&1
  echo "bench: rc=$?"; cat "$OUT/bench.md" ;;
flex)
  python3 scripts/flex_check.py --flexinfer "$BUILD/flexinfer" --out "$OUT/flex_check.md" >"$OUT/flex_check.log" 2>&1
  echo "flex_check: rc=$?"; tail -5 "$OUT/flex_check.log" ;;
esac; done
