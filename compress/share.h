/* share.h — weight sharing (Deep Compression's "trained quantisation" without the retraining of
 * the centroids; docs/policies.md "share").
 *
 * For every f32 Dense / Conv2d weight tensor, the non-zero weights are clustered into 2^bits
 * values by one-dimensional k-means (centroids initialised evenly between the smallest and the
 * largest weight, Lloyd iterations until no assignment changes, at most 50) and each weight is
 * replaced by its centroid; zeros (pruned weights) stay zero. Followed by an INT8 step with
 * weights=tensor, every layer then uses at most 2^bits distinct INT8 codes, which the artifact's
 * entropy coder stores in about `bits` bits each.
 */
#ifndef EFC_COMPRESS_SHARE_H
#define EFC_COMPRESS_SHARE_H

#include <stdint.h>

#include "model/model.h"

/* Cluster m's weights in place (bits in [1, 8]). *layers: tensors clustered (may be NULL). */
enum efc_status efc_share(struct efc_model *m, int32_t bits, int32_t *layers);

#endif
