/* msg_status.c — the agent's retained status message: encode, decode, validate. */
#include <string.h>

#include "common/efc_alloc.h"
#include "proto/proto.h"
#include "proto/proto_int.h"

#define MSG "status"

static enum efc_status decode_fields(struct efc_proto_rd *r, void *out)
{
    struct efc_proto_status *m = out;

    m->version = EFC_PROTO_VERSION;
    efc_proto_rd_id(r, "device_id", m->device_id, sizeof(m->device_id));
    efc_proto_rd_id(r, "hw_class", m->hw_class, sizeof(m->hw_class));
    efc_proto_rd_id(r, "isa", m->isa, sizeof(m->isa));
    efc_proto_rd_text(r, "blas_core", m->blas_core, sizeof(m->blas_core), 1);
    efc_proto_rd_i32(r, "cores", 1, 65536, &m->cores);
    efc_proto_rd_u64(r, "mem_bytes", 0, UINT64_MAX, &m->mem_bytes);
    efc_proto_rd_text(r, "agent_version", m->agent_version, sizeof(m->agent_version), 0);
    efc_proto_rd_bool(r, "online", &m->online);
    efc_proto_rd_bool(r, "busy", &m->busy);
    efc_proto_rd_hex(r, "active_model", m->active_model, 1);
    /* Optional (agents before OTA do not send them). */
    if (r->st == EFC_OK && cJSON_GetObjectItemCaseSensitive(r->root, "active_version"))
        efc_proto_rd_u64(r, "active_version", 0, UINT64_MAX, &m->active_version);
    if (r->st == EFC_OK && cJSON_GetObjectItemCaseSensitive(r->root, "active_policy"))
        efc_proto_rd_text(r, "active_policy", m->active_policy, sizeof(m->active_policy), 1);
    return r->st;
}

enum efc_status efc_proto_status_decode(const void *buf, size_t len, const char *topic_device,
                                        struct efc_proto_status *out)
{
    return efc_proto_decode_msg(buf, len, MSG, "status", decode_fields, out, sizeof(*out),
                                topic_device, out->device_id);
}

enum efc_status efc_proto_status_encode(const struct efc_proto_status *m, char **out)
{
    struct efc_proto_status chk;
    cJSON *o = efc_proto_wr_begin("status");
    enum efc_status st;
    char detail[256];
    int ok = o != NULL;

    if (ok) {
        efc_proto_wr_str(o, "device_id", m->device_id, sizeof(m->device_id), &ok);
        efc_proto_wr_str(o, "hw_class", m->hw_class, sizeof(m->hw_class), &ok);
        efc_proto_wr_str(o, "isa", m->isa, sizeof(m->isa), &ok);
        efc_proto_wr_str(o, "blas_core", m->blas_core, sizeof(m->blas_core), &ok);
        efc_proto_wr_num(o, "cores", m->cores, &ok);
        efc_proto_wr_num(o, "mem_bytes", (double)m->mem_bytes, &ok);
        efc_proto_wr_str(o, "agent_version", m->agent_version, sizeof(m->agent_version), &ok);
        efc_proto_wr_bool(o, "online", m->online, &ok);
        efc_proto_wr_bool(o, "busy", m->busy, &ok);
        efc_proto_wr_str(o, "active_model", m->active_model, sizeof(m->active_model), &ok);
        efc_proto_wr_num(o, "active_version", (double)m->active_version, &ok);
        efc_proto_wr_str(o, "active_policy", m->active_policy, sizeof(m->active_policy), &ok);
        if (ok && (m->mem_bytes > (1ULL << 53) || m->active_version > (1ULL << 53))) {
            ok = 0;
            efc_errf(EFC_EINVAL, "mem_bytes or active_version exceeds 2^53");
        }
    }
    st = efc_proto_wr_finish(o, ok, MSG, out);
    if (st != EFC_OK)
        return st;
    /* Encoders produce only what decoders accept: the decoder is the one validator. */
    st = efc_proto_status_decode(*out, strlen(*out), NULL, &chk);
    if (st != EFC_OK) {
        efc_free(*out);
        *out = NULL;
        efc_proto_detail_copy(detail, sizeof(detail));
        return efc_errf(st == EFC_ENOMEM ? st : EFC_EINVAL, "encode: %s", detail);
    }
    return EFC_OK;
}
