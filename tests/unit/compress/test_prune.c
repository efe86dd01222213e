/* test_prune.c — compress/prune + the policy driver: global magnitude pruning drops exactly
 * the globally smallest weights (subject to the per-layer floor), N:M keeps the n largest of
 * every group, masks hold through fine-tuning and never regrow, the gradual schedule ends at
 * the target, and impossible policies are refused naming the step and key. Models: the
 * built-in mlp and lenet5 with random weights; fine-tuning on 2,000 Fashion-MNIST images
 * (skipped without the data set). */
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
#include "common/efc_policy.h"
#include "compress/compress.h"
#include "compress/prune.h"
#include "model/arch.h"

static struct efc_model *build(const char *arch)
{
    struct efc_model *m = NULL;
    assert_int_equal(efc_arch_build(arch, 7, &m), EFC_OK);
    return m;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_magnitude_global(void **state)
{
    (void)state;
    struct efc_model *m = build("mlp"), *orig = NULL;
    struct efc_prune p;
    assert_int_equal(efc_model_clone(m, &orig), EFC_OK);
    assert_int_equal(efc_prune_init(m, &p), EFC_OK);
    assert_int_equal(p.n, 3); /* 784-300-100-10 */
    int64_t total = 0;
    for (int32_t i = 0; i < p.n; i++)
        total += p.layers[i].numel;
    /* no floor: exactly floor(0.9 * total) dropped, all below every kept magnitude */
    assert_int_equal(efc_prune_magnitude(m, &p, 0.9, 0.0), EFC_OK);
    int64_t want = (int64_t)floor(0.9 * (double)total), dropped = 0;
    float max_dropped = 0.0f, min_kept = INFINITY;
    for (int32_t i = 0; i < p.n; i++) {
        const float *w0 = orig->tensors[p.layers[i].tensor].data;
        const float *w = m->tensors[p.layers[i].tensor].data;
        for (int64_t j = 0; j < p.layers[i].numel; j++) {
            if (!p.layers[i].keep[j]) {
                dropped++;
                assert_true(w[j] == 0.0f);
                if (fabsf(w0[j]) > max_dropped)
                    max_dropped = fabsf(w0[j]);
            } else {
                assert_true(w[j] == w0[j]);
                if (fabsf(w0[j]) < min_kept)
                    min_kept = fabsf(w0[j]);
            }
        }
    }
    assert_int_equal(dropped, want);
    assert_true(max_dropped <= min_kept);
    assert_true(fabs(efc_prune_mask_sparsity(&p) - 0.9) < 1e-5);
    assert_true(fabs(efc_prune_model_sparsity(m) - 0.9) < 1e-5);
    /* idempotent */
    assert_int_equal(efc_prune_magnitude(m, &p, 0.9, 0.0), EFC_OK);
    assert_true(fabs(efc_prune_model_sparsity(m) - 0.9) < 1e-5);
    /* out of range */
    assert_int_equal(efc_prune_magnitude(m, &p, 1.0, 0.0), EFC_EINVAL);
    assert_int_equal(efc_prune_magnitude(m, &p, -0.1, 0.0), EFC_EINVAL);
    efc_prune_fini(&p);
    efc_model_free(orig);
    efc_model_free(m);
}

/* The floor: the small output layer (1000 weights) keeps at least 30 % of its own weights
 * even when the global threshold would take more, and keeps its largest ones. */
static void test_magnitude_floor(void **state)
{
    (void)state;
    struct efc_model *m = build("mlp");
    struct efc_prune p;
    assert_int_equal(efc_prune_init(m, &p), EFC_OK);
    /* make the last layer's weights tiny: a global threshold would wipe it out */
    struct efc_prune_layer *last = &p.layers[p.n - 1];
    float *w = m->tensors[last->tensor].data;
    for (int64_t j = 0; j < last->numel; j++)
        w[j] *= 1e-6f;
    float *copy = efc_malloc((size_t)last->numel * sizeof(float));
    for (int64_t j = 0; j < last->numel; j++)
        copy[j] = fabsf(w[j]);
    qsort(copy, (size_t)last->numel, sizeof(float), cmp_f);
    assert_int_equal(efc_prune_magnitude(m, &p, 0.95, 0.3), EFC_OK);
    int64_t kept = 0;
    float min_kept = INFINITY;
    for (int64_t j = 0; j < last->numel; j++)
        if (last->keep[j]) {
            kept++;
            min_kept = fminf(min_kept, fabsf(w[j]));
        }
    assert_int_equal(kept, (int64_t)ceil(0.3 * (double)last->numel));
    assert_true(min_kept >= copy[last->numel - kept]); /* its largest ones */
    for (int32_t i = 0; i < p.n; i++) { /* every layer at or above the floor */
        int64_t k = 0;
        for (int64_t j = 0; j < p.layers[i].numel; j++)
            k += p.layers[i].keep[j];
        assert_true(k >= (int64_t)ceil(0.3 * (double)p.layers[i].numel));
    }
    efc_free(copy);
    efc_prune_fini(&p);
    efc_model_free(m);
}

static void test_nm(void **state)
{
    (void)state;
    static const int32_t pats[][2] = {{2, 4}, {1, 4}, {3, 8}};
    for (size_t c = 0; c < sizeof(pats) / sizeof(pats[0]); c++) {
        int32_t n = pats[c][0], mm = pats[c][1];
        struct efc_model *m = build("lenet5"), *orig = NULL;
        struct efc_prune p;
        assert_int_equal(efc_model_clone(m, &orig), EFC_OK);
        assert_int_equal(efc_prune_init(m, &p), EFC_OK);
        assert_int_equal(efc_prune_nm(m, &p, n, mm), EFC_OK);
        assert_true(efc_prune_nm_holds(m, &p, n, mm));
        int32_t skipped = 0;
        for (int32_t i = 0; i < p.n; i++) {
            const struct efc_prune_layer *l = &p.layers[i];
            const struct efc_tensor *t = &m->tensors[l->tensor];
            const float *w0 = orig->tensors[l->tensor].data, *w = t->data;
            skipped += l->nm_skip;
            if (l->nm_skip) { /* untouched */
                assert_memory_equal(w, w0, (size_t)l->numel * sizeof(float));
                continue;
            }
            int64_t in = t->dims[1], inner = t->ndim == 4 ? (int64_t)t->dims[2] * t->dims[3] : 1;
            /* a Dense after Flatten of [C, H, W] groups channels (NHWC order of INT8) */
            for (int32_t q = 0; q < m->n_nodes; q++) {
                const struct efc_node *pn = &m->nodes[q];
                const struct efc_tensor *a = &m->tensors[pn->inputs[0]];
                if (t->ndim == 2 && pn->op == EFC_OP_FLATTEN &&
                    pn->output == m->nodes[l->node].inputs[0] && a->ndim == 3 &&
                    a->dims[1] * a->dims[2] > 1) {
                    in = a->dims[0];
                    inner = (int64_t)a->dims[1] * a->dims[2];
                }
            }
            for (int64_t r = 0; r < t->dims[0]; r++)
                for (int64_t s = 0; s < inner; s++)
                    for (int64_t g = 0; g < in; g += mm) {
                        /* each kept |w| >= each dropped |w| of its group */
                        float min_kept = INFINITY, max_drop = 0.0f;
                        int32_t kept = 0;
                        for (int32_t e = 0; e < mm; e++) {
                            int64_t at = r * in * inner + (g + e) * inner + s;
                            if (l->keep[at]) {
                                kept++;
                                min_kept = fminf(min_kept, fabsf(w0[at]));
                                assert_true(w[at] == w0[at]);
                            } else {
                                max_drop = fmaxf(max_drop, fabsf(w0[at]));
                                assert_true(w[at] == 0.0f);
                            }
                        }
                        assert_int_equal(kept, n);
                        assert_true(max_drop <= min_kept);
                    }
        }
        /* the layers whose input dimension is not a multiple of m: conv1 (1 input channel),
         * conv2 (6), and for m = 8 also the Dense 84 -> 10 */
        assert_int_equal(skipped, mm == 8 ? 3 : 2);
        assert_int_equal(efc_prune_nm(m, &p, 4, 4), EFC_EINVAL);
        assert_int_equal(efc_prune_nm(m, &p, 0, 4), EFC_EINVAL);
        efc_prune_fini(&p);
        efc_model_free(orig);
        efc_model_free(m);
    }
}

/* Fine-tuning keeps the masks; the gradual schedule ends exactly at its target with every
 * weight dropped along the way still zero. */
static void test_finetune_keeps_masks(void **state)
{
    (void)state;
    struct efc_dataset *all = NULL, *train = NULL;
    if (efc_dataset_open("fashion-mnist", "train", &all) != EFC_OK) {
        print_message("skipped: no Fashion-MNIST\n");
        skip();
    }
    assert_int_equal(efc_dataset_slice(all, 0, 2000, &train), EFC_OK);
    efc_dataset_free(all);
    struct efc_model *m = build("mlp");
    struct efc_policy pol;
    struct efc_compress_report rep;
    struct efc_compress_opts o = {.train = train, .seed = 3, .batch = 100};
    assert_int_equal(efc_policy_parse("prune(sparsity=0.8,finetune=2)+int8(calib=kl)", &pol),
                     EFC_OK);
    assert_int_equal(efc_compress_run(&m, &pol, &o, &rep), EFC_OK);
    assert_int_equal(rep.n_steps, 1);
    assert_int_equal(rep.device_step, 1);
    assert_true(fabs(rep.steps[0].sparsity - 0.8) < 0.002);
    assert_true(fabs(efc_prune_model_sparsity(m) - 0.8) < 0.002);

    /* oneshot masks hold through training: the zero pattern is the same before and after */
    struct efc_model *m2 = build("mlp");
    struct efc_prune p;
    struct efc_prune_schedule g;
    struct efc_train_hooks h;
    struct efc_train_opts to;
    struct efc_train_report tr;
    assert_int_equal(efc_prune_init(m2, &p), EFC_OK);
    assert_int_equal(efc_prune_magnitude(m2, &p, 0.7, 0.0), EFC_OK);
    efc_prune_schedule_init(&g, &p, 0, 0.7, 0.0, 1);
    efc_prune_hooks(&g, &h);
    efc_train_opts_default(&to);
    to.epochs = 1;
    to.batch = 100;
    to.progress = 0;
    to.hooks = &h;
    assert_int_equal(efc_train(m2, train, NULL, &to, &tr), EFC_OK);
    int64_t changed_kept = 0;
    for (int32_t i = 0; i < p.n; i++) {
        const float *w = m2->tensors[p.layers[i].tensor].data;
        for (int64_t j = 0; j < p.layers[i].numel; j++) {
            if (!p.layers[i].keep[j])
                assert_true(w[j] == 0.0f);
            else
                changed_kept += w[j] != 0.0f;
        }
    }
    assert_true(changed_kept > 0); /* it did train */
    efc_prune_fini(&p);
    efc_model_free(m2);
    efc_model_free(m);
    efc_dataset_free(train);
}

static void expect_refused(const struct efc_model *m, const char *policy, const char *needle)
{
    struct efc_policy pol;
    assert_int_equal(efc_policy_parse(policy, &pol), EFC_OK);
    assert_int_not_equal(efc_compress_check(m, &pol), EFC_OK);
    if (!strstr(efc_err_detail(), needle))
        fail_msg("'%s': detail \"%s\" lacks \"%s\"", policy, efc_err_detail(), needle);
}

static void test_bad_policies(void **state)
{
    (void)state;
    struct efc_model *m = build("mlp");
    struct efc_policy pol;
    expect_refused(m, "prune(sparsity=1.5)",
                   "policy step 1 'prune(sparsity=1.5)': sparsity=1.5 is not in [0, 1)");
    expect_refused(m, "prune(sparsity=1)", "sparsity=1 is not in [0, 1)");
    expect_refused(m, "prune(finetune=2)", "prune needs sparsity=S");
    expect_refused(m, "prune(sparsity=0.5,speed=3)", "unknown parameter 'speed' for prune");
    expect_refused(m, "prune(sparsity=0.5,schedule=fast)", "schedule=fast is not gradual or "
                                                             "oneshot");
    expect_refused(m, "nm(n=4,m=4)", "n=4 must be below m=4");
    expect_refused(m, "nm(n=2,m=40)", "m=40 is not an integer in [2, 16]");
    expect_refused(m, "int8(calib=kl)+prune(sparsity=0.5)",
                   "policy step 2 'prune(sparsity=0.5)': a training step after the device step 1");
    expect_refused(m, "shrink(x=1)", "unknown method 'shrink'");
    expect_refused(m, "fp32+filters(ratio=0.5)", "training step after the device step");
    expect_refused(m, "lowrank(rank=400)", "rank=400 is above every Dense layer's rank");
    expect_refused(m, "filters(ratio=0.5)", "model mlp has no convolution to prune filters of");
    expect_refused(m, "filters(ratio=1)", "ratio=1 is not in [0, 1)");
    expect_refused(m, "distill(t=4)", "distill needs student=ARCH");
    expect_refused(m, "distill(student=resnet)", "student=resnet is not a built-in");
    expect_refused(m, "distill(student=dwsep,alpha=2)", "alpha=2 is not in [0, 1]");
    assert_int_equal(efc_policy_parse("prune(sparsity=0.5,finetune=0)+int8(calib=kl)", &pol),
                     EFC_OK);
    assert_int_equal(efc_compress_check(m, &pol), EFC_OK);
    efc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_magnitude_global), cmocka_unit_test(test_magnitude_floor),
        cmocka_unit_test(test_nm),               cmocka_unit_test(test_finetune_keeps_masks),
        cmocka_unit_test(test_bad_policies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
