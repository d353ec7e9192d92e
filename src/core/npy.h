/* A strict reader and writer of NumPy .npy files (format versions 1.0, 2.0 and 3.0).
 *
 * Only what the tools exchange is accepted: little-endian (or byte-order-free) element
 * types, C order, at most FI_NPY_MAX_DIMS dimensions. Anything else, and every
 * malformation (bad magic, truncated header or data, trailing bytes, a header that is
 * not the dict numpy writes, shape overflow), is refused with FI_ERR_FORMAT and a
 * message naming the file and the problem; the reader never trusts a size it has not
 * checked against the file. */
#ifndef FI_CORE_NPY_H
#define FI_CORE_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "flexinfer.h"

#define FI_NPY_MAX_DIMS 8

typedef enum fi_npy_dtype {
    FI_NPY_F32 = 0, /* '<f4' */
    FI_NPY_F16,     /* '<f2' */
    FI_NPY_F64,     /* '<f8' */
    FI_NPY_I32,     /* '<i4' */
    FI_NPY_I64,     /* '<i8' */
    FI_NPY_U8,      /* '|u1' */
} fi_npy_dtype;

typedef struct fi_npy_array {
    fi_npy_dtype dtype;
    int ndim;                        /* 0 (a scalar) .. FI_NPY_MAX_DIMS */
    int64_t shape[FI_NPY_MAX_DIMS];  /* entries past ndim are 0 */
    int64_t count;                   /* product of the shape */
    void *data;                      /* owned, 64-byte aligned, C order */
    size_t nbytes;                   /* count * element size */
} fi_npy_array;

/* Size in bytes of one element, and the name numpy uses for the type ("float32", ...). */
size_t fi_npy_dtype_size(fi_npy_dtype t);
const char *fi_npy_dtype_name(fi_npy_dtype t);
/* The .npy type string ("<f4", ...). */
const char *fi_npy_dtype_descr(fi_npy_dtype t);

/* Reads a whole file. On failure *out is zeroed and owns nothing. */
fi_status fi_npy_read(const char *path, fi_npy_array *out, fi_error *err);
/* Parses an in-memory image of a file; `name` only labels messages. */
fi_status fi_npy_parse(const void *bytes, size_t len, const char *name, fi_npy_array *out,
                       fi_error *err);
void fi_npy_free(fi_npy_array *a);

/* Writes a version 1.0 file (2.0 when the header needs it) atomically: into a temporary
 * file in the same directory, renamed over `path` only once everything is written, so a
 * failure leaves no file behind and never a partial one. */
fi_status fi_npy_write(const char *path, fi_npy_dtype dtype, int ndim, const int64_t *shape,
                       const void *data, fi_error *err);

#endif
