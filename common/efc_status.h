/* efc_status.h — status codes shared by every efc module.
 *
 * Every fallible function returns enum efc_status: EFC_OK (0) on success, a positive code
 * otherwise. Codes are append-only: never renumber or reuse one (curl's CURLcode rule).
 * A human-readable detail for the last error of the calling thread is kept by efc_errf()
 * and read with efc_err_detail(); it names what failed and where (file, section, field).
 * Thread-safety: the detail buffer is thread-local; everything here is safe from any thread.
 */
#ifndef EFC_COMMON_STATUS_H
#define EFC_COMMON_STATUS_H

enum efc_status {
    EFC_OK = 0,
    EFC_ENOMEM = 1, /* allocation failed */
    EFC_EINVAL = 2, /* invalid argument: a caller bug or bad option */
    EFC_EPROTO = 3, /* malformed data from a file or a peer */
    EFC_EIO = 4,    /* I/O error; errno is left intact */
    EFC_ENOSPC = 5, /* no space left; errno is left intact */
    EFC_ETIMEDOUT = 6,
    EFC_ENOTFOUND = 7, /* file, dataset, key or name not found */
    EFC_EEXIST = 8,
    EFC_EBUSY = 9,
    EFC_ENET = 10,
    EFC_ETLS = 11,
    EFC_ESIG = 12,         /* signature check failed */
    EFC_EHASH = 13,        /* checksum or digest mismatch */
    EFC_EVERSION = 14,     /* stale or incompatible version */
    EFC_EUNSUPPORTED = 15, /* op, dtype or ISA not supported */
    EFC_ECANCELED = 16,
    EFC_EINTERNAL = 17,
    EFC_STATUS_COUNT /* never use */
};

/* Short stable name of a status ("EPROTO"), never NULL. */
const char *efc_status_str(enum efc_status s);

/* Record a printf-style detail for the calling thread and return s, so that a failure site
 * reads `return efc_errf(EFC_EPROTO, "%s: section %u: offset out of range", path, i);` */
enum efc_status efc_errf(enum efc_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The detail recorded by the last efc_errf() on this thread ("" if none). Valid until the next
 * efc_errf() on this thread. */
const char *efc_err_detail(void);

/* Forget the detail (call before an operation whose detail you want to read afterwards). */
void efc_err_clear(void);

#endif
