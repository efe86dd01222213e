/* test_agent_sandbox.c — the evaluation child (agent/sandbox.c): a normal job comes back
 * with the same counts as in-process plus the child's peak RSS; a child that segfaults,
 * hangs past its deadline or allocates without bound becomes a FAILED result with the
 * reason, and this process keeps running; the host-wide timing lock is honoured. Model: an
 * untrained LeNet-300-100; data: synthetic. The memory-limit cases are skipped under ASan
 * (RLIMIT_AS conflicts with its shadow memory; the sandbox does not apply it there). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "common/efc_time.h"
#include "model/arch.h"
#include "model/efm.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif

static char g_dir[64];
static char g_model[128];
static char g_lock[128];
static struct efc_dataset *g_local;

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
    for (size_t i = 0; i < (size_t)n * 784; i++)
        px[i] = (uint8_t)efc_rng_below(&r, 256);
    for (int32_t i = 0; i < n; i++)
        d->labels[i] = (uint8_t)efc_rng_below(&r, 10);
    return d;
}

static int setup(void **state)
{
    struct efc_model *m = NULL;
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/efc-test-agent-sandbox-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_model, sizeof(g_model), "%s/mlp.efm", g_dir);
    snprintf(g_lock, sizeof(g_lock), "%s/timing.lock", g_dir);
    if (efc_arch_build("mlp", 11, &m) || efc_efm_save(m, g_model))
        return -1;
    efc_model_free(m);
    g_local = synthetic(400, 3);
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

static int64_t epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void job_init(struct efc_proto_job *j, const char *policy)
{
    memset(j, 0, sizeof(*j));
    j->version = EFC_PROTO_VERSION;
    snprintf(j->job_id, sizeof(j->job_id), "job-s");
    snprintf(j->round_id, sizeof(j->round_id), "round-s");
    snprintf(j->device_id, sizeof(j->device_id), "dev-s");
    snprintf(j->policy, sizeof(j->policy), "%s", policy);
    j->calib_samples = 64;
    j->eval_samples = 200;
    j->batch = 8;
    j->timed_runs = 10;
    j->seed = 9;
    j->deadline_ms = epoch_ms() + 30000;
}

static void ctx_init(struct efc_agent_job_ctx *c, enum efc_agent_fault fault)
{
    memset(c, 0, sizeof(*c));
    c->device_id = "dev-s";
    c->hw_class = "x86_64-test";
    c->timing_lock = g_lock;
    c->warmup_runs = 1;
    c->fault = fault;
}

/* Virtual memory of this process now (VmSize), to set limits above what is mapped. */
static int64_t vm_size_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmSize: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return (int64_t)kb * 1024;
}

static void test_normal(void **state)
{
    struct efc_agent_job_ctx c;
    struct efc_proto_job j;
    struct efc_proto_result in, sb;
    (void)state;
    ctx_init(&c, EFC_AGENT_FAULT_NONE);
    job_init(&j, "int8(calib=kl,weights=channel)");
    assert_int_equal(efc_agent_job_run(&c, &j, g_model, NULL, g_local, &in), EFC_OK);
    assert_int_equal(in.status, EFC_PROTO_RESULT_OK);
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &sb), EFC_OK);
    assert_int_equal(sb.status, EFC_PROTO_RESULT_OK);
    assert_string_equal(sb.error, "");
    assert_string_equal(sb.job_id, "job-s");
    assert_int_equal(sb.eval_total, 200);
    assert_int_equal(sb.correct, in.correct);
    assert_int_equal(sb.base_correct, in.base_correct);
    assert_int_equal(sb.agree, in.agree);
    assert_int_equal(sb.model_bytes, in.model_bytes);
    assert_true(sb.p50_ms > 0.0);
    assert_true(sb.peak_rss_bytes > (uint64_t)1 << 20);
    assert_int_equal(in.peak_rss_bytes, 0); /* only the sandbox measures it */
    print_message("sandboxed int8 job: peak RSS %.1f MiB\n", (double)sb.peak_rss_bytes / 1048576.0);
}

static void test_segv(void **state)
{
    struct efc_agent_job_ctx c;
    struct efc_proto_job j;
    struct efc_proto_result r;
    (void)state;
    ctx_init(&c, EFC_AGENT_FAULT_SEGV);
    job_init(&j, "fp32");
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    assert_string_equal(r.error, "evaluation crashed: SIGSEGV");
    assert_string_equal(r.job_id, "job-s");
    assert_string_equal(r.device_id, "dev-s");
    assert_int_equal(r.eval_total, 0);

    /* the same through the environment hook */
    ctx_init(&c, EFC_AGENT_FAULT_NONE);
    setenv("EFC_AGENT_FAULT", "segv", 1);
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    unsetenv("EFC_AGENT_FAULT");
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    assert_string_equal(r.error, "evaluation crashed: SIGSEGV");

    /* and the agent goes on serving */
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_OK);
}

static void test_deadline(void **state)
{
    struct efc_agent_job_ctx c;
    struct efc_proto_job j;
    struct efc_proto_result r;
    double t0;
    (void)state;
    ctx_init(&c, EFC_AGENT_FAULT_HANG);
    job_init(&j, "fp32");
    j.deadline_ms = epoch_ms() + 300;
    t0 = efc_time_s();
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_true(efc_time_s() - t0 < 5.0);
    assert_true(efc_time_s() - t0 >= 0.25);
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    assert_non_null(strstr(r.error, "evaluation exceeded its deadline"));

    /* already past: fails at once, no child */
    ctx_init(&c, EFC_AGENT_FAULT_NONE);
    j.deadline_ms = epoch_ms() - 10;
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    assert_non_null(strstr(r.error, "evaluation exceeded its deadline"));
}

/* Without blocking (what the agent's loop uses): a poll with timeout 0 returns at once while
 * the child runs (here: hangs); polls with a timeout wait at most that long; the deadline
 * still ends it. A normal job through start/poll gives the blocking call's counts; kill ends
 * a running child. */
static void test_nonblocking(void **state)
{
    struct efc_agent_job_ctx c;
    struct efc_proto_job j;
    struct efc_proto_result r, blocking;
    struct efc_agent_sandbox *sb = NULL;
    (void)state;
    ctx_init(&c, EFC_AGENT_FAULT_HANG);
    job_init(&j, "fp32");
    j.deadline_ms = epoch_ms() + 800;
    assert_int_equal(efc_agent_sandbox_start(&c, &j, g_model, NULL, g_local, &r, &sb), EFC_OK);
    assert_non_null(sb);
    double t0 = efc_time_s();
    assert_int_equal(efc_agent_sandbox_poll(sb, 0, &r), 0);
    assert_true(efc_time_s() - t0 < 0.05);
    t0 = efc_time_s();
    assert_int_equal(efc_agent_sandbox_poll(sb, 100, &r), 0);
    double waited = efc_time_s() - t0;
    assert_true(waited >= 0.09 && waited < 0.5);
    int polls = 0;
    while (!efc_agent_sandbox_poll(sb, 100, &r))
        polls++;
    assert_true(polls >= 3); /* about 6 rounds of 100 ms until the 800 ms deadline */
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    assert_non_null(strstr(r.error, "evaluation exceeded its deadline"));

    ctx_init(&c, EFC_AGENT_FAULT_NONE);
    job_init(&j, "int8(calib=kl,weights=channel)");
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &blocking), EFC_OK);
    assert_int_equal(efc_agent_sandbox_start(&c, &j, g_model, NULL, g_local, &r, &sb), EFC_OK);
    assert_non_null(sb);
    while (!efc_agent_sandbox_poll(sb, 10, &r))
        ;
    assert_int_equal(r.status, EFC_PROTO_RESULT_OK);
    assert_int_equal(r.correct, blocking.correct);
    assert_int_equal(r.agree, blocking.agree);
    assert_true(r.peak_rss_bytes > 0);

    ctx_init(&c, EFC_AGENT_FAULT_HANG);
    job_init(&j, "fp32");
    assert_int_equal(efc_agent_sandbox_start(&c, &j, g_model, NULL, g_local, &r, &sb), EFC_OK);
    assert_non_null(sb);
    efc_agent_sandbox_kill(sb); /* reaped: no zombie, no leak (ASan) */

    /* Deadline already past: nothing starts, the result is final. */
    ctx_init(&c, EFC_AGENT_FAULT_NONE);
    j.deadline_ms = epoch_ms() - 10;
    assert_int_equal(efc_agent_sandbox_start(&c, &j, g_model, NULL, g_local, &r, &sb), EFC_OK);
    assert_null(sb);
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
}

/* Another agent on the host holds the timing lock: the job waits for it (here: until its
 * deadline); released, the same job completes. */
static void test_timing_lock(void **state)
{
    struct efc_agent_job_ctx c;
    struct efc_proto_job j;
    struct efc_proto_result r;
    int fd = open(g_lock, O_RDWR | O_CREAT, 0666);
    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    ctx_init(&c, EFC_AGENT_FAULT_NONE);
    job_init(&j, "fp32");
    j.deadline_ms = epoch_ms() + 1500;
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    assert_non_null(strstr(r.error, "deadline"));
    flock(fd, LOCK_UN);
    close(fd);
    j.deadline_ms = epoch_ms() + 30000;
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_OK);
}

static void test_memory_limit(void **state)
{
    struct efc_agent_job_ctx c;
    struct efc_proto_job j;
    struct efc_proto_result r;
    int64_t vm = vm_size_bytes();
    (void)state;
    if (TEST_ASAN) {
        print_message("skipped under AddressSanitizer (RLIMIT_AS vs shadow memory)\n");
        skip();
    }
    assert_true(vm > 0);
    /* a candidate that allocates without bound: a clean out-of-memory result */
    ctx_init(&c, EFC_AGENT_FAULT_OOM);
    job_init(&j, "fp32");
    j.mem_limit_bytes = vm + ((int64_t)512 << 20);
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    assert_non_null(strstr(r.error, "out of memory (limit "));
    print_message("oom hook: %s\n", r.error);

    /* a real job under a limit too tight for it: failed (clean error or crash), we go on */
    ctx_init(&c, EFC_AGENT_FAULT_NONE);
    j.mem_limit_bytes = vm + ((int64_t)256 << 10);
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_FAILED);
    assert_true(strstr(r.error, "memory") || strstr(r.error, "crashed"));
    print_message("tight limit: %s\n", r.error);

    /* and with room to spare the same job is fine */
    j.mem_limit_bytes = vm + ((int64_t)1 << 30);
    assert_int_equal(efc_agent_sandbox_run(&c, &j, g_model, NULL, g_local, &r), EFC_OK);
    assert_int_equal(r.status, EFC_PROTO_RESULT_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal),      cmocka_unit_test(test_segv),
        cmocka_unit_test(test_deadline),    cmocka_unit_test(test_timing_lock),
        cmocka_unit_test(test_memory_limit), cmocka_unit_test(test_nonblocking),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
