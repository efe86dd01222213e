/* msg_result.c — a result (agent -> coordinator): encode, decode, validate.
 *
 * Besides each field's type and range, the paired counts must be consistent (docs/protocol.md):
 * both_correct + base_only + cand_only <= eval_total, correct = both_correct + cand_only,
 * base_correct = both_correct + base_only, agree <= eval_total; latencies p50 <= p90 <= p99.
 * sparse_layers is the one optional field: absent decodes as 0 (docs/protocol.md).
 */
#include <string.h>

#include "common/efc_alloc.h"
#include "proto/proto.h"
#include "proto/proto_int.h"

#define MSG "result"
#define SAMPLES_MAX 10000000
#define SPARSE_LAYERS_MAX 65536

static enum efc_status check_counts(const struct efc_proto_result *m)
{
    int64_t paired = (int64_t)m->both_correct + m->base_only + m->cand_only;

    if (paired > m->eval_total)
        return efc_errf(EFC_EPROTO, "%s: both_correct + base_only + cand_only > eval_total", MSG);
    if ((int64_t)m->correct != (int64_t)m->both_correct + m->cand_only)
        return efc_errf(EFC_EPROTO, "%s: correct != both_correct + cand_only", MSG);
    if ((int64_t)m->base_correct != (int64_t)m->both_correct + m->base_only)
        return efc_errf(EFC_EPROTO, "%s: base_correct != both_correct + base_only", MSG);
    if (m->agree > m->eval_total)
        return efc_errf(EFC_EPROTO, "%s: agree > eval_total", MSG);
    if (m->p50_ms > m->p90_ms || m->p90_ms > m->p99_ms)
        return efc_errf(EFC_EPROTO, "%s: latencies not ordered p50 <= p90 <= p99", MSG);
    return EFC_OK;
}

static enum efc_status status_field(struct efc_proto_rd *r, int32_t *out)
{
    char s[16];

    if (efc_proto_rd_text(r, "status", s, sizeof(s), 0) != EFC_OK)
        return r->st;
    if (strcmp(s, "ok") == 0)
        *out = EFC_PROTO_RESULT_OK;
    else if (strcmp(s, "failed") == 0)
        *out = EFC_PROTO_RESULT_FAILED;
    else
        r->st = efc_errf(EFC_EPROTO, "%s: status: not \"ok\" or \"failed\"", MSG);
    return r->st;
}

static enum efc_status decode_fields(struct efc_proto_rd *r, void *out)
{
    struct efc_proto_result *m = out;

    m->version = EFC_PROTO_VERSION;
    efc_proto_rd_id(r, "job_id", m->job_id, sizeof(m->job_id));
    efc_proto_rd_id(r, "round_id", m->round_id, sizeof(m->round_id));
    efc_proto_rd_id(r, "device_id", m->device_id, sizeof(m->device_id));
    efc_proto_rd_id(r, "hw_class", m->hw_class, sizeof(m->hw_class));
    efc_proto_rd_text(r, "policy", m->policy, sizeof(m->policy), 0);
    status_field(r, &m->status);
    efc_proto_rd_text(r, "error", m->error, sizeof(m->error), 1);
    efc_proto_rd_text(r, "isa", m->isa, sizeof(m->isa), 1);
    efc_proto_rd_text(r, "blas_core", m->blas_core, sizeof(m->blas_core), 1);
    efc_proto_rd_bool(r, "has_labels", &m->has_labels);
    efc_proto_rd_i32(r, "eval_total", 0, SAMPLES_MAX, &m->eval_total);
    efc_proto_rd_i32(r, "correct", 0, SAMPLES_MAX, &m->correct);
    efc_proto_rd_i32(r, "base_correct", 0, SAMPLES_MAX, &m->base_correct);
    efc_proto_rd_i32(r, "both_correct", 0, SAMPLES_MAX, &m->both_correct);
    efc_proto_rd_i32(r, "base_only", 0, SAMPLES_MAX, &m->base_only);
    efc_proto_rd_i32(r, "cand_only", 0, SAMPLES_MAX, &m->cand_only);
    efc_proto_rd_i32(r, "agree", 0, SAMPLES_MAX, &m->agree);
    efc_proto_rd_i32(r, "calib_samples", 0, SAMPLES_MAX, &m->calib_samples);
    efc_proto_rd_f64(r, "calib_s", EFC_PROTO_F64_MAX, &m->calib_s);
    efc_proto_rd_f64(r, "p50_ms", EFC_PROTO_F64_MAX, &m->p50_ms);
    efc_proto_rd_f64(r, "p90_ms", EFC_PROTO_F64_MAX, &m->p90_ms);
    efc_proto_rd_f64(r, "p99_ms", EFC_PROTO_F64_MAX, &m->p99_ms);
    efc_proto_rd_i32(r, "batch", 0, 65536, &m->batch);
    efc_proto_rd_f64(r, "batch_p50_ms", EFC_PROTO_F64_MAX, &m->batch_p50_ms);
    efc_proto_rd_u64(r, "model_bytes", 0, UINT64_MAX, &m->model_bytes);
    efc_proto_rd_u64(r, "weight_bytes", 0, UINT64_MAX, &m->weight_bytes);
    efc_proto_rd_u64(r, "peak_activation_bytes", 0, UINT64_MAX, &m->peak_activation_bytes);
    efc_proto_rd_u64(r, "peak_rss_bytes", 0, UINT64_MAX, &m->peak_rss_bytes);
    /* Optional (added after version 1 shipped, so older agents omit it): absent means 0;
     * present, it is checked like every other field (integer, range, not duplicated). */
    if (r->st == EFC_OK && cJSON_GetObjectItemCaseSensitive(r->root, "sparse_layers"))
        efc_proto_rd_i32(r, "sparse_layers", 0, SPARSE_LAYERS_MAX, &m->sparse_layers);
    if (r->st == EFC_OK && m->isa[0] && !efc_proto_id_valid(m->isa))
        r->st = efc_errf(EFC_EPROTO, "%s: isa: not a valid id", MSG);
    if (r->st == EFC_OK)
        r->st = check_counts(m);
    return r->st;
}

enum efc_status efc_proto_result_decode(const void *buf, size_t len, const char *topic_device,
                                        struct efc_proto_result *out)
{
    return efc_proto_decode_msg(buf, len, MSG, "result", decode_fields, out, sizeof(*out),
                                topic_device, out->device_id);
}

enum efc_status efc_proto_result_encode(const struct efc_proto_result *m, char **out)
{
    struct efc_proto_result chk;
    cJSON *o = efc_proto_wr_begin("result");
    enum efc_status st;
    char detail[256];
    int ok = o != NULL;

    if (ok) {
        efc_proto_wr_str(o, "job_id", m->job_id, sizeof(m->job_id), &ok);
        efc_proto_wr_str(o, "round_id", m->round_id, sizeof(m->round_id), &ok);
        efc_proto_wr_str(o, "device_id", m->device_id, sizeof(m->device_id), &ok);
        efc_proto_wr_str(o, "hw_class", m->hw_class, sizeof(m->hw_class), &ok);
        efc_proto_wr_str(o, "policy", m->policy, sizeof(m->policy), &ok);
        if (ok && m->status != EFC_PROTO_RESULT_OK && m->status != EFC_PROTO_RESULT_FAILED) {
            ok = 0;
            efc_errf(EFC_EINVAL, "status: %d is not a result status", (int)m->status);
        }
        if (ok && !cJSON_AddStringToObject(o, "status",
                                           m->status == EFC_PROTO_RESULT_OK ? "ok" : "failed")) {
            ok = 0;
            efc_errf(EFC_ENOMEM, "status: out of memory");
        }
        efc_proto_wr_str(o, "error", m->error, sizeof(m->error), &ok);
        efc_proto_wr_str(o, "isa", m->isa, sizeof(m->isa), &ok);
        efc_proto_wr_str(o, "blas_core", m->blas_core, sizeof(m->blas_core), &ok);
        efc_proto_wr_bool(o, "has_labels", m->has_labels, &ok);
        efc_proto_wr_num(o, "eval_total", m->eval_total, &ok);
        efc_proto_wr_num(o, "correct", m->correct, &ok);
        efc_proto_wr_num(o, "base_correct", m->base_correct, &ok);
        efc_proto_wr_num(o, "both_correct", m->both_correct, &ok);
        efc_proto_wr_num(o, "base_only", m->base_only, &ok);
        efc_proto_wr_num(o, "cand_only", m->cand_only, &ok);
        efc_proto_wr_num(o, "agree", m->agree, &ok);
        efc_proto_wr_num(o, "calib_samples", m->calib_samples, &ok);
        efc_proto_wr_num(o, "calib_s", m->calib_s, &ok);
        efc_proto_wr_num(o, "p50_ms", m->p50_ms, &ok);
        efc_proto_wr_num(o, "p90_ms", m->p90_ms, &ok);
        efc_proto_wr_num(o, "p99_ms", m->p99_ms, &ok);
        efc_proto_wr_num(o, "batch", m->batch, &ok);
        efc_proto_wr_num(o, "batch_p50_ms", m->batch_p50_ms, &ok);
        efc_proto_wr_num(o, "model_bytes", (double)m->model_bytes, &ok);
        efc_proto_wr_num(o, "weight_bytes", (double)m->weight_bytes, &ok);
        efc_proto_wr_num(o, "peak_activation_bytes", (double)m->peak_activation_bytes, &ok);
        efc_proto_wr_num(o, "peak_rss_bytes", (double)m->peak_rss_bytes, &ok);
        efc_proto_wr_num(o, "sparse_layers", m->sparse_layers, &ok);
        if (ok && (m->model_bytes > (1ULL << 53) || m->weight_bytes > (1ULL << 53) ||
                   m->peak_activation_bytes > (1ULL << 53) || m->peak_rss_bytes > (1ULL << 53))) {
            ok = 0;
            efc_errf(EFC_EINVAL, "a byte count exceeds 2^53");
        }
    }
    st = efc_proto_wr_finish(o, ok, MSG, out);
    if (st != EFC_OK)
        return st;
    st = efc_proto_result_decode(*out, strlen(*out), NULL, &chk);
    if (st != EFC_OK) {
        efc_free(*out);
        *out = NULL;
        efc_proto_detail_copy(detail, sizeof(detail));
        return efc_errf(st == EFC_ENOMEM ? st : EFC_EINVAL, "encode: %s", detail);
    }
    return EFC_OK;
}
