/* ggml block formats: krasis's dequantization equals the gguf Python package's, value for value, on the
 * random blocks of tests/reference/ggml_quants (tools/make_ggml_quant_reference.py). */
#include <math.h>

#include "base/json.h"
#include "base/mapfile.h"
#include "test.h"
#include "weights/ggml_quants.h"

int main(void) {
    char path[1024];
    json_t *index;
    if (kr_json_load_file(test_path("tests/reference/ggml_quants/index.json", path, sizeof path), &index) != KR_OK) {
        CHECK(0, "%s", kr_error());
        return test_summary("test_ggml_quants");
    }
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(index, "types"), i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        uint32_t type = (uint32_t)json_integer_value(json_object_get(t, "type"));
        int64_t n = json_integer_value(json_object_get(t, "elements"));
        kr_ggml_type_info ti = kr_ggml_info(type);
        CHECK(ti.name && strcmp(ti.name, name) == 0 && ti.dequantizable, "type %u is %s", type, name);
        char rel[256];
        char *raw = NULL, *want = NULL;
        size_t nraw = 0, nwant = 0;
        snprintf(rel, sizeof rel, "tests/reference/ggml_quants/%s.raw", name);
        kr_status s1 = kr_read_file(test_path(rel, path, sizeof path), &raw, &nraw);
        snprintf(rel, sizeof rel, "tests/reference/ggml_quants/%s.f32", name);
        kr_status s2 = kr_read_file(test_path(rel, path, sizeof path), &want, &nwant);
        CHECK(s1 == KR_OK && s2 == KR_OK, "%s", kr_error());
        CHECK(nraw == (size_t)(n / ti.block_elems * ti.block_bytes) && nwant == (size_t)n * 4, "%s: file sizes", name);
        if (s1 == KR_OK && s2 == KR_OK && nwant == (size_t)n * 4 && nraw == (size_t)(n / ti.block_elems * ti.block_bytes)) {
            float *got = malloc((size_t)n * sizeof *got);
            kr_ggml_dequantize(type, (const uint8_t *)raw, n, got);
            int64_t bad = 0, first = -1;
            for (int64_t k = 0; k < n; k++) {
                float w;
                memcpy(&w, want + 4 * k, 4);
                if (got[k] != w && !(isnan(got[k]) && isnan(w))) {
                    bad++;
                    first = first < 0 ? k : first;
                }
            }
            CHECK(bad == 0, "%s: %lld of %lld values differ (first at %lld)", name, (long long)bad, (long long)n,
                  (long long)first);
            printf("%-7s %5lld values identical to gguf's\n", name, (long long)(n - bad));
            free(got);
        }
        free(raw);
        free(want);
    }
    CHECK(kr_ggml_info(9999).name == NULL && kr_ggml_info(4).name == NULL, "unknown type ids have no name");
    json_decref(index);
    return test_summary("test_ggml_quants");
}
