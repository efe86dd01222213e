/* prune.h — weight pruning with masks (compress/, docs/policies.md).
 *
 * Prunable weights: the f32 weight tensor (input 1) of every Dense and Conv2d node; biases,
 * BatchNorm parameters and INT8 tensors are never pruned. A mask set holds one keep/drop byte
 * per weight element; applying it zeroes the dropped weights. Fine-tuning keeps the masks by
 * re-applying them after every optimiser step (efc_prune_hooks).
 *
 * - Global magnitude pruning (efc_prune_magnitude): one threshold over the |w| of all
 *   prunable weights together, so layers lose weights in proportion to how small theirs are.
 *   `min_density` protects small layers: no layer keeps fewer than that fraction of its
 *   weights (the largest ones), so a 150-weight first conv cannot be wiped out by a global
 *   threshold set by a 235k-weight Dense.
 * - N:M (efc_prune_nm): in every group of m consecutive weights along the input dimension,
 *   the n largest |w| are kept. Dense W[out, in]: groups of m consecutive inputs of a row.
 *   Conv2d W[oc, ic, kh, kw]: groups of m consecutive input channels at the same (oc, ky, kx),
 *   which is m consecutive elements of the NHWC (kh, kw, ic) order the INT8 GEMM uses; a Dense
 *   after Flatten of a [C, H, W] map likewise groups channels at the same (h, w), the order
 *   the INT8 Dense reads its columns in. A layer
 *   whose input dimension (in, or ic / groups) is not a multiple of m is left dense and listed
 *   in the report (e.g. a first conv over 1 channel).
 * - Gradual schedule (Zhu & Gupta 2017): during fine-tuning the target sparsity rises as
 *   s(t) = s_f * (1 - (1 - t / T)^3) over the first `ramp` fraction of the steps, with the
 *   masks recomputed `updates` times; the last part fine-tunes with the final mask.
 */
#ifndef EFC_COMPRESS_PRUNE_H
#define EFC_COMPRESS_PRUNE_H

#include <stdint.h>

#include "compress/train.h"
#include "model/model.h"

struct efc_prune_layer {
    int32_t tensor;  /* weight tensor index */
    int32_t node;    /* its Dense / Conv2d node */
    int64_t numel;
    uint8_t *keep;   /* numel bytes, 1 = kept */
    int32_t nm_skip; /* N:M: 1 if the layer's input dimension does not fit groups of m */
};

struct efc_prune {
    int32_t n;
    struct efc_prune_layer *layers;
};

/* Masks (all kept) for every prunable weight of m. EFC_EINVAL if m has none. */
enum efc_status efc_prune_init(const struct efc_model *m, struct efc_prune *p);
void efc_prune_fini(struct efc_prune *p);

/* Set the masks to keep the largest |w| so that a fraction `sparsity` in [0, 1) of all
 * prunable weights is dropped, each layer keeping at least min_density of its own (and at least
 * one weight); then zero the dropped weights. Weights already zero count as smallest. */
enum efc_status efc_prune_magnitude(struct efc_model *m, struct efc_prune *p, double sparsity,
                                    double min_density);
/* N:M masks (1 <= n < m <= 16, as described above) and zero the dropped weights. */
enum efc_status efc_prune_nm(struct efc_model *m, struct efc_prune *p, int32_t n, int32_t mm);
/* Zero every dropped weight. */
void efc_prune_apply(struct efc_model *m, const struct efc_prune *p);
/* Dropped / total over the masked weights. */
double efc_prune_mask_sparsity(const struct efc_prune *p);
/* Fraction of prunable weights that are exactly zero in m (whatever the masks). */
double efc_prune_model_sparsity(const struct efc_model *m);
/* 1 if every masked layer not marked nm_skip keeps at most n of every m along its input
 * dimension (a check for tests and for the lowering pass). */
int efc_prune_nm_holds(const struct efc_model *m, const struct efc_prune *p, int32_t n,
                       int32_t mm);

/* Training hooks that keep the masks during fine-tuning (after_step re-applies them) and,
 * when gradual is set, raise the sparsity along the schedule above. The state lives in
 * `g`; fill it with efc_prune_schedule_init, pass efc_prune_hooks(&g) in efc_train_opts. */
struct efc_prune_schedule {
    struct efc_prune *p;
    int32_t mode;        /* 0 keep masks only, 1 gradual magnitude */
    double final_sparsity, min_density;
    int64_t total_steps; /* of the fine-tuning */
    double ramp;         /* fraction of the steps over which sparsity rises (default 0.75) */
    int32_t updates;     /* mask recomputations along the ramp (default 10) */
    int32_t done_updates;
    enum efc_status err; /* first error inside a hook (hooks return void) */
};
void efc_prune_schedule_init(struct efc_prune_schedule *g, struct efc_prune *p, int32_t mode,
                             double final_sparsity, double min_density, int64_t total_steps);
void efc_prune_hooks(struct efc_prune_schedule *g, struct efc_train_hooks *h);

#endif
