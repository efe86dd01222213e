/* rollout.h — OTA rollouts of the coordinator (docs/ota.md "Rollouts").
 *
 * A rollout takes one (hardware class, policy, artifact) to the devices of that class in
 * waves (default "1,10%,50%,100%": one canary, then cumulative shares of the class), each
 * wave gated on the devices' own health reports. A wave passes when every device in it has
 * reported; a device counts as failed when it did not install (refused, failed, rolled back
 * by its own health gate, or silent past its deadline) or when it installed but regressed:
 * accuracy below the round's expected accuracy minus max_acc_drop minus two standard errors
 * of the device's sample (its data differ from the round's devices'), or p99 above the
 * round's expected p99 times max_p99_ratio. More than max_failures failed devices in a wave halt the
 * rollout: the devices of that wave that installed are told to roll back, no device of a
 * later wave is touched, and the reason names the devices and why. A rollback rollout returns
 * a class to its previous policy: it installs the previous done rollout's artifact again
 * under a new manifest version (anti-rollback holds), in waves like any install, and marks
 * the undone rollout rolled_back once done.
 * Everything is in the store (schema v5, store_int.h): a restarted coordinator continues a
 * rollout where it stopped (directives not yet answered are sent again; agents are
 * idempotent per ota_id).
 * Ownership: caller-storage structs; lists are efc_malloc'd (efc_free). One thread per store.
 */
#ifndef EFC_COORDINATOR_ROLLOUT_H
#define EFC_COORDINATOR_ROLLOUT_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"
#include "coordinator/store.h"
#include "proto/proto.h"

#define EFC_COORD_WAVES_DEFAULT "1,10%,50%,100%"
#define EFC_COORD_WAVES_MAX 16
#define EFC_COORD_WAVES_STR_MAX 128
/* p99 regressions smaller than this (ms) are noise, never a failure (docs/ota.md). */
#define EFC_COORD_P99_FLOOR_MS 1.0

enum efc_coord_rollout_state {
    EFC_COORD_ROLLOUT_RUNNING = 0,
    EFC_COORD_ROLLOUT_HALTED = 1,      /* a wave failed its gate; that wave rolled back */
    EFC_COORD_ROLLOUT_DONE = 2,        /* every wave passed */
    EFC_COORD_ROLLOUT_ROLLED_BACK = 3, /* undone later by a rollback rollout */
};

enum efc_coord_rollout_kind { EFC_COORD_ROLLOUT_INSTALL = 0, EFC_COORD_ROLLOUT_ROLLBACK = 1 };

/* A device's state in a rollout. */
enum efc_coord_rdev_state {
    EFC_COORD_RDEV_SENT = 0,        /* directive sent, no report yet */
    EFC_COORD_RDEV_INSTALLED = 1,   /* new model committed on the device (healthy) */
    EFC_COORD_RDEV_ROLLED_BACK = 2, /* its own health gate failed: previous model kept */
    EFC_COORD_RDEV_REFUSED = 3,     /* manifest or artifact refused */
    EFC_COORD_RDEV_FAILED = 4,      /* download / disk / other failure */
    EFC_COORD_RDEV_TIMEOUT = 5,     /* no report before the deadline */
    EFC_COORD_RDEV_REGRESSED = 6,   /* installed, but the coordinator's gate failed it */
    EFC_COORD_RDEV_REVERTING = 7,   /* told to roll back (wave halted / class rollback) */
    EFC_COORD_RDEV_REVERTED = 8,    /* rolled back on order: previous model active */
};

/* What gates a wave (coordinator side) and what the agents check (health). */
struct efc_coord_gate {
    int32_t max_failures;   /* failed devices allowed per wave (default 0) */
    double max_acc_drop;    /* vs expected_acc, absolute (default 0.02) */
    double max_p99_ratio;   /* vs expected_p99_ms (default 3.0; 0 = off) */
    double expected_acc;    /* pooled accuracy of (class, policy) in its round; < 0: unknown */
    double expected_p99_ms; /* median p99 of (class, policy) in its round; 0: unknown */
    double expected_agree;  /* pooled top-1 agreement with the base in its round; < 0: unknown */
    int64_t report_timeout_ms; /* per directive (default 600 s) */
    /* Sent to the agents (struct efc_proto_ota). */
    int32_t calib_samples, eval_samples, health_runs;
    double min_accuracy, min_agree, max_p99_ms;
    int64_t mem_limit_bytes;
    int64_t max_rss_bytes;  /* the health child's peak RSS ceiling (0: none) */
};

struct efc_coord_rollout {
    char rollout_id[EFC_PROTO_ID_MAX];
    char hw_class[EFC_PROTO_CLASS_MAX];
    char policy[EFC_PROTO_POLICY_MAX];
    char round_id[EFC_PROTO_ID_MAX];
    char sha256[EFC_PROTO_SHA256_HEX]; /* the artifact */
    uint64_t bytes;
    uint64_t version;                  /* of its manifest */
    char manifest[EFC_PROTO_MANIFEST_MAX];
    enum efc_coord_rollout_kind kind;
    char target[EFC_PROTO_ID_MAX];     /* rollback: the rollout it undoes; else "" */
    char waves[EFC_COORD_WAVES_STR_MAX];
    int32_t wave;                      /* current wave, 0-based */
    enum efc_coord_rollout_state state;
    char reason[512];
    struct efc_coord_gate gate;
    int64_t created_ms, updated_ms;
};

struct efc_coord_rdev {
    char device_id[EFC_PROTO_ID_MAX];
    int32_t wave;
    char ota_id[EFC_PROTO_ID_MAX];
    enum efc_coord_rdev_state state;
    char reason[256];
    int32_t has_labels, eval_total, correct, agree;
    double p50_ms, p99_ms;
    uint64_t peak_rss_bytes;
    int64_t deadline_ms;
};

/* What a device runs, as its last OTA report said. */
struct efc_coord_device_model {
    char device_id[EFC_PROTO_ID_MAX];
    char hw_class[EFC_PROTO_CLASS_MAX];
    char sha256[EFC_PROTO_SHA256_HEX];
    uint64_t version;
    char policy[EFC_PROTO_POLICY_MAX];
    char rollout_id[EFC_PROTO_ID_MAX];
};

const char *efc_coord_rollout_state_str(enum efc_coord_rollout_state s);
const char *efc_coord_rdev_state_str(enum efc_coord_rdev_state s);
/* 1 if the device state counts as a failure of its wave. */
int efc_coord_rdev_failed(enum efc_coord_rdev_state s);

/* ---- pure planning (no store) --------------------------------------------------------- */

/* Parse "1,10%,50%,100%": each entry an absolute device count (>= 1) or a percentage of the
 * class (1..100 %); cumulative targets must not decrease and the last must be "100%".
 * EFC_EINVAL with a detail otherwise. */
enum efc_status efc_coord_waves_parse(const char *s, int32_t *n_waves);
/* Cumulative number of devices that wave k (0-based) brings the class to, for n_class
 * devices: counts are capped at n_class; percentages round up; at least 1 while n_class > 0. */
int32_t efc_coord_wave_target(const char *waves, int32_t k, int32_t n_class);
/* The state a report puts a device in, with the coordinator's regression gate applied to an
 * installed one (reason gets why, "" when healthy). */
enum efc_coord_rdev_state efc_coord_gate_report(const struct efc_coord_gate *g,
                                                const struct efc_proto_ota_report *r,
                                                char *reason, size_t reason_len);

/* ---- store (rollout_store.c; schema v5) ----------------------------------------------- */

/* The artifact a policy of a round starts from (recorded when the round's candidates are
 * built). */
enum efc_status efc_coord_store_round_artifact_put(struct efc_coord_store *s,
                                                   const char *round_id, const char *policy,
                                                   const char *sha256);
enum efc_status efc_coord_store_round_artifact_get(struct efc_coord_store *s,
                                                   const char *round_id, const char *policy,
                                                   char sha256[EFC_PROTO_SHA256_HEX]);
/* The next manifest version (committed at once: versions only grow, gaps are fine). */
enum efc_status efc_coord_store_ota_version_next(struct efc_coord_store *s, uint64_t *out);

/* Insert a new rollout (state running, wave 0). EFC_EEXIST if the id exists; EFC_EBUSY if the
 * class already has a running rollout (*busy_id, may be NULL, gets its id). */
enum efc_status efc_coord_store_rollout_create(struct efc_coord_store *s,
                                               const struct efc_coord_rollout *r,
                                               char *busy_id, size_t busy_len);
enum efc_status efc_coord_store_rollout_get(struct efc_coord_store *s, const char *rollout_id,
                                            struct efc_coord_rollout *out);
/* The running rollout of a class (EFC_ENOTFOUND if none). */
enum efc_status efc_coord_store_rollout_running(struct efc_coord_store *s, const char *hw_class,
                                                struct efc_coord_rollout *out);
/* The newest rollout of a class with version < below_version (UINT64_MAX: any) in state
 * done (done_only) or done / halted; EFC_ENOTFOUND if none. */
enum efc_status efc_coord_store_rollout_latest(struct efc_coord_store *s, const char *hw_class,
                                               int done_only, uint64_t below_version,
                                               struct efc_coord_rollout *out);
/* Set state, current wave and reason (updated = now_ms). */
enum efc_status efc_coord_store_rollout_update(struct efc_coord_store *s, const char *rollout_id,
                                               enum efc_coord_rollout_state state, int32_t wave,
                                               const char *reason, int64_t now_ms);
/* Every rollout, newest first (*out freed with efc_free). */
enum efc_status efc_coord_store_rollouts_list(struct efc_coord_store *s,
                                              struct efc_coord_rollout **out, size_t *n);

/* Add a device to a wave (state sent). EFC_EEXIST if it is already in the rollout. */
enum efc_status efc_coord_store_rdev_add(struct efc_coord_store *s, const char *rollout_id,
                                         const struct efc_coord_rdev *d);
/* Set a device's state (and, from a report, its figures; r may be NULL). Only moves out of
 * SENT or REVERTING (a duplicate report changes nothing: *changed = 0). An INSTALLED,
 * REVERTED or ROLLED_BACK report also records what the device runs now (device_models). */
enum efc_status efc_coord_store_rdev_update(struct efc_coord_store *s, const char *rollout_id,
                                            const char *device_id,
                                            enum efc_coord_rdev_state state, const char *reason,
                                            const struct efc_proto_ota_report *r, int64_t now_ms,
                                            int *changed);
/* Re-arm a device for a rollback order: state REVERTING, new ota_id and deadline. */
enum efc_status efc_coord_store_rdev_revert(struct efc_coord_store *s, const char *rollout_id,
                                            const char *device_id, const char *ota_id,
                                            int64_t deadline_ms, int64_t now_ms);
enum efc_status efc_coord_store_rdevs_list(struct efc_coord_store *s, const char *rollout_id,
                                           struct efc_coord_rdev **out, size_t *n);
/* One device of a rollout (EFC_ENOTFOUND if it is not in it). */
enum efc_status efc_coord_store_rdev_get(struct efc_coord_store *s, const char *rollout_id,
                                         const char *device_id, struct efc_coord_rdev *out);
/* What each device runs (device_models), by class then device; *out freed with efc_free. */
enum efc_status efc_coord_store_device_models(struct efc_coord_store *s,
                                              struct efc_coord_device_model **out, size_t *n);
/* The chosen policy per class of a round (classes with no policy meeting the SLA are left
 * out), sorted by class; *out freed with efc_free. */
struct efc_coord_class_policy {
    char hw_class[EFC_PROTO_CLASS_MAX];
    char policy[EFC_PROTO_POLICY_MAX];
};
enum efc_status efc_coord_store_selections_list(struct efc_coord_store *s, const char *round_id,
                                                struct efc_coord_class_policy **out, size_t *n);
/* Online devices of a class, sorted by id (*ids efc_malloc'd). */
enum efc_status efc_coord_store_class_devices(struct efc_coord_store *s, const char *hw_class,
                                              char (**ids)[EFC_PROTO_ID_MAX], size_t *n);

/* The rollout state as an HTML fragment (rollout_report.c): what each device runs, then per
 * class its rollouts, newest first, with each device's state. *out is NULL (EFC_OK) when
 * there is no rollout; else efc_free it. */
enum efc_status efc_coord_rollout_html(struct efc_coord_store *s, char **out);

#endif
