/* RoPE: both pairings on hand-checkable inputs, and YaRN / default inverse frequencies, attention factor
 * and DeepSeek's softmax scale against transformers (tests/reference/rope_reference.json, written by
 * tools/make_rope_reference.py from the real configs of each family). */
#include <math.h>

#include "backend/cpu/rope.h"
#include "base/json.h"
#include "model/config.h"
#include "test.h"

static void test_pairings(void) {
    /* dim 4, theta 10000: inv_freq = [1, 1/100]; at pos 1 the first pair turns by 1 radian */
    kr_rope_config r = {.dim = 4, .theta = 10000, .attention_factor = 1};
    float f[2];
    kr_rope_inv_freq(&r, f);
    CHECK_NEAR(f[0], 1.0, 1e-7);
    CHECK_NEAR(f[1], 0.01, 1e-9);

    float x[4] = {1, 0, 0, 0};
    kr_rope_apply(&r, f, x, 1); /* NeoX: dim 0 pairs with dim 2 */
    CHECK_NEAR(x[0], cos(1.0), 1e-6);
    CHECK_NEAR(x[1], 0, 1e-7);
    CHECK_NEAR(x[2], sin(1.0), 1e-6);
    CHECK_NEAR(x[3], 0, 1e-7);

    r.interleaved = true;
    float y[4] = {1, 0, 0, 0};
    kr_rope_apply(&r, f, y, 1); /* interleaved: dim 0 pairs with dim 1 */
    CHECK_NEAR(y[0], cos(1.0), 1e-6);
    CHECK_NEAR(y[1], sin(1.0), 1e-6);
    CHECK_NEAR(y[2], 0, 1e-7);

    float z[4] = {0, 0, 0, 1}; /* NeoX: dim 3 pairs with dim 1, slow frequency 0.01 at pos 100 -> 1 rad */
    r.interleaved = false;
    kr_rope_apply(&r, f, z, 100);
    CHECK_NEAR(z[1], -sin(1.0), 1e-5);
    CHECK_NEAR(z[3], cos(1.0), 1e-5);

    float w[4] = {0.3f, -1.2f, 2.5f, 0.7f}, w0[4];
    memcpy(w0, w, sizeof w);
    kr_rope_apply(&r, f, w, 0); /* position 0 is the identity */
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(w[i], w0[i], 0);
    r.attention_factor = 2; /* the attention factor scales the whole rotated vector */
    kr_rope_apply(&r, f, w, 0);
    CHECK_NEAR(w[2], 2 * w0[2], 1e-6);
}

static void test_against_transformers(void) {
    char path[1024];
    json_t *ref;
    if (kr_json_load_file(test_path("tests/reference/rope_reference.json", path, sizeof path), &ref) != KR_OK) {
        CHECK(0, "%s", kr_error());
        return;
    }
    json_t *cases = json_object_get(ref, "cases");
    CHECK(json_array_size(cases) >= 8, "expected the reference cases");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *want = json_object_get(c, "inv_freq");
        kr_hparams hp;
        kr_status s = kr_hparams_from_json(json_object_get(c, "config"), name, &hp);
        CHECK(s == KR_OK, "%s: %s", name, kr_error());
        if (s != KR_OK)
            continue;
        CHECK(hp.rope.dim == 2 * (int)json_array_size(want), "%s: rotary dim %d, reference %zu", name, hp.rope.dim,
              2 * json_array_size(want));
        float f[256];
        kr_rope_inv_freq(&hp.rope, f);
        double worst = 0;
        for (int k = 0; k < hp.rope.dim / 2 && k < 256; k++) {
            double w = json_real_value(json_array_get(want, (size_t)k));
            worst = fmax(worst, fabs(f[k] - w) / w);
        }
        CHECK(worst < 1e-6, "%s: inv_freq relative error %.3g", name, worst);
        CHECK_NEAR(hp.rope.attention_factor, json_number_value(json_object_get(c, "attention_factor")), 1e-9);
        CHECK_NEAR(hp.attn_scale, json_number_value(json_object_get(c, "softmax_scale")), 1e-9);
        printf("%-28s inv_freq rel err %.2g, attention factor %.6f, softmax scale %.6f\n", name, worst,
               hp.rope.attention_factor, hp.attn_scale);
        kr_hparams_free(&hp);
    }
    json_decref(ref);
}

int main(void) {
    test_pairings();
    test_against_transformers();
    return test_summary("test_rope");
}
