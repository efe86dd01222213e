#include "common/efc_parse.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

enum efc_status efc_parse_i64(const char *s, int64_t min, int64_t max, const char *what,
                              int64_t *out)
{
    char *end;
    long long v;
    errno = 0;
    v = s && *s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < min || v > max)
        return efc_errf(EFC_EINVAL, "%s: '%s' is not an integer in %lld..%lld", what, s ? s : "",
                        (long long)min, (long long)max);
    *out = v;
    return EFC_OK;
}

enum efc_status efc_parse_f64(const char *s, double min, double max, const char *what, double *out)
{
    char *end;
    double v;
    errno = 0;
    v = s && *s ? strtod(s, &end) : 0.0;
    if (!s || !*s || *end || errno || !isfinite(v) || v < min || v > max)
        return efc_errf(EFC_EINVAL, "%s: '%s' is not a number in %g..%g", what, s ? s : "", min,
                        max);
    *out = v;
    return EFC_OK;
}
