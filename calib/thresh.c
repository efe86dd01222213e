/* thresh.c — calibrators: a threshold T on |x| from an observer (minmax, percentile, KL,
 * MSE), and the resulting range. The algorithms and the zero-spike reasoning are written out
 * in docs/calibration.md; the comments here give the invariants. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "calib/calib.h"
#include "common/efc_alloc.h"

/* First candidate for KL / MSE: TensorRT starts at bin 128 of 2048 (1/16 of the range). */
static int32_t first_candidate(int32_t n_bins)
{
    int32_t s = n_bins / 16;
    return s < 1 ? 1 : s;
}

/* The range a threshold gives (the rule of efc_calib_obs_range). */
static void clip_range(float t, float mn, float mx, double *lo, double *hi)
{
    double l = mn > -t ? mn : -t, h = mx < t ? mx : t;
    *lo = l < 0.0 ? l : 0.0;
    *hi = h > 0.0 ? h : 0.0;
}

/* uint8 step of candidate t, and how many steps of that size cover |x| in [0, t]: 255 for a
 * non-negative (or non-positive) tensor, 127.5 -> 128 for a symmetric one. */
static double grid_step(float t, float mn, float mx, int32_t *levels)
{
    double lo, hi;
    clip_range(t, mn, mx, &lo, &hi);
    double s = (hi - lo) / 255.0;
    if (levels) {
        double l = s > 0.0 ? floor((double)t / s + 0.5) : 255.0;
        *levels = l < 1.0 ? 1 : l > 255.0 ? 255 : (int32_t)l;
    }
    return s;
}

float efc_calib_hist_percentile(const uint64_t *bins, int32_t n_bins, float range, double p)
{
    uint64_t total = 0;
    for (int32_t b = 0; b < n_bins; b++)
        total += bins[b];
    if (total == 0)
        return range;
    const double w = (double)range / n_bins;
    const double target = p / 100.0 * (double)total;
    double cum = 0.0;
    for (int32_t b = 0; b < n_bins; b++) {
        if (bins[b] == 0)
            continue;
        if (cum + (double)bins[b] >= target) {
            double f = (target - cum) / (double)bins[b];
            f = f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
            return (float)(((double)b + f) * w);
        }
        cum += (double)bins[b];
    }
    return range; /* rounding of target above total: the top edge */
}

float efc_calib_hist_kl(const uint64_t *bins, int32_t n_bins, float range, float min, float max,
                        int32_t levels)
{
    uint64_t total = 0;
    for (int32_t b = 0; b < n_bins; b++)
        total += bins[b];
    if (total == 0)
        return range;
    const double w = (double)range / n_bins;
    double best = INFINITY;
    int32_t best_i = n_bins;
    uint64_t inside = 0; /* sum of bins[0..i) */
    for (int32_t b = 0; b < first_candidate(n_bins); b++)
        inside += bins[b];

    for (int32_t i = first_candidate(n_bins); i <= n_bins; i++) {
        if (i > first_candidate(n_bins))
            inside += bins[i - 1];
        /* Reference P: bins[0..i) with the outliers bins[i..n) folded into bin i - 1 (sum =
         * total). Candidate Q: bins[0..i) merged into L chunks, each chunk's mass spread
         * evenly over its non-empty bins (empty bins stay empty), sum = inside. */
        if (inside == 0)
            continue;
        const uint64_t outliers = total - inside;
        if (outliers > 0 && bins[i - 1] == 0)
            continue; /* P > 0 where Q = 0: infinite divergence */
        int32_t L = levels;
        if (L <= 0)
            grid_step((float)(i * w), min, max, &L);
        const double inv_p = 1.0 / (double)total, inv_q = 1.0 / (double)inside;
        double kl = 0.0;
        for (int32_t j = 0; j < L; j++) {
            int32_t start = (int32_t)((int64_t)j * i / L);
            int32_t stop = (int32_t)((int64_t)(j + 1) * i / L);
            uint64_t mass = 0;
            int32_t nz = 0;
            for (int32_t b = start; b < stop; b++) {
                mass += bins[b];
                nz += bins[b] != 0;
            }
            if (nz == 0)
                continue;
            const double q = (double)mass / nz * inv_q;
            for (int32_t b = start; b < stop; b++) {
                if (bins[b] == 0)
                    continue;
                uint64_t pc = bins[b] + (b == i - 1 ? outliers : 0);
                const double p = (double)pc * inv_p;
                kl += p * log(p / q);
            }
        }
        /* Ties go to the larger threshold (less clipping), as pytorch-quantization does. */
        if (kl <= best) {
            best = kl;
            best_i = i;
        }
    }
    return (float)(best_i * w);
}

float efc_calib_hist_mse(const uint64_t *bins, int32_t n_bins, float range, float min, float max)
{
    uint64_t total = 0;
    for (int32_t b = 0; b < n_bins; b++)
        total += bins[b];
    if (total == 0)
        return range;
    const double w = (double)range / n_bins;
    double best = INFINITY;
    int32_t best_i = n_bins;
    uint64_t inside = 0;
    for (int32_t b = 0; b < first_candidate(n_bins); b++)
        inside += bins[b];

    for (int32_t i = first_candidate(n_bins); i <= n_bins; i++) {
        if (i > first_candidate(n_bins))
            inside += bins[i - 1];
        const double t = i * w;
        const double s = grid_step((float)t, min, max, NULL);
        /* Inside the range: rounding to a grid of step s, error uniform on [-s/2, s/2]
         * (s^2 / 12). Outside: clipped to T, |x| - T with |x| at the bin centre (exact for
         * either sign: a value outside [max(min, -T), min(max, T)] has |x| > T). */
        double err = (double)inside * s * s / 12.0;
        for (int32_t b = i; b < n_bins; b++) {
            if (bins[b] == 0)
                continue;
            double d = ((double)b + 0.5) * w - t;
            err += (double)bins[b] * d * d;
        }
        if (err <= best) {
            best = err;
            best_i = i;
        }
    }
    return (float)(best_i * w);
}

enum efc_status efc_calib_obs_threshold(const struct efc_calib_obs *o,
                                        const struct efc_calib_opts *opt, float *t)
{
    if (opt->method == EFC_CALIB_MINMAX || o->count == 0 || o->count == o->n_zero) {
        *t = efc_calib_obs_hist_range(o);
        return EFC_OK;
    }
    if (!o->bins)
        return efc_errf(EFC_EINVAL, "calib: %s needs the pass-2 histogram",
                        efc_calib_method_name(opt->method));
    if (opt->method == EFC_CALIB_PERCENTILE) {
        *t = efc_calib_hist_percentile(o->bins, o->n_bins, o->range, opt->percentile);
        return EFC_OK;
    }
    if (opt->method != EFC_CALIB_KL && opt->method != EFC_CALIB_MSE)
        return efc_errf(EFC_EINVAL, "calib: calibrator %d out of range", (int)opt->method);

    /* Exact zeros (the ReLU spike) sit in bin 0; they are exact in the asymmetric scheme, so
     * the zero-free histogram is what KL / MSE should look at (docs/calibration.md). */
    uint64_t *h = efc_malloc((size_t)o->n_bins * sizeof(*h));
    if (!h)
        return efc_errf(EFC_ENOMEM, "calib: histogram copy");
    memcpy(h, o->bins, (size_t)o->n_bins * sizeof(*h));
    if (!opt->keep_zeros)
        h[0] -= o->hist_zero <= h[0] ? o->hist_zero : h[0];
    if (opt->method == EFC_CALIB_KL) {
        *t = efc_calib_hist_kl(h, o->n_bins, o->range, o->min, o->max, opt->kl_levels);
        /* Clip guard: KL weighs bins by their mass, so a heavy spike away from zero (a
         * constant background after BN + ReLU, one per channel) can make it clip the light
         * tail where the features are. Never clip more than EFC_CALIB_KL_MAX_CLIP of the
         * non-zero values (docs/calibration.md). */
        if (!opt->keep_zeros) { /* keep_zeros = 1 is the plain TensorRT method, for comparison */
            float guard = efc_calib_hist_percentile(h, o->n_bins, o->range,
                                                    100.0 * (1.0 - EFC_CALIB_KL_MAX_CLIP));
            if (guard > *t)
                *t = guard;
        }
    } else
        *t = efc_calib_hist_mse(h, o->n_bins, o->range, o->min, o->max);
    efc_free(h);
    return EFC_OK;
}

enum efc_status efc_calib_obs_range(const struct efc_calib_obs *o, const struct efc_calib_opts *opt,
                                    float *lo, float *hi, float *t)
{
    float thr = 0.0f;
    enum efc_status st = efc_calib_obs_threshold(o, opt, &thr);
    if (st)
        return st;
    if (o->count == 0) {
        *lo = *hi = 0.0f;
    } else if (opt->method == EFC_CALIB_MINMAX) {
        *lo = o->min < 0.0f ? o->min : 0.0f;
        *hi = o->max > 0.0f ? o->max : 0.0f;
    } else {
        double l, h;
        clip_range(thr, o->min, o->max, &l, &h);
        *lo = (float)l;
        *hi = (float)h;
    }
    if (t)
        *t = thr;
    return EFC_OK;
}
