/* efc_policy.h — the compression policy grammar (DESIGN.md "Policies", docs/policies.md).
 *
 * A policy is one string: steps `method(key=value,...)` joined by `+`, applied left to right,
 * e.g. `fp32`, `int8(calib=kl,weights=channel)`, `prune(sparsity=0.9,finetune=3)+int8(calib=kl)`.
 * Grammar (no white space anywhere; the string is an identifier in grids, jobs and the store):
 *   policy := step ('+' step)*
 *   step   := method [ '(' param (',' param)* ')' ]
 *   param  := key '=' value
 *   method, key := [a-z][a-z0-9_]*          (at most EFC_POLICY_NAME_MAX - 1 characters)
 *   value  := [A-Za-z0-9._/:-]+              (at most EFC_POLICY_VALUE_MAX - 1 characters)
 * A key appears at most once per step. Counts are bounded (EFC_POLICY_MAX_STEPS steps,
 * EFC_POLICY_MAX_PARAMS parameters per step). The parser only checks syntax; what a method
 * and its keys mean is the business of whoever runs the step (agent/, compress/).
 * Errors are EFC_EINVAL with a detail naming the policy, the 1-based column and the reason:
 *   policy 'int8(calib=kl' at column 14: expected ')'  (one past the end)
 * Printing is canonical: parse + format gives the same string back (keys in the order
 * written). Caller-storage structs, no allocation; thread-safe (no shared state).
 */
#ifndef EFC_COMMON_POLICY_H
#define EFC_COMMON_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"

#define EFC_POLICY_MAX_STEPS 8
#define EFC_POLICY_MAX_PARAMS 8
#define EFC_POLICY_NAME_MAX 32  /* method and key, including the NUL */
#define EFC_POLICY_VALUE_MAX 64 /* value, including the NUL */
#define EFC_POLICY_STR_MAX 256  /* longest policy string accepted, including the NUL */

struct efc_policy_param {
    char key[EFC_POLICY_NAME_MAX];
    char value[EFC_POLICY_VALUE_MAX];
};

struct efc_policy_step {
    char method[EFC_POLICY_NAME_MAX];
    int32_t n_params;
    struct efc_policy_param params[EFC_POLICY_MAX_PARAMS];
};

struct efc_policy {
    int32_t n_steps;
    struct efc_policy_step steps[EFC_POLICY_MAX_STEPS];
};

/* Parse s into *out. EFC_EINVAL with a detail (see above) for any malformed string;
 * *out is then zeroed. */
enum efc_status efc_policy_parse(const char *s, struct efc_policy *out);
/* Canonical text of p into out (out_len bytes, NUL-terminated). EFC_EINVAL if it does not fit
 * or p holds a step with no method. */
enum efc_status efc_policy_format(const struct efc_policy *p, char *out, size_t out_len);
/* The value of `key` in step st, or NULL if the step has no such key. */
const char *efc_policy_get(const struct efc_policy_step *st, const char *key);

#endif
