/* test_slots.c — the agent's A/B model slots (ota/slots.h, docs/ota.md "A/B slots on the agent";
 * RELIABILITY.md C3, D1, D4, D5, E2).
 *
 * Every install uses real pieces: a tiny .efm model (Dense 16 -> 10, weights derived from the
 * version's variant) saved with efc_efm_save, a random artifact of an odd size, and a manifest
 * signed with a fresh P-256 key. "An install is good" (check_install) means: its manifest.json
 * verifies (signature, class, expiry), the artifact passes efc_manifest_check_file, the model
 * file has the digest recorded at stage time, loads with efc_efm_load, and reproduces the
 * reference logits of its variant on 10 samples bit for bit (efc_exec_run).
 * - API: happy path, revert, rollback, trial attempts exhausted (also across reopen), the
 *   anti-rollback minimum never decreasing (also across reopen and revert), refusals (each
 *   status), a second handle (EBUSY), corrupt slot files at open (fallback + flag).
 * - Kill at every I/O operation k = 1..N of one install (stage, switch, trial attempt, commit)
 *   in a forked child (N counted in a dry run); the parent reopens after each kill and checks:
 *   open succeeds, exactly one of old / new is active and good, no corrupt slot, no temp files,
 *   the unused slot empty, min_version never below the old one; the outcome moves monotonically
 *   old -> new on trial (0, then 1 attempts) -> new committed; a trial left by a kill is finished
 *   by the parent (commit or rollback, alternately).
 * - >= 200 random-time kills of a child that installs, commits, rolls back and reverts in a
 *   loop on the same state dir; same checks after each kill, min_version monotone.
 * - EIO and ENOSPC at every operation k of an install: the failing call returns that status,
 *   errno is intact, no temp file, the old install is still active (or the trial still on, if
 *   commit failed), a failed stage leaves its slot empty; memory and disk agree (reopen).
 *   Also EIO / ENOSPC at every operation of efc_slots_open's recovery.
 * - State file missing (fresh), garbage, truncated at several points, bit-flipped, of another
 *   format, or with a valid checksum but impossible contents: a status, never a crash, and the
 *   file left as it was.
 * Seeds are printed. Files are a few KB; the whole test takes a few seconds.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_log.h"
#include "common/efc_sha256.h"
#include "model/efm.h"
#include "model/exec.h"
#include "model/model.h"
#include "ota/manifest.h"
#include "ota/slots.h"

#define NVAR 8 /* model / artifact variants; version v uses variant v % NVAR */
#define IN_N 16
#define OUT_N 10
#define N_SAMPLES 10
#define N_RANDOM_KILLS 200

static char root[512];     /* mkdtemp */
static char base_dir[600]; /* baseline state dir: v1 then v2 committed (active b, previous a) */
static char work[600];     /* per-case copy of the baseline */
static char *priv_pem;
static struct efc_manifest_keys *trust;
static char model_src[NVAR][700], art_src[NVAR][700];
static char model_hex[NVAR][EFC_SHA256_HEX_BYTES];
static float ref_out[NVAR][N_SAMPLES * OUT_N];
static float samples[N_SAMPLES * IN_N];
static int64_t now_s;

static uint32_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static struct efc_model *make_model(int var)
{
    struct efc_model *m = NULL;
    struct efc_node_attrs a;
    int32_t x, w, b, y, dims[2], in[3];
    float *p;

    if (efc_model_new(&m))
        return NULL;
    snprintf(m->name, sizeof(m->name), "slots-tiny-%d", var);
    snprintf(m->arch, sizeof(m->arch), "dense");
    dims[0] = IN_N;
    efc_model_add_tensor(m, "input", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_INPUT, &x);
    dims[0] = OUT_N, dims[1] = IN_N;
    efc_model_add_tensor(m, "fc.w", EFC_DTYPE_F32, 2, dims, EFC_TENSOR_PARAM, &w);
    dims[0] = OUT_N;
    efc_model_add_tensor(m, "fc.b", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_PARAM, &b);
    efc_model_add_tensor(m, "logits", EFC_DTYPE_F32, 1, dims, EFC_TENSOR_OUTPUT, &y);
    p = m->tensors[w].data;
    for (int i = 0; i < OUT_N * IN_N; i++)
        p[i] = (float)((i * 7 + var * 13) % 23 - 11) / 16.0f;
    p = m->tensors[b].data;
    for (int i = 0; i < OUT_N; i++)
        p[i] = (float)(var - i) / 8.0f;
    memset(&a, 0, sizeof(a));
    in[0] = x, in[1] = w, in[2] = b;
    if (efc_model_add_node(m, EFC_OP_DENSE, "fc", in, 3, y, &a, NULL) || efc_model_check(m)) {
        efc_model_free(m);
        return NULL;
    }
    return m;
}

/* Load path and run the samples: 0 and out filled, or -1. */
static int run_file(const char *path, float *out)
{
    struct efc_model *m = NULL;
    struct efc_exec *e = NULL;
    struct efc_exec_opts o = {.max_batch = N_SAMPLES};
    const float *got;
    int rc = -1;

    if (efc_efm_load(path, &m) == EFC_OK && efc_exec_new(m, &o, &e) == EFC_OK &&
        efc_exec_output_size(e) == OUT_N && efc_exec_run(e, samples, N_SAMPLES, &got) == EFC_OK) {
        memcpy(out, got, sizeof(float) * N_SAMPLES * OUT_N);
        rc = 0;
    }
    efc_exec_free(e);
    efc_model_free(m);
    return rc;
}

static int hash_path(const char *path, char hex[EFC_SHA256_HEX_BYTES])
{
    void *buf = NULL;
    size_t len = 0;
    uint8_t d[EFC_SHA256_BYTES];
    if (efc_fs_read_all(path, 1 << 24, &buf, &len))
        return -1;
    efc_sha256(buf, len, d);
    efc_sha256_hex(d, hex);
    efc_free(buf);
    return 0;
}

/* A signed manifest for version v (variant v % NVAR). */
static int make_manifest(uint64_t v, struct efc_manifest *m, char **json, size_t *len)
{
    int var = (int)(v % NVAR);
    memset(m, 0, sizeof(*m));
    if (efc_manifest_digest_file(art_src[var], m->artifact_sha256, &m->artifact_bytes))
        return -1;
    snprintf(m->model_id, sizeof(m->model_id), "slots-tiny");
    snprintf(m->policy, sizeof(m->policy), "int8 \"v%llu\" \\", (unsigned long long)v);
    snprintf(m->hw_class, sizeof(m->hw_class), "x86-test");
    m->version = v;
    m->created = now_s - 60;
    m->expires = now_s + 86400;
    return efc_manifest_sign(m, priv_pem, strlen(priv_pem), json, len) ? -1 : 0;
}

/* Is the install in slot info i good? 0 if so, else a reason (no cmocka: used in checks). */
static const char *bad_install(const struct efc_slot_info *i)
{
    struct efc_manifest_policy pol = {
        .trusted = trust, .now = now_s, .skew_s = -1, .hw_class = "x86-test"};
    struct efc_manifest m;
    void *json = NULL;
    size_t len = 0;
    char hex[EFC_SHA256_HEX_BYTES];
    float out[N_SAMPLES * OUT_N];
    int var = (int)(i->version % NVAR);
    enum efc_status st;

    if (!i->valid)
        return "not valid";
    if (efc_fs_read_all(i->manifest_path, 8192, &json, &len))
        return "manifest unreadable";
    st = efc_manifest_verify(json, len, &pol, &m, NULL);
    efc_free(json);
    if (st)
        return "manifest does not verify";
    if (m.version != i->version || strcmp(m.policy, i->policy))
        return "manifest is not the recorded version / policy";
    if (efc_manifest_check_file(&m, i->artifact_path, NULL))
        return "artifact does not match its manifest";
    if (hash_path(i->model_path, hex) || strcmp(hex, i->model_sha256) ||
        strcmp(hex, model_hex[var]))
        return "model digest";
    if (run_file(i->model_path, out))
        return "model does not load / run";
    if (memcmp(out, ref_out[var], sizeof(out)))
        return "model output differs from its reference";
    return NULL;
}

static void assert_good(const struct efc_slot_info *i)
{
    const char *why = bad_install(i);
    if (why)
        fail_msg("slot %c version %llu: %s", i->name ? i->name : '?',
                 (unsigned long long)i->version, why);
}

/* Files in dir whose name contains ".tmp.". */
static int temps_in(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL)
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static int files_in(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static int temps_total(const char *sd)
{
    char p[800];
    int n = 0;
    snprintf(p, sizeof(p), "%s/ota", sd);
    n += temps_in(p);
    snprintf(p, sizeof(p), "%s/ota/a", sd);
    n += temps_in(p);
    snprintf(p, sizeof(p), "%s/ota/b", sd);
    n += temps_in(p);
    return n;
}

static int slot_files(const char *sd, char c)
{
    char p[800];
    snprintf(p, sizeof(p), "%s/ota/%c", sd, c);
    return files_in(p);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_tree(const char *p)
{
    nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Plain recursive copy (no fsync: the test's own setup, not under test). */
static int copy_tree(const char *from, const char *to)
{
    DIR *d = opendir(from);
    struct dirent *e;
    struct stat sb;
    char a[1024], b[1024];
    int rc = 0;

    if (!d || mkdir(to, 0700) != 0) {
        if (d)
            closedir(d);
        return -1;
    }
    while (!rc && (e = readdir(d)) != NULL) {
        void *buf = NULL;
        size_t len = 0;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(a, sizeof(a), "%s/%s", from, e->d_name);
        snprintf(b, sizeof(b), "%s/%s", to, e->d_name);
        if (stat(a, &sb) != 0)
            rc = -1;
        else if (S_ISDIR(sb.st_mode))
            rc = copy_tree(a, b);
        else if (efc_fs_read_all(a, 1 << 24, &buf, &len) == EFC_OK) {
            FILE *f = fopen(b, "wb");
            rc = !f || fwrite(buf, 1, len, f) != len;
            if (f && fclose(f))
                rc = -1;
        } else
            rc = -1;
        efc_free(buf);
    }
    closedir(d);
    return rc;
}

static void fresh_work(void)
{
    rm_tree(work);
    assert_int_equal(copy_tree(base_dir, work), 0);
}

/* ---- install steps ------------------------------------------------------------------------ */

enum step { STEP_STAGE, STEP_SWITCH, STEP_ATTEMPT, STEP_COMMIT, STEP_DONE };

/* stage, switch, trial attempt, commit of version v. Returns the step that failed (STEP_DONE if
 * none) and its status in *st. */
static enum step install(struct efc_slots *s, uint64_t v, enum efc_status *st)
{
    struct efc_manifest m;
    char *json = NULL, tag[32];
    size_t len = 0;
    int var = (int)(v % NVAR), ex = 0;

    *st = EFC_OK;
    if (make_manifest(v, &m, &json, &len)) {
        *st = EFC_EINTERNAL;
        return STEP_STAGE;
    }
    snprintf(tag, sizeof(tag), "ota-%llu", (unsigned long long)v);
    *st = efc_slots_stage(s, json, len, &m, art_src[var], model_src[var]);
    efc_free(json);
    if (*st)
        return STEP_STAGE;
    if ((*st = efc_slots_switch(s, tag)))
        return STEP_SWITCH;
    if ((*st = efc_slots_trial_attempt(s, &ex)) || ex) {
        if (!*st)
            *st = EFC_EINTERNAL;
        return STEP_ATTEMPT;
    }
    if ((*st = efc_slots_commit(s)))
        return STEP_COMMIT;
    return STEP_DONE;
}

static void install_ok(struct efc_slots *s, uint64_t v)
{
    enum efc_status st;
    enum step at = install(s, v, &st);
    if (at != STEP_DONE)
        fail_msg("install v%llu failed at step %d: %s: %s", (unsigned long long)v, (int)at,
                 efc_status_str(st), efc_err_detail());
}

static struct efc_slots_status status_of(struct efc_slots *s)
{
    struct efc_slots_status st;
    assert_int_equal(efc_slots_status(s, &st), EFC_OK);
    return st;
}

/* ---- setup -------------------------------------------------------------------------------- */

/* Thousands of transitions and deliberate corruptions: count the log lines instead of printing
 * them (the fallback cases check the status flag, which is what the agent reads). */
static int n_log_errors;
static void quiet_sink(enum efc_log_level lvl, const char *line, void *ctx)
{
    (void)line, (void)ctx;
    n_log_errors += lvl == EFC_LOG_ERROR;
}

static int setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    char *pub = NULL, id[17];
    struct efc_slots *s = NULL;
    (void)state;

    rng_state = (uint32_t)time(NULL);
    printf("# seed %u\n", rng_state);
    efc_log_set_sink(quiet_sink, NULL);
    now_s = (int64_t)time(NULL);
    snprintf(root, sizeof(root), "%s/efc-slots-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root))
        return -1;
    if (efc_manifest_keygen(&priv_pem, &pub, id) || efc_manifest_keys_new(&trust) ||
        efc_manifest_keys_add(trust, pub, strlen(pub), NULL))
        return -1;
    efc_free(pub);
    for (int i = 0; i < N_SAMPLES * IN_N; i++)
        samples[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (int var = 0; var < NVAR; var++) {
        struct efc_model *m = make_model(var);
        size_t n = 3001 + 97 * (size_t)var; /* odd sizes */
        uint8_t *art = efc_malloc(n);
        if (!m || !art)
            return -1;
        for (size_t i = 0; i < n; i++)
            art[i] = (uint8_t)rnd();
        snprintf(model_src[var], sizeof(model_src[var]), "%s/model%d.efm", root, var);
        snprintf(art_src[var], sizeof(art_src[var]), "%s/artifact%d", root, var);
        if (efc_efm_save(m, model_src[var]) || efc_fs_write_atomic(art_src[var], art, n) ||
            hash_path(model_src[var], model_hex[var]) || run_file(model_src[var], ref_out[var]))
            return -1;
        efc_model_free(m);
        efc_free(art);
    }
    /* variants must differ, else "old or new" could not be told apart by output */
    for (int var = 1; var < NVAR; var++)
        if (!memcmp(ref_out[var], ref_out[var - 1], sizeof(ref_out[0])))
            return -1;
    snprintf(base_dir, sizeof(base_dir), "%s/base", root);
    snprintf(work, sizeof(work), "%s/work", root);
    if (efc_slots_open(base_dir, &s))
        return -1;
    {
        enum efc_status st;
        if (install(s, 1, &st) != STEP_DONE || install(s, 2, &st) != STEP_DONE)
            return -1;
    }
    efc_slots_close(s);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_tree(root);
    efc_free(priv_pem);
    efc_manifest_keys_free(trust);
    return 0;
}

/* ---- 1. API --------------------------------------------------------------------------------- */

static void test_happy_revert_rollback(void **state)
{
    struct efc_slots *s = NULL, *s2 = NULL;
    struct efc_slots_status st;
    struct efc_manifest m;
    char *json = NULL, dir[700];
    size_t len = 0;
    int ex = -1;
    (void)state;

    snprintf(dir, sizeof(dir), "%s/api", root);
    assert_int_equal(efc_slots_open(dir, &s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.has_active, 0);
    assert_int_equal(st.min_version, 0);
    assert_int_equal(efc_slots_open(dir, &s2), EFC_EBUSY); /* one handle per state dir */

    assert_int_equal(make_manifest(1, &m, &json, &len), 0);
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[1], model_src[1]), EFC_OK);
    efc_free(json);
    st = status_of(s);
    assert_int_equal(st.staged, 1);
    assert_int_equal(st.has_active, 0); /* staged is not installed */
    assert_int_equal(efc_slots_switch(s, "ota-1"), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.has_active, 1);
    assert_int_equal(st.active.name, 'a');
    assert_int_equal(st.trial, 1);
    assert_int_equal(st.trial_attempts, 0);
    assert_string_equal(st.trial_tag, "ota-1");
    assert_int_equal(st.previous.valid, 0);
    assert_int_equal(st.min_version, 0); /* raised only by commit */
    assert_int_equal(efc_slots_trial_attempt(s, &ex), EFC_OK);
    assert_int_equal(ex, 0);
    assert_int_equal(efc_slots_commit(s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.trial, 0);
    assert_int_equal(st.min_version, 1);
    assert_string_equal(st.trial_tag, "");
    assert_good(&st.active);
    assert_string_equal(st.active.policy, "int8 \"v1\" \\");

    install_ok(s, 2);
    st = status_of(s);
    assert_int_equal(st.active.name, 'b');
    assert_int_equal(st.active.version, 2);
    assert_int_equal(st.previous.name, 'a');
    assert_int_equal(st.previous.version, 1);
    assert_int_equal(st.min_version, 2);
    assert_good(&st.active);
    assert_good(&st.previous);

    /* revert: back to v1, previous gone, the minimum stays at 2 */
    assert_int_equal(efc_slots_revert(s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.active.version, 1);
    assert_int_equal(st.active.name, 'a');
    assert_int_equal(st.previous.valid, 0);
    assert_int_equal(st.min_version, 2);
    assert_int_equal(slot_files(dir, 'b'), 0);
    assert_good(&st.active);
    assert_int_equal(efc_slots_revert(s), EFC_ENOTFOUND);
    /* a re-delivery of v1 (below the minimum) is refused even by the slots */
    assert_int_equal(make_manifest(1, &m, &json, &len), 0);
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[1], model_src[1]), EFC_EVERSION);
    efc_free(json);

    /* rollback of a trial: v3 fails health, v1 serves again */
    assert_int_equal(make_manifest(3, &m, &json, &len), 0);
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[3], model_src[3]), EFC_OK);
    efc_free(json);
    assert_int_equal(efc_slots_switch(s, "ota-3"), EFC_OK);
    assert_int_equal(efc_slots_revert(s), EFC_EBUSY); /* a trial is rolled back, not reverted */
    assert_int_equal(efc_slots_rollback(s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.active.version, 1);
    assert_int_equal(st.previous.valid, 0);
    assert_int_equal(st.trial, 0);
    assert_int_equal(st.min_version, 2);
    assert_int_equal(slot_files(dir, 'b'), 0);
    assert_good(&st.active);

    /* persisted across reopen */
    efc_slots_close(s);
    assert_int_equal(efc_slots_open(dir, &s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.active.version, 1);
    assert_int_equal(st.min_version, 2);
    assert_int_equal(st.fell_back, 0);
    efc_slots_close(s);
    rm_tree(dir);
}

static void test_trial_exhausted(void **state)
{
    struct efc_slots *s = NULL;
    struct efc_slots_status st;
    struct efc_manifest m;
    char *json = NULL;
    size_t len = 0;
    int ex = -1;
    (void)state;

    fresh_work();
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    assert_int_equal(make_manifest(4, &m, &json, &len), 0);
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[4], model_src[4]), EFC_OK);
    efc_free(json);
    assert_int_equal(efc_slots_switch(s, "ota-4"), EFC_OK);
    for (int i = 1; i <= EFC_SLOTS_MAX_TRIALS; i++) {
        assert_int_equal(efc_slots_trial_attempt(s, &ex), EFC_OK);
        assert_int_equal(ex, 0);
        assert_int_equal(status_of(s).trial_attempts, i);
        /* a crash during the health check: the count survives */
        efc_slots_close(s);
        assert_int_equal(efc_slots_open(work, &s), EFC_OK);
        st = status_of(s);
        assert_int_equal(st.trial, 1);
        assert_int_equal(st.trial_attempts, i);
        assert_string_equal(st.trial_tag, "ota-4");
    }
    assert_int_equal(efc_slots_trial_attempt(s, &ex), EFC_OK);
    assert_int_equal(ex, 1);
    assert_int_equal(status_of(s).trial_attempts, EFC_SLOTS_MAX_TRIALS);
    assert_int_equal(efc_slots_trial_attempt(s, &ex), EFC_OK); /* stays exhausted */
    assert_int_equal(ex, 1);
    assert_int_equal(efc_slots_rollback(s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.active.version, 2);
    assert_int_equal(st.trial, 0);
    assert_int_equal(st.min_version, 2);
    assert_good(&st.active);
    assert_int_equal(efc_slots_trial_attempt(s, &ex), EFC_EINVAL); /* no trial */
    efc_slots_close(s);
}

static void test_min_version_monotone(void **state)
{
    struct efc_slots *s = NULL;
    uint64_t last = 0, cur;
    enum efc_status rc;
    (void)state;

    fresh_work();
    /* commit 3, 5, revert, commit 7, rollback of 9, commit 11, revert: after every step and
     * every reopen min_version is the largest committed version so far */
    const uint64_t versions[] = {3, 5, 0, 7, 9, 11, 0};
    const uint64_t expect[] = {3, 5, 5, 7, 7, 11, 11};
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    last = status_of(s).min_version;
    assert_int_equal(last, 2);
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        if (versions[i] == 0)
            assert_int_equal(efc_slots_revert(s), EFC_OK);
        else if (versions[i] == 9) {
            struct efc_manifest m;
            char *json = NULL;
            size_t len = 0;
            assert_int_equal(make_manifest(9, &m, &json, &len), 0);
            assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[1], model_src[1]), EFC_OK);
            efc_free(json);
            assert_int_equal(efc_slots_switch(s, NULL), EFC_OK);
            assert_int_equal(efc_slots_rollback(s), EFC_OK);
        } else
            install_ok(s, versions[i]);
        cur = status_of(s).min_version;
        assert_true(cur >= last);
        assert_int_equal(cur, expect[i]);
        efc_slots_close(s);
        assert_int_equal(efc_slots_open(work, &s), EFC_OK);
        assert_int_equal(status_of(s).min_version, cur);
        last = cur;
    }
    /* a version below the minimum is refused; equal is allowed (re-install after a fallback) */
    {
        struct efc_manifest m;
        char *json = NULL;
        size_t len = 0;
        assert_int_equal(make_manifest(6, &m, &json, &len), 0);
        rc = efc_slots_stage(s, json, len, &m, art_src[6], model_src[6]);
        assert_int_equal(rc, EFC_EVERSION);
        efc_free(json);
    }
    efc_slots_close(s);
}

static void test_refusals(void **state)
{
    struct efc_slots *s = NULL;
    struct efc_slots_status st;
    struct efc_manifest m;
    char *json = NULL, tag[80], path[800];
    size_t len = 0;
    int ex;
    (void)state;

    fresh_work();
    assert_int_equal(efc_slots_open(NULL, &s), EFC_EINVAL);
    assert_int_equal(efc_slots_open("", &s), EFC_EINVAL);
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    assert_int_equal(efc_slots_switch(s, "x"), EFC_EINVAL); /* nothing staged */
    assert_int_equal(efc_slots_commit(s), EFC_EINVAL);      /* no trial */
    assert_int_equal(efc_slots_rollback(s), EFC_EINVAL);
    assert_int_equal(efc_slots_trial_attempt(s, &ex), EFC_EINVAL);
    assert_int_equal(efc_slots_trial_attempt(s, NULL), EFC_EINVAL);
    assert_int_equal(efc_slots_status(s, NULL), EFC_EINVAL);
    assert_int_equal(make_manifest(3, &m, &json, &len), 0);
    assert_int_equal(efc_slots_stage(s, NULL, len, &m, art_src[3], model_src[3]), EFC_EINVAL);
    assert_int_equal(efc_slots_stage(s, json, 0, &m, art_src[3], model_src[3]), EFC_EINVAL);
    assert_int_equal(
        efc_slots_stage(s, json, EFC_MANIFEST_MAX_BYTES + 1, &m, art_src[3], model_src[3]),
        EFC_EINVAL);
    /* the artifact of another release: refused, and nothing left in the slot */
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[4], model_src[3]), EFC_EHASH);
    assert_int_equal(slot_files(work, 'a'), 0);
    snprintf(path, sizeof(path), "%s/missing", root);
    assert_int_equal(efc_slots_stage(s, json, len, &m, path, model_src[3]), EFC_ENOTFOUND);
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[3], path), EFC_ENOTFOUND);
    assert_int_equal(slot_files(work, 'a'), 0);
    st = status_of(s);
    assert_int_equal(st.active.version, 2); /* the active install was never touched */
    assert_good(&st.active);
    assert_int_equal(st.previous.valid, 0); /* v1 lived in the slot staged into */
    /* staged files changed before the switch: refused */
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[3], model_src[3]), EFC_OK);
    snprintf(path, sizeof(path), "%s/ota/a/model.efm", work);
    {
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        fseek(f, 100, SEEK_SET);
        fputc(0x5a, f);
        fclose(f);
    }
    assert_int_equal(efc_slots_switch(s, "t"), EFC_EHASH);
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[3], model_src[3]), EFC_OK);
    memset(tag, 'x', sizeof(tag));
    tag[EFC_SLOTS_TAG_MAX] = '\0';
    assert_int_equal(efc_slots_switch(s, tag), EFC_EINVAL); /* 64 characters */
    assert_int_equal(efc_slots_switch(s, "bad\ttag"), EFC_EINVAL);
    tag[EFC_SLOTS_TAG_MAX - 1] = '\0';
    assert_int_equal(efc_slots_switch(s, tag), EFC_OK); /* 63 */
    assert_string_equal(status_of(s).trial_tag, tag);
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[3], model_src[3]), EFC_EBUSY);
    assert_int_equal(efc_slots_switch(s, "again"), EFC_EINVAL); /* consumed */
    assert_int_equal(efc_slots_commit(s), EFC_OK);
    efc_free(json);
    efc_slots_close(s);
    efc_slots_close(NULL);
}

/* Corrupt slot files found at open: fall back, say so, persist it. */
static void test_corrupt_slot_fallback(void **state)
{
    struct efc_slots *s = NULL;
    struct efc_slots_status st;
    char path[800];
    (void)state;

    /* active model flipped: back to the previous install */
    fresh_work();
    snprintf(path, sizeof(path), "%s/ota/b/model.efm", work);
    {
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        fseek(f, 77, SEEK_SET);
        fputc(0xa5, f);
        fclose(f);
    }
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.fell_back, 1);
    assert_int_equal(st.fell_back_from, 'b');
    assert_int_equal(st.active.version, 1);
    assert_int_equal(st.previous.valid, 0);
    assert_int_equal(st.min_version, 2);
    assert_int_equal(slot_files(work, 'b'), 0);
    assert_good(&st.active);
    efc_slots_close(s);
    assert_int_equal(efc_slots_open(work, &s), EFC_OK); /* persisted; no second fallback */
    st = status_of(s);
    assert_int_equal(st.fell_back, 0);
    assert_int_equal(st.active.version, 1);
    efc_slots_close(s);

    /* active artifact missing, previous truncated: nothing left */
    fresh_work();
    snprintf(path, sizeof(path), "%s/ota/b/artifact", work);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/ota/a/manifest.json", work);
    assert_int_equal(truncate(path, 10), 0);
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.fell_back, 1);
    assert_int_equal(st.has_active, 0);
    assert_int_equal(st.min_version, 2);
    assert_int_equal(slot_files(work, 'a') + slot_files(work, 'b'), 0);
    install_ok(s, 3); /* and it can install again */
    st = status_of(s);
    assert_good(&st.active);
    efc_slots_close(s);

    /* previous corrupt, active fine: previous dropped, no fallback */
    fresh_work();
    snprintf(path, sizeof(path), "%s/ota/a/model.efm", work);
    assert_int_equal(truncate(path, 5), 0);
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.fell_back, 0);
    assert_int_equal(st.active.version, 2);
    assert_int_equal(st.previous.valid, 0);
    assert_int_equal(efc_slots_revert(s), EFC_ENOTFOUND);
    efc_slots_close(s);
}

/* ---- 2. kill at every k --------------------------------------------------------------------- */

/* Reopen work after a kill and check the invariants; returns the phase: 0 = old (v2), 1 = v3 on
 * trial with 0 attempts, 2 = with 1 attempt, 3 = v3 committed; -1 (after fail_msg) otherwise. */
static int check_after_kill(int k, uint64_t old_v, uint64_t new_v, uint64_t min_before)
{
    struct efc_slots *s = NULL;
    struct efc_slots_status st;
    enum efc_status rc;
    const char *why;
    int phase = -1;

    n_log_errors = 0;
    rc = efc_slots_open(work, &s);
    if (rc)
        fail_msg("k=%d: reopen: %s: %s", k, efc_status_str(rc), efc_err_detail());
    st = status_of(s);
    /* an ERROR line would mean recovery had to drop a corrupt install (active or previous) */
    if (st.fell_back || n_log_errors || !st.has_active || temps_total(work))
        fail_msg("k=%d: fell_back %d errors logged %d has_active %d temps %d", k, st.fell_back,
                 n_log_errors, st.has_active, temps_total(work));
    if ((why = bad_install(&st.active)))
        fail_msg("k=%d: active v%llu: %s", k, (unsigned long long)st.active.version, why);
    if (st.previous.valid && (why = bad_install(&st.previous)))
        fail_msg("k=%d: previous v%llu: %s", k, (unsigned long long)st.previous.version, why);
    if (st.min_version < min_before)
        fail_msg("k=%d: min_version %llu < %llu", k, (unsigned long long)st.min_version,
                 (unsigned long long)min_before);
    if (slot_files(work, st.active.name == 'a' ? 'b' : 'a') != (st.previous.valid ? 3 : 0))
        fail_msg("k=%d: unused slot not empty", k);
    if (st.active.version == old_v && !st.trial && st.min_version == min_before)
        phase = 0;
    else if (st.active.version == new_v && st.trial && st.previous.version == old_v) {
        phase = 1 + st.trial_attempts;
        if (st.trial_attempts > 1 || strcmp(st.trial_tag, "ota-3"))
            fail_msg("k=%d: trial attempts %d tag %s", k, st.trial_attempts, st.trial_tag);
        /* the caller finishes the trial: re-run health and commit, or roll back */
        if (k % 2) {
            int ex = 1;
            assert_int_equal(efc_slots_trial_attempt(s, &ex), EFC_OK);
            assert_int_equal(ex, 0);
            assert_int_equal(efc_slots_commit(s), EFC_OK);
            assert_int_equal(status_of(s).active.version, new_v);
        } else {
            assert_int_equal(efc_slots_rollback(s), EFC_OK);
            assert_int_equal(status_of(s).active.version, old_v);
        }
        st = status_of(s);
        assert_good(&st.active);
    } else if (st.active.version == new_v && !st.trial && st.min_version == new_v)
        phase = 3;
    else
        fail_msg("k=%d: unexpected state: active v%llu trial %d min %llu", k,
                 (unsigned long long)st.active.version, st.trial,
                 (unsigned long long)st.min_version);
    efc_slots_close(s);
    return phase;
}

static void test_kill_every_k(void **state)
{
    struct efc_slots *s = NULL;
    enum efc_status rc;
    uint64_t n;
    int last = 0, counts[4] = {0}, passed = 0, failed = 0;
    (void)state;

    /* dry run: count the operations of one install */
    fresh_work();
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    efc_slots_fault(EFC_SLOTS_FAULT_NONE, 0);
    assert_int_equal(install(s, 3, &rc), STEP_DONE);
    n = efc_slots_io_count();
    efc_slots_close(s);
    assert_true(n > 10);
    for (uint64_t k = 1; k <= n + 1; k++) {
        int ws = 0, phase;
        pid_t pid;
        fresh_work();
        fflush(NULL);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            struct efc_slots *c = NULL;
            enum efc_status crc;
            if (efc_slots_open(work, &c))
                _exit(10);
            efc_slots_fault(EFC_SLOTS_FAULT_KILL, k);
            _exit(install(c, 3, &crc) == STEP_DONE ? 0 : 11);
        }
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        if (k <= n ? !(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL)
                   : !(WIFEXITED(ws) && WEXITSTATUS(ws) == 0)) {
            failed++;
            fail_msg("k=%llu: child status 0x%x", (unsigned long long)k, ws);
        }
        phase = check_after_kill((int)k, 2, 3, 2);
        if (phase < last)
            fail_msg("k=%llu: phase %d after phase %d", (unsigned long long)k, phase, last);
        last = phase;
        counts[phase]++;
        passed++;
    }
    printf("# kill at every k: N = %llu operations per install; %d kills + 1 run to completion: "
           "%d passed, %d failed; old %d, trial(0) %d, trial(1) %d, committed %d\n",
           (unsigned long long)n, (int)n, passed, failed, counts[0], counts[1], counts[2],
           counts[3]);
    for (int p = 0; p < 4; p++)
        assert_true(counts[p] > 0);
}

/* ---- 3. random-time kills ------------------------------------------------------------------- */

/* The child: finish a trial left by the last kill, then install / commit / roll back / revert
 * forever. Exits (instead of being killed) only on an error. */
static void random_child(uint32_t seed)
{
    struct efc_slots *s = NULL;
    struct efc_slots_status st;
    enum efc_status rc;
    int ex;

    rng_state = seed;
    if (efc_slots_open(work, &s))
        _exit(10);
    efc_slots_status(s, &st);
    if (st.trial) {
        if (efc_slots_trial_attempt(s, &ex))
            _exit(11);
        if ((ex ? efc_slots_rollback(s) : efc_slots_commit(s)))
            _exit(12);
    }
    for (;;) {
        uint64_t v;
        efc_slots_status(s, &st);
        v = (st.active.version > st.min_version ? st.active.version : st.min_version) + 1;
        if (st.previous.valid && rnd() % 6 == 0) {
            if (efc_slots_revert(s))
                _exit(13);
            continue;
        }
        if (rnd() % 4 == 0) { /* a trial that fails its health check */
            struct efc_manifest m;
            char *json = NULL;
            size_t len = 0;
            int var = (int)(v % NVAR);
            if (make_manifest(v, &m, &json, &len) ||
                efc_slots_stage(s, json, len, &m, art_src[var], model_src[var]) ||
                efc_slots_switch(s, "ota-x") || efc_slots_rollback(s))
                _exit(14);
            efc_free(json);
            continue;
        }
        if (install(s, v, &rc) != STEP_DONE)
            _exit(15);
    }
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void test_kill_random(void **state)
{
    struct efc_slots *s = NULL;
    struct efc_slots_status st;
    enum efc_status rc;
    uint64_t min_last, max_v = 0;
    int passed = 0, failed = 0, trials_seen = 0;
    double t0, inst_ms, window_us;
    (void)state;

    fresh_work();
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    t0 = now_ms();
    install_ok(s, 3);
    inst_ms = now_ms() - t0;
    min_last = status_of(s).min_version;
    efc_slots_close(s);
    /* kills spread over child start-up (open, recovery) and about three installs */
    window_us = 1000.0 * (3 * inst_ms + 2.0);
    for (int i = 0; i < N_RANDOM_KILLS; i++) {
        uint32_t seed = rnd();
        struct timespec d;
        long us = (long)((double)(rnd() % 10000) / 10000.0 * window_us);
        int ws = 0;
        const char *why;
        pid_t pid;

        fflush(NULL);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            random_child(seed);
        d.tv_sec = us / 1000000;
        d.tv_nsec = (us % 1000000) * 1000;
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        if (!(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL)) {
            failed++;
            fail_msg("kill %d: child exited by itself (status 0x%x)", i, ws);
        }
        n_log_errors = 0;
        rc = efc_slots_open(work, &s);
        if (rc)
            fail_msg("kill %d: reopen: %s: %s", i, efc_status_str(rc), efc_err_detail());
        st = status_of(s);
        if (!st.has_active || st.fell_back || n_log_errors || temps_total(work))
            fail_msg("kill %d: has_active %d fell_back %d errors logged %d temps %d", i,
                     st.has_active, st.fell_back, n_log_errors, temps_total(work));
        if ((why = bad_install(&st.active)))
            fail_msg("kill %d: active v%llu: %s", i, (unsigned long long)st.active.version, why);
        if (st.previous.valid && (why = bad_install(&st.previous)))
            fail_msg("kill %d: previous v%llu: %s", i, (unsigned long long)st.previous.version,
                     why);
        if (st.min_version < min_last)
            fail_msg("kill %d: min_version %llu < %llu", i, (unsigned long long)st.min_version,
                     (unsigned long long)min_last);
        if (slot_files(work, st.active.name == 'a' ? 'b' : 'a') != (st.previous.valid ? 3 : 0))
            fail_msg("kill %d: unused slot not empty", i);
        trials_seen += st.trial;
        min_last = st.min_version;
        max_v = st.active.version > max_v ? st.active.version : max_v;
        efc_slots_close(s);
        passed++;
    }
    printf("# random-time kills: %d kills (window %.1f ms, install %.2f ms): %d passed, "
           "%d failed; %d left a trial; min_version 3 -> %llu, highest active v%llu\n",
           N_RANDOM_KILLS, window_us / 1000.0, inst_ms, passed, failed, trials_seen,
           (unsigned long long)min_last, (unsigned long long)max_v);
    assert_true(min_last > 3); /* the loop made progress */
}

/* ---- 4. EIO / ENOSPC at every k ------------------------------------------------------------- */

static void test_io_errors_every_k(void **state)
{
    const enum efc_slots_fault_mode modes[2] = {EFC_SLOTS_FAULT_EIO, EFC_SLOTS_FAULT_ENOSPC};
    const enum efc_status want[2] = {EFC_EIO, EFC_ENOSPC};
    const int want_errno[2] = {EIO, ENOSPC};
    struct efc_slots *s = NULL;
    struct efc_slots_status st, st2;
    enum efc_status rc;
    uint64_t n, n_open;
    int per_step[5] = {0};
    (void)state;

    fresh_work();
    efc_slots_fault(EFC_SLOTS_FAULT_NONE, 0);
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    n_open = efc_slots_io_count();
    efc_slots_fault(EFC_SLOTS_FAULT_NONE, 0);
    assert_int_equal(install(s, 3, &rc), STEP_DONE);
    n = efc_slots_io_count();
    efc_slots_close(s);

    for (int mi = 0; mi < 2; mi++) {
        for (uint64_t k = 1; k <= n + 1; k++) {
            enum step at;
            int e;
            fresh_work();
            assert_int_equal(efc_slots_open(work, &s), EFC_OK);
            efc_slots_fault(modes[mi], k);
            errno = 0;
            at = install(s, 3, &rc);
            e = errno;
            efc_slots_fault(EFC_SLOTS_FAULT_NONE, 0);
            if (k == n + 1) {
                assert_int_equal(at, STEP_DONE);
            } else {
                if (at == STEP_DONE || rc != want[mi] || e != want_errno[mi])
                    fail_msg("%s k=%llu: step %d returned %s errno %d (%s)",
                             efc_status_str(want[mi]), (unsigned long long)k, (int)at,
                             efc_status_str(rc), e, efc_err_detail());
                per_step[at]++;
            }
            st = status_of(s);
            assert_int_equal(temps_total(work), 0);
            switch (at) {
            case STEP_STAGE:
            case STEP_SWITCH:
                assert_int_equal(st.active.version, 2);
                assert_int_equal(st.trial, 0);
                assert_int_equal(st.min_version, 2);
                if (at == STEP_STAGE)
                    assert_int_equal(slot_files(work, 'a'), st.previous.valid ? 3 : 0);
                break;
            case STEP_ATTEMPT:
            case STEP_COMMIT:
                assert_int_equal(st.active.version, 3);
                assert_int_equal(st.trial, 1);
                assert_int_equal(st.trial_attempts, at == STEP_ATTEMPT ? 0 : 1);
                assert_int_equal(st.min_version, 2);
                break;
            case STEP_DONE:
                assert_int_equal(st.active.version, 3);
                assert_int_equal(st.trial, 0);
                assert_int_equal(st.min_version, 3);
                break;
            }
            assert_good(&st.active);
            /* memory and disk agree */
            efc_slots_close(s);
            assert_int_equal(efc_slots_open(work, &s), EFC_OK);
            st2 = status_of(s);
            assert_int_equal(st2.fell_back, 0);
            assert_int_equal(st2.active.version, st.active.version);
            assert_int_equal(st2.trial, st.trial);
            assert_int_equal(st2.trial_attempts, st.trial_attempts);
            assert_int_equal(st2.min_version, st.min_version);
            assert_int_equal(st2.previous.valid, st.previous.valid);
            efc_slots_close(s);
        }
        /* the open's own recovery (a fallback write included): fails cleanly or succeeds */
        for (uint64_t k = 1; k <= n_open + 8; k++) {
            char path[800];
            fresh_work();
            snprintf(path, sizeof(path), "%s/ota/b/model.efm", work);
            assert_int_equal(truncate(path, 40), 0); /* force a fallback write in recover */
            efc_slots_fault(modes[mi], k);
            rc = efc_slots_open(work, &s);
            efc_slots_fault(EFC_SLOTS_FAULT_NONE, 0);
            if (rc == EFC_OK)
                efc_slots_close(s);
            else
                assert_int_equal(rc, want[mi]);
            assert_int_equal(efc_slots_open(work, &s), EFC_OK);
            st = status_of(s);
            assert_int_equal(st.active.version, 1);
            assert_int_equal(st.min_version, 2);
            assert_good(&st.active);
            assert_int_equal(temps_total(work), 0);
            efc_slots_close(s);
        }
    }
    printf("# EIO and ENOSPC at every k: N = %llu per install, %llu x 2 injections: failed "
           "(both modes) in stage %d, switch %d, trial attempt %d, commit %d; all with the "
           "injected status, "
           "0 temp files, old install active; open recovery: %llu x 2 injections\n",
           (unsigned long long)n, (unsigned long long)n, per_step[0], per_step[1], per_step[2],
           per_step[3], (unsigned long long)(n_open + 8));
}

/* ---- 5. state file damage ------------------------------------------------------------------- */

static void write_raw(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Write line + "\n" + sha256(line) + "\n": a state with a valid checksum. */
static void write_checked(const char *path, const char *line)
{
    uint8_t d[EFC_SHA256_BYTES];
    char hex[EFC_SHA256_HEX_BYTES], buf[4096];
    int n;
    efc_sha256(line, strlen(line), d);
    efc_sha256_hex(d, hex);
    n = snprintf(buf, sizeof(buf), "%s\n%s\n", line, hex);
    write_raw(path, buf, (size_t)n);
}

static void expect_open(enum efc_status want, const char *what)
{
    struct efc_slots *s = NULL;
    enum efc_status rc = efc_slots_open(work, &s);
    if (rc != want)
        fail_msg("%s: open returned %s (%s), want %s", what, efc_status_str(rc), efc_err_detail(),
                 efc_status_str(want));
    if (rc == EFC_OK)
        efc_slots_close(s);
    else
        assert_null(s);
}

static void test_state_damage(void **state)
{
    struct efc_slots *s = NULL;
    struct efc_slots_status st;
    void *good = NULL, *after = NULL;
    size_t glen = 0, alen = 0;
    char path[800], *line, *nl;
    uint8_t junk[1000];
    const size_t cuts[] = {0, 1, 2, 50, 0 /* half */, 0 /* len - 66 */, 0 /* len - 1 */};
    int n_cases = 0;
    (void)state;

    fresh_work();
    snprintf(path, sizeof(path), "%s/ota/state", work);
    assert_int_equal(efc_fs_read_all(path, 1 << 16, &good, &glen), EFC_OK);

    /* garbage */
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)rnd();
    write_raw(path, junk, sizeof(junk));
    expect_open(EFC_EPROTO, "garbage");
    n_cases++;
    assert_int_equal(efc_fs_read_all(path, 1 << 16, &after, &alen), EFC_OK);
    assert_true(alen == sizeof(junk) && !memcmp(after, junk, alen)); /* left as it was */
    efc_free(after);
    assert_int_equal(slot_files(work, 'a') + slot_files(work, 'b'), 6); /* slots untouched */

    /* truncated */
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        size_t c = i == 4 ? glen / 2 : i == 5 ? glen - 66 : i == 6 ? glen - 1 : cuts[i];
        write_raw(path, good, c);
        expect_open(EFC_EPROTO, "truncated");
        n_cases++;
    }
    /* every byte of the JSON line changed in turn (a digit, a quote, a brace...) */
    line = good;
    nl = memchr(line, '\n', glen);
    assert_non_null(nl);
    for (size_t i = 0; i < (size_t)(nl - line); i += 7) {
        char *c = efc_malloc(glen);
        assert_non_null(c);
        memcpy(c, good, glen);
        c[i] ^= 0x01;
        write_raw(path, c, glen);
        expect_open(EFC_EPROTO, "bit flip");
        efc_free(c);
        n_cases++;
    }
    /* valid checksum, bad contents */
    {
        static const char *const bad[] = {
            "not json",
            "[1,2]",
            "{}",
            "{\"format\":1,\"min_version\":\"-1\",\"trial\":0,\"trial_attempts\":0,"
            "\"trial_tag\":\"\",\"active\":null,\"previous\":null}",
            "{\"format\":1,\"min_version\":\"01\",\"trial\":0,\"trial_attempts\":0,"
            "\"trial_tag\":\"\",\"active\":null,\"previous\":null}",
            "{\"format\":1,\"min_version\":\"18446744073709551616\",\"trial\":0,"
            "\"trial_attempts\":0,\"trial_tag\":\"\",\"active\":null,\"previous\":null}",
            "{\"format\":1,\"min_version\":\"1\",\"trial\":1,\"trial_attempts\":0,"
            "\"trial_tag\":\"\",\"active\":null,\"previous\":null}",
            "{\"format\":1,\"min_version\":\"1\",\"trial\":0,\"trial_attempts\":2,"
            "\"trial_tag\":\"\",\"active\":null,\"previous\":null}",
            "{\"format\":1,\"min_version\":\"1\",\"trial\":0,\"trial_attempts\":0,"
            "\"trial_tag\":\"\",\"active\":{\"slot\":\"c\"},\"previous\":null}",
            "{\"format\":1,\"min_version\":\"1\",\"trial\":2,\"trial_attempts\":0,"
            "\"trial_tag\":\"\",\"active\":null,\"previous\":null}",
            "{\"format\":1.5,\"min_version\":\"1\",\"trial\":0,\"trial_attempts\":0,"
            "\"trial_tag\":\"\",\"active\":null,\"previous\":null}",
            "{\"format\":1,\"min_version\":\"1\",\"trial\":0,\"trial_attempts\":9,"
            "\"trial_tag\":\"\",\"active\":null,\"previous\":null}",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            write_checked(path, bad[i]);
            expect_open(EFC_EPROTO, bad[i]);
            n_cases++;
        }
        /* the good record placed as both active and previous (same slot) */
        {
            char buf[4096], *a, *p;
            size_t n1 = (size_t)(nl - line);
            memcpy(buf, good, n1);
            buf[n1] = '\0';
            a = strstr(buf, "\"active\":");
            p = strstr(buf, ",\"previous\":");
            assert_non_null(a);
            assert_non_null(p);
            {
                char rec[2048], out[8192];
                size_t rl = (size_t)(p - (a + 9));
                memcpy(rec, a + 9, rl);
                rec[rl] = '\0';
                *p = '\0';
                snprintf(out, sizeof(out), "%s,\"previous\":%s}", buf, rec);
                write_checked(path, out);
                expect_open(EFC_EPROTO, "same slot twice");
                n_cases++;
                /* previous without active */
                snprintf(out, sizeof(out), "%.*s\"active\":null,\"previous\":%s}", (int)(a - buf),
                         buf, rec);
                write_checked(path, out);
                expect_open(EFC_EPROTO, "previous without active");
                n_cases++;
            }
        }
        write_checked(path, "{\"format\":2,\"min_version\":\"1\"}");
        expect_open(EFC_EVERSION, "format 2");
        n_cases++;
    }
    /* a directory where the state file should be */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    expect_open(EFC_EPROTO, "directory");
    n_cases++;
    assert_int_equal(rmdir(path), 0);

    /* the good file again: opens with its installs (nothing was touched meanwhile) */
    write_raw(path, good, glen);
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.active.version, 2);
    assert_int_equal(st.previous.version, 1);
    assert_int_equal(st.fell_back, 0);
    efc_slots_close(s);

    /* missing: a fresh device; the slots' files are orphans and go */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(efc_slots_open(work, &s), EFC_OK);
    st = status_of(s);
    assert_int_equal(st.has_active, 0);
    assert_int_equal(st.min_version, 0);
    assert_int_equal(slot_files(work, 'a') + slot_files(work, 'b'), 0);
    efc_slots_close(s);
    efc_free(good);
    printf("# state file damage: %d damaged states refused with a status, file left as it was; "
           "missing file = fresh device\n",
           n_cases);
}

/* EFC_SLOTS_FAULT in the environment arms the hook at the first open of a process. */
static void test_fault_env(void **state)
{
    int ws = 0;
    pid_t pid;
    (void)state;

    fresh_work();
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct efc_slots *c = NULL;
        enum efc_status rc;
        setenv("EFC_SLOTS_FAULT", "eio:1", 1);
        rc = efc_slots_open(work, &c); /* the first operation fails */
        _exit(rc == EFC_EIO ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct efc_slots *c = NULL;
        setenv("EFC_SLOTS_FAULT", "kill:3", 1);
        efc_slots_open(work, &c);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct efc_slots *c = NULL;
        setenv("EFC_SLOTS_FAULT", "bogus:x", 1); /* ignored with a warning */
        _exit(efc_slots_open(work, &c) == EFC_OK ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_happy_revert_rollback), cmocka_unit_test(test_trial_exhausted),
        cmocka_unit_test(test_min_version_monotone),  cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_corrupt_slot_fallback), cmocka_unit_test(test_kill_every_k),
        cmocka_unit_test(test_kill_random),           cmocka_unit_test(test_io_errors_every_k),
        cmocka_unit_test(test_state_damage),          cmocka_unit_test(test_fault_env),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
