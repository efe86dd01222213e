/* replay_main.c — runs a libFuzzer target's corpus without libFuzzer (for ctest).
 *
 * Usage: fuzz_X_replay DIR|FILE...  Every regular file (recursively for directories, dot
 * files skipped) is passed once to LLVMFuzzerTestOneInput; prints "N inputs replayed".
 * Exit status 0, or 1 if an argument cannot be read (a missing corpus is a failure, not an
 * empty pass). Crashes surface as the sanitizer's abort.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_BYTES ((size_t)64 << 20)

static int replay_path(const char *path, long *count, int depth)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: cannot stat\n", path);
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d;
        struct dirent *e;
        int rc = 0;
        if (depth > 8 || !(d = opendir(path))) {
            fprintf(stderr, "%s: cannot open directory\n", path);
            return 1;
        }
        while ((e = readdir(d)) != NULL) {
            char sub[4096];
            if (e->d_name[0] == '.')
                continue;
            if (snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) >= (int)sizeof(sub)) {
                fprintf(stderr, "%s/%s: path too long\n", path, e->d_name);
                rc = 1;
                continue;
            }
            rc |= replay_path(sub, count, depth + 1);
        }
        closedir(d);
        return rc;
    }
    if (S_ISREG(st.st_mode)) {
        void *buf;
        size_t len;
        if (efc_fs_read_all(path, REPLAY_MAX_BYTES, &buf, &len) != EFC_OK) {
            fprintf(stderr, "%s: %s\n", path, efc_err_detail());
            return 1;
        }
        LLVMFuzzerTestOneInput(buf, len);
        efc_free(buf);
        (*count)++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long count = 0;
    int rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        rc |= replay_path(argv[i], &count, 0);
    printf("%ld inputs replayed\n", count);
    return rc;
}
