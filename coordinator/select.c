/* select.c — per-class selection: pooling, confidence intervals, SLA verdicts, the choice,
 * runner-up, Pareto flags and per-device exceptions. Formulas are in docs/coordinator.md. */
#include "coordinator/select.h"

#include "common/efc_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"

#define P50_TIE_REL_DEFAULT 0.01 /* 1 %: below run-to-run timing noise on the quickstart VM */

static double clamp01(double x)
{
    return x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x);
}

void efc_coord_ci_wilson(int64_t k, int64_t n, double z, struct efc_coord_ci *out)
{
    if (n <= 0) {
        out->est = 0.0;
        out->lo = 0.0;
        out->hi = 1.0;
        return;
    }
    double nn = (double)n;
    double p = (double)k / nn;
    double z2 = z * z;
    double denom = 1.0 + z2 / nn;
    double center = (p + z2 / (2.0 * nn)) / denom;
    double half = z / denom * sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn));
    out->est = p;
    out->lo = clamp01(center - half);
    out->hi = clamp01(center + half);
}

void efc_coord_ci_paired_newcombe(int64_t both, int64_t base_only, int64_t cand_only,
                                  int64_t neither, double z, struct efc_coord_ci *out)
{
    int64_t n = both + base_only + cand_only + neither;
    if (n <= 0) {
        out->est = 0.0;
        out->lo = -1.0;
        out->hi = 1.0;
        return;
    }
    double nn = (double)n;
    struct efc_coord_ci w1, w2;
    efc_coord_ci_wilson(both + base_only, n, z, &w1); /* p1: base correct */
    efc_coord_ci_wilson(both + cand_only, n, z, &w2); /* p2: candidate correct */
    double theta = (double)(base_only - cand_only) / nn;

    /* phi: correlation of the two margins; numerator continuity-corrected when positive
     * (Newcombe 1998, method 10); 0 when any margin is empty. */
    double a = (double)both, b = (double)base_only, c = (double)cand_only, d = (double)neither;
    double e = a + b, f = c + d, g = a + c, h = b + d;
    double phi = 0.0;
    if (e > 0 && f > 0 && g > 0 && h > 0) {
        double num = a * d - b * c;
        if (num > 0)
            num = fmax(num - nn / 2.0, 0.0);
        phi = num / sqrt(e * f * g * h);
    }
    double dl1 = w1.est - w1.lo, du1 = w1.hi - w1.est;
    double dl2 = w2.est - w2.lo, du2 = w2.hi - w2.est;
    double lo_sq = dl1 * dl1 - 2.0 * phi * dl1 * du2 + du2 * du2;
    double hi_sq = du1 * du1 - 2.0 * phi * du1 * dl2 + dl2 * dl2;
    out->est = theta;
    out->lo = fmax(-1.0, theta - sqrt(fmax(lo_sq, 0.0)));
    out->hi = fmin(1.0, theta + sqrt(fmax(hi_sq, 0.0)));
}

void efc_coord_ci_paired_wald(int64_t base_only, int64_t cand_only, int64_t n, double z,
                              struct efc_coord_ci *out)
{
    if (n <= 0) {
        out->est = 0.0;
        out->lo = -1.0;
        out->hi = 1.0;
        return;
    }
    double nn = (double)n;
    double b = (double)base_only, c = (double)cand_only;
    double d = (b - c) / nn;
    double var = ((b + c) - (b - c) * (b - c) / nn) / (nn * nn);
    double half = z * sqrt(fmax(var, 0.0));
    out->est = d;
    out->lo = fmax(-1.0, d - half);
    out->hi = fmin(1.0, d + half);
}

const char *efc_coord_verdict_str(enum efc_coord_verdict v)
{
    switch (v) {
    case EFC_COORD_MEETS:
        return "meets";
    case EFC_COORD_FAILS:
        return "fails";
    case EFC_COORD_UNDECIDED:
        return "undecided";
    case EFC_COORD_ERROR:
        return "error";
    }
    return "?";
}

/* Extra samples so that the half-width h (at n samples) shrinks to the margin m: h ~ 1/sqrt(n),
 * so n' = n (h/m)^2. */
static int64_t more_samples(double h, double m, int64_t n)
{
    if (!(m > 1e-12) || n <= 0)
        return -1;
    double need = (double)n * (h / m) * (h / m);
    double extra = ceil(need - (double)n);
    if (extra < 1.0)
        extra = 1.0;
    if (extra > 1e15)
        return -1;
    return (int64_t)extra;
}

enum efc_coord_verdict efc_coord_sla_verdict(const struct efc_coord_sla *sla,
                                             const struct efc_coord_ci *ci, int64_t n,
                                             int64_t *more)
{
    double t = sla->value;
    enum efc_coord_verdict v;
    int64_t m = 0;

    if (sla->kind == EFC_COORD_SLA_ABSOLUTE) {
        if (ci->lo >= t)
            v = EFC_COORD_MEETS;
        else if (ci->hi < t)
            v = EFC_COORD_FAILS;
        else {
            v = EFC_COORD_UNDECIDED;
            m = ci->est >= t ? more_samples(ci->est - ci->lo, ci->est - t, n)
                             : more_samples(ci->hi - ci->est, t - ci->est, n);
        }
    } else {
        if (ci->hi <= t)
            v = EFC_COORD_MEETS;
        else if (ci->lo > t)
            v = EFC_COORD_FAILS;
        else {
            v = EFC_COORD_UNDECIDED;
            m = ci->est <= t ? more_samples(ci->hi - ci->est, t - ci->est, n)
                             : more_samples(ci->est - ci->lo, ci->est - t, n);
        }
    }
    if (more)
        *more = m;
    return v;
}

/* ---- aggregation ---------------------------------------------------------------------- */

static double median(double *v, size_t n)
{
    efc_sort_f64(v, n);
    return efc_percentile(v, n, 0.5);
}

/* The selection works on an index of the results sorted by (class, policy, device, position):
 * every (class, policy) is then one run, and every device one run inside it, so pooling is
 * linear and nothing is quadratic in the number of results. */
typedef const struct efc_proto_result *rp;

static int cmp_result(const void *pa, const void *pb)
{
    rp x = *(const rp *)pa, y = *(const rp *)pb;
    int c = strcmp(x->hw_class, y->hw_class);
    if (!c)
        c = strcmp(x->policy, y->policy);
    if (!c)
        c = strcmp(x->device_id, y->device_id);
    if (!c)
        c = (x > y) - (x < y); /* stable: the input order */
    return c;
}

/* End of the run starting at i: same class (level 0), + policy (1), + device (2). */
static size_t run_end(const rp *r, size_t i, size_t n, int level)
{
    size_t j = i + 1;
    for (; j < n; j++) {
        if (strcmp(r[j]->hw_class, r[i]->hw_class) != 0)
            break;
        if (level >= 1 && strcmp(r[j]->policy, r[i]->policy) != 0)
            break;
        if (level >= 2 && strcmp(r[j]->device_id, r[i]->device_id) != 0)
            break;
    }
    return j;
}

/* The run of device `dev` in a (class, policy) run r[0..n) (sorted by device): 1 if found. */
static int find_device(const rp *r, size_t n, const char *dev, size_t *a, size_t *b)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(r[mid]->device_id, dev) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == n || strcmp(r[lo]->device_id, dev) != 0)
        return 0;
    *a = lo;
    *b = run_end(r, lo, n, 2);
    return 1;
}

struct scratch {
    double *p50, *p99, *acc;
};

/* Fill a candidate from r[0..n): the sorted results of one (class, policy), or of one device
 * under it. */
static void fill_candidate(const rp *r, size_t n, const char *policy,
                           const struct efc_coord_select_opts *o, struct scratch *s,
                           struct efc_coord_candidate *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->policy, sizeof(c->policy), "%s", policy);
    c->is_fp32 = strcmp(policy, "fp32") == 0;
    c->more_samples = 0;
    size_t n_dev = 0, n_dev_acc = 0;
    rp first_fail = NULL;
    double acc_sum = 0.0;
    c->acc_min = 1.0;

    for (size_t i = 0, e; i < n; i = e) {
        e = run_end(r, i, n, 2); /* one device: r[i..e) */
        c->n_devices++;
        int64_t dc = 0, dt = 0;
        double p50 = 0.0, p99 = 0.0;
        int np = 0;
        for (size_t j = i; j < e; j++) {
            rp q = r[j];
            if (q->status != EFC_PROTO_RESULT_OK) {
                c->n_failed++;
                if (!first_fail || q < first_fail)
                    first_fail = q; /* the first in the input order */
                continue;
            }
            c->n_ok++;
            if (q->model_bytes > c->model_bytes)
                c->model_bytes = q->model_bytes;
            if (q->sparse_layers > c->sparse_layers)
                c->sparse_layers = q->sparse_layers;
            p50 += q->p50_ms;
            p99 += q->p99_ms;
            np++;
            if (q->has_labels) {
                dc += q->correct;
                dt += q->eval_total;
            }
            if (q->has_labels && q->eval_total > 0) {
                c->correct += q->correct;
                c->total += q->eval_total;
                c->both += q->both_correct;
                c->base_only += q->base_only;
                c->cand_only += q->cand_only;
                c->neither += (int64_t)q->eval_total - q->both_correct - q->base_only -
                              q->cand_only;
            }
        }
        if (np > 0) {
            s->p50[n_dev] = p50 / np;
            s->p99[n_dev] = p99 / np;
            n_dev++;
        }
        if (dt > 0) {
            double acc = (double)dc / (double)dt;
            s->acc[n_dev_acc++] = acc;
            acc_sum += acc;
            if (acc < c->acc_min)
                c->acc_min = acc;
        }
    }
    c->p50_ms = median(s->p50, n_dev);
    c->p99_ms = median(s->p99, n_dev);
    c->acc_mean = n_dev_acc ? acc_sum / (double)n_dev_acc : 0.0;
    if (!n_dev_acc)
        c->acc_min = 0.0;

    efc_coord_ci_wilson(c->correct, c->total, o->z, &c->acc);
    if (c->is_fp32) {
        c->drop.est = c->drop.lo = c->drop.hi = 0.0; /* the base against itself */
    } else {
        efc_coord_ci_paired_newcombe(c->both, c->base_only, c->cand_only, c->neither, o->z,
                                     &c->drop);
    }

    if (c->n_failed > 0) {
        c->verdict = EFC_COORD_ERROR;
        snprintf(c->reason, sizeof(c->reason), "failed on %d result(s), first %s: %.200s",
                 c->n_failed, first_fail->device_id, first_fail->error);
        return;
    }
    if (c->total <= 0) {
        c->verdict = EFC_COORD_ERROR;
        snprintf(c->reason, sizeof(c->reason), "no labelled samples");
        return;
    }
    const struct efc_coord_ci *ci = o->sla.kind == EFC_COORD_SLA_ABSOLUTE ? &c->acc : &c->drop;
    c->verdict = efc_coord_sla_verdict(&o->sla, ci, c->total, &c->more_samples);
    const char *what = o->sla.kind == EFC_COORD_SLA_ABSOLUTE ? "accuracy" : "drop";
    const char *op = o->sla.kind == EFC_COORD_SLA_ABSOLUTE ? ">=" : "<=";
    if (c->verdict == EFC_COORD_FAILS) {
        snprintf(c->reason, sizeof(c->reason), "SLA: %s %.4f [%.4f, %.4f] not %s %.4f (n=%lld)",
                 what, ci->est, ci->lo, ci->hi, op, o->sla.value, (long long)c->total);
    } else if (c->verdict == EFC_COORD_UNDECIDED) {
        if (c->more_samples > 0)
            snprintf(c->reason, sizeof(c->reason),
                     "undecided (within noise): %s %.4f [%.4f, %.4f] vs %s %.4f (n=%lld); "
                     "~%lld more samples would settle it",
                     what, ci->est, ci->lo, ci->hi, op, o->sla.value, (long long)c->total,
                     (long long)c->more_samples);
        else
            snprintf(c->reason, sizeof(c->reason),
                     "undecided (within noise): %s %.4f [%.4f, %.4f] vs %s %.4f (n=%lld); "
                     "estimate on the threshold",
                     what, ci->est, ci->lo, ci->hi, op, o->sla.value, (long long)c->total);
    }
}

/* Order of preference among candidates meeting the SLA: objective, then the other, then the
 * policy string (determinism). p50 values within a relative gap tie. */
static int prefer(const struct efc_coord_candidate *a, const struct efc_coord_candidate *b,
                  const struct efc_coord_select_opts *o)
{
    int by_bytes = (a->model_bytes > b->model_bytes) - (a->model_bytes < b->model_bytes);
    int by_p50 = 0;
    double lo = fmin(a->p50_ms, b->p50_ms);
    if (fabs(a->p50_ms - b->p50_ms) > o->p50_tie_rel * lo)
        by_p50 = (a->p50_ms > b->p50_ms) - (a->p50_ms < b->p50_ms);
    int first = o->objective == EFC_COORD_OBJ_BYTES ? by_bytes : by_p50;
    int second = o->objective == EFC_COORD_OBJ_BYTES ? by_p50 : by_bytes;
    if (first)
        return first;
    if (second)
        return second;
    return strcmp(a->policy, b->policy);
}

/* Best and second-best MEETS candidates (indices, -1 if none). */
static void pick(const struct efc_coord_candidate *c, size_t n,
                 const struct efc_coord_select_opts *o, int32_t *best, int32_t *second)
{
    *best = -1;
    *second = -1;
    for (size_t i = 0; i < n; i++) {
        if (c[i].verdict != EFC_COORD_MEETS)
            continue;
        if (*best < 0 || prefer(&c[i], &c[*best], o) < 0) {
            *second = *best;
            *best = (int32_t)i;
        } else if (*second < 0 || prefer(&c[i], &c[*second], o) < 0) {
            *second = (int32_t)i;
        }
    }
}

static void pareto(struct efc_coord_candidate *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ok_i = c[i].verdict != EFC_COORD_ERROR;
        int dom_p50 = !ok_i, dom_bytes = !ok_i;
        for (size_t j = 0; j < n && ok_i; j++) {
            if (j == i || c[j].verdict == EFC_COORD_ERROR)
                continue;
            double ai = c[i].acc.est, aj = c[j].acc.est;
            if (aj >= ai && c[j].p50_ms <= c[i].p50_ms && (aj > ai || c[j].p50_ms < c[i].p50_ms))
                dom_p50 = 1;
            if (aj >= ai && c[j].model_bytes <= c[i].model_bytes &&
                (aj > ai || c[j].model_bytes < c[i].model_bytes))
                dom_bytes = 1;
        }
        c[i].pareto_p50 = !dom_p50;
        c[i].pareto_bytes = !dom_bytes;
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_policy(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int fx = strcmp(x, "fp32") == 0, fy = strcmp(y, "fp32") == 0;
    if (fx != fy)
        return fy - fx;
    return strcmp(x, y);
}

/* A (class, policy) run of the sorted index. */
struct run {
    const char *policy;
    size_t a, b;
};

static int cmp_run(const void *a, const void *b)
{
    return cmp_policy(&((const struct run *)a)->policy, &((const struct run *)b)->policy);
}

/* Devices whose own paired results show the class's choice failing the SLA: their best
 * candidate on their own results. runs[0..n_runs) are the class's policies, in cands order. */
static enum efc_status device_exceptions(const rp *idx, const struct run *runs, size_t n_runs,
                                         const struct efc_coord_select_opts *o,
                                         struct scratch *s,
                                         struct efc_coord_class_selection *cs)
{
    const struct efc_coord_candidate *choice = &cs->cands[cs->chosen];
    const struct run *ch = &runs[cs->chosen];
    struct efc_coord_candidate dc, best, own;

    for (size_t t = ch->a, e; t < ch->b; t = e) {
        e = run_end(idx, t, ch->b, 2);
        const char *dev = idx[t]->device_id;
        fill_candidate(idx + t, e - t, ch->policy, o, s, &dc);
        if (dc.verdict != EFC_COORD_FAILS)
            continue; /* meets or within the noise on this device: keep the class default */
        int have = 0;
        for (size_t p = 0; p < n_runs; p++) {
            size_t da, db;
            if (!find_device(idx + runs[p].a, runs[p].b - runs[p].a, dev, &da, &db))
                continue;
            fill_candidate(idx + runs[p].a + da, db - da, runs[p].policy, o, s, &own);
            if (own.verdict != EFC_COORD_MEETS)
                continue;
            if (!have || prefer(&own, &best, o) < 0) {
                best = own;
                have = 1;
            }
        }
        struct efc_coord_exception *grown =
            efc_realloc(cs->exceptions, (cs->n_exceptions + 1) * sizeof(*grown));
        if (!grown)
            return efc_errf(EFC_ENOMEM, "select: exceptions");
        cs->exceptions = grown;
        struct efc_coord_exception *x = &cs->exceptions[cs->n_exceptions++];
        memset(x, 0, sizeof(*x));
        snprintf(x->device_id, sizeof(x->device_id), "%s", dev);
        snprintf(x->policy, sizeof(x->policy), "%s", have ? best.policy : "");
        x->class_choice_acc = dc.acc;
        x->class_choice_drop = dc.drop;
        x->n = dc.total;
        snprintf(x->evidence, sizeof(x->evidence),
                 "%.100s on %s: accuracy %.4f [%.4f, %.4f], drop %.4f [%.4f, %.4f], n=%lld",
                 choice->policy, dev, dc.acc.est, dc.acc.lo, dc.acc.hi, dc.drop.est,
                 dc.drop.lo, dc.drop.hi, (long long)dc.total);
    }
    return EFC_OK;
}

void efc_coord_selection_free(struct efc_coord_selection *sel)
{
    if (!sel)
        return;
    for (size_t i = 0; i < sel->n_classes; i++) {
        efc_free(sel->classes[i].cands);
        efc_free(sel->classes[i].exceptions);
    }
    efc_free(sel->classes);
    efc_free(sel);
}

enum efc_status efc_coord_select(const struct efc_proto_result *results, size_t n,
                                 const struct efc_coord_select_opts *opts,
                                 struct efc_coord_selection **out)
{
    enum efc_status st = EFC_OK;
    struct efc_coord_select_opts o = *opts;
    struct efc_coord_selection *sel = NULL;
    const struct efc_proto_result **idx = NULL;
    struct run *runs = NULL;
    const char **devs = NULL;
    struct scratch s = {0};

    *out = NULL;
    if (!(o.sla.value >= 0.0 && o.sla.value <= 1.0) ||
        (o.sla.kind != EFC_COORD_SLA_ABSOLUTE && o.sla.kind != EFC_COORD_SLA_MAX_DROP) ||
        (o.objective != EFC_COORD_OBJ_BYTES && o.objective != EFC_COORD_OBJ_P50) ||
        (n > 0 && !results))
        return efc_errf(EFC_EINVAL, "select: bad options (SLA value %g)", o.sla.value);
    if (o.z <= 0.0)
        o.z = EFC_COORD_Z95;
    if (o.p50_tie_rel <= 0.0)
        o.p50_tie_rel = P50_TIE_REL_DEFAULT;

    size_t cap = n ? n : 1;
    sel = efc_calloc(1, sizeof(*sel));
    idx = efc_calloc(cap, sizeof(*idx));
    runs = efc_calloc(cap, sizeof(*runs));
    devs = efc_calloc(cap, sizeof(*devs));
    s.p50 = efc_calloc(cap, sizeof(double));
    s.p99 = efc_calloc(cap, sizeof(double));
    s.acc = efc_calloc(cap, sizeof(double));
    if (!sel || !idx || !runs || !devs || !s.p50 || !s.p99 || !s.acc) {
        st = efc_errf(EFC_ENOMEM, "select: %zu results", n);
        goto out;
    }
    sel->sla = o.sla;
    sel->objective = o.objective;
    for (size_t i = 0; i < n; i++)
        idx[i] = &results[i];
    qsort(idx, n, sizeof(*idx), cmp_result);

    size_t n_cls = 0;
    for (size_t i = 0; i < n; i = run_end(idx, i, n, 0))
        n_cls++;
    if (n_cls) {
        sel->classes = efc_calloc(n_cls, sizeof(*sel->classes));
        if (!sel->classes) {
            st = efc_errf(EFC_ENOMEM, "select: classes");
            goto out;
        }
    }
    sel->n_classes = n_cls;
    for (size_t k = 0, i = 0, ce; i < n; i = ce, k++) {
        struct efc_coord_class_selection *cs = &sel->classes[k];
        ce = run_end(idx, i, n, 0); /* the class: idx[i..ce) */
        snprintf(cs->hw_class, sizeof(cs->hw_class), "%s", idx[i]->hw_class);
        cs->chosen = cs->runner_up = cs->fp32 = -1;
        size_t m = 0, n_dev = 0;
        for (size_t t = i; t < ce; t++)
            devs[m++] = idx[t]->device_id;
        qsort(devs, m, sizeof(*devs), cmp_str);
        for (size_t t = 0; t < m; t++)
            n_dev += t == 0 || strcmp(devs[t], devs[t - 1]) != 0;
        cs->n_devices = (int32_t)n_dev;
        size_t n_pol = 0;
        for (size_t t = i, pe; t < ce; t = pe) {
            pe = run_end(idx, t, ce, 1);
            runs[n_pol++] = (struct run){idx[t]->policy, t, pe};
        }
        qsort(runs, n_pol, sizeof(*runs), cmp_run); /* fp32 first, then by name */
        cs->cands = efc_calloc(n_pol, sizeof(*cs->cands));
        if (!cs->cands) {
            st = efc_errf(EFC_ENOMEM, "select: candidates");
            goto out;
        }
        cs->n_cands = n_pol;
        for (size_t p = 0; p < n_pol; p++) {
            fill_candidate(idx + runs[p].a, runs[p].b - runs[p].a, runs[p].policy, &o, &s,
                           &cs->cands[p]);
            if (cs->cands[p].is_fp32)
                cs->fp32 = (int32_t)p;
        }
        pareto(cs->cands, cs->n_cands);
        pick(cs->cands, cs->n_cands, &o, &cs->chosen, &cs->runner_up);
        if (cs->chosen >= 0) {
            st = device_exceptions(idx, runs, n_pol, &o, &s, cs);
            if (st != EFC_OK)
                goto out;
        }
    }
    *out = sel;
    sel = NULL;
out:
    efc_coord_selection_free(sel);
    efc_free(idx);
    efc_free(runs);
    efc_free(devs);
    efc_free(s.p50);
    efc_free(s.p99);
    efc_free(s.acc);
    return st;
}
