/* Comparing logits with a recorded reference (test_fixtures, test_gguf_model). */
#ifndef KR_TEST_REF_CHECK_H
#define KR_TEST_REF_CHECK_H

#include <jansson.h>
#include <math.h>
#include <stdint.h>

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

/* Up to cap token ids from the integer array ref[key]; returns how many. */
static inline int read_ids(json_t *ref, const char *key, int32_t *ids, int cap) {
    json_t *a = json_object_get(ref, key);
    int n = 0;
    for (size_t i = 0; json_is_array(a) && i < json_array_size(a) && n < cap; i++)
        ids[n++] = (int32_t)json_integer_value(json_array_get(a, i));
    return n;
}

#endif
