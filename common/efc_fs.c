#include "common/efc_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/efc_alloc.h"

static enum efc_status io_status(void)
{
    return errno == ENOSPC ? EFC_ENOSPC : EFC_EIO;
}

enum efc_status efc_fs_write_atomic(const char *path, const void *buf, size_t len)
{
    char tmp[4096], dir[4096];
    const char *p = buf;
    int fd, dfd, e;
    size_t off = 0;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return efc_errf(EFC_EINVAL, "%s: path too long", path);
    snprintf(dir, sizeof(dir), "%s", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return efc_errf(io_status(), "%s: cannot create: %s", tmp, strerror(errno));
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        off += (size_t)w;
    }
    if (fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return EFC_OK;
fail:
    e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = e;
    return efc_errf(io_status(), "%s: write failed: %s", path, strerror(e));
}

enum efc_status efc_fs_read_all(const char *path, size_t max_bytes, void **out, size_t *out_len)
{
    struct stat st;
    char *buf;
    size_t off = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO, "%s: cannot open: %s", path,
                        strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return efc_errf(EFC_EIO, "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        close(fd);
        return efc_errf(EFC_EPROTO, "%s: file is %lld bytes, limit %zu", path,
                        (long long)st.st_size, max_bytes);
    }
    buf = efc_malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return efc_errf(EFC_ENOMEM, "%s: out of memory", path);
    }
    while (off < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + off, (size_t)st.st_size - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    close(fd);
    buf[off] = '\0';
    *out = buf;
    *out_len = off;
    return EFC_OK;
}

enum efc_status efc_fs_mkdir_durable(const char *path, unsigned mode)
{
    char dir[4096];
    int dfd;

    if (mkdir(path, (mode_t)mode) != 0) {
        if (errno == EEXIST)
            return EFC_OK;
        return efc_errf(io_status(), "%s: cannot create: %s", path, strerror(errno));
    }
    if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
        return efc_errf(EFC_EINVAL, "%s: path too long", path);
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        return efc_errf(io_status(), "%s: cannot sync its parent: %s", path, strerror(e));
    }
    close(dfd);
    return EFC_OK;
}
