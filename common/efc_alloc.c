#include "common/efc_alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t n_calls;
static atomic_uint_fast64_t fail_countdown;

static int should_fail(void)
{
    uint_fast64_t k = atomic_load(&fail_countdown);
    if (k == 0)
        return 0;
    if (atomic_fetch_sub(&fail_countdown, 1) == 1)
        return 1;
    return 0;
}

void *efc_malloc(size_t n)
{
    void *p;
    if (should_fail())
        return NULL;
    p = malloc(n ? n : 1);
    if (p)
        atomic_fetch_add(&n_calls, 1);
    return p;
}

void *efc_calloc(size_t count, size_t size)
{
    void *p;
    if (should_fail())
        return NULL;
    p = calloc(count ? count : 1, size ? size : 1);
    if (p)
        atomic_fetch_add(&n_calls, 1);
    return p;
}

void *efc_realloc(void *p, size_t n)
{
    void *q;
    if (should_fail())
        return NULL;
    q = realloc(p, n ? n : 1);
    if (q)
        atomic_fetch_add(&n_calls, 1);
    return q;
}

void *efc_malloc_aligned(size_t align, size_t n)
{
    void *p = NULL;
    if (should_fail())
        return NULL;
    if (posix_memalign(&p, align, n ? (n + align - 1) / align * align : align) != 0)
        return NULL;
    atomic_fetch_add(&n_calls, 1);
    return p;
}

void efc_free(void *p)
{
    free(p);
}

char *efc_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = efc_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

uint64_t efc_alloc_count(void)
{
    return (uint64_t)atomic_load(&n_calls);
}

void efc_alloc_fail_at(uint64_t k)
{
    atomic_store(&fail_countdown, k);
}
