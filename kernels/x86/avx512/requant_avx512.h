/* requant_avx512.h — the kernels.h requantisation on 16 int32 lanes, shared by the AVX-512
 * INT8 kernels (avx512vnni/qgemm.c, avx512/sparse.c, avx512vnni/sparse.c). Include only from
 * files compiled with the AVX-512 F/BW/VL/DQ flags. */
#ifndef EFC_KERNELS_X86_AVX512_REQUANT_H
#define EFC_KERNELS_X86_AVX512_REQUANT_H

#include <immintrin.h>

/* The rule of kernels.h on 16 lanes: ((int64)acc * mult + 2^(shift-1)) >> shift (arithmetic),
 * then clamp(. + zp, lo, hi) done as clamp(., lo - zp, hi - zp) + zp so nothing overflows.
 * Even lanes are multiplied in place, odd lanes after a 32-bit shift down; the odd results'
 * low halves are moved back up with a merge-masked vpshufd. */
struct rq_vec {
    __m512i mult_e, mult_o, sh_e, sh_o, rnd_e, rnd_o;
};

static inline void rq_vec_make(__m512i mult, __m512i shift, struct rq_vec *v)
{
    const __m512i lo32 = _mm512_set1_epi64(0xffffffffLL), one = _mm512_set1_epi64(1);
    v->mult_e = mult;
    v->mult_o = _mm512_srli_epi64(mult, 32);
    v->sh_e = _mm512_and_si512(shift, lo32);
    v->sh_o = _mm512_srli_epi64(shift, 32);
    v->rnd_e = _mm512_sllv_epi64(one, _mm512_sub_epi64(v->sh_e, one));
    v->rnd_o = _mm512_sllv_epi64(one, _mm512_sub_epi64(v->sh_o, one));
}

/* The rounded shift alone: ((int64)acc * mult + 2^(shift-1)) >> shift on 16 lanes (fits int32,
 * kernels.h), before the zero point and the clamp. */
static inline __m512i requant16_raw(__m512i acc, const struct rq_vec *v)
{
    __m512i pe = _mm512_mul_epi32(acc, v->mult_e);
    __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), v->mult_o);
    pe = _mm512_srav_epi64(_mm512_add_epi64(pe, v->rnd_e), v->sh_e);
    po = _mm512_srav_epi64(_mm512_add_epi64(po, v->rnd_o), v->sh_o);
    return _mm512_mask_shuffle_epi32(pe, (__mmask16)0xAAAA, po, _MM_PERM_CDAB);
}

static inline __m512i requant16(__m512i acc, const struct rq_vec *v, __m512i vlo, __m512i vhi,
                                __m512i vzp)
{
    __m512i r = requant16_raw(acc, v);
    r = _mm512_min_epi32(_mm512_max_epi32(r, vlo), vhi);
    return _mm512_add_epi32(r, vzp);
}

#endif
