"""llama.cpp throughput through llama-cpp-python's low-level API, measured like llama-bench and
like bench/model_bench.c: pp = one llama_decode of N random token ids on a cleared context;
tg = M single-token llama_decode calls of random ids from an empty cache. One warm-up, then REPS
timed runs; prints one JSON line with every run's tok/s.

usage: python3 peer_bench.py MODEL THREADS [REPS=5] [PP=512] [TG=128]"""
import json
import os
import random
import sys
import time

import llama_cpp as L


def main():
    model_path, threads = sys.argv[1], int(sys.argv[2])
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    pp = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    tg = int(sys.argv[5]) if len(sys.argv) > 5 else 128
    L.llama_backend_init()
    # Silence llama.cpp's loading chatter (stderr) for the duration of the run.
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(model_path.encode(), mp)
    cp = L.llama_context_default_params()
    cp.n_ctx = max(pp, tg) + 16
    cp.n_batch = max(pp, 1)
    cp.n_ubatch = max(pp, 1)
    cp.n_threads = threads
    cp.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cp)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    mem = L.llama_get_memory(ctx)
    rnd = random.Random(1)

    def decode(tokens):
        arr = (L.llama_token * len(tokens))(*tokens)
        rc = L.llama_decode(ctx, L.llama_batch_get_one(arr, len(tokens)))
        if rc != 0:
            raise RuntimeError(f"llama_decode failed: {rc}")
        L.llama_synchronize(ctx)

    def run(n_pp, n_tg):
        L.llama_memory_clear(mem, True)
        pps = tgs = 0.0
        if n_pp:
            toks = [rnd.randrange(n_vocab) for _ in range(n_pp)]
            t0 = time.perf_counter()
            decode(toks)
            pps = n_pp / (time.perf_counter() - t0)
        L.llama_memory_clear(mem, True)
        if n_tg:
            t0 = time.perf_counter()
            for _ in range(n_tg):
                decode([rnd.randrange(n_vocab)])
            tgs = n_tg / (time.perf_counter() - t0)
        return pps, tgs

    os.dup2(saved, 2)
    run(pp, 1)  # warm-up
    res = [run(pp, tg) for _ in range(reps)]
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"pp": [round(a, 2) for a, _ in res], "tg": [round(b, 2) for _, b in res],
                      "rss_mib": round(rss, 1)}))
    L.llama_free(ctx)
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
