/* qgemm.c — INT8 GEMM u8 x s8 with AVX2 (widen to int16, vpmaddwd into int32), bit-exact with
 * __ref.
 *
 * Why not vpmaddubsw: it adds two u8 x s8 products into a saturating int16, and 2 * 255 * 127 =
 * 64770 > 32767, so it is wrong on ordinary data. Widening both sides to int16 and using
 * vpmaddwd is exact: a pair sum is at most 2 * 255 * 128 in magnitude, far inside int32.
 * Packed layout: weights pre-widened to int16, output channels in panels of 8 (one ymm of int32
 * accumulators), K in pairs (one vpmaddwd lane = 2 products), K padded to even and m to a
 * multiple of 8 with zeros. Panels are grouped 2 at a time (16 channels) and a group is stored
 * [pair][panel][8 channels][2], so the micro-kernel streams 64 contiguous bytes per k-pair.
 * Tile: 6 rows x 16 channels = 12 ymm accumulators + 2 weights + 1 broadcast of the 16 ymm.
 * x rows are widened to int16 pairs (vpmovzxbw) into a stack buffer, at most QG_KCP pairs at a
 * time, so each k-pair of a row is one 32-bit broadcast; odd k gets a zero high half, and
 * nothing past k is read. Longer K is processed in chunks with the int32 tile kept on the
 * stack between chunks. Cache blocking over panel groups as in the VNNI variant.
 * Requantisation: vpmuldq on even / odd lanes, + 2^(shift-1), then the 64-bit arithmetic shift
 * AVX2 lacks, emulated as s = (v < 0 ? -1 : 0); ((v ^ s) >>> shift) ^ s, exact for any shift.
 */
#include <immintrin.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_status.h"
#include "kernels/kernels.h"
#include "kernels/x86/avx2/requant_avx2.h"

#define QG_BLOCK_BYTES (512 * 1024)
#define QG_MAX_MR 12
#define QG_KCP 512 /* k-pairs per x chunk: 12 rows x 512 x 4 bytes = 24 KiB of stack */

static int32_t group_panels(int32_t m)
{
    return m > 8 ? 2 : 1;
}

static int32_t tile_rows(int32_t np)
{
    return np == 2 ? 6 : 12;
}

static enum efc_status qgemm_pack_avx2(int32_t m, int32_t k, const int8_t *w, const int32_t *bias,
                                       int32_t zp_x, struct efc_qgemm_w *out)
{
    memset(out, 0, sizeof(*out));
    if (m < 1 || k < 1 || zp_x < 0 || zp_x > 255)
        return efc_errf(EFC_EINVAL, "qgemm pack: m=%d k=%d zp_x=%d out of range", (int)m, (int)k,
                        (int)zp_x);
    const int32_t kp = (k + 1) / 2, np_all = (m + 7) / 8, g = group_panels(m);
    size_t bytes = (size_t)np_all * (size_t)kp * 32;
    int16_t *p = efc_malloc_aligned(64, bytes);
    int32_t *b = efc_malloc((size_t)m * sizeof(*b));
    if (p == NULL || b == NULL) {
        efc_free(p);
        efc_free(b);
        return efc_errf(EFC_ENOMEM, "qgemm pack: %zu bytes", bytes);
    }
    memset(p, 0, bytes);
    for (int32_t p0 = 0; p0 < np_all; p0 += g) {
        const int32_t gn = np_all - p0 < g ? np_all - p0 : g;
        int16_t *base = p + (size_t)p0 * kp * 16;
        for (int32_t pi = 0; pi < gn; pi++) {
            for (int32_t c = 0; c < 8; c++) {
                const int32_t j = (p0 + pi) * 8 + c;
                if (j >= m)
                    break;
                for (int32_t q = 0; q < k; q++)
                    base[((size_t)(q / 2) * gn + pi) * 16 + c * 2 + q % 2] = w[(size_t)j * k + q];
            }
        }
    }
    efc_k_qgemm_fold_bias(m, k, w, bias, zp_x, b);
    out->m = m;
    out->k = k;
    out->isa = EFC_ISA_AVX2;
    out->packed = p;
    out->packed_bytes = bytes;
    out->bias = b;
    return EFC_OK;
}

/* Widen bytes [2 * q0, min(k, 2 * (q0 + nq))) of mr rows into int16 pairs (zero padded to nq
 * pairs); row r of the result at xw + r * QG_KCP * 2. */
static void widen_rows(int32_t mr, const uint8_t *x, size_t ldx, int32_t k, int32_t q0, int32_t nq,
                       uint16_t *xw)
{
    const int32_t b0 = 2 * q0;
    const int32_t nb = k - b0 < 2 * nq ? k - b0 : 2 * nq;
    for (int32_t r = 0; r < mr; r++) {
        const uint8_t *src = x + (size_t)r * ldx + b0;
        uint16_t *dst = xw + (size_t)r * QG_KCP * 2;
        int32_t i = 0;
        for (; i + 16 <= nb; i += 16)
            _mm256_storeu_si256((__m256i *)(dst + i),
                                _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src + i))));
        for (; i < nb; i++)
            dst[i] = src[i];
        if (nb & 1)
            dst[nb] = 0;
    }
}

static inline __m256i bcast_u32(const uint16_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

static inline __attribute__((always_inline)) void ukr_body(const int MR, const int NP, int32_t nq,
                                                           int first, const uint16_t *xw,
                                                           const int16_t *wg, int32_t *tile)
{
    __m256i acc[QG_MAX_MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 2
        for (int p = 0; p < NP; p++)
            acc[r][p] = first ? _mm256_setzero_si256()
                              : _mm256_load_si256((const __m256i *)(tile + (r * 2 + p) * 8));
    for (int32_t q = 0; q < nq; q++) {
        __m256i wv[2];
#pragma GCC unroll 2
        for (int p = 0; p < NP; p++)
            wv[p] = _mm256_load_si256((const __m256i *)(wg + p * 16));
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m256i b = bcast_u32(xw + (size_t)r * QG_KCP * 2 + 2 * q);
#pragma GCC unroll 2
            for (int p = 0; p < NP; p++)
                acc[r][p] = _mm256_add_epi32(acc[r][p], _mm256_madd_epi16(b, wv[p]));
        }
        wg += NP * 16;
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 2
        for (int p = 0; p < NP; p++)
            _mm256_store_si256((__m256i *)(tile + (r * 2 + p) * 8), acc[r][p]);
}

typedef void (*ukr_fn)(int32_t nq, int first, const uint16_t *xw, const int16_t *wg, int32_t *tile);

#define UKR(MR_, NP_)                                                                              \
    static void ukr_##MR_##x##NP_(int32_t nq, int first, const uint16_t *xw, const int16_t *wg,    \
                                  int32_t *tile)                                                   \
    {                                                                                              \
        ukr_body(MR_, NP_, nq, first, xw, wg, tile);                                               \
    }
#define UKR_ROWS6(NP_) UKR(1, NP_) UKR(2, NP_) UKR(3, NP_) UKR(4, NP_) UKR(5, NP_) UKR(6, NP_)
#define UKR_ROWS12(NP_)                                                                            \
    UKR_ROWS6(NP_) UKR(7, NP_) UKR(8, NP_) UKR(9, NP_) UKR(10, NP_) UKR(11, NP_) UKR(12, NP_)
UKR_ROWS12(1)
UKR_ROWS6(2)

#define R6(NP_) ukr_1x##NP_, ukr_2x##NP_, ukr_3x##NP_, ukr_4x##NP_, ukr_5x##NP_, ukr_6x##NP_
#define R12(NP_)                                                                                   \
    R6(NP_), ukr_7x##NP_, ukr_8x##NP_, ukr_9x##NP_, ukr_10x##NP_, ukr_11x##NP_, ukr_12x##NP_
/* g_ukr[np - 1][mr - 1] */
static const ukr_fn g_ukr[2][QG_MAX_MR] = {{R12(1)}, {R6(2)}};

static void tile_store(const int32_t *tile, int32_t mr, int32_t np, int32_t j0,
                       const struct efc_qgemm_w *w, const struct efc_requant *rq, uint8_t *y,
                       size_t ldy)
{
    const __m256i vzp = _mm256_set1_epi32(rq->zp_out);
    const __m256i vlo = _mm256_set1_epi32(rq->lo - rq->zp_out);
    const __m256i vhi = _mm256_set1_epi32(rq->hi - rq->zp_out);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    struct rq_vec v;
    rq_vec_make(_mm256_set1_epi32(rq->mult[0]), _mm256_set1_epi32(rq->shift[0]), &v);
    for (int32_t p = 0; p < np; p++) {
        const int32_t j = j0 + p * 8;
        const int32_t left = w->m - j < 8 ? w->m - j : 8;
        const __m256i cm = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane);
        const __m256i bias = _mm256_maskload_epi32(w->bias + j, cm);
        if (!rq->per_tensor)
            rq_vec_make(_mm256_maskload_epi32(rq->mult + j, cm),
                        _mm256_maskload_epi32(rq->shift + j, cm), &v);
        for (int32_t r = 0; r < mr; r++) {
            __m256i acc = _mm256_add_epi32(
                _mm256_load_si256((const __m256i *)(tile + (r * 2 + p) * 8)), bias);
            __m128i o = narrow8(requant8(acc, &v, vlo, vhi, vzp));
            uint8_t *dst = y + (size_t)r * ldy + j;
            if (left == 8) {
                _mm_storel_epi64((__m128i *)dst, o);
            } else {
                uint8_t tmp[16];
                _mm_storeu_si128((__m128i *)tmp, o);
                memcpy(dst, tmp, (size_t)left);
            }
        }
    }
}

static void qgemm_run_avx2(const struct efc_qgemm_w *w, const struct efc_requant *rq, int32_t n,
                           const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy)
{
    _Alignas(32) int32_t tile[QG_MAX_MR * 16];
    _Alignas(32) uint16_t xw[QG_MAX_MR * QG_KCP * 2];
    const int32_t m = w->m, k = w->k, kp = (k + 1) / 2;
    const int32_t np_all = (m + 7) / 8, g = group_panels(m), mr_max = tile_rows(g);
    const int16_t *wp = w->packed;
    const size_t group_bytes = (size_t)kp * 32 * (size_t)g;
    int32_t groups_per_block = (int32_t)(QG_BLOCK_BYTES / group_bytes);
    if (groups_per_block < 1)
        groups_per_block = 1;
    const int32_t panels_per_block = groups_per_block * g;
    const int32_t nkc = (kp + QG_KCP - 1) / QG_KCP;

    for (int32_t pb = 0; pb < np_all; pb += panels_per_block) {
        const int32_t pe = np_all - pb < panels_per_block ? np_all : pb + panels_per_block;
        for (int32_t i0 = 0; i0 < n; i0 += mr_max) {
            const int32_t mr = n - i0 < mr_max ? n - i0 : mr_max;
            const uint8_t *xi = x + (size_t)i0 * ldx;
            if (nkc == 1)
                widen_rows(mr, xi, ldx, k, 0, kp, xw);
            for (int32_t p0 = pb; p0 < pe; p0 += g) {
                const int32_t gn = np_all - p0 < g ? np_all - p0 : g;
                const int16_t *wg = wp + (size_t)p0 * kp * 16;
                for (int32_t c = 0; c < nkc; c++) {
                    const int32_t q0 = c * QG_KCP;
                    const int32_t nq = kp - q0 < QG_KCP ? kp - q0 : QG_KCP;
                    if (nkc > 1)
                        widen_rows(mr, xi, ldx, k, q0, nq, xw);
                    g_ukr[gn - 1][mr - 1](nq, c == 0, xw, wg + (size_t)q0 * gn * 16, tile);
                }
                tile_store(tile, mr, gn, p0 * 8, w, rq, y + (size_t)i0 * ldy, ldy);
            }
        }
    }
}

const struct efc_k_qgemm efc_k_qgemm_u8s8__avx2 = {qgemm_pack_avx2, qgemm_run_avx2};
