/* Block masks against the element test: on random expression trees (every primitive,
 * callbacks, random sizes with short last blocks, q offsets, shared and per-batch
 * segment ids with negative ids) a FULL block never holds a masked element and an
 * EMPTY block never a kept one; single primitives are classified exactly; the
 * compressed lists are consistent; the block density matches the kinds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "attn/block_mask.h"
#include "attn/mask.h"
#include "test_support.h"

/* Callbacks: pure functions of their arguments, so they are safe from any thread. */
typedef struct cb_params {
    int kind;
    int64_t a, b, c;
} cb_params;

static bool cb_keep(int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    const cb_params *p = ctx;
    switch (p->kind) {
    case 0: { /* hashed noise: mostly PARTIAL blocks */
        uint64_t x = (uint64_t)(q * 1000003 + kv * 7919 + b * 31 + p->a);
        x ^= x >> 13;
        x *= 0x9E3779B97F4A7C15ull;
        return (x >> 60) < (uint64_t)p->b;
    }
    case 1: /* a head-dependent band: FULL and EMPTY blocks occur */
        return llabs(q - kv - h * p->a) < p->b;
    case 2: /* a per-batch prefix */
        return kv < p->a + b * p->b;
    default: /* a rectangle */
        return q >= p->a && kv >= p->b && kv < p->b + p->c;
    }
}

typedef struct tree_gen {
    fi_test_rng *r;
    cb_params cbs[64];
    int n_cbs;
} tree_gen;

static fi_mask *leaf(fi_mask_op op, int64_t param) {
    fi_mask *m = NULL;
    assert_int_equal(fi_mask_new_leaf(op, param, &m, NULL), FI_OK);
    return m;
}

static fi_mask *random_tree(tree_gen *g, int depth) {
    fi_test_rng *r = g->r;
    const int pick = (int)fi_test_rng_int(r, depth >= 3 ? 8 : 11);
    fi_mask *m = NULL;
    switch (pick) {
    case 0: return leaf(FI_MASK_FULL, 0);
    case 1: return leaf(FI_MASK_CAUSAL, 0);
    case 2: return leaf(FI_MASK_WINDOW, 1 + fi_test_rng_int(r, 24));
    case 3: return leaf(FI_MASK_PREFIX, fi_test_rng_int(r, 60));
    case 4: return leaf(FI_MASK_CHUNKED, 1 + fi_test_rng_int(r, 24));
    case 5: return leaf(FI_MASK_DOCUMENT, 0);
    case 6: return leaf(FI_MASK_GENERATED, 0);
    case 7: {
        if (g->n_cbs == 64) return leaf(FI_MASK_CAUSAL, 0);
        cb_params *p = &g->cbs[g->n_cbs++];
        *p = (cb_params){.kind = (int)fi_test_rng_int(r, 4), .a = fi_test_rng_int(r, 20),
                         .b = 1 + fi_test_rng_int(r, 15), .c = 1 + fi_test_rng_int(r, 30)};
        assert_int_equal(fi_mask_from_callback(cb_keep, p, p->kind == 1, &m, NULL), FI_OK);
        return m;
    }
    case 8: assert_int_equal(fi_mask_not(random_tree(g, depth + 1), &m, NULL), FI_OK); return m;
    case 9: assert_int_equal(fi_mask_and(random_tree(g, depth + 1), random_tree(g, depth + 1), &m, NULL), FI_OK); return m;
    default: assert_int_equal(fi_mask_or(random_tree(g, depth + 1), random_tree(g, depth + 1), &m, NULL), FI_OK); return m;
    }
}

/* Kinds decoded from the compressed lists alone, [batch, heads, nq, nkv]. Also checks the
 * lists: in range, strictly ascending, PARTIAL and FULL disjoint. */
static fi_block_kind *decode_lists(const fi_block_mask *bm) {
    const int64_t nq = bm->n_q_blocks, nk = bm->n_kv_blocks, rows = bm->batch * bm->heads * nq;
    fi_block_kind *kinds = calloc((size_t)(rows * nk + 1), sizeof *kinds);
    assert_non_null(kinds);
    for (int64_t row = 0; row < rows; row++) {
        const int32_t np = bm->kv_num_blocks[row], nf = bm->full_kv_num_blocks[row];
        assert_true(np >= 0 && nf >= 0 && np + nf <= nk);
        for (int l = 0; l < 2; l++) {
            const int32_t *idx = (l ? bm->full_kv_indices : bm->kv_indices) + row * nk;
            const int32_t n = l ? nf : np;
            for (int32_t i = 0; i < n; i++) {
                assert_true(idx[i] >= 0 && idx[i] < nk);
                if (i) assert_true(idx[i] > idx[i - 1]);
                assert_int_equal(kinds[row * nk + idx[i]], FI_BLOCK_EMPTY);
                kinds[row * nk + idx[i]] = l ? FI_BLOCK_FULL : FI_BLOCK_PARTIAL;
            }
        }
    }
    return kinds;
}

typedef struct case_stats {
    int64_t blocks, full, empty, partial, exact_misses;
} case_stats;

/* Checks one built block mask element by element; with `exact`, PARTIAL is only allowed
 * for blocks that really mix kept and masked elements. */
static void check_block_mask(const fi_mask *m, const fi_mask_inputs *in, int64_t batch, int64_t heads,
                             int64_t lq, int64_t lk, int32_t bq, int32_t bk, bool exact, case_stats *stats,
                             const char *what) {
    fi_block_mask *bm = NULL;
    fi_error err = {0};
    fi_status st = fi_block_mask_build(m, in, batch, heads, lq, lk, bq, bk, &bm, &err);
    if (st) fail_msg("%s: build failed: %s", what, err.msg);
    const bool per_batch = fi_mask_has_callback(m) || (fi_mask_needs_segments(m) && in->segments_batch != 0);
    assert_int_equal(bm->batch, per_batch ? batch : 1);
    assert_int_equal(bm->heads, fi_mask_depends_on_head(m) ? heads : 1);
    assert_int_equal(bm->n_q_blocks, (lq + bq - 1) / bq);
    assert_int_equal(bm->n_kv_blocks, (lk + bk - 1) / bk);
    assert_int_equal(bm->q_offset, in->q_offset);
    fi_block_kind *lists = decode_lists(bm);
    const int64_t nq = bm->n_q_blocks, nk = bm->n_kv_blocks;
    double computed = 0;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t qb = 0; qb < nq; qb++)
                for (int64_t kb = 0; kb < nk; kb++) {
                    const fi_block_kind kind = fi_block_mask_kind(bm, b, h, qb, kb);
                    const int64_t bb = bm->batch == 1 ? 0 : b, hh = bm->heads == 1 ? 0 : h;
                    assert_int_equal(kind, lists[((bb * bm->heads + hh) * nq + qb) * nk + kb]);
                    int64_t kept = 0, total = 0;
                    for (int64_t i = qb * bq; i < lq && i < (qb + 1) * bq; i++)
                        for (int64_t j = kb * bk; j < lk && j < (kb + 1) * bk; j++) {
                            kept += fi_mask_keep(m, in, b, h, in->q_offset + i, j);
                            total++;
                        }
                    if (kind == FI_BLOCK_FULL && kept != total)
                        fail_msg("%s: block (b%lld h%lld q%lld kv%lld) is FULL but %lld of %lld elements are masked",
                                 what, (long long)b, (long long)h, (long long)qb, (long long)kb,
                                 (long long)(total - kept), (long long)total);
                    if (kind == FI_BLOCK_EMPTY && kept != 0)
                        fail_msg("%s: block (b%lld h%lld q%lld kv%lld) is EMPTY but %lld elements are kept", what,
                                 (long long)b, (long long)h, (long long)qb, (long long)kb, (long long)kept);
                    const bool mixed = kept != 0 && kept != total;
                    if (kind == FI_BLOCK_PARTIAL && !mixed) {
                        stats->exact_misses++;
                        if (exact)
                            fail_msg("%s: block (b%lld q%lld kv%lld) is PARTIAL but %s", what, (long long)b,
                                     (long long)qb, (long long)kb, kept ? "every element is kept" : "none is kept");
                    }
                    if (kind != FI_BLOCK_EMPTY) computed += (double)total;
                    stats->blocks++;
                    stats->full += kind == FI_BLOCK_FULL;
                    stats->empty += kind == FI_BLOCK_EMPTY;
                    stats->partial += kind == FI_BLOCK_PARTIAL;
                }
    const double density = lq > 0 && lk > 0 ? computed / ((double)batch * heads * lq * lk) : 0.0;
    assert_float_equal(fi_block_mask_block_density(bm), density, 1e-12);
    /* Out-of-range blocks read as EMPTY instead of out of bounds. */
    assert_int_equal(fi_block_mask_kind(bm, 0, 0, nq, 0), FI_BLOCK_EMPTY);
    assert_int_equal(fi_block_mask_kind(bm, 0, 0, 0, nk), FI_BLOCK_EMPTY);
    free(lists);
    fi_block_mask_free(bm);
}

typedef struct random_problem {
    int64_t batch, heads, lq, lk, q_offset;
    int32_t bq, bk;
    int32_t *seg;
    fi_mask_inputs in;
} random_problem;

static void random_problem_init(random_problem *p, fi_test_rng *r, bool sorted) {
    p->batch = 1 + fi_test_rng_int(r, 3);
    p->heads = 1 + fi_test_rng_int(r, 3);
    p->lq = fi_test_rng_int(r, 8) == 0 ? fi_test_rng_int(r, 3) : 1 + fi_test_rng_int(r, 70);
    p->lk = fi_test_rng_int(r, 8) == 0 ? fi_test_rng_int(r, 3) : 1 + fi_test_rng_int(r, 70);
    p->q_offset = fi_test_rng_int(r, 2) ? 0 : fi_test_rng_int(r, 40);
    p->bq = (int32_t)(1 + fi_test_rng_int(r, 17));
    p->bk = (int32_t)(1 + fi_test_rng_int(r, 17));
    const int64_t seg_len = (p->lk > p->q_offset + p->lq ? p->lk : p->q_offset + p->lq) + fi_test_rng_int(r, 3);
    const bool shared = fi_test_rng_int(r, 2);
    const int64_t seg_rows = shared ? 1 : p->batch;
    p->seg = malloc((size_t)(seg_rows * seg_len + 1) * sizeof *p->seg);
    assert_non_null(p->seg);
    for (int64_t row = 0; row < seg_rows; row++) {
        int32_t id = (int32_t)fi_test_rng_int(r, 3) - 2;
        for (int64_t i = 0; i < seg_len; i++) {
            if (sorted) {
                if (fi_test_rng_int(r, 9) == 0) id += (int32_t)(1 + fi_test_rng_int(r, 2));
                p->seg[row * seg_len + i] = id;
            } else {
                p->seg[row * seg_len + i] = (int32_t)fi_test_rng_int(r, 6) - 2;
            }
        }
    }
    p->in = (fi_mask_inputs){.segments = p->seg, .segments_len = seg_len,
                             .segments_batch = shared ? 0 : seg_rows, .q_offset = p->q_offset};
}

static void test_random_trees_are_sound(void **state) {
    (void)state;
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("block_mask_random_trees"));
    case_stats stats = {0};
    for (int it = 0; it < 400; it++) {
        random_problem p;
        random_problem_init(&p, &r, fi_test_rng_int(&r, 2));
        tree_gen g = {.r = &r};
        fi_mask *m = random_tree(&g, 0);
        char what[1024], expr[900];
        fi_mask_format(m, expr, sizeof expr);
        snprintf(what, sizeof what, "it %d: '%s' B%lld H%lld Lq%lld Lk%lld off%lld blocks %dx%d", it, expr,
                 (long long)p.batch, (long long)p.heads, (long long)p.lq, (long long)p.lk,
                 (long long)p.q_offset, p.bq, p.bk);
        check_block_mask(m, &p.in, p.batch, p.heads, p.lq, p.lk, p.bq, p.bk, false, &stats, what);
        fi_mask_free(m);
        free(p.seg);
    }
    printf("random trees: %lld blocks, %lld full, %lld empty, %lld partial (%lld conservative)\n",
           (long long)stats.blocks, (long long)stats.full, (long long)stats.empty, (long long)stats.partial,
           (long long)stats.exact_misses);
    /* The generator must exercise every kind, or the soundness check proves little. */
    assert_true(stats.full > 1000 && stats.empty > 1000 && stats.partial > 1000);
}

static void test_primitives_are_exact(void **state) {
    (void)state;
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("block_mask_exact"));
    case_stats stats = {0};
    for (int it = 0; it < 300; it++) {
        random_problem p;
        random_problem_init(&p, &r, true);
        const int pick = (int)fi_test_rng_int(&r, 6);
        fi_mask *m = pick == 0   ? leaf(FI_MASK_CAUSAL, 0)
                     : pick == 1 ? leaf(FI_MASK_WINDOW, 1 + fi_test_rng_int(&r, 30))
                     : pick == 2 ? leaf(FI_MASK_PREFIX, fi_test_rng_int(&r, 80))
                     : pick == 3 ? leaf(FI_MASK_CHUNKED, 1 + fi_test_rng_int(&r, 30))
                     : pick == 4 ? leaf(FI_MASK_DOCUMENT, 0)
                                 : leaf(FI_MASK_GENERATED, 0);
        char what[256], expr[64];
        fi_mask_format(m, expr, sizeof expr);
        snprintf(what, sizeof what, "it %d: '%s' Lq%lld Lk%lld off%lld blocks %dx%d (sorted segments)", it, expr,
                 (long long)p.lq, (long long)p.lk, (long long)p.q_offset, p.bq, p.bk);
        check_block_mask(m, &p.in, p.batch, p.heads, p.lq, p.lk, p.bq, p.bk, true, &stats, what);
        fi_mask_free(m);
        free(p.seg);
    }
    assert_int_equal(stats.exact_misses, 0);
}

/* Hand-worked: causal, 4x4 with 2x2 blocks, and with q_offset 2 (the last two rows). */
static void test_hand_worked(void **state) {
    (void)state;
    fi_mask *m = leaf(FI_MASK_CAUSAL, 0);
    fi_block_mask *bm = NULL;
    assert_int_equal(fi_block_mask_build(m, NULL, 2, 4, 4, 4, 2, 2, &bm, NULL), FI_OK);
    assert_int_equal(bm->batch, 1);
    assert_int_equal(bm->heads, 1);
    assert_int_equal(bm->kv_num_blocks[0], 1);
    assert_int_equal(bm->kv_indices[0], 0);
    assert_int_equal(bm->full_kv_num_blocks[0], 0);
    assert_int_equal(bm->kv_num_blocks[1], 1);
    assert_int_equal(bm->kv_indices[2], 1);
    assert_int_equal(bm->full_kv_num_blocks[1], 1);
    assert_int_equal(bm->full_kv_indices[2], 0);
    /* 3 of 4 blocks computed. */
    assert_float_equal(fi_block_mask_block_density(bm), 0.75, 1e-15);
    fi_block_mask_free(bm);
    /* Queries at positions 2, 3 against 4 keys, blocks of 2 and 3: kv block 0 = {0,1,2} is
     * PARTIAL (q=2 cannot see... sees 0..2: FULL for q=2 and q=3) -> FULL; block 1 = {3}: PARTIAL. */
    const fi_mask_inputs in = {.q_offset = 2};
    assert_int_equal(fi_block_mask_build(m, &in, 1, 1, 2, 4, 2, 3, &bm, NULL), FI_OK);
    assert_int_equal(fi_block_mask_kind(bm, 0, 0, 0, 0), FI_BLOCK_FULL);
    assert_int_equal(fi_block_mask_kind(bm, 0, 0, 0, 1), FI_BLOCK_PARTIAL);
    fi_block_mask_free(bm);
    fi_mask_free(m);

    /* document over 3 documents of sizes 2, 3, 1 with blocks of 2 (shared ids). */
    static const int32_t seg[6] = {7, 7, 8, 8, 8, 9};
    const fi_mask_inputs din = {.segments = seg, .segments_len = 6};
    m = leaf(FI_MASK_DOCUMENT, 0);
    assert_int_equal(fi_block_mask_build(m, &din, 3, 2, 6, 6, 2, 2, &bm, NULL), FI_OK);
    assert_int_equal(bm->batch, 1);
    static const fi_block_kind expected[3][3] = {
        {FI_BLOCK_FULL, FI_BLOCK_EMPTY, FI_BLOCK_EMPTY},
        {FI_BLOCK_EMPTY, FI_BLOCK_FULL, FI_BLOCK_PARTIAL},
        {FI_BLOCK_EMPTY, FI_BLOCK_PARTIAL, FI_BLOCK_PARTIAL},
    };
    for (int qb = 0; qb < 3; qb++)
        for (int kb = 0; kb < 3; kb++) assert_int_equal(fi_block_mask_kind(bm, 2, 1, qb, kb), expected[qb][kb]);
    fi_block_mask_free(bm);
    fi_mask_free(m);
}

static void test_bad_input(void **state) {
    (void)state;
    fi_mask *causal = leaf(FI_MASK_CAUSAL, 0), *doc = leaf(FI_MASK_DOCUMENT, 0);
    fi_block_mask *bm = (fi_block_mask *)(uintptr_t)1;
    fi_error err = {0};
    assert_int_equal(fi_block_mask_build(causal, NULL, 1, 1, 8, 8, 0, 4, &bm, &err), FI_ERR_INVALID);
    assert_null(bm);
    assert_non_null(strstr(err.msg, "block sizes"));
    assert_int_equal(fi_block_mask_build(causal, NULL, 1, 1, 8, 8, 4, -1, &bm, &err), FI_ERR_INVALID);
    assert_int_equal(fi_block_mask_build(causal, NULL, 0, 1, 8, 8, 4, 4, &bm, &err), FI_ERR_INVALID);
    assert_int_equal(fi_block_mask_build(causal, NULL, 1, 1, -1, 8, 4, 4, &bm, &err), FI_ERR_INVALID);
    const fi_mask_inputs neg = {.q_offset = -1};
    assert_int_equal(fi_block_mask_build(causal, &neg, 1, 1, 8, 8, 4, 4, &bm, &err), FI_ERR_INVALID);
    assert_int_equal(fi_block_mask_build(doc, NULL, 1, 1, 8, 8, 4, 4, &bm, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "segment"));
    static const int32_t seg[8] = {0};
    const fi_mask_inputs short_seg = {.segments = seg, .segments_len = 8, .q_offset = 1};
    assert_int_equal(fi_block_mask_build(doc, &short_seg, 1, 1, 8, 8, 4, 4, &bm, &err), FI_ERR_INVALID);
    const fi_mask_inputs wrong_batch = {.segments = seg, .segments_len = 4, .segments_batch = 2};
    assert_int_equal(fi_block_mask_build(doc, &wrong_batch, 3, 1, 4, 4, 4, 4, &bm, &err), FI_ERR_INVALID);
    fi_mask *chunk0 = leaf(FI_MASK_CHUNKED, 0);
    assert_int_equal(fi_block_mask_build(chunk0, NULL, 1, 1, 8, 8, 4, 4, &bm, &err), FI_ERR_INVALID);
    assert_int_equal(fi_block_mask_build(causal, NULL, 1, 1, 8, 8, 4, 4, NULL, &err), FI_ERR_INVALID);
    /* Empty problems build empty masks. */
    assert_int_equal(fi_block_mask_build(causal, NULL, 1, 1, 0, 8, 4, 4, &bm, &err), FI_OK);
    assert_int_equal(bm->n_q_blocks, 0);
    assert_float_equal(fi_block_mask_block_density(bm), 0.0, 0);
    fi_block_mask_free(bm);
    /* NULL mask means full. */
    assert_int_equal(fi_block_mask_build(NULL, NULL, 1, 1, 5, 7, 2, 3, &bm, &err), FI_OK);
    assert_int_equal(fi_block_mask_kind(bm, 0, 0, 2, 2), FI_BLOCK_FULL);
    assert_float_equal(fi_block_mask_block_density(bm), 1.0, 1e-15);
    fi_block_mask_free(bm);
    fi_block_mask_free(NULL);
    fi_mask_free(causal);
    fi_mask_free(doc);
    fi_mask_free(chunk0);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Built-ins at 32768 x 32768 with blocks of 64 must be cheap (analytic, no element scan). */
static void test_build_cost(void **state) {
    (void)state;
    const int64_t n = 32768;
    int32_t *seg = malloc((size_t)n * sizeof *seg);
    assert_non_null(seg);
    for (int64_t i = 0; i < n; i++) seg[i] = (int32_t)(i / (n / 8));
    const fi_mask_inputs in = {.segments = seg, .segments_len = n};
    const char *exprs[] = {"causal", "causal & window:1024", "causal & (document | generated)",
                           "chunked:4096 | prefix:64"};
    for (size_t e = 0; e < sizeof exprs / sizeof exprs[0]; e++) {
        fi_mask *m = NULL;
        assert_int_equal(fi_mask_parse(exprs[e], &m, NULL), FI_OK);
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            fi_block_mask *bm = NULL;
            const double t0 = now_ms();
            assert_int_equal(fi_block_mask_build(m, &in, 1, 8, n, n, 64, 64, &bm, NULL), FI_OK);
            const double t = now_ms() - t0;
            if (t < best) best = t;
            fi_block_mask_free(bm);
        }
        printf("build %s, 32768 x 32768, blocks 64: %.2f ms\n", exprs[e], best);
        /* A few ms on a quiet machine; the bound leaves room for a loaded one and sanitizers. */
        assert_true(best < 250.0);
        fi_mask_free(m);
    }
    free(seg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_worked),  cmocka_unit_test(test_random_trees_are_sound),
        cmocka_unit_test(test_primitives_are_exact), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_build_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
