/* grad.h — private to compress/: the training graph (forward in train or eval mode, softmax
 * cross-entropy, backward of every model.h op) used by train.c and the gradient-check test.
 *
 * efc_tg_new builds, once, buffers for every activation and its gradient for max_batch
 * samples, per-node state (BatchNorm batch statistics, max-pool argmax) and the conv scratch
 * (im2col columns for a chunk of images); forward / loss / backward then run with no
 * allocation. Parameters are read and updated in place in the model (mapped parameter data is
 * first copied into owned buffers, so a model loaded from a file can be trained). Gradients
 * are written on first use and accumulated afterwards, so a tensor read by several nodes gets
 * the sum. Thread rule: one thread per graph; OpenBLAS may thread inside. The model must not
 * change shape while a graph exists; efc_tg_free releases everything the graph allocated.
 */
#ifndef EFC_COMPRESS_GRAD_H
#define EFC_COMPRESS_GRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

struct efc_tg;

/* Build the graph for m (efc_model_check is run first). input_grad: also compute the
 * gradient of the model input (only the gradient check needs it). Errors: EFC_EINVAL
 * (max_batch < 1), EFC_EPROTO (model check), EFC_EUNSUPPORTED (non-F32 parameter, an op or
 * layout the trainer cannot differentiate), EFC_ENOMEM. */
enum efc_status efc_tg_new(struct efc_model *m, int32_t max_batch, bool input_grad,
                           struct efc_tg **out);
void efc_tg_free(struct efc_tg *g);

/* Buffer of max_batch x input_size floats the caller fills with normalised input. */
float *efc_tg_input(struct efc_tg *g);
int32_t efc_tg_input_size(const struct efc_tg *g);
/* Classes = per-sample size of the loss input (the logits). */
int32_t efc_tg_n_classes(const struct efc_tg *g);
/* Tensor the loss reads: the model output, or the input of a final Softmax node (the loss
 * then fuses softmax and cross-entropy). */
int32_t efc_tg_logits_tensor(const struct efc_tg *g);

/* Forward for `batch` samples. training: BatchNorm uses batch statistics and updates its
 * running statistics (momentum attr); otherwise running statistics. */
void efc_tg_forward(struct efc_tg *g, int32_t batch, bool training);

/* Mean softmax cross-entropy of the logits against labels[batch]; writes the gradient
 * (softmax - onehot) / batch into the logits' gradient (which seeds the next backward).
 * *correct (may be NULL) = number of argmax hits. */
float efc_tg_loss(struct efc_tg *g, int32_t batch, const int32_t *labels, int32_t *correct);
/* Count argmax hits without touching gradients (evaluation). */
int32_t efc_tg_count_correct(const struct efc_tg *g, int32_t batch, const int32_t *labels);

/* Start a backward pass seeded from tensor `seed` whose gradient the caller wrote (after
 * efc_tg_loss: efc_tg_logits_tensor). Every other gradient is recomputed; nodes whose
 * output gradient is not reached are skipped. */
void efc_tg_backward(struct efc_tg *g, int32_t batch, int32_t seed);

/* Values / gradient buffers of a tensor (activation: batch-major, max_batch samples). The
 * gradient is NULL if the tensor does not need one; it is valid only if efc_tg_grad_valid. */
const float *efc_tg_value(const struct efc_tg *g, int32_t tensor);
float *efc_tg_grad(struct efc_tg *g, int32_t tensor);
bool efc_tg_grad_valid(const struct efc_tg *g, int32_t tensor);
/* Mark a gradient as written by the caller (before efc_tg_backward from it). */
void efc_tg_grad_set(struct efc_tg *g, int32_t tensor);

/* Trainable parameters (conv / dense weights and biases, BN gamma and beta), for the
 * optimiser: index i in [0, n). */
int32_t efc_tg_n_params(const struct efc_tg *g);
/* *tensor = model tensor index, *data / *grad its buffers, *n its element count. */
void efc_tg_param(struct efc_tg *g, int32_t i, int32_t *tensor, float **data, float **grad,
                  size_t *n);

/* Optimiser (optim.c): PyTorch SGD (momentum, dampening 0, weight decay as L2) and Adam
 * (betas 0.9 / 0.999, eps 1e-8, bias correction, weight decay as L2). */
struct efc_optim_state;
enum efc_status efc_optim_new(struct efc_tg *g, int kind, float momentum, float weight_decay,
                              struct efc_optim_state **out);
/* One step with learning rate lr over every parameter whose gradient is valid. */
void efc_optim_step(struct efc_optim_state *s, float lr);
void efc_optim_free(struct efc_optim_state *s);

/* Learning rate at global step `step` (0-based) of `total` steps, `per_epoch` steps per
 * epoch: cosine (PyTorch CosineAnnealingLR to 0, stepped per batch), step (lr * gamma every
 * step_epochs epochs) or constant. */
float efc_sched_lr(int sched, float lr, int64_t step, int64_t total, int64_t per_epoch,
                   int32_t step_epochs, float step_gamma);

/* Progress display (progress.c). mode 0 silent, 1 auto (bar on a TTY, lines otherwise). */
struct efc_progress {
    int mode; /* 0 silent, 1 bar, 2 lines */
    int32_t epochs;
    int64_t per_epoch;  /* images per epoch */
    double t_start, t_epoch, t_last;
    int last_decile;
};
void efc_progress_init(struct efc_progress *p, int mode, int32_t epochs, int64_t per_epoch);
/* During epoch `epoch` (0-based), `done` images of this epoch so far. */
void efc_progress_update(struct efc_progress *p, int32_t epoch, int64_t done, float loss,
                         float acc);
/* End of an epoch; val_acc < 0 when there is no validation set. */
void efc_progress_epoch_end(struct efc_progress *p, int32_t epoch, float loss, float acc,
                            float val_acc, double img_per_s);

#endif
