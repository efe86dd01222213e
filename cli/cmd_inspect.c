/* efc inspect — layers, shapes, parameters, non-zeros, bytes (dense and as stored), weight
 * layout, MACs per image, weight density and whether the executor runs the layer with a sparse
 * kernel on this machine's ISA, and the model's size on the wire: FP32 bytes, .efm bytes,
 * artifact bytes (zstd, docs/format.md), compression ratio and sparsity of the prunable
 * weights. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "kernels/kernels.h"
#include "model/artifact.h"
#include "model/efm.h"
#include "model/exec.h"

static void help(void)
{
    printf("usage: efc inspect model.efm [--json]\n\n"
           "  --json   one JSON object on stdout (keys in docs/cli.md)\n");
}

static void shape_str(const struct efc_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%d", i ? "x" : "", t->dims[i]);
}

/* "int8" when the node reads or writes u8 data (model.h "INT8 graphs"), else "fp32". */
static const char *precision(const struct efc_model *m, const struct efc_node *n)
{
    return m->tensors[n->inputs[0]].dtype == EFC_DTYPE_U8 ||
                   m->tensors[n->output].dtype == EFC_DTYPE_U8
               ? "int8"
               : "fp32";
}

static int is_compute(enum efc_op op)
{
    return op != EFC_OP_FLATTEN && op != EFC_OP_RESHAPE && op != EFC_OP_QUANTIZE &&
           op != EFC_OP_DEQUANTIZE;
}

static uint64_t stored_zeros(const struct efc_tensor *t);

/* Parameters of one node. */
struct layer_params {
    uint64_t params, nonzero, bytes, storage_bytes;
    int sparse; /* some parameter is stored sparse */
};

static void node_params(const struct efc_model *m, const struct efc_node *nd,
                        struct layer_params *lp)
{
    memset(lp, 0, sizeof(*lp));
    for (int32_t j = 1; j < nd->n_inputs; j++) {
        const struct efc_tensor *t;
        size_t n;
        int32_t ti = nd->inputs[j];
        if (ti < 0 || !(m->tensors[ti].flags & EFC_TENSOR_PARAM))
            continue;
        t = &m->tensors[ti];
        lp->params += efc_tensor_numel(t);
        lp->bytes += efc_tensor_bytes(t);
        lp->storage_bytes += efc_tensor_storage_bytes(t);
        lp->sparse |= t->sparse != NULL;
        /* the stored values: all elements dense, the nnz entries sparse (the rest are 0);
         * every dtype, so INT8 layers count their i8 / i32 non-zeros */
        n = t->sparse ? (size_t)t->sparse->nnz : efc_tensor_numel(t);
        lp->nonzero += n - stored_zeros(t);
    }
}

/* Zero elements of one tensor's stored values (all elements dense, the nnz entries sparse).
 * Zero means +0.0 or -0.0 for f32 and 0 for the integer dtypes. */
static uint64_t stored_zeros(const struct efc_tensor *t)
{
    size_t n = t->sparse ? (size_t)t->sparse->nnz : efc_tensor_numel(t);
    uint64_t z = 0;

    switch (t->dtype) {
    case EFC_DTYPE_F32:
        for (size_t k = 0; k < n; k++)
            z += ((const float *)t->data)[k] == 0.0f;
        break;
    case EFC_DTYPE_I8:
    case EFC_DTYPE_U8: /* one byte per value: zero is the zero byte */
        for (size_t k = 0; k < n; k++)
            z += ((const uint8_t *)t->data)[k] == 0;
        break;
    case EFC_DTYPE_I32:
        for (size_t k = 0; k < n; k++)
            z += ((const int32_t *)t->data)[k] == 0;
        break;
    }
    return z;
}

/* Sparsity as docs/cli.md defines it: over the prunable weights (the weight tensor, input 1,
 * of every Dense and Conv2d node, each tensor counted once; the set compress/prune.h prunes),
 * the fraction of elements that are zero, whether stored (dense, or a stored CSR value) or
 * implied (not stored in CSR). Biases, BatchNorm parameters and qparams are not counted. */
static enum efc_status weight_sparsity(const struct efc_model *m, uint64_t *zeros, uint64_t *total)
{
    uint8_t *seen = efc_calloc(m->n_tensors ? (size_t)m->n_tensors : 1, 1);

    *zeros = *total = 0;
    if (!seen)
        return efc_errf(EFC_ENOMEM, "inspect: out of memory");
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *nd = &m->nodes[i];
        const struct efc_tensor *t;
        int32_t w = nd->n_inputs > 1 ? nd->inputs[1] : -1;
        if ((nd->op != EFC_OP_DENSE && nd->op != EFC_OP_CONV2D) || w < 0 || seen[w] ||
            !(m->tensors[w].flags & EFC_TENSOR_PARAM))
            continue;
        seen[w] = 1;
        t = &m->tensors[w];
        *total += efc_tensor_numel(t);
        *zeros += stored_zeros(t);
        if (t->sparse)
            *zeros += efc_tensor_numel(t) - (size_t)t->sparse->nnz;
    }
    efc_free(seen);
    return EFC_OK;
}

/* Density of a Dense / Conv2d node's weight tensor (non-zeros / elements, exact zeros): 1 and
 * *d set, or 0 when the node has no weight tensor. */
static int weight_density(const struct efc_model *m, const struct efc_node *nd, double *d)
{
    const struct efc_tensor *t;
    size_t numel;
    uint64_t zeros;
    int32_t w = nd->n_inputs > 1 ? nd->inputs[1] : -1;

    if ((nd->op != EFC_OP_DENSE && nd->op != EFC_OP_CONV2D) || w < 0 ||
        !(m->tensors[w].flags & EFC_TENSOR_PARAM))
        return 0;
    t = &m->tensors[w];
    numel = efc_tensor_numel(t);
    zeros = stored_zeros(t) + (t->sparse ? numel - (size_t)t->sparse->nnz : 0);
    *d = numel ? (double)(numel - zeros) / (double)numel : 0.0;
    return 1;
}

/* How the compiled executor runs node nd (by name: folding and fusing keep the producer's
 * name): its GEMM-layer entry, or NULL (not a GEMM-shaped layer). */
static const struct efc_exec_layer *exec_layer(const struct efc_exec *e, const struct efc_node *nd)
{
    int32_t n;
    const struct efc_exec_layer *l = efc_exec_layers(e, &n);
    for (int32_t i = 0; i < n; i++)
        if (l[i].op == nd->op && !strcmp(l[i].name, nd->name))
            return &l[i];
    return NULL;
}

/* Dense bytes of all parameters (what the FP32 executor holds). */
static uint64_t dense_param_bytes(const struct efc_model *m)
{
    uint64_t b = 0;
    for (int32_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].flags & EFC_TENSOR_PARAM)
            b += efc_tensor_bytes(&m->tensors[i]);
    return b;
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct efc_model *m = NULL;
    struct efc_exec *e = NULL;
    struct efc_exec_opts eo = {.max_batch = 1};
    uint64_t params, nonzero, pbytes, sbytes, macs, fp32_bytes, file_bytes, wzero, wtotal;
    double ratio, sparsity;
    void *art = NULL;
    size_t art_bytes = 0;
    int json = 0, c;
    enum efc_status st;
    const char *path;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            json = 1;
        else if (c == 'h') {
            help();
            return 0;
        } else
            return cli_usage_error("inspect", "bad option");
    }
    if (optind + 1 != argc)
        return cli_usage_error("inspect", "need exactly one model file");
    path = argv[optind];
    if ((st = cli_load_model(path, &m)) || (st = efc_exec_new(m, &eo, &e))) {
        efc_model_free(m);
        return cli_fail("inspect", st);
    }
    efc_model_param_stats(m, &params, &nonzero, &sbytes);
    pbytes = dense_param_bytes(m);
    macs = efc_model_macs(m);
    /* the loaded model maps the whole file: its bytes are the .efm as shipped */
    file_bytes = m->map_bytes;
    fp32_bytes = params * sizeof(float);
    if ((st = weight_sparsity(m, &wzero, &wtotal)) ||
        (st = efc_artifact_pack(m->map, m->map_bytes, EFC_ARTIFACT_LEVEL_DEFAULT, &art,
                                &art_bytes))) {
        efc_exec_free(e);
        efc_model_free(m);
        return cli_fail("inspect", st);
    }
    efc_free(art); /* only its size is reported */
    ratio = (double)fp32_bytes / (double)art_bytes;
    sparsity = wtotal ? (double)wzero / (double)wtotal : 0.0;

    if (json) {
        printf("{\"model\":");
        cli_json_str(stdout, path);
        printf(",\"name\":");
        cli_json_str(stdout, m->name);
        printf(",\"arch\":");
        cli_json_str(stdout, m->arch);
        printf(",\"params\":%llu,\"nonzero_params\":%llu,\"param_bytes\":%llu,"
               "\"storage_bytes\":%llu,\"fp32_bytes\":%llu,\"file_bytes\":%llu,"
               "\"artifact_bytes\":%zu,\"compression_ratio\":%.4f,\"sparsity\":%.6f,"
               "\"macs\":%llu,\"peak_activation_bytes\":%zu,\"weight_bytes\":%zu,"
               "\"isa\":\"%s\",\"sparse_mode\":\"%s\",\"sparse_layers\":%d,\"layers\":[",
               (unsigned long long)params, (unsigned long long)nonzero, (unsigned long long)pbytes,
               (unsigned long long)sbytes, (unsigned long long)fp32_bytes,
               (unsigned long long)file_bytes, art_bytes, ratio, sparsity, (unsigned long long)macs,
               efc_exec_peak_activation_bytes(e), efc_exec_weight_bytes(e), cli_isa_name(),
               efc_exec_sparse_mode_name(efc_exec_sparse_mode_of(e)), efc_exec_n_sparse(e));
        for (int32_t i = 0; i < m->n_nodes; i++) {
            const struct efc_node *nd = &m->nodes[i];
            const struct efc_exec_layer *el = exec_layer(e, nd);
            struct layer_params lp;
            char shp[64];
            double dens;
            node_params(m, nd, &lp);
            shape_str(&m->tensors[nd->output], shp, sizeof(shp));
            printf("%s{\"name\":", i ? "," : "");
            cli_json_str(stdout, nd->name);
            printf(",\"op\":\"%s\",\"output_shape\":\"%s\",\"params\":%llu,"
                   "\"nonzero_params\":%llu,\"bytes\":%llu,\"storage_bytes\":%llu,"
                   "\"layout\":\"%s\",\"precision\":\"%s\",\"macs\":%llu",
                   efc_op_name(nd->op), shp, (unsigned long long)lp.params,
                   (unsigned long long)lp.nonzero, (unsigned long long)lp.bytes,
                   (unsigned long long)lp.storage_bytes, lp.sparse ? "csr" : "dense",
                   precision(m, nd), (unsigned long long)efc_node_macs(m, nd));
            /* density of the weights as the executor sees them (a GEMM layer's own count),
             * and the sparse kernel's format when it runs one on this machine */
            if (el)
                printf(",\"density\":%.6f", el->density);
            else if (weight_density(m, nd, &dens))
                printf(",\"density\":%.6f", dens);
            else
                printf(",\"density\":null");
            if (el && el->sparse)
                printf(",\"sparse\":\"%s\"}", el->format);
            else
                printf(",\"sparse\":null}");
        }
        printf("],\"metadata\":%s}\n",
               m->meta_json && m->meta_json[0] == '{' ? m->meta_json : "null");
    } else {
        char shp[64];
        shape_str(&m->tensors[m->input], shp, sizeof(shp));
        printf("%s: model '%s' (arch %s), input %s, %d nodes\n\n", path, m->name, m->arch, shp,
               m->n_nodes);
        printf("  %-3s %-14s %-14s %-12s %10s %10s %10s %10s %-6s %-5s %12s %7s %s\n", "#", "name",
               "op", "output", "params", "nonzero", "bytes", "stored", "layout", "prec", "MACs",
               "density", "runs");
        for (int32_t i = 0; i < m->n_nodes; i++) {
            const struct efc_node *nd = &m->nodes[i];
            const struct efc_exec_layer *el = exec_layer(e, nd);
            struct layer_params lp;
            char dens_s[16] = "";
            double dens;
            node_params(m, nd, &lp);
            shape_str(&m->tensors[nd->output], shp, sizeof(shp));
            if (el)
                snprintf(dens_s, sizeof(dens_s), "%.3f", el->density);
            else if (weight_density(m, nd, &dens))
                snprintf(dens_s, sizeof(dens_s), "%.3f", dens);
            printf("  %-3d %-14.14s %-14s %-12s %10llu %10llu %10llu %10llu %-6s %-5s %12llu", i,
                   nd->name, efc_op_name(nd->op), shp, (unsigned long long)lp.params,
                   (unsigned long long)lp.nonzero, (unsigned long long)lp.bytes,
                   (unsigned long long)lp.storage_bytes,
                   lp.sparse   ? "csr"
                   : lp.params ? "dense"
                               : "",
                   precision(m, nd), (unsigned long long)efc_node_macs(m, nd));
            if (dens_s[0])
                printf(" %7s %s", dens_s, el && el->sparse ? el->format : el ? "dense" : "");
            printf("\n");
        }
        {
            int n8 = 0, n32 = 0;
            for (int32_t i = 0; i < m->n_nodes; i++)
                if (is_compute(m->nodes[i].op))
                    *(strcmp(precision(m, &m->nodes[i]), "int8") ? &n32 : &n8) += 1;
            if (n8) {
                printf("\n  INT8 model: %d layers INT8, %d FP32", n8, n32);
                for (int32_t i = 0, k = 0; i < m->n_nodes; i++)
                    if (is_compute(m->nodes[i].op) && !strcmp(precision(m, &m->nodes[i]), "fp32"))
                        printf("%s%s", k++ ? ", " : ": ", m->nodes[i].name);
                printf("\n");
            }
        }
        printf("\n  parameters      %llu (%llu non-zero, %.2f %% sparse)\n",
               (unsigned long long)params, (unsigned long long)nonzero,
               params ? 100.0 * (double)(params - nonzero) / (double)params : 0.0);
        printf("  parameter bytes %llu (%llu as stored)\n", (unsigned long long)pbytes,
               (unsigned long long)sbytes);
        printf("  sparsity        %.2f %% of %llu prunable weights (Dense/Conv2d) are zero\n",
               100.0 * sparsity, (unsigned long long)wtotal);
        printf("  fp32 bytes      %llu (parameters as dense FP32)\n"
               "  file bytes      %llu (.efm)\n"
               "  artifact bytes  %zu (.efm + zstd level %d)\n"
               "  compression     %.2fx (fp32 bytes / artifact bytes)\n"
               "  MACs per image  %llu\n",
               (unsigned long long)fp32_bytes, (unsigned long long)file_bytes, art_bytes,
               EFC_ARTIFACT_LEVEL_DEFAULT, ratio, (unsigned long long)macs);
        printf("  compiled (BN folded, ReLU fused): %d nodes, weights %zu bytes, "
               "peak activations %zu bytes at batch 1\n",
               efc_exec_model(e)->n_nodes, efc_exec_weight_bytes(e),
               efc_exec_peak_activation_bytes(e));
        {
            int32_t n_gemm;
            double f32_max, s8_max, nm;
            efc_exec_layers(e, &n_gemm);
            efc_exec_sparse_threshold(efc_kernels_isa(), 0, &f32_max, &nm);
            efc_exec_sparse_threshold(efc_kernels_isa(), 1, &s8_max, &nm);
            printf("  sparse kernels  %d of %d Dense/Conv2d layers run sparse on isa %s "
                   "(EFC_SPARSE=%s; auto below density %.2f FP32, %.2f INT8)\n",
                   efc_exec_n_sparse(e), n_gemm, cli_isa_name(),
                   efc_exec_sparse_mode_name(efc_exec_sparse_mode_of(e)), f32_max, s8_max);
        }
        if (m->meta_json)
            printf("  metadata        %s\n", m->meta_json);
    }
    efc_exec_free(e);
    efc_model_free(m);
    return 0;
}
