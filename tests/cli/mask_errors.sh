#!/usr/bin/env bash
# flexinfer mask: bad input gives a clear message on stderr, exit code 2 and no output file.
set -uo pipefail
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

write_npy() { # FILE DESCR SHAPE VALUES... (values packed as the descr's struct code)
  python3 - "$@" <<'PY'
import struct, sys
path, descr, shape, values = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
code = {"<i4": "<%di", "<f4": "<%df", ">i4": ">%di", "<i8": "<%dq"}[descr]
conv = float if "f" in descr else int
header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack(code % len(values), *[conv(v) for v in values]))
PY
}

# expect_bad NAME STDERR-SUBSTRING ARGS...: exit code 2, the message, nothing on stdout, no PNG.
expect_bad() {
  local name="$1" want="$2"
  shift 2
  rm -f "$tmp/out.png"
  "$bin" mask "$@" > "$tmp/stdout" 2> "$tmp/stderr"
  local rc=$?
  if [ "$rc" -ne 2 ]; then echo "FAIL: $name: exit code $rc, expected 2" >&2; fails=$((fails + 1)); return; fi
  if ! grep -qF -- "$want" "$tmp/stderr"; then
    echo "FAIL: $name: stderr lacks '$want':" >&2; cat "$tmp/stderr" >&2; fails=$((fails + 1)); return
  fi
  if [ -s "$tmp/stdout" ]; then echo "FAIL: $name: wrote to stdout" >&2; fails=$((fails + 1)); return; fi
  if [ -e "$tmp/out.png" ]; then echo "FAIL: $name: wrote the PNG" >&2; fails=$((fails + 1)); return; fi
  echo "ok: $name"
}

png=(--png "$tmp/out.png")
expect_bad "bad primitive" "mask expression, column 10: unknown primitive 'casual'" --mask "document&casual" --q-len 4 --kv-len 4 "${png[@]}"
expect_bad "missing number" "mask expression, column 8: expected a number after 'window:'" --mask "window:" --q-len 4 --kv-len 4 "${png[@]}"
expect_bad "unbalanced" "expected ')' to close the '(' at column 1" --mask "(causal" --q-len 4 --kv-len 4 "${png[@]}"
expect_bad "trailing garbage" "unexpected 'x' after a complete expression" --mask "causal x" --q-len 4 --kv-len 4 "${png[@]}"
expect_bad "empty expression" "the expression is empty" --mask "" --q-len 4 --kv-len 4 "${png[@]}"
expect_bad "no --mask" "--mask EXPR is required" --q-len 4 --kv-len 4 "${png[@]}"
expect_bad "no --q-len" "--q-len and --kv-len are required" --mask causal --kv-len 4 "${png[@]}"
expect_bad "bad number" "--q-len expects a whole number" --mask causal --q-len 4x --kv-len 4 "${png[@]}"
expect_bad "zero length" "--kv-len expects a whole number" --mask causal --q-len 4 --kv-len 0 "${png[@]}"
expect_bad "negative offset" "--q-offset expects a whole number" --mask causal --q-len 4 --kv-len 4 --q-offset -1 "${png[@]}"
expect_bad "huge length" "--q-len expects a whole number" --mask causal --q-len 99999999999999999999 --kv-len 4 "${png[@]}"
expect_bad "zero block" "--block expects a whole number" --mask causal --q-len 4 --kv-len 4 --block 0 "${png[@]}"
expect_bad "missing value" "--block needs a value" --mask causal --q-len 4 --kv-len 4 --block
expect_bad "unknown option" "unknown option '--colour'" --mask causal --q-len 4 --kv-len 4 --colour
expect_bad "too many blocks" "too many to draw" --mask causal --q-len 16777216 --kv-len 16777216 --block 1 "${png[@]}"
expect_bad "document without segments" "no segment ids were given" --mask "causal & document" --q-len 4 --kv-len 4 "${png[@]}"
expect_bad "generated without segments" "no segment ids were given" --mask "generated" --q-len 4 --kv-len 4 "${png[@]}"
expect_bad "missing segments file" "--segments" --mask document --q-len 4 --kv-len 4 --segments "$tmp/none.npy" "${png[@]}"
printf 'not an npy file' > "$tmp/junk.npy"
expect_bad "junk segments file" "--segments" --mask document --q-len 4 --kv-len 4 --segments "$tmp/junk.npy" "${png[@]}"
write_npy "$tmp/trunc.npy" "<i4" "(8,)" 0 0 0 1 1 1 2 2
head -c -8 "$tmp/trunc.npy" > "$tmp/trunc2.npy"
expect_bad "truncated segments" "--segments" --mask document --q-len 4 --kv-len 8 --segments "$tmp/trunc2.npy" "${png[@]}"
write_npy "$tmp/f32.npy" "<f4" "(4,)" 0 0 1 1
expect_bad "float segments" "int32" --mask document --q-len 4 --kv-len 4 --segments "$tmp/f32.npy" "${png[@]}"
write_npy "$tmp/be.npy" ">i4" "(4,)" 0 0 1 1
expect_bad "big-endian segments" "--segments" --mask document --q-len 4 --kv-len 4 --segments "$tmp/be.npy" "${png[@]}"
write_npy "$tmp/short.npy" "<i4" "(4,)" 0 0 1 1
expect_bad "segments too short" "segment ids cover 4 positions" --mask document --q-len 4 --kv-len 6 --segments "$tmp/short.npy" "${png[@]}"
expect_bad "segments too short for the q offset" "segment ids cover 4 positions" --mask document --q-len 2 --kv-len 4 --q-offset 3 --segments "$tmp/short.npy" "${png[@]}"
write_npy "$tmp/3d.npy" "<i4" "(1, 1, 4)" 0 0 1 1
expect_bad "3-D segments" "expected shape [L] or [B, L]" --mask document --q-len 4 --kv-len 4 --segments "$tmp/3d.npy" "${png[@]}"
write_npy "$tmp/b2.npy" "<i4" "(2, 4)" 0 0 1 1 0 1 1 1
expect_bad "batch row out of range" "--batch-row 2 is out of range" --mask document --q-len 4 --kv-len 4 --segments "$tmp/b2.npy" --batch-row 2 "${png[@]}"
expect_bad "unwritable PNG" "cannot write" --mask causal --q-len 4 --kv-len 4 --png "$tmp/no/such/dir/x.png"

# Good input: exit 0, PNG written.
if "$bin" mask --mask document --q-len 4 --kv-len 4 --segments "$tmp/b2.npy" --batch-row 1 --png "$tmp/ok.png" > /dev/null &&
   [ "$(head -c 4 "$tmp/ok.png" | od -An -c | tr -d ' ')" = "211PNG" ]; then
  echo "ok: good input writes a PNG"
else
  echo "FAIL: good input" >&2; fails=$((fails + 1))
fi
"$bin" mask --help > "$tmp/help" && grep -q "usage: flexinfer mask" "$tmp/help" && echo "ok: --help" || { echo "FAIL: --help" >&2; fails=$((fails + 1)); }

[ "$fails" -eq 0 ] || { echo "$fails failure(s)" >&2; exit 1; }
