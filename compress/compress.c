/* compress.c — the policy driver for training-side steps (compress.h). */
#include "compress/compress.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/efc_log.h"
#include "common/efc_parse.h"
#include "common/efc_time.h"
#include "compress/distill.h"
#include "compress/filters.h"
#include "compress/lowrank.h"
#include "compress/prune.h"
#include "compress/qat.h"
#include "compress/share.h"
#include "compress/train.h"
#include "model/arch.h"
#include "model/exec.h"

#define MOD "compress"

int efc_compress_is_device_step(const char *method)
{
    return !strcmp(method, "int8") || !strcmp(method, "fp32");
}

/* Step k as text, for error details and reports. */
static void step_text(const struct efc_policy_step *st, char *out, size_t len)
{
    struct efc_policy one = {.n_steps = 1};
    one.steps[0] = *st;
    if (efc_policy_format(&one, out, len) != EFC_OK)
        snprintf(out, len, "%s", st->method);
}

/* Keys a method accepts. */
static int key_known(const char *method, const char *key)
{
    static const char *const prune_keys[] = {"sparsity", "finetune", "schedule", "min_density",
                                             NULL};
    static const char *const nm_keys[] = {"n", "m", "finetune", NULL};
    static const char *const distill_keys[] = {"teacher", "student", "t", "alpha", "epochs",
                                               NULL};
    static const char *const lowrank_keys[] = {"rank", "energy", "finetune", NULL};
    static const char *const qat_keys[] = {"epochs", "weights", NULL};
    static const char *const filters_keys[] = {"ratio", "finetune", "by", NULL};
    static const char *const share_keys[] = {"bits", NULL};
    const char *const *k = !strcmp(method, "prune")     ? prune_keys
                           : !strcmp(method, "nm")      ? nm_keys
                           : !strcmp(method, "distill") ? distill_keys
                           : !strcmp(method, "lowrank") ? lowrank_keys
                           : !strcmp(method, "qat")     ? qat_keys
                           : !strcmp(method, "filters") ? filters_keys
                           : !strcmp(method, "share")   ? share_keys
                                                        : NULL;
    for (; k && *k; k++)
        if (!strcmp(*k, key))
            return 1;
    return 0;
}

/* Value of key as a number in [lo, hi] (default def when absent). */
static enum efc_status num(const struct efc_policy_step *st, int k, const char *key, double lo,
                           double hi, int hi_open, double def, double *out)
{
    const char *v = efc_policy_get(st, key);
    char txt[EFC_POLICY_STR_MAX];
    *out = def;
    if (!v)
        return EFC_OK;
    step_text(st, txt, sizeof(txt));
    if (efc_parse_f64(v, lo, hi, key, out) != EFC_OK || (hi_open && *out >= hi))
        return efc_errf(EFC_EINVAL, "policy step %d '%s': %s=%s is not in [%g, %g%s", k + 1, txt,
                        key, v, lo, hi, hi_open ? ")" : "]");
    return EFC_OK;
}

static enum efc_status integer(const struct efc_policy_step *st, int k, const char *key,
                               int64_t lo, int64_t hi, int64_t def, int64_t *out)
{
    const char *v = efc_policy_get(st, key);
    char txt[EFC_POLICY_STR_MAX];
    *out = def;
    if (!v)
        return EFC_OK;
    step_text(st, txt, sizeof(txt));
    if (efc_parse_i64(v, lo, hi, key, out) != EFC_OK)
        return efc_errf(EFC_EINVAL, "policy step %d '%s': %s=%s is not an integer in [%lld, "
                                    "%lld]", k + 1, txt, key, v, (long long)lo, (long long)hi);
    return EFC_OK;
}

struct prune_args {
    double sparsity, min_density;
    int64_t finetune, n, m;
    int gradual;
    /* distill */
    double t, alpha, energy;
    int64_t epochs, rank;
    int per_tensor;
    double ratio;
    int by_bn;
    const char *teacher, *student;
};

/* Parse and range-check one step's parameters. */
static enum efc_status step_args(const struct efc_policy_step *st, int k, struct prune_args *a)
{
    char txt[EFC_POLICY_STR_MAX];
    enum efc_status e;
    step_text(st, txt, sizeof(txt));
    memset(a, 0, sizeof(*a));
    if (strcmp(st->method, "prune") && strcmp(st->method, "nm") &&
        strcmp(st->method, "distill") && strcmp(st->method, "lowrank") &&
        strcmp(st->method, "qat") && strcmp(st->method, "filters") &&
        strcmp(st->method, "share"))
        return efc_errf(EFC_EINVAL, "policy step %d '%s': unknown method '%s' (prune, nm, "
                                    "filters, distill, lowrank, qat, share, int8, fp32)",
                        k + 1, txt, st->method);
    for (int32_t i = 0; i < st->n_params; i++)
        if (!key_known(st->method, st->params[i].key))
            return efc_errf(EFC_EINVAL, "policy step %d '%s': unknown parameter '%s' for %s",
                            k + 1, txt, st->params[i].key, st->method);
    if (!strcmp(st->method, "prune")) {
        if (!efc_policy_get(st, "sparsity"))
            return efc_errf(EFC_EINVAL, "policy step %d '%s': prune needs sparsity=S", k + 1,
                            txt);
        if ((e = num(st, k, "sparsity", 0.0, 1.0, 1, 0.0, &a->sparsity)) ||
            (e = num(st, k, "min_density", 0.0, 1.0, 0, 0.02, &a->min_density)) ||
            (e = integer(st, k, "finetune", 0, 1000, 0, &a->finetune)))
            return e;
        const char *sch = efc_policy_get(st, "schedule");
        if (sch && strcmp(sch, "gradual") && strcmp(sch, "oneshot"))
            return efc_errf(EFC_EINVAL, "policy step %d '%s': schedule=%s is not gradual or "
                                        "oneshot", k + 1, txt, sch);
        a->gradual = a->finetune > 0 && (!sch || !strcmp(sch, "gradual"));
        return EFC_OK;
    }
    if (!strcmp(st->method, "nm")) {
        if ((e = integer(st, k, "n", 1, 15, 2, &a->n)) ||
            (e = integer(st, k, "m", 2, 16, 4, &a->m)) ||
            (e = integer(st, k, "finetune", 0, 1000, 0, &a->finetune)))
            return e;
        if (a->n >= a->m)
            return efc_errf(EFC_EINVAL, "policy step %d '%s': n=%lld must be below m=%lld",
                            k + 1, txt, (long long)a->n, (long long)a->m);
        return EFC_OK;
    }
    if (!strcmp(st->method, "distill")) {
        struct efc_model *probe = NULL;
        a->teacher = efc_policy_get(st, "teacher");
        a->student = efc_policy_get(st, "student");
        if (!a->student)
            return efc_errf(EFC_EINVAL, "policy step %d '%s': distill needs student=ARCH", k + 1,
                            txt);
        if (efc_arch_build(a->student, 1, &probe) != EFC_OK)
            return efc_errf(EFC_EINVAL, "policy step %d '%s': student=%s is not a built-in "
                                        "architecture (mlp, lenet5, cnn-bn, dwsep)",
                            k + 1, txt, a->student);
        efc_model_free(probe);
        if ((e = num(st, k, "t", 0.01, 100.0, 0, 4.0, &a->t)) ||
            (e = num(st, k, "alpha", 0.0, 1.0, 0, 0.7, &a->alpha)) ||
            (e = integer(st, k, "epochs", 1, 1000, 10, &a->epochs)))
            return e;
        return EFC_OK;
    }
    if (!strcmp(st->method, "lowrank")) {
        if (efc_policy_get(st, "rank") && efc_policy_get(st, "energy"))
            return efc_errf(EFC_EINVAL, "policy step %d '%s': rank= and energy= exclude each "
                                        "other", k + 1, txt);
        if ((e = integer(st, k, "rank", 1, 1 << 20, 0, &a->rank)) ||
            (e = num(st, k, "energy", 1e-6, 1.0, 0, 0.9, &a->energy)) ||
            (e = integer(st, k, "finetune", 0, 1000, 0, &a->finetune)))
            return e;
        return EFC_OK;
    }
    if (!strcmp(st->method, "share"))
        return integer(st, k, "bits", 1, 8, 5, &a->n);
    if (!strcmp(st->method, "filters")) {
        const char *by = efc_policy_get(st, "by");
        if (!efc_policy_get(st, "ratio"))
            return efc_errf(EFC_EINVAL, "policy step %d '%s': filters needs ratio=R", k + 1, txt);
        if (by && strcmp(by, "l1") && strcmp(by, "bn"))
            return efc_errf(EFC_EINVAL, "policy step %d '%s': by=%s is not l1 or bn", k + 1, txt,
                            by);
        a->by_bn = by && !strcmp(by, "bn");
        if ((e = num(st, k, "ratio", 0.0, 1.0, 1, 0.0, &a->ratio)) ||
            (e = integer(st, k, "finetune", 0, 1000, 0, &a->finetune)))
            return e;
        return EFC_OK;
    }
    if (!strcmp(st->method, "qat")) {
        const char *w = efc_policy_get(st, "weights");
        if (w && strcmp(w, "channel") && strcmp(w, "tensor"))
            return efc_errf(EFC_EINVAL, "policy step %d '%s': weights=%s is not channel or "
                                        "tensor", k + 1, txt, w);
        a->per_tensor = w && !strcmp(w, "tensor");
        return integer(st, k, "epochs", 1, 1000, 2, &a->epochs);
    }
    return efc_errf(EFC_EINTERNAL, "policy step %d '%s': no runner", k + 1, txt);
}

enum efc_status efc_compress_check(const struct efc_model *m, const struct efc_policy *p)
{
    int device = -1;
    for (int32_t k = 0; k < p->n_steps; k++) {
        const struct efc_policy_step *st = &p->steps[k];
        char txt[EFC_POLICY_STR_MAX];
        struct prune_args a;
        step_text(st, txt, sizeof(txt));
        if (efc_compress_is_device_step(st->method)) {
            if (device < 0)
                device = k;
            continue;
        }
        if (device >= 0)
            return efc_errf(EFC_EINVAL, "policy step %d '%s': a training step after the device "
                                        "step %d (%s); put int8 last", k + 1, txt, device + 1,
                            p->steps[device].method);
        enum efc_status e = step_args(st, k, &a);
        if (e != EFC_OK)
            return e;
        if (!strcmp(st->method, "distill"))
            continue; /* replaces the model: what follows applies to the student */
        if (!strcmp(st->method, "share")) {
            const char *next = k + 1 < p->n_steps ? p->steps[k + 1].method : "";
            const char *w8 = k + 1 < p->n_steps ? efc_policy_get(&p->steps[k + 1], "weights")
                                                : NULL;
            if (!strcmp(next, "int8") && !(w8 && !strcmp(w8, "tensor")))
                return efc_errf(EFC_EINVAL, "policy step %d '%s': share before int8 needs the int8 "
                                            "step's weights=tensor (per-channel scales would "
                                            "spread the shared values over many codes)",
                                k + 1, txt);
            continue;
        }
        if (!strcmp(st->method, "filters")) {
            int32_t convs = 0;
            for (int32_t i = 0; i < m->n_nodes; i++)
                convs += m->nodes[i].op == EFC_OP_CONV2D && m->nodes[i].a.groups == 1;
            if (!convs)
                return efc_errf(EFC_EINVAL, "policy step %d '%s': model %s has no convolution to "
                                            "prune filters of", k + 1, txt, m->name);
            continue;
        }
        if (!strcmp(st->method, "qat")) {
            const char *next = k + 1 < p->n_steps ? p->steps[k + 1].method : "";
            if (strcmp(next, "int8"))
                return efc_errf(EFC_EINVAL, "policy step %d '%s': qat must be followed by an int8 "
                                            "step", k + 1, txt);
            const char *w = efc_policy_get(st, "weights"), *w8 = efc_policy_get(&p->steps[k + 1],
                                                                              "weights");
            if (strcmp(w ? w : "channel", w8 ? w8 : "channel"))
                return efc_errf(EFC_EINVAL, "policy step %d '%s': weights=%s differs from the int8 "
                                            "step's weights=%s", k + 1, txt, w ? w : "channel",
                                w8 ? w8 : "channel");
        }
        if (!strcmp(st->method, "lowrank")) {
            int32_t kmax = efc_lowrank_max_rank(m);
            if (kmax == 0)
                return efc_errf(EFC_EINVAL, "policy step %d '%s': model %s has no f32 Dense "
                                            "layer", k + 1, txt, m->name);
            if (a.rank > kmax)
                return efc_errf(EFC_EINVAL, "policy step %d '%s': rank=%lld is above every Dense "
                                            "layer's rank (the largest is %d)", k + 1, txt,
                                (long long)a.rank, kmax);
            continue;
        }
        struct efc_prune pr;
        if (efc_prune_init(m, &pr) != EFC_OK)
            return efc_errf(EFC_EINVAL, "policy step %d '%s': model %s has no f32 Dense or Conv2d "
                                        "weights to prune", k + 1, txt, m->name);
        efc_prune_fini(&pr);
    }
    return EFC_OK;
}

static float val_accuracy(const struct efc_model *m, const struct efc_dataset *val)
{
    struct efc_eval_result r;
    if (!val || efc_eval(m, val, 256, &r) != EFC_OK)
        return -1.0f;
    float acc = (float)r.accuracy;
    efc_eval_result_fini(&r);
    return acc;
}

static enum efc_status finetune(struct efc_model *m, const struct efc_compress_opts *o,
                                int64_t epochs, struct efc_prune_schedule *g)
{
    struct efc_train_opts to;
    struct efc_train_hooks h;
    struct efc_train_report tr;
    if (!o->train)
        return efc_errf(EFC_EINVAL, "compress: fine-tuning needs training data");
    efc_train_opts_default(&to);
    to.epochs = (int32_t)epochs;
    to.batch = o->batch > 0 ? o->batch : 128;
    to.lr = o->lr > 0.0f ? o->lr : 1e-3f;
    to.seed = o->seed ? o->seed : 1;
    to.progress = o->progress;
    if (g) {
        efc_prune_hooks(g, &h);
        to.hooks = &h;
    }
    enum efc_status st = efc_train(m, o->train, NULL, &to, &tr);
    if (g && st == EFC_OK && g->err != EFC_OK)
        st = g->err;
    if (g)
        efc_prune_apply(m, g->p); /* the last step's update re-zeroed: the mask holds */
    return st;
}

static enum efc_status run_prune(struct efc_model *m, const struct efc_policy_step *st, int k,
                                 const struct efc_compress_opts *o,
                                 struct efc_compress_step_report *r)
{
    struct prune_args a;
    struct efc_prune p;
    struct efc_prune_schedule g;
    enum efc_status e = step_args(st, k, &a);
    if (e != EFC_OK)
        return e;
    if ((e = efc_model_densify(m)) != EFC_OK || (e = efc_prune_init(m, &p)) != EFC_OK)
        return e;
    if (!strcmp(st->method, "nm")) {
        e = efc_prune_nm(m, &p, (int32_t)a.n, (int32_t)a.m);
        for (int32_t i = 0; i < p.n; i++)
            r->nm_skipped += p.layers[i].nm_skip;
        if (e == EFC_OK && a.finetune > 0) {
            efc_prune_schedule_init(&g, &p, 0, 0.0, 0.0, 1);
            e = finetune(m, o, a.finetune, &g);
        }
    } else if (a.gradual) {
        int32_t batch = o->batch > 0 ? o->batch : 128;
        int64_t steps = a.finetune * ((o->train->n + batch - 1) / batch);
        efc_prune_schedule_init(&g, &p, 1, a.sparsity, a.min_density, steps);
        e = finetune(m, o, a.finetune, &g);
        /* the ramp ends before the last steps; make sure the target is met exactly */
        if (e == EFC_OK)
            e = efc_prune_magnitude(m, &p, a.sparsity, a.min_density);
    } else {
        e = efc_prune_magnitude(m, &p, a.sparsity, a.min_density);
        if (e == EFC_OK && a.finetune > 0) {
            efc_prune_schedule_init(&g, &p, 0, a.sparsity, a.min_density, 1);
            e = finetune(m, o, a.finetune, &g);
        }
    }
    efc_prune_fini(&p);
    return e;
}

static enum efc_status run_distill(struct efc_model **m, const struct efc_policy_step *st,
                                   int k, const struct efc_compress_opts *o)
{
    struct prune_args a;
    struct efc_model *teacher = NULL, *student = NULL;
    enum efc_status e = step_args(st, k, &a);
    float tacc = -1.0f;
    if (e != EFC_OK)
        return e;
    if (a.teacher && (e = efc_distill_load_teacher(a.teacher, o->base_dir, &teacher)) != EFC_OK)
        return e;
    struct efc_distill_opts d = {.train = o->train,
                                 .student = a.student,
                                 .t = (float)a.t,
                                 .alpha = (float)a.alpha,
                                 .epochs = (int32_t)a.epochs,
                                 .batch = o->batch,
                                 .seed = o->seed,
                                 .progress = o->progress};
    e = efc_distill(teacher ? teacher : *m, &d, &student, &tacc);
    if (e == EFC_OK) {
        efc_log(EFC_LOG_INFO, MOD, "distill: teacher %s (train accuracy %.4f) -> student %s",
                teacher ? a.teacher : (*m)->name, tacc, a.student);
        efc_model_free(*m);
        *m = student;
    }
    efc_model_free(teacher);
    return e;
}

enum efc_status efc_compress_run(struct efc_model **mp, const struct efc_policy *p,
                                 const struct efc_compress_opts *o,
                                 struct efc_compress_report *rep)
{
    struct efc_compress_opts defaults = {.seed = 1};
    enum efc_status e;
    if (!o)
        o = &defaults;
    memset(rep, 0, sizeof(*rep));
    rep->device_step = -1;
    if ((e = efc_compress_check(*mp, p)) != EFC_OK)
        return e;
    for (int32_t k = 0; k < p->n_steps; k++) {
        const struct efc_policy_step *st = &p->steps[k];
        if (efc_compress_is_device_step(st->method)) {
            rep->device_step = k;
            break;
        }
        struct efc_compress_step_report *r = &rep->steps[rep->n_steps++];
        step_text(st, r->step, sizeof(r->step));
        double t0 = efc_time_s();
        efc_log(EFC_LOG_INFO, MOD, "step %d: %s", k + 1, r->step);
        if (!strcmp(st->method, "distill")) {
            e = run_distill(mp, st, k, o);
        } else if (!strcmp(st->method, "share")) {
            struct prune_args a;
            int32_t layers = 0;
            if ((e = step_args(st, k, &a)) == EFC_OK)
                e = efc_share(*mp, (int32_t)a.n, &layers);
        } else if (!strcmp(st->method, "filters")) {
            struct prune_args a;
            struct efc_filters_report fr;
            if ((e = step_args(st, k, &a)) == EFC_OK &&
                (e = efc_filters(*mp, a.ratio, a.by_bn ? EFC_FILTERS_BY_BN : EFC_FILTERS_BY_L1,
                                 &fr)) == EFC_OK) {
                r->macs_before = fr.macs_before;
                r->macs_after = fr.macs_after;
                r->filters_pruned = fr.pruned;
                if (a.finetune > 0)
                    e = finetune(*mp, o, a.finetune, NULL);
            }
        } else if (!strcmp(st->method, "qat")) {
            struct prune_args a;
            struct efc_train_opts to;
            if ((e = step_args(st, k, &a)) == EFC_OK) {
                efc_train_opts_default(&to);
                to.epochs = (int32_t)a.epochs;
                to.batch = o->batch > 0 ? o->batch : 128;
                to.lr = o->lr > 0.0f ? o->lr : 1e-3f;
                to.seed = o->seed ? o->seed : 1;
                to.progress = o->progress;
                e = o->train ? efc_qat(*mp, o->train, &to, a.per_tensor)
                             : efc_errf(EFC_EINVAL, "qat: needs training data");
            }
        } else if (!strcmp(st->method, "lowrank")) {
            struct prune_args a;
            struct efc_lowrank_report lr;
            if ((e = step_args(st, k, &a)) == EFC_OK &&
                (e = efc_lowrank(*mp, (int32_t)a.rank, a.energy, &lr)) == EFC_OK) {
                r->lowrank_factorised = lr.factorised;
                r->params_before = lr.params_before;
                r->params_after = lr.params_after;
                if (a.finetune > 0)
                    e = finetune(*mp, o, a.finetune, NULL);
            }
        } else
            e = run_prune(*mp, st, k, o, r);
        if (e != EFC_OK)
            return e;
        r->seconds = efc_time_s() - t0;
        r->sparsity = efc_prune_model_sparsity(*mp);
        r->val_accuracy = val_accuracy(*mp, o->val);
        if (r->val_accuracy >= 0.0f)
            efc_log(EFC_LOG_INFO, MOD, "step %d: %s done in %.1f s: sparsity %.4f, accuracy "
                    "%.4f", k + 1, r->step, r->seconds, r->sparsity, r->val_accuracy);
        else
            efc_log(EFC_LOG_INFO, MOD, "step %d: %s done in %.1f s: sparsity %.4f", k + 1,
                    r->step, r->seconds, r->sparsity);
    }
    return EFC_OK;
}
