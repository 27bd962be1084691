/* Token sampling: greedy, temperature, top-k, top-p, min-p, repetition / presence / frequency penalties,
 * with a seeded generator so a run is reproducible.
 *
 * Order (as Hugging Face's logits processors apply them): repetition penalty, presence and frequency
 * penalties, temperature, top-k, top-p, min-p, then a draw. temperature 0 means greedy (argmax after
 * the penalties). */
#ifndef KR_ENGINE_SAMPLER_H
#define KR_ENGINE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct {
    float temperature;        /* 0: greedy */
    int top_k;                /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off. HF/llama.cpp: positive logits / r, negative * r, for tokens seen */
    float presence_penalty;   /* 0: off. OpenAI: logit -= presence if the token was generated */
    float frequency_penalty;  /* 0: off. OpenAI: logit -= frequency * times generated */
    int penalty_last_n;       /* how many recent tokens the repetition penalty looks at; 0: all */
    uint64_t seed;
} kr_sampler_params;

kr_sampler_params kr_sampler_defaults(void);
/* Range checks with errors naming the parameter (e.g. "top_p must be in (0, 1], got 1.5"). */
kr_status kr_sampler_validate(const kr_sampler_params *p);

typedef struct kr_sampler kr_sampler;

kr_status kr_sampler_create(const kr_sampler_params *p, int64_t vocab, kr_sampler **out);
void kr_sampler_free(kr_sampler *s);

/* Picks the next token from logits[vocab] (modified in place by the penalties); history holds the
 * tokens so far, the first n_prompt of them the prompt (the repetition penalty looks at both, presence
 * and frequency penalties at the generated ones only). */
int32_t kr_sampler_sample(kr_sampler *s, float *logits, const int32_t *history, size_t n_history, size_t n_prompt);

/* The distribution kr_sampler_sample draws from, written to probs[vocab] (zeros outside the kept set).
 * For tests and for logprobs. logits is modified in place as in kr_sampler_sample. */
void kr_sampler_probs(kr_sampler *s, float *logits, const int32_t *history, size_t n_history, size_t n_prompt,
                      float *probs);

#endif
