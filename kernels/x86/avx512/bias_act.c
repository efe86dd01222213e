/* bias_act.c — AVX-512 y[r][j] = act(y[r][j] + b[j]). cols == 1 (the conv epilogue: one
 * channel row with its bias, called as rows = H*W, cols = 1) broadcasts b[0]. */
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

static void bcast(size_t n, float *y, float b, enum efc_k_act act)
{
    const __m512 vb = _mm512_set1_ps(b);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0 = _mm512_add_ps(_mm512_loadu_ps(y + i), vb);
        __m512 v1 = _mm512_add_ps(_mm512_loadu_ps(y + i + 16), vb);
        _mm512_storeu_ps(y + i, act16(v0, act));
        _mm512_storeu_ps(y + i + 16, act16(v1, act));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, act16(_mm512_add_ps(_mm512_loadu_ps(y + i), vb), act));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i), vb);
        _mm512_mask_storeu_ps(y + i, m, act16(v, act));
    }
}

void efc_k_bias_act_f32__avx512(size_t rows, size_t cols, float *y, const float *b,
                                enum efc_k_act act)
{
    if (cols == 1) {
        bcast(rows, y, b[0], act);
        return;
    }
    for (size_t r = 0; r < rows; r++) {
        float *row = y + r * cols;
        size_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            __m512 v = _mm512_add_ps(_mm512_loadu_ps(row + j), _mm512_loadu_ps(b + j));
            _mm512_storeu_ps(row + j, act16(v, act));
        }
        if (j < cols) {
            __mmask16 m = (__mmask16)((1u << (cols - j)) - 1u);
            __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, row + j),
                                     _mm512_maskz_loadu_ps(m, b + j));
            _mm512_mask_storeu_ps(row + j, m, act16(v, act));
        }
    }
}
