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

/* A running evaluation: the child, its result pipe, what came back so far. */
struct efc_agent_sandbox {
    pid_t pid;
    int fd;
    uint64_t end_ns; /* 0: no deadline */
    int64_t left_ms;
    struct efc_proto_job job;
    struct efc_proto_result got;
    size_t n_got;
    struct efc_proto_result res; /* initialised result (ids, policy) */
};

enum efc_status efc_agent_sandbox_start(const struct efc_agent_job_ctx *ctx,
                                        const struct efc_proto_job *job, const char *model_path,
                                        const char *base_path, const struct efc_dataset *local,
                                        struct efc_proto_result *res,
                                        struct efc_agent_sandbox **out)
{
    int fds[2];
    uint64_t end_ns = 0;
    int64_t left_ms = -1;
    pid_t pid;

    if (!ctx || !job || !model_path || !local || !res || !out)
        return efc_errf(EFC_EINVAL, "agent sandbox: NULL argument");
    *out = NULL;
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
    struct efc_agent_sandbox *sb = efc_calloc(1, sizeof(*sb));
    if (!sb)
        return efc_errf(EFC_ENOMEM, "agent sandbox: out of memory");
    if (pipe2(fds, O_CLOEXEC) != 0) {
        efc_free(sb);
        return efc_errf(EFC_EIO, "agent sandbox: pipe: %s", strerror(errno));
    }
    fflush(NULL); /* nothing buffered is written twice */
    const pid_t parent = getpid();
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        efc_free(sb);
        return efc_errf(EFC_EIO, "agent sandbox: fork: %s", strerror(e));
    }
    if (pid == 0) {
        close(fds[0]);
        child_main(ctx, job, model_path, base_path, local, fds[1], parent);
        _exit(121); /* not reached */
    }
    close(fds[1]);
    sb->pid = pid;
    sb->fd = fds[0];
    sb->end_ns = end_ns;
    sb->left_ms = left_ms;
    sb->job = *job;
    sb->res = *res;
    *out = sb;
    return EFC_OK;
}

enum end { END_EXITED, END_DEADLINE, END_KILLED };

/* Reap the child and turn what happened into the result; frees sb. */
static void sandbox_finish(struct efc_agent_sandbox *sb, enum end how,
                           struct efc_proto_result *res)
{
    int timed_out = how != END_EXITED;
    const struct efc_proto_job *job = &sb->job;
    int status = 0;
    struct rusage ru;

    close(sb->fd);
    if (timed_out)
        kill(sb->pid, SIGKILL);
    memset(&ru, 0, sizeof(ru));
    while (wait4(sb->pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            status = 0;
            break;
        }
    }
    /* Same children's peak RSS (KiB on Linux): includes pages inherited from the agent. */
    const uint64_t peak_rss = (uint64_t)ru.ru_maxrss * 1024ULL;

    *res = sb->res;
    if (how == END_KILLED) {
        res->status = EFC_PROTO_RESULT_FAILED;
        snprintf(res->error, sizeof(res->error), "evaluation stopped by the agent");
    } else if (timed_out) {
        res->status = EFC_PROTO_RESULT_FAILED;
        snprintf(res->error, sizeof(res->error),
                 "evaluation exceeded its deadline (%lld ms; killed)", (long long)sb->left_ms);
    } else if (sb->n_got == sizeof(sb->got) && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        *res = sb->got;
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
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1, sb->n_got, sizeof(sb->got));
    }
    res->peak_rss_bytes = peak_rss;
    if (res->status != EFC_PROTO_RESULT_OK)
        efc_log(EFC_LOG_WARN, "agent", "job %s: %s", job->job_id, res->error);
    efc_free(sb);
}

int efc_agent_sandbox_poll(struct efc_agent_sandbox *sb, int timeout_ms,
                           struct efc_proto_result *res)
{
    for (;;) {
        struct pollfd pf = {sb->fd, POLLIN, 0};
        int timeout = timeout_ms, pr;
        ssize_t r;
        if (sb->end_ns) {
            uint64_t now = efc_time_ns();
            if (now >= sb->end_ns) {
                sandbox_finish(sb, END_DEADLINE, res);
                return 1;
            }
            uint64_t ms = (sb->end_ns - now + 999999ULL) / 1000000ULL;
            if (timeout < 0 || (uint64_t)timeout > ms)
                timeout = ms > 60000 ? 60000 : (int)ms;
        }
        pr = poll(&pf, 1, timeout);
        if (pr < 0 && errno == EINTR)
            return 0; /* a signal: let the caller look (SIGTERM) */
        if (pr < 0) {
            sandbox_finish(sb, END_EXITED, res);
            return 1;
        }
        if (pr == 0) {
            if (timeout_ms >= 0 && (!sb->end_ns || efc_time_ns() < sb->end_ns))
                return 0; /* still running */
            continue;     /* the deadline check above decides */
        }
        if (sb->n_got < sizeof(sb->got)) {
            r = read(sb->fd, (char *)&sb->got + sb->n_got, sizeof(sb->got) - sb->n_got);
        } else {
            char sink[256];
            r = read(sb->fd, sink, sizeof(sink));
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) { /* EOF: the child is done (or gone) */
            sandbox_finish(sb, END_EXITED, res);
            return 1;
        }
        sb->n_got += (size_t)r;
        if (sb->n_got > sizeof(sb->got))
            sb->n_got = sizeof(sb->got);
        timeout_ms = 0; /* data came: read on without waiting, then report */
    }
}

void efc_agent_sandbox_kill(struct efc_agent_sandbox *sb)
{
    struct efc_proto_result res;
    if (sb)
        sandbox_finish(sb, END_KILLED, &res);
}

enum efc_status efc_agent_sandbox_run(const struct efc_agent_job_ctx *ctx,
                                      const struct efc_proto_job *job, const char *model_path,
                                      const char *base_path, const struct efc_dataset *local,
                                      struct efc_proto_result *res)
{
    struct efc_agent_sandbox *sb = NULL;
    enum efc_status st = efc_agent_sandbox_start(ctx, job, model_path, base_path, local, res, &sb);
    if (st != EFC_OK || !sb)
        return st;
    while (!efc_agent_sandbox_poll(sb, -1, res))
        ;
    return EFC_OK;
}
