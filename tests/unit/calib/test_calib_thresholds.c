/* test_calib_thresholds.c — observers and calibrators on synthetic data with known answers.
 *
 * - range -> qparams: the one rule (s = (hi - lo) / 255, zp = round(-lo / s)), 0 included,
 *   degenerate and bad ranges.
 * - uniform: minmax gives [min, max] exactly, percentile 100 gives T = max |x| (to float).
 * - |N(0,1)| with exact quantiles (stratified inverse-CDF samples, no sampling noise):
 *   percentile p is within one bin of the analytic quantile; random N(0,1) within a bin plus
 *   4 standard errors.
 * - ReLU(N(0,1)) with 50 % exact zeros: efc's KL gives exactly the threshold of the same data
 *   without the zeros; the naive KL (zeros kept, TensorRT's 128 levels) collapses far below it.
 * - heavy outliers: percentile / KL / MSE clip them, minmax does not.
 * - 4 shards merged (pass-1 merge, agreed R, pass 2, histogram merge) give bit-identical bins
 *   and thresholds for every calibrator; mismatched edges are EFC_EINVAL.
 * - NaN / Inf: EFC_EPROTO naming the tensor, observer unchanged.
 * Seed: EFC_TEST_SEED or a fixed default, printed at start.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "calib/calib.h"
#include "common/efc_alloc.h"
#include "common/efc_rng.h"

#define N_VALUES 1000000

static uint64_t g_seed = 20260823;

static float *falloc(size_t n)
{
    float *p = efc_malloc(n * sizeof(float));
    assert_non_null(p);
    return p;
}

static struct efc_calib_opts opts(enum efc_calib_method m)
{
    struct efc_calib_opts o;
    efc_calib_opts_default(&o);
    o.method = m;
    return o;
}

/* Two passes over x[0..n) into a fresh observer (histogram over its own max |x|). */
static void observe(struct efc_calib_obs *o, const float *x, size_t n)
{
    efc_calib_obs_init(o);
    assert_int_equal(efc_calib_obs_add(o, "t", x, n), EFC_OK);
    assert_int_equal(
        efc_calib_obs_hist_begin(o, EFC_CALIB_DEFAULT_BINS, efc_calib_obs_hist_range(o)), EFC_OK);
    assert_int_equal(efc_calib_obs_hist_add(o, "t", x, n), EFC_OK);
}

static float thr(const struct efc_calib_obs *o, const struct efc_calib_opts *op)
{
    float t = -1.0f;
    assert_int_equal(efc_calib_obs_threshold(o, op, &t), EFC_OK);
    return t;
}

/* Acklam's inverse normal CDF (relative error < 1.2e-9), refined by nothing: ample for
 * quantiles checked to within a histogram bin (~2.5e-3). */
static double norm_ppf(double p)
{
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                               -2.759285104469687e+02, 1.383577518672690e+02,
                               -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                               -1.556989798598866e+02, 6.680131188771972e+01,
                               -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                               -2.400758277161838e+00, -2.549732539343734e+00,
                               4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    const double pl = 0.02425;
    if (p < pl) {
        double q = sqrt(-2 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    if (p > 1 - pl) {
        double q = sqrt(-2 * log(1 - p));
        return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

static void test_qparams(void **state)
{
    (void)state;
    float s;
    int32_t zp;
    assert_int_equal(efc_calib_range_to_qparams(0.0f, 2.55f, &s, &zp), EFC_OK);
    assert_float_equal(s, 0.01f, 1e-7f);
    assert_int_equal(zp, 0);
    assert_int_equal(efc_calib_range_to_qparams(-1.0f, 1.0f, &s, &zp), EFC_OK);
    assert_float_equal(s, 2.0f / 255.0f, 1e-9f);
    /* -lo / s with s = float(2/255) slightly above 2/255: 127.4999925 -> 127 (zp uses the
     * stored float scale, so that s * (q - zp) is what the INT8 graph computes). */
    assert_int_equal(zp, 127);
    assert_int_equal(efc_calib_range_to_qparams(0.5f, 2.0f, &s, &zp), EFC_OK); /* -> [0, 2] */
    assert_float_equal(s, 2.0f / 255.0f, 1e-9f);
    assert_int_equal(zp, 0);
    assert_int_equal(efc_calib_range_to_qparams(-3.0f, -1.0f, &s, &zp), EFC_OK); /* [-3, 0] */
    assert_int_equal(zp, 255);
    assert_int_equal(efc_calib_range_to_qparams(-0.5f, 2.0f, &s, &zp), EFC_OK);
    assert_int_equal(zp, 51); /* 0.5 / (2.5 / 255) = 51 */
    /* 0 is on the grid: s * (zp - zp) == 0, and the grid covers [lo, hi] within s / 2. */
    assert_true(fabsf(s * (0 - zp) - (-0.5f)) <= s / 2 + 1e-6f);
    assert_true(fabsf(s * (255 - zp) - 2.0f) <= s / 2 + 1e-6f);
    assert_int_equal(efc_calib_range_to_qparams(0.0f, 0.0f, &s, &zp), EFC_OK);
    assert_true(s == EFC_CALIB_MIN_SCALE);
    assert_int_equal(zp, 0);
    assert_int_equal(efc_calib_range_to_qparams(NAN, 1.0f, &s, &zp), EFC_EINVAL);
    assert_int_equal(efc_calib_range_to_qparams(0.0f, INFINITY, &s, &zp), EFC_EINVAL);
    assert_int_equal(efc_calib_range_to_qparams(2.0f, 1.0f, &s, &zp), EFC_EINVAL);
}

static void test_opts_and_names(void **state)
{
    (void)state;
    enum efc_calib_method m;
    struct efc_calib_opts o;
    for (int i = 0; i < EFC_CALIB_METHOD_COUNT; i++) {
        assert_int_equal(
            efc_calib_method_parse(efc_calib_method_name((enum efc_calib_method)i), &m), EFC_OK);
        assert_int_equal(m, i);
    }
    assert_int_equal(efc_calib_method_parse("entropy", &m), EFC_EINVAL);
    efc_calib_opts_default(&o);
    assert_int_equal(efc_calib_opts_check(&o), EFC_OK);
    o.percentile = 0.0;
    assert_int_equal(efc_calib_opts_check(&o), EFC_EINVAL);
    o.percentile = 100.5;
    assert_int_equal(efc_calib_opts_check(&o), EFC_EINVAL);
    efc_calib_opts_default(&o);
    o.samples = 0;
    assert_int_equal(efc_calib_opts_check(&o), EFC_EINVAL);
    efc_calib_opts_default(&o);
    o.n_bins = 8;
    assert_int_equal(efc_calib_opts_check(&o), EFC_EINVAL);
}

static void test_uniform(void **state)
{
    (void)state;
    struct efc_rng r;
    struct efc_calib_obs o;
    struct efc_calib_opts op;
    float *x = falloc(N_VALUES), lo, hi, t, mn = INFINITY, mx = -INFINITY;
    efc_rng_init(&r, g_seed);
    for (size_t i = 0; i < N_VALUES; i++) {
        x[i] = -1.0f + 4.0f * efc_rng_uniform(&r);
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
    }
    observe(&o, x, N_VALUES);
    assert_true(o.min == mn && o.max == mx);
    assert_int_equal(o.count, N_VALUES);
    op = opts(EFC_CALIB_MINMAX);
    assert_int_equal(efc_calib_obs_range(&o, &op, &lo, &hi, &t), EFC_OK);
    assert_true(lo == mn && hi == mx);
    assert_true(t == mx);
    op = opts(EFC_CALIB_PERCENTILE);
    op.percentile = 100.0;
    assert_int_equal(efc_calib_obs_range(&o, &op, &lo, &hi, &t), EFC_OK);
    assert_float_equal(t, mx, 1e-6f * mx);
    assert_true(lo == mn);
    assert_float_equal(hi, mx, 1e-6f * mx);
    /* Percentile 50 of |x| for U(-1, 3): P(|x| <= a) = a / 2 for a <= 1, (a + 1) / 4 above;
     * the median is a = 1. */
    op.percentile = 50.0;
    t = thr(&o, &op);
    printf("uniform(-1,3): minmax T %.5f, p100 %.5f, p50 %.5f (exact 1)\n", (double)mx, (double)mx,
           (double)t);
    assert_float_equal(t, 1.0f, 0.01f);
    efc_calib_obs_fini(&o);
    efc_free(x);
}

static void test_gaussian_percentiles(void **state)
{
    (void)state;
    static const double ps[] = {50.0, 90.0, 99.0, 99.9, 99.99};
    struct efc_calib_obs o;
    struct efc_calib_opts op = opts(EFC_CALIB_PERCENTILE);
    struct efc_rng r;
    float *x = falloc(N_VALUES);

    /* Exact quantiles: |x_i| = ppf(0.5 + 0.5 (i + 0.5) / n), random sign. */
    efc_rng_init(&r, g_seed);
    for (size_t i = 0; i < N_VALUES; i++) {
        double a = norm_ppf(0.5 + 0.5 * ((double)i + 0.5) / N_VALUES);
        x[i] = (float)((efc_rng_u64(&r) & 1) ? a : -a);
    }
    observe(&o, x, N_VALUES);
    const double w = (double)o.range / o.n_bins;
    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
        op.percentile = ps[k];
        double want = norm_ppf(0.5 + 0.5 * ps[k] / 100.0), got = thr(&o, &op);
        printf("|N(0,1)| stratified: p%-6g T %.5f analytic %.5f (bin %.5f)\n", ps[k], got, want, w);
        assert_true(fabs(got - want) <= w);
    }
    efc_calib_obs_fini(&o);

    /* Random N(0,1): within a bin plus 4 standard errors of the sample quantile,
     * sqrt(q (1 - q) / n) / f(T), f the density of |x| = 2 phi(T). */
    efc_rng_init(&r, g_seed + 1);
    for (size_t i = 0; i < N_VALUES; i++)
        x[i] = efc_rng_normal(&r);
    observe(&o, x, N_VALUES);
    for (size_t k = 0; k < 4; k++) {
        op.percentile = ps[k];
        double q = ps[k] / 100.0, want = norm_ppf(0.5 + 0.5 * q), got = thr(&o, &op);
        double f = 2.0 * exp(-0.5 * want * want) / sqrt(2.0 * M_PI);
        double se = sqrt(q * (1 - q) / N_VALUES) / f;
        assert_true(fabs(got - want) <= (double)o.range / o.n_bins + 4 * se);
    }
    efc_calib_obs_fini(&o);
    efc_free(x);
}

static void test_relu_zero_spike(void **state)
{
    (void)state;
    struct efc_rng r;
    struct efc_calib_obs with0, without0;
    float *x = falloc(N_VALUES), *pos = falloc(N_VALUES);
    size_t n_pos = 0;
    efc_rng_init(&r, g_seed + 2);
    for (size_t i = 0; i < N_VALUES; i++) {
        float v = efc_rng_normal(&r);
        x[i] = v > 0.0f ? v : 0.0f;
        if (v > 0.0f)
            pos[n_pos++] = v;
    }
    observe(&with0, x, N_VALUES);
    observe(&without0, pos, n_pos);
    assert_true(with0.n_zero > N_VALUES * 45 / 100 && with0.n_zero < N_VALUES * 55 / 100);
    assert_int_equal(with0.hist_zero, with0.n_zero);
    assert_true(with0.range == without0.range);

    struct efc_calib_opts kl = opts(EFC_CALIB_KL), naive = kl, z128 = kl, mse = opts(EFC_CALIB_MSE);
    naive.keep_zeros = 1;
    naive.kl_levels = 128;
    z128.kl_levels = 128;
    float t_ref = thr(&without0, &kl), t_kl = thr(&with0, &kl), t_naive = thr(&with0, &naive);
    float t_128 = thr(&with0, &z128);
    float t_mse = thr(&with0, &mse), t_mse_ref = thr(&without0, &mse);
    printf("relu(N(0,1)), %.1f%% zeros, max %.3f: KL efc %.4f (no-zero data %.4f), "
           "zeros removed + 128 levels %.4f, naive (zeros kept, 128 levels) %.4f; "
           "MSE %.4f (no-zero data %.4f)\n",
           100.0 * (double)with0.n_zero / N_VALUES, (double)with0.max, (double)t_kl, (double)t_ref,
           (double)t_128, (double)t_naive, (double)t_mse, (double)t_mse_ref);
    /* Zeros removed: the histogram KL sees is the no-zero one, so T is the same, exactly. */
    assert_true(t_kl == t_ref);
    assert_true(t_mse == t_mse_ref);
    assert_true(t_kl > 2.5f); /* clips only the far tail of N(0,1)+ */
    /* The naive method collapses. */
    assert_true(t_naive < 0.5f * t_ref);
    efc_calib_obs_fini(&with0);
    efc_calib_obs_fini(&without0);
    efc_free(x);
    efc_free(pos);
}

/* A heavy spike away from zero (a channel's constant background after BN + ReLU) plus a wide
 * feature tail: plain KL clips the tail to keep the spike exact; efc's guard keeps the
 * clipped share of non-zero values at or below EFC_CALIB_KL_MAX_CLIP. */
static void test_kl_spike_guard(void **state)
{
    enum { N = 200000 };
    float *x = efc_malloc(N * sizeof(float));
    struct efc_calib_obs o;
    struct efc_rng r;
    (void)state;
    efc_rng_init(&r, 77);
    for (int i = 0; i < N; i++)
        x[i] = i % 10 < 6 ? 1.0f : 6.0f * efc_rng_uniform(&r); /* 60 % spike at 1.0 */
    efc_calib_obs_init(&o);
    observe(&o, x, N);
    struct efc_calib_opts kl = opts(EFC_CALIB_KL), plain = kl;
    plain.keep_zeros = 1; /* no zeros here: the same histogram, without the guard */
    float t = thr(&o, &kl), t_plain = thr(&o, &plain);
    size_t clipped = 0;
    for (int i = 0; i < N; i++)
        clipped += x[i] > t;
    printf("spike at 1.0 + U(0, 6): KL with guard %.3f (clips %.4f %%), plain KL %.3f\n",
           (double)t, 100.0 * (double)clipped / N, (double)t_plain);
    assert_true(t_plain < 3.0f); /* the failure the guard exists for */
    /* the guard's contract, up to one histogram bin */
    assert_true((double)clipped / N <= EFC_CALIB_KL_MAX_CLIP + 6.0 / 2048 / 6.0 * 0.4 + 1e-4);
    assert_true(t > 5.9f);
    efc_calib_obs_fini(&o);
    efc_free(x);
}

static void test_outliers(void **state)
{
    (void)state;
    struct efc_rng r;
    struct efc_calib_obs o;
    float *x = falloc(N_VALUES);
    efc_rng_init(&r, g_seed + 3);
    for (size_t i = 0; i < N_VALUES; i++)
        x[i] = efc_rng_normal(&r);
    x[17] = 60.0f; /* 2 in a million, 12 sigma out */
    x[N_VALUES / 2] = -60.0f;
    observe(&o, x, N_VALUES);
    float t[EFC_CALIB_METHOD_COUNT], lo, hi;
    for (int m = 0; m < EFC_CALIB_METHOD_COUNT; m++) {
        struct efc_calib_opts op = opts((enum efc_calib_method)m);
        assert_int_equal(efc_calib_obs_range(&o, &op, &lo, &hi, &t[m]), EFC_OK);
        assert_true(lo <= 0.0f && hi >= 0.0f && lo >= o.min && hi <= o.max);
        printf("N(0,1) + outliers at +-60: %-10s T %.4f range [%.4f, %.4f]\n",
               efc_calib_method_name((enum efc_calib_method)m), (double)t[m], (double)lo,
               (double)hi);
        if (m == EFC_CALIB_MINMAX)
            assert_true(lo == -60.0f && hi == 60.0f);
    }
    assert_true(t[EFC_CALIB_PERCENTILE] > 3.5f && t[EFC_CALIB_PERCENTILE] < 4.5f);
    assert_true(t[EFC_CALIB_KL] > 2.0f && t[EFC_CALIB_KL] < 10.0f);
    assert_true(t[EFC_CALIB_MSE] > 2.0f && t[EFC_CALIB_MSE] < 0.4f * 60.0f);
    efc_calib_obs_fini(&o);
    efc_free(x);
}

static void test_merge_shards(void **state)
{
    (void)state;
    enum { SHARDS = 4 };
    struct efc_rng r;
    struct efc_calib_obs all, sh[SHARDS], tmp;
    float *x = falloc(N_VALUES);
    efc_rng_init(&r, g_seed + 4);
    /* A mixture: ReLU'd normal with a long tail, so every calibrator has work to do. */
    for (size_t i = 0; i < N_VALUES; i++) {
        float v = efc_rng_normal(&r) * (i % 7 == 0 ? 3.0f : 1.0f) + 0.3f;
        x[i] = v > 0.0f ? v : 0.0f;
    }
    observe(&all, x, N_VALUES);

    /* Shards of unequal size, as devices would have. */
    const size_t cut[SHARDS + 1] = {0, 100000, 350000, 700001, N_VALUES};
    struct efc_calib_obs p1;
    efc_calib_obs_init(&p1);
    for (int s = 0; s < SHARDS; s++) {
        efc_calib_obs_init(&sh[s]);
        assert_int_equal(efc_calib_obs_add(&sh[s], "t", x + cut[s], cut[s + 1] - cut[s]), EFC_OK);
        assert_int_equal(efc_calib_obs_merge(&p1, &sh[s]), EFC_OK); /* pass-1 agreement */
    }
    const float R = efc_calib_obs_hist_range(&p1);
    assert_true(R == all.range);
    for (int s = 0; s < SHARDS; s++) {
        assert_int_equal(efc_calib_obs_hist_begin(&sh[s], EFC_CALIB_DEFAULT_BINS, R), EFC_OK);
        assert_int_equal(efc_calib_obs_hist_add(&sh[s], "t", x + cut[s], cut[s + 1] - cut[s]),
                         EFC_OK);
    }
    struct efc_calib_obs m;
    efc_calib_obs_init(&m);
    assert_int_equal(efc_calib_obs_hist_begin(&m, EFC_CALIB_DEFAULT_BINS, R), EFC_OK);
    for (int s = SHARDS - 1; s >= 0; s--) /* any order */
        assert_int_equal(efc_calib_obs_merge(&m, &sh[s]), EFC_OK);
    assert_true(m.count == all.count && m.n_zero == all.n_zero && m.min == all.min &&
                m.max == all.max && m.hist_count == all.hist_count && m.hist_zero == all.hist_zero);
    assert_memory_equal(m.bins, all.bins, sizeof(*m.bins) * (size_t)all.n_bins);
    for (int k = 0; k < EFC_CALIB_METHOD_COUNT; k++) {
        struct efc_calib_opts op = opts((enum efc_calib_method)k);
        float a = thr(&all, &op), b = thr(&m, &op);
        printf("merge of 4 shards: %-10s T %.6f, one pass %.6f\n",
               efc_calib_method_name((enum efc_calib_method)k), (double)b, (double)a);
        assert_memory_equal(&a, &b, sizeof(a));
    }

    /* Different edges cannot merge; dst stays as it was. */
    efc_calib_obs_init(&tmp);
    assert_int_equal(efc_calib_obs_add(&tmp, "t", x, 1000), EFC_OK);
    assert_int_equal(efc_calib_obs_hist_begin(&tmp, EFC_CALIB_DEFAULT_BINS, R * 1.5f), EFC_OK);
    uint64_t before = m.count;
    assert_int_equal(efc_calib_obs_merge(&m, &tmp), EFC_EINVAL);
    assert_true(m.count == before);
    efc_calib_obs_fini(&tmp);
    efc_calib_obs_init(&tmp);
    assert_int_equal(efc_calib_obs_hist_begin(&tmp, 1024, R), EFC_OK);
    assert_int_equal(efc_calib_obs_merge(&m, &tmp), EFC_EINVAL);
    efc_calib_obs_fini(&tmp);
    efc_calib_obs_init(&tmp); /* no histogram */
    assert_int_equal(efc_calib_obs_merge(&m, &tmp), EFC_EINVAL);
    assert_int_equal(efc_calib_obs_hist_add(&tmp, "t", x, 10), EFC_EINVAL);

    efc_calib_obs_fini(&tmp);
    efc_calib_obs_fini(&m);
    efc_calib_obs_fini(&p1);
    for (int s = 0; s < SHARDS; s++)
        efc_calib_obs_fini(&sh[s]);
    efc_calib_obs_fini(&all);
    efc_free(x);
}

static void test_nan_inf(void **state)
{
    (void)state;
    struct efc_calib_obs o;
    float x[8] = {1, 2, 3, 0, -1, 5, 6, 7};
    efc_calib_obs_init(&o);
    assert_int_equal(efc_calib_obs_add(&o, "conv1", x, 8), EFC_OK);
    x[5] = NAN;
    efc_err_clear();
    assert_int_equal(efc_calib_obs_add(&o, "conv1", x, 8), EFC_EPROTO);
    printf("NaN: %s\n", efc_err_detail());
    assert_non_null(strstr(efc_err_detail(), "conv1"));
    assert_non_null(strstr(efc_err_detail(), "NaN"));
    assert_int_equal(o.count, 8);
    assert_true(o.max == 7.0f && o.min == -1.0f && o.n_zero == 1);
    x[5] = -INFINITY;
    assert_int_equal(efc_calib_obs_add(&o, "conv1", x, 8), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "Inf"));
    assert_int_equal(efc_calib_obs_hist_begin(&o, 64, efc_calib_obs_hist_range(&o)), EFC_OK);
    assert_int_equal(efc_calib_obs_hist_begin(&o, 64, 1.0f), EFC_EINVAL); /* twice */
    assert_int_equal(efc_calib_obs_hist_add(&o, "fc1", x, 8), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "fc1"));
    assert_int_equal(o.hist_count, 0);
    efc_calib_obs_fini(&o);

    /* All zeros: T = 0, range [0, 0], a valid (tiny) scale. */
    struct efc_calib_opts op = opts(EFC_CALIB_KL);
    float z[4] = {0, 0, -0.0f, 0}, lo, hi, t;
    observe(&o, z, 4);
    assert_true(o.range == 1.0f);
    assert_int_equal(efc_calib_obs_range(&o, &op, &lo, &hi, &t), EFC_OK);
    assert_true(lo == 0.0f && hi == 0.0f && t == 0.0f);
    efc_calib_obs_fini(&o);
}

int main(void)
{
    const char *s = getenv("EFC_TEST_SEED");
    if (s)
        g_seed = strtoull(s, NULL, 10);
    printf("seed %llu\n", (unsigned long long)g_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qparams),         cmocka_unit_test(test_opts_and_names),
        cmocka_unit_test(test_uniform),         cmocka_unit_test(test_gaussian_percentiles),
        cmocka_unit_test(test_relu_zero_spike), cmocka_unit_test(test_outliers),
        cmocka_unit_test(test_kl_spike_guard),
        cmocka_unit_test(test_merge_shards),    cmocka_unit_test(test_nan_inf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
