#include "common/efc_status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char detail[512];

const char *efc_status_str(enum efc_status s)
{
    static const char *const names[EFC_STATUS_COUNT] = {
        "OK",        "ENOMEM",    "EINVAL",   "EPROTO",       "EIO",       "ENOSPC",
        "ETIMEDOUT", "ENOTFOUND", "EEXIST",   "EBUSY",        "ENET",      "ETLS",
        "ESIG",      "EHASH",     "EVERSION", "EUNSUPPORTED", "ECANCELED", "EINTERNAL",
    };
    if ((unsigned)s >= EFC_STATUS_COUNT)
        return "EUNKNOWN";
    return names[s];
}

enum efc_status efc_errf(enum efc_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    return s;
}

const char *efc_err_detail(void)
{
    return detail;
}

void efc_err_clear(void)
{
    detail[0] = '\0';
}
