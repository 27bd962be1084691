/* The real tokenizers against the reference ids in ../shared/data: llama.cpp's GGUF vocab vectors
 * (produced by Hugging Face tokenizers), the kitoken vectors for DeepSeek-V3 (tokenizer.json) and
 * Kimi-K2 (tiktoken), and the Qwen3 tokenizer.json against the qwen2 vectors. */
#include "test_tokenizer_util.h"

static const kr_encode_options plain = {.add_special = false, .parse_special = true};

/* .inp strings separated by "\n__ggml_vocab_test__\n"; .out one line of ids per string. */
static void run_ggml_vectors(const kr_tokenizer *t, const char *name, const char *inp_path, const char *out_path) {
    size_t ilen = 0, olen = 0;
    char *inp = slurp(inp_path, &ilen), *out = slurp(out_path, &olen);
    if (!inp || !out) {
        free(inp);
        free(out);
        return;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const char *p = inp, *o = out, *iend = inp + ilen, *oend = out + olen;
    int cases = 0, pass = 0;
    while (p < iend) {
        const char *q = strstr(p, sep);
        const char *e = q ? q : iend;
        const char *ol = memchr(o, '\n', (size_t)(oend - o));
        if (!ol)
            ol = oend;
        if (o >= oend) {
            CHECK(0, "%s: more strings than lines in %s", name, out_path);
            break;
        }
        int32_t *want;
        size_t nw = parse_ids(o, ol, &want);
        char what[128];
        snprintf(what, sizeof what, "%s case %d", name, cases);
        pass += check_encode(t, what, p, (size_t)(e - p), want, nw, plain);
        free(want);
        cases++;
        o = ol + 1;
        if (!q)
            break;
        p = q + sizeof sep - 1;
    }
    printf("%s: %d/%d vectors pass\n", name, pass, cases);
    CHECK(cases > 10, "%s: only %d cases parsed", name, cases);
    free(inp);
    free(out);
}

static void unescape_line(char *s) {
    /* README: replace("\\n","\n"), then "\\s" -> " ", then "\\x" -> "" (each pass over the whole line) */
    static const char *const from[] = {"\\n", "\\s", "\\x"}, *const to[] = {"\n", " ", ""};
    for (int k = 0; k < 3; k++) {
        char *r = s, *w = s;
        while (*r) {
            if (r[0] == from[k][0] && r[1] == from[k][1]) {
                for (const char *c = to[k]; *c; c++)
                    *w++ = *c;
                r += 2;
            } else
                *w++ = *r++;
        }
        *w = '\0';
    }
}

static void run_small_vectors(const kr_tokenizer *t, const char *name, const char *ids_path, kr_encode_options opt) {
    size_t ilen = 0, olen = 0;
    char *inp = slurp(SHARED_DATA "/tokenizer-vectors/small_input.txt", &ilen), *out = slurp(ids_path, &olen);
    if (!inp || !out) {
        free(inp);
        free(out);
        return;
    }
    char *p = inp, *o = out;
    int cases = 0, pass = 0;
    while (*p && *o) {
        char *pl = strchr(p, '\n'), *ol = strchr(o, '\n');
        if (pl)
            *pl = '\0';
        if (!ol)
            ol = o + strlen(o);
        unescape_line(p);
        int32_t *want;
        size_t nw = parse_ids(o, ol, &want);
        char what[128];
        snprintf(what, sizeof what, "%s line %d", name, cases + 1);
        pass += check_encode(t, what, p, strlen(p), want, nw, opt);
        free(want);
        cases++;
        if (!pl || !*ol)
            break;
        p = pl + 1;
        o = ol + 1;
    }
    printf("%s: %d/%d vectors pass\n", name, pass, cases);
    CHECK(cases == 20, "%s: %d cases parsed", name, cases);
    free(inp);
    free(out);
}

int main(void) {
    if (!shared_data_present())
        return 0;
    static const char *const vocabs[] = {"deepseek-llm", "deepseek-coder", "qwen2", "llama-bpe", "gpt-2"};
    for (size_t i = 0; i < sizeof vocabs / sizeof *vocabs; i++) {
        char g[512], in[600], out[600];
        snprintf(g, sizeof g, SHARED_DATA "/vocab/ggml-vocab-%s.gguf", vocabs[i]);
        snprintf(in, sizeof in, "%s.inp", g);
        snprintf(out, sizeof out, "%s.out", g);
        kr_tokenizer *t = load_tok(g);
        if (t)
            run_ggml_vectors(t, vocabs[i], in, out);
        kr_tokenizer_free(t);
    }
    kr_tokenizer *q = load_tok(SHARED_DATA "/tokenizers/qwen3/tokenizer.json");
    if (q)
        run_ggml_vectors(q, "qwen3 tokenizer.json (qwen2 vectors)", SHARED_DATA "/vocab/ggml-vocab-qwen2.gguf.inp",
                         SHARED_DATA "/vocab/ggml-vocab-qwen2.gguf.out");
    kr_tokenizer_free(q);
    kr_tokenizer *d = load_tok(SHARED_DATA "/tokenizers/deepseek-v3");
    if (d)
        run_small_vectors(d, "deepseek-v3 tokenizer.json", SHARED_DATA "/tokenizer-vectors/tokenizers_small_tokens_r1.txt", plain);
    kr_tokenizer_free(d);
    kr_tokenizer *k = load_tok(SHARED_DATA "/tokenizers/kimi-k2/tiktoken.model");
    if (k)
        run_small_vectors(k, "kimi-k2 tiktoken", SHARED_DATA "/tokenizer-vectors/tiktoken_small_tokens_kimi_k2.txt",
                          /* the vectors are tiktoken encode_ordinary: "[PAD]" in the text is plain text */
                          (kr_encode_options){0});
    kr_tokenizer_free(k);
    return test_summary("test_tokenizer_vectors");
}
