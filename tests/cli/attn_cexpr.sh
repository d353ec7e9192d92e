#!/usr/bin/env bash
# flexinfer attn --mask-expr / --score-expr / --array (C expressions compiled for the
# GPU): on the CPU they are refused with exit code 2 and a message that names
# --device cuda; misuse is refused everywhere. Where a GPU is present (CUDA build),
# a document mask written as an expression over an --array must agree with the
# built-in "causal & document" on the CPU, and a bad expression gives exit code 2
# with the compiler's message.
set -uo pipefail
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

python3 - "$tmp" <<'PY'
import sys
import numpy as np
d = sys.argv[1]
rng = np.random.default_rng(7)
for name, shape in (("q", (1, 4, 200, 64)), ("k", (1, 2, 200, 64)), ("v", (1, 2, 200, 64))):
    np.save(f"{d}/{name}.npy", rng.standard_normal(shape).astype(np.float16))
np.save(f"{d}/doc.npy", (np.arange(200) // 37).astype(np.int32))
np.save(f"{d}/bias.npy", np.linspace(-1, 1, 4).astype(np.float32))
np.save(f"{d}/bad_f64.npy", np.zeros(4))
PY

out="$tmp/o.npy"
qkv=(--q "$tmp/q.npy" --k "$tmp/k.npy" --v "$tmp/v.npy" --out "$out")

# expect_bad NAME STDERR-SUBSTRING ARGS...
expect_bad() {
  local name="$1" want="$2"
  shift 2
  rm -f "$out"
  "$bin" attn "$@" > "$tmp/stdout" 2> "$tmp/stderr"
  local rc=$?
  if [ "$rc" -ne 2 ]; then
    echo "FAIL: $name: exit code $rc, expected 2" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); return
  fi
  if ! grep -qF -- "$want" "$tmp/stderr"; then
    echo "FAIL: $name: stderr lacks '$want':" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); return
  fi
  if [ -s "$tmp/stdout" ] || [ -e "$out" ]; then echo "FAIL: $name: wrote output" >&2; fails=$((fails + 1)); return; fi
  echo "ok: $name"
}

expect_bad "mask-expr on the CPU" "need --device cuda" "${qkv[@]}" --mask-expr "kv <= q"
expect_bad "score-expr on the CPU" "need --device cuda" "${qkv[@]}" --device cpu --score-expr "score * 2.f"
expect_bad "array on the CPU" "need --device cuda" "${qkv[@]}" --array "doc=$tmp/doc.npy"
expect_bad "kernel cache on the CPU" "need --device cuda" "${qkv[@]}" --kernel-cache "$tmp"
expect_bad "array without =" "--array expects NAME=FILE.npy" "${qkv[@]}" --array "$tmp/doc.npy"

if "$bin" attn "${qkv[@]}" --device cuda 2> "$tmp/stderr"; then
  gpu=1
else
  gpu=0
  echo "note: no usable CUDA device ($(head -c 200 "$tmp/stderr")); GPU cases skipped"
fi
if [ "$gpu" = 1 ]; then
  expect_bad "array without expression" "need --mask-expr or --score-expr" "${qkv[@]}" --device cuda \
    --array "doc=$tmp/doc.npy"
  expect_bad "check with expressions" "--check cannot" "${qkv[@]}" --device cuda --mask-expr "kv <= q" --check
  expect_bad "bad expression" "identifier \"kvv\" is undefined" "${qkv[@]}" --device cuda --mask-expr "kv <= qq + kvv"
  expect_bad "float64 array" "int32 or float32" "${qkv[@]}" --device cuda --mask-expr "d[q] == 0" \
    --array "d=$tmp/bad_f64.npy"
  # Expression document mask on the GPU against the built-in one on the CPU.
  "$bin" attn "${qkv[@]}" --device cuda --mask-expr "doc[q] == doc[kv] && kv <= q" --array "doc=$tmp/doc.npy" \
    --kernel-cache "$tmp" 2> "$tmp/stderr" && mv "$out" "$tmp/gpu.npy" || {
    echo "FAIL: GPU expression run" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); }
  "$bin" attn "${qkv[@]}" --mask "causal & document" --segments "$tmp/doc.npy" 2> "$tmp/stderr" &&
    mv "$out" "$tmp/cpu.npy" || { echo "FAIL: CPU run" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); }
  if python3 - "$tmp" <<'PY'
import sys
import numpy as np
d = sys.argv[1]
g, c = np.load(f"{d}/gpu.npy"), np.load(f"{d}/cpu.npy")
err = float(np.abs(g - c).max())
print(f"GPU expression vs CPU built-in document mask: max|dO| {err:.2e}")
sys.exit(0 if err <= 5e-3 else 1)
PY
  then echo "ok: expression document mask matches"; else echo "FAIL: outputs differ" >&2; fails=$((fails + 1)); fi
fi

if [ "$fails" -ne 0 ]; then echo "$fails failure(s)" >&2; exit 1; fi
echo "all passed"
