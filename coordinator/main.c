/* main.c — the efc-coordinator program: runs one fleet round over MQTT (docs/coordinator.md
 * "efc-coordinator program").
 *
 * One thread owns everything (STYLE.md 2.6): the MQTT client (proto/mqtt.h, loop called from
 * here) and the SQLite store (coordinator/store.h), which holds every piece of round state, so
 * a restarted coordinator continues a round where it stopped. Each loop iteration: network I/O
 * and callbacks (statuses -> devices, chunk requests -> artifact chunks, results -> store +
 * ack), then overdue jobs expire, then every idle online device gets its next job. The round
 * ends when no class has pending or assigned work it can still make progress on (or at
 * --timeout); the selection is then computed, stored and printed.
 * Subcommands: `round` (run or resume a round) and `report` (selection of a stored round,
 * no broker).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_log.h"
#include "common/efc_parse.h"
#include "common/efc_policy.h"
#include "common/efc_sha256.h"
#include "common/efc_status.h"
#include "common/efc_time.h"
#include "coordinator/select.h"
#include "coordinator/store.h"
#include "proto/chunk.h"
#include "proto/mqtt.h"
#include "proto/proto.h"

#define MOD "coord"
#define TOPIC_MAX 256
#define PATH_MAX_ 4096
#define MAX_DEVICES 1024
#define ART_MAX (256u << 20) /* base model size cap */
#define LOOP_MS 50

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

struct opts {
    const char *broker, *db, *base, *grid, *report, *prefix, *round_id;
    struct efc_coord_sla sla;
    enum efc_coord_objective objective;
    int64_t per_class, calib, eval, batch, runs, min_devices, max_attempts;
    int64_t timeout_s, job_timeout_s, mem_limit;
};

/* A device seen on the broker during this run, and the job last published to it. */
struct dev {
    char id[EFC_PROTO_ID_MAX];
    char sent_job[EFC_PROTO_ID_MAX];
    int online; /* last status said online (for logging transitions only) */
};

struct coord {
    struct opts o;
    struct efc_coord_store *store;
    struct efc_mqtt *m;
    char round_id[EFC_PROTO_ID_MAX];
    char base_sha[EFC_PROTO_SHA256_HEX];
    uint64_t base_bytes;
    char base_path[PATH_MAX_];
    struct dev *devs;
    size_t n_devs;
    int64_t n_results, n_duplicates, n_rejected;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: efc-coordinator --broker mqtt://HOST:PORT --db FILE round --base MODEL.efm\n"
            "           --grid \"fp32;int8(calib=percentile,weights=channel);...\"\n"
            "           (--sla-drop D | --sla-acc A) [--objective bytes|p50] [--per-class K]\n"
            "           [--calib N] [--eval N] [--batch N] [--runs N] [--timeout S]\n"
            "           [--job-timeout S] [--min-devices N] [--max-attempts N]\n"
            "           [--round-id ID] [--report out.html] [--prefix efc/v1]\n"
            "       efc-coordinator --db FILE report --round-id ID [--report out.html]\n"
            "  round   run (or resume) a round: jobs to the agents over MQTT, results into the\n"
            "          store, then the per-class selection table (and HTML report)\n"
            "  report  the selection of a stored round (no broker), with job/result counts\n"
            "  --round-id    default: derived from the base model digest, grid and K, so a\n"
            "                restarted coordinator resumes the same round\n"
            "  --min-devices wait for this many devices before a round can end (default 1)\n");
}

static int parse_int(const char *v, const char *what, int64_t min, int64_t max, int64_t *out)
{
    if (efc_parse_i64(v, min, max, what, out) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
        return -1;
    }
    return 0;
}

static int parse_args(struct opts *o, int argc, char **argv, const char **cmd)
{
    int sla_set = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        if (!strcmp(a, "round") || !strcmp(a, "report")) {
            *cmd = a;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "efc-coordinator: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--broker"))
            o->broker = v;
        else if (!strcmp(a, "--db"))
            o->db = v;
        else if (!strcmp(a, "--base"))
            o->base = v;
        else if (!strcmp(a, "--grid"))
            o->grid = v;
        else if (!strcmp(a, "--report"))
            o->report = v;
        else if (!strcmp(a, "--prefix"))
            o->prefix = v;
        else if (!strcmp(a, "--round-id"))
            o->round_id = v;
        else if (!strcmp(a, "--sla-drop") || !strcmp(a, "--sla-acc")) {
            if (efc_parse_f64(v, 0.0, 1.0, a, &d) != EFC_OK) {
                fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
                return -1;
            }
            o->sla.kind =
                !strcmp(a, "--sla-drop") ? EFC_COORD_SLA_MAX_DROP : EFC_COORD_SLA_ABSOLUTE;
            o->sla.value = d;
            sla_set = 1;
        } else if (!strcmp(a, "--objective")) {
            if (!strcmp(v, "bytes"))
                o->objective = EFC_COORD_OBJ_BYTES;
            else if (!strcmp(v, "p50"))
                o->objective = EFC_COORD_OBJ_P50;
            else {
                fprintf(stderr, "efc-coordinator: --objective: bytes or p50\n");
                return -1;
            }
        } else if (!strcmp(a, "--per-class")) {
            if (parse_int(v, a, 1, 1000, &o->per_class))
                return -1;
        } else if (!strcmp(a, "--calib")) {
            if (parse_int(v, a, 0, 10000000, &o->calib))
                return -1;
        } else if (!strcmp(a, "--eval")) {
            if (parse_int(v, a, 1, 10000000, &o->eval))
                return -1;
        } else if (!strcmp(a, "--batch")) {
            if (parse_int(v, a, 1, 4096, &o->batch))
                return -1;
        } else if (!strcmp(a, "--runs")) {
            if (parse_int(v, a, 1, 100000, &o->runs))
                return -1;
        } else if (!strcmp(a, "--timeout")) {
            if (parse_int(v, a, 1, 30 * 86400, &o->timeout_s))
                return -1;
        } else if (!strcmp(a, "--job-timeout")) {
            if (parse_int(v, a, 1, 86400, &o->job_timeout_s))
                return -1;
        } else if (!strcmp(a, "--min-devices")) {
            if (parse_int(v, a, 1, MAX_DEVICES, &o->min_devices))
                return -1;
        } else if (!strcmp(a, "--max-attempts")) {
            if (parse_int(v, a, 1, 100, &o->max_attempts))
                return -1;
        } else {
            fprintf(stderr, "efc-coordinator: unknown option %s\n", a);
            return -1;
        }
    }
    if (!*cmd || !o->db) {
        fprintf(stderr, "efc-coordinator: a subcommand (round|report) and --db are required\n");
        return -1;
    }
    if (!strcmp(*cmd, "report")) {
        if (!o->round_id) {
            fprintf(stderr, "efc-coordinator: report needs --round-id\n");
            return -1;
        }
        return 0;
    }
    if (!o->broker || !o->base || !o->grid || !sla_set) {
        fprintf(stderr, "efc-coordinator: round needs --broker, --base, --grid and an SLA "
                        "(--sla-drop or --sla-acc)\n");
        return -1;
    }
    return 0;
}

/* Split "p1;p2;..." into r->policies, each validated by the policy grammar. */
static int parse_grid(const char *grid, struct efc_coord_round *r)
{
    struct efc_policy *pol = efc_malloc(sizeof(*pol));
    const char *p = grid;
    int rc = 0;
    if (!pol)
        return -1;
    r->n_policies = 0;
    while (*p && !rc) {
        const char *e = strchr(p, ';');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n) {
            char *dst;
            if (r->n_policies >= EFC_COORD_MAX_POLICIES || n >= EFC_PROTO_POLICY_MAX) {
                fprintf(stderr, "efc-coordinator: --grid: too many or too long policies\n");
                rc = -1;
                break;
            }
            dst = r->policies[r->n_policies];
            memcpy(dst, p, n);
            dst[n] = 0;
            if (efc_policy_parse(dst, pol) != EFC_OK) {
                fprintf(stderr, "efc-coordinator: --grid: \"%s\": %s\n", dst, efc_err_detail());
                rc = -1;
                break;
            }
            for (int k = 0; k < r->n_policies; k++)
                if (!strcmp(r->policies[k], dst)) {
                    fprintf(stderr, "efc-coordinator: --grid: \"%s\" twice\n", dst);
                    rc = -1;
                }
            r->n_policies++;
        }
        p = e ? e + 1 : p + strlen(p);
    }
    if (!rc && r->n_policies == 0) {
        fprintf(stderr, "efc-coordinator: --grid: no policy\n");
        rc = -1;
    }
    efc_free(pol);
    return rc;
}

static int load_base(struct coord *c)
{
    void *buf = NULL;
    size_t len = 0;
    uint8_t d[EFC_SHA256_BYTES];
    if (efc_fs_read_all(c->o.base, ART_MAX, &buf, &len) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: cannot read %s: %s\n", c->o.base, efc_err_detail());
        return -1;
    }
    efc_sha256(buf, len, d);
    efc_sha256_hex(d, c->base_sha);
    efc_free(buf);
    c->base_bytes = len;
    if (!realpath(c->o.base, c->base_path))
        snprintf(c->base_path, sizeof(c->base_path), "%s", c->o.base);
    return 0;
}

static struct dev *dev_find(struct coord *c, const char *id, int add)
{
    for (size_t i = 0; i < c->n_devs; i++)
        if (!strcmp(c->devs[i].id, id))
            return &c->devs[i];
    if (!add || c->n_devs >= MAX_DEVICES)
        return NULL;
    struct dev *d = &c->devs[c->n_devs++];
    snprintf(d->id, sizeof(d->id), "%s", id);
    d->sent_job[0] = 0;
    d->online = 0;
    return d;
}

static void on_status(struct coord *c, const char *dev, const void *payload, size_t len)
{
    struct efc_proto_status st;
    int32_t n = 0, n_rel = 0;
    if (len == 0)
        return; /* a deleted retained status */
    if (efc_proto_status_decode(payload, len, dev, &st) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed status of %s: %s", dev, efc_err_detail());
        c->n_rejected++;
        return;
    }
    if (efc_coord_store_device_upsert(c->store, &st, now_ms(), &n_rel) != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "store device %s: %s", dev, efc_err_detail());
        return;
    }
    struct dev *d = dev_find(c, dev, st.online);
    if (!st.online) {
        if (d) {
            d->sent_job[0] = 0;
            d->online = 0;
        }
        if (n_rel > 0)
            efc_log(EFC_LOG_WARN, MOD,
                    "device=%s class=%s offline: %d job(s) released for reassignment", dev,
                    st.hw_class, n_rel);
        else
            efc_log(EFC_LOG_INFO, MOD, "device=%s class=%s offline", dev, st.hw_class);
        return;
    }
    if (!d) {
        efc_log(EFC_LOG_WARN, MOD, "device=%s ignored: more than %d devices", dev, MAX_DEVICES);
        return;
    }
    if (efc_coord_store_round_plan_class(c->store, c->round_id, st.hw_class, &n) != EFC_OK)
        efc_log(EFC_LOG_ERROR, MOD, "plan class %s: %s", st.hw_class, efc_err_detail());
    if (!d->online || n > 0)
        efc_log(EFC_LOG_INFO, MOD, "device=%s class=%s isa=%s online%s", dev, st.hw_class,
                st.isa, n > 0 ? " (new class: jobs planned)" : "");
    d->online = 1;
}

static void on_chunk_req(struct coord *c, const char *dev, const void *payload, size_t len)
{
    struct efc_chunk_req req;
    char topic[TOPIC_MAX];
    void *out = NULL;
    size_t out_len = 0;
    if (efc_chunk_req_decode(payload, len, &req) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed chunk request of %s: %s", dev,
                efc_err_detail());
        c->n_rejected++;
        return;
    }
    if (strcmp(req.sha256, c->base_sha) != 0) {
        efc_log(EFC_LOG_WARN, MOD, "device=%s asked for unknown artifact %.16s", dev, req.sha256);
        return;
    }
    if (efc_chunk_serve(c->base_path, c->base_sha, &req, &out, &out_len) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "chunk for %s refused: %s", dev, efc_err_detail());
        return;
    }
    if (efc_chunk_topic(c->o.prefix, c->base_sha, dev, topic, sizeof(topic)) == EFC_OK)
        efc_mqtt_publish(c->m, topic, out, out_len, 1, 0, 0);
    efc_free(out);
}

static void send_ack(struct coord *c, const char *dev, const char *job_id)
{
    struct efc_proto_ack ack = {.version = EFC_PROTO_VERSION};
    char topic[TOPIC_MAX];
    char *buf = NULL;
    snprintf(ack.job_id, sizeof(ack.job_id), "%s", job_id);
    snprintf(ack.device_id, sizeof(ack.device_id), "%s", dev);
    if (efc_proto_topic(c->o.prefix, dev, "ack", topic, sizeof(topic)) != EFC_OK ||
        efc_proto_ack_encode(&ack, &buf) != EFC_OK)
        return;
    /* Lost while disconnected: the agent resends the result, which is acked again. */
    efc_mqtt_publish(c->m, topic, buf, strlen(buf), 1, 0, 0);
    efc_free(buf);
}

static void on_result(struct coord *c, const char *dev, const void *payload, size_t len)
{
    struct efc_proto_result r;
    int dup = 0;
    enum efc_status e;
    if (efc_proto_result_decode(payload, len, dev, &r) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped malformed result of %s: %s", dev, efc_err_detail());
        c->n_rejected++;
        return;
    }
    e = efc_coord_store_result_put(c->store, &r, now_ms(), &dup);
    if (e != EFC_OK) {
        /* Not committed: no ack (an unknown job of another coordinator, a bad round). */
        efc_log(EFC_LOG_WARN, MOD, "result job=%s device=%s not stored: %s", r.job_id, dev,
                efc_err_detail());
        c->n_rejected++;
        return;
    }
    struct dev *d = dev_find(c, dev, 0);
    if (d && !strcmp(d->sent_job, r.job_id))
        d->sent_job[0] = 0;
    if (dup) {
        c->n_duplicates++;
        efc_log(EFC_LOG_INFO, MOD, "result job=%s device=%s duplicate, acked again", r.job_id,
                dev);
    } else {
        c->n_results++;
        efc_log(EFC_LOG_INFO, MOD, "result job=%s device=%s policy=%s %s correct=%d/%d p50=%.3fms",
                r.job_id, dev, r.policy, r.status == EFC_PROTO_RESULT_OK ? "ok" : "failed",
                r.correct, r.eval_total, r.p50_ms);
    }
    send_ack(c, dev, r.job_id);
}

static void on_message(void *ctx, const char *topic, const void *payload, size_t len, int retained)
{
    struct coord *c = ctx;
    char dev[EFC_PROTO_ID_MAX], kind[16];
    (void)retained;
    if (efc_proto_topic_parse(c->o.prefix, topic, dev, sizeof(dev), kind, sizeof(kind)) !=
        EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "dropped message on topic %.120s: %s", topic, efc_err_detail());
        c->n_rejected++;
        return;
    }
    if (!strcmp(kind, "status"))
        on_status(c, dev, payload, len);
    else if (!strcmp(kind, "result"))
        on_result(c, dev, payload, len);
    else if (!strcmp(kind, "chunk/req"))
        on_chunk_req(c, dev, payload, len);
}

static void publish_job(struct coord *c, struct dev *d, const struct efc_coord_job *job)
{
    struct efc_proto_job j = {.version = EFC_PROTO_VERSION};
    char topic[TOPIC_MAX];
    char *buf = NULL;
    int64_t left_ms = job->deadline_ms - now_ms();
    snprintf(j.job_id, sizeof(j.job_id), "%s", job->job_id);
    snprintf(j.round_id, sizeof(j.round_id), "%s", job->round_id);
    snprintf(j.device_id, sizeof(j.device_id), "%s", d->id);
    snprintf(j.policy, sizeof(j.policy), "%s", job->policy);
    snprintf(j.model_sha256, sizeof(j.model_sha256), "%s", c->base_sha);
    j.model_bytes = c->base_bytes;
    snprintf(j.base_sha256, sizeof(j.base_sha256), "%s", c->base_sha);
    j.base_bytes = c->base_bytes;
    j.calib_samples = (int32_t)c->o.calib;
    j.eval_samples = (int32_t)c->o.eval;
    j.batch = (int32_t)c->o.batch;
    j.timed_runs = (int32_t)c->o.runs;
    j.seed = 1; /* the same sample split on every device and for every policy (paired) */
    j.deadline_ms = job->deadline_ms;
    j.mem_limit_bytes = c->o.mem_limit;
    if (left_ms < 1000)
        left_ms = 1000;
    if (efc_proto_topic(c->o.prefix, d->id, "job", topic, sizeof(topic)) != EFC_OK ||
        efc_proto_job_encode(&j, &buf) != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "job %s: %s", job->job_id, efc_err_detail());
        return;
    }
    if (efc_mqtt_publish(c->m, topic, buf, strlen(buf), 1, 0, (uint32_t)(left_ms / 1000)) ==
        EFC_OK) {
        snprintf(d->sent_job, sizeof(d->sent_job), "%s", job->job_id);
        efc_log(EFC_LOG_INFO, MOD, "job=%s policy=%s -> device=%s (attempt %d)", job->job_id,
                job->policy, d->id, job->attempts);
    }
    efc_free(buf);
}

/* Give every idle online device its next job; re-send a job assigned before a restart. */
static void schedule(struct coord *c)
{
    int32_t n_exp = 0;
    if (!efc_mqtt_connected(c->m))
        return;
    if (efc_coord_store_jobs_expire(c->store, now_ms(), &n_exp) == EFC_OK && n_exp > 0)
        efc_log(EFC_LOG_WARN, MOD, "%d overdue job(s) released for reassignment", n_exp);
    for (size_t i = 0; i < c->n_devs; i++) {
        struct dev *d = &c->devs[i];
        struct efc_coord_job job;
        int64_t deadline = now_ms() + c->o.job_timeout_s * 1000;
        enum efc_status e = efc_coord_store_job_assign(c->store, d->id, deadline, &job);
        if (e == EFC_OK || (e == EFC_EBUSY && strcmp(d->sent_job, job.job_id) != 0)) {
            if (strcmp(job.round_id, c->round_id) != 0)
                efc_log(EFC_LOG_WARN, MOD, "job=%s belongs to round %s (another round)",
                        job.job_id, job.round_id);
            publish_job(c, d, &job);
        } else if (e != EFC_OK && e != EFC_EBUSY && e != EFC_ENOTFOUND) {
            efc_log(EFC_LOG_ERROR, MOD, "assign to %s: %s", d->id, efc_err_detail());
        }
    }
}

/* 1 when no class can make progress: every class has no pending or assigned job, or has only
 * pending jobs that no live device of it can take (no live devices, or fewer than K). */
static int round_settled(struct coord *c)
{
    struct efc_coord_class_progress *p = NULL;
    size_t n = 0;
    int settled = 1;
    if ((int64_t)c->n_devs < c->o.min_devices || !efc_mqtt_connected(c->m))
        return 0;
    if (efc_coord_store_round_progress(c->store, c->round_id, &p, &n) != EFC_OK)
        return 0;
    if (n == 0)
        settled = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i].assigned > 0)
            settled = 0;
    efc_free(p);
    return settled;
}

static void print_counts(struct efc_coord_store *s, const char *round_id,
                         const struct efc_proto_result *res, size_t n_res)
{
    struct efc_coord_class_progress *p = NULL;
    size_t n = 0;
    int64_t jobs = 0, done = 0, failed = 0, expired = 0, pending = 0, distinct = 0;
    if (efc_coord_store_round_progress(s, round_id, &p, &n) == EFC_OK) {
        for (size_t i = 0; i < n; i++) {
            jobs += p[i].pending + p[i].assigned + p[i].done + p[i].failed + p[i].expired;
            done += p[i].done;
            failed += p[i].failed;
            expired += p[i].expired;
            pending += p[i].pending + p[i].assigned;
            if (p[i].pending > 0)
                printf("class %s: %d job(s) not run: %s\n", p[i].hw_class, p[i].pending,
                       p[i].live_devices == 0 ? "no live devices"
                                              : "not enough distinct live devices");
        }
        efc_free(p);
    }
    for (size_t i = 0; i < n_res; i++) {
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = !strcmp(res[i].job_id, res[k].job_id);
        distinct += !seen;
    }
    printf("round %s: jobs=%lld done=%lld failed=%lld expired=%lld unfinished=%lld "
           "results=%zu distinct_jobs=%lld\n",
           round_id, (long long)jobs, (long long)done, (long long)failed, (long long)expired,
           (long long)pending, n_res, (long long)distinct);
}

/* Selection over the stored results: stored per class, table printed, HTML written. */
static int select_and_report(struct efc_coord_store *s, const char *round_id,
                             const struct efc_coord_round *r, const char *html)
{
    struct efc_proto_result *res = NULL;
    size_t n_res = 0;
    struct efc_coord_selection *sel = NULL;
    struct efc_coord_select_opts so = {.sla = r->sla, .objective = r->objective};
    char *table = NULL;
    int rc = 1;
    if (efc_coord_store_results_list(s, round_id, &res, &n_res) != EFC_OK ||
        efc_coord_select(res, n_res, &so, &sel) != EFC_OK ||
        efc_coord_report_table(sel, &table) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: selection: %s\n", efc_err_detail());
        goto out;
    }
    for (size_t i = 0; i < sel->n_classes; i++) {
        const struct efc_coord_class_selection *cs = &sel->classes[i];
        char *js = NULL;
        if (efc_coord_report_class_json(sel, i, &js) != EFC_OK ||
            efc_coord_store_selection_put(s, round_id, cs->hw_class,
                                          cs->chosen >= 0 ? cs->cands[cs->chosen].policy : NULL,
                                          js) != EFC_OK)
            fprintf(stderr, "efc-coordinator: storing selection of %s: %s\n", cs->hw_class,
                    efc_err_detail());
        efc_free(js);
    }
    print_counts(s, round_id, res, n_res);
    fputs(table, stdout);
    if (html) {
        if (efc_coord_report_html_write(sel, round_id, html) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: report %s: %s\n", html, efc_err_detail());
            goto out;
        }
        printf("report: %s\n", html);
    }
    rc = 0;
out:
    fflush(stdout);
    efc_free(table);
    efc_coord_selection_free(sel);
    efc_free(res);
    return rc;
}

/* Create the round, or resume the running round of the same id. *done: already finished. */
static int round_open(struct coord *c, struct efc_coord_round *r, int *done)
{
    struct efc_coord_round old;
    enum efc_status e;
    *done = 0;
    memset(r, 0, sizeof(*r));
    if (parse_grid(c->o.grid, r))
        return -1;
    if (c->o.round_id) {
        snprintf(c->round_id, sizeof(c->round_id), "%s", c->o.round_id);
    } else {
        struct efc_sha256 h;
        uint8_t d[EFC_SHA256_BYTES];
        char hex[EFC_SHA256_HEX_BYTES], k[32];
        efc_sha256_init(&h);
        efc_sha256_update(&h, c->base_sha, strlen(c->base_sha));
        for (int i = 0; i < r->n_policies; i++)
            efc_sha256_update(&h, r->policies[i], strlen(r->policies[i]) + 1);
        snprintf(k, sizeof(k), "K=%lld", (long long)c->o.per_class);
        efc_sha256_update(&h, k, strlen(k));
        efc_sha256_final(&h, d);
        efc_sha256_hex(d, hex);
        snprintf(c->round_id, sizeof(c->round_id), "r-%.16s", hex);
    }
    if (!efc_proto_id_valid(c->round_id)) {
        fprintf(stderr, "efc-coordinator: invalid round id \"%s\"\n", c->round_id);
        return -1;
    }
    snprintf(r->round_id, sizeof(r->round_id), "%s", c->round_id);
    snprintf(r->base_sha256, sizeof(r->base_sha256), "%s", c->base_sha);
    r->sla = c->o.sla;
    r->objective = c->o.objective;
    r->devices_per_class = (int32_t)c->o.per_class;
    r->max_attempts = (int32_t)c->o.max_attempts;
    r->state = EFC_COORD_ROUND_RUNNING;
    r->created_ms = now_ms();
    e = efc_coord_store_round_create(c->store, r);
    if (e == EFC_OK) {
        efc_log(EFC_LOG_INFO, MOD, "round=%s created: %d policies, K=%d, base=%.16s",
                c->round_id, r->n_policies, r->devices_per_class, c->base_sha);
        return 0;
    }
    if (e != EFC_EEXIST) {
        fprintf(stderr, "efc-coordinator: round: %s\n", efc_err_detail());
        return -1;
    }
    if (efc_coord_store_round_get(c->store, c->round_id, &old) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: round: %s\n", efc_err_detail());
        return -1;
    }
    if (strcmp(old.base_sha256, c->base_sha) != 0) {
        fprintf(stderr, "efc-coordinator: round %s exists with another base model\n",
                c->round_id);
        return -1;
    }
    *r = old; /* the stored spec wins: a resumed round keeps its grid and SLA */
    *done = old.state == EFC_COORD_ROUND_DONE;
    efc_log(EFC_LOG_INFO, MOD, "round=%s %s", c->round_id,
            *done ? "already finished: reporting it" : "resumed");
    return 0;
}

static int run_round(struct coord *c)
{
    struct efc_coord_round r;
    char client_id[96];
    int done = 0, rc = 1;
    char filter[TOPIC_MAX];
    static const char *const kinds[] = {"status", "result", "chunk/req"};

    if (load_base(c))
        return 1;
    if (efc_coord_store_model_put(c->store, c->base_sha, c->base_path, c->base_bytes,
                                  EFC_COORD_MODEL_BASE) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: model: %s\n", efc_err_detail());
        return 1;
    }
    if (round_open(c, &r, &done))
        return 1;
    if (done)
        return select_and_report(c->store, c->round_id, &r, c->o.report);
    c->devs = efc_calloc(MAX_DEVICES, sizeof(*c->devs));
    if (!c->devs)
        return 1;
    snprintf(client_id, sizeof(client_id), "efc-coordinator-%d", (int)getpid());
    struct efc_mqtt_opts mo = {.url = c->o.broker,
                               .client_id = client_id,
                               .on_message = on_message,
                               .ctx = c,
                               .clean_start = 1};
    if (efc_mqtt_new(&mo, &c->m) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: mqtt: %s\n", efc_err_detail());
        goto out;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        int w = snprintf(filter, sizeof(filter), "%s/dev/+/%s", c->o.prefix, kinds[i]);
        if (w < 0 || (size_t)w >= sizeof(filter) ||
            efc_mqtt_subscribe(c->m, filter, 1) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: subscribe: %s\n", efc_err_detail());
            goto out;
        }
    }
    if (efc_mqtt_connect(c->m) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: mqtt: %s\n", efc_err_detail());
        goto out;
    }
    uint64_t until = efc_time_ns() + (uint64_t)c->o.timeout_s * 1000000000ull;
    int settled = 0;
    while (!g_stop && efc_time_ns() < until) {
        efc_mqtt_loop(c->m, LOOP_MS);
        schedule(c);
        if (round_settled(c)) {
            settled = 1;
            break;
        }
    }
    if (g_stop) {
        efc_log(EFC_LOG_WARN, MOD, "round=%s interrupted; it stays open for a restart",
                c->round_id);
        goto out;
    }
    if (!settled)
        printf("round %s: --timeout (%llds) reached; selecting on the results so far\n",
               c->round_id, (long long)c->o.timeout_s);
    /* Keep serving briefly so the acks just published leave the socket. */
    for (int i = 0; i < 4; i++)
        efc_mqtt_loop(c->m, LOOP_MS);
    if (efc_coord_store_round_finish(c->store, c->round_id) != EFC_OK)
        fprintf(stderr, "efc-coordinator: finish: %s\n", efc_err_detail());
    printf("round %s: %lld result(s) stored, %lld duplicate(s), %lld message(s) rejected\n", c->round_id,
           (long long)c->n_results, (long long)c->n_duplicates, (long long)c->n_rejected);
    rc = select_and_report(c->store, c->round_id, &r, c->o.report);
out:
    efc_mqtt_free(c->m);
    c->m = NULL;
    efc_free(c->devs);
    c->devs = NULL;
    return rc;
}

static int run_report(struct coord *c)
{
    struct efc_coord_round r;
    if (efc_coord_store_round_get(c->store, c->o.round_id, &r) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
        return 1;
    }
    return select_and_report(c->store, r.round_id, &r, c->o.report);
}

int main(int argc, char **argv)
{
    static struct coord c;
    const char *cmd = NULL;
    int rc;
    struct sigaction sa;

    c.o.prefix = "efc/v1";
    c.o.objective = EFC_COORD_OBJ_BYTES;
    c.o.per_class = 1;
    c.o.calib = 256;
    c.o.eval = 1000;
    c.o.batch = 16;
    c.o.runs = 20;
    c.o.timeout_s = 3600;
    c.o.job_timeout_s = 120;
    c.o.min_devices = 1;
    c.o.max_attempts = EFC_COORD_MAX_ATTEMPTS_DEFAULT;
    c.o.mem_limit = 1LL << 30;
    if (argc < 2 || parse_args(&c.o, argc, argv, &cmd)) {
        usage(stderr);
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (efc_coord_store_open(c.o.db, &c.store) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: %s: %s\n", c.o.db, efc_err_detail());
        return 1;
    }
    rc = !strcmp(cmd, "round") ? run_round(&c) : run_report(&c);
    efc_coord_store_close(c.store);
    return rc;
}
