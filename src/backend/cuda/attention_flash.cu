/* The tensor-core causal prefill kernel (FlashAttention-2's scheme on mma.sync m16n8k16, bf16 in, float32
 * accumulation); see attention.cu's opening comment for the design. Own translation unit: it is the
 * slowest file to compile, and a 2-core build compiles it beside the rest. */
#include "backend/cuda/attention_internal.cuh"

/* ---------------------------------------------------------------- flash kernel (tensor cores) */

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

enum { FA_BM = 64, FA_BN = 64, FA_THREADS = 128 };

template <int DQK, int DV> constexpr size_t flash_smem() {
    return (size_t)(FA_BM * (DQK + 8) + FA_BN * (DQK + 8) + FA_BN * (DV + 8)) * 2;
}

template <int DQK, int DV>
__global__ void __launch_bounds__(FA_THREADS) flash_kernel(kr_cuda_attn a) {
    constexpr int QS = DQK + 8, KS = DQK + 8, VS = DV + 8; /* +16 bytes a row: ldmatrix rows hit distinct banks */
    extern __shared__ __align__(16) unsigned char fsm[];
    __nv_bfloat16 *Qs = (__nv_bfloat16 *)fsm, *Ks = Qs + FA_BM * QS, *Vs = Ks + FA_BN * KS;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, tq = lane & 3;
    const int64_t h = blockIdx.y, kvh = h / (a.n_heads / a.n_kv_heads);
    const int64_t q0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * FA_BM; /* the longest rows start first */
    const int64_t T = a.T, n_total = a.pos0 + T;
    const __nv_bfloat16 *Q = (const __nv_bfloat16 *)a.q.ptr + h * a.q.head_stride;
    const __nv_bfloat16 *K = (const __nv_bfloat16 *)a.k.ptr + kvh * a.k.head_stride;
    const __nv_bfloat16 *V = (const __nv_bfloat16 *)a.v.ptr + kvh * a.v.head_stride;

    for (int c = tid; c < FA_BM * DQK / 8; c += FA_THREADS) {
        int r = c / (DQK / 8), col = (c % (DQK / 8)) * 8;
        int64_t t = q0 + r;
        cp_async16(Qs + r * QS + col, t < T ? Q + t * a.q.token_stride + col : Q, t < T);
    }
    cp_async_commit();

    const int64_t kv_end = min(n_total, a.pos0 + q0 + FA_BM);
    const float sl2 = a.scale * 1.4426950408889634f; /* exp(x) = exp2(x log2 e) */
    const int64_t row0 = a.pos0 + q0 + warp * 16 + g, row1 = row0 + 8;
    float o[DV / 8][4];
#pragma unroll
    for (int i = 0; i < DV / 8; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0, l1 = 0;
    uint32_t qa[DQK / 16][4];

    for (int64_t n0 = 0; n0 < kv_end; n0 += FA_BN) {
        for (int c = tid; c < FA_BN * DQK / 8; c += FA_THREADS) {
            int r = c / (DQK / 8), col = (c % (DQK / 8)) * 8;
            int64_t key = n0 + r;
            cp_async16(Ks + r * KS + col, key < n_total ? K + key * a.k.token_stride + col : K, key < n_total);
        }
        cp_async_commit();
        for (int c = tid; c < FA_BN * DV / 8; c += FA_THREADS) {
            int r = c / (DV / 8), col = (c % (DV / 8)) * 8;
            int64_t key = n0 + r;
            cp_async16(Vs + r * VS + col, key < n_total ? V + key * a.v.token_stride + col : V, key < n_total);
        }
        cp_async_commit();
        cp_async_wait<1>(); /* Q and K are in; V may still be on its way */
        __syncthreads();
        if (n0 == 0) {
#pragma unroll
            for (int kk = 0; kk < DQK / 16; kk++)
                ldsm_x4(qa[kk], Qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * QS + kk * 16 + (lane >> 4) * 8);
        }
        float s[FA_BN / 8][4];
#pragma unroll
        for (int j = 0; j < FA_BN / 8; j++)
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0;
#pragma unroll
        for (int kk = 0; kk < DQK / 16; kk++) {
#pragma unroll
            for (int j = 0; j < FA_BN / 8; j += 2) {
                uint32_t b[4];
                ldsm_x4(b, Ks + (j * 8 + (lane >> 4) * 8 + (lane & 7)) * KS + kk * 16 + ((lane >> 3) & 1) * 8);
                mma_bf16(s[j], qa[kk], b[0], b[1]);
                mma_bf16(s[j + 1], qa[kk], b[2], b[3]);
            }
        }
        /* scale into log2 units, mask the future, and the running max of each of this thread's two rows */
        float mx0 = m0, mx1 = m1;
        const bool edge = n0 + FA_BN - 1 > a.pos0 + q0 + warp * 16; /* some key of the tile is after some row */
#pragma unroll
        for (int j = 0; j < FA_BN / 8; j++) {
            const int64_t key = n0 + j * 8 + 2 * tq;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float v = s[j][e] * sl2;
                if (edge && key + (e & 1) > (e < 2 ? row0 : row1))
                    v = -INFINITY;
                s[j][e] = v;
            }
            mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
            mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float b0 = mx0 == -INFINITY ? 0.0f : mx0, b1 = mx1 == -INFINITY ? 0.0f : mx1;
        const float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1);
        m0 = mx0;
        m1 = mx1;
        float ps0 = 0, ps1 = 0;
#pragma unroll
        for (int j = 0; j < FA_BN / 8; j++) {
            s[j][0] = exp2f(s[j][0] - b0);
            s[j][1] = exp2f(s[j][1] - b0);
            s[j][2] = exp2f(s[j][2] - b1);
            s[j][3] = exp2f(s[j][3] - b1);
            ps0 += s[j][0] + s[j][1];
            ps1 += s[j][2] + s[j][3];
        }
        l0 = l0 * c0 + ps0; /* this thread's share of the row sum; the quad adds up at the end */
        l1 = l1 * c1 + ps1;
#pragma unroll
        for (int i = 0; i < DV / 8; i++) {
            o[i][0] *= c0;
            o[i][1] *= c0;
            o[i][2] *= c1;
            o[i][3] *= c1;
        }
        cp_async_wait<0>();
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < FA_BN / 16; kk++) {
            uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int nd = 0; nd < DV / 8; nd += 2) {
                uint32_t b[4];
                ldsm_x4_t(b, Vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * VS + nd * 8 + (lane >> 4) * 8);
                mma_bf16(o[nd], pa, b[0], b[1]);
                mma_bf16(o[nd + 1], pa, b[2], b[3]);
            }
        }
        __syncthreads(); /* the next tile overwrites Ks and Vs */
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0 ? 1.0f / l0 : 0.0f, i1 = l1 > 0 ? 1.0f / l1 : 0.0f;
    const int64_t t0 = q0 + warp * 16 + g, t1 = t0 + 8;
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) {
        const int col = nd * 8 + 2 * tq;
        if (t0 < T) {
            int64_t off = t0 * a.out.token_stride + h * a.out.head_stride + col;
            st_act((void *)a.out.ptr, a.out.dt, off, o[nd][0] * i0);
            st_act((void *)a.out.ptr, a.out.dt, off + 1, o[nd][1] * i0);
        }
        if (t1 < T) {
            int64_t off = t1 * a.out.token_stride + h * a.out.head_stride + col;
            st_act((void *)a.out.ptr, a.out.dt, off, o[nd][2] * i1);
            st_act((void *)a.out.ptr, a.out.dt, off + 1, o[nd][3] * i1);
        }
    }
}

template <int DQK, int DV> static kr_status launch_flash(const kr_cuda_attn *a, cudaStream_t s) {
    constexpr size_t smem = flash_smem<DQK, DV>();
    static int given[KR_SMEM_DEVICES]; /* per instantiation and device */
    KR_TRY(ensure_smem(flash_kernel<DQK, DV>, smem, given));
    dim3 grid((unsigned)((a->T + FA_BM - 1) / FA_BM), (unsigned)a->n_heads);
    flash_kernel<DQK, DV><<<grid, FA_THREADS, smem, s>>>(*a);
    KR_CU_LAUNCHED("flash attention");
    return KR_OK;
}

kr_status kr_cuda_flash_attention(const kr_cuda_attn *a, int variant, cudaStream_t s) {
    switch (variant) {
    case 1: return launch_flash<128, 128>(a, s);
    case 2: return launch_flash<192, 128>(a, s);
    case 3: return launch_flash<64, 64>(a, s);
    default: return kr_fail(KR_ERR_ARG, "flash attention: no variant %d", variant);
    }
}
