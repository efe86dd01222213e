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
    int32_t zp;                /* qavgpool: u8 value of padding cells (input zero point) */
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

/* ---- INT8 (docs/quantization.md) ------------------------------------------------------
 * Scheme: activations uint8, asymmetric (real = s * (q - zp)), NHWC; weights int8 symmetric
 * in [-127, 127], per output channel; bias int32 at scale s_x * s_w[m]; int32 accumulation.
 *
 * Requantisation (one rule, bit-exact on every ISA): for output channel m with real multiplier
 * r_m = s_x * s_w[m] / s_y, the lowering stores mult[m] in [2^30, 2^31) and shift[m] in
 * [31, 62] with r_m = mult * 2^-shift (or mult = 0, shift = 31 for r_m < 2^-32; r_m >= 1 is
 * avoided by the lowering, which widens the output range), and
 *     y = clamp(zp_y + ((int64)acc * mult + 2^(shift-1)) >> shift, lo, hi)
 * with an arithmetic shift: round half up. |acc * mult| < 2^62, so nothing overflows, and the
 * shifted value fits int32. efc_k_requant__ref() is the definition. */
struct efc_requant {
    const int32_t *mult;  /* per output channel (or one value when per_tensor) */
    const int32_t *shift; /* idem */
    int32_t per_tensor;   /* 1: mult[0]/shift[0] for every channel */
    int32_t zp_out;       /* 0..255 */
    int32_t lo, hi;       /* clamp in the u8 domain (fused ReLU / ReLU6), 0 <= lo <= hi <= 255 */
};

/* mult/shift for a real multiplier r (docs: the rule above): r in [2^-32, 1) gives
 * mult in [2^30, 2^31) and shift in [31, 62]; r < 2^-32 gives mult 0; EFC_EINVAL for r >= 1,
 * r < 0 or NaN (the lowering must widen the output range first). */
enum efc_status efc_k_requant_make(double r, int32_t *mult, int32_t *shift);

/* The rule above, for one value (the reference every variant is tested against). */
uint8_t efc_k_requant__ref(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo,
                           int32_t hi);

/* Weights of one INT8 GEMM, packed at load time by the variant that runs them. */
struct efc_qgemm_w {
    int32_t m, k;        /* output channels, reduction length */
    int32_t isa;         /* enum efc_isa of the variant that packed it */
    void *packed;        /* owned, layout private to the variant */
    size_t packed_bytes;
    int32_t *bias;       /* [m] owned: bias[m] - zp_x * sum_k w[m][k] (zero-point folded) */
};
void efc_qgemm_w_fini(struct efc_qgemm_w *w);
/* The bias every packer stores: out[j] = bias[j] (0 if NULL) - zp_x * sum_k w[j][k], as the
 * int32 two's-complement value of the exact difference (accumulators wrap the same way). */
void efc_k_qgemm_fold_bias(int32_t m, int32_t k, const int8_t *w, const int32_t *bias,
                           int32_t zp_x, int32_t *out);

/* Pack w[m][k] (row-major int8) and bias[m] (NULL = 0) for input zero point zp_x. Allocates
 * (load time only). */
typedef enum efc_status (*efc_k_qgemm_pack_fn)(int32_t m, int32_t k, const int8_t *w,
                                               const int32_t *bias, int32_t zp_x,
                                               struct efc_qgemm_w *out);
/* y[i][j] = requant_j(bias[j] + sum_k x[i][k] * w[j][k]) for i < n, j < m: x is n rows of k
 * uint8 (row stride ldx), y n rows of m uint8 (row stride ldy). Conv: rows are output pixels
 * (NHWC), x from im2row (or the input itself for 1x1 stride-1 convs); Dense: rows are samples.
 * Needs no scratch and does not allocate. */
typedef void (*efc_k_qgemm_fn)(const struct efc_qgemm_w *w, const struct efc_requant *rq,
                               int32_t n, const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy);
/* A GEMM variant = its packer + its runner (they share the private layout). */
struct efc_k_qgemm {
    efc_k_qgemm_pack_fn pack;
    efc_k_qgemm_fn run;
};

/* im2row for NHWC uint8, one image (x points at it): row p = oy * ow + ox holds, for ky, kx,
 * c in that order, x[iy][ix][c], or pad (the input zero point) outside the image. Rows
 * [p0, p0 + np) are written, each k = kh * kw * c bytes, row stride ldo. groups must be 1. */
typedef void (*efc_k_im2row_u8_fn)(const struct efc_conv_geom *g, const uint8_t *x, uint8_t pad,
                                   int32_t p0, int32_t np, uint8_t *out, size_t ldo);
/* Depthwise conv, NHWC uint8, g->groups == g->c, g->oc == g->c * multiplier. w is
 * [kh][kw][oc] int8, bias [oc] int32 (already at s_x * s_w; zero point NOT folded: the kernel
 * subtracts zp_x from x, padding contributes 0). */
typedef void (*efc_k_qdwconv_fn)(const struct efc_conv_geom *g, const uint8_t *x, int32_t zp_x,
                                 const int8_t *w, const int32_t *bias,
                                 const struct efc_requant *rq, uint8_t *y);
/* Pools on NHWC uint8 with unchanged quantisation (output scale and zero point = input's).
 * Max: padding never wins. Avg: y = (2 * sum + cnt) / (2 * cnt) in integers (round half up)
 * where cnt counts the window cells inside the image (or all cells if count_include_pad,
 * padding then contributing the zero point). Global: avg over h * w per channel. */
typedef void (*efc_k_qpool_fn)(const struct efc_pool_geom *g, const uint8_t *x, uint8_t *y);
typedef void (*efc_k_qgavgpool_fn)(int32_t n, int32_t hw, int32_t c, const uint8_t *x,
                                   uint8_t *y);
/* Element-wise add of two uint8 tensors with their own quantisation into a third:
 * y = clamp(zp_y + requant(((a - zp_a) * m_a + (b - zp_b) * m_b), mult, shift)), where the
 * input multipliers m_a, m_b (int32, < 2^15) and the output (mult, shift) come from the
 * lowering; docs/quantization.md gives the derivation. */
struct efc_qadd_params {
    int32_t zp_a, zp_b, m_a, m_b, mult, shift, zp_y, lo, hi;
};
typedef void (*efc_k_qadd_fn)(size_t n, const uint8_t *a, const uint8_t *b,
                              const struct efc_qadd_params *p, uint8_t *y);
/* Quantise float -> uint8: q = clamp(rne(x * inv_scale) + zp, 0, 255), rne = round to nearest
 * even (the default FP rounding mode), one fp32 multiply; NaN -> 0. Dequantise: y = (q - zp) *
 * scale (exact integer then one fp32 multiply). */
typedef void (*efc_k_quantize_fn)(size_t n, const float *x, float inv_scale, int32_t zp,
                                  uint8_t *y);
typedef void (*efc_k_dequantize_fn)(size_t n, const uint8_t *x, float scale, int32_t zp,
                                    float *y);

/* Sparse Dense / conv-as-GEMM (kernels/sparse.h defines them; entries in kernels_sparse.inc). */
struct efc_k_spmm_f32;
struct efc_k_spmm_u8s8;

/* Every dispatched op, for code that walks the table (dispatch, tests, benches). */
#define EFC_KERNEL_OPS(X)                                                                     \
    X(relu_f32) X(relu6_f32) X(add_f32) X(bias_act_f32) X(qgemm) X(im2row_u8) X(qdwconv)      \
    X(qmaxpool) X(qavgpool) X(qgavgpool) X(qadd) X(quantize) X(dequantize) X(spmm_f32)        \
    X(spmm_u8s8)

struct efc_kernel_table {
    efc_k_unary_f32_fn relu_f32;
    efc_k_unary_f32_fn relu6_f32;
    efc_k_add_f32_fn add_f32;
    efc_k_bias_act_f32_fn bias_act_f32;
    const struct efc_k_qgemm *qgemm; /* entries in kernels.inc are struct objects */
    efc_k_im2row_u8_fn im2row_u8;
    efc_k_qdwconv_fn qdwconv;
    efc_k_qpool_fn qmaxpool;
    efc_k_qpool_fn qavgpool;
    efc_k_qgavgpool_fn qgavgpool;
    efc_k_qadd_fn qadd;
    efc_k_quantize_fn quantize;
    efc_k_dequantize_fn dequantize;
    const struct efc_k_spmm_f32 *spmm_f32;   /* struct entries, like qgemm */
    const struct efc_k_spmm_u8s8 *spmm_u8s8;
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
