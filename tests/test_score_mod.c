/* Score modifiers against hand computations: ALiBi slopes for 8 and 12 heads (the
 * formula evaluated here in double), softcap, chains applied left to right,
 * callbacks, and every parse error with its column. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "attn/score_mod.h"
#include "test_support.h"

static fi_score_mod *parse_ok(const char *expr) {
    fi_score_mod *s = NULL;
    fi_error err = {0};
    if (fi_score_mod_parse(expr, &s, &err) != FI_OK) fail_msg("parse of '%s' failed: %s", expr, err.msg);
    assert_non_null(s);
    return s;
}

static void assert_close(double got, double want, double rel, const char *what) {
    if (!(fabs(got - want) <= rel * fmax(1.0, fabs(want))))
        fail_msg("%s: got %.9g, expected %.9g", what, got, want);
}

static void test_alibi_slopes(void **state) {
    (void)state;
    /* 8 heads: 2^(-8(i+1)/8) = 1/2, 1/4, ..., 1/256. */
    const double eight[8] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625};
    for (int h = 0; h < 8; h++) assert_close(fi_score_mod_alibi_slope(h, 8), eight[h], 1e-15, "8 heads");
    /* 12 heads: the 8-head slopes, then every other slope of 16 heads (2^(-k/2) for odd k). */
    double twelve[12];
    for (int h = 0; h < 8; h++) twelve[h] = eight[h];
    const double half_step = sqrt(0.5); /* 2^(-1/2) */
    for (int k = 0; k < 4; k++) twelve[8 + k] = half_step * pow(0.5, k);
    for (int h = 0; h < 12; h++) {
        char what[32];
        snprintf(what, sizeof what, "12 heads, head %d", h);
        assert_close(fi_score_mod_alibi_slope(h, 12), twelve[h], 1e-15, what);
    }
    /* 1 head: 2^-8. 3 heads: m = 2 gives 2^-4, 2^-8; the first slope of 4 heads adds 2^-2. */
    assert_close(fi_score_mod_alibi_slope(0, 1), 1.0 / 256, 1e-15, "1 head");
    assert_close(fi_score_mod_alibi_slope(0, 3), 1.0 / 16, 1e-15, "3 heads h0");
    assert_close(fi_score_mod_alibi_slope(1, 3), 1.0 / 256, 1e-15, "3 heads h1");
    assert_close(fi_score_mod_alibi_slope(2, 3), 0.25, 1e-15, "3 heads h2");

    /* Applied: s + slope_h * (kv - q), for query head h. */
    fi_score_mod *s = parse_ok("alibi");
    assert_true(fi_score_mod_depends_on_head(s));
    for (int h = 0; h < 12; h++)
        for (int64_t q = 0; q < 40; q += 7)
            for (int64_t kv = 0; kv < 40; kv += 5) {
                const double want = 1.25 + twelve[h] * (double)(kv - q);
                assert_close(fi_score_mod_apply(s, 1.25f, 0, h, 12, q, kv), want, 1e-6, "alibi apply");
            }
    fi_score_mod_free(s);
}

static void test_softcap_and_chains(void **state) {
    (void)state;
    fi_score_mod *s = parse_ok("softcap:30");
    assert_false(fi_score_mod_depends_on_head(s));
    const float inputs[] = {0.0f, 1.0f, -2.5f, 29.0f, 100.0f, -1e4f, 1e30f};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
        assert_close(fi_score_mod_apply(s, inputs[i], 0, 0, 1, 0, 0), 30.0 * tanh((double)inputs[i] / 30.0), 1e-6,
                     "softcap");
    assert_true(fi_score_mod_apply(s, 1e4f, 0, 0, 1, 0, 0) <= 30.0f);
    fi_score_mod_free(s);

    s = parse_ok(" softcap : 0.5 ");
    assert_close(fi_score_mod_apply(s, 0.3f, 0, 0, 1, 0, 0), 0.5 * tanh(0.6), 1e-6, "softcap 0.5");
    fi_score_mod_free(s);

    /* Left to right: softcap then ALiBi differs from ALiBi then softcap. */
    const double slope = 0.25; /* head 1 of 8 */
    fi_score_mod *a = parse_ok("softcap:2,alibi"), *b = parse_ok("alibi , softcap:2");
    const double x = 1.5;
    const int64_t q = 10, kv = 3;
    assert_close(fi_score_mod_apply(a, (float)x, 0, 1, 8, q, kv), 2 * tanh(x / 2) + slope * (kv - q), 1e-6,
                 "softcap,alibi");
    assert_close(fi_score_mod_apply(b, (float)x, 0, 1, 8, q, kv), 2 * tanh((x + slope * (kv - q)) / 2), 1e-6,
                 "alibi,softcap");
    fi_score_mod_free(a);
    fi_score_mod_free(b);
    assert_true(fi_score_mod_apply(NULL, 3.5f, 0, 0, 1, 0, 0) == 3.5f);
}

typedef struct cb_record {
    int64_t b, h, q, kv;
    float add;
} cb_record;

static float cb_score(float s, int64_t b, int64_t h, int64_t q, int64_t kv, void *ctx) {
    cb_record *r = ctx;
    r->b = b, r->h = h, r->q = q, r->kv = kv;
    return 2.0f * s + r->add;
}

static void test_callback(void **state) {
    (void)state;
    cb_record rec = {.add = 0.5f};
    fi_score_mod *s = NULL;
    assert_int_equal(fi_score_mod_from_callback(cb_score, &rec, &s, NULL), FI_OK);
    assert_true(fi_score_mod_depends_on_head(s));
    assert_close(fi_score_mod_apply(s, 1.5f, 3, 5, 8, 17, 4), 3.5, 0, "callback");
    assert_true(rec.b == 3 && rec.h == 5 && rec.q == 17 && rec.kv == 4);
    fi_score_mod_free(s);
    fi_error err = {0};
    s = (fi_score_mod *)(uintptr_t)1;
    assert_int_equal(fi_score_mod_from_callback(NULL, NULL, &s, &err), FI_ERR_INVALID);
    assert_null(s);
}

static void expect_error(const char *expr, const char *expected) {
    fi_score_mod *s = (fi_score_mod *)(uintptr_t)1;
    fi_error err = {0};
    if (fi_score_mod_parse(expr, &s, &err) != FI_ERR_INVALID) fail_msg("'%s' parsed", expr);
    assert_null(s);
    if (strcmp(err.msg, expected) != 0) fail_msg("'%s':\n  got      '%s'\n  expected '%s'", expr, err.msg, expected);
}

static void test_errors(void **state) {
    (void)state;
    expect_error("", "score mod expression, column 1: expected a score modifier (softcap:C or alibi) but the expression is empty");
    expect_error("softcap", "score mod expression, column 8: expected ':' and a number after 'softcap' (e.g. softcap:30)");
    expect_error("softcap:", "score mod expression, column 9: expected a positive number after 'softcap:' (e.g. softcap:30)");
    expect_error("softcap:x", "score mod expression, column 9: expected a positive number after 'softcap:' (e.g. softcap:30)");
    expect_error("softcap:-3", "score mod expression, column 9: expected a positive number after 'softcap:' (e.g. softcap:30)");
    expect_error("softcap:0", "score mod expression, column 9: softcap value must be > 0");
    expect_error("softcap:0x10", "score mod expression, column 9: expected a decimal number after 'softcap:'");
    expect_error("softcap:1e999", "score mod expression, column 9: softcap value is out of range");
    expect_error("alibi:2", "score mod expression, column 6: 'alibi' takes no parameter");
    expect_error("alibi,softcp:3", "score mod expression, column 7: unknown score modifier 'softcp' (expected softcap:C or alibi)");
    expect_error("alibi,", "score mod expression, column 7: expected a score modifier (softcap:C or alibi) at the end");
    expect_error("alibi alibi", "score mod expression, column 7: expected ',' or the end after a score modifier, found 'a'");
    expect_error("softcap:3.5.1", "score mod expression, column 12: expected ',' or the end after a score modifier, found '.'");
    expect_error(",alibi", "score mod expression, column 1: expected a score modifier (softcap:C or alibi), found ','");
    fi_score_mod *s = NULL;
    assert_int_equal(fi_score_mod_parse(NULL, &s, NULL), FI_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alibi_slopes),
        cmocka_unit_test(test_softcap_and_chains),
        cmocka_unit_test(test_callback),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
