"""Shared set-up of the agreement tests against llama.cpp (through llama-cpp-python)."""
import os
import subprocess
import sys
import tempfile

import numpy as np

SKIP = 77


def need_peer():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("SKIP: llama_cpp (llama-cpp-python) is not installed")
        sys.exit(SKIP)


def model_path():
    src = os.environ.get("FI_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    path = os.environ.get("FI_MODEL", os.path.join(src, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not os.path.exists(path):
        print(f"SKIP: model {path} is missing (scripts/get_model.sh)")
        sys.exit(SKIP)
    return path


def load_peer(path, n_ctx, logits_all=False, threads=2):
    import llama_cpp
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, logits_all=logits_all,
                           n_threads=threads, n_threads_batch=threads, verbose=False, seed=0)


def flexinfer_logits(binary, model, tokens, threads=2):
    """Teacher-forced logits [n, vocab] of `tokens` from `flexinfer logits`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "l.npy")
        cmd = [binary, "logits", "-m", model, "--tokens", " ".join(map(str, tokens)), "--out", out,
               "-t", str(threads), "-c", str(max(len(tokens), 1))]
        subprocess.run(cmd, check=True)
        got = np.load(out)
        ids = np.load(os.path.join(tmp, "l.tokens.npy"))
        assert list(ids) == list(tokens), "flexinfer logits echoed different token ids"
        return got
