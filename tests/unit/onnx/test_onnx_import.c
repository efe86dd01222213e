/* test_onnx_import.c — ONNX import (onnx/onnx_import.h) against PyTorch.
 *
 * Fixtures come from tests/fixtures/onnx/export.py (PyTorch 1.13 / ONNX 1.12): each model is
 * imported, run by the FP32 executor on the committed raw inputs, and compared with PyTorch's
 * outputs (max |diff| <= 1e-4). Models the importer must refuse give the expected status and
 * a detail naming the node, op or tensor. Every prefix of a fixture, and copies with bytes
 * flipped, must be refused or imported without a crash (run under ASan+UBSan too).
 */
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
#include "common/efc_fs.h"
#include "model/dataset.h"
#include "model/efm.h"
#include "model/exec.h"
#include "onnx/onnx_import.h"

#define TOL 1e-4

static void path_of(char *buf, size_t n, const char *name, const char *suffix)
{
    const char *src = getenv("EFC_SOURCE_DIR");
    snprintf(buf, n, "%s/tests/fixtures/onnx/%s%s", src ? src : "..", name, suffix);
}

/* Imports fixture `name` and returns max |efc - torch| over its committed inputs. */
static double run_fixture(const char *name, int reencode)
{
    char p[512];
    struct efc_model *m = NULL;
    struct efc_exec *e = NULL;
    struct efc_exec_opts eo = {0};
    enum efc_dtype dt;
    int32_t ind, outd, idims[4], odims[4];
    float *x = NULL, *y = NULL;
    const float *got;
    double maxd = 0;
    enum efc_status st;

    path_of(p, sizeof(p), name, ".onnx");
    st = efc_onnx_import_file(p, NULL, &m);
    if (st)
        fprintf(stderr, "%s: %s\n", name, efc_err_detail());
    assert_int_equal(st, EFC_OK);
    if (reencode) { /* the .efm round trip keeps everything the executor needs */
        void *buf;
        size_t len;
        struct efc_model *m2;
        assert_int_equal(efc_efm_encode(m, &buf, &len), EFC_OK);
        assert_int_equal(efc_efm_decode(buf, len, name, &m2), EFC_OK);
        efc_free(buf);
        efc_model_free(m);
        m = m2;
    }
    path_of(p, sizeof(p), name, ".in.npy");
    assert_int_equal(efc_npy_read(p, &dt, &ind, idims, (void **)&x, 1 << 24), EFC_OK);
    path_of(p, sizeof(p), name, ".out.npy");
    assert_int_equal(efc_npy_read(p, &dt, &outd, odims, (void **)&y, 1 << 24), EFC_OK);
    assert_int_equal(idims[0], odims[0]);
    eo.max_batch = idims[0];
    assert_int_equal(efc_exec_new(m, &eo, &e), EFC_OK);
    {
        size_t in_per = 1, out_per = 1;
        for (int32_t i = 1; i < ind; i++)
            in_per *= (size_t)idims[i];
        for (int32_t i = 1; i < outd; i++)
            out_per *= (size_t)odims[i];
        assert_int_equal(efc_exec_input_size(e), (int32_t)in_per);
        assert_int_equal(efc_exec_output_size(e), (int32_t)out_per);
        /* batch 1 and the whole batch must agree with PyTorch */
        for (int32_t b = 0; b < idims[0]; b++) {
            assert_int_equal(efc_exec_run(e, x + b * in_per, 1, &got), EFC_OK);
            for (size_t i = 0; i < out_per; i++)
                maxd = fmax(maxd, fabs((double)got[i] - y[b * out_per + i]));
        }
        assert_int_equal(efc_exec_run(e, x, idims[0], &got), EFC_OK);
        for (size_t i = 0; i < out_per * (size_t)idims[0]; i++)
            maxd = fmax(maxd, fabs((double)got[i] - y[i]));
    }
    efc_exec_free(e);
    efc_model_free(m);
    efc_free(x);
    efc_free(y);
    return maxd;
}

static const char *const fixtures[] = {
    "conv", "conv_groups", "conv_dw", "conv_pads", "gemm", "gemm_alpha", "float_data",
    "matmul", "matmul_add", "relu", "relu6", "maxpool", "avgpool", "avgpool_incl", "gap",
    "batchnorm", "softmax", "softmax13", "add", "reshape", "identity_dropout_constant",
    "clip_both", "clip_min", "clip_max",
    "mlp", "lenet", "cnn_bn", "dwsep",
};
#define N_FIXTURES (sizeof(fixtures) / sizeof(fixtures[0]))

static void test_fixtures_match_pytorch(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_FIXTURES; i++) {
        double d = run_fixture(fixtures[i], (int)(i & 1));
        printf("%-28s max |efc - torch| = %.3g\n", fixtures[i], d);
        if (!(d <= TOL))
            fail_msg("%s: max abs diff %g > %g", fixtures[i], d, TOL);
    }
}

static void expect_refused(const char *name, enum efc_status want, const char *text)
{
    char p[512];
    struct efc_model *m = NULL;
    enum efc_status st;
    path_of(p, sizeof(p), name, ".onnx");
    efc_err_clear();
    st = efc_onnx_import_file(p, NULL, &m);
    printf("%-14s %s: %s\n", name, efc_status_str(st), efc_err_detail());
    assert_int_equal(st, want);
    assert_null(m);
    if (!strstr(efc_err_detail(), text))
        fail_msg("%s: detail '%s' lacks '%s'", name, efc_err_detail(), text);
}

static void test_unsupported_named(void **state)
{
    (void)state;
    expect_refused("bad_op", EFC_EUNSUPPORTED, "node 0 'sig' (Sigmoid): operator not supported");
    expect_refused("bad_clip", EFC_EUNSUPPORTED,
                   "node 0 'clamp' (Clip): min and max must be finite with min < max");
    expect_refused("bad_dilation", EFC_EUNSUPPORTED, "node 0 'dconv' (Conv): dilations must be 1");
    expect_refused("bad_dtype", EFC_EUNSUPPORTED, "tensor 'W' has data type DOUBLE");
    expect_refused("bad_external", EFC_EUNSUPPORTED, "tensor 'W' uses external data");
    expect_refused("bad_spatial", EFC_EUNSUPPORTED, "dimension 2 is dynamic");
    expect_refused("bad_opset", EFC_EUNSUPPORTED, "opset 9");
}

static void test_norm_options_and_metadata(void **state)
{
    char p[512];
    struct efc_model *m = NULL;
    struct efc_onnx_opts o = {0};
    struct efc_input_norm n;
    (void)state;
    path_of(p, sizeof(p), "mlp", ".onnx"); /* carries efc.input_* metadata */
    assert_int_equal(efc_onnx_import_file(p, NULL, &m), EFC_OK);
    assert_int_equal(m->norm.n, 1);
    assert_true(fabsf(m->norm.scale[0] - 1.0f / 255.0f) < 1e-9f);
    assert_true(fabsf(m->norm.mean[0] - 0.2860f) < 1e-7f && fabsf(m->norm.std[0] - 0.3530f) < 1e-7f);
    efc_model_free(m);
    /* options override the metadata */
    assert_int_equal(efc_onnx_parse_norm("2", NULL, "4", "t", &o.norm), EFC_OK);
    assert_int_equal(efc_onnx_import_file(p, &o, &m), EFC_OK);
    assert_true(m->norm.n == 1 && m->norm.scale[0] == 2.0f && m->norm.mean[0] == 0.0f &&
                m->norm.std[0] == 4.0f);
    efc_model_free(m);
    /* per-channel lists: 3 channels for conv's 3-channel input; 2 channels is refused */
    assert_int_equal(efc_onnx_parse_norm("1", "0.1,0.2,0.3", "1,2,3", "t", &o.norm), EFC_OK);
    assert_int_equal(o.norm.n, 3);
    assert_true(o.norm.mean[2] == 0.3f && o.norm.std[1] == 2.0f && o.norm.scale[2] == 1.0f);
    path_of(p, sizeof(p), "conv", ".onnx");
    assert_int_equal(efc_onnx_import_file(p, &o, &m), EFC_OK);
    efc_model_free(m);
    assert_int_equal(efc_onnx_parse_norm(NULL, "0.1,0.2", NULL, "t", &o.norm), EFC_OK);
    assert_int_equal(efc_onnx_import_file(p, &o, &m), EFC_EPROTO);
    /* bad lists */
    assert_int_equal(efc_onnx_parse_norm("1,2", "1,2,3", NULL, "t", &n), EFC_EINVAL);
    assert_int_equal(efc_onnx_parse_norm("x", NULL, NULL, "t", &n), EFC_EINVAL);
    assert_int_equal(efc_onnx_parse_norm(NULL, NULL, "0", "t", &n), EFC_EINVAL);
    assert_int_equal(efc_onnx_parse_norm("1,", NULL, NULL, "t", &n), EFC_EINVAL);
    assert_int_equal(efc_onnx_parse_norm("1,2,3,4,5", NULL, NULL, "t", &n), EFC_EINVAL);
    assert_int_equal(efc_onnx_parse_norm(NULL, NULL, NULL, "t", &n), EFC_OK);
    assert_int_equal(n.n, 0);
}

/* Every prefix (all of a small model, a stride over a big one) and byte flips. */
static void test_truncated_and_corrupt(void **state)
{
    static const char *const names[] = {"conv_pads", "identity_dropout_constant", "cnn_bn",
                                        "relu6"};
    (void)state;
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        char p[512];
        uint8_t *buf, *cp;
        size_t len, step, refused = 0;
        struct efc_model *m;
        path_of(p, sizeof(p), names[k], ".onnx");
        assert_int_equal(efc_fs_read_all(p, 1 << 24, (void **)&buf, &len), EFC_OK);
        step = len > 4000 ? len / 2000 : 1;
        for (size_t cut = 0; cut < len; cut += step) {
            enum efc_status st = efc_onnx_import(buf, cut, NULL, &m);
            if (st == EFC_OK)
                efc_model_free(m); /* a prefix can be a valid smaller message */
            else
                refused++;
            assert_true(st == EFC_OK || st == EFC_EPROTO || st == EFC_EUNSUPPORTED);
        }
        assert_true(refused > 0);
        cp = efc_malloc(len);
        assert_non_null(cp);
        srand(6);
        for (int it = 0; it < 300; it++) {
            enum efc_status st;
            memcpy(cp, buf, len);
            for (int f = 0; f < 1 + it % 4; f++)
                cp[(size_t)rand() % len] ^= (uint8_t)(1 + rand() % 255);
            st = efc_onnx_import(cp, len, NULL, &m);
            if (st == EFC_OK)
                efc_model_free(m);
        }
        efc_free(cp);
        efc_free(buf);
    }
}

static void test_garbage_and_nesting(void **state)
{
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0x01};
    struct efc_model *m;
    size_t depth = 100000, len = 0;
    uint8_t *deep = efc_malloc(depth * 12 + 16);
    (void)state;
    assert_int_equal(efc_onnx_import(junk, sizeof(junk), NULL, &m), EFC_EPROTO);
    assert_int_equal(efc_onnx_import(junk, 0, NULL, &m), EFC_EPROTO);
    /* Model.graph { node { attribute { g { node { ... } } } } } nested 100000 deep, written
     * back to front: the depth guard must refuse it without recursing that deep. */
    assert_non_null(deep);
    {
        size_t cap = depth * 12 + 16, pos = cap, inner = 0;
        static const uint8_t tags[3] = {0x0a /* Graph.node */, 0x32 /* Attribute.g */,
                                        0x2a /* Node.attribute */};
        for (size_t i = 0; i <= depth; i++) {
            /* i == depth: the outermost field, Model.graph; going inwards (i decreasing from
             * 99999, i % 3 = 0, 2, 1, ...) Graph.node, Node.attribute, Attribute.g, ... */
            uint8_t tag = i == depth ? 0x3a : tags[i % 3];
            size_t v = inner;
            uint8_t var[10];
            int nv = 0;
            do {
                var[nv++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
                v >>= 7;
            } while (v);
            pos -= (size_t)nv;
            memcpy(deep + pos, var, (size_t)nv);
            deep[--pos] = tag;
            inner = cap - pos;
        }
        len = cap - pos;
        memmove(deep, deep + pos, len);
    }
    efc_err_clear();
    assert_int_equal(efc_onnx_import(deep, len, NULL, &m), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "nested deeper"));
    efc_free(deep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_match_pytorch),
        cmocka_unit_test(test_unsupported_named),
        cmocka_unit_test(test_norm_options_and_metadata),
        cmocka_unit_test(test_truncated_and_corrupt),
        cmocka_unit_test(test_garbage_and_nesting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
