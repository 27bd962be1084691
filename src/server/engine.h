/* The engine thread: the only thread that touches the model, the tokenizer and the session. It takes
 * jobs from the queue one at a time, renders and tokenizes the prompt, generates, and writes the
 * response (whole JSON, or SSE chunks as tokens come) into the job. */
#ifndef KR_SERVER_ENGINE_H
#define KR_SERVER_ENGINE_H

#include "engine/session.h"
#include "server/metrics.h"
#include "server/queue.h"
#include "tokenizer/template.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    kr_session *session;
    const kr_tokenizer *tok;
    const kr_template *chat_template; /* NULL: the model has none (chat requests get a 400) */
    bool think;                       /* the template or tokenizer uses <think>: split reasoning_content */
    const char *model_name;
    kr_queue *queue;
    kr_metrics *metrics;
} kr_engine_config;

typedef struct kr_engine kr_engine;

kr_status kr_engine_start(const kr_engine_config *c, kr_engine **out);
/* Closes the queue, cancels the running generation at its next token and joins the thread. */
void kr_engine_stop(kr_engine *e);

#endif
