/* The attention problem, validated once and shared by every implementation
 * (the tiled kernel, split-KV decoding and the naive reference): sizes, and row
 * addressing for dense, varlen and paged layouts. */
#ifndef FI_ATTN_PROBLEM_H
#define FI_ATTN_PROBLEM_H

#include "flexinfer.h"

#define FI_ATTN_MAX_DIM 256

typedef struct fi_attn_problem {
    const fi_attn_params *p;
    int64_t n_batch; /* B, or the number of packed sequences (varlen) */
    int64_t hq, hkv, group, dim;
    float scale;
    bool varlen, paged;
    fi_dtype kv_dtype;
    fi_mask_inputs mask_in; /* copy of p->mask_in, zeroed when absent */
} fi_attn_problem;

/* Validates p (shapes, GQA ratio, dims, varlen offsets, page table, mask inputs). */
fi_status fi_attn_problem_init(fi_attn_problem *pr, const fi_attn_params *p, fi_error *err);

static inline int64_t fi_attn_q_len(const fi_attn_problem *pr, int64_t b) {
    if (pr->varlen) return pr->p->cu_seqlens_q[b + 1] - pr->p->cu_seqlens_q[b];
    return pr->p->q.len;
}

static inline int64_t fi_attn_kv_len(const fi_attn_problem *pr, int64_t b) {
    if (pr->paged) return pr->p->paged_kv->seq_lens[b];
    if (pr->varlen) return pr->p->cu_seqlens_k[b + 1] - pr->p->cu_seqlens_k[b];
    return pr->p->k.len;
}

/* Element offset of row i of a view for (batch-or-sequence b, head h). */
static inline int64_t fi_attn_row_offset(const fi_attn_problem *pr, const fi_attn_tensor *t,
                                         const int32_t *cu, int64_t b, int64_t h, int64_t i) {
    if (pr->varlen) return h * t->stride_head + ((int64_t)cu[b] + i) * t->stride_len;
    return b * t->stride_batch + h * t->stride_head + i * t->stride_len;
}

static inline const void *fi_attn_q_row(const fi_attn_problem *pr, int64_t b, int64_t h, int64_t i) {
    const fi_attn_tensor *t = &pr->p->q;
    return (const char *)t->data +
           fi_attn_row_offset(pr, t, pr->p->cu_seqlens_q, b, h, i) * (int64_t)fi_dtype_size(t->dtype);
}

static inline const void *fi_attn_kv_row(const fi_attn_problem *pr, bool is_v, int64_t b,
                                         int64_t hkv, int64_t j) {
    if (pr->paged) {
        const fi_paged_kv *pk = pr->p->paged_kv;
        int64_t page = pk->page_table[b * pk->max_pages_per_seq + j / pk->page_size];
        int64_t off = ((page * pk->heads + hkv) * pk->page_size + j % pk->page_size) * pk->dim;
        return (const char *)(is_v ? pk->v_pages : pk->k_pages) + off * (int64_t)fi_dtype_size(pk->dtype);
    }
    const fi_attn_tensor *t = is_v ? &pr->p->v : &pr->p->k;
    return (const char *)t->data +
           fi_attn_row_offset(pr, t, pr->p->cu_seqlens_k, b, hkv, j) * (int64_t)fi_dtype_size(t->dtype);
}

/* Output rows are contiguous [B, Hq, Lq, D] (varlen: [1, Hq, total_q, D]). */
static inline int64_t fi_attn_out_index(const fi_attn_problem *pr, int64_t b, int64_t h, int64_t i) {
    if (pr->varlen) return h * pr->p->q.len + pr->p->cu_seqlens_q[b] + i;
    return (b * pr->hq + h) * pr->p->q.len + i;
}

#endif
