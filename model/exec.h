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

#include "kernels/cpu_features.h"
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

/* ---- Sparse kernels per layer (docs/kernels-sparse.md "In the executors") -----------------
 * At compile time each GEMM-shaped layer (Dense, and Conv2d with groups 1, FP32 or INT8) gets
 * its weight density measured (non-zeros / elements; zero = exact +0 / -0 or int8 0) and the
 * finest N:M pattern (1:4, then 2:4) checked along its reduction dimension in the order the
 * kernel reads it (FP32 conv: the im2col order c, ky, kx; INT8 conv: the NHWC im2row order
 * ky, kx, c; a Dense reading an NHWC u8 tensor: its permuted columns). The layer runs the
 * sparse kernel (efc_kernels()->spmm_f32 / spmm_u8s8, packed once here) when its effective
 * density is at most the threshold of its precision at the kernel level in use (one table in
 * exec.c; efc_exec_sparse_threshold), else the dense kernel as before. The sparse path keeps
 * every guarantee: no allocation per run (its scratch is planned here), INT8 outputs bit-exact
 * with the dense path, FP32 outputs equal up to summation order (the FP32 executor's test
 * bound, 1e-4 * (1 + max |ref|), holds for both paths). */
enum efc_exec_sparse_mode {
    EFC_EXEC_SPARSE_AUTO = 0, /* the threshold table decides (default) */
    EFC_EXEC_SPARSE_OFF = 1,  /* every layer dense (the behaviour before sparse kernels) */
    EFC_EXEC_SPARSE_ON = 2    /* every GEMM-shaped layer sparse (tests, experiments) */
};
struct efc_exec_sparse_cfg {
    enum efc_exec_sparse_mode mode;
    double max_density; /* auto: >= 0 replaces the table's threshold (experiments), else -1 */
};
/* What efc_exec_new uses: the environment variable EFC_SPARSE, "auto" (unset or empty too),
 * "off", "on", or a number in [0, 1] = auto with that threshold instead of the table's (for
 * threshold sweeps). EFC_EINVAL with a detail naming the value otherwise (efc_exec_new then
 * fails with it). */
enum efc_status efc_exec_sparse_cfg_from_env(struct efc_exec_sparse_cfg *out);
const char *efc_exec_sparse_mode_name(enum efc_exec_sparse_mode mode);
/* The threshold of the table for kernel level `isa` and a precision (int8: 1 INT8, 0 FP32):
 * `auto` runs a layer sparse when its effective density is at most *max_density, where the
 * effective density is the measured density for CSR, and n / m * *nm_factor for an N:M pattern
 * n:m that holds (the format with the lower effective density is used). */
void efc_exec_sparse_threshold(enum efc_isa isa, int int8, double *max_density, double *nm_factor);

/* One GEMM-shaped layer of the compiled model and how it runs. */
struct efc_exec_layer {
    char name[EFC_NAME_MAX]; /* its node in efc_exec_model() (the loaded model's name) */
    enum efc_op op;          /* EFC_OP_DENSE or EFC_OP_CONV2D */
    int32_t int8;            /* 1: an INT8 step */
    int32_t rows, k;         /* output channels; reduction length (in, or c * kh * kw) */
    int64_t nnz;             /* non-zero weights */
    double density;          /* nnz / (rows * k) */
    int32_t nm_n, nm_m;      /* finest pattern that holds along k (1:4 or 2:4), else 0, 0 */
    int32_t sparse;          /* 1: runs the sparse kernel */
    char format[8];          /* "csr", "2:4" or "1:4" when sparse, "" when dense */
};
/* The GEMM-shaped layers in execution order, *n of them (peek: valid until efc_exec_free). */
const struct efc_exec_layer *efc_exec_layers(const struct efc_exec *e, int32_t *n);
/* How many of them run sparse. */
int32_t efc_exec_n_sparse(const struct efc_exec *e);
/* The mode the executor was compiled with. */
enum efc_exec_sparse_mode efc_exec_sparse_mode_of(const struct efc_exec *e);

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
