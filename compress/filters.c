/* filters.c — structured filter (channel) pruning (filters.h). */
#include "compress/filters.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"

#define MOD "filters"

/* Keep the channels of axis `axis` (size c_old * block) whose keep[] is set: param tensor ti
 * is rewritten with owned data and the new dimension. */
static enum efc_status shrink(struct efc_model *m, int32_t ti, int32_t axis, int32_t block,
                              const uint8_t *keep, int32_t c_old, int32_t c_new)
{
    struct efc_tensor *t = &m->tensors[ti];
    if (t->sparse || t->dtype != EFC_DTYPE_F32 || t->dims[axis] != c_old * block)
        return efc_errf(EFC_EINVAL, "filters: tensor %s: dimension %d is %d, expected %d x %d",
                        t->name, axis, t->dims[axis], c_old, block);
    size_t outer = 1, inner = 1;
    for (int32_t d = 0; d < axis; d++)
        outer *= (size_t)t->dims[d];
    for (int32_t d = axis + 1; d < t->ndim; d++)
        inner *= (size_t)t->dims[d];
    size_t run = (size_t)block * inner;
    float *nd = efc_malloc(outer * (size_t)c_new * run * sizeof(float));
    if (!nd)
        return efc_errf(EFC_ENOMEM, "filters: %s", t->name);
    const float *od = t->data;
    float *w = nd;
    for (size_t o = 0; o < outer; o++)
        for (int32_t c = 0; c < c_old; c++)
            if (keep[c]) {
                memcpy(w, od + (o * (size_t)c_old + (size_t)c) * run, run * sizeof(float));
                w += run;
            }
    if (t->owns_data)
        efc_free(t->data);
    t->data = nd;
    t->owns_data = 1;
    t->dims[axis] = c_new * block;
    return EFC_OK;
}

/* Consumers of activation tensor t rewritten for its channels going c_old -> c_new (keep);
 * with dry set, only whether every consumer can follow (EFC_EUNSUPPORTED naming the one that
 * cannot). feat: > 0 when t is a feature vector whose channel c owns `feat` consecutive
 * features (after Flatten / global pooling). */
static enum efc_status follow(struct efc_model *m, int32_t t, const uint8_t *keep, int32_t c_old,
                              int32_t c_new, int32_t feat, int dry)
{
    enum efc_status st = EFC_OK;
    if (t == m->output)
        return efc_errf(EFC_EUNSUPPORTED, "filters: channels reach the model output");
    for (int32_t i = 0; i < m->n_nodes && st == EFC_OK; i++) {
        struct efc_node *nd = &m->nodes[i];
        for (int32_t j = 1; j < nd->n_inputs; j++)
            if (nd->inputs[j] == t)
                return efc_errf(EFC_EUNSUPPORTED, "filters: %s (%s) uses the channels as a "
                                                  "second input", nd->name, efc_op_name(nd->op));
        if (nd->inputs[0] != t)
            continue;
        if (feat > 0) { /* a feature vector: Dense columns, or a view of it */
            if (nd->op == EFC_OP_DENSE)
                st = dry ? EFC_OK : shrink(m, nd->inputs[1], 1, feat, keep, c_old, c_new);
            else if (nd->op == EFC_OP_FLATTEN || nd->op == EFC_OP_RELU || nd->op == EFC_OP_RELU6)
                st = follow(m, nd->output, keep, c_old, c_new, feat, dry);
            else
                st = efc_errf(EFC_EUNSUPPORTED, "filters: %s (%s) after the features",
                              nd->name, efc_op_name(nd->op));
            continue;
        }
        switch (nd->op) {
        case EFC_OP_RELU:
        case EFC_OP_RELU6:
        case EFC_OP_MAXPOOL:
        case EFC_OP_AVGPOOL:
            st = follow(m, nd->output, keep, c_old, c_new, 0, dry);
            break;
        case EFC_OP_BATCHNORM:
            for (int32_t j = 1; j <= 4 && st == EFC_OK && !dry; j++)
                st = shrink(m, nd->inputs[j], 0, 1, keep, c_old, c_new);
            if (st == EFC_OK)
                st = follow(m, nd->output, keep, c_old, c_new, 0, dry);
            break;
        case EFC_OP_CONV2D:
            if (nd->a.groups == 1) { /* its input channels */
                if (!dry)
                    st = shrink(m, nd->inputs[1], 1, 1, keep, c_old, c_new);
            } else if (nd->a.groups == c_old &&
                       m->tensors[nd->inputs[1]].dims[0] == c_old) { /* depthwise: tied */
                if (!dry) {
                    st = shrink(m, nd->inputs[1], 0, 1, keep, c_old, c_new);
                    if (st == EFC_OK && nd->n_inputs > 2 && nd->inputs[2] >= 0)
                        st = shrink(m, nd->inputs[2], 0, 1, keep, c_old, c_new);
                    nd->a.groups = c_new;
                }
                if (st == EFC_OK)
                    st = follow(m, nd->output, keep, c_old, c_new, 0, dry);
            } else {
                st = efc_errf(EFC_EUNSUPPORTED, "filters: %s is a grouped convolution",
                              nd->name);
            }
            break;
        case EFC_OP_FLATTEN: {
            const struct efc_tensor *x = &m->tensors[t];
            int32_t hw = x->ndim == 3 ? x->dims[1] * x->dims[2] : 1;
            st = follow(m, nd->output, keep, c_old, c_new, hw, dry);
            break;
        }
        case EFC_OP_GAVGPOOL:
            st = follow(m, nd->output, keep, c_old, c_new, 1, dry);
            break;
        default:
            st = efc_errf(EFC_EUNSUPPORTED, "filters: %s (%s) consumes the channels", nd->name,
                          efc_op_name(nd->op));
        }
    }
    return st;
}

struct score {
    float v;
    int32_t c;
};

static int cmp_score(const void *a, const void *b)
{
    const struct score *x = a, *y = b;
    if (x->v != y->v)
        return (x->v > y->v) - (x->v < y->v);
    return (x->c > y->c) - (x->c < y->c);
}

/* The BatchNorm that directly consumes t (its only consumer), or -1. */
static int32_t sole_bn(const struct efc_model *m, int32_t t)
{
    int32_t bn = -1, n = 0;
    for (int32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].inputs[0] == t) {
            n++;
            bn = m->nodes[i].op == EFC_OP_BATCHNORM ? i : -1;
        }
    return n == 1 ? bn : -1;
}

enum efc_status efc_filters(struct efc_model *m, double ratio, enum efc_filters_by by,
                            struct efc_filters_report *rep)
{
    enum efc_status st;
    memset(rep, 0, sizeof(*rep));
    if (!(ratio >= 0.0 && ratio < 1.0))
        return efc_errf(EFC_EINVAL, "filters: ratio %g not in [0, 1)", ratio);
    if ((st = efc_model_densify(m)) != EFC_OK || (st = efc_model_check(m)) != EFC_OK)
        return st;
    rep->macs_before = efc_model_macs(m);
    for (int32_t i = 0; i < m->n_nodes; i++) {
        struct efc_node *nd = &m->nodes[i];
        if (nd->op != EFC_OP_CONV2D || nd->a.groups != 1 ||
            m->tensors[nd->inputs[1]].dtype != EFC_DTYPE_F32)
            continue;
        rep->convs++;
        const struct efc_tensor *w = &m->tensors[nd->inputs[1]];
        int32_t oc = w->dims[0], drop = (int32_t)floor(ratio * oc);
        if (drop >= oc)
            drop = oc - 1;
        if (drop <= 0)
            continue;
        size_t per = efc_tensor_numel(w) / (size_t)oc;
        struct score *sc = efc_malloc((size_t)oc * sizeof(*sc));
        uint8_t *keep = efc_malloc((size_t)oc);
        if (!sc || !keep) {
            efc_free(sc);
            efc_free(keep);
            return efc_errf(EFC_ENOMEM, "filters: %s", nd->name);
        }
        int32_t bn = by == EFC_FILTERS_BY_BN ? sole_bn(m, nd->output) : -1;
        const float *wd = w->data;
        const float *gamma = bn >= 0 ? m->tensors[m->nodes[bn].inputs[1]].data : NULL;
        for (int32_t c = 0; c < oc; c++) {
            double s = 0.0;
            if (gamma) {
                s = fabsf(gamma[c]);
            } else {
                for (size_t k = 0; k < per; k++)
                    s += fabsf(wd[(size_t)c * per + k]);
            }
            sc[c] = (struct score){(float)s, c};
        }
        qsort(sc, (size_t)oc, sizeof(*sc), cmp_score);
        memset(keep, 1, (size_t)oc);
        for (int32_t k = 0; k < drop; k++)
            keep[sc[k].c] = 0;
        st = follow(m, nd->output, keep, oc, oc - drop, 0, 1);
        if (st == EFC_EUNSUPPORTED) {
            efc_log(EFC_LOG_INFO, MOD, "%s kept: %s", nd->name, efc_err_detail());
            st = EFC_OK;
        } else if (st == EFC_OK) {
            st = shrink(m, nd->inputs[1], 0, 1, keep, oc, oc - drop);
            if (st == EFC_OK && nd->n_inputs > 2 && nd->inputs[2] >= 0)
                st = shrink(m, nd->inputs[2], 0, 1, keep, oc, oc - drop);
            if (st == EFC_OK)
                st = follow(m, nd->output, keep, oc, oc - drop, 0, 0);
            if (st == EFC_OK) {
                rep->pruned++;
                rep->channels_before += oc;
                rep->channels_after += oc - drop;
                efc_log(EFC_LOG_INFO, MOD, "%s: %d -> %d output channels (by %s)", nd->name, oc,
                        oc - drop, gamma ? "BatchNorm scale" : "L1 norm");
            }
        }
        efc_free(sc);
        efc_free(keep);
        if (st != EFC_OK)
            return st;
    }
    if ((st = efc_model_check(m)) != EFC_OK)
        return st;
    rep->macs_after = efc_model_macs(m);
    return EFC_OK;
}
