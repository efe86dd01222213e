/* efc compress — apply a policy (docs/policies.md) to a model: the training-side steps
 * (compress/compress.h) on the training split, then a final int8 step calibrated on it, and
 * save the result with its weights stored sparse where that is smaller. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "calib/calib.h"
#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "common/efc_buf.h"
#include "common/efc_parse.h"
#include "compress/candidates.h"
#include "compress/compress.h"
#include "compress/prune.h"
#include "model/efm.h"
#include "model/exec.h"
#include "model/quant.h"

static void help(void)
{
    printf("usage: efc compress in.efm --policy P [--data SPEC] -o out.efm [options]\n\n"
           "  --policy P         steps joined by '+', e.g. 'prune(sparsity=0.9,finetune=3)+int8'\n"
           "                     (docs/policies.md)\n"
           "  --data SPEC        training data (default fashion-mnist); its train split\n"
           "                     fine-tunes and calibrates, its test split (if any) measures\n"
           "                     accuracy\n"
           "  --lr X             fine-tuning learning rate (default 1e-3, Adam, cosine)\n"
           "  --batch N          fine-tuning batch (default 128)\n"
           "  --seed S           fine-tuning and calibration-sample seed (default 1)\n"
           "  --calib-samples N  samples for an int8 step (default 512)\n"
           "  -q, --quiet        no progress output\n"
           "  -o, --output F     the compressed model (required)\n");
}

static float accuracy(const struct efc_model *m, const struct efc_dataset *test)
{
    struct efc_eval_result r;
    if (!test || efc_eval(m, test, 256, &r) != EFC_OK)
        return -1.0f;
    float a = (float)r.accuracy;
    efc_eval_result_fini(&r);
    return a;
}

static long long file_size(const char *path)
{
    struct stat s;
    return stat(path, &s) == 0 ? (long long)s.st_size : 0;
}

int cmd_compress(int argc, char **argv)
{
    static const struct option opts[] = {
        {"policy", required_argument, 0, 'p'},  {"data", required_argument, 0, 'd'},
        {"lr", required_argument, 0, 'l'},      {"batch", required_argument, 0, 'b'},
        {"seed", required_argument, 0, 's'},    {"calib-samples", required_argument, 0, 'n'},
        {"quiet", no_argument, 0, 'q'},         {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    const char *policy = NULL, *data = "fashion-mnist", *outp = NULL;
    struct efc_compress_opts co = {.seed = 1, .progress = 1};
    struct efc_compress_report rep;
    struct efc_policy pol;
    struct efc_model *m = NULL, *q = NULL;
    struct efc_dataset *train = NULL, *test = NULL;
    struct efc_calib_result *cr = NULL;
    struct efc_buf meta = {0};
    char *record = NULL;
    int32_t calib_samples = 512;
    int64_t v;
    double d;
    int c, rc = 1;
    enum efc_status st;

    optind = 1;
    while ((c = getopt_long(argc, argv, "qo:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            policy = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 'l':
            if (efc_parse_f64(optarg, 1e-7, 1.0, "--lr", &d))
                return cli_fail("compress", EFC_EINVAL);
            co.lr = (float)d;
            break;
        case 'b':
            if (efc_parse_i64(optarg, 1, 65536, "--batch", &v))
                return cli_fail("compress", EFC_EINVAL);
            co.batch = (int32_t)v;
            break;
        case 's':
            if (efc_parse_i64(optarg, 0, INT64_MAX, "--seed", &v))
                return cli_fail("compress", EFC_EINVAL);
            co.seed = (uint64_t)v;
            break;
        case 'n':
            if (efc_parse_i64(optarg, 1, 1000000, "--calib-samples", &v))
                return cli_fail("compress", EFC_EINVAL);
            calib_samples = (int32_t)v;
            break;
        case 'q':
            co.progress = 0;
            break;
        case 'o':
            outp = optarg;
            break;
        case 'h':
            help();
            return 0;
        default:
            return cli_usage_error("compress", "bad option");
        }
    }
    if (optind + 1 != argc || !policy || !outp)
        return cli_usage_error("compress", "need one model file, --policy and -o");
    const char *in = argv[optind];
    if ((st = efc_policy_parse(policy, &pol)) || (st = cli_load_model(in, &m)) ||
        (st = efc_compress_check(m, &pol)))
        goto fail;
    /* the device steps: at most one, and last */
    for (int32_t k = 0; k < pol.n_steps; k++)
        if (efc_compress_is_device_step(pol.steps[k].method) && k != pol.n_steps - 1) {
            st = efc_errf(EFC_EINVAL, "policy '%s': step %d (%s) must be the last", policy, k + 1,
                          pol.steps[k].method);
            goto fail;
        }
    char dir[4096];
    if ((st = cli_compress_data(data, in, &co, &train, &test, dir, sizeof(dir))))
        goto fail;
    float acc0 = accuracy(m, test);
    if ((st = efc_compress_run(&m, &pol, &co, &rep)))
        goto fail;
    float acc1 = accuracy(m, test);
    double sparsity = efc_prune_model_sparsity(m);
    const struct efc_policy_step *last = &pol.steps[pol.n_steps - 1];
    struct efc_model *out = m;
    efc_buf_printf(&meta, "{\"source\":%s,\"policy\":",
                   m->meta_json && m->meta_json[0] == '{' ? m->meta_json : "null");
    efc_buf_printf(&meta, "\"%s\",\"steps\":[", policy); /* the grammar has no quotes */
    for (int32_t k = 0; k < rep.n_steps; k++)
        efc_buf_printf(&meta, "%s{\"step\":\"%s\",\"seconds\":%.2f,\"sparsity\":%.6f,"
                              "\"accuracy\":%.6f}",
                       k ? "," : "", rep.steps[k].step, rep.steps[k].seconds,
                       rep.steps[k].sparsity, rep.steps[k].val_accuracy);
    efc_buf_printf(&meta, "]");
    float acc2 = -1.0f;
    if (!strcmp(last->method, "int8")) {
        struct efc_calib_opts cal;
        struct efc_quant_opts qo;
        struct efc_quant_report qr;
        if ((st = efc_calib_policy_step(last, &cal, &qo)))
            goto fail;
        cal.samples = calib_samples;
        cal.seed = co.seed;
        if ((st = efc_calib_run(m, train, &cal, &cr)) ||
            (st = efc_calib_lower(m, cr, &qo, &q, &qr)) ||
            (st = efc_calib_record_json(cr, &record)))
            goto fail;
        efc_buf_printf(&meta, ",\"calibration\":%s,\"int8\":{\"int8_nodes\":%d,\"fp32_nodes\":%d}",
                       record, qr.n_int8, qr.n_fp32);
        acc2 = accuracy(q, test);
        out = q;
    }
    efc_buf_printf(&meta, "}");
    if (!meta.p || meta.oom) {
        st = efc_errf(EFC_ENOMEM, "compress: metadata");
        goto fail;
    }
    if ((st = efc_compress_store_compact(out)))
        goto fail;
    efc_free(out->meta_json);
    out->meta_json = meta.p;
    meta.p = NULL;
    if ((st = efc_efm_save(out, outp)))
        goto fail;
    printf("%s -> %s: %s\n", in, outp, policy);
    for (int32_t k = 0; k < rep.n_steps; k++) {
        printf("  step %d %s: %.1f s, sparsity %.4f", k + 1, rep.steps[k].step,
               rep.steps[k].seconds, rep.steps[k].sparsity);
        if (rep.steps[k].nm_skipped)
            printf(", %d layer(s) left dense", rep.steps[k].nm_skipped);
        if (rep.steps[k].filters_pruned)
            printf(", %d convolution(s) pruned: %llu -> %llu MACs per sample (%.2fx fewer)",
                   rep.steps[k].filters_pruned, (unsigned long long)rep.steps[k].macs_before,
                   (unsigned long long)rep.steps[k].macs_after,
                   rep.steps[k].macs_after
                       ? (double)rep.steps[k].macs_before / (double)rep.steps[k].macs_after
                       : 0.0);
        if (rep.steps[k].lowrank_factorised)
            printf(", %d Dense layer(s) factorised: %lld -> %lld weights",
                   rep.steps[k].lowrank_factorised, (long long)rep.steps[k].params_before,
                   (long long)rep.steps[k].params_after);
        if (rep.steps[k].val_accuracy >= 0)
            printf(", test accuracy %.2f %%", 100.0 * rep.steps[k].val_accuracy);
        printf("\n");
    }
    if (acc0 >= 0)
        printf("  test accuracy: input %.2f %%, after the training steps %.2f %% (%+.2f pp)",
               100.0 * acc0, 100.0 * acc1, 100.0 * (acc1 - acc0));
    if (acc2 >= 0)
        printf(", INT8 %.2f %% (%+.2f pp vs input)", 100.0 * acc2, 100.0 * (acc2 - acc0));
    if (acc0 >= 0)
        printf("\n");
    printf("  prunable-weight sparsity %.4f; file %lld -> %lld bytes (%.1fx smaller)\n", sparsity,
           file_size(in), file_size(outp),
           file_size(outp) ? (double)file_size(in) / (double)file_size(outp) : 0.0);
    rc = 0;
    goto out;
fail:
    rc = cli_fail("compress", st);
out:
    efc_free(meta.p);
    efc_free(record);
    efc_calib_result_free(cr);
    efc_model_free(q);
    efc_model_free(m);
    efc_dataset_free(train);
    efc_dataset_free(test);
    return rc;
}
