/* krasis run: one prompt in, the continuation streamed to stdout, timings to stderr.
 * krasis chat: an interactive multi-turn conversation through the model's chat template; Ctrl-C stops
 * the current answer, Ctrl-D (or /exit) ends the chat. Both reuse the KV cache of the previous turn. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/gen_options.h"
#include "tokenizer/template.h"

static const char *run_usage =
    "usage: krasis run -m MODEL -p PROMPT [-n N] [--chat] [--system S] [--temp T] [--top-k K] [--top-p P]\n"
    "                  [--min-p P] [--repeat-penalty R] [--repeat-last-n N] [--presence-penalty P]\n"
    "                  [--frequency-penalty F] [--seed S] [--stop S]... [--ctx N] [--ignore-eos] [--tokenizer PATH]\n"
    "  Streams the continuation of PROMPT (with --chat: the model's answer to it as a user message).\n"
    "  Defaults: --temp 0.8 --top-k 40 --top-p 0.95 --min-p 0.05 (--temp 0 is greedy), a seed from the clock.\n";

static const char *chat_usage =
    "usage: krasis chat -m MODEL [--system S] [-n N] [sampling options as for run] [--ctx N]\n"
    "  Interactive chat through the model's chat template. Ctrl-C stops an answer; Ctrl-D or /exit quits.\n";

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

/* The text shown so far of the current answer: chat keeps exactly what the user saw as the assistant's
 * turn (without the stop string that ended it). */
typedef struct {
    char *text;
    size_t len, cap;
} shown_text;

static bool print_text(void *user, const char *text, size_t len) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    shown_text *shown = user;
    if (shown && shown->len + len + 1 > shown->cap) {
        size_t cap = (shown->len + len + 1) * 2;
        char *p = realloc(shown->text, cap);
        if (!p)
            return false;
        shown->text = p;
        shown->cap = cap;
    }
    if (shown) {
        memcpy(shown->text + shown->len, text, len);
        shown->text[shown->len += len] = '\0';
    }
    return !interrupted;
}

/* kr_gen_params.alive: Ctrl-C stops a long prefill between its chunks too */
static bool not_interrupted(void *user) {
    (void)user;
    return !interrupted;
}

static void print_stats(const kr_gen_stats *st, uint64_t seed) {
    int64_t fresh = st->prefilled_tokens;
    fprintf(stderr, "\n[prompt %lld tokens (%lld cached), prefill %.1f tok/s; generated %lld tokens, decode %.1f tok/s; seed %llu%s]\n",
            (long long)st->prompt_tokens, (long long)st->cached_tokens,
            st->prefill_s > 0 ? (double)fresh / st->prefill_s : 0.0, (long long)st->generated_tokens,
            st->decode_s > 0 && st->generated_tokens > 1 ? (double)(st->generated_tokens - 1) / st->decode_s : 0.0,
            (unsigned long long)seed,
            st->finish == KR_FINISH_LENGTH ? ", stopped at the token limit"
            : st->finish == KR_FINISH_CANCELLED ? ", interrupted" : "");
}

/* The tokenizer's chat template, parsed (once per command: a chat renders it every turn). */
static kr_status parse_chat_template(const kr_tokenizer *tok, kr_template **t) {
    const char *src = kr_tokenizer_chat_template(tok);
    if (!src)
        return kr_fail(KR_ERR_ARG, "the tokenizer has no chat_template (tokenizer_config.json); use run without --chat");
    return kr_template_parse(src, "chat_template", t);
}

/* Renders messages through the chat template with a generation prompt, then tokenizes it (special
 * tokens in the rendered text are recognised; nothing is added: the template has the BOS). */
static kr_status chat_prompt(const kr_tokenizer *tok, kr_template *t, json_t *messages, int32_t **ids, size_t *n) {
    json_t *ctx = NULL;
    char *text = NULL;
    const char *bos = kr_tokenizer_bos_text(tok), *eos = kr_tokenizer_eos_text(tok);
    kr_status s = kr_template_chat_context(messages, NULL, 1, NULL, bos[0] ? bos : NULL, eos[0] ? eos : NULL, &ctx);
    if (s == KR_OK)
        s = kr_template_render(t, ctx, &text);
    if (s == KR_OK)
        s = kr_tokenizer_encode(tok, text, strlen(text), (kr_encode_options){.add_special = false, .parse_special = true},
                                ids, n);
    free(text);
    json_decref(ctx);
    return s;
}

/* Fails (naming the flag or input) when content is not valid UTF-8, which JSON cannot carry. */
static kr_status add_message(json_t *messages, const char *role, const char *content, const char *what) {
    json_t *m = json_pack("{s:s, s:s}", "role", role, "content", content);
    if (!m)
        return kr_fail(KR_ERR_ARG, "%s is not valid UTF-8", what);
    json_array_append_new(messages, m);
    return KR_OK;
}

int kr_cmd_run(int argc, char **argv) {
    kr_gen_options o;
    int rc = kr_gen_options_parse(argc, argv, run_usage, &o);
    if (rc)
        return rc;
    if (!o.prompt) {
        fprintf(stderr, "krasis: run needs -p PROMPT\n%s", run_usage);
        return 2;
    }
    kr_model *m;
    kr_tokenizer *tok;
    kr_session *s;
    if (kr_gen_open(&o, &m, &tok, &s))
        return 1;
    int32_t *ids = NULL;
    size_t n = 0;
    kr_status st;
    if (o.chat) {
        json_t *messages = json_array();
        kr_template *t = NULL;
        st = parse_chat_template(tok, &t);
        if (st == KR_OK && o.system)
            st = add_message(messages, "system", o.system, "--system");
        if (st == KR_OK)
            st = add_message(messages, "user", o.prompt, "--prompt");
        if (st == KR_OK)
            st = chat_prompt(tok, t, messages, &ids, &n);
        kr_template_free(t);
        json_decref(messages);
    } else {
        st = kr_tokenizer_encode(tok, o.prompt, strlen(o.prompt), (kr_encode_options){.add_special = true}, &ids, &n);
    }
    kr_gen_stats stats;
    signal(SIGINT, on_sigint);
    o.gen.alive = not_interrupted;
    if (st == KR_OK)
        st = kr_session_generate(s, ids, n, &o.gen, print_text, NULL, &stats);
    if (st == KR_OK)
        print_stats(&stats, o.gen.sampling.seed);
    else
        rc = kr_cli_fail();
    free(ids);
    kr_gen_close(m, tok, s);
    return rc;
}

/* One line from stdin without its newline (any length; *buf is reused); NULL at end of input. */
static char *read_line(char **buf, size_t *cap) {
    fputs("> ", stdout);
    fflush(stdout);
    ssize_t n;
    while ((n = getline(buf, cap, stdin)) < 0) {
        if (ferror(stdin) && errno == EINTR && interrupted) { /* Ctrl-C at the prompt: a fresh prompt */
            clearerr(stdin);
            interrupted = 0;
            fputs("\n> ", stdout);
            fflush(stdout);
            continue;
        }
        return NULL;
    }
    (*buf)[strcspn(*buf, "\n")] = '\0';
    return *buf;
}

int kr_cmd_chat(int argc, char **argv) {
    kr_gen_options o;
    int rc = kr_gen_options_parse(argc, argv, chat_usage, &o);
    if (rc)
        return rc;
    if (!o.gen.max_tokens)
        o.gen.max_tokens = 512;
    o.gen.alive = not_interrupted;
    kr_model *m;
    kr_tokenizer *tok;
    kr_session *s;
    if (kr_gen_open(&o, &m, &tok, &s))
        return 1;
    struct sigaction sa = {.sa_handler = on_sigint}; /* no SA_RESTART: Ctrl-C interrupts the read */
    sigaction(SIGINT, &sa, NULL);
    json_t *messages = json_array();
    kr_template *t = NULL;
    if (parse_chat_template(tok, &t) != KR_OK ||
        (o.system && add_message(messages, "system", o.system, "--system") != KR_OK)) {
        kr_template_free(t);
        json_decref(messages);
        kr_gen_close(m, tok, s);
        return kr_cli_fail();
    }
    fprintf(stderr, "krasis chat: %s (Ctrl-C stops an answer, Ctrl-D quits)\n", o.model);
    char *line, *buf = NULL;
    size_t cap = 0;
    while ((line = read_line(&buf, &cap)) != NULL) {
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit"))
            break;
        if (!line[0])
            continue;
        if (add_message(messages, "user", line, "the message") != KR_OK) {
            kr_cli_fail();
            continue;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        kr_gen_stats stats;
        shown_text answer = {0};
        interrupted = 0;
        kr_status st = chat_prompt(tok, t, messages, &ids, &n);
        if (st == KR_OK)
            st = kr_session_generate(s, ids, n, &o.gen, print_text, &answer, &stats);
        free(ids);
        if (st == KR_OK)
            st = add_message(messages, "assistant", answer.text ? answer.text : "", "the answer");
        free(answer.text);
        if (st != KR_OK) {
            kr_cli_fail();
            json_array_remove(messages, json_array_size(messages) - 1);
            continue;
        }
        print_stats(&stats, o.gen.sampling.seed);
    }
    free(buf);
    kr_template_free(t);
    json_decref(messages);
    kr_gen_close(m, tok, s);
    return rc;
}
