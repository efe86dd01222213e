/* quant.h — the INT8 lowering pass: compiled FP32 graph + activation qparams -> INT8 graph.
 *
 * Input: a model compiled for inference (efc_exec_model(): BatchNorm folded, ReLU / ReLU6
 * fused into their producer) and, per tensor of that model, the scale and zero point chosen by
 * calibration (calib/; scale <= 0 marks a tensor without statistics). Output: a new model
 * whose quantisable layers are INT8 (model.h "INT8 graphs", docs/quantization.md):
 *   - input: Quantize after the (f32) input; output: Dequantize back to f32 logits;
 *   - Conv2d with groups 1 or depthwise, and Dense: u8 in / u8 out, i8 weights symmetric per
 *     output channel (or per tensor), i32 bias at s_x * s_w; the fused activation becomes the
 *     u8 clamp; when a channel's multiplier s_x * s_w / s_y would reach 1, the output scale is
 *     widened (reported);
 *   - MaxPool, AvgPool, GlobalAvgPool, Flatten, Reshape: u8 with their input's qparams;
 *   - Add: u8 with rescaling;
 *   - everything else (Softmax, unfused ReLU / BatchNorm, grouped conv, layers without
 *     statistics) stays f32 between Dequantize / Quantize nodes, and is listed in the report.
 * The input model is not modified. Thread-safe (no shared state).
 */
#ifndef EFC_MODEL_QUANT_H
#define EFC_MODEL_QUANT_H

#include <stdint.h>

#include "model/model.h"

struct efc_quant_opts {
    int32_t per_tensor_weights; /* 0: per output channel (default) */
};

struct efc_quant_report {
    int32_t n_int8;       /* compute nodes lowered to INT8 (conv, dense, pools, add, views) */
    int32_t n_fp32;       /* compute nodes left in FP32 */
    int32_t n_widened;    /* layers whose output scale was widened for the requantiser */
    char fp32_nodes[512]; /* names of the FP32 nodes, comma-separated (truncated) */
};

/* scale[t] / zp[t] for every tensor t of `compiled` (n_tensors entries). On error *out is
 * NULL and the detail names the node. */
enum efc_status efc_quant_lower(const struct efc_model *compiled, const float *scale,
                                const int32_t *zp, const struct efc_quant_opts *o,
                                struct efc_model **out, struct efc_quant_report *rep);

/* Per-tensor-or-channel symmetric int8 quantisation of w (n_ch rows of `per` values):
 * s[c] = max|w_c| / 127 (1 if the row is all zero), q = clamp(rne(w / s), -127, 127). */
void efc_quant_weights(const float *w, int32_t n_ch, int32_t per, int32_t per_tensor, int8_t *q,
                       float *s);

#endif
