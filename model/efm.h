/* efm.h — the .efm model file: save and load (format in docs/format.md).
 *
 * Little-endian, versioned header, section table, tensor data aligned to 64 bytes so weights
 * can be used in place after mmap, a metadata section (JSON) and a checksum over the whole
 * file. The loader trusts nothing: it checks the checksum first, then every offset, size,
 * shape and enum, and finally runs efc_model_check(); any problem returns an error whose
 * detail (efc_err_detail) names the file, the section and what is wrong:
 *   EFC_EPROTO     bad magic, truncated, offset/size out of range, absurd shape, bad enum
 *   EFC_EHASH      checksum mismatch
 *   EFC_EVERSION   a format version this build does not read
 *   EFC_ENOTFOUND  no such file
 * Saving is atomic (common/efc_fs.h). Ownership: the loaded model owns its mapping.
 */
#ifndef EFC_MODEL_EFM_H
#define EFC_MODEL_EFM_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#define EFC_EFM_MAX_FILE_BYTES ((size_t)1 << 31) /* 2 GiB: refuse anything larger */

/* Serialise to a new buffer (efc_free) / to a file (atomic). */
enum efc_status efc_efm_encode(const struct efc_model *m, void **out, size_t *out_len);
enum efc_status efc_efm_save(const struct efc_model *m, const char *path);

/* Parse a buffer (copied; `what` names it in messages) / map and parse a file. */
enum efc_status efc_efm_decode(const void *buf, size_t len, const char *what,
                               struct efc_model **out);
enum efc_status efc_efm_load(const char *path, struct efc_model **out);

/* Bytes tensor t's data takes in an .efm written by this build, without alignment padding:
 * efc_tensor_bytes for a dense parameter; for CSR the nnz values, row_ptr (4 bytes per row
 * + 4) and col_idx in the encoding the writer picks for it (i32, u16 or Rice-coded gaps,
 * docs/format.md), usually far fewer bytes than efc_tensor_storage_bytes counts in memory.
 * For deciding whether storing t as CSR makes the file smaller. 0 for a tensor that is not
 * a parameter; SIZE_MAX for an invalid CSR structure (the writer refuses it). Reads t only and
 * leaves the error detail alone. */
size_t efc_efm_tensor_file_bytes(const struct efc_tensor *t);

#endif
