"""How far llama.cpp moves from ITSELF under perturbations of the size of rounding differences
(docs/numerics.md). Teacher-forced argmax agreement over the texts of tests/peer/logits_agreement.py
(2048 positions), llama.cpp against llama.cpp:
  - ulp:     the same run, but the input embeddings (fed as vectors) nudged by one f32 ulp;
  - control: the input embeddings fed as vectors, unchanged (must agree 100%: checks the set-up);
  - kv:      f16 against f32 KV cache (what the agreement test prints as the noise floor);
  - flash:   flash attention on against off, f32 KV cache on both.
usage: python3 scripts/peer_noise_floor.py [MODEL.gguf]"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "peer"))
import llama_cpp as lc  # noqa: E402
import logits_agreement as la  # noqa: E402
import peer_common as pc  # noqa: E402

N = la.N_TOKENS


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else pc.model_path()
    peer = pc.load_peer(path, n_ctx=N, logits_all=True)
    model, ctx = pc.load_peer_lowlevel(path, N)
    f32 = dict(n_ctx=N, n_batch=512, n_ubatch=512, logits_all=True, n_threads=2, n_threads_batch=2,
               verbose=False, type_k=0, type_v=0)
    kv32 = lc.Llama(model_path=path, **f32)
    fa32 = lc.Llama(model_path=path, flash_attn=True, **f32)
    agree = {"control": 0, "ulp": 0, "kv": 0, "flash": 0}
    diff = {k: [] for k in agree}
    total = 0
    for _, text in la.texts():
        toks = peer.tokenize(text.encode("utf-8"), add_bos=False, special=False)[:N]
        peer.reset()
        peer.eval(toks)
        ref = np.array(peer.scores[:len(toks)], dtype=np.float32)
        e = pc.token_embeddings(path, toks)
        assert e is not None, "the ulp experiment needs a Q8_0 token_embd (exact dequantization)"
        kv32.reset()
        kv32.eval(toks)
        r32 = np.array(kv32.scores[:len(toks)], dtype=np.float32)
        fa32.reset()
        fa32.eval(toks)
        pairs = {"control": (pc.peer_logits_from_embd(model, ctx, e), ref),
                 "ulp": (pc.peer_logits_from_embd(model, ctx, pc.one_ulp_up(e)), ref),
                 "kv": (r32, ref),
                 "flash": (np.array(fa32.scores[:len(toks)], dtype=np.float32), r32)}
        for k, (a, b) in pairs.items():
            agree[k] += int((a.argmax(-1) == b.argmax(-1)).sum())
            diff[k].append(float(np.abs(a - b).mean()))
        total += len(toks)
    for k, v in agree.items():
        print(f"llama.cpp vs llama.cpp, {k:8s}: argmax agreement {v / total * 100:6.2f}% over {total} positions, "
              f"mean |logit diff| {np.mean(diff[k]):.4f}")
    pc.free_peer_lowlevel(model, ctx)


if __name__ == "__main__":
    main()
