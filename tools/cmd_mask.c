/* flexinfer mask: draws a mask expression as a matrix (■ kept, · masked, segment
 * boundaries as │ and ─), then its block map (E/P/F) and its density; --png also
 * writes a picture. Long sequences are sampled (segment boundaries plus a few
 * positions inside each segment, labelled with their positions) so the drawing
 * stays within about 100 columns and rows. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/block_mask.h"
#include "attn/mask.h"
#include "commands.h"
#include "core/error.h"
#include "core/npy.h"

enum { EXIT_BAD_INPUT = 2 };

/* The drawing budget: rows/columns of the matrix and of the block map. */
#define MASK_DRAW_MAX 100
/* Limits that keep the command fast and its memory bounded. */
#define MASK_MAX_LEN (INT64_C(1) << 24)
#define MASK_MAX_BLOCK_CELLS (INT64_C(1) << 24)
#define MASK_PNG_MAX 1024
#define MASK_MAX_SCAN (INT64_C(1) << 28)

typedef struct mask_opts {
    const char *expr, *segments_path, *png_path;
    int64_t q_len, kv_len, q_offset, block, batch_row;
} mask_opts;

static void mask_usage(FILE *f) {
    fprintf(f,
            "usage: flexinfer mask --mask EXPR --q-len N --kv-len M [--segments S.npy] [--block B]\n"
            "                      [--q-offset N] [--batch-row R] [--png FILE]\n\n"
            "Draws the mask matrix (rows: query positions, columns: key positions; ■ kept, · masked,\n"
            "│ and ─ at segment boundaries), the block map (E empty, P partial, F full) and the density.\n\n"
            "  --mask EXPR      mask expression, e.g. \"causal & (document | generated)\"\n"
            "                   primitives: full causal window:W prefix:N chunked:C document generated;\n"
            "                   operators: & | ! and parentheses\n"
            "  --q-len N        number of queries (positions q-offset .. q-offset+N-1)\n"
            "  --kv-len M       number of keys\n"
            "  --segments FILE  int32 .npy segment ids, [L] or [B, L] (needed by document/generated)\n"
            "  --block B        block size for the block map (default 64)\n"
            "  --q-offset N     logical position of the first query (default 0)\n"
            "  --batch-row R    row of [B, L] segment ids to draw (default 0)\n"
            "  --png FILE       also write a picture (kept: blue, masked: light; partial blocks tinted)\n");
}

static int bad_input(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "flexinfer mask: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return EXIT_BAD_INPUT;
}

static bool parse_int(const char *opt, const char *text, int64_t min, int64_t max, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "flexinfer mask: %s expects a whole number in [%lld, %lld], got '%s'\n", opt,
                (long long)min, (long long)max, text);
        return false;
    }
    *out = v;
    return true;
}

/* Returns 0 on success, an exit code otherwise; -1 after --help. */
static int parse_args(int argc, char **argv, mask_opts *o) {
    *o = (mask_opts){.q_len = -1, .kv_len = -1, .block = 64};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            mask_usage(stdout);
            return -1;
        }
        static const char *const valued[] = {"--mask", "--q-len", "--kv-len", "--segments", "--block",
                                             "--q-offset", "--batch-row", "--png"};
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) known |= !strcmp(a, valued[k]);
        if (!known) {
            fprintf(stderr, "flexinfer mask: unknown option '%s'\n\n", a);
            mask_usage(stderr);
            return EXIT_BAD_INPUT;
        }
        if (i + 1 >= argc) return bad_input("%s needs a value%s", a, "");
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "--mask")) o->expr = v;
        else if (!strcmp(a, "--segments")) o->segments_path = v;
        else if (!strcmp(a, "--png")) o->png_path = v;
        else if (!strcmp(a, "--q-len")) ok = parse_int(a, v, 1, MASK_MAX_LEN, &o->q_len);
        else if (!strcmp(a, "--kv-len")) ok = parse_int(a, v, 1, MASK_MAX_LEN, &o->kv_len);
        else if (!strcmp(a, "--block")) ok = parse_int(a, v, 1, INT32_MAX, &o->block);
        else if (!strcmp(a, "--q-offset")) ok = parse_int(a, v, 0, INT64_C(1) << 40, &o->q_offset);
        else if (!strcmp(a, "--batch-row")) ok = parse_int(a, v, 0, INT32_MAX, &o->batch_row);
        if (!ok) return EXIT_BAD_INPUT;
    }
    if (!o->expr) return bad_input("--mask EXPR is required (e.g. --mask causal)%s%s", "", "");
    if (o->q_len < 0 || o->kv_len < 0) return bad_input("--q-len and --kv-len are required%s%s", "", "");
    return 0;
}

/* ---- segment ids ------------------------------------------------------- */

typedef struct segments {
    int32_t *ids; /* owned copy of the selected row */
    int64_t len, rows;
} segments;

static int load_segments(const mask_opts *o, segments *s) {
    *s = (segments){0};
    fi_npy_array arr;
    fi_error err = {0};
    if (fi_npy_read(o->segments_path, &arr, &err) != FI_OK) {
        fprintf(stderr, "flexinfer mask: --segments: %s\n", err.msg);
        return EXIT_BAD_INPUT;
    }
    int rc = 0;
    if (arr.dtype != FI_NPY_I32) {
        fprintf(stderr, "flexinfer mask: --segments %s: segment ids must be int32, got %s\n", o->segments_path,
                fi_npy_dtype_name(arr.dtype));
        rc = EXIT_BAD_INPUT;
    } else if (arr.ndim != 1 && arr.ndim != 2) {
        fprintf(stderr, "flexinfer mask: --segments %s: expected shape [L] or [B, L], got %d dimensions\n",
                o->segments_path, arr.ndim);
        rc = EXIT_BAD_INPUT;
    } else {
        s->rows = arr.ndim == 2 ? arr.shape[0] : 1;
        s->len = arr.shape[arr.ndim - 1];
        if (o->batch_row >= s->rows) {
            fprintf(stderr, "flexinfer mask: --batch-row %lld is out of range: the segment ids have %lld row(s)\n",
                    (long long)o->batch_row, (long long)s->rows);
            rc = EXIT_BAD_INPUT;
        } else if (!(s->ids = malloc((size_t)(s->len > 0 ? s->len : 1) * sizeof *s->ids))) {
            fprintf(stderr, "flexinfer mask: out of memory\n");
            rc = 1;
        } else {
            memcpy(s->ids, (const int32_t *)arr.data + o->batch_row * s->len, (size_t)s->len * sizeof *s->ids);
        }
    }
    fi_npy_free(&arr);
    return rc;
}

/* ---- sampling ------------------------------------------------------------ */

/* Fills out[] (capacity >= budget + 2) with the positions of [start, start + len) to draw:
 * all of them when they fit; otherwise the first and last position of every segment
 * (run of equal ids) plus evenly spaced positions inside, in proportion to its length;
 * with more segments than the budget allows, evenly chosen segment starts. */
static int64_t sample_positions(int64_t start, int64_t len, const int32_t *seg, int64_t budget, int64_t *out) {
    if (len <= budget) {
        for (int64_t i = 0; i < len; i++) out[i] = start + i;
        return len;
    }
    int64_t n_runs = 1;
    if (seg)
        for (int64_t p = start + 1; p < start + len; p++) n_runs += seg[p] != seg[p - 1];
    int64_t n = 0;
    if (2 * n_runs > budget) {
        /* Run starts only: walk the runs and keep every (n_runs / budget)-th one, plus the last position. */
        int64_t run = 0, next_pick = 0, picked = 0;
        for (int64_t p = start; p < start + len; p++) {
            if (p > start && seg[p] != seg[p - 1]) run++;
            if ((p == start || seg[p] != seg[p - 1]) && run == next_pick && picked < budget - 1) {
                out[n++] = p;
                picked++;
                next_pick = picked * n_runs / (budget - 1);
            }
        }
        if (out[n - 1] != start + len - 1) out[n++] = start + len - 1;
        return n;
    }
    const int64_t interior_budget = budget - 2 * n_runs;
    int64_t run_start = start;
    for (int64_t p = start + 1; p <= start + len; p++) {
        if (p < start + len && (!seg || seg[p] == seg[p - 1])) continue;
        const int64_t run_len = p - run_start;
        out[n++] = run_start;
        int64_t inside = interior_budget * run_len / len;
        if (inside > run_len - 2) inside = run_len - 2;
        for (int64_t j = 0; j < inside; j++) {
            const int64_t pos = run_start + (j + 1) * (run_len - 1) / (inside + 1);
            if (pos > out[n - 1]) out[n++] = pos;
        }
        if (p - 1 > out[n - 1]) out[n++] = p - 1;
        run_start = p;
    }
    return n;
}

/* Boundaries between consecutive drawn positions (their segment ids differ). */
static int64_t count_boundaries(const int64_t *pos, int64_t n, const int32_t *seg) {
    int64_t c = 0;
    for (int64_t i = 1; seg && i < n; i++) c += seg[pos[i]] != seg[pos[i - 1]];
    return c;
}

/* Samples one axis so that positions plus boundary lines stay within the budget. */
static int64_t sample_axis(int64_t start, int64_t len, const int32_t *seg, int64_t *out) {
    int64_t budget = MASK_DRAW_MAX - 4, n = 0;
    for (int tries = 0; tries < 16; tries++) {
        n = sample_positions(start, len, seg, budget, out);
        const int64_t total = n + count_boundaries(out, n, seg);
        if (total <= MASK_DRAW_MAX || budget <= 8) break;
        budget = budget * MASK_DRAW_MAX / total;
    }
    return n;
}

/* ---- text drawing --------------------------------------------------------- */

static int digits(int64_t v) {
    int d = 1;
    while (v >= 10) v /= 10, d++;
    return d;
}

/* Column labels written vertically, one digit per line, right-aligned on the last line. */
static void print_column_labels(int label_width, const int64_t *cols, int64_t n, const bool *sep_before) {
    int64_t max = 0;
    for (int64_t i = 0; i < n; i++) max = cols[i] > max ? cols[i] : max;
    const int nd = digits(max);
    for (int line = 0; line < nd; line++) {
        printf("%*s ", label_width, "");
        for (int64_t i = 0; i < n; i++) {
            if (sep_before && sep_before[i]) putchar(' ');
            const int place = nd - 1 - line;
            int64_t p10 = 1;
            for (int k = 0; k < place; k++) p10 *= 10;
            putchar(cols[i] >= p10 || place == 0 ? (char)('0' + (cols[i] / p10) % 10) : ' ');
        }
        putchar('\n');
    }
}

static void draw_matrix(const fi_mask *m, const fi_mask_inputs *in, const int32_t *seg, const int64_t *rows,
                        int64_t n_rows, const int64_t *cols, int64_t n_cols) {
    bool *col_sep = calloc((size_t)n_cols + 1, sizeof *col_sep);
    if (!col_sep) return;
    for (int64_t j = 1; seg && j < n_cols; j++) col_sep[j] = seg[cols[j]] != seg[cols[j - 1]];
    const int w = digits(rows[n_rows - 1]);
    print_column_labels(w, cols, n_cols, col_sep);
    for (int64_t i = 0; i < n_rows; i++) {
        if (seg && i > 0 && seg[rows[i]] != seg[rows[i - 1]]) {
            printf("%*s ", w, "");
            for (int64_t j = 0; j < n_cols; j++) fputs(col_sep[j] ? "┼─" : "─", stdout);
            putchar('\n');
        }
        printf("%*lld ", w, (long long)rows[i]);
        for (int64_t j = 0; j < n_cols; j++) {
            if (col_sep[j]) fputs("│", stdout);
            fputs(fi_mask_keep(m, in, 0, 0, rows[i], cols[j]) ? "■" : "·", stdout);
        }
        putchar('\n');
    }
    free(col_sep);
}

static void draw_block_map(const fi_block_mask *bm) {
    int64_t *rows = malloc((size_t)(MASK_DRAW_MAX + 2) * sizeof *rows);
    int64_t *cols = malloc((size_t)(MASK_DRAW_MAX + 2) * sizeof *cols);
    if (!rows || !cols) {
        free(rows);
        free(cols);
        return;
    }
    const int64_t nr = sample_positions(0, bm->n_q_blocks, NULL, MASK_DRAW_MAX - 4, rows);
    const int64_t nc = sample_positions(0, bm->n_kv_blocks, NULL, MASK_DRAW_MAX - 4, cols);
    const int w = digits(rows[nr - 1]);
    print_column_labels(w, cols, nc, NULL);
    for (int64_t i = 0; i < nr; i++) {
        printf("%*lld ", w, (long long)rows[i]);
        for (int64_t j = 0; j < nc; j++) putchar("EPF"[fi_block_mask_kind(bm, 0, 0, rows[i], cols[j])]);
        putchar('\n');
    }
    free(rows);
    free(cols);
}

/* ---- PNG ----------------------------------------------------------------- */

/* A minimal PNG writer: 8-bit RGB, no filtering, zlib with "stored" (uncompressed)
 * deflate blocks, so only CRC-32 and Adler-32 are needed. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static bool png_chunk(FILE *f, const char type[4], const uint8_t *data, size_t n) {
    uint8_t head[8], tail[4];
    put_be32(head, (uint32_t)n);
    memcpy(head + 4, type, 4);
    uint32_t crc = crc32_update(0, head + 4, 4);
    crc = crc32_update(crc, data, n);
    put_be32(tail, crc);
    return fwrite(head, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(tail, 1, 4, f) == 4;
}

/* Writes the picture to an open file; rgb is height rows of width*3 bytes. */
static bool png_write(FILE *f, const uint8_t *rgb, uint32_t width, uint32_t height) {
    const size_t row_bytes = (size_t)width * 3 + 1, raw_len = row_bytes * height;
    const size_t n_blocks = (raw_len + 65534) / 65535;
    uint8_t *z = malloc(2 + raw_len + 5 * n_blocks + 4);
    if (!z) return false;
    size_t zn = 0, raw_pos = 0;
    z[zn++] = 0x78, z[zn++] = 0x01; /* deflate, 32K window, no preset dictionary */
    uint32_t a = 1, b = 0;          /* Adler-32 of the raw stream */
    size_t block_left = 0;
    for (uint32_t y = 0; y < height; y++)
        for (size_t x = 0; x < row_bytes; x++) {
            if (block_left == 0) {
                const size_t len = raw_len - raw_pos < 65535 ? raw_len - raw_pos : 65535;
                z[zn++] = raw_pos + len == raw_len ? 1 : 0;
                z[zn++] = (uint8_t)len, z[zn++] = (uint8_t)(len >> 8);
                z[zn++] = (uint8_t)~len, z[zn++] = (uint8_t)(~len >> 8);
                block_left = len;
            }
            const uint8_t v = x == 0 ? 0 : rgb[(size_t)y * width * 3 + x - 1];
            z[zn++] = v;
            a = (a + v) % 65521, b = (b + a) % 65521;
            raw_pos++, block_left--;
        }
    put_be32(z + zn, (b << 16) | a);
    zn += 4;
    uint8_t ihdr[13];
    put_be32(ihdr, width);
    put_be32(ihdr + 4, height);
    ihdr[8] = 8, ihdr[9] = 2, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0; /* 8-bit RGB */
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const bool ok = fwrite(signature, 1, 8, f) == 8 && png_chunk(f, "IHDR", ihdr, 13) &&
                    png_chunk(f, "IDAT", z, zn) && png_chunk(f, "IEND", NULL, 0);
    free(z);
    return ok;
}

/* One pixel per element up to MASK_PNG_MAX per side (small masks are magnified, long
 * ones sampled). Kept: blue (darker in FULL blocks); masked: light grey, tinted orange
 * inside PARTIAL blocks; segment boundaries: red lines. */
static bool write_mask_png(FILE *f, const fi_mask *m, const fi_mask_inputs *in, const int32_t *seg,
                           const fi_block_mask *bm, int64_t q_len, int64_t kv_len) {
    const int64_t longest = q_len > kv_len ? q_len : kv_len;
    int64_t scale = longest >= 256 ? 1 : 256 / longest;
    if (scale > 16) scale = 16;
    const int64_t w = kv_len * scale > MASK_PNG_MAX ? MASK_PNG_MAX : kv_len * scale;
    const int64_t h = q_len * scale > MASK_PNG_MAX ? MASK_PNG_MAX : q_len * scale;
    uint8_t *rgb = malloc((size_t)(w * h * 3));
    if (!rgb) return false;
    for (int64_t y = 0; y < h; y++) {
        const int64_t qi = y * q_len / h, q = in->q_offset + qi;
        const bool q_edge = seg && qi > 0 && y > 0 && (y - 1) * q_len / h != qi && seg[q] != seg[q - 1];
        for (int64_t x = 0; x < w; x++) {
            const int64_t kv = x * kv_len / w;
            const bool kv_edge = seg && kv > 0 && x > 0 && (x - 1) * kv_len / w != kv && seg[kv] != seg[kv - 1];
            const fi_block_kind kind = fi_block_mask_kind(bm, 0, 0, qi / bm->block_q, kv / bm->block_kv);
            uint8_t *px = rgb + (y * w + x) * 3;
            static const uint8_t kept_full[3] = {31, 62, 150}, kept_partial[3] = {66, 110, 210},
                                 masked[3] = {240, 240, 240}, masked_partial[3] = {255, 222, 190},
                                 edge[3] = {210, 40, 40};
            const uint8_t *c = q_edge || kv_edge ? edge
                               : fi_mask_keep(m, in, 0, 0, q, kv) ? (kind == FI_BLOCK_FULL ? kept_full : kept_partial)
                               : kind == FI_BLOCK_PARTIAL ? masked_partial
                                                          : masked;
            memcpy(px, c, 3);
        }
    }
    const bool ok = png_write(f, rgb, (uint32_t)w, (uint32_t)h);
    free(rgb);
    return ok;
}

/* ---- the command ----------------------------------------------------------- */

int cmd_mask(int argc, char **argv) {
    mask_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;

    fi_error err = {0};
    fi_mask *m = NULL;
    if (fi_mask_parse(o.expr, &m, &err) != FI_OK) {
        fprintf(stderr, "flexinfer mask: %s\n  %s\n", err.msg, o.expr);
        const char *col = strstr(err.msg, "column ");
        int column = 0;
        if (col && sscanf(col, "column %d", &column) == 1 && column >= 1 && (size_t)column <= strlen(o.expr) + 1)
            fprintf(stderr, "  %*s^\n", column - 1, "");
        return EXIT_BAD_INPUT;
    }
    segments seg = {0};
    if (o.segments_path && (rc = load_segments(&o, &seg))) {
        fi_mask_free(m);
        return rc;
    }
    const fi_mask_inputs in = {.segments = seg.ids, .segments_len = seg.len, .q_offset = o.q_offset};
    fi_block_mask *bm = NULL;
    int64_t *rows = NULL, *cols = NULL;
    FILE *png = NULL;
    const int64_t need = o.kv_len > o.q_offset + o.q_len ? o.kv_len : o.q_offset + o.q_len;
    const int64_t nqb = (o.q_len + o.block - 1) / o.block, nkb = (o.kv_len + o.block - 1) / o.block;
    rc = EXIT_BAD_INPUT;
    if (fi_mask_validate_inputs(m, &in, 1, o.q_len, o.kv_len, &err) != FI_OK) {
        fprintf(stderr, "flexinfer mask: %s\n", err.msg);
        goto done;
    }
    if (seg.ids && seg.len < need) { /* segments given for boundaries only: still must cover the problem */
        fprintf(stderr, "flexinfer mask: segment ids cover %lld positions but the problem needs %lld\n",
                (long long)seg.len, (long long)need);
        goto done;
    }
    if (nqb > MASK_MAX_BLOCK_CELLS / nkb) {
        fprintf(stderr, "flexinfer mask: %lld x %lld blocks is too many to draw; use a larger --block\n",
                (long long)nqb, (long long)nkb);
        goto done;
    }
    if (fi_block_mask_build(m, &in, 1, 1, o.q_len, o.kv_len, (int32_t)o.block, (int32_t)o.block, &bm, &err) !=
        FI_OK) {
        fprintf(stderr, "flexinfer mask: %s\n", err.msg);
        rc = err.code == FI_ERR_NOMEM ? 1 : EXIT_BAD_INPUT;
        goto done;
    }
    /* Opened before anything is printed, so an unwritable path fails cleanly. */
    if (o.png_path && !(png = fopen(o.png_path, "wb"))) {
        fprintf(stderr, "flexinfer mask: cannot write %s: %s\n", o.png_path, strerror(errno));
        goto done;
    }
    rc = 1;
    rows = malloc((MASK_DRAW_MAX + 2) * sizeof *rows);
    cols = malloc((MASK_DRAW_MAX + 2) * sizeof *cols);
    if (!rows || !cols) {
        fprintf(stderr, "flexinfer mask: out of memory\n");
        goto done;
    }
    const int64_t n_rows = sample_axis(o.q_offset, o.q_len, seg.ids, rows);
    const int64_t n_cols = sample_axis(0, o.kv_len, seg.ids, cols);

    char formatted[1024];
    fi_mask_format(m, formatted, sizeof formatted);
    printf("mask: %s\n", formatted);
    printf("queries: %lld (positions %lld..%lld), keys: %lld (positions 0..%lld)\n", (long long)o.q_len,
           (long long)o.q_offset, (long long)(o.q_offset + o.q_len - 1), (long long)o.kv_len,
           (long long)(o.kv_len - 1));
    if (n_rows < o.q_len || n_cols < o.kv_len)
        printf("sampled: %lld of %lld rows, %lld of %lld columns (labels are positions)\n", (long long)n_rows,
               (long long)o.q_len, (long long)n_cols, (long long)o.kv_len);
    printf("\n");
    draw_matrix(m, &in, seg.ids, rows, n_rows, cols, n_cols);

    printf("\nblock map (E empty, P partial, F full), blocks of %lld x %lld, %lld x %lld blocks:\n",
           (long long)o.block, (long long)o.block, (long long)nqb, (long long)nkb);
    draw_block_map(bm);

    /* Kept pairs: FULL blocks count whole, PARTIAL blocks are scanned; when the partial
     * area is too large to scan quickly, 1024 pseudo-random elements per partial block
     * estimate it (a regular grid would alias with periodic masks such as chunked). */
    int64_t computed = 0, partial_area = 0, n_kind[3] = {0};
    for (int64_t qb = 0; qb < nqb; qb++)
        for (int64_t kb = 0; kb < nkb; kb++) {
            const fi_block_kind kind = fi_block_mask_kind(bm, 0, 0, qb, kb);
            const int64_t area = fi_block_mask_q_rows(bm, qb) * fi_block_mask_kv_cols(bm, kb);
            n_kind[kind]++;
            if (kind != FI_BLOCK_EMPTY) computed += area;
            if (kind == FI_BLOCK_PARTIAL) partial_area += area;
        }
    const bool estimate = partial_area > MASK_MAX_SCAN;
    double kept = (double)(computed - partial_area);
    for (int64_t qb = 0; qb < nqb && partial_area; qb++)
        for (int64_t kb = 0; kb < nkb; kb++) {
            if (fi_block_mask_kind(bm, 0, 0, qb, kb) != FI_BLOCK_PARTIAL) continue;
            const int64_t nr = fi_block_mask_q_rows(bm, qb), nc = fi_block_mask_kv_cols(bm, kb);
            const int64_t samples = estimate ? 1024 : nr * nc;
            uint64_t state = (uint64_t)(qb * nkb + kb) * 0x9E3779B97F4A7C15ull;
            int64_t hits = 0;
            for (int64_t t = 0; t < samples; t++) {
                int64_t i = t / nc, j = t % nc;
                if (estimate) {
                    uint64_t z = (state += 0x9E3779B97F4A7C15ull); /* splitmix64 */
                    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
                    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
                    z ^= z >> 31;
                    i = (int64_t)((z >> 32) % (uint64_t)nr), j = (int64_t)((z & 0xffffffffu) % (uint64_t)nc);
                }
                hits += fi_mask_keep(m, &in, 0, 0, o.q_offset + qb * o.block + i, kb * o.block + j);
            }
            kept += (double)hits * (double)(nr * nc) / (double)samples;
        }
    const double total = (double)o.q_len * (double)o.kv_len;
    printf("\ndensity: kept %s%.0f / %.0f = %.4f; computed by blocks %lld / %.0f = %.4f "
           "(%lld full, %lld partial, %lld empty blocks)\n",
           estimate ? "~" : "", kept, total, kept / total, (long long)computed, total, (double)computed / total,
           (long long)n_kind[FI_BLOCK_FULL], (long long)n_kind[FI_BLOCK_PARTIAL], (long long)n_kind[FI_BLOCK_EMPTY]);

    rc = 0;
    if (png) {
        bool ok = write_mask_png(png, m, &in, seg.ids, bm, o.q_len, o.kv_len);
        ok = fclose(png) == 0 && ok;
        png = NULL;
        if (!ok) {
            fprintf(stderr, "flexinfer mask: cannot write %s: %s\n", o.png_path, strerror(errno));
            remove(o.png_path);
            rc = 1;
        } else {
            printf("wrote %s\n", o.png_path);
        }
    }
done:
    if (png) { /* failed before the picture was drawn */
        fclose(png);
        remove(o.png_path);
    }
    free(rows);
    free(cols);
    fi_block_mask_free(bm);
    free(seg.ids);
    fi_mask_free(m);
    return rc;
}
