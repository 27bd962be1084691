/* The OpenAI request parser on good and bad bodies (every rejection a 400 naming the field, never a
 * crash), the error JSON shape, and the <think> splitter on text cut at every possible point. */
#include <jansson.h>
#include <math.h>

#include "server/openai.h"
#include "server/reasoning.h"
#include "test.h"

static bool parse(kr_oai_kind k, const char *body, kr_oai_request *r, kr_oai_error *e) {
    return kr_oai_parse(k, body, strlen(body), r, e);
}

static void bad(kr_oai_kind k, const char *body, const char *param) {
    kr_oai_request r;
    kr_oai_error e = {0};
    bool ok = parse(k, body, &r, &e);
    CHECK(!ok && e.status == 400 && strcmp(e.param, param) == 0, "%s: ok=%d status %d param '%s' (want '%s'): %s", body, ok,
          e.status, e.param, param, e.message);
    kr_oai_request_free(&r);
}

static void test_good(void) {
    kr_oai_request r;
    kr_oai_error e;
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                       "{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"user\",\"content\":\"hi\",\"name\":\"x\"},"
                       "{\"role\":\"assistant\",\"content\":null}],\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,"
                       "\"top_k\":40,\"min_p\":0.1,\"seed\":-3,\"stop\":[\"a\",\"b\"],\"presence_penalty\":1,"
                       "\"frequency_penalty\":-1,\"repetition_penalty\":1.2,\"n\":1,\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true},\"logprobs\":true,\"top_logprobs\":5,"
                       "\"chat_template_kwargs\":{\"enable_thinking\":false},\"unknown\":{\"deep\":[1,2]}}";
    CHECK(parse(KR_OAI_CHAT, body, &r, &e), "full chat request: %s", e.message);
    CHECK(r.gen.max_tokens == 7 && r.gen.sampling.top_k == 40 && r.gen.n_stop == 2 && r.stream && r.include_usage &&
              r.gen.logprobs && r.gen.top_logprobs == 5 && r.seed_given && r.gen.sampling.seed == (uint64_t)-3,
          "fields parsed");
    CHECK(fabsf(r.gen.sampling.temperature - 0.5f) < 1e-6 && fabsf(r.gen.sampling.repetition_penalty - 1.2f) < 1e-6,
          "numbers parsed");
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(r.messages, 0), "content")), "ab") == 0,
          "text parts joined");
    CHECK(json_is_null(json_object_get(json_array_get(r.messages, 2), "content")), "null content kept");
    CHECK(json_is_false(json_object_get(r.template_kwargs, "enable_thinking")), "template kwargs kept");
    CHECK(strcmp(r.stops[1], "b") == 0 && strcmp(r.model, "m") == 0, "stops and model");
    kr_oai_request_free(&r);

    CHECK(parse(KR_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":null,\"stop\":null}", &r, &e),
          "nulls mean absent: %s", e.message);
    CHECK(r.gen.max_tokens == 0 && r.gen.sampling.temperature == 1 && r.gen.sampling.top_p == 1 && !r.seed_given,
          "OpenAI defaults");
    kr_oai_request_free(&r);
    CHECK(parse(KR_OAI_COMPLETION, "{\"prompt\":[0,5,7],\"max_tokens\":16.0,\"logprobs\":2}", &r, &e), "token prompt: %s",
          e.message);
    CHECK(r.n_prompt_ids == 3 && r.prompt_ids[2] == 7 && r.gen.max_tokens == 16 && r.gen.top_logprobs == 2 && r.gen.logprobs,
          "ids, 16.0 as an integer, legacy logprobs");
    kr_oai_request_free(&r);
    CHECK(parse(KR_OAI_COMPLETION, "{\"prompt\":[\"one\"]}", &r, &e) && strcmp(r.prompt, "one") == 0 && r.gen.max_tokens == 16,
          "a one-prompt list; completions default to 16 tokens");
    kr_oai_request_free(&r);
}

static void test_bad(void) {
    const kr_oai_kind C = KR_OAI_CHAT, P = KR_OAI_COMPLETION;
    const char *m = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char b[512];
#define BAD(kind, fmt, param)                      \
    do {                                           \
        snprintf(b, sizeof b, "{%s" fmt "}", m);   \
        bad(kind, b, param);                       \
    } while (0)
    bad(C, "", "");
    bad(C, "{", "");
    bad(C, "nul", "");
    bad(C, "[]", "");
    bad(C, "\"str\"", "");
    bad(C, "{\"a\":1,\"a\":2}", "");
    bad(C, "{\"model\":\"x\"}", "messages");
    bad(C, "{\"messages\":{}}", "messages");
    bad(C, "{\"messages\":[]}", "messages");
    bad(C, "{\"messages\":[1]}", "messages[0]");
    bad(C, "{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role");
    bad(C, "{\"messages\":[{\"role\":3}]}", "messages[0].role");
    bad(C, "{\"messages\":[{\"role\":\"user\",\"content\":{}}]}", "messages[0].content");
    bad(C, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages[0].content");
    bad(C, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", "messages[0].content");
    bad(C, "{\"messages\":[{\"role\":\"user\",\"content\":[7]}]}", "messages[0].content");
    BAD(C, ",\"model\":5", "model");
    BAD(C, ",\"max_tokens\":\"10\"", "max_tokens");
    BAD(C, ",\"max_tokens\":0", "max_tokens");
    BAD(C, ",\"max_tokens\":1.5", "max_tokens");
    BAD(C, ",\"max_completion_tokens\":-4", "max_completion_tokens");
    BAD(C, ",\"temperature\":\"hot\"", "temperature");
    BAD(C, ",\"temperature\":2.5", "temperature");
    BAD(C, ",\"top_p\":0", "top_p");
    BAD(C, ",\"top_p\":1.5", "top_p");
    BAD(C, ",\"top_k\":true", "top_k");
    BAD(C, ",\"min_p\":-1", "min_p");
    BAD(C, ",\"seed\":\"1\"", "seed");
    BAD(C, ",\"presence_penalty\":3", "presence_penalty");
    BAD(C, ",\"frequency_penalty\":[]", "frequency_penalty");
    BAD(C, ",\"repetition_penalty\":0", "repetition_penalty");
    BAD(C, ",\"n\":2", "n");
    BAD(C, ",\"n\":\"1\"", "n");
    BAD(C, ",\"stream\":1", "stream");
    BAD(C, ",\"stream_options\":true", "stream_options");
    BAD(C, ",\"stream_options\":{\"include_usage\":\"yes\"}", "include_usage");
    BAD(C, ",\"stop\":5", "stop");
    BAD(C, ",\"stop\":[\"a\",5]", "stop");
    BAD(C, ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop");
    BAD(C, ",\"logprobs\":1", "logprobs");
    BAD(C, ",\"top_logprobs\":21,\"logprobs\":true", "top_logprobs");
    BAD(C, ",\"top_logprobs\":2,\"logprobs\":false", "top_logprobs");
    BAD(C, ",\"chat_template_kwargs\":\"x\"", "chat_template_kwargs");
    BAD(C, ",\"ignore_eos\":\"no\"", "ignore_eos");
    bad(P, "{}", "prompt");
    bad(P, "{\"prompt\":5}", "prompt");
    bad(P, "{\"prompt\":[]}", "prompt");
    bad(P, "{\"prompt\":[\"a\",\"b\"]}", "prompt");
    bad(P, "{\"prompt\":[[1],[2]]}", "prompt");
    bad(P, "{\"prompt\":[1,-2]}", "prompt");
    bad(P, "{\"prompt\":[1,\"x\"]}", "prompt");
    bad(P, "{\"prompt\":[1,99999999999]}", "prompt");
    bad(P, "{\"prompt\":\"x\",\"logprobs\":true}", "logprobs");
    bad(P, "{\"prompt\":\"x\",\"logprobs\":6}", "logprobs");
#undef BAD
    /* every prefix of a valid body: rejected cleanly (the sanitizers watch for the rest) */
    const char *full = "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"h\\u00e9\"}]}],\"stop\":[\"x\"]}";
    for (size_t n = 0; n < strlen(full); n++) {
        kr_oai_request r;
        kr_oai_error e;
        CHECK(!kr_oai_parse(KR_OAI_CHAT, full, n, &r, &e) && e.status == 400, "prefix of %zu bytes rejected", n);
        kr_oai_request_free(&r);
    }
    /* bad UTF-8 and embedded NULs */
    kr_oai_request r;
    kr_oai_error e;
    CHECK(!kr_oai_parse(KR_OAI_CHAT, "{\"messages\":\"\xff\"}", 16, &r, &e), "bad UTF-8 rejected");
    kr_oai_request_free(&r);
    CHECK(!kr_oai_parse(KR_OAI_CHAT, "{\"a\":1}\0{", 9, &r, &e), "trailing bytes rejected");
    kr_oai_request_free(&r);
}

static void test_error_json(void) {
    kr_oai_error e;
    kr_oai_error_set(&e, 400, "temperature", "invalid_type", "bad \"%s\" \xff", "quote");
    char *s = kr_oai_error_body(&e);
    json_t *o = json_loads(s, 0, NULL);
    json_t *err = json_object_get(o, "error");
    CHECK(o && json_is_string(json_object_get(err, "message")) &&
              strcmp(json_string_value(json_object_get(err, "type")), "invalid_request_error") == 0 &&
              strcmp(json_string_value(json_object_get(err, "param")), "temperature") == 0 &&
              strcmp(json_string_value(json_object_get(err, "code")), "invalid_type") == 0,
          "error JSON: %s", s);
    json_decref(o);
    free(s);
    kr_oai_error_set(&e, 503, NULL, NULL, "busy");
    s = kr_oai_error_body(&e);
    CHECK(strcmp(s, "{\"error\":{\"message\":\"busy\",\"type\":\"server_error\",\"param\":null,\"code\":null}}") == 0, "%s", s);
    free(s);
    json_t *j = kr_oai_string("a\xc3(b", 4);
    CHECK(j && strcmp(json_string_value(j), "a\xEF\xBF\xBD(b") == 0, "bad UTF-8 becomes U+FFFD");
    json_decref(j);
}

typedef struct {
    char reasoning[256], content[256];
} split;

static void collect(void *user, bool reasoning, const char *text, size_t len) {
    split *s = user;
    strncat(reasoning ? s->reasoning : s->content, text, len);
}

/* Feeds text in two pieces cut at every position (and byte by byte); all must agree. */
static void check_split(const char *text, bool inside, const char *want_r, const char *want_c) {
    size_t n = strlen(text);
    for (size_t cut = 0; cut <= n + 1; cut++) {
        split s = {{0}, {0}};
        kr_think t;
        kr_think_init(&t, true, inside);
        if (cut <= n) {
            kr_think_push(&t, text, cut, collect, &s);
            kr_think_push(&t, text + cut, n - cut, collect, &s);
        } else {
            for (size_t i = 0; i < n; i++)
                kr_think_push(&t, text + i, 1, collect, &s);
        }
        kr_think_flush(&t, collect, &s);
        CHECK(strcmp(s.reasoning, want_r) == 0 && strcmp(s.content, want_c) == 0,
              "'%s' cut at %zu: reasoning '%s' (want '%s'), content '%s' (want '%s')", text, cut, s.reasoning, want_r,
              s.content, want_c);
    }
}

static void test_think(void) {
    check_split("<think>hmm</think>\n\nanswer", false, "hmm", "answer");
    check_split("\n<think>a<b</th</think>ok", false, "a<b</th", "ok");
    check_split("plain answer", false, "", "plain answer");
    check_split("<thin>no", false, "", "<thin>no");
    check_split("still thinking", true, "still thinking", "");
    check_split("x</think>y</think>", true, "x", "y</think>");
    check_split("partial </thi", true, "partial </thi", "");
    split s = {{0}, {0}};
    kr_think t;
    kr_think_init(&t, false, false);
    kr_think_push(&t, "<think>a</think>b", 17, collect, &s);
    CHECK(strcmp(s.content, "<think>a</think>b") == 0 && !s.reasoning[0], "off: all content");
    CHECK(kr_think_prompt_inside("Assistant:<think>\n") && !kr_think_prompt_inside("<think>\n\n</think>\n\n"),
          "prompt ends inside <think>");
}

int main(void) {
    test_good();
    test_bad();
    test_error_json();
    test_think();
    return test_summary("test_server_parse");
}
