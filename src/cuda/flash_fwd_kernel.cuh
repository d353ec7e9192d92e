/* Flash attention forward on tensor cores (mma.sync m16n8k16, bf16/f16 in, f32
 * accumulate), FlashAttention-2 style.
 *
 * One CTA = one 128-row query block of one (sequence, query head); 4 warps, each
 * owning 32 query rows. The CTA walks the key blocks named by the block mask
 * (PARTIAL list, then FULL list; EMPTY blocks are never touched). K/V tiles are
 * double-buffered in shared memory with cp.async; shared rows are XOR-swizzled in
 * 16-byte chunks so ldmatrix reads are free of bank conflicts. Scores stay in
 * registers: S = Q K^T, online softmax in base 2 (the scale folded into one FMA
 * per element), then the probabilities are repacked as the A operand of P V.
 *
 * PARTIAL blocks mask with one kept key interval per query row when the mask
 * program has that form (every built-in primitive and their AND; document with
 * sorted segment ids), computed once per CTA, else evaluate the mask program per
 * element; FULL blocks evaluate no mask, only the bound check of a ragged last key
 * block. */
#ifndef FI_CUDA_FLASH_FWD_KERNEL_CUH
#define FI_CUDA_FLASH_FWD_KERNEL_CUH

#include "cuda/device_common.cuh"

#define FI_FLASH_BM 128
#define FI_FLASH_WARPS 4
#define FI_FLASH_MT 2 /* 16-row m-tiles per warp: BM = 16 * MT * WARPS */

template <int D> struct fi_flash_tile {
    static constexpr int BN = 64; /* keys per block */
};

template <int D, int BN, typename T>
__host__ __device__ constexpr int fi_flash_smem_bytes() {
    return (FI_FLASH_BM * D + 4 * BN * D) * (int)sizeof(T);
}

/* Swizzled element offset of (row, 16-byte chunk) in a tile with D columns. */
template <int D>
__device__ __forceinline__ int fi_swz(int row, int chunk) {
    return row * D + ((chunk ^ (row & 7)) << 3);
}

/* kTransform: scores are turned into base-2 logits element by element (score
 * modifiers, or a non-positive scale); otherwise the scale is folded into exp2.
 * Each warp owns FI_FLASH_MT m-tiles of 16 rows, so every K/V fragment read from
 * shared memory feeds FI_FLASH_MT tensor-core ops (shared-memory bandwidth, not the
 * tensor cores, bounds a warp that owns only 16 rows). */
template <int D, typename T, bool kTransform>
__global__ void __launch_bounds__(FI_FLASH_WARPS * 32, 2)
    fi_flash_fwd_kernel(const __grid_constant__ fi_cuda_attn_kparams p) {
    constexpr int BM = FI_FLASH_BM, BN = fi_flash_tile<D>::BN, NT = FI_FLASH_WARPS * 32;
    constexpr int MT = FI_FLASH_MT;
    constexpr int CH = D / 8;   /* 16-byte chunks per row */
    constexpr int NTS = BN / 8; /* n-tiles of S */
    constexpr int NTO = D / 8;  /* n-tiles of O */
    constexpr int KS = D / 16;  /* k-steps of Q K^T */
    extern __shared__ __align__(128) unsigned char fi_smem[];
    T *sQ = reinterpret_cast<T *>(fi_smem);
    T *sK = sQ + BM * D;
    T *sV = sK + 2 * BN * D;

    const int qb = gridDim.x - 1 - blockIdx.x; /* heavy (late, causal) blocks first */
    const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
    const int64_t q_len = fi_dev_q_len(p, b), kv_len = fi_dev_kv_len(p, b);
    const int64_t q0 = (int64_t)qb * BM;
    if (q0 >= q_len) return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

    /* Block lists of this row, trimmed to this sequence's keys (varlen / paged). */
    const fi_dev_block_lists bl = fi_dev_row_block_lists(p, b, h, qb, BN, kv_len);
    const int32_t *part = bl.part, *full = bl.full;
    const int n_part = bl.n_part, n_full = bl.n_full, n_blocks = n_part + n_full;

    /* This thread's query rows: m-tile mt, half rr. */
    int64_t rows[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        rows[mt][0] = q0 + warp * (16 * MT) + mt * 16 + (lane >> 2);
        rows[mt][1] = rows[mt][0] + 8;
    }

    if (n_blocks == 0) { /* every key masked: O = 0, LSE = -inf */
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            for (int rr = 0; rr < 2; rr++) {
                if (rows[mt][rr] >= q_len) continue;
                float *o = p.out + fi_dev_out_row(p, b, h, rows[mt][rr]) * D;
                for (int c = (lane & 3) * 2; c < D; c += 8) *reinterpret_cast<float2 *>(o + c) = make_float2(0.f, 0.f);
                if (p.lse && (lane & 3) == 0) p.lse[fi_dev_out_row(p, b, h, rows[mt][rr])] = -INFINITY;
            }
        return;
    }

    /* Q tile: rows beyond q_len are zero-filled. */
    {
        const T *qbase = reinterpret_cast<const T *>(p.q);
        for (int id = tid; id < BM * CH; id += NT) {
            const int r = id / CH, c = id % CH;
            const bool ok = q0 + r < q_len;
            const T *src = ok ? qbase + fi_dev_q_offset(p, b, h, q0 + r) + c * 8 : qbase;
            fi_cp_async16(fi_smem_addr(sQ + fi_swz<D>(r, c)), src, ok ? 16 : 0);
        }
    }
    auto block_at = [&](int it) { return it < n_part ? part[it] : full[it - n_part]; };
    auto load_kv = [&](int kvb, int stage) {
        T *dK = sK + stage * BN * D, *dV = sV + stage * BN * D;
        for (int id = tid; id < BN * CH; id += NT) {
            const int r = id / CH, c = id % CH;
            const int64_t j = (int64_t)kvb * BN + r;
            const bool ok = j < kv_len;
            const T *ks = ok ? fi_dev_kv_row<T>(p, false, b, hk, j, D) + c * 8 : reinterpret_cast<const T *>(p.q);
            const T *vs = ok ? fi_dev_kv_row<T>(p, true, b, hk, j, D) + c * 8 : reinterpret_cast<const T *>(p.q);
            fi_cp_async16(fi_smem_addr(dK + fi_swz<D>(r, c)), ks, ok ? 16 : 0);
            fi_cp_async16(fi_smem_addr(dV + fi_swz<D>(r, c)), vs, ok ? 16 : 0);
        }
    };
    load_kv(block_at(0), 0);
    fi_cp_async_commit();

    const int32_t *seg = p.segments ? fi_dev_segments(p, b) : nullptr;

    /* PARTIAL blocks: when the mask program is one key interval per query row (see
     * fi_dev_mask_row_interval), each thread computes that of one row here, once,
     * while the first copies fly; the tiles then mask with two counts per row. */
    static_assert(NT == BM, "one query row per thread");
    __shared__ int32_t s_row_lo[BM], s_row_hi[BM];
    const bool fast = n_part > 0 && !FI_DEV_HAS_USER_MASK &&
                      fi_dev_cta_row_intervals<NT, BM>(p, seg, q0, q_len, kv_len, s_row_lo, s_row_hi);

    const float f = kTransform ? 1.0f : p.scale_log2;
    float o_acc[MT][NTO][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < NTO; i++) o_acc[mt][i][0] = o_acc[mt][i][1] = o_acc[mt][i][2] = o_acc[mt][i][3] = 0.f;
    float m_run[MT][2], l_run[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) m_run[mt][0] = m_run[mt][1] = -INFINITY, l_run[mt][0] = l_run[mt][1] = 0.f;

    for (int it = 0; it < n_blocks; it++) {
        const int stage = it & 1;
        if (it + 1 < n_blocks) {
            load_kv(block_at(it + 1), stage ^ 1);
            fi_cp_async_commit();
            fi_cp_async_wait<1>();
        } else {
            fi_cp_async_wait<0>();
        }
        __syncthreads();
        const T *tK = sK + stage * BN * D, *tV = sV + stage * BN * D;
        const int kvb = block_at(it);
        const int64_t kv0 = (int64_t)kvb * BN;

        /* S = Q K^T for this warp's rows; Q fragments come from shared memory. */
        float s[MT][NTS][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < NTS; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                const int r = warp * (16 * MT) + mt * 16 + (lane & 15), c = kk * 2 + (lane >> 4);
                fi_ldmatrix_x4(fi_smem_addr(sQ + fi_swz<D>(r, c)), qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3]);
            }
#pragma unroll
            for (int np = 0; np < NTS / 2; np++) {
                const int mi = lane >> 3;
                const int n = np * 16 + (mi >> 1) * 8 + (lane & 7), c = kk * 2 + (mi & 1);
                uint32_t b0, b1, b2, b3;
                fi_ldmatrix_x4(fi_smem_addr(tK + fi_swz<D>(n, c)), b0, b1, b2, b3);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    fi_mma<T>::run(s[mt][2 * np], qa[mt], b0, b1);
                    fi_mma<T>::run(s[mt][2 * np + 1], qa[mt], b2, b3);
                }
            }
        }

        /* Mask (PARTIAL blocks, ragged last block) and score modifiers. Keep bit
         * (mt * 2 + rr) * 2 * NTS + j covers this thread's column j = 2 * nt + (e & 1)
         * of row half rr = e >> 1. Fast PARTIAL blocks and ragged FULL blocks take the
         * bits from a kept interval per row; other PARTIAL blocks evaluate the mask
         * program per element in a rolled loop (one inlined copy, no call that would
         * spill the accumulators). */
        const bool partial = it < n_part;
        const bool ragged = kv0 + BN > kv_len;
        if (kTransform || partial || ragged) {
            constexpr int RB = 2 * NTS; /* keep bits per row */
            static_assert(MT * 2 * RB <= 64, "keep bits must fit one word");
            uint64_t keep_bits = 0;
            if (partial && !fast) {
#pragma unroll 1
                for (int idx = 0; idx < MT * 2 * RB; idx++) {
                    const int mt = idx / (2 * RB), rr = (idx / RB) & 1, j = idx % RB;
                    const int64_t row = q0 + warp * (16 * MT) + mt * 16 + (lane >> 2) + rr * 8;
                    const int64_t kv = kv0 + (j >> 1) * 8 + (lane & 3) * 2 + (j & 1);
                    bool keep = kv < kv_len;
                    if (keep) {
                        const int64_t qpos = p.q_offset + row;
                        keep = row < q_len && fi_dev_mask_keep(p, seg, seg ? seg[qpos] : 0, qpos, kv) &&
                               FI_DEV_USER_MASK(p, b, h, qpos, kv);
                    }
                    keep_bits |= (uint64_t)keep << idx;
                }
            } else {
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int rr = 0; rr < 2; rr++) {
                        int64_t lo = 0, hi = kv_len;
                        if (partial) {
                            const int r = warp * (16 * MT) + mt * 16 + (lane >> 2) + rr * 8;
                            lo = s_row_lo[r], hi = s_row_hi[r];
                        }
                        keep_bits |= fi_dev_frag_col_bits<BN>(lo - kv0, hi - kv0, lane) << ((mt * 2 + rr) * RB);
                    }
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < NTS; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int idx = (mt * 2 + (e >> 1)) * RB + nt * 2 + (e & 1);
                        float x = s[mt][nt][e];
                        if (kTransform) {
                            const int64_t kv = kv0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                            const int64_t qpos = p.q_offset + rows[mt][e >> 1];
                            x = fi_dev_score_mod(p, x * p.scale, h, qpos, kv);
                            x = FI_DEV_USER_SCORE(p, x, b, h, qpos, kv) * FI_LOG2E;
                        }
                        s[mt][nt][e] = (keep_bits >> idx) & 1 ? x : -INFINITY;
                    }
        }

        /* Online softmax (base 2). */
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                float mx = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < NTS; nt++) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * rr], s[mt][nt][2 * rr + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m_run[mt][rr], mx);
                /* A row with no kept key so far keeps max -inf: use 0 so that
                 * exp2(-inf - 0) = 0 instead of NaN. */
                const float m_use = m_new == -INFINITY ? 0.f : m_new * f;
                const float alpha = fi_ex2(m_run[mt][rr] * f - m_use);
                m_run[mt][rr] = m_new;
                float rs = 0.f;
#pragma unroll
                for (int nt = 0; nt < NTS; nt++) {
                    const float p0 = fi_ex2(fmaf(s[mt][nt][2 * rr], f, -m_use));
                    const float p1 = fi_ex2(fmaf(s[mt][nt][2 * rr + 1], f, -m_use));
                    s[mt][nt][2 * rr] = p0;
                    s[mt][nt][2 * rr + 1] = p1;
                    rs += p0 + p1;
                }
                l_run[mt][rr] = l_run[mt][rr] * alpha + rs;
#pragma unroll
                for (int dt = 0; dt < NTO; dt++) {
                    o_acc[mt][dt][2 * rr] *= alpha;
                    o_acc[mt][dt][2 * rr + 1] *= alpha;
                }
            }

        /* O += P V: probabilities repacked as the A operand. */
#pragma unroll
        for (int j = 0; j < BN / 16; j++) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                a[mt][0] = fi_mma<T>::pack(s[mt][2 * j][0], s[mt][2 * j][1]);
                a[mt][1] = fi_mma<T>::pack(s[mt][2 * j][2], s[mt][2 * j][3]);
                a[mt][2] = fi_mma<T>::pack(s[mt][2 * j + 1][0], s[mt][2 * j + 1][1]);
                a[mt][3] = fi_mma<T>::pack(s[mt][2 * j + 1][2], s[mt][2 * j + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < NTO / 2; dp++) {
                const int mi = lane >> 3;
                const int r = j * 16 + (mi & 1) * 8 + (lane & 7), c = dp * 2 + (mi >> 1);
                uint32_t b0, b1, b2, b3;
                fi_ldmatrix_x4_trans(fi_smem_addr(tV + fi_swz<D>(r, c)), b0, b1, b2, b3);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    fi_mma<T>::run(o_acc[mt][2 * dp], a[mt], b0, b1);
                    fi_mma<T>::run(o_acc[mt][2 * dp + 1], a[mt], b2, b3);
                }
            }
        }
        __syncthreads(); /* this stage is refilled by the next iteration's prefetch */
    }

    /* Finalise: O / l, LSE = ln 2 * (m + log2 l); empty rows give 0 and -inf. */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            float l = l_run[mt][rr];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = l > 0.f ? 1.f / l : 0.f;
            if (rows[mt][rr] >= q_len) continue;
            const int64_t orow = fi_dev_out_row(p, b, h, rows[mt][rr]);
            float *o = p.out + orow * D + (lane & 3) * 2;
#pragma unroll
            for (int dt = 0; dt < NTO; dt++)
                *reinterpret_cast<float2 *>(o + dt * 8) =
                    make_float2(o_acc[mt][dt][2 * rr] * inv, o_acc[mt][dt][2 * rr + 1] * inv);
            if (p.lse && (lane & 3) == 0)
                p.lse[orow] = l > 0.f ? (m_run[mt][rr] * f + log2f(l)) * FI_LN2 : -INFINITY;
        }
}

#endif
