/* msg_ota.c — OTA directives (coordinator -> agent) and their reports (agent -> coordinator):
 * encode, decode, validate (docs/protocol.md "OTA"). The manifest travels as an opaque string
 * here: ota/manifest.c verifies it (signature first) before anything uses a field of it. */
#include <string.h>

#include "common/efc_alloc.h"
#include "proto/proto.h"
#include "proto/proto_int.h"

#define SAMPLES_MAX 10000000

static const char *const g_actions[] = {"install", "rollback"};
static const char *const g_outcomes[] = {"installed", "rolled_back", "refused", "failed",
                                         "reverted"};
#define N_ACTIONS ((int32_t)(sizeof(g_actions) / sizeof(g_actions[0])))
#define N_OUTCOMES ((int32_t)(sizeof(g_outcomes) / sizeof(g_outcomes[0])))

const char *efc_proto_ota_action_str(int32_t action)
{
    return action >= 0 && action < N_ACTIONS ? g_actions[action] : "?";
}

const char *efc_proto_ota_outcome_str(int32_t outcome)
{
    return outcome >= 0 && outcome < N_OUTCOMES ? g_outcomes[outcome] : "?";
}

/* A name field read as text and mapped to its index in names[]. */
static enum efc_status rd_enum(struct efc_proto_rd *r, const char *name,
                               const char *const *names, int32_t n, int32_t *out)
{
    char buf[32];

    if (efc_proto_rd_text(r, name, buf, sizeof(buf), 0) != EFC_OK)
        return r->st;
    for (int32_t i = 0; i < n; i++)
        if (!strcmp(buf, names[i])) {
            *out = i;
            return EFC_OK;
        }
    return r->st = efc_errf(EFC_EPROTO, "%s: %s: unknown value \"%s\"", r->msg, name, buf);
}

static enum efc_status rd_ota_id(struct efc_proto_rd *r, const char *name, char *dst, size_t cap)
{
    if (efc_proto_rd_id(r, name, dst, cap) != EFC_OK)
        return r->st;
    if (strncmp(dst, EFC_PROTO_OTA_PREFIX, strlen(EFC_PROTO_OTA_PREFIX)) != 0)
        r->st = efc_errf(EFC_EPROTO, "%s: %s: does not start with \"%s\"", r->msg, name,
                         EFC_PROTO_OTA_PREFIX);
    return r->st;
}

/* ---- directive ------------------------------------------------------------------------ */

/* "" (fetch by MQTT chunks) or an http(s) URL of printable ASCII without spaces: the same
 * rule as a job's url (msg_job.c), so a URL is held to one rule whichever message carries it. */
static enum efc_status check_url(const char *u)
{
    if (!u[0])
        return EFC_OK;
    if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)
        return efc_errf(EFC_EPROTO, "ota: url: not http:// or https://");
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return efc_errf(EFC_EPROTO, "ota: url: space, control or non-ASCII byte");
    return EFC_OK;
}

static enum efc_status ota_fields(struct efc_proto_rd *r, void *out)
{
    struct efc_proto_ota *m = out;

    m->version = EFC_PROTO_VERSION;
    rd_ota_id(r, "ota_id", m->ota_id, sizeof(m->ota_id));
    efc_proto_rd_id(r, "rollout_id", m->rollout_id, sizeof(m->rollout_id));
    efc_proto_rd_id(r, "device_id", m->device_id, sizeof(m->device_id));
    rd_enum(r, "action", g_actions, N_ACTIONS, &m->action);
    efc_proto_rd_text(r, "manifest", m->manifest, sizeof(m->manifest), 0);
    efc_proto_rd_text(r, "url", m->url, sizeof(m->url), 1);
    efc_proto_rd_i32(r, "calib_samples", 0, SAMPLES_MAX, &m->calib_samples);
    efc_proto_rd_i32(r, "eval_samples", 1, SAMPLES_MAX, &m->eval_samples);
    efc_proto_rd_i32(r, "health_runs", 1, 1000000, &m->health_runs);
    efc_proto_rd_f64(r, "min_accuracy", 1.0, &m->min_accuracy);
    efc_proto_rd_f64(r, "min_agree", 1.0, &m->min_agree);
    efc_proto_rd_f64(r, "max_p99_ms", EFC_PROTO_F64_MAX, &m->max_p99_ms);
    efc_proto_rd_i64(r, "max_rss_bytes", 0, INT64_MAX, &m->max_rss_bytes);
    efc_proto_rd_u64(r, "seed", 0, UINT64_MAX, &m->seed);
    efc_proto_rd_i64(r, "deadline_ms", 0, INT64_MAX, &m->deadline_ms);
    efc_proto_rd_i64(r, "mem_limit_bytes", 0, INT64_MAX, &m->mem_limit_bytes);
    if (r->st == EFC_OK)
        r->st = check_url(m->url);
    return r->st;
}

enum efc_status efc_proto_ota_decode(const void *buf, size_t len, struct efc_proto_ota *out)
{
    return efc_proto_decode_msg(buf, len, "ota", "ota", ota_fields, out, sizeof(*out), NULL,
                                NULL);
}

/* Every encoder ends by decoding its own output: the decoder is the one validator. */
typedef enum efc_status (*check_fn)(const char *json, size_t len);

static enum efc_status finish(cJSON *o, int ok, const char *msg, check_fn check, char **out)
{
    char detail[256];
    enum efc_status st = efc_proto_wr_finish(o, ok, msg, out);

    if (st != EFC_OK)
        return st;
    st = check(*out, strlen(*out));
    if (st != EFC_OK) {
        efc_free(*out);
        *out = NULL;
        efc_proto_detail_copy(detail, sizeof(detail));
        return efc_errf(st == EFC_ENOMEM ? st : EFC_EINVAL, "encode: %s", detail);
    }
    return EFC_OK;
}

static enum efc_status check_ota(const char *json, size_t len)
{
    struct efc_proto_ota *chk = efc_malloc(sizeof(*chk));
    enum efc_status st;

    if (!chk)
        return efc_errf(EFC_ENOMEM, "ota: encode check");
    st = efc_proto_ota_decode(json, len, chk);
    efc_free(chk);
    return st;
}

enum efc_status efc_proto_ota_encode(const struct efc_proto_ota *m, char **out)
{
    cJSON *o = efc_proto_wr_begin("ota");
    int ok = o != NULL;

    if (ok) {
        efc_proto_wr_str(o, "ota_id", m->ota_id, sizeof(m->ota_id), &ok);
        efc_proto_wr_str(o, "rollout_id", m->rollout_id, sizeof(m->rollout_id), &ok);
        efc_proto_wr_str(o, "device_id", m->device_id, sizeof(m->device_id), &ok);
        efc_proto_wr_str(o, "action", efc_proto_ota_action_str(m->action), 32, &ok);
        efc_proto_wr_str(o, "manifest", m->manifest, sizeof(m->manifest), &ok);
        efc_proto_wr_str(o, "url", m->url, sizeof(m->url), &ok);
        efc_proto_wr_num(o, "calib_samples", m->calib_samples, &ok);
        efc_proto_wr_num(o, "eval_samples", m->eval_samples, &ok);
        efc_proto_wr_num(o, "health_runs", m->health_runs, &ok);
        efc_proto_wr_num(o, "min_accuracy", m->min_accuracy, &ok);
        efc_proto_wr_num(o, "min_agree", m->min_agree, &ok);
        efc_proto_wr_num(o, "max_p99_ms", m->max_p99_ms, &ok);
        efc_proto_wr_num(o, "max_rss_bytes", (double)m->max_rss_bytes, &ok);
        efc_proto_wr_num(o, "seed", (double)m->seed, &ok);
        efc_proto_wr_num(o, "deadline_ms", (double)m->deadline_ms, &ok);
        efc_proto_wr_num(o, "mem_limit_bytes", (double)m->mem_limit_bytes, &ok);
        if (ok && (m->seed > (1ULL << 53) || m->deadline_ms > (1LL << 53) ||
                   m->max_rss_bytes > (1LL << 53) || m->mem_limit_bytes > (1LL << 53))) {
            ok = 0;
            efc_errf(EFC_EINVAL, "a 64-bit field exceeds 2^53");
        }
    }
    return finish(o, ok, "ota", check_ota, out);
}

/* ---- report --------------------------------------------------------------------------- */

static enum efc_status report_fields(struct efc_proto_rd *r, void *out)
{
    struct efc_proto_ota_report *m = out;

    m->version = EFC_PROTO_VERSION;
    rd_ota_id(r, "ota_id", m->ota_id, sizeof(m->ota_id));
    efc_proto_rd_id(r, "rollout_id", m->rollout_id, sizeof(m->rollout_id));
    efc_proto_rd_id(r, "device_id", m->device_id, sizeof(m->device_id));
    rd_enum(r, "action", g_actions, N_ACTIONS, &m->action);
    rd_enum(r, "outcome", g_outcomes, N_OUTCOMES, &m->outcome);
    efc_proto_rd_text(r, "reason", m->reason, sizeof(m->reason), 1);
    efc_proto_rd_hex(r, "active_sha256", m->active_sha256, 1);
    efc_proto_rd_u64(r, "active_version", 0, UINT64_MAX, &m->active_version);
    efc_proto_rd_text(r, "active_policy", m->active_policy, sizeof(m->active_policy), 1);
    efc_proto_rd_bool(r, "has_labels", &m->has_labels);
    efc_proto_rd_i32(r, "eval_total", 0, SAMPLES_MAX, &m->eval_total);
    efc_proto_rd_i32(r, "correct", 0, SAMPLES_MAX, &m->correct);
    efc_proto_rd_i32(r, "agree", 0, SAMPLES_MAX, &m->agree);
    efc_proto_rd_f64(r, "p50_ms", EFC_PROTO_F64_MAX, &m->p50_ms);
    efc_proto_rd_f64(r, "p99_ms", EFC_PROTO_F64_MAX, &m->p99_ms);
    efc_proto_rd_u64(r, "peak_rss_bytes", 0, UINT64_MAX, &m->peak_rss_bytes);
    if (r->st == EFC_OK && (m->correct > m->eval_total || m->agree > m->eval_total))
        r->st = efc_errf(EFC_EPROTO, "ota_report: correct or agree above eval_total");
    return r->st;
}

enum efc_status efc_proto_ota_report_decode(const void *buf, size_t len, const char *topic_device,
                                            struct efc_proto_ota_report *out)
{
    return efc_proto_decode_msg(buf, len, "ota_report", "ota_report", report_fields, out,
                                sizeof(*out), topic_device, out->device_id);
}

static enum efc_status check_report(const char *json, size_t len)
{
    struct efc_proto_ota_report chk;

    return efc_proto_ota_report_decode(json, len, NULL, &chk);
}

enum efc_status efc_proto_ota_report_encode(const struct efc_proto_ota_report *m, char **out)
{
    cJSON *o = efc_proto_wr_begin("ota_report");
    int ok = o != NULL;

    if (ok) {
        efc_proto_wr_str(o, "ota_id", m->ota_id, sizeof(m->ota_id), &ok);
        efc_proto_wr_str(o, "rollout_id", m->rollout_id, sizeof(m->rollout_id), &ok);
        efc_proto_wr_str(o, "device_id", m->device_id, sizeof(m->device_id), &ok);
        efc_proto_wr_str(o, "action", efc_proto_ota_action_str(m->action), 32, &ok);
        efc_proto_wr_str(o, "outcome", efc_proto_ota_outcome_str(m->outcome), 32, &ok);
        efc_proto_wr_str(o, "reason", m->reason, sizeof(m->reason), &ok);
        efc_proto_wr_str(o, "active_sha256", m->active_sha256, sizeof(m->active_sha256), &ok);
        efc_proto_wr_num(o, "active_version", (double)m->active_version, &ok);
        efc_proto_wr_str(o, "active_policy", m->active_policy, sizeof(m->active_policy), &ok);
        efc_proto_wr_bool(o, "has_labels", m->has_labels, &ok);
        efc_proto_wr_num(o, "eval_total", m->eval_total, &ok);
        efc_proto_wr_num(o, "correct", m->correct, &ok);
        efc_proto_wr_num(o, "agree", m->agree, &ok);
        efc_proto_wr_num(o, "p50_ms", m->p50_ms, &ok);
        efc_proto_wr_num(o, "p99_ms", m->p99_ms, &ok);
        efc_proto_wr_num(o, "peak_rss_bytes", (double)m->peak_rss_bytes, &ok);
        if (ok && (m->active_version > (1ULL << 53) || m->peak_rss_bytes > (1ULL << 53))) {
            ok = 0;
            efc_errf(EFC_EINVAL, "a 64-bit field exceeds 2^53");
        }
    }
    return finish(o, ok, "ota_report", check_report, out);
}
