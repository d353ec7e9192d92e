/* Llama-family model: loading from GGUF and the forward pass.
 *
 * The forward of a chunk runs inside ONE OpenMP parallel region: on a small machine generation is
 * bound by per-op and synchronisation overhead, so every step is a slice of work per thread and
 * steps are separated by barriers only. Matmul rows are split by thread (each output element is
 * computed the same way whatever the split, so 1 and 2 threads give bit-identical logits), token
 * work (norms, activation quantization) is split by token, Q/K/V by whole heads (so the thread that
 * computes a head also rotates it and stores it in the cache), attention by 16-row query blocks.
 * A decode step (one token) lets every thread normalise and quantize the token itself instead of
 * waiting for one thread to do it: 5 barriers per layer. The matmuls and the attention core compute
 * each token / query row the same way whatever the batch, so chunked prefill, one-token decode and
 * any thread count give bit-identical logits (tests/test_llama.c). */
#include "model/llama.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kv/kv_cache.h"
#include "model/matmul.h"
#include "model/quant.h"

typedef struct llama_layer {
    float *attn_norm, *ffn_norm; /* [n_embd] f32, owned */
    fi_matmul_weight *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
} llama_layer;

struct fi_model {
    fi_gguf *gguf;
    fi_tokenizer *tok;
    char tok_error[512];
    fi_llama_hparams hp;
    llama_layer *layers;
    const fi_gguf_tensor *token_embd;
    size_t embd_row_bytes;
    float *output_norm;          /* [n_embd] */
    fi_matmul_weight *output;    /* [n_vocab, n_embd] */
    float rope_theta_scale;      /* base^(-2/rope_dim), in f32 as ggml computes it */
    float *rope_factors;         /* [rope_dim / 2] llama3-style per-pair divisors, or NULL */
    fi_mask *causal;
};

/* ---------------------------------------------------------------- loading */

static bool arch_u32(const fi_gguf *g, const char *arch, const char *key, uint32_t *out) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    return fi_gguf_get_u32(g, full, out);
}

static bool arch_f32(const fi_gguf *g, const char *arch, const char *key, float *out) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    return fi_gguf_get_f32(g, full, out);
}

static const fi_gguf_tensor *find_tensor(const fi_gguf *g, const char *name, int64_t ne0,
                                         int64_t ne1, bool optional, fi_status *st, fi_error *err) {
    const fi_gguf_tensor *t = fi_gguf_find_tensor(g, name);
    if (!t) {
        if (!optional) *st = fi_error_set(err, FI_ERR_FORMAT, "model: tensor '%s' is missing", name);
        return NULL;
    }
    int64_t want_dims = ne1 > 1 ? 2 : 1;
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1 ||
        (int64_t)t->n_dims > want_dims) {
        *st = fi_error_set(err, FI_ERR_FORMAT,
                           "model: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                           name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                           (long long)t->ne[3], (long long)ne0, (long long)ne1);
        return NULL;
    }
    if (!fi_ggml_type_supported(t->type)) {
        *st = fi_error_set(err, FI_ERR_UNSUPPORTED,
                           "model: tensor '%s' has type %s; supported types: %s", name,
                           fi_ggml_type_name(t->type), fi_ggml_supported_list());
        return NULL;
    }
    return t;
}

static float *load_vector(const fi_gguf *g, const char *name, int64_t n, fi_status *st,
                          fi_error *err) {
    const fi_gguf_tensor *t = find_tensor(g, name, n, 1, false, st, err);
    if (!t) return NULL;
    if (fi_ggml_block_size(t->type) != 1) {
        *st = fi_error_set(err, FI_ERR_UNSUPPORTED, "model: norm tensor '%s' must be F32/F16/BF16, not %s",
                           name, fi_ggml_type_name(t->type));
        return NULL;
    }
    float *v = malloc((size_t)n * sizeof(float));
    if (!v) {
        *st = fi_error_set(err, FI_ERR_NOMEM, "model: out of memory");
        return NULL;
    }
    fi_status s = fi_quant_dequantize_row(t->type, t->data, v, n, err);
    if (s != FI_OK) {
        free(v);
        *st = s;
        return NULL;
    }
    return v;
}

static fi_matmul_weight *load_matrix(const fi_gguf *g, const char *name, int64_t cols, int64_t rows,
                                     fi_status *st, fi_error *err) {
    const fi_gguf_tensor *t = find_tensor(g, name, cols, rows, false, st, err);
    if (!t) return NULL;
    fi_matmul_weight *w = NULL;
    fi_status s = fi_matmul_weight_create(t->type, t->data, rows, cols, &w, err);
    if (s != FI_OK) {
        fi_error_prefix(err, "model: tensor '%s': ", name);
        *st = s;
        return NULL;
    }
    fi_gguf_release_pages(g, t->data, t->nbytes); /* the matmul keeps a repacked copy */
    return w;
}

static fi_status load_hparams(fi_model *m, fi_error *err) {
    const fi_gguf *g = m->gguf;
    fi_gguf_str arch_s;
    if (!fi_gguf_get_str(g, "general.architecture", &arch_s))
        return fi_error_set(err, FI_ERR_FORMAT, "model: general.architecture is missing");
    if (!fi_gguf_str_eq(arch_s, "llama"))
        return fi_error_set(err, FI_ERR_UNSUPPORTED,
                            "model: architecture '%.*s' is not supported; supported: llama "
                            "(SmolLM2, TinyLlama, Llama 2, Llama 3)",
                            (int)(arch_s.len > 64 ? 64 : arch_s.len), arch_s.data);
    const char *arch = "llama";
    fi_llama_hparams *hp = &m->hp;
    uint32_t u;
#define REQ_U32(key, field)                                                                       \
    do {                                                                                          \
        if (!arch_u32(g, arch, key, &u) || u == 0)                                                \
            return fi_error_set(err, FI_ERR_FORMAT, "model: %s.%s is missing or zero", arch, key); \
        hp->field = u;                                                                            \
    } while (0)
    REQ_U32("embedding_length", n_embd);
    REQ_U32("block_count", n_layer);
    REQ_U32("feed_forward_length", n_ff);
    REQ_U32("attention.head_count", n_head);
#undef REQ_U32
    hp->n_ctx_train = arch_u32(g, arch, "context_length", &u) && u > 0 ? u : 2048;
    hp->n_head_kv = arch_u32(g, arch, "attention.head_count_kv", &u) && u > 0 ? u : hp->n_head;
    if (hp->n_embd % hp->n_head != 0 || hp->n_head % hp->n_head_kv != 0 || hp->n_layer > 4096)
        return fi_error_set(err, FI_ERR_FORMAT, "model: inconsistent heads (%lld embd, %lld heads, %lld kv heads)",
                            (long long)hp->n_embd, (long long)hp->n_head, (long long)hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (arch_u32(g, arch, "attention.key_length", &u) && u > 0) hp->head_dim = u;
    if (hp->head_dim > 256 || hp->head_dim % 2)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "model: head dimension %lld not supported (even, <= 256)",
                            (long long)hp->head_dim);
    hp->rope_dim = arch_u32(g, arch, "rope.dimension_count", &u) && u > 0 ? u : hp->head_dim;
    if (hp->rope_dim > hp->head_dim || hp->rope_dim % 2)
        return fi_error_set(err, FI_ERR_FORMAT, "model: rope.dimension_count %lld does not fit head dim %lld",
                            (long long)hp->rope_dim, (long long)hp->head_dim);
    float f;
    hp->norm_eps = arch_f32(g, arch, "attention.layer_norm_rms_epsilon", &f) ? f : 1e-5f;
    hp->rope_base = arch_f32(g, arch, "rope.freq_base", &f) ? f : 10000.0f;
    hp->rope_scale = 1.0f;
    fi_gguf_str st;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    bool has_type = fi_gguf_get_str(g, key, &st);
    if (has_type && !fi_gguf_str_eq(st, "none") && !fi_gguf_str_eq(st, "linear"))
        return fi_error_set(err, FI_ERR_UNSUPPORTED,
                            "model: rope scaling '%.*s' not supported; supported: none, linear, llama3 (rope_freqs)",
                            (int)(st.len > 32 ? 32 : st.len), st.data);
    if (!has_type || fi_gguf_str_eq(st, "linear")) {
        if (arch_f32(g, arch, "rope.scaling.factor", &f) && f > 0) hp->rope_scale = 1.0f / f;
        else if (arch_f32(g, arch, "rope.scale_linear", &f) && f > 0) hp->rope_scale = 1.0f / f;
    }
    return FI_OK;
}

static fi_status load_weights(fi_model *m, fi_error *err) {
    const fi_gguf *g = m->gguf;
    fi_llama_hparams *hp = &m->hp;
    fi_status st = FI_OK;
    const fi_gguf_tensor *te = fi_gguf_find_tensor(g, "token_embd.weight");
    if (!te) return fi_error_set(err, FI_ERR_FORMAT, "model: tensor 'token_embd.weight' is missing");
    hp->n_vocab = te->ne[1];
    if (hp->n_vocab <= 0 || hp->n_vocab > (1 << 24))
        return fi_error_set(err, FI_ERR_FORMAT, "model: bad vocabulary size %lld", (long long)hp->n_vocab);
    m->token_embd = find_tensor(g, "token_embd.weight", hp->n_embd, hp->n_vocab, false, &st, err);
    if (!m->token_embd) return st;
    m->embd_row_bytes = fi_ggml_row_size(te->type, hp->n_embd);
    if (m->embd_row_bytes == 0)
        return fi_error_set(err, FI_ERR_FORMAT, "model: token_embd rows of %lld are not whole %s blocks",
                            (long long)hp->n_embd, fi_ggml_type_name(te->type));

    const int64_t E = hp->n_embd, Dq = hp->n_head * hp->head_dim, Dkv = hp->n_head_kv * hp->head_dim;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return fi_error_set(err, FI_ERR_NOMEM, "model: out of memory");
    char name[96];
    for (int64_t l = 0; l < hp->n_layer; l++) {
        llama_layer *L = &m->layers[l];
#define NAME(s) (snprintf(name, sizeof name, "blk.%lld." s, (long long)l), name)
        if (!(L->attn_norm = load_vector(g, NAME("attn_norm.weight"), E, &st, err))) return st;
        if (!(L->ffn_norm = load_vector(g, NAME("ffn_norm.weight"), E, &st, err))) return st;
        if (!(L->wq = load_matrix(g, NAME("attn_q.weight"), E, Dq, &st, err))) return st;
        if (!(L->wk = load_matrix(g, NAME("attn_k.weight"), E, Dkv, &st, err))) return st;
        if (!(L->wv = load_matrix(g, NAME("attn_v.weight"), E, Dkv, &st, err))) return st;
        if (!(L->wo = load_matrix(g, NAME("attn_output.weight"), Dq, E, &st, err))) return st;
        if (!(L->w_gate = load_matrix(g, NAME("ffn_gate.weight"), E, hp->n_ff, &st, err))) return st;
        if (!(L->w_up = load_matrix(g, NAME("ffn_up.weight"), E, hp->n_ff, &st, err))) return st;
        if (!(L->w_down = load_matrix(g, NAME("ffn_down.weight"), hp->n_ff, E, &st, err))) return st;
#undef NAME
    }
    if (!(m->output_norm = load_vector(g, "output_norm.weight", E, &st, err))) return st;
    const fi_gguf_tensor *out = find_tensor(g, "output.weight", E, hp->n_vocab, true, &st, err);
    if (st != FI_OK) return st;
    hp->tied_output = out == NULL;
    if (!out) out = m->token_embd;
    st = fi_matmul_weight_create(out->type, out->data, hp->n_vocab, E, &m->output, err);
    if (st != FI_OK) return st;
    fi_gguf_release_pages(g, out->data, out->nbytes); /* repacked; tied embedding rows read from the copy */

    /* RoPE frequencies, with llama3-style per-pair factors when the file has them. */
    int64_t half = hp->rope_dim / 2;
    m->rope_theta_scale = powf(hp->rope_base, -2.0f / (float)hp->rope_dim);
    const fi_gguf_tensor *ff = find_tensor(g, "rope_freqs.weight", half, 1, true, &st, err);
    if (st != FI_OK) return st;
    if (ff && !(m->rope_factors = load_vector(g, "rope_freqs.weight", half, &st, err))) return st;
    return fi_mask_parse("causal", &m->causal, err);
}

fi_status fi_model_load(const char *path, fi_model **out, fi_error *err) {
    *out = NULL;
    fi_model *m = calloc(1, sizeof *m);
    if (!m) return fi_error_set(err, FI_ERR_NOMEM, "model: out of memory");
    fi_status st = fi_gguf_open(path, &m->gguf, err);
    if (st == FI_OK) st = load_hparams(m, err);
    if (st == FI_OK) st = load_weights(m, err);
    if (st != FI_OK) {
        fi_model_free(m);
        return st;
    }
    fi_error terr = {0};
    if (fi_tokenizer_from_gguf(m->gguf, &m->tok, &terr) != FI_OK) {
        m->tok = NULL;
        snprintf(m->tok_error, sizeof m->tok_error, "%s", terr.msg);
    }
    *out = m;
    return FI_OK;
}

void fi_model_free(fi_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int64_t l = 0; l < m->hp.n_layer; l++) {
            llama_layer *L = &m->layers[l];
            free(L->attn_norm);
            free(L->ffn_norm);
            fi_matmul_weight_free(L->wq);
            fi_matmul_weight_free(L->wk);
            fi_matmul_weight_free(L->wv);
            fi_matmul_weight_free(L->wo);
            fi_matmul_weight_free(L->w_gate);
            fi_matmul_weight_free(L->w_up);
            fi_matmul_weight_free(L->w_down);
        }
        free(m->layers);
    }
    free(m->output_norm);
    fi_matmul_weight_free(m->output);
    free(m->rope_factors);
    fi_mask_free(m->causal);
    fi_tokenizer_free(m->tok);
    fi_gguf_close(m->gguf);
    free(m);
}

int64_t fi_model_n_vocab(const fi_model *m) { return m->hp.n_vocab; }
int64_t fi_model_n_ctx_train(const fi_model *m) { return m->hp.n_ctx_train; }
const fi_llama_hparams *fi_llama_hparams_of(const fi_model *m) { return &m->hp; }
const fi_tokenizer *fi_llama_tokenizer(const fi_model *m) { return m->tok; }
const char *fi_llama_tokenizer_error(const fi_model *m) { return m->tok_error; }
const fi_gguf *fi_llama_gguf(const fi_model *m) { return m->gguf; }

size_t fi_llama_stream_bytes(const fi_model *m) {
    size_t b = fi_matmul_weight_stream_bytes(m->output);
    for (int64_t l = 0; l < m->hp.n_layer; l++) {
        const llama_layer *L = &m->layers[l];
        b += fi_matmul_weight_stream_bytes(L->wq) + fi_matmul_weight_stream_bytes(L->wk) +
             fi_matmul_weight_stream_bytes(L->wv) + fi_matmul_weight_stream_bytes(L->wo) +
             fi_matmul_weight_stream_bytes(L->w_gate) + fi_matmul_weight_stream_bytes(L->w_up) +
             fi_matmul_weight_stream_bytes(L->w_down);
    }
    return b;
}

/* ggml's recipe (docs/numerics.md): theta_i = pos * theta_scale^i by repeated f32 multiplication,
 * then divided by the pair's factor and times the linear scale, all in f32. An exact theta moves
 * the rotated values by an ulp or so, enough to flip int8 roundings downstream. */
void fi_llama_rope_thetas(const fi_model *m, int64_t pos, float *theta) {
    float th = (float)pos;
    for (int64_t i = 0; i < m->hp.rope_dim / 2; i++) {
        float t = m->rope_factors ? th / m->rope_factors[i] : th;
        theta[i] = m->hp.rope_scale * t;
        th *= m->rope_theta_scale;
    }
}

double fi_llama_rope_theta(const fi_model *m, int64_t pos, int64_t i) {
    float th[256 / 2];
    fi_llama_rope_thetas(m, pos, th);
    return (double)th[i];
}

void fi_llama_rope_apply(float *x, int64_t rope_dim, const float *cos_t, const float *sin_t) {
    /* One fused multiply-add per output, the other product rounded first (ggml's compiled form). */
    for (int64_t i = 0; i < rope_dim / 2; i++) {
        float x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = fmaf(x0, cos_t[i], -(x1 * sin_t[i]));
        x[2 * i + 1] = fmaf(x0, sin_t[i], x1 * cos_t[i]);
    }
}

/* ---------------------------------------------------------------- session */

struct fi_session {
    const fi_model *m;
    fi_session_params p;
    fi_kv_cache *kv;
    int64_t B; /* rows of scratch */
    /* scratch, [B, ...] row-major */
    float *x, *xn, *q, *k, *v, *attn_heads, *attn, *tmp, *gate, *up, *logits_tmp;
    float *rope_cos, *rope_sin; /* [B, rope_dim/2] */
    void *act[3];
    size_t act_bytes;
    /* Decode (one token): every thread normalises and quantizes the token itself into its own
     * buffers, which saves a barrier per step; [threads][3] and [threads][n_embd]. */
    void **act_priv;
    float *xn_priv;
    int32_t *seq_lens; /* [threads] view storage */
    fi_error *thread_err; /* [threads] */
    int n_threads;
    /* fi_llama_rope_apply or its AVX2 twin (identical bytes), chosen once from fi_cpu_simd_level() */
    void (*rope_apply)(float *x, int64_t rope_dim, const float *cos_t, const float *sin_t);
    void (*swiglu)(float *g, const float *u, int64_t n); /* fi_llama_swiglu or its AVX2 twin (identical bytes) */
    fi_llama_trace_fn trace; /* stage inspection, NULL when off */
    void *trace_user;
};

void fi_session_set_trace(fi_session *s, fi_llama_trace_fn fn, void *user) {
    s->trace = fn;
    s->trace_user = user;
}

fi_session_params fi_session_default_params(void) {
    fi_session_params p = {.n_ctx = 0, .n_batch = 256, .threads = 0, .kv_dtype = FI_DTYPE_F32,
                           .logits_all = false};
    return p;
}

static void *alloc64(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    if (bytes == 0) bytes = 64;
    return aligned_alloc(64, bytes);
}

static size_t max_act(const fi_model *m, int64_t n) {
    size_t b = fi_matmul_act_size(m->output, n);
    for (int64_t l = 0; l < m->hp.n_layer; l++) {
        const llama_layer *L = &m->layers[l];
        const fi_matmul_weight *ws[] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (size_t i = 0; i < 7; i++) {
            size_t s = fi_matmul_act_size(ws[i], n);
            if (s > b) b = s;
        }
    }
    return b;
}

fi_status fi_session_create(const fi_model *m, const fi_session_params *pp, fi_session **out,
                            fi_error *err) {
    *out = NULL;
    fi_session_params p = pp ? *pp : fi_session_default_params();
    if (p.n_ctx < 0 || p.n_batch < 0)
        return fi_error_set(err, FI_ERR_INVALID, "session: negative context or batch");
    if (p.n_ctx == 0) p.n_ctx = m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096;
    if (p.n_batch == 0) p.n_batch = 256;
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (p.threads <= 0) p.threads = omp_get_max_threads();
    if (p.threads > 256) p.threads = 256;
    fi_session *s = calloc(1, sizeof *s);
    if (!s) return fi_error_set(err, FI_ERR_NOMEM, "session: out of memory");
    s->m = m;
    s->p = p;
    s->n_threads = p.threads;
    s->rope_apply = fi_cpu_simd_level() >= FI_SIMD_AVX2 ? fi_llama_rope_apply_avx2 : fi_llama_rope_apply;
    s->swiglu = fi_cpu_simd_level() >= FI_SIMD_AVX2 ? fi_llama_swiglu_avx2 : fi_llama_swiglu;
    const fi_llama_hparams *hp = &m->hp;
    fi_kv_cache_config kc = {.n_layers = hp->n_layer, .heads = hp->n_head_kv, .dim = hp->head_dim,
                             .capacity = p.n_ctx, .page_size = 64, .dtype = p.kv_dtype};
    fi_status st = fi_kv_cache_create(&kc, &s->kv, err);
    if (st != FI_OK) {
        free(s);
        return st;
    }
    int64_t B = p.n_batch;
    s->B = B;
    size_t E = (size_t)hp->n_embd, Dq = (size_t)(hp->n_head * hp->head_dim),
           Dkv = (size_t)(hp->n_head_kv * hp->head_dim), F = (size_t)hp->n_ff;
    size_t Bz = (size_t)B;
    s->x = alloc64(Bz * E * 4);
    s->xn = alloc64(Bz * E * 4);
    s->tmp = alloc64(Bz * E * 4);
    s->q = alloc64(Bz * Dq * 4);
    s->k = alloc64(Bz * Dkv * 4);
    s->v = alloc64(Bz * Dkv * 4);
    s->attn_heads = alloc64(Bz * Dq * 4);
    s->attn = alloc64(Bz * Dq * 4);
    s->gate = alloc64(Bz * F * 4);
    s->up = alloc64(Bz * F * 4);
    s->rope_cos = alloc64(Bz * (size_t)(hp->rope_dim / 2) * 4);
    s->rope_sin = alloc64(Bz * (size_t)(hp->rope_dim / 2) * 4);
    s->act_bytes = max_act(m, B);
    for (int i = 0; i < 3; i++) s->act[i] = alloc64(s->act_bytes);
    s->act_priv = calloc((size_t)p.threads * 3, sizeof(void *));
    s->xn_priv = alloc64((size_t)p.threads * E * 4);
    bool priv_ok = s->act_priv && s->xn_priv;
    for (int i = 0; priv_ok && i < p.threads * 3; i++) priv_ok = (s->act_priv[i] = alloc64(max_act(m, 1))) != NULL;
    s->seq_lens = calloc((size_t)p.threads, sizeof(int32_t));
    s->thread_err = calloc((size_t)p.threads, sizeof(fi_error));
    if (!s->x || !s->xn || !s->tmp || !s->q || !s->k || !s->v || !s->attn_heads || !s->attn ||
        !s->gate || !s->up || !s->rope_cos || !s->rope_sin || !s->act[0] || !s->act[1] ||
        !s->act[2] || !s->seq_lens || !s->thread_err || !priv_ok) {
        fi_session_free(s);
        return fi_error_set(err, FI_ERR_NOMEM, "session: out of memory for a batch of %lld", (long long)B);
    }
    *out = s;
    return FI_OK;
}

void fi_session_free(fi_session *s) {
    if (!s) return;
    fi_kv_cache_free(s->kv);
    free(s->x);
    free(s->xn);
    free(s->tmp);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->attn_heads);
    free(s->attn);
    free(s->gate);
    free(s->up);
    free(s->rope_cos);
    free(s->rope_sin);
    for (int i = 0; i < 3; i++) free(s->act[i]);
    if (s->act_priv)
        for (int i = 0; i < s->n_threads * 3; i++) free(s->act_priv[i]);
    free(s->act_priv);
    free(s->xn_priv);
    free(s->seq_lens);
    free(s->thread_err);
    free(s);
}

int64_t fi_session_n_past(const fi_session *s) { return fi_kv_cache_len(s->kv); }
int64_t fi_session_n_ctx(const fi_session *s) { return s->p.n_ctx; }
void fi_session_truncate(fi_session *s, int64_t n_past) { fi_kv_cache_truncate(s->kv, n_past); }
void fi_session_reset(fi_session *s) { fi_kv_cache_reset(s->kv); }

/* ---------------------------------------------------------------- forward */

/* Query rows per attention call in prefill (blocks aligned to absolute positions). */
#define FI_LLAMA_ATTN_ROWS 16

static inline void split_range(int64_t n, int tid, int nth, int64_t *b, int64_t *e) {
    *b = n * tid / nth;
    *e = n * (tid + 1) / nth;
}

/* Row ranges in whole granules so no thread wastes work on a partial interleaved group. */
static inline void split_rows(int64_t rows, int64_t g, int tid, int nth, int64_t *b, int64_t *e) {
    int64_t units = (rows + g - 1) / g;
    int64_t u0 = units * tid / nth, u1 = units * (tid + 1) / nth;
    *b = u0 * g < rows ? u0 * g : rows;
    *e = u1 * g < rows ? u1 * g : rows;
}

/* x[t, :] += W . act[t] over this thread's share of W's rows: the attention output and FFN down
 * projections both end their block by adding into the residual stream. */
static void matmul_add_residual(const fi_matmul_weight *w, const void *act, int64_t n, float *tmp,
                                float *x, int64_t E, int tid, int nth) {
    int64_t b, e;
    split_rows(E, fi_matmul_row_granule(w), tid, nth, &b, &e);
    if (e <= b) return;
    fi_matmul_rows(w, act, n, tmp, E, b, e);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = b; r < e; r++) x[t * E + r] += tmp[t * E + r];
}

/* ggml's recipe (docs/numerics.md): f32 squares summed in double, the mean rounded to f32, then
 * 1 / sqrtf(mean + eps) in f32; y = (x * scale) * w. Any other rounding of the scale moves every
 * element of the row by an ulp, which flips int8 activation roundings downstream. */
static void rmsnorm(const float *x, const float *w, float *y, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) {
        float sq = x[i] * x[i];
        ss += (double)sq;
    }
    float mean = (float)(ss / (double)n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

float fi_llama_exp(float t) {
    const double x = fmin(fmax((double)t, FI_LLAMA_EXP_LO), FI_LLAMA_EXP_HI);
    const double n = rint(x * FI_LLAMA_LOG2E);
    double r = fma(-n, FI_LLAMA_LN2_HI, x);
    r = fma(-n, FI_LLAMA_LN2_LO, r);
    static const double coef[12] = FI_LLAMA_EXP_COEFS;
    double p = coef[11];
    for (int k = 10; k >= 0; k--) p = fma(p, r, coef[k]);
    const uint64_t bits = (uint64_t)((int64_t)n + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return (float)(p * scale);
}

void fi_llama_swiglu(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + fi_llama_exp(-g[i])) * u[i];
}

/* Quantizes tokens [t0, t1) of x for every distinct weight type among ws (at most 3), into act[i]. */
static void quantize_for(void *const *act, const fi_matmul_weight *const *ws, int nw, const float *x,
                         int64_t n, int64_t t0, int64_t t1, int *slot) {
    for (int i = 0; i < nw; i++) {
        slot[i] = i;
        for (int j = 0; j < i; j++)
            if (fi_matmul_weight_type(ws[j]) == fi_matmul_weight_type(ws[i])) {
                slot[i] = slot[j];
                break;
            }
        if (slot[i] == i && t1 > t0) fi_matmul_quantize_act(ws[i], x, n, act[i], t0, t1);
    }
}

/* Writes one head's row (k or v) of position pos into the cache. */
static void store_head(fi_session *s, bool is_v, int64_t layer, int64_t pos, int64_t h, const float *src) {
    int64_t D = s->m->hp.head_dim;
    void *dst = is_v ? fi_kv_cache_v_row(s->kv, layer, pos, h) : fi_kv_cache_k_row(s->kv, layer, pos, h);
    if (s->p.kv_dtype == FI_DTYPE_F16) {
        uint16_t *d16 = dst;
        for (int64_t d = 0; d < D; d++) d16[d] = fi_f32_to_f16(src[d]);
    } else {
        memcpy(dst, src, (size_t)D * sizeof(float));
    }
}

/* Attention for query rows [r0, r1) of the chunk (positions n_past + r0 ...), single-threaded. */
static fi_status attention_rows(fi_session *s, int64_t layer, int64_t n_past, int64_t r0, int64_t r1,
                                int tid, fi_error *err) {
    const fi_llama_hparams *hp = &s->m->hp;
    const int64_t D = hp->head_dim, Hq = hp->n_head, rows = r1 - r0;
    /* Causal: keys after the block's last row are never needed. */
    fi_paged_kv kv = fi_kv_cache_view(s->kv, layer, n_past + r1, &s->seq_lens[tid]);
    fi_attn_params ap;
    memset(&ap, 0, sizeof ap);
    ap.q = fi_attn_tensor_contiguous(s->q + r0 * Hq * D, FI_DTYPE_F32, 1, Hq, rows, D);
    ap.q.stride_head = D; /* q is token-major [n, Hq, D] */
    ap.q.stride_len = Hq * D;
    ap.q.stride_batch = rows * Hq * D;
    ap.paged_kv = &kv;
    float *o = s->attn_heads + r0 * Hq * D; /* [Hq, rows, D] */
    ap.out = o;
    ap.mask = s->m->causal;
    fi_mask_inputs mi = {0};
    mi.q_offset = n_past + r0;
    ap.mask_in = &mi;
    ap.threads = 1;
    ap.num_splits = 1; /* rows computed the same way whatever the thread split */
    fi_status st = fi_attn_forward(&ap, err);
    if (st != FI_OK) return st;
    for (int64_t t = 0; t < rows; t++)
        for (int64_t h = 0; h < Hq; h++)
            memcpy(s->attn + (r0 + t) * Hq * D + h * D, o + (h * rows + t) * D, (size_t)D * sizeof(float));
    return FI_OK;
}

/* Stage inspection: one thread reports a buffer that is complete (just after a barrier) and not
 * written again before the next barrier. */
#define TRACE(name, layer, data, rows, cols)                                                   \
    do {                                                                                       \
        if (s->trace && n > 1 && tid == 0) s->trace(s->trace_user, name, layer, data, rows, cols); \
    } while (0)

/* One chunk of n <= B tokens at positions n_past .. n_past+n-1 (pages reserved by the caller).
 * logits: [n_out, n_vocab] for the last n_out tokens. */
static fi_status forward_chunk(fi_session *s, const int32_t *tokens, int64_t n, float *logits,
                               int64_t n_out, fi_error *err) {
    const fi_model *m = s->m;
    const fi_llama_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, D = hp->head_dim, Hq = hp->n_head, Hkv = hp->n_head_kv;
    const int64_t Dq = Hq * D, Dkv = Hkv * D, F = hp->n_ff, half = hp->rope_dim / 2;
    const int64_t n_past = fi_kv_cache_len(s->kv);
    int nth_req = s->n_threads;
    for (int i = 0; i < nth_req; i++) s->thread_err[i].code = FI_OK;

#pragma omp parallel num_threads(nth_req)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        fi_error *terr = &s->thread_err[tid];
        int64_t t0, t1;
        split_range(n, tid, nth, &t0, &t1);
        int slot[3];

        /* Embeddings and the RoPE angles of this thread's tokens. */
        for (int64_t t = t0; t < t1; t++) {
            if (hp->tied_output) { /* the packed output copy holds the same rows (exact), and the
                                    * file's pages were released after packing: do not fault them back */
                fi_matmul_weight_row(m->output, tokens[t], s->x + t * E);
            } else {
                const char *row = (const char *)m->token_embd->data + (size_t)tokens[t] * m->embd_row_bytes;
                fi_quant_dequantize_row(m->token_embd->type, row, s->x + t * E, E, NULL);
            }
            float th[256 / 2];
            fi_llama_rope_thetas(m, n_past + t, th);
            for (int64_t i = 0; i < half; i++) {
                s->rope_cos[t * half + i] = cosf(th[i]);
                s->rope_sin[t * half + i] = sinf(th[i]);
            }
        }

        /* Decode: one token, normalised and quantized by every thread into its own buffers. */
        const bool priv = n == 1;
        void *const *act = priv ? s->act_priv + 3 * tid : s->act;
        float *xn = priv ? s->xn_priv + tid * E : s->xn;
        const int64_t q0 = priv ? 0 : t0, q1 = priv ? n : t1;
#pragma omp barrier
        TRACE("embd", -1, s->x, n, E);
        for (int64_t l = 0; l < hp->n_layer; l++) {
            const llama_layer *L = &m->layers[l];
            /* attn_norm + quantize */
            for (int64_t t = q0; t < q1; t++) rmsnorm(s->x + t * E, L->attn_norm, xn + t * E, E, hp->norm_eps);
            const fi_matmul_weight *qkv[3] = {L->wq, L->wk, L->wv};
            quantize_for(act, qkv, 3, xn, n, q0, q1, slot);
            if (!priv) {
#pragma omp barrier
            }
            TRACE("attn_norm", l, xn, n, E);
            /* Q, K, V split by whole heads: the thread that computes a head also rotates it and
             * stores K/V into the cache (no barrier in between). */
            {
                int64_t hb, he;
                split_range(Hq + 2 * Hkv, tid, nth, &hb, &he);
                for (int64_t u = hb; u < he; u++) {
                    if (u < Hq) {
                        fi_matmul_rows(L->wq, act[slot[0]], n, s->q, Dq, u * D, (u + 1) * D);
                        for (int64_t t = 0; t < n; t++)
                            s->rope_apply(s->q + t * Dq + u * D, hp->rope_dim, s->rope_cos + t * half,
                                          s->rope_sin + t * half);
                    } else if (u < Hq + Hkv) {
                        int64_t h = u - Hq;
                        fi_matmul_rows(L->wk, act[slot[1]], n, s->k, Dkv, h * D, (h + 1) * D);
                        for (int64_t t = 0; t < n; t++) {
                            float *kr = s->k + t * Dkv + h * D;
                            s->rope_apply(kr, hp->rope_dim, s->rope_cos + t * half, s->rope_sin + t * half);
                            store_head(s, false, l, n_past + t, h, kr);
                        }
                    } else {
                        int64_t h = u - Hq - Hkv;
                        fi_matmul_rows(L->wv, act[slot[2]], n, s->v, Dkv, h * D, (h + 1) * D);
                        for (int64_t t = 0; t < n; t++) store_head(s, true, l, n_past + t, h, s->v + t * Dkv + h * D);
                    }
                }
            }
#pragma omp barrier
            TRACE("Qcur", l, s->q, n, Dq);
            TRACE("Kcur", l, s->k, n, Dkv);
            TRACE("Vcur", l, s->v, n, Dkv);
            /* Attention in blocks of query rows aligned to absolute positions, dealt round-robin:
             * a row is computed the same way whatever the thread count. */
            {
                int64_t j = 0;
                for (int64_t pb = n_past; pb < n_past + n; j++) {
                    int64_t pe = (pb / FI_LLAMA_ATTN_ROWS + 1) * FI_LLAMA_ATTN_ROWS;
                    if (pe > n_past + n) pe = n_past + n;
                    if (j % nth == tid && terr->code == FI_OK)
                        attention_rows(s, l, n_past, pb - n_past, pe - n_past, tid, terr);
                    pb = pe;
                }
            }
#pragma omp barrier
            TRACE("kqv_out", l, s->attn, n, Dq);
            const fi_matmul_weight *wo[1] = {L->wo};
            quantize_for(act, wo, 1, s->attn, n, q0, q1, slot);
            if (!priv) {
#pragma omp barrier
            }
            matmul_add_residual(L->wo, act[0], n, s->tmp, s->x, E, tid, nth);
#pragma omp barrier
            TRACE("ffn_inp", l, s->x, n, E);
            for (int64_t t = q0; t < q1; t++) rmsnorm(s->x + t * E, L->ffn_norm, xn + t * E, E, hp->norm_eps);
            const fi_matmul_weight *gu[2] = {L->w_gate, L->w_up};
            quantize_for(act, gu, 2, xn, n, q0, q1, slot);
            if (!priv) {
#pragma omp barrier
            }
            TRACE("ffn_norm", l, xn, n, E);
            {
                int64_t g = fi_matmul_row_granule(L->w_gate), g2 = fi_matmul_row_granule(L->w_up);
                if (g2 > g) g = g2;
                int64_t b, e;
                split_rows(F, g, tid, nth, &b, &e);
                if (e > b) {
                    fi_matmul_rows(L->w_gate, act[slot[0]], n, s->gate, F, b, e);
                    fi_matmul_rows(L->w_up, act[slot[1]], n, s->up, F, b, e);
                    for (int64_t t = 0; t < n; t++) s->swiglu(s->gate + t * F + b, s->up + t * F + b, e - b);
                }
            }
#pragma omp barrier
            TRACE("ffn_swiglu", l, s->gate, n, F);
            const fi_matmul_weight *dn[1] = {L->w_down};
            quantize_for(act, dn, 1, s->gate, n, q0, q1, slot);
            if (!priv) {
#pragma omp barrier
            }
            matmul_add_residual(L->w_down, act[0], n, s->tmp, s->x, E, tid, nth);
#pragma omp barrier
            TRACE("l_out", l, s->x, n, E);
        }

        /* Final norm and logits of the last n_out tokens. */
        if (n_out > 0) {
            const int64_t first = n - n_out;
            int64_t o0, o1;
            split_range(n_out, tid, nth, &o0, &o1);
            const bool opriv = n_out == 1; /* one row: every thread prepares it, no barrier */
            void *oact = opriv ? s->act_priv[3 * tid] : s->act[0];
            float *oxn = opriv ? s->xn_priv + tid * E : s->xn;
            if (opriv) o0 = 0, o1 = 1;
            for (int64_t t = o0; t < o1; t++)
                rmsnorm(s->x + (first + t) * E, m->output_norm, oxn + t * E, E, hp->norm_eps);
            if (o1 > o0) fi_matmul_quantize_act(m->output, oxn, n_out, oact, o0, o1);
            if (!opriv) {
#pragma omp barrier
            }
            if (n_out == n) TRACE("result_norm", -1, oxn, n, E);
            int64_t b, e;
            split_rows(hp->n_vocab, fi_matmul_row_granule(m->output), tid, nth, &b, &e);
            if (e > b) fi_matmul_rows(m->output, oact, n_out, logits, hp->n_vocab, b, e);
        }
    }
    for (int i = 0; i < nth_req; i++)
        if (s->thread_err[i].code != FI_OK) {
            if (err) *err = s->thread_err[i];
            return s->thread_err[i].code;
        }
    return FI_OK;
}

fi_status fi_session_eval(fi_session *s, const int32_t *tokens, size_t n, float *logits, bool all,
                          fi_error *err) {
    const fi_llama_hparams *hp = &s->m->hp;
    if (n == 0) return fi_error_set(err, FI_ERR_INVALID, "eval: no tokens");
    if (all && !s->p.logits_all)
        return fi_error_set(err, FI_ERR_INVALID, "eval: logits of every token need a session with logits_all");
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return fi_error_set(err, FI_ERR_INVALID, "eval: token %d at index %zu is outside the vocabulary of %lld",
                                tokens[i], i, (long long)hp->n_vocab);
    const int64_t start = fi_kv_cache_len(s->kv);
    if (start + (int64_t)n > s->p.n_ctx)
        return fi_error_set(err, FI_ERR_INVALID, "eval: %lld cached tokens plus %zu new ones exceed the context of %lld",
                            (long long)start, n, (long long)s->p.n_ctx);
    for (size_t done = 0; done < n;) {
        int64_t c = (int64_t)(n - done) < s->B ? (int64_t)(n - done) : s->B;
        fi_status st = fi_kv_cache_reserve(s->kv, c, err);
        if (st == FI_OK) {
            bool last = done + (size_t)c == n;
            float *lg = all ? logits + done * (size_t)hp->n_vocab : logits;
            int64_t n_out = all ? c : (last ? 1 : 0);
            st = forward_chunk(s, tokens + done, c, lg, n_out, err);
        }
        if (st != FI_OK) {
            fi_kv_cache_truncate(s->kv, start);
            return st;
        }
        fi_kv_cache_commit(s->kv, c);
        done += (size_t)c;
    }
    return FI_OK;
}
