/* exec.h — the FP32 graph executor.
 *
 * efc_exec_new compiles a model once (FP32 or INT8, model.h): copies it, folds BatchNorm into the
 * preceding conv / dense, fuses ReLU / ReLU6 into their producer, infers shapes for max_batch, and
 * plans one activation arena with liveness-based buffer reuse (plus kernel scratch). efc_exec_run
 * then runs with no allocation. The executor reports the planned peak activation bytes (arena +
 * scratch) and the weight bytes. Input to efc_exec_run is raw data (as stored in the data
 * set); the model's input normalisation is applied inside, so a model always receives data
 * the way it was trained. Thread rule: one thread per executor (OpenBLAS may use its own
 * threads inside a call).
 */
#ifndef EFC_MODEL_EXEC_H
#define EFC_MODEL_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "model/dataset.h"
#include "model/model.h"

struct efc_exec;

struct efc_exec_opts {
    int32_t max_batch; /* >= 1 */
};

enum efc_status efc_exec_new(const struct efc_model *m, const struct efc_exec_opts *o,
                             struct efc_exec **out);
void efc_exec_free(struct efc_exec *e);

/* Run `batch` (1..max_batch) samples of raw input. *out (peek) points to batch x
 * output_size logits, valid until the next run or free. */
enum efc_status efc_exec_run(struct efc_exec *e, const float *raw, int32_t batch,
                             const float **out);

int32_t efc_exec_input_size(const struct efc_exec *e);  /* floats per sample */
int32_t efc_exec_output_size(const struct efc_exec *e); /* floats per sample */
size_t efc_exec_peak_activation_bytes(const struct efc_exec *e);
size_t efc_exec_weight_bytes(const struct efc_exec *e);
/* Observer for calibration: called by efc_exec_run with the normalised input tensor first,
 * then after every compiled node with the tensor it produced (an index into
 * efc_exec_model(e)'s tensors; data = batch x numel floats, valid during the call; u8
 * tensors of INT8 models are not reported). NULL
 * removes it. The observer must not call back into the executor. */
typedef void (*efc_exec_observer_fn)(void *ctx, const struct efc_model *compiled, int32_t tensor,
                                     const float *data, int32_t batch);
void efc_exec_set_observer(struct efc_exec *e, efc_exec_observer_fn fn, void *ctx);

/* The compiled (folded, fused) model, for inspection. */
const struct efc_model *efc_exec_model(const struct efc_exec *e);

/* Evaluation of a classifier on a labelled data set. */
struct efc_eval_result {
    int32_t samples;
    int32_t correct;
    double accuracy;
    int32_t n_classes;
    int32_t *confusion; /* n_classes x n_classes, [true][pred], owned: efc_eval_result_fini */
};
/* Runs in batches of `batch`; needs labels (EFC_EINVAL otherwise). */
enum efc_status efc_eval(const struct efc_model *m, const struct efc_dataset *d, int32_t batch,
                         struct efc_eval_result *r);
void efc_eval_result_fini(struct efc_eval_result *r);

#endif
