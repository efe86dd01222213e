/* qgemm.c — INT8 GEMM u8 x s8 with AVX-512 VNNI (vpdpbusd), bit-exact with __ref.
 *
 * Packed layout: output channels in panels of 16 (one zmm of int32 accumulators), K in groups
 * of 4 bytes (one vpdpbusd lane = 4 u8 x s8 products), K padded to a multiple of 4 and m to a
 * multiple of 16 with zero weights. Panels are grouped NP at a time (NP = 4, or fewer for small
 * m) and a group is stored as [q][panel][16 channels][4 bytes], so the micro-kernel streams one
 * contiguous run of 64 * NP bytes per k-group. The micro-kernel holds MR x NP zmm accumulators
 * (24 or fewer of the 32 registers), loads NP weight vectors and broadcasts 4 x bytes per row
 * (vpbroadcastd) per k-group. The x tail (k % 4 bytes) is read with a byte-masked load, so no
 * byte past k is ever read; the padded weight bytes are zero, so nothing padded contributes.
 * Cache blocking: panel groups are processed in blocks of at most QG_BLOCK_BYTES of weights
 * (kept in L2 while every row tile of x runs over them). The accumulators start at the folded
 * bias and are requantised straight from registers: vpmuldq on even and odd lanes,
 * + 2^(shift-1), vpsravq, clamp in the int32 domain around the zero point, vpmovdb.
 * Small k (<= 12) with 17..32 channels has its own loop (see "Small k" below): weights and
 * requantisation constants stay in registers over all rows, a cheaper exact rounded shift
 * when every shift is >= 33, and a shared pack/clamp narrowing of row pairs.
 */
#include <immintrin.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_status.h"
#include "kernels/kernels.h"
#include "kernels/x86/avx512/requant_avx512.h"

/* Weights kept hot per block: half of Zen 5's / Skylake-SP's 1 MiB L2. */
#define QG_BLOCK_BYTES (512 * 1024)
#define QG_MAX_MR 16

/* Panels per group: 4 for m > 48 (6 x 4 tile), else all of them. */
static int32_t group_panels(int32_t m)
{
    int32_t np = (m + 15) / 16;
    return np >= 4 ? 4 : np;
}

/* Rows per tile for a group of np panels: keeps MR * NP <= 24 accumulators. */
static int32_t tile_rows(int32_t np)
{
    static const int32_t mr[5] = {0, 16, 12, 8, 6};
    return mr[np];
}

static enum efc_status qgemm_pack_vnni(int32_t m, int32_t k, const int8_t *w, const int32_t *bias,
                                       int32_t zp_x, struct efc_qgemm_w *out)
{
    memset(out, 0, sizeof(*out));
    if (m < 1 || k < 1 || zp_x < 0 || zp_x > 255)
        return efc_errf(EFC_EINVAL, "qgemm pack: m=%d k=%d zp_x=%d out of range", (int)m, (int)k,
                        (int)zp_x);
    const int32_t kq = (k + 3) / 4, np_all = (m + 15) / 16, g = group_panels(m);
    size_t bytes = (size_t)np_all * (size_t)kq * 64;
    int8_t *p = efc_malloc_aligned(64, bytes);
    int32_t *b = efc_malloc((size_t)m * sizeof(*b));
    if (p == NULL || b == NULL) {
        efc_free(p);
        efc_free(b);
        return efc_errf(EFC_ENOMEM, "qgemm pack: %zu bytes", bytes);
    }
    memset(p, 0, bytes);
    for (int32_t p0 = 0; p0 < np_all; p0 += g) {
        const int32_t gn = np_all - p0 < g ? np_all - p0 : g;
        int8_t *base = p + (size_t)p0 * kq * 64;
        for (int32_t pi = 0; pi < gn; pi++) {
            for (int32_t c = 0; c < 16; c++) {
                const int32_t j = (p0 + pi) * 16 + c;
                if (j >= m)
                    break;
                for (int32_t q = 0; q < k; q++)
                    base[((size_t)(q / 4) * gn + pi) * 64 + c * 4 + q % 4] = w[(size_t)j * k + q];
            }
        }
    }
    efc_k_qgemm_fold_bias(m, k, w, bias, zp_x, b);
    out->m = m;
    out->k = k;
    out->isa = EFC_ISA_AVX512VNNI;
    out->packed = p;
    out->packed_bytes = bytes;
    out->bias = b;
    return EFC_OK;
}

static inline __m512i bcast_u32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* What the micro-kernel needs besides x and the weights. */
struct epi {
    const int32_t *bias;         /* folded bias of the tile's first channel */
    const int32_t *mult, *shift; /* idem (per channel), or NULL when per tensor */
    const struct rq_vec *rq_pt;  /* per-tensor constants */
    int32_t left;                /* channels left from the tile's first channel (>= 1) */
    __m512i vlo, vhi, vzp;
};

static inline __mmask16 chan_mask(int32_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* One tile: y[r][16 p + c] for r < MR, p < NP over k-groups of one panel group (NP panels
 * interleaved per k-group); accumulators start at the folded bias and are requantised and
 * stored from registers. The last group reads only `tail` (1..3) bytes of x when k % 4 != 0. */
static inline __attribute__((always_inline)) void
ukr_body(const int MR, const int NP, int32_t kq_full, int32_t tail, const uint8_t *x, size_t ldx,
         const int8_t *wg, const struct epi *e, uint8_t *y, size_t ldy)
{
    __m512i acc[QG_MAX_MR][4];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int p = 0; p < NP; p++)
            acc[r][p] = _mm512_setzero_si512();
    const uint8_t *xq = x;
    for (int32_t q = 0; q < kq_full; q++) {
        __m512i wv[4];
#pragma GCC unroll 4
        for (int p = 0; p < NP; p++)
            wv[p] = _mm512_load_si512((const void *)(wg + p * 64));
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            __m512i b = bcast_u32(xq + (size_t)r * ldx);
#pragma GCC unroll 4
            for (int p = 0; p < NP; p++)
                acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], b, wv[p]);
        }
        wg += NP * 64;
        xq += 4;
    }
    if (tail) {
        const __mmask16 tm = (__mmask16)((1u << tail) - 1u);
        __m512i wv[4];
#pragma GCC unroll 4
        for (int p = 0; p < NP; p++)
            wv[p] = _mm512_load_si512((const void *)(wg + p * 64));
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            __m512i b = _mm512_broadcastd_epi32(_mm_maskz_loadu_epi8(tm, xq + (size_t)r * ldx));
#pragma GCC unroll 4
            for (int p = 0; p < NP; p++)
                acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], b, wv[p]);
        }
    }
    /* Epilogue panel by panel: one panel's constants live at a time, so the accumulators
     * and the constants fit the 32 registers without spills. */
    const __m512i vlo = e->vlo, vhi = e->vhi, vzp = e->vzp;
#pragma GCC unroll 4
    for (int p = 0; p < NP; p++) {
        const __mmask16 cm = chan_mask(e->left - 16 * p);
        const __m512i bias = _mm512_maskz_loadu_epi32(cm, e->bias + 16 * p);
        struct rq_vec rv;
        if (e->mult != NULL)
            rq_vec_make(_mm512_maskz_loadu_epi32(cm, e->mult + 16 * p),
                        _mm512_maskz_loadu_epi32(cm, e->shift + 16 * p), &rv);
        else
            rv = *e->rq_pt;
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            /* vpmovdb to a register then a plain store: vpmovdb with a memory destination is
             * several times slower on Zen 4/5. */
            __m512i a = _mm512_add_epi32(acc[r][p], bias);
            __m128i o = _mm512_cvtepi32_epi8(requant16(a, &rv, vlo, vhi, vzp));
            uint8_t *dst = y + (size_t)r * ldy + 16 * p;
            if (cm == 0xffff)
                _mm_storeu_si128((__m128i *)dst, o);
            else
                _mm_mask_storeu_epi8(dst, cm, o);
        }
    }
}

typedef void (*ukr_fn)(int32_t kq_full, int32_t tail, const uint8_t *x, size_t ldx,
                       const int8_t *wg, const struct epi *e, uint8_t *y, size_t ldy);

#define UKR(MR_, NP_)                                                                              \
    static void ukr_##MR_##x##NP_(int32_t kq_full, int32_t tail, const uint8_t *x, size_t ldx,     \
                                  const int8_t *wg, const struct epi *e, uint8_t *y, size_t ldy)   \
    {                                                                                              \
        ukr_body(MR_, NP_, kq_full, tail, x, ldx, wg, e, y, ldy);                                  \
    }
#define UKR_ROWS6(NP_) UKR(1, NP_) UKR(2, NP_) UKR(3, NP_) UKR(4, NP_) UKR(5, NP_) UKR(6, NP_)
#define UKR_ROWS8(NP_) UKR_ROWS6(NP_) UKR(7, NP_) UKR(8, NP_)
#define UKR_ROWS12(NP_) UKR_ROWS8(NP_) UKR(9, NP_) UKR(10, NP_) UKR(11, NP_) UKR(12, NP_)
#define UKR_ROWS16(NP_) UKR_ROWS12(NP_) UKR(13, NP_) UKR(14, NP_) UKR(15, NP_) UKR(16, NP_)
UKR_ROWS16(1)
UKR_ROWS12(2)
UKR_ROWS8(3)
UKR_ROWS6(4)

#define R6(NP_) ukr_1x##NP_, ukr_2x##NP_, ukr_3x##NP_, ukr_4x##NP_, ukr_5x##NP_, ukr_6x##NP_
#define R8(NP_) R6(NP_), ukr_7x##NP_, ukr_8x##NP_
#define R12(NP_) R8(NP_), ukr_9x##NP_, ukr_10x##NP_, ukr_11x##NP_, ukr_12x##NP_
#define R16(NP_) R12(NP_), ukr_13x##NP_, ukr_14x##NP_, ukr_15x##NP_, ukr_16x##NP_
/* g_ukr[np - 1][mr - 1] */
static const ukr_fn g_ukr[4][QG_MAX_MR] = {{R16(1)}, {R12(2)}, {R8(3)}, {R6(4)}};

/* The same rounded shift in 6 instead of 8 operations when every channel has shift >= 33
 * (multipliers below 2^-2: the usual case) or mult = 0. With P = acc * mult (|P| <= 2^62) and
 * h = P >> 32 (the high dword of the 64-bit product, |h| <= 2^30),
 *     (P + 2^(s-1)) >> s  ==  (h + 2^(s-33)) >> (s - 32)
 * because floor(floor(a) / 2^j) == floor(a / 2^j) and adding the integer 2^(s-33) commutes
 * with floor; h + 2^(s-33) < 2^30 + 2^29 does not overflow and s - 32 is in [1, 30], so the
 * second shift is a per-dword vpsravd. mult = 0 gives P = 0 and 0 for any such s, so those
 * channels use s = 33. The high dwords of the even and odd products are merged by one
 * merge-masked vpshufd. */
struct rq_hi {
    __m512i mult_e, mult_o, rnd, cnt;
};

/* 1 when rq_hi applies to the channels [0, m) of rq. */
static int rq_hi_ok(const struct efc_requant *rq, int32_t m)
{
    const int32_t nch = rq->per_tensor ? 1 : m;
    for (int32_t j = 0; j < nch; j++)
        if (rq->mult[j] != 0 && rq->shift[j] < 33)
            return 0;
    return 1;
}

static inline void rq_hi_make(__m512i mult, __m512i shift, struct rq_hi *v)
{
    const __m512i s = _mm512_mask_mov_epi32(
        shift, _mm512_cmpeq_epi32_mask(mult, _mm512_setzero_si512()), _mm512_set1_epi32(33));
    v->mult_e = mult;
    v->mult_o = _mm512_srli_epi64(mult, 32);
    v->cnt = _mm512_sub_epi32(s, _mm512_set1_epi32(32));
    v->rnd = _mm512_sllv_epi32(_mm512_set1_epi32(1), _mm512_sub_epi32(s, _mm512_set1_epi32(33)));
}

static inline __m512i requant16_hi(__m512i acc, const struct rq_hi *v)
{
    __m512i pe = _mm512_mul_epi32(acc, v->mult_e);
    __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), v->mult_o);
    __m512i h = _mm512_mask_shuffle_epi32(po, (__mmask16)0x5555, pe, _MM_PERM_CDAB);
    return _mm512_srav_epi32(_mm512_add_epi32(h, v->rnd), v->cnt);
}

/* ---- Small k, 17..32 channels (e.g. a first conv: 3 x 3 x 1 -> 32, k = 9) -------------
 * With k <= 4 * SK_MAX_KQ the whole packed weight block (KQ k-groups x 2 panels) and the
 * per-channel requantisation constants fit in registers, so one call streams over all rows
 * two at a time without reloading them; the requantisation then dominates, so the narrowing
 * of the four result vectors of a row pair is shared: vpackssdw (int32 -> int16, signed
 * saturation), vpaddsw zero point (saturating), vpackuswb (int16 -> uint8, unsigned
 * saturation), vpmaxub / vpminub clamp, one vpermd to undo the lane interleave. This equals
 * clamp(v + zp, lo, hi) exactly: the saturations are monotone and nest ([lo, hi] within
 * [0, 255] within the int16 range), and a saturated v (|v| > 2^15) already lands beyond the
 * 0 / 255 ends after adding zp in [0, 255]. */
#define SK_MAX_KQ 3

static inline __attribute__((always_inline)) int32_t
smallk_body(const int KQ, const int HI, int32_t m, int32_t k, int32_t n, const uint8_t *x,
            size_t ldx,
            const int8_t *wp, const int32_t *bias, const struct efc_requant *rq,
            const struct rq_vec *pt, uint8_t *y, size_t ldy)
{
    const __mmask16 cm1 = chan_mask(m - 16);
    const __mmask32 ym = m >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << m) - 1u);
    /* The last k-group reads only its k - 4 (KQ - 1) bytes of x (1..4). */
    const __mmask16 tm = (__mmask16)((1u << (k - 4 * (KQ - 1))) - 1u);
    __m512i wv[SK_MAX_KQ][2];
    for (int q = 0; q < KQ; q++)
        for (int p = 0; p < 2; p++)
            wv[q][p] = _mm512_load_si512((const void *)(wp + (q * 2 + p) * 64));
    const __m512i b0 = _mm512_loadu_si512(bias), b1 = _mm512_maskz_loadu_epi32(cm1, bias + 16);
    struct rq_vec rv0, rv1;
    struct rq_hi rh0, rh1;
    if (rq->per_tensor) {
        rv0 = *pt;
        rv1 = *pt;
        rq_hi_make(_mm512_set1_epi32(rq->mult[0]), _mm512_set1_epi32(rq->shift[0]), &rh0);
        rh1 = rh0;
    } else {
        rq_vec_make(_mm512_loadu_si512(rq->mult), _mm512_loadu_si512(rq->shift), &rv0);
        rq_vec_make(_mm512_maskz_loadu_epi32(cm1, rq->mult + 16),
                    _mm512_maskz_loadu_epi32(cm1, rq->shift + 16), &rv1);
        rq_hi_make(_mm512_loadu_si512(rq->mult), _mm512_loadu_si512(rq->shift), &rh0);
        rq_hi_make(_mm512_maskz_loadu_epi32(cm1, rq->mult + 16),
                   _mm512_maskz_loadu_epi32(cm1, rq->shift + 16), &rh1);
    }
    const __m512i zp16 = _mm512_set1_epi16((short)rq->zp_out);
    const __m512i lo8 = _mm512_set1_epi8((char)rq->lo), hi8 = _mm512_set1_epi8((char)rq->hi);
    /* vpackuswb leaves dword 4 L + j of lane L = chunk L (4 channels) of source j, with sources
     * (row 0 panel 0, row 0 panel 1, row 1 panel 0, row 1 panel 1): gather rows back. */
    const __m512i perm =
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    int32_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const uint8_t *x0 = x + (size_t)i * ldx, *x1 = x0 + ldx;
        __m512i a00 = b0, a01 = b1, a10 = b0, a11 = b1;
        for (int q = 0; q < KQ; q++) {
            __m512i v0, v1;
            if (q < KQ - 1) {
                v0 = bcast_u32(x0 + 4 * q);
                v1 = bcast_u32(x1 + 4 * q);
            } else {
                v0 = _mm512_broadcastd_epi32(_mm_maskz_loadu_epi8(tm, x0 + 4 * q));
                v1 = _mm512_broadcastd_epi32(_mm_maskz_loadu_epi8(tm, x1 + 4 * q));
            }
            a00 = _mm512_dpbusd_epi32(a00, v0, wv[q][0]);
            a01 = _mm512_dpbusd_epi32(a01, v0, wv[q][1]);
            a10 = _mm512_dpbusd_epi32(a10, v1, wv[q][0]);
            a11 = _mm512_dpbusd_epi32(a11, v1, wv[q][1]);
        }
        __m512i t0, t1;
        if (HI) {
            t0 = _mm512_packs_epi32(requant16_hi(a00, &rh0), requant16_hi(a01, &rh1));
            t1 = _mm512_packs_epi32(requant16_hi(a10, &rh0), requant16_hi(a11, &rh1));
        } else {
            t0 = _mm512_packs_epi32(requant16_raw(a00, &rv0), requant16_raw(a01, &rv1));
            t1 = _mm512_packs_epi32(requant16_raw(a10, &rv0), requant16_raw(a11, &rv1));
        }
        __m512i u = _mm512_packus_epi16(_mm512_adds_epi16(t0, zp16), _mm512_adds_epi16(t1, zp16));
        u = _mm512_permutexvar_epi32(perm, _mm512_min_epu8(_mm512_max_epu8(u, lo8), hi8));
        uint8_t *y0 = y + (size_t)i * ldy;
        if (m >= 32) {
            _mm256_storeu_si256((__m256i *)y0, _mm512_castsi512_si256(u));
            _mm256_storeu_si256((__m256i *)(y0 + ldy), _mm512_extracti64x4_epi64(u, 1));
        } else {
            _mm256_mask_storeu_epi8(y0, ym, _mm512_castsi512_si256(u));
            _mm256_mask_storeu_epi8(y0 + ldy, ym, _mm512_extracti64x4_epi64(u, 1));
        }
    }
    return i;
}

typedef int32_t (*smallk_fn)(int32_t m, int32_t k, int32_t n, const uint8_t *x, size_t ldx,
                             const int8_t *wp, const int32_t *bias, const struct efc_requant *rq,
                             const struct rq_vec *pt, uint8_t *y, size_t ldy);
#define SMALLK(KQ_, HI_)                                                                           \
    static int32_t smallk_##KQ_##_##HI_(int32_t m, int32_t k, int32_t n, const uint8_t *x,        \
                                        size_t ldx,                                                \
                                const int8_t *wp, const int32_t *bias,                             \
                                const struct efc_requant *rq, const struct rq_vec *pt, uint8_t *y, \
                                size_t ldy)                                                        \
    {                                                                                              \
        return smallk_body(KQ_, HI_, m, k, n, x, ldx, wp, bias, rq, pt, y, ldy);                   \
    }
SMALLK(1, 0)
SMALLK(2, 0)
SMALLK(3, 0)
SMALLK(1, 1)
SMALLK(2, 1)
SMALLK(3, 1)
/* g_smallk[rq_hi applies][kq - 1] */
static const smallk_fn g_smallk[2][SK_MAX_KQ] = {{smallk_1_0, smallk_2_0, smallk_3_0},
                                                 {smallk_1_1, smallk_2_1, smallk_3_1}};

static void qgemm_run_vnni(const struct efc_qgemm_w *w, const struct efc_requant *rq, int32_t n,
                           const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy)
{
    const int32_t m = w->m, k = w->k, kq = (k + 3) / 4, kq_full = k / 4, tail = k % 4;
    const int32_t np_all = (m + 15) / 16, g = group_panels(m), mr_max = tile_rows(g);
    const int8_t *wp = w->packed;
    const size_t group_bytes = (size_t)kq * 64 * (size_t)g;
    int32_t groups_per_block = (int32_t)(QG_BLOCK_BYTES / group_bytes);
    if (groups_per_block < 1)
        groups_per_block = 1;
    const int32_t panels_per_block = groups_per_block * g;
    struct rq_vec pt;
    struct epi e;

    rq_vec_make(_mm512_set1_epi32(rq->mult[0]), _mm512_set1_epi32(rq->shift[0]), &pt);
    e.rq_pt = &pt;
    e.vzp = _mm512_set1_epi32(rq->zp_out);
    e.vlo = _mm512_set1_epi32(rq->lo - rq->zp_out);
    e.vhi = _mm512_set1_epi32(rq->hi - rq->zp_out);
    if (np_all == 2 && kq <= SK_MAX_KQ) {
        /* Both panels form one group (group_panels), stored [q][panel][16][4] from 0. */
        const smallk_fn f = g_smallk[rq_hi_ok(rq, m)][kq - 1];
        const int32_t done = f(m, k, n, x, ldx, wp, w->bias, rq, &pt, y, ldy);
        x += (size_t)done * ldx;
        y += (size_t)done * ldy;
        n -= done;
    }
    for (int32_t pb = 0; pb < np_all; pb += panels_per_block) {
        const int32_t pe = np_all - pb < panels_per_block ? np_all : pb + panels_per_block;
        for (int32_t i0 = 0; i0 < n; i0 += mr_max) {
            const int32_t mr = n - i0 < mr_max ? n - i0 : mr_max;
            const uint8_t *xi = x + (size_t)i0 * ldx;
            for (int32_t p0 = pb; p0 < pe; p0 += g) {
                const int32_t gn = np_all - p0 < g ? np_all - p0 : g;
                const int32_t j0 = p0 * 16;
                e.bias = w->bias + j0;
                e.mult = rq->per_tensor ? NULL : rq->mult + j0;
                e.shift = rq->per_tensor ? NULL : rq->shift + j0;
                e.left = m - j0;
                g_ukr[gn - 1][mr - 1](kq_full, tail, xi, ldx, wp + (size_t)p0 * kq * 64, &e,
                                      y + (size_t)i0 * ldy + j0, ldy);
            }
        }
    }
}

const struct efc_k_qgemm efc_k_qgemm_u8s8__avx512vnni = {qgemm_pack_vnni, qgemm_run_vnni};
