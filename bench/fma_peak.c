/* Measures the machine's single-precision FMA peak: independent chains of vector FMAs
 * (enough of them to cover the FMA latency on every port), with the widest instruction
 * set the CPU has (AVX-512, else AVX2+FMA), on 1 and 2 threads.
 *
 * Usage: fma_peak [--threads-list 1,2] [--seconds S]
 * Prints a human-readable line per thread count and a machine-readable line
 *   fma_peak isa=avx2 threads=N gflops=X
 * which bench/run_attn.sh reads. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 12 accumulators: latency 4 x 2 FMA ports = 8 in flight, plus slack for schedulers
 * that issue out of order across iterations. */
#define FMA_CHAINS 12
#define FMA_INNER 1000

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Each returns the number of floating-point operations done (2 per lane per FMA). */
__attribute__((target("avx512f,fma"))) static double fma_avx512(long iters, float seed, float *sink) {
    __m512 acc[FMA_CHAINS];
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm512_set1_ps(seed + (float)i);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (long it = 0; it < iters; it++)
        for (int k = 0; k < FMA_INNER; k++) {
#pragma GCC unroll 12
            for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
        }
    __m512 s = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    *sink = _mm512_reduce_add_ps(s);
    return (double)iters * FMA_INNER * FMA_CHAINS * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(long iters, float seed, float *sink) {
    __m256 acc[FMA_CHAINS];
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm256_set1_ps(seed + (float)i);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (long it = 0; it < iters; it++)
        for (int k = 0; k < FMA_INNER; k++) {
#pragma GCC unroll 12
            for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
        }
    __m256 s = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    *sink = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
    return (double)iters * FMA_INNER * FMA_CHAINS * 8 * 2;
}

typedef double (*fma_kernel)(long, float, float *);

/* GFLOP/s of `threads` threads each running the kernel for about `seconds`; best of 5. */
static double measure(fma_kernel k, int threads, double seconds) {
    float sink = 0;
    /* Calibrate the iteration count on one thread. */
    long iters = 16;
    for (;;) {
        const double t0 = now_seconds();
        k(iters, 1.0f, &sink);
        const double dt = now_seconds() - t0;
        if (dt > 0.05) {
            iters = (long)((double)iters * seconds / dt) + 1;
            break;
        }
        iters *= 2;
    }
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double flops = 0;
        const double t0 = now_seconds();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
        {
            float local = 0;
            flops += k(iters, 1.0f + (float)omp_get_thread_num(), &local);
            if (local == 12345.0f) printf("%g", (double)local); /* keeps the work alive */
        }
        const double g = flops / (now_seconds() - t0) * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    int thread_counts[8] = {1, 2}, n_counts = 2;
    double seconds = 0.3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads-list") && i + 1 < argc) {
            n_counts = 0;
            for (char *tok = strtok(argv[++i], ","); tok && n_counts < 8; tok = strtok(NULL, ","))
                thread_counts[n_counts++] = atoi(tok) > 0 ? atoi(tok) : 1;
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
            if (!(seconds > 0)) seconds = 0.3;
        } else {
            fprintf(stderr, "usage: fma_peak [--threads-list 1,2] [--seconds S]\n");
            return 2;
        }
    }
    __builtin_cpu_init();
    const char *isa;
    fma_kernel k;
    if (__builtin_cpu_supports("avx512f")) isa = "avx512", k = fma_avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = "avx2", k = fma_avx2;
    else {
        fprintf(stderr, "fma_peak: the CPU has neither AVX-512 nor AVX2+FMA\n");
        return 1;
    }
    for (int i = 0; i < n_counts; i++) {
        const double g = measure(k, thread_counts[i], seconds);
        printf("FMA peak (%s, %d FMA chains, f32): %d thread%s: %.1f GFLOP/s\n", isa, FMA_CHAINS, thread_counts[i],
               thread_counts[i] > 1 ? "s" : "", g);
        printf("fma_peak isa=%s threads=%d gflops=%.2f\n", isa, thread_counts[i], g);
    }
    return 0;
}
