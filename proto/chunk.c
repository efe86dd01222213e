/* chunk.c — chunk request (JSON) and chunk message (binary) codecs, artifact topics, sender. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "proto/chunk.h"
#include "proto/proto_int.h"

static const uint8_t magic[4] = {'E', 'F', 'C', 'K'};

_Static_assert(EFC_CHUNK_HDR_BYTES == 4 + 2 + 2 + 32 + 8 + 8 + 4 + 4, "chunk header layout");

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int hex_to_raw(const char *hex, uint8_t raw[32])
{
    if (!hex || !efc_proto_hex64_valid(hex))
        return 0;
    for (int i = 0; i < 32; i++) {
        int hi = hex[2 * i], lo = hex[2 * i + 1];
        hi = hi <= '9' ? hi - '0' : hi - 'a' + 10;
        lo = lo <= '9' ? lo - '0' : lo - 'a' + 10;
        raw[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}

/* ---- request -------------------------------------------------------------------------- */

enum efc_status efc_chunk_req_decode(const void *buf, size_t len, struct efc_chunk_req *out)
{
    struct efc_proto_rd r = {NULL, "chunk_req", EFC_OK};
    cJSON *root;
    enum efc_status st;
    int32_t length = 0;

    memset(out, 0, sizeof(*out));
    st = efc_proto_json_parse(buf, len, "chunk_req", "chunk_req", &root);
    if (st != EFC_OK)
        return st;
    r.root = root;
    out->version = EFC_PROTO_VERSION;
    efc_proto_rd_hex(&r, "sha256", out->sha256, 0);
    efc_proto_rd_u64(&r, "offset", 0, EFC_CHUNK_TOTAL_MAX - 1, &out->offset);
    st = efc_proto_rd_i32(&r, "length", 1, EFC_PROTO_CHUNK_MAX, &length);
    out->length = (uint32_t)length;
    cJSON_Delete(root);
    if (st != EFC_OK)
        memset(out, 0, sizeof(*out));
    return st;
}

enum efc_status efc_chunk_req_encode(const struct efc_chunk_req *m, char **out)
{
    struct efc_chunk_req chk;
    cJSON *o = efc_proto_wr_begin("chunk_req");
    enum efc_status st;
    char detail[256];
    int ok = o != NULL;

    if (ok) {
        efc_proto_wr_str(o, "sha256", m->sha256, sizeof(m->sha256), &ok);
        efc_proto_wr_num(o, "offset", (double)m->offset, &ok);
        efc_proto_wr_num(o, "length", m->length, &ok);
        if (ok && m->offset >= EFC_CHUNK_TOTAL_MAX) {
            ok = 0;
            efc_errf(EFC_EINVAL, "offset beyond EFC_CHUNK_TOTAL_MAX");
        }
    }
    st = efc_proto_wr_finish(o, ok, "chunk_req", out);
    if (st != EFC_OK)
        return st;
    st = efc_chunk_req_decode(*out, strlen(*out), &chk);
    if (st != EFC_OK) {
        efc_free(*out);
        *out = NULL;
        efc_proto_detail_copy(detail, sizeof(detail));
        return efc_errf(st == EFC_ENOMEM ? st : EFC_EINVAL, "encode: %s", detail);
    }
    return EFC_OK;
}

/* ---- chunk ---------------------------------------------------------------------------- */

static enum efc_status check_chunk(uint64_t offset, uint64_t total, uint32_t n)
{
    if (total == 0 || total > EFC_CHUNK_TOTAL_MAX)
        return efc_errf(EFC_EPROTO, "chunk: total size %llu out of range",
                        (unsigned long long)total);
    if (n == 0 || n > EFC_PROTO_CHUNK_MAX)
        return efc_errf(EFC_EPROTO, "chunk: payload of %u bytes out of range", n);
    if (offset >= total || n > total - offset)
        return efc_errf(EFC_EPROTO, "chunk: [%llu, +%u) beyond size %llu",
                        (unsigned long long)offset, n, (unsigned long long)total);
    return EFC_OK;
}

enum efc_status efc_chunk_decode(const void *buf, size_t len, struct efc_chunk *out)
{
    const uint8_t *p = buf;
    enum efc_status st;
    uint32_t n;

    memset(out, 0, sizeof(*out));
    if (!buf || len < EFC_CHUNK_HDR_BYTES)
        return efc_errf(EFC_EPROTO, "chunk: %zu bytes, shorter than the header", len);
    if (memcmp(p, magic, 4) != 0)
        return efc_errf(EFC_EPROTO, "chunk: bad magic");
    if (get_u16(p + 4) != EFC_CHUNK_VERSION)
        return efc_errf(EFC_EPROTO, "chunk: unknown version %u", get_u16(p + 4));
    if (get_u16(p + 6) != EFC_CHUNK_HDR_BYTES || get_u32(p + 60) != 0)
        return efc_errf(EFC_EPROTO, "chunk: bad header size or reserved field");
    n = get_u32(p + 56);
    if ((uint64_t)len != (uint64_t)EFC_CHUNK_HDR_BYTES + n)
        return efc_errf(EFC_EPROTO, "chunk: %zu bytes, header says %u payload bytes", len, n);
    st = check_chunk(get_u64(p + 40), get_u64(p + 48), n);
    if (st != EFC_OK)
        return st;
    memcpy(out->sha256, p + 8, 32);
    out->offset = get_u64(p + 40);
    out->total_bytes = get_u64(p + 48);
    out->len = n;
    out->data = p + EFC_CHUNK_HDR_BYTES;
    return EFC_OK;
}

enum efc_status efc_chunk_encode(const struct efc_chunk *c, void **out, size_t *out_len)
{
    uint8_t *b;
    enum efc_status st = check_chunk(c->offset, c->total_bytes, c->len);

    *out = NULL;
    *out_len = 0;
    if (st != EFC_OK || !c->data)
        return efc_errf(EFC_EINVAL, "chunk encode: invalid chunk");
    b = efc_malloc(EFC_CHUNK_HDR_BYTES + (size_t)c->len);
    if (!b)
        return efc_errf(EFC_ENOMEM, "chunk encode: out of memory");
    memcpy(b, magic, 4);
    put_u16(b + 4, EFC_CHUNK_VERSION);
    put_u16(b + 6, EFC_CHUNK_HDR_BYTES);
    memcpy(b + 8, c->sha256, 32);
    put_u64(b + 40, c->offset);
    put_u64(b + 48, c->total_bytes);
    put_u32(b + 56, c->len);
    put_u32(b + 60, 0);
    memcpy(b + EFC_CHUNK_HDR_BYTES, c->data, c->len);
    *out = b;
    *out_len = EFC_CHUNK_HDR_BYTES + (size_t)c->len;
    return EFC_OK;
}

/* ---- sender --------------------------------------------------------------------------- */

enum efc_status efc_chunk_serve(const char *path, const char *sha256_hex,
                                const struct efc_chunk_req *req, void **out, size_t *out_len)
{
    struct efc_chunk c;
    struct stat sb;
    uint8_t *b;
    uint64_t n;
    size_t off = 0;
    int fd;

    *out = NULL;
    *out_len = 0;
    memset(&c, 0, sizeof(c));
    if (!hex_to_raw(sha256_hex, c.sha256))
        return efc_errf(EFC_EINVAL, "chunk serve: invalid digest");
    if (strcmp(req->sha256, sha256_hex) != 0)
        return efc_errf(EFC_EPROTO, "chunk serve: request for another artifact");
    if (req->length == 0 || req->length > EFC_PROTO_CHUNK_MAX)
        return efc_errf(EFC_EPROTO, "chunk serve: length %u out of range", req->length);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO, "%s: cannot open: %s", path,
                        strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0 ||
        (uint64_t)sb.st_size > EFC_CHUNK_TOTAL_MAX) {
        close(fd);
        return efc_errf(EFC_EIO, "%s: not a servable regular file", path);
    }
    c.total_bytes = (uint64_t)sb.st_size;
    if (req->offset >= c.total_bytes) {
        close(fd);
        return efc_errf(EFC_EPROTO, "chunk serve: offset %llu beyond size %llu",
                        (unsigned long long)req->offset, (unsigned long long)c.total_bytes);
    }
    n = c.total_bytes - req->offset;
    c.len = n < req->length ? (uint32_t)n : req->length;
    c.offset = req->offset;
    b = efc_malloc(EFC_CHUNK_HDR_BYTES + (size_t)c.len);
    if (!b) {
        close(fd);
        return efc_errf(EFC_ENOMEM, "chunk serve: out of memory");
    }
    while (off < c.len) {
        ssize_t r = pread(fd, b + EFC_CHUNK_HDR_BYTES + off, c.len - off, (off_t)(c.offset + off));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            close(fd);
            efc_free(b);
            errno = e;
            return efc_errf(EFC_EIO, "%s: short read at %llu", path,
                            (unsigned long long)(c.offset + off));
        }
        off += (size_t)r;
    }
    close(fd);
    /* Build the header in place around the payload already read (no second copy). */
    memcpy(b, magic, 4);
    put_u16(b + 4, EFC_CHUNK_VERSION);
    put_u16(b + 6, EFC_CHUNK_HDR_BYTES);
    memcpy(b + 8, c.sha256, 32);
    put_u64(b + 40, c.offset);
    put_u64(b + 48, c.total_bytes);
    put_u32(b + 56, c.len);
    put_u32(b + 60, 0);
    *out = b;
    *out_len = EFC_CHUNK_HDR_BYTES + (size_t)c.len;
    return EFC_OK;
}

/* ---- topics --------------------------------------------------------------------------- */

enum efc_status efc_chunk_topic(const char *prefix, const char *sha256_hex, const char *device_id,
                                char *out, size_t out_len)
{
    char probe[EFC_PROTO_ID_MAX + 160];
    int n;

    if (!out || out_len == 0)
        return efc_errf(EFC_EINVAL, "chunk topic: no output buffer");
    out[0] = '\0';
    /* Reuse the prefix and id checks of the device topics. */
    if (efc_proto_topic(prefix, device_id, "job", probe, sizeof(probe)) != EFC_OK)
        return efc_errf(EFC_EINVAL, "chunk topic: invalid prefix or device id");
    if (!sha256_hex || !efc_proto_hex64_valid(sha256_hex))
        return efc_errf(EFC_EINVAL, "chunk topic: invalid digest");
    n = snprintf(out, out_len, "%s/art/%s/%s", prefix, sha256_hex, device_id);
    if (n < 0 || (size_t)n >= out_len) {
        out[0] = '\0';
        return efc_errf(EFC_EINVAL, "chunk topic: does not fit in %zu bytes", out_len);
    }
    return EFC_OK;
}

enum efc_status efc_chunk_topic_parse(const char *prefix, const char *topic,
                                      char sha256_hex[EFC_PROTO_SHA256_HEX],
                                      char device_id[EFC_PROTO_ID_MAX])
{
    size_t np;
    const char *p;

    sha256_hex[0] = '\0';
    device_id[0] = '\0';
    if (!prefix || !topic)
        return efc_errf(EFC_EINVAL, "chunk topic: no prefix or topic");
    np = strlen(prefix);
    if (np == 0 || strncmp(topic, prefix, np) != 0 || strncmp(topic + np, "/art/", 5) != 0)
        return efc_errf(EFC_EPROTO, "chunk topic: not under %s/art/", prefix);
    p = topic + np + 5;
    if (strlen(p) < 66 || p[64] != '/')
        return efc_errf(EFC_EPROTO, "chunk topic: no digest level");
    memcpy(sha256_hex, p, 64);
    sha256_hex[64] = '\0';
    if (!efc_proto_hex64_valid(sha256_hex) || strlen(p + 65) >= EFC_PROTO_ID_MAX ||
        !efc_proto_id_valid(p + 65)) {
        sha256_hex[0] = '\0';
        return efc_errf(EFC_EPROTO, "chunk topic: invalid digest or device id");
    }
    memcpy(device_id, p + 65, strlen(p + 65) + 1);
    return EFC_OK;
}
