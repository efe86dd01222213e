/* qgemm.c — INT8 GEMM u8 x s8 -> int32 -> requantised u8, reference definition (kernels.h).
 *
 * Layout: the packed weights are w[m][k] row-major int8, unchanged. Accumulation is int32
 * with two's-complement wrap-around (done in uint32, so an overflow, impossible for
 * k < 66 000 with |w| <= 127, is still defined behaviour and equal to the SIMD variants' wrap).
 * The folded bias is bias[m] - zp_x * sum_k w[m][k], computed in int64 and truncated to
 * int32 the same way in every variant's pack.
 */
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_status.h"
#include "kernels/kernels.h"

static enum efc_status qgemm_pack_ref(int32_t m, int32_t k, const int8_t *w, const int32_t *bias,
                                      int32_t zp_x, struct efc_qgemm_w *out)
{
    memset(out, 0, sizeof(*out));
    if (m < 1 || k < 1 || zp_x < 0 || zp_x > 255)
        return efc_errf(EFC_EINVAL, "qgemm pack: m=%d k=%d zp_x=%d out of range", (int)m, (int)k,
                        (int)zp_x);
    size_t bytes = (size_t)m * (size_t)k;
    int8_t *p = efc_malloc_aligned(64, bytes);
    int32_t *b = efc_malloc((size_t)m * sizeof(*b));
    if (p == NULL || b == NULL) {
        efc_free(p);
        efc_free(b);
        return efc_errf(EFC_ENOMEM, "qgemm pack: %zu bytes", bytes);
    }
    memcpy(p, w, bytes);
    efc_k_qgemm_fold_bias(m, k, w, bias, zp_x, b);
    out->m = m;
    out->k = k;
    out->isa = EFC_ISA_REF;
    out->packed = p;
    out->packed_bytes = bytes;
    out->bias = b;
    return EFC_OK;
}

static void qgemm_run_ref(const struct efc_qgemm_w *w, const struct efc_requant *rq, int32_t n,
                          const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy)
{
    const int8_t *wp = w->packed;
    const int32_t m = w->m, k = w->k;
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *xi = x + (size_t)i * ldx;
        uint8_t *yi = y + (size_t)i * ldy;
        for (int32_t j = 0; j < m; j++) {
            const int8_t *wj = wp + (size_t)j * k;
            uint32_t acc = (uint32_t)w->bias[j];
            for (int32_t q = 0; q < k; q++)
                acc += (uint32_t)((int32_t)xi[q] * (int32_t)wj[q]);
            int32_t c = rq->per_tensor ? 0 : j;
            yi[j] = efc_k_requant__ref((int32_t)acc, rq->mult[c], rq->shift[c], rq->zp_out, rq->lo,
                                       rq->hi);
        }
    }
}

const struct efc_k_qgemm efc_k_qgemm_u8s8__ref = {qgemm_pack_ref, qgemm_run_ref};
