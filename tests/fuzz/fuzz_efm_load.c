/* fuzz_efm_load.c — libFuzzer target for the .efm decoder (model/efm.c).
 *
 * Each input is decoded twice: as is (header, version, length and checksum paths), and with
 * the header's length and SHA-256 fields rewritten to match (docs/format.md: bytes 16..23 and
 * 32..63), so that mutations reach the section, tensor, node and metadata parsers instead of
 * stopping at EHASH. A model that decodes must re-encode and decode again (the writer and
 * the reader agree on what is valid). Replayed over tests/fuzz/corpus/efm_load/ by ctest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_sha256.h"
#include "model/efm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_one(const uint8_t *data, size_t size)
{
    struct efc_model *m, *m2;
    void *buf;
    size_t len;

    if (efc_efm_decode(data, size, "fuzz.efm", &m) != EFC_OK)
        return;
    if (efc_efm_encode(m, &buf, &len) != EFC_OK)
        abort(); /* the loader accepted a model the writer refuses */
    if (efc_efm_decode(buf, len, "fuzz-reencoded.efm", &m2) != EFC_OK)
        abort(); /* the writer produced a file the loader refuses */
    efc_model_free(m2);
    efc_free(buf);
    efc_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *cp;
    struct efc_sha256 s;

    decode_one(data, size);
    if (size < 64 || size > ((size_t)1 << 24))
        return 0;
    cp = efc_malloc(size);
    if (!cp)
        return 0;
    memcpy(cp, data, size);
    for (int i = 0; i < 8; i++)
        cp[16 + i] = (uint8_t)((uint64_t)size >> (8 * i));
    efc_sha256_init(&s);
    efc_sha256_update(&s, cp, 32);
    efc_sha256_update(&s, cp + 64, size - 64);
    efc_sha256_final(&s, cp + 32);
    decode_one(cp, size);
    efc_free(cp);
    return 0;
}
