/* prune.c — masks, global magnitude and N:M pruning, and the fine-tuning hooks (prune.h). */
#include "compress/prune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"

static int prunable(const struct efc_model *m, const struct efc_node *nd)
{
    if (nd->op != EFC_OP_DENSE && nd->op != EFC_OP_CONV2D)
        return 0;
    if (nd->n_inputs < 2 || nd->inputs[1] < 0 || nd->inputs[1] >= m->n_tensors)
        return 0;
    const struct efc_tensor *t = &m->tensors[nd->inputs[1]];
    return t->dtype == EFC_DTYPE_F32 && t->data != NULL;
}

enum efc_status efc_prune_init(const struct efc_model *m, struct efc_prune *p)
{
    memset(p, 0, sizeof(*p));
    for (int32_t i = 0; i < m->n_nodes; i++)
        p->n += prunable(m, &m->nodes[i]);
    if (p->n == 0)
        return efc_errf(EFC_EINVAL, "prune: model %s has no f32 Dense or Conv2d weights",
                        m->name);
    p->layers = efc_calloc((size_t)p->n, sizeof(*p->layers));
    if (!p->layers)
        return efc_errf(EFC_ENOMEM, "prune: masks");
    int32_t k = 0;
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *nd = &m->nodes[i];
        if (!prunable(m, nd))
            continue;
        struct efc_prune_layer *l = &p->layers[k++];
        l->tensor = nd->inputs[1];
        l->node = i;
        l->numel = (int64_t)efc_tensor_numel(&m->tensors[l->tensor]);
        l->keep = efc_malloc((size_t)l->numel);
        if (!l->keep) {
            efc_prune_fini(p);
            return efc_errf(EFC_ENOMEM, "prune: masks");
        }
        memset(l->keep, 1, (size_t)l->numel);
    }
    return EFC_OK;
}

void efc_prune_fini(struct efc_prune *p)
{
    if (!p)
        return;
    for (int32_t i = 0; i < p->n; i++)
        efc_free(p->layers[i].keep);
    efc_free(p->layers);
    memset(p, 0, sizeof(*p));
}

void efc_prune_apply(struct efc_model *m, const struct efc_prune *p)
{
    for (int32_t i = 0; i < p->n; i++) {
        const struct efc_prune_layer *l = &p->layers[i];
        float *w = m->tensors[l->tensor].data;
        for (int64_t j = 0; j < l->numel; j++)
            if (!l->keep[j])
                w[j] = 0.0f;
    }
}

double efc_prune_mask_sparsity(const struct efc_prune *p)
{
    int64_t total = 0, dropped = 0;
    for (int32_t i = 0; i < p->n; i++) {
        total += p->layers[i].numel;
        for (int64_t j = 0; j < p->layers[i].numel; j++)
            dropped += !p->layers[i].keep[j];
    }
    return total ? (double)dropped / (double)total : 0.0;
}

double efc_prune_model_sparsity(const struct efc_model *m)
{
    int64_t total = 0, zero = 0;
    for (int32_t i = 0; i < m->n_nodes; i++) {
        if (!prunable(m, &m->nodes[i]))
            continue;
        const struct efc_tensor *t = &m->tensors[m->nodes[i].inputs[1]];
        size_t n = efc_tensor_numel(t);
        total += (int64_t)n;
        if (t->sparse) {
            zero += (int64_t)n - t->sparse->nnz;
            const float *v = t->data;
            for (int32_t j = 0; j < t->sparse->nnz; j++)
                zero += v[j] == 0.0f;
        } else {
            const float *w = t->data;
            for (size_t j = 0; j < n; j++)
                zero += w[j] == 0.0f;
        }
    }
    return total ? (double)zero / (double)total : 0.0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The k-th smallest of v[0..n) (0-based), v reordered. Quickselect, Hoare partition. */
static float kth_smallest(float *v, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (hi - lo > 16) {
        float a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi];
        float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return v[k];
    }
    qsort(v + lo, (size_t)(hi - lo + 1), sizeof(*v), cmp_float);
    return v[k];
}

/* Keep the `keep_n` largest |w| of one layer (ties at the threshold resolved in index order). */
static enum efc_status keep_largest(const float *w, int64_t n, int64_t keep_n, uint8_t *keep)
{
    if (keep_n >= n) {
        memset(keep, 1, (size_t)n);
        return EFC_OK;
    }
    float *a = efc_malloc((size_t)n * sizeof(*a));
    if (!a)
        return efc_errf(EFC_ENOMEM, "prune: %lld weights", (long long)n);
    for (int64_t j = 0; j < n; j++)
        a[j] = fabsf(w[j]);
    float thr = keep_n > 0 ? kth_smallest(a, n, n - keep_n) : INFINITY;
    int64_t above = 0;
    for (int64_t j = 0; j < n; j++)
        above += fabsf(w[j]) > thr;
    int64_t ties = keep_n - above; /* of the elements equal to thr, keep this many */
    for (int64_t j = 0; j < n; j++) {
        float v = fabsf(w[j]);
        keep[j] = v > thr || (v == thr && ties-- > 0);
    }
    efc_free(a);
    return EFC_OK;
}

struct mag {
    float a;
    int32_t layer;
};

static int cmp_mag(const void *x, const void *y)
{
    const struct mag *p = x, *q = y;
    if (p->a != q->a)
        return (p->a > q->a) - (p->a < q->a);
    return (p->layer > q->layer) - (p->layer < q->layer);
}

enum efc_status efc_prune_magnitude(struct efc_model *m, struct efc_prune *p, double sparsity,
                                    double min_density)
{
    if (!(sparsity >= 0.0 && sparsity < 1.0) || !(min_density >= 0.0 && min_density <= 1.0))
        return efc_errf(EFC_EINVAL, "prune: sparsity %g not in [0, 1) or min_density %g not in "
                                    "[0, 1]", sparsity, min_density);
    int64_t total = 0;
    for (int32_t i = 0; i < p->n; i++)
        total += p->layers[i].numel;
    struct mag *a = efc_malloc((size_t)total * sizeof(*a));
    int64_t *dropped = efc_calloc((size_t)p->n, sizeof(*dropped));
    if (!a || !dropped) {
        efc_free(a);
        efc_free(dropped);
        return efc_errf(EFC_ENOMEM, "prune: %lld weights", (long long)total);
    }
    int64_t o = 0;
    for (int32_t i = 0; i < p->n; i++) {
        const float *w = m->tensors[p->layers[i].tensor].data;
        for (int64_t j = 0; j < p->layers[i].numel; j++)
            a[o++] = (struct mag){fabsf(w[j]), i};
    }
    /* Walk the magnitudes upwards and drop each unless its layer is at its floor, until the
     * global count is reached: the smallest weights overall, subject to the per-layer floors.
     * Then each layer keeps its largest (numel - dropped). */
    qsort(a, (size_t)total, sizeof(*a), cmp_mag);
    int64_t want = (int64_t)floor(sparsity * (double)total), got = 0;
    for (int64_t k = 0; k < total && got < want; k++) {
        const struct efc_prune_layer *l = &p->layers[a[k].layer];
        int64_t floor_keep = (int64_t)ceil(min_density * (double)l->numel);
        if (floor_keep < 1)
            floor_keep = 1;
        if (l->numel - dropped[a[k].layer] > floor_keep) {
            dropped[a[k].layer]++;
            got++;
        }
    }
    efc_free(a);
    enum efc_status st = EFC_OK;
    for (int32_t i = 0; i < p->n && st == EFC_OK; i++) {
        struct efc_prune_layer *l = &p->layers[i];
        st = keep_largest(m->tensors[l->tensor].data, l->numel, l->numel - dropped[i],
                          l->keep);
    }
    efc_free(dropped);
    if (st == EFC_OK)
        efc_prune_apply(m, p);
    return st;
}

/* Input dimension of a layer's weight along which N:M groups run, and the stride between
 * two consecutive elements of a group in the C-order weight. Dense: in, stride 1. Conv:
 * ic/groups at stride kh*kw. */
static void nm_geometry(const struct efc_model *m, const struct efc_prune_layer *l,
                        int64_t *rows, int64_t *in, int64_t *inner)
{
    const struct efc_tensor *t = &m->tensors[l->tensor];
    if (m->nodes[l->node].op == EFC_OP_DENSE) {
        *rows = t->dims[0];
        *in = t->dims[1];
        *inner = 1;
        /* After Flatten of a [C, H, W] map the INT8 path reads the columns in NHWC order
         * (h, w, c): group along channels there too, C groups at stride H * W. */
        int32_t x = m->nodes[l->node].inputs[0];
        for (int32_t i = 0; i < m->n_nodes; i++) {
            const struct efc_node *nd = &m->nodes[i];
            if (nd->output != x || nd->op != EFC_OP_FLATTEN)
                continue;
            const struct efc_tensor *a = &m->tensors[nd->inputs[0]];
            int64_t hw = a->ndim == 3 ? (int64_t)a->dims[1] * a->dims[2] : 1;
            if (hw > 1 && a->dims[0] * hw == *in) {
                *in = a->dims[0];
                *inner = hw;
            }
        }
    } else {
        *rows = t->dims[0];
        *in = t->dims[1];
        *inner = (int64_t)t->dims[2] * t->dims[3];
    }
}

enum efc_status efc_prune_nm(struct efc_model *m, struct efc_prune *p, int32_t n, int32_t mm)
{
    if (!(mm >= 2 && mm <= 16 && n >= 1 && n < mm))
        return efc_errf(EFC_EINVAL, "prune: N:M needs 1 <= n < m <= 16 (got %d:%d)", n, mm);
    for (int32_t i = 0; i < p->n; i++) {
        struct efc_prune_layer *l = &p->layers[i];
        int64_t rows, in, inner;
        nm_geometry(m, l, &rows, &in, &inner);
        l->nm_skip = in % mm != 0;
        if (l->nm_skip)
            continue;
        const float *w = m->tensors[l->tensor].data;
        memset(l->keep, 1, (size_t)l->numel);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t s = 0; s < inner; s++)
                for (int64_t g = 0; g < in; g += mm) {
                    /* the group: elements r*in*inner + (g + e)*inner + s, e in [0, mm) */
                    int64_t base = r * in * inner + g * inner + s;
                    for (int32_t drop = 0; drop < mm - n; drop++) {
                        int64_t best = -1;
                        for (int32_t e = 0; e < mm; e++) {
                            int64_t at = base + (int64_t)e * inner;
                            if (l->keep[at] &&
                                (best < 0 || fabsf(w[at]) < fabsf(w[best])))
                                best = at;
                        }
                        l->keep[best] = 0;
                    }
                }
    }
    efc_prune_apply(m, p);
    return EFC_OK;
}

int efc_prune_nm_holds(const struct efc_model *m, const struct efc_prune *p, int32_t n,
                       int32_t mm)
{
    for (int32_t i = 0; i < p->n; i++) {
        const struct efc_prune_layer *l = &p->layers[i];
        if (l->nm_skip)
            continue;
        int64_t rows, in, inner;
        nm_geometry(m, l, &rows, &in, &inner);
        const float *w = m->tensors[l->tensor].data;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t s = 0; s < inner; s++)
                for (int64_t g = 0; g < in; g += mm) {
                    int32_t nz = 0;
                    for (int32_t e = 0; e < mm; e++)
                        nz += w[r * in * inner + (g + e) * inner + s] != 0.0f;
                    if (nz > n)
                        return 0;
                }
    }
    return 1;
}

/* ---- fine-tuning hooks ---------------------------------------------------------------- */

void efc_prune_schedule_init(struct efc_prune_schedule *g, struct efc_prune *p, int32_t mode,
                             double final_sparsity, double min_density, int64_t total_steps)
{
    memset(g, 0, sizeof(*g));
    g->p = p;
    g->mode = mode;
    g->final_sparsity = final_sparsity;
    g->min_density = min_density;
    g->total_steps = total_steps > 0 ? total_steps : 1;
    g->ramp = 0.75;
    g->updates = 10;
}

static void after_step(void *ctx, struct efc_model *m, int64_t step)
{
    struct efc_prune_schedule *g = ctx;
    if (g->err != EFC_OK)
        return;
    if (g->mode == 1 && g->done_updates < g->updates) {
        /* update k happens at step k/updates of the ramp; the last one at the ramp's end */
        int64_t ramp_steps = (int64_t)(g->ramp * (double)g->total_steps);
        if (ramp_steps < g->updates)
            ramp_steps = g->updates;
        int64_t next = (int64_t)g->done_updates * ramp_steps / g->updates;
        if (step >= next) {
            g->done_updates++;
            double t = (double)g->done_updates / g->updates;
            double s = g->final_sparsity * (1.0 - pow(1.0 - t, 3.0));
            enum efc_status st = efc_prune_magnitude(m, g->p, s, g->min_density);
            if (st != EFC_OK)
                g->err = st;
            return;
        }
    }
    efc_prune_apply(m, g->p);
}

void efc_prune_hooks(struct efc_prune_schedule *g, struct efc_train_hooks *h)
{
    memset(h, 0, sizeof(*h));
    h->ctx = g;
    h->after_step = after_step;
}
