/* Model throughput, measured the way llama-bench does: pp = one forward of N random token ids on a
 * fresh sequence; tg = M single-token forwards of random ids from an empty cache. One warm-up run,
 * then `reps` timed runs; prints one JSON line with every run's tok/s, peak RSS and the bytes of
 * weights a decode step streams.
 *
 * usage: model_bench MODEL THREADS [REPS=5] [PP=512] [TG=128] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "flexinfer.h"
#include "model/llama.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static int32_t rand_token(int64_t n_vocab) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (int32_t)(rng_state % (uint64_t)n_vocab);
}

static int run(fi_model *m, int threads, int pp, int tg, double *pp_tps, double *tg_tps) {
    fi_session_params p = fi_session_default_params();
    p.n_ctx = pp > tg ? pp : tg;
    p.n_batch = pp > 0 ? pp : 1;
    p.threads = threads;
    fi_session *s;
    fi_error err;
    if (fi_session_create(m, &p, &s, &err) != FI_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int64_t V = fi_model_n_vocab(m);
    int32_t *ids = malloc((size_t)(pp > 0 ? pp : 1) * sizeof(int32_t));
    float *logits = malloc((size_t)V * sizeof(float));
    for (int i = 0; i < pp; i++) ids[i] = rand_token(V);
    if (pp > 0) {
        double t0 = now_s();
        if (fi_session_eval(s, ids, (size_t)pp, logits, false, &err) != FI_OK) return fprintf(stderr, "%s\n", err.msg), 1;
        *pp_tps = pp / (now_s() - t0);
    }
    fi_session_reset(s);
    if (tg > 0) {
        double t0 = now_s();
        for (int i = 0; i < tg; i++) {
            int32_t t = rand_token(V);
            if (fi_session_eval(s, &t, 1, logits, false, &err) != FI_OK) return fprintf(stderr, "%s\n", err.msg), 1;
        }
        *tg_tps = tg / (now_s() - t0);
    }
    free(ids);
    free(logits);
    fi_session_free(s);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: model_bench MODEL THREADS [REPS=5] [PP=512] [TG=128]\n");
        return 2;
    }
    int threads = atoi(argv[2]);
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    int pp = argc > 4 ? atoi(argv[4]) : 512;
    int tg = argc > 5 ? atoi(argv[5]) : 128;
    fi_model *m;
    fi_error err;
    if (fi_model_load(argv[1], &m, &err) != FI_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double a, b;
    if (run(m, threads, pp, 1, &a, &b)) return 1; /* warm-up */
    printf("{\"pp\": [");
    double *pps = calloc((size_t)reps, sizeof(double)), *tgs = calloc((size_t)reps, sizeof(double));
    for (int r = 0; r < reps; r++)
        if (run(m, threads, pp, tg, &pps[r], &tgs[r])) return 1;
    for (int r = 0; r < reps; r++) printf("%s%.2f", r ? ", " : "", pps[r]);
    printf("], \"tg\": [");
    for (int r = 0; r < reps; r++) printf("%s%.2f", r ? ", " : "", tgs[r]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("], \"rss_mib\": %.1f, \"stream_bytes\": %zu}\n", ru.ru_maxrss / 1024.0, fi_llama_stream_bytes(m));
    free(pps);
    free(tgs);
    fi_model_free(m);
    return 0;
}
