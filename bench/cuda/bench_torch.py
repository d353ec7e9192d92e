#!/usr/bin/env python3
"""Side-by-side GPU attention benchmark: flexinfer's CUDA kernels (through the
fi_cuda_bench program) next to torch.compile(flex_attention), SDPA flash and SDPA
cuDNN, on the same shapes in one run. Prints a markdown table (also written to
--out). TFLOP/s count only unmasked work (4*B*H*Lq*Lk*D*density); decode rows
report GB/s of K/V read. Timings are medians (CUDA events)."""
import argparse
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from triton.testing import do_bench

CASES = [
    # name, B, Hq, Hkv, Lq, Lk, D, mask, docs
    ("B4_H16_S4096_D128_full", 4, 16, 16, 4096, 4096, 128, None, 0),
    ("B4_H16_S4096_D128_causal", 4, 16, 16, 4096, 4096, 128, "causal", 0),
    ("B2_H16_S8192_D128_full", 2, 16, 16, 8192, 8192, 128, None, 0),
    ("B2_H16_S8192_D128_causal", 2, 16, 16, 8192, 8192, 128, "causal", 0),
    ("B4_H32_S4096_D64_full", 4, 32, 32, 4096, 4096, 64, None, 0),
    ("B4_H32_S4096_D64_causal", 4, 32, 32, 4096, 4096, 64, "causal", 0),
    ("B4_H16_S4096_D128_document8", 4, 16, 16, 4096, 4096, 128, "document", 8),
    ("B4_H16_S4096_D128_causal_document8", 4, 16, 16, 4096, 4096, 128, "causal & document", 8),
    ("B4_H16_S4096_D128_causal_window1024", 4, 16, 16, 4096, 4096, 128, "causal & window:1024", 0),
    ("decode_B1_KV32768", 1, 32, 8, 1, 32768, 128, None, -1),
    ("decode_B8_KV8192", 8, 32, 8, 1, 8192, 128, None, -1),
    ("decode_B32_KV4096", 32, 32, 8, 1, 4096, 128, None, -1),
]


def mask_mod_for(mask, S, docs):
    if mask is None:
        return None
    doc = (torch.arange(S, device="cuda") * docs // S).to(torch.int32) if docs > 0 else None
    if mask == "causal":
        return lambda b, h, q, kv: q >= kv
    if mask == "document":
        return lambda b, h, q, kv: doc[q] == doc[kv]
    if mask == "causal & document":
        return lambda b, h, q, kv: (q >= kv) & (doc[q] == doc[kv])
    if mask == "causal & window:1024":
        return lambda b, h, q, kv: (q >= kv) & (q - kv < 1024)
    raise ValueError(mask)


def dense_mask(mask, S, docs):
    q = torch.arange(S, device="cuda")[:, None]
    kv = torch.arange(S, device="cuda")[None, :]
    doc = (torch.arange(S, device="cuda") * docs // S) if docs > 0 else None
    if mask == "causal":
        return q >= kv
    if mask == "document":
        return doc[q] == doc[kv]
    if mask == "causal & document":
        return (q >= kv) & (doc[q] == doc[kv])
    if mask == "causal & window:1024":
        return (q >= kv) & (q - kv < 1024)
    raise ValueError(mask)


def bench(fn):
    try:
        fn()
        torch.cuda.synchronize()
        return do_bench(fn, warmup=50, rep=200, return_mode="median")
    except Exception as e:  # a backend that cannot run this case
        print(f"#   {getattr(fn, '__name__', 'fn')}: {type(e).__name__}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
        return None


def run_fi(binary, iters):
    res = {}
    if not binary:
        return res
    out = subprocess.run([binary, "--iters", str(iters)], capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    for line in out.stdout.splitlines():
        print("#", line, file=sys.stderr)
        parts = line.split()
        if parts and parts[0] == "FI":
            res[parts[1]] = dict(ms=float(parts[2]), density=float(parts[5]), kernel=parts[6], splits=parts[7])
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fi-bench", help="path of the fi_cuda_bench program")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args()

    fi = run_fi(args.fi_bench, args.iters)
    # Every case is a new shape/mask for dynamo: without a higher limit the later
    # cases silently fall back to the unfused eager implementation.
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    flex = torch.compile(flex_attention, dynamic=False)
    dev = torch.cuda.get_device_properties(0)
    rows = []
    for name, B, Hq, Hkv, Lq, Lk, D, mask, docs in CASES:
        torch.manual_seed(0)
        q = torch.randn(B, Hq, Lq, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, Hkv, Lk, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, Hkv, Lk, D, device="cuda", dtype=torch.bfloat16)
        decode = docs < 0
        if decode:
            work = 2.0 * B * Hkv * Lk * D * 2  # bytes of K and V
            unit = "GB/s"
        else:
            density = 1.0 if mask is None else dense_mask(mask, Lk, docs).float().mean().item()
            work = 4.0 * B * Hq * Lq * Lk * D * density
            unit = "TFLOP/s"
        mm = mask_mod_for(mask, Lk, docs)
        bm = create_block_mask(mm, None, None, Lq, Lk, device="cuda") if mm else None
        gqa = Hq != Hkv

        def f_flex():
            return flex(q, k, v, block_mask=bm, enable_gqa=gqa)

        def f_flash():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=mask == "causal", enable_gqa=gqa)

        def f_cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=mask == "causal", enable_gqa=gqa)

        f_flex.__name__, f_flash.__name__, f_cudnn.__name__ = f"flex {name}", f"sdpa-flash {name}", f"sdpa-cudnn {name}"
        sdpa_ok = mask in (None, "causal")
        times = {
            "flexinfer": fi.get(name, {}).get("ms"),
            "flex": bench(f_flex),
            "flash": bench(f_flash) if sdpa_ok else None,
            "cudnn": bench(f_cudnn) if sdpa_ok else None,
        }
        scale = 1e9 if decode else 1e12

        def fmt(ms):
            return "n/a" if ms is None else f"{work / (ms * 1e-3) / scale:.0f} ({ms:.3f} ms)"

        rows.append(f"| {name} | {fmt(times['flexinfer'])} | {fmt(times['flex'])} | {fmt(times['flash'])} | "
                    f"{fmt(times['cudnn'])} | {unit} |")
        print(rows[-1], file=sys.stderr)
        del q, k, v, bm
        torch.cuda.empty_cache()

    table = [f"Device: {dev.name} ({dev.multi_processor_count} SMs), torch {torch.__version__}; "
             "bf16; median of repeated runs.", "",
             "| case | flexinfer | flex_attention (compiled) | SDPA flash | SDPA cuDNN | unit |",
             "|---|---|---|---|---|---|"] + rows
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
