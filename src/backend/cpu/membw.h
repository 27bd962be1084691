/* The machine's memory read bandwidth as krasis sees it: every pool worker streams its share of a
 * buffer much larger than the last-level cache with the dispatch table's read kernel. The roofline the
 * benchmark's percentages refer to. */
#ifndef KR_BACKEND_CPU_MEMBW_H
#define KR_BACKEND_CPU_MEMBW_H

#include <stddef.h>

#include "base/status.h"

/* Best of `passes` passes over `bytes` (rounded to 2 MiB), in GB/s (1e9 bytes/s), with all workers. */
kr_status kr_read_bandwidth(size_t bytes, int passes, double *gbs);

#endif
