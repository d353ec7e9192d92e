/* GGUF reader against files built here by an independent little writer: every
 * field of valid v2/v3 files (all metadata types, string and nested arrays,
 * tensors of each supported type) reads back as written; one malformation per
 * validation rule fails with FI_ERR_FORMAT and a message naming the field;
 * every truncation and random byte corruption of a valid file fails cleanly
 * (run under ASan in CI); the fuzz corpus replays without a crash; the real
 * default model, when present, shows SmolLM2-135M's known shape.
 *
 * FI_GGUF_WRITE_CORPUS=DIR also writes the synthetic files into DIR (the fuzz
 * seed corpus in fuzz/corpus/gguf/ came from there). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/gguf.h"
#include "model/quant.h"
#include "test_support.h"

/* ---- a minimal GGUF writer (little-endian host assumed, as the reader) ---- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(buf *b, uint64_t align) {
    while (b->n % align) put_u8(b, 0);
}

/* Hand-known layouts of the ggml types (ggml's docs), independent of the reader's table. */
static uint64_t known_nbytes(uint32_t type, uint64_t n_elems) {
    switch (type) {
    case 0: return 4 * n_elems;           /* F32 */
    case 1: case 30: return 2 * n_elems;  /* F16, BF16 */
    case 2: return n_elems / 32 * 18;     /* Q4_0 */
    case 3: return n_elems / 32 * 20;     /* Q4_1 */
    case 8: return n_elems / 32 * 34;     /* Q8_0 */
    case 12: return n_elems / 256 * 144;  /* Q4_K */
    case 14: return n_elems / 256 * 210;  /* Q6_K */
    default: return 32;                   /* unknown: anything, the reader must reject it first */
    }
}

typedef struct tspec {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
    int64_t offset; /* -1: next free aligned slot; others are stored as u64 */
} tspec;

/* Writes raw metadata entries; returns how many. */
typedef int (*kv_writer)(buf *b, int variant);

typedef struct fspec {
    uint32_t version;
    int64_t alignment;           /* 0: no general.alignment key (default 32) */
    const tspec *tensors;
    int n_tensors;
    kv_writer kvs;               /* optional extra entries */
    int variant;
    int64_t kv_count_delta;      /* added to the true kv count in the header */
} fspec;

static uint64_t elems(const tspec *t) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims && d < 4; d++) n *= t->ne[d];
    return n;
}

/* Tensor data bytes: byte i of tensor k is (k * 31 + i) & 0xff, so the reader's
 * data pointers can be checked against what was written. */
static uint8_t pattern(int k, uint64_t i) { return (uint8_t)((uint64_t)k * 31 + i); }

static buf build(const fspec *f, uint64_t *data_offset_out, uint64_t *offsets_out) {
    buf b = {0};
    uint64_t align = f->alignment > 0 ? (uint64_t)f->alignment : 32;
    put(&b, "GGUF", 4);
    put_u32(&b, f->version);
    put_u64(&b, (uint64_t)f->n_tensors);
    size_t kv_count_at = b.n;
    put_u64(&b, 0);
    int64_t n_kv = 0;
    if (f->alignment != 0) {
        put_str(&b, "general.alignment");
        put_u32(&b, FI_GGUF_U32);
        put_u32(&b, (uint32_t)f->alignment);
        n_kv++;
    }
    if (f->kvs) n_kv += f->kvs(&b, f->variant);
    uint64_t kvc = (uint64_t)(n_kv + f->kv_count_delta);
    memcpy(b.p + kv_count_at, &kvc, 8);
    uint64_t next = 0, data_end = 0;
    uint64_t offsets[16];
    for (int i = 0; i < f->n_tensors; i++) {
        const tspec *t = &f->tensors[i];
        put_str(&b, t->name);
        put_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&b, d < 4 ? t->ne[d] : 1);
        put_u32(&b, t->type);
        uint64_t nb = known_nbytes(t->type, elems(t));
        uint64_t off = t->offset != -1 ? (uint64_t)t->offset : next;
        offsets[i] = off;
        if (t->offset == -1) {
            next = off + nb;
            next = (next + align - 1) / align * align;
            if (off + nb > data_end) data_end = off + nb;
        }
        put_u64(&b, off);
    }
    pad_to(&b, align);
    uint64_t data_offset = b.n;
    for (uint64_t i = 0; i < data_end; i++) put_u8(&b, 0);
    for (int i = 0; i < f->n_tensors; i++) {
        if (f->tensors[i].offset != -1) continue;
        uint64_t nb = known_nbytes(f->tensors[i].type, elems(&f->tensors[i]));
        for (uint64_t j = 0; j < nb; j++) b.p[data_offset + offsets[i] + j] = pattern(i, j);
    }
    if (data_offset_out) *data_offset_out = data_offset;
    if (offsets_out) memcpy(offsets_out, offsets, sizeof(uint64_t) * (size_t)f->n_tensors);
    return b;
}

/* Every metadata type, scalar and array, with values the test checks. */
static int write_all_types(buf *b, int variant) {
    (void)variant;
    put_str(b, "t.u8"); put_u32(b, FI_GGUF_U8); put_u8(b, 200);
    put_str(b, "t.i8"); put_u32(b, FI_GGUF_I8); put_u8(b, (uint8_t)-100);
    put_str(b, "t.u16"); put_u32(b, FI_GGUF_U16); { uint16_t v = 60000; put(b, &v, 2); }
    put_str(b, "t.i16"); put_u32(b, FI_GGUF_I16); { int16_t v = -30000; put(b, &v, 2); }
    put_str(b, "t.u32"); put_u32(b, FI_GGUF_U32); put_u32(b, 4000000000u);
    put_str(b, "t.i32"); put_u32(b, FI_GGUF_I32); { int32_t v = -7; put(b, &v, 4); }
    put_str(b, "t.f32"); put_u32(b, FI_GGUF_F32); { float v = 1e-5f; put(b, &v, 4); }
    put_str(b, "t.bool"); put_u32(b, FI_GGUF_BOOL); put_u8(b, 1);
    put_str(b, "t.str"); put_u32(b, FI_GGUF_STRING); put_str(b, "llama \xc3\xa9\xe4\xb8\xad");
    put_str(b, "t.u64"); put_u32(b, FI_GGUF_U64); put_u64(b, 1ull << 40);
    put_str(b, "t.i64"); put_u32(b, FI_GGUF_I64); put_u64(b, (uint64_t)INT64_MIN);
    put_str(b, "t.f64"); put_u32(b, FI_GGUF_F64); { double v = 100000.0; put(b, &v, 8); }
    put_str(b, "t.u64big"); put_u32(b, FI_GGUF_U64); put_u64(b, 1ull << 63);
    /* arrays */
    put_str(b, "a.i32"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_I32); put_u64(b, 5);
    for (int32_t i = 0; i < 5; i++) { int32_t v = i * i - 3; put(b, &v, 4); }
    put_str(b, "a.f32"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_F32); put_u64(b, 3);
    for (int i = 0; i < 3; i++) { float v = 0.5f * (float)i; put(b, &v, 4); }
    put_str(b, "a.bool"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_BOOL); put_u64(b, 4);
    for (int i = 0; i < 4; i++) put_u8(b, (uint8_t)(i & 1));
    put_str(b, "a.str"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_STRING); put_u64(b, 4);
    put_str(b, "<|im_start|>"); put_str(b, ""); put_str(b, "\xc4\xa0t"); put_str(b, "a b");
    put_str(b, "a.empty"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_U64); put_u64(b, 0);
    put_str(b, "a.nested"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_ARRAY); put_u64(b, 2);
    put_u32(b, FI_GGUF_U16); put_u64(b, 2); { uint16_t v[2] = {1, 2}; put(b, v, 4); }
    put_u32(b, FI_GGUF_STRING); put_u64(b, 1); put_str(b, "x");
    put_str(b, "general.architecture"); put_u32(b, FI_GGUF_STRING); put_str(b, "llama");
    return 20;
}

static const tspec supported_tensors[] = {
    {"token_embd.weight", 2, {64, 3}, 8, -1},   /* Q8_0 */
    {"f32.1d", 1, {7}, 0, -1},
    {"f16.2d", 2, {16, 5}, 1, -1},
    {"bf16.3d", 3, {4, 2, 3}, 30, -1},
    {"q4_0.w", 2, {64, 2}, 2, -1},
    {"q4_1.w", 4, {32, 3, 1, 2}, 3, -1},
    {"q4_k.listed", 2, {256, 2}, 12, -1},      /* listed, not computed */
};
#define N_SUPPORTED (int)(sizeof supported_tensors / sizeof supported_tensors[0])

static void write_file(const char *dir, const char *name, const buf *b) {
    char path[1024];
    if (b->n > 60000) return; /* corpus files stay small */
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    fwrite(b->p, 1, b->n, fp);
    fclose(fp);
}

static void check_valid(uint32_t version, int64_t alignment) {
    fspec f = {version, alignment, supported_tensors, N_SUPPORTED, write_all_types, 0, 0};
    uint64_t data_offset, offsets[16];
    buf b = build(&f, &data_offset, offsets);
    const char *dir = getenv("FI_GGUF_WRITE_CORPUS");
    if (dir) {
        char name[64];
        snprintf(name, sizeof name, "valid_v%u_align%lld.gguf", version, (long long)alignment);
        write_file(dir, name, &b);
    }
    fi_gguf *g = NULL;
    fi_error err = {0};
    fi_status st = fi_gguf_open_memory(b.p, b.n, &g, &err);
    if (st) fail_msg("valid v%u file rejected: %s", version, err.msg);
    assert_int_equal(fi_gguf_version(g), version);
    assert_int_equal(fi_gguf_alignment(g), alignment ? (uint64_t)alignment : 32);
    assert_int_equal(fi_gguf_data_offset(g), data_offset);
    assert_int_equal(fi_gguf_data_offset(g) % fi_gguf_alignment(g), 0);
    assert_int_equal(fi_gguf_n_kv(g), 20 + (alignment != 0));

    uint32_t u32;
    int64_t i64;
    float f32;
    bool bo;
    fi_gguf_str s;
    assert_true(fi_gguf_get_u32(g, "t.u8", &u32)); assert_int_equal(u32, 200);
    assert_false(fi_gguf_get_u32(g, "t.i8", &u32)); /* negative */
    assert_true(fi_gguf_get_i64(g, "t.i8", &i64)); assert_int_equal(i64, -100);
    assert_true(fi_gguf_get_u32(g, "t.u16", &u32)); assert_int_equal(u32, 60000);
    assert_true(fi_gguf_get_i64(g, "t.i16", &i64)); assert_int_equal(i64, -30000);
    assert_true(fi_gguf_get_u32(g, "t.u32", &u32)); assert_int_equal(u32, 4000000000u);
    assert_true(fi_gguf_get_i64(g, "t.i32", &i64)); assert_int_equal(i64, -7);
    assert_true(fi_gguf_get_f32(g, "t.f32", &f32)); assert_true(f32 == 1e-5f);
    assert_false(fi_gguf_get_u32(g, "t.f32", &u32));
    assert_true(fi_gguf_get_bool(g, "t.bool", &bo)); assert_true(bo);
    assert_false(fi_gguf_get_bool(g, "t.u8", &bo));
    assert_true(fi_gguf_get_str(g, "t.str", &s));
    assert_true(fi_gguf_str_eq(s, "llama \xc3\xa9\xe4\xb8\xad"));
    assert_false(fi_gguf_get_u32(g, "t.u64", &u32)); /* 2^40 does not fit */
    assert_true(fi_gguf_get_i64(g, "t.u64", &i64)); assert_int_equal(i64, 1ll << 40);
    assert_true(fi_gguf_get_i64(g, "t.i64", &i64)); assert_true(i64 == INT64_MIN);
    assert_false(fi_gguf_get_i64(g, "t.u64big", &i64)); /* 2^63 does not fit */
    assert_true(fi_gguf_get_f32(g, "t.f64", &f32)); assert_true(f32 == 100000.0f);
    assert_false(fi_gguf_get_str(g, "t.u8", &s));
    assert_null(fi_gguf_find(g, "t"));
    assert_null(fi_gguf_find(g, "t.u8x"));
    assert_false(fi_gguf_get_u32(g, "missing", &u32));
    assert_true(fi_gguf_get_str(g, "general.architecture", &s));
    assert_true(fi_gguf_str_eq(s, "llama"));

    const fi_gguf_kv *kv = fi_gguf_find(g, "a.i32");
    assert_non_null(kv);
    assert_int_equal(kv->type, FI_GGUF_ARRAY);
    assert_int_equal(kv->arr_type, FI_GGUF_I32);
    assert_int_equal(kv->arr_count, 5);
    for (int i = 0; i < 5; i++) {
        int32_t v;
        memcpy(&v, (const char *)kv->value + 4 * i, 4);
        assert_int_equal(v, i * i - 3);
    }
    kv = fi_gguf_find(g, "a.f32");
    assert_int_equal(kv->arr_count, 3);
    for (int i = 0; i < 3; i++) {
        float v;
        memcpy(&v, (const char *)kv->value + 4 * i, 4);
        assert_true(v == 0.5f * (float)i);
    }
    kv = fi_gguf_find(g, "a.bool");
    assert_int_equal(kv->arr_type, FI_GGUF_BOOL);
    for (int i = 0; i < 4; i++) assert_int_equal(((const uint8_t *)kv->value)[i], i & 1);
    kv = fi_gguf_find(g, "a.str");
    assert_int_equal(kv->arr_type, FI_GGUF_STRING);
    assert_int_equal(kv->arr_count, 4);
    assert_true(fi_gguf_str_eq(fi_gguf_array_str(kv, 0), "<|im_start|>"));
    assert_true(fi_gguf_str_eq(fi_gguf_array_str(kv, 1), ""));
    assert_true(fi_gguf_str_eq(fi_gguf_array_str(kv, 2), "\xc4\xa0t"));
    assert_true(fi_gguf_str_eq(fi_gguf_array_str(kv, 3), "a b"));
    assert_null(fi_gguf_array_str(kv, 4).data);
    assert_null(fi_gguf_array_str(fi_gguf_find(g, "a.i32"), 0).data);
    kv = fi_gguf_find(g, "a.empty");
    assert_int_equal(kv->arr_type, FI_GGUF_U64);
    assert_int_equal(kv->arr_count, 0);
    kv = fi_gguf_find(g, "a.nested");
    assert_int_equal(kv->arr_type, FI_GGUF_ARRAY);
    assert_int_equal(kv->arr_count, 2);
    /* Keys come back in file order, each once. */
    for (int64_t i = 0; i < fi_gguf_n_kv(g); i++) {
        const fi_gguf_kv *k = fi_gguf_kv_at(g, i);
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)k->key.len, k->key.data);
        assert_ptr_equal(fi_gguf_find(g, key), k);
    }
    assert_true(fi_gguf_str_eq(fi_gguf_kv_at(g, alignment ? 1 : 0)->key, "t.u8"));
    assert_null(fi_gguf_kv_at(g, -1));
    assert_null(fi_gguf_kv_at(g, fi_gguf_n_kv(g)));

    assert_int_equal(fi_gguf_n_tensors(g), N_SUPPORTED);
    for (int i = 0; i < N_SUPPORTED; i++) {
        const tspec *ts = &supported_tensors[i];
        const fi_gguf_tensor *t = fi_gguf_tensor_at(g, i);
        assert_true(fi_gguf_str_eq(t->name, ts->name));
        assert_ptr_equal(fi_gguf_find_tensor(g, ts->name), t);
        assert_int_equal(t->n_dims, ts->n_dims);
        for (uint32_t d = 0; d < 4; d++) assert_int_equal(t->ne[d], d < ts->n_dims ? (int64_t)ts->ne[d] : 1);
        assert_int_equal(t->type, ts->type);
        assert_int_equal(t->offset, offsets[i]);
        assert_int_equal(t->offset % fi_gguf_alignment(g), 0);
        assert_int_equal(t->nbytes, known_nbytes(ts->type, elems(ts)));
        assert_ptr_equal(t->data, b.p + data_offset + offsets[i]);
        for (uint64_t j = 0; j < t->nbytes; j++) assert_int_equal(((const uint8_t *)t->data)[j], pattern(i, j));
    }
    assert_null(fi_gguf_find_tensor(g, "missing"));
    assert_null(fi_gguf_tensor_at(g, N_SUPPORTED));
    fi_gguf_close(g);
    free(b.p);
}

static void test_valid_files(void **state) {
    (void)state;
    check_valid(3, 0);
    check_valid(2, 0);
    check_valid(3, 64);
    check_valid(2, 1);
    check_valid(3, 4096);
}

static void test_empty_files(void **state) {
    (void)state;
    /* Header only: no keys, no tensors, no data section. */
    fspec f = {3, 0, NULL, 0, NULL, 0, 0};
    buf b = build(&f, NULL, NULL);
    assert_int_equal(b.n, 32); /* 24-byte header padded to 32 */
    fi_gguf *g = NULL;
    fi_error err = {0};
    assert_int_equal(fi_gguf_open_memory(b.p, 24, &g, &err), FI_OK);
    assert_int_equal(fi_gguf_n_kv(g), 0);
    assert_int_equal(fi_gguf_n_tensors(g), 0);
    assert_null(fi_gguf_find(g, "x"));
    assert_null(fi_gguf_find_tensor(g, "x"));
    fi_gguf_close(g);
    free(b.p);
}

/* The reader's layout table agrees with the matmul module's and with ggml's documented sizes. */
static void test_type_table(void **state) {
    (void)state;
    static const struct { uint32_t id; const char *name; int64_t block, bytes; } facts[] = {
        {0, "F32", 1, 4},     {1, "F16", 1, 2},     {2, "Q4_0", 32, 18},  {3, "Q4_1", 32, 20},
        {6, "Q5_0", 32, 22},  {7, "Q5_1", 32, 24},  {8, "Q8_0", 32, 34},  {9, "Q8_1", 32, 36},
        {10, "Q2_K", 256, 84}, {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
        {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {30, "BF16", 1, 2},
    };
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++) {
        const fi_gguf_tensor_type_info *ti = fi_gguf_tensor_type(facts[i].id);
        assert_non_null(ti);
        assert_string_equal(ti->name, facts[i].name);
        assert_int_equal(ti->block_size, facts[i].block);
        assert_int_equal(ti->block_bytes, facts[i].bytes);
    }
    for (uint32_t id = 0; id < 64; id++) {
        if (!fi_ggml_type_supported(id)) continue;
        const fi_gguf_tensor_type_info *ti = fi_gguf_tensor_type(id);
        assert_non_null(ti);
        assert_int_equal(ti->block_size, fi_ggml_block_size(id));
        assert_int_equal((size_t)ti->block_bytes, fi_ggml_block_bytes(id));
        assert_string_equal(ti->name, fi_ggml_type_name(id));
    }
    assert_null(fi_gguf_tensor_type(4)); /* removed Q4_2 */
    assert_null(fi_gguf_tensor_type(5));
    assert_null(fi_gguf_tensor_type(31));
    assert_null(fi_gguf_tensor_type(1000));
    assert_null(fi_gguf_tensor_type(UINT32_MAX));
}

/* Opens a copy of exactly n bytes (so ASan sees any overread) and expects failure. */
static void expect_fail(const uint8_t *p, size_t n, const char *needle, const char *what) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    fi_gguf *g = NULL;
    fi_error err = {0};
    fi_status st = fi_gguf_open_memory(copy, n, &g, &err);
    if (st == FI_OK) fail_msg("%s: accepted (%zu bytes)", what, n);
    assert_null(g);
    assert_int_equal(st, FI_ERR_FORMAT);
    assert_true(strncmp(err.msg, "gguf: ", 6) == 0);
    if (needle && !strstr(err.msg, needle)) fail_msg("%s: message lacks '%s': %s", what, needle, err.msg);
    free(copy);
}

static void expect_spec_fail(const fspec *f, const char *needle, const char *what) {
    buf b = build(f, NULL, NULL);
    const char *dir = getenv("FI_GGUF_WRITE_CORPUS");
    if (dir) {
        char name[128];
        snprintf(name, sizeof name, "bad_%s.gguf", what);
        for (char *c = name; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.')) *c = '_';
        write_file(dir, name, &b);
    }
    expect_fail(b.p, b.n, needle, what);
    free(b.p);
}

/* Every prefix of a valid file is rejected cleanly. */
static void test_truncation(void **state) {
    (void)state;
    fspec f = {3, 0, supported_tensors, N_SUPPORTED, write_all_types, 0, 0};
    buf b = build(&f, NULL, NULL);
    for (size_t n = 0; n < b.n; n++) expect_fail(b.p, n, NULL, "truncated");
    /* Where the cut falls fixes the field the message names. */
    expect_fail(b.p, 3, "too small", "3 bytes");
    expect_fail(b.p, 30, "kv_count (at offset 16) is 20, impossible in a file of 30 bytes", "cut in first key");
    expect_fail(b.p, 400, "(at offset ", "cut in metadata");
    expect_fail(b.p, b.n - 1, "extends past end of file", "cut in last tensor");
    free(b.p);
}

static void patch_u32(buf *b, size_t at, uint32_t v) { memcpy(b->p + at, &v, 4); }
static void patch_u64(buf *b, size_t at, uint64_t v) { memcpy(b->p + at, &v, 8); }

static void test_bad_header(void **state) {
    (void)state;
    fspec f = {3, 0, supported_tensors, 2, write_all_types, 0, 0};
    buf b = build(&f, NULL, NULL);
    buf c = {malloc(b.n), b.n, b.n};
    memcpy(c.p, b.p, b.n);
    c.p[0] = 'g';
    expect_fail(c.p, c.n, "magic (at offset 0)", "magic");
    memcpy(c.p, b.p, b.n);
    patch_u32(&c, 4, 1);
    expect_fail(c.p, c.n, "version (at offset 4) is 1", "version 1");
    patch_u32(&c, 4, 4);
    expect_fail(c.p, c.n, "version (at offset 4) is 4", "version 4");
    patch_u32(&c, 4, 3u << 24);
    expect_fail(c.p, c.n, "big-endian", "big-endian");
    memcpy(c.p, b.p, b.n);
    patch_u64(&c, 16, UINT64_MAX);
    expect_fail(c.p, c.n, "kv_count (at offset 16)", "huge kv_count");
    patch_u64(&c, 16, 1ull << 40);
    expect_fail(c.p, c.n, "kv_count (at offset 16)", "large kv_count");
    memcpy(c.p, b.p, b.n);
    patch_u64(&c, 8, UINT64_MAX);
    expect_fail(c.p, c.n, "tensor_count (at offset 8)", "huge tensor_count");
    patch_u64(&c, 8, 1000);
    expect_fail(c.p, c.n, "tensor_count (at offset 8)", "large tensor_count");
    /* A kv_count one too high: the next "key" is the first tensor info, which
     * parses as a key whose value type is bogus or the file runs out. */
    memcpy(c.p, b.p, b.n);
    patch_u64(&c, 16, 21);
    expect_fail(c.p, c.n, NULL, "kv_count + 1");
    free(c.p);
    free(b.p);
}

/* Malformed metadata entries, one rule each. */
static int write_bad_kv(buf *b, int variant) {
    switch (variant) {
    case 0: put_u64(b, 0); put_u32(b, FI_GGUF_U8); put_u8(b, 0); return 1;            /* empty key */
    case 1: put_u64(b, 1ull << 62); return 1;                                          /* key past EOF */
    case 2: put_str(b, "k"); put_u32(b, 13); put_u64(b, 0); return 1;                  /* value type */
    case 3: put_str(b, "k"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, 99); put_u64(b, 0); return 1;
    case 4: put_str(b, "k"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_U32); put_u64(b, 1ull << 61);
        return 1;
    case 5: put_str(b, "k"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_STRING); put_u64(b, UINT64_MAX);
        return 1;
    case 6: put_str(b, "k"); put_u32(b, FI_GGUF_STRING); put_u64(b, UINT64_MAX - 3); return 1;
    case 7: put_str(b, "k"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_STRING); put_u64(b, 2);
        put_str(b, "ok"); put_u64(b, 1ull << 40); return 1;                            /* element past EOF */
    case 8: put_str(b, "k"); put_u32(b, FI_GGUF_BOOL); put_u8(b, 2); return 1;
    case 9: put_str(b, "k"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_BOOL); put_u64(b, 2);
        put_u8(b, 1); put_u8(b, 7); return 1;
    case 10: /* arrays nested 9 deep */
        put_str(b, "k"); put_u32(b, FI_GGUF_ARRAY);
        for (int i = 0; i < 9; i++) { put_u32(b, FI_GGUF_ARRAY); put_u64(b, 1); }
        put_u32(b, FI_GGUF_U8); put_u64(b, 0); return 1;
    case 11: put_str(b, "dup"); put_u32(b, FI_GGUF_U8); put_u8(b, 1);
        put_str(b, "x"); put_u32(b, FI_GGUF_U8); put_u8(b, 1);
        put_str(b, "dup"); put_u32(b, FI_GGUF_U32); put_u32(b, 1); return 3;
    case 12: put_str(b, "general.alignment"); put_u32(b, FI_GGUF_STRING); put_str(b, "32"); return 1;
    case 13: put_str(b, "general.alignment"); put_u32(b, FI_GGUF_I32); put_u32(b, (uint32_t)-32); return 1;
    case 14: put_str(b, "k"); put_u32(b, FI_GGUF_ARRAY); put_u32(b, FI_GGUF_ARRAY); put_u64(b, 1ull << 40);
        return 1;
    default: { /* a 65536-byte key */
        char *k = malloc(65537);
        memset(k, 'k', 65536);
        k[65536] = 0;
        put_str(b, k);
        free(k);
        put_u32(b, FI_GGUF_U8); put_u8(b, 0); return 1;
    }
    }
}

static void test_bad_metadata(void **state) {
    (void)state;
    static const struct { const char *needle, *what; } cases[] = {
        {"key of metadata entry 0 (at offset 24): length 0", "empty key"},
        {"key of metadata entry 0 (at offset 24): length 4611686018427387904 extends past end", "key length"},
        {"key 'k' (at offset 24): unknown value type 13", "value type"},
        {"unknown array element type 99", "array element type"},
        {"array count 2305843009213693952 of u32", "array count"},
        {"array count 18446744073709551615 of string", "string array count"},
        {"key 'k' (at offset 24): string value (at offset 37): length", "string length"},
        {"key 'k' (at offset 24): string value (at offset 59)", "string element"},
        {"bool value (at offset 37) is 2", "bool"},
        {"bool element 1 (at offset 50) is 7", "bool element"},
        {"nested deeper than 8", "nesting"},
        {"key 'dup' appears twice", "duplicate key"},
        {"'general.alignment'", "alignment type"},
        {"'general.alignment'", "negative alignment"},
        {"array count 1099511627776 of array", "nested array count"},
        {"length 65536 is not in 1..65535", "long key"},
    };
    for (int v = 0; v < (int)(sizeof cases / sizeof cases[0]); v++) {
        fspec f = {3, 0, supported_tensors, 1, write_bad_kv, v, 0};
        expect_spec_fail(&f, cases[v].needle, cases[v].what);
    }
    /* Alignment values: zero, not a power of two, too large. */
    static const int64_t bad_align[] = {3, 24, 1 << 31 /* as u32 */};
    for (size_t i = 0; i < 3; i++) {
        fspec f = {3, bad_align[i], supported_tensors, 1, NULL, 0, 0};
        expect_spec_fail(&f, "'general.alignment'", "alignment value");
    }
    fspec f0 = {3, 0, NULL, 0, write_bad_kv, 13, 0};
    expect_spec_fail(&f0, "is not a power of two", "alignment -32");
}

static void test_bad_tensors(void **state) {
    (void)state;
    static const struct { tspec t[2]; int n; const char *needle, *what; } cases[] = {
        {{{"w", 0, {1}, 0, -1}}, 1, "tensor 'w' (info at offset 24): n_dims 0", "n_dims 0"},
        {{{"w", 5, {1, 1, 1, 1}, 0, -1}}, 1, "n_dims 5", "n_dims 5"},
        {{{"w", 2, {4, 0}, 0, -1}}, 1, "ne[1] = 0", "zero dim"},
        {{{"w", 2, {4, 1ull << 63}, 0, -1}}, 1, "ne[1] = 9223372036854775808", "dim > int64"},
        {{{"w", 3, {1ull << 32, 1ull << 32, 4}, 0, -1}}, 1, "element count overflows at ne[1] = 4294967296", "dims overflow"},
        {{{"w", 2, {1ull << 40, 1ull << 22}, 0, -1}}, 1, "byte size overflows", "bytes overflow"},
        {{{"w", 1, {32}, 4, -1}}, 1, "unknown ggml type id 4", "removed type"},
        {{{"w", 1, {32}, 0xdeadbeef, -1}}, 1, "unknown ggml type id 3735928559", "bogus type"},
        {{{"w", 2, {48, 2}, 2, -1}}, 1, "ne[0] = 48 is not a multiple of the Q4_0 block size 32", "block"},
        {{{"w", 1, {576}, 12, -1}}, 1, "not a multiple of the Q4_K block size 256", "k block"},
        {{{"w", 1, {8}, 0, 8}}, 1, "data offset 8 (at offset", "misaligned"},
        {{{"w", 1, {8}, 0, 64}}, 1, "data [128, 160) extends past end of file (size 64)", "past end"},
        {{{"w", 1, {8}, 0, (int64_t)(UINT64_MAX - 31) }}, 1, "data offset 18446744073709551584 + 32 bytes overflows", "offset wrap"},
        {{{"w", 1, {8}, 0, (int64_t)(UINT64_MAX / 2 - 31) }}, 1, "extends past end of file", "offset far"},
        {{{"a", 1, {64}, 0, -1}, {"b", 1, {8}, 0, 32}}, 2, "overlaps tensor", "overlap"},
        {{{"a", 1, {8}, 0, -1}, {"a", 1, {8}, 0, -1}}, 2, "tensor name 'a' appears twice", "duplicate name"},
        {{{"", 1, {8}, 0, -1}}, 1, "name length 0", "empty name"},
        {{{"01234567890123456789012345678901234567890123456789012345678901234", 1, {8}, 0, -1}}, 1,
         "name length 65", "long name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fspec f = {3, 0, cases[i].t, cases[i].n, NULL, 0, 0};
        expect_spec_fail(&f, cases[i].needle, cases[i].what);
    }
    /* The overlap message names both tensors; names with odd bytes are escaped. */
    tspec odd[1] = {{"a\nb'", 1, {8}, 0, 8}};
    fspec f = {3, 0, odd, 1, NULL, 0, 0};
    expect_spec_fail(&f, "tensor 'a\\x0ab\\x27'", "escaped name");
    /* A 64-byte name is the longest allowed. */
    tspec ok[1] = {{"0123456789012345678901234567890123456789012345678901234567890123", 1, {8}, 0, -1}};
    fspec fo = {2, 0, ok, 1, NULL, 0, 0};
    buf b = build(&fo, NULL, NULL);
    fi_gguf *g = NULL;
    assert_int_equal(fi_gguf_open_memory(b.p, b.n, &g, NULL), FI_OK);
    fi_gguf_close(g);
    free(b.p);
}

/* Walks everything a consumer may touch, as the fuzz target does. */
static uint64_t walk(const fi_gguf *g) {
    uint64_t h = 0;
    for (int64_t i = 0; i < fi_gguf_n_kv(g); i++) {
        const fi_gguf_kv *kv = fi_gguf_kv_at(g, i);
        h += kv->key.len ? (uint8_t)kv->key.data[kv->key.len - 1] : 0;
        if (kv->type == FI_GGUF_STRING && kv->str.len) h += (uint8_t)kv->str.data[kv->str.len - 1];
        if (kv->type == FI_GGUF_ARRAY) {
            if (kv->arr_type == FI_GGUF_STRING)
                for (uint64_t j = 0; j < kv->arr_count; j++) {
                    fi_gguf_str s = fi_gguf_array_str(kv, j);
                    if (s.len) h += (uint8_t)s.data[s.len - 1];
                }
            else if (fi_gguf_type_size(kv->arr_type) && kv->arr_count)
                h += ((const uint8_t *)kv->value)[kv->arr_count * fi_gguf_type_size(kv->arr_type) - 1];
        } else if (fi_gguf_type_size(kv->type)) {
            h += ((const uint8_t *)kv->value)[fi_gguf_type_size(kv->type) - 1];
        }
    }
    for (int64_t i = 0; i < fi_gguf_n_tensors(g); i++) {
        const fi_gguf_tensor *t = fi_gguf_tensor_at(g, i);
        h += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
        h += fi_gguf_find_tensor(g, "token_embd.weight") != NULL;
    }
    return h;
}

/* Random byte corruption of a valid file: any outcome but a crash is fine,
 * and an accepted file must be fully walkable (ASan checks in CI). */
static void test_random_corruption(void **state) {
    (void)state;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("test_random_corruption"));
    fspec f = {3, 0, supported_tensors, N_SUPPORTED, write_all_types, 0, 0};
    buf b = build(&f, NULL, NULL);
    uint8_t *copy = malloc(b.n);
    int accepted = 0;
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(copy, b.p, b.n);
        int flips = 1 + (int)fi_test_rng_int(&rng, 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)fi_test_rng_int(&rng, (int64_t)b.n);
            switch (fi_test_rng_int(&rng, 3)) {
            case 0: copy[at] ^= (uint8_t)(1u << fi_test_rng_int(&rng, 8)); break;
            case 1: copy[at] = (uint8_t)fi_test_rng_u64(&rng); break;
            default: copy[at] = 0xff; break;
            }
        }
        size_t n = fi_test_rng_int(&rng, 8) == 0 ? (size_t)fi_test_rng_int(&rng, (int64_t)b.n + 1) : b.n;
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, copy, n);
        fi_gguf *g = NULL;
        fi_error err = {0};
        fi_status st = fi_gguf_open_memory(exact, n, &g, &err);
        if (st == FI_OK) {
            accepted++;
            walk(g);
            fi_gguf_close(g);
        } else {
            assert_true(st == FI_ERR_FORMAT || st == FI_ERR_NOMEM);
            assert_true(strlen(err.msg) > 6);
        }
        free(exact);
    }
    printf("[test_random_corruption] %d of 4000 corrupted files still valid (bytes in tensor data)\n", accepted);
    free(copy);
    free(b.p);
}

/* Source tree root: FI_TEST_DATA is <root>/tests/data. */
static void source_path(char *out, size_t cap, const char *rel) {
    const char *data = getenv("FI_TEST_DATA");
    snprintf(out, cap, "%s/../../%s", data ? data : "tests/data", rel);
}

static void test_corpus_replay(void **state) {
    (void)state;
    char dir[1024];
    source_path(dir, sizeof dir, "fuzz/corpus/gguf");
    DIR *d = opendir(dir);
    if (!d) {
        printf("[test_corpus_replay] skipped: no corpus at %s\n", dir);
        skip();
    }
    int n_files = 0, n_valid = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *fp = fopen(path, "rb");
        if (!fp) continue;
        fseek(fp, 0, SEEK_END);
        long len = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        uint8_t *p = malloc(len > 0 ? (size_t)len : 1);
        size_t got = fread(p, 1, (size_t)(len > 0 ? len : 0), fp);
        fclose(fp);
        fi_gguf *g = NULL;
        fi_error err = {0};
        if (fi_gguf_open_memory(p, got, &g, &err) == FI_OK) {
            n_valid++;
            walk(g);
            fi_gguf_close(g);
        } else {
            assert_true(strncmp(err.msg, "gguf: ", 6) == 0);
        }
        free(p);
        n_files++;
    }
    closedir(d);
    printf("[test_corpus_replay] %d files, %d valid\n", n_files, n_valid);
    assert_true(n_files > 0);
}

static void test_open_errors(void **state) {
    (void)state;
    fi_gguf *g = (fi_gguf *)1;
    fi_error err = {0};
    assert_int_equal(fi_gguf_open("/nonexistent/model.gguf", &g, &err), FI_ERR_IO);
    assert_null(g);
    assert_non_null(strstr(err.msg, "/nonexistent/model.gguf"));
    assert_int_equal(fi_gguf_open("/", &g, &err), FI_ERR_IO);
    assert_int_equal(fi_gguf_open("/dev/null", &g, &err), FI_ERR_IO); /* not a regular file */
    /* A real file with a bad header: the message carries the path. */
    char path[] = "/tmp/fi_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "wb");
    fputs("GGUF\x03\0\0\0 too short? no, long enough but bogus counts", fp);
    fclose(fp);
    assert_int_equal(fi_gguf_open(path, &g, &err), FI_ERR_FORMAT);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "gguf: "));
    /* And a valid one through the mmap path. */
    fspec f = {3, 0, supported_tensors, N_SUPPORTED, write_all_types, 0, 0};
    buf b = build(&f, NULL, NULL);
    fp = fopen(path, "wb");
    fwrite(b.p, 1, b.n, fp);
    fclose(fp);
    assert_int_equal(fi_gguf_open(path, &g, &err), FI_OK);
    assert_int_equal(fi_gguf_n_tensors(g), N_SUPPORTED);
    assert_memory_equal(fi_gguf_tensor_at(g, 2)->data, b.p + fi_gguf_data_offset(g) + fi_gguf_tensor_at(g, 2)->offset,
                        fi_gguf_tensor_at(g, 2)->nbytes);
    fi_gguf_close(g);
    remove(path);
    free(b.p);
    assert_int_equal(fi_gguf_open_memory(NULL, 0, &g, &err), FI_ERR_FORMAT);
}

/* The default model's known shape (SmolLM2-135M-Instruct, Q4_1 with a Q8_0 embedding). */
static void test_real_model(void **state) {
    (void)state;
    char path[1024];
    const char *env = getenv("FI_MODEL");
    if (env) snprintf(path, sizeof path, "%s", env);
    else source_path(path, sizeof path, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        printf("[test_real_model] skipped: %s not found (run scripts/get_model.sh)\n", path);
        skip();
    }
    fclose(fp);
    fi_gguf *g = NULL;
    fi_error err = {0};
    if (fi_gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
    fi_gguf_str s;
    uint32_t v;
    float f;
    assert_int_equal(fi_gguf_version(g), 3);
    assert_true(fi_gguf_get_str(g, "general.architecture", &s) && fi_gguf_str_eq(s, "llama"));
    assert_true(fi_gguf_get_u32(g, "llama.block_count", &v)); assert_int_equal(v, 30);
    assert_true(fi_gguf_get_u32(g, "llama.embedding_length", &v)); assert_int_equal(v, 576);
    assert_true(fi_gguf_get_u32(g, "llama.feed_forward_length", &v)); assert_int_equal(v, 1536);
    assert_true(fi_gguf_get_u32(g, "llama.attention.head_count", &v)); assert_int_equal(v, 9);
    assert_true(fi_gguf_get_u32(g, "llama.attention.head_count_kv", &v)); assert_int_equal(v, 3);
    assert_true(fi_gguf_get_u32(g, "llama.rope.dimension_count", &v)); assert_int_equal(v, 64);
    assert_true(fi_gguf_get_f32(g, "llama.rope.freq_base", &f)); assert_true(f == 100000.0f);
    assert_true(fi_gguf_get_str(g, "tokenizer.ggml.model", &s) && fi_gguf_str_eq(s, "gpt2"));
    const fi_gguf_kv *tokens = fi_gguf_find(g, "tokenizer.ggml.tokens");
    assert_non_null(tokens);
    assert_int_equal(tokens->arr_count, 49152);
    assert_true(fi_gguf_str_eq(fi_gguf_array_str(tokens, 0), "<|endoftext|>"));
    assert_true(fi_gguf_str_eq(fi_gguf_array_str(tokens, 1), "<|im_start|>"));
    assert_true(fi_gguf_str_eq(fi_gguf_array_str(tokens, 2), "<|im_end|>"));
    assert_int_equal(fi_gguf_find(g, "tokenizer.ggml.merges")->arr_count, 48900);
    /* 30 blocks x 9 tensors + token_embd + output_norm; tied output (no output.weight). */
    assert_int_equal(fi_gguf_n_tensors(g), 30 * 9 + 2);
    assert_null(fi_gguf_find_tensor(g, "output.weight"));
    const fi_gguf_tensor *emb = fi_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(emb);
    assert_int_equal(emb->ne[0], 576);
    assert_int_equal(emb->ne[1], 49152);
    assert_int_equal(emb->type, 8); /* Q8_0 */
    const fi_gguf_tensor *wk = fi_gguf_find_tensor(g, "blk.29.attn_k.weight");
    assert_non_null(wk);
    assert_int_equal(wk->ne[0], 576);
    assert_int_equal(wk->ne[1], 192); /* 3 kv heads x 64 */
    assert_int_equal(wk->type, 3);    /* Q4_1 */
    assert_int_equal(wk->nbytes, 576 / 32 * 20 * 192);
    uint64_t params = 0;
    for (int64_t i = 0; i < fi_gguf_n_tensors(g); i++) {
        const fi_gguf_tensor *t = fi_gguf_tensor_at(g, i);
        params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    assert_true(params > 134000000 && params < 135000000); /* 134.5 M */
    fi_gguf_close(g);
}

/* Variants made by llama.cpp's quantizer (scripts/make_quants.py): same shape, types as its
 * loader reports them (the tied embedding stays Q8_0 in the Q4_0 file). */
static void test_real_model_variants(void **state) {
    (void)state;
    static const struct { const char *file; uint32_t weight_type, embd_type; } variants[] = {
        {"models/SmolLM2-135M-Instruct.Q4_0.gguf", 2, 8},
        {"models/SmolLM2-135M-Instruct.Q8_0.gguf", 8, 8},
        {"models/SmolLM2-135M-Instruct.F16.gguf", 1, 1},
    };
    int found = 0;
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char path[1024];
        source_path(path, sizeof path, variants[i].file);
        FILE *fp = fopen(path, "rb");
        if (!fp) continue;
        fclose(fp);
        found++;
        fi_gguf *g = NULL;
        fi_error err = {0};
        if (fi_gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
        assert_int_equal(fi_gguf_n_tensors(g), 272);
        assert_int_equal(fi_gguf_find_tensor(g, "token_embd.weight")->type, variants[i].embd_type);
        for (int layer = 0; layer < 30; layer++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.ffn_down.weight", layer);
            const fi_gguf_tensor *t = fi_gguf_find_tensor(g, name);
            assert_non_null(t);
            assert_int_equal(t->type, variants[i].weight_type);
            assert_int_equal(t->ne[0], 1536);
            assert_int_equal(t->ne[1], 576);
        }
        fi_gguf_close(g);
    }
    if (!found) {
        printf("[test_real_model_variants] skipped: no variants (run scripts/make_quants.py)\n");
        skip();
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_files),       cmocka_unit_test(test_empty_files),
        cmocka_unit_test(test_type_table),        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bad_header),        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_bad_tensors),       cmocka_unit_test(test_random_corruption),
        cmocka_unit_test(test_corpus_replay),     cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_real_model),        cmocka_unit_test(test_real_model_variants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
