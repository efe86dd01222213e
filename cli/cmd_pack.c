/* efc pack / efc unpack — .efm <-> artifact (the .efm compressed with zstd behind a header
 * carrying its size and SHA-256; docs/format.md, "Artifact container"). */
#include <getopt.h>
#include <stdio.h>
#include <zstd.h>

#include "cli/cli.h"
#include "common/efc_parse.h"
#include "model/artifact.h"
#include "model/efm.h"

static void pack_help(void)
{
    printf("usage: efc pack in.efm -o out.efca [--level L]\n\n"
           "  -o, --output F  the artifact\n"
           "  --level L       zstd level %d..%d (default %d)\n",
           ZSTD_minCLevel(), ZSTD_maxCLevel(), EFC_ARTIFACT_LEVEL_DEFAULT);
}

static void unpack_help(void)
{
    printf("usage: efc unpack in.efca -o out.efm [--max-bytes N]\n\n"
           "  -o, --output F   the .efm\n"
           "  --max-bytes N    refuse an artifact whose .efm is larger (default and cap %zu)\n",
           EFC_EFM_MAX_FILE_BYTES);
}

static void print_result(const char *in, const char *out, uint64_t from, uint64_t to,
                         const struct efc_artifact_info *info)
{
    char hex[EFC_SHA256_HEX_BYTES];
    efc_sha256_hex(info->efm_sha256, hex);
    printf("%s -> %s: %llu -> %llu bytes, efm sha256 %s\n", in, out, (unsigned long long)from,
           (unsigned long long)to, hex);
}

int cmd_pack(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"level", required_argument, 0, 'l'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct efc_artifact_info info;
    const char *outp = NULL;
    int64_t level = EFC_ARTIFACT_LEVEL_DEFAULT;
    enum efc_status st;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'o')
            outp = optarg;
        else if (c == 'l') {
            if (efc_parse_i64(optarg, ZSTD_minCLevel(), ZSTD_maxCLevel(), "--level", &level))
                return cli_usage_error("pack", "%s", efc_err_detail());
        } else if (c == 'h') {
            pack_help();
            return 0;
        } else
            return cli_usage_error("pack", "bad option");
    }
    if (optind + 1 != argc || !outp)
        return cli_usage_error("pack", "need one .efm file and -o out.efca");
    efc_err_clear();
    if ((st = efc_artifact_pack_file(argv[optind], outp, (int)level, &info)))
        return cli_fail("pack", st);
    print_result(argv[optind], outp, info.efm_bytes, EFC_ARTIFACT_HEADER_BYTES + info.payload_bytes,
                 &info);
    return 0;
}

int cmd_unpack(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"max-bytes", required_argument, 0, 'm'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct efc_artifact_info info;
    const char *outp = NULL;
    int64_t max_bytes = (int64_t)EFC_EFM_MAX_FILE_BYTES;
    enum efc_status st;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'o')
            outp = optarg;
        else if (c == 'm') {
            if (efc_parse_i64(optarg, 1, (int64_t)EFC_EFM_MAX_FILE_BYTES, "--max-bytes",
                              &max_bytes))
                return cli_usage_error("unpack", "%s", efc_err_detail());
        } else if (c == 'h') {
            unpack_help();
            return 0;
        } else
            return cli_usage_error("unpack", "bad option");
    }
    if (optind + 1 != argc || !outp)
        return cli_usage_error("unpack", "need one artifact file and -o out.efm");
    efc_err_clear();
    if ((st = efc_artifact_unpack_file(argv[optind], outp, (size_t)max_bytes, &info)))
        return cli_fail("unpack", st);
    print_result(argv[optind], outp, EFC_ARTIFACT_HEADER_BYTES + info.payload_bytes, info.efm_bytes,
                 &info);
    return 0;
}
