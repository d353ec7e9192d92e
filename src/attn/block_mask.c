/* Block masks: classify each (q-block, kv-block) as EMPTY / PARTIAL / FULL.
 *
 * Built-in primitives are classified analytically from the block's query range
 * (logical positions, shifted by q_offset) and key range, so a build costs
 * O(blocks x tree nodes) plus one pass over the segment ids. document/generated use
 * per-block summaries of the segment ids (min and max per block and batch row):
 * FULL and EMPTY are only claimed when they are certain, anything else is PARTIAL.
 * Callback leaves are scanned element by element, once per block. Combinators
 * follow three-valued logic: & is EMPTY if either side is, FULL if both are;
 * | is FULL if either side is, EMPTY if both are; ! swaps FULL and EMPTY. */
#include "attn/block_mask.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "attn/mask.h"
#include "core/error.h"

typedef struct block_ctx {
    const fi_mask_inputs *in;
    int64_t q_offset, q_len, kv_len;
    int64_t block_q, block_kv;
    int64_t n_q_blocks, n_kv_blocks;
    /* Segment summaries, [seg_rows, n_q_blocks] and [seg_rows, n_kv_blocks]. */
    int64_t seg_rows;
    int32_t *q_min, *q_max, *kv_min, *kv_max;
} block_ctx;

/* One block: logical query positions [q0, q1], keys [k0, k1] (inclusive). */
typedef struct block_box {
    int64_t b, h, qb, kb;
    int64_t q0, q1, k0, k1;
} block_box;

static fi_block_kind from_bounds(bool all, bool none) {
    return all ? FI_BLOCK_FULL : none ? FI_BLOCK_EMPTY : FI_BLOCK_PARTIAL;
}

static fi_block_kind scan_callback(const fi_mask *m, const block_box *x) {
    bool any_kept = false, any_masked = false;
    for (int64_t q = x->q0; q <= x->q1; q++)
        for (int64_t kv = x->k0; kv <= x->k1; kv++) {
            if (m->fn(x->b, x->h, q, kv, m->ctx))
                any_kept = true;
            else
                any_masked = true;
            if (any_kept && any_masked) return FI_BLOCK_PARTIAL;
        }
    return any_kept ? FI_BLOCK_FULL : FI_BLOCK_EMPTY;
}

static fi_block_kind classify(const fi_mask *m, const block_ctx *c, const block_box *x) {
    switch (m->op) {
    case FI_MASK_FULL: return FI_BLOCK_FULL;
    case FI_MASK_CAUSAL: return from_bounds(x->k1 <= x->q0, x->k0 > x->q1);
    case FI_MASK_WINDOW: {
        /* q - kv takes every integer value in [lo, hi] over the block. */
        const int64_t lo = x->q0 - x->k1, hi = x->q1 - x->k0, w = m->param;
        const int64_t max_abs = (lo < 0 ? -lo : lo) > (hi < 0 ? -hi : hi) ? (lo < 0 ? -lo : lo)
                                                                          : (hi < 0 ? -hi : hi);
        return from_bounds(max_abs < w, lo >= w || hi <= -w);
    }
    case FI_MASK_PREFIX: return from_bounds(x->k1 < m->param, x->k0 >= m->param);
    case FI_MASK_CHUNKED: {
        const int64_t size = m->param;
        const int64_t qc0 = x->q0 / size, qc1 = x->q1 / size, kc0 = x->k0 / size, kc1 = x->k1 / size;
        return from_bounds(qc0 == qc1 && kc0 == kc1 && qc0 == kc0, qc1 < kc0 || kc1 < qc0);
    }
    case FI_MASK_DOCUMENT: {
        const int64_t r = c->seg_rows > 1 ? x->b : 0;
        const int32_t qmin = c->q_min[r * c->n_q_blocks + x->qb], qmax = c->q_max[r * c->n_q_blocks + x->qb];
        const int32_t kmin = c->kv_min[r * c->n_kv_blocks + x->kb], kmax = c->kv_max[r * c->n_kv_blocks + x->kb];
        return from_bounds(qmin == qmax && kmin == kmax && qmin == kmin, qmax < kmin || kmax < qmin);
    }
    case FI_MASK_GENERATED: {
        const int64_t r = c->seg_rows > 1 ? x->b : 0;
        return from_bounds(c->q_max[r * c->n_q_blocks + x->qb] < 0, c->q_min[r * c->n_q_blocks + x->qb] >= 0);
    }
    case FI_MASK_CALLBACK: return scan_callback(m, x);
    case FI_MASK_AND: {
        fi_block_kind a = classify(m->lhs, c, x);
        if (a == FI_BLOCK_EMPTY) return FI_BLOCK_EMPTY;
        fi_block_kind b = classify(m->rhs, c, x);
        if (b == FI_BLOCK_EMPTY) return FI_BLOCK_EMPTY;
        return a == FI_BLOCK_FULL && b == FI_BLOCK_FULL ? FI_BLOCK_FULL : FI_BLOCK_PARTIAL;
    }
    case FI_MASK_OR: {
        fi_block_kind a = classify(m->lhs, c, x);
        if (a == FI_BLOCK_FULL) return FI_BLOCK_FULL;
        fi_block_kind b = classify(m->rhs, c, x);
        if (b == FI_BLOCK_FULL) return FI_BLOCK_FULL;
        return a == FI_BLOCK_EMPTY && b == FI_BLOCK_EMPTY ? FI_BLOCK_EMPTY : FI_BLOCK_PARTIAL;
    }
    case FI_MASK_NOT: {
        fi_block_kind a = classify(m->lhs, c, x);
        return a == FI_BLOCK_FULL ? FI_BLOCK_EMPTY : a == FI_BLOCK_EMPTY ? FI_BLOCK_FULL : FI_BLOCK_PARTIAL;
    }
    }
    return FI_BLOCK_PARTIAL;
}

/* Parameters of hand-built trees are checked here too (chunked:0 would divide by zero). */
static fi_status check_tree(const fi_mask *m, fi_error *err) {
    if (!m) return FI_OK;
    switch (m->op) {
    case FI_MASK_WINDOW:
    case FI_MASK_CHUNKED:
        if (m->param < 1)
            return fi_error_set(err, FI_ERR_INVALID, "block mask: %s size must be >= 1, got %lld",
                                m->op == FI_MASK_WINDOW ? "window" : "chunked", (long long)m->param);
        return FI_OK;
    case FI_MASK_PREFIX:
        if (m->param < 0)
            return fi_error_set(err, FI_ERR_INVALID, "block mask: prefix length must be >= 0, got %lld",
                                (long long)m->param);
        return FI_OK;
    case FI_MASK_CALLBACK:
        if (!m->fn) return fi_error_set(err, FI_ERR_INVALID, "block mask: callback is NULL");
        return FI_OK;
    case FI_MASK_AND:
    case FI_MASK_OR:
        if (!m->lhs || !m->rhs) return fi_error_set(err, FI_ERR_INVALID, "block mask: operator without operand");
        {
            fi_status st = check_tree(m->lhs, err);
            return st ? st : check_tree(m->rhs, err);
        }
    case FI_MASK_NOT:
        if (!m->lhs) return fi_error_set(err, FI_ERR_INVALID, "block mask: '!' without operand");
        return check_tree(m->lhs, err);
    default: return FI_OK;
    }
}

/* Min and max segment id of each block of positions [start + i*block, ...), per row. */
static void summarise(const fi_mask_inputs *in, int64_t rows, int64_t start, int64_t len,
                      int64_t block, int64_t n_blocks, int32_t *mins, int32_t *maxs) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t blk = 0; blk < n_blocks; blk++) {
            const int64_t lo = blk * block, hi = lo + block < len ? lo + block : len;
            int32_t mn = INT32_MAX, mx = INT32_MIN;
            for (int64_t i = lo; i < hi; i++) {
                const int32_t s = fi_mask_segment(in, r, start + i);
                if (s < mn) mn = s;
                if (s > mx) mx = s;
            }
            mins[r * n_blocks + blk] = mn;
            maxs[r * n_blocks + blk] = mx;
        }
}

/* a * b with an overflow check against limit. */
static bool mul_fits(int64_t a, int64_t b, int64_t limit, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a != 0 && b > limit / a) return false;
    *out = a * b;
    return true;
}

void fi_block_mask_free(fi_block_mask *bm) {
    if (!bm) return;
    free(bm->kv_num_blocks);
    free(bm->kv_indices);
    free(bm->full_kv_num_blocks);
    free(bm->full_kv_indices);
    free(bm);
}

fi_status fi_block_mask_build(const fi_mask *m, const fi_mask_inputs *in, int64_t batch,
                              int64_t heads, int64_t q_len, int64_t kv_len, int32_t block_q,
                              int32_t block_kv, fi_block_mask **out, fi_error *err) {
    if (!out) return fi_error_set(err, FI_ERR_INVALID, "block mask: no output pointer");
    *out = NULL;
    if (batch < 1 || heads < 1)
        return fi_error_set(err, FI_ERR_INVALID, "block mask: batch and heads must be >= 1 (got %lld, %lld)",
                            (long long)batch, (long long)heads);
    if (q_len < 0 || kv_len < 0)
        return fi_error_set(err, FI_ERR_INVALID, "block mask: lengths must be >= 0 (got %lld, %lld)",
                            (long long)q_len, (long long)kv_len);
    if (block_q < 1 || block_kv < 1)
        return fi_error_set(err, FI_ERR_INVALID, "block mask: block sizes must be >= 1 (got %d, %d)",
                            (int)block_q, (int)block_kv);
    const fi_mask_inputs no_inputs = {0};
    if (!in) in = &no_inputs;
    if (in->q_offset < 0 || in->q_offset > INT64_MAX - q_len)
        return fi_error_set(err, FI_ERR_INVALID, "block mask: q_offset %lld is out of range",
                            (long long)in->q_offset);
    fi_status st = check_tree(m, err);
    if (st) return st;
    if ((st = fi_mask_validate_inputs(m, in, batch, q_len, kv_len, err))) return st;

    const bool needs_segments = fi_mask_needs_segments(m);
    const bool per_batch = fi_mask_has_callback(m) || (needs_segments && in->segments_batch != 0);
    const int64_t out_batch = per_batch ? batch : 1;
    const int64_t out_heads = fi_mask_depends_on_head(m) ? heads : 1;
    const int64_t n_q_blocks = (q_len + block_q - 1) / block_q;
    const int64_t n_kv_blocks = (kv_len + block_kv - 1) / block_kv;
    if (n_kv_blocks > INT32_MAX)
        return fi_error_set(err, FI_ERR_INVALID, "block mask: %lld key blocks do not fit int32 indices",
                            (long long)n_kv_blocks);
    /* Index lists are [rows, n_kv_blocks] int32 each; refuse sizes that cannot be allocated. */
    const int64_t limit = (int64_t)(SIZE_MAX / 8 < (size_t)INT64_MAX ? SIZE_MAX / 8 : INT64_MAX);
    int64_t rows, cells;
    if (!mul_fits(out_batch, out_heads, limit, &rows) || !mul_fits(rows, n_q_blocks, limit, &rows) ||
        !mul_fits(rows, n_kv_blocks, limit, &cells))
        return fi_error_set(err, FI_ERR_INVALID, "block mask: too many blocks (batch %lld x heads %lld x %lld x %lld)",
                            (long long)out_batch, (long long)out_heads, (long long)n_q_blocks,
                            (long long)n_kv_blocks);

    block_ctx c = {.in = in, .q_offset = in->q_offset, .q_len = q_len, .kv_len = kv_len,
                   .block_q = block_q, .block_kv = block_kv, .n_q_blocks = n_q_blocks,
                   .n_kv_blocks = n_kv_blocks};
    fi_block_mask *bm = calloc(1, sizeof *bm);
    if (!bm) return fi_error_set(err, FI_ERR_NOMEM, "block mask: out of memory");
    *bm = (fi_block_mask){.q_len = q_len, .kv_len = kv_len, .q_offset = in->q_offset,
                          .block_q = block_q, .block_kv = block_kv, .n_q_blocks = n_q_blocks,
                          .n_kv_blocks = n_kv_blocks, .batch = out_batch, .heads = out_heads};
    /* calloc(0) may return NULL: always ask for at least one element. */
    bm->kv_num_blocks = calloc((size_t)(rows > 0 ? rows : 1), sizeof(int32_t));
    bm->full_kv_num_blocks = calloc((size_t)(rows > 0 ? rows : 1), sizeof(int32_t));
    bm->kv_indices = malloc((size_t)(cells > 0 ? cells : 1) * sizeof(int32_t));
    bm->full_kv_indices = malloc((size_t)(cells > 0 ? cells : 1) * sizeof(int32_t));
    if (needs_segments) {
        c.seg_rows = in->segments_batch != 0 ? in->segments_batch : 1;
        const size_t nq = (size_t)(c.seg_rows * n_q_blocks), nk = (size_t)(c.seg_rows * n_kv_blocks);
        c.q_min = malloc((nq ? nq : 1) * sizeof(int32_t));
        c.q_max = malloc((nq ? nq : 1) * sizeof(int32_t));
        c.kv_min = malloc((nk ? nk : 1) * sizeof(int32_t));
        c.kv_max = malloc((nk ? nk : 1) * sizeof(int32_t));
    }
    if (!bm->kv_num_blocks || !bm->full_kv_num_blocks || !bm->kv_indices || !bm->full_kv_indices ||
        (needs_segments && (!c.q_min || !c.q_max || !c.kv_min || !c.kv_max))) {
        free(c.q_min), free(c.q_max), free(c.kv_min), free(c.kv_max);
        fi_block_mask_free(bm);
        return fi_error_set(err, FI_ERR_NOMEM, "block mask: out of memory (%lld blocks)", (long long)cells);
    }
    if (needs_segments) {
        summarise(in, c.seg_rows, in->q_offset, q_len, block_q, n_q_blocks, c.q_min, c.q_max);
        summarise(in, c.seg_rows, 0, kv_len, block_kv, n_kv_blocks, c.kv_min, c.kv_max);
    }

    /* Rows are independent; threads only pay off for callback scans or huge grids
     * (callbacks must therefore be safe to call from several threads, like in the kernel). */
    const bool parallel = fi_mask_has_callback(m) || cells > (1 << 20);
#pragma omp parallel for schedule(dynamic, 4) if (parallel)
    for (int64_t row = 0; row < rows; row++) {
        const int64_t qb = row % n_q_blocks, bh = row / n_q_blocks;
        block_box x = {.b = bh / out_heads, .h = bh % out_heads, .qb = qb};
        x.q0 = in->q_offset + qb * block_q;
        x.q1 = in->q_offset + (qb * block_q + block_q < q_len ? qb * block_q + block_q : q_len) - 1;
        int32_t *partial = bm->kv_indices + row * n_kv_blocks, *full = bm->full_kv_indices + row * n_kv_blocks;
        int32_t n_partial = 0, n_full = 0;
        for (int64_t kb = 0; kb < n_kv_blocks; kb++) {
            x.kb = kb;
            x.k0 = kb * block_kv;
            x.k1 = (x.k0 + block_kv < kv_len ? x.k0 + block_kv : kv_len) - 1;
            const fi_block_kind kind = m ? classify(m, &c, &x) : FI_BLOCK_FULL;
            if (kind == FI_BLOCK_PARTIAL) partial[n_partial++] = (int32_t)kb;
            else if (kind == FI_BLOCK_FULL) full[n_full++] = (int32_t)kb;
        }
        /* Unused tails are zeroed so the arrays are fully defined. */
        memset(partial + n_partial, 0, (size_t)(n_kv_blocks - n_partial) * sizeof(int32_t));
        memset(full + n_full, 0, (size_t)(n_kv_blocks - n_full) * sizeof(int32_t));
        bm->kv_num_blocks[row] = n_partial;
        bm->full_kv_num_blocks[row] = n_full;
    }
    free(c.q_min), free(c.q_max), free(c.kv_min), free(c.kv_max);
    *out = bm;
    return FI_OK;
}

static bool list_contains(const int32_t *list, int32_t n, int64_t value) {
    int32_t lo = 0, hi = n;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (list[mid] < value) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && list[lo] == value;
}

fi_block_kind fi_block_mask_kind(const fi_block_mask *bm, int64_t b, int64_t h, int64_t q_block,
                                 int64_t kv_block) {
    if (!bm || q_block < 0 || q_block >= bm->n_q_blocks || kv_block < 0 || kv_block >= bm->n_kv_blocks ||
        b < 0 || h < 0 || (bm->batch > 1 && b >= bm->batch) || (bm->heads > 1 && h >= bm->heads))
        return FI_BLOCK_EMPTY;
    const int64_t row = fi_block_mask_row(bm, b, h, q_block);
    if (list_contains(bm->full_kv_indices + row * bm->n_kv_blocks, bm->full_kv_num_blocks[row], kv_block))
        return FI_BLOCK_FULL;
    if (list_contains(bm->kv_indices + row * bm->n_kv_blocks, bm->kv_num_blocks[row], kv_block))
        return FI_BLOCK_PARTIAL;
    return FI_BLOCK_EMPTY;
}

double fi_block_mask_block_density(const fi_block_mask *bm) {
    if (!bm || bm->q_len == 0 || bm->kv_len == 0) return 0.0;
    double computed = 0;
    for (int64_t bh = 0; bh < bm->batch * bm->heads; bh++)
        for (int64_t qb = 0; qb < bm->n_q_blocks; qb++) {
            const int64_t row = bh * bm->n_q_blocks + qb;
            const double rows_in_block = (double)fi_block_mask_q_rows(bm, qb);
            const int32_t *lists[2] = {bm->kv_indices + row * bm->n_kv_blocks,
                                       bm->full_kv_indices + row * bm->n_kv_blocks};
            const int32_t counts[2] = {bm->kv_num_blocks[row], bm->full_kv_num_blocks[row]};
            for (int l = 0; l < 2; l++)
                for (int32_t i = 0; i < counts[l]; i++)
                    computed += rows_in_block * (double)fi_block_mask_kv_cols(bm, lists[l][i]);
        }
    return computed / ((double)bm->batch * (double)bm->heads * (double)bm->q_len * (double)bm->kv_len);
}
