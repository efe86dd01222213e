/* rollout_store.c — the rollout tables of the coordinator's store (schema v5, store_int.h) and
 * the pure wave / gate rules (rollout.h). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "coordinator/rollout.h"
#include "coordinator/store_int.h"

static const char *const ROLLOUT_STATE[] = {"running", "halted", "done", "rolled_back"};
static const char *const RDEV_STATE[] = {"sent",      "installed", "rolled_back",
                                         "refused",   "failed",    "timeout",
                                         "regressed", "reverting", "reverted"};
#define N_ROLLOUT_STATE ((int)(sizeof(ROLLOUT_STATE) / sizeof(ROLLOUT_STATE[0])))
#define N_RDEV_STATE ((int)(sizeof(RDEV_STATE) / sizeof(RDEV_STATE[0])))

const char *efc_coord_rollout_state_str(enum efc_coord_rollout_state s)
{
    return (int)s >= 0 && (int)s < N_ROLLOUT_STATE ? ROLLOUT_STATE[s] : "?";
}

const char *efc_coord_rdev_state_str(enum efc_coord_rdev_state s)
{
    return (int)s >= 0 && (int)s < N_RDEV_STATE ? RDEV_STATE[s] : "?";
}

static int parse_name(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i]))
            return i;
    return 0;
}

int efc_coord_rdev_failed(enum efc_coord_rdev_state s)
{
    return s == EFC_COORD_RDEV_ROLLED_BACK || s == EFC_COORD_RDEV_REFUSED ||
           s == EFC_COORD_RDEV_FAILED || s == EFC_COORD_RDEV_TIMEOUT ||
           s == EFC_COORD_RDEV_REGRESSED;
}

/* ---- waves and gate --------------------------------------------------------------------- */

/* Entry k of a wave list: *pct = 1 for a percentage. -1 when malformed or absent. */
static int64_t wave_entry(const char *s, int32_t k, int *pct)
{
    const char *p = s;
    for (int32_t i = 0; i < k; i++) {
        p = strchr(p, ',');
        if (!p)
            return -1;
        p++;
    }
    char *end;
    if (*p < '0' || *p > '9')
        return -1;
    long long v = strtoll(p, &end, 10);
    *pct = *end == '%';
    if (*pct)
        end++;
    if ((*end != ',' && *end != '\0') || v < 1 || v > 1000000 || (*pct && v > 100))
        return -1;
    return v;
}

enum efc_status efc_coord_waves_parse(const char *s, int32_t *n_waves)
{
    int32_t n = 0;
    int pct = 0, last_pct = 0;
    int64_t v = 0, last = 0;

    if (!s || !*s || strlen(s) >= EFC_COORD_WAVES_STR_MAX)
        return efc_errf(EFC_EINVAL, "waves: empty or longer than %d characters",
                        EFC_COORD_WAVES_STR_MAX - 1);
    for (const char *p = s;; n++) {
        if (n >= EFC_COORD_WAVES_MAX)
            return efc_errf(EFC_EINVAL, "waves '%s': more than %d waves", s, EFC_COORD_WAVES_MAX);
        v = wave_entry(s, n, &pct);
        if (v < 0)
            return efc_errf(EFC_EINVAL, "waves '%s': entry %d is not N (>= 1) or P%% (1..100)",
                            s, (int)n + 1);
        /* Counts and percentages cannot be compared without the class size: only like
         * with like must not decrease. */
        if (n > 0 && pct == last_pct && v < last)
            return efc_errf(EFC_EINVAL, "waves '%s': entry %d is below the one before", s,
                            (int)n + 1);
        last = v;
        last_pct = pct;
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    if (!pct || v != 100)
        return efc_errf(EFC_EINVAL, "waves '%s': the last wave must be 100%%", s);
    if (n_waves)
        *n_waves = n + 1;
    return EFC_OK;
}

int32_t efc_coord_wave_target(const char *waves, int32_t k, int32_t n_class)
{
    int pct = 0;
    int64_t v = wave_entry(waves, k, &pct), t;

    if (v < 0 || n_class <= 0)
        return n_class > 0 ? n_class : 0;
    t = pct ? (v * n_class + 99) / 100 : v;
    if (t < 1)
        t = 1;
    return t > n_class ? n_class : (int32_t)t;
}

enum efc_coord_rdev_state efc_coord_gate_report(const struct efc_coord_gate *g,
                                                const struct efc_proto_ota_report *r,
                                                char *reason, size_t reason_len)
{
    reason[0] = '\0';
    switch (r->outcome) {
    case EFC_PROTO_OTA_INSTALLED:
        break;
    case EFC_PROTO_OTA_ROLLED_BACK:
        snprintf(reason, reason_len, "%s", r->reason);
        return EFC_COORD_RDEV_ROLLED_BACK;
    case EFC_PROTO_OTA_REFUSED:
        snprintf(reason, reason_len, "%s", r->reason);
        return EFC_COORD_RDEV_REFUSED;
    case EFC_PROTO_OTA_REVERTED:
        snprintf(reason, reason_len, "%s", r->reason);
        return EFC_COORD_RDEV_REVERTED;
    default:
        snprintf(reason, reason_len, "%s", r->reason);
        return EFC_COORD_RDEV_FAILED;
    }
    if (g->expected_acc >= 0 && r->has_labels && r->eval_total > 0) {
        /* A device measures on its own, different samples: only a drop beyond the tolerance
         * and beyond two standard errors of its sample (binomial) is a regression. */
        double acc = (double)r->correct / r->eval_total, p = g->expected_acc;
        double noise = 2.0 * sqrt(p * (1.0 - p) / r->eval_total);
        if (acc < p - g->max_acc_drop - noise) {
            snprintf(reason, reason_len,
                     "ACCURACY_REGRESSION: %.4f on %d device samples < %.4f expected - %.4f "
                     "tolerance - %.4f sampling noise",
                     acc, r->eval_total, p, g->max_acc_drop, noise);
            return EFC_COORD_RDEV_REGRESSED;
        }
    }
    if (g->max_p99_ratio > 0 && g->expected_p99_ms > 0 &&
        r->p99_ms > g->expected_p99_ms * g->max_p99_ratio &&
        r->p99_ms > g->expected_p99_ms + EFC_COORD_P99_FLOOR_MS) {
        snprintf(reason, reason_len, "LATENCY_REGRESSION: p99 %.3f ms > %.3f ms x %.2f",
                 r->p99_ms, g->expected_p99_ms, g->max_p99_ratio);
        return EFC_COORD_RDEV_REGRESSED;
    }
    return EFC_COORD_RDEV_INSTALLED;
}

/* ---- gate <-> JSON ---------------------------------------------------------------------- */

#define GATE_FIELDS(X)                                                                         \
    X(max_failures) X(max_acc_drop) X(max_p99_ratio) X(expected_acc) X(expected_p99_ms)        \
    X(expected_agree)                                                                          \
    X(report_timeout_ms) X(calib_samples) X(eval_samples) X(health_runs) X(min_accuracy)       \
    X(min_agree) X(max_p99_ms) X(mem_limit_bytes) X(max_rss_bytes)

static char *gate_json(const struct efc_coord_gate *g)
{
    cJSON *o = cJSON_CreateObject();
    char *txt = NULL, *out = NULL;
    if (!o)
        return NULL;
#define ADD(f) cJSON_AddNumberToObject(o, #f, (double)g->f);
    GATE_FIELDS(ADD)
#undef ADD
    txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (txt) {
        size_t n = strlen(txt) + 1;
        out = efc_malloc(n);
        if (out)
            memcpy(out, txt, n);
        cJSON_free(txt);
    }
    return out;
}

static void gate_parse(const char *txt, struct efc_coord_gate *g)
{
    cJSON *o = cJSON_Parse(txt ? txt : "");
    const cJSON *it;
    memset(g, 0, sizeof(*g));
    if (!o)
        return;
#define GET(f)                                                                                 \
    if ((it = cJSON_GetObjectItemCaseSensitive(o, #f)) && cJSON_IsNumber(it))                  \
        g->f = (__typeof__(g->f))it->valuedouble;
    GATE_FIELDS(GET)
#undef GET
    cJSON_Delete(o);
}

/* ---- SQL helpers: bound arguments, one-statement writes, row readers -------------------- */

/* A statement argument: text, integer or real (bound to ?1, ?2, ... in order). */
struct arg {
    char kind; /* 's', 'i', 'd' */
    const char *s;
    int64_t i;
    double d;
};
#define A_S(x) {'s', (x), 0, 0}
#define A_I(x) {'i', NULL, (int64_t)(x), 0}
#define A_D(x) {'d', NULL, 0, (x)}
#define N_ARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static enum efc_status prep_bound(struct efc_coord_store *s, const char *sql, const struct arg *a,
                                  int n, sqlite3_stmt **st)
{
    enum efc_status e = efc_coord_db_prep(s, sql, st);
    for (int i = 0; e == EFC_OK && i < n; i++) {
        if (a[i].kind == 's')
            sqlite3_bind_text(*st, i + 1, a[i].s, -1, SQLITE_STATIC);
        else if (a[i].kind == 'i')
            sqlite3_bind_int64(*st, i + 1, (sqlite3_int64)a[i].i);
        else
            sqlite3_bind_double(*st, i + 1, a[i].d);
    }
    return e;
}

/* One statement inside the caller's transaction; *changes (may be NULL): rows changed. */
static enum efc_status exec_args(struct efc_coord_store *s, const char *sql, const struct arg *a,
                                 int n, const char *what, int *changes)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = prep_bound(s, sql, a, n, &st);
    if (e == EFC_OK)
        e = efc_coord_db_step_done(s, st, what);
    if (e == EFC_OK && changes)
        *changes = sqlite3_changes(s->db);
    sqlite3_finalize(st);
    return e;
}

/* One statement in its own transaction (a savepoint inside a batch). */
static enum efc_status write1(struct efc_coord_store *s, const char *sql, const struct arg *a,
                              int n, const char *what, int *changes)
{
    enum efc_status e = efc_coord_db_begin(s);
    if (e != EFC_OK)
        return e;
    if ((e = exec_args(s, sql, a, n, what, changes)) != EFC_OK) {
        efc_coord_db_rollback(s);
        return e;
    }
    return efc_coord_db_commit(s);
}

typedef void (*row_fn)(sqlite3_stmt *st, void *dst);

/* The first row into dst; EFC_ENOTFOUND ("store: <what> not found: <key>") if none. */
static enum efc_status get_one(struct efc_coord_store *s, const char *sql, const struct arg *a,
                               int n, row_fn row, void *dst, const char *what)
{
    sqlite3_stmt *st = NULL;
    enum efc_status e = prep_bound(s, sql, a, n, &st);
    if (e == EFC_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            row(st, dst);
        else
            e = rc == SQLITE_DONE ? efc_errf(EFC_ENOTFOUND, "store: %s not found: %s", what,
                                             n > 0 && a[0].kind == 's' ? a[0].s : "")
                                  : efc_coord_db_err(s, rc, what);
    }
    sqlite3_finalize(st);
    return e;
}

/* Every row, converted by row into a new array of elem-byte entries (*out, efc_free). */
static enum efc_status get_all(struct efc_coord_store *s, const char *sql, const struct arg *a,
                               int n, row_fn row, size_t elem, void **out, size_t *n_out,
                               const char *what)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int rc = SQLITE_DONE;
    enum efc_status e = prep_bound(s, sql, a, n, &st);
    *out = NULL;
    *n_out = 0;
    while (e == EFC_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n_out == cap) {
            size_t nc = cap ? cap * 2 : 16;
            void *g = efc_realloc(*out, nc * elem);
            if (!g) {
                e = efc_errf(EFC_ENOMEM, "store: %s", what);
                break;
            }
            *out = g;
            cap = nc;
        }
        char *dst = (char *)*out + (*n_out)++ * elem;
        memset(dst, 0, elem);
        row(st, dst);
    }
    if (e == EFC_OK && rc != SQLITE_DONE)
        e = efc_coord_db_err(s, rc, what);
    sqlite3_finalize(st);
    if (e != EFC_OK) {
        efc_free(*out);
        *out = NULL;
        *n_out = 0;
    }
    return e;
}

/* ---- round artifacts and the version counter -------------------------------------------- */

enum efc_status efc_coord_store_round_artifact_put(struct efc_coord_store *s,
                                                   const char *round_id, const char *policy,
                                                   const char *sha256)
{
    const struct arg a[] = {A_S(round_id), A_S(policy), A_S(sha256)};
    return write1(s,
                  "INSERT INTO round_artifacts(round_id, policy, sha256) VALUES(?1, ?2, ?3) "
                  "ON CONFLICT(round_id, policy) DO UPDATE SET sha256 = excluded.sha256",
                  a, N_ARGS(a), "round artifact", NULL);
}

static void sha_row(sqlite3_stmt *st, void *dst)
{
    efc_coord_db_col_text(st, 0, dst, EFC_PROTO_SHA256_HEX);
}

enum efc_status efc_coord_store_round_artifact_get(struct efc_coord_store *s,
                                                   const char *round_id, const char *policy,
                                                   char sha256[EFC_PROTO_SHA256_HEX])
{
    const struct arg a[] = {A_S(round_id), A_S(policy)};
    enum efc_status e = get_one(s,
                                "SELECT sha256 FROM round_artifacts WHERE round_id = ?1 AND "
                                "policy = ?2",
                                a, N_ARGS(a), sha_row, sha256, "round artifact");
    if (e == EFC_ENOTFOUND)
        e = efc_errf(EFC_ENOTFOUND, "store: round %s has no artifact for policy %s", round_id,
                     policy);
    return e;
}

static void u64_row(sqlite3_stmt *st, void *dst)
{
    *(uint64_t *)dst = (uint64_t)sqlite3_column_int64(st, 0);
}

enum efc_status efc_coord_store_ota_version_next(struct efc_coord_store *s, uint64_t *out)
{
    enum efc_status e = efc_coord_db_begin(s);
    if (e != EFC_OK)
        return e;
    if ((e = exec_args(s, "UPDATE ota_counter SET version = version + 1 WHERE id = 1", NULL, 0,
                       "ota version", NULL)) != EFC_OK ||
        (e = get_one(s, "SELECT version FROM ota_counter WHERE id = 1", NULL, 0, u64_row, out,
                     "ota version")) != EFC_OK) {
        efc_coord_db_rollback(s);
        return e;
    }
    return efc_coord_db_commit(s);
}

/* ---- rollouts --------------------------------------------------------------------------- */

#define ROLLOUT_COLS                                                                           \
    "id, class, policy, round_id, sha256, bytes, version, manifest, kind, target, waves, "     \
    "wave, state, reason, gate, created, updated"

static void rollout_row(sqlite3_stmt *st, void *dst)
{
    struct efc_coord_rollout *r = dst;
    char buf[32];
    memset(r, 0, sizeof(*r));
    efc_coord_db_col_text(st, 0, r->rollout_id, sizeof(r->rollout_id));
    efc_coord_db_col_text(st, 1, r->hw_class, sizeof(r->hw_class));
    efc_coord_db_col_text(st, 2, r->policy, sizeof(r->policy));
    efc_coord_db_col_text(st, 3, r->round_id, sizeof(r->round_id));
    efc_coord_db_col_text(st, 4, r->sha256, sizeof(r->sha256));
    r->bytes = (uint64_t)sqlite3_column_int64(st, 5);
    r->version = (uint64_t)sqlite3_column_int64(st, 6);
    efc_coord_db_col_text(st, 7, r->manifest, sizeof(r->manifest));
    efc_coord_db_col_text(st, 8, buf, sizeof(buf));
    r->kind = strcmp(buf, "rollback") ? EFC_COORD_ROLLOUT_INSTALL : EFC_COORD_ROLLOUT_ROLLBACK;
    efc_coord_db_col_text(st, 9, r->target, sizeof(r->target));
    efc_coord_db_col_text(st, 10, r->waves, sizeof(r->waves));
    r->wave = sqlite3_column_int(st, 11);
    efc_coord_db_col_text(st, 12, buf, sizeof(buf));
    r->state = (enum efc_coord_rollout_state)parse_name(buf, ROLLOUT_STATE, N_ROLLOUT_STATE);
    efc_coord_db_col_text(st, 13, r->reason, sizeof(r->reason));
    gate_parse((const char *)sqlite3_column_text(st, 14), &r->gate);
    r->created_ms = sqlite3_column_int64(st, 15);
    r->updated_ms = sqlite3_column_int64(st, 16);
}

enum efc_status efc_coord_store_rollout_get(struct efc_coord_store *s, const char *rollout_id,
                                            struct efc_coord_rollout *out)
{
    const struct arg a[] = {A_S(rollout_id)};
    return get_one(s, "SELECT " ROLLOUT_COLS " FROM rollouts WHERE id = ?1", a, N_ARGS(a),
                   rollout_row, out, "rollout");
}

enum efc_status efc_coord_store_rollout_running(struct efc_coord_store *s, const char *hw_class,
                                                struct efc_coord_rollout *out)
{
    const struct arg a[] = {A_S(hw_class)};
    return get_one(s,
                   "SELECT " ROLLOUT_COLS " FROM rollouts WHERE class = ?1 AND "
                   "state = 'running' ORDER BY version DESC LIMIT 1",
                   a, N_ARGS(a), rollout_row, out, "running rollout of class");
}

enum efc_status efc_coord_store_rollout_latest(struct efc_coord_store *s, const char *hw_class,
                                               int done_only, uint64_t below_version,
                                               struct efc_coord_rollout *out)
{
    const struct arg a[] = {A_S(hw_class),
                            A_I(below_version > INT64_MAX ? INT64_MAX : below_version)};
    return get_one(s,
                   done_only ? "SELECT " ROLLOUT_COLS " FROM rollouts WHERE class = ?1 AND "
                               "version < ?2 AND state = 'done' ORDER BY version DESC LIMIT 1"
                             : "SELECT " ROLLOUT_COLS " FROM rollouts WHERE class = ?1 AND "
                               "version < ?2 AND state IN ('done','halted') "
                               "ORDER BY version DESC LIMIT 1",
                   a, N_ARGS(a), rollout_row, out, "earlier rollout of class");
}

enum efc_status efc_coord_store_rollouts_list(struct efc_coord_store *s,
                                              struct efc_coord_rollout **out, size_t *n)
{
    return get_all(s, "SELECT " ROLLOUT_COLS " FROM rollouts ORDER BY version DESC", NULL, 0,
                   rollout_row, sizeof(**out), (void **)out, n, "rollouts");
}

enum efc_status efc_coord_store_rollout_create(struct efc_coord_store *s,
                                               const struct efc_coord_rollout *r,
                                               char *busy_id, size_t busy_len)
{
    struct efc_coord_rollout *cur = efc_malloc(sizeof(*cur));
    char *gate = gate_json(&r->gate);
    enum efc_status e;

    if (!cur || !gate) {
        efc_free(cur);
        efc_free(gate);
        return efc_errf(EFC_ENOMEM, "store: rollout %s", r->rollout_id);
    }
    const struct arg a[] = {A_S(r->rollout_id),
                            A_S(r->hw_class),
                            A_S(r->policy),
                            A_S(r->round_id),
                            A_S(r->sha256),
                            A_I(r->bytes),
                            A_I(r->version),
                            A_S(r->manifest),
                            A_S(r->kind == EFC_COORD_ROLLOUT_ROLLBACK ? "rollback" : "install"),
                            A_S(r->target),
                            A_S(r->waves),
                            A_S(gate),
                            A_I(r->created_ms)};
    if ((e = efc_coord_waves_parse(r->waves, NULL)) != EFC_OK ||
        (e = efc_coord_db_begin(s)) != EFC_OK)
        goto out;
    e = efc_coord_store_rollout_running(s, r->hw_class, cur);
    if (e == EFC_OK) {
        if (busy_id)
            snprintf(busy_id, busy_len, "%s", cur->rollout_id);
        e = efc_errf(EFC_EBUSY, "store: class %s already has rollout %s running", r->hw_class,
                     cur->rollout_id);
    } else if (e == EFC_ENOTFOUND) {
        e = exec_args(s,
                      "INSERT INTO rollouts(" ROLLOUT_COLS ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, "
                      "?7, ?8, ?9, ?10, ?11, 0, 'running', '', ?12, ?13, ?13)",
                      a, N_ARGS(a), "rollout insert", NULL);
        if (e == EFC_EPROTO) /* a constraint: the id or the version is taken */
            e = efc_errf(EFC_EEXIST, "store: rollout %s (or version %llu) exists",
                         r->rollout_id, (unsigned long long)r->version);
    }
    if (e == EFC_OK)
        e = efc_coord_db_commit(s);
    else
        efc_coord_db_rollback(s);
out:
    efc_free(cur);
    efc_free(gate);
    return e;
}

enum efc_status efc_coord_store_rollout_update(struct efc_coord_store *s, const char *rollout_id,
                                               enum efc_coord_rollout_state state, int32_t wave,
                                               const char *reason, int64_t now_ms)
{
    const struct arg a[] = {A_S(rollout_id), A_S(efc_coord_rollout_state_str(state)), A_I(wave),
                            A_S(reason ? reason : ""), A_I(now_ms)};
    int changes = 0;
    enum efc_status e = write1(s,
                               "UPDATE rollouts SET state = ?2, wave = ?3, reason = ?4, "
                               "updated = ?5 WHERE id = ?1",
                               a, N_ARGS(a), "rollout update", &changes);
    if (e == EFC_OK && changes != 1)
        e = efc_errf(EFC_ENOTFOUND, "store: rollout %s not found", rollout_id);
    return e;
}

/* ---- rollout devices -------------------------------------------------------------------- */

#define RDEV_COLS                                                                              \
    "device_id, wave, ota_id, state, reason, has_labels, eval_total, correct, agree, p50_ms, " \
    "p99_ms, peak_rss_bytes, deadline"

static void rdev_row(sqlite3_stmt *st, void *dst)
{
    struct efc_coord_rdev *d = dst;
    char buf[32];
    memset(d, 0, sizeof(*d));
    efc_coord_db_col_text(st, 0, d->device_id, sizeof(d->device_id));
    d->wave = sqlite3_column_int(st, 1);
    efc_coord_db_col_text(st, 2, d->ota_id, sizeof(d->ota_id));
    efc_coord_db_col_text(st, 3, buf, sizeof(buf));
    d->state = (enum efc_coord_rdev_state)parse_name(buf, RDEV_STATE, N_RDEV_STATE);
    efc_coord_db_col_text(st, 4, d->reason, sizeof(d->reason));
    d->has_labels = sqlite3_column_int(st, 5);
    d->eval_total = sqlite3_column_int(st, 6);
    d->correct = sqlite3_column_int(st, 7);
    d->agree = sqlite3_column_int(st, 8);
    d->p50_ms = sqlite3_column_double(st, 9);
    d->p99_ms = sqlite3_column_double(st, 10);
    d->peak_rss_bytes = (uint64_t)sqlite3_column_int64(st, 11);
    d->deadline_ms = sqlite3_column_int64(st, 12);
}

enum efc_status efc_coord_store_rdev_add(struct efc_coord_store *s, const char *rollout_id,
                                         const struct efc_coord_rdev *d)
{
    const struct arg a[] = {A_S(rollout_id), A_S(d->device_id), A_I(d->wave), A_S(d->ota_id),
                            A_I(d->deadline_ms)};
    enum efc_status e = write1(s,
                               "INSERT INTO rollout_devices(rollout_id, " RDEV_COLS ", updated) "
                               "VALUES(?1, ?2, ?3, ?4, 'sent', '', 0, 0, 0, 0, 0, 0, 0, ?5, ?5)",
                               a, N_ARGS(a), "rollout device insert", NULL);
    if (e == EFC_EPROTO)
        e = efc_errf(EFC_EEXIST, "store: device %s already in rollout %s", d->device_id,
                     rollout_id);
    return e;
}

enum efc_status efc_coord_store_rdev_update(struct efc_coord_store *s, const char *rollout_id,
                                            const char *device_id,
                                            enum efc_coord_rdev_state state, const char *reason,
                                            const struct efc_proto_ota_report *r, int64_t now_ms,
                                            int *changed)
{
    static const struct efc_proto_ota_report none;
    const struct efc_proto_ota_report *m = r ? r : &none;
    const struct arg a[] = {A_S(rollout_id),       A_S(device_id),
                            A_S(efc_coord_rdev_state_str(state)),
                            A_S(reason ? reason : ""), A_I(m->has_labels),
                            A_I(m->eval_total),    A_I(m->correct),
                            A_I(m->agree),         A_D(m->p50_ms),
                            A_D(m->p99_ms),        A_I(m->peak_rss_bytes),
                            A_I(now_ms)};
    /* What the device runs now: the rollout that installed that version (versions are
     * unique), else the reporting one. */
    const struct arg b[] = {A_S(m->device_id), A_S(m->active_sha256), A_I(m->active_version),
                            A_S(m->active_policy), A_S(rollout_id), A_I(now_ms)};
    enum efc_status e = efc_coord_db_begin(s);
    *changed = 0;
    if (e != EFC_OK)
        return e;
    e = exec_args(s,
                  "UPDATE rollout_devices SET state = ?3, reason = ?4, has_labels = ?5, "
                  "eval_total = ?6, correct = ?7, agree = ?8, p50_ms = ?9, p99_ms = ?10, "
                  "peak_rss_bytes = ?11, updated = ?12 WHERE rollout_id = ?1 AND "
                  "device_id = ?2 AND state IN ('sent','reverting')",
                  a, N_ARGS(a), "rollout device update", changed);
    if (e == EFC_OK && *changed && r && r->active_sha256[0])
        e = exec_args(s,
                      "INSERT INTO device_models(device_id, class, sha256, version, policy, "
                      "rollout_id, updated) SELECT ?1, class, ?2, ?3, ?4, "
                      "COALESCE((SELECT id FROM rollouts WHERE version = ?3 AND "
                      "kind = 'install'), ?5), ?6 FROM rollouts WHERE id = ?5 "
                      "ON CONFLICT(device_id) DO UPDATE SET class = excluded.class, "
                      "sha256 = excluded.sha256, version = excluded.version, "
                      "policy = excluded.policy, rollout_id = excluded.rollout_id, "
                      "updated = excluded.updated",
                      b, N_ARGS(b), "device model", NULL);
    if (e != EFC_OK) {
        *changed = 0;
        efc_coord_db_rollback(s);
        return e;
    }
    return efc_coord_db_commit(s);
}

enum efc_status efc_coord_store_rdev_revert(struct efc_coord_store *s, const char *rollout_id,
                                            const char *device_id, const char *ota_id,
                                            int64_t deadline_ms, int64_t now_ms)
{
    const struct arg a[] = {A_S(rollout_id), A_S(device_id), A_S(ota_id), A_I(deadline_ms),
                            A_I(now_ms)};
    return write1(s,
                  "UPDATE rollout_devices SET state = 'reverting', ota_id = ?3, deadline = ?4, "
                  "updated = ?5 WHERE rollout_id = ?1 AND device_id = ?2",
                  a, N_ARGS(a), "rollout device revert", NULL);
}

enum efc_status efc_coord_store_rdevs_list(struct efc_coord_store *s, const char *rollout_id,
                                           struct efc_coord_rdev **out, size_t *n)
{
    const struct arg a[] = {A_S(rollout_id)};
    return get_all(s,
                   "SELECT " RDEV_COLS " FROM rollout_devices WHERE rollout_id = ?1 "
                   "ORDER BY wave, device_id",
                   a, N_ARGS(a), rdev_row, sizeof(**out), (void **)out, n, "rollout devices");
}

enum efc_status efc_coord_store_rdev_get(struct efc_coord_store *s, const char *rollout_id,
                                         const char *device_id, struct efc_coord_rdev *out)
{
    const struct arg a[] = {A_S(device_id), A_S(rollout_id)};
    return get_one(s,
                   "SELECT " RDEV_COLS " FROM rollout_devices WHERE rollout_id = ?2 AND "
                   "device_id = ?1",
                   a, N_ARGS(a), rdev_row, out, "rollout device");
}

static void device_model_row(sqlite3_stmt *st, void *dst)
{
    struct efc_coord_device_model *m = dst;
    efc_coord_db_col_text(st, 0, m->device_id, sizeof(m->device_id));
    efc_coord_db_col_text(st, 1, m->hw_class, sizeof(m->hw_class));
    efc_coord_db_col_text(st, 2, m->sha256, sizeof(m->sha256));
    m->version = (uint64_t)sqlite3_column_int64(st, 3);
    efc_coord_db_col_text(st, 4, m->policy, sizeof(m->policy));
    efc_coord_db_col_text(st, 5, m->rollout_id, sizeof(m->rollout_id));
}

enum efc_status efc_coord_store_device_models(struct efc_coord_store *s,
                                              struct efc_coord_device_model **out, size_t *n)
{
    return get_all(s,
                   "SELECT device_id, class, sha256, version, policy, rollout_id FROM "
                   "device_models ORDER BY class, device_id",
                   NULL, 0, device_model_row, sizeof(**out), (void **)out, n, "device models");
}

static void id_row(sqlite3_stmt *st, void *dst)
{
    efc_coord_db_col_text(st, 0, dst, EFC_PROTO_ID_MAX);
}

enum efc_status efc_coord_store_class_devices(struct efc_coord_store *s, const char *hw_class,
                                              char (**ids)[EFC_PROTO_ID_MAX], size_t *n)
{
    const struct arg a[] = {A_S(hw_class)};
    return get_all(s, "SELECT id FROM devices WHERE class = ?1 AND online = 1 ORDER BY id", a,
                   N_ARGS(a), id_row, sizeof(**ids), (void **)ids, n, "class devices");
}

static void class_policy_row(sqlite3_stmt *st, void *dst)
{
    struct efc_coord_class_policy *cp = dst;
    efc_coord_db_col_text(st, 0, cp->hw_class, sizeof(cp->hw_class));
    efc_coord_db_col_text(st, 1, cp->policy, sizeof(cp->policy));
}

enum efc_status efc_coord_store_selections_list(struct efc_coord_store *s, const char *round_id,
                                                struct efc_coord_class_policy **out, size_t *n)
{
    const struct arg a[] = {A_S(round_id)};
    return get_all(s,
                   "SELECT class, policy FROM selections WHERE round_id = ?1 AND "
                   "policy IS NOT NULL ORDER BY class",
                   a, N_ARGS(a), class_policy_row, sizeof(**out), (void **)out, n,
                   "selections");
}
