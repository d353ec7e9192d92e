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

/* The rotation angle of pair i (0 <= i < rope_dim/2) at position pos: pos * scale * base^(-2i/rope_dim)
 * / freq_factor[i]; exposed so tests can check it against the direct formula. */
double fi_llama_rope_theta(const fi_model *m, int64_t pos, int64_t i);
/* Rotates adjacent pairs (x[2i], x[2i+1]) of the first rope_dim elements of one head in place
 * ("normal" RoPE: the GGUF converter permuted Q/K so this matches the original model). */
void fi_llama_rope_apply(float *x, int64_t rope_dim, const float *cos_t, const float *sin_t);

#endif /* FI_MODEL_LLAMA_H */
