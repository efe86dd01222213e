/* compress.h — run the training-side steps of a policy (docs/policies.md).
 *
 * A policy (common/efc_policy.h) is a chain of steps applied left to right. This module runs
 * the steps that need training data and so run offline or on the coordinator: prune, nm (and,
 * in later work, filters, distill, lowrank, qat). The device steps — `int8` (calibrated on the
 * device's own data) and `fp32` — are not run here: efc_compress_run stops at the first one
 * and reports its index, and the caller (the agent, `efc compress`) runs the rest.
 *
 * Steps and keys (defaults in brackets; docs/policies.md has the full table):
 *   prune(sparsity=S, finetune=E [0], schedule=gradual|oneshot [gradual], min_density=D [0.02])
 *       global magnitude pruning of Dense/Conv2d weights to sparsity S in [0, 1), then E
 *       epochs of fine-tuning with the masks kept (gradual: the sparsity ramps up during
 *       fine-tuning; oneshot: pruned once, then fine-tuned; E = 0 means oneshot, no training).
 *   nm(n=N [2], m=M [4], finetune=E [0])
 *       N:M semi-structured pruning along the input dimension, then E epochs of fine-tuning.
 *   distill(student=ARCH, teacher=FILE [the input model], t=T [4], alpha=A [0.7],
 *           epochs=E [10])
 *       a fresh built-in student trained on the teacher's tempered outputs (distill.h); the
 *       student replaces the model for the steps that follow.
 *   filters(ratio=R, finetune=E [0], by=l1|bn [l1])
 *       structured channel pruning of every ordinary convolution (filters.h): a smaller dense
 *       model; then E epochs of fine-tuning.
 *   qat(epochs=E [2], weights=channel|tensor [channel])
 *       weight fake quantisation with a straight-through estimator (qat.h); must be followed
 *       by the int8 step, with the same weights= granularity.
 *   lowrank(energy=F [0.9] | rank=R, finetune=E [0])
 *       truncated-SVD factorisation of the Dense layers (lowrank.h), then E epochs of
 *       fine-tuning.
 * Fine-tuning uses Adam, cosine schedule from `lr` (opts, default 1e-3), batch 128, the
 * opts' seed; the masks are re-applied after every step.
 * Every step is validated before anything runs (efc_compress_check): unknown methods or keys,
 * values out of range, a step the model has no layer for, a training step after a device step
 * — each refused with a detail naming the policy step and key at fault, e.g.
 *   policy step 1 'prune(sparsity=1.5)': sparsity=1.5 is not in [0, 1)
 */
#ifndef EFC_COMPRESS_COMPRESS_H
#define EFC_COMPRESS_COMPRESS_H

#include <stdint.h>

#include "common/efc_policy.h"
#include "model/dataset.h"
#include "model/model.h"

struct efc_compress_opts {
    const struct efc_dataset *train; /* required by steps that train */
    const struct efc_dataset *val;   /* optional: accuracy after each step */
    uint64_t seed;                   /* default 1 */
    int32_t progress;                /* 0 silent, 1 progress bars / lines */
    float lr;                        /* fine-tuning learning rate; <= 0: 1e-3 */
    int32_t batch;                   /* fine-tuning batch; <= 0: 128 */
    const char *base_dir;            /* relative teacher= paths are also tried here */
};

struct efc_compress_step_report {
    char step[EFC_POLICY_STR_MAX]; /* the step as text */
    double seconds;
    double sparsity;     /* of the prunable weights after the step */
    float val_accuracy;  /* on opts.val after the step, or -1 */
    int32_t nm_skipped;  /* nm: layers left dense (input dimension not a multiple of m) */
    int32_t lowrank_factorised;           /* lowrank: Dense layers factorised */
    int64_t params_before, params_after;  /* lowrank: their weights */
    int32_t filters_pruned;               /* filters: convolutions pruned */
    uint64_t macs_before, macs_after;     /* filters: per sample, the whole model */
};

struct efc_compress_report {
    int32_t n_steps; /* steps run here */
    struct efc_compress_step_report steps[EFC_POLICY_MAX_STEPS];
    int32_t device_step; /* index of the first step left to the device, or -1 */
};

/* Validate p against m (see above). EFC_EINVAL with the detail; EFC_OK if every step could
 * run. */
enum efc_status efc_compress_check(const struct efc_model *m, const struct efc_policy *p);

/* Run p's training-side steps on *m, in order, up to the first device step. Pruning works in
 * place (zeros in dense tensors: sparsify them to store compactly); distill replaces *m with
 * the trained student (the old model is freed). On error *m may be partly compressed: the
 * caller keeps its input file. */
enum efc_status efc_compress_run(struct efc_model **m, const struct efc_policy *p,
                                 const struct efc_compress_opts *o,
                                 struct efc_compress_report *rep);

/* 1 for the steps the device runs (int8, fp32), 0 for training-side ones. */
int efc_compress_is_device_step(const char *method);

#endif
