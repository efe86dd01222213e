/* share.c — per-layer 1-D k-means of the non-zero weights (share.h). */
#include "compress/share.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"

#define MAX_ITERS 50

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* k-means on sorted values v[0..n): clusters are contiguous ranges of the sorted values, so
 * an assignment is k - 1 boundaries; each iteration places every boundary at the midpoint of
 * its two centroids (binary search) and recomputes the means from prefix sums. */
static void kmeans_sorted(const float *v, int64_t n, int32_t k, const double *prefix, float *c)
{
    int64_t *lo = efc_malloc((size_t)(k + 1) * sizeof(*lo));
    if (!lo)
        return;
    for (int32_t j = 0; j < k; j++)
        c[j] = v[0] + (v[n - 1] - v[0]) * ((float)j + 0.5f) / (float)k;
    for (int it = 0; it < MAX_ITERS; it++) {
        lo[0] = 0;
        lo[k] = n;
        for (int32_t j = 1; j < k; j++) { /* first index whose value >= the midpoint */
            float mid = 0.5f * (c[j - 1] + c[j]);
            int64_t a = lo[j - 1], b = n;
            while (a < b) {
                int64_t m = a + (b - a) / 2;
                if (v[m] < mid)
                    a = m + 1;
                else
                    b = m;
            }
            lo[j] = a;
        }
        int changed = 0;
        for (int32_t j = 0; j < k; j++) {
            if (lo[j + 1] <= lo[j])
                continue; /* empty cluster: keep its centroid */
            float mean = (float)((prefix[lo[j + 1]] - prefix[lo[j]]) / (double)(lo[j + 1] - lo[j]));
            changed |= mean != c[j];
            c[j] = mean;
        }
        if (!changed)
            break;
    }
    efc_free(lo);
}

enum efc_status efc_share(struct efc_model *m, int32_t bits, int32_t *layers)
{
    enum efc_status st;
    if (layers)
        *layers = 0;
    if (bits < 1 || bits > 8)
        return efc_errf(EFC_EINVAL, "share: bits=%d not in [1, 8]", bits);
    if ((st = efc_model_densify(m)) != EFC_OK)
        return st;
    int32_t k = 1 << bits;
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *nd = &m->nodes[i];
        if ((nd->op != EFC_OP_DENSE && nd->op != EFC_OP_CONV2D) || nd->n_inputs < 2 ||
            nd->inputs[1] < 0 || m->tensors[nd->inputs[1]].dtype != EFC_DTYPE_F32)
            continue;
        struct efc_tensor *t = &m->tensors[nd->inputs[1]];
        float *w = t->data;
        size_t n = efc_tensor_numel(t);
        int64_t nz = 0;
        for (size_t j = 0; j < n; j++)
            nz += w[j] != 0.0f;
        if (nz <= k)
            continue; /* already at most k distinct values */
        float *v = efc_malloc((size_t)nz * sizeof(*v)), *c = efc_malloc((size_t)k * sizeof(*c));
        double *prefix = efc_malloc((size_t)(nz + 1) * sizeof(*prefix));
        if (!v || !c || !prefix) {
            efc_free(v);
            efc_free(c);
            efc_free(prefix);
            return efc_errf(EFC_ENOMEM, "share: %s", t->name);
        }
        int64_t o = 0;
        for (size_t j = 0; j < n; j++)
            if (w[j] != 0.0f)
                v[o++] = w[j];
        qsort(v, (size_t)nz, sizeof(*v), cmp_float);
        prefix[0] = 0.0;
        for (int64_t j = 0; j < nz; j++)
            prefix[j + 1] = prefix[j] + v[j];
        kmeans_sorted(v, nz, k, prefix, c);
        for (size_t j = 0; j < n; j++) { /* nearest centroid (c is sorted ascending) */
            if (w[j] == 0.0f)
                continue;
            int32_t a = 0, b = k - 1;
            while (a < b) {
                int32_t mid = (a + b) / 2;
                if (w[j] > 0.5f * (c[mid] + c[mid + 1]))
                    a = mid + 1;
                else
                    b = mid;
            }
            w[j] = c[a] != 0.0f ? c[a] : (w[j] > 0 ? FLT_MIN : -FLT_MIN); /* never a new zero */
        }
        efc_free(v);
        efc_free(c);
        efc_free(prefix);
        if (layers)
            (*layers)++;
    }
    return EFC_OK;
}
