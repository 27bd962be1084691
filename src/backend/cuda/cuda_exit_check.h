/* For programs, not the library: a failed CUDA runtime call (CU) or krasis call (KR) prints where and
 * why and exits 1. The benchmarks and kernel tests use them where nothing after a failure is worth
 * running; the library itself always returns kr_status (cuda_internal.cuh's KR_CU). */
#ifndef KR_BACKEND_CUDA_EXIT_CHECK_H
#define KR_BACKEND_CUDA_EXIT_CHECK_H

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/status.h"

#define CU(call)                                                                                           \
    do {                                                                                                   \
        cudaError_t e_ = (call);                                                                           \
        if (e_ != cudaSuccess) {                                                                           \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

#define KR(call)                                                                              \
    do {                                                                                      \
        if ((call) != KR_OK) {                                                                \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, kr_error()); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

#endif
