/* test_train_smoke.c — end-to-end training on a Fashion-MNIST subset (skipped when the data
 * set is not installed).
 *
 * - mlp, 5000 training / 1000 test images, 2 epochs, Adam + cosine: test accuracy >= 75 %
 *   (PyTorch gets about 80 % on the same subset; the first 1000 test images).
 * - Two runs with the same seed give bit-identical weights; a different seed does not.
 * - Hooks: before_forward / after_step once per step with steps 0, 1, ...; extra_loss sees the
 *   batch's data-set indices and 10 classes, and its gradient reaches the weights.
 * - dwsep (BatchNorm, depthwise, stride 2, GAP) with SGD + step schedule on 2000 images:
 *   the loss falls and the BN running statistics move.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "compress/train.h"
#include "model/arch.h"
#include "model/dataset.h"

static struct efc_dataset *g_train, *g_test;

static int setup(void **state)
{
    (void)state;
    struct efc_dataset *tr = NULL, *te = NULL;
    if (efc_dataset_open("fashion-mnist", "train", &tr) != EFC_OK ||
        efc_dataset_open("fashion-mnist", "test", &te) != EFC_OK) {
        efc_dataset_free(tr);
        return 0; /* tests skip */
    }
    assert_int_equal(efc_dataset_slice(tr, 0, 5000, &g_train), EFC_OK);
    assert_int_equal(efc_dataset_slice(te, 0, 1000, &g_test), EFC_OK);
    efc_dataset_free(tr);
    efc_dataset_free(te);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    efc_dataset_free(g_train);
    efc_dataset_free(g_test);
    return 0;
}

static struct efc_model *train_mlp(uint64_t seed, const struct efc_train_hooks *hooks,
                                   struct efc_train_report *rep)
{
    struct efc_model *m = NULL;
    assert_int_equal(efc_arch_build("mlp", 7, &m), EFC_OK);
    struct efc_train_opts o;
    efc_train_opts_default(&o);
    o.epochs = 2;
    o.seed = seed;
    o.progress = 0;
    o.hooks = hooks;
    assert_int_equal(efc_train(m, g_train, g_test, &o, rep), EFC_OK);
    return m;
}

static int weights_equal(const struct efc_model *a, const struct efc_model *b)
{
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (int32_t i = 0; i < a->n_tensors; i++) {
        const struct efc_tensor *ta = &a->tensors[i], *tb = &b->tensors[i];
        if (!(ta->flags & EFC_TENSOR_PARAM))
            continue;
        if (memcmp(ta->data, tb->data, efc_tensor_bytes(ta)) != 0)
            return 0;
    }
    return 1;
}

static void test_mlp_accuracy_and_determinism(void **state)
{
    (void)state;
    if (!g_train)
        skip();
    struct efc_train_report r1, r2, r3;
    struct efc_model *m1 = train_mlp(42, NULL, &r1);
    struct efc_model *m2 = train_mlp(42, NULL, &r2);
    struct efc_model *m3 = train_mlp(43, NULL, &r3);
    print_message("mlp 5000x2: loss %.4f train %.2f%% test %.2f%% %.0f img/s\n", r1.final_loss,
                  r1.train_accuracy * 100.0, r1.val_accuracy * 100.0, r1.images_per_s);
    assert_true(r1.val_accuracy >= 0.75f);
    assert_true(r1.final_loss < 0.8f);
    assert_int_equal(r1.epochs, 2);
    assert_true(weights_equal(m1, m2));
    assert_true(r1.final_loss == r2.final_loss);
    assert_false(weights_equal(m1, m3));
    efc_model_free(m1);
    efc_model_free(m2);
    efc_model_free(m3);
}

struct hook_state {
    int64_t before, after, extra;
    int64_t next_before, next_after;
    int bad;
    float scale; /* extra loss: scale * mean logit^2 */
};

static void h_before(void *ctx, struct efc_model *m, int64_t step)
{
    struct hook_state *h = ctx;
    (void)m;
    if (step != h->next_before || h->before != h->after)
        h->bad = 1;
    h->next_before = step + 1;
    h->before++;
}

static float h_extra(void *ctx, const float *logits, const int32_t *idx, int32_t batch,
                     int32_t n_classes, float *dlogits)
{
    struct hook_state *h = ctx;
    h->extra++;
    if (n_classes != 10 || batch < 1 || batch > 128 || h->extra != h->before)
        h->bad = 1;
    for (int32_t i = 0; i < batch; i++)
        if (idx[i] < 0 || idx[i] >= 5000)
            h->bad = 1;
    double s = 0.0;
    for (int32_t i = 0; i < batch * n_classes; i++) {
        s += (double)logits[i] * logits[i];
        dlogits[i] += 2.0f * h->scale * logits[i] / (float)(batch * n_classes);
    }
    return (float)(h->scale * s / (batch * n_classes));
}

static void h_after(void *ctx, struct efc_model *m, int64_t step)
{
    struct hook_state *h = ctx;
    (void)m;
    if (step != h->next_after || h->after + 1 != h->before)
        h->bad = 1;
    h->next_after = step + 1;
    h->after++;
}

static void test_hooks(void **state)
{
    (void)state;
    if (!g_train)
        skip();
    struct hook_state hs = {0};
    hs.scale = 0.0f;
    struct efc_train_hooks hooks = {&hs, h_before, h_extra, h_after};
    struct efc_train_report r0, r1;
    struct efc_model *m0 = train_mlp(42, NULL, &r0);
    struct efc_model *m1 = train_mlp(42, &hooks, &r1);
    int64_t steps = 2 * ((5000 + 127) / 128);
    assert_int_equal(hs.bad, 0);
    assert_int_equal(hs.before, steps);
    assert_int_equal(hs.after, steps);
    assert_int_equal(hs.extra, steps);
    /* a zero extra loss changes nothing */
    assert_true(weights_equal(m0, m1));
    efc_model_free(m1);
    /* a logit penalty does reach the weights */
    memset(&hs, 0, sizeof(hs));
    hs.scale = 0.5f;
    m1 = train_mlp(42, &hooks, &r1);
    assert_int_equal(hs.bad, 0);
    assert_false(weights_equal(m0, m1));
    efc_model_free(m0);
    efc_model_free(m1);
}

static void test_dwsep_sgd_step(void **state)
{
    (void)state;
    if (!g_train)
        skip();
    struct efc_dataset *small = NULL;
    assert_int_equal(efc_dataset_slice(g_train, 0, 2000, &small), EFC_OK);
    struct efc_model *m = NULL;
    assert_int_equal(efc_arch_build("dwsep", 3, &m), EFC_OK);
    int32_t rv = efc_model_find_tensor(m, "conv1.bn.running_var");
    assert_true(rv >= 0);
    float rv0 = ((const float *)m->tensors[rv].data)[0];
    struct efc_train_opts o;
    efc_train_opts_default(&o);
    o.epochs = 2;
    o.batch = 64;
    o.optim = EFC_OPTIM_SGD;
    o.lr = 0.0f;            /* SGD default */
    o.weight_decay = -1.0f; /* SGD default */
    o.sched = EFC_SCHED_STEP;
    o.step_epochs = 1;
    o.progress = 0;
    struct efc_train_report r;
    assert_int_equal(efc_train(m, small, g_test, &o, &r), EFC_OK);
    print_message("dwsep 2000x2 sgd: loss %.4f train %.2f%% test %.2f%%\n", r.final_loss,
                  r.train_accuracy * 100.0, r.val_accuracy * 100.0);
    assert_true(isfinite(r.final_loss));
    assert_true(r.final_loss < 2.0f); /* chance level is ln 10 = 2.30 */
    assert_true(r.val_accuracy > 0.3f);
    assert_true(((const float *)m->tensors[rv].data)[0] != rv0);
    efc_model_free(m);
    efc_dataset_free(small);
}

static void test_bad_args(void **state)
{
    (void)state;
    struct efc_model *m = NULL;
    assert_int_equal(efc_arch_build("mlp", 1, &m), EFC_OK);
    struct efc_train_opts o;
    efc_train_opts_default(&o);
    assert_int_equal(o.epochs, 10);
    assert_int_equal(o.batch, 128);
    assert_int_equal(o.optim, EFC_OPTIM_ADAM);
    assert_int_equal(o.sched, EFC_SCHED_COSINE);
    assert_int_equal(efc_train(m, NULL, NULL, &o, NULL), EFC_EINVAL);
    if (g_train) {
        o.batch = 0;
        assert_int_equal(efc_train(m, g_train, NULL, &o, NULL), EFC_EINVAL);
    }
    efc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_mlp_accuracy_and_determinism),
        cmocka_unit_test(test_hooks),
        cmocka_unit_test(test_dwsep_sgd_step),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
