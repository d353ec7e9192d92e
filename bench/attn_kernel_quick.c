/* Quick timing of the CPU flash-attention kernel (not the full benchmark):
 *   prefill B1 H8 L4096 D128, masks full and causal  -> GFLOP/s (4 B H L^2 D x density)
 *   decode  Lq 1, Lk 32768, Hq 32 / Hkv 8, D 128      -> GB/s of K/V read
 * for 1 and 2 threads. Usage: attn_kernel_quick [L] [reps] [prefill|decode|kernels|all] [threads]
 * (threads: run only that thread count; default 1 and 2)
 * "kernels" times the per-tile microkernels of the current SIMD level alone (one thread,
 * a 64-key D128 tile in cache, 4 rows as in GQA decode and 64 rows as in prefill): ns per
 * key, best of reps x 1000 calls, so that kernel changes can be compared on a busy machine. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/flash_tile.h"
#include "core/cpu.h"
#include "flexinfer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* n floats, 64-byte aligned (aligned_alloc wants a size that is a multiple of 64). */
static float *bench_floats(int64_t n) { return aligned_alloc(64, ((size_t)n * sizeof(float) + 63) & ~(size_t)63); }

static double best_time(fi_attn_params *p, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now();
        fi_error err = {0};
        if (fi_attn_forward(p, &err) != FI_OK) {
            fprintf(stderr, "forward failed: %s\n", err.msg);
            exit(1);
        }
        const double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

/* Best time per key of each microkernel on one cached tile (see the file comment). */
static void time_kernels(int reps) {
    enum { NK = 64, D = 128, ROWS = 64 };
    const fi_flash_tile_ops *ops = fi_flash_tile_select();
    float *q = aligned_alloc(64, sizeof(float) * ROWS * D), *qt = aligned_alloc(64, sizeof(float) * ROWS * D);
    float *k = aligned_alloc(64, sizeof(float) * NK * D), *v = aligned_alloc(64, sizeof(float) * NK * D);
    float *st = aligned_alloc(64, sizeof(float) * NK * ROWS), *o = aligned_alloc(64, sizeof(float) * ROWS * D);
    float m[ROWS], l[ROWS], alpha[ROWS];
    for (int i = 0; i < ROWS * D; i++) q[i] = (float)(rand() % 100) / 1000.0f, o[i] = 0.0f;
    for (int c = 0; c < D; c++)
        for (int r = 0; r < ROWS; r++) qt[c * ROWS + r] = q[r * D + c];
    for (int i = 0; i < NK * D; i++) k[i] = v[i] = (float)(rand() % 100) / 100.0f;
    const int row_counts[2] = {4, ROWS};
    for (int ri = 0; ri < 2; ri++) {
        const int rows = row_counts[ri];
        /* the rows the driver gives the softmax: padded to its step below 16 rows */
        const int step = ops->softmax_row_step > 0 ? ops->softmax_row_step : FI_FLASH_ROW_ALIGN;
        const int rows_sm = rows < 16 ? (rows + step - 1) / step * step : rows;
        for (int r = 0; r < ROWS; r++) m[r] = -INFINITY, l[r] = 0.0f;
        double best[3] = {1e30, 1e30, 1e30};
        for (int rep = 0; rep < reps * 1000; rep++) {
            const double t0 = now();
            if (ops->qk && rows >= 16) ops->qk(qt, ROWS, rows, k, D, NK, D, st, ROWS);
            else ops->qk_rows(q, D, rows, k, D, NK, D, st, ROWS);
            const double t1 = now();
            ops->softmax(st, ROWS, rows_sm, NK, m, l, alpha);
            const double t2 = now();
            ops->pv(st, ROWS, rows, NK, v, D, D, alpha, o, D);
            const double t3 = now();
            if (t1 - t0 < best[0]) best[0] = t1 - t0;
            if (t2 - t1 < best[1]) best[1] = t2 - t1;
            if (t3 - t2 < best[2]) best[2] = t3 - t2;
        }
        printf("kernels %d rows, 64-key D128 tile: qk %.1f ns/key  softmax %.1f ns/key  pv %.1f ns/key\n", rows,
               best[0] / NK * 1e9, best[1] / NK * 1e9, best[2] / NK * 1e9);
    }
    free(q), free(qt), free(k), free(v), free(st), free(o);
}

int main(int argc, char **argv) {
    const int64_t L = argc > 1 ? atoll(argv[1]) : 4096, H = 8, D = 128;
    const int reps = argc > 2 ? atoi(argv[2]) : 3;
    const char *only = argc > 3 ? argv[3] : ""; /* "prefill", "decode" or "kernels" to run one part */
    const int th_only = argc > 4 ? atoi(argv[4]) : 0;
    const int th_lo = th_only > 0 ? th_only : 1, th_hi = th_only > 0 ? th_only : 2;
    if (strcmp(only, "kernels") == 0) {
        printf("simd %s\n", fi_simd_level_name(fi_cpu_simd_level()));
        time_kernels(reps);
        return 0;
    }
    /* 64-byte aligned like the model's KV cache (see bench/attn_bench.c) */
    float *q = bench_floats(H * L * D), *k = bench_floats(H * L * D);
    float *v = bench_floats(H * L * D), *o = bench_floats(H * L * D);
    srand(1);
    for (int64_t i = 0; i < H * L * D; i++) {
        q[i] = (float)rand() / RAND_MAX - 0.5f;
        k[i] = (float)rand() / RAND_MAX - 0.5f;
        v[i] = (float)rand() / RAND_MAX - 0.5f;
    }
    printf("simd %s\n", fi_simd_level_name(fi_cpu_simd_level()));
    const char *masks[] = {"full", "causal", "causal & window:1024"};
    for (int mi = 0; mi < 3 && strcmp(only, "decode") != 0; mi++) {
        fi_mask *m = NULL;
        if (fi_mask_parse(masks[mi], &m, NULL) != FI_OK) return 1;
        double density = 1.0;
        if (mi == 1) density = (double)(L + 1) / (2.0 * L);
        if (mi == 2) density = (1024.0 * L - 1024.0 * 1023.0 / 2) / ((double)L * L);
        for (int th = th_lo; th <= th_hi; th++) {
            fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, FI_DTYPE_F32, 1, H, L, D),
                                .k = fi_attn_tensor_contiguous(k, FI_DTYPE_F32, 1, H, L, D),
                                .v = fi_attn_tensor_contiguous(v, FI_DTYPE_F32, 1, H, L, D),
                                .out = o, .mask = m, .threads = th};
            const double t = best_time(&p, reps);
            const double flop = 4.0 * H * (double)L * L * D * density;
            printf("prefill B1 H8 L%lld D128 %-22s threads %d: %8.2f ms  %7.1f GFLOP/s\n", (long long)L,
                   masks[mi], th, t * 1e3, flop / t * 1e-9);
        }
        fi_mask_free(m);
    }
    /* GQA: Hkv 2 (4 query heads share each K/V tile). */
    for (int th = th_lo; th <= th_hi && strcmp(only, "decode") != 0; th++) {
        fi_attn_params p = {.q = fi_attn_tensor_contiguous(q, FI_DTYPE_F32, 1, H, L, D),
                            .k = fi_attn_tensor_contiguous(k, FI_DTYPE_F32, 1, 2, L, D),
                            .v = fi_attn_tensor_contiguous(v, FI_DTYPE_F32, 1, 2, L, D),
                            .out = o, .threads = th};
        const double t = best_time(&p, reps);
        printf("prefill B1 H8/Hkv2 L%lld D128 full            threads %d: %8.2f ms  %7.1f GFLOP/s\n", (long long)L,
               th, t * 1e3, 4.0 * H * (double)L * L * D / t * 1e-9);
    }
    if (strcmp(only, "prefill") == 0) return 0;
    /* Decode: Lq 1, Lk 32768, Hq 32, Hkv 8. */
    const int64_t lk = 32768, hq = 32, hkv = 8;
    float *kd = bench_floats(hkv * lk * D), *vd = bench_floats(hkv * lk * D);
    float *qd = bench_floats(hq * D), *od = bench_floats(hq * D);
    for (int64_t i = 0; i < hkv * lk * D; i++) kd[i] = (float)rand() / RAND_MAX - 0.5f, vd[i] = kd[i] * 0.5f;
    for (int64_t i = 0; i < hq * D; i++) qd[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int th = th_lo; th <= th_hi; th++) {
        fi_attn_params p = {.q = fi_attn_tensor_contiguous(qd, FI_DTYPE_F32, 1, hq, 1, D),
                            .k = fi_attn_tensor_contiguous(kd, FI_DTYPE_F32, 1, hkv, lk, D),
                            .v = fi_attn_tensor_contiguous(vd, FI_DTYPE_F32, 1, hkv, lk, D),
                            .out = od, .threads = th};
        const double t = best_time(&p, reps * 3);
        const double bytes = 2.0 * hkv * lk * D * sizeof(float);
        printf("decode Lq1 Lk32768 Hq32 Hkv8 D128 f32     threads %d: %8.3f ms  %7.1f GB/s (splits %d)\n", th,
               t * 1e3, bytes / t * 1e-9, fi_attn_auto_splits(&p));
    }
    free(q), free(k), free(v), free(o), free(kd), free(vd), free(qd), free(od);
    return 0;
}
