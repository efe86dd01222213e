#include "common/efc_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int level = -1; /* -1: not yet read from the environment */
static efc_log_sink_fn sink;
static void *sink_ctx;

static enum efc_log_level level_from_env(void)
{
    const char *e = getenv("EFC_LOG_LEVEL");
    if (!e)
        return EFC_LOG_INFO;
    if (!strcmp(e, "error"))
        return EFC_LOG_ERROR;
    if (!strcmp(e, "warn"))
        return EFC_LOG_WARN;
    if (!strcmp(e, "debug"))
        return EFC_LOG_DEBUG;
    return EFC_LOG_INFO;
}

enum efc_log_level efc_log_get_level(void)
{
    if (level < 0)
        level = (int)level_from_env();
    return (enum efc_log_level)level;
}

void efc_log_set_level(enum efc_log_level lvl)
{
    level = (int)lvl;
}

void efc_log_set_sink(efc_log_sink_fn fn, void *ctx)
{
    sink = fn;
    sink_ctx = ctx;
}

void efc_log(enum efc_log_level lvl, const char *module, const char *fmt, ...)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    if ((int)lvl > (int)efc_log_get_level())
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s: ", ts.tv_nsec / 1000000L,
                          names[lvl], module);
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
    }
    if (sink) {
        sink(lvl, line, sink_ctx);
        return;
    }
    fprintf(stderr, "%s\n", line);
}
