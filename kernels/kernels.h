/* kernels.h — FP32 compute kernels and the run-time dispatch table.
 *
 * Every kernel has a portable reference variant (kernels/ref/, suffix __ref) and may have
 * per-ISA variants (kernels/x86/avx2/, x86/avx512/, ..., compiled with that ISA's flags only).
 * kernels.inc lists every variant; efc_kernels_init() fills the table once with the best
 * variant whose ISA is within the cap, and logs one line per op. Tests and benchmarks expand
 * kernels.inc too. Layout is NCHW, batch first. Kernels trust their arguments: shapes are
 * validated when a model is checked and compiled (STYLE.md 2.5); inner loops do not check.
 * Kernels do not allocate: callers pass scratch sized by the *_scratch() functions.
 * Thread rule: kernels are reentrant; the table is written once before threads start.
 */
#ifndef EFC_KERNELS_KERNELS_H
#define EFC_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu_features.h"

enum efc_k_act { EFC_K_ACT_NONE = 0, EFC_K_ACT_RELU = 1, EFC_K_ACT_RELU6 = 2 };

struct efc_conv_geom {
    int32_t n;          /* batch */
    int32_t c, h, w;    /* input channels and size */
    int32_t oc, oh, ow; /* output channels and size */
    int32_t kh, kw;
    int32_t sh, sw;
    int32_t pt, pl;     /* top / left padding (bottom / right are implied by oh, ow) */
    int32_t groups;     /* c % groups == 0, oc % groups == 0 */
};

struct efc_pool_geom {
    int32_t n, c, h, w, oh, ow;
    int32_t kh, kw, sh, sw, pt, pl;
    int32_t count_include_pad; /* avgpool */
};

/* Floats of scratch efc_k_conv2d_f32 needs for this geometry, for any batch <= g->n. */
size_t efc_k_conv2d_f32_scratch(const struct efc_conv_geom *g);
/* y[n, oc, oh, ow] = act(conv(x[n, c, h, w], w[oc, c/groups, kh, kw]) + b); b may be NULL.
 * groups == 1: im2col over a chunk of images + one sgemm; depthwise: direct loop;
 * other groups: per-group sgemm; 1x1/stride 1/no pad: no im2col. */
void efc_k_conv2d_f32(const struct efc_conv_geom *g, const float *x, const float *w,
                      const float *b, float *y, float *scratch, enum efc_k_act act);

/* im2col for images [i0, i0+nc): col[K][nc * oh * ow], K = (c/groups) * kh * kw, for the
 * channels of group `grp`. Column index = (image - i0) * oh * ow + oy * ow + ox. */
void efc_k_im2col_f32(const struct efc_conv_geom *g, const float *x, int32_t i0, int32_t nc,
                      int32_t grp, float *col);
/* The adjoint: accumulates col back into dx (dx must be zeroed by the caller first). */
void efc_k_col2im_f32(const struct efc_conv_geom *g, const float *col, int32_t i0, int32_t nc,
                      int32_t grp, float *dx);

/* y[n, out] = act(x[n, in] * w[out, in]^T + b). */
void efc_k_dense_f32(int32_t n, int32_t in, int32_t out, const float *x, const float *w,
                     const float *b, float *y, enum efc_k_act act);

void efc_k_maxpool2d_f32(const struct efc_pool_geom *g, const float *x, float *y);
void efc_k_avgpool2d_f32(const struct efc_pool_geom *g, const float *x, float *y);
/* y[n, c] = mean over hw of x[n, c, hw]. */
void efc_k_gavgpool_f32(int32_t n, int32_t c, int32_t hw, const float *x, float *y);
/* y[n, c, hw] = act(x * scale[c] + shift[c]) (inference BatchNorm, or any channel affine). */
void efc_k_channel_affine_f32(int32_t n, int32_t c, int32_t hw, const float *x,
                              const float *scale, const float *shift, float *y,
                              enum efc_k_act act);
/* Softmax over each row of x[rows, cols]; y may alias x. */
void efc_k_softmax_f32(int32_t rows, int32_t cols, const float *x, float *y);

/* Dispatched element-wise kernels (variants in kernels.inc). y may alias x/a. */
typedef void (*efc_k_unary_f32_fn)(size_t n, const float *x, float *y);
typedef void (*efc_k_add_f32_fn)(size_t n, const float *a, const float *b, float *y,
                                 enum efc_k_act act);
/* y[i] += b[i % cols] then act, over rows x cols (bias epilogue); b must not be NULL (use
 * relu/relu6 for an activation without bias). */
typedef void (*efc_k_bias_act_f32_fn)(size_t rows, size_t cols, float *y, const float *b,
                                      enum efc_k_act act);

struct efc_kernel_table {
    efc_k_unary_f32_fn relu_f32;
    efc_k_unary_f32_fn relu6_f32;
    efc_k_add_f32_fn add_f32;
    efc_k_bias_act_f32_fn bias_act_f32;
};

/* Fill the table once (later calls return the first result). cap = the ISA cap; the level
 * used is min(cap, efc_isa_best()). */
enum efc_status efc_kernels_init(enum efc_isa cap);
/* Cap from the EFC_ISA environment variable if set, else the best level. */
enum efc_status efc_kernels_init_env(void);
/* The table (initialises with efc_kernels_init_env() on first use if nobody did). */
const struct efc_kernel_table *efc_kernels(void);
/* Level the table was filled for. */
enum efc_isa efc_kernels_isa(void);

#endif
