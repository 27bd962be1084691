/* The CLI on GGUF models (argv[1] = the krasis binary): `krasis logits` on a GGUF reproduces the
 * transformers reference of tests/fixtures/gguf (float32 tolerance, as test_gguf_model), also when it is
 * given the second shard of a split set; `krasis info`, `run`, `tokenize` and `template` take the
 * tokenizer and chat template from the GGUF's tokenizer.* keys (the fixtures' vocabulary is the byte-level
 * one tools/make_gguf_fixtures.py writes: " the" is the merge token 262 = "Ġt" + "he"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/npy.h"
#include "test.h"
#include "tmpdir.h"

static const char *krasis;

static int run(const char *cmd, char *out, size_t cap) {
    char full[4096];
    snprintf(full, sizeof full, "%s %s 2>/dev/null", krasis, cmd);
    FILE *p = popen(full, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    return pclose(p);
}

static void check_logits(const char *variant, const char *file) {
    char dir[256], cmd[2048], out[8192], npy[512], ref[1024], ids[512] = "";
    json_t *r;
    snprintf(ref, sizeof ref, "%s/tests/fixtures/gguf/%s/reference.json", KRASIS_SOURCE_DIR, variant);
    if (kr_json_load_file(ref, &r) != KR_OK) {
        CHECK(0, "%s", kr_error());
        return;
    }
    json_t *p = json_object_get(r, "prompt_ids");
    for (size_t i = 0; i < json_array_size(p); i++)
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%lld", i ? "," : "",
                 (long long)json_integer_value(json_array_get(p, i)));
    json_decref(r);
    CHECK(test_tmpdir(dir, sizeof dir) != NULL, "tmpdir");
    snprintf(npy, sizeof npy, "%s/l.npy", dir);
    snprintf(cmd, sizeof cmd, "logits %s/tests/fixtures/gguf/%s/%s --ids %s --all-positions --out %s", KRASIS_SOURCE_DIR,
             variant, file, ids, npy);
    CHECK(run(cmd, out, sizeof out) == 0, "krasis %s failed", cmd);
    kr_npy got = {0}, want = {0};
    snprintf(ref, sizeof ref, "%s/tests/fixtures/gguf/%s/logits_prompt.npy", KRASIS_SOURCE_DIR, variant);
    if (kr_npy_read_f32(npy, &got) == KR_OK && kr_npy_read_f32(ref, &want) == KR_OK) {
        CHECK(got.ndim == 2 && want.ndim == 2 && got.shape[1] == want.shape[1] && got.shape[0] <= want.shape[0],
              "%s: logits shape", variant);
        double d = 0, m = 0;
        for (int64_t i = 0; i < got.shape[0] * got.shape[1]; i++) {
            d = fmax(d, fabs((double)got.data[i] - want.data[i]));
            m = fmax(m, fabs((double)want.data[i]));
        }
        CHECK(d <= 1e-4 * m, "%s via the CLI: relative error %.3g", variant, d / m);
    } else {
        CHECK(0, "%s: %s", variant, kr_error());
    }
    kr_npy_free(&got);
    kr_npy_free(&want);
    unlink(npy);
    rmdir(dir);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_gguf_cli KRASIS_BINARY\n");
        return 2;
    }
    krasis = argv[1];
    check_logits("qwen3_moe_f32", "qwen3_moe_f32.gguf");
    check_logits("glm4_moe_f16", "glm4_moe_f16-00002-of-00002.gguf");

    char cmd[2048], out[16384], g[1024];
    snprintf(g, sizeof g, "%s/tests/fixtures/gguf/dsv2_lite_f16/dsv2_lite_f16.gguf", KRASIS_SOURCE_DIR);
    snprintf(cmd, sizeof cmd, "info %s", g);
    CHECK(run(cmd, out, sizeof out) == 0 && strstr(out, "deepseek2") && strstr(out, "in 1 file"), "info: %s", out);
    snprintf(cmd, sizeof cmd, "tokenize -t %s --text ' the cat' --ids", g);
    CHECK(run(cmd, out, sizeof out) == 0 && !strncmp(out, "262 ", 4), "tokenize from the GGUF vocabulary: '%s'", out);
    snprintf(cmd, sizeof cmd, "run -m %s -p 'the cat' -n 3 --temperature 0", g);
    CHECK(run(cmd, out, sizeof out) == 0, "run -m GGUF failed");
    char dir[256], msgs[512];
    CHECK(test_tmpdir(dir, sizeof dir) != NULL, "tmpdir");
    snprintf(msgs, sizeof msgs, "%s/m.json", dir);
    const char *m = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    test_write(msgs, m, strlen(m));
    snprintf(cmd, sizeof cmd, "template --template %s --messages %s --add-generation-prompt", g, msgs);
    CHECK(run(cmd, out, sizeof out) == 0 && !strcmp(out, "<|bos|>user: hi\nassistant:"),
          "template from tokenizer.chat_template: '%s'", out);
    unlink(msgs);
    rmdir(dir);
    return test_summary("test_gguf_cli");
}
