/* cpu_features.c — CPUID + XGETBV (+ the AMX permission request) on x86-64, NEON on aarch64.
 *
 * A feature bit in CPUID only says the silicon has it; the OS must also save/restore the
 * register state (XCR0, read with XGETBV) or the first YMM/ZMM/tile instruction faults or
 * corrupts state across context switches. AMX tile data additionally needs a per-process
 * permission (arch_prctl ARCH_REQ_XCOMP_PERM, Linux >= 5.16), see NOTES.md.
 */
#include "kernels/cpu_features.h"

#include <stdlib.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#endif

static struct efc_cpu_features g_features;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
/* XCR0 bits (Intel SDM vol. 1, 13.3): 1 SSE, 2 AVX (YMM upper), 5 opmask, 6 ZMM_Hi256,
 * 7 Hi16_ZMM, 17 XTILECFG, 18 XTILEDATA. */
#define XCR0_YMM 0x6ULL
#define XCR0_ZMM 0xE6ULL
#define XCR0_AMX ((1ULL << 17) | (1ULL << 18))
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    /* The raw encoding of xgetbv, so no -mxsave is needed for this file. */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool bit(uint32_t r, int i)
{
    return (r >> i) & 1u;
}

static void trim_brand(char *s)
{
    size_t start = 0;
    while (s[start] == ' ')
        start++;
    if (start > 0)
        memmove(s, s + start, strlen(s + start) + 1);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
}

static void detect_x86(struct efc_cpu_features *f)
{
    uint32_t a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return;
    uint32_t max_leaf = a;
    memcpy(f->vendor, &b, 4);
    memcpy(f->vendor + 4, &d, 4);
    memcpy(f->vendor + 8, &c, 4);
    f->vendor[12] = '\0';

    bool osxsave = false;
    if (max_leaf >= 1 && __get_cpuid(1, &a, &b, &c, &d)) {
        int fam = (int)((a >> 8) & 0xf);
        int mod = (int)((a >> 4) & 0xf);
        if (fam == 0xf)
            fam += (int)((a >> 20) & 0xff);
        if (fam == 0x6 || fam >= 0xf)
            mod += (int)(((a >> 16) & 0xf) << 4);
        f->family = fam;
        f->model = mod;
        f->sse42 = bit(c, 20);
        f->fma = bit(c, 12);
        osxsave = bit(c, 27);
        f->avx = bit(c, 28);
        f->f16c = bit(c, 29);
    }
    uint32_t max_sub7 = 0;
    if (max_leaf >= 7 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        max_sub7 = a;
        f->avx2 = bit(b, 5);
        f->avx512f = bit(b, 16);
        f->avx512dq = bit(b, 17);
        f->avx512bw = bit(b, 30);
        f->avx512vl = bit(b, 31);
        f->avx512vnni = bit(c, 11);
        f->amx_tile = bit(d, 24);
        f->amx_int8 = bit(d, 25);
    }
    if (max_sub7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) {
        f->avxvnni = bit(a, 4);
        f->avx512bf16 = bit(a, 5);
    }

    if (osxsave) {
        uint64_t xcr0 = xgetbv0();
        f->os_ymm = (xcr0 & XCR0_YMM) == XCR0_YMM;
        f->os_zmm = (xcr0 & XCR0_ZMM) == XCR0_ZMM;
        /* Leaf 0xD sub-leaf 0 EAX lists the XSAVE features the CPU supports; XCR0 must have
         * both tile bits on top of it for the kernel to manage tile state. */
        bool tile_state = (xcr0 & XCR0_AMX) == XCR0_AMX;
        if (tile_state && max_leaf >= 0xd && __get_cpuid_count(0xd, 0, &a, &b, &c, &d))
            tile_state = (a & XCR0_AMX) == XCR0_AMX;
        if (f->amx_tile && tile_state)
            f->os_amx = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }

    if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
        uint32_t r[12];
        for (uint32_t i = 0; i < 3; i++)
            __get_cpuid(0x80000002 + i, &r[i * 4], &r[i * 4 + 1], &r[i * 4 + 2], &r[i * 4 + 3]);
        memcpy(f->brand, r, sizeof(r));
        f->brand[sizeof(r)] = '\0';
        trim_brand(f->brand);
    }
}
#endif

static void detect(void)
{
    struct efc_cpu_features *f = &g_features;
    memset(f, 0, sizeof(*f));
#if defined(__x86_64__)
    detect_x86(f);
#elif defined(__aarch64__)
    f->neon = true;
    memcpy(f->vendor, "arm64", 6);
#endif
    if (f->brand[0] == '\0')
        memcpy(f->brand, "unknown", 8);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    f->n_cpus = n > 0 ? (int)n : 1;
}

const struct efc_cpu_features *efc_cpu_features(void)
{
    pthread_once(&g_once, detect);
    return &g_features;
}

enum efc_isa efc_isa_best(void)
{
    const struct efc_cpu_features *f = efc_cpu_features();
    if (f->neon)
        return EFC_ISA_NEON;
    if (!(f->avx2 && f->fma && f->os_ymm))
        return EFC_ISA_REF;
    if (!(f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->os_zmm))
        return EFC_ISA_AVX2;
    if (!f->avx512vnni)
        return EFC_ISA_AVX512;
    if (!(f->amx_tile && f->amx_int8 && f->os_amx))
        return EFC_ISA_AVX512VNNI;
    return EFC_ISA_AMX;
}

static const struct {
    enum efc_isa isa;
    const char *name;
} isa_names[] = {
    {EFC_ISA_REF, "ref"},
    {EFC_ISA_AVX2, "avx2"},
    {EFC_ISA_AVX512, "avx512"},
    {EFC_ISA_AVX512VNNI, "avx512vnni"},
    {EFC_ISA_AMX, "amx"},
    {EFC_ISA_NEON, "neon"},
};

const char *efc_isa_name(enum efc_isa isa)
{
    for (size_t i = 0; i < sizeof(isa_names) / sizeof(isa_names[0]); i++)
        if (isa_names[i].isa == isa)
            return isa_names[i].name;
    return "unknown";
}

enum efc_status efc_isa_parse(const char *s, enum efc_isa *out)
{
    if (s != NULL) {
        for (size_t i = 0; i < sizeof(isa_names) / sizeof(isa_names[0]); i++) {
            if (strcasecmp(s, isa_names[i].name) == 0) {
                *out = isa_names[i].isa;
                return EFC_OK;
            }
        }
    }
    return efc_errf(EFC_EINVAL,
                    "unknown ISA '%s' (valid: ref, avx2, avx512, avx512vnni, amx, neon)",
                    s != NULL ? s : "(null)");
}

static bool isa_is_x86(enum efc_isa isa)
{
    return isa >= EFC_ISA_AVX2 && isa <= EFC_ISA_AMX;
}

enum efc_isa efc_isa_cap(enum efc_isa best, enum efc_isa cap)
{
    if (best == EFC_ISA_REF || cap == EFC_ISA_REF)
        return EFC_ISA_REF;
    if (best == EFC_ISA_NEON || cap == EFC_ISA_NEON)
        return best == cap ? EFC_ISA_NEON : EFC_ISA_REF;
    if (isa_is_x86(best) && isa_is_x86(cap))
        return cap < best ? cap : best;
    return EFC_ISA_REF;
}

enum efc_status efc_isa_from_env(enum efc_isa *out)
{
    const char *s = getenv("EFC_ISA");
    enum efc_isa cap = efc_isa_best();
    if (s != NULL && s[0] != '\0') {
        if (efc_isa_parse(s, &cap) != EFC_OK)
            return efc_errf(EFC_EINVAL,
                            "EFC_ISA=%s: unknown ISA (valid: ref, avx2, avx512, avx512vnni, "
                            "amx, neon)", s);
    }
    *out = efc_isa_cap(efc_isa_best(), cap);
    return EFC_OK;
}
