/* The QuantConfig of a GGUF model follows the file (gguf_model.h): each projection kind's ggml type picks
 * its krasis layout so that nothing is lost where the layout allows it, and the mapping is printed once.
 *   Q4_0            -> INT4 g32, an exact re-encode (same code bytes, scale widened)
 *   Q8_0            -> INT8 g32, exact (a -128 code, never written by ggml, is clamped and reported)
 *   Q5_0, IQ4_NL    -> INT8 g32, exact (codes fit int8, same scale)
 *   Q4_1, Q5_1, K-quants, IQ4_XS -> INT8: dequantized rows requantized; INT8's 255 levels per group hold
 *                      their 16..64 levels with only INT8 rounding on top
 *   F32, F16, BF16  -> the configured bits (none by default: the float path, as loaded)
 * Every component left at 0 bits by the flags follows the file the same way (routed and shared experts,
 * dense MLP, attention projections, lm_head), at group size 32 unless --group-size says otherwise:
 * block-quantized weights run on the integer kernels instead of being dequantized row by row at every
 * use. MLA's k_b / v_b (or the legacy kv_b, its k part transposed into k_b's layout) count as attention
 * and follow attention_bits: the absorbed products run on the integer kernels too. The embeddings stay
 * as stored (read per row). Explicit flags win. */
#include <stdio.h>
#include <string.h>

#include "model/gguf_model.h"
#include "weights/ggml_quants.h"
#include "weights/ggml_requant.h"

static bool is_float(uint32_t t) { return t == KR_GGML_F32 || t == KR_GGML_F16 || t == KR_GGML_BF16; }

typedef struct {
    const char *kind;
    uint64_t types; /* bit per ggml type seen */
} kind_types;

static void see(kind_types *k, const kr_matrix *w) {
    if (w->rows && w->from_gguf && w->ggml_type < 64)
        k->types |= 1ull << w->ggml_type;
}

/* bits a set of types maps to: 0 when all float, 4 when all Q4_0, else 8 */
static int bits_for(uint64_t types) {
    if (!types)
        return 0;
    uint64_t floats = (1ull << KR_GGML_F32) | (1ull << KR_GGML_F16) | (1ull << KR_GGML_BF16);
    if (!(types & ~floats))
        return 0;
    if (types == (1ull << KR_GGML_Q4_0))
        return 4;
    return 8;
}

static void print_kind(const kind_types *k, int bits, int gs, bool followed) {
    for (uint32_t t = 0; t < 64; t++) {
        if (!(k->types >> t & 1))
            continue;
        const char *name = kr_ggml_info(t).name ? kr_ggml_info(t).name : "?";
        if (!bits)
            fprintf(stderr, "krasis: GGUF %s: %s -> %s\n", k->kind, name,
                    is_float(t) ? "float (as loaded)"
                    : strstr(k->kind, "(MLA)") ? "float rows, dequantized per use (--attention-bits quantizes them)"
                                               : "float rows, dequantized per use (pass its --*-bits flag to quantize)");
        else if (!strncmp(k->kind, "attn_kv_b ", 10))
            fprintf(stderr, "krasis: GGUF %s: %s -> INT%d g%d (k part transposed to attn_k_b's layout and %s, v "
                    "part %s%s)\n", k->kind, name, bits, gs, is_float(t) ? "quantized" : "requantized",
                    kr_ggml_reencodes(t, bits, gs) ? "re-encoded exactly" : "quantized",
                    followed ? ", following the file" : ", as configured");
        else
            fprintf(stderr, "krasis: GGUF %s: %s -> INT%d g%d (%s%s)\n", k->kind, name, bits, gs,
                    kr_ggml_reencodes(t, bits, gs) ? (t == KR_GGML_Q8_0 ? "exact re-encode unless a code is -128" : "exact re-encode")
                    : is_float(t) ? "quantized from float" : "dequantized, requantized: INT8 rounding only",
                    followed ? ", following the file" : ", as configured");
    }
}

kr_status kr_gguf_quant_plan(const kr_model *m, const kr_quant_config *qc, kr_quant_config *out) {
    *out = *qc;
    kind_types k[] = {{"ffn_gate_exps", 0}, {"ffn_up_exps", 0}, {"ffn_down_exps", 0}, {"ffn_*_shexp", 0},
                      {"ffn_* (dense)", 0}, {"attention", 0},   {"output", 0},
                      {"attn_k_b / attn_v_b (MLA)", 0}, {"attn_kv_b (MLA)", 0}};
    for (int l = 0; l < m->hp.n_layers; l++) {
        const kr_layer *L = &m->layers[l];
        if (L->moe && L->experts) {
            see(&k[0], &L->experts[0].gate);
            see(&k[1], &L->experts[0].up);
            see(&k[2], &L->experts[0].down);
        }
        if (L->has_shared) {
            see(&k[3], &L->shared.gate);
            see(&k[3], &L->shared.up);
            see(&k[3], &L->shared.down);
        }
        if (!L->moe) {
            see(&k[4], &L->dense.gate);
            see(&k[4], &L->dense.up);
            see(&k[4], &L->dense.down);
        }
        const kr_matrix *attn[] = {&L->q_proj, &L->q_a, &L->q_b, &L->kv_a, &L->o_proj, &L->wq, &L->wk, &L->wv, &L->wo};
        for (size_t i = 0; i < sizeof attn / sizeof *attn; i++)
            see(&k[5], attn[i]);
        see(&k[8], &L->kv_b);
        see(&k[7], &L->k_b);
        see(&k[7], &L->v_b);
    }
    see(&k[6], &m->lm_head);
    uint64_t routed = k[0].types | k[1].types | k[2].types;
    struct {
        int *bits;
        uint64_t types;
        bool follow;
    } comp[] = {{&out->routed_bits, routed, false},       {&out->shared_bits, k[3].types, false},
                {&out->dense_bits, k[4].types, false},    {&out->attention_bits, k[5].types | k[7].types | k[8].types, false},
                {&out->lm_head_bits, k[6].types, false}};
    bool any = false;
    for (size_t i = 0; i < sizeof comp / sizeof *comp; i++)
        if (!*comp[i].bits) {
            *comp[i].bits = bits_for(comp[i].types);
            comp[i].follow = true;
            any |= *comp[i].bits != 0;
        }
    /* One group size for all (activations are quantized once per layer). 32 = ggml's block (and K-quant
     * sub-block) size: Q4_0 / Q8_0 / Q5_0 / IQ4_NL stay exact, and every other type's groups line up
     * with its own scales, so INT8's rounding is all that is added. */
    if (!qc->group_size_given && any)
        out->group_size = 32;
    for (int i = 0; i < 3; i++)
        print_kind(&k[i], out->routed_bits, out->group_size, comp[0].follow);
    print_kind(&k[3], out->shared_bits, out->group_size, comp[1].follow);
    print_kind(&k[4], out->dense_bits, out->group_size, comp[2].follow);
    print_kind(&k[5], out->attention_bits, out->group_size, comp[3].follow);
    print_kind(&k[6], out->lm_head_bits, out->group_size, comp[4].follow);
    print_kind(&k[7], out->attention_bits, out->group_size, comp[3].follow);
    print_kind(&k[8], out->attention_bits, out->group_size, comp[3].follow);
    return KR_OK;
}
