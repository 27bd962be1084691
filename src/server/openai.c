/* OpenAI request parsing and response JSON. Validation follows OpenAI's API: a field of the wrong type
 * or out of range is a 400 naming the field (param), null means "not given", unknown fields are ignored.
 * Defaults are OpenAI's (temperature 1, top_p 1; completions default to 16 tokens) so that a client
 * written against OpenAI gets the behaviour it expects. */
#include "server/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"

void kr_oai_error_set(kr_oai_error *e, int status, const char *param, const char *code, const char *fmt, ...) {
    e->status = status;
    e->type = status >= 500 ? "server_error" : status == 401 ? "authentication_error" : "invalid_request_error";
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

json_t *kr_oai_string(const char *s, size_t len) {
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    /* not UTF-8: copy valid sequences, replace each bad byte by U+FFFD */
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        json_t *probe = n && i + n <= len ? json_stringn(s + i, n) : NULL;
        if (probe) {
            memcpy(buf + o, s + i, n);
            o += n;
            i += n;
            json_decref(probe);
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

char *kr_oai_error_body(const kr_oai_error *e) {
    json_t *o = json_pack("{s:{s:o, s:s, s:o, s:o}}", "error", "message", kr_oai_string(e->message, strlen(e->message)),
                          "type", e->type, "param", e->param[0] ? json_string(e->param) : json_null(), "code",
                          e->code ? json_string(e->code) : json_null());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static bool wrong_type(kr_oai_error *e, const char *field, const char *want, const json_t *v) {
    kr_oai_error_set(e, 400, field, "invalid_type", "'%s' must be %s, got %s", field, want, kr_json_type_name(v));
    return false;
}

/* A present, non-null field, or NULL. */
static json_t *field(json_t *root, const char *name) {
    json_t *v = json_object_get(root, name);
    return v && !json_is_null(v) ? v : NULL;
}

static bool get_number(json_t *root, const char *name, double lo, double hi, float *out, kr_oai_error *e) {
    json_t *v = field(root, name);
    if (!v)
        return true;
    if (!json_is_number(v))
        return wrong_type(e, name, "a number", v);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        kr_oai_error_set(e, 400, name, "invalid_value", "'%s' must be in [%g, %g], got %g", name, lo, hi, x);
        return false;
    }
    *out = (float)x;
    return true;
}

/* Integers: a JSON integer, or a real with no fraction (some clients send 16.0). */
static bool get_int(json_t *root, const char *name, long long lo, long long hi, long long *out, bool *given,
                    kr_oai_error *e) {
    json_t *v = field(root, name);
    if (!v)
        return true;
    double x = json_number_value(v);
    if (!json_is_integer(v) && !(json_is_real(v) && x == floor(x) && fabs(x) < 9e15))
        return wrong_type(e, name, "an integer", v);
    long long i = json_is_integer(v) ? json_integer_value(v) : (long long)x;
    if (i < lo || i > hi) {
        kr_oai_error_set(e, 400, name, "invalid_value", "'%s' must be in [%lld, %lld], got %lld", name, lo, hi, i);
        return false;
    }
    *out = i;
    if (given)
        *given = true;
    return true;
}

static bool get_bool(json_t *root, const char *name, bool *out, kr_oai_error *e) {
    json_t *v = field(root, name);
    if (!v)
        return true;
    if (!json_is_boolean(v))
        return wrong_type(e, name, "a boolean", v);
    *out = json_is_true(v);
    return true;
}

/* content: a string, or an array of parts of which the text ones are joined (images are not supported). */
static bool flatten_content(json_t *msg, size_t i, kr_oai_error *e) {
    char name[64];
    snprintf(name, sizeof name, "messages[%zu].content", i);
    json_t *c = json_object_get(msg, "content");
    if (!c || json_is_null(c) || json_is_string(c))
        return true;
    if (!json_is_array(c))
        return wrong_type(e, name, "a string or an array of content parts", c);
    size_t len = 0, k;
    json_t *part;
    json_array_foreach(c, k, part) {
        json_t *text = json_object_get(part, "text");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!json_is_object(part) || !type) {
            kr_oai_error_set(e, 400, name, "invalid_type", "'%s[%zu]' must be an object with a 'type'", name, k);
            return false;
        }
        if (strcmp(type, "text") != 0) {
            kr_oai_error_set(e, 400, name, "invalid_value", "'%s[%zu]': content parts of type '%s' are not supported", name,
                             k, type);
            return false;
        }
        if (!json_is_string(text)) {
            kr_oai_error_set(e, 400, name, "invalid_type", "'%s[%zu].text' must be a string", name, k);
            return false;
        }
        len += json_string_length(text);
    }
    char *buf = malloc(len + 1), *p = buf;
    if (!buf) {
        kr_oai_error_set(e, 500, name, "out_of_memory", "out of memory for '%s'", name);
        return false;
    }
    json_array_foreach(c, k, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(p, json_string_value(text), json_string_length(text));
        p += json_string_length(text);
    }
    json_object_set_new(msg, "content", json_stringn(buf, len));
    free(buf);
    return true;
}

static bool parse_messages(json_t *root, kr_oai_request *r, kr_oai_error *e) {
    json_t *m = field(root, "messages");
    if (!m) {
        kr_oai_error_set(e, 400, "messages", "missing_required_parameter", "'messages' is a required property");
        return false;
    }
    if (!json_is_array(m))
        return wrong_type(e, "messages", "an array", m);
    if (json_array_size(m) == 0) {
        kr_oai_error_set(e, 400, "messages", "invalid_value", "'messages' must not be empty");
        return false;
    }
    r->messages = json_deep_copy(m);
    size_t i;
    json_t *msg;
    json_array_foreach(r->messages, i, msg) {
        char name[64];
        snprintf(name, sizeof name, "messages[%zu]", i);
        if (!json_is_object(msg))
            return wrong_type(e, name, "an object", msg);
        json_t *role = json_object_get(msg, "role");
        snprintf(name, sizeof name, "messages[%zu].role", i);
        if (!json_is_string(role)) {
            if (!role) {
                kr_oai_error_set(e, 400, name, "missing_required_parameter", "'%s' is a required property", name);
                return false;
            }
            return wrong_type(e, name, "a string", role);
        }
        if (!flatten_content(msg, i, e))
            return false;
    }
    json_t *kw = field(root, "chat_template_kwargs");
    if (kw && !json_is_object(kw))
        return wrong_type(e, "chat_template_kwargs", "an object", kw);
    r->template_kwargs = kw ? json_incref(kw) : NULL;
    return true;
}

static bool parse_ids(json_t *a, kr_oai_request *r, kr_oai_error *e) {
    r->n_prompt_ids = json_array_size(a);
    r->prompt_ids = malloc((r->n_prompt_ids ? r->n_prompt_ids : 1) * sizeof *r->prompt_ids);
    if (!r->prompt_ids) {
        kr_oai_error_set(e, 500, "prompt", "out_of_memory", "out of memory for 'prompt'");
        return false;
    }
    for (size_t i = 0; i < r->n_prompt_ids; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            kr_oai_error_set(e, 400, "prompt", "invalid_type", "'prompt[%zu]' must be a non-negative token id", i);
            return false;
        }
        r->prompt_ids[i] = (int32_t)json_integer_value(v);
    }
    return true;
}

/* prompt: a string, a list of token ids, or a list holding one of those (batches of several are not supported). */
static bool parse_prompt(json_t *root, kr_oai_request *r, kr_oai_error *e) {
    json_t *p = field(root, "prompt");
    if (!p) {
        kr_oai_error_set(e, 400, "prompt", "missing_required_parameter", "'prompt' is a required property");
        return false;
    }
    if (json_is_array(p) && json_array_size(p) == 1 && !json_is_integer(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        r->prompt = strndup(json_string_value(p), json_string_length(p));
        return true;
    }
    if (!json_is_array(p))
        return wrong_type(e, "prompt", "a string or an array of token ids", p);
    if (json_array_size(p) == 0 || json_is_array(json_array_get(p, 0)) || json_is_string(json_array_get(p, 0))) {
        kr_oai_error_set(e, 400, "prompt", "invalid_value",
                         json_array_size(p) ? "only one prompt per request is supported" : "'prompt' must not be empty");
        return false;
    }
    return parse_ids(p, r, e);
}

static bool add_stop(kr_oai_request *r, const char *stop, kr_oai_error *e) {
    char *copy = strdup(stop);
    if (!copy) {
        kr_oai_error_set(e, 500, "stop", "out_of_memory", "out of memory for 'stop'");
        return false;
    }
    r->stops[r->gen.n_stop++] = copy;
    return true;
}

static bool parse_stop(json_t *root, kr_oai_request *r, kr_oai_error *e) {
    json_t *s = field(root, "stop");
    if (!s)
        return true;
    if (json_is_string(s))
        return add_stop(r, json_string_value(s), e);
    if (!json_is_array(s))
        return wrong_type(e, "stop", "a string or an array of strings", s);
    if (json_array_size(s) > KR_OAI_MAX_STOPS) {
        kr_oai_error_set(e, 400, "stop", "invalid_value", "'stop' holds at most %d strings, got %zu", KR_OAI_MAX_STOPS,
                         json_array_size(s));
        return false;
    }
    size_t i;
    json_t *v;
    json_array_foreach(s, i, v) {
        if (!json_is_string(v))
            return wrong_type(e, "stop", "a string or an array of strings", s);
        if (!add_stop(r, json_string_value(v), e))
            return false;
    }
    return true;
}

static bool parse_body(kr_oai_kind kind, json_t *root, kr_oai_request *r, kr_oai_error *e) {
    if (!json_is_object(root)) {
        kr_oai_error_set(e, 400, NULL, "invalid_json", "the request body must be a JSON object, got %s", kr_json_type_name(root));
        return false;
    }
    json_t *model = field(root, "model");
    if (model && !json_is_string(model))
        return wrong_type(e, "model", "a string", model);
    r->model = model ? strdup(json_string_value(model)) : NULL;
    if (!(kind == KR_OAI_CHAT ? parse_messages(root, r, e) : parse_prompt(root, r, e)))
        return false;

    kr_sampler_params *sp = &r->gen.sampling;
    long long max_tokens = kind == KR_OAI_COMPLETION ? 16 : 0, n = 1, top_k = 0, seed = 0, logprobs_n = 0;
    bool logprobs = false, logprobs_given = false;
    if (!get_int(root, "max_tokens", 1, INT32_MAX, &max_tokens, NULL, e) ||
        !get_int(root, "max_completion_tokens", 1, INT32_MAX, &max_tokens, NULL, e) ||
        !get_number(root, "temperature", 0, 2, &sp->temperature, e) || !get_number(root, "top_p", 0, 1, &sp->top_p, e) ||
        !get_int(root, "top_k", -1, INT32_MAX, &top_k, NULL, e) || !get_number(root, "min_p", 0, 1, &sp->min_p, e) ||
        !get_int(root, "seed", INT64_MIN, INT64_MAX, &seed, &r->seed_given, e) ||
        !get_number(root, "presence_penalty", -2, 2, &sp->presence_penalty, e) ||
        !get_number(root, "frequency_penalty", -2, 2, &sp->frequency_penalty, e) ||
        !get_number(root, "repetition_penalty", 1e-3, 100, &sp->repetition_penalty, e) ||
        !get_int(root, "n", 1, 1000, &n, NULL, e) || !get_bool(root, "stream", &r->stream, e) ||
        !get_bool(root, "ignore_eos", &r->gen.ignore_eos, e) || !parse_stop(root, r, e))
        return false;
    if (n != 1) {
        kr_oai_error_set(e, 400, "n", "invalid_value", "only n=1 is supported, got %lld", n);
        return false;
    }
    if (sp->top_p == 0) {
        kr_oai_error_set(e, 400, "top_p", "invalid_value", "'top_p' must be in (0, 1], got 0");
        return false;
    }
    if (kind == KR_OAI_CHAT) {
        if (!get_bool(root, "logprobs", &logprobs, e) ||
            !get_int(root, "top_logprobs", 0, KR_MAX_TOP_LOGPROBS, &logprobs_n, &logprobs_given, e))
            return false;
        if (logprobs_given && !logprobs && logprobs_n > 0) {
            kr_oai_error_set(e, 400, "top_logprobs", "invalid_value", "'top_logprobs' needs 'logprobs' set to true");
            return false;
        }
    } else { /* legacy completions: logprobs is the number of alternatives, 0..5 */
        if (!get_int(root, "logprobs", 0, 5, &logprobs_n, &logprobs, e))
            return false;
    }
    json_t *so = field(root, "stream_options");
    if (so) {
        if (!json_is_object(so))
            return wrong_type(e, "stream_options", "an object", so);
        if (!get_bool(so, "include_usage", &r->include_usage, e))
            return false;
    }
    r->gen.max_tokens = max_tokens;
    r->gen.logprobs = logprobs;
    r->gen.top_logprobs = (int)logprobs_n;
    sp->top_k = top_k < 0 ? 0 : (int)(top_k > 1 << 30 ? 1 << 30 : top_k);
    sp->seed = (uint64_t)seed;
    r->gen.stop = (const char *const *)r->stops;
    return true;
}

bool kr_oai_parse(kr_oai_kind kind, const char *body, size_t len, kr_oai_request *r, kr_oai_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->gen.sampling = kr_sampler_defaults();
    /* OpenAI's defaults, not the CLI's: plain sampling from the full distribution */
    r->gen.sampling.temperature = 1;
    r->gen.sampling.top_k = 0;
    r->gen.sampling.top_p = 1;
    r->gen.sampling.min_p = 0;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        kr_oai_error_set(e, 400, NULL, "invalid_json", "the request body is not valid JSON: %s (line %d, column %d)",
                         je.text, je.line, je.column);
        return false;
    }
    bool ok = parse_body(kind, root, r, e);
    json_decref(root);
    return ok;
}

void kr_oai_request_free(kr_oai_request *r) {
    json_decref(r->messages);
    json_decref(r->template_kwargs);
    free(r->prompt);
    free(r->prompt_ids);
    free(r->model);
    for (size_t i = 0; i < KR_OAI_MAX_STOPS; i++)
        free(r->stops[i]);
    memset(r, 0, sizeof *r);
}

json_t *kr_oai_usage(const kr_gen_stats *st) {
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)st->prompt_tokens, "completion_tokens",
                     (json_int_t)st->generated_tokens, "total_tokens", (json_int_t)(st->prompt_tokens + st->generated_tokens),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)st->cached_tokens);
}

const char *kr_oai_finish_reason(kr_finish f) { return f == KR_FINISH_LENGTH ? "length" : "stop"; }

static json_t *bytes_array(const char *s, size_t len) {
    json_t *a = json_array();
    for (size_t i = 0; i < len; i++)
        json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

json_t *kr_oai_chat_logprob(const kr_token_info *t, kr_oai_piece_fn piece, void *user) {
    size_t len;
    const char *s = piece(user, t->id, &len);
    json_t *top = json_array();
    for (int i = 0; i < t->n_top; i++) {
        size_t l;
        const char *p = piece(user, t->top_ids[i], &l);
        json_array_append_new(top, json_pack("{s:o, s:f, s:o}", "token", kr_oai_string(p, l), "logprob",
                                             (double)t->top_logprobs[i], "bytes", bytes_array(p, l)));
    }
    return json_pack("{s:o, s:f, s:o, s:o}", "token", kr_oai_string(s, len), "logprob", (double)t->logprob, "bytes",
                     bytes_array(s, len), "top_logprobs", top);
}
