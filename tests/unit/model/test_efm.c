/* test_efm.c — .efm round trip and one test per corruption class (docs/format.md).
 *
 * Round trip: a small hand-built model with every op attribute, per-channel qparams and
 * metadata, and the built-in lenet5, are saved, loaded (mmap) and compared field by field and
 * byte by byte; re-encoding a loaded model reproduces the original file exactly.
 * Corruptions are written to files and loaded, each asserting its own status and that the
 * detail names the file. Structural corruptions recompute the checksum so that they are
 * caught by the structure checks, not as EHASH.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "efm_bytes.h"

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_sha256.h"
#include "model/arch.h"
#include "model/efm.h"

static char tmpdir[256];

/* Section table entry of `kind`: pointer to the 24-byte entry. */
static uint8_t *sec_entry(uint8_t *buf, uint32_t kind)
{
    uint32_t n = rd32(buf + 24);
    for (uint32_t i = 0; i < n; i++)
        if (rd32(buf + 64 + 24 * i) == kind)
            return buf + 64 + 24 * i;
    fail_msg("section kind %u not found", kind);
    return NULL;
}

/* Record i of the tensors (kind 2, 128-byte records) or nodes (kind 3, 168-byte) section. */
static uint8_t *record(uint8_t *buf, uint32_t kind, uint32_t i)
{
    uint8_t *e = sec_entry(buf, kind);
    return buf + rd64(e + 8) + 8 + (uint64_t)i * (kind == 2 ? 128 : 168);
}

/* ---- a small model that exercises every attribute and qparams ---- */
static void fill(struct efc_model *m, int32_t t, float base)
{
    float *p = m->tensors[t].data;
    size_t n = efc_tensor_numel(&m->tensors[t]);
    for (size_t i = 0; i < n; i++)
        p[i] = base + 0.01f * (float)i;
}

static struct efc_model *tiny_model(void)
{
    struct efc_model *m;
    struct efc_node_attrs a;
    int32_t x, w, b, c, g, be, mu, var, bn, r, pl, fl, w2, b2, y, sm, dims[4], in[5];

    assert_int_equal(efc_model_new(&m), EFC_OK);
    snprintf(m->name, sizeof(m->name), "tiny \"quoted\"\tname");
    snprintf(m->arch, sizeof(m->arch), "tiny-cnn");
    dims[0] = 1, dims[1] = 8, dims[2] = 8;
    assert_int_equal(efc_model_add_tensor(m, "input", EFC_DTYPE_F32, 3, dims, EFC_TENSOR_INPUT, &x),
                     EFC_OK);
    dims[0] = 4, dims[1] = 1, dims[2] = 3, dims[3] = 3;
    assert_int_equal(
        efc_model_add_tensor(m, "conv.w", EFC_DTYPE_F32, 4, dims, EFC_TENSOR_PARAM, &w), EFC_OK);
    dims[0] = 4;
    assert_int_equal(
        efc_model_add_tensor(m, "conv.b", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_PARAM, &b), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "bn.g", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_PARAM, &g),
                     EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "bn.b", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_PARAM, &be),
                     EFC_OK);
    assert_int_equal(
        efc_model_add_tensor(m, "bn.mean", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_PARAM, &mu), EFC_OK);
    assert_int_equal(
        efc_model_add_tensor(m, "bn.var", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_PARAM, &var), EFC_OK);
    dims[0] = 4, dims[1] = 8, dims[2] = 8;
    assert_int_equal(efc_model_add_tensor(m, "conv.out", EFC_DTYPE_F32, 3, dims, 0, &c), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "bn.out", EFC_DTYPE_F32, 3, dims, 0, &bn), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "relu.out", EFC_DTYPE_F32, 3, dims, 0, &r), EFC_OK);
    dims[1] = 3, dims[2] = 3;
    assert_int_equal(efc_model_add_tensor(m, "pool.out", EFC_DTYPE_F32, 3, dims, 0, &pl), EFC_OK);
    dims[0] = 36;
    assert_int_equal(efc_model_add_tensor(m, "flat", EFC_DTYPE_F32, 1, dims, 0, &fl), EFC_OK);
    dims[0] = 10, dims[1] = 36;
    assert_int_equal(efc_model_add_tensor(m, "fc.w", EFC_DTYPE_F32, 2, dims, EFC_TENSOR_PARAM, &w2),
                     EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "fc.b", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_PARAM, &b2),
                     EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "logits", EFC_DTYPE_F32, 1, dims, 0, &y), EFC_OK);
    assert_int_equal(
        efc_model_add_tensor(m, "probs", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_OUTPUT, &sm), EFC_OK);
    fill(m, w, -0.2f);
    fill(m, b, 0.1f);
    fill(m, g, 1.0f);
    fill(m, be, 0.0f);
    fill(m, mu, 0.05f);
    fill(m, var, 0.9f);
    fill(m, w2, -0.1f);
    fill(m, b2, 0.3f);

    memset(&a, 0, sizeof(a));
    a.kernel[0] = a.kernel[1] = 3;
    a.stride[0] = a.stride[1] = 1;
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
    a.groups = 1;
    in[0] = x, in[1] = w, in[2] = b;
    assert_int_equal(efc_model_add_node(m, EFC_OP_CONV2D, "conv", in, 3, c, &a, NULL), EFC_OK);
    memset(&a, 0, sizeof(a));
    a.eps = 1e-5f;
    a.momentum = 0.1f;
    in[0] = c, in[1] = g, in[2] = be, in[3] = mu, in[4] = var;
    assert_int_equal(efc_model_add_node(m, EFC_OP_BATCHNORM, "bn", in, 5, bn, &a, NULL), EFC_OK);
    memset(&a, 0, sizeof(a));
    in[0] = bn;
    assert_int_equal(efc_model_add_node(m, EFC_OP_RELU, "relu", in, 1, r, &a, NULL), EFC_OK);
    a.kernel[0] = a.kernel[1] = 3;
    a.stride[0] = a.stride[1] = 2;
    a.pad[2] = a.pad[3] = 0;
    a.count_include_pad = 1;
    in[0] = r;
    assert_int_equal(efc_model_add_node(m, EFC_OP_AVGPOOL, "pool", in, 1, pl, &a, NULL), EFC_OK);
    memset(&a, 0, sizeof(a));
    in[0] = pl;
    assert_int_equal(efc_model_add_node(m, EFC_OP_FLATTEN, "flatten", in, 1, fl, &a, NULL), EFC_OK);
    a.act = EFC_ACT_RELU6;
    in[0] = fl, in[1] = w2, in[2] = b2;
    assert_int_equal(efc_model_add_node(m, EFC_OP_DENSE, "fc", in, 3, y, &a, NULL), EFC_OK);
    memset(&a, 0, sizeof(a));
    in[0] = y;
    assert_int_equal(efc_model_add_node(m, EFC_OP_SOFTMAX, "softmax", in, 1, sm, &a, NULL), EFC_OK);

    /* per-channel qparams on the conv weight, per-tensor on the flattened activation */
    {
        struct efc_qparams *q = efc_calloc(1, sizeof(*q));
        assert_non_null(q);
        q->n = 4;
        q->axis = 0;
        q->scale = efc_malloc(4 * sizeof(float));
        q->zero_point = efc_malloc(4 * sizeof(int32_t));
        assert_non_null(q->scale);
        assert_non_null(q->zero_point);
        for (int i = 0; i < 4; i++) {
            q->scale[i] = 0.01f * (float)(i + 1);
            q->zero_point[i] = i - 2;
        }
        m->tensors[w].q = q;
        q = efc_calloc(1, sizeof(*q));
        assert_non_null(q);
        q->n = 1;
        q->scale = efc_malloc(sizeof(float));
        q->zero_point = efc_malloc(sizeof(int32_t));
        assert_non_null(q->scale);
        assert_non_null(q->zero_point);
        q->scale[0] = 0.5f;
        q->zero_point[0] = -7;
        m->tensors[fl].q = q;
    }
    m->norm.n = 1;
    m->norm.scale[0] = 1.0f / 255.0f;
    m->norm.mean[0] = 0.2860f;
    m->norm.std[0] = 0.3530f;
    m->meta_json = efc_strdup("{\"policy\":\"int8(calib=kl)\",\"acc\":0.91,"
                              "\"tags\":[\"a\",{\"b\":null}],\"name\":\"ignored\"}");
    assert_non_null(m->meta_json);
    assert_int_equal(efc_model_check(m), EFC_OK);
    return m;
}

static void assert_models_equal(const struct efc_model *a, const struct efc_model *b)
{
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->arch, b->arch);
    assert_int_equal(a->input, b->input);
    assert_int_equal(a->output, b->output);
    assert_int_equal(a->norm.n, b->norm.n);
    assert_memory_equal(&a->norm, &b->norm, sizeof(a->norm));
    assert_int_equal(a->n_tensors, b->n_tensors);
    assert_int_equal(a->n_nodes, b->n_nodes);
    for (int32_t i = 0; i < a->n_tensors; i++) {
        const struct efc_tensor *s = &a->tensors[i], *t = &b->tensors[i];
        assert_string_equal(s->name, t->name);
        assert_int_equal(s->dtype, t->dtype);
        assert_int_equal(s->flags, t->flags);
        assert_int_equal(s->ndim, t->ndim);
        assert_memory_equal(s->dims, t->dims, sizeof(s->dims[0]) * (size_t)s->ndim);
        if (s->flags & EFC_TENSOR_PARAM) {
            assert_non_null(t->data);
            assert_memory_equal(s->data, t->data, efc_tensor_bytes(s));
        }
        assert_int_equal(s->q != NULL, t->q != NULL);
        if (s->q) {
            assert_int_equal(s->q->n, t->q->n);
            if (s->q->n > 1)
                assert_int_equal(s->q->axis, t->q->axis);
            assert_memory_equal(s->q->scale, t->q->scale, sizeof(float) * (size_t)s->q->n);
            assert_memory_equal(s->q->zero_point, t->q->zero_point,
                                sizeof(int32_t) * (size_t)s->q->n);
        }
    }
    for (int32_t i = 0; i < a->n_nodes; i++) {
        const struct efc_node *s = &a->nodes[i], *t = &b->nodes[i];
        assert_int_equal(s->op, t->op);
        assert_string_equal(s->name, t->name);
        assert_int_equal(s->n_inputs, t->n_inputs);
        assert_memory_equal(s->inputs, t->inputs, sizeof(int32_t) * (size_t)s->n_inputs);
        assert_int_equal(s->output, t->output);
        assert_memory_equal(&s->a, &t->a, sizeof(s->a));
    }
}

static void path_of(char *out, size_t n, const char *name)
{
    int k = snprintf(out, n, "%s/%s", tmpdir, name);
    assert_true(k > 0 && (size_t)k < n);
}

/* Write buf as tmpdir/name, load it, expect `want`; the detail must name the file. */
static void expect_load(const char *name, const void *buf, size_t len, enum efc_status want)
{
    char path[512];
    struct efc_model *m = (struct efc_model *)1;
    enum efc_status st;

    path_of(path, sizeof(path), name);
    assert_int_equal(efc_fs_write_atomic(path, buf, len), EFC_OK);
    efc_err_clear();
    st = efc_efm_load(path, &m);
    if (st != want)
        fail_msg("%s: got %s, want %s (%s)", name, efc_status_str(st), efc_status_str(want),
                 efc_err_detail());
    assert_null(m);
    assert_non_null(strstr(efc_err_detail(), name));
    /* the buffer decoder agrees */
    st = efc_efm_decode(buf, len, name, &m);
    assert_int_equal(st, want);
    assert_non_null(strstr(efc_err_detail(), name));
    unlink(path);
}

static uint8_t *encode_tiny(size_t *len)
{
    struct efc_model *m = tiny_model();
    void *buf;
    assert_int_equal(efc_efm_encode(m, &buf, len), EFC_OK);
    efc_model_free(m);
    return buf;
}

/* ---- tests ---- */

static void test_round_trip_tiny(void **state)
{
    struct efc_model *m = tiny_model(), *l;
    char path[512];
    void *b1, *b2;
    size_t n1, n2;
    (void)state;

    path_of(path, sizeof(path), "tiny.efm");
    assert_int_equal(efc_efm_save(m, path), EFC_OK);
    assert_int_equal(efc_efm_load(path, &l), EFC_OK);
    assert_models_equal(m, l);
    assert_string_equal(l->meta_json, "{\"policy\":\"int8(calib=kl)\",\"acc\":0.91,"
                                      "\"tags\":[\"a\",{\"b\":null}]}");
    /* weights are used in place: in the mapping, aligned, not owned */
    assert_non_null(l->map);
    for (int32_t i = 0; i < l->n_tensors; i++) {
        const struct efc_tensor *t = &l->tensors[i];
        if (!(t->flags & EFC_TENSOR_PARAM))
            continue;
        assert_int_equal(t->owns_data, 0);
        assert_int_equal((uintptr_t)t->data % 64, 0);
        assert_true((const char *)t->data >= (const char *)l->map &&
                    (const char *)t->data + efc_tensor_bytes(t) <=
                        (const char *)l->map + l->map_bytes);
    }
    /* deterministic: re-encoding the loaded model gives the same bytes */
    assert_int_equal(efc_efm_encode(m, &b1, &n1), EFC_OK);
    assert_int_equal(efc_efm_encode(l, &b2, &n2), EFC_OK);
    assert_int_equal(n1, n2);
    assert_int_equal(n1, l->map_bytes);
    assert_memory_equal(b1, b2, n1);
    assert_memory_equal(b1, l->map, n1);
    efc_free(b1);
    efc_free(b2);
    efc_model_free(l);
    efc_model_free(m);
    unlink(path);
}

static void test_round_trip_lenet5(void **state)
{
    struct efc_model *m, *l, *c;
    char path[512];
    (void)state;

    assert_int_equal(efc_arch_build("lenet5", 1, &m), EFC_OK);
    path_of(path, sizeof(path), "lenet5.efm");
    assert_int_equal(efc_efm_save(m, path), EFC_OK);
    assert_int_equal(efc_efm_load(path, &l), EFC_OK);
    assert_models_equal(m, l);
    assert_true(m->meta_json == NULL || l->meta_json != NULL);
    /* a clone of a mapped model owns its data and survives the mapping */
    assert_int_equal(efc_model_clone(l, &c), EFC_OK);
    efc_model_free(l);
    assert_models_equal(m, c);
    efc_model_free(c);
    efc_model_free(m);
    unlink(path);
}

static void test_no_meta(void **state)
{
    struct efc_model *m = tiny_model(), *l;
    void *buf;
    size_t len;
    (void)state;

    efc_free(m->meta_json);
    m->meta_json = NULL;
    assert_int_equal(efc_efm_encode(m, &buf, &len), EFC_OK);
    assert_int_equal(efc_efm_decode(buf, len, "nometa.efm", &l), EFC_OK);
    assert_null(l->meta_json);
    assert_models_equal(m, l);
    efc_model_free(l);
    efc_free(buf);
    /* meta_json that is not an object is a caller bug */
    m->meta_json = efc_strdup("[1,2]");
    assert_int_equal(efc_efm_encode(m, &buf, &len), EFC_EINVAL);
    efc_free(buf);
    efc_model_free(m);
}

static void test_bad_magic(void **state)
{
    size_t len;
    uint8_t *buf = encode_tiny(&len);
    (void)state;
    buf[0] ^= 0x20;
    expect_load("badmagic.efm", buf, len, EFC_EPROTO);
    efc_free(buf);
}

static void test_truncated(void **state)
{
    size_t len, cuts[8];
    uint8_t *buf = encode_tiny(&len);
    (void)state;

    cuts[0] = 0;
    cuts[1] = 7;
    cuts[2] = 63;
    cuts[3] = 64;
    cuts[4] = 100;
    cuts[5] = len / 2;
    cuts[6] = len - 64;
    cuts[7] = len - 1;
    for (int i = 0; i < 8; i++)
        expect_load("truncated.efm", buf, cuts[i], EFC_EPROTO);
    efc_free(buf);
}

static void test_section_offset_out_of_range(void **state)
{
    size_t len;
    uint8_t *buf = encode_tiny(&len);
    uint8_t *e = sec_entry(buf, 5); /* data */
    (void)state;

    wr64(e + 8, len + 4096);
    rehash(buf, len);
    expect_load("secoff.efm", buf, len, EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "section 'data'"));
    assert_non_null(strstr(efc_err_detail(), "beyond file size"));
    efc_free(buf);

    /* overlapping the header */
    buf = encode_tiny(&len);
    e = sec_entry(buf, 3);
    wr64(e + 8, 32);
    rehash(buf, len);
    expect_load("secoverlap.efm", buf, len, EFC_EPROTO);
    efc_free(buf);
}

static void test_tensor_offset_out_of_range(void **state)
{
    size_t len;
    uint8_t *buf = encode_tiny(&len);
    uint8_t *r = record(buf, 2, 1); /* conv.w */
    (void)state;

    wr64(r + 104, (uint64_t)len - 64);
    rehash(buf, len);
    expect_load("tensoff.efm", buf, len, EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "section 'tensors': tensor 1 'conv.w': data"));
    efc_free(buf);

    /* misaligned inside the data section */
    buf = encode_tiny(&len);
    r = record(buf, 2, 1);
    wr64(r + 104, rd64(r + 104) + 4);
    rehash(buf, len);
    expect_load("tensalign.efm", buf, len, EFC_EPROTO);
    efc_free(buf);
}

static void test_checksum_mismatch(void **state)
{
    size_t len;
    uint8_t *buf = encode_tiny(&len);
    (void)state;

    buf[len - 3] ^= 1; /* a weight bit */
    expect_load("flip.efm", buf, len, EFC_EHASH);
    buf[len - 3] ^= 1;
    buf[40] ^= 1; /* the stored checksum itself */
    expect_load("flipsum.efm", buf, len, EFC_EHASH);
    efc_free(buf);
}

static void test_absurd_shape(void **state)
{
    size_t len;
    uint8_t *buf = encode_tiny(&len);
    uint8_t *r = record(buf, 2, 1);
    (void)state;

    for (int k = 0; k < 4; k++)
        wr32(r + 76 + 4 * k, 0x7fffffff);
    rehash(buf, len);
    expect_load("absurd.efm", buf, len, EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "absurd shape"));
    efc_free(buf);

    /* negative and zero dims */
    buf = encode_tiny(&len);
    r = record(buf, 2, 0);
    wr32(r + 76, 0xffffffffu);
    rehash(buf, len);
    expect_load("negdim.efm", buf, len, EFC_EPROTO);
    efc_free(buf);

    /* shape consistent with itself but not with the data size */
    buf = encode_tiny(&len);
    r = record(buf, 2, 2); /* conv.b [4] */
    wr32(r + 76, 5);
    rehash(buf, len);
    expect_load("datasize.efm", buf, len, EFC_EPROTO);
    efc_free(buf);
}

static void test_unsupported_version(void **state)
{
    size_t len;
    uint8_t *buf = encode_tiny(&len);
    (void)state;

    wr32(buf + 8, 2);
    expect_load("v2.efm", buf, len, EFC_EVERSION);
    wr32(buf + 8, 1);
    wr32(buf + 12, 4); /* unknown flag (0x1 u16 and 0x2 Rice col_idx are known) */
    expect_load("flags.efm", buf, len, EFC_EVERSION);
    efc_free(buf);
}

static void test_bad_enums_and_indices(void **state)
{
    size_t len;
    uint8_t *buf;
    (void)state;

    buf = encode_tiny(&len);
    wr32(record(buf, 3, 2) + 64, 99); /* op */
    rehash(buf, len);
    expect_load("badop.efm", buf, len, EFC_EPROTO);
    efc_free(buf);

    buf = encode_tiny(&len);
    wr32(record(buf, 2, 3) + 64, 7); /* dtype */
    rehash(buf, len);
    expect_load("baddtype.efm", buf, len, EFC_EPROTO);
    efc_free(buf);

    buf = encode_tiny(&len);
    wr32(record(buf, 3, 0) + 72 + 4, 1000); /* conv input 1 */
    rehash(buf, len);
    expect_load("badinput.efm", buf, len, EFC_EPROTO);
    efc_free(buf);

    buf = encode_tiny(&len);
    memset(record(buf, 3, 0), 'x', 64); /* name without NUL */
    rehash(buf, len);
    expect_load("badname.efm", buf, len, EFC_EPROTO);
    efc_free(buf);

    buf = encode_tiny(&len);
    wr32(record(buf, 2, 1) + 92, 3); /* 3 qparams on a 4-channel axis */
    rehash(buf, len);
    expect_load("badq.efm", buf, len, EFC_EPROTO);
    efc_free(buf);

    buf = encode_tiny(&len);
    wr32(buf + 24, 1000); /* section count */
    rehash(buf, len);
    expect_load("nsec.efm", buf, len, EFC_EPROTO);
    efc_free(buf);

    /* graph-level error found by efc_model_check: the relu reads its own output */
    buf = encode_tiny(&len);
    {
        uint8_t *n = record(buf, 3, 2);
        wr32(n + 72, rd32(n + 92));
    }
    rehash(buf, len);
    expect_load("graph.efm", buf, len, EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "graph"));
    efc_free(buf);
}

static void test_missing_file(void **state)
{
    struct efc_model *m;
    char path[512];
    (void)state;

    path_of(path, sizeof(path), "does-not-exist.efm");
    assert_int_equal(efc_efm_load(path, &m), EFC_ENOTFOUND);
    assert_non_null(strstr(efc_err_detail(), "does-not-exist.efm"));
}

static void test_every_truncation_and_byte_flip(void **state)
{
    /* Never crash: every prefix, and a flip of every header/table byte with the checksum
     * recomputed, must give an error or a valid model (never a crash or leak). */
    size_t len;
    uint8_t *buf = encode_tiny(&len), *cp = efc_malloc(len);
    struct efc_model *m;
    (void)state;

    assert_non_null(cp);
    for (size_t n = 0; n < len; n += 7)
        assert_int_equal(efc_efm_decode(buf, n, "prefix.efm", &m), EFC_EPROTO);
    for (size_t i = 0; i < len; i++) {
        if (i >= 32 && i < 64)
            continue;
        memcpy(cp, buf, len);
        cp[i] ^= 0x81;
        rehash(cp, len);
        if (efc_efm_decode(cp, len, "flip.efm", &m) == EFC_OK)
            efc_model_free(m);
    }
    efc_free(cp);
    efc_free(buf);
}

static void test_alloc_failures(void **state)
{
    /* Fail the k-th allocation for k = 1, 2, ...: encode and decode return ENOMEM (never
     * crash or leak, which ASan would report) until k is past their last allocation. */
    struct efc_model *m = tiny_model(), *l;
    size_t len;
    uint8_t *buf = encode_tiny(&len);
    int enc_ok = 0, dec_ok = 0;
    (void)state;

    for (uint64_t k = 1; k < 200 && !(enc_ok && dec_ok); k++) {
        void *out;
        size_t n;
        enum efc_status st;
        efc_alloc_fail_at(k);
        st = efc_efm_encode(m, &out, &n);
        efc_alloc_fail_at(0);
        if (st == EFC_OK) {
            assert_int_equal(n, len);
            efc_free(out);
            enc_ok = 1;
        } else {
            assert_int_equal(st, EFC_ENOMEM);
        }
        efc_alloc_fail_at(k);
        st = efc_efm_decode(buf, len, "oom.efm", &l);
        efc_alloc_fail_at(0);
        if (st == EFC_OK) {
            assert_models_equal(m, l);
            efc_model_free(l);
            dec_ok = 1;
        } else {
            assert_int_equal(st, EFC_ENOMEM);
            assert_null(l);
        }
    }
    assert_true(enc_ok && dec_ok);
    efc_free(buf);
    efc_model_free(m);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/efc_test_efm.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_tiny),
        cmocka_unit_test(test_round_trip_lenet5),
        cmocka_unit_test(test_no_meta),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_section_offset_out_of_range),
        cmocka_unit_test(test_tensor_offset_out_of_range),
        cmocka_unit_test(test_checksum_mismatch),
        cmocka_unit_test(test_absurd_shape),
        cmocka_unit_test(test_unsupported_version),
        cmocka_unit_test(test_bad_enums_and_indices),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_every_truncation_and_byte_flip),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
