/* sparse.c — sparse Dense / conv-as-GEMM with AVX-512 F/BW (sparse.h, docs/kernels-sparse.md).
 *
 * FP32, few rows (GEMV): SELL-16 over windows of 32 floats (sparse.h "SELL-W"). A step is 16
 * output rows (one zmm of accumulators) x one non-zero each: the 32 floats of x at the step's
 * window are two zmm loads, vpermt2ps with the 16 indices picks each lane's x, one FMA with the
 * 16 values. No gather: vgatherdps zmm measured 4.7 ns per 16 elements on this Zen 5, against
 * ~0.4 ns for load + vpermt2ps + FMA. Up to 4 samples share each step's index and value loads.
 * FP32, batches (n >= SPMM_MIN_N, and the column layout): CSR SpMM on x transposed (x[k][i]):
 * per non-zero, one broadcast of the value and one FMA per 16 samples on row col of x^T, two
 * non-zeros in flight (2 x NV accumulators) to cover the FMA latency. The row layout transposes
 * x into the caller's scratch tile by tile (EFC_SPMM_NB samples) and y back.
 * INT8: SELL-16 over windows of 16 bytes, 4 slots per lane (vpdpbusd's grouping): vpshufb looks
 * up 64 x bytes in the window broadcast to the four 128-bit lanes; without VNNI the bytes are
 * zero-extended in-lane (vpunpck{l,h}bw), the weights (stored in that unpack order) sign-extended
 * with vpmovsxbw, and vpmaddwd sums pairs exactly (|255 * 128 * 2| < 2^31); the two partial sums
 * per row are folded at the end. Requantisation as the dense VNNI qgemm (bit-exact with __ref).
 */
#include <immintrin.h>
#include <string.h>

#include "common/efc_status.h"
#include "kernels/sparse.h"
#include "kernels/x86/avx512/requant_avx512.h"

/* Samples from which the row layout transposes to the SpMM (below: SELL steps shared by up to
 * 4 samples). Measured on 1024 x 1024 (us per sample, SELL / SpMM): n = 8: 30 / 46 at density
 * 0.5, 9.5 / 9.4 at 0.1, 6.0 / 4.9 at 0.05 (8 samples fill half a zmm); n = 16: SpMM faster at
 * every density (29.9 / 22.6 at 0.5, 9.5 / 4.7 at 0.1). */
#define SPMM_MIN_N 12

static __mmask16 mask16(int32_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

static inline __m512 act16(__m512 v, enum efc_k_act act)
{
    /* maxps returns the second operand for NaN, so NaN -> 0 as in the reference. */
    if (act == EFC_K_ACT_RELU)
        v = _mm512_max_ps(v, _mm512_setzero_ps());
    else if (act == EFC_K_ACT_RELU6)
        v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0f));
    return v;
}

/* --------------------------------------------------------------------------- FP32 pack */

static enum efc_status spmm_f32_pack_avx512(int32_t out, int32_t in, const float *w,
                                            const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw)
{
    enum efc_status st = efc_sp_pack_begin_f32(out, in, w, fmt, pw);
    if (st == EFC_OK)
        st = efc_sp_pack_simd_f32(w, 16, 32, EFC_ISA_AVX512, pw);
    if (st != EFC_OK) {
        efc_spmm_w_fini(pw);
        memset(pw, 0, sizeof(*pw));
    }
    return st;
}

/* ------------------------------------------------------------------- FP32 SELL (few rows) */

/* Steps [s0, s1) of a panel for R samples (xr[r] = window base of sample r), U independent
 * accumulators per sample (FMA latency 4: R * U >= 4 keeps the FMA unit busy). One step:
 * vpmovzxbd of the 16 indices, two loads of the window, vpermt2ps, FMA. (Tried and measured
 * slower: 4 steps' indices per zmm, selected by vpsrld, 0.76 vs 0.70 ns per step.) */
static inline __attribute__((always_inline)) void
sell_f32_step(const int R, int32_t s, const int32_t *off, const uint8_t *idx, const float *val,
              const float *const *xr, __m512 *acc)
{
    const __m512i iv =
        _mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)(idx + 16 * (size_t)s)));
    const __m512 v = _mm512_load_ps(val + 16 * (size_t)s);
    const int32_t o = off[s];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const float *xw = xr[r] + o;
        const __m512 x = _mm512_permutex2var_ps(_mm512_loadu_ps(xw), iv, _mm512_loadu_ps(xw + 16));
        acc[r] = _mm512_fmadd_ps(x, v, acc[r]);
    }
}

static inline __attribute__((always_inline)) void sell_f32_body(const int R, const int U,
                                                                const struct efc_sp_simd *h,
                                                                int32_t s0, int32_t s1,
                                                                const float *const *xr, __m512 *res)
{
    __m512 acc[4][4];
    const int32_t *off = h->step_off;
    const uint8_t *idx = h->idx;
    const float *val = h->val;
#pragma GCC unroll 4
    for (int u = 0; u < U; u++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            acc[u][r] = _mm512_setzero_ps();
    int32_t s = s0;
    for (; s + U <= s1; s += U)
#pragma GCC unroll 4
        for (int u = 0; u < U; u++)
            sell_f32_step(R, s + u, off, idx, val, xr, acc[u]);
    for (; s < s1; s++)
        sell_f32_step(R, s, off, idx, val, xr, acc[0]);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        __m512 a = acc[0][r];
#pragma GCC unroll 4
        for (int u = 1; u < U; u++)
            a = _mm512_add_ps(a, acc[u][r]);
        res[r] = a;
    }
}

static void sell_f32_1(const struct efc_sp_simd *h, int32_t s0, int32_t s1, const float *const *xr,
                       __m512 *res)
{
    sell_f32_body(1, 4, h, s0, s1, xr, res);
}
static void sell_f32_2(const struct efc_sp_simd *h, int32_t s0, int32_t s1, const float *const *xr,
                       __m512 *res)
{
    sell_f32_body(2, 2, h, s0, s1, xr, res);
}
static void sell_f32_3(const struct efc_sp_simd *h, int32_t s0, int32_t s1, const float *const *xr,
                       __m512 *res)
{
    sell_f32_body(3, 2, h, s0, s1, xr, res);
}
static void sell_f32_4(const struct efc_sp_simd *h, int32_t s0, int32_t s1, const float *const *xr,
                       __m512 *res)
{
    sell_f32_body(4, 1, h, s0, s1, xr, res);
}
typedef void (*sell_f32_fn)(const struct efc_sp_simd *h, int32_t s0, int32_t s1,
                            const float *const *xr, __m512 *res);
static const sell_f32_fn g_sell_f32[4] = {sell_f32_1, sell_f32_2, sell_f32_3, sell_f32_4};

/* Rows [i0, i0 + r) of the row layout through the SELL steps, r <= 4. */
static void sell_f32_rows(const struct efc_spmm_w *w, int32_t r, const float *x, size_t ldx,
                          const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    const struct efc_sp_simd *h = w->packed;
    float pad[4][32]; /* in < 32: x copied to a zero-padded window */
    const float *xr[4];
    for (int32_t q = 0; q < r; q++) {
        xr[q] = x + (size_t)q * ldx;
        if (w->in < 32) {
            memset(pad[q], 0, sizeof(pad[q]));
            memcpy(pad[q], xr[q], (size_t)w->in * sizeof(float));
            xr[q] = pad[q];
        }
    }
    for (int32_t p = 0; p < h->n_panels; p++) {
        __m512 res[4];
        const int32_t j0 = p * 16;
        const __mmask16 m = mask16(w->out - j0);
        g_sell_f32[r - 1](h, h->panel_step[p], h->panel_step[p + 1], xr, res);
        const __m512 bv = b != NULL ? _mm512_maskz_loadu_ps(m, b + j0) : _mm512_setzero_ps();
        for (int32_t q = 0; q < r; q++) {
            __m512 v = b != NULL ? _mm512_add_ps(res[q], bv) : res[q];
            _mm512_mask_storeu_ps(y + (size_t)q * ldy + j0, m, act16(v, act));
        }
    }
}

/* ------------------------------------------------------------------ FP32 SpMM (batches) */

/* y[j][c] = act(b[j] + sum_e v_e x^T[col_e][c]) for every row j and c < nc, with row k of x^T
 * at xt + k * ldt and row j of y at y + j * ldy; NV = ceil(nc / 16) vectors per row. */
static inline __attribute__((always_inline)) void
spmm_f32_body(const int NV, const struct efc_spmm_w *w, const float *xt, size_t ldt, int32_t nc,
              const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    const struct efc_sp_simd *h = w->packed;
    const int32_t *rp = h->row_ptr, *col = h->col;
    const float *cv = h->cval;
    const __mmask16 mt = mask16(nc - 16 * (NV - 1));
    for (int32_t j = 0; j < w->out; j++) {
        __m512 a0[4], a1[4];
#pragma GCC unroll 4
        for (int q = 0; q < NV; q++) {
            a0[q] = _mm512_setzero_ps();
            a1[q] = _mm512_setzero_ps();
        }
        int32_t e = rp[j];
        const int32_t e1 = rp[j + 1];
        for (; e + 2 <= e1; e += 2) {
            const __m512 w0 = _mm512_set1_ps(cv[e]), w1 = _mm512_set1_ps(cv[e + 1]);
            const float *x0 = xt + (size_t)col[e] * ldt, *x1 = xt + (size_t)col[e + 1] * ldt;
#pragma GCC unroll 4
            for (int q = 0; q < NV - 1; q++) {
                a0[q] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16 * q), a0[q]);
                a1[q] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1 + 16 * q), a1[q]);
            }
            a0[NV - 1] =
                _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(mt, x0 + 16 * (NV - 1)), a0[NV - 1]);
            a1[NV - 1] =
                _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(mt, x1 + 16 * (NV - 1)), a1[NV - 1]);
        }
        if (e < e1) {
            const __m512 w0 = _mm512_set1_ps(cv[e]);
            const float *x0 = xt + (size_t)col[e] * ldt;
#pragma GCC unroll 4
            for (int q = 0; q < NV - 1; q++)
                a0[q] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16 * q), a0[q]);
            a0[NV - 1] =
                _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(mt, x0 + 16 * (NV - 1)), a0[NV - 1]);
        }
        float *yj = y + (size_t)j * ldy;
#pragma GCC unroll 4
        for (int q = 0; q < NV; q++) {
            __m512 v = _mm512_add_ps(a0[q], a1[q]);
            if (b != NULL)
                v = _mm512_add_ps(v, _mm512_set1_ps(b[j]));
            v = act16(v, act);
            if (q < NV - 1)
                _mm512_storeu_ps(yj + 16 * q, v);
            else
                _mm512_mask_storeu_ps(yj + 16 * q, mt, v);
        }
    }
}

static void spmm_f32_nv1(const struct efc_spmm_w *w, const float *xt, size_t ldt, int32_t nc,
                         const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    spmm_f32_body(1, w, xt, ldt, nc, b, act, y, ldy);
}
static void spmm_f32_nv2(const struct efc_spmm_w *w, const float *xt, size_t ldt, int32_t nc,
                         const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    spmm_f32_body(2, w, xt, ldt, nc, b, act, y, ldy);
}
static void spmm_f32_nv3(const struct efc_spmm_w *w, const float *xt, size_t ldt, int32_t nc,
                         const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    spmm_f32_body(3, w, xt, ldt, nc, b, act, y, ldy);
}
static void spmm_f32_nv4(const struct efc_spmm_w *w, const float *xt, size_t ldt, int32_t nc,
                         const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    spmm_f32_body(4, w, xt, ldt, nc, b, act, y, ldy);
}
typedef void (*spmm_f32_fn)(const struct efc_spmm_w *w, const float *xt, size_t ldt, int32_t nc,
                            const float *b, enum efc_k_act act, float *y, size_t ldy);
static const spmm_f32_fn g_spmm_f32[4] = {spmm_f32_nv1, spmm_f32_nv2, spmm_f32_nv3, spmm_f32_nv4};

/* Columns [0, n) of the column layout, 64 at a time. */
static void spmm_f32_cols(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                          const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    for (int32_t i0 = 0; i0 < n; i0 += 64) {
        const int32_t nc = n - i0 < 64 ? n - i0 : 64;
        g_spmm_f32[(nc + 15) / 16 - 1](w, x + i0, ldx, nc, b, act, y + i0, ldy);
    }
}

/* dst[c][r] = src[r][c] for r < rows, c < cols (strides in floats), 16 x 16 blocks through
 * registers (vunpck / vshuff), scalar edges. */
static void transpose_f32(int32_t rows, int32_t cols, const float *src, size_t lds, float *dst,
                          size_t ldd)
{
    int32_t r0 = 0;
    for (; r0 + 16 <= rows; r0 += 16) {
        int32_t c0 = 0;
        for (; c0 + 16 <= cols; c0 += 16) {
            __m512 t[16], u[16];
            for (int i = 0; i < 16; i++)
                t[i] = _mm512_loadu_ps(src + (size_t)(r0 + i) * lds + c0);
            for (int i = 0; i < 16; i += 2) {
                u[i] = _mm512_unpacklo_ps(t[i], t[i + 1]);
                u[i + 1] = _mm512_unpackhi_ps(t[i], t[i + 1]);
            }
            for (int i = 0; i < 16; i += 4) {
                t[i] = _mm512_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
                t[i + 1] = _mm512_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
                t[i + 2] = _mm512_shuffle_ps(u[i + 1], u[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
                t[i + 3] = _mm512_shuffle_ps(u[i + 1], u[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            /* t[4a + b] holds column 4l + b of rows 4a..4a+3 in 128-bit lane l. */
            for (int i = 0; i < 4; i++) {
                u[i] = _mm512_shuffle_f32x4(t[i], t[4 + i], 0x88);
                u[4 + i] = _mm512_shuffle_f32x4(t[i], t[4 + i], 0xdd);
                u[8 + i] = _mm512_shuffle_f32x4(t[8 + i], t[12 + i], 0x88);
                u[12 + i] = _mm512_shuffle_f32x4(t[8 + i], t[12 + i], 0xdd);
            }
            for (int i = 0; i < 4; i++) {
                t[i] = _mm512_shuffle_f32x4(u[i], u[8 + i], 0x88);
                t[8 + i] = _mm512_shuffle_f32x4(u[i], u[8 + i], 0xdd);
                t[4 + i] = _mm512_shuffle_f32x4(u[4 + i], u[12 + i], 0x88);
                t[12 + i] = _mm512_shuffle_f32x4(u[4 + i], u[12 + i], 0xdd);
            }
            for (int i = 0; i < 16; i++)
                _mm512_storeu_ps(dst + (size_t)(c0 + i) * ldd + r0, t[i]);
        }
        for (; c0 < cols; c0++)
            for (int i = 0; i < 16; i++)
                dst[(size_t)c0 * ldd + r0 + i] = src[(size_t)(r0 + i) * lds + c0];
    }
    for (; r0 < rows; r0++)
        for (int32_t c = 0; c < cols; c++)
            dst[(size_t)c * ldd + r0] = src[(size_t)r0 * lds + c];
}

static void spmm_f32_run_avx512(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                                const float *b, enum efc_k_act act, float *y, size_t ldy,
                                float *scratch)
{
    if (n >= SPMM_MIN_N && scratch != NULL) {
        const int32_t nb = n < EFC_SPMM_NB ? n : EFC_SPMM_NB;
        float *xt = scratch, *yt = scratch + (size_t)w->in * nb;
        for (int32_t i0 = 0; i0 < n; i0 += nb) {
            const int32_t nc = n - i0 < nb ? n - i0 : nb;
            transpose_f32(nc, w->in, x + (size_t)i0 * ldx, ldx, xt, (size_t)nb);
            g_spmm_f32[(nc + 15) / 16 - 1](w, xt, (size_t)nb, nc, b, act, yt, (size_t)nb);
            transpose_f32(w->out, nc, yt, (size_t)nb, y + (size_t)i0 * ldy, ldy);
        }
        return;
    }
    for (int32_t i = 0; i < n; i += 4) {
        const int32_t r = n - i < 4 ? n - i : 4;
        sell_f32_rows(w, r, x + (size_t)i * ldx, ldx, b, act, y + (size_t)i * ldy, ldy);
    }
}

static void spmm_f32_run_t_avx512(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                                  const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    spmm_f32_cols(w, n, x, ldx, b, act, y, ldy);
}

const struct efc_k_spmm_f32 efc_k_spmm_f32__avx512 = {spmm_f32_pack_avx512, spmm_f32_run_avx512,
                                                      spmm_f32_run_t_avx512};

/* ------------------------------------------------------------------------------- INT8 */

static enum efc_status spmm_u8s8_pack_avx512(int32_t out, int32_t in, const int8_t *w,
                                             const int32_t *bias, int32_t zp_x,
                                             const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw)
{
    enum efc_status st = efc_sp_pack_begin_s8(out, in, w, bias, zp_x, fmt, pw);
    if (st == EFC_OK)
        st = efc_sp_pack_simd_s8(w, 16, EFC_SP_ORDER_UNPACK, EFC_ISA_AVX512, pw);
    if (st != EFC_OK) {
        efc_spmm_w_fini(pw);
        memset(pw, 0, sizeof(*pw));
    }
    return st;
}

/* (requantisation: requant_avx512.h, shared with the dense VNNI qgemm) */

/* Steps [s0, s1) of a panel for R samples: int32 sums of the panel's 16 rows per sample. */
static inline __attribute__((always_inline)) void
sell_s8_body(const int R, const struct efc_sp_simd *h, int32_t s0, int32_t s1,
             const uint8_t *const *xr, __m512i *res)
{
    __m512i al[4], ah[4];
    const __m512i z = _mm512_setzero_si512();
    const int32_t *off = h->step_off;
    const uint8_t *idx = h->idx;
    const int8_t *val = h->val;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        al[r] = z;
        ah[r] = z;
    }
    for (int32_t s = s0; s < s1; s++) {
        const __m512i iv = _mm512_load_si512((const void *)(idx + 64 * (size_t)s));
        const __m512i wl =
            _mm512_cvtepi8_epi16(_mm256_load_si256((const __m256i *)(val + 64 * (size_t)s)));
        const __m512i wh =
            _mm512_cvtepi8_epi16(_mm256_load_si256((const __m256i *)(val + 64 * (size_t)s + 32)));
        const int32_t o = off[s];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512i xs =
                _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xr[r] + o)));
            const __m512i t = _mm512_shuffle_epi8(xs, iv);
            al[r] = _mm512_add_epi32(al[r], _mm512_madd_epi16(_mm512_unpacklo_epi8(t, z), wl));
            ah[r] = _mm512_add_epi32(ah[r], _mm512_madd_epi16(_mm512_unpackhi_epi8(t, z), wh));
        }
    }
    /* al dword 4L + m: row 4L + m / 2 (half of it), ah: row 4L + 2 + m / 2. */
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const __m512i sl = _mm512_add_epi32(al[r], _mm512_shuffle_epi32(al[r], _MM_PERM_CDAB));
        const __m512i sh = _mm512_add_epi32(ah[r], _mm512_shuffle_epi32(ah[r], _MM_PERM_CDAB));
        res[r] = _mm512_castps_si512(_mm512_shuffle_ps(
            _mm512_castsi512_ps(sl), _mm512_castsi512_ps(sh), _MM_SHUFFLE(2, 0, 2, 0)));
    }
}

static void sell_s8_1(const struct efc_sp_simd *h, int32_t s0, int32_t s1, const uint8_t *const *xr,
                      __m512i *res)
{
    sell_s8_body(1, h, s0, s1, xr, res);
}
static void sell_s8_2(const struct efc_sp_simd *h, int32_t s0, int32_t s1, const uint8_t *const *xr,
                      __m512i *res)
{
    sell_s8_body(2, h, s0, s1, xr, res);
}
static void sell_s8_3(const struct efc_sp_simd *h, int32_t s0, int32_t s1, const uint8_t *const *xr,
                      __m512i *res)
{
    sell_s8_body(3, h, s0, s1, xr, res);
}
static void sell_s8_4(const struct efc_sp_simd *h, int32_t s0, int32_t s1, const uint8_t *const *xr,
                      __m512i *res)
{
    sell_s8_body(4, h, s0, s1, xr, res);
}
typedef void (*sell_s8_fn)(const struct efc_sp_simd *h, int32_t s0, int32_t s1,
                           const uint8_t *const *xr, __m512i *res);
static const sell_s8_fn g_sell_s8[4] = {sell_s8_1, sell_s8_2, sell_s8_3, sell_s8_4};

static void spmm_u8s8_run_avx512(const struct efc_spmm_w *w, const struct efc_requant *rq,
                                 int32_t n, const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy)
{
    const struct efc_sp_simd *h = w->packed;
    const __m512i vzp = _mm512_set1_epi32(rq->zp_out);
    const __m512i vlo = _mm512_set1_epi32(rq->lo - rq->zp_out);
    const __m512i vhi = _mm512_set1_epi32(rq->hi - rq->zp_out);
    struct rq_vec pt;
    uint8_t pad[4][16]; /* in < 16: x copied to a zero-padded window */
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
        for (int32_t i = 0; i < n; i += 4) {
            const int32_t r = n - i < 4 ? n - i : 4;
            const uint8_t *xr[4];
            __m512i res[4];
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
                const __m512i v = requant16(_mm512_add_epi32(res[q], bias), &rv, vlo, vhi, vzp);
                _mm_mask_storeu_epi8(y + (size_t)(i + q) * ldy + j0, m, _mm512_cvtepi32_epi8(v));
            }
        }
    }
}

const struct efc_k_spmm_u8s8 efc_k_spmm_u8s8__avx512 = {spmm_u8s8_pack_avx512,
                                                        spmm_u8s8_run_avx512};
