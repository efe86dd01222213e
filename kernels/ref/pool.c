/* pool.c — max / average / global-average pooling (NCHW).
 * Padding is implicit: top/left from the geometry, bottom/right implied by oh/ow. Max never
 * sees padding (a window entirely in padding yields 0). Average divides by the window clipped
 * to the padded extent when count_include_pad, else by the in-image part (PyTorch). */
#include "kernels/kernels.h"

static int32_t imax(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static int32_t imin(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

void efc_k_maxpool2d_f32(const struct efc_pool_geom *g, const float *x, float *y)
{
    const size_t hw = (size_t)g->h * g->w;
    const size_t ohw = (size_t)g->oh * g->ow;
    for (size_t nc = 0; nc < (size_t)g->n * g->c; nc++) {
        const float *xc = x + nc * hw;
        float *yc = y + nc * ohw;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            int32_t y0 = oy * g->sh - g->pt;
            int32_t ya = imax(y0, 0), yb = imin(y0 + g->kh, g->h);
            for (int32_t ox = 0; ox < g->ow; ox++) {
                int32_t x0 = ox * g->sw - g->pl;
                int32_t xa = imax(x0, 0), xb = imin(x0 + g->kw, g->w);
                float m = 0.0f;
                int first = 1;
                for (int32_t iy = ya; iy < yb; iy++) {
                    for (int32_t ix = xa; ix < xb; ix++) {
                        float v = xc[(size_t)iy * g->w + ix];
                        if (first || v > m)
                            m = v;
                        first = 0;
                    }
                }
                yc[(size_t)oy * g->ow + ox] = m;
            }
        }
    }
}

void efc_k_avgpool2d_f32(const struct efc_pool_geom *g, const float *x, float *y)
{
    const size_t hw = (size_t)g->h * g->w;
    const size_t ohw = (size_t)g->oh * g->ow;
    /* Padded extent: [-pt, h + pb) x [-pl, w + pr). */
    const int32_t pb = imax(0, (g->oh - 1) * g->sh + g->kh - g->pt - g->h);
    const int32_t pr = imax(0, (g->ow - 1) * g->sw + g->kw - g->pl - g->w);
    for (size_t nc = 0; nc < (size_t)g->n * g->c; nc++) {
        const float *xc = x + nc * hw;
        float *yc = y + nc * ohw;
        for (int32_t oy = 0; oy < g->oh; oy++) {
            int32_t y0 = oy * g->sh - g->pt;
            int32_t ya = imax(y0, 0), yb = imin(y0 + g->kh, g->h);
            int32_t py = imin(y0 + g->kh, g->h + pb) - imax(y0, -g->pt);
            for (int32_t ox = 0; ox < g->ow; ox++) {
                int32_t x0 = ox * g->sw - g->pl;
                int32_t xa = imax(x0, 0), xb = imin(x0 + g->kw, g->w);
                int32_t px = imin(x0 + g->kw, g->w + pr) - imax(x0, -g->pl);
                float s = 0.0f;
                for (int32_t iy = ya; iy < yb; iy++)
                    for (int32_t ix = xa; ix < xb; ix++)
                        s += xc[(size_t)iy * g->w + ix];
                int32_t cnt = g->count_include_pad ? py * px : imax(0, yb - ya) * imax(0, xb - xa);
                yc[(size_t)oy * g->ow + ox] = cnt > 0 ? s / (float)cnt : 0.0f;
            }
        }
    }
}

void efc_k_gavgpool_f32(int32_t n, int32_t c, int32_t hw, const float *x, float *y)
{
    for (size_t i = 0; i < (size_t)n * c; i++) {
        const float *xc = x + i * (size_t)hw;
        double s = 0.0;
        for (int32_t j = 0; j < hw; j++)
            s += xc[j];
        y[i] = hw > 0 ? (float)(s / hw) : 0.0f;
    }
}
