/* manifest.c — signed artifact manifests: canonical encoding, ECDSA P-256 keys, sign, verify
 * (docs/ota.md). */
#include "ota/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"

/* Private / public key PEM sizes: a P-256 key PEM is about 230 bytes, the public one about
 * 180; 1 KiB leaves room and is what mbedTLS's own programs/pkey/gen_key.c uses per line. */
#define KEY_PEM_MAX 1024
#define PUB_DER_MAX 256
#define SIG_HEX_MAX (2 * MBEDTLS_ECDSA_MAX_LEN)

static const char *const err_names[EFC_MANIFEST_ERR_COUNT] = {
    [EFC_MANIFEST_OK] = "OK",
    [EFC_MANIFEST_MALFORMED] = "MALFORMED",
    [EFC_MANIFEST_MISSING_FIELD] = "MISSING_FIELD",
    [EFC_MANIFEST_EXTRA_FIELD] = "EXTRA_FIELD",
    [EFC_MANIFEST_DUPLICATE_FIELD] = "DUPLICATE_FIELD",
    [EFC_MANIFEST_WRONG_TYPE] = "WRONG_TYPE",
    [EFC_MANIFEST_BAD_VALUE] = "BAD_VALUE",
    [EFC_MANIFEST_UNKNOWN_KEY] = "UNKNOWN_KEY",
    [EFC_MANIFEST_REVOKED_KEY] = "REVOKED_KEY",
    [EFC_MANIFEST_BAD_SIGNATURE] = "BAD_SIGNATURE",
    [EFC_MANIFEST_EXPIRED] = "EXPIRED",
    [EFC_MANIFEST_NOT_YET_VALID] = "NOT_YET_VALID",
    [EFC_MANIFEST_WRONG_CLASS] = "WRONG_CLASS",
    [EFC_MANIFEST_ROLLBACK] = "ROLLBACK",
    [EFC_MANIFEST_ARTIFACT_TRUNCATED] = "ARTIFACT_TRUNCATED",
    [EFC_MANIFEST_ARTIFACT_TRAILING] = "ARTIFACT_TRAILING",
    [EFC_MANIFEST_ARTIFACT_HASH] = "ARTIFACT_HASH",
};

const char *efc_manifest_err_str(enum efc_manifest_err e)
{
    if ((unsigned)e >= EFC_MANIFEST_ERR_COUNT)
        return "UNKNOWN";
    return err_names[e];
}

/* Record the reason and return the status with a detail "manifest: REASON: ...". */
static enum efc_status refuse(enum efc_manifest_err *why, enum efc_manifest_err e,
                              enum efc_status st, const char *what)
{
    if (why)
        *why = e;
    return efc_errf(st, "manifest: %s: %s", efc_manifest_err_str(e), what);
}

/* Prefix the current detail with a path (copied first: efc_errf writes the same buffer). */
static enum efc_status with_path(enum efc_status st, const char *path, const char *suffix)
{
    char d[256];
    snprintf(d, sizeof(d), "%s", efc_err_detail());
    return efc_errf(st, "%s: %s%s", path, d, suffix);
}

/* ---- keys -------------------------------------------------------------------------------- */

struct key_entry {
    char id[EFC_MANIFEST_KEY_ID_HEX + 1];
    mbedtls_pk_context pk;
};

struct efc_manifest_keys {
    struct key_entry **v; /* pointers: a pk context is never moved once parsed */
    size_t n, cap;
};

static void hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* lower case only: canonical text has one spelling */
}

/* Decode exactly n bytes from 2n lower-case hex digits; -1 on any other input. */
static int hex_decode(const char *s, size_t n, uint8_t *out)
{
    if (strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* P-256 only: a verifier that accepted any curve or RSA would let a weak key in by config. */
static int is_p256(const mbedtls_pk_context *pk)
{
    return mbedtls_pk_get_type(pk) == MBEDTLS_PK_ECKEY &&
           mbedtls_pk_ec(*pk)->grp.id == MBEDTLS_ECP_DP_SECP256R1;
}

static enum efc_status key_id_of(mbedtls_pk_context *pk, char id[EFC_MANIFEST_KEY_ID_HEX + 1])
{
    unsigned char der[PUB_DER_MAX];
    uint8_t d[EFC_SHA256_BYTES];
    /* mbedtls_pk_write_pubkey_der writes at the END of the buffer and returns the length */
    int n = mbedtls_pk_write_pubkey_der(pk, der, sizeof(der));
    if (n <= 0)
        return efc_errf(EFC_EINTERNAL, "manifest: cannot encode public key (mbedTLS -0x%04x)",
                        (unsigned)-n);
    efc_sha256(der + sizeof(der) - (size_t)n, (size_t)n, d);
    hex_encode(d, EFC_MANIFEST_KEY_ID_HEX / 2, id);
    return EFC_OK;
}

/* mbedTLS wants PEM NUL-terminated with the NUL counted in the length; DER as is. */
static enum efc_status parse_key(const void *buf, size_t len, int private_key,
                                 mbedtls_pk_context *pk)
{
    unsigned char *tmp;
    size_t n = len;
    int rc;

    if (!buf || len == 0 || len > 64 * 1024)
        return efc_errf(EFC_EINVAL, "manifest: key: empty or larger than 64 KiB");
    if (!(tmp = efc_malloc(len + 1)))
        return efc_errf(EFC_ENOMEM, "manifest: key: %zu bytes", len);
    memcpy(tmp, buf, len);
    tmp[len] = '\0';
    if (memmem(tmp, len, "-----BEGIN", 10))
        n = strnlen((const char *)tmp, len) + 1;
    mbedtls_pk_init(pk);
    rc = private_key ? mbedtls_pk_parse_key(pk, tmp, n, NULL, 0)
                     : mbedtls_pk_parse_public_key(pk, tmp, n);
    memset(tmp, 0, len + 1); /* a private key must not linger in freed memory */
    efc_free(tmp);
    if (rc != 0) {
        mbedtls_pk_free(pk);
        return efc_errf(EFC_EINVAL, "manifest: not a valid %s key (mbedTLS -0x%04x)",
                        private_key ? "private" : "public", (unsigned)-rc);
    }
    if (!is_p256(pk)) {
        mbedtls_pk_free(pk);
        return efc_errf(EFC_EINVAL, "manifest: key is not an EC P-256 key");
    }
    return EFC_OK;
}

enum efc_status efc_manifest_keys_new(struct efc_manifest_keys **out)
{
    if (!out)
        return efc_errf(EFC_EINVAL, "manifest: keys_new: NULL out");
    if (!(*out = efc_calloc(1, sizeof(**out))))
        return efc_errf(EFC_ENOMEM, "manifest: key set");
    return EFC_OK;
}

void efc_manifest_keys_free(struct efc_manifest_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        mbedtls_pk_free(&k->v[i]->pk);
        efc_free(k->v[i]);
    }
    efc_free(k->v);
    efc_free(k);
}

static const struct key_entry *keys_find(const struct efc_manifest_keys *k, const char *id)
{
    for (size_t i = 0; k && i < k->n; i++)
        if (strcmp(k->v[i]->id, id) == 0)
            return k->v[i];
    return NULL;
}

enum efc_status efc_manifest_keys_add(struct efc_manifest_keys *k, const void *pub, size_t len,
                                      char key_id[EFC_MANIFEST_KEY_ID_HEX + 1])
{
    struct key_entry *e;
    enum efc_status st;

    if (!k)
        return efc_errf(EFC_EINVAL, "manifest: keys_add: NULL key set");
    if (!(e = efc_calloc(1, sizeof(*e))))
        return efc_errf(EFC_ENOMEM, "manifest: key entry");
    if ((st = parse_key(pub, len, 0, &e->pk))) {
        efc_free(e);
        return st;
    }
    if ((st = key_id_of(&e->pk, e->id)))
        goto fail;
    if (key_id)
        memcpy(key_id, e->id, sizeof(e->id));
    if (keys_find(k, e->id)) {
        mbedtls_pk_free(&e->pk);
        efc_free(e);
        return EFC_OK;
    }
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 4;
        struct key_entry **v = efc_realloc(k->v, cap * sizeof(*v));
        if (!v) {
            st = efc_errf(EFC_ENOMEM, "manifest: key set of %zu", cap);
            goto fail;
        }
        k->v = v;
        k->cap = cap;
    }
    k->v[k->n++] = e;
    return EFC_OK;
fail:
    mbedtls_pk_free(&e->pk);
    efc_free(e);
    return st;
}

enum efc_status efc_manifest_keys_add_file(struct efc_manifest_keys *k, const char *path,
                                           char key_id[EFC_MANIFEST_KEY_ID_HEX + 1])
{
    void *buf;
    size_t len;
    enum efc_status st;

    if (!path)
        return efc_errf(EFC_EINVAL, "manifest: keys_add_file: NULL path");
    if ((st = efc_fs_read_all(path, 64 * 1024, &buf, &len)))
        return st;
    st = efc_manifest_keys_add(k, buf, len, key_id);
    efc_free(buf);
    if (st)
        return with_path(st, path, "");
    return EFC_OK;
}

/* A CTR-DRBG seeded from the platform entropy source (getrandom / /dev/urandom). */
struct rng {
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
};

static enum efc_status rng_init(struct rng *r)
{
    static const unsigned char pers[] = "efc-ota-manifest";
    int rc;
    mbedtls_entropy_init(&r->ent);
    mbedtls_ctr_drbg_init(&r->drbg);
    rc = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->ent, pers, sizeof(pers) - 1);
    if (rc != 0)
        return efc_errf(EFC_EINTERNAL, "manifest: cannot seed the DRBG (mbedTLS -0x%04x)",
                        (unsigned)-rc);
    return EFC_OK;
}

static void rng_free(struct rng *r)
{
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->ent);
}

enum efc_status efc_manifest_keygen(char **priv_pem, char **pub_pem,
                                    char key_id[EFC_MANIFEST_KEY_ID_HEX + 1])
{
    mbedtls_pk_context pk;
    struct rng r;
    enum efc_status st;
    char *priv = NULL, *pub = NULL;
    int rc;

    if (!priv_pem || !pub_pem || !key_id)
        return efc_errf(EFC_EINVAL, "manifest: keygen: NULL argument");
    *priv_pem = *pub_pem = NULL;
    mbedtls_pk_init(&pk);
    if ((st = rng_init(&r)))
        goto out;
    if ((rc = mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) ||
        (rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk),
                                  mbedtls_ctr_drbg_random, &r.drbg))) {
        st = efc_errf(EFC_EINTERNAL, "manifest: keygen failed (mbedTLS -0x%04x)", (unsigned)-rc);
        goto out;
    }
    priv = efc_calloc(1, KEY_PEM_MAX);
    pub = efc_calloc(1, KEY_PEM_MAX);
    if (!priv || !pub) {
        st = efc_errf(EFC_ENOMEM, "manifest: keygen PEM buffers");
        goto out;
    }
    if ((rc = mbedtls_pk_write_key_pem(&pk, (unsigned char *)priv, KEY_PEM_MAX)) ||
        (rc = mbedtls_pk_write_pubkey_pem(&pk, (unsigned char *)pub, KEY_PEM_MAX))) {
        st = efc_errf(EFC_EINTERNAL, "manifest: cannot write PEM (mbedTLS -0x%04x)", (unsigned)-rc);
        goto out;
    }
    if ((st = key_id_of(&pk, key_id)))
        goto out;
    *priv_pem = priv;
    *pub_pem = pub;
    priv = pub = NULL;
out:
    if (priv)
        memset(priv, 0, KEY_PEM_MAX);
    efc_free(priv);
    efc_free(pub);
    mbedtls_pk_free(&pk);
    rng_free(&r);
    return st;
}

/* Atomic write with mode 0600 from the first byte on (efc_fs_write_atomic creates 0644,
 * which would leave a private key readable by others for a moment). */
static enum efc_status write_private(const char *dir, const char *path, const char *buf, size_t len)
{
    char tmp[PATH_MAX];
    int fd, dfd;
    size_t off = 0;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp))
        return efc_errf(EFC_EINVAL, "%s: path too long", path);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
        return efc_errf(EFC_EIO, "%s: open: %s", tmp, strerror(errno));
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        off += (size_t)w;
    }
    if (fsync(fd) != 0)
        goto fail;
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return EFC_OK;
fail : {
    int e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = e;
    return efc_errf(e == ENOSPC ? EFC_ENOSPC : EFC_EIO, "%s: write: %s", path, strerror(e));
}
}

enum efc_status efc_manifest_keygen_files(const char *dir, char key_id[EFC_MANIFEST_KEY_ID_HEX + 1])
{
    char kpath[PATH_MAX], ppath[PATH_MAX];
    char *priv = NULL, *pub = NULL;
    struct stat sb;
    enum efc_status st;

    if (!dir || !key_id)
        return efc_errf(EFC_EINVAL, "manifest: keygen_files: NULL argument");
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return efc_errf(EFC_ENOTFOUND, "%s: not a directory", dir);
    if ((size_t)snprintf(kpath, sizeof(kpath), "%s/%s", dir, EFC_MANIFEST_KEY_FILE) >=
            sizeof(kpath) ||
        (size_t)snprintf(ppath, sizeof(ppath), "%s/%s", dir, EFC_MANIFEST_PUB_FILE) >=
            sizeof(ppath))
        return efc_errf(EFC_EINVAL, "%s: path too long", dir);
    if (stat(kpath, &sb) == 0)
        return efc_errf(EFC_EEXIST, "%s exists: refusing to overwrite a signing key", kpath);
    if ((st = efc_manifest_keygen(&priv, &pub, key_id)))
        return st;
    if (!(st = write_private(dir, kpath, priv, strlen(priv))))
        st = efc_fs_write_atomic(ppath, pub, strlen(pub));
    memset(priv, 0, strlen(priv));
    efc_free(priv);
    efc_free(pub);
    return st;
}

/* ---- canonical encoding ------------------------------------------------------------------ */

/* Fields the encoder can write with one spelling: 1..255 printable ASCII. */
static int str_ok(const char *s)
{
    size_t n = strnlen(s, EFC_MANIFEST_STR_MAX);
    if (n == 0 || n >= EFC_MANIFEST_STR_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

static int key_id_ok(const char *s)
{
    if (strnlen(s, EFC_MANIFEST_KEY_ID_HEX + 1) != EFC_MANIFEST_KEY_ID_HEX)
        return 0;
    for (size_t i = 0; i < EFC_MANIFEST_KEY_ID_HEX; i++)
        if (hex_val(s[i]) < 0)
            return 0;
    return 1;
}

struct sb {
    char *p;
    size_t n, cap;
    int oom;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = efc_realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_lit(struct sb *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* ,"key":"value" with only '"' and '\\' escaped (the value is printable ASCII). */
static void sb_str(struct sb *b, const char *key, const char *v)
{
    sb_lit(b, ",\"");
    sb_lit(b, key);
    sb_lit(b, "\":\"");
    for (const char *c = v; *c; c++) {
        if (*c == '"' || *c == '\\')
            sb_add(b, "\\", 1);
        sb_add(b, c, 1);
    }
    sb_lit(b, "\"");
}

/* 64-bit integers travel as decimal strings: cJSON (and JavaScript) hold numbers as doubles,
 * exact only up to 2^53 (the protobuf JSON mapping does the same for int64). */
static void sb_u64(struct sb *b, const char *key, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    sb_str(b, key, num);
}

static enum efc_status check_fields(const struct efc_manifest *m)
{
    if (!str_ok(m->model_id))
        return efc_errf(EFC_EINVAL, "manifest: model_id must be 1..255 printable ASCII");
    if (!str_ok(m->policy))
        return efc_errf(EFC_EINVAL, "manifest: policy must be 1..255 printable ASCII");
    if (!str_ok(m->hw_class))
        return efc_errf(EFC_EINVAL, "manifest: hw_class must be 1..255 printable ASCII");
    if (m->created < 0 || m->expires <= m->created)
        return efc_errf(EFC_EINVAL, "manifest: need 0 <= created < expires (%lld, %lld)",
                        (long long)m->created, (long long)m->expires);
    if (!key_id_ok(m->key_id))
        return efc_errf(EFC_EINVAL, "manifest: key_id must be 16 lower-case hex digits");
    return EFC_OK;
}

enum efc_status efc_manifest_encode(const struct efc_manifest *m, char **out, size_t *out_len)
{
    char hex[EFC_SHA256_HEX_BYTES];
    struct sb b = {0};
    enum efc_status st;

    if (!m || !out || !out_len)
        return efc_errf(EFC_EINVAL, "manifest: encode: NULL argument");
    if ((st = check_fields(m)))
        return st;
    efc_sha256_hex(m->artifact_sha256, hex);
    /* the key order below IS the canonical order (docs/ota.md); never reorder */
    sb_lit(&b, "{\"format\":1");
    sb_str(&b, "artifact_sha256", hex);
    sb_u64(&b, "artifact_bytes", m->artifact_bytes);
    sb_str(&b, "model_id", m->model_id);
    sb_str(&b, "policy", m->policy);
    sb_str(&b, "hw_class", m->hw_class);
    sb_u64(&b, "version", m->version);
    sb_u64(&b, "created", (uint64_t)m->created);
    sb_u64(&b, "expires", (uint64_t)m->expires);
    sb_str(&b, "key_id", m->key_id);
    sb_lit(&b, "}");
    if (b.oom) {
        efc_free(b.p);
        return efc_errf(EFC_ENOMEM, "manifest: encode");
    }
    *out = b.p;
    *out_len = b.n;
    return EFC_OK;
}

enum efc_status efc_manifest_sign(const struct efc_manifest *m, const void *priv, size_t len,
                                  char **json, size_t *json_len)
{
    struct efc_manifest c;
    mbedtls_pk_context pk;
    struct rng r;
    unsigned char sig[MBEDTLS_ECDSA_MAX_LEN];
    char sig_hex[SIG_HEX_MAX + 1];
    uint8_t d[EFC_SHA256_BYTES];
    size_t sig_len = 0, clen;
    char *canon = NULL;
    struct sb b = {0};
    enum efc_status st;
    int rc;

    if (!m || !priv || !json || !json_len)
        return efc_errf(EFC_EINVAL, "manifest: sign: NULL argument");
    if ((st = parse_key(priv, len, 1, &pk)))
        return st;
    c = *m;
    if ((st = key_id_of(&pk, c.key_id)) || (st = efc_manifest_encode(&c, &canon, &clen))) {
        mbedtls_pk_free(&pk);
        return st;
    }
    efc_sha256(canon, clen, d);
    if ((st = rng_init(&r)))
        goto out;
    if ((rc = mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA256, d, sizeof(d), sig, &sig_len,
                              mbedtls_ctr_drbg_random, &r.drbg)) ||
        sig_len > sizeof(sig)) {
        st = efc_errf(EFC_EINTERNAL, "manifest: sign failed (mbedTLS -0x%04x)", (unsigned)-rc);
        goto out;
    }
    hex_encode(sig, sig_len, sig_hex);
    /* signed form = canonical bytes with the signature appended as the last member */
    sb_add(&b, canon, clen - 1);
    sb_str(&b, "signature", sig_hex);
    sb_lit(&b, "}");
    if (b.oom) {
        efc_free(b.p);
        st = efc_errf(EFC_ENOMEM, "manifest: sign");
        goto out;
    }
    *json = b.p;
    *json_len = b.n;
out:
    rng_free(&r);
    mbedtls_pk_free(&pk);
    efc_free(canon);
    return st;
}

/* ---- verification ------------------------------------------------------------------------ */

enum field {
    F_FORMAT,
    F_SHA,
    F_BYTES,
    F_MODEL,
    F_POLICY,
    F_CLASS,
    F_VERSION,
    F_CREATED,
    F_EXPIRES,
    F_KEY_ID,
    F_SIG,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "format",  "artifact_sha256", "artifact_bytes", "model_id", "policy",    "hw_class",
    "version", "created",         "expires",        "key_id",   "signature",
};

/* Strict decimal: 1..20 digits, no sign, no leading zero, no overflow past max. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned dgt = (unsigned)(s[i] - '0');
        if (v > (max - dgt) / 10)
            return -1;
        v = v * 10 + dgt;
    }
    *out = v;
    return 0;
}

/* Schema step: every field exactly once, with its type and a valid value; nothing else. */
static enum efc_status parse_fields(const cJSON *root, struct efc_manifest *m, uint8_t *sig,
                                    size_t *sig_len, enum efc_manifest_err *why)
{
    const cJSON *seen[F_COUNT] = {0};
    char what[192];
    uint64_t u;

    for (const cJSON *c = root->child; c; c = c->next) {
        int f;
        for (f = 0; f < F_COUNT; f++)
            if (c->string && strcmp(c->string, field_names[f]) == 0)
                break;
        if (f == F_COUNT) {
            snprintf(what, sizeof(what), "unknown field \"%.64s\"", c->string ? c->string : "");
            return refuse(why, EFC_MANIFEST_EXTRA_FIELD, EFC_EPROTO, what);
        }
        if (seen[f]) {
            snprintf(what, sizeof(what), "field \"%s\" appears twice", field_names[f]);
            return refuse(why, EFC_MANIFEST_DUPLICATE_FIELD, EFC_EPROTO, what);
        }
        seen[f] = c;
        if (f == F_FORMAT ? !cJSON_IsNumber(c) : !cJSON_IsString(c)) {
            snprintf(what, sizeof(what), "field \"%s\" must be a %s", field_names[f],
                     f == F_FORMAT ? "number" : "string");
            return refuse(why, EFC_MANIFEST_WRONG_TYPE, EFC_EPROTO, what);
        }
    }
    for (int f = 0; f < F_COUNT; f++) {
        if (!seen[f]) {
            snprintf(what, sizeof(what), "field \"%s\" missing", field_names[f]);
            return refuse(why, EFC_MANIFEST_MISSING_FIELD, EFC_EPROTO, what);
        }
    }
    memset(m, 0, sizeof(*m));
    for (int f = 0; f < F_COUNT; f++) {
        const char *s = cJSON_IsString(seen[f]) ? seen[f]->valuestring : "";
        int bad = 0;
        switch ((enum field)f) {
        case F_FORMAT:
            bad = seen[f]->valuedouble != (double)EFC_MANIFEST_FORMAT;
            break;
        case F_SHA:
            bad = hex_decode(s, EFC_SHA256_BYTES, m->artifact_sha256) != 0;
            break;
        case F_BYTES:
            bad = parse_u64(s, UINT64_MAX, &m->artifact_bytes) != 0;
            break;
        case F_MODEL:
        case F_POLICY:
        case F_CLASS: {
            char *dst = f == F_MODEL ? m->model_id : f == F_POLICY ? m->policy : m->hw_class;
            bad = !str_ok(s);
            if (!bad)
                snprintf(dst, EFC_MANIFEST_STR_MAX, "%s", s);
            break;
        }
        case F_VERSION:
            bad = parse_u64(s, UINT64_MAX, &m->version) != 0;
            break;
        case F_CREATED:
        case F_EXPIRES:
            bad = parse_u64(s, INT64_MAX, &u) != 0;
            if (!bad)
                *(f == F_CREATED ? &m->created : &m->expires) = (int64_t)u;
            break;
        case F_KEY_ID:
            bad = !key_id_ok(s);
            if (!bad)
                snprintf(m->key_id, sizeof(m->key_id), "%s", s);
            break;
        case F_SIG: {
            size_t n = strlen(s);
            bad = n < 2 || n > SIG_HEX_MAX || n % 2 || hex_decode(s, n / 2, sig) != 0;
            if (!bad)
                *sig_len = n / 2;
            break;
        }
        case F_COUNT:
            break;
        }
        if (bad) {
            snprintf(what, sizeof(what), "field \"%s\" has an invalid value", field_names[f]);
            return refuse(why, EFC_MANIFEST_BAD_VALUE, EFC_EPROTO, what);
        }
    }
    if (m->expires <= m->created)
        return refuse(why, EFC_MANIFEST_BAD_VALUE, EFC_EPROTO, "expires is not after created");
    return EFC_OK;
}

enum efc_status efc_manifest_verify(const char *json, size_t len,
                                    const struct efc_manifest_policy *pol, struct efc_manifest *out,
                                    enum efc_manifest_err *why)
{
    struct efc_manifest m;
    uint8_t sig[MBEDTLS_ECDSA_MAX_LEN], d[EFC_SHA256_BYTES];
    size_t sig_len = 0, clen;
    const struct key_entry *key;
    char *canon = NULL;
    const char *end = NULL;
    char what[192];
    cJSON *root;
    enum efc_status st;
    int64_t skew, latest;
    int rc;

    if (why)
        *why = EFC_MANIFEST_MALFORMED;
    if (!json || !pol || !out)
        return efc_errf(EFC_EINVAL, "manifest: verify: NULL argument");
    if (len == 0 || len > EFC_MANIFEST_MAX_BYTES) {
        snprintf(what, sizeof(what), "%zu bytes (limit %u)", len, EFC_MANIFEST_MAX_BYTES);
        return refuse(why, EFC_MANIFEST_MALFORMED, EFC_EPROTO, what);
    }
    /* A NUL byte, or a "\u0000" escape (cJSON decodes it into a NUL that silently cuts the
     * C string short), would let the text others read differ from the fields verified. */
    if (memchr(json, '\0', len))
        return refuse(why, EFC_MANIFEST_MALFORMED, EFC_EPROTO, "NUL byte in the manifest");
    for (size_t i = 0; i + 5 < len; i++)
        if (json[i] == '\\') {
            if (json[i + 1] == 'u' && memcmp(json + i + 2, "0000", 4) == 0)
                return refuse(why, EFC_MANIFEST_BAD_VALUE, EFC_EPROTO,
                              "\\u0000 escape in a string");
            i++; /* the escaped character */
        }
    /* cJSON's require_null_terminated wants the NUL inside len; check the tail ourselves */
    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root)
        return refuse(why, EFC_MANIFEST_MALFORMED, EFC_EPROTO, "not valid JSON");
    while (end < json + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end != json + len || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return refuse(why, EFC_MANIFEST_MALFORMED, EFC_EPROTO,
                      end != json + len ? "text after the JSON object" : "not a JSON object");
    }
    st = parse_fields(root, &m, sig, &sig_len, why);
    cJSON_Delete(root);
    if (st)
        return st;

    /* key: a revoked id wins even if the key is still in the trusted set */
    for (size_t i = 0; i < pol->n_revoked; i++) {
        if (pol->revoked && pol->revoked[i] && strcasecmp(pol->revoked[i], m.key_id) == 0) {
            snprintf(what, sizeof(what), "key %s is revoked", m.key_id);
            return refuse(why, EFC_MANIFEST_REVOKED_KEY, EFC_ESIG, what);
        }
    }
    if (!(key = keys_find(pol->trusted, m.key_id))) {
        snprintf(what, sizeof(what), "key %s is not trusted", m.key_id);
        return refuse(why, EFC_MANIFEST_UNKNOWN_KEY, EFC_ESIG, what);
    }

    /* signature over OUR re-encoding of the parsed fields, never over the received text */
    if ((st = efc_manifest_encode(&m, &canon, &clen)))
        return st;
    efc_sha256(canon, clen, d);
    efc_free(canon);
    rc = mbedtls_pk_verify((mbedtls_pk_context *)&key->pk, MBEDTLS_MD_SHA256, d, sizeof(d), sig,
                           sig_len);
    if (rc != 0) {
        snprintf(what, sizeof(what), "signature does not verify with key %s (mbedTLS -0x%04x)",
                 m.key_id, (unsigned)-rc);
        return refuse(why, EFC_MANIFEST_BAD_SIGNATURE, EFC_ESIG, what);
    }

    /* authentic from here on: now the claims */
    if (pol->now >= m.expires) {
        snprintf(what, sizeof(what), "expired at %lld, now %lld", (long long)m.expires,
                 (long long)pol->now);
        return refuse(why, EFC_MANIFEST_EXPIRED, EFC_EVERSION, what);
    }
    skew = pol->skew_s < 0 ? EFC_MANIFEST_SKEW_DEFAULT_S : pol->skew_s;
    latest = pol->now > INT64_MAX - skew ? INT64_MAX : pol->now + skew;
    if (m.created > latest) {
        snprintf(what, sizeof(what), "created at %lld, more than %llds after now %lld",
                 (long long)m.created, (long long)skew, (long long)pol->now);
        return refuse(why, EFC_MANIFEST_NOT_YET_VALID, EFC_EVERSION, what);
    }
    if (pol->hw_class && strcmp(pol->hw_class, m.hw_class) != 0) {
        snprintf(what, sizeof(what), "for class \"%.64s\", this device is \"%.64s\"", m.hw_class,
                 pol->hw_class);
        return refuse(why, EFC_MANIFEST_WRONG_CLASS, EFC_EUNSUPPORTED, what);
    }
    if (m.version < pol->min_version) {
        snprintf(what, sizeof(what), "version %llu is older than the minimum %llu",
                 (unsigned long long)m.version, (unsigned long long)pol->min_version);
        return refuse(why, EFC_MANIFEST_ROLLBACK, EFC_EVERSION, what);
    }
    *out = m;
    if (why)
        *why = EFC_MANIFEST_OK;
    return EFC_OK;
}

static enum efc_status size_refusal(const struct efc_manifest *m, uint64_t have,
                                    enum efc_manifest_err *why)
{
    char what[128];
    snprintf(what, sizeof(what), "artifact has %s bytes (%llu), manifest says %llu",
             have < m->artifact_bytes ? "too few" : "too many", (unsigned long long)have,
             (unsigned long long)m->artifact_bytes);
    return refuse(why,
                  have < m->artifact_bytes ? EFC_MANIFEST_ARTIFACT_TRUNCATED
                                           : EFC_MANIFEST_ARTIFACT_TRAILING,
                  EFC_EHASH, what);
}

static enum efc_status digest_refusal(const struct efc_manifest *m,
                                      const uint8_t d[EFC_SHA256_BYTES], enum efc_manifest_err *why)
{
    char what[192], want[EFC_SHA256_HEX_BYTES], got[EFC_SHA256_HEX_BYTES];
    if (memcmp(d, m->artifact_sha256, EFC_SHA256_BYTES) == 0) {
        if (why)
            *why = EFC_MANIFEST_OK;
        return EFC_OK;
    }
    efc_sha256_hex(m->artifact_sha256, want);
    efc_sha256_hex(d, got);
    snprintf(what, sizeof(what), "artifact sha256 %s, manifest says %s", got, want);
    return refuse(why, EFC_MANIFEST_ARTIFACT_HASH, EFC_EHASH, what);
}

enum efc_status efc_manifest_check_artifact(const struct efc_manifest *m, const void *art,
                                            size_t len, enum efc_manifest_err *why)
{
    uint8_t d[EFC_SHA256_BYTES];
    if (!m || (!art && len))
        return efc_errf(EFC_EINVAL, "manifest: check_artifact: NULL argument");
    if ((uint64_t)len != m->artifact_bytes)
        return size_refusal(m, len, why);
    efc_sha256(art, len, d);
    return digest_refusal(m, d, why);
}

enum efc_status efc_manifest_check_file(const struct efc_manifest *m, const char *path,
                                        enum efc_manifest_err *why)
{
    static const size_t block = 64 * 1024;
    struct efc_sha256 h;
    uint8_t d[EFC_SHA256_BYTES];
    struct stat sb;
    uint64_t left;
    char *buf;
    enum efc_status st = EFC_OK;
    int fd;

    if (!m || !path)
        return efc_errf(EFC_EINVAL, "manifest: check_file: NULL argument");
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO, "%s: %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return efc_errf(EFC_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size != m->artifact_bytes) {
        close(fd);
        st = size_refusal(m, (uint64_t)sb.st_size, why);
        return with_path(st, path, "");
    }
    if (!(buf = efc_malloc(block))) {
        close(fd);
        return efc_errf(EFC_ENOMEM, "%s: read buffer", path);
    }
    efc_sha256_init(&h);
    /* never read past the announced size, even if the file grows meanwhile */
    for (left = m->artifact_bytes; left > 0;) {
        ssize_t r = read(fd, buf, left < block ? (size_t)left : block);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = efc_errf(EFC_EIO, "%s: read: %s", path, strerror(errno));
            break;
        }
        if (r == 0) {
            st = size_refusal(m, m->artifact_bytes - left, why);
            st = with_path(st, path, " (shrank while reading)");
            break;
        }
        efc_sha256_update(&h, buf, (size_t)r);
        left -= (uint64_t)r;
    }
    efc_free(buf);
    close(fd);
    if (st)
        return st;
    efc_sha256_final(&h, d);
    if ((st = digest_refusal(m, d, why)))
        return with_path(st, path, "");
    return EFC_OK;
}

enum efc_status efc_manifest_digest_file(const char *path, uint8_t sha[EFC_SHA256_BYTES],
                                         uint64_t *bytes)
{
    static const size_t block = 64 * 1024;
    struct efc_sha256 h;
    uint64_t total = 0;
    char *buf;
    int fd;

    if (!path || !sha || !bytes)
        return efc_errf(EFC_EINVAL, "manifest: digest_file: NULL argument");
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO, "%s: %s", path, strerror(errno));
    if (!(buf = efc_malloc(block))) {
        close(fd);
        return efc_errf(EFC_ENOMEM, "%s: read buffer", path);
    }
    efc_sha256_init(&h);
    for (;;) {
        ssize_t r = read(fd, buf, block);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            efc_free(buf);
            close(fd);
            return efc_errf(EFC_EIO, "%s: read: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        efc_sha256_update(&h, buf, (size_t)r);
        total += (uint64_t)r;
    }
    efc_free(buf);
    close(fd);
    efc_sha256_final(&h, sha);
    *bytes = total;
    return EFC_OK;
}
