/* test_exec.c — the executor (BN folding, ReLU fusion, planned arena, kernels) against a
 * naive interpreter of the IR written here with double accumulation, on random models with
 * odd shapes; plus planning and allocation properties. Tolerance: max |diff| <= 1e-4 * (1 +
 * max |ref|) (float vs double accumulation over at most a few thousand terms). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "model/arch.h"
#include "model/exec.h"
#include "model/model.h"

/* ---- naive reference interpreter --------------------------------------------------------- */

static double act(double v, enum efc_act a)
{
    if (a == EFC_ACT_RELU)
        return v > 0 ? v : 0;
    if (a == EFC_ACT_RELU6)
        return v < 0 ? 0 : v > 6 ? 6 : v;
    return v;
}

/* Runs one sample; bufs[t] holds activation t (per-sample). */
static void ref_node(const struct efc_model *m, const struct efc_node *n, double **bufs)
{
    const struct efc_tensor *xt = &m->tensors[n->inputs[0]];
    const struct efc_tensor *yt = &m->tensors[n->output];
    const double *x = bufs[n->inputs[0]];
    double *y = bufs[n->output];
    size_t xn = efc_tensor_numel(xt), yn = efc_tensor_numel(yt);
    const float *w = n->n_inputs > 1 && n->inputs[1] >= 0 ? m->tensors[n->inputs[1]].data : NULL;
    const float *b = n->n_inputs > 2 && n->inputs[2] >= 0 ? m->tensors[n->inputs[2]].data : NULL;

    switch (n->op) {
    case EFC_OP_DENSE:
        for (size_t o = 0; o < yn; o++) {
            double s = b ? b[o] : 0;
            for (size_t i = 0; i < xn; i++)
                s += x[i] * w[o * xn + i];
            y[o] = act(s, n->a.act);
        }
        break;
    case EFC_OP_CONV2D: {
        int C = xt->dims[0], H = xt->dims[1], W = xt->dims[2];
        int OC = yt->dims[0], OH = yt->dims[1], OW = yt->dims[2], G = n->a.groups;
        int KH = n->a.kernel[0], KW = n->a.kernel[1], icg = C / G, ocg = OC / G;
        for (int o = 0; o < OC; o++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double s = b ? b[o] : 0;
                    int g = o / ocg;
                    for (int ci = 0; ci < icg; ci++)
                        for (int ky = 0; ky < KH; ky++)
                            for (int kx = 0; kx < KW; kx++) {
                                int iy = oy * n->a.stride[0] - n->a.pad[0] + ky;
                                int ix = ox * n->a.stride[1] - n->a.pad[1] + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                s += x[((size_t)(g * icg + ci) * H + iy) * W + ix] *
                                     w[(((size_t)o * icg + ci) * KH + ky) * KW + kx];
                            }
                    y[((size_t)o * OH + oy) * OW + ox] = act(s, n->a.act);
                }
        break;
    }
    case EFC_OP_MAXPOOL:
    case EFC_OP_AVGPOOL: {
        int C = xt->dims[0], H = xt->dims[1], W = xt->dims[2], OH = yt->dims[1], OW = yt->dims[2];
        for (int c = 0; c < C; c++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double mx = -INFINITY, s = 0;
                    int cnt = 0;
                    for (int ky = 0; ky < n->a.kernel[0]; ky++)
                        for (int kx = 0; kx < n->a.kernel[1]; kx++) {
                            int iy = oy * n->a.stride[0] - n->a.pad[0] + ky;
                            int ix = ox * n->a.stride[1] - n->a.pad[1] + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
                                cnt += n->a.count_include_pad;
                                continue;
                            }
                            double v = x[((size_t)c * H + iy) * W + ix];
                            mx = v > mx ? v : mx;
                            s += v;
                            cnt++;
                        }
                    y[((size_t)c * OH + oy) * OW + ox] = n->op == EFC_OP_MAXPOOL ? mx : s / cnt;
                }
        break;
    }
    case EFC_OP_GAVGPOOL: {
        size_t hw = xn / (size_t)xt->dims[0];
        for (int c = 0; c < xt->dims[0]; c++) {
            double s = 0;
            for (size_t i = 0; i < hw; i++)
                s += x[c * hw + i];
            y[c] = s / (double)hw;
        }
        break;
    }
    case EFC_OP_FLATTEN:
    case EFC_OP_RESHAPE:
        memcpy(y, x, xn * sizeof(double));
        break;
    case EFC_OP_RELU:
    case EFC_OP_RELU6:
        for (size_t i = 0; i < xn; i++)
            y[i] = act(x[i], n->op == EFC_OP_RELU ? EFC_ACT_RELU : EFC_ACT_RELU6);
        break;
    case EFC_OP_ADD:
        for (size_t i = 0; i < xn; i++)
            y[i] = act(x[i] + bufs[n->inputs[1]][i], n->a.act);
        break;
    case EFC_OP_BATCHNORM: {
        const float *g = m->tensors[n->inputs[1]].data, *be = m->tensors[n->inputs[2]].data;
        const float *mu = m->tensors[n->inputs[3]].data, *v = m->tensors[n->inputs[4]].data;
        size_t hw = xn / (size_t)xt->dims[0];
        for (int c = 0; c < xt->dims[0]; c++)
            for (size_t i = 0; i < hw; i++)
                y[c * hw + i] = (x[c * hw + i] - mu[c]) / sqrt(v[c] + n->a.eps) * g[c] + be[c];
        break;
    }
    case EFC_OP_SOFTMAX: {
        double mx = -INFINITY, s = 0;
        for (size_t i = 0; i < xn; i++)
            mx = x[i] > mx ? x[i] : mx;
        for (size_t i = 0; i < xn; i++)
            s += exp(x[i] - mx);
        for (size_t i = 0; i < xn; i++)
            y[i] = exp(x[i] - mx) / s;
        break;
    }
    default:
        fail_msg("op %d not in reference", n->op);
    }
}

/* Reference output for `batch` raw samples; returns max |ref| and fills out. */
static double ref_run(const struct efc_model *m, const float *raw, int batch, double *out)
{
    double **bufs = calloc((size_t)m->n_tensors, sizeof(double *));
    size_t in_n = efc_tensor_numel(&m->tensors[m->input]);
    size_t out_n = efc_tensor_numel(&m->tensors[m->output]);
    float *norm = malloc(in_n * sizeof(float));
    double mx = 0;
    for (int t = 0; t < m->n_tensors; t++)
        if (!(m->tensors[t].flags & EFC_TENSOR_PARAM))
            bufs[t] = calloc(efc_tensor_numel(&m->tensors[t]) + 1, sizeof(double));
    for (int s = 0; s < batch; s++) {
        efc_model_normalize(m, raw + (size_t)s * in_n, norm, 1);
        for (size_t i = 0; i < in_n; i++)
            bufs[m->input][i] = norm[i];
        for (int i = 0; i < m->n_nodes; i++)
            ref_node(m, &m->nodes[i], bufs);
        for (size_t i = 0; i < out_n; i++) {
            out[(size_t)s * out_n + i] = bufs[m->output][i];
            mx = fabs(bufs[m->output][i]) > mx ? fabs(bufs[m->output][i]) : mx;
        }
    }
    for (int t = 0; t < m->n_tensors; t++)
        free(bufs[t]);
    free(bufs);
    free(norm);
    return mx;
}

static void randomize_params(struct efc_model *m, struct efc_rng *r)
{
    for (int t = 0; t < m->n_tensors; t++) {
        struct efc_tensor *tt = &m->tensors[t];
        float *d = tt->data;
        if (!(tt->flags & EFC_TENSOR_PARAM))
            continue;
        for (size_t i = 0; i < efc_tensor_numel(tt); i++)
            d[i] = strstr(tt->name, "var") ? 0.5f + efc_rng_uniform(r)
                                           : efc_rng_uniform(r) - 0.5f;
    }
}

static void compare(struct efc_model *m, int batch, uint64_t seed)
{
    struct efc_exec *e = NULL;
    struct efc_exec_opts o = {.max_batch = batch};
    struct efc_rng r;
    size_t in_n = efc_tensor_numel(&m->tensors[m->input]);
    size_t out_n = efc_tensor_numel(&m->tensors[m->output]);
    float *raw = malloc(in_n * (size_t)batch * sizeof(float));
    double *ref = malloc(out_n * (size_t)batch * sizeof(double));
    const float *got;
    double mx, worst = 0;

    efc_rng_init(&r, seed);
    for (size_t i = 0; i < in_n * (size_t)batch; i++)
        raw[i] = (float)efc_rng_below(&r, 256);
    mx = ref_run(m, raw, batch, ref);
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    for (int b = batch; b >= 1; b -= batch > 2 ? batch - 1 : 1) { /* full and batch 1 */
        assert_int_equal(efc_exec_run(e, raw, b, &got), EFC_OK);
        for (size_t i = 0; i < out_n * (size_t)b; i++) {
            double d = fabs(got[i] - ref[i]);
            worst = d > worst ? d : worst;
        }
    }
    if (worst > 1e-4 * (1 + mx))
        fail_msg("model %s seed %llu: max diff %g (max |ref| %g)", m->name,
                 (unsigned long long)seed, worst, mx);
    efc_exec_free(e);
    free(raw);
    free(ref);
}

static void test_builtin_archs(void **state)
{
    (void)state;
    for (int i = 0; efc_arch_names[i]; i++) {
        struct efc_model *m;
        struct efc_rng r;
        assert_int_equal(efc_arch_build(efc_arch_names[i], 7, &m), EFC_OK);
        efc_rng_init(&r, 100 + (uint64_t)i);
        randomize_params(m, &r); /* non-trivial BN statistics so folding is exercised */
        compare(m, 3, 1000 + (uint64_t)i);
        efc_model_free(m);
    }
}

/* A model with odd shapes and every op: conv (stride 2, asymmetric pad, groups 3, depthwise),
 * BN not foldable (after an add), avgpool with and without pad counting, relu6, reshape,
 * softmax. */
static struct efc_model *odd_model(struct efc_rng *r, int C, int H, int W)
{
    struct efc_model *m;
    int32_t t[32], p[32], k = 0, q = 0;
    int32_t in_dims[3] = {C, H, W};
    struct efc_node_attrs a;
    assert_int_equal(efc_model_new(&m), EFC_OK);
    strcpy(m->name, "odd");
#define ACT(i) assert_int_equal(efc_model_add_tensor(m, "a", EFC_DTYPE_F32, 0, NULL, 0, &t[i]), EFC_OK)
#define PAR(nd, ...)                                                                           \
    do {                                                                                       \
        int32_t dd[] = {__VA_ARGS__};                                                          \
        assert_int_equal(efc_model_add_tensor(m, "p", EFC_DTYPE_F32, nd, dd, EFC_TENSOR_PARAM, \
                                              &p[q++]), EFC_OK);                               \
    } while (0)
    assert_int_equal(efc_model_add_tensor(m, "in", EFC_DTYPE_F32, 3, in_dims, EFC_TENSOR_INPUT,
                                          &t[k++]), EFC_OK);
    /* conv 3x3 stride 2, pads t1 l0 b2 r1, groups 1 -> 6 channels */
    memset(&a, 0, sizeof(a));
    a.kernel[0] = a.kernel[1] = 3;
    a.stride[0] = a.stride[1] = 2;
    a.pad[0] = 1; a.pad[1] = 0; a.pad[2] = 2; a.pad[3] = 1;
    a.groups = 1;
    PAR(4, 6, C, 3, 3);
    PAR(1, 6);
    ACT(k);
    {
        int32_t in[3] = {t[0], p[0], p[1]};
        assert_int_equal(efc_model_add_node(m, EFC_OP_CONV2D, "c1", in, 3, t[k], &a, NULL), EFC_OK);
    }
    k++;
    /* BN (foldable) + relu */
    memset(&a, 0, sizeof(a));
    a.eps = 1e-3f;
    a.momentum = 0.1f;
    PAR(1, 6); PAR(1, 6); PAR(1, 6); PAR(1, 6);
    ACT(k);
    {
        int32_t in[5] = {t[k - 1], p[2], p[3], p[4], p[5]};
        assert_int_equal(efc_model_add_node(m, EFC_OP_BATCHNORM, "bn1", in, 5, t[k], &a, NULL), EFC_OK);
    }
    k++;
    ACT(k);
    assert_int_equal(efc_model_add_node(m, EFC_OP_RELU, "r1", &t[k - 1], 1, t[k], NULL, NULL), EFC_OK);
    k++;
    int32_t skip = t[k - 1];
    /* grouped conv 3 groups 6 -> 6, 1x3 kernel, no bias */
    memset(&a, 0, sizeof(a));
    a.kernel[0] = 1; a.kernel[1] = 3;
    a.stride[0] = a.stride[1] = 1;
    a.pad[1] = a.pad[3] = 1;
    a.groups = 3;
    PAR(4, 6, 2, 1, 3);
    ACT(k);
    {
        int32_t in[2] = {t[k - 1], p[6]};
        assert_int_equal(efc_model_add_node(m, EFC_OP_CONV2D, "c2", in, 2, t[k], &a, NULL), EFC_OK);
    }
    k++;
    /* depthwise 3x3 with channel multiplier 2: 6 -> 12? keep 6 -> 6 for the add */
    memset(&a, 0, sizeof(a));
    a.kernel[0] = a.kernel[1] = 3;
    a.stride[0] = a.stride[1] = 1;
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
    a.groups = 6;
    PAR(4, 6, 1, 3, 3);
    PAR(1, 6);
    ACT(k);
    {
        int32_t in[3] = {t[k - 1], p[7], p[8]};
        assert_int_equal(efc_model_add_node(m, EFC_OP_CONV2D, "dw", in, 3, t[k], &a, NULL), EFC_OK);
    }
    k++;
    /* add skip, relu6 (fused into add), BN after add (not foldable) */
    ACT(k);
    {
        int32_t in[2] = {t[k - 1], skip};
        assert_int_equal(efc_model_add_node(m, EFC_OP_ADD, "add", in, 2, t[k], NULL, NULL), EFC_OK);
    }
    k++;
    ACT(k);
    assert_int_equal(efc_model_add_node(m, EFC_OP_RELU6, "r6", &t[k - 1], 1, t[k], NULL, NULL), EFC_OK);
    k++;
    memset(&a, 0, sizeof(a));
    a.eps = 1e-5f;
    PAR(1, 6); PAR(1, 6); PAR(1, 6); PAR(1, 6);
    ACT(k);
    {
        int32_t in[5] = {t[k - 1], p[9], p[10], p[11], p[12]};
        assert_int_equal(efc_model_add_node(m, EFC_OP_BATCHNORM, "bn2", in, 5, t[k], &a, NULL), EFC_OK);
    }
    k++;
    /* avgpool 3x3 stride 2 pad 1 excluding padding, then maxpool 2x2 stride 1 */
    memset(&a, 0, sizeof(a));
    a.kernel[0] = a.kernel[1] = 3;
    a.stride[0] = a.stride[1] = 2;
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
    ACT(k);
    assert_int_equal(efc_model_add_node(m, EFC_OP_AVGPOOL, "ap", &t[k - 1], 1, t[k], &a, NULL), EFC_OK);
    k++;
    memset(&a, 0, sizeof(a));
    a.kernel[0] = a.kernel[1] = 2;
    a.stride[0] = a.stride[1] = 1;
    ACT(k);
    assert_int_equal(efc_model_add_node(m, EFC_OP_MAXPOOL, "mp", &t[k - 1], 1, t[k], &a, NULL), EFC_OK);
    k++;
    /* reshape to (-1), dense 7 with relu, softmax */
    memset(&a, 0, sizeof(a));
    a.shape_ndim = 1;
    a.shape[0] = -1;
    ACT(k);
    assert_int_equal(efc_model_add_node(m, EFC_OP_RESHAPE, "rs", &t[k - 1], 1, t[k], &a, NULL), EFC_OK);
    k++;
    m->output = t[k - 1]; /* provisional, to infer the reshape's size */
    if (efc_model_check(m) != EFC_OK)
        fail_msg("%s", efc_err_detail());
    int32_t feat = m->tensors[t[k - 1]].dims[0];
    PAR(2, 7, feat);
    PAR(1, 7);
    ACT(k);
    {
        int32_t in[3] = {t[k - 1], p[13], p[14]};
        assert_int_equal(efc_model_add_node(m, EFC_OP_DENSE, "fc", in, 3, t[k], NULL, NULL), EFC_OK);
    }
    k++;
    ACT(k);
    assert_int_equal(efc_model_add_node(m, EFC_OP_SOFTMAX, "sm", &t[k - 1], 1, t[k], NULL, NULL), EFC_OK);
    m->output = t[k];
    m->norm.n = 1;
    m->norm.scale[0] = 1.0f / 255.0f;
    m->norm.mean[0] = 0.5f;
    m->norm.std[0] = 0.25f;
    assert_int_equal(efc_model_check(m), EFC_OK);
    randomize_params(m, r);
#undef ACT
#undef PAR
    return m;
}

static void test_odd_shapes(void **state)
{
    static const int shapes[][3] = {{1, 7, 9}, {3, 13, 11}, {2, 17, 10}, {4, 9, 9}, {1, 5, 31}};
    (void)state;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        struct efc_rng r;
        struct efc_model *m;
        efc_rng_init(&r, 500 + i);
        m = odd_model(&r, shapes[i][0], shapes[i][1], shapes[i][2]);
        compare(m, 1, 900 + i);
        compare(m, 5, 950 + i);
        efc_model_free(m);
    }
}

static void test_plan_and_no_alloc(void **state)
{
    struct efc_model *m;
    struct efc_exec *e;
    struct efc_exec_opts o = {.max_batch = 8};
    const float *out;
    float in[8 * 784] = {0};
    uint64_t before;
    (void)state;
    assert_int_equal(efc_arch_build("cnn-bn", 1, &m), EFC_OK);
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    /* BN folded and ReLU fused: conv, conv, pool, conv, pool, flatten, fc, fc */
    assert_int_equal(efc_exec_model(e)->n_nodes, 8);
    assert_int_equal(efc_exec_run(e, in, 8, &out), EFC_OK);
    before = efc_alloc_count();
    for (int i = 0; i < 5; i++)
        assert_int_equal(efc_exec_run(e, in, 1 + i, &out), EFC_OK);
    assert_int_equal(efc_alloc_count() - before, 0);
    assert_int_equal(efc_exec_run(e, in, 9, &out), EFC_EINVAL);
    efc_exec_free(e);
    efc_model_free(m);

    /* mlp is a chain: the peak is the largest input+output pair live at one step, i.e. the
     * input (784, shared with its Flatten view) and fc1's output (300), at batch 8; no
     * scratch (no conv). Everything else reuses those two buffers. */
    assert_int_equal(efc_arch_build("mlp", 1, &m), EFC_OK);
    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    assert_int_equal(efc_exec_peak_activation_bytes(e), 784 * 8 * 4 + 300 * 8 * 4);
    assert_int_equal(efc_exec_weight_bytes(e), (784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10) * 4);
    efc_exec_free(e);
    efc_model_free(m);
}

static void test_check_rejects(void **state)
{
    struct efc_model *m;
    (void)state;
    assert_int_equal(efc_arch_build("lenet5", 1, &m), EFC_OK);
    m->nodes[0].a.stride[0] = 0;
    assert_int_equal(efc_model_check(m), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "conv1"));
    m->nodes[0].a.stride[0] = 1;
    m->nodes[3].inputs[0] = m->nodes[5].output; /* use before definition */
    assert_int_equal(efc_model_check(m), EFC_EPROTO);
    efc_model_free(m);
    assert_int_equal(efc_arch_build("nosuch", 1, &m), EFC_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_archs),
        cmocka_unit_test(test_odd_shapes),
        cmocka_unit_test(test_plan_and_no_alloc),
        cmocka_unit_test(test_check_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
