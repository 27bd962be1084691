/* The forward pass on the GPU (CUDA builds only): every non-expert op of every layer — norms, attention
 * (GQA and MLA) over a KV cache in VRAM, the router, the shared experts and dense MLPs, the final norm
 * and lm_head — runs on one CUDA stream in BF16 with float32 accumulation and a float32 residual stream.
 * The routed experts run either on the CPU (hybrid: each MoE layer hands its normalized hidden states,
 * expert ids and weights to the CPU kernels through pinned buffers while the GPU runs the shared expert)
 * or, when they are quantized and fit, on the GPU through the grouped INT4/INT8 kernel (moe_gemm.h).
 * model.c calls these when kr_model.gpu is set; nothing else needs to know where the forward runs. */
#ifndef KR_MODEL_GPU_MODEL_H
#define KR_MODEL_GPU_MODEL_H

#include "model/model.h"

/* Uploads m's non-expert weights (and, per qc->gpu.experts, its quantized routed experts through the GPU
 * expert cache file and the residency of moe_residency.h) and sets m->gpu.
 * Call after the CPU-side quantization (kr_model_quantize does). Prints what went where on stderr. */
kr_status kr_gpu_model_create(kr_model *m, const kr_quant_config *qc);
void kr_gpu_model_destroy(struct kr_gpu_model *g);

/* The KV cache of one sequence in VRAM (BF16 or FP8 per the config), grown like the CPU cache. */
kr_status kr_gpu_kv_create(const kr_model *m, kr_kv_cache *kv);
kr_status kr_gpu_kv_reserve(kr_kv_cache *kv, int64_t need);
void kr_gpu_kv_free(kr_kv_cache *kv);
int64_t kr_gpu_kv_bytes_per_token(const kr_model *m);

/* kr_forward's contract: ids[0..n) at positions kv->len.., logits on the host. */
kr_status kr_gpu_forward(kr_model *m, kr_kv_cache *kv, const int32_t *ids, int64_t n, bool all_positions,
                         float *logits);

#endif
