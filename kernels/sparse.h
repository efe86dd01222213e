/* sparse.h — sparse weight formats and the sparse Dense / conv-as-GEMM kernels, FP32 and INT8.
 *
 * A sparse op computes the same function as its dense twin with W[out, in] stored sparse:
 *   FP32 (efc_k_dense_f32):  y[i][j] = act(b[j] + sum_k x[i][k] * W[j][k])
 *   INT8 (efc_k_qgemm_fn):   y[i][j] = requant_j(bias[j] + sum_k (x[i][k] - zp_x) * W[j][k])
 * for i < n samples (Dense) or output pixels (conv-as-GEMM: x = im2col / im2row rows), j < out.
 * Two formats, chosen when the weights are packed (struct efc_sp_fmt):
 *   - CSR: every non-zero of W (exact zeros dropped), rows = output channels. Unstructured.
 *   - N:M along `in`: in every group of M consecutive columns of a row (the last group may be
 *     shorter) at most N are non-zero; exactly N slots per group are stored. 1:4 and 2:4 are
 *     the patterns this is for; 1 <= N < M <= 4 is accepted.
 * The canonical layouts (what kernels/ref/sparse.c stores and defines the semantics with):
 *   CSR: row_ptr int32 [out + 1], col_idx [nnz] uint16 when in <= 65536 (6 instead of 8
 *        bytes per non-zero; no speed difference measured: docs/kernels-sparse.md) else int32,
 *        values [nnz] (float, or int8), columns strictly increasing within a row.
 *   N:M: values [out][G * N] with G = ceil(in / M) groups (kept slots in increasing column
 *        order, zero-valued when a group has fewer than N non-zeros; in a last group narrower
 *        than N the surplus slots repeat its last column with value 0), and metadata: one 2-bit
 *        column-in-group index per kept slot, packed little-endian 4 to a byte, each row
 *        starting on a byte: meta [out][ceil(G * N / 4)]. Slot e of row j is at byte e / 4,
 *        bits 2 (e % 4) .. 2 (e % 4) + 1; its column is (e / N) * M + index.
 * SIMD variants repack into their own layouts (docs/kernels-sparse.md): a sliced-ELL layout
 * whose lanes are output rows and whose x reads are register permutes over a window of x, and,
 * for FP32 batches, a CSR walked by an x-transposed SpMM. Like struct efc_qgemm_w, a packed
 * struct belongs to the variant that packed it: run it with the same variant's functions (the
 * dispatch table gives a matching pack / run pair).
 * Ownership: pack allocates (load time only), efc_spmm_w_fini frees; the run functions do not
 * allocate. Weights are borrowed for the pack call only. Thread rule: a packed struct is
 * read-only after pack, so several threads may run it at once; pack / fini on one thread.
 */
#ifndef EFC_KERNELS_SPARSE_H
#define EFC_KERNELS_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"
#include "kernels/kernels.h"

/* Format requested from a packer: {0, 0} (or a NULL pointer) = CSR, {N, M} = N:M. */
struct efc_sp_fmt {
    int32_t nm_n, nm_m;
};

/* Sparse weights packed by one variant. */
struct efc_spmm_w {
    int32_t out, in;    /* rows of W (output channels), columns (reduction length) */
    int32_t nm_n, nm_m; /* the format: 0, 0 = CSR; else N:M */
    int64_t nnz;        /* non-zeros of W (CSR: stored entries; N:M: non-zero kept slots) */
    int32_t isa;        /* enum efc_isa of the variant that packed it */
    void *packed;       /* owned, layout private to the variant */
    size_t packed_bytes;
    /* INT8: [out] owned, bias[j] - zp_x * sum_k W[j][k] (as efc_k_qgemm_fold_bias);
     * FP32: NULL (the bias comes with run). */
    int32_t *bias;
};

/* Free what pack allocated and clear the pointers; NULL or an already-finished struct is fine. */
void efc_spmm_w_fini(struct efc_spmm_w *w);

/* EFC_OK if w[out][in] (row-major) satisfies fmt: always for CSR; for N:M, at most N non-zeros
 * in every group of M columns (the last group is the in % M remaining columns). Otherwise
 * EFC_EINVAL with a detail naming the first violating group (row, group, columns, count), or an
 * unsupported pattern. Zero means exact zero (+0 or -0 for floats). */
enum efc_status efc_sp_check_f32(int32_t out, int32_t in, const float *w,
                                 const struct efc_sp_fmt *fmt);
enum efc_status efc_sp_check_s8(int32_t out, int32_t in, const int8_t *w,
                                const struct efc_sp_fmt *fmt);

/* ---- FP32 ---------------------------------------------------------------------------------
 * Pack W[out][in] (dense, row-major) dropping exact zeros, in format fmt (NULL = CSR).
 * EFC_EINVAL: out < 1, in < 1, more than INT32_MAX non-zeros, a bad pattern or W violating it
 * (efc_sp_check_f32); EFC_ENOMEM. *pw is zeroed on error. */
typedef enum efc_status (*efc_k_spmm_f32_pack_fn)(int32_t out, int32_t in, const float *w,
                                                  const struct efc_sp_fmt *fmt,
                                                  struct efc_spmm_w *pw);
/* Row layout (Dense): x is n rows of `in` floats (row stride ldx >= in), y n rows of `out`
 * floats (row stride ldy >= out): y[i][j] = act(b[j] + sum_k x[i][k] W[j][k]); b may be NULL.
 * scratch: efc_k_spmm_f32_scratch(out, in, n) floats (NULL allowed when that is 0). */
typedef void (*efc_k_spmm_f32_fn)(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                                  const float *b, enum efc_k_act act, float *y, size_t ldy,
                                  float *scratch);
/* Column layout (conv-as-GEMM on NCHW, efc_k_im2col_f32's col[K][P]): x[k][i] at x[k * ldx + i]
 * for k < in, i < n (ldx >= n), y[j][i] at y[j * ldy + i] (ldy >= n): the same formula. Needs
 * no scratch. */
typedef void (*efc_k_spmm_f32_t_fn)(const struct efc_spmm_w *w, int32_t n, const float *x,
                                    size_t ldx, const float *b, enum efc_k_act act, float *y,
                                    size_t ldy);
/* A variant = its packer + its runners (they share the private layout). */
struct efc_k_spmm_f32 {
    efc_k_spmm_f32_pack_fn pack;
    efc_k_spmm_f32_fn run;
    efc_k_spmm_f32_t_fn run_t;
};
/* Floats of scratch the row-layout run needs for n rows, any variant: 0 for n <= 1, else
 * min(n, EFC_SPMM_NB) * (in + out) (one transposed tile of x and of y). */
#define EFC_SPMM_NB 64
size_t efc_k_spmm_f32_scratch(int32_t out, int32_t in, int32_t n);

/* ---- INT8 ---------------------------------------------------------------------------------
 * Scheme and requantisation: kernels.h "INT8" (u8 activations with zero point zp_x, int8
 * weights, int32 accumulation wrapping like efc_k_qgemm_u8s8__ref, the efc_requant rule).
 * Pack W[out][in] (int8, dense row-major) dropping zeros, with bias[out] (NULL = 0) folded as
 * efc_k_qgemm_fold_bias does (the row sums of W = of the stored weights), so the result is
 * bit-exact with the dense qgemm on the same W. EFC_EINVAL as for FP32, or zp_x outside
 * 0..255; EFC_ENOMEM. *pw is zeroed on error. */
typedef enum efc_status (*efc_k_spmm_u8s8_pack_fn)(int32_t out, int32_t in, const int8_t *w,
                                                   const int32_t *bias, int32_t zp_x,
                                                   const struct efc_sp_fmt *fmt,
                                                   struct efc_spmm_w *pw);
/* y[i][j] = requant_j(bias'[j] + sum_k x[i][k] W[j][k]) for i < n, j < out, with x n rows of
 * `in` uint8 (stride ldx >= in) and y n rows of `out` uint8 (stride ldy >= out): the contract of
 * efc_k_qgemm_fn. Needs no scratch. */
typedef void (*efc_k_spmm_u8s8_fn)(const struct efc_spmm_w *w, const struct efc_requant *rq,
                                   int32_t n, const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy);
struct efc_k_spmm_u8s8 {
    efc_k_spmm_u8s8_pack_fn pack;
    efc_k_spmm_u8s8_fn run;
};

/* ---- Shared by the variants' packers (kernels/ref/sparse.c) ------------------------------
 * Validate out, in, fmt and (for N:M) the pattern, count the non-zeros and fill the header
 * fields of *pw (zeroed first); the INT8 one also allocates and folds the bias. */
enum efc_status efc_sp_pack_begin_f32(int32_t out, int32_t in, const float *w,
                                      const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw);
enum efc_status efc_sp_pack_begin_s8(int32_t out, int32_t in, const int8_t *w, const int32_t *bias,
                                     int32_t zp_x, const struct efc_sp_fmt *fmt,
                                     struct efc_spmm_w *pw);

/* The layout of the x86 variants, "SELL-W" (sliced ELL over windows of x): rows are cut into
 * panels of `lanes` consecutive rows, columns into segments of `win`; a block (panel,
 * segment) becomes ceil(max_r cnt_r / slots) steps, cnt_r being row r's non-zeros in the
 * segment (blocks without any have no step). Step t of a block gives lane r the entries
 * t * slots .. t * slots + slots - 1 of row r in the segment, or padding (value 0, index 0).
 * Each step records the start of its window of x, off = min(seg * win, in - win) (the last
 * window slides back so that no read passes `in`; 0 when in < win, where the runner copies x
 * to a padded buffer), and per slot the column minus off (< win). Entry (lane r, slot q) of a
 * step is at position r * slots + q of idx; of val too in natural order, or, for int8 in
 * EFC_SP_ORDER_UNPACK, where an in-lane unpack of 128-bit lanes leaves it (position p =
 * 16 L + b, b < 8 -> 8 L + b, b >= 8 -> 8 * V + 8 L + b - 8 with V = lanes * slots / 16
 * 128-bit lanes): vpmovsxbw of each half then lines up with vpunpck{l,h}bw of the looked-up x.
 * FP32 packs also keep a CSR (int32 columns) for the batch SpMM. One allocation: the
 * efc_spmm_w's `packed` points at this header. */
enum efc_sp_order { EFC_SP_ORDER_NATURAL = 0, EFC_SP_ORDER_UNPACK = 1 };
struct efc_sp_simd {
    int32_t lanes, win, slots;
    int32_t n_panels, n_steps;
    const int32_t *panel_step; /* [n_panels + 1] first step of each panel */
    const int32_t *step_off;   /* [n_steps] window start (elements of x) */
    const uint8_t *idx;        /* [n_steps][lanes * slots], 64-byte aligned */
    const void *val;           /* [n_steps][lanes * slots] float or int8, 64-byte aligned */
    const int32_t *row_ptr;    /* FP32: [out + 1] */
    const int32_t *col;        /* FP32: [nnz] */
    const float *cval;         /* FP32: [nnz] */
};
/* Finish an FP32 pack begun with efc_sp_pack_begin_f32: SELL-W with slots = 1 plus the CSR;
 * lanes * slots <= 64, win <= 256. EFC_ENOMEM / EFC_EINVAL (layout too large). */
enum efc_status efc_sp_pack_simd_f32(const float *w, int32_t lanes, int32_t win, enum efc_isa isa,
                                     struct efc_spmm_w *pw);
/* Finish an INT8 pack begun with efc_sp_pack_begin_s8: SELL-W with win = 16, slots = 4. */
enum efc_status efc_sp_pack_simd_s8(const int8_t *w, int32_t lanes, enum efc_sp_order order,
                                    enum efc_isa isa, struct efc_spmm_w *pw);

#endif
