/* filters.h — structured filter (channel) pruning (docs/policies.md "filters").
 *
 * For every ordinary convolution (groups == 1) a fraction `ratio` of its output channels is
 * removed physically: the channels with the smallest L1 norm of their filters, or (by=bn)
 * the smallest |gamma| of the BatchNorm that directly follows it (network-slimming style).
 * Everything that consumes those channels is rewritten so the result is a smaller dense model:
 * BatchNorm parameters, depthwise convolutions (their channels are tied: removed too, and
 * what follows them is rewritten in turn), the next convolution's input channels, and, after
 * Flatten or global pooling, the next Dense layer's input columns (H x W columns per channel).
 * ReLU and pools pass channels through. A convolution whose channels reach anything else (an
 * Add, a grouped convolution, the model output) is left as it is and logged.
 */
#ifndef EFC_COMPRESS_FILTERS_H
#define EFC_COMPRESS_FILTERS_H

#include <stdint.h>

#include "model/model.h"

enum efc_filters_by { EFC_FILTERS_BY_L1 = 0, EFC_FILTERS_BY_BN = 1 };

struct efc_filters_report {
    int32_t convs, pruned;                 /* ordinary convolutions, and those pruned */
    int64_t channels_before, channels_after; /* output channels of the pruned ones */
    uint64_t macs_before, macs_after;      /* per sample, the whole model */
};

/* Prune m in place (ratio in [0, 1); every pruned conv keeps at least one channel). Errors:
 * EFC_EINVAL (ratio, or a model that does not check), EFC_ENOMEM. */
enum efc_status efc_filters(struct efc_model *m, double ratio, enum efc_filters_by by,
                            struct efc_filters_report *rep);

#endif
