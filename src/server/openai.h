/* The OpenAI wire format: request bodies parsed and validated into a kr_oai_request (every error names
 * the field, as OpenAI's API does), and the JSON of errors, responses and streamed chunks.
 * Pure functions of their inputs: no model, no threads, so the parser can be fuzzed on its own. */
#ifndef KR_SERVER_OPENAI_H
#define KR_SERVER_OPENAI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/session.h"

#define KR_OAI_MAX_STOPS 4 /* as OpenAI's API allows */

typedef enum { KR_OAI_CHAT, KR_OAI_COMPLETION } kr_oai_kind;

typedef struct {
    kr_oai_kind kind;
    json_t *messages;        /* chat: messages with content flattened to a string (or null) */
    json_t *template_kwargs; /* chat: NULL or the chat_template_kwargs object */
    char *prompt;            /* completion: a text prompt ... */
    int32_t *prompt_ids;     /* ... or token ids (range-checked later, against the vocabulary) */
    size_t n_prompt_ids;
    char *model;             /* as the client sent it; NULL when absent */
    kr_gen_params gen;       /* gen.stop points into stops */
    char *stops[KR_OAI_MAX_STOPS];
    bool seed_given, stream, include_usage;
} kr_oai_request;

typedef struct {
    int status;       /* HTTP status */
    const char *type; /* invalid_request_error, server_error ... */
    const char *code; /* NULL: null */
    char param[64];   /* "": null */
    char message[512];
} kr_oai_error;

void kr_oai_error_set(kr_oai_error *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* {"error": {"message", "type", "param", "code"}}, malloc'd. */
char *kr_oai_error_body(const kr_oai_error *e);

/* Parses a request body; false (with *err set, status 400) when it is not a valid request. Unknown
 * fields are ignored as OpenAI does. *out must be freed with kr_oai_request_free either way. */
bool kr_oai_parse(kr_oai_kind kind, const char *body, size_t len, kr_oai_request *out, kr_oai_error *err);
void kr_oai_request_free(kr_oai_request *r);

/* The usage object: prompt, completion and total tokens, prompt_tokens_details.cached_tokens. */
json_t *kr_oai_usage(const kr_gen_stats *st);
const char *kr_oai_finish_reason(kr_finish f);

/* One logprobs entry of a chat response: {"token", "logprob", "bytes", "top_logprobs": [...]}; the
 * token texts come from `piece` (a token's bytes, not necessarily UTF-8). */
typedef const char *(*kr_oai_piece_fn)(void *user, int32_t id, size_t *len);
json_t *kr_oai_chat_logprob(const kr_token_info *t, kr_oai_piece_fn piece, void *user);

/* A JSON string from bytes that may not be UTF-8: invalid sequences become U+FFFD. */
json_t *kr_oai_string(const char *s, size_t len);

#endif
