/* fuzz_dataset_read.c — libFuzzer target for the IDX and .npy readers (model/dataset.c).
 *
 * The readers take paths (the IDX one goes through zlib's gzopen, which reads plain and gzip
 * files alike), so each input is written to one temporary file per process and read with
 * both readers; a read that succeeds must describe exactly the bytes it returned. Replayed
 * over tests/fuzz/corpus/dataset_read/ by ctest.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "model/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void check(enum efc_status st, enum efc_dtype dt, int32_t ndim, const int32_t *dims,
                  void *out)
{
    size_t n = 1;
    if (st != EFC_OK)
        return;
    if (ndim < 1 || ndim > 4 || (dt != EFC_DTYPE_U8 && dt != EFC_DTYPE_F32))
        abort();
    for (int32_t i = 0; i < ndim; i++) {
        if (dims[i] < 1)
            abort();
        n *= (size_t)dims[i];
    }
    /* touch the last byte: ASan reports a short buffer */
    if (((volatile uint8_t *)out)[n * efc_dtype_size(dt) - 1] == 0x5a)
        n++;
    efc_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum efc_dtype dt;
    int32_t ndim, dims[4];
    void *out = NULL;
    enum efc_status st;
    int fd;

    if (!path[0])
        snprintf(path, sizeof(path), "/tmp/efc-fuzz-dataset-%ld.bin", (long)getpid());
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    close(fd);
    /* call first: argument evaluation order would let check() see stale out-params */
    st = efc_idx_read(path, &dt, &ndim, dims, &out, (size_t)1 << 24);
    check(st, dt, ndim, dims, out);
    out = NULL;
    st = efc_npy_read(path, &dt, &ndim, dims, &out, (size_t)1 << 24);
    check(st, dt, ndim, dims, out);
    return 0;
}
