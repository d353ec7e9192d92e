#!/usr/bin/env bash
# flexinfer mask: small drawings compared with pictures written by hand.
set -euo pipefail
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# int32 .npy writer (Python standard library only): write_npy FILE "[shape]" v1 v2 ...
write_npy() {
  python3 - "$@" <<'PY'
import struct, sys
path, shape, values = sys.argv[1], sys.argv[2], [int(v) for v in sys.argv[3:]]
header = "{'descr': '<i4', 'fortran_order': False, 'shape': %s, }" % shape
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<%di" % len(values), *values))
PY
}

check() { # name expected-file actual-file
  if ! diff -u "$2" "$3"; then echo "FAIL: $1 differs from the hand-drawn picture" >&2; exit 1; fi
  echo "ok: $1"
}

# causal, 4 x 4, blocks of 2.
cat > "$tmp/causal.expected" <<'PIC'
mask: causal
queries: 4 (positions 0..3), keys: 4 (positions 0..3)

  0123
0 ■···
1 ■■··
2 ■■■·
3 ■■■■

block map (E empty, P partial, F full), blocks of 2 x 2, 2 x 2 blocks:
  01
0 PE
1 FP

density: kept 10 / 16 = 0.6250; computed by blocks 12 / 16 = 0.7500 (1 full, 2 partial, 1 empty blocks)
PIC
"$bin" mask --mask causal --q-len 4 --kv-len 4 --block 2 > "$tmp/causal.out"
check "causal 4x4" "$tmp/causal.expected" "$tmp/causal.out"

# The self-ensemble layout over segments [0 0 0 1 1 -1]: each document sees itself
# causally, the generated token (id -1) sees everything before it.
write_npy "$tmp/seg.npy" "(6,)" 0 0 0 1 1 -1
cat > "$tmp/doc.expected" <<'PIC'
mask: (causal & (document | generated))
queries: 6 (positions 0..5), keys: 6 (positions 0..5)

  012 34 5
0 ■··│··│·
1 ■■·│··│·
2 ■■■│··│·
  ───┼──┼─
3 ···│■·│·
4 ···│■■│·
  ───┼──┼─
5 ■■■│■■│■

block map (E empty, P partial, F full), blocks of 2 x 2, 3 x 3 blocks:
  012
0 PEE
1 PPE
2 PPP

density: kept 15 / 36 = 0.4167; computed by blocks 24 / 36 = 0.6667 (0 full, 6 partial, 3 empty blocks)
PIC
"$bin" mask --mask "causal & (document | generated)" --q-len 6 --kv-len 6 --block 2 --segments "$tmp/seg.npy" > "$tmp/doc.out"
check "document 6x6" "$tmp/doc.expected" "$tmp/doc.out"

# Queries appended at positions 3..4 (q-offset 3) against 5 keys, per-batch ids, row 1.
write_npy "$tmp/seg2.npy" "(2, 5)" 0 0 0 0 0  7 7 8 8 8
cat > "$tmp/offset.expected" <<'PIC'
mask: (document & causal)
queries: 2 (positions 3..4), keys: 5 (positions 0..4)

  01 234
3 ··│■■·
4 ··│■■■

block map (E empty, P partial, F full), blocks of 2 x 2, 1 x 3 blocks:
  012
0 EFP

density: kept 5 / 10 = 0.5000; computed by blocks 6 / 10 = 0.6000 (1 full, 1 partial, 1 empty blocks)
PIC
"$bin" mask --mask "document & causal" --q-len 2 --kv-len 5 --block 2 --q-offset 3 --segments "$tmp/seg2.npy" --batch-row 1 > "$tmp/offset.out"
check "q-offset, per-batch row 1" "$tmp/offset.expected" "$tmp/offset.out"

# Long sequences are sampled: the drawing stays within about 100 rows and columns,
# the labels are positions, and every segment start is among them.
python3 - "$tmp/long.npy" <<'PY'
import struct, sys
ids = [i * 8 // 32768 for i in range(32768)]
header = "{'descr': '<i4', 'fortran_order': False, 'shape': (32768,), }"
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
open(sys.argv[1], "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
                              + struct.pack("<32768i", *ids))
PY
"$bin" mask --mask "causal & document" --q-len 32768 --kv-len 32768 --segments "$tmp/long.npy" --png "$tmp/long.png" > "$tmp/long.out"
python3 - "$tmp/long.out" "$tmp/long.png" <<'PY'
import struct, sys, zlib
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
start = lines.index("") + 1
matrix = lines[start:lines.index("", start)]
assert len(matrix) <= 110, len(matrix)
assert max(len(l) for l in matrix) <= 110, max(len(l) for l in matrix)
rows = [int(l.split()[0]) for l in matrix if "■" in l or "·" in l]
assert all(b in rows for b in range(0, 32768, 4096)), "segment starts missing from the sampled rows"
assert all(b - 1 in rows for b in range(4096, 32768, 4096)), "segment ends missing from the sampled rows"
assert rows == sorted(rows) and rows[-1] == 32767
assert "sampled:" in lines[2]
density = [l for l in lines if l.startswith("density:")]
assert len(density) == 1 and "density: kept 67125248 / 1073741824" in density[0], density
# The PNG decodes and has valid CRCs.
d = open(sys.argv[2], "rb").read()
assert d[:8] == b"\x89PNG\r\n\x1a\n"
p, idat = 8, b""
while p < len(d):
    n, = struct.unpack(">I", d[p:p + 4]); t = d[p + 4:p + 8]; data = d[p + 8:p + 8 + n]
    assert zlib.crc32(t + data) & 0xffffffff == struct.unpack(">I", d[p + 8 + n:p + 12 + n])[0]
    if t == b"IHDR": w, h = struct.unpack(">II", data[:8])
    if t == b"IDAT": idat += data
    p += 12 + n
assert len(zlib.decompress(idat)) == (3 * w + 1) * h
PY
echo "ok: long sequence sampled, PNG valid"
