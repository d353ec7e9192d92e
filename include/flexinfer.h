/*
 * flexinfer — public C API.
 *
 * Conventions
 *   - Every function that can fail returns an fi_status (FI_OK == 0) and, when
 *     given a non-NULL fi_error, writes a human-readable message into it.
 *   - Objects returned through an out-pointer are owned by the caller and are
 *     released with the matching *_free function (NULL is accepted).
 *   - Indices passed to mask and score callbacks are logical positions
 *     (top-left aligned): query i of a call with q_offset o is position o + i.
 */
#ifndef FLEXINFER_H
#define FLEXINFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum fi_status {
    FI_OK = 0,
    FI_ERR_INVALID = 1,     /* bad argument, shape or expression */
    FI_ERR_NOMEM = 2,       /* allocation failed */
    FI_ERR_IO = 3,          /* file could not be opened, read or written */
    FI_ERR_FORMAT = 4,      /* a file's contents are malformed */
    FI_ERR_UNSUPPORTED = 5, /* valid, but not supported by this build */
} fi_status;

typedef struct fi_error {
    fi_status code;
    char msg[512];
} fi_error;

/* ------------------------------------------------------------------------ */
/* Element types                                                             */
/* ------------------------------------------------------------------------ */

typedef enum fi_dtype {
    FI_DTYPE_F32 = 0,
    FI_DTYPE_F16 = 1,
    FI_DTYPE_BF16 = 2,
} fi_dtype;

size_t fi_dtype_size(fi_dtype t);
const char *fi_dtype_name(fi_dtype t);

/* ------------------------------------------------------------------------ */
/* Attention: problem description                                           */
/* ------------------------------------------------------------------------ */

/* A strided 4-D view [batch, heads, len, dim]; the last axis is contiguous.
 * Strides are in elements. */
typedef struct fi_attn_tensor {
    const void *data;
    fi_dtype dtype;
    int64_t batch, heads, len, dim;
    int64_t stride_batch, stride_head, stride_len;
} fi_attn_tensor;

/* A row-major contiguous [B, H, L, D] view. */
fi_attn_tensor fi_attn_tensor_contiguous(const void *data, fi_dtype dtype, int64_t batch,
                                         int64_t heads, int64_t len, int64_t dim);

/* Paged K/V: a pool of fixed-size pages plus a per-sequence page table.
 * Pool layout: k_pages/v_pages are [n_pages, heads, page_size, dim] (dim contiguous).
 * page_table is [batch, max_pages_per_seq]; logical key j of sequence b lives in
 * page page_table[b * max_pages_per_seq + j / page_size], row j % page_size.
 * seq_lens[b] is the number of keys of sequence b. */
typedef struct fi_paged_kv {
    const void *k_pages, *v_pages;
    fi_dtype dtype;
    int64_t n_pages, page_size, heads, dim;
    const int32_t *page_table;
    int64_t max_pages_per_seq;
    const int32_t *seq_lens;
} fi_paged_kv;

/* Callbacks — FlexAttention in C.
 * keep():  true keeps the (q_idx, kv_idx) pair; h is the query head.
 * score(): applied to the scaled score before softmax.
 * Both may be called from several threads at once (kernels, block-mask builds). */
typedef bool (*fi_mask_fn)(int64_t b, int64_t h, int64_t q_idx, int64_t kv_idx, void *ctx);
typedef float (*fi_score_fn)(float score, int64_t b, int64_t h, int64_t q_idx, int64_t kv_idx,
                             void *ctx);

/* Inputs a mask may read besides the indices. */
typedef struct fi_mask_inputs {
    /* Segment (document) ids, indexed by logical position. Either shared [len]
     * (segments_batch == 0) or per batch [segments_batch, len]. A negative id marks
     * a "generated"/global token. */
    const int32_t *segments;
    int64_t segments_len;
    int64_t segments_batch;
    /* Logical position of query row 0 (decode / append). */
    int64_t q_offset;
} fi_mask_inputs;

/* A compiled mask: an expression tree of built-in primitives and callbacks. */
typedef struct fi_mask fi_mask;

/* Parses the mask language, e.g. "causal & window:1024", "causal & (document | generated)".
 * Primitives: full, causal, window:W, prefix:N, chunked:C, document, generated;
 * operators: & | ! and parentheses. A parse error names the column and what was expected. */
fi_status fi_mask_parse(const char *expr, fi_mask **out, fi_error *err);
/* A mask from a C callback. depends_on_head tells the block-mask builder whether
 * the result may differ between heads. */
fi_status fi_mask_from_callback(fi_mask_fn fn, void *ctx, bool depends_on_head, fi_mask **out,
                                fi_error *err);
/* Combinators; they take ownership of their operands (also on failure). */
fi_status fi_mask_and(fi_mask *a, fi_mask *b, fi_mask **out, fi_error *err);
fi_status fi_mask_or(fi_mask *a, fi_mask *b, fi_mask **out, fi_error *err);
fi_status fi_mask_not(fi_mask *a, fi_mask **out, fi_error *err);
void fi_mask_free(fi_mask *m);
/* True when the expression reads segment ids (document / generated). */
bool fi_mask_needs_segments(const fi_mask *m);
/* Element test (slow path; kernels use block masks and specialised tests). */
bool fi_mask_keep(const fi_mask *m, const fi_mask_inputs *in, int64_t b, int64_t h, int64_t q_idx,
                  int64_t kv_idx);
/* Checks that the inputs a mask needs are present and large enough. */
fi_status fi_mask_validate_inputs(const fi_mask *m, const fi_mask_inputs *in, int64_t batch,
                                  int64_t q_len, int64_t kv_len, fi_error *err);

/* Score modifiers: "softcap:C", "alibi", or several joined by ',' (applied left to right). */
typedef struct fi_score_mod fi_score_mod;
fi_status fi_score_mod_parse(const char *expr, fi_score_mod **out, fi_error *err);
fi_status fi_score_mod_from_callback(fi_score_fn fn, void *ctx, fi_score_mod **out, fi_error *err);
void fi_score_mod_free(fi_score_mod *s);
/* Applies the modifier to one scaled score; n_heads is the number of query heads (ALiBi). */
float fi_score_mod_apply(const fi_score_mod *s, float score, int64_t b, int64_t h, int64_t n_heads,
                         int64_t q_idx, int64_t kv_idx);

/* Block masks (FlexAttention's BlockMask): per (q-block, kv-block) EMPTY / PARTIAL / FULL,
 * stored as compressed lists. `batch`/`heads` are 1 when the mask broadcasts over them. */
typedef enum fi_block_kind {
    FI_BLOCK_EMPTY = 0,
    FI_BLOCK_PARTIAL = 1,
    FI_BLOCK_FULL = 2,
} fi_block_kind;

typedef struct fi_block_mask {
    int64_t q_len, kv_len, q_offset;
    int32_t block_q, block_kv;
    int64_t n_q_blocks, n_kv_blocks;
    int64_t batch, heads;
    int32_t *kv_num_blocks;      /* [batch, heads, n_q_blocks]: PARTIAL blocks */
    int32_t *kv_indices;         /* [batch, heads, n_q_blocks, n_kv_blocks], ascending */
    int32_t *full_kv_num_blocks; /* [batch, heads, n_q_blocks]: FULL blocks */
    int32_t *full_kv_indices;    /* [batch, heads, n_q_blocks, n_kv_blocks], ascending */
} fi_block_mask;

/* Builds the block mask of `m` for a problem of the given size. Built-in primitives are
 * classified analytically; callbacks are scanned once per block. batch/heads give the
 * problem's sizes; the result broadcasts over them where the mask allows. */
fi_status fi_block_mask_build(const fi_mask *m, const fi_mask_inputs *in, int64_t batch,
                              int64_t heads, int64_t q_len, int64_t kv_len, int32_t block_q,
                              int32_t block_kv, fi_block_mask **out, fi_error *err);
void fi_block_mask_free(fi_block_mask *bm);
fi_block_kind fi_block_mask_kind(const fi_block_mask *bm, int64_t b, int64_t h, int64_t q_block,
                                 int64_t kv_block);
/* Fraction of (q, kv) pairs that the block mask computes (PARTIAL + FULL area). */
double fi_block_mask_block_density(const fi_block_mask *bm);

/* ------------------------------------------------------------------------ */
/* Attention: forward                                                        */
/* ------------------------------------------------------------------------ */

typedef struct fi_attn_params {
    fi_attn_tensor q; /* [B, Hq, Lq, D] */
    fi_attn_tensor k; /* [B, Hkv, Lk, D]; ignored when paged_kv is set */
    fi_attn_tensor v; /* [B, Hkv, Lk, D]; ignored when paged_kv is set */
    const fi_paged_kv *paged_kv;

    float *out; /* [B, Hq, Lq, D] f32, contiguous */
    float *lse; /* optional [B, Hq, Lq] f32, natural log; -inf for fully masked rows */

    float scale; /* 0 means 1/sqrt(D) */
    const fi_mask *mask;           /* NULL means full */
    const fi_mask_inputs *mask_in; /* segments, q_offset; may be NULL */
    const fi_score_mod *score_mod; /* may be NULL */
    const fi_block_mask *block_mask; /* optional prebuilt block mask (else built on the fly) */

    /* Varlen: when cu_seqlens_q is set, q/k/v have batch 1 and n_seqs sequences packed along
     * the length axis; sequence i spans [cu_seqlens_q[i], cu_seqlens_q[i+1]) of q and
     * [cu_seqlens_k[i], cu_seqlens_k[i+1]) of k/v. Positions are logical per sequence and
     * `b` seen by masks is the sequence index. */
    const int32_t *cu_seqlens_q, *cu_seqlens_k;
    int64_t n_seqs;

    int threads;    /* 0: OpenMP default */
    int num_splits; /* split-KV: 0 automatic, 1 never split, n forces n */
    int block_q, block_kv; /* tile sizes, 0 for defaults */
} fi_attn_params;

/* Tiled flash attention forward on the CPU. */
fi_status fi_attn_forward(const fi_attn_params *p, fi_error *err);

/* Naive O(Lq*Lk) reference in double precision (tests and `attn --check`). Same
 * parameters and outputs as fi_attn_forward; ignores threads/splits/tiles. */
fi_status fi_attn_reference(const fi_attn_params *p, fi_error *err);

/* The split count fi_attn_forward would choose automatically for this problem. */
int fi_attn_auto_splits(const fi_attn_params *p);

/* ------------------------------------------------------------------------ */
/* Model runtime                                                             */
/* ------------------------------------------------------------------------ */

/* A GGUF model (llama family) loaded for inference; read-only, shareable by sessions. */
typedef struct fi_model fi_model;

fi_status fi_model_load(const char *path, fi_model **out, fi_error *err);
void fi_model_free(fi_model *m);
int64_t fi_model_n_vocab(const fi_model *m);
int64_t fi_model_n_ctx_train(const fi_model *m);

/* One sequence being evaluated: its KV cache and scratch (no allocation per token). */
typedef struct fi_session fi_session;

typedef struct fi_session_params {
    int64_t n_ctx;     /* tokens the cache holds; 0: min(model's training context, 4096) */
    int64_t n_batch;   /* most tokens per forward (longer inputs are chunked); 0: 256 */
    int threads;       /* 0: OpenMP default */
    fi_dtype kv_dtype; /* FI_DTYPE_F32 or FI_DTYPE_F16 */
    bool logits_all;   /* allow fi_session_eval(..., all = true) up to n_batch rows */
} fi_session_params;

fi_session_params fi_session_default_params(void);
fi_status fi_session_create(const fi_model *m, const fi_session_params *p, fi_session **out,
                            fi_error *err);
void fi_session_free(fi_session *s);
/* Appends n tokens to the sequence (chunked by n_batch) and writes the next-token logits: of the
 * last token ([n_vocab]) or, with all (needs logits_all), of every token ([n, n_vocab]). Fails
 * with a message when the context would overflow; the sequence is then unchanged. */
fi_status fi_session_eval(fi_session *s, const int32_t *tokens, size_t n, float *logits, bool all,
                          fi_error *err);
int64_t fi_session_n_past(const fi_session *s);
int64_t fi_session_n_ctx(const fi_session *s);
void fi_session_truncate(fi_session *s, int64_t n_past); /* forget tokens at positions >= n_past */
void fi_session_reset(fi_session *s);

/* Sampling: penalties (llama.cpp semantics over the last penalty_last_n tokens), then top-k,
 * top-p, min-p, temperature, and a draw from the seeded generator; greedy when temp <= 0. */
typedef struct fi_sampler_params {
    float temp;              /* 0: greedy */
    int32_t top_k;           /* 0: off */
    float top_p;             /* 1: off */
    float min_p;             /* 0: off */
    float repeat_penalty;    /* 1: off */
    float presence_penalty;  /* 0: off */
    float frequency_penalty; /* 0: off */
    int32_t penalty_last_n;  /* tokens the penalties look at; 0: none, -1: all kept */
    uint64_t seed;
} fi_sampler_params;

typedef struct fi_sampler fi_sampler;

fi_sampler_params fi_sampler_default_params(void);
fi_status fi_sampler_create(const fi_sampler_params *p, int64_t n_vocab, fi_sampler **out,
                            fi_error *err);
void fi_sampler_free(fi_sampler *s);
/* Picks a token from logits [n_vocab] (not modified). */
int32_t fi_sampler_sample(fi_sampler *s, const float *logits);
/* Records a token of the sequence (prompt or generated) for the penalties. */
void fi_sampler_accept(fi_sampler *s, int32_t token);
void fi_sampler_reset(fi_sampler *s); /* forgets the history and reseeds */

#ifdef __cplusplus
}
#endif
#endif /* FLEXINFER_H */
