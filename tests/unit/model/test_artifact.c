/* test_artifact.c — the zstd artifact container (model/artifact.h, docs/format.md).
 *
 * - Round trip, byte-identical, for the built-in archs, a lenet5 whose Dense / Conv2d weights
 *   are 90 % zero and stored CSR, and an INT8-lowered lenet5 (i8 weights at one byte: its .efm
 *   is under a third of the FP32 one), at several zstd levels; packing is deterministic; the
 *   header announces the .efm's size and SHA-256; the unpacked bytes decode as a model.
 * - Every fault is refused with its own status and detail, never a crash (ASan/UBSan build):
 *   truncation at many offsets, padding, each header byte flipped, payload bytes flipped,
 *   wrong magic / version / flags / codec, a size above max_bytes, a SHA-256 mismatch, zstd
 *   frames that lie (two frames, no content size, a different content size, a skippable
 *   frame, a truncated frame with a consistent header).
 * - The file helpers (atomic writes, errors naming the file) and allocation failures.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "efm_bytes.h"
#include <zstd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_sha256.h"
#include "model/arch.h"
#include "model/artifact.h"
#include "model/efm.h"
#include "model/exec.h"
#include "model/quant.h"

#define HDR EFC_ARTIFACT_HEADER_BYTES

static char tmpdir[256];

static void path_of(char *out, size_t n, const char *name)
{
    int k = snprintf(out, n, "%s/%s", tmpdir, name);
    assert_true(k > 0 && (size_t)k < n);
}

/* ---- models ---- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Zero the smallest `frac` of |w| in every Dense / Conv2d weight and store it CSR. */
static void prune_and_sparsify(struct efc_model *m, double frac)
{
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *nd = &m->nodes[i];
        struct efc_tensor *t;
        float *w, *mag, cut;
        size_t n;
        if (nd->op != EFC_OP_DENSE && nd->op != EFC_OP_CONV2D)
            continue;
        t = &m->tensors[nd->inputs[1]];
        w = t->data;
        n = efc_tensor_numel(t);
        mag = efc_malloc(n * sizeof(float));
        assert_non_null(mag);
        for (size_t k = 0; k < n; k++)
            mag[k] = fabsf(w[k]);
        qsort(mag, n, sizeof(float), cmp_float);
        cut = mag[(size_t)(frac * (double)n)];
        for (size_t k = 0; k < n; k++)
            if (fabsf(w[k]) < cut)
                w[k] = 0.0f;
        efc_free(mag);
        assert_int_equal(efc_tensor_sparsify(m, nd->inputs[1]), EFC_OK);
    }
}

/* INT8 lowering with fixed activation qparams (scale 0.05, zero point 128): calibration
 * quality is irrelevant here, only that the weights become i8. */
static struct efc_model *int8_model(const struct efc_model *m)
{
    struct efc_exec_opts o = {.max_batch = 1};
    struct efc_quant_opts qo = {0};
    struct efc_quant_report rep;
    struct efc_exec *e;
    struct efc_model *q = NULL;
    const struct efc_model *c;
    float *scale;
    int32_t *zp;

    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    c = efc_exec_model(e);
    scale = efc_calloc((size_t)c->n_tensors, sizeof(float));
    zp = efc_calloc((size_t)c->n_tensors, sizeof(int32_t));
    assert_non_null(scale);
    assert_non_null(zp);
    for (int32_t t = 0; t < c->n_tensors; t++) {
        if (c->tensors[t].flags & EFC_TENSOR_PARAM)
            continue;
        scale[t] = 0.05f;
        zp[t] = 128;
    }
    if (efc_quant_lower(c, scale, zp, &qo, &q, &rep) != EFC_OK)
        fail_msg("lower: %s", efc_err_detail());
    efc_free(scale);
    efc_free(zp);
    efc_exec_free(e);
    return q;
}

static uint8_t *encode(const struct efc_model *m, size_t *len)
{
    void *b;
    assert_int_equal(efc_efm_encode(m, &b, len), EFC_OK);
    return b;
}

static uint8_t *pack(const void *efm, size_t len, int level, size_t *art_len)
{
    void *a;
    if (efc_artifact_pack(efm, len, level, &a, art_len) != EFC_OK)
        fail_msg("pack: %s", efc_err_detail());
    return a;
}

/* lenet5 as an .efm (the model most fault tests use). */
static uint8_t *lenet5_efm(size_t *len)
{
    struct efc_model *m;
    uint8_t *b;
    assert_int_equal(efc_arch_build("lenet5", 3, &m), EFC_OK);
    b = encode(m, len);
    efc_model_free(m);
    return b;
}

/* ---- round trips ---- */

static void round_trip(const char *label, const uint8_t *efm, size_t len, int level,
                       size_t *art_bytes)
{
    struct efc_artifact_info info;
    struct efc_model *m;
    uint8_t *art, *art2, sum[EFC_SHA256_BYTES];
    size_t alen, alen2, olen;
    void *out;

    art = pack(efm, len, level, &alen);
    /* deterministic */
    art2 = pack(efm, len, level, &alen2);
    assert_int_equal(alen, alen2);
    assert_memory_equal(art, art2, alen);
    efc_free(art2);
    /* the header says what it holds */
    assert_memory_equal(art, "EFCA", 4);
    assert_int_equal(rd32(art + 4), 1);           /* version */
    assert_int_equal(rd32(art + 8), 0);           /* flags */
    assert_int_equal(rd32(art + 12), 1);          /* codec zstd */
    assert_int_equal(rd64(art + 16), len);        /* .efm bytes */
    assert_int_equal(rd64(art + 24), alen - HDR); /* payload bytes */
    assert_int_equal(efc_artifact_peek(art, alen, len, 0, &info), EFC_OK);
    assert_int_equal(info.version, 1);
    assert_int_equal(info.codec, 1);
    assert_int_equal(info.efm_bytes, len);
    assert_int_equal(info.payload_bytes, alen - HDR);
    efc_sha256(efm, len, sum);
    assert_memory_equal(info.efm_sha256, sum, EFC_SHA256_BYTES);
    /* a prefix is enough for the header */
    assert_int_equal(efc_artifact_peek(art, HDR, len, 1, &info), EFC_OK);
    assert_int_equal(info.efm_bytes, len);

    assert_int_equal(efc_artifact_unpack(art, alen, len, &out, &olen), EFC_OK);
    assert_int_equal(olen, len);
    assert_memory_equal(out, efm, len);
    assert_int_equal(efc_efm_decode(out, olen, label, &m), EFC_OK);
    efc_model_free(m);
    efc_free(out);
    print_message("%-16s level %3d: efm %8zu bytes, artifact %8zu bytes\n", label, level, len,
                  alen);
    if (art_bytes)
        *art_bytes = alen;
    efc_free(art);
}

static void test_round_trip_archs(void **state)
{
    (void)state;
    for (int i = 0; efc_arch_names[i]; i++) {
        struct efc_model *m;
        uint8_t *b;
        size_t len;
        assert_int_equal(efc_arch_build(efc_arch_names[i], 7, &m), EFC_OK);
        b = encode(m, &len);
        round_trip(efc_arch_names[i], b, len, 0, NULL);
        efc_model_free(m);
        efc_free(b);
    }
}

static void test_round_trip_levels(void **state)
{
    static const int levels[] = {1, 3, 0, 19, -1, -5};
    size_t len;
    uint8_t *b = lenet5_efm(&len), *a0, *a15;
    size_t n0, n15;
    (void)state;

    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        round_trip("lenet5", b, len, levels[i], NULL);
    /* level 0 is EFC_ARTIFACT_LEVEL_DEFAULT */
    a0 = pack(b, len, 0, &n0);
    a15 = pack(b, len, EFC_ARTIFACT_LEVEL_DEFAULT, &n15);
    assert_int_equal(n0, n15);
    assert_memory_equal(a0, a15, n0);
    efc_free(a0);
    efc_free(a15);
    efc_free(b);
}

static void test_round_trip_sparse_int8(void **state)
{
    struct efc_model *m, *sp, *q, *l;
    uint8_t *bd, *bs, *bq;
    size_t nd, ns, nq, ad, as, aq;
    int n_i8 = 0;
    (void)state;

    assert_int_equal(efc_arch_build("lenet5", 11, &m), EFC_OK);
    bd = encode(m, &nd);
    round_trip("lenet5", bd, nd, 0, &ad);

    /* sparse: 90 % zeros, CSR */
    assert_int_equal(efc_model_clone(m, &sp), EFC_OK);
    prune_and_sparsify(sp, 0.9);
    bs = encode(sp, &ns);
    round_trip("lenet5-csr90", bs, ns, 0, &as);
    assert_int_equal(efc_efm_decode(bs, ns, "csr", &l), EFC_OK);
    for (int32_t i = 0; i < l->n_nodes; i++)
        if (l->nodes[i].op == EFC_OP_DENSE || l->nodes[i].op == EFC_OP_CONV2D)
            assert_non_null(l->tensors[l->nodes[i].inputs[1]].sparse);
    efc_model_free(l);
    /* values + indices of 10 % of the weights: well under half the file and the artifact */
    assert_true(ns < nd / 2);
    assert_true(as < ad / 2);

    /* INT8: the weights are i8, one byte each */
    q = int8_model(m);
    for (int32_t i = 0; i < q->n_tensors; i++)
        if ((q->tensors[i].flags & EFC_TENSOR_PARAM) && q->tensors[i].dtype == EFC_DTYPE_I8) {
            assert_int_equal(efc_tensor_storage_bytes(&q->tensors[i]),
                             efc_tensor_numel(&q->tensors[i]));
            n_i8++;
        }
    assert_true(n_i8 >= 5); /* conv1, conv2, fc1..fc3 */
    bq = encode(q, &nq);
    round_trip("lenet5-int8", bq, nq, 0, &aq);
    assert_true(nq * 3 < nd);
    print_message("lenet5 efm: fp32 %zu, csr90 %zu, int8 %zu bytes\n", nd, ns, nq);

    efc_model_free(q);
    efc_model_free(sp);
    efc_model_free(m);
    efc_free(bd);
    efc_free(bs);
    efc_free(bq);
}

/* ---- faults ---- */

/* Unpack must fail with `want` and a detail containing `what`; *efm untouched (NULL). */
static void expect_unpack(const char *label, const void *art, size_t len, size_t max_bytes,
                          enum efc_status want, const char *what)
{
    void *out = (void *)1;
    size_t olen = 1;
    enum efc_status st;

    efc_err_clear();
    st = efc_artifact_unpack(art, len, max_bytes, &out, &olen);
    if (st != want)
        fail_msg("%s: got %s, want %s (%s)", label, efc_status_str(st), efc_status_str(want),
                 efc_err_detail());
    assert_null(out);
    assert_int_equal(olen, 0);
    if (what && !strstr(efc_err_detail(), what))
        fail_msg("%s: detail '%s' lacks '%s'", label, efc_err_detail(), what);
}

static void test_truncated_and_padded(void **state)
{
    size_t len, alen;
    uint8_t *efm = lenet5_efm(&len), *art = pack(efm, len, 0, &alen), *buf;
    size_t cuts[] = {0, 1, 3, 4, 8, 31, 63, 64, 65, 100, 0, 0, 0};
    (void)state;

    cuts[10] = alen / 2;
    cuts[11] = alen - 2;
    cuts[12] = alen - 1;
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        char label[64];
        snprintf(label, sizeof(label), "cut at %zu", cuts[i]);
        expect_unpack(label, art, cuts[i], len, EFC_EPROTO,
                      cuts[i] < HDR ? "header: truncated" : "truncated or padded");
    }
    buf = efc_malloc(alen + 1);
    assert_non_null(buf);
    memcpy(buf, art, alen);
    buf[alen] = 0;
    expect_unpack("padded", buf, alen + 1, len, EFC_EPROTO, "truncated or padded");

    /* truncated, with the header's payload size rewritten to match: the zstd frame check
     * must catch it before anything is allocated */
    for (size_t cut = HDR + 1; cut < alen; cut += (alen - HDR) / 7) {
        memcpy(buf, art, alen);
        wr64(buf + 24, cut - HDR);
        expect_unpack("consistent cut", buf, cut, len, EFC_EPROTO, "payload");
    }
    /* peek on a partial download: fine with the header, refused without it, refused when
     * more than the announced bytes arrive */
    assert_int_equal(efc_artifact_peek(art, alen / 2, len, 1, NULL), EFC_OK);
    assert_int_equal(efc_artifact_peek(art, HDR - 1, len, 1, NULL), EFC_EPROTO);
    memcpy(buf, art, alen);
    assert_int_equal(efc_artifact_peek(buf, alen + 1, len, 1, NULL), EFC_EPROTO);
    assert_int_equal(efc_artifact_peek(art, alen - 1, len, 0, NULL), EFC_EPROTO);
    efc_free(buf);
    efc_free(art);
    efc_free(efm);
}

/* Flip each header byte (two patterns): never accepted, each field with its own status. */
static void test_header_flips(void **state)
{
    size_t len, alen;
    uint8_t *efm = lenet5_efm(&len), *art = pack(efm, len, 0, &alen);
    uint8_t *buf = efc_malloc(alen);
    static const uint8_t pats[] = {0x01, 0x80};
    (void)state;
    assert_non_null(buf);

    for (size_t i = 0; i < HDR; i++)
        for (size_t p = 0; p < sizeof(pats); p++) {
            char label[64];
            enum efc_status want = EFC_EPROTO;
            const char *what = NULL;
            memcpy(buf, art, alen);
            buf[i] ^= pats[p];
            snprintf(label, sizeof(label), "header byte %zu ^ 0x%02x", i, pats[p]);
            if (i < 4)
                what = "bad magic";
            else if (i < 8)
                want = EFC_EVERSION, what = "container version";
            else if (i < 12)
                want = EFC_EVERSION, what = "unknown flags";
            else if (i < 16)
                want = EFC_EUNSUPPORTED, what = "codec";
            else if (i < 24)
                what = "artifact: "; /* efm_bytes: "announces", "impossible" or "frame holds" */
            else if (i < 32)
                what = "header: "; /* payload_bytes: "impossible" or "truncated or padded" */
            else
                want = EFC_EHASH, what = "SHA-256";
            expect_unpack(label, buf, alen, len, want, what);
        }
    efc_free(buf);
    efc_free(art);
    efc_free(efm);
}

/* Flip payload bytes: corrupt zstd data (EPROTO naming the payload) or a wrong .efm (EHASH),
 * never accepted. Both outcomes must occur across the positions tried. */
static void test_body_flips(void **state)
{
    size_t len, alen;
    uint8_t *efm = lenet5_efm(&len), *art = pack(efm, len, 0, &alen);
    uint8_t *buf = efc_malloc(alen);
    int n_proto = 0, n_hash = 0;
    (void)state;
    assert_non_null(buf);

    for (size_t i = HDR; i < alen; i += (i < HDR + 16 || i > alen - 16) ? 1 : 211) {
        void *out = NULL;
        size_t olen = 0;
        enum efc_status st;
        memcpy(buf, art, alen);
        buf[i] ^= 0x5a;
        efc_err_clear();
        st = efc_artifact_unpack(buf, alen, len, &out, &olen);
        if (st == EFC_OK)
            fail_msg("payload byte %zu flipped: accepted", i);
        assert_null(out);
        if (st == EFC_EPROTO)
            assert_non_null(strstr(efc_err_detail(), "artifact: payload: "));
        else if (st == EFC_EHASH)
            assert_non_null(strstr(efc_err_detail(), "SHA-256"));
        else
            fail_msg("payload byte %zu: %s (%s)", i, efc_status_str(st), efc_err_detail());
        n_proto += st == EFC_EPROTO;
        n_hash += st == EFC_EHASH;
    }
    print_message("payload flips: %d EPROTO, %d EHASH\n", n_proto, n_hash);
    assert_true(n_proto > 0);
    assert_true(n_hash > 0);
    efc_free(buf);
    efc_free(art);
    efc_free(efm);
}

static void test_magic_version_limits_sha(void **state)
{
    size_t len, alen;
    uint8_t *efm = lenet5_efm(&len), *art = pack(efm, len, 0, &alen);
    uint8_t *buf = efc_malloc(alen);
    (void)state;
    assert_non_null(buf);

#define MUTATE(label, want, what, stmt)                                                            \
    do {                                                                                           \
        memcpy(buf, art, alen);                                                                    \
        stmt;                                                                                      \
        expect_unpack(label, buf, alen, 2 * len, want, what);                                      \
    } while (0)

    MUTATE("magic", EFC_EPROTO, "bad magic", memcpy(buf, "EFCB", 4));
    MUTATE("efm as artifact", EFC_EPROTO, "bad magic", memcpy(buf, efm, 8));
    MUTATE("version 0", EFC_EVERSION, "container version 0", wr32(buf + 4, 0));
    MUTATE("version 2", EFC_EVERSION, "container version 2", wr32(buf + 4, 2));
    MUTATE("flags", EFC_EVERSION, "unknown flags 0x1", wr32(buf + 8, 1));
    MUTATE("codec 0", EFC_EUNSUPPORTED, "codec 0", wr32(buf + 12, 0));
    MUTATE("codec 2", EFC_EUNSUPPORTED, "codec 2", wr32(buf + 12, 2));
    MUTATE("efm tiny", EFC_EPROTO, "announces a 63-byte", wr64(buf + 16, 63));
    MUTATE("efm huge", EFC_EPROTO, "limit", wr64(buf + 16, (uint64_t)1 << 40));
    MUTATE("efm max+1", EFC_EPROTO, "limit", wr64(buf + 16, (uint64_t)EFC_EFM_MAX_FILE_BYTES + 1));
    MUTATE("efm one more", EFC_EPROTO, "zstd frame holds", wr64(buf + 16, len + 1));
    MUTATE("efm one less", EFC_EPROTO, "zstd frame holds", wr64(buf + 16, len - 1));
    MUTATE("payload 0", EFC_EPROTO, "impossible", wr64(buf + 24, 0));
    MUTATE("payload huge", EFC_EPROTO, "impossible", wr64(buf + 24, ~(uint64_t)0));
    MUTATE("payload -1", EFC_EPROTO, "truncated or padded", wr64(buf + 24, alen - HDR - 1));
    MUTATE("sha", EFC_EHASH, "SHA-256", buf[32 + 17] ^= 1);
    MUTATE("sha of another", EFC_EHASH, "SHA-256", efc_sha256("x", 1, buf + 32));
#undef MUTATE

    /* the limit: exactly the size is fine, one byte less is refused before allocating */
    {
        void *out;
        size_t olen;
        assert_int_equal(efc_artifact_unpack(art, alen, len, &out, &olen), EFC_OK);
        efc_free(out);
        expect_unpack("max_bytes", art, alen, len - 1, EFC_EPROTO, "limit");
        expect_unpack("max_bytes 0", art, alen, 0, EFC_EPROTO, "limit 0");
        /* a limit above the .efm cap is capped */
        assert_int_equal(efc_artifact_peek(art, alen, SIZE_MAX, 0, NULL), EFC_OK);
    }
    /* NULL arguments */
    {
        void *out;
        size_t olen;
        assert_int_equal(efc_artifact_unpack(NULL, 5, len, &out, &olen), EFC_EINVAL);
        assert_int_equal(efc_artifact_unpack(art, alen, len, NULL, &olen), EFC_EINVAL);
        expect_unpack("empty", NULL, 0, len, EFC_EPROTO, "truncated");
    }
    efc_free(buf);
    efc_free(art);
    efc_free(efm);
}

/* Artifacts whose header is consistent but whose zstd payload is not what pack writes. */
static void test_lying_frames(void **state)
{
    size_t len, alen, bound, n;
    uint8_t *efm = lenet5_efm(&len), *art = pack(efm, len, 0, &alen), *buf;
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    (void)state;
    assert_non_null(cc);
    bound = ZSTD_compressBound(len);
    buf = efc_malloc(HDR + 2 * bound + 64);
    assert_non_null(buf);

    /* two frames: the real one, then a small second one */
    memcpy(buf, art, alen);
    n = ZSTD_compress(buf + alen, 64, "x", 1, 1);
    assert_false(ZSTD_isError(n));
    wr64(buf + 24, alen - HDR + n);
    expect_unpack("two frames", buf, alen + n, len, EFC_EPROTO, "trailing data");

    /* a frame without its content size */
    memcpy(buf, art, HDR);
    assert_int_equal(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0)), 0);
    n = ZSTD_compress2(cc, buf + HDR, bound, efm, len);
    assert_false(ZSTD_isError(n));
    wr64(buf + 24, n);
    expect_unpack("no content size", buf, HDR + n, len, EFC_EPROTO, "content size");

    /* a valid frame of other content (one byte shorter): the header's size disagrees */
    ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
    n = ZSTD_compress2(cc, buf + HDR, bound, efm, len - 1);
    assert_false(ZSTD_isError(n));
    wr64(buf + 24, n);
    expect_unpack("other size", buf, HDR + n, len, EFC_EPROTO, "zstd frame holds");
    /* ... and with the header's size and SHA-256 matching it, it is accepted: the container
     * does not parse the .efm (efc_efm_decode does) */
    wr64(buf + 16, len - 1);
    efc_sha256(efm, len - 1, buf + 32);
    {
        void *out;
        size_t olen;
        assert_int_equal(efc_artifact_unpack(buf, HDR + n, len, &out, &olen), EFC_OK);
        assert_int_equal(olen, len - 1);
        efc_free(out);
    }
    /* a frame of the right size but other content (a flipped .efm byte): EHASH */
    {
        uint8_t *other = efc_malloc(len);
        assert_non_null(other);
        memcpy(other, efm, len);
        other[len / 2] ^= 1;
        memcpy(buf, art, HDR);
        n = ZSTD_compress2(cc, buf + HDR, bound, other, len);
        assert_false(ZSTD_isError(n));
        wr64(buf + 24, n);
        expect_unpack("other content", buf, HDR + n, len, EFC_EHASH, "SHA-256");
        efc_free(other);
    }
    /* a skippable frame holding the .efm verbatim */
    memcpy(buf, art, HDR);
    wr32(buf + HDR, 0x184D2A50u);
    wr32(buf + HDR + 4, (uint32_t)len);
    memcpy(buf + HDR + 8, efm, len);
    wr64(buf + 24, len + 8);
    expect_unpack("skippable", buf, HDR + 8 + len, len, EFC_EPROTO, "payload");
    /* garbage of a plausible size */
    memcpy(buf, art, HDR);
    memset(buf + HDR, 0xa5, 1000);
    wr64(buf + 24, 1000);
    expect_unpack("garbage", buf, HDR + 1000, len, EFC_EPROTO, "zstd frame");

    ZSTD_freeCCtx(cc);
    efc_free(buf);
    efc_free(art);
    efc_free(efm);
}

static void test_pack_rejects(void **state)
{
    size_t len, olen = 7;
    uint8_t *efm = lenet5_efm(&len);
    void *out = (void *)1;
    (void)state;

    assert_int_equal(efc_artifact_pack(NULL, len, 0, &out, &olen), EFC_EINVAL);
    assert_int_equal(efc_artifact_pack(efm, len, 0, NULL, &olen), EFC_EINVAL);
    assert_int_equal(efc_artifact_pack(efm, len, ZSTD_maxCLevel() + 1, &out, &olen), EFC_EINVAL);
    assert_null(out);
    assert_int_equal(efc_artifact_pack(efm, len, ZSTD_minCLevel() - 1, &out, &olen), EFC_EINVAL);
    assert_int_equal(efc_artifact_pack(efm, 63, 0, &out, &olen), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "not an .efm"));
    efm[3] = '2';
    assert_int_equal(efc_artifact_pack(efm, len, 0, &out, &olen), EFC_EINVAL);
    assert_null(out);
    assert_int_equal(olen, 0);
    efc_free(efm);
}

/* ---- files ---- */

static void test_files(void **state)
{
    char pe[512], pa[512], po[512], pbad[512];
    struct efc_artifact_info info, info2;
    size_t len, alen, olen;
    uint8_t *efm = lenet5_efm(&len), *art;
    void *back;
    (void)state;

    path_of(pe, sizeof(pe), "m.efm");
    path_of(pa, sizeof(pa), "m.efca");
    path_of(po, sizeof(po), "out.efm");
    path_of(pbad, sizeof(pbad), "bad.efca");
    assert_int_equal(efc_fs_write_atomic(pe, efm, len), EFC_OK);
    assert_int_equal(efc_artifact_pack_file(pe, pa, 0, &info), EFC_OK);
    assert_int_equal(info.efm_bytes, len);
    assert_int_equal(efc_artifact_unpack_file(pa, po, len, &info2), EFC_OK);
    assert_memory_equal(&info, &info2, sizeof(info));
    assert_int_equal(efc_fs_read_all(po, len, &back, &olen), EFC_OK);
    assert_int_equal(olen, len);
    assert_memory_equal(back, efm, len);
    efc_free(back);
    /* the file is what efc_artifact_pack makes of the bytes */
    assert_int_equal(efc_fs_read_all(pa, 1 << 24, (void **)&art, &alen), EFC_OK);
    assert_int_equal(alen, HDR + info.payload_bytes);
    {
        size_t n;
        uint8_t *a2 = pack(efm, len, 0, &n);
        assert_int_equal(n, alen);
        assert_memory_equal(a2, art, n);
        efc_free(a2);
    }

    /* errors name the file; a failed unpack writes nothing */
    assert_int_equal(unlink(po), 0);
    art[alen - 1] ^= 0xff;
    assert_int_equal(efc_fs_write_atomic(pbad, art, alen), EFC_OK);
    efc_err_clear();
    {
        enum efc_status st = efc_artifact_unpack_file(pbad, po, len, NULL);
        assert_true(st == EFC_EPROTO || st == EFC_EHASH);
    }
    assert_non_null(strstr(efc_err_detail(), pbad));
    assert_int_equal(access(po, F_OK), -1);
    assert_int_equal(efc_artifact_unpack_file(pa, po, len - 1, NULL), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "limit"));
    assert_int_equal(efc_artifact_unpack_file(pa, po, 100, NULL), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "too large"));
    assert_int_equal(access(po, F_OK), -1);
    path_of(po, sizeof(po), "missing.efca");
    assert_int_equal(efc_artifact_unpack_file(po, pbad, len, NULL), EFC_ENOTFOUND);

    /* pack_file validates the .efm: a corrupted one is not shipped */
    efm[len - 1] ^= 1;
    assert_int_equal(efc_fs_write_atomic(pe, efm, len), EFC_OK);
    assert_int_equal(efc_artifact_pack_file(pe, pa, 0, NULL), EFC_EHASH);
    assert_non_null(strstr(efc_err_detail(), pe));

    unlink(pe);
    unlink(pa);
    unlink(pbad);
    efc_free(art);
    efc_free(efm);
}

/* Fail the k-th allocation in pack and unpack: ENOMEM or success, never a crash or leak. */
static void test_alloc_failures(void **state)
{
    size_t len, alen;
    uint8_t *efm = lenet5_efm(&len), *art = pack(efm, len, 0, &alen);
    int done = 0;
    (void)state;

    for (uint64_t k = 1; k < 20 && !done; k++) {
        void *a = NULL, *e = NULL;
        size_t na = 0, ne = 0;
        enum efc_status s1, s2;
        efc_alloc_fail_at(k);
        s1 = efc_artifact_pack(efm, len, 1, &a, &na);
        efc_alloc_fail_at(k);
        s2 = efc_artifact_unpack(art, alen, len, &e, &ne);
        efc_alloc_fail_at(0);
        assert_true(s1 == EFC_OK || s1 == EFC_ENOMEM);
        assert_true(s2 == EFC_OK || s2 == EFC_ENOMEM);
        assert_true((s1 == EFC_OK) == (a != NULL));
        assert_true((s2 == EFC_OK) == (e != NULL));
        if (s2 == EFC_OK)
            assert_memory_equal(e, efm, len);
        done = s1 == EFC_OK && s2 == EFC_OK && k > 2; /* k = 2: pack's shrinking realloc */
        efc_free(a);
        efc_free(e);
    }
    assert_true(done);
    efc_free(art);
    efc_free(efm);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/efc_test_artifact.XXXXXX");
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
        cmocka_unit_test(test_round_trip_archs),
        cmocka_unit_test(test_round_trip_levels),
        cmocka_unit_test(test_round_trip_sparse_int8),
        cmocka_unit_test(test_truncated_and_padded),
        cmocka_unit_test(test_header_flips),
        cmocka_unit_test(test_body_flips),
        cmocka_unit_test(test_magic_version_limits_sha),
        cmocka_unit_test(test_lying_frames),
        cmocka_unit_test(test_pack_rejects),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
