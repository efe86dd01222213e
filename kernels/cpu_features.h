/* cpu_features.h — what the CPU and the OS support, and the ISA levels efc dispatches on.
 *
 * x86: CPUID plus XGETBV (the OS must have enabled YMM / ZMM / AMX tile state, the check
 * ggml's CPU scoring skips); AMX also needs the arch_prctl permission request (NOTES.md).
 * aarch64: NEON is baseline. An ISA level can be capped (--isa / EFC_ISA) so one machine can
 * honestly act as a lower hardware class. Thread-safe: reads only.
 */
#ifndef EFC_KERNELS_CPU_FEATURES_H
#define EFC_KERNELS_CPU_FEATURES_H

#include <stdbool.h>

#include "common/efc_status.h"

/* Ordered: a higher x86 level implies every lower x86 level. */
enum efc_isa {
    EFC_ISA_REF = 0,        /* portable C only */
    EFC_ISA_AVX2 = 1,       /* AVX2 + FMA */
    EFC_ISA_AVX512 = 2,     /* AVX-512 F/BW/VL/DQ */
    EFC_ISA_AVX512VNNI = 3, /* + AVX-512 VNNI */
    EFC_ISA_AMX = 4,        /* + AMX-TILE/AMX-INT8 with OS permission */
    EFC_ISA_NEON = 16,      /* aarch64 Advanced SIMD */
};

struct efc_cpu_features {
    char vendor[16];
    char brand[64];
    int family, model;
    int n_cpus;
    bool sse42, avx, fma, f16c, avx2;
    bool avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16, avxvnni;
    bool amx_tile, amx_int8;
    bool os_ymm, os_zmm, os_amx; /* XGETBV / arch_prctl */
    bool neon;
};

/* Detect once (cached). */
const struct efc_cpu_features *efc_cpu_features(void);
/* Best level this CPU + OS can run. */
enum efc_isa efc_isa_best(void);
/* "ref", "avx2", "avx512", "avx512vnni", "amx", "neon". */
const char *efc_isa_name(enum efc_isa isa);
/* Parse a name; EFC_EINVAL with a detail listing the valid names otherwise. */
enum efc_status efc_isa_parse(const char *s, enum efc_isa *out);
/* The cap from the EFC_ISA environment variable, applied to efc_isa_best(); the best level
 * when unset. EFC_EINVAL (with a detail listing the valid names) for an unknown name. */
enum efc_status efc_isa_from_env(enum efc_isa *out);
/* min(cap, best) for x86 levels; NEON / REF handled as expected. */
enum efc_isa efc_isa_cap(enum efc_isa best, enum efc_isa cap);

#endif
