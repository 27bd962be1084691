/* The GPU KV cache: per layer one [capacity, kv heads, dim] array of keys (and of values unless the
 * value lives inside the key row, as MLA's latent does), in BF16 or in FP8 E4M3 with one float scale
 * per (token, head). Writes convert from f32/bf16 activations; the attention kernels read the views. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_internal.cuh"

/* one warp per (token, head): amax for the FP8 scale, then the conversion */
template <typename S>
__global__ void kv_write_kernel(const S *src, int64_t src_ts, int64_t src_hs, int64_t T, int64_t heads, int64_t dim,
                                void *dst, int fp8, float *scale, int64_t pos0) {
    int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (w >= T * heads)
        return;
    int64_t t = w / heads, h = w % heads;
    const S *x = src + t * src_ts + h * src_hs;
    int64_t row = ((pos0 + t) * heads + h) * dim;
    if (!fp8) {
        __nv_bfloat16 *d = (__nv_bfloat16 *)dst + row;
        for (int64_t i = lane; i < dim; i += 32)
            d[i] = __float2bfloat16_rn(kr_ld(x + i));
        return;
    }
    float amax = 0;
    for (int64_t i = lane; i < dim; i += 32)
        amax = fmaxf(amax, fabsf(kr_ld(x + i)));
    amax = kr_warp_max(amax);
    float sc = amax > 0 ? amax / 448.0f : 1.0f, inv = 1.0f / sc;
    __nv_fp8_e4m3 *d = (__nv_fp8_e4m3 *)dst + row;
    for (int64_t i = lane; i < dim; i += 32)
        d[i] = __nv_fp8_e4m3(kr_ld(x + i) * inv); /* round to nearest, saturating to +-448 */
    if (lane == 0)
        scale[(pos0 + t) * heads + h] = sc;
}

extern "C" {

void kr_cuda_kv_destroy(kr_cuda_kv *kv) {
    for (int64_t l = 0; l < kv->shape.n_layers; l++) {
        if (kv->k)
            kr_cuda_free(kv->k[l]);
        if (kv->v)
            kr_cuda_free(kv->v[l]);
        if (kv->k_scale)
            kr_cuda_free(kv->k_scale[l]);
        if (kv->v_scale)
            kr_cuda_free(kv->v_scale[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->k_scale);
    free(kv->v_scale);
    memset(kv, 0, sizeof *kv);
}

kr_status kr_cuda_kv_create(kr_cuda_kv *kv, const kr_cuda_kv_shape *shape) {
    memset(kv, 0, sizeof *kv);
    const kr_cuda_kv_shape *s = shape;
    if (s->dt != KR_CU_BF16 && s->dt != KR_CU_FP8)
        return kr_fail(KR_ERR_ARG, "KV cache dtype %s (want bf16 or fp8_e4m3)", kr_cuda_dtype_name(s->dt));
    if (s->n_layers < 1 || s->capacity < 1 || s->n_kv_heads < 1 || s->k_dim < 1 || s->v_dim < 1 ||
        (s->v_in_k && s->v_dim > s->k_dim))
        return kr_fail(KR_ERR_ARG, "KV cache shape: %lld layers, %lld tokens, %lld heads, k %lld, v %lld%s",
                       (long long)s->n_layers, (long long)s->capacity, (long long)s->n_kv_heads, (long long)s->k_dim,
                       (long long)s->v_dim, s->v_in_k ? " (v inside k)" : "");
    kv->shape = *s;
    size_t L = (size_t)s->n_layers;
    kv->k = (void **)calloc(L, sizeof(void *));
    kv->v = (void **)calloc(L, sizeof(void *));
    kv->k_scale = (float **)calloc(L, sizeof(float *));
    kv->v_scale = (float **)calloc(L, sizeof(float *));
    if (!kv->k || !kv->v || !kv->k_scale || !kv->v_scale) {
        kr_cuda_kv_destroy(kv);
        return kr_fail(KR_ERR_NOMEM, "out of memory for the KV cache's tables");
    }
    size_t el = kr_cuda_dtype_size(s->dt), rows = (size_t)s->capacity * (size_t)s->n_kv_heads;
    kr_status st = KR_OK;
    for (size_t l = 0; l < L && st == KR_OK; l++) {
        st = kr_cuda_malloc(&kv->k[l], rows * (size_t)s->k_dim * el, "the KV cache (keys)");
        if (st == KR_OK && !s->v_in_k)
            st = kr_cuda_malloc(&kv->v[l], rows * (size_t)s->v_dim * el, "the KV cache (values)");
        if (st == KR_OK && s->dt == KR_CU_FP8) {
            st = kr_cuda_malloc((void **)&kv->k_scale[l], rows * sizeof(float), "the KV cache's key scales");
            if (st == KR_OK && !s->v_in_k)
                st = kr_cuda_malloc((void **)&kv->v_scale[l], rows * sizeof(float), "the KV cache's value scales");
        }
    }
    kv->shape.n_layers = (int64_t)L;
    if (st != KR_OK)
        kr_cuda_kv_destroy(kv);
    return st;
}

static kr_status write_one(const kr_cuda_view *src, int64_t T, int64_t heads, int64_t dim, void *dst, int fp8,
                           float *scale, int64_t pos0, kr_cuda_stream s) {
    int64_t warps = T * heads;
    unsigned blocks = kr_blocks(warps * 32, 256);
    if (src->dt == KR_CU_F32)
        kv_write_kernel<<<blocks, 256, 0, s>>>((const float *)src->ptr, src->token_stride, src->head_stride, T, heads,
                                               dim, dst, fp8, scale, pos0);
    else if (src->dt == KR_CU_BF16)
        kv_write_kernel<<<blocks, 256, 0, s>>>((const __nv_bfloat16 *)src->ptr, src->token_stride, src->head_stride,
                                               T, heads, dim, dst, fp8, scale, pos0);
    else
        return kr_fail(KR_ERR_ARG, "kr_cuda_kv_write: source dtype %s (want f32 or bf16)", kr_cuda_dtype_name(src->dt));
    KR_CU_LAUNCHED("kv_write");
    return KR_OK;
}

kr_status kr_cuda_kv_write(kr_cuda_kv *kv, int64_t layer, int64_t pos0, int64_t T, const kr_cuda_view *k,
                           const kr_cuda_view *v, kr_cuda_stream s) {
    const kr_cuda_kv_shape *sh = &kv->shape;
    if (layer < 0 || layer >= sh->n_layers)
        return kr_fail(KR_ERR_ARG, "kr_cuda_kv_write: layer %lld of %lld", (long long)layer, (long long)sh->n_layers);
    if (pos0 < 0 || T < 0 || pos0 + T > sh->capacity)
        return kr_fail(KR_ERR_ARG, "KV cache full: positions %lld..%lld do not fit its %lld tokens", (long long)pos0,
                       (long long)(pos0 + T - 1), (long long)sh->capacity);
    if (T == 0)
        return KR_OK;
    int fp8 = sh->dt == KR_CU_FP8;
    KR_TRY(write_one(k, T, sh->n_kv_heads, sh->k_dim, kv->k[layer], fp8, kv->k_scale[layer], pos0, s));
    if (!sh->v_in_k) {
        if (!v)
            return kr_fail(KR_ERR_ARG, "kr_cuda_kv_write: this cache stores values; none given");
        KR_TRY(write_one(v, T, sh->n_kv_heads, sh->v_dim, kv->v[layer], fp8, kv->v_scale[layer], pos0, s));
    }
    return KR_OK;
}

kr_cuda_view kr_cuda_kv_k_view(const kr_cuda_kv *kv, int64_t layer) {
    const kr_cuda_kv_shape *sh = &kv->shape;
    kr_cuda_view v;
    v.ptr = kv->k[layer];
    v.dt = sh->dt;
    v.head_stride = sh->k_dim;
    v.token_stride = sh->n_kv_heads * sh->k_dim;
    v.scale = sh->dt == KR_CU_FP8 ? kv->k_scale[layer] : NULL;
    v.scale_stride = sh->n_kv_heads;
    return v;
}

kr_cuda_view kr_cuda_kv_v_view(const kr_cuda_kv *kv, int64_t layer) {
    const kr_cuda_kv_shape *sh = &kv->shape;
    if (sh->v_in_k)
        return kr_cuda_kv_k_view(kv, layer); /* the same rows: the value is their first v_dim elements */
    kr_cuda_view v;
    v.ptr = kv->v[layer];
    v.dt = sh->dt;
    v.head_stride = sh->v_dim;
    v.token_stride = sh->n_kv_heads * sh->v_dim;
    v.scale = sh->dt == KR_CU_FP8 ? kv->v_scale[layer] : NULL;
    v.scale_stride = sh->n_kv_heads;
    return v;
}

} /* extern "C" */
