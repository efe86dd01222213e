/* add.c — AVX-512 y = act(a + b); one rounding per element like __ref, so bit-exact. */
#include <immintrin.h>

#include "kernels/kernels.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static inline __m512 act16(__m512 v, enum efc_k_act act)
{
    if (act != EFC_K_ACT_NONE)
        v = _mm512_max_ps(v, _mm512_setzero_ps());
    if (act == EFC_K_ACT_RELU6)
        v = _mm512_min_ps(v, _mm512_set1_ps(6.0f));
    return v;
}

void efc_k_add_f32__avx512(size_t n, const float *a, const float *b, float *y,
                           enum efc_k_act act)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0 = _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 v1 = _mm512_add_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        _mm512_storeu_ps(y + i, act16(v0, act));
        _mm512_storeu_ps(y + i + 16, act16(v1, act));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, act16(_mm512_add_ps(_mm512_loadu_ps(a + i),
                                                    _mm512_loadu_ps(b + i)), act));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(y + i, m, act16(v, act));
    }
}
