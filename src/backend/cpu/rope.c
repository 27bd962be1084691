/* RoPE. The YaRN ramp follows transformers' _compute_yarn_parameters: the correction range is found on
 * the full rotary dim d, the ramp runs over the d/2 frequencies, and the float32 arithmetic mirrors
 * torch's so frequencies agree to the last bit or two. */
#include "backend/cpu/rope.h"

#include <math.h>

static double correction_dim(double rotations, int d, double theta, double max_pos) {
    return d * log(max_pos / (rotations * 2 * M_PI)) / (2 * log(theta));
}

void kr_rope_inv_freq(const kr_rope_config *rope, float *inv_freq) {
    int d = rope->dim, half = d / 2;
    for (int i = 0; i < half; i++)
        inv_freq[i] = 1.0f / powf((float)rope->theta, (float)(2 * i) / (float)d);
    if (!rope->yarn)
        return;
    double low = correction_dim(rope->beta_fast, d, rope->theta, (double)rope->original_max_pos);
    double high = correction_dim(rope->beta_slow, d, rope->theta, (double)rope->original_max_pos);
    if (rope->truncate) {
        low = floor(low);
        high = ceil(high);
    }
    low = low < 0 ? 0 : low;
    high = high > d - 1 ? d - 1 : high;
    if (low == high)
        high += 0.001;
    for (int i = 0; i < half; i++) {
        float extrapolation = inv_freq[i];
        float interpolation = 1.0f / ((float)rope->factor * powf((float)rope->theta, (float)(2 * i) / (float)d));
        float ramp = ((float)i - (float)low) / ((float)high - (float)low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float keep = 1.0f - ramp; /* share of the original (extrapolated) frequency */
        inv_freq[i] = interpolation * (1.0f - keep) + extrapolation * keep;
    }
}

void kr_rope_apply(const kr_rope_config *rope, const float *inv_freq, float *x, int64_t pos) {
    int half = rope->dim / 2;
    float af = (float)rope->attention_factor;
    for (int i = 0; i < half; i++) {
        float angle = (float)pos * inv_freq[i];
        float c = cosf(angle) * af, s = sinf(angle) * af;
        int a = rope->interleaved ? 2 * i : i;
        int b = rope->interleaved ? 2 * i + 1 : i + half;
        float xa = x[a], xb = x[b];
        x[a] = xa * c - xb * s;
        x[b] = xb * c + xa * s;
    }
}
