"""Greedy 64-token continuations: flexinfer (`flexinfer run --temp 0`, end to end: tokenizer,
prefill, decode loop, detokenizer) against llama.cpp on the same GGUF file. Passes when >= 9 of 10
continuations are identical, or when every difference is a near-tie; for each difference prints
both engines' two best logits at the first divergent token.

Noise floor, measured in the same run: llama.cpp against ITSELF with every input embedding moved
by one f32 ulp (the smallest perturbation there is; docs/numerics.md). This int8-activation model
amplifies any rounding difference, so that count is what "not bit-identical to llama.cpp" costs.

usage: python3 greedy_agreement.py FLEXINFER_BINARY   (exit 77 when the peer or model is missing)"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

import numpy as np  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three primary colors are",
    "<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n<|im_start|>assistant\n",
    "In 1969, the Apollo 11 mission",
    "Here is a list of healthy breakfast ideas:\n1.",
    "The quick brown fox",
    "<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n",
    "Photosynthesis is the process by which",
]
N_GEN = 64
NEAR_TIE = 0.5


def peer_greedy(llm, import_llama_cpp, prompt):
    toks = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    llm.reset()
    llm.eval(toks)
    out = []
    vocab = import_llama_cpp.llama_model_get_vocab(llm._model.model)
    for _ in range(N_GEN):
        row = np.array(llm.scores[llm.n_tokens - 1])
        t = int(row.argmax())
        if import_llama_cpp.llama_vocab_is_eog(vocab, t):
            break
        out.append(t)
        if len(out) == N_GEN:
            break
        llm.eval([t])
    return toks, out


def peer_greedy_nudged(model, ctx, path, ptoks, vocab, import_llama_cpp, ref):
    """peer_greedy, but every input embedding (prompt and generated) nudged by one ulp; stops at the
    first token that differs from ref (the unperturbed continuation), since only equality counts."""
    logits = pc.peer_logits_from_embd(model, ctx, pc.one_ulp_up(pc.token_embeddings(path, ptoks)))
    out, pos = [], len(ptoks)
    for _ in range(N_GEN):
        t = int(logits[-1].argmax())
        if import_llama_cpp.llama_vocab_is_eog(vocab, t):
            break
        out.append(t)
        if len(out) == N_GEN or out != ref[:len(out)]:
            break
        logits = pc.peer_logits_from_embd(model, ctx, pc.one_ulp_up(pc.token_embeddings(path, [t])), pos)
        pos += 1
    return out


def top2(row):
    i = np.argsort(-row)[:2]
    return f"{i[0]}:{row[i[0]]:.4f} {i[1]}:{row[i[1]]:.4f}"


def main():
    pc.need_peer()
    model = pc.model_path()
    binary = sys.argv[1]
    import llama_cpp
    llm = pc.load_peer(model, n_ctx=256, logits_all=True)
    same = 0
    unexplained = 0
    floor_same = 0
    exact_embd = pc.token_embeddings(model, [0]) is not None
    if exact_embd:
        lmodel, lctx = pc.load_peer_lowlevel(model, 256)
    for k, prompt in enumerate(PROMPTS):
        ptoks, gen = peer_greedy(llm, llama_cpp, prompt)
        peer_text = llm.detokenize(gen).decode("utf-8", errors="replace")
        if exact_embd:
            vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
            floor_same += peer_greedy_nudged(lmodel, lctx, model, ptoks, vocab, llama_cpp, gen) == gen
        r = subprocess.run([binary, "run", "-m", model, "-p", prompt, "-n", str(N_GEN), "--temp", "0",
                            "-t", "2", "-c", "256"], capture_output=True, check=True)
        ours = r.stdout.decode("utf-8", errors="replace")
        if ours.endswith("\n"):
            ours = ours[:-1]
        if ours == peer_text:
            same += 1
            print(f"prompt {k}: identical ({len(gen)} tokens)")
            continue
        # First divergence, token level: our teacher-forced argmax along the peer's path.
        seq = ptoks + gen
        got = pc.flexinfer_logits(binary, model, seq)
        ref = np.array(llm.scores[:len(seq)])
        first = next((i for i in range(len(ptoks) - 1, len(seq) - 1) if got[i].argmax() != seq[i + 1]), None)
        print(f"prompt {k}: DIFFERENT")
        print(f"  peer : {peer_text[:120]!r}")
        print(f"  ours : {ours[:120]!r}")
        if first is None:
            unexplained += 1
            print("  (teacher-forced argmax agrees everywhere: difference in the text stage)")
        else:
            # A near-tie: each engine's pick is within NEAR_TIE of the other's, in both engines' logits.
            rp, gp = int(ref[first].argmax()), int(got[first].argmax())
            tie = all(row.max() - row[k] < NEAR_TIE for row in (ref[first], got[first]) for k in (rp, gp))
            if not tie:
                unexplained += 1
            print(f"  first divergence after {first - len(ptoks) + 1} generated tokens: "
                  f"peer top2 {top2(ref[first])} | ours top2 {top2(got[first])} | picks {rp} / {gp}: "
                  f"peer {ref[first][rp]:.4f} / {ref[first][gp]:.4f}, ours {got[first][rp]:.4f} / {got[first][gp]:.4f}")
    print(f"{same}/{len(PROMPTS)} greedy continuations identical; "
          f"{len(PROMPTS) - same - unexplained} differences explained by near-ties (< {NEAR_TIE}), "
          f"{unexplained} unexplained")
    if exact_embd:
        pc.free_peer_lowlevel(lmodel, lctx)
        print(f"noise floor: llama.cpp against itself with inputs moved by one ulp: {floor_same}/{len(PROMPTS)} "
              "identical")
    print("9/10 goal: " + ("met" if same >= 9 else "NOT met"))
    return 0 if same >= 9 or unexplained == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
