/* exec.c — compile a model once (fold, fuse, plan), then run it with no allocation.
 *
 * Planning: every activation gets a live range [producing step, last consuming step]
 * (the input is live from step -1, the output to the end); Flatten/Reshape are views that
 * share their input's buffer, so a buffer's range is the union over its views. Buffers are
 * placed greedily by decreasing size at the lowest arena offset that does not overlap any
 * already placed buffer with an intersecting live range (the greedy-by-size heuristic of
 * TFLite's arena planner). Kernel scratch sits after the activations.
 */
#include "model/exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"
#include "kernels/kernels.h"
#include "kernels/sparse.h"
#include "model/exec_int.h"
#include "model/geom.h"

#define ALIGN 64

/* im2col floats per chunk of images on the sparse conv path: the dense path's 512 KB budget
 * (kernels/ref/conv2d.c, half of a Zen 4/5 core's L2), so the columns stay in L2 while the
 * sparse kernel walks them. */
#define SPARSE_CONV_FLOATS ((size_t)128 * 1024)

/* ---- The sparse threshold table (the one place; docs/kernels-sparse.md "In the executors") --
 * Per kernel level (efc_kernels_isa()) and precision: the highest effective density at which
 * `auto` runs a layer sparse, and the factor of an N:M layout: its effective density is
 * n / m * factor (below 1 where its full SELL steps beat CSR's 33-76 % full ones at the same
 * density; ties go to N:M). Set from the crossovers of `efc bench-kernels` (1024 x 1024,
 * batch 1 and 64, docs/kernels-sparse.md) taking the lower batch size's and a margin below
 * it, then checked end to end with `efc bench` on pruned mlp / lenet5 (90 %, 80 %, 2:4, 1:4;
 * FP32 and INT8; batch 1 and 64; each level) — the doc has the sweep:
 *   FP32 ref: ~0.37 (batch 1) / ~0.10 (batch 64, vs OpenBLAS Prescott)           -> 0.08
 *   FP32 avx2: ~0.44 / > 0.5 (vs Haswell)                                         -> 0.40
 *   FP32 avx512(+): > 0.5 / ~0.46 (vs Cooperlake)                                 -> 0.40
 *   INT8 ref: > 0.5 / > 0.5 (portable C both)                                     -> 0.40
 *   INT8 avx2: > 0.5 (1.03x at 0.5) / ~0.27                                       -> 0.20
 *   INT8 avx512 (its dense twin is the AVX2 qgemm): > 0.5 (1.29x) / > 0.5 (1.17x) -> 0.40
 *   INT8 avx512vnni: ~0.19 / ~0.17                                                -> 0.14
 * N:M factors (time of an N:M layer = CSR time at density n / m * factor): INT8 SIMD 2:4 ~
 * CSR 0.2, 1:4 ~ CSR 0.1 -> 0.4; FP32 AVX-512 batch 64 runs the same CSR SpMM for both
 * (2:4 no faster than CSR 0.5; end to end a 2:4 mlp is 1.6x faster at batch 1 but 1.2x slower
 * at 64) -> 1.0; FP32 AVX2: 2:4 ~ CSR 0.26 at batch 1, and end to end faster at 1 and 64
 * -> 0.6; the reference N:M loop decodes metadata per slot and is slower than its CSR at the
 * same density (INT8 2:4: 1.9x vs 4.1x over dense at batch 1) -> 2.0 (use CSR).
 * AMX: no AMX GEMM yet, so the VNNI row; NEON: no NEON sparse variants, so the reference row
 * (not measured there). */
struct sparse_threshold {
    enum efc_isa isa;
    double f32_max, f32_nm, s8_max, s8_nm;
};
/* clang-format off */
static const struct sparse_threshold SPARSE_THRESHOLDS[] = {
    /* isa               FP32 max  N:M     INT8 max  N:M */
    {EFC_ISA_REF,         0.08,    2.0,     0.40,    2.0},
    {EFC_ISA_AVX2,        0.40,    0.6,     0.20,    0.4},
    {EFC_ISA_AVX512,      0.40,    1.0,     0.40,    0.4},
    {EFC_ISA_AVX512VNNI,  0.40,    1.0,     0.14,    0.4},
    {EFC_ISA_AMX,         0.40,    1.0,     0.14,    0.4},
    {EFC_ISA_NEON,        0.08,    2.0,     0.40,    2.0},
};
/* clang-format on */

void efc_exec_sparse_threshold(enum efc_isa isa, int int8, double *max_density, double *nm_factor)
{
    const struct sparse_threshold *t = &SPARSE_THRESHOLDS[0];
    for (size_t i = 0; i < sizeof(SPARSE_THRESHOLDS) / sizeof(SPARSE_THRESHOLDS[0]); i++)
        if (SPARSE_THRESHOLDS[i].isa == isa)
            t = &SPARSE_THRESHOLDS[i];
    *max_density = int8 ? t->s8_max : t->f32_max;
    *nm_factor = int8 ? t->s8_nm : t->f32_nm;
}

enum efc_status efc_exec_sparse_cfg_from_env(struct efc_exec_sparse_cfg *out)
{
    const char *v = getenv("EFC_SPARSE");
    char *end = NULL;
    double d;

    out->mode = EFC_EXEC_SPARSE_AUTO;
    out->max_density = -1.0;
    if (!v || !v[0] || !strcmp(v, "auto"))
        return EFC_OK;
    if (!strcmp(v, "off")) {
        out->mode = EFC_EXEC_SPARSE_OFF;
        return EFC_OK;
    }
    if (!strcmp(v, "on")) {
        out->mode = EFC_EXEC_SPARSE_ON;
        return EFC_OK;
    }
    d = strtod(v, &end);
    if (end != v && !*end && d >= 0.0 && d <= 1.0) {
        out->max_density = d;
        return EFC_OK;
    }
    return efc_errf(EFC_EINVAL, "exec: EFC_SPARSE=%.32s: not auto, off, on or a density in [0, 1]",
                    v);
}

const char *efc_exec_sparse_mode_name(enum efc_exec_sparse_mode mode)
{
    switch (mode) {
    case EFC_EXEC_SPARSE_AUTO:
        return "auto";
    case EFC_EXEC_SPARSE_OFF:
        return "off";
    case EFC_EXEC_SPARSE_ON:
        return "on";
    }
    return "?";
}

void efc_exec_sparse_decide(const struct efc_exec_sparse_cfg *cfg, int int8, int32_t rows,
                            int32_t k, const void *w, struct efc_exec_layer *info)
{
    /* finest first: a 1:4 layer also satisfies 2:4 */
    static const struct efc_sp_fmt patterns[] = {{1, 4}, {2, 4}};
    size_t numel = (size_t)rows * (size_t)k;
    double max_d, nm_factor, eff_csr, eff_nm = 2.0;
    int64_t nnz = 0;

    info->int8 = int8;
    info->rows = rows;
    info->k = k;
    info->nm_n = info->nm_m = 0;
    info->sparse = 0;
    info->format[0] = '\0';
    if (int8) {
        const int8_t *q = w;
        for (size_t i = 0; i < numel; i++)
            nnz += q[i] != 0;
    } else {
        const float *f = w;
        for (size_t i = 0; i < numel; i++)
            nnz += f[i] != 0.0f; /* -0 is a zero too */
    }
    info->nnz = nnz;
    info->density = numel ? (double)nnz / (double)numel : 0.0;
    /* The check is only worth its pass over W when the pattern's density is possible. */
    for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
        const struct efc_sp_fmt *f = &patterns[i];
        if (info->density > (double)f->nm_n / f->nm_m)
            continue;
        if ((int8 ? efc_sp_check_s8(rows, k, w, f) : efc_sp_check_f32(rows, k, w, f)) == EFC_OK) {
            info->nm_n = f->nm_n;
            info->nm_m = f->nm_m;
            break;
        }
    }
    if (cfg->mode == EFC_EXEC_SPARSE_OFF)
        return;
    efc_exec_sparse_threshold(efc_kernels_isa(), int8, &max_d, &nm_factor);
    if (cfg->max_density >= 0.0)
        max_d = cfg->max_density;
    eff_csr = info->density;
    if (info->nm_m)
        eff_nm = (double)info->nm_n / info->nm_m * nm_factor;
    if (cfg->mode == EFC_EXEC_SPARSE_AUTO && (eff_nm <= eff_csr ? eff_nm : eff_csr) > max_d)
        return;
    info->sparse = 1;
    if (eff_nm <= eff_csr)
        snprintf(info->format, sizeof(info->format), "%d:%d", info->nm_n, info->nm_m);
    else
        snprintf(info->format, sizeof(info->format), "csr");
}

void efc_exec_layer_fmt(const struct efc_exec_layer *l, struct efc_sp_fmt *f)
{
    f->nm_n = f->nm_m = 0;
    if (l->sparse && strcmp(l->format, "csr") != 0) {
        f->nm_n = l->nm_n;
        f->nm_m = l->nm_m;
    }
}

struct step {
    struct efc_node *n;
    struct efc_qstep *q;          /* INT8 step (exec_q.c), or NULL */
    float *aux_scale, *aux_shift; /* unfused BatchNorm as a channel affine */
    int32_t sparse;               /* FP32 Dense / Conv2d run efc_kernels()->spmm_f32 on sw */
    struct efc_spmm_w sw;
    int32_t conv_chunk; /* sparse conv via im2col: images per chunk, 0 = 1x1 direct */
};

struct efc_exec {
    struct efc_model *m; /* compiled copy */
    int32_t max_batch;
    struct step *steps;
    int32_t n_steps;
    size_t *offset; /* per tensor: byte offset in the arena (activations) */
    int32_t *root;  /* per tensor: the tensor whose buffer it uses */
    uint8_t *arena;
    size_t arena_bytes, scratch_bytes;
    float *scratch;
    size_t weight_bytes;
    float *aux; /* storage for aux_scale/aux_shift */
    efc_exec_observer_fn observer;
    void *observer_ctx;
    struct efc_exec_sparse_cfg sparse;
    struct efc_exec_layer *layers; /* GEMM-shaped layers, in step order */
    int32_t n_layers, n_sparse;
};

static size_t align_up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

/* Number of nodes reading tensor t (as any input). */
static int32_t n_consumers(const struct efc_model *m, int32_t t)
{
    int32_t c = 0;
    for (int32_t i = 0; i < m->n_nodes; i++)
        for (int32_t j = 0; j < m->nodes[i].n_inputs; j++)
            c += m->nodes[i].inputs[j] == t;
    return c;
}

static int32_t producer(const struct efc_model *m, int32_t t)
{
    for (int32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].output == t)
            return i;
    return -1;
}

static void remove_node(struct efc_model *m, int32_t i)
{
    memmove(&m->nodes[i], &m->nodes[i + 1], (size_t)(m->n_nodes - i - 1) * sizeof(*m->nodes));
    m->n_nodes--;
}

/* Fold BatchNorm into the conv / dense that produces its input:
 * W'[o] = W[o] * g[o] / sqrt(var[o] + eps), b'[o] = (b[o] - mean[o]) * that + beta[o]. */
static enum efc_status fold_batchnorm(struct efc_model *m)
{
    for (int32_t i = 0; i < m->n_nodes; i++) {
        struct efc_node *bn = &m->nodes[i];
        int32_t p, oc, bias;
        struct efc_node *pn;
        const float *g, *be, *mu, *var;
        float *w, *b;
        size_t per;

        if (bn->op != EFC_OP_BATCHNORM)
            continue;
        p = producer(m, bn->inputs[0]);
        if (p < 0 || (m->nodes[p].op != EFC_OP_CONV2D && m->nodes[p].op != EFC_OP_DENSE) ||
            m->nodes[p].a.act != EFC_ACT_NONE || n_consumers(m, bn->inputs[0]) != 1 ||
            bn->inputs[0] == m->output)
            continue;
        pn = &m->nodes[p];
        oc = m->tensors[pn->inputs[1]].dims[0];
        bias = pn->n_inputs > 2 ? pn->inputs[2] : -1;
        if (bias < 0) {
            char name[EFC_NAME_MAX];
            enum efc_status st;
            snprintf(name, sizeof(name), "%.*s.bias", EFC_NAME_MAX - 6, pn->name);
            st = efc_model_add_tensor(m, name, EFC_DTYPE_F32, 1, &oc, EFC_TENSOR_PARAM, &bias);
            if (st)
                return st;
            pn = &m->nodes[p];
            bn = &m->nodes[i];
            pn->inputs[2] = bias;
            pn->n_inputs = 3;
        }
        g = m->tensors[bn->inputs[1]].data;
        be = m->tensors[bn->inputs[2]].data;
        mu = m->tensors[bn->inputs[3]].data;
        var = m->tensors[bn->inputs[4]].data;
        w = m->tensors[pn->inputs[1]].data;
        b = m->tensors[bias].data;
        per = efc_tensor_numel(&m->tensors[pn->inputs[1]]) / (size_t)oc;
        for (int32_t o = 0; o < oc; o++) {
            float s = g[o] / sqrtf(var[o] + bn->a.eps);
            for (size_t k = 0; k < per; k++)
                w[(size_t)o * per + k] *= s;
            b[o] = (b[o] - mu[o]) * s + be[o];
        }
        pn->output = bn->output;
        remove_node(m, i);
        i--;
    }
    return EFC_OK;
}

/* Fuse ReLU / ReLU6 into a conv, dense or add that produces its only input. */
static void fuse_activations(struct efc_model *m)
{
    for (int32_t i = 0; i < m->n_nodes; i++) {
        struct efc_node *r = &m->nodes[i];
        int32_t p;
        if (r->op != EFC_OP_RELU && r->op != EFC_OP_RELU6)
            continue;
        p = producer(m, r->inputs[0]);
        if (p < 0 || m->nodes[p].a.act != EFC_ACT_NONE || n_consumers(m, r->inputs[0]) != 1 ||
            r->inputs[0] == m->output)
            continue;
        if (m->nodes[p].op != EFC_OP_CONV2D && m->nodes[p].op != EFC_OP_DENSE &&
            m->nodes[p].op != EFC_OP_ADD)
            continue;
        m->nodes[p].a.act = r->op == EFC_OP_RELU ? EFC_ACT_RELU : EFC_ACT_RELU6;
        m->nodes[p].output = r->output;
        remove_node(m, i);
        i--;
    }
}

static int is_view(enum efc_op op)
{
    return op == EFC_OP_FLATTEN || op == EFC_OP_RESHAPE;
}

static enum efc_status plan(struct efc_exec *e)
{
    struct efc_model *m = e->m;
    int32_t nt = m->n_tensors;
    int32_t *first = efc_malloc((size_t)nt * sizeof(int32_t));
    int32_t *last = efc_malloc((size_t)nt * sizeof(int32_t));
    int32_t *order = efc_malloc((size_t)nt * sizeof(int32_t));
    uint8_t *placed = efc_calloc((size_t)nt, 1);
    size_t *size = efc_calloc((size_t)nt, sizeof(size_t));
    int32_t n_order = 0;
    size_t top = 0;
    enum efc_status st = EFC_OK;

    e->offset = efc_calloc((size_t)nt, sizeof(size_t));
    e->root = efc_malloc((size_t)nt * sizeof(int32_t));
    if (!first || !last || !order || !placed || !size || !e->offset || !e->root) {
        st = efc_errf(EFC_ENOMEM, "exec: out of memory planning");
        goto out;
    }
    for (int32_t t = 0; t < nt; t++) {
        e->root[t] = t;
        first[t] = last[t] = -2;
    }
    for (int32_t s = 0; s < m->n_nodes; s++)
        if (is_view(m->nodes[s].op))
            e->root[m->nodes[s].output] = e->root[m->nodes[s].inputs[0]];
    first[m->input] = last[m->input] = -1;
    for (int32_t s = 0; s < m->n_nodes; s++) {
        struct efc_node *n = &m->nodes[s];
        int32_t r = e->root[n->output];
        if (first[r] == -2)
            first[r] = s;
        last[r] = s > last[r] ? s : last[r];
        for (int32_t j = 0; j < n->n_inputs; j++) {
            int32_t t = n->inputs[j];
            if (t < 0 || (m->tensors[t].flags & EFC_TENSOR_PARAM))
                continue;
            last[e->root[t]] = s;
        }
    }
    last[e->root[m->output]] = m->n_nodes;
    for (int32_t t = 0; t < nt; t++) {
        if (e->root[t] != t || first[t] == -2 || (m->tensors[t].flags & EFC_TENSOR_PARAM))
            continue;
        size[t] = align_up(efc_tensor_bytes(&m->tensors[t]) * (size_t)e->max_batch);
        order[n_order++] = t;
    }
    /* sort by size descending (insertion sort: tens of tensors) */
    for (int32_t i = 1; i < n_order; i++)
        for (int32_t j = i; j > 0 && size[order[j]] > size[order[j - 1]]; j--) {
            int32_t x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    for (int32_t i = 0; i < n_order; i++) {
        int32_t t = order[i];
        size_t off = 0;
        int moved = 1;
        while (moved) {
            moved = 0;
            for (int32_t j = 0; j < i; j++) {
                int32_t u = order[j];
                if (last[u] < first[t] || last[t] < first[u])
                    continue; /* lifetimes disjoint */
                if (off < e->offset[u] + size[u] && e->offset[u] < off + size[t]) {
                    off = e->offset[u] + size[u];
                    moved = 1;
                }
            }
        }
        e->offset[t] = off;
        placed[t] = 1;
        if (off + size[t] > top)
            top = off + size[t];
    }
    for (int32_t t = 0; t < nt; t++)
        e->offset[t] = e->offset[e->root[t]];
    e->arena_bytes = top;
out:
    efc_free(first);
    efc_free(last);
    efc_free(order);
    efc_free(placed);
    efc_free(size);
    return st;
}

/* An FP32 Dense or Conv2d with groups 1: decide dense or sparse (efc_exec_sparse_decide on
 * the weights in the order the kernel reads them: W[out][in], and for a conv W[oc][c kh kw],
 * which is the im2col row order), pack the sparse weights, and size the scratch. */
static enum efc_status prep_f32_gemm(struct efc_exec *e, struct step *sp, size_t *scratch)
{
    const struct efc_node *n = sp->n;
    const struct efc_tensor *wt = &e->m->tensors[n->inputs[1]];
    struct efc_exec_layer *l = &e->layers[e->n_layers];
    struct efc_conv_geom g;
    struct efc_sp_fmt fmt;
    int32_t rows = wt->dims[0], k = 0;
    enum efc_status st;

    memset(&g, 0, sizeof(g));
    memset(l, 0, sizeof(*l));
    snprintf(l->name, sizeof(l->name), "%s", n->name);
    l->op = n->op;
    if (n->op == EFC_OP_DENSE) {
        k = wt->dims[1];
    } else {
        efc_node_conv_geom(e->m, n, e->max_batch, &g);
        k = g.c * g.kh * g.kw;
    }
    efc_exec_sparse_decide(&e->sparse, 0, rows, k, wt->data, l);
    e->n_layers++;
    if (!l->sparse) {
        *scratch = n->op == EFC_OP_CONV2D ? efc_k_conv2d_f32_scratch(&g) * sizeof(float) : 0;
        return EFC_OK;
    }
    efc_exec_layer_fmt(l, &fmt);
    if ((st = efc_kernels()->spmm_f32->pack(rows, k, wt->data, &fmt, &sp->sw)))
        return st;
    sp->sparse = 1;
    e->n_sparse++;
    efc_log(EFC_LOG_DEBUG, "exec", "layer %s: density %.4f, %s sparse", n->name, l->density,
            l->format);
    if (n->op == EFC_OP_DENSE) {
        *scratch = efc_k_spmm_f32_scratch(rows, k, e->max_batch) * sizeof(float);
        return EFC_OK;
    }
    if (g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.oh == g.h &&
        g.ow == g.w) {
        sp->conv_chunk = 0; /* the input image already is the [c x H*W] column matrix */
        *scratch = 0;
        return EFC_OK;
    }
    {
        size_t per = (size_t)k * (size_t)g.oh * (size_t)g.ow, nc = SPARSE_CONV_FLOATS / per;
        nc = nc < 1 ? 1 : nc > (size_t)e->max_batch ? (size_t)e->max_batch : nc;
        sp->conv_chunk = (int32_t)nc;
        *scratch = nc * per * sizeof(float);
    }
    return EFC_OK;
}

/* Sparse Conv2d (groups 1) on NCHW: the columns of each image, from im2col over a chunk of
 * images (or the image itself for a 1x1 stride-1 conv), go through the column-layout sparse
 * kernel straight into the image's output rows (bias and activation included). */
static void sparse_conv(const struct step *sp, const struct efc_conv_geom *g, const float *x,
                        const float *b, float *y, float *scratch, enum efc_k_act act)
{
    const struct efc_k_spmm_f32 *k = efc_kernels()->spmm_f32;
    size_t p = (size_t)g->oh * g->ow, hw = (size_t)g->h * g->w;

    if (sp->conv_chunk == 0) {
        for (int32_t img = 0; img < g->n; img++)
            k->run_t(&sp->sw, (int32_t)p, x + (size_t)img * g->c * hw, hw, b, act,
                     y + (size_t)img * g->oc * p, p);
        return;
    }
    for (int32_t i0 = 0; i0 < g->n; i0 += sp->conv_chunk) {
        int32_t nc = g->n - i0 < sp->conv_chunk ? g->n - i0 : sp->conv_chunk;
        efc_k_im2col_f32(g, x, i0, nc, 0, scratch);
        for (int32_t img = 0; img < nc; img++)
            k->run_t(&sp->sw, (int32_t)p, scratch + (size_t)img * p, (size_t)nc * p, b, act,
                     y + (size_t)(i0 + img) * g->oc * p, p);
    }
}

enum efc_status efc_exec_new(const struct efc_model *src, const struct efc_exec_opts *o,
                             struct efc_exec **out)
{
    struct efc_exec *e;
    struct efc_hwc *hwc = NULL;
    enum efc_status st;
    size_t n_aux = 0;

    if (!o || o->max_batch < 1)
        return efc_errf(EFC_EINVAL, "exec: max_batch must be >= 1");
    if ((st = efc_kernels_init_env()))
        return st;
    e = efc_calloc(1, sizeof(*e));
    if (!e)
        return efc_errf(EFC_ENOMEM, "exec: out of memory");
    e->max_batch = o->max_batch;
    if ((st = efc_exec_sparse_cfg_from_env(&e->sparse)))
        goto fail;
    /* The compiled FP32 graph is dense: sparse weights are expanded in the copy (after the
     * check has validated their structure). */
    if ((st = efc_model_clone(src, &e->m)) || (st = efc_model_check(e->m)) ||
        (st = efc_model_densify(e->m)) || (st = fold_batchnorm(e->m)))
        goto fail;
    fuse_activations(e->m);
    if ((st = efc_model_check(e->m)) || (st = plan(e)))
        goto fail;
    if (e->m->tensors[e->m->input].dtype != EFC_DTYPE_F32 ||
        e->m->tensors[e->m->output].dtype != EFC_DTYPE_F32) {
        st = efc_errf(EFC_EUNSUPPORTED, "exec: model input and output must be f32 (an INT8 "
                                        "model quantises its input and dequantises its output)");
        goto fail;
    }
    if (!(hwc = efc_malloc((size_t)e->m->n_tensors * sizeof(*hwc))))
        goto oom;
    if ((st = efc_exec_q_layouts(e->m, hwc)))
        goto fail;

    e->steps = efc_calloc((size_t)e->m->n_nodes, sizeof(*e->steps));
    e->layers = efc_calloc((size_t)e->m->n_nodes + 1, sizeof(*e->layers));
    if (!e->steps || !e->layers)
        goto oom;
    e->n_steps = e->m->n_nodes;
    for (int32_t s = 0; s < e->n_steps; s++) {
        struct efc_node *n = &e->m->nodes[s];
        e->steps[s].n = n;
        if (efc_exec_q_is_int8(e->m, n)) {
            const struct efc_exec_layer *l;
            size_t sb;
            if ((st = efc_qstep_new(e->m, hwc, n, e->max_batch, &e->sparse, &e->steps[s].q, &sb)))
                goto fail;
            if (align_up(sb) > e->scratch_bytes)
                e->scratch_bytes = align_up(sb);
            if ((l = efc_qstep_layer(e->steps[s].q)) != NULL) {
                e->layers[e->n_layers++] = *l;
                e->n_sparse += l->sparse;
            }
            continue;
        }
        if (n->op == EFC_OP_BATCHNORM)
            n_aux += 2 * (size_t)e->m->tensors[n->inputs[0]].dims[0];
        if (n->op == EFC_OP_DENSE || (n->op == EFC_OP_CONV2D && n->a.groups == 1)) {
            size_t sb;
            if ((st = prep_f32_gemm(e, &e->steps[s], &sb)))
                goto fail;
            if (align_up(sb) > e->scratch_bytes)
                e->scratch_bytes = align_up(sb);
        } else if (n->op == EFC_OP_CONV2D) {
            struct efc_conv_geom g;
            size_t sb;
            efc_node_conv_geom(e->m, n, e->max_batch, &g);
            sb = efc_k_conv2d_f32_scratch(&g) * sizeof(float);
            if (sb > e->scratch_bytes)
                e->scratch_bytes = align_up(sb);
        }
    }
    if (n_aux && !(e->aux = efc_malloc(n_aux * sizeof(float))))
        goto oom;
    n_aux = 0;
    for (int32_t s = 0; s < e->n_steps; s++) {
        struct efc_node *n = e->steps[s].n;
        int32_t c;
        if (n->op != EFC_OP_BATCHNORM)
            continue;
        c = e->m->tensors[n->inputs[0]].dims[0];
        e->steps[s].aux_scale = e->aux + n_aux;
        e->steps[s].aux_shift = e->aux + n_aux + c;
        n_aux += 2 * (size_t)c;
        for (int32_t k = 0; k < c; k++) {
            const float *g = e->m->tensors[n->inputs[1]].data;
            const float *b = e->m->tensors[n->inputs[2]].data;
            const float *mu = e->m->tensors[n->inputs[3]].data;
            const float *v = e->m->tensors[n->inputs[4]].data;
            float sc = g[k] / sqrtf(v[k] + n->a.eps);
            e->steps[s].aux_scale[k] = sc;
            e->steps[s].aux_shift[k] = b[k] - mu[k] * sc;
        }
    }
    e->arena = efc_malloc_aligned(ALIGN, e->arena_bytes + e->scratch_bytes + ALIGN);
    if (!e->arena)
        goto oom;
    memset(e->arena, 0, e->arena_bytes + e->scratch_bytes + ALIGN);
    e->scratch = (float *)(e->arena + e->arena_bytes);
    /* weight bytes: what the steps read at run time (packed copies for INT8 steps) */
    for (int32_t s = 0; s < e->n_steps; s++) {
        if (e->steps[s].q) {
            e->weight_bytes += efc_qstep_weight_bytes(e->steps[s].q);
            continue;
        }
        if (e->steps[s].sparse) { /* the packed weights replace W; the bias is still read */
            int32_t b = e->steps[s].n->n_inputs > 2 ? e->steps[s].n->inputs[2] : -1;
            e->weight_bytes += e->steps[s].sw.packed_bytes;
            if (b >= 0)
                e->weight_bytes += efc_tensor_bytes(&e->m->tensors[b]);
            continue;
        }
        for (int32_t j = 1; j < e->steps[s].n->n_inputs; j++) {
            int32_t t = e->steps[s].n->inputs[j];
            if (t >= 0 && (e->m->tensors[t].flags & EFC_TENSOR_PARAM))
                e->weight_bytes += efc_tensor_bytes(&e->m->tensors[t]);
        }
    }
    efc_free(hwc);
    *out = e;
    return EFC_OK;
oom:
    st = efc_errf(EFC_ENOMEM, "exec: out of memory");
fail:
    efc_free(hwc);
    efc_exec_free(e);
    return st;
}

void efc_exec_free(struct efc_exec *e)
{
    if (!e)
        return;
    for (int32_t i = 0; e->steps && i < e->n_steps; i++) {
        efc_qstep_free(e->steps[i].q);
        efc_spmm_w_fini(&e->steps[i].sw);
    }
    efc_free(e->layers);
    efc_model_free(e->m);
    efc_free(e->steps);
    efc_free(e->offset);
    efc_free(e->root);
    efc_free(e->arena);
    efc_free(e->aux);
    efc_free(e);
}

static float *buf(struct efc_exec *e, int32_t t)
{
    return (float *)(e->arena + e->offset[t]);
}

static const float *param_data(const struct efc_exec *e, int32_t t)
{
    return t >= 0 ? e->m->tensors[t].data : NULL;
}

enum efc_status efc_exec_run(struct efc_exec *e, const float *raw, int32_t batch, const float **out)
{
    const struct efc_kernel_table *k = efc_kernels();
    struct efc_model *m = e->m;

    if (batch < 1 || batch > e->max_batch)
        return efc_errf(EFC_EINVAL, "exec: batch %d outside 1..%d", batch, e->max_batch);
    efc_model_normalize(m, raw, buf(e, m->input), batch);
    if (e->observer)
        e->observer(e->observer_ctx, m, m->input, buf(e, m->input), batch);
    for (int32_t s = 0; s < e->n_steps; s++) {
        const struct efc_node *n = e->steps[s].n;
        const struct efc_tensor *xt = &m->tensors[n->inputs[0]];
        const float *x = buf(e, n->inputs[0]);
        float *y = buf(e, n->output);
        size_t xn = efc_tensor_numel(xt) * (size_t)batch;
        enum efc_k_act act = (enum efc_k_act)n->a.act;

        if (e->steps[s].q) {
            efc_qstep_run(e->steps[s].q, batch, x,
                          n->op == EFC_OP_ADD ? buf(e, n->inputs[1]) : NULL, y, e->scratch);
            if (e->observer && m->tensors[n->output].dtype == EFC_DTYPE_F32)
                e->observer(e->observer_ctx, m, n->output, y, batch);
            continue;
        }

        switch (n->op) {
        case EFC_OP_CONV2D: {
            struct efc_conv_geom g;
            const float *b = n->n_inputs > 2 ? param_data(e, n->inputs[2]) : NULL;
            efc_node_conv_geom(e->m, n, batch, &g);
            if (e->steps[s].sparse)
                sparse_conv(&e->steps[s], &g, x, b, y, e->scratch, act);
            else
                efc_k_conv2d_f32(&g, x, param_data(e, n->inputs[1]), b, y, e->scratch, act);
            break;
        }
        case EFC_OP_DENSE: {
            const struct efc_tensor *w = &m->tensors[n->inputs[1]];
            const float *b = n->n_inputs > 2 ? param_data(e, n->inputs[2]) : NULL;
            if (e->steps[s].sparse)
                k->spmm_f32->run(&e->steps[s].sw, batch, x, (size_t)w->dims[1], b, act, y,
                                 (size_t)w->dims[0], e->scratch);
            else
                efc_k_dense_f32(batch, w->dims[1], w->dims[0], x, w->data, b, y, act);
            break;
        }
        case EFC_OP_RELU:
            k->relu_f32(xn, x, y);
            break;
        case EFC_OP_RELU6:
            k->relu6_f32(xn, x, y);
            break;
        case EFC_OP_MAXPOOL:
        case EFC_OP_AVGPOOL: {
            struct efc_pool_geom g;
            efc_node_pool_geom(e->m, n, batch, &g);
            if (n->op == EFC_OP_MAXPOOL)
                efc_k_maxpool2d_f32(&g, x, y);
            else
                efc_k_avgpool2d_f32(&g, x, y);
            break;
        }
        case EFC_OP_GAVGPOOL:
            efc_k_gavgpool_f32(batch, xt->dims[0], xt->dims[1] * xt->dims[2], x, y);
            break;
        case EFC_OP_FLATTEN:
        case EFC_OP_RESHAPE:
            break; /* views: same buffer */
        case EFC_OP_ADD:
            k->add_f32(xn, x, buf(e, n->inputs[1]), y, act);
            break;
        case EFC_OP_BATCHNORM: {
            int32_t c = xt->dims[0];
            efc_k_channel_affine_f32(batch, c, (int32_t)(efc_tensor_numel(xt) / (size_t)c), x,
                                     e->steps[s].aux_scale, e->steps[s].aux_shift, y,
                                     EFC_K_ACT_NONE);
            break;
        }
        case EFC_OP_SOFTMAX: {
            int32_t cols = (int32_t)efc_tensor_numel(xt);
            efc_k_softmax_f32(batch, cols, x, y);
            break;
        }
        default:
            return efc_errf(EFC_EINTERNAL, "exec: op %d not handled", n->op);
        }
        if (e->observer && m->tensors[n->output].dtype == EFC_DTYPE_F32)
            e->observer(e->observer_ctx, m, n->output, y, batch);
    }
    *out = buf(e, m->output);
    return EFC_OK;
}

void efc_exec_set_observer(struct efc_exec *e, efc_exec_observer_fn fn, void *ctx)
{
    e->observer = fn;
    e->observer_ctx = ctx;
}

int32_t efc_exec_input_size(const struct efc_exec *e)
{
    return (int32_t)efc_tensor_numel(&e->m->tensors[e->m->input]);
}

int32_t efc_exec_output_size(const struct efc_exec *e)
{
    return (int32_t)efc_tensor_numel(&e->m->tensors[e->m->output]);
}

size_t efc_exec_peak_activation_bytes(const struct efc_exec *e)
{
    return e->arena_bytes + e->scratch_bytes;
}

size_t efc_exec_weight_bytes(const struct efc_exec *e)
{
    return e->weight_bytes;
}

const struct efc_model *efc_exec_model(const struct efc_exec *e)
{
    return e->m;
}

const struct efc_exec_layer *efc_exec_layers(const struct efc_exec *e, int32_t *n)
{
    *n = e->n_layers;
    return e->layers;
}

int32_t efc_exec_n_sparse(const struct efc_exec *e)
{
    return e->n_sparse;
}

enum efc_exec_sparse_mode efc_exec_sparse_mode_of(const struct efc_exec *e)
{
    return e->sparse.mode;
}

enum efc_status efc_eval(const struct efc_model *m, const struct efc_dataset *d, int32_t batch,
                         struct efc_eval_result *r)
{
    struct efc_exec_opts o = {.max_batch = batch};
    struct efc_exec *e = NULL;
    float *in = NULL;
    enum efc_status st;
    int32_t ncls, per;

    memset(r, 0, sizeof(*r));
    if (!d->labels)
        return efc_errf(EFC_EINVAL, "eval: data set %s has no labels", d->source);
    if ((st = efc_exec_new(m, &o, &e)))
        return st;
    per = efc_exec_input_size(e);
    if ((size_t)per != efc_dataset_sample_size(d)) {
        st = efc_errf(EFC_EINVAL,
                      "eval: model takes %d values per sample, data set %s has %zu values per "
                      "sample",
                      per, d->source, efc_dataset_sample_size(d));
        goto out;
    }
    ncls = efc_exec_output_size(e);
    in = efc_malloc((size_t)per * (size_t)batch * sizeof(float));
    r->confusion = efc_calloc((size_t)ncls * (size_t)ncls, sizeof(int32_t));
    if (!in || !r->confusion) {
        st = efc_errf(EFC_ENOMEM, "eval: out of memory");
        goto out;
    }
    r->n_classes = ncls;
    for (int32_t i0 = 0; i0 < d->n; i0 += batch) {
        int32_t nb = d->n - i0 < batch ? d->n - i0 : batch;
        const float *logits;
        efc_dataset_get_f32(d, i0, nb, in);
        if ((st = efc_exec_run(e, in, nb, &logits)))
            goto out;
        for (int32_t i = 0; i < nb; i++) {
            const float *l = logits + (size_t)i * (size_t)ncls;
            int32_t best = 0, y = d->labels[i0 + i];
            for (int32_t c = 1; c < ncls; c++)
                if (l[c] > l[best])
                    best = c;
            if (y < ncls)
                r->confusion[y * ncls + best]++;
            r->correct += best == y;
            r->samples++;
        }
    }
    r->accuracy = r->samples ? (double)r->correct / r->samples : 0.0;
out:
    efc_free(in);
    efc_exec_free(e);
    if (st)
        efc_eval_result_fini(r);
    return st;
}

void efc_eval_result_fini(struct efc_eval_result *r)
{
    efc_free(r->confusion);
    r->confusion = NULL;
}
