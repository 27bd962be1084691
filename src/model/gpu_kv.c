/* The KV cache of a sequence in VRAM: one cache per pipeline stage, on its device, of its layers. */
#include "model/gpu_model_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kr_cuda_kv_shape kv_shape(const kr_model *m, int64_t capacity) {
    kr_cuda_kv_shape sh = kr_kv_shape_of(&m->hp, m->gpu->cfg.kv_fp8);
    sh.capacity = capacity;
    return sh;
}

int64_t kr_gpu_kv_bytes_per_token(const kr_model *m) {
    kr_cuda_kv_shape sh = kv_shape(m, 0);
    return kr_cuda_kv_bytes_per_token(&sh);
}

kr_status kr_gpu_kv_create(const kr_model *m, kr_kv_cache *kv) {
    kv->gpu = calloc(1, sizeof *kv->gpu);
    if (!kv->gpu)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    const kr_gpu_model *g = m->gpu;
    kv->gpu->n = g->n_stages;
    for (int s = 0; s < g->n_stages; s++) {
        kr_cuda_kv_shape sh = kv_shape(m, 0);
        sh.n_layers = g->st[s].last - g->st[s].first;
        kv->gpu->kv[s].shape = sh;
        kv->gpu->device[s] = g->st[s].device;
    }
    return KR_OK;
}

/* bytes of the first len tokens of one layer's k (or v) and of its FP8 scales */
static void kv_layer_bytes(const kr_cuda_kv_shape *sh, int64_t len, int v, size_t *el, size_t *sc) {
    int64_t dim = v ? sh->v_dim : sh->k_dim;
    *el = (size_t)(len * sh->n_kv_heads * dim) * kr_cuda_dtype_size(sh->dt);
    *sc = sh->dt == KR_CU_FP8 ? (size_t)(len * sh->n_kv_heads) * sizeof(float) : 0;
}

/* one stage's cache to cap tokens, keeping its first len */
static kr_status kv_grow(kr_cuda_kv *old, int64_t cap, int64_t len) {
    kr_cuda_kv_shape sh = old->shape;
    sh.capacity = cap;
    kr_cuda_kv nk;
    KR_TRY(kr_cuda_kv_create(&nk, &sh));
    kr_status st = KR_OK;
    if (old->k) {
        /* the old cache is in use by nothing now: GPU forwards finish before kr_forward returns */
        for (int64_t l = 0; st == KR_OK && l < sh.n_layers; l++)
            for (int v = 0; st == KR_OK && v < 2; v++) {
                if (v && sh.v_in_k)
                    continue;
                size_t el, sc;
                kv_layer_bytes(&sh, len, v, &el, &sc);
                st = kr_cuda_copy(v ? nk.v[l] : nk.k[l], v ? old->v[l] : old->k[l], el, NULL);
                if (st == KR_OK && sc)
                    st = kr_cuda_copy(v ? nk.v_scale[l] : nk.k_scale[l], v ? old->v_scale[l] : old->k_scale[l], sc,
                                      NULL);
            }
        if (st == KR_OK)
            st = kr_cuda_device_sync();
    }
    if (st != KR_OK) {
        kr_cuda_kv_destroy(&nk);
        return st;
    }
    if (old->k)
        kr_cuda_kv_destroy(old);
    *old = nk;
    return KR_OK;
}

/* Each stage's cache grows on its own device to at least `need` (one that failed to grow before is retried,
 * so stages never stay at different sizes); kv->cap is the smallest. The current device is set even for
 * one stage: a server's engine thread starts on device 0 whatever --gpus said. */
kr_status kr_gpu_kv_reserve(kr_kv_cache *kv, int64_t need) {
    struct kr_gpu_kv *c = kv->gpu;
    kr_status st = KR_OK;
    int64_t smallest = INT64_MAX;
    for (int s = 0; s < c->n && st == KR_OK; s++) {
        int64_t cap = c->kv[s].shape.capacity;
        if (need > cap) {
            cap = cap ? cap : 256;
            while (cap < need)
                cap *= 2;
            st = kr_cuda_set_device(c->device[s]);
            if (st == KR_OK)
                st = kv_grow(&c->kv[s], cap, kv->len);
        }
        if (st == KR_OK && c->kv[s].shape.capacity < smallest)
            smallest = c->kv[s].shape.capacity;
    }
    kr_cuda_set_device(c->device[0]);
    if (st == KR_OK)
        kv->cap = smallest;
    return st;
}

void kr_gpu_kv_free(kr_kv_cache *kv) {
    if (!kv->gpu)
        return;
    for (int s = 0; s < kv->gpu->n; s++) {
        kr_cuda_set_device(kv->gpu->device[s]);
        if (kv->gpu->kv[s].k)
            kr_cuda_kv_destroy(&kv->gpu->kv[s]);
    }
    kr_cuda_set_device(kv->gpu->device[0]);
    free(kv->gpu);
    kv->gpu = NULL;
}
