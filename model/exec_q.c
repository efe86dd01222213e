/* exec_q.c — INT8 steps of the executor (exec_int.h): weight packing and requantisation
 * parameters at load time, kernel calls at run time. Semantics: docs/quantization.md. */
#include "model/exec_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "kernels/kernels.h"
#include "kernels/qops.h"
#include "kernels/sparse.h"
#include "model/geom.h"

/* im2row rows per GEMM call: about 64 KiB of patches, so they stay in L2 with the weights. */
#define IM2ROW_BYTES 65536

enum qkind {
    Q_CONV,
    Q_CONV1X1,
    Q_DENSE,
    Q_DW,
    Q_MAXPOOL,
    Q_AVGPOOL,
    Q_GAP,
    Q_ADD,
    Q_QUANT,
    Q_DEQUANT
};

struct efc_qstep {
    enum qkind kind;
    const struct efc_kernel_table *k;
    struct efc_conv_geom cg;
    struct efc_pool_geom pg;
    struct efc_qgemm_w w;
    struct efc_spmm_w sw; /* the weights packed sparse when layer.sparse */
    int32_t gemm;         /* a GEMM-shaped layer (conv groups 1, dense): layer is set */
    struct efc_exec_layer layer;
    int32_t *mult, *shift;
    struct efc_requant rq;
    int8_t *dw_w;
    int32_t *dw_bias;
    int32_t zp_x;
    int32_t kdim, rows_chunk;
    size_t in_per, out_per; /* elements per sample */
    struct efc_qadd_params add;
    float scale; /* quantize: 1 / s; dequantize: s */
    int32_t zp;
    struct efc_hwc perm; /* quantize / dequantize: transpose NCHW <-> NHWC when c != 0 */
};

static const struct efc_qparams *qp(const struct efc_model *m, int32_t t)
{
    return m->tensors[t].q;
}

int efc_exec_q_is_int8(const struct efc_model *m, const struct efc_node *n)
{
    if (n->op == EFC_OP_FLATTEN || n->op == EFC_OP_RESHAPE)
        return 0; /* views: no step */
    return n->op == EFC_OP_QUANTIZE || n->op == EFC_OP_DEQUANTIZE ||
           m->tensors[n->inputs[0]].dtype == EFC_DTYPE_U8;
}

enum efc_status efc_exec_q_layouts(const struct efc_model *m, struct efc_hwc *hwc)
{
    memset(hwc, 0, (size_t)m->n_tensors * sizeof(*hwc));
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *n = &m->nodes[i];
        const struct efc_tensor *y = &m->tensors[n->output];
        if (y->dtype != EFC_DTYPE_U8)
            continue;
        if (n->op == EFC_OP_FLATTEN || n->op == EFC_OP_RESHAPE) {
            hwc[n->output] = hwc[n->inputs[0]];
            if (hwc[n->output].c && y->ndim != 1)
                return efc_errf(EFC_EUNSUPPORTED,
                                "node '%s': reshape of an NHWC u8 tensor "
                                "to a non-flat shape",
                                n->name);
        } else if (y->ndim == 3 && y->dims[0] > 1 && y->dims[1] * y->dims[2] > 1) {
            hwc[n->output].c = y->dims[0];
            hwc[n->output].h = y->dims[1];
            hwc[n->output].w = y->dims[2];
        }
    }
    return EFC_OK;
}

static void act_clamp(enum efc_act a, float s_y, int32_t zp_y, int32_t *lo, int32_t *hi)
{
    *lo = 0;
    *hi = 255;
    if (a == EFC_ACT_RELU || a == EFC_ACT_RELU6)
        *lo = zp_y;
    if (a == EFC_ACT_RELU6) {
        long t = zp_y + lrintf(6.0f / s_y);
        *hi = t > 255 ? 255 : (int32_t)t;
    }
}

/* mult / shift per output channel from s_x * s_w[m] / s_y (kernels.h rule). */
static enum efc_status make_requant(struct efc_qstep *s, const struct efc_model *m,
                                    const struct efc_node *n, int32_t oc)
{
    const struct efc_qparams *x = qp(m, n->inputs[0]), *w = qp(m, n->inputs[1]);
    const struct efc_qparams *y = qp(m, n->output);
    int32_t cnt = w->n == 1 ? 1 : oc;

    s->mult = efc_malloc((size_t)cnt * sizeof(int32_t));
    s->shift = efc_malloc((size_t)cnt * sizeof(int32_t));
    if (!s->mult || !s->shift)
        return efc_errf(EFC_ENOMEM, "exec: out of memory");
    for (int32_t i = 0; i < cnt; i++) {
        double r = (double)x->scale[0] * w->scale[i] / y->scale[0];
        if (efc_k_requant_make(r, &s->mult[i], &s->shift[i]) != EFC_OK)
            return efc_errf(EFC_EPROTO,
                            "node '%s': requantisation multiplier %g of channel %d "
                            "is not in [0, 1) (output range too narrow)",
                            n->name, r, i);
    }
    s->rq.mult = s->mult;
    s->rq.shift = s->shift;
    s->rq.per_tensor = cnt == 1;
    s->rq.zp_out = y->zero_point[0];
    act_clamp(n->a.act, y->scale[0], y->zero_point[0], &s->rq.lo, &s->rq.hi);
    return EFC_OK;
}

static const int32_t *bias_of(const struct efc_model *m, const struct efc_node *n)
{
    return n->n_inputs > 2 && n->inputs[2] >= 0 ? m->tensors[n->inputs[2]].data : NULL;
}

/* Pack the GEMM weights w[rows][k] (k in the order the kernel reads it) dense or sparse, as
 * efc_exec_sparse_decide says: both packers take the dense int8 weights, and the sparse INT8
 * kernel is bit-exact with the dense one (kernels/sparse.h), so the choice changes no output. */
static enum efc_status pack_gemm(struct efc_qstep *s, const struct efc_model *m,
                                 const struct efc_node *n, int32_t rows, int32_t k, const int8_t *w,
                                 const struct efc_exec_sparse_cfg *sp)
{
    struct efc_sp_fmt fmt;

    s->gemm = 1;
    snprintf(s->layer.name, sizeof(s->layer.name), "%s", n->name);
    s->layer.op = n->op;
    efc_exec_sparse_decide(sp, 1, rows, k, w, &s->layer);
    if (!s->layer.sparse)
        return s->k->qgemm->pack(rows, k, w, bias_of(m, n), s->zp_x, &s->w);
    efc_exec_layer_fmt(&s->layer, &fmt);
    return s->k->spmm_u8s8->pack(rows, k, w, bias_of(m, n), s->zp_x, &fmt, &s->sw);
}

/* y[i] = requant(W x[i]) over n rows: the contract shared by qgemm and spmm_u8s8 run. */
static void run_gemm(const struct efc_qstep *s, int32_t n, const uint8_t *x, size_t ldx, uint8_t *y,
                     size_t ldy)
{
    if (s->layer.sparse)
        s->k->spmm_u8s8->run(&s->sw, &s->rq, n, x, ldx, y, ldy);
    else
        s->k->qgemm->run(&s->w, &s->rq, n, x, ldx, y, ldy);
}

/* Conv weights OIHW -> O(kh kw C), the order im2row writes, then pack. */
static enum efc_status prep_conv(struct efc_qstep *s, const struct efc_model *m,
                                 const struct efc_node *n, const struct efc_exec_sparse_cfg *sp,
                                 size_t *scratch)
{
    const struct efc_tensor *wt = &m->tensors[n->inputs[1]];
    struct efc_conv_geom *g = &s->cg;
    int32_t K = g->c * g->kh * g->kw, P = g->oh * g->ow;
    const int8_t *w = wt->data;
    int8_t *wr = efc_malloc((size_t)g->oc * (size_t)K);
    enum efc_status st;

    if (!wr)
        return efc_errf(EFC_ENOMEM, "exec: out of memory");
    for (int32_t o = 0; o < g->oc; o++)
        for (int32_t c = 0; c < g->c; c++)
            for (int32_t ky = 0; ky < g->kh; ky++)
                for (int32_t kx = 0; kx < g->kw; kx++)
                    wr[(size_t)o * K + (size_t)(ky * g->kw + kx) * g->c + c] =
                        w[(((size_t)o * g->c + c) * g->kh + ky) * g->kw + kx];
    st = pack_gemm(s, m, n, g->oc, K, wr, sp);
    efc_free(wr);
    if (st)
        return st;
    s->kdim = K;
    if (g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 &&
        g->oh == g->h && g->ow == g->w) {
        s->kind = Q_CONV1X1;
        return EFC_OK;
    }
    s->kind = Q_CONV;
    s->rows_chunk = IM2ROW_BYTES / K;
    s->rows_chunk = s->rows_chunk < 1 ? 1 : s->rows_chunk > P ? P : s->rows_chunk;
    *scratch = (size_t)s->rows_chunk * (size_t)K;
    return EFC_OK;
}

static enum efc_status prep_dw(struct efc_qstep *s, const struct efc_model *m,
                               const struct efc_node *n)
{
    const struct efc_conv_geom *g = &s->cg;
    const int8_t *w = m->tensors[n->inputs[1]].data;
    const int32_t *b = bias_of(m, n);
    size_t taps = (size_t)g->kh * g->kw;
    s->kind = Q_DW;
    s->dw_w = efc_malloc(taps * (size_t)g->oc);
    s->dw_bias = efc_calloc((size_t)g->oc, sizeof(int32_t));
    if (!s->dw_w || !s->dw_bias)
        return efc_errf(EFC_ENOMEM, "exec: out of memory");
    for (int32_t o = 0; o < g->oc; o++) {
        for (size_t t = 0; t < taps; t++)
            s->dw_w[t * (size_t)g->oc + (size_t)o] = w[(size_t)o * taps + t];
        if (b)
            s->dw_bias[o] = b[o];
    }
    return EFC_OK;
}

/* Dense: a u8 input in NHWC order (a view of a C x H x W map) gets its weight columns
 * permuted from the trained (c, h, w) order to (h, w, c) once. */
static enum efc_status prep_dense(struct efc_qstep *s, const struct efc_model *m,
                                  const struct efc_hwc *hwc, const struct efc_node *n,
                                  const struct efc_exec_sparse_cfg *sp)
{
    const struct efc_tensor *wt = &m->tensors[n->inputs[1]];
    int32_t out = wt->dims[0], in = wt->dims[1];
    const struct efc_hwc *p = &hwc[n->inputs[0]];
    const int8_t *w = wt->data;
    int8_t *wr = NULL;
    enum efc_status st;

    s->kind = Q_DENSE;
    s->in_per = (size_t)in;
    s->out_per = (size_t)out;
    if (p->c) {
        int32_t hw = p->h * p->w;
        if (!(wr = efc_malloc((size_t)out * (size_t)in)))
            return efc_errf(EFC_ENOMEM, "exec: out of memory");
        for (int32_t o = 0; o < out; o++)
            for (int32_t c = 0; c < p->c; c++)
                for (int32_t i = 0; i < hw; i++)
                    wr[(size_t)o * in + (size_t)i * p->c + c] =
                        w[(size_t)o * in + (size_t)c * hw + i];
        w = wr;
    }
    st = pack_gemm(s, m, n, out, in, w, sp);
    efc_free(wr);
    return st;
}

enum efc_status efc_qstep_new(const struct efc_model *m, const struct efc_hwc *hwc,
                              const struct efc_node *n, int32_t max_batch,
                              const struct efc_exec_sparse_cfg *sp, struct efc_qstep **out,
                              size_t *scratch)
{
    struct efc_qstep *s = efc_calloc(1, sizeof(*s));
    const struct efc_tensor *x = &m->tensors[n->inputs[0]], *y = &m->tensors[n->output];
    enum efc_status st = EFC_OK;

    *scratch = 0;
    if (!s)
        return efc_errf(EFC_ENOMEM, "exec: out of memory");
    s->k = efc_kernels();
    s->in_per = efc_tensor_numel(x);
    s->out_per = efc_tensor_numel(y);
    if (x->dtype == EFC_DTYPE_U8)
        s->zp_x = x->q->zero_point[0];
    switch (n->op) {
    case EFC_OP_CONV2D:
        efc_node_conv_geom(m, n, max_batch, &s->cg);
        if ((st = make_requant(s, m, n, s->cg.oc)))
            break;
        if (s->cg.groups == 1)
            st = prep_conv(s, m, n, sp, scratch);
        else if (s->cg.groups == s->cg.c)
            st = prep_dw(s, m, n);
        else
            st = efc_errf(EFC_EUNSUPPORTED,
                          "node '%s': INT8 grouped conv (groups %d of %d "
                          "channels) is not supported; keep it FP32",
                          n->name, s->cg.groups, s->cg.c);
        break;
    case EFC_OP_DENSE:
        if (!(st = make_requant(s, m, n, m->tensors[n->inputs[1]].dims[0])))
            st = prep_dense(s, m, hwc, n, sp);
        break;
    case EFC_OP_MAXPOOL:
    case EFC_OP_AVGPOOL:
        s->kind = n->op == EFC_OP_MAXPOOL ? Q_MAXPOOL : Q_AVGPOOL;
        efc_node_pool_geom(m, n, max_batch, &s->pg);
        s->pg.zp = s->zp_x; /* padding cells count as the real value 0 */
        break;
    case EFC_OP_GAVGPOOL:
        s->kind = Q_GAP;
        break;
    case EFC_OP_ADD: {
        const struct efc_qparams *a = qp(m, n->inputs[0]), *b = qp(m, n->inputs[1]);
        const struct efc_qparams *q = qp(m, n->output);
        int32_t lo, hi;
        s->kind = Q_ADD;
        if (memcmp(&hwc[n->inputs[0]], &hwc[n->inputs[1]], sizeof(*hwc)))
            st = efc_errf(EFC_EUNSUPPORTED,
                          "node '%s': Add of u8 tensors in different "
                          "layouts",
                          n->name);
        act_clamp(n->a.act, q->scale[0], q->zero_point[0], &lo, &hi);
        if (!st)
            st =
                efc_k_qadd_params_make(a->scale[0], a->zero_point[0], b->scale[0], b->zero_point[0],
                                       q->scale[0], q->zero_point[0], lo, hi, &s->add);
        break;
    }
    case EFC_OP_QUANTIZE:
        s->kind = Q_QUANT;
        s->scale = 1.0f / y->q->scale[0];
        s->zp = y->q->zero_point[0];
        s->perm = hwc[n->output];
        *scratch = s->perm.c ? s->out_per : 0;
        break;
    case EFC_OP_DEQUANTIZE:
        s->kind = Q_DEQUANT;
        s->scale = x->q->scale[0];
        s->zp = x->q->zero_point[0];
        s->perm = hwc[n->inputs[0]];
        *scratch = s->perm.c ? s->in_per : 0;
        break;
    default:
        st = efc_errf(EFC_EUNSUPPORTED, "node '%s' (%s): no INT8 implementation", n->name,
                      efc_op_name(n->op));
    }
    if (st) {
        efc_qstep_free(s);
        return st;
    }
    *out = s;
    return EFC_OK;
}

void efc_qstep_free(struct efc_qstep *s)
{
    if (!s)
        return;
    efc_qgemm_w_fini(&s->w);
    efc_spmm_w_fini(&s->sw);
    efc_free(s->mult);
    efc_free(s->shift);
    efc_free(s->dw_w);
    efc_free(s->dw_bias);
    efc_free(s);
}

const struct efc_exec_layer *efc_qstep_layer(const struct efc_qstep *s)
{
    return s->gemm ? &s->layer : NULL;
}

size_t efc_qstep_weight_bytes(const struct efc_qstep *s)
{
    /* dense: packed W + folded bias [m]; sparse: packed W + folded bias [out] */
    int32_t rows = s->layer.sparse ? s->sw.out : s->w.m;
    size_t b = s->w.packed_bytes + s->sw.packed_bytes + (size_t)rows * sizeof(int32_t);
    if (s->mult)
        b += 2 * sizeof(int32_t) *
             (s->rq.per_tensor ? 1 : (size_t)(s->kind == Q_DW ? s->cg.oc : rows));
    if (s->dw_w)
        b += (size_t)s->cg.kh * s->cg.kw * s->cg.oc + (size_t)s->cg.oc * sizeof(int32_t);
    return b;
}

/* NCHW <-> NHWC byte transposes of one sample. */
static void chw_to_hwc(const uint8_t *x, const struct efc_hwc *p, uint8_t *y)
{
    size_t hw = (size_t)p->h * p->w;
    for (int32_t c = 0; c < p->c; c++)
        for (size_t i = 0; i < hw; i++)
            y[i * p->c + c] = x[c * hw + i];
}

static void hwc_to_chw(const uint8_t *x, const struct efc_hwc *p, uint8_t *y)
{
    size_t hw = (size_t)p->h * p->w;
    for (size_t i = 0; i < hw; i++)
        for (int32_t c = 0; c < p->c; c++)
            y[c * hw + i] = x[i * p->c + c];
}

void efc_qstep_run(const struct efc_qstep *s, int32_t batch, const void *xv, const void *x2,
                   void *yv, void *scratch)
{
    const struct efc_kernel_table *k = s->k;
    const uint8_t *x = xv;
    uint8_t *y = yv;

    switch (s->kind) {
    case Q_CONV: {
        const struct efc_conv_geom *g = &s->cg;
        int32_t P = g->oh * g->ow;
        for (int32_t i = 0; i < batch; i++) {
            const uint8_t *xi = x + (size_t)i * s->in_per;
            uint8_t *yi = y + (size_t)i * s->out_per;
            for (int32_t p0 = 0; p0 < P; p0 += s->rows_chunk) {
                int32_t np = P - p0 < s->rows_chunk ? P - p0 : s->rows_chunk;
                k->im2row_u8(g, xi, (uint8_t)s->zp_x, p0, np, scratch, (size_t)s->kdim);
                run_gemm(s, np, scratch, (size_t)s->kdim, yi + (size_t)p0 * g->oc, (size_t)g->oc);
            }
        }
        break;
    }
    case Q_CONV1X1:
        run_gemm(s, batch * s->cg.h * s->cg.w, x, (size_t)s->cg.c, y, (size_t)s->cg.oc);
        break;
    case Q_DENSE:
        run_gemm(s, batch, x, s->in_per, y, s->out_per);
        break;
    case Q_DW: {
        struct efc_conv_geom g = s->cg;
        g.n = batch;
        k->qdwconv(&g, x, s->zp_x, s->dw_w, s->dw_bias, &s->rq, y);
        break;
    }
    case Q_MAXPOOL:
    case Q_AVGPOOL: {
        struct efc_pool_geom g = s->pg;
        g.n = batch;
        (s->kind == Q_MAXPOOL ? k->qmaxpool : k->qavgpool)(&g, x, y);
        break;
    }
    case Q_GAP: {
        int32_t c = (int32_t)s->out_per;
        k->qgavgpool(batch, (int32_t)(s->in_per / (size_t)c), c, x, y);
        break;
    }
    case Q_ADD:
        k->qadd((size_t)batch * s->out_per, x, x2, &s->add, y);
        break;
    case Q_QUANT:
        if (!s->perm.c) {
            k->quantize((size_t)batch * s->out_per, xv, s->scale, s->zp, y);
            break;
        }
        for (int32_t i = 0; i < batch; i++) {
            k->quantize(s->out_per, (const float *)xv + (size_t)i * s->out_per, s->scale, s->zp,
                        scratch);
            chw_to_hwc(scratch, &s->perm, y + (size_t)i * s->out_per);
        }
        break;
    case Q_DEQUANT:
        if (!s->perm.c) {
            k->dequantize((size_t)batch * s->in_per, x, s->scale, s->zp, yv);
            break;
        }
        for (int32_t i = 0; i < batch; i++) {
            hwc_to_chw(x + (size_t)i * s->in_per, &s->perm, scratch);
            k->dequantize(s->in_per, scratch, s->scale, s->zp, (float *)yv + (size_t)i * s->in_per);
        }
        break;
    }
}
