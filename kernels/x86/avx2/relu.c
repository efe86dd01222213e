/* relu.c — AVX2 relu / relu6: max(v, 0) then min(., 6), bit-exact with __ref (max_ps returns
 * its second operand for NaN, like the reference's `v > 0 ? v : 0`). Tail: masked load/store. */
#include <immintrin.h>

#include "kernels/kernels.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static inline __m256i tail_mask(size_t r)
{
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - r));
}

static inline void clamp_f32(size_t n, const float *x, float *y, int six)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 hi = _mm256_set1_ps(6.0f);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 v0 = _mm256_max_ps(_mm256_loadu_ps(x + i), zero);
        __m256 v1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), zero);
        __m256 v2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), zero);
        __m256 v3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), zero);
        if (six) {
            v0 = _mm256_min_ps(v0, hi);
            v1 = _mm256_min_ps(v1, hi);
            v2 = _mm256_min_ps(v2, hi);
            v3 = _mm256_min_ps(v3, hi);
        }
        _mm256_storeu_ps(y + i, v0);
        _mm256_storeu_ps(y + i + 8, v1);
        _mm256_storeu_ps(y + i + 16, v2);
        _mm256_storeu_ps(y + i + 24, v3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_max_ps(_mm256_loadu_ps(x + i), zero);
        if (six)
            v = _mm256_min_ps(v, hi);
        _mm256_storeu_ps(y + i, v);
    }
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_max_ps(_mm256_maskload_ps(x + i, m), zero);
        if (six)
            v = _mm256_min_ps(v, hi);
        _mm256_maskstore_ps(y + i, m, v);
    }
}

void efc_k_relu_f32__avx2(size_t n, const float *x, float *y)
{
    clamp_f32(n, x, y, 0);
}

void efc_k_relu6_f32__avx2(size_t n, const float *x, float *y)
{
    clamp_f32(n, x, y, 1);
}
