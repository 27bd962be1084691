/* Bad input to the tokenizer and the GGUF reader, each with its exact message: unsupported tokenizer.json
 * components, a BPE model without merges, a file that is not JSON, invalid UTF-8 to encode, an
 * out-of-range id to decode, truncated and lying GGUF files. Also a small synthetic tokenizer.json and
 * GGUF vocabulary built here, so this runs without ../shared/data. */
#include "test_tokenizer_util.h"
#include "tmpdir.h"
#include "weights/gguf.h"

static char dir[256];

static const char *write_tmp(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    test_write(path, text, strlen(text));
    return path;
}

static void expect_load_error(const char *path, kr_status code, const char *msg) {
    kr_tokenizer *t = NULL;
    kr_status s = kr_tokenizer_load(path, &t);
    CHECK(s == code, "%s: status %s, want %s (%s)", path, kr_status_name(s), kr_status_name(code), kr_error());
    CHECK(strcmp(kr_error(), msg) == 0, "message\n  got : %s\n  want: %s", kr_error(), msg);
    CHECK(t == NULL, "no tokenizer on failure");
    kr_tokenizer_free(t);
}

/* A tokenizer.json with the 256 byte-level symbols (a GPT-2 bytes_to_unicode spelling), three merges and
 * two added tokens, in the layout Hugging Face writes; `model_extra` and `pre` replace parts of it. */
static char *make_json(const char *model_type, const char *pre, const char *merges) {
    static char buf[65536];
    int n = snprintf(buf, sizeof buf,
                     "{\"version\":\"1.0\",\"added_tokens\":["
                     "{\"id\":300,\"content\":\"<|end|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                     "\"normalized\":false,\"special\":true},"
                     "{\"id\":301,\"content\":\"<pad>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,"
                     "\"normalized\":false,\"special\":false}],"
                     "\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":%s,"
                     "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|end|>\","
                     "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":"
                     "{\"<|end|>\":{\"id\":\"<|end|>\",\"ids\":[300],\"tokens\":[\"<|end|>\"]}}},"
                     "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"%s\",\"vocab\":{",
                     pre, model_type);
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)extra++;
        char u[8];
        if (cp == '"' || cp == '\\')
            snprintf(u, sizeof u, "\\%c", (char)cp);
        else if (cp < 0x80)
            snprintf(u, sizeof u, "%c", (char)cp);
        else
            snprintf(u, sizeof u, "%c%c", (char)(0xC0 | cp >> 6), (char)(0x80 | (cp & 0x3F)));
        n += snprintf(buf + n, sizeof buf - (size_t)n, "\"%s\":%d,", u, b);
    }
    n += snprintf(buf + n, sizeof buf - (size_t)n,
                  "\"he\":256,\"ll\":257,\"hell\":258,\"\\u0120w\":259,\"<|end|>\":300,\"<pad>\":301},\"merges\":%s}}",
                  merges);
    return buf;
}

#define SPLIT_PRE "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s?\\\\p{L}+|\\\\s+|\\\\p{N}|[^\\\\s\\\\p{L}\\\\p{N}]+\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}"
#define MERGES "[\"h e\",\"l l\",[\"he\",\"ll\"],\"\\u0120 w\"]"

static void synthetic_json(void) {
    const char *p = write_tmp("tokenizer.json", make_json("BPE", SPLIT_PRE, MERGES));
    kr_tokenizer *t = load_tok(p);
    if (!t)
        return;
    int32_t *ids;
    size_t n;
    const char *text = "hello world<|end|>x <pad> y";
    CHECK(kr_tokenizer_encode(t, text, strlen(text), (kr_encode_options){.add_special = true, .parse_special = true},
                              &ids, &n) == KR_OK, "encode: %s", kr_error());
    /* BOS from TemplateProcessing; "hell"+"o"; " w" merge; <|end|> special; <pad> strips spaces both sides */
    int32_t want[] = {300, 258, 'o', 259, 'o', 'r', 'l', 'd', 300, 'x', 301, 'y'};
    CHECK(n == sizeof want / sizeof *want && memcmp(ids, want, sizeof want) == 0, "synthetic ids (n=%zu)", n);
    char *back;
    CHECK(kr_tokenizer_decode(t, ids, n, true, &back) == KR_OK, "decode");
    CHECK(strcmp(back, "hello worldx<pad>y") == 0, "skip_special decode: '%s'", back);
    free(back);
    free(ids);
    /* parse_special off: <|end|> is text, the non-special <pad> is still an added token */
    CHECK(kr_tokenizer_encode(t, "<|end|><pad>", 12, (kr_encode_options){0}, &ids, &n) == KR_OK, "encode");
    CHECK(n >= 2 && ids[0] == '<' && ids[n - 1] == 301, "parse_special=false keeps special text as text");
    free(ids);
    CHECK(kr_tokenizer_bos(t) == 300 && kr_tokenizer_lookup(t, "<|end|>") == 300 && kr_tokenizer_is_special(t, 300) &&
          !kr_tokenizer_is_special(t, 301), "lookup / bos / special flags");
    CHECK(kr_tokenizer_vocab_size(t) == 302, "vocab size %lld", (long long)kr_tokenizer_vocab_size(t));

    /* invalid UTF-8 to encode, with the offset */
    CHECK(kr_tokenizer_encode(t, "abc\xff", 4, (kr_encode_options){0}, &ids, &n) == KR_ERR_ARG, "bad utf-8");
    CHECK(strcmp(kr_error(), "text to encode is not valid UTF-8: invalid byte 0xFF at byte offset 3") == 0, "%s",
          kr_error());
    CHECK(kr_tokenizer_encode(t, "ok \xe2\x82", 5, (kr_encode_options){0}, &ids, &n) == KR_ERR_ARG, "truncated utf-8");
    CHECK(strcmp(kr_error(), "text to encode is not valid UTF-8: invalid byte 0xE2 at byte offset 3") == 0, "%s",
          kr_error());
    CHECK(kr_tokenizer_encode(t, "\xed\xa0\x80", 3, (kr_encode_options){0}, &ids, &n) == KR_ERR_ARG, "surrogate");
    /* out-of-range id to decode */
    int32_t bad[] = {104, 999};
    char *txt = NULL, want_msg[700];
    CHECK(kr_tokenizer_decode(t, bad, 2, false, &txt) == KR_ERR_ARG && txt == NULL, "out-of-range id");
    snprintf(want_msg, sizeof want_msg, "token id 999 is out of range for %s (vocabulary of 302)", p);
    CHECK(strcmp(kr_error(), want_msg) == 0, "message: %s", kr_error());
    int32_t neg[] = {-1};
    CHECK(kr_tokenizer_decode(t, neg, 1, false, &txt) == KR_ERR_ARG, "negative id");
    /* decode replaces a cut UTF-8 sequence with U+FFFD; the stream holds it back until complete.
     * With this vocabulary a byte's id is its value: U+20AC is E2 82 AC. */
    int32_t euro[] = {'a', 0xE2, 0x82, 0xAC, 0xE2, 0x82};
    CHECK(kr_tokenizer_decode(t, euro, 6, false, &txt) == KR_OK && strcmp(txt, "a\xE2\x82\xAC\xEF\xBF\xBD") == 0,
          "cut sequence decodes to U+FFFD: '%s'", txt);
    free(txt);
    int32_t lone[] = {0x82, 'b', 0xF0, 0x9F};
    CHECK(kr_tokenizer_decode(t, lone, 4, false, &txt) == KR_OK && strcmp(txt, "\xEF\xBF\xBD" "b" "\xEF\xBF\xBD") == 0,
          "stray continuation and a cut 4-byte sequence: '%s'", txt);
    free(txt);
    kr_detok *d;
    CHECK(kr_detok_create(t, false, &d) == KR_OK, "detok");
    const char *o;
    size_t ol;
    CHECK(kr_detok_push(d, 0xE2, &o, &ol) == KR_OK && ol == 0, "lead byte held");
    CHECK(kr_detok_push(d, 0x82, &o, &ol) == KR_OK && ol == 0, "second byte held");
    CHECK(kr_detok_push(d, 0xAC, &o, &ol) == KR_OK && ol == 3 && memcmp(o, "\xE2\x82\xAC", 3) == 0, "completed");
    CHECK(kr_detok_push(d, 0xF0, &o, &ol) == KR_OK && ol == 0, "held");
    CHECK(kr_detok_push(d, 'x', &o, &ol) == KR_OK && ol == 4 && memcmp(o, "\xEF\xBF\xBDx", 4) == 0,
          "broken sequence replaced once known broken");
    CHECK(kr_detok_push(d, 0xE2, &o, &ol) == KR_OK && ol == 0, "held");
    CHECK(kr_detok_flush(d, &o, &ol) == KR_OK && ol == 3 && memcmp(o, "\xEF\xBF\xBD", 3) == 0, "flush");
    CHECK(kr_detok_push(d, 5000, &o, &ol) == KR_ERR_ARG, "detok bad id");
    kr_detok_free(d);
    kr_tokenizer_free(t);
}

static void bad_json(void) {
    char msg[1024];
    const char *p = write_tmp("wp.json", make_json("WordPiece", SPLIT_PRE, MERGES));
    snprintf(msg, sizeof msg, "%s: model type 'WordPiece' is not supported (only BPE)", p);
    expect_load_error(p, KR_ERR_UNSUPPORTED, msg);
    p = write_tmp("uni.json", make_json("Unigram", SPLIT_PRE, MERGES));
    snprintf(msg, sizeof msg, "%s: model type 'Unigram' is not supported (only BPE)", p);
    expect_load_error(p, KR_ERR_UNSUPPORTED, msg);
    p = write_tmp("pre.json", make_json("BPE", "{\"type\":\"BertPreTokenizer\"}", MERGES));
    snprintf(msg, sizeof msg, "%s: pre-tokenizer type 'BertPreTokenizer' is not supported", p);
    expect_load_error(p, KR_ERR_UNSUPPORTED, msg);
    p = write_tmp("nomerges.json", make_json("BPE", SPLIT_PRE, "[]"));
    snprintf(msg, sizeof msg, "%s: BPE model has no merges (model.merges is missing or empty)", p);
    expect_load_error(p, KR_ERR_FORMAT, msg);
    p = write_tmp("badmerge.json", make_json("BPE", SPLIT_PRE, "[\"h zz\"]"));
    snprintf(msg, sizeof msg, "%s: merge 0 ('h' + 'zz') uses a token missing from the vocabulary", p);
    expect_load_error(p, KR_ERR_FORMAT, msg);
    p = write_tmp("badre.json", make_json("BPE", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[z-a]\"},\"behavior\":\"Isolated\"}", MERGES));
    snprintf(msg, sizeof msg, "%s: Split pattern: regex does not compile at offset 3: range out of order in character class", p);
    expect_load_error(p, KR_ERR_UNSUPPORTED, msg);
    p = write_tmp("notjson.json", "this is not { json");
    snprintf(msg, sizeof msg, "%s: not valid JSON: '[' or '{' expected near 'this' (line 1, column 4)", p);
    expect_load_error(p, KR_ERR_FORMAT, msg);
    char missing[400];
    snprintf(missing, sizeof missing, "%s/none", dir);
    snprintf(msg, sizeof msg, "%s: cannot open: No such file or directory", missing);
    expect_load_error(missing, KR_ERR_IO, msg);
}

/* ---- GGUF files written byte by byte */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} wbuf;

static void put(wbuf *b, const void *s, size_t n) {
    if (b->n + n > b->cap)
        b->p = realloc(b->p, b->cap = (b->n + n) * 2 + 64);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put_u32(wbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(wbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(wbuf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

/* A gpt2-model GGUF with the 256 byte tokens (only printable ASCII spelled as itself matters here). */
static void make_gguf(wbuf *b, uint64_t tokens_len_override, const char *last_token) {
    b->n = 0;
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, 0); /* tensors */
    put_u64(b, 4); /* kvs */
    put_str(b, "tokenizer.ggml.model");
    put_u32(b, KR_GGUF_STRING);
    put_str(b, "gpt2");
    put_str(b, "tokenizer.ggml.pre");
    put_u32(b, KR_GGUF_STRING);
    put_str(b, "qwen2");
    put_str(b, "tokenizer.ggml.tokens");
    put_u32(b, KR_GGUF_ARRAY);
    put_u32(b, KR_GGUF_STRING);
    put_u64(b, tokens_len_override ? tokens_len_override : 258);
    int extra = 0;
    for (int c = 0; c < 256; c++) {
        bool printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174;
        unsigned cp = printable ? (unsigned)c : 256u + (unsigned)extra++;
        char u[4] = {0};
        if (cp < 0x80)
            u[0] = (char)cp;
        else
            u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F));
        put_str(b, u);
    }
    put_str(b, "ab");
    put_str(b, last_token);
    put_str(b, "tokenizer.ggml.merges");
    put_u32(b, KR_GGUF_ARRAY);
    put_u32(b, KR_GGUF_STRING);
    put_u64(b, 1);
    put_str(b, "a b");
}

static void gguf_cases(void) {
    wbuf b = {0};
    char path[512], msg[1024];
    snprintf(path, sizeof path, "%s/v.gguf", dir);
    make_gguf(&b, 0, "<|eot|>");
    test_write(path, b.p, b.n);
    kr_tokenizer *t = load_tok(path);
    if (t) {
        int32_t *ids;
        size_t n;
        CHECK(kr_tokenizer_encode(t, "abab a", 6, (kr_encode_options){0}, &ids, &n) == KR_OK, "gguf encode");
        /* tokens are listed in byte order, so a byte's id is its value; "ab" is 256 */
        CHECK(n == 4 && ids[0] == 256 && ids[1] == 256 && ids[2] == ' ' && ids[3] == 'a', "gguf ids n=%zu", n);
        free(ids);
        kr_tokenizer_free(t);
    }
    /* a token that is not UTF-8 (GGUF strings are unchecked bytes): loading must not read past it */
    make_gguf(&b, 0, "\xF4");
    test_write(path, b.p, b.n);
    kr_tokenizer *bad_utf8 = NULL;
    if (kr_tokenizer_load(path, &bad_utf8) == KR_OK) {
        int32_t id = 257;
        char *text = NULL;
        kr_tokenizer_decode(bad_utf8, &id, 1, false, &text);
        free(text);
        kr_tokenizer_free(bad_utf8);
    }
    make_gguf(&b, 0, "<|eot|>");
    test_write(path, b.p, b.n);
    kr_gguf *g;
    CHECK(kr_gguf_open(path, &g) == KR_OK, "gguf open: %s", kr_error());
    if (g) {
        CHECK(kr_gguf_version(g) == 3 && kr_gguf_n_kv(g) == 4, "header");
        kr_gguf_str s = {0};
        CHECK(kr_gguf_req_str(g, "tokenizer.ggml.pre", &s) == KR_OK && s.len == 5 && memcmp(s.ptr, "qwen2", 5) == 0,
              "string getter");
        const kr_gguf_kv *arr;
        CHECK(kr_gguf_req_array(g, "tokenizer.ggml.tokens", KR_GGUF_STRING, &arr) == KR_OK && arr->n == 258,
              "array getter");
        CHECK(kr_gguf_arr_str(arr, 256).len == 2, "array element");
        int64_t v;
        CHECK(kr_gguf_req_int(g, "tokenizer.ggml.pre", &v) == KR_ERR_FORMAT, "type mismatch");
        snprintf(msg, sizeof msg, "%s: key 'tokenizer.ggml.pre' must be an integer, not string", path);
        CHECK(strcmp(kr_error(), msg) == 0, "%s", kr_error());
        CHECK(kr_gguf_req_int(g, "nope", &v) == KR_ERR_FORMAT, "missing key");
        kr_gguf_close(g);
    }
    /* truncated: cut inside the tokens array */
    size_t full = b.n;
    test_write(path, b.p, full - 40);
    {
        kr_gguf *g2 = NULL;
        kr_status s = kr_gguf_open(path, &g2);
        CHECK(s == KR_ERR_FORMAT && g2 == NULL, "truncated gguf opens");
        CHECK(strstr(kr_error(), "truncated GGUF") != NULL, "message: %s", kr_error());
    }
    /* every truncation point is an error, never a crash */
    int errors = 0;
    for (size_t cut = 0; cut < full; cut += 7) {
        test_write(path, b.p, cut);
        kr_gguf *g3 = NULL;
        errors += kr_gguf_open(path, &g3) != KR_OK;
        kr_gguf_close(g3);
    }
    CHECK(errors == (int)((full + 6) / 7), "all %zu truncations rejected (%d)", (full + 6) / 7, errors);
    /* a lying array length */
    make_gguf(&b, 1ull << 60, "<|eot|>");
    test_write(path, b.p, b.n);
    kr_gguf *g4 = NULL;
    CHECK(kr_gguf_open(path, &g4) == KR_ERR_FORMAT, "absurd array length");
    size_t left = b.n - (4 + 4 + 8 + 8 + (8 + 20 + 4 + 8 + 4) + (8 + 18 + 4 + 8 + 5) + (8 + 21 + 4 + 4 + 8));
    snprintf(msg, sizeof msg, "%s: array 'tokenizer.ggml.tokens' claims 1152921504606846976 strings but only %zu bytes remain",
             path, left);
    CHECK(strcmp(kr_error(), msg) == 0, "message\n  got : %s\n  want: %s", kr_error(), msg);
    /* absurd key count */
    make_gguf(&b, 0, "<|eot|>");
    uint64_t huge = 1ull << 62;
    memcpy(b.p + 16, &huge, 8);
    test_write(path, b.p, b.n);
    CHECK(kr_gguf_open(path, &g4) == KR_ERR_FORMAT, "absurd kv count");
    snprintf(msg, sizeof msg, "%s: header claims 4611686018427387904 metadata entries but only %zu bytes remain", path,
             b.n - 24);
    CHECK(strcmp(kr_error(), msg) == 0, "message\n  got : %s\n  want: %s", kr_error(), msg);
    /* not a GGUF */
    test_write(path, "GGUX", 4);
    CHECK(kr_gguf_open(path, &g4) == KR_ERR_FORMAT, "bad magic");
    /* a GGUF tokenizer of an unsupported model */
    b.n = 0;
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 1);
    put_str(&b, "tokenizer.ggml.model");
    put_u32(&b, KR_GGUF_STRING);
    put_str(&b, "bert");
    test_write(path, b.p, b.n);
    snprintf(msg, sizeof msg, "%s: tokenizer.ggml.model 'bert' is not supported (only 'gpt2', byte-level BPE)", path);
    expect_load_error(path, KR_ERR_UNSUPPORTED, msg);
    free(b.p);
}

int main(void) {
    if (!test_tmpdir(dir, sizeof dir)) {
        perror("mkdtemp");
        return 2;
    }
    synthetic_json();
    bad_json();
    gguf_cases();
    test_rmtree(dir);
    return test_summary("test_tokenizer_bad");
}
