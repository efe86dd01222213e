/* fetch_url.c — one artifact from a URL through libcurl's multi interface (fetch_url.h).
 *
 * States: XFER (the easy handle is in the multi handle; libcurl writes the body into the
 * .part at offset + written) -> VERIFY (the transfer ended; the .part is hashed in slices so
 * that no step blocks the caller's loop) -> DONE (installed, or failed). A restart from 0
 * empties the .part and puts the easy handle back into the multi handle (XFER again).
 * The body is never hashed while it arrives: a resumed .part has a prefix we did not see
 * arrive, so the whole file is hashed once at the end, from disk, which is also what gets
 * installed.
 *
 * "<dest>.part.etag" holds the validator of the response the .part's bytes came from (one
 * line: a strong ETag with its quotes, else the Last-Modified date), written before the first
 * body byte of an attempt from 0 and removed whenever the .part is emptied, removed or
 * installed. A resume sends it as If-Range (RFC 9110 13.1.5): a server whose object changed
 * answers 200 with the whole new object, which restarts from 0 instead of splicing. Weak
 * ETags are never used: If-Range with one never matches, so every resume would restart.
 */
#include "agent/fetch_url.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_log.h"
#include "common/efc_sha256.h"

#define MOD "fetch"
#define SIZE_MAX_BYTES (1ULL << 53) /* protocol.md: artifact sizes are 1..2^53 */
#define URL_MAX 4096
#define IO_BUF_BYTES (64u * 1024)
/* Hashed per step: about 10 ms at this machine's SHA-256 speed, well under the agent's loop
 * tick, so a verification never delays MQTT noticeably. */
#define HASH_SLICE_BYTES (4u * 1024 * 1024)
/* An ETag or HTTP date longer than this is not kept (no If-Range then; the digest still
 * guards the resume). Real ones are under 100 bytes. */
#define VALIDATOR_MAX 256

enum phase { PHASE_XFER, PHASE_VERIFY, PHASE_DONE };

struct efc_agent_fetch_url {
    char *url, *dest, *part;
    char *etag_path; /* "<dest>.part.etag": the validator of the .part's bytes */
    char sha_hex[EFC_SHA256_HEX_BYTES];
    uint64_t expected;
    CURLM *multi;
    CURL *easy;
    int attached; /* easy is in multi */
    int fd;       /* the .part, -1 once closed */
    enum phase phase;
    /* The current attempt: it started with `offset` bytes of .part kept (the resume point)
     * and has written `written` body bytes after them. */
    uint64_t offset, written;
    int checked; /* the response of this attempt was checked at its first body bytes */
    int cr_valid;
    uint64_t cr_start; /* first byte of the current response's Content-Range */
    /* The validator sent as If-Range by this attempt ("" when none: attempt from 0, no
     * .etag), and the current response's own ETag / Last-Modified ("" when absent). */
    char validator[VALIDATOR_MAX];
    char resp_etag[VALIDATOR_MAX];
    char resp_lm[VALIDATOR_MAX];
    struct curl_slist *hdrs; /* "If-Range: <validator>" */
    /* Set by the callbacks, acted on when libcurl reports the transfer over. */
    int cb_restart;
    enum efc_status cb_st;
    int cb_errno;
    char cb_why[768];
    /* VERIFY */
    struct efc_sha256 h;
    uint64_t hashed;
    uint8_t *buf;
    /* DONE */
    enum efc_status result;
    int result_errno;
    char msg[1024];
    struct efc_agent_fetch_url_stats stats;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static CURLcode g_init_rc;

static void global_init(void)
{
    g_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static enum efc_status io_status(int e)
{
    return e == ENOSPC ? EFC_ENOSPC : EFC_EIO;
}

/* Close the .part; remove it (and its .etag) when asked or when it is empty (nothing worth
 * resuming). A kept .part is fdatasynced first: the next start resumes from its size, and
 * after a power cut an unsynced tail could read back as zeros, which the digest would only
 * catch after a whole transfer (RELIABILITY.md F1: resume from the last fsynced offset). */
static void close_part(struct efc_agent_fetch_url *f, int remove)
{
    struct stat sb;
    if (f->fd < 0)
        return;
    if (!remove && fstat(f->fd, &sb) == 0 && sb.st_size == 0)
        remove = 1;
    if (!remove && fdatasync(f->fd) != 0)
        efc_log(EFC_LOG_WARN, MOD, "url=%s: fdatasync %s: %s (a resume may restart from 0)", f->url,
                f->part, strerror(errno));
    close(f->fd);
    f->fd = -1;
    if (remove) {
        unlink(f->part);
        unlink(f->etag_path);
    }
}

static void detach(struct efc_agent_fetch_url *f)
{
    if (f->attached) {
        curl_multi_remove_handle(f->multi, f->easy);
        f->attached = 0;
    }
}

/* The end, successful or not: the result and its detail are kept for every later step. */
static void finish(struct efc_agent_fetch_url *f, enum efc_status st, int remove_part,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void finish(struct efc_agent_fetch_url *f, enum efc_status st, int remove_part,
                   const char *fmt, ...)
{
    va_list ap;
    f->result_errno = errno;
    detach(f);
    if (st != EFC_OK)
        close_part(f, remove_part);
    f->result = st;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
    va_end(ap);
    f->phase = PHASE_DONE;
}

/* Put the easy handle (back) into the multi handle for an attempt from f->offset. */
static void attach(struct efc_agent_fetch_url *f)
{
    CURLMcode mc;
    f->written = 0;
    f->checked = 0;
    f->cr_valid = 0;
    f->resp_etag[0] = '\0';
    f->resp_lm[0] = '\0';
    f->cb_restart = 0;
    f->cb_st = EFC_OK;
    f->cb_why[0] = '\0';
    f->errbuf[0] = '\0';
    curl_easy_setopt(f->easy, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)f->offset);
    curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER,
                     f->offset > 0 && f->validator[0] ? f->hdrs : (struct curl_slist *)NULL);
    mc = curl_multi_add_handle(f->multi, f->easy);
    if (mc != CURLM_OK) {
        finish(f, EFC_EINTERNAL, 0, "%s: curl_multi_add_handle: %s", f->url,
               curl_multi_strerror(mc));
        return;
    }
    f->attached = 1;
    f->phase = PHASE_XFER;
}

/* The bytes kept so far cannot be continued: empty the .part and fetch everything again. */
static void restart(struct efc_agent_fetch_url *f, const char *why)
{
    detach(f);
    if (f->stats.n_restarts >= EFC_AGENT_FETCH_URL_MAX_RESTARTS) {
        finish(f, EFC_EPROTO, 1, "%s: %s; gave up after %u restarts from 0", f->url, why,
               f->stats.n_restarts);
        return;
    }
    efc_log(EFC_LOG_WARN, MOD, "url=%s: %s; restarting from 0", f->url, why);
    /* The .etag first: a crash between the two leaves a .part without a validator (resumed
     * without If-Range, the digest guards it), never a validator naming other bytes. */
    unlink(f->etag_path);
    f->validator[0] = '\0';
    if (ftruncate(f->fd, 0) != 0) {
        int e = errno;
        finish(f, io_status(e), 0, "%s: cannot empty %s: %s", f->url, f->part, strerror(e));
        return;
    }
    f->offset = 0;
    f->stats.n_restarts++;
    attach(f);
}

/* ---- libcurl callbacks ------------------------------------------------------------------ */

/* Parse "Content-Range: bytes START-END/TOTAL" (header line, not NUL-terminated); 1 if it is
 * well formed and consistent with an artifact of `expected` bytes. */
static int parse_content_range(const char *p, size_t n, uint64_t expected, uint64_t *start)
{
    char line[256];
    uint64_t v[3] = {0, 0, 0};
    const char *s;
    int k = 0;

    if (n >= sizeof(line))
        return 0;
    memcpy(line, p, n);
    line[n] = '\0';
    s = line + strlen("Content-Range:");
    while (*s == ' ' || *s == '\t')
        s++;
    if (strncasecmp(s, "bytes", 5) != 0)
        return 0;
    s += 5;
    while (*s == ' ' || *s == '\t')
        s++;
    for (k = 0; k < 3; k++) {
        const char *d = s;
        if (k == 2 && *s == '*') { /* total unknown */
            v[2] = expected;
            s++;
            break;
        }
        while (*s >= '0' && *s <= '9') {
            if (v[k] > (SIZE_MAX_BYTES - 9) / 10)
                return 0;
            v[k] = v[k] * 10 + (uint64_t)(*s - '0');
            s++;
        }
        if (s == d || (k == 0 && *s != '-') || (k == 1 && *s != '/'))
            return 0;
        if (k < 2)
            s++;
    }
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    if (*s || v[1] < v[0] || v[2] != expected || v[1] >= expected)
        return 0;
    *start = v[0];
    return 1;
}

/* A validator is sent back in a request header: only printable ASCII (no CR, LF or other
 * control bytes that could split the header), non-empty, shorter than VALIDATOR_MAX. */
static int validator_ok(const char *v, size_t n)
{
    if (n == 0 || n >= VALIDATOR_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
            return 0;
    return 1;
}

/* If the header line p[0..len) is "<name>: value", copy the trimmed value into out (NUL-
 * terminated; "" when it is not a usable validator). 1 if the name matched. */
static int header_value(const char *p, size_t len, const char *name, char *out)
{
    size_t k = strlen(name), a, b;
    if (len <= k || strncasecmp(p, name, k) != 0 || p[k] != ':')
        return 0;
    a = k + 1;
    b = len;
    while (a < b && (p[a] == ' ' || p[a] == '\t'))
        a++;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t' || p[b - 1] == '\r' || p[b - 1] == '\n'))
        b--;
    out[0] = '\0';
    if (validator_ok(p + a, b - a)) {
        memcpy(out, p + a, b - a);
        out[b - a] = '\0';
    }
    return 1;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct efc_agent_fetch_url *f = ud;
    size_t len = size * n;
    /* A new status line starts a new response (redirect, 100-continue): forget the last
     * response's range and validators. */
    if (len >= 5 && strncasecmp(p, "HTTP/", 5) == 0) {
        f->cr_valid = 0;
        f->resp_etag[0] = '\0';
        f->resp_lm[0] = '\0';
    } else if (len > 14 && strncasecmp(p, "Content-Range:", 14) == 0) {
        f->cr_valid = parse_content_range(p, len, f->expected, &f->cr_start);
    } else if (!header_value(p, len, "ETag", f->resp_etag)) {
        header_value(p, len, "Last-Modified", f->resp_lm);
    }
    return len;
}

/* The validator of the current response that If-Range can use: a strong ETag, else the
 * Last-Modified date; "" if neither. */
static const char *response_validator(const struct efc_agent_fetch_url *f)
{
    if (f->resp_etag[0] == '"')
        return f->resp_etag;
    return f->resp_lm;
}

/* Record which object the bytes about to be written at 0 belong to. Called before the first
 * body byte of an attempt from 0. A failure only costs the If-Range of a later resume. */
static void save_validator(struct efc_agent_fetch_url *f)
{
    const char *v = response_validator(f);
    char line[VALIDATOR_MAX + 1];
    int n;
    if (!v[0]) {
        unlink(f->etag_path);
        return;
    }
    n = snprintf(line, sizeof(line), "%s\n", v);
    if (efc_fs_write_atomic(f->etag_path, line, (size_t)n) != EFC_OK)
        efc_log(EFC_LOG_WARN, MOD, "url=%s: cannot keep the validator: %s", f->url,
                efc_err_detail());
}

/* At start, for a resume: the validator kept beside the .part, and its If-Range header. A
 * missing or malformed .etag means a resume without If-Range (the digest still guards it). */
static enum efc_status load_validator(struct efc_agent_fetch_url *f)
{
    char h[VALIDATOR_MAX + 16];
    void *buf = NULL;
    size_t n = 0;
    f->validator[0] = '\0';
    if (efc_fs_read_all(f->etag_path, VALIDATOR_MAX + 1, &buf, &n) != EFC_OK)
        return EFC_OK;
    if (n > 0 && ((char *)buf)[n - 1] == '\n')
        n--;
    if (validator_ok(buf, n)) {
        memcpy(f->validator, buf, n);
        f->validator[n] = '\0';
    }
    efc_free(buf);
    if (!f->validator[0])
        return EFC_OK;
    snprintf(h, sizeof(h), "If-Range: %s", f->validator);
    f->hdrs = curl_slist_append(NULL, h);
    if (!f->hdrs)
        return efc_errf(EFC_ENOMEM, "%s: out of memory", f->url);
    return EFC_OK;
}

enum response { RESPONSE_OK, RESPONSE_RESTART, RESPONSE_FAIL };

/* May the body of the current response go at f->offset? file:// (no response code): libcurl
 * seeked the source itself. HTTP: from 0 only a 200; when resuming only a 206 whose
 * Content-Range starts exactly at the resume point. why gets the reason otherwise. */
static enum response check_response(struct efc_agent_fetch_url *f, char *why, size_t why_len)
{
    long code = 0;
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code == 0)
        return RESPONSE_OK;
    if (f->offset == 0) {
        if (code == 200)
            return RESPONSE_OK;
        snprintf(why, why_len, "HTTP %ld to a request for the whole file", code);
        return RESPONSE_FAIL;
    }
    if (code == 206 && f->cr_valid && f->cr_start == f->offset) {
        /* A server that ignored If-Range still names its object: it must be the .part's. */
        const char *v = response_validator(f);
        if (!f->validator[0] || !v[0] || (f->validator[0] == '"') != (v[0] == '"') ||
            strcmp(v, f->validator) == 0)
            return RESPONSE_OK;
        snprintf(why, why_len, "object changed: HTTP 206 for %s, the .part is %s", v, f->validator);
        return RESPONSE_RESTART;
    }
    if (code == 206)
        snprintf(why, why_len, "HTTP 206 whose Content-Range is not bytes %llu-.../%llu",
                 (unsigned long long)f->offset, (unsigned long long)f->expected);
    else if (code == 200 && f->validator[0])
        snprintf(why, why_len,
                 "HTTP 200 to a resume from %llu with If-Range %s (object "
                 "changed or range ignored)",
                 (unsigned long long)f->offset, f->validator);
    else if (code == 200)
        snprintf(why, why_len, "HTTP 200 to a resume from %llu (range ignored)",
                 (unsigned long long)f->offset);
    else
        snprintf(why, why_len, "HTTP %ld to a resume from %llu", code,
                 (unsigned long long)f->offset);
    return RESPONSE_RESTART;
}

/* Returning less than len makes libcurl stop with CURLE_WRITE_ERROR; the flags say why. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct efc_agent_fetch_url *f = ud;
    size_t len = size * n, off = 0;
    char why[640];

    if (!f->checked) {
        enum response r = check_response(f, why, sizeof(why));
        f->checked = 1;
        if (r == RESPONSE_RESTART) {
            f->cb_restart = 1;
            snprintf(f->cb_why, sizeof(f->cb_why), "%s", why);
            return 0;
        }
        if (r == RESPONSE_FAIL) {
            f->cb_st = EFC_EPROTO;
            snprintf(f->cb_why, sizeof(f->cb_why), "%s: %s", f->url, why);
            return 0;
        }
        if (f->offset == 0 && f->written == 0)
            save_validator(f); /* before the first byte: the .etag never names other bytes */
    }
    /* Our own cap: CURLOPT_MAXFILESIZE_LARGE only sees a length the server announces. */
    if (len > f->expected - f->offset - f->written) {
        f->cb_st = EFC_EPROTO;
        snprintf(f->cb_why, sizeof(f->cb_why),
                 "%s: body larger than expected: expected %llu bytes, got more than %llu", f->url,
                 (unsigned long long)f->expected,
                 (unsigned long long)(f->offset + f->written + len - 1));
        return 0;
    }
    while (off < len) {
        ssize_t w = pwrite(f->fd, p + off, len - off, (off_t)(f->offset + f->written + off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            f->cb_errno = w < 0 ? errno : EIO;
            f->cb_st = io_status(f->cb_errno);
            snprintf(f->cb_why, sizeof(f->cb_why), "%s: write to %s failed: %s", f->url, f->part,
                     strerror(f->cb_errno));
            return 0;
        }
        off += (size_t)w;
    }
    f->written += len;
    f->stats.bytes_received += len;
    return len;
}

/* ---- end of a transfer -------------------------------------------------------------------- */

/* CURLcode -> efc_status (STYLE.md 2.5: foreign codes stop at the wrapper). */
static enum efc_status map_curl(CURLcode rc, long http_code)
{
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
        return EFC_EUNSUPPORTED;
    case CURLE_FILE_COULDNT_READ_FILE:
        return EFC_ENOTFOUND;
    case CURLE_HTTP_RETURNED_ERROR:
        return http_code == 404 || http_code == 410 ? EFC_ENOTFOUND : EFC_ENET;
    case CURLE_OPERATION_TIMEDOUT:
        return EFC_ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
        return EFC_ENOMEM;
    case CURLE_URL_MALFORMAT:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_RANGE_ERROR:
    case CURLE_BAD_DOWNLOAD_RESUME:
        return EFC_EPROTO;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
        return EFC_ETLS;
    default:
        return EFC_ENET;
    }
}

static void begin_verify(struct efc_agent_fetch_url *f)
{
    struct stat sb;
    char why[640];
    if (fstat(f->fd, &sb) != 0) {
        int e = errno;
        finish(f, io_status(e), 0, "%s: cannot stat %s: %s", f->url, f->part, strerror(e));
        return;
    }
    if ((uint64_t)sb.st_size != f->expected) {
        if (f->offset > 0) { /* the server's file may have changed under the resume */
            snprintf(why, sizeof(why), "size %llu after resuming from %llu, expected %llu",
                     (unsigned long long)sb.st_size, (unsigned long long)f->offset,
                     (unsigned long long)f->expected);
            restart(f, why);
            return;
        }
        finish(f, EFC_EPROTO, 1, "%s: size mismatch: expected %llu bytes, got %llu", f->url,
               (unsigned long long)f->expected, (unsigned long long)sb.st_size);
        return;
    }
    efc_sha256_init(&f->h);
    f->hashed = 0;
    f->phase = PHASE_VERIFY;
}

static void on_done(struct efc_agent_fetch_url *f, CURLcode rc)
{
    long code = 0;
    char why[640];

    detach(f);
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    if (f->cb_restart) {
        restart(f, f->cb_why);
        return;
    }
    if (f->cb_st != EFC_OK) {
        errno = f->cb_errno;
        /* An oversized body leaves untrusted bytes: remove them; an I/O error keeps them. */
        finish(f, f->cb_st, f->cb_st == EFC_EPROTO, "%s", f->cb_why);
        return;
    }
    if (rc == CURLE_OK) {
        switch (check_response(f, why, sizeof(why))) {
        case RESPONSE_OK:
            begin_verify(f);
            return;
        case RESPONSE_RESTART:
            restart(f, why); /* e.g. 416: libcurl ends a resume with it without an error */
            return;
        case RESPONSE_FAIL:
            finish(f, EFC_EPROTO, 0, "%s: %s", f->url, why);
            return;
        }
    }
    /* libcurl's own refusals of a resume (a 200 to the range, a 416 it treats as an error, a
     * file:// source shorter than the .part): start again from 0. */
    if (f->offset > 0 && (rc == CURLE_RANGE_ERROR || rc == CURLE_BAD_DOWNLOAD_RESUME ||
                          (rc == CURLE_HTTP_RETURNED_ERROR && code == 416))) {
        snprintf(why, sizeof(why), "resume from %llu%s%s refused (curl %d: %s)",
                 (unsigned long long)f->offset, f->validator[0] ? " with If-Range " : "",
                 f->validator, (int)rc, curl_easy_strerror(rc));
        restart(f, why);
        return;
    }
    if (rc == CURLE_HTTP_RETURNED_ERROR)
        finish(f, map_curl(rc, code), 0, "%s: HTTP %ld (curl %d: %s)", f->url, code, (int)rc,
               f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc));
    else
        finish(f, map_curl(rc, code), 0, "%s: curl %d: %s%s%s", f->url, (int)rc,
               curl_easy_strerror(rc), f->errbuf[0] ? ": " : "", f->errbuf);
}

/* fsync, rename over dest, fsync the directory (efc_fs_write_atomic's order). */
static void install(struct efc_agent_fetch_url *f)
{
    char dir[URL_MAX + 16];
    int e, dfd;

    if (fsync(f->fd) != 0) {
        e = errno;
        finish(f, io_status(e), 0, "%s: fsync %s: %s", f->url, f->part, strerror(e));
        return;
    }
    close(f->fd);
    f->fd = -1;
    unlink(f->etag_path); /* first: a stale .etag must not outlive its .part */
    if (rename(f->part, f->dest) != 0) {
        e = errno;
        unlink(f->part);
        errno = e;
        finish(f, io_status(e), 0, "%s: cannot rename %s to %s: %s", f->url, f->part, f->dest,
               strerror(e));
        return;
    }
    snprintf(dir, sizeof(dir), "%s", f->dest);
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    finish(f, EFC_OK, 0, "%s: fetched and verified", f->url);
}

static void verify_slice(struct efc_agent_fetch_url *f)
{
    uint64_t budget = HASH_SLICE_BYTES;
    uint8_t d[EFC_SHA256_BYTES];
    char got[EFC_SHA256_HEX_BYTES], why[256];

    while (f->hashed < f->expected && budget > 0) {
        uint64_t want = f->expected - f->hashed;
        ssize_t r;
        if (want > IO_BUF_BYTES)
            want = IO_BUF_BYTES;
        r = pread(f->fd, f->buf, (size_t)want, (off_t)f->hashed);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            finish(f, io_status(e), 0, "%s: read back %s at %llu: %s", f->url, f->part,
                   (unsigned long long)f->hashed, r < 0 ? strerror(e) : "file shrank");
            return;
        }
        efc_sha256_update(&f->h, f->buf, (size_t)r);
        f->hashed += (uint64_t)r;
        budget -= (uint64_t)r < budget ? (uint64_t)r : budget;
    }
    if (f->hashed < f->expected)
        return;
    efc_sha256_final(&f->h, d);
    efc_sha256_hex(d, got);
    if (strcmp(got, f->sha_hex) == 0) {
        install(f);
        return;
    }
    if (f->offset > 0) { /* a stale or torn prefix, or the object changed: once more from 0 */
        snprintf(why, sizeof(why), "SHA-256 mismatch after resuming from %llu",
                 (unsigned long long)f->offset);
        restart(f, why);
        return;
    }
    finish(f, EFC_EHASH, 1, "%s: SHA-256 mismatch: expected %s, got %s", f->url, f->sha_hex, got);
}

/* ---- public API --------------------------------------------------------------------------- */

static int hex64_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= 64 || !((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return 0;
    return n == 64;
}

/* Every transfer option of RELIABILITY.md rule 7; TLS verification is left at libcurl's
 * default (on) and never touched. */
static CURLcode configure(struct efc_agent_fetch_url *f, const struct efc_agent_fetch_url_opts *o)
{
    CURL *e = f->easy;
    long connect_s = o->connect_s > 0 ? o->connect_s : EFC_AGENT_FETCH_URL_CONNECT_S;
    long ls_bytes =
        o->low_speed_bytes > 0 ? o->low_speed_bytes : EFC_AGENT_FETCH_URL_LOW_SPEED_BYTES;
    long ls_s = o->low_speed_s > 0 ? o->low_speed_s : EFC_AGENT_FETCH_URL_LOW_SPEED_S;
    /* A redirect never leaves https, and never goes to file:// (RELIABILITY.md F5). */
    const char *redir = strncasecmp(f->url, "https://", 8) == 0 ? "https" : "https,http";
    CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(e, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_URL, f->url);
    SET(CURLOPT_PROTOCOLS_STR, "https,http,file");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, redir);
    SET(CURLOPT_FOLLOWLOCATION, 1L);
    SET(CURLOPT_MAXREDIRS, (long)EFC_AGENT_FETCH_URL_MAX_REDIRS);
    SET(CURLOPT_CONNECTTIMEOUT, connect_s);
    SET(CURLOPT_LOW_SPEED_LIMIT, ls_bytes);
    SET(CURLOPT_LOW_SPEED_TIME, ls_s);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->expected);
    SET(CURLOPT_FAILONERROR, 1L);
    SET(CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts in the agent's process */
    SET(CURLOPT_USERAGENT, "efc-agent");
    SET(CURLOPT_ERRORBUFFER, f->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, f);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, f);
    if (o->ca_file) {
        /* The file is the whole trust store: no system directory of CAs besides it. */
        SET(CURLOPT_CAINFO, o->ca_file);
        SET(CURLOPT_CAPATH, (char *)NULL);
    }
#undef SET
    return rc;
}

enum efc_status efc_agent_fetch_url_start(const struct efc_agent_fetch_url_opts *o,
                                          struct efc_agent_fetch_url **out)
{
    struct efc_agent_fetch_url *f;
    enum efc_status st;
    struct stat sb;
    size_t n;
    CURLcode rc;

    if (out)
        *out = NULL;
    if (!o || !out || !o->url || !o->dest_path || !o->sha256_hex)
        return efc_errf(EFC_EINVAL, "fetch url: NULL argument");
    if (!o->url[0] || strlen(o->url) >= URL_MAX)
        return efc_errf(EFC_EINVAL, "fetch url: empty or too long URL");
    if (!o->dest_path[0] || strlen(o->dest_path) >= URL_MAX)
        return efc_errf(EFC_EINVAL, "%s: empty or too long destination path", o->url);
    if (o->expected_bytes == 0 || o->expected_bytes > SIZE_MAX_BYTES)
        return efc_errf(EFC_EINVAL, "%s: expected size %llu out of range 1..2^53", o->url,
                        (unsigned long long)o->expected_bytes);
    if (!hex64_valid(o->sha256_hex))
        return efc_errf(EFC_EINVAL, "%s: expected SHA-256 is not 64 lowercase hex digits", o->url);
    if (o->ca_file && (!o->ca_file[0] || strlen(o->ca_file) >= URL_MAX))
        return efc_errf(EFC_EINVAL, "%s: empty or too long ca_file", o->url);
    pthread_once(&g_once, global_init);
    if (g_init_rc != CURLE_OK)
        return efc_errf(EFC_EINTERNAL, "curl_global_init: %s", curl_easy_strerror(g_init_rc));

    f = efc_calloc(1, sizeof(*f));
    if (!f)
        return efc_errf(EFC_ENOMEM, "%s: out of memory", o->url);
    f->fd = -1;
    f->expected = o->expected_bytes;
    snprintf(f->sha_hex, sizeof(f->sha_hex), "%s", o->sha256_hex);
    n = strlen(o->dest_path) + sizeof(".part.etag");
    f->url = efc_strdup(o->url);
    f->dest = efc_strdup(o->dest_path);
    f->part = efc_malloc(n);
    f->etag_path = efc_malloc(n);
    f->buf = efc_malloc(IO_BUF_BYTES);
    if (!f->url || !f->dest || !f->part || !f->etag_path || !f->buf) {
        st = efc_errf(EFC_ENOMEM, "%s: out of memory", o->url);
        goto fail;
    }
    snprintf(f->part, n, "%s.part", o->dest_path);
    snprintf(f->etag_path, n, "%s.part.etag", o->dest_path);
    f->multi = curl_multi_init();
    f->easy = curl_easy_init();
    if (!f->multi || !f->easy) {
        st = efc_errf(EFC_EINTERNAL, "%s: curl handles could not be created", o->url);
        goto fail;
    }
    rc = configure(f, o);
    if (rc != CURLE_OK) {
        st = efc_errf(EFC_EINTERNAL, "%s: curl option refused: %s", o->url, curl_easy_strerror(rc));
        goto fail;
    }

    f->fd = open(f->part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f->fd < 0 || fstat(f->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = f->fd < 0 ? errno : EIO;
        st = efc_errf(io_status(e), "%s: cannot open %s: %s", o->url, f->part,
                      f->fd < 0 ? strerror(e) : "not a regular file");
        errno = e;
        goto fail;
    }
    if ((uint64_t)sb.st_size > f->expected) {
        /* Longer than the artifact: not a prefix of it, whatever it is. */
        efc_log(EFC_LOG_WARN, MOD, "url=%s: %s has %lld bytes, more than %llu: starting from 0",
                f->url, f->part, (long long)sb.st_size, (unsigned long long)f->expected);
        if (ftruncate(f->fd, 0) != 0) {
            int e = errno;
            st = efc_errf(io_status(e), "%s: cannot empty %s: %s", o->url, f->part, strerror(e));
            errno = e;
            goto fail;
        }
        sb.st_size = 0;
    }
    f->offset = (uint64_t)sb.st_size;
    f->stats.resumed_from = f->offset;
    if (f->offset == 0)
        unlink(f->etag_path); /* names no bytes; a new one is written with the first body */
    else if ((st = load_validator(f)) != EFC_OK)
        goto fail;
    if (f->offset == f->expected)
        begin_verify(f); /* complete already: only verify (restarts from 0 if wrong) */
    else
        attach(f);
    *out = f;
    return EFC_OK;
fail:
    efc_agent_fetch_url_free(f);
    return st;
}

enum efc_status efc_agent_fetch_url_step(struct efc_agent_fetch_url *f, int timeout_ms, int *done)
{
    if (done)
        *done = 0;
    if (!f || !done)
        return efc_errf(EFC_EINVAL, "fetch url step: NULL argument");
    if (f->phase == PHASE_XFER) {
        CURLMcode mc = curl_multi_poll(f->multi, NULL, 0, timeout_ms > 0 ? timeout_ms : 0, NULL);
        int running = 0, left = 0;
        CURLMsg *m;
        if (mc == CURLM_OK)
            mc = curl_multi_perform(f->multi, &running);
        if (mc != CURLM_OK) {
            finish(f, EFC_EINTERNAL, 0, "%s: curl multi: %s", f->url, curl_multi_strerror(mc));
        } else {
            while ((m = curl_multi_info_read(f->multi, &left)) != NULL) {
                if (m->msg == CURLMSG_DONE && m->easy_handle == f->easy) {
                    on_done(f, m->data.result); /* may re-add the handle: read no further */
                    break;
                }
            }
        }
    }
    if (f->phase == PHASE_VERIFY)
        verify_slice(f);
    if (f->phase != PHASE_DONE)
        return EFC_OK;
    *done = 1;
    if (f->result == EFC_OK)
        return EFC_OK;
    efc_errf(f->result, "%s", f->msg);
    errno = f->result_errno;
    return f->result;
}

void efc_agent_fetch_url_stats(const struct efc_agent_fetch_url *f,
                               struct efc_agent_fetch_url_stats *s)
{
    if (!s)
        return;
    if (!f) {
        memset(s, 0, sizeof(*s));
        return;
    }
    *s = f->stats;
}

void efc_agent_fetch_url_free(struct efc_agent_fetch_url *f)
{
    if (!f)
        return;
    detach(f);
    if (f->easy)
        curl_easy_cleanup(f->easy);
    if (f->multi)
        curl_multi_cleanup(f->multi);
    close_part(f, 0);
    curl_slist_free_all(f->hdrs);
    efc_free(f->url);
    efc_free(f->dest);
    efc_free(f->part);
    efc_free(f->etag_path);
    efc_free(f->buf);
    efc_free(f);
}
