/* blas.h — OpenBLAS behind one door: core selection, threads, sgemm/sgemv.
 *
 * The OpenBLAS trap (NOTES.md): Debian's 0.3.21 does not know recent CPUs and silently runs
 * an older core (Prescott SSE3 on Sapphire Rapids, Haswell AVX2 on Zen 5). The core is
 * chosen when the library loads, from OPENBLAS_CORETYPE, so efc_blas_setup() — called first
 * thing in main() of every efc program — compares openblas_get_corename() with the best core
 * for this CPU (capped by the ISA cap: ref -> Prescott, avx2 -> Haswell, avx512* ->
 * SkylakeX, or Cooperlake when the CPU has AVX512-BF16) and, when they differ and the user
 * did not set OPENBLAS_CORETYPE, re-executes the program with it set, logging one line.
 * Only kernels/ calls OpenBLAS; other modules use these wrappers.
 */
#ifndef EFC_KERNELS_BLAS_H
#define EFC_KERNELS_BLAS_H

#include <stdbool.h>

#include "kernels/cpu_features.h"

/* May not return (execv). argv must be main's argv. */
void efc_blas_setup(int argc, char **argv, enum efc_isa cap);
/* Core OpenBLAS runs now ("SkylakeX"). */
const char *efc_blas_core(void);
/* Core efc wants for this CPU and cap. */
const char *efc_blas_core_wanted(enum efc_isa cap);
void efc_blas_set_threads(int n);
int efc_blas_threads(void);

/* Row-major C = alpha * op(A) * op(B) + beta * C; op(X) = X or X^T (trans != 0). */
void efc_k_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* Row-major y = alpha * op(A) x + beta * y, A is m x n. */
void efc_k_sgemv(bool trans_a, int m, int n, float alpha, const float *a, int lda,
                 const float *x, float beta, float *y);

#endif
