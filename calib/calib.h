/* calib.h — activation statistics and quantisation ranges for the INT8 lowering.
 *
 * Owns: per-tensor observers (exact min / max / count / exact zeros, and a histogram of |x|),
 * the calibrators that turn them into a range [lo, hi] per activation tensor (minmax,
 * percentile, KL/entropy, MSE), the one rule that turns a range into uint8 asymmetric scale
 * and zero point (efc_calib_range_to_qparams), the two-pass driver over a data set
 * (efc_calib_run) and the calibration record (efc_calib_record_json). docs/calibration.md
 * gives each algorithm exactly and the reasoning behind the zero-spike handling.
 *
 * Flow: pass 1 feeds min / max (efc_calib_obs_add); the histogram range R = max(|min|, |max|)
 * is then fixed (efc_calib_obs_hist_begin) — possibly after merging pass-1 results of several
 * devices so that every device uses the same bin edges — and pass 2 fills the histogram
 * (efc_calib_obs_hist_add). Observers (and whole efc_calib_stats) merge exactly: counts add,
 * min / max merge by min / max, so thresholds computed from merged statistics equal those
 * of one pass over the union of the data, bit for bit.
 *
 * Errors: NaN or Inf in an activation gives EFC_EPROTO naming the tensor; bad options or
 * mismatched histograms give EFC_EINVAL. Ownership: _init / _fini for caller-storage
 * observers, _new / _free for heap objects, results of efc_calib_run are freed with
 * efc_calib_result_free, JSON text with efc_free. Thread rule: one thread per object; the
 * pure functions (thresholds, range_to_qparams) are safe from any thread.
 */
#ifndef EFC_CALIB_CALIB_H
#define EFC_CALIB_CALIB_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_policy.h"
#include "common/efc_sha256.h"
#include "common/efc_status.h"
#include "model/dataset.h"
#include "model/model.h"
#include "model/quant.h"

#define EFC_CALIB_DEFAULT_BINS 2048        /* TensorRT's histogram size */
#define EFC_CALIB_DEFAULT_SAMPLES 512      /* default calibration sample count (issue 3) */
#define EFC_CALIB_DEFAULT_PERCENTILE 99.99 /* default percentile (issue 3) */
#define EFC_CALIB_DEFAULT_BATCH 64         /* default batch of the FP32 passes */
#define EFC_CALIB_MIN_SCALE 1e-30f         /* smallest scale efc_calib_range_to_qparams returns */
#define EFC_CALIB_KL_MAX_CLIP 1e-3         /* KL clips at most this fraction of non-zero values */

enum efc_calib_method {
    EFC_CALIB_MINMAX = 0,
    EFC_CALIB_PERCENTILE = 1,
    EFC_CALIB_KL = 2,
    EFC_CALIB_MSE = 3,
    EFC_CALIB_METHOD_COUNT /* never use */
};

/* "minmax", "percentile", "kl", "mse" (never NULL; "?" for an unknown value). */
const char *efc_calib_method_name(enum efc_calib_method m);
/* Parse one of the names above. EFC_EINVAL (detail lists the names) otherwise. */
enum efc_status efc_calib_method_parse(const char *s, enum efc_calib_method *out);

struct efc_calib_opts {
    enum efc_calib_method method; /* default EFC_CALIB_PERCENTILE */
    double percentile;            /* (0, 100], default 99.99 */
    int32_t samples;              /* > 0, default 512; more than the data set has: all of it */
    uint64_t seed;                /* sample selection, default 0 */
    int32_t batch;                /* FP32 batch, default 64 */
    int32_t n_bins;               /* histogram bins, >= 16, default 2048 */
    /* KL only: levels of the quantised candidate distribution. Default 128 (TensorRT, as
     * issue 3 specifies: with candidates from bin 128 of 2048 every level spans >= 1 bin);
     * 0: the number of uint8 levels the candidate range really gives |x| (255 for a
     * non-negative tensor), which makes Q equal P for candidates below 255 bins. */
    int32_t kl_levels;
    /* KL and MSE: 0 (default) removes the exact zeros from the histogram they use (zero is
     * exact in the asymmetric scheme) and applies KL's clip guard (EFC_CALIB_KL_MAX_CLIP);
     * 1 keeps the zeros and skips the guard (the naive TensorRT method, for comparison). */
    int32_t keep_zeros;
};

/* Fill o with the defaults above. */
void efc_calib_opts_default(struct efc_calib_opts *o);
/* EFC_EINVAL with a detail naming the bad field, else EFC_OK. */
enum efc_status efc_calib_opts_check(const struct efc_calib_opts *o);

/* ---- observers (caller storage) ------------------------------------------------------- */

/* Statistics of one tensor. Histogram bin b counts |x| in [b R / n_bins, (b + 1) R / n_bins),
 * values with |x| >= R in the last bin (n_over counts those strictly above R). */
struct efc_calib_obs {
    uint64_t count;      /* pass 1: values seen */
    uint64_t n_zero;     /* pass 1: exact zeros (+0 and -0) */
    float min, max;      /* pass 1: exact; +INF / -INF while count == 0 */
    int32_t n_bins;      /* 0: no histogram yet */
    float range;         /* R > 0 */
    uint64_t *bins;      /* n_bins counts, owned */
    uint64_t hist_count; /* pass 2: values seen */
    uint64_t hist_zero;  /* pass 2: exact zeros (all in bin 0) */
    uint64_t n_over;     /* pass 2: |x| > R (clamped into the last bin) */
};

void efc_calib_obs_init(struct efc_calib_obs *o);
void efc_calib_obs_fini(struct efc_calib_obs *o);
/* Pass 1: fold n values into count / n_zero / min / max. NaN or Inf: EFC_EPROTO naming
 * `name` (may be NULL), o unchanged. */
enum efc_status efc_calib_obs_add(struct efc_calib_obs *o, const char *name, const float *x,
                                  size_t n);
/* The histogram range pass 1 suggests: max(|min|, |max|), or 0 if nothing / only zeros. */
float efc_calib_obs_hist_range(const struct efc_calib_obs *o);
/* Start the histogram: n_bins (>= 16) bins over [0, range]. range <= 0 (all-zero tensor)
 * is replaced by 1 so that every observer has a valid grid. EFC_EINVAL if a histogram
 * exists already, or range is not finite; EFC_ENOMEM. */
enum efc_status efc_calib_obs_hist_begin(struct efc_calib_obs *o, int32_t n_bins, float range);
/* Pass 2: add n values to the histogram (EFC_EINVAL without one). NaN / Inf: EFC_EPROTO. */
enum efc_status efc_calib_obs_hist_add(struct efc_calib_obs *o, const char *name, const float *x,
                                       size_t n);
/* dst += src. Histograms must both be absent, or both present with the same n_bins and
 * the same R (bit for bit): EFC_EINVAL otherwise, dst unchanged. EFC_ENOMEM never (no
 * allocation). */
enum efc_status efc_calib_obs_merge(struct efc_calib_obs *dst, const struct efc_calib_obs *src);

/* Threshold T on |x| by o->method (minmax: max(|min|, |max|)). Needs pass 1; all but minmax
 * need the histogram (EFC_EINVAL without). An observer that saw no values, or only zeros,
 * gives T = 0. */
enum efc_status efc_calib_obs_threshold(const struct efc_calib_obs *o,
                                        const struct efc_calib_opts *opt, float *t);
/* Range for o: minmax [min, max]; others [max(min, -T), min(max, T)]; both extended to
 * include 0. Also returns T (may be NULL). */
enum efc_status efc_calib_obs_range(const struct efc_calib_obs *o, const struct efc_calib_opts *opt,
                                    float *lo, float *hi, float *t);

/* Lower-level calibrators on a raw |x| histogram (bins[0..n_bins) over [0, range]), for
 * tests and tools. kl / mse use the candidate thresholds i * range / n_bins for i =
 * n_bins / 16 .. n_bins; min / max are the tensor's min and max (they set the uint8
 * grid of each candidate). levels as in efc_calib_opts.kl_levels. */
float efc_calib_hist_percentile(const uint64_t *bins, int32_t n_bins, float range, double p);
float efc_calib_hist_kl(const uint64_t *bins, int32_t n_bins, float range, float min, float max,
                        int32_t levels);
float efc_calib_hist_mse(const uint64_t *bins, int32_t n_bins, float range, float min, float max);

/* The one range -> uint8 asymmetric rule: extend [lo, hi] to include 0, s = (hi - lo) / 255
 * (computed in double, stored as float, at least EFC_CALIB_MIN_SCALE), zp = round(-lo / s)
 * (half away from zero) clamped to [0, 255]. EFC_EINVAL if lo or hi is not finite or lo > hi. */
enum efc_status efc_calib_range_to_qparams(float lo, float hi, float *scale, int32_t *zero_point);

/* ---- statistics of a whole model ------------------------------------------------------ */

/* One observer per tensor of the compiled model (efc_exec_model of an FP32 executor of m):
 * activation tensors the executor reports are `observed`, the rest stay empty.
 * Two graph rules are recorded here and applied by efc_calib_result_from_stats:
 * - the model input always gets its exact [min, max] (whatever the calibrator): it is the
 *   normalised data itself, bounded, and often has spikes (black background pixels) that
 *   histogram calibrators mistake for the bulk (docs/calibration.md);
 * - outputs of max / avg / global-avg pool, flatten and reshape share the range of the tensor
 *   they come from (share[t], resolved to the first tensor of such a chain), because the INT8
 *   pools and views keep the input's scale and zero point (kernels.h). */
struct efc_calib_stats {
    int32_t n_tensors;
    struct efc_calib_obs *obs;   /* n_tensors */
    char (*names)[EFC_NAME_MAX]; /* n_tensors tensor names */
    uint8_t *observed;           /* n_tensors: 1 if the executor reported the tensor */
    int32_t *share;              /* n_tensors: tensor whose range t takes, or -1 */
    int32_t input;               /* the compiled model's input tensor */
};

/* Empty statistics for m's compiled graph (compiles m once to learn it). */
enum efc_status efc_calib_stats_new(const struct efc_model *m, struct efc_calib_stats **out);
void efc_calib_stats_free(struct efc_calib_stats *s);
/* Run the FP32 model on samples idx[0..n_idx) of d in batches of `batch`, feeding every
 * observed tensor: pass 1 for observers without a histogram, pass 2 for those with one.
 * Errors: EFC_EINVAL (sample size differs from the model input, n_idx < 1, bad index),
 * EFC_EPROTO (NaN / Inf activation, naming the tensor), executor errors. */
enum efc_status efc_calib_stats_collect(struct efc_calib_stats *s, const struct efc_model *m,
                                        const struct efc_dataset *d, const int32_t *idx,
                                        int32_t n_idx, int32_t batch);
/* Start every observed tensor's histogram with n_bins over its own pass-1 range, or over
 * ranges[t] when ranges != NULL (e.g. agreed across devices). */
enum efc_status efc_calib_stats_hist_begin(struct efc_calib_stats *s, int32_t n_bins,
                                           const float *ranges);
/* dst += src, tensor by tensor (same compiled graph: tensor count and names must match). */
enum efc_status efc_calib_stats_merge(struct efc_calib_stats *dst,
                                      const struct efc_calib_stats *src);

/* ---- the driver and its record -------------------------------------------------------- */

struct efc_calib_range {
    int32_t tensor; /* index in the compiled model's tensors */
    char name[EFC_NAME_MAX];
    float lo, hi;    /* chosen range, lo <= 0 <= hi */
    float threshold; /* T on |x| (minmax: max(|min|, |max|)) */
    float min, max;  /* observed */
    float scale;     /* efc_calib_range_to_qparams(lo, hi) */
    int32_t zero_point;
    uint64_t count, n_zero; /* pass-1 values and exact zeros */
    int32_t shares;         /* -1, or the tensor whose range this one took (pools, views) */
    int32_t exact;          /* 1: [min, max] regardless of the calibrator (model input) */
};

struct efc_calib_result {
    struct efc_calib_opts opts;             /* as used (defaults filled in) */
    int32_t samples;                        /* actually used (<= data set size) */
    int32_t data_n;                         /* data set size */
    char data_digest[EFC_SHA256_HEX_BYTES]; /* SHA-256 of the selected samples' raw bytes */
    int32_t n_ranges;
    struct efc_calib_range *ranges; /* observed tensors in compiled-model order, owned */
};

/* Two-pass calibration of m on d (see the header comment). Sample selection: all samples
 * if o->samples >= d->n, else the first o->samples indices of efc_rng_shuffle(seed) over
 * 0..n-1, sorted ascending; they are fed and digested in that order. o may be NULL
 * (defaults). Errors: EFC_EINVAL (bad options, empty data set, sample size != model input
 * size), EFC_EPROTO (NaN / Inf activation: the detail names the tensor), EFC_ENOMEM,
 * executor errors. *out is the caller's (efc_calib_result_free). */
enum efc_status efc_calib_run(const struct efc_model *m, const struct efc_dataset *d,
                              const struct efc_calib_opts *o, struct efc_calib_result **out);
/* Build a result from merged statistics (fleet use): same ranges as efc_calib_run would
 * compute from them. samples / seed / digest are the caller's to fill in (digest may be
 * left empty). */
enum efc_status efc_calib_result_from_stats(const struct efc_calib_stats *s,
                                            const struct efc_calib_opts *o,
                                            struct efc_calib_result **out);
void efc_calib_result_free(struct efc_calib_result *r);
/* The range of the tensor called `name`, or NULL. */
const struct efc_calib_range *efc_calib_result_find(const struct efc_calib_result *r,
                                                    const char *name);
/* Lower m to INT8 with the ranges of r (model/quant.h): compiles m once to index its tensors;
 * r's tensor indices and names must match that compiled graph (EFC_EINVAL otherwise, e.g. a
 * result computed for another model). *out: efc_model_free. rep may be NULL. */
enum efc_status efc_calib_lower(const struct efc_model *m, const struct efc_calib_result *r,
                                const struct efc_quant_opts *qo, struct efc_model **out,
                                struct efc_quant_report *rep);
/* The calibration record as one JSON object (see docs/calibration.md), NUL-terminated,
 * allocated: efc_free(*json). */
enum efc_status efc_calib_record_json(const struct efc_calib_result *r, char **json);

/* The options of a policy's `int8(...)` step (docs/policies.md): calib=minmax|percentile|kl|
 * mse [percentile], weights=channel|tensor [channel], p=P (percentile, with calib=percentile
 * only). co and qo get the defaults first. EFC_EINVAL naming the key and its allowed values for
 * anything else, or if the step is not int8. */
enum efc_status efc_calib_policy_step(const struct efc_policy_step *st,
                                      struct efc_calib_opts *co, struct efc_quant_opts *qo);

#endif
