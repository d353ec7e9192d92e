/* Mask and score expressions compiled at run time with NVRTC.
 *
 * The user's C expressions become the bodies of two device functions that the
 * prefill kernel template calls through the hooks of device_common.cuh; the kernel
 * headers themselves are embedded at build time (cmake/embed_sources.cmake), so the
 * compiled kernel is the same code as the nvcc-built one plus the expressions. The
 * result (CUBIN for the device's architecture) is loaded with the driver API and
 * kept in a caller-owned cache keyed by everything that changes the code, and
 * optionally written to a directory for later processes. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda.h>
#include <nvrtc.h>

#include "cuda/flash_fwd_kernel.cuh"
#include "cuda/nvrtc_embedded.h"
#include "cuda/nvrtc_program.h"

extern "C" {
#include "core/error.h"
}

#ifndef FI_CUDA_INCLUDE_DIR
#define FI_CUDA_INCLUDE_DIR "/usr/local/cuda/include"
#endif

static_assert(FI_CUDA_EXPR_MAX_ARRAYS <= FI_CUDA_MAX_USER_ARRAYS, "kernel parameters hold every user array");

#define FI_EXPR_MAX_LEN 4096
#define FI_NVRTC_MAX_ALLOCS (FI_CUDA_EXPR_MAX_ARRAYS + 8)
#define FI_CLASSIFY_THREADS 256

/* ---- growable string ---------------------------------------------------------- */

typedef struct strbuf {
    char *s;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        const size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *s = (char *)realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s, b->cap = cap;
    }
}

static uint64_t fnv1a(const void *data, size_t n, uint64_t h) {
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* ---- driver API -------------------------------------------------------------------
 * Reached through the runtime's entry-point query instead of linking libcuda, so
 * programs built with the CUDA backend still start on machines without a driver. */

typedef struct cu_api {
    decltype(&cuGetErrorString) error_string;
    decltype(&cuModuleLoadData) module_load;
    decltype(&cuModuleUnload) module_unload;
    decltype(&cuModuleGetFunction) get_function;
    decltype(&cuFuncSetAttribute) set_attribute;
    decltype(&cuLaunchKernel) launch;
} cu_api;

static fi_status cu_api_load(cu_api *api, fi_error *err) {
    struct {
        const char *name;
        void **fn;
    } syms[] = {{"cuGetErrorString", (void **)&api->error_string}, {"cuModuleLoadData", (void **)&api->module_load},
                {"cuModuleUnload", (void **)&api->module_unload},   {"cuModuleGetFunction", (void **)&api->get_function},
                {"cuFuncSetAttribute", (void **)&api->set_attribute}, {"cuLaunchKernel", (void **)&api->launch}};
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
        cudaError_t e = cudaGetDriverEntryPointByVersion(syms[i].name, syms[i].fn, 12000, cudaEnableDefault, &q);
        if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !*syms[i].fn)
            return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA driver: %s not available (%s)", syms[i].name,
                                cudaGetErrorString(e));
    }
    return FI_OK;
}

static fi_status cu_fail(const cu_api *api, fi_error *err, CUresult r, const char *what) {
    const char *msg = NULL;
    if (api->error_string) api->error_string(r, &msg);
    return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA driver: %s failed: %s", what, msg ? msg : "unknown error");
}

/* ---- the cache ------------------------------------------------------------------ */

typedef struct cache_entry {
    char *key;
    cu_api api;
    CUmodule module;
    CUfunction flash, classify;
    unsigned smem; /* dynamic shared memory of the prefill kernel */
    struct cache_entry *next;
} cache_entry;

struct fi_cuda_kernel_cache {
    char *dir;
    cu_api api; /* loaded with the first kernel */
    bool api_loaded;
    cache_entry *entries;
    fi_cuda_kernel_cache_stats stats;
};

extern "C" fi_status fi_cuda_kernel_cache_create(const char *disk_dir, fi_cuda_kernel_cache **out,
                                                 fi_error *err) {
    if (!out) return fi_error_set(err, FI_ERR_INVALID, "kernel cache: no output pointer");
    *out = NULL;
    fi_cuda_kernel_cache *c = (fi_cuda_kernel_cache *)calloc(1, sizeof *c);
    if (!c) return fi_error_set(err, FI_ERR_NOMEM, "kernel cache: out of memory");
    if (disk_dir && *disk_dir) {
        if (access(disk_dir, W_OK | X_OK) != 0) {
            free(c);
            return fi_error_set(err, FI_ERR_IO, "kernel cache: directory '%s' is not writable: %s", disk_dir,
                                strerror(errno));
        }
        if (!(c->dir = strdup(disk_dir))) {
            free(c);
            return fi_error_set(err, FI_ERR_NOMEM, "kernel cache: out of memory");
        }
    }
    *out = c;
    return FI_OK;
}

extern "C" void fi_cuda_kernel_cache_free(fi_cuda_kernel_cache *c) {
    if (!c) return;
    for (cache_entry *e = c->entries, *next; e; e = next) {
        next = e->next;
        if (e->module) e->api.module_unload(e->module);
        free(e->key);
        free(e);
    }
    free(c->dir);
    free(c);
}

extern "C" fi_cuda_kernel_cache_stats fi_cuda_kernel_cache_get_stats(const fi_cuda_kernel_cache *c) {
    fi_cuda_kernel_cache_stats s = {0, 0, 0};
    return c ? c->stats : s;
}

/* ---- validation ---------------------------------------------------------------- */

static bool has_text(const char *s) { return s && *s; }

static bool is_identifier(const char *s) {
    if (!s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
    for (const char *c = s; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '_')) return false;
    return strlen(s) <= 64;
}

/* An expression must stay one expression: no statements, blocks, preprocessor lines
 * or line continuations, and balanced parentheses. (This is about clear errors,
 * not a sandbox: the expression is the caller's own GPU code.) */
static fi_status check_expr(const char *what, const char *e, fi_error *err) {
    const size_t n = strlen(e);
    if (n > FI_EXPR_MAX_LEN)
        return fi_error_set(err, FI_ERR_INVALID, "%s: longer than %d characters", what, FI_EXPR_MAX_LEN);
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)e[i];
        if (c == ';' || c == '{' || c == '}' || c == '#' || c == '\\' || (c < 32 && c != ' ' && c != '\t') || c > 126)
            return fi_error_set(err, FI_ERR_INVALID, "%s: character '%c' at column %zu is not allowed in an expression",
                                what, c >= 32 && c <= 126 ? c : '?', i + 1);
        depth += c == '(' ? 1 : c == ')' ? -1 : 0;
        if (depth < 0)
            return fi_error_set(err, FI_ERR_INVALID, "%s: unbalanced ')' at column %zu", what, i + 1);
    }
    if (depth != 0) return fi_error_set(err, FI_ERR_INVALID, "%s: %d unclosed '('", what, depth);
    return FI_OK;
}

static const char *const reserved_names[] = {"b", "h", "q", "kv", "score", "p", "int", "float", "bool", "return"};

static fi_status check_expr_spec(const fi_cuda_expr *x, fi_error *err) {
    if (!has_text(x->mask_expr) && !has_text(x->score_expr))
        return fi_error_set(err, FI_ERR_INVALID, "CUDA expressions: neither a mask nor a score expression given");
    fi_status st;
    if (has_text(x->mask_expr) && (st = check_expr("mask expression", x->mask_expr, err))) return st;
    if (has_text(x->score_expr) && (st = check_expr("score expression", x->score_expr, err))) return st;
    if (x->n_arrays < 0 || x->n_arrays > FI_CUDA_EXPR_MAX_ARRAYS)
        return fi_error_set(err, FI_ERR_INVALID, "CUDA expressions: %d arrays (at most %d)", x->n_arrays,
                            FI_CUDA_EXPR_MAX_ARRAYS);
    for (int i = 0; i < x->n_arrays; i++) {
        const fi_cuda_expr_array *a = &x->arrays[i];
        if (!is_identifier(a->name))
            return fi_error_set(err, FI_ERR_INVALID, "array %d: name '%s' is not a C identifier", i,
                                a->name ? a->name : "(null)");
        for (size_t r = 0; r < sizeof reserved_names / sizeof reserved_names[0]; r++)
            if (!strcmp(a->name, reserved_names[r]) || !strncmp(a->name, "fi_", 3))
                return fi_error_set(err, FI_ERR_INVALID, "array '%s': the name is taken by the expressions' own names",
                                    a->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(a->name, x->arrays[j].name))
                return fi_error_set(err, FI_ERR_INVALID, "array '%s' is given twice", a->name);
        if (a->type != FI_CUDA_ARRAY_INT32 && a->type != FI_CUDA_ARRAY_FLOAT32)
            return fi_error_set(err, FI_ERR_INVALID, "array '%s': type must be int32 or float32", a->name);
        if (a->len < 0 || (a->len > 0 && !a->data))
            return fi_error_set(err, FI_ERR_INVALID, "array '%s': no data for %lld elements", a->name,
                                (long long)a->len);
    }
    return FI_OK;
}

/* ---- source and key ------------------------------------------------------------ */

static const char *elem_type(bool bf16) { return bf16 ? "__nv_bfloat16" : "__half"; }

/* Everything that changes the compiled code, including the kernel headers. */
static char *make_key(const fi_cuda_expr *x, int dim, bool bf16, bool transform, int cc, int device) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < fi_nvrtc_n_headers; i++) {
        h = fnv1a(fi_nvrtc_headers[i].name, strlen(fi_nvrtc_headers[i].name), h);
        h = fnv1a(fi_nvrtc_headers[i].text, strlen(fi_nvrtc_headers[i].text), h);
    }
    strbuf b = {0};
    sb_printf(&b, "flexinfer-expr-1|src=%016llx|sm_%d|dev=%d|D=%d|%s|transform=%d|mask=%s|score=%s|arrays=",
              (unsigned long long)h, cc, device, dim, elem_type(bf16), (int)transform,
              has_text(x->mask_expr) ? x->mask_expr : "", has_text(x->score_expr) ? x->score_expr : "");
    for (int i = 0; i < x->n_arrays; i++)
        sb_printf(&b, "%s:%s,", x->arrays[i].name, x->arrays[i].type == FI_CUDA_ARRAY_INT32 ? "i32" : "f32");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

static char *make_source(const fi_cuda_expr *x) {
    strbuf b = {0};
    sb_printf(&b, "#ifndef INFINITY\n#define INFINITY __int_as_float(0x7f800000)\n#endif\n");
    if (has_text(x->mask_expr)) sb_printf(&b, "#define FI_EXPR_HAS_MASK 1\n");
    if (has_text(x->score_expr)) sb_printf(&b, "#define FI_EXPR_HAS_SCORE 1\n");
    sb_printf(&b, "#include \"cuda/nvrtc_kernels.cuh\"\n#define FI_EXPR_ARRAYS(p)");
    for (int i = 0; i < x->n_arrays; i++)
        sb_printf(&b, " const fi_user_%s %s(p, %d); (void)%s;", x->arrays[i].type == FI_CUDA_ARRAY_INT32 ? "i32" : "f32",
                  x->arrays[i].name, i, x->arrays[i].name);
    sb_printf(&b, "\n");
    /* #line makes the compiler's messages point into the user's expression. */
    if (has_text(x->mask_expr))
        sb_printf(&b,
                  "__device__ __forceinline__ bool fi_user_mask(const fi_cuda_attn_kparams &p, int b, int h, int q,"
                  " int kv) {\n  FI_EXPR_ARRAYS(p)\n  return (bool)(\n#line 1 \"mask-expr\"\n%s\n  );\n}\n",
                  x->mask_expr);
    if (has_text(x->score_expr))
        sb_printf(&b,
                  "__device__ __forceinline__ float fi_user_score(const fi_cuda_attn_kparams &p, float score, int b,"
                  " int h, int q, int kv) {\n  FI_EXPR_ARRAYS(p)\n  return (float)(\n#line 1 \"score-expr\"\n%s\n"
                  "  );\n}\n",
                  x->score_expr);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

static void kernel_name(char *buf, size_t n, int dim, bool bf16, bool transform) {
    snprintf(buf, n, "fi_flash_fwd_kernel<%d, %s, %s>", dim, elem_type(bf16), transform ? "true" : "false");
}

/* NVRTC has no C library headers; the kernels need only these integer types. */
static const char stdint_text[] =
    "#pragma once\ntypedef signed char int8_t; typedef short int16_t; typedef int int32_t; typedef long long int64_t;\n"
    "typedef unsigned char uint8_t; typedef unsigned short uint16_t; typedef unsigned int uint32_t;\n"
    "typedef unsigned long long uint64_t; typedef unsigned long long uintptr_t;\n";

/* Copies the first lines of an NVRTC log into err (fi_error holds 512 bytes). */
static fi_status compile_error(fi_error *err, nvrtcProgram prog, nvrtcResult r) {
    size_t n = 0;
    char *log = NULL;
    if (nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1 && (log = (char *)malloc(n)) &&
        nvrtcGetProgramLog(prog, log) == NVRTC_SUCCESS) {
        /* One line, without the "N errors detected" trailer. */
        char *tail = strstr(log, "error detected in the compilation");
        if (!tail) tail = strstr(log, "errors detected in the compilation");
        if (tail) { /* back to the start of "N error(s) detected" */
            while (tail > log && tail[-1] != '\n') tail--;
            *tail = 0;
        }
        for (char *c = log; *c; c++)
            if (*c == '\n') *c = ' ';
        fi_error_set(err, FI_ERR_INVALID, "expression does not compile: %s", log);
    } else {
        fi_error_set(err, FI_ERR_INVALID, "expression does not compile: %s", nvrtcGetErrorString(r));
    }
    free(log);
    return FI_ERR_INVALID;
}

typedef struct compiled {
    char *cubin;
    size_t cubin_size;
    char lowered[256];
} compiled;

static fi_status nvrtc_compile(const fi_cuda_expr *x, int dim, bool bf16, bool transform, int cc, compiled *out,
                               fi_error *err) {
    char *src = make_source(x);
    if (!src) return fi_error_set(err, FI_ERR_NOMEM, "CUDA expressions: out of memory");
    enum { MAX_HEADERS = 16 };
    const char *texts[MAX_HEADERS], *names[MAX_HEADERS];
    int nh = 0;
    texts[nh] = stdint_text, names[nh++] = "stdint.h";
    for (int i = 0; i < fi_nvrtc_n_headers && nh < MAX_HEADERS; i++)
        texts[nh] = fi_nvrtc_headers[i].text, names[nh++] = fi_nvrtc_headers[i].name;
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, src, "flexinfer_expr.cu", nh, texts, names);
    free(src);
    if (r != NVRTC_SUCCESS) return fi_error_set(err, FI_ERR_UNSUPPORTED, "NVRTC: %s", nvrtcGetErrorString(r));
    char kname[128];
    kernel_name(kname, sizeof kname, dim, bf16, transform);
    fi_status st = FI_OK;
    char arch[48], inc[1100];
    snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d", cc);
    const char *inc_dir = getenv("FI_CUDA_INCLUDE_DIR");
    snprintf(inc, sizeof inc, "-I%s", inc_dir && *inc_dir ? inc_dir : FI_CUDA_INCLUDE_DIR);
    const char *opts[] = {arch, "-std=c++17", inc, "-DFI_NVRTC=1"};
    size_t size = 0;
    const char *lowered = NULL;
    if ((r = nvrtcAddNameExpression(prog, kname)) != NVRTC_SUCCESS) {
        st = fi_error_set(err, FI_ERR_UNSUPPORTED, "NVRTC: %s", nvrtcGetErrorString(r));
    } else if ((r = nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts)) != NVRTC_SUCCESS) {
        st = compile_error(err, prog, r);
    } else if ((r = nvrtcGetLoweredName(prog, kname, &lowered)) != NVRTC_SUCCESS ||
               strlen(lowered) >= sizeof out->lowered || (r = nvrtcGetCUBINSize(prog, &size)) != NVRTC_SUCCESS ||
               size == 0) {
        st = fi_error_set(err, FI_ERR_UNSUPPORTED, "NVRTC: no code for sm_%d: %s", cc, nvrtcGetErrorString(r));
    } else if (!(out->cubin = (char *)malloc(size))) {
        st = fi_error_set(err, FI_ERR_NOMEM, "CUDA expressions: out of memory");
    } else if ((r = nvrtcGetCUBIN(prog, out->cubin)) != NVRTC_SUCCESS) {
        st = fi_error_set(err, FI_ERR_UNSUPPORTED, "NVRTC: %s", nvrtcGetErrorString(r));
    } else {
        out->cubin_size = size;
        snprintf(out->lowered, sizeof out->lowered, "%s", lowered);
    }
    nvrtcDestroyProgram(&prog);
    if (st) {
        free(out->cubin);
        out->cubin = NULL;
    }
    return st;
}

fi_status fi_nvrtc_compile_check(const fi_cuda_expr *x, int dim, bool bf16, bool transform, int cc,
                                 size_t *cubin_size, fi_error *err) {
    fi_status st = check_expr_spec(x, err);
    if (st) return st;
    if (dim != 64 && dim != 128) return fi_error_set(err, FI_ERR_UNSUPPORTED, "head dim %d (64, 128)", dim);
    compiled cd = {NULL, 0, {0}};
    if ((st = nvrtc_compile(x, dim, bf16, transform, cc, &cd, err))) return st;
    if (cubin_size) *cubin_size = cd.cubin_size;
    free(cd.cubin);
    return FI_OK;
}

/* ---- on-disk cache: "<dir>/flexinfer-<hash>.cubin" = magic, key, kernel name, CUBIN.
 * The full key is stored and compared, so a hash collision is only a miss. */

static const char disk_magic[] = "flexinfer-kernel-1\n";

static void disk_path(const fi_cuda_kernel_cache *c, const char *key, char *buf, size_t n) {
    snprintf(buf, n, "%s/flexinfer-%016llx.cubin", c->dir, (unsigned long long)fnv1a(key, strlen(key), 0xcbf29ce484222325ull));
}

static bool disk_load(const fi_cuda_kernel_cache *c, const char *key, compiled *out) {
    char path[4200];
    disk_path(c, key, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    bool ok = false;
    char *buf = NULL;
    long size;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = (char *)malloc((size_t)size + 1)) && fread(buf, 1, (size_t)size, f) == (size_t)size) {
        buf[size] = 0;
        const size_t lm = strlen(disk_magic), lk = strlen(key);
        const char *k = buf + lm;
        if ((size_t)size > lm + lk + 2 && !memcmp(buf, disk_magic, lm) && !memcmp(k, key, lk) && k[lk] == '\n') {
            const char *name = k + lk + 1;
            const char *nl = (const char *)memchr(name, '\n', (size_t)(buf + size - name));
            if (nl && (size_t)(nl - name) < sizeof out->lowered && buf + size - (nl + 1) > 0) {
                memcpy(out->lowered, name, (size_t)(nl - name));
                out->lowered[nl - name] = 0;
                out->cubin_size = (size_t)(buf + size - (nl + 1));
                if ((out->cubin = (char *)malloc(out->cubin_size))) {
                    memcpy(out->cubin, nl + 1, out->cubin_size);
                    ok = true;
                }
            }
        }
    }
    free(buf);
    fclose(f);
    return ok;
}

/* Best effort: a cache that cannot be written only costs a later compile. */
static void disk_store(const fi_cuda_kernel_cache *c, const char *key, const compiled *cd) {
    char path[4200], tmp[4300];
    disk_path(c, key, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return;
    bool ok = fputs(disk_magic, f) >= 0 && fputs(key, f) >= 0 && fputc('\n', f) != EOF && fputs(cd->lowered, f) >= 0 &&
              fputc('\n', f) != EOF && fwrite(cd->cubin, 1, cd->cubin_size, f) == cd->cubin_size;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) remove(tmp);
}

/* ---- module loading ---------------------------------------------------------- */

static fi_status load_entry(const compiled *cd, int dim, bool bf16, cache_entry *e, fi_error *err) {
    const cu_api *api = &e->api;
    CUresult r = api->module_load(&e->module, cd->cubin);
    if (r != CUDA_SUCCESS) return cu_fail(api, err, r, "loading the compiled kernels");
    if ((r = api->get_function(&e->flash, e->module, cd->lowered)) != CUDA_SUCCESS)
        return cu_fail(api, err, r, "finding the prefill kernel");
    if ((r = api->get_function(&e->classify, e->module, "fi_expr_classify")) != CUDA_SUCCESS)
        return cu_fail(api, err, r, "finding the tile classifier");
    const int smem = dim == 64 ? (bf16 ? fi_flash_smem_bytes<64, fi_flash_tile<64>::BN, __nv_bfloat16>()
                                       : fi_flash_smem_bytes<64, fi_flash_tile<64>::BN, __half>())
                               : (bf16 ? fi_flash_smem_bytes<128, fi_flash_tile<128>::BN, __nv_bfloat16>()
                                       : fi_flash_smem_bytes<128, fi_flash_tile<128>::BN, __half>());
    if ((r = api->set_attribute(e->flash, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)) != CUDA_SUCCESS)
        return cu_fail(api, err, r, "setting the prefill kernel's shared memory");
    e->smem = (unsigned)smem;
    return FI_OK;
}

static fi_status cache_get(fi_cuda_kernel_cache *c, const fi_cuda_expr *x, int dim, bool bf16, bool transform,
                           const cache_entry **out, fi_error *err) {
    int device = 0, major = 0, minor = 0;
    cudaError_t ce = cudaGetDevice(&device);
    if (ce == cudaSuccess) ce = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (ce == cudaSuccess) ce = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    if (ce == cudaSuccess) ce = cudaFree(0); /* makes the runtime's context current for the driver API */
    if (ce != cudaSuccess)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: %s", cudaGetErrorString(ce));
    if (major < 8)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA expressions need compute capability 8.0 or newer (have %d.%d)",
                            major, minor);
    const int cc = major * 10 + minor;
    if (!c->api_loaded) {
        fi_status st = cu_api_load(&c->api, err);
        if (st) return st;
        c->api_loaded = true;
    }
    char *key = make_key(x, dim, bf16, transform, cc, device);
    if (!key) return fi_error_set(err, FI_ERR_NOMEM, "CUDA expressions: out of memory");
    for (cache_entry *e = c->entries; e; e = e->next)
        if (!strcmp(e->key, key)) {
            c->stats.memory_hits++;
            free(key);
            *out = e;
            return FI_OK;
        }
    compiled cd = {NULL, 0, {0}};
    fi_status st = FI_OK;
    bool from_disk = c->dir && disk_load(c, key, &cd);
    if (!from_disk) {
        if ((st = nvrtc_compile(x, dim, bf16, transform, cc, &cd, err))) {
            free(key);
            return st;
        }
        c->stats.compiles++;
        if (c->dir) disk_store(c, key, &cd);
    }
    cache_entry *e = (cache_entry *)calloc(1, sizeof *e);
    if (!e) st = fi_error_set(err, FI_ERR_NOMEM, "CUDA expressions: out of memory");
    else e->api = c->api, st = load_entry(&cd, dim, bf16, e, err);
    if (st && from_disk && e) {
        /* A stale or damaged file: compile afresh once. */
        if (e->module) c->api.module_unload(e->module);
        e->module = NULL;
        free(cd.cubin);
        cd.cubin = NULL;
        from_disk = false;
        st = nvrtc_compile(x, dim, bf16, transform, cc, &cd, err);
        if (!st) {
            c->stats.compiles++;
            disk_store(c, key, &cd);
            st = load_entry(&cd, dim, bf16, e, err);
        }
    }
    free(cd.cubin);
    if (st) {
        if (e && e->module) c->api.module_unload(e->module);
        free(e);
        free(key);
        return st;
    }
    if (from_disk) c->stats.disk_hits++;
    e->key = key;
    e->next = c->entries;
    c->entries = e;
    *out = e;
    return FI_OK;
}

/* ---- plans ------------------------------------------------------------------------ */

struct fi_nvrtc_plan {
    const cache_entry *entry;
    fi_cuda_kernel_cache *own_cache;
    bool has_mask;
    void *allocs[FI_NVRTC_MAX_ALLOCS];
    int n_allocs;
};

static fi_status cuda_fail(fi_error *err, cudaError_t e, const char *what) {
    return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA: %s failed: %s", what, cudaGetErrorString(e));
}

static fi_status plan_alloc(fi_nvrtc_plan *np, const void *src, size_t n, void **dst, fi_error *err) {
    if (np->n_allocs == FI_NVRTC_MAX_ALLOCS) return fi_error_set(err, FI_ERR_NOMEM, "CUDA expressions: too many buffers");
    cudaError_t e = cudaMalloc(dst, n ? n : 16);
    if (e != cudaSuccess) return cuda_fail(err, e, "cudaMalloc");
    np->allocs[np->n_allocs++] = *dst;
    if (src && n && (e = cudaMemcpy(*dst, src, n, cudaMemcpyHostToDevice)) != cudaSuccess)
        return cuda_fail(err, e, "cudaMemcpy to the GPU");
    return FI_OK;
}

void fi_nvrtc_plan_free(fi_nvrtc_plan *np) {
    if (!np) return;
    for (int i = 0; i < np->n_allocs; i++) cudaFree(np->allocs[i]);
    fi_cuda_kernel_cache_free(np->own_cache);
    free(np);
}

bool fi_nvrtc_plan_has_mask(const fi_nvrtc_plan *np) { return np && np->has_mask; }

fi_status fi_nvrtc_plan_create(const fi_cuda_expr *x, fi_cuda_kernel_cache *cache, int dim, bool bf16,
                               bool transform, fi_cuda_attn_kparams *kp, fi_nvrtc_plan **out, fi_error *err) {
    *out = NULL;
    fi_status st = check_expr_spec(x, err);
    if (st) return st;
    if (kp->q_offset + kp->q_len > INT32_MAX || kp->kv_len > INT32_MAX)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA expressions: positions must stay below 2^31");
    fi_nvrtc_plan *np = (fi_nvrtc_plan *)calloc(1, sizeof *np);
    if (!np) return fi_error_set(err, FI_ERR_NOMEM, "CUDA expressions: out of memory");
    np->has_mask = has_text(x->mask_expr);
    if (!cache && !(st = fi_cuda_kernel_cache_create(NULL, &np->own_cache, err))) cache = np->own_cache;
    if (!st) st = cache_get(cache, x, dim, bf16, transform, &np->entry, err);
    for (int i = 0; !st && i < x->n_arrays; i++) {
        const fi_cuda_expr_array *a = &x->arrays[i];
        void *d;
        if (!(st = plan_alloc(np, a->data, (size_t)a->len * 4, &d, err))) {
            kp->user_data[i] = d;
            kp->user_len[i] = a->len;
        }
    }
    /* The mask program must keep everything when only the expression masks. */
    if (!st && np->has_mask && kp->n_ops == 0) {
        kp->ops[0].op = FI_CUDA_OP_FULL;
        kp->ops[0].param = 0;
        kp->n_ops = 1;
    }
    if (st) {
        fi_nvrtc_plan_free(np);
        return st;
    }
    *out = np;
    return FI_OK;
}

fi_status fi_nvrtc_plan_block_mask(fi_nvrtc_plan *np, fi_cuda_attn_kparams *kp, int64_t max_q, int64_t max_kv,
                                   int32_t bq, int32_t bkv, fi_error *err) {
    const int64_t nq = (max_q + bq - 1) / bq, nkv = (max_kv + bkv - 1) / bkv;
    const int64_t heads = (int64_t)kp->batch * kp->hq;
    if (nq > 65535 || heads > 65535 || nkv > INT32_MAX)
        return fi_error_set(err, FI_ERR_UNSUPPORTED, "CUDA expressions: problem too large for the tile classifier");
    const size_t rows = (size_t)(heads * nq), cells = rows * (size_t)nkv;
    int8_t *cls = (int8_t *)calloc(cells ? cells : 1, 1);
    int32_t *lists = (int32_t *)malloc((rows * 2 + cells * 2 + 1) * sizeof(int32_t));
    fi_status st = FI_OK;
    if (!cls || !lists) st = fi_error_set(err, FI_ERR_NOMEM, "CUDA expressions: out of memory");
    void *d_cls = NULL;
    if (!st && cells > 0 && !(st = plan_alloc(np, NULL, cells, &d_cls, err))) {
        kp->block_q = bq, kp->block_kv = bkv;
        void *args[] = {(void *)kp, (void *)&d_cls};
        const cu_api *api = &np->entry->api;
        CUresult r = api->launch(np->entry->classify, (unsigned)nkv, (unsigned)nq, (unsigned)heads,
                                    FI_CLASSIFY_THREADS, 1, 1, 0, NULL, args, NULL);
        cudaError_t e;
        if (r != CUDA_SUCCESS) st = cu_fail(api, err, r, "tile classifier launch");
        else if ((e = cudaMemcpy(cls, d_cls, cells, cudaMemcpyDeviceToHost)) != cudaSuccess)
            st = cuda_fail(err, e, "tile classifier");
    }
    if (!st) {
        /* CSR lists as fi_block_mask keeps them: per row the PARTIAL then FULL blocks, ascending. */
        int32_t *kv_num = lists, *full_num = lists + rows, *kv_idx = lists + 2 * rows, *full_idx = kv_idx + cells;
        for (size_t row = 0; row < rows; row++) {
            int32_t np_ = 0, nf = 0;
            for (int64_t j = 0; j < nkv; j++) {
                const int8_t c = cls[row * (size_t)nkv + (size_t)j];
                if (c == FI_BLOCK_PARTIAL) kv_idx[row * (size_t)nkv + (size_t)np_++] = (int32_t)j;
                else if (c == FI_BLOCK_FULL) full_idx[row * (size_t)nkv + (size_t)nf++] = (int32_t)j;
            }
            kv_num[row] = np_, full_num[row] = nf;
        }
        void *d;
        if (!(st = plan_alloc(np, lists, (rows * 2 + cells * 2) * sizeof(int32_t), &d, err))) {
            int32_t *dl = (int32_t *)d;
            kp->kv_num = dl, kp->full_num = dl + rows, kp->kv_idx = dl + 2 * rows, kp->full_idx = dl + 2 * rows + cells;
            kp->bm_batch = kp->batch, kp->bm_heads = kp->hq;
            kp->n_q_blocks = (int32_t)(nq ? nq : 1); /* empty queries: a grid of one exiting CTA */
            kp->n_kv_blocks = (int32_t)nkv;
            kp->block_q = bq, kp->block_kv = bkv;
        }
    }
    free(cls);
    free(lists);
    return st;
}

fi_status fi_nvrtc_plan_launch(const fi_nvrtc_plan *np, const fi_cuda_attn_kparams *kp, cudaStream_t stream,
                               fi_error *err) {
    void *args[] = {(void *)kp};
    const cu_api *api = &np->entry->api;
    CUresult r = api->launch(np->entry->flash, (unsigned)kp->n_q_blocks, (unsigned)kp->hq, (unsigned)kp->batch,
                                FI_FLASH_WARPS * 32, 1, 1, np->entry->smem, (CUstream)stream, args, NULL);
    if (r != CUDA_SUCCESS) return cu_fail(api, err, r, "expression prefill kernel launch");
    return FI_OK;
}
