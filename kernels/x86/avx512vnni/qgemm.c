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
 */
#include <immintrin.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_status.h"
#include "kernels/kernels.h"

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

/* The rule of kernels.h on 16 lanes: ((int64)acc * mult + 2^(shift-1)) >> shift (arithmetic),
 * then clamp(. + zp, lo, hi) done as clamp(., lo - zp, hi - zp) + zp so nothing overflows.
 * Even lanes are multiplied in place, odd lanes after a 32-bit shift down; the odd results'
 * low halves are moved back up with a merge-masked vpshufd. */
struct rq_vec {
    __m512i mult_e, mult_o, sh_e, sh_o, rnd_e, rnd_o;
};

static inline void rq_vec_make(__m512i mult, __m512i shift, struct rq_vec *v)
{
    const __m512i lo32 = _mm512_set1_epi64(0xffffffffLL), one = _mm512_set1_epi64(1);
    v->mult_e = mult;
    v->mult_o = _mm512_srli_epi64(mult, 32);
    v->sh_e = _mm512_and_si512(shift, lo32);
    v->sh_o = _mm512_srli_epi64(shift, 32);
    v->rnd_e = _mm512_sllv_epi64(one, _mm512_sub_epi64(v->sh_e, one));
    v->rnd_o = _mm512_sllv_epi64(one, _mm512_sub_epi64(v->sh_o, one));
}

static inline __m512i requant16(__m512i acc, const struct rq_vec *v, __m512i vlo, __m512i vhi,
                                __m512i vzp)
{
    __m512i pe = _mm512_mul_epi32(acc, v->mult_e);
    __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), v->mult_o);
    pe = _mm512_srav_epi64(_mm512_add_epi64(pe, v->rnd_e), v->sh_e);
    po = _mm512_srav_epi64(_mm512_add_epi64(po, v->rnd_o), v->sh_o);
    __m512i r = _mm512_mask_shuffle_epi32(pe, (__mmask16)0xAAAA, po, _MM_PERM_CDAB);
    r = _mm512_min_epi32(_mm512_max_epi32(r, vlo), vhi);
    return _mm512_add_epi32(r, vzp);
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
