/* agent.h — efc-agent's measuring core: device profile, one job's evaluation, the sandbox.
 *
 * Owns what happens on a device between receiving a job and sending its result, without
 * MQTT (docs/agent.md): the hardware profile and class of this machine under an ISA cap
 * (profile.c), the measured evaluation of one candidate policy on the device's local data
 * (job.c: deterministic calibration / evaluation split, INT8 calibration and lowering,
 * paired accuracy counts against the FP32 base, latency under a host-wide timing lock,
 * sizes), and the child process that runs it under a memory limit and a deadline so that a
 * crash, a hang or a memory blow-up becomes a FAILED result instead of a dead agent
 * (sandbox.c). Data never leaves this module: only counts and measurements go into
 * struct efc_proto_result.
 * Errors: functions return efc_status for failures of the agent itself (bad arguments, no
 * fork); a failure of the *evaluation* is a result with status EFC_PROTO_RESULT_FAILED and
 * the reason in result.error. Thread rule: one job at a time per process (the executors and
 * OpenBLAS are process-wide); profile functions are safe from any thread.
 */
#ifndef EFC_AGENT_AGENT_H
#define EFC_AGENT_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"
#include "kernels/cpu_features.h"
#include "model/dataset.h"
#include "proto/proto.h"

#define EFC_AGENT_VERSION "0.1.0"
/* Host-wide lock that agents sharing one machine take around their timing loops; the
 * environment variable EFC_AGENT_TIMING_LOCK overrides it. */
#define EFC_AGENT_TIMING_LOCK "/tmp/efc-agent-timing.lock"
#define EFC_AGENT_EVAL_BATCH 64 /* batch of the accuracy passes */

/* ---- hardware profile (profile.c) ----------------------------------------------------- */

struct efc_agent_profile {
    char arch[16];          /* "x86_64", "aarch64", ... (uname) */
    char cpu[64];           /* CPU brand string, or "" */
    char features[160];     /* ISA features seen, space-separated ("avx2 fma avx512f ...") */
    int32_t cores;          /* online logical CPUs */
    uint64_t mem_bytes;     /* physical memory */
    uint64_t l1d_bytes, l2_bytes, l3_bytes; /* 0 when unknown */
    enum efc_isa isa_best;  /* best level of this CPU + OS */
    enum efc_isa isa;       /* level in use: isa_best capped by --isa */
    char hw_class[EFC_PROTO_CLASS_MAX];
    char blas_core[32];     /* OpenBLAS core running now */
};

/* The hardware class for an ISA level already capped: "x86_64-avx512vnni", "x86_64-avx512",
 * "x86_64-avx2", "x86_64-amx", "aarch64-neon", "generic-ref". Never NULL. */
const char *efc_agent_hw_class(enum efc_isa level);
/* Detect this machine; isa = efc_isa_cap(best, cap). Never fails on missing details (they
 * stay 0 / ""); EFC_EINVAL only for a NULL argument. */
enum efc_status efc_agent_profile_detect(enum efc_isa cap, struct efc_agent_profile *p);
/* Fill the profile fields of a status message (hw_class, isa, blas_core, cores, mem_bytes,
 * agent_version, version); device id, online, busy and active_model are left alone. */
void efc_agent_profile_to_status(const struct efc_agent_profile *p, struct efc_proto_status *st);

/* ---- one job (job.c) ------------------------------------------------------------------ */

/* Test hooks for the sandbox: make the evaluation child misbehave. Also taken from the
 * environment variable EFC_AGENT_FAULT ("segv", "oom", "hang") when ctx->fault is NONE. */
enum efc_agent_fault {
    EFC_AGENT_FAULT_NONE = 0,
    EFC_AGENT_FAULT_SEGV = 1, /* raise SIGSEGV */
    EFC_AGENT_FAULT_OOM = 2,  /* allocate without bound (needs a memory limit) */
    EFC_AGENT_FAULT_HANG = 3, /* sleep past the deadline */
};

struct efc_agent_job_ctx {
    const char *device_id;   /* copied into the result (job->device_id if NULL) */
    const char *hw_class;    /* copied into the result ("" if NULL) */
    const char *timing_lock; /* NULL: $EFC_AGENT_TIMING_LOCK or EFC_AGENT_TIMING_LOCK */
    int32_t warmup_runs;     /* before each timed loop; <= 0: default 5 */
    enum efc_agent_fault fault;
    /* OTA (docs/ota.md "On the device"). save_model_path: the evaluated candidate (after the
     * device step, e.g. INT8 lowering) is written there as .efm (atomically). golden_path:
     * the candidate's raw output on the golden input (the device's first local sample) is
     * written there (golden_check 0), or must equal, bit for bit, what the file holds
     * (golden_check 1; else the result fails "GOLDEN: ..."). NULL: not used. */
    const char *save_model_path;
    const char *golden_path;
    int golden_check;
};

/* The calibration / evaluation split of a local data set of n samples (documented in
 * docs/agent.md): a permutation of 0..n-1 by efc_rng_shuffle(seed); calibration = its first
 * n_calib entries, evaluation = the next n_eval, each sorted ascending. Disjoint by
 * construction and identical for every policy with the same seed, so paired results of
 * different candidates on one device share their evaluation samples. When n < calib + eval,
 * eval shrinks first (to n - calib); EFC_EINVAL (with a detail) if fewer than 1 evaluation
 * sample remains. want_calib may be 0. Outputs are efc_malloc'd (efc_free). */
enum efc_status efc_agent_split(int32_t n, int32_t want_calib, int32_t want_eval, uint64_t seed,
                                int32_t **calib, int32_t *n_calib, int32_t **eval,
                                int32_t *n_eval);

/* A result for job with its ids, policy, class, ISA and BLAS core filled in, status OK and
 * every measurement 0 (the starting point of every result, failed ones included). ctx may
 * be NULL. */
void efc_agent_result_init(const struct efc_agent_job_ctx *ctx, const struct efc_proto_job *job,
                           struct efc_proto_result *res);

/* Evaluate `job` in this process: load model_path (the policy's starting model) and
 * base_path (the FP32 base; NULL = model_path), apply the policy (supported: `fp32`;
 * `int8(calib=minmax|percentile|kl|mse[,weights=channel|tensor][,p=P])`), evaluate
 * candidate and base on the same local evaluation samples, time the candidate (batch 1 and
 * job->batch) under the timing lock, and fill *res. Any failure of the evaluation (bad
 * policy, unsupported step, unreadable model, data too small, out of memory) gives
 * res->status = EFC_PROTO_RESULT_FAILED with the reason; the function itself returns
 * EFC_EINVAL only for NULL arguments. */
enum efc_status efc_agent_job_run(const struct efc_agent_job_ctx *ctx,
                                  const struct efc_proto_job *job, const char *model_path,
                                  const char *base_path, const struct efc_dataset *local,
                                  struct efc_proto_result *res);

/* ---- the sandbox (sandbox.c) ---------------------------------------------------------- */

/* efc_agent_job_run in a forked child with RLIMIT_AS = job->mem_limit_bytes (when > 0) and
 * killed with SIGKILL at job->deadline_ms (Unix epoch ms; <= 0: no deadline). The result
 * comes back through a pipe; a crash, a timeout, running out of memory or exiting without a
 * result becomes a FAILED result with the reason ("evaluation crashed: SIGSEGV",
 * "evaluation exceeded its deadline", "out of memory (limit N bytes)"). peak_rss_bytes is
 * the child's peak RSS (wait4). Returns EFC_EINVAL for NULL arguments, EFC_EIO if the pipe
 * or fork fails (nothing ran); otherwise EFC_OK, whatever the evaluation did. */
enum efc_status efc_agent_sandbox_run(const struct efc_agent_job_ctx *ctx,
                                      const struct efc_proto_job *job, const char *model_path,
                                      const char *base_path, const struct efc_dataset *local,
                                      struct efc_proto_result *res);

/* The same, without blocking the caller (the agent's MQTT loop keeps running): start forks
 * the child; *out is NULL when res is already final (the deadline had passed: nothing ran).
 * poll waits at most timeout_ms (-1: until done) and returns 1 once the evaluation is over,
 * with res filled and sb freed, else 0. kill ends a running evaluation (SIGKILL, reaped) and
 * frees sb. */
struct efc_agent_sandbox;
enum efc_status efc_agent_sandbox_start(const struct efc_agent_job_ctx *ctx,
                                        const struct efc_proto_job *job, const char *model_path,
                                        const char *base_path, const struct efc_dataset *local,
                                        struct efc_proto_result *res,
                                        struct efc_agent_sandbox **out);
int efc_agent_sandbox_poll(struct efc_agent_sandbox *sb, int timeout_ms,
                           struct efc_proto_result *res);
void efc_agent_sandbox_kill(struct efc_agent_sandbox *sb);

#endif
