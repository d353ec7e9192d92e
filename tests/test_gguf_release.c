/* fi_gguf_release_pages on the default model: on a file opened with fi_gguf_open the released
 * tensor's pages leave the process's resident set (RssFile in /proc/self/status drops by about the
 * tensor's size) and read back unchanged; on a buffer opened with fi_gguf_open_memory it changes
 * nothing (MADV_DONTNEED on anonymous memory would zero it); odd ranges are ignored. Skipped with
 * a message when the model file is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gguf.h"

static char g_path[1024];

static const char *model_path(void) {
    const char *data = getenv("FI_TEST_DATA");
    snprintf(g_path, sizeof g_path, "%s/../../models/SmolLM2-135M-Instruct.Q4_1.gguf", data ? data : "tests/data");
    return access(g_path, R_OK) == 0 ? g_path : NULL;
}

/* kB of file-backed pages resident in this process, -1 if unknown. */
static long rss_file_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "RssFile:", 8) == 0) kb = strtol(line + 8, NULL, 10);
    fclose(f);
    return kb;
}

/* The largest tensor of the file (token_embd on the default model). */
static const fi_gguf_tensor *largest(const fi_gguf *g) {
    const fi_gguf_tensor *best = NULL;
    for (int64_t i = 0; i < fi_gguf_n_tensors(g); i++) {
        const fi_gguf_tensor *t = fi_gguf_tensor_at(g, i);
        if (!best || t->nbytes > best->nbytes) best = t;
    }
    return best;
}

static void test_mapped_file(void **state) {
    (void)state;
    const char *path = model_path();
    if (!path) {
        printf("SKIP: %s is missing (run scripts/get_model.sh)\n", g_path);
        skip();
    }
    fi_gguf *g;
    fi_error err;
    assert_int_equal(fi_gguf_open(path, &g, &err), FI_OK);
    const fi_gguf_tensor *t = largest(g);
    assert_true(t->nbytes > (8u << 20)); /* large enough to see in RssFile */
    uint8_t *copy = malloc(t->nbytes);
    assert_non_null(copy);
    memcpy(copy, t->data, t->nbytes); /* faults every page in */
    long before = rss_file_kb();
    if (before < 0) {
        printf("SKIP: /proc/self/status has no RssFile\n");
        free(copy);
        fi_gguf_close(g);
        skip();
    }
    fi_gguf_release_pages(g, t->data, t->nbytes);
    long after = rss_file_kb();
    long expect_kb = (long)(t->nbytes / 1024) * 9 / 10;
    printf("RssFile %ld kB -> %ld kB after releasing %zu kB\n", before, after, (size_t)(t->nbytes / 1024));
    assert_true(before - after >= expect_kb);
    assert_memory_equal(t->data, copy, t->nbytes); /* contents fault back in unchanged */
    /* Ranges outside the mapping, empty or NULL are ignored. */
    fi_gguf_release_pages(g, copy, t->nbytes);
    fi_gguf_release_pages(g, t->data, 0);
    fi_gguf_release_pages(g, NULL, 4096);
    fi_gguf_release_pages(NULL, t->data, t->nbytes);
    assert_memory_equal(t->data, copy, t->nbytes);
    free(copy);
    fi_gguf_close(g);
}

static void test_memory_buffer_unchanged(void **state) {
    (void)state;
    const char *path = model_path();
    if (!path) {
        printf("SKIP: %s is missing (run scripts/get_model.sh)\n", g_path);
        skip();
    }
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    fi_gguf *g;
    fi_error err;
    assert_int_equal(fi_gguf_open_memory(buf, (size_t)n, &g, &err), FI_OK);
    const fi_gguf_tensor *t = largest(g);
    uint8_t *copy = malloc(t->nbytes);
    assert_non_null(copy);
    memcpy(copy, t->data, t->nbytes);
    fi_gguf_release_pages(g, t->data, t->nbytes);
    assert_memory_equal(t->data, copy, t->nbytes);
    free(copy);
    fi_gguf_close(g);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapped_file),
        cmocka_unit_test(test_memory_buffer_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
