/* Norms, RoPE, SiLU-multiply, adds and conversions. One thread per element (or pair) except RMSNorm,
 * one block per row. The float32 arithmetic follows backend/cpu/ops.c and rope.c operation for operation,
 * so f32 results agree with the CPU to rounding. */
#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/cuda_ops.h"

template <typename O, typename T>
__global__ void rmsnorm_kernel(O *out, int64_t ld_out, const T *x, int64_t ld_x, const float *w, int64_t n, float eps) {
    const T *xr = x + blockIdx.x * ld_x;
    O *orow = out + blockIdx.x * ld_out;
    float ss = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = kr_ld(xr + i);
        ss += v * v;
    }
    __shared__ float part[32];
    ss = kr_warp_sum(ss);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0)
        part[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        ss = lane < (int)(blockDim.x / 32) ? part[lane] : 0.0f;
        ss = kr_warp_sum(ss);
        if (lane == 0)
            part[0] = ss;
    }
    __syncthreads();
    float r = 1.0f / sqrtf(part[0] / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        kr_st(orow + i, w[i] * (kr_ld(xr + i) * r));
}

template <typename T>
__global__ void rope_kernel(T *x, int64_t T_, int64_t heads, int64_t ts, int64_t hs, int64_t off, int half,
                            int interleaved, float af, const float *inv_freq, int64_t pos0, const int32_t *positions) {
    int64_t id = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t total = T_ * heads * half;
    if (id >= total)
        return;
    int i = (int)(id % half);
    int64_t h = (id / half) % heads, t = id / ((int64_t)half * heads);
    int64_t pos = positions ? (int64_t)positions[t] : pos0 + t;
    float angle = (float)pos * inv_freq[i];
    float c = cosf(angle) * af, s = sinf(angle) * af;
    T *v = x + t * ts + h * hs + off;
    int a = interleaved ? 2 * i : i;
    int b = interleaved ? 2 * i + 1 : i + half;
    float xa = kr_ld(v + a), xb = kr_ld(v + b);
    kr_st(v + a, xa * c - xb * s);
    kr_st(v + b, xb * c + xa * s);
}

template <typename T>
__global__ void silu_mul_kernel(T *out, int64_t ld_out, const T *g, const T *u, int64_t ld_in, int64_t rows, int64_t n) {
    int64_t id = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (id >= rows * n)
        return;
    int64_t r = id / n, i = id % n;
    float gv = kr_ld(g + r * ld_in + i), uv = kr_ld(u + r * ld_in + i);
    kr_st(out + r * ld_out + i, gv / (1.0f + expf(-gv)) * uv);
}

template <typename T> __global__ void add_kernel(T *y, const T *x, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n)
        kr_st(y + i, kr_ld(y + i) + kr_ld(x + i));
}

template <typename T> __global__ void add_rows_kernel(T *y, const float *b, int64_t rows, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < rows * n)
        kr_st(y + i, kr_ld(y + i) + b[i % n]);
}

template <typename D, typename S> __global__ void convert_kernel(D *dst, const S *src, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n)
        kr_st(dst + i, kr_ld(src + i));
}

extern "C" {

kr_status kr_cuda_rmsnorm_ex(kr_cuda_dtype out_dt, void *out, int64_t ld_out, kr_cuda_dtype x_dt, const void *x,
                             int64_t ld_x, const float *w, int64_t rows, int64_t n, float eps, kr_cuda_stream s) {
    if (rows <= 0 || n <= 0 || ld_out < n || ld_x < n)
        return rows == 0 ? KR_OK
                         : kr_fail(KR_ERR_ARG, "kr_cuda_rmsnorm: bad shape %lld x %lld (row strides %lld, %lld)",
                                   (long long)rows, (long long)n, (long long)ld_out, (long long)ld_x);
    if (rows > 0x7fffffff)
        return kr_fail(KR_ERR_ARG, "kr_cuda_rmsnorm: %lld rows is more than one launch takes", (long long)rows);
    int threads = n >= 1024 ? 256 : n >= 256 ? 128 : 64;
    unsigned blocks = (unsigned)rows;
    if (out_dt == x_dt) {
        KR_DISPATCH_ACT(x_dt, "kr_cuda_rmsnorm",
                        rmsnorm_kernel<T, T><<<blocks, threads, 0, s>>>((T *)out, ld_out, (const T *)x, ld_x, w, n, eps));
    } else if (out_dt == KR_CU_BF16 && x_dt == KR_CU_F32) {
        rmsnorm_kernel<<<blocks, threads, 0, s>>>((__nv_bfloat16 *)out, ld_out, (const float *)x, ld_x, w, n, eps);
    } else {
        return kr_fail(KR_ERR_ARG, "kr_cuda_rmsnorm: %s -> %s is not supported", kr_cuda_dtype_name(x_dt),
                       kr_cuda_dtype_name(out_dt));
    }
    KR_CU_LAUNCHED("rmsnorm");
    return KR_OK;
}

kr_status kr_cuda_rmsnorm(kr_cuda_dtype dt, void *out, const void *x, const float *w, int64_t rows, int64_t n,
                          float eps, kr_cuda_stream s) {
    return kr_cuda_rmsnorm_ex(dt, out, n, dt, x, n, w, rows, n, eps, s);
}

kr_status kr_cuda_rope(kr_cuda_dtype dt, void *x, int64_t T_, int64_t heads, int64_t token_stride, int64_t head_stride,
                       int64_t offset, const kr_cuda_rope_params *p, int64_t pos0, const int32_t *positions,
                       kr_cuda_stream s) {
    if (p->rope_dim <= 0 || p->rope_dim % 2)
        return kr_fail(KR_ERR_ARG, "kr_cuda_rope: rope_dim %d must be even and positive", p->rope_dim);
    int half = p->rope_dim / 2;
    int64_t total = T_ * heads * half;
    if (total == 0)
        return KR_OK;
    KR_DISPATCH_ACT(dt, "kr_cuda_rope",
                    rope_kernel<T><<<kr_blocks(total, 256), 256, 0, s>>>((T *)x, T_, heads, token_stride, head_stride,
                                                                        offset, half, p->interleaved,
                                                                        p->attention_factor, p->inv_freq, pos0,
                                                                        positions));
    KR_CU_LAUNCHED("rope");
    return KR_OK;
}

kr_status kr_cuda_silu_mul(kr_cuda_dtype dt, void *out, int64_t ld_out, const void *g, const void *u, int64_t ld_in,
                           int64_t rows, int64_t n, kr_cuda_stream s) {
    if (rows * n == 0)
        return KR_OK;
    KR_DISPATCH_ACT(dt, "kr_cuda_silu_mul",
                    silu_mul_kernel<T><<<kr_blocks(rows * n, 256), 256, 0, s>>>((T *)out, ld_out, (const T *)g,
                                                                               (const T *)u, ld_in, rows, n));
    KR_CU_LAUNCHED("silu_mul");
    return KR_OK;
}

kr_status kr_cuda_add(kr_cuda_dtype dt, void *y, const void *x, int64_t n, kr_cuda_stream s) {
    if (n == 0)
        return KR_OK;
    KR_DISPATCH_ACT(dt, "kr_cuda_add", add_kernel<T><<<kr_blocks(n, 256), 256, 0, s>>>((T *)y, (const T *)x, n));
    KR_CU_LAUNCHED("add");
    return KR_OK;
}

kr_status kr_cuda_add_rows(kr_cuda_dtype dt, void *y, const float *b, int64_t rows, int64_t n, kr_cuda_stream s) {
    if (rows * n == 0)
        return KR_OK;
    KR_DISPATCH_ACT(dt, "kr_cuda_add_rows",
                    add_rows_kernel<T><<<kr_blocks(rows * n, 256), 256, 0, s>>>((T *)y, b, rows, n));
    KR_CU_LAUNCHED("add_rows");
    return KR_OK;
}

kr_status kr_cuda_convert(kr_cuda_dtype dst_dt, void *dst, kr_cuda_dtype src_dt, const void *src, int64_t n,
                          kr_cuda_stream s) {
    if (n == 0)
        return KR_OK;
    unsigned b = kr_blocks(n, 256);
    if (dst_dt == src_dt)
        return kr_cuda_copy(dst, src, (size_t)n * kr_cuda_dtype_size(dst_dt), s);
    if (dst_dt == KR_CU_BF16 && src_dt == KR_CU_F32)
        convert_kernel<<<b, 256, 0, s>>>((__nv_bfloat16 *)dst, (const float *)src, n);
    else if (dst_dt == KR_CU_F32 && src_dt == KR_CU_BF16)
        convert_kernel<<<b, 256, 0, s>>>((float *)dst, (const __nv_bfloat16 *)src, n);
    else
        return kr_fail(KR_ERR_ARG, "kr_cuda_convert: %s -> %s is not supported", kr_cuda_dtype_name(src_dt),
                       kr_cuda_dtype_name(dst_dt));
    KR_CU_LAUNCHED("convert");
    return KR_OK;
}

} /* extern "C" */
