/* GGUF reader: parses and validates the whole file up front so that nothing
 * downstream ever reads outside the mapping. Every check names the field and
 * the file offset it came from. */
#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

#define GGUF_HEADER_BYTES 24u      /* magic, version, tensor_count, kv_count */
#define GGUF_MAX_KEY_LEN 65535u    /* spec: keys are at most 2^16 - 1 bytes */
#define GGUF_MAX_NAME_LEN 64u      /* spec: tensor names are at most 64 bytes */
#define GGUF_MAX_DIMS 4u
#define GGUF_MAX_ARRAY_DEPTH 8     /* bounds recursion on nested arrays */
#define GGUF_DEFAULT_ALIGNMENT 32u
/* Smallest possible encodings, used to reject impossible counts before allocating. */
#define GGUF_MIN_KV_BYTES (8u + 1u + 4u + 1u)                 /* key len, 1-byte key, type, u8 */
#define GGUF_MIN_TENSOR_INFO_BYTES (8u + 1u + 4u + 8u + 4u + 8u) /* name, n_dims, 1 dim, type, offset */

struct fi_gguf {
    const uint8_t *base;
    uint64_t size;
    bool mapped; /* base came from mmap and is unmapped at close */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    fi_gguf_kv *kvs;
    const fi_gguf_kv **kvs_by_key; /* sorted by key for lookups */
    int64_t n_tensors;
    fi_gguf_tensor *tensors;
    const fi_gguf_tensor **tensors_by_name; /* sorted by name for lookups */
};

/* ---- ggml tensor layouts (elements per block, bytes per block) ---- */

static const fi_gguf_tensor_type_info tensor_types[] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},    [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},    [9] = {"Q8_1", 32, 36},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110}, [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18}, [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},      [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},      [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56}, [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66}, [39] = {"MXFP4", 32, 17},
};

const fi_gguf_tensor_type_info *fi_gguf_tensor_type(uint32_t ggml_type) {
    if (ggml_type >= sizeof tensor_types / sizeof tensor_types[0]) return NULL;
    const fi_gguf_tensor_type_info *t = &tensor_types[ggml_type];
    return t->name ? t : NULL;
}

/* ---- metadata value types ---- */

static const char *const value_type_names[] = {"u8",  "i8",     "u16",   "i16", "u32", "i32", "f32",
                                               "bool", "string", "array", "u64", "i64", "f64"};
static const size_t value_type_sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *fi_gguf_type_name(fi_gguf_type t) {
    return (unsigned)t <= FI_GGUF_F64 ? value_type_names[t] : "?";
}

size_t fi_gguf_type_size(fi_gguf_type t) { return (unsigned)t <= FI_GGUF_F64 ? value_type_sizes[t] : 0; }

bool fi_gguf_str_eq(fi_gguf_str s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.len == n && (n == 0 || memcmp(s.data, cstr, n) == 0);
}

/* ---- parsing cursor ---- */

typedef struct reader {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    fi_error *err;
} reader;

/* Renders a string from the file for a message: printable ASCII kept, the
 * rest escaped, long names shortened. */
static const char *printable(fi_gguf_str s, char *buf, size_t cap) {
    size_t o = 0;
    for (uint64_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.data[i];
        if (o + 8 >= cap) {
            snprintf(buf + o, cap - o, "...");
            return buf;
        }
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = '\0';
    return buf;
}

/* Adds context in front of a message from a lower-level read, keeping one "gguf: ". */
static void reprefix(fi_error *err, const char *fmt, ...) FI_PRINTF(2, 3);
static void reprefix(fi_error *err, const char *fmt, ...) {
    if (!err) return;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    const char *rest = strncmp(err->msg, "gguf: ", 6) == 0 ? err->msg + 6 : err->msg;
    snprintf(old, sizeof old, "%s", rest);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}

static uint64_t remaining(const reader *r) { return r->size - r->pos; }

static fi_status truncated(reader *r, const char *what, uint64_t need) {
    return fi_error_set(r->err, FI_ERR_FORMAT,
                        "gguf: %s (at offset %" PRIu64 "): needs %" PRIu64
                        " bytes but the file ends at %" PRIu64,
                        what, r->pos, need, r->size);
}

static fi_status read_bytes(reader *r, void *out, uint64_t n, const char *what) {
    if (remaining(r) < n) return truncated(r, what, n);
    memcpy(out, r->base + r->pos, (size_t)n);
    r->pos += n;
    return FI_OK;
}

static fi_status read_u32(reader *r, uint32_t *v, const char *what) { return read_bytes(r, v, 4, what); }
static fi_status read_u64(reader *r, uint64_t *v, const char *what) { return read_bytes(r, v, 8, what); }

/* A length-prefixed string; its bytes stay in the file. */
static fi_status read_str(reader *r, fi_gguf_str *s, const char *what) {
    uint64_t at = r->pos, len = 0;
    fi_status st = read_u64(r, &len, what);
    if (st) return st;
    if (len > remaining(r)) {
        r->pos = at;
        return fi_error_set(r->err, FI_ERR_FORMAT,
                            "gguf: %s (at offset %" PRIu64 "): length %" PRIu64
                            " extends past end of file (size %" PRIu64 ")",
                            what, at, len, r->size);
    }
    s->data = (const char *)r->base + r->pos;
    s->len = len;
    r->pos += len;
    return FI_OK;
}

static uint64_t align_up(uint64_t x, uint64_t a, bool *overflow) {
    uint64_t rem = x % a;
    if (rem == 0) return x;
    if (x > UINT64_MAX - (a - rem)) {
        *overflow = true;
        return 0;
    }
    return x + (a - rem);
}

/* ---- metadata ---- */

static fi_status bad_kv(reader *r, const char *key, uint64_t at, const char *fmt, ...) FI_PRINTF(4, 5);
static fi_status bad_kv(reader *r, const char *key, uint64_t at, const char *fmt, ...) {
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return fi_error_set(r->err, FI_ERR_FORMAT, "gguf: key '%s' (at offset %" PRIu64 "): %s", key, at,
                        detail);
}

/* Validates one value of type t at the cursor and skips it. Arrays recurse
 * (GGUF allows arrays of arrays); depth is bounded. */
static fi_status skip_value(reader *r, const char *key, uint64_t key_at, fi_gguf_type t, int depth) {
    uint64_t at = r->pos;
    if ((unsigned)t > FI_GGUF_F64)
        return bad_kv(r, key, key_at, "unknown value type %u at offset %" PRIu64, (unsigned)t, at);
    if (t == FI_GGUF_STRING) {
        fi_gguf_str s;
        fi_status st = read_str(r, &s, "string value");
        if (st) reprefix(r->err, "gguf: key '%s' (at offset %" PRIu64 ")", key, key_at);
        return st;
    }
    if (t == FI_GGUF_ARRAY) {
        if (depth >= GGUF_MAX_ARRAY_DEPTH)
            return bad_kv(r, key, key_at, "arrays nested deeper than %d at offset %" PRIu64,
                          GGUF_MAX_ARRAY_DEPTH, at);
        uint32_t et;
        uint64_t count;
        fi_status st = read_u32(r, &et, "array element type");
        if (!st) st = read_u64(r, &count, "array count");
        if (st) {
            reprefix(r->err, "gguf: key '%s' (at offset %" PRIu64 ")", key, key_at);
            return st;
        }
        if (et > FI_GGUF_F64)
            return bad_kv(r, key, key_at, "unknown array element type %u at offset %" PRIu64, et, at);
        size_t es = value_type_sizes[et];
        /* Each element needs at least this many bytes: reject impossible counts
         * before walking them. */
        uint64_t min_elem = es ? es : (et == FI_GGUF_STRING ? 8 : 12);
        if (count > remaining(r) / min_elem)
            return bad_kv(r, key, key_at,
                          "array count %" PRIu64 " of %s (at offset %" PRIu64
                          ") needs more than the %" PRIu64 " bytes left in the file",
                          count, value_type_names[et], at + 4, remaining(r));
        if (es) {
            if (et == FI_GGUF_BOOL)
                for (uint64_t i = 0; i < count; i++)
                    if (r->base[r->pos + i] > 1)
                        return bad_kv(r, key, key_at, "bool element %" PRIu64 " (at offset %" PRIu64
                                      ") is %u, not 0 or 1",
                                      i, r->pos + i, r->base[r->pos + i]);
            r->pos += count * es;
            return FI_OK;
        }
        for (uint64_t i = 0; i < count; i++) {
            fi_status est = skip_value(r, key, key_at, (fi_gguf_type)et, depth + 1);
            if (est) return est;
        }
        return FI_OK;
    }
    size_t es = value_type_sizes[t];
    if (remaining(r) < es)
        return bad_kv(r, key, key_at, "%s value at offset %" PRIu64 " needs %zu bytes but the file ends at %" PRIu64,
                      value_type_names[t], at, es, r->size);
    if (t == FI_GGUF_BOOL && r->base[r->pos] > 1)
        return bad_kv(r, key, key_at, "bool value (at offset %" PRIu64 ") is %u, not 0 or 1", at,
                      r->base[r->pos]);
    r->pos += es;
    return FI_OK;
}

static int cmp_str(fi_gguf_str a, fi_gguf_str b) {
    uint64_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.data, b.data, (size_t)n) : 0;
    if (c) return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int cmp_kv_ptr(const void *a, const void *b) {
    return cmp_str((*(const fi_gguf_kv *const *)a)->key, (*(const fi_gguf_kv *const *)b)->key);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return cmp_str((*(const fi_gguf_tensor *const *)a)->name, (*(const fi_gguf_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    uint64_t x = (*(const fi_gguf_tensor *const *)a)->offset, y = (*(const fi_gguf_tensor *const *)b)->offset;
    return x < y ? -1 : x > y;
}

static fi_status read_kv(reader *r, fi_gguf_kv *kv, int64_t index) {
    char idx[64], keybuf[96];
    kv->offset = r->pos;
    snprintf(idx, sizeof idx, "key of metadata entry %" PRId64, index);
    fi_status st = read_str(r, &kv->key, idx);
    if (st) return st;
    if (kv->key.len == 0 || kv->key.len > GGUF_MAX_KEY_LEN)
        return fi_error_set(r->err, FI_ERR_FORMAT,
                            "gguf: %s (at offset %" PRIu64 "): length %" PRIu64 " is not in 1..%u", idx,
                            kv->offset, kv->key.len, GGUF_MAX_KEY_LEN);
    const char *key = printable(kv->key, keybuf, sizeof keybuf);
    uint32_t t;
    if ((st = read_u32(r, &t, "value type"))) {
        reprefix(r->err, "gguf: key '%s' (at offset %" PRIu64 ")", key, kv->offset);
        return st;
    }
    if (t > FI_GGUF_F64)
        return bad_kv(r, key, kv->offset, "unknown value type %u at offset %" PRIu64 " (known: 0..12)", t,
                      r->pos - 4);
    kv->type = (fi_gguf_type)t;
    uint64_t value_at = r->pos;
    if (kv->type == FI_GGUF_ARRAY) {
        /* Peek the header for the struct; skip_value validates it all. */
        if (remaining(r) >= 12) {
            uint32_t et;
            memcpy(&et, r->base + r->pos, 4);
            memcpy(&kv->arr_count, r->base + r->pos + 4, 8);
            kv->arr_type = (fi_gguf_type)et;
        }
    }
    if ((st = skip_value(r, key, kv->offset, kv->type, 0))) return st;
    if (kv->type == FI_GGUF_ARRAY) {
        kv->value = r->base + value_at + 12;
    } else if (kv->type == FI_GGUF_STRING) {
        memcpy(&kv->str.len, r->base + value_at, 8);
        kv->str.data = (const char *)r->base + value_at + 8;
        kv->value = kv->str.data;
    } else {
        kv->value = r->base + value_at;
    }
    return FI_OK;
}

/* Indexes the elements of each string array so fi_gguf_array_str is O(1).
 * Already validated by skip_value, so the walk needs no checks. */
static fi_status index_string_array(fi_gguf_kv *kv, fi_error *err) {
    fi_gguf_str *strs = malloc((size_t)(kv->arr_count ? kv->arr_count : 1) * sizeof *strs);
    if (!strs) return fi_error_set(err, FI_ERR_NOMEM, "gguf: out of memory indexing a string array");
    const uint8_t *p = kv->value;
    for (uint64_t i = 0; i < kv->arr_count; i++) {
        memcpy(&strs[i].len, p, 8);
        strs[i].data = (const char *)p + 8;
        p += 8 + strs[i].len;
    }
    kv->arr_strs = strs;
    return FI_OK;
}

/* ---- tensors ---- */

static fi_status bad_tensor(reader *r, const fi_gguf_tensor *t, const char *fmt, ...) FI_PRINTF(3, 4);
static fi_status bad_tensor(reader *r, const fi_gguf_tensor *t, const char *fmt, ...) {
    char detail[256], name[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return fi_error_set(r->err, FI_ERR_FORMAT, "gguf: tensor '%s' (info at offset %" PRIu64 "): %s",
                        printable(t->name, name, sizeof name), t->info_offset, detail);
}

static fi_status read_tensor_info(reader *r, fi_gguf_tensor *t, int64_t index, uint64_t alignment) {
    char what[64];
    t->info_offset = r->pos;
    snprintf(what, sizeof what, "name of tensor %" PRId64, index);
    fi_status st = read_str(r, &t->name, what);
    if (st) return st;
    if (t->name.len == 0 || t->name.len > GGUF_MAX_NAME_LEN)
        return bad_tensor(r, t, "name length %" PRIu64 " is not in 1..%u", t->name.len, GGUF_MAX_NAME_LEN);
    uint64_t at = r->pos;
    if ((st = read_u32(r, &t->n_dims, "n_dims"))) goto prefix;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return bad_tensor(r, t, "n_dims %u (at offset %" PRIu64 ") is not in 1..%u", t->n_dims, at,
                          GGUF_MAX_DIMS);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t v;
        at = r->pos;
        if ((st = read_u64(r, &v, "dimension"))) goto prefix;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return bad_tensor(r, t, "ne[%u] = %" PRIu64 " (at offset %" PRIu64 ") is not in 1..2^63-1", d, v,
                              at);
        if (n_elems > (uint64_t)INT64_MAX / v)
            return bad_tensor(r, t, "element count overflows at ne[%u] = %" PRIu64 " (at offset %" PRIu64 ")",
                              d, v, at);
        n_elems *= v;
        t->ne[d] = (int64_t)v;
    }
    at = r->pos;
    if ((st = read_u32(r, &t->type, "type"))) goto prefix;
    const fi_gguf_tensor_type_info *ti = fi_gguf_tensor_type(t->type);
    if (!ti) return bad_tensor(r, t, "unknown ggml type id %u (at offset %" PRIu64 ")", t->type, at);
    if (t->ne[0] % ti->block_size != 0)
        return bad_tensor(r, t, "ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64,
                          t->ne[0], ti->name, ti->block_size);
    /* bytes = blocks per row * block bytes * rows; each step overflow-checked. */
    uint64_t blocks_per_row = (uint64_t)(t->ne[0] / ti->block_size);
    if (blocks_per_row > UINT64_MAX / (uint64_t)ti->block_bytes) return bad_tensor(r, t, "byte size overflows");
    uint64_t row_bytes = blocks_per_row * (uint64_t)ti->block_bytes;
    uint64_t rows = n_elems / (uint64_t)t->ne[0];
    if (row_bytes != 0 && rows > UINT64_MAX / row_bytes) return bad_tensor(r, t, "byte size overflows");
    t->nbytes = row_bytes * rows;
    at = r->pos;
    if ((st = read_u64(r, &t->offset, "data offset"))) goto prefix;
    if (t->offset % alignment != 0)
        return bad_tensor(r, t, "data offset %" PRIu64 " (at offset %" PRIu64 ") is not a multiple of the alignment %" PRIu64,
                          t->offset, at, alignment);
    return FI_OK;
prefix: {
    char name[96];
    reprefix(r->err, "gguf: tensor '%s' (info at offset %" PRIu64 ")",
                    printable(t->name, name, sizeof name), t->info_offset);
    return st;
}
}

/* ---- open / close ---- */

static fi_status parse(fi_gguf *g, fi_error *err) {
    reader r = {g->base, g->size, 0, err};
    char magic[4];
    if (g->size < GGUF_HEADER_BYTES)
        return fi_error_set(err, FI_ERR_FORMAT, "gguf: file of %" PRIu64 " bytes is too small for a header (%u bytes)",
                            g->size, GGUF_HEADER_BYTES);
    memcpy(magic, g->base, 4);
    if (memcmp(magic, "GGUF", 4) != 0)
        return fi_error_set(err, FI_ERR_FORMAT,
                            "gguf: magic (at offset 0) is %02x %02x %02x %02x, expected 'GGUF' (47 47 55 46)",
                            (uint8_t)magic[0], (uint8_t)magic[1], (uint8_t)magic[2], (uint8_t)magic[3]);
    r.pos = 4;
    uint64_t n_tensors, n_kv;
    read_u32(&r, &g->version, "version");
    read_u64(&r, &n_tensors, "tensor_count");
    read_u64(&r, &n_kv, "kv_count");
    if (g->version != 2 && g->version != 3) {
        uint32_t v = g->version;
        uint32_t swapped = (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
        return fi_error_set(err, FI_ERR_FORMAT, "gguf: version (at offset 4) is %u; supported: 2, 3%s", v,
                            (swapped == 2 || swapped == 3) ? " (this looks like a big-endian file)" : "");
    }
    if (n_kv > (g->size - r.pos) / GGUF_MIN_KV_BYTES)
        return fi_error_set(err, FI_ERR_FORMAT,
                            "gguf: kv_count (at offset 16) is %" PRIu64 ", impossible in a file of %" PRIu64 " bytes",
                            n_kv, g->size);
    if (n_tensors > (g->size - r.pos - n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_INFO_BYTES)
        return fi_error_set(err, FI_ERR_FORMAT,
                            "gguf: tensor_count (at offset 8) is %" PRIu64 ", impossible in a file of %" PRIu64
                            " bytes with %" PRIu64 " metadata entries",
                            n_tensors, g->size, n_kv);

    g->n_kv = (int64_t)n_kv;
    g->kvs = calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kvs);
    g->kvs_by_key = calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kvs_by_key);
    if (!g->kvs || !g->kvs_by_key) return fi_error_set(err, FI_ERR_NOMEM, "gguf: out of memory for %" PRIu64 " keys", n_kv);
    fi_status st;
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((st = read_kv(&r, &g->kvs[i], (int64_t)i))) return st;
        g->kvs_by_key[i] = &g->kvs[i];
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        fi_gguf_kv *kv = &g->kvs[i];
        if (kv->type == FI_GGUF_ARRAY && kv->arr_type == FI_GGUF_STRING &&
            (st = index_string_array(kv, err)))
            return st;
    }
    qsort(g->kvs_by_key, (size_t)n_kv, sizeof *g->kvs_by_key, cmp_kv_ptr);
    for (uint64_t i = 1; i < n_kv; i++)
        if (cmp_str(g->kvs_by_key[i - 1]->key, g->kvs_by_key[i]->key) == 0) {
            char kb[96];
            const fi_gguf_kv *a = g->kvs_by_key[i - 1], *b = g->kvs_by_key[i];
            return fi_error_set(err, FI_ERR_FORMAT, "gguf: key '%s' appears twice (at offsets %" PRIu64 " and %" PRIu64 ")",
                                printable(a->key, kb, sizeof kb), a->offset < b->offset ? a->offset : b->offset,
                                a->offset < b->offset ? b->offset : a->offset);
        }

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const fi_gguf_kv *al = fi_gguf_find(g, "general.alignment");
    if (al) {
        int64_t a;
        if (al->type == FI_GGUF_ARRAY || al->type == FI_GGUF_STRING || al->type == FI_GGUF_BOOL ||
            al->type == FI_GGUF_F32 || al->type == FI_GGUF_F64 || !fi_gguf_get_i64(g, "general.alignment", &a))
            return fi_error_set(err, FI_ERR_FORMAT,
                                "gguf: key 'general.alignment' (at offset %" PRIu64 "): type %s is not an integer",
                                al->offset, fi_gguf_type_name(al->type));
        if (a <= 0 || (a & (a - 1)) != 0 || a > (int64_t)1 << 30)
            return fi_error_set(err, FI_ERR_FORMAT,
                                "gguf: key 'general.alignment' (at offset %" PRIu64 "): %" PRId64
                                " is not a power of two in 1..2^30",
                                al->offset, a);
        g->alignment = (uint64_t)a;
    }

    g->n_tensors = (int64_t)n_tensors;
    g->tensors = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof *g->tensors);
    g->tensors_by_name = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof *g->tensors_by_name);
    if (!g->tensors || !g->tensors_by_name)
        return fi_error_set(err, FI_ERR_NOMEM, "gguf: out of memory for %" PRIu64 " tensors", n_tensors);
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((st = read_tensor_info(&r, &g->tensors[i], (int64_t)i, g->alignment))) return st;
        g->tensors_by_name[i] = &g->tensors[i];
    }
    qsort(g->tensors_by_name, (size_t)n_tensors, sizeof *g->tensors_by_name, cmp_tensor_name);
    for (uint64_t i = 1; i < n_tensors; i++)
        if (cmp_str(g->tensors_by_name[i - 1]->name, g->tensors_by_name[i]->name) == 0) {
            char nb[96];
            const fi_gguf_tensor *a = g->tensors_by_name[i - 1], *b = g->tensors_by_name[i];
            return fi_error_set(err, FI_ERR_FORMAT,
                                "gguf: tensor name '%s' appears twice (infos at offsets %" PRIu64 " and %" PRIu64 ")",
                                printable(a->name, nb, sizeof nb),
                                a->info_offset < b->info_offset ? a->info_offset : b->info_offset,
                                a->info_offset < b->info_offset ? b->info_offset : a->info_offset);
        }

    bool overflow = false;
    g->data_offset = align_up(r.pos, g->alignment, &overflow);
    if (overflow || (n_tensors > 0 && g->data_offset > g->size))
        return fi_error_set(err, FI_ERR_FORMAT,
                            "gguf: data section (tensor infos end at offset %" PRIu64 ", aligned to %" PRIu64
                            ") starts past end of file (size %" PRIu64 ")",
                            r.pos, g->alignment, g->size);
    if (g->data_offset > g->size) g->data_offset = g->size; /* no tensors: an empty data section */
    uint64_t data_size = g->size - g->data_offset;
    for (uint64_t i = 0; i < n_tensors; i++) {
        fi_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            char nb[96];
            uint64_t begin = g->data_offset + t->offset; /* offset may be huge: report wrap-around plainly */
            if (t->offset > UINT64_MAX - g->data_offset || t->nbytes > UINT64_MAX - begin)
                return fi_error_set(err, FI_ERR_FORMAT,
                                    "gguf: tensor '%s' (info at offset %" PRIu64 "): data offset %" PRIu64 " + %" PRIu64
                                    " bytes overflows (file size %" PRIu64 ")",
                                    printable(t->name, nb, sizeof nb), t->info_offset, t->offset, t->nbytes, g->size);
            return fi_error_set(err, FI_ERR_FORMAT,
                                "gguf: tensor '%s' (info at offset %" PRIu64 "): data [%" PRIu64 ", %" PRIu64
                                ") extends past end of file (size %" PRIu64 ")",
                                printable(t->name, nb, sizeof nb), t->info_offset, begin, begin + t->nbytes, g->size);
        }
        t->data = g->base + g->data_offset + t->offset;
    }
    /* Overlap: sort a scratch copy of the pointers by offset, compare neighbours. */
    const fi_gguf_tensor **by_off = malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *by_off);
    if (!by_off) return fi_error_set(err, FI_ERR_NOMEM, "gguf: out of memory");
    for (uint64_t i = 0; i < n_tensors; i++) by_off[i] = &g->tensors[i];
    qsort(by_off, (size_t)n_tensors, sizeof *by_off, cmp_tensor_offset);
    for (uint64_t i = 1; i < n_tensors; i++) {
        const fi_gguf_tensor *a = by_off[i - 1], *b = by_off[i];
        if (a->offset + a->nbytes > b->offset) {
            char na[96], nb[96];
            fi_error_set(err, FI_ERR_FORMAT,
                         "gguf: tensor '%s' (info at offset %" PRIu64 "): data [%" PRIu64 ", %" PRIu64
                         ") overlaps tensor '%s' (info at offset %" PRIu64 ") data [%" PRIu64 ", %" PRIu64 ")",
                         printable(b->name, nb, sizeof nb), b->info_offset, g->data_offset + b->offset,
                         g->data_offset + b->offset + b->nbytes, printable(a->name, na, sizeof na), a->info_offset,
                         g->data_offset + a->offset, g->data_offset + a->offset + a->nbytes);
            free(by_off);
            return FI_ERR_FORMAT;
        }
    }
    free(by_off);
    return FI_OK;
}

static fi_status open_common(fi_gguf *g, fi_gguf **out, fi_error *err) {
    fi_status st = parse(g, err);
    if (st) {
        fi_gguf_close(g);
        return st;
    }
    *out = g;
    return FI_OK;
}

fi_status fi_gguf_open_memory(const void *data, size_t size, fi_gguf **out, fi_error *err) {
    if (!out) return fi_error_set(err, FI_ERR_INVALID, "gguf: out is NULL");
    *out = NULL;
    if (!data && size) return fi_error_set(err, FI_ERR_INVALID, "gguf: data is NULL");
    fi_gguf *g = calloc(1, sizeof *g);
    if (!g) return fi_error_set(err, FI_ERR_NOMEM, "gguf: out of memory");
    g->base = data ? data : (const uint8_t *)"";
    g->size = size;
    return open_common(g, out, err);
}

fi_status fi_gguf_open(const char *path, fi_gguf **out, fi_error *err) {
    if (!out || !path) return fi_error_set(err, FI_ERR_INVALID, "gguf: path or out is NULL");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fi_error_set(err, FI_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return fi_error_set(err, FI_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fi_error_set(err, FI_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < (off_t)GGUF_HEADER_BYTES) {
        close(fd);
        return fi_error_set(err, FI_ERR_FORMAT, "%s: gguf: file of %lld bytes is too small for a header (%u bytes)",
                            path, (long long)sb.st_size, GGUF_HEADER_BYTES);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return fi_error_set(err, FI_ERR_IO, "%s: cannot mmap: %s", path, strerror(e));
    fi_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, (size_t)sb.st_size);
        return fi_error_set(err, FI_ERR_NOMEM, "gguf: out of memory");
    }
    g->base = map;
    g->size = (uint64_t)sb.st_size;
    g->mapped = true;
    fi_status st = open_common(g, out, err);
    if (st) fi_error_prefix(err, "%s", path);
    return st;
}

void fi_gguf_release_pages(const fi_gguf *g, const void *ptr, size_t bytes) {
    /* Only a private read-only file mapping may be dropped: on anonymous memory MADV_DONTNEED
     * would zero it. */
    if (!g || !g->mapped || !ptr) return;
    uintptr_t lo = (uintptr_t)g->base, hi = lo + (uintptr_t)g->size, a = (uintptr_t)ptr;
    if (a < lo || a >= hi) return;
    uintptr_t b = bytes > hi - a ? hi : a + (uintptr_t)bytes;
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t page = (uintptr_t)ps;
    a = (a + page - 1) & ~(page - 1);
    b &= ~(page - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED); /* a hint: failure changes nothing */
}

void fi_gguf_close(fi_gguf *g) {
    if (!g) return;
    if (g->kvs)
        for (int64_t i = 0; i < g->n_kv; i++) free((void *)g->kvs[i].arr_strs);
    free(g->kvs);
    free(g->kvs_by_key);
    free(g->tensors);
    free(g->tensors_by_name);
    if (g->mapped) munmap((void *)g->base, (size_t)g->size);
    free(g);
}

/* ---- accessors ---- */

uint32_t fi_gguf_version(const fi_gguf *g) { return g->version; }
uint64_t fi_gguf_alignment(const fi_gguf *g) { return g->alignment; }
uint64_t fi_gguf_data_offset(const fi_gguf *g) { return g->data_offset; }
uint64_t fi_gguf_file_size(const fi_gguf *g) { return g->size; }
int64_t fi_gguf_n_kv(const fi_gguf *g) { return g->n_kv; }
int64_t fi_gguf_n_tensors(const fi_gguf *g) { return g->n_tensors; }

const fi_gguf_kv *fi_gguf_kv_at(const fi_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kvs[i] : NULL;
}

const fi_gguf_tensor *fi_gguf_tensor_at(const fi_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const fi_gguf_kv *fi_gguf_find(const fi_gguf *g, const char *key) {
    fi_gguf_str k = {key, strlen(key)};
    int64_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = cmp_str(g->kvs_by_key[mid]->key, k);
        if (c == 0) return g->kvs_by_key[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const fi_gguf_tensor *fi_gguf_find_tensor(const fi_gguf *g, const char *name) {
    fi_gguf_str k = {name, strlen(name)};
    int64_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = cmp_str(g->tensors_by_name[mid]->name, k);
        if (c == 0) return g->tensors_by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Reads an integer-typed scalar as (negative?, magnitude). */
static bool kv_integer(const fi_gguf_kv *kv, bool *neg, uint64_t *mag) {
    if (!kv) return false;
    const void *p = kv->value;
    int64_t s;
    *neg = false;
    switch (kv->type) {
    case FI_GGUF_U8: { uint8_t v; memcpy(&v, p, 1); *mag = v; return true; }
    case FI_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); *mag = v; return true; }
    case FI_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); *mag = v; return true; }
    case FI_GGUF_U64: { uint64_t v; memcpy(&v, p, 8); *mag = v; return true; }
    case FI_GGUF_I8: { int8_t v; memcpy(&v, p, 1); s = v; break; }
    case FI_GGUF_I16: { int16_t v; memcpy(&v, p, 2); s = v; break; }
    case FI_GGUF_I32: { int32_t v; memcpy(&v, p, 4); s = v; break; }
    case FI_GGUF_I64: { int64_t v; memcpy(&v, p, 8); s = v; break; }
    default: return false;
    }
    *neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return true;
}

bool fi_gguf_get_u32(const fi_gguf *g, const char *key, uint32_t *out) {
    bool neg;
    uint64_t mag;
    if (!kv_integer(fi_gguf_find(g, key), &neg, &mag) || neg || mag > UINT32_MAX) return false;
    *out = (uint32_t)mag;
    return true;
}

bool fi_gguf_get_i64(const fi_gguf *g, const char *key, int64_t *out) {
    bool neg;
    uint64_t mag;
    if (!kv_integer(fi_gguf_find(g, key), &neg, &mag)) return false;
    if (!neg && mag > (uint64_t)INT64_MAX) return false;
    if (neg && mag > (uint64_t)INT64_MAX + 1) return false;
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return true;
}

bool fi_gguf_get_f32(const fi_gguf *g, const char *key, float *out) {
    const fi_gguf_kv *kv = fi_gguf_find(g, key);
    if (!kv) return false;
    if (kv->type == FI_GGUF_F32) {
        memcpy(out, kv->value, 4);
        return true;
    }
    if (kv->type == FI_GGUF_F64) {
        double d;
        memcpy(&d, kv->value, 8);
        *out = (float)d;
        return true;
    }
    return false;
}

bool fi_gguf_get_bool(const fi_gguf *g, const char *key, bool *out) {
    const fi_gguf_kv *kv = fi_gguf_find(g, key);
    if (!kv || kv->type != FI_GGUF_BOOL) return false;
    *out = *(const uint8_t *)kv->value != 0;
    return true;
}

bool fi_gguf_get_str(const fi_gguf *g, const char *key, fi_gguf_str *out) {
    const fi_gguf_kv *kv = fi_gguf_find(g, key);
    if (!kv || kv->type != FI_GGUF_STRING) return false;
    *out = kv->str;
    return true;
}

fi_gguf_str fi_gguf_array_str(const fi_gguf_kv *kv, uint64_t i) {
    fi_gguf_str none = {NULL, 0};
    if (!kv || kv->type != FI_GGUF_ARRAY || kv->arr_type != FI_GGUF_STRING || !kv->arr_strs || i >= kv->arr_count)
        return none;
    return kv->arr_strs[i];
}
