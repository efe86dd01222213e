/* rollout_cmd.h — efc-coordinator's `rollout`, `rollback` and `status` subcommands
 * (docs/ota.md "Rollouts"). Part of the efc-coordinator program, not of the library: it drives
 * MQTT (proto/mqtt.h) and signs manifests (ota/manifest.h) around the store's rollout tables
 * (rollout.h).
 *
 * rollout:  for each class of a round's selection (or one --class, optionally with an explicit
 *           --policy of that round), sign a manifest for the artifact the policy starts from
 *           and take it to the class's online devices wave by wave; or continue the class's
 *           running rollout (a restarted coordinator). Returns when every rollout is done or
 *           halted (its failed wave rolled back), or at the timeout (it stays open).
 * rollback: undo the latest install rollout of --class on every device where it runs (the
 *           devices return to their previous slot).
 * status:   per class, what each device runs, each rollout's wave progress and failures
 *           (no broker).
 * Exit status: 0 when every rollout ended done (rollback: every device reverted); 1 when one
 * halted, failed or timed out; 2 for bad usage. One thread.
 */
#ifndef EFC_COORDINATOR_ROLLOUT_CMD_H
#define EFC_COORDINATOR_ROLLOUT_CMD_H

#include <signal.h>
#include <stdint.h>

#include "coordinator/store.h"

struct efc_coord_rollout_opts {
    const char *cmd; /* "rollout", "rollback" or "status" */
    const char *broker, *prefix, *tls_ca, *tls_cert, *tls_key;
    const char *round_id;  /* rollout: whose selection (and artifacts) */
    const char *hw_class;  /* only this class (rollback: required) */
    const char *policy;    /* rollout: this policy of the round instead of the selection */
    const char *sign_key;  /* rollout: private key (PEM) signing the manifests */
    const char *waves;     /* EFC_COORD_WAVES_DEFAULT */
    const char *url_base;  /* artifacts also served at URL_BASE/<file name>; NULL: MQTT only */
    int64_t max_failures;
    double max_acc_drop, max_p99_ratio;
    int64_t calib, eval, health_runs, mem_limit, max_rss;
    double min_accuracy, min_agree, max_p99_ms; /* < 0: derived from the round */
    int64_t report_timeout_s, manifest_days, timeout_s;
};

int efc_coord_rollout_cmd(const struct efc_coord_rollout_opts *o, struct efc_coord_store *s,
                          volatile sig_atomic_t *stop);

#endif
