/* Tensor binding for GGUF models (gguf_model.h): Hugging Face name -> llama.cpp name, shape check in
 * ggml order (ne[0] is the contiguous dimension, so a torch [rows, cols] matrix is {cols, rows}), and
 * matrices that point into the mapped file: F32/F16/BF16 through the plain dtype path, ggml block types
 * row by row through kr_ggml_dequantize. A stacked expert tensor {cols, rows, E} binds expert e as the
 * rows of its slice e. llama.cpp's fused ffn_gate_up_exps and attn_qkv are read in place too. */
#include "model/gguf_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights/ggml_quants.h"

static const struct {
    const char *hf, *gguf;
} attn_names[] = {
    {"q_proj", "attn_q"},
    {"k_proj", "attn_k"},
    {"v_proj", "attn_v"},
    {"o_proj", "attn_output"},
    {"q_norm", "attn_q_norm"},
    {"k_norm", "attn_k_norm"},
    {"q_a_proj", "attn_q_a"},
    {"q_a_layernorm", "attn_q_a_norm"},
    {"q_b_proj", "attn_q_b"},
    {"kv_a_proj_with_mqa", "attn_kv_a_mqa"},
    {"kv_a_layernorm", "attn_kv_a_norm"},
    {"kv_b_proj", "attn_kv_b"},
};

static const char *ffn_part(const char *p, size_t *len) {
    static const char *parts[] = {"gate", "up", "down"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(parts[i]);
        if (!strncmp(p, parts[i], n) && !strcmp(p + n, "_proj.weight")) {
            *len = n;
            return parts[i];
        }
    }
    return NULL;
}

/* hf -> GGUF name; *expert gets the slice of a stacked expert tensor, -1 otherwise. False when the
 * name has no GGUF counterpart. */
static bool map_name(const kr_model *m, const char *hf, char *out, size_t n, int *expert) {
    *expert = -1;
    if (!strcmp(hf, "model.embed_tokens.weight"))
        return snprintf(out, n, "token_embd.weight") > 0;
    if (!strcmp(hf, "model.norm.weight"))
        return snprintf(out, n, "output_norm.weight") > 0;
    if (!strcmp(hf, "lm_head.weight"))
        return snprintf(out, n, "output.weight") > 0;
    int l, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &l, &used) != 1 || used == 0)
        return false;
    const char *r = hf + used;
    size_t plen;
    const char *part;
    if (!strcmp(r, "input_layernorm.weight"))
        return snprintf(out, n, "blk.%d.attn_norm.weight", l) > 0;
    if (!strcmp(r, "post_attention_layernorm.weight"))
        return snprintf(out, n, "blk.%d.%s.weight", l,
                        m->hp.family == KR_FAMILY_GLM4MOE ? "post_attention_norm" : "ffn_norm") > 0;
    if (!strncmp(r, "self_attn.", 10)) {
        r += 10;
        for (size_t i = 0; i < sizeof attn_names / sizeof *attn_names; i++) {
            size_t k = strlen(attn_names[i].hf);
            if (!strncmp(r, attn_names[i].hf, k) && r[k] == '.')
                return snprintf(out, n, "blk.%d.%s%s", l, attn_names[i].gguf, r + k) > 0;
        }
        return false;
    }
    if (!strcmp(r, "mlp.gate.weight"))
        return snprintf(out, n, "blk.%d.ffn_gate_inp.weight", l) > 0;
    if (!strcmp(r, "mlp.gate.e_score_correction_bias"))
        return snprintf(out, n, "blk.%d.exp_probs_b.bias", l) > 0;
    int e, u2 = 0;
    if (sscanf(r, "mlp.experts.%d.%n", &e, &u2) == 1 && u2 && (part = ffn_part(r + u2, &plen))) {
        *expert = e;
        return snprintf(out, n, "blk.%d.ffn_%s_exps.weight", l, part) > 0;
    }
    if (!strncmp(r, "mlp.shared_experts.", 19) && (part = ffn_part(r + 19, &plen)))
        return snprintf(out, n, "blk.%d.ffn_%s_shexp.weight", l, part) > 0;
    if (!strncmp(r, "mlp.", 4) && (part = ffn_part(r + 4, &plen)))
        return snprintf(out, n, "blk.%d.ffn_%s.weight", l, part) > 0;
    return false;
}

static const char *path_of(const kr_model *m, int shard) { return kr_gguf_path(m->gguf->shards[shard]); }

static kr_status not_found(const kr_model *m, const char *name) {
    return kr_fail(KR_ERR_FORMAT, "%s: tensor '%s' not found (%llu tensors in %d file%s)",
                   kr_gguf_path(kr_gguf_set_meta(m->gguf)), name, (unsigned long long)m->gguf->n_tensors, m->gguf->n,
                   m->gguf->n == 1 ? "" : "s");
}

/* *t is NULL (no error) when the name maps but the file lacks it: a fused layout may hold it. */
static kr_status lookup(const kr_model *m, const char *hf, char *name, size_t n, int *expert,
                        const kr_gguf_tensor **t, int *shard) {
    if (!map_name(m, hf, name, n, expert))
        return kr_fail(KR_ERR_FORMAT, "%s: tensor '%s' has no GGUF name krasis knows", kr_gguf_path(kr_gguf_set_meta(m->gguf)), hf);
    *t = kr_gguf_set_find(m->gguf, name, shard);
    return KR_OK;
}

/* llama.cpp's fused layouts (convert_hf_to_gguf.py --fuse-gate-up-exps / --fuse-qkv): where the rows of
 * an unfused tensor lie in the fused one. ffn_gate_up_exps {D, 2 I_e, E}: per expert the gate rows, then
 * the up rows; attn_qkv {D, Hq hd + 2 Hkv hd} (and its .bias): q rows, k rows, v rows. */
typedef struct {
    char name[256];
    int64_t offset;     /* first row (of each expert's block, for experts) */
    int64_t total;      /* rows of the fused tensor (per expert, for experts) */
} fused_ref;

static bool fused_of(const kr_model *m, const char *name, int64_t rows, fused_ref *f) {
    int l;
    char kind[64], suf[16];
    if (sscanf(name, "blk.%d.ffn_%63[a-z]_exps.%15s", &l, kind, suf) == 3 && (!strcmp(kind, "gate") || !strcmp(kind, "up"))) {
        snprintf(f->name, sizeof f->name, "blk.%d.ffn_gate_up_exps.%s", l, suf);
        f->offset = !strcmp(kind, "up") ? rows : 0;
        f->total = 2 * rows;
        return true;
    }
    if (sscanf(name, "blk.%d.attn_%63[a-z].%15s", &l, kind, suf) == 3 && strlen(kind) == 1 && strchr("qkv", kind[0])) {
        int64_t q = m->hp.n_heads * m->hp.head_dim, kv = m->hp.n_kv_heads * m->hp.head_dim;
        snprintf(f->name, sizeof f->name, "blk.%d.attn_qkv.%s", l, suf);
        f->offset = kind[0] == 'q' ? 0 : kind[0] == 'k' ? q : q + kv;
        f->total = q + 2 * kv;
        return m->hp.family != KR_FAMILY_DEEPSEEK2;
    }
    return false;
}

static const char *dims_str(const int64_t *ne, int n, char *buf, size_t cap) {
    size_t at = 0;
    at += (size_t)snprintf(buf + at, cap - at, "{");
    for (int i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "}");
    return buf;
}

static kr_status check_dims(const kr_model *m, int shard, const char *name, const kr_gguf_tensor *t, int n_dims,
                            const int64_t *ne) {
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++)
        ok = t->ne[i] == ne[i];
    if (ok)
        return KR_OK;
    char got[128], want[128];
    return kr_fail(KR_ERR_FORMAT, "%s: tensor '%s' has ggml shape %s, the metadata implies %s", path_of(m, shard), name,
                   dims_str(t->ne, t->n_dims, got, sizeof got), dims_str(ne, n_dims, want, sizeof want));
}

static void count(kr_model *m, uint32_t type, int64_t numel, int64_t bytes) {
    m->stats.params_total += numel;
    if (m->binding_routed)
        m->stats.params_routed += numel;
    m->stats.bytes_total += bytes;
    if (type == KR_GGML_F32 || type == KR_GGML_F16 || type == KR_GGML_BF16)
        m->stats.bytes_by_dtype[type == KR_GGML_F32 ? KR_DT_F32 : type == KR_GGML_F16 ? KR_DT_F16 : KR_DT_BF16] += bytes;
    else if (type < KR_GGML_TYPE_LIMIT)
        m->stats.bytes_by_ggml[type] += bytes;
}

/* rows x ne[0] matrix at byte offset `first_row` rows into t */
static kr_status make_matrix(kr_model *m, int shard, const char *name, const kr_gguf_tensor *t, int64_t first_row,
                             int64_t rows, kr_matrix *out) {
    kr_ggml_type_info ti = kr_ggml_info(t->type);
    if (!ti.name || !ti.dequantizable)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: tensor '%s' has ggml type %s, which krasis cannot dequantize",
                       path_of(m, shard), name, ti.name ? ti.name : "(unknown)");
    int64_t cols = t->ne[0];
    if (cols % ti.block_elems) /* gguf.c checks this at open; kept because a row must be whole blocks */
        return kr_fail(KR_ERR_FORMAT, "%s: tensor '%s': %lld columns is not a whole number of %s blocks", path_of(m, shard),
                       name, (long long)cols, ti.name);
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->cols = cols;
    out->from_gguf = true;
    out->ggml_type = t->type;
    out->row_bytes = cols / ti.block_elems * ti.block_bytes;
    out->data = t->data + (size_t)(first_row * out->row_bytes);
    switch (t->type) {
    case KR_GGML_F32: out->dtype = KR_DT_F32; break;
    case KR_GGML_F16: out->dtype = KR_DT_F16; break;
    case KR_GGML_BF16: out->dtype = KR_DT_BF16; break;
    default: out->ggml = true; out->dtype = KR_DT_U8; break;
    }
    count(m, t->type, rows * cols, rows * out->row_bytes);
    return KR_OK;
}

kr_status kr_gguf_bind_matrix(kr_model *m, const char *hf_name, int64_t rows, int64_t cols, kr_matrix *out) {
    char name[256];
    int expert, shard = 0;
    const kr_gguf_tensor *t = NULL;
    KR_TRY(lookup(m, hf_name, name, sizeof name, &expert, &t, &shard));
    fused_ref f;
    if (!t && fused_of(m, name, rows, &f) && (t = kr_gguf_set_find(m->gguf, f.name, &shard))) {
        if (expert < 0) {
            KR_TRY(check_dims(m, shard, f.name, t, 2, (int64_t[]){cols, f.total}));
            return make_matrix(m, shard, f.name, t, f.offset, rows, out);
        }
        KR_TRY(check_dims(m, shard, f.name, t, 3, (int64_t[]){cols, f.total, m->hp.router.n_experts}));
        if (expert >= m->hp.router.n_experts)
            return kr_fail(KR_ERR_ARG, "%s: expert %d of '%s' is out of range", path_of(m, shard), expert, f.name);
        return make_matrix(m, shard, f.name, t, (int64_t)expert * f.total + f.offset, rows, out);
    }
    if (!t)
        return not_found(m, name);
    if (expert < 0) {
        KR_TRY(check_dims(m, shard, name, t, 2, (int64_t[]){cols, rows}));
        return make_matrix(m, shard, name, t, 0, rows, out);
    }
    KR_TRY(check_dims(m, shard, name, t, 3, (int64_t[]){cols, rows, m->hp.router.n_experts}));
    if (expert >= m->hp.router.n_experts)
        return kr_fail(KR_ERR_ARG, "%s: expert %d of '%s' is out of range", path_of(m, shard), expert, name);
    return make_matrix(m, shard, name, t, (int64_t)expert * rows, rows, out);
}

kr_status kr_gguf_bind_tensor(kr_model *m, const char *name, int n_dims, const int64_t *ne, kr_matrix *out) {
    int shard;
    const kr_gguf_tensor *t = kr_gguf_set_find(m->gguf, name, &shard);
    if (!t)
        return kr_fail(KR_ERR_FORMAT, "%s: tensor '%s' not found", kr_gguf_path(kr_gguf_set_meta(m->gguf)), name);
    KR_TRY(check_dims(m, shard, name, t, n_dims, ne));
    int64_t rows = 1;
    for (int i = 1; i < n_dims; i++)
        rows *= ne[i];
    return make_matrix(m, shard, name, t, 0, rows, out);
}

bool kr_gguf_has_tensor(const kr_model *m, const char *name) { return kr_gguf_set_find(m->gguf, name, NULL) != NULL; }

kr_status kr_gguf_bind_vector(kr_model *m, const char *hf_name, int64_t n, float **out) {
    char name[256];
    int expert, shard = 0;
    const kr_gguf_tensor *t = NULL;
    KR_TRY(lookup(m, hf_name, name, sizeof name, &expert, &t, &shard));
    fused_ref f = {.offset = 0, .total = n};
    if (!t && fused_of(m, name, n, &f))
        t = kr_gguf_set_find(m->gguf, f.name, &shard); /* a slice of attn_qkv.bias */
    if (!t)
        return not_found(m, name);
    const char *tname = f.total != n ? f.name : name;
    KR_TRY(check_dims(m, shard, tname, t, 1, (int64_t[]){f.total}));
    kr_matrix v;
    KR_TRY(make_matrix(m, shard, tname, t, 0, 1, &v));
    float *all = malloc((size_t)f.total * sizeof *all);
    *out = malloc((size_t)n * sizeof **out);
    if (!all || !*out) {
        free(all);
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    kr_matrix_row(&v, 0, all);
    memcpy(*out, all + f.offset, (size_t)n * sizeof **out);
    free(all);
    return KR_OK;
}

bool kr_gguf_model_has(const kr_model *m, const char *hf_name) {
    char name[256];
    int expert;
    fused_ref f;
    if (!map_name(m, hf_name, name, sizeof name, &expert))
        return false;
    return kr_gguf_set_find(m->gguf, name, NULL) || (fused_of(m, name, 1, &f) && kr_gguf_set_find(m->gguf, f.name, NULL));
}
