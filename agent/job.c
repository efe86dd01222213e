/* job.c — the measured evaluation of one job on local data (docs/agent.md), without MQTT. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "agent/agent.h"
#include "calib/calib.h"
#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_log.h"
#include "common/efc_stats.h"
#include "common/efc_parse.h"
#include "common/efc_policy.h"
#include "common/efc_rng.h"
#include "common/efc_time.h"
#include "kernels/blas.h"
#include "kernels/kernels.h"
#include "model/artifact.h"
#include "model/efm.h"
#include "model/exec.h"
#include "model/quant.h"

#define DEFAULT_WARMUP 5

/* What the agent does for a policy. */
struct plan {
    int32_t int8;
    struct efc_calib_opts calib;
    struct efc_quant_opts quant;
};

static void res_fail(struct efc_proto_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void res_fail(struct efc_proto_result *res, const char *fmt, ...)
{
    va_list ap;
    res->status = EFC_PROTO_RESULT_FAILED;
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof(res->error), fmt, ap);
    va_end(ap);
}

/* A failed efc call: its detail, phrased as out of memory when that is what happened. */
static void res_fail_st(struct efc_proto_result *res, const struct efc_proto_job *job,
                        enum efc_status st, const char *what)
{
    /* EFC_EIO leaves errno intact: a mapping refused for lack of memory is memory too. */
    if (st == EFC_EIO && errno == ENOMEM)
        st = EFC_ENOMEM;
    if (st == EFC_ENOMEM && job->mem_limit_bytes > 0)
        res_fail(res, "out of memory (limit %lld bytes) in %s: %s",
                 (long long)job->mem_limit_bytes, what, efc_err_detail());
    else if (st == EFC_ENOMEM)
        res_fail(res, "out of memory in %s: %s", what, efc_err_detail());
    else
        res_fail(res, "%s failed (%s): %s", what, efc_status_str(st), efc_err_detail());
}

/* Policy -> plan; on failure the result says why and 1 is returned. The device runs the
 * policy's last step, which must be fp32 or int8; the steps before it run on the coordinator,
 * which ships their result as the job's model (docs/policies.md), so they are not run here. */
static int make_plan(const struct efc_proto_job *job, struct plan *pl,
                     struct efc_proto_result *res)
{
    struct efc_policy pol;
    const struct efc_policy_step *st;

    memset(pl, 0, sizeof(*pl));
    efc_calib_opts_default(&pl->calib);
    if (efc_policy_parse(job->policy, &pol)) {
        res_fail(res, "%s", efc_err_detail());
        return 1;
    }
    st = &pol.steps[pol.n_steps - 1];
    for (int32_t i = 0; i < pol.n_steps - 1; i++) {
        const char *m = pol.steps[i].method;
        if (!strcmp(m, "fp32") || !strcmp(m, "int8")) {
            res_fail(res, "unsupported policy '%s': %s must be the last step", job->policy, m);
            return 1;
        }
    }
    if (strcmp(st->method, "fp32") && strcmp(st->method, "int8")) {
        res_fail(res, "unsupported policy '%s': the last step must be fp32 or int8 (this agent "
                      "runs only those; the training steps run on the coordinator)",
                 job->policy);
        return 1;
    }
    if (!strcmp(st->method, "fp32")) {
        if (st->n_params) {
            res_fail(res, "unsupported policy step fp32: it takes no parameters ('%s')",
                     st->params[0].key);
            return 1;
        }
        return 0;
    }
    pl->int8 = 1;
    if (efc_calib_policy_step(st, &pl->calib, &pl->quant) != EFC_OK) {
        res_fail(res, "unsupported policy step %s", efc_err_detail());
        return 1;
    }
    return 0;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

enum efc_status efc_agent_split(int32_t n, int32_t want_calib, int32_t want_eval, uint64_t seed,
                                int32_t **calib, int32_t *n_calib, int32_t **eval,
                                int32_t *n_eval)
{
    int32_t *perm, *c = NULL, *e = NULL, ne;
    struct efc_rng rng;

    *calib = *eval = NULL;
    *n_calib = *n_eval = 0;
    if (n < 1 || want_calib < 0 || want_eval < 1)
        return efc_errf(EFC_EINVAL, "split: %d local samples, %d calibration, %d evaluation", n,
                        want_calib, want_eval);
    if (want_calib > n - 1)
        return efc_errf(EFC_EINVAL,
                        "local data has %d samples: %d for calibration leave none to evaluate",
                        n, want_calib);
    ne = want_eval < n - want_calib ? want_eval : n - want_calib;
    perm = efc_malloc((size_t)n * sizeof(*perm));
    c = efc_malloc((size_t)(want_calib ? want_calib : 1) * sizeof(*c));
    e = efc_malloc((size_t)ne * sizeof(*e));
    if (!perm || !c || !e) {
        efc_free(perm);
        efc_free(c);
        efc_free(e);
        return efc_errf(EFC_ENOMEM, "split: %d sample indices", n);
    }
    for (int32_t i = 0; i < n; i++)
        perm[i] = i;
    efc_rng_init(&rng, seed);
    efc_rng_shuffle(&rng, perm, n);
    memcpy(c, perm, (size_t)want_calib * sizeof(*c));
    memcpy(e, perm + want_calib, (size_t)ne * sizeof(*e));
    efc_free(perm);
    qsort(c, (size_t)want_calib, sizeof(*c), cmp_i32);
    qsort(e, (size_t)ne, sizeof(*e), cmp_i32);
    *calib = c;
    *n_calib = want_calib;
    *eval = e;
    *n_eval = ne;
    return EFC_OK;
}

/* Two-pass calibration on the calibration indices (the steps of efc_calib_run, on our own
 * sample set), then efc_calib_lower as efc quantize does. */
static enum efc_status quantize(const struct efc_model *m, const struct efc_dataset *d,
                                const int32_t *idx, int32_t n_idx, const struct plan *pl,
                                struct efc_model **out, double *calib_s, const char **stage)
{
    struct efc_calib_stats *s = NULL;
    struct efc_calib_result *cr = NULL;
    struct efc_quant_report rep;
    double t0;
    enum efc_status st;

    *out = NULL;
    *stage = "calibration";
    t0 = efc_time_s();
    if ((st = efc_calib_opts_check(&pl->calib)) || (st = efc_calib_stats_new(m, &s)) ||
        (st = efc_calib_stats_collect(s, m, d, idx, n_idx, pl->calib.batch)) ||
        (st = efc_calib_stats_hist_begin(s, pl->calib.n_bins, NULL)) ||
        (st = efc_calib_stats_collect(s, m, d, idx, n_idx, pl->calib.batch)) ||
        (st = efc_calib_result_from_stats(s, &pl->calib, &cr)))
        goto out;
    *calib_s = efc_time_s() - t0;
    *stage = "INT8 lowering";
    st = efc_calib_lower(m, cr, &pl->quant, out, &rep);
out:
    efc_calib_result_free(cr);
    efc_calib_stats_free(s);
    return st;
}

static int32_t argmax(const float *v, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* Top-1 of m on the evaluation samples, in batches. pred: n_eval entries. */
static enum efc_status predict(struct efc_exec *e, const struct efc_dataset *d, const int32_t *idx,
                               int32_t n_idx, float *buf, int32_t *pred)
{
    const int32_t out_n = efc_exec_output_size(e);
    enum efc_status st;
    const float *y;

    for (int32_t i = 0; i < n_idx; i += EFC_AGENT_EVAL_BATCH) {
        int32_t nb = n_idx - i < EFC_AGENT_EVAL_BATCH ? n_idx - i : EFC_AGENT_EVAL_BATCH;
        efc_dataset_gather_f32(d, idx + i, nb, buf);
        if ((st = efc_exec_run(e, buf, nb, &y)))
            return st;
        for (int32_t b = 0; b < nb; b++)
            pred[i + b] = argmax(y + (size_t)b * (size_t)out_n, out_n);
    }
    return EFC_OK;
}

/* The candidate's raw output on sample `idx`: written to ctx->golden_path, or compared with
 * it bit for bit (ctx->golden_check). Returns 1 after failing res. */
static int golden(struct efc_exec *e, const struct efc_dataset *d, int32_t idx, float *buf,
                  const struct efc_agent_job_ctx *ctx, struct efc_proto_result *res)
{
    const size_t out_bytes = (size_t)efc_exec_output_size(e) * sizeof(float);
    const float *y;
    void *want = NULL;
    size_t want_len = 0;
    enum efc_status st;
    int rc = 0;

    efc_dataset_gather_f32(d, &idx, 1, buf);
    if ((st = efc_exec_run(e, buf, 1, &y))) {
        res_fail(res, "GOLDEN: the model does not run: %s", efc_err_detail());
        return 1;
    }
    if (!ctx->golden_check) {
        if ((st = efc_fs_write_atomic(ctx->golden_path, y, out_bytes))) {
            res_fail(res, "GOLDEN: cannot write %s: %s", ctx->golden_path, efc_err_detail());
            return 1;
        }
        return 0;
    }
    if ((st = efc_fs_read_all(ctx->golden_path, out_bytes, &want, &want_len))) {
        res_fail(res, "GOLDEN: cannot read %s: %s", ctx->golden_path, efc_err_detail());
        return 1;
    }
    if (want_len != out_bytes || memcmp(want, y, out_bytes) != 0) {
        res_fail(res, "GOLDEN: output on the golden input differs from the one computed "
                      "before the install (%zu of %zu bytes compared)",
                 want_len, out_bytes);
        rc = 1;
    }
    efc_free(want);
    return rc;
}

/* The host-wide timing lock: an exclusive flock on a shared file. Returns the fd or -1. */
static int timing_lock(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return -1;
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

static void timing_unlock(int fd)
{
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
}

/* Time `runs` runs of `batch` samples from x after `warmup` runs; times in ms into t. */
static enum efc_status time_runs(struct efc_exec *e, const float *x, int32_t batch,
                                 int32_t warmup, int32_t runs, double *t)
{
    const float *y;
    enum efc_status st;
    for (int32_t i = 0; i < warmup; i++)
        if ((st = efc_exec_run(e, x, batch, &y)))
            return st;
    for (int32_t i = 0; i < runs; i++) {
        uint64_t t0 = efc_time_ns();
        if ((st = efc_exec_run(e, x, batch, &y)))
            return st;
        t[i] = (double)(efc_time_ns() - t0) * 1e-6;
    }
    efc_sort_f64(t, (size_t)runs);
    return EFC_OK;
}

/* One log line naming the candidate's layers that run a sparse kernel (format, density). */
static void log_sparse_layers(const struct efc_proto_job *job, const struct efc_exec *e)
{
    char list[512] = "";
    size_t off = 0;
    int32_t n;
    const struct efc_exec_layer *l = efc_exec_layers(e, &n);

    for (int32_t i = 0; i < n && off < sizeof(list); i++) {
        int w;
        if (!l[i].sparse)
            continue;
        w = snprintf(list + off, sizeof(list) - off, "%s%s %s %.3f", off ? ", " : "", l[i].name,
                     l[i].format, l[i].density);
        off = w < 0 ? sizeof(list) : off + (size_t)w; /* truncated lists stop here */
    }
    efc_log(EFC_LOG_INFO, "agent",
            "job %s: %d of %d Dense/Conv2d layers run sparse (isa %s, EFC_SPARSE=%s)%s%s",
            job->job_id, efc_exec_n_sparse(e), n, efc_isa_name(efc_kernels_isa()),
            efc_exec_sparse_mode_name(efc_exec_sparse_mode_of(e)), list[0] ? ": " : "", list);
}

void efc_agent_result_init(const struct efc_agent_job_ctx *ctx, const struct efc_proto_job *job,
                           struct efc_proto_result *res)
{
    memset(res, 0, sizeof(*res));
    res->version = EFC_PROTO_VERSION;
    snprintf(res->job_id, sizeof(res->job_id), "%s", job->job_id);
    snprintf(res->round_id, sizeof(res->round_id), "%s", job->round_id);
    snprintf(res->device_id, sizeof(res->device_id), "%s",
             ctx && ctx->device_id ? ctx->device_id : job->device_id);
    snprintf(res->hw_class, sizeof(res->hw_class), "%s",
             ctx && ctx->hw_class ? ctx->hw_class : "");
    snprintf(res->policy, sizeof(res->policy), "%s", job->policy);
    snprintf(res->isa, sizeof(res->isa), "%s", efc_isa_name(efc_kernels_isa()));
    snprintf(res->blas_core, sizeof(res->blas_core), "%s", efc_blas_core_planned()); /* loaded only if FP32 ran */
    res->status = EFC_PROTO_RESULT_OK;
    res->batch = job->batch > 0 ? job->batch : 1;
}

enum efc_status efc_agent_job_run(const struct efc_agent_job_ctx *ctx,
                                  const struct efc_proto_job *job, const char *model_path,
                                  const char *base_path, const struct efc_dataset *local,
                                  struct efc_proto_result *res)
{
    struct plan pl;
    struct efc_model *m = NULL, *base = NULL, *q = NULL;
    const struct efc_model *cand;
    struct efc_exec *ec = NULL, *eb = NULL;
    int32_t *cidx = NULL, *eidx = NULL, n_calib = 0, n_eval = 0, in_n;
    int32_t *pc = NULL, *pb = NULL;
    float *buf = NULL, *xb = NULL;
    double *times = NULL;
    void *enc = NULL;
    size_t enc_len = 0;
    const char *stage = "loading the model";
    const char *lock_path;
    int32_t runs, warmup, batch;
    int lock_fd = -1;
    enum efc_status st;

    if (!ctx || !job || !model_path || !local || !res)
        return efc_errf(EFC_EINVAL, "agent job: NULL argument");
    efc_agent_result_init(ctx, job, res);
    if (make_plan(job, &pl, res))
        return EFC_OK;
    batch = res->batch;
    runs = job->timed_runs > 0 ? job->timed_runs : 1;
    warmup = ctx->warmup_runs > 0 ? ctx->warmup_runs : DEFAULT_WARMUP;
    pl.calib.seed = job->seed;

    /* 1. The split: the same for every policy with this seed (docs/agent.md). */
    if ((st = efc_agent_split(local->n, job->calib_samples, job->eval_samples, job->seed, &cidx,
                              &n_calib, &eidx, &n_eval))) {
        res_fail(res, "%s", efc_err_detail());
        goto out;
    }
    if (n_eval < job->eval_samples)
        efc_log(EFC_LOG_WARN, "agent",
                "job %s: local data has %d samples: evaluating on %d instead of %d", job->job_id,
                local->n, n_eval, job->eval_samples);

    /* 2. Models: the policy's starting point and the FP32 base. */
    if ((st = efc_artifact_load_model(model_path, EFC_EFM_MAX_FILE_BYTES, &m)))
        goto fail;
    if (base_path && strcmp(base_path, model_path)) {
        stage = "loading the base model";
        if ((st = efc_artifact_load_model(base_path, EFC_EFM_MAX_FILE_BYTES, &base)))
            goto fail;
    }

    /* 3. The candidate. */
    cand = m;
    if (pl.int8) {
        if (n_calib < 1) {
            res_fail(res, "int8 needs calibration samples (job calib_samples = %d)",
                     job->calib_samples);
            goto out;
        }
        pl.calib.samples = n_calib;
        if ((st = quantize(m, local, cidx, n_calib, &pl, &q, &res->calib_s, &stage)))
            goto fail;
        cand = q;
        res->calib_samples = n_calib;
    }

    /* 4. Executors; accuracy and agreement on the evaluation samples. */
    stage = "compiling the candidate";
    {
        struct efc_exec_opts oc = {.max_batch = batch > EFC_AGENT_EVAL_BATCH
                                                    ? batch
                                                    : EFC_AGENT_EVAL_BATCH};
        struct efc_exec_opts ob = {.max_batch = EFC_AGENT_EVAL_BATCH};
        if ((st = efc_exec_new(cand, &oc, &ec)))
            goto fail;
        stage = "compiling the base model";
        if ((st = efc_exec_new(base ? base : m, &ob, &eb)))
            goto fail;
    }
    log_sparse_layers(job, ec);
    res->sparse_layers = efc_exec_n_sparse(ec);
    in_n = efc_exec_input_size(ec);
    if ((size_t)in_n != efc_dataset_sample_size(local) || efc_exec_input_size(eb) != in_n ||
        efc_exec_output_size(eb) != efc_exec_output_size(ec)) {
        res_fail(res,
                 "local data (%zu values per sample) does not fit the model (input %d) "
                 "or the base model (input %d, outputs %d vs %d)",
                 efc_dataset_sample_size(local), in_n, efc_exec_input_size(eb),
                 efc_exec_output_size(eb), efc_exec_output_size(ec));
        goto out;
    }
    stage = "evaluation";
    buf = efc_malloc((size_t)EFC_AGENT_EVAL_BATCH * (size_t)in_n * sizeof(float));
    xb = efc_malloc((size_t)batch * (size_t)in_n * sizeof(float));
    pc = efc_malloc((size_t)n_eval * sizeof(*pc));
    pb = efc_malloc((size_t)n_eval * sizeof(*pb));
    times = efc_malloc((size_t)runs * sizeof(*times));
    if (!buf || !xb || !pc || !pb || !times) {
        st = efc_errf(EFC_ENOMEM, "evaluation buffers (%d samples, batch %d)", n_eval, batch);
        goto fail;
    }
    if ((st = predict(ec, local, eidx, n_eval, buf, pc)) ||
        (st = predict(eb, local, eidx, n_eval, buf, pb)))
        goto fail;
    res->has_labels = local->labels != NULL;
    res->eval_total = n_eval;
    for (int32_t i = 0; i < n_eval; i++) {
        res->agree += pc[i] == pb[i];
        if (local->labels) {
            int32_t y = local->labels[eidx[i]];
            int c = pc[i] == y, b = pb[i] == y;
            res->correct += c;
            res->base_correct += b;
            res->both_correct += c && b;
            res->base_only += b && !c;
            res->cand_only += c && !b;
        }
    }

    /* 4b. The golden input (OTA): the same function before and after the install. It is
     * the device's first local sample, whatever the split (the prepare and the health runs
     * split differently: one calibrates, the other does not). */
    if (ctx->golden_path) {
        stage = "golden input";
        if (golden(ec, local, 0, buf, ctx, res))
            goto out;
    }

    /* 5. Sizes. */
    stage = "encoding the candidate";
    if ((st = efc_efm_encode(cand, &enc, &enc_len)))
        goto fail;
    if (ctx->save_model_path) {
        stage = "saving the candidate";
        if ((st = efc_fs_write_atomic(ctx->save_model_path, enc, enc_len)))
            goto fail;
    }
    res->model_bytes = enc_len;
    res->weight_bytes = efc_exec_weight_bytes(ec);
    res->peak_activation_bytes = efc_exec_peak_activation_bytes(ec);

    /* 6. Latency, under the host-wide lock: batch 1, then `batch` (eval samples, cycled). */
    stage = "timing";
    for (int32_t b = 0; b < batch; b++)
        efc_dataset_gather_f32(local, &eidx[b % n_eval], 1, xb + (size_t)b * (size_t)in_n);
    lock_path = ctx->timing_lock ? ctx->timing_lock : getenv("EFC_AGENT_TIMING_LOCK");
    if (!lock_path || !lock_path[0])
        lock_path = EFC_AGENT_TIMING_LOCK;
    lock_fd = timing_lock(lock_path);
    if (lock_fd < 0)
        efc_log(EFC_LOG_WARN, "agent", "timing lock %s: %s (timing without it)", lock_path,
                strerror(errno));
    if ((st = time_runs(ec, xb, 1, warmup, runs, times)))
        goto fail;
    res->p50_ms = efc_percentile(times, (size_t)runs, 0.50);
    res->p90_ms = efc_percentile(times, (size_t)runs, 0.90);
    res->p99_ms = efc_percentile(times, (size_t)runs, 0.99);
    if ((st = time_runs(ec, xb, batch, warmup, runs, times)))
        goto fail;
    res->batch_p50_ms = efc_percentile(times, (size_t)runs, 0.50);
    timing_unlock(lock_fd);
    lock_fd = -1;
    goto out;
fail:
    res_fail_st(res, job, st, stage);
out:
    timing_unlock(lock_fd);
    efc_free(enc);
    efc_free(times);
    efc_free(pc);
    efc_free(pb);
    efc_free(buf);
    efc_free(xb);
    efc_exec_free(ec);
    efc_exec_free(eb);
    efc_model_free(q);
    efc_model_free(base);
    efc_model_free(m);
    efc_free(cidx);
    efc_free(eidx);
    if (res->status != EFC_PROTO_RESULT_OK) {
        /* A failed result carries no partial measurements that could be pooled. */
        char err[sizeof(res->error)];
        memcpy(err, res->error, sizeof(err));
        efc_agent_result_init(ctx, job, res);
        res->status = EFC_PROTO_RESULT_FAILED;
        memcpy(res->error, err, sizeof(err));
    }
    return EFC_OK;
}
