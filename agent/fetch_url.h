/* fetch_url.h — one artifact downloaded from a URL (libcurl multi interface), driven from the
 * caller's event loop without ever blocking it for long (docs/agent.md "URL transport").
 *
 * Owns the download of one content-addressed artifact (size and SHA-256 known in advance)
 * into "<dest_path>.part", its resumption, its verification and its atomic installation at
 * dest_path. The rules (RELIABILITY.md 1.5 and Part 2 rule 7): schemes https, http and file
 * only; redirects (at most EFC_AGENT_FETCH_URL_MAX_REDIRS) to https only when the source is
 * https, to https or http when it is http, never to file; a connect timeout and a low-speed
 * abort; the body is capped at expected_bytes (CURLOPT_MAXFILESIZE_LARGE and our own count);
 * TLS peer and host verification are never turned off. An existing .part is resumed with a
 * byte range from its size; a server that ignores the range (200), answers 416 or sends a
 * Content-Range that does not start at that size makes the download restart from 0 on an
 * emptied .part (a full body is never appended to a partial file), as does a SHA-256 mismatch
 * of a resumed file (its prefix may be stale); at most EFC_AGENT_FETCH_URL_MAX_RESTARTS
 * times. The validator of the response a .part was started from (a strong ETag, else
 * Last-Modified) is kept in "<dest_path>.part.etag" and sent as If-Range on a resume, so a
 * changed object answers 200 and restarts from 0 before any byte is spliced; a 206 whose
 * validator differs from the kept one restarts too. A .part kept after a failed attempt is
 * fdatasynced before the result is reported (a later start resumes from its size). At the
 * end the size must equal expected_bytes and the SHA-256 must match; then the file is
 * fsynced, renamed to dest_path and its directory fsynced (the efc_fs_write_atomic order). A
 * size or digest mismatch of a download from 0 deletes the .part (and its .etag).
 *
 * Ownership: the options are copied at start (the caller may free them). The object is
 * freed with efc_agent_fetch_url_free, which also aborts a running transfer and keeps a
 * non-empty .part for a later resume. Thread rule: one thread per object (a curl multi
 * handle); efc_agent_fetch_url_start calls curl_global_init once per process (pthread_once),
 * so start the first download before creating other threads that use libcurl.
 */
#ifndef EFC_AGENT_FETCH_URL_H
#define EFC_AGENT_FETCH_URL_H

#include <stdint.h>

#include "common/efc_status.h"

/* Defaults; the figures come from RELIABILITY.md Part 3 F4 (connect timeout 10 s, abort below
 * 1 KiB/s for 30 s). */
#define EFC_AGENT_FETCH_URL_CONNECT_S 10
#define EFC_AGENT_FETCH_URL_LOW_SPEED_BYTES 1024
#define EFC_AGENT_FETCH_URL_LOW_SPEED_S 30
#define EFC_AGENT_FETCH_URL_MAX_REDIRS 5
#define EFC_AGENT_FETCH_URL_MAX_RESTARTS 2

struct efc_agent_fetch_url_opts {
    const char *url;         /* https://, http:// or file:// (others fail: EFC_EUNSUPPORTED) */
    const char *dest_path;   /* final path; the download goes to "<dest_path>.part" */
    uint64_t expected_bytes; /* exact size, 1 .. 2^53 */
    const char *sha256_hex;  /* expected digest, 64 lowercase hex digits */
    int32_t connect_s;       /* connect timeout; 0 = EFC_AGENT_FETCH_URL_CONNECT_S */
    int32_t low_speed_bytes; /* abort below this many bytes/s ... (0 = default) */
    int32_t low_speed_s;     /* ... for this many seconds (0 = default) */
    /* PEM file of the CA certificates that https servers must chain to (CURLOPT_CAINFO; the
     * system's directory of CAs is then not used either, so a fleet's private PKI is the whole
     * trust store). NULL = libcurl's system default store. Verification stays on either way. */
    const char *ca_file;
};

/* What a download did (for logs and tests). */
struct efc_agent_fetch_url_stats {
    uint64_t resumed_from;   /* bytes of an existing .part kept at start (0: from scratch) */
    uint64_t bytes_received; /* body bytes written, over all attempts */
    uint32_t n_restarts;     /* restarts from 0 (range ignored, 416, bad Content-Range, ...) */
};

struct efc_agent_fetch_url;

/* Validate the options, open (create 0644) "<dest_path>.part" and prepare the transfer; no
 * network activity happens before the first step. A .part longer than expected_bytes is
 * emptied; one of exactly expected_bytes is only verified (no transfer). Errors: EFC_EINVAL
 * (NULL, empty URL, size 0 or over 2^53, bad digest, path too long, empty or too long
 * ca_file; a missing or unreadable ca_file is EFC_ETLS at a step), EFC_EIO / EFC_ENOSPC
 * (the .part, errno intact), EFC_ENOMEM, EFC_EINTERNAL (libcurl set-up); each with a detail
 * naming the URL or the file. *out is NULL on error. */
enum efc_status efc_agent_fetch_url_start(const struct efc_agent_fetch_url_opts *o,
                                          struct efc_agent_fetch_url **out);

/* Advance the download: waits for socket activity at most timeout_ms (<= 0: not at all; libcurl's
 * own timers may shorten it), lets libcurl move data, and once the transfer is over verifies
 * the file in slices (at most 4 MiB hashed per call), so one call never blocks much longer
 * than timeout_ms (a file:// source is read by libcurl in one go). *done = 0 while it runs
 * (returns EFC_OK). *done = 1 when over: EFC_OK means dest_path holds the verified artifact;
 * otherwise the error, with a detail naming the URL and the cause (curl's code and text, or
 * "expected ... got ..."): EFC_EUNSUPPORTED (scheme or redirect not allowed), EFC_ENOTFOUND
 * (no such file, HTTP 404 / 410), EFC_ENET (connection, HTTP error), EFC_ETIMEDOUT (connect
 * timeout, low-speed abort), EFC_ETLS (certificate, handshake), EFC_EPROTO (body larger or
 * smaller than expected_bytes, unusable server answer), EFC_EHASH (SHA-256 mismatch),
 * EFC_EIO / EFC_ENOSPC (local file). Calls after the end return the same result again. */
enum efc_status efc_agent_fetch_url_step(struct efc_agent_fetch_url *f, int timeout_ms, int *done);

/* Counters so far (valid at any time, also after the end). */
void efc_agent_fetch_url_stats(const struct efc_agent_fetch_url *f,
                               struct efc_agent_fetch_url_stats *s);

/* Abort a running transfer (a non-empty .part stays for a later resume) and free f. NULL is a
 * no-op. */
void efc_agent_fetch_url_free(struct efc_agent_fetch_url *f);

#endif
