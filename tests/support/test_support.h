/* Shared helpers for the cmocka tests: seeded random numbers (the seed is
 * printed so any failure can be replayed with FI_TEST_SEED=N). */
#ifndef FI_TEST_SUPPORT_H
#define FI_TEST_SUPPORT_H

#include <stdint.h>

typedef struct fi_test_rng {
    uint64_t state;
} fi_test_rng;

/* Seed from FI_TEST_SEED if set, else from the clock; prints "seed=N" with the test name. */
uint64_t fi_test_seed(const char *test_name);
void fi_test_rng_init(fi_test_rng *r, uint64_t seed);
uint64_t fi_test_rng_u64(fi_test_rng *r);
/* Uniform in [0, n). */
int64_t fi_test_rng_int(fi_test_rng *r, int64_t n);
/* Uniform in [lo, hi). */
double fi_test_rng_uniform(fi_test_rng *r, double lo, double hi);
/* Standard normal. */
double fi_test_rng_normal(fi_test_rng *r);

#endif
