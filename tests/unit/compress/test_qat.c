/* test_qat.c — compress/qat: fake quantisation puts every weight on its channel's INT8 grid
 * (at most 255 levels, multiples of the channel scale, idempotent, the same values the INT8
 * lowering stores); a QAT run trains FP32 masters (the result is not on the grid, and differs
 * from the start); the policy rules (qat followed by int8 with the same granularity) hold.
 * Model: the built-in mlp; training on 1,000 Fashion-MNIST images (skipped without it). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "compress/compress.h"
#include "compress/qat.h"
#include "model/arch.h"
#include "model/quant.h"

static struct efc_model *mlp(void)
{
    struct efc_model *m = NULL;
    assert_int_equal(efc_arch_build("mlp", 9, &m), EFC_OK);
    return m;
}

static const struct efc_tensor *weight(const struct efc_model *m, int32_t node)
{
    return &m->tensors[m->nodes[node].inputs[1]];
}

static int32_t first_dense(const struct efc_model *m)
{
    for (int32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == EFC_OP_DENSE)
            return i;
    return -1;
}

static void test_grid(void **state)
{
    (void)state;
    for (int32_t per_tensor = 0; per_tensor <= 1; per_tensor++) {
        struct efc_model *m = mlp(), *orig = NULL;
        assert_int_equal(efc_model_clone(m, &orig), EFC_OK);
        assert_int_equal(efc_qat_fake_quantise(m, per_tensor), EFC_OK);
        int32_t d = first_dense(m);
        const struct efc_tensor *t = weight(m, d), *t0 = weight(orig, d);
        int32_t n_ch = t->dims[0], per = t->dims[1];
        int8_t *q = efc_malloc((size_t)n_ch * per);
        float *s = efc_malloc((size_t)n_ch * sizeof(float));
        /* what the lowering stores for the original weights */
        efc_quant_weights(t0->data, n_ch, per, per_tensor, q, s);
        const float *w = t->data;
        for (int32_t c = 0; c < n_ch; c++)
            for (int32_t k = 0; k < per; k++)
                assert_true(w[(size_t)c * per + k] == (float)q[(size_t)c * per + k] * s[c]);
        /* idempotent */
        struct efc_model *again = NULL;
        assert_int_equal(efc_model_clone(m, &again), EFC_OK);
        assert_int_equal(efc_qat_fake_quantise(again, per_tensor), EFC_OK);
        assert_memory_equal(weight(again, d)->data, t->data, efc_tensor_bytes(t));
        efc_model_free(again);
        efc_free(q);
        efc_free(s);
        efc_model_free(orig);
        efc_model_free(m);
    }
}

static void test_masters(void **state)
{
    (void)state;
    struct efc_dataset *all = NULL, *train = NULL;
    if (efc_dataset_open("fashion-mnist", "train", &all) != EFC_OK) {
        print_message("skipped: no Fashion-MNIST\n");
        skip();
    }
    assert_int_equal(efc_dataset_slice(all, 0, 1000, &train), EFC_OK);
    efc_dataset_free(all);
    struct efc_model *m = mlp(), *orig = NULL;
    assert_int_equal(efc_model_clone(m, &orig), EFC_OK);
    struct efc_train_opts to;
    efc_train_opts_default(&to);
    to.epochs = 1;
    to.batch = 100;
    to.progress = 0;
    assert_int_equal(efc_qat(m, train, &to, 0), EFC_OK);
    int32_t d = first_dense(m);
    const struct efc_tensor *t = weight(m, d);
    struct efc_model *fq = NULL;
    assert_int_equal(efc_model_clone(m, &fq), EFC_OK);
    assert_int_equal(efc_qat_fake_quantise(fq, 0), EFC_OK);
    size_t n = efc_tensor_numel(t), off_grid = 0, moved = 0;
    const float *w = t->data, *g = weight(fq, d)->data, *w0 = weight(orig, d)->data;
    for (size_t j = 0; j < n; j++) {
        off_grid += w[j] != g[j];
        moved += w[j] != w0[j];
    }
    assert_true(off_grid > n / 2); /* FP32 masters, not grid values */
    assert_true(moved > n / 2);    /* it trained */
    efc_model_free(fq);
    efc_model_free(orig);
    efc_model_free(m);
    efc_dataset_free(train);
}

static void test_policy_rules(void **state)
{
    (void)state;
    struct efc_model *m = mlp();
    struct efc_policy p;
    static const char *const bad[][2] = {
        {"qat(epochs=2)", "qat must be followed by an int8 step"},
        {"qat(epochs=2)+prune(sparsity=0.5)", "qat must be followed by an int8 step"},
        {"qat(weights=tensor)+int8(calib=kl)", "weights=tensor differs from the int8 step's "
                                               "weights=channel"},
        {"qat(weights=row)+int8", "weights=row is not channel or tensor"},
        {"qat(epochs=0)+int8", "epochs=0 is not an integer in [1, 1000]"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(efc_policy_parse(bad[i][0], &p), EFC_OK);
        assert_int_not_equal(efc_compress_check(m, &p), EFC_OK);
        if (!strstr(efc_err_detail(), bad[i][1]))
            fail_msg("'%s': \"%s\" lacks \"%s\"", bad[i][0], efc_err_detail(), bad[i][1]);
    }
    assert_int_equal(efc_policy_parse("qat(epochs=2)+int8(calib=percentile)", &p), EFC_OK);
    assert_int_equal(efc_compress_check(m, &p), EFC_OK);
    efc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_masters),
        cmocka_unit_test(test_policy_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
