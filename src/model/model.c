/* Model loading (binding every tensor the forward pass needs, with shape and dtype checks against
 * config.json) and the decoder stack shared by all families:
 *     h = x + Attn(RMSNorm_in(x));  y = h + FFN(RMSNorm_post(h));  FFN = dense MLP or MoE
 * The family files supply attention; the FFN/MoE and the stack are here. */
#include "model/model.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend/cpu/moe.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/qlinear.h"
#include "backend/cpu/threadpool.h"
#include "base/mapfile.h"
#include "weights/expert_cache.h"
#include "backend/cuda/moe_cache.h"
#include "model/gguf_model.h"
#include "weights/ggml_requant.h"
#include "backend/cpu/rope.h"
#include "backend/cpu/router.h"
#ifdef KRASIS_HAVE_CUDA
#include "model/gpu_model.h"
#endif

/* ---------------------------------------------------------------- binding */

static void count(kr_model *m, const kr_tensor *t, bool is_param) {
    m->stats.bytes_by_dtype[t->dtype] += (int64_t)t->nbytes;
    m->stats.bytes_total += (int64_t)t->nbytes;
    if (is_param) {
        m->stats.params_total += kr_tensor_numel(t);
        if (m->binding_routed)
            m->stats.params_routed += kr_tensor_numel(t);
    }
}

static kr_status find(const kr_model *m, const char *name, const kr_tensor **out) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", m->prefix, name);
    *out = kr_st_find(&m->st, full);
    if (!*out)
        return kr_fail(KR_ERR_FORMAT, "tensor '%s' not found in the checkpoint (%d tensors in %d file%s)", full,
                       m->st.n_tensors, m->st.n_files, m->st.n_files == 1 ? "" : "s");
    if (!kr_dtype_is_computable((*out)->dtype))
        return kr_fail(KR_ERR_FORMAT, "%s: tensor '%s' has dtype %s; expected F32, F16, BF16 or F8_E4M3",
                       kr_st_file_of(&m->st, *out), full, kr_dtype_name((*out)->dtype));
    return KR_OK;
}

static kr_status check_shape(const kr_model *m, const kr_tensor *t, int ndim, const int64_t *shape) {
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (ok)
        return KR_OK;
    char got[128], want[128];
    return kr_fail(KR_ERR_FORMAT, "%s: tensor '%s%s' has shape %s, config.json implies %s",
                   kr_st_file_of(&m->st, t), m->prefix, t->name + strlen(m->prefix),
                   kr_shape_str(t->shape, t->ndim, got, sizeof got), kr_shape_str(shape, ndim, want, sizeof want));
}

bool kr_model_has(const kr_model *m, const char *name) {
    if (m->gguf)
        return kr_gguf_model_has(m, name);
    char full[512];
    snprintf(full, sizeof full, "%s%s", m->prefix, name);
    return kr_st_find(&m->st, full) != NULL;
}

kr_status kr_bind_matrix(kr_model *m, const char *name, int64_t rows, int64_t cols, kr_matrix *out) {
    if (m->gguf)
        return kr_gguf_bind_matrix(m, name, rows, cols, out);
    const kr_tensor *t;
    KR_TRY(find(m, name, &t));
    KR_TRY(check_shape(m, t, 2, (int64_t[]){rows, cols}));
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->cols = cols;
    out->dtype = t->dtype;
    out->data = t->data;
    count(m, t, true);
    if (t->dtype != KR_DT_F8_E4M3)
        return KR_OK;
    char sname[512];
    snprintf(sname, sizeof sname, "%s_scale_inv", name);
    const kr_tensor *s;
    if (find(m, sname, &s) != KR_OK)
        return kr_fail(KR_ERR_FORMAT, "%s: FP8 tensor '%s%s' has no block scale '%s%s'", kr_st_file_of(&m->st, t),
                       m->prefix, name, m->prefix, sname);
    int64_t br = m->hp.fp8 ? m->hp.fp8_block_rows : 128, bc = m->hp.fp8 ? m->hp.fp8_block_cols : 128;
    KR_TRY(check_shape(m, s, 2, (int64_t[]){(rows + br - 1) / br, (cols + bc - 1) / bc}));
    if (s->dtype == KR_DT_F8_E4M3)
        return kr_fail(KR_ERR_FORMAT, "%s: block scale '%s' must be F32, BF16 or F16", kr_st_file_of(&m->st, s),
                       sname);
    out->scale = s->data;
    out->scale_dtype = s->dtype;
    out->scale_cols = s->shape[1];
    out->block_rows = br;
    out->block_cols = bc;
    count(m, s, false);
    return KR_OK;
}

kr_status kr_bind_vector(kr_model *m, const char *name, int64_t n, float **out) {
    if (m->gguf)
        return kr_gguf_bind_vector(m, name, n, out);
    const kr_tensor *t;
    KR_TRY(find(m, name, &t));
    KR_TRY(check_shape(m, t, 1, (int64_t[]){n}));
    if (t->dtype == KR_DT_F8_E4M3)
        return kr_fail(KR_ERR_FORMAT, "%s: vector '%s' cannot be FP8", kr_st_file_of(&m->st, t), name);
    *out = malloc((size_t)n * sizeof **out);
    if (!*out)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    kr_convert_to_f32(t->dtype, t->data, n, *out);
    count(m, t, true);
    return KR_OK;
}

static kr_status bind_mlp(kr_model *m, const char *base, int64_t inter, kr_mlp *mlp) {
    char n[512];
    int64_t D = m->hp.hidden;
    snprintf(n, sizeof n, "%s.gate_proj.weight", base);
    KR_TRY(kr_bind_matrix(m, n, inter, D, &mlp->gate));
    snprintf(n, sizeof n, "%s.up_proj.weight", base);
    KR_TRY(kr_bind_matrix(m, n, inter, D, &mlp->up));
    snprintf(n, sizeof n, "%s.down_proj.weight", base);
    return kr_bind_matrix(m, n, D, inter, &mlp->down);
}

static kr_status bind_ffn(kr_model *m, int l) {
    const kr_hparams *hp = &m->hp;
    kr_layer *L = &m->layers[l];
    char base[256], n[512];
    snprintf(base, sizeof base, "model.layers.%d.mlp", l);
    L->moe = hp->layer_is_moe[l];
    if (!L->moe)
        return bind_mlp(m, base, hp->intermediate, &L->dense);
    int E = hp->router.n_experts;
    snprintf(n, sizeof n, "%s.gate.weight", base);
    KR_TRY(kr_bind_matrix(m, n, E, hp->hidden, &L->router));
    if (hp->router.use_bias) {
        snprintf(n, sizeof n, "%s.gate.e_score_correction_bias", base);
        KR_TRY(kr_bind_vector(m, n, E, &L->router_bias));
    }
    L->experts = calloc((size_t)E, sizeof *L->experts);
    if (!L->experts)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    m->binding_routed = true;
    for (int e = 0; e < E; e++) {
        snprintf(n, sizeof n, "%s.experts.%d", base, e);
        kr_status s = bind_mlp(m, n, hp->moe_intermediate, &L->experts[e]);
        if (s != KR_OK) {
            m->binding_routed = false;
            return s;
        }
    }
    m->binding_routed = false;
    if (hp->n_shared > 0) {
        L->has_shared = true;
        snprintf(n, sizeof n, "%s.shared_experts", base);
        KR_TRY(bind_mlp(m, n, hp->moe_intermediate * hp->n_shared, &L->shared));
    }
    return KR_OK;
}

/* "model.embed_tokens.weight" directly, or under a wrapper's prefix (multimodal checkpoints). */
static kr_status detect_prefix(kr_model *m, const char *dir) {
    static const char *prefixes[] = {"", "language_model.", "model.language_model."};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
        char n[128];
        snprintf(n, sizeof n, "%smodel.embed_tokens.weight", prefixes[i]);
        if (kr_st_find(&m->st, n)) {
            snprintf(m->prefix, sizeof m->prefix, "%s", prefixes[i]);
            return KR_OK;
        }
    }
    return kr_fail(KR_ERR_FORMAT, "%s: tensor 'model.embed_tokens.weight' not found in the checkpoint", dir);
}

static kr_status bind_all(kr_model *m, const char *dir) {
    const kr_hparams *hp = &m->hp;
    if (!m->gguf)
        KR_TRY(detect_prefix(m, dir));
    KR_TRY(kr_bind_matrix(m, "model.embed_tokens.weight", hp->vocab, hp->hidden, &m->embed));
    KR_TRY(kr_bind_vector(m, "model.norm.weight", hp->hidden, &m->final_norm));
    if (hp->tie_embeddings)
        m->lm_head = m->embed;
    else
        KR_TRY(kr_bind_matrix(m, "lm_head.weight", hp->vocab, hp->hidden, &m->lm_head));
    m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers);
    m->inv_freq = malloc((size_t)hp->rope.dim / 2 * sizeof *m->inv_freq);
    if (!m->layers || !m->inv_freq)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    kr_rope_inv_freq(&hp->rope, m->inv_freq);
    for (int l = 0; l < hp->n_layers; l++) {
        char n[256];
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        KR_TRY(kr_bind_vector(m, n, hp->hidden, &m->layers[l].input_norm));
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
        KR_TRY(kr_bind_vector(m, n, hp->hidden, &m->layers[l].post_norm));
        KR_TRY(hp->family == KR_FAMILY_DEEPSEEK2 ? kr_deepseek2_bind_attention(m, l) : kr_gqa_bind_attention(m, l));
        KR_TRY(bind_ffn(m, l));
    }
    return KR_OK;
}

kr_status kr_model_open(const char *dir, kr_model **out) {
    *out = NULL;
    kr_model *m = calloc(1, sizeof *m);
    if (!m)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    kr_status s = KR_OK;
    if (kr_is_gguf_file(dir)) {
        m->gguf = calloc(1, sizeof *m->gguf);
        s = m->gguf ? kr_gguf_set_open(dir, m->gguf) : kr_fail(KR_ERR_NOMEM, "out of memory");
        if (s == KR_OK)
            s = kr_hparams_from_gguf(m->gguf, &m->hp);
    } else {
        s = kr_hparams_load(dir, &m->hp);
    }
    if (s == KR_OK && !(m->dir = strdup(dir)))
        s = kr_fail(KR_ERR_NOMEM, "out of memory");
    if (s == KR_OK && !m->gguf)
        s = kr_st_open(dir, &m->st);
    if (s == KR_OK)
        s = bind_all(m, dir);
    if (s != KR_OK) {
        kr_model_close(m);
        return s;
    }
    *out = m;
    return KR_OK;
}

const char *kr_model_source(const kr_model *m) {
    return m->gguf ? kr_gguf_path(kr_gguf_set_meta(m->gguf)) : m->dir;
}

static void free_layer(kr_layer *L) {
    float *owned[] = {L->input_norm, L->post_norm, L->q_a_norm, L->kv_a_norm, L->q_a_bias, L->kv_a_bias, L->bq,
                      L->bk,         L->bv,        L->q_norm,   L->k_norm,    L->o_bias,   L->router_bias};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        free(owned[i]);
    free(L->experts);
}

static void quant_free(struct kr_quant *Q);

void kr_model_close(kr_model *m) {
    if (!m)
        return;
#ifdef KRASIS_HAVE_CUDA
    kr_gpu_model_destroy(m->gpu);
#endif
    quant_free(m->quant);
    kr_scratch_free(&m->scratch);
    free(m->dir);
    if (m->layers)
        for (int l = 0; l < m->hp.n_layers; l++)
            free_layer(&m->layers[l]);
    free(m->layers);
    free(m->final_norm);
    free(m->inv_freq);
    kr_st_close(&m->st);
    if (m->gguf)
        kr_gguf_set_close(m->gguf);
    free(m->gguf);
    kr_hparams_free(&m->hp);
    free(m);
}

/* ---------------------------------------------------------------- KV cache */

static void kv_widths(const kr_hparams *hp, int64_t *k, int64_t *v) {
    if (hp->family == KR_FAMILY_DEEPSEEK2) {
        *k = hp->kv_lora_rank + hp->qk_rope_dim;
        *v = 0;
    } else {
        *k = *v = hp->n_kv_heads * hp->head_dim;
    }
}

int64_t kr_kv_cache_bytes_per_token(const kr_model *m) {
#ifdef KRASIS_HAVE_CUDA
    if (m->gpu)
        return kr_gpu_kv_bytes_per_token(m);
#endif
    int64_t k, v;
    kv_widths(&m->hp, &k, &v);
    return (k + v) * (int64_t)sizeof(float) * m->hp.n_layers;
}

kr_status kr_kv_cache_create(const kr_model *m, kr_kv_cache **out) {
    kr_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    kv->n_layers = (int)m->hp.n_layers;
    kv_widths(&m->hp, &kv->k_width, &kv->v_width);
    kv->heads = m->hp.family == KR_FAMILY_DEEPSEEK2 ? 1 : m->hp.n_kv_heads;
    kv->k = calloc((size_t)kv->n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)kv->n_layers, sizeof *kv->v);
    kv->layer_cap = calloc((size_t)kv->n_layers, sizeof *kv->layer_cap);
    if (!kv->k || !kv->v || !kv->layer_cap) {
        kr_kv_cache_free(kv);
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    }
#ifdef KRASIS_HAVE_CUDA
    kr_status st = m->gpu ? kr_gpu_kv_create(m, kv) : KR_OK;
    if (st != KR_OK) {
        kr_kv_cache_free(kv);
        return st;
    }
#endif
    *out = kv;
    return KR_OK;
}

float *kr_model_scratch(kr_model *m, int slot, int64_t n) {
    return kr_scratch_get(&m->scratch, slot, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

kr_status kr_kv_cache_reserve(kr_kv_cache *kv, int64_t need) {
#ifdef KRASIS_HAVE_CUDA
    if (kv->gpu)
        return kr_gpu_kv_reserve(kv, need);
#endif
    if (need <= kv->cap)
        return KR_OK;
    int64_t cap = kv->cap ? kv->cap : 64;
    while (cap < need)
        cap *= 2;
    for (int l = 0; l < kv->n_layers; l++) {
        int64_t old = kv->layer_cap[l];
        if (old >= cap) /* grown by an earlier call that failed at a later layer */
            continue;
        float *k = malloc((size_t)(cap * kv->k_width) * sizeof(float));
        float *v = kv->v_width ? malloc((size_t)(cap * kv->v_width) * sizeof(float)) : NULL;
        if (!k || (kv->v_width && !v)) {
            free(k);
            free(v);
            return kr_fail(KR_ERR_NOMEM, "out of memory growing the KV cache to %lld tokens", (long long)cap);
        }
        /* each head's first len rows to its place at the new capacity */
        for (int64_t h = 0; h < kv->heads && kv->len; h++) {
            int64_t kd = kv->k_width / kv->heads, vd = kv->v_width / kv->heads;
            memcpy(k + h * cap * kd, kv->k[l] + h * old * kd, (size_t)(kv->len * kd) * sizeof(float));
            if (v)
                memcpy(v + h * cap * vd, kv->v[l] + h * old * vd, (size_t)(kv->len * vd) * sizeof(float));
        }
        free(kv->k[l]);
        free(kv->v[l]);
        kv->k[l] = k;
        kv->v[l] = v;
        kv->layer_cap[l] = cap;
    }
    kv->cap = cap;
    return KR_OK;
}

void kr_kv_cache_reset(kr_kv_cache *kv) { kv->len = 0; }

void kr_kv_cache_free(kr_kv_cache *kv) {
    if (!kv)
        return;
#ifdef KRASIS_HAVE_CUDA
    kr_gpu_kv_free(kv);
#endif
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k)
            free(kv->k[l]);
        if (kv->v)
            free(kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->layer_cap);
    free(kv);
}

/* ---------------------------------------------------------------- FFN */

/* out [T, D] = down(silu(gate x) * up x); g, u: [T, inter] scratch */
static kr_status mlp_forward(const kr_mlp *mlp, const float *x, int64_t T, float *out, float *g, float *u) {
    int64_t inter = mlp->gate.rows;
    KR_TRY(kr_matmul(&mlp->gate, x, T, g));
    KR_TRY(kr_matmul(&mlp->up, x, T, u));
    kr_silu_mul(g, u, T * inter);
    return kr_matmul(&mlp->down, g, T, out);
}

static kr_status mlp_forward_scratch(kr_model *m, const kr_mlp *mlp, const float *x, int64_t T, float *out) {
    int64_t n = T * mlp->gate.rows;
    float *g = kr_model_scratch(m, KR_SLOT_MLP_G, n), *u = kr_model_scratch(m, KR_SLOT_MLP_U, n);
    return g && u ? mlp_forward(mlp, x, T, out, g, u) : kr_fail(KR_ERR_NOMEM, "out of memory in an MLP");
}

/* ---------------------------------------------------------------- quantized components */

struct kr_quant {
    kr_quant_config cfg;
    kr_ecache cache;       /* routed experts, when routed_bits */
    int *moe_slot;         /* [n_layers]: the layer's index among MoE layers, -1 for dense ones */
    int n_moe;
    kr_qexpert *shared;    /* [n_layers], when shared_bits */
    kr_qexpert *dense;     /* [n_layers], when dense_bits */
    kr_qmatrix lm_head;
    bool q_lm_head;
    kr_qmatrix *attn;      /* [n_layers][KR_ATTN_MATRICES], when attention_bits; attached as kr_matrix.q */
    kr_qmatrix *mla;       /* [n_layers][2], MLA's absorbed k and v products (kr_layer.mla_k / mla_v) */
    void **mem;            /* owned quantized storage */
    int n_mem;
    int64_t clamped;       /* GGUF Q8_0 codes of -128 clamped to -127 by the exact re-encode */
    kr_qmoe_ws *ws;        /* grows to the largest T seen, then is reused: a decode step allocates nothing */
    kr_qlinear_ws lws;
};

static void quant_free(struct kr_quant *Q) {
    if (!Q)
        return;
    kr_ecache_close(&Q->cache);
    for (int i = 0; i < Q->n_mem; i++)
        free(Q->mem[i]);
    free(Q->mem);
    free(Q->moe_slot);
    free(Q->shared);
    free(Q->dense);
    free(Q->attn);
    free(Q->mla);
    kr_qmoe_ws_free(Q->ws);
    kr_qlinear_ws_free(&Q->lws);
    free(Q);
}

static void *quant_alloc(struct kr_quant *Q, size_t n) {
    void **mem = realloc(Q->mem, (size_t)(Q->n_mem + 1) * sizeof *mem);
    if (!mem)
        return NULL;
    Q->mem = mem;
    /* large buffers on 2 MiB boundaries, advised for transparent huge pages: the kernels stream them,
     * and 4 KiB pages would cost a TLB miss every 64 cache lines */
    size_t align = n >= ((size_t)4 << 20) ? (size_t)2 << 20 : 64;
    void *p = aligned_alloc(align, (n + align - 1) / align * align);
    if (p) {
        Q->mem[Q->n_mem++] = p;
        if (align > 64)
            madvise(p, (n + align - 1) / align * align, MADV_HUGEPAGE);
    }
    return p;
}

/* Row r of w into row qr of q: GGUF Q4_0 / Q8_0 rows are re-encoded exactly when the layout allows it
 * (weights/ggml_requant.h), everything else is dequantized to float (row: scratch of w->cols) and quantized. */
static void reencode_or_quantize(struct kr_quant *Q, const kr_matrix *w, int64_t r, const kr_qmatrix *q, int64_t qr,
                                 float *row) {
    if (w->ggml) {
        int64_t c = kr_ggml_reencode_row(w->ggml_type, w->data + (size_t)(r * w->row_bytes), w->cols, q, qr);
        if (c >= 0) {
            Q->clamped += c;
            return;
        }
    }
    kr_matrix_row(w, r, row);
    kr_quantize_row(q, qr, row);
}

/* Shape + owned storage of a [rows, cols] quantized matrix. */
static kr_status qmatrix_alloc(struct kr_quant *Q, int64_t rows, int64_t cols, int bits, int gs, kr_qmatrix *out) {
    KR_TRY(kr_qmatrix_shape(out, rows, cols, bits, gs));
    uint8_t *q = quant_alloc(Q, (size_t)kr_qmatrix_qbytes(out));
    float *sc = quant_alloc(Q, (size_t)kr_qmatrix_sbytes(out));
    if (!q || !sc)
        return kr_fail(KR_ERR_NOMEM, "out of memory quantizing a [%lld, %lld] matrix", (long long)rows,
                       (long long)cols);
    out->q = q;
    out->s = sc;
    return KR_OK;
}

static kr_status quantize_matrix(struct kr_quant *Q, const kr_matrix *w, int bits, int gs, kr_qmatrix *out) {
    KR_TRY(qmatrix_alloc(Q, w->rows, w->cols, bits, gs, out));
    float *row = malloc((size_t)w->cols * sizeof *row);
    if (!row)
        return kr_fail(KR_ERR_NOMEM, "out of memory quantizing a [%lld, %lld] matrix", (long long)w->rows,
                       (long long)w->cols);
    for (int64_t r = 0; r < w->rows; r++)
        reencode_or_quantize(Q, w, r, out, r, row);
    free(row);
    return KR_OK;
}

/* gate and up interleaved row by row into w13 (the kernel's streaming order), then down */
static kr_status quantize_mlp(struct kr_quant *Q, const kr_mlp *mlp, int bits, int gs, kr_qexpert *e) {
    int64_t inter = mlp->gate.rows, D = mlp->gate.cols;
    e->inter = inter;
    KR_TRY(kr_qmatrix_shape(&e->w13, 2 * inter, D, bits, gs));
    uint8_t *q = quant_alloc(Q, (size_t)kr_qmatrix_qbytes(&e->w13));
    float *sc = quant_alloc(Q, (size_t)kr_qmatrix_sbytes(&e->w13));
    float *row = malloc((size_t)(2 * D) * sizeof *row);
    if (!q || !sc || !row) {
        free(row);
        return kr_fail(KR_ERR_NOMEM, "out of memory quantizing an MLP");
    }
    e->w13.q = q;
    e->w13.s = sc;
    for (int64_t i = 0; i < inter; i++) { /* gate row i -> w13 row 2i, up row i -> 2i + 1 */
        reencode_or_quantize(Q, &mlp->gate, i, &e->w13, 2 * i, row);
        reencode_or_quantize(Q, &mlp->up, i, &e->w13, 2 * i + 1, row);
    }
    free(row);
    return quantize_matrix(Q, &mlp->down, bits, gs, &e->down);
}

static kr_status expert_rows(void *ctx, int l, int e, int which, int64_t row, float *out) {
    const kr_model *m = ctx;
    int layer = -1;
    for (int i = 0; i < m->hp.n_layers; i++)
        if (m->quant->moe_slot[i] == l)
            layer = i;
    const kr_mlp *mlp = &m->layers[layer].experts[e];
    kr_matrix_row(which == 0 ? &mlp->gate : which == 1 ? &mlp->up : &mlp->down, row, out);
    return KR_OK;
}

/* The expert cache's exact path for GGUF Q4_0 / Q8_0 experts (kr_ecache_encode_fn). */
static int expert_encode(void *ctx, int l, int e, int which, int64_t row, const kr_qmatrix *dst, int64_t dst_row) {
    kr_model *m = ctx;
    int layer = -1;
    for (int i = 0; i < m->hp.n_layers; i++)
        if (m->quant->moe_slot[i] == l)
            layer = i;
    const kr_mlp *mlp = &m->layers[layer].experts[e];
    const kr_matrix *w = which == 0 ? &mlp->gate : which == 1 ? &mlp->up : &mlp->down;
    if (!w->ggml)
        return 0;
    int64_t c = kr_ggml_reencode_row(w->ggml_type, w->data + (size_t)(row * w->row_bytes), w->cols, dst, dst_row);
    if (c < 0)
        return 0;
    m->quant->clamped += c;
    return 1;
}

static kr_status cache_path(const kr_model *m, const kr_quant_config *qc, char *path, size_t n) {
    char dir[PATH_MAX], real[PATH_MAX];
    if (qc->cache_dir && *qc->cache_dir) {
        snprintf(dir, sizeof dir, "%s", qc->cache_dir);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return kr_fail(KR_ERR_ARG, "HOME is not set: pass --cache-dir DIR for the expert cache");
        const char *id = realpath(kr_model_source(m), real) ? real : kr_model_source(m); /* a split GGUF: its shard 1 */
        size_t len = strlen(id);
        while (len > 1 && id[len - 1] == '/')
            len--;
        const char *base = id + len;
        while (base > id && base[-1] != '/')
            base--;
        snprintf(dir, sizeof dir, "%s/.cache/krasis/%.*s", home, (int)(id + len - base), base);
    }
    KR_TRY(kr_mkdirs(dir));
    char name[64];
    kr_ecache_file_name(qc->routed_bits, qc->group_size, name, sizeof name);
    if ((size_t)snprintf(path, n, "%s/%s", dir, name) >= n)
        return kr_fail(KR_ERR_ARG, "cache path %s/%s is too long", dir, name);
    return KR_OK;
}

static bool valid_bits(int b) { return b == 0 || b == 4 || b == 8; }

/* The attention projections a QuantConfig's attention_bits quantizes (kr_matmul uses them through
 * kr_matrix.q). MLA's kv_b / k_b / v_b are not projections of the absorbed form: quantize_mla. */
enum { KR_ATTN_MATRICES = 9 };
static void attention_matrices(kr_layer *L, kr_matrix *out[KR_ATTN_MATRICES]) {
    kr_matrix *all[KR_ATTN_MATRICES] = {&L->q_proj, &L->q_a, &L->q_b, &L->kv_a, &L->o_proj,
                                        &L->wq, &L->wk, &L->wv, &L->wo};
    memcpy(out, all, sizeof all);
}

/* MLA's absorbed products (deepseek2.c) on the integer kernels: k_b / v_b quantized row by row (exact
 * re-encodes for GGUF Q4_0 / Q8_0), or, from the legacy kv_b, its v rows likewise and its k rows
 * ([Dn rows of C] per head) transposed in float into k_b's orientation ([C rows of Dn]) and quantized:
 * a transposed row crosses the source's groups, so no exact re-encode exists for it. Both layouts then
 * take one path. qk_nope_head_dim 0 has no k product and stays on the float path. */
static kr_status quantize_mla(kr_model *m, struct kr_quant *Q, int l, int bits, int gs) {
    const kr_hparams *hp = &m->hp;
    kr_layer *L = &m->layers[l];
    int64_t H = hp->n_heads, Dn = hp->qk_nope_dim, Dv = hp->v_head_dim, C = hp->kv_lora_rank;
    if ((!L->k_b.rows && !L->kv_b.rows) || Dn == 0)
        return KR_OK; /* not MLA */
    kr_qmatrix *k = &Q->mla[2 * l], *v = &Q->mla[2 * l + 1];
    if (L->k_b.rows) {
        KR_TRY(quantize_matrix(Q, &L->k_b, bits, gs, k));
        KR_TRY(quantize_matrix(Q, &L->v_b, bits, gs, v));
    } else {
        KR_TRY(qmatrix_alloc(Q, H * C, Dn, bits, gs, k));
        KR_TRY(qmatrix_alloc(Q, H * Dv, C, bits, gs, v));
        float *kt = malloc((size_t)(Dn * C + (C > Dn ? C : Dn)) * sizeof *kt), *row = kt + Dn * C;
        if (!kt)
            return kr_fail(KR_ERR_NOMEM, "out of memory quantizing layer %d's kv_b", l);
        for (int64_t h = 0; h < H; h++) {
            for (int64_t d = 0; d < Dn; d++)
                kr_matrix_row(&L->kv_b, h * (Dn + Dv) + d, kt + d * C);
            for (int64_t c = 0; c < C; c++) {
                for (int64_t d = 0; d < Dn; d++)
                    row[d] = kt[d * C + c];
                kr_quantize_row(k, h * C + c, row);
            }
            for (int64_t d = 0; d < Dv; d++)
                reencode_or_quantize(Q, &L->kv_b, h * (Dn + Dv) + Dn + d, v, h * Dv + d, row);
        }
        free(kt);
    }
    L->mla_k = k;
    L->mla_v = v;
    return KR_OK;
}

static kr_status quantize_attention(kr_model *m, struct kr_quant *Q, int bits, int gs) {
    int n = m->hp.n_layers;
    Q->attn = calloc((size_t)n * KR_ATTN_MATRICES, sizeof *Q->attn);
    Q->mla = calloc((size_t)n * 2, sizeof *Q->mla);
    if (!Q->attn || !Q->mla)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    for (int l = 0; l < n; l++) {
        kr_matrix *mats[KR_ATTN_MATRICES];
        attention_matrices(&m->layers[l], mats);
        for (int i = 0; i < KR_ATTN_MATRICES; i++) {
            if (!mats[i]->rows)
                continue; /* not used by this family / configuration */
            kr_qmatrix *q = &Q->attn[l * KR_ATTN_MATRICES + i];
            KR_TRY(quantize_matrix(Q, mats[i], bits, gs, q));
            mats[i]->q = q;
        }
        KR_TRY(quantize_mla(m, Q, l, bits, gs));
    }
    return KR_OK;
}

/* Detaches the quantized copies from the model's matrices before they are freed. */
static void detach_attention(kr_model *m) {
    for (int l = 0; l < m->hp.n_layers; l++) {
        kr_matrix *mats[KR_ATTN_MATRICES];
        attention_matrices(&m->layers[l], mats);
        for (int i = 0; i < KR_ATTN_MATRICES; i++)
            mats[i]->q = NULL;
        m->layers[l].mla_k = m->layers[l].mla_v = NULL;
    }
}

static kr_status quantize_components(kr_model *m, const kr_quant_config *qc) {
    kr_quant_config planned;
    if (m->gguf) { /* a GGUF's experts are quantized the way the file is, unless flags say otherwise */
        KR_TRY(kr_gguf_quant_plan(m, qc, &planned));
        qc = &planned;
    }
    /* the thread count applies to the float path too (its matmuls and attention use the pool) */
    KR_TRY(kr_pool_init(qc->threads));
    if (!qc->routed_bits && !qc->shared_bits && !qc->attention_bits && !qc->dense_bits && !qc->lm_head_bits)
        return KR_OK;
    if (m->quant)
        return kr_fail(KR_ERR_ARG, "the model is already quantized");
    if (!valid_bits(qc->routed_bits) || !valid_bits(qc->shared_bits) || !valid_bits(qc->dense_bits) ||
        !valid_bits(qc->lm_head_bits) || !valid_bits(qc->attention_bits))
        return kr_fail(KR_ERR_ARG, "quantization bits must be 4 or 8 (or bf16: as loaded)");
    if (!kr_quant_valid(4, qc->group_size))
        return kr_fail(KR_ERR_ARG, "--group-size %d: must be 32, 64 or 128", qc->group_size);
    const kr_hparams *hp = &m->hp;
    struct kr_quant *Q = calloc(1, sizeof *Q);
    if (!Q)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    m->quant = Q;
    Q->cfg = *qc;
    Q->cfg.cache_dir = NULL; /* not owned */
    Q->moe_slot = malloc((size_t)hp->n_layers * sizeof *Q->moe_slot);
    Q->shared = calloc((size_t)hp->n_layers, sizeof *Q->shared);
    Q->dense = calloc((size_t)hp->n_layers, sizeof *Q->dense);
    kr_status s = Q->moe_slot && Q->shared && Q->dense ? KR_OK : kr_fail(KR_ERR_NOMEM, "out of memory");
    for (int l = 0; s == KR_OK && l < hp->n_layers; l++) {
        const kr_layer *L = &m->layers[l];
        Q->moe_slot[l] = L->moe ? Q->n_moe++ : -1;
        if (L->moe && L->has_shared && qc->shared_bits)
            s = quantize_mlp(Q, &L->shared, qc->shared_bits, qc->group_size, &Q->shared[l]);
        if (!L->moe && qc->dense_bits)
            s = quantize_mlp(Q, &L->dense, qc->dense_bits, qc->group_size, &Q->dense[l]);
    }
    if (s == KR_OK && qc->attention_bits)
        s = quantize_attention(m, Q, qc->attention_bits, qc->group_size);
    if (s == KR_OK && qc->lm_head_bits) {
        s = quantize_matrix(Q, &m->lm_head, qc->lm_head_bits, qc->group_size, &Q->lm_head);
        Q->q_lm_head = s == KR_OK;
    }
    if (s == KR_OK && qc->routed_bits && Q->n_moe > 0) {
        char path[PATH_MAX + 64], *cfg = NULL;
        size_t cfg_n = 0;
        snprintf(path, sizeof path, "%s/config.json", m->dir);
        /* a GGUF is identified by its size + a hash of its metadata and tensor infos (gguf_set.h) */
        s = m->gguf ? KR_OK : kr_read_file(path, &cfg, &cfg_n);
        if (s == KR_OK && m->gguf) {
            kr_ecache_key key = {qc->routed_bits, qc->group_size, Q->n_moe, hp->router.n_experts, hp->hidden,
                                 hp->moe_intermediate, m->gguf->identity};
            s = cache_path(m, qc, path, sizeof path);
            if (s == KR_OK)
                s = kr_ecache_open_ex(path, &key, expert_rows, expert_encode, m, &Q->cache);
            if (s == KR_OK && Q->cache.rebuilt && Q->clamped)
                fprintf(stderr, "krasis: GGUF Q8_0 experts: %lld codes of -128 clamped to -127 (INT8 is [-127, 127]); "
                        "every other value re-encoded exactly\n", (long long)Q->clamped);
        } else if (s == KR_OK) {
            kr_ecache_key key = {qc->routed_bits, qc->group_size, Q->n_moe, hp->router.n_experts, hp->hidden,
                                 hp->moe_intermediate, kr_fnv1a(KR_FNV_INIT, cfg, cfg_n)};
            /* the checkpoint's size too: re-downloaded weights under the same config.json are caught */
            key.config_hash = kr_fnv1a(key.config_hash, &m->stats.bytes_total, sizeof m->stats.bytes_total);
            s = cache_path(m, qc, path, sizeof path);
            if (s == KR_OK)
                s = kr_ecache_open(path, &key, expert_rows, m, &Q->cache);
        }
        free(cfg);
        if (s == KR_OK && Q->clamped && !Q->cache.rebuilt)
            Q->clamped = 0;
    } else if (s == KR_OK) {
        Q->cfg.routed_bits = 0;
    }
    if (s != KR_OK) {
        detach_attention(m);
        quant_free(Q);
        m->quant = NULL;
    }
    return s;
}

kr_status kr_model_quantize(kr_model *m, const kr_quant_config *qc) {
    if (m->gpu)
        return kr_fail(KR_ERR_ARG, "the model already runs on the GPU: kr_model_quantize is called once");
    KR_TRY(quantize_components(m, qc));
    m->prefill_chunk = qc->gpu.prefill_chunk;
    if (!qc->gpu.on)
        return KR_OK;
#ifdef KRASIS_HAVE_CUDA
    return kr_gpu_model_create(m, qc);
#else
    return kr_fail(KR_ERR_UNSUPPORTED, "--gpu: this krasis was built without CUDA (nvcc was not found at build time)");
#endif
}

static int parse_dtype(const char *v) { return !strcmp(v, "int4") ? 4 : !strcmp(v, "int8") ? 8 : !strcmp(v, "bf16") ? 0 : -1; }

kr_status kr_quant_config_load(const char *path, kr_quant_config *qc) {
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j)
        return kr_fail(KR_ERR_FORMAT, "%s:%d: %s", path, err.line, err.text);
    static const char *keys[] = {"routed_experts", "shared_experts", "attention", "dense_mlp", "lm_head"};
    int *dst[] = {&qc->routed_bits, &qc->shared_bits, &qc->attention_bits, &qc->dense_bits, &qc->lm_head_bits};
    kr_status s = KR_OK;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        size_t i = 0;
        while (i < 5 && strcmp(k, keys[i]))
            i++;
        if (i < 5) {
            int b = json_is_string(v) ? parse_dtype(json_string_value(v)) : -1;
            if (b < 0) {
                s = kr_fail(KR_ERR_FORMAT, "%s: \"%s\" must be \"bf16\", \"int8\" or \"int4\"", path, k);
                break;
            }
            *dst[i] = b;
        } else if (!strcmp(k, "group_size")) {
            if (!json_is_integer(v) || !kr_quant_valid(4, (int)json_integer_value(v))) {
                s = kr_fail(KR_ERR_FORMAT, "%s: \"group_size\" must be 32, 64 or 128", path);
                break;
            }
            qc->group_size = (int)json_integer_value(v);
            qc->group_size_given = true;
        } else {
            s = kr_fail(KR_ERR_FORMAT, "%s: unknown key \"%s\" (expected routed_experts, shared_experts, attention, dense_mlp, lm_head, group_size)", path, k);
            break;
        }
    }
    json_decref(j);
    return s;
}

int64_t kr_model_expert_bytes_per_token(const kr_model *m) {
    const struct kr_quant *Q = m->quant;
    if (!Q || !Q->cfg.routed_bits)
        return 0;
    int64_t b = 0;
    for (int l = 0; l < m->hp.n_layers; l++) {
        if (Q->moe_slot[l] < 0)
            continue;
        b += m->hp.router.top_k * kr_qexpert_bytes(&Q->cache.experts[0]);
        if (Q->shared[l].inter)
            b += kr_qexpert_bytes(&Q->shared[l]);
    }
    return b;
}

/* The quantized FFN of one layer: routed experts from the cache (idx/w/K) and/or a quantized shared or
 * dense MLP, through the same parallel region. */
static kr_status qffn(const kr_model *m, int l, const float *x, int64_t T, const int *idx, const float *w, int K,
                      bool routed, const kr_qexpert *extra, float *out) {
    struct kr_quant *Q = m->quant;
    int E = m->hp.router.n_experts;
    kr_qmoe q = {m->hp.hidden, Q->cfg.group_size, routed ? E : 0,
                 routed ? &Q->cache.experts[(size_t)Q->moe_slot[l] * (size_t)E] : NULL, extra};
    KR_TRY(kr_qmoe_ws_reserve(&Q->ws, &q, T, K));
    return kr_qmoe_forward(&q, Q->ws, x, T, idx, w, routed ? K : 0, out);
}

/* out [T, D] = the routed experts' weighted outputs for T tokens routed by idx / w (K per token), each
 * expert's weights read once per call whatever T is (its tokens are gathered); qshared (quantized path
 * only, may be NULL) is fused into the same parallel region. */
static kr_status routed_ffn(kr_model *m, int l, const float *x, int64_t T, const int *idx, const float *w,
                            const kr_qexpert *qshared, float *out) {
    const kr_router_config *rc = &m->hp.router;
    int E = rc->n_experts, K = rc->top_k;
    int64_t D = m->hp.hidden;
    if (m->quant && m->quant->cfg.routed_bits)
        return qffn(m, l, x, T, idx, w, K, true, qshared, out);
    kr_scratch *sc = &m->scratch;
    int64_t *start = kr_scratch_get(sc, KR_SLOT_MOE_START, ((size_t)E + 1) * sizeof *start);
    int64_t *slot_tok = kr_scratch_get(sc, KR_SLOT_MOE_SLOT_TOK, (size_t)(T * K) * sizeof *slot_tok);
    float *slot_w = kr_model_scratch(m, KR_SLOT_MOE_SLOT_W, T * K);
    int64_t *fill = kr_scratch_get(sc, KR_SLOT_MOE_FILL, (size_t)E * sizeof *fill);
    float *xe = kr_model_scratch(m, KR_SLOT_MOE_XE, T * D), *ye = kr_model_scratch(m, KR_SLOT_MOE_YE, T * D);
    if (!start || !slot_tok || !slot_w || !fill || !xe || !ye)
        return kr_fail(KR_ERR_NOMEM, "out of memory in the MoE layer");
    memset(start, 0, ((size_t)E + 1) * sizeof *start);
    memset(fill, 0, (size_t)E * sizeof *fill);
    for (int64_t i = 0; i < T * K; i++)
        start[idx[i] + 1]++;
    for (int e = 0; e < E; e++)
        start[e + 1] += start[e];
    /* counting sort of (token, weight) slots by expert */
    for (int64_t t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            int e = idx[t * K + k];
            int64_t at = start[e] + fill[e]++;
            slot_tok[at] = t;
            slot_w[at] = w[t * K + k];
        }
    memset(out, 0, (size_t)(T * D) * sizeof *out);
    kr_status s = KR_OK;
    const kr_layer *L = &m->layers[l];
    for (int e = 0; e < E && s == KR_OK; e++) {
        int64_t n = start[e + 1] - start[e];
        if (n == 0)
            continue;
        for (int64_t i = 0; i < n; i++)
            memcpy(xe + i * D, x + slot_tok[start[e] + i] * D, (size_t)D * sizeof *xe);
        s = mlp_forward_scratch(m, &L->experts[e], xe, n, ye);
        for (int64_t i = 0; s == KR_OK && i < n; i++) {
            float wt = slot_w[start[e] + i];
            float *o = out + slot_tok[start[e] + i] * D;
            for (int64_t d = 0; d < D; d++)
                o[d] += wt * ye[i * D + d];
        }
    }
    if (s == KR_OK && qshared) {
        s = qffn(m, l, x, T, NULL, NULL, 0, false, qshared, ye);
        if (s == KR_OK)
            kr_add(out, ye, T * D);
    }
    return s;
}

const kr_qexpert *kr_model_routed_qexperts(const kr_model *m, int l) {
    const struct kr_quant *Q = m->quant;
    if (!Q || !Q->cfg.routed_bits || Q->moe_slot[l] < 0)
        return NULL;
    return &Q->cache.experts[(size_t)Q->moe_slot[l] * (size_t)m->hp.router.n_experts];
}

kr_status kr_model_open_gpu_cache(kr_model *m, const kr_quant_config *qc, kr_gcache *out) {
    struct kr_quant *Q = m->quant;
    if (!Q || !Q->cfg.routed_bits)
        return kr_fail(KR_ERR_ARG, "routed experts in VRAM need quantized experts (--expert-bits 4|8)");
    kr_quant_config c = Q->cfg;
    c.cache_dir = qc->cache_dir;
    char path[PATH_MAX], name[64];
    KR_TRY(cache_path(m, &c, path, sizeof path));
    char *slash = strrchr(path, '/');
    kr_gcache_file_name(c.routed_bits, c.group_size, name, sizeof name);
    if ((size_t)snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "%s", name) >=
        sizeof path - (size_t)(slash + 1 - path))
        return kr_fail(KR_ERR_ARG, "GPU expert cache path too long");
    kr_gcache_source src = {.experts = Q->cache.experts, .rows = expert_rows, .ctx = m};
    return kr_gcache_open(path, &Q->cache.key, &src, out);
}

kr_status kr_model_routed_ffn(kr_model *m, int l, const float *x, int64_t T, const int32_t *idx, const float *w,
                              float *out) {
    return routed_ffn(m, l, x, T, idx, w, NULL, out);
}

/* router, routed experts and shared experts of one MoE layer */
static kr_status moe_forward(kr_model *m, const kr_layer *L, const float *x, int64_t T, float *out) {
    const kr_router_config *rc = &m->hp.router;
    int E = rc->n_experts, K = rc->top_k;
    int64_t D = m->hp.hidden;
    float *logits = kr_model_scratch(m, KR_SLOT_MOE_LOGITS, T * E);
    float *scratch = kr_model_scratch(m, KR_SLOT_MOE_SCRATCH, 4 * E);
    int *idx = kr_scratch_get(&m->scratch, KR_SLOT_MOE_IDX, (size_t)(T * K) * sizeof *idx);
    float *w = kr_model_scratch(m, KR_SLOT_MOE_W, T * K);
    if (!logits || !scratch || !idx || !w)
        return kr_fail(KR_ERR_NOMEM, "out of memory in the MoE layer");
    KR_TRY(kr_matmul(&L->router, x, T, logits));
    for (int64_t t = 0; t < T; t++)
        kr_route(rc, logits + t * E, L->router_bias, idx + t * K, w + t * K, scratch);
    int l = (int)(L - m->layers);
    const kr_qexpert *qshared = m->quant && L->has_shared && m->quant->shared[l].inter ? &m->quant->shared[l] : NULL;
    KR_TRY(routed_ffn(m, l, x, T, idx, w, qshared, out));
    if (L->has_shared && !qshared) {
        float *ye = kr_model_scratch(m, KR_SLOT_MOE_YE, T * D); /* free again once routed_ffn returned */
        if (!ye)
            return kr_fail(KR_ERR_NOMEM, "out of memory in the MoE layer");
        KR_TRY(mlp_forward_scratch(m, &L->shared, x, T, ye));
        kr_add(out, ye, T * D);
    }
    return KR_OK;
}

/* ---------------------------------------------------------------- the stack */

/* one pass of n tokens through the layers on the CPU */
static kr_status forward_cpu(kr_model *m, kr_kv_cache *kv, const int32_t *ids, int64_t n, bool all_positions,
                             float *logits) {
    const kr_hparams *hp = &m->hp;
    int64_t D = hp->hidden;
    float *x = kr_model_scratch(m, KR_SLOT_X, n * D), *xn = kr_model_scratch(m, KR_SLOT_XN, n * D),
          *tmp = kr_model_scratch(m, KR_SLOT_TMP, n * D);
    kr_status s = KR_OK;
    if (!x || !xn || !tmp)
        return kr_fail(KR_ERR_NOMEM, "out of memory for %lld positions", (long long)n);
    for (int64_t t = 0; t < n; t++)
        kr_matrix_row(&m->embed, ids[t], x + t * D);
    for (int l = 0; l < hp->n_layers && s == KR_OK; l++) {
        const kr_layer *L = &m->layers[l];
        for (int64_t t = 0; t < n; t++)
            kr_rmsnorm(xn + t * D, x + t * D, L->input_norm, D, (float)hp->rms_eps);
        s = hp->family == KR_FAMILY_DEEPSEEK2 ? kr_deepseek2_attention(m, l, xn, n, kv, tmp)
                                              : kr_gqa_attention(m, l, xn, n, kv, tmp);
        if (s != KR_OK)
            break;
        kr_add(x, tmp, n * D);
        for (int64_t t = 0; t < n; t++)
            kr_rmsnorm(xn + t * D, x + t * D, L->post_norm, D, (float)hp->rms_eps);
        if (L->moe)
            s = moe_forward(m, L, xn, n, tmp);
        else if (m->quant && m->quant->dense[l].inter)
            s = qffn(m, l, xn, n, NULL, NULL, 0, false, &m->quant->dense[l], tmp);
        else
            s = mlp_forward_scratch(m, &L->dense, xn, n, tmp);
        if (s == KR_OK)
            kr_add(x, tmp, n * D);
    }
    if (s != KR_OK)
        goto done;
    kv->len += n;
    int64_t first = all_positions ? 0 : n - 1, rows = n - first;
    for (int64_t t = 0; t < rows; t++)
        kr_rmsnorm(xn + t * D, x + (first + t) * D, m->final_norm, D, (float)hp->rms_eps);
    if (m->quant && m->quant->q_lm_head)
        s = kr_qlinear(&m->quant->lm_head, xn, rows, logits, &m->quant->lws);
    else
        s = kr_matmul(&m->lm_head, xn, rows, logits);
done:
    return s;
}

kr_status kr_forward(kr_model *m, kr_kv_cache *kv, const int32_t *ids, int64_t n, bool all_positions, float *logits) {
    const kr_hparams *hp = &m->hp;
    if (n <= 0)
        return kr_fail(KR_ERR_ARG, "forward: no tokens given");
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= hp->vocab)
            return kr_fail(KR_ERR_ARG, "token id %d at position %lld is outside the vocabulary [0, %lld)", ids[t],
                           (long long)t, (long long)hp->vocab);
#ifdef KRASIS_HAVE_CUDA
    if (m->gpu)
        return kr_gpu_forward(m, kv, ids, n, all_positions, logits);
#endif
    /* the whole prompt's cache at once, then the prompt in chunks (a chunk's last row of logits is
     * overwritten by the next one's unless all positions are asked for) */
    KR_TRY(kr_kv_cache_reserve(kv, kv->len + n));
    int64_t chunk = m->prefill_chunk > 0 ? m->prefill_chunk : KR_CPU_PREFILL_CHUNK, len0 = kv->len;
    for (int64_t at = 0; at < n; at += chunk) {
        int64_t c = n - at < chunk ? n - at : chunk;
        kr_status s = forward_cpu(m, kv, ids + at, c, all_positions, all_positions ? logits + at * hp->vocab : logits);
        if (s != KR_OK) {
            kv->len = len0; /* as if nothing ran: the cache holds no part of this call */
            return s;
        }
    }
    return KR_OK;
}
