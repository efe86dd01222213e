/* efc_log.h — one-line structured logging.
 *
 * efc_log(EFC_LOG_WARN, "ota", "verify failed: %s artifact=%s", ...) writes
 * `2026-11-28T10:00:00.123Z WARN ota: verify failed: ...` to the sink (stderr by default).
 * The threshold comes from EFC_LOG_LEVEL (error|warn|info|debug, default info) or
 * efc_log_set_level(). Set the sink and level before starting threads; efc_log itself is
 * thread-safe (one write per line). Never log in kernels or per-sample hot paths.
 */
#ifndef EFC_COMMON_LOG_H
#define EFC_COMMON_LOG_H

enum efc_log_level { EFC_LOG_ERROR = 0, EFC_LOG_WARN = 1, EFC_LOG_INFO = 2, EFC_LOG_DEBUG = 3 };

typedef void (*efc_log_sink_fn)(enum efc_log_level lvl, const char *line, void *ctx);

void efc_log(enum efc_log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void efc_log_set_level(enum efc_log_level lvl);
enum efc_log_level efc_log_get_level(void);
/* NULL restores the stderr sink. */
void efc_log_set_sink(efc_log_sink_fn fn, void *ctx);

#endif
