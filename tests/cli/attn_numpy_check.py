#!/usr/bin/env python3
"""Cross-checks `flexinfer attn` against attention computed here in float64 numpy.

The mask language and the score modifiers are implemented again below, independently
of the C code, from their definitions:
  full; causal: kv <= q; window:W: |q - kv| < W; prefix:N: kv < N;
  chunked:C: q // C == kv // C; document: seg[q] == seg[kv]; generated: seg[q] < 0;
  & | ! and parentheses ('!' binds tightest, then '&', then '|');
  softcap:C: C * tanh(s / C); alibi: s + slope(h) * (kv - q) with the standard slopes
  for the number of query heads; several modifiers joined by ',' apply left to right.
q is the logical query position (q_offset + row). Query head h reads key/value head
h // (Hq / Hkv). A row with every key masked has O = 0 and LSE = -inf.

Usage: attn_numpy_check.py FLEXINFER_BINARY [--seed N] [--keep DIR]
The seed (random unless given or set in FI_TEST_SEED) is printed first.
Tolerances (f32 accumulation against float64): |O - O_ref| <= 1e-5 + 1e-6 * max|logit|
and |LSE - LSE_ref| <= 1e-5 * max(1, |LSE_ref|) + 1e-6 * max|logit|; -inf must match -inf.

The parser and evaluators are shared with scripts/flex_check.py, which evaluates
the same trees on torch tensors.
"""
import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

# ---- the mask language ---------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z_][A-Za-z_0-9]*)(?::(?P<num>\d+))?|(?P<op>[&|!()]))")


def parse_mask(text):
    """Parses a mask expression into a tree of tuples:
    ('full',), ('causal',), ('window', W), ('prefix', N), ('chunked', C), ('document',),
    ('generated',), ('and', a, b), ('or', a, b), ('not', a)."""
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError("cannot tokenize %r at %d" % (text, pos))
        pos = m.end()
        if m.group("op"):
            tokens.append(m.group("op"))
        else:
            word, num = m.group("word"), m.group("num")
            takes = word in ("window", "prefix", "chunked")
            if takes != (num is not None):
                raise ValueError("bad primitive %r" % m.group(0))
            if word not in ("full", "causal", "document", "generated", "window", "prefix", "chunked"):
                raise ValueError("unknown primitive %r" % word)
            tokens.append((word, int(num)) if takes else (word,))
    i = 0

    def peek():
        return tokens[i] if i < len(tokens) else None

    def take():
        nonlocal i
        i += 1
        return tokens[i - 1]

    def p_or():
        node = p_and()
        while peek() == "|":
            take()
            node = ("or", node, p_and())
        return node

    def p_and():
        node = p_unary()
        while peek() == "&":
            take()
            node = ("and", node, p_unary())
        return node

    def p_unary():
        t = take() if peek() is not None else None
        if t == "!":
            return ("not", p_unary())
        if t == "(":
            node = p_or()
            if take() != ")":
                raise ValueError("unbalanced parentheses")
            return node
        if isinstance(t, tuple):
            return t
        raise ValueError("unexpected token %r" % (t,))

    tree = p_or()
    if i != len(tokens):
        raise ValueError("trailing tokens")
    return tree


def needs_segments(tree):
    if tree[0] in ("document", "generated"):
        return True
    return any(needs_segments(c) for c in tree[1:] if isinstance(c, tuple))


def mask_fn(tree, seg):
    """A mask function keep(b, h, q, kv) built from operators only (==, <=, <, //, abs,
    &, |, ~), so it runs on numpy arrays and on torch tensors alike. seg(b, pos) returns
    segment ids; q is the logical query position."""
    op = tree[0]
    if op == "full":
        return lambda b, h, q, kv: (q == q) | (kv == kv)
    if op == "causal":
        return lambda b, h, q, kv: kv <= q
    if op == "window":
        w = tree[1]
        return lambda b, h, q, kv: abs(q - kv) < w
    if op == "prefix":
        n = tree[1]
        return lambda b, h, q, kv: (kv < n) | (q != q)
    if op == "chunked":
        c = tree[1]
        return lambda b, h, q, kv: (q // c) == (kv // c)
    if op == "document":
        return lambda b, h, q, kv: seg(b, q) == seg(b, kv)
    if op == "generated":
        return lambda b, h, q, kv: (seg(b, q) < 0) | (kv != kv)
    if op == "not":
        a = mask_fn(tree[1], seg)
        return lambda b, h, q, kv: ~a(b, h, q, kv)
    a, c = mask_fn(tree[1], seg), mask_fn(tree[2], seg)
    if op == "and":
        return lambda b, h, q, kv: a(b, h, q, kv) & c(b, h, q, kv)
    if op == "or":
        return lambda b, h, q, kv: a(b, h, q, kv) | c(b, h, q, kv)
    raise ValueError(op)


# ---- score modifiers ---------------------------------------------------------------


def alibi_slopes(n_heads):
    """Press et al.: for a power of two n, 2^(-8(h+1)/n); otherwise the slopes of the
    largest power of two m below n, then every other slope of 2m heads."""
    def pow2(n):
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    m = 1 << int(math.floor(math.log2(n_heads)))
    if m == n_heads:
        return pow2(n_heads)
    return pow2(m) + pow2(2 * m)[0::2][: n_heads - m]


def parse_score_mods(text):
    """'softcap:C', 'alibi' or several joined by ','; returns [(kind, arg), ...]."""
    mods = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if part == "alibi":
            mods.append(("alibi", None))
        elif part.startswith("softcap:"):
            mods.append(("softcap", float(part[len("softcap:"):])))
        else:
            raise ValueError("unknown score modifier %r" % part)
    return mods


def score_fn(mods, n_heads, tanh, slopes_of):
    """score(s, b, h, q, kv) applying the modifiers left to right; tanh and slopes_of(h)
    come from the array library in use."""
    def apply(s, b, h, q, kv):
        for kind, arg in mods:
            if kind == "softcap":
                s = arg * tanh(s / arg)
            else:
                s = s + slopes_of(h) * (kv - q)
        return s
    return apply


# ---- the float64 numpy reference ------------------------------------------------------


def reference(q, k, v, mask_text=None, segments=None, score_text=None, scale=None, q_offset=0):
    """q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] (any float type); segments [Lk'] or [B, Lk'].
    Returns (O [B, Hq, Lq, D], LSE [B, Hq, Lq]) in float64 and the largest |logit|."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    seg = None
    if segments is not None:
        seg = np.asarray(segments)
        if seg.ndim == 1:
            seg = np.broadcast_to(seg, (B, seg.shape[0]))
    keep_fn = mask_fn(parse_mask(mask_text), lambda b, pos: seg[b][pos]) if mask_text else None
    slopes = np.array(alibi_slopes(Hq))
    mod = score_fn(parse_score_mods(score_text), Hq, np.tanh, lambda h: slopes[h])
    qpos = (q_offset + np.arange(Lq))[:, None]
    kpos = np.arange(Lk)[None, :]
    out = np.zeros((B, Hq, Lq, D))
    lse = np.full((B, Hq, Lq), -np.inf)
    max_logit = 0.0
    for b in range(B):
        keep = np.ones((Lq, Lk), dtype=bool)
        if keep_fn:
            keep = np.broadcast_to(keep_fn(b, 0, qpos, kpos), (Lq, Lk))
        for h in range(Hq):
            s = scale * (q[b, h] @ k[b, h // g].T)
            s = mod(s, b, h, qpos, kpos)
            if keep.any():
                max_logit = max(max_logit, float(np.abs(s[keep]).max()))
            s = np.where(keep, s, -np.inf)
            live = keep.any(axis=1)
            m = np.where(live, s.max(axis=1, initial=-np.inf), 0.0)
            p = np.where(keep, np.exp(s - m[:, None]), 0.0)
            l = p.sum(axis=1)
            safe_l = np.where(live, l, 1.0)
            out[b, h] = np.where(live[:, None], (p @ v[b, h // g]) / safe_l[:, None], 0.0)
            lse[b, h] = np.where(live, m + np.log(safe_l), -np.inf)
    return out, lse, max_logit


# ---- the cases -----------------------------------------------------------------------

CASES = [
    # name, shape (B, Hq, Hkv, Lq, Lk, D), options
    ("full", (1, 4, 4, 97, 97, 32), dict(mask=None)),
    ("causal gqa4 tiles64", (1, 8, 2, 300, 300, 64), dict(mask="causal", block=(64, 64))),
    ("causal append q_offset", (1, 4, 4, 50, 300, 80), dict(mask="causal", q_offset=250)),
    ("window:37 tiles97x64", (2, 4, 2, 300, 300, 96), dict(mask="window:37", block=(97, 64))),
    ("prefix:40 | causal", (1, 2, 1, 130, 130, 64), dict(mask="prefix:40 | causal")),
    ("chunked:64 D128", (1, 2, 2, 200, 200, 128), dict(mask="chunked:64")),
    ("document shared segments", (2, 4, 4, 160, 160, 64), dict(mask="document", segments="shared")),
    ("document per batch", (2, 4, 2, 160, 160, 64), dict(mask="causal & document", segments="batch")),
    ("self-ensemble", (1, 6, 2, 200, 200, 64), dict(mask="causal & (document | generated)", segments="generated")),
    ("!causal (last row empty)", (1, 2, 2, 70, 70, 32), dict(mask="!causal")),
    ("chunked:16 & !causal (empty rows)", (1, 3, 1, 90, 90, 32), dict(mask="chunked:16 & !causal")),
    ("causal & window:16 & !prefix:4", (1, 2, 2, 120, 120, 64), dict(mask="causal & window:16 & !prefix:4")),
    ("precedence a | b & !c", (1, 2, 1, 100, 100, 32), dict(mask="prefix:10 | causal & !window:5")),
    ("softcap:5 scale 0.5", (1, 4, 4, 100, 100, 64), dict(mask="causal", score="softcap:5", scale=0.5)),
    ("alibi 12 heads", (1, 12, 4, 96, 96, 64), dict(mask="causal", score="alibi")),
    ("softcap,alibi chain", (1, 8, 8, 64, 64, 64), dict(score="softcap:30,alibi")),
    ("f16 inputs gqa3", (1, 6, 2, 150, 150, 64), dict(mask="causal & document", segments="shared", dtype="f16")),
    ("3-D inputs", (1, 4, 2, 60, 60, 32), dict(mask="window:8", three_d=True)),
    ("decode D256 splits4", (1, 8, 1, 1, 1000, 256), dict(num_splits=4)),
    ("decode causal offset", (2, 8, 2, 1, 777, 128), dict(mask="causal", q_offset=776)),
    ("short q forced splits", (1, 4, 4, 4, 513, 64), dict(mask="causal", q_offset=509, num_splits=3)),
    ("large logits", (1, 2, 2, 80, 80, 64), dict(mask="causal", scale=30.0)),
    ("single thread D80", (1, 2, 2, 65, 130, 80), dict(threads=1)),
]


def make_segments(kind, rng, B, L):
    if kind == "shared":
        cuts = np.sort(rng.choice(np.arange(1, L), size=5, replace=False))
        return np.searchsorted(cuts, np.arange(L), side="right").astype(np.int32)
    rows = []
    for _ in range(B):
        cuts = np.sort(rng.choice(np.arange(1, L), size=int(rng.integers(1, 8)), replace=False))
        rows.append(np.searchsorted(cuts, np.arange(L), side="right"))
    seg = np.array(rows, dtype=np.int32)
    if kind == "generated":  # a tail of "generated" tokens with negative ids
        seg[:, L - L // 4:] = -1
        seg = seg[0]
    return seg


def run_case(binary, tmp, rng, name, shape, opt):
    B, Hq, Hkv, Lq, Lk, D = shape
    dtype = np.float16 if opt.get("dtype") == "f16" else np.float32
    q = rng.standard_normal((B, Hq, Lq, D)).astype(dtype)
    k = rng.standard_normal((B, Hkv, Lk, D)).astype(dtype)
    v = rng.standard_normal((B, Hkv, Lk, D)).astype(dtype)
    seg = make_segments(opt["segments"], rng, B, Lk) if opt.get("segments") else None
    three_d = opt.get("three_d", False)
    paths = {n: os.path.join(tmp, n + ".npy") for n in ("q", "k", "v", "seg", "o", "l")}
    for n, a in (("q", q), ("k", k), ("v", v)):
        np.save(paths[n], a[0] if three_d else a)
    cmd = [binary, "attn", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"],
           "--out", paths["o"], "--lse", paths["l"], "--check"]
    if opt.get("mask"):
        cmd += ["--mask", opt["mask"]]
    if seg is not None:
        np.save(paths["seg"], seg)
        cmd += ["--segments", paths["seg"]]
    if opt.get("score"):
        cmd += ["--score-mod", opt["score"]]
    if opt.get("scale"):
        cmd += ["--scale", repr(opt["scale"])]
    if opt.get("q_offset"):
        cmd += ["--q-offset", str(opt["q_offset"])]
    if opt.get("num_splits"):
        cmd += ["--num-splits", str(opt["num_splits"])]
    if opt.get("block"):
        cmd += ["--block-q", str(opt["block"][0]), "--block-kv", str(opt["block"][1])]
    cmd += ["--threads", str(opt.get("threads", 2))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return False, "exit code %d: %s" % (r.returncode, r.stderr.strip())
    o = np.load(paths["o"])
    lse = np.load(paths["l"])
    if three_d:
        o, lse = o[None], lse[None]
    want_shape = (B, Hq, Lq, D)
    if o.shape != want_shape or lse.shape != want_shape[:3] or o.dtype != np.float32 or lse.dtype != np.float32:
        return False, "output shapes/types %s %s / %s %s" % (o.shape, o.dtype, lse.shape, lse.dtype)
    ro, rl, max_logit = reference(q, k, v, opt.get("mask"), seg, opt.get("score"), opt.get("scale"),
                                  opt.get("q_offset", 0))
    if not np.isfinite(o).all():
        return False, "O has non-finite values"
    if np.isnan(lse).any():
        return False, "LSE has NaN"
    masked_rows = np.isneginf(rl)
    if not np.array_equal(np.isneginf(lse), masked_rows):
        return False, "fully masked rows differ (LSE -inf): %d here vs %d in the reference" % (
            np.isneginf(lse).sum(), masked_rows.sum())
    if masked_rows.any() and np.abs(o[masked_rows]).max() != 0:
        return False, "fully masked rows have O != 0"
    err_o = float(np.abs(o - ro).max())
    live = ~masked_rows
    err_l = float(np.abs(lse[live] - rl[live]).max()) if live.any() else 0.0
    tol_o = 1e-5 + 1e-6 * max_logit
    ok_l = bool(np.all(np.abs(lse[live] - rl[live]) <= 1e-5 * np.maximum(1, np.abs(rl[live])) + 1e-6 * max_logit))
    detail = "max|dO|=%.2e (tol %.1e) max|dLSE|=%.2e rows fully masked: %d; --check: %s" % (
        err_o, tol_o, err_l, int(masked_rows.sum()), r.stdout.strip())
    return err_o <= tol_o and ok_l, detail


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    binary = argv[1]
    seed = None
    keep = None
    i = 2
    while i < len(argv):
        if argv[i] == "--seed":
            seed = int(argv[i + 1])
            i += 2
        elif argv[i] == "--keep":
            keep = argv[i + 1]
            i += 2
        else:
            print("unknown argument %r" % argv[i])
            return 2
    if seed is None:
        seed = int(os.environ.get("FI_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    print("seed=%d (replay with --seed %d or FI_TEST_SEED=%d)" % (seed, seed, seed), flush=True)
    rng = np.random.default_rng(seed)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = keep or tmp
        os.makedirs(work, exist_ok=True)
        for name, shape, opt in CASES:
            ok, detail = run_case(binary, work, rng, name, shape, opt)
            print("%s: %-36s %s" % ("ok  " if ok else "FAIL", name, detail), flush=True)
            failures += not ok
    if failures:
        print("%d case(s) failed (seed=%d)" % (failures, seed))
        return 1
    print("all %d cases agree with the float64 numpy reference" % len(CASES))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
