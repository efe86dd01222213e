/* efc.c — the offline tool: train, eval, inspect, bench, run (see docs/cli.md). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#include "common/efc_log.h"
#include "kernels/blas.h"
#include "kernels/kernels.h"
#include "model/artifact.h"
#include "model/efm.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a built-in architecture on a data set"},
    {"import", cmd_import, "convert an ONNX model (PyTorch export) into an .efm"},
    {"quantize", cmd_quantize, "INT8 post-training quantisation calibrated on local data"},
    {"compress", cmd_compress, "apply a policy (prune, nm, filters, distill, lowrank, qat, int8)"},
    {"candidates", cmd_candidates, "build the candidate models of a grid (training steps, cached)"},
    {"eval", cmd_eval, "accuracy, per-class accuracy and confusion matrix"},
    {"inspect", cmd_inspect, "layers, shapes, parameters, bytes, MACs"},
    {"pack", cmd_pack, "compress an .efm into an artifact (zstd, size + SHA-256 header)"},
    {"unpack", cmd_unpack, "verify and decompress an artifact back into its .efm"},
    {"keygen", cmd_keygen, "make an ECDSA P-256 signing key pair (efc-sign.key/.pub)"},
    {"sign", cmd_sign, "write the signed manifest of an artifact"},
    {"verify", cmd_verify, "check an artifact against its signed manifest and trusted keys"},
    {"bench", cmd_bench, "latency percentiles, throughput and memory"},
    {"run", cmd_run, "run a model on a .npy tensor of raw inputs"},
    {"bench-kernels", cmd_bench_kernels, "INT8 GEMM variants vs OpenBLAS sgemm (GOP/s, ratio)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: efc [--isa ref|avx2|avx512|avx512vnni|amx|neon] <command> [options]\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
    fprintf(f,
            "\n`efc <command> --help` shows the command's options.\n"
            "Environment: EFC_ISA caps the ISA like --isa; EFC_LOG_LEVEL=error|warn|info|debug.\n");
}

int cli_fail(const char *cmd, enum efc_status st)
{
    const char *d = efc_err_detail();
    fprintf(stderr, "efc %s: error: %s%s%s\n", cmd, efc_status_str(st), *d ? ": " : "", d);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "efc %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `efc %s --help`)\n", cmd);
    return 2;
}

void cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

enum efc_status cli_load_model(const char *path, struct efc_model **out)
{
    efc_err_clear();
    return efc_artifact_load_model(path, EFC_EFM_MAX_FILE_BYTES, out); /* .efm or .efca */
}

enum efc_status cli_open_data(const char *spec, const char *split, struct efc_dataset **out)
{
    efc_err_clear();
    return efc_dataset_open(spec, split, out);
}

enum efc_status cli_compress_data(const char *spec, const char *model_path,
                                  struct efc_compress_opts *co, struct efc_dataset **train,
                                  struct efc_dataset **test, char *dir, size_t dir_len)
{
    enum efc_status st = cli_open_data(spec, "train", train);
    if (st != EFC_OK)
        return st;
    if (cli_open_data(spec, "test", test) != EFC_OK)
        *test = NULL; /* optional: accuracy reports only */
    co->train = *train;
    co->val = *test;
    snprintf(dir, dir_len, "%s", model_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, dir_len, ".");
    co->base_dir = dir;
    return EFC_OK;
}

uint64_t cli_peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u;
}

const char *cli_isa_name(void)
{
    return efc_isa_name(efc_kernels_isa());
}

const char *cli_blas_core(void)
{
    return efc_blas_core();
}

/* --isa X / --isa=X may appear anywhere; EFC_ISA is the fallback. Returns the value or NULL. */
static const char *find_isa(int argc, char **argv)
{
    const char *s = getenv("EFC_ISA");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--isa") && i + 1 < argc)
            s = argv[i + 1];
        else if (!strncmp(argv[i], "--isa=", 6))
            s = argv[i] + 6;
    }
    return s && *s ? s : NULL;
}

/* Remove --isa options from argv so the commands never see them. */
static int strip_isa(int argc, char **argv)
{
    int w = 1;
    for (int r = 1; r < argc; r++) {
        if (!strcmp(argv[r], "--isa") && r + 1 < argc) {
            r++;
            continue;
        }
        if (!strncmp(argv[r], "--isa=", 6))
            continue;
        argv[w++] = argv[r];
    }
    argv[w] = NULL;
    return w;
}

int main(int argc, char **argv)
{
    enum efc_isa cap;
    enum efc_status st;
    const char *cmd;

    const char *isa = find_isa(argc, argv);

    cap = efc_isa_best();
    if (isa) {
        enum efc_isa want;
        if (efc_isa_parse(isa, &want) != EFC_OK)
            return cli_fail("--isa", EFC_EINVAL);
        cap = efc_isa_cap(cap, want);
        setenv("EFC_ISA", efc_isa_name(cap), 1); /* the kernel table and children follow */
    }
    /* OpenBLAS must run its best core for this CPU and cap (set before it is opened). */
    efc_blas_setup(cap);
    argc = strip_isa(argc, argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("efc %s\n", CLI_VERSION);
        return 0;
    }
    if ((st = efc_kernels_init(cap)))
        return cli_fail("init", st);
    cmd = argv[1];
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "efc: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
