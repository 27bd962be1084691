/* Template values: the arena they live in, and how Python would print them. A chat template's
 * output is compared byte for byte with jinja2's, so str(), repr() and json.dumps() here follow
 * CPython exactly: True/None, 1.0 vs 1, the shortest float repr, quote choice in string reprs. */
#include "tokenizer/template_impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- arena ---------------------------------------------------------------------------------- */

struct tpl_chunk {
    tpl_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

#define TPL_CHUNK 65536

void *tpl_alloc(tpl_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > TPL_CHUNK / 4 ? n : TPL_CHUNK;
        if (a->limit && (cap > a->limit || a->bytes > a->limit - cap)) {
            a->over_limit = true;
            longjmp(*a->on_oom, 1);
        }
        tpl_chunk *c = malloc(sizeof *c + cap);
        if (!c)
            longjmp(*a->on_oom, 1);
        a->bytes += cap;
        c->cap = cap;
        c->used = 0;
        if (cap == n && a->head) { /* a big block: keep filling the current chunk afterwards */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
        c->used = n;
        memset(c->data, 0, n);
        return c->data;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

char *tpl_strndup(tpl_arena *a, const char *s, size_t n) {
    char *p = tpl_alloc(a, n + 1);
    if (n)
        tpl_memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void tpl_arena_free(tpl_arena *a) {
    for (tpl_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->bytes = 0;
}

void tpl_buf_init(tpl_buf *b, tpl_arena *a) {
    b->a = a;
    b->p = NULL;
    b->n = b->cap = 0;
}

void tpl_buf_add(tpl_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = tpl_alloc(b->a, cap);
        if (b->n)
            tpl_memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n)
        tpl_memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void tpl_buf_adds(tpl_buf *b, const char *s) { tpl_buf_add(b, s, strlen(s)); }
void tpl_buf_addc(tpl_buf *b, char c) { tpl_buf_add(b, &c, 1); }

void tpl_buf_printf(tpl_buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < (int)sizeof tmp) {
        tpl_buf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = tpl_alloc(b->a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    tpl_buf_add(b, big, (size_t)n);
}

/* ---- constructors --------------------------------------------------------------------------- */

tpl_value tpl_undef(const char *hint) { return (tpl_value){.kind = TV_UNDEF, .hint = hint}; }
tpl_value tpl_none(void) { return (tpl_value){.kind = TV_NONE}; }
tpl_value tpl_bool(bool b) { return (tpl_value){.kind = TV_BOOL, .b = b}; }
tpl_value tpl_int(int64_t i) { return (tpl_value){.kind = TV_INT, .i = i}; }
tpl_value tpl_float(double f) { return (tpl_value){.kind = TV_FLOAT, .f = f}; }
tpl_value tpl_str(const char *p, size_t n) { return (tpl_value){.kind = TV_STR, .s = {p ? p : "", n}}; }
tpl_value tpl_cstr(const char *p) { return tpl_str(p, strlen(p)); }
tpl_value tpl_strcopy(tpl_arena *a, const char *p, size_t n) { return tpl_str(tpl_strndup(a, p, n), n); }

tpl_value tpl_list_new(tpl_arena *a, tpl_list_kind kind, size_t n) {
    tpl_list *l = tpl_alloc(a, sizeof *l);
    l->kind = (uint8_t)kind;
    l->n = n;
    l->items = tpl_alloc(a, (n ? n : 1) * sizeof *l->items);
    return (tpl_value){.kind = TV_LIST, .l = l};
}

tpl_value tpl_dict_new(tpl_arena *a, size_t cap) {
    tpl_dict *d = tpl_alloc(a, sizeof *d);
    d->cap = cap ? cap : 4;
    d->keys = tpl_alloc(a, d->cap * sizeof *d->keys);
    d->vals = tpl_alloc(a, d->cap * sizeof *d->vals);
    return (tpl_value){.kind = TV_DICT, .d = d};
}

/* Dicts are small (a message has a handful of keys), so lookups scan; order is insertion order,
 * as in Python. */
const tpl_value *tpl_dict_get(const tpl_dict *d, tpl_value key) {
    for (size_t i = 0; i < d->n; i++)
        if (tpl_equal(d->keys[i], key))
            return &d->vals[i];
    return NULL;
}

const tpl_value *tpl_dict_gets(const tpl_dict *d, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].kind == TV_STR && d->keys[i].s.n == n && memcmp(d->keys[i].s.p, key, n) == 0)
            return &d->vals[i];
    return NULL;
}

void tpl_dict_set(tpl_arena *a, tpl_dict *d, tpl_value key, tpl_value val) {
    tpl_value *slot = (tpl_value *)tpl_dict_get(d, key);
    if (slot) {
        *slot = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        tpl_value *k = tpl_alloc(a, cap * sizeof *k), *v = tpl_alloc(a, cap * sizeof *v);
        tpl_memcpy(k, d->keys, d->n * sizeof *k);
        tpl_memcpy(v, d->vals, d->n * sizeof *v);
        d->keys = k;
        d->vals = v;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
}

/* ---- Python semantics ----------------------------------------------------------------------- */

bool tpl_truthy(tpl_value v) {
    switch (v.kind) {
    case TV_UNDEF:
    case TV_NONE: return false;
    case TV_BOOL: return v.b;
    case TV_INT: return v.i != 0;
    case TV_FLOAT: return v.f != 0.0;
    case TV_STR: return v.s.n != 0;
    case TV_LIST: return v.l->kind == TL_GEN || v.l->n != 0; /* a generator is always true */
    case TV_DICT: return v.d->n != 0;
    default: return true;
    }
}

static bool is_number(tpl_value v) { return v.kind == TV_BOOL || v.kind == TV_INT || v.kind == TV_FLOAT; }

static double num_of(tpl_value v) {
    return v.kind == TV_FLOAT ? v.f : v.kind == TV_INT ? (double)v.i : (double)v.b;
}

bool tpl_equal(tpl_value a, tpl_value b) {
    if (is_number(a) && is_number(b)) {
        if (a.kind != TV_FLOAT && b.kind != TV_FLOAT)
            return (a.kind == TV_INT ? a.i : a.b) == (b.kind == TV_INT ? b.i : b.b);
        return num_of(a) == num_of(b);
    }
    if (a.kind != b.kind)
        return false;
    switch (a.kind) {
    case TV_UNDEF:
    case TV_NONE: return true;
    case TV_STR: return a.s.n == b.s.n && memcmp(a.s.p, b.s.p, a.s.n) == 0;
    case TV_LIST:
        if (a.l == b.l)
            return true;
        if ((a.l->kind == TL_TUPLE) != (b.l->kind == TL_TUPLE) || a.l->kind == TL_GEN || b.l->kind == TL_GEN ||
            a.l->n != b.l->n)
            return false;
        for (size_t i = 0; i < a.l->n; i++)
            if (!tpl_equal(a.l->items[i], b.l->items[i]))
                return false;
        return true;
    case TV_DICT:
        if (a.d->n != b.d->n)
            return false;
        for (size_t i = 0; i < a.d->n; i++) {
            const tpl_value *v = tpl_dict_get(b.d, a.d->keys[i]);
            if (!v || !tpl_equal(a.d->vals[i], *v))
                return false;
        }
        return true;
    case TV_NS: return a.d == b.d;
    case TV_MACRO: return a.m == b.m;
    case TV_FUNC: return a.fn == b.fn;
    case TV_LOOP: return a.loop == b.loop;
    }
    return false;
}

bool tpl_is_str(tpl_value v, const char *s) {
    return v.kind == TV_STR && v.s.n == strlen(s) && memcmp(v.s.p, s, v.s.n) == 0;
}

const char *tpl_type_name(tpl_value v) {
    switch (v.kind) {
    case TV_UNDEF: return "Undefined";
    case TV_NONE: return "NoneType";
    case TV_BOOL: return "bool";
    case TV_INT: return "int";
    case TV_FLOAT: return "float";
    case TV_STR: return "str";
    case TV_LIST:
        switch (v.l->kind) {
        case TL_TUPLE: return "tuple";
        case TL_GEN: return "generator";
        case TL_ITEMS: return "dict_items";
        case TL_KEYS: return "dict_keys";
        case TL_VALUES: return "dict_values";
        }
        return "list";
    case TV_DICT: return "dict";
    case TV_NS: return "Namespace";
    case TV_MACRO: return "Macro";
    case TV_FUNC: return v.fn->type == TF_METHOD ? "builtin_function_or_method" : "function";
    case TV_LOOP: return "LoopContext";
    }
    return "object";
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

uint32_t tpl_utf8_next(const char *s, size_t len, size_t *adv) {
    const unsigned char *p = (const unsigned char *)s;
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(p, (utf8proc_ssize_t)len, &cp);
    if (n <= 0) {
        *adv = 1;
        return p[0];
    }
    *adv = (size_t)n;
    return (uint32_t)cp;
}

size_t tpl_utf8_put(char *dst, uint32_t cp) {
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)dst);
}

/* Counts the steps tpl_utf8_next takes over the string (invalid bytes count one each), so that callers
 * sizing an array with it and then stepping with tpl_utf8_next always agree. */
size_t tpl_utf8_count(const char *p, size_t n) {
    size_t count = 0;
    for (size_t i = 0, adv; i < n; i += adv, count++)
        tpl_utf8_next(p + i, n - i, &adv);
    return count;
}

bool tpl_py_isspace(uint32_t cp) {
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F) || cp == 0x85 || cp == 0xA0)
        return true;
    if (cp < 0x1680)
        return false;
    return cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* str.isprintable(): what repr() leaves unescaped. */
static bool py_isprintable(uint32_t cp) {
    if (cp < 0x20 || cp == 0x7F)
        return false;
    if (cp < 0x7F)
        return true;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return false;
    default: return true;
    }
}

/* ---- str / repr ----------------------------------------------------------------------------- */

/* repr(float): the shortest digits that read back to the same double, laid out as CPython does
 * (exponent form below 1e-4 and from 1e16 on, ".0" on integral values). */
void tpl_float_repr(tpl_buf *out, double f) {
    if (isnan(f)) {
        tpl_buf_adds(out, "nan");
        return;
    }
    if (isinf(f)) {
        tpl_buf_adds(out, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    /* tmp is "-d.ddde[+-]XX": take the digits and the exponent apart */
    char digits[24];
    int nd = 0, neg = tmp[0] == '-';
    const char *p = tmp + neg;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        tpl_buf_addc(out, '-');
    if (exp < -4 || exp >= 16) {
        tpl_buf_addc(out, digits[0]);
        if (nd > 1) {
            tpl_buf_addc(out, '.');
            tpl_buf_add(out, digits + 1, (size_t)nd - 1);
        }
        tpl_buf_printf(out, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    } else if (exp < 0) {
        tpl_buf_adds(out, "0.");
        for (int i = 0; i < -exp - 1; i++)
            tpl_buf_addc(out, '0');
        tpl_buf_add(out, digits, (size_t)nd);
    } else {
        for (int i = 0; i <= exp; i++)
            tpl_buf_addc(out, i < nd ? digits[i] : '0');
        tpl_buf_addc(out, '.');
        if (nd > exp + 1)
            tpl_buf_add(out, digits + exp + 1, (size_t)(nd - exp - 1));
        else
            tpl_buf_addc(out, '0');
    }
}

static void str_repr(tpl_buf *out, const char *s, size_t n) {
    bool has_single = memchr(s, '\'', n) != NULL, has_double = memchr(s, '"', n) != NULL;
    char q = has_single && !has_double ? '"' : '\'';
    tpl_buf_addc(out, q);
    for (size_t i = 0; i < n;) {
        size_t adv;
        uint32_t cp = tpl_utf8_next(s + i, n - i, &adv);
        if (cp == (uint32_t)q || cp == '\\') {
            tpl_buf_addc(out, '\\');
            tpl_buf_addc(out, (char)cp);
        } else if (cp == '\n')
            tpl_buf_adds(out, "\\n");
        else if (cp == '\r')
            tpl_buf_adds(out, "\\r");
        else if (cp == '\t')
            tpl_buf_adds(out, "\\t");
        else if (py_isprintable(cp))
            tpl_buf_add(out, s + i, adv);
        else if (cp < 0x100)
            tpl_buf_printf(out, "\\x%02x", cp);
        else if (cp < 0x10000)
            tpl_buf_printf(out, "\\u%04x", cp);
        else
            tpl_buf_printf(out, "\\U%08x", cp);
        i += adv;
    }
    tpl_buf_addc(out, q);
}

static kr_status repr_items(tpl_buf *out, const tpl_list *l, const char *open, const char *close) {
    tpl_buf_adds(out, open);
    for (size_t i = 0; i < l->n; i++) {
        if (i)
            tpl_buf_adds(out, ", ");
        KR_TRY(tpl_repr(out, l->items[i]));
    }
    if (l->kind == TL_TUPLE && l->n == 1)
        tpl_buf_addc(out, ',');
    tpl_buf_adds(out, close);
    return KR_OK;
}

static kr_status repr_dict(tpl_buf *out, const tpl_dict *d) {
    tpl_buf_addc(out, '{');
    for (size_t i = 0; i < d->n; i++) {
        if (i)
            tpl_buf_adds(out, ", ");
        KR_TRY(tpl_repr(out, d->keys[i]));
        tpl_buf_adds(out, ": ");
        KR_TRY(tpl_repr(out, d->vals[i]));
    }
    tpl_buf_addc(out, '}');
    return KR_OK;
}

kr_status tpl_repr(tpl_buf *out, tpl_value v) {
    switch (v.kind) {
    case TV_UNDEF: tpl_buf_adds(out, "Undefined"); return KR_OK;
    case TV_NONE: tpl_buf_adds(out, "None"); return KR_OK;
    case TV_BOOL: tpl_buf_adds(out, v.b ? "True" : "False"); return KR_OK;
    case TV_INT: tpl_buf_printf(out, "%lld", (long long)v.i); return KR_OK;
    case TV_FLOAT: tpl_float_repr(out, v.f); return KR_OK;
    case TV_STR: str_repr(out, v.s.p, v.s.n); return KR_OK;
    case TV_LIST:
        switch (v.l->kind) {
        case TL_LIST: return repr_items(out, v.l, "[", "]");
        case TL_TUPLE: return repr_items(out, v.l, "(", ")");
        case TL_ITEMS: return repr_items(out, v.l, "dict_items([", "])");
        case TL_KEYS: return repr_items(out, v.l, "dict_keys([", "])");
        case TL_VALUES: return repr_items(out, v.l, "dict_values([", "])");
        default: break;
        }
        return kr_fail(KR_ERR_UNSUPPORTED, "printing a generator (Python prints its memory address); use |list");
    case TV_DICT: return repr_dict(out, v.d);
    case TV_NS:
        tpl_buf_adds(out, "<Namespace ");
        KR_TRY(repr_dict(out, v.d));
        tpl_buf_addc(out, '>');
        return KR_OK;
    case TV_LOOP:
        tpl_buf_printf(out, "<LoopContext %lld/%lld>", (long long)v.loop->index0 + 1, (long long)v.loop->length);
        return KR_OK;
    default: break;
    }
    return kr_fail(KR_ERR_UNSUPPORTED, "printing a %s (Python prints its memory address)", tpl_type_name(v));
}

kr_status tpl_to_str(tpl_buf *out, tpl_value v) {
    if (v.kind == TV_STR) {
        tpl_buf_add(out, v.s.p, v.s.n);
        return KR_OK;
    }
    if (v.kind == TV_UNDEF)
        return KR_OK;
    return tpl_repr(out, v);
}

/* ---- json.dumps ----------------------------------------------------------------------------- */

static void json_quote(tpl_buf *out, const char *s, size_t n, bool ensure_ascii) {
    tpl_buf_addc(out, '"');
    for (size_t i = 0; i < n;) {
        size_t adv;
        uint32_t cp = tpl_utf8_next(s + i, n - i, &adv);
        switch (cp) {
        case '"': tpl_buf_adds(out, "\\\""); break;
        case '\\': tpl_buf_adds(out, "\\\\"); break;
        case '\n': tpl_buf_adds(out, "\\n"); break;
        case '\r': tpl_buf_adds(out, "\\r"); break;
        case '\t': tpl_buf_adds(out, "\\t"); break;
        case '\b': tpl_buf_adds(out, "\\b"); break;
        case '\f': tpl_buf_adds(out, "\\f"); break;
        default:
            if (cp < 0x20 || (ensure_ascii && cp > 0x7E)) {
                if (cp >= 0x10000) {
                    uint32_t c = cp - 0x10000;
                    tpl_buf_printf(out, "\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
                } else
                    tpl_buf_printf(out, "\\u%04x", cp);
            } else
                tpl_buf_add(out, s + i, adv);
        }
        i += adv;
    }
    tpl_buf_addc(out, '"');
}

static void json_newline(tpl_buf *out, const tpl_json_opts *o, int level) {
    tpl_buf_addc(out, '\n');
    for (int i = 0; i < o->indent * level; i++)
        tpl_buf_addc(out, ' ');
}

static int compare_keys(const void *a, const void *b) {
    const tpl_value *x = *(const tpl_value *const *)a, *y = *(const tpl_value *const *)b;
    size_t n = x->s.n < y->s.n ? x->s.n : y->s.n;
    int c = memcmp(x->s.p, y->s.p, n);
    return c ? c : (x->s.n > y->s.n) - (x->s.n < y->s.n);
}

static kr_status json_dict(tpl_buf *out, const tpl_dict *d, const tpl_json_opts *o, int level) {
    if (d->n == 0) {
        tpl_buf_adds(out, "{}");
        return KR_OK;
    }
    size_t *order = tpl_alloc(out->a, d->n * sizeof *order);
    for (size_t i = 0; i < d->n; i++) {
        order[i] = i;
        if (d->keys[i].kind != TV_STR && o->sort_keys)
            return kr_fail(KR_ERR_UNSUPPORTED, "tojson(sort_keys=true) with non-string keys");
    }
    if (o->sort_keys) {
        const tpl_value **ks = tpl_alloc(out->a, d->n * sizeof *ks);
        for (size_t i = 0; i < d->n; i++)
            ks[i] = &d->keys[i];
        qsort(ks, d->n, sizeof *ks, compare_keys);
        for (size_t i = 0; i < d->n; i++)
            order[i] = (size_t)(ks[i] - d->keys);
    }
    tpl_buf_addc(out, '{');
    for (size_t j = 0; j < d->n; j++) {
        size_t i = order[j];
        if (j)
            tpl_buf_adds(out, o->item_sep);
        if (o->indent >= 0)
            json_newline(out, o, level + 1);
        tpl_value k = d->keys[i];
        if (k.kind == TV_STR)
            json_quote(out, k.s.p, k.s.n, o->ensure_ascii);
        else if (k.kind == TV_INT || k.kind == TV_FLOAT || k.kind == TV_BOOL || k.kind == TV_NONE) {
            tpl_buf tmp;
            tpl_buf_init(&tmp, out->a);
            KR_TRY(tpl_to_json(&tmp, k, o, 0));
            json_quote(out, tmp.p, tmp.n, false);
        } else
            return kr_fail(KR_ERR_ARG, "keys must be str, int, float, bool or None, not %s", tpl_type_name(k));
        tpl_buf_adds(out, o->key_sep);
        KR_TRY(tpl_to_json(out, d->vals[i], o, level + 1));
    }
    if (o->indent >= 0)
        json_newline(out, o, level);
    tpl_buf_addc(out, '}');
    return KR_OK;
}

kr_status tpl_to_json(tpl_buf *out, tpl_value v, const tpl_json_opts *o, int level) {
    switch (v.kind) {
    case TV_NONE: tpl_buf_adds(out, "null"); return KR_OK;
    case TV_BOOL: tpl_buf_adds(out, v.b ? "true" : "false"); return KR_OK;
    case TV_INT: tpl_buf_printf(out, "%lld", (long long)v.i); return KR_OK;
    case TV_FLOAT:
        if (isnan(v.f))
            tpl_buf_adds(out, "NaN");
        else if (isinf(v.f))
            tpl_buf_adds(out, v.f < 0 ? "-Infinity" : "Infinity");
        else
            tpl_float_repr(out, v.f);
        return KR_OK;
    case TV_STR: json_quote(out, v.s.p, v.s.n, o->ensure_ascii); return KR_OK;
    case TV_LIST:
        if (v.l->kind != TL_LIST && v.l->kind != TL_TUPLE)
            break;
        if (v.l->n == 0) {
            tpl_buf_adds(out, "[]");
            return KR_OK;
        }
        tpl_buf_addc(out, '[');
        for (size_t i = 0; i < v.l->n; i++) {
            if (i)
                tpl_buf_adds(out, o->item_sep);
            if (o->indent >= 0)
                json_newline(out, o, level + 1);
            KR_TRY(tpl_to_json(out, v.l->items[i], o, level + 1));
        }
        if (o->indent >= 0)
            json_newline(out, o, level);
        tpl_buf_addc(out, ']');
        return KR_OK;
    case TV_DICT: return json_dict(out, v.d, o, level);
    default: break;
    }
    return kr_fail(KR_ERR_ARG, "Object of type %s is not JSON serializable", tpl_type_name(v));
}

/* ---- from JSON ------------------------------------------------------------------------------ */

tpl_value tpl_from_json(tpl_arena *a, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        tpl_value d = tpl_dict_new(a, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            tpl_dict_set(a, d.d, tpl_strcopy(a, k, strlen(k)), tpl_from_json(a, v));
        }
        return d;
    }
    case JSON_ARRAY: {
        tpl_value l = tpl_list_new(a, TL_LIST, json_array_size(j));
        for (size_t i = 0; i < l.l->n; i++)
            l.l->items[i] = tpl_from_json(a, json_array_get(j, i));
        return l;
    }
    case JSON_STRING: return tpl_strcopy(a, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return tpl_int(json_integer_value(j));
    case JSON_REAL: return tpl_float(json_real_value(j));
    case JSON_TRUE: return tpl_bool(true);
    case JSON_FALSE: return tpl_bool(false);
    case JSON_NULL: break;
    }
    return tpl_none();
}
