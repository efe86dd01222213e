/* artifact.c — pack / unpack the zstd artifact container (docs/format.md, "Artifact
 * container"). The header is written and read byte by byte in little-endian order, like
 * efm.c.
 *
 * Unpacking is a trust boundary (artifacts arrive over the network): every header field is
 * checked before anything is allocated, the only allocation is the announced .efm size once
 * it has passed max_bytes, the zstd frame must be exactly one frame spanning the payload and
 * announcing the same content size, decompression writes into that buffer and no further,
 * and the SHA-256 is compared before the bytes are handed to anyone. zstd error codes stop
 * here: they become EFC_EPROTO with ZSTD_getErrorName() in the detail (STYLE.md 2.5).
 */
#include "model/artifact.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "model/efm.h"

/* ---- layout (docs/format.md) ---- */
static const uint8_t art_magic[4] = {'E', 'F', 'C', 'A'};
/* The first 8 bytes of every .efm (docs/format.md, header): pack refuses anything else. */
static const uint8_t efm_magic[8] = {'E', 'F', 'M', '1', '\r', '\n', 0x1a, '\n'};
#define ART_VERSION 1u
#define ART_CODEC_ZSTD 1u
#define ART_OFF_VERSION 4u
#define ART_OFF_FLAGS 8u
#define ART_OFF_CODEC 12u
#define ART_OFF_EFM_BYTES 16u
#define ART_OFF_PAYLOAD_BYTES 24u
#define ART_OFF_SHA 32u
#define EFM_MIN_BYTES 64u /* an .efm is at least its header */

_Static_assert(ART_OFF_SHA + EFC_SHA256_BYTES == EFC_ARTIFACT_HEADER_BYTES,
               "artifact header layout");

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

static enum efc_status afail(enum efc_status st, const char *what, const char *part,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "<what>: <part>: <message>", the shape of efm.c's details. */
static enum efc_status afail(enum efc_status st, const char *what, const char *part,
                             const char *fmt, ...)
{
    char msg[320];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return efc_errf(st, "%s: %s: %s", what, part, msg);
}

static size_t cap_limit(size_t max_bytes)
{
    return max_bytes < EFC_EFM_MAX_FILE_BYTES ? max_bytes : EFC_EFM_MAX_FILE_BYTES;
}

/* ---- pack ---- */

enum efc_status efc_artifact_pack(const void *efm, size_t len, int level, void **out,
                                  size_t *out_len)
{
    uint8_t *buf, *shrunk;
    size_t bound, n;

    if (!efm || !out || !out_len)
        return efc_errf(EFC_EINVAL, "artifact pack: NULL argument");
    *out = NULL;
    *out_len = 0;
    if (level == 0)
        level = EFC_ARTIFACT_LEVEL_DEFAULT;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
        return efc_errf(EFC_EINVAL, "artifact pack: zstd level %d out of range %d..%d", level,
                        ZSTD_minCLevel(), ZSTD_maxCLevel());
    if (len < EFM_MIN_BYTES || memcmp(efm, efm_magic, sizeof(efm_magic)) != 0)
        return efc_errf(EFC_EINVAL, "artifact pack: input (%zu bytes) is not an .efm file", len);
    if (len > EFC_EFM_MAX_FILE_BYTES)
        return efc_errf(EFC_EINVAL, "artifact pack: %zu bytes exceeds the .efm limit %zu", len,
                        EFC_EFM_MAX_FILE_BYTES);
    bound = ZSTD_compressBound(len);
    if (!(buf = efc_malloc(EFC_ARTIFACT_HEADER_BYTES + bound)))
        return efc_errf(EFC_ENOMEM, "artifact pack: out of memory (%zu bytes)",
                        EFC_ARTIFACT_HEADER_BYTES + bound);
    /* One frame with the content size in its header (ZSTD_compress writes it when the size
     * is known): unpack cross-checks it against our header. No zstd checksum: the SHA-256
     * over the .efm is the authority and the 4 bytes would only duplicate it. */
    n = ZSTD_compress(buf + EFC_ARTIFACT_HEADER_BYTES, bound, efm, len, level);
    if (ZSTD_isError(n)) {
        efc_free(buf);
        return efc_errf(ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation ? EFC_ENOMEM
                                                                             : EFC_EINTERNAL,
                        "artifact pack: zstd: %s", ZSTD_getErrorName(n));
    }
    memcpy(buf, art_magic, sizeof(art_magic));
    wr32(buf + ART_OFF_VERSION, ART_VERSION);
    wr32(buf + ART_OFF_FLAGS, 0);
    wr32(buf + ART_OFF_CODEC, ART_CODEC_ZSTD);
    wr64(buf + ART_OFF_EFM_BYTES, len);
    wr64(buf + ART_OFF_PAYLOAD_BYTES, n);
    efc_sha256(efm, len, buf + ART_OFF_SHA);
    /* give back the slack of the worst-case bound; keeping it is harmless if realloc fails */
    if ((shrunk = efc_realloc(buf, EFC_ARTIFACT_HEADER_BYTES + n)))
        buf = shrunk;
    *out = buf;
    *out_len = EFC_ARTIFACT_HEADER_BYTES + n;
    return EFC_OK;
}

/* ---- unpack ---- */

static enum efc_status peek(const uint8_t *b, size_t len, size_t max_bytes, int partial,
                            const char *what, struct efc_artifact_info *info)
{
    uint64_t efm_bytes, payload_bytes;
    size_t limit = cap_limit(max_bytes);

    if (len < EFC_ARTIFACT_HEADER_BYTES)
        return afail(EFC_EPROTO, what, "header", "truncated: %zu bytes, the header alone is %u",
                     len, EFC_ARTIFACT_HEADER_BYTES);
    if (memcmp(b, art_magic, sizeof(art_magic)) != 0)
        return afail(EFC_EPROTO, what, "header", "bad magic (not an efc artifact)");
    if (rd32(b + ART_OFF_VERSION) != ART_VERSION)
        return afail(EFC_EVERSION, what, "header",
                     "container version %u, this build reads version %u", rd32(b + ART_OFF_VERSION),
                     ART_VERSION);
    if (rd32(b + ART_OFF_FLAGS) != 0)
        return afail(EFC_EVERSION, what, "header", "unknown flags 0x%x (written by a newer efc?)",
                     rd32(b + ART_OFF_FLAGS));
    if (rd32(b + ART_OFF_CODEC) != ART_CODEC_ZSTD)
        return afail(EFC_EUNSUPPORTED, what, "header", "codec %u unknown (1 = zstd)",
                     rd32(b + ART_OFF_CODEC));
    efm_bytes = rd64(b + ART_OFF_EFM_BYTES);
    payload_bytes = rd64(b + ART_OFF_PAYLOAD_BYTES);
    if (efm_bytes < EFM_MIN_BYTES)
        return afail(EFC_EPROTO, what, "header", "announces a %llu-byte .efm (at least %u)",
                     (unsigned long long)efm_bytes, EFM_MIN_BYTES);
    if (efm_bytes > limit)
        return afail(EFC_EPROTO, what, "header", "announces a %llu-byte .efm, limit %zu",
                     (unsigned long long)efm_bytes, limit);
    /* no zstd frame of efm_bytes is larger than the bound: a bigger claim is garbage, and
     * this keeps 64 + payload_bytes far from overflow */
    if (payload_bytes == 0 || payload_bytes > ZSTD_compressBound((size_t)efm_bytes))
        return afail(EFC_EPROTO, what, "header",
                     "payload of %llu bytes impossible for a %llu-byte .efm (1..%zu)",
                     (unsigned long long)payload_bytes, (unsigned long long)efm_bytes,
                     ZSTD_compressBound((size_t)efm_bytes));
    if (!partial && len - EFC_ARTIFACT_HEADER_BYTES != payload_bytes)
        return afail(EFC_EPROTO, what, "header",
                     "artifact is %zu bytes, header says %llu (truncated or padded)", len,
                     (unsigned long long)(EFC_ARTIFACT_HEADER_BYTES + payload_bytes));
    if (partial && len - EFC_ARTIFACT_HEADER_BYTES > payload_bytes)
        return afail(EFC_EPROTO, what, "header",
                     "%zu bytes received, header says the artifact is %llu (padded)", len,
                     (unsigned long long)(EFC_ARTIFACT_HEADER_BYTES + payload_bytes));
    if (info) {
        info->version = ART_VERSION;
        info->codec = ART_CODEC_ZSTD;
        info->efm_bytes = efm_bytes;
        info->payload_bytes = payload_bytes;
        memcpy(info->efm_sha256, b + ART_OFF_SHA, EFC_SHA256_BYTES);
    }
    return EFC_OK;
}

enum efc_status efc_artifact_peek(const void *art, size_t len, size_t max_bytes, int partial,
                                  struct efc_artifact_info *info)
{
    if (!art && len)
        return efc_errf(EFC_EINVAL, "artifact peek: NULL argument");
    return peek(art, len, max_bytes, partial, "artifact", info);
}

static enum efc_status unpack(const uint8_t *b, size_t len, size_t max_bytes, const char *what,
                              void **efm, size_t *efm_len, struct efc_artifact_info *info)
{
    struct efc_artifact_info h;
    const uint8_t *payload = b + EFC_ARTIFACT_HEADER_BYTES;
    uint8_t sum[EFC_SHA256_BYTES], *out;
    unsigned long long content;
    size_t psize, n;
    enum efc_status st;

    if ((st = peek(b, len, max_bytes, 0, what, &h)))
        return st;
    psize = (size_t)h.payload_bytes;
    /* exactly one zstd frame spanning the payload: no second frame, no trailing bytes, and
     * a truncated frame is reported before anything is allocated */
    n = ZSTD_findFrameCompressedSize(payload, psize);
    if (ZSTD_isError(n))
        return afail(EFC_EPROTO, what, "payload", "not one complete zstd frame: %s",
                     ZSTD_getErrorName(n));
    if (n != psize)
        return afail(EFC_EPROTO, what, "payload", "zstd frame is %zu of %zu bytes (trailing data)",
                     n, psize);
    content = ZSTD_getFrameContentSize(payload, psize);
    if (content == ZSTD_CONTENTSIZE_UNKNOWN || content == ZSTD_CONTENTSIZE_ERROR)
        return afail(EFC_EPROTO, what, "payload", "zstd frame does not state its content size");
    if (content != h.efm_bytes)
        return afail(EFC_EPROTO, what, "payload", "zstd frame holds %llu bytes, header says %llu",
                     content, (unsigned long long)h.efm_bytes);
    if (!(out = efc_malloc((size_t)h.efm_bytes)))
        return efc_errf(EFC_ENOMEM, "%s: out of memory (%llu bytes)", what,
                        (unsigned long long)h.efm_bytes);
    /* the destination is exactly the announced size: zstd stops with an error rather than
     * write past it, whatever the frame claims */
    n = ZSTD_decompress(out, (size_t)h.efm_bytes, payload, psize);
    if (ZSTD_isError(n) || n != h.efm_bytes) {
        efc_free(out);
        if (ZSTD_isError(n) && ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)
            return efc_errf(EFC_ENOMEM, "%s: payload: zstd: %s", what, ZSTD_getErrorName(n));
        if (ZSTD_isError(n))
            return afail(EFC_EPROTO, what, "payload", "corrupt zstd data: %s",
                         ZSTD_getErrorName(n));
        return afail(EFC_EPROTO, what, "payload", "decompressed to %zu bytes, header says %llu", n,
                     (unsigned long long)h.efm_bytes);
    }
    efc_sha256(out, (size_t)h.efm_bytes, sum);
    if (memcmp(sum, h.efm_sha256, EFC_SHA256_BYTES) != 0) {
        efc_free(out);
        return afail(EFC_EHASH, what, "payload",
                     "SHA-256 of the decompressed .efm does not match the header");
    }
    if (info)
        *info = h;
    *efm = out;
    *efm_len = (size_t)h.efm_bytes;
    return EFC_OK;
}

enum efc_status efc_artifact_unpack(const void *art, size_t len, size_t max_bytes, void **efm,
                                    size_t *efm_len)
{
    if (!efm || !efm_len || (!art && len))
        return efc_errf(EFC_EINVAL, "artifact unpack: NULL argument");
    *efm = NULL;
    *efm_len = 0;
    return unpack(art, len, max_bytes, "artifact", efm, efm_len, NULL);
}

/* ---- files ---- */

enum efc_status efc_artifact_pack_file(const char *in_efm, const char *out_art, int level,
                                       struct efc_artifact_info *info)
{
    struct efc_model *m;
    void *art;
    size_t n;
    enum efc_status st;

    if (!in_efm || !out_art)
        return efc_errf(EFC_EINVAL, "artifact pack: NULL path");
    /* load = every check of the .efm reader: a model the fleet cannot load is never shipped;
     * the mapping is the file's exact bytes */
    if ((st = efc_efm_load(in_efm, &m)))
        return st;
    st = efc_artifact_pack(m->map, m->map_bytes, level, &art, &n);
    efc_model_free(m);
    if (st)
        return st;
    if (info)
        (void)peek(art, n, EFC_EFM_MAX_FILE_BYTES, 0, out_art, info); /* just built: valid */
    st = efc_fs_write_atomic(out_art, art, n);
    efc_free(art);
    return st;
}

enum efc_status efc_artifact_unpack_file(const char *in_art, const char *out_efm, size_t max_bytes,
                                         struct efc_artifact_info *info)
{
    size_t limit = cap_limit(max_bytes), len, efm_len;
    void *art, *efm;
    enum efc_status st;

    if (!in_art || !out_efm)
        return efc_errf(EFC_EINVAL, "artifact unpack: NULL path");
    /* no valid artifact of an .efm within the limit is larger than this */
    st = efc_fs_read_all(in_art, EFC_ARTIFACT_HEADER_BYTES + ZSTD_compressBound(limit), &art, &len);
    if (st == EFC_EPROTO) { /* the only EPROTO of efc_fs_read_all: the file is too large */
        char detail[256];
        snprintf(detail, sizeof(detail), "%s", efc_err_detail());
        return efc_errf(st, "%s: too large for an .efm of at most %zu bytes (%s)", in_art, limit,
                        detail);
    }
    if (st)
        return st;
    st = unpack(art, len, limit, in_art, &efm, &efm_len, info);
    efc_free(art);
    if (st)
        return st;
    st = efc_fs_write_atomic(out_efm, efm, efm_len);
    efc_free(efm);
    return st;
}

enum efc_status efc_artifact_load_model(const char *path, size_t max_bytes,
                                        struct efc_model **out)
{
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    *out = NULL;
    if (f) {
        size_t got = fread(magic, 1, sizeof(magic), f);
        fclose(f);
        if (got != sizeof(magic))
            memset(magic, 0, sizeof(magic));
    }
    if (memcmp(magic, "EFCA", 4) != 0)
        return efc_efm_load(path, out); /* a plain .efm (or its own error) */
    void *art = NULL, *efm = NULL;
    size_t art_len = 0, efm_len = 0;
    enum efc_status st = efc_fs_read_all(path, max_bytes + EFC_ARTIFACT_HEADER_BYTES, &art,
                                         &art_len);
    if (st == EFC_OK)
        st = efc_artifact_unpack(art, art_len, max_bytes, &efm, &efm_len);
    efc_free(art);
    if (st == EFC_OK)
        st = efc_efm_decode(efm, efm_len, path, out);
    efc_free(efm);
    return st;
}
