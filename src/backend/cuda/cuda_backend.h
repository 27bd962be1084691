/* The CUDA runtime seen from C: devices, device and pinned buffers, streams and events. Every call
 * that can fail returns kr_status with a message naming the CUDA error and what was being done; none
 * aborts. Compiled only when the toolkit is present (KRASIS_HAVE_CUDA); with no driver or no GPU,
 * kr_cuda_device_count() is 0 and kr_cuda_no_device_reason() says why. */
#ifndef KR_BACKEND_CUDA_BACKEND_H
#define KR_BACKEND_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "base/status.h"

/* Element types of device tensors. FP8 is E4M3 (the "fn" variant: max 448, no infinities). */
typedef enum { KR_CU_F32 = 0, KR_CU_BF16 = 1, KR_CU_FP8 = 2, KR_CU_I8 = 3 } kr_cuda_dtype;
size_t kr_cuda_dtype_size(kr_cuda_dtype dt);
const char *kr_cuda_dtype_name(kr_cuda_dtype dt);

/* Same types as cudaStream_t / cudaEvent_t, without the CUDA headers. NULL is the default stream. */
typedef struct CUstream_st *kr_cuda_stream;
typedef struct CUevent_st *kr_cuda_event;

typedef struct {
    int index;
    char name[256];
    int cc_major, cc_minor;
    int sm_count;
    size_t total_bytes, free_bytes;
    size_t l2_bytes;
    size_t smem_per_block_optin; /* the most shared memory one block may ask for */
    int driver_version, runtime_version; /* as CUDA encodes them: 1000 * major + 10 * minor */
    int pci_domain, pci_bus, pci_device;
    int mem_bus_width_bits;
    int can_map_host_memory;
} kr_cuda_device_info;

/* Number of usable devices; 0 when there is no driver or no GPU (never an error). */
int kr_cuda_device_count(void);
/* Why kr_cuda_device_count() returned 0 (the CUDA error's text), or "" when it did not. */
const char *kr_cuda_no_device_reason(void);
kr_status kr_cuda_device_query(int device, kr_cuda_device_info *info);
kr_status kr_cuda_set_device(int device);
/* Runtime version this library was built against (e.g. 13000). */
int kr_cuda_build_runtime_version(void);

kr_status kr_cuda_malloc(void **p, size_t bytes, const char *what);
void kr_cuda_free(void *p);
/* Page-locked host memory: the staging buffers of host <-> device copies that overlap compute. */
kr_status kr_cuda_host_alloc(void **p, size_t bytes, const char *what);
void kr_cuda_host_free(void *p);
/* Copies are asynchronous on `s` (the default stream when NULL); host sides should be pinned to overlap. */
kr_status kr_cuda_to_device(void *dst, const void *src, size_t bytes, kr_cuda_stream s);
kr_status kr_cuda_to_host(void *dst, const void *src, size_t bytes, kr_cuda_stream s);
kr_status kr_cuda_copy(void *dst, const void *src, size_t bytes, kr_cuda_stream s);
/* height rows of width bytes, rows dst_pitch / src_pitch bytes apart (either side host or device) */
kr_status kr_cuda_copy_2d(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width, size_t height,
                          kr_cuda_stream s);
/* bytes from src on device src_dev to dst on dst_dev (cudaMemcpyPeerAsync: direct where peer access is
 * enabled, else staged by the driver; the same device is a plain copy) */
kr_status kr_cuda_copy_peer(void *dst, int dst_dev, const void *src, int src_dev, size_t bytes, kr_cuda_stream s);
/* 1 when the driver says `dev` can access `peer`'s memory directly (cudaDeviceCanAccessPeer), else 0 */
int kr_cuda_can_access_peer(int dev, int peer);
/* lets the current device access `peer`'s memory (already enabled is fine) */
kr_status kr_cuda_enable_peer(int peer);
kr_status kr_cuda_memset(void *p, int byte, size_t bytes, kr_cuda_stream s);
/* Fills n elements of dtype dt with NaN (tests poison outputs with it before each run). */
kr_status kr_cuda_fill_nan(void *p, kr_cuda_dtype dt, int64_t n, kr_cuda_stream s);

kr_status kr_cuda_stream_create(kr_cuda_stream *s);
void kr_cuda_stream_destroy(kr_cuda_stream s);
kr_status kr_cuda_stream_sync(kr_cuda_stream s);
kr_status kr_cuda_device_sync(void);

kr_status kr_cuda_event_create(kr_cuda_event *e);
void kr_cuda_event_destroy(kr_cuda_event e);
kr_status kr_cuda_event_record(kr_cuda_event e, kr_cuda_stream s);
/* waits on the host until the work before the event's record has finished */
kr_status kr_cuda_event_sync(kr_cuda_event e);
/* work queued on s after this waits for the event's record (on any device) */
kr_status kr_cuda_stream_wait(kr_cuda_stream s, kr_cuda_event e);
/* milliseconds between two recorded events (waits for `end`) */
kr_status kr_cuda_event_elapsed(kr_cuda_event start, kr_cuda_event end, float *ms);

/* Host-side conversions for tests and loaders (round to nearest even; FP8 saturates at +-448). */
uint16_t kr_cuda_f32_to_bf16_host(float f);
uint8_t kr_cuda_f32_to_fp8_host(float f);

#ifdef __cplusplus
}
#endif

#endif
