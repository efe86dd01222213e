/* dense.c — fully connected layer: y[n, out] = act(x[n, in] * w[out, in]^T + b).
 * One sgemm for the batch (sgemv for n == 1, where OpenBLAS's gemm would pack for nothing);
 * the bias+act epilogue is the dispatched bias_act over the [n x out] result. */
#include "kernels/blas.h"
#include "kernels/kernels.h"

void efc_k_dense_f32(int32_t n, int32_t in, int32_t out, const float *x, const float *w,
                     const float *b, float *y, enum efc_k_act act)
{
    if (n <= 0 || out <= 0)
        return;
    if (n == 1)
        efc_k_sgemv(false, out, in, 1.0f, w, in > 0 ? in : 1, x, 0.0f, y);
    else
        efc_k_sgemm(false, true, n, out, in, 1.0f, x, in > 0 ? in : 1, w, in > 0 ? in : 1,
                    0.0f, y, out);
    const struct efc_kernel_table *t = efc_kernels();
    size_t len = (size_t)n * (size_t)out;
    if (b != NULL)
        t->bias_act_f32((size_t)n, (size_t)out, y, b, act);
    else if (act == EFC_K_ACT_RELU)
        t->relu_f32(len, y, y);
    else if (act == EFC_K_ACT_RELU6)
        t->relu6_f32(len, y, y);
}
