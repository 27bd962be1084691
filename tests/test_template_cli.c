/* `krasis template` driven as a user would: a .jinja file, a model directory (tokenizer_config.json
 * with a string or a list of templates, bos/eos as strings or AddedToken objects), --kwargs, --bos,
 * and bad input (messages not JSON, a template syntax error, missing arguments). argv[1] is krasis. */
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/mapfile.h"
#include "test.h"
#include "tmpdir.h"

static char tmp[512];
static const char *krasis_bin;

static const char *path_in_tmp(const char *name) {
    static char p[4][800];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmp, name);
    return p[k];
}

static void write_text(const char *name, const char *text) { test_write(path_in_tmp(name), text, strlen(text)); }

/* Runs krasis with `args`; returns the exit status, stdout in *out and stderr in *err (malloc'd). */
static int run(const char *args, char **out, char **err) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' template %s >'%s' 2>'%s'", krasis_bin, args, path_in_tmp("stdout"), path_in_tmp("stderr"));
    int st = system(cmd);
    size_t n;
    if (kr_read_file(path_in_tmp("stdout"), out, &n) != KR_OK || kr_read_file(path_in_tmp("stderr"), err, &n) != KR_OK) {
        fprintf(stderr, "could not read the output of: %s\n", cmd);
        exit(2);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void expect_output(const char *args, const char *want) {
    char *out, *err;
    int rc = run(args, &out, &err);
    CHECK(rc == 0, "krasis template %s: exit %d, stderr: %s", args, rc, err);
    CHECK(strcmp(out, want) == 0, "krasis template %s:\n    want \"%s\"\n    got  \"%s\"", args, want, out);
    free(out);
    free(err);
}

static void expect_failure(const char *args, int want_rc, const char *must_contain) {
    char *out, *err;
    int rc = run(args, &out, &err);
    CHECK(rc == want_rc, "krasis template %s: exit %d, want %d (stderr: %s)", args, rc, want_rc, err);
    CHECK(strstr(err, must_contain) != NULL, "krasis template %s: stderr \"%s\" lacks \"%s\"", args, err, must_contain);
    CHECK(out[0] == 0, "krasis template %s: printed \"%s\" on failure", args, out);
    free(out);
    free(err);
}

#define V2_TEMPLATE                                                                                                     \
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}"  \
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n\\n' }}"    \
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif "             \
    "message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}{% if "                     \
    "add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_template_cli KRASIS_BINARY\n");
        return 2;
    }
    krasis_bin = argv[1];
    if (!test_tmpdir(tmp, sizeof tmp)) {
        perror("mkdtemp");
        return 2;
    }
    write_text("v2.jinja", V2_TEMPLATE);
    write_text("messages.json", "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi é\"},"
                                " {\"role\": \"assistant\", \"content\": \"Hello\", \"tool_calls\": null}]");
    char args[2048];

    /* a template file; bos/eos from the command line; no newline added */
    snprintf(args, sizeof args, "--template '%s' --messages '%s' --bos '<B>' --eos '<E>' --add-generation-prompt",
             path_in_tmp("v2.jinja"), path_in_tmp("messages.json"));
    expect_output(args, "<B>Be brief.\n\nUser: Hi é\n\nAssistant: Hello<E>Assistant:");
    /* no --bos: an undefined bos_token prints as nothing, as in jinja2 */
    snprintf(args, sizeof args, "--template '%s' --messages '%s' --eos '</s>'", path_in_tmp("v2.jinja"),
             path_in_tmp("messages.json"));
    expect_output(args, "Be brief.\n\nUser: Hi é\n\nAssistant: Hello</s>");

    /* a model directory: the template and AddedToken-style bos/eos from tokenizer_config.json */
    char model[700];
    snprintf(model, sizeof model, "%s/model", tmp);
    mkdir(model, 0755);
    {
        char cfg[4096];
        snprintf(cfg, sizeof cfg,
                 "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<｜begin▁of▁sentence｜>\"}, "
                 "\"eos_token\": \"<｜end▁of▁sentence｜>\", \"chat_template\": \"%s\"}",
                 "{{ bos_token }}{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}{{ eos_token }}"
                 "{% if enable_thinking is defined %}[think={{ enable_thinking }}]{% endif %}"
                 "{% if tools %}{{ tools | length }} tools{% endif %}");
        write_text("model/tokenizer_config.json", cfg);
    }
    write_text("tools.json", "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]");
    snprintf(args, sizeof args, "--template '%s' --messages '%s'", model, path_in_tmp("messages.json"));
    expect_output(args, "<｜begin▁of▁sentence｜>system=Be brief.;user=Hi é;assistant=Hello;<｜end▁of▁sentence｜>");
    snprintf(args, sizeof args, "--template '%s' --messages '%s' --kwargs '{\"enable_thinking\": false}' --tools '%s' --bos X",
             model, path_in_tmp("messages.json"), path_in_tmp("tools.json"));
    expect_output(args, "Xsystem=Be brief.;user=Hi é;assistant=Hello;<｜end▁of▁sentence｜>[think=False]1 tools");

    /* a list of named templates: "default", or "tool_use" when tools are given */
    write_text("model/tokenizer_config.json",
               "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T{{ messages | length }}\"},"
               " {\"name\": \"default\", \"template\": \"D{{ messages | length }}\"}]}");
    snprintf(args, sizeof args, "--template '%s' --messages '%s'", model, path_in_tmp("messages.json"));
    expect_output(args, "D3");
    snprintf(args, sizeof args, "--template '%s' --messages '%s' --tools '%s'", model, path_in_tmp("messages.json"),
             path_in_tmp("tools.json"));
    expect_output(args, "T3");

    /* bad input */
    write_text("bad.json", "[{\"role\": \"user\", \"content\": \"unterminated}");
    snprintf(args, sizeof args, "--template '%s' --messages '%s'", path_in_tmp("v2.jinja"), path_in_tmp("bad.json"));
    expect_failure(args, 1, "not valid JSON");
    write_text("object.json", "{\"role\": \"user\"}");
    snprintf(args, sizeof args, "--template '%s' --messages '%s'", path_in_tmp("v2.jinja"), path_in_tmp("object.json"));
    expect_failure(args, 1, "must be a JSON array");
    write_text("broken.jinja", "line one\n{% for m in messages %}\n{{ m.content }}\n");
    snprintf(args, sizeof args, "--template '%s' --messages '%s'", path_in_tmp("broken.jinja"), path_in_tmp("messages.json"));
    expect_failure(args, 1, "broken.jinja:2: unclosed 'for'");
    write_text("raises.jinja", "{{ raise_exception('no system messages here') }}");
    snprintf(args, sizeof args, "--template '%s' --messages '%s'", path_in_tmp("raises.jinja"), path_in_tmp("messages.json"));
    expect_failure(args, 1, "no system messages here");
    snprintf(args, sizeof args, "--template '%s' --messages '%s' --kwargs '[1]'", path_in_tmp("v2.jinja"),
             path_in_tmp("messages.json"));
    expect_failure(args, 1, "--kwargs must be a JSON object");
    snprintf(args, sizeof args, "--template '%s/nope.jinja' --messages '%s'", tmp, path_in_tmp("messages.json"));
    expect_failure(args, 1, "nope.jinja");
    snprintf(args, sizeof args, "--template '%s'", path_in_tmp("v2.jinja"));
    expect_failure(args, 2, "usage: krasis template");

    test_rmtree(tmp);
    return test_summary("test_template_cli");
}
