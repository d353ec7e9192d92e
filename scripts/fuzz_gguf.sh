#!/usr/bin/env bash
# Fuzzes the GGUF reader with libFuzzer (clang, ASan + UBSan) for SECONDS (default 60),
# starting from the kept corpus fuzz/corpus/gguf/. New inputs go to a scratch corpus
# (build-fuzz/corpus) so the kept one stays small; crashes land in build-fuzz/crashes/.
#   usage: scripts/fuzz_gguf.sh [SECONDS] [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
jobs=${2:-1}
command -v clang >/dev/null || { echo "fuzz_gguf: needs clang (apt-get install clang libclang-rt-dev)" >&2; exit 1; }
cmake -S . -B build-fuzz -DFI_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz --target gguf_fuzz -j2 >/dev/null
mkdir -p build-fuzz/corpus build-fuzz/crashes
parallel=()
if [ "$jobs" -gt 1 ]; then parallel=(-jobs="$jobs" -workers="$jobs"); fi
cd build-fuzz # libFuzzer writes its per-job logs into the working directory
./fuzz/gguf_fuzz corpus ../fuzz/corpus/gguf \
  -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -dict=../fuzz/gguf.dict \
  "${parallel[@]}" -artifact_prefix=crashes/ -print_final_stats=1
