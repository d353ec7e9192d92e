/* The KV cache of one sequence, paged from the start: per layer a pool of fixed-size pages laid
 * out as fi_paged_kv wants ([n_pages, heads, page_size, dim], dim contiguous) plus the sequence's
 * page table. Today the policy is trivial (pages are handed out in order, the cache is sized to
 * the context and refuses to grow past it); the bounded KV cache replaces the policy behind the
 * same append / truncate / reset calls. */
#ifndef FI_KV_KV_CACHE_H
#define FI_KV_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "flexinfer.h"

typedef struct fi_kv_cache_config {
    int64_t n_layers, heads, dim;
    int64_t capacity;  /* tokens the cache must hold (the context) */
    int64_t page_size; /* tokens per page; 0 = 64 */
    fi_dtype dtype;    /* FI_DTYPE_F32 or FI_DTYPE_F16 */
} fi_kv_cache_config;

typedef struct fi_kv_cache fi_kv_cache;

fi_status fi_kv_cache_create(const fi_kv_cache_config *cfg, fi_kv_cache **out, fi_error *err);
void fi_kv_cache_free(fi_kv_cache *c);

int64_t fi_kv_cache_len(const fi_kv_cache *c);      /* tokens stored */
int64_t fi_kv_cache_capacity(const fi_kv_cache *c); /* tokens it can hold */
size_t fi_kv_cache_bytes(const fi_kv_cache *c);     /* memory of the pools */

/* Makes room for n more tokens (positions len .. len+n-1): maps their pages. Does not change len:
 * the forward writes the rows, then fi_kv_cache_commit makes them visible. FI_ERR_INVALID with a
 * message when the capacity would be exceeded. */
fi_status fi_kv_cache_reserve(fi_kv_cache *c, int64_t n, fi_error *err);
void fi_kv_cache_commit(fi_kv_cache *c, int64_t n);
/* Pointers to the K and V rows of logical position pos, head h, layer l.
 * pos must be reserved. Rows are `dim` elements of the cache dtype. */
void *fi_kv_cache_k_row(fi_kv_cache *c, int64_t layer, int64_t pos, int64_t h);
void *fi_kv_cache_v_row(fi_kv_cache *c, int64_t layer, int64_t pos, int64_t h);
/* Drops every token at position >= len (len <= current length). */
void fi_kv_cache_truncate(fi_kv_cache *c, int64_t len);
void fi_kv_cache_reset(fi_kv_cache *c);

/* The layer's K/V as the attention core reads them, for a sequence of n_keys keys (n_keys may
 * include reserved, not yet committed tokens). The view points into the cache and stays valid
 * until the next reserve/truncate/reset; seq_len storage lives in `seq_len`. */
fi_paged_kv fi_kv_cache_view(const fi_kv_cache *c, int64_t layer, int64_t n_keys, int32_t *seq_len);

#endif /* FI_KV_KV_CACHE_H */
