/* dataset.h — local data sets: IDX (.gz or plain; the MNIST / Fashion-MNIST layout) and NumPy
 * .npy (uint8 or float32, C order, little-endian), labels optional.
 *
 * A data set holds n samples of one per-sample shape (e.g. 1x28x28) as raw values (uint8 or
 * float32, exactly as stored) and optional uint8 labels. Models normalise raw values
 * themselves (model.h efc_model_normalize), so data sets never do.
 * Spec strings (efc_dataset_open):
 *   "fashion-mnist"                 the Debian package's files (or $EFC_FASHION_MNIST_DIR),
 *                                   split "train" or "test"
 *   "fashion-mnist:shard=i/n"       shard i of n (0-based, contiguous) of that split
 *   "IMAGES[,LABELS]"               paths to .idx/.idx.gz/.npy/.ubyte(.gz) files
 * All readers validate headers and sizes against the file size; truncated, wrong-magic or
 * oversized files give EFC_EPROTO with a detail naming the file and what is wrong; a missing
 * file gives EFC_ENOTFOUND naming the path (and, for fashion-mnist, the package to install).
 * Ownership: efc_dataset_free releases everything. Thread rule: read-only after load.
 */
#ifndef EFC_MODEL_DATASET_H
#define EFC_MODEL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"
#include "model/model.h"

#define EFC_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

struct efc_dataset {
    int32_t n;                     /* samples */
    int32_t ndim;                  /* per-sample dims (1..3) */
    int32_t dims[3];               /* e.g. {1, 28, 28}; IDX 2-D images get a leading 1 */
    enum efc_dtype dtype;          /* EFC_DTYPE_U8 or EFC_DTYPE_F32 */
    void *data;                    /* n * sample_size values, owned */
    uint8_t *labels;               /* n labels or NULL, owned */
    int32_t n_classes;             /* max label + 1, or 0 without labels */
    char source[256];              /* what it was loaded from, for messages */
};

/* Values per sample (product of dims). */
size_t efc_dataset_sample_size(const struct efc_dataset *d);
/* Copy samples [i0, i0 + count) as float32 raw values into out. */
void efc_dataset_get_f32(const struct efc_dataset *d, int32_t i0, int32_t count, float *out);
/* Copy the samples whose indices are idx[0..count) as float32 raw values into out. */
void efc_dataset_gather_f32(const struct efc_dataset *d, const int32_t *idx, int32_t count,
                            float *out);

/* Open a spec (see above). split: "train" or "test" (used by named sets only). */
enum efc_status efc_dataset_open(const char *spec, const char *split, struct efc_dataset **out);
void efc_dataset_free(struct efc_dataset *d);

/* A new data set with samples [i0, i0 + count) (copied). */
enum efc_status efc_dataset_slice(const struct efc_dataset *d, int32_t i0, int32_t count,
                                  struct efc_dataset **out);

/* Low-level readers. IDX: magic 0x0000 08|0D <ndim>, big-endian dims; returns the raw array. */
enum efc_status efc_idx_read(const char *path, enum efc_dtype *dtype, int32_t *ndim,
                             int32_t dims[4], void **data, size_t max_bytes);
enum efc_status efc_npy_read(const char *path, enum efc_dtype *dtype, int32_t *ndim,
                             int32_t dims[4], void **data, size_t max_bytes);
/* Write a float32 or uint8 .npy (atomic). */
enum efc_status efc_npy_write(const char *path, enum efc_dtype dtype, int32_t ndim,
                              const int32_t *dims, const void *data);

#endif
