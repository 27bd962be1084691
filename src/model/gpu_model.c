/* The GPU forward's start-up and teardown: the VRAM plan, the pipeline stages and the links between them,
 * where the routed experts go (residency in VRAM or the CPU), the weight uploads per stage. The layout of
 * the work is described in gpu_model_impl.h. */
#include "model/gpu_model_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The VRAM planner's request (vram_plan.h) for what this path keeps: non-expert weights in BF16, the
 * routed experts at the CPU quantization's bits, the KV cache and a prefill chunk's workspace. */
static kr_vram_request plan_request(const kr_gpu_model *g, kr_model *m, const kr_quant_config *qc) {
    const kr_hparams *hp = &m->hp;
    kr_vram_request rq = {.qc = *qc, .kv_fp8 = g->cfg.kv_fp8, .prefill_chunk = g->chunk,
                          .experts_cpu = g->cfg.experts_cpu};
    rq.qc.shared_bits = rq.qc.attention_bits = rq.qc.dense_bits = rq.qc.lm_head_bits = 0;
    for (int l = 0; l < hp->n_layers; l++) {
        const kr_qexpert *qe = hp->layer_is_moe[l] ? kr_model_routed_qexperts(m, l) : NULL;
        if (qe) {
            rq.qc.routed_bits = qe[0].w13.bits;
            rq.qc.group_size = qe[0].w13.gs;
            break;
        }
    }
    return rq;
}

/* The plan of one GPU at start-up. It refuses, with the sizes, a GPU the non-expert part does not fit;
 * otherwise it says how much the experts may take (what is left after a KV cache for min(max_pos, 32K)
 * tokens). */
static kr_status plan_vram(kr_gpu_model *gm, kr_model *m, const kr_quant_config *qc) {
    const kr_hparams *hp = &m->hp;
    gpu_stage *g = &gm->st[0];
    kr_cuda_device_info info;
    KR_TRY(kr_cuda_device_query(g->device, &info));
    kr_vram_request rq = plan_request(gm, m, qc);
    rq.vram_bytes = (int64_t)info.free_bytes;
    if (gm->cfg.vram_cap && gm->cfg.vram_cap < rq.vram_bytes)
        rq.vram_bytes = gm->cfg.vram_cap;
    kr_vram_plan p;
    if (kr_vram_plan_make(hp, &rq, &p) != KR_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", kr_error());
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu on %s: %s", info.name, why);
    }
    g->first = 0;
    g->last = (int)hp->n_layers;
    int64_t max_ctx = hp->max_pos > 0 && hp->max_pos < 32768 ? hp->max_pos : 32768;
    g->expert_budget = rq.vram_bytes - p.nonexpert - p.workspace - p.reserve - max_ctx * p.kv_per_token;
    if (g->expert_budget < 0)
        g->expert_budget = 0;
    fprintf(stderr, "krasis: VRAM plan: %.2f GiB usable on %s; non-expert weights %.2f GiB, workspace %.2f GiB, KV "
            "%lld bytes a token (%s); %.2f GiB left for routed experts\n",
            rq.vram_bytes / 1073741824.0, info.name, p.nonexpert / 1073741824.0, p.workspace / 1073741824.0,
            (long long)p.kv_per_token, gm->cfg.kv_fp8 ? "fp8" : "bf16", g->expert_budget / 1073741824.0);
    return KR_OK;
}

/* --pp: the planner's split of the layers (kr_pp_plan_make) over the stages' devices, each with its free
 * memory (shared evenly where one device holds several stages) under --vram. Refuses, naming the stage
 * and what it misses, when one does not fit its layers and their KV cache for min(max_pos, 32K) tokens. */
static kr_status plan_stages(kr_gpu_model *gm, kr_model *m, const kr_quant_config *qc) {
    const kr_hparams *hp = &m->hp;
    kr_vram_request rq = plan_request(gm, m, qc);
    int64_t vram[KR_GPU_MAX_STAGES];
    for (int s = 0; s < gm->n_stages; s++) {
        kr_cuda_device_info info;
        KR_TRY(kr_cuda_device_query(gm->st[s].device, &info));
        int sharing = 0;
        for (int t = 0; t < gm->n_stages; t++)
            sharing += gm->st[t].device == gm->st[s].device;
        vram[s] = (int64_t)info.free_bytes / sharing;
        if (gm->cfg.vram_cap && gm->cfg.vram_cap < vram[s])
            vram[s] = gm->cfg.vram_cap;
    }
    kr_pp_plan p;
    if (kr_pp_plan_make(hp, &rq, gm->n_stages, vram, &p) != KR_OK) {
        char why[1536];
        snprintf(why, sizeof why, "%s", kr_error());
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: %s", why);
    }
    for (int s = 0; s < gm->n_stages; s++) {
        gpu_stage *g = &gm->st[s];
        const kr_pp_stage *t = &p.stage[s];
        g->first = t->first;
        g->last = t->last;
        g->expert_budget = t->experts + t->free_bytes;
        fprintf(stderr, "krasis: VRAM plan, stage %d on GPU %d: layers [%d, %d), %.2f GiB usable; non-expert weights "
                "%.2f GiB, KV %.2f GiB (%lld tokens), workspace %.2f GiB; %.2f GiB left for routed experts\n", s,
                g->device, g->first, g->last, t->vram_bytes / 1073741824.0, t->weights / 1073741824.0,
                t->kv_bytes / 1073741824.0, (long long)p.kv_tokens, t->workspace / 1073741824.0,
                g->expert_budget / 1073741824.0);
    }
    return KR_OK;
}

/* 1 MiB of a known pattern from device a to device b by the hand-off's own copy, read back on the host */
static kr_status test_copy(int a, int b, bool *same) {
    const size_t n = 1 << 18, bytes = n * sizeof(uint32_t);
    uint32_t *h = malloc(2 * bytes);
    void *da = NULL, *db = NULL;
    *same = false;
    kr_status st = h ? kr_cuda_set_device(a) : kr_fail(KR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; h && i < n; i++)
        h[i] = (uint32_t)i * 2654435761u ^ 0x5bd1e995u; /* distinct words: zeros, a shift or a part show */
    if (st == KR_OK)
        st = kr_cuda_malloc(&da, bytes, "the pipeline's test copy");
    if (st == KR_OK)
        st = kr_cuda_to_device(da, h, bytes, NULL);
    if (st == KR_OK)
        st = kr_cuda_stream_sync(NULL);
    if (st == KR_OK)
        st = kr_cuda_set_device(b);
    if (st == KR_OK)
        st = kr_cuda_malloc(&db, bytes, "the pipeline's test copy");
    if (st == KR_OK)
        st = kr_cuda_memset(db, 0, bytes, NULL);
    if (st == KR_OK)
        st = kr_cuda_copy_peer(db, b, da, a, bytes, NULL);
    if (st == KR_OK)
        st = kr_cuda_to_host(h + n, db, bytes, NULL);
    if (st == KR_OK)
        st = kr_cuda_stream_sync(NULL);
    if (st == KR_OK)
        *same = memcmp(h, h + n, bytes) == 0;
    kr_cuda_free(db); /* b is current */
    kr_cuda_set_device(a);
    kr_cuda_free(da);
    free(h);
    return st;
}

/* How stage s - 1 hands its residual stream to stage s, decided once: a device-to-device copy where both
 * stages are on one device or their devices have peer access (enabled both ways), once a test copy of a
 * known pattern read back on the host came out right (some consumer cards report peer access and return
 * zeros); else, or when asked (pp_host_bounce, KRASIS_PP_BOUNCE=1), through pinned host memory. */
static kr_status choose_link(kr_gpu_model *gm, int s) {
    int a = gm->st[s - 1].device, b = gm->st[s].device;
    const char *env = getenv("KRASIS_PP_BOUNCE");
    char why[512] = "";
    bool same = false;
    if (gm->cfg.pp_host_bounce || (env && atoi(env) > 0))
        snprintf(why, sizeof why, "asked for (KRASIS_PP_BOUNCE=1 or the config's pp_host_bounce)");
    else if (a != b && !(kr_cuda_can_access_peer(a, b) && kr_cuda_can_access_peer(b, a)))
        snprintf(why, sizeof why, "the driver reports no peer access between GPUs %d and %d", a, b);
    else if (a != b && (kr_cuda_set_device(b) != KR_OK || kr_cuda_enable_peer(a) != KR_OK ||
                        kr_cuda_set_device(a) != KR_OK || kr_cuda_enable_peer(b) != KR_OK))
        snprintf(why, sizeof why, "enabling peer access failed: %s", kr_error());
    else if (test_copy(a, b, &same) != KR_OK)
        snprintf(why, sizeof why, "the test copy failed: %s", kr_error());
    else if (!same)
        snprintf(why, sizeof why, "a test copy of a known pattern from GPU %d to GPU %d came back wrong, although the "
                 "driver reports peer access", a, b);
    gm->link[s] = why[0] ? LINK_BOUNCE : LINK_COPY;
    fprintf(stderr, "krasis: pipeline stage %d (GPU %d) -> stage %d (GPU %d): %s%s\n", s - 1, a, s, b,
            why[0] ? "through pinned host memory: " : a == b ? "device copy (one GPU), test copy checked"
                                                            : "peer copy, test copy checked",
            why);
    return KR_OK;
}


/* see gpu_model_impl.h */
void kr_gpu_buffer_bytes(const kr_model *m, bool experts_on_gpu, bool last_stage, int64_t n, int64_t T, int64_t ctx,
                         bool all_positions, size_t out[B_COUNT]) {
    const kr_hparams *hp = &m->hp;
    bool mla = hp->family == KR_FAMILY_DEEPSEEK2;
    int64_t D = hp->hidden, H = hp->n_heads, f = sizeof(float), b = 2, q = H * hp->head_dim;
    int64_t W = hp->kv_lora_rank + hp->qk_rope_dim, kvw = mla ? W : hp->n_kv_heads * hp->head_dim;
    int64_t o = H * (mla ? hp->v_head_dim : hp->head_dim), shared = hp->n_shared > 0 ? hp->n_shared : 1;
    int64_t inter = hp->moe_intermediate * shared > hp->intermediate ? hp->moe_intermediate * shared : hp->intermediate;
    int E = hp->router.n_experts > 0 ? hp->router.n_experts : 1, K = hp->router.top_k > 0 ? hp->router.top_k : 1;
    int64_t rows = all_positions ? (T < 256 ? T : 256) : 1; /* logits rows at a time: they pass through B_XB */
    memset(out, 0, B_COUNT * sizeof *out);
    out[B_X] = (size_t)(n * D * f);
    out[B_XN] = out[B_MOE] = (size_t)(T * D * f);
    out[B_XB] = (size_t)(T * D * b);
    out[B_Q] = (size_t)(T * q * f);
    out[B_QA] = (size_t)(T * (hp->q_lora_rank ? hp->q_lora_rank : 1) * f);
    out[B_QB] = (size_t)(T * (q > hp->q_lora_rank ? q : hp->q_lora_rank) * b);
    out[B_KV] = out[B_K] = out[B_V] = (size_t)(T * kvw * f);
    out[B_O] = (size_t)(T * o * b);
    out[B_GU] = (size_t)(T * 2 * inter * b);
    out[B_ACT] = (size_t)(T * inter * b);
    out[B_LOGITS] = (size_t)(T * E * f);
    out[B_IDX] = (size_t)(T * K) * sizeof(int32_t);
    out[B_W] = (size_t)(T * K * f);
    if (experts_on_gpu)
        out[B_MOE_WS] = kr_gpu_moe_ws_bytes(E, hp->moe_intermediate, T, K);
    if (last_stage)
        out[B_OUT] = (size_t)(rows * hp->vocab * f);
    if (!mla) {
        out[B_ATT] = (size_t)(T * q * b);
    } else if (ctx > 0) {
        out[B_QABS] = (size_t)(T * H * W * f);
        out[B_ATT] = (size_t)(T * H * hp->kv_lora_rank * b);
        out[B_KX] = (size_t)(ctx * q * b);
        out[B_VX] = (size_t)(ctx * o * b);
    }
}

/* What a stage's experts may take now: the plan's share, and no more than is free after the working
 * buffers of a prompt chunk and a KV cache for min(max_pos, 32K) tokens (less 512 MiB of slack). 0 when
 * nothing is left: the experts then stay on the CPU (auto) or the mode is refused. */
static int64_t expert_budget(const kr_gpu_model *gm, const gpu_stage *g, const kr_model *m) {
    const kr_hparams *hp = &m->hp;
    kr_cuda_device_info info;
    if (kr_cuda_device_query(g->device, &info) != KR_OK)
        return 0;
    int64_t ctx = hp->max_pos > 0 && hp->max_pos < 32768 ? hp->max_pos : 32768;
    kr_cuda_kv_shape ks = kr_kv_shape_of(hp, gm->cfg.kv_fp8);
    /* 1.5x: growing the cache holds the old and the new one for a moment */
    int64_t kv = 3 * ctx * kr_cuda_kv_bytes_per_token(&ks) * (g->last - g->first) / (hp->n_layers > 0 ? 2 * hp->n_layers : 2);
    size_t sz[B_COUNT];
    kr_gpu_buffer_bytes(m, true, g->last == hp->n_layers, ctx, gm->chunk, ctx, true, sz);
    int64_t working = 0;
    for (int i = 0; i < B_COUNT; i++)
        working += (int64_t)sz[i];
    int64_t free_now = (int64_t)info.free_bytes - working - kv - (512ll << 20);
    int64_t b = g->expert_budget < free_now ? g->expert_budget : free_now;
    return b > 0 ? b : 0;
}

/* Puts the routed experts in VRAM per cfg.experts (after the other weights, which the budget counts).
 * With auto, anything that stops it leaves them on the CPU and says why in `why`; an explicit mode that
 * cannot run is an error. */
static kr_status place_experts(kr_gpu_model *gm, kr_model *m, const kr_quant_config *qc, char *why, size_t n) {
    const kr_hparams *hp = &m->hp;
    bool asked = gm->cfg.experts.kind != KR_EXPERTS_AUTO;
    int n_moe = 0, first = -1;
    for (int l = 0; l < hp->n_layers; l++) {
        gm->moe_index[l] = hp->layer_is_moe[l] ? n_moe++ : -1;
        first = first < 0 && hp->layer_is_moe[l] ? l : first;
    }
    const kr_qexpert *qe = first >= 0 ? kr_model_routed_qexperts(m, first) : NULL;
    kr_gpu_moe_geom geom;
    kr_status st = first < 0 ? kr_fail(KR_ERR_ARG, "the model has no MoE layers")
                   : !qe     ? kr_fail(KR_ERR_ARG, "the routed experts are not quantized (give --expert-bits 4|8)")
                             : kr_gpu_moe_geom_make(hp->router.n_experts, hp->hidden, qe[0].inter, qe[0].w13.bits,
                                                    qe[0].w13.gs, &geom);
    if (st == KR_OK) {
        st = kr_model_open_gpu_cache(m, qc, &gm->gcache);
        gm->have_gcache = st == KR_OK;
    }
    size_t off = 0;
    for (int s = 0; st == KR_OK && s < gm->n_stages; s++) { /* each stage its own layers' residency */
        gpu_stage *g = &gm->st[s];
        int n_s = 0;
        g->moe0 = 0;
        for (int l = 0; l < g->last; l++) {
            if (hp->layer_is_moe[l] && l < g->first)
                g->moe0++;
            else if (hp->layer_is_moe[l])
                n_s++;
        }
        if (n_s == 0)
            continue;
        if (gm->n_stages > 1)
            st = kr_cuda_set_device(g->device);
        int64_t budget = expert_budget(gm, g, m); /* 0 would mean "all free memory" to the residency */
        if (st == KR_OK && budget <= 0)
            st = kr_fail(KR_ERR_ARG, "no VRAM is left for routed experts%s after the non-expert weights, the working "
                         "buffers and a KV cache (give more --vram, or --expert-mode cpu)",
                         gm->n_stages > 1 ? " on a pipeline stage" : "");
        kr_gpu_experts_config xc = {.mode = gm->cfg.experts, .geom = gm->gcache.geom, .n_layers = n_s,
                                    .host = gm->gcache.layer + g->moe0, .vram_budget = budget};
        if (st == KR_OK)
            st = kr_gpu_experts_create(&xc, &g->experts);
        kr_gpu_experts_stats xs;
        if (st == KR_OK)
            st = kr_gpu_experts_stats_get(g->experts, &xs); /* persistent: waits for the upload */
        if (st != KR_OK)
            break;
        g->decode_on_gpu = xs.mode.kind == KR_EXPERTS_PERSISTENT;
        g->group_moe_layers = xs.mode.group > 0 ? xs.mode.group : n_s;
        g->expert_bytes = xs.vram_bytes;
        char mode[64], label[32] = "";
        kr_expert_mode_str(&xs.mode, mode, sizeof mode);
        if (gm->n_stages > 1)
            snprintf(label, sizeof label, "stage %d: ", s);
        if (off < n)
            off += (size_t)snprintf(why + off, n - off, "%s%s%s, %.2f GB of VRAM%s", off ? "; " : "", label, mode,
                                    xs.vram_bytes / 1e9,
                                    g->decode_on_gpu ? "; decode on the GPU too" : "; decode on the CPU (hybrid)");
    }
    if (st != KR_OK) {
        if (asked)
            return st;
        snprintf(why, n, "%s", kr_error());
        for (int s = 0; s < gm->n_stages; s++) {
            if (gm->n_stages > 1)
                kr_cuda_set_device(gm->st[s].device);
            kr_gpu_experts_destroy(gm->st[s].experts);
            gm->st[s].experts = NULL;
            gm->st[s].decode_on_gpu = false;
        }
    }
    return KR_OK;
}

/* A stage's stream, events, cuBLASLt handle and weights, on its device (the last stage: the final norm
 * and lm_head too). */
static kr_status create_stage(kr_gpu_model *gm, const kr_model *m, int s) {
    const kr_hparams *hp = &m->hp;
    gpu_stage *g = &gm->st[s];
    KR_TRY(kr_cuda_set_device(g->device));
    KR_TRY(kr_cuda_stream_create(&g->s));
    KR_TRY(kr_cuda_event_create(&g->copied));
    KR_TRY(kr_cuda_event_create(&g->done));
    KR_TRY(kr_cuda_blas_create(&g->blas));
    for (int l = g->first; l < g->last; l++)
        KR_TRY(kr_gpu_upload_layer(g, m, l));
    if (g->last == hp->n_layers) {
        KR_TRY(kr_gpu_upload_floats(g, m->final_norm, hp->hidden, &gm->final_norm));
        KR_TRY(kr_gpu_upload_matrix(g, &m->lm_head, "lm_head", &gm->lm_head));
    }
    KR_TRY(kr_gpu_upload_floats(g, m->inv_freq, hp->rope.dim / 2, &g->inv_freq));
    g->rope = (kr_cuda_rope_params){.rope_dim = hp->rope.dim, .interleaved = hp->rope.interleaved,
                                    .attention_factor = (float)hp->rope.attention_factor, .inv_freq = g->inv_freq};
    return KR_OK;
}

kr_status kr_gpu_model_create(kr_model *m, const kr_quant_config *qc) {
    const kr_hparams *hp = &m->hp;
    const kr_gpu_config *cfg = &qc->gpu;
    int n_dev = kr_cuda_device_count();
    if (n_dev == 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: no usable CUDA device (%s)", kr_cuda_no_device_reason());
    if (hp->family == KR_FAMILY_DEEPSEEK2 &&
        (hp->qk_nope_dim < 1 || hp->kv_lora_rank + hp->qk_rope_dim > KR_CUDA_ATTN_MAX_QK ||
         hp->kv_lora_rank > KR_CUDA_ATTN_MAX_V))
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: MLA with qk_nope_head_dim %lld, kv_lora_rank %lld and "
                       "qk_rope_head_dim %lld is not supported on the GPU (needs qk_nope_head_dim >= 1, kv_lora_rank "
                       "+ qk_rope_head_dim <= %d, kv_lora_rank <= %d)", (long long)hp->qk_nope_dim,
                       (long long)hp->kv_lora_rank, (long long)hp->qk_rope_dim, KR_CUDA_ATTN_MAX_QK,
                       KR_CUDA_ATTN_MAX_V);
    if (hp->family != KR_FAMILY_DEEPSEEK2 && hp->head_dim > KR_CUDA_ATTN_MAX_V)
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: head_dim %lld is more than the GPU attention takes (%d)",
                       (long long)hp->head_dim, KR_CUDA_ATTN_MAX_V);
    if (hp->router.n_experts > KR_CUDA_ROUTER_MAX_EXPERTS)
        return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: %d experts is more than the GPU router takes (%d)",
                       hp->router.n_experts, KR_CUDA_ROUTER_MAX_EXPERTS);
    int n = cfg->n_stages ? cfg->n_stages : cfg->n_devices ? cfg->n_devices : 1;
    if (n < 1 || n > KR_GPU_MAX_STAGES) /* the CLI refuses these too; a library caller may not */
        return kr_fail(KR_ERR_ARG, "--pp %d: from 1 to %d pipeline stages", n, KR_GPU_MAX_STAGES);
    if (cfg->prefill_chunk < 0 || cfg->prefill_chunk > KR_GPU_MAX_PREFILL_CHUNK)
        return kr_fail(KR_ERR_ARG, "--prefill-chunk %lld: from 1 to %d tokens (0: the default)",
                       (long long)cfg->prefill_chunk, KR_GPU_MAX_PREFILL_CHUNK);
    if (cfg->n_devices && cfg->n_devices != n)
        return kr_fail(KR_ERR_ARG, "--pp %d with --gpus listing %d devices: give one device per stage", n,
                       cfg->n_devices);
    if (n > hp->n_layers)
        return kr_fail(KR_ERR_ARG, "--pp %d: the model has only %lld layers", n, (long long)hp->n_layers);
    for (int s = 0; s < n; s++)
        if ((cfg->n_devices ? cfg->devices[s] : s) >= n_dev)
            return kr_fail(KR_ERR_ARG, "%s: there is no CUDA device %d here (%d found; --gpus picks the devices, "
                           "and one may repeat: --gpus 0,0)", cfg->n_devices ? "--gpus" : "--pp",
                           cfg->n_devices ? cfg->devices[s] : s, n_dev);
    kr_gpu_model *g = calloc(1, sizeof *g);
    if (!g)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    g->cfg = *cfg;
    g->n_stages = n;
    g->chunk = cfg->prefill_chunk > 0 ? cfg->prefill_chunk : 4096;
    g->profile = getenv("KRASIS_GPU_PROFILE") && atoi(getenv("KRASIS_GPU_PROFILE")) > 0;
    g->layers = calloc((size_t)hp->n_layers, sizeof *g->layers);
    g->moe_index = calloc((size_t)hp->n_layers, sizeof *g->moe_index);
    for (int s = 0; s < n; s++) {
        gpu_stage *S = &g->st[s];
        S->device = cfg->n_devices ? cfg->devices[s] : s;
        S->layers = g->layers;
        S->moe_index = g->moe_index;
        S->gpu_min_tokens = cfg->experts_min_tokens > 0 ? cfg->experts_min_tokens : 64;
        S->profile = g->profile;
    }
    kr_status st = g->layers && g->moe_index ? KR_OK : kr_fail(KR_ERR_NOMEM, "out of memory");
    if (st == KR_OK)
        st = kr_cuda_set_device(g->st[0].device);
    if (st == KR_OK)
        st = n == 1 ? plan_vram(g, m, qc) : plan_stages(g, m, qc);
    for (int s = 0; st == KR_OK && s < n; s++)
        st = create_stage(g, m, s);
    for (int s = 1; st == KR_OK && s < n; s++)
        st = choose_link(g, s);
    char where[768] = "on the CPU (hybrid): --expert-mode cpu";
    if (st == KR_OK && !cfg->experts_cpu && hp->router.n_experts > 0) {
        char why[640] = "";
        st = place_experts(g, m, qc, why, sizeof why);
        bool in_vram = false;
        for (int s = 0; s < n; s++)
            in_vram |= g->st[s].experts != NULL;
        snprintf(where, sizeof where, "%s: %s", in_vram ? "in VRAM" : "on the CPU (hybrid)", why);
    }
    if (st == KR_OK && n > 1)
        st = kr_cuda_set_device(g->st[0].device); /* what a multi-stage call leaves current */
    if (st != KR_OK) {
        kr_gpu_model_destroy(g);
        return st;
    }
    int64_t weights = 0;
    for (int s = 0; s < n; s++)
        weights += g->st[s].weight_bytes;
    fprintf(stderr, "krasis: GPU forward: %.2f GB of BF16 non-expert weights in VRAM%s; routed experts %s\n",
            weights / 1e9, n > 1 ? " over the pipeline's stages" : "", where);
    m->gpu = g;
    return KR_OK;
}

void kr_gpu_model_destroy(kr_gpu_model *g) {
    if (!g)
        return;
    double wait = 0, cpu = 0;
    for (int s = 0; s < g->n_stages; s++) {
        wait += g->st[s].prof_wait;
        cpu += g->st[s].prof_cpu;
    }
    if (g->profile && g->prof_steps)
        fprintf(stderr, "krasis: GPU profile, %lld decode steps: %.3f ms a step; per step %.3f ms waiting for the GPU's "
                "part of the MoE layers (attention, norms, router, hand-off), %.3f ms in the CPU experts, %.3f ms "
                "else (expert output upload, dense layers, lm_head, host overhead)\n",
                (long long)g->prof_steps, 1e3 * g->prof_total / g->prof_steps, 1e3 * wait / g->prof_steps,
                1e3 * cpu / g->prof_steps, 1e3 * (g->prof_total - wait - cpu) / g->prof_steps);
    for (int s = 0; s < g->n_stages; s++) { /* the residencies read the cache file's blocks: first */
        gpu_stage *S = &g->st[s];
        kr_cuda_set_device(S->device);
        if (S->s)
            kr_cuda_stream_sync(S->s);
        kr_gpu_experts_destroy(S->experts);
    }
    if (g->have_gcache)
        kr_gcache_close(&g->gcache);
    for (int s = 0; s < g->n_stages; s++) {
        gpu_stage *S = &g->st[s];
        kr_cuda_set_device(S->device);
        for (int i = 0; i < S->n_mem; i++)
            kr_cuda_free(S->mem[i]);
        for (int i = 0; i < B_COUNT; i++)
            kr_cuda_free(S->buf[i].p);
        kr_cuda_host_free(S->h_x);
        kr_cuda_host_free(S->h_out);
        kr_cuda_host_free(S->h_idx);
        kr_cuda_host_free(S->h_w);
        kr_cuda_blas_destroy(S->blas);
        if (S->copied)
            kr_cuda_event_destroy(S->copied);
        if (S->done)
            kr_cuda_event_destroy(S->done);
        if (S->s)
            kr_cuda_stream_destroy(S->s);
        free(S->mem);
    }
    if (g->n_stages > 1)
        kr_cuda_set_device(g->st[0].device);
    kr_cuda_host_free(g->h_emb);
    kr_cuda_host_free(g->h_bounce);
    free(g->layers);
    free(g->moe_index);
    free(g);
}
