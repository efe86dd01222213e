/* test_qgemm.c — the INT8 requantisation rule and every INT8 GEMM variant.
 *
 * 1. efc_k_requant_make: the mult/shift ranges of kernels.h, the rounding error bound, the
 *    r < 2^-32 and r -> 1 corners, and EINVAL for r >= 1, r < 0, NaN.
 * 2. efc_k_requant__ref against an independent __int128 formula (round half up, floor shift).
 * 3. efc_k_qgemm_u8s8__ref against a naive formula written here: the zero point subtracted
 *    from x explicitly (not folded), int64 accumulation, the __int128 requantisation.
 * 4. Every kernels_qgemm.inc entry the CPU runs against __ref, bit-exact, over a grid of shapes
 *    (k, m, n below / at / above the blocks of every variant), strides ldx > k and ldy > m,
 *    extreme data (x = 255 with w = +-127), zero points 0 / 255, per tensor / per channel,
 *    clamps, mult = 0, shift 31 and 62; x is allocated to end exactly at the last row's k-th
 *    byte (ASan catches an over-read) and y carries guard bytes after m in every row and after
 *    the last row. Seed: EFC_TEST_SEED or a fixed default; printed at start.
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

static uint64_t g_seed = 20260823;

static int isa_runs_here(enum efc_isa isa)
{
    enum efc_isa best = efc_isa_best();
    if (isa == EFC_ISA_REF)
        return 1;
    if (isa == EFC_ISA_NEON || best == EFC_ISA_NEON)
        return isa == best;
    return isa <= best;
}

/* floor((acc * mult) / 2^shift + 1/2), exactly. */
static int64_t rq_exact(int32_t acc, int32_t mult, int32_t shift)
{
    __int128 num = (__int128)acc * mult * 2 + ((__int128)1 << shift);
    __int128 den = (__int128)1 << (shift + 1);
    __int128 q = num / den;
    if (num % den != 0 && num < 0)
        q -= 1; /* C division truncates toward zero: make it floor */
    return (int64_t)q;
}

static uint8_t rq_naive(int64_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo,
                        int32_t hi)
{
    int64_t v = rq_exact((int32_t)acc, mult, shift) + zp;
    return (uint8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* ------------------------------------------------------------------ requantisation rule */

static void test_requant_make(void **state)
{
    (void)state;
    int32_t mult, shift;
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x51);

    /* Random r over the whole range, log-uniform: ranges and the rounding bound. */
    for (int t = 0; t < 20000; t++) {
        double e = -32.0 + 32.0 * efc_rng_uniform(&r);
        double v = exp2(e);
        if (v >= 1.0)
            continue;
        assert_int_equal(efc_k_requant_make(v, &mult, &shift), EFC_OK);
        if (v < 0x1p-32) {
            assert_int_equal(mult, 0);
            continue;
        }
        assert_true(mult >= (1 << 30));
        assert_true(shift >= 31 && shift <= 62);
        double back = ldexp((double)mult, -shift);
        /* nearest multiple of 2^-shift (ties either way), or 2^31-1 when r rounds up to 1 */
        if (!(fabs(back - v) <= ldexp(0.5, -shift) * (1.0 + 1e-12))) {
            print_error("requant_make(%.17g) -> %d, %d (back %.17g) seed=%llu\n", v, (int)mult,
                        (int)shift, back, (unsigned long long)g_seed);
            fail();
        }
    }
    /* Exact powers of two and corners. */
    assert_int_equal(efc_k_requant_make(0.5, &mult, &shift), EFC_OK);
    assert_int_equal(mult, 1 << 30);
    assert_int_equal(shift, 31);
    assert_int_equal(efc_k_requant_make(0x1p-32, &mult, &shift), EFC_OK);
    assert_int_equal(mult, 1 << 30);
    assert_int_equal(shift, 62);
    assert_int_equal(efc_k_requant_make(0x1.fffffp-33, &mult, &shift), EFC_OK);
    assert_int_equal(mult, 0);
    assert_int_equal(shift, 31);
    assert_int_equal(efc_k_requant_make(0.0, &mult, &shift), EFC_OK);
    assert_int_equal(mult, 0);
    assert_int_equal(shift, 31);
    /* Just below 1: f rounds up to 1.0, must not give mult = 2^31 or shift 30. */
    assert_int_equal(efc_k_requant_make(1.0 - 0x1p-40, &mult, &shift), EFC_OK);
    assert_int_equal(mult, INT32_MAX);
    assert_int_equal(shift, 31);
    /* Just below 2^-k: rounds up into the next binade, still in range. */
    assert_int_equal(efc_k_requant_make(0x1p-10 * (1.0 - 0x1p-40), &mult, &shift), EFC_OK);
    assert_int_equal(mult, 1 << 30);
    assert_int_equal(shift, 40);
    assert_int_equal(efc_k_requant_make(0.75, &mult, &shift), EFC_OK);
    assert_int_equal(mult, 3 << 29);
    assert_int_equal(shift, 31);

    assert_int_equal(efc_k_requant_make(1.0, &mult, &shift), EFC_EINVAL);
    assert_int_equal(efc_k_requant_make(3.0, &mult, &shift), EFC_EINVAL);
    assert_int_equal(efc_k_requant_make(-1e-9, &mult, &shift), EFC_EINVAL);
    assert_int_equal(efc_k_requant_make(NAN, &mult, &shift), EFC_EINVAL);
    assert_int_equal(efc_k_requant_make(INFINITY, &mult, &shift), EFC_EINVAL);
}

static void test_requant_ref(void **state)
{
    (void)state;
    struct efc_rng r;
    efc_rng_init(&r, g_seed ^ 0x52);
    static const int32_t accs[] = {0,
                                   1,
                                   -1,
                                   2,
                                   -2,
                                   3,
                                   -3,
                                   127,
                                   -128,
                                   1 << 20,
                                   -(1 << 20),
                                   INT32_MAX,
                                   INT32_MIN,
                                   INT32_MAX - 1,
                                   INT32_MIN + 1};
    static const int32_t mults[] = {0, 1 << 30, (1 << 30) + 1, INT32_MAX, 1518500250};

    /* Round half up, not away from zero: -0.5 -> 0, 0.5 -> 1, -1.5 -> -1, 1.5 -> 2. */
    assert_int_equal(efc_k_requant__ref(-1, 1 << 30, 31, 100, 0, 255), 100);
    assert_int_equal(efc_k_requant__ref(1, 1 << 30, 31, 100, 0, 255), 101);
    assert_int_equal(efc_k_requant__ref(-3, 1 << 30, 31, 100, 0, 255), 99);
    assert_int_equal(efc_k_requant__ref(3, 1 << 30, 31, 100, 0, 255), 102);
    /* Clamp and zero point at both ends. */
    assert_int_equal(efc_k_requant__ref(INT32_MAX, INT32_MAX, 31, 255, 0, 255), 255);
    assert_int_equal(efc_k_requant__ref(INT32_MIN, INT32_MAX, 31, 0, 0, 255), 0);
    assert_int_equal(efc_k_requant__ref(INT32_MIN, INT32_MAX, 31, 255, 0, 255), 0);
    assert_int_equal(efc_k_requant__ref(1000, 1 << 30, 31, 3, 10, 20), 20);
    assert_int_equal(efc_k_requant__ref(-1000, 1 << 30, 31, 3, 10, 20), 10);
    /* mult 0: the zero point (clamped). */
    assert_int_equal(efc_k_requant__ref(INT32_MAX, 0, 31, 77, 0, 255), 77);
    assert_int_equal(efc_k_requant__ref(INT32_MIN, 0, 62, 77, 80, 255), 80);

    for (size_t a = 0; a < sizeof(accs) / sizeof(accs[0]); a++)
        for (size_t b = 0; b < sizeof(mults) / sizeof(mults[0]); b++)
            for (int32_t s = 31; s <= 62; s++)
                for (int32_t zp = 0; zp <= 255; zp += 85)
                    assert_int_equal(efc_k_requant__ref(accs[a], mults[b], s, zp, 0, 255),
                                     rq_naive(accs[a], mults[b], s, zp, 0, 255));
    for (int t = 0; t < 200000; t++) {
        int32_t acc = (int32_t)(uint32_t)efc_rng_u64(&r);
        if (t & 1)
            acc >>= efc_rng_below(&r, 31);
        int32_t mult = (int32_t)((1u << 30) + efc_rng_below(&r, 1u << 30));
        int32_t s = 31 + (int32_t)efc_rng_below(&r, 32);
        int32_t zp = (int32_t)efc_rng_below(&r, 256);
        int32_t lo = (int32_t)efc_rng_below(&r, 256);
        int32_t hi = lo + (int32_t)efc_rng_below(&r, (uint32_t)(256 - lo));
        uint8_t got = efc_k_requant__ref(acc, mult, s, zp, lo, hi);
        uint8_t want = rq_naive(acc, mult, s, zp, lo, hi);
        if (got != want) {
            print_error("requant(%d, %d, %d, %d, %d, %d) = %d, want %d seed=%llu\n", (int)acc,
                        (int)mult, (int)s, (int)zp, (int)lo, (int)hi, got, want,
                        (unsigned long long)g_seed);
            fail();
        }
    }
}

/* ------------------------------------------------------------------------- GEMM cases */

struct qcase {
    int32_t n, m, k;
    size_t ldx, ldy;
    int32_t zp_x;
    int have_bias;
    struct efc_requant rq;
    int32_t *mult, *shift, *bias;
    uint8_t *x; /* (n - 1) * ldx + k bytes: ends exactly at the last row's k-th byte */
    int8_t *w;  /* m * k */
};

/* DATA_BIG_BIAS: w = 0 and bias at the int32 extremes, so acc = bias reaches +-2^31 and the
 * requantised value sits next to the int32 limits before the zero point is added. */
enum data_mode {
    DATA_RANDOM,
    DATA_MAX_POS,
    DATA_MAX_NEG,
    DATA_MIXED_EXTREME,
    DATA_SMALL,
    DATA_BIG_BIAS
};
enum rq_mode { RQ_RANDOM, RQ_ZERO, RQ_SHIFT31, RQ_SHIFT62 };

static void case_free(struct qcase *c)
{
    efc_free(c->mult);
    efc_free(c->shift);
    efc_free(c->bias);
    efc_free(c->x);
    efc_free(c->w);
    memset(c, 0, sizeof(*c));
}

static int32_t pick_zp(struct efc_rng *r)
{
    uint32_t u = efc_rng_below(r, 4);
    return u == 0 ? 0 : u == 1 ? 255 : (int32_t)efc_rng_below(r, 256);
}

static void case_make(struct efc_rng *r, struct qcase *c, int32_t n, int32_t m, int32_t k,
                      enum data_mode dm, enum rq_mode qm)
{
    memset(c, 0, sizeof(*c));
    c->n = n;
    c->m = m;
    c->k = k;
    c->ldx = (size_t)k + (efc_rng_below(r, 2) ? efc_rng_below(r, 9) : 0);
    c->ldy = (size_t)m + (efc_rng_below(r, 2) ? 1 + efc_rng_below(r, 9) : 0);
    c->zp_x = pick_zp(r);
    c->have_bias = efc_rng_below(r, 4) != 0;
    c->mult = efc_malloc((size_t)m * sizeof(int32_t));
    c->shift = efc_malloc((size_t)m * sizeof(int32_t));
    c->bias = efc_malloc((size_t)m * sizeof(int32_t));
    c->x = efc_malloc((size_t)(n - 1) * c->ldx + (size_t)k);
    c->w = efc_malloc((size_t)m * (size_t)k);
    assert_non_null(c->mult);
    assert_non_null(c->shift);
    assert_non_null(c->bias);
    assert_non_null(c->x);
    assert_non_null(c->w);

    size_t nx = (size_t)(n - 1) * c->ldx + (size_t)k;
    for (size_t i = 0; i < nx; i++) {
        switch (dm) {
        case DATA_RANDOM:
            c->x[i] = (uint8_t)efc_rng_below(r, 256);
            break;
        case DATA_SMALL: {
            int32_t v = c->zp_x + (int32_t)efc_rng_below(r, 5) - 2;
            c->x[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            break;
        }
        default:
            c->x[i] = 255;
            break;
        }
    }
    for (size_t i = 0; i < (size_t)m * k; i++) {
        switch (dm) {
        case DATA_MAX_POS:
            c->w[i] = 127;
            break;
        case DATA_MAX_NEG:
            c->w[i] = -127;
            break;
        case DATA_MIXED_EXTREME:
            c->w[i] = (int8_t)((i / (size_t)k) % 2 ? 127 : -127); /* channels alternate */
            break;
        case DATA_BIG_BIAS:
            c->w[i] = 0;
            break;
        default:
            c->w[i] = (int8_t)((int32_t)efc_rng_below(r, 255) - 127);
            break;
        }
    }
    for (int32_t j = 0; j < m; j++)
        c->bias[j] = (int32_t)efc_rng_below(r, 1u << 21) - (1 << 20);
    if (dm == DATA_BIG_BIAS) {
        static const int32_t big[] = {INT32_MAX,     INT32_MIN,       INT32_MAX - 1,
                                      INT32_MIN + 1, INT32_MAX - 300, -INT32_MAX + 77,
                                      1 << 30,       -(1 << 30)};
        c->have_bias = 1;
        for (int32_t j = 0; j < m; j++)
            c->bias[j] = big[efc_rng_below(r, sizeof(big) / sizeof(big[0]))];
    }

    /* Multipliers: the typical scale maps ~ sqrt(k) * 127 * 128 to ~100 output steps. */
    double typ = 100.0 / (127.0 * 128.0 * (1.0 + sqrt((double)k)));
    for (int32_t j = 0; j < m; j++) {
        switch (qm) {
        case RQ_ZERO:
            c->mult[j] = 0;
            c->shift[j] = 31;
            break;
        case RQ_SHIFT31: /* r close to 1, sometimes the largest mult */
            c->mult[j] = efc_rng_below(r, 3) == 0
                             ? INT32_MAX - (int32_t)efc_rng_below(r, 4)
                             : (int32_t)((1u << 30) + efc_rng_below(r, 1u << 30));
            c->shift[j] = 31;
            break;
        case RQ_SHIFT62:
            c->mult[j] = (int32_t)((1u << 30) + efc_rng_below(r, 1u << 30));
            c->shift[j] = 62;
            break;
        default: {
            double v = typ * exp2(-4.0 + 8.0 * efc_rng_uniform(r));
            if (v >= 1.0)
                v = 0.99;
            assert_int_equal(efc_k_requant_make(v, &c->mult[j], &c->shift[j]), EFC_OK);
            break;
        }
        }
    }
    c->rq.mult = c->mult;
    c->rq.shift = c->shift;
    c->rq.per_tensor = (int32_t)efc_rng_below(r, 2);
    c->rq.zp_out = pick_zp(r);
    switch (efc_rng_below(r, 4)) {
    case 0:
        c->rq.lo = 0, c->rq.hi = 255;
        break;
    case 1: /* ReLU */
        c->rq.lo = c->rq.zp_out, c->rq.hi = 255;
        break;
    case 2: /* ReLU6-like */
        c->rq.lo = c->rq.zp_out;
        c->rq.hi = c->rq.zp_out + 40 > 255 ? 255 : c->rq.zp_out + 40;
        break;
    default:
        c->rq.lo = (int32_t)efc_rng_below(r, 256);
        c->rq.hi = c->rq.lo + (int32_t)efc_rng_below(r, (uint32_t)(256 - c->rq.lo));
        break;
    }
}

#define YGUARD 64
#define YSENT 0xA5

static uint8_t *run_case(const struct efc_k_qgemm *kern, const struct qcase *c)
{
    struct efc_qgemm_w w;
    size_t ny = (size_t)c->n * c->ldy + YGUARD;
    uint8_t *y = efc_malloc(ny);
    assert_non_null(y);
    memset(y, YSENT, ny);
    assert_int_equal(kern->pack(c->m, c->k, c->w, c->have_bias ? c->bias : NULL, c->zp_x, &w),
                     EFC_OK);
    assert_int_equal(w.m, c->m);
    assert_int_equal(w.k, c->k);
    kern->run(&w, &c->rq, c->n, c->x, c->ldx, y, c->ldy);
    efc_qgemm_w_fini(&w);
    /* Guards: bytes [m, ldy) of every row and after the last row are untouched. */
    for (int32_t i = 0; i < c->n; i++)
        for (size_t j = (size_t)c->m; j < c->ldy; j++)
            if (y[(size_t)i * c->ldy + j] != YSENT) {
                print_error("wrote outside y: row %d col %zu (m=%d ldy=%zu)\n", (int)i, j,
                            (int)c->m, c->ldy);
                fail();
            }
    for (size_t j = (size_t)c->n * c->ldy; j < ny; j++)
        if (y[j] != YSENT) {
            print_error("wrote past the last row of y at +%zu\n", j - (size_t)c->n * c->ldy);
            fail();
        }
    return y;
}

static void describe(const char *what, const struct qcase *c, int32_t i, int32_t j, int got,
                     int want)
{
    print_error("%s: n=%d m=%d k=%d ldx=%zu ldy=%zu zp_x=%d zp_out=%d per_tensor=%d lo=%d "
                "hi=%d bias=%d: y[%d][%d] = %d, want %d (mult %d shift %d) seed=%llu\n",
                what, (int)c->n, (int)c->m, (int)c->k, c->ldx, c->ldy, (int)c->zp_x,
                (int)c->rq.zp_out, (int)c->rq.per_tensor, (int)c->rq.lo, (int)c->rq.hi,
                c->have_bias, (int)i, (int)j, got, want, (int)c->mult[c->rq.per_tensor ? 0 : j],
                (int)c->shift[c->rq.per_tensor ? 0 : j], (unsigned long long)g_seed);
}

/* __ref against the definition written out: zero point subtracted, int64 sums. */
static void check_ref_naive(const struct qcase *c, const uint8_t *y)
{
    for (int32_t i = 0; i < c->n; i++)
        for (int32_t j = 0; j < c->m; j++) {
            int64_t acc = c->have_bias ? c->bias[j] : 0;
            for (int32_t q = 0; q < c->k; q++)
                acc +=
                    ((int64_t)c->x[(size_t)i * c->ldx + q] - c->zp_x) * c->w[(size_t)j * c->k + q];
            int32_t ch = c->rq.per_tensor ? 0 : j;
            uint8_t want =
                rq_naive(acc, c->mult[ch], c->shift[ch], c->rq.zp_out, c->rq.lo, c->rq.hi);
            uint8_t got = y[(size_t)i * c->ldy + j];
            if (got != want) {
                describe("qgemm __ref vs naive", c, i, j, got, want);
                fail();
            }
        }
}

static void compare_rows(const char *name, const struct qcase *c, const uint8_t *got,
                         const uint8_t *want)
{
    for (int32_t i = 0; i < c->n; i++)
        if (memcmp(got + (size_t)i * c->ldy, want + (size_t)i * c->ldy, (size_t)c->m) != 0)
            for (int32_t j = 0; j < c->m; j++)
                if (got[(size_t)i * c->ldy + j] != want[(size_t)i * c->ldy + j]) {
                    describe(name, c, i, j, got[(size_t)i * c->ldy + j],
                             want[(size_t)i * c->ldy + j]);
                    fail();
                }
}

static const int32_t g_ks[] = {1,  2,  3,  4,  5,  7,  8,   9,   15,  16,
                               17, 25, 31, 63, 64, 65, 150, 288, 300, 784};
static const int32_t g_ms[] = {1, 2, 3, 6, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 65, 100};
static const int32_t g_ns[] = {1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 15, 16, 17, 33};

/* One case through __ref (checked against the naive formula when small) and every variant. */
static void one_case(struct efc_rng *r, int32_t n, int32_t m, int32_t k, enum data_mode dm,
                     enum rq_mode qm, int check_naive, int *ran)
{
    struct qcase c;
    case_make(r, &c, n, m, k, dm, qm);
    uint8_t *yref = run_case(&efc_k_qgemm_u8s8__ref, &c);
    if (check_naive)
        check_ref_naive(&c, yref);
    for (size_t v = 0; v < N_VARIANTS; v++) {
        if (g_variants[v].k == &efc_k_qgemm_u8s8__ref || !isa_runs_here(g_variants[v].isa))
            continue;
        uint8_t *y = run_case(g_variants[v].k, &c);
        compare_rows(g_variants[v].name, &c, y, yref);
        efc_free(y);
        ran[v]++;
    }
    efc_free(yref);
    case_free(&c);
}

/* Like one_case, but some channels' multipliers are then replaced: mix 1 sets ~1/3 of them to
 * mult = 0 / shift 31, mix 2 also puts one channel at shift 32 (r in [2^-2, 2^-1), weights 0,
 * small bias), so a
 * variant that specialises on the shifts of a call (every shift >= 33 or mult = 0) sees both
 * sides of its test and its mult = 0 handling. */
static void one_case_mixed(struct efc_rng *r, int32_t n, int32_t m, int32_t k, enum data_mode dm,
                           int mix, int *ran)
{
    struct qcase c;
    case_make(r, &c, n, m, k, dm, RQ_RANDOM);
    c.rq.per_tensor = 0;
    for (int32_t j = 0; j < m; j++)
        if (efc_rng_below(r, 3) == 0) {
            c.mult[j] = 0;
            c.shift[j] = 31;
        }
    if (mix == 2) {
        int32_t j = (int32_t)efc_rng_below(r, (uint32_t)m);
        c.mult[j] = (int32_t)((1u << 30) + efc_rng_below(r, 1u << 30));
        c.shift[j] = 32;
        /* acc = bias[j] small, so its outputs are not all clamped and the rounding shows */
        memset(c.w + (size_t)j * k, 0, (size_t)k);
        c.have_bias = 1;
        c.bias[j] = (int32_t)efc_rng_below(r, 1201) - 600;
    }
    uint8_t *yref = run_case(&efc_k_qgemm_u8s8__ref, &c);
    check_ref_naive(&c, yref);
    for (size_t v = 0; v < N_VARIANTS; v++) {
        if (g_variants[v].k == &efc_k_qgemm_u8s8__ref || !isa_runs_here(g_variants[v].isa))
            continue;
        uint8_t *y = run_case(g_variants[v].k, &c);
        compare_rows(g_variants[v].name, &c, y, yref);
        efc_free(y);
        ran[v]++;
    }
    efc_free(yref);
    case_free(&c);
}

static void report_variants(const int *ran)
{
    for (size_t v = 0; v < N_VARIANTS; v++) {
        if (g_variants[v].k == &efc_k_qgemm_u8s8__ref)
            continue;
        if (isa_runs_here(g_variants[v].isa))
            printf("  %-32s %d cases bit-exact with __ref\n", g_variants[v].name, ran[v]);
        else
            printf("  %-32s SKIP (cpu lacks %s)\n", g_variants[v].name,
                   efc_isa_name(g_variants[v].isa));
    }
}

static void test_qgemm_grid(void **state)
{
    (void)state;
    struct efc_rng r;
    int ran[N_VARIANTS] = {0};
    efc_rng_init(&r, g_seed ^ 0x53);
    size_t nk = sizeof(g_ks) / sizeof(g_ks[0]), nm = sizeof(g_ms) / sizeof(g_ms[0]);
    size_t nn = sizeof(g_ns) / sizeof(g_ns[0]);
    size_t t = 0;
    for (size_t a = 0; a < nk; a++)
        for (size_t b = 0; b < nm; b++)
            for (int rep = 0; rep < 3; rep++, t++) {
                int32_t n = g_ns[(t * 7 + (size_t)rep) % nn];
                enum data_mode dm = (t % 11 == 3)   ? DATA_MAX_POS
                                    : (t % 11 == 7) ? DATA_MAX_NEG
                                    : (t % 13 == 5) ? DATA_MIXED_EXTREME
                                    : (t % 17 == 2) ? DATA_SMALL
                                    : (t % 23 == 8) ? DATA_BIG_BIAS
                                                    : DATA_RANDOM;
                enum rq_mode qm = (t % 19 == 4)    ? RQ_ZERO
                                  : (t % 19 == 9)  ? RQ_SHIFT31
                                  : (t % 19 == 14) ? RQ_SHIFT62
                                                   : RQ_RANDOM;
                one_case(&r, n, g_ms[b], g_ks[a], dm, qm, 1, ran);
            }
    /* Every data / requant mode on a shape with tails in every dimension. */
    for (int dm = DATA_RANDOM; dm <= DATA_BIG_BIAS; dm++)
        for (int qm = RQ_RANDOM; qm <= RQ_SHIFT62; qm++)
            for (int rep = 0; rep < 4; rep++)
                one_case(&r, 13, 33, 67, (enum data_mode)dm, (enum rq_mode)qm, 1, ran);
    report_variants(ran);
}

/* Small k (<= 12) with 17..32 channels (a first conv: 3 x 3 x 1 -> 32), where a variant may
 * keep all weights in registers: every data / requant mode, odd and even n, mixed multipliers. */
static void test_qgemm_small_k(void **state)
{
    (void)state;
    static const int32_t ms[] = {17, 24, 31, 32}, ns[] = {1, 2, 3, 8, 29};
    struct efc_rng r;
    int ran[N_VARIANTS] = {0};
    efc_rng_init(&r, g_seed ^ 0x54);
    for (int32_t k = 1; k <= 12; k++)
        for (size_t b = 0; b < sizeof(ms) / sizeof(ms[0]); b++) {
            const int32_t n = ns[(size_t)k % (sizeof(ns) / sizeof(ns[0]))];
            for (int dm = DATA_RANDOM; dm <= DATA_BIG_BIAS; dm++)
                for (int qm = RQ_RANDOM; qm <= RQ_SHIFT62; qm++)
                    one_case(&r, n, ms[b], k, (enum data_mode)dm, (enum rq_mode)qm, 1, ran);
            for (int mix = 1; mix <= 2; mix++)
                one_case_mixed(&r, n + 1, ms[b], k, DATA_RANDOM, mix, ran);
        }
    report_variants(ran);
}

/* Shapes large enough for the cache blocking of the SIMD variants (weights > 512 KiB), the
 * bench shapes, and GEMV. */
static void test_qgemm_large(void **state)
{
    (void)state;
    struct efc_rng r;
    int ran[N_VARIANTS] = {0};
    efc_rng_init(&r, g_seed ^ 0x54);
    static const int32_t shapes[][3] = {
        /* n, m, k */
        {784, 6, 25},  {100, 16, 150},  {784, 32, 9},    {97, 32, 288},   {196, 64, 288},
        {1, 300, 784}, {1, 1024, 1024}, {3, 1024, 1024}, {9, 600, 1100},  {130, 256, 256},
        {1, 10, 100},  {2, 100, 300},   {40, 1000, 5},   {17, 130, 2050},
    };
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        one_case(&r, shapes[s][0], shapes[s][1], shapes[s][2], DATA_RANDOM, RQ_RANDOM, s < 3, ran);
    report_variants(ran);
}

static void test_qgemm_pack_errors(void **state)
{
    (void)state;
    int8_t w[4] = {1, 2, 3, 4};
    for (size_t v = 0; v < N_VARIANTS; v++) {
        struct efc_qgemm_w pw;
        if (!isa_runs_here(g_variants[v].isa))
            continue;
        assert_int_equal(g_variants[v].k->pack(0, 4, w, NULL, 0, &pw), EFC_EINVAL);
        assert_int_equal(g_variants[v].k->pack(1, 0, w, NULL, 0, &pw), EFC_EINVAL);
        assert_int_equal(g_variants[v].k->pack(1, 4, w, NULL, 256, &pw), EFC_EINVAL);
        assert_null(pw.packed);
        assert_int_equal(g_variants[v].k->pack(1, 4, w, NULL, 3, &pw), EFC_OK);
        assert_int_equal(pw.isa, g_variants[v].isa);
        assert_non_null(pw.packed);
        assert_int_equal(pw.bias[0], -3 * 10);
        efc_qgemm_w_fini(&pw);
        assert_null(pw.packed);
    }
    /* The dispatched entry is one of the list. */
    assert_non_null(efc_kernels()->qgemm);
}

int main(void)
{
    const char *s = getenv("EFC_TEST_SEED");
    if (s != NULL && s[0] != '\0') {
        int64_t v;
        if (efc_parse_i64(s, 0, INT64_MAX, "EFC_TEST_SEED", &v) == EFC_OK)
            g_seed = (uint64_t)v;
    }
    printf("test_qgemm: seed=%llu (set EFC_TEST_SEED to reproduce), cpu best isa %s\n",
           (unsigned long long)g_seed, efc_isa_name(efc_isa_best()));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requant_make),      cmocka_unit_test(test_requant_ref),
        cmocka_unit_test(test_qgemm_pack_errors), cmocka_unit_test(test_qgemm_grid),
        cmocka_unit_test(test_qgemm_small_k),
        cmocka_unit_test(test_qgemm_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
