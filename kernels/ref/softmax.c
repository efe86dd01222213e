/* softmax.c — row-wise softmax, numerically stable: exp(x - max) so the largest term is 1
 * and nothing overflows; the sum is kept in double. y may alias x (each row is read fully
 * for the max before being written). */
#include <math.h>

#include "kernels/kernels.h"

void efc_k_softmax_f32(int32_t rows, int32_t cols, const float *x, float *y)
{
    for (int32_t r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        if (cols <= 0)
            continue;
        float m = xr[0];
        for (int32_t j = 1; j < cols; j++)
            m = xr[j] > m ? xr[j] : m;
        double s = 0.0;
        for (int32_t j = 0; j < cols; j++) {
            float e = expf(xr[j] - m);
            yr[j] = e;
            s += e;
        }
        const float inv = (float)(1.0 / s);
        for (int32_t j = 0; j < cols; j++)
            yr[j] *= inv;
    }
}
