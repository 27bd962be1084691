/* The chat-template evaluator: walks the tree of template.c over a scope chain, with jinja2's
 * scoping (a for loop gives every iteration a fresh scope, so `set` inside a loop is lost at the
 * end of the iteration -- which is why templates use namespace(); `if` has no scope; a macro runs in
 * a scope above the one it was defined in) and Python's operator semantics. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/template.h"
#include "tokenizer/template_impl.h"

#define TPL_MAX_CALL_DEPTH 100

kr_status tpl_fail(const tpl_render *r, int line, kr_status code, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kr_fail(code, "%s:%d: %s", r->t->name, line, msg);
}

/* A failure from a value helper (tpl_repr, tpl_to_json) has no position yet: add it. */
static kr_status with_position(const tpl_render *r, int line, kr_status s) {
    if (s == KR_OK)
        return s;
    char msg[1536];
    snprintf(msg, sizeof msg, "%s", kr_error());
    return kr_fail(s, "%s:%d: %s", r->t->name, line, msg);
}

kr_status tpl_undef_error(const tpl_render *r, int line, tpl_value u) {
    const char *hint = u.hint ? u.hint : "a value is undefined";
    if (!strncmp(hint, TPL_UNSAFE_PREFIX, strlen(TPL_UNSAFE_PREFIX)))
        return tpl_fail(r, line, KR_ERR_ARG, "SecurityError: %s", hint);
    return tpl_fail(r, line, KR_ERR_ARG, "UndefinedError: %s", hint);
}

/* ---- scopes --------------------------------------------------------------------------------- */

static tpl_scope *scope_new(tpl_render *r, tpl_scope *parent) {
    tpl_scope *s = tpl_alloc(&r->arena, sizeof *s);
    s->parent = parent;
    return s;
}

static void scope_set(tpl_render *r, tpl_scope *s, const char *name, tpl_value v) {
    tpl_dict_set(&r->arena, &s->vars, tpl_cstr(name), v);
}

static tpl_value lookup(tpl_render *r, tpl_scope *s, const char *name) {
    for (; s; s = s->parent) {
        const tpl_value *v = tpl_dict_gets(&s->vars, name);
        if (v)
            return *v;
    }
    const tpl_value *v = tpl_dict_gets(r->context, name);
    if (v)
        return *v;
    if (tpl_global_exists(name))
        return tpl_global(name);
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    tpl_buf_printf(&b, "'%s' is undefined", name);
    return tpl_undef(b.p);
}

/* ---- iteration ------------------------------------------------------------------------------ */

/* The items a for loop (or a filter) sees: list items, dict keys, string characters; an undefined
 * value iterates as empty, as in jinja2. A generator is consumed. */
kr_status tpl_iterate(tpl_render *r, int line, tpl_value v, tpl_value **items, size_t *n) {
    switch (v.kind) {
    case TV_UNDEF:
        *items = NULL;
        *n = 0;
        return KR_OK;
    case TV_LIST:
        if (v.l->kind == TL_GEN) {
            *items = v.l->items + v.l->pos;
            *n = v.l->n - v.l->pos;
            v.l->pos = v.l->n;
        } else {
            *items = v.l->items;
            *n = v.l->n;
        }
        return KR_OK;
    case TV_DICT:
        *items = v.d->keys;
        *n = v.d->n;
        return KR_OK;
    case TV_STR: {
        size_t count = tpl_utf8_count(v.s.p, v.s.n), k = 0;
        tpl_value *out = tpl_alloc(&r->arena, (count ? count : 1) * sizeof *out);
        for (size_t i = 0; i < v.s.n;) {
            size_t adv;
            tpl_utf8_next(v.s.p + i, v.s.n - i, &adv);
            out[k++] = tpl_str(v.s.p + i, adv);
            i += adv;
        }
        *items = out;
        *n = k;
        return KR_OK;
    }
    default: break;
    }
    return tpl_fail(r, line, KR_ERR_ARG, "TypeError: '%s' object is not iterable", tpl_type_name(v));
}

/* ---- operators ------------------------------------------------------------------------------ */

static bool is_num(tpl_value v) { return v.kind == TV_INT || v.kind == TV_FLOAT || v.kind == TV_BOOL; }
static int64_t int_of(tpl_value v) { return v.kind == TV_BOOL ? v.b : v.i; }
static double float_of(tpl_value v) { return v.kind == TV_FLOAT ? v.f : (double)int_of(v); }

static const char *op_symbol(int op) {
    static const char *const s[] = {"+", "-", "*", "/", "//", "%", "**"};
    return s[op];
}

static kr_status type_error_binop(tpl_render *r, int line, int op, tpl_value a, tpl_value b) {
    if (op == OP_ADD && a.kind == TV_STR)
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: can only concatenate str (not \"%s\") to str", tpl_type_name(b));
    if (op == OP_ADD && a.kind == TV_LIST && a.l->kind == TL_LIST)
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: can only concatenate list (not \"%s\") to list", tpl_type_name(b));
    return tpl_fail(r, line, KR_ERR_ARG, "TypeError: unsupported operand type(s) for %s: '%s' and '%s'", op_symbol(op),
                    tpl_type_name(a), tpl_type_name(b));
}

static tpl_value concat_lists(tpl_render *r, tpl_value a, tpl_value b) {
    tpl_value l = tpl_list_new(&r->arena, (tpl_list_kind)a.l->kind, a.l->n + b.l->n);
    tpl_memcpy(l.l->items, a.l->items, a.l->n * sizeof *a.l->items);
    tpl_memcpy(l.l->items + a.l->n, b.l->items, b.l->n * sizeof *b.l->items);
    return l;
}

static kr_status repeat(tpl_render *r, int line, tpl_value seq, int64_t times, tpl_value *out) {
    if (times < 0)
        times = 0;
    size_t unit = seq.kind == TV_STR ? seq.s.n : seq.l->n;
    if (unit && (uint64_t)times > (SIZE_MAX / 2) / unit / sizeof(tpl_value))
        return tpl_fail(r, line, KR_ERR_ARG, "sequence repetition too large");
    if (seq.kind == TV_STR) {
        char *p = tpl_alloc(&r->arena, unit * (size_t)times + 1);
        for (int64_t i = 0; i < times; i++)
            tpl_memcpy(p + (size_t)i * unit, seq.s.p, unit);
        *out = tpl_str(p, unit * (size_t)times);
        return KR_OK;
    }
    tpl_value l = tpl_list_new(&r->arena, (tpl_list_kind)seq.l->kind, unit * (size_t)times);
    for (int64_t i = 0; i < times; i++)
        tpl_memcpy(l.l->items + (size_t)i * unit, seq.l->items, unit * sizeof *l.l->items);
    *out = l;
    return KR_OK;
}

static double py_fmod(double a, double b) {
    double m = fmod(a, b);
    if (m != 0 && ((m < 0) != (b < 0)))
        m += b;
    return m;
}

static kr_status int_arith(tpl_render *r, int line, int op, int64_t x, int64_t y, tpl_value *out) {
    int64_t z;
    bool overflow = false;
    switch (op) {
    case OP_ADD: overflow = __builtin_add_overflow(x, y, &z); break;
    case OP_SUB: overflow = __builtin_sub_overflow(x, y, &z); break;
    case OP_MUL: overflow = __builtin_mul_overflow(x, y, &z); break;
    case OP_FLOORDIV:
    case OP_MOD:
        if (y == 0)
            return tpl_fail(r, line, KR_ERR_ARG, "ZeroDivisionError: integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) {
            overflow = true;
            break;
        }
        z = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0)))
            z--; /* Python floors */
        if (op == OP_MOD)
            z = x - z * y;
        break;
    case OP_POW:
        if (y < 0) {
            *out = tpl_float(pow((double)x, (double)y));
            return KR_OK;
        }
        z = 1;
        for (int64_t i = 0; i < y && !overflow; i++)
            overflow = __builtin_mul_overflow(z, x, &z);
        break;
    default: z = 0;
    }
    if (overflow)
        return tpl_fail(r, line, KR_ERR_UNSUPPORTED, "integer overflow in '%s' (Python integers are unbounded; krasis stops at 64 bits)",
                        op_symbol(op));
    *out = tpl_int(z);
    return KR_OK;
}

kr_status tpl_binop_eval(tpl_render *r, int line, int op, tpl_value a, tpl_value b, tpl_value *out) {
    if (a.kind == TV_UNDEF)
        return tpl_undef_error(r, line, a);
    if (b.kind == TV_UNDEF)
        return tpl_undef_error(r, line, b);
    if (is_num(a) && is_num(b)) {
        if (op == OP_DIV) {
            if (float_of(b) == 0)
                return tpl_fail(r, line, KR_ERR_ARG, "ZeroDivisionError: division by zero");
            *out = tpl_float(float_of(a) / float_of(b));
            return KR_OK;
        }
        if (a.kind != TV_FLOAT && b.kind != TV_FLOAT)
            return int_arith(r, line, op, int_of(a), int_of(b), out);
        double x = float_of(a), y = float_of(b);
        switch (op) {
        case OP_ADD: *out = tpl_float(x + y); return KR_OK;
        case OP_SUB: *out = tpl_float(x - y); return KR_OK;
        case OP_MUL: *out = tpl_float(x * y); return KR_OK;
        case OP_FLOORDIV:
        case OP_MOD:
            if (y == 0)
                return tpl_fail(r, line, KR_ERR_ARG, "ZeroDivisionError: float division by zero");
            *out = tpl_float(op == OP_MOD ? py_fmod(x, y) : floor(x / y));
            return KR_OK;
        case OP_POW: *out = tpl_float(pow(x, y)); return KR_OK;
        }
    }
    if (op == OP_ADD && a.kind == TV_STR && b.kind == TV_STR) {
        char *p = tpl_alloc(&r->arena, a.s.n + b.s.n + 1);
        tpl_memcpy(p, a.s.p, a.s.n);
        tpl_memcpy(p + a.s.n, b.s.p, b.s.n);
        *out = tpl_str(p, a.s.n + b.s.n);
        return KR_OK;
    }
    if (op == OP_ADD && a.kind == TV_LIST && b.kind == TV_LIST && a.l->kind == b.l->kind &&
        (a.l->kind == TL_LIST || a.l->kind == TL_TUPLE)) {
        *out = concat_lists(r, a, b);
        return KR_OK;
    }
    if (op == OP_MUL) {
        bool a_seq = a.kind == TV_STR || (a.kind == TV_LIST && (a.l->kind == TL_LIST || a.l->kind == TL_TUPLE));
        bool b_seq = b.kind == TV_STR || (b.kind == TV_LIST && (b.l->kind == TL_LIST || b.l->kind == TL_TUPLE));
        if (a_seq && (b.kind == TV_INT || b.kind == TV_BOOL))
            return repeat(r, line, a, int_of(b), out);
        if (b_seq && (a.kind == TV_INT || a.kind == TV_BOOL))
            return repeat(r, line, b, int_of(a), out);
    }
    if (op == OP_MOD && a.kind == TV_STR) {
        tpl_args args = {.pos = &b, .npos = 1};
        return tpl_apply_filter(r, line, "format", a, &args, out);
    }
    return type_error_binop(r, line, op, a, b);
}

static int order_of(tpl_value a, tpl_value b, bool *ok);

/* Python's <, <=, ... for the types that support them: -1, 0, 1, with *ok false when unordered. */
static int order_of(tpl_value a, tpl_value b, bool *ok) {
    *ok = true;
    if (is_num(a) && is_num(b)) {
        if (a.kind != TV_FLOAT && b.kind != TV_FLOAT)
            return (int_of(a) > int_of(b)) - (int_of(a) < int_of(b));
        double x = float_of(a), y = float_of(b);
        if (isnan(x) || isnan(y)) {
            *ok = true;
            return 2; /* every comparison with NaN is false */
        }
        return (x > y) - (x < y);
    }
    if (a.kind == TV_STR && b.kind == TV_STR) {
        size_t n = a.s.n < b.s.n ? a.s.n : b.s.n;
        int c = memcmp(a.s.p, b.s.p, n); /* UTF-8 byte order is code point order */
        if (c)
            return c < 0 ? -1 : 1;
        return (a.s.n > b.s.n) - (a.s.n < b.s.n);
    }
    if (a.kind == TV_LIST && b.kind == TV_LIST && a.l->kind == b.l->kind && (a.l->kind == TL_LIST || a.l->kind == TL_TUPLE)) {
        for (size_t i = 0; i < a.l->n && i < b.l->n; i++) {
            if (tpl_equal(a.l->items[i], b.l->items[i]))
                continue;
            return order_of(a.l->items[i], b.l->items[i], ok);
        }
        return (a.l->n > b.l->n) - (a.l->n < b.l->n);
    }
    *ok = false;
    return 0;
}

static kr_status contains(tpl_render *r, int line, tpl_value needle, tpl_value hay, bool *out) {
    *out = false;
    if (hay.kind == TV_STR) {
        if (needle.kind == TV_UNDEF)
            return tpl_undef_error(r, line, needle);
        if (needle.kind != TV_STR)
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: 'in <string>' requires string as left operand, not %s",
                            tpl_type_name(needle));
        if (needle.s.n == 0) {
            *out = true;
            return KR_OK;
        }
        for (size_t i = 0; i + needle.s.n <= hay.s.n; i++)
            if (memcmp(hay.s.p + i, needle.s.p, needle.s.n) == 0) {
                *out = true;
                break;
            }
        return KR_OK;
    }
    if (hay.kind == TV_DICT) {
        *out = tpl_dict_get(hay.d, needle) != NULL;
        return KR_OK;
    }
    if (hay.kind == TV_LIST && hay.l->kind == TL_GEN) { /* consumes up to the match, as Python does */
        for (; hay.l->pos < hay.l->n;)
            if (tpl_equal(hay.l->items[hay.l->pos++], needle)) {
                *out = true;
                break;
            }
        return KR_OK;
    }
    if (hay.kind == TV_LIST || hay.kind == TV_UNDEF) {
        tpl_value *items;
        size_t n;
        KR_TRY(tpl_iterate(r, line, hay, &items, &n));
        for (size_t i = 0; i < n; i++)
            if (tpl_equal(items[i], needle)) {
                *out = true;
                break;
            }
        return KR_OK;
    }
    return tpl_fail(r, line, KR_ERR_ARG, "TypeError: argument of type '%s' is not iterable", tpl_type_name(hay));
}

kr_status tpl_compare(tpl_render *r, int line, int op, tpl_value a, tpl_value b, bool *out) {
    switch (op) {
    case CMP_EQ: *out = tpl_equal(a, b); return KR_OK;
    case CMP_NE: *out = !tpl_equal(a, b); return KR_OK;
    case CMP_IN: return contains(r, line, a, b, out);
    case CMP_NOTIN:
        KR_TRY(contains(r, line, a, b, out));
        *out = !*out;
        return KR_OK;
    default: break;
    }
    if (a.kind == TV_UNDEF)
        return tpl_undef_error(r, line, a);
    if (b.kind == TV_UNDEF)
        return tpl_undef_error(r, line, b);
    bool ok;
    int c = order_of(a, b, &ok);
    if (!ok) {
        static const char *const sym[] = {"==", "!=", "<", "<=", ">", ">="};
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: '%s' not supported between instances of '%s' and '%s'", sym[op],
                        tpl_type_name(a), tpl_type_name(b));
    }
    if (c == 2) {
        *out = false;
        return KR_OK;
    }
    switch (op) {
    case CMP_LT: *out = c < 0; break;
    case CMP_LE: *out = c <= 0; break;
    case CMP_GT: *out = c > 0; break;
    default: *out = c >= 0; break;
    }
    return KR_OK;
}

kr_status tpl_str_of(tpl_render *r, int line, tpl_value v, tpl_value *out) {
    if (v.kind == TV_STR) {
        *out = v;
        return KR_OK;
    }
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    KR_TRY(with_position(r, line, tpl_to_str(&b, v)));
    *out = tpl_str(b.p, b.n);
    return KR_OK;
}

/* ---- expressions ---------------------------------------------------------------------------- */

static kr_status eval(tpl_render *r, tpl_scope *s, const tpl_node *n, tpl_value *out);
static kr_status exec_body(tpl_render *r, tpl_scope *s, const tpl_nodes *body, tpl_buf *out);

typedef struct {
    tpl_value pipe_input; /* the captured text a {% filter %} or {% set x | f %} chain applies to */
} eval_extra;

static kr_status eval_args(tpl_render *r, tpl_scope *s, const tpl_node *n, tpl_args *args) {
    size_t npos = n->args.n, nkw = n->kwvals.n;
    tpl_value star = tpl_none(), starstar = tpl_none();
    tpl_value *star_items = NULL;
    size_t nstar = 0;
    if (n->dyn_args) {
        KR_TRY(eval(r, s, n->dyn_args, &star));
        KR_TRY(tpl_iterate(r, n->line, star, &star_items, &nstar));
    }
    if (n->dyn_kwargs) {
        KR_TRY(eval(r, s, n->dyn_kwargs, &starstar));
        if (starstar.kind != TV_DICT)
            return tpl_fail(r, n->line, KR_ERR_ARG, "TypeError: argument after ** must be a mapping, not %s",
                            tpl_type_name(starstar));
    }
    size_t nkw_all = nkw + (starstar.kind == TV_DICT ? starstar.d->n : 0);
    args->pos = tpl_alloc(&r->arena, (npos + nstar + 1) * sizeof *args->pos);
    args->kwvals = tpl_alloc(&r->arena, (nkw_all + 1) * sizeof *args->kwvals);
    args->kwnames = tpl_alloc(&r->arena, (nkw_all + 1) * sizeof *args->kwnames);
    for (size_t i = 0; i < npos; i++)
        KR_TRY(eval(r, s, n->args.v[i], &args->pos[i]));
    tpl_memcpy(args->pos + npos, star_items, nstar * sizeof *star_items);
    args->npos = npos + nstar;
    for (size_t i = 0; i < nkw; i++) {
        args->kwnames[i] = n->kwnames[i];
        KR_TRY(eval(r, s, n->kwvals.v[i], &args->kwvals[i]));
    }
    args->nkw = nkw;
    if (starstar.kind == TV_DICT)
        for (size_t i = 0; i < starstar.d->n; i++) {
            if (starstar.d->keys[i].kind != TV_STR)
                return tpl_fail(r, n->line, KR_ERR_ARG, "TypeError: keywords must be strings");
            args->kwnames[args->nkw] = tpl_strndup(&r->arena, starstar.d->keys[i].s.p, starstar.d->keys[i].s.n);
            args->kwvals[args->nkw++] = starstar.d->vals[i];
        }
    return KR_OK;
}

static int64_t clamp_index(int64_t i, int64_t len, bool is_stop, int64_t step) {
    (void)is_stop;
    if (i < 0) {
        i += len;
        if (i < 0)
            i = step < 0 ? -1 : 0;
    } else if (i >= len)
        i = step < 0 ? len - 1 : len;
    return i;
}

/* seq[start:stop:step] on a list, tuple or string (by code point). */
static kr_status eval_slice(tpl_render *r, tpl_scope *s, const tpl_node *sl, tpl_value seq, tpl_value *out) {
    int64_t idx[3];
    bool given[3];
    const tpl_node *parts[3] = {sl->a, sl->b, sl->c};
    for (int k = 0; k < 3; k++) {
        given[k] = false;
        if (!parts[k])
            continue;
        tpl_value v;
        KR_TRY(eval(r, s, parts[k], &v));
        if (v.kind == TV_NONE)
            continue;
        if (v.kind != TV_INT && v.kind != TV_BOOL)
            return tpl_fail(r, sl->line, KR_ERR_ARG, "TypeError: slice indices must be integers or None");
        idx[k] = v.kind == TV_BOOL ? v.b : v.i;
        given[k] = true;
    }
    int64_t step = given[2] ? idx[2] : 1;
    if (step == 0)
        return tpl_fail(r, sl->line, KR_ERR_ARG, "ValueError: slice step cannot be zero");
    bool is_str = seq.kind == TV_STR;
    if (!is_str && !(seq.kind == TV_LIST && (seq.l->kind == TL_LIST || seq.l->kind == TL_TUPLE))) {
        if (seq.kind == TV_UNDEF)
            return tpl_undef_error(r, sl->line, seq);
        *out = tpl_undef("slice of a value that has no items"); /* jinja2: getitem fails -> Undefined */
        return KR_OK;
    }
    /* strings: slice over code point offsets */
    size_t len;
    size_t *offs = NULL;
    if (is_str) {
        len = tpl_utf8_count(seq.s.p, seq.s.n);
        offs = tpl_alloc(&r->arena, (len + 1) * sizeof *offs);
        size_t k = 0;
        for (size_t i = 0; i < seq.s.n;) {
            size_t adv;
            tpl_utf8_next(seq.s.p + i, seq.s.n - i, &adv);
            offs[k++] = i;
            i += adv;
        }
        len = k;
        offs[len] = seq.s.n;
    } else
        len = seq.l->n;
    int64_t L = (int64_t)len;
    int64_t start = given[0] ? clamp_index(idx[0], L, false, step) : (step < 0 ? L - 1 : 0);
    int64_t stop = given[1] ? clamp_index(idx[1], L, true, step) : (step < 0 ? -1 : L);
    size_t count = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        count++;
    if (is_str) {
        tpl_buf b;
        tpl_buf_init(&b, &r->arena);
        for (int64_t i = start, k = 0; k < (int64_t)count; i += step, k++)
            tpl_buf_add(&b, seq.s.p + offs[i], offs[i + 1] - offs[i]);
        *out = tpl_str(b.p ? b.p : "", b.n);
        return KR_OK;
    }
    tpl_value l = tpl_list_new(&r->arena, (tpl_list_kind)seq.l->kind, count);
    for (int64_t i = start, k = 0; k < (int64_t)count; i += step, k++)
        l.l->items[k] = seq.l->items[i];
    *out = l;
    return KR_OK;
}

static kr_status eval_filter(tpl_render *r, tpl_scope *s, const tpl_node *n, eval_extra *x, tpl_value *out) {
    tpl_value v;
    if (!n->a)
        v = x->pipe_input;
    else if (n->a->kind == E_FILTER)
        KR_TRY(eval_filter(r, s, n->a, x, &v));
    else
        KR_TRY(eval(r, s, n->a, &v));
    tpl_args args;
    KR_TRY(eval_args(r, s, n, &args));
    return tpl_apply_filter(r, n->line, n->name, v, &args, out);
}

static kr_status eval_compare(tpl_render *r, tpl_scope *s, const tpl_node *n, tpl_value *out) {
    tpl_value left;
    KR_TRY(eval(r, s, n->a, &left));
    for (size_t i = 0; i < n->args.n; i++) {
        tpl_value right;
        KR_TRY(eval(r, s, n->args.v[i], &right));
        bool ok;
        KR_TRY(tpl_compare(r, n->line, n->ops[i], left, right, &ok));
        if (!ok) {
            *out = tpl_bool(false);
            return KR_OK;
        }
        left = right;
    }
    *out = tpl_bool(true);
    return KR_OK;
}

static kr_status eval_items(tpl_render *r, tpl_scope *s, const tpl_nodes *items, tpl_list_kind kind, tpl_value *out) {
    tpl_value l = tpl_list_new(&r->arena, kind, items->n);
    for (size_t i = 0; i < items->n; i++)
        KR_TRY(eval(r, s, items->v[i], &l.l->items[i]));
    *out = l;
    return KR_OK;
}

static kr_status eval_call(tpl_render *r, tpl_scope *s, const tpl_node *n, tpl_value caller, tpl_value *out);

static kr_status eval_x(tpl_render *r, tpl_scope *s, const tpl_node *n, eval_extra *x, tpl_value *out) {
    switch (n->kind) {
    case E_CONST: *out = n->constant; return KR_OK;
    case E_NAME: *out = lookup(r, s, n->name); return KR_OK;
    case E_GETATTR: {
        tpl_value obj;
        KR_TRY(eval(r, s, n->a, &obj));
        return tpl_getattr(r, n->line, obj, n->attr, out);
    }
    case E_GETITEM: {
        tpl_value obj, key;
        KR_TRY(eval(r, s, n->a, &obj));
        if (n->b->kind == E_SLICE)
            return eval_slice(r, s, n->b, obj, out);
        KR_TRY(eval(r, s, n->b, &key));
        return tpl_getitem(r, n->line, obj, key, out);
    }
    case E_SLICE: return tpl_fail(r, n->line, KR_ERR_UNSUPPORTED, "unsupported: a slice inside a tuple subscript");
    case E_CALL: return eval_call(r, s, n, tpl_undef(NULL), out);
    case E_FILTER: return eval_filter(r, s, n, x, out);
    case E_TEST: {
        tpl_value v;
        KR_TRY(eval(r, s, n->a, &v));
        tpl_args args;
        KR_TRY(eval_args(r, s, n, &args));
        bool b;
        KR_TRY(tpl_apply_test(r, n->line, n->name, v, &args, &b));
        *out = tpl_bool(b);
        return KR_OK;
    }
    case E_NOT: {
        tpl_value v;
        KR_TRY(eval_x(r, s, n->a, x, &v));
        *out = tpl_bool(!tpl_truthy(v));
        return KR_OK;
    }
    case E_NEG:
    case E_POS: {
        tpl_value v;
        KR_TRY(eval(r, s, n->a, &v));
        if (v.kind == TV_UNDEF)
            return tpl_undef_error(r, n->line, v);
        if (!is_num(v))
            return tpl_fail(r, n->line, KR_ERR_ARG, "TypeError: bad operand type for unary %c: '%s'",
                            n->kind == E_NEG ? '-' : '+', tpl_type_name(v));
        if (n->kind == E_POS)
            *out = v.kind == TV_BOOL ? tpl_int(v.b) : v;
        else if (v.kind == TV_FLOAT)
            *out = tpl_float(-v.f);
        else if (int_of(v) == INT64_MIN)
            return tpl_fail(r, n->line, KR_ERR_UNSUPPORTED, "integer overflow in unary '-'");
        else
            *out = tpl_int(-int_of(v));
        return KR_OK;
    }
    case E_BINOP: {
        tpl_value a, b;
        KR_TRY(eval(r, s, n->a, &a));
        KR_TRY(eval(r, s, n->b, &b));
        return tpl_binop_eval(r, n->line, n->op, a, b, out);
    }
    case E_AND:
    case E_OR: {
        tpl_value a;
        KR_TRY(eval(r, s, n->a, &a));
        if (tpl_truthy(a) == (n->kind == E_OR)) {
            *out = a;
            return KR_OK;
        }
        return eval(r, s, n->b, out);
    }
    case E_COMPARE: return eval_compare(r, s, n, out);
    case E_CONCAT: {
        tpl_buf b;
        tpl_buf_init(&b, &r->arena);
        for (size_t i = 0; i < n->args.n; i++) {
            tpl_value v;
            KR_TRY(eval(r, s, n->args.v[i], &v));
            KR_TRY(with_position(r, n->line, tpl_to_str(&b, v)));
        }
        *out = tpl_str(b.p, b.n);
        return KR_OK;
    }
    case E_COND: {
        tpl_value t;
        KR_TRY(eval(r, s, n->b, &t));
        if (tpl_truthy(t))
            return eval(r, s, n->a, out);
        if (n->c)
            return eval(r, s, n->c, out);
        *out = tpl_undef("the inline if-expression evaluated to false and no else section was defined");
        return KR_OK;
    }
    case E_LIST: return eval_items(r, s, &n->args, TL_LIST, out);
    case E_TUPLE: return eval_items(r, s, &n->args, TL_TUPLE, out);
    case E_DICT: {
        tpl_value d = tpl_dict_new(&r->arena, n->args.n);
        for (size_t i = 0; i < n->args.n; i++) {
            tpl_value k, v;
            KR_TRY(eval(r, s, n->args.v[i], &k));
            KR_TRY(eval(r, s, n->kwvals.v[i], &v));
            if (k.kind == TV_LIST && k.l->kind != TL_TUPLE)
                return tpl_fail(r, n->line, KR_ERR_ARG, "TypeError: unhashable type: 'list'");
            if (k.kind == TV_DICT || k.kind == TV_UNDEF)
                return tpl_fail(r, n->line, KR_ERR_ARG, "TypeError: unhashable type: '%s'", tpl_type_name(k));
            tpl_dict_set(&r->arena, d.d, k, v);
        }
        *out = d;
        return KR_OK;
    }
    case E_NSREF: return tpl_fail(r, n->line, KR_ERR_FORMAT, "'%s.%s' can only be assigned to", n->name, n->attr);
    default: break;
    }
    return tpl_fail(r, n->line, KR_ERR_UNSUPPORTED, "internal: node %d is not an expression", n->kind);
}

static kr_status eval(tpl_render *r, tpl_scope *s, const tpl_node *n, tpl_value *out) {
    eval_extra x = {.pipe_input = tpl_undef(NULL)};
    return eval_x(r, s, n, &x, out);
}

/* ---- macros --------------------------------------------------------------------------------- */

static kr_status call_macro(tpl_render *r, int line, const tpl_macro *m, tpl_args *args, tpl_value *out) {
    const tpl_node *def = m->node;
    size_t nparams = def->args.n, ndefaults = def->kwvals.n;
    bool takes_varargs = def->kind == N_MACRO ? (def->op & TPL_MACRO_VARARGS) != 0 : false;
    bool takes_kwargs = def->kind == N_MACRO ? (def->op & TPL_MACRO_KWARGS) != 0 : false;
    if (args->npos > nparams && !takes_varargs)
        return tpl_fail(r, line, KR_ERR_ARG, "TypeError: macro '%s' takes not more than %zu argument(s)", m->name, nparams);
    if (++r->depth > TPL_MAX_CALL_DEPTH)
        return tpl_fail(r, line, KR_ERR_ARG, "macro calls nested more than %d deep (runaway recursion?)", TPL_MAX_CALL_DEPTH);
    tpl_scope *s = scope_new(r, m->closure);
    bool *bound = tpl_alloc(&r->arena, (nparams + 1) * sizeof *bound);
    for (size_t i = 0; i < nparams && i < args->npos; i++) {
        scope_set(r, s, def->args.v[i]->name, args->pos[i]);
        bound[i] = true;
    }
    tpl_value extra_kw = tpl_dict_new(&r->arena, 4);
    for (size_t k = 0; k < args->nkw; k++) {
        size_t i;
        for (i = 0; i < nparams; i++)
            if (!strcmp(def->args.v[i]->name, args->kwnames[k]))
                break;
        if (i < nparams) {
            if (bound[i])
                return tpl_fail(r, line, KR_ERR_ARG, "TypeError: macro '%s' got multiple values for argument '%s'", m->name,
                                args->kwnames[k]);
            scope_set(r, s, def->args.v[i]->name, args->kwvals[k]);
            bound[i] = true;
        } else if (!strcmp(args->kwnames[k], "caller") && def->kind == N_MACRO) {
            scope_set(r, s, "caller", args->kwvals[k]);
        } else if (takes_kwargs)
            tpl_dict_set(&r->arena, extra_kw.d, tpl_cstr(args->kwnames[k]), args->kwvals[k]);
        else
            return tpl_fail(r, line, KR_ERR_ARG, "TypeError: macro '%s' takes no keyword argument '%s'", m->name,
                            args->kwnames[k]);
    }
    for (size_t i = 0; i < nparams; i++) {
        if (bound[i])
            continue;
        size_t first_default = nparams - ndefaults;
        tpl_value v;
        if (i >= first_default)
            KR_TRY(eval(r, s, def->kwvals.v[i - first_default], &v));
        else {
            tpl_buf b;
            tpl_buf_init(&b, &r->arena);
            tpl_buf_printf(&b, "parameter '%s' was not provided", def->args.v[i]->name);
            v = tpl_undef(b.p);
        }
        scope_set(r, s, def->args.v[i]->name, v);
    }
    if (takes_varargs) {
        size_t extra = args->npos > nparams ? args->npos - nparams : 0;
        tpl_value va = tpl_list_new(&r->arena, TL_TUPLE, extra);
        tpl_memcpy(va.l->items, args->pos + nparams, extra * sizeof *va.l->items);
        scope_set(r, s, "varargs", va);
    }
    if (takes_kwargs)
        scope_set(r, s, "kwargs", extra_kw);
    if (m->caller.kind == TV_MACRO)
        scope_set(r, s, "caller", m->caller);
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    int saved_ctl = r->loop_ctl;
    KR_TRY(exec_body(r, s, &def->body, &b));
    r->loop_ctl = saved_ctl;
    r->depth--;
    *out = tpl_str(b.p ? b.p : "", b.n);
    return KR_OK;
}

kr_status tpl_call_value(tpl_render *r, int line, tpl_value callee, tpl_args *args, tpl_value *out) {
    switch (callee.kind) {
    case TV_MACRO: return call_macro(r, line, callee.m, args, out);
    case TV_FUNC: return tpl_call_func(r, line, callee.fn, args, out);
    case TV_UNDEF: return tpl_undef_error(r, line, callee);
    default: break;
    }
    return tpl_fail(r, line, KR_ERR_ARG, "TypeError: '%s' object is not callable", tpl_type_name(callee));
}

static kr_status eval_call(tpl_render *r, tpl_scope *s, const tpl_node *n, tpl_value caller, tpl_value *out) {
    tpl_value callee;
    KR_TRY(eval(r, s, n->a, &callee));
    tpl_args args;
    KR_TRY(eval_args(r, s, n, &args));
    if (caller.kind == TV_MACRO) {
        if (callee.kind != TV_MACRO)
            return tpl_fail(r, n->line, KR_ERR_UNSUPPORTED, "unsupported: {%% call %%} of something other than a macro");
        tpl_macro *with_caller = tpl_alloc(&r->arena, sizeof *with_caller);
        *with_caller = *callee.m;
        with_caller->caller = caller;
        return call_macro(r, n->line, with_caller, &args, out);
    }
    return tpl_call_value(r, n->line, callee, &args, out);
}

/* ---- statements ----------------------------------------------------------------------------- */

static kr_status assign(tpl_render *r, tpl_scope *s, const tpl_node *target, tpl_value v) {
    if (target->kind == E_NAME) {
        scope_set(r, s, target->name, v);
        return KR_OK;
    }
    if (target->kind == E_NSREF) {
        tpl_value ns = lookup(r, s, target->name);
        if (ns.kind != TV_NS)
            return tpl_fail(r, target->line, KR_ERR_ARG, "cannot assign attribute on non-namespace object '%s'", target->name);
        if (target->attr[0] == '_')
            return tpl_fail(r, target->line, KR_ERR_ARG,
                            "SecurityError: chat templates cannot store underscore-prefixed attributes on a namespace ('%s')",
                            target->attr);
        tpl_dict_set(&r->arena, ns.d, tpl_cstr(target->attr), v);
        return KR_OK;
    }
    /* a tuple of names: unpack */
    tpl_value *items;
    size_t n;
    if (v.kind == TV_UNDEF)
        return tpl_undef_error(r, target->line, v);
    KR_TRY(tpl_iterate(r, target->line, v, &items, &n));
    if (n != target->args.n)
        return tpl_fail(r, target->line, KR_ERR_ARG, "ValueError: %s values to unpack (expected %zu, got %zu)",
                        n < target->args.n ? "not enough" : "too many", target->args.n, n);
    for (size_t i = 0; i < n; i++)
        KR_TRY(assign(r, s, target->args.v[i], items[i]));
    return KR_OK;
}

static kr_status exec_for(tpl_render *r, tpl_scope *s, const tpl_node *n, tpl_buf *out) {
    tpl_value seq;
    KR_TRY(eval(r, s, n->b, &seq));
    tpl_value *items;
    size_t count;
    KR_TRY(tpl_iterate(r, n->line, seq, &items, &count));
    if (n->c) { /* `for x in y if cond`: the condition sees the loop variable, loop.* counts what passes */
        tpl_value *kept = tpl_alloc(&r->arena, (count + 1) * sizeof *kept);
        size_t k = 0;
        for (size_t i = 0; i < count; i++) {
            tpl_scope *fs = scope_new(r, s);
            KR_TRY(assign(r, fs, n->a, items[i]));
            tpl_value t;
            KR_TRY(eval(r, fs, n->c, &t));
            if (tpl_truthy(t))
                kept[k++] = items[i];
        }
        items = kept;
        count = k;
    }
    if (count == 0)
        return exec_body(r, s, &n->orelse, out);
    tpl_loop *loop = tpl_alloc(&r->arena, sizeof *loop);
    loop->length = (int64_t)count;
    for (size_t i = 0; i < count; i++) {
        loop->index0 = (int64_t)i;
        loop->has_prev = i > 0;
        loop->has_next = i + 1 < count;
        loop->prev = i > 0 ? items[i - 1] : tpl_undef("there is no previous item");
        loop->next = i + 1 < count ? items[i + 1] : tpl_undef("there is no next item");
        tpl_scope *it = scope_new(r, s);
        scope_set(r, it, "loop", (tpl_value){.kind = TV_LOOP, .loop = loop});
        KR_TRY(assign(r, it, n->a, items[i]));
        KR_TRY(exec_body(r, it, &n->body, out));
        if (r->loop_ctl == 1) {
            r->loop_ctl = 0;
            break;
        }
        r->loop_ctl = 0;
    }
    return KR_OK;
}

static kr_status capture(tpl_render *r, tpl_scope *s, const tpl_nodes *body, tpl_value *out) {
    tpl_buf b;
    tpl_buf_init(&b, &r->arena);
    KR_TRY(exec_body(r, s, body, &b));
    *out = tpl_str(b.p ? b.p : "", b.n);
    return KR_OK;
}

static kr_status exec_node(tpl_render *r, tpl_scope *s, const tpl_node *n, tpl_buf *out) {
    switch (n->kind) {
    case N_TEXT: tpl_buf_add(out, n->constant.s.p, n->constant.s.n); return KR_OK;
    case N_OUTPUT: {
        tpl_value v;
        KR_TRY(eval(r, s, n->a, &v));
        return with_position(r, n->line, tpl_to_str(out, v));
    }
    case N_IF: {
        tpl_value t;
        KR_TRY(eval(r, s, n->a, &t));
        return exec_body(r, s, tpl_truthy(t) ? &n->body : &n->orelse, out);
    }
    case N_FOR: return exec_for(r, s, n, out);
    case N_SET: {
        tpl_value v;
        KR_TRY(eval(r, s, n->b, &v));
        return assign(r, s, n->a, v);
    }
    case N_SET_BLOCK: {
        tpl_value v;
        KR_TRY(capture(r, scope_new(r, s), &n->body, &v));
        if (n->c) {
            eval_extra x = {.pipe_input = v};
            KR_TRY(eval_filter(r, s, n->c, &x, &v));
        }
        return assign(r, s, n->a, v);
    }
    case N_FILTER_BLOCK: {
        tpl_value v;
        KR_TRY(capture(r, scope_new(r, s), &n->body, &v));
        eval_extra x = {.pipe_input = v};
        KR_TRY(eval_filter(r, s, n->c, &x, &v));
        return with_position(r, n->line, tpl_to_str(out, v));
    }
    case N_MACRO: {
        tpl_macro *m = tpl_alloc(&r->arena, sizeof *m);
        m->node = n;
        m->closure = s;
        m->name = n->name;
        m->caller = tpl_undef(NULL);
        scope_set(r, s, n->name, (tpl_value){.kind = TV_MACRO, .m = m});
        return KR_OK;
    }
    case N_CALL_BLOCK: {
        tpl_macro *c = tpl_alloc(&r->arena, sizeof *c);
        c->node = n;
        c->closure = s;
        c->name = "caller";
        c->caller = tpl_undef(NULL);
        tpl_value v;
        KR_TRY(eval_call(r, s, n->a, (tpl_value){.kind = TV_MACRO, .m = c}, &v));
        return with_position(r, n->line, tpl_to_str(out, v));
    }
    case N_WITH: {
        tpl_scope *w = scope_new(r, s);
        for (size_t i = 0; i < n->args.n; i++) {
            tpl_value v;
            KR_TRY(eval(r, s, n->kwvals.v[i], &v));
            KR_TRY(assign(r, w, n->args.v[i], v));
        }
        return exec_body(r, w, &n->body, out);
    }
    case N_BREAK: r->loop_ctl = 1; return KR_OK;
    case N_CONTINUE: r->loop_ctl = 2; return KR_OK;
    case N_GENERATION: return exec_body(r, s, &n->body, out);
    default: break;
    }
    return tpl_fail(r, n->line, KR_ERR_UNSUPPORTED, "internal: node %d is not a statement", n->kind);
}

static kr_status exec_body(tpl_render *r, tpl_scope *s, const tpl_nodes *body, tpl_buf *out) {
    for (size_t i = 0; i < body->n && !r->loop_ctl; i++)
        KR_TRY(exec_node(r, s, body->v[i], out));
    return KR_OK;
}

/* ---- public API ----------------------------------------------------------------------------- */

kr_status kr_template_render(const kr_template *t, const json_t *context, char **out) {
    *out = NULL;
    if (!json_is_object(context))
        return kr_fail(KR_ERR_ARG, "%s: the render context must be a JSON object", t->name);
    tpl_render r = {.t = t};
    jmp_buf oom;
    r.arena.on_oom = &oom;
    if (setjmp(oom)) {
        bool over_limit = r.arena.over_limit;
        size_t limit = r.arena.limit;
        tpl_arena_free(&r.arena);
        if (over_limit)
            return kr_fail(KR_ERR_NOMEM, "%s: rendering needs more than %zu MiB (a runaway loop or repetition?)",
                           t->name, limit >> 20);
        return kr_fail(KR_ERR_NOMEM, "%s: out of memory while rendering", t->name);
    }
    tpl_value ctx = tpl_from_json(&r.arena, context);
    /* the limit grows with the conversation: the arena keeps every intermediate string of a render */
    r.arena.limit = TPL_RENDER_FACTOR * r.arena.bytes > TPL_RENDER_LIMIT ? TPL_RENDER_FACTOR * r.arena.bytes
                                                                          : TPL_RENDER_LIMIT;
    r.context = ctx.d;
    tpl_scope *root = scope_new(&r, NULL);
    tpl_buf b;
    tpl_buf_init(&b, &r.arena);
    kr_status s = exec_body(&r, root, &t->body, &b);
    if (s == KR_OK) {
        *out = malloc(b.n + 1);
        if (!*out)
            s = kr_fail(KR_ERR_NOMEM, "%s: out of memory for the rendered prompt (%zu bytes)", t->name, b.n);
        else {
            if (b.n)
                tpl_memcpy(*out, b.p, b.n);
            (*out)[b.n] = 0;
        }
    }
    tpl_arena_free(&r.arena);
    return s;
}
