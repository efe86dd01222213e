/* dataset.c — IDX and .npy readers, the .npy writer and data set specs (dataset.h).
 *
 * Both readers go through zlib's gzFile, which reads gzip and plain files alike, so every
 * format may be compressed. Files are outside data: headers, dims and sizes are checked
 * against max_bytes before allocating and against the actual data length while reading;
 * nothing here asserts on file contents.
 *
 * Formats: IDX as published with MNIST (yann.lecun.com/exdb/mnist): magic 00 00 TT NN with
 * type TT (0x08 uint8, 0x0D float32) and NN big-endian u32 dims, then big-endian data.
 * NumPy .npy (numpy.org/doc/stable/reference/generated/numpy.lib.format.html): "\x93NUMPY",
 * major, minor, header length (u16 for 1.x, u32 for 2.x/3.x), a Python dict literal with
 * 'descr', 'fortran_order' and 'shape', then the raw C-order array.
 */
#include "model/dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"

#define NPY_MAX_HEADER_BYTES 65536u    /* numpy itself writes < 1 KiB; 2.0 allows 4 GiB */
#define DS_MAX_BYTES ((size_t)1 << 32) /* 4 GiB per array in efc_dataset_open */
#define GZ_CHUNK ((size_t)1 << 30)     /* gzread takes an unsigned count */

/* ---- gzFile helpers ---- */

static enum efc_status gz_open(const char *path, gzFile *out)
{
    struct stat st;
    gzFile f;

    if (stat(path, &st) != 0)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO, "%s: cannot open: %s", path,
                        strerror(errno));
    if (!S_ISREG(st.st_mode))
        return efc_errf(EFC_EIO, "%s: not a regular file", path);
    f = gzopen(path, "rb");
    if (!f)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO, "%s: cannot open: %s", path,
                        errno ? strerror(errno) : "out of memory");
    gzbuffer(f, 1u << 17);
    *out = f;
    return EFC_OK;
}

/* Reads up to n bytes; *got is what was read. Errors only for I/O or corrupt gzip data. */
static enum efc_status gz_read(gzFile f, void *buf, size_t n, size_t *got, const char *path)
{
    char *p = buf;
    size_t off = 0;

    while (off < n) {
        size_t want = n - off < GZ_CHUNK ? n - off : GZ_CHUNK;
        int r = gzread(f, p + off, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            if (zerr == Z_ERRNO)
                return efc_errf(EFC_EIO, "%s: read error: %s", path, strerror(errno));
            if (zerr == Z_BUF_ERROR) /* zlib: input ended inside the gzip stream */
                break;
            return efc_errf(EFC_EPROTO, "%s: corrupt gzip data: %s", path, msg);
        }
        if (r == 0)
            break;
        off += (size_t)r;
    }
    *got = off;
    return EFC_OK;
}

static enum efc_status gz_read_exact(gzFile f, void *buf, size_t n, const char *path,
                                     const char *what)
{
    size_t got = 0;
    enum efc_status st = gz_read(f, buf, n, &got, path);
    if (st)
        return st;
    if (got != n)
        return efc_errf(EFC_EPROTO, "%s: truncated: %s needs %zu bytes, file has %zu", path, what,
                        n, got);
    return EFC_OK;
}

/* After the array: the file must end (a length mismatch means the header lies). */
static enum efc_status gz_expect_end(gzFile f, const char *path)
{
    unsigned char c;
    size_t got;
    enum efc_status st = gz_read(f, &c, 1, &got, path);
    if (st)
        return st;
    if (got)
        return efc_errf(EFC_EPROTO,
                        "%s: trailing bytes after the array (header and data "
                        "length disagree)",
                        path);
    return EFC_OK;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* numel * elem bytes, checked against max_bytes without overflow. */
static enum efc_status array_bytes(const char *path, int32_t ndim, const int32_t *dims, size_t elem,
                                   size_t max_bytes, size_t *out)
{
    size_t n = elem;
    for (int32_t i = 0; i < ndim; i++) {
        if ((size_t)dims[i] > max_bytes / n)
            return efc_errf(EFC_EPROTO, "%s: array larger than the limit of %zu bytes", path,
                            max_bytes);
        n *= (size_t)dims[i];
    }
    if (n > max_bytes)
        return efc_errf(EFC_EPROTO, "%s: array of %zu bytes exceeds the limit %zu", path, n,
                        max_bytes);
    *out = n;
    return EFC_OK;
}

/* ---- IDX ---- */

enum efc_status efc_idx_read(const char *path, enum efc_dtype *dtype, int32_t *ndim,
                             int32_t dims[4], void **data, size_t max_bytes)
{
    unsigned char hdr[4 + 4 * 4];
    gzFile f;
    size_t bytes = 0, elem;
    int32_t nd, d[4] = {0, 0, 0, 0};
    void *buf = NULL;
    enum efc_status st;

    if (!path || !dtype || !ndim || !dims || !data)
        return efc_errf(EFC_EINVAL, "idx read: NULL argument");
    *data = NULL;
    if ((st = gz_open(path, &f)))
        return st;
    if ((st = gz_read_exact(f, hdr, 4, path, "the IDX magic")))
        goto out;
    nd = hdr[3];
    if (hdr[0] != 0 || hdr[1] != 0 || (hdr[2] != 0x08 && hdr[2] != 0x0D) || nd < 1 || nd > 4) {
        st = efc_errf(EFC_EPROTO,
                      "%s: bad IDX magic 0x%08x (want 0x000008NN or 0x00000DNN, "
                      "1 <= NN <= 4)",
                      path, be32(hdr));
        goto out;
    }
    elem = hdr[2] == 0x08 ? 1 : 4;
    if ((st = gz_read_exact(f, hdr + 4, 4 * (size_t)nd, path, "the IDX dimensions")))
        goto out;
    for (int32_t i = 0; i < nd; i++) {
        uint32_t v = be32(hdr + 4 + 4 * i);
        if (v < 1 || v > INT32_MAX) {
            st = efc_errf(EFC_EPROTO, "%s: IDX dimension %d is %u", path, i, v);
            goto out;
        }
        d[i] = (int32_t)v;
    }
    if ((st = array_bytes(path, nd, d, elem, max_bytes, &bytes)))
        goto out;
    if (!(buf = efc_malloc(bytes))) {
        st = efc_errf(EFC_ENOMEM, "%s: out of memory (%zu bytes)", path, bytes);
        goto out;
    }
    if ((st = gz_read_exact(f, buf, bytes, path, "the IDX data")) || (st = gz_expect_end(f, path)))
        goto out;
    if (elem == 4) { /* IDX data is big-endian */
        unsigned char *p = buf;
        for (size_t i = 0; i < bytes; i += 4) {
            uint32_t v = be32(p + i);
            memcpy(p + i, &v, 4);
        }
    }
    *dtype = elem == 1 ? EFC_DTYPE_U8 : EFC_DTYPE_F32;
    *ndim = nd;
    memcpy(dims, d, sizeof(d));
    *data = buf;
    buf = NULL;
out:
    efc_free(buf);
    gzclose(f);
    return st;
}

/* ---- .npy ---- */

struct npy_hdr {
    char descr[16];
    int have_descr, have_fortran, have_shape;
    int fortran;
    int32_t ndim;
    int32_t dims[4];
};

static const char *py_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A quoted Python string without escapes; copies up to cap - 1 bytes into out. */
static const char *py_str(const char *p, const char *e, char *out, size_t cap)
{
    char q;
    size_t n = 0;

    if (p >= e || (*p != '\'' && *p != '"'))
        return NULL;
    q = *p++;
    for (; p < e && *p != q; p++) {
        if (*p == '\\' || *p == '\n')
            return NULL;
        if (n + 1 < cap)
            out[n++] = *p;
        else
            return NULL;
    }
    if (p >= e)
        return NULL;
    out[n] = '\0';
    return p + 1;
}

static const char *py_tuple(const char *p, const char *e, struct npy_hdr *h)
{
    if (p >= e || *p != '(')
        return NULL;
    h->ndim = 0;
    p = py_ws(p + 1, e);
    while (p < e && *p != ')') {
        int64_t v = 0;
        const char *s = p;
        while (p < e && *p >= '0' && *p <= '9') {
            v = v * 10 + (*p - '0');
            if (v > INT32_MAX)
                return NULL;
            p++;
        }
        if (p == s || h->ndim >= 4)
            return NULL;
        if (p < e && *p == 'L') /* Python 2 long */
            p++;
        h->dims[h->ndim++] = (int32_t)v;
        p = py_ws(p, e);
        if (p < e && *p == ',')
            p = py_ws(p + 1, e);
        else if (p < e && *p != ')')
            return NULL;
    }
    return p < e ? p + 1 : NULL;
}

static int parse_npy_dict(const char *p, const char *e, struct npy_hdr *h)
{
    memset(h, 0, sizeof(*h));
    p = py_ws(p, e);
    if (p >= e || *p != '{')
        return -1;
    p = py_ws(p + 1, e);
    while (p < e && *p != '}') {
        char key[32], sval[16];
        if (!(p = py_str(p, e, key, sizeof(key))))
            return -1;
        p = py_ws(p, e);
        if (p >= e || *p != ':')
            return -1;
        p = py_ws(p + 1, e);
        if (!strcmp(key, "descr")) {
            if (!(p = py_str(p, e, h->descr, sizeof(h->descr))))
                return -1;
            h->have_descr = 1;
        } else if (!strcmp(key, "fortran_order")) {
            if (e - p >= 4 && !memcmp(p, "True", 4)) {
                h->fortran = 1;
                p += 4;
            } else if (e - p >= 5 && !memcmp(p, "False", 5)) {
                h->fortran = 0;
                p += 5;
            } else {
                return -1;
            }
            h->have_fortran = 1;
        } else if (!strcmp(key, "shape")) {
            if (!(p = py_tuple(p, e, h)))
                return -1;
            h->have_shape = 1;
        } else if (!(p = py_str(p, e, sval, sizeof(sval)))) {
            return -1; /* unknown keys are tolerated only with short string values */
        }
        p = py_ws(p, e);
        if (p < e && *p == ',')
            p = py_ws(p + 1, e);
        else if (p < e && *p != '}')
            return -1;
    }
    if (p >= e)
        return -1;
    p = py_ws(p + 1, e);
    if (p != e)
        return -1;
    return h->have_descr && h->have_fortran && h->have_shape ? 0 : -1;
}

enum efc_status efc_npy_read(const char *path, enum efc_dtype *dtype, int32_t *ndim,
                             int32_t dims[4], void **data, size_t max_bytes)
{
    unsigned char pre[12];
    struct npy_hdr h;
    gzFile f;
    size_t hlen, pre_len, bytes = 0, elem;
    char *text = NULL;
    void *buf = NULL;
    enum efc_status st;

    if (!path || !dtype || !ndim || !dims || !data)
        return efc_errf(EFC_EINVAL, "npy read: NULL argument");
    *data = NULL;
    if ((st = gz_open(path, &f)))
        return st;
    if ((st = gz_read_exact(f, pre, 8, path, "the .npy magic")))
        goto out;
    if (memcmp(pre, "\x93NUMPY", 6) != 0) {
        st = efc_errf(EFC_EPROTO, "%s: bad .npy magic (want \\x93NUMPY)", path);
        goto out;
    }
    if (pre[6] < 1 || pre[6] > 3) {
        st = efc_errf(EFC_EVERSION, "%s: .npy format version %u.%u not supported (1.0-3.0)", path,
                      pre[6], pre[7]);
        goto out;
    }
    pre_len = pre[6] == 1 ? 10 : 12;
    if ((st = gz_read_exact(f, pre + 8, pre_len - 8, path, "the .npy header length")))
        goto out;
    hlen = pre[6] == 1 ? (size_t)pre[8] | (size_t)pre[9] << 8
                       : (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 |
                             (size_t)pre[11] << 24;
    if (hlen < 2 || hlen > NPY_MAX_HEADER_BYTES) {
        st = efc_errf(EFC_EPROTO, "%s: .npy header length %zu out of range (2..%u)", path, hlen,
                      NPY_MAX_HEADER_BYTES);
        goto out;
    }
    if (!(text = efc_malloc(hlen))) {
        st = efc_errf(EFC_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if ((st = gz_read_exact(f, text, hlen, path, "the .npy header")))
        goto out;
    if (parse_npy_dict(text, text + hlen, &h) != 0) {
        st = efc_errf(EFC_EPROTO,
                      "%s: malformed .npy header dict (need 'descr', "
                      "'fortran_order' and 'shape')",
                      path);
        goto out;
    }
    if (h.fortran) {
        st = efc_errf(EFC_EUNSUPPORTED, "%s: fortran_order True not supported", path);
        goto out;
    }
    if (!strcmp(h.descr, "<f4")) {
        *dtype = EFC_DTYPE_F32;
        elem = 4;
    } else if (!strcmp(h.descr, "|u1") || !strcmp(h.descr, "<u1")) {
        *dtype = EFC_DTYPE_U8;
        elem = 1;
    } else {
        st = efc_errf(EFC_EUNSUPPORTED, "%s: .npy dtype '%s' not supported (<f4 or |u1)", path,
                      h.descr);
        goto out;
    }
    if (h.ndim < 1) {
        st = efc_errf(EFC_EPROTO, "%s: .npy scalar (shape ()) is not an array of samples", path);
        goto out;
    }
    for (int32_t i = 0; i < h.ndim; i++) {
        if (h.dims[i] < 1) {
            st = efc_errf(EFC_EPROTO, "%s: .npy dimension %d is %d", path, i, h.dims[i]);
            goto out;
        }
    }
    if ((st = array_bytes(path, h.ndim, h.dims, elem, max_bytes, &bytes)))
        goto out;
    if (!(buf = efc_malloc(bytes))) {
        st = efc_errf(EFC_ENOMEM, "%s: out of memory (%zu bytes)", path, bytes);
        goto out;
    }
    if ((st = gz_read_exact(f, buf, bytes, path, "the .npy data")) || (st = gz_expect_end(f, path)))
        goto out;
    *ndim = h.ndim;
    for (int i = 0; i < 4; i++)
        dims[i] = i < h.ndim ? h.dims[i] : 0;
    *data = buf;
    buf = NULL;
out:
    efc_free(text);
    efc_free(buf);
    gzclose(f);
    return st;
}

enum efc_status efc_npy_write(const char *path, enum efc_dtype dtype, int32_t ndim,
                              const int32_t *dims, const void *data)
{
    char dict[256], shape[128];
    size_t elem, n = 1, dlen, hlen, total, off = 0;
    unsigned char *buf;
    enum efc_status st;

    if (!path || !dims || !data || ndim < 1 || ndim > 4 ||
        (dtype != EFC_DTYPE_F32 && dtype != EFC_DTYPE_U8))
        return efc_errf(EFC_EINVAL, "%s: npy write: bad dtype, rank or NULL argument",
                        path ? path : "(null)");
    elem = dtype == EFC_DTYPE_F32 ? 4 : 1;
    for (int32_t i = 0; i < ndim; i++) {
        int k;
        if (dims[i] < 1 || (size_t)dims[i] > (SIZE_MAX / 2) / n / elem)
            return efc_errf(EFC_EINVAL, "%s: npy write: bad dimension %d", path, dims[i]);
        n *= (size_t)dims[i];
        k = snprintf(shape + off, sizeof(shape) - off, "%s%d", i ? ", " : "", dims[i]);
        off += (size_t)k;
    }
    if (ndim == 1)
        snprintf(shape + off, sizeof(shape) - off, ",");
    dlen = (size_t)snprintf(dict, sizeof(dict),
                            "{'descr': '%s', 'fortran_order': False, "
                            "'shape': (%s), }",
                            dtype == EFC_DTYPE_F32 ? "<f4" : "|u1", shape);
    /* numpy pads with spaces and a final newline so that the data starts 64-byte aligned */
    hlen = (10 + dlen + 1 + 63) / 64 * 64 - 10;
    total = 10 + hlen + n * elem;
    if (!(buf = efc_malloc(total)))
        return efc_errf(EFC_ENOMEM, "%s: out of memory", path);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    memcpy(buf + 10, dict, dlen);
    memset(buf + 10 + dlen, ' ', hlen - dlen - 1);
    buf[10 + hlen - 1] = '\n';
    memcpy(buf + 10 + hlen, data, n * elem); /* host is little-endian (as .efm assumes) */
    st = efc_fs_write_atomic(path, buf, total);
    efc_free(buf);
    return st;
}

/* ---- data sets ---- */

size_t efc_dataset_sample_size(const struct efc_dataset *d)
{
    size_t n = 1;
    for (int32_t i = 0; i < d->ndim; i++)
        n *= (size_t)d->dims[i];
    return n;
}

void efc_dataset_get_f32(const struct efc_dataset *d, int32_t i0, int32_t count, float *out)
{
    size_t ss = efc_dataset_sample_size(d), n = ss * (size_t)count, off = ss * (size_t)i0;

    if (d->dtype == EFC_DTYPE_F32) {
        memcpy(out, (const float *)d->data + off, n * sizeof(float));
    } else {
        const uint8_t *p = (const uint8_t *)d->data + off;
        for (size_t i = 0; i < n; i++)
            out[i] = (float)p[i];
    }
}

void efc_dataset_gather_f32(const struct efc_dataset *d, const int32_t *idx, int32_t count,
                            float *out)
{
    size_t ss = efc_dataset_sample_size(d);
    for (int32_t i = 0; i < count; i++)
        efc_dataset_get_f32(d, idx[i], 1, out + ss * (size_t)i);
}

void efc_dataset_free(struct efc_dataset *d)
{
    if (!d)
        return;
    efc_free(d->data);
    efc_free(d->labels);
    efc_free(d);
}

static size_t dtype_bytes(enum efc_dtype t)
{
    return t == EFC_DTYPE_F32 ? 4 : 1;
}

enum efc_status efc_dataset_slice(const struct efc_dataset *d, int32_t i0, int32_t count,
                                  struct efc_dataset **out)
{
    struct efc_dataset *s;
    size_t sb;

    if (!d || !out || i0 < 0 || count < 1 || i0 > d->n - count)
        return efc_errf(EFC_EINVAL, "%s: slice [%d, %d+%d) outside %d samples",
                        d ? d->source : "dataset", i0, i0, count, d ? d->n : 0);
    sb = efc_dataset_sample_size(d) * dtype_bytes(d->dtype);
    if (!(s = efc_calloc(1, sizeof(*s))))
        return efc_errf(EFC_ENOMEM, "%s: out of memory", d->source);
    *s = *d;
    s->data = NULL;
    s->labels = NULL;
    s->n = count;
    s->data = efc_malloc(sb * (size_t)count);
    if (d->labels)
        s->labels = efc_malloc((size_t)count);
    if (!s->data || (d->labels && !s->labels)) {
        efc_dataset_free(s);
        return efc_errf(EFC_ENOMEM, "%s: out of memory", d->source);
    }
    memcpy(s->data, (const char *)d->data + sb * (size_t)i0, sb * (size_t)count);
    if (d->labels)
        memcpy(s->labels, d->labels + i0, (size_t)count);
    /* n_classes stays the parent's: a shard that lacks a class still has the same classes */
    *out = s;
    return EFC_OK;
}

static int is_npy(const char *path)
{
    unsigned char m[6];
    size_t got = 0;
    gzFile f;

    if (gz_open(path, &f) != EFC_OK)
        return 0;
    if (gz_read(f, m, 6, &got, path) != EFC_OK)
        got = 0;
    gzclose(f);
    return got == 6 && !memcmp(m, "\x93NUMPY", 6);
}

static enum efc_status read_any(const char *path, enum efc_dtype *dtype, int32_t *ndim,
                                int32_t dims[4], void **data, size_t max_bytes)
{
    if (is_npy(path))
        return efc_npy_read(path, dtype, ndim, dims, data, max_bytes);
    return efc_idx_read(path, dtype, ndim, dims, data, max_bytes);
}

static enum efc_status load_files(const char *images, const char *labels, struct efc_dataset **out)
{
    struct efc_dataset *d;
    enum efc_dtype dt;
    int32_t nd, dims[4];
    void *data;
    enum efc_status st;

    if ((st = read_any(images, &dt, &nd, dims, &data, DS_MAX_BYTES)))
        return st;
    if (!(d = efc_calloc(1, sizeof(*d)))) {
        efc_free(data);
        return efc_errf(EFC_ENOMEM, "%s: out of memory", images);
    }
    d->data = data;
    d->dtype = dt;
    d->n = dims[0];
    switch (nd) {
    case 1: /* one value per sample */
        d->ndim = 1;
        d->dims[0] = 1;
        break;
    case 2: /* feature vectors */
        d->ndim = 1;
        d->dims[0] = dims[1];
        break;
    case 3: /* 2-D images: one channel */
        d->ndim = 3;
        d->dims[0] = 1;
        d->dims[1] = dims[1];
        d->dims[2] = dims[2];
        break;
    default: /* CxHxW */
        d->ndim = 3;
        d->dims[0] = dims[1];
        d->dims[1] = dims[2];
        d->dims[2] = dims[3];
        break;
    }
    if (labels) {
        enum efc_dtype ldt;
        int32_t lnd, ldims[4];
        void *ldata;
        if ((st = read_any(labels, &ldt, &lnd, ldims, &ldata, DS_MAX_BYTES)))
            goto fail;
        d->labels = ldata;
        if (ldt != EFC_DTYPE_U8 || lnd != 1) {
            st = efc_errf(EFC_EPROTO, "%s: labels must be a 1-D uint8 array (%d dims, %s)", labels,
                          lnd, efc_dtype_name(ldt));
            goto fail;
        }
        if (ldims[0] != d->n) {
            st = efc_errf(EFC_EPROTO, "%s: %d labels for %d samples in %s", labels, ldims[0], d->n,
                          images);
            goto fail;
        }
        for (int32_t i = 0; i < d->n; i++)
            if (d->labels[i] + 1 > d->n_classes)
                d->n_classes = d->labels[i] + 1;
    }
    *out = d;
    return EFC_OK;
fail:
    efc_dataset_free(d);
    return st;
}

/* Parses "i/n" strictly (decimal, no sign, full consumption). */
static int parse_shard(const char *s, int32_t *i, int32_t *n)
{
    char *end;
    long a, b;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    a = strtol(s, &end, 10);
    if (errno || *end != '/' || end[1] < '0' || end[1] > '9')
        return -1;
    b = strtol(end + 1, &end, 10);
    if (errno || *end != '\0' || b < 1 || b > INT32_MAX || a < 0 || a >= b)
        return -1;
    *i = (int32_t)a;
    *n = (int32_t)b;
    return 0;
}

static enum efc_status fashion_path(char *out, size_t cap, const char *dir, const char *prefix,
                                    const char *kind)
{
    struct stat st;
    int k = snprintf(out, cap, "%s/%s-%s-ubyte.gz", dir, prefix, kind);
    if (k < 0 || (size_t)k >= cap)
        return efc_errf(EFC_EINVAL, "fashion-mnist: path too long");
    if (stat(out, &st) == 0)
        return EFC_OK;
    out[k - 3] = '\0'; /* uncompressed copy */
    if (stat(out, &st) == 0)
        return EFC_OK;
    return efc_errf(EFC_ENOTFOUND,
                    "fashion-mnist: %s/%s-%s-ubyte.gz not found; install the "
                    "Debian package dataset-fashion-mnist",
                    dir, prefix, kind);
}

enum efc_status efc_dataset_open(const char *spec, const char *split, struct efc_dataset **out)
{
    char buf[4096], images[4096], labels[4096];
    const char *shard_s = NULL;
    char *comma, *colon;
    int32_t si = 0, sn = 1;
    struct efc_dataset *d = NULL, *s;
    int named = 0;
    enum efc_status st;

    if (!spec || !out || !*spec)
        return efc_errf(EFC_EINVAL, "dataset: empty spec");
    *out = NULL;
    if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf))
        return efc_errf(EFC_EINVAL, "dataset: spec too long");
    colon = strstr(buf, ":shard=");
    if (colon) {
        *colon = '\0';
        shard_s = colon + 7;
        if (parse_shard(shard_s, &si, &sn) != 0)
            return efc_errf(EFC_EINVAL, "dataset '%s': bad shard '%s' (want i/n, 0 <= i < n)", spec,
                            shard_s);
    }
    if (!strcmp(buf, "fashion-mnist")) {
        const char *dir = getenv("EFC_FASHION_MNIST_DIR");
        const char *prefix;
        if (!dir || !*dir)
            dir = EFC_FASHION_MNIST_DIR;
        if (!split || !strcmp(split, "train"))
            prefix = "train";
        else if (!strcmp(split, "test"))
            prefix = "t10k";
        else
            return efc_errf(EFC_EINVAL, "dataset '%s': split '%s' (want train or test)", spec,
                            split);
        if ((st = fashion_path(images, sizeof(images), dir, prefix, "images-idx3")) ||
            (st = fashion_path(labels, sizeof(labels), dir, prefix, "labels-idx1")))
            return st;
        named = 1;
        st = load_files(images, labels, &d);
    } else {
        comma = strchr(buf, ',');
        if (comma)
            *comma = '\0';
        st = load_files(buf, comma ? comma + 1 : NULL, &d);
    }
    if (st)
        return st;
    if (named)
        snprintf(d->source, sizeof(d->source), "fashion-mnist %s", split ? split : "train");
    else
        snprintf(d->source, sizeof(d->source), "%.255s", buf);
    if (shard_s) {
        int64_t a = (int64_t)si * d->n / sn, b = ((int64_t)si + 1) * d->n / sn;
        char src[sizeof(d->source)];
        if (sn > d->n) {
            st = efc_errf(EFC_EINVAL, "dataset '%s': %d shards of %d samples", spec, sn, d->n);
            efc_dataset_free(d);
            return st;
        }
        st = efc_dataset_slice(d, (int32_t)a, (int32_t)(b - a), &s);
        snprintf(src, sizeof(src), "%.200s shard %d/%d", d->source, si, sn);
        efc_dataset_free(d);
        if (st)
            return st;
        memcpy(s->source, src, sizeof(src));
        d = s;
    }
    *out = d;
    return EFC_OK;
}
