/* onnx_import.h — turn an ONNX model (PyTorch / TensorFlow export) into an efc model.
 *
 * Owns: parsing the protobuf (protobuf-c, code generated at build time from Debian's
 * onnx.proto) and lowering the graph to the IR of model/model.h. Supported (docs/onnx.md):
 * opset 11..17 of the default domain; Conv (groups, depthwise, pads, strides; dilation 1),
 * Gemm, MatMul (+ Add as its bias), Relu, Clip (0, 6) as ReLU6 and (0, none) as ReLU, MaxPool,
 * AveragePool, GlobalAveragePool, Flatten (axis 1), Reshape with a constant shape,
 * BatchNormalization (inference), Softmax (over the per-sample features), Add of two equal
 * activations, Identity, Dropout (inference), Constant; float32 initialisers in raw_data or
 * float_data; one float32 input [N, C, H, W] or [N, F] whose batch N is dynamic or 1.
 * Input normalisation (not part of ONNX): from the options, else from the metadata_props keys
 * efc.input_scale / efc.input_mean / efc.input_std (comma-separated floats), else none.
 *
 * Errors (detail via efc_err_detail, naming the node index, name, op and what is supported):
 *   EFC_EPROTO        malformed or truncated protobuf, undefined names, inconsistent shapes
 *   EFC_EUNSUPPORTED  an op, attribute, data type, opset, dynamic spatial dimension or
 *                     external-data tensor outside the supported set
 *   EFC_ENOTFOUND / EFC_EIO  (file variant) the file cannot be read
 *   EFC_ENOMEM
 * Ownership: *out is a new model (efc_model_free). Thread-safety: none shared; any thread.
 */
#ifndef EFC_ONNX_ONNX_IMPORT_H
#define EFC_ONNX_ONNX_IMPORT_H

#include <stddef.h>

#include "model/model.h"

#define EFC_ONNX_MAX_FILE_BYTES ((size_t)1 << 30) /* 1 GiB: larger models use external data */

struct efc_onnx_opts {
    const char *name;           /* model name; NULL: the graph's name, else "onnx" */
    struct efc_input_norm norm; /* n > 0: use it (overrides metadata); n == 0: metadata/none */
};

/* Import an ONNX ModelProto held in buf (len bytes; not kept). o may be NULL. */
enum efc_status efc_onnx_import(const void *buf, size_t len, const struct efc_onnx_opts *o,
                                struct efc_model **out);
/* Read and import a file. */
enum efc_status efc_onnx_import_file(const char *path, const struct efc_onnx_opts *o,
                                     struct efc_model **out);

/* Parse the normalisation lists (comma-separated floats; each list NULL, one value, or one per
 * channel; all lists of more than one value have the same length <= EFC_NORM_MAX_CH; missing
 * lists mean scale 1, mean 0, std 1). `what` names the source in messages. All NULL: n = 0.
 * EFC_EINVAL with a detail on a bad list. */
enum efc_status efc_onnx_parse_norm(const char *scale, const char *mean, const char *std,
                                    const char *what, struct efc_input_norm *out);

#endif
