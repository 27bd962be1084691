/* The GPU lines of `krasis check` (check_gpu.c); adds to the caller's warning and failure counts. */
#ifndef KR_CLI_CHECK_GPU_H
#define KR_CLI_CHECK_GPU_H

void kr_check_gpus(int *n_warn, int *n_fail);

#endif
