/* test_manifest.c — signed artifact manifests (ota/manifest.h, docs/ota.md).
 *
 * - Round trip: keygen, sign, verify, check the artifact; the key id is the same from the
 *   private and the public side; encoding is deterministic; the verifier re-encodes, so key
 *   order, whitespace and JSON escapes in the received text do not matter, while any edit of a
 *   value does.
 * - The manifest part of issue 7's bad-artifact matrix, each refused with its own reason:
 *   every signature byte with a bit flipped; each field edited after signing; artifact
 *   truncated at 0, 1, n/2, n-1; a byte flipped at start, middle, end; trailing bytes; the
 *   artifact of another release (hash mismatch); unknown key; revoked key; wrong hardware
 *   class; older version; expired; created in the future beyond the skew. Boundaries on both
 *   sides (expiry, skew, minimum version).
 * - Malformed input: not JSON, not an object, trailing text, oversized, and each field
 *   missing, duplicated, of the wrong type, with a bad value, plus an unknown field.
 * - Files: keygen_files (modes, no overwrite), keys_add_file, check_file, digest_file.
 * - Allocation failures in verify: a status, never a crash or a leak (ASan build).
 * The artifact is random bytes of an odd size; the seed is printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_sha256.h"
#include "ota/manifest.h"

#define ART_BYTES 4099 /* odd, not a multiple of the SHA-256 block */
#define NOW 1800000000LL

static char *priv_a, *pub_a, *priv_b, *pub_b;
static char id_a[17], id_b[17];
static struct efc_manifest_keys *trust_a;  /* key A only */
static struct efc_manifest_keys *trust_ab; /* A and B */
static uint8_t art[ART_BYTES];
static struct efc_manifest base;

static uint32_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static int setup(void **state)
{
    (void)state;
    rng_state = (uint32_t)time(NULL);
    printf("# seed %u\n", rng_state);
    for (size_t i = 0; i < ART_BYTES; i++)
        art[i] = (uint8_t)rnd();
    if (efc_manifest_keygen(&priv_a, &pub_a, id_a) || efc_manifest_keygen(&priv_b, &pub_b, id_b))
        return -1;
    if (efc_manifest_keys_new(&trust_a) || efc_manifest_keys_new(&trust_ab))
        return -1;
    if (efc_manifest_keys_add(trust_a, pub_a, strlen(pub_a), NULL) ||
        efc_manifest_keys_add(trust_ab, pub_a, strlen(pub_a), NULL) ||
        efc_manifest_keys_add(trust_ab, pub_b, strlen(pub_b), NULL))
        return -1;
    memset(&base, 0, sizeof(base));
    efc_sha256(art, ART_BYTES, base.artifact_sha256);
    base.artifact_bytes = ART_BYTES;
    snprintf(base.model_id, sizeof(base.model_id), "lenet5-fmnist");
    snprintf(base.policy, sizeof(base.policy), "prune:0.5+int8 \"q\" \\x");
    snprintf(base.hw_class, sizeof(base.hw_class), "x86-avx512");
    base.version = 42;
    base.created = NOW - 60;
    base.expires = NOW + 3600;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    efc_free(priv_a);
    efc_free(pub_a);
    efc_free(priv_b);
    efc_free(pub_b);
    efc_manifest_keys_free(trust_a);
    efc_manifest_keys_free(trust_ab);
    return 0;
}

static struct efc_manifest_policy pol_default(void)
{
    struct efc_manifest_policy p = {0};
    p.trusted = trust_a;
    p.now = NOW;
    p.skew_s = -1;
    p.hw_class = "x86-avx512";
    p.min_version = 42;
    return p;
}

/* Sign m with priv; the caller frees. */
static char *sign(const struct efc_manifest *m, const char *priv)
{
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(efc_manifest_sign(m, priv, strlen(priv), &json, &len), EFC_OK);
    assert_int_equal(strlen(json), len);
    return json;
}

/* Verify json with pol; returns the reason and checks that status and reason agree. */
static enum efc_manifest_err verify(const char *json, size_t len,
                                    const struct efc_manifest_policy *p, struct efc_manifest *out)
{
    struct efc_manifest m;
    enum efc_manifest_err why = EFC_MANIFEST_ERR_COUNT;
    enum efc_status st = efc_manifest_verify(json, len, p, out ? out : &m, &why);
    assert_true(why < EFC_MANIFEST_ERR_COUNT);
    assert_int_equal(st == EFC_OK, why == EFC_MANIFEST_OK);
    if (st)
        assert_non_null(strstr(efc_err_detail(), efc_manifest_err_str(why)));
    return why;
}

static enum efc_manifest_err verify_str(const char *json)
{
    struct efc_manifest_policy p = pol_default();
    return verify(json, strlen(json), &p, NULL);
}

/* New string: s with the first occurrence of from replaced by to (must exist). */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    assert_non_null(at);
    size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *r = efc_malloc(n);
    assert_non_null(r);
    snprintf(r, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return r;
}

/* The signature hex of a signed manifest (static storage). */
static const char *sig_of(const char *json)
{
    static char sig[256];
    const char *p = strstr(json, "\"signature\":\"");
    assert_non_null(p);
    p += strlen("\"signature\":\"");
    size_t n = strcspn(p, "\"");
    assert_true(n < sizeof(sig));
    memcpy(sig, p, n);
    sig[n] = '\0';
    return sig;
}

/* A manifest for m carrying signature sig (hex) that was made for something else: the
 * canonical bytes of m plus the signature member, i.e. an edit after signing. */
static char *with_sig(const struct efc_manifest *m, const char *sig)
{
    char *canon, *json;
    size_t clen, n;
    assert_int_equal(efc_manifest_encode(m, &canon, &clen), EFC_OK);
    n = clen + strlen(sig) + 32;
    json = efc_malloc(n);
    assert_non_null(json);
    snprintf(json, n, "%.*s,\"signature\":\"%s\"}", (int)(clen - 1), canon, sig);
    efc_free(canon);
    return json;
}

static void test_round_trip(void **state)
{
    (void)state;
    struct efc_manifest_policy p = pol_default();
    struct efc_manifest got;
    enum efc_manifest_err why;
    char *json = sign(&base, priv_a), *json2, *c1, *c2;
    size_t l1, l2;
    char kid[17];

    assert_int_equal(verify(json, strlen(json), &p, &got), EFC_MANIFEST_OK);
    assert_memory_equal(got.artifact_sha256, base.artifact_sha256, EFC_SHA256_BYTES);
    assert_int_equal(got.artifact_bytes, ART_BYTES);
    assert_string_equal(got.model_id, base.model_id);
    assert_string_equal(got.policy, base.policy); /* quotes and backslashes survive */
    assert_string_equal(got.hw_class, base.hw_class);
    assert_int_equal(got.version, 42);
    assert_int_equal(got.created, base.created);
    assert_int_equal(got.expires, base.expires);
    assert_string_equal(got.key_id, id_a);
    assert_int_equal(efc_manifest_check_artifact(&got, art, ART_BYTES, &why), EFC_OK);
    assert_int_equal(why, EFC_MANIFEST_OK);

    /* key id: 16 lower-case hex, the same from the public key alone */
    assert_int_equal(strlen(id_a), 16);
    assert_int_equal(efc_manifest_keys_add(trust_a, pub_a, strlen(pub_a), kid), EFC_OK);
    assert_string_equal(kid, id_a);
    assert_string_not_equal(id_a, id_b);

    /* canonical bytes are deterministic and are the signed text minus the signature */
    assert_int_equal(efc_manifest_encode(&got, &c1, &l1), EFC_OK);
    assert_int_equal(efc_manifest_encode(&got, &c2, &l2), EFC_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(c1, c2, l1);
    assert_memory_equal(c1, json, l1 - 1);
    assert_int_equal(strncmp(c1, "{\"format\":1,\"artifact_sha256\":\"", 31), 0);
    efc_free(c1);
    efc_free(c2);

    /* signing again verifies too (Debian's mbedTLS signs deterministically, RFC 6979, so the
     * signatures are equal there; nothing here depends on it) */
    json2 = sign(&base, priv_a);
    assert_int_equal(verify(json2, strlen(json2), &p, NULL), EFC_MANIFEST_OK);
    efc_free(json2);

    /* huge 64-bit values survive (decimal strings, not doubles) */
    struct efc_manifest big = base;
    big.version = UINT64_MAX;
    big.artifact_bytes = (1ULL << 53) + 1;
    json2 = sign(&big, priv_a);
    assert_int_equal(verify(json2, strlen(json2), &p, &got), EFC_MANIFEST_OK);
    assert_true(got.version == UINT64_MAX);
    assert_true(got.artifact_bytes == (1ULL << 53) + 1);
    efc_free(json2);

    /* no class required: any class accepted; not NUL-terminated input is fine */
    p.hw_class = NULL;
    json2 = efc_malloc(strlen(json) + 8);
    memcpy(json2, json, strlen(json));
    memset(json2 + strlen(json), 'Z', 8); /* garbage beyond len must not be read as JSON */
    assert_int_equal(verify(json2, strlen(json), &p, NULL), EFC_MANIFEST_OK);
    efc_free(json2);
    efc_free(json);
}

/* The verifier hashes its own re-encoding: equivalent text verifies, edits do not. */
static void test_reencoding(void **state)
{
    (void)state;
    char *json = sign(&base, priv_a), *t, *u;

    /* whitespace */
    t = replace(json, "{\"format\":1,", "{ \"format\" : 1 ,\n\t");
    assert_int_equal(verify_str(t), EFC_MANIFEST_OK);
    efc_free(t);
    /* a JSON escape for a plain letter ("l" of lenet5) */
    t = replace(json, "\"lenet5", "\"\\u006cenet5");
    assert_int_equal(verify_str(t), EFC_MANIFEST_OK);
    efc_free(t);
    /* key order: move "format" to the end */
    t = replace(json, "{\"format\":1,", "{");
    u = replace(t, "}", ",\"format\":1}");
    assert_int_equal(verify_str(u), EFC_MANIFEST_OK);
    efc_free(t);
    efc_free(u);
    /* format as 1.0: the same number */
    t = replace(json, "\"format\":1,", "\"format\":1.0,");
    assert_int_equal(verify_str(t), EFC_MANIFEST_OK);
    efc_free(t);
    efc_free(json);
}

static void test_signature_bit_flips(void **state)
{
    (void)state;
    char *json = sign(&base, priv_a);
    char sig[256], flipped[256];
    snprintf(sig, sizeof(sig), "%s", sig_of(json));
    size_t n = strlen(sig) / 2;
    assert_true(n >= 8 && n <= 72);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        snprintf(flipped, sizeof(flipped), "%s", sig);
        sscanf(flipped + 2 * i, "%2x", &v);
        v ^= 1u << (i % 8);
        char hx[3];
        snprintf(hx, sizeof(hx), "%02x", v);
        flipped[2 * i] = hx[0];
        flipped[2 * i + 1] = hx[1];
        char *t = replace(json, sig, flipped);
        if (verify_str(t) != EFC_MANIFEST_BAD_SIGNATURE)
            fail_msg("signature byte %zu flipped: not refused as BAD_SIGNATURE", i);
        efc_free(t);
    }
    /* a valid signature of another manifest */
    struct efc_manifest other = base;
    other.version = 43;
    char *json2 = sign(&other, priv_a), *t = replace(json, sig, sig_of(json2));
    assert_int_equal(verify_str(t), EFC_MANIFEST_BAD_SIGNATURE);
    efc_free(t);
    efc_free(json2);
    efc_free(json);
}

static void test_edit_each_field(void **state)
{
    (void)state;
    char *json = sign(&base, priv_a);
    char sig[256];
    struct efc_manifest signed_m = base;
    snprintf(sig, sizeof(sig), "%s", sig_of(json));
    snprintf(signed_m.key_id, sizeof(signed_m.key_id), "%s", id_a);

    for (int f = 0; f < 9; f++) {
        struct efc_manifest m = signed_m;
        switch (f) {
        case 0:
            m.artifact_sha256[31] ^= 1;
            break;
        case 1:
            m.artifact_bytes += 1;
            break;
        case 2:
            m.model_id[0] = 'L';
            break;
        case 3:
            m.policy[0] = 'P';
            break;
        case 4:
            snprintf(m.hw_class, sizeof(m.hw_class), "x86-avx5120");
            break;
        case 5:
            m.version = 1000;
            break;
        case 6:
            m.created -= 1;
            break;
        case 7:
            m.expires += 86400;
            break;
        case 8:
            break; /* unchanged: must verify (the harness itself is right) */
        }
        struct efc_manifest_policy p = pol_default();
        p.hw_class = NULL;
        char *t = with_sig(&m, sig);
        enum efc_manifest_err want = f == 8 ? EFC_MANIFEST_OK : EFC_MANIFEST_BAD_SIGNATURE;
        if (verify(t, strlen(t), &p, NULL) != want)
            fail_msg("field edit %d: expected %s", f, efc_manifest_err_str(want));
        efc_free(t);
    }
    /* key id edited to another trusted key: bad signature; to an unknown one: unknown key */
    struct efc_manifest m = signed_m;
    struct efc_manifest_policy p = pol_default();
    p.trusted = trust_ab;
    snprintf(m.key_id, sizeof(m.key_id), "%s", id_b);
    char *t = with_sig(&m, sig);
    assert_int_equal(verify(t, strlen(t), &p, NULL), EFC_MANIFEST_BAD_SIGNATURE);
    efc_free(t);
    snprintf(m.key_id, sizeof(m.key_id), "0123456789abcdef");
    t = with_sig(&m, sig);
    assert_int_equal(verify(t, strlen(t), &p, NULL), EFC_MANIFEST_UNKNOWN_KEY);
    efc_free(t);
    efc_free(json);
}

static void test_keys_and_revocation(void **state)
{
    (void)state;
    struct efc_manifest_policy p = pol_default();
    char *json_b = sign(&base, priv_b), *json_a = sign(&base, priv_a);
    char upper[17];
    const char *revoked[2];

    assert_int_equal(verify(json_b, strlen(json_b), &p, NULL), EFC_MANIFEST_UNKNOWN_KEY);
    p.trusted = trust_ab;
    assert_int_equal(verify(json_b, strlen(json_b), &p, NULL), EFC_MANIFEST_OK);
    /* revoke B (upper case in configuration is accepted): B refused, A still accepted */
    for (int i = 0; i < 16; i++)
        upper[i] = (char)(id_b[i] >= 'a' ? id_b[i] - 32 : id_b[i]);
    upper[16] = '\0';
    revoked[0] = "ffffffffffffffff";
    revoked[1] = upper;
    p.revoked = revoked;
    p.n_revoked = 2;
    assert_int_equal(verify(json_b, strlen(json_b), &p, NULL), EFC_MANIFEST_REVOKED_KEY);
    assert_int_equal(verify(json_a, strlen(json_a), &p, NULL), EFC_MANIFEST_OK);
    /* revoked wins even without trust */
    p.trusted = trust_a;
    assert_int_equal(verify(json_b, strlen(json_b), &p, NULL), EFC_MANIFEST_REVOKED_KEY);
    /* no trusted keys at all */
    p.trusted = NULL;
    p.n_revoked = 0;
    assert_int_equal(verify(json_a, strlen(json_a), &p, NULL), EFC_MANIFEST_UNKNOWN_KEY);

    /* keys: a private key is not a public key, garbage is nothing, the same key twice is one */
    struct efc_manifest_keys *k;
    assert_int_equal(efc_manifest_keys_new(&k), EFC_OK);
    assert_int_equal(efc_manifest_keys_add(k, priv_a, strlen(priv_a), NULL), EFC_EINVAL);
    assert_int_equal(efc_manifest_keys_add(k, "garbage", 7, NULL), EFC_EINVAL);
    assert_int_equal(efc_manifest_keys_add(k, pub_a, strlen(pub_a) / 2, NULL), EFC_EINVAL);
    assert_int_equal(efc_manifest_keys_add(k, pub_a, 0, NULL), EFC_EINVAL);
    assert_int_equal(efc_manifest_keys_add(k, pub_a, strlen(pub_a), NULL), EFC_OK);
    assert_int_equal(efc_manifest_keys_add(k, pub_a, strlen(pub_a), NULL), EFC_OK);
    efc_manifest_keys_free(k);
    /* signing needs a private key */
    char *out;
    size_t len;
    assert_int_equal(efc_manifest_sign(&base, pub_a, strlen(pub_a), &out, &len), EFC_EINVAL);
    efc_free(json_a);
    efc_free(json_b);
}

static void test_claims(void **state)
{
    (void)state;
    struct efc_manifest_policy p = pol_default();
    char *json = sign(&base, priv_a);
    size_t n = strlen(json);

    /* expiry: valid up to expires - 1 */
    p.now = base.expires - 1;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_OK);
    p.now = base.expires;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_EXPIRED);
    p.now = INT64_MAX;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_EXPIRED);
    /* creation in the future: default skew, then an explicit one, then none */
    p.now = base.created - EFC_MANIFEST_SKEW_DEFAULT_S;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_OK);
    p.now = base.created - EFC_MANIFEST_SKEW_DEFAULT_S - 1;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_NOT_YET_VALID);
    p.skew_s = 0;
    p.now = base.created;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_OK);
    p.now = base.created - 1;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_NOT_YET_VALID);
    p = pol_default();
    /* hardware class: exact match */
    p.hw_class = "x86-avx2";
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_WRONG_CLASS);
    p.hw_class = "x86-avx512 ";
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_WRONG_CLASS);
    p = pol_default();
    /* anti-rollback: equal accepted, older refused */
    p.min_version = 42;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_OK);
    p.min_version = 43;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_ROLLBACK);
    p.min_version = UINT64_MAX;
    assert_int_equal(verify(json, n, &p, NULL), EFC_MANIFEST_ROLLBACK);
    efc_free(json);
}

static void check_art(const struct efc_manifest *m, const uint8_t *a, size_t len,
                      enum efc_manifest_err want, const char *what)
{
    enum efc_manifest_err why = EFC_MANIFEST_ERR_COUNT;
    enum efc_status st = efc_manifest_check_artifact(m, a, len, &why);
    if (why != want || (st == EFC_OK) != (want == EFC_MANIFEST_OK))
        fail_msg("%s: got %s, want %s", what, efc_manifest_err_str(why),
                 efc_manifest_err_str(want));
    if (want != EFC_MANIFEST_OK)
        assert_int_equal(st, EFC_EHASH);
}

static void test_artifact_matrix(void **state)
{
    (void)state;
    struct efc_manifest_policy p = pol_default();
    struct efc_manifest m;
    char *json = sign(&base, priv_a);
    static uint8_t buf[ART_BYTES + 128];
    const size_t cuts[] = {0, 1, ART_BYTES / 2, ART_BYTES - 1};
    const size_t flips[] = {0, ART_BYTES / 2, ART_BYTES - 1};

    assert_int_equal(verify(json, strlen(json), &p, &m), EFC_MANIFEST_OK);
    check_art(&m, art, ART_BYTES, EFC_MANIFEST_OK, "intact");
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
        check_art(&m, art, cuts[i], EFC_MANIFEST_ARTIFACT_TRUNCATED, "truncated");
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        memcpy(buf, art, ART_BYTES);
        buf[flips[i]] ^= (uint8_t)(1u << (rnd() % 8));
        check_art(&m, buf, ART_BYTES, EFC_MANIFEST_ARTIFACT_HASH, "byte flip");
    }
    memcpy(buf, art, ART_BYTES);
    memset(buf + ART_BYTES, 0, 128);
    check_art(&m, buf, ART_BYTES + 1, EFC_MANIFEST_ARTIFACT_TRAILING, "one trailing byte");
    check_art(&m, buf, ART_BYTES + 128, EFC_MANIFEST_ARTIFACT_TRAILING, "trailing bytes");
    /* another release's artifact of the same size (mix-and-match) */
    for (size_t i = 0; i < ART_BYTES; i++)
        buf[i] = (uint8_t)rnd();
    check_art(&m, buf, ART_BYTES, EFC_MANIFEST_ARTIFACT_HASH, "other artifact");

    /* the same through a file */
    char dir[] = "/tmp/efc_test_manifest_XXXXXX", path[128];
    enum efc_manifest_err why;
    uint8_t d[EFC_SHA256_BYTES];
    uint64_t bytes;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/a.efca", dir);
    assert_int_equal(efc_fs_write_atomic(path, art, ART_BYTES), EFC_OK);
    assert_int_equal(efc_manifest_check_file(&m, path, &why), EFC_OK);
    assert_int_equal(efc_manifest_digest_file(path, d, &bytes), EFC_OK);
    assert_int_equal(bytes, ART_BYTES);
    assert_memory_equal(d, m.artifact_sha256, EFC_SHA256_BYTES);
    assert_int_equal(efc_fs_write_atomic(path, art, ART_BYTES - 1), EFC_OK);
    assert_int_equal(efc_manifest_check_file(&m, path, &why), EFC_EHASH);
    assert_int_equal(why, EFC_MANIFEST_ARTIFACT_TRUNCATED);
    assert_non_null(strstr(efc_err_detail(), path));
    memcpy(buf, art, ART_BYTES);
    assert_int_equal(efc_fs_write_atomic(path, buf, ART_BYTES + 3), EFC_OK);
    assert_int_equal(efc_manifest_check_file(&m, path, &why), EFC_EHASH);
    assert_int_equal(why, EFC_MANIFEST_ARTIFACT_TRAILING);
    buf[ART_BYTES / 3] ^= 0x80;
    assert_int_equal(efc_fs_write_atomic(path, buf, ART_BYTES), EFC_OK);
    assert_int_equal(efc_manifest_check_file(&m, path, &why), EFC_EHASH);
    assert_int_equal(why, EFC_MANIFEST_ARTIFACT_HASH);
    unlink(path);
    assert_int_equal(efc_manifest_check_file(&m, path, &why), EFC_ENOTFOUND);
    rmdir(dir);
    efc_free(json);
}

static void test_malformed(void **state)
{
    (void)state;
    char *json = sign(&base, priv_a);
    char numbuf[64];
    static const char *const not_json[] = {
        "{",     "[]",  "null",       "\"x\"",           "42", "{\"format\":1",
        "{} {}", "{}x", "\xff\xfe{}", "{\"format\":1,}",
    };
    for (size_t i = 0; i < sizeof(not_json) / sizeof(not_json[0]); i++)
        if (verify_str(not_json[i]) != EFC_MANIFEST_MALFORMED)
            fail_msg("not refused as MALFORMED: %s", not_json[i]);
    assert_int_equal(verify(json, 0, &(struct efc_manifest_policy){.trusted = trust_a}, NULL),
                     EFC_MANIFEST_MALFORMED);
    /* trailing text after a valid manifest */
    char *t = replace(json, "\"}", "\"} x");
    assert_int_equal(verify_str(t), EFC_MANIFEST_MALFORMED);
    efc_free(t);
    /* oversized: padded with whitespace past the limit */
    size_t big = EFC_MANIFEST_MAX_BYTES + 1;
    char *pad = efc_malloc(big + 1);
    memset(pad, ' ', big);
    memcpy(pad, json, strlen(json));
    pad[big] = '\0';
    assert_int_equal(verify_str(pad), EFC_MANIFEST_MALFORMED);
    efc_free(pad);
    assert_int_equal(verify_str("{}"), EFC_MANIFEST_MISSING_FIELD);
    /* a \u0000 escape would cut the C string short: the verified field would differ from
     * the text anyone else reads (found by fuzz_manifest); a raw NUL byte likewise */
    t = replace(json, "\"lenet5-fmnist\"", "\"lenet5-fmnist\\u0000evil\"");
    assert_int_equal(verify_str(t), EFC_MANIFEST_BAD_VALUE);
    efc_free(t);
    t = replace(json, "\"lenet5-fmnist\"", "\"lenet5-fmnist\\\\u0000\""); /* escaped "\" */
    assert_int_not_equal(verify_str(t), EFC_MANIFEST_BAD_VALUE);
    efc_free(t);
    {
        size_t n = strlen(json);
        char *z = efc_malloc(n);
        memcpy(z, json, n);
        z[n / 2] = '\0';
        assert_int_equal(verify(z, n, &(struct efc_manifest_policy){.trusted = trust_a}, NULL),
                         EFC_MANIFEST_MALFORMED);
        efc_free(z);
    }

    /* each field: missing, duplicated, wrong type */
    static const char *const fields[] = {"format",  "artifact_sha256", "artifact_bytes", "model_id",
                                         "policy",  "hw_class",        "version",        "created",
                                         "expires", "key_id",          "signature"};
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        char key[64], renamed[64];
        snprintf(key, sizeof(key), "\"%s\":", fields[f]);
        snprintf(renamed, sizeof(renamed), "\"x%s\":", fields[f]);
        /* renamed: one missing and one unknown; unknown is found first (document order) */
        t = replace(json, key, renamed);
        assert_int_equal(verify_str(t), EFC_MANIFEST_EXTRA_FIELD);
        efc_free(t);
        /* duplicated: the member repeated right after the opening brace */
        const char *at = strstr(json, key);
        size_t mlen = strcspn(at + strlen(key) + 1, ",}") + strlen(key) + 1;
        if (f == 0)
            mlen = strlen("\"format\":1");
        char member[300], dup[320];
        snprintf(member, sizeof(member), "%.*s", (int)mlen, at);
        snprintf(dup, sizeof(dup), "{%s,", member);
        t = replace(json, "{", dup);
        if (verify_str(t) != EFC_MANIFEST_DUPLICATE_FIELD)
            fail_msg("duplicate %s not refused", fields[f]);
        efc_free(t);
        /* wrong type: the value replaced by true / a number */
        char wrong[320];
        snprintf(wrong, sizeof(wrong), "%s%s", key, f == 0 ? "\"1\"" : "17");
        t = replace(json, member, wrong);
        if (verify_str(t) != EFC_MANIFEST_WRONG_TYPE)
            fail_msg("wrong type for %s not refused", fields[f]);
        efc_free(t);
        snprintf(wrong, sizeof(wrong), "%snull", key);
        t = replace(json, member, wrong);
        assert_int_equal(verify_str(t), EFC_MANIFEST_WRONG_TYPE);
        efc_free(t);
    }
    /* missing: drop the last member (signature) and the first (format) */
    t = replace(json, ",\"signature\":\"", "}");
    {
        char *end = strchr(t, '}');
        end[1] = '\0';
    }
    assert_int_equal(verify_str(t), EFC_MANIFEST_MISSING_FIELD);
    efc_free(t);
    t = replace(json, "\"format\":1,", "");
    assert_int_equal(verify_str(t), EFC_MANIFEST_MISSING_FIELD);
    efc_free(t);
    t = replace(json, "{", "{\"comment\":\"hi\",");
    assert_int_equal(verify_str(t), EFC_MANIFEST_EXTRA_FIELD);
    efc_free(t);

    /* bad values */
    char sha_hex[EFC_SHA256_HEX_BYTES];
    efc_sha256_hex(base.artifact_sha256, sha_hex);
    struct {
        const char *from, *to;
    } bad[] = {
        {"\"format\":1", "\"format\":2"},
        {"\"format\":1", "\"format\":1.5"},
        {"\"artifact_bytes\":\"4099\"", "\"artifact_bytes\":\"-1\""},
        {"\"artifact_bytes\":\"4099\"", "\"artifact_bytes\":\"04099\""},
        {"\"artifact_bytes\":\"4099\"", "\"artifact_bytes\":\"18446744073709551616\""},
        {"\"artifact_bytes\":\"4099\"", "\"artifact_bytes\":\"\""},
        {"\"artifact_bytes\":\"4099\"", "\"artifact_bytes\":\"4099 \""},
        {"\"version\":\"42\"", "\"version\":\"0x2a\""},
        {"\"version\":\"42\"", "\"version\":\"+42\""},
        {"\"created\":\"", "\"created\":\"-"},
        {"\"expires\":\"", "\"expires\":\"9223372036854775808"},
        {"\"model_id\":\"lenet5-fmnist\"", "\"model_id\":\"\""},
        {"\"model_id\":\"lenet5", "\"model_id\":\"\\u0001lenet5"},
        {"\"model_id\":\"lenet5", "\"model_id\":\"\\u00e9lenet5"},
        {"\"hw_class\":\"x86", "\"hw_class\":\"\\nx86"},
        {"\"key_id\":\"", "\"key_id\":\"0"},
        {"\"signature\":\"", "\"signature\":\"0"},
        {"\"signature\":\"", "\"signature\":\"zz"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = replace(json, bad[i].from, bad[i].to);
        if (verify_str(t) != EFC_MANIFEST_BAD_VALUE)
            fail_msg("bad value %zu (%s) not refused as BAD_VALUE", i, bad[i].to);
        efc_free(t);
    }
    /* digests: upper case, short, non-hex */
    char up[EFC_SHA256_HEX_BYTES];
    snprintf(up, sizeof(up), "%s", sha_hex);
    for (int i = 0; up[i]; i++)
        if (up[i] >= 'a')
            up[i] = (char)(up[i] - 32);
    const char *shas[] = {up, "00",
                          "g000000000000000000000000000000000000000000000000000000000000000"};
    for (size_t i = 0; i < 3; i++) {
        t = replace(json, sha_hex, shas[i]);
        assert_int_equal(verify_str(t), EFC_MANIFEST_BAD_VALUE);
        efc_free(t);
    }
    /* a window that closes before it opens */
    snprintf(numbuf, sizeof(numbuf), "\"expires\":\"%lld\"", (long long)base.expires);
    char repl[64];
    snprintf(repl, sizeof(repl), "\"expires\":\"%lld\"", (long long)base.created);
    t = replace(json, numbuf, repl);
    assert_int_equal(verify_str(t), EFC_MANIFEST_BAD_VALUE);
    efc_free(t);
    /* random garbage never crashes and is never accepted */
    char g[257];
    for (int r = 0; r < 200; r++) {
        size_t n = 1 + rnd() % 256;
        for (size_t i = 0; i < n; i++)
            g[i] = (char)(rnd() % 2 ? json[rnd() % strlen(json)] : (int)(rnd() & 0xff));
        struct efc_manifest_policy p = pol_default();
        assert_int_not_equal(verify(g, n, &p, NULL), EFC_MANIFEST_OK);
    }
    efc_free(json);
}

static void test_sign_rejects(void **state)
{
    (void)state;
    struct efc_manifest m = base;
    char *out = NULL;
    size_t len;

    m.model_id[0] = '\0';
    assert_int_equal(efc_manifest_sign(&m, priv_a, strlen(priv_a), &out, &len), EFC_EINVAL);
    m = base;
    m.policy[2] = '\n';
    assert_int_equal(efc_manifest_sign(&m, priv_a, strlen(priv_a), &out, &len), EFC_EINVAL);
    m = base;
    memset(m.hw_class, 'c', sizeof(m.hw_class)); /* no NUL inside */
    assert_int_equal(efc_manifest_sign(&m, priv_a, strlen(priv_a), &out, &len), EFC_EINVAL);
    m = base;
    m.expires = m.created;
    assert_int_equal(efc_manifest_sign(&m, priv_a, strlen(priv_a), &out, &len), EFC_EINVAL);
    m = base;
    m.created = -1;
    assert_int_equal(efc_manifest_sign(&m, priv_a, strlen(priv_a), &out, &len), EFC_EINVAL);
    m = base;
    assert_int_equal(efc_manifest_sign(&m, "nokey", 5, &out, &len), EFC_EINVAL);
    assert_null(out);
    /* encode needs a key id; sign fills it from the key */
    assert_int_equal(efc_manifest_encode(&base, &out, &len), EFC_EINVAL);
    assert_string_equal(efc_manifest_err_str(EFC_MANIFEST_ROLLBACK), "ROLLBACK");
    assert_string_equal(efc_manifest_err_str((enum efc_manifest_err)999), "UNKNOWN");
}

static void test_key_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/efc_test_keys_XXXXXX", kpath[128], ppath[128], id[17], id2[17];
    struct efc_manifest_keys *k;
    struct stat sb;
    void *key;
    size_t key_len;

    assert_non_null(mkdtemp(dir));
    assert_int_equal(efc_manifest_keygen_files(dir, id), EFC_OK);
    snprintf(kpath, sizeof(kpath), "%s/%s", dir, EFC_MANIFEST_KEY_FILE);
    snprintf(ppath, sizeof(ppath), "%s/%s", dir, EFC_MANIFEST_PUB_FILE);
    assert_int_equal(stat(kpath, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(efc_manifest_keygen_files(dir, id2), EFC_EEXIST);
    assert_int_equal(efc_manifest_keys_new(&k), EFC_OK);
    assert_int_equal(efc_manifest_keys_add_file(k, ppath, id2), EFC_OK);
    assert_string_equal(id, id2);
    assert_int_equal(efc_manifest_keys_add_file(k, kpath, NULL), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), kpath));
    /* sign with the file key, verify with the file public key */
    assert_int_equal(efc_fs_read_all(kpath, 65536, &key, &key_len), EFC_OK);
    char *json = NULL;
    size_t len;
    assert_int_equal(efc_manifest_sign(&base, key, key_len, &json, &len), EFC_OK);
    struct efc_manifest_policy p = pol_default();
    p.trusted = k;
    assert_int_equal(verify(json, len, &p, NULL), EFC_MANIFEST_OK);
    efc_free(json);
    efc_free(key);
    efc_manifest_keys_free(k);
    unlink(kpath);
    unlink(ppath);
    assert_int_equal(rmdir(dir), 0);
    assert_int_equal(efc_manifest_keygen_files("/nonexistent/efc", id), EFC_ENOTFOUND);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    char *json = sign(&base, priv_a);
    int ok = 0;
    for (uint64_t k = 1; k <= 12; k++) {
        struct efc_manifest_policy p = pol_default();
        struct efc_manifest m;
        enum efc_manifest_err why;
        efc_alloc_fail_at(k);
        enum efc_status st = efc_manifest_verify(json, strlen(json), &p, &m, &why);
        efc_alloc_fail_at(0);
        assert_true(st == EFC_OK || st == EFC_ENOMEM);
        ok += st == EFC_OK;
    }
    assert_true(ok >= 1); /* verify makes few allocations: the later k succeed */
    for (uint64_t k = 1; k <= 8; k++) {
        char *out = NULL;
        size_t len;
        efc_alloc_fail_at(k);
        enum efc_status st = efc_manifest_sign(&base, priv_a, strlen(priv_a), &out, &len);
        efc_alloc_fail_at(0);
        assert_true(st == EFC_OK || st == EFC_ENOMEM);
        efc_free(out);
    }
    efc_free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),          cmocka_unit_test(test_reencoding),
        cmocka_unit_test(test_signature_bit_flips), cmocka_unit_test(test_edit_each_field),
        cmocka_unit_test(test_keys_and_revocation), cmocka_unit_test(test_claims),
        cmocka_unit_test(test_artifact_matrix),     cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_sign_rejects),        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
