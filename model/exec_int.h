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

#include "kernels/sparse.h"
#include "model/exec.h"
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

/* Decide how one GEMM-shaped layer runs (exec.h "Sparse kernels per layer"; the threshold
 * table is in exec.c): w is rows x k, float (int8 = 0) or int8 (int8 = 1), row-major with k in
 * the order the kernel reads it. Fills every field of *info but name and op. */
void efc_exec_sparse_decide(const struct efc_exec_sparse_cfg *cfg, int int8, int32_t rows,
                            int32_t k, const void *w, struct efc_exec_layer *info);
/* The packer's format for a decided layer: CSR ({0, 0}) or its N:M pattern. */
void efc_exec_layer_fmt(const struct efc_exec_layer *l, struct efc_sp_fmt *f);

/* Prepare node n (packs weights, dense or sparse as efc_exec_sparse_decide says under `sp`,
 * derives requantisation); *scratch_bytes = what one run needs at batch max_batch. Allocates
 * (load time only). */
enum efc_status efc_qstep_new(const struct efc_model *m, const struct efc_hwc *hwc,
                              const struct efc_node *n, int32_t max_batch,
                              const struct efc_exec_sparse_cfg *sp, struct efc_qstep **out,
                              size_t *scratch_bytes);
/* The step's GEMM-shaped layer (Conv2d with groups 1, Dense), or NULL for other steps. */
const struct efc_exec_layer *efc_qstep_layer(const struct efc_qstep *s);
/* Run it: x (and x2 for Add) in, y out, scratch as sized by efc_qstep_new. No allocation. */
void efc_qstep_run(const struct efc_qstep *s, int32_t batch, const void *x, const void *x2, void *y,
                   void *scratch);
void efc_qstep_free(struct efc_qstep *s);
/* Bytes of weights the step reads at run time (packed weights, bias, requantisation). */
size_t efc_qstep_weight_bytes(const struct efc_qstep *s);

#endif
