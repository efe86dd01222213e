/* fuzz_proto_decode.c — libFuzzer target for every proto decoder (proto.h, chunk.h).
 *
 * The first byte selects the decoder (modulo 9): 0 status (topic device "dev-01"), 1 job,
 * 2 result (topic device "dev-01"), 3 ack, 4 chunk request, 5 binary chunk, 6 device topic
 * parse, 7 OTA directive, 8 OTA report (topic device "dev-01"). The rest is the payload.
 * New decoders are appended at the end so that the seeds' selector bytes (0..6, written
 * before 7 and 8 existed) keep their meaning: never renumber a case. A message that decodes
 * must re-encode, and the encoding must decode to the same struct (the encoder and the
 * decoder agree on what is valid). Replayed over tests/fuzz/corpus/proto_decode/ by ctest;
 * the OTA seeds there are named ota_* and ota_report_*.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "proto/chunk.h"
#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROUND_TRIP(T, decode_call, encode_fn, redecode_call)                                       \
    do {                                                                                           \
        T a, b;                                                                                    \
        char *s = NULL;                                                                            \
        if ((decode_call) != EFC_OK)                                                               \
            return;                                                                                \
        if (encode_fn(&a, &s) != EFC_OK)                                                           \
            abort();                                                                               \
        if ((redecode_call) != EFC_OK || memcmp(&a, &b, sizeof(a)) != 0)                           \
            abort();                                                                               \
        efc_free(s);                                                                               \
    } while (0)

static void run(unsigned sel, const uint8_t *p, size_t n)
{
    switch (sel % 9) {
    case 0:
        ROUND_TRIP(struct efc_proto_status, efc_proto_status_decode(p, n, "dev-01", &a),
                   efc_proto_status_encode, efc_proto_status_decode(s, strlen(s), "dev-01", &b));
        break;
    case 1:
        ROUND_TRIP(struct efc_proto_job, efc_proto_job_decode(p, n, &a), efc_proto_job_encode,
                   efc_proto_job_decode(s, strlen(s), &b));
        break;
    case 2:
        ROUND_TRIP(struct efc_proto_result, efc_proto_result_decode(p, n, "dev-01", &a),
                   efc_proto_result_encode, efc_proto_result_decode(s, strlen(s), "dev-01", &b));
        break;
    case 3:
        ROUND_TRIP(struct efc_proto_ack, efc_proto_ack_decode(p, n, &a), efc_proto_ack_encode,
                   efc_proto_ack_decode(s, strlen(s), &b));
        break;
    case 4:
        ROUND_TRIP(struct efc_chunk_req, efc_chunk_req_decode(p, n, &a), efc_chunk_req_encode,
                   efc_chunk_req_decode(s, strlen(s), &b));
        break;
    case 5: {
        struct efc_chunk c, d;
        void *buf;
        size_t len;
        if (efc_chunk_decode(p, n, &c) != EFC_OK)
            return;
        if (efc_chunk_encode(&c, &buf, &len) != EFC_OK || len != n || memcmp(buf, p, n) != 0)
            abort();
        if (efc_chunk_decode(buf, len, &d) != EFC_OK || d.offset != c.offset || d.len != c.len ||
            d.total_bytes != c.total_bytes)
            abort();
        efc_free(buf);
        break;
    }
    case 6: {
        char topic[512], id[EFC_PROTO_ID_MAX], kind[16], again[512];
        size_t k = n < sizeof(topic) - 1 ? n : sizeof(topic) - 1;
        memcpy(topic, p, k);
        topic[k] = '\0';
        if (efc_proto_topic_parse("efc/v1", topic, id, sizeof(id), kind, sizeof(kind)) != EFC_OK)
            return;
        if (efc_proto_topic("efc/v1", id, kind, again, sizeof(again)) != EFC_OK ||
            strcmp(again, topic) != 0)
            abort();
        break;
    }
    case 7:
        ROUND_TRIP(struct efc_proto_ota, efc_proto_ota_decode(p, n, &a), efc_proto_ota_encode,
                   efc_proto_ota_decode(s, strlen(s), &b));
        break;
    default:
        ROUND_TRIP(struct efc_proto_ota_report, efc_proto_ota_report_decode(p, n, "dev-01", &a),
                   efc_proto_ota_report_encode,
                   efc_proto_ota_report_decode(s, strlen(s), "dev-01", &b));
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    run(data[0], data + 1, size - 1);
    return 0;
}
