/* rollout_cmd.c — efc-coordinator's rollout, rollback and status subcommands (rollout_cmd.h,
 * docs/ota.md "Rollouts").
 *
 * One thread, one loop (STYLE.md 2.6): MQTT I/O and callbacks (statuses -> devices table,
 * chunk requests -> artifact chunks, OTA reports -> store, then ack), then one step of every
 * rollout this run drives: expire silent devices, plan the current wave, judge a finished
 * wave (pass -> next wave; too many failures -> halt and roll that wave back), resend
 * unanswered directives. Every decision is written to the store before it is acted on, so a
 * restart continues from the store alone.
 */
#include "coordinator/rollout_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_log.h"
#include "common/efc_sha256.h"
#include "common/efc_time.h"
#include "coordinator/rollout.h"
#include "ota/manifest.h"
#include "proto/chunk.h"
#include "proto/mqtt.h"
#include "proto/proto.h"

#define MOD "rollout"
#define TOPIC_MAX 256
#define PATH_MAX_ 4096
#define LOOP_MS 50
#define SETTLE_MS 2000       /* retained statuses arrive right after subscribing */
#define RESEND_MS 20000      /* unanswered directives are published again */
#define MAX_RUN 64           /* rollouts one run drives (one per class) */
#define FLUSH_MS 5000
#define KEY_MAX (64u << 10)

struct run {
    const struct efc_coord_rollout_opts *o;
    struct efc_coord_store *s;
    struct efc_mqtt *m;
    char ids[MAX_RUN][EFC_PROTO_ID_MAX]; /* the rollouts this run drives */
    size_t n;
    int64_t settle_until_ms, last_resend_ms;
    int resend_all; /* (re)connected: publish every unanswered directive now */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- directives ------------------------------------------------------------------------- */

static void send_directive(struct run *x, const struct efc_coord_rollout *r,
                           const struct efc_coord_rdev *d, int32_t action)
{
    struct efc_proto_ota *m = efc_calloc(1, sizeof(*m));
    char topic[TOPIC_MAX], path[PATH_MAX_];
    char *buf = NULL;
    uint64_t bytes = 0;
    int64_t left_ms = d->deadline_ms - now_ms();

    if (!m)
        return;
    m->version = EFC_PROTO_VERSION;
    snprintf(m->ota_id, sizeof(m->ota_id), "%s", d->ota_id);
    snprintf(m->rollout_id, sizeof(m->rollout_id), "%s", r->rollout_id);
    snprintf(m->device_id, sizeof(m->device_id), "%s", d->device_id);
    m->action = action;
    snprintf(m->manifest, sizeof(m->manifest), "%s", r->manifest);
    if (x->o->url_base && action == EFC_PROTO_OTA_INSTALL &&
        efc_coord_store_model_get(x->s, r->sha256, path, sizeof(path), &bytes) == EFC_OK) {
        const char *base = strrchr(path, '/');
        int w = snprintf(m->url, sizeof(m->url), "%.200s/%.200s", x->o->url_base,
                         base ? base + 1 : path);
        if (w < 0 || (size_t)w >= sizeof(m->url))
            m->url[0] = '\0'; /* too long: the MQTT transport */
    }
    m->calib_samples = r->gate.calib_samples;
    m->eval_samples = r->gate.eval_samples > 0 ? r->gate.eval_samples : 1;
    m->health_runs = r->gate.health_runs > 0 ? r->gate.health_runs : 1;
    m->min_accuracy = r->gate.min_accuracy;
    m->min_agree = r->gate.min_agree;
    m->max_p99_ms = r->gate.max_p99_ms;
    m->seed = 1;
    m->deadline_ms = d->deadline_ms;
    m->mem_limit_bytes = r->gate.mem_limit_bytes;
    m->max_rss_bytes = r->gate.max_rss_bytes;
    if (efc_proto_topic(x->o->prefix, d->device_id, "ota", topic, sizeof(topic)) != EFC_OK ||
        efc_proto_ota_encode(m, &buf) != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "directive %s for %s: %s", d->ota_id, d->device_id,
                efc_err_detail());
        efc_free(m);
        return;
    }
    /* Message expiry = the deadline: an agent that comes back later gets it resent (or
     * the device has timed out of the wave), never a stale copy from the broker. */
    if (efc_mqtt_publish(x->m, topic, buf, strlen(buf), 1, 0,
                         left_ms > 1000 ? (uint32_t)(left_ms / 1000) : 1) == EFC_OK)
        efc_log(EFC_LOG_INFO, MOD, "%s %s -> device=%s (%s, wave %d)",
                efc_proto_ota_action_str(action), r->rollout_id, d->device_id, d->ota_id,
                (int)d->wave + 1);
    efc_free(buf);
    efc_free(m);
}

/* ---- incoming --------------------------------------------------------------------------- */

static void send_ack(struct run *x, const char *dev, const char *ota_id)
{
    struct efc_proto_ack ack = {.version = EFC_PROTO_VERSION};
    char topic[TOPIC_MAX];
    char *buf = NULL;
    snprintf(ack.job_id, sizeof(ack.job_id), "%s", ota_id);
    snprintf(ack.device_id, sizeof(ack.device_id), "%s", dev);
    if (efc_proto_topic(x->o->prefix, dev, "ack", topic, sizeof(topic)) != EFC_OK ||
        efc_proto_ack_encode(&ack, &buf) != EFC_OK)
        return;
    efc_mqtt_publish(x->m, topic, buf, strlen(buf), 1, 0, 0);
    efc_free(buf);
}

static void on_report(struct run *x, const char *dev, const void *payload, size_t len)
{
    struct efc_proto_ota_report rep;
    struct efc_coord_rollout *r = efc_malloc(sizeof(*r));
    struct efc_coord_rdev d;
    enum efc_coord_rdev_state state;
    char reason[256];
    int changed = 0;

    if (!r)
        return;
    if (efc_proto_ota_report_decode(payload, len, dev, &rep) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed OTA report of %s: %s", dev,
                efc_err_detail());
        goto out;
    }
    if (efc_coord_store_rdev_get(x->s, rep.rollout_id, dev, &d) != EFC_OK ||
        efc_coord_store_rollout_get(x->s, rep.rollout_id, r) != EFC_OK) {
        /* Not ours (another coordinator's store): acking it only ends the agent's resends. */
        efc_log(EFC_LOG_WARN, MOD, "OTA report %s of %s: %s (acked, not stored)", rep.ota_id,
                dev, efc_err_detail());
        send_ack(x, dev, rep.ota_id);
        goto out;
    }
    if (strcmp(d.ota_id, rep.ota_id) != 0) {
        efc_log(EFC_LOG_INFO, MOD, "OTA report %s of %s is stale (now %s): acked", rep.ota_id,
                dev, d.ota_id);
        send_ack(x, dev, rep.ota_id);
        goto out;
    }
    if (rep.action == EFC_PROTO_OTA_ROLLBACK) {
        /* NOT_ACTIVE: the rollout is not what runs there (its own health gate rolled it
         * back, or a later install replaced it): nothing is left to undo. */
        state = rep.outcome == EFC_PROTO_OTA_REVERTED ||
                        (rep.outcome == EFC_PROTO_OTA_REFUSED &&
                         !strncmp(rep.reason, "NOT_ACTIVE", 10))
                    ? EFC_COORD_RDEV_REVERTED
                    : EFC_COORD_RDEV_FAILED;
        snprintf(reason, sizeof(reason), "%s", rep.reason);
    } else {
        state = efc_coord_gate_report(&r->gate, &rep, reason, sizeof(reason));
    }
    if (efc_coord_store_rdev_update(x->s, rep.rollout_id, dev, state, reason, &rep, now_ms(),
                                    &changed) != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "store report %s: %s (not acked)", rep.ota_id,
                efc_err_detail());
        goto out;
    }
    send_ack(x, dev, rep.ota_id); /* committed: the agent may drop it */
    if (changed)
        efc_log(EFC_LOG_INFO, MOD, "%s device=%s: %s%s%s (acc %d/%d, p99 %.3f ms)",
                rep.rollout_id, dev, efc_coord_rdev_state_str(state), reason[0] ? ": " : "",
                reason, rep.correct, rep.eval_total, rep.p99_ms);
out:
    efc_free(r);
}

static void on_status(struct run *x, const char *dev, const void *payload, size_t len)
{
    struct efc_proto_status st;
    if (len == 0)
        return;
    if (efc_proto_status_decode(payload, len, dev, &st) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed status of %s: %s", dev, efc_err_detail());
        return;
    }
    if (efc_coord_store_device_upsert(x->s, &st, now_ms(), NULL) != EFC_OK)
        efc_log(EFC_LOG_ERROR, MOD, "store device %s: %s", dev, efc_err_detail());
}

static void on_chunk_req(struct run *x, const char *dev, const void *payload, size_t len)
{
    struct efc_chunk_req req;
    char topic[TOPIC_MAX], path[PATH_MAX_];
    uint64_t bytes;
    void *out = NULL;
    size_t out_len = 0;
    if (efc_chunk_req_decode(payload, len, &req) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed chunk request of %s: %s", dev,
                efc_err_detail());
        return;
    }
    if (efc_coord_store_model_get(x->s, req.sha256, path, sizeof(path), &bytes) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "device=%s asked for unknown artifact %.16s", dev, req.sha256);
        return;
    }
    if (efc_chunk_serve(path, req.sha256, &req, &out, &out_len) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "chunk for %s refused: %s", dev, efc_err_detail());
        return;
    }
    if (efc_chunk_topic(x->o->prefix, req.sha256, dev, topic, sizeof(topic)) == EFC_OK)
        efc_mqtt_publish(x->m, topic, out, out_len, 1, 0, 0);
    efc_free(out);
}

static void on_message(void *ctx, const char *topic, const void *payload, size_t len,
                       int retained)
{
    struct run *x = ctx;
    char dev[EFC_PROTO_ID_MAX], kind[16];
    (void)retained;
    if (efc_proto_topic_parse(x->o->prefix, topic, dev, sizeof(dev), kind, sizeof(kind)) !=
        EFC_OK)
        return;
    if (!strcmp(kind, "status"))
        on_status(x, dev, payload, len);
    else if (!strcmp(kind, "ota/report"))
        on_report(x, dev, payload, len);
    else if (!strcmp(kind, "chunk/req"))
        on_chunk_req(x, dev, payload, len);
}

static void on_connect(void *ctx, int session_present)
{
    struct run *x = ctx;
    (void)session_present;
    x->resend_all = 1;
}

/* ---- one step of a rollout -------------------------------------------------------------- */

static int in_list(const struct efc_coord_rdev *d, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(d[i].device_id, id))
            return 1;
    return 0;
}

/* Tell the installed devices of wave k (all waves if k < 0) to roll back. */
static void revert_wave(struct run *x, const struct efc_coord_rollout *r, struct efc_coord_rdev *d,
                        size_t n, int32_t k, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        if ((k >= 0 && d[i].wave != k) || (d[i].state != EFC_COORD_RDEV_INSTALLED &&
                                           d[i].state != EFC_COORD_RDEV_REGRESSED))
            continue;
        snprintf(d[i].ota_id, sizeof(d[i].ota_id), "%s%llu-rb-%zu", EFC_PROTO_OTA_PREFIX,
                 (unsigned long long)r->version, i + 1);
        d[i].deadline_ms = now + r->gate.report_timeout_ms;
        if (efc_coord_store_rdev_revert(x->s, r->rollout_id, d[i].device_id, d[i].ota_id,
                                        d[i].deadline_ms, now) != EFC_OK) {
            efc_log(EFC_LOG_ERROR, MOD, "revert %s: %s", d[i].device_id, efc_err_detail());
            continue;
        }
        d[i].state = EFC_COORD_RDEV_REVERTING;
        send_directive(x, r, &d[i], EFC_PROTO_OTA_ROLLBACK);
    }
}

/* Add the devices that bring wave k to its target; returns how many are still missing
 * (> 0: not enough online devices yet). */
static int32_t plan_wave(struct run *x, const struct efc_coord_rollout *r,
                         const struct efc_coord_rdev *d, size_t n, int64_t now)
{
    char(*ids)[EFC_PROTO_ID_MAX] = NULL;
    size_t n_ids = 0, n_known = n, added = 0;
    int32_t target, need;

    if (efc_coord_store_class_devices(x->s, r->hw_class, &ids, &n_ids) != EFC_OK)
        return 1;
    for (size_t i = 0; i < n_ids; i++)
        n_known += !in_list(d, n, ids[i]);
    target = efc_coord_wave_target(r->waves, r->wave, (int32_t)n_known);
    need = target - (int32_t)n;
    for (size_t i = 0; i < n_ids && need > 0; i++) {
        struct efc_coord_rdev nd;
        if (in_list(d, n, ids[i]))
            continue;
        memset(&nd, 0, sizeof(nd));
        snprintf(nd.device_id, sizeof(nd.device_id), "%s", ids[i]);
        nd.wave = r->wave;
        snprintf(nd.ota_id, sizeof(nd.ota_id), "%s%llu-%zu", EFC_PROTO_OTA_PREFIX,
                 (unsigned long long)r->version, n + ++added);
        nd.deadline_ms = now + r->gate.report_timeout_ms;
        if (efc_coord_store_rdev_add(x->s, r->rollout_id, &nd) != EFC_OK) {
            efc_log(EFC_LOG_ERROR, MOD, "add %s: %s", ids[i], efc_err_detail());
            break;
        }
        send_directive(x, r, &nd, EFC_PROTO_OTA_INSTALL);
        need--;
    }
    efc_free(ids);
    return n_known == 0 ? 1 : need;
}

/* Returns 1 once the rollout needs nothing more from this run. */
static int step(struct run *x, const char *id, int64_t now, int resend)
{
    struct efc_coord_rollout *r = efc_malloc(sizeof(*r));
    struct efc_coord_rdev *d = NULL;
    size_t n = 0;
    int32_t n_waves = 1, open = 0, failed = 0, installed = 0;
    int finished = 0;
    char reason[512];

    if (!r || efc_coord_store_rollout_get(x->s, id, r) != EFC_OK ||
        efc_coord_store_rdevs_list(x->s, id, &d, &n) != EFC_OK) {
        efc_free(r);
        return 0;
    }
    efc_coord_waves_parse(r->waves, &n_waves);
    for (size_t i = 0; i < n; i++) {
        int waiting = d[i].state == EFC_COORD_RDEV_SENT || d[i].state == EFC_COORD_RDEV_REVERTING;
        if (waiting && now > d[i].deadline_ms) {
            /* Silent past the deadline: an install counts as failed; a revert that never
             * answered is failed too (the device may still run the halted version), so the
             * run can end and status shows it. */
            int changed = 0;
            enum efc_coord_rdev_state to = d[i].state == EFC_COORD_RDEV_SENT
                                               ? EFC_COORD_RDEV_TIMEOUT
                                               : EFC_COORD_RDEV_FAILED;
            snprintf(reason, sizeof(reason), "TIMEOUT: no report %swithin %lld s",
                     to == EFC_COORD_RDEV_FAILED ? "of the rollback " : "",
                     (long long)(r->gate.report_timeout_ms / 1000));
            efc_coord_store_rdev_update(x->s, id, d[i].device_id, to, reason, NULL, now,
                                        &changed);
            d[i].state = to;
            snprintf(d[i].reason, sizeof(d[i].reason), "%.200s", reason);
            efc_log(EFC_LOG_WARN, MOD, "%s device=%s: %s", id, d[i].device_id, reason);
            waiting = 0;
        } else if (waiting && resend) {
            send_directive(x, r, &d[i], d[i].state == EFC_COORD_RDEV_SENT
                                            ? EFC_PROTO_OTA_INSTALL
                                            : EFC_PROTO_OTA_ROLLBACK);
        }
        open += waiting;
    }
    if (r->state != EFC_COORD_ROLLOUT_RUNNING) {
        finished = open == 0; /* a halted rollout waits for its reverts */
        goto out;
    }
    if (now < x->settle_until_ms)
        goto out;
    /* The current wave: complete its device set, then wait for every report. */
    if (plan_wave(x, r, d, n, now) > 0 || open > 0) {
        if (n == 0 && now >= x->settle_until_ms + 60000 && resend)
            efc_log(EFC_LOG_WARN, MOD, "%s: class %s has no online device yet", id, r->hw_class);
        goto out;
    }
    efc_free(d);
    d = NULL;
    if (efc_coord_store_rdevs_list(x->s, id, &d, &n) != EFC_OK)
        goto out;
    for (size_t i = 0; i < n; i++)
        if (d[i].state == EFC_COORD_RDEV_SENT)
            goto out; /* planned just now: wait */
    int len = 0;
    reason[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (d[i].wave != r->wave)
            continue;
        installed += d[i].state == EFC_COORD_RDEV_INSTALLED;
        if (efc_coord_rdev_failed(d[i].state)) {
            failed++;
            if (len >= 0 && (size_t)len < sizeof(reason))
                len += snprintf(reason + len, sizeof(reason) - (size_t)len, "%s%s %s: %s",
                                failed > 1 ? "; " : "", d[i].device_id,
                                efc_coord_rdev_state_str(d[i].state), d[i].reason);
        }
    }
    if (failed > r->gate.max_failures) {
        char why[512];
        snprintf(why, sizeof(why), "wave %d/%d: %d failed (max %d): %.440s", (int)r->wave + 1,
                 (int)n_waves, (int)failed, (int)r->gate.max_failures, reason);
        efc_coord_store_rollout_update(x->s, id, EFC_COORD_ROLLOUT_HALTED, r->wave, why, now);
        printf("rollout %s (class %s, %s): HALTED at %s; the wave rolls back, no later wave "
               "is touched\n",
               id, r->hw_class, r->policy, why);
        revert_wave(x, r, d, n, r->wave, now);
        goto out;
    }
    if (installed + failed == 0) /* a small class: this share was reached already */
        printf("rollout %s (class %s): wave %d/%d: no device to add (%zu of the class in)\n",
               id, r->hw_class, (int)r->wave + 1, (int)n_waves, n);
    else
        printf("rollout %s (class %s): wave %d/%d passed: %d installed, %d failed\n", id,
               r->hw_class, (int)r->wave + 1, (int)n_waves, (int)installed, (int)failed);
    fflush(stdout);
    if (r->wave + 1 >= n_waves) {
        snprintf(reason, sizeof(reason), "%zu device(s) in %d wave(s)", n, (int)n_waves);
        efc_coord_store_rollout_update(x->s, id, EFC_COORD_ROLLOUT_DONE, r->wave, reason, now);
        if (r->kind == EFC_COORD_ROLLOUT_ROLLBACK)
            efc_coord_store_rollout_update(x->s, r->target, EFC_COORD_ROLLOUT_ROLLED_BACK, 0,
                                           "undone by a rollback", now);
        printf("rollout %s (class %s, %s, version %llu): done, %s\n", id, r->hw_class,
               r->policy, (unsigned long long)r->version, reason);
        finished = 1;
    } else {
        efc_coord_store_rollout_update(x->s, id, EFC_COORD_ROLLOUT_RUNNING, r->wave + 1, "",
                                       now);
    }
out:
    fflush(stdout);
    efc_free(d);
    efc_free(r);
    return finished;
}

/* ---- creating rollouts ------------------------------------------------------------------ */

/* Pooled accuracy and median p99 of (class, policy) in a round, from its stored results. */
static void expected_from_round(struct efc_coord_store *s, const char *round_id,
                                const char *hw_class, const char *policy, double *acc,
                                double *p99, double *agree)
{
    struct efc_proto_result *res = NULL;
    size_t n = 0, k = 0;
    int64_t correct = 0, total = 0, agreed = 0, all = 0;
    double *p = NULL;
    *acc = -1;
    *p99 = 0;
    *agree = -1;
    if (efc_coord_store_results_list(s, round_id, &res, &n) != EFC_OK)
        return;
    p = efc_malloc((n ? n : 1) * sizeof(*p));
    for (size_t i = 0; p && i < n; i++) {
        if (res[i].status != EFC_PROTO_RESULT_OK || strcmp(res[i].hw_class, hw_class) ||
            strcmp(res[i].policy, policy))
            continue;
        if (res[i].has_labels) {
            correct += res[i].correct;
            total += res[i].eval_total;
        }
        agreed += res[i].agree;
        all += res[i].eval_total;
        /* insertion sort: a handful of results per (class, policy) */
        size_t j = k++;
        for (; j > 0 && p[j - 1] > res[i].p99_ms; j--)
            p[j] = p[j - 1];
        p[j] = res[i].p99_ms;
    }
    if (total > 0)
        *acc = (double)correct / (double)total;
    if (all > 0)
        *agree = (double)agreed / (double)all;
    if (k > 0)
        *p99 = p[k / 2];
    efc_free(p);
    efc_free(res);
}

static int sign_manifest(const struct efc_coord_rollout_opts *o, struct efc_coord_rollout *r,
                         const char *art_path, int64_t now)
{
    struct efc_manifest m;
    void *key = NULL;
    size_t key_len = 0;
    char *json = NULL;
    size_t json_len = 0;
    enum efc_status st;

    memset(&m, 0, sizeof(m));
    if (efc_manifest_digest_file(art_path, m.artifact_sha256, &m.artifact_bytes) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: artifact %s: %s\n", art_path, efc_err_detail());
        return -1;
    }
    char hex[EFC_SHA256_HEX_BYTES];
    efc_sha256_hex(m.artifact_sha256, hex);
    if (strcmp(hex, r->sha256) != 0) {
        fprintf(stderr, "efc-coordinator: artifact %s: digest %.16s, the store says %.16s\n",
                art_path, hex, r->sha256);
        return -1;
    }
    snprintf(m.model_id, sizeof(m.model_id), "%s", r->round_id[0] ? r->round_id : "efc");
    snprintf(m.policy, sizeof(m.policy), "%s", r->policy);
    snprintf(m.hw_class, sizeof(m.hw_class), "%s", r->hw_class);
    m.version = r->version;
    m.created = now / 1000;
    m.expires = m.created + o->manifest_days * 86400;
    if (efc_fs_read_all(o->sign_key, KEY_MAX, &key, &key_len) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: --sign-key %s: %s\n", o->sign_key, efc_err_detail());
        return -1;
    }
    st = efc_manifest_sign(&m, key, key_len, &json, &json_len);
    memset(key, 0, key_len); /* private key bytes do not outlive their use */
    efc_free(key);
    if (st != EFC_OK || json_len >= sizeof(r->manifest)) {
        fprintf(stderr, "efc-coordinator: sign: %s\n",
                st != EFC_OK ? efc_err_detail() : "manifest too long");
        efc_free(json);
        return -1;
    }
    memcpy(r->manifest, json, json_len + 1);
    efc_free(json);
    return 0;
}

/* The gate of a new rollout. The device's own floors default to what the round promised:
 * its absolute accuracy SLA (when the round had one), and the round's agreement with the
 * FP32 base minus the tolerance (agreement is paired on the device's own samples, so it does
 * not vary with the device's data the way accuracy does). */
static void gate_from_opts(const struct efc_coord_rollout_opts *o, struct efc_coord_gate *g,
                           const struct efc_coord_round *round, double acc, double p99,
                           double agree)
{
    memset(g, 0, sizeof(*g));
    g->max_failures = (int32_t)o->max_failures;
    g->max_acc_drop = o->max_acc_drop;
    g->max_p99_ratio = o->max_p99_ratio;
    g->expected_acc = acc;
    g->expected_p99_ms = p99;
    g->expected_agree = agree;
    g->report_timeout_ms = o->report_timeout_s * 1000;
    g->calib_samples = (int32_t)o->calib;
    g->eval_samples = (int32_t)o->eval;
    g->health_runs = (int32_t)o->health_runs;
    /* The device's own gate: what the round measured for this class, minus the tolerance,
     * unless given. */
    g->min_accuracy = o->min_accuracy >= 0                        ? o->min_accuracy
                      : round && round->sla.kind == EFC_COORD_SLA_ABSOLUTE ? round->sla.value
                                                                          : 0;
    g->min_agree = o->min_agree >= 0                     ? o->min_agree
                   : agree - o->max_acc_drop > 0 ? agree - o->max_acc_drop
                                                 : 0;
    /* Latency below EFC_COORD_P99_FLOOR_MS above the round's is never a regression: at a
     * few microseconds a shared core's noise is larger than any ratio. */
    g->max_p99_ms = o->max_p99_ms >= 0 ? o->max_p99_ms
                    : p99 > 0 && o->max_p99_ratio > 0
                        ? (p99 * o->max_p99_ratio > p99 + EFC_COORD_P99_FLOOR_MS
                               ? p99 * o->max_p99_ratio
                               : p99 + EFC_COORD_P99_FLOOR_MS)
                        : 0;
    g->mem_limit_bytes = o->mem_limit;
    g->max_rss_bytes = o->max_rss;
}

/* Create (or find running) the rollout of (class, policy) from a round; its id into x. */
/* Give r (class, policy, round, sha, waves, gate, kind, target set) a new version and id,
 * sign its manifest, store it, and drive it in this run. */
static int create_rollout(struct run *x, struct efc_coord_rollout *r)
{
    char path[PATH_MAX_];
    int64_t now = now_ms();

    if (!x->o->sign_key) {
        fprintf(stderr, "efc-coordinator: %s needs --sign-key (efc keygen makes one)\n",
                x->o->cmd);
        return -1;
    }
    if (efc_coord_store_model_get(x->s, r->sha256, path, sizeof(path), &r->bytes) != EFC_OK ||
        efc_coord_store_ota_version_next(x->s, &r->version) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
        return -1;
    }
    snprintf(r->rollout_id, sizeof(r->rollout_id), "ro%llu", (unsigned long long)r->version);
    r->created_ms = now;
    if (sign_manifest(x->o, r, path, now))
        return -1;
    if (efc_coord_store_rollout_create(x->s, r, NULL, 0) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
        return -1;
    }
    snprintf(x->ids[x->n++], EFC_PROTO_ID_MAX, "%s", r->rollout_id);
    return 0;
}

/* Create (or continue the running) rollout of (class, policy) from a round. */
static int open_rollout(struct run *x, const char *hw_class, const char *policy)
{
    const struct efc_coord_rollout_opts *o = x->o;
    struct efc_coord_rollout *r = efc_calloc(1, sizeof(*r));
    struct efc_coord_round *round = efc_malloc(sizeof(*round));
    double acc, p99, agree;
    int rc = -1;

    if (!r || !round)
        goto out;
    if (x->n >= MAX_RUN) {
        fprintf(stderr, "efc-coordinator: more than %d classes in one rollout run\n", MAX_RUN);
        goto out;
    }
    if (efc_coord_store_rollout_running(x->s, hw_class, r) == EFC_OK) {
        if (strcmp(r->policy, policy) != 0)
            fprintf(stderr, "efc-coordinator: class %s has rollout %s of %s running; it "
                            "continues first\n", hw_class, r->rollout_id, r->policy);
        printf("rollout %s (class %s, %s): continues at wave %d\n", r->rollout_id, hw_class,
               r->policy, (int)r->wave + 1);
        snprintf(x->ids[x->n++], EFC_PROTO_ID_MAX, "%s", r->rollout_id);
        rc = 0;
        goto out;
    }
    if (efc_coord_store_rollout_latest(x->s, hw_class, 1, UINT64_MAX, r) == EFC_OK &&
        !strcmp(r->policy, policy) && !strcmp(r->round_id, o->round_id)) {
        printf("rollout %s (class %s, %s): already done (version %llu); nothing to do\n",
               r->rollout_id, hw_class, policy, (unsigned long long)r->version);
        rc = 0;
        goto out;
    }
    memset(r, 0, sizeof(*r));
    if (efc_coord_store_round_artifact_get(x->s, o->round_id, policy, r->sha256) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: class %s: %s\n", hw_class, efc_err_detail());
        goto out;
    }
    snprintf(r->hw_class, sizeof(r->hw_class), "%s", hw_class);
    snprintf(r->policy, sizeof(r->policy), "%s", policy);
    snprintf(r->round_id, sizeof(r->round_id), "%s", o->round_id);
    snprintf(r->waves, sizeof(r->waves), "%s", o->waves);
    r->kind = EFC_COORD_ROLLOUT_INSTALL;
    expected_from_round(x->s, o->round_id, hw_class, policy, &acc, &p99, &agree);
    gate_from_opts(o, &r->gate,
                   efc_coord_store_round_get(x->s, o->round_id, round) == EFC_OK ? round : NULL,
                   acc, p99, agree);
    if (create_rollout(x, r))
        goto out;
    printf("rollout %s: class %s -> %s (artifact %.16s, %llu bytes, version %llu), waves %s\n"
           "  gate: the round measured accuracy %.4f, agreement %.4f, p99 %.3f ms; devices "
           "need accuracy >= %.4f, agreement >= %.4f, p99 <= %.3f ms\n",
           r->rollout_id, hw_class, policy, r->sha256, (unsigned long long)r->bytes,
           (unsigned long long)r->version, r->waves, acc, agree, p99, r->gate.min_accuracy,
           r->gate.min_agree, r->gate.max_p99_ms);
    rc = 0;
out:
    fflush(stdout);
    efc_free(r);
    efc_free(round);
    return rc;
}

/* Per-class rollback: the class's current rollout (the newest done or halted one) is undone
 * by installing, under a new version, the newest done rollout before it with another
 * artifact or policy: what the class ran before. */
static int open_rollback(struct run *x)
{
    struct efc_coord_rollout *cur = efc_calloc(1, sizeof(*cur));
    struct efc_coord_rollout *prev = efc_calloc(1, sizeof(*prev));
    struct efc_coord_rollout *r = efc_calloc(1, sizeof(*r));
    int rc = -1;
    if (!cur || !prev || !r)
        goto out;
    if (efc_coord_store_rollout_running(x->s, x->o->hw_class, r) == EFC_OK) {
        if (r->kind == EFC_COORD_ROLLOUT_ROLLBACK) {
            printf("rollback %s (class %s): continues\n", r->rollout_id, r->hw_class);
            snprintf(x->ids[x->n++], EFC_PROTO_ID_MAX, "%s", r->rollout_id);
            rc = 0;
            goto out;
        }
        /* A running install is stopped first: no later wave may start. */
        efc_coord_store_rollout_update(x->s, r->rollout_id, EFC_COORD_ROLLOUT_HALTED, r->wave,
                                       "halted by a rollback order", now_ms());
        printf("rollout %s (class %s): halted by the rollback order\n", r->rollout_id,
               r->hw_class);
    }
    if (efc_coord_store_rollout_latest(x->s, x->o->hw_class, 0, UINT64_MAX, cur) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: class %s has no rollout to roll back\n",
                x->o->hw_class);
        goto out;
    }
    uint64_t below = cur->version;
    for (;;) {
        if (efc_coord_store_rollout_latest(x->s, x->o->hw_class, 1, below, prev) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: class %s ran nothing before %s (%s): no previous "
                            "policy to return to\n",
                    x->o->hw_class, cur->rollout_id, cur->policy);
            goto out;
        }
        if (strcmp(prev->sha256, cur->sha256) || strcmp(prev->policy, cur->policy))
            break;
        below = prev->version;
    }
    snprintf(r->hw_class, sizeof(r->hw_class), "%s", cur->hw_class);
    snprintf(r->policy, sizeof(r->policy), "%s", prev->policy);
    snprintf(r->round_id, sizeof(r->round_id), "%s", prev->round_id);
    snprintf(r->sha256, sizeof(r->sha256), "%s", prev->sha256);
    r->kind = EFC_COORD_ROLLOUT_ROLLBACK;
    snprintf(r->target, sizeof(r->target), "%s", cur->rollout_id);
    snprintf(r->waves, sizeof(r->waves), "%s", x->o->waves);
    r->gate = prev->gate;
    r->gate.report_timeout_ms = x->o->report_timeout_s * 1000;
    if (create_rollout(x, r))
        goto out;
    printf("rollback %s: class %s from %s (%s, version %llu) back to %s (%s), as version %llu, "
           "waves %s\n",
           r->rollout_id, r->hw_class, cur->rollout_id, cur->policy,
           (unsigned long long)cur->version, prev->rollout_id, prev->policy,
           (unsigned long long)r->version, r->waves);
    rc = 0;
out:
    fflush(stdout);
    efc_free(cur);
    efc_free(prev);
    efc_free(r);
    return rc;
}

/* ---- status ----------------------------------------------------------------------------- */

static int run_status(struct efc_coord_store *s, const char *only_class)
{
    struct efc_coord_rollout *ro = NULL;
    struct efc_coord_device_model *dm = NULL;
    size_t n_ro = 0, n_dm = 0;
    if (efc_coord_store_rollouts_list(s, &ro, &n_ro) != EFC_OK ||
        efc_coord_store_device_models(s, &dm, &n_dm) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
        efc_free(ro);
        return 1;
    }
    printf("devices (what each runs, from its last OTA report):\n");
    for (size_t i = 0; i < n_dm; i++)
        if (!only_class || !strcmp(only_class, dm[i].hw_class))
            printf("  %-20s %-20s %-44s version %-4llu %.16s (%s)\n", dm[i].hw_class,
                   dm[i].device_id, dm[i].policy[0] ? dm[i].policy : "(no OTA model)",
                   (unsigned long long)dm[i].version, dm[i].sha256, dm[i].rollout_id);
    if (n_dm == 0)
        printf("  (none yet)\n");
    printf("rollouts (newest first):\n");
    for (size_t i = 0; i < n_ro; i++) {
        struct efc_coord_rdev *d = NULL;
        size_t n = 0;
        int32_t n_waves = 1;
        if (only_class && strcmp(only_class, ro[i].hw_class))
            continue;
        efc_coord_waves_parse(ro[i].waves, &n_waves);
        printf("  %s %s%s class %s %s version %llu: %s, wave %d/%d%s%s\n", ro[i].rollout_id,
               ro[i].kind == EFC_COORD_ROLLOUT_ROLLBACK ? "rollback of " : "install",
               ro[i].target, ro[i].hw_class, ro[i].policy,
               (unsigned long long)ro[i].version, efc_coord_rollout_state_str(ro[i].state),
               (int)ro[i].wave + 1, (int)n_waves, ro[i].reason[0] ? " — " : "", ro[i].reason);
        if (efc_coord_store_rdevs_list(s, ro[i].rollout_id, &d, &n) != EFC_OK)
            continue;
        for (size_t k = 0; k < n; k++) {
            printf("    wave %d %-20s %-11s", (int)d[k].wave + 1, d[k].device_id,
                   efc_coord_rdev_state_str(d[k].state));
            if (d[k].eval_total > 0)
                printf(" acc %.4f (%d/%d) p99 %.3f ms", (double)d[k].correct / d[k].eval_total,
                       d[k].correct, d[k].eval_total, d[k].p99_ms);
            printf("%s%s\n", d[k].reason[0] ? "  " : "", d[k].reason);
        }
        efc_free(d);
    }
    if (n_ro == 0)
        printf("  (none yet)\n");
    efc_free(ro);
    efc_free(dm);
    return 0;
}

/* ---- the command ------------------------------------------------------------------------ */

static int connect_broker(struct run *x)
{
    static const char *const kinds[] = {"status", "ota/report", "chunk/req"};
    char client_id[96], filter[TOPIC_MAX];
    snprintf(client_id, sizeof(client_id), "efc-coordinator-%d", (int)getpid());
    struct efc_mqtt_opts mo = {.url = x->o->broker,
                               .client_id = client_id,
                               .on_message = on_message,
                               .on_connect = on_connect,
                               .ctx = x,
                               .clean_start = 1,
                               .inflight = 1000,
                               .tls_ca = x->o->tls_ca,
                               .tls_cert = x->o->tls_cert,
                               .tls_key = x->o->tls_key};
    if (efc_mqtt_new(&mo, &x->m) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: mqtt: %s\n", efc_err_detail());
        return -1;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        int w = snprintf(filter, sizeof(filter), "%s/dev/+/%s", x->o->prefix, kinds[i]);
        if (w < 0 || (size_t)w >= sizeof(filter) ||
            efc_mqtt_subscribe(x->m, filter, 1) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: subscribe: %s\n", efc_err_detail());
            return -1;
        }
    }
    if (efc_mqtt_connect(x->m) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: mqtt: %s\n", efc_err_detail());
        return -1;
    }
    return 0;
}

/* The outcome line of each rollout; 0 if all ended done. */
static int summary(struct run *x)
{
    int rc = 0;
    for (size_t i = 0; i < x->n; i++) {
        struct efc_coord_rollout *r = efc_malloc(sizeof(*r));
        struct efc_coord_rdev *d = NULL;
        size_t n = 0;
        int32_t by_state[16] = {0};
        if (!r)
            return 1;
        if (efc_coord_store_rollout_get(x->s, x->ids[i], r) == EFC_OK &&
            efc_coord_store_rdevs_list(x->s, x->ids[i], &d, &n) == EFC_OK) {
            for (size_t k = 0; k < n; k++)
                by_state[d[k].state & 15]++;
            printf("outcome %s class %s: %s; devices: %d installed, %d reverted, %d rolled back "
                   "by their health gate, %d refused, %d failed, %d timed out, %d regressed, "
                   "%d waiting%s%s\n",
                   r->rollout_id, r->hw_class, efc_coord_rollout_state_str(r->state),
                   (int)by_state[EFC_COORD_RDEV_INSTALLED], (int)by_state[EFC_COORD_RDEV_REVERTED],
                   (int)by_state[EFC_COORD_RDEV_ROLLED_BACK],
                   (int)by_state[EFC_COORD_RDEV_REFUSED], (int)by_state[EFC_COORD_RDEV_FAILED],
                   (int)by_state[EFC_COORD_RDEV_TIMEOUT], (int)by_state[EFC_COORD_RDEV_REGRESSED],
                   (int)(by_state[EFC_COORD_RDEV_SENT] + by_state[EFC_COORD_RDEV_REVERTING]),
                   r->reason[0] ? " — " : "", r->reason);
            if (r->state != EFC_COORD_ROLLOUT_DONE)
                rc = 1;
        }
        efc_free(d);
        efc_free(r);
    }
    return rc;
}

int efc_coord_rollout_cmd(const struct efc_coord_rollout_opts *o, struct efc_coord_store *s,
                          volatile sig_atomic_t *stop)
{
    struct run *x;
    int rc = 1;

    if (!strcmp(o->cmd, "status"))
        return run_status(s, o->hw_class);
    if (!o->broker) {
        fprintf(stderr, "efc-coordinator: %s needs --broker\n", o->cmd);
        return 2;
    }
    if (efc_coord_waves_parse(o->waves, NULL) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: --waves: %s\n", efc_err_detail());
        return 2;
    }
    x = efc_calloc(1, sizeof(*x));
    if (!x)
        return 1;
    x->o = o;
    x->s = s;
    if (!strcmp(o->cmd, "rollback")) {
        if (!o->hw_class) {
            fprintf(stderr, "efc-coordinator: rollback needs --class\n");
            rc = 2;
            goto out;
        }
        if (open_rollback(x))
            goto out;
    } else {
        struct efc_coord_class_policy *sel = NULL;
        size_t n_sel = 0;
        if (!o->round_id) {
            fprintf(stderr, "efc-coordinator: rollout needs --round-id (the round whose "
                            "selection and artifacts to roll out)\n");
            rc = 2;
            goto out;
        }
        if (o->policy && !o->hw_class) {
            fprintf(stderr, "efc-coordinator: --policy needs --class\n");
            rc = 2;
            goto out;
        }
        if (o->policy) {
            if (open_rollout(x, o->hw_class, o->policy))
                goto out;
        } else {
            if (efc_coord_store_selections_list(s, o->round_id, &sel, &n_sel) != EFC_OK) {
                fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
                goto out;
            }
            for (size_t i = 0; i < n_sel; i++)
                if ((!o->hw_class || !strcmp(o->hw_class, sel[i].hw_class)) &&
                    open_rollout(x, sel[i].hw_class, sel[i].policy)) {
                    efc_free(sel);
                    goto out;
                }
            if (n_sel == 0)
                printf("round %s has no selected policy to roll out\n", o->round_id);
            efc_free(sel);
        }
    }
    if (x->n == 0) {
        rc = 0;
        goto out;
    }
    if (connect_broker(x))
        goto out;
    x->settle_until_ms = now_ms() + SETTLE_MS;
    uint64_t until = efc_time_ns() + (uint64_t)o->timeout_s * 1000000000ull;
    int all_done = 0;
    while (!*stop && efc_time_ns() < until && !all_done) {
        efc_mqtt_loop(x->m, LOOP_MS);
        if (!efc_mqtt_connected(x->m))
            continue;
        int64_t now = now_ms();
        int resend = x->resend_all || now - x->last_resend_ms > RESEND_MS;
        if (resend) {
            x->last_resend_ms = now;
            x->resend_all = 0;
        }
        all_done = 1;
        for (size_t i = 0; i < x->n; i++)
            all_done &= step(x, x->ids[i], now, resend);
    }
    if (!all_done)
        printf("%s: %s; the store keeps the state, the same command continues it\n", o->cmd,
               *stop ? "interrupted" : "--timeout reached");
    if (efc_mqtt_flush(x->m, FLUSH_MS) != EFC_OK)
        efc_log(EFC_LOG_WARN, MOD, "%s", efc_err_detail());
    rc = summary(x) || !all_done;
out:
    efc_mqtt_free(x->m);
    efc_free(x);
    return rc;
}
