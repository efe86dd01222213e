/* topic.c — topic names "<prefix>/dev/<device_id>/<kind>": build and parse.
 *
 * A prefix is 1..127 bytes of printable ASCII with no MQTT wildcard ('+', '#'), not starting
 * or ending with '/', without empty levels ("a//b"): a topic built from it is always a valid
 * MQTT topic name that a subscription "<prefix>/dev/+/<kind>" matches.
 */
#include <stdio.h>
#include <string.h>

#include "proto/proto.h"

#define PREFIX_MAX 128

static const char *const kinds[] = {"status", "job", "result", "ack", "chunk/req", "ota",
                                    "ota/report"};

static int kind_valid(const char *k)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(k, kinds[i]) == 0)
            return 1;
    return 0;
}

static int prefix_valid(const char *p)
{
    size_t n = p ? strlen(p) : 0;

    if (n == 0 || n >= PREFIX_MAX || p[0] == '/' || p[n - 1] == '/' || strstr(p, "//"))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] <= 0x20 || p[i] >= 0x7f || p[i] == '+' || p[i] == '#')
            return 0;
    return 1;
}

enum efc_status efc_proto_topic(const char *prefix, const char *device_id, const char *kind,
                                char *out, size_t out_len)
{
    int n;

    if (!out || out_len == 0)
        return efc_errf(EFC_EINVAL, "topic: no output buffer");
    out[0] = '\0';
    if (!prefix_valid(prefix))
        return efc_errf(EFC_EINVAL, "topic: invalid prefix");
    if (!efc_proto_id_valid(device_id))
        return efc_errf(EFC_EINVAL, "topic: invalid device id");
    if (!kind || !kind_valid(kind))
        return efc_errf(EFC_EINVAL, "topic: unknown kind \"%s\"", kind ? kind : "(null)");
    n = snprintf(out, out_len, "%s/dev/%s/%s", prefix, device_id, kind);
    if (n < 0 || (size_t)n >= out_len) {
        out[0] = '\0';
        return efc_errf(EFC_EINVAL, "topic: does not fit in %zu bytes", out_len);
    }
    return EFC_OK;
}

enum efc_status efc_proto_topic_parse(const char *prefix, const char *topic, char *device_id,
                                      size_t device_len, char *kind, size_t kind_len)
{
    size_t np, nid;
    const char *id, *slash, *k;

    if (device_len)
        device_id[0] = '\0';
    if (kind_len)
        kind[0] = '\0';
    if (!prefix_valid(prefix))
        return efc_errf(EFC_EINVAL, "topic: invalid prefix");
    if (!topic)
        return efc_errf(EFC_EPROTO, "topic: none");
    np = strlen(prefix);
    if (strncmp(topic, prefix, np) != 0 || strncmp(topic + np, "/dev/", 5) != 0)
        return efc_errf(EFC_EPROTO, "topic: not under %s/dev/", prefix);
    id = topic + np + 5;
    slash = strchr(id, '/');
    if (!slash)
        return efc_errf(EFC_EPROTO, "topic: no kind after the device id");
    nid = (size_t)(slash - id);
    k = slash + 1;
    if (nid == 0 || nid >= EFC_PROTO_ID_MAX)
        return efc_errf(EFC_EPROTO, "topic: device id length %zu", nid);
    if (!kind_valid(k))
        return efc_errf(EFC_EPROTO, "topic: unknown kind");
    if (nid >= device_len || strlen(k) >= kind_len)
        return efc_errf(EFC_EINVAL, "topic: output buffers too small");
    memcpy(device_id, id, nid);
    device_id[nid] = '\0';
    if (!efc_proto_id_valid(device_id)) {
        device_id[0] = '\0';
        return efc_errf(EFC_EPROTO, "topic: invalid device id");
    }
    memcpy(kind, k, strlen(k) + 1);
    return EFC_OK;
}
