/* policy.c — an `int8(...)` policy step as calibration and lowering options (calib.h). */
#include <string.h>

#include "calib/calib.h"
#include "common/efc_parse.h"

enum efc_status efc_calib_policy_step(const struct efc_policy_step *st,
                                      struct efc_calib_opts *co, struct efc_quant_opts *qo)
{
    efc_calib_opts_default(co);
    memset(qo, 0, sizeof(*qo));
    if (strcmp(st->method, "int8") != 0)
        return efc_errf(EFC_EINVAL, "policy step %s: not an int8 step", st->method);
    for (int32_t k = 0; k < st->n_params; k++) {
        const char *key = st->params[k].key, *val = st->params[k].value;
        if (!strcmp(key, "calib")) {
            if (efc_calib_method_parse(val, &co->method) != EFC_OK)
                return efc_errf(EFC_EINVAL, "int8: calib=%s (minmax, percentile, kl, mse)", val);
        } else if (!strcmp(key, "weights")) {
            if (!strcmp(val, "channel"))
                qo->per_tensor_weights = 0;
            else if (!strcmp(val, "tensor"))
                qo->per_tensor_weights = 1;
            else
                return efc_errf(EFC_EINVAL, "int8: weights=%s (channel, tensor)", val);
        } else if (!strcmp(key, "p")) {
            if (efc_parse_f64(val, 1e-6, 100.0, "p", &co->percentile) != EFC_OK)
                return efc_errf(EFC_EINVAL, "int8: p=%s (a percentile in (0, 100])", val);
        } else {
            return efc_errf(EFC_EINVAL, "int8: unknown parameter '%s' (calib, weights, p)", key);
        }
    }
    if (efc_policy_get(st, "p") && co->method != EFC_CALIB_PERCENTILE)
        return efc_errf(EFC_EINVAL, "int8: p= needs calib=percentile");
    return EFC_OK;
}
