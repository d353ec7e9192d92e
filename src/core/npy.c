#include "core/npy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

/* A header is a few hundred bytes in practice; this bound keeps a hostile length
 * field from making us allocate gigabytes before we can tell the file is bad. */
#define NPY_MAX_HEADER (1u << 20)
#define NPY_ALIGN 64

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

typedef struct npy_type_info {
    fi_npy_dtype dtype;
    const char *descr, *name;
    size_t size;
} npy_type_info;

static const npy_type_info npy_types[] = {
    {FI_NPY_F32, "<f4", "float32", 4}, {FI_NPY_F16, "<f2", "float16", 2},
    {FI_NPY_F64, "<f8", "float64", 8}, {FI_NPY_I32, "<i4", "int32", 4},
    {FI_NPY_I64, "<i8", "int64", 8},   {FI_NPY_U8, "|u1", "uint8", 1},
};
#define NPY_N_TYPES (sizeof npy_types / sizeof npy_types[0])

static const npy_type_info *npy_type(fi_npy_dtype t) {
    for (size_t i = 0; i < NPY_N_TYPES; i++)
        if (npy_types[i].dtype == t) return &npy_types[i];
    return NULL;
}

size_t fi_npy_dtype_size(fi_npy_dtype t) {
    const npy_type_info *ti = npy_type(t);
    return ti ? ti->size : 0;
}

const char *fi_npy_dtype_name(fi_npy_dtype t) {
    const npy_type_info *ti = npy_type(t);
    return ti ? ti->name : "unknown";
}

const char *fi_npy_dtype_descr(fi_npy_dtype t) {
    const npy_type_info *ti = npy_type(t);
    return ti ? ti->descr : "?";
}

void fi_npy_free(fi_npy_array *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ---- header parsing ------------------------------------------------------ */

/* The header is the repr of a Python dict with exactly the keys 'descr',
 * 'fortran_order' and 'shape'. We parse that grammar, not a general literal. */
typedef struct npy_cursor {
    const char *p, *end;
    const char *name;
    fi_error *err;
} npy_cursor;

static void npy_skip_space(npy_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static fi_status npy_bad(npy_cursor *c, const char *what) {
    return fi_error_set(c->err, FI_ERR_FORMAT, "%s: malformed .npy header: %s", c->name, what);
}

static bool npy_accept(npy_cursor *c, char ch) {
    npy_skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted string without escapes; at most cap-1 characters. */
static fi_status npy_string(npy_cursor *c, char *buf, size_t cap, const char *what) {
    npy_skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) {
        char msg[96];
        snprintf(msg, sizeof msg, "expected a quoted string for %s", what);
        return npy_bad(c, msg);
    }
    const char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (*c->p == '\\' || n + 1 >= cap) return npy_bad(c, "unexpected string contents");
        buf[n++] = *c->p++;
    }
    if (c->p >= c->end) return npy_bad(c, "unterminated string");
    c->p++;
    buf[n] = '\0';
    return FI_OK;
}

static bool npy_word(npy_cursor *c, const char *word) {
    npy_skip_space(c);
    const size_t n = strlen(word);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, word, n) == 0) {
        const char *after = c->p + n;
        if (after < c->end && ((*after >= 'a' && *after <= 'z') || (*after >= 'A' && *after <= 'Z') ||
                               (*after >= '0' && *after <= '9') || *after == '_'))
            return false;
        c->p = after;
        return true;
    }
    return false;
}

static fi_status npy_descr(npy_cursor *c, fi_npy_dtype *out) {
    char d[32];
    fi_status st = npy_string(c, d, sizeof d, "'descr' (a structured dtype is not supported)");
    if (st) return st;
    for (size_t i = 0; i < NPY_N_TYPES; i++)
        if (strcmp(d, npy_types[i].descr) == 0) {
            *out = npy_types[i].dtype;
            return FI_OK;
        }
    /* Name the two common mistakes precisely. */
    if (d[0] == '>' || d[0] == '=' || d[0] == '!') {
        for (size_t i = 0; i < NPY_N_TYPES; i++)
            if (strcmp(d + 1, npy_types[i].descr + 1) == 0) {
                if (d[0] == '=')
                    return fi_error_set(c->err, FI_ERR_FORMAT,
                                        "%s: dtype '%s' has native byte order; only explicit little-endian "
                                        "('%s') is accepted",
                                        c->name, d, npy_types[i].descr);
                return fi_error_set(c->err, FI_ERR_FORMAT,
                                    "%s: big-endian data (dtype '%s') is not supported; save it as "
                                    "little-endian ('%s', e.g. arr.astype('%s'))",
                                    c->name, d, npy_types[i].descr, npy_types[i].descr);
            }
    }
    return fi_error_set(c->err, FI_ERR_FORMAT,
                        "%s: unsupported dtype '%s' (supported: <f4 float32, <f2 float16, <f8 float64, "
                        "<i4 int32, <i8 int64, |u1 uint8)",
                        c->name, d);
}

static fi_status npy_shape(npy_cursor *c, fi_npy_array *a) {
    if (!npy_accept(c, '(')) return npy_bad(c, "'shape' must be a tuple");
    int n = 0;
    bool need_comma_for_one = true;
    for (;;) {
        npy_skip_space(c);
        if (npy_accept(c, ')')) break;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') {
            if (c->p < c->end && *c->p == '-') return npy_bad(c, "negative dimension in 'shape'");
            return npy_bad(c, "expected a dimension in 'shape'");
        }
        if (n == FI_NPY_MAX_DIMS)
            return fi_error_set(c->err, FI_ERR_FORMAT, "%s: more than %d dimensions are not supported", c->name,
                                FI_NPY_MAX_DIMS);
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            const int digit = *c->p++ - '0';
            if (v > (INT64_MAX - digit) / 10)
                return fi_error_set(c->err, FI_ERR_FORMAT, "%s: a dimension in 'shape' overflows", c->name);
            v = v * 10 + digit;
        }
        a->shape[n++] = v;
        if (npy_accept(c, ',')) {
            need_comma_for_one = false;
            continue;
        }
        if (!npy_accept(c, ')')) return npy_bad(c, "expected ',' or ')' in 'shape'");
        if (n == 1 && need_comma_for_one) return npy_bad(c, "'shape' (n) is not a tuple; numpy writes (n,)");
        break;
    }
    a->ndim = n;
    return FI_OK;
}

/* Parses the dict in header[0, len). */
static fi_status npy_parse_dict(const char *header, size_t len, const char *name, fi_npy_array *a,
                                fi_error *err) {
    npy_cursor c = {header, header + len, name, err};
    if (!npy_accept(&c, '{')) return npy_bad(&c, "expected '{'");
    bool have_descr = false, have_order = false, have_shape = false;
    fi_status st;
    for (;;) {
        if (npy_accept(&c, '}')) break;
        char key[32];
        if ((st = npy_string(&c, key, sizeof key, "a key"))) return st;
        if (!npy_accept(&c, ':')) return npy_bad(&c, "expected ':' after a key");
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if ((st = npy_descr(&c, &a->dtype))) return st;
            have_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            if (npy_word(&c, "True"))
                return fi_error_set(err, FI_ERR_FORMAT,
                                    "%s: Fortran-order (column-major) arrays are not supported; save a C-order "
                                    "array (np.ascontiguousarray)",
                                    name);
            if (!npy_word(&c, "False")) return npy_bad(&c, "'fortran_order' must be True or False");
            have_order = true;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if ((st = npy_shape(&c, a))) return st;
            have_shape = true;
        } else {
            char msg[96];
            snprintf(msg, sizeof msg, "unexpected or repeated key '%s'", key);
            return npy_bad(&c, msg);
        }
        if (npy_accept(&c, ',')) continue;
        if (!npy_accept(&c, '}')) return npy_bad(&c, "expected ',' or '}'");
        break;
    }
    npy_skip_space(&c);
    if (c.p != c.end) return npy_bad(&c, "unexpected text after the dict");
    if (!have_descr || !have_order || !have_shape)
        return npy_bad(&c, !have_descr ? "missing 'descr'" : !have_order ? "missing 'fortran_order'" : "missing 'shape'");
    return FI_OK;
}

/* Element count and byte size, refusing overflow of int64 and size_t. */
static fi_status npy_sizes(fi_npy_array *a, const char *name, fi_error *err) {
    const size_t elem = fi_npy_dtype_size(a->dtype);
    int64_t count = 1;
    for (int i = 0; i < a->ndim; i++) {
        if (a->shape[i] != 0 && count > INT64_MAX / a->shape[i])
            return fi_error_set(err, FI_ERR_FORMAT, "%s: the shape's element count overflows", name);
        count *= a->shape[i];
    }
    if ((uint64_t)count > SIZE_MAX / elem)
        return fi_error_set(err, FI_ERR_FORMAT, "%s: the shape's byte size overflows", name);
    a->count = count;
    a->nbytes = (size_t)count * elem;
    return FI_OK;
}

/* Reads the fixed preamble: returns the header's length and where it starts. */
static fi_status npy_preamble(const unsigned char *b, size_t avail, const char *name, size_t *header_start,
                              size_t *header_len, fi_error *err) {
    if (avail < 8 || memcmp(b, npy_magic, sizeof npy_magic) != 0)
        return fi_error_set(err, FI_ERR_FORMAT, "%s: not a .npy file (bad magic; expected \\x93NUMPY)", name);
    const unsigned major = b[6], minor = b[7];
    if (major < 1 || major > 3 || minor != 0)
        return fi_error_set(err, FI_ERR_FORMAT, "%s: unsupported .npy format version %u.%u (known: 1.0, 2.0, 3.0)",
                            name, major, minor);
    const size_t field = major == 1 ? 2 : 4;
    if (avail < 8 + field)
        return fi_error_set(err, FI_ERR_FORMAT, "%s: truncated .npy header (file ends inside the preamble)", name);
    size_t len = (size_t)b[8] | (size_t)b[9] << 8;
    if (field == 4) len |= (size_t)b[10] << 16 | (size_t)b[11] << 24;
    if (len > NPY_MAX_HEADER)
        return fi_error_set(err, FI_ERR_FORMAT, "%s: implausible .npy header length %zu", name, len);
    *header_start = 8 + field;
    *header_len = len;
    return FI_OK;
}

static fi_status npy_header(const unsigned char *b, size_t header_len, const char *name, fi_npy_array *a,
                            fi_error *err) {
    if (header_len == 0 || b[header_len - 1] != '\n')
        return fi_error_set(err, FI_ERR_FORMAT, "%s: malformed .npy header: it does not end with a newline", name);
    fi_status st = npy_parse_dict((const char *)b, header_len, name, a, err);
    if (st) return st;
    return npy_sizes(a, name, err);
}

static void *npy_alloc(size_t nbytes) {
    const size_t rounded = nbytes == 0 ? NPY_ALIGN : (nbytes + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    if (rounded < nbytes) return NULL;
    return aligned_alloc(NPY_ALIGN, rounded);
}

static fi_status npy_check_data_size(size_t have, const fi_npy_array *a, const char *name, fi_error *err) {
    if (have < a->nbytes)
        return fi_error_set(err, FI_ERR_FORMAT,
                            "%s: truncated data: the header promises %zu bytes (%lld elements of %s), the file has %zu",
                            name, a->nbytes, (long long)a->count, fi_npy_dtype_name(a->dtype), have);
    if (have > a->nbytes)
        return fi_error_set(err, FI_ERR_FORMAT,
                            "%s: data size mismatch: %zu bytes follow the header, the shape needs %zu", name, have,
                            a->nbytes);
    return FI_OK;
}

fi_status fi_npy_parse(const void *bytes, size_t len, const char *name, fi_npy_array *out, fi_error *err) {
    memset(out, 0, sizeof *out);
    const unsigned char *b = bytes;
    size_t start, hlen;
    fi_status st = npy_preamble(b, len, name, &start, &hlen, err);
    if (st) return st;
    if (len - start < hlen)
        return fi_error_set(err, FI_ERR_FORMAT, "%s: truncated .npy header (needs %zu bytes, the file has %zu)", name,
                            hlen, len - start);
    fi_npy_array a = {0};
    if ((st = npy_header(b + start, hlen, name, &a, err))) return st;
    if ((st = npy_check_data_size(len - start - hlen, &a, name, err))) return st;
    if (!(a.data = npy_alloc(a.nbytes)))
        return fi_error_set(err, FI_ERR_NOMEM, "%s: out of memory for %zu bytes", name, a.nbytes);
    if (a.nbytes) memcpy(a.data, b + start + hlen, a.nbytes);
    *out = a;
    return FI_OK;
}

fi_status fi_npy_read(const char *path, fi_npy_array *out, fi_error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return fi_error_set(err, FI_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fi_status st = FI_OK;
    unsigned char pre[12];
    unsigned char *header = NULL;
    fi_npy_array a = {0};
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = fi_error_set(err, FI_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    const size_t file_size = (size_t)sb.st_size;
    const size_t got = fread(pre, 1, file_size < sizeof pre ? file_size : sizeof pre, f);
    size_t start, hlen;
    if ((st = npy_preamble(pre, got, path, &start, &hlen, err))) goto done;
    if (file_size - start < hlen) {
        st = fi_error_set(err, FI_ERR_FORMAT, "%s: truncated .npy header (needs %zu bytes, the file has %zu)", path,
                          hlen, file_size - start);
        goto done;
    }
    if (!(header = malloc(hlen ? hlen : 1))) {
        st = fi_error_set(err, FI_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if (fseek(f, (long)start, SEEK_SET) != 0 || fread(header, 1, hlen, f) != hlen) {
        st = fi_error_set(err, FI_ERR_IO, "%s: read error in the header", path);
        goto done;
    }
    if ((st = npy_header(header, hlen, path, &a, err))) goto done;
    if ((st = npy_check_data_size(file_size - start - hlen, &a, path, err))) goto done;
    if (!(a.data = npy_alloc(a.nbytes))) {
        st = fi_error_set(err, FI_ERR_NOMEM, "%s: out of memory for %zu bytes", path, a.nbytes);
        goto done;
    }
    if (a.nbytes && fread(a.data, 1, a.nbytes, f) != a.nbytes) {
        st = fi_error_set(err, FI_ERR_IO, "%s: read error in the data", path);
        goto done;
    }
    *out = a;
    a.data = NULL;
done:
    free(a.data);
    free(header);
    fclose(f);
    return st;
}

/* ---- writing --------------------------------------------------------------- */

/* Builds preamble + header, padded with spaces so the data starts 64-byte aligned. */
static size_t npy_build_header(char *buf, size_t cap, fi_npy_dtype dtype, int ndim, const int64_t *shape) {
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", fi_npy_dtype_descr(dtype));
    for (int i = 0; i < ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    size_t dict_len = (size_t)n;
    const size_t pre = 10; /* version 1.0: magic, 2 version bytes, u16 length */
    size_t total = pre + dict_len + 1;
    total = (total + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    if (total > cap) return 0;
    const size_t hlen = total - pre;
    memcpy(buf, npy_magic, sizeof npy_magic);
    buf[6] = 1, buf[7] = 0;
    buf[8] = (char)(hlen & 0xff), buf[9] = (char)(hlen >> 8);
    memcpy(buf + pre, dict, dict_len);
    memset(buf + pre + dict_len, ' ', hlen - dict_len - 1);
    buf[total - 1] = '\n';
    return total;
}

fi_status fi_npy_write(const char *path, fi_npy_dtype dtype, int ndim, const int64_t *shape, const void *data,
                       fi_error *err) {
    if (!npy_type(dtype)) return fi_error_set(err, FI_ERR_INVALID, "%s: unknown element type", path);
    if (ndim < 0 || ndim > FI_NPY_MAX_DIMS)
        return fi_error_set(err, FI_ERR_INVALID, "%s: %d dimensions (at most %d)", path, ndim, FI_NPY_MAX_DIMS);
    fi_npy_array a = {.dtype = dtype, .ndim = ndim};
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return fi_error_set(err, FI_ERR_INVALID, "%s: negative dimension", path);
        a.shape[i] = shape[i];
    }
    fi_status st = npy_sizes(&a, path, err);
    if (st) return fi_error_set(err, FI_ERR_INVALID, "%s: the shape's size overflows", path);
    if (a.nbytes && !data) return fi_error_set(err, FI_ERR_INVALID, "%s: no data to write", path);

    char header[640];
    const size_t header_len = npy_build_header(header, sizeof header, dtype, ndim, shape);
    if (!header_len) return fi_error_set(err, FI_ERR_INVALID, "%s: header too long", path);

    const size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return fi_error_set(err, FI_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    const int fd = mkstemp(tmp);
    if (fd < 0) {
        st = fi_error_set(err, FI_ERR_IO, "%s: cannot create a file next to it: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        st = fi_error_set(err, FI_ERR_IO, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return st;
    }
    bool ok = fchmod(fd, 0644) == 0;
    ok = ok && fwrite(header, 1, header_len, f) == header_len;
    ok = ok && (a.nbytes == 0 || fwrite(data, 1, a.nbytes, f) == a.nbytes);
    ok = ok && fflush(f) == 0 && fsync(fd) == 0;
    const int saved = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        st = fi_error_set(err, FI_ERR_IO, "%s: write failed: %s", path, strerror(saved ? saved : errno));
    } else if (rename(tmp, path) != 0) {
        st = fi_error_set(err, FI_ERR_IO, "%s: cannot move the written file into place: %s", path, strerror(errno));
        ok = false;
    }
    if (!ok) unlink(tmp);
    free(tmp);
    return st;
}
