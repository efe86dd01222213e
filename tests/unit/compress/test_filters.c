/* test_filters.c — compress/filters: removing channels that contribute nothing (zero filters
 * whose BatchNorm or bias + ReLU output is 0) leaves the model's outputs unchanged, on
 * cnn-bn (conv-BN-ReLU, pools, Flatten -> Dense) and lenet5 (conv+bias-ReLU); on dwsep the
 * pointwise -> depthwise chains follow and the model runs; shapes, BatchNorm parameters, depthwise groups and the
 * Dense input columns follow; MACs drop; the BN-scale criterion picks the smallest |gamma|. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "compress/filters.h"
#include "model/arch.h"
#include "model/exec.h"

/* The node consuming tensor t, or -1. */
static int32_t consumer(const struct efc_model *m, int32_t t)
{
    for (int32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].inputs[0] == t)
            return i;
    return -1;
}

/* Make the first half of every ordinary conv's output channels dead: zero filters, and a BN
 * (gamma = beta = 0) or a bias of -1 before the ReLU so that they output exactly 0. Their
 * L1 norm is 0, so L1 pruning at ratio 0.5 removes exactly them. */
static void kill_half(struct efc_model *m)
{
    for (int32_t i = 0; i < m->n_nodes; i++) {
        struct efc_node *nd = &m->nodes[i];
        if (nd->op != EFC_OP_CONV2D || nd->a.groups != 1)
            continue;
        struct efc_tensor *w = &m->tensors[nd->inputs[1]];
        int32_t oc = w->dims[0];
        size_t per = efc_tensor_numel(w) / (size_t)oc;
        for (int32_t c = 0; c < oc / 2; c++)
            memset((float *)w->data + (size_t)c * per, 0, per * sizeof(float));
        if (nd->n_inputs > 2 && nd->inputs[2] >= 0)
            for (int32_t c = 0; c < oc / 2; c++)
                ((float *)m->tensors[nd->inputs[2]].data)[c] = -1.0f;
        int32_t bn = consumer(m, nd->output);
        if (bn >= 0 && m->nodes[bn].op == EFC_OP_BATCHNORM)
            for (int32_t c = 0; c < oc / 2; c++) {
                ((float *)m->tensors[m->nodes[bn].inputs[1]].data)[c] = 0.0f; /* gamma */
                ((float *)m->tensors[m->nodes[bn].inputs[2]].data)[c] = 0.0f; /* beta */
            }
    }
}

static void outputs(const struct efc_model *m, float *y)
{
    struct efc_exec *e = NULL;
    struct efc_exec_opts eo = {.max_batch = 3};
    float x[3 * 784];
    const float *o;
    for (int i = 0; i < 3 * 784; i++)
        x[i] = (float)((i * 53 + 7) % 256);
    assert_int_equal(efc_exec_new(m, &eo, &e), EFC_OK);
    assert_int_equal(efc_exec_run(e, x, 3, &o), EFC_OK);
    memcpy(y, o, 30 * sizeof(float));
    efc_exec_free(e);
}

static void check_arch(const char *arch, int32_t want_pruned)
{
    struct efc_model *m = NULL;
    struct efc_filters_report rep;
    float y0[30], y1[30];
    assert_int_equal(efc_arch_build(arch, 3, &m), EFC_OK);
    kill_half(m);
    assert_int_equal(efc_model_check(m), EFC_OK);
    outputs(m, y0);
    assert_int_equal(efc_filters(m, 0.5, EFC_FILTERS_BY_L1, &rep), EFC_OK);
    assert_int_equal(rep.pruned, want_pruned);
    assert_int_equal(rep.channels_after * 2, rep.channels_before);
    assert_true(rep.macs_after < rep.macs_before);
    outputs(m, y1);
    double diff = 0.0, mag = 0.0;
    for (int i = 0; i < 30; i++) {
        diff = fmax(diff, fabs(y1[i] - y0[i]));
        mag = fmax(mag, fabs(y0[i]));
    }
    print_message("%s: %d convs pruned, MACs %llu -> %llu, max |dy| %.3g (|y| %.3g)\n", arch,
                  rep.pruned, (unsigned long long)rep.macs_before,
                  (unsigned long long)rep.macs_after, diff, mag);
    assert_true(diff <= 1e-4 * (1.0 + mag));
    efc_model_free(m);
}

static void test_cnn_bn(void **state)
{
    (void)state;
    check_arch("cnn-bn", 3);
}

static void test_lenet5(void **state)
{
    (void)state;
    check_arch("lenet5", 2);
}

/* dwsep: pruning a pointwise conv removes the tied depthwise channels after it; the model
 * checks, runs, and the depthwise groups, weights and BN follow. */
static void test_dwsep(void **state)
{
    (void)state;
    struct efc_model *m = NULL;
    struct efc_filters_report rep;
    float y[30];
    assert_int_equal(efc_arch_build("dwsep", 3, &m), EFC_OK);
    assert_int_equal(efc_filters(m, 0.5, EFC_FILTERS_BY_L1, &rep), EFC_OK);
    assert_int_equal(rep.pruned, 4); /* conv1, pw1, pw2, pw3 */
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *nd = &m->nodes[i];
        if (nd->op != EFC_OP_CONV2D || nd->a.groups == 1)
            continue;
        const struct efc_tensor *w = &m->tensors[nd->inputs[1]];
        assert_int_equal(nd->a.groups, w->dims[0]); /* still depthwise */
        int32_t bn = consumer(m, nd->output);
        assert_int_equal(m->tensors[m->nodes[bn].inputs[1]].dims[0], w->dims[0]);
    }
    outputs(m, y);
    for (int i = 0; i < 30; i++)
        assert_true(isfinite(y[i]));
    print_message("dwsep: MACs %llu -> %llu\n", (unsigned long long)rep.macs_before,
                  (unsigned long long)rep.macs_after);
    efc_model_free(m);
}

/* by=bn: the channels with the smallest |gamma| go, whatever their L1 norm. */
static void test_by_bn(void **state)
{
    (void)state;
    struct efc_model *m = NULL;
    struct efc_filters_report rep;
    assert_int_equal(efc_arch_build("cnn-bn", 4, &m), EFC_OK);
    int32_t conv1 = -1;
    for (int32_t i = 0; i < m->n_nodes && conv1 < 0; i++)
        if (m->nodes[i].op == EFC_OP_CONV2D)
            conv1 = i;
    int32_t bn = consumer(m, m->nodes[conv1].output);
    float *gamma = m->tensors[m->nodes[bn].inputs[1]].data;
    float *w = m->tensors[m->nodes[conv1].inputs[1]].data;
    int32_t oc = m->tensors[m->nodes[conv1].inputs[1]].dims[0];
    size_t per = efc_tensor_numel(&m->tensors[m->nodes[conv1].inputs[1]]) / (size_t)oc;
    for (int32_t c = 0; c < oc; c++) {
        gamma[c] = (c % 2) ? 0.01f : 1.0f;      /* odd channels: tiny scale */
        w[(size_t)c * per] = (c % 2) ? 50.0f : 0.0f; /* ... but a large L1 norm */
    }
    float keep_first = w[0 * per + 1]; /* channel 0 survives and becomes channel 0 */
    assert_int_equal(efc_filters(m, 0.5, EFC_FILTERS_BY_BN, &rep), EFC_OK);
    const struct efc_tensor *nw = &m->tensors[m->nodes[conv1].inputs[1]];
    assert_int_equal(nw->dims[0], oc / 2);
    const float *g2 = m->tensors[m->nodes[bn].inputs[1]].data;
    for (int32_t c = 0; c < oc / 2; c++)
        assert_true(g2[c] == 1.0f); /* only the even (large-gamma) channels stayed */
    assert_true(((const float *)nw->data)[1] == keep_first);
    efc_model_free(m);
}

static void test_bad(void **state)
{
    (void)state;
    struct efc_model *m = NULL;
    struct efc_filters_report rep;
    assert_int_equal(efc_arch_build("lenet5", 1, &m), EFC_OK);
    assert_int_equal(efc_filters(m, 1.0, EFC_FILTERS_BY_L1, &rep), EFC_EINVAL);
    assert_int_equal(efc_filters(m, -0.5, EFC_FILTERS_BY_L1, &rep), EFC_EINVAL);
    assert_int_equal(efc_filters(m, 0.0, EFC_FILTERS_BY_L1, &rep), EFC_OK);
    assert_int_equal(rep.pruned, 0);
    efc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cnn_bn), cmocka_unit_test(test_lenet5),
        cmocka_unit_test(test_dwsep),  cmocka_unit_test(test_by_bn),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
