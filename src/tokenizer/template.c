/* Chat templates: the lexer and parser of the Jinja2 subset, and the public API of template.h.
 * The lexer follows jinja2's (lexer.py) rule for rule, with the options transformers sets:
 * trim_blocks (one newline after a block tag is dropped), lstrip_blocks (spaces and tabs before a
 * block or comment tag at the start of a line are dropped), keep_trailing_newline off, and the
 * "-"/"+" markers inside tags. The parser is jinja2's recursive descent (parser.py) with the same
 * precedence; it builds a tree that template_eval.c walks. Errors are "NAME:LINE: what". */
#include "tokenizer/template.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/template_impl.h"

/* ---- tokens --------------------------------------------------------------------------------- */

typedef enum {
    T_DATA,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_STRING,
    T_INT,
    T_FLOAT,
    T_OP,
    T_EOF,
} tok_type;

typedef struct {
    uint8_t type;
    int line;
    const char *s; /* T_DATA, T_NAME, T_STRING (unescaped), T_OP: NUL-terminated in the arena */
    size_t n;
    int64_t i;
    double f;
} token;

typedef struct {
    tpl_arena *arena;
    const char *name;
    token *toks;
    size_t n, cap;
    size_t pos;      /* parser cursor */
    int loop_depth;  /* break/continue are allowed only inside a for */
    int depth;       /* nesting of expressions and blocks: bounded so the C stack is too */
} parser;

#define TPL_MAX_NESTING 200

static kr_status syntax_error(const parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static kr_status syntax_error(const parser *p, int line, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kr_fail(KR_ERR_FORMAT, "%s:%d: %s", p->name, line, msg);
}

static token *push_token(parser *p, tok_type type, int line) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        token *t = tpl_alloc(p->arena, cap * sizeof *t);
        if (p->n)
            tpl_memcpy(t, p->toks, p->n * sizeof *t);
        p->toks = t;
        p->cap = cap;
    }
    token *t = &p->toks[p->n++];
    memset(t, 0, sizeof *t);
    t->type = (uint8_t)type;
    t->line = line;
    return t;
}

/* ---- lexer ---------------------------------------------------------------------------------- */

typedef struct {
    parser *p;
    const char *src; /* newlines normalized, one trailing newline dropped */
    size_t len, pos;
    int line;
    bool line_starting; /* the previous match ended with "\n" (lstrip_blocks applies at file start too) */
} lexer;

static void advance_to(lexer *lx, size_t pos) {
    for (size_t i = lx->pos; i < pos; i++)
        lx->line += lx->src[i] == '\n';
    lx->pos = pos;
}

/* Length of the run of Python whitespace (str.isspace) starting at s[0..n). */
static size_t space_run(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t adv;
        uint32_t cp = tpl_utf8_next(s + i, n - i, &adv);
        if (!tpl_py_isspace(cp))
            break;
        i += adv;
    }
    return i;
}

/* Length of text after stripping trailing Python whitespace (str.rstrip()). */
static size_t rstrip_len(const char *s, size_t n) {
    size_t keep = 0;
    for (size_t i = 0; i < n;) {
        size_t adv;
        uint32_t cp = tpl_utf8_next(s + i, n - i, &adv);
        i += adv;
        if (!tpl_py_isspace(cp))
            keep = i;
    }
    return keep;
}

static bool starts(const lexer *lx, size_t at, const char *s) {
    size_t n = strlen(s);
    return at + n <= lx->len && memcmp(lx->src + at, s, n) == 0;
}

/* Emits the text before a tag, applying "-" (strip all whitespace before the tag) or lstrip_blocks
 * (strip spaces/tabs from the line start up to a block or comment tag, unless the tag has "+"). */
static void emit_text(lexer *lx, size_t start, size_t end, char sign, bool is_variable) {
    const char *text = lx->src + start;
    size_t n = end - start;
    if (sign == '-')
        n = rstrip_len(text, n);
    else if (sign != '+' && !is_variable) {
        size_t l_pos = n;
        while (l_pos > 0 && text[l_pos - 1] != '\n')
            l_pos--;
        if ((l_pos > 0 || lx->line_starting) && l_pos < n && space_run(text + l_pos, n - l_pos) == n - l_pos)
            n = l_pos;
    }
    if (n) {
        token *t = push_token(lx->p, T_DATA, lx->line);
        t->s = tpl_strndup(lx->p->arena, text, n);
        t->n = n;
    }
}

/* Decodes a string literal's body as Python's "unicode-escape" does. */
static kr_status unescape(lexer *lx, const char *s, size_t n, token *t) {
    tpl_buf b;
    tpl_buf_init(&b, lx->p->arena);
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            tpl_buf_addc(&b, s[i]);
            continue;
        }
        char c = s[++i];
        int hex = 0;
        switch (c) {
        case '\n': break;
        case '\\': tpl_buf_addc(&b, '\\'); break;
        case '\'': tpl_buf_addc(&b, '\''); break;
        case '"': tpl_buf_addc(&b, '"'); break;
        case 'a': tpl_buf_addc(&b, '\a'); break;
        case 'b': tpl_buf_addc(&b, '\b'); break;
        case 'f': tpl_buf_addc(&b, '\f'); break;
        case 'n': tpl_buf_addc(&b, '\n'); break;
        case 'r': tpl_buf_addc(&b, '\r'); break;
        case 't': tpl_buf_addc(&b, '\t'); break;
        case 'v': tpl_buf_addc(&b, '\v'); break;
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        case 'N': return syntax_error(lx->p, t->line, "\\N{...} escapes are not supported");
        default:
            if (c >= '0' && c <= '7') {
                uint32_t v = 0;
                int k = 0;
                while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') {
                    v = v * 8 + (uint32_t)(s[i++] - '0');
                    k++;
                }
                i--;
                char u[4];
                tpl_buf_add(&b, u, tpl_utf8_put(u, v));
            } else { /* unknown escapes stay as written, as in Python */
                tpl_buf_addc(&b, '\\');
                tpl_buf_addc(&b, c);
            }
        }
        if (hex) {
            uint32_t v = 0;
            for (int k = 0; k < hex; k++) {
                char h = i + 1 < n ? s[i + 1] : 0;
                int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                                       : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (d < 0)
                    return syntax_error(lx->p, t->line, "truncated \\%c escape in a string literal", c);
                v = v * 16 + (uint32_t)d;
                i++;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return syntax_error(lx->p, t->line, "escape \\%c%X is not a valid code point", c, v);
            char u[4];
            tpl_buf_add(&b, u, tpl_utf8_put(u, v));
        }
    }
    tpl_buf_add(&b, "", 0);
    t->s = b.p;
    t->n = b.n;
    return KR_OK;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (unsigned char)c >= 0x80; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

/* Digits with optional single underscores between them ("1_000"); returns the end. */
static size_t digit_run(const char *s, size_t i, size_t n) {
    if (i >= n || !is_digit(s[i]))
        return i;
    while (i < n && (is_digit(s[i]) || (s[i] == '_' && i + 1 < n && is_digit(s[i + 1]))))
        i++;
    return i;
}

static int digit_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 99;
}

/* 0x1F, 0o17, 0b101 (with optional underscores), as jinja2's integer rule. */
static kr_status lex_prefixed_int(lexer *lx, int base) {
    const char *s = lx->src;
    size_t end = lx->pos + 2;
    int64_t v = 0;
    size_t digits = 0;
    while (end < lx->len && (s[end] == '_' || digit_value(s[end]) < base)) {
        if (s[end] != '_') {
            if (v > (INT64_MAX - digit_value(s[end])) / base)
                return syntax_error(lx->p, lx->line, "integer literal is too large");
            v = v * base + digit_value(s[end]);
            digits++;
        }
        end++;
    }
    if (!digits)
        return syntax_error(lx->p, lx->line, "bad integer literal");
    token *t = push_token(lx->p, T_INT, lx->line);
    t->i = v;
    advance_to(lx, end);
    return KR_OK;
}

static kr_status lex_number(lexer *lx) {
    const char *s = lx->src;
    size_t n = lx->len, start = lx->pos;
    if (s[start] == '0' && start + 1 < n) {
        char p = s[start + 1];
        int base = p == 'x' || p == 'X' ? 16 : p == 'o' || p == 'O' ? 8 : p == 'b' || p == 'B' ? 2 : 0;
        if (base)
            return lex_prefixed_int(lx, base);
    }
    size_t i = digit_run(s, start, n), end = i;
    bool is_float = false;
    /* jinja2's float rule does not start right after a '.', so `x.0.1` is x[0][1] */
    bool float_ok = start == 0 || s[start - 1] != '.';
    if (float_ok && i < n && s[i] == '.' && i + 1 < n && is_digit(s[i + 1])) {
        end = digit_run(s, i + 1, n);
        is_float = true;
    }
    if (float_ok && end < n && (s[end] == 'e' || s[end] == 'E')) {
        size_t j = end + 1;
        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        size_t k = digit_run(s, j, n);
        if (k > j) {
            end = k;
            is_float = true;
        }
    }
    char buf[128];
    size_t m = 0;
    for (size_t k = start; k < end && m + 1 < sizeof buf; k++)
        if (s[k] != '_')
            buf[m++] = s[k];
    buf[m] = 0;
    token *t = push_token(lx->p, is_float ? T_FLOAT : T_INT, lx->line);
    if (is_float)
        t->f = strtod(buf, NULL);
    else {
        if (m > 18)
            return syntax_error(lx->p, lx->line, "integer literal '%s' is too large", buf);
        t->i = strtoll(buf, NULL, 10);
    }
    advance_to(lx, end);
    return KR_OK;
}

static const char *const operators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                        "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};

/* Lexes the inside of a {{ }} or {% %} up to and including its end marker. */
static kr_status lex_tag(lexer *lx, bool is_block, int open_line) {
    char stack[256];
    int depth = 0;
    while (1) {
        if (lx->pos >= lx->len)
            return syntax_error(lx->p, open_line, "unclosed '%s' (end of template reached)", is_block ? "{%" : "{{");
        size_t at = lx->pos;
        if (depth == 0) {
            /* end markers: "+%}" keeps what follows, "-%}" / "-}}" strip whitespace after, "%}" drops one newline */
            if (is_block && starts(lx, at, "+%}")) {
                push_token(lx->p, T_BLOCK_END, lx->line);
                advance_to(lx, at + 3);
                lx->line_starting = false;
                return KR_OK;
            }
            if (starts(lx, at, is_block ? "-%}" : "-}}")) {
                size_t end = at + 3;
                end += space_run(lx->src + end, lx->len - end);
                push_token(lx->p, is_block ? T_BLOCK_END : T_VAR_END, lx->line);
                lx->line_starting = lx->src[end - 1] == '\n';
                advance_to(lx, end);
                return KR_OK;
            }
            if (starts(lx, at, is_block ? "%}" : "}}")) {
                size_t end = at + 2;
                if (is_block && end < lx->len && lx->src[end] == '\n')
                    end++;
                push_token(lx->p, is_block ? T_BLOCK_END : T_VAR_END, lx->line);
                lx->line_starting = lx->src[end - 1] == '\n';
                advance_to(lx, end);
                return KR_OK;
            }
        }
        char c = lx->src[at];
        size_t ws = space_run(lx->src + at, lx->len - at);
        if (ws) {
            advance_to(lx, at + ws);
            continue;
        }
        if (is_digit(c)) {
            KR_TRY(lex_number(lx));
            continue;
        }
        if (is_name_start(c)) {
            size_t end = at;
            while (end < lx->len && is_name_char(lx->src[end]))
                end++;
            token *t = push_token(lx->p, T_NAME, lx->line);
            t->s = tpl_strndup(lx->p->arena, lx->src + at, end - at);
            t->n = end - at;
            advance_to(lx, end);
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t end = at + 1;
            while (end < lx->len && lx->src[end] != c)
                end += lx->src[end] == '\\' ? 2 : 1;
            if (end >= lx->len)
                return syntax_error(lx->p, lx->line, "unterminated string literal");
            token *t = push_token(lx->p, T_STRING, lx->line);
            KR_TRY(unescape(lx, lx->src + at + 1, end - at - 1, t));
            advance_to(lx, end + 1);
            continue;
        }
        const char *op = NULL;
        for (size_t k = 0; k < sizeof operators / sizeof *operators && !op; k++)
            if (starts(lx, at, operators[k]))
                op = operators[k];
        if (!op)
            return syntax_error(lx->p, lx->line, "unexpected character '%c'", c);
        if (op[1] == 0 && (c == '(' || c == '[' || c == '{')) {
            if (depth == (int)sizeof stack)
                return syntax_error(lx->p, lx->line, "brackets nested too deeply");
            stack[depth++] = c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (op[1] == 0 && (c == ')' || c == ']' || c == '}')) {
            if (depth == 0)
                return syntax_error(lx->p, lx->line, "unexpected '%c'", c);
            if (stack[--depth] != c)
                return syntax_error(lx->p, lx->line, "unexpected '%c', expected '%c'", c, stack[depth]);
        }
        token *t = push_token(lx->p, T_OP, lx->line);
        t->s = op;
        t->n = strlen(op);
        advance_to(lx, at + t->n);
    }
}

static kr_status lex_comment(lexer *lx, int open_line) {
    for (size_t i = lx->pos; i + 1 < lx->len; i++) {
        if (starts(lx, i, "+#}")) {
            advance_to(lx, i + 3);
            lx->line_starting = false;
            return KR_OK;
        }
        if (starts(lx, i, "-#}")) {
            size_t end = i + 3;
            end += space_run(lx->src + end, lx->len - end);
            lx->line_starting = lx->src[end - 1] == '\n';
            advance_to(lx, end);
            return KR_OK;
        }
        if (starts(lx, i, "#}")) {
            size_t end = i + 2;
            if (end < lx->len && lx->src[end] == '\n')
                end++;
            lx->line_starting = lx->src[end - 1] == '\n';
            advance_to(lx, end);
            return KR_OK;
        }
    }
    return syntax_error(lx->p, open_line, "unclosed comment '{#' (missing '#}')");
}

/* Newlines become "\n" (jinja2's newline_sequence) and one trailing newline goes. */
static char *normalize_source(tpl_arena *a, const char *src, size_t *len) {
    size_t n = strlen(src);
    char *out = tpl_alloc(a, n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            out[m++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n')
                i++;
        } else
            out[m++] = src[i];
    }
    if (m && out[m - 1] == '\n')
        m--;
    out[m] = 0;
    *len = m;
    return out;
}

static kr_status lex(parser *p, const char *source) {
    lexer lx = {.p = p, .line = 1, .line_starting = true};
    lx.src = normalize_source(p->arena, source, &lx.len);
    while (lx.pos < lx.len) {
        const char *found = NULL;
        size_t at = lx.pos;
        for (; at + 1 < lx.len; at++)
            if (lx.src[at] == '{' && (lx.src[at + 1] == '{' || lx.src[at + 1] == '%' || lx.src[at + 1] == '#')) {
                found = lx.src + at;
                break;
            }
        if (!found) {
            emit_text(&lx, lx.pos, lx.len, 0, true);
            break;
        }
        char kind = found[1];
        char sign = at + 2 < lx.len && (lx.src[at + 2] == '-' || lx.src[at + 2] == '+') ? lx.src[at + 2] : 0;
        emit_text(&lx, lx.pos, at, sign, kind == '{');
        advance_to(&lx, at);
        int open_line = lx.line;
        advance_to(&lx, at + 2 + (sign != 0));
        lx.line_starting = false;
        if (kind == '#') {
            KR_TRY(lex_comment(&lx, open_line));
            continue;
        }
        if (kind == '%') {
            size_t k = lx.pos + space_run(lx.src + lx.pos, lx.len - lx.pos);
            if (starts(&lx, k, "raw") && (k + 3 >= lx.len || !is_name_char(lx.src[k + 3])))
                return kr_fail(KR_ERR_UNSUPPORTED, "%s:%d: unsupported tag 'raw'", p->name, open_line);
        }
        push_token(p, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, open_line);
        KR_TRY(lex_tag(&lx, kind == '%', open_line));
    }
    push_token(p, T_EOF, lx.line);
    return KR_OK;
}

/* ---- parser helpers ------------------------------------------------------------------------- */

static token *cur(parser *p) { return &p->toks[p->pos]; }
static token *peek(parser *p, size_t k) {
    size_t i = p->pos + k;
    return &p->toks[i < p->n ? i : p->n - 1];
}
static void next(parser *p) {
    if (p->toks[p->pos].type != T_EOF)
        p->pos++;
}

static bool is_op(const token *t, const char *op) { return t->type == T_OP && strcmp(t->s, op) == 0; }
static bool is_name(const token *t, const char *name) { return t->type == T_NAME && strcmp(t->s, name) == 0; }

static const char *describe(const token *t) {
    switch (t->type) {
    case T_DATA: return "template text";
    case T_VAR_BEGIN: return "'{{'";
    case T_VAR_END: return "end of print statement '}}'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_BLOCK_END: return "end of statement block '%}'";
    case T_EOF: return "end of template";
    case T_STRING: return "string literal";
    case T_INT:
    case T_FLOAT: return "number";
    default: return t->s;
    }
}

static kr_status unexpected(parser *p, const char *wanted) {
    token *t = cur(p);
    if (wanted)
        return syntax_error(p, t->line, "expected %s, got %s%s%s", wanted, t->type == T_NAME || t->type == T_OP ? "'" : "",
                            describe(t), t->type == T_NAME || t->type == T_OP ? "'" : "");
    return syntax_error(p, t->line, "unexpected %s%s%s", t->type == T_NAME || t->type == T_OP ? "'" : "", describe(t),
                        t->type == T_NAME || t->type == T_OP ? "'" : "");
}

static kr_status expect_op(parser *p, const char *op) {
    if (!is_op(cur(p), op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        return unexpected(p, w);
    }
    next(p);
    return KR_OK;
}

static kr_status expect_type(parser *p, tok_type type, const char *what) {
    if (cur(p)->type != type)
        return unexpected(p, what);
    next(p);
    return KR_OK;
}

static tpl_node *new_node(parser *p, tpl_node_kind kind, int line) {
    tpl_node *n = tpl_alloc(p->arena, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = line;
    return n;
}

/* Node lists grow by doubling in the arena. */
typedef struct {
    tpl_nodes list;
    size_t cap;
} nodevec;

static void nv_push(parser *p, nodevec *v, tpl_node *n) {
    if (v->list.n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        tpl_node **a = tpl_alloc(p->arena, cap * sizeof *a);
        if (v->list.n)
            tpl_memcpy(a, v->list.v, v->list.n * sizeof *a);
        v->list.v = a;
        v->cap = cap;
    }
    v->list.v[v->list.n++] = n;
}

/* ---- expressions ---------------------------------------------------------------------------- */

static kr_status parse_expression(parser *p, bool with_condexpr, tpl_node **out);
static kr_status parse_tuple(parser *p, bool simplified, bool with_condexpr, const char *extra_end, bool explicit_parens,
                             bool with_namespace, tpl_node **out);
static kr_status parse_unary(parser *p, bool with_filter, tpl_node **out);
static kr_status parse_primary(parser *p, bool with_namespace, tpl_node **out);
static kr_status parse_postfix(parser *p, tpl_node **node);
static kr_status parse_filters(parser *p, tpl_node **node, bool start_inline);

static kr_status parse_call_args(parser *p, tpl_node *call) {
    int line = cur(p)->line;
    KR_TRY(expect_op(p, "("));
    nodevec args = {0}, kwvals = {0};
    const char **names = NULL;
    size_t ncap = 0;
    bool require_comma = false;
    while (!is_op(cur(p), ")")) {
        if (require_comma) {
            KR_TRY(expect_op(p, ","));
            if (is_op(cur(p), ")"))
                break;
        }
        if (is_op(cur(p), "*") || is_op(cur(p), "**")) {
            bool kw = is_op(cur(p), "**");
            next(p);
            tpl_node *e;
            KR_TRY(parse_expression(p, true, &e));
            if (kw ? call->dyn_kwargs != NULL : (call->dyn_args != NULL || call->dyn_kwargs != NULL))
                return syntax_error(p, line, "invalid syntax for function call expression");
            if (kw)
                call->dyn_kwargs = e;
            else
                call->dyn_args = e;
        } else if (cur(p)->type == T_NAME && is_op(peek(p, 1), "=")) {
            if (call->dyn_kwargs)
                return syntax_error(p, line, "invalid syntax for function call expression");
            const char *key = cur(p)->s;
            next(p);
            next(p);
            tpl_node *e;
            KR_TRY(parse_expression(p, true, &e));
            if (kwvals.list.n == ncap) {
                ncap = ncap ? ncap * 2 : 4;
                const char **nn = tpl_alloc(p->arena, ncap * sizeof *nn);
                if (kwvals.list.n)
                    tpl_memcpy(nn, names, kwvals.list.n * sizeof *nn);
                names = nn;
            }
            names[kwvals.list.n] = key;
            nv_push(p, &kwvals, e);
        } else {
            if (call->dyn_args || call->dyn_kwargs || kwvals.list.n)
                return syntax_error(p, line, "invalid syntax for function call expression (positional argument after keyword)");
            tpl_node *e;
            KR_TRY(parse_expression(p, true, &e));
            nv_push(p, &args, e);
        }
        require_comma = true;
    }
    KR_TRY(expect_op(p, ")"));
    call->args = args.list;
    call->kwvals = kwvals.list;
    call->kwnames = names;
    return KR_OK;
}

static kr_status parse_dotted_name(parser *p, const char **out) {
    if (cur(p)->type != T_NAME)
        return unexpected(p, "a name");
    const char *name = cur(p)->s;
    next(p);
    while (is_op(cur(p), ".")) {
        next(p);
        if (cur(p)->type != T_NAME)
            return unexpected(p, "a name");
        size_t n = strlen(name) + 1 + cur(p)->n + 1;
        char *joined = tpl_alloc(p->arena, n);
        snprintf(joined, n, "%s.%s", name, cur(p)->s);
        name = joined;
        next(p);
    }
    *out = name;
    return KR_OK;
}

/* `x | f(args) | g` -- with start_inline the first filter has no "|" ({% filter f %}, {% set x | f %}). */
static kr_status parse_filters(parser *p, tpl_node **node, bool start_inline) {
    while (is_op(cur(p), "|") || start_inline) {
        if (!start_inline)
            next(p);
        int line = cur(p)->line;
        tpl_node *f = new_node(p, E_FILTER, line);
        KR_TRY(parse_dotted_name(p, &f->name));
        if (!tpl_filter_exists(f->name))
            return kr_fail(KR_ERR_UNSUPPORTED, "%s:%d: unsupported filter '%s'", p->name, line, f->name);
        if (is_op(cur(p), "("))
            KR_TRY(parse_call_args(p, f));
        f->a = *node;
        *node = f;
        start_inline = false;
    }
    return KR_OK;
}

static kr_status parse_test(parser *p, tpl_node **node) {
    int line = cur(p)->line;
    next(p); /* "is" */
    bool negated = false;
    if (is_name(cur(p), "not")) {
        next(p);
        negated = true;
    }
    tpl_node *t = new_node(p, E_TEST, line);
    KR_TRY(parse_dotted_name(p, &t->name));
    if (!tpl_test_exists(t->name))
        return kr_fail(KR_ERR_UNSUPPORTED, "%s:%d: unsupported test '%s'", p->name, line, t->name);
    token *c = cur(p);
    if (is_op(c, "(")) {
        KR_TRY(parse_call_args(p, t));
    } else if ((c->type == T_NAME || c->type == T_STRING || c->type == T_INT || c->type == T_FLOAT || is_op(c, "[") ||
                is_op(c, "{")) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is"))
            return syntax_error(p, c->line, "you cannot chain multiple tests with 'is'");
        tpl_node *arg;
        KR_TRY(parse_primary(p, false, &arg));
        KR_TRY(parse_postfix(p, &arg));
        nodevec v = {0};
        nv_push(p, &v, arg);
        t->args = v.list;
    }
    t->a = *node;
    *node = t;
    if (negated) {
        tpl_node *n = new_node(p, E_NOT, line);
        n->a = t;
        *node = n;
    }
    return KR_OK;
}

static kr_status parse_subscribed(parser *p, tpl_node **out) {
    int line = cur(p)->line;
    tpl_node *start = NULL, *stop = NULL, *step = NULL;
    if (is_op(cur(p), ":")) {
        next(p);
    } else {
        KR_TRY(parse_expression(p, true, &start));
        if (!is_op(cur(p), ":")) {
            *out = start;
            return KR_OK;
        }
        next(p);
    }
    if (!is_op(cur(p), "]") && !is_op(cur(p), ",") && !is_op(cur(p), ":"))
        KR_TRY(parse_expression(p, true, &stop));
    if (is_op(cur(p), ":")) {
        next(p);
        if (!is_op(cur(p), "]") && !is_op(cur(p), ","))
            KR_TRY(parse_expression(p, true, &step));
    }
    tpl_node *s = new_node(p, E_SLICE, line);
    s->a = start;
    s->b = stop;
    s->c = step;
    *out = s;
    return KR_OK;
}

static kr_status parse_postfix(parser *p, tpl_node **node) {
    while (1) {
        token *t = cur(p);
        if (is_op(t, ".")) {
            next(p);
            token *a = cur(p);
            if (a->type == T_NAME) {
                tpl_node *g = new_node(p, E_GETATTR, t->line);
                g->a = *node;
                g->attr = a->s;
                next(p);
                *node = g;
            } else if (a->type == T_INT) {
                tpl_node *g = new_node(p, E_GETITEM, t->line), *k = new_node(p, E_CONST, a->line);
                k->constant = tpl_int(a->i);
                g->a = *node;
                g->b = k;
                next(p);
                *node = g;
            } else
                return unexpected(p, "a name or number after '.'");
        } else if (is_op(t, "[")) {
            next(p);
            nodevec items = {0};
            while (!is_op(cur(p), "]")) {
                if (items.list.n)
                    KR_TRY(expect_op(p, ","));
                tpl_node *e;
                KR_TRY(parse_subscribed(p, &e));
                nv_push(p, &items, e);
            }
            KR_TRY(expect_op(p, "]"));
            if (items.list.n == 0)
                return syntax_error(p, t->line, "expected a subscript expression in '[]'");
            tpl_node *g = new_node(p, E_GETITEM, t->line);
            g->a = *node;
            if (items.list.n == 1)
                g->b = items.list.v[0];
            else {
                g->b = new_node(p, E_TUPLE, t->line);
                g->b->args = items.list;
            }
            *node = g;
        } else if (is_op(t, "(")) {
            tpl_node *c = new_node(p, E_CALL, t->line);
            c->a = *node;
            KR_TRY(parse_call_args(p, c));
            *node = c;
        } else
            return KR_OK;
    }
}

static kr_status parse_filter_expr(parser *p, tpl_node **node) {
    while (1) {
        token *t = cur(p);
        if (is_op(t, "|"))
            KR_TRY(parse_filters(p, node, false));
        else if (is_name(t, "is"))
            KR_TRY(parse_test(p, node));
        else if (is_op(t, "(")) {
            tpl_node *c = new_node(p, E_CALL, t->line);
            c->a = *node;
            KR_TRY(parse_call_args(p, c));
            *node = c;
        } else
            return KR_OK;
    }
}

static kr_status parse_list_literal(parser *p, tpl_node **out) {
    int line = cur(p)->line;
    next(p);
    nodevec items = {0};
    while (!is_op(cur(p), "]")) {
        if (items.list.n)
            KR_TRY(expect_op(p, ","));
        if (is_op(cur(p), "]"))
            break;
        tpl_node *e;
        KR_TRY(parse_expression(p, true, &e));
        nv_push(p, &items, e);
    }
    KR_TRY(expect_op(p, "]"));
    *out = new_node(p, E_LIST, line);
    (*out)->args = items.list;
    return KR_OK;
}

static kr_status parse_dict_literal(parser *p, tpl_node **out) {
    int line = cur(p)->line;
    next(p);
    nodevec keys = {0}, vals = {0};
    while (!is_op(cur(p), "}")) {
        if (keys.list.n)
            KR_TRY(expect_op(p, ","));
        if (is_op(cur(p), "}"))
            break;
        tpl_node *k, *v;
        KR_TRY(parse_expression(p, true, &k));
        KR_TRY(expect_op(p, ":"));
        KR_TRY(parse_expression(p, true, &v));
        nv_push(p, &keys, k);
        nv_push(p, &vals, v);
    }
    KR_TRY(expect_op(p, "}"));
    *out = new_node(p, E_DICT, line);
    (*out)->args = keys.list;
    (*out)->kwvals = vals.list;
    return KR_OK;
}

static kr_status parse_primary(parser *p, bool with_namespace, tpl_node **out) {
    token *t = cur(p);
    if (t->type == T_NAME) {
        next(p);
        tpl_node *n = new_node(p, E_CONST, t->line);
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True"))
            n->constant = tpl_bool(true);
        else if (!strcmp(t->s, "false") || !strcmp(t->s, "False"))
            n->constant = tpl_bool(false);
        else if (!strcmp(t->s, "none") || !strcmp(t->s, "None"))
            n->constant = tpl_none();
        else if (with_namespace && is_op(cur(p), ".")) {
            next(p);
            if (cur(p)->type != T_NAME)
                return unexpected(p, "a name");
            n->kind = E_NSREF;
            n->name = t->s;
            n->attr = cur(p)->s;
            next(p);
        } else {
            n->kind = E_NAME;
            n->name = t->s;
        }
        *out = n;
        return KR_OK;
    }
    if (t->type == T_STRING) {
        tpl_buf b;
        tpl_buf_init(&b, p->arena);
        int line = t->line;
        while (cur(p)->type == T_STRING) { /* adjacent literals concatenate, as in Python */
            tpl_buf_add(&b, cur(p)->s, cur(p)->n);
            next(p);
        }
        tpl_buf_add(&b, "", 0);
        tpl_node *n = new_node(p, E_CONST, line);
        n->constant = tpl_str(b.p, b.n);
        *out = n;
        return KR_OK;
    }
    if (t->type == T_INT || t->type == T_FLOAT) {
        next(p);
        tpl_node *n = new_node(p, E_CONST, t->line);
        n->constant = t->type == T_INT ? tpl_int(t->i) : tpl_float(t->f);
        *out = n;
        return KR_OK;
    }
    if (is_op(t, "(")) {
        next(p);
        KR_TRY(parse_tuple(p, false, true, NULL, true, false, out));
        return expect_op(p, ")");
    }
    if (is_op(t, "["))
        return parse_list_literal(p, out);
    if (is_op(t, "{"))
        return parse_dict_literal(p, out);
    return unexpected(p, NULL);
}

static kr_status parse_unary(parser *p, bool with_filter, tpl_node **out) {
    token *t = cur(p);
    if (is_op(t, "-") || is_op(t, "+")) {
        if (++p->depth > TPL_MAX_NESTING)
            return syntax_error(p, t->line, "expression nested too deeply");
        next(p);
        tpl_node *n = new_node(p, is_op(t, "-") ? E_NEG : E_POS, t->line);
        KR_TRY(parse_unary(p, false, &n->a));
        p->depth--;
        *out = n;
    } else
        KR_TRY(parse_primary(p, false, out));
    KR_TRY(parse_postfix(p, out));
    if (with_filter)
        KR_TRY(parse_filter_expr(p, out));
    return KR_OK;
}

static tpl_node *binop(parser *p, int op, int line, tpl_node *a, tpl_node *b) {
    tpl_node *n = new_node(p, E_BINOP, line);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static kr_status parse_pow(parser *p, tpl_node **out) {
    KR_TRY(parse_unary(p, true, out));
    while (is_op(cur(p), "**")) {
        int line = cur(p)->line;
        next(p);
        tpl_node *r;
        KR_TRY(parse_unary(p, true, &r));
        *out = binop(p, OP_POW, line, *out, r);
    }
    return KR_OK;
}

static kr_status parse_math2(parser *p, tpl_node **out) {
    KR_TRY(parse_pow(p, out));
    while (1) {
        token *t = cur(p);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FLOORDIV : is_op(t, "%") ? OP_MOD : -1;
        if (op < 0)
            return KR_OK;
        next(p);
        tpl_node *r;
        KR_TRY(parse_pow(p, &r));
        *out = binop(p, op, t->line, *out, r);
    }
}

static kr_status parse_concat(parser *p, tpl_node **out) {
    int line = cur(p)->line;
    tpl_node *first;
    KR_TRY(parse_math2(p, &first));
    if (!is_op(cur(p), "~")) {
        *out = first;
        return KR_OK;
    }
    nodevec parts = {0};
    nv_push(p, &parts, first);
    while (is_op(cur(p), "~")) {
        next(p);
        tpl_node *e;
        KR_TRY(parse_math2(p, &e));
        nv_push(p, &parts, e);
    }
    *out = new_node(p, E_CONCAT, line);
    (*out)->args = parts.list;
    return KR_OK;
}

static kr_status parse_math1(parser *p, tpl_node **out) {
    KR_TRY(parse_concat(p, out));
    while (is_op(cur(p), "+") || is_op(cur(p), "-")) {
        token *t = cur(p);
        int op = is_op(t, "+") ? OP_ADD : OP_SUB;
        next(p);
        tpl_node *r;
        KR_TRY(parse_concat(p, &r));
        *out = binop(p, op, t->line, *out, r);
    }
    return KR_OK;
}

static kr_status parse_compare(parser *p, tpl_node **out) {
    int line = cur(p)->line;
    tpl_node *first;
    KR_TRY(parse_math1(p, &first));
    nodevec operands = {0};
    int ops[64];
    size_t nops = 0;
    while (1) {
        token *t = cur(p);
        int op = is_op(t, "==") ? CMP_EQ : is_op(t, "!=") ? CMP_NE : is_op(t, "<") ? CMP_LT : is_op(t, "<=") ? CMP_LE
               : is_op(t, ">") ? CMP_GT : is_op(t, ">=") ? CMP_GE : is_name(t, "in") ? CMP_IN
               : is_name(t, "not") && is_name(peek(p, 1), "in") ? CMP_NOTIN : -1;
        if (op < 0)
            break;
        if (nops == sizeof ops / sizeof *ops)
            return syntax_error(p, t->line, "comparison chain too long");
        next(p);
        if (op == CMP_NOTIN)
            next(p);
        tpl_node *e;
        KR_TRY(parse_math1(p, &e));
        ops[nops++] = op;
        nv_push(p, &operands, e);
    }
    if (!nops) {
        *out = first;
        return KR_OK;
    }
    tpl_node *c = new_node(p, E_COMPARE, line);
    c->a = first;
    c->args = operands.list;
    c->ops = tpl_alloc(p->arena, nops * sizeof *c->ops);
    tpl_memcpy(c->ops, ops, nops * sizeof *ops);
    *out = c;
    return KR_OK;
}

static kr_status parse_not(parser *p, tpl_node **out) {
    if (is_name(cur(p), "not")) {
        if (++p->depth > TPL_MAX_NESTING)
            return syntax_error(p, cur(p)->line, "expression nested too deeply");
        tpl_node *n = new_node(p, E_NOT, cur(p)->line);
        next(p);
        KR_TRY(parse_not(p, &n->a));
        p->depth--;
        *out = n;
        return KR_OK;
    }
    return parse_compare(p, out);
}

static kr_status parse_and(parser *p, tpl_node **out) {
    KR_TRY(parse_not(p, out));
    while (is_name(cur(p), "and")) {
        tpl_node *n = new_node(p, E_AND, cur(p)->line);
        next(p);
        n->a = *out;
        KR_TRY(parse_not(p, &n->b));
        *out = n;
    }
    return KR_OK;
}

static kr_status parse_or(parser *p, tpl_node **out) {
    KR_TRY(parse_and(p, out));
    while (is_name(cur(p), "or")) {
        tpl_node *n = new_node(p, E_OR, cur(p)->line);
        next(p);
        n->a = *out;
        KR_TRY(parse_and(p, &n->b));
        *out = n;
    }
    return KR_OK;
}

static kr_status parse_condexpr(parser *p, tpl_node **out) {
    KR_TRY(parse_or(p, out));
    while (is_name(cur(p), "if")) {
        tpl_node *n = new_node(p, E_COND, cur(p)->line);
        next(p);
        n->a = *out;
        KR_TRY(parse_or(p, &n->b));
        if (is_name(cur(p), "else")) {
            next(p);
            KR_TRY(parse_condexpr(p, &n->c));
        }
        *out = n;
    }
    return KR_OK;
}

static kr_status parse_expression(parser *p, bool with_condexpr, tpl_node **out) {
    if (++p->depth > TPL_MAX_NESTING)
        return syntax_error(p, cur(p)->line, "expression nested too deeply");
    kr_status s = with_condexpr ? parse_condexpr(p, out) : parse_or(p, out);
    p->depth--;
    return s;
}

static bool is_tuple_end(parser *p, const char *extra_end) {
    token *t = cur(p);
    if (t->type == T_VAR_END || t->type == T_BLOCK_END || t->type == T_EOF)
        return true;
    if (is_op(t, ")") )
        return true;
    return extra_end && is_name(t, extra_end);
}

static kr_status parse_tuple(parser *p, bool simplified, bool with_condexpr, const char *extra_end, bool explicit_parens,
                             bool with_namespace, tpl_node **out) {
    int line = cur(p)->line;
    nodevec items = {0};
    bool is_tuple = false;
    while (1) {
        if (items.list.n)
            KR_TRY(expect_op(p, ","));
        if (is_tuple_end(p, extra_end))
            break;
        tpl_node *e;
        if (simplified)
            KR_TRY(parse_primary(p, with_namespace, &e));
        else
            KR_TRY(parse_expression(p, with_condexpr, &e));
        nv_push(p, &items, e);
        if (is_op(cur(p), ","))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (items.list.n) {
            *out = items.list.v[0];
            return KR_OK;
        }
        if (!explicit_parens)
            return unexpected(p, "an expression");
    }
    *out = new_node(p, E_TUPLE, line);
    (*out)->args = items.list;
    return KR_OK;
}

/* ---- statements ----------------------------------------------------------------------------- */

static kr_status subparse(parser *p, const char *const *end_tags, tpl_nodes *out, const char *open_tag, int open_line);

/* Parses the body after a tag's "%}" up to one of end_tags; leaves the cursor on that tag's name. */
static kr_status parse_body(parser *p, const char *const *end_tags, tpl_nodes *out, const char *open_tag, int open_line) {
    if (is_op(cur(p), ":"))
        next(p);
    KR_TRY(expect_type(p, T_BLOCK_END, "'%}'"));
    return subparse(p, end_tags, out, open_tag, open_line);
}

/* After an end tag's name: "%}" must follow. */
static kr_status end_tag(parser *p) {
    next(p);
    return expect_type(p, T_BLOCK_END, "'%}'");
}

static kr_status check_assignable(parser *p, tpl_node *t, bool allow_ns) {
    if (t->kind == E_NAME || (allow_ns && t->kind == E_NSREF))
        return KR_OK;
    if (t->kind == E_TUPLE) {
        for (size_t i = 0; i < t->args.n; i++)
            KR_TRY(check_assignable(p, t->args.v[i], false));
        return KR_OK;
    }
    return syntax_error(p, t->line, "can't assign to this expression");
}

static kr_status parse_assign_target(parser *p, const char *extra_end, bool with_namespace, tpl_node **out) {
    KR_TRY(parse_tuple(p, true, true, extra_end, false, with_namespace, out));
    return check_assignable(p, *out, with_namespace);
}

static kr_status parse_signature(parser *p, tpl_node *n) {
    KR_TRY(expect_op(p, "("));
    nodevec params = {0}, defaults = {0};
    while (!is_op(cur(p), ")")) {
        if (params.list.n)
            KR_TRY(expect_op(p, ","));
        if (cur(p)->type != T_NAME)
            return unexpected(p, "a parameter name");
        tpl_node *name = new_node(p, E_NAME, cur(p)->line);
        name->name = cur(p)->s;
        next(p);
        if (is_op(cur(p), "=")) {
            next(p);
            tpl_node *d;
            KR_TRY(parse_expression(p, true, &d));
            nv_push(p, &defaults, d);
        } else if (defaults.list.n)
            return syntax_error(p, name->line, "non-default argument follows default argument");
        nv_push(p, &params, name);
    }
    KR_TRY(expect_op(p, ")"));
    n->args = params.list;
    n->kwvals = defaults.list;
    return KR_OK;
}

static kr_status parse_for(parser *p, tpl_node **out) {
    tpl_node *n = new_node(p, N_FOR, cur(p)->line);
    next(p);
    KR_TRY(parse_assign_target(p, "in", false, &n->a));
    if (!is_name(cur(p), "in"))
        return unexpected(p, "'in'");
    next(p);
    KR_TRY(parse_tuple(p, false, false, "recursive", false, false, &n->b));
    if (is_name(cur(p), "if")) {
        next(p);
        KR_TRY(parse_expression(p, true, &n->c));
    }
    if (is_name(cur(p), "recursive"))
        return kr_fail(KR_ERR_UNSUPPORTED, "%s:%d: unsupported: recursive for loops", p->name, n->line);
    static const char *const ends[] = {"endfor", "else", NULL};
    p->loop_depth++;
    KR_TRY(parse_body(p, ends, &n->body, "for", n->line));
    p->loop_depth--;
    if (is_name(cur(p), "else")) {
        static const char *const end[] = {"endfor", NULL};
        next(p);
        KR_TRY(parse_body(p, end, &n->orelse, "for", n->line));
    }
    *out = n;
    return end_tag(p);
}

static kr_status parse_if(parser *p, tpl_node **out) {
    tpl_node *n = new_node(p, N_IF, cur(p)->line);
    int open_line = n->line;
    next(p);
    *out = n;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    while (1) {
        KR_TRY(parse_tuple(p, false, false, NULL, false, false, &n->a));
        KR_TRY(parse_body(p, ends, &n->body, "if", open_line));
        if (is_name(cur(p), "elif")) {
            tpl_node *e = new_node(p, N_IF, cur(p)->line);
            next(p);
            nodevec v = {0};
            nv_push(p, &v, e);
            n->orelse = v.list;
            n = e;
            continue;
        }
        if (is_name(cur(p), "else")) {
            static const char *const end[] = {"endif", NULL};
            next(p);
            KR_TRY(parse_body(p, end, &n->orelse, "if", open_line));
        }
        return end_tag(p);
    }
}

static kr_status parse_set(parser *p, tpl_node **out) {
    int line = cur(p)->line;
    next(p);
    tpl_node *target;
    KR_TRY(parse_assign_target(p, NULL, true, &target));
    if (is_op(cur(p), "=")) {
        next(p);
        tpl_node *n = new_node(p, N_SET, line);
        n->a = target;
        KR_TRY(parse_tuple(p, false, true, NULL, false, false, &n->b));
        *out = n;
        return expect_type(p, T_BLOCK_END, "'%}'");
    }
    tpl_node *n = new_node(p, N_SET_BLOCK, line);
    n->a = target;
    if (target->kind == E_TUPLE)
        return syntax_error(p, line, "a block set assigns one name");
    KR_TRY(parse_filters(p, &n->c, false));
    static const char *const end[] = {"endset", NULL};
    KR_TRY(parse_body(p, end, &n->body, "set", line));
    *out = n;
    return end_tag(p);
}

static kr_status parse_macro(parser *p, tpl_node **out) {
    tpl_node *n = new_node(p, N_MACRO, cur(p)->line);
    next(p);
    if (cur(p)->type != T_NAME)
        return unexpected(p, "a macro name");
    n->name = cur(p)->s;
    next(p);
    KR_TRY(parse_signature(p, n));
    static const char *const end[] = {"endmacro", NULL};
    int saved = p->loop_depth;
    p->loop_depth = 0;
    size_t first = p->pos;
    KR_TRY(parse_body(p, end, &n->body, "macro", n->line));
    p->loop_depth = saved;
    /* jinja2 accepts extra arguments only when the body reads `varargs` / `kwargs` */
    for (size_t i = first; i < p->pos; i++) {
        if (is_name(&p->toks[i], "varargs"))
            n->op |= TPL_MACRO_VARARGS;
        if (is_name(&p->toks[i], "kwargs"))
            n->op |= TPL_MACRO_KWARGS;
    }
    *out = n;
    return end_tag(p);
}

static kr_status parse_call_block(parser *p, tpl_node **out) {
    tpl_node *n = new_node(p, N_CALL_BLOCK, cur(p)->line);
    next(p);
    if (is_op(cur(p), "("))
        KR_TRY(parse_signature(p, n));
    KR_TRY(parse_expression(p, true, &n->a));
    if (n->a->kind != E_CALL)
        return syntax_error(p, n->line, "expected a macro call after 'call'");
    static const char *const end[] = {"endcall", NULL};
    int saved = p->loop_depth;
    p->loop_depth = 0;
    KR_TRY(parse_body(p, end, &n->body, "call", n->line));
    p->loop_depth = saved;
    *out = n;
    return end_tag(p);
}

static kr_status parse_filter_block(parser *p, tpl_node **out) {
    tpl_node *n = new_node(p, N_FILTER_BLOCK, cur(p)->line);
    next(p);
    KR_TRY(parse_filters(p, &n->c, true));
    static const char *const end[] = {"endfilter", NULL};
    KR_TRY(parse_body(p, end, &n->body, "filter", n->line));
    *out = n;
    return end_tag(p);
}

static kr_status parse_with(parser *p, tpl_node **out) {
    tpl_node *n = new_node(p, N_WITH, cur(p)->line);
    next(p);
    nodevec targets = {0}, values = {0};
    while (cur(p)->type != T_BLOCK_END) {
        if (targets.list.n)
            KR_TRY(expect_op(p, ","));
        tpl_node *t, *v;
        KR_TRY(parse_assign_target(p, NULL, false, &t));
        KR_TRY(expect_op(p, "="));
        KR_TRY(parse_expression(p, true, &v));
        nv_push(p, &targets, t);
        nv_push(p, &values, v);
    }
    n->args = targets.list;
    n->kwvals = values.list;
    static const char *const end[] = {"endwith", NULL};
    KR_TRY(parse_body(p, end, &n->body, "with", n->line));
    *out = n;
    return end_tag(p);
}

static kr_status parse_statement_inner(parser *p, tpl_node **out);

static kr_status parse_statement(parser *p, tpl_node **out) {
    if (++p->depth > TPL_MAX_NESTING)
        return syntax_error(p, cur(p)->line, "blocks nested too deeply");
    kr_status s = parse_statement_inner(p, out);
    p->depth--;
    return s;
}

static kr_status parse_statement_inner(parser *p, tpl_node **out) {
    token *t = cur(p);
    if (t->type != T_NAME)
        return syntax_error(p, t->line, "tag name expected after '{%%'");
    const char *s = t->s;
    if (!strcmp(s, "for"))
        return parse_for(p, out);
    if (!strcmp(s, "if"))
        return parse_if(p, out);
    if (!strcmp(s, "set"))
        return parse_set(p, out);
    if (!strcmp(s, "macro"))
        return parse_macro(p, out);
    if (!strcmp(s, "call"))
        return parse_call_block(p, out);
    if (!strcmp(s, "filter"))
        return parse_filter_block(p, out);
    if (!strcmp(s, "with"))
        return parse_with(p, out);
    if (!strcmp(s, "print")) {
        tpl_node *n = new_node(p, N_OUTPUT, t->line);
        next(p);
        KR_TRY(parse_tuple(p, false, true, NULL, false, false, &n->a));
        *out = n;
        return expect_type(p, T_BLOCK_END, "'%}'");
    }
    if (!strcmp(s, "break") || !strcmp(s, "continue")) {
        if (!p->loop_depth)
            return syntax_error(p, t->line, "'%s' outside a for loop", s);
        *out = new_node(p, s[0] == 'b' ? N_BREAK : N_CONTINUE, t->line);
        next(p);
        return expect_type(p, T_BLOCK_END, "'%}'");
    }
    if (!strcmp(s, "generation")) { /* transformers' AssistantTracker: renders its body unchanged */
        tpl_node *n = new_node(p, N_GENERATION, t->line);
        next(p);
        static const char *const end[] = {"endgeneration", NULL};
        KR_TRY(parse_body(p, end, &n->body, "generation", n->line));
        *out = n;
        return end_tag(p);
    }
    static const char *const unsupported[] = {"block", "extends", "include", "import", "from", "autoescape", "raw", "do", NULL};
    for (int i = 0; unsupported[i]; i++)
        if (!strcmp(s, unsupported[i]))
            return kr_fail(KR_ERR_UNSUPPORTED, "%s:%d: unsupported tag '%s'", p->name, t->line, s);
    if (!strncmp(s, "end", 3) || !strcmp(s, "else") || !strcmp(s, "elif"))
        return syntax_error(p, t->line, "unexpected '%s' (no open block it could close)", s);
    return syntax_error(p, t->line, "unknown tag '%s'", s);
}

static bool is_end_tag(const token *t, const char *const *end_tags) {
    if (t->type != T_NAME || !end_tags)
        return false;
    for (int i = 0; end_tags[i]; i++)
        if (!strcmp(t->s, end_tags[i]))
            return true;
    return false;
}

static kr_status subparse(parser *p, const char *const *end_tags, tpl_nodes *out, const char *open_tag, int open_line) {
    nodevec body = {0};
    while (1) {
        token *t = cur(p);
        if (t->type == T_EOF) {
            if (end_tags)
                return syntax_error(p, open_line, "unclosed '%s' block: end of template reached, expected '%s'", open_tag,
                                    end_tags[0]);
            break;
        }
        if (t->type == T_DATA) {
            tpl_node *n = new_node(p, N_TEXT, t->line);
            n->constant = tpl_str(t->s, t->n);
            nv_push(p, &body, n);
            next(p);
        } else if (t->type == T_VAR_BEGIN) {
            tpl_node *n = new_node(p, N_OUTPUT, t->line);
            next(p);
            KR_TRY(parse_tuple(p, false, true, NULL, false, false, &n->a));
            KR_TRY(expect_type(p, T_VAR_END, "'}}'"));
            nv_push(p, &body, n);
        } else if (t->type == T_BLOCK_BEGIN) {
            next(p);
            if (is_end_tag(cur(p), end_tags))
                break;
            tpl_node *n = NULL;
            KR_TRY(parse_statement(p, &n));
            nv_push(p, &body, n);
        } else
            return unexpected(p, NULL);
    }
    *out = body.list;
    return KR_OK;
}

/* ---- public API ----------------------------------------------------------------------------- */

kr_status kr_template_parse(const char *source, const char *name, kr_template **out) {
    *out = NULL;
    kr_template *t = calloc(1, sizeof *t);
    if (!t)
        return kr_fail(KR_ERR_NOMEM, "out of memory parsing template %s", name);
    jmp_buf oom;
    t->arena.on_oom = &oom;
    if (setjmp(oom)) {
        kr_template_free(t);
        return kr_fail(KR_ERR_NOMEM, "out of memory parsing template %s", name);
    }
    t->name = tpl_strndup(&t->arena, name, strlen(name));
    parser p = {.arena = &t->arena, .name = t->name};
    kr_status s = lex(&p, source);
    if (s == KR_OK)
        s = subparse(&p, NULL, &t->body, NULL, 0);
    t->arena.on_oom = NULL;
    if (s != KR_OK) {
        kr_template_free(t);
        return s;
    }
    *out = t;
    return KR_OK;
}

void kr_template_free(kr_template *t) {
    if (!t)
        return;
    tpl_arena_free(&t->arena);
    free(t);
}

/* ---- the chat context, as transformers builds it -------------------------------------------- */

static const char *const reasoning_fields[] = {"reasoning_content", "thinking", "reasoning"};

/* One message: null fields dropped (_normalize_chat_messages), then _alias_reasoning_fields:
 * {"thinking": r, **message, "reasoning_content": r} -- key order matters to |tojson and |items. */
static kr_status chat_message(const json_t *m, size_t index, json_t **out) {
    if (!json_is_object(m))
        return kr_fail(KR_ERR_ARG, "messages[%zu]: a message must be a JSON object", index);
    json_t *reasoning = NULL;
    for (size_t i = 0; i < 3 && !reasoning; i++) {
        json_t *v = json_object_get(m, reasoning_fields[i]);
        if (v && !json_is_null(v))
            reasoning = v;
    }
    json_t *msg = json_object();
    if (!msg)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    int err = 0;
    if (reasoning)
        err |= json_object_set(msg, "thinking", reasoning);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)m, k, v) {
        if (!json_is_null(v))
            err |= json_object_set(msg, k, v);
    }
    if (reasoning)
        err |= json_object_set(msg, "reasoning_content", reasoning);
    if (err) {
        json_decref(msg);
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    *out = msg;
    return KR_OK;
}

kr_status kr_template_chat_context(const json_t *messages, const json_t *tools, int add_generation_prompt,
                                   const json_t *kwargs, const char *bos_token, const char *eos_token, json_t **out) {
    *out = NULL;
    if (!json_is_array(messages))
        return kr_fail(KR_ERR_ARG, "messages must be a JSON array of message objects");
    if (tools && !json_is_array(tools) && !json_is_null(tools))
        return kr_fail(KR_ERR_ARG, "tools must be a JSON array of tool definitions");
    if (kwargs && !json_is_object(kwargs))
        return kr_fail(KR_ERR_ARG, "template kwargs must be a JSON object");
    json_t *ctx = json_object(), *msgs = json_array();
    int err = !ctx || !msgs;
    for (size_t i = 0; !err && i < json_array_size(messages); i++) {
        json_t *m = NULL;
        kr_status s = chat_message(json_array_get(messages, i), i, &m);
        if (s != KR_OK) {
            json_decref(ctx);
            json_decref(msgs);
            return s;
        }
        err |= json_array_append_new(msgs, m);
    }
    if (!err) {
        err |= json_object_set_new(ctx, "messages", msgs);
        msgs = NULL;
        err |= json_object_set_new(ctx, "tools", tools ? json_deep_copy(tools) : json_null());
        err |= json_object_set_new(ctx, "documents", json_null());
        err |= json_object_set_new(ctx, "add_generation_prompt", json_boolean(add_generation_prompt));
        if (bos_token)
            err |= json_object_set_new(ctx, "bos_token", json_string(bos_token));
        if (eos_token)
            err |= json_object_set_new(ctx, "eos_token", json_string(eos_token));
        if (kwargs)
            err |= json_object_update(ctx, (json_t *)kwargs);
    }
    json_decref(msgs);
    if (err) {
        json_decref(ctx);
        return kr_fail(KR_ERR_NOMEM, "out of memory building the chat template context (or a token is not valid UTF-8)");
    }
    *out = ctx;
    return KR_OK;
}
