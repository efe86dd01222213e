/* test_quant.c — INT8 lowering + INT8 executor against an independent integer interpreter
 * written here (NCHW, plain loops, the documented rules of docs/quantization.md), bit-exact on
 * the built-in architectures; FP32 fallbacks against the FP32 executor; .efm round trip. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_rng.h"
#include "kernels/kernels.h"
#include "kernels/qops.h"
#include "model/arch.h"
#include "model/efm.h"
#include "model/exec.h"
#include "model/quant.h"

/* ---- calibration stand-in: min-max over the observed batch ------------------------------- */

struct ranges {
    float *lo, *hi;
};

static void observe(void *ctx, const struct efc_model *m, int32_t t, const float *d,
                    int32_t batch)
{
    struct ranges *r = ctx;
    size_t n = efc_tensor_numel(&m->tensors[t]) * (size_t)batch;
    for (size_t i = 0; i < n; i++) {
        r->lo[t] = fminf(r->lo[t], d[i]);
        r->hi[t] = fmaxf(r->hi[t], d[i]);
    }
}

/* Lower m with min-max ranges observed on `calib` (n samples); returns the INT8 model. */
static struct efc_model *quantize_minmax(const struct efc_model *m, const float *calib, int n,
                                         int per_tensor, struct efc_quant_report *rep)
{
    struct efc_exec_opts o = {.max_batch = n};
    struct efc_exec *e;
    struct efc_model *q = NULL;
    const float *out;
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    const struct efc_model *c = efc_exec_model(e);
    struct ranges r = {calloc((size_t)c->n_tensors, sizeof(float)),
                       calloc((size_t)c->n_tensors, sizeof(float))};
    float *scale = calloc((size_t)c->n_tensors, sizeof(float));
    int32_t *zp = calloc((size_t)c->n_tensors, sizeof(int32_t));
    efc_exec_set_observer(e, observe, &r);
    assert_int_equal(efc_exec_run(e, calib, n, &out), EFC_OK);
    for (int32_t t = 0; t < c->n_tensors; t++) {
        float lo = fminf(r.lo[t], 0.0f), hi = fmaxf(r.hi[t], 0.0f);
        if (hi - lo <= 0.0f)
            continue; /* never observed (parameters, orphans) */
        scale[t] = (hi - lo) / 255.0f;
        zp[t] = (int32_t)lrintf(-lo / scale[t]);
    }
    struct efc_quant_opts qo = {.per_tensor_weights = per_tensor};
    enum efc_status st = efc_quant_lower(c, scale, zp, &qo, &q, rep);
    if (st)
        fail_msg("lower: %s", efc_err_detail());
    free(r.lo);
    free(r.hi);
    free(scale);
    free(zp);
    efc_exec_free(e);
    return q;
}

/* ---- independent integer interpreter (NCHW) ---------------------------------------------- */

static uint8_t requant(int64_t acc, double r, int32_t zp, int32_t lo, int32_t hi)
{
    int32_t mult, shift;
    assert_int_equal(efc_k_requant_make(r, &mult, &shift), EFC_OK);
    int64_t v = ((acc * mult) + ((int64_t)1 << (shift - 1))) >> shift; /* round half up */
    v += zp;
    return (uint8_t)(v < lo ? lo : v > hi ? hi : v);
}

static void clamp_of(const struct efc_node *n, const struct efc_tensor *y, int32_t *lo,
                     int32_t *hi)
{
    int32_t zp = y->q->zero_point[0];
    *lo = n->a.act == EFC_ACT_NONE ? 0 : zp;
    *hi = 255;
    if (n->a.act == EFC_ACT_RELU6) {
        long t = zp + lrintf(6.0f / y->q->scale[0]);
        *hi = t > 255 ? 255 : (int32_t)t;
    }
}

/* One sample through INT8 model q; bufs[t] = per-sample data as int64 (u8 values or f32 bits
 * via the f array). Only the ops the built-in architectures lower to are supported. */
static void int_ref(const struct efc_model *q, const float *input, float *logits)
{
    int64_t **u = calloc((size_t)q->n_tensors, sizeof(*u));
    float **f = calloc((size_t)q->n_tensors, sizeof(*f));
    for (int32_t t = 0; t < q->n_tensors; t++) {
        size_t n = efc_tensor_numel(&q->tensors[t]) + 1;
        if (!(q->tensors[t].flags & EFC_TENSOR_PARAM)) {
            u[t] = calloc(n, sizeof(int64_t));
            f[t] = calloc(n, sizeof(float));
        }
    }
    efc_model_normalize(q, input, f[q->input], 1);
    for (int32_t i = 0; i < q->n_nodes; i++) {
        const struct efc_node *n = &q->nodes[i];
        const struct efc_tensor *xt = &q->tensors[n->inputs[0]], *yt = &q->tensors[n->output];
        int64_t *x = u[n->inputs[0]], *y = u[n->output];
        size_t xn = efc_tensor_numel(xt), yn = efc_tensor_numel(yt);
        int32_t lo = 0, hi = 255;
        if (yt->dtype == EFC_DTYPE_U8)
            clamp_of(n, yt, &lo, &hi);
        switch (n->op) {
        case EFC_OP_QUANTIZE: {
            float inv = 1.0f / yt->q->scale[0];
            for (size_t k = 0; k < xn; k++) {
                float v = f[n->inputs[0]][k] * inv;
                v = v < -1024.0f ? -1024.0f : v > 1024.0f ? 1024.0f : v;
                long qv = lrintf(v) + yt->q->zero_point[0];
                y[k] = qv < 0 ? 0 : qv > 255 ? 255 : qv;
            }
            break;
        }
        case EFC_OP_DEQUANTIZE:
            for (size_t k = 0; k < xn; k++)
                f[n->output][k] = (float)(x[k] - xt->q->zero_point[0]) * xt->q->scale[0];
            break;
        case EFC_OP_FLATTEN:
        case EFC_OP_RESHAPE: /* a view in either domain */
            memcpy(y, x, xn * sizeof(int64_t));
            memcpy(f[n->output], f[n->inputs[0]], xn * sizeof(float));
            break;
        case EFC_OP_DENSE:
        case EFC_OP_CONV2D: {
            const struct efc_tensor *wt = &q->tensors[n->inputs[1]];
            const int8_t *w = wt->data;
            const int32_t *b = n->n_inputs > 2 && n->inputs[2] >= 0 ? q->tensors[n->inputs[2]].data : NULL;
            int32_t zx = xt->q->zero_point[0];
            int dense = n->op == EFC_OP_DENSE;
            int C = dense ? (int)xn : xt->dims[0], H = dense ? 1 : xt->dims[1], W = dense ? 1 : xt->dims[2];
            int OC = yt->dims[0], OH = dense ? 1 : yt->dims[1], OW = dense ? 1 : yt->dims[2];
            int KH = dense ? 1 : n->a.kernel[0], KW = dense ? 1 : n->a.kernel[1];
            int G = dense ? 1 : n->a.groups, icg = C / G, ocg = OC / G;
            for (int o = 0; o < OC; o++) {
                double r = (double)xt->q->scale[0] * wt->q->scale[wt->q->n == 1 ? 0 : o] / yt->q->scale[0];
                for (int oy = 0; oy < OH; oy++)
                    for (int ox = 0; ox < OW; ox++) {
                        int64_t acc = b ? b[o] : 0;
                        for (int ci = 0; ci < icg; ci++)
                            for (int ky = 0; ky < KH; ky++)
                                for (int kx = 0; kx < KW; kx++) {
                                    int iy = dense ? 0 : oy * n->a.stride[0] - n->a.pad[0] + ky;
                                    int ix = dense ? 0 : ox * n->a.stride[1] - n->a.pad[1] + kx;
                                    if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                        continue;
                                    int c = (o / ocg) * icg + ci;
                                    acc += (x[((size_t)c * H + iy) * W + ix] - zx) *
                                           w[(((size_t)o * icg + ci) * KH + ky) * KW + kx];
                                }
                        y[((size_t)o * OH + oy) * OW + ox] = requant(acc, r, yt->q->zero_point[0], lo, hi);
                    }
            }
            break;
        }
        case EFC_OP_MAXPOOL:
        case EFC_OP_AVGPOOL: {
            int C = xt->dims[0], H = xt->dims[1], W = xt->dims[2], OH = yt->dims[1], OW = yt->dims[2];
            for (int c = 0; c < C; c++)
                for (int oy = 0; oy < OH; oy++)
                    for (int ox = 0; ox < OW; ox++) {
                        int64_t mx = -1, s = 0, cnt = 0;
                        for (int ky = 0; ky < n->a.kernel[0]; ky++)
                            for (int kx = 0; kx < n->a.kernel[1]; kx++) {
                                int iy = oy * n->a.stride[0] - n->a.pad[0] + ky;
                                int ix = ox * n->a.stride[1] - n->a.pad[1] + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                int64_t v = x[((size_t)c * H + iy) * W + ix];
                                mx = v > mx ? v : mx;
                                s += v;
                                cnt++;
                            }
                        y[((size_t)c * OH + oy) * OW + ox] =
                            n->op == EFC_OP_MAXPOOL ? mx : (2 * s + cnt) / (2 * cnt);
                    }
            break;
        }
        case EFC_OP_GAVGPOOL: {
            int64_t hw = (int64_t)(xn / (size_t)xt->dims[0]);
            for (int c = 0; c < xt->dims[0]; c++) {
                int64_t s = 0;
                for (int64_t k = 0; k < hw; k++)
                    s += x[c * hw + k];
                y[c] = (2 * s + hw) / (2 * hw);
            }
            break;
        }
        case EFC_OP_ADD: {
            const struct efc_tensor *bt = &q->tensors[n->inputs[1]];
            struct efc_qadd_params p;
            assert_int_equal(efc_k_qadd_params_make(xt->q->scale[0], xt->q->zero_point[0],
                                                    bt->q->scale[0], bt->q->zero_point[0],
                                                    yt->q->scale[0], yt->q->zero_point[0], lo,
                                                    hi, &p), EFC_OK);
            for (size_t k = 0; k < yn; k++) {
                int64_t acc = (x[k] - p.zp_a) * p.m_a + (u[n->inputs[1]][k] - p.zp_b) * p.m_b;
                int64_t v = ((acc * p.mult) + ((int64_t)1 << (p.shift - 1))) >> p.shift;
                v += p.zp_y;
                y[k] = v < lo ? lo : v > hi ? hi : v;
            }
            break;
        }
        default:
            fail_msg("int_ref: op %s not supported by the test interpreter", efc_op_name(n->op));
        }
    }
    memcpy(logits, f[q->output], efc_tensor_numel(&q->tensors[q->output]) * sizeof(float));
    for (int32_t t = 0; t < q->n_tensors; t++) {
        free(u[t]);
        free(f[t]);
    }
    free(u);
    free(f);
}

static float *images(int n, uint64_t seed)
{
    struct efc_rng r;
    float *x = malloc((size_t)n * 784 * sizeof(float));
    efc_rng_init(&r, seed);
    for (int i = 0; i < n * 784; i++) /* blobs of ink on a dark background, like the data */
        x[i] = (i % 784) / 28 > 4 && (i % 784) / 28 < 24 ? (float)efc_rng_below(&r, 256) : 0.0f;
    return x;
}

static void check_bit_exact(const char *arch, int per_tensor)
{
    struct efc_model *m, *q;
    struct efc_quant_report rep;
    struct efc_exec *e;
    struct efc_exec_opts o = {.max_batch = 8};
    const float *out;
    float *x = images(8, 5), ref[10];
    assert_int_equal(efc_arch_build(arch, 3, &m), EFC_OK);
    q = quantize_minmax(m, x, 8, per_tensor, &rep);
    printf("%s (%s weights): %d INT8 nodes, %d FP32 (%s), %d widened\n", arch,
           per_tensor ? "per-tensor" : "per-channel", rep.n_int8, rep.n_fp32, rep.fp32_nodes,
           rep.n_widened);
    assert_int_equal(rep.n_fp32, 0); /* every layer of the built-in archs lowers */
    assert_int_equal(efc_exec_new(q, &o, &e), EFC_OK);
    assert_int_equal(efc_exec_run(e, x, 8, &out), EFC_OK);
    for (int i = 0; i < 8; i++) {
        int_ref(q, x + (size_t)i * 784, ref);
        if (memcmp(ref, out + i * 10, sizeof(ref)) != 0 && getenv("EFC_TEST_DEBUG")) {
            struct efc_exec *ef;
            const float *of;
            assert_int_equal(efc_exec_new(m, &o, &ef), EFC_OK);
            assert_int_equal(efc_exec_run(ef, x, 8, &of), EFC_OK);
            printf("fp32: %g %g %g\n", of[i * 10], of[i * 10 + 1], of[i * 10 + 2]);
            efc_exec_free(ef);
        }
        if (memcmp(ref, out + i * 10, sizeof(ref)) != 0)
            fail_msg("%s sample %d: executor %g %g %g ... reference %g %g %g ...", arch, i,
                     out[i * 10], out[i * 10 + 1], out[i * 10 + 2], ref[0], ref[1], ref[2]);
    }
    /* batch 1 gives the same bytes as inside the batch */
    assert_int_equal(efc_exec_run(e, x + 3 * 784, 1, &out), EFC_OK);
    int_ref(q, x + 3 * 784, ref);
    assert_memory_equal(ref, out, sizeof(ref));
    efc_exec_free(e);
    efc_model_free(q);
    efc_model_free(m);
    free(x);
}

static void test_bit_exact_archs(void **state)
{
    (void)state;
    printf("kernels isa %s\n", efc_isa_name(efc_kernels_isa()));
    for (int i = 0; efc_arch_names[i]; i++) {
        check_bit_exact(efc_arch_names[i], 0);
        check_bit_exact(efc_arch_names[i], 1);
    }
}

/* A residual block (conv, conv, Add + ReLU, global average pool, dense): the INT8 Add with
 * rescaling of two differently scaled inputs, bit-exact with the interpreter. */
static void test_residual_add(void **state)
{
    struct efc_model *m, *q;
    struct efc_quant_report rep;
    struct efc_exec *e;
    struct efc_exec_opts o = {.max_batch = 6};
    const float *out;
    float *x = images(6, 21), ref[10];
    int32_t in_dims[3] = {1, 28, 28}, t[7], p[6];
    int32_t wd1[4] = {8, 1, 3, 3}, wd2[4] = {8, 8, 3, 3}, b8 = 8, wd3[2] = {10, 8}, b10 = 10;
    struct efc_node_attrs a;
    struct efc_rng r;
    (void)state;
    assert_int_equal(efc_model_new(&m), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "in", EFC_DTYPE_F32, 3, in_dims, EFC_TENSOR_INPUT, &t[0]), EFC_OK);
    for (int i = 1; i < 7; i++)
        assert_int_equal(efc_model_add_tensor(m, "a", EFC_DTYPE_F32, 0, NULL, 0, &t[i]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "w1", EFC_DTYPE_F32, 4, wd1, EFC_TENSOR_PARAM, &p[0]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "b1", EFC_DTYPE_F32, 1, &b8, EFC_TENSOR_PARAM, &p[1]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "w2", EFC_DTYPE_F32, 4, wd2, EFC_TENSOR_PARAM, &p[2]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "b2", EFC_DTYPE_F32, 1, &b8, EFC_TENSOR_PARAM, &p[3]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "w3", EFC_DTYPE_F32, 2, wd3, EFC_TENSOR_PARAM, &p[4]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "b3", EFC_DTYPE_F32, 1, &b10, EFC_TENSOR_PARAM, &p[5]), EFC_OK);
    efc_rng_init(&r, 8);
    for (int k = 0; k < 6; k++) {
        float *d = m->tensors[p[k]].data;
        for (size_t i = 0; i < efc_tensor_numel(&m->tensors[p[k]]); i++)
            d[i] = (efc_rng_uniform(&r) - 0.5f) * (k == 2 ? 0.3f : 1.0f);
    }
    memset(&a, 0, sizeof(a));
    a.kernel[0] = a.kernel[1] = 3;
    a.stride[0] = a.stride[1] = 2;
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
    a.groups = 1;
    a.act = EFC_ACT_RELU;
    int32_t in1[3] = {t[0], p[0], p[1]};
    assert_int_equal(efc_model_add_node(m, EFC_OP_CONV2D, "c1", in1, 3, t[1], &a, NULL), EFC_OK);
    a.stride[0] = a.stride[1] = 1;
    a.act = EFC_ACT_NONE;
    int32_t in2[3] = {t[1], p[2], p[3]};
    assert_int_equal(efc_model_add_node(m, EFC_OP_CONV2D, "c2", in2, 3, t[2], &a, NULL), EFC_OK);
    memset(&a, 0, sizeof(a));
    a.act = EFC_ACT_RELU6;
    int32_t in3[2] = {t[2], t[1]};
    assert_int_equal(efc_model_add_node(m, EFC_OP_ADD, "add", in3, 2, t[3], &a, NULL), EFC_OK);
    assert_int_equal(efc_model_add_node(m, EFC_OP_GAVGPOOL, "gap", &t[3], 1, t[4], NULL, NULL), EFC_OK);
    int32_t in5[3] = {t[4], p[4], p[5]};
    assert_int_equal(efc_model_add_node(m, EFC_OP_DENSE, "fc", in5, 3, t[5], NULL, NULL), EFC_OK);
    m->output = t[5];
    m->norm.n = 1;
    m->norm.scale[0] = 1.0f / 255.0f;
    m->norm.std[0] = 1.0f;
    assert_int_equal(efc_model_check(m), EFC_OK);
    q = quantize_minmax(m, x, 6, 0, &rep);
    printf("residual model: %d INT8, %d FP32 (%s)\n", rep.n_int8, rep.n_fp32, rep.fp32_nodes);
    assert_int_equal(rep.n_fp32, 0);
    assert_int_equal(rep.n_int8, 5); /* c1, c2, add, gap, fc */
    int found_add = 0;
    for (int32_t i = 0; i < q->n_nodes; i++)
        found_add += q->nodes[i].op == EFC_OP_ADD && q->tensors[q->nodes[i].inputs[0]].dtype == EFC_DTYPE_U8;
    assert_int_equal(found_add, 1);
    assert_int_equal(efc_exec_new(q, &o, &e), EFC_OK);
    assert_int_equal(efc_exec_run(e, x, 6, &out), EFC_OK);
    for (int i = 0; i < 6; i++) {
        int_ref(q, x + (size_t)i * 784, ref);
        if (memcmp(ref, out + i * 10, sizeof(ref)) != 0)
            fail_msg("residual sample %d: executor %g %g, reference %g %g", i, out[i * 10],
                     out[i * 10 + 1], ref[0], ref[1]);
    }
    efc_exec_free(e);
    efc_model_free(q);
    efc_model_free(m);
    free(x);
}

/* INT8 close to FP32 on a trained-like model, .efm round trip bit-identical, memory smaller */
static void test_roundtrip_and_memory(void **state)
{
    struct efc_model *m, *q, *q2;
    struct efc_quant_report rep;
    struct efc_exec *ef, *eq, *eq2;
    struct efc_exec_opts o = {.max_batch = 16};
    const float *of, *oq, *oq2;
    float *x = images(16, 9);
    char path[] = "/tmp/efc-test-quant-XXXXXX";
    int fd = mkstemp(path);
    (void)state;
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(efc_arch_build("cnn-bn", 4, &m), EFC_OK);
    q = quantize_minmax(m, x, 16, 0, &rep);
    assert_int_equal(efc_efm_save(q, path), EFC_OK);
    assert_int_equal(efc_efm_load(path, &q2), EFC_OK);
    unlink(path);
    assert_int_equal(efc_exec_new(m, &o, &ef), EFC_OK);
    assert_int_equal(efc_exec_new(q, &o, &eq), EFC_OK);
    assert_int_equal(efc_exec_new(q2, &o, &eq2), EFC_OK);
    assert_int_equal(efc_exec_run(ef, x, 16, &of), EFC_OK);
    assert_int_equal(efc_exec_run(eq, x, 16, &oq), EFC_OK);
    assert_int_equal(efc_exec_run(eq2, x, 16, &oq2), EFC_OK);
    assert_memory_equal(oq, oq2, 16 * 10 * sizeof(float));
    double num = 0, den = 0;
    for (int i = 0; i < 160; i++) {
        num += (oq[i] - of[i]) * (oq[i] - of[i]);
        den += of[i] * of[i];
    }
    printf("cnn-bn INT8 vs FP32: relative error %.4f; weights %zu -> %zu bytes, "
           "activations %zu -> %zu bytes\n", sqrt(num / den), efc_exec_weight_bytes(ef),
           efc_exec_weight_bytes(eq), efc_exec_peak_activation_bytes(ef),
           efc_exec_peak_activation_bytes(eq));
    assert_true(sqrt(num / den) < 0.1); /* calibrated on these very inputs */
    /* the memory target is for the VNNI path (int8 packed weights); the AVX2 GEMM
     * packs int16 (vpmaddwd), so there weights only halve */
    if (efc_kernels_isa() >= EFC_ISA_AVX512VNNI && efc_kernels_isa() != EFC_ISA_NEON)
        assert_true(efc_exec_weight_bytes(eq) * 3 < efc_exec_weight_bytes(ef));
    else
        assert_true(efc_exec_weight_bytes(eq) * 1.9 < efc_exec_weight_bytes(ef));
    efc_exec_free(ef);
    efc_exec_free(eq);
    efc_exec_free(eq2);
    efc_model_free(q2);
    efc_model_free(q);
    efc_model_free(m);
    free(x);
}

/* A model with a grouped conv and a final softmax: those stay FP32 (reported), the rest is
 * INT8, and the output follows the FP32 model. */
static void test_fp32_fallback(void **state)
{
    struct efc_model *m, *q;
    struct efc_quant_report rep;
    struct efc_exec *ef, *eq;
    struct efc_exec_opts o = {.max_batch = 4};
    const float *of, *oq;
    float *x = images(4, 11);
    int32_t in_dims[3] = {1, 28, 28}, t[8], p[4];
    struct efc_node_attrs a;
    (void)state;
    assert_int_equal(efc_model_new(&m), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "in", EFC_DTYPE_F32, 3, in_dims, EFC_TENSOR_INPUT, &t[0]), EFC_OK);
    for (int i = 1; i < 6; i++)
        assert_int_equal(efc_model_add_tensor(m, "a", EFC_DTYPE_F32, 0, NULL, 0, &t[i]), EFC_OK);
    int32_t w1[4] = {6, 1, 3, 3}, w2[4] = {6, 2, 3, 3}, w3[2] = {10, 6 * 14 * 14}, b3 = 10;
    assert_int_equal(efc_model_add_tensor(m, "w1", EFC_DTYPE_F32, 4, w1, EFC_TENSOR_PARAM, &p[0]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "w2", EFC_DTYPE_F32, 4, w2, EFC_TENSOR_PARAM, &p[1]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "w3", EFC_DTYPE_F32, 2, w3, EFC_TENSOR_PARAM, &p[2]), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "b3", EFC_DTYPE_F32, 1, &b3, EFC_TENSOR_PARAM, &p[3]), EFC_OK);
    struct efc_rng r;
    efc_rng_init(&r, 2);
    for (int k = 0; k < 4; k++) {
        float *d = m->tensors[p[k]].data;
        for (size_t i = 0; i < efc_tensor_numel(&m->tensors[p[k]]); i++)
            d[i] = (efc_rng_uniform(&r) - 0.5f) * 0.5f;
    }
    memset(&a, 0, sizeof(a));
    a.kernel[0] = a.kernel[1] = 3;
    a.stride[0] = a.stride[1] = 2;
    a.pad[0] = a.pad[1] = 1;
    a.groups = 1;
    a.act = EFC_ACT_RELU;
    int32_t in1[2] = {t[0], p[0]};
    assert_int_equal(efc_model_add_node(m, EFC_OP_CONV2D, "conv", in1, 2, t[1], &a, NULL), EFC_OK);
    a.stride[0] = a.stride[1] = 1;
    a.pad[2] = a.pad[3] = 1;
    a.groups = 3; /* grouped, not depthwise: FP32 */
    int32_t in2[2] = {t[1], p[1]};
    assert_int_equal(efc_model_add_node(m, EFC_OP_CONV2D, "grouped", in2, 2, t[2], &a, NULL), EFC_OK);
    assert_int_equal(efc_model_add_node(m, EFC_OP_FLATTEN, "flat", &t[2], 1, t[3], NULL, NULL), EFC_OK);
    int32_t in3[3] = {t[3], p[2], p[3]};
    assert_int_equal(efc_model_add_node(m, EFC_OP_DENSE, "fc", in3, 3, t[4], NULL, NULL), EFC_OK);
    assert_int_equal(efc_model_add_node(m, EFC_OP_SOFTMAX, "softmax", &t[4], 1, t[5], NULL, NULL), EFC_OK);
    m->output = t[5];
    m->norm.n = 1;
    m->norm.scale[0] = 1.0f / 255.0f;
    m->norm.std[0] = 1.0f;
    assert_int_equal(efc_model_check(m), EFC_OK);
    q = quantize_minmax(m, x, 4, 0, &rep);
    printf("fallback model: %d INT8, %d FP32 (%s)\n", rep.n_int8, rep.n_fp32, rep.fp32_nodes);
    assert_int_equal(rep.n_fp32, 2);
    assert_non_null(strstr(rep.fp32_nodes, "grouped"));
    assert_non_null(strstr(rep.fp32_nodes, "softmax"));
    assert_int_equal(rep.n_int8, 2); /* conv, fc */
    assert_int_equal(efc_exec_new(m, &o, &ef), EFC_OK);
    assert_int_equal(efc_exec_new(q, &o, &eq), EFC_OK);
    assert_int_equal(efc_exec_run(ef, x, 4, &of), EFC_OK);
    assert_int_equal(efc_exec_run(eq, x, 4, &oq), EFC_OK);
    for (int i = 0; i < 40; i++)
        assert_true(fabsf(of[i] - oq[i]) < 0.05f); /* probabilities */
    efc_exec_free(ef);
    efc_exec_free(eq);
    efc_model_free(q);
    efc_model_free(m);
    free(x);
}

/* Malformed INT8 models are rejected by the checker, not run. */
static void test_check_rejects_int8(void **state)
{
    struct efc_model *m, *q;
    struct efc_quant_report rep;
    float *x = images(2, 1);
    (void)state;
    assert_int_equal(efc_arch_build("lenet5", 1, &m), EFC_OK);
    q = quantize_minmax(m, x, 2, 0, &rep);
    for (int32_t t = 0; t < q->n_tensors; t++)
        if (q->tensors[t].dtype == EFC_DTYPE_I8) {
            q->tensors[t].q->zero_point[0] = 3; /* weights must be symmetric */
            break;
        }
    assert_int_equal(efc_model_check(q), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "symmetric"));
    efc_model_free(q);
    q = quantize_minmax(m, x, 2, 0, &rep);
    for (int32_t t = 0; t < q->n_tensors; t++)
        if (q->tensors[t].dtype == EFC_DTYPE_U8) {
            q->tensors[t].q->scale[0] = -1.0f;
            break;
        }
    assert_int_equal(efc_model_check(q), EFC_EPROTO);
    efc_model_free(q);
    efc_model_free(m);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bit_exact_archs),
        cmocka_unit_test(test_roundtrip_and_memory),
        cmocka_unit_test(test_fp32_fallback),
        cmocka_unit_test(test_residual_add),
        cmocka_unit_test(test_check_rejects_int8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
