/* test_distill.c — the distillation loss: its gradient against finite differences of its value
 * (several T and alpha), alpha = 0 leaves the hard gradient alone, alpha = 1 replaces it, the
 * loss is zero when student and teacher agree; and a short distillation run trains a student
 * from a teacher on 1,000 Fashion-MNIST images (skipped without the data set). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "compress/compress.h"
#include "compress/distill.h"
#include "compress/prune.h"
#include "model/arch.h"
#include "model/exec.h"

enum { B = 3, C = 7 };

static void fill(float *v, int n, struct efc_rng *r, float scale)
{
    for (int i = 0; i < n; i++)
        v[i] = scale * (efc_rng_uniform(r) * 2.0f - 1.0f);
}

static void test_gradient(void **state)
{
    (void)state;
    static const float ts[] = {1.0f, 2.0f, 4.0f, 8.0f}, alphas[] = {0.3f, 0.7f, 1.0f};
    struct efc_rng r;
    float t_logits[B * C], s[B * C], d[B * C], ps[C], pt[C], zero[B * C];
    int32_t idx[B] = {0, 1, 2};
    efc_rng_init(&r, 11);
    fill(t_logits, B * C, &r, 3.0f);
    fill(s, B * C, &r, 3.0f);
    for (size_t a = 0; a < sizeof(ts) / sizeof(ts[0]); a++)
        for (size_t b = 0; b < sizeof(alphas) / sizeof(alphas[0]); b++) {
            float T = ts[a], al = alphas[b];
            memset(d, 0, sizeof(d)); /* no hard gradient: d becomes dL/ds */
            efc_distill_soft_loss(t_logits, idx, s, B, C, T, al, ps, pt, d);
            for (int j = 0; j < B * C; j++) {
                float h = 1e-2f, keep = s[j];
                s[j] = keep + h;
                double up = efc_distill_soft_loss(t_logits, idx, s, B, C, T, al, ps, pt, zero);
                s[j] = keep - h;
                double dn = efc_distill_soft_loss(t_logits, idx, s, B, C, T, al, ps, pt, zero);
                s[j] = keep;
                double fd = (up - dn) / (2.0 * h);
                if (fabs(fd - d[j]) > 1e-3 * (1.0 + fabs(fd)))
                    fail_msg("T=%g alpha=%g logit %d: analytic %g, finite difference %g", T, al,
                             j, d[j], fd);
                memset(zero, 0, sizeof(zero));
            }
        }
}

static void test_limits(void **state)
{
    (void)state;
    struct efc_rng r;
    float t_logits[B * C], s[B * C], d[B * C], hard[B * C], ps[C], pt[C];
    int32_t idx[B] = {2, 0, 1};
    efc_rng_init(&r, 5);
    fill(t_logits, B * C, &r, 2.0f);
    fill(s, B * C, &r, 2.0f);
    fill(hard, B * C, &r, 0.1f);
    memcpy(d, hard, sizeof(d));
    assert_true(efc_distill_soft_loss(t_logits, idx, s, B, C, 4.0f, 0.0f, ps, pt, d) == 0.0f);
    assert_memory_equal(d, hard, sizeof(d)); /* alpha 0: the hard gradient alone */
    memcpy(d, hard, sizeof(d));
    float l1 = efc_distill_soft_loss(t_logits, idx, s, B, C, 4.0f, 1.0f, ps, pt, d);
    assert_true(l1 > 0.0f);
    float sum = 0.0f;
    for (int j = 0; j < B * C; j++)
        sum += d[j]; /* alpha 1: only the soft gradient, which sums to 0 per sample */
    assert_true(fabsf(sum) < 1e-5f);
    /* the student equal to the teacher (same rows): no loss, no soft gradient */
    float same[B * C];
    for (int i = 0; i < B; i++)
        memcpy(same + i * C, t_logits + idx[i] * C, C * sizeof(float));
    memset(d, 0, sizeof(d));
    float l0 = efc_distill_soft_loss(t_logits, idx, same, B, C, 4.0f, 0.7f, ps, pt, d);
    assert_true(fabsf(l0) < 1e-5f);
    for (int j = 0; j < B * C; j++)
        assert_true(fabsf(d[j]) < 1e-6f);
}

static void test_short_run(void **state)
{
    (void)state;
    struct efc_dataset *all = NULL, *train = NULL;
    if (efc_dataset_open("fashion-mnist", "train", &all) != EFC_OK) {
        print_message("skipped: no Fashion-MNIST\n");
        skip();
    }
    assert_int_equal(efc_dataset_slice(all, 0, 1000, &train), EFC_OK);
    efc_dataset_free(all);
    struct efc_model *teacher = NULL, *student = NULL;
    assert_int_equal(efc_arch_build("mlp", 3, &teacher), EFC_OK);
    struct efc_distill_opts o = {.train = train, .student = "mlp", .t = 4.0f, .alpha = 0.7f,
                                 .epochs = 1, .batch = 100, .seed = 2};
    float tacc = -1.0f;
    assert_int_equal(efc_distill(teacher, &o, &student, &tacc), EFC_OK);
    assert_non_null(student);
    assert_true(tacc >= 0.0f && tacc <= 1.0f);
    efc_model_free(student);
    o.student = "nosuch";
    assert_int_not_equal(efc_distill(teacher, &o, &student, NULL), EFC_OK);
    assert_null(student);
    efc_model_free(teacher);
    efc_dataset_free(train);
}

/* A combination, applied left to right: distil into a fresh student, prune it, leave int8 to
 * the device. */
static void test_combination(void **state)
{
    (void)state;
    struct efc_dataset *all = NULL, *train = NULL;
    if (efc_dataset_open("fashion-mnist", "train", &all) != EFC_OK) {
        print_message("skipped: no Fashion-MNIST\n");
        skip();
    }
    assert_int_equal(efc_dataset_slice(all, 0, 1000, &train), EFC_OK);
    efc_dataset_free(all);
    struct efc_model *m = NULL;
    assert_int_equal(efc_arch_build("lenet5", 3, &m), EFC_OK); /* the teacher */
    struct efc_policy pol;
    struct efc_compress_report rep;
    struct efc_compress_opts o = {.train = train, .seed = 2, .batch = 100};
    assert_int_equal(efc_policy_parse("distill(student=mlp,epochs=1)+prune(sparsity=0.5,"
                                      "finetune=1)+int8(calib=kl)",
                                      &pol),
                     EFC_OK);
    assert_int_equal(efc_compress_run(&m, &pol, &o, &rep), EFC_OK);
    assert_int_equal(rep.n_steps, 2);
    assert_int_equal(rep.device_step, 2);
    assert_string_equal(m->arch, "mlp"); /* the student replaced the teacher */
    assert_true(fabs(efc_prune_model_sparsity(m) - 0.5) < 0.002);
    efc_model_free(m);
    efc_dataset_free(train);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_short_run),
        cmocka_unit_test(test_combination),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
