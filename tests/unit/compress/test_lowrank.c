/* test_lowrank.c — compress/lowrank: a factorised Dense layer is the best rank-r approximation
 * (||W - W2 W1||_F^2 equals the sum of the dropped squared singular values, Eckart-Young), the
 * graph stays valid with one extra node per factorised layer and computes what the original
 * does with W replaced by the product W2 W1, energy picks the smallest rank holding that energy, layers that would not shrink
 * are kept, and an impossible rank is refused. Model: the built-in mlp, random weights. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "compress/lowrank.h"
#include "kernels/blas.h"
#include "model/arch.h"
#include "model/exec.h"

static struct efc_model *mlp(void)
{
    struct efc_model *m = NULL;
    assert_int_equal(efc_arch_build("mlp", 5, &m), EFC_OK);
    return m;
}

static int32_t find_node(const struct efc_model *m, const char *name)
{
    for (int32_t i = 0; i < m->n_nodes; i++)
        if (!strcmp(m->nodes[i].name, name))
            return i;
    return -1;
}

static void test_eckart_young(void **state)
{
    (void)state;
    struct efc_model *m = mlp(), *orig = NULL;
    struct efc_lowrank_report rep;
    assert_int_equal(efc_model_clone(m, &orig), EFC_OK);
    int32_t fc1 = find_node(orig, "fc1");
    assert_true(fc1 >= 0);
    const struct efc_tensor *w0 = &orig->tensors[orig->nodes[fc1].inputs[1]];
    int32_t out = w0->dims[0], in = w0->dims[1], k = out < in ? out : in, r = 20;
    float *s = efc_malloc((size_t)k * 4), *u = efc_malloc((size_t)out * k * 4),
          *vt = efc_malloc((size_t)k * in * 4);
    enum efc_status st = efc_svd_f32(out, in, w0->data, s, u, vt);
    if (st == EFC_EUNSUPPORTED) {
        print_message("skipped: %s\n", efc_err_detail());
        skip();
    }
    assert_int_equal(efc_lowrank(m, r, 0.0, &rep), EFC_OK);
    assert_int_equal(rep.dense_layers, 3);
    assert_int_equal(rep.factorised, 2); /* 10 x 100 has rank limit 10 <= 20: kept */
    assert_int_equal(m->n_nodes, orig->n_nodes + 2);
    int32_t a = find_node(m, "fc1.lr"), b = find_node(m, "fc1");
    assert_true(a >= 0 && b == a + 1);
    const struct efc_tensor *w1 = &m->tensors[m->nodes[a].inputs[1]];
    const struct efc_tensor *w2 = &m->tensors[m->nodes[b].inputs[1]];
    assert_int_equal(w1->dims[0], r);
    assert_int_equal(w1->dims[1], in);
    assert_int_equal(w2->dims[0], out);
    assert_int_equal(w2->dims[1], r);
    assert_int_equal(m->nodes[b].inputs[0], m->nodes[a].output);
    double err = 0.0, want = 0.0, norm = 0.0;
    const float *p1 = w1->data, *p2 = w2->data, *p0 = w0->data;
    for (int32_t o = 0; o < out; o++)
        for (int32_t c = 0; c < in; c++) {
            double acc = 0.0;
            for (int32_t q = 0; q < r; q++)
                acc += (double)p2[o * r + q] * p1[q * in + c];
            double d = p0[(size_t)o * in + c] - acc;
            err += d * d;
            norm += (double)p0[(size_t)o * in + c] * p0[(size_t)o * in + c];
        }
    for (int32_t q = r; q < k; q++)
        want += (double)s[q] * s[q];
    print_message("rank %d: ||W - W2 W1||^2 = %.6g, sum of dropped s^2 = %.6g (||W||^2 %.6g)\n", r,
                  err, want, norm);
    assert_true(fabs(err - want) <= 1e-3 * norm);
    /* the factorised model computes what the original does with W replaced by W2 W1 */
    static const char *const names[] = {"fc1", "fc2"};
    for (int l = 0; l < 2; l++) {
        int32_t na = find_node(m, l ? "fc2.lr" : "fc1.lr"), nb = find_node(m, names[l]);
        const struct efc_tensor *t1 = &m->tensors[m->nodes[na].inputs[1]];
        const struct efc_tensor *t2 = &m->tensors[m->nodes[nb].inputs[1]];
        struct efc_tensor *t0 = &orig->tensors[orig->nodes[find_node(orig, names[l])].inputs[1]];
        int32_t o_ = t2->dims[0], rr = t2->dims[1], i_ = t1->dims[1];
        const float *q1 = t1->data, *q2 = t2->data;
        float *dst = t0->data;
        for (int32_t o = 0; o < o_; o++)
            for (int32_t c = 0; c < i_; c++) {
                double acc = 0.0;
                for (int32_t q = 0; q < rr; q++)
                    acc += (double)q2[o * rr + q] * q1[q * i_ + c];
                dst[(size_t)o * i_ + c] = (float)acc;
            }
    }
    struct efc_exec *e0 = NULL, *e1 = NULL;
    struct efc_exec_opts eo = {.max_batch = 2};
    assert_int_equal(efc_exec_new(m, &eo, &e1), EFC_OK);
    assert_int_equal(efc_exec_new(orig, &eo, &e0), EFC_OK);
    float x[2 * 784];
    for (int i = 0; i < 2 * 784; i++)
        x[i] = (float)((i * 29) % 256);
    const float *y0, *y1;
    float keep[20];
    assert_int_equal(efc_exec_run(e1, x, 2, &y1), EFC_OK);
    memcpy(keep, y1, sizeof(keep));
    assert_int_equal(efc_exec_run(e0, x, 2, &y0), EFC_OK);
    double diff = 0.0, mag = 0.0;
    for (int i = 0; i < 20; i++) {
        diff = fmax(diff, fabs(keep[i] - y0[i]));
        mag = fmax(mag, fabs(y0[i]));
    }
    print_message("outputs: max |factorised - product| %.3g (max |y| %.3g)\n", diff, mag);
    assert_true(diff <= 1e-4 * (1.0 + mag));
    efc_exec_free(e0);
    efc_exec_free(e1);
    efc_free(s);
    efc_free(u);
    efc_free(vt);
    efc_model_free(orig);
    efc_model_free(m);
}

static void test_energy_and_limits(void **state)
{
    (void)state;
    struct efc_model *m = mlp();
    struct efc_lowrank_report rep;
    /* all of the energy: the full rank, which saves nothing: every layer kept */
    enum efc_status st = efc_lowrank(m, 0, 1.0, &rep);
    if (st == EFC_EUNSUPPORTED)
        skip();
    assert_int_equal(st, EFC_OK);
    assert_int_equal(rep.factorised, 0);
    assert_int_equal(m->n_nodes, 6 + 0 * rep.dense_layers); /* mlp: 3 Dense + 2 ReLU + flatten */
    efc_model_free(m);
    m = mlp();
    assert_int_equal(efc_lowrank(m, 0, 0.5, &rep), EFC_OK);
    assert_true(rep.factorised >= 2);
    assert_true(rep.params_after < rep.params_before);
    efc_model_free(m);
    m = mlp();
    assert_int_equal(efc_lowrank(m, 301, 0.0, &rep), EFC_EINVAL); /* largest limit: 300 */
    assert_non_null(strstr(efc_err_detail(), "rank=301 is above every Dense layer's rank"));
    assert_int_equal(efc_lowrank(m, 0, 0.0, &rep), EFC_EINVAL);
    assert_int_equal(efc_lowrank_max_rank(m), 300);
    efc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eckart_young),
        cmocka_unit_test(test_energy_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
