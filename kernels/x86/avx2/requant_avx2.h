/* requant_avx2.h — the kernels.h requantisation on 8 int32 lanes, shared by the AVX2 INT8
 * kernels (qgemm.c, sparse.c). Include only from files compiled with -mavx2. */
#ifndef EFC_KERNELS_X86_AVX2_REQUANT_H
#define EFC_KERNELS_X86_AVX2_REQUANT_H

#include <immintrin.h>

struct rq_vec {
    __m256i mult_e, mult_o, sh_e, sh_o, rnd_e, rnd_o;
};

static inline void rq_vec_make(__m256i mult, __m256i shift, struct rq_vec *v)
{
    const __m256i lo32 = _mm256_set1_epi64x(0xffffffffLL), one = _mm256_set1_epi64x(1);
    v->mult_e = mult;
    v->mult_o = _mm256_srli_epi64(mult, 32);
    v->sh_e = _mm256_and_si256(shift, lo32);
    v->sh_o = _mm256_srli_epi64(shift, 32);
    v->rnd_e = _mm256_sllv_epi64(one, _mm256_sub_epi64(v->sh_e, one));
    v->rnd_o = _mm256_sllv_epi64(one, _mm256_sub_epi64(v->sh_o, one));
}

/* 64-bit arithmetic shift right by per-lane counts (0..63). */
static inline __m256i srav_epi64(__m256i v, __m256i n)
{
    const __m256i s = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
    return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(v, s), n), s);
}

static inline __m256i requant8(__m256i acc, const struct rq_vec *v, __m256i vlo, __m256i vhi,
                               __m256i vzp)
{
    __m256i pe = _mm256_mul_epi32(acc, v->mult_e);
    __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), v->mult_o);
    pe = srav_epi64(_mm256_add_epi64(pe, v->rnd_e), v->sh_e);
    po = srav_epi64(_mm256_add_epi64(po, v->rnd_o), v->sh_o);
    __m256i r = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    r = _mm256_min_epi32(_mm256_max_epi32(r, vlo), vhi);
    return _mm256_add_epi32(r, vzp);
}

/* 8 int32 in [0, 255] -> 8 bytes in the low half. */
static inline __m128i narrow8(__m256i v)
{
    const __m256i pick =
        _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                         -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    __m256i b = _mm256_shuffle_epi8(v, pick);
    return _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
}

#endif
