/* msg_ack.c — the coordinator's application ack (a result is committed): encode, decode. */
#include <string.h>

#include "common/efc_alloc.h"
#include "proto/proto.h"
#include "proto/proto_int.h"

#define MSG "ack"

enum efc_status efc_proto_ack_decode(const void *buf, size_t len, struct efc_proto_ack *out)
{
    struct efc_proto_rd r = {NULL, MSG, EFC_OK};
    cJSON *root;
    enum efc_status st;

    memset(out, 0, sizeof(*out));
    st = efc_proto_json_parse(buf, len, MSG, "ack", &root);
    if (st != EFC_OK)
        return st;
    r.root = root;
    out->version = EFC_PROTO_VERSION;
    efc_proto_rd_id(&r, "job_id", out->job_id, sizeof(out->job_id));
    st = efc_proto_rd_id(&r, "device_id", out->device_id, sizeof(out->device_id));
    cJSON_Delete(root);
    if (st != EFC_OK)
        memset(out, 0, sizeof(*out));
    return st;
}

enum efc_status efc_proto_ack_encode(const struct efc_proto_ack *m, char **out)
{
    struct efc_proto_ack chk;
    cJSON *o = efc_proto_wr_begin("ack");
    enum efc_status st;
    char detail[256];
    int ok = o != NULL;

    if (ok) {
        efc_proto_wr_str(o, "job_id", m->job_id, sizeof(m->job_id), &ok);
        efc_proto_wr_str(o, "device_id", m->device_id, sizeof(m->device_id), &ok);
    }
    st = efc_proto_wr_finish(o, ok, MSG, out);
    if (st != EFC_OK)
        return st;
    st = efc_proto_ack_decode(*out, strlen(*out), &chk);
    if (st != EFC_OK) {
        efc_free(*out);
        *out = NULL;
        efc_proto_detail_copy(detail, sizeof(detail));
        return efc_errf(st == EFC_ENOMEM ? st : EFC_EINVAL, "encode: %s", detail);
    }
    return EFC_OK;
}
