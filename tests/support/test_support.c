#include "test_support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

uint64_t fi_test_seed(const char *test_name) {
    const char *env = getenv("FI_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    printf("[%s] seed=%llu (replay with FI_TEST_SEED=%llu)\n", test_name, (unsigned long long)seed,
           (unsigned long long)seed);
    fflush(stdout);
    return seed;
}

void fi_test_rng_init(fi_test_rng *r, uint64_t seed) { r->state = seed * 0x9E3779B97F4A7C15ull + 1; }

uint64_t fi_test_rng_u64(fi_test_rng *r) { /* splitmix64 */
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int64_t fi_test_rng_int(fi_test_rng *r, int64_t n) { return (int64_t)(fi_test_rng_u64(r) % (uint64_t)n); }

double fi_test_rng_uniform(fi_test_rng *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(fi_test_rng_u64(r) >> 11) / 9007199254740992.0);
}

double fi_test_rng_normal(fi_test_rng *r) {
    double u1 = fi_test_rng_uniform(r, 1e-300, 1.0), u2 = fi_test_rng_uniform(r, 0.0, 1.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
