/* test_kernels_f32.c — every FP32 kernel against a naive reference written here (double
 * accumulation), and every kernels.inc variant the CPU runs against its __ref twin.
 *
 * Tolerances: element-wise kernels (relu, relu6, add, bias_act) are exact operations, so the
 * SIMD variants must be bit-exact with __ref (memcmp), including NaN and -0 inputs, and must
 * not write past n. Reductions (conv, dense, pools, softmax): per element
 * |got - ref| <= 1e-5 * sum|terms| (a relative bound on the dot product's magnitude, which is
 * what float accumulation error scales with) and NMSE <= 1e-7 per tensor (ggml-style).
 * Seed: EFC_TEST_SEED or a fixed default; printed at start.
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
#include "common/efc_rng.h"
#include "common/efc_status.h"
#include "kernels/blas.h"
#include "kernels/kernels.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static uint64_t g_seed = 20260822;

static float *falloc(size_t n)
{
    float *p = efc_malloc((n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

static void fill_uniform(struct efc_rng *r, float *p, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * efc_rng_uniform(r);
}

static double act_d(double v, enum efc_k_act act)
{
    if (act != EFC_K_ACT_NONE)
        v = v > 0.0 ? v : 0.0;
    if (act == EFC_K_ACT_RELU6)
        v = v < 6.0 ? v : 6.0;
    return v;
}

/* Per-element magnitude bound and tensor NMSE bound; prints the first offender. */
static void check_close(const char *what, const float *got, const double *ref, const double *mag,
                        size_t n)
{
    double err2 = 0.0, ref2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        err2 += d * d;
        ref2 += ref[i] * ref[i];
        if (!(fabs(d) <= 1e-5 * mag[i] + 1e-30)) {
            print_error("%s: element %zu got %.9g want %.9g (mag %.3g) seed=%llu\n", what, i,
                        (double)got[i], ref[i], mag[i], (unsigned long long)g_seed);
            fail();
        }
    }
    if (ref2 > 0.0 && err2 / ref2 > 1e-7) {
        print_error("%s: NMSE %.3g > 1e-7 seed=%llu\n", what, err2 / ref2,
                    (unsigned long long)g_seed);
        fail();
    }
}

/* ---------------------------------------------------------------- element-wise variants */

static int isa_runs_here(enum efc_isa isa)
{
    enum efc_isa best = efc_isa_best();
    if (isa == EFC_ISA_REF)
        return 1;
    if (isa == EFC_ISA_NEON || best == EFC_ISA_NEON)
        return isa == best;
    return isa <= best;
}

static size_t g_lengths[80];
static size_t g_n_lengths;

static void init_lengths(void)
{
    g_n_lengths = 0;
    for (size_t n = 0; n <= 67; n++)
        g_lengths[g_n_lengths++] = n;
    g_lengths[g_n_lengths++] = 1001;
    g_lengths[g_n_lengths++] = 1023;
    g_lengths[g_n_lengths++] = 1037;
}

/* Inputs with the awkward values mixed in: NaN, -0, +-inf, 6 exactly, tiny, huge. */
static void fill_special(struct efc_rng *r, float *p, size_t n)
{
    static const float sp[] = {0.0f, -0.0f, 6.0f, -6.0f, 5.9999995f, 6.0000005f, 1e-38f,
                               -1e-38f, 3e38f, -3e38f, INFINITY, -INFINITY, NAN};
    fill_uniform(r, p, n, -8.0f, 8.0f);
    for (size_t i = 0; i < n; i++)
        if (efc_rng_below(r, 5) == 0)
            p[i] = sp[efc_rng_below(r, sizeof(sp) / sizeof(sp[0]))];
}

#define GUARD 16
#define SENTINEL 12345.678f

static void check_guard(const char *fn, const float *y, size_t n)
{
    for (size_t i = n; i < n + GUARD; i++) {
        if (y[i] != SENTINEL) {
            print_error("%s: wrote past n=%zu at %zu\n", fn, n, i);
            fail();
        }
    }
}

static void check_same(const char *fn, const char *what, const float *a, const float *b,
                       size_t n)
{
    if (memcmp(a, b, n * sizeof(float)) != 0) {
        for (size_t i = 0; i < n; i++) {
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
                print_error("%s %s: index %zu got %.9g ref %.9g seed=%llu\n", fn, what, i,
                            (double)a[i], (double)b[i], (unsigned long long)g_seed);
                break;
            }
        }
        fail();
    }
}

static void run_unary(const char *name, efc_k_unary_f32_fn fn, efc_k_unary_f32_fn ref)
{
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x11);
    float *x = falloc(1100), *y = falloc(1100), *yr = falloc(1100);
    for (size_t t = 0; t < g_n_lengths; t++) {
        size_t n = g_lengths[t];
        fill_special(&r, x, n + GUARD);
        for (size_t i = 0; i < n + GUARD; i++)
            y[i] = yr[i] = SENTINEL;
        ref(n, x, yr);
        fn(n, x, y);
        check_same(name, "out-of-place", y, yr, n);
        check_guard(name, y, n);
        memcpy(y, x, n * sizeof(float)); /* in place */
        for (size_t i = n; i < n + GUARD; i++)
            y[i] = SENTINEL;
        fn(n, y, y);
        check_same(name, "in-place", y, yr, n);
        check_guard(name, y, n);
    }
    efc_free(x);
    efc_free(y);
    efc_free(yr);
}

static void run_add(const char *name, efc_k_add_f32_fn fn, efc_k_add_f32_fn ref)
{
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x22);
    float *a = falloc(1100), *b = falloc(1100), *y = falloc(1100), *yr = falloc(1100);
    for (int act = 0; act <= 2; act++) {
        for (size_t t = 0; t < g_n_lengths; t++) {
            size_t n = g_lengths[t];
            fill_special(&r, a, n + GUARD);
            fill_special(&r, b, n + GUARD);
            for (size_t i = 0; i < n + GUARD; i++)
                y[i] = yr[i] = SENTINEL;
            ref(n, a, b, yr, (enum efc_k_act)act);
            fn(n, a, b, y, (enum efc_k_act)act);
            check_same(name, "add", y, yr, n);
            check_guard(name, y, n);
            fn(n, a, b, a, (enum efc_k_act)act); /* y aliases a */
            check_same(name, "add aliased", a, yr, n);
        }
    }
    efc_free(a);
    efc_free(b);
    efc_free(y);
    efc_free(yr);
}

static void run_bias_act(const char *name, efc_k_bias_act_f32_fn fn, efc_k_bias_act_f32_fn ref)
{
    static const size_t cols_list[] = {1, 2, 3, 7, 8, 13, 16, 17, 33, 64, 67};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x33);
    float *b = falloc(80);
    float *y = falloc(2200 + GUARD), *yr = falloc(2200 + GUARD), *y0 = falloc(2200 + GUARD);
    for (int act = 0; act <= 2; act++) {
        for (size_t t = 0; t < g_n_lengths; t++) {
            for (size_t ci = 0; ci < sizeof(cols_list) / sizeof(cols_list[0]); ci++) {
                size_t cols = cols_list[ci];
                size_t rows = g_lengths[t];
                if (rows * cols > 2200)
                    rows = 2200 / cols;
                size_t n = rows * cols;
                fill_special(&r, y0, n);
                fill_special(&r, b, cols);
                memcpy(y, y0, n * sizeof(float));
                memcpy(yr, y0, n * sizeof(float));
                for (size_t i = n; i < n + GUARD; i++)
                    y[i] = yr[i] = SENTINEL;
                ref(rows, cols, yr, b, (enum efc_k_act)act);
                fn(rows, cols, y, b, (enum efc_k_act)act);
                check_same(name, "bias_act", y, yr, n);
                check_guard(name, y, n);
            }
        }
    }
    efc_free(b);
    efc_free(y);
    efc_free(yr);
    efc_free(y0);
}

static void test_variants_vs_ref(void **state)
{
    (void)state;
    int n_run = 0;
#define EFC_KERNEL(op, isa, fn)                                                         \
    do {                                                                                \
        if (!isa_runs_here(isa)) {                                                      \
            printf("SKIP %-32s (needs %s, cpu %s)\n", #fn, efc_isa_name(isa),           \
                   efc_isa_name(efc_isa_best()));                                       \
            break;                                                                      \
        }                                                                               \
        printf("RUN  %-32s vs __ref\n", #fn);                                           \
        run_##op(#fn, fn);                                                              \
        n_run++;                                                                        \
    } while (0);
#define run_relu_f32(name, fn) run_unary(name, fn, efc_k_relu_f32__ref)
#define run_relu6_f32(name, fn) run_unary(name, fn, efc_k_relu6_f32__ref)
#define run_add_f32(name, fn) run_add(name, fn, efc_k_add_f32__ref)
#define run_bias_act_f32(name, fn) run_bias_act(name, fn, efc_k_bias_act_f32__ref)
#include "kernels/kernels_f32.inc"
#undef EFC_KERNEL
    assert_true(n_run >= 4);
}

/* The reference itself against the definition (so a wrong __ref cannot hide). */
static void test_ref_semantics(void **state)
{
    (void)state;
    float x[6] = {-1.0f, 0.5f, 7.0f, NAN, -0.0f, 6.0f}, y[6];
    efc_k_relu6_f32__ref(6, x, y);
    const float want[6] = {0.0f, 0.5f, 6.0f, 0.0f, 0.0f, 6.0f};
    assert_memory_equal(y, want, sizeof(want));
    efc_k_relu_f32__ref(6, x, y);
    assert_true(y[2] == 7.0f && y[0] == 0.0f && y[3] == 0.0f && !signbit(y[4]));
    float b[2] = {1.0f, -2.0f}, yy[4] = {1.0f, 1.0f, 3.0f, 3.0f};
    efc_k_bias_act_f32__ref(2, 2, yy, b, EFC_K_ACT_RELU);
    const float want2[4] = {2.0f, 0.0f, 4.0f, 1.0f};
    assert_memory_equal(yy, want2, sizeof(want2));
}

/* ---------------------------------------------------------------- conv */

struct conv_case {
    int32_t n, c, h, w, oc, kh, kw, sh, sw, pt, pl, pb, pr, groups;
};

static struct efc_conv_geom geom_of(const struct conv_case *k)
{
    struct efc_conv_geom g = {
        .n = k->n, .c = k->c, .h = k->h, .w = k->w, .oc = k->oc,
        .oh = (k->h + k->pt + k->pb - k->kh) / k->sh + 1,
        .ow = (k->w + k->pl + k->pr - k->kw) / k->sw + 1,
        .kh = k->kh, .kw = k->kw, .sh = k->sh, .sw = k->sw, .pt = k->pt, .pl = k->pl,
        .groups = k->groups,
    };
    return g;
}

static void conv_naive(const struct efc_conv_geom *g, const float *x, const float *w,
                       const float *b, enum efc_k_act act, double *y, double *mag)
{
    const int32_t cg = g->c / g->groups, ocg = g->oc / g->groups;
    for (int32_t n = 0; n < g->n; n++)
        for (int32_t o = 0; o < g->oc; o++)
            for (int32_t oy = 0; oy < g->oh; oy++)
                for (int32_t ox = 0; ox < g->ow; ox++) {
                    double s = b != NULL ? b[o] : 0.0, m = b != NULL ? fabs(b[o]) : 0.0;
                    int32_t grp = o / ocg;
                    for (int32_t cl = 0; cl < cg; cl++)
                        for (int32_t ky = 0; ky < g->kh; ky++)
                            for (int32_t kx = 0; kx < g->kw; kx++) {
                                int32_t iy = oy * g->sh - g->pt + ky;
                                int32_t ix = ox * g->sw - g->pl + kx;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                                    continue;
                                double xv = x[(((size_t)n * g->c + grp * cg + cl) * g->h + iy) *
                                                  g->w + ix];
                                double wv = w[(((size_t)o * cg + cl) * g->kh + ky) * g->kw + kx];
                                s += xv * wv;
                                m += fabs(xv * wv);
                            }
                    size_t i = (((size_t)n * g->oc + o) * g->oh + oy) * g->ow + ox;
                    y[i] = act_d(s, act);
                    mag[i] = m;
                }
}

static void run_conv_case(const struct conv_case *k, enum efc_k_act act, int with_bias,
                          struct efc_rng *r)
{
    struct efc_conv_geom g = geom_of(k);
    size_t nx = (size_t)g.n * g.c * g.h * g.w;
    size_t nw = (size_t)g.oc * (g.c / g.groups) * g.kh * g.kw;
    size_t ny = (size_t)g.n * g.oc * g.oh * g.ow;
    size_t ns = efc_k_conv2d_f32_scratch(&g);
    float *x = falloc(nx), *w = falloc(nw), *b = falloc((size_t)g.oc), *y = falloc(ny + 1);
    float *scratch = ns > 0 ? falloc(ns) : NULL;
    double *yr = efc_malloc(ny * sizeof(double)), *mag = efc_malloc(ny * sizeof(double));
    assert_non_null(yr);
    assert_non_null(mag);
    fill_uniform(r, x, nx, -1.0f, 1.0f);
    fill_uniform(r, w, nw, -0.5f, 0.5f);
    fill_uniform(r, b, (size_t)g.oc, -0.5f, 0.5f);
    for (size_t i = 0; i <= ny; i++)
        y[i] = SENTINEL;
    efc_k_conv2d_f32(&g, x, w, with_bias ? b : NULL, y, scratch, act);
    assert_true(y[ny] == SENTINEL);
    conv_naive(&g, x, w, with_bias ? b : NULL, act, yr, mag);
    char what[160];
    snprintf(what, sizeof(what),
             "conv n%d c%d %dx%d oc%d k%dx%d s%dx%d pad t%d l%d b%d r%d g%d act%d bias%d",
             k->n, k->c, k->h, k->w, k->oc, k->kh, k->kw, k->sh, k->sw, k->pt, k->pl, k->pb,
             k->pr, k->groups, (int)act, with_bias);
    check_close(what, y, yr, mag, ny);
    efc_free(x);
    efc_free(w);
    efc_free(b);
    efc_free(y);
    efc_free(scratch);
    efc_free(yr);
    efc_free(mag);
}

static const struct conv_case g_conv_cases[] = {
    /* n  c   h   w  oc kh kw sh sw pt pl pb pr groups */
    {1, 1, 28, 28, 6, 5, 5, 1, 1, 2, 2, 2, 2, 1},    /* lenet5 conv1 */
    {3, 6, 14, 14, 16, 5, 5, 1, 1, 0, 0, 0, 0, 1},   /* lenet5 conv2, batch 3 */
    {2, 3, 7, 13, 5, 3, 3, 2, 2, 1, 0, 0, 1, 1},     /* stride 2, asymmetric pad */
    {1, 3, 1, 1, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1},      /* 1x1 image, 3x3 pad 1 */
    {2, 2, 3, 3, 3, 5, 5, 1, 1, 2, 2, 2, 2, 1},      /* kernel larger than the image */
    {1, 4, 17, 17, 8, 3, 3, 1, 1, 1, 1, 1, 1, 2},    /* groups 2 */
    {5, 6, 33, 17, 6, 5, 3, 1, 2, 2, 1, 2, 1, 3},    /* groups 3, stride (1, 2) */
    {2, 8, 9, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8},      /* depthwise */
    {2, 4, 13, 7, 12, 3, 3, 2, 1, 1, 1, 0, 1, 4},    /* depthwise, multiplier 3 */
    {1, 7, 13, 13, 7, 3, 3, 2, 2, 0, 1, 1, 0, 7},    /* depthwise stride 2 asym */
    {3, 16, 13, 13, 33, 1, 1, 1, 1, 0, 0, 0, 0, 1},  /* 1x1 fast path */
    {1, 17, 7, 7, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1},     /* 1x1, oc 1 */
    {2, 7, 5, 5, 3, 1, 1, 2, 2, 0, 0, 0, 0, 1},      /* 1x1 stride 2: im2col path */
    {4, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* cnn-bn-like first layer */
    {2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* cnn-bn-like middle layer */
};

static void test_conv_cases(void **state)
{
    (void)state;
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x44);
    for (size_t i = 0; i < sizeof(g_conv_cases) / sizeof(g_conv_cases[0]); i++)
        for (int act = 0; act <= 2; act++)
            run_conv_case(&g_conv_cases[i], (enum efc_k_act)act, act != 1 || i % 2 == 0, &r);
}

static void test_conv_random(void **state)
{
    (void)state;
    static const int32_t sizes[] = {1, 3, 7, 13, 17};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x55);
    for (int t = 0; t < 60; t++) {
        struct conv_case k;
        k.n = 1 + (int32_t)efc_rng_below(&r, 3);
        k.h = sizes[efc_rng_below(&r, 5)];
        k.w = sizes[efc_rng_below(&r, 5)];
        k.kh = 1 + (int32_t)efc_rng_below(&r, 5);
        k.kw = 1 + (int32_t)efc_rng_below(&r, 5);
        k.sh = 1 + (int32_t)efc_rng_below(&r, 2);
        k.sw = 1 + (int32_t)efc_rng_below(&r, 2);
        k.pt = (int32_t)efc_rng_below(&r, (uint32_t)k.kh);
        k.pl = (int32_t)efc_rng_below(&r, (uint32_t)k.kw);
        k.pb = (int32_t)efc_rng_below(&r, (uint32_t)k.kh);
        k.pr = (int32_t)efc_rng_below(&r, (uint32_t)k.kw);
        if (k.h + k.pt + k.pb < k.kh)
            k.pb = k.kh - k.h - k.pt;
        if (k.w + k.pl + k.pr < k.kw)
            k.pr = k.kw - k.w - k.pl;
        int kind = (int)efc_rng_below(&r, 4);
        k.groups = kind == 0 ? 1 : kind == 1 ? 2 : kind == 2 ? 3 : 5;
        k.c = k.groups * (1 + (int32_t)efc_rng_below(&r, 3));
        k.oc = k.groups * (1 + (int32_t)efc_rng_below(&r, 4));
        if (kind == 3) /* depthwise with a multiplier */
            k.c = k.groups;
        run_conv_case(&k, (enum efc_k_act)efc_rng_below(&r, 3), (int)efc_rng_below(&r, 2), &r);
    }
}

/* A batch big enough that the groups == 1 path runs several im2col chunks, the last one
 * partial and a single image (nc == 1 writes y directly). */
static void test_conv_chunked(void **state)
{
    (void)state;
    const struct conv_case k = {45, 3, 13, 13, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    struct efc_conv_geom g = geom_of(&k);
    size_t kk = (size_t)g.c * g.kh * g.kw, p = (size_t)g.oh * g.ow;
    size_t s = efc_k_conv2d_f32_scratch(&g);
    size_t nc = s / ((kk + (size_t)g.oc) * p);
    printf("chunked conv: scratch %zu floats = %zu images per chunk of %d\n", s, nc, g.n);
    assert_true(nc > 1 && nc < (size_t)g.n && g.n % (int32_t)nc == 1);
    /* Scratch for a smaller batch never exceeds the one for a bigger batch. */
    struct efc_conv_geom g1 = g;
    g1.n = 1;
    assert_true(efc_k_conv2d_f32_scratch(&g1) <= s);
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x66);
    run_conv_case(&k, EFC_K_ACT_RELU, 1, &r);
}

/* ---------------------------------------------------------------- im2col / col2im */

static void test_im2col_adjoint(void **state)
{
    (void)state;
    static const struct conv_case cases[] = {
        {3, 4, 7, 9, 4, 3, 3, 2, 1, 1, 2, 0, 1, 2},
        {2, 3, 13, 13, 3, 5, 5, 1, 1, 2, 2, 2, 2, 1},
        {2, 6, 5, 6, 6, 3, 2, 2, 2, 1, 1, 1, 0, 3},
    };
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x77);
    for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
        struct efc_conv_geom g = geom_of(&cases[t]);
        int32_t cg = g.c / g.groups, i0 = 1, nc = g.n - 1;
        size_t p = (size_t)g.oh * g.ow, k = (size_t)cg * g.kh * g.kw;
        size_t nx = (size_t)g.n * g.c * g.h * g.w, ncol = k * nc * p;
        float *x = falloc(nx), *col = falloc(ncol), *c2 = falloc(ncol), *dx = falloc(nx);
        for (int32_t grp = 0; grp < g.groups; grp++) {
            fill_uniform(&r, x, nx, -1.0f, 1.0f);
            fill_uniform(&r, c2, ncol, -1.0f, 1.0f);
            efc_k_im2col_f32(&g, x, i0, nc, grp, col);
            /* Exact layout: row (cl, ky, kx), column (img - i0) * P + oy * ow + ox. */
            for (int32_t cl = 0; cl < cg; cl++)
                for (int32_t ky = 0; ky < g.kh; ky++)
                    for (int32_t kx = 0; kx < g.kw; kx++)
                        for (int32_t im = 0; im < nc; im++)
                            for (int32_t oy = 0; oy < g.oh; oy++)
                                for (int32_t ox = 0; ox < g.ow; ox++) {
                                    int32_t iy = oy * g.sh - g.pt + ky;
                                    int32_t ix = ox * g.sw - g.pl + kx;
                                    float want = 0.0f;
                                    if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
                                        want = x[(((size_t)(i0 + im) * g.c + grp * cg + cl) *
                                                      g.h + iy) * g.w + ix];
                                    size_t row = ((size_t)cl * g.kh + ky) * g.kw + kx;
                                    size_t ci = (size_t)im * p + (size_t)oy * g.ow + ox;
                                    assert_true(col[row * nc * p + ci] == want);
                                }
            memset(dx, 0, nx * sizeof(float));
            efc_k_col2im_f32(&g, c2, i0, nc, grp, dx);
            double lhs = 0.0, rhs = 0.0, mag = 0.0;
            for (size_t i = 0; i < nx; i++) {
                lhs += (double)dx[i] * x[i];
                mag += fabs((double)dx[i] * x[i]);
            }
            for (size_t i = 0; i < ncol; i++)
                rhs += (double)c2[i] * col[i];
            if (fabs(lhs - rhs) > 1e-5 * mag) {
                print_error("adjoint case %zu grp %d: %.9g vs %.9g seed=%llu\n", t, grp, lhs,
                            rhs, (unsigned long long)g_seed);
                fail();
            }
            /* dx outside images [i0, i0+nc) and outside the group stays zero. */
            for (int32_t ch = 0; ch < g.c; ch++) {
                if (ch / cg == grp)
                    continue;
                for (size_t j = 0; j < (size_t)g.h * g.w; j++)
                    assert_true(dx[((size_t)i0 * g.c + ch) * g.h * g.w + j] == 0.0f);
            }
            for (size_t j = 0; j < (size_t)g.c * g.h * g.w; j++)
                assert_true(dx[j] == 0.0f);
        }
        efc_free(x);
        efc_free(col);
        efc_free(c2);
        efc_free(dx);
    }
}

/* ---------------------------------------------------------------- dense */

static void test_dense(void **state)
{
    (void)state;
    static const int32_t ns[] = {1, 3, 17, 64};
    static const int32_t ins[] = {1, 7, 33, 400};
    static const int32_t outs[] = {1, 10, 13, 120};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x88);
    for (size_t a = 0; a < 4; a++)
        for (size_t bi = 0; bi < 4; bi++)
            for (size_t c = 0; c < 4; c++) {
                int32_t n = ns[a], in = ins[bi], out = outs[c];
                enum efc_k_act act = (enum efc_k_act)((a + bi + c) % 3);
                int with_b = (a + c) % 2 == 0;
                float *x = falloc((size_t)n * in), *w = falloc((size_t)out * in);
                float *b = falloc((size_t)out), *y = falloc((size_t)n * out);
                double *yr = efc_malloc((size_t)n * out * sizeof(double));
                double *mag = efc_malloc((size_t)n * out * sizeof(double));
                fill_uniform(&r, x, (size_t)n * in, -1.0f, 1.0f);
                fill_uniform(&r, w, (size_t)out * in, -1.0f, 1.0f);
                fill_uniform(&r, b, (size_t)out, -1.0f, 1.0f);
                for (size_t i = 0; i < (size_t)n * out; i++)
                    y[i] = NAN; /* output must not be read (beta = 0) */
                efc_k_dense_f32(n, in, out, x, w, with_b ? b : NULL, y, act);
                for (int32_t i = 0; i < n; i++)
                    for (int32_t o = 0; o < out; o++) {
                        double s = with_b ? b[o] : 0.0, m = with_b ? fabs(b[o]) : 0.0;
                        for (int32_t j = 0; j < in; j++) {
                            double t = (double)x[(size_t)i * in + j] * w[(size_t)o * in + j];
                            s += t;
                            m += fabs(t);
                        }
                        yr[(size_t)i * out + o] = act_d(s, act);
                        mag[(size_t)i * out + o] = m;
                    }
                char what[96];
                snprintf(what, sizeof(what), "dense n%d in%d out%d act%d bias%d", n, in, out,
                         (int)act, with_b);
                check_close(what, y, yr, mag, (size_t)n * out);
                efc_free(x);
                efc_free(w);
                efc_free(b);
                efc_free(y);
                efc_free(yr);
                efc_free(mag);
            }
}

/* ---------------------------------------------------------------- pools */

struct pool_case {
    int32_t n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr;
};

static void run_pool(const struct pool_case *k, int include_pad, struct efc_rng *r)
{
    struct efc_pool_geom g = {
        .n = k->n, .c = k->c, .h = k->h, .w = k->w,
        .oh = (k->h + k->pt + k->pb - k->kh) / k->sh + 1,
        .ow = (k->w + k->pl + k->pr - k->kw) / k->sw + 1,
        .kh = k->kh, .kw = k->kw, .sh = k->sh, .sw = k->sw, .pt = k->pt, .pl = k->pl,
        .count_include_pad = include_pad,
    };
    size_t nx = (size_t)g.n * g.c * g.h * g.w, ny = (size_t)g.n * g.c * g.oh * g.ow;
    float *x = falloc(nx), *y = falloc(ny);
    double *yr = efc_malloc(ny * sizeof(double)), *mag = efc_malloc(ny * sizeof(double));
    /* All-negative inputs: a max pool that counted padding as 0 would be caught. */
    fill_uniform(r, x, nx, -2.0f, -0.1f);
    for (int kind = 0; kind < 2; kind++) {
        if (kind == 0)
            efc_k_maxpool2d_f32(&g, x, y);
        else
            efc_k_avgpool2d_f32(&g, x, y);
        for (size_t nc = 0; nc < (size_t)g.n * g.c; nc++)
            for (int32_t oy = 0; oy < g.oh; oy++)
                for (int32_t ox = 0; ox < g.ow; ox++) {
                    double m = -INFINITY, s = 0.0, a = 0.0;
                    int cnt = 0, cnt_pad = 0;
                    for (int32_t ky = 0; ky < g.kh; ky++)
                        for (int32_t kx = 0; kx < g.kw; kx++) {
                            int32_t iy = oy * g.sh - g.pt + ky, ix = ox * g.sw - g.pl + kx;
                            if (iy < g.h + k->pb && ix < g.w + k->pr)
                                cnt_pad++; /* inside the padded extent */
                            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w)
                                continue;
                            double v = x[nc * g.h * g.w + (size_t)iy * g.w + ix];
                            m = v > m ? v : m;
                            s += v;
                            a += fabs(v);
                            cnt++;
                        }
                    size_t i = nc * g.oh * g.ow + (size_t)oy * g.ow + ox;
                    if (kind == 0) {
                        yr[i] = cnt > 0 ? m : 0.0;
                        mag[i] = fabs(yr[i]);
                    } else {
                        int d = include_pad ? cnt_pad : cnt;
                        yr[i] = d > 0 ? s / d : 0.0;
                        mag[i] = d > 0 ? a / d : 0.0;
                    }
                }
        char what[128];
        snprintf(what, sizeof(what), "%s n%d c%d %dx%d k%dx%d s%dx%d pad t%d l%d b%d r%d inc%d",
                 kind == 0 ? "maxpool" : "avgpool", k->n, k->c, k->h, k->w, k->kh, k->kw, k->sh,
                 k->sw, k->pt, k->pl, k->pb, k->pr, include_pad);
        check_close(what, y, yr, mag, ny);
    }
    efc_free(x);
    efc_free(y);
    efc_free(yr);
    efc_free(mag);
}

static void test_pools(void **state)
{
    (void)state;
    static const struct pool_case cases[] = {
        {2, 3, 28, 28, 2, 2, 2, 2, 0, 0, 0, 0},
        {1, 2, 7, 7, 3, 3, 2, 2, 1, 1, 1, 1},
        {3, 1, 13, 17, 3, 3, 2, 2, 1, 0, 0, 1},
        {1, 4, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1},
        {2, 2, 17, 7, 2, 3, 2, 1, 0, 1, 1, 1},
        {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
    };
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x99);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (int inc = 0; inc <= 1; inc++)
            run_pool(&cases[i], inc, &r);
}

static void test_gavgpool_affine_softmax(void **state)
{
    (void)state;
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0xaa);
    const int32_t n = 3, c = 7, hw = 49;
    size_t nx = (size_t)n * c * hw;
    float *x = falloc(nx), *y = falloc(nx), *sc = falloc((size_t)c), *sh = falloc((size_t)c);
    double *yr = efc_malloc(nx * sizeof(double)), *mag = efc_malloc(nx * sizeof(double));
    fill_uniform(&r, x, nx, -3.0f, 8.0f);
    efc_k_gavgpool_f32(n, c, hw, x, y);
    for (size_t i = 0; i < (size_t)n * c; i++) {
        double s = 0.0, a = 0.0;
        for (int32_t j = 0; j < hw; j++) {
            s += x[i * hw + j];
            a += fabs(x[i * hw + j]);
        }
        yr[i] = s / hw;
        mag[i] = a / hw;
    }
    check_close("gavgpool", y, yr, mag, (size_t)n * c);

    fill_uniform(&r, sc, (size_t)c, -2.0f, 2.0f);
    fill_uniform(&r, sh, (size_t)c, -1.0f, 1.0f);
    for (int act = 0; act <= 2; act++) {
        efc_k_channel_affine_f32(n, c, hw, x, sc, sh, y, (enum efc_k_act)act);
        for (size_t i = 0; i < nx; i++) {
            size_t ch = (i / hw) % c;
            yr[i] = act_d((double)x[i] * sc[ch] + sh[ch], (enum efc_k_act)act);
            mag[i] = fabs((double)x[i] * sc[ch]) + fabs(sh[ch]);
        }
        check_close("channel_affine", y, yr, mag, nx);
    }

    /* Softmax: large logits (stability), in place, odd row lengths. */
    static const int32_t cols_list[] = {1, 3, 10, 17, 1000};
    for (size_t t = 0; t < 5; t++) {
        int32_t rows = 3, cols = cols_list[t];
        size_t m = (size_t)rows * cols;
        float *s = falloc(m);
        double *sr = efc_malloc(m * sizeof(double)), *sm = efc_malloc(m * sizeof(double));
        fill_uniform(&r, s, m, -20.0f, 20.0f);
        s[0] += 1000.0f; /* exp(1000) overflows float without the max shift */
        for (int32_t i = 0; i < rows; i++) {
            double mx = -INFINITY, z = 0.0;
            for (int32_t j = 0; j < cols; j++)
                mx = fmax(mx, s[(size_t)i * cols + j]);
            for (int32_t j = 0; j < cols; j++)
                z += exp((double)s[(size_t)i * cols + j] - mx);
            for (int32_t j = 0; j < cols; j++) {
                size_t q = (size_t)i * cols + j;
                sr[q] = exp((double)s[q] - mx) / z;
                sm[q] = sr[q] * 2.0 + 1e-6 / cols; /* expf: a few ulp per term */
            }
        }
        efc_k_softmax_f32(rows, cols, s, s);
        check_close("softmax", s, sr, sm, m);
        efc_free(s);
        efc_free(sr);
        efc_free(sm);
    }
    efc_free(x);
    efc_free(y);
    efc_free(sc);
    efc_free(sh);
    efc_free(yr);
    efc_free(mag);
}

/* ---------------------------------------------------------------- dispatch */

static void test_dispatch(void **state)
{
    (void)state;
    /* A bad EFC_ISA is reported with a clear detail, even after initialisation. The
     * caller's EFC_ISA (e.g. EFC_ISA=ref to run every test on the reference epilogues) is
     * restored and used for the table. */
    char saved[32] = "";
    const char *env = getenv("EFC_ISA");
    enum efc_isa cap = efc_isa_best();
    if (env != NULL) {
        snprintf(saved, sizeof(saved), "%s", env);
        assert_int_equal(efc_isa_parse(saved, &cap), EFC_OK);
    }
    setenv("EFC_ISA", "avx9000", 1);
    efc_err_clear();
    assert_int_equal(efc_kernels_init_env(), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "EFC_ISA=avx9000"));
    if (saved[0] != '\0')
        setenv("EFC_ISA", saved, 1);
    else
        unsetenv("EFC_ISA");

    assert_int_equal(efc_kernels_init_env(), EFC_OK);
    const struct efc_kernel_table *t = efc_kernels();
    assert_non_null(t->relu_f32);
    assert_non_null(t->relu6_f32);
    assert_non_null(t->add_f32);
    assert_non_null(t->bias_act_f32);
    /* Second init with another cap returns the first result and keeps the table. */
    struct efc_kernel_table before = *t;
    assert_int_equal(efc_kernels_init(EFC_ISA_REF), EFC_OK);
    assert_memory_equal(&before, efc_kernels(), sizeof(before));
    enum efc_isa level = efc_isa_cap(efc_isa_best(), cap);
    assert_int_equal(efc_kernels_isa(), level);
    if (level == EFC_ISA_REF)
        assert_ptr_equal(t->relu_f32, efc_k_relu_f32__ref);
#if defined(EFC_HAVE_X86)
    if (level >= EFC_ISA_AVX512 && level <= EFC_ISA_AMX)
        assert_ptr_equal(t->bias_act_f32, efc_k_bias_act_f32__avx512);
    else if (level == EFC_ISA_AVX2)
        assert_ptr_equal(t->bias_act_f32, efc_k_bias_act_f32__avx2);
#endif
    printf("kernels isa %s, OpenBLAS core %s\n", efc_isa_name(efc_kernels_isa()),
           efc_blas_core());
}

int main(void)
{
    const char *s = getenv("EFC_TEST_SEED");
    if (s != NULL && s[0] != '\0')
        g_seed = strtoull(s, NULL, 0);
    printf("test_kernels_f32 seed=%llu (set EFC_TEST_SEED to change)\n",
           (unsigned long long)g_seed);
    init_lengths();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_ref_semantics),
        cmocka_unit_test(test_variants_vs_ref),
        cmocka_unit_test(test_conv_cases),
        cmocka_unit_test(test_conv_random),
        cmocka_unit_test(test_conv_chunked),
        cmocka_unit_test(test_im2col_adjoint),
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_pools),
        cmocka_unit_test(test_gavgpool_affine_softmax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
