/* The model runtime on the real default model (skipped with a message when it is absent), and the
 * paged KV cache on its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cpu.h"
#include "flexinfer.h"
#include "kv/kv_cache.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "test_support.h"

static fi_model *g_model;
static char g_path[1024];

static int load_model(void **state) {
    (void)state;
    const char *env = getenv("FI_MODEL");
    const char *data = getenv("FI_TEST_DATA");
    if (env) snprintf(g_path, sizeof g_path, "%s", env);
    else snprintf(g_path, sizeof g_path, "%s/../../models/SmolLM2-135M-Instruct.Q4_1.gguf", data ? data : "tests/data");
    if (access(g_path, R_OK) != 0) {
        g_model = NULL;
        return 0;
    }
    fi_error err;
    if (fi_model_load(g_path, &g_model, &err) != FI_OK) {
        fprintf(stderr, "model load failed: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int free_model(void **state) {
    (void)state;
    fi_model_free(g_model);
    return 0;
}

#define NEED_MODEL()                                                                          \
    do {                                                                                      \
        if (!g_model) {                                                                       \
            printf("SKIP: %s is missing (run scripts/get_model.sh)\n", g_path);               \
            skip();                                                                           \
        }                                                                                     \
    } while (0)

/* Logits of every token of `ids`, evaluated in calls of `step` tokens on a session of batch `batch`. */
static float *eval_all(const int32_t *ids, int n, int batch, int threads, int step) {
    fi_session_params p = fi_session_default_params();
    p.n_ctx = 128;
    p.n_batch = batch;
    p.threads = threads;
    p.logits_all = true;
    fi_session *s;
    fi_error err;
    assert_int_equal(fi_session_create(g_model, &p, &s, &err), FI_OK);
    int64_t V = fi_model_n_vocab(g_model);
    float *out = malloc((size_t)n * (size_t)V * sizeof(float));
    assert_non_null(out);
    for (int i = 0; i < n; i += step) {
        int c = n - i < step ? n - i : step;
        assert_int_equal(fi_session_eval(s, ids + i, (size_t)c, out + (size_t)i * V, true, &err), FI_OK);
    }
    assert_int_equal(fi_session_n_past(s), n);
    fi_session_free(s);
    return out;
}

static void make_ids(int32_t *ids, int n, uint64_t seed) {
    fi_test_rng r;
    fi_test_rng_init(&r, seed);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(3 + fi_test_rng_int(&r, 20000));
}

static void test_threads_bit_identical(void **state) {
    (void)state;
    NEED_MODEL();
    int32_t ids[45];
    make_ids(ids, 45, fi_test_seed("llama_threads"));
    int64_t V = fi_model_n_vocab(g_model);
    float *a = eval_all(ids, 45, 16, 1, 45);
    float *b = eval_all(ids, 45, 16, 2, 45);
    float *c = eval_all(ids, 45, 16, 3, 45);
    assert_memory_equal(a, b, (size_t)45 * V * sizeof(float));
    assert_memory_equal(a, c, (size_t)45 * V * sizeof(float));
    free(a);
    free(b);
    free(c);
}

static void test_chunked_prefill(void **state) {
    (void)state;
    NEED_MODEL();
    enum { N = 60 };
    int32_t ids[N];
    make_ids(ids, N, fi_test_seed("llama_chunks"));
    int64_t V = fi_model_n_vocab(g_model);
    float *ref = eval_all(ids, N, 256, 2, N);
    /* The forward is batch-invariant: the matmuls compute each token the same way whatever the
     * batch, and the attention core each query row the same way whatever the rows beside it, so
     * chunked prefill (even one token at a time, as decode does) gives bit-identical logits. */
    const int batches[] = {1, 7, 16, 32};
    for (int k = 0; k < 4; k++) {
        float *got = eval_all(ids, N, batches[k], 2, N);
        assert_memory_equal(got, ref, (size_t)N * V * sizeof(float));
        free(got);
    }
    /* The same chunks fed one call at a time agree bitwise with one call. */
    float *one = eval_all(ids, N, 7, 2, 7);
    float *all = eval_all(ids, N, 7, 2, N);
    assert_memory_equal(one, all, (size_t)N * V * sizeof(float));
    free(one);
    free(all);
    free(ref);
}

static void test_truncate_replays(void **state) {
    (void)state;
    NEED_MODEL();
    int32_t ids[20];
    make_ids(ids, 20, fi_test_seed("llama_truncate"));
    int64_t V = fi_model_n_vocab(g_model);
    fi_session_params p = fi_session_default_params();
    p.n_ctx = 24;
    p.n_batch = 8;
    fi_session *s;
    fi_error err;
    assert_int_equal(fi_session_create(g_model, &p, &s, &err), FI_OK);
    float *a = malloc((size_t)V * sizeof(float)), *b = malloc((size_t)V * sizeof(float));
    assert_int_equal(fi_session_eval(s, ids, 20, a, false, &err), FI_OK);
    fi_session_truncate(s, 16); /* replay the last chunk (same chunking: bit-identical) */
    assert_int_equal(fi_session_n_past(s), 16);
    assert_int_equal(fi_session_eval(s, ids + 16, 4, b, false, &err), FI_OK);
    assert_memory_equal(a, b, (size_t)V * sizeof(float));
    /* context overflow: refused with a message, sequence unchanged */
    assert_int_equal(fi_session_eval(s, ids, 5, b, false, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "context of 24"));
    assert_int_equal(fi_session_n_past(s), 20);
    int32_t bad = (int32_t)V;
    assert_int_equal(fi_session_eval(s, &bad, 1, b, false, &err), FI_ERR_INVALID);
    assert_int_equal(fi_session_eval(s, ids, 2, b, true, &err), FI_ERR_INVALID); /* no logits_all */
    fi_session_reset(s);
    assert_int_equal(fi_session_n_past(s), 0);
    free(a);
    free(b);
    fi_session_free(s);
}

static void test_rope_formula(void **state) {
    (void)state;
    NEED_MODEL();
    const fi_llama_hparams *hp = fi_llama_hparams_of(g_model);
    /* theta = pos * scale * base^(-2i/d): within f32 rounding of the direct formula, and exactly
     * ggml's f32 evaluation (the power by repeated multiplication, docs/numerics.md) */
    const float theta_scale = powf(hp->rope_base, -2.0f / (float)hp->rope_dim);
    for (int64_t pos = 0; pos < 3000; pos += 37) {
        float th = (float)pos;
        for (int64_t i = 0; i < hp->rope_dim / 2; i++) {
            double want = (double)pos * hp->rope_scale * pow(hp->rope_base, -2.0 * (double)i / (double)hp->rope_dim);
            double got = fi_llama_rope_theta(g_model, pos, i);
            assert_true(fabs(got - want) <= 1e-5 * fabs(want));
            assert_true(got == (double)(hp->rope_scale * th));
            th *= theta_scale;
        }
    }
    /* adjacent-pair rotation on a tiny head, against the 2x2 rotation in double */
    float x[8] = {1, 2, -3, 0.5f, 4, -1, 0.25f, 7}, c[4], s[4];
    double th[4] = {0.3, -1.2, 2.5, 0.0};
    for (int i = 0; i < 4; i++) c[i] = (float)cos(th[i]), s[i] = (float)sin(th[i]);
    float y[8];
    memcpy(y, x, sizeof x);
    fi_llama_rope_apply(y, 6, c, s); /* rope_dim 6: the last pair stays */
    for (int i = 0; i < 3; i++) {
        double x0 = x[2 * i], x1 = x[2 * i + 1];
        assert_true(fabs(y[2 * i] - (x0 * cos(th[i]) - x1 * sin(th[i]))) < 1e-5);
        assert_true(fabs(y[2 * i + 1] - (x0 * sin(th[i]) + x1 * cos(th[i]))) < 1e-5);
    }
    assert_true(y[6] == x[6] && y[7] == x[7]);
    /* ggml's rounding: one fused multiply-add per output (C99 fmaf, correctly rounded), and the
     * AVX2 twin gives the same bytes, on random heads of every pair count up to 128 */
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("llama_rope_paths"));
    for (int iter = 0; iter < 200; iter++) {
        int64_t half = 1 + fi_test_rng_int(&rng, 128);
        float hx[256] = {0}, ha[256], hb[256], hc[128], hs[128];
        for (int64_t i = 0; i < half; i++) {
            double t = fi_test_rng_uniform(&rng, -3000, 3000);
            hc[i] = cosf((float)t), hs[i] = sinf((float)t);
            hx[2 * i] = (float)fi_test_rng_normal(&rng), hx[2 * i + 1] = (float)fi_test_rng_normal(&rng);
        }
        memcpy(ha, hx, sizeof hx);
        memcpy(hb, hx, sizeof hx);
        fi_llama_rope_apply(ha, 2 * half, hc, hs);
        for (int64_t i = 0; i < half; i++) {
            assert_true(ha[2 * i] == fmaf(hx[2 * i], hc[i], -(hx[2 * i + 1] * hs[i])));
            assert_true(ha[2 * i + 1] == fmaf(hx[2 * i], hs[i], hx[2 * i + 1] * hc[i]));
        }
        if (fi_cpu_simd_level() >= FI_SIMD_AVX2) {
            fi_llama_rope_apply_avx2(hb, 2 * half, hc, hs);
            assert_memory_equal(ha, hb, (size_t)(2 * half) * sizeof(float));
        }
    }
    /* the model metadata this check relies on */
    assert_int_equal(hp->n_embd, 576);
    assert_int_equal(hp->n_head, 9);
    assert_int_equal(hp->n_head_kv, 3);
    assert_true(hp->tied_output);
}

/* Stage trace (flexinfer logits --dump): it must not change a bit of the logits, report every stage
 * of every layer with its shape, and the first stages must be what they claim: the token
 * embedding rows (Q8_0 decoded here by hand) and their RMSNorm (in double, against the file's
 * weights). */
typedef struct trace_rec {
    int calls, embd_calls;
    int64_t n, E;
    float *embd, *attn_norm0;
    char order[16][16];
    int n_order;
} trace_rec;

static void record_stage(void *user, const char *name, int64_t layer, const float *data, int64_t rows, int64_t cols) {
    trace_rec *r = user;
    r->calls++;
    if (layer == 0 && r->n_order < 16) snprintf(r->order[r->n_order++], 16, "%s", name);
    if (!strcmp(name, "embd")) {
        r->embd_calls++;
        r->n = rows, r->E = cols;
        r->embd = malloc((size_t)(rows * cols) * sizeof(float));
        memcpy(r->embd, data, (size_t)(rows * cols) * sizeof(float));
    }
    if (!strcmp(name, "attn_norm") && layer == 0) {
        r->attn_norm0 = malloc((size_t)(rows * cols) * sizeof(float));
        memcpy(r->attn_norm0, data, (size_t)(rows * cols) * sizeof(float));
    }
}

static float f16_bits_to_f32(uint16_t h) { /* by hand: sign, 5-bit exponent, 10-bit mantissa */
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static void test_stage_trace(void **state) {
    (void)state;
    NEED_MODEL();
    const fi_llama_hparams *hp = fi_llama_hparams_of(g_model);
    int32_t ids[20];
    make_ids(ids, 20, fi_test_seed("llama_trace"));
    int64_t V = fi_model_n_vocab(g_model);
    float *plain = eval_all(ids, 20, 32, 2, 20);
    fi_session_params p = fi_session_default_params();
    p.n_ctx = 64;
    p.n_batch = 32;
    p.threads = 2;
    p.logits_all = true;
    fi_session *s;
    fi_error err;
    assert_int_equal(fi_session_create(g_model, &p, &s, &err), FI_OK);
    trace_rec r = {0};
    fi_session_set_trace(s, record_stage, &r);
    float *traced = malloc((size_t)20 * V * sizeof(float));
    assert_int_equal(fi_session_eval(s, ids, 20, traced, true, &err), FI_OK);
    assert_memory_equal(plain, traced, (size_t)20 * V * sizeof(float));
    assert_int_equal(fi_session_eval(s, ids, 1, traced, false, &err), FI_OK); /* one token: no trace */
    fi_session_free(s);
    assert_int_equal(r.embd_calls, 1);
    assert_int_equal(r.calls, 2 + 9 * (int)hp->n_layer); /* embd, result_norm, 9 stages per layer */
    const char *want[9] = {"attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "ffn_inp", "ffn_norm", "ffn_swiglu", "l_out"};
    assert_int_equal(r.n_order, 9);
    for (int i = 0; i < 9; i++) assert_string_equal(r.order[i], want[i]);
    assert_true(r.n == 20 && r.E == hp->n_embd);
    const fi_gguf_tensor *te = fi_gguf_find_tensor(fi_llama_gguf(g_model), "token_embd.weight");
    const fi_gguf_tensor *nw = fi_gguf_find_tensor(fi_llama_gguf(g_model), "blk.0.attn_norm.weight");
    assert_true(te && nw && nw->type == 0);
    if (te->type == 8) { /* Q8_0: 34-byte blocks, f16 scale then 32 int8 */
        for (int t = 0; t < 20; t++)
            for (int64_t c = 0; c < r.E; c++) {
                const uint8_t *blk = (const uint8_t *)te->data + ((size_t)ids[t] * (size_t)(r.E / 32) + (size_t)(c / 32)) * 34;
                float d = f16_bits_to_f32((uint16_t)(blk[0] | blk[1] << 8));
                assert_true(r.embd[t * r.E + c] == d * (float)(int8_t)blk[2 + c % 32]);
            }
    }
    const float *w = nw->data;
    for (int t = 0; t < 20; t++) {
        double ss = 0;
        for (int64_t c = 0; c < r.E; c++) ss += (double)r.embd[t * r.E + c] * r.embd[t * r.E + c];
        double scale = 1.0 / sqrt(ss / (double)r.E + (double)hp->norm_eps);
        for (int64_t c = 0; c < r.E; c++) {
            double want_v = r.embd[t * r.E + c] * scale * w[c];
            assert_true(fabs(r.attn_norm0[t * r.E + c] - want_v) <= 1e-6 * fabs(want_v) + 1e-30);
        }
    }
    free(r.embd);
    free(r.attn_norm0);
    free(plain);
    free(traced);
}

static void test_kv_cache(void **state) {
    (void)state;
    fi_kv_cache_config cfg = {.n_layers = 2, .heads = 3, .dim = 4, .capacity = 10, .page_size = 4,
                              .dtype = FI_DTYPE_F32};
    fi_kv_cache *c;
    fi_error err;
    assert_int_equal(fi_kv_cache_create(&cfg, &c, &err), FI_OK);
    assert_int_equal(fi_kv_cache_capacity(c), 12);
    assert_int_equal(fi_kv_cache_reserve(c, 6, &err), FI_OK);
    for (int64_t pos = 0; pos < 6; pos++)
        for (int64_t h = 0; h < 3; h++) {
            float *k = fi_kv_cache_k_row(c, 1, pos, h);
            for (int d = 0; d < 4; d++) k[d] = (float)(pos * 100 + h * 10 + d);
        }
    fi_kv_cache_commit(c, 6);
    assert_int_equal(fi_kv_cache_len(c), 6);
    int32_t len;
    fi_paged_kv kv = fi_kv_cache_view(c, 1, 6, &len);
    assert_int_equal(len, 6);
    /* the layout fi_paged_kv documents: page_table[j / ps], row j % ps, [page, head, row, dim] */
    for (int64_t j = 0; j < 6; j++)
        for (int64_t h = 0; h < 3; h++) {
            int64_t page = kv.page_table[j / kv.page_size];
            const float *row = (const float *)kv.k_pages +
                               ((page * kv.heads + h) * kv.page_size + j % kv.page_size) * kv.dim;
            assert_true(row[2] == (float)(j * 100 + h * 10 + 2));
        }
    assert_int_equal(fi_kv_cache_reserve(c, 5, &err), FI_ERR_INVALID); /* 6 + 5 > 10 */
    fi_kv_cache_truncate(c, 2);
    assert_int_equal(fi_kv_cache_len(c), 2);
    assert_int_equal(fi_kv_cache_reserve(c, 8, &err), FI_OK);
    fi_kv_cache_commit(c, 8);
    assert_int_equal(fi_kv_cache_len(c), 10);
    fi_kv_cache_reset(c);
    assert_int_equal(fi_kv_cache_len(c), 0);
    fi_kv_cache_free(c);
    cfg.dtype = FI_DTYPE_BF16;
    assert_int_equal(fi_kv_cache_create(&cfg, &c, &err), FI_ERR_UNSUPPORTED);
}

static void test_load_errors(void **state) {
    (void)state;
    fi_model *m = NULL;
    fi_error err;
    assert_int_not_equal(fi_model_load("/nonexistent/model.gguf", &m, &err), FI_OK);
    assert_null(m);
}

/* SwiGLU's exponential against double-precision exp, and the AVX2 twin byte for byte against the
 * scalar one, over the whole input range (clamped ends, zero, tiny and huge values). */
static void test_swiglu(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("swiglu"));
    int misrounded = 0;
    for (int i = 0; i < 200000; i++) {
        const float t = (float)fi_test_rng_uniform(&rng, -110.0, 95.0);
        const float got = fi_llama_exp(t), want = (float)exp((double)t); /* double exp: < 1 ulp of double */
        if (got != want) { /* only a near tie may round the other way, and by one f32 ulp */
            misrounded++;
            const double ulp = fabs((double)nextafterf(want, INFINITY) - want);
            assert_true(fabs((double)got - exp((double)t)) <= 0.5001 * ulp);
        }
    }
    assert_true(misrounded <= 2);
    assert_true(isinf(fi_llama_exp(88.8f)) && isinf(fi_llama_exp(1000.0f)) && fi_llama_exp(-1000.0f) == 0.0f);
    assert_true(fi_llama_exp(-100.0f) > 0.0f && fi_llama_exp(-100.0f) < 1e-43f); /* subnormal, as expf */
    enum { N = 4099 }; /* not a multiple of 8: the scalar tail */
    static float g[N], u[N], a[N], b[N];
    const float special[] = {0.0f,   -0.0f,  1e-30f, -1e-30f, 87.5f, -87.5f,
                             88.5f, -88.5f, 200.0f, -200.0f, 1e30f, -1e30f};
    for (int i = 0; i < N; i++) {
        g[i] = i < (int)(sizeof special / sizeof special[0]) ? special[i]
                                                            : (float)(fi_test_rng_normal(&rng) * (i % 3 ? 3.0 : 30.0));
        u[i] = (float)fi_test_rng_normal(&rng);
    }
    memcpy(a, g, sizeof g);
    fi_llama_swiglu(a, u, N);
    for (int i = 0; i < N; i++) {
        const double x = g[i], want = x / (1.0 + exp(-x)) * u[i];
        assert_true(fabs(a[i] - want) <= 8 * 0x1p-24 * fabs(want) + 1e-35);
    }
    if (fi_cpu_simd_level() >= FI_SIMD_AVX2) {
        memcpy(b, g, sizeof g);
        fi_llama_swiglu_avx2(b, u, N);
        assert_memory_equal(a, b, sizeof a);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_cache),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_rope_formula),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_stage_trace),
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_truncate_replays),
    };
    return cmocka_run_group_tests(tests, load_model, free_model);
}
