/* End to end on the demo model (models/tiny-moe): greedy generation gives exactly the tokens that
 * transformers' generate produced (models/tiny-moe/reference.json, from tools/train/reference.py); the
 * streamed text equals the decoded tokens; a repeated prompt reuses the KV cache and gives the same
 * answer; `krasis perplexity` matches PyTorch's value within 0.5%. argv[1] is the krasis binary. */
#include <math.h>
#include <stdio.h>

#include "base/json.h"
#include "base/mapfile.h"
#include "engine/session.h"
#include "test.h"
#include "tmpdir.h"

static char streamed[8192];

static bool collect(void *user, const char *text, size_t len) {
    (void)user;
    strncat(streamed, text, len < sizeof streamed - strlen(streamed) - 1 ? len : 0);
    return true;
}

static void check_greedy(kr_session *s, const kr_tokenizer *tok, json_t *g) {
    const char *prompt = json_string_value(json_object_get(g, "prompt"));
    json_t *want = json_object_get(g, "output_ids");
    int32_t *ids;
    size_t n;
    CHECK(kr_tokenizer_encode(tok, prompt, strlen(prompt), (kr_encode_options){.add_special = true}, &ids, &n) == KR_OK,
          "encode: %s", kr_error());
    json_t *want_prompt = json_object_get(g, "prompt_ids");
    CHECK(n == json_array_size(want_prompt), "'%s': %zu prompt tokens, transformers %zu", prompt, n,
          json_array_size(want_prompt));
    kr_gen_params p = {.sampling = {.temperature = 0, .top_p = 1, .repetition_penalty = 1},
                       .max_tokens = (int64_t)json_array_size(want)};
    for (int round = 0; round < 2; round++) {
        kr_gen_stats st;
        streamed[0] = 0;
        CHECK(kr_session_generate(s, ids, n, &p, collect, NULL, &st) == KR_OK, "generate: %s", kr_error());
        size_t nout;
        const int32_t *out = kr_session_last_output(s, &nout);
        size_t same = 0;
        while (same < nout && same < json_array_size(want) && out[same] == json_integer_value(json_array_get(want, same)))
            same++;
        CHECK(nout == json_array_size(want) && same == nout, "'%s' round %d: %zu tokens, first %zu equal to transformers' %zu",
              prompt, round, nout, same, json_array_size(want));
        char *text = NULL;
        kr_tokenizer_decode(tok, out, nout, true, &text);
        CHECK(text && strcmp(text, streamed) == 0, "streamed text equals the decoded tokens");
        if (round == 1)
            CHECK(st.cached_tokens == (int64_t)n - 1, "second round reuses the cached prompt: %lld cached",
                  (long long)st.cached_tokens);
        free(text);
    }
    free(ids);
}

static void check_perplexity(const char *krasis, const char *model, json_t *ex) {
    char path[1024], tmp[512], file[700], cmd[3000];
    const char *name = json_string_value(json_object_get(ex, "file"));
    snprintf(path, sizeof path, "%s/../shared/data/text/%s", KRASIS_SOURCE_DIR, name);
    char *raw;
    size_t len;
    if (kr_read_file(path, &raw, &len) != KR_OK) {
        printf("SKIP perplexity: %s\n", kr_error());
        return;
    }
    size_t start = (size_t)json_integer_value(json_object_get(ex, "byte_start"));
    size_t n = (size_t)json_integer_value(json_object_get(ex, "byte_len"));
    CHECK(start + n <= len, "excerpt inside %s", path);
    test_tmpdir(tmp, sizeof tmp);
    snprintf(file, sizeof file, "%s/excerpt.txt", tmp);
    test_write(file, raw + start, n);
    free(raw);
    snprintf(cmd, sizeof cmd, "'%s' perplexity -m '%s' -f '%s' --ctx %lld --stride %lld 2>/dev/null", krasis, model, file,
             (long long)json_integer_value(json_object_get(ex, "ctx")),
             (long long)json_integer_value(json_object_get(ex, "stride")));
    FILE *p = popen(cmd, "r");
    double ppl = 0;
    long long count = 0;
    int got = p ? fscanf(p, "perplexity %lf over %lld tokens", &ppl, &count) : 0;
    int status = p ? pclose(p) : -1;
    double want = json_number_value(json_object_get(ex, "ppl"));
    CHECK(got == 2 && status == 0, "krasis perplexity ran (status %d)", status);
    CHECK(count == json_integer_value(json_object_get(ex, "tokens_scored")), "%lld tokens scored, PyTorch %lld", count,
          (long long)json_integer_value(json_object_get(ex, "tokens_scored")));
    CHECK(fabs(ppl - want) / want < 0.005, "perplexity %.4f, PyTorch %.4f", ppl, want);
    printf("perplexity %.4f (PyTorch %.4f, %.3f%% apart)\n", ppl, want, 100 * fabs(ppl - want) / want);
    test_rmtree(tmp);
}

int main(int argc, char **argv) {
    char model[1024], path[1100];
    snprintf(model, sizeof model, "%s/models/tiny-moe", KRASIS_SOURCE_DIR);
    snprintf(path, sizeof path, "%s/reference.json", model);
    json_t *ref;
    kr_model *m;
    kr_tokenizer *tok;
    kr_session *s;
    if (kr_json_load_file(path, &ref) != KR_OK || kr_model_open(model, &m) != KR_OK ||
        kr_tokenizer_load(model, &tok) != KR_OK || kr_session_create(m, tok, 0, &s) != KR_OK) {
        CHECK(0, "%s", kr_error());
        return test_summary("test_generate");
    }
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(ref, "greedy"), i, g) check_greedy(s, tok, g);
    if (argc > 1)
        check_perplexity(argv[1], model, json_object_get(ref, "excerpt"));
    kr_session_free(s);
    kr_tokenizer_free(tok);
    kr_model_close(m);
    json_decref(ref);
    return test_summary("test_generate");
}
