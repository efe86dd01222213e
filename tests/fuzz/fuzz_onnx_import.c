/* fuzz_onnx_import.c — libFuzzer target for the ONNX importer (onnx/import.c).
 *
 * Each input is imported as an ONNX ModelProto; a model that imports must pass the .efm
 * writer and reader (the importer only produces models efc accepts). Replayed over
 * tests/fuzz/corpus/onnx_import/ (small fixtures of tests/fixtures/onnx/) by ctest.
 */
#include <stdint.h>
#include <stdlib.h>

#include "common/efc_alloc.h"
#include "model/efm.h"
#include "onnx/onnx_import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct efc_model *m, *m2;
    void *buf;
    size_t len;

    if (efc_onnx_import(data, size, NULL, &m) != EFC_OK)
        return 0;
    if (efc_efm_encode(m, &buf, &len) != EFC_OK)
        abort(); /* the importer built a model the writer refuses */
    if (efc_efm_decode(buf, len, "fuzz-onnx.efm", &m2) != EFC_OK)
        abort();
    efc_model_free(m2);
    efc_free(buf);
    efc_model_free(m);
    return 0;
}
