/* chunk.h — chunked artifact transfer over MQTT (docs/protocol.md "Chunk transfer").
 *
 * Owns the transport-independent core of pulling an artifact (a .efm model) in chunks: the
 * JSON chunk request (agent -> coordinator, "<prefix>/dev/<id>/chunk/req"), the binary chunk
 * message (coordinator -> agent, "<prefix>/art/<sha256>/<id>"), a stateless sender helper,
 * and a receiver that writes chunks at their offsets into "<path>.part", tolerates duplicates
 * and reordering, keeps a bitmap of received chunks, hands out requests with at most N
 * outstanding (flow control), survives a restart ("<path>.part.map", written atomically), and
 * renames the file to <path> only once its SHA-256 matches. Memory: one chunk + two bitmaps.
 *
 * Binary chunk message, little-endian, EFC_CHUNK_HDR_BYTES (64) header then the payload:
 *   off  size  field
 *     0     4  magic "EFCK"
 *     4     2  version (EFC_CHUNK_VERSION = 1)
 *     6     2  header bytes (64)
 *     8    32  artifact SHA-256, raw bytes
 *    40     8  offset of the payload in the artifact
 *    48     8  artifact total bytes (1 .. EFC_CHUNK_TOTAL_MAX)
 *    56     4  payload bytes (1 .. EFC_PROTO_CHUNK_MAX); offset + payload <= total
 *    60     4  reserved, 0
 *    64     n  payload
 *
 * Ownership: encoders return efc_malloc'd buffers (efc_free). A decoded struct efc_chunk
 * borrows its data pointer from the decoded buffer. One thread per struct efc_chunk_rx; the
 * codec and sender functions keep no state and are safe from any thread.
 */
#ifndef EFC_PROTO_CHUNK_H
#define EFC_PROTO_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"
#include "proto/proto.h"

#define EFC_CHUNK_VERSION 1
#define EFC_CHUNK_HDR_BYTES 64
#define EFC_CHUNK_TOTAL_MAX (1ULL << 40)    /* 1 TiB: far above any model, below 2^53 */
#define EFC_CHUNK_N_MAX (1U << 24)          /* chunks per artifact (bitmap <= 2 MiB) */
#define EFC_CHUNK_DEFAULT_BYTES (64 * 1024) /* fits mosquitto's default limits comfortably */
#define EFC_CHUNK_PATH_MAX 4096

/* A chunk request: send me [offset, offset + length) of artifact sha256. */
struct efc_chunk_req {
    int32_t version;
    char sha256[EFC_PROTO_SHA256_HEX];
    uint64_t offset; /* 0 .. 2^53 */
    uint32_t length; /* 1 .. EFC_PROTO_CHUNK_MAX */
};

/* A decoded chunk; data points into the buffer it was decoded from (borrowed). */
struct efc_chunk {
    uint8_t sha256[32];
    uint64_t offset;
    uint64_t total_bytes;
    uint32_t len;
    const uint8_t *data;
};

/* Request codec (JSON, type "chunk_req"); same rules as proto.h's messages. */
enum efc_status efc_chunk_req_encode(const struct efc_chunk_req *m, char **out);
enum efc_status efc_chunk_req_decode(const void *buf, size_t len, struct efc_chunk_req *out);

/* Chunk codec. encode: EFC_EINVAL if the chunk would not decode. decode: EFC_EPROTO with a
 * detail for a bad magic, unknown version, bad sizes or ranges. */
enum efc_status efc_chunk_encode(const struct efc_chunk *c, void **out, size_t *out_len);
enum efc_status efc_chunk_decode(const void *buf, size_t len, struct efc_chunk *out);

/* Sender: reads the requested range of the artifact file at path (whose digest the caller
 * knows: sha256_hex) and returns the encoded chunk message. The range is clipped to the end
 * of the file. EFC_EPROTO if the request names another artifact or starts beyond the end;
 * EFC_ENOTFOUND / EFC_EIO for file problems. Stateless: serves any number of agents. */
enum efc_status efc_chunk_serve(const char *path, const char *sha256_hex,
                                const struct efc_chunk_req *req, void **out, size_t *out_len);

/* Artifact topic "<prefix>/art/<sha256>/<device_id>" (the agent subscribes to
 * "<prefix>/art/+/<own id>"); EFC_EINVAL for a bad prefix, digest or id, or no room. */
enum efc_status efc_chunk_topic(const char *prefix, const char *sha256_hex, const char *device_id,
                                char *out, size_t out_len);
/* Parse it: digest (65 bytes) and device id (EFC_PROTO_ID_MAX bytes) out; EFC_EPROTO. */
enum efc_status efc_chunk_topic_parse(const char *prefix, const char *topic,
                                      char sha256_hex[EFC_PROTO_SHA256_HEX],
                                      char device_id[EFC_PROTO_ID_MAX]);

struct efc_chunk_rx_opts {
    const char *path;          /* final artifact path; ".part" and ".part.map" beside it */
    const char *sha256_hex;    /* expected digest */
    uint64_t total_bytes;      /* 1 .. EFC_CHUNK_TOTAL_MAX */
    uint32_t chunk_bytes;      /* 1 .. EFC_PROTO_CHUNK_MAX; 0 = EFC_CHUNK_DEFAULT_BYTES */
    uint32_t max_outstanding;  /* requests in flight; 0 = 4 */
    uint32_t checkpoint_every; /* chunks between bitmap checkpoints; 0 = 16 */
};

/* Receiver state (caller storage; fields are read-only for the caller). */
struct efc_chunk_rx {
    char path[EFC_CHUNK_PATH_MAX];
    char part_path[EFC_CHUNK_PATH_MAX];
    char map_path[EFC_CHUNK_PATH_MAX];
    uint8_t sha256[32];
    uint64_t total_bytes;
    uint32_t chunk_bytes;
    uint32_t n_chunks;
    uint32_t n_have;     /* chunks received (and written) */
    uint32_t n_inflight; /* requested, not yet received */
    uint32_t n_resumed;  /* chunks restored from the bitmap file at open */
    uint32_t max_outstanding;
    uint32_t checkpoint_every;
    uint32_t since_checkpoint;
    uint32_t cursor;   /* next chunk index to consider for a request */
    uint8_t *have;     /* bitmap, n_chunks bits */
    uint8_t *inflight; /* bitmap, n_chunks bits */
    int fd;            /* the .part file */
    int done;          /* 1 once verified and renamed to path */
};

/* Open a receiver. Resumes from "<path>.part" + "<path>.part.map" when the map names the same
 * digest, size and chunk size (n_resumed > 0); otherwise starts empty. Errors: EFC_EINVAL
 * (options), EFC_ENOMEM, EFC_EIO. Free with efc_chunk_rx_fini. */
enum efc_status efc_chunk_rx_open(struct efc_chunk_rx *rx, const struct efc_chunk_rx_opts *o);

/* Next request to send: 1 and *req filled, or 0 when max_outstanding requests are in flight,
 * every missing chunk is already requested, or the transfer is done. */
int efc_chunk_rx_next(struct efc_chunk_rx *rx, struct efc_chunk_req *req);

/* Forget the in-flight marks (after a timeout without progress or a reconnect) so that
 * efc_chunk_rx_next requests the still-missing chunks again. */
void efc_chunk_rx_expire(struct efc_chunk_rx *rx);

/* Store a decoded chunk. EFC_OK for a new or duplicate chunk; EFC_EPROTO for a chunk of
 * another artifact, beyond the size, not on a chunk boundary or of the wrong length; EFC_EIO.
 * When the last chunk arrives the file is verified: EFC_OK and rx->done = 1 (renamed to path,
 * map removed), or EFC_EHASH: the partial file and map are discarded and the receiver starts
 * over empty (a caller may retry the whole transfer). */
enum efc_status efc_chunk_rx_put(struct efc_chunk_rx *rx, const struct efc_chunk *c);

/* Make the received chunks durable (fdatasync the .part file) and then record the bitmap with
 * efc_fs_write_atomic. Also done every checkpoint_every chunks by efc_chunk_rx_put. */
enum efc_status efc_chunk_rx_checkpoint(struct efc_chunk_rx *rx);

/* Release memory and the file descriptor (no checkpoint: call it first for a clean stop).
 * The .part and .part.map files stay for a later resume. */
void efc_chunk_rx_fini(struct efc_chunk_rx *rx);

#endif
