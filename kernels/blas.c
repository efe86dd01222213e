/* blas.c — the OpenBLAS door: core selection by re-exec, threads, sgemm/sgemv.
 *
 * OpenBLAS (DYNAMIC_ARCH) picks its kernel set once, in its library constructor, from
 * OPENBLAS_CORETYPE or its own CPUID table. Debian's 0.3.21 table predates Zen 4/5 and
 * Sapphire Rapids, so it picks Haswell (AVX2) or even Prescott (SSE3) there. The only way to
 * change the core after load is to run the program again with the variable set, hence the
 * execv of /proc/self/exe below. An OPENBLAS_CORETYPE inherited from the environment is not
 * trusted either: machines are seen with OPENBLAS_CORETYPE=Haswell exported globally on an
 * AVX-512 CPU, which halves sgemm speed (docs/kernels.md). Environment protocol:
 *   EFC_BLAS_CORE         the user forces a core for efc: respected, logged, nothing else.
 *   OPENBLAS_CORETYPE     inherited: kept if it is the core efc wants for this CPU and cap,
 *                         otherwise replaced (one INFO line says so).
 *   EFC_BLAS_REEXEC       set by us just before execv: the core the library ran before; its
 *                         presence means "we are the re-executed process" (no loops).
 *   EFC_BLAS_NO_REEXEC=1  disables the mechanism (bench: measure the library's own choice).
 */
#include "kernels/blas.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/efc_log.h"

#define ENV_CORETYPE "OPENBLAS_CORETYPE"
#define ENV_FORCE "EFC_BLAS_CORE"
#define ENV_REEXEC "EFC_BLAS_REEXEC"
#define ENV_NO_REEXEC "EFC_BLAS_NO_REEXEC"

const char *efc_blas_core(void)
{
    const char *s = openblas_get_corename();
    return s != NULL ? s : "unknown";
}

const char *efc_blas_core_wanted(enum efc_isa cap)
{
#if defined(__x86_64__)
    enum efc_isa isa = efc_isa_cap(efc_isa_best(), cap);
    if (isa >= EFC_ISA_AVX512 && isa <= EFC_ISA_AMX)
        return efc_cpu_features()->avx512bf16 ? "Cooperlake" : "SkylakeX";
    if (isa == EFC_ISA_AVX2)
        return "Haswell";
    return "Prescott";
#else
    (void)cap;
    return efc_blas_core(); /* no core forcing outside x86-64 */
#endif
}

static bool env_true(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

void efc_blas_setup(int argc, char **argv, enum efc_isa cap)
{
    (void)argc;
    if (env_true(ENV_NO_REEXEC))
        return;
    const char *core = efc_blas_core();
    const char *wanted = efc_blas_core_wanted(cap);
    const char *force = getenv(ENV_FORCE);
    const struct efc_cpu_features *f = efc_cpu_features();
    enum efc_isa isa = efc_isa_cap(efc_isa_best(), cap);

    if (force != NULL && force[0] != '\0')
        wanted = force;
    const char *first = getenv(ENV_REEXEC);
    if (first != NULL) {
        /* We are the re-executed process: the one line about the switch is ours. */
        if (strcasecmp(core, wanted) == 0)
            efc_log(EFC_LOG_INFO, "blas", "OpenBLAS core %s for %s at isa %s (was %s; %s)", core,
                    f->brand, efc_isa_name(isa), first,
                    force != NULL && force[0] ? "forced by EFC_BLAS_CORE"
                                              : "set EFC_BLAS_CORE to force a core");
        else
            efc_log(EFC_LOG_WARN, "blas",
                    "OpenBLAS core %s after re-exec with OPENBLAS_CORETYPE=%s (was %s); "
                    "continuing with %s", core, wanted, first, core);
        unsetenv(ENV_REEXEC);
        return;
    }
    if (strcasecmp(core, wanted) == 0) {
        efc_log(EFC_LOG_DEBUG, "blas", "OpenBLAS core %s (wanted %s for %s, isa %s)", core,
                wanted, f->brand, efc_isa_name(isa));
        return;
    }
    if (argv == NULL || argv[0] == NULL) {
        efc_log(EFC_LOG_WARN, "blas", "OpenBLAS core %s, wanted %s: no argv to re-exec", core,
                wanted);
        return;
    }
    /* `core` points into the library: copy it, with why it ran, before touching the
     * environment; the re-executed process logs it. */
    char first_core[128];
    snprintf(first_core, sizeof(first_core), "%s, %s", core,
             getenv(ENV_CORETYPE) != NULL ? "inherited from OPENBLAS_CORETYPE"
                                          : "the library's own choice");
    if (setenv(ENV_CORETYPE, wanted, 1) != 0 || setenv(ENV_REEXEC, first_core, 1) != 0) {
        efc_log(EFC_LOG_WARN, "blas", "setenv failed (%s); staying on OpenBLAS core %s",
                strerror(errno), core);
        unsetenv(ENV_REEXEC);
        return;
    }
    fflush(NULL);
    execv("/proc/self/exe", argv);
    int err = errno;
    unsetenv(ENV_REEXEC);
    efc_log(EFC_LOG_WARN, "blas", "re-exec for OpenBLAS core %s failed (%s); staying on %s",
            wanted, strerror(err), first_core);
}

void efc_blas_set_threads(int n)
{
    openblas_set_num_threads(n > 0 ? n : 1);
}

int efc_blas_threads(void)
{
    return openblas_get_num_threads();
}

void efc_k_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        /* OpenBLAS rejects lda < 1 (xerbla) for k == 0; the result is just beta * C. */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void efc_k_sgemv(bool trans_a, int m, int n, float alpha, const float *a, int lda,
                 const float *x, float beta, float *y)
{
    int ny = trans_a ? n : m;
    if (ny <= 0)
        return;
    if ((trans_a ? m : n) <= 0) {
        for (int i = 0; i < ny; i++)
            y[i] = beta == 0.0f ? 0.0f : beta * y[i];
        return;
    }
    if (beta == 0.0f) /* never read y: it may be uninitialised (NaN * 0 is NaN) */
        memset(y, 0, (size_t)ny * sizeof(*y));
    cblas_sgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, m, n, alpha, a, lda, x, 1,
                beta, y, 1);
}
