/* efc_fs.h — durable file writes and whole-file reads.
 *
 * efc_fs_write_atomic() is the only way efc replaces a durable file: temp file in the same
 * directory, write, fsync(file), rename over the target, fsync(dir) (Redis rdbSave). A crash
 * leaves either the old or the new file, never a mix. Thread-safe (no shared state).
 */
#ifndef EFC_COMMON_FS_H
#define EFC_COMMON_FS_H

#include <stddef.h>

#include "common/efc_status.h"

/* Write buf[0..len) to path atomically. Errors: EFC_EIO / EFC_ENOSPC (errno intact). */
enum efc_status efc_fs_write_atomic(const char *path, const void *buf, size_t len);

/* mkdir(path, mode) that survives a power cut: when the directory is created, its parent is
 * fsynced (a new entry is durable only then). An existing directory is EFC_OK. Errors: EFC_EIO
 * / EFC_ENOSPC with the path and errno's text. */
enum efc_status efc_fs_mkdir_durable(const char *path, unsigned mode);

/* Read a whole file into a new buffer (freed with efc_free); refuses files over max_bytes
 * with EFC_EPROTO. Missing file: EFC_ENOTFOUND. */
enum efc_status efc_fs_read_all(const char *path, size_t max_bytes, void **out, size_t *out_len);

#endif
