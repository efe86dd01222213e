/* candidates.c — grids and cached candidate models (candidates.h). */
#include "compress/candidates.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/efc_alloc.h"
#include "common/efc_buf.h"
#include "common/efc_fs.h"
#include "common/efc_log.h"
#include "common/efc_sha256.h"
#include "common/efc_time.h"
#include "model/efm.h"
#include "model/exec.h"

const char *const efc_grid_default[] = {
    "fp32",
    "int8(calib=percentile,weights=channel)",
    "int8(calib=kl,weights=channel)",
    "int8(calib=minmax,weights=tensor)",
    "prune(sparsity=0.8,finetune=4)+int8(calib=percentile)",
    "prune(sparsity=0.9,finetune=6)+int8(calib=percentile)",
    "nm(n=2,m=4,finetune=3)+int8(calib=percentile)",
    "filters(ratio=0.5,finetune=3)+int8(calib=percentile)",
    "lowrank(energy=0.9,finetune=3)+int8(calib=percentile)",
    "distill(student=mlp,epochs=5)+int8(calib=percentile)",
    NULL,
};

static enum efc_status grid_add(struct efc_grid *g, const char *p, const char *where)
{
    struct efc_policy pol;
    if (g->n >= EFC_GRID_MAX)
        return efc_errf(EFC_EINVAL, "%s: more than %d policies", where, EFC_GRID_MAX);
    if (efc_policy_parse(p, &pol) != EFC_OK)
        return efc_errf(EFC_EINVAL, "%s: %s", where, efc_err_detail());
    snprintf(g->policies[g->n++], EFC_POLICY_STR_MAX, "%s", p);
    return EFC_OK;
}

enum efc_status efc_grid_load(const char *name, struct efc_grid *g)
{
    char line[EFC_POLICY_STR_MAX + 64], where[4200];
    enum efc_status st = EFC_OK;
    memset(g, 0, sizeof(*g));
    if (!strcmp(name, "default")) {
        for (int32_t i = 0; efc_grid_default[i] && st == EFC_OK; i++)
            st = grid_add(g, efc_grid_default[i], "grid default");
        return st;
    }
    FILE *f = fopen(name, "r");
    if (!f)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO,
                        "grid %s: %s (a grid is 'default' or a file of policies)", name,
                        strerror(errno));
    for (int ln = 1; st == EFC_OK && fgets(line, sizeof(line), f); ln++) {
        snprintf(where, sizeof(where), "grid %s:%d", name, ln);
        size_t n = strlen(line);
        if (n && line[n - 1] != '\n' && !feof(f)) {
            st = efc_errf(EFC_EINVAL, "%s: line too long", where);
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
            line[--n] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        st = grid_add(g, s, where);
    }
    fclose(f);
    if (st == EFC_OK && g->n == 0)
        st = efc_errf(EFC_EINVAL, "grid %s: no policy in it", name);
    return st;
}

enum efc_status efc_policy_prefix(const char *s, char *out, size_t len)
{
    struct efc_policy pol;
    enum efc_status st = efc_policy_parse(s, &pol);
    if (st != EFC_OK)
        return st;
    int32_t k = 0;
    while (k < pol.n_steps && !efc_compress_is_device_step(pol.steps[k].method))
        k++;
    if (k == 0) {
        if (len)
            out[0] = '\0';
        return EFC_OK;
    }
    pol.n_steps = k;
    return efc_policy_format(&pol, out, len);
}

enum efc_status efc_compress_store_compact(struct efc_model *m)
{
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *nd = &m->nodes[i];
        if ((nd->op != EFC_OP_DENSE && nd->op != EFC_OP_CONV2D) || nd->n_inputs < 2 ||
            nd->inputs[1] < 0)
            continue;
        int32_t t = nd->inputs[1];
        /* the bytes the tensor takes in the file (sparse indices are coded compactly there) */
        size_t dense = efc_efm_tensor_file_bytes(&m->tensors[t]);
        enum efc_status st = efc_tensor_sparsify(m, t);
        if (st != EFC_OK)
            return st;
        if (efc_efm_tensor_file_bytes(&m->tensors[t]) >= dense &&
            (st = efc_tensor_densify(m, t)) != EFC_OK)
            return st;
    }
    return EFC_OK;
}

static enum efc_status file_digest(const char *path, char hex[65], uint64_t *bytes)
{
    void *buf = NULL;
    size_t n = 0;
    uint8_t d[EFC_SHA256_BYTES];
    enum efc_status st = efc_fs_read_all(path, (size_t)1 << 31, &buf, &n);
    if (st != EFC_OK)
        return st;
    efc_sha256(buf, n, d);
    efc_sha256_hex(d, hex);
    *bytes = n;
    efc_free(buf);
    return EFC_OK;
}

enum efc_status efc_candidate_build(const char *base_path, const char *base_sha,
                                    const char *prefix, const struct efc_compress_opts *opts,
                                    const char *cache_dir, struct efc_candidate *out)
{
    struct efc_sha256 h;
    uint8_t d[EFC_SHA256_BYTES];
    char hex[EFC_SHA256_HEX_BYTES];
    struct efc_model *m = NULL;
    struct efc_policy pol;
    struct efc_compress_report rep;
    struct efc_buf meta = {0};
    struct stat sb;
    enum efc_status st;

    memset(out, 0, sizeof(*out));
    out->val_accuracy = -1.0f;
    if (!prefix[0])
        return efc_errf(EFC_EINVAL, "candidate: empty training prefix (the base model is the "
                                    "candidate)");
    if (mkdir(cache_dir, 0755) != 0 && errno != EEXIST)
        return efc_errf(EFC_EIO, "candidate cache %s: %s", cache_dir, strerror(errno));
    efc_sha256_init(&h);
    efc_sha256_update(&h, base_sha, strlen(base_sha));
    efc_sha256_update(&h, "\n", 1);
    efc_sha256_update(&h, prefix, strlen(prefix));
    efc_sha256_final(&h, d);
    efc_sha256_hex(d, hex);
    int w = snprintf(out->path, sizeof(out->path), "%s/c-%.16s.efm", cache_dir, hex);
    if (w < 0 || (size_t)w >= sizeof(out->path))
        return efc_errf(EFC_EINVAL, "candidate cache %s: path too long", cache_dir);
    if (stat(out->path, &sb) == 0) {
        /* a cached file must load and be the candidate it claims to be */
        if ((st = efc_efm_load(out->path, &m)) == EFC_OK && m->meta_json &&
            strstr(m->meta_json, prefix) && strstr(m->meta_json, base_sha)) {
            efc_model_free(m);
            out->cached = 1;
            return file_digest(out->path, out->sha256, &out->bytes);
        }
        efc_log(EFC_LOG_WARN, "candidates", "%s: not a usable cached candidate for %s (%s); "
                "building it again", out->path, prefix, st == EFC_OK ? "metadata" :
                efc_err_detail());
        efc_model_free(m);
        m = NULL;
    }
    double t0 = efc_time_s();
    if ((st = efc_policy_parse(prefix, &pol)) != EFC_OK || (st = efc_efm_load(base_path, &m)))
        return st;
    if ((st = efc_compress_run(&m, &pol, opts, &rep)) != EFC_OK ||
        (st = efc_compress_store_compact(m)) != EFC_OK)
        goto out;
    out->val_accuracy = rep.n_steps ? rep.steps[rep.n_steps - 1].val_accuracy : -1.0f;
    efc_buf_printf(&meta, "{\"policy\":\"%s\",\"base_sha256\":\"%s\",\"steps\":[", prefix,
                   base_sha);
    for (int32_t k = 0; k < rep.n_steps; k++)
        efc_buf_printf(&meta, "%s{\"step\":\"%s\",\"seconds\":%.2f,\"sparsity\":%.6f,"
                              "\"accuracy\":%.6f}",
                       k ? "," : "", rep.steps[k].step, rep.steps[k].seconds,
                       rep.steps[k].sparsity, rep.steps[k].val_accuracy);
    efc_buf_printf(&meta, "]}");
    if (!meta.p || meta.oom) {
        st = efc_errf(EFC_ENOMEM, "candidate metadata");
        goto out;
    }
    efc_free(m->meta_json);
    m->meta_json = meta.p;
    meta.p = NULL;
    if ((st = efc_efm_save(m, out->path)) != EFC_OK)
        goto out;
    out->seconds = efc_time_s() - t0;
    st = file_digest(out->path, out->sha256, &out->bytes);
out:
    efc_free(meta.p);
    efc_model_free(m);
    return st;
}
