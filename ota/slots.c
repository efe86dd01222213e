/* slots.c — the agent's A/B model slots (slots.h, docs/ota.md "A/B slots on the agent").
 *
 * Invariants (checked when the state is parsed, kept by every transition):
 * - the state file names at most two installs, active and previous, in different slots;
 *   previous exists only if active does; trial = 1 only with an active install;
 * - a slot the state does not name holds no file the module will ever read: stage writes only
 *   into such a slot, open empties them;
 * - every transition builds the next state in a copy, writes it with one atomic replace, and
 *   only then adopts it in memory, so memory and disk agree after a success and after a
 *   failure (write_state restores the old file if the rename happened but the directory fsync
 *   failed).
 */
#include "ota/slots.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"

#define STATE_FORMAT 1
/* A state is under 1.5 KiB (two records with a policy of at most 255 characters, each of
 * which may double when escaped); anything bigger is not ours. */
#define STATE_MAX_BYTES 16384
#define COPY_BLOCK 65536
#define DIR_MAX 3900 /* leaves room for "/ota/a/manifest.json" and temp suffixes in 4096 */

static const char *const slot_files[3] = {"artifact", "manifest.json", "model.efm"};

struct rec {
    int valid;
    char name;
    uint64_t version;
    char policy[EFC_MANIFEST_STR_MAX];
    char sha256[EFC_SHA256_HEX_BYTES]; /* artifact */
    uint64_t artifact_bytes;
    char model_sha256[EFC_SHA256_HEX_BYTES];
    uint64_t model_bytes;
    char manifest_sha256[EFC_SHA256_HEX_BYTES];
    uint64_t manifest_bytes;
};

struct state {
    struct rec active, previous;
    int trial;
    int32_t trial_attempts;
    uint64_t min_version;
    char trial_tag[EFC_SLOTS_TAG_MAX];
};

struct efc_slots {
    char dir[DIR_MAX + 1]; /* <state_dir> */
    char ota[DIR_MAX + 8]; /* <state_dir>/ota */
    int lock_fd;           /* <state_dir>/ota opened O_DIRECTORY, flock'ed */
    struct state st;
    int staged;
    struct rec staged_rec;
    int fell_back;
    char fell_back_from;
    /* 1 if a failed state write could not restore the old file: memory and disk may differ,
     * so every later call refuses until the handle is reopened. */
    int broken;
};

/* ---- counted I/O layer --------------------------------------------------------------------
 * Every operation that can change or fail on the file system goes through fault_point(), so a
 * test can count the operations of an install and kill or fail the k-th one (SQLite
 * writecrash.test, RELIABILITY.md D1 / D4). */
static enum efc_slots_fault_mode fault_mode;
static uint64_t fault_k, io_n;
static int fault_env_done;

/* Test-only trace (RELIABILITY.md D2): the operations reported to trace_fn after they ran. A
 * write or fsync only has its fd, so the paths of the descriptors opened while tracing are kept
 * in a small table (at most 5 are open at once: the lock, a copy's source and destination, a
 * directory being fsynced). Everything here is skipped when trace_fn is NULL. */
#define TRACE_FDS 16
struct trace_fd {
    int fd;
    int is_dir;
    uint64_t seq; /* open order: the oldest entry is reused */
    char path[EFC_SLOTS_PATH_MAX];
};
static efc_slots_trace_fn trace_fn;
static void *trace_ctx;
static struct trace_fd *trace_fds;
static uint64_t trace_seq;

void efc_slots_fault(enum efc_slots_fault_mode mode, uint64_t k)
{
    fault_mode = k ? mode : EFC_SLOTS_FAULT_NONE;
    fault_k = k;
    io_n = 0;
}

uint64_t efc_slots_io_count(void)
{
    return io_n;
}

/* 0 to go ahead; -1 with errno set for an injected failure. */
static int fault_point(void)
{
    io_n++;
    if (fault_mode == EFC_SLOTS_FAULT_NONE || io_n != fault_k)
        return 0;
    if (fault_mode == EFC_SLOTS_FAULT_KILL)
        raise(SIGKILL); /* like a power cut for the process: no cleanup, no atexit */
    errno = fault_mode == EFC_SLOTS_FAULT_ENOSPC ? ENOSPC : EIO;
    return -1;
}

static void fault_from_env(void)
{
    const char *v = getenv("EFC_SLOTS_FAULT");
    const char *colon;
    enum efc_slots_fault_mode mode = EFC_SLOTS_FAULT_NONE;
    char *end = NULL;
    unsigned long long k;

    if (fault_env_done || !v || !*v)
        return;
    fault_env_done = 1;
    colon = strchr(v, ':');
    if (colon && colon - v == 4 && !strncmp(v, "kill", 4))
        mode = EFC_SLOTS_FAULT_KILL;
    else if (colon && colon - v == 3 && !strncmp(v, "eio", 3))
        mode = EFC_SLOTS_FAULT_EIO;
    else if (colon && colon - v == 6 && !strncmp(v, "enospc", 6))
        mode = EFC_SLOTS_FAULT_ENOSPC;
    errno = 0;
    k = colon && colon[1] >= '0' && colon[1] <= '9' ? strtoull(colon + 1, &end, 10) : 0;
    if (mode == EFC_SLOTS_FAULT_NONE || errno || !end || *end || !k) {
        efc_log(EFC_LOG_WARN, "ota",
                "slots: ignoring EFC_SLOTS_FAULT='%.40s' (want kill:K, "
                "eio:K or enospc:K)",
                v);
        return;
    }
    efc_log(EFC_LOG_WARN, "ota", "slots: fault injection armed: %s", v);
    efc_slots_fault(mode, k);
}

enum efc_status efc_slots_trace(efc_slots_trace_fn fn, void *ctx)
{
    if (fn && !trace_fds) {
        if (!(trace_fds = efc_calloc(TRACE_FDS, sizeof(*trace_fds))))
            return efc_errf(EFC_ENOMEM, "slots: out of memory");
        for (int i = 0; i < TRACE_FDS; i++)
            trace_fds[i].fd = -1;
    }
    if (!fn) {
        efc_free(trace_fds);
        trace_fds = NULL;
    }
    trace_fn = fn;
    trace_ctx = ctx;
    return EFC_OK;
}

static struct trace_fd *trace_find(int fd)
{
    for (int i = 0; i < TRACE_FDS; i++)
        if (trace_fds[i].fd == fd && fd >= 0)
            return &trace_fds[i];
    return NULL;
}

/* Report one operation; e is the errno of a failed one. errno is preserved for the caller. */
static void trace_emit(enum efc_slots_op_kind kind, const char *path, const char *path2, int fd,
                       int flags, const void *data, size_t bytes, int rc, int e)
{
    struct efc_slots_op op;
    struct trace_fd *t = NULL;

    memset(&op, 0, sizeof(op));
    op.kind = kind;
    op.fd = fd;
    op.flags = flags;
    op.data = data;
    op.bytes = bytes;
    op.rc = rc;
    op.err = rc < 0 ? e : 0;
    if (kind == EFC_SLOTS_OP_OPEN && rc >= 0) {
        /* a closed descriptor's number comes back from open(): same fd, new entry */
        if (!(t = trace_find(rc))) {
            t = &trace_fds[0];
            for (int i = 1; i < TRACE_FDS; i++)
                if (trace_fds[i].seq < t->seq)
                    t = &trace_fds[i];
        }
        t->fd = rc;
        t->is_dir = (flags & O_DIRECTORY) != 0;
        t->seq = ++trace_seq;
        snprintf(t->path, sizeof(t->path), "%s", path);
    }
    if (kind == EFC_SLOTS_OP_WRITE || kind == EFC_SLOTS_OP_FSYNC) {
        t = trace_find(fd);
        path = t ? t->path : "?";
        op.is_dir = t ? t->is_dir : 0;
    } else
        op.is_dir = kind == EFC_SLOTS_OP_MKDIR || (flags & O_DIRECTORY) != 0;
    op.path = path;
    op.path2 = path2;
    trace_fn(&op, trace_ctx);
    errno = e;
}

static int io_open(const char *path, int flags, mode_t mode)
{
    int fd = -1;
    if (!fault_point()) {
        do
            fd = open(path, flags | O_CLOEXEC, mode);
        while (fd < 0 && errno == EINTR);
    }
    if (trace_fn)
        trace_emit(EFC_SLOTS_OP_OPEN, path, NULL, -1, flags, NULL, 0, fd, errno);
    return fd;
}

/* Write all of p[0..n); each write(2) is one counted operation. */
static int io_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w;
        if (fault_point()) {
            if (trace_fn)
                trace_emit(EFC_SLOTS_OP_WRITE, NULL, NULL, fd, 0, c, 0, -1, errno);
            return -1;
        }
        w = write(fd, c, n);
        if (trace_fn)
            trace_emit(EFC_SLOTS_OP_WRITE, NULL, NULL, fd, 0, c, w > 0 ? (size_t)w : 0,
                       w < 0 ? -1 : 0, errno);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int io_fsync(int fd)
{
    int rc = fault_point() ? -1 : fsync(fd);
    if (trace_fn)
        trace_emit(EFC_SLOTS_OP_FSYNC, NULL, NULL, fd, 0, NULL, 0, rc, errno);
    return rc;
}

static int io_rename(const char *from, const char *to)
{
    int rc = fault_point() ? -1 : rename(from, to);
    if (trace_fn)
        trace_emit(EFC_SLOTS_OP_RENAME, from, to, -1, 0, NULL, 0, rc, errno);
    return rc;
}

static int io_unlink(const char *path)
{
    int rc = fault_point() ? -1 : unlink(path);
    if (trace_fn)
        trace_emit(EFC_SLOTS_OP_UNLINK, path, NULL, -1, 0, NULL, 0, rc, errno);
    return rc;
}

static int io_mkdir(const char *path, mode_t mode)
{
    int rc = fault_point() ? -1 : mkdir(path, mode);
    if (trace_fn)
        trace_emit(EFC_SLOTS_OP_MKDIR, path, NULL, -1, 0, NULL, 0, rc, errno);
    return rc;
}

static int io_fsync_dir(const char *path)
{
    int e, fd = io_open(path, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return -1;
    if (io_fsync(fd) != 0) {
        e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    return 0;
}

static enum efc_status io_status(int e)
{
    return e == ENOSPC ? EFC_ENOSPC : EFC_EIO;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void slot_path(const struct efc_slots *s, char slot, const char *file, char *out, size_t n)
{
    /* cannot truncate: open() limits dir to DIR_MAX */
    if (file)
        snprintf(out, n, "%s/%c/%s", s->ota, slot, file);
    else
        snprintf(out, n, "%s/%c", s->ota, slot);
}

/* The directory holding path's last component ("." for a bare name, "/" at the top). */
static void parent_dir(const char *path, char *out, size_t n)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    while (len > 0 && path[len - 1] != '/')
        len--;
    while (len > 1 && path[len - 1] == '/')
        len--;
    if (len == 0)
        snprintf(out, n, ".");
    else
        snprintf(out, n, "%.*s", (int)len, path);
}

static char other_slot(char c)
{
    return c == 'a' ? 'b' : 'a';
}

static int tag_ok(const char *t)
{
    size_t n = strnlen(t, EFC_SLOTS_TAG_MAX);
    if (n >= EFC_SLOTS_TAG_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (t[i] < 0x20 || t[i] > 0x7e)
            return 0;
    return 1;
}

/* Hash a file and return its size: EFC_ENOTFOUND if missing, EFC_EIO otherwise. */
static enum efc_status hash_file(const char *path, char hex[EFC_SHA256_HEX_BYTES], uint64_t *bytes)
{
    struct efc_sha256 h;
    uint8_t d[EFC_SHA256_BYTES];
    uint8_t *buf;
    uint64_t n = 0;
    ssize_t r;
    int e, fd = io_open(path, O_RDONLY, 0);

    if (fd < 0)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : io_status(errno),
                        "slots: cannot open %s: %s", path, strerror(errno));
    if (!(buf = efc_malloc(COPY_BLOCK))) {
        close(fd);
        return efc_errf(EFC_ENOMEM, "slots: out of memory");
    }
    efc_sha256_init(&h);
    while ((r = read(fd, buf, COPY_BLOCK)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            e = errno;
            efc_free(buf);
            close(fd);
            errno = e;
            return efc_errf(EFC_EIO, "slots: cannot read %s: %s", path, strerror(e));
        }
        efc_sha256_update(&h, buf, (size_t)r);
        n += (uint64_t)r;
    }
    efc_free(buf);
    close(fd);
    efc_sha256_final(&h, d);
    efc_sha256_hex(d, hex);
    *bytes = n;
    return EFC_OK;
}

/* Write p[0..n) to a new file dst (fsynced), hashing it. */
static enum efc_status write_file(const char *dst, const void *p, size_t n,
                                  char hex[EFC_SHA256_HEX_BYTES])
{
    uint8_t d[EFC_SHA256_BYTES];
    int e, fd = io_open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    if (fd < 0)
        return efc_errf(io_status(errno), "slots: cannot create %s: %s", dst, strerror(errno));
    if (io_write_all(fd, p, n) != 0 || io_fsync(fd) != 0) {
        e = errno;
        close(fd);
        errno = e;
        return efc_errf(io_status(e), "slots: cannot write %s: %s", dst, strerror(e));
    }
    if (close(fd) != 0)
        return efc_errf(io_status(errno), "slots: cannot write %s: %s", dst, strerror(errno));
    efc_sha256(p, n, d);
    efc_sha256_hex(d, hex);
    return EFC_OK;
}

/* Copy src to a new file dst (fsynced), hashing what was read. */
static enum efc_status copy_file(const char *src, const char *dst, char hex[EFC_SHA256_HEX_BYTES],
                                 uint64_t *bytes)
{
    struct efc_sha256 h;
    uint8_t d[EFC_SHA256_BYTES];
    uint8_t *buf = NULL;
    uint64_t n = 0;
    enum efc_status st;
    int e, in, out = -1;
    ssize_t r;

    if ((in = io_open(src, O_RDONLY, 0)) < 0)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : io_status(errno),
                        "slots: cannot open %s: %s", src, strerror(errno));
    if (!(buf = efc_malloc(COPY_BLOCK))) {
        close(in);
        return efc_errf(EFC_ENOMEM, "slots: out of memory");
    }
    if ((out = io_open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0) {
        st = efc_errf(io_status(errno), "slots: cannot create %s: %s", dst, strerror(errno));
        goto out;
    }
    efc_sha256_init(&h);
    while ((r = read(in, buf, COPY_BLOCK)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = efc_errf(EFC_EIO, "slots: cannot read %s: %s", src, strerror(errno));
            goto out;
        }
        efc_sha256_update(&h, buf, (size_t)r);
        n += (uint64_t)r;
        if (io_write_all(out, buf, (size_t)r) != 0) {
            st = efc_errf(io_status(errno), "slots: cannot write %s: %s", dst, strerror(errno));
            goto out;
        }
    }
    if (io_fsync(out) != 0) {
        st = efc_errf(io_status(errno), "slots: cannot fsync %s: %s", dst, strerror(errno));
        goto out;
    }
    e = close(out);
    out = -1;
    if (e != 0) {
        st = efc_errf(io_status(errno), "slots: cannot write %s: %s", dst, strerror(errno));
        goto out;
    }
    efc_sha256_final(&h, d);
    efc_sha256_hex(d, hex);
    *bytes = n;
    st = EFC_OK;
out:
    e = errno;
    if (out >= 0)
        close(out);
    close(in);
    efc_free(buf);
    errno = e;
    return st;
}

/* Remove every file in slot's directory (then fsync it if something went). Stops at the first
 * failure. *n_removed (may be NULL) counts what went. */
static enum efc_status empty_slot(struct efc_slots *s, char slot, int *n_removed)
{
    char d[EFC_SLOTS_PATH_MAX], f[EFC_SLOTS_PATH_MAX + 256];
    struct dirent *e;
    int removed = 0, err;
    DIR *dh;

    slot_path(s, slot, NULL, d, sizeof(d));
    if (!(dh = opendir(d)))
        return efc_errf(EFC_EIO, "slots: cannot list %s: %s", d, strerror(errno));
    while ((e = readdir(dh)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(f, sizeof(f), "%s/%s", d, e->d_name);
        if (io_unlink(f) != 0 && errno != ENOENT) {
            err = errno;
            closedir(dh);
            errno = err;
            return efc_errf(io_status(err), "slots: cannot remove %s: %s", f, strerror(err));
        }
        removed++;
    }
    closedir(dh);
    if (n_removed)
        *n_removed = removed;
    if (removed && io_fsync_dir(d) != 0)
        return efc_errf(io_status(errno), "slots: cannot fsync %s: %s", d, strerror(errno));
    return EFC_OK;
}

/* ---- state file ----------------------------------------------------------------------------
 * Line 1: compact JSON written by encode_state (fixed member order, u64 as decimal strings as
 * in manifests, only '"' and '\' escaped: every string is printable ASCII). Line 2: SHA-256 of
 * line 1 in hex, so bit rot or a foreign file is refused instead of believed. */

static size_t put_str(char *out, size_t cap, size_t off, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            if (off + 1 < cap)
                out[off] = '\\';
            off++;
        }
        if (off + 1 < cap)
            out[off] = *s;
        off++;
    }
    if (off < cap)
        out[off] = '\0';
    return off;
}

static size_t put_fmt(char *out, size_t cap, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t put_fmt(char *out, size_t cap, size_t off, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(off < cap ? out + off : NULL, off < cap ? cap - off : 0, fmt, ap);
    va_end(ap);
    return off + (n > 0 ? (size_t)n : 0);
}

static size_t put_rec(char *out, size_t cap, size_t off, const struct rec *r)
{
    if (!r->valid)
        return put_fmt(out, cap, off, "null");
    off = put_fmt(out, cap, off, "{\"slot\":\"%c\",\"version\":\"%llu\",\"policy\":\"", r->name,
                  (unsigned long long)r->version);
    off = put_str(out, cap, off, r->policy);
    off = put_fmt(out, cap, off,
                  "\",\"artifact_sha256\":\"%s\",\"artifact_bytes\":\"%llu\","
                  "\"model_sha256\":\"%s\",\"model_bytes\":\"%llu\","
                  "\"manifest_sha256\":\"%s\",\"manifest_bytes\":\"%llu\"}",
                  r->sha256, (unsigned long long)r->artifact_bytes, r->model_sha256,
                  (unsigned long long)r->model_bytes, r->manifest_sha256,
                  (unsigned long long)r->manifest_bytes);
    return off;
}

/* Encode into out[0..cap): returns the length (>= cap means it did not fit). */
static size_t encode_state(const struct state *st, char *out, size_t cap)
{
    uint8_t d[EFC_SHA256_BYTES];
    char hex[EFC_SHA256_HEX_BYTES];
    size_t off;

    off = put_fmt(out, cap, 0,
                  "{\"format\":%d,\"min_version\":\"%llu\",\"trial\":%d,\"trial_attempts\":%d,"
                  "\"trial_tag\":\"",
                  STATE_FORMAT, (unsigned long long)st->min_version, st->trial,
                  (int)st->trial_attempts);
    off = put_str(out, cap, off, st->trial_tag);
    off = put_fmt(out, cap, off, "\",\"active\":");
    off = put_rec(out, cap, off, &st->active);
    off = put_fmt(out, cap, off, ",\"previous\":");
    off = put_rec(out, cap, off, &st->previous);
    off = put_fmt(out, cap, off, "}");
    if (off + EFC_SHA256_HEX_BYTES + 2 > cap)
        return cap;
    efc_sha256(out, off, d);
    efc_sha256_hex(d, hex);
    return put_fmt(out, cap, off, "\n%s\n", hex);
}

/* Strict decimal u64: digits only, no sign, no leading zero. */
static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned dgt;
        if (s[i] < '0' || s[i] > '9')
            return -1;
        dgt = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - dgt) / 10)
            return -1;
        v = v * 10 + dgt;
    }
    *out = v;
    return 0;
}

static int hex64_ok(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* A string member that must exist and fit in cap - 1 bytes of printable ASCII. */
static const char *get_str(const cJSON *o, const char *name, size_t cap)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    const char *v = cJSON_IsString(it) ? it->valuestring : NULL;
    if (!v || strlen(v) >= cap)
        return NULL;
    for (const char *p = v; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            return NULL;
    return v;
}

static int get_u64(const cJSON *o, const char *name, uint64_t *out)
{
    const char *v = get_str(o, name, 24);
    return v ? parse_u64(v, out) : -1;
}

/* An integer member in [lo, hi]. */
static int get_int(const cJSON *o, const char *name, int lo, int hi, int *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(it) || it->valuedouble < lo || it->valuedouble > hi ||
        it->valuedouble != (double)(int)it->valuedouble)
        return -1;
    *out = (int)it->valuedouble;
    return 0;
}

static const char *parse_rec(const cJSON *o, struct rec *r)
{
    const char *v;
    memset(r, 0, sizeof(*r));
    if (cJSON_IsNull(o))
        return NULL;
    if (!cJSON_IsObject(o))
        return "slot record is not an object";
    if (!(v = get_str(o, "slot", 2)) || (v[0] != 'a' && v[0] != 'b'))
        return "bad slot name";
    r->name = v[0];
    if (get_u64(o, "version", &r->version))
        return "bad version";
    if (!(v = get_str(o, "policy", sizeof(r->policy))))
        return "bad policy";
    snprintf(r->policy, sizeof(r->policy), "%s", v);
    if (!(v = get_str(o, "artifact_sha256", 65)) || !hex64_ok(v))
        return "bad artifact_sha256";
    snprintf(r->sha256, sizeof(r->sha256), "%s", v);
    if (!(v = get_str(o, "model_sha256", 65)) || !hex64_ok(v))
        return "bad model_sha256";
    snprintf(r->model_sha256, sizeof(r->model_sha256), "%s", v);
    if (!(v = get_str(o, "manifest_sha256", 65)) || !hex64_ok(v))
        return "bad manifest_sha256";
    snprintf(r->manifest_sha256, sizeof(r->manifest_sha256), "%s", v);
    if (get_u64(o, "artifact_bytes", &r->artifact_bytes) ||
        get_u64(o, "model_bytes", &r->model_bytes) ||
        get_u64(o, "manifest_bytes", &r->manifest_bytes))
        return "bad byte count";
    if (r->manifest_bytes < 1 || r->manifest_bytes > EFC_MANIFEST_MAX_BYTES)
        return "manifest_bytes out of range";
    r->valid = 1;
    return NULL;
}

/* Parse and validate a state file's bytes (buf[len] == '\0'). */
static enum efc_status decode_state(const char *path, const char *buf, size_t len, struct state *st)
{
    uint8_t d[EFC_SHA256_BYTES];
    char hex[EFC_SHA256_HEX_BYTES];
    const char *nl = memchr(buf, '\n', len), *why = NULL, *v;
    cJSON *root;
    int format, trial, attempts;
    size_t n1;

    memset(st, 0, sizeof(*st));
    if (!nl || strlen(buf) != len)
        return efc_errf(EFC_EPROTO, "slots: %s: not a state file (no checksum line)", path);
    n1 = (size_t)(nl - buf);
    efc_sha256(buf, n1, d);
    efc_sha256_hex(d, hex);
    if (len != n1 + 1 + 64 + 1 || memcmp(nl + 1, hex, 64) || buf[len - 1] != '\n')
        return efc_errf(EFC_EPROTO, "slots: %s: checksum mismatch (truncated or corrupt)", path);
    root = cJSON_ParseWithLength(buf, n1);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return efc_errf(EFC_EPROTO, "slots: %s: not a JSON object", path);
    }
    if (get_int(root, "format", 0, 1000000, &format))
        why = "bad format";
    else if (format != STATE_FORMAT) {
        cJSON_Delete(root);
        return efc_errf(EFC_EVERSION, "slots: %s: state format %d, this build reads %d", path,
                        format, STATE_FORMAT);
    } else if (get_u64(root, "min_version", &st->min_version))
        why = "bad min_version";
    else if (get_int(root, "trial", 0, 1, &trial))
        why = "bad trial";
    else if (get_int(root, "trial_attempts", 0, EFC_SLOTS_MAX_TRIALS, &attempts))
        why = "bad trial_attempts";
    else if (!(v = get_str(root, "trial_tag", sizeof(st->trial_tag))))
        why = "bad trial_tag";
    else if (!(why = parse_rec(cJSON_GetObjectItemCaseSensitive(root, "active"), &st->active)) &&
             !(why =
                   parse_rec(cJSON_GetObjectItemCaseSensitive(root, "previous"), &st->previous))) {
        st->trial = trial;
        st->trial_attempts = attempts;
        snprintf(st->trial_tag, sizeof(st->trial_tag), "%s", v);
        if (st->previous.valid && !st->active.valid)
            why = "previous without active";
        else if (st->previous.valid && st->previous.name == st->active.name)
            why = "active and previous in the same slot";
        else if (st->trial && !st->active.valid)
            why = "trial without active";
        else if (!st->trial && (st->trial_attempts || st->trial_tag[0]))
            why = "trial fields without trial";
    }
    cJSON_Delete(root);
    if (why) {
        memset(st, 0, sizeof(*st));
        return efc_errf(EFC_EPROTO, "slots: %s: %s", path, why);
    }
    return EFC_OK;
}

/* Read the state file into *st; *missing = 1 (and an empty state) if there is none. */
static enum efc_status read_state(struct efc_slots *s, struct state *st, int *missing)
{
    char path[EFC_SLOTS_PATH_MAX];
    char *buf;
    size_t len = 0;
    struct stat sb;
    enum efc_status rc;
    ssize_t r;
    int fd;

    memset(st, 0, sizeof(*st));
    *missing = 0;
    snprintf(path, sizeof(path), "%s/state", s->ota);
    if ((fd = io_open(path, O_RDONLY, 0)) < 0) {
        if (errno == ENOENT) {
            *missing = 1;
            return EFC_OK;
        }
        return efc_errf(io_status(errno), "slots: cannot open %s: %s", path, strerror(errno));
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > STATE_MAX_BYTES) {
        close(fd);
        return efc_errf(EFC_EPROTO, "slots: %s: not a regular file of at most %d bytes", path,
                        STATE_MAX_BYTES);
    }
    if (!(buf = efc_malloc((size_t)sb.st_size + 1))) {
        close(fd);
        return efc_errf(EFC_ENOMEM, "slots: out of memory");
    }
    while (len < (size_t)sb.st_size) {
        r = read(fd, buf + len, (size_t)sb.st_size - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            efc_free(buf);
            errno = e;
            return efc_errf(EFC_EIO, "slots: cannot read %s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    rc = decode_state(path, buf, len, st);
    efc_free(buf);
    return rc;
}

/* Replace <ota>/state with buf[0..len): temp, write, fsync, rename, fsync dir. *renamed = 1
 * once the rename happened (the new state may then be what the next open reads). */
static enum efc_status replace_state(struct efc_slots *s, const char *buf, size_t len, int *renamed)
{
    char tmp[EFC_SLOTS_PATH_MAX], path[EFC_SLOTS_PATH_MAX];
    int e, fd;

    *renamed = 0;
    snprintf(path, sizeof(path), "%s/state", s->ota);
    snprintf(tmp, sizeof(tmp), "%s/state.tmp.%ld", s->ota, (long)getpid());
    if ((fd = io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0)
        return efc_errf(io_status(errno), "slots: cannot create %s: %s", tmp, strerror(errno));
    if (io_write_all(fd, buf, len) != 0 || io_fsync(fd) != 0)
        goto fail;
    e = close(fd);
    fd = -1;
    if (e != 0 || io_rename(tmp, path) != 0)
        goto fail;
    *renamed = 1;
    if (io_fsync_dir(s->ota) != 0)
        return efc_errf(io_status(errno), "slots: cannot fsync %s: %s", s->ota, strerror(errno));
    return EFC_OK;
fail:
    e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp); /* not counted: cleanup of our own temp file must not be skipped by a test */
    errno = e;
    return efc_errf(io_status(e), "slots: cannot write %s: %s", path, strerror(e));
}

/* Persist next and adopt it. On failure memory keeps the old state, and so does the disk: if
 * the rename happened but its directory fsync failed, the old state is written back. */
static enum efc_status write_state(struct efc_slots *s, const struct state *next)
{
    char nbuf[STATE_MAX_BYTES], obuf[STATE_MAX_BYTES], detail[512];
    size_t nlen = encode_state(next, nbuf, sizeof(nbuf)), olen;
    enum efc_status st;
    int renamed, r2, e;

    if (nlen >= sizeof(nbuf))
        return efc_errf(EFC_EINTERNAL, "slots: state does not fit in %d bytes", STATE_MAX_BYTES);
    st = replace_state(s, nbuf, nlen, &renamed);
    if (st == EFC_OK) {
        s->st = *next;
        return EFC_OK;
    }
    if (!renamed)
        return st;
    e = errno;
    snprintf(detail, sizeof(detail), "%s", efc_err_detail());
    olen = encode_state(&s->st, obuf, sizeof(obuf));
    if (replace_state(s, obuf, olen, &r2) != EFC_OK) {
        s->broken = 1;
        efc_log(EFC_LOG_ERROR, "ota",
                "slots: state write failed and the old state could not "
                "be restored: %s; reopen required",
                efc_err_detail());
    }
    errno = e;
    return efc_errf(st, "%s", detail);
}

static enum efc_status check_usable(struct efc_slots *s)
{
    if (!s)
        return efc_errf(EFC_EINVAL, "slots: NULL handle");
    if (s->broken)
        return efc_errf(EFC_EIO, "slots: %s: state unknown after a failed write; reopen", s->ota);
    return EFC_OK;
}

/* Compare a recorded install with its files: EFC_EHASH (with a detail naming the file) if one
 * is missing, has another size or another digest; EFC_EIO if it cannot be read. */
static enum efc_status verify_rec(struct efc_slots *s, const struct rec *r)
{
    const char *want[3] = {r->sha256, r->manifest_sha256, r->model_sha256};
    uint64_t want_bytes[3] = {r->artifact_bytes, r->manifest_bytes, r->model_bytes};
    char path[EFC_SLOTS_PATH_MAX], hex[EFC_SHA256_HEX_BYTES];
    uint64_t n = 0;
    enum efc_status st;

    for (int i = 0; i < 3; i++) {
        slot_path(s, r->name, slot_files[i], path, sizeof(path));
        st = hash_file(path, hex, &n);
        if (st == EFC_ENOTFOUND)
            return efc_errf(EFC_EHASH, "slots: %s is missing", path);
        if (st)
            return st;
        if (n != want_bytes[i] || strcmp(hex, want[i]))
            return efc_errf(EFC_EHASH,
                            "slots: %s: %llu bytes sha256 %.16s..., recorded %llu "
                            "bytes %.16s...",
                            path, (unsigned long long)n, hex, (unsigned long long)want_bytes[i],
                            want[i]);
    }
    return EFC_OK;
}

/* Remove temp files (names containing ".tmp.") in dir. */
static enum efc_status remove_temps(const char *dir)
{
    char f[EFC_SLOTS_PATH_MAX + 256];
    struct dirent *e;
    DIR *dh;
    int err;

    if (!(dh = opendir(dir)))
        return efc_errf(EFC_EIO, "slots: cannot list %s: %s", dir, strerror(errno));
    while ((e = readdir(dh)) != NULL) {
        if (!strstr(e->d_name, ".tmp."))
            continue;
        snprintf(f, sizeof(f), "%s/%s", dir, e->d_name);
        if (io_unlink(f) != 0 && errno != ENOENT) {
            err = errno;
            closedir(dh);
            errno = err;
            return efc_errf(io_status(err), "slots: cannot remove %s: %s", f, strerror(err));
        }
    }
    closedir(dh);
    return EFC_OK;
}

/* mkdir that tolerates an existing directory; *created = 1 if it made one. */
static enum efc_status make_dir(const char *path, int *created)
{
    struct stat sb;
    *created = 0;
    if (io_mkdir(path, 0700) == 0) {
        *created = 1;
        return EFC_OK;
    }
    if (errno == EEXIST && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return EFC_OK;
    return efc_errf(errno == EEXIST ? EFC_EIO : io_status(errno), "slots: cannot create %s: %s",
                    path, errno == EEXIST ? "not a directory" : strerror(errno));
}

/* ---- open / close / status ---------------------------------------------------------------- */

static enum efc_status recover(struct efc_slots *s)
{
    struct state next;
    char d[EFC_SLOTS_PATH_MAX];
    enum efc_status st;
    int missing, changed = 0, n;

    if ((st = remove_temps(s->ota)))
        return st;
    if ((st = read_state(s, &s->st, &missing)))
        return st;
    if (missing)
        efc_log(EFC_LOG_INFO, "ota", "slots: no state in %s: fresh (no install, min_version 0)",
                s->ota);
    next = s->st;
    if (next.active.valid) {
        st = verify_rec(s, &next.active);
        if (st != EFC_OK && st != EFC_EHASH)
            return st;
        if (st == EFC_EHASH) {
            efc_log(EFC_LOG_ERROR, "ota",
                    "slots: active slot=%c version=%llu is corrupt (%s): "
                    "falling back to %s",
                    next.active.name, (unsigned long long)next.active.version, efc_err_detail(),
                    next.previous.valid ? "the previous install" : "no install");
            s->fell_back = 1;
            s->fell_back_from = next.active.name;
            next.active = next.previous;
            memset(&next.previous, 0, sizeof(next.previous));
            next.trial = 0;
            next.trial_attempts = 0;
            next.trial_tag[0] = '\0';
            changed = 1;
        }
    }
    /* the fallback target is checked here too (it was previous a moment ago) */
    for (int pass = 0; pass < 2; pass++) {
        struct rec *r = pass == 0 ? &next.active : &next.previous;
        if (!r->valid || (pass == 0 && !s->fell_back))
            continue;
        st = verify_rec(s, r);
        if (st != EFC_OK && st != EFC_EHASH)
            return st;
        if (st == EFC_EHASH) {
            efc_log(EFC_LOG_ERROR, "ota",
                    "slots: %s slot=%c version=%llu is corrupt (%s): "
                    "dropped",
                    pass == 0 ? "fallback" : "previous", r->name, (unsigned long long)r->version,
                    efc_err_detail());
            memset(r, 0, sizeof(*r));
            if (pass == 0)
                memset(&next.previous, 0, sizeof(next.previous));
            changed = 1;
        }
    }
    if (changed && (st = write_state(s, &next)))
        return st;
    for (char c = 'a'; c <= 'b'; c++) {
        if ((s->st.active.valid && s->st.active.name == c) ||
            (s->st.previous.valid && s->st.previous.name == c))
            continue;
        slot_path(s, c, NULL, d, sizeof(d));
        /* an unused slot: a stage that never switched, a rolled-back or dropped install */
        n = 0;
        if ((st = empty_slot(s, c, &n)))
            return st;
        if (n)
            efc_log(EFC_LOG_INFO, "ota", "slots: emptied unused slot=%c (%d files)", c, n);
    }
    for (char c = 'a'; c <= 'b'; c++) {
        slot_path(s, c, NULL, d, sizeof(d));
        if ((st = remove_temps(d)))
            return st;
    }
    if (s->st.active.valid)
        efc_log(EFC_LOG_INFO, "ota", "slots: open: active slot=%c version=%llu%s min_version=%llu",
                s->st.active.name, (unsigned long long)s->st.active.version,
                s->st.trial ? " (on trial)" : "", (unsigned long long)s->st.min_version);
    return EFC_OK;
}

enum efc_status efc_slots_open(const char *state_dir, struct efc_slots **out)
{
    struct efc_slots *s;
    char d[EFC_SLOTS_PATH_MAX];
    enum efc_status st;
    int created, any = 0;

    if (!state_dir || !out)
        return efc_errf(EFC_EINVAL, "slots: NULL argument");
    *out = NULL;
    if (!*state_dir || strlen(state_dir) > DIR_MAX)
        return efc_errf(EFC_EINVAL, "slots: state dir path empty or longer than %d", DIR_MAX);
    fault_from_env();
    if (!(s = efc_calloc(1, sizeof(*s))))
        return efc_errf(EFC_ENOMEM, "slots: out of memory");
    s->lock_fd = -1;
    snprintf(s->dir, sizeof(s->dir), "%s", state_dir);
    snprintf(s->ota, sizeof(s->ota), "%s/ota", state_dir);
    if ((st = make_dir(s->dir, &created)))
        goto fail;
    /* a new directory entry is durable only once its parent is fsynced: without this a power
     * cut could lose a state dir made here with everything committed in it since, the
     * anti-rollback minimum included (found by the D2 trace test, test_power_cut) */
    if (created) {
        parent_dir(s->dir, d, sizeof(d));
        if (io_fsync_dir(d) != 0) {
            st = efc_errf(io_status(errno), "slots: cannot fsync %s: %s", d, strerror(errno));
            goto fail;
        }
    }
    if ((st = make_dir(s->ota, &created)))
        goto fail;
    if (created && io_fsync_dir(s->dir) != 0) {
        st = efc_errf(io_status(errno), "slots: cannot fsync %s: %s", s->dir, strerror(errno));
        goto fail;
    }
    if ((s->lock_fd = io_open(s->ota, O_RDONLY | O_DIRECTORY, 0)) < 0) {
        st = efc_errf(io_status(errno), "slots: cannot open %s: %s", s->ota, strerror(errno));
        goto fail;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        st = errno == EWOULDBLOCK
                 ? efc_errf(EFC_EBUSY, "slots: %s is in use by another handle", s->ota)
                 : efc_errf(EFC_EIO, "slots: cannot lock %s: %s", s->ota, strerror(errno));
        goto fail;
    }
    for (char c = 'a'; c <= 'b'; c++) {
        slot_path(s, c, NULL, d, sizeof(d));
        if ((st = make_dir(d, &created)))
            goto fail;
        any |= created;
    }
    if (any && io_fsync_dir(s->ota) != 0) {
        st = efc_errf(io_status(errno), "slots: cannot fsync %s: %s", s->ota, strerror(errno));
        goto fail;
    }
    if ((st = recover(s)))
        goto fail;
    *out = s;
    return EFC_OK;
fail:
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    efc_free(s);
    return st;
}

void efc_slots_close(struct efc_slots *s)
{
    if (!s)
        return;
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    efc_free(s);
}

static void fill_info(const struct efc_slots *s, const struct rec *r, struct efc_slot_info *o)
{
    memset(o, 0, sizeof(*o));
    if (!r->valid)
        return;
    o->valid = 1;
    o->name = r->name;
    snprintf(o->sha256, sizeof(o->sha256), "%s", r->sha256);
    o->artifact_bytes = r->artifact_bytes;
    o->version = r->version;
    snprintf(o->policy, sizeof(o->policy), "%s", r->policy);
    slot_path(s, r->name, "model.efm", o->model_path, sizeof(o->model_path));
    slot_path(s, r->name, "artifact", o->artifact_path, sizeof(o->artifact_path));
    slot_path(s, r->name, "manifest.json", o->manifest_path, sizeof(o->manifest_path));
    snprintf(o->model_sha256, sizeof(o->model_sha256), "%s", r->model_sha256);
    o->model_bytes = r->model_bytes;
    snprintf(o->manifest_sha256, sizeof(o->manifest_sha256), "%s", r->manifest_sha256);
}

enum efc_status efc_slots_status(struct efc_slots *s, struct efc_slots_status *out)
{
    if (!s || !out)
        return efc_errf(EFC_EINVAL, "slots: NULL argument");
    memset(out, 0, sizeof(*out));
    out->has_active = s->st.active.valid;
    fill_info(s, &s->st.active, &out->active);
    fill_info(s, &s->st.previous, &out->previous);
    out->trial = s->st.trial;
    out->trial_attempts = s->st.trial_attempts;
    out->min_version = s->st.min_version;
    snprintf(out->trial_tag, sizeof(out->trial_tag), "%s", s->st.trial_tag);
    out->staged = s->staged;
    out->fell_back = s->fell_back;
    out->fell_back_from = s->fell_back_from;
    return EFC_OK;
}

/* ---- transitions -------------------------------------------------------------------------- */

enum efc_status efc_slots_stage(struct efc_slots *s, const char *manifest_json, size_t len,
                                const struct efc_manifest *m, const char *artifact_src,
                                const char *model_src)
{
    char path[EFC_SLOTS_PATH_MAX], hex[EFC_SHA256_HEX_BYTES], want[EFC_SHA256_HEX_BYTES];
    struct rec r;
    struct state next;
    enum efc_status st;
    char target;
    int e;

    if ((st = check_usable(s)))
        return st;
    if (!manifest_json || !m || !artifact_src || !model_src)
        return efc_errf(EFC_EINVAL, "slots: stage: NULL argument");
    if (len < 1 || len > EFC_MANIFEST_MAX_BYTES)
        return efc_errf(EFC_EINVAL, "slots: stage: manifest of %zu bytes (1..%u)", len,
                        EFC_MANIFEST_MAX_BYTES);
    if (s->st.trial)
        return efc_errf(EFC_EBUSY,
                        "slots: stage: slot=%c is on trial (commit or roll back "
                        "first)",
                        s->st.active.name);
    if (m->version < s->st.min_version)
        return efc_errf(EFC_EVERSION, "slots: stage: version %llu below the minimum %llu",
                        (unsigned long long)m->version, (unsigned long long)s->st.min_version);
    if (strnlen(m->policy, sizeof(m->policy)) >= sizeof(m->policy))
        return efc_errf(EFC_EINVAL, "slots: stage: manifest policy not terminated");
    for (const char *p = m->policy; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            return efc_errf(EFC_EINVAL, "slots: stage: manifest policy not printable");
    target = s->st.active.valid ? other_slot(s->st.active.name) : 'a';
    s->staged = 0;
    if (s->st.previous.valid && s->st.previous.name == target) {
        /* the only rollback target lives where the new install goes: it is dropped in its own
         * state write first, so no state ever names a slot whose files are being replaced */
        next = s->st;
        memset(&next.previous, 0, sizeof(next.previous));
        if ((st = write_state(s, &next)))
            return st;
        efc_log(EFC_LOG_INFO, "ota", "slots: dropped previous slot=%c to stage into it", target);
    }
    if ((st = empty_slot(s, target, NULL)))
        goto fail;
    memset(&r, 0, sizeof(r));
    r.name = target;
    r.version = m->version;
    snprintf(r.policy, sizeof(r.policy), "%s", m->policy);
    slot_path(s, target, "manifest.json", path, sizeof(path));
    if ((st = write_file(path, manifest_json, len, r.manifest_sha256)))
        goto fail;
    r.manifest_bytes = len;
    slot_path(s, target, "artifact", path, sizeof(path));
    if ((st = copy_file(artifact_src, path, hex, &r.artifact_bytes)))
        goto fail;
    efc_sha256_hex(m->artifact_sha256, want);
    if (r.artifact_bytes != m->artifact_bytes || strcmp(hex, want)) {
        st = efc_errf(EFC_EHASH,
                      "slots: stage: %s: %llu bytes sha256 %.16s..., manifest says "
                      "%llu bytes %.16s...",
                      artifact_src, (unsigned long long)r.artifact_bytes, hex,
                      (unsigned long long)m->artifact_bytes, want);
        goto fail;
    }
    snprintf(r.sha256, sizeof(r.sha256), "%s", hex);
    slot_path(s, target, "model.efm", path, sizeof(path));
    if ((st = copy_file(model_src, path, r.model_sha256, &r.model_bytes)))
        goto fail;
    slot_path(s, target, NULL, path, sizeof(path));
    if (io_fsync_dir(path) != 0) {
        st = efc_errf(io_status(errno), "slots: cannot fsync %s: %s", path, strerror(errno));
        goto fail;
    }
    r.valid = 1;
    s->staged_rec = r;
    s->staged = 1;
    efc_log(EFC_LOG_INFO, "ota", "slots: staged slot=%c version=%llu artifact=%.16s", target,
            (unsigned long long)r.version, r.sha256);
    return EFC_OK;
fail:
    /* leave no partial install behind (D4: free space back); the slot was invalid all along */
    e = errno;
    {
        char detail[512];
        snprintf(detail, sizeof(detail), "%s", efc_err_detail());
        if (empty_slot(s, target, NULL) != EFC_OK)
            efc_log(EFC_LOG_WARN, "ota", "slots: cannot empty slot=%c after a failed stage: %s",
                    target, efc_err_detail());
        efc_errf(st, "%s", detail);
    }
    errno = e;
    return st;
}

enum efc_status efc_slots_switch(struct efc_slots *s, const char *tag)
{
    struct state next;
    enum efc_status st;

    if ((st = check_usable(s)))
        return st;
    if (!tag)
        tag = "";
    if (!tag_ok(tag))
        return efc_errf(EFC_EINVAL, "slots: switch: tag is not 0..%d printable ASCII",
                        EFC_SLOTS_TAG_MAX - 1);
    if (!s->staged)
        return efc_errf(EFC_EINVAL, "slots: switch: nothing staged");
    if (s->st.trial)
        return efc_errf(EFC_EBUSY, "slots: switch: slot=%c is on trial", s->st.active.name);
    if ((st = verify_rec(s, &s->staged_rec)))
        return st;
    next = s->st;
    next.previous = s->st.active;
    next.active = s->staged_rec;
    next.trial = 1;
    next.trial_attempts = 0;
    snprintf(next.trial_tag, sizeof(next.trial_tag), "%s", tag);
    if ((st = write_state(s, &next)))
        return st;
    s->staged = 0;
    efc_log(EFC_LOG_INFO, "ota",
            "slots: switch: active slot=%c version=%llu on trial tag=%s "
            "(previous %c)",
            next.active.name, (unsigned long long)next.active.version, tag,
            next.previous.valid ? next.previous.name : '-');
    return EFC_OK;
}

enum efc_status efc_slots_trial_attempt(struct efc_slots *s, int *exhausted)
{
    struct state next;
    enum efc_status st;

    if ((st = check_usable(s)))
        return st;
    if (!exhausted)
        return efc_errf(EFC_EINVAL, "slots: trial_attempt: NULL argument");
    *exhausted = 0;
    if (!s->st.trial)
        return efc_errf(EFC_EINVAL, "slots: trial_attempt: no trial");
    if (s->st.trial_attempts >= EFC_SLOTS_MAX_TRIALS) {
        *exhausted = 1;
        efc_log(EFC_LOG_WARN, "ota",
                "slots: trial of slot=%c version=%llu tag=%s: %d attempts "
                "used, roll back",
                s->st.active.name, (unsigned long long)s->st.active.version, s->st.trial_tag,
                (int)s->st.trial_attempts);
        return EFC_OK;
    }
    next = s->st;
    next.trial_attempts++;
    return write_state(s, &next);
}

enum efc_status efc_slots_commit(struct efc_slots *s)
{
    struct state next;
    enum efc_status st;

    if ((st = check_usable(s)))
        return st;
    if (!s->st.trial)
        return efc_errf(EFC_EINVAL, "slots: commit: no trial");
    next = s->st;
    next.trial = 0;
    next.trial_attempts = 0;
    next.trial_tag[0] = '\0';
    if (next.active.version > next.min_version)
        next.min_version = next.active.version;
    if ((st = write_state(s, &next)))
        return st;
    efc_log(EFC_LOG_INFO, "ota", "slots: commit: slot=%c version=%llu min_version=%llu",
            next.active.name, (unsigned long long)next.active.version,
            (unsigned long long)next.min_version);
    return EFC_OK;
}

/* active = previous, previous = none, trial over; then remove the left slot's files. */
static enum efc_status go_back(struct efc_slots *s, const char *what)
{
    struct state next;
    enum efc_status st;
    char left = s->st.active.name;

    next = s->st;
    next.active = s->st.previous;
    memset(&next.previous, 0, sizeof(next.previous));
    next.trial = 0;
    next.trial_attempts = 0;
    next.trial_tag[0] = '\0';
    if ((st = write_state(s, &next)))
        return st;
    if (next.active.valid)
        efc_log(EFC_LOG_WARN, "ota", "slots: %s: left slot=%c, active slot=%c version=%llu", what,
                left, next.active.name, (unsigned long long)next.active.version);
    else
        efc_log(EFC_LOG_WARN, "ota", "slots: %s: left slot=%c, no active install", what, left);
    /* the state no longer names the slot: its files are garbage, removed now or at next open */
    if (empty_slot(s, left, NULL) != EFC_OK)
        efc_log(EFC_LOG_WARN, "ota", "slots: %s: cannot empty slot=%c (next open retries): %s",
                what, left, efc_err_detail());
    return EFC_OK;
}

enum efc_status efc_slots_rollback(struct efc_slots *s)
{
    enum efc_status st;

    if ((st = check_usable(s)))
        return st;
    if (!s->st.trial)
        return efc_errf(EFC_EINVAL, "slots: rollback: no trial");
    return go_back(s, "rollback");
}

enum efc_status efc_slots_revert(struct efc_slots *s)
{
    enum efc_status st;

    if ((st = check_usable(s)))
        return st;
    if (s->st.trial)
        return efc_errf(EFC_EBUSY, "slots: revert: slot=%c is on trial (roll back instead)",
                        s->st.active.name);
    if (!s->st.previous.valid)
        return efc_errf(EFC_ENOTFOUND, "slots: revert: no previous install");
    return go_back(s, "revert");
}
