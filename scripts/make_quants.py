#!/usr/bin/env python3
"""Makes Q4_0, Q8_0 and F16 variants of the default model with llama.cpp's own quantizer
(llama_model_quantize through llama-cpp-python), for the speed and agreement comparisons.

The source is itself quantized (Q4_1), so the tensors are dequantized and requantized
(allow_requantize); the variants share the source's weights up to that rounding. Tensor-type
choices are llama.cpp's defaults for each file type (like llama-quantize), unless --pure.

usage: scripts/make_quants.py [--src MODEL] [--out-dir models] [--types q4_0,q8_0,f16] [--pure] [--force]
Writes models/SmolLM2-135M-Instruct.<TYPE>.gguf; existing files are kept unless --force.
Needs llama-cpp-python (scripts/peer_setup.sh).
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SRC = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=DEFAULT_SRC)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "models"))
    ap.add_argument("--types", default="q4_0,q8_0,f16")
    ap.add_argument("--pure", action="store_true", help="every weight in the target type (no per-tensor choices)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--force", action="store_true", help="rewrite files that exist")
    args = ap.parse_args()

    try:
        import llama_cpp
    except ImportError:
        print("make_quants: llama_cpp is not installed (run scripts/peer_setup.sh)", file=sys.stderr)
        return 1
    if not os.path.isfile(args.src):
        print(f"make_quants: {args.src} not found (run scripts/get_model.sh)", file=sys.stderr)
        return 1

    ftypes = {
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
        "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
        "bf16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
        "f32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    }
    base = os.path.basename(args.src)
    stem = base.split(".")[0] if "." in base else base
    os.makedirs(args.out_dir, exist_ok=True)
    llama_cpp.llama_backend_init()
    status = 0
    for name in [t.strip().lower() for t in args.types.split(",") if t.strip()]:
        if name not in ftypes:
            print(f"make_quants: unknown type '{name}' (known: {', '.join(ftypes)})", file=sys.stderr)
            return 2
        out = os.path.join(args.out_dir, f"{stem}.{name.upper()}.gguf")
        if os.path.exists(out) and not args.force:
            print(f"make_quants: {out} exists (use --force to rewrite)")
            continue
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftypes[name]
        params.nthread = args.threads
        params.allow_requantize = True
        params.pure = args.pure
        tmp = out + ".tmp"
        t0 = time.time()
        rc = llama_cpp.llama_model_quantize(args.src.encode(), tmp.encode(), params)
        if rc != 0:
            print(f"make_quants: llama_model_quantize to {name} failed (rc={rc})", file=sys.stderr)
            if os.path.exists(tmp):
                os.remove(tmp)
            status = 1
            continue
        os.replace(tmp, out)
        print(f"make_quants: {out} ({os.path.getsize(out) / 2**20:.1f} MiB, {time.time() - t0:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
