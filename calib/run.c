/* run.c — per-model statistics fed by the FP32 executor's observer, and the two-pass
 * calibration driver (sample selection, data digest, ranges). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib/calib.h"
#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "model/exec.h"

/* ---- statistics ------------------------------------------------------------------------ */

void efc_calib_stats_free(struct efc_calib_stats *s)
{
    if (!s)
        return;
    for (int32_t t = 0; s->obs && t < s->n_tensors; t++)
        efc_calib_obs_fini(&s->obs[t]);
    efc_free(s->obs);
    efc_free(s->names);
    efc_free(s->observed);
    efc_free(s->share);
    efc_free(s);
}

static void mark_observed(void *ctx, const struct efc_model *compiled, int32_t tensor,
                          const float *data, int32_t batch)
{
    struct efc_calib_stats *s = ctx;
    (void)compiled;
    (void)data;
    (void)batch;
    if (tensor >= 0 && tensor < s->n_tensors)
        s->observed[tensor] = 1;
}

enum efc_status efc_calib_stats_new(const struct efc_model *m, struct efc_calib_stats **out)
{
    struct efc_exec_opts eo = {.max_batch = 1};
    struct efc_exec *e = NULL;
    struct efc_calib_stats *s = NULL;
    float *zero = NULL;
    const float *logits;
    enum efc_status st;

    *out = NULL;
    st = efc_exec_new(m, &eo, &e);
    if (st)
        return st;
    const struct efc_model *c = efc_exec_model(e);
    s = efc_calloc(1, sizeof(*s));
    if (!s) {
        st = efc_errf(EFC_ENOMEM, "calib: stats");
        goto out;
    }
    s->n_tensors = c->n_tensors;
    s->obs = efc_calloc((size_t)c->n_tensors, sizeof(*s->obs));
    s->names = efc_calloc((size_t)c->n_tensors, sizeof(*s->names));
    s->observed = efc_calloc((size_t)c->n_tensors, 1);
    s->share = efc_calloc((size_t)c->n_tensors, sizeof(*s->share));
    zero = efc_calloc((size_t)efc_exec_input_size(e), sizeof(float));
    if (!s->obs || !s->names || !s->observed || !s->share || !zero) {
        st = efc_errf(EFC_ENOMEM, "calib: stats for %d tensors", c->n_tensors);
        goto out;
    }
    for (int32_t t = 0; t < c->n_tensors; t++) {
        efc_calib_obs_init(&s->obs[t]);
        memcpy(s->names[t], c->tensors[t].name, EFC_NAME_MAX);
        s->names[t][EFC_NAME_MAX - 1] = '\0';
        s->share[t] = -1;
    }
    s->input = c->input;
    for (int32_t i = 0; i < c->n_nodes; i++) { /* topological: roots resolve in one pass */
        const struct efc_node *n = &c->nodes[i];
        if (n->op != EFC_OP_MAXPOOL && n->op != EFC_OP_AVGPOOL && n->op != EFC_OP_GAVGPOOL &&
            n->op != EFC_OP_FLATTEN && n->op != EFC_OP_RESHAPE)
            continue;
        int32_t src = n->inputs[0];
        if (src < 0 || src >= c->n_tensors || n->output < 0 || n->output >= c->n_tensors)
            continue;
        s->share[n->output] = s->share[src] >= 0 ? s->share[src] : src;
    }
    /* Which tensors the executor reports is its business: ask it with one dry run. */
    efc_exec_set_observer(e, mark_observed, s);
    st = efc_exec_run(e, zero, 1, &logits);
out:
    efc_free(zero);
    efc_exec_free(e);
    if (st) {
        efc_calib_stats_free(s);
        return st;
    }
    *out = s;
    return EFC_OK;
}

struct collect_ctx {
    struct efc_calib_stats *s;
    enum efc_status st; /* first error; later reports are ignored */
};

static void collect_observer(void *ctx, const struct efc_model *compiled, int32_t tensor,
                             const float *data, int32_t batch)
{
    struct collect_ctx *c = ctx;
    (void)compiled;
    if (c->st || tensor < 0 || tensor >= c->s->n_tensors || !c->s->observed[tensor])
        return;
    struct efc_calib_obs *o = &c->s->obs[tensor];
    size_t n = efc_tensor_numel(&compiled->tensors[tensor]) * (size_t)batch;
    if (o->bins)
        c->st = efc_calib_obs_hist_add(o, c->s->names[tensor], data, n);
    else
        c->st = efc_calib_obs_add(o, c->s->names[tensor], data, n);
}

enum efc_status efc_calib_stats_collect(struct efc_calib_stats *s, const struct efc_model *m,
                                        const struct efc_dataset *d, const int32_t *idx,
                                        int32_t n_idx, int32_t batch)
{
    struct efc_exec_opts eo = {0};
    struct efc_exec *e = NULL;
    float *buf = NULL;
    enum efc_status st;
    struct collect_ctx c = {.s = s, .st = EFC_OK};

    if (!d || d->n < 1)
        return efc_errf(EFC_EINVAL, "calib: the calibration data set is empty");
    if (n_idx < 1 || batch < 1)
        return efc_errf(EFC_EINVAL, "calib: %d samples in batches of %d", n_idx, batch);
    for (int32_t i = 0; i < n_idx; i++)
        if (idx[i] < 0 || idx[i] >= d->n)
            return efc_errf(EFC_EINVAL, "calib: sample index %d outside 0..%d", idx[i], d->n - 1);
    eo.max_batch = batch < n_idx ? batch : n_idx;
    st = efc_exec_new(m, &eo, &e);
    if (st)
        return st;
    const struct efc_model *cm = efc_exec_model(e);
    const size_t ss = efc_dataset_sample_size(d);
    const struct efc_tensor *in = &cm->tensors[cm->input];
    if (ss != (size_t)efc_exec_input_size(e)) {
        char shape[64];
        int k = 0;
        shape[0] = '\0';
        for (int32_t i = 0; i < in->ndim && k >= 0 && k < (int)sizeof(shape); i++)
            k += snprintf(shape + k, sizeof(shape) - (size_t)k, i ? "x%d" : "%d", in->dims[i]);
        st = efc_errf(EFC_EINVAL,
                      "calib: data set %s has %zu values per sample (%dx%dx%d), "
                      "model '%s' takes %d (%s)",
                      d->source, ss, d->dims[0], d->ndim > 1 ? d->dims[1] : 1,
                      d->ndim > 2 ? d->dims[2] : 1, m->name, efc_exec_input_size(e), shape);
        goto out;
    }
    if (cm->n_tensors != s->n_tensors) {
        st = efc_errf(EFC_EINVAL, "calib: statistics for %d tensors, compiled model has %d",
                      s->n_tensors, cm->n_tensors);
        goto out;
    }
    buf = efc_malloc((size_t)eo.max_batch * ss * sizeof(float));
    if (!buf) {
        st = efc_errf(EFC_ENOMEM, "calib: input batch");
        goto out;
    }
    efc_exec_set_observer(e, collect_observer, &c);
    for (int32_t i0 = 0; i0 < n_idx; i0 += eo.max_batch) {
        int32_t nb = n_idx - i0 < eo.max_batch ? n_idx - i0 : eo.max_batch;
        const float *logits;
        efc_dataset_gather_f32(d, idx + i0, nb, buf);
        st = efc_exec_run(e, buf, nb, &logits);
        if (!st && c.st) {
            char detail[256];
            snprintf(detail, sizeof(detail), "%s", efc_err_detail());
            st = efc_errf(c.st, "%s (in the batch of data-set samples %d..%d)", detail, idx[i0],
                          idx[i0 + nb - 1]);
        }
        if (st)
            goto out;
    }
out:
    efc_free(buf);
    efc_exec_free(e);
    return st;
}

enum efc_status efc_calib_stats_hist_begin(struct efc_calib_stats *s, int32_t n_bins,
                                           const float *ranges)
{
    for (int32_t t = 0; t < s->n_tensors; t++) {
        if (!s->observed[t])
            continue;
        float r = ranges ? ranges[t] : efc_calib_obs_hist_range(&s->obs[t]);
        enum efc_status st = efc_calib_obs_hist_begin(&s->obs[t], n_bins, r);
        if (st)
            return st;
    }
    return EFC_OK;
}

enum efc_status efc_calib_stats_merge(struct efc_calib_stats *dst,
                                      const struct efc_calib_stats *src)
{
    if (dst->n_tensors != src->n_tensors)
        return efc_errf(EFC_EINVAL, "calib: merging statistics of %d and %d tensors",
                        dst->n_tensors, src->n_tensors);
    for (int32_t t = 0; t < dst->n_tensors; t++)
        if (strcmp(dst->names[t], src->names[t]) != 0 || dst->observed[t] != src->observed[t])
            return efc_errf(EFC_EINVAL,
                            "calib: merging statistics of different graphs "
                            "(tensor %d: '%s' vs '%s')",
                            t, dst->names[t], src->names[t]);
    /* Validate every tensor before changing any, so a failed merge leaves dst intact. */
    for (int32_t t = 0; t < dst->n_tensors; t++) {
        const struct efc_calib_obs *a = &dst->obs[t], *b = &src->obs[t];
        if ((a->bins == NULL) != (b->bins == NULL) ||
            (a->bins && (a->n_bins != b->n_bins || memcmp(&a->range, &b->range, 4) != 0)))
            return efc_errf(EFC_EINVAL,
                            "calib: tensor '%s': histograms with different "
                            "edges cannot be merged",
                            dst->names[t]);
    }
    for (int32_t t = 0; t < dst->n_tensors; t++) {
        enum efc_status st = efc_calib_obs_merge(&dst->obs[t], &src->obs[t]);
        if (st)
            return st;
    }
    return EFC_OK;
}

/* ---- results --------------------------------------------------------------------------- */

void efc_calib_result_free(struct efc_calib_result *r)
{
    if (!r)
        return;
    efc_free(r->ranges);
    efc_free(r);
}

const struct efc_calib_range *efc_calib_result_find(const struct efc_calib_result *r,
                                                    const char *name)
{
    for (int32_t i = 0; r && name && i < r->n_ranges; i++)
        if (strcmp(r->ranges[i].name, name) == 0)
            return &r->ranges[i];
    return NULL;
}

enum efc_status efc_calib_result_from_stats(const struct efc_calib_stats *s,
                                            const struct efc_calib_opts *o,
                                            struct efc_calib_result **out)
{
    struct efc_calib_opts def;
    enum efc_status st;
    int32_t n = 0;

    *out = NULL;
    if (!o) {
        efc_calib_opts_default(&def);
        o = &def;
    }
    st = efc_calib_opts_check(o);
    if (st)
        return st;
    struct efc_calib_result *r = efc_calloc(1, sizeof(*r));
    if (!r)
        return efc_errf(EFC_ENOMEM, "calib: result");
    r->opts = *o;
    for (int32_t t = 0; t < s->n_tensors; t++)
        n += s->observed[t] != 0;
    r->ranges = efc_calloc(n > 0 ? (size_t)n : 1, sizeof(*r->ranges));
    if (!r->ranges) {
        efc_free(r);
        return efc_errf(EFC_ENOMEM, "calib: %d ranges", n);
    }
    for (int32_t t = 0; t < s->n_tensors; t++) {
        if (!s->observed[t])
            continue;
        const struct efc_calib_obs *ob = &s->obs[t];
        struct efc_calib_range *g = &r->ranges[r->n_ranges];
        g->tensor = t;
        memcpy(g->name, s->names[t], EFC_NAME_MAX);
        g->shares = s->share[t];
        g->exact = t == s->input;
        if (g->exact) {
            struct efc_calib_opts mm = *o;
            mm.method = EFC_CALIB_MINMAX;
            st = efc_calib_obs_range(ob, &mm, &g->lo, &g->hi, &g->threshold);
        } else {
            st = efc_calib_obs_range(ob, o, &g->lo, &g->hi, &g->threshold);
        }
        if (!st)
            st = efc_calib_range_to_qparams(g->lo, g->hi, &g->scale, &g->zero_point);
        if (st) {
            efc_calib_result_free(r);
            return st;
        }
        g->min = ob->count ? ob->min : 0.0f;
        g->max = ob->count ? ob->max : 0.0f;
        g->count = ob->count;
        g->n_zero = ob->n_zero;
        r->n_ranges++;
    }
    /* Shared ranges: copy the root's choice (roots come first in topological order, but a
     * lookup by tensor keeps this independent of that). */
    for (int32_t i = 0; i < r->n_ranges; i++) {
        struct efc_calib_range *g = &r->ranges[i];
        for (int32_t k = 0; g->shares >= 0 && k < r->n_ranges; k++) {
            const struct efc_calib_range *root = &r->ranges[k];
            if (root->tensor != g->shares)
                continue;
            g->lo = root->lo;
            g->hi = root->hi;
            g->threshold = root->threshold;
            g->scale = root->scale;
            g->zero_point = root->zero_point;
            g->exact = root->exact;
        }
    }
    *out = r;
    return EFC_OK;
}

/* ---- the driver ------------------------------------------------------------------------ */

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

enum efc_status efc_calib_run(const struct efc_model *m, const struct efc_dataset *d,
                              const struct efc_calib_opts *o, struct efc_calib_result **out)
{
    struct efc_calib_opts def;
    struct efc_calib_stats *s = NULL;
    struct efc_calib_result *r = NULL;
    int32_t *idx = NULL, n_sel;
    enum efc_status st;

    *out = NULL;
    if (!o) {
        efc_calib_opts_default(&def);
        o = &def;
    }
    st = efc_calib_opts_check(o);
    if (st)
        return st;
    if (!d || d->n < 1 || efc_dataset_sample_size(d) == 0)
        return efc_errf(EFC_EINVAL, "calib: the calibration data set %s is empty",
                        d ? d->source : "(null)");

    /* Selection: all samples, or the first `samples` of a seeded shuffle, sorted. */
    idx = efc_malloc((size_t)d->n * sizeof(*idx));
    if (!idx)
        return efc_errf(EFC_ENOMEM, "calib: %d sample indices", d->n);
    for (int32_t i = 0; i < d->n; i++)
        idx[i] = i;
    n_sel = o->samples < d->n ? o->samples : d->n;
    if (n_sel < d->n) {
        struct efc_rng rng;
        efc_rng_init(&rng, o->seed);
        efc_rng_shuffle(&rng, idx, d->n);
        qsort(idx, (size_t)n_sel, sizeof(*idx), cmp_i32);
    }

    st = efc_calib_stats_new(m, &s);
    if (!st)
        st = efc_calib_stats_collect(s, m, d, idx, n_sel, o->batch);
    if (!st)
        st = efc_calib_stats_hist_begin(s, o->n_bins, NULL);
    if (!st)
        st = efc_calib_stats_collect(s, m, d, idx, n_sel, o->batch);
    if (!st)
        st = efc_calib_result_from_stats(s, o, &r);
    if (st)
        goto out;

    struct efc_sha256 h;
    uint8_t dig[EFC_SHA256_BYTES];
    const size_t sample_bytes = efc_dataset_sample_size(d) * efc_dtype_size(d->dtype);
    efc_sha256_init(&h);
    for (int32_t i = 0; i < n_sel; i++)
        efc_sha256_update(&h, (const uint8_t *)d->data + (size_t)idx[i] * sample_bytes,
                          sample_bytes);
    efc_sha256_final(&h, dig);
    efc_sha256_hex(dig, r->data_digest);
    r->samples = n_sel;
    r->data_n = d->n;
    *out = r;
out:
    efc_calib_stats_free(s);
    efc_free(idx);
    return st;
}
