/* The llama-family model as GGUF stores it (SmolLM2, TinyLlama, Llama 2/3): loading, and the forward
 * pass of a chunk of tokens over a session's paged KV cache.
 *
 * The public face is fi_model / fi_session in include/flexinfer.h; this header adds what the CLI,
 * the tests and the decoding layer need beyond it (hyper-parameters, the tokenizer, RoPE). */
#ifndef FI_MODEL_LLAMA_H
#define FI_MODEL_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flexinfer.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

typedef struct fi_llama_hparams {
    int64_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int64_t rope_dim;   /* leading dimensions of each head that rotate */
    float rope_base;    /* {arch}.rope.freq_base */
    float rope_scale;   /* linear position scale: 1 / rope.scaling.factor */
    float norm_eps;
    bool tied_output;   /* logits from token_embd (no output.weight) */
} fi_llama_hparams;

const fi_llama_hparams *fi_llama_hparams_of(const fi_model *m);
/* NULL when the file's tokenizer could not be built (the message is in fi_llama_tokenizer_error). */
const fi_tokenizer *fi_llama_tokenizer(const fi_model *m);
const char *fi_llama_tokenizer_error(const fi_model *m);
const fi_gguf *fi_llama_gguf(const fi_model *m);
/* Bytes of weights one token's forward streams (all matmuls, incl. the output). */
size_t fi_llama_stream_bytes(const fi_model *m);

/* The rotation angles of pairs i = 0 .. rope_dim/2 - 1 at position pos: pos * scale * base^(-2i/rope_dim)
 * / freq_factor[i], evaluated in f32 as ggml does (the power by repeated multiplication), so within a
 * few f32 ulps per pair of the exact value. theta has room for rope_dim / 2 floats. */
void fi_llama_rope_thetas(const fi_model *m, int64_t pos, float *theta);
/* One of those angles; exposed so tests can check it against the direct formula. */
double fi_llama_rope_theta(const fi_model *m, int64_t pos, int64_t i);
/* Rotates adjacent pairs (x[2i], x[2i+1]) of the first rope_dim elements of one head in place
 * ("normal" RoPE: the GGUF converter permuted Q/K so this matches the original model). */
void fi_llama_rope_apply(float *x, int64_t rope_dim, const float *cos_t, const float *sin_t);
/* The same, bit for bit, with AVX2 + FMA (rope_avx2.c): only when fi_cpu_simd_level() >= FI_SIMD_AVX2. */
void fi_llama_rope_apply_avx2(float *x, int64_t rope_dim, const float *cos_t, const float *sin_t);

/* expf(t), correctly rounded but for about one input in 10^7 (so SwiGLU keeps the bytes of a libm
 * expf, and with them the agreement with other engines), by steps that a SIMD twin repeats exactly:
 * in double, t clamped to [EXP_LO, EXP_HI] (beyond them the f32 result is 0 or +inf anyway),
 * n = rint(t log2 e), r = t - n ln2 (two fmas, Cody-Waite), a degree-11 Taylor polynomial of e^r by
 * Horner fmas (relative error < 1e-14), times 2^n, rounded once to f32. */
#define FI_LLAMA_EXP_LO (-104.0)
#define FI_LLAMA_EXP_HI 89.0
#define FI_LLAMA_LOG2E 1.4426950408889634
#define FI_LLAMA_LN2_HI 0.693147180369123816490 /* 0x1.62e42fee00000p-1: n * hi is exact */
#define FI_LLAMA_LN2_LO 1.90821492927058770002e-10
/* 1/k!, k = 0 .. 11 */
#define FI_LLAMA_EXP_COEFS                                                                              \
    {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880, \
     1.0 / 3628800, 1.0 / 39916800}
float fi_llama_exp(float t);
/* g[i] = silu(g[i]) * u[i], silu(x) = x / (1 + fi_llama_exp(-x)) (the FFN gate of llama models). */
void fi_llama_swiglu(float *g, const float *u, int64_t n);
/* The same, bit for bit, with AVX2 + FMA (swiglu_avx2.c): only when fi_cpu_simd_level() >= FI_SIMD_AVX2. */
void fi_llama_swiglu_avx2(float *g, const float *u, int64_t n);

/* Inspection of a forward pass stage by stage (to compare with another engine layer by layer):
 * fn is called on the calling thread's team, by one thread, with every stage of every chunk of at
 * least 2 tokens: name (ggml's names: "embd", "attn_norm", "Qcur" and "Kcur" after RoPE, "Vcur",
 * "kqv_out", "ffn_inp", "ffn_norm", "ffn_swiglu", "l_out", "result_norm"), layer (-1 outside the
 * layers) and rows x cols f32 values, valid during the call only. NULL turns it off. */
typedef void (*fi_llama_trace_fn)(void *user, const char *name, int64_t layer, const float *data, int64_t rows,
                                  int64_t cols);
void fi_session_set_trace(fi_session *s, fi_llama_trace_fn fn, void *user);

#endif /* FI_MODEL_LLAMA_H */
