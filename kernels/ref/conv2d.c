/* conv2d.c — FP32 convolution (NCHW), im2col and its adjoint col2im.
 *
 * Paths (chosen from the geometry alone, so the scratch size is a function of it):
 *   1x1, stride 1, no padding, groups 1: x[i] already is the [c x H*W] matrix: one sgemm per
 *     image, straight into y.
 *   groups 1: im2col over a chunk of nc images -> col[K x nc*P], one sgemm
 *     W[oc x K] * col -> tmp[oc x nc*P], bias+act on tmp, scatter the rows into y (NCHW).
 *     With nc == 1 the sgemm writes into y directly. Batching images widens N, which is what
 *     keeps OpenBLAS efficient on small-P layers (lenet5 conv2: P = 100).
 *   depthwise (groups == c > 1, oc = c * mult): direct loops (K = kh*kw is too small to feed
 *     a GEMM; PyTorch's channel order: output o reads input channel o / mult).
 *   other groups: per image, per group im2col + sgemm into y.
 * Bias and activation go through the dispatched table (efc_kernels()->bias_act_f32).
 */
#include <string.h>

#include "kernels/blas.h"
#include "kernels/kernels.h"

/* Target scratch per chunk: 512 KB = 128 Ki floats, half of one core's L2 (1 MB on Zen 4/5,
 * 2 MB on Sapphire Rapids), so the im2col tile and the GEMM output are still in L2 when the
 * sgemm and the scatter read them. bench_conv on Zen 5 (lenet5/cnn-bn conv1, batch 64):
 * 0.36-0.38 ms at 512 KB vs 0.58-0.69 ms at 8 MB. Always >= 1 image. */
#define CONV_SCRATCH_FLOATS ((size_t)128 * 1024)

enum conv_path { PATH_1X1, PATH_GEMM, PATH_DEPTHWISE, PATH_GROUPED };

static enum conv_path conv_path(const struct efc_conv_geom *g)
{
    if (g->groups == 1) {
        if (g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 &&
            g->oh == g->h && g->ow == g->w)
            return PATH_1X1;
        return PATH_GEMM;
    }
    if (g->groups == g->c && g->oc % g->c == 0)
        return PATH_DEPTHWISE;
    return PATH_GROUPED;
}

/* Images per im2col chunk (groups == 1 path); monotone in g->n. */
static int32_t conv_chunk(const struct efc_conv_geom *g)
{
    size_t k = (size_t)g->c * g->kh * g->kw;
    size_t p = (size_t)g->oh * g->ow;
    size_t per = (k + (size_t)g->oc) * p;
    size_t nc = per > 0 ? CONV_SCRATCH_FLOATS / per : (size_t)g->n;
    if (nc > (size_t)g->n)
        nc = (size_t)g->n;
    if (nc < 1)
        nc = 1;
    return (int32_t)nc;
}

size_t efc_k_conv2d_f32_scratch(const struct efc_conv_geom *g)
{
    size_t p = (size_t)g->oh * g->ow;
    switch (conv_path(g)) {
    case PATH_1X1:
    case PATH_DEPTHWISE:
        return 0;
    case PATH_GROUPED:
        return (size_t)(g->c / g->groups) * g->kh * g->kw * p;
    case PATH_GEMM:
        break;
    }
    size_t k = (size_t)g->c * g->kh * g->kw;
    size_t nc = (size_t)conv_chunk(g);
    return nc == 1 ? k * p : nc * (k + (size_t)g->oc) * p;
}

/* Bias + activation on n_ch channel rows of len floats each (row o gets b[o]). */
static void epilogue(float *rows, int32_t n_ch, size_t len, const float *b, enum efc_k_act act)
{
    const struct efc_kernel_table *t = efc_kernels();
    for (int32_t o = 0; o < n_ch; o++) {
        float *r = rows + (size_t)o * len;
        if (b != NULL)
            t->bias_act_f32(len, 1, r, b + o, act);
        else if (act == EFC_K_ACT_RELU)
            t->relu_f32(len, r, r);
        else if (act == EFC_K_ACT_RELU6)
            t->relu6_f32(len, r, r);
    }
}

/* Output columns ox whose input column ox*sw - pl + kx lies in [0, w): [*lo, *hi). */
static void valid_range(int32_t out, int32_t in, int32_t s, int32_t pad, int32_t k, int32_t *lo,
                        int32_t *hi)
{
    int32_t off = pad - k; /* ix = o*s - off */
    int32_t a = off > 0 ? (off + s - 1) / s : 0;
    int32_t last = in - 1 + off; /* largest o*s allowed */
    int32_t b = last >= 0 ? last / s + 1 : 0;
    if (b > out)
        b = out;
    if (a > b)
        a = b;
    *lo = a;
    *hi = b;
}

void efc_k_im2col_f32(const struct efc_conv_geom *g, const float *x, int32_t i0, int32_t nc,
                      int32_t grp, float *col)
{
    const int32_t cg = g->c / g->groups;
    const size_t p = (size_t)g->oh * g->ow;
    const size_t ncols = (size_t)nc * p;
    const size_t hw = (size_t)g->h * g->w;
    for (int32_t cl = 0; cl < cg; cl++) {
        const int32_t ci = grp * cg + cl;
        for (int32_t ky = 0; ky < g->kh; ky++) {
            for (int32_t kx = 0; kx < g->kw; kx++) {
                float *row = col + ((size_t)(cl * g->kh + ky) * g->kw + kx) * ncols;
                int32_t ox0, ox1;
                valid_range(g->ow, g->w, g->sw, g->pl, kx, &ox0, &ox1);
                for (int32_t img = 0; img < nc; img++) {
                    const float *xc = x + ((size_t)(i0 + img) * g->c + ci) * hw;
                    float *dst = row + (size_t)img * p;
                    for (int32_t oy = 0; oy < g->oh; oy++) {
                        float *d = dst + (size_t)oy * g->ow;
                        int32_t iy = oy * g->sh - g->pt + ky;
                        if (iy < 0 || iy >= g->h) {
                            memset(d, 0, (size_t)g->ow * sizeof(*d));
                            continue;
                        }
                        const float *src = xc + (size_t)iy * g->w;
                        const int32_t xoff = kx - g->pl; /* ix = ox * sw + xoff */
                        /* Plain loops, not memcpy/memset: rows are short (ow = 10..28
                         * in lenet5/cnn-bn) and a libc call per row cost more than the
                         * copy (bench_conv lenet5 conv2). */
                        for (int32_t ox = 0; ox < ox0; ox++)
                            d[ox] = 0.0f;
                        if (g->sw == 1) {
                            const float *s1 = src + xoff;
                            for (int32_t ox = ox0; ox < ox1; ox++)
                                d[ox] = s1[ox];
                        } else {
                            for (int32_t ox = ox0; ox < ox1; ox++)
                                d[ox] = src[ox * g->sw + xoff];
                        }
                        for (int32_t ox = ox1; ox < g->ow; ox++)
                            d[ox] = 0.0f;
                    }
                }
            }
        }
    }
}

void efc_k_col2im_f32(const struct efc_conv_geom *g, const float *col, int32_t i0, int32_t nc,
                      int32_t grp, float *dx)
{
    const int32_t cg = g->c / g->groups;
    const size_t p = (size_t)g->oh * g->ow;
    const size_t ncols = (size_t)nc * p;
    const size_t hw = (size_t)g->h * g->w;
    for (int32_t cl = 0; cl < cg; cl++) {
        const int32_t ci = grp * cg + cl;
        for (int32_t ky = 0; ky < g->kh; ky++) {
            for (int32_t kx = 0; kx < g->kw; kx++) {
                const float *row = col + ((size_t)(cl * g->kh + ky) * g->kw + kx) * ncols;
                int32_t ox0, ox1;
                valid_range(g->ow, g->w, g->sw, g->pl, kx, &ox0, &ox1);
                for (int32_t img = 0; img < nc; img++) {
                    float *xc = dx + ((size_t)(i0 + img) * g->c + ci) * hw;
                    const float *s = row + (size_t)img * p;
                    for (int32_t oy = 0; oy < g->oh; oy++) {
                        int32_t iy = oy * g->sh - g->pt + ky;
                        if (iy < 0 || iy >= g->h)
                            continue;
                        const float *sr = s + (size_t)oy * g->ow;
                        float *dst = xc + (size_t)iy * g->w;
                        const int32_t xoff = kx - g->pl; /* ix = ox * sw + xoff */
                        for (int32_t ox = ox0; ox < ox1; ox++)
                            dst[ox * g->sw + xoff] += sr[ox];
                    }
                }
            }
        }
    }
}

static void conv_depthwise(const struct efc_conv_geom *g, const float *x, const float *w,
                           float *y)
{
    const int32_t mult = g->oc / g->c;
    const size_t hw = (size_t)g->h * g->w;
    const size_t p = (size_t)g->oh * g->ow;
    for (int32_t img = 0; img < g->n; img++) {
        for (int32_t o = 0; o < g->oc; o++) {
            const float *xc = x + ((size_t)img * g->c + o / mult) * hw;
            const float *wk = w + (size_t)o * g->kh * g->kw;
            float *yo = y + ((size_t)img * g->oc + o) * p;
            for (int32_t oy = 0; oy < g->oh; oy++) {
                int32_t iy0 = oy * g->sh - g->pt;
                int32_t ky0 = iy0 < 0 ? -iy0 : 0;
                int32_t ky1 = g->h - iy0 < g->kh ? g->h - iy0 : g->kh;
                for (int32_t ox = 0; ox < g->ow; ox++) {
                    int32_t ix0 = ox * g->sw - g->pl;
                    int32_t kx0 = ix0 < 0 ? -ix0 : 0;
                    int32_t kx1 = g->w - ix0 < g->kw ? g->w - ix0 : g->kw;
                    float s = 0.0f;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const float *xr = xc + (size_t)(iy0 + ky) * g->w + ix0;
                        const float *wr = wk + (size_t)ky * g->kw;
                        for (int32_t kx = kx0; kx < kx1; kx++)
                            s += xr[kx] * wr[kx];
                    }
                    yo[(size_t)oy * g->ow + ox] = s;
                }
            }
        }
    }
}

void efc_k_conv2d_f32(const struct efc_conv_geom *g, const float *x, const float *w,
                      const float *b, float *y, float *scratch, enum efc_k_act act)
{
    const size_t p = (size_t)g->oh * g->ow;
    const size_t hw = (size_t)g->h * g->w;
    switch (conv_path(g)) {
    case PATH_1X1:
        for (int32_t img = 0; img < g->n; img++) {
            float *yi = y + (size_t)img * g->oc * p;
            efc_k_sgemm(false, false, g->oc, (int)p, g->c, 1.0f, w, g->c,
                        x + (size_t)img * g->c * hw, (int)p, 0.0f, yi, (int)p);
            epilogue(yi, g->oc, p, b, act);
        }
        return;
    case PATH_DEPTHWISE:
        conv_depthwise(g, x, w, y);
        for (int32_t img = 0; img < g->n; img++)
            epilogue(y + (size_t)img * g->oc * p, g->oc, p, b, act);
        return;
    case PATH_GROUPED: {
        const int32_t ocg = g->oc / g->groups;
        const int32_t k = (g->c / g->groups) * g->kh * g->kw;
        for (int32_t img = 0; img < g->n; img++) {
            for (int32_t grp = 0; grp < g->groups; grp++) {
                float *yg = y + ((size_t)img * g->oc + (size_t)grp * ocg) * p;
                efc_k_im2col_f32(g, x, img, 1, grp, scratch);
                efc_k_sgemm(false, false, ocg, (int)p, k, 1.0f, w + (size_t)grp * ocg * k, k,
                            scratch, (int)p, 0.0f, yg, (int)p);
                epilogue(yg, ocg, p, b != NULL ? b + (size_t)grp * ocg : NULL, act);
            }
        }
        return;
    }
    case PATH_GEMM:
        break;
    }

    const int32_t k = g->c * g->kh * g->kw;
    const int32_t chunk = conv_chunk(g);
    for (int32_t i0 = 0; i0 < g->n; i0 += chunk) {
        const int32_t nc = g->n - i0 < chunk ? g->n - i0 : chunk;
        const size_t ncols = (size_t)nc * p;
        efc_k_im2col_f32(g, x, i0, nc, 0, scratch);
        if (nc == 1) {
            float *yi = y + (size_t)i0 * g->oc * p;
            efc_k_sgemm(false, false, g->oc, (int)p, k, 1.0f, w, k, scratch, (int)p, 0.0f, yi,
                        (int)p);
            epilogue(yi, g->oc, p, b, act);
            continue;
        }
        float *tmp = scratch + (size_t)k * ncols;
        efc_k_sgemm(false, false, g->oc, (int)ncols, k, 1.0f, w, k, scratch, (int)ncols, 0.0f,
                    tmp, (int)ncols);
        epilogue(tmp, g->oc, ncols, b, act);
        for (int32_t img = 0; img < nc; img++)
            for (int32_t o = 0; o < g->oc; o++)
                memcpy(y + ((size_t)(i0 + img) * g->oc + o) * p, tmp + (size_t)o * ncols +
                       (size_t)img * p, p * sizeof(*y));
    }
}
