/* efc train — train a built-in architecture and save it as .efm. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "common/efc_parse.h"
#include "compress/train.h"
#include "kernels/blas.h"
#include "model/arch.h"
#include "model/efm.h"
#include "model/exec.h"

static void help(void)
{
    printf("usage: efc train --arch A --data SPEC [options] -o model.efm\n\n"
           "  --arch A          mlp | lenet5 | cnn-bn | dwsep\n"
           "  --data SPEC       fashion-mnist (the Debian package), fashion-mnist:shard=i/n,\n"
           "                    or IMAGES[,LABELS] paths (.idx[.gz] / .npy); train split\n"
           "  --epochs N        default: mlp 15, lenet5 15, cnn-bn 8, dwsep 15\n"
           "  --batch N         mini-batch size (default 128)\n"
           "  --lr X            learning rate (default 1e-3 Adam, 0.05 SGD)\n"
           "  --optim adam|sgd  optimiser (default adam; sgd uses momentum 0.9, wd 5e-4)\n"
           "  --sched cosine|step|const   learning-rate schedule (default cosine)\n"
           "  --seed S          weight init and shuffling seed (default 1)\n"
           "  --limit N         use only the first N training samples\n"
           "  --threads T       OpenBLAS threads (default: all cores)\n"
           "  --no-eval         skip the test-split evaluation after training\n"
           "  -q, --quiet       no progress output\n"
           "  -o, --output F    output .efm file (required)\n");
}

static int32_t default_epochs(const char *arch)
{
    return !strcmp(arch, "cnn-bn") ? 8 : 15;
}

int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
        {"arch", required_argument, 0, 'a'},
        {"data", required_argument, 0, 'd'},
        {"epochs", required_argument, 0, 'e'},
        {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'l'},
        {"optim", required_argument, 0, 'p'},
        {"sched", required_argument, 0, 'S'},
        {"seed", required_argument, 0, 's'},
        {"limit", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'},
        {"no-eval", no_argument, 0, 'E'},
        {"quiet", no_argument, 0, 'q'},
        {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *arch = NULL, *data = NULL, *outp = NULL;
    struct efc_train_opts to;
    struct efc_train_report rep = {0};
    struct efc_model *m = NULL;
    struct efc_dataset *train = NULL, *test = NULL;
    int64_t v, epochs = -1, limit = 0, seed = 1;
    double lr = -1.0;
    int do_eval = 1, c, rc = 1;
    enum efc_status st;
    char meta[1024];

    efc_train_opts_default(&to);
    to.progress = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            arch = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 'e':
            if (efc_parse_i64(optarg, 1, 10000, "--epochs", &epochs))
                return cli_fail("train", EFC_EINVAL);
            break;
        case 'b':
            if (efc_parse_i64(optarg, 1, 65536, "--batch", &v))
                return cli_fail("train", EFC_EINVAL);
            to.batch = (int32_t)v;
            break;
        case 'l':
            if (efc_parse_f64(optarg, 1e-9, 10.0, "--lr", &lr))
                return cli_fail("train", EFC_EINVAL);
            break;
        case 'p':
            if (!strcmp(optarg, "adam"))
                to.optim = EFC_OPTIM_ADAM;
            else if (!strcmp(optarg, "sgd"))
                to.optim = EFC_OPTIM_SGD;
            else
                return cli_usage_error("train", "--optim must be adam or sgd, not '%s'", optarg);
            break;
        case 'S':
            if (!strcmp(optarg, "cosine"))
                to.sched = EFC_SCHED_COSINE;
            else if (!strcmp(optarg, "step"))
                to.sched = EFC_SCHED_STEP;
            else if (!strcmp(optarg, "const"))
                to.sched = EFC_SCHED_CONST;
            else
                return cli_usage_error("train", "--sched must be cosine, step or const");
            break;
        case 's':
            if (efc_parse_i64(optarg, 0, INT64_MAX, "--seed", &seed))
                return cli_fail("train", EFC_EINVAL);
            break;
        case 'n':
            if (efc_parse_i64(optarg, 1, INT32_MAX, "--limit", &limit))
                return cli_fail("train", EFC_EINVAL);
            break;
        case 't':
            if (efc_parse_i64(optarg, 1, 256, "--threads", &v))
                return cli_fail("train", EFC_EINVAL);
            efc_blas_set_threads((int)v);
            break;
        case 'E':
            do_eval = 0;
            break;
        case 'q':
            to.progress = 0;
            break;
        case 'o':
            outp = optarg;
            break;
        case 'h':
            help();
            return 0;
        default:
            return cli_usage_error("train", "bad option");
        }
    }
    if (optind < argc)
        return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!arch || !data || !outp)
        return cli_usage_error("train", "--arch, --data and -o are required");
    if (to.optim == EFC_OPTIM_SGD) {
        to.lr = 0.05f;
        to.weight_decay = 5e-4f;
    }
    if (lr > 0)
        to.lr = (float)lr;
    to.epochs = epochs > 0 ? (int32_t)epochs : default_epochs(arch);
    to.seed = (uint64_t)seed;

    if ((st = efc_arch_build(arch, (uint64_t)seed, &m)) ||
        (st = cli_open_data(data, "train", &train)))
        goto fail;
    if (limit && limit < train->n) {
        struct efc_dataset *s;
        if ((st = efc_dataset_slice(train, 0, (int32_t)limit, &s)))
            goto fail;
        efc_dataset_free(train);
        train = s;
    }
    if (do_eval && (st = cli_open_data(data, "test", &test))) {
        fprintf(stderr, "efc train: note: no test split (%s); skipping evaluation\n",
                efc_err_detail());
        test = NULL;
    }
    if (to.progress)
        fprintf(stderr,
                "efc train: %s on %s (%d samples), %d epochs, batch %d, %s, isa %s, "
                "OpenBLAS %s\n",
                arch, train->source, train->n, to.epochs, to.batch,
                to.optim == EFC_OPTIM_ADAM ? "adam" : "sgd", cli_isa_name(), cli_blas_core());
    if ((st = efc_train(m, train, test, &to, &rep)))
        goto fail;
    {
        time_t now = time(NULL);
        struct tm tm;
        char date[32];
        gmtime_r(&now, &tm);
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(meta, sizeof(meta),
                 "{\"provenance\":{\"tool\":\"efc %s\",\"command\":\"train\",\"date\":\"%s\","
                 "\"data\":\"%s\",\"samples\":%d,\"epochs\":%d,\"batch\":%d,\"optimizer\":\"%s\","
                 "\"lr\":%g,\"seed\":%llu,\"seconds\":%.1f},\"policy\":\"fp32\","
                 "\"metrics\":{\"train_loss\":%.5f,\"test_accuracy\":%.5f}}",
                 CLI_VERSION, date, strchr(data, '"') ? "?" : data, train->n, to.epochs, to.batch,
                 to.optim == EFC_OPTIM_ADAM ? "adam" : "sgd", to.lr, (unsigned long long)seed,
                 rep.seconds, rep.final_loss, rep.val_accuracy >= 0 ? rep.val_accuracy : -1.0);
        efc_free(m->meta_json);
        if (!(m->meta_json = efc_strdup(meta))) {
            st = efc_errf(EFC_ENOMEM, "out of memory");
            goto fail;
        }
    }
    if ((st = efc_efm_save(m, outp)))
        goto fail;
    printf("trained %s: %d epochs in %.1f s (%.0f images/s), final loss %.4f", arch, rep.epochs,
           rep.seconds, rep.images_per_s, rep.final_loss);
    if (rep.val_accuracy >= 0)
        printf(", test accuracy %.2f %%", 100.0 * rep.val_accuracy);
    printf("\nsaved %s\n", outp);
    rc = 0;
    goto out;
fail:
    rc = cli_fail("train", st);
out:
    efc_model_free(m);
    efc_dataset_free(train);
    efc_dataset_free(test);
    return rc;
}
