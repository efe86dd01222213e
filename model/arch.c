/* arch.c — the built-in architectures (layer lists in docs/architectures.md). */
#include "model/arch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/efc_rng.h"

const char *const efc_arch_names[] = {"mlp", "lenet5", "cnn-bn", "dwsep", NULL};

/* Builds a sequential model while tracking the current per-sample shape. */
struct builder {
    struct efc_model *m;
    struct efc_rng rng;
    int32_t cur;     /* current activation tensor */
    int32_t c, h, w; /* its shape (w == 0: flat features, h unused) */
    int32_t n_act;
    enum efc_status st;
};

static int32_t new_act(struct builder *b)
{
    char name[EFC_NAME_MAX];
    int32_t idx = -1;
    if (b->st)
        return -1;
    snprintf(name, sizeof(name), "t%d", ++b->n_act);
    b->st = efc_model_add_tensor(b->m, name, EFC_DTYPE_F32, 0, NULL, 0, &idx);
    return idx;
}

/* A parameter filled uniform(-bound, bound), or with `fill` when bound == 0. */
static int32_t param(struct builder *b, const char *layer, const char *what, int32_t ndim,
                     const int32_t *dims, float bound, float fill)
{
    char name[EFC_NAME_MAX];
    int32_t idx = -1;
    float *d;
    size_t n;
    if (b->st)
        return -1;
    snprintf(name, sizeof(name), "%.40s.%.20s", layer, what); /* both short: fits */
    b->st = efc_model_add_tensor(b->m, name, EFC_DTYPE_F32, ndim, dims, EFC_TENSOR_PARAM, &idx);
    if (b->st)
        return -1;
    d = b->m->tensors[idx].data;
    n = efc_tensor_numel(&b->m->tensors[idx]);
    for (size_t i = 0; i < n; i++)
        d[i] = bound > 0.0f ? (2.0f * efc_rng_uniform(&b->rng) - 1.0f) * bound : fill;
    return idx;
}

static void node(struct builder *b, enum efc_op op, const char *name, const int32_t *in,
                 int32_t n_in, const struct efc_node_attrs *a)
{
    int32_t out = new_act(b);
    if (b->st)
        return;
    b->st = efc_model_add_node(b->m, op, name, in, n_in, out, a, NULL);
    b->cur = out;
}

static void conv(struct builder *b, const char *name, int32_t oc, int32_t k, int32_t stride,
                 int32_t pad, int32_t groups, int has_bias)
{
    struct efc_node_attrs a = {0};
    int32_t icg = b->c / groups;
    int32_t wd[4] = {oc, icg, k, k};
    float bound = 1.0f / sqrtf((float)(icg * k * k)); /* PyTorch default (kaiming a=sqrt 5) */
    int32_t in[3] = {b->cur, param(b, name, "weight", 4, wd, bound, 0.0f), -1};
    if (has_bias)
        in[2] = param(b, name, "bias", 1, &oc, bound, 0.0f);
    a.kernel[0] = a.kernel[1] = k;
    a.stride[0] = a.stride[1] = stride;
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = pad;
    a.groups = groups;
    node(b, EFC_OP_CONV2D, name, in, has_bias ? 3 : 2, &a);
    b->c = oc;
    b->h = (b->h + 2 * pad - k) / stride + 1;
    b->w = (b->w + 2 * pad - k) / stride + 1;
}

static void bn(struct builder *b, const char *name)
{
    struct efc_node_attrs a = {0};
    int32_t in[5];
    in[0] = b->cur;
    in[1] = param(b, name, "weight", 1, &b->c, 0.0f, 1.0f);
    in[2] = param(b, name, "bias", 1, &b->c, 0.0f, 0.0f);
    in[3] = param(b, name, "running_mean", 1, &b->c, 0.0f, 0.0f);
    in[4] = param(b, name, "running_var", 1, &b->c, 0.0f, 1.0f);
    a.eps = 1e-5f;
    a.momentum = 0.1f;
    node(b, EFC_OP_BATCHNORM, name, in, 5, &a);
}

static void unary(struct builder *b, enum efc_op op, const char *name)
{
    node(b, op, name, &b->cur, 1, NULL);
}

static void maxpool(struct builder *b, const char *name, int32_t k)
{
    struct efc_node_attrs a = {0};
    a.kernel[0] = a.kernel[1] = k;
    a.stride[0] = a.stride[1] = k;
    node(b, EFC_OP_MAXPOOL, name, &b->cur, 1, &a);
    b->h /= k;
    b->w /= k;
}

static void flatten(struct builder *b, const char *name)
{
    unary(b, EFC_OP_FLATTEN, name);
    b->c = b->c * (b->w ? b->h * b->w : 1);
    b->h = b->w = 0;
}

static void gap(struct builder *b, const char *name)
{
    unary(b, EFC_OP_GAVGPOOL, name);
    b->h = b->w = 0;
}

static void dense(struct builder *b, const char *name, int32_t out)
{
    int32_t wd[2] = {out, b->c};
    float bound = 1.0f / sqrtf((float)b->c);
    int32_t in[3] = {b->cur, param(b, name, "weight", 2, wd, bound, 0.0f),
                     param(b, name, "bias", 1, &out, bound, 0.0f)};
    node(b, EFC_OP_DENSE, name, in, 3, NULL);
    b->c = out;
}

/* conv (no bias) + BN + ReLU, the unit of cnn-bn and dwsep. */
static void conv_bn_relu(struct builder *b, const char *name, int32_t oc, int32_t k, int32_t stride,
                         int32_t groups)
{
    char n1[EFC_NAME_MAX], n2[EFC_NAME_MAX];
    snprintf(n1, sizeof(n1), "%s.bn", name);
    snprintf(n2, sizeof(n2), "%s.relu", name);
    conv(b, name, oc, k, stride, k / 2, groups, 0);
    bn(b, n1);
    unary(b, EFC_OP_RELU, n2);
}

static void build_mlp(struct builder *b)
{
    flatten(b, "flatten");
    dense(b, "fc1", 300);
    unary(b, EFC_OP_RELU, "relu1");
    dense(b, "fc2", 100);
    unary(b, EFC_OP_RELU, "relu2");
    dense(b, "fc3", 10);
}

static void build_lenet5(struct builder *b)
{
    conv(b, "conv1", 6, 5, 1, 2, 1, 1);
    unary(b, EFC_OP_RELU, "relu1");
    maxpool(b, "pool1", 2);
    conv(b, "conv2", 16, 5, 1, 0, 1, 1);
    unary(b, EFC_OP_RELU, "relu2");
    maxpool(b, "pool2", 2);
    flatten(b, "flatten");
    dense(b, "fc1", 120);
    unary(b, EFC_OP_RELU, "relu3");
    dense(b, "fc2", 84);
    unary(b, EFC_OP_RELU, "relu4");
    dense(b, "fc3", 10);
}

static void build_cnn_bn(struct builder *b)
{
    conv_bn_relu(b, "conv1", 32, 3, 1, 1);
    conv_bn_relu(b, "conv2", 32, 3, 1, 1);
    maxpool(b, "pool1", 2);
    conv_bn_relu(b, "conv3", 64, 3, 1, 1);
    maxpool(b, "pool2", 2);
    flatten(b, "flatten");
    dense(b, "fc1", 128);
    unary(b, EFC_OP_RELU, "relu4");
    dense(b, "fc2", 10);
}

static void build_dwsep(struct builder *b)
{
    conv_bn_relu(b, "conv1", 16, 3, 1, 1);
    conv_bn_relu(b, "dw1", 16, 3, 2, 16);
    conv_bn_relu(b, "pw1", 32, 1, 1, 1);
    conv_bn_relu(b, "dw2", 32, 3, 2, 32);
    conv_bn_relu(b, "pw2", 64, 1, 1, 1);
    conv_bn_relu(b, "dw3", 64, 3, 1, 64);
    conv_bn_relu(b, "pw3", 64, 1, 1, 1);
    gap(b, "gap");
    dense(b, "fc", 10);
}

enum efc_status efc_arch_build(const char *name, uint64_t seed, struct efc_model **out)
{
    static const struct {
        const char *name;
        void (*build)(struct builder *);
    } archs[] = {
        {"mlp", build_mlp},
        {"lenet5", build_lenet5},
        {"cnn-bn", build_cnn_bn},
        {"dwsep", build_dwsep},
    };
    struct builder b = {0};
    int32_t in_dims[3] = {1, 28, 28};
    size_t i;

    for (i = 0; i < sizeof(archs) / sizeof(archs[0]); i++)
        if (!strcmp(name, archs[i].name))
            break;
    if (i == sizeof(archs) / sizeof(archs[0]))
        return efc_errf(EFC_ENOTFOUND,
                        "unknown architecture '%s' (built in: mlp, lenet5, "
                        "cnn-bn, dwsep)",
                        name);
    if ((b.st = efc_model_new(&b.m)))
        return b.st;
    efc_rng_init(&b.rng, seed);
    snprintf(b.m->name, sizeof(b.m->name), "%s", name);
    snprintf(b.m->arch, sizeof(b.m->arch), "%s", name);
    b.st = efc_model_add_tensor(b.m, "input", EFC_DTYPE_F32, 3, in_dims, EFC_TENSOR_INPUT, &b.cur);
    b.c = 1;
    b.h = b.w = 28;
    if (!b.st)
        archs[i].build(&b);
    if (!b.st) {
        b.m->output = b.cur;
        b.m->tensors[b.cur].flags |= EFC_TENSOR_OUTPUT;
        /* Fashion-MNIST statistics of x/255 over the training set */
        b.m->norm.n = 1;
        b.m->norm.scale[0] = 1.0f / 255.0f;
        b.m->norm.mean[0] = 0.2860f;
        b.m->norm.std[0] = 0.3530f;
        b.st = efc_model_check(b.m);
    }
    if (b.st) {
        efc_model_free(b.m);
        return b.st;
    }
    *out = b.m;
    return EFC_OK;
}
