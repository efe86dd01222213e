/* requant.c — the INT8 requantisation rule (kernels.h), reference definition. */
#include "kernels/kernels.h"

#include <math.h>

#include "common/efc_alloc.h"

uint8_t efc_k_requant__ref(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo,
                           int32_t hi)
{
    int64_t v = ((int64_t)acc * mult + ((int64_t)1 << (shift - 1))) >> shift;
    v += zp;
    return (uint8_t)(v < lo ? lo : v > hi ? hi : v);
}

void efc_qgemm_w_fini(struct efc_qgemm_w *w)
{
    if (!w)
        return;
    efc_free(w->packed);
    efc_free(w->bias);
    w->packed = NULL;
    w->bias = NULL;
}

enum efc_status efc_k_requant_make(double r, int32_t *mult, int32_t *shift)
{
    int e;
    double f;
    int64_t q;

    if (!(r >= 0.0) || r >= 1.0)
        return efc_errf(EFC_EINVAL, "requant: multiplier %g outside [0, 1)", r);
    if (r < 0x1p-32) {
        *mult = 0;
        *shift = 31;
        return EFC_OK;
    }
    f = frexp(r, &e); /* r = f * 2^e, f in [0.5, 1), e in [-31, 0] */
    q = llround(f * 2147483648.0);
    if (q == 2147483648LL) { /* f rounded up to 1.0 */
        q /= 2;
        e++;
    }
    if (e > 0) /* r rounded up to 1: the largest representable value below it */
        q = 2147483647LL, e = 0;
    *mult = (int32_t)q;
    *shift = 31 - e;
    return EFC_OK;
}

void efc_k_qgemm_fold_bias(int32_t m, int32_t k, const int8_t *w, const int32_t *bias,
                           int32_t zp_x, int32_t *out)
{
    for (int32_t j = 0; j < m; j++) {
        int64_t s = 0;
        for (int32_t q = 0; q < k; q++)
            s += w[(size_t)j * k + q];
        out[j] = (int32_t)((bias != NULL ? (int64_t)bias[j] : 0) - (int64_t)zp_x * s);
    }
}
