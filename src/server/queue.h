/* Jobs and the request queue in front of the engine thread.
 *
 * A job is one request, shared by its HTTP connection thread and the engine thread (reference
 * counted). The engine appends response bytes to the job and never waits on the connection, so a slow
 * reader holds up nobody; the connection waits on the job (with a timeout so it can notice that its
 * client is gone) and sets `cancelled`, which the engine checks at every token. */
#ifndef KR_SERVER_QUEUE_H
#define KR_SERVER_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "server/openai.h"

typedef struct kr_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    kr_oai_request req; /* owned; read by the engine only */
    double t_arrival;
    /* under mu: */
    int status;     /* 0 until the engine decides: 200, or an error status */
    bool done;      /* no more bytes will come */
    bool cancelled; /* the client is gone */
    char *out;      /* response bytes (SSE events, or the whole JSON body) */
    size_t len, cap, pos; /* pos: how much the connection has taken */
    struct kr_job *next;  /* queue link */
} kr_job;

/* Takes ownership of *req (left zeroed). NULL when out of memory. One reference, the caller's. */
kr_job *kr_job_new(kr_oai_request *req);
void kr_job_ref(kr_job *j);
void kr_job_unref(kr_job *j);

/* Engine side. */
void kr_job_set_status(kr_job *j, int status);
void kr_job_write(kr_job *j, const char *data, size_t len);
void kr_job_fail(kr_job *j, const kr_oai_error *e); /* status + error body + done */
void kr_job_finish(kr_job *j);
bool kr_job_is_cancelled(kr_job *j);

/* Connection side. */
void kr_job_cancel(kr_job *j);

typedef struct kr_queue kr_queue;

/* limit: how many jobs may wait while one runs. */
kr_queue *kr_queue_create(size_t limit);
void kr_queue_free(kr_queue *q);
/* false when the queue is full or closed (the job is not taken). Takes a reference when it succeeds. */
bool kr_queue_push(kr_queue *q, kr_job *j);
/* Blocks for the next job (the caller owns the queue's reference); NULL once the queue is closed. */
kr_job *kr_queue_pop(kr_queue *q);
/* The engine has finished the job it popped: its slot is free. */
void kr_queue_done(kr_queue *q);
/* Wakes the engine for good; jobs still waiting get 503. */
void kr_queue_close(kr_queue *q);
size_t kr_queue_depth(kr_queue *q);

#endif
