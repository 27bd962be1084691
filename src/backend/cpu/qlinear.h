/* A quantized dense linear layer y = W x over the thread pool (lm_head, dense projections): inputs
 * quantized once per token, output rows split evenly over the workers. */
#ifndef KR_BACKEND_CPU_QLINEAR_H
#define KR_BACKEND_CPU_QLINEAR_H

#include "backend/cpu/quant.h"
#include "base/status.h"

typedef struct {
    int64_t cap; /* bytes of q reserved */
    int8_t *q;
    float *s, *c;
    int64_t cap_groups;
} kr_qlinear_ws;

/* y [T, w->rows] = x [T, w->cols] W^T. ws grows as needed (no allocation once it is large enough). */
kr_status kr_qlinear(const kr_qmatrix *w, const float *x, int64_t T, float *y, kr_qlinear_ws *ws);
void kr_qlinear_ws_free(kr_qlinear_ws *ws);

#endif
