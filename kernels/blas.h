/* blas.h — OpenBLAS behind one door: core selection, threads, sgemm/sgemv.
 *
 * The OpenBLAS trap (NOTES.md): Debian's 0.3.21 does not know recent CPUs and silently runs
 * an older core (Prescott SSE3 on Sapphire Rapids, Haswell AVX2 on Zen 5). The core is
 * chosen when the library loads, from OPENBLAS_CORETYPE. efc does not link OpenBLAS: it opens
 * it at the first BLAS call, after efc_blas_setup() — called first thing in main() of every
 * efc program — has set OPENBLAS_CORETYPE to the best core for this CPU, capped by the ISA cap
 * (ref -> Prescott, avx2 -> Haswell, avx512* -> SkylakeX, or Cooperlake when the CPU has
 * AVX512-BF16), replacing an inherited value that differs (one log line). Without the library
 * the FP32 GEMM falls back to a portable loop. Only kernels/ calls OpenBLAS.
 */
#ifndef EFC_KERNELS_BLAS_H
#define EFC_KERNELS_BLAS_H

#include <stdbool.h>

#include "common/efc_status.h"

#include "kernels/cpu_features.h"

/* Choose the core for cap (sets OPENBLAS_CORETYPE); before any BLAS call. */
void efc_blas_setup(enum efc_isa cap);
/* Core OpenBLAS runs ("SkylakeX"); loads the library if needed; "none" without it. */
const char *efc_blas_core(void);
/* The same without loading: the core OpenBLAS runs, or will run once loaded. */
const char *efc_blas_core_planned(void);
/* Core efc wants for this CPU and cap (NULL off x86-64: the library's choice). */
const char *efc_blas_core_wanted(enum efc_isa cap);
/* Threads for OpenBLAS (applied at load if not loaded yet); >= 1. */
void efc_blas_set_threads(int n);
int efc_blas_threads(void);
/* The count passed to efc_blas_set_threads, 0 if never called (the library's default). */
int efc_blas_threads_requested(void);

/* Row-major C = alpha * op(A) * op(B) + beta * C; op(X) = X or X^T (trans != 0). */
void efc_k_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* Row-major y = alpha * op(A) x + beta * y, A is m x n. */
void efc_k_sgemv(bool trans_a, int m, int n, float alpha, const float *a, int lda,
                 const float *x, float beta, float *y);

/* Thin SVD of the row-major rows x cols matrix w = u diag(s) vt: k = min(rows, cols) singular
 * values s descending, u (rows x k) and vt (k x cols) row-major. LAPACK sgesvd from OpenBLAS.
 * Errors: EFC_EUNSUPPORTED (no LAPACK), EFC_EINTERNAL (no convergence), EFC_ENOMEM. */
enum efc_status efc_svd_f32(int rows, int cols, const float *w, float *s, float *u, float *vt);

#endif
