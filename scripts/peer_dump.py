"""Dumps llama.cpp's intermediate tensors (through llama-cpp-python's eval callback) for one prompt,
to find where flexinfer's hidden states first differ from the peer's (docs/numerics.md); compare
with `flexinfer logits ... --dump DIR`.

usage: python3 scripts/peer_dump.py MODEL.gguf OUT.npz "TOKEN IDS" [--flash] [--kv-f32] [--threads N]
Every f32 / f16 node the graph evaluates is saved as "<index>:<ggml name>" (arrays in ggml's
shape order reversed, i.e. numpy row-major [.., ne1, ne0]); the final logits as "logits"."""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "peer"))
import peer_common as pc  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("tokens")
    ap.add_argument("--flash", action="store_true")
    ap.add_argument("--kv-f32", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    saved = pc.peer_stages(a.model, [int(x) for x in a.tokens.split()], a.flash, a.kv_f32, a.threads)
    np.savez(a.out, **saved)
    print(f"{len(saved)} tensors saved to {a.out}")


if __name__ == "__main__":
    main()
