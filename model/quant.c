/* quant.c — INT8 lowering (quant.h). Walks the compiled FP32 graph once, keeping for every
 * tensor its u8 and / or f32 form in the new model, and inserts Quantize / Dequantize only
 * where a consumer needs the other form. */
#include "model/quant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/efc_alloc.h"

struct lower {
    const struct efc_model *c;
    const float *scale;
    const int32_t *zp;
    struct efc_model *q;
    int32_t *u8;  /* per compiled tensor: its u8 tensor in q, or -1 */
    int32_t *f32; /* per compiled tensor: its f32 tensor in q, or -1 */
    struct efc_quant_report *rep;
    int per_tensor;
};

static enum efc_status set_qparams(struct efc_tensor *t, int32_t n, const float *s,
                                   const int32_t *zp)
{
    struct efc_qparams *qp = efc_calloc(1, sizeof(*qp));
    if (!qp)
        return efc_errf(EFC_ENOMEM, "quantize: out of memory");
    qp->n = n;
    qp->axis = 0;
    qp->scale = efc_malloc((size_t)n * sizeof(float));
    qp->zero_point = efc_malloc((size_t)n * sizeof(int32_t));
    if (!qp->scale || !qp->zero_point) {
        efc_free(qp->scale);
        efc_free(qp->zero_point);
        efc_free(qp);
        return efc_errf(EFC_ENOMEM, "quantize: out of memory");
    }
    memcpy(qp->scale, s, (size_t)n * sizeof(float));
    for (int32_t i = 0; i < n; i++)
        qp->zero_point[i] = zp ? zp[i] : 0;
    t->q = qp;
    return EFC_OK;
}

/* A new activation in q named after compiled tensor ct plus a suffix; a u8 one takes (s, z). */
static enum efc_status new_act(struct lower *L, int32_t ct, const char *suffix, enum efc_dtype dt,
                               float s, int32_t z, int32_t *out)
{
    char name[EFC_NAME_MAX];
    enum efc_status st;
    snprintf(name, sizeof(name), "%.*s%s", (int)(EFC_NAME_MAX - 1 - strlen(suffix)),
             L->c->tensors[ct].name, suffix);
    if ((st = efc_model_add_tensor(L->q, name, dt, 0, NULL, 0, out)))
        return st;
    if (dt == EFC_DTYPE_U8)
        return set_qparams(&L->q->tensors[*out], 1, &s, &z);
    return EFC_OK;
}

static enum efc_status add_node(struct lower *L, enum efc_op op, const char *name,
                                const int32_t *in, int32_t n_in, int32_t out,
                                const struct efc_node_attrs *a)
{
    return efc_model_add_node(L->q, op, name, in, n_in, out, a, NULL);
}

/* The u8 form of compiled tensor t (Quantize inserted on demand); -1 if t has no qparams. */
static enum efc_status get_u8(struct lower *L, int32_t t, int32_t *out)
{
    enum efc_status st;
    char name[EFC_NAME_MAX];
    if (L->u8[t] >= 0 || L->scale[t] <= 0.0f || L->f32[t] < 0) {
        *out = L->u8[t];
        return EFC_OK;
    }
    if ((st = new_act(L, t, ".q", EFC_DTYPE_U8, L->scale[t], L->zp[t], &L->u8[t])))
        return st;
    snprintf(name, sizeof(name), "quantize.%.*s", EFC_NAME_MAX - 10, L->c->tensors[t].name);
    st = add_node(L, EFC_OP_QUANTIZE, name, &L->f32[t], 1, L->u8[t], NULL);
    *out = L->u8[t];
    return st;
}

/* The f32 form of compiled tensor t (Dequantize inserted on demand). */
static enum efc_status get_f32(struct lower *L, int32_t t, int32_t *out)
{
    enum efc_status st;
    char name[EFC_NAME_MAX];
    if (L->f32[t] >= 0) {
        *out = L->f32[t];
        return EFC_OK;
    }
    if ((st = new_act(L, t, ".f", EFC_DTYPE_F32, 0, 0, &L->f32[t])))
        return st;
    snprintf(name, sizeof(name), "dequantize.%.*s", EFC_NAME_MAX - 12, L->c->tensors[t].name);
    st = add_node(L, EFC_OP_DEQUANTIZE, name, &L->u8[t], 1, L->f32[t], NULL);
    *out = L->f32[t];
    return st;
}

/* Copy an f32 parameter of the compiled model into q. */
static enum efc_status copy_param(struct lower *L, int32_t ct, int32_t *out)
{
    const struct efc_tensor *s = &L->c->tensors[ct];
    enum efc_status st =
        efc_model_add_tensor(L->q, s->name, EFC_DTYPE_F32, s->ndim, s->dims, EFC_TENSOR_PARAM, out);
    if (!st)
        memcpy(L->q->tensors[*out].data, s->data, efc_tensor_bytes(s));
    return st;
}

void efc_quant_weights(const float *w, int32_t n_ch, int32_t per, int32_t per_tensor, int8_t *q,
                       float *s)
{
    float all = 0.0f;
    for (int32_t c = 0; c < n_ch; c++) {
        float mx = 0.0f;
        for (int32_t k = 0; k < per; k++)
            mx = fmaxf(mx, fabsf(w[(size_t)c * per + k]));
        s[c] = mx > 0.0f ? mx / 127.0f : 1.0f;
        all = fmaxf(all, mx);
    }
    if (per_tensor)
        for (int32_t c = 0; c < n_ch; c++)
            s[c] = all > 0.0f ? all / 127.0f : 1.0f;
    for (int32_t c = 0; c < n_ch; c++)
        for (int32_t k = 0; k < per; k++) {
            float v = nearbyintf(w[(size_t)c * per + k] / s[c]);
            q[(size_t)c * per + k] = (int8_t)(v < -127.0f ? -127 : v > 127.0f ? 127 : v);
        }
}

/* Output qparams for a requantising layer whose largest multiplier input scale is m_max:
 * the requantiser needs s_x * s_w / s_y < 1, so a too narrow output range is widened around
 * the same real zero. */
static void output_qparams(struct lower *L, int32_t ct, double m_max, float *s, int32_t *z)
{
    *s = L->scale[ct];
    *z = L->zp[ct];
    if (m_max / *s < 0.999) /* the requantiser needs r < 1; keep a margin for rounding */
        return;
    float s2 = (float)(m_max * 1.01);
    long zz = lrint((double)*z * *s / s2);
    *z = (int32_t)(zz < 0 ? 0 : zz > 255 ? 255 : zz);
    *s = s2;
    L->rep->n_widened++;
}

static enum efc_status lower_gemm_layer(struct lower *L, const struct efc_node *n, int32_t xu8)
{
    const struct efc_model *c = L->c;
    const struct efc_tensor *w = &c->tensors[n->inputs[1]];
    int32_t oc = w->dims[0], per = (int32_t)(efc_tensor_numel(w) / (size_t)oc);
    int32_t wi = -1, bi = -1, yi, in[3];
    float s_x = L->q->tensors[xu8].q->scale[0], s_y, *sw = NULL;
    int32_t z_y, n_in = 2;
    double m_max = 0.0;
    enum efc_status st;

    sw = efc_malloc((size_t)oc * sizeof(float));
    if (!sw)
        return efc_errf(EFC_ENOMEM, "quantize: out of memory");
    if ((st = efc_model_add_tensor(L->q, w->name, EFC_DTYPE_I8, w->ndim, w->dims, EFC_TENSOR_PARAM,
                                   &wi)))
        goto out;
    efc_quant_weights(w->data, oc, per, L->per_tensor, L->q->tensors[wi].data, sw);
    if ((st = set_qparams(&L->q->tensors[wi], L->per_tensor ? 1 : oc, sw, NULL)))
        goto out;
    for (int32_t m = 0; m < oc; m++)
        m_max = fmax(m_max, (double)s_x * sw[m]);
    if (n->n_inputs > 2 && n->inputs[2] >= 0) {
        const struct efc_tensor *b = &c->tensors[n->inputs[2]];
        const float *bf = b->data;
        int32_t *bq;
        if ((st =
                 efc_model_add_tensor(L->q, b->name, EFC_DTYPE_I32, 1, &oc, EFC_TENSOR_PARAM, &bi)))
            goto out;
        bq = L->q->tensors[bi].data;
        for (int32_t m = 0; m < oc; m++) {
            double v = nearbyint((double)bf[m] / ((double)s_x * sw[m]));
            v = v < -2147483647.0 ? -2147483647.0 : v > 2147483647.0 ? 2147483647.0 : v;
            bq[m] = (int32_t)v;
        }
        n_in = 3;
    }
    output_qparams(L, n->output, m_max, &s_y, &z_y);
    if ((st = new_act(L, n->output, "", EFC_DTYPE_U8, s_y, z_y, &yi)))
        goto out;
    in[0] = xu8;
    in[1] = wi;
    in[2] = bi;
    if ((st = add_node(L, n->op, n->name, in, n_in, yi, &n->a)))
        goto out;
    L->u8[n->output] = yi;
out:
    efc_free(sw);
    return st;
}

static void note_fp32(struct lower *L, const struct efc_node *n)
{
    size_t len = strlen(L->rep->fp32_nodes);
    L->rep->n_fp32++;
    snprintf(L->rep->fp32_nodes + len, sizeof(L->rep->fp32_nodes) - len, "%s%s", len ? "," : "",
             n->name);
}

static enum efc_status lower_fp32(struct lower *L, const struct efc_node *n)
{
    int32_t in[EFC_NODE_MAX_INPUTS], yi;
    enum efc_status st;
    for (int32_t i = 0; i < n->n_inputs; i++) {
        int32_t t = n->inputs[i];
        if (t < 0)
            in[i] = -1;
        else if (L->c->tensors[t].flags & EFC_TENSOR_PARAM)
            st = copy_param(L, t, &in[i]);
        else
            st = get_f32(L, t, &in[i]);
        if (t >= 0 && st)
            return st;
    }
    if ((st = new_act(L, n->output, "", EFC_DTYPE_F32, 0, 0, &yi)) ||
        (st = add_node(L, n->op, n->name, in, n->n_inputs, yi, &n->a)))
        return st;
    L->f32[n->output] = yi;
    if (n->op != EFC_OP_FLATTEN && n->op != EFC_OP_RESHAPE)
        note_fp32(L, n);
    return EFC_OK;
}

static enum efc_status lower_node(struct lower *L, const struct efc_node *n)
{
    const struct efc_model *c = L->c;
    int32_t x = n->inputs[0], xu8 = -1, yi;
    enum efc_status st;
    int has_y = L->scale[n->output] > 0.0f;

    switch (n->op) {
    case EFC_OP_CONV2D: {
        int32_t ch = c->tensors[x].dims[0];
        if (n->a.groups != 1 && n->a.groups != ch)
            break; /* grouped (not depthwise): FP32 */
    }
        /* fall through */
    case EFC_OP_DENSE:
        if (!has_y)
            break;
        if ((st = get_u8(L, x, &xu8)))
            return st;
        if (xu8 < 0)
            break;
        L->rep->n_int8++;
        return lower_gemm_layer(L, n, xu8);
    case EFC_OP_MAXPOOL:
    case EFC_OP_AVGPOOL:
    case EFC_OP_GAVGPOOL:
    case EFC_OP_FLATTEN:
    case EFC_OP_RESHAPE:
        if (L->u8[x] < 0)
            break; /* stay in the domain the input is in */
        if ((st = new_act(L, n->output, "", EFC_DTYPE_U8, L->q->tensors[L->u8[x]].q->scale[0],
                          L->q->tensors[L->u8[x]].q->zero_point[0], &yi)) ||
            (st = add_node(L, n->op, n->name, &L->u8[x], 1, yi, &n->a)))
            return st;
        L->u8[n->output] = yi;
        if (n->op != EFC_OP_FLATTEN && n->op != EFC_OP_RESHAPE)
            L->rep->n_int8++;
        return EFC_OK;
    case EFC_OP_ADD: {
        int32_t a, b, in[2];
        float s_y;
        int32_t z_y;
        double s_max;
        if (!has_y)
            break;
        if ((st = get_u8(L, n->inputs[0], &a)) || (st = get_u8(L, n->inputs[1], &b)))
            return st;
        if (a < 0 || b < 0)
            break;
        /* qadd requantises from s_max / 2^14 (kernels/qops.h): keep that multiplier < 1 */
        s_max = fmax(L->q->tensors[a].q->scale[0], L->q->tensors[b].q->scale[0]);
        output_qparams(L, n->output, s_max / 16384.0, &s_y, &z_y);
        if ((st = new_act(L, n->output, "", EFC_DTYPE_U8, s_y, z_y, &yi)))
            return st;
        in[0] = a;
        in[1] = b;
        if ((st = add_node(L, n->op, n->name, in, 2, yi, &n->a)))
            return st;
        L->u8[n->output] = yi;
        L->rep->n_int8++;
        return EFC_OK;
    }
    default:
        break;
    }
    return lower_fp32(L, n);
}

enum efc_status efc_quant_lower(const struct efc_model *c, const float *scale, const int32_t *zp,
                                const struct efc_quant_opts *o, struct efc_model **out,
                                struct efc_quant_report *rep)
{
    struct lower L = {0};
    struct efc_quant_report dummy;
    const struct efc_tensor *in;
    enum efc_status st;
    int32_t yo;

    *out = NULL;
    L.rep = rep ? rep : &dummy;
    memset(L.rep, 0, sizeof(*L.rep));
    L.c = c;
    L.scale = scale;
    L.zp = zp;
    L.per_tensor = o && o->per_tensor_weights;
    for (int32_t t = 0; t < c->n_tensors; t++)
        if (c->tensors[t].sparse ||
            (c->tensors[t].flags & EFC_TENSOR_PARAM && c->tensors[t].dtype != EFC_DTYPE_F32))
            return efc_errf(EFC_EINVAL,
                            "quantize: tensor '%s' is not a dense f32 parameter "
                            "(the input must be a compiled FP32 model)",
                            c->tensors[t].name);
    L.u8 = efc_malloc((size_t)c->n_tensors * sizeof(int32_t));
    L.f32 = efc_malloc((size_t)c->n_tensors * sizeof(int32_t));
    if (!L.u8 || !L.f32) {
        st = efc_errf(EFC_ENOMEM, "quantize: out of memory");
        goto fail;
    }
    for (int32_t t = 0; t < c->n_tensors; t++)
        L.u8[t] = L.f32[t] = -1;
    if ((st = efc_model_new(&L.q)))
        goto fail;
    memcpy(L.q->name, c->name, sizeof(c->name));
    memcpy(L.q->arch, c->arch, sizeof(c->arch));
    L.q->norm = c->norm;
    if (c->meta_json && !(L.q->meta_json = efc_strdup(c->meta_json))) {
        st = efc_errf(EFC_ENOMEM, "quantize: out of memory");
        goto fail;
    }
    in = &c->tensors[c->input];
    if ((st = efc_model_add_tensor(L.q, in->name, EFC_DTYPE_F32, in->ndim, in->dims,
                                   EFC_TENSOR_INPUT, &L.f32[c->input])))
        goto fail;
    for (int32_t i = 0; i < c->n_nodes; i++)
        if ((st = lower_node(&L, &c->nodes[i])))
            goto fail;
    if ((st = get_f32(&L, c->output, &yo)))
        goto fail;
    L.q->output = yo;
    L.q->tensors[yo].flags |= EFC_TENSOR_OUTPUT;
    if ((st = efc_model_check(L.q)))
        goto fail;
    *out = L.q;
    L.q = NULL;
fail:
    efc_model_free(L.q);
    efc_free(L.u8);
    efc_free(L.f32);
    return st;
}
