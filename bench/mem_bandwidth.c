/* Measures the machine's memory read bandwidth: threads sum disjoint slices of a
 * buffer far larger than the last-level cache with wide vector loads, on 1 and 2
 * threads; best of several passes.
 *
 * Usage: mem_bandwidth [--mib N] [--threads-list 1,2]
 * Prints a human-readable line per thread count and a machine-readable line
 *   mem_bandwidth threads=N gbps=X
 * which bench/run_attn.sh reads. GB are 1e9 bytes. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Four independent accumulators so the adds never limit the loads. */
__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    float s = 0;
    for (int k = 0; k < 8; k++) s += lanes[k];
    for (; i < n; i++) s += p[i];
    return s;
}

static float sum_scalar(const float *p, size_t n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

int main(int argc, char **argv) {
    size_t mib = 512;
    int thread_counts[8] = {1, 2}, n_counts = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc) {
            mib = (size_t)atol(argv[++i]);
            if (mib < 64) mib = 64;
        } else if (!strcmp(argv[i], "--threads-list") && i + 1 < argc) {
            n_counts = 0;
            for (char *tok = strtok(argv[++i], ","); tok && n_counts < 8; tok = strtok(NULL, ","))
                thread_counts[n_counts++] = atoi(tok) > 0 ? atoi(tok) : 1;
        } else {
            fprintf(stderr, "usage: mem_bandwidth [--mib N] [--threads-list 1,2]\n");
            return 2;
        }
    }
    const size_t n = mib * 1024 * 1024 / sizeof(float);
    float *buf = aligned_alloc(64, n * sizeof(float));
    if (!buf) {
        fprintf(stderr, "mem_bandwidth: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2");
    int max_threads = 1;
    for (int i = 0; i < n_counts; i++) max_threads = thread_counts[i] > max_threads ? thread_counts[i] : max_threads;
    /* First touch from the threads that will read (matters on NUMA machines). */
#pragma omp parallel for num_threads(max_threads) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f;

    volatile float sink = 0;
    for (int c = 0; c < n_counts; c++) {
        const int t = thread_counts[c];
        double best = 0;
        for (int rep = 0; rep < 6; rep++) {
            float total = 0;
            const double t0 = now_seconds();
#pragma omp parallel num_threads(t) reduction(+ : total)
            {
                const int id = omp_get_thread_num(), nt = omp_get_num_threads();
                /* Slices rounded to 64 bytes so every load is aligned. */
                const size_t per = (n / (size_t)nt) & ~(size_t)15;
                const size_t begin = (size_t)id * per, len = id == nt - 1 ? n - begin : per;
                total += avx2 ? sum_avx2(buf + begin, len) : sum_scalar(buf + begin, len);
            }
            const double dt = now_seconds() - t0;
            sink += total;
            const double gbps = (double)(n * sizeof(float)) / dt * 1e-9;
            if (gbps > best) best = gbps;
        }
        printf("memory read bandwidth (%zu MiB buffer, %s loads): %d thread%s: %.1f GB/s\n", mib,
               avx2 ? "AVX2" : "scalar", t, t > 1 ? "s" : "", best);
        printf("mem_bandwidth threads=%d gbps=%.2f\n", t, best);
    }
    free(buf);
    return sink == 12345.0f ? 3 : 0;
}
