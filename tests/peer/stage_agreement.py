"""Layer-0 agreement with llama.cpp stage by stage (docs/numerics.md): flexinfer's
`logits --dump` against llama.cpp's graph nodes (eval callback), both with an f32 KV cache, on one
short prompt. Checks the rounding conventions flexinfer shares with ggml:
  - embd and attn_norm-0 (Q8_0 embedding, RMSNorm recipe) bit-identical;
  - Qcur-0 / Kcur-0 (after RoPE), Vcur-0, kqv_out-0, ffn_inp-0, ffn_norm-0 within 1e-6 of the
    largest value (only the summation order inside dot products differs; the Q8_1 offset rounding
    alone was 2.4e-4 before flexinfer followed it).
Then prints the relative difference of every layer's output, which shows how the int8
activation rounding amplifies those last-bit differences (why argmax agreement saturates ~97%).

usage: python3 stage_agreement.py FLEXINFER_BINARY   (exit 77 when the peer or model is missing)"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

import numpy as np  # noqa: E402

PROMPT = "The capital of France is Paris, and the capital of Germany is Berlin. Numbers 12345 and more words"
RELATIVE = 1e-6


def main():
    pc.need_peer()
    model = pc.model_path()
    binary = sys.argv[1]
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    toks = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=False)
    ref = pc.peer_stages(model, toks, kv_f32=True)
    n_layer = sum(1 for k in ref if ":l_out-" in k)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([binary, "logits", "-m", model, "--tokens", " ".join(map(str, toks)), "--out",
                        os.path.join(tmp, "l.npy"), "--dump", tmp, "-t", "2", "-c", str(len(toks))], check=True)

        def ours(name):
            return np.load(os.path.join(tmp, name + ".npy"))

        def rel(a, b):
            b = b.reshape(a.shape)
            return float(np.abs(a - b).max() / np.abs(b).max())

        for name in ("embd", "attn_norm-0"):
            a, b = ours(name), pc.peer_stage(ref, name)
            same = bool((a == b.reshape(a.shape)).all())
            print(f"{name:12s} bit-identical: {same}")
            failures += not same
        for name in ("Qcur-0", "Kcur-0", "Vcur-0", "kqv_out-0", "ffn_inp-0", "ffn_norm-0"):
            r = rel(ours(name), pc.peer_stage(ref, name))
            ok = r <= RELATIVE
            print(f"{name:12s} max relative difference {r:.3g} ({'ok' if ok else 'FAIL'}, limit {RELATIVE:g})")
            failures += not ok
        def mean_rel(a, b):
            b = b.reshape(a.shape)
            return float(np.abs(a - b).mean() / np.abs(b).mean())

        print("layer outputs l_out-L, mean |diff| / mean |value|:")
        print(" ".join(f"{layer}:{mean_rel(ours(f'l_out-{layer}'), pc.peer_stage(ref, f'l_out-{layer}')):.1e}"
                       for layer in range(n_layer)))
        lg = np.load(os.path.join(tmp, "l.npy"))
        print(f"logits: mean |diff| {np.abs(lg - ref['logits']).mean():.4f}")
    print("FAIL" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
