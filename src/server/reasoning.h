/* Splits a thinking model's output into reasoning_content and content: the text between <think> and
 * </think> is reasoning. Works on streamed text: a tag split across pieces is held back until it is
 * complete or known not to be a tag, so a stream never shows part of a tag. */
#ifndef KR_SERVER_REASONING_H
#define KR_SERVER_REASONING_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { KR_THINK_OFF, KR_THINK_DETECT, KR_THINK_IN, KR_THINK_OUT } kr_think_state;

typedef struct {
    kr_think_state state;
    char hold[16]; /* a possible partial tag */
    size_t nhold;
    bool after_close; /* drop the newlines right after </think> */
} kr_think;

/* Receives a piece of reasoning (reasoning = true) or of content. */
typedef void (*kr_think_fn)(void *user, bool reasoning, const char *text, size_t len);

/* enabled: the template or the tokenizer knows <think>; inside: the prompt already opened it (the
 * generation prompt ends with "<think>"). Otherwise the output may open with <think> itself. */
void kr_think_init(kr_think *t, bool enabled, bool inside);
void kr_think_push(kr_think *t, const char *text, size_t len, kr_think_fn out, void *user);
void kr_think_flush(kr_think *t, kr_think_fn out, void *user);

/* Whether rendered prompt text ends inside an open <think> (trailing whitespace ignored). */
bool kr_think_prompt_inside(const char *prompt);

#endif
