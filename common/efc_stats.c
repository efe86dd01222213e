#include "common/efc_stats.h"

#include <stdlib.h>

static int cmp_f64(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void efc_sort_f64(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_f64);
}

double efc_percentile(const double *s, size_t n, double p)
{
    if (n == 0)
        return 0.0;
    double r = p * (double)(n - 1);
    size_t i = (size_t)r;
    return i + 1 < n ? s[i] + (s[i + 1] - s[i]) * (r - (double)i) : s[n - 1];
}
