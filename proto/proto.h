/* proto.h — the fleet protocol: topics, messages, codec and validation (docs/protocol.md).
 *
 * Owns the message structs exchanged over MQTT v5 between efc-coordinator and efc-agent, their
 * JSON encoding (cJSON) with a schema `version`, and decoders that validate every field (type,
 * range, length, size caps) and reject unknown versions with EFC_EPROTO and a detail naming the
 * message and field. Topic layout (prefix default "efc/v1", configurable):
 *   <prefix>/dev/<device_id>/status   agent -> all, retained; last-will marks it offline
 *   <prefix>/dev/<device_id>/job      coordinator -> agent (QoS 1)
 *   <prefix>/dev/<device_id>/result   agent -> coordinator (QoS 1)
 *   <prefix>/dev/<device_id>/ack      coordinator -> agent: result committed (QoS 1)
 *   <prefix>/dev/<device_id>/chunk/req   agent -> coordinator: artifact chunk request
 *   <prefix>/dev/<device_id>/ota      coordinator -> agent: install / roll back (QoS 1)
 *   <prefix>/dev/<device_id>/ota/report  agent -> coordinator: the outcome (QoS 1, acked)
 *   <prefix>/art/<sha256>/<device_id>    coordinator -> agent: artifact chunk
 * Identity comes from the topic, never from the body (RELIABILITY.md rule 4): decoders of
 * agent messages take the topic's device id and reject a body that claims another.
 * Ownership: messages are plain caller-storage structs (fixed-size strings); encoders return
 * a NUL-terminated buffer freed with efc_free. Thread-safe (no shared state).
 */
#ifndef EFC_PROTO_PROTO_H
#define EFC_PROTO_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"

#define EFC_PROTO_VERSION 1
#define EFC_PROTO_ID_MAX 64      /* ids: [A-Za-z0-9][A-Za-z0-9._-]{0,62} */
#define EFC_PROTO_POLICY_MAX 256 /* a policy string (DESIGN.md "Policies") */
#define EFC_PROTO_CLASS_MAX 48   /* hardware class, e.g. "x86_64-avx512vnni" */
#define EFC_PROTO_SHA256_HEX 65
#define EFC_PROTO_URL_MAX 512
#define EFC_PROTO_MSG_MAX (64 * 1024)      /* control messages (not chunks) */
#define EFC_PROTO_CHUNK_MAX (256 * 1024)   /* artifact chunk payload bytes */
#define EFC_PROTO_MANIFEST_MAX 4097        /* a signed manifest (ota/manifest.h), with NUL */
#define EFC_PROTO_OTA_PREFIX "ota-"        /* every OTA id starts so; job ids never do */

/* Agent status (retained). online = 0 is what the last-will publishes. */
struct efc_proto_status {
    int32_t version;
    char device_id[EFC_PROTO_ID_MAX];
    char hw_class[EFC_PROTO_CLASS_MAX];
    char isa[16];            /* kernel level in use ("avx512vnni") */
    char blas_core[32];      /* OpenBLAS core in use */
    int32_t cores;
    uint64_t mem_bytes;
    char agent_version[32];
    int32_t online;          /* 1 online, 0 offline (will / clean shutdown) */
    int32_t busy;            /* 1 while a job runs */
    char active_model[EFC_PROTO_SHA256_HEX]; /* "" if none */
    /* Optional on the wire (absent decodes as 0 / ""): the OTA-installed model running now. */
    uint64_t active_version;                  /* its manifest version; 0: none */
    char active_policy[EFC_PROTO_POLICY_MAX]; /* its policy; "" if none */
};

/* A job: evaluate `policy` applied to the model `model_sha256` on the device's local data. */
struct efc_proto_job {
    int32_t version;
    char job_id[EFC_PROTO_ID_MAX];
    char round_id[EFC_PROTO_ID_MAX];
    char device_id[EFC_PROTO_ID_MAX];
    char policy[EFC_PROTO_POLICY_MAX];            /* "fp32", "int8(calib=kl,weights=channel)" */
    char model_sha256[EFC_PROTO_SHA256_HEX];      /* artifact the policy starts from (.efm) */
    uint64_t model_bytes;
    char base_sha256[EFC_PROTO_SHA256_HEX];       /* FP32 base for agreement / paired counts */
    uint64_t base_bytes;
    char url[EFC_PROTO_URL_MAX];                  /* "" = fetch by MQTT chunks */
    int32_t calib_samples;                        /* local samples for calibration */
    int32_t eval_samples;                         /* disjoint local samples for evaluation */
    int32_t batch;                                /* second timed batch size (1 is always timed) */
    int32_t timed_runs;                           /* per batch size */
    uint64_t seed;
    int64_t deadline_ms;                          /* absolute, Unix epoch milliseconds */
    int64_t mem_limit_bytes;                      /* evaluation child's address-space limit */
};

enum efc_proto_result_status { EFC_PROTO_RESULT_OK = 0, EFC_PROTO_RESULT_FAILED = 1 };

/* A result. Counts, not ratios, so the coordinator can pool them: on the same eval samples,
 * base (FP32) and candidate are each right or wrong per sample; both_correct + base_only +
 * cand_only + neither = eval_total (labels present). agree = top-1 agreement of the candidate
 * with the base on those samples (with or without labels). */
struct efc_proto_result {
    int32_t version;
    char job_id[EFC_PROTO_ID_MAX];
    char round_id[EFC_PROTO_ID_MAX];
    char device_id[EFC_PROTO_ID_MAX];
    char hw_class[EFC_PROTO_CLASS_MAX];
    char policy[EFC_PROTO_POLICY_MAX];
    int32_t status;                  /* enum efc_proto_result_status */
    char error[256];                 /* why it failed ("" when OK) */
    char isa[16];
    char blas_core[32];
    int32_t has_labels;
    int32_t eval_total;
    int32_t correct;                 /* candidate correct (labels) */
    int32_t base_correct;            /* FP32 base correct on the same samples */
    int32_t both_correct, base_only, cand_only;
    int32_t agree;                   /* candidate top-1 == base top-1 */
    int32_t calib_samples;
    double calib_s;                  /* calibration time */
    double p50_ms, p90_ms, p99_ms;   /* batch 1 */
    int32_t batch;
    double batch_p50_ms;             /* at `batch` */
    uint64_t model_bytes;            /* the evaluated model's .efm bytes */
    uint64_t weight_bytes;
    uint64_t peak_activation_bytes;
    uint64_t peak_rss_bytes;         /* evaluation child's peak RSS */
    /* Optional on the wire (absent decodes as 0: agents before it): layers of the candidate
     * that ran a sparse kernel (model/exec.h "Sparse kernels per layer"), 0..65536. */
    int32_t sparse_layers;
};

/* The coordinator's application ack: the result is committed (RELIABILITY.md rule 1). */
struct efc_proto_ack {
    int32_t version;
    char job_id[EFC_PROTO_ID_MAX];
    char device_id[EFC_PROTO_ID_MAX];
};

/* OTA (docs/ota.md). An install carries a signed manifest; the agent verifies it, fetches
 * the artifact it names (MQTT chunks, or url), applies the policy's device step with its own
 * data, puts the result in its inactive slot, switches, and keeps it only if the health gate
 * passes. A rollback names the rollout whose install is to be undone (its manifest again, so
 * it is authentic): the device returns to its previous slot if, and only if, that install is
 * what runs. Every directive is answered by one report, resent until acked (ack.job_id =
 * ota_id). ota_id starts with EFC_PROTO_OTA_PREFIX. */
enum efc_proto_ota_action { EFC_PROTO_OTA_INSTALL = 0, EFC_PROTO_OTA_ROLLBACK = 1 };

struct efc_proto_ota {
    int32_t version;
    char ota_id[EFC_PROTO_ID_MAX];
    char rollout_id[EFC_PROTO_ID_MAX];
    char device_id[EFC_PROTO_ID_MAX];
    int32_t action;                         /* enum efc_proto_ota_action */
    char manifest[EFC_PROTO_MANIFEST_MAX];  /* signed manifest JSON */
    char url[EFC_PROTO_URL_MAX];            /* "" = fetch by MQTT chunks */
    /* The health gate (install): local samples for calibration and evaluation, timed runs,
     * and the limits; 0 = no limit. */
    int32_t calib_samples;
    int32_t eval_samples;
    int32_t health_runs;                    /* timed batch-1 inferences (>= 1) */
    double min_accuracy;                    /* on local labelled data, 0..1 */
    double min_agree;                       /* top-1 agreement with the FP32 artifact, 0..1 */
    double max_p99_ms;
    int64_t max_rss_bytes;
    uint64_t seed;
    int64_t deadline_ms;                    /* absolute, Unix epoch ms; the whole directive */
    int64_t mem_limit_bytes;                /* health child's address-space limit (0: none) */
};

enum efc_proto_ota_outcome {
    EFC_PROTO_OTA_INSTALLED = 0,   /* new model active and committed */
    EFC_PROTO_OTA_ROLLED_BACK = 1, /* new model failed its health gate; previous one active */
    EFC_PROTO_OTA_REFUSED = 2,     /* manifest or artifact refused; nothing changed */
    EFC_PROTO_OTA_FAILED = 3,      /* download, disk or other failure; nothing changed */
    EFC_PROTO_OTA_REVERTED = 4,    /* rollback directive done: previous model active */
};

struct efc_proto_ota_report {
    int32_t version;
    char ota_id[EFC_PROTO_ID_MAX];
    char rollout_id[EFC_PROTO_ID_MAX];
    char device_id[EFC_PROTO_ID_MAX];
    int32_t action;                           /* of the directive */
    int32_t outcome;                          /* enum efc_proto_ota_outcome */
    char reason[256];                         /* why (stable code first: "ROLLBACK: ...") */
    char active_sha256[EFC_PROTO_SHA256_HEX]; /* artifact running now, "" if none */
    uint64_t active_version;
    char active_policy[EFC_PROTO_POLICY_MAX];
    /* The health evaluation of the new model (0 when it did not run). */
    int32_t has_labels, eval_total, correct, agree;
    double p50_ms, p99_ms;
    uint64_t peak_rss_bytes;
};

/* Encoders: JSON text (efc_free). Errors: EFC_EINVAL for a struct that would not decode. */
enum efc_status efc_proto_status_encode(const struct efc_proto_status *m, char **out);
enum efc_status efc_proto_job_encode(const struct efc_proto_job *m, char **out);
enum efc_status efc_proto_result_encode(const struct efc_proto_result *m, char **out);
enum efc_status efc_proto_ack_encode(const struct efc_proto_ack *m, char **out);
enum efc_status efc_proto_ota_encode(const struct efc_proto_ota *m, char **out);
enum efc_status efc_proto_ota_report_encode(const struct efc_proto_ota_report *m, char **out);

/* Decoders: payload of len bytes (not NUL-terminated), validated field by field; EFC_EPROTO
 * with a detail. topic_device: the device id taken from the topic (agent messages must match
 * it; may be NULL for messages the agent receives). */
enum efc_status efc_proto_status_decode(const void *buf, size_t len, const char *topic_device,
                                        struct efc_proto_status *out);
enum efc_status efc_proto_job_decode(const void *buf, size_t len, struct efc_proto_job *out);
enum efc_status efc_proto_result_decode(const void *buf, size_t len, const char *topic_device,
                                        struct efc_proto_result *out);
enum efc_status efc_proto_ack_decode(const void *buf, size_t len, struct efc_proto_ack *out);
enum efc_status efc_proto_ota_decode(const void *buf, size_t len, struct efc_proto_ota *out);
enum efc_status efc_proto_ota_report_decode(const void *buf, size_t len, const char *topic_device,
                                            struct efc_proto_ota_report *out);
/* Names of actions and outcomes ("install", "rolled_back"); "?" when out of range. */
const char *efc_proto_ota_action_str(int32_t action);
const char *efc_proto_ota_outcome_str(int32_t outcome);

/* Topics. kind: "status", "job", "result", "ack", "chunk/req", "ota", "ota/report". Returns
 * EFC_EINVAL if the result would not fit or the id is not a valid id. */
enum efc_status efc_proto_topic(const char *prefix, const char *device_id, const char *kind,
                                char *out, size_t out_len);
/* Parse "<prefix>/dev/<id>/<kind>": device id and kind out; EFC_EPROTO if it does not match. */
enum efc_status efc_proto_topic_parse(const char *prefix, const char *topic, char *device_id,
                                      size_t device_len, char *kind, size_t kind_len);
/* 1 if s is a valid id ([A-Za-z0-9][A-Za-z0-9._-]{0,62}). */
int efc_proto_id_valid(const char *s);

#endif
