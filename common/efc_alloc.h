/* efc_alloc.h — the only allocation entry points in efc (curl's and Redis's rule).
 *
 * They count live bytes and calls, so tests can assert "zero allocations per inference" and
 * fault builds can fail the Nth call (efc_alloc_fail_at). efc_free(NULL) is a no-op.
 * efc_malloc_aligned() returns memory aligned to `align` (a power of two >= sizeof(void*)),
 * released with efc_free as well. Counters are atomic: safe from any thread.
 */
#ifndef EFC_COMMON_ALLOC_H
#define EFC_COMMON_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *efc_malloc(size_t n);
void *efc_calloc(size_t count, size_t size);
void *efc_realloc(void *p, size_t n);
void *efc_malloc_aligned(size_t align, size_t n);
void efc_free(void *p);
char *efc_strdup(const char *s);

/* Number of successful allocation calls since start (malloc, calloc, realloc, aligned). */
uint64_t efc_alloc_count(void);
/* Fail the k-th allocation call from now (1-based); 0 disables. For torture tests. */
void efc_alloc_fail_at(uint64_t k);

#endif
