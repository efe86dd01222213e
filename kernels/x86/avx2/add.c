/* add.c — AVX2 y = act(a + b); one rounding per element like __ref, so bit-exact. */
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

static inline __m256 act8(__m256 v, enum efc_k_act act)
{
    if (act != EFC_K_ACT_NONE)
        v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (act == EFC_K_ACT_RELU6)
        v = _mm256_min_ps(v, _mm256_set1_ps(6.0f));
    return v;
}

void efc_k_add_f32__avx2(size_t n, const float *a, const float *b, float *y, enum efc_k_act act)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 v1 = _mm256_add_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        _mm256_storeu_ps(y + i, act8(v0, act));
        _mm256_storeu_ps(y + i + 8, act8(v1, act));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, act8(_mm256_add_ps(_mm256_loadu_ps(a + i),
                                                   _mm256_loadu_ps(b + i)), act));
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_add_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m));
        _mm256_maskstore_ps(y + i, m, act8(v, act));
    }
}
