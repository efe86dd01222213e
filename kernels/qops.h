/* qops.h — helpers of the INT8 element-wise and pooling ops (kernels.h, "INT8" section).
 *
 * The dispatched INT8 ops themselves (im2row_u8, qdwconv, qmaxpool, qavgpool, qgavgpool,
 * qadd, quantize, dequantize) are declared by kernels.h and listed in kernels_qops.inc; their
 * exact integer semantics are in docs/kernels-int8-ops.md. This header holds what the lowering
 * needs on top: the constructor of struct efc_qadd_params.
 * Thread rule: pure functions, safe from any thread.
 */
#ifndef EFC_KERNELS_QOPS_H
#define EFC_KERNELS_QOPS_H

#include <stdint.h>

#include "common/efc_status.h"
#include "kernels/kernels.h"

/* Fraction bits of the qadd input multipliers: the larger of m_a, m_b is exactly 2^14. */
#define EFC_QADD_MBITS 14

/* Parameters of y = a + b for uint8 tensors a (scale s_a, zero point zp_a), b (s_b, zp_b)
 * into y (s_y, zp_y), clamped to [lo, hi] (fused ReLU/ReLU6 or 0..255):
 *     s_max = max(s_a, s_b), m_a = round(s_a / s_max * 2^14), m_b = round(s_b / s_max * 2^14),
 *     (mult, shift) = efc_k_requant_make(s_max / (2^14 * s_y)).
 * EFC_EINVAL (with detail) for scales that are not finite and > 0, zero points outside
 * 0..255, a bad clamp (0 <= lo <= hi <= 255 is required), or s_max / s_y >= 2^14 (the
 * output multiplier would be >= 1: the lowering widens s_y). *p is untouched on error. */
enum efc_status efc_k_qadd_params_make(float s_a, int32_t zp_a, float s_b, int32_t zp_b,
                                       float s_y, int32_t zp_y, int32_t lo, int32_t hi,
                                       struct efc_qadd_params *p);

#endif
