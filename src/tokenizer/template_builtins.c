/* The filters, tests, methods and globals a chat template can call, each as jinja2 3.1 (under
 * transformers' ImmutableSandboxedEnvironment) defines it. Python methods of str/dict/list that are
 * not implemented here fail with "unsupported"; the ones the immutable sandbox forbids (append, pop,
 * update...) fail with the sandbox's SecurityError, as they do under transformers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "tokenizer/template_impl.h"

/* ---- arguments ------------------------------------------------------------------------------ */

/* Argument `idx` (positional) or `name` (keyword) of a call; false when absent. */
static bool arg(const tpl_args *a, size_t idx, const char *name, tpl_value *out) {
    if (idx < a->npos) {
        *out = a->pos[idx];
        return true;
    }
    for (size_t i = 0; name && i < a->nkw; i++)
        if (!strcmp(a->kwnames[i], name)) {
            *out = a->kwvals[i];
            return true;
        }
    return false;
}

/* Every keyword must be one of `names` (NULL-terminated) and at most `max_pos` positionals. */
static kr_status check_args(tpl_render *r, int line, const char *what, const tpl_args *a, size_t max_pos,
                            const char *const *names) {
    if (a->npos > max_pos)
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s takes at most %zu positional argument(s), got %zu", what, max_pos,
                        a->npos);
    for (size_t i = 0; i < a->nkw; i++) {
        bool ok = false;
        for (size_t k = 0; names && names[k]; k++)
            ok |= !strcmp(names[k], a->kwnames[i]);
        if (!ok)
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s got an unexpected keyword argument '%s'", what, a->kwnames[i]);
    }
    return KR_OK;
}

static kr_status want_str(tpl_render *r, int line, const char *what, tpl_value v) {
    if (v.kind == TV_STR)
        return KR_OK;
    if (v.kind == TV_UNDEF)
        return tpl_undef_error(r, line, v);
    return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s must be str, not %s", what, tpl_type_name(v));
}

static kr_status want_int(tpl_render *r, int line, const char *what, tpl_value v, int64_t *out) {
    if (v.kind == TV_INT || v.kind == TV_BOOL) {
        *out = v.kind == TV_INT ? v.i : v.b;
        return KR_OK;
    }
    if (v.kind == TV_UNDEF)
        return tpl_undef_error(r, line, v);
    return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s must be an integer, not %s", what, tpl_type_name(v));
}

static tpl_value list_of(tpl_render *r, tpl_list_kind kind, const tpl_value *items, size_t n) {
    tpl_value l = tpl_list_new(&r->arena, kind, n);
    if (n)
        tpl_memcpy(l.l->items, items, n * sizeof *items);
    return l;
}

static tpl_value tuple2(tpl_render *r, tpl_value a, tpl_value b) {
    tpl_value t = tpl_list_new(&r->arena, TL_TUPLE, 2);
    t.l->items[0] = a;
    t.l->items[1] = b;
    return t;
}

/* ---- string helpers ------------------------------------------------------------------------- */

typedef struct {
    uint32_t *cp;
    size_t n;
} codepoints;

static codepoints decode(tpl_render *r, tpl_value s) {
    codepoints c = {tpl_alloc(&r->arena, (s.s.n + 1) * sizeof(uint32_t)), 0};
    for (size_t i = 0; i < s.s.n;) {
        size_t adv;
        c.cp[c.n++] = tpl_utf8_next(s.s.p + i, s.s.n - i, &adv);
        i += adv;
    }
    return c;
}

static tpl_value encode(tpl_render *r, const uint32_t *cp, size_t n) {
    char *p = tpl_alloc(&r->arena, n * 4 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += tpl_utf8_put(p + k, cp[i]);
    return tpl_str(p, k);
}

static bool has_substr_at(tpl_value s, size_t at, tpl_value sub) {
    return at + sub.s.n <= s.s.n && memcmp(s.s.p + at, sub.s.p, sub.s.n) == 0;
}

static bool cp_in(uint32_t c, const codepoints *set) {
    for (size_t i = 0; i < set->n; i++)
        if (set->cp[i] == c)
            return true;
    return false;
}

/* str.strip/lstrip/rstrip: `chars` absent or None strips whitespace. */
static kr_status py_strip(tpl_render *r, int line, tpl_value s, tpl_value *chars, bool left, bool right, tpl_value *out) {
    codepoints c = decode(r, s), set = {0};
    bool ws = !chars || chars->kind == TV_NONE;
    if (!ws) {
        KR_TRY(want_str(r, line, "strip arg", *chars));
        set = decode(r, *chars);
    }
    size_t b = 0, e = c.n;
    while (left && b < e && (ws ? tpl_py_isspace(c.cp[b]) : cp_in(c.cp[b], &set)))
        b++;
    while (right && e > b && (ws ? tpl_py_isspace(c.cp[e - 1]) : cp_in(c.cp[e - 1], &set)))
        e--;
    *out = encode(r, c.cp + b, e - b);
    return KR_OK;
}

static tpl_value map_case(tpl_render *r, tpl_value s, int mode) {
    codepoints c = decode(r, s);
    bool prev_cased = false;
    for (size_t i = 0; i < c.n; i++) {
        utf8proc_int32_t x = (utf8proc_int32_t)c.cp[i];
        switch (mode) {
        case 0: c.cp[i] = (uint32_t)utf8proc_tolower(x); break;
        case 1: c.cp[i] = (uint32_t)utf8proc_toupper(x); break;
        case 2: c.cp[i] = (uint32_t)(i == 0 ? utf8proc_totitle(x) : utf8proc_tolower(x)); break; /* capitalize */
        case 3: { /* str.title(): a cased letter after an uncased character starts a word */
            utf8proc_category_t cat = utf8proc_category(x);
            bool cased = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
            c.cp[i] = (uint32_t)(prev_cased ? utf8proc_tolower(x) : utf8proc_totitle(x));
            prev_cased = cased;
            break;
        }
        }
    }
    return encode(r, c.cp, c.n);
}

/* str.split / str.rsplit. */
static kr_status py_split(tpl_render *r, int line, tpl_value s, tpl_args *a, bool from_right, tpl_value *out) {
    static const char *const names[] = {"sep", "maxsplit", NULL};
    KR_TRY(check_args(r, line, from_right ? "rsplit()" : "split()", a, 2, names));
    tpl_value sep = tpl_none(), maxv;
    arg(a, 0, "sep", &sep);
    int64_t maxsplit = -1;
    if (arg(a, 1, "maxsplit", &maxv))
        KR_TRY(want_int(r, line, "maxsplit", maxv, &maxsplit));
    tpl_value parts[1];
    (void)parts;
    size_t cap = 8, n = 0;
    tpl_value *items = tpl_alloc(&r->arena, cap * sizeof *items);
#define PUSH(v)                                                              \
    do {                                                                     \
        if (n == cap) {                                                      \
            tpl_value *g = tpl_alloc(&r->arena, cap * 2 * sizeof *g);        \
            tpl_memcpy(g, items, n * sizeof *g);                                 \
            items = g;                                                       \
            cap *= 2;                                                        \
        }                                                                    \
        items[n++] = (v);                                                    \
    } while (0)
    if (sep.kind == TV_NONE) {
        codepoints c = decode(r, s);
        if (!from_right) {
            size_t i = 0;
            while (i < c.n) {
                while (i < c.n && tpl_py_isspace(c.cp[i]))
                    i++;
                if (i == c.n)
                    break;
                if (maxsplit >= 0 && (int64_t)n == maxsplit) { /* the rest, trailing spaces included */
                    PUSH(encode(r, c.cp + i, c.n - i));
                    break;
                }
                size_t j = i;
                while (j < c.n && !tpl_py_isspace(c.cp[j]))
                    j++;
                PUSH(encode(r, c.cp + i, j - i));
                i = j;
            }
        } else {
            size_t e = c.n;
            while (e > 0) {
                while (e > 0 && tpl_py_isspace(c.cp[e - 1]))
                    e--;
                if (e == 0)
                    break;
                if (maxsplit >= 0 && (int64_t)n == maxsplit) { /* the rest, leading spaces included */
                    PUSH(encode(r, c.cp, e));
                    break;
                }
                size_t j = e;
                while (j > 0 && !tpl_py_isspace(c.cp[j - 1]))
                    j--;
                PUSH(encode(r, c.cp + j, e - j));
                e = j;
            }
            for (size_t i = 0; i < n / 2; i++) {
                tpl_value t = items[i];
                items[i] = items[n - 1 - i];
                items[n - 1 - i] = t;
            }
        }
    } else {
        KR_TRY(want_str(r, line, "separator", sep));
        if (sep.s.n == 0)
            return tpl_fail(r, line, KR_ERR_ARG, "ValueError: empty separator");
        if (!from_right) {
            size_t start = 0, i = 0;
            while (i + sep.s.n <= s.s.n && (maxsplit < 0 || (int64_t)n < maxsplit)) {
                if (has_substr_at(s, i, sep)) {
                    PUSH(tpl_str(s.s.p + start, i - start));
                    i += sep.s.n;
                    start = i;
                } else
                    i++;
            }
            PUSH(tpl_str(s.s.p + start, s.s.n - start));
        } else {
            size_t end = s.s.n;
            int64_t i = (int64_t)s.s.n - (int64_t)sep.s.n;
            while (i >= 0 && (maxsplit < 0 || (int64_t)n < maxsplit)) {
                if (has_substr_at(s, (size_t)i, sep)) {
                    PUSH(tpl_str(s.s.p + i + sep.s.n, end - (size_t)i - sep.s.n));
                    end = (size_t)i;
                    i -= (int64_t)sep.s.n;
                } else
                    i--;
            }
            PUSH(tpl_str(s.s.p, end));
            for (size_t k = 0; k < n / 2; k++) {
                tpl_value t = items[k];
                items[k] = items[n - 1 - k];
                items[n - 1 - k] = t;
            }
        }
    }
#undef PUSH
    *out = list_of(r, TL_LIST, items, n);
    return KR_OK;
}

static kr_status py_replace(tpl_render *r, int line, tpl_value s, tpl_value old, tpl_value new_, int64_t count,
                            tpl_value *out) {
    KR_TRY(want_str(r, line, "replace() argument 1", old));
    KR_TRY(want_str(r, line, "replace() argument 2", new_));
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    int64_t done = 0;
    if (old.s.n == 0) { /* Python inserts `new` before every character and at the end */
        for (size_t i = 0; i <= s.s.n;) {
            if (count < 0 || done < count) {
                tpl_buf_add(&b, new_.s.p, new_.s.n);
                done++;
            }
            if (i == s.s.n)
                break;
            size_t adv;
            tpl_utf8_next(s.s.p + i, s.s.n - i, &adv);
            tpl_buf_add(&b, s.s.p + i, adv);
            i += adv;
        }
    } else {
        size_t i = 0;
        while (i < s.s.n) {
            if ((count < 0 || done < count) && has_substr_at(s, i, old)) {
                tpl_buf_add(&b, new_.s.p, new_.s.n);
                i += old.s.n;
                done++;
            } else
                tpl_buf_addc(&b, s.s.p[i++]);
        }
    }
    *out = tpl_str(b.p ? b.p : "", b.n);
    return KR_OK;
}

static int64_t py_find(tpl_value s, tpl_value sub, bool from_right) {
    if (sub.s.n > s.s.n)
        return -1;
    size_t last = s.s.n - sub.s.n;
    for (size_t k = 0; k <= last; k++) {
        size_t i = from_right ? last - k : k;
        if (has_substr_at(s, i, sub))
            return (int64_t)tpl_utf8_count(s.s.p, i);
    }
    return -1;
}

static bool affix_matches(tpl_value s, tpl_value affix, bool at_end) {
    if (affix.s.n > s.s.n)
        return false;
    return memcmp(s.s.p + (at_end ? s.s.n - affix.s.n : 0), affix.s.p, affix.s.n) == 0;
}

/* str.startswith / endswith with a string or a tuple of strings. */
static kr_status py_affix(tpl_render *r, int line, tpl_value s, tpl_args *a, bool at_end, tpl_value *out) {
    KR_TRY(check_args(r, line, at_end ? "endswith()" : "startswith()", a, 1, NULL));
    tpl_value x;
    if (!arg(a, 0, NULL, &x))
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s() takes at least 1 argument", at_end ? "endswith" : "startswith");
    if (x.kind == TV_LIST && x.l->kind == TL_TUPLE) {
        bool any = false;
        for (size_t i = 0; i < x.l->n; i++) {
            KR_TRY(want_str(r, line, "tuple item", x.l->items[i]));
            any |= affix_matches(s, x.l->items[i], at_end);
        }
        *out = tpl_bool(any);
        return KR_OK;
    }
    if (x.kind != TV_STR)
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s first arg must be str or a tuple of str, not %s",
                        at_end ? "endswith" : "startswith", tpl_type_name(x));
    *out = tpl_bool(affix_matches(s, x, at_end));
    return KR_OK;
}

static bool all_cp(tpl_render *r, tpl_value s, int kind) {
    codepoints c = decode(r, s);
    if (c.n == 0)
        return false;
    bool any_cased = false;
    for (size_t i = 0; i < c.n; i++) {
        utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c.cp[i]);
        bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        bool digit = cat == UTF8PROC_CATEGORY_ND;
        bool numeric = digit || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
        switch (kind) {
        case 0: if (!digit) return false; break;             /* isdigit (Nd) */
        case 1: if (!letter) return false; break;            /* isalpha */
        case 2: if (!letter && !numeric) return false; break; /* isalnum */
        case 3: if (!tpl_py_isspace(c.cp[i])) return false; break;
        case 4: /* islower */
            if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT)
                return false;
            any_cased |= cat == UTF8PROC_CATEGORY_LL;
            break;
        case 5: /* isupper */
            if (cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT)
                return false;
            any_cased |= cat == UTF8PROC_CATEGORY_LU;
            break;
        }
    }
    return kind < 4 ? true : any_cased;
}

/* str.format with {} / {0} / {name} fields and no format specs. */
static kr_status py_format_method(tpl_render *r, int line, tpl_value fmt, tpl_args *a, tpl_value *out) {
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    size_t auto_idx = 0;
    for (size_t i = 0; i < fmt.s.n; i++) {
        char c = fmt.s.p[i];
        if ((c == '{' || c == '}') && i + 1 < fmt.s.n && fmt.s.p[i + 1] == c) {
            tpl_buf_addc(&b, c);
            i++;
            continue;
        }
        if (c == '}')
            return tpl_fail(r, line, KR_ERR_ARG, "ValueError: Single '}' encountered in format string");
        if (c != '{') {
            tpl_buf_addc(&b, c);
            continue;
        }
        size_t j = i + 1;
        while (j < fmt.s.n && fmt.s.p[j] != '}')
            j++;
        if (j == fmt.s.n)
            return tpl_fail(r, line, KR_ERR_ARG, "ValueError: Single '{' encountered in format string");
        const char *field = fmt.s.p + i + 1;
        size_t flen = j - i - 1;
        for (size_t k = 0; k < flen; k++)
            if (field[k] == ':' || field[k] == '!' || field[k] == '.' || field[k] == '[')
                return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: format spec or conversion in str.format field '{%.*s}'",
                                (int)flen, field);
        tpl_value v;
        bool found;
        if (flen == 0)
            found = arg(a, auto_idx++, NULL, &v);
        else if (field[0] >= '0' && field[0] <= '9')
            found = arg(a, (size_t)atoi(field), NULL, &v);
        else {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)flen, field);
            found = arg(a, SIZE_MAX, name, &v);
        }
        if (!found)
            return tpl_fail(r, line, KR_ERR_ARG, "IndexError/KeyError: format field '{%.*s}' has no argument", (int)flen, field);
        tpl_value sv;
        KR_TRY(tpl_str_of(r, line, v, &sv));
        tpl_buf_add(&b, sv.s.p, sv.s.n);
        i = j;
    }
    *out = tpl_str(b.p ? b.p : "", b.n);
    return KR_OK;
}

/* `fmt % args` with %s, %r, %d/%i and %%. */
static kr_status py_percent_format(tpl_render *r, int line, tpl_value fmt, tpl_value *vals, size_t nvals, tpl_value *out) {
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    size_t k = 0;
    for (size_t i = 0; i < fmt.s.n; i++) {
        if (fmt.s.p[i] != '%') {
            tpl_buf_addc(&b, fmt.s.p[i]);
            continue;
        }
        char c = i + 1 < fmt.s.n ? fmt.s.p[++i] : 0;
        if (c == '%') {
            tpl_buf_addc(&b, '%');
            continue;
        }
        if (c != 's' && c != 'r' && c != 'd' && c != 'i')
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: '%%%c' in a %% format", c ? c : '?');
        if (k >= nvals)
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: not enough arguments for format string");
        tpl_value v = vals[k++];
        if (c == 's')
            KR_TRY(tpl_to_str(&b, v));
        else if (c == 'r')
            KR_TRY(tpl_repr(&b, v));
        else {
            if (v.kind == TV_FLOAT)
                v = tpl_int((int64_t)v.f);
            int64_t x = 0;
            KR_TRY(want_int(r, line, "%d argument", v, &x));
            tpl_buf_printf(&b, "%lld", (long long)x);
        }
    }
    if (k < nvals)
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: not all arguments converted during string formatting");
    *out = tpl_str(b.p ? b.p : "", b.n);
    return KR_OK;
}

static tpl_value pad_center(tpl_render *r, tpl_value s, int64_t width, uint32_t fill, int how) {
    size_t len = tpl_utf8_count(s.s.p, s.s.n);
    if (width <= (int64_t)len)
        return s;
    size_t total = (size_t)width - len, left;
    if (how == 0) /* center: CPython puts the extra space on the left when the string length is odd */
        left = total / 2 + (total & (size_t)width & 1);
    else
        left = how == 1 ? 0 : total; /* ljust / rjust */
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    char f[4];
    size_t fn = tpl_utf8_put(f, fill);
    for (size_t i = 0; i < left; i++)
        tpl_buf_add(&b, f, fn);
    tpl_buf_add(&b, s.s.p, s.s.n);
    for (size_t i = left; i < total; i++)
        tpl_buf_add(&b, f, fn);
    return tpl_str(b.p, b.n);
}

/* ---- methods -------------------------------------------------------------------------------- */

static const char *const str_methods[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format", "format_map",
    "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
    "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition",
    "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split",
    "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill", NULL};
static const char *const dict_methods[] = {"clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem",
                                           "setdefault", "update", "values", NULL};
static const char *const list_methods[] = {"append", "clear", "copy", "count", "extend", "index", "insert", "pop",
                                           "remove", "reverse", "sort", NULL};
static const char *const number_attrs[] = {"as_integer_ratio", "bit_count", "bit_length", "conjugate", "denominator",
                                           "from_bytes", "fromhex", "hex", "imag", "is_integer", "numerator", "real",
                                           "to_bytes", NULL};
/* What ImmutableSandboxedEnvironment refuses: the methods that modify a list or dict. */
static const char *const unsafe_list[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort", NULL};
static const char *const unsafe_dict[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};

static bool in_names(const char *const *names, const char *s) {
    for (size_t i = 0; names[i]; i++)
        if (!strcmp(names[i], s))
            return true;
    return false;
}

static tpl_value method(tpl_render *r, tpl_value self, const char *name) {
    tpl_func *f = tpl_alloc(&r->arena, sizeof *f);
    f->type = TF_METHOD;
    f->name = name;
    f->self = self;
    return (tpl_value){.kind = TV_FUNC, .fn = f};
}

static const char *type_repr(tpl_value v) {
    /* jinja2's object_type_repr: "None" for None, else "<type> object" */
    switch (v.kind) {
    case TV_NONE: return "None";
    case TV_NS: return "jinja2.utils.Namespace object";
    case TV_LOOP: return "jinja2.runtime.LoopContext object";
    case TV_MACRO: return "jinja2.runtime.Macro object";
    default: break;
    }
    return NULL;
}

static tpl_value no_attribute(tpl_render *r, tpl_value obj, const char *name) {
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    const char *t = type_repr(obj);
    if (t)
        tpl_buf_printf(&b, "'%s' has no attribute '%s'", t, name);
    else
        tpl_buf_printf(&b, "'%s object' has no attribute '%s'", tpl_type_name(obj), name);
    return tpl_undef(b.p);
}

static tpl_value unsafe(tpl_render *r, tpl_value obj, const char *name) {
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    tpl_buf_printf(&b, TPL_UNSAFE_PREFIX "'%s' of '%s' object is unsafe.", name, tpl_type_name(obj));
    return tpl_undef(b.p);
}

/* The Python attribute `name` of obj, if it has one: *found false when it does not. */
static kr_status python_attr(tpl_render *r, int line, tpl_value obj, const char *name, bool *found, tpl_value *out) {
    *found = true;
    if (name[0] == '_') { /* the sandbox refuses every underscore attribute */
        *out = unsafe(r, obj, name);
        return KR_OK;
    }
    const char *const *methods = NULL;
    switch (obj.kind) {
    case TV_STR: methods = str_methods; break;
    case TV_DICT: methods = dict_methods; break;
    case TV_LIST:
        if (obj.l->kind == TL_LIST)
            methods = list_methods;
        else if (obj.l->kind == TL_TUPLE && (!strcmp(name, "count") || !strcmp(name, "index"))) {
            *out = method(r, obj, name);
            return KR_OK;
        }
        break;
    case TV_INT:
    case TV_FLOAT:
    case TV_BOOL:
        if (in_names(number_attrs, name))
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported attribute '%s' of a %s", name, tpl_type_name(obj));
        break;
    case TV_LOOP: {
        tpl_loop *l = obj.loop;
        if (!strcmp(name, "index")) *out = tpl_int(l->index0 + 1);
        else if (!strcmp(name, "index0")) *out = tpl_int(l->index0);
        else if (!strcmp(name, "revindex")) *out = tpl_int(l->length - l->index0);
        else if (!strcmp(name, "revindex0")) *out = tpl_int(l->length - l->index0 - 1);
        else if (!strcmp(name, "first")) *out = tpl_bool(l->index0 == 0);
        else if (!strcmp(name, "last")) *out = tpl_bool(l->index0 == l->length - 1);
        else if (!strcmp(name, "length")) *out = tpl_int(l->length);
        else if (!strcmp(name, "previtem")) *out = l->prev;
        else if (!strcmp(name, "nextitem")) *out = l->next;
        else if (!strcmp(name, "depth")) *out = tpl_int(1);
        else if (!strcmp(name, "depth0")) *out = tpl_int(0);
        else if (!strcmp(name, "cycle")) *out = method(r, obj, name);
        else if (!strcmp(name, "changed"))
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: loop.changed");
        else
            *found = false;
        return KR_OK;
    }
    case TV_NS: {
        const tpl_value *v = tpl_dict_gets(obj.d, name);
        if (v)
            *out = *v;
        else
            *found = false;
        return KR_OK;
    }
    default: break;
    }
    if (methods && in_names(methods, name)) {
        if ((obj.kind == TV_LIST && in_names(unsafe_list, name)) || (obj.kind == TV_DICT && in_names(unsafe_dict, name)))
            *out = unsafe(r, obj, name);
        else
            *out = method(r, obj, name);
        return KR_OK;
    }
    *found = false;
    return KR_OK;
}

/* obj[key] as Python does it; *found false on KeyError/IndexError/TypeError. */
static void python_item(tpl_render *r, tpl_value obj, tpl_value key, bool *found, tpl_value *out) {
    *found = false;
    if (obj.kind == TV_DICT) {
        const tpl_value *v = tpl_dict_get(obj.d, key);
        if (v) {
            *out = *v;
            *found = true;
        }
        return;
    }
    if (key.kind != TV_INT && key.kind != TV_BOOL)
        return;
    int64_t i = key.kind == TV_INT ? key.i : key.b;
    if (obj.kind == TV_LIST && (obj.l->kind == TL_LIST || obj.l->kind == TL_TUPLE)) {
        int64_t n = (int64_t)obj.l->n;
        if (i < 0)
            i += n;
        if (i >= 0 && i < n) {
            *out = obj.l->items[i];
            *found = true;
        }
    } else if (obj.kind == TV_STR) {
        int64_t n = (int64_t)tpl_utf8_count(obj.s.p, obj.s.n);
        if (i < 0)
            i += n;
        if (i < 0 || i >= n)
            return;
        size_t off = 0;
        for (int64_t k = 0; k < i; k++) {
            size_t adv;
            tpl_utf8_next(obj.s.p + off, obj.s.n - off, &adv);
            off += adv;
        }
        size_t adv;
        tpl_utf8_next(obj.s.p + off, obj.s.n - off, &adv);
        *out = tpl_str(obj.s.p + off, adv);
        *found = true;
    }
}

kr_status tpl_getattr(tpl_render *r, int line, tpl_value obj, const char *name, tpl_value *out) {
    if (obj.kind == TV_UNDEF)
        return tpl_undef_error(r, line, obj);
    bool found;
    KR_TRY(python_attr(r, line, obj, name, &found, out));
    if (found)
        return KR_OK;
    python_item(r, obj, tpl_cstr(name), &found, out);
    if (!found)
        *out = no_attribute(r, obj, name);
    return KR_OK;
}

kr_status tpl_getitem(tpl_render *r, int line, tpl_value obj, tpl_value key, tpl_value *out) {
    if (obj.kind == TV_UNDEF)
        return tpl_undef_error(r, line, obj);
    bool found;
    python_item(r, obj, key, &found, out);
    if (found)
        return KR_OK;
    if (key.kind == TV_STR) {
        char *name = tpl_strndup(&r->arena, key.s.p, key.s.n);
        KR_TRY(python_attr(r, line, obj, name, &found, out));
        if (found)
            return KR_OK;
        *out = no_attribute(r, obj, name);
        return KR_OK;
    }
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    tpl_buf_printf(&b, "'%s object' has no element ", tpl_type_name(obj));
    KR_TRY(tpl_repr(&b, key));
    *out = tpl_undef(b.p);
    return KR_OK;
}

static kr_status str_method(tpl_render *r, int line, tpl_value s, const char *name, tpl_args *a, tpl_value *out) {
    tpl_value x, y;
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith"))
        return py_affix(r, line, s, a, name[0] == 'e', out);
    if (!strcmp(name, "split") || !strcmp(name, "rsplit"))
        return py_split(r, line, s, a, name[0] == 'r', out);
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        KR_TRY(check_args(r, line, name, a, 1, NULL));
        bool has = arg(a, 0, NULL, &x);
        return py_strip(r, line, s, has ? &x : NULL, name[0] != 'r', name[0] != 'l', out);
    }
    if (!strcmp(name, "lower") || !strcmp(name, "upper") || !strcmp(name, "capitalize") || !strcmp(name, "title")) {
        KR_TRY(check_args(r, line, name, a, 0, NULL));
        *out = map_case(r, s, name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : name[0] == 'c' ? 2 : 3);
        return KR_OK;
    }
    if (!strcmp(name, "replace")) {
        KR_TRY(check_args(r, line, name, a, 3, NULL));
        if (!arg(a, 0, NULL, &x) || !arg(a, 1, NULL, &y))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: replace expected at least 2 arguments");
        int64_t count = -1;
        tpl_value c;
        if (arg(a, 2, NULL, &c))
            KR_TRY(want_int(r, line, "count", c, &count));
        return py_replace(r, line, s, x, y, count, out);
    }
    if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "index") || !strcmp(name, "rindex") ||
        !strcmp(name, "count")) {
        KR_TRY(check_args(r, line, name, a, 1, NULL));
        if (!arg(a, 0, NULL, &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s() takes at least 1 argument", name);
        KR_TRY(want_str(r, line, "substring", x));
        if (!strcmp(name, "count")) {
            int64_t n = 0;
            if (x.s.n == 0)
                n = (int64_t)tpl_utf8_count(s.s.p, s.s.n) + 1;
            else
                for (size_t i = 0; i + x.s.n <= s.s.n;)
                    if (has_substr_at(s, i, x)) {
                        n++;
                        i += x.s.n;
                    } else
                        i++;
            *out = tpl_int(n);
            return KR_OK;
        }
        int64_t at = py_find(s, x, name[0] == 'r');
        if (at < 0 && strstr(name, "index"))
            return tpl_fail(r, line, KR_ERR_ARG, "ValueError: substring not found");
        *out = tpl_int(at);
        return KR_OK;
    }
    if (!strcmp(name, "join")) {
        KR_TRY(check_args(r, line, name, a, 1, NULL));
        if (!arg(a, 0, NULL, &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: join() takes exactly one argument");
        tpl_value *items;
        size_t n;
        KR_TRY(tpl_iterate(r, line, x, &items, &n));
        tpl_buf b;
        tpl_buf_init(&b, &r->arena);
        for (size_t i = 0; i < n; i++) {
            if (items[i].kind != TV_STR)
                return tpl_fail(r, line, KR_ERR_ARG, "TypeError: sequence item %zu: expected str instance, %s found", i,
                                tpl_type_name(items[i]));
            if (i)
                tpl_buf_add(&b, s.s.p, s.s.n);
            tpl_buf_add(&b, items[i].s.p, items[i].s.n);
        }
        *out = tpl_str(b.p ? b.p : "", b.n);
        return KR_OK;
    }
    if (!strcmp(name, "format"))
        return py_format_method(r, line, s, a, out);
    if (!strcmp(name, "isdigit") || !strcmp(name, "isalpha") || !strcmp(name, "isalnum") || !strcmp(name, "isspace") ||
        !strcmp(name, "islower") || !strcmp(name, "isupper")) {
        KR_TRY(check_args(r, line, name, a, 0, NULL));
        static const char *const kinds[] = {"isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper"};
        int k = 0;
        while (strcmp(kinds[k], name))
            k++;
        *out = tpl_bool(all_cp(r, s, k));
        return KR_OK;
    }
    if (!strcmp(name, "removeprefix") || !strcmp(name, "removesuffix")) {
        KR_TRY(check_args(r, line, name, a, 1, NULL));
        if (!arg(a, 0, NULL, &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s() takes exactly one argument", name);
        KR_TRY(want_str(r, line, name, x));
        bool suffix = name[6] == 's';
        if (affix_matches(s, x, suffix))
            *out = tpl_str(s.s.p + (suffix ? 0 : x.s.n), s.s.n - x.s.n);
        else
            *out = s;
        return KR_OK;
    }
    if (!strcmp(name, "center") || !strcmp(name, "ljust") || !strcmp(name, "rjust")) {
        KR_TRY(check_args(r, line, name, a, 2, NULL));
        int64_t w;
        if (!arg(a, 0, NULL, &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s() takes at least 1 argument", name);
        KR_TRY(want_int(r, line, "width", x, &w));
        uint32_t fill = ' ';
        if (arg(a, 1, NULL, &y)) {
            KR_TRY(want_str(r, line, "fill character", y));
            if (tpl_utf8_count(y.s.p, y.s.n) != 1)
                return tpl_fail(r, line, KR_ERR_ARG, "TypeError: The fill character must be exactly one character long");
            size_t adv;
            fill = tpl_utf8_next(y.s.p, y.s.n, &adv);
        }
        *out = pad_center(r, s, w, fill, name[0] == 'c' ? 0 : name[0] == 'l' ? 1 : 2);
        return KR_OK;
    }
    if (!strcmp(name, "splitlines")) {
        KR_TRY(check_args(r, line, name, a, 0, NULL));
        codepoints c = decode(r, s);
        tpl_value *items = tpl_alloc(&r->arena, (c.n + 1) * sizeof *items);
        size_t n = 0, start = 0;
        for (size_t i = 0; i < c.n; i++) {
            uint32_t ch = c.cp[i];
            bool brk = ch == '\n' || ch == '\r' || ch == 0x0B || ch == 0x0C || (ch >= 0x1C && ch <= 0x1E) || ch == 0x85 ||
                       ch == 0x2028 || ch == 0x2029;
            if (!brk)
                continue;
            items[n++] = encode(r, c.cp + start, i - start);
            if (ch == '\r' && i + 1 < c.n && c.cp[i + 1] == '\n')
                i++;
            start = i + 1;
        }
        if (start < c.n)
            items[n++] = encode(r, c.cp + start, c.n - start);
        *out = list_of(r, TL_LIST, items, n);
        return KR_OK;
    }
    return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported method str.%s", name);
}

static kr_status dict_view(tpl_render *r, tpl_value d, tpl_list_kind kind, tpl_value *out) {
    tpl_value l = tpl_list_new(&r->arena, kind, d.d->n);
    for (size_t i = 0; i < d.d->n; i++)
        l.l->items[i] = kind == TL_KEYS ? d.d->keys[i] : kind == TL_VALUES ? d.d->vals[i] : tuple2(r, d.d->keys[i], d.d->vals[i]);
    *out = l;
    return KR_OK;
}

static kr_status call_method(tpl_render *r, int line, const tpl_func *f, tpl_args *a, tpl_value *out) {
    tpl_value self = f->self, x;
    const char *name = f->name;
    if (self.kind == TV_STR)
        return str_method(r, line, self, name, a, out);
    if (self.kind == TV_DICT) {
        if (!strcmp(name, "get")) {
            KR_TRY(check_args(r, line, "get()", a, 2, NULL));
            if (!arg(a, 0, NULL, &x))
                return tpl_fail(r, line, KR_ERR_ARG, "TypeError: get expected at least 1 argument, got 0");
            const tpl_value *v = tpl_dict_get(self.d, x);
            if (v)
                *out = *v;
            else if (!arg(a, 1, NULL, out))
                *out = tpl_none();
            return KR_OK;
        }
        KR_TRY(check_args(r, line, name, a, 0, NULL));
        if (!strcmp(name, "items"))
            return dict_view(r, self, TL_ITEMS, out);
        if (!strcmp(name, "keys"))
            return dict_view(r, self, TL_KEYS, out);
        if (!strcmp(name, "values"))
            return dict_view(r, self, TL_VALUES, out);
        if (!strcmp(name, "copy")) {
            *out = self;
            return KR_OK;
        }
        return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported method dict.%s", name);
    }
    if (self.kind == TV_LIST) {
        if (!strcmp(name, "copy")) {
            *out = list_of(r, TL_LIST, self.l->items, self.l->n);
            return KR_OK;
        }
        if (!strcmp(name, "count") || !strcmp(name, "index")) {
            KR_TRY(check_args(r, line, name, a, 1, NULL));
            if (!arg(a, 0, NULL, &x))
                return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s() takes exactly one argument", name);
            int64_t count = 0;
            for (size_t i = 0; i < self.l->n; i++)
                if (tpl_equal(self.l->items[i], x)) {
                    if (name[0] == 'i') {
                        *out = tpl_int((int64_t)i);
                        return KR_OK;
                    }
                    count++;
                }
            if (name[0] == 'i')
                return tpl_fail(r, line, KR_ERR_ARG, "ValueError: value is not in list");
            *out = tpl_int(count);
            return KR_OK;
        }
        return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported method list.%s", name);
    }
    if (self.kind == TV_LOOP && !strcmp(name, "cycle")) {
        if (a->npos == 0)
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: no items for cycling given");
        *out = a->pos[self.loop->index0 % (int64_t)a->npos];
        return KR_OK;
    }
    return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported method %s.%s", tpl_type_name(self), name);
}

/* ---- globals -------------------------------------------------------------------------------- */

static const char *const globals[] = {"raise_exception", "strftime_now", "namespace", "dict", "range",
                                      "lipsum", "cycler", "joiner", NULL};

bool tpl_global_exists(const char *name) { return in_names(globals, name); }

tpl_value tpl_global(const char *name) {
    /* Globals are immutable and shared, so static storage is enough (no mutable global state). */
    static const tpl_func funcs[] = {{TF_GLOBAL, "raise_exception", {0}}, {TF_GLOBAL, "strftime_now", {0}},
                                     {TF_GLOBAL, "namespace", {0}},       {TF_GLOBAL, "dict", {0}},
                                     {TF_GLOBAL, "range", {0}},           {TF_GLOBAL, "lipsum", {0}},
                                     {TF_GLOBAL, "cycler", {0}},          {TF_GLOBAL, "joiner", {0}}};
    for (size_t i = 0; i < sizeof funcs / sizeof *funcs; i++)
        if (!strcmp(funcs[i].name, name))
            return (tpl_value){.kind = TV_FUNC, .fn = (tpl_func *)&funcs[i]};
    return tpl_undef(NULL);
}

/* dict(...) / namespace(...): an optional mapping or list of pairs, then keywords. */
static kr_status build_dict(tpl_render *r, int line, const char *what, tpl_args *a, tpl_value *out) {
    if (a->npos > 1)
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: %s expected at most 1 positional argument, got %zu", what, a->npos);
    tpl_value d = tpl_dict_new(&r->arena, a->nkw + 4);
    if (a->npos == 1) {
        tpl_value src = a->pos[0];
        if (src.kind == TV_DICT || src.kind == TV_NS) {
            for (size_t i = 0; i < src.d->n; i++)
                tpl_dict_set(&r->arena, d.d, src.d->keys[i], src.d->vals[i]);
        } else {
            tpl_value *items;
            size_t n;
            KR_TRY(tpl_iterate(r, line, src, &items, &n));
            for (size_t i = 0; i < n; i++) {
                if (items[i].kind != TV_LIST || items[i].l->n != 2)
                    return tpl_fail(r, line, KR_ERR_ARG, "ValueError: %s sequence element #%zu is not a pair", what, i);
                tpl_dict_set(&r->arena, d.d, items[i].l->items[0], items[i].l->items[1]);
            }
        }
    }
    for (size_t i = 0; i < a->nkw; i++)
        tpl_dict_set(&r->arena, d.d, tpl_cstr(a->kwnames[i]), a->kwvals[i]);
    *out = d;
    return KR_OK;
}

static kr_status call_global(tpl_render *r, int line, const char *name, tpl_args *a, tpl_value *out) {
    tpl_value x;
    if (!strcmp(name, "raise_exception")) {
        tpl_value msg = tpl_cstr("");
        if (arg(a, 0, "message", &x))
            KR_TRY(tpl_str_of(r, line, x, &msg));
        return tpl_fail(r, line, KR_ERR_ARG, "template raised an error: %.*s", (int)msg.s.n, msg.s.p);
    }
    if (!strcmp(name, "strftime_now")) {
        if (!arg(a, 0, "format", &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: strftime_now() missing 1 required positional argument: 'format'");
        KR_TRY(want_str(r, line, "format", x));
        char *fmt = tpl_strndup(&r->arena, x.s.p, x.s.n);
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char buf[512];
        size_t n = strftime(buf, sizeof buf, fmt, &tm);
        *out = tpl_strcopy(&r->arena, buf, n);
        return KR_OK;
    }
    if (!strcmp(name, "namespace")) {
        for (size_t i = 0; i < a->nkw; i++)
            if (a->kwnames[i][0] == '_')
                return tpl_fail(r, line, KR_ERR_ARG,
                                "SecurityError: chat templates cannot store underscore-prefixed attributes on a namespace ('%s')",
                                a->kwnames[i]);
        KR_TRY(build_dict(r, line, "namespace()", a, out));
        out->kind = TV_NS;
        return KR_OK;
    }
    if (!strcmp(name, "dict"))
        return build_dict(r, line, "dict()", a, out);
    if (!strcmp(name, "range")) {
        KR_TRY(check_args(r, line, "range()", a, 3, NULL));
        int64_t v[3] = {0, 0, 1};
        if (a->npos == 0)
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: range expected at least 1 argument, got 0");
        for (size_t i = 0; i < a->npos; i++)
            KR_TRY(want_int(r, line, "range() argument", a->pos[i], &v[i]));
        int64_t start = a->npos == 1 ? 0 : v[0], stop = a->npos == 1 ? v[0] : v[1], step = a->npos == 3 ? v[2] : 1;
        if (step == 0)
            return tpl_fail(r, line, KR_ERR_ARG, "ValueError: range() arg 3 must not be zero");
        int64_t count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                                 : (start > stop ? (start - stop - step - 1) / -step : 0);
        if (count > 100000) /* jinja2's sandbox: MAX_RANGE */
            return tpl_fail(r, line, KR_ERR_ARG, "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        tpl_value l = tpl_list_new(&r->arena, TL_LIST, (size_t)count);
        for (int64_t i = 0; i < count; i++)
            l.l->items[i] = tpl_int(start + i * step);
        *out = l;
        return KR_OK;
    }
    return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported global function '%s'", name);
}

kr_status tpl_call_func(tpl_render *r, int line, const tpl_func *fn, tpl_args *args, tpl_value *out) {
    if (fn->type == TF_METHOD)
        return call_method(r, line, fn, args, out);
    return call_global(r, line, fn->name, args, out);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static const char *const tests[] = {"defined", "undefined", "none", "boolean", "false", "true", "integer", "float",
                                    "number", "string", "mapping", "iterable", "sequence", "callable", "sameas", "in",
                                    "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt",
                                    "greaterthan", ">", "ge", ">=", "odd", "even", "divisibleby", "lower", "upper", NULL};

bool tpl_test_exists(const char *name) { return in_names(tests, name); }

static int cmp_test_op(const char *name) {
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==")) return CMP_EQ;
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return CMP_NE;
    if (!strcmp(name, "lt") || !strcmp(name, "lessthan") || !strcmp(name, "<")) return CMP_LT;
    if (!strcmp(name, "le") || !strcmp(name, "<=")) return CMP_LE;
    if (!strcmp(name, "gt") || !strcmp(name, "greaterthan") || !strcmp(name, ">")) return CMP_GT;
    if (!strcmp(name, "ge") || !strcmp(name, ">=")) return CMP_GE;
    if (!strcmp(name, "in")) return CMP_IN;
    return -1;
}

kr_status tpl_apply_test(tpl_render *r, int line, const char *name, tpl_value v, tpl_args *a, bool *out) {
    tpl_kind k = (tpl_kind)v.kind;
    bool seq_list = k == TV_LIST && v.l->kind != TL_GEN;
    if (!strcmp(name, "defined")) *out = k != TV_UNDEF;
    else if (!strcmp(name, "undefined")) *out = k == TV_UNDEF;
    else if (!strcmp(name, "none")) *out = k == TV_NONE;
    else if (!strcmp(name, "boolean")) *out = k == TV_BOOL;
    else if (!strcmp(name, "false")) *out = k == TV_BOOL && !v.b;
    else if (!strcmp(name, "true")) *out = k == TV_BOOL && v.b;
    else if (!strcmp(name, "integer")) *out = k == TV_INT;
    else if (!strcmp(name, "float")) *out = k == TV_FLOAT;
    else if (!strcmp(name, "number")) *out = k == TV_INT || k == TV_FLOAT || k == TV_BOOL;
    else if (!strcmp(name, "string")) *out = k == TV_STR;
    else if (!strcmp(name, "mapping")) *out = k == TV_DICT;
    /* Undefined defines __iter__, so jinja2 calls it iterable */
    else if (!strcmp(name, "iterable")) *out = k == TV_STR || k == TV_LIST || k == TV_DICT || k == TV_UNDEF;
    else if (!strcmp(name, "sequence")) *out = k == TV_STR || seq_list || k == TV_DICT;
    else if (!strcmp(name, "callable")) *out = k == TV_MACRO || k == TV_FUNC || k == TV_UNDEF;
    else if (!strcmp(name, "sameas")) {
        tpl_value x;
        if (!arg(a, 0, "other", &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: test 'sameas' needs an argument");
        *out = (k == TV_NONE || k == TV_BOOL || k == TV_UNDEF) ? tpl_equal(v, x) && v.kind == x.kind
               : k == TV_LIST ? x.kind == TV_LIST && x.l == v.l
               : (k == TV_DICT || k == TV_NS) ? x.kind == k && x.d == v.d
               : false;
    } else if (cmp_test_op(name) >= 0) {
        tpl_value x;
        if (!arg(a, 0, NULL, &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: test '%s' needs an argument", name);
        return tpl_compare(r, line, cmp_test_op(name), v, x, out);
    } else if (!strcmp(name, "odd") || !strcmp(name, "even") || !strcmp(name, "divisibleby")) {
        if (k == TV_UNDEF)
            return tpl_undef_error(r, line, v);
        int64_t x, d = 2;
        if (k == TV_FLOAT)
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: test '%s' on a float", name);
        KR_TRY(want_int(r, line, "value", v, &x));
        tpl_value dv;
        if (name[0] == 'd') {
            if (!arg(a, 0, "num", &dv))
                return tpl_fail(r, line, KR_ERR_ARG, "TypeError: test 'divisibleby' needs an argument");
            KR_TRY(want_int(r, line, "divisor", dv, &d));
            if (d == 0)
                return tpl_fail(r, line, KR_ERR_ARG, "ZeroDivisionError: integer division or modulo by zero");
        }
        int64_t m = ((x % d) + d) % d;
        *out = name[0] == 'o' ? m == 1 : m == 0;
    } else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        tpl_value sv;
        KR_TRY(tpl_str_of(r, line, v, &sv));
        *out = all_cp(r, sv, name[0] == 'l' ? 4 : 5);
    } else
        return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported test '%s'", name);
    return KR_OK;
}

/* ---- filters -------------------------------------------------------------------------------- */

static const char *const filters[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first",
    "float", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min",
    "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum",
    "title", "tojson", "trim", "unique", "upper", "wordcount", NULL};

bool tpl_filter_exists(const char *name) { return in_names(filters, name); }

/* A dotted attribute path ("a.b" or "0") looked up item-first, as jinja2's make_attrgetter does. */
static kr_status attr_path(tpl_render *r, int line, tpl_value v, tpl_value attribute, tpl_value *out) {
    if (attribute.kind == TV_INT) {
        return tpl_getitem(r, line, v, attribute, out);
    }
    KR_TRY(want_str(r, line, "attribute", attribute));
    const char *p = attribute.s.p, *end = p + attribute.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot)
            dot = end;
        tpl_value key = tpl_str(p, (size_t)(dot - p));
        bool digits = dot > p;
        int64_t idx = 0;
        for (const char *q = p; q < dot; q++) {
            digits &= *q >= '0' && *q <= '9';
            idx = idx * 10 + (*q - '0');
        }
        if (digits)
            key = tpl_int(idx);
        if (v.kind == TV_UNDEF)
            return tpl_undef_error(r, line, v);
        KR_TRY(tpl_getitem(r, line, v, key, &v));
        p = dot + 1;
    }
    *out = v;
    return KR_OK;
}

static tpl_value lower_if_str(tpl_render *r, tpl_value v, bool case_sensitive) {
    return !case_sensitive && v.kind == TV_STR ? map_case(r, v, 0) : v;
}

typedef struct {
    tpl_render *r;
    int line;
    kr_status err;
    bool reverse;
} sort_ctx;

static int sort_cmp(sort_ctx *c, tpl_value a, tpl_value b) {
    if (c->err)
        return 0;
    bool lt, gt;
    if ((c->err = tpl_compare(c->r, c->line, CMP_LT, a, b, &lt)) != KR_OK)
        return 0;
    if ((c->err = tpl_compare(c->r, c->line, CMP_GT, a, b, &gt)) != KR_OK)
        return 0;
    int v = lt ? -1 : gt ? 1 : 0;
    return c->reverse ? -v : v;
}

/* Stable merge sort of idx[] by keys[] (Python's sort is stable; qsort is not). */
static void merge_sort(sort_ctx *c, size_t *idx, size_t *tmp, size_t n, const tpl_value *keys) {
    if (n < 2)
        return;
    size_t h = n / 2;
    merge_sort(c, idx, tmp, h, keys);
    merge_sort(c, idx + h, tmp, n - h, keys);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = sort_cmp(c, keys[idx[j]], keys[idx[i]]) < 0 ? idx[j++] : idx[i++];
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    tpl_memcpy(idx, tmp, n * sizeof *idx);
}

static kr_status sorted(tpl_render *r, int line, tpl_value *items, size_t n, const tpl_value *keys, bool reverse,
                        tpl_value *out) {
    size_t *idx = tpl_alloc(&r->arena, (n + 1) * sizeof *idx), *tmp = tpl_alloc(&r->arena, (n + 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    sort_ctx c = {r, line, KR_OK, reverse};
    merge_sort(&c, idx, tmp, n, keys);
    if (c.err)
        return c.err;
    tpl_value l = tpl_list_new(&r->arena, TL_LIST, n);
    for (size_t i = 0; i < n; i++)
        l.l->items[i] = items[idx[i]];
    *out = l;
    return KR_OK;
}

/* select/reject/selectattr/rejectattr: the items for which the test (or truthiness) holds. */
static kr_status select_items(tpl_render *r, int line, tpl_value v, tpl_args *a, bool by_attr, bool keep, tpl_value *out) {
    tpl_value *items;
    size_t n;
    KR_TRY(tpl_iterate(r, line, v, &items, &n));
    size_t first_arg = 0;
    tpl_value attribute = tpl_none(), test = tpl_none();
    if (by_attr) {
        if (a->npos < 1)
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: selectattr/rejectattr need an attribute");
        attribute = a->pos[0];
        first_arg = 1;
    }
    bool has_test = a->npos > first_arg;
    if (has_test) {
        test = a->pos[first_arg];
        KR_TRY(want_str(r, line, "test name", test));
    }
    const char *test_name = has_test ? tpl_strndup(&r->arena, test.s.p, test.s.n) : NULL;
    if (test_name && !tpl_test_exists(test_name))
        return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported test '%s'", test_name);
    tpl_args targs = {.pos = a->pos + first_arg + (has_test ? 1 : 0),
                      .npos = a->npos - first_arg - (has_test ? 1 : 0),
                      .kwnames = a->kwnames,
                      .kwvals = a->kwvals,
                      .nkw = a->nkw};
    tpl_value res = tpl_list_new(&r->arena, TL_GEN, n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        tpl_value x = items[i];
        if (by_attr)
            KR_TRY(attr_path(r, line, x, attribute, &x));
        bool ok;
        if (test_name)
            KR_TRY(tpl_apply_test(r, line, test_name, x, &targs, &ok));
        else
            ok = tpl_truthy(x);
        if (ok == keep)
            res.l->items[k++] = items[i];
    }
    res.l->n = k;
    *out = res;
    return KR_OK;
}

static kr_status filter_map(tpl_render *r, int line, tpl_value v, tpl_args *a, tpl_value *out) {
    tpl_value *items;
    size_t n;
    KR_TRY(tpl_iterate(r, line, v, &items, &n));
    tpl_value res = tpl_list_new(&r->arena, TL_GEN, n), attribute, def;
    bool has_default = arg(a, SIZE_MAX, "default", &def);
    if (a->npos == 0 && arg(a, SIZE_MAX, "attribute", &attribute)) {
        for (size_t i = 0; i < n; i++) {
            KR_TRY(attr_path(r, line, items[i], attribute, &res.l->items[i]));
            if (has_default && res.l->items[i].kind == TV_UNDEF)
                res.l->items[i] = def;
        }
        *out = res;
        return KR_OK;
    }
    if (a->npos == 0)
        return tpl_fail(r, line, KR_ERR_ARG, "map requires a filter argument");
    KR_TRY(want_str(r, line, "filter name", a->pos[0]));
    char *fname = tpl_strndup(&r->arena, a->pos[0].s.p, a->pos[0].s.n);
    if (!tpl_filter_exists(fname))
        return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported filter '%s'", fname);
    tpl_args fargs = {.pos = a->pos + 1, .npos = a->npos - 1, .kwnames = a->kwnames, .kwvals = a->kwvals, .nkw = a->nkw};
    for (size_t i = 0; i < n; i++)
        KR_TRY(tpl_apply_filter(r, line, fname, items[i], &fargs, &res.l->items[i]));
    *out = res;
    return KR_OK;
}

static kr_status filter_tojson(tpl_render *r, int line, tpl_value v, tpl_args *a, tpl_value *out) {
    static const char *const names[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
    KR_TRY(check_args(r, line, "tojson", a, 4, names));
    tpl_json_opts o = {.indent = -1, .item_sep = ", ", .key_sep = ": "};
    tpl_value x;
    if (arg(a, 0, "ensure_ascii", &x))
        o.ensure_ascii = tpl_truthy(x);
    if (arg(a, 1, "indent", &x) && x.kind != TV_NONE) {
        int64_t ind = 0;
        if (x.kind == TV_STR)
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: tojson with a string indent");
        KR_TRY(want_int(r, line, "indent", x, &ind));
        o.indent = ind < 0 ? 0 : (int)ind;
        o.item_sep = ",";
    }
    if (arg(a, 2, "separators", &x) && x.kind != TV_NONE) {
        if (x.kind != TV_LIST || x.l->n != 2 || x.l->items[0].kind != TV_STR || x.l->items[1].kind != TV_STR)
            return tpl_fail(r, line, KR_ERR_ARG, "tojson: separators must be a pair of strings");
        o.item_sep = tpl_strndup(&r->arena, x.l->items[0].s.p, x.l->items[0].s.n);
        o.key_sep = tpl_strndup(&r->arena, x.l->items[1].s.p, x.l->items[1].s.n);
    }
    if (arg(a, 3, "sort_keys", &x))
        o.sort_keys = tpl_truthy(x);
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    kr_status s = tpl_to_json(&b, v, &o, 0);
    if (s != KR_OK)
        return tpl_fail(r, line, s, "TypeError: %s", kr_error());
    *out = tpl_str(b.p, b.n);
    return KR_OK;
}

static kr_status to_number(tpl_render *r, int line, tpl_value v, bool want_float, tpl_value def, tpl_value *out) {
    switch (v.kind) {
    case TV_INT: *out = want_float ? tpl_float((double)v.i) : v; return KR_OK;
    case TV_BOOL: *out = want_float ? tpl_float(v.b) : tpl_int(v.b); return KR_OK;
    case TV_FLOAT:
        if (!want_float && (isnan(v.f) || isinf(v.f) || fabs(v.f) >= 9.2e18)) {
            *out = def;
            return KR_OK;
        }
        *out = want_float ? v : tpl_int((int64_t)v.f);
        return KR_OK;
    case TV_STR: {
        char *s = tpl_strndup(&r->arena, v.s.p, v.s.n), *e;
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        double f = strtod(s, &e);
        while (*e == ' ' || *e == '\t' || *e == '\n')
            e++;
        if (e == s || *e || strpbrk(s, "xX")) { /* strtod reads hex ("0x10"); Python's int() and float() do not */
            *out = def;
            return KR_OK;
        }
        if (want_float)
            *out = tpl_float(f);
        else if (strpbrk(s, ".eEn")) /* int("3.5") fails, jinja2 then tries int(float("3.5")) */
            return to_number(r, line, tpl_float(f), false, def, out); /* its range check too */
        else
            *out = tpl_int(strtoll(s, NULL, 10));
        return KR_OK;
    }
    default: *out = def; return KR_OK;
    }
}

/* round(x, n) as Python: correctly rounded, halves to even. */
static double py_round(double x, int64_t nd) {
    if (!isfinite(x))
        return x;
    if (nd == 0)
        return nearbyint(x);
    char buf[64];
    snprintf(buf, sizeof buf, "%.*f", (int)(nd < 0 ? 0 : nd > 30 ? 30 : nd), x); /* glibc rounds exactly, half-even */
    return strtod(buf, NULL);
}

kr_status tpl_apply_filter(tpl_render *r, int line, const char *name, tpl_value v, tpl_args *a, tpl_value *out) {
    tpl_value x, y;
    /* filters that take any value */
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        tpl_value def = tpl_cstr("");
        arg(a, 0, "default_value", &def);
        bool boolean = arg(a, 1, "boolean", &x) && tpl_truthy(x);
        *out = v.kind == TV_UNDEF || (boolean && !tpl_truthy(v)) ? def : v;
        return KR_OK;
    }
    if (!strcmp(name, "tojson"))
        return filter_tojson(r, line, v, a, out);
    if (!strcmp(name, "string"))
        return tpl_str_of(r, line, v, out);
    if (!strcmp(name, "safe"))
        return tpl_str_of(r, line, v, out);
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (v.kind == TV_STR)
            *out = tpl_int((int64_t)tpl_utf8_count(v.s.p, v.s.n));
        else if (v.kind == TV_LIST && v.l->kind != TL_GEN)
            *out = tpl_int((int64_t)v.l->n);
        else if (v.kind == TV_DICT || v.kind == TV_NS)
            *out = tpl_int((int64_t)v.d->n);
        else if (v.kind == TV_UNDEF)
            *out = tpl_int(0);
        else
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: object of type '%s' has no len()", tpl_type_name(v));
        return KR_OK;
    }
    if (!strcmp(name, "list")) {
        tpl_value *items;
        size_t n;
        KR_TRY(tpl_iterate(r, line, v, &items, &n));
        *out = list_of(r, TL_LIST, items, n);
        return KR_OK;
    }
    if (!strcmp(name, "items")) {
        if (v.kind == TV_UNDEF) {
            *out = tpl_list_new(&r->arena, TL_GEN, 0);
            return KR_OK;
        }
        if (v.kind != TV_DICT)
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: Can only get item pairs from a mapping.");
        KR_TRY(dict_view(r, v, TL_ITEMS, out));
        out->l->kind = TL_GEN;
        return KR_OK;
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        if (v.kind == TV_LIST && v.l->kind == TL_GEN && name[0] == 'l')
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: 'generator' object is not reversible");
        tpl_value *items;
        size_t n;
        if (v.kind == TV_LIST && v.l->kind == TL_GEN) {
            n = v.l->n - v.l->pos;
            items = v.l->items + v.l->pos;
            if (n)
                v.l->pos++;
        } else
            KR_TRY(tpl_iterate(r, line, v, &items, &n));
        if (v.kind == TV_DICT && name[0] == 'l')
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: last of a dict");
        *out = n ? items[name[0] == 'f' ? 0 : n - 1]
                 : tpl_undef(name[0] == 'f' ? "No first item, sequence was empty." : "No last item, sequence was empty.");
        return KR_OK;
    }
    if (!strcmp(name, "join")) {
        tpl_value sep = tpl_cstr(""), attribute;
        arg(a, 0, "d", &sep);
        KR_TRY(tpl_str_of(r, line, sep, &sep));
        bool by_attr = arg(a, 1, "attribute", &attribute);
        tpl_value *items;
        size_t n;
        KR_TRY(tpl_iterate(r, line, v, &items, &n));
        tpl_buf b;
        tpl_buf_init(&b, &r->arena);
        for (size_t i = 0; i < n; i++) {
            tpl_value it = items[i];
            if (by_attr)
                KR_TRY(attr_path(r, line, it, attribute, &it));
            if (i)
                tpl_buf_add(&b, sep.s.p, sep.s.n);
            kr_status s = tpl_to_str(&b, it);
            if (s)
                return tpl_fail(r, line, s, "%s", kr_error());
        }
        *out = tpl_str(b.p ? b.p : "", b.n);
        return KR_OK;
    }
    if (!strcmp(name, "map"))
        return filter_map(r, line, v, a, out);
    if (!strcmp(name, "select") || !strcmp(name, "reject"))
        return select_items(r, line, v, a, false, name[0] == 's', out);
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return select_items(r, line, v, a, true, name[0] == 's', out);
    if (!strcmp(name, "attr")) {
        if (!arg(a, 0, "name", &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: attr needs a name");
        KR_TRY(want_str(r, line, "attribute name", x));
        bool found;
        KR_TRY(python_attr(r, line, v, tpl_strndup(&r->arena, x.s.p, x.s.n), &found, out));
        if (!found)
            *out = no_attribute(r, v, tpl_strndup(&r->arena, x.s.p, x.s.n));
        return KR_OK;
    }
    if (!strcmp(name, "reverse")) {
        if (v.kind == TV_STR) {
            codepoints c = decode(r, v);
            for (size_t i = 0; i < c.n / 2; i++) {
                uint32_t t = c.cp[i];
                c.cp[i] = c.cp[c.n - 1 - i];
                c.cp[c.n - 1 - i] = t;
            }
            *out = encode(r, c.cp, c.n);
            return KR_OK;
        }
        tpl_value *items;
        size_t n;
        KR_TRY(tpl_iterate(r, line, v, &items, &n));
        tpl_value l = tpl_list_new(&r->arena, TL_GEN, n); /* reversed() is an iterator */
        for (size_t i = 0; i < n; i++)
            l.l->items[i] = items[n - 1 - i];
        *out = l;
        return KR_OK;
    }
    if (!strcmp(name, "sort") || !strcmp(name, "unique") || !strcmp(name, "dictsort") || !strcmp(name, "min") ||
        !strcmp(name, "max")) {
        bool reverse = false, case_sensitive = false, by_attr = false, by_value = false;
        tpl_value attribute = tpl_none();
        if (!strcmp(name, "sort")) {
            if (arg(a, 0, "reverse", &x)) reverse = tpl_truthy(x);
            if (arg(a, 1, "case_sensitive", &x)) case_sensitive = tpl_truthy(x);
            by_attr = arg(a, 2, "attribute", &attribute);
        } else if (!strcmp(name, "dictsort")) {
            if (arg(a, 0, "case_sensitive", &x)) case_sensitive = tpl_truthy(x);
            if (arg(a, 1, "by", &x)) {
                if (tpl_is_str(x, "value")) by_value = true;
                else if (!tpl_is_str(x, "key"))
                    return tpl_fail(r, line, KR_ERR_ARG, "FilterArgumentError: You can only sort by either \"key\" or \"value\"");
            }
            if (arg(a, 2, "reverse", &x)) reverse = tpl_truthy(x);
        } else {
            if (arg(a, 0, "case_sensitive", &x)) case_sensitive = tpl_truthy(x);
            by_attr = arg(a, 1, "attribute", &attribute);
        }
        tpl_value *items;
        size_t n;
        if (!strcmp(name, "dictsort")) {
            if (v.kind != TV_DICT)
                return tpl_fail(r, line, KR_ERR_ARG, "TypeError: dictsort needs a mapping");
            tpl_value view;
            KR_TRY(dict_view(r, v, TL_ITEMS, &view));
            items = view.l->items;
            n = view.l->n;
        } else
            KR_TRY(tpl_iterate(r, line, v, &items, &n));
        tpl_value *keys = tpl_alloc(&r->arena, (n + 1) * sizeof *keys);
        for (size_t i = 0; i < n; i++) {
            tpl_value key = items[i];
            if (!strcmp(name, "dictsort"))
                key = key.l->items[by_value ? 1 : 0];
            else if (by_attr)
                KR_TRY(attr_path(r, line, key, attribute, &key));
            keys[i] = lower_if_str(r, key, case_sensitive);
        }
        if (!strcmp(name, "unique")) {
            tpl_value res = tpl_list_new(&r->arena, TL_GEN, n);
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                bool seen = false;
                for (size_t j = 0; j < i && !seen; j++)
                    seen = tpl_equal(keys[j], keys[i]);
                if (!seen)
                    res.l->items[k++] = items[i];
            }
            res.l->n = k;
            *out = res;
            return KR_OK;
        }
        if (!strcmp(name, "min") || !strcmp(name, "max")) {
            if (n == 0) {
                *out = tpl_undef(name[1] == 'i' ? "No aggregated item, sequence was empty." : "No aggregated item, sequence was empty.");
                return KR_OK;
            }
            size_t best = 0;
            sort_ctx c = {r, line, KR_OK, false};
            for (size_t i = 1; i < n; i++) {
                int cmp = sort_cmp(&c, keys[i], keys[best]);
                if (c.err)
                    return c.err;
                if (name[1] == 'i' ? cmp < 0 : cmp > 0)
                    best = i;
            }
            *out = items[best];
            return KR_OK;
        }
        return sorted(r, line, items, n, keys, reverse, out);
    }
    if (!strcmp(name, "sum")) {
        tpl_value attribute, total = tpl_int(0);
        bool by_attr = arg(a, 0, "attribute", &attribute);
        arg(a, 1, "start", &total);
        tpl_value *items;
        size_t n;
        KR_TRY(tpl_iterate(r, line, v, &items, &n));
        for (size_t i = 0; i < n; i++) {
            tpl_value it = items[i];
            if (by_attr)
                KR_TRY(attr_path(r, line, it, attribute, &it));
            KR_TRY(tpl_binop_eval(r, line, OP_ADD, total, it, &total));
        }
        *out = total;
        return KR_OK;
    }
    if (!strcmp(name, "batch")) {
        int64_t size;
        if (!arg(a, 0, "linecount", &x))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: batch needs a line count");
        KR_TRY(want_int(r, line, "linecount", x, &size));
        if (size <= 0)
            return tpl_fail(r, line, KR_ERR_ARG, "batch: line count must be positive");
        bool fill = arg(a, 1, "fill_with", &y) && y.kind != TV_NONE;
        tpl_value *items;
        size_t n;
        KR_TRY(tpl_iterate(r, line, v, &items, &n));
        size_t nb = (n + (size_t)size - 1) / (size_t)size;
        tpl_value res = tpl_list_new(&r->arena, TL_GEN, nb);
        for (size_t b = 0; b < nb; b++) {
            size_t start = b * (size_t)size, len = n - start < (size_t)size ? n - start : (size_t)size;
            tpl_value chunk = tpl_list_new(&r->arena, TL_LIST, fill ? (size_t)size : len);
            tpl_memcpy(chunk.l->items, items + start, len * sizeof *items);
            for (size_t k = len; fill && k < (size_t)size; k++)
                chunk.l->items[k] = y;
            res.l->items[b] = chunk;
        }
        *out = res;
        return KR_OK;
    }
    if (!strcmp(name, "abs")) {
        if (v.kind == TV_INT)
            *out = tpl_int(v.i < 0 ? -v.i : v.i);
        else if (v.kind == TV_FLOAT)
            *out = tpl_float(fabs(v.f));
        else if (v.kind == TV_BOOL)
            *out = tpl_int(v.b);
        else
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: bad operand type for abs(): '%s'", tpl_type_name(v));
        return KR_OK;
    }
    if (!strcmp(name, "int")) {
        tpl_value def = tpl_int(0);
        arg(a, 0, "default", &def);
        if (arg(a, 1, "base", &x) && !(x.kind == TV_INT && x.i == 10))
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: int filter with a base other than 10");
        return to_number(r, line, v, false, def, out);
    }
    if (!strcmp(name, "float")) {
        tpl_value def = tpl_float(0.0);
        arg(a, 0, "default", &def);
        return to_number(r, line, v, true, def, out);
    }
    if (!strcmp(name, "round")) {
        int64_t prec = 0;
        if (arg(a, 0, "precision", &x))
            KR_TRY(want_int(r, line, "precision", x, &prec));
        const char *method_name = "common";
        if (arg(a, 1, "method", &x)) {
            KR_TRY(want_str(r, line, "method", x));
            method_name = tpl_strndup(&r->arena, x.s.p, x.s.n);
        }
        if (v.kind != TV_INT && v.kind != TV_FLOAT && v.kind != TV_BOOL)
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: round needs a number, not %s", tpl_type_name(v));
        double f = v.kind == TV_FLOAT ? v.f : v.kind == TV_INT ? (double)v.i : v.b;
        double scale = pow(10.0, (double)prec);
        if (!strcmp(method_name, "common"))
            f = py_round(f, prec);
        else if (!strcmp(method_name, "ceil"))
            f = ceil(f * scale) / scale;
        else if (!strcmp(method_name, "floor"))
            f = floor(f * scale) / scale;
        else
            return tpl_fail(r, line, KR_ERR_ARG, "FilterArgumentError: method must be common, ceil or floor");
        /* round(int, n) stays an int in Python; ceil/floor go through math and give floats */
        *out = v.kind != TV_FLOAT && !strcmp(method_name, "common") ? tpl_int((int64_t)f) : tpl_float(f);
        return KR_OK;
    }
    if (!strcmp(name, "format")) {
        KR_TRY(want_str(r, line, "format string", v));
        if (a->nkw)
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: format filter with keyword arguments");
        if (a->npos == 1 && a->pos[0].kind == TV_LIST && a->pos[0].l->kind == TL_TUPLE)
            return py_percent_format(r, line, v, a->pos[0].l->items, a->pos[0].l->n, out);
        if (a->npos == 1 && a->pos[0].kind == TV_DICT)
            return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported: %% format with a mapping");
        return py_percent_format(r, line, v, a->pos, a->npos, out);
    }
    /* string filters: str(value) first, as jinja2's soft_str */
    tpl_value s;
    if (v.kind == TV_UNDEF && strcmp(name, "wordcount"))
        s = tpl_cstr("");
    else
        KR_TRY(tpl_str_of(r, line, v, &s));
    if (!strcmp(name, "trim")) {
        bool has = arg(a, 0, "chars", &x);
        return py_strip(r, line, s, has ? &x : NULL, true, true, out);
    }
    if (!strcmp(name, "lower") || !strcmp(name, "upper") || !strcmp(name, "capitalize")) {
        *out = map_case(r, s, name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : 2);
        return KR_OK;
    }
    if (!strcmp(name, "title")) { /* jinja2's own: words start after "-", whitespace, or an opening bracket */
        codepoints c = decode(r, s);
        bool start = true;
        for (size_t i = 0; i < c.n; i++) {
            uint32_t ch = c.cp[i];
            bool sep = ch == '-' || ch == '(' || ch == '{' || ch == '[' || ch == '<' || tpl_py_isspace(ch);
            if (sep)
                start = true;
            else {
                c.cp[i] = (uint32_t)(start ? utf8proc_toupper((utf8proc_int32_t)ch) : utf8proc_tolower((utf8proc_int32_t)ch));
                start = false;
            }
        }
        *out = encode(r, c.cp, c.n);
        return KR_OK;
    }
    if (!strcmp(name, "replace")) {
        if (!arg(a, 0, "old", &x) || !arg(a, 1, "new", &y))
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: replace needs old and new");
        int64_t count = -1;
        tpl_value c;
        if (arg(a, 2, "count", &c) && c.kind != TV_NONE)
            KR_TRY(want_int(r, line, "count", c, &count));
        return py_replace(r, line, s, x, y, count, out);
    }
    if (!strcmp(name, "center")) {
        int64_t w = 80;
        if (arg(a, 0, "width", &x))
            KR_TRY(want_int(r, line, "width", x, &w));
        *out = pad_center(r, s, w, ' ', 0);
        return KR_OK;
    }
    if (!strcmp(name, "indent")) {
        tpl_value width = tpl_int(4);
        arg(a, 0, "width", &width);
        bool first = arg(a, 1, "first", &x) && tpl_truthy(x), blank = arg(a, 2, "blank", &y) && tpl_truthy(y);
        tpl_value pad;
        if (width.kind == TV_STR)
            pad = width;
        else {
            int64_t w;
            KR_TRY(want_int(r, line, "width", width, &w));
            pad = pad_center(r, tpl_cstr(""), w, ' ', 1);
        }
        /* jinja2: s += "\n" (so splitlines keeps a trailing empty line), indent lines after the first,
         * skipping blank ones unless blank=True; the first line only with first=True */
        tpl_value lines;
        tpl_args none = {0};
        tpl_value s2;
        KR_TRY(tpl_binop_eval(r, line, OP_ADD, s, tpl_cstr("\n"), &s2));
        KR_TRY(str_method(r, line, s2, "splitlines", &none, &lines));
        tpl_buf b;
        tpl_buf_init(&b, &r->arena);
        for (size_t i = 0; i < lines.l->n; i++) {
            tpl_value ln = lines.l->items[i];
            if (i)
                tpl_buf_addc(&b, '\n');
            bool do_pad = i == 0 ? first : (blank || ln.s.n > 0);
            if (do_pad && !(i == 0 && !blank && ln.s.n == 0 && false))
                tpl_buf_add(&b, pad.s.p, pad.s.n);
            tpl_buf_add(&b, ln.s.p, ln.s.n);
        }
        *out = tpl_str(b.p ? b.p : "", b.n);
        return KR_OK;
    }
    if (!strcmp(name, "e") || !strcmp(name, "escape")) {
        tpl_buf b;
        tpl_buf_init(&b, &r->arena);
        for (size_t i = 0; i < s.s.n; i++) {
            switch (s.s.p[i]) {
            case '&': tpl_buf_adds(&b, "&amp;"); break;
            case '<': tpl_buf_adds(&b, "&lt;"); break;
            case '>': tpl_buf_adds(&b, "&gt;"); break;
            case '"': tpl_buf_adds(&b, "&#34;"); break;
            case '\'': tpl_buf_adds(&b, "&#39;"); break;
            default: tpl_buf_addc(&b, s.s.p[i]);
            }
        }
        *out = tpl_str(b.p ? b.p : "", b.n);
        return KR_OK;
    }
    if (!strcmp(name, "wordcount")) {
        if (v.kind == TV_UNDEF)
            return tpl_undef_error(r, line, v);
        int64_t words = 0;
        bool in_word = false;
        codepoints c = decode(r, s);
        for (size_t i = 0; i < c.n; i++) { /* jinja2 counts \w+ runs */
            utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c.cp[i]);
            bool w = c.cp[i] == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
                     (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) ||
                     (cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME);
            words += w && !in_word;
            in_word = w;
        }
        *out = tpl_int(words);
        return KR_OK;
    }
    return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "unsupported filter '%s'", name);
}
