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
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_config.h"
#include "compress/candidates.h"
#include "model/artifact.h"
#include "model/efm.h"
#include "onnx/onnx_import.h"
#include "common/efc_log.h"
#include "common/efc_parse.h"
#include "common/efc_policy.h"
#include "common/efc_sha256.h"
#include "common/efc_status.h"
#include "common/efc_time.h"
#include "coordinator/rollout.h"
#include "coordinator/rollout_cmd.h"
#include "coordinator/select.h"
#include "coordinator/store.h"
#include "proto/chunk.h"
#include "proto/mqtt.h"
#include "proto/proto.h"

#define MOD "coord"
#define TOPIC_MAX 256
#define PATH_MAX_ 4096
#define MAX_DEVICES 16384 /* devices one coordinator tracks in a round */
#define DEV_SLOTS (2 * MAX_DEVICES) /* hash index over device ids (power of two) */
#define ART_MAX (256u << 20) /* base model size cap */
#define LOOP_MS 50
#define SETTLE_CHECK_NS 200000000ull
#define FLUSH_MS 5000

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

struct opts {
    const char *broker, *db, *base, *grid, *report, *prefix, *round_id;
    const char *train_data, *cand_dir; /* the training steps of the grid's policies */
    const char *tls_ca, *tls_cert, *tls_key;
    /* rollout / rollback / status (rollout_cmd.h) */
    const char *hw_class, *policy, *sign_key, *waves, *url_base;
    int64_t max_failures, health_runs, report_timeout_s, manifest_days, max_rss;
    double max_acc_drop, max_p99_ratio, min_accuracy, min_agree, max_p99_ms;
    double sla_drop, sla_acc; /* one of them, given: sla */
    int64_t objective_i;      /* index in "bytes|p50" */
    struct efc_coord_sla sla;
    enum efc_coord_objective objective;
    int64_t per_class, calib, eval, batch, runs, min_devices, max_attempts;
    int64_t timeout_s, job_timeout_s, mem_limit;
};

/* The option table (STYLE.md 2.9): --help, --print-config, the config file, EFC_<NAME>. */
#define OPT(f) offsetof(struct opts, f)
static const struct efc_cfg_opt g_opts[] = {
    {"broker", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(broker),
     "MQTT v5 broker, mqtt://host[:port] or mqtts://host[:port] (round, rollout, "
     "rollback)"},
    {"db", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(db), "SQLite store (required)"},
    {"base", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(base),
     "FP32 base model: .efm, or .onnx (imported once into the candidates directory) (round)"},
    {"grid", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(grid),
     "candidate policies, ';'-separated: \"fp32;int8(calib=kl,weights=channel);...\", or "
     "'default', or @FILE (one policy per line) (round)"},
    {"train-data", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(train_data),
     "training data for the policies' training steps (prune, nm, filters, distill, lowrank, "
     "qat), e.g. fashion-mnist"},
    {"candidates", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(cand_dir),
     "cache of candidate models built from the base (default: DB.candidates)"},
    {"sla-drop", EFC_CFG_F64, NULL, 0, 1, NULL, OPT(sla_drop),
     "SLA: max accuracy drop vs fp32, paired (round: this or --sla-acc)"},
    {"sla-acc", EFC_CFG_F64, NULL, 0, 1, NULL, OPT(sla_acc), "SLA: min accuracy, absolute"},
    {"objective", EFC_CFG_ENUM, "bytes", 0, 0, "bytes|p50", OPT(objective_i),
     "minimised among candidates meeting the SLA; ties by the other"},
    {"per-class", EFC_CFG_INT, "1", 1, 1000, NULL, OPT(per_class),
     "K: devices of each class that run each candidate"},
    {"calib", EFC_CFG_INT, "256", 0, 10000000, NULL, OPT(calib),
     "local calibration samples per job"},
    {"eval", EFC_CFG_INT, "1000", 1, 10000000, NULL, OPT(eval),
     "local evaluation samples per job (disjoint from calibration)"},
    {"batch", EFC_CFG_INT, "16", 1, 4096, NULL, OPT(batch),
     "second timed batch size (batch 1 is always timed)"},
    {"runs", EFC_CFG_INT, "20", 1, 100000, NULL, OPT(runs), "timed runs per batch size"},
    {"timeout", EFC_CFG_INT, "3600", 1, 30 * 86400, NULL, OPT(timeout_s),
     "seconds before a round selects on the results it has"},
    {"job-timeout", EFC_CFG_INT, "120", 1, 86400, NULL, OPT(job_timeout_s),
     "seconds a device has for a job before it is reassigned"},
    {"mem-limit", EFC_CFG_INT, "1073741824", 1 << 24, 1LL << 40, NULL, OPT(mem_limit),
     "address-space limit of an evaluation child, bytes"},
    {"min-devices", EFC_CFG_INT, "1", 1, MAX_DEVICES, NULL, OPT(min_devices),
     "devices to wait for before a round can end"},
    {"max-attempts", EFC_CFG_INT, "3", 1, 100, NULL, OPT(max_attempts),
     "assignments of one job before it expires"},
    {"round-id", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(round_id),
     "round id (default: from the base digest, grid and K, so a restart resumes it; "
     "required by report)"},
    {"report", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(report), "write the HTML/SVG report here"},
    {"class", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(hw_class),
     "only this hardware class (rollout, status); the class to roll back (rollback)"},
    {"policy", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(policy),
     "roll out this policy of the round to --class instead of the round's selection"},
    {"sign-key", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(sign_key),
     "private key signing the manifests (rollout; `efc keygen` makes one)"},
    {"waves", EFC_CFG_STR, "1,10%,50%,100%", 0, 0, NULL, OPT(waves),
     "rollout waves: device counts or cumulative shares of the class, the last 100%"},
    {"max-failures", EFC_CFG_INT, "0", 0, 100000, NULL, OPT(max_failures),
     "failed devices a wave tolerates before the rollout halts and the wave rolls back"},
    {"max-acc-drop", EFC_CFG_F64, "0.02", 0, 1, NULL, OPT(max_acc_drop),
     "a device's accuracy may be this far below the round's figure for its class"},
    {"max-p99-ratio", EFC_CFG_F64, "3", 0, 1000, NULL, OPT(max_p99_ratio),
     "a device's p99 may be this many times the round's figure (0: no latency gate)"},
    {"health-runs", EFC_CFG_INT, "100", 1, 1000000, NULL, OPT(health_runs),
     "timed inferences of the device's health check before it commits"},
    {"min-accuracy", EFC_CFG_F64, "-1", -1, 1, NULL, OPT(min_accuracy),
     "device-side accuracy floor (-1: the round's figure minus --max-acc-drop)"},
    {"min-agree", EFC_CFG_F64, "-1", -1, 1, NULL, OPT(min_agree),
     "device-side top-1 agreement floor with the FP32 artifact (-1: none)"},
    {"max-p99-ms", EFC_CFG_F64, "-1", -1, 1e9, NULL, OPT(max_p99_ms),
     "device-side p99 ceiling, ms (-1: the round's figure times --max-p99-ratio)"},
    {"max-rss", EFC_CFG_INT, "0", 0, 1LL << 40, NULL, OPT(max_rss),
     "device-side peak RSS ceiling of the health check, bytes (0: none)"},
    {"report-timeout", EFC_CFG_INT, "600", 1, 86400, NULL, OPT(report_timeout_s),
     "seconds a device has to report an install before it counts as failed"},
    {"manifest-days", EFC_CFG_INT, "30", 1, 3650, NULL, OPT(manifest_days),
     "validity of a signed manifest, days"},
    {"artifact-url", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(url_base),
     "also offer artifacts at URL/<file name> (http(s); the agents fetch with libcurl)"},
    {"prefix", EFC_CFG_STR, "efc/v1", 0, 0, NULL, OPT(prefix), "topic prefix"},
    {"tls-ca", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(tls_ca),
     "CA certificate (PEM) of the broker; with --tls-cert and --tls-key: mutual TLS"},
    {"tls-cert", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(tls_cert),
     "this client's certificate (PEM; its CN is the MQTT user name)"},
    {"tls-key", EFC_CFG_STR, NULL, 0, 0, NULL, OPT(tls_key), "this client's private key (PEM)"},
};
#define N_OPTS (sizeof(g_opts) / sizeof(g_opts[0]))

/* A device seen on the broker during this run, and the job last published to it. */
struct dev {
    char id[EFC_PROTO_ID_MAX];
    char sent_job[EFC_PROTO_ID_MAX];
    int online; /* last status said online */
    int want;   /* may need a job: schedule() asks the store (set on events, not polled) */
};

struct ack_out {
    char dev[EFC_PROTO_ID_MAX], job_id[EFC_PROTO_ID_MAX];
    int is_new; /* a new result (else a duplicate, acked again) */
};
struct job_out {
    size_t dev; /* index in devs */
    struct efc_coord_job job;
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
    int32_t *dev_slot; /* DEV_SLOTS entries: index + 1 into devs, 0 = empty */
    int64_t n_results, n_duplicates, n_rejected;
    uint64_t t_first_result_ns, t_last_result_ns; /* new results stored this run */
    uint64_t t_expire_ns, t_want_all_ns;           /* last expiry sweep, last full schedule */
    /* What one loop pass will publish once its store batch is committed (never before). */
    struct ack_out *acks;
    size_t n_acks, cap_acks;
    struct job_out *jobs;
    size_t n_jobs, cap_jobs;
    /* The artifact each policy's jobs start from: the base, or the candidate its training
     * steps produced (same order as the round's policies). */
    struct art {
        char sha[EFC_PROTO_SHA256_HEX];
        char path[PATH_MAX_];
        uint64_t bytes;
    } arts[EFC_COORD_MAX_POLICIES], base_art;
    int32_t n_arts;
    struct efc_coord_round round; /* the running round's spec */
};

/* Every online device may need a job (jobs were released, or the periodic full pass). */
static void want_all(struct coord *c)
{
    for (size_t i = 0; i < c->n_devs; i++)
        c->devs[i].want = c->devs[i].online;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: efc-coordinator --broker mqtt://HOST:PORT --db FILE round --base MODEL.efm\n"
               "           --grid \"fp32;int8(calib=percentile,weights=channel);...\"\n"
               "           (--sla-drop D | --sla-acc A) [options]\n"
               "       efc-coordinator --db FILE report --round-id ID [--report out.html]\n"
               "  round   run (or resume) a round: jobs to the agents over MQTT, results into the\n"
               "          store, then the per-class selection table (and HTML report)\n"
               "  report  the selection of a stored round (no broker), with job/result counts\n"
               "       efc-coordinator --broker URL --db FILE rollout --round-id ID\n"
               "           --sign-key KEY [--class C [--policy P]] [--waves 1,10%%,50%%,100%%]\n"
               "       efc-coordinator --broker URL --db FILE rollback --class C\n"
               "       efc-coordinator --db FILE status [--class C]\n"
               "  rollout   sign the round's choice per class and roll it out in waves, each\n"
               "            gated on the devices' health reports (docs/ota.md)\n"
               "  rollback  return every device of a class to its previous model\n"
               "  status    what each device runs; each rollout's waves and failures\n\n");
    efc_config_usage(g_opts, N_OPTS, f);
    fprintf(f, "Each option may also come from --config FILE (key = value lines) or EFC_<NAME>\n"
               "(e.g. EFC_JOB_TIMEOUT); the command line wins, then the environment, then the\n"
               "file. --print-config shows the result and where each value came from.\n");
}

/* Options from the table; 0 to run, 1 to exit 0 (help, print-config), -1 on bad usage. */
static int parse_args(struct opts *o, int argc, char **argv, const char **cmd,
                      struct efc_config **cfg)
{
    if (efc_config_load(g_opts, N_OPTS, o, argc, argv, cfg) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
        return -1;
    }
    if (efc_config_help(*cfg)) {
        usage(stdout);
        return 1;
    }
    if (efc_config_print_wanted(*cfg)) {
        efc_config_print(g_opts, N_OPTS, o, *cfg, stdout);
        return 1;
    }
    o->objective = o->objective_i == 1 ? EFC_COORD_OBJ_P50 : EFC_COORD_OBJ_BYTES;
    int drop = efc_config_given(*cfg, "sla-drop"), acc = efc_config_given(*cfg, "sla-acc");
    if (drop && acc) {
        fprintf(stderr, "efc-coordinator: --sla-drop and --sla-acc exclude each other\n");
        return -1;
    }
    o->sla.kind = acc ? EFC_COORD_SLA_ABSOLUTE : EFC_COORD_SLA_MAX_DROP;
    o->sla.value = acc ? o->sla_acc : o->sla_drop;
    *cmd = efc_config_pos(*cfg, 0);
    if (efc_config_npos(*cfg) != 1 ||
        (strcmp(*cmd, "round") && strcmp(*cmd, "report") && strcmp(*cmd, "rollout") &&
         strcmp(*cmd, "rollback") && strcmp(*cmd, "status"))) {
        fprintf(stderr, "efc-coordinator: one subcommand: round, report, rollout, rollback or "
                        "status\n");
        return -1;
    }
    if (!o->db) {
        fprintf(stderr, "efc-coordinator: --db is required\n");
        return -1;
    }
    if (!strcmp(*cmd, "rollout") || !strcmp(*cmd, "rollback") || !strcmp(*cmd, "status"))
        return 0; /* checked by efc_coord_rollout_cmd */
    if (!strcmp(*cmd, "report")) {
        if (!o->round_id) {
            fprintf(stderr, "efc-coordinator: report needs --round-id\n");
            return -1;
        }
        return 0;
    }
    if (!o->broker || !o->base || !o->grid || !(drop || acc)) {
        fprintf(stderr, "efc-coordinator: round needs --broker, --base, --grid and an SLA "
                        "(--sla-drop or --sla-acc)\n");
        return -1;
    }
    return 0;
}

/* Split "p1;p2;..." into r->policies, each validated by the policy grammar. */
static int parse_grid(const char *grid, struct efc_coord_round *r)
{
    if (!strcmp(grid, "default") || grid[0] == '@') {
        struct efc_grid *g = efc_malloc(sizeof(*g));
        int rc = 0;
        if (!g || efc_grid_load(grid[0] == '@' ? grid + 1 : grid, g) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: --grid: %s\n", g ? efc_err_detail() : "no memory");
            efc_free(g);
            return -1;
        }
        r->n_policies = 0;
        for (int32_t i = 0; i < g->n && !rc; i++) {
            if (i >= EFC_COORD_MAX_POLICIES ||
                strlen(g->policies[i]) >= EFC_PROTO_POLICY_MAX) {
                fprintf(stderr, "efc-coordinator: --grid %s: too many or too long policies\n",
                        grid);
                rc = -1;
                break;
            }
            snprintf(r->policies[r->n_policies++], EFC_PROTO_POLICY_MAX, "%s", g->policies[i]);
        }
        efc_free(g);
        return rc;
    }
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

/* The directory of candidates and wire artifacts (--candidates, default DB.candidates). */
static void cache_dir(const struct coord *c, char *out, size_t len)
{
    if (c->o.cand_dir)
        snprintf(out, len, "%s", c->o.cand_dir);
    else
        snprintf(out, len, "%s.candidates", c->o.db);
}

/* The wire form of an .efm: a zstd artifact (model/artifact.h) next to the candidates,
 * `a-<first 16 hex of the .efm digest>.efca`, made once; a gets its digest, path and size. */
static int wire_artifact(struct coord *c, const char *cache, const char *efm_path,
                         const char *efm_sha, struct art *a)
{
    char out[PATH_MAX_];
    struct stat sb;
    void *buf = NULL;
    size_t n = 0;
    uint8_t d[EFC_SHA256_BYTES];
    if (mkdir(cache, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "efc-coordinator: %s: %s\n", cache, strerror(errno));
        return -1;
    }
    int w = snprintf(out, sizeof(out), "%s/a-%.16s.efca", cache, efm_sha);
    if (w < 0 || (size_t)w >= sizeof(out) ||
        (stat(out, &sb) != 0 &&
         efc_artifact_pack_file(efm_path, out, EFC_ARTIFACT_LEVEL_DEFAULT, NULL) != EFC_OK) ||
        efc_fs_read_all(out, ART_MAX, &buf, &n) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: artifact of %s: %s\n", efm_path, efc_err_detail());
        return -1;
    }
    efc_sha256(buf, n, d);
    efc_free(buf);
    efc_sha256_hex(d, a->sha);
    snprintf(a->path, sizeof(a->path), "%s", out);
    a->bytes = n;
    (void)c;
    return 0;
}

/* The artifact of every policy of round r: the base, or the candidate built (or found in the
 * cache) by running the policy's training steps on --train-data; both sent in their zstd
 * wire form. */
static int build_candidates(struct coord *c, const struct efc_coord_round *r)
{
    struct efc_dataset *train = NULL, *test = NULL;
    char cache[PATH_MAX_], bdir[PATH_MAX_];
    int rc = 0;
    cache_dir(c, cache, sizeof(cache));
    snprintf(bdir, sizeof(bdir), "%s", c->base_path);
    char *slash = strrchr(bdir, '/');
    if (slash)
        *slash = '\0';
    c->n_arts = r->n_policies;
    if (wire_artifact(c, cache, c->base_path, c->base_sha, &c->base_art))
        return -1;
    efc_log(EFC_LOG_INFO, MOD, "base %s: artifact %s (%llu bytes on the wire, .efm %llu)",
            c->base_path, c->base_art.path, (unsigned long long)c->base_art.bytes,
            (unsigned long long)c->base_bytes);
    if (efc_coord_store_model_put(c->store, c->base_art.sha, c->base_art.path,
                                  c->base_art.bytes, EFC_COORD_MODEL_BASE) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: model: %s\n", efc_err_detail());
        return -1;
    }
    for (int32_t i = 0; i < r->n_policies && !rc; i++) {
        struct art *a = &c->arts[i];
        char prefix[EFC_POLICY_STR_MAX];
        struct efc_candidate cand;
        *a = c->base_art;
        if (efc_policy_prefix(r->policies[i], prefix, sizeof(prefix)) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: %s: %s\n", r->policies[i], efc_err_detail());
            rc = -1;
            break;
        }
        if (!prefix[0])
            continue;
        if (!train) {
            if (!c->o.train_data) {
                fprintf(stderr, "efc-coordinator: policy %s has training steps: give "
                                "--train-data (the coordinator's own training data)\n",
                        r->policies[i]);
                rc = -1;
                break;
            }
            if (efc_dataset_open(c->o.train_data, "train", &train) != EFC_OK) {
                fprintf(stderr, "efc-coordinator: --train-data %s: %s\n", c->o.train_data,
                        efc_err_detail());
                rc = -1;
                break;
            }
            if (efc_dataset_open(c->o.train_data, "test", &test) != EFC_OK)
                test = NULL;
        }
        struct efc_compress_opts co = {.train = train, .val = test, .seed = 1,
                                       .base_dir = bdir};
        efc_log(EFC_LOG_INFO, MOD, "candidate for %s: training steps %s", r->policies[i], prefix);
        if (efc_candidate_build(c->base_path, c->base_sha, prefix, &co, cache, &cand) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: candidate for %s: %s\n", r->policies[i],
                    efc_err_detail());
            rc = -1;
            break;
        }
        efc_log(EFC_LOG_INFO, MOD, "candidate for %s: %s %s (%llu bytes%s)", r->policies[i],
                cand.cached ? "cached" : "built", cand.path, (unsigned long long)cand.bytes,
                cand.cached ? "" : ", trained now");
        /* the one long step before the round: say where it is */
        if (cand.cached)
            printf("candidate %d/%d %s: cached\n", i + 1, r->n_policies, prefix);
        else if (cand.val_accuracy >= 0.0f)
            printf("candidate %d/%d %s: built in %.0f s, test accuracy %.2f %% (FP32)\n", i + 1,
                   r->n_policies, prefix, cand.seconds, 100.0 * cand.val_accuracy);
        else
            printf("candidate %d/%d %s: built in %.0f s\n", i + 1, r->n_policies, prefix,
                   cand.seconds);
        fflush(stdout);
        if (wire_artifact(c, cache, cand.path, cand.sha256, a)) {
            rc = -1;
            break;
        }
        if (efc_coord_store_model_put(c->store, a->sha, a->path, a->bytes,
                                      EFC_COORD_MODEL_CANDIDATE) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: model: %s\n", efc_err_detail());
            rc = -1;
        }
    }
    /* Which artifact each policy starts from: what a rollout of the round's choice sends. */
    for (int32_t i = 0; i < r->n_policies && !rc; i++)
        if (efc_coord_store_round_artifact_put(c->store, r->round_id, r->policies[i],
                                               c->arts[i].sha) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: round artifact: %s\n", efc_err_detail());
            rc = -1;
        }
    efc_dataset_free(train);
    efc_dataset_free(test);
    return rc;
}

/* The artifact a policy's jobs start from (the base when unknown). */
static const struct art *art_of(const struct coord *c, const char *policy,
                                const struct efc_coord_round *r)
{
    for (int32_t i = 0; i < c->n_arts && i < r->n_policies; i++)
        if (!strcmp(r->policies[i], policy))
            return &c->arts[i];
    return NULL;
}

/* An ONNX base (not an .efm, not an artifact: a `.onnx` file) is imported once into
 * `<cache>/base-<first 16 hex of the ONNX digest>.efm` (onnx/onnx_import.h; the import is
 * deterministic, so a restarted coordinator finds the same base and the same round). */
static int import_onnx_base(struct coord *c, const uint8_t *digest, char *efm_path, size_t len)
{
    char cache[PATH_MAX_], hex[EFC_SHA256_HEX_BYTES];
    struct stat sb;
    struct efc_model *m = NULL;
    efc_sha256_hex(digest, hex);
    cache_dir(c, cache, sizeof(cache));
    if (mkdir(cache, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "efc-coordinator: %s: %s\n", cache, strerror(errno));
        return -1;
    }
    int w = snprintf(efm_path, len, "%s/base-%.16s.efm", cache, hex);
    if (w < 0 || (size_t)w >= len)
        return -1;
    if (stat(efm_path, &sb) == 0)
        return 0;
    if (efc_onnx_import_file(c->o.base, NULL, &m) != EFC_OK ||
        efc_efm_save(m, efm_path) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: importing %s: %s\n", c->o.base, efc_err_detail());
        efc_model_free(m);
        return -1;
    }
    efc_model_free(m);
    efc_log(EFC_LOG_INFO, MOD, "base %s imported from ONNX into %s", c->o.base, efm_path);
    return 0;
}

static int load_base(struct coord *c)
{
    void *buf = NULL;
    size_t len = 0;
    uint8_t d[EFC_SHA256_BYTES];
    const char *path = c->o.base;
    char imported[PATH_MAX_];
    if (efc_fs_read_all(path, ART_MAX, &buf, &len) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: cannot read %s: %s\n", path, efc_err_detail());
        return -1;
    }
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".onnx")) {
        efc_sha256(buf, len, d);
        efc_free(buf);
        buf = NULL;
        if (import_onnx_base(c, d, imported, sizeof(imported)) ||
            efc_fs_read_all(imported, ART_MAX, &buf, &len) != EFC_OK) {
            efc_free(buf);
            return -1;
        }
        path = imported;
    }
    efc_sha256(buf, len, d);
    efc_sha256_hex(d, c->base_sha);
    efc_free(buf);
    c->base_bytes = len;
    if (!realpath(path, c->base_path))
        snprintf(c->base_path, sizeof(c->base_path), "%s", path);
    return 0;
}

static uint32_t id_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* The device of that id; with add, created when new (NULL past MAX_DEVICES). */
static struct dev *dev_find(struct coord *c, const char *id, int add)
{
    uint32_t k = id_hash(id) & (DEV_SLOTS - 1);
    for (; c->dev_slot[k]; k = (k + 1) & (DEV_SLOTS - 1)) {
        struct dev *d = &c->devs[c->dev_slot[k] - 1];
        if (!strcmp(d->id, id))
            return d;
    }
    if (!add || c->n_devs >= MAX_DEVICES)
        return NULL;
    struct dev *d = &c->devs[c->n_devs++];
    c->dev_slot[k] = (int32_t)c->n_devs;
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
            d->want = 0;
        }
        if (n_rel > 0)
            want_all(c); /* another device of the class may take them */
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
    d->want = 1;
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
    const char *path = c->n_arts && !strcmp(req.sha256, c->base_art.sha) ? c->base_art.path
                                                                          : NULL;
    for (int32_t i = 0; i < c->n_arts && !path; i++)
        if (!strcmp(req.sha256, c->arts[i].sha))
            path = c->arts[i].path;
    if (!path) {
        efc_log(EFC_LOG_WARN, MOD, "device=%s asked for unknown artifact %.16s", dev, req.sha256);
        return;
    }
    if (efc_chunk_serve(path, req.sha256, &req, &out, &out_len) != EFC_OK) {
        efc_log(EFC_LOG_WARN, MOD, "chunk for %s refused: %s", dev, efc_err_detail());
        return;
    }
    if (efc_chunk_topic(c->o.prefix, req.sha256, dev, topic, sizeof(topic)) == EFC_OK)
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

/* Room for one more element in a growable array; 0 on success. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    void *p = efc_realloc(*arr, nc * size);
    if (!p)
        return -1;
    *arr = p;
    *cap = nc;
    return 0;
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
    if (d)
        d->want = d->online; /* done with that job: maybe the next one */
    if (dup)
        efc_log(EFC_LOG_INFO, MOD, "result job=%s device=%s duplicate, acked again", r.job_id,
                dev);
    else
        efc_log(EFC_LOG_INFO, MOD, "result job=%s device=%s policy=%s %s correct=%d/%d p50=%.3fms",
                r.job_id, dev, r.policy, r.status == EFC_PROTO_RESULT_OK ? "ok" : "failed",
                r.correct, r.eval_total, r.p50_ms);
    /* Acked once the pass's batch is committed (pass_commit). Without room, no ack now: the
     * agent sends the result again and it is acked as a duplicate. */
    if (grow((void **)&c->acks, &c->cap_acks, c->n_acks, sizeof(*c->acks)) == 0) {
        struct ack_out *a = &c->acks[c->n_acks++];
        snprintf(a->dev, sizeof(a->dev), "%s", dev);
        snprintf(a->job_id, sizeof(a->job_id), "%s", r.job_id);
        a->is_new = !dup;
    }
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
    const struct art *a = art_of(c, job->policy, &c->round);
    if (!a)
        a = &c->base_art;
    snprintf(j.model_sha256, sizeof(j.model_sha256), "%s", a->sha);
    j.model_bytes = a->bytes;
    snprintf(j.base_sha256, sizeof(j.base_sha256), "%s", c->base_art.sha);
    j.base_bytes = c->base_art.bytes;
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

/* Give every device that may need one its next job; re-send a job assigned before a restart.
 * Only devices flagged `want` are asked about (an event set it: online, result, released
 * jobs), plus all of them once per EVERY_ALL_NS, so the cost per pass follows the traffic,
 * not the fleet size. Overdue jobs are swept once per EXPIRE_NS. */
#define EXPIRE_NS 1000000000ull
#define EVERY_ALL_NS 5000000000ull
static void schedule(struct coord *c)
{
    int32_t n_exp = 0;
    uint64_t now = efc_time_ns();
    if (!efc_mqtt_connected(c->m))
        return;
    if (now - c->t_expire_ns >= EXPIRE_NS) {
        c->t_expire_ns = now;
        if (efc_coord_store_jobs_expire(c->store, now_ms(), &n_exp) == EFC_OK && n_exp > 0) {
            efc_log(EFC_LOG_WARN, MOD, "%d overdue job(s) released for reassignment", n_exp);
            want_all(c);
        }
    }
    if (now - c->t_want_all_ns >= EVERY_ALL_NS) {
        c->t_want_all_ns = now;
        want_all(c);
    }
    for (size_t i = 0; i < c->n_devs; i++) {
        struct dev *d = &c->devs[i];
        struct efc_coord_job job;
        if (!d->want)
            continue;
        d->want = 0;
        int64_t deadline = now_ms() + c->o.job_timeout_s * 1000;
        enum efc_status e = efc_coord_store_job_assign(c->store, d->id, deadline, &job);
        if (e == EFC_OK || (e == EFC_EBUSY && strcmp(d->sent_job, job.job_id) != 0)) {
            if (strcmp(job.round_id, c->round_id) != 0)
                efc_log(EFC_LOG_WARN, MOD, "job=%s belongs to round %s (another round)",
                        job.job_id, job.round_id);
            if (grow((void **)&c->jobs, &c->cap_jobs, c->n_jobs, sizeof(*c->jobs)) == 0) {
                c->jobs[c->n_jobs].dev = i;
                c->jobs[c->n_jobs++].job = job;
            } /* else: sent by a later pass (EBUSY, not yet sent) */
        } else if (e != EFC_OK && e != EFC_EBUSY && e != EFC_ENOTFOUND) {
            efc_log(EFC_LOG_ERROR, MOD, "assign to %s: %s", d->id, efc_err_detail());
        }
    }
}

/* End of a loop pass: commit the store batch, then (only then) publish the pass's acks and
 * jobs. A failed commit stored nothing: no ack goes out (agents resend their results), and
 * the jobs stay pending in the store for a later pass. */
static void pass_commit(struct coord *c)
{
    if (efc_coord_store_batch_commit(c->store) != EFC_OK) {
        efc_log(EFC_LOG_ERROR, MOD, "store commit failed, %zu result(s) not acked: %s",
                c->n_acks, efc_err_detail());
        c->n_acks = c->n_jobs = 0;
        want_all(c);
        return;
    }
    for (size_t i = 0; i < c->n_acks; i++) {
        const struct ack_out *a = &c->acks[i];
        if (a->is_new) {
            c->t_last_result_ns = efc_time_ns();
            if (!c->n_results++)
                c->t_first_result_ns = c->t_last_result_ns;
        } else {
            c->n_duplicates++;
        }
        send_ack(c, a->dev, a->job_id);
    }
    for (size_t i = 0; i < c->n_jobs; i++)
        publish_job(c, &c->devs[c->jobs[i].dev], &c->jobs[i].job);
    c->n_acks = c->n_jobs = 0;
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

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
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
    const char **ids = efc_calloc(n_res ? n_res : 1, sizeof(*ids));
    if (ids) {
        for (size_t i = 0; i < n_res; i++)
            ids[i] = res[i].job_id;
        qsort(ids, n_res, sizeof(*ids), cmp_strp);
        for (size_t i = 0; i < n_res; i++)
            distinct += i == 0 || strcmp(ids[i], ids[i - 1]) != 0;
        efc_free(ids);
    } else {
        distinct = -1; /* out of memory: shown as -1, not guessed */
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
        char *ro_html = NULL;
        if (efc_coord_rollout_html(s, &ro_html) != EFC_OK)
            fprintf(stderr, "efc-coordinator: rollout state: %s\n", efc_err_detail());
        enum efc_status hs = efc_coord_report_html_write(sel, round_id, ro_html, html);
        efc_free(ro_html);
        if (hs != EFC_OK) {
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
    c->round = r;
    if (build_candidates(c, &r))
        return 1;
    c->devs = efc_calloc(MAX_DEVICES, sizeof(*c->devs));
    c->dev_slot = efc_calloc(DEV_SLOTS, sizeof(*c->dev_slot));
    if (!c->devs || !c->dev_slot)
        goto out;
    snprintf(client_id, sizeof(client_id), "efc-coordinator-%d", (int)getpid());
    struct efc_mqtt_opts mo = {.url = c->o.broker,
                               .client_id = client_id,
                               .on_message = on_message,
                               .ctx = c,
                               .clean_start = 1,
                               .inflight = 1000,
                               .tls_ca = c->o.tls_ca,
                               .tls_cert = c->o.tls_cert,
                               .tls_key = c->o.tls_key};
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
    uint64_t t_check = 0;
    while (!g_stop && efc_time_ns() < until) {
        if (efc_coord_store_batch_begin(c->store) != EFC_OK) {
            fprintf(stderr, "efc-coordinator: %s\n", efc_err_detail());
            break;
        }
        efc_mqtt_loop(c->m, LOOP_MS);
        schedule(c);
        pass_commit(c);
        if (efc_time_ns() - t_check < SETTLE_CHECK_NS)
            continue; /* a GROUP BY over the round's jobs: not on every burst */
        t_check = efc_time_ns();
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
    /* The acks just published must reach the broker before the client goes. */
    if (efc_mqtt_flush(c->m, FLUSH_MS) != EFC_OK)
        efc_log(EFC_LOG_WARN, MOD, "%s (agents resend those results; they are stored)",
                efc_err_detail());
    if (efc_coord_store_round_finish(c->store, c->round_id) != EFC_OK)
        fprintf(stderr, "efc-coordinator: finish: %s\n", efc_err_detail());
    printf("round %s: %lld result(s) stored, %lld duplicate(s), %lld message(s) rejected\n", c->round_id,
           (long long)c->n_results, (long long)c->n_duplicates, (long long)c->n_rejected);
    if (c->n_results > 1) {
        double span = (double)(c->t_last_result_ns - c->t_first_result_ns) / 1e9;
        printf("round %s: results stored at %.0f/s (%lld in %.2f s, first to last)\n",
               c->round_id, span > 0 ? (double)(c->n_results - 1) / span : 0.0,
               (long long)c->n_results, span);
    }
    rc = select_and_report(c->store, c->round_id, &r, c->o.report);
out:
    efc_mqtt_free(c->m);
    c->m = NULL;
    efc_free(c->devs);
    c->devs = NULL;
    efc_free(c->dev_slot);
    c->dev_slot = NULL;
    efc_free(c->acks);
    efc_free(c->jobs);
    c->acks = NULL;
    c->jobs = NULL;
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
    struct efc_config *cfg = NULL;
    int rc;
    struct sigaction sa;

    rc = parse_args(&c.o, argc, argv, &cmd, &cfg);
    if (rc) {
        if (rc < 0)
            fprintf(stderr, "efc-coordinator: see --help\n");
        efc_config_free(cfg);
        return rc < 0 ? 2 : 0;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (efc_coord_store_open(c.o.db, &c.store) != EFC_OK) {
        fprintf(stderr, "efc-coordinator: %s: %s\n", c.o.db, efc_err_detail());
        efc_config_free(cfg);
        return 1;
    }
    if (!strcmp(cmd, "rollout") || !strcmp(cmd, "rollback") || !strcmp(cmd, "status")) {
        struct efc_coord_rollout_opts ro = {
            .cmd = cmd, .broker = c.o.broker, .prefix = c.o.prefix, .tls_ca = c.o.tls_ca,
            .tls_cert = c.o.tls_cert, .tls_key = c.o.tls_key, .round_id = c.o.round_id,
            .hw_class = c.o.hw_class, .policy = c.o.policy, .sign_key = c.o.sign_key,
            .waves = c.o.waves, .url_base = c.o.url_base, .max_failures = c.o.max_failures,
            .max_acc_drop = c.o.max_acc_drop, .max_p99_ratio = c.o.max_p99_ratio,
            .calib = c.o.calib, .eval = c.o.eval, .health_runs = c.o.health_runs,
            .mem_limit = c.o.mem_limit, .max_rss = c.o.max_rss, .min_accuracy = c.o.min_accuracy,
            .min_agree = c.o.min_agree, .max_p99_ms = c.o.max_p99_ms,
            .report_timeout_s = c.o.report_timeout_s, .manifest_days = c.o.manifest_days,
            .timeout_s = c.o.timeout_s};
        rc = efc_coord_rollout_cmd(&ro, c.store, &g_stop);
    } else {
        rc = !strcmp(cmd, "round") ? run_round(&c) : run_report(&c);
    }
    efc_coord_store_close(c.store);
    efc_config_free(cfg);
    return rc;
}
