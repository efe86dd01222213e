/* fake_coord.c — a minimal coordinator for efc-agent integration tests (agent_mqtt.sh).
 *
 * Connects to the broker, waits until the device's retained status says online, serves
 * artifact chunk requests for the model (and base) files given (efc_chunk_serve), publishes
 * the jobs given, then waits for their results: each result is decoded with the topic's
 * device id (validation as the real coordinator does it), printed as one line and acked.
 *   --job ID=POLICY      publish, expect a result (repeatable)
 *   --silent ID=POLICY   publish, expect NO result within --quiet-ms (already acked job)
 *   --expect ID          expect a result without publishing (outbox resend on connect)
 *   --no-ack             do not ack results (they stay in the agent's outbox)
 *   --dup-ack            send every ack twice (idempotency)
 * Exit status: 0 when every expected result arrived, 1 on a timeout, a malformed result or a
 * result for a --silent job, 2 on bad usage. Not part of any library; test tool only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_parse.h"
#include "common/efc_sha256.h"
#include "common/efc_time.h"
#include "proto/chunk.h"
#include "proto/mqtt.h"
#include "proto/proto.h"

#define MAX_JOBS 16
#define TOPIC_MAX 256
#define ART_MAX (64u << 20)

struct art {
    const char *path;
    char sha[EFC_SHA256_HEX_BYTES];
    uint64_t bytes;
};

struct want {
    char id[EFC_PROTO_ID_MAX];
    char policy[EFC_PROTO_POLICY_MAX];
    int publish;
    int silent;
    int got;
};

struct coord {
    const char *broker, *device, *prefix;
    struct art model, base;
    struct want w[MAX_JOBS];
    int n_w;
    int no_ack, dup_ack, online, bad;
    int64_t timeout_ms, quiet_ms;
    int32_t calib, eval, runs, batch;
    struct efc_mqtt *m;
    char t_status[TOPIC_MAX], t_job[TOPIC_MAX], t_result[TOPIC_MAX], t_ack[TOPIC_MAX];
    char t_req[TOPIC_MAX];
};

static int64_t now_epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int load_art(struct art *a, const char *path)
{
    void *buf = NULL;
    size_t len = 0;
    uint8_t d[EFC_SHA256_BYTES];
    if (efc_fs_read_all(path, ART_MAX, &buf, &len) != EFC_OK) {
        fprintf(stderr, "fake_coord: cannot read %s: %s\n", path, efc_err_detail());
        return -1;
    }
    efc_sha256(buf, len, d);
    efc_sha256_hex(d, a->sha);
    a->bytes = len;
    a->path = path;
    efc_free(buf);
    return 0;
}

static void serve(struct coord *c, const void *payload, size_t len)
{
    struct efc_chunk_req req;
    const struct art *a;
    void *out = NULL;
    size_t out_len = 0;
    char topic[TOPIC_MAX];
    if (efc_chunk_req_decode(payload, len, &req) != EFC_OK) {
        fprintf(stderr, "fake_coord: malformed chunk request: %s\n", efc_err_detail());
        return;
    }
    a = !strcmp(req.sha256, c->model.sha)  ? &c->model
        : !strcmp(req.sha256, c->base.sha) ? &c->base
                                           : NULL;
    if (!a || efc_chunk_serve(a->path, a->sha, &req, &out, &out_len) != EFC_OK) {
        fprintf(stderr, "fake_coord: refused chunk request for %.16s\n", req.sha256);
        return;
    }
    if (efc_chunk_topic(c->prefix, a->sha, c->device, topic, sizeof(topic)) == EFC_OK)
        efc_mqtt_publish(c->m, topic, out, out_len, 1, 0, 0);
    efc_free(out);
}

static void send_ack(struct coord *c, const char *job_id)
{
    struct efc_proto_ack ack = {.version = EFC_PROTO_VERSION};
    char *buf = NULL;
    snprintf(ack.job_id, sizeof(ack.job_id), "%s", job_id);
    snprintf(ack.device_id, sizeof(ack.device_id), "%s", c->device);
    if (efc_proto_ack_encode(&ack, &buf) != EFC_OK)
        return;
    for (int i = 0; i < (c->dup_ack ? 2 : 1); i++)
        efc_mqtt_publish(c->m, c->t_ack, buf, strlen(buf), 1, 0, 0);
    efc_free(buf);
}

static void on_result(struct coord *c, const void *payload, size_t len)
{
    struct efc_proto_result r;
    if (efc_proto_result_decode(payload, len, c->device, &r) != EFC_OK) {
        printf("MALFORMED result: %s\n", efc_err_detail());
        c->bad = 1;
        return;
    }
    printf("result job=%s status=%s policy=%s correct=%d/%d base=%d agree=%d p50_ms=%.6f "
           "bytes=%llu%s%s\n",
           r.job_id, r.status == EFC_PROTO_RESULT_OK ? "ok" : "failed", r.policy, r.correct,
           r.eval_total, r.base_correct, r.agree, r.p50_ms, (unsigned long long)r.model_bytes,
           r.error[0] ? " error=" : "", r.error);
    fflush(stdout);
    for (int i = 0; i < c->n_w; i++)
        if (!strcmp(c->w[i].id, r.job_id)) {
            c->w[i].got++;
            if (c->w[i].silent) {
                printf("UNEXPECTED result for job %s (should have been ignored)\n", r.job_id);
                c->bad = 1;
            }
        }
    if (!c->no_ack)
        send_ack(c, r.job_id);
}

static void on_message(void *ctx, const char *topic, const void *payload, size_t len, int retained)
{
    struct coord *c = ctx;
    (void)retained;
    if (!strcmp(topic, c->t_req)) {
        serve(c, payload, len);
    } else if (!strcmp(topic, c->t_result)) {
        on_result(c, payload, len);
    } else if (!strcmp(topic, c->t_status)) {
        struct efc_proto_status s;
        if (len && efc_proto_status_decode(payload, len, c->device, &s) == EFC_OK)
            c->online = s.online;
    }
}

static int publish_job(struct coord *c, const struct want *w)
{
    struct efc_proto_job j = {.version = EFC_PROTO_VERSION};
    char *buf = NULL;
    snprintf(j.job_id, sizeof(j.job_id), "%s", w->id);
    snprintf(j.round_id, sizeof(j.round_id), "r1");
    snprintf(j.device_id, sizeof(j.device_id), "%s", c->device);
    snprintf(j.policy, sizeof(j.policy), "%s", w->policy);
    snprintf(j.model_sha256, sizeof(j.model_sha256), "%s", c->model.sha);
    j.model_bytes = c->model.bytes;
    snprintf(j.base_sha256, sizeof(j.base_sha256), "%s", c->base.sha);
    j.base_bytes = c->base.bytes;
    j.calib_samples = c->calib;
    j.eval_samples = c->eval;
    j.batch = c->batch;
    j.timed_runs = c->runs;
    j.seed = 1;
    j.deadline_ms = now_epoch_ms() + c->timeout_ms;
    j.mem_limit_bytes = 1LL << 30;
    if (efc_proto_job_encode(&j, &buf) != EFC_OK) {
        fprintf(stderr, "fake_coord: job encode: %s\n", efc_err_detail());
        return -1;
    }
    efc_mqtt_publish(c->m, c->t_job, buf, strlen(buf), 1, 0, (uint32_t)(c->timeout_ms / 1000));
    efc_free(buf);
    return 0;
}

static int add_want(struct coord *c, const char *arg, int publish, int silent)
{
    struct want *w;
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    if (c->n_w >= MAX_JOBS || n == 0 || n >= sizeof(w->id) || (publish && !eq))
        return -1;
    w = &c->w[c->n_w++];
    memcpy(w->id, arg, n);
    w->id[n] = 0;
    if (eq)
        snprintf(w->policy, sizeof(w->policy), "%s", eq + 1);
    w->publish = publish;
    w->silent = silent;
    return 0;
}

static int parse_i32(const char *s, const char *what, int32_t *out)
{
    int64_t v;
    if (efc_parse_i64(s, 0, 10000000, what, &v) != EFC_OK)
        return -1;
    *out = (int32_t)v;
    return 0;
}

static int parse_args(struct coord *c, int argc, char **argv)
{
    const char *model = NULL, *base = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t t;
        if (!strcmp(a, "--no-ack")) {
            c->no_ack = 1;
            continue;
        }
        if (!strcmp(a, "--dup-ack")) {
            c->dup_ack = 1;
            continue;
        }
        if (!v)
            return -1;
        i++;
        if (!strcmp(a, "--broker"))
            c->broker = v;
        else if (!strcmp(a, "--device"))
            c->device = v;
        else if (!strcmp(a, "--prefix"))
            c->prefix = v;
        else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--base"))
            base = v;
        else if (!strcmp(a, "--job") || !strcmp(a, "--silent") || !strcmp(a, "--expect")) {
            if (add_want(c, v, strcmp(a, "--expect") != 0, !strcmp(a, "--silent")))
                return -1;
        } else if (!strcmp(a, "--timeout-ms") || !strcmp(a, "--quiet-ms")) {
            if (efc_parse_i64(v, 1, 3600000, a, &t) != EFC_OK)
                return -1;
            *(a[2] == 't' ? &c->timeout_ms : &c->quiet_ms) = t;
        } else if (!strcmp(a, "--calib")) {
            if (parse_i32(v, a, &c->calib))
                return -1;
        } else if (!strcmp(a, "--eval")) {
            if (parse_i32(v, a, &c->eval))
                return -1;
        } else if (!strcmp(a, "--runs")) {
            if (parse_i32(v, a, &c->runs))
                return -1;
        } else if (!strcmp(a, "--batch")) {
            if (parse_i32(v, a, &c->batch))
                return -1;
        } else
            return -1;
    }
    if (!c->broker || !c->device || !model || c->n_w == 0)
        return -1;
    if (load_art(&c->model, model) || load_art(&c->base, base ? base : model))
        return -1;
    return 0;
}

/* Loop until cond(c) or the monotonic deadline; returns 1 if cond became true. */
static int wait_for(struct coord *c, int (*cond)(const struct coord *), uint64_t until_ns)
{
    while (!cond(c) && efc_time_ns() < until_ns)
        efc_mqtt_loop(c->m, 50);
    return cond(c);
}

static int is_online(const struct coord *c)
{
    return c->online;
}

static int all_in(const struct coord *c)
{
    if (c->bad)
        return 1;
    for (int i = 0; i < c->n_w; i++)
        if (!c->w[i].silent && !c->w[i].got)
            return 0;
    return 1;
}

static int never(const struct coord *c)
{
    return c->bad;
}

int main(int argc, char **argv)
{
    static struct coord c;
    char client_id[96];
    int rc = 0;

    c.prefix = "efc/v1";
    c.timeout_ms = 40000;
    c.quiet_ms = 2000;
    c.calib = 256;
    c.eval = 500;
    c.runs = 20;
    c.batch = 16;
    if (parse_args(&c, argc, argv)) {
        fprintf(stderr, "usage: fake_coord --broker URL --device ID --model F.efm [--base F.efm]\n"
                        "  (--job ID=POLICY | --silent ID=POLICY | --expect ID)... [--no-ack]\n"
                        "  [--dup-ack] [--prefix P] [--timeout-ms N] [--quiet-ms N] [--calib N]\n"
                        "  [--eval N] [--runs N] [--batch N]\n");
        return 2;
    }
    if (efc_proto_topic(c.prefix, c.device, "status", c.t_status, TOPIC_MAX) ||
        efc_proto_topic(c.prefix, c.device, "job", c.t_job, TOPIC_MAX) ||
        efc_proto_topic(c.prefix, c.device, "result", c.t_result, TOPIC_MAX) ||
        efc_proto_topic(c.prefix, c.device, "ack", c.t_ack, TOPIC_MAX) ||
        efc_proto_topic(c.prefix, c.device, "chunk/req", c.t_req, TOPIC_MAX)) {
        fprintf(stderr, "fake_coord: bad prefix or device id\n");
        return 2;
    }
    snprintf(client_id, sizeof(client_id), "fake-coord-%d", (int)getpid());
    struct efc_mqtt_opts mo = {.url = c.broker,
                               .client_id = client_id,
                               .on_message = on_message,
                               .ctx = &c,
                               .clean_start = 1};
    if (efc_mqtt_new(&mo, &c.m) || efc_mqtt_subscribe(c.m, c.t_status, 1) ||
        efc_mqtt_subscribe(c.m, c.t_result, 1) || efc_mqtt_subscribe(c.m, c.t_req, 1) ||
        efc_mqtt_connect(c.m)) {
        fprintf(stderr, "fake_coord: mqtt: %s\n", efc_err_detail());
        efc_mqtt_free(c.m);
        return 1;
    }
    uint64_t until = efc_time_ns() + (uint64_t)c.timeout_ms * 1000000ull;
    if (!wait_for(&c, is_online, until)) {
        printf("TIMEOUT waiting for device %s to be online\n", c.device);
        rc = 1;
        goto out;
    }
    for (int i = 0; i < c.n_w; i++)
        if (c.w[i].publish && publish_job(&c, &c.w[i])) {
            rc = 1;
            goto out;
        }
    if (!wait_for(&c, all_in, until)) {
        for (int i = 0; i < c.n_w; i++)
            if (!c.w[i].silent && !c.w[i].got)
                printf("TIMEOUT no result for job %s\n", c.w[i].id);
        rc = 1;
        goto out;
    }
    /* Silent jobs, late duplicates and acks: keep serving for the quiet period. */
    wait_for(&c, never, efc_time_ns() + (uint64_t)c.quiet_ms * 1000000ull);
    if (c.bad)
        rc = 1;
out:
    efc_mqtt_free(c.m);
    return rc;
}
