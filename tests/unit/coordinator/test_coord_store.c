/* test_coord_store.c — the coordinator's SQLite store: round trip of every record, idempotent
 * result insert, job assignment / reassignment on expiry and offline / bounded attempts,
 * resume after reopen, and a crash test: a child writing results is SIGKILLed at random points,
 * the parent reopens, checks PRAGMA integrity_check and that no result is stored twice and
 * every stored result closed its job (one transaction). Seed printed; EFC_SEED overrides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/efc_alloc.h"
#include "coordinator/store.h"

struct fx {
    char dir[64];
    char path[96];
};

static int setup(void **state)
{
    struct fx *f = efc_calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/efc-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/efc.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char p[128];
    const char *sfx[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]);
        unlink(p);
    }
    rmdir(f->dir);
    efc_free(f);
    return 0;
}

/* Returns how many jobs the status released (a device going offline). */
static int32_t status(struct efc_coord_store *s, const char *id, const char *cls, int online)
{
    struct efc_proto_status st;
    int32_t n_rel = -1;
    memset(&st, 0, sizeof(st));
    st.version = 1;
    snprintf(st.device_id, sizeof(st.device_id), "%s", id);
    snprintf(st.hw_class, sizeof(st.hw_class), "%s", cls);
    snprintf(st.isa, sizeof(st.isa), "avx2");
    st.online = online;
    st.cores = 2;
    assert_int_equal(efc_coord_store_device_upsert(s, &st, 1000, &n_rel), EFC_OK);
    return n_rel;
}

static void round_spec(struct efc_coord_round *r, const char *id, int n_pol, int k, int attempts)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->round_id, sizeof(r->round_id), "%s", id);
    snprintf(r->base_sha256, sizeof(r->base_sha256), "%064d", 7);
    r->n_policies = n_pol;
    for (int i = 0; i < n_pol; i++) {
        if (i == 0)
            snprintf(r->policies[i], EFC_PROTO_POLICY_MAX, "fp32");
        else
            snprintf(r->policies[i], EFC_PROTO_POLICY_MAX, "int8(calib=kl,weights=channel,v=%d)",
                     i);
    }
    r->sla.kind = EFC_COORD_SLA_MAX_DROP;
    r->sla.value = 0.01;
    r->objective = EFC_COORD_OBJ_P50;
    r->devices_per_class = k;
    r->max_attempts = attempts;
    r->created_ms = 12345;
}

static struct efc_proto_result result_for(const struct efc_coord_job *j, const char *dev)
{
    struct efc_proto_result r;
    memset(&r, 0, sizeof(r));
    r.version = 1;
    snprintf(r.job_id, sizeof(r.job_id), "%s", j->job_id);
    snprintf(r.round_id, sizeof(r.round_id), "%s", j->round_id);
    snprintf(r.device_id, sizeof(r.device_id), "%s", dev);
    snprintf(r.hw_class, sizeof(r.hw_class), "%s", j->hw_class);
    snprintf(r.policy, sizeof(r.policy), "%s", j->policy);
    snprintf(r.isa, sizeof(r.isa), "avx2");
    snprintf(r.blas_core, sizeof(r.blas_core), "Haswell");
    r.has_labels = 1;
    r.eval_total = 1000;
    r.correct = 901;
    r.base_correct = 903;
    r.both_correct = 899;
    r.base_only = 4;
    r.cand_only = 2;
    r.agree = 990;
    r.calib_samples = 256;
    r.calib_s = 0.125;
    r.p50_ms = 1.25;
    r.p90_ms = 1.5;
    r.p99_ms = 2.75;
    r.batch = 32;
    r.batch_p50_ms = 9.5;
    r.model_bytes = (1ull << 33) + 5; /* > 32 bits survives */
    r.weight_bytes = 60000;
    r.peak_activation_bytes = 4096;
    r.peak_rss_bytes = 12345678;
    return r;
}

static struct efc_coord_class_progress progress1(struct efc_coord_store *s, const char *round)
{
    struct efc_coord_class_progress *p = NULL, out;
    size_t n = 0;
    assert_int_equal(efc_coord_store_round_progress(s, round, &p, &n), EFC_OK);
    assert_int_equal(n, 1);
    out = p[0];
    efc_free(p);
    return out;
}

static void test_round_trip(void **state)
{
    struct fx *f = *state;
    struct efc_coord_store *s = NULL;
    assert_int_equal(efc_coord_store_open(f->path, &s), EFC_OK);
    status(s, "d1", "x86_64-avx2", 1);
    status(s, "d2", "x86_64-avx2", 1);
    struct efc_coord_device dev;
    assert_int_equal(efc_coord_store_device_get(s, "d2", &dev), EFC_OK);
    assert_string_equal(dev.hw_class, "x86_64-avx2");
    assert_int_equal(dev.online, 1);
    assert_int_equal(efc_coord_store_device_get(s, "nope", &dev), EFC_ENOTFOUND);

    char path[64];
    uint64_t bytes = 0;
    assert_int_equal(efc_coord_store_model_put(s, "ab12", "/m/base.efm", 4242,
                                               EFC_COORD_MODEL_BASE), EFC_OK);
    assert_int_equal(efc_coord_store_model_get(s, "ab12", path, sizeof(path), &bytes), EFC_OK);
    assert_string_equal(path, "/m/base.efm");
    assert_int_equal(bytes, 4242);

    struct efc_coord_round r, g;
    round_spec(&r, "r1", 2, 2, 3);
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_OK);
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_EEXIST);
    assert_int_equal(efc_coord_store_round_get(s, "r1", &g), EFC_OK);
    assert_int_equal(g.n_policies, 2);
    assert_string_equal(g.policies[1], r.policies[1]);
    assert_int_equal(g.devices_per_class, 2);
    assert_int_equal(g.sla.kind, EFC_COORD_SLA_MAX_DROP);
    assert_true(g.sla.value == 0.01);
    assert_int_equal(g.objective, EFC_COORD_OBJ_P50);
    assert_int_equal(g.state, EFC_COORD_ROUND_RUNNING);
    struct efc_coord_class_progress p = progress1(s, "r1");
    assert_int_equal(p.pending, 4);
    assert_int_equal(p.live_devices, 2);

    struct efc_coord_job j1, j2, jb;
    assert_int_equal(efc_coord_store_job_assign(s, "d1", 5000, &j1), EFC_OK);
    assert_int_equal(efc_coord_store_job_assign(s, "d1", 5000, &jb), EFC_EBUSY);
    assert_string_equal(jb.job_id, j1.job_id); /* the job to re-send */
    assert_int_equal(efc_coord_store_job_assign(s, "d2", 5000, &j2), EFC_OK);
    assert_string_not_equal(j1.policy, j2.policy); /* slot-major: each policy once first */
    assert_int_equal(j1.attempts, 1);

    struct efc_proto_result res = result_for(&j1, "d1"), *list = NULL;
    size_t n = 0;
    int dup = -1;
    assert_int_equal(efc_coord_store_result_put(s, &res, 6000, &dup), EFC_OK);
    assert_int_equal(dup, 0);
    assert_int_equal(efc_coord_store_results_list(s, "r1", &list, &n), EFC_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(&list[0], &res, sizeof(res));
    efc_free(list);
    assert_int_equal(efc_coord_store_job_get(s, j1.job_id, &jb), EFC_OK);
    assert_int_equal(jb.state, EFC_COORD_JOB_DONE);

    /* d1 is free again; it gets the other policy (never the one it ran). */
    assert_int_equal(efc_coord_store_job_assign(s, "d1", 5000, &jb), EFC_OK);
    assert_string_equal(jb.policy, j2.policy);

    /* A result for an unknown job or with a mismatching class is refused. */
    struct efc_proto_result bad = res;
    snprintf(bad.job_id, sizeof(bad.job_id), "r1.999");
    assert_int_equal(efc_coord_store_result_put(s, &bad, 6000, &dup), EFC_ENOTFOUND);
    bad = result_for(&j2, "d2");
    snprintf(bad.hw_class, sizeof(bad.hw_class), "generic-ref");
    assert_int_equal(efc_coord_store_result_put(s, &bad, 6000, &dup), EFC_EPROTO);

    char pol[EFC_PROTO_POLICY_MAX];
    assert_int_equal(efc_coord_store_selection_put(s, "r1", "x86_64-avx2", "fp32", "{}"), EFC_OK);
    assert_int_equal(efc_coord_store_selection_get(s, "r1", "x86_64-avx2", pol, sizeof(pol)),
                     EFC_OK);
    assert_string_equal(pol, "fp32");
    assert_int_equal(efc_coord_store_round_finish(s, "r1"), EFC_OK);
    assert_int_equal(efc_coord_store_check(s), EFC_OK);
    efc_coord_store_close(s);
}

static void test_idempotent_result(void **state)
{
    struct fx *f = *state;
    struct efc_coord_store *s = NULL;
    assert_int_equal(efc_coord_store_open(f->path, &s), EFC_OK);
    status(s, "d1", "c", 1);
    struct efc_coord_round r;
    round_spec(&r, "r2", 1, 1, 3);
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_OK);
    struct efc_coord_job j;
    assert_int_equal(efc_coord_store_job_assign(s, "d1", 5000, &j), EFC_OK);
    struct efc_proto_result res = result_for(&j, "d1"), *list = NULL;
    int dup = -1;
    assert_int_equal(efc_coord_store_result_put(s, &res, 1, &dup), EFC_OK);
    assert_int_equal(dup, 0);
    /* Replays, even with different contents, change nothing. */
    for (int i = 0; i < 3; i++) {
        res.correct = 1 + i;
        assert_int_equal(efc_coord_store_result_put(s, &res, 2, &dup), EFC_OK);
        assert_int_equal(dup, 1);
    }
    size_t n = 0;
    assert_int_equal(efc_coord_store_results_list(s, "r2", &list, &n), EFC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(list[0].correct, 901);
    efc_free(list);
    struct efc_coord_class_progress p = progress1(s, "r2");
    assert_int_equal(p.done, 1);
    efc_coord_store_close(s);
}

/* Rows of results as another connection sees them (committed only). */
static int committed_results(const char *path)
{
    sqlite3 *raw = NULL;
    sqlite3_stmt *q = NULL;
    int n = -1;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(raw, "SELECT count(*) FROM results", -1, &q, NULL),
                     SQLITE_OK);
    if (sqlite3_step(q) == SQLITE_ROW)
        n = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(raw);
    return n;
}

/* Group commit: a batch's writes are invisible to others until batch_commit, a failed operation
 * inside it rolls back alone, duplicates are still recognised, and reads see the batch. */
static void test_batch(void **state)
{
    struct fx *f = *state;
    struct efc_coord_store *s = NULL;
    struct efc_coord_round r;
    struct efc_coord_job j1, j2, k;
    int dup = -1;
    assert_int_equal(efc_coord_store_open(f->path, &s), EFC_OK);
    status(s, "d1", "c", 1);
    status(s, "d2", "c", 1);
    round_spec(&r, "rb", 2, 1, 3);
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_OK);
    assert_int_equal(efc_coord_store_batch_commit(s), EFC_EINVAL); /* none open */
    assert_int_equal(efc_coord_store_batch_begin(s), EFC_OK);
    assert_int_equal(efc_coord_store_batch_begin(s), EFC_EINVAL); /* no nesting */
    assert_int_equal(efc_coord_store_job_assign(s, "d1", 5000, &j1), EFC_OK);
    assert_int_equal(efc_coord_store_job_assign(s, "d2", 5000, &j2), EFC_OK);
    assert_string_not_equal(j1.job_id, j2.job_id); /* the second saw the first's assignment */
    struct efc_proto_result res = result_for(&j1, "d1");
    assert_int_equal(efc_coord_store_result_put(s, &res, 1, &dup), EFC_OK);
    assert_int_equal(dup, 0);
    assert_int_equal(efc_coord_store_result_put(s, &res, 2, &dup), EFC_OK);
    assert_int_equal(dup, 1);
    struct efc_proto_result bad = res;
    snprintf(bad.job_id, sizeof(bad.job_id), "rb.999");
    assert_int_equal(efc_coord_store_result_put(s, &bad, 3, &dup), EFC_ENOTFOUND);
    snprintf(bad.job_id, sizeof(bad.job_id), "%s", j2.job_id); /* d2's job, wrong policy */
    snprintf(bad.policy, sizeof(bad.policy), "fp16");
    assert_int_equal(efc_coord_store_result_put(s, &bad, 3, &dup), EFC_EPROTO);
    assert_int_equal(committed_results(f->path), 0); /* nothing durable yet */
    assert_int_equal(efc_coord_store_job_get(s, j1.job_id, &k), EFC_OK);
    assert_int_equal(k.state, EFC_COORD_JOB_DONE); /* the batch reads its own writes */
    assert_int_equal(efc_coord_store_batch_commit(s), EFC_OK);
    assert_int_equal(committed_results(f->path), 1);
    assert_int_equal(efc_coord_store_job_get(s, j2.job_id, &k), EFC_OK);
    assert_int_equal(k.state, EFC_COORD_JOB_ASSIGNED); /* the failed put left it alone */
    /* An empty batch commits; outside a batch, operations commit on their own again. */
    assert_int_equal(efc_coord_store_batch_begin(s), EFC_OK);
    assert_int_equal(efc_coord_store_batch_commit(s), EFC_OK);
    res = result_for(&j2, "d2");
    assert_int_equal(efc_coord_store_result_put(s, &res, 4, &dup), EFC_OK);
    assert_int_equal(committed_results(f->path), 2);
    efc_coord_store_close(s);
}

static void test_reassign_on_expiry(void **state)
{
    struct fx *f = *state;
    struct efc_coord_store *s = NULL;
    assert_int_equal(efc_coord_store_open(f->path, &s), EFC_OK);
    status(s, "d1", "c", 1);
    status(s, "d2", "c", 1);
    status(s, "d3", "c", 1);
    struct efc_coord_round r;
    round_spec(&r, "r3", 1, 1, 2); /* one job, two attempts */
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_OK);
    struct efc_coord_job j, k;
    int32_t n_exp = -1;
    assert_int_equal(efc_coord_store_job_assign(s, "d1", 1000, &j), EFC_OK);
    assert_int_equal(efc_coord_store_job_assign(s, "d2", 1000, &k), EFC_ENOTFOUND);
    assert_int_equal(efc_coord_store_jobs_expire(s, 999, &n_exp), EFC_OK);
    assert_int_equal(n_exp, 0);
    assert_int_equal(efc_coord_store_jobs_expire(s, 1001, &n_exp), EFC_OK);
    assert_int_equal(n_exp, 1);
    assert_int_equal(efc_coord_store_job_get(s, j.job_id, &k), EFC_OK);
    assert_int_equal(k.state, EFC_COORD_JOB_PENDING);
    assert_string_equal(k.device_id, "");
    /* Another device of the class takes it: attempt 2. */
    assert_int_equal(efc_coord_store_job_assign(s, "d2", 3000, &k), EFC_OK);
    assert_string_equal(k.job_id, j.job_id);
    assert_int_equal(k.attempts, 2);
    /* d2 goes offline: attempts spent -> expired (terminal), d3 gets nothing. */
    assert_int_equal(status(s, "d2", "c", 0), 1);
    assert_int_equal(efc_coord_store_job_get(s, j.job_id, &k), EFC_OK);
    assert_int_equal(k.state, EFC_COORD_JOB_EXPIRED);
    assert_int_equal(status(s, "d2", "c", 0), 0); /* the retained status again: nothing */
    assert_int_equal(efc_coord_store_job_assign(s, "d3", 3000, &k), EFC_ENOTFOUND);
    assert_int_equal(efc_coord_store_job_assign(s, "d2", 3000, &k), EFC_ENOTFOUND); /* offline */
    struct efc_coord_class_progress p = progress1(s, "r3");
    assert_int_equal(p.expired, 1);
    assert_int_equal(p.live_devices, 2);
    /* A late result from d1 still counts and closes the job. */
    struct efc_proto_result res = result_for(&j, "d1");
    int dup = -1;
    assert_int_equal(efc_coord_store_result_put(s, &res, 4000, &dup), EFC_OK);
    assert_int_equal(dup, 0);
    assert_int_equal(efc_coord_store_job_get(s, j.job_id, &k), EFC_OK);
    assert_int_equal(k.state, EFC_COORD_JOB_DONE);
    /* Offline release with attempts left: back to pending. */
    round_spec(&r, "r4", 1, 1, 3);
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_OK);
    assert_int_equal(efc_coord_store_job_assign(s, "d3", 9000, &j), EFC_OK);
    assert_int_equal(efc_coord_store_job_release(s, "d3"), EFC_OK);
    assert_int_equal(efc_coord_store_job_get(s, j.job_id, &k), EFC_OK);
    assert_int_equal(k.state, EFC_COORD_JOB_PENDING);
    efc_coord_store_close(s);
}

static void test_resume_after_reopen(void **state)
{
    struct fx *f = *state;
    struct efc_coord_store *s = NULL;
    assert_int_equal(efc_coord_store_open(f->path, &s), EFC_OK);
    status(s, "d1", "c", 1);
    struct efc_coord_round r;
    round_spec(&r, "r5", 3, 1, 3);
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_OK);
    struct efc_coord_job j;
    assert_int_equal(efc_coord_store_job_assign(s, "d1", 777, &j), EFC_OK);
    efc_coord_store_close(s);

    assert_int_equal(efc_coord_store_open(f->path, &s), EFC_OK);
    char(*ids)[EFC_PROTO_ID_MAX] = NULL;
    size_t n = 0;
    assert_int_equal(efc_coord_store_rounds_running(s, &ids, &n), EFC_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "r5");
    efc_free(ids);
    struct efc_coord_round g;
    assert_int_equal(efc_coord_store_round_get(s, "r5", &g), EFC_OK);
    assert_int_equal(g.n_policies, 3);
    struct efc_coord_job k;
    /* The assignment survived: the device is still busy with the same job and deadline. */
    assert_int_equal(efc_coord_store_job_assign(s, "d1", 999, &k), EFC_EBUSY);
    assert_string_equal(k.job_id, j.job_id);
    assert_int_equal(k.deadline_ms, 777);
    /* A new class appearing mid-round gets its jobs planned. */
    status(s, "e1", "other", 1);
    int32_t made = -1;
    assert_int_equal(efc_coord_store_round_plan_class(s, "r5", "other", &made), EFC_OK);
    assert_int_equal(made, 3);
    assert_int_equal(efc_coord_store_round_plan_class(s, "r5", "other", &made), EFC_OK);
    assert_int_equal(made, 0);
    efc_coord_store_close(s);
}

/* ---- crash test ------------------------------------------------------------------------- */

#define CRASH_POL 50
#define CRASH_K 4
#define CRASH_JOBS (CRASH_POL * CRASH_K)

/* Job n (1-based) of round "rc": planned policy-major, slot-minor (store.c plan order). */
static void crash_writer(const char *path)
{
    struct efc_coord_store *s = NULL;
    if (efc_coord_store_open(path, &s) != EFC_OK)
        _exit(2);
    for (int n = 1; n <= CRASH_JOBS; n++) {
        struct efc_coord_job j;
        char id[EFC_PROTO_ID_MAX], dev[8];
        snprintf(id, sizeof(id), "rc.%d", n);
        if (efc_coord_store_job_get(s, id, &j) != EFC_OK)
            _exit(3);
        snprintf(dev, sizeof(dev), "d%d", (n - 1) % CRASH_K);
        struct efc_proto_result r = result_for(&j, dev);
        int dup = 0;
        if (efc_coord_store_result_put(s, &r, n, &dup) != EFC_OK)
            _exit(4);
    }
    efc_coord_store_close(s);
    _exit(0);
}

static size_t crash_check(const char *path)
{
    struct efc_coord_store *s = NULL;
    struct efc_proto_result *list = NULL;
    size_t n = 0;
    assert_int_equal(efc_coord_store_open(path, &s), EFC_OK);
    assert_int_equal(efc_coord_store_check(s), EFC_OK);
    assert_int_equal(efc_coord_store_results_list(s, "rc", &list, &n), EFC_OK);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < i; k++)
            assert_false(strcmp(list[i].job_id, list[k].job_id) == 0 &&
                         strcmp(list[i].device_id, list[k].device_id) == 0);
        struct efc_coord_job j;
        assert_int_equal(efc_coord_store_job_get(s, list[i].job_id, &j), EFC_OK);
        assert_int_equal(j.state, EFC_COORD_JOB_DONE); /* same transaction as the insert */
    }
    struct efc_coord_class_progress p = progress1(s, "rc");
    assert_int_equal((size_t)p.done, n);
    assert_int_equal(p.pending, CRASH_JOBS - (int)n);
    efc_free(list);
    efc_coord_store_close(s);
    return n;
}

/* A version-1 database (before the assignment indexes and results.sparse_layers) is migrated
 * to the current version at open, keeping its data: a result stored before v4 reads
 * sparse_layers 0 (the column's default), and new results keep theirs. */
static void test_migrate_v1(void **state)
{
    char dir[] = "/tmp/efc-test-migrate-XXXXXX", db[128];
    struct efc_coord_store *s = NULL;
    sqlite3 *raw = NULL;
    sqlite3_stmt *q = NULL;
    struct efc_proto_status st = {.version = EFC_PROTO_VERSION, .online = 1};
    struct efc_coord_device dev;
    struct efc_coord_round r;
    struct efc_coord_job j1, j2;
    struct efc_proto_result res1, res2, *list = NULL;
    size_t n = 0;
    int dup = -1;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof(db), "%s/c.db", dir);
    assert_int_equal(efc_coord_store_open(db, &s), EFC_OK);
    snprintf(st.device_id, sizeof(st.device_id), "old-device");
    snprintf(st.hw_class, sizeof(st.hw_class), "generic-ref");
    assert_int_equal(efc_coord_store_device_upsert(s, &st, 1, NULL), EFC_OK);
    status(s, "m1", "x86_64-avx2", 1);
    round_spec(&r, "rm", 2, 1, 3);
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_OK);
    assert_int_equal(efc_coord_store_job_assign(s, "m1", 5000, &j1), EFC_OK);
    res1 = result_for(&j1, "m1");
    res1.sparse_layers = 3; /* stored at v4, dropped with the column below */
    assert_int_equal(efc_coord_store_result_put(s, &res1, 6000, &dup), EFC_OK);
    assert_int_equal(efc_coord_store_results_list(s, "rm", &list, &n), EFC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(list[0].sparse_layers, 3);
    efc_free(list);
    efc_coord_store_close(s);
    /* make it a v1 database */
    assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw, "DROP INDEX results_device; DROP INDEX jobs_device_round;"
                                       "DROP INDEX jobs_pick;"
                                       "CREATE INDEX jobs_class ON jobs(round_id, class, state);"
                                       "ALTER TABLE results DROP COLUMN sparse_layers;"
                                       "DROP TABLE round_artifacts; DROP TABLE ota_counter;"
                                       "DROP TABLE rollout_devices; DROP TABLE rollouts;"
                                       "DROP TABLE device_models;"
                                       "PRAGMA user_version = 1", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);
    assert_int_equal(efc_coord_store_open(db, &s), EFC_OK); /* migrates */
    assert_int_equal(efc_coord_store_device_get(s, "old-device", &dev), EFC_OK);
    assert_int_equal(efc_coord_store_check(s), EFC_OK);
    /* the v1 row: every field kept, sparse_layers 0 */
    assert_int_equal(efc_coord_store_results_list(s, "rm", &list, &n), EFC_OK);
    assert_int_equal(n, 1);
    res1.sparse_layers = 0;
    assert_memory_equal(&list[0], &res1, sizeof(res1));
    efc_free(list);
    /* a result after the migration keeps its count */
    assert_int_equal(efc_coord_store_job_assign(s, "m1", 7000, &j2), EFC_OK);
    res2 = result_for(&j2, "m1");
    res2.sparse_layers = 65536;
    assert_int_equal(efc_coord_store_result_put(s, &res2, 8000, &dup), EFC_OK);
    assert_int_equal(efc_coord_store_results_list(s, "rm", &list, &n), EFC_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(&list[1], &res2, sizeof(res2));
    efc_free(list);
    efc_coord_store_close(s);
    assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(raw, "SELECT (SELECT count(*) FROM sqlite_master WHERE "
                                             "name IN ('results_device','jobs_device_round','jobs_pick')),"
                                             " (SELECT user_version FROM pragma_user_version),"
                                             " (SELECT dflt_value || ' ' || \"notnull\" FROM"
                                             "  pragma_table_info('results') WHERE"
                                             "  name = 'sparse_layers')",
                                        -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 3);
    assert_int_equal(sqlite3_column_int(q, 1), EFC_COORD_SCHEMA_VERSION);
    assert_int_equal(EFC_COORD_SCHEMA_VERSION, 5);
    assert_string_equal((const char *)sqlite3_column_text(q, 2), "0 1");
    sqlite3_finalize(q);
    sqlite3_close(raw);
    {
        char p[160];
        const char *sfx[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof(p), "%s%s", db, sfx[i]);
            unlink(p);
        }
        rmdir(dir);
    }
}

static void test_crash_sigkill(void **state)
{
    struct fx *f = *state;
    struct efc_coord_store *s = NULL;
    const char *env = getenv("EFC_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    printf("crash test seed %u (EFC_SEED)\n", seed);
    srand(seed);

    assert_int_equal(efc_coord_store_open(f->path, &s), EFC_OK);
    for (int d = 0; d < CRASH_K; d++) {
        char id[8];
        snprintf(id, sizeof(id), "d%d", d);
        status(s, id, "c", 1);
    }
    struct efc_coord_round r;
    round_spec(&r, "rc", CRASH_POL, CRASH_K, 3);
    assert_int_equal(efc_coord_store_round_create(s, &r), EFC_OK);
    efc_coord_store_close(s);

    /* Kill points: uniform in 0..20 ms after fork (a full run takes tens of ms), so kills land
     * before open, inside transactions and between them; later children replay duplicates. */
    size_t prev = 0;
    int kills = 0;
    for (int it = 0; it < 25; it++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            crash_writer(f->path);
        usleep((useconds_t)(rand() % 20000));
        kill(pid, SIGKILL);
        int wst = 0;
        assert_int_equal(waitpid(pid, &wst, 0), pid);
        if (WIFSIGNALED(wst))
            kills++;
        else
            assert_int_equal(WEXITSTATUS(wst), 0);
        size_t n = crash_check(f->path);
        assert_true(n >= prev); /* committed results never vanish */
        prev = n;
    }
    /* Finish: one uninterrupted run stores the rest, replays report duplicates. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        crash_writer(f->path);
    int wst = 0;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    assert_int_equal(crash_check(f->path), CRASH_JOBS);
    printf("crash test: %d SIGKILLs (%zu results committed before the last), %d results "
           "exactly once\n", kills, prev, CRASH_JOBS);
    assert_true(kills > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reassign_on_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_after_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_sigkill, setup, teardown),
        cmocka_unit_test(test_migrate_v1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
