/* decode(encode(s)) == s over the whole of ../shared/data/text for the Qwen3, DeepSeek-V3 and Kimi-K2
 * tokenizers, streamed through the detokenizer as well; the text is ASCII-heavy English with some
 * non-ASCII punctuation, so multi-byte characters split across tokens occur. */
#include "test_tokenizer_util.h"

static void roundtrip(const kr_tokenizer *t, const char *name, const char *text, size_t len) {
    int32_t *ids = NULL;
    size_t n = 0;
    kr_status s = kr_tokenizer_encode(t, text, len, (kr_encode_options){0}, &ids, &n);
    CHECK(s == KR_OK, "%s: encode: %s", name, kr_error());
    if (s != KR_OK)
        return;
    char *back = NULL;
    CHECK(kr_tokenizer_decode(t, ids, n, false, &back) == KR_OK, "%s: decode: %s", name, kr_error());
    CHECK(back && strlen(back) == len && memcmp(back, text, len) == 0, "%s: decode(encode(text)) differs", name);
    /* the stream, one id at a time, must rebuild the same text and hold back partial characters */
    kr_detok *d;
    CHECK(kr_detok_create(t, false, &d) == KR_OK, "detok_create");
    size_t pos = 0;
    bool same = true, held = false;
    for (size_t i = 0; i <= n && same; i++) {
        const char *p;
        size_t l, bl = 0;
        if (i < n) {
            CHECK(kr_detok_push(d, ids[i], &p, &l) == KR_OK, "%s: push: %s", name, kr_error());
            kr_tokenizer_token_bytes(t, ids[i], &bl);
            held |= l < bl;
        } else {
            CHECK(kr_detok_flush(d, &p, &l) == KR_OK, "flush");
        }
        same = pos + l <= len && memcmp(back + pos, p, l) == 0;
        pos += l;
    }
    CHECK(same && pos == len, "%s: streamed text differs from decode (at byte %zu)", name, pos);
    printf("%s: %zu bytes -> %zu tokens, round trip %s, stream %s%s\n", name, len, n,
           back && strlen(back) == len ? "ok" : "FAILED", same && pos == len ? "ok" : "FAILED",
           held ? " (held back partial characters)" : "");
    kr_detok_free(d);
    free(back);
    free(ids);
}

int main(void) {
    if (!shared_data_present())
        return 0;
    const char *toks[] = {SHARED_DATA "/tokenizers/qwen3", SHARED_DATA "/tokenizers/deepseek-v3",
                          SHARED_DATA "/tokenizers/kimi-k2"};
    const char *texts[] = {SHARED_DATA "/text/tinyshakespeare.txt", SHARED_DATA "/text/pride_and_prejudice.txt"};
    for (int k = 0; k < 3; k++) {
        kr_tokenizer *t = load_tok(toks[k]);
        for (int f = 0; t && f < 2; f++) {
            size_t len;
            char *text = slurp(texts[f], &len);
            char name[600];
            snprintf(name, sizeof name, "%s on %s", strrchr(toks[k], '/') + 1, strrchr(texts[f], '/') + 1);
            if (text)
                roundtrip(t, name, text, len);
            free(text);
        }
        kr_tokenizer_free(t);
    }
    return test_summary("test_tokenizer_roundtrip");
}
