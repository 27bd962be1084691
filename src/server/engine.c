/* Running one job: prompt (chat template or raw completion prompt) -> tokens -> kr_session_generate,
 * whose callbacks turn tokens and text into the OpenAI response shape. Streaming jobs get their
 * status (200) as soon as the prompt is known to fit, then one SSE event per piece of text; other jobs
 * get the whole body at the end. Every callback checks the job's cancelled flag, so a client that
 * goes away stops the generation at the next token. */
#include "server/engine.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "server/reasoning.h"

struct kr_engine {
    kr_engine_config c;
    pthread_t thread;
    atomic_bool stopping;
    uint64_t seed_state; /* engine thread only: seeds for requests that give none */
    uint64_t next_id;    /* engine thread only: response ids */
};

typedef struct {
    kr_engine *e;
    kr_job *j;
    const kr_oai_request *r;
    bool chat, stream;
    kr_think think;
    char id[48];
    json_int_t created;
    kr_buf content, reasoning;           /* non-streaming: the whole answer */
    json_t *lp;                       /* chat: logprobs.content entries not yet sent */
    json_t *lp_tokens, *lp_values, *lp_top, *lp_offsets; /* completions: the legacy logprobs arrays */
    size_t text_offset;               /* completions: bytes of prompt + completion text before the next token */
} gen;

static const char *piece(void *user, int32_t id, size_t *len) {
    const char *s = kr_tokenizer_token_bytes(user, id, len);
    if (!s) {
        *len = 0;
        return "";
    }
    return s;
}

static size_t prompt_ids_bytes(const kr_tokenizer *tok, const int32_t *ids, size_t n) {
    size_t total = 0, len;
    for (size_t i = 0; i < n; i++)
        if (kr_tokenizer_token_bytes(tok, ids[i], &len))
            total += len;
    return total;
}

static void send_event(gen *g, json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return;
    kr_buf b = {0};
    kr_buf_add(&b, "data: ", 6);
    kr_buf_add(&b, s, strlen(s));
    kr_buf_add(&b, "\n\n", 2);
    if (!b.oom)
        kr_job_write(g->j, b.p, b.n);
    kr_buf_free(&b);
    free(s);
}

/* The logprobs object for what has been collected so far (and resets it), or null. */
static json_t *take_logprobs(gen *g) {
    if (!g->r->gen.logprobs)
        return json_null();
    json_t *o;
    if (g->chat) {
        o = json_pack("{s:o}", "content", g->lp);
        g->lp = json_array();
    } else {
        o = json_pack("{s:o, s:o, s:o, s:o}", "tokens", g->lp_tokens, "token_logprobs", g->lp_values, "top_logprobs",
                      g->lp_top, "text_offset", g->lp_offsets);
        g->lp_tokens = json_array();
        g->lp_values = json_array();
        g->lp_top = json_array();
        g->lp_offsets = json_array();
    }
    return o;
}

static json_t *chunk(gen *g, json_t *delta_or_text, const char *finish) {
    json_t *choice = json_pack("{s:i, s:o, s:o}", "index", 0, "logprobs", take_logprobs(g), "finish_reason",
                               finish ? json_string(finish) : json_null());
    json_object_set_new(choice, g->chat ? "delta" : "text", delta_or_text);
    return json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", g->id, "object", g->chat ? "chat.completion.chunk" : "text_completion",
                     "created", g->created, "model", g->e->c.model_name, "choices", choice);
}

static void on_piece(void *user, bool reasoning, const char *text, size_t len) {
    gen *g = user;
    if (!g->stream) {
        kr_buf_add(reasoning ? &g->reasoning : &g->content, text, len);
        return;
    }
    json_t *s = kr_oai_string(text, len);
    send_event(g, chunk(g, g->chat ? json_pack("{s:o}", reasoning ? "reasoning_content" : "content", s) : s, NULL));
}

/* whether the request is still wanted: its client there, the server not shutting down */
static bool alive(void *user) {
    const gen *g = user;
    return !kr_job_is_cancelled(g->j) && !atomic_load(&g->e->stopping);
}

static bool on_text(void *user, const char *text, size_t len) {
    gen *g = user;
    if (g->chat)
        kr_think_push(&g->think, text, len, on_piece, g);
    else
        on_piece(g, false, text, len);
    return alive(g);
}

static bool on_token(void *user, const kr_token_info *t) {
    gen *g = user;
    if (g->r->gen.logprobs) {
        const kr_tokenizer *tok = g->e->c.tok;
        if (g->chat) {
            json_array_append_new(g->lp, kr_oai_chat_logprob(t, piece, (void *)tok));
        } else {
            size_t len;
            const char *s = piece((void *)tok, t->id, &len);
            json_array_append_new(g->lp_tokens, kr_oai_string(s, len));
            json_array_append_new(g->lp_values, json_real(t->logprob));
            json_array_append_new(g->lp_offsets, json_integer((json_int_t)g->text_offset));
            g->text_offset += len;
            json_t *top = json_object();
            for (int i = 0; i < t->n_top; i++) {
                size_t l;
                const char *p = piece((void *)tok, t->top_ids[i], &l);
                json_t *k = kr_oai_string(p, l);
                json_object_set_new(top, json_string_value(k), json_real(t->top_logprobs[i]));
                json_decref(k);
            }
            json_array_append_new(g->lp_top, top);
        }
    }
    return alive(g);
}

/* Frees the engine's slot, then completes the job (a stream with its [DONE] trailer when sse_trailer): a client that sends
 * its next request as soon as it has this answer must find the slot free (with --queue 0 it would
 * otherwise get a 503). Every path of run_job ends here exactly once. */
static void job_done(kr_engine *e, kr_job *j, const kr_oai_error *err, bool sse_trailer) {
    kr_queue_done(e->c.queue);
    if (sse_trailer)
        kr_job_write(j, "data: [DONE]\n\n", 14);
    if (err)
        kr_job_fail(j, err);
    else
        kr_job_finish(j);
}

static kr_status chat_prompt(kr_engine *e, const kr_oai_request *r, char **text) {
    const char *bos = kr_tokenizer_bos_text(e->c.tok), *eos = kr_tokenizer_eos_text(e->c.tok);
    json_t *ctx = NULL;
    kr_status s = kr_template_chat_context(r->messages, NULL, 1, r->template_kwargs, bos[0] ? bos : NULL,
                                           eos[0] ? eos : NULL, &ctx);
    if (s == KR_OK)
        s = kr_template_render(e->c.chat_template, ctx, text);
    json_decref(ctx);
    return s;
}

/* The prompt's tokens, or false with the error set (400: the request's fault). */
static bool prompt_tokens(kr_engine *e, const kr_oai_request *r, int32_t **ids, size_t *n, bool *inside,
                          kr_oai_error *err) {
    *inside = false;
    if (r->kind == KR_OAI_COMPLETION && r->prompt_ids) {
        int64_t vocab = kr_tokenizer_vocab_size(e->c.tok);
        for (size_t i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] >= vocab) {
                kr_oai_error_set(err, 400, "prompt", "invalid_value", "'prompt[%zu]': token id %d is out of range [0, %lld)",
                                 i, r->prompt_ids[i], (long long)vocab);
                return false;
            }
        *ids = malloc((r->n_prompt_ids ? r->n_prompt_ids : 1) * sizeof **ids);
        if (!*ids) {
            kr_oai_error_set(err, 500, NULL, "out_of_memory", "out of memory for the prompt");
            return false;
        }
        memcpy(*ids, r->prompt_ids, r->n_prompt_ids * sizeof **ids);
        *n = r->n_prompt_ids;
        return true;
    }
    char *text = NULL;
    kr_status s = KR_OK;
    kr_encode_options opt = {.add_special = true, .parse_special = true};
    if (r->kind == KR_OAI_CHAT) {
        if (!e->c.chat_template) {
            kr_oai_error_set(err, 400, "messages", "no_chat_template",
                             "the model has no chat template; use /v1/completions or start the server with --chat-template");
            return false;
        }
        s = chat_prompt(e, r, &text);
        opt.add_special = false; /* the template wrote the BOS */
        if (s == KR_OK)
            *inside = kr_think_prompt_inside(text);
    } else {
        text = strdup(r->prompt);
    }
    if (s == KR_OK)
        s = kr_tokenizer_encode(e->c.tok, text, strlen(text), opt, ids, n);
    free(text);
    if (s != KR_OK) {
        kr_oai_error_set(err, 400, r->kind == KR_OAI_CHAT ? "messages" : "prompt", NULL, "%s", kr_error());
        return false;
    }
    return true;
}

static void run_job(kr_engine *e, kr_job *j) {
    kr_oai_request *r = &j->req;
    if (kr_job_is_cancelled(j)) {
        job_done(e, j, NULL, false);
        return;
    }
    kr_oai_error err;
    int32_t *ids = NULL;
    size_t n = 0;
    bool inside;
    if (!prompt_tokens(e, r, &ids, &n, &inside, &err)) {
        job_done(e, j, &err, false);
        return;
    }
    int64_t ctx = kr_session_max_ctx(e->c.session);
    if (n == 0 || (int64_t)n >= ctx) {
        if (n == 0)
            kr_oai_error_set(&err, 400, "prompt", "invalid_value", "the prompt is empty");
        else
            kr_oai_error_set(&err, 400, r->kind == KR_OAI_CHAT ? "messages" : "prompt", "context_length_exceeded",
                             "This model's maximum context length is %lld tokens. However, your prompt has %zu tokens "
                             "(at least %zu are needed to generate one). Please reduce the length of the prompt.",
                             (long long)ctx, n, n + 1);
        free(ids);
        job_done(e, j, &err, false);
        return;
    }

    gen g = {.e = e, .j = j, .r = r, .chat = r->kind == KR_OAI_CHAT, .stream = r->stream, .created = (json_int_t)time(NULL)};
    /* legacy logprobs.text_offset indexes the prompt followed by the completion, as OpenAI's does; for a
     * prompt given as token ids, their decoded bytes */
    if (!g.chat)
        g.text_offset = r->prompt ? strlen(r->prompt) : prompt_ids_bytes(e->c.tok, r->prompt_ids, r->n_prompt_ids);
    snprintf(g.id, sizeof g.id, "%s-%016" PRIx64, g.chat ? "chatcmpl" : "cmpl", e->next_id++ ^ (uint64_t)g.created << 20);
    kr_think_init(&g.think, g.chat && e->c.think, inside);
    g.lp = json_array();
    g.lp_tokens = json_array();
    g.lp_values = json_array();
    g.lp_top = json_array();
    g.lp_offsets = json_array();
    kr_gen_params p = r->gen;
    p.stop = (const char *const *)r->stops;
    p.on_token = on_token;
    p.alive = alive;
    if (!r->seed_given) { /* splitmix64 of a per-server counter: every request its own stream */
        uint64_t z = (e->seed_state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        p.sampling.seed = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    }
    if (g.stream) {
        kr_job_set_status(j, 200);
        if (g.chat)
            send_event(&g, chunk(&g, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL));
    }
    kr_metrics_running(e->c.metrics, 1);
    kr_gen_stats st;
    kr_status s = kr_session_generate(e->c.session, ids, n, &p, on_text, &g, &st);
    kr_metrics_running(e->c.metrics, -1);
    free(ids);
    if (s == KR_OK && g.chat)
        kr_think_flush(&g.think, on_piece, &g);
    if (s == KR_OK)
        kr_metrics_generation(e->c.metrics, &st, kr_session_kv_len(e->c.session));

    bool shutting_down = s == KR_OK && st.finish == KR_FINISH_CANCELLED && !kr_job_is_cancelled(j) &&
                         atomic_load(&e->stopping);
    if (s != KR_OK || shutting_down) {
        if (s != KR_OK)
            kr_oai_error_set(&err, 500, NULL, "generation_failed", "generation failed: %s", kr_error());
        else /* the answer was cut by the server stopping, not by the client: say so, never a silent 200 */
            kr_oai_error_set(&err, 503, NULL, "server_shutting_down", "the server is shutting down");
        if (g.stream) { /* the status is sent already: the error goes in the stream */
            char *body = kr_oai_error_body(&err);
            json_t *o = body ? json_loads(body, 0, NULL) : NULL;
            free(body);
            if (o)
                send_event(&g, o);
            job_done(e, j, NULL, true);
        } else {
            job_done(e, j, &err, false);
        }
    } else if (st.finish == KR_FINISH_CANCELLED) {
        job_done(e, j, NULL, false);
    } else if (g.stream) {
        const char *fr = kr_oai_finish_reason(st.finish);
        send_event(&g, chunk(&g, g.chat ? json_object() : json_string(""), fr));
        if (r->include_usage) {
            json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", g.id, "object",
                                  g.chat ? "chat.completion.chunk" : "text_completion", "created", g.created, "model",
                                  e->c.model_name, "choices", "usage", kr_oai_usage(&st));
            send_event(&g, o);
        }
        job_done(e, j, NULL, true);
    } else if (g.content.oom || g.reasoning.oom) {
        kr_oai_error_set(&err, 500, NULL, NULL, "out of memory holding the answer");
        job_done(e, j, &err, false);
    } else {
        json_t *choice = json_pack("{s:i, s:o, s:s}", "index", 0, "logprobs", take_logprobs(&g), "finish_reason",
                                   kr_oai_finish_reason(st.finish));
        json_t *text = kr_oai_string(g.content.p ? g.content.p : "", g.content.n);
        if (g.chat) {
            json_t *msg = json_pack("{s:s, s:o}", "role", "assistant", "content", text);
            if (e->c.think && g.reasoning.n)
                json_object_set_new(msg, "reasoning_content", kr_oai_string(g.reasoning.p, g.reasoning.n));
            json_object_set_new(choice, "message", msg);
        } else {
            json_object_set_new(choice, "text", text);
        }
        json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", g.id, "object",
                              g.chat ? "chat.completion" : "text_completion", "created", g.created, "model",
                              e->c.model_name, "choices", choice, "usage", kr_oai_usage(&st));
        char *body = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (body) {
            kr_job_write(j, body, strlen(body));
            job_done(e, j, NULL, false);
        } else {
            kr_oai_error_set(&err, 500, NULL, NULL, "out of memory");
            job_done(e, j, &err, false);
        }
        free(body);
    }
    kr_buf_free(&g.content);
    kr_buf_free(&g.reasoning);
    json_decref(g.lp);
    json_decref(g.lp_tokens);
    json_decref(g.lp_values);
    json_decref(g.lp_top);
    json_decref(g.lp_offsets);
}

static void *engine_main(void *arg) {
    kr_engine *e = arg;
    kr_job *j;
    while ((j = kr_queue_pop(e->c.queue)) != NULL) {
        run_job(e, j);
        kr_job_unref(j);
    }
    return NULL;
}

kr_status kr_engine_start(const kr_engine_config *c, kr_engine **out) {
    kr_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kr_fail(KR_ERR_NOMEM, "out of memory");
    e->c = *c;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->seed_state = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    atomic_init(&e->stopping, false);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        free(e);
        return kr_fail(KR_ERR_NOMEM, "cannot start the engine thread");
    }
    *out = e;
    return KR_OK;
}

void kr_engine_stop(kr_engine *e) {
    if (!e)
        return;
    atomic_store(&e->stopping, true);
    kr_queue_close(e->c.queue);
    pthread_join(e->thread, NULL);
    free(e);
}
