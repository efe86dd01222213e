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
 * - Power cut (D2, without a VM): an install, a rollback and a revert (and a fresh device's
 *   first install) run with efc_slots_trace on; the trace is replayed into a file system model
 *   to check the fsync rules (a renamed file fsynced after its last write; every rename, create,
 *   unlink, mkdir of a name that matters followed by an fsync of its directory before the call
 *   returns; the state replaced only by rename of a whole, fsynced temp file; the slot files a
 *   new state names, and their entries, durable before it), and for every prefix of the trace
 *   the strict / meta / torn power-cut views are materialised and opened with the kill tests'
 *   checks, the returned call's state durable at each return. Negative controls: the same
 *   trace without one of five fsyncs must be reported by both.
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

/* ---- 6. power cut (D2): I/O trace, durability rules, durable views ------------------------
 * A kill keeps the page cache, so the kill tests cannot show that what a later step depends on
 * was fsynced. Here one scenario runs with efc_slots_trace on and the recorded operations are
 * replayed into a model of the file system: per file its bytes now and at its last fsync
 * (captured from the file at fsync time, and checked against the replayed writes), per
 * directory its entries now and at its last fsync. Rules are checked on the replay, and for
 * every prefix k of the trace three power-cut views are built in a scratch dir and opened:
 *   strict: only what an fsync covered (entries as of their directory's last fsync, bytes as
 *           of their file's last fsync: D2's "drop every write not covered by fsync");
 *   meta:   every namespace operation kept in order, file bytes as of the last fsync (the
 *           "renamed, but the data never reached the disk" case);
 *   torn:   as meta, plus the first half of each file's unsynced appended bytes (a torn write).
 */
#define TR_MAX 1024 /* one scenario: 152 operations */
#define TR_PATH 640
#define M_INO 256
#define M_ENT 64
#define M_PEND 256
#define M_FDS 32
#define MEMO_MAX 1024
#define MAX_CALLS 24

enum pc_view { VIEW_STRICT, VIEW_META, VIEW_TORN, VIEW_COUNT };
static const char *const view_name[VIEW_COUNT] = {"strict", "meta", "torn"};

/* Violations found: a count, the first one, and up to 10 printed unless quiet. */
struct vlog {
    int n, quiet;
    char first[512];
};

struct tr_op {
    enum efc_slots_op_kind kind;
    char path[TR_PATH], path2[TR_PATH];
    int fd, flags, is_dir, rc;
    uint8_t *data; /* write: the bytes; fsync of a file: the file as read right after it */
    size_t bytes;
};

struct trace {
    struct tr_op *ops;
    size_t n;
    int overflow;
};

static void trace_cb(const struct efc_slots_op *op, void *ctx)
{
    struct trace *t = ctx;
    struct tr_op *o;
    void *buf = NULL;
    size_t len = 0;

    if (t->n >= TR_MAX || strlen(op->path) >= TR_PATH ||
        (op->path2 && strlen(op->path2) >= TR_PATH)) {
        t->overflow = 1;
        return;
    }
    o = &t->ops[t->n++];
    memset(o, 0, sizeof(*o));
    o->kind = op->kind;
    snprintf(o->path, sizeof(o->path), "%s", op->path);
    snprintf(o->path2, sizeof(o->path2), "%s", op->path2 ? op->path2 : "");
    o->fd = op->fd;
    o->flags = op->flags;
    o->is_dir = op->is_dir;
    o->rc = op->rc;
    if (op->kind == EFC_SLOTS_OP_WRITE && op->rc == 0 && op->bytes) {
        o->data = efc_malloc(op->bytes);
        if (!o->data) {
            t->overflow = 1;
            return;
        }
        memcpy(o->data, op->data, op->bytes);
        o->bytes = op->bytes;
    }
    if (op->kind == EFC_SLOTS_OP_FSYNC && op->rc == 0 && !op->is_dir) {
        /* what the fsync made durable: the file's bytes right now */
        if (efc_fs_read_all(op->path, 1 << 24, &buf, &len) != EFC_OK)
            t->overflow = 1;
        o->data = buf;
        o->bytes = len;
    }
}

static void trace_free(struct trace *t)
{
    for (size_t i = 0; t->ops && i < t->n; i++)
        efc_free(t->ops[i].data);
    efc_free(t->ops);
    memset(t, 0, sizeof(*t));
}

/* The file system model. ino < 0 for a directory entry. */
struct m_ino {
    uint8_t *cur, *dur;
    size_t cur_len, dur_len;
    int dirty; /* written or truncated since the last fsync */
};
struct m_ent {
    char path[TR_PATH];
    int ino, is_dir;
};
struct m_pend {
    size_t op;
    enum efc_slots_op_kind kind;
    char path[TR_PATH];
};
struct model {
    char top[TR_PATH];        /* parent of the state dir: always there, never traced */
    char state[TR_PATH + 16]; /* <state dir>/ota/state */
    struct m_ino ino[M_INO];
    int n_ino;
    struct m_ent vol[M_ENT], dur[M_ENT]; /* entries now / as of their directory's last fsync */
    int n_vol, n_dur;
    struct m_pend pend[M_PEND]; /* namespace operations not yet covered by a directory fsync */
    int n_pend;
    struct {
        int fd, ino, is_dir;
        size_t off;
        char path[TR_PATH];
    } fds[M_FDS];
    int n_fds;
    struct vlog log;
};

static void vlog_add(struct vlog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vlog_add(struct vlog *l, const char *fmt, ...)
{
    va_list ap;
    char msg[512];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!l->n)
        snprintf(l->first, sizeof(l->first), "%s", msg);
    if (!l->quiet && l->n < 10)
        printf("# violation: %s\n", msg);
    l->n++;
}
#define viol(m, ...) vlog_add(&(m)->log, __VA_ARGS__)

/* Copy a model path (all are < TR_PATH: trace_cb refuses longer ones). */
static void pcpy(char *d, const char *s)
{
    size_t n = strnlen(s, TR_PATH - 1);
    memcpy(d, s, n);
    d[n] = '\0';
}

static void parent_of(const char *p, char *out, size_t n)
{
    const char *sl = strrchr(p, '/');
    snprintf(out, n, "%.*s", sl ? (int)(sl - p) : 0, p);
}

static int is_temp(const char *p)
{
    const char *sl = strrchr(p, '/');
    return strstr(sl ? sl + 1 : p, ".tmp.") != NULL;
}

static int ent_find(const struct m_ent *l, int n, const char *path)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(l[i].path, path))
            return i;
    return -1;
}

static void ent_del(struct m_ent *l, int *n, int i)
{
    l[i] = l[--*n];
}

static int ent_add(struct model *m, struct m_ent *l, int *n, const char *path, int ino, int dir)
{
    if (*n >= M_ENT) {
        viol(m, "model: more than %d entries", M_ENT);
        return -1;
    }
    snprintf(l[*n].path, TR_PATH, "%s", path);
    l[*n].ino = ino;
    l[*n].is_dir = dir;
    return (*n)++;
}

static int ino_new(struct model *m, const uint8_t *p, size_t n)
{
    struct m_ino *i;
    if (m->n_ino >= M_INO) {
        viol(m, "model: more than %d files", M_INO);
        return -1;
    }
    i = &m->ino[m->n_ino];
    memset(i, 0, sizeof(*i));
    i->cur = efc_malloc(n ? n : 1);
    i->dur = efc_malloc(n ? n : 1);
    assert_non_null(i->cur);
    assert_non_null(i->dur);
    if (n) {
        memcpy(i->cur, p, n);
        memcpy(i->dur, p, n);
    }
    i->cur_len = i->dur_len = n;
    return m->n_ino++;
}

static void model_free(struct model *m)
{
    for (int i = 0; i < m->n_ino; i++) {
        efc_free(m->ino[i].cur);
        efc_free(m->ino[i].dur);
    }
    efc_free(m);
}

/* Load the tree at disk (a copy of the state dir taken before the trace) as durable, named as
 * if it were at as. */
static void model_load(struct model *m, const char *disk, const char *as)
{
    DIR *d = opendir(disk);
    struct dirent *e;
    char a[TR_PATH], b[TR_PATH];
    struct stat sb;

    if (!d)
        return;
    ent_add(m, m->vol, &m->n_vol, as, -1, 1);
    ent_add(m, m->dur, &m->n_dur, as, -1, 1);
    while ((e = readdir(d)) != NULL) {
        void *buf = NULL;
        size_t len = 0;
        int ino;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(a, sizeof(a), "%s/%s", disk, e->d_name);
        snprintf(b, sizeof(b), "%s/%s", as, e->d_name);
        assert_int_equal(stat(a, &sb), 0);
        if (S_ISDIR(sb.st_mode)) {
            model_load(m, a, b);
            continue;
        }
        assert_int_equal(efc_fs_read_all(a, 1 << 24, &buf, &len), EFC_OK);
        ino = ino_new(m, buf, len);
        efc_free(buf);
        ent_add(m, m->vol, &m->n_vol, b, ino, 0);
        ent_add(m, m->dur, &m->n_dur, b, ino, 0);
    }
    closedir(d);
}

static void pend_add(struct model *m, size_t op, enum efc_slots_op_kind kind, const char *path)
{
    if (m->n_pend >= M_PEND) {
        viol(m, "model: more than %d pending directory operations", M_PEND);
        return;
    }
    m->pend[m->n_pend].op = op;
    m->pend[m->n_pend].kind = kind;
    snprintf(m->pend[m->n_pend].path, TR_PATH, "%s", path);
    m->n_pend++;
}

static const char *kind_name(enum efc_slots_op_kind k)
{
    switch (k) {
    case EFC_SLOTS_OP_OPEN:
        return "create";
    case EFC_SLOTS_OP_WRITE:
        return "write";
    case EFC_SLOTS_OP_FSYNC:
        return "fsync";
    case EFC_SLOTS_OP_RENAME:
        return "rename";
    case EFC_SLOTS_OP_UNLINK:
        return "unlink";
    case EFC_SLOTS_OP_MKDIR:
        return "mkdir";
    }
    return "?";
}

/* Is every directory from path up to top durable (in the fsynced entries)? */
static int chain_durable(const struct model *m, const char *path)
{
    char p[TR_PATH], q[TR_PATH];
    snprintf(p, sizeof(p), "%s", path);
    while (strcmp(p, m->top) && *p) {
        if (ent_find(m->dur, m->n_dur, p) < 0)
            return 0;
        parent_of(p, q, sizeof(q));
        memcpy(p, q, sizeof(p));
    }
    return 1;
}

/* Rules on a new state about to be renamed into place (cur of ino). */
static void check_state_rename(struct model *m, size_t k, const struct tr_op *o, int ino)
{
    const struct m_ino *f = &m->ino[ino];
    const char *nl = memchr(f->cur, '\n', f->cur_len);
    static const char *const recs[2] = {"\"active\":{\"slot\":\"", "\"previous\":{\"slot\":\""};
    uint8_t d[EFC_SHA256_BYTES];
    char hex[EFC_SHA256_HEX_BYTES], line[16384];
    size_t n1 = nl ? (size_t)(nl - (const char *)f->cur) : 0;

    if (!is_temp(o->path))
        viol(m, "op %zu: the state is replaced by %s, not a temp file", k, o->path);
    if (nl) {
        efc_sha256(f->cur, n1, d);
        efc_sha256_hex(d, hex);
    }
    if (!nl || f->cur_len != n1 + 66 || memcmp(nl + 1, hex, 64) || f->cur[f->cur_len - 1] != '\n')
        viol(m, "op %zu: %s renamed to the state is not a whole state (%zu bytes)", k, o->path,
             f->cur_len);
    if (!nl || n1 >= sizeof(line))
        return;
    memcpy(line, f->cur, n1);
    line[n1] = '\0';
    /* the slots the new state names: their files and entries must already be durable */
    for (int r = 0; r < 2; r++) {
        const char *at = strstr(line, recs[r]);
        char slot_dir[TR_PATH], file[TR_PATH + 32];
        if (!at)
            continue;
        parent_of(m->state, slot_dir, sizeof(slot_dir));
        for (int i = 0; i < 3; i++) {
            static const char *const names[3] = {"artifact", "manifest.json", "model.efm"};
            int v, dd;
            snprintf(file, sizeof(file), "%s/%c/%s", slot_dir, at[strlen(recs[r])], names[i]);
            v = ent_find(m->vol, m->n_vol, file);
            dd = ent_find(m->dur, m->n_dur, file);
            if (v < 0) {
                viol(m, "op %zu: the new state names %s, which does not exist", k, file);
                continue;
            }
            if (m->ino[m->vol[v].ino].dirty ||
                m->ino[m->vol[v].ino].cur_len != m->ino[m->vol[v].ino].dur_len ||
                memcmp(m->ino[m->vol[v].ino].cur, m->ino[m->vol[v].ino].dur,
                       m->ino[m->vol[v].ino].cur_len))
                viol(m, "op %zu: the new state names %s, not fsynced since its last write", k,
                     file);
            if (dd < 0 || m->dur[dd].ino != m->vol[v].ino || !chain_durable(m, file))
                viol(m, "op %zu: the new state names %s, whose directory entry is not fsynced", k,
                     file);
        }
    }
    {
        char dir[TR_PATH];
        parent_of(m->state, dir, sizeof(dir));
        if (!chain_durable(m, dir))
            viol(m, "op %zu: the state is written into %s, whose own entry is not fsynced", k, dir);
    }
}

static int fd_slot(struct model *m, int fd)
{
    for (int i = 0; i < m->n_fds; i++)
        if (m->fds[i].fd == fd)
            return i;
    return -1;
}

/* Apply op k to the model, checking the rules that hold at that op. */
static void model_apply(struct model *m, size_t k, const struct tr_op *o)
{
    char dir[TR_PATH];
    int v, fi;

    if (o->rc < 0)
        return; /* failed: changed nothing */
    switch (o->kind) {
    case EFC_SLOTS_OP_OPEN:
        if ((o->flags & O_ACCMODE) != O_RDONLY && !strcmp(o->path, m->state))
            viol(m, "op %zu: the state file is opened for writing (written in place)", k);
        fi = fd_slot(m, o->rc);
        if (fi < 0) {
            if (m->n_fds >= M_FDS) {
                viol(m, "model: more than %d descriptors", M_FDS);
                return;
            }
            fi = m->n_fds++;
        }
        m->fds[fi].fd = o->rc;
        m->fds[fi].is_dir = (o->flags & O_DIRECTORY) != 0;
        m->fds[fi].off = 0;
        m->fds[fi].ino = -1;
        snprintf(m->fds[fi].path, TR_PATH, "%s", o->path);
        if (m->fds[fi].is_dir)
            return;
        v = ent_find(m->vol, m->n_vol, o->path);
        if (v < 0 && (o->flags & O_CREAT)) {
            int ino = ino_new(m, NULL, 0);
            if (ino < 0 || (v = ent_add(m, m->vol, &m->n_vol, o->path, ino, 0)) < 0)
                return;
            pend_add(m, k, EFC_SLOTS_OP_OPEN, o->path);
        }
        if (v < 0) {
            /* a source file read from outside (the artifact and model to stage) is fine; a
             * file under the state dir that the model lacks means the trace missed something */
            if (!strncmp(o->path, m->state, strlen(m->state) - strlen("ota/state")) ||
                (o->flags & O_ACCMODE) != O_RDONLY)
                viol(m, "op %zu: open of %s, which the model does not have", k, o->path);
            return;
        }
        m->fds[fi].ino = m->vol[v].ino;
        if ((o->flags & O_TRUNC) && m->ino[m->vol[v].ino].cur_len) {
            m->ino[m->vol[v].ino].cur_len = 0;
            m->ino[m->vol[v].ino].dirty = 1;
        }
        return;
    case EFC_SLOTS_OP_WRITE:
    case EFC_SLOTS_OP_FSYNC:
        fi = fd_slot(m, o->fd);
        if (fi < 0 || strcmp(m->fds[fi].path, o->path)) {
            viol(m, "op %zu: %s on fd %d (%s), which the trace did not open", k, kind_name(o->kind),
                 o->fd, o->path);
            return;
        }
        if (o->kind == EFC_SLOTS_OP_FSYNC && m->fds[fi].is_dir) {
            /* the directory's entries as they are now become the durable ones */
            for (int i = m->n_dur - 1; i >= 0; i--) {
                parent_of(m->dur[i].path, dir, sizeof(dir));
                if (!strcmp(dir, o->path))
                    ent_del(m->dur, &m->n_dur, i);
            }
            for (int i = 0; i < m->n_vol; i++) {
                parent_of(m->vol[i].path, dir, sizeof(dir));
                if (!strcmp(dir, o->path))
                    ent_add(m, m->dur, &m->n_dur, m->vol[i].path, m->vol[i].ino, m->vol[i].is_dir);
            }
            for (int i = m->n_pend - 1; i >= 0; i--) {
                parent_of(m->pend[i].path, dir, sizeof(dir));
                if (!strcmp(dir, o->path))
                    m->pend[i] = m->pend[--m->n_pend];
            }
            return;
        }
        if (m->fds[fi].ino < 0) {
            viol(m, "op %zu: %s of %s, not a file", k, kind_name(o->kind), o->path);
            return;
        }
        {
            struct m_ino *f = &m->ino[m->fds[fi].ino];
            if (o->kind == EFC_SLOTS_OP_WRITE) {
                size_t end = m->fds[fi].off + o->bytes;
                uint8_t *p;
                if (!strcmp(o->path, m->state))
                    viol(m, "op %zu: the state file is written in place", k);
                if (end > f->cur_len) {
                    assert_non_null(p = efc_malloc(end));
                    memcpy(p, f->cur, f->cur_len);
                    efc_free(f->cur);
                    f->cur = p;
                    f->cur_len = end;
                }
                memcpy(f->cur + m->fds[fi].off, o->data, o->bytes);
                m->fds[fi].off = end;
                f->dirty = 1;
                return;
            }
            /* the bytes captured at fsync time must be what the replayed writes produced:
             * otherwise the trace missed a write and proves nothing */
            if (o->bytes != f->cur_len || (o->bytes && memcmp(o->data, f->cur, o->bytes)))
                viol(m, "op %zu: %s holds %zu bytes at fsync, the replayed writes %zu", k, o->path,
                     o->bytes, f->cur_len);
            efc_free(f->dur);
            assert_non_null(f->dur = efc_malloc(f->cur_len ? f->cur_len : 1));
            memcpy(f->dur, f->cur, f->cur_len);
            f->dur_len = f->cur_len;
            f->dirty = 0;
        }
        return;
    case EFC_SLOTS_OP_RENAME: {
        char d2[TR_PATH];
        int t;
        v = ent_find(m->vol, m->n_vol, o->path);
        if (v < 0 || m->vol[v].is_dir) {
            viol(m, "op %zu: rename of %s, which the model does not have", k, o->path);
            return;
        }
        parent_of(o->path, dir, sizeof(dir));
        parent_of(o->path2, d2, sizeof(d2));
        if (strcmp(dir, d2))
            viol(m, "op %zu: rename across directories (%s -> %s)", k, o->path, o->path2);
        if (m->ino[m->vol[v].ino].dirty)
            viol(m, "op %zu: %s renamed to %s before its last write was fsynced", k, o->path,
                 o->path2);
        if (!strcmp(o->path2, m->state))
            check_state_rename(m, k, o, m->vol[v].ino);
        if ((t = ent_find(m->vol, m->n_vol, o->path2)) >= 0)
            ent_del(m->vol, &m->n_vol, t);
        v = ent_find(m->vol, m->n_vol, o->path);
        snprintf(m->vol[v].path, TR_PATH, "%s", o->path2);
        pend_add(m, k, EFC_SLOTS_OP_RENAME, o->path2);
        pend_add(m, k, EFC_SLOTS_OP_UNLINK, o->path);
        return;
    }
    case EFC_SLOTS_OP_UNLINK:
        if (!strcmp(o->path, m->state))
            viol(m, "op %zu: the state file is unlinked", k);
        if ((v = ent_find(m->vol, m->n_vol, o->path)) >= 0)
            ent_del(m->vol, &m->n_vol, v);
        pend_add(m, k, EFC_SLOTS_OP_UNLINK, o->path);
        return;
    case EFC_SLOTS_OP_MKDIR:
        ent_add(m, m->vol, &m->n_vol, o->path, -1, 1);
        pend_add(m, k, EFC_SLOTS_OP_MKDIR, o->path);
        return;
    }
}

/* At the return of an API call: every namespace operation on a name that matters (not a temp
 * file) must be covered by an fsync of its directory. */
static void model_call_end(struct model *m, const char *call)
{
    for (int i = 0; i < m->n_pend; i++) {
        char dir[TR_PATH];
        if (is_temp(m->pend[i].path))
            continue;
        parent_of(m->pend[i].path, dir, sizeof(dir));
        viol(m, "op %zu: %s of %s not followed by an fsync of %s before %s returned", m->pend[i].op,
             kind_name(m->pend[i].kind), m->pend[i].path, dir, call);
    }
    m->n_pend = 0; /* reported once */
}

static int ent_cmp(const void *a, const void *b)
{
    return strcmp((*(const struct m_ent *const *)a)->path, (*(const struct m_ent *const *)b)->path);
}

/* The bytes of ino i in view v (out points into the model). */
static void view_bytes(const struct model *m, int i, enum pc_view v, const uint8_t **p, size_t *n)
{
    const struct m_ino *f = &m->ino[i];
    *p = f->dur;
    *n = f->dur_len;
    if (v == VIEW_TORN && f->cur_len > f->dur_len && !memcmp(f->cur, f->dur, f->dur_len)) {
        *p = f->cur;
        *n = f->dur_len + (f->cur_len - f->dur_len) / 2;
    }
}

/* Build view v of the model under out (which stands for m->top), and its digest. */
static void view_build(const struct model *m, enum pc_view v, const char *out, int write,
                       uint8_t digest[EFC_SHA256_BYTES])
{
    const struct m_ent *l = v == VIEW_STRICT ? m->dur : m->vol;
    int n = v == VIEW_STRICT ? m->n_dur : m->n_vol, n_in = 0;
    const struct m_ent *in[M_ENT];
    struct efc_sha256 h;
    size_t top_len = strlen(m->top);
    char dst[2 * TR_PATH];

    for (int i = 0; i < n; i++) {
        char p[TR_PATH], q[TR_PATH];
        int ok = 1;
        /* an entry exists only if every directory above it does, in the same view */
        pcpy(p, l[i].path);
        for (;;) {
            parent_of(p, q, sizeof(q));
            if (!strcmp(q, m->top) || !*q)
                break;
            if (ent_find(l, n, q) < 0) {
                ok = 0;
                break;
            }
            memcpy(p, q, sizeof(p));
        }
        if (ok)
            in[n_in++] = &l[i];
    }
    qsort(in, (size_t)n_in, sizeof(in[0]), ent_cmp);
    efc_sha256_init(&h);
    for (int i = 0; i < n_in; i++) {
        const uint8_t *p = NULL;
        size_t len = 0;
        efc_sha256_update(&h, in[i]->path, strlen(in[i]->path) + 1);
        if (in[i]->is_dir)
            efc_sha256_update(&h, "/", 1);
        else {
            view_bytes(m, in[i]->ino, v, &p, &len);
            efc_sha256_update(&h, &len, sizeof(len));
            efc_sha256_update(&h, p, len);
        }
        if (!write)
            continue;
        snprintf(dst, sizeof(dst), "%s%s", out, in[i]->path + top_len);
        if (in[i]->is_dir)
            assert_int_equal(mkdir(dst, 0700), 0);
        else
            write_raw(dst, p, len);
    }
    efc_sha256_final(&h, digest);
}

/* What efc_slots_open makes of a view. */
struct pc_obs {
    uint8_t digest[EFC_SHA256_BYTES];
    enum efc_status rc;
    struct efc_slots_status st;
    int n_errors, temps, unused_files;
    const char *bad; /* bad_install's reason for active or previous, or NULL */
};

/* The fields a durable state is told apart by. */
static int same_state(const struct efc_slots_status *a, const struct efc_slots_status *b)
{
    return a->has_active == b->has_active && a->active.version == b->active.version &&
           a->active.name == b->active.name && a->trial == b->trial &&
           a->trial_attempts == b->trial_attempts && a->min_version == b->min_version &&
           a->previous.valid == b->previous.valid && a->previous.version == b->previous.version &&
           a->previous.name == b->previous.name && !strcmp(a->trial_tag, b->trial_tag);
}

static void state_str(const struct efc_slots_status *s, char *out, size_t n)
{
    snprintf(out, n, "active %c v%llu%s%s attempts %d, previous %c v%llu, min %llu",
             s->has_active ? s->active.name : '-', (unsigned long long)s->active.version,
             s->trial ? " on trial " : "", s->trial_tag, (int)s->trial_attempts,
             s->previous.valid ? s->previous.name : '-', (unsigned long long)s->previous.version,
             (unsigned long long)s->min_version);
}

struct pc_scenario {
    const char *name;
    char state_dir[TR_PATH], init_copy[TR_PATH];
    struct trace tr;
    size_t bnd[MAX_CALLS];                   /* trace length when call j returned */
    struct efc_slots_status want[MAX_CALLS]; /* the state when call j returned */
    const char *call[MAX_CALLS];
    int n_calls;
};

struct pc_result {
    int rule_viol, sim_viol;
    size_t prefixes, views_opened;
    char first_rule[512], first_sim[512];
};

static struct pc_obs *memo;
static int n_memo;

static void observe(const struct model *m, enum pc_view v, const char *scratch, const char *sd,
                    struct pc_obs *ob)
{
    uint8_t dg[EFC_SHA256_BYTES];
    struct efc_slots *s = NULL;

    view_build(m, v, scratch, 0, dg);
    for (int i = 0; i < n_memo; i++)
        if (!memcmp(memo[i].digest, dg, sizeof(dg))) {
            *ob = memo[i];
            return;
        }
    memset(ob, 0, sizeof(*ob));
    memcpy(ob->digest, dg, sizeof(dg));
    rm_tree(scratch);
    assert_int_equal(mkdir(scratch, 0700), 0);
    view_build(m, v, scratch, 1, dg);
    n_log_errors = 0;
    ob->rc = efc_slots_open(sd, &s);
    ob->n_errors = n_log_errors;
    if (ob->rc == EFC_OK) {
        ob->st = status_of(s);
        efc_slots_close(s);
        ob->temps = temps_total(sd);
        if (ob->st.has_active) {
            ob->bad = bad_install(&ob->st.active);
            ob->unused_files = slot_files(sd, ob->st.active.name == 'a' ? 'b' : 'a');
            if (!ob->bad && ob->st.previous.valid)
                ob->bad = bad_install(&ob->st.previous);
        } else
            ob->unused_files = slot_files(sd, 'a') + slot_files(sd, 'b');
        if (ob->st.previous.valid)
            ob->unused_files -= 3;
    }
    if (n_memo < MEMO_MAX)
        memo[n_memo++] = *ob;
}

/* Replay sc's trace (without op drop, if drop < n) and check the rules and every prefix. */
static void pc_analyse(const struct pc_scenario *sc, size_t drop, int quiet, struct pc_result *r)
{
    struct model *m = efc_calloc(1, sizeof(*m));
    struct vlog sim = {0};
    char scratch[TR_PATH], sd[2 * TR_PATH];
    size_t n = sc->tr.n;
    int at[VIEW_COUNT] = {0}, call = 0;
    uint64_t min_seen[VIEW_COUNT] = {0};

    assert_non_null(m);
    memset(r, 0, sizeof(*r));
    sim.quiet = quiet;
    m->log.quiet = quiet;
    parent_of(sc->state_dir, m->top, sizeof(m->top));
    snprintf(m->state, sizeof(m->state), "%s/ota/state", sc->state_dir);
    if (sc->init_copy[0])
        model_load(m, sc->init_copy, sc->state_dir);
    snprintf(scratch, sizeof(scratch), "%s/pcview", root);
    snprintf(sd, sizeof(sd), "%s%s", scratch, sc->state_dir + strlen(m->top));
    n_memo = 0;
    for (size_t k = 0; k <= n; k++) {
        int boundary = 0;
        if (k > 0 && k - 1 != drop)
            model_apply(m, k - 1, &sc->tr.ops[k - 1]);
        while (call < sc->n_calls && sc->bnd[call] == k) {
            model_call_end(m, sc->call[call]);
            boundary = 1;
            call++;
        }
        /* call: calls returned so far; the state may be any of want[at..call] (call - 1 at a
         * boundary, where the returned call's state must be durable) */
        for (int v = 0; v < VIEW_COUNT; v++) {
            struct pc_obs ob;
            char got[256], want[256];
            int j, hi = boundary || call == sc->n_calls ? call - 1 : call;
            observe(m, v, scratch, sd, &ob);
            r->views_opened++;
            if (ob.rc != EFC_OK) {
                vlog_add(&sim, "prefix %zu (%s view): open: %s", k, view_name[v],
                         efc_status_str(ob.rc));
                continue;
            }
            if (ob.st.fell_back || ob.n_errors || ob.bad || ob.temps || ob.unused_files)
                vlog_add(&sim,
                         "prefix %zu (%s view): fell back %d, %d ERROR logs, %s, %d temp files, "
                         "%d files in the unused slot",
                         k, view_name[v], ob.st.fell_back, ob.n_errors, ob.bad ? ob.bad : "good",
                         ob.temps, ob.unused_files);
            if (ob.st.min_version < min_seen[v])
                vlog_add(&sim, "prefix %zu (%s view): min_version %llu < %llu", k, view_name[v],
                         (unsigned long long)ob.st.min_version, (unsigned long long)min_seen[v]);
            min_seen[v] = ob.st.min_version;
            for (j = boundary ? hi : at[v]; j <= hi; j++)
                if (same_state(&ob.st, &sc->want[j]))
                    break;
            if (j > hi) {
                state_str(&ob.st, got, sizeof(got));
                state_str(&sc->want[hi], want, sizeof(want));
                vlog_add(&sim,
                         "prefix %zu (%s view, in or after %s): durable state is %s; want %s%s", k,
                         view_name[v], sc->call[hi], got, boundary ? "" : "or earlier: ", want);
            } else
                at[v] = j;
        }
        r->prefixes++;
    }
    r->rule_viol = m->log.n;
    r->sim_viol = sim.n;
    snprintf(r->first_rule, sizeof(r->first_rule), "%s", m->log.first);
    snprintf(r->first_sim, sizeof(r->first_sim), "%s", sim.first);
    model_free(m);
}

static void pc_mark(struct pc_scenario *sc, struct efc_slots *s, const char *name)
{
    assert_true(sc->n_calls < MAX_CALLS);
    sc->bnd[sc->n_calls] = sc->tr.n;
    sc->want[sc->n_calls] = status_of(s);
    sc->call[sc->n_calls] = name;
    sc->n_calls++;
}

static void pc_stage(struct pc_scenario *sc, struct efc_slots *s, uint64_t v, const char *name)
{
    struct efc_manifest m;
    char *json = NULL;
    size_t len = 0;
    int var = (int)(v % NVAR);
    assert_int_equal(make_manifest(v, &m, &json, &len), 0);
    assert_int_equal(efc_slots_stage(s, json, len, &m, art_src[var], model_src[var]), EFC_OK);
    efc_free(json);
    pc_mark(sc, s, name);
}

/* Record sc: from state_dir as it is (init_copy: a copy of it, "" if it does not exist), open,
 * then full installs, and optionally a rollback and a revert. */
static void pc_record(struct pc_scenario *sc, int full)
{
    struct efc_slots *s = NULL;
    int ex = -1;

    assert_non_null(sc->tr.ops = efc_calloc(TR_MAX, sizeof(*sc->tr.ops)));
    efc_slots_fault(EFC_SLOTS_FAULT_NONE, 0); /* resets the operation count */
    assert_int_equal(efc_slots_trace(trace_cb, &sc->tr), EFC_OK);
    assert_int_equal(efc_slots_open(sc->state_dir, &s), EFC_OK);
    pc_mark(sc, s, "open");
    for (uint64_t v = full ? 3 : 1; v <= (full ? 5u : 1u); v++) {
        pc_stage(sc, s, v, v == 3 ? "stage v3" : v == 4 ? "stage v4" : "stage");
        assert_int_equal(efc_slots_switch(s, "pc"), EFC_OK);
        pc_mark(sc, s, "switch");
        assert_int_equal(efc_slots_trial_attempt(s, &ex), EFC_OK);
        assert_int_equal(ex, 0);
        pc_mark(sc, s, "trial attempt");
        if (v == 4) {
            assert_int_equal(efc_slots_rollback(s), EFC_OK);
            pc_mark(sc, s, "rollback");
        } else {
            assert_int_equal(efc_slots_commit(s), EFC_OK);
            pc_mark(sc, s, "commit");
        }
    }
    if (full) {
        assert_int_equal(efc_slots_revert(s), EFC_OK);
        pc_mark(sc, s, "revert");
    }
    assert_int_equal(efc_slots_trace(NULL, NULL), EFC_OK);
    /* every counted operation is in the trace (none bypasses the wrapper's report) */
    assert_false(sc->tr.overflow);
    assert_int_equal(sc->tr.n, efc_slots_io_count());
    efc_slots_close(s);
}

/* Index of the n-th (0-based) op of kind in call c whose path contains sub (and is / is not a
 * directory fsync), or SIZE_MAX. */
static size_t pc_find(const struct pc_scenario *sc, int c, enum efc_slots_op_kind kind, int is_dir,
                      const char *sub, int nth)
{
    size_t lo = c ? sc->bnd[c - 1] : 0;
    for (size_t i = lo; i < sc->bnd[c]; i++) {
        const struct tr_op *o = &sc->tr.ops[i];
        if (o->kind == kind && o->rc == 0 && o->is_dir == is_dir && strstr(o->path, sub) &&
            nth-- == 0)
            return i;
    }
    return SIZE_MAX;
}

static int pc_call_index(const struct pc_scenario *sc, const char *name, int nth)
{
    for (int c = 0; c < sc->n_calls; c++)
        if (!strcmp(sc->call[c], name) && nth-- == 0)
            return c;
    return -1;
}

static void test_power_cut(void **state)
{
    struct pc_scenario *sc = efc_calloc(2, sizeof(*sc));
    struct pc_result r;
    int n_ctrl = 0;
    (void)state;

    assert_non_null(sc);
    assert_non_null(memo = efc_calloc(MEMO_MAX, sizeof(*memo)));
    /* 1: the baseline (v2 active, v1 previous): install v3 (its stage first drops v1), then
     * v4 rolled back, then v5 committed and reverted */
    fresh_work();
    sc[0].name = "install + rollback + revert";
    snprintf(sc[0].state_dir, sizeof(sc[0].state_dir), "%s", work);
    snprintf(sc[0].init_copy, sizeof(sc[0].init_copy), "%s/pcinit", root);
    rm_tree(sc[0].init_copy);
    assert_int_equal(copy_tree(work, sc[0].init_copy), 0);
    pc_record(&sc[0], 1);
    /* 2: a fresh device: the state dir does not exist yet; first install */
    sc[1].name = "fresh device, first install";
    snprintf(sc[1].state_dir, sizeof(sc[1].state_dir), "%s/pcfresh", root);
    rm_tree(sc[1].state_dir);
    pc_record(&sc[1], 0);

    for (int i = 0; i < 2; i++) {
        pc_analyse(&sc[i], SIZE_MAX, 0, &r);
        printf("# power cut, %s: trace %zu operations in %d calls; rules: %d violations; "
               "%zu prefixes x %d views = %zu checks (%d distinct views materialised and "
               "opened): %d violations\n",
               sc[i].name, sc[i].tr.n, sc[i].n_calls, r.rule_viol, r.prefixes, VIEW_COUNT,
               r.views_opened, n_memo, r.sim_viol);
        if (r.rule_viol || r.sim_viol)
            fail_msg("%s: %s / %s", sc[i].name, r.first_rule, r.first_sim);
        assert_true(n_memo > 4); /* the views did move through several states */
    }

    /* negative controls: the same trace with one fsync left out must be reported, by the
     * rules and by the power-cut views */
    {
        int sw = pc_call_index(&sc[0], "switch", 0), st3 = pc_call_index(&sc[0], "stage v3", 0);
        char slot_a[TR_PATH];
        struct {
            const char *what;
            size_t op;
        } drop[4];
        snprintf(slot_a, sizeof(slot_a), "%s/ota/a", work);
        assert_true(sw > 0 && st3 > 0);
        drop[0].what = "fsync of the new state's temp file (switch)";
        drop[0].op = pc_find(&sc[0], sw, EFC_SLOTS_OP_FSYNC, 0, "/ota/state.tmp.", 0);
        drop[1].what = "fsync of ota/ after the state rename (switch)";
        drop[1].op = pc_find(&sc[0], sw, EFC_SLOTS_OP_FSYNC, 1, "/ota", 0);
        drop[2].what = "fsync of the slot directory after staging (stage v3)";
        drop[2].op = SIZE_MAX;
        for (int nth = 0; pc_find(&sc[0], st3, EFC_SLOTS_OP_FSYNC, 1, slot_a, nth) != SIZE_MAX;
             nth++)
            drop[2].op = pc_find(&sc[0], st3, EFC_SLOTS_OP_FSYNC, 1, slot_a, nth);
        drop[3].what = "fsync of the staged model.efm (stage v3)";
        drop[3].op = pc_find(&sc[0], st3, EFC_SLOTS_OP_FSYNC, 0, "/ota/a/model.efm", 0);
        for (int i = 0; i < 4; i++) {
            assert_true(drop[i].op != SIZE_MAX);
            pc_analyse(&sc[0], drop[i].op, 1, &r);
            printf("# negative control: without the %s (op %zu): rules %d violations (\"%s\"), "
                   "power cut %d (\"%s\")\n",
                   drop[i].what, drop[i].op, r.rule_viol, r.first_rule, r.sim_viol, r.first_sim);
            if (!r.rule_viol || !r.sim_viol)
                fail_msg("the checker missed the dropped %s", drop[i].what);
            n_ctrl++;
        }
    }
    /* and the fsync that efc_slots_open now does of a state dir it creates (its parent) */
    {
        size_t op = SIZE_MAX;
        for (size_t i = 0; i < sc[1].bnd[0]; i++)
            if (sc[1].tr.ops[i].kind == EFC_SLOTS_OP_FSYNC && sc[1].tr.ops[i].is_dir &&
                !strcmp(sc[1].tr.ops[i].path, root))
                op = i;
        assert_true(op != SIZE_MAX);
        pc_analyse(&sc[1], op, 1, &r);
        printf("# negative control: fresh device without the fsync of the state dir's parent (op "
               "%zu): rules %d violations (\"%s\"), power cut %d (\"%s\")\n",
               op, r.rule_viol, r.first_rule, r.sim_viol, r.first_sim);
        if (!r.rule_viol || !r.sim_viol)
            fail_msg("the checker missed the dropped fsync of the state dir's parent");
        n_ctrl++;
    }
    assert_int_equal(n_ctrl, 5);
    trace_free(&sc[0].tr);
    trace_free(&sc[1].tr);
    efc_free(sc);
    efc_free(memo);
    memo = NULL;
    rm_tree(work);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_happy_revert_rollback),
        cmocka_unit_test(test_trial_exhausted),
        cmocka_unit_test(test_min_version_monotone),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_corrupt_slot_fallback),
        cmocka_unit_test(test_kill_every_k),
        cmocka_unit_test(test_kill_random),
        cmocka_unit_test(test_io_errors_every_k),
        cmocka_unit_test(test_state_damage),
        cmocka_unit_test(test_fault_env),
        cmocka_unit_test(test_power_cut),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
