/* train.h — training and fine-tuning of efc models (FP32, on the coordinator / offline).
 *
 * Owns the backward pass of every op in model.h (BatchNorm in training mode with running
 * statistics), softmax cross-entropy, SGD with momentum and weight decay, Adam, cosine /
 * step / constant learning rate, mini-batches with seeded shuffling (same seed, same result
 * on the same build), and hooks so later issues can add pruning masks, fake quantisation and
 * a teacher's soft targets. Heavy products go through OpenBLAS (kernels/blas.h).
 * Progress: a bar per epoch on a TTY (loss, accuracy, images/s, ETA), plain lines otherwise.
 * Thread rule: one thread per call; OpenBLAS may thread inside.
 */
#ifndef EFC_COMPRESS_TRAIN_H
#define EFC_COMPRESS_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "model/dataset.h"
#include "model/model.h"

enum efc_optim { EFC_OPTIM_ADAM = 0, EFC_OPTIM_SGD = 1 };
enum efc_sched { EFC_SCHED_COSINE = 0, EFC_SCHED_STEP = 1, EFC_SCHED_CONST = 2 };

struct efc_train_hooks {
    void *ctx;
    /* Before each forward pass (e.g. fake-quantise weights for QAT). May be NULL. */
    void (*before_forward)(void *ctx, struct efc_model *m, int64_t step);
    /* Extra loss on the logits (e.g. distillation): add its gradient into dlogits (already
     * holding the mean CE gradient), return its value. idx = data-set indices of the batch. */
    float (*extra_loss)(void *ctx, const float *logits, const int32_t *idx, int32_t batch,
                        int32_t n_classes, float *dlogits);
    /* After each optimiser step (e.g. re-apply pruning masks). May be NULL. */
    void (*after_step)(void *ctx, struct efc_model *m, int64_t step);
};

struct efc_train_opts {
    int32_t epochs;          /* default 10 */
    int32_t batch;           /* default 128 */
    enum efc_optim optim;    /* default Adam */
    float lr;                /* default 1e-3 (Adam), 0.05 (SGD) */
    float momentum;          /* SGD, default 0.9 */
    float weight_decay;      /* default 0 (Adam) / 5e-4 (SGD) */
    enum efc_sched sched;    /* default cosine */
    int32_t step_epochs;     /* step schedule: lr *= step_gamma every step_epochs */
    float step_gamma;
    uint64_t seed;           /* shuffling */
    int32_t progress;        /* 0 silent, 1 bar on a TTY / lines otherwise */
    const struct efc_train_hooks *hooks; /* may be NULL */
};

struct efc_train_report {
    int32_t epochs;
    double seconds;
    double images_per_s;
    float final_loss;        /* mean training loss of the last epoch */
    float train_accuracy;    /* on the last epoch's batches */
    float val_accuracy;      /* on `val` after the last epoch, or -1 */
};

/* Fill opts with the defaults above. */
void efc_train_opts_default(struct efc_train_opts *o);

/* Train m in place on `train` (labels required); val may be NULL. Sparse parameter tensors
 * are densified in place first (efc_model_densify: the trainer works on dense buffers), so m
 * comes back dense; sparsify again after training (e.g. after pruning) to store it compactly.
 * On error m is unchanged only if the error happened before the first step (apart from that
 * densification); the caller keeps the file it loaded. */
enum efc_status efc_train(struct efc_model *m, const struct efc_dataset *train,
                          const struct efc_dataset *val, const struct efc_train_opts *o,
                          struct efc_train_report *rep);

#endif
