/* Comparing logits with a recorded reference (test_fixtures, test_gguf_model). */
#ifndef KR_TEST_REF_CHECK_H
#define KR_TEST_REF_CHECK_H

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "base/npy.h"

/* max |got - want| over max |want| of one row of n logits; the argmax of each in *arg_got / *arg_want */
static inline double row_rel_err(const float *got, const float *want, int64_t n, int64_t *arg_got, int64_t *arg_want) {
    double maxdiff = 0, maxref = 0;
    *arg_got = *arg_want = 0;
    for (int64_t i = 0; i < n; i++) {
        maxdiff = fmax(maxdiff, fabs((double)got[i] - want[i]));
        maxref = fmax(maxref, fabs((double)want[i]));
        if (got[i] > got[*arg_got])
            *arg_got = i;
        if (want[i] > want[*arg_want])
            *arg_want = i;
    }
    return maxdiff / (maxref > 0 ? maxref : 1);
}

/* the largest row_rel_err over rows [rows, n] of got against want (INFINITY for a NaN), and its row */
static inline double rows_rel_err(const float *got, const float *want, int64_t rows, int64_t n, int *worst_row) {
    double worst = 0;
    *worst_row = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t ag, aw;
        double e = row_rel_err(got + r * n, want + r * n, n, &ag, &aw);
        if (e > worst || isnan(e)) {
            worst = isnan(e) ? INFINITY : e;
            *worst_row = (int)r;
        }
    }
    return worst;
}

/* Up to cap token ids from the integer array ref[key]; returns how many. */
static inline int read_ids(json_t *ref, const char *key, int32_t *ids, int cap) {
    json_t *a = json_object_get(ref, key);
    int n = 0;
    for (size_t i = 0; json_is_array(a) && i < json_array_size(a) && n < cap; i++)
        ids[n++] = (int32_t)json_integer_value(json_array_get(a, i));
    return n;
}

/* A fixture of tools/make_fixtures.py (tests/fixtures/NAME): its prompt and decode ids and transformers'
 * float32 logits for them ([np, vocab] at every prompt position, [nd, vocab] after each decode step). */
typedef struct {
    int32_t prompt[64], decode[64];
    int np, nd;
    kr_npy want_p, want_d;
} fixture_ref;

/* Loads dir's reference.json and .npy files; on an error says which (kr_error) and frees what it read. */
static inline kr_status fixture_ref_load(const char *dir, fixture_ref *r) {
    char path[1200];
    json_t *ref;
    memset(r, 0, sizeof *r);
    snprintf(path, sizeof path, "%s/reference.json", dir);
    KR_TRY(kr_json_load_file(path, &ref));
    r->np = read_ids(ref, "prompt_ids", r->prompt, 64);
    r->nd = read_ids(ref, "decode_ids", r->decode, 64);
    json_decref(ref);
    snprintf(path, sizeof path, "%s/logits_prompt.npy", dir);
    KR_TRY(kr_npy_read_f32(path, &r->want_p));
    snprintf(path, sizeof path, "%s/logits_decode.npy", dir);
    kr_status s = kr_npy_read_f32(path, &r->want_d);
    if (s != KR_OK)
        kr_npy_free(&r->want_p);
    return s;
}

static inline void fixture_ref_free(fixture_ref *r) {
    kr_npy_free(&r->want_p);
    kr_npy_free(&r->want_d);
}

#endif
