/* sparse.c — sparse Dense / conv-as-GEMM with AVX2 + FMA (sparse.h, docs/kernels-sparse.md).
 *
 * The AVX-512 design on 8 lanes:
 * FP32, few rows: SELL-8 over windows of 8 floats: one ymm load of the window, vpermps with the
 * step's 8 indices (vpmovzxbd), one FMA with the 8 values. (vgatherdps ymm measured 2.9 ns per
 * 8 elements on this Zen 5: slower than the scalar loop.)
 * FP32, batches and the column layout: CSR SpMM on x^T, 8 samples per ymm, up to 32 per pass.
 * INT8: SELL-8 over windows of 16 bytes, 4 slots per lane: the window broadcast to both 128-bit
 * lanes, vpshufb, zero-extension in-lane (vpunpck{l,h}bw), weights sign-extended (vpmovsxbw,
 * stored in that order), vpmaddwd (exact: no vpmaddubsw, whose int16 saturation 2 * 255 * 127
 * would reach), vphaddd folds the two partial sums per row. Requantisation as the dense AVX2
 * qgemm (the 64-bit arithmetic shift emulated), bit-exact with __ref.
 */
#include <immintrin.h>
#include <string.h>

#include "common/efc_status.h"
#include "kernels/sparse.h"
#include "kernels/x86/avx2/requant_avx2.h"

/* Samples from which the row layout uses the SpMM. Measured on 1024 x 1024 at n = 8 (us per
 * sample, SELL / SpMM): 36.5 / 48.6 at density 0.5, 13.5 / 8.1 at 0.1, 7.3 / 3.6 at 0.05. */
#define SPMM_MIN_N 8
#define NB2 32 /* samples per SpMM pass: 4 ymm */

static inline __m256i lane_mask(int32_t left)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256 act8(__m256 v, enum efc_k_act act)
{
    /* maxps returns the second operand for NaN, so NaN -> 0 as in the reference. */
    if (act == EFC_K_ACT_RELU)
        v = _mm256_max_ps(v, _mm256_setzero_ps());
    else if (act == EFC_K_ACT_RELU6)
        v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
    return v;
}

/* --------------------------------------------------------------------------- FP32 */

static enum efc_status spmm_f32_pack_avx2(int32_t out, int32_t in, const float *w,
                                          const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw)
{
    enum efc_status st = efc_sp_pack_begin_f32(out, in, w, fmt, pw);
    if (st == EFC_OK)
        st = efc_sp_pack_simd_f32(w, 8, 8, EFC_ISA_AVX2, pw);
    if (st != EFC_OK) {
        efc_spmm_w_fini(pw);
        memset(pw, 0, sizeof(*pw));
    }
    return st;
}

/* Steps [s0, s1) of a panel for R samples, U accumulators per sample (as the AVX-512 one). */
static inline __attribute__((always_inline)) void
sell_f32_step(const int R, int32_t s, const int32_t *off, const uint8_t *idx, const float *val,
              const float *const *xr, __m256 *acc)
{
    const __m256i iv =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(idx + 8 * (size_t)s)));
    const __m256 v = _mm256_load_ps(val + 8 * (size_t)s);
    const int32_t o = off[s];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        acc[r] =
            _mm256_fmadd_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xr[r] + o), iv), v, acc[r]);
}

static inline __attribute__((always_inline)) void sell_f32_body(const int R, const int U,
                                                                const struct efc_sp_simd *h,
                                                                int32_t s0, int32_t s1,
                                                                const float *const *xr, __m256 *res)
{
    __m256 acc[4][4];
    const int32_t *off = h->step_off;
    const uint8_t *idx = h->idx;
    const float *val = h->val;
#pragma GCC unroll 4
    for (int u = 0; u < U; u++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            acc[u][r] = _mm256_setzero_ps();
    int32_t s = s0;
    for (; s + U <= s1; s += U)
#pragma GCC unroll 4
        for (int u = 0; u < U; u++)
            sell_f32_step(R, s + u, off, idx, val, xr, acc[u]);
    for (; s < s1; s++)
        sell_f32_step(R, s, off, idx, val, xr, acc[0]);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        __m256 a = acc[0][r];
#pragma GCC unroll 4
        for (int u = 1; u < U; u++)
            a = _mm256_add_ps(a, acc[u][r]);
        res[r] = a;
    }
}

typedef void (*sell_f32_fn)(const struct efc_sp_simd *h, int32_t s0, int32_t s1,
                            const float *const *xr, __m256 *res);
#define SELL_F32(R_, U_)                                                                           \
    static void sell_f32_##R_(const struct efc_sp_simd *h, int32_t s0, int32_t s1,                 \
                              const float *const *xr, __m256 *res)                                 \
    {                                                                                              \
        sell_f32_body(R_, U_, h, s0, s1, xr, res);                                                 \
    }
SELL_F32(1, 4)
SELL_F32(2, 2)
SELL_F32(3, 2)
SELL_F32(4, 1)
static const sell_f32_fn g_sell_f32[4] = {sell_f32_1, sell_f32_2, sell_f32_3, sell_f32_4};

static void sell_f32_rows(const struct efc_spmm_w *w, int32_t r, const float *x, size_t ldx,
                          const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    const struct efc_sp_simd *h = w->packed;
    float pad[4][8]; /* in < 8: x copied to a zero-padded window */
    const float *xr[4];
    for (int32_t q = 0; q < r; q++) {
        xr[q] = x + (size_t)q * ldx;
        if (w->in < 8) {
            memset(pad[q], 0, sizeof(pad[q]));
            memcpy(pad[q], xr[q], (size_t)w->in * sizeof(float));
            xr[q] = pad[q];
        }
    }
    for (int32_t p = 0; p < h->n_panels; p++) {
        __m256 res[4];
        const int32_t j0 = p * 8, left = w->out - j0;
        const __m256i m = lane_mask(left);
        g_sell_f32[r - 1](h, h->panel_step[p], h->panel_step[p + 1], xr, res);
        const __m256 bv = b != NULL ? _mm256_maskload_ps(b + j0, m) : _mm256_setzero_ps();
        for (int32_t q = 0; q < r; q++) {
            __m256 v = act8(b != NULL ? _mm256_add_ps(res[q], bv) : res[q], act);
            if (left >= 8)
                _mm256_storeu_ps(y + (size_t)q * ldy + j0, v);
            else
                _mm256_maskstore_ps(y + (size_t)q * ldy + j0, m, v);
        }
    }
}

/* y[j][c] = act(b[j] + sum_e v_e x^T[col_e][c]) for c < nc, NV = ceil(nc / 8) ymm per row;
 * two non-zeros in flight. */
static inline __attribute__((always_inline)) void
spmm_f32_body(const int NV, const struct efc_spmm_w *w, const float *xt, size_t ldt, int32_t nc,
              const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    const struct efc_sp_simd *h = w->packed;
    const int32_t *rp = h->row_ptr, *col = h->col;
    const float *cv = h->cval;
    const int32_t tail = nc - 8 * (NV - 1);
    const __m256i mt = lane_mask(tail);
    for (int32_t j = 0; j < w->out; j++) {
        __m256 a0[4], a1[4];
#pragma GCC unroll 4
        for (int q = 0; q < NV; q++) {
            a0[q] = _mm256_setzero_ps();
            a1[q] = _mm256_setzero_ps();
        }
        int32_t e = rp[j];
        const int32_t e1 = rp[j + 1];
        for (; e + 2 <= e1; e += 2) {
            const __m256 w0 = _mm256_broadcast_ss(cv + e), w1 = _mm256_broadcast_ss(cv + e + 1);
            const float *x0 = xt + (size_t)col[e] * ldt, *x1 = xt + (size_t)col[e + 1] * ldt;
#pragma GCC unroll 4
            for (int q = 0; q < NV - 1; q++) {
                a0[q] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 8 * q), a0[q]);
                a1[q] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1 + 8 * q), a1[q]);
            }
            a0[NV - 1] = _mm256_fmadd_ps(w0, _mm256_maskload_ps(x0 + 8 * (NV - 1), mt), a0[NV - 1]);
            a1[NV - 1] = _mm256_fmadd_ps(w1, _mm256_maskload_ps(x1 + 8 * (NV - 1), mt), a1[NV - 1]);
        }
        if (e < e1) {
            const __m256 w0 = _mm256_broadcast_ss(cv + e);
            const float *x0 = xt + (size_t)col[e] * ldt;
#pragma GCC unroll 4
            for (int q = 0; q < NV - 1; q++)
                a0[q] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 8 * q), a0[q]);
            a0[NV - 1] = _mm256_fmadd_ps(w0, _mm256_maskload_ps(x0 + 8 * (NV - 1), mt), a0[NV - 1]);
        }
        float *yj = y + (size_t)j * ldy;
#pragma GCC unroll 4
        for (int q = 0; q < NV; q++) {
            __m256 v = _mm256_add_ps(a0[q], a1[q]);
            if (b != NULL)
                v = _mm256_add_ps(v, _mm256_broadcast_ss(b + j));
            v = act8(v, act);
            if (q < NV - 1 || tail == 8)
                _mm256_storeu_ps(yj + 8 * q, v);
            else
                _mm256_maskstore_ps(yj + 8 * q, mt, v);
        }
    }
}

typedef void (*spmm_f32_fn)(const struct efc_spmm_w *w, const float *xt, size_t ldt, int32_t nc,
                            const float *b, enum efc_k_act act, float *y, size_t ldy);
#define SPMM_F32(NV_)                                                                              \
    static void spmm_f32_nv##NV_(const struct efc_spmm_w *w, const float *xt, size_t ldt,          \
                                 int32_t nc, const float *b, enum efc_k_act act, float *y,         \
                                 size_t ldy)                                                       \
    {                                                                                              \
        spmm_f32_body(NV_, w, xt, ldt, nc, b, act, y, ldy);                                        \
    }
SPMM_F32(1)
SPMM_F32(2)
SPMM_F32(3)
SPMM_F32(4)
static const spmm_f32_fn g_spmm_f32[4] = {spmm_f32_nv1, spmm_f32_nv2, spmm_f32_nv3, spmm_f32_nv4};

static void spmm_f32_cols(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                          const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    for (int32_t i0 = 0; i0 < n; i0 += NB2) {
        const int32_t nc = n - i0 < NB2 ? n - i0 : NB2;
        g_spmm_f32[(nc + 7) / 8 - 1](w, x + i0, ldx, nc, b, act, y + i0, ldy);
    }
}

/* dst[c][r] = src[r][c], 8 x 8 blocks through registers, scalar edges. */
static void transpose_f32(int32_t rows, int32_t cols, const float *src, size_t lds, float *dst,
                          size_t ldd)
{
    int32_t r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        int32_t c0 = 0;
        for (; c0 + 8 <= cols; c0 += 8) {
            __m256 t[8], u[8];
            for (int i = 0; i < 8; i++)
                t[i] = _mm256_loadu_ps(src + (size_t)(r0 + i) * lds + c0);
            for (int i = 0; i < 8; i += 2) {
                u[i] = _mm256_unpacklo_ps(t[i], t[i + 1]);
                u[i + 1] = _mm256_unpackhi_ps(t[i], t[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                t[i] = _mm256_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
                t[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
                t[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
                t[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            /* t[4a + b]: column 4l + b of rows 4a..4a+3 in 128-bit lane l. */
            for (int i = 0; i < 4; i++) {
                _mm256_storeu_ps(dst + (size_t)(c0 + i) * ldd + r0,
                                 _mm256_permute2f128_ps(t[i], t[4 + i], 0x20));
                _mm256_storeu_ps(dst + (size_t)(c0 + 4 + i) * ldd + r0,
                                 _mm256_permute2f128_ps(t[i], t[4 + i], 0x31));
            }
        }
        for (; c0 < cols; c0++)
            for (int i = 0; i < 8; i++)
                dst[(size_t)c0 * ldd + r0 + i] = src[(size_t)(r0 + i) * lds + c0];
    }
    for (; r0 < rows; r0++)
        for (int32_t c = 0; c < cols; c++)
            dst[(size_t)c * ldd + r0] = src[(size_t)r0 * lds + c];
}

static void spmm_f32_run_avx2(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                              const float *b, enum efc_k_act act, float *y, size_t ldy,
                              float *scratch)
{
    if (n >= SPMM_MIN_N && scratch != NULL) {
        const int32_t nb = n < EFC_SPMM_NB ? n : EFC_SPMM_NB;
        float *xt = scratch, *yt = scratch + (size_t)w->in * nb;
        for (int32_t i0 = 0; i0 < n; i0 += nb) {
            const int32_t nc = n - i0 < nb ? n - i0 : nb;
            transpose_f32(nc, w->in, x + (size_t)i0 * ldx, ldx, xt, (size_t)nb);
            spmm_f32_cols(w, nc, xt, (size_t)nb, b, act, yt, (size_t)nb);
            transpose_f32(w->out, nc, yt, (size_t)nb, y + (size_t)i0 * ldy, ldy);
        }
        return;
    }
    for (int32_t i = 0; i < n; i += 4) {
        const int32_t r = n - i < 4 ? n - i : 4;
        sell_f32_rows(w, r, x + (size_t)i * ldx, ldx, b, act, y + (size_t)i * ldy, ldy);
    }
}

static void spmm_f32_run_t_avx2(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                                const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    spmm_f32_cols(w, n, x, ldx, b, act, y, ldy);
}

const struct efc_k_spmm_f32 efc_k_spmm_f32__avx2 = {spmm_f32_pack_avx2, spmm_f32_run_avx2,
                                                    spmm_f32_run_t_avx2};

/* ------------------------------------------------------------------------------- INT8 */

static enum efc_status spmm_u8s8_pack_avx2(int32_t out, int32_t in, const int8_t *w,
                                           const int32_t *bias, int32_t zp_x,
                                           const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw)
{
    enum efc_status st = efc_sp_pack_begin_s8(out, in, w, bias, zp_x, fmt, pw);
    if (st == EFC_OK)
        st = efc_sp_pack_simd_s8(w, 8, EFC_SP_ORDER_UNPACK, EFC_ISA_AVX2, pw);
    if (st != EFC_OK) {
        efc_spmm_w_fini(pw);
        memset(pw, 0, sizeof(*pw));
    }
    return st;
}

/* Steps [s0, s1) of a panel for R samples: int32 sums of the panel's 8 rows per sample. */
static inline __attribute__((always_inline)) void
sell_s8_body(const int R, const struct efc_sp_simd *h, int32_t s0, int32_t s1,
             const uint8_t *const *xr, __m256i *res)
{
    __m256i al[4], ah[4];
    const __m256i z = _mm256_setzero_si256();
    const int32_t *off = h->step_off;
    const uint8_t *idx = h->idx;
    const int8_t *val = h->val;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        al[r] = z;
        ah[r] = z;
    }
    for (int32_t s = s0; s < s1; s++) {
        const __m256i iv = _mm256_load_si256((const __m256i *)(idx + 32 * (size_t)s));
        const __m256i wl =
            _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(val + 32 * (size_t)s)));
        const __m256i wh =
            _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(val + 32 * (size_t)s + 16)));
        const int32_t o = off[s];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256i xs =
                _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(xr[r] + o)));
            const __m256i t = _mm256_shuffle_epi8(xs, iv);
            al[r] = _mm256_add_epi32(al[r], _mm256_madd_epi16(_mm256_unpacklo_epi8(t, z), wl));
            ah[r] = _mm256_add_epi32(ah[r], _mm256_madd_epi16(_mm256_unpackhi_epi8(t, z), wh));
        }
    }
    /* al dword 4L + m: half of row 4L + m / 2, ah: of row 4L + 2 + m / 2; vphaddd (in-lane)
     * gives rows 4L .. 4L + 3 in lane L. */
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        res[r] = _mm256_hadd_epi32(al[r], ah[r]);
}

typedef void (*sell_s8_fn)(const struct efc_sp_simd *h, int32_t s0, int32_t s1,
                           const uint8_t *const *xr, __m256i *res);
#define SELL_S8(R_)                                                                                \
    static void sell_s8_##R_(const struct efc_sp_simd *h, int32_t s0, int32_t s1,                  \
                             const uint8_t *const *xr, __m256i *res)                               \
    {                                                                                              \
        sell_s8_body(R_, h, s0, s1, xr, res);                                                      \
    }
SELL_S8(1)
SELL_S8(2)
SELL_S8(3)
SELL_S8(4)
static const sell_s8_fn g_sell_s8[4] = {sell_s8_1, sell_s8_2, sell_s8_3, sell_s8_4};

static void spmm_u8s8_run_avx2(const struct efc_spmm_w *w, const struct efc_requant *rq, int32_t n,
                               const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy)
{
    const struct efc_sp_simd *h = w->packed;
    const __m256i vzp = _mm256_set1_epi32(rq->zp_out);
    const __m256i vlo = _mm256_set1_epi32(rq->lo - rq->zp_out);
    const __m256i vhi = _mm256_set1_epi32(rq->hi - rq->zp_out);
    struct rq_vec pt;
    uint8_t pad[4][16]; /* in < 16: x copied to a zero-padded window */
    rq_vec_make(_mm256_set1_epi32(rq->mult[0]), _mm256_set1_epi32(rq->shift[0]), &pt);
    for (int32_t p = 0; p < h->n_panels; p++) {
        const int32_t j0 = p * 8, left = w->out - j0;
        const __m256i m = lane_mask(left);
        const __m256i bias = _mm256_maskload_epi32(w->bias + j0, m);
        struct rq_vec rv = pt;
        if (!rq->per_tensor)
            rq_vec_make(_mm256_maskload_epi32(rq->mult + j0, m),
                        _mm256_maskload_epi32(rq->shift + j0, m), &rv);
        for (int32_t i = 0; i < n; i += 4) {
            const int32_t r = n - i < 4 ? n - i : 4;
            const uint8_t *xr[4];
            __m256i res[4];
            for (int32_t q = 0; q < r; q++) {
                xr[q] = x + (size_t)(i + q) * ldx;
                if (w->in < 16) {
                    memset(pad[q], 0, sizeof(pad[q]));
                    memcpy(pad[q], xr[q], (size_t)w->in);
                    xr[q] = pad[q];
                }
            }
            g_sell_s8[r - 1](h, h->panel_step[p], h->panel_step[p + 1], xr, res);
            for (int32_t q = 0; q < r; q++) {
                const __m128i o =
                    narrow8(requant8(_mm256_add_epi32(res[q], bias), &rv, vlo, vhi, vzp));
                uint8_t *dst = y + (size_t)(i + q) * ldy + j0;
                if (left >= 8) {
                    _mm_storel_epi64((__m128i *)dst, o);
                } else {
                    uint8_t tmp[16];
                    _mm_storeu_si128((__m128i *)tmp, o);
                    memcpy(dst, tmp, (size_t)left);
                }
            }
        }
    }
}

const struct efc_k_spmm_u8s8 efc_k_spmm_u8s8__avx2 = {spmm_u8s8_pack_avx2, spmm_u8s8_run_avx2};
