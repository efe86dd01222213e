/* sparse.c — sparse INT8 Dense / conv-as-GEMM with AVX-512 VNNI (sparse.h,
 * docs/kernels-sparse.md), bit-exact with efc_k_spmm_u8s8__ref and the dense qgemm.
 *
 * SELL-16 over windows of 16 bytes of x, 4 slots per lane: one step covers 16 output rows
 * (the 16 dword lanes of a zmm) x up to 4 non-zeros of each inside one 16-column window. The
 * window is broadcast to the four 128-bit lanes (vbroadcasti32x4), vpshufb with the step's 64
 * byte indices fetches each slot's x byte, and one vpdpbusd multiplies them with the 64 int8
 * weights and adds each row's 4 products into its lane — 64 MACs for two shuffle-port ops,
 * with no gather (vpgatherdd zmm measured 4.6 ns per 16 lanes here, a step ~0.43 ns). Padding
 * slots have weight 0. A step streams 128 bytes (indices + weights), so a 10 %-dense 1024 x
 * 1024 layer (~1.24 steps per 16 x 16 block) reads ~0.65 MB against the dense kernel's 1 MB.
 * Up to 8 samples share each step's loads; with fewer than 4, independent accumulators per
 * sample hide vpdpbusd's latency. Requantisation as in the dense VNNI qgemm (kernels.h rule).
 */
#include <immintrin.h>
#include <string.h>

#include "common/efc_status.h"
#include "kernels/sparse.h"
#include "kernels/x86/avx512/requant_avx512.h"

#define MAX_R 8

static __mmask16 mask16(int32_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

static enum efc_status spmm_u8s8_pack_vnni(int32_t out, int32_t in, const int8_t *w,
                                           const int32_t *bias, int32_t zp_x,
                                           const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw)
{
    enum efc_status st = efc_sp_pack_begin_s8(out, in, w, bias, zp_x, fmt, pw);
    if (st == EFC_OK)
        st = efc_sp_pack_simd_s8(w, 16, EFC_SP_ORDER_NATURAL, EFC_ISA_AVX512VNNI, pw);
    if (st != EFC_OK) {
        efc_spmm_w_fini(pw);
        memset(pw, 0, sizeof(*pw));
    }
    return st;
}


/* Steps [s0, s1) of a panel for R samples, U accumulators per sample (R * U >= 4). */
static inline __attribute__((always_inline)) void sell_body(const int R, const int U,
                                                            const struct efc_sp_simd *h, int32_t s0,
                                                            int32_t s1, const uint8_t *const *xr,
                                                            __m512i *res)
{
    __m512i acc[MAX_R][4];
    const int32_t *off = h->step_off;
    const uint8_t *idx = h->idx;
    const int8_t *val = h->val;
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int u = 0; u < U; u++)
            acc[r][u] = _mm512_setzero_si512();
    int32_t s = s0;
    for (; s + U <= s1; s += U) {
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            const size_t at = 64 * (size_t)(s + u);
            const __m512i iv = _mm512_load_si512((const void *)(idx + at));
            const __m512i wv = _mm512_load_si512((const void *)(val + at));
            const int32_t o = off[s + u];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m512i xs =
                    _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xr[r] + o)));
                acc[r][u] = _mm512_dpbusd_epi32(acc[r][u], _mm512_shuffle_epi8(xs, iv), wv);
            }
        }
    }
    for (; s < s1; s++) {
        const size_t at = 64 * (size_t)s;
        const __m512i iv = _mm512_load_si512((const void *)(idx + at));
        const __m512i wv = _mm512_load_si512((const void *)(val + at));
        const int32_t o = off[s];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512i xs =
                _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xr[r] + o)));
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], _mm512_shuffle_epi8(xs, iv), wv);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        __m512i a = acc[r][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; u++)
            a = _mm512_add_epi32(a, acc[r][u]);
        res[r] = a;
    }
}

typedef void (*sell_fn)(const struct efc_sp_simd *h, int32_t s0, int32_t s1,
                        const uint8_t *const *xr, __m512i *res);
#define SELL(R_, U_)                                                                               \
    static void sell_##R_(const struct efc_sp_simd *h, int32_t s0, int32_t s1,                     \
                          const uint8_t *const *xr, __m512i *res)                                  \
    {                                                                                              \
        sell_body(R_, U_, h, s0, s1, xr, res);                                                     \
    }
SELL(1, 4)
SELL(2, 2)
SELL(3, 2)
SELL(4, 1)
SELL(5, 1)
SELL(6, 1)
SELL(7, 1)
SELL(8, 1)
static const sell_fn g_sell[MAX_R] = {sell_1, sell_2, sell_3, sell_4,
                                      sell_5, sell_6, sell_7, sell_8};

static void spmm_u8s8_run_vnni(const struct efc_spmm_w *w, const struct efc_requant *rq, int32_t n,
                               const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy)
{
    const struct efc_sp_simd *h = w->packed;
    const __m512i vzp = _mm512_set1_epi32(rq->zp_out);
    const __m512i vlo = _mm512_set1_epi32(rq->lo - rq->zp_out);
    const __m512i vhi = _mm512_set1_epi32(rq->hi - rq->zp_out);
    struct rq_vec pt;
    uint8_t pad[MAX_R][16]; /* in < 16: x copied to a zero-padded window */
    rq_vec_make(_mm512_set1_epi32(rq->mult[0]), _mm512_set1_epi32(rq->shift[0]), &pt);
    /* Panel outer: a panel's steps stay in L1 while every sample block runs over them. */
    for (int32_t p = 0; p < h->n_panels; p++) {
        const int32_t j0 = p * 16;
        const __mmask16 m = mask16(w->out - j0);
        const __m512i bias = _mm512_maskz_loadu_epi32(m, w->bias + j0);
        struct rq_vec rv = pt;
        if (!rq->per_tensor)
            rq_vec_make(_mm512_maskz_loadu_epi32(m, rq->mult + j0),
                        _mm512_maskz_loadu_epi32(m, rq->shift + j0), &rv);
        for (int32_t i = 0; i < n; i += MAX_R) {
            const int32_t r = n - i < MAX_R ? n - i : MAX_R;
            const uint8_t *xr[MAX_R];
            __m512i res[MAX_R];
            for (int32_t q = 0; q < r; q++) {
                xr[q] = x + (size_t)(i + q) * ldx;
                if (w->in < 16) {
                    memset(pad[q], 0, sizeof(pad[q]));
                    memcpy(pad[q], xr[q], (size_t)w->in);
                    xr[q] = pad[q];
                }
            }
            g_sell[r - 1](h, h->panel_step[p], h->panel_step[p + 1], xr, res);
            for (int32_t q = 0; q < r; q++) {
                const __m512i v = requant16(_mm512_add_epi32(res[q], bias), &rv, vlo, vhi, vzp);
                _mm_mask_storeu_epi8(y + (size_t)(i + q) * ldy + j0, m, _mm512_cvtepi32_epi8(v));
            }
        }
    }
}

const struct efc_k_spmm_u8s8 efc_k_spmm_u8s8__avx512vnni = {spmm_u8s8_pack_vnni,
                                                            spmm_u8s8_run_vnni};
