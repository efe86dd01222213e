/* efc_stats.h — the one definition of latency percentiles used by `efc bench`, the agent's
 * measurements and the coordinator's medians, so a p50 means the same everywhere.
 * Percentile p in [0, 1] of n sorted values: linear interpolation between the order
 * statistics at rank p * (n - 1) (numpy's default); p = 0.5 is the usual median.
 * Pure functions, thread-safe. */
#ifndef EFC_COMMON_STATS_H
#define EFC_COMMON_STATS_H

#include <stddef.h>

/* Sort v[0..n) ascending. */
void efc_sort_f64(double *v, size_t n);
/* Percentile of sorted s[0..n) (0 when n == 0). */
double efc_percentile(const double *s, size_t n, double p);

#endif
