/* End to end on the demo model (models/tiny-moe): greedy generation gives exactly the tokens that
 * transformers' generate produced (models/tiny-moe/reference.json, from tools/train/reference.py); the
 * streamed text equals the decoded tokens; a repeated prompt reuses the KV cache and gives the same
 * answer; a prefill cancelled between its chunks keeps what it ran for the next call; `krasis perplexity`
 * matches PyTorch's value within 0.5%. argv[1] is the krasis binary. */
#include <math.h>
#include <stdio.h>
#include <sys/wait.h>

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

static int alive_asks;
static bool alive_twice(void *user) {
    (void)user;
    return ++alive_asks < 3;
}

/* a 40-token prompt in chunks of 8 whose client goes away at the third ask (before the fourth chunk): no
 * tokens, finish "cancelled", 24 tokens cached; the same request again reuses them and answers exactly as
 * a fresh session does */
static void check_cancelled_prefill(kr_model *m, const kr_tokenizer *tok) {
    enum { N = 40, OUT = 8 };
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 31 + 7) % m->hp.vocab);
    m->prefill_chunk = 8;
    kr_session *fresh = NULL, *s = NULL;
    kr_gen_params p = {.sampling = {.temperature = 0, .top_p = 1, .repetition_penalty = 1}, .max_tokens = OUT};
    kr_gen_stats st;
    int32_t want[OUT];
    size_t nw = 0, ng = 0;
    if (kr_session_create(m, tok, 0, &fresh) == KR_OK && kr_session_create(m, tok, 0, &s) == KR_OK &&
        kr_session_generate(fresh, ids, N, &p, collect, NULL, &st) == KR_OK) {
        const int32_t *w = kr_session_last_output(fresh, &nw);
        memcpy(want, w, nw * sizeof *w);
        p.alive = alive_twice;
        kr_status r = kr_session_generate(s, ids, N, &p, collect, NULL, &st);
        CHECK(r == KR_OK && st.finish == KR_FINISH_CANCELLED && st.generated_tokens == 0 && kr_session_kv_len(s) == 24,
              "prefill cancelled at the third ask: status %d, finish %d, %lld generated, %lld cached (want 24)", r,
              st.finish, (long long)st.generated_tokens, (long long)kr_session_kv_len(s));
        p.alive = NULL;
        r = kr_session_generate(s, ids, N, &p, collect, NULL, &st);
        const int32_t *got = kr_session_last_output(s, &ng);
        CHECK(r == KR_OK && st.cached_tokens == 24 && ng == nw && !memcmp(got, want, nw * sizeof *want),
              "after the cancelled prefill: status %d, %lld cached (want 24), %zu tokens (fresh: %zu)%s", r,
              (long long)st.cached_tokens, ng, nw, ng == nw && memcmp(got, want, nw * sizeof *want) ? ", different" : "");
    } else {
        CHECK(0, "sessions for the cancelled prefill: %s", kr_error());
    }
    kr_session_free(fresh);
    kr_session_free(s);
    m->prefill_chunk = 0;
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

/* Runs cmd through the shell, capturing stdout; returns the exit status (-1 when it did not exit). */
static int run_cli(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The commands a person types: run (greedy output equals transformers', stop strings), chat with a
 * scripted conversation, and bad flags that must name themselves. */
static void check_cli(const char *krasis, const char *model, json_t *g) {
    char cmd[4096], out[8192];
    const char *prompt = json_string_value(json_object_get(g, "prompt"));
    const char *want = json_string_value(json_object_get(g, "output_text"));
    snprintf(cmd, sizeof cmd, "'%s' run -m '%s' -p '%s' -n %zu --temp 0 2>/dev/null", krasis, model, prompt,
             json_array_size(json_object_get(g, "output_ids")));
    CHECK(run_cli(cmd, out, sizeof out) == 0, "krasis run exits 0");
    CHECK(strcmp(out, want) == 0, "krasis run greedy output\n%s\nequals transformers'\n%s", out, want);
    snprintf(cmd, sizeof cmd, "'%s' run -m '%s' -p '%s' -n 48 --temp 0 --stop DUKE 2>/dev/null", krasis, model, prompt);
    CHECK(run_cli(cmd, out, sizeof out) == 0 && strcmp(out, ".\n\n") == 0, "--stop cuts before the stop string: '%s'", out);
    snprintf(cmd, sizeof cmd, "printf 'Hello\\nHow are you?\\n/exit\\n' | '%s' chat -m '%s' -n 8 --seed 7 2>&1", krasis, model);
    CHECK(run_cli(cmd, out, sizeof out) == 0, "krasis chat exits 0 on /exit");
    long long cached[2] = {-1, -1};
    const char *at = out;
    for (int turn = 0; turn < 2 && (at = strstr(at, "tokens (")); turn++, at++)
        sscanf(at, "tokens (%lld cached)", &cached[turn]);
    CHECK(cached[0] == 0 && cached[1] > 0, "the second turn reuses the first turn's cache (%lld, then %lld cached)",
          cached[0], cached[1]);
    static const struct {
        const char *args, *needle;
    } bad[] = {
        {"-p hi --temp abc", "--temp: 'abc' is not a number"},
        {"-p hi --top-p 2", "top_p must be in (0, 1]"},
        {"-p hi -n -3", "-n: '-3' is not a non-negative integer"},
        {"-p hi --frobnicate", "unknown option '--frobnicate'"},
        {"", "run needs -p PROMPT"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(cmd, sizeof cmd, "'%s' run -m '%s' %s 2>&1", krasis, model, bad[i].args);
        int st = run_cli(cmd, out, sizeof out);
        CHECK(st == 2 && strstr(out, bad[i].needle), "'run %s': status %d, output '%s' lacks '%s'", bad[i].args, st, out,
              bad[i].needle);
    }
    snprintf(cmd, sizeof cmd, "'%s' run -m '%s/tests/fixtures/qwen3_moe' -p hi 2>&1", krasis, KRASIS_SOURCE_DIR);
    CHECK(run_cli(cmd, out, sizeof out) == 1 && strstr(out, "no tokenizer.json or tiktoken.model"),
          "a model without a tokenizer: '%s'", out);
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
    check_cancelled_prefill(m, tok);
    if (argc > 1) {
        check_perplexity(argv[1], model, json_object_get(ref, "excerpt"));
        check_cli(argv[1], model, json_array_get(json_object_get(ref, "greedy"), 0));
    }
    kr_session_free(s);
    kr_tokenizer_free(tok);
    kr_model_close(m);
    json_decref(ref);
    return test_summary("test_generate");
}
