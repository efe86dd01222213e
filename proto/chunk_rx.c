/* chunk_rx.c — the chunk receiver: bitmap, flow control, resume, verify-before-done.
 *
 * Durability order: a chunk's bytes are fdatasync'ed before any bitmap that claims them is
 * written (efc_fs_write_atomic), so after a crash the map never names bytes that are not on
 * disk; chunks received after the last checkpoint are simply requested again. The map file:
 *   off size field (little-endian)
 *     0    4 magic "EFCM"       4 4 version 1
 *     8   32 artifact SHA-256  40 8 total bytes   48 4 chunk bytes   52 4 n_chunks
 *    56    8 reserved (0)      64 n bitmap bytes ((n_chunks + 7) / 8), bit i = chunk i
 *  64+n   32 SHA-256 of bytes [0, 64 + n): a damaged map is ignored (fresh start)
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_sha256.h"
#include "proto/chunk.h"
#include "proto/proto_int.h"

#define MAP_HDR 64
#define VERIFY_BUF (64 * 1024)

static const uint8_t map_magic[4] = {'E', 'F', 'C', 'M'};

static size_t bitmap_bytes(uint32_t n)
{
    return ((size_t)n + 7) / 8;
}

static int bit_get(const uint8_t *b, uint32_t i)
{
    return (b[i / 8] >> (i % 8)) & 1;
}

static void bit_set(uint8_t *b, uint32_t i)
{
    b[i / 8] |= (uint8_t)(1u << (i % 8));
}

static void bit_clear(uint8_t *b, uint32_t i)
{
    b[i / 8] &= (uint8_t) ~(1u << (i % 8));
}

static void le_put(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le_get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int hex_nibble(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

static uint32_t chunk_len(const struct efc_chunk_rx *rx, uint32_t i)
{
    uint64_t off = (uint64_t)i * rx->chunk_bytes;
    uint64_t left = rx->total_bytes - off;
    return left < rx->chunk_bytes ? (uint32_t)left : rx->chunk_bytes;
}

static void fsync_parent(const char *path)
{
    char dir[EFC_CHUNK_PATH_MAX];
    int dfd;

    snprintf(dir, sizeof(dir), "%s", path);
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* A new, empty .part of the full size (sparse); any old map is removed first, so that a crash
 * in between cannot pair an old map with a new file. */
static enum efc_status start_fresh(struct efc_chunk_rx *rx)
{
    if (unlink(rx->map_path) != 0 && errno != ENOENT)
        return efc_errf(EFC_EIO, "%s: cannot remove: %s", rx->map_path, strerror(errno));
    if (rx->fd >= 0)
        close(rx->fd);
    rx->fd = open(rx->part_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rx->fd < 0)
        return efc_errf(errno == ENOSPC ? EFC_ENOSPC : EFC_EIO, "%s: cannot create: %s",
                        rx->part_path, strerror(errno));
    if (ftruncate(rx->fd, (off_t)rx->total_bytes) != 0)
        return efc_errf(errno == ENOSPC ? EFC_ENOSPC : EFC_EIO, "%s: cannot size: %s",
                        rx->part_path, strerror(errno));
    memset(rx->have, 0, bitmap_bytes(rx->n_chunks));
    memset(rx->inflight, 0, bitmap_bytes(rx->n_chunks));
    rx->n_have = 0;
    rx->n_inflight = 0;
    rx->cursor = 0;
    rx->since_checkpoint = 0;
    return EFC_OK;
}

/* 1 if the map and .part on disk belong to this transfer; then have[] and fd are loaded. */
static int try_resume(struct efc_chunk_rx *rx)
{
    size_t nb = bitmap_bytes(rx->n_chunks), len;
    uint8_t digest[32];
    struct stat sb;
    uint8_t *m;
    void *buf;
    int fd, ok = 0;

    if (efc_fs_read_all(rx->map_path, MAP_HDR + nb + 32, &buf, &len) != EFC_OK)
        return 0;
    m = buf;
    if (len == MAP_HDR + nb + 32 && memcmp(m, map_magic, 4) == 0 && le_get(m + 4, 4) == 1 &&
        memcmp(m + 8, rx->sha256, 32) == 0 && le_get(m + 40, 8) == rx->total_bytes &&
        le_get(m + 48, 4) == rx->chunk_bytes && le_get(m + 52, 4) == rx->n_chunks) {
        efc_sha256(m, MAP_HDR + nb, digest);
        ok = memcmp(digest, m + MAP_HDR + nb, 32) == 0;
    }
    if (ok) {
        fd = open(rx->part_path, O_RDWR | O_CLOEXEC);
        ok = fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
             (uint64_t)sb.st_size == rx->total_bytes;
        if (ok) {
            rx->fd = fd;
            memcpy(rx->have, m + MAP_HDR, nb);
            /* Bits past n_chunks must be clear: never trust them. */
            for (uint32_t i = rx->n_chunks; i < nb * 8; i++)
                bit_clear(rx->have, i);
            rx->n_have = 0;
            for (uint32_t i = 0; i < rx->n_chunks; i++)
                rx->n_have += (uint32_t)bit_get(rx->have, i);
        } else if (fd >= 0) {
            close(fd);
        }
    }
    efc_free(buf);
    return ok;
}

enum efc_status efc_chunk_rx_open(struct efc_chunk_rx *rx, const struct efc_chunk_rx_opts *o)
{
    enum efc_status st;
    uint64_t n;
    int a, b, c;

    memset(rx, 0, sizeof(*rx));
    rx->fd = -1;
    if (!o || !o->path || !o->sha256_hex || !efc_proto_hex64_valid(o->sha256_hex))
        return efc_errf(EFC_EINVAL, "chunk rx: missing path or invalid digest");
    rx->chunk_bytes = o->chunk_bytes ? o->chunk_bytes : EFC_CHUNK_DEFAULT_BYTES;
    rx->max_outstanding = o->max_outstanding ? o->max_outstanding : 4;
    rx->checkpoint_every = o->checkpoint_every ? o->checkpoint_every : 16;
    if (o->total_bytes == 0 || o->total_bytes > EFC_CHUNK_TOTAL_MAX ||
        rx->chunk_bytes > EFC_PROTO_CHUNK_MAX)
        return efc_errf(EFC_EINVAL, "chunk rx: size %llu or chunk size %u out of range",
                        (unsigned long long)o->total_bytes, rx->chunk_bytes);
    n = (o->total_bytes + rx->chunk_bytes - 1) / rx->chunk_bytes;
    if (n > EFC_CHUNK_N_MAX)
        return efc_errf(EFC_EINVAL, "chunk rx: %llu chunks, limit %u", (unsigned long long)n,
                        EFC_CHUNK_N_MAX);
    rx->total_bytes = o->total_bytes;
    rx->n_chunks = (uint32_t)n;
    for (int i = 0; i < 32; i++)
        rx->sha256[i] =
            (uint8_t)(hex_nibble(o->sha256_hex[2 * i]) << 4 | hex_nibble(o->sha256_hex[2 * i + 1]));
    a = snprintf(rx->path, sizeof(rx->path), "%s", o->path);
    b = snprintf(rx->part_path, sizeof(rx->part_path), "%s.part", o->path);
    c = snprintf(rx->map_path, sizeof(rx->map_path), "%s.part.map", o->path);
    if (a < 0 || b < 0 || c < 0 || (size_t)c >= sizeof(rx->map_path))
        return efc_errf(EFC_EINVAL, "chunk rx: path too long");
    rx->have = efc_calloc(bitmap_bytes(rx->n_chunks), 1);
    rx->inflight = efc_calloc(bitmap_bytes(rx->n_chunks), 1);
    if (!rx->have || !rx->inflight) {
        efc_chunk_rx_fini(rx);
        return efc_errf(EFC_ENOMEM, "chunk rx: out of memory");
    }
    if (try_resume(rx)) {
        rx->n_resumed = rx->n_have;
        return EFC_OK;
    }
    st = start_fresh(rx);
    if (st != EFC_OK)
        efc_chunk_rx_fini(rx);
    return st;
}

int efc_chunk_rx_next(struct efc_chunk_rx *rx, struct efc_chunk_req *req)
{
    if (rx->done || rx->n_inflight >= rx->max_outstanding || rx->n_have == rx->n_chunks)
        return 0;
    for (uint32_t k = 0; k < rx->n_chunks; k++) {
        uint32_t i = (rx->cursor + k) % rx->n_chunks;
        if (bit_get(rx->have, i) || bit_get(rx->inflight, i))
            continue;
        bit_set(rx->inflight, i);
        rx->n_inflight++;
        rx->cursor = (i + 1) % rx->n_chunks;
        memset(req, 0, sizeof(*req));
        req->version = EFC_PROTO_VERSION;
        efc_sha256_hex(rx->sha256, req->sha256);
        req->offset = (uint64_t)i * rx->chunk_bytes;
        req->length = chunk_len(rx, i);
        return 1;
    }
    return 0;
}

void efc_chunk_rx_expire(struct efc_chunk_rx *rx)
{
    if (rx->inflight)
        memset(rx->inflight, 0, bitmap_bytes(rx->n_chunks));
    rx->n_inflight = 0;
    rx->cursor = 0;
}

enum efc_status efc_chunk_rx_checkpoint(struct efc_chunk_rx *rx)
{
    size_t nb = bitmap_bytes(rx->n_chunks);
    enum efc_status st;
    uint8_t *m;

    if (rx->done || rx->fd < 0)
        return EFC_OK;
    if (fdatasync(rx->fd) != 0)
        return efc_errf(EFC_EIO, "%s: fdatasync: %s", rx->part_path, strerror(errno));
    m = efc_calloc(MAP_HDR + nb + 32, 1);
    if (!m)
        return efc_errf(EFC_ENOMEM, "chunk rx: out of memory");
    memcpy(m, map_magic, 4);
    le_put(m + 4, 1, 4);
    memcpy(m + 8, rx->sha256, 32);
    le_put(m + 40, rx->total_bytes, 8);
    le_put(m + 48, rx->chunk_bytes, 4);
    le_put(m + 52, rx->n_chunks, 4);
    memcpy(m + MAP_HDR, rx->have, nb);
    efc_sha256(m, MAP_HDR + nb, m + MAP_HDR + nb);
    st = efc_fs_write_atomic(rx->map_path, m, MAP_HDR + nb + 32);
    efc_free(m);
    if (st == EFC_OK)
        rx->since_checkpoint = 0;
    return st;
}

/* All chunks are in: hash the file; rename it into place, or discard it and start over. */
static enum efc_status verify(struct efc_chunk_rx *rx)
{
    struct efc_sha256 s;
    uint8_t digest[32], *buf;
    uint64_t off = 0;
    enum efc_status st;

    if (fdatasync(rx->fd) != 0)
        return efc_errf(EFC_EIO, "%s: fdatasync: %s", rx->part_path, strerror(errno));
    buf = efc_malloc(VERIFY_BUF);
    if (!buf)
        return efc_errf(EFC_ENOMEM, "chunk rx: out of memory");
    efc_sha256_init(&s);
    while (off < rx->total_bytes) {
        size_t want =
            rx->total_bytes - off < VERIFY_BUF ? (size_t)(rx->total_bytes - off) : VERIFY_BUF;
        ssize_t r = pread(rx->fd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            efc_free(buf);
            return efc_errf(EFC_EIO, "%s: short read while verifying", rx->part_path);
        }
        efc_sha256_update(&s, buf, (size_t)r);
        off += (uint64_t)r;
    }
    efc_free(buf);
    efc_sha256_final(&s, digest);
    if (memcmp(digest, rx->sha256, 32) != 0) {
        close(rx->fd);
        rx->fd = -1;
        unlink(rx->part_path);
        st = start_fresh(rx);
        if (st != EFC_OK)
            return st;
        return efc_errf(EFC_EHASH, "%s: SHA-256 mismatch; partial file discarded", rx->path);
    }
    close(rx->fd);
    rx->fd = -1;
    if (rename(rx->part_path, rx->path) != 0)
        return efc_errf(EFC_EIO, "%s: cannot rename into place: %s", rx->path, strerror(errno));
    fsync_parent(rx->path);
    unlink(rx->map_path);
    rx->done = 1;
    rx->n_inflight = 0;
    return EFC_OK;
}

enum efc_status efc_chunk_rx_put(struct efc_chunk_rx *rx, const struct efc_chunk *c)
{
    uint32_t i;
    size_t off = 0;

    if (memcmp(c->sha256, rx->sha256, 32) != 0)
        return efc_errf(EFC_EPROTO, "chunk rx: chunk of another artifact");
    if (c->total_bytes != rx->total_bytes)
        return efc_errf(EFC_EPROTO, "chunk rx: total size %llu, expected %llu",
                        (unsigned long long)c->total_bytes, (unsigned long long)rx->total_bytes);
    if (c->offset >= rx->total_bytes || c->offset % rx->chunk_bytes != 0)
        return efc_errf(EFC_EPROTO, "chunk rx: offset %llu not a chunk boundary in range",
                        (unsigned long long)c->offset);
    i = (uint32_t)(c->offset / rx->chunk_bytes);
    if (c->len != chunk_len(rx, i) || !c->data)
        return efc_errf(EFC_EPROTO, "chunk rx: chunk %u has %u bytes, expected %u", i, c->len,
                        chunk_len(rx, i));
    if (rx->done)
        return EFC_OK; /* a late duplicate */
    if (bit_get(rx->inflight, i)) {
        bit_clear(rx->inflight, i);
        rx->n_inflight--;
    }
    if (bit_get(rx->have, i))
        return EFC_OK; /* duplicate: the first copy stays */
    while (off < c->len) {
        ssize_t w = pwrite(rx->fd, c->data + off, c->len - off, (off_t)(c->offset + off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return efc_errf(errno == ENOSPC ? EFC_ENOSPC : EFC_EIO, "%s: write failed: %s",
                            rx->part_path, strerror(errno));
        off += (size_t)w;
    }
    bit_set(rx->have, i);
    rx->n_have++;
    rx->since_checkpoint++;
    if (rx->n_have == rx->n_chunks)
        return verify(rx);
    if (rx->since_checkpoint >= rx->checkpoint_every)
        return efc_chunk_rx_checkpoint(rx);
    return EFC_OK;
}

void efc_chunk_rx_fini(struct efc_chunk_rx *rx)
{
    if (!rx)
        return;
    if (rx->fd >= 0)
        close(rx->fd);
    rx->fd = -1;
    efc_free(rx->have);
    efc_free(rx->inflight);
    rx->have = NULL;
    rx->inflight = NULL;
}
