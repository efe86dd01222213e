/* qops.c — AVX-512 (F/BW/VL/DQ) variants of the INT8 ops other than the GEMM, bit-exact with
 * kernels/ref/qops.c (docs/kernels-int8-ops.md explains why each trick is exact).
 *
 * Channel tails use AVX-512BW byte masks (loads are fault-suppressed, so nothing is read or
 * written outside the operands). Requantisation: 32x32->64 products of the even and odd lanes
 * (vpmuldq), add 2^(shift-1), vpsravq, blend back to 16 int32 lanes, clamp to [lo-zp, hi-zp],
 * add zp. Averages: (2*sum + cnt) / (2*cnt) by one correctly rounded fp32 division and
 * truncation, exact while 513 * cnt < 2^24 (larger windows take the scalar path).
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/kernels.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

/* Largest averaging count for which the fp32 division is exact (docs). */
#define AVG_FLOAT_MAX_CNT 32000

static inline int32_t imax(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static inline int32_t imin(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

static inline __mmask16 mask16(int32_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

static inline __mmask64 mask64(size_t n)
{
    return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
}

/* Per-lane requantisation of 16 int32 accumulators (kernels.h rule). mult/shift per lane. */
static inline __m512i requant16(__m512i acc, __m512i mult, __m512i shift, __m512i lo_zp,
                                __m512i hi_zp, __m512i zp)
{
    const __m512i one = _mm512_set1_epi64(1);
    const __m512i lo32 = _mm512_set1_epi64(0xFFFFFFFFLL);
    __m512i sh_e = _mm512_and_si512(shift, lo32);
    __m512i sh_o = _mm512_srli_epi64(shift, 32);
    __m512i pe = _mm512_mul_epi32(acc, mult);
    __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(mult, 32));
    pe = _mm512_add_epi64(pe, _mm512_sllv_epi64(one, _mm512_sub_epi64(sh_e, one)));
    po = _mm512_add_epi64(po, _mm512_sllv_epi64(one, _mm512_sub_epi64(sh_o, one)));
    pe = _mm512_srav_epi64(pe, sh_e);
    po = _mm512_srav_epi64(po, sh_o);
    __m512i r = _mm512_mask_blend_epi32((__mmask16)0xAAAA, pe, _mm512_slli_epi64(po, 32));
    r = _mm512_min_epi32(_mm512_max_epi32(r, lo_zp), hi_zp);
    return _mm512_add_epi32(r, zp);
}

/* Same with one multiplier for all lanes (rnd = 2^(shift-1) as int64, sh = shift). */
static inline __m512i requant16_u(__m512i acc, __m512i mult, __m512i rnd, __m128i sh,
                                  __m512i lo_zp, __m512i hi_zp, __m512i zp)
{
    __m512i pe = _mm512_mul_epi32(acc, mult);
    __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), mult);
    pe = _mm512_sra_epi64(_mm512_add_epi64(pe, rnd), sh);
    po = _mm512_sra_epi64(_mm512_add_epi64(po, rnd), sh);
    __m512i r = _mm512_mask_blend_epi32((__mmask16)0xAAAA, pe, _mm512_slli_epi64(po, 32));
    r = _mm512_min_epi32(_mm512_max_epi32(r, lo_zp), hi_zp);
    return _mm512_add_epi32(r, zp);
}

/* ---------------------------------------------------------------------------- im2row */

static inline void copy_bytes(uint8_t *dst, const uint8_t *src, size_t n)
{
    for (; n >= 64; n -= 64, dst += 64, src += 64)
        _mm512_storeu_si512((void *)dst, _mm512_loadu_si512((const void *)src));
    if (n > 0) {
        __mmask64 m = mask64(n);
        _mm512_mask_storeu_epi8(dst, m, _mm512_maskz_loadu_epi8(m, src));
    }
}

static inline void fill_bytes(uint8_t *dst, __m512i v, size_t n)
{
    for (; n >= 64; n -= 64, dst += 64)
        _mm512_storeu_si512((void *)dst, v);
    if (n > 0)
        _mm512_mask_storeu_epi8(dst, mask64(n), v);
}

/* One im2row row of at most 64 bytes, written to buf with 8-byte moves (buf must have 8
 * writable bytes past the row):
 * every overrun lands in bytes written after it (later in the run, or the next run), and
 * source reads of 8 bytes are only used where they stay inside the image. */
static void row_small(const struct efc_conv_geom *g, const uint8_t *x, const uint8_t *xend,
                      uint64_t padv, int32_t iy0, int32_t ix0, uint8_t *buf)
{
    const size_t c = (size_t)g->c, seg = (size_t)g->kw * c;
    const int32_t kx0 = imax(0, -ix0), kx1 = imin(g->kw, g->w - ix0);
    for (int32_t ky = 0; ky < g->kh; ky++) {
        uint8_t *o = buf + (size_t)ky * seg;
        const int32_t iy = iy0 + ky;
        if (iy < 0 || iy >= g->h || kx0 >= kx1) {
            for (size_t i = 0; i < seg; i += 8)
                memcpy(o + i, &padv, 8);
            continue;
        }
        for (size_t i = 0; i < (size_t)kx0 * c; i += 8)
            memcpy(o + i, &padv, 8);
        const uint8_t *src = x + ((size_t)iy * g->w + (size_t)(ix0 + kx0)) * c;
        uint8_t *d = o + (size_t)kx0 * c;
        const size_t n = (size_t)(kx1 - kx0) * c;
        if (src + ((n + 7) & ~(size_t)7) <= xend) {
            for (size_t i = 0; i < n; i += 8) {
                uint64_t v;
                memcpy(&v, src + i, 8);
                memcpy(d + i, &v, 8);
            }
        } else {
            memcpy(d, src, n);
        }
        for (size_t i = (size_t)kx1 * c; i < seg; i += 8)
            memcpy(o + i, &padv, 8);
    }
}

void efc_k_im2row_u8__avx512(const struct efc_conv_geom *g, const uint8_t *x, uint8_t pad,
                             int32_t p0, int32_t np, uint8_t *out, size_t ldo)
{
    const size_t c = (size_t)g->c, seg = (size_t)g->kw * c, k = (size_t)g->kh * seg;
    const __m512i vpad = _mm512_set1_epi8((char)pad);
    int32_t oy = p0 / g->ow, ox = p0 % g->ow;
    if (k <= 64) {
        /* Small rows (lenet5 conv1: 25 bytes). If the padded image fits in 16 KiB, copy it
         * once into a pre-padded buffer: then every pixel is interior and each run is a few
         * 8-byte moves, no bounds checks. Packed rows (ldo == k) with >= 8 bytes of later rows
         * are written in place (the <= 7-byte overrun lands in rows written after); the last
         * rows, or rows with a gap, go through buf and one masked store. */
        const int32_t pb = imax(0, (g->oh - 1) * g->sh - g->pt + g->kh - g->h);
        const int32_t pr = imax(0, (g->ow - 1) * g->sw - g->pl + g->kw - g->w);
        const size_t pw = (size_t)(g->pl + g->w + pr), ph = (size_t)(g->pt + g->h + pb);
        const __mmask64 mk = mask64(k);
        uint8_t buf[64 + 8];
        uint8_t img[16384];
        if (ph * pw * c + 8 <= sizeof(img)) {
            const size_t prow = pw * c;
            memset(img, pad, ph * pw * c + 8);
            for (int32_t y = 0; y < g->h; y++)
                memcpy(img + ((size_t)(y + g->pt) * pw + (size_t)g->pl) * c,
                       x + (size_t)y * g->w * c, (size_t)g->w * c);
            /* geometry in locals: the byte stores below could alias *g */
            const int32_t kh = g->kh, ow = g->ow;
            const size_t xstep = (size_t)g->sw * c, ystep = (size_t)g->sh * prow;
            const uint8_t *rowsrc = img + (size_t)oy * ystep;
            for (int32_t p = 0; p < np; p++) {
                uint8_t *o = out + (size_t)p * ldo;
                const int direct = ldo == k && (size_t)(np - p - 1) * k >= 8;
                uint8_t *d = direct ? o : buf;
                const uint8_t *src = rowsrc + (size_t)ox * xstep;
                if (seg <= 8) {
                    for (int32_t ky = 0; ky < kh; ky++) {
                        uint64_t v;
                        memcpy(&v, src + (size_t)ky * prow, 8);
                        memcpy(d + (size_t)ky * seg, &v, 8);
                    }
                } else {
                    for (int32_t ky = 0; ky < kh; ky++, src += prow, d += seg)
                        for (size_t i = 0; i < seg; i += 8) {
                            uint64_t v;
                            memcpy(&v, src + i, 8);
                            memcpy(d + i, &v, 8);
                        }
                }
                if (!direct)
                    _mm512_mask_storeu_epi8(o, mk, _mm512_loadu_si512((const void *)buf));
                if (++ox == ow) {
                    ox = 0;
                    rowsrc += ystep;
                }
            }
            return;
        }
        const uint8_t *xend = x + (size_t)g->h * g->w * c;
        const uint64_t padv = 0x0101010101010101ULL * pad;
        for (int32_t p = 0; p < np; p++) {
            uint8_t *o = out + (size_t)p * ldo;
            const int32_t iy0 = oy * g->sh - g->pt, ix0 = ox * g->sw - g->pl;
            if (ldo == k && (size_t)(np - p - 1) * k >= 8) {
                row_small(g, x, xend, padv, iy0, ix0, o);
            } else {
                row_small(g, x, xend, padv, iy0, ix0, buf);
                _mm512_mask_storeu_epi8(o, mk, _mm512_loadu_si512((const void *)buf));
            }
            if (++ox == g->ow) {
                ox = 0;
                oy++;
            }
        }
        return;
    }
    for (int32_t p = 0; p < np; p++) {
        uint8_t *o = out + (size_t)p * ldo;
        int32_t iy0 = oy * g->sh - g->pt, ix0 = ox * g->sw - g->pl;
        int32_t kx0 = imax(0, -ix0), kx1 = imin(g->kw, g->w - ix0);
        if (iy0 >= 0 && iy0 + g->kh <= g->h && kx0 == 0 && kx1 == g->kw) {
            /* interior: kh runs of kw * c contiguous bytes */
            const uint8_t *s = x + ((size_t)iy0 * g->w + ix0) * c;
            for (int32_t ky = 0; ky < g->kh; ky++, o += seg, s += (size_t)g->w * c)
                copy_bytes(o, s, seg);
        } else {
            for (int32_t ky = 0; ky < g->kh; ky++, o += seg) {
                int32_t iy = iy0 + ky;
                if (iy < 0 || iy >= g->h || kx0 >= kx1) {
                    fill_bytes(o, vpad, seg);
                    continue;
                }
                fill_bytes(o, vpad, (size_t)kx0 * c);
                copy_bytes(o + (size_t)kx0 * c, x + ((size_t)iy * g->w + ix0 + kx0) * c,
                           (size_t)(kx1 - kx0) * c);
                fill_bytes(o + (size_t)kx1 * c, vpad, (size_t)(g->kw - kx1) * c);
            }
        }
        if (++ox == g->ow) {
            ox = 0;
            oy++;
        }
    }
}

/* --------------------------------------------------------------------------- qdwconv */

/* 16 input bytes for output channels o..o+15 (multiplier > 1: channel (o + j) / mult). */
static inline __m128i dw_gather(const uint8_t *xp, int32_t o, int32_t mult, __mmask16 m)
{
    uint8_t buf[16] = {0};
    for (int32_t j = 0; j < 16; j++)
        if (m & (1u << j))
            buf[j] = xp[(o + j) / mult];
    return _mm_loadu_si128((const __m128i *)buf);
}

/* Channel block outer (its bias, multipliers and, for 3x3, the 9 widened weight vectors stay
 * in registers), pixels inner. Interior pixels of a 3x3 multiplier-1 conv take an unrolled
 * path with zp_x folded into the bias (bias - zp_x * sum w: int32 wrap-around arithmetic, so
 * the exact sum comes out whatever the order); the others walk their in-image taps. */
void efc_k_qdwconv__avx512(const struct efc_conv_geom *g, const uint8_t *x, int32_t zp_x,
                           const int8_t *w, const int32_t *bias, const struct efc_requant *rq,
                           uint8_t *y)
{
    const int32_t oc = g->oc, c = g->c, dm = g->oc / g->c;
    const int fast3 = g->kh == 3 && g->kw == 3 && dm == 1;
    const size_t row = (size_t)g->w * c;
    const __m512i vzp = _mm512_set1_epi32(zp_x);
    const __m512i lo_zp = _mm512_set1_epi32(rq->lo - rq->zp_out);
    const __m512i hi_zp = _mm512_set1_epi32(rq->hi - rq->zp_out);
    const __m512i zp_out = _mm512_set1_epi32(rq->zp_out);
    const __m512i umult = _mm512_set1_epi32(rq->mult[0]);
    const __m512i ushift = _mm512_set1_epi32(rq->shift[0]);
    for (int32_t o = 0; o < oc; o += 16) {
        const __mmask16 m = mask16(oc - o);
        const __m512i b0 = bias ? _mm512_maskz_loadu_epi32(m, bias + o) : _mm512_setzero_si512();
        const __m512i mu = rq->per_tensor ? umult : _mm512_maskz_loadu_epi32(m, rq->mult + o);
        const __m512i sh = rq->per_tensor ? ushift
                                          : _mm512_mask_loadu_epi32(ushift, m, rq->shift + o);
        __m512i w9[9], bz = b0;
        for (int t = 0; t < 9; t++) /* only read on the fast3 path; zeroed for the compiler */
            w9[t] = _mm512_setzero_si512();
        if (fast3) {
            for (int t = 0; t < 9; t++) {
                w9[t] = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, w + (size_t)t * oc + o));
                bz = _mm512_sub_epi32(bz, _mm512_mullo_epi32(vzp, w9[t]));
            }
        }
        for (int32_t n = 0; n < g->n; n++) {
            const uint8_t *xi = x + (size_t)n * g->h * g->w * c;
            uint8_t *yo = y + (size_t)n * g->oh * g->ow * oc + o;
            for (int32_t oy = 0; oy < g->oh; oy++) {
                int32_t iy0 = oy * g->sh - g->pt;
                int32_t ky0 = imax(0, -iy0), ky1 = imin(g->kh, g->h - iy0);
                for (int32_t ox = 0; ox < g->ow; ox++, yo += oc) {
                    int32_t ix0 = ox * g->sw - g->pl;
                    int32_t kx0 = imax(0, -ix0), kx1 = imin(g->kw, g->w - ix0);
                    __m512i acc;
                    if (fast3 && ky0 == 0 && ky1 == 3 && kx0 == 0 && kx1 == 3) {
                        const uint8_t *xp = xi + (size_t)iy0 * row + (size_t)ix0 * c + o;
                        acc = bz;
                        for (int t = 0; t < 9; t++) {
                            __m128i xb = _mm_maskz_loadu_epi8(
                                m, xp + (size_t)(t / 3) * row + (size_t)(t % 3) * c);
                            acc = _mm512_add_epi32(
                                acc, _mm512_mullo_epi32(_mm512_cvtepu8_epi32(xb), w9[t]));
                        }
                    } else {
                        acc = b0;
                        for (int32_t ky = ky0; ky < ky1; ky++) {
                            const uint8_t *xr = xi + (size_t)(iy0 + ky) * row + (size_t)ix0 * c;
                            const int8_t *wr = w + ((size_t)ky * g->kw) * oc + o;
                            for (int32_t kx = kx0; kx < kx1; kx++) {
                                const uint8_t *xp = xr + (size_t)kx * c;
                                __m128i xb = dm == 1 ? _mm_maskz_loadu_epi8(m, xp + o)
                                                     : dw_gather(xp, o, dm, m);
                                __m128i wb = _mm_maskz_loadu_epi8(m, wr + (size_t)kx * oc);
                                __m512i xv = _mm512_sub_epi32(_mm512_cvtepu8_epi32(xb), vzp);
                                acc = _mm512_add_epi32(
                                    acc, _mm512_mullo_epi32(xv, _mm512_cvtepi8_epi32(wb)));
                            }
                        }
                    }
                    __m512i r = requant16(acc, mu, sh, lo_zp, hi_zp, zp_out);
                    _mm_mask_storeu_epi8(yo, m, _mm512_cvtepi32_epi8(r));
                }
            }
        }
    }
}

/* ----------------------------------------------------------------------------- pools */

void efc_k_qmaxpool__avx512(const struct efc_pool_geom *g, const uint8_t *x, uint8_t *y)
{
    const size_t c = (size_t)g->c;
    for (int32_t n = 0; n < g->n; n++) {
        const uint8_t *xi = x + (size_t)n * g->h * g->w * c;
        uint8_t *yo = y + (size_t)n * g->oh * g->ow * c;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            int32_t y0 = oy * g->sh - g->pt;
            int32_t ya = imax(y0, 0), yb = imin(y0 + g->kh, g->h);
            for (int32_t ox = 0; ox < g->ow; ox++, yo += c) {
                int32_t x0 = ox * g->sw - g->pl;
                int32_t xa = imax(x0, 0), xb = imin(x0 + g->kw, g->w);
                if (c <= 32) { /* lenet5 / cnn-bn sizes: one ymm, masked */
                    __mmask32 m = (__mmask32)mask64(c);
                    __m256i v = _mm256_setzero_si256();
                    for (int32_t iy = ya; iy < yb; iy++) {
                        const uint8_t *xr = xi + ((size_t)iy * g->w) * c;
                        for (int32_t ix = xa; ix < xb; ix++)
                            v = _mm256_max_epu8(v, _mm256_maskz_loadu_epi8(m, xr + ix * c));
                    }
                    _mm256_mask_storeu_epi8(yo, m, v);
                    continue;
                }
                for (size_t ch = 0; ch < c; ch += 64) {
                    __mmask64 m = mask64(c - ch);
                    __m512i v = _mm512_setzero_si512();
                    for (int32_t iy = ya; iy < yb; iy++) {
                        const uint8_t *xr = xi + ((size_t)iy * g->w) * c + ch;
                        for (int32_t ix = xa; ix < xb; ix++)
                            v = _mm512_max_epu8(v, _mm512_maskz_loadu_epi8(m, xr + ix * c));
                    }
                    _mm512_mask_storeu_epi8(yo + ch, m, v);
                }
            }
        }
    }
}

/* floor((2 * sum + cnt) / (2 * cnt)) for 16 int32 sums, cnt in 1..AVG_FLOAT_MAX_CNT. */
static inline __m128i avg16(__m512i sum, int32_t cnt)
{
    __m512i a = _mm512_add_epi32(_mm512_add_epi32(sum, sum), _mm512_set1_epi32(cnt));
    __m512 q = _mm512_div_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(2.0f * (float)cnt));
    return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q));
}

static int32_t avg_count(const struct efc_pool_geom *g, int32_t oy, int32_t ox)
{
    int32_t y0 = oy * g->sh - g->pt, x0 = ox * g->sw - g->pl;
    if (g->count_include_pad) {
        int32_t pb = imax(0, (g->oh - 1) * g->sh + g->kh - g->pt - g->h);
        int32_t pr = imax(0, (g->ow - 1) * g->sw + g->kw - g->pl - g->w);
        return (imin(y0 + g->kh, g->h + pb) - imax(y0, -g->pt)) *
               (imin(x0 + g->kw, g->w + pr) - imax(x0, -g->pl));
    }
    return imax(0, imin(y0 + g->kh, g->h) - imax(y0, 0)) *
           imax(0, imin(x0 + g->kw, g->w) - imax(x0, 0));
}

void efc_k_qavgpool__avx512(const struct efc_pool_geom *g, const uint8_t *x, uint8_t *y)
{
    const size_t c = (size_t)g->c;
    for (int32_t n = 0; n < g->n; n++) {
        const uint8_t *xi = x + (size_t)n * g->h * g->w * c;
        uint8_t *yo = y + (size_t)n * g->oh * g->ow * c;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            int32_t y0 = oy * g->sh - g->pt;
            int32_t ya = imax(y0, 0), yb = imin(y0 + g->kh, g->h);
            for (int32_t ox = 0; ox < g->ow; ox++, yo += c) {
                int32_t x0 = ox * g->sw - g->pl;
                int32_t xa = imax(x0, 0), xb = imin(x0 + g->kw, g->w);
                int32_t cnt = avg_count(g, oy, ox);
                int32_t inside = imax(0, yb - ya) * imax(0, xb - xa);
                int32_t padsum = g->count_include_pad ? (cnt - inside) * g->zp : 0;
                if (cnt <= 0 || cnt > AVG_FLOAT_MAX_CNT) {
                    for (size_t ch = 0; ch < c; ch++) {
                        int64_t s = padsum;
                        for (int32_t iy = ya; iy < yb; iy++)
                            for (int32_t ix = xa; ix < xb; ix++)
                                s += xi[((size_t)iy * g->w + ix) * c + ch];
                        yo[ch] = cnt > 0 ? (uint8_t)((2 * s + cnt) / (2 * (int64_t)cnt)) : 0;
                    }
                    continue;
                }
                for (size_t ch = 0; ch < c; ch += 16) {
                    __mmask16 m = mask16((int32_t)(c - ch < 16 ? c - ch : 16));
                    __m512i s = _mm512_set1_epi32(padsum);
                    for (int32_t iy = ya; iy < yb; iy++) {
                        const uint8_t *xr = xi + ((size_t)iy * g->w) * c + ch;
                        for (int32_t ix = xa; ix < xb; ix++)
                            s = _mm512_add_epi32(
                                s, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, xr + ix * c)));
                    }
                    _mm_mask_storeu_epi8(yo + ch, m, avg16(s, cnt));
                }
            }
        }
    }
}

void efc_k_qgavgpool__avx512(int32_t n, int32_t hw, int32_t c, const uint8_t *x, uint8_t *y)
{
    if (hw <= 0 || hw > AVG_FLOAT_MAX_CNT) {
        efc_k_qgavgpool__ref(n, hw, c, x, y);
        return;
    }
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *xi = x + (size_t)i * hw * c;
        uint8_t *yi = y + (size_t)i * c;
        for (int32_t ch = 0; ch < c; ch += 32) {
            __mmask16 m0 = mask16(c - ch), m1 = mask16(c - ch - 16 > 0 ? c - ch - 16 : 0);
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            const uint8_t *xp = xi + ch;
            for (int32_t j = 0; j < hw; j++, xp += c) {
                s0 = _mm512_add_epi32(s0, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m0, xp)));
                s1 = _mm512_add_epi32(s1,
                                      _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m1, xp + 16)));
            }
            _mm_mask_storeu_epi8(yi + ch, m0, avg16(s0, hw));
            _mm_mask_storeu_epi8(yi + ch + 16, m1, avg16(s1, hw));
        }
    }
}

/* ------------------------------------------------------------------------------- qadd */

void efc_k_qadd__avx512(size_t n, const uint8_t *a, const uint8_t *b,
                        const struct efc_qadd_params *p, uint8_t *y)
{
    const __m512i zp_ab = _mm512_set1_epi32((int32_t)(((uint32_t)p->zp_b << 16) |
                                                      ((uint32_t)p->zp_a & 0xFFFFu)));
    const __m512i m_ab = _mm512_set1_epi32((int32_t)(((uint32_t)p->m_b << 16) |
                                                     ((uint32_t)p->m_a & 0xFFFFu)));
    const __m512i mult = _mm512_set1_epi32(p->mult);
    const __m512i rnd = _mm512_set1_epi64((int64_t)1 << (p->shift - 1));
    const __m128i sh = _mm_cvtsi32_si128(p->shift);
    const __m512i lo_zp = _mm512_set1_epi32(p->lo - p->zp_y);
    const __m512i hi_zp = _mm512_set1_epi32(p->hi - p->zp_y);
    const __m512i zp = _mm512_set1_epi32(p->zp_y);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1u);
        __m128i va = _mm_maskz_loadu_epi8(m, a + i), vb = _mm_maskz_loadu_epi8(m, b + i);
        __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(va, vb)),
                                             _mm_unpackhi_epi8(va, vb), 1);
        __m512i d = _mm512_sub_epi16(_mm512_cvtepu8_epi16(ab), zp_ab);
        __m512i acc = _mm512_madd_epi16(d, m_ab);
        __m512i r = requant16_u(acc, mult, rnd, sh, lo_zp, hi_zp, zp);
        _mm_mask_storeu_epi8(y + i, m, _mm512_cvtepi32_epi8(r));
    }
}

/* ------------------------------------------------------------------- quantise / dequantise */

void efc_k_quantize__avx512(size_t n, const float *x, float inv_scale, int32_t zp, uint8_t *y)
{
    const __m512 vs = _mm512_set1_ps(inv_scale);
    const __m512 lo = _mm512_set1_ps(-1024.0f), hi = _mm512_set1_ps(1024.0f);
    const __m512i vzp = _mm512_set1_epi32(zp);
    const __m512i zero = _mm512_setzero_si512(), max8 = _mm512_set1_epi32(255);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1u);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs);
        /* vmaxps returns its second operand when either is NaN: NaN -> -1024 -> 0 */
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);
        q = _mm512_min_epi32(_mm512_max_epi32(q, zero), max8);
        _mm_mask_storeu_epi8(y + i, m, _mm512_cvtepi32_epi8(q));
    }
}

void efc_k_dequantize__avx512(size_t n, const uint8_t *x, float scale, int32_t zp, float *y)
{
    const __m512 vs = _mm512_set1_ps(scale);
    const __m512i vzp = _mm512_set1_epi32(zp);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1u);
        __m512i q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, x + i)), vzp);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_cvtepi32_ps(q), vs));
    }
}
