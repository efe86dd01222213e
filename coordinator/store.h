/* store.h — the coordinator's durable state in SQLite (docs/coordinator.md "Store").
 *
 * Owns one SQLite database: devices, models, rounds (+ their policy grid), jobs, results and
 * selections. WAL journal, synchronous=FULL (a result is acked only after its COMMIT is on
 * disk), foreign keys on, a busy timeout; every write is one transaction. The schema is
 * versioned with PRAGMA user_version and created or migrated at open. Everything needed to
 * continue a round after a restart is in the database: there is no in-memory-only state.
 * Results are idempotent: UNIQUE(job_id, device_id); a duplicate changes nothing and is
 * reported so the caller can still ack. SQLite codes are translated to efc_status with
 * sqlite3_errmsg in the detail (efc_err_detail).
 * Thread-safety: one thread per store (the coordinator's event-loop thread). Ownership: all
 * inputs are borrowed; list outputs are efc_malloc'd arrays freed with efc_free.
 */
#ifndef EFC_COORDINATOR_STORE_H
#define EFC_COORDINATOR_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"
#include "coordinator/select.h"
#include "proto/proto.h"

#define EFC_COORD_SCHEMA_VERSION 5
#define EFC_COORD_MAX_POLICIES 64
#define EFC_COORD_MAX_ATTEMPTS_DEFAULT 3
#define EFC_COORD_BUSY_TIMEOUT_MS 5000

struct efc_coord_store;

enum efc_coord_job_state {
    EFC_COORD_JOB_PENDING = 0,  /* waiting for a device of its class */
    EFC_COORD_JOB_ASSIGNED = 1, /* sent to device_id, due by deadline_ms */
    EFC_COORD_JOB_DONE = 2,     /* an OK result is stored */
    EFC_COORD_JOB_FAILED = 3,   /* a failed result is stored (the candidate crashed, ...) */
    EFC_COORD_JOB_EXPIRED = 4   /* attempts exhausted without a result */
};

enum efc_coord_round_state { EFC_COORD_ROUND_RUNNING = 0, EFC_COORD_ROUND_DONE = 1 };

enum efc_coord_model_role { EFC_COORD_MODEL_BASE = 0, EFC_COORD_MODEL_CANDIDATE = 1 };

struct efc_coord_round {
    char round_id[EFC_PROTO_ID_MAX];
    char base_sha256[EFC_PROTO_SHA256_HEX];
    int32_t n_policies;
    char policies[EFC_COORD_MAX_POLICIES][EFC_PROTO_POLICY_MAX];
    struct efc_coord_sla sla;
    enum efc_coord_objective objective;
    int32_t devices_per_class; /* K: each candidate on K devices of each class */
    int32_t max_attempts;      /* assignments per job before it expires; 0 = default */
    enum efc_coord_round_state state;
    int64_t created_ms;
};

struct efc_coord_job {
    char job_id[EFC_PROTO_ID_MAX];
    char round_id[EFC_PROTO_ID_MAX];
    char hw_class[EFC_PROTO_CLASS_MAX];
    char device_id[EFC_PROTO_ID_MAX]; /* "" when not assigned */
    char policy[EFC_PROTO_POLICY_MAX];
    enum efc_coord_job_state state;
    int64_t deadline_ms;
    int32_t attempts;
};

struct efc_coord_device {
    char device_id[EFC_PROTO_ID_MAX];
    char hw_class[EFC_PROTO_CLASS_MAX];
    char isa[16];
    int32_t online;
    int64_t last_seen_ms;
};

struct efc_coord_class_progress {
    char hw_class[EFC_PROTO_CLASS_MAX];
    int32_t pending, assigned, done, failed, expired;
    int32_t live_devices; /* online devices of the class */
};

/* Open (create or migrate) the database at path. Errors: EFC_EIO (cannot open, not a
 * database), EFC_EVERSION (schema newer than this build), EFC_ENOMEM. */
enum efc_status efc_coord_store_open(const char *path, struct efc_coord_store **out);
/* Close; NULL is a no-op. */
void efc_coord_store_close(struct efc_coord_store *s);

/* Group commit. Between batch_begin and batch_commit every operation below runs inside one
 * transaction (each in its own savepoint: a failed operation rolls back alone, as it would on
 * its own), begun at the first write. Nothing is durable, and nothing may be acknowledged to a
 * peer, before batch_commit returns EFC_OK; on an error the whole batch is rolled back.
 * Reads see the batch's writes. The coordinator wraps one loop pass (a burst of results and
 * the job assignments that follow) in a batch: one fsync instead of one per operation. */
enum efc_status efc_coord_store_batch_begin(struct efc_coord_store *s);
enum efc_status efc_coord_store_batch_commit(struct efc_coord_store *s);

/* Insert or update a device from its status (status JSON, class, ISA, last_seen = now_ms).
 * A device going offline (online == 0) releases its assigned jobs back to pending (or to
 * expired once their attempts are spent); *n_released (may be NULL) counts them. */
enum efc_status efc_coord_store_device_upsert(struct efc_coord_store *s,
                                              const struct efc_proto_status *st, int64_t now_ms,
                                              int32_t *n_released);
/* EFC_ENOTFOUND if unknown. */
enum efc_status efc_coord_store_device_get(struct efc_coord_store *s, const char *device_id,
                                           struct efc_coord_device *out);

/* Register a model artifact (idempotent on sha256). */
enum efc_status efc_coord_store_model_put(struct efc_coord_store *s, const char *sha256,
                                          const char *path, uint64_t bytes,
                                          enum efc_coord_model_role role);
/* path (path_len bytes) and bytes of a model; EFC_ENOTFOUND if unknown. */
enum efc_status efc_coord_store_model_get(struct efc_coord_store *s, const char *sha256,
                                          char *path, size_t path_len, uint64_t *bytes);

/* Create a round (state running) and plan its jobs for every class known in the devices table.
 * EFC_EEXIST if the round id exists; EFC_EINVAL for a bad spec (ids, 1..64 policies, K >= 1,
 * SLA value in [0, 1]). */
enum efc_status efc_coord_store_round_create(struct efc_coord_store *s,
                                             const struct efc_coord_round *r);
/* Plan jobs of a running round for one class (K jobs per policy, ids "<round>.<n>"), if that
 * class has none yet; *n_created (may be NULL) gets the number of new jobs. Call when a device
 * of a new class appears mid-round. */
enum efc_status efc_coord_store_round_plan_class(struct efc_coord_store *s, const char *round_id,
                                                 const char *hw_class, int32_t *n_created);
/* EFC_ENOTFOUND if unknown. */
enum efc_status efc_coord_store_round_get(struct efc_coord_store *s, const char *round_id,
                                          struct efc_coord_round *out);
/* Ids of running rounds (resume after restart): *ids is an efc_malloc'd array of n entries. */
enum efc_status efc_coord_store_rounds_running(struct efc_coord_store *s,
                                               char (**ids)[EFC_PROTO_ID_MAX], size_t *n);
/* Per-class job counts of a round (+ live devices per class); *out freed with efc_free. */
enum efc_status efc_coord_store_round_progress(struct efc_coord_store *s, const char *round_id,
                                               struct efc_coord_class_progress **out,
                                               size_t *n);
/* Mark a round done. */
enum efc_status efc_coord_store_round_finish(struct efc_coord_store *s, const char *round_id);

/* Assign the next pending job of a running round to device_id: same class, a policy the device
 * has not run (nor is running) in that round, and only if the device has no assigned job (one
 * job per device at a time). Sets state assigned, deadline_ms, attempts + 1.
 * EFC_ENOTFOUND if the device is unknown or offline, or there is nothing for it; EFC_EBUSY if
 * it already has an assigned job (*out then holds that job, so it can be re-sent). */
enum efc_status efc_coord_store_job_assign(struct efc_coord_store *s, const char *device_id,
                                           int64_t deadline_ms, struct efc_coord_job *out);
/* Release the job assigned to device_id (device offline, job refused): back to pending, or
 * expired when its attempts reached the round's max. No-op if none. */
enum efc_status efc_coord_store_job_release(struct efc_coord_store *s, const char *device_id);
/* Release every assigned job whose deadline_ms < now_ms; *n_expired (may be NULL) gets how
 * many. */
enum efc_status efc_coord_store_jobs_expire(struct efc_coord_store *s, int64_t now_ms,
                                            int32_t *n_expired);
/* EFC_ENOTFOUND if unknown. */
enum efc_status efc_coord_store_job_get(struct efc_coord_store *s, const char *job_id,
                                        struct efc_coord_job *out);

/* Store a result and close its job, in one transaction. The job must exist in the result's
 * round (EFC_ENOTFOUND otherwise; EFC_EPROTO if round or class disagree). *duplicate = 1 (and
 * nothing changes) when (job_id, device_id) is already stored; the caller acks either way.
 * A late result from a device whose job was reassigned is still stored (it is a valid
 * measurement) and closes the job. */
enum efc_status efc_coord_store_result_put(struct efc_coord_store *s,
                                           const struct efc_proto_result *r, int64_t now_ms,
                                           int *duplicate);
/* All results of a round, in insertion order; *out freed with efc_free. */
enum efc_status efc_coord_store_results_list(struct efc_coord_store *s, const char *round_id,
                                             struct efc_proto_result **out, size_t *n);

/* Store (replace) the selection of (round, class). */
enum efc_status efc_coord_store_selection_put(struct efc_coord_store *s, const char *round_id,
                                              const char *hw_class, const char *policy,
                                              const char *report_json);
/* The chosen policy of (round, class); EFC_ENOTFOUND if none stored. */
enum efc_status efc_coord_store_selection_get(struct efc_coord_store *s, const char *round_id,
                                              const char *hw_class, char *policy,
                                              size_t policy_len);

/* PRAGMA integrity_check: EFC_OK when "ok", EFC_EPROTO with the first message otherwise. */
enum efc_status efc_coord_store_check(struct efc_coord_store *s);

const char *efc_coord_job_state_str(enum efc_coord_job_state st);

#endif
