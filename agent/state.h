/* state.h — the agent's durable state in its state dir: job journal and result outbox.
 *
 * RELIABILITY.md Part 2, rules 1-2: MQTT's PUBACK proves nothing, so a result counts as
 * delivered only when the coordinator's application ack arrives; until then it sits in the
 * outbox on disk and is resent after every (re)connect. The journal records each job's phase
 * so that a duplicate or replayed job message changes nothing and a restarted agent never
 * runs a finished job again:
 *   NEW (unknown) -> RUNNING (before the evaluation starts) -> DONE (result in the outbox)
 *   -> ACKED (coordinator committed it; outbox entry removed).
 * A job found RUNNING at start-up was interrupted (agent killed): it produced no result, so the
 * caller may run it again or report it failed. Every write is atomic (efc_fs_write_atomic:
 * temp file, fsync, rename, fsync dir); a crash leaves either the old or the new state.
 * Layout: <dir>/jobs/<job_id> (phase word), <dir>/outbox/<job_id> (the encoded result).
 * Job ids must be protocol ids ([A-Za-z0-9._-]{1,63}, not "." / "..", no ".tmp." which marks
 * interrupted atomic writes, removed at open): anything else is EFC_EINVAL (no path tricks). Thread rule: one thread per object.
 */
#ifndef EFC_AGENT_STATE_H
#define EFC_AGENT_STATE_H

#include <stddef.h>

#include "common/efc_status.h"

enum efc_agent_job_phase {
    EFC_AGENT_JOB_NEW = 0,
    EFC_AGENT_JOB_RUNNING = 1,
    EFC_AGENT_JOB_DONE = 2,
    EFC_AGENT_JOB_ACKED = 3,
};

struct efc_agent_state;

/* Open (creating dir, dir/jobs, dir/outbox as needed). */
enum efc_status efc_agent_state_open(const char *dir, struct efc_agent_state **out);
void efc_agent_state_close(struct efc_agent_state *s);

/* The journal phase of job_id (NEW if the journal has never seen it). */
enum efc_status efc_agent_journal_get(struct efc_agent_state *s, const char *job_id,
                                      enum efc_agent_job_phase *out);
/* Record a phase (atomic). Phases only move forward: an older phase is ignored (EFC_OK). */
enum efc_status efc_agent_journal_set(struct efc_agent_state *s, const char *job_id,
                                      enum efc_agent_job_phase phase);

/* Store the encoded result of job_id (atomic), then mark the job DONE. */
enum efc_status efc_agent_outbox_put(struct efc_agent_state *s, const char *job_id,
                                     const void *payload, size_t len);
/* The coordinator acked job_id: mark ACKED, then remove the outbox entry. Acks for unknown or
 * already acked jobs change nothing (EFC_OK). */
enum efc_status efc_agent_outbox_ack(struct efc_agent_state *s, const char *job_id);
/* Call fn for every result still waiting for its ack (after a restart or reconnect: resend
 * them all). Stops at the first non-OK status fn returns. */
typedef enum efc_status (*efc_agent_outbox_fn)(void *ctx, const char *job_id,
                                               const void *payload, size_t len);
enum efc_status efc_agent_outbox_each(struct efc_agent_state *s, efc_agent_outbox_fn fn,
                                      void *ctx);
/* Jobs found RUNNING (interrupted): fn(ctx, job_id, NULL, 0) for each. */
enum efc_status efc_agent_journal_interrupted(struct efc_agent_state *s,
                                              efc_agent_outbox_fn fn, void *ctx);

#endif
