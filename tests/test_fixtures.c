/* krasis against the Hugging Face reference: for every fixture made by tools/make_fixtures.py, the logits
 * at every prompt position (one prefill call) and after each incremental decode step must match
 * transformers' float32 logits, and the argmax must be the same everywhere.
 *
 * Tolerance: both sides compute in float32 from identical weight values; they differ only in summation
 * order (~1e-7 relative per dot product, growing with depth and a few hundred terms per sum) and in
 * libm vs torch transcendental rounding. 1e-4 of the row's largest |logit| leaves a wide margin over the
 * ~1e-6 observed while catching any real math error (those show up at 1e-2 and above). */
#include <math.h>

#include "base/json.h"
#include "base/npy.h"
#include "model/model.h"
#include "ref_check.h"
#include "test.h"

#define REL_TOL 1e-4


static double worst_err;

static void compare_rows(const char *fx, const char *what, const float *got, const kr_npy *want, int64_t row,
                         int64_t vocab) {
    int64_t ag, aw;
    double err = row_rel_err(got, want->data + row * vocab, vocab, &ag, &aw);
    worst_err = fmax(worst_err, err);
    CHECK(err <= REL_TOL, "%s: %s row %lld: relative error %.3g > %g", fx, what, (long long)row, err, REL_TOL);
    CHECK(ag == aw, "%s: %s row %lld: argmax %lld, reference %lld", fx, what, (long long)row, (long long)ag,
          (long long)aw);
}

static void check_fixture(const char *fx) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", KRASIS_SOURCE_DIR, fx);
    fixture_ref ref;
    if (fixture_ref_load(dir, &ref) != KR_OK) {
        CHECK(0, "%s: reference: %s", fx, kr_error());
        return;
    }
    int np = ref.np, nd = ref.nd;
    const int32_t *prompt = ref.prompt, *decode = ref.decode;
    const kr_npy want_p = ref.want_p, want_d = ref.want_d;
    kr_model *m = NULL;
    kr_kv_cache *kv = NULL;
    kr_status s = kr_model_open(dir, &m);
    CHECK(s == KR_OK, "%s: open: %s", fx, kr_error());
    if (s != KR_OK)
        goto done;
    int64_t V = m->hp.vocab;
    CHECK(want_p.ndim == 2 && want_p.shape[0] == np && want_p.shape[1] == V, "%s: logits_prompt shape", fx);
    CHECK(want_d.ndim == 2 && want_d.shape[0] == nd && want_d.shape[1] == V, "%s: logits_decode shape", fx);
    if (want_p.ndim != 2 || want_p.shape[0] != np || want_p.shape[1] != V || want_d.ndim != 2 ||
        want_d.shape[0] != nd || want_d.shape[1] != V)
        goto done;
    float *logits = malloc((size_t)(np * V) * sizeof *logits);
    CHECK(kr_kv_cache_create(m, &kv) == KR_OK, "kv");
    s = kr_forward(m, kv, prompt, np, true, logits);
    CHECK(s == KR_OK, "%s: prefill: %s", fx, kr_error());
    for (int t = 0; s == KR_OK && t < np; t++)
        compare_rows(fx, "prefill", logits + t * V, &want_p, t, V);
    for (int i = 0; s == KR_OK && i < nd; i++) {
        s = kr_forward(m, kv, &decode[i], 1, false, logits);
        CHECK(s == KR_OK, "%s: decode step %d: %s", fx, i, kr_error());
        if (s == KR_OK)
            compare_rows(fx, "decode", logits, &want_d, i, V);
    }
    CHECK(kv->len == np + nd, "%s: cache holds %lld tokens, expected %d", fx, (long long)kv->len, np + nd);
    free(logits);
    printf("%-18s ok up to rel err %.2g\n", fx, worst_err);
done:
    kr_kv_cache_free(kv);
    kr_model_close(m);
    fixture_ref_free(&ref);
}

int main(int argc, char **argv) {
    static const char *all[] = {"dsv2_lite",      "dsv2_qlora_group", "dsv2_bias",       "dsv3_group",      "kimi_k2",
                                "kimi_k25",       "qwen3_moe",        "qwen3_moe_yarn",  "glm4_moe_qknorm",
                                "glm4_moe_tied",  "dsv3_fp8"};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        if (argc > 1 && strcmp(argv[1], all[i]) != 0)
            continue;
        worst_err = 0;
        check_fixture(all[i]);
    }
    return test_summary("test_fixtures");
}
