/* manifest.h — signed artifact manifests (docs/ota.md; issue 7; RELIABILITY.md Part 2, 5-6).
 *
 * A manifest binds one artifact (its SHA-256 and size) to a model id, a policy, a target
 * hardware class, a monotonically increasing version and a validity window, and is signed
 * with ECDSA P-256 over SHA-256 (mbedTLS 2.28 has no Ed25519). The signature covers the
 * *canonical bytes*: the manifest without its signature, produced by efc_manifest_encode
 * (fixed key order, no whitespace, 64-bit integers as decimal strings). A verifier parses the
 * JSON, re-encodes the parsed fields and checks the signature over that re-encoding; it never
 * hashes text it did not produce. Only an authentic manifest is then checked for time, class
 * and version, and only then may the artifact's bytes be compared with it
 * (efc_manifest_check_artifact) — before anything parses them.
 *
 * Every refusal has its own reason (enum efc_manifest_err, stable names via
 * efc_manifest_err_str) besides the coarse efc_status:
 *   EFC_EPROTO       malformed JSON, missing / extra / duplicate / wrong-type field, bad value
 *   EFC_ESIG         unknown key id, revoked key id, bad signature
 *   EFC_EVERSION     expired, not yet valid, version below the minimum (anti-rollback)
 *   EFC_EUNSUPPORTED wrong hardware class
 *   EFC_EHASH        artifact truncated, longer than announced, SHA-256 mismatch
 *   EFC_EINVAL       NULL argument, a field the signer may not use (too long, not printable)
 *   EFC_ENOMEM, EFC_EIO, EFC_ENOTFOUND, EFC_EEXIST (key files), EFC_EINTERNAL (mbedTLS)
 * Details via efc_err_detail() name the field or key id. Ownership: *json / PEM outputs are
 * caller-owned (efc_free). Thread rule: no shared state; a struct efc_manifest_keys may be
 * used by several threads for verification once it is no longer modified.
 */
#ifndef EFC_OTA_MANIFEST_H
#define EFC_OTA_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_sha256.h"
#include "common/efc_status.h"

#define EFC_MANIFEST_FORMAT 1
#define EFC_MANIFEST_STR_MAX 256 /* model_id, policy, hw_class: 1..255 printable ASCII + NUL
                                 * (a policy string: EFC_POLICY_STR_MAX) */
#define EFC_MANIFEST_KEY_ID_HEX 16
/* A manifest is a few hundred bytes; anything bigger is refused before cJSON sees it. */
#define EFC_MANIFEST_MAX_BYTES 4096u
/* Allowed clock skew for "created in the future" (devices without RTC sync drift by
 * minutes; TUF and Mender allow a similar grace). Callers may pass their own. */
#define EFC_MANIFEST_SKEW_DEFAULT_S 300
/* Key file names written by efc_manifest_keygen_files. */
#define EFC_MANIFEST_KEY_FILE "efc-sign.key"
#define EFC_MANIFEST_PUB_FILE "efc-sign.pub"

struct efc_manifest {
    uint8_t artifact_sha256[EFC_SHA256_BYTES];
    uint64_t artifact_bytes;
    char model_id[EFC_MANIFEST_STR_MAX];
    char policy[EFC_MANIFEST_STR_MAX];
    char hw_class[EFC_MANIFEST_STR_MAX];
    uint64_t version; /* anti-rollback counter: strictly increasing per release */
    int64_t created;  /* Unix seconds */
    int64_t expires;  /* Unix seconds, > created */
    char key_id[EFC_MANIFEST_KEY_ID_HEX + 1]; /* set by efc_manifest_sign */
};

/* Why a manifest or an artifact was refused. Append-only, never renumbered. */
enum efc_manifest_err {
    EFC_MANIFEST_OK = 0,
    EFC_MANIFEST_MALFORMED = 1, /* not JSON, not an object, too large */
    EFC_MANIFEST_MISSING_FIELD = 2,
    EFC_MANIFEST_EXTRA_FIELD = 3,
    EFC_MANIFEST_DUPLICATE_FIELD = 4,
    EFC_MANIFEST_WRONG_TYPE = 5,
    EFC_MANIFEST_BAD_VALUE = 6, /* bad hex, number, length, format, window */
    EFC_MANIFEST_UNKNOWN_KEY = 7,
    EFC_MANIFEST_REVOKED_KEY = 8,
    EFC_MANIFEST_BAD_SIGNATURE = 9,
    EFC_MANIFEST_EXPIRED = 10,
    EFC_MANIFEST_NOT_YET_VALID = 11,
    EFC_MANIFEST_WRONG_CLASS = 12,
    EFC_MANIFEST_ROLLBACK = 13, /* version < min_version */
    EFC_MANIFEST_ARTIFACT_TRUNCATED = 14,
    EFC_MANIFEST_ARTIFACT_TRAILING = 15,
    EFC_MANIFEST_ARTIFACT_HASH = 16,
    EFC_MANIFEST_ERR_COUNT /* never use */
};

/* Stable short name ("REVOKED_KEY"), never NULL. */
const char *efc_manifest_err_str(enum efc_manifest_err e);

/* A set of trusted public keys (P-256 only), each known by its key id. */
struct efc_manifest_keys;

enum efc_status efc_manifest_keys_new(struct efc_manifest_keys **out);
void efc_manifest_keys_free(struct efc_manifest_keys *k);
/* Add a public key (PEM or DER SubjectPublicKeyInfo, len bytes; PEM need not be
 * NUL-terminated). key_id (may be NULL) receives its id. EFC_EINVAL: not an EC P-256 key.
 * Adding the same key twice is a no-op. */
enum efc_status efc_manifest_keys_add(struct efc_manifest_keys *k, const void *pub, size_t len,
                                      char key_id[EFC_MANIFEST_KEY_ID_HEX + 1]);
enum efc_status efc_manifest_keys_add_file(struct efc_manifest_keys *k, const char *path,
                                           char key_id[EFC_MANIFEST_KEY_ID_HEX + 1]);

/* Generate a P-256 key pair (ctr_drbg seeded from the system entropy source): *priv_pem and
 * *pub_pem are NUL-terminated PEM (efc_free), key_id its id = the first 16 hex digits of the
 * SHA-256 of the public key's DER SubjectPublicKeyInfo. */
enum efc_status efc_manifest_keygen(char **priv_pem, char **pub_pem,
                                    char key_id[EFC_MANIFEST_KEY_ID_HEX + 1]);
/* As above, written to dir/efc-sign.key (mode 0600) and dir/efc-sign.pub (0644). Refuses
 * with EFC_EEXIST if the private key file already exists (never overwrite a signing key). */
enum efc_status efc_manifest_keygen_files(const char *dir,
                                          char key_id[EFC_MANIFEST_KEY_ID_HEX + 1]);

/* The canonical bytes of m (without key_id check or signature): NUL-terminated in *out
 * (efc_free), *out_len bytes without the NUL. EFC_EINVAL if a field is not encodable. */
enum efc_status efc_manifest_encode(const struct efc_manifest *m, char **out, size_t *out_len);

/* Sign m with the private key priv[0..len) (PEM, unencrypted; EC P-256). m->key_id is
 * ignored: the signed manifest carries the id of the key. *json: the signed manifest,
 * NUL-terminated (efc_free), *json_len bytes. */
enum efc_status efc_manifest_sign(const struct efc_manifest *m, const void *priv, size_t len,
                                  char **json, size_t *json_len);

/* What the verifier accepts. */
struct efc_manifest_policy {
    const struct efc_manifest_keys *trusted;
    const char *const *revoked; /* key ids refused even when trusted */
    size_t n_revoked;
    int64_t now;          /* Unix seconds */
    int64_t skew_s;       /* grace for created > now; < 0: EFC_MANIFEST_SKEW_DEFAULT_S */
    const char *hw_class; /* required class; NULL accepts any */
    uint64_t min_version; /* versions below are refused (anti-rollback) */
};

/* Verify json[0..len) in this order: size and JSON syntax; schema (every field once, right
 * type, valid value, nothing else); key id (revoked, then unknown); the signature over the
 * re-encoded canonical bytes; then expiry, creation (with skew), hardware class, version.
 * On success *out holds the manifest; why (may be NULL) gets the reason in every case. */
enum efc_status efc_manifest_verify(const char *json, size_t len,
                                    const struct efc_manifest_policy *pol, struct efc_manifest *out,
                                    enum efc_manifest_err *why);

/* Check art[0..len) against a verified manifest: size first (truncated / trailing), then
 * SHA-256. Reads the bytes only to hash them. */
enum efc_status efc_manifest_check_artifact(const struct efc_manifest *m, const void *art,
                                            size_t len, enum efc_manifest_err *why);
/* The same for a file: its size is compared before any byte is read, then it is hashed in
 * blocks (never more than artifact_bytes are read). */
enum efc_status efc_manifest_check_file(const struct efc_manifest *m, const char *path,
                                        enum efc_manifest_err *why);

/* SHA-256 and size of a file, read in blocks (for the signer). */
enum efc_status efc_manifest_digest_file(const char *path, uint8_t sha[EFC_SHA256_BYTES],
                                         uint64_t *bytes);

#endif
