/* Device helpers shared by the prefill and decode kernels: row addressing for
 * dense, varlen and paged K/V, the mask program, score modifiers, and thin
 * wrappers over cp.async / ldmatrix / mma.sync. */
#ifndef FI_CUDA_DEVICE_COMMON_CUH
#define FI_CUDA_DEVICE_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda/kernel_params.h"

#define FI_LOG2E 1.4426950408889634f
#define FI_LN2 0.6931471805599453f

/* ---- problem geometry ---------------------------------------------------- */

__device__ __forceinline__ int64_t fi_dev_q_len(const fi_cuda_attn_kparams &p, int b) {
    return p.varlen ? (int64_t)(p.cu_q[b + 1] - p.cu_q[b]) : p.q_len;
}

__device__ __forceinline__ int64_t fi_dev_kv_len(const fi_cuda_attn_kparams &p, int b) {
    if (p.paged) return p.seq_lens[b];
    return p.varlen ? (int64_t)(p.cu_k[b + 1] - p.cu_k[b]) : p.kv_len;
}

/* Element offset of query row i (sequence b, head h). */
__device__ __forceinline__ int64_t fi_dev_q_offset(const fi_cuda_attn_kparams &p, int b, int h,
                                                    int64_t i) {
    if (p.varlen) return h * p.q_sh + ((int64_t)p.cu_q[b] + i) * p.q_sl;
    return b * p.q_sb + h * p.q_sh + i * p.q_sl;
}

/* Pointer to key (is_v false) or value row j of KV head hk of sequence b. */
template <typename T>
__device__ __forceinline__ const T *fi_dev_kv_row(const fi_cuda_attn_kparams &p, bool is_v, int b,
                                                  int hk, int64_t j, int dim) {
    if (p.paged) {
        const int64_t page = p.page_table[b * p.max_pages + j / p.page_size];
        const int64_t off = ((page * p.hkv + hk) * p.page_size + j % p.page_size) * dim;
        return (const T *)(is_v ? p.v_pages : p.k_pages) + off;
    }
    const T *base = (const T *)(is_v ? p.v : p.k);
    const int64_t sb = is_v ? p.v_sb : p.k_sb, sh = is_v ? p.v_sh : p.k_sh,
                  sl = is_v ? p.v_sl : p.k_sl;
    if (p.varlen) return base + hk * sh + ((int64_t)p.cu_k[b] + j) * sl;
    return base + b * sb + hk * sh + j * sl;
}

__device__ __forceinline__ int64_t fi_dev_out_row(const fi_cuda_attn_kparams &p, int b, int h,
                                                   int64_t i) {
    if (p.varlen) return (int64_t)h * p.q_total + p.cu_q[b] + i;
    return ((int64_t)b * p.hq + h) * p.q_total + i;
}

/* Row of the block-mask lists for (b, h, q block), with broadcasting. */
__device__ __forceinline__ int64_t fi_dev_bm_row(const fi_cuda_attn_kparams &p, int b, int h,
                                                  int qb) {
    const int64_t bb = p.bm_batch == 1 ? 0 : b, hh = p.bm_heads == 1 ? 0 : h;
    return (bb * p.bm_heads + hh) * p.n_q_blocks + qb;
}

/* ---- mask program ---------------------------------------------------------- */

__device__ __forceinline__ const int32_t *fi_dev_segments(const fi_cuda_attn_kparams &p, int b) {
    return p.seg_batch ? p.segments + (int64_t)b * p.seg_len : p.segments;
}

/* Evaluates the postfix mask program for logical positions (q, kv); seg is the
 * sequence's segment row (or NULL), seg_q the query's segment id (read once per row). */
/* Callers keep it out of unrolled loops: one inlined copy per kernel. */
__device__ __forceinline__ bool fi_dev_mask_keep(const fi_cuda_attn_kparams &p, const int32_t *seg,
                                                 int32_t seg_q, int64_t q, int64_t kv) {
    uint32_t stack = 0;
    for (int i = 0; i < p.n_ops; i++) {
        const int32_t op = p.ops[i].op;
        const int64_t a = p.ops[i].param;
        uint32_t v;
        switch (op) {
        case FI_CUDA_OP_FULL: v = 1; break;
        case FI_CUDA_OP_CAUSAL: v = kv <= q; break;
        case FI_CUDA_OP_WINDOW: v = (q - kv < a) && (kv - q < a); break;
        case FI_CUDA_OP_PREFIX: v = kv < a; break;
        case FI_CUDA_OP_CHUNKED: v = (q / a) == (kv / a); break;
        case FI_CUDA_OP_DOCUMENT: v = seg_q == seg[kv]; break;
        case FI_CUDA_OP_GENERATED: v = seg_q < 0; break;
        case FI_CUDA_OP_AND: {
            const uint32_t x = stack & 1u;
            stack >>= 1;
            stack = (stack & ~1u) | (stack & x);
            continue;
        }
        case FI_CUDA_OP_OR: {
            const uint32_t x = stack & 1u;
            stack >>= 1;
            stack |= x;
            continue;
        }
        case FI_CUDA_OP_NOT: stack ^= 1u; continue;
        default: v = 0; break;
        }
        stack = (stack << 1) | v;
    }
    return stack & 1u;
}

/* ---- mask program as per-row key intervals --------------------------------- */

/* Every built-in primitive keeps, for a fixed query position q, one interval of key
 * positions (document: the run of q's segment id when the ids are sorted), and AND
 * of intervals is an interval. So for most programs the whole mask of a query row is
 * one interval [lo, hi), computed once per row instead of evaluating the program
 * per element. OR of disjoint intervals, NOT of an inner interval and document with
 * unsorted ids have no such form: the function then returns false and callers fall
 * back to fi_dev_mask_keep. Unbounded ends are +-FI_DEV_POS_INF. */
#define FI_DEV_POS_INF ((int64_t)1 << 60)
#define FI_DEV_MASK_STACK 8

__device__ __forceinline__ int64_t fi_dev_clamp_param(int64_t a) {
    /* Positions are far below 2^40, so clamping keeps every test's result and
     * leaves the interval arithmetic free of overflow. */
    const int64_t lim = (int64_t)1 << 40;
    return a < -lim ? -lim : (a > lim ? lim : a);
}

/* First index in seg[0, n) whose id is > id (upper) or >= id (!upper); seg sorted. */
__device__ __forceinline__ int64_t fi_dev_seg_bound(const int32_t *seg, int64_t n, int32_t id, bool upper) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = (lo + hi) >> 1;
        const int32_t s = seg[mid];
        if (upper ? s <= id : s < id) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

__device__ __forceinline__ bool fi_dev_mask_has_op(const fi_cuda_attn_kparams &p, int32_t op) {
    for (int i = 0; i < p.n_ops; i++)
        if (p.ops[i].op == op) return true;
    return false;
}

/* CTA-wide (every thread calls it): the document run [*run_lo, *run_hi) of query
 * position q_first + t for thread t < n_rows (n_rows <= NT = blockDim.x), for a
 * sequence whose segment ids are sorted (p.seg_sorted). Runs inside the CTA's rows
 * come from its ids in shared memory (s_ids: NT ints); only the runs reaching past
 * the first and the last row need the global array, found by a 128-ary search
 * whose rounds (each one load per thread and one barrier) replace the dependent
 * loads of a binary search: two rounds for 16K positions. */
template <int NT>
__device__ __forceinline__ void fi_dev_doc_runs_cta(const fi_cuda_attn_kparams &p, const int32_t *seg,
                                                    int64_t q_first, int n_rows, int32_t *s_ids,
                                                    int64_t *run_lo, int64_t *run_hi) {
    const int t = threadIdx.x;
    if (n_rows <= 0) return; /* uniform: no barrier is skipped by some threads only */
    if (t < n_rows) s_ids[t] = seg[q_first + t];
    __syncthreads();
    const int32_t id_first = s_ids[0], id_last = s_ids[n_rows - 1];
    /* lo: first index of [a_lo, a_hi] with seg >= id_first (seg[a_hi] == id_first);
     * hi: first index of [b_lo, b_hi] with seg > id_last (b_hi = seg_len: none). */
    int64_t a_lo = 0, a_hi = q_first, b_lo = q_first + n_rows, b_hi = p.seg_len;
    while (a_lo < a_hi || b_lo < b_hi) {
        const int64_t sa = (a_hi - a_lo + NT - 1) / NT, sb = (b_hi - b_lo + NT - 1) / NT;
        const int64_t xa = a_lo + t * sa, xb = b_lo + t * sb;
        const bool pa = a_lo < a_hi && xa < a_hi && seg[xa] < id_first;
        const bool pb = b_lo < b_hi && xb < b_hi && seg[xb] <= id_last;
        const int ca = __syncthreads_count(pa), cb = __syncthreads_count(pb);
        if (a_lo < a_hi) {
            if (ca == 0) a_hi = a_lo;
            else a_lo = a_lo + (ca - 1) * sa + 1, a_hi = a_lo - 1 + sa < a_hi ? a_lo - 1 + sa : a_hi;
        }
        if (b_lo < b_hi) {
            if (cb == 0) b_hi = b_lo;
            else b_lo = b_lo + (cb - 1) * sb + 1, b_hi = b_lo - 1 + sb < b_hi ? b_lo - 1 + sb : b_hi;
        }
    }
    if (t < n_rows) {
        const int32_t id = s_ids[t];
        int l = 0, h = t; /* first row of this id in the CTA (ids sorted) */
        while (l < h) {
            const int m = (l + h) >> 1;
            if (s_ids[m] < id) l = m + 1;
            else h = m;
        }
        *run_lo = l == 0 ? a_lo : q_first + l;
        l = t + 1, h = n_rows; /* first row after this id's rows */
        while (l < h) {
            const int m = (l + h) >> 1;
            if (s_ids[m] <= id) l = m + 1;
            else h = m;
        }
        *run_hi = l == n_rows ? b_lo : q_first + l;
    }
    __syncthreads(); /* s_ids may be reused */
}

/* Kept keys of query position q (logical, q_offset included) under the mask program:
 * [*lo, *hi) (empty when *lo >= *hi); false when the program has no single-interval
 * form for this row. seg: the sequence's segment row or NULL. [doc_lo, doc_hi): the
 * run of q's segment id when the caller has it (fi_dev_doc_runs_cta), else doc_lo < 0
 * and document leaves binary-search it. No program (n_ops 0) keeps everything.
 * Meant to run once per query row, outside the key loop. */
static __device__ __noinline__ bool fi_dev_mask_row_interval(const fi_cuda_attn_kparams &p, const int32_t *seg,
                                                             int64_t q, int64_t doc_lo, int64_t doc_hi,
                                                             int64_t *lo, int64_t *hi) {
    const int64_t INF = FI_DEV_POS_INF;
    int64_t slo[FI_DEV_MASK_STACK], shi[FI_DEV_MASK_STACK];
    int top = 0; /* entries on the stack */
    *lo = -INF, *hi = INF;
    for (int i = 0; i < p.n_ops; i++) {
        const int32_t op = p.ops[i].op;
        const int64_t a = fi_dev_clamp_param(p.ops[i].param);
        int64_t l, h;
        switch (op) {
        case FI_CUDA_OP_FULL: l = -INF, h = INF; break;
        case FI_CUDA_OP_CAUSAL: l = -INF, h = q + 1; break;
        case FI_CUDA_OP_WINDOW: l = q - a + 1, h = q + a; break;
        case FI_CUDA_OP_PREFIX: l = -INF, h = a; break;
        case FI_CUDA_OP_CHUNKED:
            if (a <= 0) return false;
            l = q / a * a, h = l + a;
            break;
        case FI_CUDA_OP_DOCUMENT: {
            if (!seg || !p.seg_sorted) return false;
            if (doc_lo >= 0) {
                l = doc_lo, h = doc_hi;
            } else {
                const int32_t id = seg[q];
                l = fi_dev_seg_bound(seg, p.seg_len, id, false);
                h = fi_dev_seg_bound(seg, p.seg_len, id, true);
            }
            break;
        }
        case FI_CUDA_OP_GENERATED:
            if (!seg) return false;
            l = -INF, h = seg[q] < 0 ? INF : -INF;
            break;
        case FI_CUDA_OP_AND:
        case FI_CUDA_OP_OR: {
            if (top < 2) return false;
            const int64_t l1 = slo[top - 1], h1 = shi[top - 1], l0 = slo[top - 2], h0 = shi[top - 2];
            top -= 2;
            if (op == FI_CUDA_OP_AND) {
                l = l0 > l1 ? l0 : l1, h = h0 < h1 ? h0 : h1;
            } else if (l1 >= h1) {
                l = l0, h = h0;
            } else if (l0 >= h0) {
                l = l1, h = h1;
            } else {
                if ((l0 > l1 ? l0 : l1) > (h0 < h1 ? h0 : h1)) return false; /* disjoint */
                l = l0 < l1 ? l0 : l1, h = h0 > h1 ? h0 : h1;
            }
            break;
        }
        case FI_CUDA_OP_NOT: {
            if (top < 1) return false;
            const int64_t l0 = slo[top - 1], h0 = shi[top - 1];
            top--;
            if (l0 >= h0) l = -INF, h = INF;
            else if (l0 <= -INF && h0 >= INF) l = INF, h = -INF;
            else if (l0 <= -INF) l = h0, h = INF;
            else if (h0 >= INF) l = -INF, h = l0;
            else return false; /* two pieces */
            break;
        }
        default: l = INF, h = -INF; break; /* unknown leaf: keeps nothing, as fi_dev_mask_keep */
        }
        if (top == FI_DEV_MASK_STACK) return false;
        slo[top] = l, shi[top] = h;
        top++;
    }
    if (top == 0) return p.n_ops == 0;
    *lo = slo[top - 1], *hi = shi[top - 1];
    return true;
}

/* The PARTIAL and FULL key-block lists of query block qb of (b, h), trimmed to the
 * blocks of bn keys that start before kv_len (varlen and paged sequences are shorter
 * than the longest one the block mask was built for). */
struct fi_dev_block_lists {
    const int32_t *part, *full;
    int n_part, n_full;
};
__device__ __forceinline__ fi_dev_block_lists fi_dev_row_block_lists(const fi_cuda_attn_kparams &p, int b, int h,
                                                                     int qb, int bn, int64_t kv_len) {
    const int64_t row = fi_dev_bm_row(p, b, h, qb);
    fi_dev_block_lists l = {p.kv_idx + row * p.n_kv_blocks, p.full_idx + row * p.n_kv_blocks, p.kv_num[row],
                            p.full_num[row]};
    while (l.n_part > 0 && (int64_t)l.part[l.n_part - 1] * bn >= kv_len) l.n_part--;
    while (l.n_full > 0 && (int64_t)l.full[l.n_full - 1] * bn >= kv_len) l.n_full--;
    return l;
}

/* CTA-wide (every thread calls it): the kept key interval [s_lo[r], s_hi[r]) of each
 * of the CTA's query rows q0 + r, r < BM, computed once by threads 0..BM-1 (NT =
 * blockDim.x >= BM), clamped to [0, kv_len); rows past q_len keep nothing. Returns, to
 * every thread, whether every row has a single-interval form; when not, the caller
 * evaluates the mask per element in PARTIAL blocks. */
template <int NT, int BM>
__device__ __forceinline__ bool fi_dev_cta_row_intervals(const fi_cuda_attn_kparams &p, const int32_t *seg,
                                                         int64_t q0, int64_t q_len, int64_t kv_len, int32_t *s_lo,
                                                         int32_t *s_hi) {
    static_assert(NT >= BM, "one query row per thread");
    const int tid = threadIdx.x;
    int64_t lo = 0, hi = 0, doc_lo = -1, doc_hi = -1;
    if (seg && p.seg_sorted && fi_dev_mask_has_op(p, FI_CUDA_OP_DOCUMENT)) /* s_lo as scratch */
        fi_dev_doc_runs_cta<NT>(p, seg, p.q_offset + q0, (int)(q_len - q0 < BM ? q_len - q0 : BM), s_lo, &doc_lo,
                                &doc_hi);
    bool ok = kv_len <= 0x7fffffff;
    if (tid < BM) {
        const int64_t row = q0 + tid;
        if (ok && row < q_len) {
            ok = fi_dev_mask_row_interval(p, seg, p.q_offset + row, doc_lo, doc_hi, &lo, &hi);
            lo = lo < 0 ? 0 : lo;
            hi = hi > kv_len ? kv_len : hi;
            if (hi < lo) hi = lo;
        }
        s_lo[tid] = (int32_t)lo, s_hi[tid] = (int32_t)hi;
    }
    return __syncthreads_and(ok); /* also publishes the rows */
}

/* Accumulator fragments of mma.sync m16n8 (and wgmma) tiles: a thread holds, in each
 * 8-column group g, the columns 8g + 2*(lane & 3) + {0, 1}. Its j-th column
 * (j = 2g + parity) is kept iff lo <= column < hi (tile-relative). Returns the bits
 * of the kept j (NCOLS = the tile's columns, at most 256), a contiguous run since
 * the columns grow with j: two counts instead of a test per element. */
template <int NCOLS>
__device__ __forceinline__ uint64_t fi_dev_frag_col_bits(int64_t lo, int64_t hi, int lane) {
    static_assert(NCOLS % 8 == 0 && NCOLS <= 256, "columns per thread must fit 64 bits");
    const int c0 = 2 * (lane & 3);
    /* Number of this thread's columns below x. */
    auto below = [&](int64_t x) -> int {
        int64_t y = x - c0;
        y = y < 0 ? 0 : (y > NCOLS ? NCOLS : y);
        const int yi = (int)y;
        return 2 * (yi >> 3) + ((yi & 7) < 2 ? (yi & 7) : 2);
    };
    const int jl = below(lo), jh = below(hi);
    const uint64_t upto_h = jh >= 64 ? ~0ull : ((1ull << jh) - 1);
    const uint64_t upto_l = jl >= 64 ? ~0ull : ((1ull << jl) - 1);
    return upto_h & ~upto_l;
}

/* Hooks for run-time compiled expressions: the NVRTC build of the kernels
 * (nvrtc_program.cu) defines these before including this header; the nvcc-built
 * kernels keep the identities, so they are unchanged. FI_DEV_USER_MASK is ANDed
 * with the mask program; FI_DEV_USER_SCORE runs after the built-in modifiers. */
#ifdef FI_DEV_USER_MASK
#define FI_DEV_HAS_USER_MASK 1 /* a user mask is evaluated per element: no interval fast path */
#else
#define FI_DEV_HAS_USER_MASK 0
#define FI_DEV_USER_MASK(p, b, h, q, kv) true
#endif
#ifndef FI_DEV_USER_SCORE
#define FI_DEV_USER_SCORE(p, s, b, h, q, kv) (s)
#endif

/* Applies the score modifiers to a scaled score. */
__device__ __forceinline__ float fi_dev_score_mod(const fi_cuda_attn_kparams &p, float s, int h,
                                                  int64_t q, int64_t kv) {
    for (int i = 0; i < p.n_steps; i++) {
        if (p.step_kind[i] == FI_CUDA_SCORE_SOFTCAP)
            s = p.step_cap[i] * tanhf(s / p.step_cap[i]);
        else
            s += p.alibi_slopes[h] * (float)(kv - q);
    }
    return s;
}

/* ---- PTX wrappers ----------------------------------------------------------- */

/* 2^x on the special-function unit; 2^-inf = +0. */
__device__ __forceinline__ float fi_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ uint32_t fi_smem_addr(const void *ptr) {
    return (uint32_t)__cvta_generic_to_shared(ptr);
}

/* 16-byte global->shared copy; src_bytes 0 zero-fills the destination. */
__device__ __forceinline__ void fi_cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes));
}
/* L2 policy for data read once (decode's K/V stream): its lines are the first to be
 * evicted, so the stream replaces its own lines instead of pushing other (possibly
 * dirty, hence written back) lines out of L2. */
__device__ __forceinline__ uint64_t fi_l2_policy_evict_first() {
    uint64_t policy;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
    return policy;
}
/* fi_cp_async16 with an L2 cache policy. */
__device__ __forceinline__ void fi_cp_async16_policy(uint32_t dst, const void *src, int src_bytes,
                                                     uint64_t policy) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes), "l"(policy));
}
__device__ __forceinline__ void fi_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void fi_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void fi_ldmatrix_x4(uint32_t addr, uint32_t &r0, uint32_t &r1,
                                               uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void fi_ldmatrix_x4_trans(uint32_t addr, uint32_t &r0, uint32_t &r1,
                                                     uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

template <typename T> struct fi_is_bf16 { static constexpr bool value = false; };
template <> struct fi_is_bf16<__nv_bfloat16> { static constexpr bool value = true; };

template <typename T> struct fi_mma;

template <> struct fi_mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float *d, const uint32_t *a, uint32_t b0,
                                               uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float2 unpack(uint32_t x) {
        __nv_bfloat162 v = *reinterpret_cast<__nv_bfloat162 *>(&x);
        return __bfloat1622float2(v);
    }
};

template <> struct fi_mma<__half> {
    static __device__ __forceinline__ void run(float *d, const uint32_t *a, uint32_t b0,
                                               uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float2 unpack(uint32_t x) {
        __half2 v = *reinterpret_cast<__half2 *>(&x);
        return __half22float2(v);
    }
};

#endif
