/* lowrank.h — low-rank factorisation of Dense layers (docs/policies.md "lowrank").
 *
 * Each f32 Dense layer W[out, in] is factorised by truncated SVD (LAPACK sgesvd from OpenBLAS,
 * kernels/blas.h) into two Dense layers, x -> W1[r, in] -> W2[out, r] (+ the original bias and
 * activation), with W1 = sqrt(S_r) V_r^T and W2 = U_r sqrt(S_r): the best rank-r approximation
 * in the Frobenius norm (Eckart-Young), split evenly. r is `rank`, or the smallest rank whose
 * leading singular values hold `energy` of the sum of their squares. A layer is left alone
 * when r * (in + out) >= in * out (factorising would not save weights).
 */
#ifndef EFC_COMPRESS_LOWRANK_H
#define EFC_COMPRESS_LOWRANK_H

#include <stdint.h>

#include "model/model.h"

struct efc_lowrank_report {
    int32_t dense_layers, factorised;
    int64_t params_before, params_after; /* weights of the factorised layers */
};

/* Factorise m's Dense layers in place (rank > 0, else energy in (0, 1]); layers whose
 * min(out, in) is at most `rank` are kept. Errors: EFC_EINVAL (no f32 Dense layer, or rank
 * above every layer's min(out, in)), EFC_EUNSUPPORTED (no LAPACK), EFC_ENOMEM. */
enum efc_status efc_lowrank(struct efc_model *m, int32_t rank, double energy,
                            struct efc_lowrank_report *rep);

/* The largest min(out, in) over m's f32 Dense layers (0: none). */
int32_t efc_lowrank_max_rank(const struct efc_model *m);

#endif
