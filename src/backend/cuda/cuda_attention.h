/* Attention on the GPU and the KV cache it reads.
 *
 * Tensors are passed as strided views: element (token t, head h, i) of a view is at
 * ptr + t * token_stride + h * head_stride + i (in elements of its dtype), and an FP8 view carries one
 * float scale per (token, head) at scale[t * scale_stride + h]. That one shape covers GQA caches
 * ([tokens, kv heads, dim]), MLA's latent cache (one "head" whose row is [latent | rope key], the value
 * being the row's first kv_lora_rank elements) and the expanded K/V of MLA prefill. */
#ifndef KR_BACKEND_CUDA_ATTENTION_H
#define KR_BACKEND_CUDA_ATTENTION_H

#include "backend/cuda/cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const void *ptr;
    kr_cuda_dtype dt;
    int64_t token_stride, head_stride;
    const float *scale; /* FP8 views only */
    int64_t scale_stride;
} kr_cuda_view;

/* Causal attention of T queries. Query t (at position pos0 + t) of head h attends to keys
 * 0 .. pos0 + t of kv head h / (n_heads / n_kv_heads):
 *   out[t, h, :] = sum_s softmax_s(scale * q[t, h] . k[s]) v[s]
 * the same function as backend/cpu/attention.c's kr_attend. q: f32 or bf16; k, v: f32, bf16 or fp8;
 * out: f32 or bf16 (its ptr is written through). Nothing of size T x keys is stored: long prompts run
 * through a flash-style kernel on the tensor cores (bf16 q/k/v with head dims 64/64, 128/128, 192/128),
 * everything else (decode, FP8 caches, other dims) through a split-key kernel with an online softmax. */
typedef struct {
    int64_t T, n_heads, n_kv_heads, qk_dim, v_dim, pos0;
    float scale;
    kr_cuda_view q, k, v, out;
} kr_cuda_attn;

/* Largest dims the split-key kernel takes (MLA's absorbed 576 / 512 included). */
#define KR_CUDA_ATTN_MAX_QK 576
#define KR_CUDA_ATTN_MAX_V 512

/* Workspace bytes kr_cuda_attention needs for these arguments (0 for the flash path). */
size_t kr_cuda_attention_ws_bytes(const kr_cuda_attn *a);
kr_status kr_cuda_attention(const kr_cuda_attn *a, void *ws, size_t ws_bytes, kr_cuda_stream s);
/* Which kernel kr_cuda_attention would run: "flash_mma" or "split_kv" (for benchmarks and tests). */
const char *kr_cuda_attention_path(const kr_cuda_attn *a);
/* Forces the split-key kernel (tests compare both paths); 0 restores the choice. Not thread-safe. */
void kr_cuda_attention_force_split(int on);

/* ---- KV cache ------------------------------------------------------------------------------------ */

typedef struct {
    int64_t n_layers, capacity; /* tokens */
    int64_t n_kv_heads, k_dim, v_dim;
    int v_in_k;      /* MLA: the value is the first v_dim elements of each key row and is not stored */
    kr_cuda_dtype dt; /* KR_CU_BF16 or KR_CU_FP8 */
} kr_cuda_kv_shape;

typedef struct {
    kr_cuda_kv_shape shape;
    void **k, **v;            /* [n_layers] device pointers; v[l] NULL when v_in_k */
    float **k_scale, **v_scale; /* FP8: one float per (token, head) */
} kr_cuda_kv;

/* Bytes one token takes over all layers (elements plus FP8 scales): pure arithmetic, also used by the
 * planner of a CPU-only build. */
static inline int64_t kr_cuda_kv_bytes_per_token(const kr_cuda_kv_shape *s) {
    int64_t el = s->dt == KR_CU_BF16 ? 2 : 1;
    int64_t per_head = s->k_dim * el + (s->v_in_k ? 0 : s->v_dim * el);
    if (s->dt == KR_CU_FP8)
        per_head += (s->v_in_k ? 1 : 2) * 4;
    return s->n_layers * s->n_kv_heads * per_head;
}

kr_status kr_cuda_kv_create(kr_cuda_kv *kv, const kr_cuda_kv_shape *shape);
void kr_cuda_kv_destroy(kr_cuda_kv *kv);

/* Stores T tokens' keys (and values unless v_in_k) at positions pos0 .. pos0 + T - 1 of layer l,
 * converting from the views' dtype (f32 or bf16); FP8 scales are max|x| / 448 per (token, head). */
kr_status kr_cuda_kv_write(kr_cuda_kv *kv, int64_t layer, int64_t pos0, int64_t T, const kr_cuda_view *k,
                           const kr_cuda_view *v, kr_cuda_stream s);
kr_cuda_view kr_cuda_kv_k_view(const kr_cuda_kv *kv, int64_t layer);
kr_cuda_view kr_cuda_kv_v_view(const kr_cuda_kv *kv, int64_t layer);

#ifdef __cplusplus
}
#endif

#endif
