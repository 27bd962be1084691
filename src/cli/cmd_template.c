/* krasis template --template FILE.jinja|MODEL --messages FILE.json [--tools FILE.json]
 *                 [--add-generation-prompt] [--kwargs JSON] [--bos S] [--eos S]
 * Renders a chat prompt and prints it exactly (no newline added), so that anyone can compare it with
 * what Python's jinja2 / transformers' apply_chat_template produce. With MODEL (a directory) the
 * template comes from chat_template.jinja or tokenizer_config.json, and bos/eos from the latter. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/json.h"
#include "base/mapfile.h"
#include "cli/commands.h"
#include "tokenizer/template.h"
#include "tokenizer/tokenizer.h"
#include "weights/gguf_set.h"


#define USAGE                                                                                                  \
    "usage: krasis template --template FILE.jinja|MODEL --messages FILE.json [--tools FILE.json]\n"           \
    "                       [--add-generation-prompt] [--kwargs JSON] [--bos S] [--eos S]\n"

typedef struct {
    char *source;    /* the template text (malloc'd) */
    char *name;      /* for errors: the file it came from */
    char *bos, *eos; /* from tokenizer_config.json (malloc'd), or NULL */
} template_source;

static void template_source_free(template_source *t) {
    free(t->source);
    free(t->name);
    free(t->bos);
    free(t->eos);
}

static char *dup_str(const char *s) {
    char *d = malloc(strlen(s) + 1);
    if (d)
        strcpy(d, s);
    return d;
}

static kr_status read_json_file(const char *path, const char *what, json_t **out) {
    char *text;
    size_t len;
    KR_TRY(kr_read_file(path, &text, &len));
    char where[1200];
    snprintf(where, sizeof where, "%s %s", what, path);
    kr_status s = kr_json_parse(text, len, where, out);
    free(text);
    return s;
}

/* bos_token / eos_token in tokenizer_config.json: a string, or an AddedToken {"content": ...}. */
static kr_status special_token(const json_t *cfg, const char *key, const char *path, char **out) {
    json_t *v = json_object_get(cfg, key);
    if (v && json_is_object(v))
        v = json_object_get(v, "content");
    if (!v || json_is_null(v))
        return KR_OK;
    if (!json_is_string(v))
        return kr_fail(KR_ERR_FORMAT, "%s: field '%s' must be a string or {\"content\": string}", path, key);
    *out = dup_str(json_string_value(v));
    return *out ? KR_OK : kr_fail(KR_ERR_NOMEM, "out of memory");
}

/* chat_template: a string, or a list of {name, template} (transformers picks "tool_use" when tools
 * are given and it exists, else "default"). */
static kr_status pick_template(const json_t *ct, const char *path, int have_tools, char **out) {
    if (json_is_string(ct)) {
        *out = dup_str(json_string_value(ct));
        return *out ? KR_OK : kr_fail(KR_ERR_NOMEM, "out of memory");
    }
    if (!json_is_array(ct))
        return kr_fail(KR_ERR_FORMAT, "%s: 'chat_template' must be a string or a list of {name, template}", path);
    const char *want[2] = {have_tools ? "tool_use" : NULL, "default"};
    for (int w = 0; w < 2; w++) {
        if (!want[w])
            continue;
        for (size_t i = 0; i < json_array_size(ct); i++) {
            json_t *e = json_array_get(ct, i);
            json_t *name = json_object_get(e, "name"), *tpl = json_object_get(e, "template");
            if (json_is_string(name) && json_is_string(tpl) && !strcmp(json_string_value(name), want[w])) {
                *out = dup_str(json_string_value(tpl));
                return *out ? KR_OK : kr_fail(KR_ERR_NOMEM, "out of memory");
            }
        }
    }
    return kr_fail(KR_ERR_FORMAT, "%s: 'chat_template' is a list with no template named \"default\"", path);
}

static kr_status load_from_model(const char *dir, int have_tools, template_source *t) {
    char cfg_path[4096], jinja_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    snprintf(jinja_path, sizeof jinja_path, "%s/chat_template.jinja", dir);
    json_t *cfg = NULL;
    if (kr_file_exists(cfg_path)) {
        KR_TRY(kr_json_load_file(cfg_path, &cfg));
        kr_status s = special_token(cfg, "bos_token", cfg_path, &t->bos);
        if (s == KR_OK)
            s = special_token(cfg, "eos_token", cfg_path, &t->eos);
        if (s != KR_OK) {
            json_decref(cfg);
            return s;
        }
    }
    kr_status s = KR_OK;
    if (kr_file_exists(jinja_path)) { /* newer checkpoints keep the template in its own file */
        size_t len;
        s = kr_read_file(jinja_path, &t->source, &len);
        t->name = dup_str(jinja_path);
    } else if (cfg && json_object_get(cfg, "chat_template")) {
        s = pick_template(json_object_get(cfg, "chat_template"), cfg_path, have_tools, &t->source);
        t->name = dup_str(cfg_path);
    } else
        s = kr_fail(KR_ERR_FORMAT, "%s: no chat template (neither chat_template.jinja nor 'chat_template' in tokenizer_config.json)",
                    dir);
    json_decref(cfg);
    if (s == KR_OK && !t->name)
        s = kr_fail(KR_ERR_NOMEM, "out of memory");
    return s;
}

/* A GGUF model: tokenizer.chat_template, and the bos/eos token texts of its vocabulary. */
static kr_status load_from_gguf(const char *path, template_source *t) {
    kr_tokenizer *tok;
    KR_TRY(kr_tokenizer_load(path, &tok));
    const char *src = kr_tokenizer_chat_template(tok);
    kr_status s = KR_OK;
    if (!src)
        s = kr_fail(KR_ERR_FORMAT, "%s: no chat template (key 'tokenizer.chat_template' is missing)", path);
    else if (!(t->source = dup_str(src)) || !(t->name = dup_str(path)))
        s = kr_fail(KR_ERR_NOMEM, "out of memory");
    const char *bos = kr_tokenizer_bos_text(tok), *eos = kr_tokenizer_eos_text(tok);
    if (s == KR_OK && bos[0] && !(t->bos = dup_str(bos)))
        s = kr_fail(KR_ERR_NOMEM, "out of memory");
    if (s == KR_OK && eos[0] && !(t->eos = dup_str(eos)))
        s = kr_fail(KR_ERR_NOMEM, "out of memory");
    kr_tokenizer_free(tok);
    return s;
}

static kr_status load_template(const char *path, int have_tools, template_source *t) {
    struct stat st;
    if (stat(path, &st) != 0)
        return kr_fail(KR_ERR_IO, "%s: no such file or model directory", path);
    if (S_ISDIR(st.st_mode))
        return load_from_model(path, have_tools, t);
    if (kr_is_gguf_file(path))
        return load_from_gguf(path, t);
    size_t len;
    KR_TRY(kr_read_file(path, &t->source, &len));
    if (strlen(t->source) != len)
        return kr_fail(KR_ERR_FORMAT, "%s: the template contains a NUL byte", path);
    t->name = dup_str(path);
    return t->name ? KR_OK : kr_fail(KR_ERR_NOMEM, "out of memory");
}

typedef struct {
    const char *template_path, *messages_path, *tools_path, *kwargs, *bos, *eos;
    int add_generation_prompt;
} options;

static int parse_options(int argc, char **argv, options *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = !strcmp(a, "--template") ? &o->template_path
                            : !strcmp(a, "--messages") ? &o->messages_path
                            : !strcmp(a, "--tools") ? &o->tools_path
                            : !strcmp(a, "--kwargs") ? &o->kwargs
                            : !strcmp(a, "--bos") ? &o->bos
                            : !strcmp(a, "--eos") ? &o->eos : NULL;
        if (slot && i + 1 < argc)
            *slot = argv[++i];
        else if (!strcmp(a, "--add-generation-prompt"))
            o->add_generation_prompt = 1;
        else {
            fprintf(stderr, "krasis template: unexpected argument '%s'\n", a);
            return 0;
        }
    }
    return o->template_path && o->messages_path;
}

static kr_status render(const options *o, char **prompt) {
    template_source src = {0};
    json_t *messages = NULL, *tools = NULL, *kwargs = NULL, *ctx = NULL;
    kr_template *t = NULL;
    kr_status s = read_json_file(o->messages_path, "--messages", &messages);
    if (s == KR_OK && json_is_object(messages) && json_is_array(json_object_get(messages, "messages"))) {
        json_t *inner = json_incref(json_object_get(messages, "messages")); /* {"messages": [...]} is accepted too */
        json_decref(messages);
        messages = inner;
    }
    if (s == KR_OK && !json_is_array(messages))
        s = kr_fail(KR_ERR_FORMAT, "--messages %s: must be a JSON array of messages", o->messages_path);
    if (s == KR_OK && o->tools_path) {
        s = read_json_file(o->tools_path, "--tools", &tools);
        if (s == KR_OK && !json_is_array(tools))
            s = kr_fail(KR_ERR_FORMAT, "--tools %s: must be a JSON array of tool definitions", o->tools_path);
    }
    if (s == KR_OK && o->kwargs) {
        s = kr_json_parse(o->kwargs, strlen(o->kwargs), "--kwargs", &kwargs);
        if (s == KR_OK && !json_is_object(kwargs))
            s = kr_fail(KR_ERR_ARG, "--kwargs must be a JSON object, like '{\"enable_thinking\": false}'");
    }
    if (s == KR_OK)
        s = load_template(o->template_path, tools != NULL, &src);
    if (s == KR_OK)
        s = kr_template_chat_context(messages, tools, o->add_generation_prompt, kwargs, o->bos ? o->bos : src.bos,
                                     o->eos ? o->eos : src.eos, &ctx);
    if (s == KR_OK)
        s = kr_template_parse(src.source, src.name, &t);
    if (s == KR_OK)
        s = kr_template_render(t, ctx, prompt);
    kr_template_free(t);
    json_decref(ctx);
    json_decref(kwargs);
    json_decref(tools);
    json_decref(messages);
    template_source_free(&src);
    return s;
}

int kr_cmd_template(int argc, char **argv) {
    options o = {0};
    if (!parse_options(argc, argv, &o)) {
        fprintf(stderr, USAGE);
        return 2;
    }
    char *prompt = NULL;
    if (render(&o, &prompt) != KR_OK)
        return kr_cli_fail();
    size_t n = strlen(prompt);
    int rc = fwrite(prompt, 1, n, stdout) == n && fflush(stdout) == 0 ? 0 : 1;
    if (rc)
        fprintf(stderr, "krasis: template: could not write the prompt to stdout\n");
    free(prompt);
    return rc;
}
