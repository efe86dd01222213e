/* test_cpu_blas.c — cpu_features (ISA names, parse, cap, consistency with the CPUID bits),
 * the OpenBLAS wrappers (sgemm/sgemv vs a naive loop, all transposes, k == 0, beta) and the
 * core selection by re-exec: the test runs itself as a child (`--child CAP`) under chosen
 * environments and reads back the core the child ended up on.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "common/efc_status.h"
#include "kernels/blas.h"
#include "kernels/cpu_features.h"

static uint64_t g_seed = 777;

static void test_isa_names(void **state)
{
    (void)state;
    static const enum efc_isa all[] = {EFC_ISA_REF, EFC_ISA_AVX2, EFC_ISA_AVX512,
                                       EFC_ISA_AVX512VNNI, EFC_ISA_AMX, EFC_ISA_NEON};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        enum efc_isa back = EFC_ISA_REF;
        assert_int_equal(efc_isa_parse(efc_isa_name(all[i]), &back), EFC_OK);
        assert_int_equal(back, all[i]);
    }
    enum efc_isa out = EFC_ISA_AVX2;
    efc_err_clear();
    assert_int_equal(efc_isa_parse("sse9", &out), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "avx512vnni"));
    assert_int_equal(out, EFC_ISA_AVX2);
    assert_int_equal(efc_isa_parse("", &out), EFC_EINVAL);
    assert_int_equal(efc_isa_parse(NULL, &out), EFC_EINVAL);

    assert_int_equal(efc_isa_cap(EFC_ISA_AVX512VNNI, EFC_ISA_AVX2), EFC_ISA_AVX2);
    assert_int_equal(efc_isa_cap(EFC_ISA_AVX2, EFC_ISA_AMX), EFC_ISA_AVX2);
    assert_int_equal(efc_isa_cap(EFC_ISA_AVX512, EFC_ISA_REF), EFC_ISA_REF);
    assert_int_equal(efc_isa_cap(EFC_ISA_NEON, EFC_ISA_NEON), EFC_ISA_NEON);
    assert_int_equal(efc_isa_cap(EFC_ISA_NEON, EFC_ISA_AVX2), EFC_ISA_REF);
    assert_int_equal(efc_isa_cap(EFC_ISA_AVX2, EFC_ISA_NEON), EFC_ISA_REF);
    assert_int_equal(efc_isa_cap(EFC_ISA_REF, EFC_ISA_AMX), EFC_ISA_REF);
}

static void test_cpu_features(void **state)
{
    (void)state;
    const struct efc_cpu_features *f = efc_cpu_features();
    assert_ptr_equal(f, efc_cpu_features());
    printf("cpu: %s (%s) family %d model %d, %d cpus, best isa %s\n", f->brand, f->vendor,
           f->family, f->model, f->n_cpus, efc_isa_name(efc_isa_best()));
    printf("     avx2 %d fma %d avx512 f%d bw%d vl%d dq%d vnni %d bf16 %d avxvnni %d amx %d/%d "
           "os ymm %d zmm %d amx %d\n",
           f->avx2, f->fma, f->avx512f, f->avx512bw, f->avx512vl, f->avx512dq, f->avx512vnni,
           f->avx512bf16, f->avxvnni, f->amx_tile, f->amx_int8, f->os_ymm, f->os_zmm,
           f->os_amx);
    assert_true(f->n_cpus >= 1);
    assert_true(f->brand[0] != '\0' && f->brand[0] != ' ');
    enum efc_isa best = efc_isa_best();
#if defined(__x86_64__)
    assert_true(f->vendor[0] != '\0');
    assert_true(f->family > 0);
    /* The level implies its bits, OS state included. */
    if (best >= EFC_ISA_AVX2)
        assert_true(f->avx2 && f->fma && f->os_ymm);
    if (best >= EFC_ISA_AVX512)
        assert_true(f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->os_zmm);
    if (best >= EFC_ISA_AVX512VNNI)
        assert_true(f->avx512vnni);
    if (best == EFC_ISA_AMX)
        assert_true(f->amx_tile && f->amx_int8 && f->os_amx);
    if (f->os_zmm)
        assert_true(f->os_ymm);
    /* Cross-check with the kernel's view (/proc/cpuinfo flags), when readable. */
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (fp != NULL) {
        char line[8192];
        while (fgets(line, sizeof(line), fp) != NULL) {
            if (strncmp(line, "flags", 5) != 0)
                continue;
            assert_int_equal(f->avx2, strstr(line, " avx2") != NULL);
            assert_int_equal(f->avx512f, strstr(line, " avx512f") != NULL);
            assert_int_equal(f->avx512vnni, strstr(line, " avx512_vnni") != NULL);
            assert_int_equal(f->avx512bf16, strstr(line, " avx512_bf16") != NULL);
            assert_int_equal(f->amx_tile, strstr(line, " amx_tile") != NULL);
            break;
        }
        fclose(fp);
    }
#else
    (void)best;
#endif
}

static void test_core_wanted(void **state)
{
    (void)state;
#if defined(__x86_64__)
    assert_string_equal(efc_blas_core_wanted(EFC_ISA_REF), "Prescott");
    enum efc_isa best = efc_isa_best();
    if (best >= EFC_ISA_AVX2)
        assert_string_equal(efc_blas_core_wanted(EFC_ISA_AVX2), "Haswell");
    if (best >= EFC_ISA_AVX512)
        assert_string_equal(efc_blas_core_wanted(EFC_ISA_AMX),
                            efc_cpu_features()->avx512bf16 ? "Cooperlake" : "SkylakeX");
#endif
    printf("OpenBLAS core now %s, wanted %s, %d threads\n", efc_blas_core(),
           efc_blas_core_wanted(efc_isa_best()), efc_blas_threads());
}

static void naive_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                       int lda, const float *b, int ldb, float beta, const float *c0, int ldc,
                       double *out, double *mag)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0, g = 0.0;
            for (int p = 0; p < k; p++) {
                double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += av * bv;
                g += fabs(av * bv);
            }
            double cv = beta == 0.0f ? 0.0 : beta * (double)c0[(size_t)i * ldc + j];
            out[(size_t)i * n + j] = alpha * s + cv;
            mag[(size_t)i * n + j] = fabs(alpha) * g + fabs(cv);
        }
}

static void test_sgemm_sgemv(void **state)
{
    (void)state;
    static const int dims[] = {0, 1, 3, 17, 64};
    struct efc_rng r;
    efc_rng_init(&r, g_seed);
    float *a = efc_malloc(80 * 80 * sizeof(float)), *b = efc_malloc(80 * 80 * sizeof(float));
    float *c = efc_malloc(80 * 80 * sizeof(float)), *c0 = efc_malloc(80 * 80 * sizeof(float));
    double *want = efc_malloc(80 * 80 * sizeof(double)), *mag = efc_malloc(80 * 80 * 8);
    for (int t = 0; t < 80 * 80; t++) {
        a[t] = efc_rng_uniform(&r) - 0.5f;
        b[t] = efc_rng_uniform(&r) - 0.5f;
        c0[t] = efc_rng_uniform(&r) - 0.5f;
    }
    for (int mi = 0; mi < 5; mi++)
        for (int ni = 0; ni < 5; ni++)
            for (int ki = 0; ki < 5; ki++)
                for (int tr = 0; tr < 4; tr++) {
                    int m = dims[mi], n = dims[ni], k = dims[ki];
                    bool ta = tr & 1, tb = tr & 2;
                    int lda = 70, ldb = 71, ldc = 72; /* strides != width */
                    float alpha = 1.5f, beta = (tr == 3) ? 0.0f : 0.5f;
                    memcpy(c, c0, 80 * 80 * sizeof(float));
                    efc_k_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
                    naive_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc, want, mag);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double d = c[(size_t)i * ldc + j] - want[(size_t)i * n + j];
                            if (fabs(d) > 1e-5 * mag[(size_t)i * n + j] + 1e-30) {
                                print_error("sgemm m%d n%d k%d ta%d tb%d: (%d,%d) %g vs %g\n", m,
                                            n, k, ta, tb, i, j, c[(size_t)i * ldc + j],
                                            want[(size_t)i * n + j]);
                                fail();
                            }
                        }
                    /* Outside the m x n block nothing changed. */
                    for (int i = 0; i < 72; i++)
                        for (int j = 0; j < 72; j++)
                            if (i >= m || j >= n)
                                assert_true(c[(size_t)i * ldc + j] == c0[(size_t)i * ldc + j]);
                }
    /* sgemv, both orientations; beta 0 must ignore NaN in y. */
    for (int mi = 0; mi < 5; mi++)
        for (int ni = 0; ni < 5; ni++)
            for (int ta = 0; ta < 2; ta++) {
                int m = dims[mi], n = dims[ni], ny = ta ? n : m, nx = ta ? m : n;
                float x[64], y[64];
                for (int i = 0; i < 64; i++) {
                    x[i] = b[i];
                    y[i] = NAN;
                }
                efc_k_sgemv(ta, m, n, 2.0f, a, 70, x, 0.0f, y);
                for (int i = 0; i < ny; i++) {
                    double s = 0.0, g = 0.0;
                    for (int j = 0; j < nx; j++) {
                        double t = ta ? (double)a[(size_t)j * 70 + i] * x[j]
                                      : (double)a[(size_t)i * 70 + j] * x[j];
                        s += t;
                        g += fabs(t);
                    }
                    assert_true(fabs(y[i] - 2.0 * s) <= 2e-5 * g + 1e-30);
                }
            }
    efc_free(a);
    efc_free(b);
    efc_free(c);
    efc_free(c0);
    efc_free(want);
    efc_free(mag);
}

/* Child mode: efc_blas_setup(cap), an sgemm checked against double precision, then print
 * "core=<core> gemm=<ok|bad>". */
static int child_main(char **argv)
{
    enum efc_isa cap;
    if (efc_isa_parse(argv[2], &cap) != EFC_OK)
        return 2;
    efc_blas_setup(cap);
    const char *planned = efc_blas_core_planned();
    char before[64];
    snprintf(before, sizeof(before), "%s", planned);
    enum { M = 7, N = 5, K = 9 };
    float a[M * K], b[K * N], c[M * N];
    for (int i = 0; i < M * K; i++)
        a[i] = (float)((i * 7) % 11) - 5.0f;
    for (int i = 0; i < K * N; i++)
        b[i] = (float)((i * 5) % 13) - 6.0f;
    efc_k_sgemm(false, false, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    int ok = 1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int p = 0; p < K; p++)
                s += (double)a[i * K + p] * b[p * N + j];
            ok &= fabs(s - c[i * N + j]) <= 1e-4;
        }
    printf("core=%s gemm=%s planned=%s\n", efc_blas_core(), ok ? "ok" : "bad", before);
    return 0;
}

/* Run ourselves as `--child cap` with env edits ("NAME=value" sets, "NAME" unsets). */
static void run_child(const char *cap, const char *const *env, char *out, size_t n_out)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("EFC_BLAS_KEEP_ENV");
        unsetenv("EFC_BLAS_LIB");
        unsetenv("EFC_BLAS_CORE");
        for (size_t i = 0; env[i] != NULL; i++) {
            char name[64];
            const char *eq = strchr(env[i], '=');
            size_t len = eq != NULL ? (size_t)(eq - env[i]) : strlen(env[i]);
            snprintf(name, sizeof(name), "%.*s", (int)len, env[i]);
            if (eq != NULL)
                setenv(name, eq + 1, 1);
            else
                unsetenv(name);
        }
        char *args[] = {(char *)"test_cpu_blas", (char *)"--child", (char *)cap, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t k;
    while (got + 1 < n_out && (k = read(fd[0], out + got, n_out - 1 - got)) > 0)
        got += (size_t)k;
    out[got] = '\0';
    close(fd[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *nl = strchr(out, '\n');
    if (nl != NULL)
        *nl = '\0';
}

/* The core is set before OpenBLAS is opened (each case in a fresh process): the cap's core, an
 * inherited OPENBLAS_CORETYPE replaced, EFC_BLAS_CORE and EFC_BLAS_KEEP_ENV respected; and
 * without the library the portable loop computes the same product. */
static void test_core_select(void **state)
{
    (void)state;
    char out[256], want[128];
#if defined(__x86_64__)
    const char *none[] = {NULL};
    const char *keep[] = {"EFC_BLAS_KEEP_ENV=1", "OPENBLAS_CORETYPE=Prescott", NULL};

    run_child("ref", none, out, sizeof(out));
    printf("cap ref:            %s\n", out);
    assert_non_null(strstr(out, "core=Prescott gemm=ok planned=Prescott"));

    enum efc_isa best = efc_isa_best();
    run_child(efc_isa_name(best), none, out, sizeof(out));
    printf("cap %-15s %s\n", efc_isa_name(best), out);
    snprintf(want, sizeof(want), "core=%s gemm=ok", efc_blas_core_wanted(best));
    assert_non_null(strcasestr(out, want));

    run_child(efc_isa_name(best), keep, out, sizeof(out));
    printf("keep env:           %s\n", out);
    assert_non_null(strstr(out, "core=Prescott gemm=ok"));

    /* An inherited OPENBLAS_CORETYPE that is not the best core is replaced (this machine
     * exports OPENBLAS_CORETYPE=Haswell although it has AVX-512). */
    const char *inherited[] = {"OPENBLAS_CORETYPE=Prescott", NULL};
    run_child(efc_isa_name(best), inherited, out, sizeof(out));
    printf("inherited Prescott: %s\n", out);
    assert_non_null(strcasestr(out, want));

    /* EFC_BLAS_CORE forces a core, whatever the cap. */
    const char *force[] = {"EFC_BLAS_CORE=Prescott", "OPENBLAS_CORETYPE=Haswell", NULL};
    run_child(efc_isa_name(best), force, out, sizeof(out));
    printf("forced Prescott:    %s\n", out);
    assert_non_null(strstr(out, "core=Prescott gemm=ok"));

    /* A child with a lower cap than its parent's core re-decides for its own cap. */
    const char *parent[] = {"OPENBLAS_CORETYPE=Cooperlake", NULL};
    run_child("avx2", parent, out, sizeof(out));
    printf("cap avx2 from Cooperlake: %s\n", out);
    assert_non_null(strstr(out, "core=Haswell gemm=ok"));
#endif
    /* No OpenBLAS: the portable loop, core "none". */
    const char *nolib[] = {"EFC_BLAS_LIB=/nonexistent/libopenblas.so.0", NULL};
    run_child("ref", nolib, out, sizeof(out));
    printf("no library:         %s\n", out);
    assert_non_null(strstr(out, "core=none gemm=ok"));
}

/* Thin SVD: w = u diag(s) vt to float precision, s descending, orthonormal columns of u and
 * rows of vt, for tall, wide and square shapes. */
static void test_svd(void **state)
{
    (void)state;
    static const int shapes[][2] = {{37, 23}, {23, 37}, {16, 16}, {1, 9}, {9, 1}};
    for (size_t c = 0; c < sizeof(shapes) / sizeof(shapes[0]); c++) {
        int r = shapes[c][0], n = shapes[c][1], k = r < n ? r : n;
        float *w = efc_malloc((size_t)r * n * sizeof(float)), *s = efc_malloc((size_t)k * 4),
              *u = efc_malloc((size_t)r * k * 4), *vt = efc_malloc((size_t)k * n * 4);
        for (int i = 0; i < r * n; i++)
            w[i] = (float)((i * 37 + 11) % 101) / 50.0f - 1.0f;
        enum efc_status st = efc_svd_f32(r, n, w, s, u, vt);
        if (st == EFC_EUNSUPPORTED) {
            print_message("skipped: %s\n", efc_err_detail());
            skip();
        }
        assert_int_equal(st, EFC_OK);
        double scale = 0.0;
        for (int i = 0; i < r * n; i++)
            scale = fmax(scale, fabs(w[i]));
        for (int j = 1; j < k; j++)
            assert_true(s[j] <= s[j - 1] && s[j] >= 0.0f);
        for (int i = 0; i < r; i++)
            for (int j = 0; j < n; j++) {
                double acc = 0.0;
                for (int q = 0; q < k; q++)
                    acc += (double)u[i * k + q] * s[q] * vt[q * n + j];
                assert_true(fabs(acc - w[i * n + j]) <= 1e-4 * (1.0 + scale * k));
            }
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++) {
                double du = 0.0, dv = 0.0;
                for (int i = 0; i < r; i++)
                    du += (double)u[i * k + a] * u[i * k + b];
                for (int j = 0; j < n; j++)
                    dv += (double)vt[a * n + j] * vt[b * n + j];
                assert_true(fabs(du - (a == b)) < 1e-4 && fabs(dv - (a == b)) < 1e-4);
            }
        efc_free(w);
        efc_free(s);
        efc_free(u);
        efc_free(vt);
    }
    assert_int_equal(efc_svd_f32(0, 3, NULL, NULL, NULL, NULL), EFC_EINVAL);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--child") == 0)
        return child_main(argv);
    printf("test_cpu_blas seed=%llu\n", (unsigned long long)g_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa_names),
        cmocka_unit_test(test_cpu_features),
        cmocka_unit_test(test_core_wanted),
        cmocka_unit_test(test_sgemm_sgemv),
        cmocka_unit_test(test_core_select),
        cmocka_unit_test(test_svd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
