/* krasis serve: the OpenAI-compatible HTTP server. Loads the model, starts the engine thread and the
 * HTTP daemon, then waits for SIGINT/SIGTERM and shuts down in order: the engine first (queued
 * requests get 503, the running one stops at its next token), then the connections. */
#define _GNU_SOURCE /* memrchr */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mapfile.h"
#include "cli/commands.h"
#include "cli/quant_options.h"
#include "engine/session.h"
#include "model/model.h"
#include "server/engine.h"
#include "server/server.h"
#include "tokenizer/template.h"
#include "tokenizer/tokenizer.h"

static const char *usage =
    "usage: krasis serve -m MODEL [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--ctx N] [--queue N]\n"
    "                    [--max-body BYTES] [--model-name NAME] [--chat-template FILE] [--tokenizer PATH]\n"
    "  OpenAI-compatible server: POST /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics.\n"
    "  --queue N: requests that may wait while one runs (default 64; more get 503).\n"
    "  --max-body: the largest request body in bytes (default 4 MiB; larger gets 413).\n"
    "  --api-key: required as 'Authorization: Bearer KEY' on /v1/ (default: the KRASIS_API_KEY variable, else none).\n"
    "  --port 0 picks a free port; the address is printed as 'krasis serve: listening on http://HOST:PORT'.\n";

static int parse_num(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "krasis: %s: '%s' is not an integer in [%lld, %lld]\n", flag, v ? v : "", lo, hi);
        return 2;
    }
    *out = x;
    return 0;
}

int kr_cmd_serve(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *host = "127.0.0.1", *api_key = getenv("KRASIS_API_KEY"),
               *name = NULL, *template_file = NULL;
    char name_buf[256];
    long long port = 8080, ctx = 0, queue = 64, max_body = 4 << 20;
    kr_quant_config quant;
    kr_quant_defaults(&quant);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            fputs(KR_QUANT_USAGE, stdout);
            return 0;
        }
        int qrc = kr_quant_flag(argc, argv, &i, &quant); /* --expert-bits etc., as run takes them */
        if (qrc == 2)
            return 2;
        if (qrc == 1)
            continue;
        if (!v) {
            fprintf(stderr, "krasis: %s %s\n%s", a, a[0] == '-' ? "needs a value" : "is not an option", usage);
            return 2;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--tokenizer"))
            tokenizer = v;
        else if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--api-key"))
            api_key = v;
        else if (!strcmp(a, "--model-name"))
            name = v;
        else if (!strcmp(a, "--chat-template"))
            template_file = v;
        else if (!strcmp(a, "--port"))
            rc = parse_num(a, v, 0, 65535, &port);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
            rc = parse_num(a, v, 1, 1 << 30, &ctx);
        else if (!strcmp(a, "--queue"))
            rc = parse_num(a, v, 0, 1 << 20, &queue);
        else if (!strcmp(a, "--max-body"))
            rc = parse_num(a, v, 64, 1ll << 32, &max_body);
        else {
            fprintf(stderr, "krasis: unknown option '%s'\n%s", a, usage);
            return 2;
        }
        if (rc)
            return rc;
    }
    if (!model) {
        fprintf(stderr, "krasis: -m MODEL is required\n%s", usage);
        return 2;
    }
    if (api_key && !api_key[0])
        api_key = NULL;
    if (!name) { /* the directory's last component, as clients list it */
        size_t n = strlen(model);
        while (n > 1 && model[n - 1] == '/')
            n--;
        const char *slash = memrchr(model, '/', n);
        snprintf(name_buf, sizeof name_buf, "%.*s", (int)(n - (slash ? (size_t)(slash + 1 - model) : 0)), slash ? slash + 1 : model);
        name = name_buf;
    }

    /* SIGINT/SIGTERM are taken by sigwait below: block them before any thread starts so none gets them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN); /* a vanished client is an error on its socket, not the end of the server */

    kr_model *m = NULL;
    kr_tokenizer *tok = NULL;
    kr_session *s = NULL;
    kr_template *tmpl = NULL;
    kr_queue *q = NULL;
    kr_engine *engine = NULL;
    kr_server *server = NULL;
    kr_metrics metrics;
    bool metrics_ready = false;
    int rc = 0;
    char *tsrc = NULL;
    if (kr_model_open(model, &m) != KR_OK || kr_model_quantize(m, &quant) != KR_OK ||
        kr_tokenizer_load(tokenizer ? tokenizer : kr_model_source(m), &tok) != KR_OK || kr_session_create(m, tok, ctx, &s) != KR_OK) {
        rc = kr_cli_fail();
        goto out;
    }
    const char *src = kr_tokenizer_chat_template(tok);
    if (template_file) {
        if (kr_read_file(template_file, &tsrc, NULL) != KR_OK) {
            kr_error_prefix(KR_ERR_IO, "--chat-template");
            rc = kr_cli_fail();
            goto out;
        }
        src = tsrc;
    }
    if (src && kr_template_parse(src, template_file ? template_file : "chat_template", &tmpl) != KR_OK) {
        rc = kr_cli_fail();
        goto out;
    }
    if (!src)
        fprintf(stderr, "krasis serve: note: the model has no chat template; /v1/chat/completions will answer 400\n");
    bool think = (src && strstr(src, "<think>")) || kr_tokenizer_lookup(tok, "<think>") >= 0;
    kr_metrics_init(&metrics, kr_session_max_ctx(s));
    metrics_ready = true;
    if (!(q = kr_queue_create((size_t)queue))) {
        fprintf(stderr, "krasis: out of memory\n");
        rc = 1;
        goto out;
    }
    kr_engine_config ec = {.session = s, .tok = tok, .chat_template = tmpl, .think = think, .model_name = name,
                           .queue = q, .metrics = &metrics};
    kr_server_config sc = {.host = host, .port = (int)port, .api_key = api_key, .max_body = (size_t)max_body,
                           .model_name = name, .ctx = kr_session_max_ctx(s), .queue = q, .metrics = &metrics};
    if (kr_engine_start(&ec, &engine) != KR_OK || kr_server_start(&sc, &server) != KR_OK) {
        rc = kr_cli_fail();
        goto out;
    }
    fprintf(stderr, "krasis serve: model '%s' (context %lld tokens%s), listening on http://%s%s%s:%d\n", name,
            (long long)kr_session_max_ctx(s), api_key ? ", API key required" : "", strchr(host, ':') ? "[" : "", host,
            strchr(host, ':') ? "]" : "", kr_server_port(server));
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "krasis serve: %s, shutting down\n", sig == SIGINT ? "interrupted" : "terminated");
out:
    kr_engine_stop(engine); /* before the daemon: connections waiting on jobs must be woken */
    kr_server_stop(server);
    kr_queue_free(q);
    if (metrics_ready)
        kr_metrics_destroy(&metrics);
    kr_template_free(tmpl);
    free(tsrc);
    kr_session_free(s);
    kr_tokenizer_free(tok);
    kr_model_close(m);
    return rc;
}
