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
#include <dirent.h>
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
#include "common/efc_fs.h"
#include "common/efc_log.h"
#include "common/efc_sha256.h"
#include "common/efc_status.h"
#include "common/efc_time.h"
#include "kernels/blas.h"
#include "kernels/kernels.h"
#include "model/dataset.h"
#include "ota/manifest.h"
#include "ota/slots.h"
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
#define OTA_QUEUE_MAX 4  /* OTA directives waiting (one runs at a time) */
#define REVOKED_MAX 32

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
    const char *trust_keys, *revoked_keys; /* OTA (docs/ota.md) */
};

/* The option table (STYLE.md 2.9): --help, --print-config, the config file, EFC_<NAME>. */
#define OPT(f) offsetof(struct agent_opts, f)
static const struct efc_cfg_opt g_opts[] = {
    {"id", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(id),
     "device id ([A-Za-z0-9][A-Za-z0-9._-]{0,62}); also the MQTT client id (required)"},
    {"broker", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(broker),
     "MQTT v5 broker, mqtt://host[:port] or mqtts://host[:port] (required)"},
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
    {"trust-keys", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(trust_keys),
     "OTA: public keys (PEM files, comma-separated) whose signed manifests this device "
     "installs; none: every OTA directive is refused"},
    {"revoked-keys", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(revoked_keys),
     "OTA: key ids (comma-separated) refused even if trusted"},
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
    int is_ota; /* the fetch serves the OTA install in a->ota (job = its artifact) */
};

/* The OTA directive being carried out (docs/ota.md "On the device"): fetch (through cur_job),
 * PREPARE (the policy's device step in a sandbox child, saving the device-ready model and
 * the golden output), stage + switch (ota/slots.h), HEALTH (a sandbox child on the slot's
 * files), then commit or roll back; one report. */
enum ota_phase { OTA_FETCH = 0, OTA_PREPARE = 1, OTA_HEALTH = 2 };
struct ota_cur {
    int active;
    enum ota_phase phase;
    struct efc_proto_ota msg;
    struct efc_manifest man;
    char model_tmp[PATH_MAX_]; /* the prepared model, before it is staged */
    char golden[PATH_MAX_];    /* the prepared model's output on the golden input */
    struct efc_agent_sandbox *sb;
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
    /* OTA */
    struct efc_slots *slots;
    struct efc_manifest_keys *keys; /* NULL: no --trust-keys, every directive refused */
    char revoked_buf[1024];
    const char *revoked[REVOKED_MAX];
    size_t n_revoked;
    char t_ota[TOPIC_MAX], t_ota_report[TOPIC_MAX];
    char ota_file[PATH_MAX_]; /* the directive being carried out, for a restart mid-trial */
    struct efc_proto_ota ota_queue[OTA_QUEUE_MAX];
    int n_ota_queue;
    struct ota_cur ota;
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
    /* One outbox for results and OTA reports: OTA ids own their prefix (proto.h). */
    const char *topic = strncmp(job_id, EFC_PROTO_OTA_PREFIX, strlen(EFC_PROTO_OTA_PREFIX))
                            ? a->t_result
                            : a->t_ota_report;
    if (efc_mqtt_publish(a->mqtt, topic, payload, len, 1, 0, 0) != EFC_OK)
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

static void ota_finish(struct agent *a, int32_t outcome, const char *reason,
                       const struct efc_proto_result *res);
static void ota_prepare(struct agent *a);

static void fail_job(struct agent *a, const struct efc_proto_job *job, const char *why)
{
    if (job == &a->cur.job && a->cur.is_ota) { /* the fetch of an OTA artifact failed */
        char reason[256];
        snprintf(reason, sizeof(reason), "FETCH: %.240s", why);
        a->cur.active = 0;
        ota_finish(a, EFC_PROTO_OTA_FAILED, reason, NULL);
        return;
    }
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
            c->active = 0;
            if (c->is_ota)
                ota_finish(a, EFC_PROTO_OTA_REFUSED,
                           "ARTIFACT_HASH: the received bytes do not match the manifest", NULL);
            else
                fail_job(a, &c->job, "artifact SHA-256 mismatch after retries");
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
    if (st != EFC_OK && c->is_ota && (st == EFC_EHASH || st == EFC_EPROTO)) {
        /* The bytes are not the ones the signed manifest names: refused, not a fault. */
        snprintf(why, sizeof(why), "%s: %.220s",
                 st == EFC_EHASH ? "ARTIFACT_HASH" : "ARTIFACT_SIZE", efc_err_detail());
        close_fetch(c);
        c->active = 0;
        ota_finish(a, EFC_PROTO_OTA_REFUSED, why, NULL);
        return;
    }
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

    if (c->is_ota) { /* the OTA artifact is here: on to its device step */
        c->active = 0;
        ota_prepare(a);
        return;
    }
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

/* ---- OTA (docs/ota.md "On the device") ---------------------------------------------- */

/* The status fields naming what runs: the active slot's install. */
static void ota_status_fill(struct agent *a)
{
    struct efc_slots_status ss;
    a->status.active_model[0] = '\0';
    a->status.active_version = 0;
    a->status.active_policy[0] = '\0';
    if (!a->slots || efc_slots_status(a->slots, &ss) != EFC_OK || !ss.has_active)
        return;
    snprintf(a->status.active_model, sizeof(a->status.active_model), "%s", ss.active.sha256);
    a->status.active_version = ss.active.version;
    snprintf(a->status.active_policy, sizeof(a->status.active_policy), "%s", ss.active.policy);
}

/* The directive's one report: to the outbox (journal DONE), out, status updated. res: the
 * health evaluation's figures (NULL if it did not run). */
static void ota_finish(struct agent *a, int32_t outcome, const char *reason,
                       const struct efc_proto_result *res)
{
    struct ota_cur *o = &a->ota;
    struct efc_proto_ota_report rep;
    char *buf = NULL;

    memset(&rep, 0, sizeof(rep));
    rep.version = EFC_PROTO_VERSION;
    snprintf(rep.ota_id, sizeof(rep.ota_id), "%s", o->msg.ota_id);
    snprintf(rep.rollout_id, sizeof(rep.rollout_id), "%s", o->msg.rollout_id);
    snprintf(rep.device_id, sizeof(rep.device_id), "%s", a->o.id);
    rep.action = o->msg.action;
    rep.outcome = outcome;
    snprintf(rep.reason, sizeof(rep.reason), "%s", reason ? reason : "");
    ota_status_fill(a);
    snprintf(rep.active_sha256, sizeof(rep.active_sha256), "%s", a->status.active_model);
    rep.active_version = a->status.active_version;
    snprintf(rep.active_policy, sizeof(rep.active_policy), "%s", a->status.active_policy);
    if (res && res->status == EFC_PROTO_RESULT_OK) {
        rep.has_labels = res->has_labels;
        rep.eval_total = res->eval_total;
        rep.correct = res->correct;
        rep.agree = res->agree;
        rep.p50_ms = res->p50_ms;
        rep.p99_ms = res->p99_ms;
        rep.peak_rss_bytes = res->peak_rss_bytes;
    }
    efc_log(outcome == EFC_PROTO_OTA_INSTALLED || outcome == EFC_PROTO_OTA_REVERTED
                ? EFC_LOG_INFO
                : EFC_LOG_WARN,
            MOD, "ota=%s rollout=%s %s: %s%s%s (active: %s version %llu)", rep.ota_id,
            rep.rollout_id, efc_proto_ota_action_str(rep.action),
            efc_proto_ota_outcome_str(outcome), rep.reason[0] ? ": " : "", rep.reason,
            rep.active_policy[0] ? rep.active_policy : "none",
            (unsigned long long)rep.active_version);
    if (efc_proto_ota_report_encode(&rep, &buf) == EFC_OK) {
        if (efc_agent_outbox_put(a->state, rep.ota_id, buf, strlen(buf)) != EFC_OK)
            efc_log(EFC_LOG_ERROR, MOD, "ota=%s outbox write failed: %s", rep.ota_id,
                    efc_err_detail());
        if (efc_mqtt_publish(a->mqtt, a->t_ota_report, buf, strlen(buf), 1, 0, 0) != EFC_OK)
            efc_log(EFC_LOG_WARN, MOD, "ota=%s report kept in the outbox (disconnected)",
                    rep.ota_id);
        efc_free(buf);
    } else {
        efc_log(EFC_LOG_ERROR, MOD, "ota=%s report encode: %s", rep.ota_id, efc_err_detail());
    }
    unlink(o->golden);
    unlink(o->model_tmp);
    unlink(a->ota_file);
    o->active = 0;
    a->cur.is_ota = 0;
    publish_status(a, 1, 0);
}

/* A sandbox child for the directive: job = the directive's health settings around model. */
static int ota_sandbox(struct agent *a, const char *policy, int32_t calib, int32_t runs,
                       const char *model, const char *base, const char *save, int check)
{
    struct ota_cur *o = &a->ota;
    struct efc_agent_job_ctx ctx = {.device_id = a->o.id,
                                    .hw_class = a->prof.hw_class,
                                    .save_model_path = save,
                                    .golden_path = o->golden,
                                    .golden_check = check};
    /* Test hook: EFC_AGENT_OTA_FAULT=segv|oom|hang makes only the health child misbehave,
     * as a new model that crashes, eats memory or hangs would (docs/ota.md). */
    const char *fault = check ? getenv("EFC_AGENT_OTA_FAULT") : NULL;
    if (fault && !strcmp(fault, "segv"))
        ctx.fault = EFC_AGENT_FAULT_SEGV;
    else if (fault && !strcmp(fault, "oom"))
        ctx.fault = EFC_AGENT_FAULT_OOM;
    else if (fault && !strcmp(fault, "hang"))
        ctx.fault = EFC_AGENT_FAULT_HANG;
    struct efc_proto_job job;
    struct efc_proto_result res;

    memset(&job, 0, sizeof(job));
    job.version = EFC_PROTO_VERSION;
    snprintf(job.job_id, sizeof(job.job_id), "%s", o->msg.ota_id);
    snprintf(job.round_id, sizeof(job.round_id), "%s", o->msg.rollout_id);
    snprintf(job.device_id, sizeof(job.device_id), "%s", a->o.id);
    snprintf(job.policy, sizeof(job.policy), "%s", policy);
    job.calib_samples = calib;
    job.eval_samples = o->msg.eval_samples;
    job.batch = 1;
    job.timed_runs = runs;
    job.seed = o->msg.seed;
    job.deadline_ms = o->msg.deadline_ms;
    job.mem_limit_bytes = o->msg.mem_limit_bytes;
    if (efc_agent_sandbox_start(&ctx, &job, model, base, a->data, &res, &o->sb) != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "ota=%s sandbox: %s", o->msg.ota_id, efc_err_detail());
        return -1;
    }
    if (!o->sb) { /* its deadline had passed: res is final */
        efc_log(EFC_LOG_WARN, MOD, "ota=%s: %s", o->msg.ota_id, res.error);
        return -1;
    }
    publish_status(a, 1, 1);
    return 0;
}

/* The artifact is fetched: check it against the signed manifest before anything parses it,
 * then run the policy's device step (e.g. INT8 calibration on local data) in a child. */
static void ota_prepare(struct agent *a)
{
    struct ota_cur *o = &a->ota;
    enum efc_manifest_err why = EFC_MANIFEST_OK;
    char reason[256];

    if (efc_manifest_check_file(&o->man, a->cur.model_path, &why) != EFC_OK) {
        snprintf(reason, sizeof(reason), "%s: %.200s", efc_manifest_err_str(why),
                 efc_err_detail());
        ota_finish(a, EFC_PROTO_OTA_REFUSED, reason, NULL);
        return;
    }
    o->phase = OTA_PREPARE;
    efc_log(EFC_LOG_INFO, MOD, "ota=%s artifact verified against the manifest; preparing %s",
            o->msg.ota_id, o->man.policy);
    if (ota_sandbox(a, o->man.policy, o->msg.calib_samples, 1, a->cur.model_path, NULL,
                    o->model_tmp, 0))
        ota_finish(a, EFC_PROTO_OTA_FAILED, "PREPARE: the evaluation child did not start",
                   NULL);
}

/* The trial's health check: count the attempt first (a crash loop ends), then a child
 * runs the slot's model: golden input, local accuracy and agreement with the FP32
 * artifact, health_runs timed inferences. */
static void ota_health(struct agent *a)
{
    struct ota_cur *o = &a->ota;
    struct efc_slots_status ss;
    int exhausted = 0;

    if (efc_slots_trial_attempt(a->slots, &exhausted) != EFC_OK ||
        efc_slots_status(a->slots, &ss) != EFC_OK) {
        char reason[256];
        snprintf(reason, sizeof(reason), "SLOTS: %.240s", efc_err_detail());
        efc_slots_rollback(a->slots);
        ota_finish(a, EFC_PROTO_OTA_ROLLED_BACK, reason, NULL);
        return;
    }
    if (exhausted) {
        efc_slots_rollback(a->slots);
        ota_finish(a, EFC_PROTO_OTA_ROLLED_BACK,
                   "TRIAL_EXHAUSTED: the health check was interrupted too often", NULL);
        return;
    }
    o->phase = OTA_HEALTH;
    efc_log(EFC_LOG_INFO, MOD, "ota=%s switched to slot %c (trial %d/%d): health check",
            o->msg.ota_id, ss.active.name, (int)ss.trial_attempts, EFC_SLOTS_MAX_TRIALS);
    if (ota_sandbox(a, "fp32", 0, o->msg.health_runs, ss.active.model_path,
                    ss.active.artifact_path, NULL, 1)) {
        efc_slots_rollback(a->slots);
        ota_finish(a, EFC_PROTO_OTA_ROLLED_BACK, "HEALTH: the check could not start", NULL);
    }
}

/* The health gate on the child's figures; reason empty when healthy. */
static void ota_judge(const struct efc_proto_ota *m, const struct efc_proto_result *r,
                      char *reason, size_t len)
{
    reason[0] = '\0';
    if (r->status != EFC_PROTO_RESULT_OK)
        snprintf(reason, len, "HEALTH: %.230s", r->error);
    else if (m->min_accuracy > 0 && r->has_labels && r->eval_total > 0 &&
             (double)r->correct / r->eval_total < m->min_accuracy)
        snprintf(reason, len, "ACCURACY: %.4f on %d local samples < %.4f",
                 (double)r->correct / r->eval_total, r->eval_total, m->min_accuracy);
    else if (m->min_agree > 0 && r->eval_total > 0 &&
             (double)r->agree / r->eval_total < m->min_agree)
        snprintf(reason, len, "AGREEMENT: %.4f with the FP32 artifact < %.4f",
                 (double)r->agree / r->eval_total, m->min_agree);
    else if (m->max_p99_ms > 0 && r->p99_ms > m->max_p99_ms)
        snprintf(reason, len, "LATENCY: p99 %.3f ms > %.3f ms", r->p99_ms, m->max_p99_ms);
    else if (m->max_rss_bytes > 0 && r->peak_rss_bytes > (uint64_t)m->max_rss_bytes)
        snprintf(reason, len, "MEMORY: peak RSS %llu > %lld bytes",
                 (unsigned long long)r->peak_rss_bytes, (long long)m->max_rss_bytes);
}

/* Wait up to timeout_ms for the OTA child; carry on with what it produced. */
static void poll_ota(struct agent *a, int timeout_ms)
{
    struct ota_cur *o = &a->ota;
    struct efc_proto_result res;
    char reason[256];

    if (!o->sb || !efc_agent_sandbox_poll(o->sb, timeout_ms, &res))
        return;
    o->sb = NULL;
    if (o->phase == OTA_PREPARE) {
        if (res.status != EFC_PROTO_RESULT_OK) {
            snprintf(reason, sizeof(reason), "PREPARE: %.230s", res.error);
            ota_finish(a, EFC_PROTO_OTA_FAILED, reason, NULL);
            return;
        }
        char *json = a->ota.msg.manifest;
        if (efc_slots_stage(a->slots, json, strlen(json), &o->man, a->cur.model_path,
                            o->model_tmp) != EFC_OK ||
            efc_slots_switch(a->slots, o->msg.ota_id) != EFC_OK) {
            snprintf(reason, sizeof(reason), "INSTALL: %.230s", efc_err_detail());
            ota_finish(a, EFC_PROTO_OTA_FAILED, reason, NULL);
            return;
        }
        unlink(o->model_tmp);
        ota_health(a);
        return;
    }
    ota_judge(&o->msg, &res, reason, sizeof(reason));
    if (reason[0]) {
        enum efc_status st = efc_slots_rollback(a->slots);
        if (st != EFC_OK)
            efc_log(EFC_LOG_ERROR, MOD, "ota=%s rollback: %s", o->msg.ota_id, efc_err_detail());
        ota_finish(a, EFC_PROTO_OTA_ROLLED_BACK, reason, &res);
        return;
    }
    if (efc_slots_commit(a->slots) != EFC_OK) {
        snprintf(reason, sizeof(reason), "COMMIT: %.230s", efc_err_detail());
        efc_slots_rollback(a->slots);
        ota_finish(a, EFC_PROTO_OTA_ROLLED_BACK, reason, &res);
        return;
    }
    ota_finish(a, EFC_PROTO_OTA_INSTALLED, "", &res);
}

/* Verify the directive's manifest: signature first, then time, class and version. */
static int ota_verify(struct agent *a, uint64_t min_version, char *reason, size_t len)
{
    struct ota_cur *o = &a->ota;
    enum efc_manifest_err why = EFC_MANIFEST_OK;
    struct efc_manifest_policy pol = {.trusted = a->keys,
                                      .revoked = a->revoked,
                                      .n_revoked = a->n_revoked,
                                      .now = (int64_t)time(NULL),
                                      .skew_s = -1,
                                      .hw_class = a->prof.hw_class,
                                      .min_version = min_version};
    if (!a->keys) {
        snprintf(reason, len, "UNKNOWN_KEY: this agent trusts no key (--trust-keys)");
        return -1;
    }
    if (efc_manifest_verify(o->msg.manifest, strlen(o->msg.manifest), &pol, &o->man, &why) !=
        EFC_OK) {
        snprintf(reason, len, "%s: %.200s", efc_manifest_err_str(why), efc_err_detail());
        return -1;
    }
    return 0;
}

/* Start the next OTA directive (nothing else runs). */
static void ota_start(struct agent *a)
{
    struct ota_cur *o = &a->ota;
    struct efc_slots_status ss;
    char reason[256], hex[EFC_SHA256_HEX_BYTES];

    memset(o, 0, sizeof(*o));
    o->msg = a->ota_queue[0];
    memmove(a->ota_queue, a->ota_queue + 1, (size_t)(a->n_ota_queue - 1) * sizeof(a->ota_queue[0]));
    a->n_ota_queue--;
    o->active = 1;
    snprintf(o->model_tmp, sizeof(o->model_tmp), "%s/ota-prepared.efm", a->o.state_dir);
    snprintf(o->golden, sizeof(o->golden), "%s/ota-golden.bin", a->o.state_dir);
    if (!a->slots || efc_slots_status(a->slots, &ss) != EFC_OK) {
        snprintf(reason, sizeof(reason), "SLOTS: %.240s",
                 a->slots ? efc_err_detail() : "OTA disabled: the slot state is unusable");
        ota_finish(a, EFC_PROTO_OTA_FAILED, reason, NULL);
        return;
    }
    /* Kept until the report: a restart mid-trial resumes this directive. */
    {
        char *enc = NULL;
        if (efc_proto_ota_encode(&o->msg, &enc) != EFC_OK ||
            efc_fs_write_atomic(a->ota_file, enc, strlen(enc)) != EFC_OK ||
            efc_agent_journal_set(a->state, o->msg.ota_id, EFC_AGENT_JOB_RUNNING) != EFC_OK) {
            snprintf(reason, sizeof(reason), "STATE: %.240s", efc_err_detail());
            efc_free(enc);
            ota_finish(a, EFC_PROTO_OTA_FAILED, reason, NULL);
            return;
        }
        efc_free(enc);
    }
    if (ota_verify(a, o->msg.action == EFC_PROTO_OTA_INSTALL ? ss.min_version : 0, reason,
                   sizeof(reason))) {
        if (ss.trial && !strcmp(ss.trial_tag, o->msg.ota_id))
            efc_slots_rollback(a->slots); /* its own trial, now refused (key revoked...) */
        ota_finish(a, EFC_PROTO_OTA_REFUSED, reason, NULL);
        return;
    }
    efc_sha256_hex(o->man.artifact_sha256, hex);
    if (o->msg.action == EFC_PROTO_OTA_ROLLBACK) {
        if (!ss.has_active || ss.trial || strcmp(ss.active.sha256, hex) ||
            ss.active.version != o->man.version) {
            ota_finish(a, EFC_PROTO_OTA_REFUSED,
                       "NOT_ACTIVE: the install to undo is not what runs here", NULL);
            return;
        }
        if (efc_slots_revert(a->slots) != EFC_OK) {
            snprintf(reason, sizeof(reason), "NO_PREVIOUS: %.230s", efc_err_detail());
            ota_finish(a, EFC_PROTO_OTA_FAILED, reason, NULL);
            return;
        }
        ota_finish(a, EFC_PROTO_OTA_REVERTED, "", NULL);
        return;
    }
    if (ss.trial && !strcmp(ss.trial_tag, o->msg.ota_id)) { /* a restart mid-trial */
        efc_log(EFC_LOG_WARN, MOD, "ota=%s: the agent restarted during its health check; "
                "checking again", o->msg.ota_id);
        ota_health(a);
        return;
    }
    if (ss.trial) { /* another directive's trial, orphaned: it cannot be judged */
        efc_slots_rollback(a->slots);
        efc_log(EFC_LOG_WARN, MOD, "ota: rolled back the orphaned trial %s", ss.trial_tag);
    }
    if (ss.has_active && !strcmp(ss.active.sha256, hex) && ss.active.version == o->man.version) {
        ota_finish(a, EFC_PROTO_OTA_INSTALLED, "ALREADY: this install is active", NULL);
        return;
    }
    /* Fetch the artifact the manifest names, through the job machinery. */
    struct cur_job *c = &a->cur;
    memset(c, 0, sizeof(*c));
    c->active = 1;
    c->is_ota = 1;
    c->job.version = EFC_PROTO_VERSION;
    snprintf(c->job.job_id, sizeof(c->job.job_id), "%s", o->msg.ota_id);
    snprintf(c->job.device_id, sizeof(c->job.device_id), "%s", a->o.id);
    snprintf(c->job.model_sha256, sizeof(c->job.model_sha256), "%s", hex);
    snprintf(c->job.base_sha256, sizeof(c->job.base_sha256), "%s", hex);
    c->job.model_bytes = c->job.base_bytes = o->man.artifact_bytes;
    snprintf(c->job.url, sizeof(c->job.url), "%s", o->msg.url);
    c->job.deadline_ms = o->msg.deadline_ms;
    o->phase = OTA_FETCH;
    efc_log(EFC_LOG_INFO, MOD, "ota=%s rollout=%s install %s version %llu: manifest verified",
            o->msg.ota_id, o->msg.rollout_id, o->man.policy, (unsigned long long)o->man.version);
    publish_status(a, 1, 1);
    if (start_stage(a))
        c->active = 0;
}

static void on_ota(struct agent *a, const void *payload, size_t len)
{
    struct efc_proto_ota *m = efc_malloc(sizeof(*m));
    enum efc_agent_job_phase ph;

    if (!m)
        return;
    if (efc_proto_ota_decode(payload, len, m) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed OTA directive: %s", efc_err_detail());
        goto out;
    }
    if (strcmp(m->device_id, a->o.id)) {
        efc_log(EFC_LOG_WARN, MOD, "dropped ota=%s for device %s", m->ota_id, m->device_id);
        goto out;
    }
    if (a->ota.active && !strcmp(a->ota.msg.ota_id, m->ota_id))
        goto out; /* a resend of the running one */
    for (int i = 0; i < a->n_ota_queue; i++)
        if (!strcmp(a->ota_queue[i].ota_id, m->ota_id))
            goto out;
    if (efc_agent_journal_get(a->state, m->ota_id, &ph) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped ota=%s: journal: %s", m->ota_id, efc_err_detail());
        goto out;
    }
    if (ph == EFC_AGENT_JOB_ACKED)
        goto out;
    if (ph == EFC_AGENT_JOB_DONE) {
        struct one_entry e = {a, m->ota_id, 0};
        efc_agent_outbox_each(a->state, resend_one_cb, &e);
        goto out;
    }
    /* NEW, or RUNNING when a restart cut it short: an install is idempotent (the slots
     * decide what is left to do), so it runs (again). */
    if (a->n_ota_queue >= OTA_QUEUE_MAX) {
        efc_log(EFC_LOG_WARN, MOD, "ota=%s dropped: queue full (%d)", m->ota_id, OTA_QUEUE_MAX);
        goto out;
    }
    a->ota_queue[a->n_ota_queue++] = *m;
    efc_log(EFC_LOG_INFO, MOD, "ota=%s rollout=%s %s queued", m->ota_id, m->rollout_id,
            efc_proto_ota_action_str(m->action));
out:
    efc_free(m);
}

/* Remove the leftovers of atomic writes a kill interrupted ("<name>.tmp.<pid>" of
 * efc_fs_write_atomic and fetch_url) in dir: they are never complete, and each can be a
 * model's size. Only called while this agent holds the slots lock (one agent per dir). */
static void clean_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[PATH_MAX_];
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (!strstr(e->d_name, ".tmp.") ||
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path))
            continue;
        if (unlink(path) == 0)
            efc_log(EFC_LOG_INFO, MOD, "removed %s (an interrupted write)", path);
    }
    closedir(d);
}

/* At start-up: open the slots, load the trusted keys; a trial cut short by a restart is
 * resumed from the saved directive (or rolled back if there is none). */
static int ota_setup(struct agent *a)
{
    struct efc_slots_status ss;
    enum efc_status st;

    if ((st = efc_slots_open(a->o.state_dir, &a->slots))) {
        /* Jobs still run; OTA directives are refused until an operator looks (resetting the
         * state would reset the anti-rollback counter). */
        efc_log(EFC_LOG_ERROR, MOD, "OTA disabled: slots in %s/ota: %s %s", a->o.state_dir,
                efc_status_str(st), efc_err_detail());
        a->slots = NULL;
    }
    snprintf(a->ota_file, sizeof(a->ota_file), "%s/ota-directive.json", a->o.state_dir);
    if (a->o.trust_keys) {
        char list[2048], *save = NULL;
        snprintf(list, sizeof(list), "%s", a->o.trust_keys);
        if (efc_manifest_keys_new(&a->keys) != EFC_OK)
            return -1;
        for (char *p = list, *comma; p && *p; p = save) {
            char id[EFC_MANIFEST_KEY_ID_HEX + 1];
            comma = strchr(p, ',');
            save = comma ? comma + 1 : NULL;
            if (comma)
                *comma = '\0';
            if (efc_manifest_keys_add_file(a->keys, p, id) != EFC_OK) {
                efc_log(EFC_LOG_ERROR, MOD, "--trust-keys %s: %s", p, efc_err_detail());
                return -1;
            }
            efc_log(EFC_LOG_INFO, MOD, "OTA: trusting key %s (%s)", id, p);
        }
    }
    if (a->o.revoked_keys) {
        snprintf(a->revoked_buf, sizeof(a->revoked_buf), "%s", a->o.revoked_keys);
        for (char *p = a->revoked_buf; p && *p && a->n_revoked < REVOKED_MAX;) {
            char *comma = strchr(p, ',');
            a->revoked[a->n_revoked++] = p;
            if (!comma)
                break;
            *comma = '\0';
            p = comma + 1;
        }
    }
    if (!a->slots)
        return 0;
    clean_tmp(a->o.state_dir);
    clean_tmp(a->art_dir);
    if (efc_slots_status(a->slots, &ss) != EFC_OK)
        return -1;
    if (!ss.trial) { /* a prepared model or golden output without a trial is stale */
        char p[PATH_MAX_];
        snprintf(p, sizeof(p), "%s/ota-prepared.efm", a->o.state_dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/ota-golden.bin", a->o.state_dir);
        unlink(p);
    }
    if (ss.fell_back)
        efc_log(EFC_LOG_ERROR, MOD, "OTA: slot %c failed its digests; fell back",
                ss.fell_back_from);
    if (ss.trial) {
        void *buf = NULL;
        size_t len = 0;
        struct efc_proto_ota *m = &a->ota_queue[0];
        if (efc_fs_read_all(a->ota_file, EFC_PROTO_MSG_MAX, &buf, &len) == EFC_OK &&
            efc_proto_ota_decode(buf, len, m) == EFC_OK && !strcmp(m->ota_id, ss.trial_tag)) {
            a->n_ota_queue = 1;
            efc_log(EFC_LOG_WARN, MOD, "ota=%s: restarted during its trial; resuming",
                    m->ota_id);
        } else {
            efc_log(EFC_LOG_WARN, MOD, "OTA: trial %s without its directive: rolling back",
                    ss.trial_tag);
            efc_slots_rollback(a->slots);
        }
        efc_free(buf);
    }
    ota_status_fill(a);
    if (a->status.active_model[0])
        efc_log(EFC_LOG_INFO, MOD, "OTA: active %s version %llu (%.16s)",
                a->status.active_policy, (unsigned long long)a->status.active_version,
                a->status.active_model);
    return 0;
}

/* Advance the job machinery: start the next queued job, expire a stalled fetch, fail a
 * fetch that outlived its deadline, run a job whose artifacts are ready. */
static void step_jobs(struct agent *a)
{
    struct cur_job *c = &a->cur;
    if (c->sb || a->ota.sb)
        return; /* evaluating: poll_current / poll_ota */
    if (!c->active && !a->ota.active && a->n_ota_queue > 0) {
        ota_start(a); /* OTA first: it changes what the device runs */
        return;
    }
    if (!c->active && !a->ota.active && a->n_queue > 0) {
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
    /* busy: a job or an OTA step may already run (a trial resumed at start-up) */
    publish_status(a, 1, a->cur.active || a->cur.sb || a->ota.active || a->ota.sb);
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
    else if (!strcmp(topic, a->t_ota))
        on_ota(a, payload, len);
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
    if (!strncmp(job_id, EFC_PROTO_OTA_PREFIX, strlen(EFC_PROTO_OTA_PREFIX)))
        efc_log(EFC_LOG_WARN, MOD, "ota=%s was interrupted by a restart; it runs again when "
                "the coordinator resends it (an install is idempotent)", job_id);
    else
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
        efc_proto_topic(p, id, "chunk/req", a->t_req, TOPIC_MAX) ||
        efc_proto_topic(p, id, "ota", a->t_ota, TOPIC_MAX) ||
        efc_proto_topic(p, id, "ota/report", a->t_ota_report, TOPIC_MAX))
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
    if (ota_setup(a))
        return -1;
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
        efc_mqtt_subscribe(a->mqtt, a->t_ota, 1) ||
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
    efc_slots_close(a->slots);
    efc_manifest_keys_free(a->keys);
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
        } else if (a.ota.sb) { /* the same for an OTA step */
            poll_ota(&a, LOOP_MS);
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
    if (a.ota.sb) { /* a trial stays on disk: the next start resumes or rolls it back */
        efc_log(EFC_LOG_INFO, MOD, "ota=%s: stopping; its step ends now", a.ota.msg.ota_id);
        efc_agent_sandbox_kill(a.ota.sb);
        a.ota.sb = NULL;
    }
    efc_log(EFC_LOG_INFO, MOD, "device=%s stopping", a.o.id);
out:
    teardown(&a);
    efc_config_free(cfg);
    return rc;
}
