/* Internals of the chat-template interpreter, shared by its four files:
 *   template.c          lexer, parser and the public API (template.h)
 *   template_value.c    the arena, the value type and Python's str()/repr()/json.dumps of values
 *   template_eval.c     the tree-walking evaluator (statements, expressions, scopes, macros)
 *   template_builtins.c filters, tests, methods of str/dict/list, and the globals
 * Every value of a render lives in one arena freed when the render ends, so values are plain structs
 * passed by copy, with no reference counts. Lists and dicts never change after they are built (the
 * sandbox transformers uses forbids append/update), except namespaces, which `set ns.x = v` edits. */
#ifndef KR_TOKENIZER_TEMPLATE_IMPL_H
#define KR_TOKENIZER_TEMPLATE_IMPL_H

#include <jansson.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "tokenizer/template.h"

/* ---- arena ---------------------------------------------------------------------------------- */

/* Out of memory is the one failure that unwinds by longjmp: everything the parser or a render
 * allocates lives in the arena, so nothing leaks when it does, and no call site has to check. */
typedef struct tpl_chunk tpl_chunk;
typedef struct {
    tpl_chunk *head;
    jmp_buf *on_oom;
    size_t bytes, limit;  /* allocated so far; above limit (0: none) it unwinds as out of memory */
    bool over_limit;      /* why it unwound: the limit, not malloc */
} tpl_arena;

/* A render's memory is capped at the larger of TPL_RENDER_LIMIT and TPL_RENDER_FACTOR times its converted
 * context (everything a render allocates stays in the arena until it ends, and the shipped templates peak
 * at ~15x their messages' size): past that a template is in a runaway loop or repetition ('ab' * 10**11),
 * and it fails with a message instead of taking the machine's memory. */
#define TPL_RENDER_LIMIT ((size_t)256 << 20)
#define TPL_RENDER_FACTOR 64

void *tpl_alloc(tpl_arena *a, size_t n); /* zeroed, 16-byte aligned */
char *tpl_strndup(tpl_arena *a, const char *s, size_t n);
void tpl_arena_free(tpl_arena *a);

/* memcpy that accepts (NULL, 0): empty lists and dicts have no storage yet. */
static inline void tpl_memcpy(void *dst, const void *src, size_t n) {
    if (n)
        __builtin_memcpy(dst, src, n);
}

/* A growable byte buffer in the arena (old blocks are left behind; the arena frees them). */
typedef struct {
    tpl_arena *a;
    char *p;
    size_t n, cap;
} tpl_buf;

void tpl_buf_init(tpl_buf *b, tpl_arena *a);
void tpl_buf_add(tpl_buf *b, const char *s, size_t n);
void tpl_buf_adds(tpl_buf *b, const char *s);
void tpl_buf_addc(tpl_buf *b, char c);
void tpl_buf_printf(tpl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- values --------------------------------------------------------------------------------- */

typedef enum {
    TV_UNDEF, /* jinja2's Undefined: prints as "", fails when used; `hint` says why it is undefined */
    TV_NONE,
    TV_BOOL,
    TV_INT,
    TV_FLOAT,
    TV_STR,
    TV_LIST, /* list, tuple, or one of Python's iterators/views (see tpl_list_kind) */
    TV_DICT,
    TV_NS,    /* namespace(): a mutable dict reached by attribute */
    TV_MACRO, /* a {% macro %} (or the `caller` of a {% call %}) */
    TV_FUNC,  /* a global function or a bound method */
    TV_LOOP,  /* the `loop` variable of a for */
} tpl_kind;

typedef enum {
    TL_LIST,
    TL_TUPLE,
    TL_GEN,    /* a generator (map, select, ...): truthy, no len, single pass, not JSON */
    TL_ITEMS,  /* dict.items() / keys() / values(): views; printed as dict_items([...]) */
    TL_KEYS,
    TL_VALUES,
} tpl_list_kind;

typedef struct tpl_list tpl_list;
typedef struct tpl_dict tpl_dict;
typedef struct tpl_func tpl_func;
typedef struct tpl_macro tpl_macro;
typedef struct tpl_loop tpl_loop;

typedef struct tpl_value {
    uint8_t kind; /* tpl_kind */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p; /* UTF-8, not NUL-terminated */
            size_t n;
        } s;
        tpl_list *l;
        tpl_dict *d;
        tpl_func *fn;
        tpl_macro *m;
        tpl_loop *loop;
        const char *hint; /* TV_UNDEF: "'x' is undefined", or NULL */
    };
} tpl_value;

struct tpl_list {
    uint8_t kind; /* tpl_list_kind */
    size_t n;
    size_t pos; /* TL_GEN: items before pos were consumed already */
    tpl_value *items;
};

struct tpl_dict {
    size_t n, cap;
    tpl_value *keys, *vals;
};

typedef enum { TF_GLOBAL, TF_METHOD } tpl_func_type;

struct tpl_func {
    uint8_t type;
    const char *name; /* global or method name */
    tpl_value self;   /* TF_METHOD: the object */
};

/* An unsafe attribute (list.append ...) is an Undefined whose hint is the sandbox's message; it
 * marks it so that calling it reports a security error like jinja2 rather than "undefined". */
#define TPL_UNSAFE_PREFIX "access to attribute "

tpl_value tpl_undef(const char *hint);
tpl_value tpl_none(void);
tpl_value tpl_bool(bool b);
tpl_value tpl_int(int64_t i);
tpl_value tpl_float(double f);
tpl_value tpl_str(const char *p, size_t n); /* p must outlive the value (arena or template) */
tpl_value tpl_cstr(const char *p);
tpl_value tpl_strcopy(tpl_arena *a, const char *p, size_t n);
tpl_value tpl_list_new(tpl_arena *a, tpl_list_kind kind, size_t n); /* items zeroed (undefined) */
tpl_value tpl_dict_new(tpl_arena *a, size_t cap);
void tpl_dict_set(tpl_arena *a, tpl_dict *d, tpl_value key, tpl_value val);
const tpl_value *tpl_dict_get(const tpl_dict *d, tpl_value key);
const tpl_value *tpl_dict_gets(const tpl_dict *d, const char *key);

bool tpl_truthy(tpl_value v);
bool tpl_equal(tpl_value a, tpl_value b);
bool tpl_is_str(tpl_value v, const char *s);
const char *tpl_type_name(tpl_value v); /* Python's: "str", "int", "NoneType", "list", ... */

/* Python str(v), repr(v) and json.dumps(v, ensure_ascii=False, indent, separators, sort_keys).
 * Each returns KR_OK or fails (with a message without position) for what Python would refuse or
 * what krasis cannot reproduce (the address in "<function x at 0x...>"). */
kr_status tpl_to_str(tpl_buf *out, tpl_value v);
kr_status tpl_repr(tpl_buf *out, tpl_value v);
typedef struct {
    int indent; /* -1: none */
    const char *item_sep, *key_sep;
    bool sort_keys;
    bool ensure_ascii;
} tpl_json_opts;
kr_status tpl_to_json(tpl_buf *out, tpl_value v, const tpl_json_opts *o, int level);
void tpl_float_repr(tpl_buf *out, double f);

tpl_value tpl_from_json(tpl_arena *a, const json_t *j);

/* UTF-8 helpers: code point at p (len bytes available), its byte length in *adv. Invalid bytes
 * decode as themselves (one byte) so that nothing is ever dropped. */
uint32_t tpl_utf8_next(const char *p, size_t len, size_t *adv);
size_t tpl_utf8_put(char *dst, uint32_t cp);
size_t tpl_utf8_count(const char *p, size_t n);
bool tpl_py_isspace(uint32_t cp); /* str.isspace() */

/* ---- syntax tree ---------------------------------------------------------------------------- */

typedef enum {
    /* statements */
    N_TEXT,
    N_OUTPUT,
    N_IF,
    N_FOR,
    N_SET,
    N_SET_BLOCK,
    N_MACRO,
    N_CALL_BLOCK,
    N_FILTER_BLOCK,
    N_WITH,
    N_BREAK,
    N_CONTINUE,
    N_GENERATION,
    /* expressions */
    E_CONST,
    E_NAME,
    E_NSREF, /* ns.attr as an assignment target */
    E_GETATTR,
    E_GETITEM,
    E_SLICE,
    E_CALL,
    E_FILTER,
    E_TEST,
    E_NOT,
    E_NEG,
    E_POS,
    E_BINOP,
    E_AND,
    E_OR,
    E_COMPARE,
    E_CONCAT,
    E_COND,
    E_LIST,
    E_TUPLE,
    E_DICT,
} tpl_node_kind;

#define TPL_MACRO_VARARGS 1 /* N_MACRO op flags */
#define TPL_MACRO_KWARGS 2

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW } tpl_binop;
typedef enum { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NOTIN } tpl_cmpop;

typedef struct tpl_node tpl_node;
typedef struct {
    tpl_node **v;
    size_t n;
} tpl_nodes;

struct tpl_node {
    uint8_t kind;
    int line;
    int op;           /* tpl_binop; for E_COMPARE the ops live in `ops` */
    const char *name; /* E_NAME, E_NSREF (the namespace), E_GETATTR/E_NSREF attr in `attr`, filter/test, macro */
    const char *attr;
    tpl_value constant; /* E_CONST, N_TEXT */
    tpl_node *a, *b, *c;
    tpl_nodes args;     /* call/filter/test positional args; list/tuple items; compare operands; macro params */
    tpl_nodes kwvals;   /* keyword argument values; dict values; macro defaults (aligned to the last params) */
    const char **kwnames;
    int *ops;           /* E_COMPARE */
    tpl_nodes body, orelse;
    tpl_node *dyn_args, *dyn_kwargs; /* *args, **kwargs in a call */
};

/* N_FOR: a = target, b = iterable, c = filter condition (or NULL). N_IF: a = test.
 * N_SET: a = target, b = value. N_SET_BLOCK: a = target, c = filter chain (innermost operand NULL).
 * N_MACRO: name, args = E_NAME params, kwvals = defaults. N_CALL_BLOCK: a = the E_CALL, args/kwvals =
 * the caller's params. N_FILTER_BLOCK: c = filter chain. N_WITH: args = targets, kwvals = values.
 * E_COND: a = value if true, b = test, c = else (or NULL). E_SLICE: a, b, c = start, stop, step. */

struct kr_template {
    tpl_arena arena; /* the tree, its strings and constants */
    char *name;
    tpl_nodes body;
};

/* ---- evaluation ----------------------------------------------------------------------------- */

typedef struct tpl_scope tpl_scope;
struct tpl_scope {
    tpl_scope *parent;
    tpl_dict vars;
};

struct tpl_macro {
    const tpl_node *node; /* N_MACRO, or N_CALL_BLOCK for a caller */
    tpl_scope *closure;
    const char *name;
    tpl_value caller; /* TV_UNDEF when none */
};

struct tpl_loop {
    int64_t index0, length;
    tpl_value prev, next; /* TV_UNDEF at the ends */
    bool has_prev, has_next;
};

typedef struct tpl_render {
    tpl_arena arena;
    const kr_template *t;
    tpl_dict *context; /* the variables given to render */
    int depth;         /* macro recursion, bounded */
    int loop_ctl;      /* 1 break, 2 continue: unwinding to the innermost loop */
} tpl_render;

/* Fails with "NAME:LINE: message". */
kr_status tpl_fail(const tpl_render *r, int line, kr_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Builtins (template_builtins.c). The parser asks whether a filter or test exists, so that an
 * unknown one is an error at parse time, as it is in jinja2. */
bool tpl_filter_exists(const char *name);
bool tpl_test_exists(const char *name);
bool tpl_global_exists(const char *name);

typedef struct {
    tpl_value *pos;
    size_t npos;
    const char **kwnames;
    tpl_value *kwvals;
    size_t nkw;
} tpl_args;

kr_status tpl_apply_filter(tpl_render *r, int line, const char *name, tpl_value v, tpl_args *args, tpl_value *out);
kr_status tpl_apply_test(tpl_render *r, int line, const char *name, tpl_value v, tpl_args *args, bool *out);
kr_status tpl_call_func(tpl_render *r, int line, const tpl_func *fn, tpl_args *args, tpl_value *out);
/* obj.name as jinja2's sandboxed getattr: a method, a key, a loop attribute, or Undefined. */
kr_status tpl_getattr(tpl_render *r, int line, tpl_value obj, const char *name, tpl_value *out);
kr_status tpl_getitem(tpl_render *r, int line, tpl_value obj, tpl_value key, tpl_value *out);
tpl_value tpl_global(const char *name);

/* Shared by evaluator and builtins (template_eval.c). */
kr_status tpl_iterate(tpl_render *r, int line, tpl_value v, tpl_value **items, size_t *n);
kr_status tpl_call_value(tpl_render *r, int line, tpl_value callee, tpl_args *args, tpl_value *out);
kr_status tpl_compare(tpl_render *r, int line, int op, tpl_value a, tpl_value b, bool *out);
kr_status tpl_binop_eval(tpl_render *r, int line, int op, tpl_value a, tpl_value b, tpl_value *out);
kr_status tpl_str_of(tpl_render *r, int line, tpl_value v, tpl_value *out); /* str(v) as a value */
kr_status tpl_undef_error(const tpl_render *r, int line, tpl_value u);

#endif
