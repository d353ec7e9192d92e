#!/usr/bin/env python3
"""Checks flexinfer's mask and score semantics against PyTorch's FlexAttention.

For each case the same random arrays go through
  - `flexinfer attn` on the CPU (f32 inputs, f32 accumulation),
  - torch.nn.attention.flex_attention on CUDA in fp32 (TF32 off), with a mask_mod /
    score_mod built from the same expression (q_offset as a shifted mask_mod, GQA
    through enable_gqa, LSE through the aux output / return_lse),
  - and a float64 numpy reference (tests/cli/attn_numpy_check.py),
and the largest absolute differences of O and LSE are tabulated. Rows whose every key
is masked must give O = 0 and LSE = -inf on both sides; they are counted separately
and compared as such (a NaN there is reported, not hidden).

One command on the GPU machine, from the repository root:
    python3 scripts/flex_check.py --flexinfer build/flexinfer --out $OUT/flex_check.md
(builds build/flexinfer with CMake first when it is missing). Without torch, or with
--dry-run, only flexinfer and numpy run: that checks the script and the arrays.
Options: --seed N, --compiled (also run torch.compile(flex_attention): slower, one
compilation per case), --threads N (flexinfer's CPU threads), --also-cuda (add a column
for `flexinfer attn --device cuda`, which computes in f16/bf16).
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "cli"))
import attn_numpy_check as sem  # noqa: E402  (the shared, independent semantics)

# name, (B, Hq, Hkv, Lq, Lk, D), mask, segments kind, score mod, q_offset
CASES = [
    ("causal", (2, 8, 2, 300, 300, 64), "causal", None, None, 0),
    ("window:50 (|q-kv|<50)", (2, 8, 2, 300, 300, 64), "window:50", None, None, 0),
    ("prefix:40", (1, 4, 4, 200, 200, 64), "prefix:40", None, None, 0),
    ("chunked:64", (1, 4, 2, 300, 300, 64), "chunked:64", None, None, 0),
    ("document (shared ids)", (2, 4, 2, 256, 256, 64), "document", "shared", None, 0),
    ("document (per-batch ids)", (2, 4, 2, 256, 256, 64), "document", "batch", None, 0),
    ("generated", (1, 4, 2, 200, 200, 64), "generated", "generated", None, 0),
    ("causal & (document | generated)", (1, 8, 2, 300, 300, 64), "causal & (document | generated)", "generated", None, 0),
    ("causal & document", (2, 8, 8, 256, 256, 128), "causal & document", "batch", None, 0),
    ("!causal", (1, 4, 4, 150, 150, 64), "!causal", None, None, 0),
    ("causal & !window:16", (1, 4, 2, 200, 200, 64), "causal & !window:16", None, None, 0),
    ("chunked:32 & !causal", (1, 4, 1, 160, 160, 64), "chunked:32 & !causal", None, None, 0),
    ("prefix:16 | causal & window:32", (1, 4, 2, 200, 200, 64), "prefix:16 | causal & window:32", None, None, 0),
    ("softcap:20, causal", (1, 8, 2, 256, 256, 64), "causal", None, "softcap:20", 0),
    ("alibi, causal", (1, 8, 2, 256, 256, 64), "causal", None, "alibi", 0),
    ("alibi, 12 heads", (1, 12, 4, 128, 128, 64), None, None, "alibi", 0),
    ("softcap:30,alibi, document", (1, 8, 2, 256, 256, 64), "document", "shared", "softcap:30,alibi", 0),
    ("causal, q_offset 236", (1, 8, 2, 64, 300, 64), "causal", None, None, 236),
    ("causal & window:40, q_offset 150", (2, 4, 2, 50, 300, 128), "causal & window:40", None, None, 150),
    ("document decode, q_offset 299", (2, 8, 2, 1, 300, 64), "causal & document", "batch", None, 299),
    ("GQA 8:1, causal & window:100", (1, 8, 1, 300, 300, 128), "causal & window:100", None, None, 0),
    ("full, Lq != Lk", (1, 4, 2, 100, 333, 64), None, None, None, 0),
    ("MQA decode, full", (1, 8, 1, 1, 1000, 128), None, None, None, 0),
]

TOL = 1e-4  # fp32 against fp32: |dO| <= TOL, |dLSE| <= TOL * max(1, |LSE|)


def build_flexinfer(path):
    """Builds the CLI when the given binary is missing (Release, in build/)."""
    if os.path.exists(path):
        return
    print("flex_check: %s is missing; building it with CMake" % path, flush=True)
    build = os.path.join(ROOT, "build")
    cmds = [["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release"],
            ["cmake", "--build", build, "--target", "flexinfer_cli", "-j%d" % (os.cpu_count() or 2)]]
    for c in cmds:
        r = subprocess.run(c)
        if r.returncode != 0:
            sys.exit("flex_check: '%s' failed (the build needs cmake, a C compiler, OpenMP, pkg-config, "
                     "libpcre2-dev and libcmocka-dev)" % " ".join(c))
    if not os.path.exists(path):
        sys.exit("flex_check: the build did not produce %s" % path)


def run_flexinfer(binary, tmp, q, k, v, seg, mask, score, q_offset, threads, device="cpu"):
    paths = {n: os.path.join(tmp, n + ".npy") for n in ("q", "k", "v", "seg", "o", "l")}
    for n, a in (("q", q), ("k", k), ("v", v)):
        np.save(paths[n], a)
    for n in ("o", "l"):
        if os.path.exists(paths[n]):
            os.unlink(paths[n])
    cmd = [binary, "attn", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"], "--out", paths["o"],
           "--lse", paths["l"], "--device", device]
    if device == "cpu":
        cmd += ["--threads", str(threads)]
    if mask:
        cmd += ["--mask", mask]
    if seg is not None:
        np.save(paths["seg"], seg)
        cmd += ["--segments", paths["seg"]]
    if score:
        cmd += ["--score-mod", score]
    if q_offset:
        cmd += ["--q-offset", str(q_offset)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("flexinfer exit code %d: %s" % (r.returncode, r.stderr.strip()))
    return np.load(paths["o"]).astype(np.float64), np.load(paths["l"]).astype(np.float64)


class Torch:
    """FlexAttention in fp32 on CUDA with mask_mod / score_mod from the shared semantics."""

    def __init__(self, compiled):
        import torch
        from torch.nn.attention import flex_attention as fa
        self.torch, self.fa = torch, fa
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        self.eager = fa.flex_attention
        self.compiled = torch.compile(fa.flex_attention, dynamic=False) if compiled else None
        self.dev = torch.device("cuda")

    def describe(self):
        t = self.torch
        return "torch %s, %s, CUDA %s" % (t.__version__, t.cuda.get_device_name(0), t.version.cuda)

    def run(self, fn, q, k, v, seg, mask, score, q_offset):
        t, fa = self.torch, self.fa
        B, Hq, Lq, D = q.shape
        Hkv, Lk = k.shape[1], k.shape[2]
        tq, tk, tv = (t.tensor(x, dtype=t.float32, device=self.dev) for x in (q, k, v))
        seg_t = None
        if seg is not None:
            s = np.broadcast_to(seg, (B, seg.shape[-1])) if seg.ndim == 1 else seg
            seg_t = t.tensor(np.ascontiguousarray(s), dtype=t.int32, device=self.dev)
        off = int(q_offset)
        block_mask = None
        if mask:
            base = sem.mask_fn(sem.parse_mask(mask), lambda b, pos: seg_t[b, pos])

            def mask_mod(b, h, q_idx, kv_idx):
                return base(b, h, q_idx + off, kv_idx)

            block_mask = fa.create_block_mask(mask_mod, B, None, Lq, Lk, device=self.dev)
        score_mod = None
        if score:
            slopes = t.tensor(sem.alibi_slopes(Hq), dtype=t.float32, device=self.dev)
            mod = sem.score_fn(sem.parse_score_mods(score), Hq, t.tanh, lambda h: slopes[h])

            def score_mod(s, b, h, q_idx, kv_idx):
                return mod(s, b, h, q_idx + off, kv_idx)

        kwargs = dict(score_mod=score_mod, block_mask=block_mask, scale=1.0 / np.sqrt(D), enable_gqa=Hq != Hkv)
        try:
            aux = fa.AuxRequest(lse=True)
            out, extra = fn(tq, tk, tv, return_aux=aux, **kwargs)
            lse = extra.lse
        except (AttributeError, TypeError):
            out, lse = fn(tq, tk, tv, return_lse=True, **kwargs)
        t.cuda.synchronize()
        return out.double().cpu().numpy(), lse.double().cpu().numpy()


def compare(o, lse, ro, rl):
    """Max |dO| and |dLSE| over rows with kept keys, and a note on fully masked rows
    (the reference's -inf rows): they must be O = 0, LSE = -inf."""
    dead = np.isneginf(rl)
    live = ~dead
    notes = []
    if np.isnan(o).any() or np.isnan(lse).any():
        notes.append("NaN in %d O rows / %d LSE entries" % (int(np.isnan(o).any(axis=-1).sum()), int(np.isnan(lse).sum())))
    if dead.any():
        bad = ~(np.isneginf(lse[dead]) & (np.abs(np.nan_to_num(o[dead], nan=1.0)).max(axis=-1) == 0))
        if bad.any():
            notes.append("%d fully masked rows not (O=0, LSE=-inf)" % int(bad.sum()))
    if np.isneginf(lse[live]).any():
        notes.append("%d live rows with LSE=-inf" % int(np.isneginf(lse[live]).sum()))
    do = float(np.nanmax(np.abs(o[live] - ro[live]))) if live.any() else 0.0
    dl = float(np.nanmax(np.abs(lse[live] - rl[live]) / np.maximum(1.0, np.abs(rl[live])))) if live.any() else 0.0
    return do, dl, notes


def fmt(x):
    return "%.1e" % x if x is not None else "–"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flexinfer", default=os.path.join(ROOT, "build", "flexinfer"))
    ap.add_argument("--out", help="write the table as markdown here")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--dry-run", action="store_true", help="flexinfer and numpy only, no torch")
    ap.add_argument("--compiled", action="store_true", help="also run torch.compile(flex_attention)")
    ap.add_argument("--also-cuda", action="store_true", help="also run flexinfer attn --device cuda")
    a = ap.parse_args()

    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    print("flex_check: seed=%d" % seed, flush=True)
    build_flexinfer(a.flexinfer)
    torch_ = None
    why_no_torch = "--dry-run"
    if not a.dry_run:
        try:
            torch_ = Torch(a.compiled)
            if not torch_.torch.cuda.is_available():
                why_no_torch, torch_ = "no CUDA device", None
        except ImportError as e:
            why_no_torch = "torch unavailable (%s)" % e
    engine = torch_.describe() if torch_ else "not run: " + why_no_torch
    print("flex_check: %s" % engine, flush=True)

    rng = np.random.default_rng(seed)
    rows, failures = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, (B, Hq, Hkv, Lq, Lk, D), mask, seg_kind, score, q_offset in CASES:
            q = rng.standard_normal((B, Hq, Lq, D)).astype(np.float32)
            k = rng.standard_normal((B, Hkv, Lk, D)).astype(np.float32)
            v = rng.standard_normal((B, Hkv, Lk, D)).astype(np.float32)
            seg = sem.make_segments(seg_kind, rng, B, Lk) if seg_kind else None
            ro, rl, _ = sem.reference(q, k, v, mask, seg, score, None, q_offset)
            row = {"name": name, "shape": "%d,%d/%d,%d,%d,%d" % (B, Hq, Hkv, Lq, Lk, D),
                   "dead": int(np.isneginf(rl).sum()), "notes": []}
            t0 = time.time()
            try:
                fo, fl = run_flexinfer(a.flexinfer, tmp, q, k, v, seg, mask, score, q_offset, a.threads)
                row["fi64"] = compare(fo, fl, ro, rl)
            except Exception as e:  # noqa: BLE001 (every failure goes into the table)
                fo = None
                row["notes"].append("flexinfer: %s" % e)
            if torch_:
                variants = [("eager", torch_.eager)] + ([("compiled", torch_.compiled)] if torch_.compiled else [])
                for label, fn in variants:
                    try:
                        to, tl = torch_.run(fn, q, k, v, seg, mask, score, q_offset)
                        row["t64_" + label] = compare(to, tl, ro, rl)
                        if fo is not None:
                            row["fit_" + label] = compare(fo, fl, to, np.where(np.isneginf(rl), -np.inf, tl))
                    except Exception as e:  # noqa: BLE001
                        row["notes"].append("torch %s: %s: %s" % (label, type(e).__name__, str(e).splitlines()[0][:200]))
            if a.also_cuda and fo is not None:
                try:
                    co, cl = run_flexinfer(a.flexinfer, tmp, q, k, v, seg, mask, score, q_offset, a.threads, "cuda")
                    row["cu64"] = compare(co, cl, ro, rl)
                except Exception as e:  # noqa: BLE001
                    row["notes"].append("flexinfer cuda: %s" % str(e)[:200])
            ok = "fi64" in row and row["fi64"][0] <= TOL and row["fi64"][1] <= TOL and not row["fi64"][2]
            if torch_:
                ok = ok and "fit_eager" in row and row["fit_eager"][0] <= TOL and row["fit_eager"][1] <= TOL \
                    and not row["fit_eager"][2] and not row["t64_eager"][2]
            row["ok"] = ok
            failures += not ok
            for key in ("fi64", "t64_eager", "t64_compiled", "fit_eager", "fit_compiled", "cu64"):
                if key in row:
                    row["notes"] += ["%s: %s" % (key, n) for n in row[key][2]]
            rows.append(row)
            print("%-4s %-34s %6.2fs  fi-vs-f64 O %s LSE %s | torch-vs-f64 O %s LSE %s | fi-vs-torch O %s LSE %s %s" % (
                "ok" if ok else "FAIL", name, time.time() - t0,
                *(fmt(row[k][i]) if k in row else "–" for k in ("fi64", "t64_eager", "fit_eager") for i in (0, 1)),
                "; ".join(row["notes"])), flush=True)

    md = render(rows, seed, engine, a, failures)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(md)
        print("flex_check: wrote %s" % a.out)
    print("flex_check: %d of %d cases agree%s" % (len(rows) - failures, len(rows),
                                                   "" if torch_ else " (without torch: flexinfer vs numpy only)"))
    return 1 if failures else 0


def render(rows, seed, engine, a, failures):
    cols = [("fi64", "flexinfer vs f64"), ("t64_eager", "torch vs f64")]
    if a.compiled:
        cols.append(("t64_compiled", "torch.compile vs f64"))
    cols.append(("fit_eager", "flexinfer vs torch"))
    if a.compiled:
        cols.append(("fit_compiled", "flexinfer vs torch.compile"))
    if a.also_cuda:
        cols.append(("cu64", "flexinfer cuda vs f64"))
    out = []
    out.append("# flexinfer vs PyTorch FlexAttention: mask and score semantics\n")
    out.append("- date: %s" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    out.append("- command: `python3 scripts/flex_check.py %s`" % " ".join(sys.argv[1:]))
    out.append("- machine: %s, %d CPUs; flexinfer on the CPU (f32, %d threads)" % (platform.node() or "?", os.cpu_count() or 0, a.threads))
    out.append("- FlexAttention: %s; fp32 inputs, TF32 off, eager%s" % (engine, " and torch.compile" if a.compiled else ""))
    out.append("- seed: %d (inputs standard normal; scale 1/sqrt(D))" % seed)
    out.append("- f64: a float64 numpy reference with the mask language implemented independently "
               "(tests/cli/attn_numpy_check.py); the torch mask_mod / score_mod are built from the same parse tree "
               "(q_offset: `mask_mod(b, h, q + offset, kv)`; GQA: `enable_gqa=True`; document / generated read a "
               "`[B, L]` int32 tensor of segment ids)")
    out.append("- figures: max |dO| / max |dLSE| / max(1, |LSE|) over rows with at least one kept key; \"masked rows\" "
               "counts (b, h, q) rows with every key masked, which must be O = 0 and LSE = -inf everywhere "
               "(any deviation is listed under notes). A case passes when flexinfer is within %.0e of the reference "
               "and of FlexAttention." % TOL)
    out.append("- result: %d of %d cases pass\n" % (len(rows) - failures, len(rows)))
    head = "| case | B,Hq/Hkv,Lq,Lk,D | masked rows | " + " | ".join("%s O / LSE" % c[1] for c in cols) + " | pass | notes |"
    out.append(head)
    out.append("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        cells = ["%s / %s" % (fmt(r[k][0]), fmt(r[k][1])) if k in r else "–" for k, _ in cols]
        out.append("| %s | %s | %d | %s | %s | %s |" % (r["name"].replace("|", "\\|"), r["shape"], r["dead"], " | ".join(cells),
                                                      "yes" if r["ok"] else "**no**", "; ".join(r["notes"]).replace("|", "\\|")))
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
