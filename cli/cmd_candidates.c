/* efc candidates — build the candidate models of a grid: each policy's training prefix run
 * once on --data (compress/candidates.h), cached in the output directory. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_parse.h"
#include "common/efc_sha256.h"
#include "compress/candidates.h"

static void help(void)
{
    printf("usage: efc candidates base.efm --grid default|FILE [--data SPEC] [-o DIR]\n"
           "                      [--seed S] [-q]\n\n"
           "  --grid G     'default' (built in, docs/policies.md) or a file, one policy per line\n"
           "  --data SPEC  training data for the training steps (default fashion-mnist; its\n"
           "               train split; its test split, if any, measures accuracy)\n"
           "  -o DIR       the candidate cache (default: candidates/ next to the base model):\n"
           "               DIR/c-<hash>.efm per training prefix, reused when present\n"
           "  --seed S     training seed (default 1)\n"
           "Policies without a training prefix (fp32, int8(...)) use the base model itself.\n");
}

int cmd_candidates(int argc, char **argv)
{
    static const struct option opts[] = {
        {"grid", required_argument, 0, 'g'}, {"data", required_argument, 0, 'd'},
        {"seed", required_argument, 0, 's'}, {"quiet", no_argument, 0, 'q'},
        {"output", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *grid = NULL, *data = "fashion-mnist", *dir = NULL;
    char defdir[4096];
    struct efc_compress_opts co = {.seed = 1, .progress = 1};
    struct efc_grid *g = efc_calloc(1, sizeof(*g));
    struct efc_dataset *train = NULL, *test = NULL;
    int c, rc = 1;
    int64_t v;
    enum efc_status st = EFC_OK;

    if (!g)
        return cli_fail("candidates", EFC_ENOMEM);
    optind = 1;
    while ((c = getopt_long(argc, argv, "qo:h", opts, NULL)) != -1) {
        switch (c) {
        case 'g':
            grid = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 's':
            if (efc_parse_i64(optarg, 0, INT64_MAX, "--seed", &v)) {
                efc_free(g);
                return cli_fail("candidates", EFC_EINVAL);
            }
            co.seed = (uint64_t)v;
            break;
        case 'q':
            co.progress = 0;
            break;
        case 'o':
            dir = optarg;
            break;
        case 'h':
            help();
            efc_free(g);
            return 0;
        default:
            efc_free(g);
            return cli_usage_error("candidates", "bad option");
        }
    }
    if (optind + 1 != argc || !grid) {
        efc_free(g);
        return cli_usage_error("candidates", "need one base model and --grid");
    }
    const char *base = argv[optind];
    if (!dir) { /* default: candidates/ next to the base model */
        const char *slash = strrchr(base, '/');
        snprintf(defdir, sizeof(defdir), "%.*scandidates", slash ? (int)(slash - base + 1) : 0,
                 base);
        dir = defdir;
    }
    char base_sha[EFC_SHA256_HEX_BYTES];
    void *buf = NULL;
    size_t n = 0;
    uint8_t d[EFC_SHA256_BYTES];
    if ((st = efc_grid_load(grid, g)) || (st = efc_fs_read_all(base, (size_t)1 << 31, &buf, &n)))
        goto fail;
    efc_sha256(buf, n, d);
    efc_sha256_hex(d, base_sha);
    efc_free(buf);
    char bdir[4096];
    if ((st = cli_compress_data(data, base, &co, &train, &test, bdir, sizeof(bdir))))
        goto fail;
    printf("%-58s %-10s %10s %9s %8s  %s\n", "policy", "candidate", "bytes", "seconds",
           "accuracy", "file");
    for (int32_t i = 0; i < g->n; i++) {
        char prefix[EFC_POLICY_STR_MAX];
        struct efc_candidate cand;
        if ((st = efc_policy_prefix(g->policies[i], prefix, sizeof(prefix))))
            goto fail;
        if (!prefix[0]) {
            printf("%-58s %-10s %10zu %9s %8s  %s\n", g->policies[i], "base", n, "-", "-",
                   base);
            continue;
        }
        if ((st = efc_candidate_build(base, base_sha, prefix, &co, dir, &cand)))
            goto fail;
        char acc[16] = "-";
        if (cand.val_accuracy >= 0)
            snprintf(acc, sizeof(acc), "%.2f %%", 100.0 * cand.val_accuracy);
        printf("%-58s %-10s %10llu %9.1f %8s  %s\n", g->policies[i],
               cand.cached ? "cached" : "built", (unsigned long long)cand.bytes, cand.seconds,
               acc, cand.path);
        fflush(stdout);
    }
    rc = 0;
    goto out;
fail:
    rc = cli_fail("candidates", st);
out:
    efc_dataset_free(train);
    efc_dataset_free(test);
    efc_free(g);
    return rc;
}
