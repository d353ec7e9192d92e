/* The mask language: every primitive against its definition, operator precedence,
 * round trips through fi_mask_format, and every parse error with its column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "attn/mask.h"
#include "test_support.h"

/* Independent definitions of the primitives (from the issue text). */
static bool ref_primitive(const char *name, int64_t param, const int32_t *seg, int64_t q, int64_t kv) {
    if (!strcmp(name, "full")) return true;
    if (!strcmp(name, "causal")) return kv <= q;
    if (!strcmp(name, "window")) return llabs(q - kv) < param;
    if (!strcmp(name, "prefix")) return kv < param;
    if (!strcmp(name, "chunked")) return q / param == kv / param;
    if (!strcmp(name, "document")) return seg[q] == seg[kv];
    if (!strcmp(name, "generated")) return seg[q] < 0;
    fail_msg("unknown primitive %s", name);
    return false;
}

static fi_mask *parse_ok(const char *expr) {
    fi_mask *m = NULL;
    fi_error err = {0};
    fi_status st = fi_mask_parse(expr, &m, &err);
    if (st != FI_OK) fail_msg("parse of '%s' failed: %s", expr, err.msg);
    assert_non_null(m);
    return m;
}

static void test_every_primitive(void **state) {
    (void)state;
    static const int32_t seg[24] = {0, 0, 0, 1, 1, -1, 2, 2, 2, 2, -1, -1, 3, 0, 0, 4, 4, 4, 4, 4, -2, 5, 5, 5};
    const fi_mask_inputs in = {.segments = seg, .segments_len = 24};
    static const struct { const char *expr, *name; int64_t param; } cases[] = {
        {"full", "full", 0},         {"causal", "causal", 0},      {"window:1", "window", 1},
        {"window:3", "window", 3},   {"prefix:0", "prefix", 0},    {"prefix:5", "prefix", 5},
        {"chunked:1", "chunked", 1}, {"chunked:4", "chunked", 4},  {"document", "document", 0},
        {"generated", "generated", 0}, {" window : 7 ", "window", 7}, {"\tchunked:\n5", "chunked", 5},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fi_mask *m = parse_ok(cases[c].expr);
        for (int64_t q = 0; q < 24; q++)
            for (int64_t kv = 0; kv < 24; kv++)
                if (fi_mask_keep(m, &in, 0, 0, q, kv) != ref_primitive(cases[c].name, cases[c].param, seg, q, kv))
                    fail_msg("'%s' differs from its definition at q=%lld kv=%lld", cases[c].expr,
                             (long long)q, (long long)kv);
        fi_mask_free(m);
    }
}

static void expect_format(const char *expr, const char *expected) {
    fi_mask *m = parse_ok(expr);
    char buf[512];
    fi_mask_format(m, buf, sizeof buf);
    if (strcmp(buf, expected) != 0) fail_msg("'%s' formats as '%s', expected '%s'", expr, buf, expected);
    fi_mask_free(m);
}

static void test_precedence(void **state) {
    (void)state;
    expect_format("causal | document & generated", "(causal | (document & generated))");
    expect_format("causal & document | generated", "((causal & document) | generated)");
    expect_format("!causal & full", "(!causal & full)");
    expect_format("!(causal & full)", "!(causal & full)");
    expect_format("!!causal", "!!causal");
    expect_format("causal & window:4 & prefix:2", "((causal & window:4) & prefix:2)");
    expect_format("causal | window:4 | prefix:2", "((causal | window:4) | prefix:2)");
    expect_format("causal & (document | generated)", "(causal & (document | generated))");
    expect_format("((causal))", "causal");
    expect_format("  ! causal|full  ", "(!causal | full)");

    /* Semantics agree with the precedence: "causal | full & !full" is just causal. */
    fi_mask *m = parse_ok("causal | full & !full");
    for (int64_t q = 0; q < 8; q++)
        for (int64_t kv = 0; kv < 8; kv++) assert_int_equal(fi_mask_keep(m, NULL, 0, 0, q, kv), kv <= q);
    fi_mask_free(m);
    m = parse_ok("!causal & prefix:3");
    for (int64_t q = 0; q < 8; q++)
        for (int64_t kv = 0; kv < 8; kv++) assert_int_equal(fi_mask_keep(m, NULL, 0, 0, q, kv), kv > q && kv < 3);
    fi_mask_free(m);
}

/* A random expression in the language, with random spacing and redundant parentheses. */
static void random_expr(fi_test_rng *r, int depth, char *buf, size_t size, size_t *len) {
#define PUT(...) (*len += (size_t)snprintf(buf + *len, size - *len, __VA_ARGS__))
    const int pick = (int)fi_test_rng_int(r, depth > 4 ? 7 : 11);
    if (fi_test_rng_int(r, 3) == 0) PUT(" ");
    switch (pick) {
    case 0: PUT("full"); break;
    case 1: PUT("causal"); break;
    case 2: PUT("window:%lld", (long long)(1 + fi_test_rng_int(r, 100))); break;
    case 3: PUT("prefix:%lld", (long long)fi_test_rng_int(r, 100)); break;
    case 4: PUT("chunked:%lld", (long long)(1 + fi_test_rng_int(r, 100))); break;
    case 5: PUT("document"); break;
    case 6: PUT("generated"); break;
    case 7: PUT("!"); random_expr(r, depth + 1, buf, size, len); break;
    case 8: PUT("("); random_expr(r, depth + 1, buf, size, len); PUT(")"); break;
    default:
        PUT("(");
        random_expr(r, depth + 1, buf, size, len);
        PUT(pick == 9 ? " & " : "|");
        random_expr(r, depth + 1, buf, size, len);
        PUT(")");
        break;
    }
#undef PUT
}

static void test_round_trip(void **state) {
    (void)state;
    fi_test_rng r;
    fi_test_rng_init(&r, fi_test_seed("mask_parse_round_trip"));
    int32_t seg[40];
    for (int i = 0; i < 40; i++) seg[i] = (int32_t)fi_test_rng_int(&r, 5) - 1;
    const fi_mask_inputs in = {.segments = seg, .segments_len = 40};
    for (int it = 0; it < 300; it++) {
        char expr[4096], f1[4096], f2[4096];
        size_t len = 0;
        random_expr(&r, 0, expr, sizeof expr, &len);
        fi_mask *a = parse_ok(expr);
        fi_mask_format(a, f1, sizeof f1);
        fi_mask *b = parse_ok(f1);
        fi_mask_format(b, f2, sizeof f2);
        if (strcmp(f1, f2) != 0) fail_msg("round trip of '%s': '%s' then '%s'", expr, f1, f2);
        for (int64_t q = 0; q < 40; q++)
            for (int64_t kv = 0; kv < 40; kv++)
                if (fi_mask_keep(a, &in, 0, 0, q, kv) != fi_mask_keep(b, &in, 0, 0, q, kv))
                    fail_msg("'%s' and its formatted form '%s' differ at %lld,%lld", expr, f1, (long long)q,
                             (long long)kv);
        fi_mask_free(a);
        fi_mask_free(b);
    }
}

static void expect_error(const char *expr, const char *expected) {
    fi_mask *m = (fi_mask *)(uintptr_t)1;
    fi_error err = {0};
    fi_status st = fi_mask_parse(expr, &m, &err);
    if (st != FI_ERR_INVALID) fail_msg("'%s' parsed (status %d), expected error '%s'", expr, (int)st, expected);
    assert_null(m);
    if (strcmp(err.msg, expected) != 0) fail_msg("'%s':\n  got      '%s'\n  expected '%s'", expr, err.msg, expected);
}

static void test_errors(void **state) {
    (void)state;
    expect_error("", "mask expression, column 1: expected a primitive (one of full, causal, window:W, prefix:N, "
                     "chunked:C, document, generated), but the expression is empty");
    expect_error("   ", "mask expression, column 4: expected a primitive (one of full, causal, window:W, prefix:N, "
                        "chunked:C, document, generated), but the expression is empty");
    expect_error("window:", "mask expression, column 8: expected a number after 'window:'");
    expect_error("window:x", "mask expression, column 8: expected a number after 'window:'");
    expect_error("window:-4", "mask expression, column 8: expected a number after 'window:'");
    expect_error("causal & prefix:", "mask expression, column 17: expected a number after 'prefix:'");
    expect_error("window", "mask expression, column 7: expected ':' and a number after 'window' (e.g. window:1024)");
    expect_error("prefix 4", "mask expression, column 8: expected ':' and a number after 'prefix' (e.g. prefix:16)");
    expect_error("chunked", "mask expression, column 8: expected ':' and a number after 'chunked' (e.g. chunked:1024)");
    expect_error("window:0", "mask expression, column 8: window size must be >= 1, got 0");
    expect_error("chunked:0", "mask expression, column 9: chunk size must be >= 1, got 0");
    expect_error("window:1.5", "mask expression, column 8: malformed number after 'window:' (expected a whole number)");
    expect_error("window:12ab", "mask expression, column 8: malformed number after 'window:' (expected a whole number)");
    expect_error("window:9223372036854775808",
                 "mask expression, column 8: the number after 'window:' does not fit in 64 bits");
    expect_error("casual", "mask expression, column 1: unknown primitive 'casual' (expected one of full, causal, "
                           "window:W, prefix:N, chunked:C, document, generated)");
    expect_error("causal & Document", "mask expression, column 10: unknown primitive 'Document' (expected one of "
                                      "full, causal, window:W, prefix:N, chunked:C, document, generated)");
    expect_error("causal:3", "mask expression, column 7: 'causal' takes no parameter");
    expect_error("(causal", "mask expression, column 8: expected ')' to close the '(' at column 1");
    expect_error("causal & ((document | generated)",
                 "mask expression, column 33: expected ')' to close the '(' at column 10");
    expect_error("(causal full)",
                 "mask expression, column 9: expected '&', '|' or ')' to close the '(' at column 1, found 'full'");
    expect_error("causal)", "mask expression, column 7: unexpected ')' without a matching '('");
    expect_error("causal document",
                 "mask expression, column 8: unexpected 'document' after a complete expression (expected '&', '|' or the end)");
    expect_error("causal ; full",
                 "mask expression, column 8: unexpected ';' after a complete expression (expected '&', '|' or the end)");
    expect_error("causal &", "mask expression, column 9: expected a primitive, '!' or '(' at the end of the expression");
    expect_error("causal && full", "mask expression, column 9: unexpected '&' (expected a primitive, '!' or '(')");
    expect_error("| causal", "mask expression, column 1: unexpected '|' (expected a primitive, '!' or '(')");
    expect_error("()", "mask expression, column 2: unexpected ')' (expected a primitive, '!' or '(')");
    expect_error("!", "mask expression, column 2: expected a primitive, '!' or '(' at the end of the expression");
    expect_error("7", "mask expression, column 1: unexpected '7' (expected a primitive, '!' or '(')");

    /* Deep nesting is refused, not a stack overflow. */
    char deep[2100];
    memset(deep, '(', 1000);
    strcpy(deep + 1000, "causal");
    memset(deep + 1006, ')', 1000);
    deep[2006] = '\0';
    fi_mask *m = NULL;
    fi_error err = {0};
    assert_int_equal(fi_mask_parse(deep, &m, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "nested too deeply"));
    char chain[8000] = "causal";
    for (int i = 0; i < 700; i++) strcat(chain, "&full");
    assert_int_equal(fi_mask_parse(chain, &m, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "nested too deeply"));
    /* ... while reasonable depths pass. */
    memset(deep, '!', 200);
    strcpy(deep + 200, "causal");
    m = parse_ok(deep);
    assert_true(fi_mask_keep(m, NULL, 0, 0, 3, 2));
    fi_mask_free(m);

    assert_int_equal(fi_mask_parse(NULL, &m, &err), FI_ERR_INVALID);
    assert_int_equal(fi_mask_parse("causal", NULL, &err), FI_ERR_INVALID);
}

static void test_needs_segments(void **state) {
    (void)state;
    const char *with[] = {"document", "generated", "causal & (document | generated)", "!generated"};
    const char *without[] = {"full", "causal & window:8", "!(prefix:3 | chunked:2)"};
    for (size_t i = 0; i < 4; i++) {
        fi_mask *m = parse_ok(with[i]);
        assert_true(fi_mask_needs_segments(m));
        fi_mask_free(m);
    }
    for (size_t i = 0; i < 3; i++) {
        fi_mask *m = parse_ok(without[i]);
        assert_false(fi_mask_needs_segments(m));
        fi_mask_free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_primitive), cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_errors),
        cmocka_unit_test(test_needs_segments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
