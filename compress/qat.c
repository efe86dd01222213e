/* qat.c — weight fake quantisation with a straight-through estimator (qat.h). */
#include "compress/qat.h"

#include <string.h>

#include "common/efc_alloc.h"
#include "model/quant.h"

struct qat {
    int32_t n, per_tensor;
    int32_t *tensor;  /* weight tensor indices */
    float **master;   /* FP32 masters */
    float **fake;     /* the fake-quantised values written before the step */
    int8_t *q;        /* scratch */
    float *s;         /* scratch: scales */
    enum efc_status err;
};

static int is_weight(const struct efc_model *m, const struct efc_node *nd)
{
    return (nd->op == EFC_OP_DENSE || nd->op == EFC_OP_CONV2D) && nd->n_inputs >= 2 &&
           nd->inputs[1] >= 0 && m->tensors[nd->inputs[1]].dtype == EFC_DTYPE_F32 &&
           m->tensors[nd->inputs[1]].data;
}

/* dst = the INT8 grid value of src (one tensor). */
static void grid(const struct efc_tensor *t, const float *src, float *dst, int32_t per_tensor,
                 int8_t *q, float *s)
{
    int32_t n_ch = t->dims[0];
    int32_t per = (int32_t)(efc_tensor_numel(t) / (size_t)n_ch);
    efc_quant_weights(src, n_ch, per, per_tensor, q, s);
    for (int32_t c = 0; c < n_ch; c++)
        for (int32_t k = 0; k < per; k++)
            dst[(size_t)c * per + k] = (float)q[(size_t)c * per + k] * s[c];
}

static void before_forward(void *ctx, struct efc_model *m, int64_t step)
{
    struct qat *a = ctx;
    (void)step;
    for (int32_t i = 0; i < a->n; i++) {
        const struct efc_tensor *t = &m->tensors[a->tensor[i]];
        size_t n = efc_tensor_numel(t);
        grid(t, a->master[i], a->fake[i], a->per_tensor, a->q, a->s);
        memcpy(t->data, a->fake[i], n * sizeof(float));
    }
}

static void after_step(void *ctx, struct efc_model *m, int64_t step)
{
    struct qat *a = ctx;
    (void)step;
    for (int32_t i = 0; i < a->n; i++) { /* master += (W after the step) - (W before it) */
        const struct efc_tensor *t = &m->tensors[a->tensor[i]];
        const float *w = t->data;
        size_t n = efc_tensor_numel(t);
        for (size_t j = 0; j < n; j++)
            a->master[i][j] += w[j] - a->fake[i][j];
    }
}

static void qat_free(struct qat *a)
{
    for (int32_t i = 0; i < a->n && a->master; i++) {
        efc_free(a->master[i]);
        efc_free(a->fake[i]);
    }
    efc_free(a->master);
    efc_free(a->fake);
    efc_free(a->tensor);
    efc_free(a->q);
    efc_free(a->s);
}

static enum efc_status qat_init(struct qat *a, const struct efc_model *m, int32_t per_tensor)
{
    size_t biggest = 0, most_ch = 0;
    memset(a, 0, sizeof(*a));
    a->per_tensor = per_tensor;
    for (int32_t i = 0; i < m->n_nodes; i++)
        a->n += is_weight(m, &m->nodes[i]);
    if (a->n == 0)
        return efc_errf(EFC_EINVAL, "qat: model %s has no f32 Dense or Conv2d weights", m->name);
    a->tensor = efc_calloc((size_t)a->n, sizeof(*a->tensor));
    a->master = efc_calloc((size_t)a->n, sizeof(*a->master));
    a->fake = efc_calloc((size_t)a->n, sizeof(*a->fake));
    if (!a->tensor || !a->master || !a->fake)
        return efc_errf(EFC_ENOMEM, "qat");
    for (int32_t i = 0, k = 0; i < m->n_nodes; i++) {
        if (!is_weight(m, &m->nodes[i]))
            continue;
        const struct efc_tensor *t = &m->tensors[m->nodes[i].inputs[1]];
        size_t n = efc_tensor_numel(t);
        a->tensor[k] = m->nodes[i].inputs[1];
        a->master[k] = efc_malloc(n * sizeof(float));
        a->fake[k] = efc_malloc(n * sizeof(float));
        if (!a->master[k] || !a->fake[k])
            return efc_errf(EFC_ENOMEM, "qat");
        memcpy(a->master[k], t->data, n * sizeof(float));
        biggest = n > biggest ? n : biggest;
        most_ch = (size_t)t->dims[0] > most_ch ? (size_t)t->dims[0] : most_ch;
        k++;
    }
    a->q = efc_malloc(biggest);
    a->s = efc_malloc(most_ch * sizeof(float));
    return a->q && a->s ? EFC_OK : efc_errf(EFC_ENOMEM, "qat");
}

enum efc_status efc_qat_fake_quantise(struct efc_model *m, int32_t per_tensor)
{
    struct qat a;
    enum efc_status st;
    if ((st = efc_model_densify(m)) != EFC_OK)
        return st;
    if ((st = qat_init(&a, m, per_tensor)) == EFC_OK)
        before_forward(&a, m, 0);
    qat_free(&a);
    return st;
}

enum efc_status efc_qat(struct efc_model *m, const struct efc_dataset *train,
                        const struct efc_train_opts *o, int32_t per_tensor)
{
    struct qat a;
    struct efc_train_opts to = *o;
    struct efc_train_report rep;
    enum efc_status st;
    if ((st = efc_model_densify(m)) != EFC_OK)
        return st;
    if ((st = qat_init(&a, m, per_tensor)) != EFC_OK) {
        qat_free(&a);
        return st;
    }
    struct efc_train_hooks h = {.ctx = &a, .before_forward = before_forward,
                                .after_step = after_step};
    to.hooks = &h;
    st = efc_train(m, train, NULL, &to, &rep);
    for (int32_t i = 0; i < a.n; i++) /* the model keeps the FP32 masters */
        memcpy(m->tensors[a.tensor[i]].data, a.master[i],
               efc_tensor_numel(&m->tensors[a.tensor[i]]) * sizeof(float));
    qat_free(&a);
    return st;
}
