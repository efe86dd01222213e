/* fuzz_artifact_unpack.c — libFuzzer target for the artifact container (model/artifact.c).
 *
 * Each input is unpacked twice: as is (header checks: magic, version, flags, codec, sizes,
 * limit), and with the header rewritten to agree with the input (docs/format.md, "Artifact
 * container": known magic / version / codec, payload_bytes = the rest of the input,
 * efm_bytes = the zstd frame's stated content size when it is within the limit, the SHA-256
 * of what an independent ZSTD_decompress yields), so that mutations reach the zstd frame
 * checks, the bounded decompression and the success path instead of stopping at the header.
 * Whatever unpacks must be exactly the announced size with the announced SHA-256; an .efm
 * that comes out is decoded (the receiver's next step) and, if it starts like one, packs and
 * unpacks back to the same bytes. Replayed over tests/fuzz/corpus/artifact_unpack/ by ctest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "common/efc_alloc.h"
#include "common/efc_sha256.h"
#include "model/artifact.h"
#include "model/efm.h"

#define FUZZ_MAX_EFM ((size_t)1 << 22) /* 4 MiB: keeps each run small */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void unpack_one(const uint8_t *data, size_t size)
{
    struct efc_artifact_info info;
    struct efc_model *m;
    uint8_t sum[EFC_SHA256_BYTES];
    void *efm, *art, *back;
    size_t n, an, bn;

    if (efc_artifact_unpack(data, size, FUZZ_MAX_EFM, &efm, &n) != EFC_OK)
        return;
    if (efc_artifact_peek(data, size, FUZZ_MAX_EFM, 0, &info) != EFC_OK)
        abort(); /* unpack accepted a header that peek refuses */
    efc_sha256(efm, n, sum);
    if (n != info.efm_bytes || memcmp(sum, info.efm_sha256, EFC_SHA256_BYTES) != 0)
        abort(); /* accepted bytes that are not what the header announces */
    if (efc_efm_decode(efm, n, "fuzz.efm", &m) == EFC_OK)
        efc_model_free(m);
    if (efc_artifact_pack(efm, n, 1, &art, &an) == EFC_OK) {
        if (efc_artifact_unpack(art, an, FUZZ_MAX_EFM, &back, &bn) != EFC_OK)
            abort(); /* pack produced an artifact unpack refuses */
        if (bn != n || memcmp(back, efm, n) != 0)
            abort();
        efc_free(back);
        efc_free(art);
    }
    efc_free(efm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *cp, *out;
    unsigned long long content;
    size_t psize, got;

    unpack_one(data, size);
    if (size < EFC_ARTIFACT_HEADER_BYTES || size > ((size_t)1 << 24))
        return 0;
    cp = efc_malloc(size);
    if (!cp)
        return 0;
    memcpy(cp, data, size);
    psize = size - EFC_ARTIFACT_HEADER_BYTES;
    memcpy(cp, "EFCA", 4);
    wr32(cp + 4, 1);
    wr32(cp + 8, 0);
    wr32(cp + 12, 1);
    wr64(cp + 24, psize);
    content = ZSTD_getFrameContentSize(cp + EFC_ARTIFACT_HEADER_BYTES, psize);
    if (content >= 64 && content <= FUZZ_MAX_EFM)
        wr64(cp + 16, content);
    /* the SHA-256 of an independent decompression, so that a frame that decompresses to the
     * stated size is accepted (ZSTD_decompress also takes several frames: unpack must not) */
    content = rd64(cp + 16);
    if (content >= 64 && content <= FUZZ_MAX_EFM && (out = efc_malloc((size_t)content))) {
        got = ZSTD_decompress(out, (size_t)content, cp + EFC_ARTIFACT_HEADER_BYTES, psize);
        if (!ZSTD_isError(got) && got == content)
            efc_sha256(out, (size_t)content, cp + 32);
        efc_free(out);
    }
    unpack_one(cp, size);
    efc_free(cp);
    return 0;
}
