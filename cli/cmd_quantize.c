/* efc quantize — post-training INT8 quantisation: calibrate on local data, lower, save. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "calib/calib.h"
#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "common/efc_parse.h"
#include "model/efm.h"
#include "model/quant.h"

static void help(void)
{
    printf("usage: efc quantize in.efm --calib minmax|percentile|kl|mse --calib-data SPEC\n"
           "                    [--calib-samples N] [--percentile P] [--per-tensor] [--seed S]\n"
           "                    [--split train|test] -o out.efm\n\n"
           "  --calib M          calibrator (default percentile; docs/calibration.md)\n"
           "  --calib-data SPEC  data to calibrate on (fashion-mnist, ...; labels not needed)\n"
           "  --calib-samples N  samples drawn with --seed (default 512)\n"
           "  --percentile P     for --calib percentile (default 99.99)\n"
           "  --per-tensor       one weight scale per tensor (default: per output channel)\n"
           "  --seed S           sample selection seed (default 0)\n"
           "  --split S          split of a named data set (default train)\n"
           "  -o, --output F     the INT8 model\n");
}

/* {"source": <input metadata>, "policy": ..., "calibration": <record>, "int8": {...}} */
static enum efc_status build_meta(const struct efc_model *in, const char *policy,
                                  const char *record, const struct efc_quant_report *rep,
                                  char **out)
{
    const char *src = in->meta_json && in->meta_json[0] == '{' ? in->meta_json : "null";
    size_t n = strlen(src) + strlen(record) + strlen(policy) + sizeof(rep->fp32_nodes) + 256;
    char *s = efc_malloc(n);
    if (!s)
        return efc_errf(EFC_ENOMEM, "quantize: out of memory");
    snprintf(s, n,
             "{\"source\":%s,\"policy\":\"%s\",\"calibration\":%s,"
             "\"int8\":{\"int8_nodes\":%d,\"fp32_nodes\":%d,\"fp32_node_names\":\"%s\","
             "\"widened_outputs\":%d}}",
             src, policy, record, rep->n_int8, rep->n_fp32, rep->fp32_nodes, rep->n_widened);
    *out = s;
    return EFC_OK;
}

int cmd_quantize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"calib", required_argument, 0, 'c'},
        {"calib-data", required_argument, 0, 'd'},
        {"calib-samples", required_argument, 0, 'n'},
        {"percentile", required_argument, 0, 'p'},
        {"per-tensor", no_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},
        {"split", required_argument, 0, 'S'},
        {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *data = NULL, *outp = NULL, *split = "train";
    struct efc_calib_opts co;
    struct efc_quant_opts qo = {0};
    struct efc_quant_report rep;
    struct efc_model *m = NULL, *q = NULL;
    struct efc_dataset *d = NULL;
    struct efc_calib_result *cr = NULL;
    char *record = NULL, *meta = NULL, policy[96];
    int64_t v;
    double p;
    int c, rc = 1;
    enum efc_status st;

    efc_calib_opts_default(&co);
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (efc_calib_method_parse(optarg, &co.method))
                return cli_fail("quantize", EFC_EINVAL);
            break;
        case 'd':
            data = optarg;
            break;
        case 'n':
            if (efc_parse_i64(optarg, 1, 1000000, "--calib-samples", &v))
                return cli_fail("quantize", EFC_EINVAL);
            co.samples = (int32_t)v;
            break;
        case 'p':
            if (efc_parse_f64(optarg, 1e-6, 100.0, "--percentile", &p))
                return cli_fail("quantize", EFC_EINVAL);
            co.percentile = p;
            break;
        case 't':
            qo.per_tensor_weights = 1;
            break;
        case 's':
            if (efc_parse_i64(optarg, 0, INT64_MAX, "--seed", &v))
                return cli_fail("quantize", EFC_EINVAL);
            co.seed = (uint64_t)v;
            break;
        case 'S':
            split = optarg;
            break;
        case 'o':
            outp = optarg;
            break;
        case 'h':
            help();
            return 0;
        default:
            return cli_usage_error("quantize", "bad option");
        }
    }
    if (optind + 1 != argc || !data || !outp)
        return cli_usage_error("quantize", "need one model file, --calib-data and -o");
    if ((st = cli_load_model(argv[optind], &m)) || (st = cli_open_data(data, split, &d)))
        goto fail;
    fprintf(stderr, "efc quantize: calibrating %s with %s on %d of %d samples of %s\n",
            argv[optind], efc_calib_method_name(co.method), co.samples < d->n ? co.samples : d->n,
            d->n, d->source);
    if ((st = efc_calib_run(m, d, &co, &cr)) || (st = efc_calib_lower(m, cr, &qo, &q, &rep)))
        goto fail;
    if (co.method == EFC_CALIB_PERCENTILE)
        snprintf(policy, sizeof(policy), "int8(calib=percentile,p=%g,weights=%s)", co.percentile,
                 qo.per_tensor_weights ? "tensor" : "channel");
    else
        snprintf(policy, sizeof(policy), "int8(calib=%s,weights=%s)",
                 efc_calib_method_name(co.method), qo.per_tensor_weights ? "tensor" : "channel");
    if ((st = efc_calib_record_json(cr, &record)) ||
        (st = build_meta(m, policy, record, &rep, &meta)))
        goto fail;
    efc_free(q->meta_json);
    q->meta_json = meta;
    meta = NULL;
    if ((st = efc_efm_save(q, outp)))
        goto fail;
    {
        struct stat a, b;
        if (stat(argv[optind], &a) || stat(outp, &b))
            a.st_size = b.st_size = 0;
        printf("%s -> %s: %s; %d layers INT8, %d FP32%s%s; %lld -> %lld bytes (%.1fx)\n",
               argv[optind], outp, policy, rep.n_int8, rep.n_fp32, rep.n_fp32 ? ": " : "",
               rep.fp32_nodes, (long long)a.st_size, (long long)b.st_size,
               b.st_size ? (double)a.st_size / (double)b.st_size : 0.0);
        if (rep.n_widened)
            printf("note: %d layer output range(s) widened for the requantiser "
                   "(docs/quantization.md)\n",
                   rep.n_widened);
    }
    rc = 0;
    goto out;
fail:
    rc = cli_fail("quantize", st);
out:
    efc_free(record);
    efc_free(meta);
    efc_calib_result_free(cr);
    efc_model_free(q);
    efc_model_free(m);
    efc_dataset_free(d);
    return rc;
}
