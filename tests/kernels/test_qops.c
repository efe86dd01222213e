/* test_qops.c — the INT8 ops other than the GEMM (kernels_qops.inc).
 *
 * 1. Each __ref against an independent formula written here (int64 floor division for the
 *    requantisation, double arithmetic for the average pools' rounding and for quantize's RNE,
 *    a window walk for the pool divisors, per-element indexing for im2row).
 * 2. Every kernels_qops.inc variant the CPU runs against __ref, bit-exact (memcmp), on random
 *    and edge-case inputs, with guard bytes before and after every output (and between the
 *    rows of im2row) that no variant may touch.
 * 3. efc_k_qadd_params_make: errors, and the documented error bound against float math.
 * Seed: EFC_TEST_SEED or a fixed default; printed at start. EFC_QOPS_BENCH=1 also prints the
 * micro-benchmark of docs/kernels-int8-ops.md (ns per call, every variant).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "common/efc_status.h"
#include "kernels/kernels.h"
#include "kernels/qops.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static uint64_t g_seed = 20260823;

#define GUARD 64
#define SENT 0xA5

static int isa_runs_here(enum efc_isa isa)
{
    enum efc_isa best = efc_isa_best();
    if (isa == EFC_ISA_REF)
        return 1;
    if (isa == EFC_ISA_NEON || best == EFC_ISA_NEON)
        return isa == best;
    return isa <= best;
}

/* A byte buffer of n usable bytes with GUARD sentinel bytes on both sides. */
struct gbuf {
    uint8_t *base;
    uint8_t *p;
    size_t n;
};

static void gbuf_init(struct gbuf *b, size_t n)
{
    b->base = efc_malloc(n + 2 * GUARD);
    assert_non_null(b->base);
    b->p = b->base + GUARD;
    b->n = n;
    memset(b->base, SENT, n + 2 * GUARD);
}

static void gbuf_fini(struct gbuf *b)
{
    efc_free(b->base);
    b->base = b->p = NULL;
}

static void check_guards(const char *fn, const struct gbuf *b)
{
    for (size_t i = 0; i < GUARD; i++) {
        if (b->base[i] != SENT || b->base[GUARD + b->n + i] != SENT) {
            print_error("%s: wrote outside its output (guard %zu) seed=%llu\n", fn, i,
                        (unsigned long long)g_seed);
            fail();
        }
    }
}

static void check_same(const char *fn, const char *what, const uint8_t *got,
                       const uint8_t *want, size_t n)
{
    if (memcmp(got, want, n) == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            print_error("%s %s: byte %zu got %u want %u seed=%llu\n", fn, what, i, got[i],
                        want[i], (unsigned long long)g_seed);
            break;
        }
    }
    fail();
}

static void fill_u8(struct efc_rng *r, uint8_t *p, size_t n, int mode)
{
    for (size_t i = 0; i < n; i++)
        p[i] = mode == 1 ? 0 : mode == 2 ? 255 : (uint8_t)efc_rng_below(r, 256);
}

static int32_t rnd_range(struct efc_rng *r, int32_t lo, int32_t hi)
{
    return lo + (int32_t)efc_rng_below(r, (uint32_t)(hi - lo + 1));
}

/* ----------------------------------------------------------- independent definitions */

/* floor((acc * mult + 2^(shift-1)) / 2^shift) via C's truncating division, then zp, clamp. */
static uint8_t requant_indep(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo,
                             int32_t hi)
{
    int64_t v = (int64_t)acc * mult + ((int64_t)1 << (shift - 1));
    int64_t d = (int64_t)1 << shift;
    int64_t q = v / d;
    if (v % d != 0 && v < 0)
        q--;
    q += zp;
    return (uint8_t)(q < lo ? lo : q > hi ? hi : q);
}

/* Round half to even, written out. */
static double rne_indep(double v)
{
    double f = floor(v), d = v - f;
    if (d > 0.5)
        return f + 1.0;
    if (d < 0.5)
        return f;
    return fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

static uint8_t quantize_indep(float x, float inv, int32_t zp)
{
    float v = (float)((double)x * (double)inv); /* exact product, one rounding to fp32 */
    if (isnan(v))
        return 0;
    double q = isinf(v) ? (v > 0 ? 1e9 : -1e9) : rne_indep((double)v) + zp;
    return (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
}

/* ------------------------------------------------------------------ geometry helpers */

static void random_conv_geom(struct efc_rng *r, struct efc_conv_geom *g, int32_t c,
                             int32_t dm)
{
    for (;;) {
        memset(g, 0, sizeof(*g));
        g->n = 1 + (int32_t)efc_rng_below(r, 2);
        g->c = c;
        g->oc = c * dm;
        g->groups = c;
        g->h = rnd_range(r, 1, 9);
        g->w = rnd_range(r, 1, 9);
        g->kh = efc_rng_below(r, 4) == 0 ? rnd_range(r, 1, 5) : 3;
        g->kw = efc_rng_below(r, 4) == 0 ? rnd_range(r, 1, 5) : g->kh;
        g->sh = rnd_range(r, 1, 2);
        g->sw = efc_rng_below(r, 3) == 0 ? 3 - g->sh : g->sh;
        g->pt = rnd_range(r, 0, 2);
        g->pl = rnd_range(r, 0, 2);
        int32_t pb = rnd_range(r, 0, 2), pr = rnd_range(r, 0, 2);
        int32_t eh = g->h + g->pt + pb - g->kh, ew = g->w + g->pl + pr - g->kw;
        if (eh < 0 || ew < 0)
            continue;
        g->oh = eh / g->sh + 1;
        g->ow = ew / g->sw + 1;
        return;
    }
}

/* ---------------------------------------------------------------------- im2row_u8 */

static void im2row_indep(const struct efc_conv_geom *g, const uint8_t *x, uint8_t pad,
                         int32_t p0, int32_t np, uint8_t *out, size_t ldo)
{
    const int32_t k = g->kh * g->kw * g->c;
    for (int32_t p = 0; p < np; p++) {
        for (int32_t e = 0; e < k; e++) {
            int32_t ci = e % g->c, kx = (e / g->c) % g->kw, ky = e / (g->c * g->kw);
            int32_t oy = (p0 + p) / g->ow, ox = (p0 + p) % g->ow;
            int32_t iy = oy * g->sh + ky - g->pt, ix = ox * g->sw + kx - g->pl;
            out[(size_t)p * ldo + e] = (iy < 0 || ix < 0 || iy >= g->h || ix >= g->w)
                                           ? pad
                                           : x[(size_t)(iy * g->w + ix) * g->c + ci];
        }
    }
}

static void run_im2row_u8(const char *name, efc_k_im2row_u8_fn fn, int indep)
{
    static const int32_t cs[] = {1, 3, 15, 16, 17, 31, 32, 33, 64, 67};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x101);
    for (int t = 0; t < 400; t++) {
        struct efc_conv_geom g;
        random_conv_geom(&r, &g, cs[t % 10], 1);
        g.groups = 1;
        g.oc = 8;
        g.n = 1;
        const size_t k = (size_t)g.kh * g.kw * g.c, nx = (size_t)g.h * g.w * g.c;
        const int32_t P = g.oh * g.ow;
        int32_t p0 = (int32_t)efc_rng_below(&r, (uint32_t)P + 1);
        int32_t np = (int32_t)efc_rng_below(&r, (uint32_t)(P - p0) + 1);
        if (t % 3 == 0)
            p0 = 0, np = P;
        size_t ldo = k + efc_rng_below(&r, 3) * 7;
        uint8_t pad = t % 4 == 0 ? 0 : t % 4 == 1 ? 255 : (uint8_t)efc_rng_below(&r, 256);
        struct gbuf x, y, yr;
        gbuf_init(&x, nx);
        gbuf_init(&y, np > 0 ? (size_t)(np - 1) * ldo + k : 0);
        gbuf_init(&yr, y.n);
        fill_u8(&r, x.p, nx, t % 5 == 0 ? 2 : 0);
        if (indep)
            im2row_indep(&g, x.p, pad, p0, np, yr.p, ldo);
        else
            efc_k_im2row_u8__ref(&g, x.p, pad, p0, np, yr.p, ldo);
        fn(&g, x.p, pad, p0, np, y.p, ldo);
        check_same(name, "im2row", y.p, yr.p, y.n);
        check_guards(name, &y);
        /* the gap between rows (ldo > k) is never written */
        for (int32_t p = 0; p + 1 < np; p++)
            for (size_t e = k; e < ldo; e++)
                if (y.p[(size_t)p * ldo + e] != SENT) {
                    print_error("%s: wrote into the row gap seed=%llu\n", name,
                                (unsigned long long)g_seed);
                    fail();
                }
        gbuf_fini(&x);
        gbuf_fini(&y);
        gbuf_fini(&yr);
    }
}

/* ------------------------------------------------------------------------ qdwconv */

static void dw_indep(const struct efc_conv_geom *g, const uint8_t *x, int32_t zp_x,
                     const int8_t *w, const int32_t *bias, const struct efc_requant *rq,
                     uint8_t *y)
{
    const int32_t dm = g->oc / g->c;
    for (int32_t n = 0; n < g->n; n++)
        for (int32_t oy = 0; oy < g->oh; oy++)
            for (int32_t ox = 0; ox < g->ow; ox++)
                for (int32_t ci = 0; ci < g->c; ci++)
                    for (int32_t j = 0; j < dm; j++) {
                        int32_t o = ci * dm + j;
                        int64_t acc = bias ? bias[o] : 0;
                        for (int32_t ky = 0; ky < g->kh; ky++)
                            for (int32_t kx = 0; kx < g->kw; kx++) {
                                int32_t iy = oy * g->sh + ky - g->pt;
                                int32_t ix = ox * g->sw + kx - g->pl;
                                int64_t xv = zp_x; /* padding: real 0 */
                                if (iy >= 0 && ix >= 0 && iy < g->h && ix < g->w)
                                    xv = x[(((size_t)n * g->h + iy) * g->w + ix) * g->c + ci];
                                acc += (xv - zp_x) * w[(ky * g->kw + kx) * g->oc + o];
                            }
                        assert_true(acc >= INT32_MIN && acc <= INT32_MAX);
                        int32_t k = rq->per_tensor ? 0 : o;
                        y[(((size_t)n * g->oh + oy) * g->ow + ox) * g->oc + o] =
                            requant_indep((int32_t)acc, rq->mult[k], rq->shift[k], rq->zp_out,
                                          rq->lo, rq->hi);
                    }
}

static void run_qdwconv(const char *name, efc_k_qdwconv_fn fn, int indep)
{
    static const int32_t cs[] = {1, 3, 15, 16, 17, 31, 32, 33, 64, 67};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x202);
    int32_t *mult = efc_malloc(256 * sizeof(int32_t)), *shift = efc_malloc(256 * sizeof(int32_t));
    int32_t *bias = efc_malloc(256 * sizeof(int32_t));
    int8_t *w = efc_malloc(25 * 256);
    assert_true(mult && shift && bias && w);
    int clamped_lo = 0, clamped_hi = 0;
    for (int t = 0; t < 500; t++) {
        struct efc_conv_geom g;
        int32_t dm = t % 5 == 4 ? 2 : t % 17 == 3 ? 3 : 1;
        random_conv_geom(&r, &g, cs[t % 10], dm);
        int mode = t % 7 == 5 ? 1 : t % 7 == 6 ? 2 : 0; /* random / all 0 / all 255 */
        int32_t zp_x = t % 3 == 0 ? 0 : t % 3 == 1 ? 255 : (int32_t)efc_rng_below(&r, 256);
        struct efc_requant rq = {mult, shift, (int32_t)(t % 4 == 0), 0, 0, 255};
        rq.zp_out = t % 5 == 0 ? 0 : t % 5 == 1 ? 255 : (int32_t)efc_rng_below(&r, 256);
        if (t % 3 == 1) {
            rq.lo = rnd_range(&r, 0, 128);
            rq.hi = rnd_range(&r, rq.lo, 255);
        }
        for (int32_t o = 0; o < g.oc; o++) {
            double rr = ldexp(1.0 + efc_rng_uniform(&r), -rnd_range(&r, 6, 14));
            if (t % 50 == 7)
                rr = o % 2 ? 0.999999 : 1e-12; /* extremes of efc_k_requant_make */
            assert_int_equal(efc_k_requant_make(rr, &mult[o], &shift[o]), EFC_OK);
            bias[o] = rnd_range(&r, -40000, 40000);
        }
        for (int32_t i = 0; i < g.kh * g.kw * g.oc; i++)
            w[i] = t % 11 == 10 ? (int8_t)(i % 2 ? 127 : -127) : (int8_t)rnd_range(&r, -127, 127);
        const size_t nx = (size_t)g.n * g.h * g.w * g.c, ny = (size_t)g.n * g.oh * g.ow * g.oc;
        struct gbuf x, y, yr;
        gbuf_init(&x, nx);
        gbuf_init(&y, ny);
        gbuf_init(&yr, ny);
        fill_u8(&r, x.p, nx, mode);
        const int32_t *b = t % 13 == 12 ? NULL : bias;
        if (indep)
            dw_indep(&g, x.p, zp_x, w, b, &rq, yr.p);
        else
            efc_k_qdwconv__ref(&g, x.p, zp_x, w, b, &rq, yr.p);
        fn(&g, x.p, zp_x, w, b, &rq, y.p);
        check_same(name, "qdwconv", y.p, yr.p, ny);
        check_guards(name, &y);
        for (size_t i = 0; i < ny; i++) {
            clamped_lo += y.p[i] == rq.lo;
            clamped_hi += y.p[i] == rq.hi;
        }
        gbuf_fini(&x);
        gbuf_fini(&y);
        gbuf_fini(&yr);
    }
    /* the cases do reach both clamps (so the clamp path is exercised) */
    assert_true(clamped_lo > 100 && clamped_hi > 100);
    efc_free(mult);
    efc_free(shift);
    efc_free(bias);
    efc_free(w);
}

/* -------------------------------------------------------------------------- pools */

static void random_pool_geom(struct efc_rng *r, struct efc_pool_geom *g, int32_t c)
{
    for (;;) {
        memset(g, 0, sizeof(*g));
        g->n = 1 + (int32_t)efc_rng_below(r, 2);
        g->c = c;
        g->h = rnd_range(r, 1, 9);
        g->w = rnd_range(r, 1, 9);
        g->kh = rnd_range(r, 1, 4);
        g->kw = efc_rng_below(r, 3) == 0 ? rnd_range(r, 1, 4) : g->kh;
        g->sh = rnd_range(r, 1, 3);
        g->sw = efc_rng_below(r, 3) == 0 ? rnd_range(r, 1, 3) : g->sh;
        g->pt = rnd_range(r, 0, 2);
        g->pl = rnd_range(r, 0, 2);
        int32_t pb = rnd_range(r, 0, 2), pr = rnd_range(r, 0, 2);
        int32_t eh = g->h + g->pt + pb - g->kh, ew = g->w + g->pl + pr - g->kw;
        if (eh < 0 || ew < 0)
            continue;
        g->oh = eh / g->sh + 1;
        g->ow = ew / g->sw + 1;
        g->count_include_pad = (int32_t)efc_rng_below(r, 2);
        g->zp = (int32_t)efc_rng_below(r, 256);
        return;
    }
}

/* Pools by walking each window cell: max, and avg as floor(sum / cnt + 0.5) in double
 * (exact: sum / cnt is correctly rounded and a true tie k + 1/2 is representable). */
static void pool_indep(const struct efc_pool_geom *g, const uint8_t *x, uint8_t *y, int avg)
{
    const int32_t pb = (g->oh - 1) * g->sh + g->kh - g->pt - g->h;
    const int32_t pr = (g->ow - 1) * g->sw + g->kw - g->pl - g->w;
    for (int32_t n = 0; n < g->n; n++)
        for (int32_t oy = 0; oy < g->oh; oy++)
            for (int32_t ox = 0; ox < g->ow; ox++)
                for (int32_t c = 0; c < g->c; c++) {
                    double sum = 0.0;
                    int32_t cnt = 0, mx = -1;
                    for (int32_t ky = 0; ky < g->kh; ky++)
                        for (int32_t kx = 0; kx < g->kw; kx++) {
                            int32_t iy = oy * g->sh + ky - g->pt, ix = ox * g->sw + kx - g->pl;
                            int in_img = iy >= 0 && ix >= 0 && iy < g->h && ix < g->w;
                            int in_pad = iy >= -g->pt && ix >= -g->pl && iy < g->h + pb &&
                                         ix < g->w + pr;
                            if (in_img) {
                                int32_t v = x[(((size_t)n * g->h + iy) * g->w + ix) * g->c + c];
                                sum += v;
                                mx = v > mx ? v : mx;
                                cnt++;
                            } else if (in_pad && g->count_include_pad) {
                                sum += g->zp;
                                cnt++;
                            }
                        }
                    uint8_t v = avg ? (cnt ? (uint8_t)floor(sum / cnt + 0.5) : 0)
                                    : (uint8_t)(mx < 0 ? 0 : mx);
                    y[(((size_t)n * g->oh + oy) * g->ow + ox) * g->c + c] = v;
                }
}

static void run_pool(const char *name, efc_k_qpool_fn fn, efc_k_qpool_fn ref, int avg,
                     int indep)
{
    static const int32_t cs[] = {1, 3, 6, 15, 16, 17, 31, 32, 33, 63, 64, 65, 67, 129};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ (avg ? 0x303 : 0x404));
    for (int t = 0; t < 600; t++) {
        struct efc_pool_geom g;
        random_pool_geom(&r, &g, cs[t % 14]);
        if (!avg)
            g.count_include_pad = 0;
        const size_t nx = (size_t)g.n * g.h * g.w * g.c, ny = (size_t)g.n * g.oh * g.ow * g.c;
        struct gbuf x, y, yr;
        gbuf_init(&x, nx);
        gbuf_init(&y, ny);
        gbuf_init(&yr, ny);
        fill_u8(&r, x.p, nx, t % 9 == 7 ? 1 : t % 9 == 8 ? 2 : 0);
        if (t % 9 == 6) /* values near ties: 0/1 patterns average to k + 1/2 often */
            for (size_t i = 0; i < nx; i++)
                x.p[i] = (uint8_t)(100 + efc_rng_below(&r, 2));
        if (indep)
            pool_indep(&g, x.p, yr.p, avg);
        else
            ref(&g, x.p, yr.p);
        fn(&g, x.p, y.p);
        check_same(name, avg ? "qavgpool" : "qmaxpool", y.p, yr.p, ny);
        check_guards(name, &y);
        gbuf_fini(&x);
        gbuf_fini(&y);
        gbuf_fini(&yr);
    }
}

static void run_qmaxpool(const char *name, efc_k_qpool_fn fn, int indep)
{
    run_pool(name, fn, efc_k_qmaxpool__ref, 0, indep);
}

static void run_qavgpool(const char *name, efc_k_qpool_fn fn, int indep)
{
    run_pool(name, fn, efc_k_qavgpool__ref, 1, indep);
}

static void run_qgavgpool(const char *name, efc_k_qgavgpool_fn fn, int indep)
{
    static const int32_t cs[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 67};
    static const int32_t hws[] = {0, 1, 2, 3, 4, 5, 9, 49, 64, 81, 200, 33000};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x505);
    for (size_t ci = 0; ci < sizeof(cs) / sizeof(cs[0]); ci++) {
        for (size_t hi = 0; hi < sizeof(hws) / sizeof(hws[0]); hi++) {
            for (int mode = 0; mode < 4; mode++) {
                int32_t n = 1 + (int32_t)(ci % 2), hw = hws[hi], c = cs[ci];
                if (hw > 1000 && (c > 9 || mode > 1))
                    continue; /* the big window once per small c */
                const size_t nx = (size_t)n * hw * c, ny = (size_t)n * c;
                struct gbuf x, y, yr;
                gbuf_init(&x, nx);
                gbuf_init(&y, ny);
                gbuf_init(&yr, ny);
                fill_u8(&r, x.p, nx, mode < 3 ? mode : 0);
                if (mode == 3)
                    for (size_t i = 0; i < nx; i++)
                        x.p[i] = (uint8_t)(7 + efc_rng_below(&r, 2));
                if (indep) {
                    for (int32_t i = 0; i < n; i++)
                        for (int32_t ch = 0; ch < c; ch++) {
                            double s = 0.0;
                            for (int32_t j = 0; j < hw; j++)
                                s += x.p[((size_t)i * hw + j) * c + ch];
                            yr.p[(size_t)i * c + ch] = hw ? (uint8_t)floor(s / hw + 0.5) : 0;
                        }
                } else {
                    efc_k_qgavgpool__ref(n, hw, c, x.p, yr.p);
                }
                fn(n, hw, c, x.p, y.p);
                check_same(name, "qgavgpool", y.p, yr.p, ny);
                check_guards(name, &y);
                gbuf_fini(&x);
                gbuf_fini(&y);
                gbuf_fini(&yr);
            }
        }
    }
}

/* ---------------------------------------------------------------- element-wise ops */

static size_t g_lengths[90];
static size_t g_n_lengths;

static void init_lengths(void)
{
    g_n_lengths = 0;
    for (size_t n = 0; n <= 70; n++)
        g_lengths[g_n_lengths++] = n;
    g_lengths[g_n_lengths++] = 127;
    g_lengths[g_n_lengths++] = 128;
    g_lengths[g_n_lengths++] = 129;
    g_lengths[g_n_lengths++] = 1001;
    g_lengths[g_n_lengths++] = 1037;
}

static void qadd_indep(size_t n, const uint8_t *a, const uint8_t *b,
                       const struct efc_qadd_params *p, uint8_t *y)
{
    for (size_t i = 0; i < n; i++) {
        int64_t acc = ((int64_t)a[i] - p->zp_a) * p->m_a + ((int64_t)b[i] - p->zp_b) * p->m_b;
        y[i] = requant_indep((int32_t)acc, p->mult, p->shift, p->zp_y, p->lo, p->hi);
    }
}

static void random_qadd_params(struct efc_rng *r, int t, struct efc_qadd_params *p)
{
    float s_a = ldexpf(1.0f + efc_rng_uniform(r), -rnd_range(r, 2, 10));
    float s_b = t % 4 == 0 ? s_a : ldexpf(1.0f + efc_rng_uniform(r), -rnd_range(r, 2, 10));
    if (t % 7 == 3)
        s_b = s_a * 1e-5f; /* very different scales: m_b rounds to 0 or 1 */
    float s_y = (s_a + s_b) * (0.5f + 2.0f * efc_rng_uniform(r));
    int32_t zp[3];
    for (int k = 0; k < 3; k++)
        zp[k] = t % 3 == 0 ? 0 : t % 3 == 1 ? 255 : (int32_t)efc_rng_below(r, 256);
    int32_t lo = t % 2 ? zp[2] : 0, hi = t % 5 == 1 ? rnd_range(r, lo, 255) : 255;
    assert_int_equal(efc_k_qadd_params_make(s_a, zp[0], s_b, zp[1], s_y, zp[2], lo, hi, p),
                     EFC_OK);
}

static void run_qadd(const char *name, efc_k_qadd_fn fn, int indep)
{
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x606);
    for (int t = 0; t < 12; t++) {
        struct efc_qadd_params p;
        random_qadd_params(&r, t, &p);
        for (size_t li = 0; li < g_n_lengths; li++) {
            size_t n = g_lengths[li];
            struct gbuf a, b, y, yr;
            gbuf_init(&a, n);
            gbuf_init(&b, n);
            gbuf_init(&y, n);
            gbuf_init(&yr, n);
            fill_u8(&r, a.p, n, t % 6 == 4 ? 2 : 0);
            fill_u8(&r, b.p, n, t % 6 == 5 ? 1 : t % 6 == 4 ? 2 : 0);
            if (indep)
                qadd_indep(n, a.p, b.p, &p, yr.p);
            else
                efc_k_qadd__ref(n, a.p, b.p, &p, yr.p);
            fn(n, a.p, b.p, &p, y.p);
            check_same(name, "qadd", y.p, yr.p, n);
            check_guards(name, &y);
            memcpy(y.p, a.p, n); /* in place: y aliases a */
            fn(n, y.p, b.p, &p, y.p);
            check_same(name, "qadd in place", y.p, yr.p, n);
            gbuf_fini(&a);
            gbuf_fini(&b);
            gbuf_fini(&y);
            gbuf_fini(&yr);
        }
    }
    /* extreme hand-made parameters: largest multipliers, both zero points at the ends */
    struct efc_qadd_params q = {0, 255, 32767, 32767, 2147483647, 31, 128, 0, 255};
    uint8_t a[300], b[300], y[300], yr[300];
    for (int i = 0; i < 300; i++) {
        a[i] = (uint8_t)(i < 256 ? i : 255);
        b[i] = (uint8_t)(i < 256 ? 255 - i : 0);
    }
    for (int k = 0; k < 2; k++) {
        if (k == 1)
            q.mult = 1073741824, q.shift = 62;
        efc_k_qadd__ref(300, a, b, &q, yr);
        fn(300, a, b, &q, y);
        check_same(name, "qadd extreme", y, yr, 300);
        if (indep) {
            qadd_indep(300, a, b, &q, y);
            check_same(name, "qadd extreme indep", y, yr, 300);
        }
    }
}

static void fill_floats(struct efc_rng *r, float *p, size_t n, int t)
{
    static const float sp[] = {0.0f,     -0.0f,     0.5f,      1.5f,      2.5f,     -0.5f,
                               -1.5f,    -2.5f,     127.5f,    128.5f,    254.5f,   255.5f,
                               -127.5f,  1e30f,     -1e30f,    INFINITY,  -INFINITY, NAN,
                               -NAN,     2147483648.0f, -2147483648.0f, 4294967296.0f,
                               1e-45f,   -1e-45f,   1023.5f,   1024.5f,   -1024.5f, 0.49999997f};
    for (size_t i = 0; i < n; i++) {
        if (t % 2 == 0 && efc_rng_below(r, 4) == 0)
            p[i] = sp[efc_rng_below(r, sizeof(sp) / sizeof(sp[0]))];
        else if (t % 3 == 1) /* exact halves at scale 1: ties everywhere */
            p[i] = 0.5f * (float)rnd_range(r, -600, 600);
        else
            p[i] = (efc_rng_uniform(r) * 2.0f - 1.0f) * 400.0f;
    }
}

static void run_quantize(const char *name, efc_k_quantize_fn fn, int indep)
{
    static const float invs[] = {1.0f, 0.5f, 3.0f, 1e-3f, 1e12f, 7.3f, -1.0f};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x707);
    float *x = efc_malloc(1100 * sizeof(float));
    assert_non_null(x);
    for (int t = 0; t < 14; t++) {
        float inv = invs[t % 7];
        int32_t zp = t % 3 == 0 ? 0 : t % 3 == 1 ? 255 : 128;
        for (size_t li = 0; li < g_n_lengths; li++) {
            size_t n = g_lengths[li];
            struct gbuf y, yr;
            gbuf_init(&y, n);
            gbuf_init(&yr, n);
            fill_floats(&r, x, n, t);
            if (indep)
                for (size_t i = 0; i < n; i++)
                    yr.p[i] = quantize_indep(x[i], inv, zp);
            else
                efc_k_quantize__ref(n, x, inv, zp, yr.p);
            fn(n, x, inv, zp, y.p);
            check_same(name, "quantize", y.p, yr.p, n);
            check_guards(name, &y);
            gbuf_fini(&y);
            gbuf_fini(&yr);
        }
    }
    efc_free(x);
}

static void run_dequantize(const char *name, efc_k_dequantize_fn fn, int indep)
{
    static const float scales[] = {1.0f, 0.0078125f, 0.1f, 3.3e-7f, -2.5f, 1e30f};
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x808);
    float *y = efc_malloc((1100 + 2 * GUARD) * sizeof(float));
    float *yr = efc_malloc((1100 + 2 * GUARD) * sizeof(float));
    assert_true(y && yr);
    for (int t = 0; t < 12; t++) {
        float s = scales[t % 6];
        int32_t zp = t % 3 == 0 ? 0 : t % 3 == 1 ? 255 : (int32_t)efc_rng_below(&r, 256);
        for (size_t li = 0; li < g_n_lengths; li++) {
            size_t n = g_lengths[li];
            struct gbuf x;
            gbuf_init(&x, n);
            fill_u8(&r, x.p, n, t % 4 == 3 ? 2 : 0);
            for (size_t i = 0; i < n + 2 * GUARD; i++)
                y[i] = yr[i] = 12345.0f;
            if (indep)
                for (size_t i = 0; i < n; i++)
                    yr[GUARD + i] = (float)((double)((int32_t)x.p[i] - zp) * (double)s);
            else
                efc_k_dequantize__ref(n, x.p, s, zp, yr + GUARD);
            fn(n, x.p, s, zp, y + GUARD);
            if (memcmp(y, yr, (n + 2 * GUARD) * sizeof(float)) != 0) {
                print_error("%s: dequantize n=%zu scale %g zp %d differs (or guard hit) "
                            "seed=%llu\n", name, n, (double)s, (int)zp,
                            (unsigned long long)g_seed);
                fail();
            }
            gbuf_fini(&x);
        }
    }
    efc_free(y);
    efc_free(yr);
}

/* ----------------------------------------------------------------------- the tests */

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
        run_##op(#fn, fn, 0);                                                           \
        n_run++;                                                                        \
    } while (0);
#include "kernels/kernels_qops.inc"
#undef EFC_KERNEL
    assert_true(n_run >= 8);
}

/* The references themselves against the independent definitions above. */
static void test_ref_vs_independent(void **state)
{
    (void)state;
    run_im2row_u8("efc_k_im2row_u8__ref", efc_k_im2row_u8__ref, 1);
    run_qdwconv("efc_k_qdwconv__ref", efc_k_qdwconv__ref, 1);
    run_qmaxpool("efc_k_qmaxpool__ref", efc_k_qmaxpool__ref, 1);
    run_qavgpool("efc_k_qavgpool__ref", efc_k_qavgpool__ref, 1);
    run_qgavgpool("efc_k_qgavgpool__ref", efc_k_qgavgpool__ref, 1);
    run_qadd("efc_k_qadd__ref", efc_k_qadd__ref, 1);
    run_quantize("efc_k_quantize__ref", efc_k_quantize__ref, 1);
    run_dequantize("efc_k_dequantize__ref", efc_k_dequantize__ref, 1);
}

/* Hand-checked values of the documented rules. */
static void test_known_values(void **state)
{
    (void)state;
    /* quantize: RNE ties, -0, NaN, +-inf, huge */
    const float x[] = {0.5f, 1.5f, 2.5f, -0.5f, -0.0f, NAN, INFINITY, -INFINITY, 3e9f, 254.5f,
                       -3.5f};
    const uint8_t want0[] = {0, 2, 2, 0, 0, 0, 255, 0, 255, 254, 0};
    const uint8_t want10[] = {10, 12, 12, 10, 10, 0, 255, 0, 255, 255, 6};
    uint8_t y[11];
    efc_k_quantize__ref(11, x, 1.0f, 0, y);
    assert_memory_equal(y, want0, 11);
    efc_k_quantize__ref(11, x, 1.0f, 10, y);
    assert_memory_equal(y, want10, 11);

    /* avg rounding: half up. 2x2 window over {1, 2, 2, 2} -> 7/4 = 1.75 -> 2; {1,1,2,2} -> 1.5
     * -> 2; {0,0,0,1} -> 0.25 -> 0; {0,1,1,1}+pad 0 cells ... */
    struct efc_pool_geom g = {.n = 1, .c = 1, .h = 2, .w = 2, .oh = 1, .ow = 1, .kh = 2,
                              .kw = 2, .sh = 2, .sw = 2};
    uint8_t in1[4] = {1, 2, 2, 2}, in2[4] = {1, 1, 2, 2}, in3[4] = {0, 0, 0, 1}, o;
    efc_k_qavgpool__ref(&g, in1, &o);
    assert_int_equal(o, 2);
    efc_k_qavgpool__ref(&g, in2, &o);
    assert_int_equal(o, 2);
    efc_k_qavgpool__ref(&g, in3, &o);
    assert_int_equal(o, 0);
    /* 3x3 window at the corner of a 2x2 image with pad 1: 4 inside cells (1,1,2,2 -> sum 6);
     * count_include_pad: 9 cells, 5 padding cells at zp 3 -> (6 + 15) / 9 = 2.33 -> 2 */
    struct efc_pool_geom gp = {.n = 1, .c = 1, .h = 2, .w = 2, .oh = 1, .ow = 1, .kh = 3,
                               .kw = 3, .sh = 1, .sw = 1, .pt = 1, .pl = 1,
                               .count_include_pad = 1, .zp = 3};
    efc_k_qavgpool__ref(&gp, in2, &o);
    assert_int_equal(o, 2);
    gp.count_include_pad = 0; /* 6 / 4 = 1.5 -> 2 */
    efc_k_qavgpool__ref(&gp, in2, &o);
    assert_int_equal(o, 2);
    uint8_t gx[3] = {1, 2, 2}; /* 5 / 3 = 1.67 -> 2; {1, 2} -> 1.5 -> 2; {1} -> 1 */
    efc_k_qgavgpool__ref(1, 3, 1, gx, &o);
    assert_int_equal(o, 2);
    efc_k_qgavgpool__ref(1, 2, 1, gx, &o);
    assert_int_equal(o, 2);
    efc_k_qmaxpool__ref(&gp, in3, &o);
    assert_int_equal(o, 1);

    /* depthwise 3x3 on a 1x1 image, pad 1: only the centre tap sees the image */
    struct efc_conv_geom dg = {.n = 1, .c = 1, .h = 1, .w = 1, .oc = 2, .oh = 1, .ow = 1,
                               .kh = 3, .kw = 3, .sh = 1, .sw = 1, .pt = 1, .pl = 1,
                               .groups = 1};
    int8_t w[18];
    for (int i = 0; i < 18; i++)
        w[i] = (int8_t)(i == 8 ? 3 : i == 9 ? -2 : 100); /* centre: o0 3, o1 -2 */
    int32_t mult, shift, bias[2] = {10, 10};
    assert_int_equal(efc_k_requant_make(0.5, &mult, &shift), EFC_OK);
    struct efc_requant rq = {&mult, &shift, 1, 100, 0, 255};
    uint8_t xin = 20, yo[2];
    efc_k_qdwconv__ref(&dg, &xin, 5, w, bias, &rq, yo);
    /* o0: 10 + 15 * 3 = 55 -> 27.5 -> 28 (half up) + 100; o1: 10 - 30 = -20 -> -10 + 100 */
    assert_int_equal(yo[0], 128);
    assert_int_equal(yo[1], 90);
}

static void test_qadd_params(void **state)
{
    (void)state;
    struct efc_qadd_params p, keep;
    memset(&keep, 0x5a, sizeof(keep));
    p = keep;
    efc_err_clear();
    assert_int_equal(efc_k_qadd_params_make(0.1f, 0, 0.1f, 0, 1e-7f, 0, 0, 255, &p), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "too small"));
    assert_int_equal(efc_k_qadd_params_make(NAN, 0, 0.1f, 0, 0.2f, 0, 0, 255, &p), EFC_EINVAL);
    assert_int_equal(efc_k_qadd_params_make(0.1f, 0, -0.1f, 0, 0.2f, 0, 0, 255, &p), EFC_EINVAL);
    assert_int_equal(efc_k_qadd_params_make(0.1f, 256, 0.1f, 0, 0.2f, 0, 0, 255, &p),
                     EFC_EINVAL);
    assert_int_equal(efc_k_qadd_params_make(0.1f, 0, 0.1f, 0, 0.2f, 0, 10, 5, &p), EFC_EINVAL);
    assert_memory_equal(&p, &keep, sizeof(p)); /* untouched on error */

    assert_int_equal(efc_k_qadd_params_make(0.02f, 3, 0.01f, 200, 0.05f, 7, 7, 255, &p),
                     EFC_OK);
    assert_int_equal(p.m_a, 16384);
    assert_int_equal(p.m_b, 8192);
    assert_int_equal(p.zp_a, 3);
    assert_int_equal(p.zp_b, 200);
    assert_int_equal(p.zp_y, 7);
    assert_int_equal(p.lo, 7);

    /* Error bound (docs): |y - rne_clamp(exact)| <= 1, and exact agreement except within
     * 255 * 2^-15 * (s_max / s_y) + 2^-20 of a rounding boundary. */
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x909);
    long n_total = 0, n_off = 0;
    for (int t = 0; t < 200; t++) {
        float s_a = ldexpf(1.0f + efc_rng_uniform(&r), -rnd_range(&r, 2, 10));
        float s_b = t % 5 == 0 ? s_a * 1e-3f : ldexpf(1.0f + efc_rng_uniform(&r),
                                                        -rnd_range(&r, 2, 10));
        float s_y = (s_a + s_b) * (0.25f + 2.0f * efc_rng_uniform(&r));
        int32_t za = (int32_t)efc_rng_below(&r, 256), zb = (int32_t)efc_rng_below(&r, 256);
        int32_t zy = (int32_t)efc_rng_below(&r, 256);
        assert_int_equal(efc_k_qadd_params_make(s_a, za, s_b, zb, s_y, zy, 0, 255, &p), EFC_OK);
        double s_max = s_a > s_b ? s_a : s_b;
        double slack = 510.0 * ldexp(1.0, -15) * s_max / s_y + 1e-6;
        for (int i = 0; i < 256; i++) {
            uint8_t a = (uint8_t)efc_rng_below(&r, 256), b = (uint8_t)efc_rng_below(&r, 256), y;
            efc_k_qadd__ref(1, &a, &b, &p, &y);
            double u = zy + ((double)s_a * (a - za) + (double)s_b * (b - zb)) / s_y;
            double want = floor(u + 0.5);
            want = want < 0 ? 0 : want > 255 ? 255 : want;
            double d = fabs((double)y - want);
            n_total++;
            if (d != 0.0) {
                n_off++;
                double frac = u - floor(u);
                if (!(d <= 1.0 && fabs(frac - 0.5) <= slack)) {
                    print_error("qadd bound: y %u want %.0f (u %.6f) seed=%llu\n", y, want, u,
                                (unsigned long long)g_seed);
                    fail();
                }
            }
        }
    }
    printf("qadd vs float: %ld of %ld values differ by 1 LSB (near a .5 boundary)\n", n_off,
           n_total);
    assert_true(n_off * 100 < n_total); /* < 1 % */
}

/* The fp32 division trick of the SIMD averages (docs): trunc(fl((2s + c) / 2c)) is exact
 * for every sum s in 0..255c and count c up to 32000 — exhaustive for c <= 300, sampled above. */
static void test_avg_division_claim(void **state)
{
    (void)state;
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0xa0a);
    for (int32_t c = 1; c <= 300; c++) /* exhaustive */
        for (int32_t s = 0; s <= 255 * c; s++)
            if ((int32_t)((float)(2 * s + c) / (2.0f * (float)c)) != (2 * s + c) / (2 * c)) {
                print_error("division claim fails at s %d c %d\n", (int)s, (int)c);
                fail();
            }
    for (int32_t c = 301; c <= 32000; c += 1 + (int32_t)efc_rng_below(&r, 200)) {
        for (int i = 0; i < 600; i++) { /* around the rounding boundaries, and at random */
            int32_t k = (int32_t)efc_rng_below(&r, 256), d = rnd_range(&r, -3, 3);
            int32_t s = i % 3 == 2 ? (int32_t)efc_rng_below(&r, (uint32_t)(255 * c + 1))
                                   : k * c + (c - 1) / 2 + d;
            s = s < 0 ? 0 : s > 255 * c ? 255 * c : s;
            if ((int32_t)((float)(2 * s + c) / (2.0f * (float)c)) != (2 * s + c) / (2 * c)) {
                print_error("division claim fails at s %d c %d\n", (int)s, (int)c);
                fail();
            }
        }
    }
}

static void test_dispatch(void **state)
{
    (void)state;
    const struct efc_kernel_table *t = efc_kernels();
    assert_non_null(t->im2row_u8);
    assert_non_null(t->qdwconv);
    assert_non_null(t->qmaxpool);
    assert_non_null(t->qavgpool);
    assert_non_null(t->qgavgpool);
    assert_non_null(t->qadd);
    assert_non_null(t->quantize);
    assert_non_null(t->dequantize);
#if defined(EFC_HAVE_X86)
    enum efc_isa level = efc_kernels_isa();
    if (level >= EFC_ISA_AVX512 && level <= EFC_ISA_AMX)
        assert_ptr_equal(t->qdwconv, efc_k_qdwconv__avx512);
    else if (level == EFC_ISA_AVX2)
        assert_ptr_equal(t->qdwconv, efc_k_qdwconv__avx2);
    else
        assert_ptr_equal(t->qdwconv, efc_k_qdwconv__ref);
#endif
}

/* ------------------------------------------------------------------ micro-benchmark */

/* Thread CPU time (the 2-core VM is shared with other builds: wall time is noisy). */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double bench_ns(void (*call)(void *), void *arg)
{
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        int iters = 0;
        uint64_t t0 = cpu_ns(), t1;
        do {
            for (int k = 0; k < 20; k++)
                call(arg);
            iters += 20;
            t1 = cpu_ns();
        } while (t1 - t0 < 20000000ull);
        double ns = (double)(t1 - t0) / iters;
        best = ns < best ? ns : best;
    }
    return best;
}

struct dw_bench {
    efc_k_qdwconv_fn kfn;
    struct efc_conv_geom g;
    uint8_t *x, *y;
    int8_t *w;
    int32_t *bias;
    struct efc_requant rq;
};

static void dw_call(void *p)
{
    struct dw_bench *b = p;
    b->kfn(&b->g, b->x, 3, b->w, b->bias, &b->rq, b->y);
}

struct pool_bench {
    efc_k_qpool_fn kfn;
    struct efc_pool_geom g;
    uint8_t *x, *y;
};

static void pool_call(void *p)
{
    struct pool_bench *b = p;
    b->kfn(&b->g, b->x, b->y);
}

static void test_bench(void **state)
{
    (void)state;
    const char *e = getenv("EFC_QOPS_BENCH");
    if (e == NULL || e[0] != '1') {
        printf("bench skipped (EFC_QOPS_BENCH=1 to run)\n");
        return;
    }
    static const struct {
        const char *name;
        int32_t c, h, s, oh;
    } dws[] = {{"dwsep dw1 16x28x28 s2", 16, 28, 2, 14},
               {"dwsep dw2 32x14x14 s2", 32, 14, 2, 7},
               {"dwsep dw3 64x7x7 s1", 64, 7, 1, 7}};
    static const struct {
        const char *name;
        int32_t c, h;
    } pools[] = {{"lenet5 pool1 6x28x28", 6, 28}, {"lenet5 pool2 16x10x10", 16, 10},
                 {"cnn-bn pool1 32x28x28", 32, 28}, {"cnn-bn pool2 64x14x14", 64, 14}};
    uint8_t *x = efc_calloc(64 * 28 * 28, 1), *y = efc_calloc(64 * 28 * 28, 1);
    int8_t *w = efc_calloc(9 * 64, 1);
    int32_t bias[64] = {0}, mult[64], shift[64];
    for (int i = 0; i < 64; i++)
        efc_k_requant_make(0.003, &mult[i], &shift[i]);
    for (int i = 0; i < 64 * 28 * 28; i++)
        x[i] = (uint8_t)(i * 7);
    for (int i = 0; i < 9 * 64; i++)
        w[i] = (int8_t)(i % 255 - 127);
    printf("| layer | variant | ns/call |\n|---|---|---|\n");
    for (size_t l = 0; l < 3; l++) {
        struct dw_bench b = {0};
        b.g = (struct efc_conv_geom){1, dws[l].c, dws[l].h, dws[l].h, dws[l].c, dws[l].oh,
                                     dws[l].oh, 3, 3, dws[l].s, dws[l].s, 1, 1, dws[l].c};
        b.x = x;
        b.y = y;
        b.w = w;
        b.bias = bias;
        b.rq = (struct efc_requant){mult, shift, 0, 5, 5, 255};
#define EFC_KERNEL(op, isa, fn)                                                           \
    if (isa_runs_here(isa) && !strcmp(#op, "qdwconv")) {                                  \
        b.kfn = (efc_k_qdwconv_fn)(void (*)(void))fn;                                      \
        printf("| %s | %s | %.0f |\n", dws[l].name, #fn, bench_ns(dw_call, &b));          \
    }
#include "kernels/kernels_qops.inc"
#undef EFC_KERNEL
    }
    for (size_t l = 0; l < 4; l++) {
        struct pool_bench b = {0};
        b.g = (struct efc_pool_geom){.n = 1, .c = pools[l].c, .h = pools[l].h, .w = pools[l].h,
                                     .oh = pools[l].h / 2, .ow = pools[l].h / 2, .kh = 2, .kw = 2,
                                     .sh = 2, .sw = 2};
        b.x = x;
        b.y = y;
#define EFC_KERNEL(op, isa, fn)                                                           \
    if (isa_runs_here(isa) && !strcmp(#op, "qmaxpool")) {                                 \
        b.kfn = (efc_k_qpool_fn)(void (*)(void))fn;                                        \
        printf("| %s | %s | %.0f |\n", pools[l].name, #fn, bench_ns(pool_call, &b));      \
    }
#include "kernels/kernels_qops.inc"
#undef EFC_KERNEL
    }
    efc_free(x);
    efc_free(y);
    efc_free(w);
}

int main(void)
{
    const char *s = getenv("EFC_TEST_SEED");
    if (s != NULL && s[0] != '\0')
        g_seed = strtoull(s, NULL, 0);
    printf("test_qops seed=%llu (set EFC_TEST_SEED to change)\n", (unsigned long long)g_seed);
    init_lengths();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_values),
        cmocka_unit_test(test_ref_vs_independent),
        cmocka_unit_test(test_variants_vs_ref),
        cmocka_unit_test(test_qadd_params),
        cmocka_unit_test(test_avg_division_claim),
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
