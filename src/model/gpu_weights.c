/* The GPU forward's weights: BF16 copies of the non-expert matrices (any source dtype: kr_matrix_row
 * dequantizes FP8 and GGUF blocks), float32 norms, biases and router, per layer and stage. */
#include "model/gpu_model_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kr_status track(gpu_stage *g, void *p) {
    if (g->n_mem == g->cap_mem) {
        int cap = g->cap_mem ? 2 * g->cap_mem : 64;
        void **mem = realloc(g->mem, (size_t)cap * sizeof *mem);
        if (!mem) {
            kr_cuda_free(p);
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        }
        g->mem = mem;
        g->cap_mem = cap;
    }
    g->mem[g->n_mem++] = p;
    return KR_OK;
}

static kr_status dalloc(gpu_stage *g, size_t bytes, const char *what, void **out) {
    KR_TRY(kr_cuda_malloc(out, bytes, what));
    g->weight_bytes += (int64_t)bytes;
    return track(g, *out);
}

kr_status kr_gpu_upload_floats(gpu_stage *g, const float *v, int64_t n, float **out) {
    *out = NULL;
    if (!v)
        return KR_OK;
    KR_TRY(dalloc(g, (size_t)n * sizeof(float), "a norm or bias vector", (void **)out));
    return kr_cuda_to_device(*out, v, (size_t)n * sizeof(float), NULL);
}

/* Host staging for weight uploads: rows of bf16 bits. */
typedef struct {
    uint16_t *h;
    float *row;
} stage;

static kr_status upload_stage(gpu_stage *g, const uint16_t *h, int64_t n, const char *what, uint16_t **out) {
    KR_TRY(dalloc(g, (size_t)n * 2, what, (void **)out));
    KR_TRY(kr_cuda_to_device(*out, h, (size_t)n * 2, NULL));
    return kr_cuda_stream_sync(NULL);
}

/* rows [r0, r0 + n) of w as bf16 into h (n * w->cols values) */
static void rows_bf16(const kr_matrix *w, int64_t r0, int64_t n, uint16_t *h, float *row) {
    for (int64_t r = 0; r < n; r++) {
        kr_matrix_row(w, r0 + r, row);
        for (int64_t c = 0; c < w->cols; c++)
            h[r * w->cols + c] = kr_f32_to_bf16(row[c]);
    }
}

/* a matrix as one bf16 device matrix; a and b (optional) stacked by rows */
static kr_status upload_matrix2(gpu_stage *g, const kr_matrix *a, const kr_matrix *b, const char *what,
                                uint16_t **out) {
    *out = NULL;
    if (!a->rows)
        return KR_OK;
    int64_t rows = a->rows + (b ? b->rows : 0), cols = a->cols;
    uint16_t *h = malloc((size_t)(rows * cols) * 2);
    float *row = malloc((size_t)cols * sizeof(float));
    kr_status st = KR_OK;
    if (!h || !row)
        st = kr_fail(KR_ERR_NOMEM, "out of memory staging %s for the GPU", what);
    if (st == KR_OK) {
        rows_bf16(a, 0, a->rows, h, row);
        if (b)
            rows_bf16(b, 0, b->rows, h + a->rows * cols, row);
        st = upload_stage(g, h, rows * cols, what, out);
    }
    free(h);
    free(row);
    return st;
}

kr_status kr_gpu_upload_matrix(gpu_stage *g, const kr_matrix *a, const char *what, uint16_t **out) {
    return upload_matrix2(g, a, NULL, what, out);
}

static kr_status upload_matrix_f32(gpu_stage *g, const kr_matrix *w, float **out) {
    float *h = malloc((size_t)(w->rows * w->cols) * sizeof(float));
    if (!h)
        return kr_fail(KR_ERR_NOMEM, "out of memory staging the router for the GPU");
    for (int64_t r = 0; r < w->rows; r++)
        kr_matrix_row(w, r, h + r * w->cols);
    kr_status st = dalloc(g, (size_t)(w->rows * w->cols) * sizeof(float), "the router", (void **)out);
    if (st == KR_OK)
        st = kr_cuda_to_device(*out, h, (size_t)(w->rows * w->cols) * sizeof(float), NULL);
    if (st == KR_OK)
        st = kr_cuda_stream_sync(NULL);
    free(h);
    return st;
}

static kr_status upload_mlp(gpu_stage *g, const kr_mlp *mlp, gpu_mlp *out) {
    out->inter = mlp->gate.rows;
    KR_TRY(upload_matrix2(g, &mlp->gate, &mlp->up, "an MLP's gate/up", &out->gu));
    return kr_gpu_upload_matrix(g, &mlp->down, "an MLP's down", &out->down);
}

/* MLA's per-head Wk_b as kb [H][C][Dn] (the absorbed query) and kbr [H][Dn][C] (prefill's expanded keys),
 * Wv_b as vb [H][Dv][C]; from split k_b / v_b (GGUF: k_b rows are kb's) or from kv_b (rows are kbr's) */
static kr_status upload_mla_b(gpu_stage *g, const kr_hparams *hp, const kr_layer *L, gpu_layer *G) {
    int64_t H = hp->n_heads, Dn = hp->qk_nope_dim, Dv = hp->v_head_dim, C = hp->kv_lora_rank;
    uint16_t *kb = malloc((size_t)(H * C * Dn) * 2), *kbr = malloc((size_t)(H * C * Dn) * 2);
    float *row = malloc((size_t)(C > Dn ? C : Dn) * sizeof(float));
    kr_status st = KR_OK;
    if (!kb || !kbr || !row)
        st = kr_fail(KR_ERR_NOMEM, "out of memory staging MLA kv_b for the GPU");
    for (int64_t h = 0; st == KR_OK && h < H; h++)
        if (L->k_b.rows) {
            for (int64_t c = 0; c < C; c++) {
                kr_matrix_row(&L->k_b, h * C + c, row);
                for (int64_t d = 0; d < Dn; d++)
                    kb[(h * C + c) * Dn + d] = kbr[(h * Dn + d) * C + c] = kr_f32_to_bf16(row[d]);
            }
        } else {
            for (int64_t d = 0; d < Dn; d++) {
                kr_matrix_row(&L->kv_b, h * (Dn + Dv) + d, row);
                for (int64_t c = 0; c < C; c++)
                    kb[(h * C + c) * Dn + d] = kbr[(h * Dn + d) * C + c] = kr_f32_to_bf16(row[c]);
            }
        }
    if (st == KR_OK)
        st = upload_stage(g, kb, H * C * Dn, "MLA Wk_b", &G->kb);
    if (st == KR_OK)
        st = upload_stage(g, kbr, H * C * Dn, "MLA Wk_b", &G->kbr);
    free(kb);
    free(kbr);
    free(row);
    if (st != KR_OK || L->v_b.rows)
        return st == KR_OK ? kr_gpu_upload_matrix(g, &L->v_b, "MLA v_b", &G->vb) : st;
    uint16_t *vb = malloc((size_t)(H * Dv * C) * 2);
    row = malloc((size_t)C * sizeof(float));
    if (!vb || !row)
        st = kr_fail(KR_ERR_NOMEM, "out of memory staging MLA kv_b for the GPU");
    for (int64_t h = 0; st == KR_OK && h < H; h++)
        rows_bf16(&L->kv_b, h * (Dn + Dv) + Dn, Dv, vb + h * Dv * C, row);
    if (st == KR_OK)
        st = upload_stage(g, vb, H * Dv * C, "MLA Wv_b", &G->vb);
    free(vb);
    free(row);
    return st;
}

kr_status kr_gpu_upload_layer(gpu_stage *g, const kr_model *m, int l) {
    const kr_hparams *hp = &m->hp;
    const kr_layer *L = &m->layers[l];
    gpu_layer *G = &g->layers[l];
    int64_t D = hp->hidden;
    KR_TRY(kr_gpu_upload_floats(g, L->input_norm, D, &G->input_norm));
    KR_TRY(kr_gpu_upload_floats(g, L->post_norm, D, &G->post_norm));
    if (hp->family == KR_FAMILY_DEEPSEEK2) {
        int64_t C = hp->kv_lora_rank, W = C + hp->qk_rope_dim;
        if (hp->q_lora_rank) {
            KR_TRY(kr_gpu_upload_matrix(g, &L->q_a, "MLA q_a", &G->q_a));
            KR_TRY(kr_gpu_upload_matrix(g, &L->q_b, "MLA q_b", &G->q_b));
            KR_TRY(kr_gpu_upload_floats(g, L->q_a_norm, hp->q_lora_rank, &G->q_a_norm));
            KR_TRY(kr_gpu_upload_floats(g, L->q_a_bias, hp->q_lora_rank, &G->q_a_bias));
        } else {
            KR_TRY(kr_gpu_upload_matrix(g, &L->q_proj, "MLA q_proj", &G->q_proj));
        }
        KR_TRY(kr_gpu_upload_matrix(g, &L->kv_a, "MLA kv_a", &G->kv_a));
        KR_TRY(kr_gpu_upload_floats(g, L->kv_a_norm, C, &G->kv_a_norm));
        KR_TRY(kr_gpu_upload_floats(g, L->kv_a_bias, W, &G->kv_a_bias));
        KR_TRY(upload_mla_b(g, hp, L, G));
        KR_TRY(kr_gpu_upload_matrix(g, &L->o_proj, "o_proj", &G->o));
    } else {
        int64_t hd = hp->head_dim;
        KR_TRY(kr_gpu_upload_matrix(g, &L->wq, "q_proj", &G->wq));
        KR_TRY(kr_gpu_upload_matrix(g, &L->wk, "k_proj", &G->wk));
        KR_TRY(kr_gpu_upload_matrix(g, &L->wv, "v_proj", &G->wv));
        KR_TRY(kr_gpu_upload_matrix(g, &L->wo, "o_proj", &G->o));
        KR_TRY(kr_gpu_upload_floats(g, L->bq, hp->n_heads * hd, &G->bq));
        KR_TRY(kr_gpu_upload_floats(g, L->bk, hp->n_kv_heads * hd, &G->bk));
        KR_TRY(kr_gpu_upload_floats(g, L->bv, hp->n_kv_heads * hd, &G->bv));
        KR_TRY(kr_gpu_upload_floats(g, L->q_norm, hd, &G->q_norm));
        KR_TRY(kr_gpu_upload_floats(g, L->k_norm, hd, &G->k_norm));
    }
    KR_TRY(kr_gpu_upload_floats(g, L->o_bias, D, &G->o_bias));
    if (!L->moe)
        return upload_mlp(g, &L->dense, &G->mlp);
    KR_TRY(upload_matrix_f32(g, &L->router, &G->router));
    KR_TRY(kr_gpu_upload_floats(g, L->router_bias, hp->router.n_experts, &G->router_bias));
    if (L->has_shared)
        KR_TRY(upload_mlp(g, &L->shared, &G->mlp));
    return KR_OK;
}
