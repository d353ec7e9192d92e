#!/usr/bin/env bash
# flexinfer attn: every kind of bad input gives exit code 2, a message on stderr that
# names the problem, nothing on stdout, and neither --out nor --lse on disk.
set -uo pipefail
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# Fixtures, written by numpy (small, fixed values: the content does not matter here).
python3 - "$tmp" <<'PY'
import sys
import numpy as np
d = sys.argv[1]
def save(name, shape, dtype=np.float32):
    np.save(f"{d}/{name}.npy", (np.arange(int(np.prod(shape))) % 7 * 0.1).reshape(shape).astype(dtype))
save("q", (1, 4, 6, 8)); save("k", (1, 2, 5, 8)); save("v", (1, 2, 5, 8))
save("q3", (4, 6, 8)); save("k3", (2, 5, 8)); save("v3", (2, 5, 8))
save("q_d16", (1, 4, 6, 16))                      # head dim differs from k/v
save("v_len6", (1, 2, 6, 8))                      # k/v length differ
save("k_b2", (2, 2, 5, 8)); save("v_b2", (2, 2, 5, 8))
save("q_h3", (1, 3, 6, 8))                        # 3 % 2 != 0
save("q_d300", (1, 1, 2, 300)); save("k_d300", (1, 1, 2, 300)); save("v_d300", (1, 1, 2, 300))
save("q_2d", (6, 8))
save("q_5d", (1, 1, 4, 6, 8))
save("q_i32", (1, 4, 6, 8), np.int32)
save("q_f64", (1, 4, 6, 8), np.float64)
save("v_f16", (1, 2, 5, 8), np.float16)
save("q_zero_heads", (1, 0, 6, 8))
np.save(f"{d}/q_be.npy", np.ones((1, 4, 6, 8), dtype=">f4"))
np.save(f"{d}/q_fortran.npy", np.asfortranarray(np.ones((1, 4, 6, 8), dtype=np.float32)))
np.save(f"{d}/seg.npy", np.array([0, 0, 1, 1, 1, 2], dtype=np.int32))
np.save(f"{d}/seg_short.npy", np.array([0, 0, 1], dtype=np.int32))
np.save(f"{d}/seg_f32.npy", np.zeros(6, dtype=np.float32))
np.save(f"{d}/seg_rows3.npy", np.zeros((3, 6), dtype=np.int32))
np.save(f"{d}/seg_3d.npy", np.zeros((1, 1, 6), dtype=np.int32))
raw = open(f"{d}/q.npy", "rb").read()
open(f"{d}/q_trunc.npy", "wb").write(raw[:-5])         # data cut short
open(f"{d}/q_trunc_header.npy", "wb").write(raw[:40])  # header cut short
open(f"{d}/q_extra.npy", "wb").write(raw + b"\0\0\0\0")
open(f"{d}/q_magic.npy", "wb").write(b"\x93NUMPX" + raw[6:])
open(f"{d}/q_text.npy", "w").write("this is not an npy file\n")
PY

out="$tmp/o.npy"
lse="$tmp/l.npy"

# expect_bad NAME STDERR-SUBSTRING ARGS...
expect_bad() {
  local name="$1" want="$2"
  shift 2
  rm -f "$out" "$lse"
  "$bin" attn "$@" > "$tmp/stdout" 2> "$tmp/stderr"
  local rc=$?
  if [ "$rc" -ne 2 ]; then
    echo "FAIL: $name: exit code $rc, expected 2" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); return
  fi
  if ! grep -qF -- "$want" "$tmp/stderr"; then
    echo "FAIL: $name: stderr lacks '$want':" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); return
  fi
  if [ -s "$tmp/stdout" ]; then echo "FAIL: $name: wrote to stdout" >&2; fails=$((fails + 1)); return; fi
  if [ -e "$out" ] || [ -e "$lse" ]; then echo "FAIL: $name: an output file exists" >&2; fails=$((fails + 1)); return; fi
  if ls "$tmp" | grep -q '\.tmp\.'; then echo "FAIL: $name: a temporary file was left" >&2; fails=$((fails + 1)); return; fi
  echo "ok: $name"
}

t="$tmp"
io=(--out "$out" --lse "$lse")
qkv=(--q "$t/q.npy" --k "$t/k.npy" --v "$t/v.npy")

# The fixtures themselves are fine: the good case succeeds and writes both files.
rm -f "$out" "$lse"
if "$bin" attn "${qkv[@]}" "${io[@]}" --mask causal 2> "$tmp/stderr" && [ -s "$out" ] && [ -s "$lse" ]; then
  echo "ok: good input runs"
else
  echo "FAIL: good input did not run" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1))
fi

# Flags and numbers.
expect_bad "unknown flag" "unknown option '--maks'" "${qkv[@]}" --maks causal "${io[@]}"
expect_bad "stray argument" "unexpected argument 'causal'" "${qkv[@]}" causal "${io[@]}"
expect_bad "missing --k" "missing: --k" --q "$t/q.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "missing all" "--q, --k and --v are required" "${io[@]}"
expect_bad "missing value" "--threads needs a value" "${qkv[@]}" "${io[@]}" --threads
expect_bad "non-numeric threads" "--threads expects a whole number" "${qkv[@]}" --threads two "${io[@]}"
expect_bad "zero threads" "--threads expects a whole number" "${qkv[@]}" --threads 0 "${io[@]}"
expect_bad "non-numeric scale" "--scale expects a finite non-zero number, got '0.1x'" "${qkv[@]}" --scale 0.1x "${io[@]}"
expect_bad "nan scale" "--scale expects a finite non-zero number" "${qkv[@]}" --scale nan "${io[@]}"
expect_bad "negative q-offset" "--q-offset expects a whole number" "${qkv[@]}" --q-offset -3 "${io[@]}"
expect_bad "fractional splits" "--num-splits expects a whole number" "${qkv[@]}" --num-splits 1.5 "${io[@]}"
expect_bad "huge block" "--block-q expects a whole number" "${qkv[@]}" --block-q 99999999999999999999 "${io[@]}"
expect_bad "zero block" "--block-kv expects a whole number" "${qkv[@]}" --block-kv 0 "${io[@]}"
expect_bad "bad device" "--device must be 'cpu' or 'cuda'" "${qkv[@]}" --device tpu "${io[@]}"
expect_bad "same out and lse" "--out and --lse name the same file" "${qkv[@]}" --out "$out" --lse "$out"

# Shapes.
expect_bad "head dim mismatch" "head dim differs" --q "$t/q_d16.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "k/v length mismatch" "must have the same shape" --q "$t/q.npy" --k "$t/k.npy" --v "$t/v_len6.npy" "${io[@]}"
expect_bad "batch mismatch" "batch differs" --q "$t/q.npy" --k "$t/k_b2.npy" --v "$t/v_b2.npy" "${io[@]}"
expect_bad "3-D vs 4-D" "same number of dimensions" --q "$t/q3.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "Hq % Hkv" "query heads (3) must be a multiple of key/value heads (2)" --q "$t/q_h3.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "D > 256" "head dim D = 300 is larger than the supported maximum 256" --q "$t/q_d300.npy" --k "$t/k_d300.npy" --v "$t/v_d300.npy" "${io[@]}"
expect_bad "2-D q" "expected shape [B, H, L, D] or [H, L, D], got [6, 8]" --q "$t/q_2d.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "5-D q" "expected shape [B, H, L, D] or [H, L, D]" --q "$t/q_5d.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "zero heads" "must be non-zero" --q "$t/q_zero_heads.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "int32 q" "element type int32 is not supported" --q "$t/q_i32.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "float64 q" "element type float64 is not supported" --q "$t/q_f64.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "k f32, v f16" "must have the same element type" --q "$t/q.npy" --k "$t/k.npy" --v "$t/v_f16.npy" "${io[@]}"

# Files.
expect_bad "missing file" "--k: $t/nope.npy: cannot open" --q "$t/q.npy" --k "$t/nope.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "directory" "not a regular file" --q "$t" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "big-endian" "big-endian data (dtype '>f4') is not supported" --q "$t/q_be.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "fortran order" "Fortran-order" --q "$t/q_fortran.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "truncated data" "q_trunc.npy: truncated data" --q "$t/q_trunc.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "truncated header" "truncated .npy header" --q "$t/q_trunc_header.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "trailing bytes" "data size mismatch" --q "$t/q_extra.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "bad magic" "bad magic" --q "$t/q_magic.npy" --k "$t/k.npy" --v "$t/v.npy" "${io[@]}"
expect_bad "text file" "not a .npy file" --q "$t/q.npy" --k "$t/k.npy" --v "$t/q_text.npy" "${io[@]}"

# Masks, score modifiers and segments.
expect_bad "misspelt primitive" "--mask: mask expression, column 10: unknown primitive 'casual'" "${qkv[@]}" --mask "document&casual" "${io[@]}"
expect_bad "window without size" "expected a number after 'window:'" "${qkv[@]}" --mask "window:" "${io[@]}"
expect_bad "unbalanced" "expected ')'" "${qkv[@]}" --mask "(causal | prefix:2" "${io[@]}"
expect_bad "empty mask" "the expression is empty" "${qkv[@]}" --mask "" "${io[@]}"
expect_bad "bad score mod" "--score-mod:" "${qkv[@]}" --score-mod "softcop:5" "${io[@]}"
expect_bad "document without segments" "no segment ids were given" "${qkv[@]}" --mask "causal & document" "${io[@]}"
expect_bad "generated without segments" "no segment ids were given" "${qkv[@]}" --mask "generated" "${io[@]}"
expect_bad "segments too short" "segment ids cover 3 positions" "${qkv[@]}" --mask document --segments "$t/seg_short.npy" "${io[@]}"
expect_bad "segments short for q-offset" "segment ids cover 6 positions" "${qkv[@]}" --mask document --segments "$t/seg.npy" --q-offset 2 "${io[@]}"
expect_bad "float segments" "segment ids must be int32, got float32" "${qkv[@]}" --mask document --segments "$t/seg_f32.npy" "${io[@]}"
expect_bad "segments rows vs batch" "3 rows, but the batch is 1" "${qkv[@]}" --mask document --segments "$t/seg_rows3.npy" "${io[@]}"
expect_bad "3-D segments" "expected shape [Lk] or [B, Lk]" "${qkv[@]}" --mask document --segments "$t/seg_3d.npy" "${io[@]}"
expect_bad "missing segments file" "--segments: $t/none.npy: cannot open" "${qkv[@]}" --mask document --segments "$t/none.npy" "${io[@]}"

# --device cuda: refused with a clear message on a build without CUDA (or a machine without a GPU).
rm -f "$out" "$lse"
"$bin" attn "${qkv[@]}" --device cuda "${io[@]}" > /dev/null 2> "$tmp/stderr"
rc=$?
if [ "$rc" -eq 0 ]; then
  echo "ok: --device cuda ran (this build has CUDA and a GPU)"
elif [ "$rc" -eq 2 ] && grep -qE "built without CUDA \(configure with -DFI_CUDA=ON\)|CUDA" "$tmp/stderr" && [ ! -e "$out" ]; then
  echo "ok: --device cuda refused: $(head -1 "$tmp/stderr")"
else
  echo "FAIL: --device cuda: exit code $rc" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1))
fi

# Output that cannot be written: a runtime failure (exit 1), and neither file remains.
rm -f "$out" "$lse"
"$bin" attn "${qkv[@]}" --out "$tmp/no/such/dir/o.npy" --lse "$lse" 2> "$tmp/stderr"
rc=$?
if [ "$rc" -eq 1 ] && [ ! -e "$lse" ] && grep -q "cannot create" "$tmp/stderr"; then echo "ok: unwritable --out"; else
  echo "FAIL: unwritable --out: exit code $rc" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); fi
"$bin" attn "${qkv[@]}" --out "$out" --lse "$tmp/no/such/dir/l.npy" 2> "$tmp/stderr"
rc=$?
if [ "$rc" -eq 1 ] && [ ! -e "$out" ] && grep -q "removed" "$tmp/stderr"; then echo "ok: unwritable --lse removes --out"; else
  echo "FAIL: unwritable --lse: exit code $rc" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); fi

# --help is not an error: usage on stdout, exit code 0.
if "$bin" attn --help > "$tmp/stdout" 2>&1 && grep -q "usage: flexinfer attn" "$tmp/stdout"; then echo "ok: --help"; else
  echo "FAIL: --help" >&2; fails=$((fails + 1)); fi

if [ "$fails" -ne 0 ]; then echo "$fails case(s) failed" >&2; exit 1; fi
echo "all bad-input cases passed"
