/* Devices, buffers, streams and events: thin wrappers that turn CUDA errors into kr_status messages. */
#include <stdio.h>
#include <string.h>

#include "backend/cuda/cuda_internal.cuh"

extern "C" {

size_t kr_cuda_dtype_size(kr_cuda_dtype dt) {
    switch (dt) {
    case KR_CU_F32: return 4;
    case KR_CU_BF16: return 2;
    case KR_CU_FP8: return 1;
    case KR_CU_I8: return 1;
    }
    return 0;
}

const char *kr_cuda_dtype_name(kr_cuda_dtype dt) {
    switch (dt) {
    case KR_CU_F32: return "f32";
    case KR_CU_BF16: return "bf16";
    case KR_CU_FP8: return "fp8_e4m3";
    case KR_CU_I8: return "int8";
    }
    return "unknown";
}

static char no_device_reason[256];

int kr_cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(no_device_reason, sizeof no_device_reason, "%s", cudaGetErrorString(e));
        cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
        return 0;
    }
    if (n == 0)
        snprintf(no_device_reason, sizeof no_device_reason, "the driver reports no CUDA device");
    else
        no_device_reason[0] = 0;
    return n;
}

const char *kr_cuda_no_device_reason(void) { return no_device_reason; }

int kr_cuda_build_runtime_version(void) { return CUDART_VERSION; }

kr_status kr_cuda_device_query(int device, kr_cuda_device_info *info) {
    memset(info, 0, sizeof *info);
    cudaDeviceProp p;
    KR_CU(cudaGetDeviceProperties(&p, device));
    info->index = device;
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->sm_count = p.multiProcessorCount;
    info->total_bytes = p.totalGlobalMem;
    info->l2_bytes = (size_t)p.l2CacheSize;
    info->smem_per_block_optin = p.sharedMemPerBlockOptin;
    info->pci_domain = p.pciDomainID;
    info->pci_bus = p.pciBusID;
    info->pci_device = p.pciDeviceID;
    info->mem_bus_width_bits = p.memoryBusWidth;
    info->can_map_host_memory = p.canMapHostMemory;
    KR_CU(cudaDriverGetVersion(&info->driver_version));
    KR_CU(cudaRuntimeGetVersion(&info->runtime_version));
    int cur = 0;
    KR_CU(cudaGetDevice(&cur));
    KR_CU(cudaSetDevice(device));
    size_t fr = 0, tot = 0;
    cudaError_t e = cudaMemGetInfo(&fr, &tot);
    cudaSetDevice(cur);
    if (e != cudaSuccess)
        return kr_fail(KR_ERR_IO, "CUDA: cudaMemGetInfo on device %d failed: %s", device, cudaGetErrorString(e));
    info->free_bytes = fr;
    return KR_OK;
}

kr_status kr_cuda_set_device(int device) {
    KR_CU(cudaSetDevice(device));
    return KR_OK;
}

kr_status kr_cuda_malloc(void **p, size_t bytes, const char *what) {
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        return kr_fail(KR_ERR_NOMEM, "CUDA: cannot allocate %zu bytes of device memory for %s: %s", bytes,
                       what ? what : "a buffer", cudaGetErrorString(e));
    }
    return KR_OK;
}

void kr_cuda_free(void *p) {
    if (p)
        cudaFree(p);
}

kr_status kr_cuda_host_alloc(void **p, size_t bytes, const char *what) {
    *p = NULL;
    cudaError_t e = cudaMallocHost(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        return kr_fail(KR_ERR_NOMEM, "CUDA: cannot allocate %zu bytes of pinned host memory for %s: %s", bytes,
                       what ? what : "a buffer", cudaGetErrorString(e));
    }
    return KR_OK;
}

void kr_cuda_host_free(void *p) {
    if (p)
        cudaFreeHost(p);
}

kr_status kr_cuda_to_device(void *dst, const void *src, size_t bytes, kr_cuda_stream s) {
    KR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
    return KR_OK;
}

kr_status kr_cuda_to_host(void *dst, const void *src, size_t bytes, kr_cuda_stream s) {
    KR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    return KR_OK;
}

kr_status kr_cuda_copy(void *dst, const void *src, size_t bytes, kr_cuda_stream s) {
    KR_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
    return KR_OK;
}

kr_status kr_cuda_copy_2d(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width, size_t height,
                          kr_cuda_stream s) {
    if (width == 0 || height == 0)
        return KR_OK;
    KR_CU(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, height, cudaMemcpyDefault, s));
    return KR_OK;
}

kr_status kr_cuda_copy_peer(void *dst, int dst_dev, const void *src, int src_dev, size_t bytes, kr_cuda_stream s) {
    KR_CU(cudaMemcpyPeerAsync(dst, dst_dev, src, src_dev, bytes, s));
    return KR_OK;
}

int kr_cuda_can_access_peer(int dev, int peer) {
    int ok = 0;
    if (cudaDeviceCanAccessPeer(&ok, dev, peer) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return ok;
}

kr_status kr_cuda_enable_peer(int peer) {
    cudaError_t e = cudaDeviceEnablePeerAccess(peer, 0);
    if (e == cudaErrorPeerAccessAlreadyEnabled) {
        cudaGetLastError();
        return KR_OK;
    }
    KR_CU(e);
    return KR_OK;
}

kr_status kr_cuda_memset(void *p, int byte, size_t bytes, kr_cuda_stream s) {
    KR_CU(cudaMemsetAsync(p, byte, bytes, s));
    return KR_OK;
}

kr_status kr_cuda_fill_nan(void *p, kr_cuda_dtype dt, int64_t n, kr_cuda_stream s) {
    /* all-ones bytes are a NaN in f32 (0xffffffff), bf16 (0xffff) and fp8 e4m3 (0xff) */
    if (dt == KR_CU_I8)
        return kr_fail(KR_ERR_ARG, "kr_cuda_fill_nan: int8 has no NaN");
    KR_CU(cudaMemsetAsync(p, 0xff, (size_t)n * kr_cuda_dtype_size(dt), s));
    return KR_OK;
}

kr_status kr_cuda_stream_create(kr_cuda_stream *s) {
    cudaStream_t st;
    KR_CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    *s = st;
    return KR_OK;
}

void kr_cuda_stream_destroy(kr_cuda_stream s) {
    if (s)
        cudaStreamDestroy(s);
}

kr_status kr_cuda_stream_sync(kr_cuda_stream s) {
    KR_CU(cudaStreamSynchronize(s));
    return KR_OK;
}

kr_status kr_cuda_device_sync(void) {
    KR_CU(cudaDeviceSynchronize());
    return KR_OK;
}

kr_status kr_cuda_event_create(kr_cuda_event *e) {
    cudaEvent_t ev;
    KR_CU(cudaEventCreate(&ev));
    *e = ev;
    return KR_OK;
}

void kr_cuda_event_destroy(kr_cuda_event e) {
    if (e)
        cudaEventDestroy(e);
}

kr_status kr_cuda_event_record(kr_cuda_event e, kr_cuda_stream s) {
    KR_CU(cudaEventRecord(e, s));
    return KR_OK;
}

kr_status kr_cuda_event_sync(kr_cuda_event e) {
    KR_CU(cudaEventSynchronize(e));
    return KR_OK;
}

kr_status kr_cuda_stream_wait(kr_cuda_stream s, kr_cuda_event e) {
    KR_CU(cudaStreamWaitEvent(s, e, 0));
    return KR_OK;
}

kr_status kr_cuda_event_elapsed(kr_cuda_event start, kr_cuda_event end, float *ms) {
    KR_CU(cudaEventSynchronize(end));
    KR_CU(cudaEventElapsedTime(ms, start, end));
    return KR_OK;
}

uint16_t kr_cuda_f32_to_bf16_host(float f) {
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    uint16_t u;
    memcpy(&u, &b, sizeof u);
    return u;
}

uint8_t kr_cuda_f32_to_fp8_host(float f) {
    return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
}

} /* extern "C" */
