/* test_share.c — compress/share: after weight sharing every layer holds at most 2^bits distinct
 * non-zero values, zeros stay zero and non-zeros stay non-zero, each weight moved to the
 * nearest of its layer's values, and each value is the mean of the original weights mapped to
 * it (the k-means fixed point); bits out of range are refused; the policy rule (share before
 * int8 needs weights=tensor) holds. Model: the built-in mlp, random weights, half pruned. */
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
#include "compress/compress.h"
#include "compress/prune.h"
#include "compress/share.h"
#include "model/arch.h"

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_kmeans(void **state)
{
    (void)state;
    for (int32_t bits = 1; bits <= 6; bits += 5) {
        struct efc_model *m = NULL, *orig = NULL;
        struct efc_prune p;
        int32_t layers = -1;
        assert_int_equal(efc_arch_build("mlp", 8, &m), EFC_OK);
        assert_int_equal(efc_prune_init(m, &p), EFC_OK);
        assert_int_equal(efc_prune_magnitude(m, &p, 0.5, 0.0), EFC_OK);
        efc_prune_fini(&p);
        assert_int_equal(efc_model_clone(m, &orig), EFC_OK);
        assert_int_equal(efc_share(m, bits, &layers), EFC_OK);
        assert_int_equal(layers, 3);
        for (int32_t i = 0; i < m->n_nodes; i++) {
            if (m->nodes[i].op != EFC_OP_DENSE)
                continue;
            const struct efc_tensor *t = &m->tensors[m->nodes[i].inputs[1]];
            const float *w = t->data, *w0 = orig->tensors[m->nodes[i].inputs[1]].data;
            size_t n = efc_tensor_numel(t);
            float *vals = efc_malloc(n * sizeof(float));
            size_t nv = 0;
            for (size_t j = 0; j < n; j++) {
                assert_true((w[j] == 0.0f) == (w0[j] == 0.0f));
                if (w[j] != 0.0f)
                    vals[nv++] = w[j];
            }
            qsort(vals, nv, sizeof(float), cmp_f);
            size_t nd = 0;
            for (size_t j = 0; j < nv; j++)
                if (j == 0 || vals[j] != vals[j - 1])
                    vals[nd++] = vals[j];
            assert_true(nd <= (size_t)1 << bits);
            /* nearest value, and each value the mean of what maps to it */
            double *sum = efc_calloc(nd, sizeof(double));
            size_t *cnt = efc_calloc(nd, sizeof(size_t));
            for (size_t j = 0; j < n; j++) {
                if (w0[j] == 0.0f)
                    continue;
                size_t at = 0;
                while (vals[at] != w[j])
                    at++;
                for (size_t q = 0; q < nd; q++)
                    assert_true(fabsf(w0[j] - w[j]) <= fabsf(w0[j] - vals[q]) + 1e-6f);
                sum[at] += w0[j];
                cnt[at]++;
            }
            for (size_t q = 0; q < nd; q++)
                assert_true(fabs(sum[q] / (double)cnt[q] - vals[q]) <=
                            1e-5 * (1.0 + fabs(vals[q])));
            efc_free(sum);
            efc_free(cnt);
            efc_free(vals);
        }
        efc_model_free(orig);
        efc_model_free(m);
    }
}

static void test_bad(void **state)
{
    (void)state;
    struct efc_model *m = NULL;
    struct efc_policy p;
    assert_int_equal(efc_arch_build("mlp", 8, &m), EFC_OK);
    assert_int_equal(efc_share(m, 0, NULL), EFC_EINVAL);
    assert_int_equal(efc_share(m, 9, NULL), EFC_EINVAL);
    assert_int_equal(efc_policy_parse("share(bits=5)+int8(calib=kl)", &p), EFC_OK);
    assert_int_not_equal(efc_compress_check(m, &p), EFC_OK);
    assert_non_null(strstr(efc_err_detail(), "needs the int8 step's weights=tensor"));
    assert_int_equal(efc_policy_parse("share(bits=9)+int8(weights=tensor)", &p), EFC_OK);
    assert_int_not_equal(efc_compress_check(m, &p), EFC_OK);
    assert_non_null(strstr(efc_err_detail(), "bits=9 is not an integer in [1, 8]"));
    assert_int_equal(efc_policy_parse("share(bits=4)+int8(calib=kl,weights=tensor)", &p), EFC_OK);
    assert_int_equal(efc_compress_check(m, &p), EFC_OK);
    efc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmeans),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
