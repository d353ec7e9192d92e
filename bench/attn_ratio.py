#!/usr/bin/env python3
"""Side-by-side ratios for bench/run_attn.sh: reads the flexinfer table (bench/attn_bench) and the
numpy / PyTorch table (bench/attn_numpy.py) of one run and prints, per case, how many times faster
flexinfer is (peer ms / flexinfer ms; > 1 means flexinfer is faster), then the medians.

Usage: attn_ratio.py FLEXINFER_OUTPUT NUMPY_OUTPUT"""
import statistics
import sys


def rows(path):
    """Markdown table rows as lists of cells, header and separator rows dropped."""
    out = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("Hq/Hkv", "splits") or cells[0].startswith("decode"):
            continue
        out.append(cells)
    return out


def number(cell):
    try:
        return float(cell)
    except ValueError:
        return None


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    fi = {}
    for c in rows(sys.argv[1]):
        if len(c) >= 7 and "/" in c[0]:
            fi[tuple(c[:4])] = number(c[6])  # Hq/Hkv, L, D, mask -> median ms
    print("| Hq/Hkv | L | D | mask | flexinfer ms | numpy ms / flexinfer ms | torch ms / flexinfer ms |")
    print("|---|---|---|---|---|---|---|")
    r_np, r_t = [], []
    for c in rows(sys.argv[2]):
        if len(c) < 10 or tuple(c[:4]) not in fi or not fi[tuple(c[:4])]:
            continue
        f = fi[tuple(c[:4])]
        n, t = number(c[6]), number(c[8])
        cells = list(c[:4]) + ["%.1f" % f]
        for peer, acc in ((n, r_np), (t, r_t)):
            if peer:
                acc.append(peer / f)
                cells.append("%.2fx" % (peer / f))
            else:
                cells.append("–")
        print("| " + " | ".join(cells) + " |")
    for name, acc in (("numpy", r_np), ("PyTorch SDPA", r_t)):
        if acc:
            print("\n- flexinfer vs %s over %d cases: median %.2fx, min %.2fx, max %.2fx"
                  % (name, len(acc), statistics.median(acc), min(acc), max(acc)))


if __name__ == "__main__":
    main()
