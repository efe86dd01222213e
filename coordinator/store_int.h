/* store_int.h — private to the coordinator's store files (store.c, rollout_store.c): the
 * store object and the SQLite helpers they share. Not a public header.
 *
 * efc_coord_db_begin/commit/rollback wrap one operation's transaction (a savepoint inside a
 * batch, see store.h); errors are translated by efc_coord_db_err (EFC_EBUSY, EFC_ENOMEM,
 * EFC_ENOSPC, EFC_EPROTO for constraints, EFC_EIO otherwise) with sqlite3_errmsg in the
 * detail. One thread per store.
 */
#ifndef EFC_COORDINATOR_STORE_INT_H
#define EFC_COORDINATOR_STORE_INT_H

#include <sqlite3.h>
#include <stddef.h>

#include "common/efc_status.h"

struct efc_coord_store {
    sqlite3 *db;
    int batch; /* inside efc_coord_store_batch_begin .. _commit */
    int in_tx; /* the batch's transaction has begun (lazily, at its first write) */
};

/* Schema v5 (OTA): created by the migration in store.c, used by rollout_store.c. */
#define EFC_COORD_SCHEMA_V5                                                                    \
    "CREATE TABLE round_artifacts("                                                            \
    "  round_id TEXT NOT NULL REFERENCES rounds(id), policy TEXT NOT NULL,"                    \
    "  sha256 TEXT NOT NULL REFERENCES models(sha256), PRIMARY KEY(round_id, policy));"        \
    "CREATE TABLE ota_counter(id INTEGER PRIMARY KEY CHECK(id = 1),"                           \
    "  version INTEGER NOT NULL);"                                                             \
    "INSERT INTO ota_counter VALUES(1, 0);"                                                    \
    "CREATE TABLE rollouts("                                                                   \
    "  id TEXT PRIMARY KEY, class TEXT NOT NULL, policy TEXT NOT NULL,"                        \
    "  round_id TEXT NOT NULL, sha256 TEXT NOT NULL REFERENCES models(sha256),"                \
    "  bytes INTEGER NOT NULL, version INTEGER NOT NULL UNIQUE, manifest TEXT NOT NULL,"       \
    "  kind TEXT NOT NULL CHECK(kind IN ('install','rollback')), target TEXT NOT NULL,"        \
    "  waves TEXT NOT NULL, wave INTEGER NOT NULL,"                                            \
    "  state TEXT NOT NULL CHECK(state IN ('running','halted','done','rolled_back')),"         \
    "  reason TEXT NOT NULL, gate TEXT NOT NULL,"                                              \
    "  created INTEGER NOT NULL, updated INTEGER NOT NULL);"                                   \
    "CREATE INDEX rollouts_class ON rollouts(class, state);"                                   \
    "CREATE TABLE rollout_devices("                                                            \
    "  rollout_id TEXT NOT NULL REFERENCES rollouts(id), device_id TEXT NOT NULL,"             \
    "  wave INTEGER NOT NULL, ota_id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,"               \
    "  reason TEXT NOT NULL, has_labels INTEGER NOT NULL, eval_total INTEGER NOT NULL,"        \
    "  correct INTEGER NOT NULL, agree INTEGER NOT NULL, p50_ms REAL NOT NULL,"                \
    "  p99_ms REAL NOT NULL, peak_rss_bytes INTEGER NOT NULL, deadline INTEGER NOT NULL,"      \
    "  updated INTEGER NOT NULL, PRIMARY KEY(rollout_id, device_id));"                         \
    "CREATE TABLE device_models("                                                              \
    "  device_id TEXT PRIMARY KEY, class TEXT NOT NULL, sha256 TEXT NOT NULL,"                 \
    "  version INTEGER NOT NULL, policy TEXT NOT NULL, rollout_id TEXT NOT NULL,"              \
    "  updated INTEGER NOT NULL);"                                                             \
    "PRAGMA user_version = 5"

enum efc_status efc_coord_db_err(struct efc_coord_store *s, int rc, const char *what);
enum efc_status efc_coord_db_begin(struct efc_coord_store *s);
enum efc_status efc_coord_db_commit(struct efc_coord_store *s);
void efc_coord_db_rollback(struct efc_coord_store *s);
enum efc_status efc_coord_db_prep(struct efc_coord_store *s, const char *sql, sqlite3_stmt **st);
/* Step a statement that returns no row (or whose rows are ignored). */
enum efc_status efc_coord_db_step_done(struct efc_coord_store *s, sqlite3_stmt *st,
                                       const char *what);
void efc_coord_db_col_text(sqlite3_stmt *st, int i, char *dst, size_t len);

#endif
