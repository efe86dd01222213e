/* efc keygen / sign / verify — signed artifact manifests (ota/manifest.h, docs/ota.md). */
#include <getopt.h>
#include <errno.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_parse.h"
#include "ota/manifest.h"

/* A year: long enough for a release to reach every device, short enough that a leaked old
 * manifest stops being installable (TUF's freeze-attack defence needs an expiry at all). */
#define DEFAULT_EXPIRES_S (365 * 24 * 3600)
#define MAX_LIST 32 /* keys in --trust, ids in --revoked */

static void keygen_help(void)
{
    printf("usage: efc keygen -o DIR\n\n"
           "  -o, --output DIR  writes DIR/%s (private, 0600) and DIR/%s; prints the key id\n",
           EFC_MANIFEST_KEY_FILE, EFC_MANIFEST_PUB_FILE);
}

static void sign_help(void)
{
    printf("usage: efc sign ARTIFACT --key K --model-id ID --policy P --class C --version N\n"
           "                [--expires-in S] -o ARTIFACT.manifest.json\n\n"
           "  --key K          private key PEM (efc keygen)\n"
           "  --model-id ID    model id (1..255 printable ASCII)\n"
           "  --policy P       compression policy of the artifact\n"
           "  --class C        target hardware class\n"
           "  --version N      release version (uint64, strictly increasing)\n"
           "  --expires-in S   validity in seconds from now (default %d)\n"
           "  -o, --output F   the signed manifest (JSON)\n",
           DEFAULT_EXPIRES_S);
}

static void verify_help(void)
{
    printf("usage: efc verify ARTIFACT --manifest M --trust PUB[,PUB..] [--revoked ID,..]\n"
           "                  [--class C] [--min-version N]\n\n"
           "  --manifest M     the signed manifest\n"
           "  --trust PUB,..   trusted public key PEM files\n"
           "  --revoked ID,..  key ids to refuse even when trusted\n"
           "  --class C        refuse a manifest for another hardware class\n"
           "  --min-version N  refuse older versions (anti-rollback; default 0)\n"
           "Exit 0 and a summary, or 1 and the reason.\n");
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    char id[EFC_MANIFEST_KEY_ID_HEX + 1];
    const char *dir = NULL;
    enum efc_status st;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'o')
            dir = optarg;
        else if (c == 'h') {
            keygen_help();
            return 0;
        } else
            return cli_usage_error("keygen", "bad option");
    }
    if (optind != argc || !dir)
        return cli_usage_error("keygen", "need -o DIR and nothing else");
    efc_err_clear();
    /* A new key directory is private from the start (the key file is 0600 anyway). */
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "efc keygen: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if ((st = efc_manifest_keygen_files(dir, id)))
        return cli_fail("keygen", st);
    printf("%s/%s, %s/%s: key id %s\n", dir, EFC_MANIFEST_KEY_FILE, dir, EFC_MANIFEST_PUB_FILE, id);
    return 0;
}

/* Copy a required string option into a manifest field (length checked by the encoder too). */
static int set_field(char *dst, const char *v, const char *what)
{
    if ((size_t)snprintf(dst, EFC_MANIFEST_STR_MAX, "%s", v) >= EFC_MANIFEST_STR_MAX)
        return cli_usage_error("sign", "%s longer than %d bytes", what, EFC_MANIFEST_STR_MAX - 1);
    return 0;
}

int cmd_sign(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, 0, 'k'},
                                         {"model-id", required_argument, 0, 'm'},
                                         {"policy", required_argument, 0, 'p'},
                                         {"class", required_argument, 0, 'c'},
                                         {"version", required_argument, 0, 'v'},
                                         {"expires-in", required_argument, 0, 'e'},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct efc_manifest m;
    const char *keyp = NULL, *outp = NULL, *model = NULL, *policy = NULL, *cls = NULL;
    int64_t version = -1, expires_in = DEFAULT_EXPIRES_S;
    void *key = NULL;
    size_t key_len, json_len;
    char *json = NULL;
    enum efc_status st;
    int c, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'k':
            keyp = optarg;
            break;
        case 'm':
            model = optarg;
            break;
        case 'p':
            policy = optarg;
            break;
        case 'c':
            cls = optarg;
            break;
        case 'o':
            outp = optarg;
            break;
        case 'v':
            /* efc_parse_i64 caps at INT64_MAX: versions above 2^63 are not needed by a CLI */
            if (efc_parse_i64(optarg, 0, INT64_MAX, "--version", &version))
                return cli_usage_error("sign", "%s", efc_err_detail());
            break;
        case 'e':
            if (efc_parse_i64(optarg, 1, 100LL * 365 * 24 * 3600, "--expires-in", &expires_in))
                return cli_usage_error("sign", "%s", efc_err_detail());
            break;
        case 'h':
            sign_help();
            return 0;
        default:
            return cli_usage_error("sign", "bad option");
        }
    }
    if (optind + 1 != argc || !keyp || !outp || !model || !policy || !cls || version < 0)
        return cli_usage_error("sign", "need ARTIFACT, --key, --model-id, --policy, --class, "
                                       "--version and -o");
    memset(&m, 0, sizeof(m));
    if ((rc = set_field(m.model_id, model, "--model-id")) ||
        (rc = set_field(m.policy, policy, "--policy")) ||
        (rc = set_field(m.hw_class, cls, "--class")))
        return rc;
    m.version = (uint64_t)version;
    m.created = (int64_t)time(NULL);
    m.expires = m.created + expires_in;
    efc_err_clear();
    if ((st = efc_manifest_digest_file(argv[optind], m.artifact_sha256, &m.artifact_bytes)))
        return cli_fail("sign", st);
    if ((st = efc_fs_read_all(keyp, 64 * 1024, &key, &key_len)))
        return cli_fail("sign", st);
    st = efc_manifest_sign(&m, key, key_len, &json, &json_len);
    memset(key, 0, key_len);
    efc_free(key);
    if (st)
        return cli_fail("sign", st);
    st = efc_fs_write_atomic(outp, json, json_len);
    efc_free(json);
    if (st)
        return cli_fail("sign", st);
    printf("%s: %s v%llu for class %s, %llu bytes, expires %lld\n", outp, m.model_id,
           (unsigned long long)m.version, m.hw_class, (unsigned long long)m.artifact_bytes,
           (long long)m.expires);
    return 0;
}

/* Split a comma list in place into at most MAX_LIST items; -1 if too many or empty items. */
static int split_list(char *s, char **items, size_t *n)
{
    *n = 0;
    for (char *p = s;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (!*p || *n == MAX_LIST)
            return -1;
        items[(*n)++] = p;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"manifest", required_argument, 0, 'm'},
                                         {"trust", required_argument, 0, 't'},
                                         {"revoked", required_argument, 0, 'r'},
                                         {"class", required_argument, 0, 'c'},
                                         {"min-version", required_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct efc_manifest_policy pol = {.skew_s = -1};
    struct efc_manifest_keys *keys = NULL;
    struct efc_manifest m;
    enum efc_manifest_err why = EFC_MANIFEST_OK;
    char *trust_items[MAX_LIST], *rev_items[MAX_LIST];
    size_t n_trust = 0, n_rev = 0, json_len;
    char *trust = NULL, *revoked = NULL;
    const char *manp = NULL;
    int64_t min_version = 0;
    void *json = NULL;
    enum efc_status st;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            manp = optarg;
            break;
        case 't':
            trust = optarg;
            break;
        case 'r':
            revoked = optarg;
            break;
        case 'c':
            pol.hw_class = optarg;
            break;
        case 'v':
            if (efc_parse_i64(optarg, 0, INT64_MAX, "--min-version", &min_version))
                return cli_usage_error("verify", "%s", efc_err_detail());
            break;
        case 'h':
            verify_help();
            return 0;
        default:
            return cli_usage_error("verify", "bad option");
        }
    }
    if (optind + 1 != argc || !manp || !trust)
        return cli_usage_error("verify", "need ARTIFACT, --manifest and --trust");
    if (split_list(trust, trust_items, &n_trust))
        return cli_usage_error("verify", "--trust: 1..%d comma-separated files", MAX_LIST);
    if (revoked && split_list(revoked, rev_items, &n_rev))
        return cli_usage_error("verify", "--revoked: 1..%d comma-separated key ids", MAX_LIST);
    efc_err_clear();
    if ((st = efc_manifest_keys_new(&keys)))
        return cli_fail("verify", st);
    for (size_t i = 0; i < n_trust; i++) {
        if ((st = efc_manifest_keys_add_file(keys, trust_items[i], NULL)))
            goto out;
    }
    pol.trusted = keys;
    pol.revoked = (const char *const *)rev_items;
    pol.n_revoked = n_rev;
    pol.now = (int64_t)time(NULL);
    pol.min_version = (uint64_t)min_version;
    if ((st = efc_fs_read_all(manp, EFC_MANIFEST_MAX_BYTES, &json, &json_len)))
        goto out;
    /* manifest first, artifact second: no artifact byte is read for an unauthentic manifest */
    if ((st = efc_manifest_verify(json, json_len, &pol, &m, &why)) ||
        (st = efc_manifest_check_file(&m, argv[optind], &why)))
        goto out;
    printf("%s: OK: %s v%llu policy %s class %s, %llu bytes, key %s, expires %lld\n", argv[optind],
           m.model_id, (unsigned long long)m.version, m.policy, m.hw_class,
           (unsigned long long)m.artifact_bytes, m.key_id, (long long)m.expires);
out:
    efc_free(json);
    efc_manifest_keys_free(keys);
    return st ? cli_fail("verify", st) : 0;
}
