/* efc bench-kernels — every INT8 GEMM variant vs OpenBLAS sgemm on the same shapes, and every
 * sparse variant vs the dense kernel of its precision, same run.
 *
 * Dense shapes (m = output channels, n = rows, k = reduction, as in kernels.h): the
 * conv-as-GEMM layers of the built-in models, their dense layers as batch-1 GEMVs, 1 x 1024 x
 * 1024 and the squares 256 / 512 / 1024. Single thread. GOP/s counts 2 * m * n * k per call;
 * each figure is the median of several timed repetitions after warm-up. The OpenBLAS figure is
 * sgemm on the same shape (for n = 1 the faster of sgemm and sgemv, so the ratio is not
 * flattered) measured in the same process right after the variant.
 * Sparse rows (kernels/sparse.h): 1024 x 1024 weights at batch 1 (GEMV) and 64, CSR at
 * densities 0.5, 0.3, 0.2, 0.1, 0.05 and the 2:4 / 1:4 patterns; FP32 variants (row layout,
 * the Dense op) against OpenBLAS on the dense matrix (sgemv / sgemm, the faster for n = 1),
 * INT8 variants against the dense qgemm variant the table would pick at the same ISA level.
 * Their GOP/s counts the dense work 2 * m * n * k too, so ratio = dense time / sparse time; the
 * baseline is measured once per (variant, batch) in the same process. A "crossover" line per
 * (variant, batch) gives the highest density at which CSR still beats that dense baseline.
 * OpenBLAS fixes its core per process, so each variant is compared against the core efc wants
 * for that variant's ISA (efc_blas_core_wanted): variants whose core differs from this
 * process's run in a child (`/proc/self/exe --isa <isa> bench-kernels --rows-for <isa>`, which
 * efc_blas_setup re-executes with that core) and their rows are merged here; every row names the
 * core it was measured against.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "common/efc_time.h"
#include "kernels/blas.h"
#include "kernels/kernels.h"
#include "kernels/sparse.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static const struct {
    const char *name;
    enum efc_isa isa;
    const struct efc_k_qgemm *k;
} g_variants[] = {
#define EFC_KERNEL(op, isa, fn) {#fn, isa, &fn},
#include "kernels/kernels_qgemm.inc"
#undef EFC_KERNEL
};
#define N_VARIANTS (sizeof(g_variants) / sizeof(g_variants[0]))

static const struct {
    const char *name;
    int32_t m, n, k;
} g_shapes[] = {
    {"lenet5.conv1", 6, 784, 25}, {"lenet5.conv2", 16, 100, 150}, {"lenet5.fc1", 120, 1, 400},
    {"cnn-bn.conv1", 32, 784, 9}, {"cnn-bn.conv2", 32, 784, 288}, {"cnn-bn.conv3", 64, 196, 288},
    {"cnn-bn.fc1", 128, 1, 3136}, {"mlp.fc1", 300, 1, 784},       {"gemv1024", 1024, 1, 1024},
    {"square256", 256, 256, 256}, {"square512", 512, 512, 512},   {"square1024", 1024, 1024, 1024},
};
#define N_SHAPES (sizeof(g_shapes) / sizeof(g_shapes[0]))

static const struct {
    const char *name;
    enum efc_isa isa;
    const struct efc_k_spmm_f32 *kf; /* one of kf / ks is set */
    const struct efc_k_spmm_u8s8 *ks;
} g_sp_variants[] = {
#define EFC_KERNEL(op, isa, fn) SP_##op(#fn, isa, fn)
#define SP_spmm_f32(name, isa, fn) {name, isa, &fn, NULL},
#define SP_spmm_u8s8(name, isa, fn) {name, isa, NULL, &fn},
#include "kernels/kernels_sparse.inc"
#undef SP_spmm_f32
#undef SP_spmm_u8s8
#undef EFC_KERNEL
};
#define N_SP_VARIANTS (sizeof(g_sp_variants) / sizeof(g_sp_variants[0]))

/* Sparse shapes: out = in = 1024 (the GEMV shape), batch 1 and 64. */
#define SP_DIM 1024
static const struct {
    const char *name;
    int32_t n;
} g_sp_shapes[] = {{"sparse.gemv1024", 1}, {"sparse.b64.1024", 64}};
#define N_SP_SHAPES (sizeof(g_sp_shapes) / sizeof(g_sp_shapes[0]))

static const struct {
    const char *fmt;
    int32_t nm_n, nm_m;
    double density;
} g_sp_cfgs[] = {
    {"csr", 0, 0, 0.5},  {"csr", 0, 0, 0.3}, {"csr", 0, 0, 0.2},  {"csr", 0, 0, 0.1},
    {"csr", 0, 0, 0.05}, {"2:4", 2, 4, 0.5}, {"1:4", 1, 4, 0.25},
};
#define N_SP_CFGS (sizeof(g_sp_cfgs) / sizeof(g_sp_cfgs[0]))

static const char *g_filter; /* --shape: substring of the shape names to run */
static int g_sparse_only;    /* --sparse-only */

/* density < 0: a dense row (ob_* = OpenBLAS); else a sparse row (ob_* = the dense baseline). */
struct row {
    char kernel[64], isa[16], shape[32], core[32], ob_op[40], fmt[8];
    int32_t m, n, k;
    double gops, ob_gops, density;
};

static void help(void)
{
    printf("usage: efc bench-kernels [--json] [--time-ms T] [--shape S] [--sparse-only]\n\n"
           "  Every INT8 GEMM variant the CPU runs (capped by --isa) on the built-in models'\n"
           "  conv-as-GEMM shapes, batch-1 GEMVs and squares 256/512/1024, single thread,\n"
           "  vs OpenBLAS sgemm on the same shape in the same run (the OpenBLAS core wanted for\n"
           "  each variant's ISA: Haswell for avx2, SkylakeX/Cooperlake for avx512*).\n"
           "  Then every sparse variant on 1024 x 1024 weights (batch 1 and 64; CSR at densities\n"
           "  0.5 .. 0.05, 2:4, 1:4) vs the dense kernel of its precision (FP32: OpenBLAS; INT8:\n"
           "  the dense qgemm of the same ISA level), and the crossover density per variant.\n\n"
           "  --json        a JSON list of {kernel, isa, shape, m, n, k, gops, openblas_gops,\n"
           "                openblas_op, openblas_core, ratio}; sparse rows: {kernel, isa, shape,\n"
           "                m, n, k, format, density, sparsity, gops, us, baseline,\n"
           "                baseline_gops, baseline_core, ratio} (crossover lines on stderr)\n"
           "  --time-ms T   target time per measurement (default 200; sparse rows use half)\n"
           "  --shape S     only the shapes whose name contains S (e.g. cnn-bn, square, sparse)\n"
           "  --sparse-only only the sparse rows\n"
           "  --isa X       (global option) cap the variants and the OpenBLAS core\n");
}

/* ---------------------------------------------------------------------------- timing */

enum call_kind { CALL_QGEMM, CALL_SGEMM, CALL_SGEMV, CALL_SPMM_F32, CALL_SPMM_S8 };

struct bench_ctx {
    enum call_kind kind;
    int32_t m, n, k;
    const struct efc_k_qgemm *kern;
    struct efc_qgemm_w w;
    struct efc_requant rq;
    const uint8_t *x;
    uint8_t *y;
    const float *xf, *wf;
    float *yf;
    const struct efc_k_spmm_f32 *spf;
    const struct efc_k_spmm_u8s8 *sps;
    struct efc_spmm_w sw;
    float *scratch;
};

static void call_once(struct bench_ctx *c)
{
    switch (c->kind) {
    case CALL_QGEMM:
        c->kern->run(&c->w, &c->rq, c->n, c->x, (size_t)c->k, c->y, (size_t)c->m);
        break;
    case CALL_SGEMM: /* y[n][m] = x[n][k] * w[m][k]^T */
        efc_k_sgemm(false, true, c->n, c->m, c->k, 1.0f, c->xf, c->k, c->wf, c->k, 0.0f, c->yf,
                    c->m);
        break;
    case CALL_SGEMV: /* y[m] = w[m][k] * x[k] */
        efc_k_sgemv(false, c->m, c->k, 1.0f, c->wf, c->k, c->xf, 0.0f, c->yf);
        break;
    case CALL_SPMM_F32: /* the Dense op: row layout, no bias */
        c->spf->run(&c->sw, c->n, c->xf, (size_t)c->k, NULL, EFC_K_ACT_NONE, c->yf, (size_t)c->m,
                    c->scratch);
        break;
    case CALL_SPMM_S8:
        c->sps->run(&c->sw, &c->rq, c->n, c->x, (size_t)c->k, c->y, (size_t)c->m);
        break;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* GOP/s of 2 * m * n * k: warm-up, then the median of up to 21 repetitions, each a loop of
 * enough calls to last >= 1 ms, within about budget_s. */
static double measure(struct bench_ctx *c, double budget_s)
{
    double t0 = efc_time_s(), t1;
    int calls = 0;
    do {
        call_once(c);
        calls++;
        t1 = efc_time_s();
    } while (calls < 2 || t1 - t0 < 0.02);
    double per = (t1 - t0) / calls;
    int inner = per >= 1e-3 ? 1 : (int)(1e-3 / per) + 1;
    int reps = (int)(budget_s / (per * inner));
    reps = reps < 3 ? 3 : reps > 21 ? 21 : reps;
    double s[21];
    for (int r = 0; r < reps; r++) {
        double a = efc_time_s();
        for (int i = 0; i < inner; i++)
            call_once(c);
        s[r] = (efc_time_s() - a) / inner;
    }
    qsort(s, (size_t)reps, sizeof(double), cmp_double);
    double med = s[reps / 2];
    return 2.0 * c->m * (double)c->n * c->k / med * 1e-9;
}

/* One variant on one shape, then OpenBLAS on the same data. */
static enum efc_status bench_one(size_t v, size_t s, double budget_s, struct row *out)
{
    struct bench_ctx c;
    struct efc_rng r;
    enum efc_status st = EFC_OK;
    const int32_t m = g_shapes[s].m, n = g_shapes[s].n, k = g_shapes[s].k;
    uint8_t *x = NULL, *y = NULL;
    int8_t *w = NULL;
    int32_t *mult = NULL, *shift = NULL, *bias = NULL;
    float *xf = NULL, *wf = NULL, *yf = NULL;

    memset(&c, 0, sizeof(c));
    memset(out, 0, sizeof(*out));
    efc_rng_init(&r, 0x5eed + s);
    x = efc_malloc((size_t)n * k);
    y = efc_malloc((size_t)n * m);
    w = efc_malloc((size_t)m * k);
    mult = efc_malloc((size_t)m * sizeof(*mult));
    shift = efc_malloc((size_t)m * sizeof(*shift));
    bias = efc_malloc((size_t)m * sizeof(*bias));
    xf = efc_malloc_aligned(64, (size_t)n * k * sizeof(float));
    wf = efc_malloc_aligned(64, (size_t)m * k * sizeof(float));
    yf = efc_malloc_aligned(64, (size_t)n * m * sizeof(float));
    if (!x || !y || !w || !mult || !shift || !bias || !xf || !wf || !yf) {
        st = efc_errf(EFC_ENOMEM, "bench-kernels: buffers for %s", g_shapes[s].name);
        goto out;
    }
    for (size_t i = 0; i < (size_t)n * k; i++) {
        x[i] = (uint8_t)efc_rng_below(&r, 256);
        xf[i] = (float)x[i] - 128.0f;
    }
    for (size_t i = 0; i < (size_t)m * k; i++) {
        w[i] = (int8_t)((int32_t)efc_rng_below(&r, 255) - 127);
        wf[i] = (float)w[i] * (1.0f / 127.0f);
    }
    for (int32_t j = 0; j < m; j++) {
        bias[j] = (int32_t)efc_rng_below(&r, 20001) - 10000;
        if ((st = efc_k_requant_make(1e-4 * (1.0 + efc_rng_uniform(&r)), &mult[j], &shift[j])))
            goto out;
    }
    c.m = m;
    c.n = n;
    c.k = k;
    c.kern = g_variants[v].k;
    c.rq.mult = mult;
    c.rq.shift = shift;
    c.rq.per_tensor = 0;
    c.rq.zp_out = 3;
    c.rq.lo = 3;
    c.rq.hi = 255;
    c.x = x;
    c.y = y;
    c.xf = xf;
    c.wf = wf;
    c.yf = yf;
    if ((st = c.kern->pack(m, k, w, bias, 128, &c.w)))
        goto out;
    c.kind = CALL_QGEMM;
    out->gops = measure(&c, budget_s);
    c.kind = CALL_SGEMM;
    out->ob_gops = measure(&c, budget_s);
    snprintf(out->ob_op, sizeof(out->ob_op), "sgemm");
    if (n == 1) {
        c.kind = CALL_SGEMV;
        double g = measure(&c, budget_s);
        if (g > out->ob_gops) {
            out->ob_gops = g;
            snprintf(out->ob_op, sizeof(out->ob_op), "sgemv");
        }
    }
    out->density = -1.0;
    snprintf(out->kernel, sizeof(out->kernel), "%s", g_variants[v].name);
    snprintf(out->isa, sizeof(out->isa), "%s", efc_isa_name(g_variants[v].isa));
    snprintf(out->shape, sizeof(out->shape), "%s", g_shapes[s].name);
    snprintf(out->core, sizeof(out->core), "%s", efc_blas_core());
    out->m = m;
    out->n = n;
    out->k = k;
out:
    efc_qgemm_w_fini(&c.w);
    efc_free(x);
    efc_free(y);
    efc_free(w);
    efc_free(mult);
    efc_free(shift);
    efc_free(bias);
    efc_free(xf);
    efc_free(wf);
    efc_free(yf);
    return st;
}

/* ------------------------------------------------------------------------- sparse rows */

/* The dense qgemm the table would pick at level `isa` (the highest one within it). */
static const struct efc_k_qgemm *dense_qgemm_at(enum efc_isa isa, const char **name)
{
    size_t best = 0;
    for (size_t v = 0; v < N_VARIANTS; v++)
        if ((g_variants[v].isa == EFC_ISA_REF || g_variants[v].isa <= isa) &&
            g_variants[v].isa >= g_variants[best].isa)
            best = v;
    *name = g_variants[best].name;
    return g_variants[best].k;
}

/* One sparse variant on one batch: the dense baseline once, then every sparse config. Rows go
 * to out[0 .. N_SP_CFGS). */
static enum efc_status bench_sparse(size_t v, size_t s, double budget_s, struct row *out)
{
    struct bench_ctx c;
    struct efc_rng r;
    enum efc_status st = EFC_OK;
    const int32_t m = SP_DIM, k = SP_DIM, n = g_sp_shapes[s].n;
    const int is_f32 = g_sp_variants[v].kf != NULL;
    const size_t nx = (size_t)n * k, ny = (size_t)n * m, nw = (size_t)m * k;
    uint8_t *x = efc_malloc(nx), *y = efc_malloc(ny);
    int8_t *w = efc_malloc(nw);
    int32_t *mult = efc_malloc((size_t)m * sizeof(int32_t));
    int32_t *shift = efc_malloc((size_t)m * sizeof(int32_t));
    int32_t *bias = efc_malloc((size_t)m * sizeof(int32_t));
    float *xf = efc_malloc_aligned(64, nx * sizeof(float));
    float *wf = efc_malloc_aligned(64, nw * sizeof(float));
    float *yf = efc_malloc_aligned(64, ny * sizeof(float));
    const size_t nsc = efc_k_spmm_f32_scratch(m, k, n);
    float *scratch = nsc ? efc_malloc_aligned(64, nsc * sizeof(float)) : NULL;
    double ob_gops = 0.0;
    char ob_op[40];

    memset(&c, 0, sizeof(c));
    if (!x || !y || !w || !mult || !shift || !bias || !xf || !wf || !yf || (nsc && !scratch)) {
        st = efc_errf(EFC_ENOMEM, "bench-kernels: buffers for %s", g_sp_shapes[s].name);
        goto out;
    }
    efc_rng_init(&r, 0x5eed5 + s);
    for (size_t i = 0; i < nx; i++) {
        x[i] = (uint8_t)efc_rng_below(&r, 256);
        xf[i] = (float)x[i] - 128.0f;
    }
    for (int32_t j = 0; j < m; j++) {
        bias[j] = (int32_t)efc_rng_below(&r, 20001) - 10000;
        if ((st = efc_k_requant_make(1e-4 * (1.0 + efc_rng_uniform(&r)), &mult[j], &shift[j])))
            goto out;
    }
    c.m = m;
    c.n = n;
    c.k = k;
    c.rq = (struct efc_requant){mult, shift, 0, 3, 3, 255};
    c.x = x;
    c.y = y;
    c.xf = xf;
    c.wf = wf;
    c.yf = yf;
    c.scratch = scratch;

    /* Dense baseline on a fully dense matrix (its time does not depend on the values). */
    for (size_t i = 0; i < nw; i++) {
        w[i] = (int8_t)((int32_t)efc_rng_below(&r, 255) - 127);
        wf[i] = (float)w[i] * (1.0f / 127.0f);
    }
    if (is_f32) {
        c.kind = CALL_SGEMM;
        ob_gops = measure(&c, budget_s);
        snprintf(ob_op, sizeof(ob_op), "sgemm");
        if (n == 1) {
            c.kind = CALL_SGEMV;
            double g = measure(&c, budget_s);
            if (g > ob_gops) {
                ob_gops = g;
                snprintf(ob_op, sizeof(ob_op), "sgemv");
            }
        }
    } else {
        const char *qname;
        c.kern = dense_qgemm_at(g_sp_variants[v].isa, &qname);
        if ((st = c.kern->pack(m, k, w, bias, 128, &c.w)))
            goto out;
        c.kind = CALL_QGEMM;
        ob_gops = measure(&c, budget_s);
        efc_qgemm_w_fini(&c.w);
        snprintf(ob_op, sizeof(ob_op), "%s", qname + strlen("efc_k_"));
    }

    for (size_t q = 0; q < N_SP_CFGS; q++) {
        const struct efc_sp_fmt fmt = {g_sp_cfgs[q].nm_n, g_sp_cfgs[q].nm_m};
        const double d = g_sp_cfgs[q].density;
        /* CSR: each weight non-zero with probability d; N:M: N random columns per group. */
        for (size_t i = 0; i < nw; i++)
            w[i] = 0;
        if (fmt.nm_m == 0) {
            for (size_t i = 0; i < nw; i++)
                if (efc_rng_uniform(&r) < d)
                    w[i] = (int8_t)(1 + (int32_t)efc_rng_below(&r, 127));
        } else {
            for (size_t g0 = 0; g0 < nw; g0 += (size_t)fmt.nm_m) {
                int32_t placed = 0;
                while (placed < fmt.nm_n) {
                    size_t i = g0 + efc_rng_below(&r, (uint32_t)fmt.nm_m);
                    if (w[i] == 0) {
                        w[i] = (int8_t)(1 + (int32_t)efc_rng_below(&r, 127));
                        placed++;
                    }
                }
            }
        }
        for (size_t i = 0; i < nw; i++) {
            if (w[i] != 0 && efc_rng_below(&r, 2))
                w[i] = (int8_t)-w[i];
            wf[i] = (float)w[i] * (1.0f / 127.0f);
        }
        if (is_f32) {
            c.spf = g_sp_variants[v].kf;
            st = c.spf->pack(m, k, wf, fmt.nm_m ? &fmt : NULL, &c.sw);
            c.kind = CALL_SPMM_F32;
        } else {
            c.sps = g_sp_variants[v].ks;
            st = c.sps->pack(m, k, w, bias, 128, fmt.nm_m ? &fmt : NULL, &c.sw);
            c.kind = CALL_SPMM_S8;
        }
        if (st)
            goto out;
        struct row *o = &out[q];
        memset(o, 0, sizeof(*o));
        o->gops = measure(&c, budget_s);
        efc_spmm_w_fini(&c.sw);
        o->ob_gops = ob_gops;
        o->density = d;
        o->m = m;
        o->n = n;
        o->k = k;
        snprintf(o->kernel, sizeof(o->kernel), "%s", g_sp_variants[v].name);
        snprintf(o->isa, sizeof(o->isa), "%s", efc_isa_name(g_sp_variants[v].isa));
        snprintf(o->shape, sizeof(o->shape), "%s", g_sp_shapes[s].name);
        snprintf(o->core, sizeof(o->core), "%s", efc_blas_core());
        snprintf(o->ob_op, sizeof(o->ob_op), "%s", ob_op);
        snprintf(o->fmt, sizeof(o->fmt), "%s", g_sp_cfgs[q].fmt);
    }
out:
    efc_spmm_w_fini(&c.sw);
    efc_qgemm_w_fini(&c.w);
    efc_free(x);
    efc_free(y);
    efc_free(w);
    efc_free(mult);
    efc_free(shift);
    efc_free(bias);
    efc_free(xf);
    efc_free(wf);
    efc_free(yf);
    efc_free(scratch);
    return st;
}

/* ------------------------------------------------------------------ rows, child processes */

struct rows {
    struct row *r;
    size_t n, cap;
};

static enum efc_status rows_push(struct rows *rs, const struct row *r)
{
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 32;
        struct row *p = efc_realloc(rs->r, cap * sizeof(*p));
        if (p == NULL)
            return efc_errf(EFC_ENOMEM, "bench-kernels: rows");
        rs->r = p;
        rs->cap = cap;
    }
    rs->r[rs->n++] = *r;
    return EFC_OK;
}

/* The private row format between parent and child: tab-separated, one row per line. */
static void row_print_internal(const struct row *r)
{
    printf("ROW\t%s\t%s\t%s\t%d\t%d\t%d\t%.6f\t%.6f\t%s\t%s\t%s\t%.6f\n", r->kernel, r->isa,
           r->shape, (int)r->m, (int)r->n, (int)r->k, r->gops, r->ob_gops, r->core, r->ob_op,
           r->fmt[0] ? r->fmt : "-", r->density);
    fflush(stdout);
}

static int field_copy(char *dst, size_t cap, const char *s, size_t len)
{
    if (len == 0 || len >= cap)
        return -1;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

static int row_parse_internal(char *line, struct row *r)
{
    char *f[13];
    size_t nf = 0;
    char *p = line;
    memset(r, 0, sizeof(*r));
    line[strcspn(line, "\r\n")] = '\0';
    while (nf < 13) {
        f[nf++] = p;
        char *t = strchr(p, '\t');
        if (t == NULL)
            break;
        *t = '\0';
        p = t + 1;
    }
    if (nf != 13 || strcmp(f[0], "ROW") != 0)
        return -1;
    if (field_copy(r->kernel, sizeof(r->kernel), f[1], strlen(f[1])) ||
        field_copy(r->isa, sizeof(r->isa), f[2], strlen(f[2])) ||
        field_copy(r->shape, sizeof(r->shape), f[3], strlen(f[3])) ||
        field_copy(r->core, sizeof(r->core), f[9], strlen(f[9])) ||
        field_copy(r->ob_op, sizeof(r->ob_op), f[10], strlen(f[10])) ||
        field_copy(r->fmt, sizeof(r->fmt), f[11], strlen(f[11])))
        return -1;
    if (strcmp(r->fmt, "-") == 0)
        r->fmt[0] = '\0';
    char *end;
    long v[3];
    for (int i = 0; i < 3; i++) {
        errno = 0;
        v[i] = strtol(f[4 + i], &end, 10);
        if (errno || *end || v[i] < 1 || v[i] > 1 << 20)
            return -1;
    }
    r->m = (int32_t)v[0];
    r->n = (int32_t)v[1];
    r->k = (int32_t)v[2];
    r->gops = strtod(f[7], &end);
    if (*end)
        return -1;
    r->ob_gops = strtod(f[8], &end);
    if (*end)
        return -1;
    r->density = strtod(f[12], &end);
    if (*end)
        return -1;
    return 0;
}

/* Run `/proc/self/exe --isa <isa> bench-kernels --rows-for <isa> --time-ms T` and collect its
 * rows. */
static enum efc_status run_child(enum efc_isa isa, long time_ms, struct rows *rs)
{
    int fd[2];
    char tms[32];
    const char *name = efc_isa_name(isa);
    snprintf(tms, sizeof(tms), "%ld", time_ms);
    fflush(NULL);
    if (pipe(fd) != 0)
        return efc_errf(EFC_EIO, "bench-kernels: pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return efc_errf(EFC_EIO, "bench-kernels: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        /* clang-format off */
        char *argv[] = {"efc",
                        "--isa",
                        (char *)name,
                        "bench-kernels",
                        "--rows-for",
                        (char *)name,
                        "--time-ms",
                        tms,
                        NULL, /* up to three more options, then the terminator */
                        NULL,
                        NULL,
                        NULL};
        /* clang-format on */
        int a = 8;
        if (g_sparse_only)
            argv[a++] = "--sparse-only";
        if (g_filter != NULL) {
            argv[a++] = "--shape";
            argv[a++] = (char *)g_filter;
        }
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        setenv("EFC_ISA", name, 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    enum efc_status st = EFC_OK;
    if (f == NULL) {
        close(fd[0]);
        st = efc_errf(EFC_EIO, "bench-kernels: fdopen: %s", strerror(errno));
    } else {
        char line[640];
        while (fgets(line, sizeof(line), f) != NULL) {
            struct row r;
            if (row_parse_internal(line, &r) == 0 && st == EFC_OK)
                st = rows_push(rs, &r);
        }
        fclose(f);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (st == EFC_OK && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
        st = efc_errf(EFC_EINTERNAL, "bench-kernels: child for --isa %s failed (status %d)", name,
                      status);
    return st;
}

static int isa_runs_on(enum efc_isa isa, enum efc_isa level)
{
    if (isa == EFC_ISA_REF)
        return 1;
    if (isa == EFC_ISA_NEON || level == EFC_ISA_NEON)
        return isa == level;
    return isa <= level;
}

/* Is a variant of `isa` for this process (all of isa `only` if >= 0, else those whose wanted
 * OpenBLAS core is this process's core)? */
static int variant_here(enum efc_isa isa, int only)
{
    if (!isa_runs_on(isa, efc_kernels_isa()))
        return 0;
    return only >= 0 ? (int)isa == only
                     : strcasecmp(efc_blas_core_wanted(isa), efc_blas_core()) == 0;
}

static enum efc_status row_out(const struct row *r, int internal, struct rows *rs)
{
    if (internal) {
        row_print_internal(r);
        return EFC_OK;
    }
    return rows_push(rs, r);
}

/* Variants for this process (variant_here): dense rows, then sparse rows. */
static enum efc_status bench_here(int only, double budget_s, int internal, struct rows *rs)
{
    enum efc_status st;
    for (size_t v = 0; v < N_VARIANTS && !g_sparse_only; v++) {
        if (!variant_here(g_variants[v].isa, only))
            continue;
        for (size_t s = 0; s < N_SHAPES; s++) {
            struct row r;
            if (g_filter != NULL && strstr(g_shapes[s].name, g_filter) == NULL)
                continue;
            if ((st = bench_one(v, s, budget_s, &r)) || (st = row_out(&r, internal, rs)))
                return st;
        }
    }
    /* Sparse rows at half the time per measurement: 115 measurements otherwise dominate. */
    for (size_t v = 0; v < N_SP_VARIANTS; v++) {
        if (!variant_here(g_sp_variants[v].isa, only))
            continue;
        for (size_t s = 0; s < N_SP_SHAPES; s++) {
            struct row r[N_SP_CFGS];
            if (g_filter != NULL && strstr(g_sp_shapes[s].name, g_filter) == NULL)
                continue;
            if ((st = bench_sparse(v, s, budget_s * 0.5, r)))
                return st;
            for (size_t q = 0; q < N_SP_CFGS; q++)
                if ((st = row_out(&r[q], internal, rs)))
                    return st;
        }
    }
    return EFC_OK;
}

static double row_ratio(const struct row *r)
{
    return r->ob_gops > 0 ? r->gops / r->ob_gops : 0.0;
}

static void print_json(const struct rows *rs)
{
    printf("[\n");
    for (size_t i = 0; i < rs->n; i++) {
        const struct row *r = &rs->r[i];
        printf("  {\"kernel\": ");
        cli_json_str(stdout, r->kernel);
        printf(", \"isa\": ");
        cli_json_str(stdout, r->isa);
        printf(", \"shape\": ");
        cli_json_str(stdout, r->shape);
        printf(", \"m\": %d, \"n\": %d, \"k\": %d, ", (int)r->m, (int)r->n, (int)r->k);
        if (r->density < 0) {
            printf("\"gops\": %.3f, \"openblas_gops\": %.3f, \"openblas_op\": ", r->gops,
                   r->ob_gops);
            cli_json_str(stdout, r->ob_op);
            printf(", \"openblas_core\": ");
            cli_json_str(stdout, r->core);
        } else {
            printf("\"format\": ");
            cli_json_str(stdout, r->fmt);
            printf(", \"density\": %.4f, \"sparsity\": %.4f, \"gops\": %.3f, \"us\": %.3f, "
                   "\"baseline\": ",
                   r->density, 1.0 - r->density, r->gops,
                   r->gops > 0 ? 2e-3 * r->m * (double)r->n * r->k / r->gops : 0.0);
            cli_json_str(stdout, r->ob_op);
            printf(", \"baseline_gops\": %.3f, \"baseline_core\": ", r->ob_gops);
            cli_json_str(stdout, r->core);
        }
        printf(", \"ratio\": %.3f}%s\n", row_ratio(r), i + 1 < rs->n ? "," : "");
    }
    printf("]\n");
}

/* Per (sparse variant, shape): the highest CSR density of the grid at which sparse beats its
 * dense baseline, and the crossing interpolated linearly between the last winning and the first
 * losing grid densities. */
static void print_crossover(FILE *f, const struct rows *rs)
{
    int header = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const struct row *a = &rs->r[i];
        int first = 1;
        if (a->density < 0 || strcmp(a->fmt, "csr") != 0)
            continue;
        for (size_t q = 0; q < i && first; q++)
            if (rs->r[q].density >= 0 && strcmp(rs->r[q].fmt, "csr") == 0 &&
                strcmp(rs->r[q].kernel, a->kernel) == 0 && strcmp(rs->r[q].shape, a->shape) == 0)
                first = 0;
        if (!first)
            continue;
        double win_d = -1, win_r = 0, lose_d = -1, lose_r = 0;
        for (size_t q = i; q < rs->n; q++) {
            const struct row *b = &rs->r[q];
            if (b->density < 0 || strcmp(b->fmt, "csr") != 0 || strcmp(b->kernel, a->kernel) ||
                strcmp(b->shape, a->shape))
                continue;
            const double rt = row_ratio(b);
            if (rt > 1.0 && b->density > win_d) {
                win_d = b->density;
                win_r = rt;
            }
        }
        for (size_t q = i; q < rs->n; q++) { /* the lowest losing density above win_d */
            const struct row *b = &rs->r[q];
            if (b->density < 0 || strcmp(b->fmt, "csr") != 0 || strcmp(b->kernel, a->kernel) ||
                strcmp(b->shape, a->shape) || b->density <= win_d || row_ratio(b) > 1.0)
                continue;
            if (lose_d < 0 || b->density < lose_d) {
                lose_d = b->density;
                lose_r = row_ratio(b);
            }
        }
        if (!header) {
            fprintf(f, "crossover density per ISA (highest CSR density at which sparse beats the "
                       "dense baseline of its precision, same run):\n");
            header = 1;
        }
        fprintf(f, "  %-30s %-11s %-16s vs %-22s ", a->kernel, a->isa, a->shape, a->ob_op);
        if (win_d < 0)
            fprintf(f, "none: slower at every density down to 0.05\n");
        else if (lose_d < 0)
            fprintf(f, ">= %.2f (faster at every density measured, %.2fx at %.2f)\n", win_d, win_r,
                    win_d);
        else
            fprintf(f, "%.2f on the grid (%.2fx), ~%.2f interpolated (%.2fx at %.2f)\n", win_d,
                    win_r, win_d + (lose_d - win_d) * (win_r - 1.0) / (win_r - lose_r), lose_r,
                    lose_d);
    }
}

static void print_table(const struct rows *rs)
{
    const struct efc_cpu_features *f = efc_cpu_features();
    int dense = 0, sparse = 0;
    for (size_t i = 0; i < rs->n; i++) {
        if (rs->r[i].density < 0)
            dense = 1;
        else
            sparse = 1;
    }
    printf("cpu: %s; single thread; GOP/s = 2*m*n*k per call (median)\n", f->brand);
    if (dense) {
        printf("%-30s %-11s %-13s %5s %5s %5s %9s %9s %-5s %-10s %6s\n", "kernel", "isa", "shape",
               "m", "n", "k", "GOP/s", "BLAS", "op", "core", "ratio");
        for (size_t i = 0; i < rs->n; i++) {
            const struct row *r = &rs->r[i];
            if (r->density >= 0)
                continue;
            printf("%-30s %-11s %-13s %5d %5d %5d %9.2f %9.2f %-5s %-10s %6.2f\n", r->kernel,
                   r->isa, r->shape, (int)r->m, (int)r->n, (int)r->k, r->gops, r->ob_gops, r->ob_op,
                   r->core, row_ratio(r));
        }
    }
    if (sparse) {
        printf("%ssparse: %d x %d weights; GOP/s counts the dense work 2*m*n*k, so ratio = dense "
               "time / sparse time\n",
               dense ? "\n" : "", SP_DIM, SP_DIM);
        printf("%-30s %-11s %-16s %-4s %7s %9s %9s %-24s %9s %-10s %6s\n", "kernel", "isa", "shape",
               "fmt", "density", "us", "GOP/s", "baseline", "base", "core", "ratio");
        for (size_t i = 0; i < rs->n; i++) {
            const struct row *r = &rs->r[i];
            if (r->density < 0)
                continue;
            printf("%-30s %-11s %-16s %-4s %7.2f %9.2f %9.2f %-24s %9.2f %-10s %6.2f\n", r->kernel,
                   r->isa, r->shape, r->fmt, r->density,
                   r->gops > 0 ? 2e-3 * r->m * (double)r->n * r->k / r->gops : 0.0, r->gops,
                   r->ob_op, r->ob_gops, r->core, row_ratio(r));
        }
        printf("\n");
        print_crossover(stdout, rs);
    }
}

int cmd_bench_kernels(int argc, char **argv)
{
    /* clang-format off */
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"time-ms", required_argument, 0, 't'},
        {"shape", required_argument, 0, 's'},
        {"sparse-only", no_argument, 0, 'S'},
        {"rows-for", required_argument, 0, 'R'}, /* internal: child mode */
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    /* clang-format on */
    struct rows rs = {0};
    int json = 0, c, only = -1, rc = 1;
    long time_ms = 200;
    enum efc_status st;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 't': {
            char *end;
            errno = 0;
            time_ms = strtol(optarg, &end, 10);
            if (errno || *end || time_ms < 1 || time_ms > 60000)
                return cli_usage_error("bench-kernels", "--time-ms: integer in [1, 60000]");
            break;
        }
        case 's':
            g_filter = optarg;
            break;
        case 'S':
            g_sparse_only = 1;
            break;
        case 'R': {
            enum efc_isa isa;
            if (efc_isa_parse(optarg, &isa) != EFC_OK)
                return cli_fail("bench-kernels", EFC_EINVAL);
            only = (int)isa;
            break;
        }
        case 'h':
            help();
            return 0;
        default:
            return cli_usage_error("bench-kernels", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("bench-kernels", "unexpected argument '%s'", argv[optind]);

    efc_blas_set_threads(1);
    const double budget = (double)time_ms * 1e-3;
    if (only >= 0) { /* child: rows for one ISA, in the private format */
        st = bench_here(only, budget, 1, NULL);
        return st == EFC_OK ? 0 : cli_fail("bench-kernels", st);
    }

    /* Lower ISAs first (children), then this process's own variants; the ISAs of the dense and
     * of the sparse lists. */
    const enum efc_isa level = efc_kernels_isa();
    const char *core = efc_blas_core();
    int spawned[32] = {0};
    for (size_t v = 0; v < N_VARIANTS + N_SP_VARIANTS; v++) {
        enum efc_isa isa = v < N_VARIANTS ? g_variants[v].isa : g_sp_variants[v - N_VARIANTS].isa;
        if (!isa_runs_on(isa, level) || strcasecmp(efc_blas_core_wanted(isa), core) == 0)
            continue;
        if ((int)isa < 32 && spawned[isa])
            continue;
        if ((int)isa < 32)
            spawned[isa] = 1;
        if (!json)
            fprintf(stderr, "bench-kernels: %s variants in a child process (OpenBLAS %s)\n",
                    efc_isa_name(isa), efc_blas_core_wanted(isa));
        if ((st = run_child(isa, time_ms, &rs)))
            goto out;
    }
    if ((st = bench_here(-1, budget, 0, &rs)))
        goto out;
    if (json) {
        print_json(&rs);
        print_crossover(stderr, &rs);
    } else {
        print_table(&rs);
    }
    rc = 0;
out:
    if (rc)
        rc = cli_fail("bench-kernels", st);
    efc_free(rs.r);
    return rc;
}
