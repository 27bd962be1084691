/* Flag parsing for run / chat / perplexity. Numbers are parsed strictly: "--temp abc" is an error that
 * names the flag, never a silent 0. */
#include "cli/gen_options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"

static int bad_value(const char *flag, const char *v, const char *want) {
    fprintf(stderr, "krasis: %s: '%s' is not %s\n", flag, v, want);
    return 2;
}

static int parse_i64(const char *flag, const char *v, int64_t min, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < min)
        return bad_value(flag, v, min == 0 ? "a non-negative integer" : "a positive integer");
    *out = x;
    return 0;
}

static int parse_f(const char *flag, const char *v, float *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x))
        return bad_value(flag, v, "a number");
    *out = (float)x;
    return 0;
}

int kr_gen_options_parse(int argc, char **argv, const char *usage, kr_gen_options *o) {
    memset(o, 0, sizeof *o);
    o->gen.sampling = kr_sampler_defaults();
    kr_quant_defaults(&o->quant);
    size_t nstop = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        int rc = 0;
#define VALUE()                                                        \
    do {                                                               \
        if (!v) {                                                      \
            fprintf(stderr, "krasis: %s needs a value\n%s", a, usage); \
            return 2;                                                  \
        }                                                              \
        i++;                                                           \
    } while (0)
        int qrc = kr_quant_flag(argc, argv, &i, &o->quant);
        if (qrc == 2)
            return 2;
        if (qrc == 1) {
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            VALUE();
            o->model = v;
        } else if (!strcmp(a, "--tokenizer")) {
            VALUE();
            o->tokenizer = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            VALUE();
            o->prompt = v;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            VALUE();
            o->file = v;
        } else if (!strcmp(a, "--system")) {
            VALUE();
            o->system = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            VALUE();
            rc = parse_i64(a, v, 0, &o->gen.max_tokens);
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            VALUE();
            rc = parse_i64(a, v, 1, &o->ctx);
        } else if (!strcmp(a, "--stride")) {
            VALUE();
            rc = parse_i64(a, v, 1, &o->stride);
        } else if (!strcmp(a, "--temp") || !strcmp(a, "--temperature")) {
            VALUE();
            rc = parse_f(a, v, &o->gen.sampling.temperature);
        } else if (!strcmp(a, "--top-k")) {
            VALUE();
            rc = parse_i64(a, v, 0, &n);
            o->gen.sampling.top_k = (int)(n > 1 << 30 ? 1 << 30 : n);
        } else if (!strcmp(a, "--top-p")) {
            VALUE();
            rc = parse_f(a, v, &o->gen.sampling.top_p);
        } else if (!strcmp(a, "--min-p")) {
            VALUE();
            rc = parse_f(a, v, &o->gen.sampling.min_p);
        } else if (!strcmp(a, "--repeat-penalty")) {
            VALUE();
            rc = parse_f(a, v, &o->gen.sampling.repetition_penalty);
        } else if (!strcmp(a, "--presence-penalty")) {
            VALUE();
            rc = parse_f(a, v, &o->gen.sampling.presence_penalty);
        } else if (!strcmp(a, "--frequency-penalty")) {
            VALUE();
            rc = parse_f(a, v, &o->gen.sampling.frequency_penalty);
        } else if (!strcmp(a, "--repeat-last-n")) {
            VALUE();
            rc = parse_i64(a, v, 0, &n);
            o->gen.sampling.penalty_last_n = (int)(n > 1 << 30 ? 1 << 30 : n);
        } else if (!strcmp(a, "--seed")) {
            VALUE();
            rc = parse_i64(a, v, 0, &n);
            o->gen.sampling.seed = (uint64_t)n;
            o->seed_given = true;
        } else if (!strcmp(a, "--stop")) {
            VALUE();
            if (nstop == KR_MAX_STOPS) {
                fprintf(stderr, "krasis: at most %d --stop strings\n", KR_MAX_STOPS);
                return 2;
            }
            o->stops[nstop++] = v;
        } else if (!strcmp(a, "--chat")) {
            o->chat = true;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->gen.ignore_eos = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            exit(0);
        } else {
            fprintf(stderr, "krasis: unknown option '%s'\n%s", a, usage);
            return 2;
        }
#undef VALUE
        if (rc)
            return rc;
    }
    o->gen.stop = o->stops;
    o->gen.n_stop = nstop;
    if (!o->seed_given)
        o->gen.sampling.seed = (uint64_t)time(NULL);
    if (!o->model) {
        fprintf(stderr, "krasis: -m MODEL is required\n%s", usage);
        return 2;
    }
    if (kr_sampler_validate(&o->gen.sampling) != KR_OK) {
        fprintf(stderr, "krasis: %s\n", kr_error());
        return 2;
    }
    return 0;
}

int kr_gen_open(const kr_gen_options *o, kr_model **m, kr_tokenizer **tok, kr_session **s) {
    *m = NULL;
    *tok = NULL;
    *s = NULL;
    if (kr_model_open(o->model, m) != KR_OK || kr_model_quantize(*m, &o->quant) != KR_OK || kr_tokenizer_load(o->tokenizer ? o->tokenizer : kr_model_source(*m), tok) != KR_OK ||
        kr_session_create(*m, *tok, o->ctx, s) != KR_OK) {
        kr_gen_close(*m, *tok, *s);
        *m = NULL;
        *tok = NULL;
        *s = NULL;
        return kr_cli_fail();
    }
    return 0;
}

void kr_gen_close(kr_model *m, kr_tokenizer *tok, kr_session *s) {
    kr_session_free(s);
    kr_tokenizer_free(tok);
    kr_model_close(m);
}
