/* test_exec_sparse.c — the executors' per-layer sparse kernels (model/exec.h "Sparse kernels
 * per layer") on pruned built-in models: 90 % global magnitude, 2:4 and 1:4 (compress/prune.h).
 *
 * - FP32: EFC_SPARSE=on and auto against off (the dense path), per element
 *   |got - dense| <= 1e-4 * (1 + max |dense|) (test_exec's bound against its double reference;
 *   the paths differ only in summation order), at odd batch sizes that take the sparse
 *   kernels' GEMV (n < 8), batch-SpMM (n >= 12) and multi-tile (n > 64) paths and partial
 *   im2col chunks; plus the mlp against a double-precision reference written here.
 * - INT8: on and auto give outputs identical to off, byte for byte.
 * - Both on every ISA cap the CPU runs (ref, avx2, avx512, avx512vnni, amx): the kernel table
 *   is filled once per process, so each cap runs in a child (this binary re-executed with
 *   --child and EFC_ISA set), which reports the level it ran.
 * - The layer listing against counts made here from the compiled weights in the order each
 *   kernel reads them (FP32 conv: c, ky, kx; INT8 conv: ky, kx, c; INT8 Dense after an NHWC
 *   map: h, w, c), the EFC_SPARSE values, and zero allocations per run with sparse layers.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "compress/prune.h"
#include "kernels/kernels.h"
#include "model/arch.h"
#include "model/exec.h"
#include "model/quant.h"

enum kind { K_P90, K_NM24, K_NM14 };
static const char *const kind_names[] = {"p90", "2:4", "1:4"};

/* ---- models ------------------------------------------------------------------------------ */

static struct efc_model *pruned(const char *arch, enum kind k)
{
    struct efc_model *m = NULL;
    struct efc_prune p;
    assert_int_equal(efc_arch_build(arch, 11, &m), EFC_OK);
    assert_int_equal(efc_prune_init(m, &p), EFC_OK);
    if (k == K_P90)
        assert_int_equal(efc_prune_magnitude(m, &p, 0.9, 0.0), EFC_OK);
    else
        assert_int_equal(efc_prune_nm(m, &p, k == K_NM24 ? 2 : 1, 4), EFC_OK);
    efc_prune_fini(&p);
    return m;
}

static void set_mode(const char *v)
{
    assert_int_equal(setenv("EFC_SPARSE", v, 1), 0);
}

struct ranges {
    float *lo, *hi;
};

static void observe(void *ctx, const struct efc_model *m, int32_t t, const float *d, int32_t batch)
{
    struct ranges *r = ctx;
    size_t n = efc_tensor_numel(&m->tensors[t]) * (size_t)batch;
    for (size_t i = 0; i < n; i++) {
        r->lo[t] = fminf(r->lo[t], d[i]);
        r->hi[t] = fmaxf(r->hi[t], d[i]);
    }
}

/* INT8 lowering with min-max ranges over n calibration samples (as test_quant.c), the FP32
 * pass dense so that the INT8 model does not depend on the sparse choice. */
static struct efc_model *quantize(const struct efc_model *m, const float *calib, int32_t n)
{
    struct efc_exec_opts o = {.max_batch = n};
    struct efc_quant_opts qo = {0};
    struct efc_quant_report rep;
    struct efc_exec *e = NULL;
    struct efc_model *q = NULL;
    const struct efc_model *c;
    const float *out;
    set_mode("off");
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    c = efc_exec_model(e);
    struct ranges r = {calloc((size_t)c->n_tensors, sizeof(float)),
                       calloc((size_t)c->n_tensors, sizeof(float))};
    float *scale = calloc((size_t)c->n_tensors, sizeof(float));
    int32_t *zp = calloc((size_t)c->n_tensors, sizeof(int32_t));
    efc_exec_set_observer(e, observe, &r);
    assert_int_equal(efc_exec_run(e, calib, n, &out), EFC_OK);
    for (int32_t t = 0; t < c->n_tensors; t++) {
        float lo = fminf(r.lo[t], 0.0f), hi = fmaxf(r.hi[t], 0.0f);
        if (hi - lo <= 0.0f)
            continue;
        scale[t] = (hi - lo) / 255.0f;
        zp[t] = (int32_t)lrintf(-lo / scale[t]);
    }
    if (efc_quant_lower(c, scale, zp, &qo, &q, &rep) != EFC_OK)
        fail_msg("lower: %s", efc_err_detail());
    free(r.lo);
    free(r.hi);
    free(scale);
    free(zp);
    efc_exec_free(e);
    return q;
}

static float *raw_input(int32_t per, int32_t batch, uint64_t seed)
{
    struct efc_rng r;
    float *x = malloc((size_t)per * (size_t)batch * sizeof(float));
    efc_rng_init(&r, seed);
    for (size_t i = 0; i < (size_t)per * (size_t)batch; i++)
        x[i] = (float)efc_rng_below(&r, 256);
    return x;
}

/* ---- comparisons ------------------------------------------------------------------------- */

/* Compile m under EFC_SPARSE=mode; run each batch of `batches` (the first is max_batch) on x;
 * outputs concatenated into out (the caller's buffer). Returns the sparse layer count. */
static int32_t run_mode(const struct efc_model *m, const char *mode, const int32_t *batches,
                        int32_t n_b, const float *x, float *out, size_t *n_out)
{
    struct efc_exec_opts o = {.max_batch = batches[0]};
    struct efc_exec *e = NULL;
    int32_t ns, n_out_per;
    size_t off = 0;
    set_mode(mode);
    if (efc_exec_new(m, &o, &e) != EFC_OK)
        fail_msg("compile %s under EFC_SPARSE=%s: %s", m->name, mode, efc_err_detail());
    n_out_per = efc_exec_output_size(e);
    for (int32_t i = 0; i < n_b; i++) {
        const float *y;
        assert_int_equal(efc_exec_run(e, x, batches[i], &y), EFC_OK);
        memcpy(out + off, y, (size_t)batches[i] * (size_t)n_out_per * sizeof(float));
        off += (size_t)batches[i] * (size_t)n_out_per;
    }
    *n_out = off;
    ns = efc_exec_n_sparse(e);
    efc_exec_free(e);
    return ns;
}

/* GEMM-shaped layers of a compiled model: Dense, and Conv2d with groups 1. */
static int32_t gemm_layers(const struct efc_model *c)
{
    int32_t n = 0;
    for (int32_t i = 0; i < c->n_nodes; i++)
        n += c->nodes[i].op == EFC_OP_DENSE ||
             (c->nodes[i].op == EFC_OP_CONV2D && c->nodes[i].a.groups == 1);
    return n;
}

/* on / auto against off on the same model; FP32 within the bound, INT8 identical. */
static void check_modes(const struct efc_model *m, int int8, const int32_t *batches, int32_t n_b,
                        const char *what)
{
    int32_t total = 0, ns_on, ns_off, n_gemm;
    size_t n_off, n_on, n_auto;
    struct efc_exec_opts o = {.max_batch = 1};
    struct efc_exec *e = NULL;
    float *x, *y_off, *y_on, *y_auto;
    double mx = 0.0, worst = 0.0;

    for (int32_t i = 0; i < n_b; i++)
        total += batches[i];
    set_mode("off");
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    x = raw_input(efc_exec_input_size(e), batches[0], 77);
    total *= efc_exec_output_size(e);
    n_gemm = gemm_layers(efc_exec_model(e));
    efc_exec_free(e);
    y_off = malloc((size_t)total * sizeof(float));
    y_on = malloc((size_t)total * sizeof(float));
    y_auto = malloc((size_t)total * sizeof(float));
    ns_off = run_mode(m, "off", batches, n_b, x, y_off, &n_off);
    ns_on = run_mode(m, "on", batches, n_b, x, y_on, &n_on);
    run_mode(m, "auto", batches, n_b, x, y_auto, &n_auto);
    assert_int_equal(ns_off, 0);
    assert_true(n_gemm > 0);
    if (ns_on != n_gemm)
        fail_msg("%s: %d of %d GEMM layers sparse under on", what, ns_on, n_gemm);
    assert_true(n_off == (size_t)total && n_on == n_off && n_auto == n_off);
    {
        size_t distinct = 0; /* identical outputs mean something only if they vary */
        for (size_t i = 1; i < n_off; i++)
            distinct += y_off[i] != y_off[0];
        if (distinct == 0)
            fail_msg("%s: constant outputs", what);
    }
    if (int8) {
        if (memcmp(y_off, y_on, n_off * sizeof(float)) ||
            memcmp(y_off, y_auto, n_off * sizeof(float)))
            fail_msg("%s: INT8 sparse outputs differ from the dense path", what);
        printf("  %s: %d of %d layers sparse under on, outputs identical\n", what, ns_on, n_gemm);
    } else {
        for (size_t i = 0; i < n_off; i++) {
            double d1 = fabs((double)y_on[i] - y_off[i]), d2 = fabs((double)y_auto[i] - y_off[i]);
            mx = fabs(y_off[i]) > mx ? fabs(y_off[i]) : mx;
            worst = d1 > worst ? d1 : worst;
            worst = d2 > worst ? d2 : worst;
            if (!isfinite(y_on[i]) || !isfinite(y_auto[i]))
                fail_msg("%s: non-finite output %zu", what, i);
        }
        if (worst > 1e-4 * (1.0 + mx))
            fail_msg("%s: FP32 sparse vs dense max diff %g (max |dense| %g)", what, worst, mx);
        printf("  %s: %d of %d layers sparse under on, max |sparse - dense| %.3g (bound %.3g)\n",
               what, ns_on, n_gemm, worst, 1e-4 * (1.0 + mx));
    }
    free(x);
    free(y_off);
    free(y_on);
    free(y_auto);
}

/* Every arch x pruning, FP32 and INT8, under the current kernel level (the child's cap). */
static void test_isa_child(void **state)
{
    static const int32_t fp32_b[] = {70, 13, 7, 1};
    static const int32_t int8_b[] = {13, 5, 1};
    static const int32_t big_b[] = {3, 1};
    static const char *const archs[] = {"mlp", "lenet5", "dwsep", "cnn-bn"};
    (void)state;
    printf("child isa=%s\n", efc_isa_name(efc_kernels_isa()));
    for (size_t a = 0; a < sizeof(archs) / sizeof(archs[0]); a++) {
        int big = !strcmp(archs[a], "cnn-bn"); /* ~11 M MACs per image: small batches */
        for (int k = K_P90; k <= K_NM14; k++) {
            char what[96];
            struct efc_model *m, *q;
            float *calib;
            struct efc_exec_opts o = {.max_batch = 1};
            struct efc_exec *e = NULL;
            if (big && k == K_NM14)
                continue; /* 2:4 already covers its N:M convs */
            m = pruned(archs[a], (enum kind)k);
            snprintf(what, sizeof(what), "%s %s fp32 isa %s", archs[a], kind_names[k],
                     efc_isa_name(efc_kernels_isa()));
            check_modes(m, 0, big ? big_b : fp32_b, big ? 2 : 4, what);
            set_mode("off");
            assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
            calib = raw_input(efc_exec_input_size(e), 8, 5);
            efc_exec_free(e);
            q = quantize(m, calib, 8);
            snprintf(what, sizeof(what), "%s %s int8 isa %s", archs[a], kind_names[k],
                     efc_isa_name(efc_kernels_isa()));
            check_modes(q, 1, big ? big_b : int8_b, big ? 2 : 3, what);
            free(calib);
            efc_model_free(q);
            efc_model_free(m);
        }
    }
    unsetenv("EFC_SPARSE");
}

/* Run ourselves as --child under EFC_ISA=isa; the child's stdout into out. */
static int run_child(const char *isa, char *out, size_t n_out)
{
    int fd[2], status = 0;
    size_t got = 0;
    ssize_t r;
    pid_t pid;
    assert_int_equal(pipe(fd), 0);
    fflush(stdout);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *args[] = {(char *)"test_exec_sparse", (char *)"--child", NULL};
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        setenv("EFC_ISA", isa, 1);
        unsetenv("EFC_SPARSE");
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(fd[1]);
    while (got + 1 < n_out && (r = read(fd[0], out + got, n_out - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    for (char sink[256]; read(fd[0], sink, sizeof(sink)) > 0;) /* drain what did not fit */
        ;
    close(fd[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Every ISA cap this CPU runs, each in its own process; the others are skipped (printed). */
static void test_every_isa(void **state)
{
    static const enum efc_isa caps[] = {EFC_ISA_REF, EFC_ISA_AVX2, EFC_ISA_AVX512,
                                        EFC_ISA_AVX512VNNI, EFC_ISA_AMX};
    enum efc_isa best = efc_isa_best();
    static char out[1 << 16];
    int ran = 0;
    (void)state;
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        char want[64];
        int rc;
        if (caps[i] != EFC_ISA_REF && (best == EFC_ISA_NEON || caps[i] > best)) {
            printf("SKIP isa %s (cpu best %s)\n", efc_isa_name(caps[i]), efc_isa_name(best));
            continue;
        }
        rc = run_child(efc_isa_name(caps[i]), out, sizeof(out));
        snprintf(want, sizeof(want), "child isa=%s\n", efc_isa_name(caps[i]));
        if (rc != 0 || !strstr(out, want) || !strstr(out, "OK ] test_isa_child"))
            fail_msg("isa %s: child exit %d, output:\n%s", efc_isa_name(caps[i]), rc, out);
        printf("%s", out);
        ran++;
    }
    assert_true(ran >= 1);
}

/* ---- FP32 mlp against a double-precision reference --------------------------------------- */

static void test_mlp_vs_double(void **state)
{
    static const int32_t batches[] = {13, 1};
    struct efc_model *m = pruned("mlp", K_P90);
    struct efc_exec_opts o = {.max_batch = 13};
    struct efc_exec *e = NULL;
    const struct efc_model *c;
    float *x = raw_input(784, 13, 3);
    double worst = 0.0, mx = 0.0;
    (void)state;
    set_mode("on");
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    assert_int_equal(efc_exec_n_sparse(e), 3);
    c = efc_exec_model(e);
    for (size_t bi = 0; bi < 2; bi++) {
        const float *y;
        int32_t b = batches[bi];
        assert_int_equal(efc_exec_run(e, x, b, &y), EFC_OK);
        for (int32_t s = 0; s < b; s++) {
            double h0[784], h1[300], h2[100], h3[10];
            float norm[784];
            const double *in = h0;
            double *outs[3] = {h1, h2, h3};
            int32_t dims[4] = {784, 300, 100, 10};
            efc_model_normalize(c, x + (size_t)s * 784, norm, 1);
            for (int i = 0; i < 784; i++)
                h0[i] = norm[i];
            for (int l = 0, di = 0; l < c->n_nodes; l++) {
                const struct efc_node *n = &c->nodes[l];
                const float *w, *bias;
                if (n->op != EFC_OP_DENSE)
                    continue;
                w = c->tensors[n->inputs[1]].data;
                bias = c->tensors[n->inputs[2]].data;
                for (int j = 0; j < dims[di + 1]; j++) {
                    double acc = bias[j];
                    for (int k = 0; k < dims[di]; k++)
                        acc += (double)w[(size_t)j * dims[di] + k] * in[k];
                    outs[di][j] = n->a.act == EFC_ACT_RELU && acc < 0 ? 0 : acc;
                }
                in = outs[di++];
            }
            for (int j = 0; j < 10; j++) {
                double d = fabs(y[(size_t)s * 10 + j] - h3[j]);
                worst = d > worst ? d : worst;
                mx = fabs(h3[j]) > mx ? fabs(h3[j]) : mx;
            }
        }
    }
    if (worst > 1e-4 * (1.0 + mx))
        fail_msg("mlp sparse vs double: max diff %g (max |ref| %g)", worst, mx);
    efc_exec_free(e);
    efc_model_free(m);
    free(x);
    unsetenv("EFC_SPARSE");
}

/* ---- listing ----------------------------------------------------------------------------- */

/* Finest N:M pattern (1:4 then 2:4) of w[rows][k] (float or int8), checked here. */
static int32_t nm_of(const void *w, int int8, int32_t rows, int32_t k)
{
    for (int32_t n = 1; n <= 2; n++) {
        int ok = 1;
        for (int32_t r = 0; r < rows && ok; r++)
            for (int32_t g = 0; g < k && ok; g += 4) {
                int32_t cnt = 0;
                for (int32_t t = g; t < g + 4 && t < k; t++) {
                    size_t i = (size_t)r * (size_t)k + (size_t)t;
                    cnt += int8 ? ((const int8_t *)w)[i] != 0 : ((const float *)w)[i] != 0.0f;
                }
                ok = cnt <= n;
            }
        if (ok)
            return n;
    }
    return 0;
}

/* The weights of GEMM node n of compiled model c in the order its kernel reads k. */
static void *kernel_order(const struct efc_model *c, const struct efc_node *n, int int8,
                          int32_t *rows, int32_t *k)
{
    const struct efc_tensor *wt = &c->tensors[n->inputs[1]];
    size_t es = int8 ? 1 : sizeof(float);
    uint8_t *o;
    const uint8_t *w = wt->data;
    *rows = wt->dims[0];
    *k = (int32_t)(efc_tensor_numel(wt) / (size_t)wt->dims[0]);
    o = malloc((size_t)*rows * (size_t)*k * es);
    memcpy(o, w, (size_t)*rows * (size_t)*k * es);
    /* FP32: W[out][in], and a conv's W[oc][c kh kw] is the im2col order */
    if (!int8)
        return o;
    if (n->op == EFC_OP_CONV2D) { /* OIHW -> O (ky kx c), the im2row order */
        int32_t C = wt->dims[1], KH = wt->dims[2], KW = wt->dims[3];
        for (int32_t r = 0; r < *rows; r++)
            for (int32_t ch = 0; ch < C; ch++)
                for (int32_t p = 0; p < KH * KW; p++)
                    o[(size_t)r * *k + (size_t)p * C + ch] = w[((size_t)r * C + ch) * KH * KW + p];
        return o;
    }
    /* Dense reading a Flatten of a u8 C x H x W map: columns (c, h, w) -> (h, w, c) */
    for (int32_t i = 0; i < c->n_nodes; i++) {
        const struct efc_node *f = &c->nodes[i];
        const struct efc_tensor *src;
        if (f->output != n->inputs[0] || f->op != EFC_OP_FLATTEN)
            continue;
        src = &c->tensors[f->inputs[0]];
        if (src->dtype == EFC_DTYPE_U8 && src->ndim == 3 && src->dims[0] > 1 &&
            src->dims[1] * src->dims[2] > 1) {
            int32_t C = src->dims[0], HW = src->dims[1] * src->dims[2];
            for (int32_t r = 0; r < *rows; r++)
                for (int32_t ch = 0; ch < C; ch++)
                    for (int32_t p = 0; p < HW; p++)
                        o[(size_t)r * *k + (size_t)p * C + ch] =
                            w[(size_t)r * *k + (size_t)ch * HW + p];
        }
    }
    return o;
}

/* The listing of e against what this test counts, under `mode` ("on", "off" or "auto"). */
static int32_t check_listing(const struct efc_exec *e, int int8, const char *mode)
{
    const struct efc_model *c = efc_exec_model(e);
    int32_t n, li = 0, n_sparse = 0, n_nm = 0;
    const struct efc_exec_layer *l = efc_exec_layers(e, &n);
    double max_d, f;
    efc_exec_sparse_threshold(efc_kernels_isa(), int8, &max_d, &f);
    for (int32_t i = 0; i < c->n_nodes; i++) {
        const struct efc_node *nd = &c->nodes[i];
        int32_t rows, k, nm;
        int64_t nnz = 0;
        void *w;
        double d, eff_nm, eff;
        char fmt[8];
        if (!(nd->op == EFC_OP_DENSE || (nd->op == EFC_OP_CONV2D && nd->a.groups == 1)))
            continue;
        assert_true(li < n);
        w = kernel_order(c, nd, int8, &rows, &k);
        for (size_t j = 0; j < (size_t)rows * (size_t)k; j++)
            nnz += int8 ? ((int8_t *)w)[j] != 0 : ((float *)w)[j] != 0.0f;
        nm = nm_of(w, int8, rows, k);
        free(w);
        d = (double)nnz / ((double)rows * k);
        assert_string_equal(l[li].name, nd->name);
        assert_int_equal(l[li].op, nd->op);
        assert_int_equal(l[li].int8, int8);
        assert_int_equal(l[li].rows, rows);
        assert_int_equal(l[li].k, k);
        assert_int_equal(l[li].nnz, nnz);
        assert_true(l[li].density == d);
        if (l[li].nm_n != nm || l[li].nm_m != (nm ? 4 : 0))
            fail_msg("%s: pattern %d:%d, counted %d:4", nd->name, l[li].nm_n, l[li].nm_m, nm);
        n_nm += nm != 0;
        eff_nm = nm ? nm / 4.0 * f : 2.0;
        eff = eff_nm <= d ? eff_nm : d;
        if (nm && eff_nm <= d)
            snprintf(fmt, sizeof(fmt), "%d:4", nm);
        else
            snprintf(fmt, sizeof(fmt), "csr");
        if (!strcmp(mode, "off") || (!strcmp(mode, "auto") && eff > max_d)) {
            assert_int_equal(l[li].sparse, 0);
            assert_string_equal(l[li].format, "");
        } else {
            assert_int_equal(l[li].sparse, 1);
            assert_string_equal(l[li].format, fmt);
            n_sparse++;
        }
        li++;
    }
    assert_int_equal(li, n);
    assert_int_equal(efc_exec_n_sparse(e), n_sparse);
    return n_nm;
}

static void test_listing(void **state)
{
    static const char *const archs[] = {"mlp", "lenet5", "dwsep", "cnn-bn"};
    static const char *const modes[] = {"off", "on", "auto"};
    static const enum efc_exec_sparse_mode mode_of[] = {EFC_EXEC_SPARSE_OFF, EFC_EXEC_SPARSE_ON,
                                                        EFC_EXEC_SPARSE_AUTO};
    int32_t nm_fp32_conv = 0, nm_int8_conv = 0;
    (void)state;
    for (size_t a = 0; a < 4; a++)
        for (int k = K_P90; k <= K_NM14; k++) {
            struct efc_model *m = pruned(archs[a], (enum kind)k), *q;
            struct efc_exec_opts o = {.max_batch = 2};
            struct efc_exec *e = NULL;
            float *calib = raw_input((int32_t)efc_tensor_numel(&m->tensors[m->input]), 4, 9);
            q = quantize(m, calib, 4);
            for (size_t md = 0; md < 3; md++)
                for (int int8 = 0; int8 <= 1; int8++) {
                    int32_t n;
                    const struct efc_exec_layer *l;
                    set_mode(modes[md]);
                    assert_int_equal(efc_exec_new(int8 ? q : m, &o, &e), EFC_OK);
                    assert_int_equal(efc_exec_sparse_mode_of(e), mode_of[md]);
                    check_listing(e, int8, modes[md]);
                    l = efc_exec_layers(e, &n);
                    /* count the convs whose pattern holds in the kernel's order */
                    for (int32_t i = 0; md == 0 && k == K_NM24 && i < n; i++)
                        if (l[i].op == EFC_OP_CONV2D && l[i].nm_n)
                            *(int8 ? &nm_int8_conv : &nm_fp32_conv) += 1;
                    efc_exec_free(e);
                }
            free(calib);
            efc_model_free(q);
            efc_model_free(m);
        }
    /* 2:4 along input channels holds for INT8 convs (im2row order: cnn-bn conv2, conv3, dwsep
     * pw1-3) but in the FP32 im2col order only for the 1x1 ones (dwsep pw1-3) */
    assert_int_equal(nm_int8_conv, 5);
    assert_int_equal(nm_fp32_conv, 3);
    unsetenv("EFC_SPARSE");
}

/* ---- EFC_SPARSE values, memory figures, allocations -------------------------------------- */

static void test_modes_and_memory(void **state)
{
    struct efc_model *m = pruned("mlp", K_P90);
    struct efc_exec_opts o = {.max_batch = 5};
    struct efc_exec *e = NULL;
    struct efc_exec_sparse_cfg cfg;
    size_t wb_off, wb_on;
    int32_t n;
    const struct efc_exec_layer *l;
    (void)state;

    static const char *const bad[] = {"maybe", "ON", "1.5", "-0.1", "0.3x", "nan"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set_mode(bad[i]);
        assert_int_equal(efc_exec_new(m, &o, &e), EFC_EINVAL);
        assert_null(e);
        assert_non_null(strstr(efc_err_detail(), "EFC_SPARSE"));
        assert_int_equal(efc_exec_sparse_cfg_from_env(&cfg), EFC_EINVAL);
    }
    set_mode("");
    assert_int_equal(efc_exec_sparse_cfg_from_env(&cfg), EFC_OK);
    assert_int_equal(cfg.mode, EFC_EXEC_SPARSE_AUTO);
    assert_true(cfg.max_density < 0);
    unsetenv("EFC_SPARSE");
    assert_int_equal(efc_exec_sparse_cfg_from_env(&cfg), EFC_OK);
    assert_int_equal(cfg.mode, EFC_EXEC_SPARSE_AUTO);
    assert_string_equal(efc_exec_sparse_mode_name(EFC_EXEC_SPARSE_OFF), "off");

    /* a density overrides the threshold: 0 keeps everything dense, 1 makes all sparse */
    set_mode("0");
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    assert_int_equal(efc_exec_n_sparse(e), 0);
    efc_exec_free(e);
    set_mode("1");
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    assert_int_equal(efc_exec_n_sparse(e), 3);
    efc_exec_free(e);
    /* between the layers' densities: exactly the layers at or below it */
    set_mode("off");
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    l = efc_exec_layers(e, &n);
    assert_int_equal(n, 3);
    {
        double d[3] = {l[0].density, l[1].density, l[2].density}, mid;
        char v[32];
        wb_off = efc_exec_weight_bytes(e);
        efc_exec_free(e);
        mid = (d[0] + d[1]) / 2; /* global magnitude pruning leaves fc1 the sparsest */
        assert_true(d[0] < d[1] && d[0] < d[2]);
        snprintf(v, sizeof(v), "%.17g", mid);
        set_mode(v);
        assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
        l = efc_exec_layers(e, &n);
        for (int i = 0; i < 3; i++) {
            double max_d, f, eff = d[i];
            efc_exec_sparse_threshold(efc_kernels_isa(), 0, &max_d, &f);
            if (l[i].nm_n && l[i].nm_n / 4.0 * f < eff)
                eff = l[i].nm_n / 4.0 * f;
            assert_int_equal(l[i].sparse, eff <= mid);
        }
        assert_int_equal(l[0].sparse, 1);
        efc_exec_free(e);
    }
    /* packed sparse weights replace the dense ones in the weight bytes */
    set_mode("on");
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    wb_on = efc_exec_weight_bytes(e);
    assert_true(wb_on < wb_off);
    assert_true(wb_on > 0);
    efc_exec_free(e);
    efc_model_free(m);
    unsetenv("EFC_SPARSE");
}

/* No allocation per run with sparse layers of every kind: FP32 Dense (GEMV and batch SpMM
 * with scratch), FP32 conv through im2col chunks and 1x1 direct, INT8 Dense / conv / 1x1. */
static void test_no_alloc(void **state)
{
    static const char *const archs[] = {"mlp", "lenet5", "dwsep"};
    (void)state;
    for (size_t a = 0; a < 3; a++) {
        struct efc_model *m = pruned(archs[a], K_NM24), *q;
        float *x = raw_input((int32_t)efc_tensor_numel(&m->tensors[m->input]), 20, 4);
        q = quantize(m, x, 4);
        for (int int8 = 0; int8 <= 1; int8++) {
            struct efc_exec_opts o = {.max_batch = 20};
            struct efc_exec *e = NULL;
            const float *y;
            uint64_t before;
            set_mode("on");
            assert_int_equal(efc_exec_new(int8 ? q : m, &o, &e), EFC_OK);
            assert_true(efc_exec_n_sparse(e) > 0);
            assert_int_equal(efc_exec_run(e, x, 20, &y), EFC_OK); /* warm-up (OpenBLAS) */
            before = efc_alloc_count();
            for (int32_t b = 1; b <= 20; b += 3)
                assert_int_equal(efc_exec_run(e, x, b, &y), EFC_OK);
            assert_int_equal(efc_exec_run(e, x, 20, &y), EFC_OK);
            if (efc_alloc_count() != before)
                fail_msg("%s %s: %llu allocations during runs", archs[a], int8 ? "int8" : "fp32",
                         (unsigned long long)(efc_alloc_count() - before));
            efc_exec_free(e);
        }
        free(x);
        efc_model_free(q);
        efc_model_free(m);
    }
    unsetenv("EFC_SPARSE");
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--child")) {
        const struct CMUnitTest child[] = {cmocka_unit_test(test_isa_child)};
        return cmocka_run_group_tests(child, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_isa), cmocka_unit_test(test_mlp_vs_double),
        cmocka_unit_test(test_listing),   cmocka_unit_test(test_modes_and_memory),
        cmocka_unit_test(test_no_alloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
