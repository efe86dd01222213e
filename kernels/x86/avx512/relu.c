/* relu.c — AVX-512 relu / relu6: max(v, 0) then min(., 6), bit-exact with __ref (max_ps
 * returns its second operand for NaN, like `v > 0 ? v : 0`). Tail: one masked op. */
#include <immintrin.h>

#include "kernels/kernels.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static inline void clamp_f32(size_t n, const float *x, float *y, int six)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512 hi = _mm512_set1_ps(6.0f);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 v0 = _mm512_max_ps(_mm512_loadu_ps(x + i), zero);
        __m512 v1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), zero);
        __m512 v2 = _mm512_max_ps(_mm512_loadu_ps(x + i + 32), zero);
        __m512 v3 = _mm512_max_ps(_mm512_loadu_ps(x + i + 48), zero);
        if (six) {
            v0 = _mm512_min_ps(v0, hi);
            v1 = _mm512_min_ps(v1, hi);
            v2 = _mm512_min_ps(v2, hi);
            v3 = _mm512_min_ps(v3, hi);
        }
        _mm512_storeu_ps(y + i, v0);
        _mm512_storeu_ps(y + i + 16, v1);
        _mm512_storeu_ps(y + i + 32, v2);
        _mm512_storeu_ps(y + i + 48, v3);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_max_ps(_mm512_loadu_ps(x + i), zero);
        if (six)
            v = _mm512_min_ps(v, hi);
        _mm512_storeu_ps(y + i, v);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_max_ps(_mm512_maskz_loadu_ps(m, x + i), zero);
        if (six)
            v = _mm512_min_ps(v, hi);
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

void efc_k_relu_f32__avx512(size_t n, const float *x, float *y)
{
    clamp_f32(n, x, y, 0);
}

void efc_k_relu6_f32__avx512(size_t n, const float *x, float *y)
{
    clamp_f32(n, x, y, 1);
}
