/*
 * flexinfer — CUDA backend (built with -DFI_CUDA=ON).
 *
 * The GPU path consumes the same problem description as the CPU path
 * (fi_attn_params: shapes, GQA, varlen, paged K/V, mask expression, segments,
 * q_offset, score modifiers, block mask) and the same block-mask CSR lists.
 *
 * Supported on the GPU: head dims 64 and 128; built-in masks (full, causal,
 * window, prefix, chunked, document, generated and & | ! of them); built-in score
 * modifiers (softcap, alibi; up to 4 steps). C callbacks (fi_mask_from_callback,
 * fi_score_mod_from_callback) cannot run on the GPU: FI_ERR_UNSUPPORTED; C expressions
 * compiled at run time (fi_cuda_expr, below) take their place.
 * Queries with q_len == 1 (and no varlen) go to the split-KV decode kernel
 * (num_splits: 0 automatic from the SM count and the work, n forces n); every other
 * problem to the tensor-core prefill kernel. p->threads and p->block_q/block_kv
 * are ignored: the kernels' own tile sizes define the block mask they use (a
 * prebuilt p->block_mask is used when its block sizes and lengths match).
 */
#ifndef FLEXINFER_CUDA_H
#define FLEXINFER_CUDA_H

#include "flexinfer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Host-pointer API (the CLI and tests): every pointer in *p is host memory.
 * q/k/v (or the pages) may be f32, f16 or bf16; they are uploaded as bf16 when all
 * inputs are bf16, as f16 when all are f16, otherwise as f16 (or as bf16 when
 * some |x| exceeds the f16 range). Output and LSE are f32 host arrays as on the CPU. */
fi_status fi_cuda_attn_forward(const fi_attn_params *p, fi_error *err);

/* Device-pointer API (benchmarks, engines): q/k/v data (or k_pages/v_pages) are
 * DEVICE pointers, all bf16 or all f16, 16-byte aligned, with strides that are
 * multiples of 8 elements; out/lse are DEVICE f32 arrays laid out as on the CPU.
 * Index arrays (cu_seqlens_*, page_table, seq_lens, mask segments) and the block
 * mask are HOST arrays: the plan uploads them once. A plan holds the pointers of
 * *p; running it again recomputes the same problem (e.g. with new data in place). */
typedef struct fi_cuda_attn_plan fi_cuda_attn_plan;
fi_status fi_cuda_attn_plan_create(const fi_attn_params *p, fi_cuda_attn_plan **out, fi_error *err);
/* Enqueues the kernels on `stream` (a cudaStream_t; NULL for the default stream). */
fi_status fi_cuda_attn_plan_run(const fi_cuda_attn_plan *plan, void *stream, fi_error *err);
void fi_cuda_attn_plan_free(fi_cuda_attn_plan *plan);
/* Facts about a plan: "prefill" or "decode", and the split count used. */
const char *fi_cuda_attn_plan_kernel(const fi_cuda_attn_plan *plan);
int fi_cuda_attn_plan_splits(const fi_cuda_attn_plan *plan);

/* create + run + synchronise + free. */
fi_status fi_cuda_attn_forward_device(const fi_attn_params *p, fi_error *err);

/* ---- run-time compiled masks and score modifiers (NVRTC) -------------------
 *
 * FlexAttention's programmability without a Python compiler: a mask and/or a score
 * modifier written as C expressions, compiled at run time into the prefill kernel.
 *
 *   mask_expr   bool expression over int b, h (sequence, query head), int q, kv
 *               (logical positions, q includes q_offset; 32-bit, plans refuse
 *               positions >= 2^31) and the user arrays, e.g.
 *               "(q - kv) % 3 != 0 && kv <= q" or "doc[q] == doc[kv] && kv <= q".
 *               It is ANDed with p->mask (the built-in mask language; NULL = full).
 *   score_expr  float expression over float score (the scaled score after p->score_mod)
 *               and the same names, e.g. "score + bias[h]", "30.f * tanhf(score / 30.f)".
 *   arrays      read-only int32/float32 arrays named in the expressions as NAME[i]
 *               (an index outside [0, len) reads 0) and NAME.n (the length).
 *
 * Tiles are classified EMPTY/PARTIAL/FULL on the GPU by evaluating the whole mask
 * over every element, so EMPTY tiles are skipped and FULL ones run without it.
 * Expression plans always use the prefill kernel (also for q_len 1). Bad expressions
 * give FI_ERR_INVALID with the compiler's message. */
#define FI_CUDA_EXPR_MAX_ARRAYS 8

typedef enum fi_cuda_array_type { FI_CUDA_ARRAY_INT32 = 0, FI_CUDA_ARRAY_FLOAT32 = 1 } fi_cuda_array_type;

typedef struct fi_cuda_expr_array {
    const char *name;        /* C identifier */
    fi_cuda_array_type type;
    int64_t len;
    const void *data;        /* HOST memory; uploaded once per plan */
} fi_cuda_expr_array;

typedef struct fi_cuda_expr {
    const char *mask_expr;  /* NULL or "": no expression mask */
    const char *score_expr; /* NULL or "": no expression score modifier */
    int n_arrays;
    fi_cuda_expr_array arrays[FI_CUDA_EXPR_MAX_ARRAYS];
} fi_cuda_expr;

/* Compiled kernels by (expressions, array names and types, head dim, element type,
 * GPU architecture). Owned by the caller; it must outlive the plans that use it and
 * is not thread-safe (use one per thread). disk_dir (may be NULL) also keeps the
 * compiled code as files there, reused across processes. */
typedef struct fi_cuda_kernel_cache fi_cuda_kernel_cache;
fi_status fi_cuda_kernel_cache_create(const char *disk_dir, fi_cuda_kernel_cache **out, fi_error *err);
void fi_cuda_kernel_cache_free(fi_cuda_kernel_cache *cache);
typedef struct fi_cuda_kernel_cache_stats {
    int64_t compiles;    /* NVRTC compilations */
    int64_t memory_hits; /* kernels found already loaded */
    int64_t disk_hits;   /* kernels loaded from disk_dir */
} fi_cuda_kernel_cache_stats;
fi_cuda_kernel_cache_stats fi_cuda_kernel_cache_get_stats(const fi_cuda_kernel_cache *cache);

/* Plan / host-pointer forward with expressions. cache NULL: a private cache that
 * lives as long as the plan (every plan then compiles). x NULL: as without _expr. */
fi_status fi_cuda_attn_plan_create_expr(const fi_attn_params *p, const fi_cuda_expr *x,
                                        fi_cuda_kernel_cache *cache, fi_cuda_attn_plan **out,
                                        fi_error *err);
fi_status fi_cuda_attn_forward_expr(const fi_attn_params *p, const fi_cuda_expr *x,
                                    fi_cuda_kernel_cache *cache, fi_error *err);

/* True when a CUDA device is usable; fills err with the reason otherwise. */
bool fi_cuda_available(fi_error *err);

#ifdef __cplusplus
}
#endif
#endif /* FLEXINFER_CUDA_H */
