/* efc_buf.h — a growable text buffer for building JSON, reports and messages.
 *
 * efc_buf_printf appends formatted text, growing the buffer (efc_realloc) as needed; an
 * allocation failure sets `oom` and makes later appends no-ops, so a caller checks once at the
 * end. Caller-storage object: zero-initialise, then efc_free(b.p) (or hand p over) when done.
 * One thread per object.
 */
#ifndef EFC_COMMON_BUF_H
#define EFC_COMMON_BUF_H

#include <stddef.h>

struct efc_buf {
    char *p;     /* NUL-terminated text once something was appended, or NULL */
    size_t len;  /* bytes of text, without the NUL */
    size_t cap;  /* bytes allocated */
    int oom;     /* 1 after a failed allocation (or an encoding error) */
};

void efc_buf_printf(struct efc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
