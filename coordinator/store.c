/* store.c — SQLite store of the coordinator. Schema and state machine: docs/coordinator.md.
 * Every write runs inside BEGIN IMMEDIATE ... COMMIT, so a crash leaves the state of the last
 * COMMIT; the result insert and the job transition it causes share one transaction. */
#include "coordinator/store.h"

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"
#include "coordinator/store_int.h"

static const char *const SCHEMA_V1 =
    "CREATE TABLE devices("
    "  id TEXT PRIMARY KEY, class TEXT NOT NULL, isa TEXT NOT NULL,"
    "  online INTEGER NOT NULL, status TEXT NOT NULL, last_seen INTEGER NOT NULL);"
    "CREATE INDEX devices_class ON devices(class, online);"
    "CREATE TABLE models("
    "  sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, bytes INTEGER NOT NULL,"
    "  role TEXT NOT NULL CHECK(role IN ('base','candidate')));"
    "CREATE TABLE rounds("
    "  id TEXT PRIMARY KEY, base_sha256 TEXT NOT NULL,"
    "  sla_kind TEXT NOT NULL CHECK(sla_kind IN ('absolute','max_drop')),"
    "  sla_value REAL NOT NULL CHECK(sla_value BETWEEN 0 AND 1),"
    "  objective TEXT NOT NULL CHECK(objective IN ('bytes','p50')),"
    "  devices_per_class INTEGER NOT NULL CHECK(devices_per_class >= 1),"
    "  max_attempts INTEGER NOT NULL CHECK(max_attempts >= 1),"
    "  state TEXT NOT NULL CHECK(state IN ('running','done')),"
    "  created INTEGER NOT NULL, next_job INTEGER NOT NULL DEFAULT 1);"
    "CREATE TABLE round_policies("
    "  round_id TEXT NOT NULL REFERENCES rounds(id), idx INTEGER NOT NULL,"
    "  policy TEXT NOT NULL, PRIMARY KEY(round_id, idx), UNIQUE(round_id, policy));"
    "CREATE TABLE jobs("
    "  job_id TEXT PRIMARY KEY, round_id TEXT NOT NULL REFERENCES rounds(id),"
    "  class TEXT NOT NULL, policy_idx INTEGER NOT NULL, policy TEXT NOT NULL,"
    "  slot INTEGER NOT NULL, device_id TEXT,"
    "  state TEXT NOT NULL CHECK(state IN ('pending','assigned','done','failed','expired')),"
    "  deadline INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE(round_id, class, policy_idx, slot),"
    "  FOREIGN KEY(round_id, policy_idx) REFERENCES round_policies(round_id, idx));"
    "CREATE INDEX jobs_class ON jobs(round_id, class, state);"
    "CREATE INDEX jobs_device ON jobs(device_id, state);"
    "CREATE INDEX jobs_deadline ON jobs(state, deadline);"
    "CREATE TABLE results("
    "  id INTEGER PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(job_id),"
    "  device_id TEXT NOT NULL, round_id TEXT NOT NULL REFERENCES rounds(id),"
    "  version INTEGER NOT NULL, class TEXT NOT NULL, policy TEXT NOT NULL,"
    "  status INTEGER NOT NULL, error TEXT NOT NULL, isa TEXT NOT NULL, blas_core TEXT NOT NULL,"
    "  has_labels INTEGER NOT NULL, eval_total INTEGER NOT NULL, correct INTEGER NOT NULL,"
    "  base_correct INTEGER NOT NULL, both_correct INTEGER NOT NULL,"
    "  base_only INTEGER NOT NULL, cand_only INTEGER NOT NULL, agree INTEGER NOT NULL,"
    "  calib_samples INTEGER NOT NULL, calib_s REAL NOT NULL, p50_ms REAL NOT NULL,"
    "  p90_ms REAL NOT NULL, p99_ms REAL NOT NULL, batch INTEGER NOT NULL,"
    "  batch_p50_ms REAL NOT NULL, model_bytes INTEGER NOT NULL, weight_bytes INTEGER NOT NULL,"
    "  peak_activation_bytes INTEGER NOT NULL, peak_rss_bytes INTEGER NOT NULL,"
    "  received INTEGER NOT NULL, UNIQUE(job_id, device_id));"
    "CREATE INDEX results_round ON results(round_id, class, policy);"
    "CREATE TABLE selections("
    "  round_id TEXT NOT NULL REFERENCES rounds(id), class TEXT NOT NULL, policy TEXT,"
    "  report TEXT NOT NULL, PRIMARY KEY(round_id, class));";

/* Result columns, in struct efc_proto_result order (shared by INSERT and SELECT);
 * sparse_layers comes from the v4 migration. */
#define RESULT_COLS                                                                          \
    "version, job_id, round_id, device_id, class, policy, status, error, isa, blas_core,"     \
    " has_labels, eval_total, correct, base_correct, both_correct, base_only, cand_only,"     \
    " agree, calib_samples, calib_s, p50_ms, p90_ms, p99_ms, batch, batch_p50_ms,"            \
    " model_bytes, weight_bytes, peak_activation_bytes, peak_rss_bytes, sparse_layers"
#define RESULT_N_COLS 30

static const char *const JOB_STATE[] = {"pending", "assigned", "done", "failed", "expired"};

const char *efc_coord_job_state_str(enum efc_coord_job_state st)
{
    return (unsigned)st < 5 ? JOB_STATE[st] : "?";
}

static enum efc_coord_job_state job_state_parse(const char *s)
{
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, JOB_STATE[i]) == 0)
            return (enum efc_coord_job_state)i;
    return EFC_COORD_JOB_EXPIRED;
}

/* Translate an SQLite failure: efc_status + detail with sqlite3_errmsg + one log line. */
static enum efc_status db_err(struct efc_coord_store *s, int rc, const char *what)
{
    enum efc_status st;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        st = EFC_EBUSY;
        break;
    case SQLITE_NOMEM:
        st = EFC_ENOMEM;
        break;
    case SQLITE_FULL:
        st = EFC_ENOSPC;
        break;
    case SQLITE_CONSTRAINT:
        st = EFC_EPROTO;
        break;
    default:
        st = EFC_EIO;
    }
    const char *msg = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    efc_log(EFC_LOG_WARN, "store", "%s: sqlite rc=%d %s", what, rc, msg);
    return efc_errf(st, "store: %s: %s (sqlite rc %d)", what, msg, rc);
}

static enum efc_status exec(struct efc_coord_store *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? EFC_OK : db_err(s, rc, what);
}

/* One operation's transaction. Inside a batch it is a savepoint of the batch's transaction
 * (begun here at the first write), so a failed operation rolls back alone and nothing is
 * durable before efc_coord_store_batch_commit. */
static enum efc_status begin(struct efc_coord_store *s)
{
    if (!s->batch)
        return exec(s, "BEGIN IMMEDIATE", "begin");
    if (!s->in_tx) {
        enum efc_status e = exec(s, "BEGIN IMMEDIATE", "begin batch");
        if (e != EFC_OK)
            return e;
        s->in_tx = 1;
    }
    return exec(s, "SAVEPOINT op", "savepoint");
}

static enum efc_status commit(struct efc_coord_store *s)
{
    return exec(s, s->batch ? "RELEASE op" : "COMMIT", "commit");
}

static void rollback(struct efc_coord_store *s)
{
    if (sqlite3_get_autocommit(s->db))
        return;
    sqlite3_exec(s->db, s->batch ? "ROLLBACK TO op; RELEASE op" : "ROLLBACK", NULL, NULL, NULL);
}

enum efc_status efc_coord_store_batch_begin(struct efc_coord_store *s)
{
    if (s->batch)
        return efc_errf(EFC_EINVAL, "store: batch already open");
    s->batch = 1;
    s->in_tx = 0;
    return EFC_OK;
}

enum efc_status efc_coord_store_batch_commit(struct efc_coord_store *s)
{
    enum efc_status e = EFC_OK;
    if (!s->batch)
        return efc_errf(EFC_EINVAL, "store: no batch open");
    if (s->in_tx && (e = exec(s, "COMMIT", "commit batch")) != EFC_OK &&
        !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->batch = 0;
    s->in_tx = 0;
    return e;
}

static enum efc_status prep(struct efc_coord_store *s, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? EFC_OK : db_err(s, rc, "prepare");
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

/* Step a statement that returns no row (or whose rows are ignored). */
static enum efc_status step_done(struct efc_coord_store *s, sqlite3_stmt *st, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    return rc == SQLITE_DONE ? EFC_OK : db_err(s, rc, what);
}

static void col_text(sqlite3_stmt *st, int i, char *dst, size_t len)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, len, "%s", t ? (const char *)t : "");
}

/* The same helpers for the other tables' files (store_int.h). */
enum efc_status efc_coord_db_err(struct efc_coord_store *s, int rc, const char *what)
{
    return db_err(s, rc, what);
}
enum efc_status efc_coord_db_begin(struct efc_coord_store *s)
{
    return begin(s);
}
enum efc_status efc_coord_db_commit(struct efc_coord_store *s)
{
    return commit(s);
}
void efc_coord_db_rollback(struct efc_coord_store *s)
{
    rollback(s);
}
enum efc_status efc_coord_db_prep(struct efc_coord_store *s, const char *sql, sqlite3_stmt **st)
{
    return prep(s, sql, st);
}
enum efc_status efc_coord_db_step_done(struct efc_coord_store *s, sqlite3_stmt *st,
                                       const char *what)
{
    return step_done(s, st, what);
}
void efc_coord_db_col_text(sqlite3_stmt *st, int i, char *dst, size_t len)
{
    col_text(st, i, dst, len);
}

/* ---- open / schema ---------------------------------------------------------------------- */

static enum efc_status user_version(struct efc_coord_store *s, int *v)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = prep(s, "PRAGMA user_version", &st);
    if (e != EFC_OK)
        return e;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int(st, 0);
    else
        e = db_err(s, rc, "user_version");
    sqlite3_finalize(st);
    return e;
}

static enum efc_status migrate(struct efc_coord_store *s)
{
    int v = 0;
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        return e;
    if ((e = user_version(s, &v)) != EFC_OK)
        goto fail;
    if (v > EFC_COORD_SCHEMA_VERSION) {
        e = efc_errf(EFC_EVERSION, "store: schema version %d is newer than this build (%d)", v,
                     EFC_COORD_SCHEMA_VERSION);
        goto fail;
    }
    if (v < 1) {
        if ((e = exec(s, SCHEMA_V1, "create schema v1")) != EFC_OK)
            goto fail;
        if ((e = exec(s, "PRAGMA user_version = 1", "user_version")) != EFC_OK)
            goto fail;
    }
    if (v < 2) {
        /* v2: indexes for job assignment, which asks per candidate job whether this device
         * already has a job or a result for (round, policy); without them every candidate
         * scanned the round's results: 19 assignments/s with 1000 devices (bench_store) */
        if ((e = exec(s,
                      "CREATE INDEX results_device ON results(device_id, round_id, policy);"
                      "CREATE INDEX jobs_device_round ON jobs(device_id, round_id, policy_idx);"
                      "PRAGMA user_version = 2",
                      "migrate schema to v2")) != EFC_OK)
            goto fail;
    }
    if (v < 3) {
        /* v3: job assignment walks one round's pending jobs of a class in (slot, policy) order
         * and stops at the first this device may take; this index serves both the filter and
         * the order (it replaces jobs_class, its prefix). Before: a sort of every pending job
         * of the class per assignment, 68 % of the coordinator's time with 1000 agents. */
        if ((e = exec(s,
                      "CREATE INDEX jobs_pick ON jobs(round_id, class, state, slot, policy_idx);"
                      "DROP INDEX IF EXISTS jobs_class;"
                      "PRAGMA user_version = 3",
                      "migrate schema to v3")) != EFC_OK)
            goto fail;
    }
    if (v < 4) {
        /* v4: results carry sparse_layers (the candidate's layers that ran a sparse kernel,
         * an optional result field); rows stored before it read 0, as a result without the
         * field decodes. */
        if ((e = exec(s,
                      "ALTER TABLE results ADD COLUMN sparse_layers INTEGER NOT NULL DEFAULT 0;"
                      "PRAGMA user_version = 4",
                      "migrate schema to v4")) != EFC_OK)
            goto fail;
    }
    if (v < 5) {
        /* v5: OTA rollouts (rollout_store.c, docs/ota.md): the artifact of each policy of a
         * round, the manifest version counter, rollouts, their devices, and what each
         * device runs. */
        if ((e = exec(s, EFC_COORD_SCHEMA_V5, "migrate schema to v5")) != EFC_OK)
            goto fail;
    }
    /* Future migrations: if (v < 6) { ...; PRAGMA user_version = 6; } */
    return commit(s);
fail:
    rollback(s);
    return e;
}

enum efc_status efc_coord_store_open(const char *path, struct efc_coord_store **out)
{
    enum efc_status e;
    *out = NULL;
    struct efc_coord_store *s = efc_calloc(1, sizeof(*s));
    if (!s)
        return efc_errf(EFC_ENOMEM, "store: open %s", path);
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        e = db_err(s, rc, path);
        goto fail;
    }
    sqlite3_busy_timeout(s->db, EFC_COORD_BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(s->db, 1);
    /* journal_mode returns a row; "wal" must come back (fails on e.g. a read-only medium). */
    sqlite3_stmt *st = NULL;
    if ((e = prep(s, "PRAGMA journal_mode=WAL", &st)) != EFC_OK)
        goto fail;
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW || !sqlite3_column_text(st, 0) ||
        strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
        e = rc == SQLITE_ROW ? efc_errf(EFC_EIO, "store: %s: cannot enable WAL", path)
                             : db_err(s, rc, "journal_mode");
        sqlite3_finalize(st);
        goto fail;
    }
    sqlite3_finalize(st);
    if ((e = exec(s, "PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL", "pragmas")) != EFC_OK)
        goto fail;
    if ((e = migrate(s)) != EFC_OK)
        goto fail;
    *out = s;
    return EFC_OK;
fail:
    efc_coord_store_close(s);
    return e;
}

void efc_coord_store_close(struct efc_coord_store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    efc_free(s);
}

enum efc_status efc_coord_store_check(struct efc_coord_store *s)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = prep(s, "PRAGMA integrity_check", &st);
    if (e != EFC_OK)
        return e;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        e = db_err(s, rc, "integrity_check");
    else if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0)
        e = efc_errf(EFC_EPROTO, "store: integrity_check: %s", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (e == EFC_OK) {
        if ((e = prep(s, "PRAGMA foreign_key_check", &st)) != EFC_OK)
            return e;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            e = efc_errf(EFC_EPROTO, "store: foreign_key_check: table %s",
                         sqlite3_column_text(st, 0));
        else if (rc != SQLITE_DONE)
            e = db_err(s, rc, "foreign_key_check");
        sqlite3_finalize(st);
    }
    return e;
}

/* ---- devices / models ------------------------------------------------------------------- */

static char *status_json(const struct efc_proto_status *m)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "version", m->version);
    cJSON_AddStringToObject(o, "device_id", m->device_id);
    cJSON_AddStringToObject(o, "hw_class", m->hw_class);
    cJSON_AddStringToObject(o, "isa", m->isa);
    cJSON_AddStringToObject(o, "blas_core", m->blas_core);
    cJSON_AddNumberToObject(o, "cores", m->cores);
    cJSON_AddNumberToObject(o, "mem_bytes", (double)m->mem_bytes);
    cJSON_AddStringToObject(o, "agent_version", m->agent_version);
    cJSON_AddBoolToObject(o, "online", m->online != 0);
    cJSON_AddBoolToObject(o, "busy", m->busy != 0);
    cJSON_AddStringToObject(o, "active_model", m->active_model);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return txt;
}

static enum efc_status release_where(struct efc_coord_store *s, const char *device_id,
                                     int64_t now_ms, int32_t *n)
{
    sqlite3_stmt *st = NULL;
    /* Back to pending unless its attempts are spent: then expired (terminal). */
    const char *sql =
        device_id
            ? "UPDATE jobs SET state = CASE WHEN attempts >= (SELECT max_attempts FROM rounds"
              " WHERE id = jobs.round_id) THEN 'expired' ELSE 'pending' END,"
              " device_id = NULL, deadline = 0 WHERE state = 'assigned' AND device_id = ?1"
            : "UPDATE jobs SET state = CASE WHEN attempts >= (SELECT max_attempts FROM rounds"
              " WHERE id = jobs.round_id) THEN 'expired' ELSE 'pending' END,"
              " device_id = NULL, deadline = 0 WHERE state = 'assigned' AND deadline < ?2";
    enum efc_status e = prep(s, sql, &st);
    if (e != EFC_OK)
        return e;
    if (device_id)
        bind_text(st, 1, device_id);
    else
        sqlite3_bind_int64(st, 2, now_ms);
    e = step_done(s, st, "release jobs");
    sqlite3_finalize(st);
    if (e == EFC_OK && n)
        *n = sqlite3_changes(s->db);
    return e;
}

enum efc_status efc_coord_store_device_upsert(struct efc_coord_store *s,
                                              const struct efc_proto_status *m, int64_t now_ms,
                                              int32_t *n_released)
{
    sqlite3_stmt *st = NULL;
    char *js = status_json(m);
    if (n_released)
        *n_released = 0;
    if (!js)
        return efc_errf(EFC_ENOMEM, "store: status of %s", m->device_id);
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        goto out;
    if ((e = prep(s, "INSERT INTO devices(id, class, isa, online, status, last_seen)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO UPDATE SET"
                     " class = excluded.class, isa = excluded.isa, online = excluded.online,"
                     " status = excluded.status, last_seen = excluded.last_seen",
                  &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, m->device_id);
    bind_text(st, 2, m->hw_class);
    bind_text(st, 3, m->isa);
    sqlite3_bind_int(st, 4, m->online != 0);
    bind_text(st, 5, js);
    sqlite3_bind_int64(st, 6, now_ms);
    if ((e = step_done(s, st, "device upsert")) != EFC_OK)
        goto out;
    if (!m->online && (e = release_where(s, m->device_id, 0, n_released)) != EFC_OK)
        goto out;
    e = commit(s);
out:
    sqlite3_finalize(st);
    if (e != EFC_OK)
        rollback(s);
    cJSON_free(js);
    return e;
}

enum efc_status efc_coord_store_device_get(struct efc_coord_store *s, const char *device_id,
                                           struct efc_coord_device *out)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e =
        prep(s, "SELECT id, class, isa, online, last_seen FROM devices WHERE id = ?1", &st);
    if (e != EFC_OK)
        return e;
    bind_text(st, 1, device_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        col_text(st, 0, out->device_id, sizeof(out->device_id));
        col_text(st, 1, out->hw_class, sizeof(out->hw_class));
        col_text(st, 2, out->isa, sizeof(out->isa));
        out->online = sqlite3_column_int(st, 3);
        out->last_seen_ms = sqlite3_column_int64(st, 4);
    } else if (rc == SQLITE_DONE) {
        e = efc_errf(EFC_ENOTFOUND, "store: device %s unknown", device_id);
    } else {
        e = db_err(s, rc, "device get");
    }
    sqlite3_finalize(st);
    return e;
}

enum efc_status efc_coord_store_model_put(struct efc_coord_store *s, const char *sha256,
                                          const char *path, uint64_t bytes,
                                          enum efc_coord_model_role role)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        return e;
    if ((e = prep(s, "INSERT INTO models(sha256, path, bytes, role) VALUES(?1, ?2, ?3, ?4)"
                     " ON CONFLICT(sha256) DO UPDATE SET path = excluded.path,"
                     " bytes = excluded.bytes, role = excluded.role",
                  &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, sha256);
    bind_text(st, 2, path);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)bytes);
    bind_text(st, 4, role == EFC_COORD_MODEL_BASE ? "base" : "candidate");
    if ((e = step_done(s, st, "model put")) != EFC_OK)
        goto out;
    e = commit(s);
out:
    sqlite3_finalize(st);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

enum efc_status efc_coord_store_model_get(struct efc_coord_store *s, const char *sha256,
                                          char *path, size_t path_len, uint64_t *bytes)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = prep(s, "SELECT path, bytes FROM models WHERE sha256 = ?1", &st);
    if (e != EFC_OK)
        return e;
    bind_text(st, 1, sha256);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        col_text(st, 0, path, path_len);
        *bytes = (uint64_t)sqlite3_column_int64(st, 1);
    } else if (rc == SQLITE_DONE) {
        e = efc_errf(EFC_ENOTFOUND, "store: model %s unknown", sha256);
    } else {
        e = db_err(s, rc, "model get");
    }
    sqlite3_finalize(st);
    return e;
}

/* ---- rounds ----------------------------------------------------------------------------- */

static int id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= EFC_PROTO_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Inside a transaction: plan the jobs of (round, class) if it has none. */
static enum efc_status plan_class_locked(struct efc_coord_store *s, const char *round_id,
                                         const char *hw_class, int32_t *n_created)
{
    sqlite3_stmt *st = NULL, *ins = NULL;
    enum efc_status e;
    int32_t k = 0, made = 0;
    int64_t next = 0, existing = 0;
    int rc;

    if ((e = prep(s, "SELECT r.devices_per_class, r.next_job, r.state,"
                     " (SELECT count(*) FROM jobs j WHERE j.round_id = r.id AND j.class = ?2)"
                     " FROM rounds r WHERE r.id = ?1",
                  &st)) != EFC_OK)
        return e;
    bind_text(st, 1, round_id);
    bind_text(st, 2, hw_class);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        e = rc == SQLITE_DONE ? efc_errf(EFC_ENOTFOUND, "store: round %s unknown", round_id)
                              : db_err(s, rc, "plan class");
        goto out;
    }
    k = sqlite3_column_int(st, 0);
    next = sqlite3_column_int64(st, 1);
    int running = strcmp((const char *)sqlite3_column_text(st, 2), "running") == 0;
    existing = sqlite3_column_int64(st, 3);
    sqlite3_finalize(st);
    st = NULL;
    if (existing > 0 || !running)
        goto out;

    if ((e = prep(s, "SELECT idx, policy FROM round_policies WHERE round_id = ?1 ORDER BY idx",
                  &st)) != EFC_OK)
        goto out;
    if ((e = prep(s, "INSERT INTO jobs(job_id, round_id, class, policy_idx, policy, slot, state)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
                  &ins)) != EFC_OK)
        goto out;
    bind_text(st, 1, round_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int32_t slot = 0; slot < k; slot++) {
            char job_id[EFC_PROTO_ID_MAX];
            int w = snprintf(job_id, sizeof(job_id), "%s.%lld", round_id, (long long)next);
            if (w < 0 || (size_t)w >= sizeof(job_id)) {
                e = efc_errf(EFC_EINVAL, "store: round id %s too long for job ids", round_id);
                goto out;
            }
            sqlite3_reset(ins);
            bind_text(ins, 1, job_id);
            bind_text(ins, 2, round_id);
            bind_text(ins, 3, hw_class);
            sqlite3_bind_int(ins, 4, sqlite3_column_int(st, 0));
            sqlite3_bind_text(ins, 5, (const char *)sqlite3_column_text(st, 1), -1,
                              SQLITE_TRANSIENT);
            sqlite3_bind_int(ins, 6, slot);
            if ((e = step_done(s, ins, "plan job")) != EFC_OK)
                goto out;
            next++;
            made++;
        }
    }
    if (rc != SQLITE_DONE) {
        e = db_err(s, rc, "plan policies");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((e = prep(s, "UPDATE rounds SET next_job = ?2 WHERE id = ?1", &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, round_id);
    sqlite3_bind_int64(st, 2, next);
    e = step_done(s, st, "next job");
out:
    sqlite3_finalize(st);
    sqlite3_finalize(ins);
    if (e == EFC_OK && n_created)
        *n_created = made;
    return e;
}

enum efc_status efc_coord_store_round_create(struct efc_coord_store *s,
                                             const struct efc_coord_round *r)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e;
    int rc;

    if (!id_ok(r->round_id) || r->n_policies < 1 || r->n_policies > EFC_COORD_MAX_POLICIES ||
        r->devices_per_class < 1 || !(r->sla.value >= 0.0 && r->sla.value <= 1.0) ||
        r->max_attempts < 0)
        return efc_errf(EFC_EINVAL, "store: round %s: bad spec", r->round_id);
    for (int32_t i = 0; i < r->n_policies; i++)
        if (r->policies[i][0] == '\0')
            return efc_errf(EFC_EINVAL, "store: round %s: empty policy %d", r->round_id, i);

    if ((e = begin(s)) != EFC_OK)
        return e;
    if ((e = prep(s, "INSERT INTO rounds(id, base_sha256, sla_kind, sla_value, objective,"
                     " devices_per_class, max_attempts, state, created)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8)",
                  &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, r->round_id);
    bind_text(st, 2, r->base_sha256);
    bind_text(st, 3, r->sla.kind == EFC_COORD_SLA_ABSOLUTE ? "absolute" : "max_drop");
    sqlite3_bind_double(st, 4, r->sla.value);
    bind_text(st, 5, r->objective == EFC_COORD_OBJ_BYTES ? "bytes" : "p50");
    sqlite3_bind_int(st, 6, r->devices_per_class);
    sqlite3_bind_int(st, 7, r->max_attempts ? r->max_attempts : EFC_COORD_MAX_ATTEMPTS_DEFAULT);
    sqlite3_bind_int64(st, 8, r->created_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        e = efc_errf(EFC_EEXIST, "store: round %s exists", r->round_id);
        goto out;
    }
    if (rc != SQLITE_DONE) {
        e = db_err(s, rc, "round create");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((e = prep(s, "INSERT INTO round_policies(round_id, idx, policy) VALUES(?1, ?2, ?3)",
                  &st)) != EFC_OK)
        goto out;
    for (int32_t i = 0; i < r->n_policies; i++) {
        sqlite3_reset(st);
        bind_text(st, 1, r->round_id);
        sqlite3_bind_int(st, 2, i);
        bind_text(st, 3, r->policies[i]);
        if ((e = step_done(s, st, "round policy")) != EFC_OK)
            goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((e = prep(s, "SELECT DISTINCT class FROM devices ORDER BY class", &st)) != EFC_OK)
        goto out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char cls[EFC_PROTO_CLASS_MAX];
        col_text(st, 0, cls, sizeof(cls));
        if ((e = plan_class_locked(s, r->round_id, cls, NULL)) != EFC_OK)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        e = db_err(s, rc, "round classes");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    e = commit(s);
out:
    sqlite3_finalize(st);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

enum efc_status efc_coord_store_round_plan_class(struct efc_coord_store *s, const char *round_id,
                                                 const char *hw_class, int32_t *n_created)
{
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        return e;
    e = plan_class_locked(s, round_id, hw_class, n_created);
    if (e == EFC_OK)
        e = commit(s);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

enum efc_status efc_coord_store_round_get(struct efc_coord_store *s, const char *round_id,
                                          struct efc_coord_round *out)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e;
    int rc;

    if ((e = prep(s, "SELECT base_sha256, sla_kind, sla_value, objective, devices_per_class,"
                     " max_attempts, state, created FROM rounds WHERE id = ?1",
                  &st)) != EFC_OK)
        return e;
    bind_text(st, 1, round_id);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        e = rc == SQLITE_DONE ? efc_errf(EFC_ENOTFOUND, "store: round %s unknown", round_id)
                              : db_err(s, rc, "round get");
        goto out;
    }
    memset(out, 0, sizeof(*out));
    snprintf(out->round_id, sizeof(out->round_id), "%s", round_id);
    col_text(st, 0, out->base_sha256, sizeof(out->base_sha256));
    out->sla.kind = strcmp((const char *)sqlite3_column_text(st, 1), "absolute") == 0
                        ? EFC_COORD_SLA_ABSOLUTE
                        : EFC_COORD_SLA_MAX_DROP;
    out->sla.value = sqlite3_column_double(st, 2);
    out->objective = strcmp((const char *)sqlite3_column_text(st, 3), "bytes") == 0
                         ? EFC_COORD_OBJ_BYTES
                         : EFC_COORD_OBJ_P50;
    out->devices_per_class = sqlite3_column_int(st, 4);
    out->max_attempts = sqlite3_column_int(st, 5);
    out->state = strcmp((const char *)sqlite3_column_text(st, 6), "done") == 0
                     ? EFC_COORD_ROUND_DONE
                     : EFC_COORD_ROUND_RUNNING;
    out->created_ms = sqlite3_column_int64(st, 7);
    sqlite3_finalize(st);
    st = NULL;
    if ((e = prep(s, "SELECT policy FROM round_policies WHERE round_id = ?1 ORDER BY idx",
                  &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, round_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && out->n_policies < EFC_COORD_MAX_POLICIES)
        col_text(st, 0, out->policies[out->n_policies++], EFC_PROTO_POLICY_MAX);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        e = db_err(s, rc, "round policies");
out:
    sqlite3_finalize(st);
    return e;
}

enum efc_status efc_coord_store_rounds_running(struct efc_coord_store *s,
                                               char (**ids)[EFC_PROTO_ID_MAX], size_t *n)
{
    sqlite3_stmt *st = NULL;
    char(*arr)[EFC_PROTO_ID_MAX] = NULL;
    size_t k = 0, cap = 0;
    int rc;
    *ids = NULL;
    *n = 0;
    enum efc_status e =
        prep(s, "SELECT id FROM rounds WHERE state = 'running' ORDER BY created, id", &st);
    if (e != EFC_OK)
        return e;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == cap) {
            cap = cap ? cap * 2 : 8;
            void *g = efc_realloc(arr, cap * sizeof(*arr));
            if (!g) {
                e = efc_errf(EFC_ENOMEM, "store: rounds");
                goto out;
            }
            arr = g;
        }
        col_text(st, 0, arr[k++], EFC_PROTO_ID_MAX);
    }
    if (rc != SQLITE_DONE)
        e = db_err(s, rc, "rounds running");
out:
    sqlite3_finalize(st);
    if (e != EFC_OK) {
        efc_free(arr);
        return e;
    }
    *ids = arr;
    *n = k;
    return EFC_OK;
}

enum efc_status efc_coord_store_round_progress(struct efc_coord_store *s, const char *round_id,
                                               struct efc_coord_class_progress **out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    struct efc_coord_class_progress *arr = NULL;
    size_t k = 0, cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    enum efc_status e = prep(
        s, "SELECT j.class, j.state, count(*),"
           " (SELECT count(*) FROM devices d WHERE d.class = j.class AND d.online = 1)"
           " FROM jobs j WHERE j.round_id = ?1 GROUP BY j.class, j.state ORDER BY j.class",
        &st);
    if (e != EFC_OK)
        return e;
    bind_text(st, 1, round_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *cls = (const char *)sqlite3_column_text(st, 0);
        if (k == 0 || strcmp(arr[k - 1].hw_class, cls) != 0) {
            if (k == cap) {
                cap = cap ? cap * 2 : 8;
                void *g = efc_realloc(arr, cap * sizeof(*arr));
                if (!g) {
                    e = efc_errf(EFC_ENOMEM, "store: progress");
                    goto out;
                }
                arr = g;
            }
            memset(&arr[k], 0, sizeof(arr[k]));
            snprintf(arr[k].hw_class, sizeof(arr[k].hw_class), "%s", cls);
            arr[k].live_devices = sqlite3_column_int(st, 3);
            k++;
        }
        struct efc_coord_class_progress *p = &arr[k - 1];
        int32_t c = sqlite3_column_int(st, 2);
        switch (job_state_parse((const char *)sqlite3_column_text(st, 1))) {
        case EFC_COORD_JOB_PENDING:
            p->pending = c;
            break;
        case EFC_COORD_JOB_ASSIGNED:
            p->assigned = c;
            break;
        case EFC_COORD_JOB_DONE:
            p->done = c;
            break;
        case EFC_COORD_JOB_FAILED:
            p->failed = c;
            break;
        case EFC_COORD_JOB_EXPIRED:
            p->expired = c;
            break;
        }
    }
    if (rc != SQLITE_DONE)
        e = db_err(s, rc, "progress");
out:
    sqlite3_finalize(st);
    if (e != EFC_OK) {
        efc_free(arr);
        return e;
    }
    *out = arr;
    *n = k;
    return EFC_OK;
}

enum efc_status efc_coord_store_round_finish(struct efc_coord_store *s, const char *round_id)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        return e;
    if ((e = prep(s, "UPDATE rounds SET state = 'done' WHERE id = ?1", &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, round_id);
    if ((e = step_done(s, st, "round finish")) != EFC_OK)
        goto out;
    if (sqlite3_changes(s->db) == 0) {
        e = efc_errf(EFC_ENOTFOUND, "store: round %s unknown", round_id);
        goto out;
    }
    e = commit(s);
out:
    sqlite3_finalize(st);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

/* ---- jobs ------------------------------------------------------------------------------- */

#define JOB_COLS "job_id, round_id, class, device_id, policy, state, deadline, attempts"

static void job_row(sqlite3_stmt *st, struct efc_coord_job *j)
{
    memset(j, 0, sizeof(*j));
    col_text(st, 0, j->job_id, sizeof(j->job_id));
    col_text(st, 1, j->round_id, sizeof(j->round_id));
    col_text(st, 2, j->hw_class, sizeof(j->hw_class));
    col_text(st, 3, j->device_id, sizeof(j->device_id));
    col_text(st, 4, j->policy, sizeof(j->policy));
    j->state = job_state_parse((const char *)sqlite3_column_text(st, 5));
    j->deadline_ms = sqlite3_column_int64(st, 6);
    j->attempts = sqlite3_column_int(st, 7);
}

/* One job row by a query with ?1 bound to key: EFC_ENOTFOUND when no row. */
static enum efc_status job_query(struct efc_coord_store *s, const char *sql, const char *key,
                                 struct efc_coord_job *out)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = prep(s, sql, &st);
    if (e != EFC_OK)
        return e;
    bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        job_row(st, out);
    else if (rc == SQLITE_DONE)
        e = efc_errf(EFC_ENOTFOUND, "store: no job for %s", key);
    else
        e = db_err(s, rc, "job query");
    sqlite3_finalize(st);
    return e;
}

enum efc_status efc_coord_store_job_get(struct efc_coord_store *s, const char *job_id,
                                        struct efc_coord_job *out)
{
    return job_query(s, "SELECT " JOB_COLS " FROM jobs WHERE job_id = ?1", job_id, out);
}

enum efc_status efc_coord_store_job_assign(struct efc_coord_store *s, const char *device_id,
                                           int64_t deadline_ms, struct efc_coord_job *out)
{
    sqlite3_stmt *st = NULL;
    struct efc_coord_device dev;
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        return e;
    if ((e = efc_coord_store_device_get(s, device_id, &dev)) != EFC_OK)
        goto out;
    if (!dev.online) {
        e = efc_errf(EFC_ENOTFOUND, "store: device %s offline", device_id);
        goto out;
    }
    e = job_query(s, "SELECT " JOB_COLS " FROM jobs WHERE device_id = ?1 AND state = 'assigned'",
                  device_id, out);
    if (e == EFC_OK) {
        e = efc_errf(EFC_EBUSY, "store: device %s busy with job %s", device_id, out->job_id);
        goto out;
    }
    if (e != EFC_ENOTFOUND)
        goto out;
    /* Oldest running round first; slot-major so every policy gets its first device before any
     * policy gets its second. A device never runs one policy twice in a round. Per round, the
     * pick walks jobs_pick in (slot, policy) order and stops at the first job this device may
     * take: no sort, no scan of the class's other pending jobs. */
    sqlite3_stmt *rs = NULL;
    int found = 0, rc = SQLITE_DONE;
    if ((e = prep(s, "SELECT id FROM rounds WHERE state = 'running' ORDER BY created, id", &rs)) !=
            EFC_OK ||
        (e = prep(s, "SELECT " JOB_COLS " FROM jobs j WHERE j.round_id = ?3 AND j.class = ?2"
                     " AND j.state = 'pending'"
                     " AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.round_id = j.round_id"
                     "   AND k.policy_idx = j.policy_idx AND k.device_id = ?1)"
                     " AND NOT EXISTS (SELECT 1 FROM results x WHERE x.round_id = j.round_id"
                     "   AND x.policy = j.policy AND x.device_id = ?1)"
                     " ORDER BY j.slot, j.policy_idx LIMIT 1",
                  &st)) != EFC_OK) {
        sqlite3_finalize(rs);
        goto out;
    }
    bind_text(st, 1, device_id);
    bind_text(st, 2, dev.hw_class);
    while (!found && (rc = sqlite3_step(rs)) == SQLITE_ROW) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 3, (const char *)sqlite3_column_text(rs, 0), -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            job_row(st, out);
            found = 1;
        } else if (rc != SQLITE_DONE) {
            break;
        }
    }
    sqlite3_finalize(rs);
    if (!found && rc != SQLITE_DONE) {
        e = db_err(s, rc, "job pick");
        goto out;
    }
    if (!found) {
        e = efc_errf(EFC_ENOTFOUND, "store: no job for device %s (class %s)", device_id,
                     dev.hw_class);
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((e = prep(s, "UPDATE jobs SET state = 'assigned', device_id = ?2, deadline = ?3,"
                     " attempts = attempts + 1 WHERE job_id = ?1",
                  &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, out->job_id);
    bind_text(st, 2, device_id);
    sqlite3_bind_int64(st, 3, deadline_ms);
    if ((e = step_done(s, st, "job assign")) != EFC_OK)
        goto out;
    e = commit(s);
    if (e == EFC_OK) {
        snprintf(out->device_id, sizeof(out->device_id), "%s", device_id);
        out->state = EFC_COORD_JOB_ASSIGNED;
        out->deadline_ms = deadline_ms;
        out->attempts++;
    }
out:
    sqlite3_finalize(st);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

enum efc_status efc_coord_store_job_release(struct efc_coord_store *s, const char *device_id)
{
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        return e;
    e = release_where(s, device_id, 0, NULL);
    if (e == EFC_OK)
        e = commit(s);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

enum efc_status efc_coord_store_jobs_expire(struct efc_coord_store *s, int64_t now_ms,
                                            int32_t *n_expired)
{
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        return e;
    e = release_where(s, NULL, now_ms, n_expired);
    if (e == EFC_OK)
        e = commit(s);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

/* ---- results ---------------------------------------------------------------------------- */

static void bind_result(sqlite3_stmt *st, const struct efc_proto_result *r)
{
    int i = 1;
    sqlite3_bind_int(st, i++, r->version);
    bind_text(st, i++, r->job_id);
    bind_text(st, i++, r->round_id);
    bind_text(st, i++, r->device_id);
    bind_text(st, i++, r->hw_class);
    bind_text(st, i++, r->policy);
    sqlite3_bind_int(st, i++, r->status);
    bind_text(st, i++, r->error);
    bind_text(st, i++, r->isa);
    bind_text(st, i++, r->blas_core);
    sqlite3_bind_int(st, i++, r->has_labels);
    sqlite3_bind_int(st, i++, r->eval_total);
    sqlite3_bind_int(st, i++, r->correct);
    sqlite3_bind_int(st, i++, r->base_correct);
    sqlite3_bind_int(st, i++, r->both_correct);
    sqlite3_bind_int(st, i++, r->base_only);
    sqlite3_bind_int(st, i++, r->cand_only);
    sqlite3_bind_int(st, i++, r->agree);
    sqlite3_bind_int(st, i++, r->calib_samples);
    sqlite3_bind_double(st, i++, r->calib_s);
    sqlite3_bind_double(st, i++, r->p50_ms);
    sqlite3_bind_double(st, i++, r->p90_ms);
    sqlite3_bind_double(st, i++, r->p99_ms);
    sqlite3_bind_int(st, i++, r->batch);
    sqlite3_bind_double(st, i++, r->batch_p50_ms);
    sqlite3_bind_int64(st, i++, (sqlite3_int64)r->model_bytes);
    sqlite3_bind_int64(st, i++, (sqlite3_int64)r->weight_bytes);
    sqlite3_bind_int64(st, i++, (sqlite3_int64)r->peak_activation_bytes);
    sqlite3_bind_int64(st, i++, (sqlite3_int64)r->peak_rss_bytes);
    sqlite3_bind_int(st, i++, r->sparse_layers);
}

static void result_row(sqlite3_stmt *st, struct efc_proto_result *r)
{
    int i = 0;
    memset(r, 0, sizeof(*r));
    r->version = sqlite3_column_int(st, i++);
    col_text(st, i++, r->job_id, sizeof(r->job_id));
    col_text(st, i++, r->round_id, sizeof(r->round_id));
    col_text(st, i++, r->device_id, sizeof(r->device_id));
    col_text(st, i++, r->hw_class, sizeof(r->hw_class));
    col_text(st, i++, r->policy, sizeof(r->policy));
    r->status = sqlite3_column_int(st, i++);
    col_text(st, i++, r->error, sizeof(r->error));
    col_text(st, i++, r->isa, sizeof(r->isa));
    col_text(st, i++, r->blas_core, sizeof(r->blas_core));
    r->has_labels = sqlite3_column_int(st, i++);
    r->eval_total = sqlite3_column_int(st, i++);
    r->correct = sqlite3_column_int(st, i++);
    r->base_correct = sqlite3_column_int(st, i++);
    r->both_correct = sqlite3_column_int(st, i++);
    r->base_only = sqlite3_column_int(st, i++);
    r->cand_only = sqlite3_column_int(st, i++);
    r->agree = sqlite3_column_int(st, i++);
    r->calib_samples = sqlite3_column_int(st, i++);
    r->calib_s = sqlite3_column_double(st, i++);
    r->p50_ms = sqlite3_column_double(st, i++);
    r->p90_ms = sqlite3_column_double(st, i++);
    r->p99_ms = sqlite3_column_double(st, i++);
    r->batch = sqlite3_column_int(st, i++);
    r->batch_p50_ms = sqlite3_column_double(st, i++);
    r->model_bytes = (uint64_t)sqlite3_column_int64(st, i++);
    r->weight_bytes = (uint64_t)sqlite3_column_int64(st, i++);
    r->peak_activation_bytes = (uint64_t)sqlite3_column_int64(st, i++);
    r->peak_rss_bytes = (uint64_t)sqlite3_column_int64(st, i++);
    r->sparse_layers = sqlite3_column_int(st, i++);
}

enum efc_status efc_coord_store_result_put(struct efc_coord_store *s,
                                           const struct efc_proto_result *r, int64_t now_ms,
                                           int *duplicate)
{
    sqlite3_stmt *st = NULL;
    struct efc_coord_job job;
    enum efc_status e;

    *duplicate = 0;
    if ((e = begin(s)) != EFC_OK)
        return e;
    if ((e = efc_coord_store_job_get(s, r->job_id, &job)) != EFC_OK) {
        e = efc_errf(EFC_ENOTFOUND, "store: result for unknown job %s from %s", r->job_id,
                     r->device_id);
        goto out;
    }
    if (strcmp(job.round_id, r->round_id) != 0 || strcmp(job.hw_class, r->hw_class) != 0 ||
        strcmp(job.policy, r->policy) != 0) {
        e = efc_errf(EFC_EPROTO,
                     "store: result %s from %s: round/class/policy %s/%s/%s, job has %s/%s/%s",
                     r->job_id, r->device_id, r->round_id, r->hw_class, r->policy, job.round_id,
                     job.hw_class, job.policy);
        goto out;
    }
    if ((e = prep(s, "INSERT INTO results(" RESULT_COLS ", received) VALUES(?1, ?2, ?3, ?4, ?5,"
                     " ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,"
                     " ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)"
                     " ON CONFLICT(job_id, device_id) DO NOTHING",
                  &st)) != EFC_OK)
        goto out;
    bind_result(st, r);
    sqlite3_bind_int64(st, RESULT_N_COLS + 1, now_ms);
    if ((e = step_done(s, st, "result insert")) != EFC_OK)
        goto out;
    if (sqlite3_changes(s->db) == 0) {
        *duplicate = 1; /* already stored: nothing changes */
        rollback(s);
        sqlite3_finalize(st);
        return EFC_OK;
    }
    sqlite3_finalize(st);
    st = NULL;
    /* Close the job unless another device's result already did. */
    if ((e = prep(s, "UPDATE jobs SET state = ?2, device_id = ?3, deadline = 0 WHERE job_id = ?1"
                     " AND state IN ('pending', 'assigned', 'expired')",
                  &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, r->job_id);
    bind_text(st, 2, r->status == EFC_PROTO_RESULT_OK ? "done" : "failed");
    bind_text(st, 3, r->device_id);
    if ((e = step_done(s, st, "job close")) != EFC_OK)
        goto out;
    e = commit(s);
out:
    sqlite3_finalize(st);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

enum efc_status efc_coord_store_results_list(struct efc_coord_store *s, const char *round_id,
                                             struct efc_proto_result **out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    struct efc_proto_result *arr = NULL;
    size_t k = 0, cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    enum efc_status e =
        prep(s, "SELECT " RESULT_COLS " FROM results WHERE round_id = ?1 ORDER BY id", &st);
    if (e != EFC_OK)
        return e;
    bind_text(st, 1, round_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            void *g = efc_realloc(arr, cap * sizeof(*arr));
            if (!g) {
                e = efc_errf(EFC_ENOMEM, "store: %zu results", cap);
                goto out;
            }
            arr = g;
        }
        result_row(st, &arr[k++]);
    }
    if (rc != SQLITE_DONE)
        e = db_err(s, rc, "results list");
out:
    sqlite3_finalize(st);
    if (e != EFC_OK) {
        efc_free(arr);
        return e;
    }
    *out = arr;
    *n = k;
    return EFC_OK;
}

/* ---- selections ------------------------------------------------------------------------- */

enum efc_status efc_coord_store_selection_put(struct efc_coord_store *s, const char *round_id,
                                              const char *hw_class, const char *policy,
                                              const char *report_json)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = begin(s);
    if (e != EFC_OK)
        return e;
    if ((e = prep(s, "INSERT OR REPLACE INTO selections(round_id, class, policy, report)"
                     " VALUES(?1, ?2, ?3, ?4)",
                  &st)) != EFC_OK)
        goto out;
    bind_text(st, 1, round_id);
    bind_text(st, 2, hw_class);
    if (policy && policy[0])
        bind_text(st, 3, policy);
    else
        sqlite3_bind_null(st, 3);
    bind_text(st, 4, report_json ? report_json : "{}");
    if ((e = step_done(s, st, "selection put")) != EFC_OK)
        goto out;
    e = commit(s);
out:
    sqlite3_finalize(st);
    if (e != EFC_OK)
        rollback(s);
    return e;
}

enum efc_status efc_coord_store_selection_get(struct efc_coord_store *s, const char *round_id,
                                              const char *hw_class, char *policy,
                                              size_t policy_len)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e =
        prep(s, "SELECT policy FROM selections WHERE round_id = ?1 AND class = ?2", &st);
    if (e != EFC_OK)
        return e;
    bind_text(st, 1, round_id);
    bind_text(st, 2, hw_class);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        col_text(st, 0, policy, policy_len);
    else if (rc == SQLITE_DONE)
        e = efc_errf(EFC_ENOTFOUND, "store: no selection for %s/%s", round_id, hw_class);
    else
        e = db_err(s, rc, "selection get");
    sqlite3_finalize(st);
    return e;
}
