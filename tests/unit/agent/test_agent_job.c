/* test_agent_job.c — one job's measured evaluation (agent/job.c) without MQTT: the
 * calibration / evaluation split, fp32 and int8 results with consistent paired counts, int8
 * close to fp32, determinism per seed, unsupported and malformed policies as FAILED results.
 * Data: the first 5000 Fashion-MNIST test images when the Debian package is installed
 * (3000 train a LeNet-300-100 for one epoch, 2000 are the device's local data), otherwise a
 * synthetic 10-class set (a bright block whose position is the class). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "compress/train.h"
#include "model/arch.h"
#include "model/efm.h"

static char g_dir[64];
static char g_model[128];
static char g_lock[128];
static struct efc_dataset *g_local;
static int g_fashion;

/* 1x28x28 u8 images: noise plus a bright 7x7 block at a class-dependent place. */
static struct efc_dataset *synthetic(int32_t n, uint64_t seed)
{
    struct efc_dataset *d = efc_calloc(1, sizeof(*d));
    struct efc_rng r;
    uint8_t *px;
    assert_non_null(d);
    d->n = n;
    d->ndim = 3;
    d->dims[0] = 1;
    d->dims[1] = d->dims[2] = 28;
    d->dtype = EFC_DTYPE_U8;
    d->n_classes = 10;
    snprintf(d->source, sizeof(d->source), "synthetic");
    d->data = px = efc_malloc((size_t)n * 784);
    d->labels = efc_malloc((size_t)n);
    assert_non_null(d->data);
    assert_non_null(d->labels);
    efc_rng_init(&r, seed);
    for (int32_t i = 0; i < n; i++) {
        int32_t k = (int32_t)efc_rng_below(&r, 10), y0 = (k / 4) * 9 + 1, x0 = (k % 4) * 7;
        uint8_t *img = px + (size_t)i * 784;
        d->labels[i] = (uint8_t)k;
        for (int32_t p = 0; p < 784; p++)
            img[p] = (uint8_t)efc_rng_below(&r, 60);
        for (int32_t y = y0; y < y0 + 7 && y < 28; y++)
            for (int32_t x = x0; x < x0 + 7; x++)
                img[y * 28 + x] = (uint8_t)(180 + efc_rng_below(&r, 70));
    }
    return d;
}

static int setup(void **state)
{
    struct efc_dataset *all = NULL, *train = NULL;
    struct efc_model *m = NULL;
    struct efc_train_opts to;
    struct efc_train_report rep;
    (void)state;

    snprintf(g_dir, sizeof(g_dir), "/tmp/efc-test-agent-job-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_model, sizeof(g_model), "%s/mlp.efm", g_dir);
    snprintf(g_lock, sizeof(g_lock), "%s/timing.lock", g_dir);
    if (efc_dataset_open("fashion-mnist", "test", &all) == EFC_OK) {
        g_fashion = 1;
        if (efc_dataset_slice(all, 0, 3000, &train) || efc_dataset_slice(all, 3000, 2000, &g_local))
            return -1;
        efc_dataset_free(all);
    } else {
        print_message("Fashion-MNIST not installed: synthetic data\n");
        train = synthetic(3000, 1);
        g_local = synthetic(2000, 2);
    }
    if (efc_arch_build("mlp", 7, &m))
        return -1;
    efc_train_opts_default(&to);
    to.epochs = 1;
    to.batch = 64;
    to.seed = 3;
    to.progress = 0;
    if (efc_train(m, train, NULL, &to, &rep) || efc_efm_save(m, g_model))
        return -1;
    efc_model_free(m);
    efc_dataset_free(train);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    efc_dataset_free(g_local);
    unlink(g_model);
    unlink(g_lock);
    rmdir(g_dir);
    return 0;
}

static void job_init(struct efc_proto_job *j, const char *policy, uint64_t seed)
{
    memset(j, 0, sizeof(*j));
    j->version = EFC_PROTO_VERSION;
    snprintf(j->job_id, sizeof(j->job_id), "job-1");
    snprintf(j->round_id, sizeof(j->round_id), "round-1");
    snprintf(j->device_id, sizeof(j->device_id), "dev-a");
    snprintf(j->policy, sizeof(j->policy), "%s", policy);
    j->calib_samples = 256;
    j->eval_samples = 1000;
    j->batch = 16;
    j->timed_runs = 20;
    j->seed = seed;
}

static void run(const char *policy, uint64_t seed, struct efc_proto_result *r)
{
    struct efc_agent_job_ctx ctx = {.device_id = "dev-a", .hw_class = "x86_64-test",
                                    .timing_lock = g_lock, .warmup_runs = 2};
    struct efc_proto_job j;
    job_init(&j, policy, seed);
    assert_int_equal(efc_agent_job_run(&ctx, &j, g_model, NULL, g_local, r), EFC_OK);
}

/* The invariants every OK result with labels satisfies. */
static void check_counts(const struct efc_proto_result *r)
{
    assert_int_equal(r->status, EFC_PROTO_RESULT_OK);
    assert_string_equal(r->error, "");
    assert_int_equal(r->has_labels, 1);
    assert_true(r->both_correct + r->cand_only == r->correct);
    assert_true(r->both_correct + r->base_only == r->base_correct);
    assert_true(r->correct <= r->eval_total && r->base_correct <= r->eval_total);
    assert_true(r->agree <= r->eval_total);
    /* samples where exactly one is right are samples where they disagree */
    assert_true(r->base_only + r->cand_only <= r->eval_total - r->agree);
    assert_true(r->p50_ms > 0.0 && r->p50_ms <= r->p90_ms && r->p90_ms <= r->p99_ms);
    assert_true(r->batch_p50_ms > 0.0);
    assert_int_equal(r->batch, 16);
    assert_true(r->model_bytes > 0 && r->weight_bytes > 0 && r->peak_activation_bytes > 0);
    assert_string_equal(r->job_id, "job-1");
    assert_string_equal(r->round_id, "round-1");
    assert_string_equal(r->device_id, "dev-a");
    assert_string_equal(r->hw_class, "x86_64-test");
    assert_true(r->isa[0] != '\0' && r->blas_core[0] != '\0');
}

static void test_split(void **state)
{
    int32_t *c, *e, *c2, *e2, nc, ne, nc2, ne2;
    uint8_t seen[500];
    (void)state;

    assert_int_equal(efc_agent_split(500, 100, 300, 42, &c, &nc, &e, &ne), EFC_OK);
    assert_int_equal(nc, 100);
    assert_int_equal(ne, 300);
    memset(seen, 0, sizeof(seen));
    for (int32_t i = 0; i < nc; i++) {
        assert_true(c[i] >= 0 && c[i] < 500);
        assert_int_equal(seen[c[i]], 0);
        seen[c[i]] = 1;
        if (i)
            assert_true(c[i] > c[i - 1]);
    }
    for (int32_t i = 0; i < ne; i++) {
        assert_true(e[i] >= 0 && e[i] < 500);
        assert_int_equal(seen[e[i]], 0); /* disjoint from calibration */
        seen[e[i]] = 2;
        if (i)
            assert_true(e[i] > e[i - 1]);
    }
    /* same seed, same split; another seed, another split */
    assert_int_equal(efc_agent_split(500, 100, 300, 42, &c2, &nc2, &e2, &ne2), EFC_OK);
    assert_memory_equal(c, c2, (size_t)nc * sizeof(*c));
    assert_memory_equal(e, e2, (size_t)ne * sizeof(*e));
    efc_free(c2);
    efc_free(e2);
    assert_int_equal(efc_agent_split(500, 100, 300, 43, &c2, &nc2, &e2, &ne2), EFC_OK);
    assert_true(memcmp(e, e2, (size_t)ne * sizeof(*e)) != 0);
    efc_free(c2);
    efc_free(e2);
    /* the evaluation set does not depend on the policy: calib 0 vs 100 differ only there */
    efc_free(c);
    efc_free(e);

    /* too small: eval shrinks first */
    assert_int_equal(efc_agent_split(500, 450, 300, 1, &c, &nc, &e, &ne), EFC_OK);
    assert_int_equal(nc, 450);
    assert_int_equal(ne, 50);
    efc_free(c);
    efc_free(e);
    /* nothing left to evaluate: a clear error */
    efc_err_clear();
    assert_int_equal(efc_agent_split(500, 500, 300, 1, &c, &nc, &e, &ne), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "500 samples"));
    assert_null(c);
    assert_null(e);
}

static void test_fp32(void **state)
{
    struct efc_proto_result r, r2;
    (void)state;
    run("fp32", 5, &r);
    check_counts(&r);
    assert_int_equal(r.eval_total, 1000);
    assert_int_equal(r.calib_samples, 0);
    assert_int_equal(r.correct, r.base_correct); /* the candidate is the base */
    assert_int_equal(r.agree, r.eval_total);
    assert_int_equal(r.base_only + r.cand_only, 0);
    assert_true(r.correct > r.eval_total / 2); /* trained: well above chance */
    assert_string_equal(r.policy, "fp32");
    print_message("fp32: %d/%d correct, p50 %.3f ms p99 %.3f ms, batch16 p50 %.3f ms, "
                  "%llu bytes\n",
                  r.correct, r.eval_total, r.p50_ms, r.p99_ms, r.batch_p50_ms,
                  (unsigned long long)r.model_bytes);
    run("fp32", 5, &r2);
    assert_int_equal(r2.correct, r.correct);
    assert_int_equal(r2.model_bytes, r.model_bytes);
}

static void test_int8(void **state)
{
    static const char *const policies[] = {
        "int8(calib=kl,weights=channel)",
        "int8(calib=minmax,weights=tensor)",
        "int8(calib=percentile,weights=channel,p=99.9)",
        "int8(calib=mse)",
    };
    struct efc_proto_result f, r, r2, r3;
    (void)state;
    run("fp32", 5, &f);
    for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
        run(policies[i], 5, &r);
        check_counts(&r);
        assert_int_equal(r.calib_samples, 256);
        assert_true(r.calib_s > 0.0);
        /* paired with the same samples as the fp32 job */
        assert_int_equal(r.eval_total, f.eval_total);
        assert_int_equal(r.base_correct, f.correct);
        /* int8 close to fp32 */
        assert_true(r.agree >= r.eval_total * 9 / 10);
        assert_true(abs(r.correct - r.base_correct) <= r.eval_total / 20);
        assert_true(r.model_bytes * 2 < f.model_bytes);
        assert_true(r.weight_bytes * 2 < f.weight_bytes);
        print_message("%s: %d/%d correct (fp32 %d), agree %d, calib %.3f s, p50 %.3f ms, "
                      "%llu bytes\n",
                      policies[i], r.correct, r.eval_total, r.base_correct, r.agree, r.calib_s,
                      r.p50_ms, (unsigned long long)r.model_bytes);
    }
    /* deterministic per seed: same counts and bytes again; another seed, other samples */
    run(policies[0], 5, &r);
    run(policies[0], 5, &r2);
    assert_int_equal(r.correct, r2.correct);
    assert_int_equal(r.base_correct, r2.base_correct);
    assert_int_equal(r.agree, r2.agree);
    assert_int_equal(r.model_bytes, r2.model_bytes);
    run(policies[0], 6, &r3);
    check_counts(&r3);
    assert_true(r3.base_correct != r.base_correct || r3.correct != r.correct ||
                r3.agree != r.agree);
}

static void test_no_labels(void **state)
{
    struct efc_agent_job_ctx ctx = {.timing_lock = g_lock, .warmup_runs = 1};
    struct efc_proto_job j;
    struct efc_proto_result r;
    struct efc_dataset unl = *g_local;
    (void)state;
    unl.labels = NULL;
    unl.n_classes = 0;
    job_init(&j, "int8(calib=minmax)", 5);
    j.timed_runs = 3;
    assert_int_equal(efc_agent_job_run(&ctx, &j, g_model, g_model, &unl, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_OK);
    assert_int_equal(r.has_labels, 0);
    assert_int_equal(r.correct + r.base_correct + r.both_correct, 0);
    assert_true(r.agree >= r.eval_total * 9 / 10);
    assert_string_equal(r.device_id, "dev-a"); /* from the job when ctx has none */
}

static void expect_failed(const char *policy, int32_t calib, int32_t eval, const char *model,
                          const char *frag)
{
    struct efc_agent_job_ctx ctx = {.timing_lock = g_lock, .warmup_runs = 1};
    struct efc_proto_job j;
    struct efc_proto_result r;
    job_init(&j, policy, 5);
    j.calib_samples = calib;
    j.eval_samples = eval;
    j.timed_runs = 3;
    assert_int_equal(efc_agent_job_run(&ctx, &j, model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    if (!strstr(r.error, frag))
        fail_msg("'%s': error '%s' lacks '%s'", policy, r.error, frag);
    assert_int_equal(r.eval_total, 0); /* no partial measurements */
    assert_int_equal(r.model_bytes, 0);
    assert_string_equal(r.job_id, "job-1");
    assert_string_equal(r.policy, policy);
}

static void test_failures(void **state)
{
    struct efc_proto_result r;
    struct efc_agent_job_ctx ctx = {.timing_lock = g_lock, .warmup_runs = 1};
    struct efc_proto_job j;
    (void)state;
    expect_failed("nm(n=2,m=4)", 100, 100, g_model, "the last step must be fp32 or int8");
    expect_failed("int8(calib=kl)+prune(sparsity=0.5)", 100, 100, g_model,
                  "int8 must be the last step");
    expect_failed("int8(calib=foo)", 100, 100, g_model, "calib=foo");
    expect_failed("int8(calib=kl,weights=row)", 100, 100, g_model, "weights=row");
    expect_failed("int8(calib=kl,p=99)", 100, 100, g_model, "p= needs calib=percentile");
    expect_failed("int8(calib=kl,bits=4)", 100, 100, g_model, "unknown parameter 'bits'");
    expect_failed("fp32(x=1)", 100, 100, g_model, "takes no parameters");
    expect_failed("fp32+int8", 100, 100, g_model, "fp32 must be the last step");
    expect_failed("int8(calib=kl", 100, 100, g_model, "column 14: expected ')'");
    expect_failed("int8(calib=kl)", 0, 100, g_model, "needs calibration samples");
    expect_failed("fp32", 2000, 100, g_model, "2000 samples");
    expect_failed("fp32", 10, 100, "/nonexistent/model.efm", "loading the model");

    /* a training prefix ran on the coordinator: the agent runs the int8 step on the model */
    job_init(&j, "prune(sparsity=0.5,finetune=1)+int8(calib=kl)", 5);
    j.calib_samples = 100;
    j.eval_samples = 100;
    j.timed_runs = 3;
    assert_int_equal(efc_agent_job_run(&ctx, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_OK);
    assert_int_equal(r.calib_samples, 100);
    assert_string_equal(r.policy, "prune(sparsity=0.5,finetune=1)+int8(calib=kl)");

    /* too little data for the requested evaluation: shrinks, still OK, says how many */
    job_init(&j, "fp32", 5);
    j.calib_samples = 1900;
    j.eval_samples = 1000;
    j.timed_runs = 3;
    assert_int_equal(efc_agent_job_run(&ctx, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_OK);
    assert_int_equal(r.eval_total, 100);

    /* data that does not fit the model */
    {
        struct efc_dataset small = *g_local;
        small.dims[1] = 14;
        small.dims[2] = 14;
        small.n = g_local->n / 4;
        job_init(&j, "fp32", 5);
        j.timed_runs = 3;
        j.calib_samples = 10;
        j.eval_samples = 10;
        assert_int_equal(efc_agent_job_run(&ctx, &j, g_model, NULL, &small, &r), EFC_OK);
        assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
        assert_non_null(strstr(r.error, "does not fit the model"));
    }
    assert_int_equal(efc_agent_job_run(NULL, &j, g_model, NULL, g_local, &r), EFC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),     cmocka_unit_test(test_fp32),
        cmocka_unit_test(test_int8),      cmocka_unit_test(test_no_labels),
        cmocka_unit_test(test_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
