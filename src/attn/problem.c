#include "attn/problem.h"

#include <math.h>

#include "core/error.h"

static fi_status check_view(const fi_attn_tensor *t, const char *name, fi_error *err) {
    if (!t->data) return fi_error_set(err, FI_ERR_INVALID, "%s: no data", name);
    if (t->dtype != FI_DTYPE_F32 && t->dtype != FI_DTYPE_F16 && t->dtype != FI_DTYPE_BF16)
        return fi_error_set(err, FI_ERR_INVALID, "%s: unsupported dtype %d (f32, f16, bf16)", name,
                            (int)t->dtype);
    if (t->batch <= 0 || t->heads <= 0 || t->len < 0 || t->dim <= 0)
        return fi_error_set(err, FI_ERR_INVALID,
                            "%s: bad shape [%lld, %lld, %lld, %lld] (batch, heads, dim must be > 0)",
                            name, (long long)t->batch, (long long)t->heads, (long long)t->len,
                            (long long)t->dim);
    if (t->stride_len < t->dim || t->stride_batch < 0 || t->stride_head < 0)
        return fi_error_set(err, FI_ERR_INVALID, "%s: strides overlap the contiguous last axis", name);
    return FI_OK;
}

static fi_status check_cu(const int32_t *cu, int64_t n, int64_t total, const char *name,
                          fi_error *err) {
    if (!cu) return fi_error_set(err, FI_ERR_INVALID, "varlen: %s is missing", name);
    if (cu[0] != 0) return fi_error_set(err, FI_ERR_INVALID, "varlen: %s[0] must be 0", name);
    for (int64_t i = 0; i < n; i++)
        if (cu[i + 1] < cu[i])
            return fi_error_set(err, FI_ERR_INVALID, "varlen: %s is not non-decreasing at %lld",
                                name, (long long)i);
    if (cu[n] != total)
        return fi_error_set(err, FI_ERR_INVALID, "varlen: %s[%lld] = %d but the packed length is %lld",
                            name, (long long)n, cu[n], (long long)total);
    return FI_OK;
}

fi_status fi_attn_problem_init(fi_attn_problem *pr, const fi_attn_params *p, fi_error *err) {
    fi_status st;
    *pr = (fi_attn_problem){.p = p};
    if (!p->out) return fi_error_set(err, FI_ERR_INVALID, "attention: no output buffer");
    if ((st = check_view(&p->q, "q", err))) return st;
    pr->paged = p->paged_kv != NULL;
    pr->varlen = p->cu_seqlens_q != NULL;
    pr->hq = p->q.heads;
    pr->dim = p->q.dim;
    if (pr->dim > FI_ATTN_MAX_DIM)
        return fi_error_set(err, FI_ERR_INVALID, "head dim %lld is larger than the maximum %d",
                            (long long)pr->dim, FI_ATTN_MAX_DIM);
    if (pr->paged) {
        const fi_paged_kv *pk = p->paged_kv;
        if (pr->varlen)
            return fi_error_set(err, FI_ERR_UNSUPPORTED, "paged K/V with varlen queries is not supported");
        if (!pk->k_pages || !pk->v_pages || !pk->page_table || !pk->seq_lens)
            return fi_error_set(err, FI_ERR_INVALID, "paged K/V: pages, page table and seq_lens are required");
        if (pk->page_size <= 0 || pk->n_pages <= 0 || pk->heads <= 0 || pk->max_pages_per_seq <= 0)
            return fi_error_set(err, FI_ERR_INVALID, "paged K/V: sizes must be positive");
        if (pk->dim != pr->dim)
            return fi_error_set(err, FI_ERR_INVALID, "paged K/V: head dim %lld != q head dim %lld",
                                (long long)pk->dim, (long long)pr->dim);
        pr->hkv = pk->heads;
        pr->kv_dtype = pk->dtype;
        pr->n_batch = p->q.batch;
        for (int64_t b = 0; b < pr->n_batch; b++) {
            int64_t n = pk->seq_lens[b];
            if (n < 0 || n > pk->max_pages_per_seq * pk->page_size)
                return fi_error_set(err, FI_ERR_INVALID, "paged K/V: seq_lens[%lld] = %lld exceeds the page table",
                                    (long long)b, (long long)n);
            for (int64_t j = 0; j < (n + pk->page_size - 1) / pk->page_size; j++) {
                int32_t page = pk->page_table[b * pk->max_pages_per_seq + j];
                if (page < 0 || page >= pk->n_pages)
                    return fi_error_set(err, FI_ERR_INVALID,
                                        "paged K/V: page_table[%lld][%lld] = %d is outside the pool of %lld pages",
                                        (long long)b, (long long)j, page, (long long)pk->n_pages);
            }
        }
    } else {
        if ((st = check_view(&p->k, "k", err))) return st;
        if ((st = check_view(&p->v, "v", err))) return st;
        if (p->k.dim != pr->dim || p->v.dim != pr->dim)
            return fi_error_set(err, FI_ERR_INVALID, "head dims differ: q %lld, k %lld, v %lld",
                                (long long)pr->dim, (long long)p->k.dim, (long long)p->v.dim);
        if (p->k.heads != p->v.heads || p->k.len != p->v.len || p->k.batch != p->v.batch)
            return fi_error_set(err, FI_ERR_INVALID, "k [%lld, %lld, %lld] and v [%lld, %lld, %lld] differ in shape",
                                (long long)p->k.batch, (long long)p->k.heads, (long long)p->k.len,
                                (long long)p->v.batch, (long long)p->v.heads, (long long)p->v.len);
        if (p->k.dtype != p->v.dtype)
            return fi_error_set(err, FI_ERR_INVALID, "k and v must have the same dtype");
        if (p->k.batch != p->q.batch)
            return fi_error_set(err, FI_ERR_INVALID, "batch differs: q %lld, k/v %lld",
                                (long long)p->q.batch, (long long)p->k.batch);
        pr->hkv = p->k.heads;
        pr->kv_dtype = p->k.dtype;
        if (pr->varlen) {
            if (p->q.batch != 1)
                return fi_error_set(err, FI_ERR_INVALID, "varlen: q/k/v must have batch 1");
            if (p->n_seqs <= 0) return fi_error_set(err, FI_ERR_INVALID, "varlen: n_seqs must be > 0");
            if ((st = check_cu(p->cu_seqlens_q, p->n_seqs, p->q.len, "cu_seqlens_q", err))) return st;
            if ((st = check_cu(p->cu_seqlens_k, p->n_seqs, p->k.len, "cu_seqlens_k", err))) return st;
            pr->n_batch = p->n_seqs;
        } else {
            pr->n_batch = p->q.batch;
        }
    }
    if (pr->hq % pr->hkv != 0)
        return fi_error_set(err, FI_ERR_INVALID,
                            "query heads (%lld) must be a multiple of key/value heads (%lld)",
                            (long long)pr->hq, (long long)pr->hkv);
    pr->group = pr->hq / pr->hkv;
    pr->scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)pr->dim));
    if (!isfinite(pr->scale)) return fi_error_set(err, FI_ERR_INVALID, "scale must be finite");
    if (p->mask_in) pr->mask_in = *p->mask_in;
    if (p->mask) {
        int64_t max_q = 0, max_kv = 0;
        for (int64_t b = 0; b < pr->n_batch; b++) {
            if (fi_attn_q_len(pr, b) > max_q) max_q = fi_attn_q_len(pr, b);
            if (fi_attn_kv_len(pr, b) > max_kv) max_kv = fi_attn_kv_len(pr, b);
        }
        if ((st = fi_mask_validate_inputs(p->mask, &pr->mask_in, pr->n_batch, max_q, max_kv, err)))
            return st;
    }
    return FI_OK;
}

fi_attn_tensor fi_attn_tensor_contiguous(const void *data, fi_dtype dtype, int64_t batch,
                                         int64_t heads, int64_t len, int64_t dim) {
    return (fi_attn_tensor){.data = data, .dtype = dtype, .batch = batch, .heads = heads,
                            .len = len, .dim = dim, .stride_batch = heads * len * dim,
                            .stride_head = len * dim, .stride_len = dim};
}
