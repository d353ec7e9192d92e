/* The problem as the CUDA kernels see it: device pointers, strides, the block
 * mask lists, the mask expression flattened into a postfix program and the score
 * modifiers. Filled once per plan by dispatch.cu and passed by value to kernels. */
#ifndef FI_CUDA_KERNEL_PARAMS_H
#define FI_CUDA_KERNEL_PARAMS_H

#include <stdint.h>

#define FI_CUDA_MAX_MASK_OPS 32
#define FI_CUDA_MAX_SCORE_STEPS 4
#define FI_CUDA_MAX_USER_ARRAYS 8 /* arrays that run-time compiled expressions may read */

/* Postfix mask program: leaves push a bool, AND/OR pop two and push one, NOT
 * flips the top. Evaluated only in PARTIAL blocks and in decode PARTIAL blocks. */
enum fi_cuda_mask_opcode {
    FI_CUDA_OP_FULL = 0,
    FI_CUDA_OP_CAUSAL,
    FI_CUDA_OP_WINDOW,
    FI_CUDA_OP_PREFIX,
    FI_CUDA_OP_CHUNKED,
    FI_CUDA_OP_DOCUMENT,
    FI_CUDA_OP_GENERATED,
    FI_CUDA_OP_AND,
    FI_CUDA_OP_OR,
    FI_CUDA_OP_NOT,
};

enum fi_cuda_score_kind { FI_CUDA_SCORE_SOFTCAP = 0, FI_CUDA_SCORE_ALIBI = 1 };

typedef struct fi_cuda_mask_op {
    int32_t op;
    int32_t pad;
    int64_t param;
} fi_cuda_mask_op;

typedef struct fi_cuda_attn_kparams {
    /* Dense (or varlen-packed) K/V, or the paged pool. Strides in elements. */
    const void *q, *k, *v;
    int64_t q_sb, q_sh, q_sl;
    int64_t k_sb, k_sh, k_sl;
    int64_t v_sb, v_sh, v_sl;
    int32_t paged;
    int32_t varlen;
    const void *k_pages, *v_pages;
    const int32_t *page_table, *seq_lens; /* device */
    int64_t page_size, max_pages;
    const int32_t *cu_q, *cu_k; /* device, varlen only */
    int64_t q_len, kv_len;      /* dense lengths (varlen/paged: maxima) */
    int64_t q_total;            /* rows of the output's length axis */

    float *out; /* [B, Hq, q_total, D] f32 */
    float *lse; /* [B, Hq, q_total] or NULL */

    int32_t batch, hq, hkv, group;
    float scale;      /* softmax scale */
    float scale_log2; /* scale * log2(e) */

    /* Block mask lists (device), broadcast over batch/heads when bm_batch/bm_heads == 1. */
    const int32_t *kv_num, *kv_idx, *full_num, *full_idx;
    int32_t bm_batch, bm_heads, n_q_blocks, n_kv_blocks;
    int32_t block_q, block_kv;

    /* Mask program (n_ops == 0: keep everything that the block lists name). */
    int32_t n_ops;
    fi_cuda_mask_op ops[FI_CUDA_MAX_MASK_OPS];
    const int32_t *segments; /* device */
    int64_t seg_len;
    int32_t seg_batch;
    int32_t seg_sorted; /* every segment row is non-decreasing: a document is one run of keys */
    int64_t q_offset;

    /* Score modifiers, applied in order to the scaled score. */
    int32_t n_steps;
    int32_t step_kind[FI_CUDA_MAX_SCORE_STEPS];
    float step_cap[FI_CUDA_MAX_SCORE_STEPS];
    const float *alibi_slopes; /* device [Hq] */

    /* Split-KV decode workspace. */
    int32_t num_splits;
    int32_t heads_per_cta; /* decode: query heads of one KV head handled by one CTA */
    float *ws_o;           /* [splits, B, Hq, D] */
    float *ws_lse;         /* [splits, B, Hq] */

    /* User arrays of run-time compiled mask/score expressions (nvrtc_program.cu):
     * device data and element counts; unused by the nvcc-built kernels. */
    const void *user_data[FI_CUDA_MAX_USER_ARRAYS];
    int64_t user_len[FI_CUDA_MAX_USER_ARRAYS];
} fi_cuda_attn_kparams;

#endif
