/* qat.h — quantisation-aware fine-tuning of the weights (docs/policies.md "qat").
 *
 * Fake quantisation with a straight-through estimator, weights only: before every forward pass
 * each f32 Dense / Conv2d weight is replaced by its INT8 grid value (efc_quant_weights:
 * symmetric, per output channel or per tensor, exactly what the INT8 lowering will do), the
 * gradient computed at that point is applied to an FP32 master copy (the optimiser's update of
 * the fake-quantised weight is added to the master), and at the end the model holds the
 * masters. Activations are not fake-quantised: they are calibrated afterwards, on the device,
 * by the int8 step. For a model without BatchNorm the training sees exactly the weights the
 * INT8 model will have; with BatchNorm the lowering folds BN into the weights first, so the
 * grid is only approximate there.
 */
#ifndef EFC_COMPRESS_QAT_H
#define EFC_COMPRESS_QAT_H

#include <stdint.h>

#include "compress/train.h"
#include "model/dataset.h"
#include "model/model.h"

/* Fine-tune m in place for o->epochs with weight fake quantisation (per_tensor: one scale per
 * weight tensor, else one per output channel). o->hooks is ignored (QAT installs its own). */
enum efc_status efc_qat(struct efc_model *m, const struct efc_dataset *train,
                        const struct efc_train_opts *o, int32_t per_tensor);

/* m's weights on the INT8 grid, in place (what before_forward does); for tests. */
enum efc_status efc_qat_fake_quantise(struct efc_model *m, int32_t per_tensor);

#endif
