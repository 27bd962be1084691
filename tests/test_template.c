/* Chat templates against jinja2: every case of tests/reference/templates (made by
 * tools/make_template_fixtures.py with transformers' own rendering) must render byte for byte, or
 * fail where Python failed. The real templates are read from ../shared/data; without it those are
 * skipped loudly and only the self-contained ones (features, DeepSeek-V2-Chat) run. */
#include <jansson.h>

#include "base/json.h"
#include "base/mapfile.h"
#include "test.h"
#include "tokenizer/template.h"

static char shared_dir[1024];
static int skipped_templates;

static json_t *load_json(const char *rel) {
    char path[1024];
    json_t *j;
    if (kr_json_load_file(test_path(rel, path, sizeof path), &j) != KR_OK) {
        fprintf(stderr, "%s\n", kr_error());
        exit(2);
    }
    return j;
}

/* The first difference of two renders, shown with some context. */
static void show_diff(const char *want, const char *got) {
    size_t i = 0;
    while (want[i] && want[i] == got[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "    first difference at byte %zu\n    want: \"%.*s\"\n    got:  \"%.*s\"\n", i, 80, want + from, 80,
            got + from);
}

/* The template text a fixture file names: ../shared/data/PATH (optionally a JSON field), or a file
 * next to the fixtures. NULL (and a loud skip) when ../shared/data is absent. */
static char *template_source(const json_t *src, char *name, size_t cap) {
    const char *shared = json_string_value(json_object_get(src, "shared"));
    const char *file = json_string_value(json_object_get(src, "file"));
    const char *field = json_string_value(json_object_get(src, "field"));
    char path[2048];
    if (shared) {
        snprintf(path, sizeof path, "%s/%s", shared_dir, shared);
        if (!kr_file_exists(path)) {
            printf("SKIP: %s is absent (../shared/data missing?): its template cases are not run\n", path);
            skipped_templates++;
            return NULL;
        }
    } else
        snprintf(path, sizeof path, "%s/tests/reference/templates/%s", KRASIS_SOURCE_DIR, file);
    snprintf(name, cap, "%s", shared ? shared : file);
    char *text;
    size_t len;
    if (kr_read_file(path, &text, &len) != KR_OK) {
        fprintf(stderr, "%s\n", kr_error());
        exit(2);
    }
    if (!field)
        return text;
    json_t *cfg;
    if (kr_json_parse(text, len, path, &cfg) != KR_OK) {
        fprintf(stderr, "%s\n", kr_error());
        exit(2);
    }
    free(text);
    const char *t = json_string_value(json_object_get(cfg, field));
    char *copy = strdup(t ? t : "");
    json_decref(cfg);
    return copy;
}

static const char *opt_str(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Python failed: we must fail too; a raise_exception message must come through. */
static void check_expected_error(const char *what, const json_t *error, kr_status s, const char *out) {
    const char *type = opt_str(error, "type"), *msg = opt_str(error, "message");
    CHECK(s != KR_OK, "%s: jinja2 failed (%s: %s) but krasis rendered \"%.200s\"", what, type, msg, out ? out : "");
    if (s != KR_OK && type && !strcmp(type, "TemplateError"))
        CHECK(strstr(kr_error(), msg) != NULL, "%s: error \"%s\" does not carry the template's message \"%s\"", what,
              kr_error(), msg);
}

static void run_template_file(const char *fixture, const json_t *conversations, const json_t *tools) {
    char rel[512], name[512];
    snprintf(rel, sizeof rel, "tests/reference/templates/%s.json", fixture);
    json_t *fx = load_json(rel);
    char *source = template_source(json_object_get(fx, "template"), name, sizeof name);
    if (!source) {
        json_decref(fx);
        return;
    }
    kr_template *t;
    kr_status s = kr_template_parse(source, name, &t);
    CHECK(s == KR_OK, "%s: parse failed: %s", name, kr_error());
    free(source);
    if (s != KR_OK) {
        json_decref(fx);
        return;
    }
    const json_t *cases = json_object_get(fx, "cases");
    int pass = 0, n = (int)json_array_size(cases);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *c = json_array_get(cases, i);
        const char *conv = opt_str(c, "conversation"), *tools_name = opt_str(c, "tools");
        char what[700];
        snprintf(what, sizeof what, "%s case %zu (%s%s%s, add_generation_prompt=%d)", name, i, conv, tools_name ? ", tools " : "",
                 tools_name ? tools_name : "", json_is_true(json_object_get(c, "add_generation_prompt")));
        json_t *ctx = NULL;
        s = kr_template_chat_context(json_object_get(conversations, conv), tools_name ? json_object_get(tools, tools_name) : NULL,
                                     json_is_true(json_object_get(c, "add_generation_prompt")), json_object_get(c, "kwargs"),
                                     opt_str(c, "bos_token"), opt_str(c, "eos_token"), &ctx);
        CHECK(s == KR_OK, "%s: context: %s", what, kr_error());
        if (s != KR_OK)
            continue;
        char *out = NULL;
        s = kr_template_render(t, ctx, &out);
        const char *want = opt_str(c, "expected");
        int before = test_failures;
        if (want) {
            CHECK(s == KR_OK, "%s: render failed: %s", what, kr_error());
            if (s == KR_OK) {
                CHECK(strcmp(out, want) == 0, "%s: output differs from jinja2", what);
                if (strcmp(out, want) != 0)
                    show_diff(want, out);
            }
        } else
            check_expected_error(what, json_object_get(c, "error"), s, out);
        pass += test_failures == before;
        free(out);
        json_decref(ctx);
    }
    printf("%-58s %3d/%3d cases byte-for-byte\n", name, pass, n);
    kr_template_free(t);
    json_decref(fx);
}

/* Small templates for one feature each; syntax errors must be "NAME:LINE: ..." at parse time. */
static void run_features(void) {
    json_t *fx = load_json("tests/reference/templates/features.json");
    const json_t *cases = json_object_get(fx, "cases");
    int pass = 0, n = (int)json_array_size(cases);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *c = json_array_get(cases, i);
        const char *name = opt_str(c, "name"), *want = opt_str(c, "expected");
        const json_t *error = json_object_get(c, "error");
        bool parse_error = error && !strcmp(opt_str(error, "at"), "parse");
        int before = test_failures;
        kr_template *t = NULL;
        kr_status s = kr_template_parse(opt_str(c, "source"), name, &t);
        if (parse_error) {
            CHECK(s != KR_OK, "%s: jinja2 refuses to parse it (%s) but krasis parsed it", name, opt_str(error, "message"));
            char prefix[256];
            snprintf(prefix, sizeof prefix, "%s:", name);
            if (s != KR_OK)
                CHECK(strncmp(kr_error(), prefix, strlen(prefix)) == 0 && kr_error()[strlen(prefix)] >= '1' &&
                          kr_error()[strlen(prefix)] <= '9',
                      "%s: error \"%s\" is not NAME:LINE: ...", name, kr_error());
        } else {
            CHECK(s == KR_OK, "%s: parse failed: %s", name, kr_error());
            char *out = NULL;
            if (s == KR_OK) {
                s = kr_template_render(t, json_object_get(c, "context"), &out);
                if (want) {
                    CHECK(s == KR_OK, "%s: render failed: %s", name, kr_error());
                    if (s == KR_OK && strcmp(out, want) != 0) {
                        CHECK(0, "%s: output differs from jinja2", name);
                        show_diff(want, out);
                    }
                } else
                    check_expected_error(name, error, s, out);
            }
            free(out);
        }
        pass += test_failures == before;
        kr_template_free(t);
    }
    printf("%-58s %3d/%3d cases\n", "features.json", pass, n);
    json_decref(fx);
}

/* The bad-input messages must name the construct and its line. */
static void check_error(const char *source, const char *name, const char *must_contain) {
    kr_template *t = NULL;
    kr_status s = kr_template_parse(source, name, &t);
    CHECK(s != KR_OK, "%s: parsed, expected an error containing '%s'", name, must_contain);
    if (s != KR_OK)
        CHECK(strstr(kr_error(), must_contain) != NULL, "%s: error \"%s\" lacks \"%s\"", name, kr_error(), must_contain);
    kr_template_free(t);
}

static void check_render_error(const char *source, const char *context_json, const char *must_contain) {
    kr_template *t = NULL;
    kr_status s = kr_template_parse(source, "t.jinja", &t);
    CHECK(s == KR_OK, "parse: %s", kr_error());
    json_t *ctx = json_loads(context_json, 0, NULL);
    char *out = NULL;
    s = kr_template_render(t, ctx, &out);
    CHECK(s != KR_OK, "'%s' rendered \"%s\", expected an error containing '%s'", source, out ? out : "", must_contain);
    if (s != KR_OK)
        CHECK(strstr(kr_error(), must_contain) != NULL, "error \"%s\" lacks \"%s\"", kr_error(), must_contain);
    free(out);
    json_decref(ctx);
    kr_template_free(t);
}

static void bad_input(void) {
    check_error("ok\n{% if x %}\nnever closed", "unclosed.jinja", "unclosed.jinja:2: unclosed 'if'");
    check_error("{% for m in messages %}{% if m %}{% endfor %}", "mismatch.jinja", "mismatch.jinja:1:");
    check_error("a\nb\n{% frobnicate %}", "tag.jinja", "tag.jinja:3: unknown tag 'frobnicate'");
    check_error("{{ 1 + }}", "expr.jinja", "expr.jinja:1: unexpected end of print statement");
    check_error("\n{{ x | frobnicate }}", "filter.jinja", "filter.jinja:2: unsupported filter 'frobnicate'");
    check_error("{{ x is frobnicated }}", "test.jinja", "test.jinja:1: unsupported test 'frobnicated'");
    check_error("{% include 'other.jinja' %}", "include.jinja", "include.jinja:1: unsupported tag 'include'");
    check_error("{% for x in y recursive %}{% endfor %}", "rec.jinja", "rec.jinja:1: unsupported: recursive");
    check_error("{{ x ", "var.jinja", "var.jinja:1: unclosed '{{'");
    check_error("\n{# comment", "comment.jinja", "comment.jinja:2: unclosed comment");
    check_error("{{ (1, 2] }}", "bracket.jinja", "bracket.jinja:1: unexpected ']', expected ')'");
    check_error("{% endif %}", "stray.jinja", "stray.jinja:1: unexpected 'endif'");
    check_error("{% raw %}x{% endraw %}", "raw.jinja", "raw.jinja:1: unsupported tag 'raw'");
    /* nesting deep enough to blow a C stack is refused, not followed */
    char deep[4096] = "{{ ";
    memset(deep + 3, '(', 1000);
    strcpy(deep + 1003, "1 }}");
    check_error(deep, "deep.jinja", "deep.jinja:1:");
    char deep_not[8200] = "{{ ";
    for (int i = 0; i < 1000; i++)
        strcat(deep_not, "not ");
    strcat(deep_not, "x }}");
    check_error(deep_not, "deepnot.jinja", "nested too deeply");
    check_render_error("{{ raise_exception('Only user and assistant roles are supported!') }}", "{}",
                       "t.jinja:1: template raised an error: Only user and assistant roles are supported!");
    check_render_error("\n{{ 'x'.zfill(3) }}", "{}", "t.jinja:2: unsupported method str.zfill");
    check_render_error("{{ messages[0].content.nosuch() }}", "{\"messages\": [{\"content\": \"hi\"}]}",
                       "'str object' has no attribute 'nosuch'");
    check_render_error("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "{}", "nested more than");
    /* fuzzer-found: 178 GB asked of malloc; now the render's memory limit names itself */
    check_render_error("{{ 'ab' * 89012345678 }}", "{}", "t.jinja: rendering needs more than 256 MiB");
    check_render_error("{% set s = namespace(v='x') %}{% for i in range(40) %}{% set s.v = s.v + s.v %}{% endfor %}"
                       "{{ s.v | length }}", "{}", "rendering needs more than");
}

int main(void) {
    snprintf(shared_dir, sizeof shared_dir, "%s/../shared/data", KRASIS_SOURCE_DIR);
    json_t *convs = load_json("tests/reference/templates/conversations.json");
    json_t *index = load_json("tests/reference/templates/index.json");
    const json_t *templates = json_object_get(index, "templates");
    for (size_t i = 0; i < json_array_size(templates); i++)
        run_template_file(json_string_value(json_array_get(templates, i)), json_object_get(convs, "conversations"),
                          json_object_get(convs, "tools"));
    run_features();
    bad_input();
    if (skipped_templates)
        printf("SKIPPED %d templates: %s is absent\n", skipped_templates, shared_dir);
    json_decref(index);
    json_decref(convs);
    return test_summary("test_template");
}
