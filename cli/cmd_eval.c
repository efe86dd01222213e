/* efc eval — accuracy, per-class accuracy and confusion matrix on a labelled data set. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/efc_parse.h"
#include "model/efm.h"
#include "model/exec.h"

static const char *const fmnist_classes[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

static void help(void)
{
    printf("usage: efc eval model.efm --data SPEC [--split test|train] [--batch N] [--json]\n\n"
           "  --data SPEC   fashion-mnist, fashion-mnist:shard=i/n or IMAGES,LABELS paths\n"
           "  --split S     split of a named data set (default test)\n"
           "  --batch N     inference batch (default 256)\n"
           "  --json        one JSON object on stdout (keys in docs/cli.md)\n");
}

int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, 0, 'd'},  {"split", required_argument, 0, 's'},
        {"batch", required_argument, 0, 'b'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
    };
    const char *data = NULL, *split = "test", *path = NULL;
    struct efc_model *m = NULL;
    struct efc_dataset *d = NULL;
    struct efc_eval_result r = {0};
    int64_t batch = 256;
    int json = 0, c, rc = 1, n;
    enum efc_status st;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 's':
            split = optarg;
            break;
        case 'b':
            if (efc_parse_i64(optarg, 1, 65536, "--batch", &batch))
                return cli_fail("eval", EFC_EINVAL);
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            help();
            return 0;
        default:
            return cli_usage_error("eval", "bad option");
        }
    }
    if (optind + 1 != argc || !data)
        return cli_usage_error("eval", "need one model file and --data");
    path = argv[optind];
    if ((st = cli_load_model(path, &m)) || (st = cli_open_data(data, split, &d)) ||
        (st = efc_eval(m, d, (int32_t)batch, &r)))
        goto fail;
    n = r.n_classes;
    if (json) {
        printf("{\"model\":");
        cli_json_str(stdout, path);
        printf(",\"data\":");
        cli_json_str(stdout, d->source);
        printf(",\"samples\":%d,\"correct\":%d,\"accuracy\":%.6f,\"isa\":\"%s\","
               "\"per_class_accuracy\":[",
               r.samples, r.correct, r.accuracy, cli_isa_name());
        for (int i = 0; i < n; i++) {
            int tot = 0;
            for (int j = 0; j < n; j++)
                tot += r.confusion[i * n + j];
            printf("%s%.6f", i ? "," : "", tot ? (double)r.confusion[i * n + i] / tot : 0.0);
        }
        printf("],\"confusion\":[");
        for (int i = 0; i < n; i++) {
            printf("%s[", i ? "," : "");
            for (int j = 0; j < n; j++)
                printf("%s%d", j ? "," : "", r.confusion[i * n + j]);
            printf("]");
        }
        printf("]}\n");
    } else {
        printf("%s on %s: accuracy %.2f %% (%d / %d), isa %s\n\nper class:\n", path, d->source,
               100.0 * r.accuracy, r.correct, r.samples, cli_isa_name());
        for (int i = 0; i < n; i++) {
            int tot = 0;
            for (int j = 0; j < n; j++)
                tot += r.confusion[i * n + j];
            printf("  %2d %-12s %6.2f %%  (%d)\n", i, n == 10 ? fmnist_classes[i] : "",
                   tot ? 100.0 * r.confusion[i * n + i] / tot : 0.0, tot);
        }
        printf("\nconfusion matrix (rows: true class, columns: predicted):\n    ");
        for (int j = 0; j < n; j++)
            printf("%6d", j);
        printf("\n");
        for (int i = 0; i < n; i++) {
            printf("%4d", i);
            for (int j = 0; j < n; j++)
                printf("%6d", r.confusion[i * n + j]);
            printf("\n");
        }
    }
    rc = 0;
    goto out;
fail:
    rc = cli_fail("eval", st);
out:
    efc_eval_result_fini(&r);
    efc_model_free(m);
    efc_dataset_free(d);
    return rc;
}
