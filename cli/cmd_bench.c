/* efc bench — latency percentiles and throughput after warm-up, plus memory figures. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "common/efc_alloc.h"
#include "common/efc_parse.h"
#include "common/efc_rng.h"
#include "common/efc_stats.h"
#include "common/efc_time.h"
#include "kernels/blas.h"
#include "model/efm.h"
#include "model/exec.h"

static void help(void)
{
    printf("usage: efc bench model.efm [--batch N] [--threads T] [--runs R] [--warmup W] "
           "[--json]\n\n"
           "  --batch N     samples per run (default 1)\n"
           "  --threads T   OpenBLAS threads (default 1: one edge core)\n"
           "  --runs R      timed runs (default: as many as fit in ~2 s, at least 50)\n"
           "  --warmup W    untimed runs first (default 10)\n"
           "  --json        one JSON object on stdout (keys in docs/cli.md)\n"
           "  --isa X       (global option) cap the kernels and the OpenBLAS core\n\n"
           "EFC_SPARSE=auto|off|on chooses the sparse kernels per layer (default auto).\n");
}

int cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'},
        {"runs", required_argument, 0, 'r'},
        {"warmup", required_argument, 0, 'w'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct efc_model *m = NULL;
    struct efc_exec *e = NULL;
    struct efc_exec_opts eo = {0};
    struct efc_rng rng;
    int64_t batch = 1, threads = 1, runs = 0, warmup = 10;
    int json = 0, c, rc = 1;
    float *in = NULL;
    double *t = NULL, total = 0.0;
    const float *out;
    size_t n_in;
    uint64_t allocs;
    enum efc_status st;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (efc_parse_i64(optarg, 1, 4096, "--batch", &batch))
                return cli_fail("bench", EFC_EINVAL);
            break;
        case 't':
            if (efc_parse_i64(optarg, 1, 256, "--threads", &threads))
                return cli_fail("bench", EFC_EINVAL);
            break;
        case 'r':
            if (efc_parse_i64(optarg, 1, 1000000, "--runs", &runs))
                return cli_fail("bench", EFC_EINVAL);
            break;
        case 'w':
            if (efc_parse_i64(optarg, 0, 1000000, "--warmup", &warmup))
                return cli_fail("bench", EFC_EINVAL);
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            help();
            return 0;
        default:
            return cli_usage_error("bench", "bad option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("bench", "need exactly one model file");
    efc_blas_set_threads((int)threads);
    eo.max_batch = (int32_t)batch;
    if ((st = cli_load_model(argv[optind], &m)) || (st = efc_exec_new(m, &eo, &e)))
        goto fail;
    n_in = (size_t)efc_exec_input_size(e) * (size_t)batch;
    in = efc_malloc(n_in * sizeof(float));
    if (!in) {
        st = efc_errf(EFC_ENOMEM, "out of memory");
        goto fail;
    }
    efc_rng_init(&rng, 42);
    for (size_t i = 0; i < n_in; i++)
        in[i] = (float)efc_rng_below(&rng, 256); /* raw pixel-like values */
    for (int64_t i = 0; i < warmup; i++)
        if ((st = efc_exec_run(e, in, (int32_t)batch, &out)))
            goto fail;
    if (runs == 0) { /* as many runs as fit in about 2 s, from one calibration run */
        double t0 = efc_time_s(), one;
        if ((st = efc_exec_run(e, in, (int32_t)batch, &out)))
            goto fail;
        one = efc_time_s() - t0;
        runs = one > 0 ? (int64_t)(2.0 / one) : 1000;
        runs = runs < 50 ? 50 : runs > 100000 ? 100000 : runs;
    }
    t = efc_malloc((size_t)runs * sizeof(double));
    if (!t) {
        st = efc_errf(EFC_ENOMEM, "out of memory");
        goto fail;
    }
    allocs = efc_alloc_count();
    for (int64_t i = 0; i < runs; i++) {
        double t0 = efc_time_s();
        if ((st = efc_exec_run(e, in, (int32_t)batch, &out)))
            goto fail;
        t[i] = (efc_time_s() - t0) * 1e3;
        total += t[i];
    }
    allocs = efc_alloc_count() - allocs;
    efc_sort_f64(t, (size_t)runs);
    {
        int32_t n_layers;
        const struct efc_exec_layer *ly = efc_exec_layers(e, &n_layers);
        double p50 = efc_percentile(t, (size_t)runs, 0.50);
        double p90 = efc_percentile(t, (size_t)runs, 0.90);
        double p99 = efc_percentile(t, (size_t)runs, 0.99);
        double thr = (double)batch * (double)runs / (total * 1e-3);
        if (json) {
            printf("{\"model\":");
            cli_json_str(stdout, argv[optind]);
            /* microsecond digits: a sparse INT8 mlp runs in ~2 us */
            printf(",\"batch\":%lld,\"threads\":%lld,\"runs\":%lld,\"p50_ms\":%.6f,"
                   "\"p90_ms\":%.6f,\"p99_ms\":%.6f,\"mean_ms\":%.6f,\"throughput_per_s\":%.1f,"
                   "\"peak_activation_bytes\":%zu,\"weight_bytes\":%zu,\"peak_rss_bytes\":%llu,"
                   "\"allocations_during_runs\":%llu,\"isa\":\"%s\",\"blas_core\":\"%s\","
                   "\"sparse_mode\":\"%s\",\"gemm_layers\":%d,\"sparse_layers\":%d}\n",
                   (long long)batch, (long long)threads, (long long)runs, p50, p90, p99,
                   total / (double)runs, thr, efc_exec_peak_activation_bytes(e),
                   efc_exec_weight_bytes(e), (unsigned long long)cli_peak_rss_bytes(),
                   (unsigned long long)allocs, cli_isa_name(), cli_blas_core(),
                   efc_exec_sparse_mode_name(efc_exec_sparse_mode_of(e)), n_layers,
                   efc_exec_n_sparse(e));
        } else {
            printf("%s: batch %lld, %lld runs after %lld warm-up, %lld thread(s), isa %s, "
                   "OpenBLAS %s\n",
                   argv[optind], (long long)batch, (long long)runs, (long long)warmup,
                   (long long)threads, cli_isa_name(), cli_blas_core());
            printf("  latency  p50 %.4f ms   p90 %.4f ms   p99 %.4f ms\n", p50, p90, p99);
            printf("  throughput %.0f samples/s\n", thr);
            printf("  peak activations %zu bytes, weights %zu bytes, process peak RSS %llu "
                   "bytes\n",
                   efc_exec_peak_activation_bytes(e), efc_exec_weight_bytes(e),
                   (unsigned long long)cli_peak_rss_bytes());
            printf("  allocations during timed runs: %llu\n", (unsigned long long)allocs);
            printf("  sparse layers %d of %d (EFC_SPARSE=%s)", efc_exec_n_sparse(e), n_layers,
                   efc_exec_sparse_mode_name(efc_exec_sparse_mode_of(e)));
            for (int32_t i = 0, k = 0; i < n_layers; i++)
                if (ly[i].sparse)
                    printf("%s%s %s %.3f", k++ ? ", " : ": ", ly[i].name, ly[i].format,
                           ly[i].density);
            printf("\n");
        }
    }
    rc = 0;
    goto out;
fail:
    rc = cli_fail("bench", st);
out:
    efc_free(t);
    efc_free(in);
    efc_exec_free(e);
    efc_model_free(m);
    return rc;
}
