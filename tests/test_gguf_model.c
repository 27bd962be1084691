/* krasis running models straight from GGUF files (tools/make_gguf_fixtures.py -> tests/fixtures/gguf/):
 * logits at every prompt position and after each decode step against
 *   (a) the transformers logits of exactly the values the GGUF holds (reference.json "reference"):
 *       the same float32 tolerance as test_fixtures (1e-4 of the row's largest |logit|) and the same
 *       argmax, for every variant, quantized ones included, because the reference was computed from
 *       the dequantized weights;
 *   (b) the original HF fixture's logits (the unrounded weights), within a tolerance per storage type
 *       that bounds what the rounding itself moves: F16 1e-2 (weights carry 2^-11 relative error,
 *       observed 1.3e-3..1.4e-3), Q8_0 experts 2e-2 (observed 5.0e-3), Q4_0 experts 0.15 (4-bit codes:
 *       ~7% relative weight error, observed 8.4e-2 after the decode steps). BF16/F32 variants hold the fixture's own values: (a) is (b).
 * Also: split k_b/v_b, legacy kv_b, a 2-shard set (with the converter's fused ffn_gate_up_exps and attn_qkv
 * weight + bias) and MTP blocks skipped all go through here. */
#include <math.h>

#include "base/json.h"
#include "base/npy.h"
#include "model/model.h"
#include "ref_check.h"
#include "test.h"

#define REL_TOL 1e-4

typedef struct {
    const char *name, *file, *source;
    double hf_tol;
} variant;

static const variant variants[] = {
    {"dsv2_lite_f16", "dsv2_lite_f16.gguf", "dsv2_lite", 1e-2},
    {"kimi_k2_bf16", "kimi_k2_bf16.gguf", "kimi_k2", REL_TOL},
    {"qwen3_moe_f32", "qwen3_moe_f32.gguf", "qwen3_moe", REL_TOL},
    {"qwen3_moe_q8_0", "qwen3_moe_q8_0.gguf", "qwen3_moe", 2e-2},
    {"qwen3_moe_q4_0", "qwen3_moe_q4_0.gguf", "qwen3_moe", 0.15},
    {"glm4_moe_f16", "glm4_moe_f16-00001-of-00002.gguf", "glm4_moe_qknorm", 1e-2},
};


static double worst_exact, worst_hf;

static void compare(const variant *v, const char *what, int64_t row, const float *got, const kr_npy *exact,
                    const kr_npy *hf, int64_t V) {
    int64_t ag, aw, ag2, aw2;
    double e = row_rel_err(got, exact->data + row * V, V, &ag, &aw);
    double h = row_rel_err(got, hf->data + row * V, V, &ag2, &aw2);
    worst_exact = fmax(worst_exact, e);
    worst_hf = fmax(worst_hf, h);
    CHECK(e <= REL_TOL, "%s: %s row %lld: relative error %.3g to the GGUF-values reference > %g", v->name, what,
          (long long)row, e, REL_TOL);
    CHECK(ag == aw, "%s: %s row %lld: argmax %lld, reference %lld", v->name, what, (long long)row, (long long)ag,
          (long long)aw);
    CHECK(h <= v->hf_tol, "%s: %s row %lld: relative error %.3g to the HF fixture > %g", v->name, what,
          (long long)row, h, v->hf_tol);
}

static void check_variant(const variant *v) {
    char dir[1024], path[1400], hfdir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/gguf/%s", KRASIS_SOURCE_DIR, v->name);
    snprintf(hfdir, sizeof hfdir, "%s/tests/fixtures/%s", KRASIS_SOURCE_DIR, v->source);
    json_t *ref;
    snprintf(path, sizeof path, "%s/reference.json", dir);
    if (kr_json_load_file(path, &ref) != KR_OK) {
        CHECK(0, "%s", kr_error());
        return;
    }
    int32_t prompt[64], decode[64];
    int np = read_ids(ref, "prompt_ids", prompt, 64), nd = read_ids(ref, "decode_ids", decode, 64);
    json_decref(ref);
    kr_npy ep = {0}, ed = {0}, hp = {0}, hd = {0};
    kr_status s = KR_OK;
    const char *names[4] = {"logits_prompt.npy", "logits_decode.npy", "logits_prompt.npy", "logits_decode.npy"};
    kr_npy *dst[4] = {&ep, &ed, &hp, &hd};
    for (int i = 0; i < 4 && s == KR_OK; i++) {
        snprintf(path, sizeof path, "%s/%s", i < 2 ? dir : hfdir, names[i]);
        s = kr_npy_read_f32(path, dst[i]);
    }
    CHECK(s == KR_OK, "%s: reference logits: %s", v->name, kr_error());
    kr_model *m = NULL;
    kr_kv_cache *kv = NULL;
    float *logits = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, v->file);
    if (s == KR_OK) {
        s = kr_model_open(path, &m);
        CHECK(s == KR_OK, "%s: open: %s", v->name, kr_error());
    }
    if (s != KR_OK)
        goto done;
    int64_t V = m->hp.vocab;
    bool shapes_ok = ep.ndim == 2 && ep.shape[0] == np && ep.shape[1] == V && ed.ndim == 2 && ed.shape[0] == nd &&
                     hp.ndim == 2 && hp.shape[0] == np && hd.ndim == 2 && hd.shape[0] == nd;
    CHECK(shapes_ok, "%s: reference logits shapes", v->name);
    if (!shapes_ok)
        goto done;
    logits = malloc((size_t)(np * V) * sizeof *logits);
    CHECK(kr_kv_cache_create(m, &kv) == KR_OK, "kv");
    s = kr_forward(m, kv, prompt, np, true, logits);
    CHECK(s == KR_OK, "%s: prefill: %s", v->name, kr_error());
    for (int t = 0; s == KR_OK && t < np; t++)
        compare(v, "prefill", t, logits + t * V, &ep, &hp, V);
    for (int i = 0; s == KR_OK && i < nd; i++) {
        s = kr_forward(m, kv, &decode[i], 1, false, logits);
        CHECK(s == KR_OK, "%s: decode step %d: %s", v->name, i, kr_error());
        if (s == KR_OK)
            compare(v, "decode", i, logits, &ed, &hd, V);
    }
    printf("%-16s ok: rel err %.2g to the GGUF-values reference, %.2g to the HF fixture (tolerance %g)\n", v->name,
           worst_exact, worst_hf, v->hf_tol);
done:
    free(logits);
    kr_kv_cache_free(kv);
    kr_model_close(m);
    for (int i = 0; i < 4; i++)
        kr_npy_free(dst[i]);
}

int main(int argc, char **argv) {
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        if (argc > 1 && strcmp(argv[1], variants[i].name) != 0)
            continue;
        worst_exact = worst_hf = 0;
        check_variant(&variants[i]);
    }
    return test_summary("test_gguf_model");
}
