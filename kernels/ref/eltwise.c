/* eltwise.c — reference element-wise kernels (relu, relu6, add, bias_act): they define the
 * semantics the SIMD variants must match bit for bit. relu(v) = v > 0 ? v : 0 (so NaN and -0
 * give +0, exactly what x86 max(v, 0) returns); relu6(v) = min(relu(v), 6) the same way. */
#include "kernels/kernels.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static inline float act_f32(float v, enum efc_k_act act)
{
    if (act == EFC_K_ACT_NONE)
        return v;
    v = v > 0.0f ? v : 0.0f;
    if (act == EFC_K_ACT_RELU6)
        v = v < 6.0f ? v : 6.0f;
    return v;
}

void efc_k_relu_f32__ref(size_t n, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = act_f32(x[i], EFC_K_ACT_RELU);
}

void efc_k_relu6_f32__ref(size_t n, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = act_f32(x[i], EFC_K_ACT_RELU6);
}

void efc_k_add_f32__ref(size_t n, const float *a, const float *b, float *y, enum efc_k_act act)
{
    for (size_t i = 0; i < n; i++)
        y[i] = act_f32(a[i] + b[i], act);
}

void efc_k_bias_act_f32__ref(size_t rows, size_t cols, float *y, const float *b,
                             enum efc_k_act act)
{
    for (size_t r = 0; r < rows; r++) {
        float *row = y + r * cols;
        for (size_t j = 0; j < cols; j++)
            row[j] = act_f32(row[j] + b[j], act);
    }
}
