/* Matmul throughput on the SmolLM2-135M shapes: GB/s of weights streamed
 * (generation, n_tokens = 1) and GFLOP/s (prefill, n_tokens = 512), with 1
 * and 2 threads, for every weight type. Runs the way the model does: one
 * persistent OpenMP team, activations quantized by token range, rows split in
 * granule-aligned ranges, a barrier between the two. For n_tokens = 1 the
 * product cycles through enough copies of the matrix (>= 64 MiB) that weights
 * come from memory, not cache, as in a real forward pass.
 *
 * usage: matmul_bench [TYPE ...]   (default: F32 F16 BF16 Q4_0 Q4_1 Q8_0)
 * env:   FI_SIMD caps the SIMD path; BENCH_REPS (default 7) repetitions, median reported
 *        (BENCH_BEST=1: the fastest rep, steadier on a shared machine for compute-bound kernels);
 *        BENCH_N=1 or 512 runs only that column; BENCH_COPIES=k overrides the copy count;
 *        BENCH_SHAPE=text runs only shapes whose name contains it; BENCH_THREADS=1 or 2 only that count. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cpu.h"
#include "core/dtype.h"
#include "model/matmul.h"

typedef struct shape {
    const char *name;
    int64_t rows, cols;
} shape;

static const shape k_shapes[] = {
    {"q/o 576x576", 576, 576},   {"k/v 192x576", 192, 576},         {"up 1536x576", 1536, 576},
    {"down 576x1536", 576, 1536}, {"lm_head 49152x576", 49152, 576},
};

/* BENCH_CPUTIME=1 (1 thread only): time the thread's CPU time, which a busy
 * machine's preemptions do not inflate; for comparing kernels, not for reports. */
static double now_s(int threads) {
    static int use_cpu = -1;
    if (use_cpu < 0) use_cpu = getenv("BENCH_CPUTIME") && atoi(getenv("BENCH_CPUTIME")) != 0;
    if (use_cpu && threads == 1) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    return omp_get_wtime();
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng_state = 88172645463325252ull;
static uint8_t rng_byte(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 24);
}

static void fill_weights(uint32_t type, uint8_t *data, size_t bytes) {
    for (size_t k = 0; k < bytes; k++) data[k] = rng_byte();
    size_t blk = fi_ggml_block_bytes(type);
    uint16_t half = fi_f32_to_f16(0.01f);
    if (fi_ggml_block_size(type) == 32)
        for (size_t off = 0; off < bytes; off += blk) memcpy(data + off, &half, 2);
    else /* float types: values in [-1, 1), never subnormal (subnormals would time the FPU's slow path) */
        for (size_t i = 0; i < bytes / fi_ggml_block_bytes(type); i++) {
            float v = ((float)rng_byte() - 127.5f) / 128.0f;
            if (type == FI_GGML_F32) memcpy(data + 4 * i, &v, 4);
            else {
                uint16_t h = type == FI_GGML_F16 ? fi_f32_to_f16(v) : fi_f32_to_bf16(v);
                memcpy(data + 2 * i, &h, 2);
            }
        }
}

/* Median seconds of one pass over `copies` matrices with n_tokens tokens. */
static double time_pass(fi_matmul_weight **w, int copies, const float *x, int64_t n_tokens, float *y, void *act,
                        int threads, int reps) {
    double times[64];
    int64_t rows = fi_matmul_weight_rows(w[0]), granule = fi_matmul_row_granule(w[0]);
    int64_t units = (rows + granule - 1) / granule;
    for (int rep = 0; rep <= reps; rep++) { /* rep 0 warms up */
        double t0 = 0;
#pragma omp parallel num_threads(threads)
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
#pragma omp barrier
#pragma omp master
            t0 = now_s(threads);
            for (int c = 0; c < copies; c++) {
                fi_matmul_quantize_act(w[c], x, n_tokens, act, n_tokens * id / nt, n_tokens * (id + 1) / nt);
#pragma omp barrier
                fi_matmul_rows(w[c], act, n_tokens, y, rows, units * id / nt * granule,
                               units * (id + 1) / nt * granule);
#pragma omp barrier
            }
        }
        if (rep > 0) times[rep - 1] = now_s(threads) - t0;
    }
    qsort(times, (size_t)reps, sizeof times[0], cmp_double);
    const char *best = getenv("BENCH_BEST");
    return best && atoi(best) != 0 ? times[0] : times[reps / 2];
}

static void bench_type(uint32_t type, int reps) {
    for (size_t si = 0; si < sizeof k_shapes / sizeof k_shapes[0]; si++) {
        const shape *s = &k_shapes[si];
        if (getenv("BENCH_SHAPE") && !strstr(s->name, getenv("BENCH_SHAPE"))) continue;
        size_t bytes = fi_ggml_row_size(type, s->cols) * (size_t)s->rows;
        int copies = (int)((64u << 20) / bytes) + 1;
        if (copies > 256) copies = 256;
        if (getenv("BENCH_COPIES")) copies = atoi(getenv("BENCH_COPIES")) > 0 ? atoi(getenv("BENCH_COPIES")) : 1;
        uint8_t *data = malloc(bytes);
        fill_weights(type, data, bytes);
        /* Every weight is repacked into its own copy, so streaming the copies reads distinct bytes. */
        fi_matmul_weight **w = calloc((size_t)copies, sizeof *w);
        for (int c = 0; c < copies; c++) {
            fi_error err = {0};
            if (fi_matmul_weight_create(type, data, s->rows, s->cols, &w[c], &err) != FI_OK) {
                fprintf(stderr, "create: %s\n", err.msg);
                exit(1);
            }
        }
        int64_t max_tokens = 512;
        float *x = malloc((size_t)(max_tokens * s->cols) * sizeof(float));
        for (int64_t i = 0; i < max_tokens * s->cols; i++) x[i] = (float)((int)rng_byte() - 128) / 64.0f;
        float *y = malloc((size_t)(max_tokens * s->rows) * sizeof(float));
        void *act = aligned_alloc(64, (fi_matmul_act_size(w[0], max_tokens) + 63) & ~(size_t)63);
        for (int threads = 1; threads <= 2; threads++) {
            if (getenv("BENCH_THREADS") && atoi(getenv("BENCH_THREADS")) != threads) continue;
            double flops = 2.0 * (double)s->rows * (double)s->cols;
            const char *only = getenv("BENCH_N"); /* "1" or "512" restricts to one column */
            double tg = only && strcmp(only, "512") == 0 ? 1e30 : time_pass(w, copies, x, 1, y, act, threads, reps) / copies;
            int pp_reps = s->rows > 10000 ? (reps < 3 ? reps : 3) : reps;
            double pp = only && strcmp(only, "1") == 0 ? 1e30 : time_pass(w, 1, x, 512, y, act, threads, pp_reps);
            char tg_s[64] = "-", pp_s[64] = "-";
            if (tg < 1e29)
                snprintf(tg_s, sizeof tg_s, "%8.1f us %6.1f GB/s %6.1f GFLOP/s", tg * 1e6, (double)bytes / tg / 1e9,
                         flops / tg / 1e9);
            if (pp < 1e29) snprintf(pp_s, sizeof pp_s, "%9.1f us %6.1f GFLOP/s", pp * 1e6, flops * 512 / pp / 1e9);
            printf("%-5s %-18s t=%d | n=1: %-38s | n=512: %s\n", fi_ggml_type_name(type), s->name, threads, tg_s, pp_s);
            fflush(stdout);
        }
        free(act);
        free(y);
        free(x);
        for (int c = 0; c < copies; c++) fi_matmul_weight_free(w[c]);
        free(w);
        free(data);
    }
}

int main(int argc, char **argv) {
    int reps = getenv("BENCH_REPS") ? atoi(getenv("BENCH_REPS")) : 7;
    if (reps < 1) reps = 1;
    if (reps > 63) reps = 63;
    printf("matmul_bench: SIMD %s, median of %d reps (n=1 over >= 64 MiB of weight copies)\n",
           fi_simd_level_name(fi_cpu_simd_level()), reps);
    const char *names[] = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"};
    const uint32_t ids[] = {FI_GGML_F32, FI_GGML_F16, FI_GGML_BF16, FI_GGML_Q4_0, FI_GGML_Q4_1, FI_GGML_Q8_0};
    for (int i = 0; i < 6; i++) {
        bool want = argc < 2;
        for (int a = 1; a < argc; a++) want |= strcmp(argv[a], names[i]) == 0;
        if (want) bench_type(ids[i], reps);
    }
    return 0;
}
