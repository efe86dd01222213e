/* sandbox.c — run one job's evaluation in a child process with a memory limit and a deadline.
 *
 * The child (fork, no exec) sets RLIMIT_AS, runs efc_agent_job_run and writes the result
 * struct into a pipe, then _exit()s: it never returns into the agent's code paths. The
 * parent polls the pipe until the deadline, kills the child with SIGKILL when it passes, and
 * reaps it with wait4() for its peak RSS. OpenBLAS registers a pthread_atfork handler that
 * shuts its thread pool down, so the child starts its own threads on first use.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "common/efc_alloc.h"
#include "common/efc_log.h"
#include "common/efc_time.h"

/* AddressSanitizer reserves terabytes of shadow address space at start-up, so an address
 * space limit would make every later mapping fail: the limit is not applied under ASan. */
#if defined(__SANITIZE_ADDRESS__)
#define EFC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EFC_ASAN 1
#endif
#endif
#ifndef EFC_ASAN
#define EFC_ASAN 0
#endif

#define OOM_CHUNK ((size_t)64 << 20)

static int64_t now_epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum efc_agent_fault fault_from_env(void)
{
    const char *s = getenv("EFC_AGENT_FAULT");
    if (!s)
        return EFC_AGENT_FAULT_NONE;
    if (!strcmp(s, "segv"))
        return EFC_AGENT_FAULT_SEGV;
    if (!strcmp(s, "oom"))
        return EFC_AGENT_FAULT_OOM;
    if (!strcmp(s, "hang"))
        return EFC_AGENT_FAULT_HANG;
    return EFC_AGENT_FAULT_NONE;
}

static void write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* The test hook that allocates without bound: a candidate that blows up its memory. */
static void fault_oom(const struct efc_agent_job_ctx *ctx, const struct efc_proto_job *job,
                      struct efc_proto_result *r)
{
    void **chunks = NULL;
    size_t n = 0, cap = 0;
    efc_agent_result_init(ctx, job, r);
    r->status = EFC_PROTO_RESULT_FAILED;
    if (job->mem_limit_bytes <= 0) {
        snprintf(r->error, sizeof(r->error), "fault hook oom needs a memory limit");
        return;
    }
    for (;;) {
        void *p;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            void **g = efc_realloc(chunks, nc * sizeof(*g));
            if (!g)
                break;
            chunks = g;
            cap = nc;
        }
        if (!(p = efc_malloc(OOM_CHUNK)))
            break;
        chunks[n++] = p;
    }
    snprintf(r->error, sizeof(r->error), "out of memory (limit %lld bytes) after %zu MiB",
             (long long)job->mem_limit_bytes, n * (OOM_CHUNK >> 20));
    for (size_t i = 0; i < n; i++)
        efc_free(chunks[i]);
    efc_free(chunks);
}

static void child_main(const struct efc_agent_job_ctx *ctx, const struct efc_proto_job *job,
                       const char *model_path, const char *base_path,
                       const struct efc_dataset *local, int wfd, pid_t parent)
{
    struct efc_proto_result r;
    enum efc_agent_fault fault = ctx->fault ? ctx->fault : fault_from_env();

    /* the evaluation never outlives the agent: a SIGKILLed agent takes its child along */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(122); /* the agent died between fork and prctl */
    if (job->mem_limit_bytes > 0 && EFC_ASAN)
        efc_log(EFC_LOG_WARN, "agent", "job %s: memory limit not applied under AddressSanitizer",
                job->job_id);
    if (job->mem_limit_bytes > 0 && !EFC_ASAN) {
        struct rlimit rl = {(rlim_t)job->mem_limit_bytes, (rlim_t)job->mem_limit_bytes};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            efc_log(EFC_LOG_WARN, "agent", "setrlimit(RLIMIT_AS, %lld): %s",
                    (long long)job->mem_limit_bytes, strerror(errno));
    }
    switch (fault) {
    case EFC_AGENT_FAULT_SEGV:
        signal(SIGSEGV, SIG_DFL); /* not a sanitizer's handler: die of the signal */
        raise(SIGSEGV);
        _exit(120);
    case EFC_AGENT_FAULT_HANG:
        for (;;)
            pause();
    case EFC_AGENT_FAULT_OOM:
        fault_oom(ctx, job, &r);
        break;
    case EFC_AGENT_FAULT_NONE:
    default:
        efc_agent_job_run(ctx, job, model_path, base_path, local, &r);
        break;
    }
    write_all(wfd, &r, sizeof(r));
    close(wfd);
    _exit(0);
}

static void describe_signal(int sig, char *buf, size_t n)
{
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev)
        snprintf(buf, n, "SIG%s", abbrev);
    else
        snprintf(buf, n, "signal %d", sig);
}

enum efc_status efc_agent_sandbox_run(const struct efc_agent_job_ctx *ctx,
                                      const struct efc_proto_job *job, const char *model_path,
                                      const char *base_path, const struct efc_dataset *local,
                                      struct efc_proto_result *res)
{
    struct efc_proto_result got;
    size_t n_got = 0;
    int fds[2], status = 0, timed_out = 0;
    uint64_t end_ns = 0;
    int64_t left_ms = -1;
    struct rusage ru;
    pid_t pid;

    if (!ctx || !job || !model_path || !local || !res)
        return efc_errf(EFC_EINVAL, "agent sandbox: NULL argument");
    efc_agent_result_init(ctx, job, res);
    if (job->deadline_ms > 0) {
        left_ms = job->deadline_ms - now_epoch_ms();
        if (left_ms <= 0) {
            res->status = EFC_PROTO_RESULT_FAILED;
            snprintf(res->error, sizeof(res->error),
                     "evaluation exceeded its deadline (passed %lld ms before it started)",
                     (long long)-left_ms);
            return EFC_OK;
        }
        end_ns = efc_time_ns() + (uint64_t)left_ms * 1000000ULL;
    }
    if (pipe2(fds, O_CLOEXEC) != 0)
        return efc_errf(EFC_EIO, "agent sandbox: pipe: %s", strerror(errno));
    fflush(NULL); /* nothing buffered is written twice */
    const pid_t parent = getpid();
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return efc_errf(EFC_EIO, "agent sandbox: fork: %s", strerror(e));
    }
    if (pid == 0) {
        close(fds[0]);
        child_main(ctx, job, model_path, base_path, local, fds[1], parent);
        _exit(121); /* not reached */
    }
    close(fds[1]);

    /* Read the result until EOF or the deadline. */
    for (;;) {
        struct pollfd pf = {fds[0], POLLIN, 0};
        int timeout = -1, pr;
        ssize_t r;
        if (end_ns) {
            uint64_t now = efc_time_ns();
            if (now >= end_ns) {
                timed_out = 1;
                break;
            }
            uint64_t ms = (end_ns - now + 999999ULL) / 1000000ULL;
            timeout = ms > 60000 ? 60000 : (int)ms;
        }
        pr = poll(&pf, 1, timeout);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            break;
        if (pr == 0)
            continue; /* the deadline check above decides */
        if (n_got < sizeof(got))
            r = read(fds[0], (char *)&got + n_got, sizeof(got) - n_got);
        else {
            char sink[256];
            r = read(fds[0], sink, sizeof(sink));
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (n_got < sizeof(got))
            n_got += (size_t)r;
    }
    close(fds[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    memset(&ru, 0, sizeof(ru));
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            status = 0;
            break;
        }
    }
    /* Same children's peak RSS (KiB on Linux): includes pages inherited from the agent. */
    const uint64_t peak_rss = (uint64_t)ru.ru_maxrss * 1024ULL;

    if (timed_out) {
        res->status = EFC_PROTO_RESULT_FAILED;
        snprintf(res->error, sizeof(res->error),
                 "evaluation exceeded its deadline (%lld ms; killed)", (long long)left_ms);
    } else if (n_got == sizeof(got) && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        *res = got;
        /* The child is our own code, but a result is a message: keep its strings bounded. */
        res->job_id[sizeof(res->job_id) - 1] = '\0';
        res->round_id[sizeof(res->round_id) - 1] = '\0';
        res->device_id[sizeof(res->device_id) - 1] = '\0';
        res->hw_class[sizeof(res->hw_class) - 1] = '\0';
        res->policy[sizeof(res->policy) - 1] = '\0';
        res->error[sizeof(res->error) - 1] = '\0';
        res->isa[sizeof(res->isa) - 1] = '\0';
        res->blas_core[sizeof(res->blas_core) - 1] = '\0';
    } else if (WIFSIGNALED(status)) {
        char sig[32];
        describe_signal(WTERMSIG(status), sig, sizeof(sig));
        res->status = EFC_PROTO_RESULT_FAILED;
        if (job->mem_limit_bytes > 0 &&
            (WTERMSIG(status) == SIGKILL || WTERMSIG(status) == SIGABRT))
            snprintf(res->error, sizeof(res->error),
                     "evaluation crashed: %s (out of memory? limit %lld bytes)", sig,
                     (long long)job->mem_limit_bytes);
        else
            snprintf(res->error, sizeof(res->error), "evaluation crashed: %s", sig);
    } else {
        res->status = EFC_PROTO_RESULT_FAILED;
        snprintf(res->error, sizeof(res->error),
                 "evaluation ended without a result (exit status %d, %zu of %zu bytes)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1, n_got, sizeof(got));
    }
    res->peak_rss_bytes = peak_rss;
    if (res->status != EFC_PROTO_RESULT_OK)
        efc_log(EFC_LOG_WARN, "agent", "job %s: %s", job->job_id, res->error);
    return EFC_OK;
}
