/* Tiled flash attention forward on the CPU: the driver.
 *
 * Work item = (sequence b, unit of query heads sharing one KV head, query tile), and
 * optionally a split of its key tiles. A unit is the whole GQA group when the block
 * mask is the same for every head (the usual case), so a K/V tile is read (and
 * converted, for f16/bf16) once and used by all query rows of all heads of the group;
 * rows are ordered [head in group][query in tile]. Scores are kept transposed (S^T),
 * see flash_tile.h. Items are scheduled dynamically over
 * OpenMP threads, latest query tiles first (they have the most keys under causal
 * masks). Tiles never straddle two varlen sequences: each sequence is tiled on its own.
 * Design notes: docs/attention-cpu.md. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attn/block_mask.h"
#include "attn/decode_split.h"
#include "attn/flash_tile.h"
#include "attn/mask.h"
#include "attn/problem.h"
#include "core/error.h"

#define FI_FLASH_DEFAULT_BLOCK_Q 64
#define FI_FLASH_DEFAULT_BLOCK_KV 64
/* Fewer rows than this use the row-major QK kernel (dot products per row) instead of
 * the register-blocked one over Q^T, whose SIMD lanes would be mostly padding. */
#define FI_FLASH_QT_MIN_ROWS 16

typedef struct flash_item {
    int32_t b, unit, qb;
} flash_item;

/* Kept-key interval of a mask that is an AND of interval primitives, for one query. */
typedef struct key_range {
    int64_t lo, hi; /* inclusive */
} key_range;

typedef struct flash_plan {
    fi_attn_problem pr;
    const fi_attn_params *p;
    const fi_flash_tile_ops *ops;
    const fi_block_mask *bm; /* NULL: every tile is FULL */
    int64_t bq, bkv, dimp;
    int64_t heads_per_unit, units_per_kv;
    int64_t max_q, max_kv, n_kv_blocks_max;
    int64_t rows_max, rowsp_max; /* query rows per item, and padded to FI_FLASH_ROW_ALIGN */
    int splits, threads;
    bool interval_mask; /* PARTIAL tiles can use key_range instead of fi_mask_keep */
    flash_item *items;
    int64_t n_items;
    float *part_o, *part_lse; /* splits > 1: [out row][split][dim], [out row][split] */
} flash_plan;

typedef struct flash_scratch {
    float *q, *qt, *o, *st, *k, *v, *m, *l, *alpha;
    int32_t *key_lo, *key_hi; /* PARTIAL tile of an interval mask: row r keeps keys [lo, hi) of the tile */
    int32_t *tiles;           /* kv tile index, negative-1 encoded for PARTIAL: -(kb + 1) */
} flash_scratch;

static bool mask_interval(const fi_mask *m, int64_t q, key_range *r) {
    switch (m->op) {
    case FI_MASK_FULL: r->lo = INT64_MIN / 4, r->hi = INT64_MAX / 4; return true;
    case FI_MASK_CAUSAL: r->lo = INT64_MIN / 4, r->hi = q; return true;
    case FI_MASK_WINDOW: r->lo = q - m->param + 1, r->hi = q + m->param - 1; return true;
    case FI_MASK_PREFIX: r->lo = INT64_MIN / 4, r->hi = m->param - 1; return true;
    case FI_MASK_CHUNKED: {
        const int64_t c0 = q / m->param * m->param;
        r->lo = c0, r->hi = c0 + m->param - 1;
        return true;
    }
    case FI_MASK_AND: {
        key_range a, b;
        if (!mask_interval(m->lhs, q, &a) || !mask_interval(m->rhs, q, &b)) return false;
        r->lo = a.lo > b.lo ? a.lo : b.lo;
        r->hi = a.hi < b.hi ? a.hi : b.hi;
        return true;
    }
    default: return false;
    }
}

static bool mask_is_interval(const fi_mask *m) {
    switch (m->op) {
    case FI_MASK_FULL:
    case FI_MASK_CAUSAL:
    case FI_MASK_WINDOW:
    case FI_MASK_PREFIX: return true;
    case FI_MASK_CHUNKED: return m->param > 0;
    case FI_MASK_AND: return mask_is_interval(m->lhs) && mask_is_interval(m->rhs);
    default: return false;
    }
}

static int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

static int resolve_threads(const fi_attn_params *p) {
    return p->threads > 0 ? p->threads : omp_get_max_threads();
}

/* Sizes shared by the planner and fi_attn_auto_splits. */
static fi_status plan_shape(flash_plan *pl, const fi_attn_params *p, fi_error *err) {
    fi_status st = fi_attn_problem_init(&pl->pr, p, err);
    if (st) return st;
    const fi_attn_problem *pr = &pl->pr;
    pl->p = p;
    pl->max_q = pl->max_kv = 0;
    for (int64_t b = 0; b < pr->n_batch; b++) {
        if (fi_attn_q_len(pr, b) > pl->max_q) pl->max_q = fi_attn_q_len(pr, b);
        if (fi_attn_kv_len(pr, b) > pl->max_kv) pl->max_kv = fi_attn_kv_len(pr, b);
    }
    const fi_block_mask *bm = p->block_mask;
    if (bm) {
        if (bm->block_q < 1 || bm->block_kv < 1 || bm->q_len != pl->max_q || bm->kv_len != pl->max_kv ||
            bm->q_offset != pr->mask_in.q_offset || (bm->batch != 1 && bm->batch != pr->n_batch) ||
            (bm->heads != 1 && bm->heads != pr->hq) ||
            bm->n_q_blocks != (pl->max_q + bm->block_q - 1) / bm->block_q ||
            bm->n_kv_blocks != (pl->max_kv + bm->block_kv - 1) / bm->block_kv || !bm->kv_num_blocks ||
            !bm->kv_indices || !bm->full_kv_num_blocks || !bm->full_kv_indices)
            return fi_error_set(err, FI_ERR_INVALID,
                                "block mask [%lld x %lld, q_offset %lld, batch %lld, heads %lld] does not "
                                "match the problem [%lld x %lld, q_offset %lld, batch %lld, heads %lld]",
                                (long long)bm->q_len, (long long)bm->kv_len, (long long)bm->q_offset,
                                (long long)bm->batch, (long long)bm->heads, (long long)pl->max_q,
                                (long long)pl->max_kv, (long long)pr->mask_in.q_offset,
                                (long long)pr->n_batch, (long long)pr->hq);
        pl->bq = bm->block_q;
        pl->bkv = bm->block_kv;
    } else {
        if (p->block_q < 0 || p->block_kv < 0)
            return fi_error_set(err, FI_ERR_INVALID, "tile sizes must be >= 0 (0 = default)");
        /* One head per item (no GQA group to stack) gets the level's taller query tile if it
         * has one: each K/V tile then serves more rows. Tile sizes never depend on Lq. */
        const bool one_head = pr->group == 1 || (p->mask && fi_mask_depends_on_head(p->mask));
        const int tall = fi_flash_tile_select()->block_q_one_head;
        pl->bq = p->block_q ? p->block_q : one_head && tall > 0 ? tall : FI_FLASH_DEFAULT_BLOCK_Q;
        pl->bkv = p->block_kv ? p->block_kv : FI_FLASH_DEFAULT_BLOCK_KV;
    }
    if (pl->bq > 4096 || pl->bkv > 4096)
        return fi_error_set(err, FI_ERR_INVALID, "tile sizes %lld x %lld are too large (max 4096)",
                            (long long)pl->bq, (long long)pl->bkv);
    /* A head-dependent mask has per-head tile lists: then every head is its own unit. */
    const bool per_head = (bm && bm->heads > 1) || (!bm && p->mask && fi_mask_depends_on_head(p->mask));
    pl->heads_per_unit = per_head ? 1 : pr->group;
    pl->units_per_kv = per_head ? pr->group : 1;
    pl->n_kv_blocks_max = (pl->max_kv + pl->bkv - 1) / pl->bkv;
    pl->threads = resolve_threads(p);
    if (p->num_splits < 0 || p->num_splits > 4096)
        return fi_error_set(err, FI_ERR_INVALID, "num_splits must be in [0, 4096] (got %d)", p->num_splits);
    return FI_OK;
}

static int64_t count_items(const flash_plan *pl) {
    int64_t n = 0;
    for (int64_t b = 0; b < pl->pr.n_batch; b++)
        n += (fi_attn_q_len(&pl->pr, b) + pl->bq - 1) / pl->bq * pl->pr.hkv * pl->units_per_kv;
    return n;
}

fi_status fi_flash_work_shape(const fi_attn_params *p, int64_t *work_items, int64_t *kv_blocks,
                              int *threads, fi_error *err) {
    flash_plan pl = {0};
    fi_status st = plan_shape(&pl, p, err);
    if (st) return st;
    *work_items = count_items(&pl);
    *kv_blocks = pl.n_kv_blocks_max;
    *threads = pl.threads;
    return FI_OK;
}

/* Lists the key tiles of one item in ascending order; PARTIAL ones encoded as -(kb+1).
 * Tiles past the sequence's own key length (varlen, paged) are dropped. */
static int64_t list_tiles(const flash_plan *pl, int64_t b, int64_t h, int64_t qb, int64_t n_kv_blocks,
                          int32_t *tiles) {
    const fi_block_mask *bm = pl->bm;
    if (!bm) {
        for (int64_t kb = 0; kb < n_kv_blocks; kb++) tiles[kb] = (int32_t)kb;
        return n_kv_blocks;
    }
    const int64_t row = fi_block_mask_row(bm, b, h, qb);
    const int32_t *part = bm->kv_indices + row * bm->n_kv_blocks, *full = bm->full_kv_indices + row * bm->n_kv_blocks;
    /* Counts are clamped and indices range-checked: a malformed list must not crash. */
    const int32_t cap = (int32_t)bm->n_kv_blocks;
    const int32_t np = bm->kv_num_blocks[row] < 0 ? 0 : bm->kv_num_blocks[row] > cap ? cap : bm->kv_num_blocks[row];
    const int32_t nf = bm->full_kv_num_blocks[row] < 0 ? 0 : bm->full_kv_num_blocks[row] > cap ? cap : bm->full_kv_num_blocks[row];
    int32_t i = 0, k = 0;
    int64_t n = 0;
    while (i < np || k < nf) {
        const bool take_partial = k >= nf || (i < np && part[i] < full[k]);
        const int32_t kb = take_partial ? part[i++] : full[k++];
        if (kb < 0 || kb >= n_kv_blocks || n >= n_kv_blocks) continue;
        tiles[n++] = take_partial ? -(kb + 1) : kb;
    }
    return n;
}

/* Converts rows [k0, k0 + nk) of K or V for (b, hkv) into a row-major f32 tile with
 * dimp columns (zero padded). Dense and paged rows go through the same code, so the
 * two layouts produce bit-identical tiles. */
static void load_kv_tile(const flash_plan *pl, bool is_v, int64_t b, int64_t hkv, int64_t k0, int64_t nk,
                         float *dst) {
    const int64_t d = pl->pr.dim, dimp = pl->dimp;
    for (int64_t j = 0; j < nk; j++) {
        float *row = dst + j * dimp;
        pl->ops->load_scaled(fi_attn_kv_row(&pl->pr, is_v, b, hkv, k0 + j), pl->pr.kv_dtype, 1.0f, row, d);
        for (int64_t c = d; c < dimp; c++) row[c] = 0.0f;
    }
}

/* Rows [k0, k0 + nk) as an f32 matrix with row stride *ld: read in place when they are
 * f32, need no padding and sit at one stride (dense, or inside one page); otherwise
 * converted into dst. Either way the values are the same, so dense and paged results
 * stay bit-identical. */
static const float *kv_tile(const flash_plan *pl, bool is_v, int64_t b, int64_t hkv, int64_t k0, int64_t nk,
                            float *dst, int64_t *ld) {
    const fi_attn_problem *pr = &pl->pr;
    if (pr->kv_dtype == FI_DTYPE_F32 && pr->dim == pl->dimp) {
        int64_t stride = -1;
        if (pr->paged) {
            const int64_t ps = pl->p->paged_kv->page_size;
            if (k0 / ps == (k0 + nk - 1) / ps) stride = pr->dim;
        } else {
            stride = (is_v ? pl->p->v : pl->p->k).stride_len;
        }
        if (stride > 0) {
            *ld = stride;
            return (const float *)fi_attn_kv_row(pr, is_v, b, hkv, k0);
        }
    }
    load_kv_tile(pl, is_v, b, hkv, k0, nk, dst);
    *ld = pl->dimp;
    return dst;
}

/* Element-level masking (masks that are not intervals) and score mods on an S^T tile
 * (after scaling). Interval masks are applied by mask_key_ranges instead. */
static void apply_mask_and_mods(const flash_plan *pl, float *st, int64_t lds, int64_t rows, int64_t nq,
                                int64_t b, int64_t h0, int64_t q0, int64_t k0, int64_t nk, bool partial) {
    const fi_attn_params *p = pl->p;
    const fi_mask_inputs *in = &pl->pr.mask_in;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t h = h0 + r / nq, qpos = in->q_offset + q0 + r % nq;
        float *col = st + r;
        if (partial && p->mask && !pl->interval_mask)
            for (int64_t j = 0; j < nk; j++)
                if (!fi_mask_keep(p->mask, in, b, h, qpos, k0 + j)) col[j * lds] = -INFINITY;
        if (p->score_mod)
            for (int64_t j = 0; j < nk; j++)
                if (col[j * lds] != -INFINITY)
                    col[j * lds] = fi_score_mod_apply(p->score_mod, col[j * lds], b, h, pl->pr.hq, qpos, k0 + j);
    }
}

/* PARTIAL tile of an interval mask: the keys [key_lo[r], key_hi[r]) of the tile that row r
 * keeps (empty when lo >= hi), for r < rows_all; rows past rows (padding) keep nothing. */
static void mask_key_ranges(const flash_plan *pl, flash_scratch *sc, int64_t rows, int64_t rows_all, int64_t nq,
                            int64_t q0, int64_t k0, int64_t nk) {
    for (int64_t r = 0; r < rows_all; r++) {
        int64_t lo = nk, hi = 0;
        if (r < rows) {
            key_range kr;
            mask_interval(pl->p->mask, pl->pr.mask_in.q_offset + q0 + r % nq, &kr);
            lo = kr.lo - k0 < 0 ? 0 : kr.lo - k0 > nk ? nk : kr.lo - k0;
            hi = kr.hi - k0 + 1 > nk ? nk : kr.hi - k0 + 1 < 0 ? 0 : kr.hi - k0 + 1;
        }
        sc->key_lo[r] = (int32_t)lo;
        sc->key_hi[r] = (int32_t)hi;
    }
}

/* The keys [*lo, *hi) that some row of [r0, r1) keeps (after mask_key_ranges); false if none. */
static bool block_key_span(const flash_scratch *sc, int64_t r0, int64_t r1, int64_t nk, int64_t *lo, int64_t *hi) {
    *lo = nk, *hi = 0;
    for (int64_t r = r0; r < r1; r++)
        if (sc->key_lo[r] < sc->key_hi[r]) {
            if (sc->key_lo[r] < *lo) *lo = sc->key_lo[r];
            if (sc->key_hi[r] > *hi) *hi = sc->key_hi[r];
        }
    return *lo < *hi;
}

static void fill_masked(float *st, int64_t lds, int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; j++)
        for (int64_t r = r0; r < r1; r++) st[j * lds + r] = -INFINITY;
}

/* Asks for the K and V rows of a coming tile: decode is bound by memory latency and
 * bandwidth, and the next tile's addresses are known (also across pages). Prefill
 * tiles too: a head's K/V rarely stay in L2 between query tiles, and the requests
 * cost little next to a tile's arithmetic. */
static void prefetch_tile(const flash_plan *pl, int64_t b, int64_t hkv, int64_t k0, int64_t nk) {
    const int64_t es = (int64_t)fi_dtype_size(pl->pr.kv_dtype), bytes = pl->pr.dim * es;
    for (int is_v = 0; is_v < 2; is_v++) {
        if (pl->pr.paged) { /* rows may change page anywhere: one lookup per row */
            for (int64_t j = 0; j < nk; j++) {
                const char *row = fi_attn_kv_row(&pl->pr, is_v, b, hkv, k0 + j);
                for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(row + off, 0, 1);
            }
            continue;
        }
        /* dense and varlen rows lie at one stride: no per-row address arithmetic */
        const char *row0 = fi_attn_kv_row(&pl->pr, is_v, b, hkv, k0);
        const int64_t stride = (is_v ? pl->p->v : pl->p->k).stride_len * es;
        for (int64_t j = 0; j < nk; j++)
            for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(row0 + j * stride + off, 0, 1);
    }
}

static void run_item(const flash_plan *pl, const flash_item *it, int split, flash_scratch *sc) {
    const fi_attn_problem *pr = &pl->pr;
    const fi_flash_tile_ops *ops = pl->ops;
    const int64_t b = it->b, qb = it->qb;
    const int64_t hkv = it->unit / pl->units_per_kv;
    const int64_t h0 = hkv * pr->group + (it->unit % pl->units_per_kv) * pl->heads_per_unit;
    const int64_t lq = fi_attn_q_len(pr, b), lk = fi_attn_kv_len(pr, b);
    const int64_t q0 = qb * pl->bq, nq = lq - q0 < pl->bq ? lq - q0 : pl->bq;
    const int64_t rows = nq * pl->heads_per_unit, d = pr->dim, dimp = pl->dimp;
    const int64_t rowsp = round_up(rows, FI_FLASH_ROW_ALIGN), lds = rowsp;
    /* A SIMD level without a Q^T kernel (ops->qk NULL) scores every row count row-major. */
    const bool use_qt = ops->qk && rows >= FI_FLASH_QT_MIN_ROWS;
    /* The few-row path pads rows only to the softmax's own step: fewer -inf fills and
     * exps of padding per key (decode has 4 rows of 16). */
    const int64_t rows_sm =
        use_qt ? rowsp : round_up(rows, ops->softmax_row_step > 0 ? ops->softmax_row_step : FI_FLASH_ROW_ALIGN);

    /* Q tile: converted and scaled once; transposed once when the Q^T kernel is used. */
    for (int64_t r = 0; r < rows; r++) {
        float *qrow = sc->q + r * dimp;
        ops->load_scaled(fi_attn_q_row(pr, b, h0 + r / nq, q0 + r % nq), pl->p->q.dtype, pr->scale, qrow, d);
        for (int64_t c = d; c < dimp; c++) qrow[c] = 0.0f;
    }
    if (use_qt)
        for (int64_t c = 0; c < dimp; c++) {
            float *dst = sc->qt + c * rowsp;
            for (int64_t r = 0; r < rows; r++) dst[r] = sc->q[r * dimp + c];
            for (int64_t r = rows; r < rowsp; r++) dst[r] = 0.0f;
        }
    for (int64_t r = 0; r < rowsp; r++) {
        sc->m[r] = -INFINITY;
        sc->l[r] = 0.0f;
    }
    memset(sc->o, 0, (size_t)(rows * dimp) * sizeof(float));

    const int64_t n_kv_blocks = (lk + pl->bkv - 1) / pl->bkv;
    const int64_t n_tiles = list_tiles(pl, b, h0, qb, n_kv_blocks, sc->tiles);
    const int64_t t0 = n_tiles * split / pl->splits, t1 = n_tiles * (split + 1) / pl->splits;
    for (int64_t t = t0; t < t1; t++) {
        const bool partial = sc->tiles[t] < 0;
        const int64_t kb = partial ? -(int64_t)sc->tiles[t] - 1 : sc->tiles[t];
        const int64_t k0 = kb * pl->bkv, nk = lk - k0 < pl->bkv ? lk - k0 : pl->bkv;
        /* Few rows (decode) stream K and V from memory with little arithmetic per byte: ask
         * two tiles ahead (the kernels also ask one tile ahead, spread over their loops).
         * Many rows: one tile ahead, unless the level's kernels ask for it themselves, spread
         * over their work (a burst of requests here stalled the tile being computed). */
        const int64_t ahead = rows < FI_FLASH_QT_MIN_ROWS ? 2 : 1;
        if (t + ahead < t1 && (ahead == 2 || !ops->kernels_prefetch_many_rows)) {
            const int64_t kn = sc->tiles[t + ahead] < 0 ? -(int64_t)sc->tiles[t + ahead] - 1 : sc->tiles[t + ahead];
            const int64_t k0n = kn * pl->bkv;
            prefetch_tile(pl, b, hkv, k0n, lk - k0n < pl->bkv ? lk - k0n : pl->bkv);
        }
        int64_t ld;
        const float *kk = kv_tile(pl, false, b, hkv, k0, nk, sc->k, &ld);
        /* Rows scored: rowsp over Q^T (padding rows score 0), else the real rows (padding up
         * to rows_sm is set to -inf below). */
        const int64_t rows_qk = use_qt ? rowsp : rows;
        /* A PARTIAL tile of an interval mask runs in blocks of FI_FLASH_ROW_ALIGN rows, each
         * over the keys that some row of the block keeps: the other keys of the block are
         * -inf for all its rows, so skipping them changes no bit (exp gives 0 and alpha is
         * the same; fma(0, v, o) = o). On a diagonal tile this skips about 3/8 of the work. */
        const bool ranged = partial && pl->interval_mask;
        const int64_t rb = ranged ? FI_FLASH_ROW_ALIGN : rows_qk;
        if (ranged) mask_key_ranges(pl, sc, rows, rows_qk, nq, q0, k0, nk);
        for (int64_t r0 = 0; r0 < rows_qk; r0 += rb) {
            const int64_t r1 = r0 + rb < rows_qk ? r0 + rb : rows_qk;
            int64_t lo = 0, hi = nk;
            if (ranged && !block_key_span(sc, r0, r1, nk, &lo, &hi)) {
                fill_masked(sc->st, lds, r0, r1, 0, nk);
                continue;
            }
            float *sb = sc->st + lo * lds + r0;
            if (use_qt) ops->qk(sc->qt + r0, rowsp, r1 - r0, kk + lo * ld, ld, hi - lo, dimp, sb, lds);
            else ops->qk_rows(sc->q + r0 * dimp, dimp, r1 - r0, kk + lo * ld, ld, hi - lo, dimp, sb, lds);
            if (ranged) {
                fill_masked(sc->st, lds, r0, r1, 0, lo);
                fill_masked(sc->st, lds, r0, r1, hi, nk);
                for (int64_t r = r0; r < r1; r++) {
                    const int64_t rlo = sc->key_lo[r] > lo ? sc->key_lo[r] : lo;
                    const int64_t rhi = sc->key_hi[r] < hi ? sc->key_hi[r] : hi;
                    if (rlo >= rhi) {
                        fill_masked(sc->st, lds, r, r + 1, lo, hi);
                    } else {
                        fill_masked(sc->st, lds, r, r + 1, lo, rlo);
                        fill_masked(sc->st, lds, r, r + 1, rhi, hi);
                    }
                }
            }
        }
        if (!use_qt) fill_masked(sc->st, lds, rows, rows_sm, 0, nk);
        if ((partial && !pl->interval_mask) || pl->p->score_mod)
            apply_mask_and_mods(pl, sc->st, lds, rows, nq, b, h0, q0, k0, nk, partial);
        ops->softmax(sc->st, lds, rows_sm, nk, sc->m, sc->l, sc->alpha);
        const float *vv = kv_tile(pl, true, b, hkv, k0, nk, sc->v, &ld);
        if (!ranged) {
            ops->pv(sc->st, lds, rows, nk, vv, ld, dimp, sc->alpha, sc->o, dimp);
            continue;
        }
        /* Rows of a block that keeps no key of this tile have alpha = 1 (m unchanged) or
         * O = 0 (nothing kept yet), so skipping them leaves O bitwise as it is. */
        for (int64_t r0 = 0; r0 < rows; r0 += rb) {
            const int64_t r1 = r0 + rb < rows ? r0 + rb : rows;
            int64_t lo, hi;
            if (!block_key_span(sc, r0, r1, nk, &lo, &hi)) continue;
            ops->pv(sc->st + lo * lds + r0, lds, r1 - r0, hi - lo, vv + lo * ld, ld, dimp, sc->alpha + r0,
                    sc->o + r0 * dimp, dimp);
        }
    }
    /* Finalise: O / l and LSE = m + log l; a row that kept nothing gets O = 0, LSE = -inf. */
    for (int64_t r = 0; r < rows; r++) {
        const int64_t out_row = fi_attn_out_index(pr, b, h0 + r / nq, q0 + r % nq);
        const float l = sc->l[r];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        const float lse = l > 0.0f ? sc->m[r] + logf(l) : -INFINITY;
        float *dst;
        if (pl->splits > 1) {
            dst = pl->part_o + (out_row * pl->splits + split) * d;
            pl->part_lse[out_row * pl->splits + split] = lse;
        } else {
            dst = pl->p->out + out_row * d;
            if (pl->p->lse) pl->p->lse[out_row] = lse;
        }
        const float *o = sc->o + r * dimp;
        for (int64_t c = 0; c < d; c++) dst[c] = o[c] * inv;
    }
}

/* Per-thread scratch, carved from one block (every piece a multiple of 16 floats). */
static void scratch_layout(const flash_plan *pl, float *base, flash_scratch *sc) {
    const int64_t R = pl->rowsp_max;
    float *f = base;
    sc->q = f, f += R * pl->dimp;
    sc->qt = f, f += R * pl->dimp;
    sc->o = f, f += R * pl->dimp;
    sc->st = f, f += R * pl->bkv;
    sc->k = f, f += pl->bkv * pl->dimp;
    sc->v = f, f += pl->bkv * pl->dimp;
    sc->m = f, f += R;
    sc->l = f, f += R;
    sc->alpha = f, f += R;
    sc->key_lo = (int32_t *)f, f += R;
    sc->key_hi = (int32_t *)f, f += R;
    sc->tiles = (int32_t *)f;
}

static int64_t scratch_floats(const flash_plan *pl) {
    const int64_t R = pl->rowsp_max;
    return 3 * R * pl->dimp + R * pl->bkv + 2 * pl->bkv * pl->dimp + 5 * R + round_up(pl->n_kv_blocks_max + 1, 16);
}

fi_status fi_attn_forward(const fi_attn_params *p, fi_error *err) {
    if (!p) return fi_error_set(err, FI_ERR_INVALID, "attention: no parameters");
    flash_plan pl = {0};
    fi_status st = plan_shape(&pl, p, err);
    if (st) return st;
    fi_block_mask *owned_bm = NULL;
    pl.bm = p->block_mask;
    if (!pl.bm && p->mask) {
        st = fi_block_mask_build(p->mask, &pl.pr.mask_in, pl.pr.n_batch, pl.pr.hq, pl.max_q, pl.max_kv,
                                 (int32_t)pl.bq, (int32_t)pl.bkv, &owned_bm, err);
        if (st) return st;
        pl.bm = owned_bm;
    }
    pl.ops = fi_flash_tile_select();
    pl.dimp = round_up(pl.pr.dim, FI_FLASH_DIM_ALIGN);
    pl.rows_max = pl.bq * pl.heads_per_unit;
    pl.rowsp_max = round_up(pl.rows_max, FI_FLASH_ROW_ALIGN);
    pl.interval_mask = p->mask && mask_is_interval(p->mask);
    pl.n_items = count_items(&pl);
    pl.splits = p->num_splits > 0 ? p->num_splits
                                  : fi_attn_split_heuristic(pl.n_items, pl.n_kv_blocks_max, pl.threads);

    const int64_t total_q = p->q.len * (pl.pr.varlen ? 1 : pl.pr.n_batch);
    const int64_t out_rows = total_q * pl.pr.hq;
    const int threads = pl.threads;
    const int64_t per_thread = scratch_floats(&pl);
    /* 64-byte aligned (every piece is a multiple of 16 floats): with malloc's 16-byte
     * alignment half of the 32-byte loads of Q, S^T and O split a cache line. */
    float *scratch = aligned_alloc(64, (size_t)round_up(per_thread * threads, 16) * sizeof(float));
    pl.items = malloc((size_t)(pl.n_items > 0 ? pl.n_items : 1) * sizeof *pl.items);
    if (pl.splits > 1) {
        pl.part_o = malloc((size_t)(out_rows * pl.splits * pl.pr.dim) * sizeof(float) + 1);
        pl.part_lse = malloc((size_t)(out_rows * pl.splits) * sizeof(float) + 1);
    }
    if (!scratch || !pl.items || (pl.splits > 1 && (!pl.part_o || !pl.part_lse))) {
        free(scratch), free(pl.items), free(pl.part_o), free(pl.part_lse);
        fi_block_mask_free(owned_bm);
        return fi_error_set(err, FI_ERR_NOMEM, "attention: out of memory (%d splits, %d threads)",
                            pl.splits, threads);
    }
    /* Latest query tiles first: under causal-like masks they carry the most keys. */
    int64_t n = 0;
    const int64_t max_qb = (pl.max_q + pl.bq - 1) / pl.bq;
    const int64_t units = pl.pr.hkv * pl.units_per_kv;
    for (int64_t qb = max_qb - 1; qb >= 0; qb--)
        for (int64_t b = 0; b < pl.pr.n_batch; b++) {
            if (qb * pl.bq >= fi_attn_q_len(&pl.pr, b)) continue;
            for (int64_t u = 0; u < units; u++) pl.items[n++] = (flash_item){(int32_t)b, (int32_t)u, (int32_t)qb};
        }

    const int64_t n_work = pl.n_items * pl.splits;
#pragma omp parallel num_threads(threads)
    {
        flash_scratch sc;
        scratch_layout(&pl, scratch + per_thread * omp_get_thread_num(), &sc);
#pragma omp for schedule(dynamic, 1)
        for (int64_t w = 0; w < n_work; w++) run_item(&pl, &pl.items[w / pl.splits], (int)(w % pl.splits), &sc);
        if (pl.splits > 1) {
#pragma omp for schedule(static)
            for (int64_t row = 0; row < out_rows; row++) {
                float lse;
                fi_attn_split_combine(pl.part_o + row * pl.splits * pl.pr.dim, pl.part_lse + row * pl.splits,
                                      pl.splits, pl.pr.dim, p->out + row * pl.pr.dim, &lse);
                if (p->lse) p->lse[row] = lse;
            }
        }
    }
    free(scratch), free(pl.items), free(pl.part_o), free(pl.part_lse);
    fi_block_mask_free(owned_bm);
    return FI_OK;
}
