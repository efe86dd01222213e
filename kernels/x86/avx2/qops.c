/* qops.c — AVX2 variants of the INT8 ops other than the GEMM, bit-exact with
 * kernels/ref/qops.c (docs/kernels-int8-ops.md explains why each trick is exact).
 *
 * AVX2 has no byte masks, so tails either recompute an overlapping full vector ending at the
 * last channel (pools and depthwise, whose output never aliases the input: the overlap writes
 * the same values twice) or fall back to the scalar reference (element-wise ops, which may
 * run in place). No load ever reaches outside its operand. Requantisation: vpmuldq on even
 * and odd lanes, add 2^(shift-1), then the 64-bit arithmetic shift AVX2 lacks as
 * ((p ^ 2^63) >>> s) - (2^63 >>> s).
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

/* floor(p / 2^s) per int64 lane, s in [0, 63] per lane. */
static inline __m256i sra64(__m256i p, __m256i s)
{
    const __m256i sign = _mm256_set1_epi64x(INT64_MIN);
    return _mm256_sub_epi64(_mm256_srlv_epi64(_mm256_xor_si256(p, sign), s),
                            _mm256_srlv_epi64(sign, s));
}

/* Per-lane requantisation of 8 int32 accumulators (kernels.h rule). */
static inline __m256i requant8(__m256i acc, __m256i mult, __m256i shift, __m256i lo_zp,
                               __m256i hi_zp, __m256i zp)
{
    const __m256i one = _mm256_set1_epi64x(1);
    const __m256i lo32 = _mm256_set1_epi64x(0xFFFFFFFFLL);
    __m256i sh_e = _mm256_and_si256(shift, lo32);
    __m256i sh_o = _mm256_srli_epi64(shift, 32);
    __m256i pe = _mm256_mul_epi32(acc, mult);
    __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), _mm256_srli_epi64(mult, 32));
    pe = _mm256_add_epi64(pe, _mm256_sllv_epi64(one, _mm256_sub_epi64(sh_e, one)));
    po = _mm256_add_epi64(po, _mm256_sllv_epi64(one, _mm256_sub_epi64(sh_o, one)));
    pe = sra64(pe, sh_e);
    po = sra64(po, sh_o);
    __m256i r = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    r = _mm256_min_epi32(_mm256_max_epi32(r, lo_zp), hi_zp);
    return _mm256_add_epi32(r, zp);
}

/* 8 int32 in 0..255 -> 8 bytes in the low half. */
static inline __m128i pack8(__m256i r)
{
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    return _mm_packus_epi16(w, w);
}

static inline __m256i load8_u8(const uint8_t *p)
{
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

/* ---------------------------------------------------------------------------- im2row */

/* Small copies without reading or writing outside [0, n): overlapping loads/stores. */
static inline void copy_bytes(uint8_t *d, const uint8_t *s, size_t n)
{
    if (n >= 32) {
        size_t i = 0;
        for (; i + 32 <= n; i += 32)
            _mm256_storeu_si256((__m256i *)(d + i),
                                _mm256_loadu_si256((const __m256i *)(s + i)));
        if (i < n)
            _mm256_storeu_si256((__m256i *)(d + n - 32),
                                _mm256_loadu_si256((const __m256i *)(s + n - 32)));
    } else if (n >= 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + n - 16));
        _mm_storeu_si128((__m128i *)d, a);
        _mm_storeu_si128((__m128i *)(d + n - 16), b);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    }
}

static inline void fill_bytes(uint8_t *d, uint8_t v, size_t n)
{
    if (n >= 32) {
        const __m256i vv = _mm256_set1_epi8((char)v);
        size_t i = 0;
        for (; i + 32 <= n; i += 32)
            _mm256_storeu_si256((__m256i *)(d + i), vv);
        if (i < n)
            _mm256_storeu_si256((__m256i *)(d + n - 32), vv);
    } else {
        memset(d, v, n);
    }
}

void efc_k_im2row_u8__avx2(const struct efc_conv_geom *g, const uint8_t *x, uint8_t pad,
                           int32_t p0, int32_t np, uint8_t *out, size_t ldo)
{
    const size_t c = (size_t)g->c, seg = (size_t)g->kw * c;
    int32_t oy = p0 / g->ow, ox = p0 % g->ow;
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
                    fill_bytes(o, pad, seg);
                    continue;
                }
                fill_bytes(o, pad, (size_t)kx0 * c);
                copy_bytes(o + (size_t)kx0 * c, x + ((size_t)iy * g->w + ix0 + kx0) * c,
                           (size_t)(kx1 - kx0) * c);
                fill_bytes(o + (size_t)kx1 * c, pad, (size_t)(g->kw - kx1) * c);
            }
        }
        if (++ox == g->ow) {
            ox = 0;
            oy++;
        }
    }
}

/* --------------------------------------------------------------------------- qdwconv */

/* One output channel, scalar (for oc < 8). */
static uint8_t dw_one(const struct efc_conv_geom *g, const uint8_t *xi, int32_t zp_x,
                      const int8_t *w, const int32_t *bias, const struct efc_requant *rq,
                      int32_t oy, int32_t ox, int32_t o)
{
    const int32_t dm = g->oc / g->c;
    int32_t acc = bias ? bias[o] : 0;
    for (int32_t ky = 0; ky < g->kh; ky++) {
        int32_t iy = oy * g->sh - g->pt + ky;
        if (iy < 0 || iy >= g->h)
            continue;
        for (int32_t kx = 0; kx < g->kw; kx++) {
            int32_t ix = ox * g->sw - g->pl + kx;
            if (ix < 0 || ix >= g->w)
                continue;
            acc += ((int32_t)xi[((size_t)iy * g->w + ix) * g->c + o / dm] - zp_x) *
                   w[((size_t)ky * g->kw + kx) * g->oc + o];
        }
    }
    int32_t k = rq->per_tensor ? 0 : o;
    return efc_k_requant__ref(acc, rq->mult[k], rq->shift[k], rq->zp_out, rq->lo, rq->hi);
}

static inline __m256i dw_gather(const uint8_t *xp, int32_t o, int32_t dm)
{
    uint8_t buf[8];
    for (int32_t j = 0; j < 8; j++)
        buf[j] = xp[(o + j) / dm];
    return load8_u8(buf);
}

void efc_k_qdwconv__avx2(const struct efc_conv_geom *g, const uint8_t *x, int32_t zp_x,
                         const int8_t *w, const int32_t *bias, const struct efc_requant *rq,
                         uint8_t *y)
{
    const int32_t oc = g->oc, c = g->c, dm = g->oc / g->c;
    const __m256i vzp = _mm256_set1_epi32(zp_x);
    const __m256i lo_zp = _mm256_set1_epi32(rq->lo - rq->zp_out);
    const __m256i hi_zp = _mm256_set1_epi32(rq->hi - rq->zp_out);
    const __m256i zp_out = _mm256_set1_epi32(rq->zp_out);
    const __m256i umult = _mm256_set1_epi32(rq->mult[0]);
    const __m256i ushift = _mm256_set1_epi32(rq->shift[0]);
    for (int32_t n = 0; n < g->n; n++) {
        const uint8_t *xi = x + (size_t)n * g->h * g->w * c;
        uint8_t *yo = y + (size_t)n * g->oh * g->ow * oc;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            int32_t iy0 = oy * g->sh - g->pt;
            int32_t ky0 = imax(0, -iy0), ky1 = imin(g->kh, g->h - iy0);
            for (int32_t ox = 0; ox < g->ow; ox++, yo += oc) {
                if (oc < 8) {
                    for (int32_t o = 0; o < oc; o++)
                        yo[o] = dw_one(g, xi, zp_x, w, bias, rq, oy, ox, o);
                    continue;
                }
                int32_t ix0 = ox * g->sw - g->pl;
                int32_t kx0 = imax(0, -ix0), kx1 = imin(g->kw, g->w - ix0);
                for (int32_t ob = 0; ob < oc; ob += 8) {
                    int32_t o = ob + 8 <= oc ? ob : oc - 8; /* last block overlaps */
                    __m256i acc = bias ? _mm256_loadu_si256((const __m256i *)(bias + o))
                                       : _mm256_setzero_si256();
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const uint8_t *xr = xi + ((size_t)(iy0 + ky) * g->w + ix0) * c;
                        const int8_t *wr = w + ((size_t)ky * g->kw) * oc + o;
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            const uint8_t *xp = xr + (size_t)kx * c;
                            __m256i xv = dm == 1 ? load8_u8(xp + o) : dw_gather(xp, o, dm);
                            __m256i wv = _mm256_cvtepi8_epi32(
                                _mm_loadl_epi64((const __m128i *)(wr + (size_t)kx * oc)));
                            xv = _mm256_sub_epi32(xv, vzp);
                            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(xv, wv));
                        }
                    }
                    __m256i mu = rq->per_tensor
                                     ? umult
                                     : _mm256_loadu_si256((const __m256i *)(rq->mult + o));
                    __m256i sh = rq->per_tensor
                                     ? ushift
                                     : _mm256_loadu_si256((const __m256i *)(rq->shift + o));
                    __m256i r = requant8(acc, mu, sh, lo_zp, hi_zp, zp_out);
                    _mm_storel_epi64((__m128i *)(yo + o), pack8(r));
                }
            }
        }
    }
}

/* ----------------------------------------------------------------------------- pools */

/* vw (16, 8 or 4) bytes into / out of the low part of an xmm register. */
static inline __m128i load_n(const uint8_t *p, size_t vw)
{
    if (vw == 16)
        return _mm_loadu_si128((const __m128i *)p);
    if (vw == 8)
        return _mm_loadl_epi64((const __m128i *)p);
    int32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtsi32_si128(v);
}

static inline void store_n(uint8_t *p, __m128i v, size_t vw)
{
    if (vw == 16) {
        _mm_storeu_si128((__m128i *)p, v);
    } else if (vw == 8) {
        _mm_storel_epi64((__m128i *)p, v);
    } else {
        int32_t s = _mm_cvtsi128_si32(v);
        memcpy(p, &s, 4);
    }
}

void efc_k_qmaxpool__avx2(const struct efc_pool_geom *g, const uint8_t *x, uint8_t *y)
{
    const size_t c = (size_t)g->c;
    if (c < 4) {
        efc_k_qmaxpool__ref(g, x, y);
        return;
    }
    const size_t vw = c >= 32 ? 32 : c >= 16 ? 16 : c >= 8 ? 8 : 4;
    for (int32_t n = 0; n < g->n; n++) {
        const uint8_t *xi = x + (size_t)n * g->h * g->w * c;
        uint8_t *yo = y + (size_t)n * g->oh * g->ow * c;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            int32_t y0 = oy * g->sh - g->pt;
            int32_t ya = imax(y0, 0), yb = imin(y0 + g->kh, g->h);
            for (int32_t ox = 0; ox < g->ow; ox++, yo += c) {
                int32_t x0 = ox * g->sw - g->pl;
                int32_t xa = imax(x0, 0), xb = imin(x0 + g->kw, g->w);
                for (size_t cb = 0; cb < c; cb += vw) {
                    size_t ch = cb + vw <= c ? cb : c - vw; /* last block overlaps */
                    if (vw == 32) {
                        __m256i v = _mm256_setzero_si256();
                        for (int32_t iy = ya; iy < yb; iy++) {
                            const uint8_t *xr = xi + ((size_t)iy * g->w) * c + ch;
                            for (int32_t ix = xa; ix < xb; ix++)
                                v = _mm256_max_epu8(
                                    v, _mm256_loadu_si256((const __m256i *)(xr + ix * c)));
                        }
                        _mm256_storeu_si256((__m256i *)(yo + ch), v);
                    } else {
                        __m128i v = _mm_setzero_si128();
                        for (int32_t iy = ya; iy < yb; iy++) {
                            const uint8_t *xr = xi + ((size_t)iy * g->w) * c + ch;
                            for (int32_t ix = xa; ix < xb; ix++)
                                v = _mm_max_epu8(v, load_n(xr + ix * c, vw));
                        }
                        store_n(yo + ch, v, vw);
                    }
                }
            }
        }
    }
}

/* floor((2 * sum + cnt) / (2 * cnt)) for 8 int32 sums, cnt in 1..AVG_FLOAT_MAX_CNT. */
static inline __m128i avg8(__m256i sum, int32_t cnt)
{
    __m256i a = _mm256_add_epi32(_mm256_add_epi32(sum, sum), _mm256_set1_epi32(cnt));
    __m256 q = _mm256_div_ps(_mm256_cvtepi32_ps(a), _mm256_set1_ps(2.0f * (float)cnt));
    return pack8(_mm256_cvttps_epi32(q));
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

void efc_k_qavgpool__avx2(const struct efc_pool_geom *g, const uint8_t *x, uint8_t *y)
{
    const size_t c = (size_t)g->c;
    if (c < 8) {
        efc_k_qavgpool__ref(g, x, y);
        return;
    }
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
                for (size_t cb = 0; cb < c; cb += 8) {
                    size_t ch = cb + 8 <= c ? cb : c - 8; /* last block overlaps */
                    __m256i s = _mm256_set1_epi32(padsum);
                    for (int32_t iy = ya; iy < yb; iy++) {
                        const uint8_t *xr = xi + ((size_t)iy * g->w) * c + ch;
                        for (int32_t ix = xa; ix < xb; ix++)
                            s = _mm256_add_epi32(s, load8_u8(xr + ix * c));
                    }
                    _mm_storel_epi64((__m128i *)(yo + ch), avg8(s, cnt));
                }
            }
        }
    }
}

void efc_k_qgavgpool__avx2(int32_t n, int32_t hw, int32_t c, const uint8_t *x, uint8_t *y)
{
    if (hw <= 0 || hw > AVG_FLOAT_MAX_CNT || c < 8) {
        efc_k_qgavgpool__ref(n, hw, c, x, y);
        return;
    }
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *xi = x + (size_t)i * hw * c;
        uint8_t *yi = y + (size_t)i * c;
        for (int32_t cb = 0; cb < c; cb += 16) {
            if (cb + 16 <= c) {
                __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
                const uint8_t *xp = xi + cb;
                for (int32_t j = 0; j < hw; j++, xp += c) {
                    s0 = _mm256_add_epi32(s0, load8_u8(xp));
                    s1 = _mm256_add_epi32(s1, load8_u8(xp + 8));
                }
                _mm_storel_epi64((__m128i *)(yi + cb), avg8(s0, hw));
                _mm_storel_epi64((__m128i *)(yi + cb + 8), avg8(s1, hw));
            } else {
                for (int32_t ob = cb; ob < c; ob += 8) {
                    int32_t ch = ob + 8 <= c ? ob : c - 8; /* last block overlaps */
                    __m256i s = _mm256_setzero_si256();
                    const uint8_t *xp = xi + ch;
                    for (int32_t j = 0; j < hw; j++, xp += c)
                        s = _mm256_add_epi32(s, load8_u8(xp));
                    _mm_storel_epi64((__m128i *)(yi + ch), avg8(s, hw));
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------- qadd */

void efc_k_qadd__avx2(size_t n, const uint8_t *a, const uint8_t *b,
                      const struct efc_qadd_params *p, uint8_t *y)
{
    const __m256i zp_ab = _mm256_set1_epi32((int32_t)(((uint32_t)p->zp_b << 16) |
                                                      ((uint32_t)p->zp_a & 0xFFFFu)));
    const __m256i m_ab = _mm256_set1_epi32((int32_t)(((uint32_t)p->m_b << 16) |
                                                     ((uint32_t)p->m_a & 0xFFFFu)));
    const __m256i mult = _mm256_set1_epi32(p->mult);
    const __m256i shift = _mm256_set1_epi64x(p->shift);
    const __m256i rnd = _mm256_set1_epi64x((int64_t)1 << (p->shift - 1));
    const __m256i lo_zp = _mm256_set1_epi32(p->lo - p->zp_y);
    const __m256i hi_zp = _mm256_set1_epi32(p->hi - p->zp_y);
    const __m256i zp = _mm256_set1_epi32(p->zp_y);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i va = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i vb = _mm_loadu_si128((const __m128i *)(b + i));
        __m256i d0 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(va, vb)), zp_ab);
        __m256i d1 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(va, vb)), zp_ab);
        __m256i acc[2] = {_mm256_madd_epi16(d0, m_ab), _mm256_madd_epi16(d1, m_ab)};
        __m256i r[2];
        for (int k = 0; k < 2; k++) {
            __m256i pe = _mm256_mul_epi32(acc[k], mult);
            __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(acc[k], 32), mult);
            pe = sra64(_mm256_add_epi64(pe, rnd), shift);
            po = sra64(_mm256_add_epi64(po, rnd), shift);
            r[k] = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
            r[k] = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(r[k], lo_zp), hi_zp), zp);
        }
        /* r0 = elements 0..7, r1 = 8..15 */
        __m256i w = _mm256_packs_epi32(r[0], r[1]); /* 0-3 8-11 | 4-7 12-15 */
        w = _mm256_permute4x64_epi64(w, 0xD8);      /* 0-3 4-7 | 8-11 12-15 */
        __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(w),
                                         _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128((__m128i *)(y + i), bytes);
    }
    if (i < n)
        efc_k_qadd__ref(n - i, a + i, b + i, p, y + i);
}

/* ------------------------------------------------------------------- quantise / dequantise */

void efc_k_quantize__avx2(size_t n, const float *x, float inv_scale, int32_t zp, uint8_t *y)
{
    const __m256 vs = _mm256_set1_ps(inv_scale);
    const __m256 lo = _mm256_set1_ps(-1024.0f), hi = _mm256_set1_ps(1024.0f);
    const __m256i vzp = _mm256_set1_epi32(zp);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(x + i), vs);
        __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vs);
        /* vmaxps returns its second operand when either is NaN: NaN -> -1024 -> 0 */
        v0 = _mm256_min_ps(_mm256_max_ps(v0, lo), hi);
        v1 = _mm256_min_ps(_mm256_max_ps(v1, lo), hi);
        __m256i q0 = _mm256_add_epi32(_mm256_cvtps_epi32(v0), vzp);
        __m256i q1 = _mm256_add_epi32(_mm256_cvtps_epi32(v1), vzp);
        __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
        _mm_storeu_si128((__m128i *)(y + i), _mm_packus_epi16(_mm256_castsi256_si128(w),
                                                              _mm256_extracti128_si256(w, 1)));
    }
    if (i < n)
        efc_k_quantize__ref(n - i, x + i, inv_scale, zp, y + i);
}

void efc_k_dequantize__avx2(size_t n, const uint8_t *x, float scale, int32_t zp, float *y)
{
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256i vzp = _mm256_set1_epi32(zp);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i q = _mm256_sub_epi32(load8_u8(x + i), vzp);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(q), vs));
    }
    if (i < n)
        efc_k_dequantize__ref(n - i, x + i, scale, zp, y + i);
}
