/* qops.c — INT8 ops other than the GEMM, reference definitions (docs/kernels-int8-ops.md).
 *
 * These are the definitions every SIMD variant is tested against bit for bit: plain loops,
 * one output value at a time, written to be read. Layout is NHWC uint8 (asymmetric, real =
 * s * (q - zp)). Integer arithmetic throughout except quantize / dequantize, which use one
 * fp32 multiply and nothing that could be contracted into an FMA.
 */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/qops.h"

#define EFC_KERNEL(op, isa, fn) extern EFC_KERNEL_TYPE(op) fn;
#include "kernels/kernels.inc"
#undef EFC_KERNEL

static int32_t imax(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static int32_t imin(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

/* Row p = oy * ow + ox of one image: for ky, kx, c: x[iy][ix][c] or pad outside the image. */
void efc_k_im2row_u8__ref(const struct efc_conv_geom *g, const uint8_t *x, uint8_t pad,
                          int32_t p0, int32_t np, uint8_t *out, size_t ldo)
{
    for (int32_t p = p0; p < p0 + np; p++) {
        int32_t oy = p / g->ow, ox = p % g->ow;
        uint8_t *o = out + (size_t)(p - p0) * ldo;
        for (int32_t ky = 0; ky < g->kh; ky++) {
            int32_t iy = oy * g->sh - g->pt + ky;
            for (int32_t kx = 0; kx < g->kw; kx++) {
                int32_t ix = ox * g->sw - g->pl + kx;
                for (int32_t c = 0; c < g->c; c++) {
                    int inside = iy >= 0 && iy < g->h && ix >= 0 && ix < g->w;
                    *o++ = inside ? x[((size_t)iy * g->w + ix) * g->c + c] : pad;
                }
            }
        }
    }
}

/* acc[o] = bias[o] + sum over in-image taps of (x[iy][ix][o / mult] - zp_x) * w[ky][kx][o],
 * y = efc_k_requant__ref(acc, ...) with channel o's (or the per-tensor) multiplier. bias may be
 * NULL (0). All g->n images. */
void efc_k_qdwconv__ref(const struct efc_conv_geom *g, const uint8_t *x, int32_t zp_x,
                        const int8_t *w, const int32_t *bias, const struct efc_requant *rq,
                        uint8_t *y)
{
    const int32_t mult = g->oc / g->c;
    for (int32_t n = 0; n < g->n; n++) {
        const uint8_t *xi = x + (size_t)n * g->h * g->w * g->c;
        uint8_t *yi = y + (size_t)n * g->oh * g->ow * g->oc;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            for (int32_t ox = 0; ox < g->ow; ox++) {
                uint8_t *yo = yi + ((size_t)oy * g->ow + ox) * g->oc;
                for (int32_t o = 0; o < g->oc; o++) {
                    int32_t acc = bias ? bias[o] : 0;
                    for (int32_t ky = 0; ky < g->kh; ky++) {
                        int32_t iy = oy * g->sh - g->pt + ky;
                        if (iy < 0 || iy >= g->h)
                            continue;
                        for (int32_t kx = 0; kx < g->kw; kx++) {
                            int32_t ix = ox * g->sw - g->pl + kx;
                            if (ix < 0 || ix >= g->w)
                                continue;
                            int32_t xv = xi[((size_t)iy * g->w + ix) * g->c + o / mult];
                            acc += (xv - zp_x) * w[((size_t)ky * g->kw + kx) * g->oc + o];
                        }
                    }
                    int32_t k = rq->per_tensor ? 0 : o;
                    yo[o] = efc_k_requant__ref(acc, rq->mult[k], rq->shift[k], rq->zp_out,
                                               rq->lo, rq->hi);
                }
            }
        }
    }
}

/* Max over the in-image cells of the window; a window with none gives 0. */
void efc_k_qmaxpool__ref(const struct efc_pool_geom *g, const uint8_t *x, uint8_t *y)
{
    for (int32_t n = 0; n < g->n; n++) {
        const uint8_t *xi = x + (size_t)n * g->h * g->w * g->c;
        uint8_t *yi = y + (size_t)n * g->oh * g->ow * g->c;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            int32_t y0 = oy * g->sh - g->pt;
            int32_t ya = imax(y0, 0), yb = imin(y0 + g->kh, g->h);
            for (int32_t ox = 0; ox < g->ow; ox++) {
                int32_t x0 = ox * g->sw - g->pl;
                int32_t xa = imax(x0, 0), xb = imin(x0 + g->kw, g->w);
                for (int32_t c = 0; c < g->c; c++) {
                    uint8_t m = 0;
                    for (int32_t iy = ya; iy < yb; iy++)
                        for (int32_t ix = xa; ix < xb; ix++) {
                            uint8_t v = xi[((size_t)iy * g->w + ix) * g->c + c];
                            m = v > m ? v : m;
                        }
                    yi[((size_t)oy * g->ow + ox) * g->c + c] = m;
                }
            }
        }
    }
}

/* Window divisor of the avgpool at (oy, ox) (f32 avgpool's rule: with count_include_pad, the
 * window clipped to the padded extent [-pt, h + pb) x [-pl, w + pr), else to the image). */
static int32_t avg_count(const struct efc_pool_geom *g, int32_t oy, int32_t ox)
{
    int32_t y0 = oy * g->sh - g->pt, x0 = ox * g->sw - g->pl;
    if (g->count_include_pad) {
        int32_t pb = imax(0, (g->oh - 1) * g->sh + g->kh - g->pt - g->h);
        int32_t pr = imax(0, (g->ow - 1) * g->sw + g->kw - g->pl - g->w);
        int32_t py = imin(y0 + g->kh, g->h + pb) - imax(y0, -g->pt);
        int32_t px = imin(x0 + g->kw, g->w + pr) - imax(x0, -g->pl);
        return py * px;
    }
    return imax(0, imin(y0 + g->kh, g->h) - imax(y0, 0)) *
           imax(0, imin(x0 + g->kw, g->w) - imax(x0, 0));
}

/* y = (2 * sum + cnt) / (2 * cnt) (round half up), sum over the in-image cells plus, with
 * count_include_pad, g->zp for each counted padding cell; cnt 0 gives 0. */
void efc_k_qavgpool__ref(const struct efc_pool_geom *g, const uint8_t *x, uint8_t *y)
{
    for (int32_t n = 0; n < g->n; n++) {
        const uint8_t *xi = x + (size_t)n * g->h * g->w * g->c;
        uint8_t *yi = y + (size_t)n * g->oh * g->ow * g->c;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            int32_t y0 = oy * g->sh - g->pt;
            int32_t ya = imax(y0, 0), yb = imin(y0 + g->kh, g->h);
            for (int32_t ox = 0; ox < g->ow; ox++) {
                int32_t x0 = ox * g->sw - g->pl;
                int32_t xa = imax(x0, 0), xb = imin(x0 + g->kw, g->w);
                int32_t cnt = avg_count(g, oy, ox);
                int32_t inside = imax(0, yb - ya) * imax(0, xb - xa);
                for (int32_t c = 0; c < g->c; c++) {
                    int64_t s = 0;
                    for (int32_t iy = ya; iy < yb; iy++)
                        for (int32_t ix = xa; ix < xb; ix++)
                            s += xi[((size_t)iy * g->w + ix) * g->c + c];
                    if (g->count_include_pad)
                        s += (int64_t)(cnt - inside) * g->zp;
                    yi[((size_t)oy * g->ow + ox) * g->c + c] =
                        cnt > 0 ? (uint8_t)((2 * s + cnt) / (2 * (int64_t)cnt)) : 0;
                }
            }
        }
    }
}

/* y[n][c] = (2 * sum_hw x[n][hw][c] + hw) / (2 * hw); hw 0 gives 0. */
void efc_k_qgavgpool__ref(int32_t n, int32_t hw, int32_t c, const uint8_t *x, uint8_t *y)
{
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *xi = x + (size_t)i * hw * c;
        for (int32_t ch = 0; ch < c; ch++) {
            int64_t s = 0;
            for (int32_t j = 0; j < hw; j++)
                s += xi[(size_t)j * c + ch];
            y[(size_t)i * c + ch] = hw > 0 ? (uint8_t)((2 * s + hw) / (2 * (int64_t)hw)) : 0;
        }
    }
}

/* acc = (a - zp_a) * m_a + (b - zp_b) * m_b (|acc| < 2^24 for m < 2^15, exact in int32),
 * y = efc_k_requant__ref(acc, mult, shift, zp_y, lo, hi). */
void efc_k_qadd__ref(size_t n, const uint8_t *a, const uint8_t *b,
                     const struct efc_qadd_params *p, uint8_t *y)
{
    for (size_t i = 0; i < n; i++) {
        int32_t acc = ((int32_t)a[i] - p->zp_a) * p->m_a + ((int32_t)b[i] - p->zp_b) * p->m_b;
        y[i] = efc_k_requant__ref(acc, p->mult, p->shift, p->zp_y, p->lo, p->hi);
    }
}

/* q = clamp(rne(x * inv_scale) + zp, 0, 255), NaN -> 0. The product is clamped to
 * [-1024, 1024] before rounding (same result for zp in 0..255, and keeps lrintf in range);
 * lrintf rounds in the current mode (round to nearest even by default). */
void efc_k_quantize__ref(size_t n, const float *x, float inv_scale, int32_t zp, uint8_t *y)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i] * inv_scale;
        if (isnan(v)) {
            y[i] = 0;
            continue;
        }
        v = v < -1024.0f ? -1024.0f : v > 1024.0f ? 1024.0f : v;
        int32_t q = (int32_t)lrintf(v) + zp;
        y[i] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
    }
}

/* y = (float)(q - zp) * scale: exact conversion, one rounding. */
void efc_k_dequantize__ref(size_t n, const uint8_t *x, float scale, int32_t zp, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = (float)((int32_t)x[i] - zp) * scale;
}

enum efc_status efc_k_qadd_params_make(float s_a, int32_t zp_a, float s_b, int32_t zp_b,
                                       float s_y, int32_t zp_y, int32_t lo, int32_t hi,
                                       struct efc_qadd_params *p)
{
    struct efc_qadd_params q;
    double s_max, r;
    enum efc_status st;

    if (!(isfinite(s_a) && s_a > 0.0f && isfinite(s_b) && s_b > 0.0f && isfinite(s_y) &&
          s_y > 0.0f))
        return efc_errf(EFC_EINVAL, "qadd: scales must be finite and > 0 (a %g, b %g, y %g)",
                        (double)s_a, (double)s_b, (double)s_y);
    if (zp_a < 0 || zp_a > 255 || zp_b < 0 || zp_b > 255 || zp_y < 0 || zp_y > 255)
        return efc_errf(EFC_EINVAL, "qadd: zero points %d, %d, %d outside 0..255", (int)zp_a,
                        (int)zp_b, (int)zp_y);
    if (lo < 0 || lo > hi || hi > 255)
        return efc_errf(EFC_EINVAL, "qadd: clamp [%d, %d] outside 0..255", (int)lo, (int)hi);
    s_max = s_a > s_b ? (double)s_a : (double)s_b;
    q.m_a = (int32_t)lround((double)s_a / s_max * (1 << EFC_QADD_MBITS));
    q.m_b = (int32_t)lround((double)s_b / s_max * (1 << EFC_QADD_MBITS));
    r = s_max / ((double)(1 << EFC_QADD_MBITS) * (double)s_y);
    if (r >= 1.0)
        return efc_errf(EFC_EINVAL, "qadd: output scale %g too small for inputs %g, %g "
                        "(needs s_y > max / 2^%d)", (double)s_y, (double)s_a, (double)s_b,
                        EFC_QADD_MBITS);
    st = efc_k_requant_make(r, &q.mult, &q.shift);
    if (st != EFC_OK)
        return st;
    q.zp_a = zp_a;
    q.zp_b = zp_b;
    q.zp_y = zp_y;
    q.lo = lo;
    q.hi = hi;
    *p = q;
    return EFC_OK;
}
