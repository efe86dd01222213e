/* msg_job.c — a job (coordinator -> agent): encode, decode, validate. */
#include <string.h>

#include "common/efc_alloc.h"
#include "proto/proto.h"
#include "proto/proto_int.h"

#define MSG "job"
#define SAMPLES_MAX 10000000 /* local data sets are far smaller; caps a hostile job */

/* "" (fetch by MQTT chunks) or an http(s) URL of printable ASCII without spaces. */
static enum efc_status check_url(const char *u)
{
    if (!u[0])
        return EFC_OK;
    if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)
        return efc_errf(EFC_EPROTO, "%s: url: not http:// or https://", MSG);
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return efc_errf(EFC_EPROTO, "%s: url: space, control or non-ASCII byte", MSG);
    return EFC_OK;
}

static enum efc_status decode_fields(struct efc_proto_rd *r, void *out)
{
    struct efc_proto_job *m = out;

    m->version = EFC_PROTO_VERSION;
    efc_proto_rd_id(r, "job_id", m->job_id, sizeof(m->job_id));
    efc_proto_rd_id(r, "round_id", m->round_id, sizeof(m->round_id));
    efc_proto_rd_id(r, "device_id", m->device_id, sizeof(m->device_id));
    efc_proto_rd_text(r, "policy", m->policy, sizeof(m->policy), 0);
    efc_proto_rd_hex(r, "model_sha256", m->model_sha256, 0);
    efc_proto_rd_u64(r, "model_bytes", 1, UINT64_MAX, &m->model_bytes);
    efc_proto_rd_hex(r, "base_sha256", m->base_sha256, 0);
    efc_proto_rd_u64(r, "base_bytes", 1, UINT64_MAX, &m->base_bytes);
    efc_proto_rd_text(r, "url", m->url, sizeof(m->url), 1);
    efc_proto_rd_i32(r, "calib_samples", 0, SAMPLES_MAX, &m->calib_samples);
    efc_proto_rd_i32(r, "eval_samples", 1, SAMPLES_MAX, &m->eval_samples);
    efc_proto_rd_i32(r, "batch", 1, 65536, &m->batch);
    efc_proto_rd_i32(r, "timed_runs", 1, 1000000, &m->timed_runs);
    efc_proto_rd_u64(r, "seed", 0, UINT64_MAX, &m->seed);
    efc_proto_rd_i64(r, "deadline_ms", 0, INT64_MAX, &m->deadline_ms);
    efc_proto_rd_i64(r, "mem_limit_bytes", 0, INT64_MAX, &m->mem_limit_bytes);
    if (r->st == EFC_OK)
        r->st = check_url(m->url);
    /* The agent's outbox and the acks share one id space: OTA ids own this prefix. */
    if (r->st == EFC_OK && !strncmp(m->job_id, EFC_PROTO_OTA_PREFIX, strlen(EFC_PROTO_OTA_PREFIX)))
        r->st = efc_errf(EFC_EPROTO, "%s: job_id: starts with \"%s\" (reserved for OTA)", MSG,
                         EFC_PROTO_OTA_PREFIX);
    return r->st;
}

enum efc_status efc_proto_job_decode(const void *buf, size_t len, struct efc_proto_job *out)
{
    return efc_proto_decode_msg(buf, len, MSG, "job", decode_fields, out, sizeof(*out),
                                NULL, NULL);
}

enum efc_status efc_proto_job_encode(const struct efc_proto_job *m, char **out)
{
    struct efc_proto_job chk;
    cJSON *o = efc_proto_wr_begin("job");
    enum efc_status st;
    char detail[256];
    int ok = o != NULL;

    if (ok) {
        efc_proto_wr_str(o, "job_id", m->job_id, sizeof(m->job_id), &ok);
        efc_proto_wr_str(o, "round_id", m->round_id, sizeof(m->round_id), &ok);
        efc_proto_wr_str(o, "device_id", m->device_id, sizeof(m->device_id), &ok);
        efc_proto_wr_str(o, "policy", m->policy, sizeof(m->policy), &ok);
        efc_proto_wr_str(o, "model_sha256", m->model_sha256, sizeof(m->model_sha256), &ok);
        efc_proto_wr_num(o, "model_bytes", (double)m->model_bytes, &ok);
        efc_proto_wr_str(o, "base_sha256", m->base_sha256, sizeof(m->base_sha256), &ok);
        efc_proto_wr_num(o, "base_bytes", (double)m->base_bytes, &ok);
        efc_proto_wr_str(o, "url", m->url, sizeof(m->url), &ok);
        efc_proto_wr_num(o, "calib_samples", m->calib_samples, &ok);
        efc_proto_wr_num(o, "eval_samples", m->eval_samples, &ok);
        efc_proto_wr_num(o, "batch", m->batch, &ok);
        efc_proto_wr_num(o, "timed_runs", m->timed_runs, &ok);
        efc_proto_wr_num(o, "seed", (double)m->seed, &ok);
        efc_proto_wr_num(o, "deadline_ms", (double)m->deadline_ms, &ok);
        efc_proto_wr_num(o, "mem_limit_bytes", (double)m->mem_limit_bytes, &ok);
        /* (double) of a value above 2^53 may round to a value the decoder would accept:
         * refuse here so a seed or size is never silently changed on the wire. */
        if (ok && (m->model_bytes > (1ULL << 53) || m->base_bytes > (1ULL << 53) ||
                   m->seed > (1ULL << 53) || m->deadline_ms > (1LL << 53) ||
                   m->mem_limit_bytes > (1LL << 53))) {
            ok = 0;
            efc_errf(EFC_EINVAL, "a 64-bit field exceeds 2^53");
        }
    }
    st = efc_proto_wr_finish(o, ok, MSG, out);
    if (st != EFC_OK)
        return st;
    st = efc_proto_job_decode(*out, strlen(*out), &chk);
    if (st != EFC_OK) {
        efc_free(*out);
        *out = NULL;
        efc_proto_detail_copy(detail, sizeof(detail));
        return efc_errf(st == EFC_ENOMEM ? st : EFC_EINVAL, "encode: %s", detail);
    }
    return EFC_OK;
}
