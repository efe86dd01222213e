/* json.c — the envelope and typed field readers/writers shared by every proto message.
 *
 * cJSON parses recursively and accepts some things JSON does not (raw control characters,
 * invalid UTF-8), so the raw bytes are checked first: size cap, no NUL, strict UTF-8 (RFC 3629:
 * no overlong forms, no surrogates, <= U+10FFFF), bracket depth <= EFC_PROTO_DEPTH_MAX outside
 * strings, and no "\u0000" escape (it would silently truncate a C string). Only then is the
 * payload copied into a NUL-terminated buffer and parsed, with trailing bytes rejected.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "proto/proto.h"
#include "proto/proto_int.h"

static int utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Depth of {/[ outside strings, and the "\u0000" escape inside them. */
static enum efc_status scan_structure(const char *p, size_t n, const char *msg)
{
    int depth = 0, in_str = 0;

    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\') {
                if (i + 5 < n && p[i + 1] == 'u' && memcmp(p + i + 2, "0000", 4) == 0)
                    return efc_errf(EFC_EPROTO, "%s: \\u0000 escape in a string", msg);
                i++; /* skip the escaped character */
            } else if (c == '"') {
                in_str = 0;
            }
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > EFC_PROTO_DEPTH_MAX)
                return efc_errf(EFC_EPROTO, "%s: nesting deeper than %d", msg, EFC_PROTO_DEPTH_MAX);
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return EFC_OK;
}

enum efc_status efc_proto_json_parse(const void *buf, size_t len, const char *msg, const char *type,
                                     cJSON **root)
{
    enum efc_status st;
    const cJSON *v, *t;
    char *copy;
    cJSON *r;

    *root = NULL;
    if (!buf || len == 0)
        return efc_errf(EFC_EPROTO, "%s: empty payload", msg);
    if (len > EFC_PROTO_MSG_MAX)
        return efc_errf(EFC_EPROTO, "%s: payload of %zu bytes exceeds %d", msg, len,
                        EFC_PROTO_MSG_MAX);
    if (memchr(buf, '\0', len))
        return efc_errf(EFC_EPROTO, "%s: NUL byte in payload", msg);
    if (!utf8_valid(buf, len))
        return efc_errf(EFC_EPROTO, "%s: payload is not valid UTF-8", msg);
    st = scan_structure(buf, len, msg);
    if (st != EFC_OK)
        return st;
    copy = efc_malloc(len + 1);
    if (!copy)
        return efc_errf(EFC_ENOMEM, "%s: out of memory", msg);
    memcpy(copy, buf, len);
    copy[len] = '\0';
    r = cJSON_ParseWithOpts(copy, NULL, 1);
    efc_free(copy);
    if (!r)
        return efc_errf(EFC_EPROTO, "%s: not valid JSON", msg);
    if (!cJSON_IsObject(r)) {
        cJSON_Delete(r);
        return efc_errf(EFC_EPROTO, "%s: not a JSON object", msg);
    }
    v = cJSON_GetObjectItemCaseSensitive(r, "version");
    if (!cJSON_IsNumber(v)) {
        cJSON_Delete(r);
        return efc_errf(EFC_EPROTO, "%s: version: missing or not a number", msg);
    }
    if (v->valuedouble != EFC_PROTO_VERSION) {
        double bad = v->valuedouble; /* read before the tree is freed */
        cJSON_Delete(r);
        return efc_errf(EFC_EPROTO, "%s: unknown version %.17g (speak %d)", msg, bad,
                        EFC_PROTO_VERSION);
    }
    t = cJSON_GetObjectItemCaseSensitive(r, "type");
    if (!cJSON_IsString(t) || strcmp(t->valuestring, type) != 0) {
        cJSON_Delete(r);
        return efc_errf(EFC_EPROTO, "%s: type: missing or not \"%s\"", msg, type);
    }
    *root = r;
    return EFC_OK;
}

/* The named member; EPROTO if absent or present twice (an ambiguous message). */
static enum efc_status field(struct efc_proto_rd *r, const char *name, const cJSON **out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(r->root, name);

    if (!it)
        return efc_errf(EFC_EPROTO, "%s: %s: missing", r->msg, name);
    for (const cJSON *n = it->next; n; n = n->next)
        if (n->string && strcmp(n->string, name) == 0)
            return efc_errf(EFC_EPROTO, "%s: %s: duplicated", r->msg, name);
    *out = it;
    return EFC_OK;
}

static enum efc_status get_string(struct efc_proto_rd *r, const char *name, size_t cap,
                                  const char **s)
{
    const cJSON *it;
    enum efc_status st = field(r, name, &it);

    if (st != EFC_OK)
        return st;
    if (!cJSON_IsString(it) || !it->valuestring)
        return efc_errf(EFC_EPROTO, "%s: %s: not a string", r->msg, name);
    if (strlen(it->valuestring) >= cap)
        return efc_errf(EFC_EPROTO, "%s: %s: longer than %zu bytes", r->msg, name, cap - 1);
    *s = it->valuestring;
    return EFC_OK;
}

int efc_proto_id_valid(const char *s)
{
    size_t n = 0;

    if (!s)
        return 0;
    for (; s[n]; n++) {
        char c = s[n];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        /* no leading '.', '_' or '-': never "..", a hidden file or an option */
        if (!alnum && (n == 0 || !(c == '.' || c == '_' || c == '-')))
            return 0;
        if (n + 1 >= EFC_PROTO_ID_MAX)
            return 0;
    }
    return n > 0;
}

int efc_proto_hex64_valid(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (n >= 64 || !((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return 0;
    return n == 64;
}

static enum efc_status rd_id_impl(struct efc_proto_rd *r, const char *name, char *dst, size_t cap)
{
    const char *s;
    enum efc_status st = get_string(r, name, cap, &s);

    if (st != EFC_OK)
        return st;
    if (!efc_proto_id_valid(s))
        return efc_errf(EFC_EPROTO, "%s: %s: not a valid id ([A-Za-z0-9][A-Za-z0-9._-]{0,%d})",
                        r->msg, name, EFC_PROTO_ID_MAX - 2);
    memcpy(dst, s, strlen(s) + 1);
    return EFC_OK;
}

static enum efc_status rd_text_impl(struct efc_proto_rd *r, const char *name, char *dst, size_t cap,
                                    int allow_empty)
{
    const char *s;
    enum efc_status st = get_string(r, name, cap, &s);

    if (st != EFC_OK)
        return st;
    if (!allow_empty && !s[0])
        return efc_errf(EFC_EPROTO, "%s: %s: empty", r->msg, name);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return efc_errf(EFC_EPROTO, "%s: %s: control character", r->msg, name);
    memcpy(dst, s, strlen(s) + 1);
    return EFC_OK;
}

static enum efc_status rd_hex_impl(struct efc_proto_rd *r, const char *name, char *dst,
                                   int allow_empty)
{
    const char *s;
    enum efc_status st = get_string(r, name, EFC_PROTO_SHA256_HEX, &s);

    if (st != EFC_OK)
        return st;
    if (!(allow_empty && !s[0]) && !efc_proto_hex64_valid(s))
        return efc_errf(EFC_EPROTO, "%s: %s: not 64 lowercase hex digits", r->msg, name);
    memcpy(dst, s, strlen(s) + 1);
    return EFC_OK;
}

/* An integral JSON number in [min, max] (both within +-2^53). */
static enum efc_status get_int(struct efc_proto_rd *r, const char *name, double min, double max,
                               double *out)
{
    const cJSON *it;
    enum efc_status st = field(r, name, &it);
    double d;

    if (st != EFC_OK)
        return st;
    if (!cJSON_IsNumber(it))
        return efc_errf(EFC_EPROTO, "%s: %s: not a number", r->msg, name);
    d = it->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return efc_errf(EFC_EPROTO, "%s: %s: not an integer", r->msg, name);
    if (d < min || d > max)
        return efc_errf(EFC_EPROTO, "%s: %s: %.17g out of range [%.17g, %.17g]", r->msg, name, d,
                        min, max);
    *out = d;
    return EFC_OK;
}

static enum efc_status rd_i32_impl(struct efc_proto_rd *r, const char *name, int64_t min,
                                   int64_t max, int32_t *out)
{
    double d;
    enum efc_status st;

    if (min < INT32_MIN)
        min = INT32_MIN;
    if (max > INT32_MAX)
        max = INT32_MAX;
    st = get_int(r, name, (double)min, (double)max, &d);
    if (st == EFC_OK)
        *out = (int32_t)d;
    return st;
}

static enum efc_status rd_i64_impl(struct efc_proto_rd *r, const char *name, int64_t min,
                                   int64_t max, int64_t *out)
{
    double d, lo = (double)min, hi = (double)max;
    enum efc_status st;

    if (lo < -EFC_PROTO_NUM_MAX)
        lo = -EFC_PROTO_NUM_MAX;
    if (hi > EFC_PROTO_NUM_MAX)
        hi = EFC_PROTO_NUM_MAX;
    st = get_int(r, name, lo, hi, &d);
    if (st == EFC_OK)
        *out = (int64_t)d;
    return st;
}

static enum efc_status rd_u64_impl(struct efc_proto_rd *r, const char *name, uint64_t min,
                                   uint64_t max, uint64_t *out)
{
    double d, hi = (double)max;
    enum efc_status st;

    if (hi > EFC_PROTO_NUM_MAX)
        hi = EFC_PROTO_NUM_MAX;
    st = get_int(r, name, (double)min, hi, &d);
    if (st == EFC_OK)
        *out = (uint64_t)d;
    return st;
}

static enum efc_status rd_f64_impl(struct efc_proto_rd *r, const char *name, double max,
                                   double *out)
{
    const cJSON *it;
    enum efc_status st = field(r, name, &it);
    double d;

    if (st != EFC_OK)
        return st;
    if (!cJSON_IsNumber(it))
        return efc_errf(EFC_EPROTO, "%s: %s: not a number", r->msg, name);
    d = it->valuedouble;
    if (!isfinite(d) || d < 0 || d > max)
        return efc_errf(EFC_EPROTO, "%s: %s: %.17g out of range [0, %g]", r->msg, name, d, max);
    *out = d == 0 ? 0.0 : d;
    return EFC_OK;
}

static enum efc_status rd_bool_impl(struct efc_proto_rd *r, const char *name, int32_t *out)
{
    const cJSON *it;
    enum efc_status st = field(r, name, &it);

    if (st != EFC_OK)
        return st;
    if (!cJSON_IsBool(it))
        return efc_errf(EFC_EPROTO, "%s: %s: not true/false", r->msg, name);
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return EFC_OK;
}

/* Public readers: skip once r->st holds a failure (see proto_int.h). */
enum efc_status efc_proto_rd_id(struct efc_proto_rd *r, const char *name, char *dst, size_t cap)
{
    if (r->st == EFC_OK)
        r->st = rd_id_impl(r, name, dst, cap);
    return r->st;
}

enum efc_status efc_proto_rd_text(struct efc_proto_rd *r, const char *name, char *dst, size_t cap,
                                  int allow_empty)
{
    if (r->st == EFC_OK)
        r->st = rd_text_impl(r, name, dst, cap, allow_empty);
    return r->st;
}

enum efc_status efc_proto_rd_hex(struct efc_proto_rd *r, const char *name, char *dst,
                                 int allow_empty)
{
    if (r->st == EFC_OK)
        r->st = rd_hex_impl(r, name, dst, allow_empty);
    return r->st;
}

enum efc_status efc_proto_rd_i32(struct efc_proto_rd *r, const char *name, int64_t min, int64_t max,
                                 int32_t *out)
{
    if (r->st == EFC_OK)
        r->st = rd_i32_impl(r, name, min, max, out);
    return r->st;
}

enum efc_status efc_proto_rd_i64(struct efc_proto_rd *r, const char *name, int64_t min, int64_t max,
                                 int64_t *out)
{
    if (r->st == EFC_OK)
        r->st = rd_i64_impl(r, name, min, max, out);
    return r->st;
}

enum efc_status efc_proto_rd_u64(struct efc_proto_rd *r, const char *name, uint64_t min,
                                 uint64_t max, uint64_t *out)
{
    if (r->st == EFC_OK)
        r->st = rd_u64_impl(r, name, min, max, out);
    return r->st;
}

enum efc_status efc_proto_rd_f64(struct efc_proto_rd *r, const char *name, double max, double *out)
{
    if (r->st == EFC_OK)
        r->st = rd_f64_impl(r, name, max, out);
    return r->st;
}

enum efc_status efc_proto_rd_bool(struct efc_proto_rd *r, const char *name, int32_t *out)
{
    if (r->st == EFC_OK)
        r->st = rd_bool_impl(r, name, out);
    return r->st;
}

cJSON *efc_proto_wr_begin(const char *type)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    if (!cJSON_AddNumberToObject(o, "version", EFC_PROTO_VERSION) ||
        !cJSON_AddStringToObject(o, "type", type)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

void efc_proto_wr_str(cJSON *o, const char *name, const char *s, size_t cap, int *ok)
{
    if (!*ok)
        return;
    /* A fixed-size struct field must hold its NUL: never read past it. */
    if (!memchr(s, '\0', cap)) {
        *ok = 0;
        efc_errf(EFC_EINVAL, "%s: not NUL-terminated within %zu bytes", name, cap);
        return;
    }
    if (!cJSON_AddStringToObject(o, name, s)) {
        *ok = 0;
        efc_errf(EFC_ENOMEM, "%s: out of memory", name);
    }
}

void efc_proto_wr_num(cJSON *o, const char *name, double v, int *ok)
{
    char text[40];

    if (!*ok)
        return;
    if (!isfinite(v)) {
        *ok = 0;
        efc_errf(EFC_EINVAL, "%s: not a finite number", name);
        return;
    }
    /* cJSON 1.7.15 prints with %1.15g and accepts it when it is within DBL_EPSILON of the
     * value, which loses the last bits (2^53 comes back as 2^53 - 2). Print the shortest of
     * %.15g..%.17g that reads back exactly instead: every double survives the round trip. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, sizeof(text), "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
    if (!cJSON_AddRawToObject(o, name, text)) {
        *ok = 0;
        efc_errf(EFC_ENOMEM, "%s: out of memory", name);
    }
}

void efc_proto_wr_bool(cJSON *o, const char *name, int v, int *ok)
{
    if (!*ok)
        return;
    if (v != 0 && v != 1) {
        *ok = 0;
        efc_errf(EFC_EINVAL, "%s: %d is not 0 or 1", name, v);
        return;
    }
    if (!cJSON_AddBoolToObject(o, name, v)) {
        *ok = 0;
        efc_errf(EFC_ENOMEM, "%s: out of memory", name);
    }
}

enum efc_status efc_proto_decode_msg(const void *buf, size_t len, const char *msg,
                                     const char *type, efc_proto_fields_fn fields, void *out,
                                     size_t out_size, const char *topic_device,
                                     const char *body_device)
{
    struct efc_proto_rd r = {NULL, msg, EFC_OK};
    cJSON *root;
    enum efc_status st;

    memset(out, 0, out_size);
    st = efc_proto_json_parse(buf, len, msg, type, &root);
    if (st != EFC_OK)
        return st;
    r.root = root;
    st = fields(&r, out);
    cJSON_Delete(root);
    if (st == EFC_OK && topic_device && body_device && strcmp(topic_device, body_device) != 0)
        st = efc_errf(EFC_EPROTO, "%s: device id in body differs from topic", msg);
    if (st != EFC_OK)
        memset(out, 0, out_size);
    return st;
}

enum efc_status efc_proto_wr_finish(cJSON *o, int ok, const char *msg, char **out)
{
    char detail[256];
    char *s;
    size_t n;

    *out = NULL;
    if (!o)
        return efc_errf(EFC_ENOMEM, "%s encode: out of memory", msg);
    if (!ok) {
        cJSON_Delete(o);
        efc_proto_detail_copy(detail, sizeof(detail));
        return efc_errf(EFC_EINVAL, "%s encode: %s", msg, detail);
    }
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return efc_errf(EFC_ENOMEM, "%s encode: out of memory", msg);
    /* Copy into efc_malloc storage: callers free with efc_free, and cJSON keeps its own
     * allocator (no global hooks that would surprise another cJSON user in the process). */
    n = strlen(s);
    *out = efc_malloc(n + 1);
    if (!*out) {
        cJSON_free(s);
        return efc_errf(EFC_ENOMEM, "%s encode: out of memory", msg);
    }
    memcpy(*out, s, n + 1);
    cJSON_free(s);
    return EFC_OK;
}

void efc_proto_detail_copy(char *buf, size_t cap)
{
    const char *d = efc_err_detail();
    size_t n = strlen(d);

    if (n >= cap)
        n = cap - 1;
    memcpy(buf, d, n);
    buf[n] = '\0';
}
