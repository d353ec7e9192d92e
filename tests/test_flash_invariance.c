/* Row invariance of fi_attn_forward: a query row's output and LSE must be bitwise the
 * same whichever rows share its call (chunked prefill == one call == one-token decode,
 * speculative verification == plain decoding). Causal mask with q_offset, and causal &
 * window:W (its far-edge tiles are PARTIAL and its early tiles EMPTY for later rows), GQA/MQA,
 * f32 and f16 inputs, for every SIMD path the machine has, at the default tile sizes
 * and at forced ones, without key splits (split-KV changes the summation order by
 * design). The reference row is the one computed in the single call over all rows;
 * every other call composition must reproduce it exactly (memcmp). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "flash_case.h"
#include "core/dtype.h"

typedef struct inv_shape {
    int64_t hq, hkv, dim, len; /* len = number of positions (queries and keys) */
    fi_dtype dtype;
    int32_t block_q, block_kv; /* 0 = defaults */
    const char *mask;          /* NULL = "causal" */
} inv_shape;

typedef struct inv_data {
    inv_shape s;
    void *q, *k, *v;           /* q [1, hq, len, dim], k and v [1, hkv, len, dim] */
    float *ref_out, *ref_lse;  /* [hq, len, dim], [hq, len] from the all-rows call */
    float *out, *lse;
    fi_mask *mask;
} inv_data;

static void *random_tensor(fi_test_rng *rng, int64_t n, fi_dtype t) {
    const size_t es = t == FI_DTYPE_F32 ? 4 : 2;
    void *p = malloc((size_t)n * es);
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) {
        const float x = (float)fi_test_rng_normal(rng);
        if (t == FI_DTYPE_F32) ((float *)p)[i] = x;
        else ((uint16_t *)p)[i] = fi_f32_to_f16(x);
    }
    return p;
}

/* Computes rows [r0, r1) (absolute positions) against keys [0, kv_len) into d->out/lse,
 * laid out [hq, r1 - r0, dim]. */
static void run_rows(inv_data *d, int64_t r0, int64_t r1, int64_t kv_len, int threads) {
    const inv_shape *s = &d->s;
    const size_t es = s->dtype == FI_DTYPE_F32 ? 4 : 2;
    fi_attn_params p;
    memset(&p, 0, sizeof p);
    p.q = fi_attn_tensor_contiguous((const char *)d->q + (size_t)(r0 * s->dim) * es, s->dtype, 1, s->hq, s->len,
                                    s->dim);
    p.q.len = r1 - r0; /* a view of rows r0.. of each head: head stride stays len * dim */
    p.k = fi_attn_tensor_contiguous(d->k, s->dtype, 1, s->hkv, s->len, s->dim);
    p.v = fi_attn_tensor_contiguous(d->v, s->dtype, 1, s->hkv, s->len, s->dim);
    p.k.len = p.v.len = kv_len;
    fi_mask_inputs mi;
    memset(&mi, 0, sizeof mi);
    mi.q_offset = r0;
    p.mask = d->mask;
    p.mask_in = &mi;
    p.out = d->out;
    p.lse = d->lse;
    p.threads = threads;
    p.num_splits = 1;
    p.block_q = s->block_q;
    p.block_kv = s->block_kv;
    fi_error err = {0};
    if (fi_attn_forward(&p, &err) != FI_OK) fail_msg("forward rows [%lld, %lld): %s", (long long)r0, (long long)r1, err.msg);
}

static void expect_same_rows(inv_data *d, int64_t r0, int64_t r1, int64_t kv_len, int threads, const char *simd) {
    const inv_shape *s = &d->s;
    run_rows(d, r0, r1, kv_len, threads);
    const int64_t n = r1 - r0;
    for (int64_t h = 0; h < s->hq; h++)
        for (int64_t t = 0; t < n; t++) {
            const float *got = d->out + (h * n + t) * s->dim, *want = d->ref_out + (h * s->len + r0 + t) * s->dim;
            const float gl = d->lse[h * n + t], wl = d->ref_lse[h * s->len + r0 + t];
            if (memcmp(got, want, (size_t)s->dim * sizeof(float)) != 0 || memcmp(&gl, &wl, sizeof gl) != 0) {
                int64_t c = 0;
                while (c < s->dim && memcmp(got + c, want + c, sizeof(float)) == 0) c++;
                fail_msg("simd %s, mask '%s', Hq %lld Hkv %lld D %lld %s, tiles %d x %d, %d threads: row %lld head %lld "
                         "differs between the call of rows [%lld, %lld) (keys %lld) and the call of all rows: "
                         "out[%lld] %.9g vs %.9g, lse %.9g vs %.9g",
                         simd, s->mask ? s->mask : "causal", (long long)s->hq, (long long)s->hkv, (long long)s->dim,
                         s->dtype == FI_DTYPE_F32 ? "f32" : "f16", s->block_q, s->block_kv, threads,
                         (long long)(r0 + t), (long long)h, (long long)r0, (long long)r1, (long long)kv_len,
                         (long long)(c < s->dim ? c : 0), c < s->dim ? got[c] : 0.0, c < s->dim ? want[c] : 0.0,
                         gl, wl);
            }
        }
}

static void check_shape(const inv_shape *shape, fi_test_rng *rng) {
    inv_data d;
    memset(&d, 0, sizeof d);
    d.s = *shape;
    const inv_shape *s = &d.s;
    d.q = random_tensor(rng, s->hq * s->len * s->dim, s->dtype);
    d.k = random_tensor(rng, s->hkv * s->len * s->dim, s->dtype);
    d.v = random_tensor(rng, s->hkv * s->len * s->dim, s->dtype);
    d.ref_out = malloc((size_t)(s->hq * s->len * s->dim) * sizeof(float));
    d.ref_lse = malloc((size_t)(s->hq * s->len) * sizeof(float));
    d.out = malloc((size_t)(s->hq * s->len * s->dim) * sizeof(float));
    d.lse = malloc((size_t)(s->hq * s->len) * sizeof(float));
    assert_true(d.ref_out && d.ref_lse && d.out && d.lse);
    fi_error err = {0};
    assert_int_equal(fi_mask_parse(s->mask ? s->mask : "causal", &d.mask, &err), FI_OK);

    const char *levels[3];
    const int n_levels = flash_simd_levels(levels);
    for (int li = 0; li < n_levels; li++) {
        setenv("FI_SIMD", levels[li], 1);
        /* Reference: every row in one call. */
        run_rows(&d, 0, s->len, s->len, 1);
        memcpy(d.ref_out, d.out, (size_t)(s->hq * s->len * s->dim) * sizeof(float));
        memcpy(d.ref_lse, d.lse, (size_t)(s->hq * s->len) * sizeof(float));
        /* Chunked prefill with random chunk lengths, keys up to the chunk's end
         * (the KV cache so far) and, alternately, all keys (the later ones masked). */
        for (int pass = 0; pass < 2; pass++) {
            int64_t r0 = 0;
            while (r0 < s->len) {
                const int64_t n = 1 + fi_test_rng_int(rng, 24);
                const int64_t r1 = r0 + n < s->len ? r0 + n : s->len;
                expect_same_rows(&d, r0, r1, pass == 0 ? r1 : s->len, 1, levels[li]);
                r0 = r1;
            }
        }
        /* One-token decode at random positions, and short windows ending at them
         * (speculative verification), also on 2 threads. */
        for (int i = 0; i < 6; i++) {
            const int64_t r = fi_test_rng_int(rng, s->len);
            expect_same_rows(&d, r, r + 1, r + 1, 1, levels[li]);
            const int64_t back = fi_test_rng_int(rng, 5), w0 = r - back < 0 ? 0 : r - back;
            expect_same_rows(&d, w0, r + 1, r + 1, 2, levels[li]);
        }
        /* The rows of the repro of the request: row 15 in [12, 16), [15, 16), [8, 16), [14, 20). */
        if (s->len >= 20) {
            expect_same_rows(&d, 12, 16, 16, 1, levels[li]);
            expect_same_rows(&d, 15, 16, 16, 1, levels[li]);
            expect_same_rows(&d, 8, 16, 16, 1, levels[li]);
            expect_same_rows(&d, 14, 20, 20, 1, levels[li]);
        }
    }
    unsetenv("FI_SIMD");
    fi_mask_free(d.mask);
    free(d.q), free(d.k), free(d.v), free(d.ref_out), free(d.ref_lse), free(d.out), free(d.lse);
}

static void test_row_invariance_causal_gqa(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("test_row_invariance_causal_gqa"));
    const inv_shape shapes[] = {
        {9, 3, 64, 40, FI_DTYPE_F32, 0, 0, NULL},     /* the repro of the request: GQA 3 */
        {8, 2, 128, 150, FI_DTYPE_F32, 0, 0, NULL},   /* GQA 4, D 128, uneven last tiles */
        {8, 1, 32, 90, FI_DTYPE_F32, 0, 0, NULL},     /* MQA (GQA 8) */
        {4, 4, 80, 70, FI_DTYPE_F32, 16, 32, NULL},   /* no GQA, D 80 padded, forced tiles */
        {6, 2, 96, 131, FI_DTYPE_F32, 48, 17, NULL},  /* odd tile sizes */
        {8, 2, 64, 100, FI_DTYPE_F16, 0, 0, NULL},    /* f16 inputs */
        {4, 1, 256, 37, FI_DTYPE_F16, 32, 16, NULL},  /* f16, D 256, MQA 4 */
        {3, 3, 64, 300, FI_DTYPE_F32, 0, 0, NULL},    /* no GQA at the default tiles (taller query tiles) */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_shape(&shapes[i], &rng);
}

/* Sliding window under causal: a row keeps keys (q - W, q]. Its first key tiles are EMPTY,
 * the tile holding q - W + 1 is PARTIAL with the kept keys at its end (the far edge), and
 * the interval-mask path runs PARTIAL tiles in 16-row blocks over the keys the block keeps;
 * none of that may depend on which rows share the call. Windows narrower than a tile, a
 * window that starts inside the first tile, and windows spanning several tiles. */
static void test_row_invariance_causal_window(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("test_row_invariance_causal_window"));
    const inv_shape shapes[] = {
        {8, 2, 128, 300, FI_DTYPE_F32, 0, 0, "causal & window:70"},   /* GQA 4, default tiles */
        {6, 3, 64, 200, FI_DTYPE_F32, 32, 16, "causal & window:33"},  /* window of ~2 key tiles */
        {4, 4, 80, 130, FI_DTYPE_F32, 48, 17, "causal & window:9"},   /* window narrower than a tile */
        {8, 1, 32, 150, FI_DTYPE_F32, 0, 0, "causal & window:140"},   /* MQA, window over most keys */
        {4, 2, 96, 160, FI_DTYPE_F16, 0, 0, "causal & window:100"},   /* f16 */
        {3, 3, 128, 320, FI_DTYPE_F32, 0, 0, "causal & window:150"},  /* no GQA, default tiles */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_shape(&shapes[i], &rng);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_invariance_causal_gqa),
        cmocka_unit_test(test_row_invariance_causal_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
