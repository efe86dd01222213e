/* test_kernels_sparse.c — sparse formats and every kernels_sparse.inc variant (kernels/sparse.h).
 *
 * 1. Packing: shapes, zero points and patterns refused with EFC_EINVAL (the detail of an N:M
 *    violation names the first violating row and group), *pw zeroed on error, nnz / format /
 *    isa recorded, fini twice is harmless.
 * 2. FP32: every variant the CPU runs (row layout `run` and column layout `run_t`) against a
 *    naive dense formula in double written here, per element |got - want| <= 1e-5 * (|b| +
 *    sum_k |W x|) (the bound of test_kernels_f32.c), over out, in in {1, 3, 17, 63, 100, 1023}
 *    (+ 1024 x 1024), n in {1, 2, 5, 33} (+ 70: several SpMM tiles), densities 0 (empty), 0.05,
 *    0.1, 0.3, 0.5, 1 and rows left all-zero, CSR / 2:4 / 1:4 patterns, bias or not, every
 *    activation, row strides above the width. x ends exactly at its last element (ASan sees an
 *    over-read), y has guard values after every row and after the last one.
 * 3. INT8: every variant against the dense efc_k_qgemm_u8s8__ref on the same weights,
 *    bit-exact, on the same grid, zero points 0 / 255 / random, per tensor / per channel,
 *    clamps, extreme data (x = 255, w = +-127 at full density).
 * 4. Dispatch: the table's entries are the highest variants within the level (run the test
 *    with EFC_ISA=ref / avx2 to see the cap honoured) and compute the same function.
 * Seed: EFC_TEST_SEED or a fixed default; printed at start and in every failure.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_parse.h"
#include "common/efc_rng.h"
#include "common/efc_status.h"
#include "kernels/kernels.h"
#include "kernels/sparse.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static const struct {
    const char *name;
    enum efc_isa isa;
    const struct efc_k_spmm_f32 *k;
} g_f32[] = {
#define EFC_KERNEL(op, isa, fn) ENTRY_##op(#fn, isa, fn)
#define ENTRY_spmm_f32(name, isa, fn) {name, isa, &fn},
#define ENTRY_spmm_u8s8(name, isa, fn)
#include "kernels/kernels_sparse.inc"
#undef ENTRY_spmm_f32
#undef ENTRY_spmm_u8s8
};
#define N_F32 (sizeof(g_f32) / sizeof(g_f32[0]))

static const struct {
    const char *name;
    enum efc_isa isa;
    const struct efc_k_spmm_u8s8 *k;
} g_s8[] = {
#define ENTRY_spmm_f32(name, isa, fn)
#define ENTRY_spmm_u8s8(name, isa, fn) {name, isa, &fn},
#include "kernels/kernels_sparse.inc"
#undef ENTRY_spmm_f32
#undef ENTRY_spmm_u8s8
#undef EFC_KERNEL
};
#define N_S8 (sizeof(g_s8) / sizeof(g_s8[0]))

static uint64_t g_seed = 20260824;

static int isa_runs_here(enum efc_isa isa)
{
    enum efc_isa best = efc_isa_best();
    if (isa == EFC_ISA_REF)
        return 1;
    if (isa == EFC_ISA_NEON || best == EFC_ISA_NEON)
        return isa == best;
    return isa <= best;
}

/* ------------------------------------------------------------------------ weight patterns */

static const struct efc_sp_fmt g_fmts[3] = {{0, 0}, {2, 4}, {1, 4}};

/* Is element (j, k) kept? CSR: with probability d; N:M: a random subset of at most N columns
 * per group, each non-zero with probability d * M / N (so the density stays ~d, <= N / M). A
 * quarter of the rows stay all-zero when zero_rows. */
static void gen_mask(struct efc_rng *r, int32_t out, int32_t in, double d,
                     const struct efc_sp_fmt *f, int zero_rows, uint8_t *keep)
{
    memset(keep, 0, (size_t)out * in);
    for (int32_t j = 0; j < out; j++) {
        if (zero_rows && efc_rng_below(r, 4) == 0)
            continue;
        uint8_t *row = keep + (size_t)j * in;
        if (f->nm_m == 0) {
            for (int32_t k = 0; k < in; k++)
                row[k] = efc_rng_uniform(r) < d;
            continue;
        }
        const double p = d * f->nm_m / f->nm_n;
        for (int32_t k0 = 0; k0 < in; k0 += f->nm_m) {
            const int32_t width = in - k0 < f->nm_m ? in - k0 : f->nm_m;
            int32_t cols[4] = {0, 1, 2, 3};
            for (int32_t a = width - 1; a > 0; a--) { /* shuffle the group's columns */
                int32_t b = (int32_t)efc_rng_below(r, (uint32_t)a + 1), t = cols[a];
                cols[a] = cols[b];
                cols[b] = t;
            }
            for (int32_t t = 0; t < f->nm_n && t < width; t++)
                row[k0 + cols[t]] = efc_rng_uniform(r) < p;
        }
    }
}

/* ------------------------------------------------------------------------------- FP32 */

#define FGUARD 16
static const uint32_t g_fsent = 0x7fc0dead; /* a NaN payload nobody computes */

static float *falloc(size_t n)
{
    float *p = efc_malloc((n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

static void fill_sent(float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        memcpy(&y[i], &g_fsent, 4);
}

static int is_sent(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return u == g_fsent;
}

static double act_d(double v, enum efc_k_act act)
{
    if (act == EFC_K_ACT_RELU)
        return v > 0 ? v : 0;
    if (act == EFC_K_ACT_RELU6)
        return v > 0 ? (v < 6 ? v : 6) : 0;
    return v;
}

struct fcase {
    int32_t out, in, n;
    double d;
    struct efc_sp_fmt fmt;
    int zero_rows, have_b;
    enum efc_k_act act;
    size_t ldx, ldy, ldxt, ldyt;
    float *w, *b;
    float *x;     /* row layout: (n - 1) * ldx + in */
    float *xt;    /* column layout: (in - 1) * ldxt + n */
    double *want; /* [n][out] */
    double *mag;  /* [n][out] */
};

static void fcase_make(struct efc_rng *r, struct fcase *c, int32_t out, int32_t in, int32_t n,
                       double d, const struct efc_sp_fmt *fmt, int zero_rows)
{
    memset(c, 0, sizeof(*c));
    c->out = out;
    c->in = in;
    c->n = n;
    c->d = d;
    c->fmt = *fmt;
    c->zero_rows = zero_rows;
    c->have_b = efc_rng_below(r, 3) != 0;
    c->act = (enum efc_k_act)efc_rng_below(r, 3);
    c->ldx = (size_t)in + (efc_rng_below(r, 2) ? efc_rng_below(r, 5) : 0);
    c->ldy = (size_t)out + (efc_rng_below(r, 2) ? 1 + efc_rng_below(r, 5) : 0);
    c->ldxt = (size_t)n + (efc_rng_below(r, 2) ? efc_rng_below(r, 5) : 0);
    c->ldyt = (size_t)n + (efc_rng_below(r, 2) ? 1 + efc_rng_below(r, 5) : 0);
    uint8_t *keep = efc_malloc((size_t)out * in);
    assert_non_null(keep);
    gen_mask(r, out, in, d, fmt, zero_rows, keep);
    c->w = falloc((size_t)out * in);
    for (size_t e = 0; e < (size_t)out * in; e++) {
        float v = 0.0f;
        if (keep[e]) {
            v = efc_rng_uniform(r) * 2.0f - 1.0f;
            if (v == 0.0f)
                v = 0.5f;
        }
        c->w[e] = v;
    }
    efc_free(keep);
    c->b = falloc((size_t)out);
    for (int32_t j = 0; j < out; j++)
        c->b[j] = efc_rng_uniform(r) * 4.0f - 2.0f;
    c->x = falloc((size_t)(n - 1) * c->ldx + (size_t)in);
    c->xt = falloc((size_t)(in - 1) * c->ldxt + (size_t)n);
    /* Padding between rows / past n: never to be read into a result. */
    for (size_t e = 0; e < (size_t)(n - 1) * c->ldx + (size_t)in; e++)
        c->x[e] = 1e30f;
    for (size_t e = 0; e < (size_t)(in - 1) * c->ldxt + (size_t)n; e++)
        c->xt[e] = 1e30f;
    for (int32_t i = 0; i < n; i++)
        for (int32_t k = 0; k < in; k++) {
            float v = efc_rng_uniform(r) * 4.0f - 2.0f;
            c->x[(size_t)i * c->ldx + k] = v;
            c->xt[(size_t)k * c->ldxt + i] = v;
        }
    c->want = efc_malloc((size_t)n * out * sizeof(double));
    c->mag = efc_malloc((size_t)n * out * sizeof(double));
    assert_non_null(c->want);
    assert_non_null(c->mag);
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < out; j++) {
            double s = 0, m = 0;
            const float *wj = c->w + (size_t)j * in, *xi = c->x + (size_t)i * c->ldx;
            for (int32_t k = 0; k < in; k++) {
                s += (double)wj[k] * xi[k];
                m += fabs((double)wj[k] * xi[k]);
            }
            if (c->have_b) {
                s += c->b[j];
                m += fabs((double)c->b[j]);
            }
            c->want[(size_t)i * out + j] = act_d(s, c->act);
            c->mag[(size_t)i * out + j] = m;
        }
}

static void fcase_free(struct fcase *c)
{
    efc_free(c->w);
    efc_free(c->b);
    efc_free(c->x);
    efc_free(c->xt);
    efc_free(c->want);
    efc_free(c->mag);
    memset(c, 0, sizeof(*c));
}

static void fdescribe(const char *name, const char *layout, const struct fcase *c, int32_t i,
                      int32_t j, double got)
{
    print_error("%s %s: out=%d in=%d n=%d density=%.2f fmt=%d:%d zero_rows=%d bias=%d act=%d "
                "ldx=%zu ldy=%zu: y[%d][%d] = %.9g, want %.9g (bound %.3g) seed=%llu\n",
                name, layout, (int)c->out, (int)c->in, (int)c->n, c->d, (int)c->fmt.nm_n,
                (int)c->fmt.nm_m, c->zero_rows, c->have_b, (int)c->act, c->ldx, c->ldy, (int)i,
                (int)j, got, c->want[(size_t)i * c->out + j], 1e-5 * c->mag[(size_t)i * c->out + j],
                (unsigned long long)g_seed);
}

static void fcheck(const char *name, const char *layout, const struct fcase *c, int32_t i,
                   int32_t j, float got)
{
    const double want = c->want[(size_t)i * c->out + j];
    if (!(fabs((double)got - want) <= 1e-5 * c->mag[(size_t)i * c->out + j] + 1e-30)) {
        fdescribe(name, layout, c, i, j, got);
        fail();
    }
}

/* One case through one variant: pack, both layouts, guards. */
static void frun(const char *name, const struct efc_k_spmm_f32 *k, enum efc_isa isa,
                 const struct fcase *c)
{
    struct efc_spmm_w pw;
    const struct efc_sp_fmt *fmt = c->fmt.nm_m ? &c->fmt : NULL;
    assert_int_equal(k->pack(c->out, c->in, c->w, fmt, &pw), EFC_OK);
    assert_int_equal(pw.isa, isa);
    assert_int_equal(pw.out, c->out);
    assert_int_equal(pw.in, c->in);
    assert_int_equal(pw.nm_n, c->fmt.nm_n);
    assert_int_equal(pw.nm_m, c->fmt.nm_m);
    int64_t nnz = 0;
    for (size_t e = 0; e < (size_t)c->out * c->in; e++)
        nnz += c->w[e] != 0.0f;
    assert_int_equal(pw.nnz, nnz);
    const float *b = c->have_b ? c->b : NULL;

    /* Row layout. */
    size_t ny = (size_t)c->n * c->ldy + FGUARD;
    float *y = falloc(ny);
    fill_sent(y, ny);
    size_t ns = efc_k_spmm_f32_scratch(c->out, c->in, c->n);
    float *scratch = ns ? falloc(ns) : NULL;
    k->run(&pw, c->n, c->x, c->ldx, b, c->act, y, c->ldy, scratch);
    for (int32_t i = 0; i < c->n; i++) {
        for (int32_t j = 0; j < c->out; j++)
            fcheck(name, "run", c, i, j, y[(size_t)i * c->ldy + j]);
        for (size_t j = (size_t)c->out; j < c->ldy; j++)
            if (!is_sent(y[(size_t)i * c->ldy + j])) {
                print_error("%s run: wrote y[%d][%zu] past out=%d\n", name, (int)i, j, (int)c->out);
                fail();
            }
    }
    for (size_t e = (size_t)c->n * c->ldy; e < ny; e++)
        if (!is_sent(y[e])) {
            print_error("%s run: wrote past the last row of y\n", name);
            fail();
        }
    efc_free(y);
    efc_free(scratch);

    /* Column layout. */
    ny = (size_t)c->out * c->ldyt + FGUARD;
    y = falloc(ny);
    fill_sent(y, ny);
    k->run_t(&pw, c->n, c->xt, c->ldxt, b, c->act, y, c->ldyt);
    for (int32_t j = 0; j < c->out; j++) {
        for (int32_t i = 0; i < c->n; i++)
            fcheck(name, "run_t", c, i, j, y[(size_t)j * c->ldyt + i]);
        for (size_t i = (size_t)c->n; i < c->ldyt; i++)
            if (!is_sent(y[(size_t)j * c->ldyt + i])) {
                print_error("%s run_t: wrote y[%d][%zu] past n=%d\n", name, (int)j, i, (int)c->n);
                fail();
            }
    }
    for (size_t e = (size_t)c->out * c->ldyt; e < ny; e++)
        if (!is_sent(y[e])) {
            print_error("%s run_t: wrote past the last row of y\n", name);
            fail();
        }
    efc_free(y);
    efc_spmm_w_fini(&pw);
    efc_spmm_w_fini(&pw); /* twice: harmless */
    assert_null(pw.packed);
}

static const int32_t g_dims[] = {1, 3, 17, 63, 100, 1023};
static const int32_t g_ns[] = {1, 2, 5, 33};
static const double g_dens[] = {0.0, 0.05, 0.1, 0.3, 0.5, 1.0};
#define N_DIMS (sizeof(g_dims) / sizeof(g_dims[0]))
#define N_NS (sizeof(g_ns) / sizeof(g_ns[0]))
#define N_DENS (sizeof(g_dens) / sizeof(g_dens[0]))

/* The grid both precisions walk: every (out, in) pair, each with 3 (n, density, format)
 * combinations rotating through the lists; n = 33 is kept for shapes up to 1023 x 100 (and the
 * 1023 x 1023 case gets it once) so the whole test stays within seconds under ASan. */
struct gridpt {
    int32_t out, in, n;
    double d;
    const struct efc_sp_fmt *fmt;
    int zero_rows;
};

static size_t grid(struct gridpt *g, size_t cap)
{
    size_t t = 0, np = 0;
    for (size_t a = 0; a < N_DIMS; a++)
        for (size_t bb = 0; bb < N_DIMS; bb++)
            for (int rep = 0; rep < 3; rep++, t++) {
                struct gridpt p;
                p.out = g_dims[a];
                p.in = g_dims[bb];
                p.n = g_ns[(t * 5 + (size_t)rep) % N_NS];
                if ((int64_t)p.out * p.in > 200000 && p.n > 5 && !(rep == 0 && a == bb))
                    p.n = 5;
                p.d = g_dens[(t * 7 + a) % N_DENS];
                p.fmt = &g_fmts[(t + bb) % 3];
                p.zero_rows = (t % 5) == 2;
                if (np < cap)
                    g[np++] = p;
            }
    /* Bigger batches (several SpMM tiles, 64 + 6) and the bench shape. */
    static const struct gridpt extra[] = {
        {40, 100, 70, 0.3, &g_fmts[0], 0},   {33, 65, 70, 0.5, &g_fmts[1], 1},
        {1024, 1024, 1, 0.1, &g_fmts[0], 0}, {1024, 1024, 9, 0.1, &g_fmts[0], 0},
        {1024, 1024, 1, 0.5, &g_fmts[1], 0}, {100, 1023, 64, 0.05, &g_fmts[2], 0},
    };
    for (size_t e = 0; e < sizeof(extra) / sizeof(extra[0]) && np < cap; e++)
        g[np++] = extra[e];
    return np;
}

static void test_f32_variants(void **state)
{
    (void)state;
    struct efc_rng r;
    struct gridpt g[256];
    int ran[N_F32] = {0};
    efc_rng_init(&r, g_seed ^ 0xf32);
    size_t np = grid(g, 256);
    for (size_t q = 0; q < np; q++) {
        struct fcase c;
        fcase_make(&r, &c, g[q].out, g[q].in, g[q].n, g[q].d, g[q].fmt, g[q].zero_rows);
        for (size_t v = 0; v < N_F32; v++) {
            if (!isa_runs_here(g_f32[v].isa))
                continue;
            frun(g_f32[v].name, g_f32[v].k, g_f32[v].isa, &c);
            ran[v]++;
        }
        fcase_free(&c);
    }
    for (size_t v = 0; v < N_F32; v++)
        if (isa_runs_here(g_f32[v].isa))
            printf("  %-28s %d cases within 1e-5 * sum|terms| of the dense formula\n",
                   g_f32[v].name, ran[v]);
        else
            printf("  %-28s SKIP (cpu lacks %s)\n", g_f32[v].name, efc_isa_name(g_f32[v].isa));
}

/* ------------------------------------------------------------------------------- INT8 */

#define YGUARD 32
#define YSENT 0xA5

enum s8_data { S8_RANDOM, S8_MAX_POS, S8_MAX_NEG };

struct qcase {
    int32_t out, in, n, zp_x, have_bias;
    double d;
    struct efc_sp_fmt fmt;
    size_t ldx, ldy;
    int8_t *w;
    uint8_t *x;
    int32_t *bias, *mult, *shift;
    struct efc_requant rq;
};

static int32_t pick_zp(struct efc_rng *r)
{
    uint32_t u = efc_rng_below(r, 4);
    return u == 0 ? 0 : u == 1 ? 255 : (int32_t)efc_rng_below(r, 256);
}

static void qcase_make(struct efc_rng *r, struct qcase *c, const struct gridpt *g, enum s8_data dm)
{
    memset(c, 0, sizeof(*c));
    c->out = g->out;
    c->in = g->in;
    c->n = g->n;
    c->d = g->d;
    c->fmt = *g->fmt;
    c->zp_x = pick_zp(r);
    c->have_bias = efc_rng_below(r, 4) != 0;
    c->ldx = (size_t)c->in + (efc_rng_below(r, 2) ? efc_rng_below(r, 9) : 0);
    c->ldy = (size_t)c->out + (efc_rng_below(r, 2) ? 1 + efc_rng_below(r, 9) : 0);
    uint8_t *keep = efc_malloc((size_t)c->out * c->in);
    c->w = efc_malloc((size_t)c->out * c->in);
    c->x = efc_malloc((size_t)(c->n - 1) * c->ldx + (size_t)c->in);
    c->bias = efc_malloc((size_t)c->out * sizeof(int32_t));
    c->mult = efc_malloc((size_t)c->out * sizeof(int32_t));
    c->shift = efc_malloc((size_t)c->out * sizeof(int32_t));
    assert_true(keep && c->w && c->x && c->bias && c->mult && c->shift);
    gen_mask(r, c->out, c->in, c->d, &c->fmt, g->zero_rows, keep);
    for (size_t e = 0; e < (size_t)c->out * c->in; e++) {
        int32_t v = 0;
        if (keep[e]) {
            v = dm == S8_MAX_POS   ? 127
                : dm == S8_MAX_NEG ? -127
                                   : (int32_t)efc_rng_below(r, 255) - 127;
            if (v == 0)
                v = 1;
        }
        c->w[e] = (int8_t)v;
    }
    efc_free(keep);
    for (size_t e = 0; e < (size_t)(c->n - 1) * c->ldx + (size_t)c->in; e++)
        c->x[e] = dm == S8_RANDOM ? (uint8_t)efc_rng_below(r, 256) : 255;
    const double typ = 100.0 / (127.0 * 128.0 * (1.0 + sqrt(c->d * c->in + 1.0)));
    for (int32_t j = 0; j < c->out; j++) {
        c->bias[j] = (int32_t)efc_rng_below(r, 1u << 21) - (1 << 20);
        double v = typ * exp2(-3.0 + 6.0 * efc_rng_uniform(r));
        assert_int_equal(efc_k_requant_make(v < 0.99 ? v : 0.99, &c->mult[j], &c->shift[j]),
                         EFC_OK);
    }
    c->rq.mult = c->mult;
    c->rq.shift = c->shift;
    c->rq.per_tensor = (int32_t)efc_rng_below(r, 2);
    c->rq.zp_out = pick_zp(r);
    switch (efc_rng_below(r, 3)) {
    case 0:
        c->rq.lo = 0, c->rq.hi = 255;
        break;
    case 1: /* ReLU */
        c->rq.lo = c->rq.zp_out, c->rq.hi = 255;
        break;
    default:
        c->rq.lo = (int32_t)efc_rng_below(r, 256);
        c->rq.hi = c->rq.lo + (int32_t)efc_rng_below(r, (uint32_t)(256 - c->rq.lo));
        break;
    }
}

static void qcase_free(struct qcase *c)
{
    efc_free(c->w);
    efc_free(c->x);
    efc_free(c->bias);
    efc_free(c->mult);
    efc_free(c->shift);
    memset(c, 0, sizeof(*c));
}

/* The dense reference: efc_k_qgemm_u8s8__ref on the same (dense) weights. */
static uint8_t *q_dense_ref(const struct qcase *c)
{
    struct efc_qgemm_w qw;
    uint8_t *y = efc_malloc((size_t)c->n * c->ldy + YGUARD);
    assert_non_null(y);
    memset(y, YSENT, (size_t)c->n * c->ldy + YGUARD);
    assert_int_equal(efc_k_qgemm_u8s8__ref.pack(c->out, c->in, c->w, c->have_bias ? c->bias : NULL,
                                                c->zp_x, &qw),
                     EFC_OK);
    efc_k_qgemm_u8s8__ref.run(&qw, &c->rq, c->n, c->x, c->ldx, y, c->ldy);
    efc_qgemm_w_fini(&qw);
    return y;
}

static void qrun(const char *name, const struct efc_k_spmm_u8s8 *k, enum efc_isa isa,
                 const struct qcase *c, const uint8_t *want)
{
    struct efc_spmm_w pw;
    const size_t ny = (size_t)c->n * c->ldy + YGUARD;
    uint8_t *y = efc_malloc(ny);
    assert_non_null(y);
    memset(y, YSENT, ny);
    assert_int_equal(k->pack(c->out, c->in, c->w, c->have_bias ? c->bias : NULL, c->zp_x,
                             c->fmt.nm_m ? &c->fmt : NULL, &pw),
                     EFC_OK);
    assert_int_equal(pw.isa, isa);
    int64_t nnz = 0;
    for (size_t e = 0; e < (size_t)c->out * c->in; e++)
        nnz += c->w[e] != 0;
    assert_int_equal(pw.nnz, nnz);
    k->run(&pw, &c->rq, c->n, c->x, c->ldx, y, c->ldy);
    efc_spmm_w_fini(&pw);
    /* Guards included: bytes [out, ldy) and after the last row must still be YSENT. */
    if (memcmp(y, want, ny) != 0) {
        for (size_t e = 0; e < ny; e++)
            if (y[e] != want[e]) {
                const size_t i = e / c->ldy, j = e % c->ldy;
                print_error("%s: out=%d in=%d n=%d density=%.2f fmt=%d:%d zp_x=%d zp_out=%d "
                            "per_tensor=%d lo=%d hi=%d bias=%d ldx=%zu ldy=%zu: byte %zu "
                            "(y[%zu][%zu]%s) = %d, want %d seed=%llu\n",
                            name, (int)c->out, (int)c->in, (int)c->n, c->d, (int)c->fmt.nm_n,
                            (int)c->fmt.nm_m, (int)c->zp_x, (int)c->rq.zp_out,
                            (int)c->rq.per_tensor, (int)c->rq.lo, (int)c->rq.hi, c->have_bias,
                            c->ldx, c->ldy, e, i, j,
                            (i >= (size_t)c->n || j >= (size_t)c->out) ? ", a guard byte" : "",
                            y[e], want[e], (unsigned long long)g_seed);
                break;
            }
        fail();
    }
    efc_free(y);
}

static void test_s8_variants(void **state)
{
    (void)state;
    struct efc_rng r;
    struct gridpt g[256];
    int ran[N_S8] = {0};
    efc_rng_init(&r, g_seed ^ 0x58);
    size_t np = grid(g, 256);
    for (size_t q = 0; q < np + 6; q++) {
        struct qcase c;
        struct gridpt ext;
        enum s8_data dm = S8_RANDOM;
        if (q >= np) { /* saturation: full density, x = 255, w = +-127 */
            ext = (struct gridpt){
                q % 2 ? 17 : 100, q % 3 ? 1023 : 63, q % 2 ? 5 : 1, 1.0, &g_fmts[0], 0};
            dm = q % 2 ? S8_MAX_POS : S8_MAX_NEG;
        }
        qcase_make(&r, &c, q < np ? &g[q] : &ext, dm);
        uint8_t *want = q_dense_ref(&c);
        for (size_t v = 0; v < N_S8; v++) {
            if (!isa_runs_here(g_s8[v].isa))
                continue;
            qrun(g_s8[v].name, g_s8[v].k, g_s8[v].isa, &c, want);
            ran[v]++;
        }
        efc_free(want);
        qcase_free(&c);
    }
    for (size_t v = 0; v < N_S8; v++)
        if (isa_runs_here(g_s8[v].isa))
            printf("  %-30s %d cases bit-exact with efc_k_qgemm_u8s8__ref\n", g_s8[v].name, ran[v]);
        else
            printf("  %-30s SKIP (cpu lacks %s)\n", g_s8[v].name, efc_isa_name(g_s8[v].isa));
}

/* --------------------------------------------------------------------------- packing */

static void test_pack_errors(void **state)
{
    (void)state;
    /* 3 x 9, 2:4 holds except row 1 group 1 (columns 4..7: three non-zeros). */
    float wf[27] = {1,      0, 2, 0, 0, 0, 0, 3, 4, /**/ 0, 5, 0, 6, 7, 8, 0, 9, 0,
                    /**/ 0, 0, 0, 0, 1, 1, 0, 0, 1};
    int8_t ws[27];
    for (int i = 0; i < 27; i++)
        ws[i] = (int8_t)wf[i];
    const struct efc_sp_fmt f24 = {2, 4}, f14 = {1, 4}, bad[] = {{0, 4}, {4, 4}, {2, 8}, {3, 2}};
    struct efc_spmm_w pw;

    efc_err_clear();
    assert_int_equal(efc_sp_check_f32(3, 9, wf, &f24), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "row 1 group 1 (columns 4..7) has 3 non-zeros"));
    assert_int_equal(efc_sp_check_s8(3, 9, ws, &f24), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "row 1 group 1"));
    assert_int_equal(efc_sp_check_f32(3, 9, wf, &f14), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "row 0 group 0 (columns 0..3) has 2 non-zeros"));
    assert_int_equal(efc_sp_check_f32(3, 9, wf, NULL), EFC_OK);
    wf[13] = 0.0f; /* now 2:4 holds (the last group, column 8 alone, has one) */
    ws[13] = 0;
    assert_int_equal(efc_sp_check_f32(3, 9, wf, &f24), EFC_OK);
    assert_int_equal(efc_sp_check_s8(3, 9, ws, &f24), EFC_OK);
    wf[13] = 7.0f;
    ws[13] = 7;

    for (size_t v = 0; v < N_F32; v++) {
        const struct efc_k_spmm_f32 *k = g_f32[v].k;
        if (!isa_runs_here(g_f32[v].isa))
            continue;
        memset(&pw, 0x5a, sizeof(pw));
        efc_err_clear();
        assert_int_equal(k->pack(3, 9, wf, &f24, &pw), EFC_EINVAL);
        assert_non_null(strstr(efc_err_detail(), "row 1 group 1"));
        assert_null(pw.packed);
        assert_int_equal(pw.nnz, 0);
        for (size_t q = 0; q < sizeof(bad) / sizeof(bad[0]); q++)
            assert_int_equal(k->pack(3, 9, wf, &bad[q], &pw), EFC_EINVAL);
        assert_int_equal(k->pack(0, 9, wf, NULL, &pw), EFC_EINVAL);
        assert_int_equal(k->pack(3, 0, wf, NULL, &pw), EFC_EINVAL);
        assert_int_equal(k->pack(3, 9, NULL, NULL, &pw), EFC_EINVAL);
        assert_null(pw.packed);
        assert_int_equal(k->pack(3, 9, wf, NULL, &pw), EFC_OK);
        assert_int_equal(pw.nnz, 12);
        assert_int_equal(pw.nm_m, 0);
        assert_null(pw.bias);
        assert_true(pw.packed_bytes > 0);
        efc_spmm_w_fini(&pw);
    }
    for (size_t v = 0; v < N_S8; v++) {
        const struct efc_k_spmm_u8s8 *k = g_s8[v].k;
        if (!isa_runs_here(g_s8[v].isa))
            continue;
        memset(&pw, 0x5a, sizeof(pw));
        assert_int_equal(k->pack(3, 9, ws, NULL, 7, &f24, &pw), EFC_EINVAL);
        assert_null(pw.packed);
        assert_null(pw.bias);
        assert_int_equal(k->pack(3, 9, ws, NULL, 256, NULL, &pw), EFC_EINVAL);
        assert_int_equal(k->pack(3, 9, ws, NULL, -1, NULL, &pw), EFC_EINVAL);
        assert_int_equal(k->pack(3, 9, ws, NULL, 0, &bad[1], &pw), EFC_EINVAL);
        assert_int_equal(k->pack(0, 9, ws, NULL, 0, NULL, &pw), EFC_EINVAL);
        assert_null(pw.packed);
        /* The folded bias is the dense one: bias - zp_x * row sum. */
        const int32_t bias[3] = {100, -5, 0};
        ws[13] = 0;
        assert_int_equal(k->pack(3, 9, ws, bias, 3, &f24, &pw), EFC_OK);
        assert_int_equal(pw.nm_n, 2);
        assert_int_equal(pw.nm_m, 4);
        assert_int_equal(pw.nnz, 11);
        assert_int_equal(pw.bias[0], 100 - 3 * 10);
        assert_int_equal(pw.bias[1], -5 - 3 * 28);
        assert_int_equal(pw.bias[2], 0 - 3 * 3);
        efc_spmm_w_fini(&pw);
        ws[13] = 7;
    }
}

/* n = 0 writes nothing; an all-zero matrix gives act(b) / the requantised folded bias. */
static void test_empty(void **state)
{
    (void)state;
    float w[12] = {0}, x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[3] = {-1.0f, 0.5f, 9.0f}, y[8];
    uint8_t xq[8] = {9, 9, 9, 9, 9, 9, 9, 9}, yq[8];
    int8_t wq[12] = {0};
    int32_t mult = 1 << 30, shift = 31, bias[3] = {-4, 8, 1000};
    struct efc_requant rq = {&mult, &shift, 1, 10, 0, 255};
    for (size_t v = 0; v < N_F32; v++) {
        struct efc_spmm_w pw;
        if (!isa_runs_here(g_f32[v].isa))
            continue;
        assert_int_equal(g_f32[v].k->pack(3, 4, w, NULL, &pw), EFC_OK);
        assert_int_equal(pw.nnz, 0);
        memset(y, 0x11, sizeof(y));
        g_f32[v].k->run(&pw, 0, x, 4, b, EFC_K_ACT_NONE, y, 3, NULL);
        g_f32[v].k->run_t(&pw, 0, x, 1, b, EFC_K_ACT_NONE, y, 1);
        for (size_t i = 0; i < 8; i++)
            assert_true(((uint8_t *)y)[4 * i] == 0x11);
        g_f32[v].k->run(&pw, 2, x, 4, b, EFC_K_ACT_RELU6, y, 3, NULL);
        const float want[6] = {0.0f, 0.5f, 6.0f, 0.0f, 0.5f, 6.0f};
        assert_memory_equal(y, want, sizeof(want));
        efc_spmm_w_fini(&pw);
    }
    for (size_t v = 0; v < N_S8; v++) {
        struct efc_spmm_w pw;
        if (!isa_runs_here(g_s8[v].isa))
            continue;
        assert_int_equal(g_s8[v].k->pack(3, 4, wq, bias, 200, NULL, &pw), EFC_OK);
        memset(yq, 0x11, sizeof(yq));
        g_s8[v].k->run(&pw, &rq, 0, xq, 4, yq, 3);
        for (size_t i = 0; i < 8; i++)
            assert_int_equal(yq[i], 0x11);
        g_s8[v].k->run(&pw, &rq, 2, xq, 4, yq, 3);
        /* acc = bias, r = 1/2: -4 -> -2, 8 -> 4, 1000 -> 500 (clamped), + zp 10 */
        const uint8_t want[6] = {8, 14, 255, 8, 14, 255};
        assert_memory_equal(yq, want, sizeof(want));
        efc_spmm_w_fini(&pw);
    }
}

/* ------------------------------------------------------------------------------ dispatch */

static void test_dispatch(void **state)
{
    (void)state;
    const struct efc_kernel_table *t = efc_kernels();
    const enum efc_isa level = efc_kernels_isa();
    const struct efc_k_spmm_f32 *ef = NULL;
    const struct efc_k_spmm_u8s8 *es = NULL;
    const char *nf = "", *ns = "";
    enum efc_isa bf = EFC_ISA_REF, bs = EFC_ISA_REF;
    for (size_t v = 0; v < N_F32; v++)
        if ((g_f32[v].isa == EFC_ISA_REF || g_f32[v].isa <= level) && g_f32[v].isa >= bf) {
            bf = g_f32[v].isa;
            ef = g_f32[v].k;
            nf = g_f32[v].name;
        }
    for (size_t v = 0; v < N_S8; v++)
        if ((g_s8[v].isa == EFC_ISA_REF || g_s8[v].isa <= level) && g_s8[v].isa >= bs) {
            bs = g_s8[v].isa;
            es = g_s8[v].k;
            ns = g_s8[v].name;
        }
    printf("  level %s: spmm_f32 -> %s, spmm_u8s8 -> %s\n", efc_isa_name(level), nf, ns);
    assert_ptr_equal(t->spmm_f32, ef);
    assert_ptr_equal(t->spmm_u8s8, es);

    /* The dispatched pair computes the function (a 2:4 FP32 and a CSR INT8 case). */
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0xd15);
    struct gridpt gf = {50, 300, 9, 0.4, &g_fmts[1], 1};
    struct fcase c;
    fcase_make(&r, &c, gf.out, gf.in, gf.n, gf.d, gf.fmt, gf.zero_rows);
    frun("dispatched spmm_f32", t->spmm_f32, bf, &c);
    fcase_free(&c);
    struct gridpt gq = {70, 200, 6, 0.2, &g_fmts[0], 0};
    struct qcase q;
    qcase_make(&r, &q, &gq, S8_RANDOM);
    uint8_t *want = q_dense_ref(&q);
    qrun("dispatched spmm_u8s8", t->spmm_u8s8, bs, &q, want);
    efc_free(want);
    qcase_free(&q);
}

int main(void)
{
    const char *s = getenv("EFC_TEST_SEED");
    if (s != NULL && s[0] != '\0') {
        int64_t v;
        if (efc_parse_i64(s, 0, INT64_MAX, "EFC_TEST_SEED", &v) == EFC_OK)
            g_seed = (uint64_t)v;
    }
    const char *cap = getenv("EFC_ISA");
    printf("test_kernels_sparse: seed=%llu (set EFC_TEST_SEED to reproduce), cpu best isa %s, "
           "EFC_ISA=%s\n",
           (unsigned long long)g_seed, efc_isa_name(efc_isa_best()), cap ? cap : "(unset)");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_errors), cmocka_unit_test(test_empty),
        cmocka_unit_test(test_dispatch),    cmocka_unit_test(test_f32_variants),
        cmocka_unit_test(test_s8_variants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
