/* test_gradcheck.c — finite-difference check of every backward pass in compress/grad.c.
 *
 * Each case builds a small random model (batch 3), runs the training-mode forward, takes the
 * loss L = sum_i r_i * out_i (r random, fixed seed) or the softmax cross-entropy, runs the
 * backward pass, and compares the analytic gradient of the input and of every trainable
 * parameter with central differences (L(x+h) - L(x-h)) / 2h, h = 1e-2 on the float graph,
 * the loss summed in double. Tolerance per element:
 *     |analytic - numeric| <= 2e-2 * |numeric| + 2e-3 * max|analytic over the tensor| + 1e-4
 * (the last term is the float rounding of the loss divided by 2h).
 * A perturbation that moves any ReLU / ReLU6 output across a clamp or changes a max-pool
 * argmax crosses a kink, where finite differences are meaningless: such elements are
 * detected exactly (the test hashes every clamp mask and argmax) and skipped; at most 20 %
 * may be skipped. Each tensor's largest gradient is also corrupted by 5 % and the check must
 * then report it, so the tolerance is tight enough to catch a wrong backward.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "compress/grad.h"
#include "model/model.h"

#define BATCH 3
#define MAX_CHECK 48 /* elements checked per tensor (random subset beyond that) */

struct gc_case {
    struct efc_model *m;
    struct efc_rng rng;
    bool use_ce;
    int32_t labels[BATCH];
    uint64_t sig; /* kink signature of the last forward */
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    return (h ^ v) * 1099511628211ULL;
}

/* Hash of every clamp mask (ReLU, ReLU6, fused act) and every max-pool argmax. */
static uint64_t kink_signature(const struct gc_case *c, const struct efc_tg *g)
{
    const struct efc_model *m = c->m;
    uint64_t h = 1469598103934665603ULL;
    for (int32_t j = 0; j < m->n_nodes; j++) {
        const struct efc_node *n = &m->nodes[j];
        const struct efc_tensor *yt = &m->tensors[n->output];
        if (n->op == EFC_OP_RELU || n->op == EFC_OP_RELU6 || n->a.act != EFC_ACT_NONE) {
            const float *y = efc_tg_value(g, n->output);
            size_t cnt = (size_t)BATCH * efc_tensor_numel(yt);
            for (size_t i = 0; i < cnt; i++)
                h = mix(h, (uint64_t)(y[i] <= 0.0f) | (uint64_t)(y[i] >= 6.0f) << 1);
        }
        if (n->op == EFC_OP_MAXPOOL) {
            const struct efc_tensor *xt = &m->tensors[n->inputs[0]];
            const float *x = efc_tg_value(g, n->inputs[0]);
            int32_t C = xt->dims[0], H = xt->dims[1], W = xt->dims[2];
            for (int32_t pl = 0; pl < BATCH * C; pl++)
                for (int32_t oy = 0; oy < yt->dims[1]; oy++)
                    for (int32_t ox = 0; ox < yt->dims[2]; ox++) {
                        int32_t best = -1;
                        for (int32_t ky = 0; ky < n->a.kernel[0]; ky++)
                            for (int32_t kx = 0; kx < n->a.kernel[1]; kx++) {
                                int32_t iy = oy * n->a.stride[0] - n->a.pad[0] + ky;
                                int32_t ix = ox * n->a.stride[1] - n->a.pad[1] + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                int32_t k = (pl * H + iy) * W + ix;
                                if (best < 0 || x[k] > x[best])
                                    best = k;
                            }
                        h = mix(h, (uint64_t)best);
                    }
        }
    }
    return h;
}

static int32_t add_act(struct efc_model *m, const char *name, int32_t ndim, const int32_t *dims,
                       uint32_t flags)
{
    int32_t idx = -1;
    assert_int_equal(efc_model_add_tensor(m, name, EFC_DTYPE_F32, ndim, dims, flags, &idx),
                     EFC_OK);
    return idx;
}

static int32_t add_param(struct gc_case *c, const char *name, int32_t ndim, const int32_t *dims,
                         float lo, float hi)
{
    int32_t idx = add_act(c->m, name, ndim, dims, EFC_TENSOR_PARAM);
    float *d = c->m->tensors[idx].data;
    size_t n = efc_tensor_numel(&c->m->tensors[idx]);
    for (size_t i = 0; i < n; i++)
        d[i] = lo + (hi - lo) * efc_rng_uniform(&c->rng);
    return idx;
}

static int32_t add_node(struct efc_model *m, enum efc_op op, const int32_t *in, int32_t n_in,
                        const struct efc_node_attrs *a)
{
    char name[32];
    snprintf(name, sizeof(name), "n%d", m->n_nodes);
    int32_t out = add_act(m, name, 0, NULL, 0);
    struct efc_node_attrs z = {0};
    assert_int_equal(efc_model_add_node(m, op, name, in, n_in, out, a ? a : &z, NULL), EFC_OK);
    return out;
}

static void case_init(struct gc_case *c, uint64_t seed, int32_t ndim, const int32_t *dims,
                      int32_t *x)
{
    memset(c, 0, sizeof(*c));
    efc_rng_init(&c->rng, seed);
    assert_int_equal(efc_model_new(&c->m), EFC_OK);
    *x = add_act(c->m, "x", ndim, dims, EFC_TENSOR_INPUT);
    c->m->input = *x;
}

static void case_finish(struct gc_case *c, int32_t out)
{
    c->m->output = out;
    c->m->tensors[out].flags |= EFC_TENSOR_OUTPUT;
}

/* Loss for the current parameters and input (forward in training mode). */
static double eval_loss(struct gc_case *c, struct efc_tg *g, const float *x0, const float *r)
{
    memcpy(efc_tg_input(g), x0, sizeof(float) * (size_t)BATCH * efc_tg_input_size(g));
    efc_tg_forward(g, BATCH, true);
    c->sig = kink_signature(c, g);
    if (c->use_ce)
        return efc_tg_loss(g, BATCH, c->labels, NULL);
    const struct efc_tensor *ot = &c->m->tensors[c->m->output];
    size_t n = (size_t)BATCH * efc_tensor_numel(ot);
    const float *y = efc_tg_value(g, c->m->output);
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)r[i] * y[i];
    return s;
}

static void analytic(struct gc_case *c, struct efc_tg *g, const float *x0, const float *r)
{
    eval_loss(c, g, x0, r);
    if (c->use_ce) {
        efc_tg_backward(g, BATCH, efc_tg_logits_tensor(g));
        return;
    }
    size_t n = (size_t)BATCH * efc_tensor_numel(&c->m->tensors[c->m->output]);
    memcpy(efc_tg_grad(g, c->m->output), r, n * sizeof(float));
    efc_tg_backward(g, BATCH, c->m->output);
}

static float abs_max(const float *v, size_t n, size_t *at)
{
    float mx = 0.0f;
    *at = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(v[i]) > mx) {
            mx = fabsf(v[i]);
            *at = i;
        }
    return mx;
}

/* Compare analytic ga[n] with central differences of the loss w.r.t. p[n] (the parameter
 * data or the input copy x0); gmax = the tensor's largest |analytic| (tolerance scale).
 * Returns the number of failing elements. */
static int compare(struct gc_case *c, struct efc_tg *g, float *p, size_t n, const float *ga,
                   float gmax, float *x0, const float *r, const char *what, int *skipped,
                   int *checked)
{
    const float h = 5e-3f;
    int fails = 0;
    size_t count = n < MAX_CHECK ? n : MAX_CHECK;
    eval_loss(c, g, x0, r);
    uint64_t sig0 = c->sig;
    for (size_t s = 0; s < count; s++) {
        size_t i = n <= MAX_CHECK ? s : efc_rng_below(&c->rng, (uint32_t)n);
        float v = p[i];
        p[i] = v + h;
        double lp = eval_loss(c, g, x0, r);
        bool kink = c->sig != sig0;
        p[i] = v - h;
        double lm = eval_loss(c, g, x0, r);
        kink = kink || c->sig != sig0;
        p[i] = v;
        double num = (lp - lm) / (2.0 * h);
        double tol = 2e-2 * fabs(num) + 2e-3 * gmax + 1e-4;
        (*checked)++;
        if (kink) {
            (*skipped)++;
            continue;
        }
        if (fabs(ga[i] - num) > tol) {
            if (fails < 3 && what[0] != '(')
                print_message("  %s[%zu]: analytic %.6g numeric %.6g\n", what, i, ga[i], num);
            fails++;
        }
    }
    return fails;
}

/* Check one tensor, then check that its largest gradient, corrupted by 5 % of itself, is
 * reported (unless that element sits on a kink). */
static int check_tensor(struct gc_case *c, struct efc_tg *g, float *p, size_t n, float *ga,
                        float *x0, const float *r, const char *what, int *skipped, int *checked)
{
    size_t at;
    float gmax = abs_max(ga, n, &at);
    int fails = compare(c, g, p, n, ga, gmax, x0, r, what, skipped, checked);
    if (gmax > 0.1f) {
        int s2 = 0, c2 = 0;
        float bad = ga[at] + 0.05f * gmax;
        int caught = compare(c, g, p + at, 1, &bad, gmax, x0, r, "(corrupted)", &s2, &c2);
        if (s2 == 0 && caught != 1) {
            print_message("  %s: a 5 %% error in element %zu was not detected\n", what, at);
            fails++;
        }
    }
    return fails;
}

/* Check the input and every trainable parameter. */
static void run_case(struct gc_case *c, const char *name, float xlo, float xhi)
{
    struct efc_tg *g = NULL;
    assert_int_equal(efc_tg_new(c->m, BATCH, true, &g), EFC_OK);
    int32_t insz = efc_tg_input_size(g);
    size_t nx = (size_t)BATCH * insz;
    size_t ny = (size_t)BATCH * efc_tensor_numel(&c->m->tensors[c->m->output]);
    float *x0 = efc_malloc(nx * sizeof(float));
    float *r = efc_malloc(ny * sizeof(float));
    float *ga = efc_malloc((nx > 65536 ? nx : 65536) * sizeof(float));
    assert_non_null(x0);
    assert_non_null(r);
    assert_non_null(ga);
    for (size_t i = 0; i < nx; i++)
        x0[i] = xlo + (xhi - xlo) * efc_rng_uniform(&c->rng);
    for (size_t i = 0; i < ny; i++)
        r[i] = 2.0f * efc_rng_uniform(&c->rng) - 1.0f;
    for (int i = 0; i < BATCH; i++)
        c->labels[i] = (int32_t)efc_rng_below(&c->rng, 3);

    int fails = 0, skipped = 0, checked = 0;
    analytic(c, g, x0, r);
    assert_true(efc_tg_grad_valid(g, c->m->input));
    memcpy(ga, efc_tg_grad(g, c->m->input), nx * sizeof(float));
    fails += check_tensor(c, g, x0, nx, ga, x0, r, "input", &skipped, &checked);
    int32_t np = efc_tg_n_params(g);
    assert_true(np > 0);
    for (int32_t k = 0; k < np; k++) {
        int32_t t;
        float *d, *gr;
        size_t n;
        analytic(c, g, x0, r);
        efc_tg_param(g, k, &t, &d, &gr, &n);
        assert_true(efc_tg_grad_valid(g, t));
        assert_true(n <= 65536);
        memcpy(ga, gr, n * sizeof(float));
        fails += check_tensor(c, g, d, n, ga, x0, r, c->m->tensors[t].name, &skipped, &checked);
    }
    print_message("%-26s checked %4d skipped %2d failed %d\n", name, checked, skipped, fails);
    assert_int_equal(fails, 0);
    assert_true(skipped * 5 <= checked);
    efc_free(x0);
    efc_free(r);
    efc_free(ga);
    efc_tg_free(g);
    efc_model_free(c->m);
}

/* ---------------------------------------------------------------------------------------- */

static void conv_case(uint64_t seed, const char *name, int32_t c_in, int32_t hw, int32_t oc,
                      int32_t kh, int32_t kw, int32_t sh, int32_t sw, const int32_t pad[4],
                      int32_t groups, bool bias, enum efc_act act)
{
    struct gc_case c;
    int32_t x, dims[3] = {c_in, hw, hw + 1};
    case_init(&c, seed, 3, dims, &x);
    int32_t wd[4] = {oc, c_in / groups, kh, kw};
    /* wider weights with a clamp: pre-activations spread out, fewer kinks within +-h */
    float ws = act != EFC_ACT_NONE ? 1.5f : 0.5f;
    int32_t in[3] = {x, add_param(&c, "w", 4, wd, -ws, ws), -1};
    if (bias)
        in[2] = add_param(&c, "b", 1, &oc, -0.5f, 0.5f);
    struct efc_node_attrs a = {0};
    a.kernel[0] = kh;
    a.kernel[1] = kw;
    a.stride[0] = sh;
    a.stride[1] = sw;
    memcpy(a.pad, pad, sizeof(a.pad));
    a.groups = groups;
    a.act = act;
    int32_t y = add_node(c.m, EFC_OP_CONV2D, in, bias ? 3 : 2, &a);
    case_finish(&c, y);
    run_case(&c, name, act != EFC_ACT_NONE ? -3.0f : -1.0f, act != EFC_ACT_NONE ? 3.0f : 1.0f);
}

static void test_conv(void **state)
{
    (void)state;
    static const int32_t p1[4] = {1, 1, 1, 1}, p0[4] = {0, 0, 0, 0}, pa[4] = {1, 2, 0, 1};
    conv_case(1, "conv g1 s1 p1", 3, 6, 4, 3, 3, 1, 1, p1, 1, true, EFC_ACT_NONE);
    conv_case(2, "conv g1 s2 p0", 2, 7, 3, 3, 3, 2, 2, p0, 1, false, EFC_ACT_NONE);
    conv_case(3, "conv kh3kw2 s(2,1) asym", 2, 6, 3, 3, 2, 2, 1, pa, 1, true, EFC_ACT_NONE);
    conv_case(4, "conv groups 2", 4, 5, 6, 3, 3, 1, 1, p1, 2, true, EFC_ACT_NONE);
    conv_case(5, "conv 1x1", 4, 5, 3, 1, 1, 1, 1, p0, 1, true, EFC_ACT_NONE);
    conv_case(6, "conv fused relu6", 2, 4, 3, 3, 3, 1, 1, p1, 1, true, EFC_ACT_RELU6);
}

static void test_depthwise(void **state)
{
    (void)state;
    static const int32_t p1[4] = {1, 1, 1, 1}, pa[4] = {0, 1, 1, 0};
    conv_case(11, "depthwise s1 p1", 4, 6, 4, 3, 3, 1, 1, p1, 4, true, EFC_ACT_NONE);
    conv_case(12, "depthwise s2 p1", 3, 7, 3, 3, 3, 2, 2, p1, 3, false, EFC_ACT_NONE);
    conv_case(13, "depthwise x2 s(1,2)", 2, 6, 4, 3, 3, 1, 2, pa, 2, true, EFC_ACT_RELU);
}

static void unary_case(uint64_t seed, const char *name, enum efc_op op,
                       const struct efc_node_attrs *a, float lo, float hi)
{
    struct gc_case c;
    int32_t x, dims[3] = {2, 6, 7};
    case_init(&c, seed, 3, dims, &x);
    /* a conv first, so the op's input gradient flows on into a parameter */
    int32_t wd[4] = {3, 2, 1, 1};
    int32_t in[2] = {x, add_param(&c, "w", 4, wd, -1.0f, 1.0f)};
    struct efc_node_attrs ca = {0};
    ca.kernel[0] = ca.kernel[1] = 1;
    ca.stride[0] = ca.stride[1] = 1;
    ca.groups = 1;
    int32_t h = add_node(c.m, EFC_OP_CONV2D, in, 2, &ca);
    int32_t y = add_node(c.m, op, &h, 1, a);
    case_finish(&c, y);
    run_case(&c, name, lo, hi);
}

static void test_activations(void **state)
{
    (void)state;
    unary_case(21, "relu", EFC_OP_RELU, NULL, -3.0f, 3.0f);
    unary_case(22, "relu6", EFC_OP_RELU6, NULL, -8.0f, 8.0f);
}

static void test_pools(void **state)
{
    (void)state;
    struct efc_node_attrs a = {0};
    a.kernel[0] = a.kernel[1] = 2;
    a.stride[0] = a.stride[1] = 2;
    unary_case(31, "maxpool 2x2", EFC_OP_MAXPOOL, &a, -1.0f, 1.0f);
    a.kernel[0] = a.kernel[1] = 3;
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
    unary_case(32, "maxpool 3x3 s2 p1", EFC_OP_MAXPOOL, &a, -1.0f, 1.0f);
    a.count_include_pad = 0;
    unary_case(33, "avgpool 3x3 excl pad", EFC_OP_AVGPOOL, &a, -1.0f, 1.0f);
    a.count_include_pad = 1;
    unary_case(34, "avgpool 3x3 incl pad", EFC_OP_AVGPOOL, &a, -1.0f, 1.0f);
    unary_case(35, "global avgpool", EFC_OP_GAVGPOOL, NULL, -1.0f, 1.0f);
}

static void test_batchnorm(void **state)
{
    (void)state;
    /* conv -> BN (training) -> output, and a fused ReLU variant */
    for (int v = 0; v < 2; v++) {
        struct gc_case c;
        int32_t x, dims[3] = {2, 5, 5};
        case_init(&c, 41 + (uint64_t)v, 3, dims, &x);
        int32_t wd[4] = {3, 2, 3, 3};
        int32_t in[3] = {x, add_param(&c, "w", 4, wd, -0.5f, 0.5f), -1};
        struct efc_node_attrs ca = {0};
        ca.kernel[0] = ca.kernel[1] = 3;
        ca.stride[0] = ca.stride[1] = 1;
        ca.pad[0] = ca.pad[1] = ca.pad[2] = ca.pad[3] = 1;
        ca.groups = 1;
        int32_t h = add_node(c.m, EFC_OP_CONV2D, in, 2, &ca);
        int32_t ch = 3;
        int32_t bi[5] = {h, add_param(&c, "gamma", 1, &ch, 0.5f, 1.5f),
                         add_param(&c, "beta", 1, &ch, -0.5f, 0.5f),
                         add_param(&c, "rmean", 1, &ch, 0.0f, 0.0f),
                         add_param(&c, "rvar", 1, &ch, 1.0f, 1.0f)};
        struct efc_node_attrs ba = {0};
        ba.eps = 1e-5f;
        ba.momentum = 0.1f;
        ba.act = v ? EFC_ACT_RELU : EFC_ACT_NONE;
        int32_t y = add_node(c.m, EFC_OP_BATCHNORM, bi, 5, &ba);
        case_finish(&c, y);
        run_case(&c, v ? "batchnorm2d + relu" : "batchnorm2d", -1.0f, 1.0f);
    }
    /* BatchNorm1d on dense features */
    struct gc_case c;
    int32_t x, dims[1] = {5};
    case_init(&c, 43, 1, dims, &x);
    int32_t wd[2] = {4, 5}, f = 4;
    int32_t in[3] = {x, add_param(&c, "w", 2, wd, -0.5f, 0.5f), add_param(&c, "b", 1, &f, -0.5f, 0.5f)};
    int32_t h = add_node(c.m, EFC_OP_DENSE, in, 3, NULL);
    int32_t bi[5] = {h, add_param(&c, "gamma", 1, &f, 0.5f, 1.5f),
                     add_param(&c, "beta", 1, &f, -0.5f, 0.5f),
                     add_param(&c, "rmean", 1, &f, 0.0f, 0.0f),
                     add_param(&c, "rvar", 1, &f, 1.0f, 1.0f)};
    struct efc_node_attrs ba = {0};
    ba.eps = 1e-5f;
    ba.momentum = 0.1f;
    int32_t y = add_node(c.m, EFC_OP_BATCHNORM, bi, 5, &ba);
    case_finish(&c, y);
    run_case(&c, "batchnorm1d", -1.0f, 1.0f);
}

static void test_dense_flatten_reshape(void **state)
{
    (void)state;
    struct gc_case c;
    int32_t x, dims[3] = {2, 3, 3};
    case_init(&c, 51, 3, dims, &x);
    int32_t f = add_node(c.m, EFC_OP_FLATTEN, &x, 1, NULL);
    int32_t wd[2] = {6, 18}, o = 6;
    int32_t in[3] = {f, add_param(&c, "w", 2, wd, -0.5f, 0.5f), add_param(&c, "b", 1, &o, -0.5f, 0.5f)};
    int32_t h = add_node(c.m, EFC_OP_DENSE, in, 3, NULL);
    struct efc_node_attrs ra = {0};
    ra.shape_ndim = 3;
    ra.shape[0] = 1;
    ra.shape[1] = 2;
    ra.shape[2] = -1;
    int32_t rs = add_node(c.m, EFC_OP_RESHAPE, &h, 1, &ra);
    int32_t wd2[4] = {2, 1, 1, 2};
    int32_t in2[2] = {rs, add_param(&c, "w2", 4, wd2, -1.0f, 1.0f)};
    struct efc_node_attrs ca = {0};
    ca.kernel[0] = 1;
    ca.kernel[1] = 2;
    ca.stride[0] = ca.stride[1] = 1;
    ca.groups = 1;
    int32_t y = add_node(c.m, EFC_OP_CONV2D, in2, 2, &ca);
    case_finish(&c, y);
    run_case(&c, "flatten dense reshape", -1.0f, 1.0f);
}

static void test_add(void **state)
{
    (void)state;
    /* y = conv_a(x) + relu(conv_a(x)) ... a tensor read twice, and two branches */
    struct gc_case c;
    int32_t x, dims[3] = {2, 4, 4};
    case_init(&c, 61, 3, dims, &x);
    int32_t wd[4] = {3, 2, 3, 3};
    struct efc_node_attrs ca = {0};
    ca.kernel[0] = ca.kernel[1] = 3;
    ca.stride[0] = ca.stride[1] = 1;
    ca.pad[0] = ca.pad[1] = ca.pad[2] = ca.pad[3] = 1;
    ca.groups = 1;
    int32_t ina[2] = {x, add_param(&c, "wa", 4, wd, -0.5f, 0.5f)};
    int32_t a = add_node(c.m, EFC_OP_CONV2D, ina, 2, &ca);
    int32_t inb[2] = {x, add_param(&c, "wb", 4, wd, -0.5f, 0.5f)};
    int32_t b = add_node(c.m, EFC_OP_CONV2D, inb, 2, &ca);
    int32_t ra = add_node(c.m, EFC_OP_RELU, &a, 1, NULL);
    int32_t s1[2] = {ra, b};
    int32_t t = add_node(c.m, EFC_OP_ADD, s1, 2, NULL);
    int32_t s2[2] = {t, a};
    struct efc_node_attrs aa = {0};
    aa.act = EFC_ACT_RELU;
    int32_t y = add_node(c.m, EFC_OP_ADD, s2, 2, &aa);
    case_finish(&c, y);
    run_case(&c, "add (shared, fused relu)", -1.0f, 1.0f);
}

static void softmax_model(struct gc_case *c, uint64_t seed, bool final_softmax, bool mid)
{
    int32_t x, dims[1] = {5};
    case_init(c, seed, 1, dims, &x);
    int32_t wd[2] = {3, 5}, o = 3;
    int32_t in[3] = {x, add_param(c, "w", 2, wd, -1.0f, 1.0f), add_param(c, "b", 1, &o, -0.5f, 0.5f)};
    int32_t y = add_node(c->m, EFC_OP_DENSE, in, 3, NULL);
    if (mid) {
        y = add_node(c->m, EFC_OP_SOFTMAX, &y, 1, NULL);
        int32_t wd2[2] = {3, 3};
        int32_t in2[3] = {y, add_param(c, "w2", 2, wd2, -2.0f, 2.0f),
                          add_param(c, "b2", 1, &o, -0.5f, 0.5f)};
        y = add_node(c->m, EFC_OP_DENSE, in2, 3, NULL);
    }
    if (final_softmax)
        y = add_node(c->m, EFC_OP_SOFTMAX, &y, 1, NULL);
    case_finish(c, y);
}

static void test_softmax_ce(void **state)
{
    (void)state;
    struct gc_case c;
    softmax_model(&c, 71, false, true);
    run_case(&c, "softmax (mid graph)", -1.0f, 1.0f);
    softmax_model(&c, 72, false, false);
    c.use_ce = true;
    run_case(&c, "dense + softmax CE", -2.0f, 2.0f);
    softmax_model(&c, 73, true, true);
    c.use_ce = true;
    run_case(&c, "softmax + CE (fused)", -2.0f, 2.0f);
}

/* The loss itself: CE of known logits and its gradient (softmax - onehot) / batch. */
static void test_ce_values(void **state)
{
    (void)state;
    struct gc_case c;
    softmax_model(&c, 74, false, false);
    struct efc_tg *g = NULL;
    assert_int_equal(efc_tg_new(c.m, BATCH, false, &g), EFC_OK);
    float *w = c.m->tensors[1].data, *b = c.m->tensors[2].data;
    memset(w, 0, 15 * sizeof(float));
    b[0] = 1.0f;
    b[1] = 2.0f;
    b[2] = 3.0f;
    memset(efc_tg_input(g), 0, BATCH * 5 * sizeof(float));
    efc_tg_forward(g, BATCH, true);
    int32_t labels[BATCH] = {0, 1, 2}, hits = -1;
    float loss = efc_tg_loss(g, BATCH, labels, &hits);
    double lse = log(exp(1.0) + exp(2.0) + exp(3.0));
    double want = ((lse - 1.0) + (lse - 2.0) + (lse - 3.0)) / 3.0;
    assert_true(fabs(loss - want) < 1e-5);
    assert_int_equal(hits, 1);
    const float *d = efc_tg_grad(g, efc_tg_logits_tensor(g));
    double p0 = exp(1.0 - lse);
    assert_true(fabs(d[0] - (p0 - 1.0) / 3.0) < 1e-6);
    assert_true(fabs(d[3] - p0 / 3.0) < 1e-6);
    efc_tg_free(g);
    efc_model_free(c.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv),        cmocka_unit_test(test_depthwise),
        cmocka_unit_test(test_activations), cmocka_unit_test(test_pools),
        cmocka_unit_test(test_batchnorm),   cmocka_unit_test(test_dense_flatten_reshape),
        cmocka_unit_test(test_add),         cmocka_unit_test(test_softmax_ce),
        cmocka_unit_test(test_ce_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
