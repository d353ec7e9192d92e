#!/usr/bin/env bash
# flexinfer info: a small GGUF written here (Python standard library) prints the metadata and
# tensor table it holds; malformed files exit 2 with the validation message; the default model,
# when present, shows its known shape.
set -euo pipefail
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

python3 - "$tmp/small.gguf" <<'PY'
import struct, sys
def s(x): b = x.encode(); return struct.pack("<Q", len(b)) + b
kv = [
    s("general.architecture") + struct.pack("<I", 8) + s("llama"),
    s("test.count") + struct.pack("<II", 4, 7),
    s("test.ratio") + struct.pack("<If", 6, 0.5),
    s("test.flag") + struct.pack("<IB", 7, 1),
    s("test.ids") + struct.pack("<IIQ", 9, 5, 7) + struct.pack("<7i", 10, -1, 2, 3, 4, 5, 6),
    s("test.words") + struct.pack("<IIQ", 9, 8, 2) + s("a b") + s("\u00e9"),
]
tensors = [("w", [4, 2], 0, 32), ("v", [64], 8, 68)]  # F32 [4, 2]; Q8_0 [64]
head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv)
info, off = b"", 0
for name, ne, ty, nbytes in tensors:
    info += s(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne) + struct.pack("<IQ", ty, off)
    off += (nbytes + 31) // 32 * 32
body = head + info
body += b"\0" * (-len(body) % 32)
body += bytes(range(32)) + b"\0" * 0 + bytes(68)
open(sys.argv[1], "wb").write(body)
PY

"$bin" info -m "$tmp/small.gguf" --tensors > "$tmp/out" || fail "valid file rejected"
grep -q '^gguf version: 3' "$tmp/out" || fail "version line"
grep -q '^metadata: 6 keys' "$tmp/out" || fail "key count"
grep -Eq '^  general.architecture +string = "llama"$' "$tmp/out" || fail "string value"
grep -Eq '^  test.count +u32 = 7$' "$tmp/out" || fail "u32 value"
grep -Eq '^  test.ratio +f32 = 0.5$' "$tmp/out" || fail "f32 value"
grep -Eq '^  test.flag +bool = true$' "$tmp/out" || fail "bool value"
grep -Eq '^  test.ids +array\[i32 x 7\] = \[10, -1, 2, 3, 4, \.\.\.\]$' "$tmp/out" || fail "i32 array summary"
grep -Eq '^  test.words +array\[string x 2\] = \["a b", "é"\]$' "$tmp/out" || fail "string array"
grep -Eq '^tensors: 2 \(72 parameters' "$tmp/out" || fail "tensor summary"
grep -Eq '^  w +F32 +\[4, 2\] +32 +[0-9]+$' "$tmp/out" || fail "tensor row w"
grep -Eq '^  v +Q8_0 +\[64\] +68 +[0-9]+$' "$tmp/out" || fail "tensor row v"
echo "ok: small file"

expect_reject() { # name file needle
  set +e
  "$bin" info -m "$2" > /dev/null 2> "$tmp/err"
  rc=$?
  set -e
  [ "$rc" = 2 ] || fail "$1: exit $rc, expected 2"
  grep -qF -- "$3" "$tmp/err" || { cat "$tmp/err" >&2; fail "$1: message lacks '$3'"; }
  echo "ok: $1 rejected"
}
printf 'not a model at all, just text\n' > "$tmp/text.gguf"
expect_reject "text file" "$tmp/text.gguf" "magic (at offset 0)"
expect_reject "missing file" "$tmp/none.gguf" "cannot open"
head -c 200 "$tmp/small.gguf" > "$tmp/cut.gguf"
expect_reject "truncated file" "$tmp/cut.gguf" "gguf: "
python3 - "$tmp/small.gguf" "$tmp/badtype.gguf" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.index(b"test.count") + len("test.count")
b[i] = 13  # value type 13 does not exist
open(sys.argv[2], "wb").write(b)
PY
expect_reject "bad value type" "$tmp/badtype.gguf" "key 'test.count' (at offset 69): unknown value type 13"  # 24-byte header + 45-byte first entry
set +e
"$bin" info --bogus > /dev/null 2>&1; rc=$?
set -e
[ "$rc" = 2 ] || fail "unknown option: exit $rc"

model="${FI_SOURCE_DIR:-.}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$model" ]; then
  "$bin" info -m "$model" > "$tmp/real" || fail "default model rejected"
  grep -Eq '^  llama.block_count +u32 = 30$' "$tmp/real" || fail "block_count"
  grep -Eq '^  tokenizer.ggml.tokens +array\[string x 49152\]' "$tmp/real" || fail "vocab"
  grep -Eq '^tensors: 272 ' "$tmp/real" || fail "tensor count"
  echo "ok: default model"
else
  echo "skip: default model not found at $model"
fi
