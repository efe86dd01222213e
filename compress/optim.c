/* optim.c — SGD (momentum) and Adam with PyTorch semantics, and the learning-rate schedules.
 *
 * PyTorch torch.optim.SGD: g += wd * p; buf = g on the first step, else buf = mu * buf + g;
 * p -= lr * buf. torch.optim.Adam: g += wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). State is allocated once.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize")
#endif

#include <math.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "compress/grad.h"
#include "compress/train.h"

struct efc_optim_state {
    struct efc_tg *g;
    int kind;
    float momentum, wd;
    int64_t t;      /* steps taken */
    int32_t n;      /* parameters */
    float **m1;     /* SGD momentum buffer / Adam first moment, per parameter */
    float **m2;     /* Adam second moment */
    bool *started;  /* SGD: momentum buffer initialised */
};

enum efc_status efc_optim_new(struct efc_tg *g, int kind, float momentum, float weight_decay,
                              struct efc_optim_state **out)
{
    *out = NULL;
    struct efc_optim_state *s = efc_calloc(1, sizeof(*s));
    if (!s)
        return EFC_ENOMEM;
    s->g = g;
    s->kind = kind;
    s->momentum = momentum;
    s->wd = weight_decay;
    s->n = efc_tg_n_params(g);
    s->m1 = efc_calloc((size_t)s->n + 1, sizeof(*s->m1));
    s->m2 = efc_calloc((size_t)s->n + 1, sizeof(*s->m2));
    s->started = efc_calloc((size_t)s->n + 1, sizeof(*s->started));
    if (!s->m1 || !s->m2 || !s->started)
        goto nomem;
    for (int32_t i = 0; i < s->n; i++) {
        int32_t t;
        float *d, *gr;
        size_t cnt;
        efc_tg_param(g, i, &t, &d, &gr, &cnt);
        bool need_m1 = kind == EFC_OPTIM_ADAM || momentum != 0.0f;
        if (need_m1) {
            s->m1[i] = efc_calloc(cnt, sizeof(float));
            if (!s->m1[i])
                goto nomem;
        }
        if (kind == EFC_OPTIM_ADAM) {
            s->m2[i] = efc_calloc(cnt, sizeof(float));
            if (!s->m2[i])
                goto nomem;
        }
    }
    *out = s;
    return EFC_OK;
nomem:
    efc_optim_free(s);
    return EFC_ENOMEM;
}

void efc_optim_free(struct efc_optim_state *s)
{
    if (!s)
        return;
    for (int32_t i = 0; s->m1 && i < s->n; i++)
        efc_free(s->m1[i]);
    for (int32_t i = 0; s->m2 && i < s->n; i++)
        efc_free(s->m2[i]);
    efc_free(s->m1);
    efc_free(s->m2);
    efc_free(s->started);
    efc_free(s);
}

static void adam_update(float *p, const float *gr, float *m, float *v, size_t n, float wd,
                        float step, float c2, float eps)
{
    const float b1 = 0.9f, b2 = 0.999f;
    for (size_t k = 0; k < n; k++) {
        float gk = gr[k] + wd * p[k];
        float mk = b1 * m[k] + (1.0f - b1) * gk;
        float vk = b2 * v[k] + (1.0f - b2) * gk * gk;
        m[k] = mk;
        v[k] = vk;
        p[k] -= step * mk / (sqrtf(vk) * c2 + eps);
    }
}

void efc_optim_step(struct efc_optim_state *s, float lr)
{
    s->t++;
    /* bias corrections in double: 1 - 0.999^t loses digits in float for small t */
    double bc1 = 1.0 - pow(0.9, (double)s->t);
    double bc2 = 1.0 - pow(0.999, (double)s->t);
    float step = (float)(lr / bc1);
    float c2 = (float)(1.0 / sqrt(bc2));
    for (int32_t i = 0; i < s->n; i++) {
        int32_t t;
        float *p, *gr;
        size_t n;
        efc_tg_param(s->g, i, &t, &p, &gr, &n);
        if (!efc_tg_grad_valid(s->g, t))
            continue; /* PyTorch skips parameters without a gradient */
        if (s->kind == EFC_OPTIM_ADAM) {
            adam_update(p, gr, s->m1[i], s->m2[i], n, s->wd, step, c2, 1e-8f);
            continue;
        }
        float wd = s->wd, mu = s->momentum;
        if (mu == 0.0f) {
            for (size_t k = 0; k < n; k++)
                p[k] -= lr * (gr[k] + wd * p[k]);
            continue;
        }
        float *b = s->m1[i];
        if (!s->started[i]) {
            for (size_t k = 0; k < n; k++)
                b[k] = gr[k] + wd * p[k];
            s->started[i] = true;
        } else {
            for (size_t k = 0; k < n; k++)
                b[k] = mu * b[k] + (gr[k] + wd * p[k]);
        }
        for (size_t k = 0; k < n; k++)
            p[k] -= lr * b[k];
    }
}

float efc_sched_lr(int sched, float lr, int64_t step, int64_t total, int64_t per_epoch,
                   int32_t step_epochs, float step_gamma)
{
    if (sched == EFC_SCHED_COSINE) {
        if (total <= 0)
            return lr;
        /* CosineAnnealingLR(T_max = total steps, eta_min = 0), stepped after every batch */
        return (float)(0.5 * lr * (1.0 + cos(3.14159265358979323846 * (double)step /
                                             (double)total)));
    }
    if (sched == EFC_SCHED_STEP) {
        int64_t epoch = per_epoch > 0 ? step / per_epoch : 0;
        int32_t every = step_epochs > 0 ? step_epochs : 1;
        return (float)(lr * pow((double)step_gamma, (double)(epoch / every)));
    }
    return lr;
}
