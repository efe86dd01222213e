/* geom.h — kernel geometry of a checked model's conv and pool nodes (shared by the executor
 * and the trainer). Valid after efc_model_check(); no allocation, thread-safe. */
#ifndef EFC_MODEL_GEOM_H
#define EFC_MODEL_GEOM_H

#include <stdint.h>

#include "kernels/kernels.h"
#include "model/model.h"

void efc_node_conv_geom(const struct efc_model *m, const struct efc_node *n, int32_t batch,
                        struct efc_conv_geom *g);
void efc_node_pool_geom(const struct efc_model *m, const struct efc_node *n, int32_t batch,
                        struct efc_pool_geom *g);

#endif
