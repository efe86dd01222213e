/* efc_time.h — monotonic clock helpers (CLOCK_MONOTONIC: immune to wall-clock changes). */
#ifndef EFC_COMMON_TIME_H
#define EFC_COMMON_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t efc_time_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline double efc_time_s(void)
{
    return (double)efc_time_ns() * 1e-9;
}

#endif
