/* The GPU part of `krasis check`: each CUDA device's name, compute capability, memory, driver/runtime
 * versions, PCIe link (from sysfs), a pinned-memory allocation and the host-to-device copy rate through
 * it. A build without CUDA, or a machine without a GPU, gets one line saying so (not a failure: CPU-only
 * decode is a supported mode). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli/check_gpu.h"
#ifdef KRASIS_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "base/mapfile.h"
#endif

static void out(const char *verdict, const char *what, const char *msg, int *n_warn, int *n_fail) {
    *n_warn += !strcmp(verdict, "warn");
    *n_fail += !strcmp(verdict, "FAIL");
    printf("  [%-4s] %-22s %s\n", verdict, what, msg);
}

#ifdef KRASIS_HAVE_CUDA
static int sysfs_line(const char *dev, const char *file, char *buf, size_t n) {
    char p[256];
    snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/%s", dev, file);
    return kr_read_first_line(p, buf, n);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* pins `bytes` of host memory and times copies to the device: the hand-off path of hybrid decode */
static void pinned_probe(int *n_warn, int *n_fail) {
    char msg[512];
    size_t bytes = (size_t)256 << 20;
    void *h = NULL, *d = NULL;
    if (kr_cuda_host_alloc(&h, bytes, "the pinned-memory probe") != KR_OK) {
        snprintf(msg, sizeof msg, "cannot pin 256 MiB: %s", kr_error());
        out("warn", "pinned memory", msg, n_warn, n_fail);
        return;
    }
    memset(h, 1, bytes);
    if (kr_cuda_malloc(&d, bytes, "the copy probe") == KR_OK) {
        kr_cuda_to_device(d, h, bytes, NULL);
        kr_cuda_stream_sync(NULL);
        double t0 = now_s();
        for (int i = 0; i < 4; i++)
            kr_cuda_to_device(d, h, bytes, NULL);
        kr_status s = kr_cuda_stream_sync(NULL);
        double dt = now_s() - t0;
        if (s == KR_OK)
            snprintf(msg, sizeof msg, "256 MiB pinned; host->device %.1f GB/s through it", 4.0 * bytes / dt / 1e9);
        else
            snprintf(msg, sizeof msg, "256 MiB pinned; the copy failed: %s", kr_error());
        out(s == KR_OK ? "ok" : "warn", "pinned memory", msg, n_warn, n_fail);
        kr_cuda_free(d);
    }
    kr_cuda_host_free(h);
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY)
            snprintf(msg, sizeof msg, "unlimited");
        else
            snprintf(msg, sizeof msg, "%.1f MB (CUDA's pinned allocations do not count against it)", rl.rlim_cur / 1e6);
        out("ok", "memlock limit (GPU)", msg, n_warn, n_fail);
    }
}
#endif

void kr_check_gpus(int *n_warn, int *n_fail) {
#ifndef KRASIS_HAVE_CUDA
    out("ok", "GPU", "this krasis was built without CUDA (CPU-only): no GPU is used", n_warn, n_fail);
#else
    char msg[512];
    int n = kr_cuda_device_count();
    if (n == 0) {
        snprintf(msg, sizeof msg, "no GPU: %s (CPU-only decode and prefill)", kr_cuda_no_device_reason());
        out("ok", "GPU", msg, n_warn, n_fail);
        return;
    }
    for (int i = 0; i < n; i++) {
        kr_cuda_device_info d;
        if (kr_cuda_device_query(i, &d) != KR_OK) {
            snprintf(msg, sizeof msg, "GPU %d: %s", i, kr_error());
            out("FAIL", "GPU", msg, n_warn, n_fail);
            continue;
        }
        int cc = d.cc_major * 10 + d.cc_minor;
        snprintf(msg, sizeof msg, "GPU %d: %s, compute capability %d.%d, %d SMs, %.1f GiB (%.1f GiB free), L2 %.0f MiB%s", i,
                 d.name, d.cc_major, d.cc_minor, d.sm_count, d.total_bytes / 1073741824.0, d.free_bytes / 1073741824.0,
                 d.l2_bytes / 1048576.0, cc < 80 ? ": krasis's kernels need sm_80 (Ampere) or newer" : "");
        out(cc >= 80 ? "ok" : "FAIL", "GPU", msg, n_warn, n_fail);
        snprintf(msg, sizeof msg, "driver supports CUDA %d.%d, runtime %d.%d (built with %d.%d)", d.driver_version / 1000,
                 d.driver_version % 1000 / 10, d.runtime_version / 1000, d.runtime_version % 1000 / 10,
                 kr_cuda_build_runtime_version() / 1000, kr_cuda_build_runtime_version() % 1000 / 10);
        out(d.driver_version >= d.runtime_version ? "ok" : "FAIL", "CUDA versions", msg, n_warn, n_fail);
        char dev[32], cs[64] = "?", cw[16] = "?", ms[64] = "?", mw[16] = "?";
        snprintf(dev, sizeof dev, "%04x:%02x:%02x.0", d.pci_domain, d.pci_bus, d.pci_device);
        int have = sysfs_line(dev, "current_link_speed", cs, sizeof cs) & sysfs_line(dev, "current_link_width", cw, sizeof cw);
        sysfs_line(dev, "max_link_speed", ms, sizeof ms);
        sysfs_line(dev, "max_link_width", mw, sizeof mw);
        if (have)
            snprintf(msg, sizeof msg, "%s: %s x%s (max %s x%s)%s", dev, cs, cw, ms, mw,
                     strcmp(cw, mw) ? ": running narrower than the slot allows" : "");
        else
            snprintf(msg, sizeof msg, "%s: link not exposed in sysfs (a VM?)", dev);
        out(have && strcmp(cw, mw) ? "warn" : "ok", "PCIe link", msg, n_warn, n_fail);
    }
    kr_cuda_set_device(0);
    pinned_probe(n_warn, n_fail);
#endif
}
