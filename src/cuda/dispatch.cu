/* fi_cuda_attn_forward and the plan API: validates the problem with the CPU
 * path's own checks, builds (or reuses) the block mask for the kernels' tile
 * sizes, flattens the mask expression into the kernels' postfix program, uploads
 * the index arrays once and picks the kernel (prefill or split-KV decode). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "flexinfer_cuda.h"

extern "C" {
#include "attn/block_mask.h"
#include "attn/mask.h"
#include "attn/problem.h"
#include "attn/score_mod.h"
#include "core/dtype.h"
#include "core/error.h"
}

#include "cuda/launch.h"
#include "cuda/nvrtc_program.h"

#define FI_CUDA_MAX_ALLOCS 16

struct fi_cuda_attn_plan {
    fi_cuda_attn_kparams kp;
    bool decode, bf16, transform;
    bool wgmma; /* prefill on the Hopper kernel (flash_fwd_wgmma.cuh) */
    int dim;
    void *allocs[FI_CUDA_MAX_ALLOCS];
    int n_allocs;
    fi_nvrtc_plan *expr; /* run-time compiled expressions, or NULL */
};

static fi_status cuda_fail(fi_error *err, cudaError_t e, const char *what) {
    return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: %s failed: %s", what, cudaGetErrorString(e));
}

extern "C" bool fi_cuda_available(fi_error *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cuda_fail(err, e, "looking for a GPU");
        return false;
    }
    if (n == 0) {
        fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: no GPU found");
        return false;
    }
    return true;
}

/* Copies n bytes of host data to a new device buffer owned by the plan. */
static fi_status plan_upload(fi_cuda_attn_plan *pl, const void *src, size_t n, void **dst,
                             fi_error *err) {
    if (pl->n_allocs == FI_CUDA_MAX_ALLOCS)
        return fi_error_set(err, FI_ERR_NOMEM, "CUDA plan: too many buffers");
    cudaError_t e = cudaMalloc(dst, n ? n : 16);
    if (e != cudaSuccess) return cuda_fail(err, e, "cudaMalloc");
    pl->allocs[pl->n_allocs++] = *dst;
    if (src && n && (e = cudaMemcpy(*dst, src, n, cudaMemcpyHostToDevice)) != cudaSuccess)
        return cuda_fail(err, e, "cudaMemcpy to the GPU");
    return FI_OK;
}

/* Post-order flattening of the mask tree into the postfix program. */
static fi_status flatten_mask(const fi_mask *m, fi_cuda_attn_kparams *kp, fi_error *err) {
    int32_t op;
    switch (m->op) {
    case FI_MASK_FULL: op = FI_CUDA_OP_FULL; break;
    case FI_MASK_CAUSAL: op = FI_CUDA_OP_CAUSAL; break;
    case FI_MASK_WINDOW: op = FI_CUDA_OP_WINDOW; break;
    case FI_MASK_PREFIX: op = FI_CUDA_OP_PREFIX; break;
    case FI_MASK_CHUNKED: op = FI_CUDA_OP_CHUNKED; break;
    case FI_MASK_DOCUMENT: op = FI_CUDA_OP_DOCUMENT; break;
    case FI_MASK_GENERATED: op = FI_CUDA_OP_GENERATED; break;
    case FI_MASK_CALLBACK:
        return fi_error_set(err, FI_ERR_UNSUPPORTED,
                            "CUDA: masks from C callbacks cannot run on the GPU (use the mask language)");
    case FI_MASK_AND:
    case FI_MASK_OR: {
        fi_status st = flatten_mask(m->lhs, kp, err);
        if (!st) st = flatten_mask(m->rhs, kp, err);
        if (st) return st;
        op = m->op == FI_MASK_AND ? FI_CUDA_OP_AND : FI_CUDA_OP_OR;
        break;
    }
    case FI_MASK_NOT: {
        fi_status st = flatten_mask(m->lhs, kp, err);
        if (st) return st;
        op = FI_CUDA_OP_NOT;
        break;
    }
    default: return fi_error_set(err, FI_ERR_INVALID, "CUDA: unknown mask node %d", (int)m->op);
    }
    if (kp->n_ops == FI_CUDA_MAX_MASK_OPS)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: mask expression longer than %d terms",
                            FI_CUDA_MAX_MASK_OPS);
    if (m->op == FI_MASK_CHUNKED && m->param <= 0)
        return fi_error_set(err, FI_ERR_INVALID, "chunked: size must be > 0");
    kp->ops[kp->n_ops].op = op;
    kp->ops[kp->n_ops].param = m->param;
    kp->n_ops++;
    return FI_OK;
}

static fi_status forward_device_expr(const fi_attn_params *p, const fi_cuda_expr *x, fi_cuda_kernel_cache *cache,
                                     fi_error *err);

static bool aligned16(const void *ptr) { return ((uintptr_t)ptr & 15u) == 0; }

static fi_status check_view(const fi_attn_tensor *t, const char *name, fi_error *err) {
    if (!aligned16(t->data) || t->stride_len % 8 || t->stride_head % 8 || t->stride_batch % 8)
        return fi_error_set(err, FI_ERR_INVALID,
                            "CUDA: %s must be 16-byte aligned with strides that are multiples of 8 elements",
                            name);
    return FI_OK;
}

/* Split count for decode: the CTAs of one full wave (resident CTAs per SM times
 * SMs) are the slots; among split counts that keep at least two key blocks per
 * split, take the smallest whose wave efficiency w / ceil(w) (w = ctas * s / slots)
 * reaches 85% of the best (FlashAttention-2's rule): fewer splits mean less
 * combine work, full waves mean no idle SMs at the tail. */
static int auto_splits(int64_t ctas, int64_t n_kv_blocks, int per_sm) {
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    const double slots = (double)sms * per_sm;
    int64_t cap = n_kv_blocks / 2 > 1 ? n_kv_blocks / 2 : 1;
    if (cap > 256) cap = 256;
    double best = 0;
    for (int64_t s = 1; s <= cap; s++) {
        const double w = (double)ctas * (double)s / slots;
        const double eff = w / ceil(w);
        if (eff > best) best = eff;
    }
    for (int64_t s = 1; s <= cap; s++) {
        const double w = (double)ctas * (double)s / slots;
        if (w / ceil(w) >= 0.85 * best) return (int)s;
    }
    return 1;
}

/* The Hopper prefill kernel is built for sm_90a, which runs on compute capability
 * 9.0 only; FI_CUDA_WGMMA=0 keeps the portable mma.sync kernel (A/B runs, tests).
 * Score modifiers (and a non-positive scale) stay on the portable kernel. */
static bool wgmma_enabled(void) {
    const char *env = getenv("FI_CUDA_WGMMA");
    if (env && strcmp(env, "0") == 0) return false;
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
        return false;
    return major == 9 && minor == 0;
}

static fi_status plan_build(const fi_attn_params *p, const fi_cuda_expr *x, fi_cuda_kernel_cache *cache,
                            fi_cuda_attn_plan *pl, fi_error *err) {
    fi_attn_problem pr;
    fi_status st = fi_attn_problem_init(&pr, p, err);
    if (st) return st;
    fi_cuda_attn_kparams *kp = &pl->kp;
    const int dim = (int)pr.dim;
    if (dim != 64 && dim != 128)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: head dim %d is not supported (64, 128)", dim);
    if (p->q.dtype != pr.kv_dtype || (pr.kv_dtype != FI_DTYPE_BF16 && pr.kv_dtype != FI_DTYPE_F16))
        return fi_error_set(err, FI_ERR_INVALID,
                            "CUDA: device tensors must all be bf16 or all f16 (q %s, k/v %s)",
                            fi_dtype_name(p->q.dtype), fi_dtype_name(pr.kv_dtype));
    if ((st = check_view(&p->q, "q", err))) return st;
    if (!pr.paged && ((st = check_view(&p->k, "k", err)) || (st = check_view(&p->v, "v", err))))
        return st;
    if (pr.paged && (!aligned16(p->paged_kv->k_pages) || !aligned16(p->paged_kv->v_pages)))
        return fi_error_set(err, FI_ERR_INVALID, "CUDA: K/V pages must be 16-byte aligned");
    if (pr.n_batch > 65535 || pr.hq > 65535)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: batch and heads must be <= 65535");

    pl->dim = dim;
    pl->bf16 = pr.kv_dtype == FI_DTYPE_BF16;
    kp->q = p->q.data;
    kp->q_sb = p->q.stride_batch, kp->q_sh = p->q.stride_head, kp->q_sl = p->q.stride_len;
    if (!pr.paged) {
        kp->k = p->k.data, kp->v = p->v.data;
        kp->k_sb = p->k.stride_batch, kp->k_sh = p->k.stride_head, kp->k_sl = p->k.stride_len;
        kp->v_sb = p->v.stride_batch, kp->v_sh = p->v.stride_head, kp->v_sl = p->v.stride_len;
    }
    kp->out = p->out;
    kp->lse = p->lse;
    kp->batch = (int32_t)pr.n_batch, kp->hq = (int32_t)pr.hq, kp->hkv = (int32_t)pr.hkv;
    kp->group = (int32_t)pr.group;
    kp->scale = pr.scale;
    kp->scale_log2 = pr.scale * 1.4426950408889634f;
    kp->q_total = p->q.len;
    kp->q_offset = pr.mask_in.q_offset;

    int64_t max_q = 0, max_kv = 0;
    for (int64_t b = 0; b < pr.n_batch; b++) {
        if (fi_attn_q_len(&pr, b) > max_q) max_q = fi_attn_q_len(&pr, b);
        if (fi_attn_kv_len(&pr, b) > max_kv) max_kv = fi_attn_kv_len(&pr, b);
    }
    kp->q_len = max_q, kp->kv_len = max_kv;

    /* Mask program and score modifiers. */
    if (p->mask && (st = flatten_mask(p->mask, kp, err))) return st;
    if (p->score_mod) {
        const fi_score_mod *sm = p->score_mod;
        if (sm->n_steps > FI_CUDA_MAX_SCORE_STEPS)
            return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: more than %d score modifiers",
                                FI_CUDA_MAX_SCORE_STEPS);
        bool alibi = false;
        for (int i = 0; i < sm->n_steps; i++) {
            if (sm->steps[i].kind == FI_SCORE_CALLBACK)
                return fi_error_set(err, FI_ERR_UNSUPPORTED,
                                    "CUDA: score modifiers from C callbacks cannot run on the GPU");
            kp->step_kind[i] = sm->steps[i].kind == FI_SCORE_SOFTCAP ? FI_CUDA_SCORE_SOFTCAP : FI_CUDA_SCORE_ALIBI;
            kp->step_cap[i] = (float)sm->steps[i].cap;
            alibi |= sm->steps[i].kind == FI_SCORE_ALIBI;
        }
        kp->n_steps = sm->n_steps;
        if (alibi) {
            float *slopes = (float *)malloc((size_t)pr.hq * sizeof *slopes);
            if (!slopes) return fi_error_set(err, FI_ERR_NOMEM, "CUDA: out of memory");
            for (int64_t h = 0; h < pr.hq; h++) slopes[h] = (float)fi_score_mod_alibi_slope(h, pr.hq);
            void *d;
            st = plan_upload(pl, slopes, (size_t)pr.hq * sizeof *slopes, &d, err);
            free(slopes);
            if (st) return st;
            kp->alibi_slopes = (const float *)d;
        }
    }
    pl->transform = kp->n_steps > 0 || !(pr.scale > 0.f);
    if (x) { /* expressions: compiled prefill kernel (mask classified on the GPU below) */
        if (x->score_expr && *x->score_expr) pl->transform = true;
        if ((st = fi_nvrtc_plan_create(x, cache, dim, pl->bf16, pl->transform, kp, &pl->expr, err))) return st;
    }

    /* Index arrays. */
    void *d;
    if (pr.mask_in.segments && p->mask && fi_mask_needs_segments(p->mask)) {
        const int64_t rows = pr.mask_in.segments_batch ? pr.mask_in.segments_batch : 1;
        if ((st = plan_upload(pl, pr.mask_in.segments, (size_t)(rows * pr.mask_in.segments_len) * 4, &d, err)))
            return st;
        kp->segments = (const int32_t *)d;
        kp->seg_len = pr.mask_in.segments_len;
        kp->seg_batch = pr.mask_in.segments_batch ? 1 : 0;
        /* Sorted ids let the kernels treat a document as one key interval per query row. */
        kp->seg_sorted = 1;
        for (int64_t r = 0; r < rows && kp->seg_sorted; r++) {
            const int32_t *s = pr.mask_in.segments + r * pr.mask_in.segments_len;
            for (int64_t i = 1; i < pr.mask_in.segments_len; i++)
                if (s[i] < s[i - 1]) {
                    kp->seg_sorted = 0;
                    break;
                }
        }
    }
    if (pr.varlen) {
        kp->varlen = 1;
        if ((st = plan_upload(pl, p->cu_seqlens_q, (size_t)(p->n_seqs + 1) * 4, &d, err))) return st;
        kp->cu_q = (const int32_t *)d;
        if ((st = plan_upload(pl, p->cu_seqlens_k, (size_t)(p->n_seqs + 1) * 4, &d, err))) return st;
        kp->cu_k = (const int32_t *)d;
    }
    if (pr.paged) {
        const fi_paged_kv *pk = p->paged_kv;
        kp->paged = 1;
        kp->k_pages = pk->k_pages, kp->v_pages = pk->v_pages;
        kp->page_size = pk->page_size, kp->max_pages = pk->max_pages_per_seq;
        if ((st = plan_upload(pl, pk->page_table, (size_t)(pr.n_batch * pk->max_pages_per_seq) * 4, &d, err)))
            return st;
        kp->page_table = (const int32_t *)d;
        if ((st = plan_upload(pl, pk->seq_lens, (size_t)pr.n_batch * 4, &d, err))) return st;
        kp->seq_lens = (const int32_t *)d;
    }

    /* Block mask for the kernel's tiles. */
    pl->decode = !pl->expr && !pr.varlen && p->q.len == 1;
    const int32_t bq = FI_CUDA_FLASH_BLOCK_Q;
    pl->wgmma = !pl->decode && !pl->expr && !pl->transform && wgmma_enabled();
    const int32_t bkv = pl->decode  ? FI_CUDA_DECODE_BLOCK_KV
                        : pl->wgmma ? FI_CUDA_WGMMA_BLOCK_KV
                                    : fi_cuda_flash_block_kv(dim);
    if (fi_nvrtc_plan_has_mask(pl->expr)) {
        kp->num_splits = 1;
        return fi_nvrtc_plan_block_mask(pl->expr, kp, max_q, max_kv, bq, bkv, err);
    }
    const fi_block_mask *bm = p->block_mask;
    fi_block_mask *own_bm = NULL;
    fi_mask *full = NULL;
    if (!bm || bm->block_q != bq || bm->block_kv != bkv || bm->q_len != max_q || bm->kv_len != max_kv ||
        bm->q_offset != pr.mask_in.q_offset || (bm->batch != 1 && bm->batch != pr.n_batch) ||
        (bm->heads != 1 && bm->heads != pr.hq)) {
        const fi_mask *m = p->mask;
        if (!m) {
            if ((st = fi_mask_parse("full", &full, err))) return st;
            m = full;
        }
        st = fi_block_mask_build(m, &pr.mask_in, pr.n_batch, pr.hq, max_q, max_kv, bq, bkv, &own_bm, err);
        fi_mask_free(full);
        if (st) return st;
        bm = own_bm;
    }
    const size_t rows = (size_t)(bm->batch * bm->heads * bm->n_q_blocks);
    const size_t cells = rows * (size_t)bm->n_kv_blocks;
    kp->bm_batch = (int32_t)bm->batch, kp->bm_heads = (int32_t)bm->heads;
    kp->n_q_blocks = (int32_t)bm->n_q_blocks, kp->n_kv_blocks = (int32_t)bm->n_kv_blocks;
    kp->block_q = bq, kp->block_kv = bkv;
    if (!(st = plan_upload(pl, bm->kv_num_blocks, rows * 4, &d, err))) kp->kv_num = (const int32_t *)d;
    if (!st && !(st = plan_upload(pl, bm->kv_indices, cells * 4, &d, err))) kp->kv_idx = (const int32_t *)d;
    if (!st && !(st = plan_upload(pl, bm->full_kv_num_blocks, rows * 4, &d, err))) kp->full_num = (const int32_t *)d;
    if (!st && !(st = plan_upload(pl, bm->full_kv_indices, cells * 4, &d, err))) kp->full_idx = (const int32_t *)d;
    const bool head_dependent = bm->heads != 1;
    fi_block_mask_free(own_bm);
    if (st) return st;
    if (kp->n_q_blocks == 0) kp->n_q_blocks = 1; /* empty queries: a grid of one exiting CTA */

    if (pl->decode) {
        if (head_dependent)
            return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: decode needs a block mask shared by all heads");
        kp->heads_per_cta = 8;
        while (kp->group % kp->heads_per_cta) kp->heads_per_cta >>= 1;
        const int64_t ctas = pr.n_batch * pr.hkv * (pr.group / kp->heads_per_cta);
        /* Also raises the decode kernel's shared-memory limit, once per plan rather than per run. */
        const int per_sm = fi_cuda_decode_ctas_per_sm(dim, pl->bf16, kp->heads_per_cta);
        kp->num_splits = p->num_splits > 0 ? p->num_splits
                                            : auto_splits(ctas, kp->n_kv_blocks ? kp->n_kv_blocks : 1, per_sm);
        if (kp->num_splits > 65535) kp->num_splits = 65535;
        if (kp->num_splits > 1) {
            const size_t n = (size_t)kp->num_splits * (size_t)(pr.n_batch * pr.hq);
            if ((st = plan_upload(pl, NULL, n * (size_t)dim * 4, &d, err))) return st;
            kp->ws_o = (float *)d;
            if ((st = plan_upload(pl, NULL, n * 4, &d, err))) return st;
            kp->ws_lse = (float *)d;
        }
    } else {
        kp->num_splits = 1;
    }
    return FI_OK;
}

extern "C" void fi_cuda_attn_plan_free(fi_cuda_attn_plan *pl) {
    if (!pl) return;
    for (int i = 0; i < pl->n_allocs; i++) cudaFree(pl->allocs[i]);
    fi_nvrtc_plan_free(pl->expr);
    free(pl);
}

extern "C" fi_status fi_cuda_attn_plan_create(const fi_attn_params *p, fi_cuda_attn_plan **out,
                                              fi_error *err) {
    return fi_cuda_attn_plan_create_expr(p, NULL, NULL, out, err);
}

extern "C" fi_status fi_cuda_attn_plan_create_expr(const fi_attn_params *p, const fi_cuda_expr *x,
                                                   fi_cuda_kernel_cache *cache, fi_cuda_attn_plan **out,
                                                   fi_error *err) {
    if (!out) return fi_error_set(err, FI_ERR_INVALID, "CUDA plan: no output pointer");
    *out = NULL;
    if (!p) return fi_error_set(err, FI_ERR_INVALID, "CUDA plan: no parameters");
    if (!fi_cuda_available(err)) return err ? err->code : FI_ERR_UNSUPPORTED;
    fi_cuda_attn_plan *pl = (fi_cuda_attn_plan *)calloc(1, sizeof *pl);
    if (!pl) return fi_error_set(err, FI_ERR_NOMEM, "CUDA plan: out of memory");
    fi_status st = plan_build(p, x, cache, pl, err);
    if (st) {
        fi_cuda_attn_plan_free(pl);
        return st;
    }
    *out = pl;
    return FI_OK;
}

extern "C" fi_status fi_cuda_attn_plan_run(const fi_cuda_attn_plan *pl, void *stream, fi_error *err) {
    if (!pl) return fi_error_set(err, FI_ERR_INVALID, "CUDA plan: NULL plan");
    cudaStream_t s = (cudaStream_t)stream;
    if (pl->expr) return fi_nvrtc_plan_launch(pl->expr, &pl->kp, s, err);
    cudaError_t e = pl->decode  ? fi_cuda_launch_decode(pl->kp, pl->dim, pl->bf16, s)
                    : pl->wgmma ? fi_cuda_launch_flash_wgmma(pl->kp, pl->dim, pl->bf16, s)
                                : fi_cuda_launch_flash(pl->kp, pl->dim, pl->bf16, pl->transform, s);
    if (e != cudaSuccess) return cuda_fail(err, e, pl->decode ? "decode kernel launch" : "prefill kernel launch");
    return FI_OK;
}

extern "C" const char *fi_cuda_attn_plan_kernel(const fi_cuda_attn_plan *pl) {
    if (!pl) return "prefill";
    return pl->decode ? "decode" : pl->wgmma ? "prefill-wgmma" : "prefill";
}

extern "C" int fi_cuda_attn_plan_splits(const fi_cuda_attn_plan *pl) { return pl ? pl->kp.num_splits : 0; }

extern "C" fi_status fi_cuda_attn_forward_device(const fi_attn_params *p, fi_error *err) {
    return forward_device_expr(p, NULL, NULL, err);
}

static fi_status forward_device_expr(const fi_attn_params *p, const fi_cuda_expr *x, fi_cuda_kernel_cache *cache,
                                     fi_error *err) {
    fi_cuda_attn_plan *pl;
    fi_status st = fi_cuda_attn_plan_create_expr(p, x, cache, &pl, err);
    if (st) return st;
    st = fi_cuda_attn_plan_run(pl, NULL, err);
    if (!st) {
        cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess) st = cuda_fail(err, e, "attention kernel");
    }
    fi_cuda_attn_plan_free(pl);
    return st;
}

/* ---- host-pointer API ---------------------------------------------------- */

typedef struct host_upload {
    void *bufs[8];
    int n;
} host_upload;

static void host_upload_free(host_upload *u) {
    for (int i = 0; i < u->n; i++) cudaFree(u->bufs[i]);
    u->n = 0;
}

static float max_abs_view(const fi_attn_tensor *t) {
    float mx = 0.f;
    for (int64_t b = 0; b < t->batch; b++)
        for (int64_t h = 0; h < t->heads; h++)
            for (int64_t i = 0; i < t->len; i++) {
                const int64_t off = b * t->stride_batch + h * t->stride_head + i * t->stride_len;
                for (int64_t c = 0; c < t->dim; c++) {
                    const float x = fabsf(fi_load_f32(t->data, t->dtype, off + c));
                    if (x > mx || x != x) mx = x != x ? INFINITY : x;
                }
            }
    return mx;
}

static uint16_t to16(float x, fi_dtype t) { return t == FI_DTYPE_BF16 ? fi_f32_to_bf16(x) : fi_f32_to_f16(x); }

/* Converts a strided view into a contiguous 16-bit device copy; *view becomes it. */
static fi_status upload_view(fi_attn_tensor *view, fi_dtype to, host_upload *u, fi_error *err) {
    const fi_attn_tensor t = *view;
    const int64_t n = t.batch * t.heads * t.len * t.dim;
    uint16_t *h = (uint16_t *)malloc((size_t)(n ? n : 1) * 2);
    if (!h) return fi_error_set(err, FI_ERR_NOMEM, "CUDA: out of memory");
    int64_t k = 0;
    for (int64_t b = 0; b < t.batch; b++)
        for (int64_t hh = 0; hh < t.heads; hh++)
            for (int64_t i = 0; i < t.len; i++) {
                const int64_t off = b * t.stride_batch + hh * t.stride_head + i * t.stride_len;
                if (t.dtype == to) {
                    memcpy(h + k, (const uint16_t *)t.data + off, (size_t)t.dim * 2);
                    k += t.dim;
                } else {
                    for (int64_t c = 0; c < t.dim; c++) h[k++] = to16(fi_load_f32(t.data, t.dtype, off + c), to);
                }
            }
    void *d = NULL;
    cudaError_t e = cudaMalloc(&d, (size_t)(n ? n : 1) * 2);
    if (e == cudaSuccess) {
        u->bufs[u->n++] = d;
        e = cudaMemcpy(d, h, (size_t)n * 2, cudaMemcpyHostToDevice);
    }
    free(h);
    if (e != cudaSuccess) return cuda_fail(err, e, "uploading attention inputs");
    *view = fi_attn_tensor_contiguous(d, to, t.batch, t.heads, t.len, t.dim);
    return FI_OK;
}

extern "C" fi_status fi_cuda_attn_forward(const fi_attn_params *p, fi_error *err) {
    return fi_cuda_attn_forward_expr(p, NULL, NULL, err);
}

extern "C" fi_status fi_cuda_attn_forward_expr(const fi_attn_params *p, const fi_cuda_expr *x,
                                               fi_cuda_kernel_cache *cache, fi_error *err) {
    if (!p) return fi_error_set(err, FI_ERR_INVALID, "attention: no parameters");
    fi_attn_problem pr;
    fi_status st = fi_attn_problem_init(&pr, p, err);
    if (st) return st;
    if (pr.dim != 64 && pr.dim != 128)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: head dim %lld is not supported (64, 128)",
                            (long long)pr.dim);
    if (!fi_cuda_available(err)) return err ? err->code : FI_ERR_UNSUPPORTED;

    /* One 16-bit type for all inputs: keep bf16/f16 as given, else f16 unless a
     * value exceeds its range. */
    fi_dtype to;
    if (p->q.dtype == pr.kv_dtype && p->q.dtype != FI_DTYPE_F32) {
        to = p->q.dtype;
    } else {
        float mx = max_abs_view(&p->q);
        if (pr.paged) {
            const fi_paged_kv *pk = p->paged_kv;
            const int64_t rows = pk->n_pages * pk->heads * pk->page_size;
            fi_attn_tensor kt = fi_attn_tensor_contiguous(pk->k_pages, pk->dtype, 1, 1, rows, pk->dim);
            fi_attn_tensor vt = fi_attn_tensor_contiguous(pk->v_pages, pk->dtype, 1, 1, rows, pk->dim);
            mx = fmaxf(mx, fmaxf(max_abs_view(&kt), max_abs_view(&vt)));
        } else {
            mx = fmaxf(mx, fmaxf(max_abs_view(&p->k), max_abs_view(&p->v)));
        }
        to = mx <= 65504.f ? FI_DTYPE_F16 : FI_DTYPE_BF16;
    }

    host_upload u = {{0}, 0};
    fi_attn_params dp = *p;
    fi_paged_kv dpk;
    const int64_t out_rows = p->q.batch * p->q.heads * p->q.len;
    float *d_out = NULL, *d_lse = NULL;
    cudaError_t e;
    if ((st = upload_view(&dp.q, to, &u, err))) goto done;
    if (pr.paged) {
        dpk = *p->paged_kv;
        const int64_t rows = dpk.n_pages * dpk.heads * dpk.page_size;
        fi_attn_tensor kt = fi_attn_tensor_contiguous(dpk.k_pages, dpk.dtype, 1, 1, rows, dpk.dim);
        fi_attn_tensor vt = fi_attn_tensor_contiguous(dpk.v_pages, dpk.dtype, 1, 1, rows, dpk.dim);
        if ((st = upload_view(&kt, to, &u, err)) || (st = upload_view(&vt, to, &u, err))) goto done;
        dpk.k_pages = kt.data, dpk.v_pages = vt.data, dpk.dtype = to;
        dp.paged_kv = &dpk;
    } else {
        if ((st = upload_view(&dp.k, to, &u, err)) || (st = upload_view(&dp.v, to, &u, err))) goto done;
    }
    if ((e = cudaMalloc((void **)&d_out, (size_t)(out_rows ? out_rows : 1) * (size_t)pr.dim * 4)) != cudaSuccess) {
        st = cuda_fail(err, e, "cudaMalloc");
        goto done;
    }
    u.bufs[u.n++] = d_out;
    if (p->lse) {
        if ((e = cudaMalloc((void **)&d_lse, (size_t)(out_rows ? out_rows : 1) * 4)) != cudaSuccess) {
            st = cuda_fail(err, e, "cudaMalloc");
            goto done;
        }
        u.bufs[u.n++] = d_lse;
    }
    dp.out = d_out;
    dp.lse = d_lse;
    if (out_rows > 0 && (st = forward_device_expr(&dp, x, cache, err))) goto done;
    if (out_rows > 0 &&
        ((e = cudaMemcpy(p->out, d_out, (size_t)out_rows * (size_t)pr.dim * 4, cudaMemcpyDeviceToHost)) != cudaSuccess ||
         (p->lse && (e = cudaMemcpy(p->lse, d_lse, (size_t)out_rows * 4, cudaMemcpyDeviceToHost)) != cudaSuccess))) {
        st = cuda_fail(err, e, "copying the result back");
        goto done;
    }
done:
    host_upload_free(&u);
    return st;
}
