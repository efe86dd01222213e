/* exec_int.h — private to model/: the INT8 steps of the executor (exec_q.c).
 *
 * Layout inside the executor: f32 activations are NCHW; u8 activations are NHWC (channels
 * innermost, what the INT8 kernels want). A u8 tensor that is a view (Flatten / Reshape) of a
 * 3-D tensor keeps that NHWC byte order; `hwc` records its (C, H, W) so that Dequantize and a
 * Dense reading it can undo the order (the Dense permutes its weight columns once at load).
 */
#ifndef EFC_MODEL_EXEC_INT_H
#define EFC_MODEL_EXEC_INT_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

struct efc_qstep;

/* Per tensor of m: the (C, H, W) of the NHWC order its bytes follow, or C = 0 when the order
 * is the same as NCHW (1-D data, C == 1, or H * W == 1). Filled for every u8 tensor. */
struct efc_hwc {
    int32_t c, h, w;
};
enum efc_status efc_exec_q_layouts(const struct efc_model *m, struct efc_hwc *hwc);

/* Does node n run as an INT8 step (u8 input, or Quantize / Dequantize)? */
int efc_exec_q_is_int8(const struct efc_model *m, const struct efc_node *n);

/* Prepare node n (packs weights, derives requantisation); *scratch_bytes = what one run needs
 * at batch max_batch. Allocates (load time only). */
enum efc_status efc_qstep_new(const struct efc_model *m, const struct efc_hwc *hwc,
                              const struct efc_node *n, int32_t max_batch, struct efc_qstep **out,
                              size_t *scratch_bytes);
/* Run it: x (and x2 for Add) in, y out, scratch as sized by efc_qstep_new. No allocation. */
void efc_qstep_run(const struct efc_qstep *s, int32_t batch, const void *x, const void *x2, void *y,
                   void *scratch);
void efc_qstep_free(struct efc_qstep *s);
/* Bytes of weights the step reads at run time (packed weights, bias, requantisation). */
size_t efc_qstep_weight_bytes(const struct efc_qstep *s);

#endif
