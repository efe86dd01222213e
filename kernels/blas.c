/* blas.c — the OpenBLAS door: the core chosen before the library loads, the library opened at
 * first use, threads, sgemm/sgemv.
 *
 * OpenBLAS (DYNAMIC_ARCH) picks its kernel set once, in its library constructor, from
 * OPENBLAS_CORETYPE or its own CPUID table. Debian's 0.3.21 table predates Zen 4/5 and
 * Sapphire Rapids, so it picks Haswell (AVX2) or even Prescott (SSE3) there. An
 * OPENBLAS_CORETYPE inherited from the environment is not trusted either: machines are seen
 * with OPENBLAS_CORETYPE=Haswell exported globally on an AVX-512 CPU, which halves sgemm speed
 * (docs/kernels.md). So efc does not link OpenBLAS: efc_blas_setup() decides the core and sets
 * OPENBLAS_CORETYPE, and the library is opened (dlopen) at the first BLAS call, in whichever
 * process makes it. A process that never runs an FP32 GEMM (the agent's supervisor loop, an
 * INT8-only evaluation child) never maps OpenBLAS nor starts its threads.
 * Environment:
 *   EFC_BLAS_CORE        force a core for efc: respected and logged.
 *   OPENBLAS_CORETYPE    inherited: kept if it is the core efc wants for this CPU and cap,
 *                        otherwise replaced (one INFO line says so).
 *   EFC_BLAS_KEEP_ENV=1  leave OPENBLAS_CORETYPE as it is (bench: the library's own choice).
 *   EFC_BLAS_LIB         the library to open (default libopenblas.so.0).
 * Without the library, FP32 GEMM/GEMV run a portable loop (correct, slow; one WARN line) and
 * the core is reported as "none".
 */
#include "kernels/blas.h"

#include <cblas.h> /* the prototypes the looked-up symbols must have; nothing is linked */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"

#define ENV_CORETYPE "OPENBLAS_CORETYPE"
#define ENV_FORCE "EFC_BLAS_CORE"
#define ENV_KEEP "EFC_BLAS_KEEP_ENV"
#define ENV_LIB "EFC_BLAS_LIB"
#define DEFAULT_LIB "libopenblas.so.0"

static struct {
    pthread_once_t once;
    int loaded; /* 1: the symbols below are valid; 0: portable loops */
    char *(*corename)(void);
    void (*set_threads)(int);
    int (*get_threads)(void);
    __typeof__(&cblas_sgemm) sgemm;
    __typeof__(&cblas_sgemv) sgemv;
    /* LAPACK (Fortran ABI; optional: the library works without it) */
    void (*sgesvd)(const char *jobu, const char *jobvt, const int *m, const int *n, float *a,
                   const int *lda, float *s, float *u, const int *ldu, float *vt,
                   const int *ldvt, float *work, const int *lwork, int *info, size_t,
                   size_t);
    int threads; /* asked for before the load (0: the library's default) */
} B = {.once = PTHREAD_ONCE_INIT};

static void blas_load(void)
{
    const char *lib = getenv(ENV_LIB);
    if (lib == NULL || lib[0] == '\0')
        lib = DEFAULT_LIB;
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (h != NULL) {
        *(void **)&B.corename = dlsym(h, "openblas_get_corename");
        *(void **)&B.set_threads = dlsym(h, "openblas_set_num_threads");
        *(void **)&B.get_threads = dlsym(h, "openblas_get_num_threads");
        *(void **)&B.sgemm = dlsym(h, "cblas_sgemm");
        *(void **)&B.sgemv = dlsym(h, "cblas_sgemv");
        *(void **)&B.sgesvd = dlsym(h, "sgesvd_");
    }
    if (h == NULL || !B.corename || !B.set_threads || !B.get_threads || !B.sgemm || !B.sgemv) {
        if (h == NULL)
            efc_log(EFC_LOG_WARN, "blas",
                    "OpenBLAS not usable (%s): FP32 GEMM runs efc's portable loop (slow)",
                    dlerror());
        else
            efc_log(EFC_LOG_WARN, "blas",
                    "OpenBLAS not usable (%s: missing symbols): FP32 GEMM runs efc's portable "
                    "loop (slow)", lib);
        if (h != NULL)
            dlclose(h);
        return;
    }
    B.loaded = 1;
    if (B.threads > 0)
        B.set_threads(B.threads);
    const char *want = getenv(ENV_CORETYPE);
    const char *core = B.corename();
    if (want != NULL && want[0] != '\0' && core != NULL && strcasecmp(core, want) != 0)
        efc_log(EFC_LOG_WARN, "blas", "OpenBLAS runs core %s, not OPENBLAS_CORETYPE=%s", core,
                want);
    else
        efc_log(EFC_LOG_DEBUG, "blas", "OpenBLAS %s loaded: core %s, %d thread(s)", lib,
                core != NULL ? core : "unknown", B.get_threads());
}

static int blas_ready(void)
{
    pthread_once(&B.once, blas_load);
    return B.loaded;
}

const char *efc_blas_core(void)
{
    if (!blas_ready())
        return "none";
    const char *s = B.corename();
    return s != NULL ? s : "unknown";
}

const char *efc_blas_core_planned(void)
{
    if (B.loaded)
        return efc_blas_core();
    const char *s = getenv(ENV_CORETYPE);
    return s != NULL && s[0] != '\0' ? s : "library's choice";
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
    return NULL; /* no core forcing outside x86-64 */
#endif
}

static bool env_true(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

void efc_blas_setup(enum efc_isa cap)
{
    const char *wanted = efc_blas_core_wanted(cap);
    const char *force = getenv(ENV_FORCE);
    const char *inherited = getenv(ENV_CORETYPE);
    const struct efc_cpu_features *f = efc_cpu_features();
    enum efc_isa isa = efc_isa_cap(efc_isa_best(), cap);

    if (B.loaded) {
        efc_log(EFC_LOG_WARN, "blas", "efc_blas_setup after OpenBLAS was loaded: core stays %s",
                efc_blas_core());
        return;
    }
    if (env_true(ENV_KEEP))
        return;
    if (force != NULL && force[0] != '\0')
        wanted = force;
    if (wanted == NULL)
        return;
    if (inherited != NULL && strcasecmp(inherited, wanted) == 0) {
        efc_log(EFC_LOG_DEBUG, "blas", "OpenBLAS core %s (wanted for %s, isa %s)", wanted,
                f->brand, efc_isa_name(isa));
        return;
    }
    char was[96];
    snprintf(was, sizeof(was), "%s", inherited != NULL ? inherited : "");
    if (setenv(ENV_CORETYPE, wanted, 1) != 0) {
        efc_log(EFC_LOG_WARN, "blas", "setenv %s failed: OpenBLAS picks its own core",
                ENV_CORETYPE);
        return;
    }
    if (force != NULL && force[0] != '\0')
        efc_log(EFC_LOG_INFO, "blas", "OpenBLAS core %s, forced by %s", wanted, ENV_FORCE);
    else if (was[0] != '\0')
        efc_log(EFC_LOG_INFO, "blas",
                "OpenBLAS core %s for %s at isa %s (not %s, inherited from %s; set %s to "
                "force a core)",
                wanted, f->brand, efc_isa_name(isa), was, ENV_CORETYPE, ENV_FORCE);
    else
        efc_log(EFC_LOG_DEBUG, "blas", "OpenBLAS core %s for %s at isa %s", wanted, f->brand,
                efc_isa_name(isa));
}

void efc_blas_set_threads(int n)
{
    B.threads = n > 0 ? n : 1;
    if (B.loaded)
        B.set_threads(B.threads);
}

int efc_blas_threads_requested(void)
{
    return B.threads;
}

int efc_blas_threads(void)
{
    if (B.loaded)
        return B.get_threads();
    return B.threads > 0 ? B.threads : 1;
}

/* The portable fallback: row-major, op(X) = X or X^T; beta == 0 never reads C. */
static void sgemm_loop(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                       int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < n; j++)
            ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        for (int p = 0; p < k; p++) {
            float av = alpha * (ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
            if (tb)
                for (int j = 0; j < n; j++)
                    ci[j] += av * b[(size_t)j * ldb + p];
            else
                for (int j = 0; j < n; j++)
                    ci[j] += av * b[(size_t)p * ldb + j];
        }
    }
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
    if (!blas_ready()) {
        sgemm_loop(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    B.sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
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
    if (!blas_ready()) {
        /* y (ny x 1) = alpha * op(A) x + beta * y, as a GEMM with n = 1 */
        sgemm_loop(trans_a, false, ny, 1, trans_a ? m : n, alpha, a, lda, x, 1, beta, y, 1);
        return;
    }
    B.sgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, m, n, alpha, a, lda, x, 1,
            beta, y, 1);
}

enum efc_status efc_svd_f32(int rows, int cols, const float *w, float *s, float *u, float *vt)
{
    if (rows < 1 || cols < 1)
        return efc_errf(EFC_EINVAL, "svd: %d x %d", rows, cols);
    if (!blas_ready() || !B.sgesvd)
        return efc_errf(EFC_EUNSUPPORTED, "svd: LAPACK sgesvd not available (OpenBLAS: %s)",
                        efc_blas_core());
    /* Row-major W (rows x cols) is column-major W^T (cols x rows); its SVD W^T = V S U^T gives
     * LAPACK's U = V (cols x k) and VT = U^T (k x rows), both column-major. */
    int m = cols, n = rows, k = rows < cols ? rows : cols, lwork = -1, info = 0;
    size_t na = (size_t)m * n;
    float *a = efc_malloc(na * sizeof(*a)), *lu = efc_malloc((size_t)m * k * sizeof(*lu)),
          *lvt = efc_malloc((size_t)k * n * sizeof(*lvt)), q = 0.0f, *work = NULL;
    enum efc_status st = EFC_OK;
    if (!a || !lu || !lvt) {
        st = efc_errf(EFC_ENOMEM, "svd: %d x %d", rows, cols);
        goto out;
    }
    memcpy(a, w, na * sizeof(*a));
    B.sgesvd("S", "S", &m, &n, a, &m, s, lu, &m, lvt, &k, &q, &lwork, &info, 1, 1);
    lwork = info == 0 && q >= 1.0f ? (int)q : 5 * (m + n);
    work = efc_malloc((size_t)lwork * sizeof(*work));
    if (!work) {
        st = efc_errf(EFC_ENOMEM, "svd: workspace");
        goto out;
    }
    memcpy(a, w, na * sizeof(*a));
    B.sgesvd("S", "S", &m, &n, a, &m, s, lu, &m, lvt, &k, work, &lwork, &info, 1, 1);
    if (info != 0) {
        st = efc_errf(info < 0 ? EFC_EINVAL : EFC_EINTERNAL, "svd: sgesvd info %d (%d x %d)",
                      info, rows, cols);
        goto out;
    }
    for (int r = 0; r < rows; r++) /* u[r][j] = U[r][j] = LAPACK VT[j][r] = lvt[j + r k] */
        for (int j = 0; j < k; j++)
            u[(size_t)r * k + j] = lvt[j + (size_t)r * k];
    for (int j = 0; j < k; j++) /* vt[j][c] = V[c][j] = LAPACK U[c][j] = lu[c + j m] */
        for (int c = 0; c < cols; c++)
            vt[(size_t)j * cols + c] = lu[c + (size_t)j * m];
out:
    efc_free(a);
    efc_free(lu);
    efc_free(lvt);
    efc_free(work);
    return st;
}
