/* Hugging Face tokenizer.json loader: a BPE model with its added tokens, normalizer, pre-tokenizer,
 * decoder and post-processor. Every component type krasis does not implement is an error naming it and
 * the file, so a tokenizer is never silently approximated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "tokenizer/tok_internal.h"

static const char *type_of(const json_t *o) { return json_string_value(json_object_get(o, "type")); }

static kr_status parse_normalizer(kr_tokenizer *t, const json_t *n) {
    if (!n || json_is_null(n))
        return KR_OK;
    const char *ty = type_of(n);
    if (!ty)
        return kr_fail(KR_ERR_FORMAT, "%s: normalizer has no 'type'", t->path);
    if (strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list))
            return kr_fail(KR_ERR_FORMAT, "%s: Sequence normalizer needs a 'normalizers' array", t->path);
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) KR_TRY(parse_normalizer(t, e));
        return KR_OK;
    }
    static const char *const unicode[] = {"NFC", "NFD", "NFKC", "NFKD"};
    for (int k = 0; k < 4; k++)
        if (strcmp(ty, unicode[k]) == 0)
            return tok_push_norm(t, (tok_norm){.kind = NORM_NFC + k});
    if (strcmp(ty, "Lowercase") == 0)
        return tok_push_norm(t, (tok_norm){.kind = NORM_LOWERCASE});
    if (strcmp(ty, "Prepend") == 0) {
        const char *s;
        KR_TRY(kr_json_req_str(n, "prepend", t->path, &s));
        tok_norm nm = {.kind = NORM_PREPEND, .a = strdup(s), .alen = strlen(s)};
        if (!nm.a)
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        return tok_push_norm(t, nm);
    }
    if (strcmp(ty, "Replace") == 0) {
        const char *pat = json_string_value(json_object_get(json_object_get(n, "pattern"), "String"));
        const char *content = json_string_value(json_object_get(n, "content"));
        if (!pat || !content)
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: Replace normalizer supports only a String pattern and content",
                           t->path);
        tok_norm nm = {.kind = NORM_REPLACE, .a = strdup(pat), .alen = strlen(pat), .b = strdup(content),
                       .blen = strlen(content)};
        if (!nm.a || !nm.b) {
            free(nm.a);
            free(nm.b);
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        }
        return tok_push_norm(t, nm);
    }
    return kr_fail(KR_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported", t->path, ty);
}

static kr_status parse_behavior(kr_tokenizer *t, const char *b, int *out) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int k = 0; k < 5; k++)
        if (b && strcmp(b, names[k]) == 0) {
            *out = k;
            return KR_OK;
        }
    return kr_fail(KR_ERR_UNSUPPORTED, "%s: Split behavior '%s' is not supported", t->path, b ? b : "(missing)");
}

static kr_status parse_pre(kr_tokenizer *t, const json_t *p) {
    if (!p || json_is_null(p))
        return KR_OK;
    const char *ty = type_of(p);
    if (!ty)
        return kr_fail(KR_ERR_FORMAT, "%s: pre_tokenizer has no 'type'", t->path);
    if (t->byte_level && strcmp(ty, "Sequence") != 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: pre-tokenizer '%s' after ByteLevel is not supported", t->path, ty);
    if (strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return kr_fail(KR_ERR_FORMAT, "%s: Sequence pre_tokenizer needs a 'pretokenizers' array", t->path);
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) KR_TRY(parse_pre(t, e));
        return KR_OK;
    }
    if (strcmp(ty, "Split") == 0) {
        json_t *pat = json_object_get(p, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        const char *lit = json_string_value(json_object_get(pat, "String"));
        tok_pre pre = {.kind = PRE_SPLIT};
        KR_TRY(parse_behavior(t, json_string_value(json_object_get(p, "behavior")), &pre.behavior));
        pre.invert = json_is_true(json_object_get(p, "invert"));
        if (!re && !lit)
            return kr_fail(KR_ERR_FORMAT, "%s: Split pre_tokenizer needs a pattern {Regex} or {String}", t->path);
        char what[4200];
        snprintf(what, sizeof what, "%s: Split pattern", t->path);
        KR_TRY(tok_compile_regex(re ? re : lit, strlen(re ? re : lit), !re, what, &pre.re));
        return tok_push_pre(t, pre);
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        bool prefix = false, use_regex = true;
        KR_TRY(kr_json_opt_bool(p, "add_prefix_space", t->path, &prefix));
        KR_TRY(kr_json_opt_bool(p, "use_regex", t->path, &use_regex));
        if (prefix)
            KR_TRY(tok_push_pre(t, (tok_pre){.kind = PRE_PREFIX_SPACE}));
        if (use_regex)
            KR_TRY(tok_push_split(t, TOK_GPT2_REGEX, BEH_ISOLATED, false, "ByteLevel regex"));
        t->byte_level = true;
        return KR_OK;
    }
    if (strcmp(ty, "Digits") == 0) {
        bool ind = false;
        KR_TRY(kr_json_opt_bool(p, "individual_digits", t->path, &ind));
        return tok_push_pre(t, (tok_pre){.kind = PRE_DIGITS, .individual = ind, .behavior = BEH_ISOLATED});
    }
    return kr_fail(KR_ERR_UNSUPPORTED, "%s: pre-tokenizer type '%s' is not supported", t->path, ty);
}

/* Decoders are applied per token at load time (each token's bytes), except Strip/Metaspace's removal of
 * the leading space, which acts on the start of the whole text. */
typedef struct {
    bool byte_level, byte_fallback;
    const char *rep_from, *rep_to;
} dec_plan;

static kr_status parse_decoder(kr_tokenizer *t, const json_t *d, dec_plan *plan, bool fused) {
    if (!d || json_is_null(d))
        return KR_OK;
    const char *ty = type_of(d);
    if (!ty)
        return kr_fail(KR_ERR_FORMAT, "%s: decoder has no 'type'", t->path);
    if (strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(d, "decoders");
        if (!json_is_array(list))
            return kr_fail(KR_ERR_FORMAT, "%s: Sequence decoder needs a 'decoders' array", t->path);
        size_t i;
        json_t *e;
        bool f = fused;
        json_array_foreach(list, i, e) {
            KR_TRY(parse_decoder(t, e, plan, f));
            f |= type_of(e) && strcmp(type_of(e), "Fuse") == 0;
        }
        return KR_OK;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        plan->byte_level = true;
        return KR_OK;
    }
    if (strcmp(ty, "ByteFallback") == 0) {
        plan->byte_fallback = true;
        return KR_OK;
    }
    if (strcmp(ty, "Fuse") == 0)
        return KR_OK;
    if (strcmp(ty, "Replace") == 0) {
        const char *pat = json_string_value(json_object_get(json_object_get(d, "pattern"), "String"));
        const char *content = json_string_value(json_object_get(d, "content"));
        if (!pat || !content || plan->rep_from)
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: Replace decoder supports one String pattern", t->path);
        plan->rep_from = pat;
        plan->rep_to = content;
        return KR_OK;
    }
    if (strcmp(ty, "Strip") == 0) {
        const char *content = json_string_value(json_object_get(d, "content"));
        int64_t start = 0, stop = 0;
        KR_TRY(kr_json_opt_int(d, "start", t->path, &start));
        KR_TRY(kr_json_opt_int(d, "stop", t->path, &stop));
        if (!fused || stop != 0 || !content || strcmp(content, " ") != 0)
            return kr_fail(KR_ERR_UNSUPPORTED, "%s: Strip decoder is supported only after Fuse, stripping leading spaces",
                           t->path);
        t->strip_leading = (int)start;
        return KR_OK;
    }
    if (strcmp(ty, "Metaspace") == 0) {
        const char *rep = json_string_value(json_object_get(d, "replacement"));
        const char *scheme = json_string_value(json_object_get(d, "prepend_scheme"));
        plan->rep_from = rep ? rep : "\xE2\x96\x81";
        plan->rep_to = " ";
        t->strip_leading = scheme && strcmp(scheme, "never") == 0 ? 0 : 1;
        return KR_OK;
    }
    return kr_fail(KR_ERR_UNSUPPORTED, "%s: decoder type '%s' is not supported", t->path, ty);
}

static kr_status apply_decoder_plan(kr_tokenizer *t, const dec_plan *plan) {
    for (int32_t id = 0; id < t->n_tokens; id++) {
        tok_token *k = &t->tokens[id];
        if (!k->piece)
            continue;
        if (plan->rep_from && strstr(k->piece, plan->rep_from)) {
            size_t fl = strlen(plan->rep_from), tl = strlen(plan->rep_to);
            char *out = malloc(k->piece_len * (tl > fl ? tl : fl) + 1), *o = out;
            if (!out)
                return kr_fail(KR_ERR_NOMEM, "out of memory");
            for (const char *p = k->piece; *p;) {
                if (strncmp(p, plan->rep_from, fl) == 0) {
                    memcpy(o, plan->rep_to, tl);
                    o += tl;
                    p += fl;
                } else
                    *o++ = *p++;
            }
            kr_status s = tok_set_bytes(t, id, out, (size_t)(o - out));
            free(out);
            KR_TRY(s);
        }
        unsigned v;
        if (plan->byte_fallback && k->piece_len == 6 && sscanf(k->piece, "<0x%2X>", &v) == 1) {
            char b = (char)v;
            KR_TRY(tok_set_bytes(t, id, &b, 1));
        } else if (plan->byte_level) {
            KR_TRY(tok_bytes_from_bytelevel(t, id));
        }
    }
    return KR_OK;
}

static kr_status push_ids(int32_t **v, size_t *n, const json_t *ids, const char *where) {
    size_t i;
    json_t *e;
    json_array_foreach(ids, i, e) {
        if (!json_is_integer(e))
            return kr_fail(KR_ERR_FORMAT, "%s: post_processor token ids must be integers", where);
        int32_t *g = realloc(*v, (*n + 1) * sizeof *g);
        if (!g)
            return kr_fail(KR_ERR_NOMEM, "out of memory");
        *v = g;
        (*v)[(*n)++] = (int32_t)json_integer_value(e);
    }
    return KR_OK;
}

static kr_status parse_post(kr_tokenizer *t, const json_t *p) {
    if (!p || json_is_null(p))
        return KR_OK;
    const char *ty = type_of(p);
    if (!ty)
        return kr_fail(KR_ERR_FORMAT, "%s: post_processor has no 'type'", t->path);
    if (strcmp(ty, "ByteLevel") == 0)
        return KR_OK; /* only trims offsets */
    if (strcmp(ty, "Sequence") == 0) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(p, "processors"), i, e) KR_TRY(parse_post(t, e));
        return KR_OK;
    }
    if (strcmp(ty, "TemplateProcessing") == 0) {
        json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
        if (!json_is_array(single))
            return kr_fail(KR_ERR_FORMAT, "%s: TemplateProcessing needs a 'single' array", t->path);
        bool seen_seq = false;
        size_t i;
        json_t *e;
        json_array_foreach(single, i, e) {
            json_t *sp = json_object_get(e, "SpecialToken");
            if (json_object_get(e, "Sequence")) {
                seen_seq = true;
                continue;
            }
            const char *name = json_string_value(json_object_get(sp, "id"));
            json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
            if (!name || !json_is_array(ids))
                return kr_fail(KR_ERR_FORMAT, "%s: TemplateProcessing special token '%s' has no ids", t->path,
                               name ? name : "?");
            KR_TRY(seen_seq ? push_ids(&t->suffix, &t->n_suffix, ids, t->path)
                            : push_ids(&t->prefix, &t->n_prefix, ids, t->path));
        }
        t->have_template_post = true;
        return KR_OK;
    }
    return kr_fail(KR_ERR_UNSUPPORTED, "%s: post_processor type '%s' is not supported", t->path, ty);
}

static kr_status parse_added(kr_tokenizer *t, const json_t *list) {
    if (!list || json_is_null(list))
        return KR_OK;
    if (!json_is_array(list))
        return kr_fail(KR_ERR_FORMAT, "%s: 'added_tokens' must be an array", t->path);
    t->added = calloc(json_array_size(list) + 1, sizeof *t->added);
    if (!t->added)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        int64_t id;
        const char *content;
        KR_TRY(kr_json_req_int(e, "id", t->path, &id));
        KR_TRY(kr_json_req_str(e, "content", t->path, &content));
        if (id < 0 || id >= t->n_tokens)
            return kr_fail(KR_ERR_FORMAT, "%s: added token '%s' has id %lld outside the vocabulary", t->path, content,
                           (long long)id);
        tok_token *k = &t->tokens[id];
        if (!k->piece || strcmp(k->piece, content) != 0)
            KR_TRY(tok_set_piece(t, (int32_t)id, content, strlen(content)));
        tok_added *a = &t->added[t->n_added];
        a->id = (int32_t)id;
        a->content = k->piece;
        a->len = k->piece_len;
        a->special = json_is_true(json_object_get(e, "special"));
        a->normalized = json_is_true(json_object_get(e, "normalized"));
        a->lstrip = json_is_true(json_object_get(e, "lstrip"));
        a->rstrip = json_is_true(json_object_get(e, "rstrip"));
        a->single_word = json_is_true(json_object_get(e, "single_word"));
        k->added = true;
        k->special = a->special;
        if (*content)
            t->n_added++;
    }
    return KR_OK;
}

static kr_status max_id(kr_tokenizer *t, const json_t *vocab, const json_t *added, int64_t *out) {
    int64_t m = -1;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 16 * 1024 * 1024)
            return kr_fail(KR_ERR_FORMAT, "%s: model.vocab['%s'] must be a non-negative integer id", t->path, key);
        if (json_integer_value(v) > m)
            m = json_integer_value(v);
    }
    size_t i;
    json_t *e;
    json_array_foreach((json_t *)added, i, e) {
        json_t *id = json_object_get(e, "id");
        if (json_is_integer(id) && json_integer_value(id) > m && json_integer_value(id) <= 16 * 1024 * 1024)
            m = json_integer_value(id);
    }
    *out = m;
    return KR_OK;
}

static kr_status parse_merges(kr_tokenizer *t, const json_t *merges) {
    size_t i;
    json_t *e;
    char *tmp = NULL;
    size_t tmp_cap = 0;
    kr_status s = KR_OK;
    json_array_foreach((json_t *)merges, i, e) {
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(e)) {
            const char *m = json_string_value(e), *sp = strchr(m, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                s = kr_fail(KR_ERR_FORMAT, "%s: merge %zu ('%s') is not two tokens separated by one space", t->path, i, m);
                break;
            }
            a = m, al = (size_t)(sp - m), b = sp + 1, bl = strlen(b);
        } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                   json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0)), al = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1)), bl = json_string_length(json_array_get(e, 1));
        } else {
            s = kr_fail(KR_ERR_FORMAT, "%s: merge %zu must be a string \"a b\" or a pair [a, b]", t->path, i);
            break;
        }
        if (al + bl > tmp_cap) {
            tmp_cap = (al + bl) * 2 + 64;
            char *n = realloc(tmp, tmp_cap);
            if (!n) {
                s = kr_fail(KR_ERR_NOMEM, "out of memory");
                break;
            }
            tmp = n;
        }
        memcpy(tmp, a, al);
        memcpy(tmp + al, b, bl);
        int32_t ia = tok_find_piece(t, a, al), ib = tok_find_piece(t, b, bl), im = tok_find_piece(t, tmp, al + bl);
        if (ia < 0 || ib < 0 || im < 0) {
            s = kr_fail(KR_ERR_FORMAT, "%s: merge %zu ('%.*s' + '%.*s') uses a token missing from the vocabulary",
                        t->path, i, (int)al, a, (int)bl, b);
            break;
        }
        s = tok_add_merge(t, ia, ib, (int32_t)i, im);
        if (s != KR_OK)
            break;
    }
    free(tmp);
    return s;
}

static kr_status load_model(kr_tokenizer *t, json_t *root) {
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return kr_fail(KR_ERR_FORMAT, "%s: 'model' must be an object", t->path);
    const char *ty = type_of(model);
    if (!ty)
        return kr_fail(KR_ERR_FORMAT, "%s: model has no 'type'", t->path);
    if (strcmp(ty, "BPE") != 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)", t->path, ty);
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab))
        return kr_fail(KR_ERR_FORMAT, "%s: model.vocab must be an object", t->path);
    if (!json_is_array(merges) || json_array_size(merges) == 0)
        return kr_fail(KR_ERR_FORMAT, "%s: BPE model has no merges (model.merges is missing or empty)", t->path);
    const char *prefix = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    const char *suffix = json_string_value(json_object_get(model, "end_of_word_suffix"));
    if ((prefix && *prefix) || (suffix && *suffix))
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: BPE continuing_subword_prefix / end_of_word_suffix are not supported",
                       t->path);
    if (json_is_number(json_object_get(model, "dropout")) && json_number_value(json_object_get(model, "dropout")) > 0)
        return kr_fail(KR_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", t->path);
    int64_t m = -1;
    KR_TRY(max_id(t, vocab, added, &m));
    KR_TRY(tok_alloc_tokens(t, (int32_t)(m + 1)));
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) KR_TRY(tok_set_piece(t, (int32_t)json_integer_value(v), key, strlen(key)));
    KR_TRY(parse_added(t, added));
    KR_TRY(kr_json_opt_bool(model, "ignore_merges", t->path, &t->ignore_merges));
    KR_TRY(kr_json_opt_bool(model, "byte_fallback", t->path, &t->byte_fallback));
    KR_TRY(kr_json_opt_bool(model, "fuse_unk", t->path, &t->fuse_unk));
    /* by_piece is needed to resolve merges; tok_finish builds it (byte tables are rebuilt at the end). */
    KR_TRY(tok_finish(t));
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (unk)
        t->unk_id = tok_find_piece(t, unk, strlen(unk));
    return parse_merges(t, merges);
}

kr_status tok_load_hf(kr_tokenizer *t, const char *path) {
    json_t *root;
    KR_TRY(kr_json_load_file(path, &root));
    t->model = MODEL_BPE;
    kr_status s = KR_OK;
    dec_plan plan = {0};
    /* The pre-tokenizer decides byte_level, which tok_finish needs for the byte table. */
    s = parse_pre(t, json_object_get(root, "pre_tokenizer"));
    if (s == KR_OK)
        s = load_model(t, root);
    if (s == KR_OK)
        s = parse_normalizer(t, json_object_get(root, "normalizer"));
    if (s == KR_OK)
        s = parse_decoder(t, json_object_get(root, "decoder"), &plan, false);
    if (s == KR_OK)
        s = apply_decoder_plan(t, &plan);
    if (s == KR_OK)
        s = parse_post(t, json_object_get(root, "post_processor"));
    for (size_t i = 0; s == KR_OK && i < t->n_prefix + t->n_suffix; i++) {
        int32_t id = i < t->n_prefix ? t->prefix[i] : t->suffix[i - t->n_prefix];
        if (id < 0 || id >= t->n_tokens)
            s = kr_fail(KR_ERR_FORMAT, "%s: post_processor adds id %d outside the vocabulary", path, id);
    }
    if (s == KR_OK && t->n_prefix)
        t->bos = t->prefix[0];
    if (s == KR_OK) /* the decoder changed token bytes: rebuild the bytes index */
        s = tok_finish(t);
    json_decref(root);
    return s;
}
