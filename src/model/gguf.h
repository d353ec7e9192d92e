/* GGUF (v2, v3) model files: a read-only view over a memory mapping.
 *
 * fi_gguf_open validates the whole file before returning it: header, every
 * metadata key and value, every tensor's shape, type, offset and extent, and
 * that no two tensors overlap. After a successful open every pointer handed out
 * (strings, values, tensor data) lies inside the mapping, so callers may read
 * them without further bounds checks. All values are little-endian. */
#ifndef FI_MODEL_GGUF_H
#define FI_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flexinfer.h"

typedef enum fi_gguf_type {
    FI_GGUF_U8 = 0,
    FI_GGUF_I8 = 1,
    FI_GGUF_U16 = 2,
    FI_GGUF_I16 = 3,
    FI_GGUF_U32 = 4,
    FI_GGUF_I32 = 5,
    FI_GGUF_F32 = 6,
    FI_GGUF_BOOL = 7,
    FI_GGUF_STRING = 8,
    FI_GGUF_ARRAY = 9,
    FI_GGUF_U64 = 10,
    FI_GGUF_I64 = 11,
    FI_GGUF_F64 = 12,
} fi_gguf_type;

/* Points into the mapping; not NUL-terminated. */
typedef struct fi_gguf_str {
    const char *data;
    uint64_t len;
} fi_gguf_str;

typedef struct fi_gguf_kv {
    fi_gguf_str key;
    fi_gguf_type type;
    fi_gguf_type arr_type;  /* element type when type == FI_GGUF_ARRAY */
    uint64_t arr_count;     /* element count when type == FI_GGUF_ARRAY */
    /* Raw little-endian value in the mapping. Scalars: the value itself.
     * Strings: the string bytes (also in str). Arrays: the first element
     * (for string arrays: its u64 length prefix; use fi_gguf_array_str). */
    const void *value;
    fi_gguf_str str;        /* type == FI_GGUF_STRING */
    uint64_t offset;        /* file offset of the key, for messages */
    const fi_gguf_str *arr_strs; /* string arrays: arr_count entries, owned by the fi_gguf */
} fi_gguf_kv;

typedef struct fi_gguf_tensor {
    fi_gguf_str name;
    uint32_t n_dims;
    int64_t ne[4];          /* ne[0] fastest; unused dims = 1 */
    uint32_t type;          /* ggml type id as stored */
    uint64_t offset;        /* relative to the data section */
    const void *data;       /* in the mapping */
    uint64_t nbytes;
    uint64_t info_offset;   /* file offset of the tensor's info record, for messages */
} fi_gguf_tensor;

typedef struct fi_gguf fi_gguf;

/* mmap (read-only, private) + full validation. FI_ERR_IO if the file cannot be
 * read, FI_ERR_FORMAT (message names the field and file offset) if malformed,
 * FI_ERR_UNSUPPORTED for a valid file with a tensor type unknown to this build. */
fi_status fi_gguf_open(const char *path, fi_gguf **out, fi_error *err);
/* Same over a caller-owned buffer (not copied: keep it alive until close). */
fi_status fi_gguf_open_memory(const void *data, size_t size, fi_gguf **out, fi_error *err);
void fi_gguf_close(fi_gguf *g);
/* Memory hint for a file opened with fi_gguf_open: the whole pages inside [ptr, ptr + bytes) leave
 * this process's resident set (MADV_DONTNEED on the read-only private mapping); a later read faults
 * them back in from the page cache, so contents never change. For tensors the caller has copied
 * (repacked) and reads rarely or never again. No-op for fi_gguf_open_memory buffers. */
void fi_gguf_release_pages(const fi_gguf *g, const void *ptr, size_t bytes);

uint32_t fi_gguf_version(const fi_gguf *g);
uint64_t fi_gguf_alignment(const fi_gguf *g);
uint64_t fi_gguf_data_offset(const fi_gguf *g); /* file offset of the data section */
uint64_t fi_gguf_file_size(const fi_gguf *g);

int64_t fi_gguf_n_kv(const fi_gguf *g);
const fi_gguf_kv *fi_gguf_kv_at(const fi_gguf *g, int64_t i);  /* NULL if out of range */
const fi_gguf_kv *fi_gguf_find(const fi_gguf *g, const char *key); /* NULL if absent */

/* Typed getters: false if the key is absent or its value does not fit. */
bool fi_gguf_get_u32(const fi_gguf *g, const char *key, uint32_t *out); /* any integer type in range */
bool fi_gguf_get_i64(const fi_gguf *g, const char *key, int64_t *out);  /* any integer type in range */
bool fi_gguf_get_f32(const fi_gguf *g, const char *key, float *out);    /* f32 or f64 */
bool fi_gguf_get_bool(const fi_gguf *g, const char *key, bool *out);
bool fi_gguf_get_str(const fi_gguf *g, const char *key, fi_gguf_str *out);

/* Element i of a string array (O(1)); {NULL, 0} if kv is not one or i is out of range. */
fi_gguf_str fi_gguf_array_str(const fi_gguf_kv *kv, uint64_t i);
/* Numeric arrays: kv->value points at arr_count packed little-endian elements of arr_type. */

int64_t fi_gguf_n_tensors(const fi_gguf *g);
const fi_gguf_tensor *fi_gguf_tensor_at(const fi_gguf *g, int64_t i); /* NULL if out of range */
const fi_gguf_tensor *fi_gguf_find_tensor(const fi_gguf *g, const char *name); /* NULL if absent */

/* Helpers */
bool fi_gguf_str_eq(fi_gguf_str s, const char *cstr);
const char *fi_gguf_type_name(fi_gguf_type t); /* "u8", ..., "array"; "?" if unknown */
size_t fi_gguf_type_size(fi_gguf_type t);      /* bytes of a scalar; 0 for string/array */

/* ggml tensor type layout as GGUF stores it: elements per block and bytes per
 * block. Known for listing beyond the types this build computes with. */
typedef struct fi_gguf_tensor_type_info {
    const char *name;
    int64_t block_size;
    int64_t block_bytes;
} fi_gguf_tensor_type_info;
/* NULL for an unknown id. */
const fi_gguf_tensor_type_info *fi_gguf_tensor_type(uint32_t ggml_type);

#endif
