/* profile.c — this machine's hardware profile and class, capped by --isa. */
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent/agent.h"
#include "kernels/blas.h"

const char *efc_agent_hw_class(enum efc_isa level)
{
    switch (level) {
    case EFC_ISA_AMX:
        return "x86_64-amx";
    case EFC_ISA_AVX512VNNI:
        return "x86_64-avx512vnni";
    case EFC_ISA_AVX512:
        return "x86_64-avx512";
    case EFC_ISA_AVX2:
        return "x86_64-avx2";
    case EFC_ISA_NEON:
        return "aarch64-neon";
    case EFC_ISA_REF:
    default:
        return "generic-ref";
    }
}

static void add_feature(char *buf, size_t n, bool have, const char *name)
{
    size_t len = strlen(buf);
    if (!have || len + strlen(name) + 2 > n)
        return;
    snprintf(buf + len, n - len, "%s%s", len ? " " : "", name);
}

static uint64_t sysconf_u64(int name)
{
    long v = sysconf(name);
    return v > 0 ? (uint64_t)v : 0;
}

enum efc_status efc_agent_profile_detect(enum efc_isa cap, struct efc_agent_profile *p)
{
    const struct efc_cpu_features *f;
    struct utsname u;

    if (!p)
        return efc_errf(EFC_EINVAL, "agent profile: no output");
    memset(p, 0, sizeof(*p));
    if (uname(&u) == 0)
        snprintf(p->arch, sizeof(p->arch), "%.15s", u.machine);
    f = efc_cpu_features();
    snprintf(p->cpu, sizeof(p->cpu), "%s", f->brand);
    add_feature(p->features, sizeof(p->features), f->sse42, "sse4.2");
    add_feature(p->features, sizeof(p->features), f->avx && f->os_ymm, "avx");
    add_feature(p->features, sizeof(p->features), f->fma && f->os_ymm, "fma");
    add_feature(p->features, sizeof(p->features), f->avx2 && f->os_ymm, "avx2");
    add_feature(p->features, sizeof(p->features), f->avx512f && f->os_zmm, "avx512f");
    add_feature(p->features, sizeof(p->features), f->avx512bw && f->os_zmm, "avx512bw");
    add_feature(p->features, sizeof(p->features), f->avx512vl && f->os_zmm, "avx512vl");
    add_feature(p->features, sizeof(p->features), f->avx512dq && f->os_zmm, "avx512dq");
    add_feature(p->features, sizeof(p->features), f->avx512vnni && f->os_zmm, "avx512vnni");
    add_feature(p->features, sizeof(p->features), f->avx512bf16 && f->os_zmm, "avx512bf16");
    add_feature(p->features, sizeof(p->features), f->avxvnni && f->os_ymm, "avxvnni");
    add_feature(p->features, sizeof(p->features), f->amx_tile && f->os_amx, "amx-tile");
    add_feature(p->features, sizeof(p->features), f->amx_int8 && f->os_amx, "amx-int8");
    add_feature(p->features, sizeof(p->features), f->neon, "neon");
    p->cores = (int32_t)sysconf_u64(_SC_NPROCESSORS_ONLN);
    if (p->cores < 1)
        p->cores = f->n_cpus > 0 ? f->n_cpus : 1;
    p->mem_bytes = sysconf_u64(_SC_PHYS_PAGES) * sysconf_u64(_SC_PAGESIZE);
#ifdef _SC_LEVEL1_DCACHE_SIZE
    p->l1d_bytes = sysconf_u64(_SC_LEVEL1_DCACHE_SIZE);
    p->l2_bytes = sysconf_u64(_SC_LEVEL2_CACHE_SIZE);
    p->l3_bytes = sysconf_u64(_SC_LEVEL3_CACHE_SIZE);
#endif
    p->isa_best = efc_isa_best();
    p->isa = efc_isa_cap(p->isa_best, cap);
    snprintf(p->hw_class, sizeof(p->hw_class), "%s", efc_agent_hw_class(p->isa));
    snprintf(p->blas_core, sizeof(p->blas_core), "%s", efc_blas_core_planned()); /* not loaded here */
    return EFC_OK;
}

void efc_agent_profile_to_status(const struct efc_agent_profile *p, struct efc_proto_status *st)
{
    if (!p || !st)
        return;
    st->version = EFC_PROTO_VERSION;
    snprintf(st->hw_class, sizeof(st->hw_class), "%s", p->hw_class);
    snprintf(st->isa, sizeof(st->isa), "%s", efc_isa_name(p->isa));
    snprintf(st->blas_core, sizeof(st->blas_core), "%s", p->blas_core);
    st->cores = p->cores;
    st->mem_bytes = p->mem_bytes;
    snprintf(st->agent_version, sizeof(st->agent_version), "%s", EFC_AGENT_VERSION);
}
