/* Flash attention forward for Hopper on warpgroup MMAs (wgmma), FlashAttention-3
 * style; built only for sm_90a (cmake/cuda.cmake) and chosen by dispatch.cu on
 * compute capability 9.0 (the mma.sync kernel, flash_fwd_kernel.cuh, stays the
 * portable one and takes score modifiers and run-time compiled expressions).
 *
 * One CTA = 128 query rows of one (sequence, query head): a producer warpgroup that
 * copies K/V tiles (key blocks of 128) into a 3-stage shared-memory ring with
 * cp.async and mbarriers (per-row addressing, so GQA, varlen and paged K/V work as
 * in the portable kernel), and two consumer warpgroups of 64 rows. Tiles are stored
 * in the layout wgmma reads natively: 64-column panels of 128-byte rows with the
 * hardware's 128-byte XOR swizzle (16-byte chunk ^ row % 8). S = Q K^T is D/16
 * wgmma m64n128k16 with both operands in shared memory (K-major); the online softmax
 * runs in registers on the accumulator, whose per-warp layout is the mma.sync m16n8
 * C layout repeated along N; P is rounded to the input type in registers and is the
 * A operand of O += P V (V read MN-major, i.e. transposed by the descriptor).
 * Masking, LSE and empty rows follow the portable kernel exactly (same device
 * helpers, same base-2 softmax). */
#ifndef FI_CUDA_FLASH_FWD_WGMMA_CUH
#define FI_CUDA_FLASH_FWD_WGMMA_CUH

#include "cuda/device_common.cuh"
#include "cuda/launch.h"

#include <cuda.h>
#include <string.h>

#include <type_traits>

#define FI_WG_BM 128 /* query rows per CTA: two warpgroups of 64 */
#define FI_WG_BN FI_CUDA_WGMMA_BLOCK_KV
#define FI_WG_STAGES 3
#define FI_WG_THREADS 384 /* a producer warpgroup and two consumer warpgroups */

/* Dynamic shared memory: Q, the K/V ring, and slack to align the base to the
 * 1024-byte swizzle period. */
template <int D, typename T>
__host__ __device__ constexpr int fi_wg_smem_bytes() {
    return (FI_WG_BM * D + FI_WG_STAGES * 2 * FI_WG_BN * D) * (int)sizeof(T) + 1024;
}

/* ---- wgmma wrappers (m64nNk16, f32 accumulators) -------------------------- */

template <typename T, int N> struct fi_wg_mma;

/* The accumulator operand lists of m64n64 (32 registers) and m64n128 (64 registers). */
#define FI_WG_REGS32 \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
    "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define FI_WG_REGS64 \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
    "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, " \
    "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, " \
    "%59, %60, %61, %62, %63"
#define FI_WG_OUTS32 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define FI_WG_OUTS64 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

/* One specialisation per (input type, N): TY is the type's PTX name; REGS/OUTS the
 * accumulator operands; P_SS/P_RS the predicate operand of ss/rs; A0..A3 the operands
 * after the accumulators (da, db of ss; the A registers of rs) and DB rs's B descriptor. */
#define FI_WG_MMA_SPECIALIZE(T, TY, N, REGS, OUTS, P_SS, P_RS, A0, A1, A2, A3, DB)                                    \
    template <> struct fi_wg_mma<T, N> {                                                                           \
        /* d = A B (+ d if accumulate); A and B from shared memory, both K-major. */                               \
        static __device__ __forceinline__ void ss(float *d, uint64_t da, uint64_t db, int accumulate) {            \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " P_SS ", 0;\n"                                          \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " {" REGS "}, "               \
                         A0 ", " A1 ", p, 1, 1, 0, 0;\n}\n"                                                         \
                         : OUTS                                                                                    \
                         : "l"(da), "l"(db), "r"(accumulate));                                                     \
        }                                                                                                          \
        /* d += A B; A from registers (m16n8k16 A-fragment layout per warp), B MN-major. */                        \
        static __device__ __forceinline__ void rs(float *d, const uint32_t *a, uint64_t db) {                      \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " P_RS ", 0;\n"                                          \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " {" REGS "}, "               \
                         "{" A0 ", " A1 ", " A2 ", " A3 "}, " DB ", p, 1, 1, 1;\n}\n"                               \
                         : OUTS                                                                                    \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));                           \
        }                                                                                                          \
    };

FI_WG_MMA_SPECIALIZE(__nv_bfloat16, "bf16", 64, FI_WG_REGS32, FI_WG_OUTS32, "%34", "%37", "%32", "%33", "%34", "%35", "%36")
FI_WG_MMA_SPECIALIZE(__nv_bfloat16, "bf16", 128, FI_WG_REGS64, FI_WG_OUTS64, "%66", "%69", "%64", "%65", "%66", "%67", "%68")
FI_WG_MMA_SPECIALIZE(__half, "f16", 64, FI_WG_REGS32, FI_WG_OUTS32, "%34", "%37", "%32", "%33", "%34", "%35", "%36")
FI_WG_MMA_SPECIALIZE(__half, "f16", 128, FI_WG_REGS64, FI_WG_OUTS64, "%66", "%69", "%64", "%65", "%66", "%67", "%68")

__device__ __forceinline__ void fi_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void fi_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void fi_wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Makes this thread's generic-proxy shared-memory writes (cp.async) visible to the
 * async proxy that wgmma reads through. */
__device__ __forceinline__ void fi_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/* Keeps the compiler from moving accesses of an accumulator across the asynchronous MMA. */
template <int N>
__device__ __forceinline__ void fi_wg_pin(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* Shared-memory matrix descriptor with the 128-byte swizzle; offsets in bytes.
 * K-major operands: sbo = 1024 (next 8 rows), lbo unused. MN-major operands:
 * lbo = distance of the next 64-column panel, sbo = 1024 (next 8 k-rows). */
__device__ __forceinline__ uint64_t fi_wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32) |
           (1ull << 62);
}

/* Byte offset of (row, 16-byte chunk c) in a tile of ROWS rows: 64-column panels of
 * ROWS x 128 bytes, chunk index XORed with row % 8 (the 128-byte swizzle). */
template <int ROWS>
__device__ __forceinline__ uint32_t fi_wg_swz(int row, int c) {
    return (uint32_t)((c >> 3) * ROWS * 128 + row * 128 + (((c & 7) ^ (row & 7)) << 4));
}

__device__ __forceinline__ void fi_mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void fi_mbar_arrive(uint32_t bar) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}
/* Arrives on the barrier once all of this thread's earlier cp.async copies have
 * landed (counted as one of the barrier's expected arrivals). */
__device__ __forceinline__ void fi_cp_async_mbar_arrive(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void fi_mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}
/* Arrives on the barrier and raises the bytes it waits for by `bytes` (TMA copies). */
__device__ __forceinline__ void fi_mbar_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(bar),
                 "r"(bytes)
                 : "memory");
}
/* TMA copy of one box of a 4-d tensor map into shared memory; completion is counted
 * in bytes on the barrier. */
__device__ __forceinline__ void fi_tma_load_4d(uint32_t dst, const CUtensorMap *map, int c0, int c1, int c2, int c3,
                                               uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
                 : "memory");
}

/* TMA descriptors of Q, K and V ([batch, heads, len, D] views with any strides), built
 * on the host for dense problems; the boxes are 64 columns x 128 rows with the
 * 128-byte swizzle, i.e. exactly one panel of a tile. */
struct fi_wg_tmaps {
    CUtensorMap q, k, v;
};

/* Named barriers (0 is __syncthreads): the consumer warpgroups' turn-taking. */
__device__ __forceinline__ void fi_named_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void fi_named_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

/* Warp-specialised CTA: warpgroup 0 copies, warpgroups 1 and 2 compute 64 query rows
 * each. Stage i of the ring holds K of block i and V of block i - 1: iteration i
 * issues S_i = Q K_i and O += P_{i-1} V_{i-1} together (the previous block's
 * probabilities stay in registers), so a stage is consumed in one iteration; the
 * stages not being read are all in flight. The consumers take turns on the tensor cores (named
 * barriers 1 and 2): one issues its MMAs while the other runs its softmax. */
template <int D, typename T, bool kTma>
__global__ void __launch_bounds__(FI_WG_THREADS, 1)
    fi_flash_fwd_wgmma_kernel(const __grid_constant__ fi_cuda_attn_kparams p, const __grid_constant__ fi_wg_tmaps tm) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int BM = FI_WG_BM, BN = FI_WG_BN, ST = FI_WG_STAGES;
    constexpr int CH = D / 8;             /* 16-byte chunks per row */
    constexpr int NS = BN / 2, NO = D / 2; /* S and O accumulators per thread */
    constexpr uint32_t TILE_Q = BM * D * sizeof(T), TILE_KV = BN * D * sizeof(T);
    extern __shared__ unsigned char fi_smem[];
    __shared__ __align__(8) uint64_t bars[2 * ST]; /* full[ST], empty[ST] */
    const uint32_t sQ = (fi_smem_addr(fi_smem) + 1023u) & ~1023u;
    const uint32_t sKV = sQ + TILE_Q; /* stage s: K at sKV + 2 s TILE_KV, V right after */
    const uint32_t full_bar = fi_smem_addr(bars), empty_bar = full_bar + ST * 8;

    const int qb = gridDim.x - 1 - blockIdx.x; /* heavy (late, causal) blocks first */
    const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
    const int64_t q_len = fi_dev_q_len(p, b), kv_len = fi_dev_kv_len(p, b);
    const int64_t q0 = (int64_t)qb * BM;
    if (q0 >= q_len) return;
    const int tid = threadIdx.x;

    /* Block lists of this row, trimmed to this sequence's keys (varlen / paged). */
    const fi_dev_block_lists bl = fi_dev_row_block_lists(p, b, h, qb, BN, kv_len);
    const int32_t *part = bl.part, *full = bl.full;
    const int n_part = bl.n_part, n_full = bl.n_full, n_blocks = n_part + n_full;
    auto block_at = [&](int it) { return it < n_part ? part[it] : full[it - n_part]; };

    if (n_blocks == 0) { /* every key masked: O = 0, LSE = -inf */
        for (int id = tid; id < BM * D / 2; id += FI_WG_THREADS) {
            const int64_t row = q0 + id / (D / 2);
            if (row >= q_len) continue;
            const int64_t orow = fi_dev_out_row(p, b, h, row);
            *reinterpret_cast<float2 *>(p.out + orow * D + (id % (D / 2)) * 2) = make_float2(0.f, 0.f);
            if (p.lse && id % (D / 2) == 0) p.lse[orow] = -INFINITY;
        }
        return;
    }
    if (tid == 0) {
        for (int s = 0; s < ST; s++) {
            fi_mbar_init(full_bar + s * 8, kTma ? 1 : 128); /* the TMA thread, or every producer thread */
            fi_mbar_init(empty_bar + s * 8, 256); /* every consumer thread */
        }
    }

    /* PARTIAL blocks: when the mask program is one key interval per query row (see
     * fi_dev_mask_row_interval), the first 128 threads compute those of the CTA's rows
     * here, once, before the roles split; the tiles then mask with two counts per row
     * instead of evaluating the program per element. */
    const int32_t *seg = p.segments ? fi_dev_segments(p, b) : nullptr;
    __shared__ int32_t s_row_lo[BM], s_row_hi[BM];
    const bool fast = n_part > 0 && !FI_DEV_HAS_USER_MASK &&
                      fi_dev_cta_row_intervals<FI_WG_THREADS, BM>(p, seg, q0, q_len, kv_len, s_row_lo, s_row_hi);
    __syncthreads();

    if (tid < 128) {
        /* Producer: cp.async with per-row addressing (dense, varlen, paged), rows past
         * the sequence zero-filled. The copies themselves signal a stage's full
         * barrier when they land (the producer never waits for them), so every free
         * stage of the ring is in flight; the block index is read one stage ahead. */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n");
        if constexpr (kTma) {
            /* Dense K/V: one thread issues the TMA copies of a stage (one box per
             * 64-column panel; rows past the tensor are zero-filled by the copy). */
            if (tid != 0) return;
            int kvb_prev = 0, kvb = block_at(0);
            for (int it = 0; it <= n_blocks; it++) {
                const int s = it % ST;
                const int kvb_next = it + 1 < n_blocks ? block_at(it + 1) : 0;
                if (it >= ST) fi_mbar_wait(empty_bar + s * 8, ((it / ST) & 1) ^ 1);
                const uint32_t bar = full_bar + s * 8, dK = sKV + s * 2 * TILE_KV;
                fi_mbar_expect_tx(bar, (it == 0 ? TILE_Q : 0u) + (it < n_blocks ? TILE_KV : 0u) + (it > 0 ? TILE_KV : 0u));
#pragma unroll
                for (int pnl = 0; pnl < D / 64; pnl++) {
                    if (it == 0) fi_tma_load_4d(sQ + pnl * BM * 128, &tm.q, pnl * 64, (int)q0, h, b, bar);
                    if (it < n_blocks) fi_tma_load_4d(dK + pnl * BN * 128, &tm.k, pnl * 64, kvb * BN, hk, b, bar);
                    if (it > 0) fi_tma_load_4d(dK + TILE_KV + pnl * BN * 128, &tm.v, pnl * 64, kvb_prev * BN, hk, b, bar);
                }
                kvb_prev = kvb, kvb = kvb_next;
            }
            return;
        }
        const int c = tid % CH, r0 = tid / CH;
        constexpr int RSTEP = 128 / CH;
        {
            const T *qbase = reinterpret_cast<const T *>(p.q);
            for (int r = r0; r < BM; r += RSTEP) {
                const bool ok = q0 + r < q_len;
                const T *src = ok ? qbase + fi_dev_q_offset(p, b, h, q0 + r) + c * 8 : qbase;
                fi_cp_async16(sQ + fi_wg_swz<BM>(r, c), src, ok ? 16 : 0);
            }
        }
        const T *kbase = p.paged ? nullptr : fi_dev_kv_row<T>(p, false, b, hk, 0, D) + c * 8;
        const T *vbase = p.paged ? nullptr : fi_dev_kv_row<T>(p, true, b, hk, 0, D) + c * 8;
        auto load_rows = [&](uint32_t dst, bool is_v, int64_t j0) {
#pragma unroll 4
            for (int r = r0; r < BN; r += RSTEP) {
                const int64_t j = j0 + r;
                const bool ok = j < kv_len;
                const T *src = reinterpret_cast<const T *>(p.q);
                if (ok) {
                    if (p.paged) src = fi_dev_kv_row<T>(p, is_v, b, hk, j, D) + c * 8;
                    else src = is_v ? vbase + j * p.v_sl : kbase + j * p.k_sl;
                }
                fi_cp_async16(dst + fi_wg_swz<BN>(r, c), src, ok ? 16 : 0);
            }
        };
        int kvb_prev = 0, kvb = block_at(0);
        for (int it = 0; it <= n_blocks; it++) { /* stage it: K_it (it < n), V_{it-1} (it > 0) */
            const int s = it % ST;
            const int kvb_next = it + 1 < n_blocks ? block_at(it + 1) : 0;
            if (it >= ST) fi_mbar_wait(empty_bar + s * 8, ((it / ST) & 1) ^ 1);
            const uint32_t dK = sKV + s * 2 * TILE_KV;
            if (it < n_blocks) load_rows(dK, false, (int64_t)kvb * BN);
            if (it > 0) load_rows(dK + TILE_KV, true, (int64_t)kvb_prev * BN);
            fi_cp_async_mbar_arrive(full_bar + s * 8);
            kvb_prev = kvb, kvb = kvb_next;
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory"); /* nothing in flight when the thread exits */
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n");
    const int wg = (tid >> 7) - 1, warp = (tid >> 5) & 3, lane = tid & 31;
    /* This thread's two query rows (accumulator rows lane/4 and lane/4 + 8 of its warp). */
    const int64_t rows[2] = {q0 + wg * 64 + warp * 16 + (lane >> 2), q0 + wg * 64 + warp * 16 + (lane >> 2) + 8};
    const float f = p.scale_log2;
    float o_acc[NO];
#pragma unroll
    for (int i = 0; i < NO; i++) o_acc[i] = 0.f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    uint32_t a[BN / 16][4]; /* P_{i-1} as A-fragments (keys 16 j .. 16 j + 15 per k-step) */
    if (wg == 1) fi_named_arrive(1, 256); /* warpgroup 0 goes first */

    /* O += P_{i-1} V_{i-1}: V k-step j starts 16 rows (2048 bytes) further, its next
     * 64 columns one panel (BN x 128 bytes) further. */
    auto issue_pv = [&](uint32_t tV) {
#pragma unroll
        for (int j = 0; j < BN / 16; j++) fi_wg_mma<T, D>::rs(o_acc, a[j], fi_wg_desc(tV + j * 16 * 128, BN * 128, 1024));
        fi_wg_commit();
    };
    /* One key block; the first is peeled off (kFirst: no previous P V) so that the
     * wgmma groups in flight are known statically at every wait. */
    auto body = [&](int it, auto first) {
        constexpr bool kFirst = decltype(first)::value;
        const int s = it % ST;
        fi_mbar_wait(full_bar + s * 8, (it / ST) & 1);
        fi_fence_proxy_async(); /* the copies (generic proxy) before wgmma reads (async proxy) */
        const uint32_t tK = sKV + s * 2 * TILE_KV;
        const int64_t kv0 = (int64_t)block_at(it) * BN;

        /* S = Q K^T: k-step kk reads 32 bytes further into panel kk / 4. */
        float sc[NS];
        fi_named_sync(1 + wg, 256);
        fi_wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint64_t da = fi_wg_desc(sQ + (kk >> 2) * BM * 128 + wg * 64 * 128 + (kk & 3) * 32, 16, 1024);
            const uint64_t db = fi_wg_desc(tK + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024);
            fi_wg_mma<T, BN>::ss(sc, da, db, kk > 0);
        }
        fi_wg_commit();
        if constexpr (!kFirst) issue_pv(tK + TILE_KV);
        fi_named_arrive(2 - wg, 256);
        if constexpr (!kFirst) fi_wg_wait<1>();
        else fi_wg_wait<0>();
        fi_wg_pin(sc);

        /* Mask (PARTIAL blocks, ragged last block). Accumulator idx holds column
         * j = 2 (idx / 4) + (idx & 1) of row half rr = (idx >> 1) & 1; keep[rr] bit j says
         * whether it is kept. Fast PARTIAL blocks and ragged FULL blocks take the bits
         * from the row's kept interval; other PARTIAL blocks evaluate the mask program
         * per element in a rolled loop (one inlined copy). */
        const bool partial = it < n_part;
        if (partial || kv0 + BN > kv_len) {
            static_assert(NS / 2 <= 64, "keep bits of a row must fit one word");
            uint64_t keep[2] = {0, 0};
            if (partial && !fast) {
#pragma unroll 1
                for (int idx = 0; idx < NS; idx++) {
                    const int nt = idx / 4, e = idx & 3;
                    const int64_t row = rows[0] + (e >> 1) * 8;
                    const int64_t kv = kv0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                    bool kept = kv < kv_len;
                    if (kept) {
                        const int64_t qpos = p.q_offset + row;
                        kept = row < q_len && fi_dev_mask_keep(p, seg, seg ? seg[qpos] : 0, qpos, kv) &&
                               FI_DEV_USER_MASK(p, b, h, qpos, kv);
                    }
                    keep[e >> 1] |= (uint64_t)kept << (2 * nt + (e & 1));
                }
            } else {
#pragma unroll
                for (int rr = 0; rr < 2; rr++) {
                    int64_t lo = 0, hi = kv_len;
                    if (partial) {
                        const int r = (int)(rows[rr] - q0);
                        lo = s_row_lo[r], hi = s_row_hi[r];
                    }
                    keep[rr] = fi_dev_frag_col_bits<BN>(lo - kv0, hi - kv0, lane);
                }
            }
#pragma unroll
            for (int idx = 0; idx < NS; idx++)
                sc[idx] = (keep[(idx >> 1) & 1] >> (2 * (idx / 4) + (idx & 1))) & 1 ? sc[idx] : -INFINITY;
        }

        /* Online softmax (base 2, scale folded into exp2); a row with no kept key so
         * far subtracts 0 instead of -inf, so no NaN appears. */
        float alpha[2];
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) mx = fmaxf(mx, fmaxf(sc[nt * 4 + 2 * rr], sc[nt * 4 + 2 * rr + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m_run[rr], mx);
            const float m_use = m_new == -INFINITY ? 0.f : m_new * f;
            alpha[rr] = fi_ex2(m_run[rr] * f - m_use);
            m_run[rr] = m_new;
            float rs = 0.f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
                const float p0 = fi_ex2(fmaf(sc[nt * 4 + 2 * rr], f, -m_use));
                const float p1 = fi_ex2(fmaf(sc[nt * 4 + 2 * rr + 1], f, -m_use));
                sc[nt * 4 + 2 * rr] = p0;
                sc[nt * 4 + 2 * rr + 1] = p1;
                rs += p0 + p1;
            }
            l_run[rr] = l_run[rr] * alpha[rr] + rs;
        }
        if constexpr (!kFirst) fi_wg_wait<0>(); /* P_{i-1} V_{i-1} done: O may be rescaled */
        fi_wg_pin(o_acc);
        fi_mbar_arrive(empty_bar + s * 8); /* K_i and V_{i-1} read */
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            o_acc[dt * 4 + 0] *= alpha[0];
            o_acc[dt * 4 + 1] *= alpha[0];
            o_acc[dt * 4 + 2] *= alpha[1];
            o_acc[dt * 4 + 3] *= alpha[1];
        }
#pragma unroll
        for (int j = 0; j < BN / 16; j++) {
            a[j][0] = fi_mma<T>::pack(sc[8 * j + 0], sc[8 * j + 1]);
            a[j][1] = fi_mma<T>::pack(sc[8 * j + 2], sc[8 * j + 3]);
            a[j][2] = fi_mma<T>::pack(sc[8 * j + 4], sc[8 * j + 5]);
            a[j][3] = fi_mma<T>::pack(sc[8 * j + 6], sc[8 * j + 7]);
        }
    };
    body(0, std::true_type{});
    for (int it = 1; it < n_blocks; it++) body(it, std::false_type{});

    /* P V of the last block (stage n_blocks holds only V); warpgroup 0 then takes
     * the turn that warpgroup 1 last handed it, leaving both named barriers idle. */
    fi_mbar_wait(full_bar + (n_blocks % ST) * 8, (n_blocks / ST) & 1);
    fi_fence_proxy_async();
    fi_wg_fence();
    issue_pv(sKV + (n_blocks % ST) * 2 * TILE_KV + TILE_KV);
    fi_wg_wait<0>();
    fi_wg_pin(o_acc);
    if (wg == 0) fi_named_sync(1, 256);

    /* Finalise: O / l, LSE = ln 2 * (m + log2 l); empty rows give 0 and -inf. */
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        float l = l_run[rr];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.f ? 1.f / l : 0.f;
        if (rows[rr] >= q_len) continue;
        const int64_t orow = fi_dev_out_row(p, b, h, rows[rr]);
        float *o = p.out + orow * D + (lane & 3) * 2;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++)
            *reinterpret_cast<float2 *>(o + dt * 8) = make_float2(o_acc[dt * 4 + 2 * rr] * inv, o_acc[dt * 4 + 2 * rr + 1] * inv);
        if (p.lse && (lane & 3) == 0) p.lse[orow] = l > 0.f ? (m_run[rr] * f + log2f(l)) * FI_LN2 : -INFINITY;
    }
#else
    __trap(); /* built for sm_90a only; dispatch launches it on compute capability 9.0 only */
#endif
}

typedef CUresult (*fi_wg_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                    const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                    CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* Tensor map of a [batch, heads, len, D] view (strides in elements); false when the
 * driver refuses it (e.g. a zero stride), and the caller copies with cp.async. */
static bool fi_wg_encode(fi_wg_encode_fn encode, CUtensorMap *map, bool bf16, const void *base, int64_t dim,
                         int64_t len, int64_t heads, int64_t batch, int64_t sl, int64_t sh, int64_t sb) {
    if (len < 1 || heads < 1 || batch < 1) return false;
    /* A unit dimension's stride is never used; keep it a valid one. */
    if (heads == 1) sh = sl * len;
    if (batch == 1) sb = sh * heads;
    const cuuint64_t dims[4] = {(cuuint64_t)dim, (cuuint64_t)len, (cuuint64_t)heads, (cuuint64_t)batch};
    const cuuint64_t strides[3] = {(cuuint64_t)sl * 2, (cuuint64_t)sh * 2, (cuuint64_t)sb * 2};
    const cuuint32_t box[4] = {64, 128, 1, 1}, elem[4] = {1, 1, 1, 1};
    return encode(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
                  const_cast<void *>(base), dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                  CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* Dense problems copy with TMA (maps built here, per launch: a host-only encode);
 * varlen and paged K/V, or views the driver refuses, with cp.async. */
template <int D, typename T>
static cudaError_t fi_wg_launch(const fi_cuda_attn_kparams &p, cudaStream_t stream) {
    constexpr int smem = fi_wg_smem_bytes<D, T>();
    fi_wg_tmaps tm;
    memset(&tm, 0, sizeof tm);
    bool tma = false;
    if (!p.paged && !p.varlen) {
        void *fn = nullptr;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) ==
                cudaSuccess &&
            q == cudaDriverEntryPointSuccess && fn) {
            const fi_wg_encode_fn enc = reinterpret_cast<fi_wg_encode_fn>(fn);
            const bool bf16 = fi_is_bf16<T>::value;
            tma = fi_wg_encode(enc, &tm.q, bf16, p.q, D, p.q_len, p.hq, p.batch, p.q_sl, p.q_sh, p.q_sb) &&
                  fi_wg_encode(enc, &tm.k, bf16, p.k, D, p.kv_len, p.hkv, p.batch, p.k_sl, p.k_sh, p.k_sb) &&
                  fi_wg_encode(enc, &tm.v, bf16, p.v, D, p.kv_len, p.hkv, p.batch, p.v_sl, p.v_sh, p.v_sb);
        }
    }
    auto kernel = tma ? fi_flash_fwd_wgmma_kernel<D, T, true> : fi_flash_fwd_wgmma_kernel<D, T, false>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    kernel<<<dim3(p.n_q_blocks, p.hq, p.batch), FI_WG_THREADS, smem, stream>>>(p, tm);
    return cudaGetLastError();
}

template <typename T>
static cudaError_t fi_wg_launch_t(const fi_cuda_attn_kparams &p, int dim, cudaStream_t stream) {
    if (dim == 64) return fi_wg_launch<64, T>(p, stream);
    if (dim == 128) return fi_wg_launch<128, T>(p, stream);
    return cudaErrorInvalidValue;
}

#endif
