/* flexinfer info: a GGUF file's header, metadata and tensors. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "model/gguf.h"
#include "model/quant.h"

#define INFO_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define INFO_ARRAY_ITEMS 5   /* array elements shown per key */
#define INFO_STRING_CHARS 80 /* longer strings are cut (chat templates) */

static void usage(FILE *f) {
    fprintf(f,
            "usage: flexinfer info [-m MODEL] [--tensors]\n"
            "  -m MODEL    GGUF file (default " INFO_DEFAULT_MODEL ", see scripts/get_model.sh)\n"
            "  --tensors   list every tensor (name, type, shape, bytes, offset)\n");
}

/* Prints a file string quoted, with control and non-ASCII bytes escaped, cut after max chars. */
static void print_str(fi_gguf_str s, size_t max) {
    putchar('"');
    uint64_t n = s.len < max ? s.len : max;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.data[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c >= 0x20 && c < 0x7f) putchar(c);
        else if (c >= 0x80) putchar(c); /* UTF-8 passes through for readability */
        else printf("\\x%02x", c);
    }
    putchar('"');
    if (s.len > max) printf("... (%" PRIu64 " bytes)", s.len);
}

/* Prints one scalar of type t stored at p. */
static void print_scalar(fi_gguf_type t, const void *p) {
    switch (t) {
    case FI_GGUF_U8: { uint8_t v; memcpy(&v, p, 1); printf("%u", v); break; }
    case FI_GGUF_I8: { int8_t v; memcpy(&v, p, 1); printf("%d", v); break; }
    case FI_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); printf("%u", v); break; }
    case FI_GGUF_I16: { int16_t v; memcpy(&v, p, 2); printf("%d", v); break; }
    case FI_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); printf("%" PRIu32, v); break; }
    case FI_GGUF_I32: { int32_t v; memcpy(&v, p, 4); printf("%" PRId32, v); break; }
    case FI_GGUF_U64: { uint64_t v; memcpy(&v, p, 8); printf("%" PRIu64, v); break; }
    case FI_GGUF_I64: { int64_t v; memcpy(&v, p, 8); printf("%" PRId64, v); break; }
    case FI_GGUF_F32: { float v; memcpy(&v, p, 4); printf("%g", v); break; }
    case FI_GGUF_F64: { double v; memcpy(&v, p, 8); printf("%g", v); break; }
    case FI_GGUF_BOOL: { uint8_t v; memcpy(&v, p, 1); fputs(v ? "true" : "false", stdout); break; }
    default: fputs("?", stdout);
    }
}

static void print_kv(const fi_gguf_kv *kv) {
    printf("  %-40.*s ", (int)(kv->key.len < 200 ? kv->key.len : 200), kv->key.data);
    if (kv->type == FI_GGUF_STRING) {
        printf("string = ");
        print_str(kv->str, INFO_STRING_CHARS);
    } else if (kv->type == FI_GGUF_ARRAY) {
        printf("array[%s x %" PRIu64 "]", fi_gguf_type_name(kv->arr_type), kv->arr_count);
        if (kv->arr_type == FI_GGUF_ARRAY) {
            printf(" (nested)");
        } else if (kv->arr_count > 0) {
            printf(" = [");
            uint64_t n = kv->arr_count < INFO_ARRAY_ITEMS ? kv->arr_count : INFO_ARRAY_ITEMS;
            size_t es = fi_gguf_type_size(kv->arr_type);
            for (uint64_t i = 0; i < n; i++) {
                if (i) fputs(", ", stdout);
                if (kv->arr_type == FI_GGUF_STRING) print_str(fi_gguf_array_str(kv, i), 24);
                else print_scalar(kv->arr_type, (const char *)kv->value + i * es);
            }
            if (kv->arr_count > n) fputs(", ...", stdout);
            putchar(']');
        }
    } else {
        printf("%s = ", fi_gguf_type_name(kv->type));
        print_scalar(kv->type, kv->value);
    }
    putchar('\n');
}

static const char *type_name(uint32_t type) {
    const fi_gguf_tensor_type_info *ti = fi_gguf_tensor_type(type);
    return ti ? ti->name : "?";
}

static void print_tensors(const fi_gguf *g) {
    printf("tensors:\n  %-36s %-6s %-24s %12s %12s\n", "name", "type", "shape (ne0 first)", "bytes", "offset");
    for (int64_t i = 0; i < fi_gguf_n_tensors(g); i++) {
        const fi_gguf_tensor *t = fi_gguf_tensor_at(g, i);
        char shape[96];
        int o = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%" PRId64, d ? ", " : "", t->ne[d]);
        snprintf(shape + o, sizeof shape - (size_t)o, "]");
        printf("  %-36.*s %-6s %-24s %12" PRIu64 " %12" PRIu64 "\n", (int)t->name.len, t->name.data,
               type_name(t->type), shape, t->nbytes, fi_gguf_data_offset(g) + t->offset);
    }
}

/* Per-type totals: how the weights are stored and whether this build computes with them. */
static void print_tensor_summary(const fi_gguf *g) {
    uint64_t count[64] = {0}, bytes[64] = {0}, params[64] = {0}, total = 0, total_params = 0;
    for (int64_t i = 0; i < fi_gguf_n_tensors(g); i++) {
        const fi_gguf_tensor *t = fi_gguf_tensor_at(g, i);
        uint32_t ty = t->type < 64 ? t->type : 63;
        uint64_t n = (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
        count[ty]++;
        bytes[ty] += t->nbytes;
        params[ty] += n;
        total += t->nbytes;
        total_params += n;
    }
    printf("tensors: %" PRId64 " (%" PRIu64 " parameters, %.2f MiB of data)\n", fi_gguf_n_tensors(g), total_params,
           (double)total / (1024.0 * 1024.0));
    for (uint32_t ty = 0; ty < 64; ty++)
        if (count[ty])
            printf("  %-8s %4" PRIu64 " tensors %12" PRIu64 " parameters %10.2f MiB  %s\n", type_name(ty), count[ty],
                   params[ty], (double)bytes[ty] / (1024.0 * 1024.0),
                   fi_ggml_type_supported(ty) ? "" : "(not supported for compute)");
}

int cmd_info(int argc, char **argv) {
    const char *path = INFO_DEFAULT_MODEL;
    bool list_tensors = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 || strcmp(argv[i], "--model") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "flexinfer info: %s needs a file\n", argv[i]);
                return 2;
            }
            path = argv[++i];
        } else if (strcmp(argv[i], "--tensors") == 0) {
            list_tensors = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "flexinfer info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    fi_gguf *g = NULL;
    fi_error err = {0};
    if (fi_gguf_open(path, &g, &err) != FI_OK) {
        fprintf(stderr, "flexinfer info: %s\n", err.msg);
        if (strcmp(path, INFO_DEFAULT_MODEL) == 0 && err.code == FI_ERR_IO)
            fprintf(stderr, "flexinfer info: fetch the default model with: bash scripts/get_model.sh\n");
        return 2;
    }
    printf("file: %s\n", path);
    printf("gguf version: %u, file size: %" PRIu64 " bytes, alignment: %" PRIu64 ", data at offset %" PRIu64 "\n",
           fi_gguf_version(g), fi_gguf_file_size(g), fi_gguf_alignment(g), fi_gguf_data_offset(g));
    printf("metadata: %" PRId64 " keys\n", fi_gguf_n_kv(g));
    for (int64_t i = 0; i < fi_gguf_n_kv(g); i++) print_kv(fi_gguf_kv_at(g, i));
    print_tensor_summary(g);
    if (list_tensors) print_tensors(g);
    fi_gguf_close(g);
    return 0;
}
