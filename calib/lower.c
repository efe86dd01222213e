/* lower.c — from a calibration result to the INT8 model (calib.h efc_calib_lower). */
#include <string.h>

#include "calib/calib.h"
#include "common/efc_alloc.h"
#include "model/exec.h"

enum efc_status efc_calib_lower(const struct efc_model *m, const struct efc_calib_result *cr,
                                const struct efc_quant_opts *qo, struct efc_model **out,
                                struct efc_quant_report *rep)
{
    struct efc_exec_opts eo = {.max_batch = 1};
    struct efc_exec *e = NULL;
    float *scale = NULL;
    int32_t *zp = NULL;
    enum efc_status st;

    *out = NULL;
    if ((st = efc_exec_new(m, &eo, &e)))
        return st;
    const struct efc_model *cm = efc_exec_model(e);
    scale = efc_calloc((size_t)cm->n_tensors, sizeof(float));
    zp = efc_calloc((size_t)cm->n_tensors, sizeof(int32_t));
    if (!scale || !zp) {
        st = efc_errf(EFC_ENOMEM, "quantize: out of memory (%d tensors)", cm->n_tensors);
        goto out;
    }
    for (int32_t i = 0; i < cr->n_ranges; i++) {
        const struct efc_calib_range *r = &cr->ranges[i];
        if (r->tensor < 0 || r->tensor >= cm->n_tensors ||
            strcmp(cm->tensors[r->tensor].name, r->name)) {
            st = efc_errf(EFC_EINVAL, "quantize: calibration tensor %d '%s' does not match the "
                          "compiled graph (a result of another model?)", r->tensor, r->name);
            goto out;
        }
        scale[r->tensor] = r->scale;
        zp[r->tensor] = r->zero_point;
    }
    st = efc_quant_lower(cm, scale, zp, qo, out, rep);
out:
    efc_free(scale);
    efc_free(zp);
    efc_exec_free(e);
    return st;
}
