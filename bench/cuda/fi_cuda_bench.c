/* GPU attention benchmark: the shapes of the CUDA issue, timed with CUDA events
 * (median of repeated runs after warm-up; like triton's do_bench, L2 is flushed
 * before each run unless --no-flush), through the device-pointer plan API.
 * --splits N forces the decode split count, --only SUBSTRING picks cases.
 * Prints one line per case:
 *   FI <name> <median ms> <TFLOP/s or GB/s> <unit> <mask density> <kernel> <splits>
 * TFLOP/s count only unmasked work: 4 * B * H * Lq * Lk * D * density, where the
 * density is the exact fraction of kept (q, kv) pairs. Decode reports GB/s of K/V
 * read. bench/cuda/bench_torch.py runs this program and PyTorch side by side. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "core/dtype.h"
#include "flexinfer.h"
#include "flexinfer_cuda.h"

#define CHECK_CUDA(x)                                                                     \
    do {                                                                                  \
        cudaError_t e_ = (x);                                                             \
        if (e_ != cudaSuccess) {                                                          \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

typedef struct bench_case {
    const char *name;
    int64_t b, hq, hkv, lq, lk, d;
    const char *mask;
    int docs; /* > 0: `document` over this many equal documents */
} bench_case;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float rng_normalish(void) { /* sum of uniforms: cheap, roughly N(0, 1) */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        s += (float)((rng_state >> 40) & 0xffffff) / 16777216.0f;
    }
    return (s - 2.0f) * 1.7320508f;
}

static void *device_random_bf16(int64_t n) {
    uint16_t *h = malloc((size_t)n * 2);
    if (!h) exit(1);
    for (int64_t i = 0; i < n; i++) h[i] = fi_f32_to_bf16(rng_normalish());
    void *d;
    CHECK_CUDA(cudaMalloc(&d, (size_t)n * 2));
    CHECK_CUDA(cudaMemcpy(d, h, (size_t)n * 2, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Exact fraction of kept pairs (masks here do not depend on batch or head). */
static double mask_density(const fi_mask *m, const fi_mask_inputs *in, int64_t lq, int64_t lk) {
    if (!m) return 1.0;
    int64_t kept = 0;
    for (int64_t i = 0; i < lq; i++)
        for (int64_t j = 0; j < lk; j++) kept += fi_mask_keep(m, in, 0, 0, in->q_offset + i, j);
    return (double)kept / ((double)lq * (double)lk);
}

/* Like triton.testing.do_bench (the PyTorch columns): before every timed run a
 * 256 MB buffer is cleared, so each run starts with a cold L2 and the GPU is busy
 * while the host enqueues the run (the launch latency is not timed). flush NULL:
 * back-to-back runs, each timed from an idle GPU (launch latency included). */
#define FLUSH_BYTES (256u << 20)

static float time_plan(const fi_cuda_attn_plan *plan, int iters, void *flush) {
    fi_error err = {0};
    cudaEvent_t a, b;
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++)
        if (fi_cuda_attn_plan_run(plan, NULL, &err)) {
            fprintf(stderr, "run: %s\n", err.msg);
            exit(1);
        }
    CHECK_CUDA(cudaDeviceSynchronize());
    float *ms = malloc((size_t)iters * sizeof *ms);
    for (int i = 0; i < iters; i++) {
        if (flush) CHECK_CUDA(cudaMemsetAsync(flush, 0, FLUSH_BYTES, 0));
        CHECK_CUDA(cudaEventRecord(a, 0));
        fi_cuda_attn_plan_run(plan, NULL, &err);
        CHECK_CUDA(cudaEventRecord(b, 0));
        CHECK_CUDA(cudaEventSynchronize(b));
        CHECK_CUDA(cudaEventElapsedTime(&ms[i], a, b));
    }
    qsort(ms, (size_t)iters, sizeof *ms, cmp_float);
    float med = ms[iters / 2];
    free(ms);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return med;
}

static void run_prefill(const bench_case *c, int iters, void *flush) {
    fi_error err = {0};
    void *q = device_random_bf16(c->b * c->hq * c->lq * c->d);
    void *k = device_random_bf16(c->b * c->hkv * c->lk * c->d);
    void *v = device_random_bf16(c->b * c->hkv * c->lk * c->d);
    float *out;
    CHECK_CUDA(cudaMalloc((void **)&out, (size_t)(c->b * c->hq * c->lq * c->d) * 4));
    fi_mask *m = NULL;
    if (c->mask && fi_mask_parse(c->mask, &m, &err)) {
        fprintf(stderr, "%s: %s\n", c->name, err.msg);
        exit(1);
    }
    int32_t *seg = NULL;
    fi_mask_inputs in = {0};
    if (c->docs > 0) {
        seg = malloc((size_t)c->lk * 4);
        for (int64_t i = 0; i < c->lk; i++) seg[i] = (int32_t)(i * c->docs / c->lk);
        in.segments = seg, in.segments_len = c->lk;
    }
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, FI_DTYPE_BF16, c->b, c->hq, c->lq, c->d),
                        .k = fi_attn_tensor_contiguous(k, FI_DTYPE_BF16, c->b, c->hkv, c->lk, c->d),
                        .v = fi_attn_tensor_contiguous(v, FI_DTYPE_BF16, c->b, c->hkv, c->lk, c->d),
                        .out = out, .mask = m, .mask_in = &in};
    fi_cuda_attn_plan *plan;
    if (fi_cuda_attn_plan_create(&p, &plan, &err)) {
        fprintf(stderr, "%s: %s\n", c->name, err.msg);
        exit(1);
    }
    const double density = mask_density(m, &in, c->lq, c->lk);
    const float ms = time_plan(plan, iters, flush);
    const double flops = 4.0 * c->b * c->hq * c->lq * c->lk * c->d * density;
    printf("FI %s %.4f %.1f TFLOP/s %.4f %s %d\n", c->name, ms, flops / (ms * 1e-3) / 1e12, density,
           fi_cuda_attn_plan_kernel(plan), fi_cuda_attn_plan_splits(plan));
    fflush(stdout);
    fi_cuda_attn_plan_free(plan);
    fi_mask_free(m);
    free(seg);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(out);
}

/* Decode over a paged cache (page size 16, pages shuffled in the pool). */
static void run_decode(const bench_case *c, int iters, int splits, void *flush) {
    fi_error err = {0};
    const int64_t page = 16, max_pages = (c->lk + page - 1) / page, n_pages = c->b * max_pages;
    void *kp = device_random_bf16(n_pages * c->hkv * page * c->d);
    void *vp = device_random_bf16(n_pages * c->hkv * page * c->d);
    void *q = device_random_bf16(c->b * c->hq * c->d);
    float *out;
    CHECK_CUDA(cudaMalloc((void **)&out, (size_t)(c->b * c->hq * c->d) * 4));
    int32_t *table = malloc((size_t)n_pages * 4), *lens = malloc((size_t)c->b * 4);
    for (int64_t i = 0; i < n_pages; i++) table[i] = (int32_t)i;
    for (int64_t i = n_pages - 1; i > 0; i--) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        int64_t j = (int64_t)((rng_state >> 33) % (uint64_t)(i + 1));
        int32_t x = table[i];
        table[i] = table[j], table[j] = x;
    }
    for (int64_t b = 0; b < c->b; b++) lens[b] = (int32_t)c->lk;
    fi_paged_kv pk = {.k_pages = kp, .v_pages = vp, .dtype = FI_DTYPE_BF16, .n_pages = n_pages,
                      .page_size = page, .heads = c->hkv, .dim = c->d, .page_table = table,
                      .max_pages_per_seq = max_pages, .seq_lens = lens};
    fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, FI_DTYPE_BF16, c->b, c->hq, 1, c->d),
                        .paged_kv = &pk, .out = out, .num_splits = splits};
    fi_cuda_attn_plan *plan;
    if (fi_cuda_attn_plan_create(&p, &plan, &err)) {
        fprintf(stderr, "%s: %s\n", c->name, err.msg);
        exit(1);
    }
    const float ms = time_plan(plan, iters, flush);
    const double bytes = 2.0 * c->b * c->hkv * c->lk * c->d * 2;
    printf("FI %s %.4f %.1f GB/s 1.0000 %s %d\n", c->name, ms, bytes / (ms * 1e-3) / 1e9,
           fi_cuda_attn_plan_kernel(plan), fi_cuda_attn_plan_splits(plan));
    fflush(stdout);
    fi_cuda_attn_plan_free(plan);
    free(table), free(lens);
    cudaFree(q), cudaFree(kp), cudaFree(vp), cudaFree(out);
}

static const bench_case cases[] = {
    {"B4_H16_S4096_D128_full", 4, 16, 16, 4096, 4096, 128, NULL, 0},
    {"B4_H16_S4096_D128_causal", 4, 16, 16, 4096, 4096, 128, "causal", 0},
    {"B2_H16_S8192_D128_full", 2, 16, 16, 8192, 8192, 128, NULL, 0},
    {"B2_H16_S8192_D128_causal", 2, 16, 16, 8192, 8192, 128, "causal", 0},
    {"B4_H32_S4096_D64_full", 4, 32, 32, 4096, 4096, 64, NULL, 0},
    {"B4_H32_S4096_D64_causal", 4, 32, 32, 4096, 4096, 64, "causal", 0},
    {"B4_H16_S4096_D128_document8", 4, 16, 16, 4096, 4096, 128, "document", 8},
    {"B4_H16_S4096_D128_causal_document8", 4, 16, 16, 4096, 4096, 128, "causal & document", 8},
    {"B4_H16_S4096_D128_causal_window1024", 4, 16, 16, 4096, 4096, 128, "causal & window:1024", 0},
    {"decode_B1_KV32768", 1, 32, 8, 1, 32768, 128, NULL, -1},
    {"decode_B8_KV8192", 8, 32, 8, 1, 8192, 128, NULL, -1},
    {"decode_B32_KV4096", 32, 32, 8, 1, 4096, 128, NULL, -1},
};

int main(int argc, char **argv) {
    int iters = 20, splits = 0, flush_l2 = 1;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--splits") && i + 1 < argc) splits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-flush")) flush_l2 = 0;
        else {
            fprintf(stderr, "usage: %s [--iters N] [--only SUBSTRING] [--splits N (decode; 0 automatic)] [--no-flush]\n",
                    argv[0]);
            return 2;
        }
    }
    if (iters < 1) iters = 1;
    fi_error err = {0};
    if (!fi_cuda_available(&err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    struct cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    printf("# device: %s, %d SMs; %s\n", prop.name, prop.multiProcessorCount,
           flush_l2 ? "L2 flushed before each timed run" : "back-to-back runs, no L2 flush");
    void *flush = NULL;
    if (flush_l2) CHECK_CUDA(cudaMalloc(&flush, FLUSH_BYTES));
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (only && !strstr(cases[i].name, only)) continue;
        if (cases[i].docs < 0) run_decode(&cases[i], iters, splits, flush);
        else run_prefill(&cases[i], iters, flush);
    }
    cudaFree(flush);
    return 0;
}
