/* state.c — job journal and result outbox (state.h). */
#include "agent/state.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"

#define MAX_RESULT_BYTES (1 << 20)

struct efc_agent_state {
    char dir[3072];
};

static const char *const phase_names[] = {"new", "running", "done", "acked"};

static int id_ok(const char *id)
{
    size_t n = strnlen(id, 64);
    if (n < 1 || n > 63 || !strcmp(id, ".") || !strcmp(id, "..") || strstr(id, ".tmp."))
        return 0; /* ".tmp." marks efc_fs_write_atomic's temp files */
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static enum efc_status path_of(const struct efc_agent_state *s, const char *sub, const char *id,
                               char *out, size_t n)
{
    if (!id_ok(id))
        return efc_errf(EFC_EINVAL, "agent state: invalid job id '%.64s'", id);
    if (snprintf(out, n, "%s/%s/%s", s->dir, sub, id) >= (int)n)
        return efc_errf(EFC_EINVAL, "agent state: path too long under %s", s->dir);
    return EFC_OK;
}

/* Create dir (0700) if missing, and remove temp files an interrupted atomic write left. */
static enum efc_status mkdir_clean(const char *path)
{
    struct dirent *e;
    DIR *dh;
    char f[3400];
    enum efc_status st = efc_fs_mkdir_durable(path, 0700);
    if (st != EFC_OK)
        return st;
    if (!(dh = opendir(path)))
        return efc_errf(EFC_EIO, "agent state: cannot list %s: %s", path, strerror(errno));
    while ((e = readdir(dh)) != NULL)
        if (strstr(e->d_name, ".tmp.")) {
            snprintf(f, sizeof(f), "%s/%s", path, e->d_name);
            unlink(f);
        }
    closedir(dh);
    return EFC_OK;
}

enum efc_status efc_agent_state_open(const char *dir, struct efc_agent_state **out)
{
    struct efc_agent_state *s;
    char sub[3200];
    enum efc_status st;

    if (strlen(dir) >= sizeof(s->dir) - 80)
        return efc_errf(EFC_EINVAL, "agent state: state dir path too long");
    if (!(s = efc_calloc(1, sizeof(*s))))
        return efc_errf(EFC_ENOMEM, "agent state: out of memory");
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    if ((st = efc_fs_mkdir_durable(s->dir, 0700)) != EFC_OK)
        goto fail;
    snprintf(sub, sizeof(sub), "%s/jobs", s->dir);
    if ((st = mkdir_clean(sub)))
        goto fail;
    snprintf(sub, sizeof(sub), "%s/outbox", s->dir);
    if ((st = mkdir_clean(sub)))
        goto fail;
    *out = s;
    return EFC_OK;
fail:
    efc_free(s);
    return st;
}

void efc_agent_state_close(struct efc_agent_state *s)
{
    efc_free(s);
}

enum efc_status efc_agent_journal_get(struct efc_agent_state *s, const char *job_id,
                                      enum efc_agent_job_phase *out)
{
    char path[3200];
    void *buf = NULL;
    size_t len = 0;
    enum efc_status st = path_of(s, "jobs", job_id, path, sizeof(path));

    *out = EFC_AGENT_JOB_NEW;
    if (st)
        return st;
    st = efc_fs_read_all(path, 64, &buf, &len);
    if (st == EFC_ENOTFOUND)
        return EFC_OK;
    if (st)
        return st;
    st = efc_errf(EFC_EPROTO, "agent state: %s: unknown phase", path);
    for (int i = 0; i < 4; i++)
        if (len >= strlen(phase_names[i]) &&
            !strncmp(buf, phase_names[i], strlen(phase_names[i]))) {
            *out = (enum efc_agent_job_phase)i;
            st = EFC_OK;
        }
    efc_free(buf);
    return st;
}

enum efc_status efc_agent_journal_set(struct efc_agent_state *s, const char *job_id,
                                      enum efc_agent_job_phase phase)
{
    char path[3200], line[16];
    enum efc_agent_job_phase cur;
    enum efc_status st;

    if ((unsigned)phase > EFC_AGENT_JOB_ACKED)
        return efc_errf(EFC_EINVAL, "agent state: bad phase %d", (int)phase);
    if ((st = efc_agent_journal_get(s, job_id, &cur)) ||
        (st = path_of(s, "jobs", job_id, path, sizeof(path))))
        return st;
    if (phase <= cur && cur != EFC_AGENT_JOB_NEW)
        return EFC_OK; /* phases only move forward: replays change nothing */
    snprintf(line, sizeof(line), "%s\n", phase_names[phase]);
    return efc_fs_write_atomic(path, line, strlen(line));
}

enum efc_status efc_agent_outbox_put(struct efc_agent_state *s, const char *job_id,
                                     const void *payload, size_t len)
{
    char path[3200];
    enum efc_status st;

    if (len > MAX_RESULT_BYTES)
        return efc_errf(EFC_EINVAL, "agent state: result of %zu bytes", len);
    if ((st = path_of(s, "outbox", job_id, path, sizeof(path))) ||
        (st = efc_fs_write_atomic(path, payload, len)))
        return st;
    /* result durable first, then the journal: a crash in between leaves the job RUNNING with
     * its result in the outbox; the result is resent, and the ack moves the job to ACKED */
    return efc_agent_journal_set(s, job_id, EFC_AGENT_JOB_DONE);
}

enum efc_status efc_agent_outbox_ack(struct efc_agent_state *s, const char *job_id)
{
    char path[3200];
    enum efc_status st;

    if ((st = path_of(s, "outbox", job_id, path, sizeof(path))) ||
        (st = efc_agent_journal_set(s, job_id, EFC_AGENT_JOB_ACKED)))
        return st;
    if (unlink(path) != 0 && errno != ENOENT)
        return efc_errf(EFC_EIO, "agent state: cannot remove %s: %s", path, strerror(errno));
    return EFC_OK;
}

/* Walk dir/sub: fn for each valid id whose entry passes `want`. */
static enum efc_status walk(struct efc_agent_state *s, const char *sub,
                            enum efc_agent_job_phase want, efc_agent_outbox_fn fn, void *ctx)
{
    char d[3200], path[3600];
    struct dirent *e;
    enum efc_status st = EFC_OK;
    DIR *dh;

    snprintf(d, sizeof(d), "%s/%s", s->dir, sub);
    if (!(dh = opendir(d)))
        return efc_errf(EFC_EIO, "agent state: cannot list %s: %s", d, strerror(errno));
    while (!st && (e = readdir(dh)) != NULL) {
        void *buf = NULL;
        size_t len = 0;
        enum efc_agent_job_phase ph;
        if (!id_ok(e->d_name))
            continue; /* ".", "..", temp files of interrupted atomic writes */
        if (!strcmp(sub, "jobs")) {
            if ((st = efc_agent_journal_get(s, e->d_name, &ph)) || ph != want)
                continue;
            st = fn(ctx, e->d_name, NULL, 0);
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", d, e->d_name);
        if ((st = efc_fs_read_all(path, MAX_RESULT_BYTES, &buf, &len)) == EFC_OK)
            st = fn(ctx, e->d_name, buf, len);
        else if (st == EFC_ENOTFOUND)
            st = EFC_OK; /* acked meanwhile */
        efc_free(buf);
    }
    closedir(dh);
    return st;
}

enum efc_status efc_agent_outbox_each(struct efc_agent_state *s, efc_agent_outbox_fn fn,
                                      void *ctx)
{
    return walk(s, "outbox", EFC_AGENT_JOB_DONE, fn, ctx);
}

enum efc_status efc_agent_journal_interrupted(struct efc_agent_state *s,
                                              efc_agent_outbox_fn fn, void *ctx)
{
    return walk(s, "jobs", EFC_AGENT_JOB_RUNNING, fn, ctx);
}
