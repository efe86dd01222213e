/* efc_rng.h — small deterministic PRNG (xoshiro256** seeded by splitmix64).
 *
 * Same seed, same sequence on every platform and build: used for weight initialisation,
 * data shuffling and test inputs. Caller-storage object (_init); one thread per object.
 */
#ifndef EFC_COMMON_RNG_H
#define EFC_COMMON_RNG_H

#include <stdint.h>

struct efc_rng {
    uint64_t s[4];
};

void efc_rng_init(struct efc_rng *r, uint64_t seed);
uint64_t efc_rng_u64(struct efc_rng *r);
/* Uniform in [0, 1). */
float efc_rng_uniform(struct efc_rng *r);
/* Uniform integer in [0, n), n > 0. */
uint32_t efc_rng_below(struct efc_rng *r, uint32_t n);
/* Standard normal (Box-Muller). */
float efc_rng_normal(struct efc_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void efc_rng_shuffle(struct efc_rng *r, int32_t *idx, int32_t n);

#endif
