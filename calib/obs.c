/* obs.c — per-tensor observers (min / max / zeros, |x| histogram), their merge, options and
 * the range -> uint8 asymmetric rule. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "calib/calib.h"
#include "common/efc_alloc.h"

static const char *const method_names[EFC_CALIB_METHOD_COUNT] = {"minmax", "percentile", "kl",
                                                                 "mse"};

const char *efc_calib_method_name(enum efc_calib_method m)
{
    if ((int)m < 0 || m >= EFC_CALIB_METHOD_COUNT)
        return "?";
    return method_names[m];
}

enum efc_status efc_calib_method_parse(const char *s, enum efc_calib_method *out)
{
    for (int i = 0; s && i < EFC_CALIB_METHOD_COUNT; i++) {
        if (strcmp(s, method_names[i]) == 0) {
            *out = (enum efc_calib_method)i;
            return EFC_OK;
        }
    }
    return efc_errf(EFC_EINVAL, "calib: unknown calibrator '%s' (minmax, percentile, kl, mse)",
                    s ? s : "(null)");
}

void efc_calib_opts_default(struct efc_calib_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->method = EFC_CALIB_PERCENTILE;
    o->percentile = EFC_CALIB_DEFAULT_PERCENTILE;
    o->samples = EFC_CALIB_DEFAULT_SAMPLES;
    o->seed = 0;
    o->batch = EFC_CALIB_DEFAULT_BATCH;
    o->n_bins = EFC_CALIB_DEFAULT_BINS;
    o->kl_levels = 128; /* TensorRT (issue 3); 0 = the grid's own level count */
    o->keep_zeros = 0;
}

enum efc_status efc_calib_opts_check(const struct efc_calib_opts *o)
{
    if ((int)o->method < 0 || o->method >= EFC_CALIB_METHOD_COUNT)
        return efc_errf(EFC_EINVAL, "calib: calibrator %d out of range", (int)o->method);
    if (!(o->percentile > 0.0 && o->percentile <= 100.0))
        return efc_errf(EFC_EINVAL, "calib: percentile %g outside (0, 100]", o->percentile);
    if (o->samples < 1)
        return efc_errf(EFC_EINVAL, "calib: samples %d < 1", o->samples);
    if (o->batch < 1 || o->batch > 65536)
        return efc_errf(EFC_EINVAL, "calib: batch %d outside 1..65536", o->batch);
    if (o->n_bins < 16 || o->n_bins > (1 << 20))
        return efc_errf(EFC_EINVAL, "calib: n_bins %d outside 16..%d", o->n_bins, 1 << 20);
    if (o->kl_levels < 0 || o->kl_levels > 255)
        return efc_errf(EFC_EINVAL, "calib: kl_levels %d outside 0..255", o->kl_levels);
    if (o->keep_zeros != 0 && o->keep_zeros != 1)
        return efc_errf(EFC_EINVAL, "calib: keep_zeros %d not 0 or 1", o->keep_zeros);
    return EFC_OK;
}

void efc_calib_obs_init(struct efc_calib_obs *o)
{
    memset(o, 0, sizeof(*o));
    o->min = INFINITY;
    o->max = -INFINITY;
}

void efc_calib_obs_fini(struct efc_calib_obs *o)
{
    if (!o)
        return;
    efc_free(o->bins);
    efc_calib_obs_init(o);
}

static enum efc_status bad_value(const char *name, size_t i, float v)
{
    return efc_errf(EFC_EPROTO, "calib: tensor '%s': %s activation at element %zu",
                    name ? name : "?", isnan(v) ? "NaN" : "Inf", i);
}

enum efc_status efc_calib_obs_add(struct efc_calib_obs *o, const char *name, const float *x,
                                  size_t n)
{
    float mn = o->min, mx = o->max;
    uint64_t zeros = 0;
    int bad = 0;

    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        bad |= !(fabsf(v) <= FLT_MAX); /* NaN fails every comparison */
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        zeros += v == 0.0f;
    }
    if (bad) {
        for (size_t i = 0; i < n; i++)
            if (!(fabsf(x[i]) <= FLT_MAX))
                return bad_value(name, i, x[i]);
    }
    /* -0 and +0 compare equal: keep +0 as the extreme so records never show "-0". */
    o->min = mn == 0.0f ? 0.0f : mn;
    o->max = mx == 0.0f ? 0.0f : mx;
    o->count += n;
    o->n_zero += zeros;
    return EFC_OK;
}

float efc_calib_obs_hist_range(const struct efc_calib_obs *o)
{
    if (o->count == 0)
        return 0.0f;
    return fmaxf(fabsf(o->min), fabsf(o->max));
}

enum efc_status efc_calib_obs_hist_begin(struct efc_calib_obs *o, int32_t n_bins, float range)
{
    if (o->bins)
        return efc_errf(EFC_EINVAL, "calib: histogram already started");
    if (n_bins < 16 || n_bins > (1 << 20))
        return efc_errf(EFC_EINVAL, "calib: n_bins %d outside 16..%d", n_bins, 1 << 20);
    if (!(fabsf(range) <= FLT_MAX))
        return efc_errf(EFC_EINVAL, "calib: histogram range is not finite");
    o->bins = efc_calloc((size_t)n_bins, sizeof(*o->bins));
    if (!o->bins)
        return efc_errf(EFC_ENOMEM, "calib: histogram of %d bins", n_bins);
    o->n_bins = n_bins;
    /* An all-zero tensor has no scale of its own; any positive R keeps the grid valid. */
    o->range = range > 0.0f ? range : 1.0f;
    o->hist_count = o->hist_zero = o->n_over = 0;
    return EFC_OK;
}

enum efc_status efc_calib_obs_hist_add(struct efc_calib_obs *o, const char *name, const float *x,
                                       size_t n)
{
    if (!o->bins)
        return efc_errf(EFC_EINVAL, "calib: tensor '%s': no histogram (call hist_begin)",
                        name ? name : "?");
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= FLT_MAX))
            return bad_value(name, i, x[i]);
    /* Double precision, one multiply: the same bin for the same value on every IEEE machine,
     * so histograms built on different devices merge exactly. */
    const double inv = (double)o->n_bins / (double)o->range;
    const uint64_t last = (uint64_t)o->n_bins - 1;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        double f = (double)a * inv;
        uint64_t b = f >= (double)last ? last : (uint64_t)f;
        o->bins[b]++;
        o->hist_zero += a == 0.0f;
        o->n_over += a > o->range;
    }
    o->hist_count += n;
    return EFC_OK;
}

enum efc_status efc_calib_obs_merge(struct efc_calib_obs *dst, const struct efc_calib_obs *src)
{
    if ((dst->bins == NULL) != (src->bins == NULL))
        return efc_errf(EFC_EINVAL, "calib: merging an observer with a histogram and one "
                                    "without");
    if (dst->bins) {
        if (dst->n_bins != src->n_bins)
            return efc_errf(EFC_EINVAL, "calib: histograms with %d and %d bins", dst->n_bins,
                            src->n_bins);
        if (memcmp(&dst->range, &src->range, sizeof(float)) != 0)
            return efc_errf(EFC_EINVAL,
                            "calib: histogram ranges differ (%.9g vs %.9g): "
                            "agree on R before pass 2",
                            (double)dst->range, (double)src->range);
        for (int32_t b = 0; b < dst->n_bins; b++)
            dst->bins[b] += src->bins[b];
        dst->hist_count += src->hist_count;
        dst->hist_zero += src->hist_zero;
        dst->n_over += src->n_over;
    }
    dst->count += src->count;
    dst->n_zero += src->n_zero;
    dst->min = fminf(dst->min, src->min);
    dst->max = fmaxf(dst->max, src->max);
    return EFC_OK;
}

enum efc_status efc_calib_range_to_qparams(float lo, float hi, float *scale, int32_t *zero_point)
{
    if (!(fabsf(lo) <= FLT_MAX) || !(fabsf(hi) <= FLT_MAX) || lo > hi)
        return efc_errf(EFC_EINVAL, "calib: bad range [%g, %g]", (double)lo, (double)hi);
    double l = lo < 0.0f ? lo : 0.0, h = hi > 0.0f ? hi : 0.0;
    float s = (float)((h - l) / 255.0);
    if (!(s >= EFC_CALIB_MIN_SCALE))
        s = EFC_CALIB_MIN_SCALE;
    double z = round(-l / (double)s);
    *scale = s;
    *zero_point = z < 0.0 ? 0 : z > 255.0 ? 255 : (int32_t)z;
    return EFC_OK;
}
