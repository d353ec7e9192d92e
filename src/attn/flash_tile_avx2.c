/* AVX2 + FMA microkernels (16 ymm registers). Register blocking:
 *   QK, every row count (row-major Q and K, lanes over the head dimension, then a fixed
 *   tree over the 8 lanes): 3 keys x 4 query rows = 12 ymm accumulators. There is no Q^T
 *   kernel at this level (ops.qk is NULL): on Zen 3 the Q^T kernel was about 10% faster
 *   for prefill, but its per-score chain forces the few-row (decode) kernel to transpose
 *   K, which made decode about 20% slower; decode is bound by how fast a thread gets
 *   through its K/V stream.
 *   softmax: 8 rows per ymm, down the key axis.
 *   P.V: 3 rows x 32 output columns = 12 ymm accumulators, seeded with alpha * O; each
 *   32-column slab of V is used by all row groups of a 48-row chunk while it is in L1;
 *   below 16 rows (decode) 4 rows x 24 columns.
 *   With 16 or more rows, QK and P.V ask for the next K / V tile a few lines at a time
 *   (pf_cursor), so the driver does not (ops.kernels_prefetch_many_rows).
 * exp uses the same polynomial as the AVX-512 path (see flash_tile_avx512.c). */
#include <immintrin.h>
#include <math.h>

#include "attn/flash_tile.h"
#include "core/dtype.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Rows per chunk of the many-row P.V (a multiple of 3 and of 6). */
#define PV_ROW_CHUNK 48

/* exp(x): Cody-Waite reduction to |r| <= ln2/2, Taylor degree 7, exponent inserted;
 * ~2 ulp relative; x < -87 (including -inf) gives exactly 0. */
ALWAYS_INLINE __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860682030941723212e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* Prefill reads each K and V tile from L2 or L3 (a head's K/V does not stay in L2 between
 * query tiles). The many-row kernels therefore ask for the next tile (the same layout
 * nk keys on) a few lines at a time, spread evenly over their work: one burst of requests
 * per tile stalled the loads of the tile being computed. A wrong guess (the tile after is
 * masked out, or on another page) only wastes the requests. */
typedef struct pf_cursor {
    uintptr_t row;                  /* current row of the tile asked for (may lie past the buffer) */
    int64_t off, row_bytes, stride; /* byte offset in the row, bytes per row, row stride in bytes */
    int64_t left, per_step;         /* lines still to ask for, lines per pf_step */
} pf_cursor;

/* The nk x dimp tile that follows the one at tile (row stride ld), asked for in steps. */
static inline pf_cursor pf_cursor_init(const float *tile, int64_t ld, int64_t nk, int64_t dimp, int64_t steps) {
    pf_cursor c = {(uintptr_t)tile + (uintptr_t)(nk * ld) * sizeof(float), 0, dimp * (int64_t)sizeof(float),
                   ld * (int64_t)sizeof(float), 0, 0};
    c.left = nk * ((c.row_bytes + 63) / 64);
    c.per_step = steps > 0 ? (c.left + steps - 1) / steps : c.left;
    return c;
}

ALWAYS_INLINE void pf_step(pf_cursor *c) {
    for (int64_t i = 0; i < c->per_step && c->left > 0; i++, c->left--) {
        _mm_prefetch((const char *)(c->row + (uintptr_t)c->off), _MM_HINT_T0);
        c->off += 64;
        if (c->off >= c->row_bytes) c->off = 0, c->row += (uintptr_t)c->stride;
    }
}

/* Scores (both the prefill and the decode shapes use this one kernel): Q and K are read
 * row-major and SIMD lanes run over the head dimension. Lane p keeps one FMA chain over
 * c = p, p + 8, p + 16, ... in order (acc = 0; acc = fma(k[c], q[c], acc)), and the eight
 * lane sums x0..x7 are added as ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)). Every
 * score is computed this way whatever the block shape, so a row's scores do not depend on
 * the rows that share its call (row invariance, docs/attention-cpu.md). No broadcasts and
 * no transposes: a K row is loaded once per block and used by 4 query rows. */

/* Lane sums of four accumulators, in the order above: lane i of the result is the score of
 * accumulator i. hadd adds neighbouring lanes within each 128-bit half. */
ALWAYS_INLINE __m256 qk_hadd(__m256 a, __m256 b) {
    /* = _mm256_hadd_ps(a, b), as two one-uop shuffles and an add (vhaddps is slower on Zen 3) */
    return _mm256_add_ps(_mm256_shuffle_ps(a, b, 0x88), _mm256_shuffle_ps(a, b, 0xDD));
}

ALWAYS_INLINE __m128 qk_reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 ab = qk_hadd(a, b); /* a0+a1 a2+a3 b0+b1 b2+b3 | a4+a5 a6+a7 b4+b5 b6+b7 */
    const __m256 cd = qk_hadd(c, d);
    const __m256 s = qk_hadd(ab, cd); /* (a0+a1)+(a2+a3) ... | (a4+a5)+(a6+a7) ... */
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* Scores of nr <= 4 rows (stride ldq) against nkk <= 3 keys (stride ldk): 12 accumulators,
 * 3 K and 4 Q loads per 12 FMAs. st[kk * lds + r]. With pf, asks for the same keys one tile
 * (nk_tile keys) on, one line per 16 columns (decode streams K from memory). */
ALWAYS_INLINE void qk_block(const float *q, int64_t ldq, const int nr, const float *k, int64_t ldk, const int nkk,
                            int64_t dimp, float *st, int64_t lds, const bool pf, int64_t nk_tile) {
    __m256 acc[3][4];
#pragma GCC unroll 4
    for (int kk = 0; kk < 3; kk++)
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[kk][r] = _mm256_setzero_ps();
    const uintptr_t next = (uintptr_t)k + (uintptr_t)(nk_tile * ldk) * sizeof(float); /* may lie past K */
    for (int64_t c = 0; c < dimp; c += 8) {
        if (pf && (c & 15) == 0)
#pragma GCC unroll 4
            for (int kk = 0; kk < nkk; kk++)
                _mm_prefetch((const char *)(next + (uintptr_t)(kk * ldk + c) * sizeof(float)), _MM_HINT_T0);
        __m256 kv[3];
#pragma GCC unroll 4
        for (int kk = 0; kk < nkk; kk++) kv[kk] = _mm256_loadu_ps(k + kk * ldk + c);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const __m256 qv = _mm256_loadu_ps(q + r * ldq + c);
#pragma GCC unroll 4
            for (int kk = 0; kk < nkk; kk++) acc[kk][r] = _mm256_fmadd_ps(kv[kk], qv, acc[kk][r]);
        }
    }
#pragma GCC unroll 4
    for (int kk = 0; kk < nkk; kk++) {
        const __m128 s = qk_reduce4(acc[kk][0], acc[kk][1], acc[kk][2], acc[kk][3]);
        if (nr == 4) {
            _mm_storeu_ps(st + kk * lds, s);
        } else {
            float t[4];
            _mm_storeu_ps(t, s);
            for (int r = 0; r < nr; r++) st[kk * lds + r] = t[r];
        }
    }
}

ALWAYS_INLINE void qk_rows_n(const float *q, int64_t ldq, const int nr, const float *k, int64_t ldk, int64_t nk,
                             int64_t dimp, float *st, int64_t lds, const bool pf) {
    int64_t j = 0;
    for (; j + 3 <= nk; j += 3) qk_block(q, ldq, nr, k + j * ldk, ldk, 3, dimp, st + j * lds, lds, pf, nk);
    if (nk - j == 2) qk_block(q, ldq, nr, k + j * ldk, ldk, 2, dimp, st + j * lds, lds, pf, nk);
    if (nk - j == 1) qk_block(q, ldq, nr, k + j * ldk, ldk, 1, dimp, st + j * lds, lds, pf, nk);
}

/* The qk_rows operation (flash_tile.h), for any row count; the driver uses it for prefill
 * too, since this level has no Q^T kernel (ops.qk is NULL). */
static void qk_rows(const float *q, int64_t ldq, int64_t rows, const float *k, int64_t ldk, int64_t nk,
                    int64_t dimp, float *st, int64_t lds) {
    /* Few rows (decode): K is streamed, not reused; ask for the next tile's K while
     * working, spread over the tile. Many rows: the driver's per-tile prefetch suffices. */
    const bool pf = rows < 16;
    if (!pf) {
        /* Many rows: chunks of 24 keys (12 KiB of K at D 128) stay in L1 while every row
         * group reads them; a whole K tile would be read from L2 once per row group. */
        pf_cursor pfc = pf_cursor_init(k, ldk, nk, dimp, (nk + 23) / 24 * ((rows + 3) / 4));
        for (int64_t j0 = 0; j0 < nk; j0 += 24) {
            const int64_t nj = nk - j0 < 24 ? nk - j0 : 24;
            const float *kj = k + j0 * ldk;
            float *sj = st + j0 * lds;
            int64_t r = 0;
            for (; r + 4 <= rows; r += 4) {
                pf_step(&pfc);
                qk_rows_n(q + r * ldq, ldq, 4, kj, ldk, nj, dimp, sj + r, lds, false);
            }
            switch (rows - r) {
            case 3: qk_rows_n(q + r * ldq, ldq, 3, kj, ldk, nj, dimp, sj + r, lds, false); break;
            case 2: qk_rows_n(q + r * ldq, ldq, 2, kj, ldk, nj, dimp, sj + r, lds, false); break;
            case 1: qk_rows_n(q + r * ldq, ldq, 1, kj, ldk, nj, dimp, sj + r, lds, false); break;
            default: break;
            }
        }
        return;
    }
    /* Few rows (decode): the first row group also asks for the next tile's K. */
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) qk_rows_n(q + r * ldq, ldq, 4, k, ldk, nk, dimp, st + r, lds, r == 0);
    switch (rows - r) {
    case 3: qk_rows_n(q + r * ldq, ldq, 3, k, ldk, nk, dimp, st + r, lds, r == 0); break;
    case 2: qk_rows_n(q + r * ldq, ldq, 2, k, ldk, nk, dimp, st + r, lds, r == 0); break;
    case 1: qk_rows_n(q + r * ldq, ldq, 1, k, ldk, nk, dimp, st + r, lds, r == 0); break;
    default: break;
    }
}

static void softmax(float *st, int64_t lds, int64_t rowsp, int64_t nk, float *m, float *l, float *alpha) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t r = 0; r < rowsp; r += 8) {
        const __m256 mo = _mm256_loadu_ps(m + r);
        __m256 mx = mo;
        for (int64_t j = 0; j < nk; j++) mx = _mm256_max_ps(mx, _mm256_loadu_ps(st + j * lds + r));
        /* Rows with nothing kept yet use 0 in the exponent: exp(-inf - 0) = 0. */
        const __m256 ms = _mm256_blendv_ps(mx, _mm256_setzero_ps(), _mm256_cmp_ps(mx, ninf, _CMP_EQ_OQ));
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < nk; j++) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(st + j * lds + r), ms));
            _mm256_storeu_ps(st + j * lds + r, e);
            sum = _mm256_add_ps(sum, e);
        }
        const __m256 a = exp256(_mm256_sub_ps(mo, ms));
        _mm256_storeu_ps(alpha + r, a);
        _mm256_storeu_ps(l + r, _mm256_fmadd_ps(_mm256_loadu_ps(l + r), a, sum));
        _mm256_storeu_ps(m + r, mx);
    }
}

/* O rows r .. r + nr - 1 (nr <= 6), 16 columns: 12 accumulators seeded with alpha * O,
 * 2 V loads and nr broadcasts of P per key. The chain per output element (alpha * O,
 * then one FMA per key in key order) is the same for every nr (row invariance). */
ALWAYS_INLINE void pv_block(const float *pt, int64_t ldp, const int nr, int64_t nk, const float *v,
                            int64_t ldv, const float *alpha, float *o, int64_t ldo) {
    __m256 acc[6][2];
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) {
        const __m256 a = _mm256_set1_ps(alpha[r]);
        acc[r][0] = _mm256_mul_ps(a, _mm256_loadu_ps(o + r * ldo));
        acc[r][1] = _mm256_mul_ps(a, _mm256_loadu_ps(o + r * ldo + 8));
    }
    for (int64_t j = 0; j < nk; j++) {
        const __m256 v0 = _mm256_loadu_ps(v + j * ldv), v1 = _mm256_loadu_ps(v + j * ldv + 8);
#pragma GCC unroll 16
        for (int r = 0; r < nr; r++) {
            const __m256 b = _mm256_broadcast_ss(pt + j * ldp + r);
            acc[r][0] = _mm256_fmadd_ps(b, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, v1, acc[r][1]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) {
        _mm256_storeu_ps(o + r * ldo, acc[r][0]);
        _mm256_storeu_ps(o + r * ldo + 8, acc[r][1]);
    }
}

/* O rows r .. r + nr - 1 (nr <= 3), 32 columns: 12 accumulators, 4 V loads and nr
 * broadcasts of P per key (half the broadcasts per FMA of pv_block). Same chain. */
ALWAYS_INLINE void pv_block32(const float *pt, int64_t ldp, const int nr, int64_t nk, const float *v,
                              int64_t ldv, const float *alpha, float *o, int64_t ldo, const bool pf) {
    __m256 acc[3][4];
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) {
        const __m256 a = _mm256_set1_ps(alpha[r]);
#pragma GCC unroll 4
        for (int z = 0; z < 4; z++) acc[r][z] = _mm256_mul_ps(a, _mm256_loadu_ps(o + r * ldo + 8 * z));
    }
    for (int64_t j = 0; j < nk; j++) {
        const float *vj = v + j * ldv;
        if (pf) { /* these columns of the same key one tile on (see qk_block) */
            const uintptr_t next = (uintptr_t)vj + (uintptr_t)(nk * ldv) * sizeof(float); /* may lie past V */
            _mm_prefetch((const char *)next, _MM_HINT_T0);
            _mm_prefetch((const char *)(next + 16 * sizeof(float)), _MM_HINT_T0);
        }
        const __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
        const __m256 v2 = _mm256_loadu_ps(vj + 16), v3 = _mm256_loadu_ps(vj + 24);
#pragma GCC unroll 16
        for (int r = 0; r < nr; r++) {
            const __m256 b = _mm256_broadcast_ss(pt + j * ldp + r);
            acc[r][0] = _mm256_fmadd_ps(b, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, v1, acc[r][1]);
            acc[r][2] = _mm256_fmadd_ps(b, v2, acc[r][2]);
            acc[r][3] = _mm256_fmadd_ps(b, v3, acc[r][3]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int z = 0; z < 4; z++) _mm256_storeu_ps(o + r * ldo + 8 * z, acc[r][z]);
}

/* O rows r .. r + nr - 1 (nr <= 4), 8 * nz columns (nz <= 3): for few rows (decode),
 * 4 rows x 24 columns = 12 accumulators, 3 V loads and 4 P broadcasts per 12 FMAs (the
 * 3 + 1 row passes of pv_block32 need 8 loads and 4 broadcasts per 16). With pf (first
 * column block of the first row pass), asks for the whole V row (row_bytes) of the same
 * key one tile (nk keys) on; spreading the requests over the blocks cost more than it
 * saved in cache. Same chain per output element as the other P.V blocks. */
ALWAYS_INLINE void pv_few_block(const float *pt, int64_t ldp, const int nr, const int nz, int64_t nk,
                                const float *v, int64_t ldv, int64_t row_bytes, const float *alpha, float *o,
                                int64_t ldo, const bool pf) {
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        const __m256 a = _mm256_set1_ps(alpha[r]);
#pragma GCC unroll 3
        for (int z = 0; z < nz; z++) acc[r][z] = _mm256_mul_ps(a, _mm256_loadu_ps(o + r * ldo + 8 * z));
    }
    const uintptr_t next = (uintptr_t)v + (uintptr_t)(nk * ldv) * sizeof(float); /* may lie past V */
    for (int64_t j = 0; j < nk; j++) {
        const float *vj = v + j * ldv;
        if (pf)
            for (int64_t off = 0; off < row_bytes; off += 64)
                _mm_prefetch((const char *)(next + (uintptr_t)(j * ldv) * sizeof(float) + (uintptr_t)off), _MM_HINT_T0);
        __m256 vv[3];
#pragma GCC unroll 3
        for (int z = 0; z < nz; z++) vv[z] = _mm256_loadu_ps(vj + 8 * z);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const __m256 b = _mm256_broadcast_ss(pt + j * ldp + r);
#pragma GCC unroll 3
            for (int z = 0; z < nz; z++) acc[r][z] = _mm256_fmadd_ps(b, vv[z], acc[r][z]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 3
        for (int z = 0; z < nz; z++) _mm256_storeu_ps(o + r * ldo + 8 * z, acc[r][z]);
}

ALWAYS_INLINE void pv_few_rows(const float *pt, int64_t ldp, const int nr, int64_t nk, const float *v, int64_t ldv,
                               int64_t dimp, const float *alpha, float *o, int64_t ldo, const bool pf) {
    const int64_t row_bytes = dimp * (int64_t)sizeof(float);
    int64_t c = 0;
    for (; c + 24 <= dimp; c += 24)
        pv_few_block(pt, ldp, nr, 3, nk, v + c, ldv, row_bytes, alpha, o + c, ldo, pf && c == 0);
    if (dimp - c == 16) pv_few_block(pt, ldp, nr, 2, nk, v + c, ldv, row_bytes, alpha, o + c, ldo, pf && c == 0);
    if (dimp - c == 8) pv_few_block(pt, ldp, nr, 1, nk, v + c, ldv, row_bytes, alpha, o + c, ldo, pf && c == 0);
}

static void pv(const float *pt, int64_t ldp, int64_t rows, int64_t nk, const float *v, int64_t ldv,
               int64_t dimp, const float *alpha, float *o, int64_t ldo) {
    /* Few rows (decode): V is streamed, not reused; ask for the next tile's V during the
     * first column block. */
    if (rows < 16) {
        int64_t r = 0;
        for (; r + 4 <= rows; r += 4) pv_few_rows(pt + r, ldp, 4, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, r == 0);
        switch (rows - r) {
        case 3: pv_few_rows(pt + r, ldp, 3, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, r == 0); break;
        case 2: pv_few_rows(pt + r, ldp, 2, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, r == 0); break;
        case 1: pv_few_rows(pt + r, ldp, 1, nk, v, ldv, dimp, alpha + r, o + r * ldo, ldo, r == 0); break;
        default: break;
        }
        return;
    }
    /* Many rows: a 32-column slab of V (nk x 128 bytes, 8 KiB for a 64-key tile) is used by
     * every row group of a chunk of PV_ROW_CHUNK rows while it sits in L1, with that chunk's
     * part of P^T (64 keys x 48 rows, 12 KiB). Row groups outside the column loop read the
     * whole V tile from L2 once per 3 rows, and the FMAs waited on those loads. */
    pf_cursor pfc = pf_cursor_init(v, ldv, nk, dimp, (rows + 2) / 3 * (dimp / 32));
    for (int64_t r0 = 0; r0 < rows; r0 += PV_ROW_CHUNK) {
        int64_t r1 = r0 + PV_ROW_CHUNK < rows ? r0 + PV_ROW_CHUNK : rows;
        /* A single row left over from the groups of 3 (16-row blocks of masked tiles, the
         * last 16 rows of a 64-row tile) would run at 4 FMAs per broadcast: it joins the
         * last group as 4 rows x 24 columns instead. */
        const int64_t r_end = r1;
        if ((r1 - r0) % 3 == 1 && r1 - r0 >= 4) r1 -= 4;
        int64_t c = 0;
        for (; c + 32 <= dimp; c += 32) {
            int64_t r = r0;
            for (; r + 3 <= r1; r += 3, pf_step(&pfc))
                pv_block32(pt + r, ldp, 3, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo, false);
            if (r1 - r == 2) pv_block32(pt + r, ldp, 2, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo, false);
            if (r1 - r == 1) pv_block32(pt + r, ldp, 1, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo, false);
        }
        if (c < dimp) { /* 16 columns left (dimp is a multiple of 16) */
            int64_t r = r0;
            for (; r + 6 <= r1; r += 6) pv_block(pt + r, ldp, 6, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo);
            switch (r1 - r) {
            case 5: pv_block(pt + r, ldp, 5, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo); break;
            case 4: pv_block(pt + r, ldp, 4, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo); break;
            case 3: pv_block(pt + r, ldp, 3, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo); break;
            case 2: pv_block(pt + r, ldp, 2, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo); break;
            case 1: pv_block(pt + r, ldp, 1, nk, v + c, ldv, alpha + r, o + r * ldo + c, ldo); break;
            default: break;
            }
        }
        if (r1 < r_end) pv_few_rows(pt + r1, ldp, 4, nk, v, ldv, dimp, alpha + r1, o + r1 * ldo, ldo, false);
    }
}

static void load_scaled(const void *src, fi_dtype t, float scale, float *dst, int64_t n) {
    const __m256 vs = _mm256_set1_ps(scale);
    int64_t i = 0;
    switch (t) {
    case FI_DTYPE_F16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(vs, _mm256_cvtph_ps(_mm_loadu_si128(
                                                           (const __m128i *)((const uint16_t *)src + i)))));
        break;
    case FI_DTYPE_BF16:
        for (; i + 8 <= n; i += 8) {
            const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i)));
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(vs, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16))));
        }
        break;
    default:
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_mul_ps(vs, _mm256_loadu_ps((const float *)src + i)));
        break;
    }
    for (; i < n; i++) dst[i] = scale * fi_load_f32(src, t, i);
}

const fi_flash_tile_ops fi_flash_tile_avx2 = {
    .qk = NULL, .qk_rows = qk_rows, .softmax = softmax, .pv = pv,
    .load_scaled = load_scaled, .softmax_row_step = 8,
    .kernels_prefetch_many_rows = true, .block_q_one_head = 128};
