/* krasis check [-m MODEL | --synthetic CONFIG.json] [--expert-bits B]: the system report, one line per
 * item with a verdict (ok / warn / FAIL) and what to do about it. It reads only /proc, /sys and cpuid. */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend/cpu/isa.h"
#include "base/mapfile.h"
#include "backend/cpu/numa.h"
#include "backend/cpu/threadpool.h"
#include "cli/check_gpu.h"
#include "cli/commands.h"
#include "model/config.h"

static int n_warn, n_fail;

static void line(const char *verdict, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void line(const char *verdict, const char *what, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    n_warn += !strcmp(verdict, "warn");
    n_fail += !strcmp(verdict, "FAIL");
    printf("  [%-4s] %-22s %s\n", verdict, what, msg);
}


static long long meminfo(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    char l[256];
    long long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(l, sizeof l, f))
        if (!strncmp(l, key, kl) && l[kl] == ':') {
            v = atoll(l + kl + 1) * 1024;
            break;
        }
    if (f)
        fclose(f);
    return v;
}

/* expert bytes of a config at the given bits (g32 scales, the largest), or -1 */
static double model_need(const char *cfg_dir_or_file, int bits) {
    char path[4096];
    snprintf(path, sizeof path, "%s", cfg_dir_or_file);
    size_t n = strlen(path);
    if (n < 5 || strcmp(path + n - 5, ".json"))
        snprintf(path + n, sizeof path - n, "/config.json");
    json_t *j = json_load_file(path, 0, NULL);
    if (!j)
        return -1;
    kr_hparams hp;
    kr_status s = kr_hparams_from_json(j, path, &hp);
    json_decref(j);
    if (s != KR_OK)
        return -1;
    double moe = 0;
    for (int l = 0; l < hp.n_layers; l++)
        moe += hp.layer_is_moe[l] != 0;
    double per_param = bits / 8.0 + 4.0 / 32;
    double need = moe * (hp.router.n_experts + hp.n_shared) * 3.0 * (double)hp.hidden * (double)hp.moe_intermediate * per_param;
    kr_hparams_free(&hp);
    return need;
}

int kr_cmd_check(int argc, char **argv) {
    const char *model = NULL;
    int bits = 4;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--synthetic")) && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--expert-bits") && i + 1 < argc)
            bits = atoi(argv[++i]) == 8 ? 8 : 4;
        else {
            fprintf(stderr, "usage: krasis check [-m MODEL | --synthetic CONFIG.json] [--expert-bits 4|8]\n");
            return 2;
        }
    }
    printf("krasis check: this machine for CPU MoE decode\n");
    const kr_kernels *k = kr_kernels_get();
    char simd[256] = "";
    for (int i = 0; i < KR_ISA_COUNT; i++)
        if (kr_cpu_has((kr_isa)i)) {
            strcat(simd, kr_isa_name((kr_isa)i));
            strcat(simd, kr_kernels_for((kr_isa)i) ? " " : "(no kernels yet) ");
        }
    if (kr_cpu_has_feature("avx512vnni"))
        strcat(simd, "+vnni ");
    if (kr_cpu_has_feature("avxvnni"))
        strcat(simd, "+avxvnni ");
    line(k->isa >= KR_ISA_AVX2 ? "ok" : "warn", "SIMD", "%sin use: %s%s", simd, k->name,
         k->isa >= KR_ISA_AVX2 ? "" : " (scalar kernels are a reference, not fast)");
    int cpus[1024], logical = 0;
    int phys = kr_physical_cores(cpus, 1024, &logical);
    line(phys == logical ? "ok" : "ok", "cores", "%d physical core%s, %d logical CPU%s%s", phys, phys == 1 ? "" : "s",
         logical, logical == 1 ? "" : "s",
         phys == logical ? " (no SMT)" : "; krasis uses one worker per physical core (SMT siblings slow decode)");
    int nodes = 0;
    for (int i = 0; i < 1024; i++) {
        char p[128], buf[64];
        snprintf(p, sizeof p, "/sys/devices/system/node/node%d/cpulist", i);
        if (!kr_read_first_line(p, buf, sizeof buf))
            break;
        nodes++;
        char mp[128], mbuf[256];
        snprintf(mp, sizeof mp, "/sys/devices/system/node/node%d/meminfo", i);
        long long kb = 0;
        FILE *f = fopen(mp, "r");
        while (f && fgets(mbuf, sizeof mbuf, f))
            if (strstr(mbuf, "MemTotal:")) {
                kb = atoll(strstr(mbuf, "MemTotal:") + 9);
                break;
            }
        if (f)
            fclose(f);
        line("ok", "NUMA node", "node %d: CPUs %s, %.1f GB", i, buf, kb / 1048576.0);
    }
    if (nodes <= 1)
        line("ok", "NUMA", "1 node: nothing to place");
    else if (kr_numa_system_nodes() > 1)
        line("ok", "NUMA", "%d nodes: each layer's experts are dealt over the nodes the workers run on (libnuma)", nodes);
    else
        line("warn", "NUMA", "%d nodes, but this build has no libnuma (or the kernel no NUMA API): experts are not placed",
             nodes);
    char gov[64];
    if (kr_read_first_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", gov, sizeof gov))
        line(!strcmp(gov, "performance") ? "ok" : "warn", "CPU governor", "%s%s", gov,
             !strcmp(gov, "performance") ? "" : " (performance gives steadier decode: cpupower frequency-set -g performance)");
    else
        line("ok", "CPU governor", "not exposed (a VM or a fixed-frequency host)");
    char thp[128];
    if (kr_read_first_line("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof thp))
        line(strstr(thp, "[never]") ? "warn" : "ok", "transparent hugepages", "%s%s", thp,
             strstr(thp, "[never]") ? " (krasis advises huge pages on weights; enable madvise or always)" : "");
    long long hp_total = meminfo("HugePages_Total");
    line("ok", "hugepages (static)", "%lld reserved (not needed: krasis uses transparent huge pages)", hp_total < 0 ? 0 : hp_total);
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY)
            line("ok", "memlock limit", "unlimited");
        else
            line("ok", "memlock limit", "%.1f MB (locking is not used; pinned buffers for a GPU would need more)",
                 rl.rlim_cur / 1e6);
    }
    long long total = meminfo("MemTotal"), avail = meminfo("MemAvailable");
    line("ok", "RAM", "%.1f GB total, %.1f GB available", total / 1e9, avail / 1e9);
    if (model) {
        double need = model_need(model, bits);
        if (need < 0)
            line("FAIL", "model", "%s: cannot read its config.json", model);
        else
            line(need < 0.9 * (double)avail ? "ok" : "FAIL", "model experts", "%s: int%d experts need ~%.1f GB, %.1f GB available%s",
                 model, bits, need / 1e9, avail / 1e9, need < 0.9 * (double)avail ? "" : ": does not fit");
    }
    kr_check_gpus(&n_warn, &n_fail);
    printf("verdict: %s (%d warning%s, %d failure%s)\n", n_fail ? "FAIL" : n_warn ? "ok with warnings" : "ok", n_warn,
           n_warn == 1 ? "" : "s", n_fail, n_fail == 1 ? "" : "s");
    return n_fail ? 1 : 0;
}
