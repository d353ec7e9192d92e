#!/usr/bin/env python3
"""Attention in numpy (matrix products through its BLAS, OpenBLAS in numpy's wheels) and,
where it is importable, PyTorch CPU scaled_dot_product_attention, on the cases of
bench/attn_bench.c (B = 1, Hq = 8, Hkv 8 / 2, L 1024 / 4096 / 8192, D 64 / 128, masks
full, causal, document (8 equal documents), causal & window:1024; decode Lq = 1,
Lk = 32768, Hq 32 / Hkv 8, D 128), f32.

numpy: per query head, S = scale * Q K^T, masked entries set to -inf, P = exp(S - max),
O = P V / sum(P): the dense work whatever the mask. torch: SDPA with a boolean mask (or
is_causal) and enable_gqa. GFLOP/s count the useful work only, as in attn_bench:
4 * B * Hq * Lq * Lk * D * density / time, so the rows compare directly.

Usage: attn_numpy.py [--threads N] [--budget SECONDS] [--torch-budget SECONDS] [--max-len L] [--no-torch]
Prints a markdown report on stdout: the BLAS that threadpoolctl reports, then tables.
Cases are ordered from small to large; one whose estimate would overrun the budget is
skipped and says so. Each case is repeated 3 times when one run takes under 8 s.
"""
import argparse
import math
import os
import sys
import time

import numpy as np

LENS = (1024, 4096, 8192)
HKVS = (8, 2)
DIMS = (64, 128)
MASKS = ("full", "causal", "document", "causal & window:1024")


def mask_matrix(mask, L):
    q = np.arange(L)[:, None]
    kv = np.arange(L)[None, :]
    if mask == "full":
        return None
    if mask == "causal":
        return kv <= q
    if mask == "document":
        doc = np.arange(L) // (L // 8)
        return doc[:, None] == doc[None, :]
    return (kv <= q) & (np.abs(q - kv) < 1024)


def density(keep, L):
    return 1.0 if keep is None else float(keep.sum()) / (L * L)


def numpy_attention(q, k, v, keep):
    Hq, L, D = q.shape
    g = Hq // k.shape[0]
    scale = np.float32(1.0 / math.sqrt(D))
    out = np.empty_like(q)
    for h in range(Hq):
        s = (q[h] * scale) @ k[h // g].T
        if keep is not None:
            np.putmask(s, ~keep, np.float32(-np.inf))
        m = s.max(axis=1, keepdims=True)
        np.subtract(s, m, out=s)
        np.exp(s, out=s)
        l = s.sum(axis=1, keepdims=True)
        out[h] = (s @ v[h // g]) / l
    return out


def timed(fn, est):
    """Median of 3 runs when one is under 8 s (by estimate or first run), else 1."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if times[0] >= 8.0:
            break
    times.sort()
    return times[len(times) // 2], len(times)


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl is not installed: BLAS kernel unknown"]
    lines = []
    for p in threadpool_info():
        lines.append("%s %s (%s), kernel/architecture: %s, threads: %s, %s" % (
            p.get("internal_api"), p.get("version"), p.get("user_api"), p.get("architecture", "?"),
            p.get("num_threads"), os.path.basename(p.get("filepath", ""))))
    return lines or ["threadpoolctl found no BLAS/OpenMP pool"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for the numpy measurements")
    ap.add_argument("--torch-budget", type=float, default=None, help="seconds for torch (default: --budget)")
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    start = time.perf_counter()
    if a.torch_budget is None:
        a.torch_budget = a.budget
    spent = {"numpy": 0.0, "torch": 0.0}  # each engine's own budget

    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(a.threads)
    except ImportError:
        pass
    torch = None
    torch_note = "not run (--no-torch)"
    if not a.no_torch:
        try:
            import torch as _torch
            torch = _torch
            torch.set_num_threads(a.threads)
            torch_note = "torch %s, %d threads" % (torch.__version__, torch.get_num_threads())
        except Exception as e:  # noqa: BLE001 (any import failure means: not available)
            torch_note = "not available: %s" % (str(e).splitlines()[0] if str(e) else type(e).__name__)

    print("### numpy / OpenBLAS and PyTorch CPU attention (f32, %d threads)\n" % a.threads)
    print("- numpy %s; BLAS as threadpoolctl reports it:" % np.__version__)
    for line in blas_info():
        print("  - %s" % line)
    print("- OPENBLAS_CORETYPE=%s, OPENBLAS_L2_SIZE=%s in this process" % (
        os.environ.get("OPENBLAS_CORETYPE", "(unset)"), os.environ.get("OPENBLAS_L2_SIZE", "(unset)")))
    print("- numpy's matrix products use the BLAS threads; its element-wise exp/max/sum run on one thread")
    print("- PyTorch CPU SDPA: %s\n" % torch_note)
    print("| Hq/Hkv | L | D | mask | density | numpy runs | numpy ms | numpy GFLOP/s | torch ms | torch GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    sys.stdout.flush()

    rng = np.random.default_rng(0)
    rate_np, rate_t = {}, {}
    skipped = 0
    for L in LENS:
        if L > a.max_len:
            continue
        for hkv in HKVS:
            for D in DIMS:
                q = rng.uniform(-1, 1, (8, L, D)).astype(np.float32)
                k = rng.uniform(-1, 1, (hkv, L, D)).astype(np.float32)
                v = rng.uniform(-1, 1, (hkv, L, D)).astype(np.float32)
                for mask in MASKS:
                    keep = mask_matrix(mask, L)
                    dens = density(keep, L)
                    flops = 4.0 * 8 * L * L * D * dens
                    cells = ["%d/%d" % (8, hkv), str(L), str(D), mask, "%.4f" % dens]
                    key = (hkv, D, mask)
                    # Numpy does the dense work: estimate from the previous length's rate.
                    est = flops / rate_np[key] if key in rate_np else 0.0
                    reps_est = 1 if est >= 8 else 3
                    if spent["numpy"] + est * reps_est > a.budget:
                        cells += ["–", "skipped: estimated %.0f s over the budget" % est, ""]
                        skipped += 1
                    else:
                        t0 = time.perf_counter()
                        sec, n = timed(lambda: numpy_attention(q, k, v, keep), est)
                        spent["numpy"] += time.perf_counter() - t0
                        rate_np[key] = flops / sec
                        cells += [str(n), "%.1f" % (sec * 1e3), "%.1f" % (flops / sec * 1e-9)]
                    if torch is None:
                        cells += ["–", "–"]
                    else:
                        est = flops / rate_t[key] if key in rate_t else 0.0
                        reps_est = 1 if est >= 8 else 3
                        if spent["torch"] + est * reps_est > a.torch_budget:
                            cells += ["skipped", ""]
                            skipped += 1
                        else:
                            tq, tk, tv = (torch.from_numpy(x)[None] for x in (q, k, v))
                            tm = None if keep is None or mask == "causal" else torch.from_numpy(keep)
                            F = torch.nn.functional

                            def run_torch():
                                with torch.no_grad():
                                    F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=mask == "causal",
                                                                   enable_gqa=hkv != 8)
                            t0 = time.perf_counter()
                            sec, n = timed(run_torch, est)
                            spent["torch"] += time.perf_counter() - t0
                            rate_t[key] = flops / sec
                            cells += ["%.1f" % (sec * 1e3), "%.1f" % (flops / sec * 1e-9)]
                    print("| " + " | ".join(cells) + " |")
                    sys.stdout.flush()

    # Decode: one query, 32768 keys, Hq 32 / Hkv 8, D 128.
    Lk, D, Hq, Hkv = 32768, 128, 32, 8
    q = rng.uniform(-1, 1, (Hq, 1, D)).astype(np.float32)
    k = rng.uniform(-1, 1, (Hkv, Lk, D)).astype(np.float32)
    v = rng.uniform(-1, 1, (Hkv, Lk, D)).astype(np.float32)
    kv_bytes = 2.0 * Hkv * Lk * D * 4
    print("\n| decode (Lq 1, Lk 32768, Hq 32 / Hkv 8, D 128) | runs | ms | K/V GB/s |")
    print("|---|---|---|---|")
    numpy_attention(q, k, v, None)
    sec, n = timed(lambda: numpy_attention(q, k, v, None), 0)
    print("| numpy | %d | %.2f | %.1f |" % (n, sec * 1e3, kv_bytes / sec * 1e-9))
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(x)[None] for x in (q, k, v))
        F = torch.nn.functional

        def run_torch():
            with torch.no_grad():
                F.scaled_dot_product_attention(tq, tk, tv, enable_gqa=True)
        run_torch()
        sec, n = timed(run_torch, 0)
        print("| torch SDPA | %d | %.2f | %.1f |" % (n, sec * 1e3, kv_bytes / sec * 1e-9))
    if skipped:
        print("\n- %d measurement(s) skipped to stay within the budgets (numpy %.0f s, torch %.0f s)"
              % (skipped, a.budget, a.torch_budget))
    print("- attn_numpy total time: %.0f s" % (time.perf_counter() - start))


if __name__ == "__main__":
    main()
