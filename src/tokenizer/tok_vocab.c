/* Vocabulary loaders for the two formats that are not tokenizer.json: tiktoken (Kimi-K2's
 * tiktoken.model, base64 token + rank per line) and GGUF (llama.cpp's tokenizer.ggml.* keys). Both are
 * byte-level BPE; what a file lacks (the split regexes) comes from tables here, named by the GGUF `pre`
 * key or, for tiktoken, Kimi's pattern. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/mapfile.h"
#include "tokenizer/tok_internal.h"
#include "weights/gguf.h"

/* Kimi-K2's split pattern. The original (tiktoken / fancy-regex) writes letter classes "minus Han" as
 * class intersection `[...&&[^\p{Han}]]`, which PCRE2 lacks; each such class is rewritten as a negative
 * lookahead on \p{Han} followed by the class, which matches exactly the same single characters. */
#define NOHAN_UPPER "(?:(?!\\p{Han})[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])"
#define NOHAN_LOWER "(?:(?!\\p{Han})[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])"
#define CONTRACTION "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
static const char kimi_regex[] =
    "[\\p{Han}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?" NOHAN_UPPER "*" NOHAN_LOWER "+" CONTRACTION
    "|[^\\r\\n\\p{L}\\p{N}]?" NOHAN_UPPER "+" NOHAN_LOWER "*" CONTRACTION
    "|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

#define LLAMA3_REGEX \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_REGEX \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* The pre-tokenizers of the Hugging Face tokenizers that llama.cpp's `pre` names stand for (the
 * vectors in ../shared/data/vocab were produced by those), as Split(Isolated) steps in order. */
typedef struct {
    const char *pre;
    const char *regex[6];
    bool nfc, ignore_merges;
} pre_def;

static const pre_def pre_defs[] = {
    {"default", {TOK_GPT2_REGEX}, false, false},
    {"gpt-2", {TOK_GPT2_REGEX}, false, false},
    {"llama-bpe", {LLAMA3_REGEX}, false, true},
    {"llama3", {LLAMA3_REGEX}, false, true},
    {"glm4", {LLAMA3_REGEX}, false, false},
    {"qwen2", {QWEN2_REGEX}, true, false},
    {"deepseek-llm",
     {"[\r\n]",
      "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+",
      "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+", "\\s+$", "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}+"},
     false, false},
    {"deepseek-coder", {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}"}, false, false},
    {"deepseek-v3",
     {"\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     false, false},
    {"kimi-k2", {kimi_regex}, false, false},
};

/* ---------------------------------------------------------------- tiktoken */

static int b64_value(int c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes standard base64 (with '=' padding); returns the length or -1. */
static long b64_decode(const char *s, size_t n, char *out) {
    long o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=')
            break;
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits & 0xFF);
        }
    }
    return o;
}

/* The piece of a raw-bytes token: its GPT-2 byte-level spelling, as Kimi's Python tokenizer shows it. */
static kr_status set_bytelevel_piece(kr_tokenizer *t, int32_t id, const char *bytes, size_t len) {
    char tmp[1024], *p = len * 2 <= sizeof tmp ? tmp : malloc(len * 2);
    if (!p)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += (size_t)tok_utf8_put(t->byte_to_cp[(uint8_t)bytes[i]], p + n);
    kr_status s = tok_set_piece(t, id, p, n);
    if (s == KR_OK)
        s = tok_set_bytes(t, id, bytes, len);
    if (p != tmp)
        free(p);
    return s;
}

/* Kimi-K2's special tokens, used only when no tokenizer_config.json names them and the vocabulary is
 * Kimi's (163584 base tokens): these are the names its published tokenizer_config.json gives
 * (../shared/specs/models.md section 9). Every other reserved id is <|reserved_token_{id}|>. */
static const struct {
    int32_t id;
    const char *name;
} kimi_specials[] = {
    {163584, "[BOS]"}, {163585, "[EOS]"}, {163586, "<|im_end|>"}, {163587, "<|im_user|>"},
    {163588, "<|im_assistant|>"}, {163590, "<|start_header_id|>"}, {163591, "<|end_header_id|>"},
    {163593, "[EOT]"}, {163594, "<|im_system|>"}, {163595, "<|tool_calls_section_begin|>"},
    {163596, "<|tool_calls_section_end|>"}, {163597, "<|tool_call_begin|>"},
    {163598, "<|tool_call_argument_begin|>"}, {163599, "<|tool_call_end|>"}, {163601, "<|im_middle|>"},
    {163838, "[UNK]"}, {163839, "[PAD]"},
};
#define KIMI_BASE 163584
#define TIKTOKEN_RESERVED 256

static kr_status tiktoken_specials(kr_tokenizer *t, int32_t n_base, const char *dir) {
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    json_t *cfg = NULL, *dec = NULL;
    if (kr_file_exists(cfg_path)) {
        KR_TRY(kr_json_load_file(cfg_path, &cfg));
        dec = json_object_get(cfg, "added_tokens_decoder");
        if (dec && !json_is_object(dec)) {
            json_decref(cfg);
            return kr_fail(KR_ERR_FORMAT, "%s: 'added_tokens_decoder' must be an object", cfg_path);
        }
    }
    kr_status s = KR_OK;
    t->added = calloc(TIKTOKEN_RESERVED, sizeof *t->added);
    if (!t->added)
        s = kr_fail(KR_ERR_NOMEM, "out of memory");
    for (int32_t id = n_base; s == KR_OK && id < n_base + TIKTOKEN_RESERVED; id++) {
        char name[64], key[16];
        const char *content = NULL;
        snprintf(key, sizeof key, "%d", id);
        if (dec) {
            content = json_string_value(json_object_get(json_object_get(dec, key), "content"));
        } else if (n_base == KIMI_BASE) {
            for (size_t k = 0; k < sizeof kimi_specials / sizeof *kimi_specials; k++)
                if (kimi_specials[k].id == id)
                    content = kimi_specials[k].name;
        }
        if (!content || !content[0]) { /* an empty special token could never be matched: name it */
            snprintf(name, sizeof name, "<|reserved_token_%d|>", id);
            content = name;
        }
        s = tok_set_piece(t, id, content, strlen(content));
        t->tokens[id].added = t->tokens[id].special = true;
        t->added[t->n_added++] = (tok_added){.id = id, .content = NULL, .len = strlen(content), .special = true};
    }
    for (size_t i = 0; s == KR_OK && i < t->n_added; i++)
        t->added[i].content = t->tokens[t->added[i].id].piece;
    if (s == KR_OK && !dec && n_base == KIMI_BASE) {
        /* Kimi's defaults: bos [BOS]; generation stops at <|im_end|> (chat) or [EOS]. */
        t->bos = KIMI_BASE;
        s = tok_push_eos(t, 163586);
        if (s == KR_OK)
            s = tok_push_eos(t, 163585);
    }
    json_decref(cfg);
    return s;
}

kr_status tok_load_tiktoken(kr_tokenizer *t, const char *path) {
    char *text;
    size_t len;
    KR_TRY(kr_read_file(path, &text, &len));
    t->model = MODEL_TIKTOKEN;
    /* First pass: count lines and the largest rank, so the table is allocated once. */
    int64_t max_rank = -1;
    size_t lines = 0;
    kr_status s = KR_OK;
    for (char *p = text; s == KR_OK && p < text + len;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p)), *end = nl ? nl : text + len;
        lines++;
        if (end > p) {
            char *sp = memchr(p, ' ', (size_t)(end - p));
            char *e;
            long long r = sp ? strtoll(sp + 1, &e, 10) : -1;
            if (!sp || r < 0 || r > 16 * 1024 * 1024 || (e != end && !(e + 1 == end && *e == '\r')))
                s = kr_fail(KR_ERR_FORMAT, "%s: line %zu is not '<base64 token> <rank>'", path, lines);
            else if (r > max_rank)
                max_rank = r;
        }
        p = end + 1;
    }
    if (s == KR_OK && max_rank < 255)
        s = kr_fail(KR_ERR_FORMAT, "%s: not a tiktoken vocabulary (no ranks, or fewer than 256 tokens)", path);
    int32_t n_base = (int32_t)max_rank + 1;
    if (s == KR_OK)
        s = tok_alloc_tokens(t, n_base + TIKTOKEN_RESERVED);
    char tmp[1024];
    lines = 0;
    for (char *p = text; s == KR_OK && p < text + len;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p)), *end = nl ? nl : text + len;
        lines++;
        if (end > p) {
            char *sp = memchr(p, ' ', (size_t)(end - p));
            int32_t rank = (int32_t)strtol(sp + 1, NULL, 10);
            long n = (size_t)(sp - p) * 3 / 4 + 3 <= sizeof tmp ? b64_decode(p, (size_t)(sp - p), tmp) : -1;
            if (n <= 0)
                s = kr_fail(KR_ERR_FORMAT, "%s: line %zu: bad base64 token", path, lines);
            else if (t->tokens[rank].piece)
                s = kr_fail(KR_ERR_FORMAT, "%s: line %zu: rank %d appears twice", path, lines, rank);
            else
                s = set_bytelevel_piece(t, rank, tmp, (size_t)n);
        }
        p = end + 1;
    }
    free(text);
    for (int32_t i = 0; s == KR_OK && i < n_base; i++)
        if (!t->tokens[i].piece)
            s = kr_fail(KR_ERR_FORMAT, "%s: rank %d is missing (ranks must be 0..%d)", path, i, n_base - 1);
    if (s == KR_OK) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(dir, sizeof dir, ".");
        s = tiktoken_specials(t, n_base, dir);
    }
    if (s == KR_OK)
        s = tok_push_split(t, kimi_regex, BEH_ISOLATED, false, "Kimi-K2 split regex");
    if (s == KR_OK)
        s = tok_finish(t);
    return s;
}

/* ---------------------------------------------------------------- GGUF */

static kr_status gguf_tokens(kr_tokenizer *t, kr_gguf *g) {
    const kr_gguf_kv *tokens, *types, *merges;
    KR_TRY(kr_gguf_req_array(g, "tokenizer.ggml.tokens", KR_GGUF_STRING, &tokens));
    KR_TRY(kr_gguf_opt_array(g, "tokenizer.ggml.token_type", KR_GGUF_INT32, &types));
    KR_TRY(kr_gguf_opt_array(g, "tokenizer.ggml.merges", KR_GGUF_STRING, &merges));
    if (!merges || merges->n == 0)
        return kr_fail(KR_ERR_FORMAT, "%s: BPE vocabulary has no merges (tokenizer.ggml.merges)", t->path);
    if (tokens->n == 0 || tokens->n > 16 * 1024 * 1024)
        return kr_fail(KR_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", t->path,
                       (unsigned long long)tokens->n);
    if (types && types->n != tokens->n)
        return kr_fail(KR_ERR_FORMAT, "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", t->path,
                       (unsigned long long)types->n, (unsigned long long)tokens->n);
    KR_TRY(tok_alloc_tokens(t, (int32_t)tokens->n));
    t->added = calloc(tokens->n, sizeof *t->added);
    if (!t->added)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < tokens->n; i++) {
        kr_gguf_str s = kr_gguf_arr_str(tokens, i);
        KR_TRY(tok_set_piece(t, (int32_t)i, s.ptr, s.len));
        KR_TRY(tok_bytes_from_bytelevel(t, (int32_t)i));
        /* llama.cpp token types: 3 = control (special), 4 = user-defined (matched in text, not special) */
        int64_t ty = types ? kr_gguf_arr_int(types, i) : 1;
        if ((ty == 3 || ty == 4) && s.len > 0) {
            t->tokens[i].added = true;
            t->tokens[i].special = ty == 3;
            t->added[t->n_added++] = (tok_added){.id = (int32_t)i, .content = t->tokens[i].piece, .len = s.len,
                                                 .special = ty == 3};
        }
    }
    KR_TRY(tok_finish(t));
    for (uint64_t i = 0; i < merges->n; i++) {
        kr_gguf_str m = kr_gguf_arr_str(merges, i);
        const char *sp = memchr(m.ptr, ' ', m.len);
        if (!sp)
            return kr_fail(KR_ERR_FORMAT, "%s: merge %llu is not two tokens separated by a space", t->path,
                           (unsigned long long)i);
        size_t al = (size_t)(sp - m.ptr);
        int32_t a = tok_find_piece(t, m.ptr, al), b = tok_find_piece(t, sp + 1, m.len - al - 1);
        char tmp[1024];
        int32_t ab = -1;
        if (m.len - 1 <= sizeof tmp) {
            memcpy(tmp, m.ptr, al);
            memcpy(tmp + al, sp + 1, m.len - al - 1);
            ab = tok_find_piece(t, tmp, m.len - 1);
        }
        if (a < 0 || b < 0 || ab < 0)
            return kr_fail(KR_ERR_FORMAT, "%s: merge %llu ('%.*s') uses a token missing from the vocabulary", t->path,
                           (unsigned long long)i, (int)m.len, m.ptr);
        KR_TRY(tok_add_merge(t, a, b, (int32_t)i, ab));
    }
    return KR_OK;
}

static kr_status gguf_specials(kr_tokenizer *t, kr_gguf *g) {
    int64_t bos = -1, eos = -1, eot = -1;
    bool add_bos = false, add_eos = false;
    KR_TRY(kr_gguf_opt_int(g, "tokenizer.ggml.bos_token_id", &bos));
    KR_TRY(kr_gguf_opt_int(g, "tokenizer.ggml.eos_token_id", &eos));
    KR_TRY(kr_gguf_opt_int(g, "tokenizer.ggml.eot_token_id", &eot));
    KR_TRY(kr_gguf_opt_bool(g, "tokenizer.ggml.add_bos_token", &add_bos));
    KR_TRY(kr_gguf_opt_bool(g, "tokenizer.ggml.add_eos_token", &add_eos));
    if (bos >= t->n_tokens || eos >= t->n_tokens)
        return kr_fail(KR_ERR_FORMAT, "%s: bos/eos token id outside the vocabulary of %d", t->path, t->n_tokens);
    t->bos = (int32_t)bos;
    KR_TRY(tok_push_eos(t, (int32_t)eos));
    KR_TRY(tok_push_eos(t, (int32_t)eot));
    if (add_bos && bos >= 0) {
        if (!(t->prefix = malloc(sizeof *t->prefix)))
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        t->prefix[t->n_prefix++] = (int32_t)bos;
    }
    if (add_eos && eos >= 0) {
        if (!(t->suffix = malloc(sizeof *t->suffix)))
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        t->suffix[t->n_suffix++] = (int32_t)eos;
    }
    kr_gguf_str tpl = {0};
    KR_TRY(kr_gguf_opt_str(g, "tokenizer.chat_template", &tpl));
    if (tpl.ptr) {
        t->chat_template = strndup(tpl.ptr, tpl.len);
        if (!t->chat_template)
            return kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    return KR_OK;
}

static kr_status gguf_load(kr_tokenizer *t, kr_gguf *g) {
    kr_gguf_str model, pre = {"default", 7};
    KR_TRY(kr_gguf_req_str(g, "tokenizer.ggml.model", &model));
    if (!(model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0))
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model '%.*s' is not supported (only 'gpt2', byte-level BPE)",
                       t->path, (int)model.len, model.ptr);
    KR_TRY(kr_gguf_opt_str(g, "tokenizer.ggml.pre", &pre));
    const pre_def *def = NULL;
    for (size_t i = 0; i < sizeof pre_defs / sizeof *pre_defs; i++)
        if (strlen(pre_defs[i].pre) == pre.len && memcmp(pre_defs[i].pre, pre.ptr, pre.len) == 0)
            def = &pre_defs[i];
    if (!def)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: tokenizer.ggml.pre '%.*s' is not supported", t->path, (int)pre.len,
                       pre.ptr);
    t->model = MODEL_BPE;
    t->byte_level = true;
    t->ignore_merges = def->ignore_merges;
    if (def->nfc)
        KR_TRY(tok_push_norm(t, (tok_norm){.kind = NORM_NFC}));
    for (int i = 0; i < 6 && def->regex[i]; i++) {
        char what[4200];
        snprintf(what, sizeof what, "%s: pre '%s' regex %d", t->path, def->pre, i + 1);
        KR_TRY(tok_push_split(t, def->regex[i], BEH_ISOLATED, false, what));
    }
    KR_TRY(gguf_tokens(t, g));
    return gguf_specials(t, g);
}

kr_status tok_load_gguf(kr_tokenizer *t, const char *path) {
    kr_gguf *g;
    KR_TRY(kr_gguf_open(path, &g));
    kr_status s = gguf_load(t, g);
    kr_gguf_close(g);
    return s;
}
