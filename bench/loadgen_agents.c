/* loadgen_agents.c — efc-loadgen: a LOAD GENERATOR for bench/ingest.sh, not an agent.
 *
 * It opens --agents MQTT v5 connections from one process, each one a simulated efc-agent of
 * one of --classes hardware classes ("lg-c00", ...): a retained online status with a will,
 * subscriptions to its job and ack topics. Every job it receives is decoded with the real
 * decoder and answered at once with a result (encoded with the real encoder; paired counts
 * consistent, metrics synthetic: nothing is evaluated). It measures what the coordinator
 * does with that load: results acked per second (an ack means the result is committed to
 * SQLite) and the result-to-ack latency.
 *
 * One thread, non-blocking libmosquitto clients driven by one poll() over all sockets.
 * Stops after --duration seconds, or --idle seconds without a job once results were acked.
 * Output (stdout): one line of figures, `key=value` pairs, for the script to print.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "common/efc_alloc.h"
#include "common/efc_parse.h"
#include "common/efc_stats.h"
#include "common/efc_time.h"
#include "proto/proto.h"

#define TOPIC_MAX 192
#define LAT_MAX (1 << 20)

struct sim {
    struct mosquitto *m;
    int idx;
    char id[EFC_PROTO_ID_MAX], cls[EFC_PROTO_CLASS_MAX];
    char t_job[TOPIC_MAX], t_ack[TOPIC_MAX], t_result[TOPIC_MAX], t_status[TOPIC_MAX];
    int connected, ever_connected;
    char job_id[EFC_PROTO_ID_MAX]; /* outstanding result, "" if none */
    uint64_t sent_ns;
};

static struct {
    const char *host, *prefix;
    int port, n_agents, n_classes;
    double duration_s, idle_s;
    struct sim *sims;
    int64_t n_connected, n_jobs, n_results, n_acked, n_bad;
    uint64_t t_first_result, t_last_ack, t_last_job;
    double *lat_ms;
    size_t n_lat;
} G;

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static char *status_payload(const struct sim *s, int online)
{
    struct efc_proto_status st;
    char *out = NULL;
    memset(&st, 0, sizeof(st));
    st.version = EFC_PROTO_VERSION;
    snprintf(st.device_id, sizeof(st.device_id), "%s", s->id);
    snprintf(st.hw_class, sizeof(st.hw_class), "%s", s->cls);
    snprintf(st.isa, sizeof(st.isa), "ref");
    snprintf(st.blas_core, sizeof(st.blas_core), "none");
    snprintf(st.agent_version, sizeof(st.agent_version), "loadgen");
    st.cores = 1;
    st.mem_bytes = 1ull << 30;
    st.online = online;
    if (efc_proto_status_encode(&st, &out) != EFC_OK) {
        fprintf(stderr, "efc-loadgen: status encode: %s\n", efc_err_detail());
        exit(1);
    }
    return out;
}

static void on_connect(struct mosquitto *m, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
    struct sim *s = obj;
    (void)flags;
    (void)props;
    if (rc != 0) {
        fprintf(stderr, "efc-loadgen: %s: connection refused: %s\n", s->id,
                mosquitto_reason_string(rc));
        return;
    }
    s->connected = 1;
    if (!s->ever_connected) {
        s->ever_connected = 1;
        G.n_connected++;
    }
    mosquitto_subscribe(m, NULL, s->t_job, 1);
    mosquitto_subscribe(m, NULL, s->t_ack, 1);
    char *p = status_payload(s, 1);
    mosquitto_publish(m, NULL, s->t_status, (int)strlen(p), p, 1, true);
    efc_free(p);
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc, const mosquitto_property *p)
{
    struct sim *s = obj;
    (void)m;
    (void)p;
    s->connected = 0;
    if (rc != 0 && !g_stop)
        fprintf(stderr, "efc-loadgen: %s: connection lost (%d)\n", s->id, rc);
}

/* A job: answer it at once with a consistent, synthetic result. */
static void on_job(struct sim *s, const struct mosquitto_message *msg)
{
    struct efc_proto_job j;
    struct efc_proto_result r;
    char *out = NULL;
    if (efc_proto_job_decode(msg->payload, (size_t)msg->payloadlen, &j) != EFC_OK) {
        G.n_bad++;
        return;
    }
    G.n_jobs++;
    G.t_last_job = efc_time_ns();
    memset(&r, 0, sizeof(r));
    r.version = EFC_PROTO_VERSION;
    snprintf(r.job_id, sizeof(r.job_id), "%s", j.job_id);
    snprintf(r.round_id, sizeof(r.round_id), "%s", j.round_id);
    snprintf(r.device_id, sizeof(r.device_id), "%s", s->id);
    snprintf(r.hw_class, sizeof(r.hw_class), "%s", s->cls);
    snprintf(r.policy, sizeof(r.policy), "%s", j.policy);
    snprintf(r.isa, sizeof(r.isa), "ref");
    snprintf(r.blas_core, sizeof(r.blas_core), "none");
    r.status = EFC_PROTO_RESULT_OK;
    r.has_labels = 1;
    r.eval_total = j.eval_samples > 0 ? j.eval_samples : 1000;
    r.both_correct = r.eval_total * 85 / 100;
    r.base_only = (s->idx + (int)strlen(j.policy)) % 7;
    r.cand_only = s->idx % 5;
    r.correct = r.both_correct + r.cand_only;
    r.base_correct = r.both_correct + r.base_only;
    r.agree = r.eval_total - r.base_only - r.cand_only;
    r.calib_samples = j.calib_samples;
    r.p50_ms = 0.05 + 0.001 * (s->idx % 10);
    r.p90_ms = r.p50_ms * 1.1;
    r.p99_ms = r.p50_ms * 1.3;
    r.batch = j.batch;
    r.batch_p50_ms = r.p50_ms * j.batch * 0.5;
    r.model_bytes = j.model_bytes;
    r.weight_bytes = j.model_bytes * 9 / 10;
    r.peak_activation_bytes = 4096;
    r.peak_rss_bytes = 8u << 20;
    if (efc_proto_result_encode(&r, &out) != EFC_OK) {
        fprintf(stderr, "efc-loadgen: result encode: %s\n", efc_err_detail());
        G.n_bad++;
        return;
    }
    s->sent_ns = efc_time_ns();
    if (!G.t_first_result)
        G.t_first_result = s->sent_ns;
    snprintf(s->job_id, sizeof(s->job_id), "%s", r.job_id);
    if (mosquitto_publish(s->m, NULL, s->t_result, (int)strlen(out), out, 1, false) ==
        MOSQ_ERR_SUCCESS)
        G.n_results++;
    efc_free(out);
}

static void on_ack(struct sim *s, const struct mosquitto_message *msg)
{
    struct efc_proto_ack a;
    if (efc_proto_ack_decode(msg->payload, (size_t)msg->payloadlen, &a) != EFC_OK) {
        G.n_bad++;
        return;
    }
    if (strcmp(a.job_id, s->job_id) != 0)
        return; /* an ack for an earlier result, sent again */
    uint64_t now = efc_time_ns();
    s->job_id[0] = 0;
    G.n_acked++;
    G.t_last_ack = now;
    if (G.n_lat < LAT_MAX)
        G.lat_ms[G.n_lat++] = (double)(now - s->sent_ns) / 1e6;
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *p)
{
    struct sim *s = obj;
    (void)m;
    (void)p;
    if (!strcmp(msg->topic, s->t_job))
        on_job(s, msg);
    else if (!strcmp(msg->topic, s->t_ack))
        on_ack(s, msg);
}

static int sim_init(struct sim *s, int i)
{
    char *will;
    s->idx = i;
    snprintf(s->id, sizeof(s->id), "lg-%05d", i);
    snprintf(s->cls, sizeof(s->cls), "lg-c%02d", i % G.n_classes);
    if (efc_proto_topic(G.prefix, s->id, "job", s->t_job, TOPIC_MAX) != EFC_OK ||
        efc_proto_topic(G.prefix, s->id, "ack", s->t_ack, TOPIC_MAX) != EFC_OK ||
        efc_proto_topic(G.prefix, s->id, "result", s->t_result, TOPIC_MAX) != EFC_OK ||
        efc_proto_topic(G.prefix, s->id, "status", s->t_status, TOPIC_MAX) != EFC_OK) {
        fprintf(stderr, "efc-loadgen: topics: %s\n", efc_err_detail());
        return -1;
    }
    s->m = mosquitto_new(s->id, true, s);
    if (!s->m) {
        fprintf(stderr, "efc-loadgen: mosquitto_new: %s\n", strerror(errno));
        return -1;
    }
    mosquitto_int_option(s->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_v5_callback_set(s->m, on_connect);
    mosquitto_disconnect_v5_callback_set(s->m, on_disconnect);
    mosquitto_message_v5_callback_set(s->m, on_message);
    will = status_payload(s, 0);
    mosquitto_will_set_v5(s->m, s->t_status, (int)strlen(will), will, 1, true, NULL);
    efc_free(will);
    int rc = mosquitto_connect_bind_v5(s->m, G.host, G.port, 60, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "efc-loadgen: %s: connect to %s:%d: %s\n", s->id, G.host, G.port,
                mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

/* One poll() over every socket; read, write, and the keepalive housekeeping. */
static void pump(struct pollfd *pf, int timeout_ms)
{
    int n = G.n_agents;
    for (int i = 0; i < n; i++) {
        pf[i].fd = mosquitto_socket(G.sims[i].m);
        pf[i].events = POLLIN | (mosquitto_want_write(G.sims[i].m) ? POLLOUT : 0);
        pf[i].revents = 0;
    }
    if (poll(pf, (nfds_t)n, timeout_ms) < 0 && errno != EINTR) {
        perror("efc-loadgen: poll");
        g_stop = 1;
        return;
    }
    for (int i = 0; i < n; i++) {
        struct mosquitto *m = G.sims[i].m;
        if (pf[i].fd < 0)
            continue;
        if (pf[i].revents & (POLLIN | POLLHUP | POLLERR))
            mosquitto_loop_read(m, 1);
        if (mosquitto_want_write(m))
            mosquitto_loop_write(m, 1);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: efc-loadgen --broker mqtt://HOST:PORT [--agents N] [--classes N]\n"
               "                   [--prefix P] [--duration S] [--idle S]\n"
               "A load generator for bench/ingest.sh: N simulated agents on one process answer\n"
               "every job at once with a synthetic result; prints results acked per second.\n");
}

int main(int argc, char **argv)
{
    const char *broker = NULL;
    int64_t v;
    G.prefix = "efc/v1";
    G.n_agents = 1000;
    G.n_classes = 10;
    G.duration_s = 120;
    G.idle_s = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!val) {
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--broker")) {
            broker = val;
        } else if (!strcmp(a, "--prefix")) {
            G.prefix = val;
        } else if (!strcmp(a, "--agents") && efc_parse_i64(val, 1, 100000, a, &v) == EFC_OK) {
            G.n_agents = (int)v;
        } else if (!strcmp(a, "--classes") && efc_parse_i64(val, 1, 100, a, &v) == EFC_OK) {
            G.n_classes = (int)v;
        } else if (!strcmp(a, "--duration") && efc_parse_i64(val, 1, 3600, a, &v) == EFC_OK) {
            G.duration_s = (double)v;
        } else if (!strcmp(a, "--idle") && efc_parse_i64(val, 1, 600, a, &v) == EFC_OK) {
            G.idle_s = (double)v;
        } else {
            fprintf(stderr, "efc-loadgen: bad option or value: %s %s\n", a, val);
            return 2;
        }
    }
    static char host[256];
    if (!broker || sscanf(broker, "mqtt://%255[^:]:%d", host, &G.port) != 2) {
        usage(stderr);
        return 2;
    }
    G.host = host;
    struct rlimit rl;
    /* A libmosquitto client holds 3 descriptors: its socket and an internal socket pair. */
    rlim_t want = (rlim_t)G.n_agents * 3 + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < want)
            fprintf(stderr, "efc-loadgen: open-file limit %llu < %llu needed for %d agents\n",
                    (unsigned long long)rl.rlim_cur, (unsigned long long)want, G.n_agents);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    mosquitto_lib_init();
    G.sims = efc_calloc((size_t)G.n_agents, sizeof(*G.sims));
    G.lat_ms = efc_calloc(LAT_MAX, sizeof(*G.lat_ms));
    struct pollfd *pf = efc_calloc((size_t)G.n_agents, sizeof(*pf));
    if (!G.sims || !G.lat_ms || !pf)
        return 1;

    /* Connect in steps of 50, pumping between them, so no listen backlog overflows. */
    uint64_t t0 = efc_time_ns();
    int started = 0;
    while (started < G.n_agents && !g_stop) {
        int upto = started + 50 < G.n_agents ? started + 50 : G.n_agents;
        for (; started < upto; started++)
            if (sim_init(&G.sims[started], started))
                return 1;
        int saved = G.n_agents;
        G.n_agents = started;
        pump(pf, 1);
        G.n_agents = saved;
    }
    while (!g_stop && G.n_connected < G.n_agents &&
           (double)(efc_time_ns() - t0) / 1e9 < 30)
        pump(pf, 20);
    double t_connect = (double)(efc_time_ns() - t0) / 1e9;
    fprintf(stderr, "efc-loadgen: %" PRId64 " of %d agents connected in %.2f s\n",
            G.n_connected, G.n_agents, t_connect);

    uint64_t last_misc = 0;
    while (!g_stop) {
        uint64_t now = efc_time_ns();
        if ((double)(now - t0) / 1e9 > G.duration_s)
            break;
        if (G.n_acked > 0 && (double)(now - G.t_last_job) / 1e9 > G.idle_s &&
            (double)(now - G.t_last_ack) / 1e9 > G.idle_s)
            break;
        pump(pf, 50);
        if (now - last_misc > 500000000ull) {
            for (int i = 0; i < G.n_agents; i++)
                mosquitto_loop_misc(G.sims[i].m);
            last_misc = now;
        }
    }
    int64_t still = 0;
    for (int i = 0; i < G.n_agents; i++)
        still += G.sims[i].connected;

    double span = G.t_last_ack > G.t_first_result
                      ? (double)(G.t_last_ack - G.t_first_result) / 1e9
                      : 0.0;
    efc_sort_f64(G.lat_ms, G.n_lat);
    printf("agents=%d connected=%" PRId64 " connected_at_end=%" PRId64 " connect_s=%.2f"
           " jobs=%" PRId64 " results_sent=%" PRId64 " acked=%" PRId64 " bad=%" PRId64
           " span_s=%.2f acked_per_s=%.0f ack_p50_ms=%.1f ack_p99_ms=%.1f\n",
           G.n_agents, G.n_connected, still, t_connect, G.n_jobs, G.n_results, G.n_acked,
           G.n_bad, span, span > 0 ? (double)G.n_acked / span : 0.0,
           efc_percentile(G.lat_ms, G.n_lat, 0.5), efc_percentile(G.lat_ms, G.n_lat, 0.99));
    /* Offline statuses, then a clean disconnect (the will is not sent on a clean one). */
    for (int i = 0; i < G.n_agents; i++) {
        struct sim *s = &G.sims[i];
        if (s->connected) {
            char *p = status_payload(s, 0);
            mosquitto_publish(s->m, NULL, s->t_status, (int)strlen(p), p, 1, true);
            efc_free(p);
        }
    }
    for (int k = 0; k < 10; k++)
        pump(pf, 20);
    for (int i = 0; i < G.n_agents; i++) {
        mosquitto_disconnect(G.sims[i].m);
        mosquitto_loop_write(G.sims[i].m, 1);
        mosquitto_destroy(G.sims[i].m);
    }
    efc_free(pf);
    efc_free(G.lat_ms);
    efc_free(G.sims);
    mosquitto_lib_cleanup();
    return G.n_acked > 0 ? 0 : 1;
}
