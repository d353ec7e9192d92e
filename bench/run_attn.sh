#!/usr/bin/env bash
# The attention benchmark in one go (issue 2 §6): builds flexinfer (Release, FI_NATIVE off)
# into build-bench/, measures the machine's FMA peak and memory read bandwidth, runs
# bench/attn_bench (flexinfer), bench/attn_numpy.py (numpy/OpenBLAS, and PyTorch CPU SDPA
# where torch is importable) with the same cases and thread count, and writes
# bench/results/attn.md with the command, the machine, the date, every figure and the
# ratios against the targets.
#
# Usage: bash bench/run_attn.sh [--threads N] [--budget SECONDS] [--with-torch]
#   --with-torch installs PyTorch from PyPI first when it is not importable (a CUDA build with
#   several GB of CUDA runtime packages; it runs on a CPU-only machine) for the SDPA column.
#   --budget caps the flexinfer prefill runs (default 330 s); numpy and PyTorch get 150 s each. Cases that
#   would overrun are skipped and listed as such, so the whole script stays under about
#   10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2
budget=330
with_torch=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --with-torch) with_torch=1; shift ;;
    *) echo "run_attn.sh: unknown option '$1' (known: --threads N, --budget S, --with-torch)" >&2; exit 2 ;;
  esac
done

build=build-bench
out=bench/results/attn.md
mkdir -p bench/results

echo "== build (Release, FI_NATIVE=OFF) into $build" >&2
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFI_NATIVE=OFF >/dev/null
cmake --build "$build" --target fma_peak mem_bandwidth attn_bench -j"$(nproc)" >/dev/null

# threadpoolctl tells which OpenBLAS kernel numpy uses; it is small and from PyPI.
if ! python3 -c "import threadpoolctl" 2>/dev/null; then
  python3 -m pip install -q threadpoolctl 2>/dev/null || python3 -m pip install -q --break-system-packages threadpoolctl || true
fi

if [ "$with_torch" = 1 ] && ! python3 -c "import torch" 2>/dev/null; then
  echo "== installing PyTorch from PyPI (several GB)" >&2
  python3 -m pip install -q torch 2>/dev/null || python3 -m pip install -q --break-system-packages torch
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== FMA peak" >&2
"$build/bench/fma_peak" --threads-list "1,$threads" | tee "$tmp/fma" >&2
echo "== memory bandwidth" >&2
"$build/bench/mem_bandwidth" --threads-list "1,$threads" | tee "$tmp/mem" >&2
peak=$(awk -v t="$threads" '$1 == "fma_peak" && $3 == "threads=" t { sub("gflops=", "", $4); print $4 }' "$tmp/fma")
bw=$(awk -v t="$threads" '$1 == "mem_bandwidth" && $2 == "threads=" t { sub("gbps=", "", $3); print $3 }' "$tmp/mem")

echo "== flexinfer attention (budget ${budget} s)" >&2
"$build/bench/attn_bench" --threads "$threads" --fma-peak "${peak:-0}" --bandwidth "${bw:-0}" --budget "$budget" \
  | tee "$tmp/attn" >&2

# numpy with the OpenBLAS settings of this machine's environment removed for this command
# alone, so OpenBLAS picks its kernel from the CPU it detects.
echo "== numpy / PyTorch CPU (budget 150 s each)" >&2
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
  python3 bench/attn_numpy.py --threads "$threads" --budget 150 --torch-budget 150 | tee "$tmp/numpy" >&2

torch_note="PyTorch is importable here; its SDPA figures are in the numpy section."
if ! python3 -c "import torch" 2>/dev/null; then
  torch_note="PyTorch is not installed here, so its column is empty: rerun with --with-torch (PyPI's torch is a
CUDA build that pulls several GB of CUDA runtime packages; it runs on the CPU without a GPU)."
fi

{
  echo "# Attention benchmark (CPU)"
  echo
  echo "- command: \`bash bench/run_attn.sh --threads $threads --budget $budget\`"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs (nproc);" \
       "$(lscpu | sed -n 's/^L2 cache: *//p' | head -1) L2, $(lscpu | sed -n 's/^L3 cache: *//p' | head -1) L3;" \
       "flags: $(grep -o -w -E 'avx512f|avx2|fma|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "- load average when the report was written: $(cut -d' ' -f1-3 /proc/loadavg) (figures from a busy machine are preliminary)"
  echo "- build: Release, FI_NATIVE=OFF (kernels choose their SIMD path at run time), $threads threads"
  echo
  echo "## Machine limits"
  echo
  echo '```'
  grep -h -v -E '^(fma_peak|mem_bandwidth) ' "$tmp/fma" "$tmp/mem"
  echo '```'
  echo
  echo "Targets below use the $threads-thread figures: FMA peak ${peak:-?} GFLOP/s, read bandwidth ${bw:-?} GB/s."
  echo
  echo "## flexinfer (bench/attn_bench)"
  echo
  cat "$tmp/attn"
  echo
  echo "## numpy / OpenBLAS and PyTorch CPU (bench/attn_numpy.py)"
  echo
  echo "Run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this command alone."
  echo
  cat "$tmp/numpy"
  echo
  echo "## PyTorch CPU"
  echo
  echo "$torch_note"
  echo
  echo "## Side by side (same run): peer time / flexinfer time"
  echo
  python3 bench/attn_ratio.py "$tmp/attn" "$tmp/numpy"
} > "$out"
echo "run_attn.sh: wrote $out" >&2
