/* model.h — the efc model IR: tensors and nodes in topological order.
 *
 * Owns: struct efc_model (tensors, nodes, input normalisation, metadata JSON) and the
 * functions that build, validate, copy and shape-check it. The IR is what .efm files store
 * (efm.h), what the executor compiles (exec.h) and what training updates (compress/).
 *
 * Layout conventions (fixed; the executor, the trainer and the file format rely on them):
 * - Activations are NCHW float32. An activation tensor stores its per-sample shape
 *   (no batch dimension): [C, H, W] for images, [F] for features. The batch is dynamic.
 * - Parameter tensors (EFC_TENSOR_PARAM) store their full shape and own (or map) data.
 * - A parameter tensor is dense (sparse == NULL: `data` holds numel values in C order) or
 *   sparse. CSR (EFC_LAYOUT_CSR) views the tensor as a rows x cols matrix with rows = dims[0]
 *   and cols = numel / dims[0] (Dense W[out, in] is row-major CSR, conv W[oc, ...] has one row
 *   per output channel); `data` then holds the nnz stored values (dtype-sized, 64-byte
 *   aligned) in row order, row r's values being data[row_ptr[r] .. row_ptr[r + 1]) at columns
 *   col_idx[...], strictly increasing within a row; every other element is zero (all bits).
 *   Consumers that need dense weights call efc_model_densify (the FP32 executor on its
 *   compiled copy, the trainer on the model it trains); efc_model_check validates the CSR
 *   structure (a loaded model's index arrays are untrusted until it has run).
 * - Dense: inputs {x, W[out, in], b[out] or -1}. x is flattened per sample.
 * - Conv2d: inputs {x, W[oc, ic/groups, kh, kw], b[oc] or -1}; pads top/left/bottom/right.
 * - BatchNorm: inputs {x, gamma[c], beta[c], running_mean[c], running_var[c]}.
 * - Add: inputs {a, b} of equal shape. Others: inputs {x}.
 * - Node attribute `act` (EFC_ACT_*) is a fused activation applied after the op; the model
 *   builders leave it NONE and emit explicit ReLU nodes; compilation passes fuse them.
 * INT8 graphs (docs/quantization.md): activation tensors may be u8 with per-tensor qparams
 * (real = scale * (q - zero_point)); a Conv2d / Dense whose input is u8 takes i8 weights with
 * symmetric qparams (zero point 0) per tensor or per output channel (axis 0) and an optional
 * i32 bias at scale s_x * s_w, and produces u8; pools, Flatten / Reshape keep their input's
 * qparams; Add rescales; Quantize / Dequantize convert between the domains. ReLU, ReLU6,
 * BatchNorm and Softmax are f32 only (ReLU is fused as a clamp into the u8 producer).
 * Input normalisation: the model's input is (raw * scale - mean) / std per channel, with the
 * values in struct efc_input_norm (n == 0: input is taken as is). efc_model_normalize applies it.
 *
 * Ownership: efc_model_free releases tensors, data and CSR index arrays it owns, nodes and
 * metadata. Tensor data and CSR index arrays may instead point into a mapping owned by the
 * model (loaded .efm). Thread rule: one thread per model while it is modified; a model that
 * is no longer modified may be read by many.
 */
#ifndef EFC_MODEL_MODEL_H
#define EFC_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"

#define EFC_MAX_DIMS 4
#define EFC_NAME_MAX 64
#define EFC_NODE_MAX_INPUTS 5
#define EFC_NORM_MAX_CH 4

/* Values are stored in .efm files: append-only. */
enum efc_dtype { EFC_DTYPE_F32 = 1, EFC_DTYPE_I8 = 2, EFC_DTYPE_U8 = 3, EFC_DTYPE_I32 = 4 };

/* Values are stored in .efm files: append-only. */
enum efc_op {
    EFC_OP_DENSE = 1,
    EFC_OP_CONV2D = 2,
    EFC_OP_RELU = 3,
    EFC_OP_RELU6 = 4,
    EFC_OP_MAXPOOL = 5,
    EFC_OP_AVGPOOL = 6,
    EFC_OP_GAVGPOOL = 7,
    EFC_OP_FLATTEN = 8,
    EFC_OP_RESHAPE = 9,
    EFC_OP_ADD = 10,
    EFC_OP_BATCHNORM = 11,
    EFC_OP_SOFTMAX = 12,
    EFC_OP_QUANTIZE = 13,   /* f32 -> u8 with the output's qparams */
    EFC_OP_DEQUANTIZE = 14, /* u8 -> f32 with the input's qparams */
    EFC_OP_COUNT /* never use */
};

enum efc_act { EFC_ACT_NONE = 0, EFC_ACT_RELU = 1, EFC_ACT_RELU6 = 2 };

/* Layout of a parameter tensor's data. Values are stored in .efm files: append-only. */
enum efc_layout { EFC_LAYOUT_DENSE = 0, EFC_LAYOUT_CSR = 1 };

/* Tensor flags (bits, stored in files). */
#define EFC_TENSOR_PARAM 0x1u  /* constant with data: weight, bias, BN statistic */
#define EFC_TENSOR_INPUT 0x2u  /* the model input */
#define EFC_TENSOR_OUTPUT 0x4u /* the model output */

/* Quantisation parameters: per tensor (n == 1) or per channel along `axis` (n == dim). */
struct efc_qparams {
    int32_t n;
    int32_t axis;
    float *scale;       /* n values, owned */
    int32_t *zero_point; /* n values, owned */
};

/* Sparse layout of a parameter tensor (see the header comment). The index arrays are owned
 * (owns_index = 1) or point into the model's mapping, like `data`. */
struct efc_sparse {
    enum efc_layout layout; /* EFC_LAYOUT_CSR */
    int32_t rows, cols, nnz;
    int32_t *row_ptr; /* rows + 1: row_ptr[0] == 0, non-decreasing, row_ptr[rows] == nnz */
    int32_t *col_idx; /* nnz entries in [0, cols) */
    int owns_index;   /* 1: efc_free(row_ptr), efc_free(col_idx) on model free */
};

struct efc_tensor {
    char name[EFC_NAME_MAX];
    enum efc_dtype dtype;
    uint32_t flags;
    int32_t ndim;
    int32_t dims[EFC_MAX_DIMS]; /* params: full shape; activations: per-sample shape */
    void *data;                 /* params only; NULL for activations; nnz values if sparse */
    int owns_data;              /* 1: efc_free(data) on model free */
    struct efc_qparams *q;      /* optional, owned */
    struct efc_sparse *sparse;  /* optional, owned; NULL = dense */
};

struct efc_node_attrs {
    int32_t kernel[2]; /* kh, kw (conv, pools) */
    int32_t stride[2]; /* sh, sw */
    int32_t pad[4];    /* top, left, bottom, right */
    int32_t groups;    /* conv: 1 = dense conv, ic = depthwise */
    int32_t count_include_pad; /* avgpool: 0 excludes padding from the divisor (ONNX default) */
    enum efc_act act;  /* fused activation after the op */
    float eps;         /* batchnorm */
    float momentum;    /* batchnorm running-stat update (PyTorch convention, 0.1) */
    int32_t shape_ndim; /* reshape: per-sample target shape, one entry may be -1 */
    int32_t shape[EFC_MAX_DIMS];
};

struct efc_node {
    enum efc_op op;
    char name[EFC_NAME_MAX];
    int32_t n_inputs;
    int32_t inputs[EFC_NODE_MAX_INPUTS]; /* tensor indices; -1 = absent optional input */
    int32_t output;                      /* tensor index */
    struct efc_node_attrs a;
};

struct efc_input_norm {
    int32_t n; /* 0: none; 1: same for all channels; else one per channel (<= EFC_NORM_MAX_CH) */
    float scale[EFC_NORM_MAX_CH];
    float mean[EFC_NORM_MAX_CH];
    float std[EFC_NORM_MAX_CH];
};

struct efc_model {
    char name[EFC_NAME_MAX];
    char arch[EFC_NAME_MAX];
    struct efc_tensor *tensors;
    int32_t n_tensors, cap_tensors;
    struct efc_node *nodes;
    int32_t n_nodes, cap_nodes;
    int32_t input;  /* tensor index */
    int32_t output; /* tensor index */
    struct efc_input_norm norm;
    char *meta_json; /* free-form metadata object (provenance, policy, metrics), owned, or NULL */
    void *map;       /* backing mapping of a loaded file, or NULL */
    size_t map_bytes;
};

size_t efc_dtype_size(enum efc_dtype t);
const char *efc_dtype_name(enum efc_dtype t);
const char *efc_op_name(enum efc_op op);
size_t efc_tensor_numel(const struct efc_tensor *t);
/* Dense byte size: numel * dtype size, whatever the layout. */
size_t efc_tensor_bytes(const struct efc_tensor *t);
/* Bytes the tensor's data occupies in memory (without alignment padding): efc_tensor_bytes
 * for dense; for CSR the nnz values plus row_ptr and col_idx (4 bytes per entry). .efm files
 * store col_idx more compactly (as u16 or Rice-coded gaps, docs/format.md): what a tensor
 * takes in a file is efc_efm_tensor_file_bytes (efm.h). */
size_t efc_tensor_storage_bytes(const struct efc_tensor *t);

enum efc_status efc_model_new(struct efc_model **out);
void efc_model_free(struct efc_model *m);

/* Add a tensor; PARAM tensors get zeroed, owned, 64-byte aligned data. *out_idx = index. */
enum efc_status efc_model_add_tensor(struct efc_model *m, const char *name, enum efc_dtype dt,
                                     int32_t ndim, const int32_t *dims, uint32_t flags,
                                     int32_t *out_idx);
/* Add a node at the end (the caller keeps topological order). Attrs are copied. */
enum efc_status efc_model_add_node(struct efc_model *m, enum efc_op op, const char *name,
                                   const int32_t *inputs, int32_t n_inputs, int32_t output,
                                   const struct efc_node_attrs *a, int32_t *out_idx);

/* Check structure (indices, topological order, input counts, dtypes, param shapes against
 * activation shapes, attrs in range, sparse layouts) and fill in every activation tensor's
 * per-sample shape from the input's. Errors: EFC_EPROTO with a detail naming the node or
 * tensor. Safe on untrusted models (the .efm reader calls it). */
enum efc_status efc_model_check(struct efc_model *m);

/* Convert PARAM tensor t from dense to CSR, dropping the elements whose bytes are all zero
 * (so densifying restores the tensor bit for bit). No-op if t is already sparse. Errors:
 * EFC_EINVAL (not a parameter, or more than INT32_MAX elements), EFC_ENOMEM (t unchanged). */
enum efc_status efc_tensor_sparsify(struct efc_model *m, int32_t t);
/* Convert tensor t back to dense, owned data (no-op if dense). The CSR structure must be
 * valid (efc_model_check). Errors: EFC_ENOMEM (t unchanged). */
enum efc_status efc_tensor_densify(struct efc_model *m, int32_t t);
/* efc_tensor_densify on every tensor. */
enum efc_status efc_model_densify(struct efc_model *m);

/* Deep copy (data copied into owned buffers; the copy has no mapping). */
enum efc_status efc_model_clone(const struct efc_model *m, struct efc_model **out);

/* Apply the input normalisation: out[i] = (raw[i] * scale[c] - mean[c]) / std[c] for
 * n_samples samples of the input's per-sample shape. raw and out may alias. */
void efc_model_normalize(const struct efc_model *m, const float *raw, float *out,
                         int32_t n_samples);

/* Totals over PARAM tensors: element count, non-zero count (stored values of sparse tensors
 * that are non-zero), storage bytes (efc_tensor_storage_bytes). */
void efc_model_param_stats(const struct efc_model *m, uint64_t *params, uint64_t *nonzero,
                           uint64_t *bytes);
/* Multiply-accumulates per sample of one node / the whole model (after efc_model_check). */
uint64_t efc_node_macs(const struct efc_model *m, const struct efc_node *n);
uint64_t efc_model_macs(const struct efc_model *m);

/* Find a tensor by name: index or -1. */
int32_t efc_model_find_tensor(const struct efc_model *m, const char *name);

#endif
