#!/usr/bin/env python3
"""GPU kernels against PyTorch: runs `flexinfer attn --device cuda` on random f16
inputs (every mask primitive, combinations, GQA 1/4/8, uneven lengths, q offset,
fully masked rows, score modifiers) and compares O and LSE with a float32 PyTorch
reference (explicit mask matrix, torch.softmax / logsumexp on the same f16 values).
Prints a markdown table; exit code 1 if any case exceeds the bounds."""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

BOUND_O, BOUND_LSE = 5e-3, 2e-3

CASES = [
    # mask, score_mod, B, Hq, Hkv, Lq, Lk, D, q_offset
    ("full", None, 2, 8, 8, 300, 517, 128, 0),
    ("causal", None, 2, 8, 2, 300, 517, 128, 217),
    ("window:37", None, 1, 8, 1, 300, 300, 64, 0),
    ("prefix:50", None, 2, 4, 1, 129, 257, 128, 0),
    ("chunked:64", None, 1, 8, 2, 200, 200, 64, 0),
    ("document", None, 2, 8, 2, 300, 300, 128, 0),
    ("generated", None, 1, 8, 8, 300, 300, 64, 0),
    ("causal & (document | generated)", None, 2, 8, 1, 300, 300, 128, 0),
    ("!causal", None, 1, 4, 4, 150, 150, 128, 0),
    ("window:1 & !causal", None, 1, 4, 1, 100, 100, 64, 0),
    ("causal", "softcap:20", 1, 8, 2, 260, 260, 128, 0),
    ("full", "alibi", 1, 8, 2, 260, 273, 64, 0),
    ("causal & window:128", None, 1, 32, 8, 1, 3000, 128, 2999),
]


def make_segments(n, rng):
    seg = np.zeros(n, dtype=np.int32)
    doc = 0
    for i in range(n):
        if rng.integers(60) == 0:
            doc += 1
        seg[i] = -1 if rng.integers(90) == 0 else doc
    return seg


def mask_matrix(expr, lq, lk, q_offset, seg):
    q = torch.arange(lq)[:, None] + q_offset
    kv = torch.arange(lk)[None, :]
    s = torch.from_numpy(seg).long() if seg is not None else None

    def prim(tok):
        if tok == "full":
            return torch.ones(lq, lk, dtype=torch.bool)
        if tok == "causal":
            return kv <= q
        if tok.startswith("window:"):
            w = int(tok[7:])
            return (q - kv).abs() < w
        if tok.startswith("prefix:"):
            return (kv < int(tok[7:])).expand(lq, lk)
        if tok.startswith("chunked:"):
            c = int(tok[8:])
            return (q // c) == (kv // c)
        if tok == "document":
            return s[q] == s[kv]
        if tok == "generated":
            return (s[q] < 0).expand(lq, lk)
        raise ValueError(tok)

    # Tiny recursive-descent parser for the mask language (& binds tighter than |).
    toks = expr.replace("(", " ( ").replace(")", " ) ").replace("&", " & ").replace("|", " | ").replace("!", " ! ").split()
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else None

    def take():
        pos[0] += 1
        return toks[pos[0] - 1]

    def atom():
        t = take()
        if t == "!":
            return ~atom()
        if t == "(":
            x = orx()
            take()
            return x
        return prim(t)

    def andx():
        x = atom()
        while peek() == "&":
            take()
            x = x & atom()
        return x

    def orx():
        x = andx()
        while peek() == "|":
            take()
            x = x | andx()
        return x

    return orx()


def alibi_slopes(n):
    import math
    def pow2(n):
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]
    if n & (n - 1) == 0:
        return pow2(n)
    m = 2 ** int(math.floor(math.log2(n)))
    return pow2(m) + pow2(2 * m)[0::2][: n - m]


def reference(q, k, v, keep, score_mod, q_offset):
    B, Hq, Lq, D = q.shape
    g = Hq // k.shape[1]
    k = k.repeat_interleave(g, dim=1)
    v = v.repeat_interleave(g, dim=1)
    s = torch.einsum("bhqd,bhkd->bhqk", q, k) / D ** 0.5
    if score_mod:
        for step in score_mod.split(","):
            if step.startswith("softcap:"):
                c = float(step[8:])
                s = c * torch.tanh(s / c)
            elif step == "alibi":
                slopes = torch.tensor(alibi_slopes(Hq), dtype=torch.float32)[None, :, None, None]
                qi = torch.arange(Lq)[:, None] + q_offset
                kj = torch.arange(k.shape[2])[None, :]
                s = s + slopes * (kj - qi).float()
    s = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ v, lse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexinfer", required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    lines = ["| mask | score mod | B | Hq/Hkv | Lq | Lk | D | q_offset | max abs dO | max abs dLSE | ok |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for mask, smod, B, Hq, Hkv, Lq, Lk, D, off in CASES:
            q = rng.standard_normal((B, Hq, Lq, D)).astype(np.float16)
            k = rng.standard_normal((B, Hkv, Lk, D)).astype(np.float16)
            v = rng.standard_normal((B, Hkv, Lk, D)).astype(np.float16)
            seg = make_segments(max(Lk, off + Lq), rng)
            for name, arr in (("q", q), ("k", k), ("v", v), ("s", seg)):
                np.save(f"{tmp}/{name}.npy", arr)
            cmd = [args.flexinfer, "attn", "--device", "cuda", "--q", f"{tmp}/q.npy", "--k", f"{tmp}/k.npy",
                   "--v", f"{tmp}/v.npy", "--mask", mask, "--out", f"{tmp}/o.npy", "--lse", f"{tmp}/l.npy",
                   "--q-offset", str(off)]
            if "document" in mask or "generated" in mask:
                cmd += ["--segments", f"{tmp}/s.npy"]
            if smod:
                cmd += ["--score-mod", smod]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                failed += 1
                lines.append(f"| {mask} | {smod or ''} | {B} | {Hq}/{Hkv} | {Lq} | {Lk} | {D} | {off} | "
                             f"flexinfer failed: {r.stderr.strip()[:80]} | | no |")
                continue
            o = torch.from_numpy(np.load(f"{tmp}/o.npy")).float()
            lse = torch.from_numpy(np.load(f"{tmp}/l.npy")).float()
            keep = mask_matrix(mask, Lq, Lk, off, seg)
            ro, rl = reference(torch.from_numpy(q).float(), torch.from_numpy(k).float(),
                               torch.from_numpy(v).float(), keep, smod, off)
            do = (o - ro).abs().max().item()
            both_inf = torch.isinf(rl) & torch.isinf(lse) & (rl < 0) & (lse < 0)
            inf_ok = bool((torch.isinf(rl) == torch.isinf(lse)).all())
            dl = (lse - rl).abs()[~both_inf].max().item() if (~both_inf).any() else 0.0
            ok = inf_ok and do <= BOUND_O and dl <= BOUND_LSE and not torch.isnan(o).any()
            failed += not ok
            lines.append(f"| {mask} | {smod or ''} | {B} | {Hq}/{Hkv} | {Lq} | {Lk} | {D} | {off} | "
                         f"{do:.2e} | {dl:.2e} | {'yes' if ok else 'NO'} |")
            print(lines[-1], flush=True)
    text = (f"GPU kernels (`flexinfer attn --device cuda`, f16 inputs) vs a float32 PyTorch reference; "
            f"bounds: max |dO| <= {BOUND_O}, max |dLSE| <= {BOUND_LSE}, -inf LSE rows identical.\n\n"
            + "\n".join(lines) + "\n")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
