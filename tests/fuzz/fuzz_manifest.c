/* fuzz_manifest.c — libFuzzer target for the signed-manifest verifier (ota/manifest.h;
 * RELIABILITY.md H1 "manifest_parse_verify").
 *
 * The whole input is one manifest, verified against a fixed policy: one trusted P-256 key
 * (TRUSTED_PEM below), two revoked key ids, a fixed clock, class "x86-avx512", minimum version
 * 3. The seeds in tests/fuzz/corpus/manifest/ were signed once with `efc sign` by that key's
 * private half (generated with `efc keygen` for this target and not kept in the tree: new
 * valid seeds need a new key pair, a new TRUSTED_PEM and all valid_* / equiv_* seeds re-signed).
 * Valid seeds let mutations get past the signature: every spelling that parses to the same
 * fields (whitespace, key order, \u escapes, 1.0e0) must still verify, because the signature
 * covers the re-encoding, not the received text.
 *
 * Checked on every input: the status and the reason agree. On success also: the fields meet
 * the policy; the canonical re-encoding with the same signature verifies to the same fields
 * and re-encodes to the same bytes; efc_manifest_check_artifact gives the expected answer for
 * a fixed artifact, its prefix and an empty one. Any disagreement aborts. Replayed over
 * tests/fuzz/corpus/manifest/ by ctest.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/efc_alloc.h"
#include "common/efc_sha256.h"
#include "ota/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Key id d9e162c9cb0e789d. */
static const char TRUSTED_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqV7rk/3MDhW5ItZtQEP66KhdniPD\n"
    "HHaoZjnxovYRAphjy0/jhuJ1Kckv5G4Nfi3fU/2/cXSoYO78gSGtkKRTcw==\n"
    "-----END PUBLIC KEY-----\n";

/* The second id is upper case on purpose: revoked ids are compared without case (strcasecmp
 * in manifest.c), and revoked_key_upper.json carries it in lower case. */
static const char *const REVOKED[] = {"0123456789abcdef", "FEDCBA9876543210"};

/* The seeds were created at 1795845104 (2026-11-28T05:51:44Z): valid ones expire 100 years
 * later, expired.json one second later. not_yet_valid.json was created more than the
 * default skew (300 s) after NOW. Never change NOW without re-signing the seeds. */
#define NOW 1795845110
#define CLASS "x86-avx512"
#define MIN_VERSION 3

/* The artifact the valid_v5 seed was signed for (31 bytes, no NUL). */
static const uint8_t ARTIFACT[] = "efc fuzz artifact: model bytes\n";
#define ARTIFACT_LEN (sizeof(ARTIFACT) - 1)

static struct efc_manifest_keys *keys; /* set once, reachable until exit (not a leak) */
static char trusted_id[EFC_MANIFEST_KEY_ID_HEX + 1];
static struct efc_manifest_policy pol;
static uint8_t sha_full[EFC_SHA256_BYTES], sha_prefix[EFC_SHA256_BYTES],
    sha_empty[EFC_SHA256_BYTES];

static void setup(void)
{
    if (keys)
        return;
    if (efc_manifest_keys_new(&keys) != EFC_OK ||
        efc_manifest_keys_add(keys, TRUSTED_PEM, strlen(TRUSTED_PEM), trusted_id) != EFC_OK) {
        fprintf(stderr, "fuzz_manifest: setup: %s\n", efc_err_detail());
        abort();
    }
    pol.trusted = keys;
    pol.revoked = REVOKED;
    pol.n_revoked = sizeof(REVOKED) / sizeof(REVOKED[0]);
    pol.now = NOW;
    pol.skew_s = -1; /* the default, EFC_MANIFEST_SKEW_DEFAULT_S */
    pol.hw_class = CLASS;
    pol.min_version = MIN_VERSION;
    efc_sha256(ARTIFACT, ARTIFACT_LEN, sha_full);
    efc_sha256(ARTIFACT, ARTIFACT_LEN - 1, sha_prefix);
    efc_sha256(NULL, 0, sha_empty);
}

/* The coarse status must be the one manifest.h documents for the reason. */
static int reason_matches(enum efc_status st, enum efc_manifest_err why)
{
    switch (st) {
    case EFC_OK:
        return why == EFC_MANIFEST_OK;
    case EFC_EPROTO:
        return why >= EFC_MANIFEST_MALFORMED && why <= EFC_MANIFEST_BAD_VALUE;
    case EFC_ESIG:
        return why >= EFC_MANIFEST_UNKNOWN_KEY && why <= EFC_MANIFEST_BAD_SIGNATURE;
    case EFC_EVERSION:
        return why == EFC_MANIFEST_EXPIRED || why == EFC_MANIFEST_NOT_YET_VALID ||
               why == EFC_MANIFEST_ROLLBACK;
    case EFC_EUNSUPPORTED:
        return why == EFC_MANIFEST_WRONG_CLASS;
    case EFC_ENOMEM:
        return 1;
    default:
        return 0; /* EINVAL here would mean the parser accepted what the encoder refuses */
    }
}

/* Field by field: struct padding and bytes after a string's NUL carry no meaning. */
static int same_fields(const struct efc_manifest *a, const struct efc_manifest *b)
{
    return memcmp(a->artifact_sha256, b->artifact_sha256, EFC_SHA256_BYTES) == 0 &&
           a->artifact_bytes == b->artifact_bytes && strcmp(a->model_id, b->model_id) == 0 &&
           strcmp(a->policy, b->policy) == 0 && strcmp(a->hw_class, b->hw_class) == 0 &&
           a->version == b->version && a->created == b->created && a->expires == b->expires &&
           strcmp(a->key_id, b->key_id) == 0;
}

/* A verified manifest must satisfy every claim the policy makes. */
static int meets_policy(const struct efc_manifest *m)
{
    return strcmp(m->key_id, trusted_id) == 0 && m->expires > m->created && m->expires > NOW &&
           m->created <= NOW + EFC_MANIFEST_SKEW_DEFAULT_S && strcmp(m->hw_class, CLASS) == 0 &&
           m->version >= MIN_VERSION;
}

/* What efc_manifest_check_artifact must answer for p[0..n) with digest d. */
static void check_artifact(const struct efc_manifest *m, const void *p, size_t n,
                           const uint8_t d[EFC_SHA256_BYTES])
{
    enum efc_manifest_err why = EFC_MANIFEST_ERR_COUNT, want;
    enum efc_status st = efc_manifest_check_artifact(m, p, n, &why);

    if ((uint64_t)n != m->artifact_bytes)
        want = (uint64_t)n < m->artifact_bytes ? EFC_MANIFEST_ARTIFACT_TRUNCATED
                                               : EFC_MANIFEST_ARTIFACT_TRAILING;
    else if (memcmp(d, m->artifact_sha256, EFC_SHA256_BYTES) != 0)
        want = EFC_MANIFEST_ARTIFACT_HASH;
    else
        want = EFC_MANIFEST_OK;
    if (why != want || st != (want == EFC_MANIFEST_OK ? EFC_OK : EFC_EHASH))
        abort();
}

/* The canonical bytes plus the input's signature, in the form efc_manifest_sign writes. */
static char *resigned(const uint8_t *data, size_t size, const char *canon, size_t clen)
{
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    const cJSON *sig = cJSON_GetObjectItemCaseSensitive(root, "signature");
    char *out = NULL;
    size_t cap;

    /* the verifier accepted this input, so cJSON parses it and the signature is a string */
    if (!cJSON_IsString(sig) || clen < 2 || canon[clen - 1] != '}')
        abort();
    cap = clen + strlen(sig->valuestring) + sizeof(",\"signature\":\"\"}");
    if ((out = efc_malloc(cap)) != NULL &&
        (size_t)snprintf(out, cap, "%.*s,\"signature\":\"%s\"}", (int)(clen - 1), canon,
                         sig->valuestring) >= cap)
        abort();
    cJSON_Delete(root);
    return out;
}

static void check_verified(const uint8_t *data, size_t size, const struct efc_manifest *m)
{
    struct efc_manifest m2;
    enum efc_manifest_err why = EFC_MANIFEST_ERR_COUNT;
    char *canon = NULL, *canon2 = NULL, *signed_form;
    size_t clen, clen2;
    enum efc_status st;

    if (!meets_policy(m))
        abort();
    if ((st = efc_manifest_encode(m, &canon, &clen)) != EFC_OK) {
        if (st == EFC_ENOMEM)
            return;
        abort(); /* the verifier accepted fields the encoder refuses */
    }
    if (strlen(canon) != clen)
        abort();
    if (!(signed_form = resigned(data, size, canon, clen))) {
        efc_free(canon);
        return;
    }
    memset(&m2, 0, sizeof(m2));
    st = efc_manifest_verify(signed_form, strlen(signed_form), &pol, &m2, &why);
    if (st == EFC_OK) {
        if (why != EFC_MANIFEST_OK || !same_fields(m, &m2))
            abort();
        st = efc_manifest_encode(&m2, &canon2, &clen2);
        if (st == EFC_OK && (clen2 != clen || memcmp(canon, canon2, clen) != 0))
            abort(); /* canonical form is not a fixed point */
        if (st != EFC_OK && st != EFC_ENOMEM)
            abort();
    } else if (st != EFC_ENOMEM) {
        abort(); /* the canonical spelling of an accepted manifest is refused */
    }
    efc_free(canon2);
    efc_free(signed_form);
    efc_free(canon);

    check_artifact(m, ARTIFACT, ARTIFACT_LEN, sha_full);
    check_artifact(m, ARTIFACT, ARTIFACT_LEN - 1, sha_prefix);
    check_artifact(m, NULL, 0, sha_empty);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct efc_manifest m;
    enum efc_manifest_err why = EFC_MANIFEST_ERR_COUNT;
    enum efc_status st;

    setup();
    memset(&m, 0, sizeof(m));
    /* a NULL json is a caller bug (EINVAL), not a fuzz input: keep empty inputs non-NULL */
    st = efc_manifest_verify(data ? (const char *)data : "", size, &pol, &m, &why);
    if (!reason_matches(st, why))
        abort();
    if (st == EFC_OK)
        check_verified(data, size, &m);
    return 0;
}
