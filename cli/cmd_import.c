/* efc import — ONNX model -> .efm (onnx/onnx_import.h, docs/onnx.md). */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "model/efm.h"
#include "onnx/onnx_import.h"

static void help(void)
{
    printf("usage: efc import model.onnx -o model.efm [--input-scale S[,S..]]\n"
           "                  [--input-mean M[,M..]] [--input-std D[,D..]] [--name NAME]\n\n"
           "  The model's input becomes (raw * S - M) / D per channel; without these options the\n"
           "  ONNX metadata_props efc.input_scale / efc.input_mean / efc.input_std are used when\n"
           "  present, else the input is taken as is. Supported ops: docs/onnx.md.\n");
}

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"input-scale", required_argument, 0, 's'},
        {"input-mean", required_argument, 0, 'm'},
        {"input-std", required_argument, 0, 'd'},
        {"name", required_argument, 0, 'n'},
        {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *scale = NULL, *mean = NULL, *std = NULL, *outp = NULL;
    struct efc_onnx_opts o = {0};
    struct efc_model *m = NULL;
    uint64_t params, nonzero, bytes;
    enum efc_status st;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            scale = optarg;
            break;
        case 'm':
            mean = optarg;
            break;
        case 'd':
            std = optarg;
            break;
        case 'n':
            o.name = optarg;
            break;
        case 'o':
            outp = optarg;
            break;
        case 'h':
            help();
            return 0;
        default:
            return cli_usage_error("import", "bad option");
        }
    }
    if (optind + 1 != argc || !outp)
        return cli_usage_error("import", "need one .onnx file and -o");
    efc_err_clear();
    if ((st = efc_onnx_parse_norm(scale, mean, std, "efc import", &o.norm)))
        return cli_fail("import", st);
    if ((st = efc_onnx_import_file(argv[optind], &o, &m)) || (st = efc_efm_save(m, outp))) {
        efc_model_free(m);
        return cli_fail("import", st);
    }
    efc_model_param_stats(m, &params, &nonzero, &bytes);
    printf("%s -> %s: %d nodes, %llu params, %llu MACs/sample, input", argv[optind], outp,
           m->n_nodes, (unsigned long long)params, (unsigned long long)efc_model_macs(m));
    for (int32_t i = 0; i < m->tensors[m->input].ndim; i++)
        printf("%s%d", i ? "x" : " ", m->tensors[m->input].dims[i]);
    if (!m->norm.n) {
        printf(", no input normalisation\n");
    } else {
        printf(", input normalisation (raw * scale - mean) / std:");
        for (int32_t i = 0; i < m->norm.n; i++)
            printf(" [%d] %g %g %g", i, (double)m->norm.scale[i], (double)m->norm.mean[i],
                   (double)m->norm.std[i]);
        printf("\n");
    }
    efc_model_free(m);
    return 0;
}
