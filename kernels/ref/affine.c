/* affine.c — per-channel affine + activation: inference BatchNorm after folding the running
 * statistics into scale/shift. One multiply and one add (no FMA contraction requested), so
 * results do not depend on the compiler's choice of instructions beyond -ffp-contract. */
#include "kernels/kernels.h"

void efc_k_channel_affine_f32(int32_t n, int32_t c, int32_t hw, const float *x,
                              const float *scale, const float *shift, float *y,
                              enum efc_k_act act)
{
    for (int32_t i = 0; i < n; i++) {
        for (int32_t ch = 0; ch < c; ch++) {
            size_t off = ((size_t)i * c + ch) * (size_t)hw;
            const float s = scale[ch], t = shift[ch];
            for (int32_t j = 0; j < hw; j++) {
                float v = x[off + j] * s + t;
                if (act != EFC_K_ACT_NONE)
                    v = v > 0.0f ? v : 0.0f;
                if (act == EFC_K_ACT_RELU6)
                    v = v < 6.0f ? v : 6.0f;
                y[off + j] = v;
            }
        }
    }
}
