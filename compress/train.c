/* train.c — the training loop: seeded shuffling, mini-batches, normalisation, forward,
 * softmax cross-entropy (+ hook loss), backward, optimiser step, schedule, validation and
 * progress. Everything is allocated before the first step (grad.c owns the graph).
 */
#include "compress/train.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"
#include "common/efc_rng.h"
#include "common/efc_time.h"
#include "compress/grad.h"
#include "kernels/blas.h"

void efc_train_opts_default(struct efc_train_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->epochs = 10;
    o->batch = 128;
    o->optim = EFC_OPTIM_ADAM;
    o->lr = 1e-3f;
    o->momentum = 0.9f;
    o->weight_decay = 0.0f;
    o->sched = EFC_SCHED_COSINE;
    o->step_epochs = 0; /* step schedule: 0 = a third of the epochs */
    o->step_gamma = 0.1f;
    o->seed = 1;
    o->progress = 1;
    o->hooks = NULL;
}

/* Accuracy of the graph in eval mode (BatchNorm running statistics) on d. */
static float eval_accuracy(struct efc_tg *g, const struct efc_model *m, const struct efc_dataset *d,
                           int32_t max_batch, int32_t *labels)
{
    int64_t hits = 0;
    float *in = efc_tg_input(g);
    for (int32_t i0 = 0; i0 < d->n; i0 += max_batch) {
        int32_t b = d->n - i0 < max_batch ? d->n - i0 : max_batch;
        efc_dataset_get_f32(d, i0, b, in);
        efc_model_normalize(m, in, in, b);
        for (int32_t i = 0; i < b; i++)
            labels[i] = d->labels[i0 + i];
        efc_tg_forward(g, b, false);
        hits += efc_tg_count_correct(g, b, labels);
    }
    return d->n > 0 ? (float)((double)hits / d->n) : -1.0f;
}

static enum efc_status check_data(const struct efc_dataset *d, const char *what, int32_t insz,
                                  int32_t n_classes)
{
    if (!d->labels)
        return efc_errf(EFC_EINVAL, "train: %s set %s has no labels", what, d->source);
    if ((int64_t)efc_dataset_sample_size(d) != insz)
        return efc_errf(EFC_EINVAL, "train: %s set %s has %zu values per sample, model wants %d",
                        what, d->source, efc_dataset_sample_size(d), insz);
    for (int32_t i = 0; i < d->n; i++)
        if (d->labels[i] >= n_classes)
            return efc_errf(EFC_EINVAL, "train: %s set %s: label %u of sample %d >= %d classes",
                            what, d->source, d->labels[i], i, n_classes);
    return EFC_OK;
}

/* OpenBLAS splits gemm work by rows / columns, never along K, so results do not depend on
 * the thread count; use every online CPU unless the user chose a count. */
static void setup_threads(void)
{
    if (getenv("OPENBLAS_NUM_THREADS") || getenv("OMP_NUM_THREADS") ||
        efc_blas_threads_requested() > 0)
        return;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n > 1 && efc_blas_threads() < n)
        efc_blas_set_threads((int)n);
}

enum efc_status efc_train(struct efc_model *m, const struct efc_dataset *train,
                          const struct efc_dataset *val, const struct efc_train_opts *o,
                          struct efc_train_report *rep)
{
    struct efc_train_opts opt;
    struct efc_tg *g = NULL;
    struct efc_optim_state *os = NULL;
    int32_t *idx = NULL, *labels = NULL;
    enum efc_status st;
    double t0 = efc_time_s();

    if (!m || !train)
        return efc_errf(EFC_EINVAL, "train: model and training set are required");
    if (o)
        opt = *o;
    else
        efc_train_opts_default(&opt);
    if (opt.epochs < 1 || opt.batch < 1)
        return efc_errf(EFC_EINVAL, "train: epochs (%d) and batch (%d) must be >= 1",
                        opt.epochs, opt.batch);
    if (opt.optim != EFC_OPTIM_ADAM && opt.optim != EFC_OPTIM_SGD)
        return efc_errf(EFC_EINVAL, "train: unknown optimiser %d", (int)opt.optim);
    if (opt.sched != EFC_SCHED_COSINE && opt.sched != EFC_SCHED_STEP &&
        opt.sched != EFC_SCHED_CONST)
        return efc_errf(EFC_EINVAL, "train: unknown schedule %d", (int)opt.sched);
    if (train->n < 1)
        return efc_errf(EFC_EINVAL, "train: training set %s is empty", train->source);
    /* lr <= 0 / weight_decay < 0 mean "the optimiser's default" */
    if (!(opt.lr > 0.0f))
        opt.lr = opt.optim == EFC_OPTIM_SGD ? 0.05f : 1e-3f;
    if (opt.weight_decay < 0.0f)
        opt.weight_decay = opt.optim == EFC_OPTIM_SGD ? 5e-4f : 0.0f;
    if (opt.step_epochs <= 0)
        opt.step_epochs = opt.epochs / 3 > 0 ? opt.epochs / 3 : 1;
    if (!(opt.step_gamma > 0.0f))
        opt.step_gamma = 0.1f;

    int32_t max_batch = opt.batch < train->n ? opt.batch : train->n;
    st = efc_tg_new(m, max_batch, false, &g); /* checks, then densifies m in place */
    if (st != EFC_OK)
        return st;
    int32_t insz = efc_tg_input_size(g), n_classes = efc_tg_n_classes(g);
    st = check_data(train, "training", insz, n_classes);
    if (st == EFC_OK && val)
        st = check_data(val, "validation", insz, n_classes);
    if (st != EFC_OK)
        goto out;
    st = efc_optim_new(g, (int)opt.optim, opt.momentum, opt.weight_decay, &os);
    if (st != EFC_OK)
        goto out;
    idx = efc_malloc((size_t)train->n * sizeof(*idx));
    labels = efc_malloc((size_t)max_batch * sizeof(*labels));
    if (!idx || !labels) {
        st = EFC_ENOMEM;
        goto out;
    }
    for (int32_t i = 0; i < train->n; i++)
        idx[i] = i;
    setup_threads();

    struct efc_rng rng;
    efc_rng_init(&rng, opt.seed);
    const struct efc_train_hooks *hk = opt.hooks;
    int64_t per_epoch = (train->n + opt.batch - 1) / opt.batch;
    int64_t total = per_epoch * opt.epochs, step = 0;
    struct efc_progress prog;
    efc_progress_init(&prog, opt.progress, opt.epochs, train->n);
    double train_s = 0.0, loss_sum = 0.0;
    int64_t hits = 0, seen = 0;
    float val_acc = -1.0f;
    float *in = efc_tg_input(g);
    int32_t logits = efc_tg_logits_tensor(g);
    for (int32_t ep = 0; ep < opt.epochs; ep++) {
        double te = efc_time_s();
        efc_rng_shuffle(&rng, idx, train->n);
        loss_sum = 0.0;
        hits = 0;
        seen = 0;
        efc_progress_update(&prog, ep, 0, 0.0f, 0.0f);
        for (int32_t i0 = 0; i0 < train->n; i0 += max_batch) {
            int32_t b = train->n - i0 < max_batch ? train->n - i0 : max_batch;
            const int32_t *bi = idx + i0;
            efc_dataset_gather_f32(train, bi, b, in);
            efc_model_normalize(m, in, in, b);
            for (int32_t i = 0; i < b; i++)
                labels[i] = train->labels[bi[i]];
            if (hk && hk->before_forward)
                hk->before_forward(hk->ctx, m, step);
            efc_tg_forward(g, b, true);
            int32_t correct = 0;
            float loss = efc_tg_loss(g, b, labels, &correct);
            if (hk && hk->extra_loss)
                loss += hk->extra_loss(hk->ctx, efc_tg_value(g, logits), bi, b, n_classes,
                                       efc_tg_grad(g, logits));
            efc_tg_backward(g, b, logits);
            float lr = efc_sched_lr((int)opt.sched, opt.lr, step, total, per_epoch,
                                    opt.step_epochs, opt.step_gamma);
            efc_optim_step(os, lr);
            if (hk && hk->after_step)
                hk->after_step(hk->ctx, m, step);
            step++;
            loss_sum += (double)loss * b;
            hits += correct;
            seen += b;
            efc_progress_update(&prog, ep, seen, (float)(loss_sum / seen),
                                (float)hits / (float)seen);
        }
        double ep_s = efc_time_s() - te;
        train_s += ep_s;
        if (val && val->n > 0 && (opt.progress || ep == opt.epochs - 1))
            val_acc = eval_accuracy(g, m, val, max_batch, labels);
        efc_progress_epoch_end(&prog, ep, (float)(loss_sum / seen), (float)hits / (float)seen,
                               val_acc, ep_s > 0.0 ? (double)seen / ep_s : 0.0);
    }
    if (rep) {
        rep->epochs = opt.epochs;
        rep->seconds = efc_time_s() - t0;
        rep->images_per_s = train_s > 0.0 ? (double)train->n * opt.epochs / train_s : 0.0;
        rep->final_loss = (float)(loss_sum / (seen ? seen : 1));
        rep->train_accuracy = seen ? (float)hits / (float)seen : 0.0f;
        rep->val_accuracy = val_acc;
    }
    efc_log(EFC_LOG_DEBUG, "train", "done epochs=%d steps=%lld seconds=%.1f", opt.epochs,
            (long long)step, efc_time_s() - t0);
    st = EFC_OK;
out:
    efc_free(idx);
    efc_free(labels);
    efc_optim_free(os);
    efc_tg_free(g);
    return st;
}
