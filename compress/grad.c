/* grad.c — the training graph: forward (train / eval mode), softmax cross-entropy and the
 * backward pass of every op. Conv2d goes through im2col over a chunk of images and one
 * sgemm per chunk (forward: Y_t = W * col; backward: dW += dY_t * col^T, dcol = W^T * dY_t,
 * col2im); depthwise convs use direct loops. The element-wise loops are written so GCC
 * vectorises them (contiguous inner loops with hoisted bounds).
 */
#if defined(__GNUC__) && !defined(__clang__)
/* -O2 in GCC 12 only vectorises loops with a known trip count; the inner loops here are
 * memory-bound element-wise loops of unknown length. */
#pragma GCC optimize("tree-vectorize")
#endif

#include "compress/grad.h"

#include <math.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "kernels/blas.h"
#include "kernels/kernels.h"
#include "model/geom.h"

/* Conv chunk: floats of im2col columns per chunk. 2 Mi floats (8 MiB) keeps col + dcol in
 * the 32 MiB L3 while giving sgemm an N of >= 2.6k columns for every built-in conv; measured
 * with bench_train (1 Mi: -4 %, 4 Mi: no gain). */
#define TG_COL_FLOATS (2u << 20)

struct tg_tensor {
    float *val;
    float *grad;
    size_t numel; /* per sample (activations) or total (parameters) */
    bool act;
    bool need_grad;
    bool grad_set;
    bool trainable;
};

struct tg_node {
    float *bn_mean;   /* batch mean per channel (training forward) */
    float *bn_invstd; /* 1 / sqrt(var + eps) */
    int32_t *argmax;  /* max pool: input offset within the plane per output, -1 if none */
    int32_t chunk;    /* conv: images per im2col chunk */
    bool depthwise;
};

struct efc_tg {
    struct efc_model *m;
    int32_t max_batch;
    struct tg_tensor *t;
    struct tg_node *nd;
    int32_t *params;
    int32_t n_params;
    float *scratch;
    int32_t logits;
    int32_t n_classes;
    float *probs;
    void **allocs;
    int32_t n_allocs, cap_allocs;
};

static void *tg_alloc(struct efc_tg *g, size_t bytes)
{
    if (g->n_allocs == g->cap_allocs) {
        int32_t cap = g->cap_allocs ? g->cap_allocs * 2 : 64;
        void **a = efc_realloc(g->allocs, (size_t)cap * sizeof(*a));
        if (!a)
            return NULL;
        g->allocs = a;
        g->cap_allocs = cap;
    }
    void *p = efc_malloc_aligned(64, bytes ? bytes : 64);
    if (!p)
        return NULL;
    g->allocs[g->n_allocs++] = p;
    return p;
}

/* ---------------------------------------------------------------------------------------- */
/* small helpers                                                                             */

static enum efc_k_act node_act(const struct efc_node *n)
{
    return n->a.act == EFC_ACT_RELU ? EFC_K_ACT_RELU
                                    : n->a.act == EFC_ACT_RELU6 ? EFC_K_ACT_RELU6 : EFC_K_ACT_NONE;
}

static void act_apply(float *y, size_t n, enum efc_k_act act)
{
    if (act == EFC_K_ACT_RELU) {
        for (size_t i = 0; i < n; i++)
            y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    } else if (act == EFC_K_ACT_RELU6) {
        for (size_t i = 0; i < n; i++) {
            float v = y[i] > 0.0f ? y[i] : 0.0f;
            y[i] = v < 6.0f ? v : 6.0f;
        }
    }
}

/* dy *= act'(y), y being the activated output (PyTorch: relu passes where y > 0, hardtanh
 * where 0 < y < 6). */
static void act_mask(float *dy, const float *y, size_t n, enum efc_k_act act)
{
    if (act == EFC_K_ACT_RELU) {
        for (size_t i = 0; i < n; i++)
            dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    } else if (act == EFC_K_ACT_RELU6) {
        for (size_t i = 0; i < n; i++)
            dy[i] = (y[i] > 0.0f && y[i] < 6.0f) ? dy[i] : 0.0f;
    }
}

/* Gradient buffer of tensor t for writing. *acc tells whether to add (already written by
 * another consumer) or overwrite; marks it written. */
static float *grad_out(struct efc_tg *g, int32_t t, bool *acc)
{
    struct tg_tensor *tt = &g->t[t];
    *acc = tt->grad_set;
    tt->grad_set = true;
    return tt->grad;
}

/* Gradient buffer of t zeroed on first use, for ops that only accumulate. */
static float *grad_zeroed(struct efc_tg *g, int32_t t, size_t n)
{
    struct tg_tensor *tt = &g->t[t];
    if (!tt->grad_set)
        memset(tt->grad, 0, n * sizeof(float));
    tt->grad_set = true;
    return tt->grad;
}

static bool wants_grad(const struct efc_tg *g, int32_t t)
{
    return t >= 0 && g->t[t].need_grad;
}

/* Sum of n floats with 8 partial sums (fast, deterministic). */
static float sum8(const float *x, size_t n)
{
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += x[i + k];
    float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; i++)
        r += x[i];
    return r;
}

static float dot8(const float *x, const float *y, size_t n)
{
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += x[i + k] * y[i + k];
    float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; i++)
        r += x[i] * y[i];
    return r;
}

/* ---------------------------------------------------------------------------------------- */
/* geometry                                                                                  */

/* Output index range [lo, hi) for which in = o * s - p + k lies in [0, size). */
static void valid_range(int32_t out, int32_t s, int32_t p, int32_t k, int32_t size, int32_t *lo,
                        int32_t *hi)
{
    int32_t a = p - k; /* need o * s >= a */
    int32_t l = a <= 0 ? 0 : (a + s - 1) / s;
    int32_t b = size - 1 + p - k; /* need o * s <= b */
    int32_t h = b < 0 ? 0 : b / s + 1;
    if (h > out)
        h = out;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* ---------------------------------------------------------------------------------------- */
/* Dense                                                                                     */

static void dense_fwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    const struct tg_tensor *x = &g->t[n->inputs[0]];
    const struct tg_tensor *y = &g->t[n->output];
    const float *b = n->n_inputs > 2 && n->inputs[2] >= 0 ? g->t[n->inputs[2]].val : NULL;
    efc_k_dense_f32(batch, (int32_t)x->numel, (int32_t)y->numel, x->val, g->t[n->inputs[1]].val,
                    b, y->val, node_act(n));
}

static void dense_bwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    struct tg_tensor *x = &g->t[n->inputs[0]];
    struct tg_tensor *y = &g->t[n->output];
    int32_t iw = n->inputs[1];
    int32_t ib = n->n_inputs > 2 ? n->inputs[2] : -1;
    const float *w = g->t[iw].val;
    int32_t in = (int32_t)x->numel, out = (int32_t)y->numel;
    float *dy = y->grad;
    bool acc;
    act_mask(dy, y->val, (size_t)batch * out, node_act(n));
    if (wants_grad(g, iw)) {
        float *dw = grad_out(g, iw, &acc);
        efc_k_sgemm(true, false, out, in, batch, 1.0f, dy, out, x->val, in, acc ? 1.0f : 0.0f,
                    dw, in);
    }
    if (wants_grad(g, ib)) {
        float *db = grad_zeroed(g, ib, (size_t)out);
        for (int32_t i = 0; i < batch; i++) {
            const float *r = dy + (size_t)i * out;
            for (int32_t j = 0; j < out; j++)
                db[j] += r[j];
        }
    }
    if (x->need_grad) {
        float *dx = grad_out(g, n->inputs[0], &acc);
        efc_k_sgemm(false, false, batch, in, out, 1.0f, dy, out, w, in, acc ? 1.0f : 0.0f, dx,
                    in);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Conv2d, im2col path (groups with more than one input channel per group)                   */

/* Forward of every conv (im2col, depthwise or grouped) is the inference kernel's. */
static void conv_fwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    struct efc_conv_geom cg;
    efc_node_conv_geom(g->m, n, batch, &cg);
    const float *b = (n->n_inputs > 2 && n->inputs[2] >= 0) ? g->t[n->inputs[2]].val : NULL;
    efc_k_conv2d_f32(&cg, g->t[n->inputs[0]].val, g->t[n->inputs[1]].val, b,
                     g->t[n->output].val, g->scratch, node_act(n));
}

static void conv_bwd_gemm(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    struct efc_conv_geom cg;
    efc_node_conv_geom(g->m, n, batch, &cg);
    int32_t ix = n->inputs[0], iw = n->inputs[1];
    int32_t ib = n->n_inputs > 2 ? n->inputs[2] : -1;
    const float *x = g->t[ix].val;
    const float *w = g->t[iw].val;
    struct tg_tensor *y = &g->t[n->output];
    int32_t cpg = cg.c / cg.groups, ocg = cg.oc / cg.groups;
    int32_t K = cpg * cg.kh * cg.kw;
    int32_t P = cg.oh * cg.ow;
    int32_t chunk = g->nd[n - g->m->nodes].chunk;
    float *col = g->scratch;
    float *dyt = col + (size_t)K * chunk * P;
    float *dcol = dyt + (size_t)ocg * chunk * P;
    float *dy = y->grad;
    bool need_w = wants_grad(g, iw), need_b = wants_grad(g, ib), need_x = wants_grad(g, ix);
    act_mask(dy, y->val, (size_t)batch * cg.oc * P, node_act(n));

    float *dw = NULL, *db = NULL, *dx = NULL;
    bool w_acc = false;
    if (need_w)
        dw = grad_out(g, iw, &w_acc);
    if (need_b)
        db = grad_zeroed(g, ib, (size_t)cg.oc);
    if (need_x)
        dx = grad_zeroed(g, ix, (size_t)batch * g->t[ix].numel);

    for (int32_t i0 = 0; i0 < batch; i0 += chunk) {
        int32_t nc = batch - i0 < chunk ? batch - i0 : chunk;
        int32_t np = nc * P;
        for (int32_t grp = 0; grp < cg.groups; grp++) {
            for (int32_t o = 0; o < ocg; o++) {
                int32_t oc = grp * ocg + o;
                float *dst = dyt + (size_t)o * np;
                for (int32_t i = 0; i < nc; i++)
                    memcpy(dst + (size_t)i * P, dy + ((size_t)(i0 + i) * cg.oc + oc) * P,
                           (size_t)P * sizeof(float));
                if (db)
                    db[oc] += sum8(dst, (size_t)np);
            }
            if (dw) {
                efc_k_im2col_f32(&cg, x, i0, nc, grp, col);
                float beta = (i0 == 0 && !w_acc) ? 0.0f : 1.0f;
                efc_k_sgemm(false, true, ocg, K, np, 1.0f, dyt, np, col, np, beta,
                            dw + (size_t)grp * ocg * K, K);
            }
            if (dx) {
                efc_k_sgemm(true, false, K, np, ocg, 1.0f, w + (size_t)grp * ocg * K, K, dyt, np,
                            0.0f, dcol, np);
                efc_k_col2im_f32(&cg, dcol, i0, nc, grp, dx);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Conv2d, depthwise (one input channel per group): direct loops                            */


static void conv_bwd_dw(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    struct efc_conv_geom cg;
    efc_node_conv_geom(g->m, n, batch, &cg);
    int32_t ix = n->inputs[0], iw = n->inputs[1];
    int32_t ib = n->n_inputs > 2 ? n->inputs[2] : -1;
    const float *x = g->t[ix].val;
    const float *w = g->t[iw].val;
    struct tg_tensor *y = &g->t[n->output];
    int32_t ocg = cg.oc / cg.groups, P = cg.oh * cg.ow, HW = cg.h * cg.w;
    int32_t KK = cg.kh * cg.kw;
    float *dy = y->grad;
    act_mask(dy, y->val, (size_t)batch * cg.oc * P, node_act(n));
    float *dw = wants_grad(g, iw) ? grad_zeroed(g, iw, g->t[iw].numel) : NULL;
    float *db = wants_grad(g, ib) ? grad_zeroed(g, ib, (size_t)cg.oc) : NULL;
    float *dx = wants_grad(g, ix) ? grad_zeroed(g, ix, (size_t)batch * g->t[ix].numel) : NULL;
    for (int32_t i = 0; i < batch; i++) {
        for (int32_t oc = 0; oc < cg.oc; oc++) {
            size_t xoff = ((size_t)i * cg.c + oc / ocg) * HW;
            const float *dyp = dy + ((size_t)i * cg.oc + oc) * P;
            if (db)
                db[oc] += sum8(dyp, (size_t)P);
            for (int32_t ky = 0; ky < cg.kh; ky++) {
                int32_t oy0, oy1;
                valid_range(cg.oh, cg.sh, cg.pt, ky, cg.h, &oy0, &oy1);
                for (int32_t kx = 0; kx < cg.kw; kx++) {
                    int32_t ox0, ox1;
                    valid_range(cg.ow, cg.sw, cg.pl, kx, cg.w, &ox0, &ox1);
                    float wv = w[(size_t)oc * KK + ky * cg.kw + kx];
                    float s = 0.0f;
                    for (int32_t oy = oy0; oy < oy1; oy++) {
                        size_t ro = (size_t)(oy * cg.sh - cg.pt + ky) * cg.w + (kx - cg.pl);
                        const float *dyr = dyp + (size_t)oy * cg.ow;
                        if (dw) {
                            const float *xr = x + xoff + ro;
                            if (cg.sw == 1)
                                s += dot8(xr + ox0, dyr + ox0, (size_t)(ox1 - ox0));
                            else
                                for (int32_t ox = ox0; ox < ox1; ox++)
                                    s += xr[ox * cg.sw] * dyr[ox];
                        }
                        if (dx) {
                            float *dxr = dx + xoff + ro;
                            if (cg.sw == 1) {
                                for (int32_t ox = ox0; ox < ox1; ox++)
                                    dxr[ox] += wv * dyr[ox];
                            } else {
                                for (int32_t ox = ox0; ox < ox1; ox++)
                                    dxr[ox * cg.sw] += wv * dyr[ox];
                            }
                        }
                    }
                    if (dw)
                        dw[(size_t)oc * KK + ky * cg.kw + kx] += s;
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Element-wise ops                                                                          */

static void relu_fwd(struct efc_tg *g, const struct efc_node *n, int32_t batch, bool six)
{
    const struct tg_tensor *x = &g->t[n->inputs[0]];
    size_t cnt = (size_t)batch * x->numel;
    if (six)
        efc_kernels()->relu6_f32(cnt, x->val, g->t[n->output].val);
    else
        efc_kernels()->relu_f32(cnt, x->val, g->t[n->output].val);
}

static void relu_bwd(struct efc_tg *g, const struct efc_node *n, int32_t batch, bool six)
{
    int32_t ix = n->inputs[0];
    if (!wants_grad(g, ix))
        return;
    const struct tg_tensor *y = &g->t[n->output];
    size_t cnt = (size_t)batch * y->numel;
    bool acc;
    float *dx = grad_out(g, ix, &acc);
    const float *dy = y->grad, *yv = y->val;
    if (six) {
        for (size_t i = 0; i < cnt; i++) {
            float d = (yv[i] > 0.0f && yv[i] < 6.0f) ? dy[i] : 0.0f;
            dx[i] = acc ? dx[i] + d : d;
        }
    } else if (acc) {
        for (size_t i = 0; i < cnt; i++)
            dx[i] += yv[i] > 0.0f ? dy[i] : 0.0f;
    } else {
        for (size_t i = 0; i < cnt; i++)
            dx[i] = yv[i] > 0.0f ? dy[i] : 0.0f;
    }
}

static void copy_grad(struct efc_tg *g, int32_t t, const float *src, size_t cnt)
{
    bool acc;
    float *dx = grad_out(g, t, &acc);
    if (acc) {
        for (size_t i = 0; i < cnt; i++)
            dx[i] += src[i];
    } else {
        memcpy(dx, src, cnt * sizeof(float));
    }
}

static void add_fwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    size_t cnt = (size_t)batch * g->t[n->output].numel;
    efc_kernels()->add_f32(cnt, g->t[n->inputs[0]].val, g->t[n->inputs[1]].val,
                           g->t[n->output].val, node_act(n));
}

static void add_bwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    struct tg_tensor *y = &g->t[n->output];
    size_t cnt = (size_t)batch * y->numel;
    act_mask(y->grad, y->val, cnt, node_act(n));
    for (int k = 0; k < 2; k++)
        if (wants_grad(g, n->inputs[k]))
            copy_grad(g, n->inputs[k], y->grad, cnt);
}


static void softmax_bwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    int32_t ix = n->inputs[0];
    if (!wants_grad(g, ix))
        return;
    const struct tg_tensor *y = &g->t[n->output];
    int32_t cols = (int32_t)y->numel;
    bool acc;
    float *dx = grad_out(g, ix, &acc);
    for (int32_t r = 0; r < batch; r++) {
        const float *yr = y->val + (size_t)r * cols, *dyr = y->grad + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        double s = 0.0;
        for (int32_t j = 0; j < cols; j++)
            s += (double)yr[j] * dyr[j];
        for (int32_t j = 0; j < cols; j++) {
            float d = yr[j] * (dyr[j] - (float)s);
            dxr[j] = acc ? dxr[j] + d : d;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Pools                                                                                     */

static void maxpool_fwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    struct efc_pool_geom pg;
    efc_node_pool_geom(g->m, n, batch, &pg);
    const float *x = g->t[n->inputs[0]].val;
    float *y = g->t[n->output].val;
    int32_t *am = g->nd[n - g->m->nodes].argmax;
    size_t planes = (size_t)batch * pg.c;
    int32_t HW = pg.h * pg.w, P = pg.oh * pg.ow;
    if (pg.kh == 2 && pg.kw == 2 && pg.sh == 2 && pg.sw == 2 && pg.pt == 0 && pg.pl == 0 &&
        pg.oh * 2 <= pg.h && pg.ow * 2 <= pg.w) {
        /* the common 2x2 / 2 pool: no bounds checks; ties keep the first (row-major) max */
        for (size_t pl = 0; pl < planes; pl++) {
            const float *xp = x + pl * HW;
            float *yp = y + pl * P;
            int32_t *ap = am + pl * P;
            for (int32_t oy = 0; oy < pg.oh; oy++) {
                const float *r0 = xp + (size_t)(2 * oy) * pg.w, *r1 = r0 + pg.w;
                int32_t base = 2 * oy * pg.w;
                for (int32_t ox = 0; ox < pg.ow; ox++) {
                    int32_t i = 2 * ox;
                    float b = r0[i];
                    int32_t bi = base + i;
                    if (r0[i + 1] > b) {
                        b = r0[i + 1];
                        bi = base + i + 1;
                    }
                    if (r1[i] > b) {
                        b = r1[i];
                        bi = base + pg.w + i;
                    }
                    if (r1[i + 1] > b) {
                        b = r1[i + 1];
                        bi = base + pg.w + i + 1;
                    }
                    yp[oy * pg.ow + ox] = b;
                    ap[oy * pg.ow + ox] = bi;
                }
            }
        }
        return;
    }
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * HW;
        float *yp = y + pl * P;
        int32_t *ap = am + pl * P;
        for (int32_t oy = 0; oy < pg.oh; oy++) {
            int32_t iy0 = oy * pg.sh - pg.pt;
            for (int32_t ox = 0; ox < pg.ow; ox++) {
                int32_t ix0 = ox * pg.sw - pg.pl;
                float best = -INFINITY;
                int32_t bi = -1;
                for (int32_t ky = 0; ky < pg.kh; ky++) {
                    int32_t iy = iy0 + ky;
                    if (iy < 0 || iy >= pg.h)
                        continue;
                    for (int32_t kx = 0; kx < pg.kw; kx++) {
                        int32_t ix = ix0 + kx;
                        if (ix < 0 || ix >= pg.w)
                            continue;
                        float v = xp[iy * pg.w + ix];
                        /* first maximum wins, like PyTorch; NaN propagates */
                        if (v > best || bi < 0 || v != v) {
                            best = v;
                            bi = iy * pg.w + ix;
                        }
                    }
                }
                yp[oy * pg.ow + ox] = bi < 0 ? 0.0f : best;
                ap[oy * pg.ow + ox] = bi;
            }
        }
    }
}

static void maxpool_bwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    int32_t ix = n->inputs[0];
    if (!wants_grad(g, ix))
        return;
    struct efc_pool_geom pg;
    efc_node_pool_geom(g->m, n, batch, &pg);
    const float *dy = g->t[n->output].grad;
    const int32_t *am = g->nd[n - g->m->nodes].argmax;
    float *dx = grad_zeroed(g, ix, (size_t)batch * g->t[ix].numel);
    size_t planes = (size_t)batch * pg.c;
    int32_t HW = pg.h * pg.w, P = pg.oh * pg.ow;
    for (size_t pl = 0; pl < planes; pl++) {
        float *dxp = dx + pl * HW;
        const float *dyp = dy + pl * P;
        const int32_t *ap = am + pl * P;
        for (int32_t p = 0; p < P; p++)
            if (ap[p] >= 0)
                dxp[ap[p]] += dyp[p];
    }
}

/* Divisor of an average-pool window (PyTorch / ONNX semantics for count_include_pad). */
static float avg_div(const struct efc_pool_geom *pg, int32_t oy, int32_t ox)
{
    int32_t y0 = oy * pg->sh - pg->pt, x0 = ox * pg->sw - pg->pl;
    int32_t y1 = y0 + pg->kh, x1 = x0 + pg->kw;
    if (pg->count_include_pad) {
        /* the window clipped to the padded input (PyTorch: bottom/right pad = top/left) */
        int32_t hp = pg->h + pg->pt, wp = pg->w + pg->pl;
        int32_t cy1 = y1 < hp ? y1 : hp, cx1 = x1 < wp ? x1 : wp;
        return (float)((cy1 - y0) * (cx1 - x0));
    }
    int32_t cy0 = y0 < 0 ? 0 : y0, cx0 = x0 < 0 ? 0 : x0;
    int32_t cy1 = y1 < pg->h ? y1 : pg->h, cx1 = x1 < pg->w ? x1 : pg->w;
    int32_t cnt = (cy1 - cy0) * (cx1 - cx0);
    return cnt > 0 ? (float)cnt : 1.0f;
}

static void avgpool_fwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    struct efc_pool_geom pg;
    efc_node_pool_geom(g->m, n, batch, &pg);
    efc_k_avgpool2d_f32(&pg, g->t[n->inputs[0]].val, g->t[n->output].val);
}

static void avgpool_bwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    int32_t ix0 = n->inputs[0];
    if (!wants_grad(g, ix0))
        return;
    struct efc_pool_geom pg;
    efc_node_pool_geom(g->m, n, batch, &pg);
    const float *dy = g->t[n->output].grad;
    float *dx = grad_zeroed(g, ix0, (size_t)batch * g->t[ix0].numel);
    size_t planes = (size_t)batch * pg.c;
    int32_t HW = pg.h * pg.w, P = pg.oh * pg.ow;
    for (size_t pl = 0; pl < planes; pl++) {
        float *dxp = dx + pl * HW;
        const float *dyp = dy + pl * P;
        for (int32_t oy = 0; oy < pg.oh; oy++) {
            for (int32_t ox = 0; ox < pg.ow; ox++) {
                float d = dyp[oy * pg.ow + ox] / avg_div(&pg, oy, ox);
                for (int32_t ky = 0; ky < pg.kh; ky++) {
                    int32_t iy = oy * pg.sh - pg.pt + ky;
                    if (iy < 0 || iy >= pg.h)
                        continue;
                    for (int32_t kx = 0; kx < pg.kw; kx++) {
                        int32_t ix = ox * pg.sw - pg.pl + kx;
                        if (ix >= 0 && ix < pg.w)
                            dxp[iy * pg.w + ix] += d;
                    }
                }
            }
        }
    }
}

static void gap_fwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    const struct efc_tensor *xt = &g->m->tensors[n->inputs[0]];
    int32_t c = xt->dims[0];
    efc_k_gavgpool_f32(batch, c, (int32_t)(g->t[n->inputs[0]].numel / (size_t)c),
                       g->t[n->inputs[0]].val, g->t[n->output].val);
}

static void gap_bwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    int32_t ix = n->inputs[0];
    if (!wants_grad(g, ix))
        return;
    const struct efc_tensor *xt = &g->m->tensors[ix];
    int32_t c = xt->dims[0];
    size_t hw = g->t[ix].numel / (size_t)c;
    const float *dy = g->t[n->output].grad;
    bool acc;
    float *dx = grad_out(g, ix, &acc);
    for (size_t pl = 0; pl < (size_t)batch * c; pl++) {
        float d = dy[pl] / (float)hw;
        float *r = dx + pl * hw;
        if (acc) {
            for (size_t i = 0; i < hw; i++)
                r[i] += d;
        } else {
            for (size_t i = 0; i < hw; i++)
                r[i] = d;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* BatchNorm                                                                                 */

static float bn_eps(const struct efc_node *n)
{
    return n->a.eps > 0.0f ? n->a.eps : 1e-5f;
}

static float bn_momentum(const struct efc_node *n)
{
    return (n->a.momentum > 0.0f && n->a.momentum <= 1.0f) ? n->a.momentum : 0.1f;
}

static void bn_fwd(struct efc_tg *g, const struct efc_node *n, int32_t batch, bool training)
{
    const struct efc_tensor *xt = &g->m->tensors[n->inputs[0]];
    const float *x = g->t[n->inputs[0]].val;
    float *y = g->t[n->output].val;
    const float *gamma = g->t[n->inputs[1]].val, *beta = g->t[n->inputs[2]].val;
    float *rmean = g->t[n->inputs[3]].val, *rvar = g->t[n->inputs[4]].val;
    struct tg_node *nd = &g->nd[n - g->m->nodes];
    int32_t C = xt->dims[0];
    size_t hw = g->t[n->inputs[0]].numel / (size_t)C;
    double M = (double)batch * (double)hw;
    float eps = bn_eps(n), mom = bn_momentum(n);
    for (int32_t c = 0; c < C; c++) {
        float mean, invstd;
        if (training) {
            /* two passes: per-plane float sums (8 lanes, hw <= a few thousand), totals in
             * double */
            double s = 0.0;
            for (int32_t i = 0; i < batch; i++)
                s += sum8(x + ((size_t)i * C + c) * hw, hw);
            mean = (float)(s / M);
            double q = 0.0;
            for (int32_t i = 0; i < batch; i++) {
                const float *xp = x + ((size_t)i * C + c) * hw;
                float qs[8] = {0};
                size_t k = 0;
                for (; k + 8 <= hw; k += 8)
                    for (int l = 0; l < 8; l++) {
                        float d = xp[k + l] - mean;
                        qs[l] += d * d;
                    }
                float r = ((qs[0] + qs[4]) + (qs[1] + qs[5])) + ((qs[2] + qs[6]) + (qs[3] + qs[7]));
                for (; k < hw; k++)
                    r += (xp[k] - mean) * (xp[k] - mean);
                q += r;
            }
            double var = q / M;
            invstd = (float)(1.0 / sqrt(var + (double)eps));
            nd->bn_mean[c] = mean;
            nd->bn_invstd[c] = invstd;
            rmean[c] = (1.0f - mom) * rmean[c] + mom * mean;
            if (M > 1.0)
                rvar[c] = (1.0f - mom) * rvar[c] + mom * (float)(q / (M - 1.0));
        } else {
            mean = rmean[c];
            invstd = 1.0f / sqrtf(rvar[c] + eps);
        }
        float sc = gamma[c] * invstd, sh = beta[c] - mean * sc;
        for (int32_t i = 0; i < batch; i++) {
            const float *xp = x + ((size_t)i * C + c) * hw;
            float *yp = y + ((size_t)i * C + c) * hw;
            for (size_t k = 0; k < hw; k++)
                yp[k] = xp[k] * sc + sh;
        }
    }
    act_apply(y, (size_t)batch * C * hw, node_act(n));
}

static void bn_bwd(struct efc_tg *g, const struct efc_node *n, int32_t batch)
{
    int32_t ix = n->inputs[0], ig = n->inputs[1], ib = n->inputs[2];
    const struct efc_tensor *xt = &g->m->tensors[ix];
    const float *x = g->t[ix].val;
    struct tg_tensor *y = &g->t[n->output];
    const float *gamma = g->t[ig].val;
    const struct tg_node *nd = &g->nd[n - g->m->nodes];
    int32_t C = xt->dims[0];
    size_t hw = g->t[ix].numel / (size_t)C;
    float M = (float)batch * (float)hw;
    float *dy = y->grad;
    act_mask(dy, y->val, (size_t)batch * C * hw, node_act(n));
    float *dgamma = wants_grad(g, ig) ? grad_zeroed(g, ig, (size_t)C) : NULL;
    float *dbeta = wants_grad(g, ib) ? grad_zeroed(g, ib, (size_t)C) : NULL;
    bool acc = false;
    float *dx = wants_grad(g, ix) ? grad_out(g, ix, &acc) : NULL;
    for (int32_t c = 0; c < C; c++) {
        float mean = nd->bn_mean[c], invstd = nd->bn_invstd[c];
        double sdy = 0.0, sdyx = 0.0;
        for (int32_t i = 0; i < batch; i++) {
            const float *xp = x + ((size_t)i * C + c) * hw;
            const float *dyp = dy + ((size_t)i * C + c) * hw;
            float s1[8] = {0}, s2[8] = {0};
            size_t q = 0;
            for (; q + 8 <= hw; q += 8)
                for (int l = 0; l < 8; l++) {
                    s1[l] += dyp[q + l];
                    s2[l] += dyp[q + l] * (xp[q + l] - mean);
                }
            float r1 = ((s1[0] + s1[4]) + (s1[1] + s1[5])) + ((s1[2] + s1[6]) + (s1[3] + s1[7]));
            float r2 = ((s2[0] + s2[4]) + (s2[1] + s2[5])) + ((s2[2] + s2[6]) + (s2[3] + s2[7]));
            for (; q < hw; q++) {
                r1 += dyp[q];
                r2 += dyp[q] * (xp[q] - mean);
            }
            sdy += r1;
            sdyx += r2;
        }
        float db = (float)sdy, dg = (float)(sdyx * invstd); /* dg = sum dy * xhat */
        if (dgamma)
            dgamma[c] += dg;
        if (dbeta)
            dbeta[c] += db;
        if (!dx)
            continue;
        /* dx = gamma * invstd * (dy - db / M - xhat * dg / M) = a * dy + b * x + k */
        float a = gamma[c] * invstd;
        float bx = -a * invstd * dg / M;
        float k = -a * db / M - bx * mean;
        for (int32_t i = 0; i < batch; i++) {
            const float *xp = x + ((size_t)i * C + c) * hw;
            const float *dyp = dy + ((size_t)i * C + c) * hw;
            float *dxp = dx + ((size_t)i * C + c) * hw;
            if (acc) {
                for (size_t q = 0; q < hw; q++)
                    dxp[q] += a * dyp[q] + bx * xp[q] + k;
            } else {
                for (size_t q = 0; q < hw; q++)
                    dxp[q] = a * dyp[q] + bx * xp[q] + k;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Graph                                                                                     */

static bool is_reshape(enum efc_op op)
{
    return op == EFC_OP_FLATTEN || op == EFC_OP_RESHAPE;
}

enum efc_status efc_tg_new(struct efc_model *m, int32_t max_batch, bool input_grad,
                           struct efc_tg **out)
{
    enum efc_status st;
    *out = NULL;
    if (!m || max_batch < 1)
        return efc_errf(EFC_EINVAL, "train: bad graph arguments (max_batch %d)", max_batch);
    st = efc_model_check(m);
    if (st == EFC_OK)
        st = efc_model_densify(m); /* the graph trains dense buffers (train.h) */
    if (st != EFC_OK)
        return st;
    struct efc_tg *g = efc_calloc(1, sizeof(*g));
    if (!g)
        return EFC_ENOMEM;
    g->m = m;
    g->max_batch = max_batch;
    g->t = efc_calloc((size_t)m->n_tensors, sizeof(*g->t));
    g->nd = efc_calloc((size_t)(m->n_nodes > 0 ? m->n_nodes : 1), sizeof(*g->nd));
    g->params = efc_calloc((size_t)m->n_tensors, sizeof(*g->params));
    if (!g->t || !g->nd || !g->params) {
        st = EFC_ENOMEM;
        goto fail;
    }
    if (m->n_nodes < 1) {
        st = efc_errf(EFC_EUNSUPPORTED, "train: model has no nodes");
        goto fail;
    }
    /* pass 1: tensor kinds, trainable parameters, parameter data made writable */
    for (int32_t i = 0; i < m->n_tensors; i++) {
        struct efc_tensor *t = &m->tensors[i];
        g->t[i].act = !(t->flags & EFC_TENSOR_PARAM);
        g->t[i].numel = efc_tensor_numel(t);
        if (t->dtype != EFC_DTYPE_F32) {
            st = efc_errf(EFC_EUNSUPPORTED, "train: tensor %s is %s, training needs f32",
                          t->name, efc_dtype_name(t->dtype));
            goto fail;
        }
    }
    for (int32_t j = 0; j < m->n_nodes; j++) {
        const struct efc_node *n = &m->nodes[j];
        int32_t first_param = 1, last_param = 0;
        if (n->op == EFC_OP_DENSE || n->op == EFC_OP_CONV2D)
            last_param = 2;
        else if (n->op == EFC_OP_BATCHNORM)
            last_param = 2; /* gamma, beta; running statistics are not trained */
        for (int32_t k = 0; k < n->n_inputs; k++) {
            int32_t ti = n->inputs[k];
            if (ti < 0)
                continue;
            bool param = !g->t[ti].act;
            if (k >= first_param && k <= last_param && param)
                g->t[ti].trainable = true;
            else if (param && !(n->op == EFC_OP_BATCHNORM && k >= 3)) {
                st = efc_errf(EFC_EUNSUPPORTED, "train: node %s: constant input %d", n->name,
                              k);
                goto fail;
            } else if (!param && k > 0 && n->op != EFC_OP_ADD) {
                st = efc_errf(EFC_EUNSUPPORTED, "train: node %s: computed weights", n->name);
                goto fail;
            }
        }
        if (n->op == EFC_OP_BATCHNORM && n->n_inputs < 5) {
            st = efc_errf(EFC_EPROTO, "train: node %s: BatchNorm needs 5 inputs", n->name);
            goto fail;
        }
    }
    for (int32_t i = 0; i < m->n_tensors; i++) {
        struct efc_tensor *t = &m->tensors[i];
        if (g->t[i].act)
            continue;
        if (!t->owns_data || !t->data) {
            size_t bytes = efc_tensor_bytes(t);
            void *d = efc_malloc_aligned(64, bytes);
            if (!d) {
                st = EFC_ENOMEM;
                goto fail;
            }
            if (t->data)
                memcpy(d, t->data, bytes);
            else
                memset(d, 0, bytes);
            t->data = d;
            t->owns_data = 1;
        }
        g->t[i].val = t->data;
        if (g->t[i].trainable) {
            g->t[i].need_grad = true;
            g->params[g->n_params++] = i;
        }
    }
    /* pass 2: which activations need gradients (downstream of a trainable parameter) */
    g->t[m->input].need_grad = input_grad;
    for (int32_t j = 0; j < m->n_nodes; j++) {
        const struct efc_node *n = &m->nodes[j];
        bool ng = false;
        for (int32_t k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] >= 0 && g->t[n->inputs[k]].need_grad &&
                !(n->op == EFC_OP_BATCHNORM && k >= 3))
                ng = true;
        g->t[n->output].need_grad = ng;
    }
    /* pass 3: buffers */
    size_t scratch = 0;
    for (int32_t i = 0; i < m->n_tensors; i++) {
        if (!g->t[i].act)
            continue;
        size_t cnt = (size_t)max_batch * g->t[i].numel;
        bool alias = false;
        for (int32_t j = 0; j < m->n_nodes; j++)
            if (m->nodes[j].output == i && is_reshape(m->nodes[j].op))
                alias = true;
        if (!alias) {
            g->t[i].val = tg_alloc(g, cnt * sizeof(float));
            if (!g->t[i].val) {
                st = EFC_ENOMEM;
                goto fail;
            }
        }
    }
    /* per-sample NCHW data is already laid out as the flat / reshaped tensor: alias it (in
     * node order, so chains of reshapes resolve) */
    for (int32_t j = 0; j < m->n_nodes; j++)
        if (is_reshape(m->nodes[j].op))
            g->t[m->nodes[j].output].val = g->t[m->nodes[j].inputs[0]].val;
    for (int32_t i = 0; i < m->n_tensors; i++) {
        if (!g->t[i].need_grad)
            continue;
        size_t cnt = g->t[i].act ? (size_t)max_batch * g->t[i].numel : g->t[i].numel;
        g->t[i].grad = tg_alloc(g, cnt * sizeof(float));
        if (!g->t[i].grad) {
            st = EFC_ENOMEM;
            goto fail;
        }
    }
    for (int32_t j = 0; j < m->n_nodes; j++) {
        const struct efc_node *n = &m->nodes[j];
        struct tg_node *nd = &g->nd[j];
        if (n->op == EFC_OP_BATCHNORM) {
            int32_t C = m->tensors[n->inputs[0]].dims[0];
            nd->bn_mean = tg_alloc(g, (size_t)C * sizeof(float));
            nd->bn_invstd = tg_alloc(g, (size_t)C * sizeof(float));
            if (!nd->bn_mean || !nd->bn_invstd) {
                st = EFC_ENOMEM;
                goto fail;
            }
        } else if (n->op == EFC_OP_MAXPOOL) {
            nd->argmax = tg_alloc(g, (size_t)max_batch * g->t[n->output].numel * sizeof(int32_t));
            if (!nd->argmax) {
                st = EFC_ENOMEM;
                goto fail;
            }
        } else if (n->op == EFC_OP_CONV2D) {
            struct efc_conv_geom cg;
            efc_node_conv_geom(g->m, n, max_batch, &cg);
            int32_t cpg = cg.c / cg.groups, ocg = cg.oc / cg.groups;
            nd->depthwise = cg.groups > 1 && cpg == 1;
            if (efc_k_conv2d_f32_scratch(&cg) > scratch) /* the forward kernel's */
                scratch = efc_k_conv2d_f32_scratch(&cg);
            if (nd->depthwise)
                continue;
            size_t K = (size_t)cpg * cg.kh * cg.kw, P = (size_t)cg.oh * cg.ow;
            size_t chunk = TG_COL_FLOATS / (K * P);
            if (chunk < 1)
                chunk = 1;
            if (chunk > (size_t)max_batch)
                chunk = (size_t)max_batch;
            nd->chunk = (int32_t)chunk;
            size_t need = chunk * P * (2 * K + (size_t)ocg);
            if (need > scratch)
                scratch = need;
        } else if (n->op == EFC_OP_ADD) {
            if (g->t[n->inputs[0]].numel != g->t[n->output].numel ||
                g->t[n->inputs[1]].numel != g->t[n->output].numel) {
                st = efc_errf(EFC_EUNSUPPORTED, "train: node %s: broadcasting Add", n->name);
                goto fail;
            }
        }
    }
    if (scratch) {
        g->scratch = tg_alloc(g, scratch * sizeof(float));
        if (!g->scratch) {
            st = EFC_ENOMEM;
            goto fail;
        }
    }
    /* loss input: the logits, before a final softmax */
    g->logits = m->output;
    const struct efc_node *last = NULL;
    for (int32_t j = 0; j < m->n_nodes; j++)
        if (m->nodes[j].output == m->output)
            last = &m->nodes[j];
    if (last && last->op == EFC_OP_SOFTMAX)
        g->logits = last->inputs[0];
    g->n_classes = (int32_t)g->t[g->logits].numel;
    if (!g->t[g->logits].act || g->n_classes < 1) {
        st = efc_errf(EFC_EUNSUPPORTED, "train: model output is not an activation");
        goto fail;
    }
    g->probs = tg_alloc(g, (size_t)max_batch * g->n_classes * sizeof(float));
    if (!g->probs) {
        st = EFC_ENOMEM;
        goto fail;
    }
    *out = g;
    return EFC_OK;
fail:
    efc_tg_free(g);
    return st;
}

void efc_tg_free(struct efc_tg *g)
{
    if (!g)
        return;
    for (int32_t i = 0; i < g->n_allocs; i++)
        efc_free(g->allocs[i]);
    efc_free(g->allocs);
    efc_free(g->t);
    efc_free(g->nd);
    efc_free(g->params);
    efc_free(g);
}

float *efc_tg_input(struct efc_tg *g)
{
    return g->t[g->m->input].val;
}

int32_t efc_tg_input_size(const struct efc_tg *g)
{
    return (int32_t)g->t[g->m->input].numel;
}

int32_t efc_tg_n_classes(const struct efc_tg *g)
{
    return g->n_classes;
}

int32_t efc_tg_logits_tensor(const struct efc_tg *g)
{
    return g->logits;
}

void efc_tg_forward(struct efc_tg *g, int32_t batch, bool training)
{
    const struct efc_model *m = g->m;
    for (int32_t j = 0; j < m->n_nodes; j++) {
        const struct efc_node *n = &m->nodes[j];
        switch (n->op) {
        case EFC_OP_DENSE:
            dense_fwd(g, n, batch);
            break;
        case EFC_OP_CONV2D:
            conv_fwd(g, n, batch);
            break;
        case EFC_OP_RELU:
            relu_fwd(g, n, batch, false);
            break;
        case EFC_OP_RELU6:
            relu_fwd(g, n, batch, true);
            break;
        case EFC_OP_MAXPOOL:
            maxpool_fwd(g, n, batch);
            break;
        case EFC_OP_AVGPOOL:
            avgpool_fwd(g, n, batch);
            break;
        case EFC_OP_GAVGPOOL:
            gap_fwd(g, n, batch);
            break;
        case EFC_OP_FLATTEN:
        case EFC_OP_RESHAPE:
            break; /* aliased */
        case EFC_OP_ADD:
            add_fwd(g, n, batch);
            break;
        case EFC_OP_BATCHNORM:
            bn_fwd(g, n, batch, training);
            break;
        case EFC_OP_SOFTMAX:
            efc_k_softmax_f32(batch, (int32_t)g->t[n->output].numel, g->t[n->inputs[0]].val,
                              g->t[n->output].val);
            break;
        default:
            break;
        }
    }
}

float efc_tg_loss(struct efc_tg *g, int32_t batch, const int32_t *labels, int32_t *correct)
{
    int32_t C = g->n_classes;
    const float *z = g->t[g->logits].val;
    efc_k_softmax_f32(batch, C, z, g->probs);
    float *dz = g->t[g->logits].grad;
    double loss = 0.0;
    int32_t hits = 0;
    float inv_b = 1.0f / (float)batch;
    for (int32_t i = 0; i < batch; i++) {
        const float *p = g->probs + (size_t)i * C;
        const float *zr = z + (size_t)i * C;
        int32_t y = labels[i];
        /* log-softmax from the logits: exact for confident wrong predictions */
        float mx = zr[0];
        int32_t am = 0;
        for (int32_t j = 1; j < C; j++)
            if (zr[j] > mx) {
                mx = zr[j];
                am = j;
            }
        double se = 0.0;
        for (int32_t j = 0; j < C; j++)
            se += exp((double)zr[j] - mx);
        loss += log(se) + mx - zr[y];
        hits += am == y;
        if (dz) {
            float *d = dz + (size_t)i * C;
            for (int32_t j = 0; j < C; j++)
                d[j] = (p[j] - (j == y ? 1.0f : 0.0f)) * inv_b;
        }
    }
    if (dz)
        g->t[g->logits].grad_set = true;
    if (correct)
        *correct = hits;
    return (float)(loss / batch);
}

int32_t efc_tg_count_correct(const struct efc_tg *g, int32_t batch, const int32_t *labels)
{
    int32_t C = g->n_classes, hits = 0;
    const float *z = g->t[g->logits].val;
    for (int32_t i = 0; i < batch; i++) {
        const float *zr = z + (size_t)i * C;
        int32_t am = 0;
        for (int32_t j = 1; j < C; j++)
            if (zr[j] > zr[am])
                am = j;
        hits += am == labels[i];
    }
    return hits;
}

void efc_tg_backward(struct efc_tg *g, int32_t batch, int32_t seed)
{
    const struct efc_model *m = g->m;
    for (int32_t i = 0; i < m->n_tensors; i++)
        g->t[i].grad_set = false;
    if (!g->t[seed].grad)
        return;
    g->t[seed].grad_set = true;
    for (int32_t j = m->n_nodes - 1; j >= 0; j--) {
        const struct efc_node *n = &m->nodes[j];
        if (!g->t[n->output].grad_set)
            continue;
        switch (n->op) {
        case EFC_OP_DENSE:
            dense_bwd(g, n, batch);
            break;
        case EFC_OP_CONV2D:
            if (g->nd[j].depthwise)
                conv_bwd_dw(g, n, batch);
            else
                conv_bwd_gemm(g, n, batch);
            break;
        case EFC_OP_RELU:
            relu_bwd(g, n, batch, false);
            break;
        case EFC_OP_RELU6:
            relu_bwd(g, n, batch, true);
            break;
        case EFC_OP_MAXPOOL:
            maxpool_bwd(g, n, batch);
            break;
        case EFC_OP_AVGPOOL:
            avgpool_bwd(g, n, batch);
            break;
        case EFC_OP_GAVGPOOL:
            gap_bwd(g, n, batch);
            break;
        case EFC_OP_FLATTEN:
        case EFC_OP_RESHAPE:
            if (wants_grad(g, n->inputs[0]))
                copy_grad(g, n->inputs[0], g->t[n->output].grad,
                          (size_t)batch * g->t[n->output].numel);
            break;
        case EFC_OP_ADD:
            add_bwd(g, n, batch);
            break;
        case EFC_OP_BATCHNORM:
            bn_bwd(g, n, batch);
            break;
        case EFC_OP_SOFTMAX:
            softmax_bwd(g, n, batch);
            break;
        default:
            break;
        }
    }
}

const float *efc_tg_value(const struct efc_tg *g, int32_t tensor)
{
    return g->t[tensor].val;
}

float *efc_tg_grad(struct efc_tg *g, int32_t tensor)
{
    return g->t[tensor].grad;
}

bool efc_tg_grad_valid(const struct efc_tg *g, int32_t tensor)
{
    return g->t[tensor].grad && g->t[tensor].grad_set;
}

void efc_tg_grad_set(struct efc_tg *g, int32_t tensor)
{
    g->t[tensor].grad_set = true;
}

int32_t efc_tg_n_params(const struct efc_tg *g)
{
    return g->n_params;
}

void efc_tg_param(struct efc_tg *g, int32_t i, int32_t *tensor, float **data, float **grad,
                  size_t *n)
{
    int32_t t = g->params[i];
    *tensor = t;
    *data = g->t[t].val;
    *grad = g->t[t].grad;
    *n = g->t[t].numel;
}
