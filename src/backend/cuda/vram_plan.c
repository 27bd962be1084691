/* VRAM planner arithmetic (see vram_plan.h). Plain C: part of every build. */
#include "backend/cuda/vram_plan.h"

#include <stdlib.h>
#include <math.h>
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
    if (end == s || !(v > 0) || !isfinite(v)) /* NaN and inf too */
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

/* The routed experts' mode for `left` bytes of VRAM over n MoE layers of `layer` bytes each: all resident,
 * N layers at a time double-buffered, one layer double-buffered, or none (they run on the CPU). Returns
 * the bytes they take; *resident is the number of layers in VRAM at once. */
static int64_t choose_experts(int64_t left, int64_t n, int64_t layer, int64_t *resident, char *mode, size_t size) {
    *resident = 0;
    if (n == 0) {
        snprintf(mode, size, "no routed experts (dense model)");
    } else if (left >= n * layer) {
        *resident = n;
        snprintf(mode, size, "persistent (all %lld layers resident)", (long long)n);
    } else if (left >= 2 * layer) {
        int64_t g = left / (2 * layer); /* double-buffered: copy the next group while one computes */
        g = g > n ? n : g;
        *resident = 2 * g;
        if (g == 1)
            snprintf(mode, size, "chunked (1 layer at a time, double-buffered)");
        else
            snprintf(mode, size, "layer-grouped (%lld layers at a time, double-buffered)", (long long)g);
    } else {
        snprintf(mode, size, "none on the GPU (routed experts run on the CPU)");
    }
    return *resident >= n ? n * layer : *resident * layer;
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
    int64_t experts_gpu = choose_experts(left, p->moe_layers, p->routed_layer, &p->expert_layers_resident,
                                         p->expert_mode, sizeof p->expert_mode);
    /* the KV cache gets everything the experts do not use, up to the model's context */
    int64_t kv_room = free_b - experts_gpu;
    p->kv_tokens = kv_room / p->kv_per_token;
    if (p->kv_tokens > max_ctx)
        p->kv_tokens = max_ctx;
    p->kv_bytes = p->kv_tokens * p->kv_per_token;
    p->unused = rq->vram_bytes - fixed - experts_gpu - p->kv_bytes;
    return KR_OK;
}

/* ------------------------------------------------------------------------- pipeline stages (--pp N) */

/* Non-expert bytes of layer l, by the same arithmetic as kr_vram_plan_make's totals: attention, its two
 * norms, and a router + shared experts (MoE layer) or a dense MLP. */
static int64_t layer_weight_bytes(const kr_hparams *hp, const kr_quant_config *qc, int64_t l) {
    int gs = qc->group_size > 0 ? qc->group_size : 128;
    int64_t D = hp->hidden, E = hp->router.n_experts;
    int64_t b = kr_weight_bytes(attention_params(hp), qc->attention_bits, gs) + 2 * D * 2;
    if (hp->layer_is_moe && hp->layer_is_moe[l])
        return b + E * D * 2 + E * 4 + kr_weight_bytes(hp->n_shared * 3 * D * hp->moe_intermediate, qc->shared_bits, gs);
    return b + kr_weight_bytes(3 * D * hp->intermediate, qc->dense_bits, gs);
}

/* What the DP below splits: per layer its bytes (non-expert weights + KV at the target context, plus its
 * routed experts when they are balanced too), per stage a constant (workspace + reserve, and the final
 * norm + lm_head on the last). */
typedef struct {
    int64_t L, n;
    const int64_t *vram;
    int64_t *prefix;     /* [L + 1] cumulative layer bytes */
    int64_t fixed, last_extra;
} pp_costs;

static double stage_ratio(const pp_costs *c, int s, int64_t a, int64_t b) {
    int64_t bytes = c->prefix[b] - c->prefix[a] + c->fixed + (s == c->n - 1 ? c->last_extra : 0);
    return (double)bytes / (double)c->vram[s];
}

/* The contiguous split of L layers into n stages (each at least one layer) that minimizes the largest
 * fraction of its GPU any stage uses: exact, by dynamic programming over (stage, first layer of the
 * next stage), O(n L^2). cut[s] is stage s's first layer, cut[n] = L. Returns that largest fraction. */
static double pp_split(const pp_costs *c, int64_t *cut) {
    int64_t L = c->L, n = c->n;
    double *best = malloc((size_t)((n + 1) * (L + 1)) * sizeof *best);
    int64_t *from = malloc((size_t)((n + 1) * (L + 1)) * sizeof *from);
    if (!best || !from) {
        free(best);
        free(from);
        return -1;
    }
#define AT(s, j) ((s) * (L + 1) + (j))
    /* best[s][j]: layers [0, j) over stages [0, s) */
    for (int64_t j = 0; j <= L; j++) {
        best[AT(1, j)] = j >= 1 ? stage_ratio(c, 0, 0, j) : 1e300; /* a stage holds at least one layer */
        from[AT(1, j)] = 0;
    }
    for (int64_t s = 2; s <= n; s++)
        for (int64_t j = 0; j <= L; j++) {
            best[AT(s, j)] = 1e300;
            from[AT(s, j)] = 0;
            for (int64_t i = s - 1; i < j; i++) {
                double r = stage_ratio(c, (int)s - 1, i, j), prev = best[AT(s - 1, i)];
                double v = r > prev ? r : prev;
                if (v < best[AT(s, j)]) {
                    best[AT(s, j)] = v;
                    from[AT(s, j)] = i;
                }
            }
        }
    double worst = best[AT(n, L)];
    cut[n] = L;
    for (int64_t s = n; s >= 1; s--)
        cut[s - 1] = from[AT(s, cut[s])];
#undef AT
    free(best);
    free(from);
    return worst;
}

kr_status kr_pp_plan_make(const kr_hparams *hp, const kr_vram_request *rq, int n, const int64_t *vram, kr_pp_plan *p) {
    memset(p, 0, sizeof *p);
    const kr_quant_config *qc = &rq->qc;
    int64_t L = hp->n_layers;
    if (n < 1 || n > KR_PP_MAX_STAGES)
        return kr_fail(KR_ERR_ARG, "--pp %d: expected 1 to %d pipeline stages", n, KR_PP_MAX_STAGES);
    if (n > L)
        return kr_fail(KR_ERR_ARG, "--pp %d: the model has only %lld layers (a stage holds at least one)", n,
                       (long long)L);
    for (int s = 0; s < n; s++)
        if (vram[s] <= 0)
            return kr_fail(KR_ERR_ARG, "--vram: GPU %d of the pipeline has no memory size", s);
    p->n_stages = n;
    int gs = qc->group_size > 0 ? qc->group_size : 128;
    int64_t D = hp->hidden, E = hp->router.n_experts, moe_total = 0;
    for (int64_t l = 0; l < L; l++)
        moe_total += hp->layer_is_moe && hp->layer_is_moe[l];
    int64_t routed_layer = kr_weight_bytes(E * 3 * D * hp->moe_intermediate, qc->routed_bits, gs);
    int64_t workspace = workspace_bytes(hp, rq, moe_total), reserve = 512 * MiB;
    kr_cuda_kv_shape ks = kr_kv_shape_of(hp, rq->kv_fp8);
    ks.n_layers = 1;
    p->kv_per_token_layer = kr_cuda_kv_bytes_per_token(&ks);
    int64_t max_ctx = hp->max_pos > 0 ? hp->max_pos : 32768;
    int64_t target = rq->ctx_target > 0 ? rq->ctx_target : (max_ctx < 32768 ? max_ctx : 32768);
    p->kv_tokens = target > max_ctx ? max_ctx : target;
    int64_t kv_layer = p->kv_tokens * p->kv_per_token_layer;

    int64_t *prefix = malloc((size_t)(L + 1) * sizeof *prefix), cut[KR_PP_MAX_STAGES + 1];
    if (!prefix)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    pp_costs c = {.L = L, .n = n, .vram = vram, .prefix = prefix, .fixed = workspace + reserve,
                  .last_extra = D * 2 + kr_weight_bytes(hp->vocab * D, qc->lm_head_bits, gs)};
    /* First try to balance everything, routed experts included: if that fits every GPU, all experts are
     * resident. Otherwise the experts cannot all be resident anyway, so balance what must fit (weights,
     * KV, workspace) and let each stage's experts take what its GPU has left. */
    double worst = -1;
    for (int with_experts = moe_total && !rq->experts_cpu ? 1 : 0; with_experts >= 0; with_experts--) {
        prefix[0] = 0;
        for (int64_t l = 0; l < L; l++)
            prefix[l + 1] = prefix[l] + layer_weight_bytes(hp, qc, l) + kv_layer +
                            (with_experts && hp->layer_is_moe[l] ? routed_layer : 0);
        worst = pp_split(&c, cut);
        p->experts_balanced = with_experts;
        if (worst < 0 || worst <= 1.0)
            break;
    }
    free(prefix);
    if (worst < 0)
        return kr_fail(KR_ERR_NOMEM, "out of memory");

    char missing[1024] = "";
    size_t off = 0;
    for (int s = 0; s < n; s++) {
        kr_pp_stage *st = &p->stage[s];
        st->first = (int)cut[s];
        st->last = (int)cut[s + 1];
        st->vram_bytes = vram[s];
        st->workspace = workspace;
        st->reserve = reserve;
        for (int64_t l = st->first; l < st->last; l++) {
            st->weights += layer_weight_bytes(hp, qc, l);
            st->moe_layers += hp->layer_is_moe && hp->layer_is_moe[l];
        }
        if (s == n - 1)
            st->weights += c.last_extra;
        st->kv_bytes = (st->last - st->first) * kv_layer;
        int64_t left = vram[s] - st->weights - st->kv_bytes - workspace - reserve;
        if (left < 0) {
            snprintf(st->expert_mode, sizeof st->expert_mode, "-");
            if (off < sizeof missing)
                off += (size_t)snprintf(missing + off, sizeof missing - off,
                                        "%sstage %d (%.2f GiB, layers [%d, %d)) needs %.2f GiB: weights %.2f"
                                        " + KV %.2f + workspace %.2f + reserve %.2f GiB, %.2f GiB missing",
                                        off ? "; " : "", s, vram[s] / 1073741824.0, st->first, st->last,
                                        (vram[s] - left) / 1073741824.0, st->weights / 1073741824.0,
                                        st->kv_bytes / 1073741824.0, workspace / 1073741824.0, reserve / 1073741824.0,
                                        -left / 1073741824.0);
        } else if (rq->experts_cpu && st->moe_layers) {
            snprintf(st->expert_mode, sizeof st->expert_mode, "on the CPU (--expert-mode cpu)");
        } else {
            st->experts = choose_experts(left, st->moe_layers, routed_layer, &st->expert_layers_resident,
                                         st->expert_mode, sizeof st->expert_mode);
        }
        st->free_bytes = left - st->experts;
    }
    if (off)
        return kr_fail(KR_ERR_ARG,
                       "--pp %d does not fit a %lld-token KV cache: %s; give more GPUs or memory, quantize more "
                       "(--attention-bits, --shared-bits, --dense-bits, --lm-head-bits), use --kv-dtype fp8 or a "
                       "smaller --ctx",
                       n, (long long)p->kv_tokens, missing);
    return KR_OK;
}
