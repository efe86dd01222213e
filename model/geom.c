#include "model/geom.h"

void efc_node_conv_geom(const struct efc_model *m, const struct efc_node *n, int32_t batch,
                        struct efc_conv_geom *g)
{
    const struct efc_tensor *x = &m->tensors[n->inputs[0]];
    const struct efc_tensor *y = &m->tensors[n->output];
    g->n = batch;
    g->c = x->dims[0];
    g->h = x->dims[1];
    g->w = x->dims[2];
    g->oc = y->dims[0];
    g->oh = y->dims[1];
    g->ow = y->dims[2];
    g->kh = n->a.kernel[0];
    g->kw = n->a.kernel[1];
    g->sh = n->a.stride[0];
    g->sw = n->a.stride[1];
    g->pt = n->a.pad[0];
    g->pl = n->a.pad[1];
    g->groups = n->a.groups;
}

void efc_node_pool_geom(const struct efc_model *m, const struct efc_node *n, int32_t batch,
                        struct efc_pool_geom *g)
{
    const struct efc_tensor *x = &m->tensors[n->inputs[0]];
    const struct efc_tensor *y = &m->tensors[n->output];
    g->n = batch;
    g->c = x->dims[0];
    g->h = x->dims[1];
    g->w = x->dims[2];
    g->oh = y->dims[1];
    g->ow = y->dims[2];
    g->kh = n->a.kernel[0];
    g->kw = n->a.kernel[1];
    g->sh = n->a.stride[0];
    g->sw = n->a.stride[1];
    g->pt = n->a.pad[0];
    g->pl = n->a.pad[1];
    g->count_include_pad = n->a.count_include_pad;
    g->zp = 0;
}
