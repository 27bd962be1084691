/* Rotary position embedding: inverse frequencies (plain or YaRN, as transformers computes them) and
 * the rotation itself in both pairings (NeoX halves or interleaved pairs). */
#ifndef KR_BACKEND_CPU_ROPE_H
#define KR_BACKEND_CPU_ROPE_H

#include <stdint.h>

#include "model/config.h"

/* inv_freq[0 .. rope->dim/2) */
void kr_rope_inv_freq(const kr_rope_config *rope, float *inv_freq);

/* Rotates x[0 .. rope->dim) of one head in place for position pos; cos/sin scaled by attention_factor. */
void kr_rope_apply(const kr_rope_config *rope, const float *inv_freq, float *x, int64_t pos);

#endif
