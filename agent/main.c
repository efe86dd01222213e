/* main.c — the efc-agent program: MQTT event loop around the agent's measuring core.
 *
 * One thread owns everything (STYLE.md 2.6): the MQTT client (proto/mqtt.h, loop called from
 * here), the durable state (agent/state.h), the artifact receivers (proto/chunk.h) and the
 * job queue. A job's evaluation runs in a forked child (efc_agent_sandbox_run), started from
 * this loop; while it runs the loop waits on the child's result pipe and serves MQTT between
 * waits (keepalive, acks, new jobs queued), so a long evaluation never drops the connection.
 * Job lifecycle, one log line per transition (docs/agent.md "efc-agent program"):
 *   received -> (journal DONE: stored result resent | ACKED: ignored | RUNNING: interrupted
 *   by a restart, FAILED result | deadline passed: FAILED result) -> queued -> fetching
 *   artifacts by chunks (or the model from the job's url, agent/fetch_url.h) -> running ->
 *   result in the outbox -> published -> acked.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/fetch_url.h"
#include "agent/state.h"
#include "common/efc_alloc.h"
#include "common/efc_config.h"
#include "common/efc_log.h"
#include "common/efc_sha256.h"
#include "common/efc_status.h"
#include "common/efc_time.h"
#include "kernels/blas.h"
#include "kernels/kernels.h"
#include "model/dataset.h"
#include "proto/chunk.h"
#include "proto/mqtt.h"
#include "proto/proto.h"

#define MOD "agent"
#define QUEUE_MAX 16 /* jobs waiting behind the current one */
#define TOPIC_MAX 256
#define PATH_MAX_ 4096
#define FETCH_STALL_MS 3000   /* no chunk for this long: re-request the missing ones */
#define FETCH_HASH_RETRIES 3  /* whole-transfer retries after a SHA-256 mismatch */
#define RESEND_EVERY_MS 30000 /* outbox resend timer (protocol.md "Outbox rule") */
#define LOOP_MS 100
#define FETCH_POLL_MS 20 /* URL download steps: MQTT is served between them */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

struct agent_opts {
    const char *id;
    const char *broker;
    const char *data;
    const char *state_dir;
    const char *prefix;
    const char *isa;
    const char *tls_ca, *tls_cert, *tls_key;
};

/* The option table (STYLE.md 2.9): --help, --print-config, the config file, EFC_<NAME>. */
#define OPT(f) offsetof(struct agent_opts, f)
static const struct efc_cfg_opt g_opts[] = {
    {"id", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(id),
     "device id ([A-Za-z0-9][A-Za-z0-9._-]{0,62}); also the MQTT client id (required)"},
    {"broker", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(broker),
     "MQTT v5 broker, mqtt://host[:port] (required)"},
    {"data", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(data),
     "local data set: IMAGES[,LABELS] (.idx/.npy) or fashion-mnist:shard=i/n (required)"},
    {"state-dir", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(state_dir),
     "job journal, result outbox and fetched artifacts (required)"},
    {"isa", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(isa),
     "cap the kernels, the OpenBLAS core and the reported class: ref, avx2, avx512, "
     "avx512vnni, amx (default: the CPU's best)"},
    {"prefix", EFC_CFG_STR, "efc/v1", 0, 0, NULL, OPT(prefix), "topic prefix"},
    {"tls-ca", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(tls_ca),
     "CA certificate (PEM) of the broker; with --tls-cert and --tls-key: mutual TLS"},
    {"tls-cert", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(tls_cert),
     "this client's certificate (PEM; its CN is the MQTT user name)"},
    {"tls-key", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(tls_key), "this client's private key (PEM)"},
};
#define N_OPTS (sizeof(g_opts) / sizeof(g_opts[0]))

/* One job being served: its artifacts are fetched one after the other (model, then base). */
struct cur_job {
    int active;
    struct efc_proto_job job;
    int stage; /* 0 model, 1 base, 2 ready to run */
    int rx_open;
    struct efc_chunk_rx rx;
    struct efc_agent_fetch_url *url_fetch; /* the model from job.url, while it downloads */
    uint64_t last_progress_ns;
    int hash_retries;
    char model_path[PATH_MAX_];
    char base_path[PATH_MAX_];
    struct efc_agent_sandbox *sb; /* the evaluation child, while it runs */
};

struct agent {
    struct agent_opts o;
    struct efc_mqtt *mqtt;
    struct efc_agent_state *state;
    struct efc_dataset *data;
    struct efc_agent_profile prof;
    struct efc_proto_status status;
    char art_dir[PATH_MAX_];
    char t_status[TOPIC_MAX], t_job[TOPIC_MAX], t_ack[TOPIC_MAX], t_result[TOPIC_MAX];
    char t_req[TOPIC_MAX], t_art[TOPIC_MAX];
    struct efc_proto_job queue[QUEUE_MAX];
    int n_queue;
    struct cur_job cur;
    uint64_t last_resend_ns;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: efc-agent --id ID --broker mqtt://HOST:PORT --data SPEC --state-dir DIR\n"
               "                 [--isa CAP] [--prefix P] [--config FILE] [--print-config]\n"
               "\n");
    efc_config_usage(g_opts, N_OPTS, f);
    fprintf(f, "Each option may also come from --config FILE (key = value lines) or EFC_<NAME>\n"
               "(e.g. EFC_STATE_DIR); the command line wins, then the environment, then the\n"
               "file. --print-config shows the result and where each value came from.\n"
               "Stops cleanly on SIGINT / SIGTERM (status offline, then disconnect).\n");
}

/* Options from the table; 0 to run, 1 to exit 0 (help, print-config), -1 on bad usage. */
static int parse_args(int argc, char **argv, struct agent_opts *o, struct efc_config **cfg)
{
    memset(o, 0, sizeof(*o));
    if (efc_config_load(g_opts, N_OPTS, o, argc, argv, cfg) != EFC_OK) {
        fprintf(stderr, "efc-agent: %s\n", efc_err_detail());
        return -1;
    }
    if (efc_config_help(*cfg)) {
        usage(stdout);
        return 1;
    }
    if (efc_config_npos(*cfg) > 0) {
        fprintf(stderr, "efc-agent: unexpected argument \"%s\"\n", efc_config_pos(*cfg, 0));
        return -1;
    }
    if (efc_config_print_wanted(*cfg)) {
        efc_config_print(g_opts, N_OPTS, o, *cfg, stdout);
        return 1;
    }
    if (!o->id || !o->broker || !o->data || !o->state_dir) {
        fprintf(stderr, "efc-agent: --id, --broker, --data and --state-dir are required\n");
        return -1;
    }
    if (!efc_proto_id_valid(o->id)) {
        fprintf(stderr, "efc-agent: --id \"%s\": not a valid id\n", o->id);
        return -1;
    }
    return 0;
}

static int64_t now_epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- publishing --------------------------------------------------------------------- */

static void publish_status(struct agent *a, int online, int busy)
{
    char *buf = NULL;
    a->status.online = online;
    a->status.busy = busy;
    if (efc_proto_status_encode(&a->status, &buf) != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "status encode failed: %s", efc_err_detail());
        return;
    }
    if (efc_mqtt_publish(a->mqtt, a->t_status, buf, strlen(buf), 1, 1, 0) == EFC_OK)
        efc_log(EFC_LOG_INFO, MOD, "status online=%d busy=%d", online, busy);
    efc_free(buf);
}

static enum efc_status publish_result_cb(void *ctx, const char *job_id, const void *payload,
                                         size_t len)
{
    struct agent *a = ctx;
    if (efc_mqtt_publish(a->mqtt, a->t_result, payload, len, 1, 0, 0) != EFC_OK)
        return EFC_ENET; /* disconnected: the next connect resends the rest */
    efc_log(EFC_LOG_INFO, MOD, "job=%s result sent from the outbox", job_id);
    return EFC_OK;
}

static void resend_outbox(struct agent *a)
{
    a->last_resend_ns = efc_time_ns();
    if (!efc_mqtt_connected(a->mqtt))
        return;
    enum efc_status st = efc_agent_outbox_each(a->state, publish_result_cb, a);
    if (st != EFC_OK && st != EFC_ENET)
        efc_log(EFC_LOG_WARN, MOD, "outbox resend: %s %s", efc_status_str(st), efc_err_detail());
}

struct one_entry {
    struct agent *a;
    const char *job_id;
    int found;
};

static enum efc_status resend_one_cb(void *ctx, const char *job_id, const void *payload, size_t len)
{
    struct one_entry *e = ctx;
    if (strcmp(job_id, e->job_id))
        return EFC_OK;
    e->found = 1;
    return publish_result_cb(e->a, job_id, payload, len);
}

/* Store the result durably (outbox, journal DONE), then publish it; a publish while
 * disconnected is not an error: the outbox resends on the next connect. */
static void finish_job(struct agent *a, const struct efc_proto_result *res)
{
    char *buf = NULL;
    enum efc_status st = efc_proto_result_encode(res, &buf);
    if (st != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "job=%s result encode failed: %s", res->job_id,
                efc_err_detail());
        return;
    }
    st = efc_agent_outbox_put(a->state, res->job_id, buf, strlen(buf));
    if (st != EFC_OK)
        efc_log(EFC_LOG_ERROR, MOD, "job=%s outbox write failed: %s %s", res->job_id,
                efc_status_str(st), efc_err_detail());
    efc_log(EFC_LOG_INFO, MOD, "job=%s done status=%s%s%s", res->job_id,
            res->status == EFC_PROTO_RESULT_OK ? "ok" : "failed", res->error[0] ? " error=" : "",
            res->error);
    if (efc_mqtt_publish(a->mqtt, a->t_result, buf, strlen(buf), 1, 0, 0) == EFC_OK)
        efc_log(EFC_LOG_INFO, MOD, "job=%s result published", res->job_id);
    else
        efc_log(EFC_LOG_WARN, MOD, "job=%s result kept in the outbox (disconnected)", res->job_id);
    efc_free(buf);
}

static void fail_job(struct agent *a, const struct efc_proto_job *job, const char *why)
{
    struct efc_agent_job_ctx ctx = {.device_id = a->o.id, .hw_class = a->prof.hw_class};
    struct efc_proto_result res;
    efc_agent_result_init(&ctx, job, &res);
    res.status = EFC_PROTO_RESULT_FAILED;
    snprintf(res.error, sizeof(res.error), "%s", why);
    finish_job(a, &res);
}

/* ---- artifacts ---------------------------------------------------------------------- */

/* 1 if path exists with the given size and SHA-256. */
static int artifact_ok(const char *path, const char *sha_hex, uint64_t bytes)
{
    struct stat sb;
    struct efc_sha256 h;
    uint8_t d[EFC_SHA256_BYTES], buf[65536];
    char hex[EFC_SHA256_HEX_BYTES];
    uint64_t n = 0;
    ssize_t r;
    int fd;

    if (stat(path, &sb) || (uint64_t)sb.st_size != bytes)
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    efc_sha256_init(&h);
    while ((r = read(fd, buf, sizeof(buf))) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return 0;
        }
        efc_sha256_update(&h, buf, (size_t)r);
        n += (uint64_t)r;
    }
    close(fd);
    efc_sha256_final(&h, d);
    efc_sha256_hex(d, hex);
    return n == bytes && !strcmp(hex, sha_hex);
}

static void send_requests(struct agent *a)
{
    struct cur_job *c = &a->cur;
    struct efc_chunk_req req;
    if (!c->rx_open || !efc_mqtt_connected(a->mqtt))
        return;
    while (efc_chunk_rx_next(&c->rx, &req)) {
        char *buf = NULL;
        if (efc_chunk_req_encode(&req, &buf) != EFC_OK) {
            efc_log(EFC_LOG_ERROR, MOD, "chunk request encode: %s", efc_err_detail());
            return;
        }
        enum efc_status st = efc_mqtt_publish(a->mqtt, a->t_req, buf, strlen(buf), 1, 0, 0);
        efc_free(buf);
        if (st != EFC_OK) {
            efc_chunk_rx_expire(&c->rx); /* lost the connection: ask again later */
            return;
        }
    }
}

static void close_rx(struct cur_job *c)
{
    if (c->rx_open) {
        efc_chunk_rx_checkpoint(&c->rx);
        efc_chunk_rx_fini(&c->rx);
        c->rx_open = 0;
    }
}

/* Stop whichever transfer runs (chunks or URL); both keep their .part for a later resume. */
static void close_fetch(struct cur_job *c)
{
    close_rx(c);
    efc_agent_fetch_url_free(c->url_fetch);
    c->url_fetch = NULL;
}

/* The model artifact from the job's url instead of chunks (docs/agent.md "URL transport"); the
 * base, when it differs, still comes by chunks: a job names one URL, for its model. A
 * .part.map beside the file means that .part is the chunk receiver's (full-size, sparse), which
 * a byte-range resume must not continue: both are removed first (map first, as the receiver
 * does). Returns 0, or -1 after failing the job. */
static int start_url_fetch(struct agent *a, const char *path, const char *sha, uint64_t bytes)
{
    struct cur_job *c = &a->cur;
    struct efc_agent_fetch_url_opts fo = {
        .url = c->job.url, .dest_path = path, .expected_bytes = bytes, .sha256_hex = sha};
    struct efc_agent_fetch_url_stats fs;
    char map[PATH_MAX_ + 16], part[PATH_MAX_ + 16], why[256];
    enum efc_status st;

    snprintf(map, sizeof(map), "%s.part.map", path);
    snprintf(part, sizeof(part), "%s.part", path);
    if (access(map, F_OK) == 0 && (unlink(map) != 0 || (unlink(part) != 0 && errno != ENOENT)))
        efc_log(EFC_LOG_WARN, MOD, "job=%s cannot remove chunk transfer state %s: %s",
                c->job.job_id, map, strerror(errno));
    st = efc_agent_fetch_url_start(&fo, &c->url_fetch);
    if (st != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "job=%s artifact=%s cannot fetch from url: %s %s", c->job.job_id,
                sha, efc_status_str(st), efc_err_detail());
        snprintf(why, sizeof(why), "artifact %.16s: url: %s", sha, efc_err_detail());
        fail_job(a, &c->job, why);
        return -1;
    }
    efc_agent_fetch_url_stats(c->url_fetch, &fs);
    efc_log(EFC_LOG_INFO, MOD, "job=%s fetching artifact=%s bytes=%llu from url=%s resumed=%llu",
            c->job.job_id, sha, (unsigned long long)bytes, c->job.url,
            (unsigned long long)fs.resumed_from);
    return 0;
}

/* Start (or skip) the fetch of the current stage's artifact; advances stages whose file is
 * already present and verified. Returns 0, or -1 after failing the job. */
static int start_stage(struct agent *a)
{
    struct cur_job *c = &a->cur;
    for (;;) {
        const char *sha;
        uint64_t bytes;
        char *path;
        if (c->stage >= 2)
            return 0;
        sha = c->stage == 0 ? c->job.model_sha256 : c->job.base_sha256;
        bytes = c->stage == 0 ? c->job.model_bytes : c->job.base_bytes;
        path = c->stage == 0 ? c->model_path : c->base_path;
        if (snprintf(path, PATH_MAX_, "%s/%s", a->art_dir, sha) >= PATH_MAX_) {
            fail_job(a, &c->job, "artifact path too long");
            return -1;
        }
        if (c->stage == 1 && !strcmp(c->job.base_sha256, c->job.model_sha256)) {
            c->stage++;
            continue;
        }
        if (artifact_ok(path, sha, bytes)) {
            efc_log(EFC_LOG_INFO, MOD, "job=%s artifact=%s present and verified", c->job.job_id,
                    sha);
            c->stage++;
            continue;
        }
        if (c->stage == 0 && c->job.url[0])
            return start_url_fetch(a, path, sha, bytes);
        struct efc_chunk_rx_opts ro = {.path = path, .sha256_hex = sha, .total_bytes = bytes};
        enum efc_status st = efc_chunk_rx_open(&c->rx, &ro);
        if (st != EFC_OK) {
            char why[256];
            snprintf(why, sizeof(why), "artifact %.16s: cannot receive: %s", sha, efc_err_detail());
            fail_job(a, &c->job, why);
            return -1;
        }
        c->rx_open = 1;
        c->hash_retries = 0;
        c->last_progress_ns = efc_time_ns();
        efc_log(EFC_LOG_INFO, MOD, "job=%s fetching artifact=%s bytes=%llu chunks=%u resumed=%u",
                c->job.job_id, sha, (unsigned long long)bytes, c->rx.n_chunks, c->rx.n_resumed);
        send_requests(a);
        return 0;
    }
}

static void on_chunk(struct agent *a, const char *topic, const void *payload, size_t len)
{
    struct cur_job *c = &a->cur;
    char sha[EFC_PROTO_SHA256_HEX], dev[EFC_PROTO_ID_MAX];
    struct efc_chunk ch;
    enum efc_status st;

    if (efc_chunk_topic_parse(a->o.prefix, topic, sha, dev) != EFC_OK || strcmp(dev, a->o.id)) {
        efc_log(EFC_LOG_WARN, MOD, "dropped chunk on unexpected topic %s", topic);
        return;
    }
    if (!c->active || !c->rx_open ||
        strcmp(sha, c->stage == 0 ? c->job.model_sha256 : c->job.base_sha256))
        return; /* a late duplicate of a finished transfer */
    if (efc_chunk_decode(payload, len, &ch) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed chunk: %s", efc_err_detail());
        return;
    }
    st = efc_chunk_rx_put(&c->rx, &ch);
    if (st == EFC_EHASH) {
        if (++c->hash_retries > FETCH_HASH_RETRIES) {
            close_rx(c);
            fail_job(a, &c->job, "artifact SHA-256 mismatch after retries");
            c->active = 0;
            return;
        }
        efc_log(EFC_LOG_WARN, MOD, "job=%s artifact=%s SHA-256 mismatch, fetching again",
                c->job.job_id, sha);
    } else if (st != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped chunk: %s %s", efc_status_str(st), efc_err_detail());
        return;
    }
    c->last_progress_ns = efc_time_ns();
    if (c->rx.done) {
        efc_log(EFC_LOG_INFO, MOD, "job=%s artifact=%s fetched and verified", c->job.job_id, sha);
        efc_chunk_rx_fini(&c->rx);
        c->rx_open = 0;
        c->stage++;
        if (start_stage(a))
            c->active = 0;
        return;
    }
    send_requests(a);
}

/* Drive the URL download for at most timeout_ms; when it is over, go on with the next stage
 * (the base by chunks, or the evaluation) or fail the job with the download's error. */
static void step_url_fetch(struct agent *a, int timeout_ms)
{
    struct cur_job *c = &a->cur;
    struct efc_agent_fetch_url_stats fs;
    enum efc_status st;
    char why[256];
    int done = 0;

    st = efc_agent_fetch_url_step(c->url_fetch, timeout_ms, &done);
    if (!done)
        return;
    efc_agent_fetch_url_stats(c->url_fetch, &fs);
    if (st != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "job=%s artifact=%s url fetch failed: %s %s", c->job.job_id,
                c->job.model_sha256, efc_status_str(st), efc_err_detail());
        snprintf(why, sizeof(why), "artifact %.16s: url fetch failed: %s", c->job.model_sha256,
                 efc_err_detail());
        close_fetch(c);
        fail_job(a, &c->job, why);
        c->active = 0;
        return;
    }
    efc_log(EFC_LOG_INFO, MOD,
            "job=%s artifact=%s fetched from url and verified received=%llu resumed=%llu "
            "restarts=%u",
            c->job.job_id, c->job.model_sha256, (unsigned long long)fs.bytes_received,
            (unsigned long long)fs.resumed_from, fs.n_restarts);
    close_fetch(c);
    c->stage++;
    if (start_stage(a))
        c->active = 0;
}

/* ---- jobs --------------------------------------------------------------------------- */

/* The evaluation is over: result to the outbox and out, status idle. */
static void complete_current(struct agent *a, const struct efc_proto_result *res)
{
    finish_job(a, res);
    publish_status(a, 1, 0);
    a->cur.active = 0;
}

/* Start the evaluation child; the loop keeps serving MQTT while it runs (poll_current). */
static void run_current(struct agent *a)
{
    struct cur_job *c = &a->cur;
    struct efc_agent_job_ctx ctx = {.device_id = a->o.id, .hw_class = a->prof.hw_class};
    struct efc_proto_result res;
    enum efc_status st;
    const char *base;

    st = efc_agent_journal_set(a->state, c->job.job_id, EFC_AGENT_JOB_RUNNING);
    if (st != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "job=%s journal write failed: %s; not running it",
                c->job.job_id, efc_err_detail());
        c->active = 0;
        return;
    }
    efc_log(EFC_LOG_INFO, MOD, "job=%s running policy=%s", c->job.job_id, c->job.policy);
    publish_status(a, 1, 1);
    base = strcmp(c->job.base_sha256, c->job.model_sha256) ? c->base_path : NULL;
    st = efc_agent_sandbox_start(&ctx, &c->job, c->model_path, base, a->data, &res, &c->sb);
    if (st != EFC_OK) {
        efc_agent_result_init(&ctx, &c->job, &res);
        res.status = EFC_PROTO_RESULT_FAILED;
        snprintf(res.error, sizeof(res.error), "sandbox: %s", efc_err_detail());
    }
    if (!c->sb) /* not started, or its deadline had passed: res is final */
        complete_current(a, &res);
}

/* Wait up to timeout_ms (-1: until it ends) for the running evaluation; finish it if over. */
static void poll_current(struct agent *a, int timeout_ms)
{
    struct efc_proto_result res;
    if (a->cur.sb && efc_agent_sandbox_poll(a->cur.sb, timeout_ms, &res)) {
        a->cur.sb = NULL;
        complete_current(a, &res);
    }
}

static int job_known(const struct agent *a, const char *job_id)
{
    if (a->cur.active && !strcmp(a->cur.job.job_id, job_id))
        return 1;
    for (int i = 0; i < a->n_queue; i++)
        if (!strcmp(a->queue[i].job_id, job_id))
            return 1;
    return 0;
}

static void on_job(struct agent *a, const void *payload, size_t len)
{
    struct efc_proto_job job;
    enum efc_agent_job_phase ph;
    enum efc_status st;

    if (efc_proto_job_decode(payload, len, &job) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed job: %s", efc_err_detail());
        return;
    }
    if (strcmp(job.device_id, a->o.id)) {
        efc_log(EFC_LOG_WARN, MOD, "dropped job=%s for device %s", job.job_id, job.device_id);
        return;
    }
    if (job_known(a, job.job_id)) {
        efc_log(EFC_LOG_INFO, MOD, "job=%s duplicate of a queued job, ignored", job.job_id);
        return;
    }
    st = efc_agent_journal_get(a->state, job.job_id, &ph);
    if (st != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped job=%s: journal: %s", job.job_id, efc_err_detail());
        return;
    }
    if (ph == EFC_AGENT_JOB_ACKED) {
        efc_log(EFC_LOG_INFO, MOD, "job=%s already acked, ignored", job.job_id);
        return;
    }
    if (ph == EFC_AGENT_JOB_DONE) {
        struct one_entry e = {a, job.job_id, 0};
        efc_log(EFC_LOG_INFO, MOD, "job=%s already done, resending its stored result", job.job_id);
        efc_agent_outbox_each(a->state, resend_one_cb, &e);
        if (!e.found)
            efc_log(EFC_LOG_WARN, MOD, "job=%s done but not in the outbox", job.job_id);
        return;
    }
    if (ph == EFC_AGENT_JOB_RUNNING) {
        efc_log(EFC_LOG_INFO, MOD, "job=%s was interrupted by an agent restart", job.job_id);
        fail_job(a, &job, "evaluation interrupted (agent restarted); not run twice");
        return;
    }
    if (job.deadline_ms > 0 && job.deadline_ms <= now_epoch_ms()) {
        efc_log(EFC_LOG_INFO, MOD, "job=%s deadline passed before it started", job.job_id);
        fail_job(a, &job, "deadline passed before the job started");
        return;
    }
    if (a->n_queue >= QUEUE_MAX) {
        efc_log(EFC_LOG_WARN, MOD, "job=%s dropped: queue full (%d)", job.job_id, QUEUE_MAX);
        return;
    }
    a->queue[a->n_queue++] = job;
    efc_log(EFC_LOG_INFO, MOD, "job=%s queued policy=%s round=%s", job.job_id, job.policy,
            job.round_id);
}

static void on_ack(struct agent *a, const void *payload, size_t len)
{
    struct efc_proto_ack ack;
    enum efc_agent_job_phase ph;
    if (efc_proto_ack_decode(payload, len, &ack) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed ack: %s", efc_err_detail());
        return;
    }
    if (strcmp(ack.device_id, a->o.id)) {
        efc_log(EFC_LOG_WARN, MOD, "dropped ack job=%s for device %s", ack.job_id, ack.device_id);
        return;
    }
    if (efc_agent_journal_get(a->state, ack.job_id, &ph) != EFC_OK || ph != EFC_AGENT_JOB_DONE)
        return; /* unknown, or already acked: nothing changes */
    if (efc_agent_outbox_ack(a->state, ack.job_id) == EFC_OK)
        efc_log(EFC_LOG_INFO, MOD, "job=%s acked", ack.job_id);
    else
        efc_log(EFC_LOG_WARN, MOD, "job=%s ack not recorded: %s", ack.job_id, efc_err_detail());
}

/* Advance the job machinery: start the next queued job, expire a stalled fetch, fail a
 * fetch that outlived its deadline, run a job whose artifacts are ready. */
static void step_jobs(struct agent *a)
{
    struct cur_job *c = &a->cur;
    if (c->sb)
        return; /* evaluating: poll_current */
    if (!c->active && a->n_queue > 0) {
        memset(c, 0, sizeof(*c));
        c->job = a->queue[0];
        memmove(a->queue, a->queue + 1, (size_t)(a->n_queue - 1) * sizeof(a->queue[0]));
        a->n_queue--;
        c->active = 1;
        if (c->job.deadline_ms > 0 && c->job.deadline_ms <= now_epoch_ms()) {
            fail_job(a, &c->job, "deadline passed while the job was queued");
            c->active = 0;
            return;
        }
        if (start_stage(a)) {
            c->active = 0;
            return;
        }
    }
    if (!c->active)
        return;
    if (c->stage < 2) {
        if (c->job.deadline_ms > 0 && c->job.deadline_ms <= now_epoch_ms()) {
            close_fetch(c);
            fail_job(a, &c->job, "artifact fetch did not finish before the deadline");
            c->active = 0;
            return;
        }
        if (c->rx_open && efc_time_ns() - c->last_progress_ns > FETCH_STALL_MS * 1000000ull) {
            efc_log(EFC_LOG_INFO, MOD, "job=%s fetch stalled, requesting missing chunks again",
                    c->job.job_id);
            efc_chunk_rx_expire(&c->rx);
            c->last_progress_ns = efc_time_ns();
            send_requests(a);
        }
        return;
    }
    run_current(a);
}

/* ---- MQTT callbacks ----------------------------------------------------------------- */

static void on_connect(void *ctx, int session_present)
{
    struct agent *a = ctx;
    (void)session_present;
    publish_status(a, 1, 0);
    resend_outbox(a);
    if (a->cur.rx_open) {
        efc_chunk_rx_expire(&a->cur.rx);
        send_requests(a);
    }
}

static void on_message(void *ctx, const char *topic, const void *payload, size_t len, int retained)
{
    struct agent *a = ctx;
    (void)retained;
    if (!strcmp(topic, a->t_job))
        on_job(a, payload, len);
    else if (!strcmp(topic, a->t_ack))
        on_ack(a, payload, len);
    else
        on_chunk(a, topic, payload, len);
}

/* ---- main --------------------------------------------------------------------------- */

/* A job found RUNNING at start-up was cut short by a kill: it is not run again; when its job
 * message is replayed it gets a FAILED result (on_job). */
static enum efc_status log_interrupted(void *ctx, const char *job_id, const void *payload,
                                       size_t len)
{
    (void)ctx;
    (void)payload;
    (void)len;
    efc_log(EFC_LOG_WARN, MOD, "job=%s was interrupted by a restart; it will not run again",
            job_id);
    return EFC_OK;
}

static int make_topics(struct agent *a)
{
    const char *p = a->o.prefix, *id = a->o.id;
    if (efc_proto_topic(p, id, "status", a->t_status, TOPIC_MAX) ||
        efc_proto_topic(p, id, "job", a->t_job, TOPIC_MAX) ||
        efc_proto_topic(p, id, "ack", a->t_ack, TOPIC_MAX) ||
        efc_proto_topic(p, id, "result", a->t_result, TOPIC_MAX) ||
        efc_proto_topic(p, id, "chunk/req", a->t_req, TOPIC_MAX))
        return -1;
    if (snprintf(a->t_art, TOPIC_MAX, "%s/art/+/%s", p, id) >= TOPIC_MAX)
        return -1;
    return 0;
}

static int setup(struct agent *a, enum efc_isa cap)
{
    enum efc_status st;
    char *will = NULL;
    char client_id[EFC_PROTO_ID_MAX + 16];

    if ((st = efc_kernels_init(cap))) {
        efc_log(EFC_LOG_ERROR, MOD, "kernels: %s %s", efc_status_str(st), efc_err_detail());
        return -1;
    }
    efc_agent_profile_detect(cap, &a->prof);
    if (make_topics(a)) {
        efc_log(EFC_LOG_ERROR, MOD, "invalid --prefix '%s': %s", a->o.prefix, efc_err_detail());
        return -1;
    }
    if ((st = efc_agent_state_open(a->o.state_dir, &a->state))) {
        efc_log(EFC_LOG_ERROR, MOD, "state dir %s: %s %s", a->o.state_dir, efc_status_str(st),
                efc_err_detail());
        return -1;
    }
    efc_agent_journal_interrupted(a->state, log_interrupted, NULL);
    if (snprintf(a->art_dir, sizeof(a->art_dir), "%s/artifacts", a->o.state_dir) >=
            (int)sizeof(a->art_dir) ||
        (mkdir(a->art_dir, 0755) && errno != EEXIST)) {
        efc_log(EFC_LOG_ERROR, MOD, "cannot create %s: %s", a->art_dir, strerror(errno));
        return -1;
    }
    if ((st = efc_dataset_open(a->o.data, "test", &a->data))) {
        efc_log(EFC_LOG_ERROR, MOD, "data %s: %s %s", a->o.data, efc_status_str(st),
                efc_err_detail());
        return -1;
    }
    memset(&a->status, 0, sizeof(a->status));
    efc_agent_profile_to_status(&a->prof, &a->status);
    snprintf(a->status.device_id, sizeof(a->status.device_id), "%s", a->o.id);
    a->status.online = 0;
    if (efc_proto_status_encode(&a->status, &will) != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "status encode: %s", efc_err_detail());
        return -1;
    }
    snprintf(client_id, sizeof(client_id), "efc-agent-%s", a->o.id);
    struct efc_mqtt_opts mo = {
        .url = a->o.broker,
        .client_id = client_id,
        .will_topic = a->t_status,
        .will_payload = will,
        .will_len = strlen(will),
        .will_retain = 1,
        .will_qos = 1,
        .on_connect = on_connect,
        .on_message = on_message,
        .ctx = a,
        .clean_start = 1,
        .tls_ca = a->o.tls_ca,
        .tls_cert = a->o.tls_cert,
        .tls_key = a->o.tls_key,
    };
    st = efc_mqtt_new(&mo, &a->mqtt);
    efc_free(will);
    if (st != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "mqtt: %s %s", efc_status_str(st), efc_err_detail());
        return -1;
    }
    if (efc_mqtt_subscribe(a->mqtt, a->t_job, 1) || efc_mqtt_subscribe(a->mqtt, a->t_ack, 1) ||
        efc_mqtt_subscribe(a->mqtt, a->t_art, 1)) {
        efc_log(EFC_LOG_ERROR, MOD, "subscribe: %s", efc_err_detail());
        return -1;
    }
    efc_log(EFC_LOG_INFO, MOD, "device=%s class=%s isa=%s blas=%s data=%s samples=%d state=%s",
            a->o.id, a->prof.hw_class, efc_isa_name(a->prof.isa), a->prof.blas_core, a->o.data,
            a->data->n, a->o.state_dir);
    if ((st = efc_mqtt_connect(a->mqtt))) {
        efc_log(EFC_LOG_ERROR, MOD, "connect: %s %s", efc_status_str(st), efc_err_detail());
        return -1;
    }
    return 0;
}

static void teardown(struct agent *a)
{
    if (a->mqtt) {
        if (efc_mqtt_connected(a->mqtt)) {
            publish_status(a, 0, 0);
            for (int i = 0; i < 5; i++) /* let the QoS 1 publish out before DISCONNECT */
                efc_mqtt_loop(a->mqtt, 20);
        }
        efc_mqtt_free(a->mqtt);
    }
    close_fetch(&a->cur);
    efc_dataset_free(a->data);
    efc_agent_state_close(a->state);
}

int main(int argc, char **argv)
{
    static struct agent a; /* large (queue, paths): not on the stack */
    enum efc_isa cap = efc_isa_best();
    struct efc_config *cfg = NULL;
    struct sigaction sa;
    int rc = 0;

    rc = parse_args(argc, argv, &a.o, &cfg);
    if (rc) {
        if (rc < 0)
            fprintf(stderr, "efc-agent: see --help\n");
        efc_config_free(cfg);
        return rc < 0 ? 2 : 0;
    }
    if (a.o.isa) {
        enum efc_isa want;
        if (efc_isa_parse(a.o.isa, &want) != EFC_OK) {
            fprintf(stderr, "efc-agent: --isa: %s\n", efc_err_detail());
            efc_config_free(cfg);
            return 2;
        }
        cap = efc_isa_cap(cap, want);
        setenv("EFC_ISA", efc_isa_name(cap), 1);
    }
    efc_blas_setup(cap); /* the OpenBLAS core for the cap; opened only by evaluation children */
    /* A device measures on one core, like `efc bench`: OpenBLAS threads spinning against
     * other work on a shared host made FP32 latencies several times too slow. */
    efc_blas_set_threads(1);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (setup(&a, cap)) {
        rc = 1;
        goto out;
    }
    a.last_resend_ns = efc_time_ns();
    while (!g_stop) {
        if (a.cur.sb) { /* wait on the evaluation, serve MQTT in between */
            poll_current(&a, LOOP_MS);
            efc_mqtt_loop(a.mqtt, 0);
        } else if (a.cur.url_fetch) { /* the same around a URL download */
            step_url_fetch(&a, FETCH_POLL_MS);
            efc_mqtt_loop(a.mqtt, 0);
        } else {
            efc_mqtt_loop(a.mqtt, LOOP_MS);
        }
        if (g_stop)
            break;
        step_jobs(&a);
        if (efc_time_ns() - a.last_resend_ns > RESEND_EVERY_MS * 1000000ull)
            resend_outbox(&a);
    }
    if (a.cur.sb) {
        efc_log(EFC_LOG_INFO, MOD, "job=%s: stopping after the running evaluation",
                a.cur.job.job_id);
        poll_current(&a, -1);
    }
    efc_log(EFC_LOG_INFO, MOD, "device=%s stopping", a.o.id);
out:
    teardown(&a);
    efc_config_free(cfg);
    return rc;
}
