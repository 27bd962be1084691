/* Expert residency on the GPU: slots, copies, events (moe_residency.h has the contract).
 * Host code only (no kernels). A "slot" holds the blocks of one group of N consecutive MoE layers;
 * persistent mode is one slot holding every layer. Per slot: the group it holds, one event per layer
 * recorded on the copy stream when that layer's copy is done (compute waits on it, so layer 0 of a
 * group can start before the group's last layer has arrived), and one event recorded on the compute
 * stream by each release (the next copy into the slot waits on it). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/moe_residency.h"

#define STAGE_BYTES ((size_t)16 << 20)
#define RING 64
#define GIB 1073741824.0

typedef struct {
    uint8_t *dev;
    int group;            /* -1: empty */
    int in_use;           /* acquires not yet released */
    cudaEvent_t *copied;  /* [N] */
    cudaEvent_t released;
} slot;

typedef struct {
    cudaEvent_t a, b;
    uint64_t bytes;
    bool live;
} timing;

struct kr_gpu_experts {
    kr_gpu_experts_config cfg;
    const uint8_t **host;  /* [n_layers] */
    bool *pinned_here;     /* [n_layers]: registered by us (unregistered at destroy) */
    kr_expert_mode mode;
    int N, G, n_slots, cur_group;
    int pend_group, pend_slot; /* a prefetch waiting for its slot's last release (-1: none) */
    uint64_t lb;           /* layer bytes */
    slot slots[2];
    cudaStream_t copy;
    void *stage[2];        /* staging path */
    int stage_next;
    timing ring[RING];
    kr_gpu_experts_stats st;
};

/* ------------------------------------------------------------------ copies and their timing */

static void harvest(kr_gpu_experts *x, timing *t, bool wait) {
    if (!t->live)
        return;
    if (!wait && cudaEventQuery(t->b) != cudaSuccess)
        return;
    cudaEventSynchronize(t->b);
    float ms = 0;
    if (cudaEventElapsedTime(&ms, t->a, t->b) == cudaSuccess) {
        x->st.copy_ms += ms;
        x->st.bytes_copied += t->bytes;
    }
    t->live = false;
}

typedef struct {
    void *dst;
    const void *src;
    size_t n;
} stage_job;

/* runs on a CUDA-owned thread in copy-stream order: after the previous copy out of this buffer */
static void CUDART_CB stage_fn(void *p) {
    stage_job *j = (stage_job *)p;
    memcpy(j->dst, j->src, j->n);
    free(j);
}

static kr_status copy_block(kr_gpu_experts *x, uint8_t *dst, const uint8_t *src, size_t n) {
    if (x->st.registered) {
        KR_CU(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, x->copy));
        return KR_OK;
    }
    for (size_t o = 0; o < n; o += STAGE_BYTES) {
        size_t c = n - o < STAGE_BYTES ? n - o : STAGE_BYTES;
        void *buf = x->stage[x->stage_next];
        x->stage_next ^= 1;
        stage_job *j = (stage_job *)malloc(sizeof *j);
        if (!j)
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        *j = (stage_job){buf, src + o, c};
        cudaError_t e = cudaLaunchHostFunc(x->copy, stage_fn, j);
        if (e != cudaSuccess) {
            free(j);
            return kr_fail(KR_ERR_IO, "CUDA: staging an expert copy failed: %s", cudaGetErrorString(e));
        }
        KR_CU(cudaMemcpyAsync(dst + o, buf, c, cudaMemcpyHostToDevice, x->copy));
    }
    return KR_OK;
}

/* Copies group g into slot s on the copy stream, after the slot's last release. */
static kr_status issue_copy(kr_gpu_experts *x, int s, int g) {
    slot *sl = &x->slots[s];
    sl->group = g;
    KR_CU(cudaStreamWaitEvent(x->copy, sl->released, 0));
    timing *t = &x->ring[x->st.copies % RING];
    harvest(x, t, true); /* 64 copies back: long done in practice */
    KR_CU(cudaEventRecord(t->a, x->copy));
    int first = g * x->N, n = x->cfg.n_layers - first < x->N ? x->cfg.n_layers - first : x->N;
    for (int i = 0; i < n; i++) {
        KR_TRY(copy_block(x, sl->dev + (size_t)i * x->lb, x->host[first + i], x->lb));
        KR_CU(cudaEventRecord(sl->copied[i], x->copy));
    }
    KR_CU(cudaEventRecord(t->b, x->copy));
    t->bytes = (uint64_t)n * x->lb;
    t->live = true;
    x->st.copies++;
    return KR_OK;
}

/* ------------------------------------------------------------------ create / destroy */

static void free_slots(kr_gpu_experts *x) {
    for (int s = 0; s < 2; s++) {
        slot *sl = &x->slots[s];
        if (sl->dev)
            cudaFree(sl->dev);
        if (sl->copied)
            for (int i = 0; i < x->N; i++)
                if (sl->copied[i])
                    cudaEventDestroy(sl->copied[i]);
        free(sl->copied);
        if (sl->released)
            cudaEventDestroy(sl->released);
        memset(sl, 0, sizeof *sl);
    }
    x->st.vram_bytes = 0;
}

/* Allocates the slots of mode m; KR_ERR_NOMEM (CUDA error cleared) when VRAM is short. */
static kr_status alloc_slots(kr_gpu_experts *x, const kr_expert_mode *m) {
    x->mode = *m;
    x->N = m->kind == KR_EXPERTS_PERSISTENT ? x->cfg.n_layers : m->group;
    x->G = (x->cfg.n_layers + x->N - 1) / x->N;
    x->n_slots = x->G == 1 ? 1 : 2;
    size_t bytes = (size_t)x->N * x->lb;
    for (int s = 0; s < x->n_slots; s++) {
        slot *sl = &x->slots[s];
        sl->group = -1;
        cudaError_t e = x->cfg.alloc_limit && (int64_t)bytes > x->cfg.alloc_limit ? cudaErrorMemoryAllocation
                                                                                    : cudaMalloc(&sl->dev, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            sl->dev = NULL;
            free_slots(x);
            return kr_fail(KR_ERR_NOMEM, "cannot allocate %.2f GiB of VRAM: %s", bytes / GIB, cudaGetErrorString(e));
        }
        x->st.vram_bytes += (int64_t)bytes;
        sl->copied = (cudaEvent_t *)calloc((size_t)x->N, sizeof *sl->copied);
        if (!sl->copied)
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        for (int i = 0; i < x->N; i++)
            KR_CU(cudaEventCreateWithFlags(&sl->copied[i], cudaEventDisableTiming));
        KR_CU(cudaEventCreateWithFlags(&sl->released, cudaEventDisableTiming));
    }
    return KR_OK;
}

/* The next smaller mode after m failed to allocate, from what is free now; false when none is left. */
static bool smaller(const kr_gpu_experts *x, const kr_expert_mode *m, kr_expert_mode *next) {
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    int64_t avail = (int64_t)fr < x->cfg.vram_budget || !x->cfg.vram_budget ? (int64_t)fr : x->cfg.vram_budget;
    int64_t fit = avail / (int64_t)(2 * x->lb);
    int cap = m->kind == KR_EXPERTS_PERSISTENT ? (x->cfg.n_layers + 1) / 2 - 1 : m->group - 1;
    if (x->cfg.n_layers == 2 && m->kind == KR_EXPERTS_PERSISTENT)
        cap = 1;
    int n = (int)(fit < cap ? fit : cap);
    if (n < 1 && cap >= 1)
        n = 1; /* free memory is only a hint: chunked is still worth a try */
    if (n < 1)
        return false;
    *next = n == 1 ? (kr_expert_mode){KR_EXPERTS_CHUNKED, 1} : (kr_expert_mode){KR_EXPERTS_GROUPED, n};
    return true;
}

static void unpin(kr_gpu_experts *x) {
    for (int l = 0; l < x->cfg.n_layers; l++)
        if (x->pinned_here[l])
            cudaHostUnregister((void *)x->host[l]);
    memset(x->pinned_here, 0, (size_t)x->cfg.n_layers);
}

/* Pins every host block in place; false (nothing left pinned) when the driver refuses one. */
static bool pin(kr_gpu_experts *x) {
    for (int l = 0; l < x->cfg.n_layers; l++) {
        void *p = (void *)x->host[l];
        cudaError_t e = cudaHostRegister(p, x->lb, cudaHostRegisterReadOnly);
        if (e != cudaSuccess && e != cudaErrorHostMemoryAlreadyRegistered) {
            cudaGetLastError();
            e = cudaHostRegister(p, x->lb, cudaHostRegisterDefault);
        }
        if (e == cudaErrorHostMemoryAlreadyRegistered) {
            cudaGetLastError(); /* someone else's (or the same block listed twice): usable as is */
            continue;
        }
        if (e != cudaSuccess) {
            cudaGetLastError();
            if (!x->cfg.quiet)
                fprintf(stderr, "krasis: experts: cannot pin the host copy in place (%s); staging copies through"
                        " pinned buffers\n", cudaGetErrorString(e));
            unpin(x);
            return false;
        }
        x->pinned_here[l] = true;
    }
    return true;
}

void kr_gpu_experts_destroy(kr_gpu_experts *x) {
    if (!x)
        return;
    cudaDeviceSynchronize(); /* copies and the compute that reads the slots */
    for (int i = 0; i < RING; i++) {
        if (x->ring[i].a)
            cudaEventDestroy(x->ring[i].a);
        if (x->ring[i].b)
            cudaEventDestroy(x->ring[i].b);
    }
    free_slots(x);
    if (x->pinned_here)
        unpin(x);
    for (int b = 0; b < 2; b++)
        if (x->stage[b])
            cudaFreeHost(x->stage[b]);
    if (x->copy)
        cudaStreamDestroy(x->copy);
    free(x->pinned_here);
    free(x->host);
    free(x);
}

static kr_status create(kr_gpu_experts *x) {
    const kr_gpu_experts_config *c = &x->cfg;
    KR_CU(cudaStreamCreateWithFlags(&x->copy, cudaStreamNonBlocking));
    for (int i = 0; i < RING; i++) {
        KR_CU(cudaEventCreate(&x->ring[i].a));
        KR_CU(cudaEventCreate(&x->ring[i].b));
    }
    int64_t budget = c->vram_budget;
    if (budget <= 0) {
        size_t fr = 0, tot = 0;
        KR_CU(cudaMemGetInfo(&fr, &tot));
        budget = (int64_t)fr - (int64_t)1 * 1024 * 1024 * 1024;
    }
    kr_expert_mode m;
    char why[256];
    KR_TRY(kr_expert_mode_choose(&c->mode, c->n_layers, (int64_t)x->lb, budget, &m, why, sizeof why));
    for (;;) {
        kr_status s = alloc_slots(x, &m);
        if (s == KR_OK)
            break;
        if (s != KR_ERR_NOMEM)
            return s;
        char a[32], b[32], msg[512];
        kr_expert_mode next;
        kr_expert_mode_str(&m, a, sizeof a);
        snprintf(msg, sizeof msg, "%s", kr_error());
        if (!smaller(x, &m, &next))
            return kr_fail(KR_ERR_NOMEM, "experts: %s: %s, and there is no smaller mode", a, msg);
        kr_expert_mode_str(&next, b, sizeof b);
        fprintf(stderr, "krasis: experts: %s: %s; falling back to %s\n", a, msg, b);
        snprintf(why, sizeof why, "%s after an allocation failure of %s", b, a);
        x->st.fallbacks++;
        m = next;
    }
    x->st.mode = x->mode;
    x->st.n_groups = x->G;
    x->st.registered = !c->no_register && pin(x);
    if (!x->st.registered)
        for (int b = 0; b < 2; b++)
            KR_CU(cudaHostAlloc(&x->stage[b], STAGE_BYTES, cudaHostAllocDefault));
    if (!c->quiet)
        fprintf(stderr, "krasis: experts: %s; %d MoE layers of %.1f MiB, %.2f GiB of VRAM, %s host copy\n", why,
                c->n_layers, x->lb / 1048576.0, x->st.vram_bytes / GIB, x->st.registered ? "pinned" : "staged");
    x->cur_group = -1;
    x->pend_group = x->pend_slot = -1;
    /* the first group is on its way before the first acquire (persistent: everything) */
    return issue_copy(x, 0, 0);
}

kr_status kr_gpu_experts_create(const kr_gpu_experts_config *cfg, kr_gpu_experts **out) {
    *out = NULL;
    if (cfg->n_layers <= 0 || !cfg->host)
        return kr_fail(KR_ERR_ARG, "experts: %d MoE layers, host blocks %p", cfg->n_layers, (const void *)cfg->host);
    if (cfg->geom.layer_bytes == 0 || cfg->geom.layer_bytes % 4096)
        return kr_fail(KR_ERR_ARG, "experts: layer_bytes %llu is not a positive multiple of 4096 (use kr_gpu_moe_geom_make)",
                       (unsigned long long)cfg->geom.layer_bytes);
    kr_gpu_experts *x = (kr_gpu_experts *)calloc(1, sizeof *x);
    if (!x)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    x->cfg = *cfg;
    x->lb = cfg->geom.layer_bytes;
    x->host = (const uint8_t **)calloc((size_t)cfg->n_layers, sizeof *x->host);
    x->pinned_here = (bool *)calloc((size_t)cfg->n_layers, 1);
    if (!x->host || !x->pinned_here) {
        kr_gpu_experts_destroy(x);
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    x->cfg.host = x->host;
    for (int l = 0; l < cfg->n_layers; l++) {
        if (!cfg->host[l]) {
            kr_gpu_experts_destroy(x);
            return kr_fail(KR_ERR_ARG, "experts: host block of MoE layer %d is NULL", l);
        }
        x->host[l] = cfg->host[l];
    }
    kr_status s = create(x);
    if (s != KR_OK) {
        kr_gpu_experts_destroy(x);
        return s;
    }
    *out = x;
    return KR_OK;
}

/* ------------------------------------------------------------------ acquire / release */

static int slot_of(const kr_gpu_experts *x, int g) {
    for (int s = 0; s < x->n_slots; s++)
        if (x->slots[s].group == g)
            return s;
    return -1;
}

kr_status kr_gpu_experts_acquire(kr_gpu_experts *x, int moe_layer, kr_cuda_stream compute, kr_gpu_moe_layer *out) {
    if (moe_layer < 0 || moe_layer >= x->cfg.n_layers)
        return kr_fail(KR_ERR_ARG, "experts: MoE layer %d of %d", moe_layer, x->cfg.n_layers);
    int g = moe_layer / x->N;
    int s = slot_of(x, g);
    if (s < 0) { /* not resident, not prefetched: copy it now into the slot the current group is not in */
        int cur = slot_of(x, x->cur_group);
        s = cur == 0 ? 1 : 0;
        if (x->slots[s].in_use)
            return kr_fail(KR_ERR_ARG, "experts: acquire of MoE layer %d: release the layers of group %d first (%d"
                           " acquired and not released; its slot must receive group %d)", moe_layer, x->slots[s].group,
                           x->slots[s].in_use, g);
        if (x->pend_slot == s)
            x->pend_group = x->pend_slot = -1;
        KR_TRY(issue_copy(x, s, g));
        x->st.misses++;
    }
    if (g != x->cur_group) {
        x->cur_group = g;
        int ng = (g + 1) % x->G;
        if (x->G > 1 && slot_of(x, ng) < 0) {
            int t = 1 - s;
            if (x->slots[t].in_use) { /* the previous group is still held: copy when it is released */
                x->pend_group = ng;
                x->pend_slot = t;
            } else {
                KR_TRY(issue_copy(x, t, ng));
            }
        }
    }
    slot *sl = &x->slots[s];
    int i = moe_layer - g * x->N;
    KR_CU(cudaStreamWaitEvent((cudaStream_t)compute, sl->copied[i], 0));
    sl->in_use++;
    kr_gpu_moe_geom_bind(&x->cfg.geom, sl->dev + (size_t)i * x->lb, out);
    return KR_OK;
}

kr_status kr_gpu_experts_release(kr_gpu_experts *x, int moe_layer, kr_cuda_stream compute) {
    if (moe_layer < 0 || moe_layer >= x->cfg.n_layers)
        return kr_fail(KR_ERR_ARG, "experts: release of MoE layer %d of %d", moe_layer, x->cfg.n_layers);
    int s = slot_of(x, moe_layer / x->N);
    if (s < 0 || x->slots[s].in_use <= 0)
        return kr_fail(KR_ERR_ARG, "experts: release of MoE layer %d, which is not acquired", moe_layer);
    x->slots[s].in_use--;
    KR_CU(cudaEventRecord(x->slots[s].released, (cudaStream_t)compute));
    if (x->slots[s].in_use == 0 && x->pend_slot == s) {
        int g = x->pend_group;
        x->pend_group = x->pend_slot = -1;
        KR_TRY(issue_copy(x, s, g));
    }
    return KR_OK;
}

kr_status kr_gpu_experts_stats_get(kr_gpu_experts *x, kr_gpu_experts_stats *out) {
    KR_CU(cudaStreamSynchronize(x->copy));
    for (int i = 0; i < RING; i++)
        harvest(x, &x->ring[i], true);
    x->st.copy_gbps = x->st.copy_ms > 0 ? x->st.bytes_copied / (x->st.copy_ms * 1e6) : 0;
    *out = x->st;
    return KR_OK;
}
