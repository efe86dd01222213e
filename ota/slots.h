/* slots.h — the agent's A/B model slots for OTA installs (docs/ota.md "A/B slots on the agent";
 * issue 7; RELIABILITY.md Part 2 rule 5, Part 3 C3, D1, D2, D4, D5, E2).
 *
 * Owns <state_dir>/ota/: two slot directories a/ and b/, each holding one install (the signed
 * artifact's bytes, its manifest, and the device-ready model calibrated from it), and one state
 * file naming the active slot, the previous slot, the trial and the anti-rollback minimum:
 *   <dir>/ota/state              2 lines: compact JSON, then the SHA-256 (hex) of line 1
 *   <dir>/ota/<slot>/artifact    the artifact's bytes, checked against its manifest at stage
 *   <dir>/ota/<slot>/manifest.json   the verified, signed manifest
 *   <dir>/ota/<slot>/model.efm   the device-ready model (the one that is loaded)
 * The state file is the only commit point: it is replaced atomically (temp file, write, fsync,
 * rename, fsync of the directory) and a slot counts only if the state names it, with the
 * digests and sizes of its three files. Slot files are never written while the state names
 * their slot.
 *
 * Install (the caller verifies the manifest with efc_manifest_policy.min_version =
 * status.min_version, checks and calibrates the artifact, then):
 *   efc_slots_stage    copy the three files into the inactive slot (after dropping the previous
 *                      install that lived there); nothing else changes; kept in memory only
 *   efc_slots_switch   one state write: the staged slot becomes active "on trial", the old
 *                      active becomes previous
 *   efc_slots_trial_attempt   count a health attempt (persisted before the health check runs)
 *   efc_slots_commit   one state write: trial over, min_version raised to the active version
 *   efc_slots_rollback one state write: the trial failed, the previous slot is active again
 *   efc_slots_revert   one state write: an ordered return to the previous slot (committed)
 * A crash (kill -9) at any point leaves, at the next efc_slots_open, either the old or the new
 * install active, never a mix; a crash between switch and commit leaves the new install active
 * with trial = 1, and the caller re-runs the health check (efc_slots_trial_attempt, bounded by
 * EFC_SLOTS_MAX_TRIALS) or rolls back.
 *
 * Errors: EFC_EINVAL (NULL argument, bad tag, a call that the current state does not allow:
 * switch with nothing staged, commit / rollback / trial_attempt with no trial), EFC_EBUSY (stage
 * or revert during a trial; the state dir is open in another handle or process),
 * EFC_ENOTFOUND (a source file is missing; revert with no previous install), EFC_EVERSION
 * (stage of a version below min_version; a state file of another format), EFC_EHASH (the
 * artifact does not match its manifest; staged files changed before the switch), EFC_EPROTO
 * (a state file that is garbage, truncated or fails its checksum: efc_slots_open refuses it and
 * leaves it in place; see efc_slots_open), EFC_EIO / EFC_ENOSPC (errno intact), EFC_ENOMEM.
 * A failed call leaves the state as it was (on disk and in memory) and removes what it wrote;
 * the one exception is stage, which may already have dropped the previous install from the
 * inactive slot (it never touches the active one). Details via efc_err_detail().
 *
 * Ownership: strings passed in are borrowed for the call; struct efc_slots is freed with
 * efc_slots_close. Thread rule: one thread per handle; one handle per state dir (an exclusive
 * flock on <dir>/ota, held until close, refuses a second one with EFC_EBUSY). The fault hook
 * below is process-global and for tests only.
 */
#ifndef EFC_OTA_SLOTS_H
#define EFC_OTA_SLOTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_sha256.h"
#include "common/efc_status.h"
#include "ota/manifest.h"

/* Health attempts per trial: the third failed or interrupted attempt ends the trial (RAUC and
 * SWUpdate boot counters; E1's "<= 3 restarts"); a crash loop in the health check therefore
 * ends in a rollback, never loops (Mender caps its state stores the same way). */
#define EFC_SLOTS_MAX_TRIALS 3
#define EFC_SLOTS_PATH_MAX 4096
#define EFC_SLOTS_TAG_MAX 64 /* trial tag: 0..63 printable ASCII + NUL */

struct efc_slot_info {
    int valid;                               /* the slot holds a complete, verified install */
    char name;                               /* 'a' or 'b' ('\0' if !valid) */
    char sha256[EFC_SHA256_HEX_BYTES];       /* artifact digest (from its manifest) */
    uint64_t artifact_bytes;                 /* artifact size (from its manifest) */
    uint64_t version;                        /* manifest version */
    char policy[EFC_MANIFEST_STR_MAX];       /* manifest policy */
    char model_path[EFC_SLOTS_PATH_MAX];     /* <dir>/ota/<slot>/model.efm (device-ready) */
    char artifact_path[EFC_SLOTS_PATH_MAX];  /* <dir>/ota/<slot>/artifact */
    char manifest_path[EFC_SLOTS_PATH_MAX];  /* <dir>/ota/<slot>/manifest.json */
    char model_sha256[EFC_SHA256_HEX_BYTES]; /* digest of model.efm recorded at stage time */
    uint64_t model_bytes;
    char manifest_sha256[EFC_SHA256_HEX_BYTES]; /* digest of manifest.json at stage time */
};

struct efc_slots_status {
    int has_active;
    struct efc_slot_info active, previous; /* previous.valid = 0 if none */
    int trial;                             /* 1: active is on trial (switched, not committed) */
    int32_t trial_attempts;                /* health attempts started on this trial */
    uint64_t min_version;                  /* anti-rollback counter: never decreases */
    char trial_tag[EFC_SLOTS_TAG_MAX];     /* caller's tag for the trial (the agent's ota_id) */
    int staged;                            /* 1: a stage is done, efc_slots_switch may follow */
    /* Set by efc_slots_open when the active install's files failed their recorded digests or
     * were missing: it fell back to the previous install (or to none) and persisted that. */
    int fell_back;
    char fell_back_from; /* the slot it left ('a' / 'b'), '\0' if !fell_back */
};

struct efc_slots;

/* Open <state_dir>/ota (creating state_dir, ota/, ota/a/, ota/b/ as needed) and recover:
 * temp files of interrupted state writes are removed; a slot that the state does not name as
 * active or previous is emptied; the active and previous installs are re-hashed against their
 * recorded digests and sizes, and one that fails (torn, corrupt, missing file) is dropped:
 * the active falls back to the previous (or to none), logged at ERROR and reported in
 * status.fell_back; the result is persisted. A missing state file is a fresh device (no
 * install, min_version 0). A state file that exists but is not valid (garbage, truncated,
 * checksum mismatch, impossible values) is EFC_EPROTO (EFC_EVERSION for another format) and
 * nothing is changed: resetting it would silently reset the anti-rollback counter, so that is
 * left to the operator (remove <dir>/ota/state). A read error is EFC_EIO, never a fallback.
 * *out is freed with efc_slots_close. */
enum efc_status efc_slots_open(const char *state_dir, struct efc_slots **out);
/* Release the handle and its lock; a stage not yet switched is forgotten (the next open
 * empties that slot). NULL is a no-op. */
void efc_slots_close(struct efc_slots *s);
enum efc_status efc_slots_status(struct efc_slots *s, struct efc_slots_status *out);

/* Stage an install into the inactive slot: if the previous install lives there, one state
 * write drops it (previous = none) first; then the slot is emptied, the three files are
 * copied (manifest_json[0..len) -> manifest.json, artifact_src -> artifact, model_src ->
 * model.efm), each fsynced, then the slot directory. The artifact is hashed while copied and
 * must match m (size and SHA-256, else EFC_EHASH). manifest_json must be the verified
 * manifest m (1..EFC_MANIFEST_MAX_BYTES bytes). The slot stays invalid until efc_slots_switch;
 * the stage is kept in this handle only. Refused during a trial (EFC_EBUSY: commit or roll
 * back first) and for m->version < min_version (EFC_EVERSION). On failure the slot is emptied
 * again. */
enum efc_status efc_slots_stage(struct efc_slots *s, const char *manifest_json, size_t len,
                                const struct efc_manifest *m, const char *artifact_src,
                                const char *model_src);
/* Re-hash the staged files (EFC_EHASH if they changed), then one atomic state write:
 * active = the staged slot (valid), previous = the old active (or none), trial = 1,
 * trial_attempts = 0, trial_tag = tag (NULL: ""; 0..63 printable ASCII). EFC_EINVAL if
 * nothing is staged. */
enum efc_status efc_slots_switch(struct efc_slots *s, const char *tag);
/* Count one health attempt of the trial; call it BEFORE each health check, so that a check
 * that crashes the process still counts and a crash loop ends. If EFC_SLOTS_MAX_TRIALS
 * attempts were already counted, nothing is written and *exhausted = 1: the caller must call
 * efc_slots_rollback. Otherwise trial_attempts + 1 is persisted and *exhausted = 0.
 * EFC_EINVAL if there is no trial. */
enum efc_status efc_slots_trial_attempt(struct efc_slots *s, int *exhausted);
/* Health passed: one atomic state write: trial = 0, trial_attempts = 0, trial_tag = "",
 * min_version = max(min_version, active.version). EFC_EINVAL if there is no trial. */
enum efc_status efc_slots_commit(struct efc_slots *s);
/* Trial failed: one atomic state write: active = previous (or none), previous = none, the
 * failed slot invalid, trial = 0; min_version unchanged. The failed slot's files are then
 * removed (best effort: a failure there is logged, and the next open retries). EFC_EINVAL if
 * there is no trial. */
enum efc_status efc_slots_rollback(struct efc_slots *s);
/* Ordered revert of a committed install (a coordinator directive, per-class rollback): one
 * atomic state write: active = previous, previous = none; the old active's files are then
 * removed (best effort). min_version is NOT lowered: the directive is signed by the
 * coordinator, so going back to an install this device already ran and committed is not a
 * downgrade attack; but the reverted-from version stays the floor, so only a newer manifest
 * can be installed afterwards (a re-delivery of the old release is refused with EVERSION).
 * EFC_ENOTFOUND if there is no previous install, EFC_EBUSY during a trial (use rollback). */
enum efc_status efc_slots_revert(struct efc_slots *s);

/* ---- test-only fault injection (RELIABILITY.md D1, D4) -----------------------------------
 * Every open, write, fsync, rename, unlink and mkdir of this module goes through one counted
 * wrapper. efc_slots_fault(mode, k) resets the count and arms the k-th operation from now
 * (1-based; one shot): KILL raises SIGKILL before doing it, EIO / ENOSPC make it fail with
 * that errno. NONE (or k = 0) disarms. The environment variable EFC_SLOTS_FAULT=kill:K,
 * eio:K or enospc:K arms the same at the first efc_slots_open of the process (for crash tests
 * of a whole agent). efc_slots_io_count() = operations since the last efc_slots_fault call
 * (or process start). Process-global, not thread-safe: set it before threads start. */
enum efc_slots_fault_mode {
    EFC_SLOTS_FAULT_NONE = 0,
    EFC_SLOTS_FAULT_KILL = 1,
    EFC_SLOTS_FAULT_EIO = 2,
    EFC_SLOTS_FAULT_ENOSPC = 3,
};
void efc_slots_fault(enum efc_slots_fault_mode mode, uint64_t k);
uint64_t efc_slots_io_count(void);

/* ---- test-only I/O trace (RELIABILITY.md D2) ------------------------------------------------
 * efc_slots_trace(fn, ctx) makes every wrapped operation above (the ones the fault hook
 * counts) call fn(op, ctx) once it has run, in order, with what it did, failed ones included
 * (rc = -1, err = errno; an injected fault too). A test replays the list to check that each
 * write that matters is fsynced, and its directory entry too, before the step that depends on
 * it, and to build what a power cut could leave on disk. fn must not call this module; it may
 * change errno (restored). op and its strings are valid during the call only. NULL stops the
 * trace. EFC_ENOMEM if the descriptor table (about 64 KiB, freed by NULL) cannot be allocated.
 * Process-global, not thread-safe, like the fault hook; with no fn nothing is recorded. */
enum efc_slots_op_kind {
    EFC_SLOTS_OP_OPEN = 1, /* path, flags (O_CREAT, O_TRUNC, O_DIRECTORY...); rc = the fd */
    EFC_SLOTS_OP_WRITE,    /* one write(2): fd, path = the fd's, data[0..bytes) written */
    EFC_SLOTS_OP_FSYNC,    /* fd, path = the fd's; is_dir for a directory */
    EFC_SLOTS_OP_RENAME,   /* path -> path2 */
    EFC_SLOTS_OP_UNLINK,   /* path */
    EFC_SLOTS_OP_MKDIR,    /* path */
};
struct efc_slots_op {
    enum efc_slots_op_kind kind;
    const char *path;  /* write / fsync: "?" if the fd was not opened here while tracing */
    const char *path2; /* rename target, else NULL */
    int fd;            /* write / fsync: the descriptor, else -1 */
    int flags;         /* open: the open(2) flags (without O_CLOEXEC), else 0 */
    int is_dir;        /* open / fsync of a directory; mkdir */
    const void *data;  /* write: the bytes written */
    size_t bytes;
    int rc; /* open: the fd or -1; others: 0 or -1 */
    int err;
};
typedef void (*efc_slots_trace_fn)(const struct efc_slots_op *op, void *ctx);
enum efc_status efc_slots_trace(efc_slots_trace_fn fn, void *ctx);

#endif
