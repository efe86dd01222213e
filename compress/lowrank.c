/* lowrank.c — low-rank factorisation of Dense layers by truncated SVD (lowrank.h). */
#include "compress/lowrank.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"
#include "kernels/blas.h"

/* The rank a layer gets: `rank` if > 0, else the smallest r whose leading singular values
 * hold `energy` of the sum of squares. */
static int32_t pick_rank(const float *s, int32_t k, int32_t rank, double energy)
{
    if (rank > 0)
        return rank;
    double total = 0.0, acc = 0.0;
    for (int32_t i = 0; i < k; i++)
        total += (double)s[i] * s[i];
    for (int32_t i = 0; i < k; i++) {
        acc += (double)s[i] * s[i];
        if (acc >= energy * total)
            return i + 1;
    }
    return k;
}

/* Replace Dense node i (x -> W[out, in] -> y) by x -> W1[r, in] -> mid[r] -> W2[out, r] -> y,
 * W1 = sqrt(S_r) V_r^T, W2 = U_r sqrt(S_r). W's tensor becomes W2 (so nothing is orphaned);
 * W1 and mid are new; the new node goes right before node i. */
static enum efc_status factorise(struct efc_model *m, int32_t i, int32_t r, const float *s,
                                 const float *u, const float *vt, int32_t k)
{
    struct efc_node nd = m->nodes[i];
    int32_t wt = nd.inputs[1], out = m->tensors[wt].dims[0], in = m->tensors[wt].dims[1];
    int32_t w1 = -1, mid = -1, j = -1;
    char name[EFC_NAME_MAX + 16];
    enum efc_status st;

    int32_t d1[2] = {r, in}, dm[1] = {r};
    snprintf(name, sizeof(name), "%.*s.lr_v", EFC_NAME_MAX - 8, m->tensors[wt].name);
    if ((st = efc_model_add_tensor(m, name, EFC_DTYPE_F32, 2, d1, EFC_TENSOR_PARAM, &w1)))
        return st;
    snprintf(name, sizeof(name), "%.*s.lr_mid", EFC_NAME_MAX - 8, nd.name);
    if ((st = efc_model_add_tensor(m, name, EFC_DTYPE_F32, 1, dm, 0, &mid)))
        return st;
    float *a = m->tensors[w1].data;
    for (int32_t q = 0; q < r; q++) {
        float sq = sqrtf(s[q]);
        for (int32_t c = 0; c < in; c++)
            a[(size_t)q * in + c] = sq * vt[(size_t)q * in + c];
    }
    float *b = efc_malloc((size_t)out * r * sizeof(float));
    if (!b)
        return efc_errf(EFC_ENOMEM, "lowrank: %s", nd.name);
    for (int32_t o = 0; o < out; o++)
        for (int32_t q = 0; q < r; q++)
            b[(size_t)o * r + q] = u[(size_t)o * k + q] * sqrtf(s[q]);
    struct efc_tensor *t = &m->tensors[wt];
    if (t->owns_data)
        efc_free(t->data);
    t->data = b;
    t->owns_data = 1;
    t->dims[1] = r;
    snprintf(t->name, sizeof(t->name), "%.*s.lr_u", EFC_NAME_MAX - 8, nd.name);
    /* the new node, then moved before node i */
    struct efc_node_attrs at = nd.a;
    at.act = EFC_ACT_NONE;
    int32_t ins[3] = {nd.inputs[0], w1, -1};
    snprintf(name, sizeof(name), "%.*s.lr", EFC_NAME_MAX - 4, nd.name);
    if ((st = efc_model_add_node(m, EFC_OP_DENSE, name, ins, 3, mid, &at, &j)))
        return st;
    struct efc_node moved = m->nodes[j];
    memmove(&m->nodes[i + 1], &m->nodes[i], (size_t)(j - i) * sizeof(*m->nodes));
    m->nodes[i] = moved;
    m->nodes[i + 1].inputs[0] = mid; /* the original node now reads mid through W2 */
    return EFC_OK;
}

int32_t efc_lowrank_max_rank(const struct efc_model *m)
{
    int32_t kmax = 0;
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *nd = &m->nodes[i];
        if (nd->op != EFC_OP_DENSE || nd->inputs[1] < 0 ||
            m->tensors[nd->inputs[1]].dtype != EFC_DTYPE_F32)
            continue;
        const struct efc_tensor *t = &m->tensors[nd->inputs[1]];
        int32_t k = t->dims[0] < t->dims[1] ? t->dims[0] : t->dims[1];
        if (k > kmax)
            kmax = k;
    }
    return kmax;
}

enum efc_status efc_lowrank(struct efc_model *m, int32_t rank, double energy,
                            struct efc_lowrank_report *rep)
{
    enum efc_status st = EFC_OK;
    memset(rep, 0, sizeof(*rep));
    if (!(rank > 0) && !(energy > 0.0 && energy <= 1.0))
        return efc_errf(EFC_EINVAL, "lowrank: needs rank >= 1 or energy in (0, 1]");
    int32_t kmax = efc_lowrank_max_rank(m);
    if (kmax == 0)
        return efc_errf(EFC_EINVAL, "lowrank: model %s has no f32 Dense layer", m->name);
    if (rank > kmax)
        return efc_errf(EFC_EINVAL, "lowrank: rank=%d is above every Dense layer's rank (the "
                                    "largest is %d)", rank, kmax);
    if ((st = efc_model_densify(m)) != EFC_OK)
        return st;
    for (int32_t i = 0; i < m->n_nodes && st == EFC_OK; i++) {
        const struct efc_node *nd = &m->nodes[i];
        if (nd->op != EFC_OP_DENSE || nd->inputs[1] < 0 ||
            m->tensors[nd->inputs[1]].dtype != EFC_DTYPE_F32)
            continue;
        int32_t wt = nd->inputs[1];
        int32_t out = m->tensors[wt].dims[0], in = m->tensors[wt].dims[1];
        int32_t k = out < in ? out : in;
        rep->dense_layers++;
        if (rank >= k) { /* already at most rank r: nothing to gain */
            efc_log(EFC_LOG_INFO, "lowrank", "%s: %d x %d kept (rank limit %d <= rank=%d)",
                    nd->name, out, in, k, rank);
            continue;
        }
        float *s = efc_malloc((size_t)k * sizeof(float));
        float *u = efc_malloc((size_t)out * k * sizeof(float));
        float *vt = efc_malloc((size_t)k * in * sizeof(float));
        if (!s || !u || !vt)
            st = efc_errf(EFC_ENOMEM, "lowrank: %s", nd->name);
        else
            st = efc_svd_f32(out, in, m->tensors[wt].data, s, u, vt);
        if (st == EFC_OK) {
            int32_t r = pick_rank(s, k, rank, energy);
            int64_t before = (int64_t)out * in, after = (int64_t)r * (in + out);
            char nm[EFC_NAME_MAX];
            snprintf(nm, sizeof(nm), "%s", nd->name);
            if (after < before) {
                st = factorise(m, i, r, s, u, vt, k);
                if (st == EFC_OK) {
                    rep->factorised++;
                    rep->params_before += before;
                    rep->params_after += after;
                    efc_log(EFC_LOG_INFO, "lowrank", "%s: %d x %d -> rank %d (%lld -> %lld "
                            "weights)", nm, out, in, r, (long long)before, (long long)after);
                    i++; /* skip the node just inserted before it */
                }
            } else {
                efc_log(EFC_LOG_INFO, "lowrank", "%s: %d x %d kept (rank %d would not save "
                        "weights)", nm, out, in, r);
            }
        }
        efc_free(s);
        efc_free(u);
        efc_free(vt);
    }
    if (st == EFC_OK)
        st = efc_model_check(m);
    return st;
}
