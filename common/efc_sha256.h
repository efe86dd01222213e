/* efc_sha256.h — SHA-256 (FIPS 180-4), streaming and one-shot.
 *
 * Owns: the SHA-256 digest used for .efm checksums, artifact digests and anything else that
 * needs a content hash. Written from the FIPS 180-4 text; no external crypto library.
 * A struct efc_sha256 lives in caller storage (init / update / final, no allocation); one
 * thread per context. The one-shot helpers keep no state and are safe from any thread.
 */
#ifndef EFC_COMMON_SHA256_H
#define EFC_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define EFC_SHA256_BYTES 32
#define EFC_SHA256_HEX_BYTES 65 /* 64 hex digits + NUL */

struct efc_sha256 {
    uint32_t h[8];     /* intermediate hash value H(i) */
    uint64_t n_bytes;  /* message bytes so far */
    uint8_t block[64]; /* pending partial block */
    size_t n_block;    /* bytes in block[] */
};

/* Start a new digest. */
void efc_sha256_init(struct efc_sha256 *s);
/* Absorb n bytes (p may be NULL when n == 0). */
void efc_sha256_update(struct efc_sha256 *s, const void *p, size_t n);
/* Write the 32-byte digest to out; the context must be re-initialised before reuse. */
void efc_sha256_final(struct efc_sha256 *s, uint8_t out[EFC_SHA256_BYTES]);
/* One-shot digest of p[0..n). */
void efc_sha256(const void *p, size_t n, uint8_t out[EFC_SHA256_BYTES]);
/* Lower-case hex of a digest into out (65 bytes, NUL-terminated). */
void efc_sha256_hex(const uint8_t d[EFC_SHA256_BYTES], char out[EFC_SHA256_HEX_BYTES]);

#endif
