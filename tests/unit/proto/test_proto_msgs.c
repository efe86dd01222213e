/* test_proto_msgs.c — every proto message (status, job, result, ack, chunk_req, ota,
 * ota_report): round trips (including the extremes: 63-byte ids, 2^53 counters, awkward
 * doubles, UTF-8 text, a 4096-byte manifest), unknown extra fields ignored, encoders refusing
 * structs that would not decode, and for each message type a table of malformed payloads
 * (>= 30 generic + type-specific) that must all return EFC_EPROTO without crashing:
 * truncations, wrong types, missing and duplicated fields, bad versions, out-of-range numbers
 * (-1, 2^63, 2^53 + 2, 1e400, NaN, Infinity), non-UTF-8, "\u0000", nesting depth 1000,
 * oversized payloads, topic/body device mismatch, inconsistent counts. Optional members
 * (result.sparse_layers, status.active_version / active_policy) decode when absent. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "common/efc_alloc.h"
#include "proto/chunk.h"
#include "proto/proto.h"

#define HEX_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
#define ID63 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789."
/* The longest ota id: "ota-" + 59 characters. */
#define OTA63 "ota-efghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789."
/* A manifest as the signer writes it (canonical: one line, quotes to escape). */
#define MANIFEST                                                                                   \
    "{\"format\":1,\"artifact_sha256\":\"" HEX_A "\",\"artifact_bytes\":\"61234\","                \
    "\"model_id\":\"mlp\",\"policy\":\"int8(calib=kl,weights=channel)\",\"version\":\"3\","        \
    "\"key_id\":\"0011223344556677\",\"sig\":\"MEUCIQ==\"}"

enum kind { K_STATUS, K_JOB, K_RESULT, K_ACK, K_REQ, K_OTA, K_REPORT, K_COUNT };
static const char *const kind_names[] = {"status",    "job", "result",    "ack",
                                         "chunk_req", "ota", "ota_report"};

union msg {
    struct efc_proto_status status;
    struct efc_proto_job job;
    struct efc_proto_result result;
    struct efc_proto_ack ack;
    struct efc_chunk_req req;
    struct efc_proto_ota ota;
    struct efc_proto_ota_report report;
};

static void sample_status(struct efc_proto_status *m)
{
    memset(m, 0, sizeof(*m));
    m->version = EFC_PROTO_VERSION;
    snprintf(m->device_id, sizeof(m->device_id), "dev-01");
    snprintf(m->hw_class, sizeof(m->hw_class), "x86_64-avx512vnni");
    snprintf(m->isa, sizeof(m->isa), "avx512vnni");
    snprintf(m->blas_core, sizeof(m->blas_core), "SkylakeX");
    m->cores = 2;
    m->mem_bytes = 8ULL << 30;
    snprintf(m->agent_version, sizeof(m->agent_version), "0.1.0");
    m->online = 1;
    m->busy = 0;
    snprintf(m->active_model, sizeof(m->active_model), HEX_A);
}

static void sample_job(struct efc_proto_job *m)
{
    memset(m, 0, sizeof(*m));
    m->version = EFC_PROTO_VERSION;
    snprintf(m->job_id, sizeof(m->job_id), "job-42");
    snprintf(m->round_id, sizeof(m->round_id), "round-7");
    snprintf(m->device_id, sizeof(m->device_id), "dev-01");
    snprintf(m->policy, sizeof(m->policy), "int8(calib=kl,weights=channel)");
    snprintf(m->model_sha256, sizeof(m->model_sha256), HEX_A);
    m->model_bytes = 123456;
    snprintf(m->base_sha256, sizeof(m->base_sha256), HEX_B);
    m->base_bytes = 234567;
    m->calib_samples = 500;
    m->eval_samples = 1000;
    m->batch = 32;
    m->timed_runs = 50;
    m->seed = 0xdeadbeefULL;
    m->deadline_ms = 1795000000000LL;
    m->mem_limit_bytes = 512LL << 20;
}

static void sample_result(struct efc_proto_result *m)
{
    memset(m, 0, sizeof(*m));
    m->version = EFC_PROTO_VERSION;
    snprintf(m->job_id, sizeof(m->job_id), "job-42");
    snprintf(m->round_id, sizeof(m->round_id), "round-7");
    snprintf(m->device_id, sizeof(m->device_id), "dev-01");
    snprintf(m->hw_class, sizeof(m->hw_class), "x86_64-avx2");
    snprintf(m->policy, sizeof(m->policy), "int8(calib=kl,weights=channel)");
    m->status = EFC_PROTO_RESULT_OK;
    snprintf(m->isa, sizeof(m->isa), "avx2");
    snprintf(m->blas_core, sizeof(m->blas_core), "Haswell");
    m->has_labels = 1;
    m->eval_total = 1000;
    m->both_correct = 880;
    m->base_only = 12;
    m->cand_only = 9;
    m->correct = 889;
    m->base_correct = 892;
    m->agree = 975;
    m->calib_samples = 500;
    m->calib_s = 0.123456789;
    m->p50_ms = 0.1;
    m->p90_ms = 0.30000000000000004;
    m->p99_ms = 1.0 / 3.0;
    m->batch = 32;
    m->batch_p50_ms = 2.5e-7;
    m->model_bytes = 61234;
    m->weight_bytes = 60000;
    m->peak_activation_bytes = 4096;
    m->peak_rss_bytes = 12ULL << 20;
}

static void sample_ack(struct efc_proto_ack *m)
{
    memset(m, 0, sizeof(*m));
    m->version = EFC_PROTO_VERSION;
    snprintf(m->job_id, sizeof(m->job_id), "job-42");
    snprintf(m->device_id, sizeof(m->device_id), "dev-01");
}

static void sample_req(struct efc_chunk_req *m)
{
    memset(m, 0, sizeof(*m));
    m->version = EFC_PROTO_VERSION;
    snprintf(m->sha256, sizeof(m->sha256), HEX_A);
    m->offset = 65536;
    m->length = 65536;
}

static void sample_ota(struct efc_proto_ota *m)
{
    memset(m, 0, sizeof(*m));
    m->version = EFC_PROTO_VERSION;
    snprintf(m->ota_id, sizeof(m->ota_id), "ota-7");
    snprintf(m->rollout_id, sizeof(m->rollout_id), "rollout-3");
    snprintf(m->device_id, sizeof(m->device_id), "dev-01");
    m->action = EFC_PROTO_OTA_INSTALL;
    snprintf(m->manifest, sizeof(m->manifest), "%s", MANIFEST);
    m->calib_samples = 200;
    m->eval_samples = 500;
    m->health_runs = 20;
    m->min_accuracy = 0.85;
    m->min_agree = 0.97;
    m->max_p99_ms = 12.5;
    m->max_rss_bytes = 256LL << 20;
    m->seed = 42;
    m->deadline_ms = 1795000000000LL;
    m->mem_limit_bytes = 512LL << 20;
}

static void sample_report(struct efc_proto_ota_report *m)
{
    memset(m, 0, sizeof(*m));
    m->version = EFC_PROTO_VERSION;
    snprintf(m->ota_id, sizeof(m->ota_id), "ota-7");
    snprintf(m->rollout_id, sizeof(m->rollout_id), "rollout-3");
    snprintf(m->device_id, sizeof(m->device_id), "dev-01");
    m->action = EFC_PROTO_OTA_INSTALL;
    m->outcome = EFC_PROTO_OTA_INSTALLED;
    snprintf(m->active_sha256, sizeof(m->active_sha256), HEX_A);
    m->active_version = 3;
    snprintf(m->active_policy, sizeof(m->active_policy), "int8(calib=kl,weights=channel)");
    m->has_labels = 1;
    m->eval_total = 500;
    m->correct = 431;
    m->agree = 493;
    m->p50_ms = 0.8;
    m->p99_ms = 2.25;
    m->peak_rss_bytes = 40ULL << 20;
}

static void sample(enum kind k, union msg *m)
{
    switch (k) {
    case K_STATUS:
        sample_status(&m->status);
        break;
    case K_JOB:
        sample_job(&m->job);
        break;
    case K_RESULT:
        sample_result(&m->result);
        break;
    case K_ACK:
        sample_ack(&m->ack);
        break;
    case K_OTA:
        sample_ota(&m->ota);
        break;
    case K_REPORT:
        sample_report(&m->report);
        break;
    default:
        sample_req(&m->req);
        break;
    }
}

static enum efc_status encode(enum kind k, const union msg *m, char **out)
{
    switch (k) {
    case K_STATUS:
        return efc_proto_status_encode(&m->status, out);
    case K_JOB:
        return efc_proto_job_encode(&m->job, out);
    case K_RESULT:
        return efc_proto_result_encode(&m->result, out);
    case K_ACK:
        return efc_proto_ack_encode(&m->ack, out);
    case K_OTA:
        return efc_proto_ota_encode(&m->ota, out);
    case K_REPORT:
        return efc_proto_ota_report_encode(&m->report, out);
    default:
        return efc_chunk_req_encode(&m->req, out);
    }
}

static enum efc_status decode(enum kind k, const void *buf, size_t len, const char *topic,
                              union msg *m)
{
    switch (k) {
    case K_STATUS:
        return efc_proto_status_decode(buf, len, topic, &m->status);
    case K_JOB:
        return efc_proto_job_decode(buf, len, &m->job);
    case K_RESULT:
        return efc_proto_result_decode(buf, len, topic, &m->result);
    case K_ACK:
        return efc_proto_ack_decode(buf, len, &m->ack);
    case K_OTA:
        return efc_proto_ota_decode(buf, len, &m->ota);
    case K_REPORT:
        return efc_proto_ota_report_decode(buf, len, topic, &m->report);
    default:
        return efc_chunk_req_decode(buf, len, &m->req);
    }
}

static size_t msg_size(enum kind k)
{
    switch (k) {
    case K_STATUS:
        return sizeof(struct efc_proto_status);
    case K_JOB:
        return sizeof(struct efc_proto_job);
    case K_RESULT:
        return sizeof(struct efc_proto_result);
    case K_ACK:
        return sizeof(struct efc_proto_ack);
    case K_OTA:
        return sizeof(struct efc_proto_ota);
    case K_REPORT:
        return sizeof(struct efc_proto_ota_report);
    default:
        return sizeof(struct efc_chunk_req);
    }
}

static void round_trip(enum kind k, const union msg *in)
{
    union msg out;
    char *s = NULL;

    assert_int_equal(encode(k, in, &s), EFC_OK);
    assert_non_null(s);
    assert_int_equal(decode(k, s, strlen(s), "dev-01", &out), EFC_OK);
    assert_memory_equal(in, &out, msg_size(k));
    efc_free(s);
}

static void test_round_trip_samples(void **state)
{
    union msg m;
    (void)state;
    for (int k = 0; k < K_COUNT; k++) {
        memset(&m, 0, sizeof(m));
        sample((enum kind)k, &m);
        round_trip((enum kind)k, &m);
    }
}

static void test_round_trip_extremes(void **state)
{
    union msg m;
    (void)state;

    sample_status(&m.status);
    snprintf(m.status.device_id, sizeof(m.status.device_id), ID63);
    m.status.mem_bytes = 1ULL << 53;
    memset(m.status.active_model, 0, sizeof(m.status.active_model));
    memset(m.status.blas_core, 0, sizeof(m.status.blas_core));
    m.status.online = 0;
    m.status.busy = 1;
    {
        union msg out;
        char *s;
        assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_OK);
        assert_int_equal(efc_proto_status_decode(s, strlen(s), ID63, &out.status), EFC_OK);
        assert_memory_equal(&m.status, &out.status, sizeof(m.status));
        efc_free(s);
    }

    sample_job(&m.job);
    m.job.seed = (1ULL << 53) - 1;
    m.job.model_bytes = 1ULL << 53;
    m.job.deadline_ms = 0;
    m.job.mem_limit_bytes = 1LL << 53;
    memset(m.job.policy, 'p', sizeof(m.job.policy) - 1);
    m.job.policy[sizeof(m.job.policy) - 1] = '\0';
    snprintf(m.job.url, sizeof(m.job.url), "https://artifacts.example/m/%s.efm", HEX_A);
    round_trip(K_JOB, &m);

    sample_result(&m.result);
    m.result.status = EFC_PROTO_RESULT_FAILED;
    snprintf(m.result.error, sizeof(m.result.error),
             "evaluation killed: RLIMIT_AS \xc3\xa9\xe2\x82\xac");
    m.result.calib_s = 5e-324; /* smallest subnormal */
    m.result.p50_ms = 1e-300;
    m.result.p90_ms = 123456789.123456789;
    m.result.p99_ms = 1e12;
    m.result.batch_p50_ms = 0.0;
    m.result.peak_rss_bytes = 1ULL << 53;
    m.result.has_labels = 0;
    m.result.both_correct = m.result.base_only = m.result.cand_only = 0;
    m.result.correct = m.result.base_correct = 0;
    m.result.sparse_layers = 65536;
    round_trip(K_RESULT, &m);

    sample_ack(&m.ack);
    snprintf(m.ack.job_id, sizeof(m.ack.job_id), ID63);
    round_trip(K_ACK, &m);

    sample_req(&m.req);
    m.req.offset = EFC_CHUNK_TOTAL_MAX - 1;
    m.req.length = EFC_PROTO_CHUNK_MAX;
    round_trip(K_REQ, &m);

    /* ota: longest ids, a rollback, a full 4096-byte manifest, every limit at its bound */
    sample_ota(&m.ota);
    snprintf(m.ota.ota_id, sizeof(m.ota.ota_id), OTA63);
    snprintf(m.ota.rollout_id, sizeof(m.ota.rollout_id), ID63);
    snprintf(m.ota.device_id, sizeof(m.ota.device_id), ID63);
    m.ota.action = EFC_PROTO_OTA_ROLLBACK;
    memset(m.ota.manifest, 'm', sizeof(m.ota.manifest) - 1);
    memcpy(m.ota.manifest, "{\"q\":\"\\\" \xc3\xa9\"", 12); /* quote, backslash, UTF-8 */
    m.ota.manifest[sizeof(m.ota.manifest) - 1] = '\0';
    memset(m.ota.url, 'u', sizeof(m.ota.url) - 1);
    memcpy(m.ota.url, "http://", 7);
    m.ota.url[sizeof(m.ota.url) - 1] = '\0';
    m.ota.calib_samples = 0;
    m.ota.eval_samples = 10000000;
    m.ota.health_runs = 1;
    m.ota.min_accuracy = 1.0;
    m.ota.min_agree = 0.0;
    m.ota.max_p99_ms = 1e12;
    m.ota.max_rss_bytes = 1LL << 53;
    m.ota.seed = 1ULL << 53;
    m.ota.deadline_ms = 1LL << 53;
    m.ota.mem_limit_bytes = 0;
    {
        union msg out;
        char *s;
        assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_OK);
        assert_int_equal(efc_proto_ota_decode(s, strlen(s), &out.ota), EFC_OK);
        assert_memory_equal(&m.ota, &out.ota, sizeof(m.ota));
        assert_int_equal(strlen(out.ota.manifest), EFC_PROTO_MANIFEST_MAX - 1);
        efc_free(s);
    }

    /* ota_report: every outcome, awkward doubles, counts at their bounds */
    for (int32_t oc = EFC_PROTO_OTA_INSTALLED; oc <= EFC_PROTO_OTA_REVERTED; oc++) {
        sample_report(&m.report);
        m.report.outcome = oc;
        m.report.action =
            oc == EFC_PROTO_OTA_REVERTED ? EFC_PROTO_OTA_ROLLBACK : EFC_PROTO_OTA_INSTALL;
        round_trip(K_REPORT, &m);
    }
    sample_report(&m.report);
    snprintf(m.report.ota_id, sizeof(m.report.ota_id), "ota-");
    m.report.outcome = EFC_PROTO_OTA_ROLLED_BACK;
    memset(m.report.reason, 'r', sizeof(m.report.reason) - 1);
    memcpy(m.report.reason, "ROLLBACK: p99 \xe2\x82\xac", 17);
    m.report.reason[sizeof(m.report.reason) - 1] = '\0';
    memset(m.report.active_sha256, 0, sizeof(m.report.active_sha256));
    m.report.active_version = 1ULL << 53;
    memset(m.report.active_policy, 'p', sizeof(m.report.active_policy) - 1);
    m.report.active_policy[sizeof(m.report.active_policy) - 1] = '\0';
    m.report.eval_total = m.report.correct = m.report.agree = 10000000; /* == is allowed */
    m.report.p50_ms = 5e-324;
    m.report.p99_ms = 1e12;
    m.report.peak_rss_bytes = 1ULL << 53;
    round_trip(K_REPORT, &m);
    sample_report(&m.report); /* health gate not run: every count 0 */
    m.report.outcome = EFC_PROTO_OTA_REFUSED;
    m.report.has_labels = m.report.eval_total = m.report.correct = m.report.agree = 0;
    m.report.p50_ms = m.report.p99_ms = 0.0;
    m.report.peak_rss_bytes = 0;
    round_trip(K_REPORT, &m);
}

/* Forward compatibility: unknown members (of any JSON type) are ignored. Spliced in as text
 * (re-printing through cJSON would round the doubles, see efc_proto_wr_num). */
static void test_unknown_fields_ignored(void **state)
{
    static const char extra[] = "\"future_field\":\"x\",\"future_obj\":{\"a\":[1,2,{\"b\":null}]},"
                                "\"future_num\":-1e300,";
    (void)state;
    for (int k = 0; k < K_COUNT; k++) {
        union msg m, out;
        char *s, *t;
        size_t n;
        sample((enum kind)k, &m);
        assert_int_equal(encode((enum kind)k, &m, &s), EFC_OK);
        n = strlen(s);
        assert_true(s[0] == '{');
        t = efc_malloc(n + sizeof(extra));
        t[0] = '{';
        memcpy(t + 1, extra, sizeof(extra) - 1);
        memcpy(t + sizeof(extra), s + 1, n);
        assert_int_equal(decode((enum kind)k, t, strlen(t), "dev-01", &out), EFC_OK);
        assert_memory_equal(&m, &out, msg_size((enum kind)k));
        efc_free(t);
        efc_free(s);
    }
}

static void test_encoder_refuses(void **state)
{
    union msg m;
    char *s = (char *)0x1;
    (void)state;

    sample_status(&m.status);
    snprintf(m.status.device_id, sizeof(m.status.device_id), "bad/id");
    assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_EINVAL);
    assert_null(s);
    sample_status(&m.status);
    m.status.mem_bytes = (1ULL << 53) + 2;
    assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_EINVAL);
    sample_status(&m.status);
    m.status.online = 2;
    assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_EINVAL);
    sample_status(&m.status);
    memset(m.status.agent_version, 'v', sizeof(m.status.agent_version)); /* no NUL */
    assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_EINVAL);

    sample_job(&m.job);
    m.job.seed = UINT64_MAX;
    assert_int_equal(efc_proto_job_encode(&m.job, &s), EFC_EINVAL);
    sample_job(&m.job);
    m.job.model_sha256[3] = 'A';
    assert_int_equal(efc_proto_job_encode(&m.job, &s), EFC_EINVAL);

    sample_result(&m.result);
    m.result.status = 7;
    assert_int_equal(efc_proto_result_encode(&m.result, &s), EFC_EINVAL);
    sample_result(&m.result);
    m.result.correct++;
    assert_int_equal(efc_proto_result_encode(&m.result, &s), EFC_EINVAL);
    sample_result(&m.result);
    m.result.p50_ms = -1.0;
    assert_int_equal(efc_proto_result_encode(&m.result, &s), EFC_EINVAL);

    sample_ack(&m.ack);
    m.ack.job_id[0] = '\0';
    assert_int_equal(efc_proto_ack_encode(&m.ack, &s), EFC_EINVAL);
    sample_req(&m.req);
    m.req.length = 0;
    assert_int_equal(efc_chunk_req_encode(&m.req, &s), EFC_EINVAL);

    sample_status(&m.status);
    m.status.active_version = (1ULL << 53) + 2;
    assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_EINVAL);
    sample_status(&m.status);
    memset(m.status.active_policy, 'p', sizeof(m.status.active_policy)); /* no NUL */
    assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_EINVAL);
    sample_status(&m.status);
    m.status.active_policy[0] = '\n';
    assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_EINVAL);

    s = (char *)0x1;
    sample_ota(&m.ota);
    snprintf(m.ota.ota_id, sizeof(m.ota.ota_id), "job-42");
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    assert_null(s);
    sample_ota(&m.ota);
    m.ota.action = 2;
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    m.ota.action = -1;
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    memset(m.ota.manifest, 'm', sizeof(m.ota.manifest)); /* 4097 bytes, no NUL */
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    m.ota.manifest[0] = '\0';
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    snprintf(m.ota.url, sizeof(m.ota.url), "file:///etc/passwd");
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    m.ota.min_accuracy = 1.5;
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    m.ota.min_agree = NAN;
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    m.ota.health_runs = 0;
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    m.ota.seed = (1ULL << 53) + 2;
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    sample_ota(&m.ota);
    m.ota.deadline_ms = -1;
    assert_int_equal(efc_proto_ota_encode(&m.ota, &s), EFC_EINVAL);
    assert_null(s);

    sample_report(&m.report);
    m.report.outcome = 5;
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_EINVAL);
    sample_report(&m.report);
    m.report.outcome = -1;
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_EINVAL);
    sample_report(&m.report);
    m.report.correct = m.report.eval_total + 1;
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_EINVAL);
    sample_report(&m.report);
    m.report.agree = m.report.eval_total + 1;
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_EINVAL);
    sample_report(&m.report);
    m.report.active_version = (1ULL << 53) + 2;
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_EINVAL);
    sample_report(&m.report);
    m.report.active_sha256[0] = 'A';
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_EINVAL);
    sample_report(&m.report);
    m.report.has_labels = 2;
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_EINVAL);
    sample_report(&m.report);
    snprintf(m.report.ota_id, sizeof(m.report.ota_id), "rollout-3");
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_EINVAL);
    assert_null(s);
}

/* ---- malformed payloads ------------------------------------------------------------------ */

/* Valid message of kind k with member `field` replaced by raw JSON text (NULL: removed;
 * dup != 0: the raw value is added as a second member of the same name). */
static char *mutate(enum kind k, const char *field, const char *raw, int dup)
{
    union msg m;
    char *s, *t, *r;
    cJSON *o;

    sample(k, &m);
    assert_int_equal(encode(k, &m, &s), EFC_OK);
    o = cJSON_Parse(s);
    efc_free(s);
    assert_non_null(o);
    if (!dup)
        cJSON_DeleteItemFromObjectCaseSensitive(o, field);
    if (raw)
        cJSON_AddItemToObject(o, field, cJSON_CreateRaw(raw));
    t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    r = efc_strdup(t);
    cJSON_free(t);
    return r;
}

static int n_rejected;

static void expect_reject_len(enum kind k, const void *buf, size_t len, const char *topic,
                              const char *why)
{
    union msg out;
    enum efc_status st = decode(k, buf, len, topic, &out);

    if (st != EFC_EPROTO)
        fail_msg("%s: case \"%s\" gave %s, want EPROTO", kind_names[k], why, efc_status_str(st));
    n_rejected++;
}

static void expect_reject(enum kind k, const char *s, const char *why)
{
    expect_reject_len(k, s, strlen(s), "dev-01", why);
}

static void reject_mutation(enum kind k, const char *field, const char *raw, const char *why)
{
    char *s = mutate(k, field, raw, 0);
    expect_reject(k, s, why);
    efc_free(s);
}

/* A field of each JSON shape, per kind, for the generic cases. */
struct shape {
    const char *id;  /* an id-typed string member */
    const char *num; /* an integral size/count member (not version) */
    const char *str; /* a free-text string member ("" allowed or not) */
};

static const struct shape shapes[] = {
    [K_STATUS] = {"device_id", "mem_bytes", "agent_version"},
    [K_JOB] = {"job_id", "model_bytes", "policy"},
    [K_RESULT] = {"job_id", "model_bytes", "policy"},
    [K_ACK] = {"job_id", NULL, NULL},
    [K_REQ] = {NULL, "offset", "sha256"},
    /* ota_id has its own prefix rule (ota_specific): the generic id cases use another id */
    [K_OTA] = {"rollout_id", "max_rss_bytes", "manifest"},
    [K_REPORT] = {"rollout_id", "peak_rss_bytes", "reason"},
};

static char *deep(int levels)
{
    char *s = efc_malloc((size_t)levels * 2 + 1);
    for (int i = 0; i < levels; i++) {
        s[i] = '[';
        s[levels * 2 - 1 - i] = ']';
    }
    s[levels * 2] = '\0';
    return s;
}

static void generic_cases(enum kind k)
{
    const struct shape *sh = &shapes[k];
    union msg m;
    char *valid, *s, *big;
    size_t n;

    sample(k, &m);
    assert_int_equal(encode(k, &m, &valid), EFC_OK);
    n = strlen(valid);

    expect_reject_len(k, valid, 0, "dev-01", "empty");
    expect_reject_len(k, NULL, 0, "dev-01", "NULL buffer");
    /* Truncations. */
    expect_reject_len(k, valid, 1, "dev-01", "truncated to 1");
    expect_reject_len(k, valid, n / 3, "dev-01", "truncated to 1/3");
    expect_reject_len(k, valid, n / 2, "dev-01", "truncated to 1/2");
    expect_reject_len(k, valid, n - 2, "dev-01", "truncated by 2");
    expect_reject_len(k, valid, n - 1, "dev-01", "truncated by 1");
    /* Not an object / not JSON. */
    expect_reject(k, "[]", "array");
    expect_reject(k, "null", "null");
    expect_reject(k, "\"status\"", "string");
    expect_reject(k, "42", "number");
    expect_reject(k, "{}", "empty object");
    expect_reject(k, "{\"version\":1", "unterminated");
    expect_reject(k, "{'version':1}", "single quotes");
    /* Trailing bytes. */
    s = efc_malloc(n + 3);
    memcpy(s, valid, n);
    memcpy(s + n, "{}", 3);
    expect_reject(k, s, "two objects");
    s[n] = 'x';
    s[n + 1] = '\0';
    expect_reject(k, s, "trailing garbage");
    /* NUL byte inside. */
    memcpy(s, valid, n);
    s[n / 2] = '\0';
    expect_reject_len(k, s, n, "dev-01", "embedded NUL");
    efc_free(s);
    /* Version and type. */
    reject_mutation(k, "version", NULL, "version missing");
    reject_mutation(k, "version", "2", "version 2");
    reject_mutation(k, "version", "0", "version 0");
    reject_mutation(k, "version", "-1", "version -1");
    reject_mutation(k, "version", "\"1\"", "version as string");
    reject_mutation(k, "version", "1.5", "version 1.5");
    reject_mutation(k, "version", "null", "version null");
    reject_mutation(k, "type", NULL, "type missing");
    reject_mutation(k, "type", k == K_JOB ? "\"result\"" : "\"job\"", "wrong type");
    reject_mutation(k, "type", "5", "type as number");
    /* Nesting. */
    big = deep(1000);
    reject_mutation(k, "x_deep", big, "nesting depth 1000");
    efc_free(big);
    big = deep(8);
    reject_mutation(k, "x_deep", big, "nesting depth 9");
    efc_free(big);
    /* Oversized: a valid message padded past EFC_PROTO_MSG_MAX with an unknown member. */
    big = efc_malloc(EFC_PROTO_MSG_MAX + 3);
    memset(big, 'a', EFC_PROTO_MSG_MAX + 2);
    big[0] = '"';
    big[EFC_PROTO_MSG_MAX + 1] = '"';
    big[EFC_PROTO_MSG_MAX + 2] = '\0';
    reject_mutation(k, "x_pad", big, "oversized payload");
    efc_free(big);
    /* Duplicated member (ambiguous). */
    s = mutate(k, sh->id ? sh->id : sh->num, sh->id ? "\"other\"" : "0", 1);
    expect_reject(k, s, "duplicated member");
    efc_free(s);
    /* String members. */
    {
        const char *f = sh->id ? sh->id : sh->str;
        reject_mutation(k, f, "42", "number for a string");
        reject_mutation(k, f, "null", "null for a string");
        reject_mutation(k, f, "[\"a\"]", "array for a string");
        reject_mutation(k, f, "\"a\xff\x62\"", "non-UTF-8 byte");
        reject_mutation(k, f, "\"a\xc0\xaf\"", "overlong UTF-8");
        reject_mutation(k, f, "\"a\xed\xa0\x80\"", "UTF-8 surrogate");
        reject_mutation(k, f, "\"a\\u0000b\"", "\\u0000 escape");
        reject_mutation(k, f, "\"a\\ud800\"", "lone surrogate escape");
        reject_mutation(k, f, "\"a\\u0001\"", "control character");
        reject_mutation(k, f, "\"" ID63 "x\"", "64-byte string");
    }
    if (sh->id) {
        reject_mutation(k, sh->id, "\"a/b\"", "id with a slash");
        reject_mutation(k, sh->id, "\"a+b\"", "id with a wildcard");
        reject_mutation(k, sh->id, "\"\"", "empty id");
        reject_mutation(k, sh->id, "\"d\xc3\xa9v\"", "non-ASCII id");
    }
    /* Number members. */
    if (sh->num) {
        reject_mutation(k, sh->num, "-1", "negative size");
        reject_mutation(k, sh->num, "9223372036854775808", "2^63");
        reject_mutation(k, sh->num, "18446744073709551616", "2^64");
        reject_mutation(k, sh->num, "9007199254740994", "2^53 + 2");
        reject_mutation(k, sh->num, "1e400", "1e400 (infinite)");
        reject_mutation(k, sh->num, "NaN", "NaN literal");
        reject_mutation(k, sh->num, "Infinity", "Infinity literal");
        reject_mutation(k, sh->num, "\"NaN\"", "NaN-like string");
        reject_mutation(k, sh->num, "\"12\"", "number as string");
        reject_mutation(k, sh->num, "12.5", "fraction");
        reject_mutation(k, sh->num, "true", "bool for a number");
        reject_mutation(k, sh->num, "0x10", "hex literal");
    }
    efc_free(valid);
}

static const char *const status_fields[] = {
    "device_id",     "hw_class", "isa",  "blas_core",    "cores", "mem_bytes",
    "agent_version", "online",   "busy", "active_model", NULL};
static const char *const job_fields[] = {
    "job_id",          "round_id",    "device_id",  "policy", "model_sha256",
    "model_bytes",     "base_sha256", "base_bytes", "url",    "calib_samples",
    "eval_samples",    "batch",       "timed_runs", "seed",   "deadline_ms",
    "mem_limit_bytes", NULL};
static const char *const result_fields[] = {"job_id",
                                            "round_id",
                                            "device_id",
                                            "hw_class",
                                            "policy",
                                            "status",
                                            "error",
                                            "isa",
                                            "blas_core",
                                            "has_labels",
                                            "eval_total",
                                            "correct",
                                            "base_correct",
                                            "both_correct",
                                            "base_only",
                                            "cand_only",
                                            "agree",
                                            "calib_samples",
                                            "calib_s",
                                            "p50_ms",
                                            "p90_ms",
                                            "p99_ms",
                                            "batch",
                                            "batch_p50_ms",
                                            "model_bytes",
                                            "weight_bytes",
                                            "peak_activation_bytes",
                                            "peak_rss_bytes",
                                            NULL};
static const char *const ack_fields[] = {"job_id", "device_id", NULL};
static const char *const req_fields[] = {"sha256", "offset", "length", NULL};
static const char *const ota_fields[] = {
    "ota_id",        "rollout_id",   "device_id",   "action",          "manifest",  "url",
    "calib_samples", "eval_samples", "health_runs", "min_accuracy",    "min_agree", "max_p99_ms",
    "max_rss_bytes", "seed",         "deadline_ms", "mem_limit_bytes", NULL};
static const char *const report_fields[] = {
    "ota_id",        "rollout_id",     "device_id",     "action",         "outcome",    "reason",
    "active_sha256", "active_version", "active_policy", "has_labels",     "eval_total", "correct",
    "agree",         "p50_ms",         "p99_ms",        "peak_rss_bytes", NULL};
/* status: active_version and active_policy are optional (status_specific). */
static const char *const *const all_fields[] = {
    status_fields, job_fields, result_fields, ack_fields, req_fields, ota_fields, report_fields};

static void missing_fields(enum kind k)
{
    char why[96];
    for (const char *const *f = all_fields[k]; *f; f++) {
        snprintf(why, sizeof(why), "%s missing", *f);
        reject_mutation(k, *f, NULL, why);
        snprintf(why, sizeof(why), "%s null", *f);
        reject_mutation(k, *f, "null", why);
        snprintf(why, sizeof(why), "%s object", *f);
        reject_mutation(k, *f, "{}", why);
    }
}

static void run_kind(enum kind k, void (*specific)(void))
{
    int before = n_rejected;
    generic_cases(k);
    missing_fields(k);
    specific();
    print_message("%s: %d malformed cases rejected\n", kind_names[k], n_rejected - before);
    assert_true(n_rejected - before >= 30);
}

static void status_specific(void)
{
    union msg m;
    char *s;
    sample_status(&m.status);
    assert_int_equal(efc_proto_status_encode(&m.status, &s), EFC_OK);
    expect_reject_len(K_STATUS, s, strlen(s), "dev-02", "body/topic device mismatch");
    efc_free(s);
    reject_mutation(K_STATUS, "cores", "0", "zero cores");
    reject_mutation(K_STATUS, "cores", "1000000", "a million cores");
    reject_mutation(K_STATUS, "online", "1", "online as number");
    reject_mutation(K_STATUS, "busy", "\"false\"", "busy as string");
    reject_mutation(K_STATUS, "active_model", "\"" HEX_A "0\"", "65 hex digits");
    reject_mutation(K_STATUS, "active_model",
                    "\"0123456789ABCDEF0123456789abcdef0123456789abcdef"
                    "0123456789abcdef\"",
                    "uppercase hex");
    reject_mutation(K_STATUS, "active_model", "\"0123\"", "short hex");
    reject_mutation(K_STATUS, "isa", "\"avx512vnni-extra\"", "isa too long");
    reject_mutation(K_STATUS, "agent_version", "\"\"", "empty agent version");
    /* active_version / active_policy: optional, but checked when present */
    reject_mutation(K_STATUS, "active_version", "-1", "negative active_version");
    reject_mutation(K_STATUS, "active_version", "9007199254740994", "active_version 2^53 + 2");
    reject_mutation(K_STATUS, "active_version", "1.5", "fractional active_version");
    reject_mutation(K_STATUS, "active_version", "\"3\"", "active_version as string");
    reject_mutation(K_STATUS, "active_version", "null", "active_version null");
    reject_mutation(K_STATUS, "active_version", "{}", "active_version object");
    reject_mutation(K_STATUS, "active_policy", "3", "active_policy as number");
    reject_mutation(K_STATUS, "active_policy", "null", "active_policy null");
    reject_mutation(K_STATUS, "active_policy", "\"a\\tb\"", "tab in active_policy");
    {
        char pol[EFC_PROTO_POLICY_MAX + 3];
        pol[0] = '"';
        memset(pol + 1, 'p', EFC_PROTO_POLICY_MAX);
        pol[EFC_PROTO_POLICY_MAX + 1] = '"';
        pol[EFC_PROTO_POLICY_MAX + 2] = '\0';
        reject_mutation(K_STATUS, "active_policy", pol, "256-byte active_policy");
    }
    {
        char *d = mutate(K_STATUS, "active_version", "4", 1);
        expect_reject(K_STATUS, d, "active_version duplicated");
        efc_free(d);
        d = mutate(K_STATUS, "active_policy", "\"fp32\"", 1);
        expect_reject(K_STATUS, d, "active_policy duplicated");
        efc_free(d);
    }
}

static void job_specific(void)
{
    reject_mutation(K_JOB, "model_sha256", "\"\"", "empty model digest");
    reject_mutation(K_JOB, "model_sha256",
                    "\"g123456789abcdef0123456789abcdef0123456789abcdef"
                    "0123456789abcdef\"",
                    "non-hex digit");
    reject_mutation(K_JOB, "model_bytes", "0", "zero-byte model");
    reject_mutation(K_JOB, "eval_samples", "0", "no eval samples");
    reject_mutation(K_JOB, "calib_samples", "-5", "negative calib samples");
    reject_mutation(K_JOB, "calib_samples", "2147483648", "int32 overflow");
    reject_mutation(K_JOB, "batch", "0", "batch 0");
    reject_mutation(K_JOB, "timed_runs", "0", "no timed runs");
    reject_mutation(K_JOB, "url", "\"ftp://x/y\"", "ftp url");
    reject_mutation(K_JOB, "url", "\"https://x/a b\"", "url with a space");
    reject_mutation(K_JOB, "deadline_ms", "-1", "negative deadline");
    reject_mutation(K_JOB, "seed", "18446744073709551615", "seed 2^64 - 1");
    reject_mutation(K_JOB, "mem_limit_bytes", "-1", "negative memory limit");
    reject_mutation(K_JOB, "policy", "\"\"", "empty policy");
}

static void result_specific(void)
{
    union msg m;
    char *s;
    sample_result(&m.result);
    assert_int_equal(efc_proto_result_encode(&m.result, &s), EFC_OK);
    expect_reject_len(K_RESULT, s, strlen(s), "dev-99", "body/topic device mismatch");
    efc_free(s);
    reject_mutation(K_RESULT, "correct", "890", "correct != both + cand");
    reject_mutation(K_RESULT, "base_correct", "1", "base_correct != both + base_only");
    reject_mutation(K_RESULT, "eval_total", "900", "paired counts > eval_total");
    reject_mutation(K_RESULT, "agree", "1001", "agree > eval_total");
    reject_mutation(K_RESULT, "eval_total", "-1000", "negative eval_total");
    reject_mutation(K_RESULT, "status", "\"maybe\"", "unknown status");
    reject_mutation(K_RESULT, "status", "0", "status as number");
    reject_mutation(K_RESULT, "p50_ms", "\"NaN\"", "NaN string latency");
    reject_mutation(K_RESULT, "p50_ms", "-0.5", "negative latency");
    reject_mutation(K_RESULT, "p50_ms", "1e300", "latency out of range");
    reject_mutation(K_RESULT, "p50_ms", "0.5", "p50 > p90");
    reject_mutation(K_RESULT, "p99_ms", "0.2", "p99 < p90");
    reject_mutation(K_RESULT, "calib_s", "-1e-9", "negative calibration time");
    reject_mutation(K_RESULT, "has_labels", "2", "has_labels as number");
    reject_mutation(K_RESULT, "error", "\"line\\nbreak\"", "newline in error");
    reject_mutation(K_RESULT, "batch", "70000", "batch too large");
    reject_mutation(K_RESULT, "isa", "\"av x\"", "isa with a space");
    /* sparse_layers: optional, but checked when present */
    reject_mutation(K_RESULT, "sparse_layers", "-1", "negative sparse_layers");
    reject_mutation(K_RESULT, "sparse_layers", "65537", "sparse_layers too large");
    reject_mutation(K_RESULT, "sparse_layers", "2.5", "fractional sparse_layers");
    reject_mutation(K_RESULT, "sparse_layers", "\"3\"", "sparse_layers as string");
    reject_mutation(K_RESULT, "sparse_layers", "null", "sparse_layers null");
    reject_mutation(K_RESULT, "sparse_layers", "true", "sparse_layers as bool");
    reject_mutation(K_RESULT, "sparse_layers", "{}", "sparse_layers object");
    {
        char *d = mutate(K_RESULT, "sparse_layers", "2", 1);
        expect_reject(K_RESULT, d, "sparse_layers duplicated");
        efc_free(d);
    }
}

static void ack_specific(void)
{
    reject_mutation(K_ACK, "device_id", "\"dev 01\"", "id with a space");
    reject_mutation(K_ACK, "device_id", "\"" ID63 "x\"", "64-byte device id");
    reject_mutation(K_ACK, "job_id", "\"..\\/x\"", "escaped slash in id");
    reject_mutation(K_ACK, "job_id", "1", "job id as number");
}

static void req_specific(void)
{
    reject_mutation(K_REQ, "length", "0", "length 0");
    reject_mutation(K_REQ, "length", "262145", "length over the chunk limit");
    reject_mutation(K_REQ, "length", "-1", "negative length");
    reject_mutation(K_REQ, "offset", "1099511627776", "offset at EFC_CHUNK_TOTAL_MAX");
    reject_mutation(K_REQ, "sha256", "\"" HEX_A "\\u0000\"", "digest with \\u0000");
    reject_mutation(K_REQ, "sha256", "\"abc\"", "short digest");
}

static void ota_specific(void)
{
    char *big;

    /* ota_id: a valid id that starts with "ota-" (job ids never do) */
    reject_mutation(K_OTA, "ota_id", "\"job-42\"", "ota_id without the ota- prefix");
    reject_mutation(K_OTA, "ota_id", "\"OTA-7\"", "ota_id with an uppercase prefix");
    reject_mutation(K_OTA, "ota_id", "\"ota\"", "ota_id \"ota\"");
    reject_mutation(K_OTA, "ota_id", "\"xota-7\"", "ota_id with ota- inside");
    reject_mutation(K_OTA, "ota_id", "\"ota-7/x\"", "ota_id with a slash");
    reject_mutation(K_OTA, "ota_id", "\"ota-" ID63 "\"", "ota_id of 67 bytes");
    reject_mutation(K_OTA, "ota_id", "7", "ota_id as number");
    reject_mutation(K_OTA, "device_id", "\"dev 01\"", "device id with a space");
    /* action: one of the names, nothing else */
    reject_mutation(K_OTA, "action", "\"upgrade\"", "unknown action");
    reject_mutation(K_OTA, "action", "\"Install\"", "action in another case");
    reject_mutation(K_OTA, "action", "\"install \"", "action with a trailing space");
    reject_mutation(K_OTA, "action", "\"\"", "empty action");
    reject_mutation(K_OTA, "action", "0", "action as number");
    reject_mutation(K_OTA, "action", "\"installinstallinstallinstallinstall\"",
                    "action longer than its buffer");
    /* url: "" or http(s) */
    reject_mutation(K_OTA, "url", "\"ftp://x/y\"", "ftp url");
    reject_mutation(K_OTA, "url", "\"file:///etc/passwd\"", "file url");
    reject_mutation(K_OTA, "url", "\"HTTPS://x/y\"", "uppercase scheme");
    reject_mutation(K_OTA, "url", "\"https:/x/y\"", "scheme with one slash");
    reject_mutation(K_OTA, "url", "\"x/y\"", "no scheme");
    reject_mutation(K_OTA, "url", "\"https://x/a b\"", "url with a space");
    reject_mutation(K_OTA, "url", "\"https://x/\xc3\xa9\"", "url with a non-ASCII byte");
    reject_mutation(K_OTA, "url", "\"https://x/\\u007f\"", "url with DEL");
    /* manifest: 1..4096 printable bytes (accepted at 4096: test_ota_manifest_size) */
    reject_mutation(K_OTA, "manifest", "\"\"", "empty manifest");
    reject_mutation(K_OTA, "manifest", "\"{}\\n\"", "manifest with a newline");
    reject_mutation(K_OTA, "manifest", "{\"a\":1}", "manifest as an object");
    big = efc_malloc(EFC_PROTO_MANIFEST_MAX + 3); /* "<4097 x m>" */
    big[0] = '"';
    memset(big + 1, 'm', EFC_PROTO_MANIFEST_MAX);
    big[EFC_PROTO_MANIFEST_MAX + 1] = '"';
    big[EFC_PROTO_MANIFEST_MAX + 2] = '\0';
    reject_mutation(K_OTA, "manifest", big, "manifest of 4097 bytes");
    efc_free(big);
    /* the health gate */
    reject_mutation(K_OTA, "min_accuracy", "1.0000001", "min_accuracy above 1");
    reject_mutation(K_OTA, "min_accuracy", "2", "min_accuracy 2");
    reject_mutation(K_OTA, "min_accuracy", "-0.1", "negative min_accuracy");
    reject_mutation(K_OTA, "min_accuracy", "\"0.9\"", "min_accuracy as string");
    reject_mutation(K_OTA, "min_agree", "1.5", "min_agree above 1");
    reject_mutation(K_OTA, "max_p99_ms", "-1", "negative max_p99_ms");
    reject_mutation(K_OTA, "max_p99_ms", "1e13", "max_p99_ms out of range");
    reject_mutation(K_OTA, "health_runs", "0", "no health runs");
    reject_mutation(K_OTA, "health_runs", "1000001", "too many health runs");
    reject_mutation(K_OTA, "eval_samples", "0", "no eval samples");
    reject_mutation(K_OTA, "eval_samples", "10000001", "too many eval samples");
    reject_mutation(K_OTA, "calib_samples", "-1", "negative calib samples");
    reject_mutation(K_OTA, "calib_samples", "2147483648", "int32 overflow");
    reject_mutation(K_OTA, "deadline_ms", "-1", "negative deadline");
    reject_mutation(K_OTA, "mem_limit_bytes", "-1", "negative memory limit");
    reject_mutation(K_OTA, "seed", "18446744073709551615", "seed 2^64 - 1");
}

static void report_specific(void)
{
    union msg m;
    char *s;

    /* identity comes from the topic (RELIABILITY.md rule 4) */
    sample_report(&m.report);
    assert_int_equal(efc_proto_ota_report_encode(&m.report, &s), EFC_OK);
    expect_reject_len(K_REPORT, s, strlen(s), "dev-02", "body/topic device mismatch");
    expect_reject_len(K_REPORT, s, strlen(s), "dev-0", "topic device a prefix of the body's");
    expect_reject_len(K_REPORT, s, strlen(s), "DEV-01", "topic device in another case");
    efc_free(s);
    reject_mutation(K_REPORT, "ota_id", "\"job-42\"", "ota_id without the ota- prefix");
    reject_mutation(K_REPORT, "ota_id", "\"rollout-3\"", "rollout id as ota_id");
    /* names */
    reject_mutation(K_REPORT, "outcome", "\"success\"", "unknown outcome");
    reject_mutation(K_REPORT, "outcome", "\"ROLLED_BACK\"", "outcome in another case");
    reject_mutation(K_REPORT, "outcome", "\"rolled back\"", "outcome with a space");
    reject_mutation(K_REPORT, "outcome", "0", "outcome as number");
    reject_mutation(K_REPORT, "outcome", "\"?\"", "outcome \"?\" (the out-of-range name)");
    reject_mutation(K_REPORT, "action", "\"reinstall\"", "unknown action");
    reject_mutation(K_REPORT, "action", "\"?\"", "action \"?\"");
    /* counts */
    reject_mutation(K_REPORT, "correct", "501", "correct > eval_total");
    reject_mutation(K_REPORT, "agree", "501", "agree > eval_total");
    reject_mutation(K_REPORT, "eval_total", "0", "eval_total 0 with counts");
    reject_mutation(K_REPORT, "eval_total", "-1", "negative eval_total");
    reject_mutation(K_REPORT, "eval_total", "10000001", "eval_total too large");
    reject_mutation(K_REPORT, "correct", "-1", "negative correct");
    reject_mutation(K_REPORT, "has_labels", "1", "has_labels as number");
    /* other fields */
    reject_mutation(K_REPORT, "active_sha256", "\"0123\"", "short active_sha256");
    reject_mutation(K_REPORT, "active_sha256",
                    "\"0123456789ABCDEF0123456789abcdef0123456789abcdef"
                    "0123456789abcdef\"",
                    "uppercase active_sha256");
    reject_mutation(K_REPORT, "active_version", "-1", "negative active_version");
    reject_mutation(K_REPORT, "active_policy", "\"a\\nb\"", "newline in active_policy");
    reject_mutation(K_REPORT, "reason", "\"ROLLBACK:\\nx\"", "newline in reason");
    reject_mutation(K_REPORT, "p50_ms", "-0.5", "negative latency");
    reject_mutation(K_REPORT, "p99_ms", "1e300", "latency out of range");
    reject_mutation(K_REPORT, "p99_ms", "\"NaN\"", "NaN string latency");
}

static void test_malformed_status(void **state)
{
    (void)state;
    run_kind(K_STATUS, status_specific);
}

static void test_malformed_job(void **state)
{
    (void)state;
    run_kind(K_JOB, job_specific);
}

static void test_malformed_result(void **state)
{
    (void)state;
    run_kind(K_RESULT, result_specific);
}

static void test_malformed_ack(void **state)
{
    (void)state;
    run_kind(K_ACK, ack_specific);
}

static void test_malformed_chunk_req(void **state)
{
    (void)state;
    run_kind(K_REQ, req_specific);
}

static void test_malformed_ota(void **state)
{
    (void)state;
    run_kind(K_OTA, ota_specific);
}

static void test_malformed_ota_report(void **state)
{
    (void)state;
    run_kind(K_REPORT, report_specific);
}

/* Decode the sample of kind k with member `field` set to raw JSON; returns the status. */
static enum efc_status decode_mutated(enum kind k, const char *field, const char *raw,
                                      union msg *out)
{
    char *s = mutate(k, field, raw, 0);
    enum efc_status st = decode(k, s, strlen(s), "dev-01", out);
    efc_free(s);
    return st;
}

/* The manifest field holds a whole signed manifest (EFC_MANIFEST_MAX_BYTES = 4096): 4096
 * bytes decode, 4097 do not; bytes that JSON escapes count once decoded. */
static void test_ota_manifest_size(void **state)
{
    char *raw = efc_malloc(2 * EFC_PROTO_MANIFEST_MAX + 3);
    union msg out;
    (void)state;

    for (size_t n = EFC_PROTO_MANIFEST_MAX - 2; n <= EFC_PROTO_MANIFEST_MAX; n++) {
        raw[0] = '"';
        memset(raw + 1, 'm', n);
        raw[n + 1] = '"';
        raw[n + 2] = '\0';
        assert_int_equal(decode_mutated(K_OTA, "manifest", raw, &out),
                         n < EFC_PROTO_MANIFEST_MAX ? EFC_OK : EFC_EPROTO);
        if (n < EFC_PROTO_MANIFEST_MAX)
            assert_int_equal(strlen(out.ota.manifest), n);
    }
    /* 4096 escaped quotes: 8192 bytes on the wire, 4096 decoded */
    raw[0] = '"';
    for (size_t i = 0; i < EFC_PROTO_MANIFEST_MAX - 1; i++)
        memcpy(raw + 1 + 2 * i, "\\\"", 2);
    memcpy(raw + 1 + 2 * (EFC_PROTO_MANIFEST_MAX - 1), "\"", 2);
    assert_int_equal(decode_mutated(K_OTA, "manifest", raw, &out), EFC_OK);
    assert_int_equal(strlen(out.ota.manifest), EFC_PROTO_MANIFEST_MAX - 1);
    assert_int_equal(out.ota.manifest[0], '"');
    /* one more escaped quote is one byte too many */
    memcpy(raw + 1 + 2 * (EFC_PROTO_MANIFEST_MAX - 1), "\\\"\"", 4);
    assert_int_equal(decode_mutated(K_OTA, "manifest", raw, &out), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "manifest"));
    efc_free(raw);
}

/* What each decoder accepts at the boundaries the specific tables reject just past. */
static void test_ota_accepts_bounds(void **state)
{
    union msg out;
    (void)state;

    assert_int_equal(decode_mutated(K_OTA, "min_accuracy", "1", &out), EFC_OK);
    assert_true(out.ota.min_accuracy == 1.0);
    assert_int_equal(decode_mutated(K_OTA, "min_accuracy", "-0", &out), EFC_OK);
    assert_false(signbit(out.ota.min_accuracy)); /* -0 becomes +0 */
    assert_int_equal(decode_mutated(K_OTA, "min_agree", "1e-300", &out), EFC_OK);
    assert_int_equal(decode_mutated(K_OTA, "url", "\"https://x/y\"", &out), EFC_OK);
    assert_string_equal(out.ota.url, "https://x/y");
    assert_int_equal(decode_mutated(K_OTA, "url", "\"http://10.0.0.1:8080/a.efm\"", &out), EFC_OK);
    assert_int_equal(decode_mutated(K_OTA, "action", "\"rollback\"", &out), EFC_OK);
    assert_int_equal(out.ota.action, EFC_PROTO_OTA_ROLLBACK);
    assert_int_equal(decode_mutated(K_OTA, "ota_id", "\"ota-x\"", &out), EFC_OK);
    assert_string_equal(out.ota.ota_id, "ota-x");
    /* report: correct == agree == eval_total; every outcome name maps to its value */
    assert_int_equal(decode_mutated(K_REPORT, "correct", "500", &out), EFC_OK);
    assert_int_equal(out.report.correct, 500);
    assert_int_equal(decode_mutated(K_REPORT, "agree", "500", &out), EFC_OK);
    for (int32_t oc = 0; oc <= EFC_PROTO_OTA_REVERTED; oc++) {
        char raw[48];
        snprintf(raw, sizeof(raw), "\"%s\"", efc_proto_ota_outcome_str(oc));
        assert_int_equal(decode_mutated(K_REPORT, "outcome", raw, &out), EFC_OK);
        assert_int_equal(out.report.outcome, oc);
    }
    /* the coordinator may decode without a topic (NULL: no identity check) */
    {
        struct efc_proto_ota_report m;
        char *s;
        sample_report(&m);
        assert_int_equal(efc_proto_ota_report_encode(&m, &s), EFC_OK);
        assert_int_equal(efc_proto_ota_report_decode(s, strlen(s), NULL, &out.report), EFC_OK);
        assert_int_equal(efc_proto_ota_report_decode(s, strlen(s), "dev-02", &out.report),
                         EFC_EPROTO);
        assert_non_null(strstr(efc_err_detail(), "ota_report"));
        assert_non_null(strstr(efc_err_detail(), "differs from topic"));
        assert_string_equal(out.report.device_id, ""); /* zeroed on failure */
        efc_free(s);
    }
}

/* The report is acked with the ordinary ack message, job_id = ota_id. */
static void test_ota_ack(void **state)
{
    struct efc_proto_ack a, out;
    char *s;
    (void)state;

    memset(&a, 0, sizeof(a));
    a.version = EFC_PROTO_VERSION;
    snprintf(a.job_id, sizeof(a.job_id), OTA63);
    snprintf(a.device_id, sizeof(a.device_id), "dev-01");
    assert_int_equal(efc_proto_ack_encode(&a, &s), EFC_OK);
    assert_int_equal(efc_proto_ack_decode(s, strlen(s), &out), EFC_OK);
    assert_memory_equal(&a, &out, sizeof(a));
    efc_free(s);
}

static void test_ota_names(void **state)
{
    (void)state;
    assert_string_equal(efc_proto_ota_action_str(EFC_PROTO_OTA_INSTALL), "install");
    assert_string_equal(efc_proto_ota_action_str(EFC_PROTO_OTA_ROLLBACK), "rollback");
    assert_string_equal(efc_proto_ota_action_str(2), "?");
    assert_string_equal(efc_proto_ota_action_str(-1), "?");
    assert_string_equal(efc_proto_ota_action_str(INT32_MIN), "?");
    assert_string_equal(efc_proto_ota_outcome_str(EFC_PROTO_OTA_INSTALLED), "installed");
    assert_string_equal(efc_proto_ota_outcome_str(EFC_PROTO_OTA_ROLLED_BACK), "rolled_back");
    assert_string_equal(efc_proto_ota_outcome_str(EFC_PROTO_OTA_REFUSED), "refused");
    assert_string_equal(efc_proto_ota_outcome_str(EFC_PROTO_OTA_FAILED), "failed");
    assert_string_equal(efc_proto_ota_outcome_str(EFC_PROTO_OTA_REVERTED), "reverted");
    assert_string_equal(efc_proto_ota_outcome_str(5), "?");
    assert_string_equal(efc_proto_ota_outcome_str(-1), "?");
    assert_string_equal(efc_proto_ota_outcome_str(INT32_MAX), "?");
}

/* active_version / active_policy are optional: a status without them (an agent before OTA)
 * decodes with 0 / ""; with them it round-trips; the encoder always writes them. */
static void test_status_active_fields(void **state)
{
    struct efc_proto_status m, out;
    cJSON *o;
    char *s, *t;
    (void)state;

    sample_status(&m);
    m.active_version = 1ULL << 53;
    snprintf(m.active_policy, sizeof(m.active_policy), "int8(calib=kl,weights=channel)");
    assert_int_equal(efc_proto_status_encode(&m, &s), EFC_OK);
    assert_non_null(strstr(s, "\"active_version\":9007199254740992"));
    assert_non_null(strstr(s, "\"active_policy\":\"int8(calib=kl,weights=channel)\""));
    assert_int_equal(efc_proto_status_decode(s, strlen(s), "dev-01", &out), EFC_OK);
    assert_memory_equal(&m, &out, sizeof(m));
    /* the longest policy */
    memset(m.active_policy, 'p', sizeof(m.active_policy) - 1);
    m.active_policy[sizeof(m.active_policy) - 1] = '\0';
    efc_free(s);
    assert_int_equal(efc_proto_status_encode(&m, &s), EFC_OK);
    assert_int_equal(efc_proto_status_decode(s, strlen(s), "dev-01", &out), EFC_OK);
    assert_memory_equal(&m, &out, sizeof(m));

    /* old agent: both members removed (spliced out of the encoded text) */
    o = cJSON_Parse(s);
    efc_free(s);
    assert_non_null(o);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "active_version");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "active_policy");
    t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    assert_null(strstr(t, "active_version"));
    assert_null(strstr(t, "active_policy"));
    memset(&out, 0xa5, sizeof(out));
    assert_int_equal(efc_proto_status_decode(t, strlen(t), "dev-01", &out), EFC_OK);
    assert_int_equal(out.active_version, 0);
    assert_string_equal(out.active_policy, "");
    assert_string_equal(out.active_model, HEX_A);
    assert_int_equal(out.cores, m.cores);
    cJSON_free(t);

    /* each one alone */
    sample_status(&m);
    m.active_version = 7;
    snprintf(m.active_policy, sizeof(m.active_policy), "fp32");
    assert_int_equal(efc_proto_status_encode(&m, &s), EFC_OK);
    o = cJSON_Parse(s);
    efc_free(s);
    assert_non_null(o);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "active_policy");
    t = cJSON_PrintUnformatted(o);
    assert_int_equal(efc_proto_status_decode(t, strlen(t), "dev-01", &out), EFC_OK);
    assert_int_equal(out.active_version, 7);
    assert_string_equal(out.active_policy, "");
    cJSON_free(t);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "active_version");
    cJSON_AddStringToObject(o, "active_policy", "fp32");
    t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    assert_int_equal(efc_proto_status_decode(t, strlen(t), "dev-01", &out), EFC_OK);
    assert_int_equal(out.active_version, 0);
    assert_string_equal(out.active_policy, "fp32");
    cJSON_free(t);

    /* the detail names the field */
    s = mutate(K_STATUS, "active_version", "-2", 0);
    assert_int_equal(efc_proto_status_decode(s, strlen(s), NULL, &out), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "active_version"));
    efc_free(s);
}

/* sparse_layers is optional: a result without it (an older agent's) decodes with 0; the
 * encoder always writes it and refuses values the decoder would reject. */
static void test_result_sparse_layers(void **state)
{
    static const int32_t ok[] = {0, 1, 7, 65536};
    struct efc_proto_result m, out;
    cJSON *o;
    char *s, *t;
    (void)state;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        sample_result(&m);
        m.sparse_layers = ok[i];
        assert_int_equal(efc_proto_result_encode(&m, &s), EFC_OK);
        assert_non_null(strstr(s, "\"sparse_layers\":"));
        assert_int_equal(efc_proto_result_decode(s, strlen(s), "dev-01", &out), EFC_OK);
        assert_int_equal(out.sparse_layers, ok[i]);
        assert_memory_equal(&m, &out, sizeof(m));
        efc_free(s);
    }
    /* absent: as an agent before the field sent it (spliced out of the encoded text) */
    sample_result(&m);
    m.sparse_layers = 5;
    assert_int_equal(efc_proto_result_encode(&m, &s), EFC_OK);
    o = cJSON_Parse(s);
    efc_free(s);
    assert_non_null(o);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "sparse_layers");
    t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    assert_null(strstr(t, "sparse_layers"));
    memset(&out, 0xa5, sizeof(out));
    assert_int_equal(efc_proto_result_decode(t, strlen(t), "dev-01", &out), EFC_OK);
    assert_int_equal(out.sparse_layers, 0);
    assert_int_equal(out.eval_total, m.eval_total);
    cJSON_free(t);
    /* the encoder refuses what would not decode */
    s = (char *)0x1;
    sample_result(&m);
    m.sparse_layers = -1;
    assert_int_equal(efc_proto_result_encode(&m, &s), EFC_EINVAL);
    assert_null(s);
    m.sparse_layers = 65537;
    assert_int_equal(efc_proto_result_encode(&m, &s), EFC_EINVAL);
    /* the detail names the field */
    s = mutate(K_RESULT, "sparse_layers", "-4", 0);
    assert_int_equal(efc_proto_result_decode(s, strlen(s), NULL, &out), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "sparse_layers"));
    efc_free(s);
}

/* The detail names the message and the field. */
static void test_error_detail(void **state)
{
    char *s;
    union msg out;
    (void)state;
    s = mutate(K_RESULT, "agree", "-3", 0);
    assert_int_equal(efc_proto_result_decode(s, strlen(s), NULL, &out.result), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "result"));
    assert_non_null(strstr(efc_err_detail(), "agree"));
    efc_free(s);
    s = mutate(K_JOB, "version", "2", 0);
    assert_int_equal(efc_proto_job_decode(s, strlen(s), &out.job), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "unknown version"));
    efc_free(s);
    s = mutate(K_STATUS, "cores", "4", 0);
    assert_int_equal(efc_proto_status_decode(s, strlen(s), "dev-02", &out.status), EFC_EPROTO);
    assert_non_null(strstr(efc_err_detail(), "device id in body differs from topic"));
    efc_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_samples),
        cmocka_unit_test(test_round_trip_extremes),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_encoder_refuses),
        cmocka_unit_test(test_malformed_status),
        cmocka_unit_test(test_malformed_job),
        cmocka_unit_test(test_malformed_result),
        cmocka_unit_test(test_malformed_ack),
        cmocka_unit_test(test_malformed_chunk_req),
        cmocka_unit_test(test_error_detail),
        cmocka_unit_test(test_result_sparse_layers),
        cmocka_unit_test(test_malformed_ota),
        cmocka_unit_test(test_malformed_ota_report),
        cmocka_unit_test(test_ota_manifest_size),
        cmocka_unit_test(test_ota_accepts_bounds),
        cmocka_unit_test(test_ota_ack),
        cmocka_unit_test(test_ota_names),
        cmocka_unit_test(test_status_active_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
