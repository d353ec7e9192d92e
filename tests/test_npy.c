/* The .npy reader and writer: round trips of every type and 0..4 dimensions with random
 * data, files written by numpy itself (tests/data/npy, versions 1.0/2.0/3.0) against
 * hand-written values, every malformation refused with FI_ERR_FORMAT and a message
 * naming the file and the problem, and writes that fail leaving nothing behind. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/npy.h"
#include "test_support.h"

/* ---- helpers ---------------------------------------------------------------- */

static char *make_temp_dir(void) {
    char *dir = strdup("/tmp/fi_test_npy.XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

/* Removes the files in dir (flat) and dir itself. */
static void remove_dir(char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Builds a file image: preamble of the given version, the dict text padded to a
 * 64-byte boundary and ended by '\n' (unless raw_header), then `ndata` data bytes. */
static size_t build_image(unsigned char *buf, size_t cap, int major, const char *dict, const void *data,
                          size_t ndata) {
    const size_t field = major == 1 ? 2 : 4, pre = 8 + field;
    const size_t dict_len = strlen(dict);
    size_t total = (pre + dict_len + 1 + 63) / 64 * 64;
    const size_t hlen = total - pre;
    assert_true(total + ndata <= cap);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major, buf[7] = 0;
    for (size_t i = 0; i < field; i++) buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + pre, dict, dict_len);
    memset(buf + pre + dict_len, ' ', hlen - dict_len - 1);
    buf[total - 1] = '\n';
    if (ndata) memcpy(buf + total, data, ndata);
    return total + ndata;
}

static void expect_format_error(const void *image, size_t len, const char *want, const char *label) {
    fi_npy_array a;
    fi_error err = {0};
    const fi_status st = fi_npy_parse(image, len, "bad.npy", &a, &err);
    if (st != FI_ERR_FORMAT) fail_msg("%s: status %d, expected FI_ERR_FORMAT (msg: %s)", label, (int)st, err.msg);
    if (!strstr(err.msg, "bad.npy")) fail_msg("%s: message does not name the file: %s", label, err.msg);
    if (!strstr(err.msg, want)) fail_msg("%s: message lacks '%s': %s", label, want, err.msg);
    assert_null(a.data);
    assert_int_equal(a.ndim, 0);
}

static char *data_path(const char *name) {
    const char *dir = getenv("FI_TEST_DATA");
    if (!dir) dir = "tests/data";
    char *p = malloc(4096);
    assert_non_null(p);
    snprintf(p, 4096, "%s/npy/%s", dir, name);
    return p;
}

static void read_ok(const char *name, fi_npy_array *a) {
    char *p = data_path(name);
    fi_error err = {0};
    if (fi_npy_read(p, a, &err) != FI_OK) fail_msg("reading %s: %s", p, err.msg);
    free(p);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_round_trip(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("npy_round_trip"));
    char *dir = make_temp_dir();
    const fi_npy_dtype types[] = {FI_NPY_F32, FI_NPY_F16, FI_NPY_F64, FI_NPY_I32, FI_NPY_I64, FI_NPY_U8};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (int ndim = 0; ndim <= 4; ndim++)
            for (int rep = 0; rep < 3; rep++) {
                int64_t shape[4];
                int64_t count = 1;
                for (int i = 0; i < ndim; i++) {
                    shape[i] = fi_test_rng_int(&rng, 6) + (rep == 2 && i == 0 ? 0 : 1); /* rep 2: maybe empty */
                    count *= shape[i];
                }
                const size_t esize = fi_npy_dtype_size(types[t]);
                unsigned char *data = malloc((size_t)count * esize + 1);
                assert_non_null(data);
                for (size_t i = 0; i < (size_t)count * esize; i++) data[i] = (unsigned char)fi_test_rng_u64(&rng);
                char path[4200];
                snprintf(path, sizeof path, "%s/a.npy", dir);
                fi_error err = {0};
                if (fi_npy_write(path, types[t], ndim, shape, data, &err) != FI_OK) fail_msg("write: %s", err.msg);
                fi_npy_array a;
                if (fi_npy_read(path, &a, &err) != FI_OK) fail_msg("read back: %s", err.msg);
                assert_int_equal(a.dtype, types[t]);
                assert_int_equal(a.ndim, ndim);
                assert_int_equal(a.count, count);
                assert_int_equal(a.nbytes, (size_t)count * esize);
                for (int i = 0; i < ndim; i++) assert_int_equal(a.shape[i], shape[i]);
                assert_true(((uintptr_t)a.data % 64) == 0);
                if (count) assert_memory_equal(a.data, data, (size_t)count * esize);
                /* The data starts 64-byte aligned in the file, as numpy writes it. */
                struct stat sb;
                assert_int_equal(stat(path, &sb), 0);
                assert_int_equal(((size_t)sb.st_size - a.nbytes) % 64, 0);
                assert_int_equal(count_entries(dir), 1); /* no temporary left behind */
                fi_npy_free(&a);
                assert_null(a.data);
                free(data);
            }
    remove_dir(dir);
}

static void test_numpy_written_files(void **state) {
    (void)state;
    const float want_f32[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    fi_npy_array a;
    read_ok("f32_2x3_v1.npy", &a);
    assert_int_equal(a.dtype, FI_NPY_F32);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 2);
    assert_int_equal(a.shape[1], 3);
    assert_memory_equal(a.data, want_f32, sizeof want_f32);
    fi_npy_free(&a);

    const char *versions[] = {"f32_1x1x2x3_v2.npy", "f32_1x1x2x3_v3.npy"};
    for (int v = 0; v < 2; v++) {
        read_ok(versions[v], &a);
        assert_int_equal(a.ndim, 4);
        assert_int_equal(a.shape[0], 1);
        assert_int_equal(a.shape[1], 1);
        assert_int_equal(a.shape[2], 2);
        assert_int_equal(a.shape[3], 3);
        assert_memory_equal(a.data, want_f32, sizeof want_f32);
        fi_npy_free(&a);
    }

    /* 1.0, -2.5, 65504 (largest half), 2^-24 (smallest subnormal half). */
    const uint16_t want_f16[4] = {0x3C00, 0xC100, 0x7BFF, 0x0001};
    read_ok("f16_4_v1.npy", &a);
    assert_int_equal(a.dtype, FI_NPY_F16);
    assert_int_equal(a.ndim, 1);
    assert_int_equal(a.shape[0], 4);
    assert_memory_equal(a.data, want_f16, sizeof want_f16);
    fi_npy_free(&a);

    read_ok("i32_2x2x2_v1.npy", &a);
    assert_int_equal(a.dtype, FI_NPY_I32);
    assert_int_equal(a.ndim, 3);
    for (int i = 0; i < 8; i++) assert_int_equal(((int32_t *)a.data)[i], i - 4);
    fi_npy_free(&a);

    fi_error err = {0};
    char *p = data_path("f32_big_endian.npy");
    assert_int_equal(fi_npy_read(p, &a, &err), FI_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "big-endian"));
    assert_non_null(strstr(err.msg, p));
    free(p);
    p = data_path("f32_fortran.npy");
    assert_int_equal(fi_npy_read(p, &a, &err), FI_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "Fortran"));
    free(p);
}

static void test_malformed(void **state) {
    (void)state;
    static unsigned char img[4096];
    const float six[6] = {1, 2, 3, 4, 5, 6};
    const char *good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    size_t n = build_image(img, sizeof img, 1, good, six, sizeof six);
    {
        fi_npy_array a;
        fi_error err = {0};
        assert_int_equal(fi_npy_parse(img, n, "good.npy", &a, &err), FI_OK); /* the base case is valid */
        fi_npy_free(&a);
    }
    /* Truncations at every length before the end. */
    for (size_t cut = 0; cut < n; cut++) {
        fi_npy_array a;
        fi_error err = {0};
        if (fi_npy_parse(img, cut, "bad.npy", &a, &err) != FI_ERR_FORMAT)
            fail_msg("truncated to %zu of %zu bytes was accepted", cut, n);
        assert_non_null(strstr(err.msg, "bad.npy"));
    }
    expect_format_error(img, n - 4, "truncated data", "truncated data");
    expect_format_error(img, 40, "truncated .npy header", "truncated header");
    expect_format_error(img, 3, "bad magic", "3 bytes");
    expect_format_error(img, 0, "bad magic", "empty");

    unsigned char extra[4096];
    memcpy(extra, img, n);
    extra[n] = 0;
    expect_format_error(extra, n + 1, "data size mismatch", "trailing byte");

    memcpy(extra, img, n);
    extra[1] = 'X';
    expect_format_error(extra, n, "bad magic", "magic");
    memcpy(extra, img, n);
    extra[6] = 4;
    expect_format_error(extra, n, "version 4.0", "version 4");
    memcpy(extra, img, n);
    extra[7] = 1;
    expect_format_error(extra, n, "version 1.1", "minor version");
    memcpy(extra, img, n);
    extra[n - sizeof six - 1] = ' '; /* header no longer ends with a newline */
    expect_format_error(extra, n, "newline", "no newline");
    memcpy(extra, img, n);
    extra[8] = 0xff, extra[9] = 0xff; /* header length past the end of the file */
    expect_format_error(extra, n, "truncated .npy header", "header length");

    struct {
        const char *dict, *want;
    } cases[] = {
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", "big-endian"},
        {"{'descr': '=f4', 'fortran_order': False, 'shape': (2, 3), }", "native byte order"},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3), }", "unsupported dtype '<c8'"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3), }", "structured"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", "Fortran-order"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }", "True or False"},
        {"{'descr': '<f4', 'shape': (2, 3), }", "missing 'fortran_order'"},
        {"{'fortran_order': False, 'shape': (2, 3), }", "missing 'descr'"},
        {"{'descr': '<f4', 'fortran_order': False, }", "missing 'shape'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", "unexpected or repeated key 'x'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", "repeated key 'descr'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", "negative dimension"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }", "must be a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", "expected ',' or ')'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3L), }", "expected ',' or ')'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "overflows"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", "overflows"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,6), }", "more than 8 dimensions"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x", "unexpected text after the dict"},
        {"{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }", "expected ':'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3) ", "expected ',' or '}'"},
        {"('descr', '<f4')", "expected '{'"},
        {"{'descr': '<f4', 'fortran_order': Falsely, 'shape': (2, 3), }", "True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", "data size mismatch"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", "truncated data"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", "truncated data"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int major = 1; major <= 3; major++) {
            size_t m = build_image(extra, sizeof extra, major, cases[i].dict, six, sizeof six);
            expect_format_error(extra, m, cases[i].want, cases[i].dict);
        }
    }
    /* Variants numpy accepts: double quotes, no trailing comma, other key order, no spaces. */
    const char *ok[] = {
        "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 3)}",
        "{'shape': (6,), 'fortran_order': False, 'descr': '<f4'}",
        "{'descr':'<f4','fortran_order':False,'shape':(1,2,3,)}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t m = build_image(extra, sizeof extra, 1, ok[i], six, sizeof six);
        fi_npy_array a;
        fi_error err = {0};
        if (fi_npy_parse(extra, m, "ok.npy", &a, &err) != FI_OK) fail_msg("'%s' refused: %s", ok[i], err.msg);
        assert_int_equal(a.count, 6);
        assert_memory_equal(a.data, six, sizeof six);
        fi_npy_free(&a);
    }
}

static void test_io_errors(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char path[4200];
    fi_npy_array a;
    fi_error err = {0};
    snprintf(path, sizeof path, "%s/missing.npy", dir);
    assert_int_equal(fi_npy_read(path, &a, &err), FI_ERR_IO);
    assert_non_null(strstr(err.msg, "missing.npy"));
    assert_int_equal(fi_npy_read(dir, &a, &err), FI_ERR_IO); /* a directory */
    assert_non_null(strstr(err.msg, "not a regular file"));

    /* Writing into a missing directory fails and creates nothing. */
    const float x[2] = {1, 2};
    const int64_t shape[1] = {2};
    snprintf(path, sizeof path, "%s/no/such/dir/x.npy", dir);
    assert_int_equal(fi_npy_write(path, FI_NPY_F32, 1, shape, x, &err), FI_ERR_IO);
    assert_non_null(strstr(err.msg, "x.npy"));
    assert_int_equal(count_entries(dir), 0);

    /* Writing over a directory fails at the rename and leaves no temporary behind. */
    snprintf(path, sizeof path, "%s/sub", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(fi_npy_write(path, FI_NPY_F32, 1, shape, x, &err), FI_ERR_IO);
    assert_int_equal(count_entries(dir), 1);
    rmdir(path);

    /* A failed write leaves an existing file untouched. */
    snprintf(path, sizeof path, "%s/keep.npy", dir);
    assert_int_equal(fi_npy_write(path, FI_NPY_F32, 1, shape, x, &err), FI_OK);
    const int64_t bad_shape[1] = {-1};
    assert_int_equal(fi_npy_write(path, FI_NPY_F32, 1, bad_shape, x, &err), FI_ERR_INVALID);
    assert_int_equal(fi_npy_read(path, &a, &err), FI_OK);
    assert_int_equal(a.count, 2);
    assert_memory_equal(a.data, x, sizeof x);
    fi_npy_free(&a);
    assert_int_equal(count_entries(dir), 1);
    remove_dir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_numpy_written_files),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_io_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
