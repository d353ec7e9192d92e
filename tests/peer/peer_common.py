"""Shared set-up of the agreement tests against llama.cpp (through llama-cpp-python)."""
import ctypes
import functools
import os
import struct
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


def token_embeddings(model_path, ids):
    """Dequantized token_embd rows of ids, read straight from the GGUF file: exact in f32 for Q8_0
    (d * q), so feeding them as vectors reproduces the token run bit for bit. None for other types."""
    table = _q8_0_token_embd(model_path)
    if table is None:
        return None
    data, start, E = table
    row = E // 32 * 34
    out = np.empty((len(ids), E), np.float32)
    for k, i in enumerate(ids):
        blk = np.frombuffer(data, np.uint8, row, start + i * row).reshape(-1, 34)
        d = blk[:, :2].copy().view(np.float16).astype(np.float32)
        q = blk[:, 2:].view(np.int8).astype(np.float32)
        out[k] = (d * q).reshape(-1)
    return out


@functools.lru_cache(maxsize=2)
def _q8_0_token_embd(model_path):
    """(file bytes, offset of token_embd, n_embd) when token_embd is Q8_0, else None."""
    with open(model_path, "rb") as f:
        data = f.read()
    off = 4
    _, n_t, n_kv = struct.unpack_from("<IQQ", data, off)
    off += 20

    def rd_str(o):
        (ln,) = struct.unpack_from("<Q", data, o)
        return data[o + 8:o + 8 + ln].decode("utf-8", "replace"), o + 8 + ln
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    align = 32

    def skip_val(t, o):
        if t == 8:
            return rd_str(o)[1]
        if t == 9:
            et, cnt = struct.unpack_from("<IQ", data, o)
            o += 12
            for _ in range(cnt):
                o = skip_val(et, o)
            return o
        return o + sizes[t]
    for _ in range(n_kv):
        key, off = rd_str(off)
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        if key == "general.alignment":
            (align,) = struct.unpack_from("<I", data, off)
        off = skip_val(t, off)
    tensors = {}
    for _ in range(n_t):
        name, off = rd_str(off)
        (nd,) = struct.unpack_from("<I", data, off)
        ne = struct.unpack_from("<" + "Q" * nd, data, off + 4)
        t, toff = struct.unpack_from("<IQ", data, off + 4 + 8 * nd)
        off += 4 + 8 * nd + 12
        tensors[name] = (ne, t, toff)
    base = (off + align - 1) // align * align
    ne, t, toff = tensors["token_embd.weight"]
    if t != 8:
        return None
    return data, base + toff, ne[0]


def load_peer_lowlevel(path, n_ctx, threads=2):
    """llama.cpp's model and context as load_peer configures them (f16 KV cache, flash attention
    off), through the C API: input vectors instead of token ids need it. Free with free_peer_lowlevel."""
    import llama_cpp as lc
    model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
    cp = lc.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = 0
    return model, lc.llama_init_from_model(model, cp)


def free_peer_lowlevel(model, ctx):
    import llama_cpp as lc
    lc.llama_free(ctx)
    lc.llama_model_free(model)


def peer_logits_from_embd(model, ctx, embd, pos0=0):
    """llama.cpp (low-level model and context) fed with input vectors embd [n, n_embd] at positions
    pos0.. (pos0 = 0 clears the cache first); returns the logits of every one of them [n, n_vocab]."""
    import llama_cpp as lc
    n, E = embd.shape
    embd = np.ascontiguousarray(embd, dtype=np.float32)
    batch = lc.llama_batch_init(n, E, 1)
    ctypes.memmove(batch.embd, embd.ctypes.data, embd.nbytes)
    for i in range(n):
        batch.pos[i] = pos0 + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1
    batch.n_tokens = n
    if pos0 == 0:
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    assert lc.llama_decode(ctx, batch) == 0
    nv = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    out = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(n * nv,)).reshape(n, nv).copy()
    lc.llama_batch_free(batch)
    return out


def one_ulp_up(x):
    """Every element moved to the next f32 value towards +inf: the smallest possible perturbation."""
    return np.nextafter(x.astype(np.float32), np.float32(np.inf))


GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME = 4, 10, 64, 64


class GgmlTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def tensor_to_numpy(t):
    if t.type not in (0, 1) or not t.data:
        return None
    dtype, esize = (np.float32, 4) if t.type == 0 else (np.float16, 2)
    ne = list(t.ne)
    nb = list(t.nb)
    span = sum((ne[i] - 1) * nb[i] for i in range(4)) + esize
    raw = (ctypes.c_char * span).from_address(t.data)
    buf = np.frombuffer(raw, dtype=np.uint8).copy()
    arr = np.lib.stride_tricks.as_strided(buf.view(dtype), shape=ne[::-1], strides=nb[::-1])
    return np.ascontiguousarray(arr).astype(np.float32)


def peer_stages(path, toks, flash=False, kv_f32=False, threads=2):
    """llama.cpp's evaluation of toks (one batch) with every f32 / f16 graph node saved through the
    eval callback: {"<index>:<ggml name>": array in numpy order [.., ne1, ne0], "logits": [n, n_vocab]}."""
    import llama_cpp as lc
    model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
    saved = {}
    count = [0]

    def cb(tp, ask, _ud):
        if ask:
            return True
        t = ctypes.cast(tp, ctypes.POINTER(GgmlTensor)).contents
        arr = tensor_to_numpy(t)
        if arr is not None:
            saved[f"{count[0]:04d}:{t.name.decode()}"] = arr
        count[0] += 1
        return True

    cb_c = lc.ggml_backend_sched_eval_callback(cb)
    cp = lc.llama_context_default_params()
    cp.n_ctx = max(64, len(toks))
    cp.n_batch = cp.n_ubatch = max(64, len(toks))
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = 1 if flash else 0
    if kv_f32:
        cp.type_k = cp.type_v = 0
    cp.cb_eval = cb_c
    cp.cb_eval_user_data = None
    ctx = lc.llama_init_from_model(model, cp)
    batch = lc.llama_batch_init(len(toks), 0, 1)
    for i, tk in enumerate(toks):
        batch.token[i] = tk
        batch.pos[i] = i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1
    batch.n_tokens = len(toks)
    rc = lc.llama_decode(ctx, batch)
    assert rc == 0, rc
    nv = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(len(toks) * nv,)).reshape(len(toks), nv)
    saved["logits"] = logits.copy()
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return saved


def peer_stage(saved, name, k=-1):
    """The k-th node named `name` (ggml's names; several nodes share one, e.g. Qcur before and after
    RoPE: -1 is the last)."""
    ks = [x for x in saved if ":" in x and x.split(":", 1)[1] == name]
    return saved[ks[k]]
