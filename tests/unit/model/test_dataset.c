/* test_dataset.c — IDX / .npy readers, the .npy writer and efc_dataset_open specs.
 *
 * Real Fashion-MNIST is checked when the Debian package is installed (skipped otherwise):
 * sizes, shape, 10 balanced classes and shards that cover the set exactly once. Small files
 * written here cover plain and gzip IDX (uint8 and float32), .npy 1.0/2.0 and odd but valid
 * headers, and every rejection: truncation, wrong magic, trailing bytes, oversize, garbage
 * headers, label count mismatch. Every error detail must name the file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "model/dataset.h"

static char tmpdir[256];

static void path_of(char *out, size_t n, const char *name)
{
    int k = snprintf(out, n, "%s/%s", tmpdir, name);
    assert_true(k > 0 && (size_t)k < n);
}

static void write_plain(const char *path, const void *buf, size_t len)
{
    assert_int_equal(efc_fs_write_atomic(path, buf, len), EFC_OK);
}

static void write_gz(const char *path, const void *buf, size_t len)
{
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, buf, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
}

static size_t put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return 4;
}

/* IDX uint8 images [n, h, w] with value (i * 7 + j) & 255 at flat index j of sample i. */
static size_t make_idx_images(uint8_t *buf, uint32_t n, uint32_t h, uint32_t w)
{
    size_t off = put_be32(buf, 0x00000803);
    off += put_be32(buf + off, n);
    off += put_be32(buf + off, h);
    off += put_be32(buf + off, w);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < h * w; j++)
            buf[off++] = (uint8_t)((i * 7 + j) & 255);
    return off;
}

static size_t make_idx_labels(uint8_t *buf, uint32_t n, uint32_t classes)
{
    size_t off = put_be32(buf, 0x00000801);
    off += put_be32(buf + off, n);
    for (uint32_t i = 0; i < n; i++)
        buf[off++] = (uint8_t)(i % classes);
    return off;
}

static enum efc_status open2(const char *img, const char *lbl, struct efc_dataset **d)
{
    char spec[1200];
    snprintf(spec, sizeof(spec), "%s%s%s", img, lbl ? "," : "", lbl ? lbl : "");
    efc_err_clear();
    return efc_dataset_open(spec, NULL, d);
}

static void expect_fail(const char *img, const char *lbl, enum efc_status want,
                        const char *must_name)
{
    struct efc_dataset *d = (struct efc_dataset *)1;
    enum efc_status st = open2(img, lbl, &d);
    if (st != want)
        fail_msg("%s: got %s want %s (%s)", img, efc_status_str(st), efc_status_str(want),
                 efc_err_detail());
    assert_null(d);
    if (!strstr(efc_err_detail(), must_name))
        fail_msg("detail '%s' does not name '%s'", efc_err_detail(), must_name);
}

/* ---- Fashion-MNIST ---- */

static int have_fashion(void)
{
    return access(EFC_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) == 0 &&
           access(EFC_FASHION_MNIST_DIR "/t10k-labels-idx1-ubyte.gz", R_OK) == 0;
}

static void check_fashion(const char *split, int32_t n)
{
    struct efc_dataset *d;
    int32_t counts[10] = {0};
    float px[784];
    float lo = 1e9f, hi = -1e9f;

    assert_int_equal(efc_dataset_open("fashion-mnist", split, &d), EFC_OK);
    assert_int_equal(d->n, n);
    assert_int_equal(d->ndim, 3);
    assert_int_equal(d->dims[0], 1);
    assert_int_equal(d->dims[1], 28);
    assert_int_equal(d->dims[2], 28);
    assert_int_equal(d->dtype, EFC_DTYPE_U8);
    assert_int_equal(d->n_classes, 10);
    assert_int_equal(efc_dataset_sample_size(d), 784);
    assert_non_null(d->labels);
    for (int32_t i = 0; i < d->n; i++)
        counts[d->labels[i]]++;
    for (int c = 0; c < 10; c++) /* Fashion-MNIST is balanced */
        assert_int_equal(counts[c], n / 10);
    efc_dataset_get_f32(d, n - 1, 1, px);
    for (int i = 0; i < 784; i++) {
        lo = px[i] < lo ? px[i] : lo;
        hi = px[i] > hi ? px[i] : hi;
    }
    assert_true(lo >= 0.0f && hi <= 255.0f && hi > lo);
    efc_dataset_free(d);
}

static void test_fashion_mnist(void **state)
{
    (void)state;
    if (!have_fashion()) {
        skip();
        return;
    }
    check_fashion("train", 60000);
    check_fashion("test", 10000);
}

static void test_fashion_shards(void **state)
{
    struct efc_dataset *full, *s;
    int32_t total = 0;
    char spec[64];
    (void)state;

    if (!have_fashion()) {
        skip();
        return;
    }
    assert_int_equal(efc_dataset_open("fashion-mnist", "test", &full), EFC_OK);
    for (int i = 0; i < 3; i++) {
        snprintf(spec, sizeof(spec), "fashion-mnist:shard=%d/3", i);
        assert_int_equal(efc_dataset_open(spec, "test", &s), EFC_OK);
        assert_int_equal(s->n_classes, 10);
        assert_memory_equal(s->data, (uint8_t *)full->data + (size_t)total * 784,
                            (size_t)s->n * 784);
        assert_memory_equal(s->labels, full->labels + total, (size_t)s->n);
        assert_non_null(strstr(s->source, "shard"));
        total += s->n;
        efc_dataset_free(s);
    }
    assert_int_equal(total, full->n);
    efc_dataset_free(full);
}

static void test_fashion_missing(void **state)
{
    struct efc_dataset *d;
    char missing[512];
    (void)state;

    path_of(missing, sizeof(missing), "no-such-dir");
    assert_int_equal(setenv("EFC_FASHION_MNIST_DIR", missing, 1), 0);
    efc_err_clear();
    assert_int_equal(efc_dataset_open("fashion-mnist", "train", &d), EFC_ENOTFOUND);
    assert_non_null(strstr(efc_err_detail(), "install the Debian package dataset-fashion-mnist"));
    assert_non_null(strstr(efc_err_detail(), "no-such-dir"));
    unsetenv("EFC_FASHION_MNIST_DIR");
    assert_int_equal(efc_dataset_open("fashion-mnist", "validation", &d), EFC_EINVAL);
}

/* ---- IDX ---- */

static void test_idx_plain_and_gz(void **state)
{
    static uint8_t img[16 + 10 * 12], lbl[8 + 10];
    char pi[512], pl[512], gi[512], gl[512];
    struct efc_dataset *a, *b, *s;
    size_t ni = make_idx_images(img, 10, 3, 4), nl = make_idx_labels(lbl, 10, 4);
    float out[2 * 12];
    int32_t idx[2] = {9, 2};
    (void)state;

    path_of(pi, sizeof(pi), "img.idx");
    path_of(pl, sizeof(pl), "lbl.idx");
    path_of(gi, sizeof(gi), "img-idx3-ubyte.gz");
    path_of(gl, sizeof(gl), "lbl-idx1-ubyte.gz");
    write_plain(pi, img, ni);
    write_plain(pl, lbl, nl);
    write_gz(gi, img, ni);
    write_gz(gl, lbl, nl);

    assert_int_equal(open2(pi, pl, &a), EFC_OK);
    assert_int_equal(open2(gi, gl, &b), EFC_OK);
    assert_int_equal(a->n, 10);
    assert_int_equal(a->ndim, 3);
    assert_int_equal(a->dims[0], 1);
    assert_int_equal(a->dims[1], 3);
    assert_int_equal(a->dims[2], 4);
    assert_int_equal(a->n_classes, 4);
    assert_memory_equal(a->data, img + 16, 120);
    assert_memory_equal(b->data, a->data, 120);
    assert_memory_equal(b->labels, a->labels, 10);
    assert_int_equal(b->labels[7], 3);

    efc_dataset_gather_f32(a, idx, 2, out);
    assert_true(out[0] == (float)((9 * 7 + 0) & 255));
    assert_true(out[12 + 5] == (float)((2 * 7 + 5) & 255));
    efc_dataset_get_f32(a, 4, 1, out);
    assert_true(out[11] == (float)(4 * 7 + 11));

    assert_int_equal(efc_dataset_slice(a, 8, 2, &s), EFC_OK);
    assert_int_equal(s->n, 2);
    assert_int_equal(s->n_classes, 4);
    assert_memory_equal(s->data, img + 16 + 8 * 12, 24);
    assert_int_equal(s->labels[1], 9 % 4);
    efc_dataset_free(s);
    assert_int_equal(efc_dataset_slice(a, 9, 2, &s), EFC_EINVAL);
    assert_int_equal(efc_dataset_slice(a, -1, 1, &s), EFC_EINVAL);
    assert_int_equal(efc_dataset_slice(a, 0, 0, &s), EFC_EINVAL);

    /* images without labels */
    efc_dataset_free(b);
    assert_int_equal(open2(gi, NULL, &b), EFC_OK);
    assert_null(b->labels);
    assert_int_equal(b->n_classes, 0);
    efc_dataset_free(b);
    efc_dataset_free(a);
}

static void test_idx_f32(void **state)
{
    uint8_t buf[12 + 6 * 4];
    char p[512];
    enum efc_dtype dt;
    int32_t nd, dims[4];
    void *data;
    const float want[6] = {0.0f, 1.5f, -2.25f, 3e10f, -0.0f, 1e-20f};
    size_t off = put_be32(buf, 0x00000D02);
    (void)state;

    off += put_be32(buf + off, 2);
    off += put_be32(buf + off, 3);
    for (int i = 0; i < 6; i++) {
        uint32_t u;
        memcpy(&u, &want[i], 4);
        off += put_be32(buf + off, u);
    }
    path_of(p, sizeof(p), "f32.idx");
    write_plain(p, buf, off);
    assert_int_equal(efc_idx_read(p, &dt, &nd, dims, &data, 1 << 20), EFC_OK);
    assert_int_equal(dt, EFC_DTYPE_F32);
    assert_int_equal(nd, 2);
    assert_int_equal(dims[0], 2);
    assert_int_equal(dims[1], 3);
    assert_memory_equal(data, want, sizeof(want));
    efc_free(data);
    /* max_bytes is enforced before allocating */
    assert_int_equal(efc_idx_read(p, &dt, &nd, dims, &data, 23), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "f32.idx"));
}

static void test_idx_bad_files(void **state)
{
    static uint8_t img[16 + 10 * 12], lbl[8 + 10];
    char pi[512], pl[512], p[512];
    size_t ni = make_idx_images(img, 10, 3, 4), nl = make_idx_labels(lbl, 10, 4);
    (void)state;

    path_of(pl, sizeof(pl), "good-lbl.idx");
    write_plain(pl, lbl, nl);

    /* truncated at several points: header, dims, data */
    static const size_t cuts[] = {0, 3, 9, 16, 17, 16 + 60};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        path_of(p, sizeof(p), "trunc.idx");
        write_plain(p, img, cuts[i]);
        expect_fail(p, pl, EFC_EPROTO, "trunc.idx");
        path_of(p, sizeof(p), "trunc.idx.gz");
        write_gz(p, img, cuts[i]);
        expect_fail(p, pl, EFC_EPROTO, "trunc.idx.gz");
    }
    /* data short by one byte */
    path_of(p, sizeof(p), "short.idx");
    write_plain(p, img, ni - 1);
    expect_fail(p, pl, EFC_EPROTO, "short.idx");
    /* a gzip stream cut in the middle */
    {
        uint8_t *gz;
        size_t glen;
        void *tmp;
        path_of(p, sizeof(p), "cut.idx.gz");
        write_gz(p, img, ni);
        assert_int_equal(efc_fs_read_all(p, 1 << 20, &tmp, &glen), EFC_OK);
        gz = tmp;
        write_plain(p, gz, glen / 2);
        efc_free(gz);
        expect_fail(p, pl, EFC_EPROTO, "cut.idx.gz");
    }
    /* trailing bytes */
    {
        uint8_t more[sizeof(img) + 3];
        memcpy(more, img, ni);
        memset(more + ni, 0, 3);
        path_of(p, sizeof(p), "trailing.idx");
        write_plain(p, more, ni + 3);
        expect_fail(p, pl, EFC_EPROTO, "trailing.idx");
    }
    /* wrong magic: type 0x09, rank 0, rank 5, nonzero high bytes */
    {
        static const uint32_t magics[] = {0x00000903, 0x00000800, 0x00000805, 0x01000803};
        for (size_t i = 0; i < 4; i++) {
            uint8_t bad[sizeof(img)];
            memcpy(bad, img, ni);
            put_be32(bad, magics[i]);
            path_of(p, sizeof(p), "magic.idx");
            write_plain(p, bad, ni);
            expect_fail(p, pl, EFC_EPROTO, "magic.idx");
        }
    }
    /* zero dimension and an absurd one (4 G x 4 G) */
    {
        uint8_t bad[16];
        put_be32(bad, 0x00000803);
        put_be32(bad + 4, 0);
        put_be32(bad + 8, 3);
        put_be32(bad + 12, 4);
        path_of(p, sizeof(p), "zero.idx");
        write_plain(p, bad, 16);
        expect_fail(p, NULL, EFC_EPROTO, "zero.idx");
        put_be32(bad + 4, 0x7fffffff);
        put_be32(bad + 8, 0x7fffffff);
        path_of(p, sizeof(p), "huge.idx");
        write_plain(p, bad, 16);
        expect_fail(p, NULL, EFC_EPROTO, "huge.idx");
    }
    /* label count mismatch, and labels that are not a 1-D uint8 array */
    path_of(pi, sizeof(pi), "good-img.idx");
    write_plain(pi, img, ni);
    path_of(p, sizeof(p), "nine-labels.idx");
    {
        uint8_t l9[8 + 9];
        write_plain(p, l9, make_idx_labels(l9, 9, 3));
    }
    expect_fail(pi, p, EFC_EPROTO, "nine-labels.idx");
    expect_fail(pi, pi, EFC_EPROTO, "good-img.idx");
    /* missing files */
    path_of(p, sizeof(p), "absent.idx");
    expect_fail(p, NULL, EFC_ENOTFOUND, "absent.idx");
    expect_fail(pi, p, EFC_ENOTFOUND, "absent.idx");
}

/* ---- .npy ---- */

static void test_npy_round_trip(void **state)
{
    char p[512], q[512];
    enum efc_dtype dt;
    int32_t nd, dims[4];
    void *data;
    float f[2 * 3 * 4];
    uint8_t u[7], lbl[7];
    int32_t fd[3] = {2, 3, 4}, ud[1] = {7};
    struct efc_dataset *d;
    (void)state;

    for (int i = 0; i < 24; i++)
        f[i] = (float)i * 0.5f - 3.0f;
    for (int i = 0; i < 7; i++) {
        u[i] = (uint8_t)(250 + i);
        lbl[i] = (uint8_t)(i % 2);
    }
    path_of(p, sizeof(p), "f.npy");
    assert_int_equal(efc_npy_write(p, EFC_DTYPE_F32, 3, fd, f), EFC_OK);
    assert_int_equal(efc_npy_read(p, &dt, &nd, dims, &data, 1 << 20), EFC_OK);
    assert_int_equal(dt, EFC_DTYPE_F32);
    assert_int_equal(nd, 3);
    assert_memory_equal(dims, fd, sizeof(fd));
    assert_memory_equal(data, f, sizeof(f));
    efc_free(data);
    {
        /* numpy's layout: header padded so the data starts 64-byte aligned */
        void *raw;
        size_t len;
        assert_int_equal(efc_fs_read_all(p, 1 << 20, &raw, &len), EFC_OK);
        assert_int_equal((len - sizeof(f)) % 64, 0);
        assert_memory_equal(raw, "\x93NUMPY\x01\x00", 8);
        assert_non_null(strstr((char *)raw + 10, "'shape': (2, 3, 4)"));
        efc_free(raw);
    }

    path_of(q, sizeof(q), "u.npy");
    assert_int_equal(efc_npy_write(q, EFC_DTYPE_U8, 1, ud, u), EFC_OK);
    assert_int_equal(efc_npy_read(q, &dt, &nd, dims, &data, 1 << 20), EFC_OK);
    assert_int_equal(dt, EFC_DTYPE_U8);
    assert_int_equal(nd, 1);
    assert_int_equal(dims[0], 7);
    assert_memory_equal(data, u, 7);
    efc_free(data);

    /* a data set from .npy: [2, 3, 4] float images -> 2 samples of 1x3x4 */
    path_of(q, sizeof(q), "l.npy");
    assert_int_equal(efc_npy_write(q, EFC_DTYPE_U8, 1, (int32_t[]){2}, lbl), EFC_OK);
    assert_int_equal(open2(p, q, &d), EFC_OK);
    assert_int_equal(d->n, 2);
    assert_int_equal(d->dtype, EFC_DTYPE_F32);
    assert_int_equal(d->ndim, 3);
    assert_int_equal(d->dims[0], 1);
    assert_int_equal(d->n_classes, 2);
    {
        float out[12];
        efc_dataset_get_f32(d, 1, 1, out);
        assert_memory_equal(out, f + 12, sizeof(out));
    }
    efc_dataset_free(d);
    /* 7 labels for 2 images */
    path_of(q, sizeof(q), "u.npy");
    expect_fail(p, q, EFC_EPROTO, "u.npy");

    assert_int_equal(efc_npy_write(p, EFC_DTYPE_I8, 1, ud, u), EFC_EINVAL);
    assert_int_equal(efc_npy_write(p, EFC_DTYPE_U8, 0, ud, u), EFC_EINVAL);
}

/* Write magic + version + header text (+ data) by hand. */
static void write_npy(const char *path, int major, const char *hdr, const void *data, size_t dlen)
{
    uint8_t buf[1024];
    size_t h = strlen(hdr), off = 0;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    buf[7] = 0;
    buf[8] = (uint8_t)h;
    buf[9] = (uint8_t)(h >> 8);
    off = 10;
    if (major >= 2) {
        buf[10] = buf[11] = 0;
        off = 12;
    }
    memcpy(buf + off, hdr, h);
    memcpy(buf + off + h, data, dlen);
    write_plain(path, buf, off + h + dlen);
}

static void test_npy_headers(void **state)
{
    static const uint8_t six[6] = {1, 2, 3, 4, 5, 6};
    static const struct {
        const char *hdr;
        enum efc_status want;
    } cases[] = {
        /* valid variants */
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }\n", EFC_OK},
        {"{\"shape\":(2,3L),\"fortran_order\":False,\"descr\":\"<u1\"}", EFC_OK},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (6,)}      \n", EFC_OK},
        /* unsupported but well-formed */
        {"{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }", EFC_EUNSUPPORTED},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", EFC_EUNSUPPORTED},
        {"{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", EFC_EUNSUPPORTED},
        /* garbage */
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), ", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': False}", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, -3)}", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 99999999999)}", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (1,1,1,1,6)}", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': ()}", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 0)}", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': Fals, 'shape': (2, 3)}", EFC_EPROTO},
        {"{'descr': '|u1 , 'fortran_order': False, 'shape': (2, 3)}", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3)} x", EFC_EPROTO},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 4)}", EFC_EPROTO}, /* short */
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (5,)}", EFC_EPROTO},   /* trailing */
        {"", EFC_EPROTO},
        {"\x01\x02\x03", EFC_EPROTO},
    };
    char p[512];
    enum efc_dtype dt;
    int32_t nd, dims[4];
    void *data;
    (void)state;

    path_of(p, sizeof(p), "hdr.npy");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int major = 1; major <= 2; major++) {
            enum efc_status st;
            write_npy(p, major, cases[i].hdr, six, 6);
            efc_err_clear();
            st = efc_npy_read(p, &dt, &nd, dims, &data, 1 << 20);
            if (st != cases[i].want)
                fail_msg("case %zu v%d: got %s want %s (%s)", i, major, efc_status_str(st),
                         efc_status_str(cases[i].want), efc_err_detail());
            if (st == EFC_OK) {
                assert_memory_equal(data, six, 6);
                assert_int_equal(dt, EFC_DTYPE_U8);
                efc_free(data);
            } else {
                assert_non_null(strstr(efc_err_detail(), "hdr.npy"));
            }
        }
    }
    /* version 4 and a bad magic */
    write_npy(p, 4, "{'descr': '|u1', 'fortran_order': False, 'shape': (6,)}", six, 6);
    assert_int_equal(efc_npy_read(p, &dt, &nd, dims, &data, 1 << 20), EFC_EVERSION);
    write_plain(p, "\x93NUMPX\x01\x00\x00\x00", 10);
    assert_int_equal(efc_npy_read(p, &dt, &nd, dims, &data, 1 << 20), EFC_EPROTO);
    /* truncated inside the preamble and the header */
    write_plain(p, "\x93NUMPY\x01\x00\x40\x00{'de", 15);
    assert_int_equal(efc_npy_read(p, &dt, &nd, dims, &data, 1 << 20), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "truncated"));
    write_plain(p, "\x93NUM", 4);
    assert_int_equal(efc_npy_read(p, &dt, &nd, dims, &data, 1 << 20), EFC_EPROTO);
}

static void test_shard_arithmetic(void **state)
{
    static uint8_t img[16 + 10 * 4], lbl[8 + 10];
    char pi[512], pl[512], spec[1200];
    struct efc_dataset *full, *s;
    (void)state;

    path_of(pi, sizeof(pi), "s-img.idx");
    path_of(pl, sizeof(pl), "s-lbl.idx");
    write_plain(pi, img, make_idx_images(img, 10, 2, 2));
    write_plain(pl, lbl, make_idx_labels(lbl, 10, 10));
    assert_int_equal(open2(pi, pl, &full), EFC_OK);
    for (int32_t n = 1; n <= 10; n++) {
        uint8_t seen[10] = {0};
        int32_t total = 0;
        for (int32_t i = 0; i < n; i++) {
            snprintf(spec, sizeof(spec), "%s,%s:shard=%d/%d", pi, pl, i, n);
            assert_int_equal(efc_dataset_open(spec, NULL, &s), EFC_OK);
            assert_true(s->n >= 10 / n && s->n <= 10 / n + 1);
            assert_int_equal(s->n_classes, 10);
            for (int32_t k = 0; k < s->n; k++) {
                uint8_t l = s->labels[k]; /* label == global index here */
                assert_int_equal(seen[l], 0);
                seen[l] = 1;
                assert_memory_equal((uint8_t *)s->data + 4 * k, (uint8_t *)full->data + 4 * l, 4);
            }
            total += s->n;
            efc_dataset_free(s);
        }
        assert_int_equal(total, 10);
    }
    efc_dataset_free(full);
    /* bad shard specs */
    static const char *const bad[] = {"0/0", "3/3", "-1/2", "1/", "/2", "1/2x", "a/b", "0/11"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(spec, sizeof(spec), "%s,%s:shard=%s", pi, pl, bad[i]);
        s = NULL;
        if (efc_dataset_open(spec, NULL, &s) != EFC_EINVAL)
            fail_msg("shard '%s' accepted", bad[i]);
        assert_null(s);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/efc_test_dataset.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    /* only the files this test created, in its own mkdtemp directory */
    static const char *const names[] = {"img.idx",
                                        "lbl.idx",
                                        "img-idx3-ubyte.gz",
                                        "lbl-idx1-ubyte.gz",
                                        "f32.idx",
                                        "good-lbl.idx",
                                        "trunc.idx",
                                        "trunc.idx.gz",
                                        "short.idx",
                                        "cut.idx.gz",
                                        "trailing.idx",
                                        "magic.idx",
                                        "zero.idx",
                                        "huge.idx",
                                        "good-img.idx",
                                        "nine-labels.idx",
                                        "f.npy",
                                        "u.npy",
                                        "l.npy",
                                        "hdr.npy",
                                        "s-img.idx",
                                        "s-lbl.idx"};
    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char p[512];
        path_of(p, sizeof(p), names[i]);
        unlink(p);
    }
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fashion_mnist),    cmocka_unit_test(test_fashion_shards),
        cmocka_unit_test(test_fashion_missing),  cmocka_unit_test(test_idx_plain_and_gz),
        cmocka_unit_test(test_idx_f32),          cmocka_unit_test(test_idx_bad_files),
        cmocka_unit_test(test_npy_round_trip),   cmocka_unit_test(test_npy_headers),
        cmocka_unit_test(test_shard_arithmetic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
