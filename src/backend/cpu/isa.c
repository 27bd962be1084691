/* ISA detection and the dispatch table: cpuid picks the best level this build and CPU both have;
 * KRASIS_ISA forces one (a level the CPU lacks is refused with a warning, never executed). */
#include "backend/cpu/isa.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[KR_ISA_COUNT] = {"scalar", "avx2", "avx512", "amx"};

const char *kr_isa_name(kr_isa isa) { return isa >= 0 && isa < KR_ISA_COUNT ? names[isa] : "?"; }

int kr_cpu_has(kr_isa isa) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    switch (isa) {
    case KR_ISA_SCALAR:
        return 1;
    case KR_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case KR_ISA_AVX512:
        /* the AVX-512 kernels are VNNI kernels: Skylake-X/Cascade Lake without it stay on AVX2 */
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && kr_cpu_has(KR_ISA_AVX2);
    case KR_ISA_AMX: {
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
        return (d >> 24 & 1) && (d >> 25 & 1); /* amx-tile, amx-int8 */
    }
    default:
        return 0;
    }
#else
    return isa == KR_ISA_SCALAR;
#endif
}

int kr_cpu_has_feature(const char *name) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!strcmp(name, "avx512vnni"))
        return __builtin_cpu_supports("avx512vnni");
    if (!strcmp(name, "avx512bf16")) {
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
        return a >> 5 & 1;
    }
    if (!strcmp(name, "avxvnni")) {
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
        return a >> 4 & 1;
    }
    if (!strcmp(name, "f16c")) { /* CPUID.1:ECX bit 29 (clang 14 has no "f16c" for __builtin_cpu_supports) */
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
        return c >> 29 & 1;
    }
    if (!strcmp(name, "fma"))
        return __builtin_cpu_supports("fma");
#endif
    return 0;
}

static const kr_kernels *built(kr_isa isa) {
    switch (isa) {
    case KR_ISA_SCALAR:
        return &kr_kernels_scalar;
#ifdef KRASIS_HAVE_AVX2
    case KR_ISA_AVX2:
        return &kr_kernels_avx2;
#endif
#ifdef KRASIS_HAVE_AVX512
    case KR_ISA_AVX512:
        return &kr_kernels_avx512;
#endif
    default:
        return NULL; /* no AMX kernels: see docs/BENCHMARKS.md */
    }
}

const kr_kernels *kr_kernels_for(kr_isa isa) { return kr_cpu_has(isa) ? built(isa) : NULL; }

static _Atomic(const kr_kernels *) active;

static const kr_kernels *choose(void) {
    const char *env = getenv("KRASIS_ISA");
    if (env && *env) {
        for (int i = 0; i < KR_ISA_COUNT; i++)
            if (!strcmp(env, names[i])) {
                const kr_kernels *k = kr_kernels_for((kr_isa)i);
                if (k)
                    return k;
                fprintf(stderr, "krasis: warning: KRASIS_ISA=%s is %s; using the best available level\n", env,
                        kr_cpu_has((kr_isa)i) ? "not built into this binary" : "not supported by this CPU");
                env = NULL;
                break;
            }
        if (env)
            fprintf(stderr, "krasis: warning: KRASIS_ISA=%s is not one of scalar, avx2, avx512, amx; ignored\n", env);
    }
    for (int i = KR_ISA_COUNT - 1; i >= 0; i--) {
        const kr_kernels *k = kr_kernels_for((kr_isa)i);
        if (k)
            return k;
    }
    return &kr_kernels_scalar;
}

const kr_kernels *kr_kernels_get(void) {
    const kr_kernels *k = atomic_load_explicit(&active, memory_order_acquire);
    if (!k) {
        k = choose();
        atomic_store_explicit(&active, k, memory_order_release);
    }
    return k;
}

kr_isa kr_kernels_force(kr_isa isa) {
    kr_isa prev = kr_kernels_get()->isa;
    const kr_kernels *k = kr_kernels_for(isa);
    if (k)
        atomic_store_explicit(&active, k, memory_order_release);
    return prev;
}
