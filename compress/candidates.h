/* candidates.h — grids of policies and the candidate models their training steps produce.
 *
 * A grid is a list of policies: a file with one policy per line (blank lines and lines
 * starting with '#' ignored), or the built-in `default`. A policy's training prefix is its
 * steps before the device step (prune, nm, filters, distill, lowrank, qat); the coordinator
 * (and `efc candidates`) runs the prefix once on its own training data and ships the result as
 * the jobs' model; the agents run the device step (int8 / fp32) on it with their own data.
 * Candidate models are cached in a directory, one file per (base model, prefix):
 * `<dir>/c-<first 16 hex of SHA-256(base digest, prefix)>.efm`, whose metadata records the
 * prefix and the base digest; a cached file is reused (training is deterministic per seed).
 */
#ifndef EFC_COMPRESS_CANDIDATES_H
#define EFC_COMPRESS_CANDIDATES_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_policy.h"
#include "compress/compress.h"

#define EFC_GRID_MAX 64

struct efc_grid {
    int32_t n;
    char policies[EFC_GRID_MAX][EFC_POLICY_STR_MAX];
};

/* The built-in grid `default` (docs/policies.md lists it). */
extern const char *const efc_grid_default[];

/* Load a grid: "default", or a file path. Every policy is parsed (syntax only); errors name
 * the file and line. */
enum efc_status efc_grid_load(const char *name, struct efc_grid *g);

/* The training prefix of policy s (its steps before the first device step) as canonical
 * text, "" when it has none. EFC_EINVAL for a malformed policy. */
enum efc_status efc_policy_prefix(const char *s, char *out, size_t len);

struct efc_candidate {
    char path[4096];
    char sha256[65];
    uint64_t bytes;
    int cached;      /* 1: reused from the cache */
    double seconds;  /* build time (0 when cached) */
    float val_accuracy; /* after the training steps, on opts.val, or -1 (also when cached) */
};

/* Build (or reuse) the candidate for `prefix` from the base model at base_path (digest
 * base_sha) in cache_dir (created if missing). opts: training data and settings (teacher paths
 * are resolved against opts.base_dir). Errors: the policy's (efc_compress_check) or training's,
 * EFC_EIO for the cache directory. */
enum efc_status efc_candidate_build(const char *base_path, const char *base_sha,
                                    const char *prefix, const struct efc_compress_opts *opts,
                                    const char *cache_dir, struct efc_candidate *out);

/* Store pruned weight tensors as CSR where that takes fewer bytes in the .efm file (after
 * pruning; model/efm.h efc_efm_tensor_file_bytes). */
enum efc_status efc_compress_store_compact(struct efc_model *m);

#endif
