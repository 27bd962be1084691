/* VRAM planner arithmetic (see vram_plan.h). Plain C: part of every build. */
#include "backend/cuda/vram_plan.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend/cuda/cuda_attention.h"

static const int64_t MiB = 1 << 20;

int64_t kr_weight_bytes(int64_t n, int bits, int group_size) {
    if (bits == 0)
        return 2 * n;
    int gs = group_size > 0 ? group_size : 128;
    return n * bits / 8 + (n + gs - 1) / gs * 4;
}

int64_t kr_parse_size(const char *s) {
    if (!s || !*s)
        return 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0)
        return 0;
    double mul = 1;
    if (*end) {
        char u = (char)(*end | 0x20);
        mul = u == 'k' ? 1024.0 : u == 'm' ? 1048576.0 : u == 'g' ? 1073741824.0 : u == 't' ? 1099511627776.0 : 0;
        if (mul == 0)
            return 0;
        end++;
        if (*end && strcasecmp(end, "b") && strcasecmp(end, "ib"))
            return 0;
    }
    double b = v * mul;
    return b >= 9.2e18 ? 0 : (int64_t)b;
}

static int64_t attention_params(const kr_hparams *hp) {
    int64_t D = hp->hidden, H = hp->n_heads;
    if (hp->family == KR_FAMILY_DEEPSEEK2) {
        int64_t qk = hp->qk_nope_dim + hp->qk_rope_dim;
        int64_t q = hp->q_lora_rank ? D * hp->q_lora_rank + hp->q_lora_rank * H * qk + hp->q_lora_rank : D * H * qk;
        int64_t kv = D * (hp->kv_lora_rank + hp->qk_rope_dim) + hp->kv_lora_rank +
                     hp->kv_lora_rank * H * (hp->qk_nope_dim + hp->v_head_dim);
        return q + kv + H * hp->v_head_dim * D;
    }
    int64_t hd = hp->head_dim, Hkv = hp->n_kv_heads;
    int64_t p = D * H * hd + 2 * D * Hkv * hd + H * hd * D;
    if (hp->attention_bias)
        p += H * hd + 2 * Hkv * hd;
    if (hp->qk_norm)
        p += 2 * hd;
    return p;
}

kr_cuda_kv_shape kr_kv_shape_of(const kr_hparams *hp, int fp8) {
    kr_cuda_kv_shape s;
    memset(&s, 0, sizeof s);
    s.n_layers = hp->n_layers;
    s.capacity = 1;
    s.dt = fp8 ? KR_CU_FP8 : KR_CU_BF16;
    if (hp->family == KR_FAMILY_DEEPSEEK2) { /* the latent and the rope key; the value is inside */
        s.n_kv_heads = 1;
        s.k_dim = hp->kv_lora_rank + hp->qk_rope_dim;
        s.v_dim = hp->kv_lora_rank;
        s.v_in_k = 1;
    } else {
        s.n_kv_heads = hp->n_kv_heads;
        s.k_dim = s.v_dim = hp->head_dim;
    }
    return s;
}

/* workspace of one prefill chunk, bf16 activations: residual + normed + attention out + MLP out,
 * q/k/v (MLA: keys and values expanded per head), the routed tokens' gate/up rows, router logits,
 * the last token's logits, cuBLASLt's 32 MiB */
static int64_t workspace_bytes(const kr_hparams *hp, const kr_vram_request *rq, int64_t moe_layers) {
    int64_t D = hp->hidden, E = hp->router.n_experts;
    int64_t C = rq->prefill_chunk > 0 ? rq->prefill_chunk : 4096;
    int64_t H = hp->n_heads, qkd, vd, kvh;
    if (hp->family == KR_FAMILY_DEEPSEEK2) {
        qkd = hp->qk_nope_dim + hp->qk_rope_dim;
        vd = hp->v_head_dim;
        kvh = H;
    } else {
        qkd = vd = hp->head_dim;
        kvh = hp->n_kv_heads;
    }
    int64_t ffn = hp->intermediate;
    if (moe_layers) {
        int64_t moe = (int64_t)hp->router.top_k * hp->moe_intermediate;
        ffn = ffn > moe ? ffn : moe;
    }
    return C * (4 * D + H * qkd + kvh * (qkd + vd) + H * vd + 2 * ffn) * 2 + C * E * 4 + hp->vocab * 4 + 32 * MiB;
}

kr_status kr_vram_plan_make(const kr_hparams *hp, const kr_vram_request *rq, kr_vram_plan *p) {
    memset(p, 0, sizeof *p);
    const kr_quant_config *qc = &rq->qc;
    int gs = qc->group_size > 0 ? qc->group_size : 128;
    int64_t D = hp->hidden, L = hp->n_layers, E = hp->router.n_experts;
    for (int64_t l = 0; l < L; l++)
        p->moe_layers += hp->layer_is_moe && hp->layer_is_moe[l];
    int64_t dense_layers = L - p->moe_layers;
    p->attention = L * kr_weight_bytes(attention_params(hp), qc->attention_bits, gs);
    p->norms = (2 * L + 1) * D * 2;
    p->routers = p->moe_layers * (E * D * 2 + E * 4);
    p->shared = p->moe_layers * kr_weight_bytes(hp->n_shared * 3 * D * hp->moe_intermediate, qc->shared_bits, gs);
    p->dense = dense_layers * kr_weight_bytes(3 * D * hp->intermediate, qc->dense_bits, gs);
    p->lm_head = kr_weight_bytes(hp->vocab * D, qc->lm_head_bits, gs);
    p->nonexpert = p->attention + p->norms + p->routers + p->shared + p->dense + p->lm_head;
    p->routed_layer = kr_weight_bytes(E * 3 * D * hp->moe_intermediate, qc->routed_bits, gs);
    p->routed_total = p->moe_layers * p->routed_layer;

    p->workspace = workspace_bytes(hp, rq, p->moe_layers);
    p->reserve = 512 * MiB; /* CUDA context, module images, allocator slack */

    kr_cuda_kv_shape ks = kr_kv_shape_of(hp, rq->kv_fp8);
    p->kv_per_token = kr_cuda_kv_bytes_per_token(&ks);
    int64_t max_ctx = hp->max_pos > 0 ? hp->max_pos : 32768;
    int64_t target = rq->ctx_target > 0 ? rq->ctx_target : (max_ctx < 32768 ? max_ctx : 32768);
    if (target > max_ctx)
        target = max_ctx;
    const int64_t min_ctx = target < 1024 ? target : 1024;

    int64_t fixed = p->nonexpert + p->workspace + p->reserve;
    int64_t free_b = rq->vram_bytes - fixed;
    if (free_b < min_ctx * p->kv_per_token)
        return kr_fail(KR_ERR_ARG,
                       "nothing fits in %.2f GiB: non-expert weights %.2f GiB + workspace %.2f GiB + reserve %.2f GiB"
                       " + a %lld-token KV cache %.2f GiB = %.2f GiB; give more --vram, quantize more (--attention-bits,"
                       " --shared-bits, --dense-bits, --lm-head-bits), use --kv-dtype fp8 or a smaller --prefill-chunk",
                       rq->vram_bytes / 1073741824.0, p->nonexpert / 1073741824.0, p->workspace / 1073741824.0,
                       p->reserve / 1073741824.0, (long long)min_ctx, min_ctx * p->kv_per_token / 1073741824.0,
                       (fixed + min_ctx * p->kv_per_token) / 1073741824.0);
    int64_t kv_target = target * p->kv_per_token;
    int64_t left = free_b - kv_target; /* for experts, once the target context has its room */
    if (p->moe_layers == 0) {
        snprintf(p->expert_mode, sizeof p->expert_mode, "no routed experts (dense model)");
    } else if (left >= p->routed_total) {
        p->expert_layers_resident = p->moe_layers;
        snprintf(p->expert_mode, sizeof p->expert_mode, "persistent (all %lld layers resident)", (long long)p->moe_layers);
    } else if (left >= 2 * p->routed_layer) {
        int64_t n = left / (2 * p->routed_layer); /* double-buffered: copy the next group while one computes */
        n = n > p->moe_layers ? p->moe_layers : n;
        p->expert_layers_resident = 2 * n;
        if (n == 1)
            snprintf(p->expert_mode, sizeof p->expert_mode, "chunked (1 layer at a time, double-buffered)");
        else
            snprintf(p->expert_mode, sizeof p->expert_mode, "layer-grouped (%lld layers at a time, double-buffered)",
                     (long long)n);
    } else {
        snprintf(p->expert_mode, sizeof p->expert_mode, "none on the GPU (routed experts run on the CPU)");
    }
    int64_t experts_gpu = p->expert_layers_resident * p->routed_layer;
    if (p->expert_layers_resident == p->moe_layers && p->moe_layers)
        experts_gpu = p->routed_total;
    /* the KV cache gets everything the experts do not use, up to the model's context */
    int64_t kv_room = free_b - experts_gpu;
    p->kv_tokens = kv_room / p->kv_per_token;
    if (p->kv_tokens > max_ctx)
        p->kv_tokens = max_ctx;
    p->kv_bytes = p->kv_tokens * p->kv_per_token;
    p->unused = rq->vram_bytes - fixed - experts_gpu - p->kv_bytes;
    return KR_OK;
}
