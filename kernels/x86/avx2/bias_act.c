/* bias_act.c — AVX2 y[r][j] = act(y[r][j] + b[j]). cols == 1 (the conv epilogue: one channel
 * row with its bias, called as rows = H*W, cols = 1) broadcasts b[0] over the whole block. */
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

static void bcast(size_t n, float *y, float b, enum efc_k_act act)
{
    const __m256 vb = _mm256_set1_ps(b);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_add_ps(_mm256_loadu_ps(y + i), vb);
        __m256 v1 = _mm256_add_ps(_mm256_loadu_ps(y + i + 8), vb);
        _mm256_storeu_ps(y + i, act8(v0, act));
        _mm256_storeu_ps(y + i + 8, act8(v1, act));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, act8(_mm256_add_ps(_mm256_loadu_ps(y + i), vb), act));
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_add_ps(_mm256_maskload_ps(y + i, m), vb);
        _mm256_maskstore_ps(y + i, m, act8(v, act));
    }
}

void efc_k_bias_act_f32__avx2(size_t rows, size_t cols, float *y, const float *b,
                              enum efc_k_act act)
{
    if (cols == 1) {
        bcast(rows, y, b[0], act);
        return;
    }
    for (size_t r = 0; r < rows; r++) {
        float *row = y + r * cols;
        size_t j = 0;
        for (; j + 8 <= cols; j += 8) {
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(b + j));
            _mm256_storeu_ps(row + j, act8(v, act));
        }
        if (j < cols) {
            __m256i m = tail_mask(cols - j);
            __m256 v = _mm256_add_ps(_mm256_maskload_ps(row + j, m), _mm256_maskload_ps(b + j, m));
            _mm256_maskstore_ps(row + j, m, act8(v, act));
        }
    }
}
