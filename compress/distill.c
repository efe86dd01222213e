/* distill.c — knowledge distillation (compress.h, docs/policies.md "distill").
 *
 * The teacher's logits over the whole training set are computed once (FP32 executor); the
 * student, a built-in architecture built fresh from the seed, is trained with the trainer's
 * extra_loss hook:
 *   loss = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T)),
 * whose gradient on the student logits is (1 - alpha) * dCE + alpha * T * (p_s - p_t) per
 * sample (Hinton et al. 2015; the T^2 keeps the soft term's gradient scale independent of T).
 * A teacher whose last op is Softmax gives probabilities; their logarithms serve as logits
 * (softmax(log p / T) is the same tempered distribution).
 */
#include "compress/distill.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"
#include "compress/train.h"
#include "model/arch.h"
#include "model/efm.h"
#include "model/exec.h"

#define TEACHER_BATCH 256

struct kd {
    const float *tlogits; /* n x n_classes, by data-set index */
    int32_t n_classes;
    float t, alpha;
    float *ps, *pt; /* n_classes each */
};

/* p = softmax(x / t); returns log-sum-exp of x / t. */
static double tempered(const float *x, int32_t c, float t, float *p)
{
    float mx = x[0] / t;
    for (int32_t j = 1; j < c; j++)
        mx = fmaxf(mx, x[j] / t);
    double z = 0.0;
    for (int32_t j = 0; j < c; j++) {
        p[j] = expf(x[j] / t - mx);
        z += p[j];
    }
    for (int32_t j = 0; j < c; j++)
        p[j] = (float)(p[j] / z);
    return mx + log(z);
}

float efc_distill_soft_loss(const float *tlogits, const int32_t *idx, const float *logits,
                            int32_t batch, int32_t n_classes, float t, float alpha, float *ps,
                            float *pt, float *dlogits)
{
    double loss = 0.0;
    for (int32_t i = 0; i < batch; i++) {
        const float *s = logits + (size_t)i * n_classes;
        const float *tl = tlogits + (size_t)idx[i] * n_classes;
        double ls = tempered(s, n_classes, t, ps);
        double lt = tempered(tl, n_classes, t, pt);
        for (int32_t j = 0; j < n_classes; j++) {
            if (pt[j] > 0.0f) /* KL = sum pt (log pt - log ps) */
                loss += pt[j] * ((tl[j] / t - lt) - (s[j] / t - ls));
            float *d = &dlogits[(size_t)i * n_classes + j];
            *d = (1.0f - alpha) * *d + alpha * t * (ps[j] - pt[j]) / (float)batch;
        }
    }
    return (float)(alpha * t * t * loss / batch);
}

static float kd_loss(void *ctx, const float *logits, const int32_t *idx, int32_t batch,
                     int32_t n_classes, float *dlogits)
{
    struct kd *k = ctx;
    /* the trainer reports CE + this: the soft term as it weighs in the total */
    return efc_distill_soft_loss(k->tlogits, idx, logits, batch, n_classes, k->t, k->alpha,
                                 k->ps, k->pt, dlogits);
}

/* The teacher's logits (or log-probabilities) for every sample of d. */
static enum efc_status teacher_logits(const struct efc_model *teacher,
                                      const struct efc_dataset *d, float **out, int32_t *n_cls)
{
    struct efc_exec *e = NULL;
    struct efc_exec_opts eo = {.max_batch = TEACHER_BATCH};
    float *raw = NULL, *lg = NULL;
    enum efc_status st = efc_exec_new(teacher, &eo, &e);
    if (st != EFC_OK)
        return st;
    int32_t insz = efc_exec_input_size(e), c = efc_exec_output_size(e);
    if ((size_t)insz != efc_dataset_sample_size(d)) {
        st = efc_errf(EFC_EINVAL, "distill: teacher %s takes %d values per sample, %s has %zu",
                      teacher->name, insz, d->source, efc_dataset_sample_size(d));
        goto out;
    }
    const struct efc_node *last = teacher->n_nodes ? &teacher->nodes[teacher->n_nodes - 1] : NULL;
    int probs = last && last->op == EFC_OP_SOFTMAX && last->output == teacher->output;
    raw = efc_malloc((size_t)TEACHER_BATCH * insz * sizeof(float));
    lg = efc_malloc((size_t)d->n * c * sizeof(float));
    if (!raw || !lg) {
        st = efc_errf(EFC_ENOMEM, "distill: teacher logits for %d samples", d->n);
        goto out;
    }
    for (int32_t i0 = 0; i0 < d->n && st == EFC_OK; i0 += TEACHER_BATCH) {
        int32_t b = d->n - i0 < TEACHER_BATCH ? d->n - i0 : TEACHER_BATCH;
        const float *y;
        efc_dataset_get_f32(d, i0, b, raw);
        if ((st = efc_exec_run(e, raw, b, &y)) != EFC_OK)
            break;
        for (size_t j = 0; j < (size_t)b * c; j++)
            lg[(size_t)i0 * c + j] = probs ? logf(fmaxf(y[j], 1e-30f)) : y[j];
    }
    if (st == EFC_OK) {
        *out = lg;
        *n_cls = c;
        lg = NULL;
    }
out:
    efc_free(raw);
    efc_free(lg);
    efc_exec_free(e);
    return st;
}

enum efc_status efc_distill(const struct efc_model *teacher, const struct efc_distill_opts *o,
                            struct efc_model **student_out, float *teacher_train_acc)
{
    struct efc_model *s = NULL;
    struct kd k = {.t = o->t, .alpha = o->alpha};
    float *tl = NULL;
    enum efc_status st;

    *student_out = NULL;
    if (!o->train || !o->train->labels)
        return efc_errf(EFC_EINVAL, "distill: needs labelled training data");
    if ((st = efc_arch_build(o->student, o->seed ? o->seed : 1, &s)) != EFC_OK)
        return st;
    if ((st = teacher_logits(teacher, o->train, &tl, &k.n_classes)) != EFC_OK)
        goto out;
    if (teacher_train_acc) {
        int64_t hit = 0;
        for (int32_t i = 0; i < o->train->n; i++) {
            const float *row = tl + (size_t)i * k.n_classes;
            int32_t am = 0;
            for (int32_t j = 1; j < k.n_classes; j++)
                if (row[j] > row[am])
                    am = j;
            hit += am == o->train->labels[i];
        }
        *teacher_train_acc = (float)hit / (float)o->train->n;
    }
    k.tlogits = tl;
    k.ps = efc_malloc((size_t)k.n_classes * sizeof(float));
    k.pt = efc_malloc((size_t)k.n_classes * sizeof(float));
    if (!k.ps || !k.pt) {
        st = efc_errf(EFC_ENOMEM, "distill");
        goto out;
    }
    struct efc_train_hooks h = {.ctx = &k, .extra_loss = kd_loss};
    struct efc_train_opts to;
    struct efc_train_report rep;
    efc_train_opts_default(&to);
    to.epochs = o->epochs;
    if (o->lr > 0.0f)
        to.lr = o->lr;
    if (o->batch > 0)
        to.batch = o->batch;
    to.seed = o->seed ? o->seed : 1;
    to.progress = o->progress;
    to.hooks = &h;
    /* the trainer checks the student's class count against the labels; the teacher's must
     * match too */
    st = efc_train(s, o->train, NULL, &to, &rep);
    if (st == EFC_OK && k.n_classes != o->train->n_classes)
        st = efc_errf(EFC_EINVAL, "distill: teacher has %d outputs, %s has %d classes",
                      k.n_classes, o->train->source, o->train->n_classes);
    if (st == EFC_OK) {
        *student_out = s;
        s = NULL;
    }
out:
    efc_free(k.ps);
    efc_free(k.pt);
    efc_free(tl);
    efc_model_free(s);
    return st;
}

enum efc_status efc_distill_load_teacher(const char *path, const char *base_dir,
                                         struct efc_model **out)
{
    struct stat sb;
    char alt[4096];
    if (stat(path, &sb) != 0 && errno == ENOENT && path[0] != '/' && base_dir && base_dir[0]) {
        int w = snprintf(alt, sizeof(alt), "%s/%s", base_dir, path);
        if (w > 0 && (size_t)w < sizeof(alt) && stat(alt, &sb) == 0)
            path = alt;
    }
    return efc_efm_load(path, out);
}
