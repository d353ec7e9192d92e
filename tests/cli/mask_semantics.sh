#!/usr/bin/env bash
# flexinfer mask against an independent Python evaluation of the mask language: for random
# expressions, sizes, q offsets and segment ids (negative ids included), the drawn matrix
# equals the Python one element by element, the kept count matches, and the block map never
# says F for a block with a masked element nor E for one with a kept element.
set -euo pipefail
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$bin" "$tmp" <<'PY'
import os, random, re, struct, subprocess, sys, time

bin_path, tmp = sys.argv[1], sys.argv[2]
seed = int(os.environ.get("FI_TEST_SEED", time.time()))
print(f"seed={seed} (replay with FI_TEST_SEED={seed})")
rng = random.Random(seed)

def to_python(expr):
    # ! > & > | in the mask language, like not > and > or in Python.
    table = [(r"window:(\d+)", r"(abs(q - kv) < \1)"), (r"prefix:(\d+)", r"(kv < \1)"),
             (r"chunked:(\d+)", r"(q // \1 == kv // \1)"), (r"\bcausal\b", "(kv <= q)"),
             (r"\bdocument\b", "(seg[q] == seg[kv])"), (r"\bgenerated\b", "(seg[q] < 0)"),
             (r"\bfull\b", "True"), (r"!", " not "), (r"&", " and "), (r"\|", " or ")]
    for pat, rep in table:
        expr = re.sub(pat, rep, expr)
    return eval("lambda q, kv, seg: " + expr)

def random_expr(depth=0):
    leaves = ["full", "causal", "window:%d" % rng.randint(1, 12), "prefix:%d" % rng.randint(0, 40),
              "chunked:%d" % rng.randint(1, 12), "document", "generated"]
    pick = rng.randrange(7 if depth >= 3 else 10)
    if pick < 7: return leaves[pick]
    if pick == 7: return "!" + random_expr(depth + 1)
    op = " & " if pick == 8 else " | "
    return "(" + random_expr(depth + 1) + op + random_expr(depth + 1) + ")"

def write_npy(path, values):
    header = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d,), }" % len(values)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%di" % len(values), *values))

for it in range(40):
    lq, lk, off, block = rng.randint(1, 40), rng.randint(1, 40), rng.choice([0, rng.randint(0, 20)]), rng.randint(1, 9)
    n = max(lk, off + lq)
    seg, cur = [], rng.randint(-2, 2)
    for _ in range(n):
        if rng.random() < 0.2: cur = rng.randint(-2, 3)
        seg.append(cur)
    write_npy(f"{tmp}/seg.npy", seg)
    expr = random_expr()
    keep = to_python(expr)
    args = [bin_path, "mask", "--mask", expr, "--q-len", str(lq), "--kv-len", str(lk), "--q-offset", str(off),
            "--block", str(block), "--segments", f"{tmp}/seg.npy"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split("\n")
    what = f"case {it}: {' '.join(args[2:])} with segments {seg}"
    rows = [l for l in out[: out.index("", 4)] if "■" in l or "·" in l]
    assert len(rows) == lq, what
    kept = 0
    for i, line in enumerate(rows):
        label, cells = line.split(None, 1)
        assert int(label) == off + i, what
        cells = cells.replace("│", "")
        assert len(cells) == lk, what
        for j, c in enumerate(cells):
            want = bool(keep(off + i, j, seg))
            kept += want
            assert (c == "■") == want, f"{what}: element ({off + i}, {j}) drawn {c}"
    density = [l for l in out if l.startswith("density:")][0]
    assert density.startswith(f"density: kept {kept} / {lq * lk} "), f"{what}: {density}"
    start = out.index("block map (E empty, P partial, F full), blocks of %d x %d, %d x %d blocks:"
                      % (block, block, (lq + block - 1) // block, (lk + block - 1) // block))
    map_rows = [l for l in out[start + 1:] if l and l.split()[-1].strip("EPF") == "" and l.split()[0].isdigit()]
    assert len(map_rows) == (lq + block - 1) // block, what
    for qb, line in enumerate(map_rows):
        for kb, letter in enumerate(line.split()[1]):
            vals = [bool(keep(off + i, j, seg)) for i in range(qb * block, min(lq, qb * block + block))
                    for j in range(kb * block, min(lk, kb * block + block))]
            assert not (letter == "F" and not all(vals)), f"{what}: block ({qb},{kb}) F with a masked element"
            assert not (letter == "E" and any(vals)), f"{what}: block ({qb},{kb}) E with a kept element"
print("ok: 40 random expressions agree with the Python evaluation")
PY
