/* A loaded model: hyper-parameters, the mapped checkpoint, every tensor bound to its place in the
 * layer graph, and the forward pass (prefill of many positions or one decode step, through a KV cache).
 * Family-specific parts (config fields, attention binding and math) live in deepseek2.c / gqa.c. */
#ifndef KR_MODEL_MODEL_H
#define KR_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/cpu/moe.h"
#include "backend/cuda/expert_mode.h"
#include "backend/cuda/moe_cache.h"
#include "base/scratch.h"
#include "base/status.h"
#include "model/config.h"
#include "weights/matrix.h"
#include "weights/safetensors.h"

typedef struct {
    kr_matrix gate, up, down; /* SwiGLU: down(silu(gate x) * up x) */
} kr_mlp;

typedef struct {
    float *input_norm, *post_norm;

    /* MLA (deepseek2) */
    kr_matrix q_proj;              /* when q_lora_rank is null */
    kr_matrix q_a, q_b, kv_a, kv_b, o_proj;
    /* GGUF files from current converters split kv_b: k_b [H*C rows of Dn] (Wk_b transposed per head)
     * and v_b [H*Dv rows of C]; when k_b.rows is set they are used instead of kv_b */
    kr_matrix k_b, v_b;
    /* attention_bits (model.c): the weights of the two absorbed-MLA products, quantized for the integer
     * kernels in k_b / v_b's orientation whichever layout was loaded: Wk_b^T per head [H*C rows of Dn]
     * and Wv_b [H*Dv rows of C]. NULL on the float path. */
    const struct kr_qmatrix *mla_k, *mla_v;
    float *q_a_norm, *kv_a_norm;
    float *q_a_bias, *kv_a_bias;   /* attention_bias only */

    /* GQA (qwen3moe, glm4moe) */
    kr_matrix wq, wk, wv, wo;
    float *bq, *bk, *bv;
    float *q_norm, *k_norm;

    float *o_bias;

    /* FFN: a dense MLP, or a router + routed experts (+ shared experts) */
    bool moe;
    kr_mlp dense;
    kr_matrix router;
    float *router_bias;            /* e_score_correction_bias */
    kr_mlp *experts;
    bool has_shared;
    kr_mlp shared;
} kr_layer;

typedef struct {
    int64_t params_total;          /* weights the forward pass uses (MTP layers excluded) */
    int64_t params_routed;         /* of which routed experts */
    int64_t bytes_by_dtype[KR_DT_COUNT];
    int64_t bytes_total;
    int64_t bytes_by_ggml[64];     /* GGUF block-quantized tensors, by ggml type id (KR_GGML_TYPE_LIMIT) */
} kr_model_stats;

#define KR_GPU_MAX_STAGES 16
/* tokens per prompt chunk at most: CUDA grids take 65535 blocks in y and z, and the attention kernels
 * launch one z slice per token of the chunk */
#define KR_GPU_MAX_PREFILL_CHUNK 65535

/* Where the forward pass runs (--gpu, --kv-dtype, --expert-mode, --vram). With `on`, every non-expert op
 * runs on the GPU (model/gpu_model.c). The routed experts: with experts_cpu always on the CPU (hybrid: the
 * CPU kernels fed from the GPU each MoE layer); otherwise, when they are quantized, in VRAM per `experts`
 * (backend/cuda/expert_mode.h: auto, persistent, grouped:N, chunked) for prefill, and for decode too when
 * they are all resident (persistent); decode in the other modes is hybrid. */
typedef struct {
    bool on;
    bool kv_fp8;            /* FP8 E4M3 KV cache (else BF16) */
    bool experts_cpu;       /* --expert-mode cpu */
    kr_expert_mode experts; /* the residency mode asked for (auto by default) */
    int64_t vram_cap;       /* bytes the GPU path may use; 0: all free memory */
    int64_t experts_min_tokens; /* smallest chunk whose experts run in VRAM when not all are resident
                                   (0: 64); decode is a chunk of 1 */
    int64_t prefill_chunk;  /* prompt tokens per pass through the layers (0: 4096 on the GPU,
                             * KR_CPU_PREFILL_CHUNK on the CPU): bounds the activations */
    /* pipeline parallelism (--pp N, --gpus 0,1,2): the layers split into n_stages contiguous stages, stage
     * s on CUDA device devices[s] (n_devices 0: devices 0 .. n_stages - 1; a device may repeat, which is
     * how one GPU tests it); n_stages 0: one stage per listed device, or 1. vram_cap applies to each. */
    int n_stages, n_devices;
    int devices[KR_GPU_MAX_STAGES];
    bool pp_host_bounce;    /* hand the hidden states between stages through pinned host memory even where
                               a direct copy works (tests; KRASIS_PP_BOUNCE=1 does the same) */
} kr_gpu_config;

/* Which components run quantized (DESIGN.md section 3). 0 keeps a component as loaded (BF16/F16/F32/FP8
 * through the float32 reference path); 4 or 8 quantize it to INT4/INT8 with group size group_size.
 * Routed experts go through the expert cache file; the others are quantized in memory at load. */
typedef struct {
    int routed_bits, shared_bits, attention_bits, dense_bits, lm_head_bits;
    int group_size;
    bool group_size_given; /* set by --group-size / the QuantConfig file; else a GGUF may pick 32 */
    const char *cache_dir; /* NULL: ~/.cache/krasis/<model id>/ */
    int threads;           /* 0: one per physical core */
    kr_gpu_config gpu;
} kr_quant_config;

typedef struct kr_model {
    kr_hparams hp;
    kr_safetensors st;
    char prefix[32];               /* "" or "language_model." before "model." / "lm_head." */
    kr_matrix embed, lm_head;
    float *final_norm;
    kr_layer *layers;
    float *inv_freq;               /* [rope.dim / 2] */
    kr_model_stats stats;
    bool binding_routed;           /* set while routed experts are bound, for the stats */
    char *dir;                     /* the model directory as given */
    struct kr_quant *quant;        /* NULL: the float32 reference path everywhere */
    kr_scratch scratch;            /* the forward pass's working buffers (KR_SLOT_*), reused step to step */
    struct kr_gguf_set *gguf;      /* set when opened from a GGUF file (then st is unused) */
    struct kr_gpu_model *gpu;      /* set by kr_model_quantize with qc->gpu.on: the forward runs on the GPU */
    int64_t prefill_chunk;         /* CPU: prompt tokens per pass through the layers (--prefill-chunk; 0: default) */
} kr_model;

/* A long prompt on the CPU runs through the layers this many tokens at a time: the activations (MLA's
 * absorbed queries alone are T x 128 heads x 576 floats on DeepSeek-V3) stay bounded, while the expert
 * weights, read once per pass, cost ~1 % of a compute-bound CPU prefill at this size. */
#define KR_CPU_PREFILL_CHUNK 1024

/* KV cache of one sequence. GQA: k and v of all kv heads, head-major per layer ([heads][layer_cap[l]][hd]:
 * each head's rows contiguous, so attention streams them). MLA (one "head"): rows [normalized latent (C) |
 * roped k_pe (Dr)] in k; v is unused because values are the latent part of the same rows. */
typedef struct kr_kv_cache {
    int64_t len, cap; /* cap: the smallest layer_cap */
    int n_layers;
    int64_t k_width, v_width, heads;
    int64_t *layer_cap; /* each layer's capacity: growth that runs out of memory part way leaves earlier
                         * layers larger, each consistent with its own capacity */
    float **k, **v;
    struct kr_gpu_kv *gpu;         /* a GPU model's cache lives in VRAM (then k and v are unused) */
} kr_kv_cache;

/* path: a Hugging Face model directory, or a GGUF file (detected by its magic; any shard of a split set). */
kr_status kr_model_open(const char *dir, kr_model **out);
/* Where the model's tokenizer and chat template are: the directory as given, or a GGUF's first shard
 * (a split set's tokenizer.* keys are in shard 1 whichever shard was named). */
const char *kr_model_source(const kr_model *m);
/* Switches the components qc names to quantized kernels (building or mapping the expert cache).
 * A config with every *_bits 0 changes nothing. Call once, after kr_model_open. */
kr_status kr_model_quantize(kr_model *m, const kr_quant_config *qc);
/* Reads a QuantConfig JSON file: {"routed_experts": "int4", "shared_experts": "int8", "attention": "bf16",
 * "dense_mlp": "int8", "lm_head": "int8", "group_size": 64}; absent keys keep qc's values. */
kr_status kr_quant_config_load(const char *path, kr_quant_config *qc);
/* Expert weight bytes (quantized values + scales) read per decoded token on the quantized path:
 * top_k routed experts and the shared experts of every MoE layer. 0 when experts are not quantized. */
int64_t kr_model_expert_bytes_per_token(const kr_model *m);
void kr_model_close(kr_model *m);

kr_status kr_kv_cache_create(const kr_model *m, kr_kv_cache **out);
/* Makes room for n positions now, so that no decode step up to n grows the cache (allocates). */
kr_status kr_kv_cache_reserve(kr_kv_cache *kv, int64_t n);
void kr_kv_cache_free(kr_kv_cache *kv);
void kr_kv_cache_reset(kr_kv_cache *kv);
int64_t kr_kv_cache_bytes_per_token(const kr_model *m);

/* Runs ids[0..n) at positions kv->len .. kv->len + n - 1 and appends them to the cache.
 * logits: [n, vocab] when all_positions, else [vocab] for the last position. */
kr_status kr_forward(kr_model *m, kr_kv_cache *kv, const int32_t *ids, int64_t n, bool all_positions, float *logits);

/* ---- used by the family files and the GPU path ---- */

/* The routed experts of MoE layer l on the CPU (quantized kernels when routed experts are quantized, else
 * the float path): out [T, hidden] = sum_k w[t, k] expert_{idx[t, k]}(x[t]). Hybrid GPU decode calls it. */
kr_status kr_model_routed_ffn(kr_model *m, int l, const float *x, int64_t T, const int32_t *idx, const float *w,
                              float *out);
/* The quantized routed experts of MoE layer l ([n_experts]), or NULL when they are not quantized. */
const kr_qexpert *kr_model_routed_qexperts(const kr_model *m, int l);
/* The GPU expert cache file of the quantized routed experts (backend/cuda/moe_cache.h), next to the CPU
 * cache with the same bits, group size and key, built from the CPU quantization on first use. */
kr_status kr_model_open_gpu_cache(kr_model *m, const kr_quant_config *qc, kr_gcache *out);

/* Scratch slots of kr_forward (kr_model.scratch): the stack, the MoE layer, the float MLP, and
 * KR_SLOT_ATTN .. KR_SLOT_ATTN + 10 for the attention of the family files. */
enum {
    KR_SLOT_X, KR_SLOT_XN, KR_SLOT_TMP,
    KR_SLOT_MOE_LOGITS, KR_SLOT_MOE_SCRATCH, KR_SLOT_MOE_IDX, KR_SLOT_MOE_W, KR_SLOT_MOE_START,
    KR_SLOT_MOE_SLOT_TOK, KR_SLOT_MOE_SLOT_W, KR_SLOT_MOE_XE, KR_SLOT_MOE_YE, KR_SLOT_MOE_FILL,
    KR_SLOT_MLP_G, KR_SLOT_MLP_U,
    KR_SLOT_ATTN
};
/* n floats of scratch slot `slot` of m (NULL when out of memory). */
float *kr_model_scratch(kr_model *m, int slot, int64_t n);

/* Binds name (prefix + name) as a [rows, cols] matrix; FP8 weights also bind "<name>_scale_inv". */
kr_status kr_bind_matrix(kr_model *m, const char *name, int64_t rows, int64_t cols, kr_matrix *out);
/* Binds a 1-D tensor of n elements as an owned float32 copy. */
kr_status kr_bind_vector(kr_model *m, const char *name, int64_t n, float **out);
bool kr_model_has(const kr_model *m, const char *name);

/* Attention of layer l for T positions starting at kv->len: x [T, hidden] (normed) -> out [T, hidden]. */
kr_status kr_deepseek2_bind_attention(kr_model *m, int l);
kr_status kr_deepseek2_attention(kr_model *m, int l, const float *x, int64_t T, kr_kv_cache *kv, float *out);
kr_status kr_gqa_bind_attention(kr_model *m, int l);
kr_status kr_gqa_attention(kr_model *m, int l, const float *x, int64_t T, kr_kv_cache *kv, float *out);

#endif
