/* flexinfer attn: flash attention on .npy arrays.
 *
 * Reads Q [B, Hq, Lq, D] and K, V [B, Hkv, Lk, D] (f32 or f16; 3-D [H, L, D] means
 * B = 1), runs fi_attn_forward (or the CUDA backend) and writes O (f32, the shape of
 * Q) and optionally the LSE (f32, [B, Hq, Lq], natural log). Every input is checked
 * before any work is done, and the outputs are written only after everything else
 * succeeded, each atomically, so bad input (exit code 2) or a failure (exit code 1)
 * never leaves a partial result behind. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attn/problem.h"
#include "commands.h"
#include "core/error.h"
#include "core/npy.h"
#ifdef FI_HAVE_CUDA
#include "flexinfer_cuda.h"
#endif

enum { EXIT_RUNTIME = 1, EXIT_BAD_INPUT = 2 };

/* Above this many (query, key) pairs the density shown in the summary is estimated
 * from evenly spaced query rows instead of counted exactly (it only labels figures). */
#define ATTN_EXACT_DENSITY_PAIRS (INT64_C(1) << 24)
#define ATTN_DENSITY_SAMPLE_ROWS 256
/* User arrays of --mask-expr / --score-expr (FI_CUDA_EXPR_MAX_ARRAYS). */
#define ATTN_MAX_ARRAYS 8

typedef struct attn_opts {
    const char *q_path, *k_path, *v_path, *out_path, *lse_path, *segments_path;
    const char *mask_expr, *score_expr, *device;
    /* Run-time compiled C expressions (CUDA only). */
    const char *mask_cexpr, *score_cexpr, *kernel_cache;
    const char *arrays[ATTN_MAX_ARRAYS]; /* "NAME=FILE.npy" */
    int n_arrays;
    double scale;
    int64_t q_offset, threads, num_splits, block_q, block_kv;
    bool check;
} attn_opts;

static void attn_usage(FILE *f) {
    fprintf(f,
            "usage: flexinfer attn --q Q.npy --k K.npy --v V.npy [--mask EXPR] [--segments S.npy]\n"
            "                      [--score-mod EXPR] [--scale X] [--q-offset N] [--threads N]\n"
            "                      [--out O.npy] [--lse L.npy] [--check] [--num-splits N]\n"
            "                      [--block-q N --block-kv N] [--device cpu|cuda]\n"
            "                      [--mask-expr C --score-expr C --array NAME=FILE.npy --kernel-cache DIR]\n\n"
            "Runs flash attention on .npy arrays (f32 or f16, little-endian, C order).\n\n"
            "  --q, --k, --v     Q [B, Hq, Lq, D], K and V [B, Hkv, Lk, D]; 3-D [H, L, D] means B = 1;\n"
            "                    Hq must be a multiple of Hkv (GQA); D <= %d\n"
            "  --mask EXPR       e.g. \"causal & window:1024\", \"causal & (document | generated)\";\n"
            "                    primitives: full causal window:W prefix:N chunked:C document generated;\n"
            "                    operators: & | ! and parentheses (default: full)\n"
            "  --segments FILE   int32 segment ids [Lk] or [B, Lk] (document / generated); queries\n"
            "                    use the ids at their logical positions\n"
            "  --score-mod EXPR  softcap:C, alibi, or several joined by ','\n"
            "  --scale X         score scale (default 1/sqrt(D))\n"
            "  --q-offset N      logical position of query row 0 (decode / append; default 0)\n"
            "  --threads N       worker threads (default: all)\n"
            "  --out FILE        write O: f32, the shape of Q\n"
            "  --lse FILE        write the log-sum-exp: f32 [B, Hq, Lq] (natural log; -inf for\n"
            "                    fully masked rows)\n"
            "  --check           also run the naive double-precision reference and print the\n"
            "                    max absolute errors of O and the LSE on stdout\n"
            "  --num-splits N    split-KV: 0 automatic (default), 1 never, N forces N\n"
            "  --block-q N, --block-kv N   tile sizes (default: the kernel's)\n"
            "  --device D        cpu (default) or cuda\n"
            "\nC expressions compiled at run time for the GPU (need --device cuda):\n"
            "  --mask-expr C     keep (q, kv) when the C expression is true, ANDed with --mask;\n"
            "                    names: b, h (sequence, query head), q, kv (logical positions) and\n"
            "                    the arrays, e.g. \"(q - kv) %% 3 != 0 && kv <= q\", \"doc[q] == doc[kv]\"\n"
            "  --score-expr C    new score from float score (scaled, after --score-mod) and the same\n"
            "                    names, e.g. \"score + bias[h]\", \"30.f * tanhf(score / 30.f)\"\n"
            "  --array NAME=FILE int32 or float32 .npy (read flat) named NAME[i] in the expressions;\n"
            "                    up to %d; an index outside the array reads 0\n"
            "  --kernel-cache DIR  keep compiled kernels in DIR for later runs\n"
            "\nA one-line summary (shapes, mask, time, GFLOP/s) goes to stderr.\n"
            "Exit codes: 0 success, 1 runtime failure, 2 bad input (nothing is written).\n",
            FI_ATTN_MAX_DIM, ATTN_MAX_ARRAYS);
}

static int bad_input(const char *fmt, ...) FI_PRINTF(1, 2);
static int bad_input(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("flexinfer attn: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_BAD_INPUT;
}

/* Maps a library status to the exit code: problems with the input are "bad input". */
static int exit_code_for(fi_status st) { return st == FI_ERR_NOMEM ? EXIT_RUNTIME : EXIT_BAD_INPUT; }

/* ---- arguments ------------------------------------------------------------- */

static bool parse_int(const char *opt, const char *text, int64_t min, int64_t max, int64_t *out) {
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < min || v > max) {
        bad_input("%s expects a whole number in [%lld, %lld], got '%s'", opt, (long long)min, (long long)max, text);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_real(const char *opt, const char *text, double *out) {
    char *end = NULL;
    errno = 0;
    const double v = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(v) || v == 0.0 || fabs(v) > 1e30) {
        bad_input("%s expects a finite non-zero number, got '%s'", opt, text);
        return false;
    }
    *out = v;
    return true;
}

/* Returns 0 when the options are complete, -1 after --help, else an exit code. */
static int parse_args(int argc, char **argv, attn_opts *o) {
    *o = (attn_opts){.device = "cpu"};
    static const char *const valued[] = {"--q", "--k", "--v", "--mask", "--segments", "--score-mod", "--scale",
                                         "--q-offset", "--threads", "--out", "--lse", "--num-splits", "--block-q",
                                         "--block-kv", "--device", "--mask-expr", "--score-expr", "--array",
                                         "--kernel-cache"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            attn_usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--check")) {
            o->check = true;
            continue;
        }
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) known |= !strcmp(a, valued[k]);
        if (!known) {
            if (a[0] == '-') bad_input("unknown option '%s' (see flexinfer attn --help)", a);
            else bad_input("unexpected argument '%s' (see flexinfer attn --help)", a);
            return EXIT_BAD_INPUT;
        }
        if (i + 1 >= argc) return bad_input("%s needs a value", a);
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "--q")) o->q_path = v;
        else if (!strcmp(a, "--k")) o->k_path = v;
        else if (!strcmp(a, "--v")) o->v_path = v;
        else if (!strcmp(a, "--mask")) o->mask_expr = v;
        else if (!strcmp(a, "--segments")) o->segments_path = v;
        else if (!strcmp(a, "--score-mod")) o->score_expr = v;
        else if (!strcmp(a, "--out")) o->out_path = v;
        else if (!strcmp(a, "--lse")) o->lse_path = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--mask-expr")) o->mask_cexpr = v;
        else if (!strcmp(a, "--score-expr")) o->score_cexpr = v;
        else if (!strcmp(a, "--kernel-cache")) o->kernel_cache = v;
        else if (!strcmp(a, "--array")) {
            if (o->n_arrays == ATTN_MAX_ARRAYS) return bad_input("at most %d --array options", ATTN_MAX_ARRAYS);
            if (!strchr(v, '=') || v[0] == '=') return bad_input("--array expects NAME=FILE.npy, got '%s'", v);
            o->arrays[o->n_arrays++] = v;
        }
        else if (!strcmp(a, "--scale")) ok = parse_real(a, v, &o->scale);
        else if (!strcmp(a, "--q-offset")) ok = parse_int(a, v, 0, INT64_C(1) << 40, &o->q_offset);
        else if (!strcmp(a, "--threads")) ok = parse_int(a, v, 1, 4096, &o->threads);
        else if (!strcmp(a, "--num-splits")) ok = parse_int(a, v, 0, 4096, &o->num_splits);
        else if (!strcmp(a, "--block-q")) ok = parse_int(a, v, 1, 65536, &o->block_q);
        else if (!strcmp(a, "--block-kv")) ok = parse_int(a, v, 1, 65536, &o->block_kv);
        if (!ok) return EXIT_BAD_INPUT;
    }
    if (!o->q_path || !o->k_path || !o->v_path) {
        bad_input("--q, --k and --v are required (missing: %s%s%s)", o->q_path ? "" : "--q ", o->k_path ? "" : "--k ",
                  o->v_path ? "" : "--v");
        return EXIT_BAD_INPUT;
    }
    if (strcmp(o->device, "cpu") != 0 && strcmp(o->device, "cuda") != 0)
        return bad_input("--device must be 'cpu' or 'cuda', got '%s'", o->device);
#ifndef FI_HAVE_CUDA
    if (!strcmp(o->device, "cuda"))
        return bad_input("flexinfer was built without CUDA (configure with -DFI_CUDA=ON)");
#endif
    const bool cexpr = o->mask_cexpr || o->score_cexpr || o->n_arrays || o->kernel_cache;
    if (cexpr && strcmp(o->device, "cuda") != 0)
        return bad_input("--mask-expr, --score-expr, --array and --kernel-cache compile C expressions for the GPU "
                         "and need --device cuda (on the CPU use --mask and --score-mod)");
    if (cexpr && !o->mask_cexpr && !o->score_cexpr)
        return bad_input("--array and --kernel-cache need --mask-expr or --score-expr");
    if (cexpr && o->check)
        return bad_input("--check cannot evaluate --mask-expr / --score-expr on the CPU reference");
    if (o->out_path && o->lse_path && !strcmp(o->out_path, o->lse_path))
        return bad_input("--out and --lse name the same file '%s'", o->out_path);
    return 0;
}

/* ---- inputs ------------------------------------------------------------------- */

typedef struct attn_inputs {
    fi_npy_array q, k, v, seg;
    int64_t qs[4], ks[4], vs[4]; /* [B, H, L, D] */
    fi_mask *mask;
    fi_score_mod *score;
    fi_npy_array arrays[ATTN_MAX_ARRAYS];
    char array_names[ATTN_MAX_ARRAYS][72];
} attn_inputs;

static void attn_inputs_free(attn_inputs *in) {
    fi_npy_free(&in->q);
    fi_npy_free(&in->k);
    fi_npy_free(&in->v);
    fi_npy_free(&in->seg);
    fi_mask_free(in->mask);
    fi_score_mod_free(in->score);
    for (int i = 0; i < ATTN_MAX_ARRAYS; i++) fi_npy_free(&in->arrays[i]);
}

static void format_shape(char *buf, size_t n, const int64_t *s, int ndim) {
    size_t pos = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && pos < n; i++) pos += (size_t)snprintf(buf + pos, n - pos, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (pos < n) snprintf(buf + pos, n - pos, "]");
}

/* Loads one of Q/K/V: f32 or f16, 3-D or 4-D; dims gets [B, H, L, D]. */
static int load_tensor(const char *opt, const char *path, fi_npy_array *a, int64_t dims[4]) {
    fi_error err = {0};
    const fi_status st = fi_npy_read(path, a, &err);
    if (st) {
        bad_input("%s: %s", opt, err.msg);
        return exit_code_for(st);
    }
    if (a->dtype != FI_NPY_F32 && a->dtype != FI_NPY_F16)
        return bad_input("%s %s: element type %s is not supported (float32 or float16)", opt, path,
                         fi_npy_dtype_name(a->dtype));
    if (a->ndim != 3 && a->ndim != 4) {
        char s[160];
        format_shape(s, sizeof s, a->shape, a->ndim);
        return bad_input("%s %s: expected shape [B, H, L, D] or [H, L, D], got %s", opt, path, s);
    }
    const int off = a->ndim == 4 ? 0 : 1;
    dims[0] = 1;
    for (int i = 0; i < a->ndim; i++) dims[i + off] = a->shape[i];
    if (dims[0] == 0 || dims[1] == 0 || dims[3] == 0)
        return bad_input("%s %s: batch, heads and head dim must be non-zero", opt, path);
    return 0;
}

static int check_shapes(const attn_opts *o, const attn_inputs *in) {
    const int64_t *q = in->qs, *k = in->ks, *v = in->vs;
    char sq[160], sk[160], sv[160];
    format_shape(sq, sizeof sq, in->q.shape, in->q.ndim);
    format_shape(sk, sizeof sk, in->k.shape, in->k.ndim);
    format_shape(sv, sizeof sv, in->v.shape, in->v.ndim);
    if (in->q.ndim != in->k.ndim || in->q.ndim != in->v.ndim)
        return bad_input("q %s, k %s and v %s must have the same number of dimensions", sq, sk, sv);
    if (memcmp(k, v, 4 * sizeof *k) != 0)
        return bad_input("k %s (%s) and v %s (%s) must have the same shape", sk, o->k_path, sv, o->v_path);
    if (in->k.dtype != in->v.dtype)
        return bad_input("k (%s) and v (%s) must have the same element type", fi_npy_dtype_name(in->k.dtype),
                         fi_npy_dtype_name(in->v.dtype));
    if (q[0] != k[0]) return bad_input("batch differs: q %s, k/v %s", sq, sk);
    if (q[3] != k[3]) return bad_input("head dim differs: q %s has D = %lld, k/v %s have D = %lld", sq, (long long)q[3], sk, (long long)k[3]);
    if (q[3] > FI_ATTN_MAX_DIM)
        return bad_input("head dim D = %lld is larger than the supported maximum %d", (long long)q[3], FI_ATTN_MAX_DIM);
    if (q[1] % k[1] != 0)
        return bad_input("query heads (%lld) must be a multiple of key/value heads (%lld) (GQA)", (long long)q[1],
                         (long long)k[1]);
    return 0;
}

static int load_segments(const attn_opts *o, attn_inputs *in, fi_mask_inputs *mi) {
    fi_error err = {0};
    const fi_status st = fi_npy_read(o->segments_path, &in->seg, &err);
    if (st) {
        bad_input("--segments: %s", err.msg);
        return exit_code_for(st);
    }
    const fi_npy_array *s = &in->seg;
    if (s->dtype != FI_NPY_I32)
        return bad_input("--segments %s: segment ids must be int32, got %s", o->segments_path, fi_npy_dtype_name(s->dtype));
    if (s->ndim != 1 && s->ndim != 2)
        return bad_input("--segments %s: expected shape [Lk] or [B, Lk], got %d dimensions", o->segments_path, s->ndim);
    if (s->ndim == 2 && s->shape[0] != in->qs[0])
        return bad_input("--segments %s: %lld rows, but the batch is %lld", o->segments_path, (long long)s->shape[0],
                         (long long)in->qs[0]);
    mi->segments = s->data;
    mi->segments_len = s->shape[s->ndim - 1];
    mi->segments_batch = s->ndim == 2 ? s->shape[0] : 0;
    return 0;
}

#ifdef FI_HAVE_CUDA
/* Loads the --array files (int32 or float32, read flat) into x. */
static int load_arrays(const attn_opts *o, attn_inputs *in, fi_cuda_expr *x) {
    char(*names)[72] = in->array_names;
    for (int i = 0; i < o->n_arrays; i++) {
        const char *eq = strchr(o->arrays[i], '=');
        const size_t n = (size_t)(eq - o->arrays[i]);
        if (n >= sizeof names[i]) return bad_input("--array %s: name too long", o->arrays[i]);
        memcpy(names[i], o->arrays[i], n);
        names[i][n] = 0;
        fi_error err = {0};
        const fi_status st = fi_npy_read(eq + 1, &in->arrays[i], &err);
        if (st) {
            bad_input("--array %s: %s", names[i], err.msg);
            return exit_code_for(st);
        }
        const fi_npy_array *a = &in->arrays[i];
        if (a->dtype != FI_NPY_I32 && a->dtype != FI_NPY_F32)
            return bad_input("--array %s: %s holds %s; expressions read int32 or float32", names[i], eq + 1,
                             fi_npy_dtype_name(a->dtype));
        x->arrays[i] = (fi_cuda_expr_array){names[i], a->dtype == FI_NPY_I32 ? FI_CUDA_ARRAY_INT32 : FI_CUDA_ARRAY_FLOAT32,
                                            a->count, a->data};
    }
    x->n_arrays = o->n_arrays;
    return 0;
}
#endif

/* ---- running -------------------------------------------------------------------- */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Fraction of kept (query, key) pairs, averaged over the batch. CLI masks never
 * depend on the head, so head 0 stands for all. */
static double mask_density(const fi_mask *m, const fi_mask_inputs *mi, int64_t batch, int64_t lq, int64_t lk,
                           bool *exact) {
    *exact = true;
    if (!m || lq == 0 || lk == 0) return 1.0;
    int64_t step = 1;
    if (batch * lq * lk > ATTN_EXACT_DENSITY_PAIRS && lq > ATTN_DENSITY_SAMPLE_ROWS) {
        step = lq / ATTN_DENSITY_SAMPLE_ROWS;
        *exact = false;
    }
    double kept = 0, total = 0;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < lq; i += step) {
            for (int64_t j = 0; j < lk; j++) kept += fi_mask_keep(m, mi, b, 0, mi->q_offset + i, j);
            total += (double)lk;
        }
    return kept / total;
}

typedef struct attn_errors {
    double out, lse;
} attn_errors;

/* Max absolute differences against the reference; matching infinities count as 0 and
 * a NaN anywhere as infinite error. */
static attn_errors compare(const float *o, const float *ro, size_t n_out, const float *l, const float *rl, size_t n_lse) {
    attn_errors e = {0, 0};
    for (size_t i = 0; i < n_out; i++) {
        const double d = fabs((double)o[i] - (double)ro[i]);
        if (isnan(d)) e.out = INFINITY;
        else if (d > e.out) e.out = d;
    }
    for (size_t i = 0; i < n_lse; i++) {
        if (isinf(l[i]) && l[i] == rl[i]) continue;
        const double d = fabs((double)l[i] - (double)rl[i]);
        if (isnan(d)) e.lse = INFINITY;
        else if (d > e.lse) e.lse = d;
    }
    return e;
}

static int write_outputs(const attn_opts *o, const attn_inputs *in, const float *out, const float *lse) {
    fi_error err = {0};
    if (o->out_path) {
        if (fi_npy_write(o->out_path, FI_NPY_F32, in->q.ndim, in->q.shape, out, &err) != FI_OK) {
            fprintf(stderr, "flexinfer attn: --out: %s\n", err.msg);
            return EXIT_RUNTIME;
        }
    }
    if (o->lse_path) {
        /* [B, Hq, Lq], or [Hq, Lq] for 3-D inputs: Q's shape without D. */
        if (fi_npy_write(o->lse_path, FI_NPY_F32, in->q.ndim - 1, in->q.shape, lse, &err) != FI_OK) {
            fprintf(stderr, "flexinfer attn: --lse: %s\n", err.msg);
            if (o->out_path) {
                unlink(o->out_path); /* all or nothing */
                fprintf(stderr, "flexinfer attn: removed %s again\n", o->out_path);
            }
            return EXIT_RUNTIME;
        }
    }
    return 0;
}

int cmd_attn(int argc, char **argv) {
    attn_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;

    attn_inputs in = {0};
    float *out = NULL, *lse = NULL, *ref_out = NULL, *ref_lse = NULL;
    fi_error err = {0};
    fi_status st;

    /* Expressions first: they are cheap to check and the commonest mistake. */
    if (o.mask_expr && (st = fi_mask_parse(o.mask_expr, &in.mask, &err))) {
        rc = bad_input("--mask: %s", err.msg);
        goto done;
    }
    if (o.score_expr && (st = fi_score_mod_parse(o.score_expr, &in.score, &err))) {
        rc = bad_input("--score-mod: %s", err.msg);
        goto done;
    }
    if ((rc = load_tensor("--q", o.q_path, &in.q, in.qs))) goto done;
    if ((rc = load_tensor("--k", o.k_path, &in.k, in.ks))) goto done;
    if ((rc = load_tensor("--v", o.v_path, &in.v, in.vs))) goto done;
    if ((rc = check_shapes(&o, &in))) goto done;

    fi_mask_inputs mi = {.q_offset = o.q_offset};
    if (o.segments_path && (rc = load_segments(&o, &in, &mi))) goto done;
    if (o.segments_path && (!in.mask || !fi_mask_needs_segments(in.mask)))
        fprintf(stderr, "flexinfer attn: note: the mask reads no segment ids; --segments is ignored\n");
    const int64_t B = in.qs[0], Hq = in.qs[1], Lq = in.qs[2], D = in.qs[3], Hkv = in.ks[1], Lk = in.ks[2];
    if (in.mask && (st = fi_mask_validate_inputs(in.mask, &mi, B, Lq, Lk, &err))) {
        rc = bad_input("--mask '%s': %s", o.mask_expr, err.msg);
        goto done;
    }

    const size_t n_out = (size_t)in.q.count, n_lse = (size_t)(B * Hq * Lq);
    out = malloc((n_out ? n_out : 1) * sizeof *out);
    lse = malloc((n_lse ? n_lse : 1) * sizeof *lse);
    if (!out || !lse) {
        fprintf(stderr, "flexinfer attn: out of memory for the output (%zu floats)\n", n_out);
        rc = EXIT_RUNTIME;
        goto done;
    }
    const fi_dtype qt = in.q.dtype == FI_NPY_F16 ? FI_DTYPE_F16 : FI_DTYPE_F32;
    const fi_dtype kt = in.k.dtype == FI_NPY_F16 ? FI_DTYPE_F16 : FI_DTYPE_F32;
    fi_attn_params p = {
        .q = fi_attn_tensor_contiguous(in.q.data, qt, B, Hq, Lq, D),
        .k = fi_attn_tensor_contiguous(in.k.data, kt, B, Hkv, Lk, D),
        .v = fi_attn_tensor_contiguous(in.v.data, kt, B, Hkv, Lk, D),
        .out = out,
        .lse = lse,
        .scale = (float)o.scale,
        .mask = in.mask,
        .mask_in = &mi,
        .score_mod = in.score,
        .threads = (int)o.threads,
        .num_splits = (int)o.num_splits,
        .block_q = (int)o.block_q,
        .block_kv = (int)o.block_kv,
    };
    const bool on_cuda = !strcmp(o.device, "cuda");
    double t0 = now_seconds();
#ifdef FI_HAVE_CUDA
    if (o.mask_cexpr || o.score_cexpr) {
        fi_cuda_expr x = {.mask_expr = o.mask_cexpr, .score_expr = o.score_cexpr};
        fi_cuda_kernel_cache *cache = NULL;
        if ((rc = load_arrays(&o, &in, &x))) goto done;
        if (o.kernel_cache && (st = fi_cuda_kernel_cache_create(o.kernel_cache, &cache, &err))) {
            rc = bad_input("--kernel-cache: %s", err.msg);
            goto done;
        }
        t0 = now_seconds(); /* compiling counts: it is part of what a run costs */
        st = fi_cuda_attn_forward_expr(&p, &x, cache, &err);
        fi_cuda_kernel_cache_free(cache);
    } else {
        st = on_cuda ? fi_cuda_attn_forward(&p, &err) : fi_attn_forward(&p, &err);
    }
#else
    st = fi_attn_forward(&p, &err);
#endif
    const double seconds = now_seconds() - t0;
    if (st) {
        fprintf(stderr, "flexinfer attn: %s\n", err.msg);
        rc = exit_code_for(st);
        goto done;
    }

    bool exact = true;
    /* The CPU cannot evaluate --mask-expr: the density (and GFLOP/s) is that of --mask. */
    const double density = mask_density(in.mask, &mi, B, Lq, Lk, &exact);
    exact = exact && !o.mask_cexpr;
    const double flops = 4.0 * (double)B * (double)Hq * (double)Lq * (double)Lk * (double)D * density;
    char sq[160], sk[160];
    format_shape(sq, sizeof sq, in.q.shape, in.q.ndim);
    format_shape(sk, sizeof sk, in.k.shape, in.k.ndim);
    char where[64];
    if (on_cuda) snprintf(where, sizeof where, "cuda");
    else if (o.threads) snprintf(where, sizeof where, "cpu, %lld threads", (long long)o.threads);
    else snprintf(where, sizeof where, "cpu");
    fprintf(stderr,
            "attn: q %s %s, k/v %s %s, mask %s (density %s%.4f), score-mod %s, q-offset %lld, %s: %.3f ms, %.2f "
            "GFLOP/s\n",
            sq, fi_npy_dtype_name(in.q.dtype), sk, fi_npy_dtype_name(in.k.dtype),
            o.mask_cexpr ? "--mask and --mask-expr" : o.mask_expr ? o.mask_expr : "full",
            exact ? "" : "~", density, o.score_expr ? o.score_expr : "none", (long long)o.q_offset, where,
            seconds * 1e3, seconds > 0 ? flops / seconds * 1e-9 : 0.0);

    if (o.check) {
        ref_out = malloc((n_out ? n_out : 1) * sizeof *ref_out);
        ref_lse = malloc((n_lse ? n_lse : 1) * sizeof *ref_lse);
        if (!ref_out || !ref_lse) {
            fprintf(stderr, "flexinfer attn: out of memory for the reference\n");
            rc = EXIT_RUNTIME;
            goto done;
        }
        fi_attn_params rp = p;
        rp.out = ref_out;
        rp.lse = ref_lse;
        if ((st = fi_attn_reference(&rp, &err))) {
            fprintf(stderr, "flexinfer attn: reference: %s\n", err.msg);
            rc = exit_code_for(st);
            goto done;
        }
        const attn_errors e = compare(out, ref_out, n_out, lse, ref_lse, n_lse);
        printf("max_abs_err=%.3e lse_max_abs_err=%.3e\n", e.out, e.lse);
        fflush(stdout);
    }
    rc = write_outputs(&o, &in, out, lse);
done:
    free(out);
    free(lse);
    free(ref_out);
    free(ref_lse);
    attn_inputs_free(&in);
    return rc;
}
