/* Jobs and the FIFO in front of the engine. Invariant: a job in the queue holds one reference of the
 * queue's; kr_queue_pop hands that reference to the engine. */
#include "server/queue.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"

kr_job *kr_job_new(kr_oai_request *req) {
    kr_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* waits use monotonic deadlines */
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    j->refs = 1;
    j->req = *req;
    memset(req, 0, sizeof *req);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    j->t_arrival = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    return j;
}

void kr_job_ref(kr_job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void kr_job_unref(kr_job *j) {
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left)
        return;
    kr_oai_request_free(&j->req);
    free(j->out);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void kr_job_set_status(kr_job *j, int status) {
    pthread_mutex_lock(&j->mu);
    j->status = status;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void append(kr_job *j, const char *data, size_t len) {
    if (j->cancelled) /* nobody will read it */
        return;
    if (!kr_grow(&j->out, &j->cap, j->len + len, 4096)) { /* end the response rather than send a hole */
        j->cancelled = true;
        return;
    }
    memcpy(j->out + j->len, data, len);
    j->len += len;
}

void kr_job_write(kr_job *j, const char *data, size_t len) {
    pthread_mutex_lock(&j->mu);
    append(j, data, len);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void kr_job_fail(kr_job *j, const kr_oai_error *e) {
    char *body = kr_oai_error_body(e);
    pthread_mutex_lock(&j->mu);
    j->status = e->status;
    j->len = j->pos = 0;
    if (body)
        append(j, body, strlen(body));
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    free(body);
}

void kr_job_finish(kr_job *j) {
    pthread_mutex_lock(&j->mu);
    if (!j->status)
        j->status = 200;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

bool kr_job_is_cancelled(kr_job *j) {
    pthread_mutex_lock(&j->mu);
    bool c = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    return c;
}

void kr_job_cancel(kr_job *j) {
    pthread_mutex_lock(&j->mu);
    j->cancelled = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

struct kr_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kr_job *head, *tail;
    size_t depth, limit;
    bool busy; /* the engine holds a job (between pop and kr_queue_done) */
    bool closed;
};

kr_queue *kr_queue_create(size_t limit) {
    kr_queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->limit = limit;
    return q;
}

void kr_queue_free(kr_queue *q) {
    if (!q)
        return;
    kr_queue_close(q);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

bool kr_queue_push(kr_queue *q, kr_job *j) {
    pthread_mutex_lock(&q->mu);
    bool ok = !q->closed && q->depth + q->busy < q->limit + 1;
    if (ok) {
        kr_job_ref(j);
        j->next = NULL;
        if (q->tail)
            q->tail->next = j;
        else
            q->head = j;
        q->tail = j;
        q->depth++;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return ok;
}

kr_job *kr_queue_pop(kr_queue *q) {
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->closed)
        pthread_cond_wait(&q->cv, &q->mu);
    kr_job *j = q->closed ? NULL : q->head;
    q->busy = j != NULL;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->depth--;
    }
    pthread_mutex_unlock(&q->mu);
    return j;
}

void kr_queue_done(kr_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->busy = false;
    pthread_mutex_unlock(&q->mu);
}

void kr_queue_close(kr_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    kr_job *j = q->head;
    q->head = q->tail = NULL;
    q->depth = 0;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    while (j) {
        kr_job *next = j->next;
        kr_oai_error e;
        kr_oai_error_set(&e, 503, NULL, "server_shutting_down", "the server is shutting down");
        kr_job_fail(j, &e);
        kr_job_unref(j);
        j = next;
    }
}

size_t kr_queue_depth(kr_queue *q) {
    pthread_mutex_lock(&q->mu);
    size_t d = q->depth;
    pthread_mutex_unlock(&q->mu);
    return d;
}
