/* Options shared by the generating commands (run, chat, perplexity): model, tokenizer, context, sampling. */
#ifndef KR_CLI_GEN_OPTIONS_H
#define KR_CLI_GEN_OPTIONS_H

#include <stdbool.h>

#include "cli/quant_options.h"
#include "engine/session.h"

#define KR_MAX_STOPS 16

typedef struct {
    const char *model, *tokenizer; /* tokenizer defaults to the model directory */
    const char *prompt, *system, *file;
    int64_t ctx, stride;
    bool chat, ignore_eos, seed_given;
    const char *stops[KR_MAX_STOPS];
    kr_gen_params gen;
    kr_quant_config quant; /* --expert-bits etc. (quant_options.h) */
} kr_gen_options;

/* Parses argv[1..]; returns 0 when done, 2 (after printing usage) on a bad or unknown flag. */
int kr_gen_options_parse(int argc, char **argv, const char *usage, kr_gen_options *o);

/* Loads the model and tokenizer and opens a session; prints errors itself. Returns 0 or 1. */
int kr_gen_open(const kr_gen_options *o, kr_model **m, kr_tokenizer **tok, kr_session **s);
void kr_gen_close(kr_model *m, kr_tokenizer *tok, kr_session *s);

#endif
