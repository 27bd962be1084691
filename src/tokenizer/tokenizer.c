/* Tokenizer core: the token tables, the encoder pipeline (added tokens -> normalizer -> pre-tokenizer
 * -> BPE), the decoder and the streaming detokenizer. The semantics follow Hugging Face `tokenizers`
 * (and tiktoken for Kimi), which are the references the tests compare against. The loaders for each
 * file format (tok_hf.c, tok_vocab.c) only fill the tables defined in tok_internal.h. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/mapfile.h"
#include "tokenizer/tok_internal.h"

/* ---------------------------------------------------------------- hashing and the token index */

static uint64_t hash_bytes(const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (len * 0xff51afd7ed558ccdull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, len);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    return h;
}

static uint32_t hash32(const void *data, size_t len) {
    uint32_t h = (uint32_t)(hash_bytes(data, len) >> 32);
    return h ? h : 1;
}

static bool index_key_eq(const kr_tokenizer *t, const tok_index *ix, int32_t id, const char *s, size_t len) {
    const tok_token *k = &t->tokens[id];
    if (ix->by_bytes)
        return k->bytes_len == len && memcmp(k->bytes, s, len) == 0;
    return k->piece_len == len && memcmp(k->piece, s, len) == 0;
}

static int32_t index_find(const kr_tokenizer *t, const tok_index *ix, const char *s, size_t len) {
    if (!ix->slots)
        return -1;
    uint32_t h = hash32(s, len);
    for (size_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
        uint64_t v = ix->slots[i];
        if (!v)
            return -1;
        if ((uint32_t)(v >> 32) == h) {
            int32_t id = (int32_t)(uint32_t)v - 1;
            if (index_key_eq(t, ix, id, s, len))
                return id;
        }
    }
}

/* Inserts id unless its key is already present (the first token with a key wins). */
static void index_insert(const kr_tokenizer *t, tok_index *ix, int32_t id) {
    const tok_token *k = &t->tokens[id];
    const char *s = ix->by_bytes ? k->bytes : k->piece;
    size_t len = ix->by_bytes ? k->bytes_len : k->piece_len;
    uint32_t h = hash32(s, len);
    for (size_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
        uint64_t v = ix->slots[i];
        if (!v) {
            ix->slots[i] = (uint64_t)h << 32 | (uint32_t)(id + 1);
            ix->count++;
            return;
        }
        if ((uint32_t)(v >> 32) == h && index_key_eq(t, ix, (int32_t)(uint32_t)v - 1, s, len))
            return;
    }
}

static kr_status index_init(tok_index *ix, size_t n, bool by_bytes) {
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    if (!ix->slots)
        return kr_fail(KR_ERR_NOMEM, "out of memory for the vocabulary index");
    ix->mask = cap - 1;
    ix->count = 0;
    ix->by_bytes = by_bytes;
    return KR_OK;
}

int32_t tok_find_piece(const kr_tokenizer *t, const char *s, size_t len) { return index_find(t, &t->by_piece, s, len); }
int32_t tok_find_bytes(const kr_tokenizer *t, const char *s, size_t len) { return index_find(t, &t->by_bytes, s, len); }

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static bool merge_lookup(const merge_table *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    for (size_t i = mix64(key) & m->mask;; i = (i + 1) & m->mask) {
        const merge_slot *s = &m->slots[i];
        if (s->key == key) {
            *rank = s->rank;
            *merged = s->merged;
            return true;
        }
        if (!s->key)
            return false;
    }
}

static kr_status merge_grow(merge_table *m) {
    size_t cap = m->slots ? (m->mask + 1) * 2 : 1024;
    merge_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return kr_fail(KR_ERR_NOMEM, "out of memory for the merge table");
    for (size_t i = 0; m->slots && i <= m->mask; i++) {
        if (!m->slots[i].key)
            continue;
        size_t j = mix64(m->slots[i].key) & (cap - 1);
        while (slots[j].key)
            j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->mask = cap - 1;
    return KR_OK;
}

/* A pair listed twice keeps its first (lowest) rank, as Hugging Face's merge map does. */
kr_status tok_add_merge(kr_tokenizer *t, int32_t left, int32_t right, int32_t rank, int32_t merged) {
    merge_table *m = &t->merges;
    if (!m->slots || (m->count + 1) * 2 > m->mask + 1)
        KR_TRY(merge_grow(m));
    uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
    size_t i = mix64(key) & m->mask;
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & m->mask;
    if (m->slots[i].key)
        return KR_OK;
    m->slots[i] = (merge_slot){key, rank, merged};
    m->count++;
    return KR_OK;
}

/* ---------------------------------------------------------------- UTF-8 */

int tok_utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (Unicode's well-formed table), or 0 when invalid; *prefix is
 * then how many bytes form the maximal valid prefix (>= 1), which is what one U+FFFD replaces (the
 * WHATWG / Rust from_utf8_lossy / Python errors="replace" rule). *incomplete says the bytes ran out
 * while still valid, so more input might complete them. */
static int utf8_seq(const uint8_t *p, size_t n, int *prefix, bool *incomplete) {
    *incomplete = false;
    *prefix = 1;
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) {
            *prefix = k;
            *incomplete = true;
            return 0;
        }
        uint8_t b = p[k];
        if (b < lo || b > hi) {
            *prefix = k;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

static size_t utf8_invalid_at(const char *s, size_t len) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        int pre;
        bool inc;
        int l = utf8_seq(p + i, len - i, &pre, &inc);
        if (!l)
            return i;
        i += (size_t)l;
    }
    return len;
}

static int utf8_len_at(const uint8_t *p) {
    return p[0] < 0x80 ? 1 : p[0] < 0xE0 ? 2 : p[0] < 0xF0 ? 3 : 4;
}

static uint32_t utf8_decode_at(const uint8_t *p, int *len) {
    *len = utf8_len_at(p);
    switch (*len) {
    case 1: return p[0];
    case 2: return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    case 3: return (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    default: return (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 | (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
    }
}

/* Appends s with invalid sequences replaced by U+FFFD. With hold, a trailing valid-but-incomplete
 * sequence is not consumed; returns the number of bytes consumed. */
static size_t put_lossy(kr_buf *out, const char *s, size_t len, bool hold) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, run = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        int pre;
        bool inc;
        int l = utf8_seq(p + i, len - i, &pre, &inc);
        if (l) {
            i += (size_t)l;
            continue;
        }
        kr_buf_add(out, s + run, i - run);
        if (inc && hold)
            return i;
        kr_buf_add(out, "\xEF\xBF\xBD", 3);
        i += (size_t)pre;
        run = i;
    }
    kr_buf_add(out, s + run, len - run);
    return len;
}

/* Rust's char::is_whitespace (Unicode White_Space), used by added-token lstrip/rstrip. */
static bool is_unicode_space(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static bool is_word_char(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

static bool is_numeric_cp(uint32_t c) {
    if (c < 0x80)
        return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/* ---------------------------------------------------------------- building the tables */

kr_status tok_alloc_tokens(kr_tokenizer *t, int32_t n) {
    t->tokens = calloc((size_t)(n > 0 ? n : 1), sizeof *t->tokens);
    if (!t->tokens)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory for %d tokens", t->path, n);
    t->n_tokens = n;
    return KR_OK;
}

kr_status tok_set_piece(kr_tokenizer *t, int32_t id, const char *piece, size_t len) {
    tok_token *k = &t->tokens[id];
    if (k->bytes != k->piece)
        free(k->bytes);
    free(k->piece);
    k->piece = malloc(len + 1);
    if (!k->piece)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory", t->path);
    memcpy(k->piece, piece, len);
    k->piece[len] = '\0';
    k->piece_len = (uint32_t)len;
    k->bytes = k->piece;
    k->bytes_len = (uint32_t)len;
    return KR_OK;
}

kr_status tok_set_bytes(kr_tokenizer *t, int32_t id, const char *bytes, size_t len) {
    tok_token *k = &t->tokens[id];
    if (k->piece_len == len && memcmp(k->piece, bytes, len) == 0) {
        if (k->bytes != k->piece)
            free(k->bytes);
        k->bytes = k->piece;
        k->bytes_len = (uint32_t)len;
        return KR_OK;
    }
    char *b = malloc(len + 1);
    if (!b)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory", t->path);
    memcpy(b, bytes, len);
    b[len] = '\0';
    if (k->bytes != k->piece)
        free(k->bytes);
    k->bytes = b;
    k->bytes_len = (uint32_t)len;
    return KR_OK;
}

kr_status tok_bytes_from_bytelevel(kr_tokenizer *t, int32_t id) {
    tok_token *k = &t->tokens[id];
    char tmp[256], *out = k->piece_len <= sizeof tmp ? tmp : malloc(k->piece_len);
    if (!out)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory", t->path);
    const uint8_t *p = (const uint8_t *)k->piece;
    size_t n = 0, i = 0;
    bool all = true;
    while (i < k->piece_len) {
        int l, pre;
        bool inc;
        /* a piece from a GGUF need not be valid UTF-8: never decode past its end */
        if (!utf8_seq(p + i, k->piece_len - i, &pre, &inc)) {
            all = false;
            break;
        }
        uint32_t cp = utf8_decode_at(p + i, &l);
        if (cp >= 324 || t->cp_to_byte[cp] < 0) {
            all = false;
            break;
        }
        out[n++] = (char)t->cp_to_byte[cp];
        i += (size_t)l;
    }
    kr_status s = all ? tok_set_bytes(t, id, out, n) : KR_OK;
    if (out != tmp)
        free(out);
    return s;
}

static void init_byte_map(kr_tokenizer *t) {
    int extra = 0;
    for (int i = 0; i < 324; i++)
        t->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        t->byte_to_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
        t->cp_to_byte[t->byte_to_cp[b]] = (int16_t)b;
    }
}

static int added_cmp(const void *a, const void *b) {
    const tok_added *x = a, *y = b;
    uint8_t fx = (uint8_t)x->content[0], fy = (uint8_t)y->content[0];
    if (fx != fy)
        return fx < fy ? -1 : 1;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

kr_status tok_finish(kr_tokenizer *t) {
    free(t->by_piece.slots);
    free(t->by_bytes.slots);
    t->by_piece.slots = t->by_bytes.slots = NULL;
    KR_TRY(index_init(&t->by_piece, (size_t)t->n_tokens, false));
    KR_TRY(index_init(&t->by_bytes, (size_t)t->n_tokens, true));
    for (int32_t i = 0; i < t->n_tokens; i++)
        if (t->tokens[i].piece && !t->tokens[i].added) {
            index_insert(t, &t->by_piece, i);
            index_insert(t, &t->by_bytes, i);
        }
    size_t n_added = 0;
    for (int32_t i = 0; i < t->n_tokens; i++)
        if (t->tokens[i].piece && t->tokens[i].added)
            index_insert(t, &t->by_piece, i), n_added += t->tokens[i].piece_len > 0;
    /* Hugging Face keeps the added-token flags in its own table; loaders set them in t->added. */
    for (size_t i = 0; i < t->n_added; i++) {
        t->any_normalized_added |= t->added[i].normalized;
        t->any_raw_added |= !t->added[i].normalized;
    }
    qsort(t->added, t->n_added, sizeof *t->added, added_cmp);
    size_t j = 0;
    for (int b = 0; b <= 256; b++) {
        while (j < t->n_added && (uint8_t)t->added[j].content[0] < b)
            j++;
        t->added_first[b] = (uint32_t)j;
    }
    t->added_first[256] = (uint32_t)t->n_added;
    for (int b = 0; b < 256; b++) {
        char s[4];
        int l = t->byte_level ? tok_utf8_put(t->byte_to_cp[b], s) : 0;
        t->byte_id[b] = t->byte_level ? tok_find_piece(t, s, (size_t)l) : -1;
        char fb[8];
        snprintf(fb, sizeof fb, "<0x%02X>", b);
        t->fallback_id[b] = tok_find_piece(t, fb, 6);
    }
    return KR_OK;
}

kr_status tok_compile_regex(const char *pattern, size_t len, bool literal, const char *what, pcre2_code **out) {
    int err;
    PCRE2_SIZE off;
    /* MULTILINE: Hugging Face compiles with Oniguruma's Ruby syntax, where $ matches before any newline. */
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | (literal ? PCRE2_LITERAL : 0);
    *out = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &err, &off, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: regex does not compile at offset %zu: %s", what, (size_t)off,
                       (const char *)msg);
    }
    /* JIT is an optimisation: when it is unavailable pcre2_match falls back to the interpreter. */
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);
    return KR_OK;
}

kr_status tok_push_pre(kr_tokenizer *t, tok_pre p) {
    tok_pre *n = realloc(t->pres, (t->n_pres + 1) * sizeof *n);
    if (!n) {
        pcre2_code_free(p.re);
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory", t->path);
    }
    t->pres = n;
    t->pres[t->n_pres++] = p;
    return KR_OK;
}

kr_status tok_push_split(kr_tokenizer *t, const char *pattern, int behavior, bool invert, const char *what) {
    tok_pre p = {.kind = PRE_SPLIT, .behavior = behavior, .invert = invert};
    KR_TRY(tok_compile_regex(pattern, strlen(pattern), false, what, &p.re));
    return tok_push_pre(t, p);
}

kr_status tok_push_norm(kr_tokenizer *t, tok_norm nm) {
    tok_norm *n = realloc(t->norms, (t->n_norms + 1) * sizeof *n);
    if (!n) {
        free(nm.a);
        free(nm.b);
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory", t->path);
    }
    t->norms = n;
    t->norms[t->n_norms++] = nm;
    return KR_OK;
}

kr_status tok_push_eos(kr_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_tokens)
        return KR_OK;
    for (size_t i = 0; i < t->n_eos; i++)
        if (t->eos[i] == id)
            return KR_OK;
    int32_t *n = realloc(t->eos, (t->n_eos + 1) * sizeof *n);
    if (!n)
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory", t->path);
    t->eos = n;
    t->eos[t->n_eos++] = id;
    return KR_OK;
}

/* ---------------------------------------------------------------- configs next to the tokenizer */

static kr_status config_token_text(const json_t *cfg, const char *key, const char *where, const char **out) {
    json_t *v = json_object_get(cfg, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return KR_OK;
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return KR_OK;
    }
    if (json_is_object(v))
        return kr_json_req_str(v, "content", where, out);
    return kr_fail(KR_ERR_FORMAT, "%s: field '%s' must be a string or an AddedToken object", where, key);
}

static kr_status set_text(char **dst, const char *s) {
    free(*dst);
    *dst = strdup(s ? s : "");
    return *dst ? KR_OK : kr_fail(KR_ERR_NOMEM, "out of memory");
}

static kr_status apply_tokenizer_config(kr_tokenizer *t, const json_t *cfg, const char *where) {
    const char *bos = NULL, *eos = NULL;
    KR_TRY(config_token_text(cfg, "bos_token", where, &bos));
    KR_TRY(config_token_text(cfg, "eos_token", where, &eos));
    if (json_object_get(cfg, "bos_token")) {
        KR_TRY(set_text(&t->bos_text, bos));
        t->bos = bos ? tok_find_piece(t, bos, strlen(bos)) : -1;
    }
    if (eos) {
        KR_TRY(set_text(&t->eos_text, eos));
        int32_t id = tok_find_piece(t, eos, strlen(eos));
        if (id >= 0) {
            free(t->eos); /* the config's eos_token replaces the format's default */
            t->eos = NULL;
            t->n_eos = 0;
            KR_TRY(tok_push_eos(t, id));
        }
    }
    /* transformers rebuilds the post-processor from add_bos_token / add_eos_token when they are given. */
    json_t *ab = json_object_get(cfg, "add_bos_token"), *ae = json_object_get(cfg, "add_eos_token");
    if ((ab && json_is_boolean(ab)) || (ae && json_is_boolean(ae))) {
        bool add_bos = ab ? json_is_true(ab) : (t->have_template_post && t->n_prefix > 0);
        bool add_eos = ae ? json_is_true(ae) : (t->have_template_post && t->n_suffix > 0);
        if (ab && json_is_boolean(ab)) {
            free(t->prefix);
            t->prefix = NULL;
            t->n_prefix = 0;
            if (add_bos && t->bos >= 0) {
                if (!(t->prefix = malloc(sizeof *t->prefix)))
                    return kr_fail(KR_ERR_NOMEM, "out of memory");
                t->prefix[0] = t->bos;
                t->n_prefix = 1;
            }
        }
        if (ae && json_is_boolean(ae)) {
            free(t->suffix);
            t->suffix = NULL;
            t->n_suffix = 0;
            if (add_eos && t->n_eos > 0) {
                if (!(t->suffix = malloc(sizeof *t->suffix)))
                    return kr_fail(KR_ERR_NOMEM, "out of memory");
                t->suffix[0] = t->eos[0];
                t->n_suffix = 1;
            }
        }
    }
    json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct)) {
        KR_TRY(set_text(&t->chat_template, json_string_value(ct)));
    } else if (json_is_array(ct)) {
        /* A list of named templates: the "default" one, else the first. */
        const char *pick = NULL;
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            const char *name = json_string_value(json_object_get(e, "name"));
            const char *tpl = json_string_value(json_object_get(e, "template"));
            if (tpl && (!pick || (name && strcmp(name, "default") == 0)))
                pick = tpl;
        }
        if (pick)
            KR_TRY(set_text(&t->chat_template, pick));
    }
    return KR_OK;
}

static kr_status apply_generation_config(kr_tokenizer *t, const json_t *cfg, const char *where) {
    json_t *v = json_object_get(cfg, "eos_token_id");
    if (json_is_integer(v))
        return tok_push_eos(t, (int32_t)json_integer_value(v));
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_integer(e))
                return kr_fail(KR_ERR_FORMAT, "%s: 'eos_token_id' must be an integer or a list of integers", where);
            KR_TRY(tok_push_eos(t, (int32_t)json_integer_value(e)));
        }
    }
    return KR_OK;
}

kr_status tok_load_configs(kr_tokenizer *t, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (kr_file_exists(path)) {
        json_t *cfg;
        KR_TRY(kr_json_load_file(path, &cfg));
        kr_status s = apply_tokenizer_config(t, cfg, path);
        json_decref(cfg);
        KR_TRY(s);
    }
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (kr_file_exists(path)) {
        json_t *cfg;
        KR_TRY(kr_json_load_file(path, &cfg));
        kr_status s = apply_generation_config(t, cfg, path);
        json_decref(cfg);
        KR_TRY(s);
    }
    return KR_OK;
}

/* ---------------------------------------------------------------- loading */

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool has_gguf_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    char m[4] = {0};
    if (!f)
        return false;
    size_t n = fread(m, 1, 4, f);
    fclose(f);
    return n == 4 && memcmp(m, "GGUF", 4) == 0;
}

kr_status kr_tokenizer_load(const char *path, kr_tokenizer **out) {
    *out = NULL;
    char file[4096], dir[4096];
    if (is_dir(path)) {
        snprintf(dir, sizeof dir, "%s", path);
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
        if (!kr_file_exists(file))
            snprintf(file, sizeof file, "%s/tiktoken.model", path);
        if (!kr_file_exists(file))
            return kr_fail(KR_ERR_IO, "%s: no tokenizer.json or tiktoken.model in this directory", path);
    } else {
        snprintf(file, sizeof file, "%s", path);
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(dir, sizeof dir, ".");
        if (!kr_file_exists(file))
            return kr_fail(KR_ERR_IO, "%s: cannot open: %s", path, strerror(ENOENT));
    }
    kr_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(file))) {
        free(t);
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    t->bos = -1;
    t->unk_id = -1;
    init_byte_map(t);
    kr_status s;
    bool gguf = ends_with(file, ".gguf") || has_gguf_magic(file);
    if (gguf)
        s = tok_load_gguf(t, file);
    else if (ends_with(file, ".json"))
        s = tok_load_hf(t, file);
    else
        s = tok_load_tiktoken(t, file);
    if (s == KR_OK && !gguf)
        s = tok_load_configs(t, dir);
    if (s == KR_OK && !t->bos_text)
        s = set_text(&t->bos_text, t->bos >= 0 ? t->tokens[t->bos].piece : "");
    if (s == KR_OK && !t->eos_text)
        s = set_text(&t->eos_text, t->n_eos ? t->tokens[t->eos[0]].piece : "");
    if (s != KR_OK) {
        kr_tokenizer_free(t);
        return s;
    }
    *out = t;
    return KR_OK;
}

void kr_tokenizer_free(kr_tokenizer *t) {
    if (!t)
        return;
    for (int32_t i = 0; i < t->n_tokens; i++) {
        if (t->tokens[i].bytes != t->tokens[i].piece)
            free(t->tokens[i].bytes);
        free(t->tokens[i].piece);
    }
    free(t->tokens);
    free(t->by_piece.slots);
    free(t->by_bytes.slots);
    free(t->merges.slots);
    free(t->added);
    for (size_t i = 0; i < t->n_norms; i++) {
        free(t->norms[i].a);
        free(t->norms[i].b);
    }
    free(t->norms);
    for (size_t i = 0; i < t->n_pres; i++)
        pcre2_code_free(t->pres[i].re);
    free(t->pres);
    free(t->prefix);
    free(t->suffix);
    free(t->eos);
    free(t->bos_text);
    free(t->eos_text);
    free(t->chat_template);
    free(t->path);
    free(t);
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    const char *p;
    size_t len;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} spans;

typedef struct {
    int32_t rank, pos, left, right;
} heap_item;

typedef struct {
    uint64_t hash;
    const char *key; /* points into the text being encoded (alive for the whole call) */
    uint32_t len;
    uint32_t off, count; /* ids in the pool */
} cache_slot;

typedef struct {
    const kr_tokenizer *tok;
    bool parse_special;
    int32_t *ids;
    size_t n, cap;
    bool oom;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    char **bufs; /* normalized copies of the text; cache keys may point into them */
    size_t n_bufs;
    spans pieces[2];
    /* word cache: a piece seen before in this call reuses its ids */
    cache_slot *cache;
    size_t cache_mask, cache_count;
    int32_t *pool;
    size_t pool_n, pool_cap;
    /* BPE scratch */
    int32_t *sym, *prev, *next, *start, *slen;
    heap_item *heap;
    size_t sym_cap, heap_cap, heap_n;
} enc_ctx;

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *n = realloc(*p, c * elem);
    if (!n)
        return false;
    *p = n;
    *cap = c;
    return true;
}

static void emit(enc_ctx *c, int32_t id) {
    if (c->n == c->cap && !grow((void **)&c->ids, &c->cap, c->n + 1, sizeof *c->ids)) {
        c->oom = true;
        return;
    }
    c->ids[c->n++] = id;
}

static void spans_push(enc_ctx *c, spans *s, const char *p, size_t len) {
    if (!len)
        return; /* empty pieces are dropped, as Hugging Face filters them */
    if (s->n == s->cap && !grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) {
        c->oom = true;
        return;
    }
    s->v[s->n++] = (span){p, len};
}

static void heap_push(enc_ctx *c, heap_item it) {
    if (c->heap_n == c->heap_cap && !grow((void **)&c->heap, &c->heap_cap, c->heap_n + 1, sizeof *c->heap)) {
        c->oom = true;
        return;
    }
    size_t i = c->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        heap_item *q = &c->heap[p];
        if (q->rank < it.rank || (q->rank == it.rank && q->pos < it.pos))
            break;
        c->heap[i] = *q;
        i = p;
    }
    c->heap[i] = it;
}

static heap_item heap_pop(enc_ctx *c) {
    heap_item top = c->heap[0], last = c->heap[--c->heap_n];
    size_t i = 0, n = c->heap_n;
    while (1) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const heap_item *best = &last;
        if (l < n && (c->heap[l].rank < best->rank || (c->heap[l].rank == best->rank && c->heap[l].pos < best->pos)))
            m = l, best = &c->heap[l];
        if (r < n && (c->heap[r].rank < best->rank || (c->heap[r].rank == best->rank && c->heap[r].pos < best->pos)))
            m = r, best = &c->heap[r];
        if (m == i)
            break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n)
        c->heap[i] = last;
    return top;
}

/* The merge of symbols i and j, if the vocabulary has one: tokenizer.json ranks pairs by the merges
 * list; tiktoken ranks a pair by the id of the concatenated bytes. */
static bool pair_rank(const enc_ctx *c, const char *piece, int32_t i, int32_t j, int32_t *rank, int32_t *merged) {
    const kr_tokenizer *t = c->tok;
    if (t->model == MODEL_TIKTOKEN) {
        int32_t id = tok_find_bytes(t, piece + c->start[i], (size_t)(c->slen[i] + c->slen[j]));
        if (id < 0)
            return false;
        *rank = *merged = id;
        return true;
    }
    return merge_lookup(&t->merges, c->sym[i], c->sym[j], rank, merged);
}

static void push_pair(enc_ctx *c, const char *piece, int32_t i) {
    int32_t j = c->next[i], rank, merged;
    if (j < 0)
        return;
    if (pair_rank(c, piece, i, j, &rank, &merged))
        heap_push(c, (heap_item){rank, i, c->sym[i], c->sym[j]});
}

/* Initial symbols of a piece: one per byte (byte-level and tiktoken) or one per character, with
 * <0xNN> byte fallback or the unk token for characters the vocabulary lacks. */
static size_t initial_symbols(enc_ctx *c, const char *p, size_t len) {
    const kr_tokenizer *t = c->tok;
    size_t n = 0;
    if (t->byte_level || t->model == MODEL_TIKTOKEN) {
        for (size_t i = 0; i < len; i++) {
            int32_t id = t->model == MODEL_TIKTOKEN ? tok_find_bytes(t, p + i, 1) : t->byte_id[(uint8_t)p[i]];
            if (id < 0)
                continue;
            c->sym[n] = id, c->start[n] = (int32_t)i, c->slen[n] = 1, n++;
        }
        return n;
    }
    for (size_t i = 0; i < len;) {
        int l = utf8_len_at((const uint8_t *)p + i);
        int32_t id = tok_find_piece(t, p + i, (size_t)l);
        if (id >= 0) {
            c->sym[n] = id, c->start[n] = (int32_t)i, c->slen[n] = l, n++;
        } else if (t->byte_fallback && t->fallback_id[(uint8_t)p[i]] >= 0) {
            for (int k = 0; k < l; k++)
                c->sym[n] = t->fallback_id[(uint8_t)p[i + k]], c->start[n] = (int32_t)(i + k), c->slen[n] = 1, n++;
        } else if (t->unk_id >= 0) {
            if (t->fuse_unk && n > 0 && c->sym[n - 1] == t->unk_id)
                c->slen[n - 1] += l;
            else
                c->sym[n] = t->unk_id, c->start[n] = (int32_t)i, c->slen[n] = l, n++;
        }
        i += (size_t)l;
    }
    return n;
}

/* BPE on one piece: repeatedly merge the adjacent pair of lowest rank (leftmost on ties). */
static void bpe_piece(enc_ctx *c, const char *p, size_t len) {
    const kr_tokenizer *t = c->tok;
    if (t->ignore_merges) {
        int32_t id = t->byte_level ? tok_find_bytes(t, p, len) : tok_find_piece(t, p, len);
        if (id >= 0) {
            emit(c, id);
            return;
        }
    }
    if (len + 1 > c->sym_cap) {
        size_t cap = c->sym_cap;
        bool ok = true;
        int32_t **arrs[] = {&c->sym, &c->prev, &c->next, &c->start, &c->slen};
        for (int k = 0; k < 5 && ok; k++) {
            cap = c->sym_cap;
            ok = grow((void **)arrs[k], &cap, len + 1, sizeof(int32_t));
        }
        if (!ok) {
            c->oom = true;
            return;
        }
        c->sym_cap = cap;
    }
    size_t n = initial_symbols(c, p, len);
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        c->prev[i] = (int32_t)i - 1;
        c->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    c->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(c, p, (int32_t)i);
    while (c->heap_n > 0 && !c->oom) {
        heap_item it = heap_pop(c);
        int32_t i = it.pos, j = c->next[i];
        /* stale entries: a side was merged away or into something else since the push */
        if (c->slen[i] == 0 || j < 0 || c->sym[i] != it.left || c->sym[j] != it.right)
            continue;
        int32_t rank, merged;
        if (!pair_rank(c, p, i, j, &rank, &merged) || rank != it.rank)
            continue;
        c->sym[i] = merged;
        c->slen[i] += c->slen[j];
        c->slen[j] = 0;
        c->next[i] = c->next[j];
        if (c->next[j] >= 0)
            c->prev[c->next[j]] = i;
        if (c->prev[i] >= 0)
            push_pair(c, p, c->prev[i]);
        push_pair(c, p, i);
    }
    for (int32_t i = 0; i >= 0; i = c->next[i])
        emit(c, c->sym[i]);
}

static void cache_grow(enc_ctx *c) {
    size_t cap = c->cache ? (c->cache_mask + 1) * 2 : 64;
    cache_slot *n = calloc(cap, sizeof *n);
    if (!n) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; c->cache && i <= c->cache_mask; i++) {
        if (!c->cache[i].key)
            continue;
        size_t j = c->cache[i].hash & (cap - 1);
        while (n[j].key)
            j = (j + 1) & (cap - 1);
        n[j] = c->cache[i];
    }
    free(c->cache);
    c->cache = n;
    c->cache_mask = cap - 1;
}

/* Pieces longer than this are rarely repeated; they skip the cache. */
#define CACHE_MAX_PIECE 256

static void model_piece(enc_ctx *c, const char *p, size_t len) {
    if (len > CACHE_MAX_PIECE) {
        bpe_piece(c, p, len);
        return;
    }
    if (!c->cache || (c->cache_count + 1) * 2 > c->cache_mask + 1) {
        cache_grow(c);
        if (c->oom)
            return;
    }
    uint64_t h = hash_bytes(p, len);
    size_t i = h & c->cache_mask;
    for (;; i = (i + 1) & c->cache_mask) {
        cache_slot *s = &c->cache[i];
        if (!s->key)
            break;
        if (s->hash == h && s->len == len && memcmp(s->key, p, len) == 0) {
            if (!grow((void **)&c->ids, &c->cap, c->n + s->count, sizeof *c->ids)) {
                c->oom = true;
                return;
            }
            memcpy(c->ids + c->n, c->pool + s->off, s->count * sizeof *c->ids);
            c->n += s->count;
            return;
        }
    }
    size_t before = c->n;
    bpe_piece(c, p, len);
    if (c->oom)
        return;
    size_t count = c->n - before;
    if (!grow((void **)&c->pool, &c->pool_cap, c->pool_n + count, sizeof *c->pool)) {
        c->oom = true;
        return;
    }
    memcpy(c->pool + c->pool_n, c->ids + before, count * sizeof *c->ids);
    c->cache[i] = (cache_slot){h, p, (uint32_t)len, (uint32_t)c->pool_n, (uint32_t)count};
    c->pool_n += count;
    c->cache_count++;
}

/* One regex/predicate split of every piece in `in`, appending to `out` with the step's behaviour. */
typedef struct {
    size_t a, b;
    bool match;
} seg;

static void apply_behavior(enc_ctx *c, const char *p, seg *sg, size_t n, int beh, spans *out) {
    switch (beh) {
    case BEH_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!sg[i].match)
                spans_push(c, out, p + sg[i].a, sg[i].b - sg[i].a);
        return;
    case BEH_ISOLATED:
        for (size_t i = 0; i < n; i++)
            spans_push(c, out, p + sg[i].a, sg[i].b - sg[i].a);
        return;
    case BEH_MERGED_PREV:
    case BEH_CONTIGUOUS: {
        size_t m = 0;
        bool prev_match = false;
        for (size_t i = 0; i < n; i++) {
            bool join = beh == BEH_MERGED_PREV ? (sg[i].match && !prev_match) : (sg[i].match == prev_match);
            if (join && m > 0)
                sg[m - 1].b = sg[i].b;
            else
                sg[m++] = sg[i];
            prev_match = sg[i].match;
        }
        for (size_t i = 0; i < m; i++)
            spans_push(c, out, p + sg[i].a, sg[i].b - sg[i].a);
        return;
    }
    case BEH_MERGED_NEXT: {
        /* Walk backwards: a match joins the piece that follows it. */
        size_t m = n;
        bool prev_match = false;
        for (size_t i = n; i-- > 0;) {
            bool join = sg[i].match && !prev_match;
            if (join && m < n)
                sg[m].a = sg[i].a;
            else
                sg[--m] = sg[i];
            prev_match = sg[i].match;
        }
        for (size_t i = m; i < n; i++)
            spans_push(c, out, p + sg[i].a, sg[i].b - sg[i].a);
        return;
    }
    }
}

typedef struct {
    seg *v;
    size_t n, cap;
} segs;

static void segs_push(enc_ctx *c, segs *s, size_t a, size_t b, bool match) {
    if (a >= b)
        return;
    if (s->n == s->cap && !grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) {
        c->oom = true;
        return;
    }
    s->v[s->n++] = (seg){a, b, match};
}

static kr_status split_regex(enc_ctx *c, const tok_pre *pre, span in, segs *sg) {
    size_t pos = 0, prev = 0;
    sg->n = 0;
    while (pos <= in.len) {
        int rc = pcre2_match(pre->re, (PCRE2_SPTR)in.p, in.len, pos, PCRE2_NO_UTF_CHECK, c->md, c->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->jit) {
            /* Long runs (whitespace, CJK) can backtrack past the JIT's 32 KiB default stack: give it more,
             * only when needed, since most calls are short prompts. */
            c->jit = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, NULL);
            if (!c->jit)
                return kr_fail(KR_ERR_NOMEM, "out of memory for the regex matcher");
            pcre2_jit_stack_assign(c->mctx, NULL, c->jit);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: pre-tokenizer regex failed: %s", c->tok->path, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* an empty match splits nothing; step over one character */
            if (a >= in.len)
                break;
            pos = a + (size_t)utf8_len_at((const uint8_t *)in.p + a);
            continue;
        }
        segs_push(c, sg, prev, a, pre->invert);
        segs_push(c, sg, a, b, !pre->invert);
        prev = pos = b;
    }
    segs_push(c, sg, prev, in.len, pre->invert);
    return KR_OK;
}

static void split_digits(enc_ctx *c, const tok_pre *pre, span in, segs *sg) {
    sg->n = 0;
    size_t prev = 0;
    for (size_t i = 0; i < in.len;) {
        int l;
        uint32_t cp = utf8_decode_at((const uint8_t *)in.p + i, &l);
        if (is_numeric_cp(cp)) {
            segs_push(c, sg, prev, i, false);
            segs_push(c, sg, i, i + (size_t)l, true);
            prev = i + (size_t)l;
        }
        i += (size_t)l;
    }
    segs_push(c, sg, prev, in.len, false);
}

static char *keep_buf(enc_ctx *c, size_t len) {
    char *b = malloc(len ? len : 1);
    char **v = b ? realloc(c->bufs, (c->n_bufs + 1) * sizeof *v) : NULL;
    if (!v) {
        free(b);
        c->oom = true;
        return NULL;
    }
    c->bufs = v;
    c->bufs[c->n_bufs++] = b;
    return b;
}

static kr_status pretokenize_and_model(enc_ctx *c, const char *p, size_t len) {
    const kr_tokenizer *t = c->tok;
    spans *cur = &c->pieces[0], *nxt = &c->pieces[1];
    cur->n = 0;
    spans_push(c, cur, p, len);
    segs sg = {0};
    kr_status s = KR_OK;
    for (size_t k = 0; k < t->n_pres && s == KR_OK && !c->oom; k++) {
        const tok_pre *pre = &t->pres[k];
        nxt->n = 0;
        if (pre->kind == PRE_PREFIX_SPACE) {
            for (size_t i = 0; i < cur->n && !c->oom; i++) {
                span in = cur->v[i];
                if (in.p[0] == ' ') {
                    spans_push(c, nxt, in.p, in.len);
                    continue;
                }
                char *b = keep_buf(c, in.len + 1);
                if (!b)
                    break;
                b[0] = ' ';
                memcpy(b + 1, in.p, in.len);
                spans_push(c, nxt, b, in.len + 1);
            }
        } else {
            for (size_t i = 0; i < cur->n && s == KR_OK && !c->oom; i++) {
                if (pre->kind == PRE_SPLIT)
                    s = split_regex(c, pre, cur->v[i], &sg);
                else
                    split_digits(c, pre, cur->v[i], &sg);
                if (s == KR_OK)
                    apply_behavior(c, cur->v[i].p, sg.v, sg.n, pre->kind == PRE_DIGITS && !pre->individual ? BEH_CONTIGUOUS : pre->behavior, nxt);
            }
        }
        spans *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    free(sg.v);
    for (size_t i = 0; i < cur->n && s == KR_OK && !c->oom; i++)
        model_piece(c, cur->v[i].p, cur->v[i].len);
    return s;
}

/* Normalizes with utf8proc; NFC is applied only around non-ASCII runs, since ASCII text is already NFC
 * and no ASCII character composes with what precedes it. */
static kr_status normalize_unicode(enc_ctx *c, int kind, const char *p, size_t len, kr_buf *out) {
    utf8proc_option_t opt = UTF8PROC_STABLE;
    switch (kind) {
    case NORM_NFC: opt |= UTF8PROC_COMPOSE; break;
    case NORM_NFD: opt |= UTF8PROC_DECOMPOSE; break;
    case NORM_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    default: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && (uint8_t)p[j] < 0x80)
            j++;
        if (j == len) {
            kr_buf_add(out, p + i, len - i);
            break;
        }
        /* the run starts one character before the first non-ASCII byte (a possible starter) */
        size_t a = j > i ? j - 1 : j, b = j;
        kr_buf_add(out, p + i, a - i);
        while (b < len && ((uint8_t)p[b] >= 0x80 || (b + 1 < len && (uint8_t)p[b + 1] >= 0x80 && (uint8_t)p[b] < 0x80)))
            b++;
        utf8proc_uint8_t *r = NULL;
        utf8proc_ssize_t rn = utf8proc_map((const utf8proc_uint8_t *)p + a, (utf8proc_ssize_t)(b - a), &r, opt);
        if (rn < 0)
            return kr_fail(KR_ERR_FORMAT, "%s: normalizer failed: %s", c->tok->path, utf8proc_errmsg(rn));
        kr_buf_add(out, r, (size_t)rn);
        free(r);
        i = b;
    }
    return KR_OK;
}

static kr_status normalize(enc_ctx *c, const char *p, size_t len, const char **outp, size_t *outn) {
    const kr_tokenizer *t = c->tok;
    const char *cur = p;
    size_t n = len;
    for (size_t k = 0; k < t->n_norms; k++) {
        const tok_norm *nm = &t->norms[k];
        kr_buf out = {0};
        if (nm->kind <= NORM_NFKD) {
            kr_status s = normalize_unicode(c, nm->kind, cur, n, &out);
            if (s != KR_OK) {
                free(out.p);
                return s;
            }
        } else if (nm->kind == NORM_LOWERCASE) {
            for (size_t i = 0; i < n;) {
                int l;
                uint32_t cp = utf8_decode_at((const uint8_t *)cur + i, &l);
                char tmp[4];
                kr_buf_add(&out, tmp, (size_t)tok_utf8_put((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), tmp));
                i += (size_t)l;
            }
        } else if (nm->kind == NORM_PREPEND) {
            if (n) {
                kr_buf_add(&out, nm->a, nm->alen);
                kr_buf_add(&out, cur, n);
            }
        } else { /* NORM_REPLACE */
            for (size_t i = 0; i < n;) {
                if (nm->alen && i + nm->alen <= n && memcmp(cur + i, nm->a, nm->alen) == 0) {
                    kr_buf_add(&out, nm->b, nm->blen);
                    i += nm->alen;
                } else {
                    kr_buf_add(&out, cur + i, 1);
                    i++;
                }
            }
        }
        if (out.oom) {
            free(out.p);
            return kr_fail(KR_ERR_NOMEM, "out of memory normalizing text");
        }
        char *kept = keep_buf(c, out.n);
        if (!kept) {
            free(out.p);
            return kr_fail(KR_ERR_NOMEM, "out of memory normalizing text");
        }
        if (out.n)
            memcpy(kept, out.p, out.n);
        free(out.p);
        cur = kept;
        n = out.n;
    }
    *outp = cur;
    *outn = n;
    return KR_OK;
}

static kr_status after_added(enc_ctx *c, const char *p, size_t len, bool normalized_phase);

/* Splits out added tokens (leftmost, then longest, as Hugging Face's Aho-Corasick does) of one phase:
 * non-normalized tokens on the raw text, normalized ones on the normalized text. */
static kr_status split_added(enc_ctx *c, const char *p, size_t len, bool normalized_phase) {
    const kr_tokenizer *t = c->tok;
    bool any = normalized_phase ? t->any_normalized_added : t->any_raw_added;
    if (!any)
        return after_added(c, p, len, normalized_phase);
    size_t done = 0, i = 0;
    while (i < len) {
        uint8_t b = (uint8_t)p[i];
        const tok_added *hit = NULL;
        for (uint32_t k = t->added_first[b]; k < t->added_first[b + 1]; k++) {
            const tok_added *a = &t->added[k];
            if (a->normalized != normalized_phase || (a->special && !c->parse_special))
                continue;
            if (a->len <= len - i && memcmp(p + i, a->content, a->len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t start = i, stop = i + hit->len;
        if (hit->single_word) {
            bool before = false, after = false;
            if (start > 0) {
                size_t q = start - 1;
                while (q > 0 && ((uint8_t)p[q] & 0xC0) == 0x80)
                    q--;
                int l;
                before = is_word_char(utf8_decode_at((const uint8_t *)p + q, &l));
            }
            if (stop < len) {
                int l;
                after = is_word_char(utf8_decode_at((const uint8_t *)p + stop, &l));
            }
            if (before || after) {
                i = stop; /* Aho-Corasick resumes after the skipped match */
                continue;
            }
        }
        if (hit->lstrip) {
            while (start > done) {
                size_t q = start - 1;
                while (q > done && ((uint8_t)p[q] & 0xC0) == 0x80)
                    q--;
                int l;
                if (!is_unicode_space(utf8_decode_at((const uint8_t *)p + q, &l)))
                    break;
                start = q;
            }
        }
        if (hit->rstrip) {
            while (stop < len) {
                int l;
                if (!is_unicode_space(utf8_decode_at((const uint8_t *)p + stop, &l)))
                    break;
                stop += (size_t)l;
            }
        }
        if (start > done)
            KR_TRY(after_added(c, p + done, start - done, normalized_phase));
        emit(c, hit->id);
        done = i = stop;
    }
    if (len > done)
        KR_TRY(after_added(c, p + done, len - done, normalized_phase));
    return KR_OK;
}

static kr_status after_added(enc_ctx *c, const char *p, size_t len, bool normalized_phase) {
    if (normalized_phase)
        return pretokenize_and_model(c, p, len);
    const char *np = p;
    size_t nn = len;
    KR_TRY(normalize(c, p, len, &np, &nn));
    return split_added(c, np, nn, true);
}

static void enc_free(enc_ctx *c) {
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mctx);
    pcre2_jit_stack_free(c->jit);
    for (size_t i = 0; i < c->n_bufs; i++)
        free(c->bufs[i]);
    free(c->bufs);
    free(c->pieces[0].v);
    free(c->pieces[1].v);
    free(c->cache);
    free(c->pool);
    free(c->sym);
    free(c->prev);
    free(c->next);
    free(c->start);
    free(c->slen);
    free(c->heap);
}

kr_status kr_tokenizer_encode(const kr_tokenizer *tok, const char *text, size_t len, kr_encode_options opt,
                              int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    size_t bad = utf8_invalid_at(text, len);
    if (bad < len)
        return kr_fail(KR_ERR_ARG, "text to encode is not valid UTF-8: invalid byte 0x%02X at byte offset %zu",
                       (uint8_t)text[bad], bad);
    enc_ctx c = {.tok = tok, .parse_special = opt.parse_special};
    c.md = pcre2_match_data_create(4, NULL);
    c.mctx = pcre2_match_context_create(NULL);
    if (!c.md || !c.mctx) {
        enc_free(&c);
        return kr_fail(KR_ERR_NOMEM, "out of memory for the regex matcher");
    }
    if (opt.add_special)
        for (size_t i = 0; i < tok->n_prefix; i++)
            emit(&c, tok->prefix[i]);
    kr_status s = split_added(&c, text, len, false);
    if (opt.add_special)
        for (size_t i = 0; i < tok->n_suffix; i++)
            emit(&c, tok->suffix[i]);
    if (s == KR_OK && c.oom)
        s = kr_fail(KR_ERR_NOMEM, "out of memory encoding %zu bytes of text", len);
    if (s == KR_OK) {
        *ids = c.ids ? c.ids : malloc(sizeof **ids);
        *n = c.n;
        c.ids = NULL;
        if (!*ids)
            s = kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    free(c.ids);
    enc_free(&c);
    return s;
}

/* ---------------------------------------------------------------- decoding */

static kr_status check_id(const kr_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_tokens || !t->tokens[id].piece)
        return kr_fail(KR_ERR_ARG, "token id %d is out of range for %s (vocabulary of %d)", id, t->path, t->n_tokens);
    return KR_OK;
}

kr_status kr_tokenizer_decode(const kr_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special, char **text) {
    *text = NULL;
    kr_buf raw = {0}, out = {0};
    for (size_t i = 0; i < n; i++) {
        kr_status s = check_id(tok, ids[i]);
        if (s != KR_OK) {
            free(raw.p);
            return s;
        }
        const tok_token *k = &tok->tokens[ids[i]];
        if (skip_special && k->special)
            continue;
        kr_buf_add(&raw, k->bytes, k->bytes_len);
    }
    size_t skip = 0;
    for (int k = 0; k < tok->strip_leading && skip < raw.n && raw.p[skip] == ' '; k++)
        skip++;
    put_lossy(&out, raw.p ? raw.p + skip : "", raw.n - skip, false);
    kr_buf_add(&out, "", 0);
    free(raw.p);
    if (out.oom) {
        free(out.p);
        return kr_fail(KR_ERR_NOMEM, "out of memory decoding %zu tokens", n);
    }
    *text = out.p;
    return KR_OK;
}

struct kr_detok {
    const kr_tokenizer *tok;
    bool skip_special;
    int stripped; /* leading spaces removed so far (decoder Strip) */
    bool started; /* something other than a stripped space has been seen */
    kr_buf pending;  /* bytes of an incomplete UTF-8 sequence */
    kr_buf out;
};

kr_status kr_detok_create(const kr_tokenizer *tok, bool skip_special, kr_detok **out) {
    *out = calloc(1, sizeof **out);
    if (!*out)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    (*out)->tok = tok;
    (*out)->skip_special = skip_special;
    return KR_OK;
}

kr_status kr_detok_push(kr_detok *d, int32_t id, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    KR_TRY(check_id(d->tok, id));
    const tok_token *k = &d->tok->tokens[id];
    d->out.n = 0;
    if (d->skip_special && k->special)
        return KR_OK;
    const char *b = k->bytes;
    size_t n = k->bytes_len;
    while (!d->started && n > 0 && *b == ' ' && d->stripped < d->tok->strip_leading)
        b++, n--, d->stripped++;
    if (n > 0)
        d->started = true;
    kr_buf_add(&d->pending, b, n);
    size_t used = put_lossy(&d->out, d->pending.p ? d->pending.p : "", d->pending.n, true);
    memmove(d->pending.p, d->pending.p + used, d->pending.n - used);
    d->pending.n -= used;
    kr_buf_add(&d->out, "", 0);
    if (d->out.oom || d->pending.oom)
        return kr_fail(KR_ERR_NOMEM, "out of memory in the detokenizer");
    *text = d->out.p ? d->out.p : "";
    *len = d->out.n;
    return KR_OK;
}

kr_status kr_detok_flush(kr_detok *d, const char **text, size_t *len) {
    d->out.n = 0;
    put_lossy(&d->out, d->pending.p ? d->pending.p : "", d->pending.n, false);
    d->pending.n = 0;
    kr_buf_add(&d->out, "", 0);
    if (d->out.oom)
        return kr_fail(KR_ERR_NOMEM, "out of memory in the detokenizer");
    *text = d->out.p ? d->out.p : "";
    *len = d->out.n;
    return KR_OK;
}

void kr_detok_free(kr_detok *d) {
    if (!d)
        return;
    free(d->pending.p);
    free(d->out.p);
    free(d);
}

/* ---------------------------------------------------------------- accessors */

int64_t kr_tokenizer_vocab_size(const kr_tokenizer *tok) { return tok->n_tokens; }

const char *kr_tokenizer_token_bytes(const kr_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n_tokens || !tok->tokens[id].piece)
        return NULL;
    if (len)
        *len = tok->tokens[id].bytes_len;
    return tok->tokens[id].bytes;
}

const char *kr_tokenizer_piece(const kr_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_tokens ? tok->tokens[id].piece : NULL;
}

bool kr_tokenizer_is_special(const kr_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_tokens && tok->tokens[id].special;
}

int32_t kr_tokenizer_lookup(const kr_tokenizer *tok, const char *piece) {
    return tok_find_piece(tok, piece, strlen(piece));
}

int32_t kr_tokenizer_bos(const kr_tokenizer *tok) { return tok->bos; }

size_t kr_tokenizer_eos(const kr_tokenizer *tok, const int32_t **ids) {
    *ids = tok->eos;
    return tok->n_eos;
}

const char *kr_tokenizer_bos_text(const kr_tokenizer *tok) { return tok->bos_text ? tok->bos_text : ""; }
const char *kr_tokenizer_eos_text(const kr_tokenizer *tok) { return tok->eos_text ? tok->eos_text : ""; }
const char *kr_tokenizer_chat_template(const kr_tokenizer *tok) { return tok->chat_template; }
