/* efc_parse.h — strict number parsing (the whole string, in range) instead of atoi/atof. */
#ifndef EFC_COMMON_PARSE_H
#define EFC_COMMON_PARSE_H

#include <stdint.h>

#include "common/efc_status.h"

/* EFC_EINVAL with a detail naming `what` if s is not an integer in [min, max]. */
enum efc_status efc_parse_i64(const char *s, int64_t min, int64_t max, const char *what,
                              int64_t *out);
/* EFC_EINVAL if s is not a finite number in [min, max]. */
enum efc_status efc_parse_f64(const char *s, double min, double max, const char *what, double *out);

#endif
