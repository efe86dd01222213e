/* artifact.h — the wire form of a model: an .efm file compressed with zstd (docs/format.md,
 * "Artifact container").
 *
 * An artifact is a 64-byte header (magic "EFCA", version, codec, the .efm's size and SHA-256,
 * the compressed payload's size) followed by one zstd frame holding the .efm bytes. The
 * header comes first so that a receiver can refuse an artifact whose model would not fit
 * (efc_artifact_peek needs only the header) and, after decompressing into a buffer of exactly
 * the announced size, verify the SHA-256 before any .efm parser sees a byte. Packing is
 * deterministic: the same .efm and level give the same artifact.
 *
 * Errors (details via efc_err_detail() name the artifact, the part and what is wrong):
 *   EFC_EINVAL       NULL argument, level out of range, pack input not an .efm
 *   EFC_EPROTO       bad magic, truncated or padded, sizes inconsistent or above the limit,
 *                    corrupt zstd data
 *   EFC_EVERSION     a container version or flag this build does not read
 *   EFC_EUNSUPPORTED a codec this build does not decode
 *   EFC_EHASH        the decompressed .efm does not match the header's SHA-256
 *   EFC_ENOMEM, EFC_EIO, EFC_ENOSPC, EFC_ENOTFOUND (file helpers)
 * Ownership: *out / *efm buffers belong to the caller (efc_free). Thread rule: no shared
 * state; every function is safe from any thread.
 */
#ifndef EFC_MODEL_ARTIFACT_H
#define EFC_MODEL_ARTIFACT_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#include "common/efc_sha256.h"
#include "common/efc_status.h"

#define EFC_ARTIFACT_HEADER_BYTES 64u
/* zstd level used when the caller passes 0 (and by `efc inspect`): on the pruned models of
 * docs/format.md ("Measured sizes") level 15 is 4-19 % smaller than level 3 (equal on dense
 * FP32 ones) at 30-80 ms per MB here; level 19 saves at most 1.4 % more for about 3x the
 * time. */
#define EFC_ARTIFACT_LEVEL_DEFAULT 15

/* What the header announces (filled by efc_artifact_peek). */
struct efc_artifact_info {
    uint32_t version;
    uint32_t codec;                       /* 1: zstd */
    uint64_t efm_bytes;                   /* size of the .efm inside */
    uint64_t payload_bytes;               /* compressed bytes after the header */
    uint8_t efm_sha256[EFC_SHA256_BYTES]; /* SHA-256 of the whole .efm */
};

/* Compress the .efm efm[0..len) into a new artifact *out (*out_len bytes). level: 0 for
 * EFC_ARTIFACT_LEVEL_DEFAULT, else a zstd level (ZSTD_minCLevel()..ZSTD_maxCLevel()).
 * The input must start like an .efm (length >= 64, .efm magic: EFC_EINVAL otherwise); its
 * contents are not parsed (efc_artifact_pack_file does validate them). */
enum efc_status efc_artifact_pack(const void *efm, size_t len, int level, void **out,
                                  size_t *out_len);

/* Validate the header of art[0..len) and fill *info, without decompressing. partial = 1:
 * art may be just a prefix (at least the 64 header bytes, e.g. the first chunk of a
 * download), so a receiver can refuse before fetching the rest; partial = 0: len must be
 * exactly 64 + payload_bytes. Refuses an .efm larger than max_bytes (capped at
 * EFC_EFM_MAX_FILE_BYTES) with EFC_EPROTO. */
enum efc_status efc_artifact_peek(const void *art, size_t len, size_t max_bytes, int partial,
                                  struct efc_artifact_info *info);

/* Validate the header (as efc_artifact_peek with partial = 0), decompress into a buffer of
 * exactly the announced size and check the SHA-256; on success *efm (efc_free) holds the
 * .efm bytes, *efm_len their count. Nothing is allocated beyond the announced size, which is
 * checked against max_bytes first. The .efm itself is not parsed (efc_efm_decode does). */
enum efc_status efc_artifact_unpack(const void *art, size_t len, size_t max_bytes, void **efm,
                                    size_t *efm_len);

/* File helpers. pack_file loads and fully validates the .efm (efc_efm_load) before packing;
 * unpack_file refuses an artifact whose .efm exceeds max_bytes (capped as above). Outputs are
 * written with efc_fs_write_atomic. The optional info out-params receive the header. */
enum efc_status efc_artifact_pack_file(const char *in_efm, const char *out_art, int level,
                                       struct efc_artifact_info *info);
enum efc_status efc_artifact_unpack_file(const char *in_art, const char *out_efm, size_t max_bytes,
                                         struct efc_artifact_info *info);

/* Load a model from either form: an artifact (EFCA magic: unpacked in memory, bounded by
 * max_bytes of .efm, verified) or a plain .efm file (efc_efm_load). Errors as those. */
enum efc_status efc_artifact_load_model(const char *path, size_t max_bytes,
                                        struct efc_model **out);

#endif
