/* Paged KV cache of one sequence (see kv_cache.h). */
#include "kv/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

struct fi_kv_cache {
    fi_kv_cache_config cfg;
    int64_t n_pages;    /* pages per layer */
    size_t elem;        /* bytes per element */
    size_t page_bytes;  /* bytes of one page (all heads) */
    void **k_pool, **v_pool; /* [n_layers] pools of n_pages pages */
    int32_t *page_table;     /* [n_pages]: logical page -> physical page */
    int64_t n_mapped;        /* logical pages mapped */
    int64_t len, reserved;   /* committed tokens; tokens with pages */
};

fi_status fi_kv_cache_create(const fi_kv_cache_config *cfg, fi_kv_cache **out, fi_error *err) {
    *out = NULL;
    if (cfg->n_layers <= 0 || cfg->heads <= 0 || cfg->dim <= 0 || cfg->capacity <= 0 ||
        cfg->page_size < 0)
        return fi_error_set(err, FI_ERR_INVALID, "kv cache: bad configuration (layers %lld, heads %lld, dim %lld, capacity %lld)",
                            (long long)cfg->n_layers, (long long)cfg->heads, (long long)cfg->dim,
                            (long long)cfg->capacity);
    if (cfg->dtype != FI_DTYPE_F32 && cfg->dtype != FI_DTYPE_F16)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "kv cache: dtype %s not supported (f32, f16)",
                            fi_dtype_name(cfg->dtype));
    fi_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return fi_error_set(err, FI_ERR_NOMEM, "kv cache: out of memory");
    c->cfg = *cfg;
    if (c->cfg.page_size == 0) c->cfg.page_size = 64;
    c->elem = fi_dtype_size(cfg->dtype);
    c->n_pages = (cfg->capacity + c->cfg.page_size - 1) / c->cfg.page_size;
    c->page_bytes = (size_t)cfg->heads * (size_t)c->cfg.page_size * (size_t)cfg->dim * c->elem;
    c->k_pool = calloc((size_t)cfg->n_layers, sizeof(void *));
    c->v_pool = calloc((size_t)cfg->n_layers, sizeof(void *));
    c->page_table = calloc((size_t)c->n_pages, sizeof(int32_t));
    if (!c->k_pool || !c->v_pool || !c->page_table) goto nomem;
    size_t pool_bytes = c->page_bytes * (size_t)c->n_pages;
    pool_bytes = (pool_bytes + 63) / 64 * 64;
    for (int64_t l = 0; l < cfg->n_layers; l++) {
        c->k_pool[l] = aligned_alloc(64, pool_bytes);
        c->v_pool[l] = aligned_alloc(64, pool_bytes);
        if (!c->k_pool[l] || !c->v_pool[l]) goto nomem;
        /* Pages not yet written are never read (seq_len bounds the keys), but keep them defined. */
        memset(c->k_pool[l], 0, pool_bytes);
        memset(c->v_pool[l], 0, pool_bytes);
    }
    *out = c;
    return FI_OK;
nomem:
    fi_kv_cache_free(c);
    return fi_error_set(err, FI_ERR_NOMEM, "kv cache: out of memory for %lld tokens",
                        (long long)cfg->capacity);
}

void fi_kv_cache_free(fi_kv_cache *c) {
    if (!c) return;
    for (int64_t l = 0; l < c->cfg.n_layers; l++) {
        if (c->k_pool) free(c->k_pool[l]);
        if (c->v_pool) free(c->v_pool[l]);
    }
    free(c->k_pool);
    free(c->v_pool);
    free(c->page_table);
    free(c);
}

int64_t fi_kv_cache_len(const fi_kv_cache *c) { return c->len; }
int64_t fi_kv_cache_capacity(const fi_kv_cache *c) { return c->n_pages * c->cfg.page_size; }
size_t fi_kv_cache_bytes(const fi_kv_cache *c) {
    return 2 * c->page_bytes * (size_t)c->n_pages * (size_t)c->cfg.n_layers;
}

fi_status fi_kv_cache_reserve(fi_kv_cache *c, int64_t n, fi_error *err) {
    if (n < 0 || c->len + n > c->cfg.capacity)
        return fi_error_set(err, FI_ERR_INVALID,
                            "kv cache: %lld cached tokens plus %lld new ones exceed the context of %lld",
                            (long long)c->len, (long long)n, (long long)c->cfg.capacity);
    int64_t need = c->len + n;
    /* Policy of today: logical page i lives in physical page i. */
    while (c->n_mapped * c->cfg.page_size < need) {
        c->page_table[c->n_mapped] = (int32_t)c->n_mapped;
        c->n_mapped++;
    }
    c->reserved = need;
    return FI_OK;
}

void fi_kv_cache_commit(fi_kv_cache *c, int64_t n) {
    if (c->len + n <= c->reserved) c->len += n;
}

static void *row_at(const fi_kv_cache *c, void *pool, int64_t pos, int64_t h) {
    int64_t ps = c->cfg.page_size;
    int64_t page = c->page_table[pos / ps];
    size_t off = (size_t)page * c->page_bytes +
                 ((size_t)h * (size_t)ps + (size_t)(pos % ps)) * (size_t)c->cfg.dim * c->elem;
    return (char *)pool + off;
}

void *fi_kv_cache_k_row(fi_kv_cache *c, int64_t layer, int64_t pos, int64_t h) {
    return row_at(c, c->k_pool[layer], pos, h);
}
void *fi_kv_cache_v_row(fi_kv_cache *c, int64_t layer, int64_t pos, int64_t h) {
    return row_at(c, c->v_pool[layer], pos, h);
}

void fi_kv_cache_truncate(fi_kv_cache *c, int64_t len) {
    if (len < 0) len = 0;
    if (len < c->len) c->len = len;
    c->reserved = c->len;
}

void fi_kv_cache_reset(fi_kv_cache *c) {
    c->len = 0;
    c->reserved = 0;
}

fi_paged_kv fi_kv_cache_view(const fi_kv_cache *c, int64_t layer, int64_t n_keys, int32_t *seq_len) {
    *seq_len = (int32_t)n_keys;
    fi_paged_kv kv = {
        .k_pages = c->k_pool[layer],
        .v_pages = c->v_pool[layer],
        .dtype = c->cfg.dtype,
        .n_pages = c->n_pages,
        .page_size = c->cfg.page_size,
        .heads = c->cfg.heads,
        .dim = c->cfg.dim,
        .page_table = c->page_table,
        .max_pages_per_seq = c->n_pages,
        .seq_lens = seq_len,
    };
    return kv;
}
