/* proto_int.h — private helpers of proto/ (JSON reading and writing); not a public header.
 *
 * Owns the shared validation rules of every JSON message: the pre-parse checks (size cap, no
 * NUL byte, strict UTF-8, bracket nesting depth, no "\u0000" escape), the envelope
 * ({"version": 1, "type": "..."}), and typed field readers that range-check each value and
 * return EFC_EPROTO with "<msg>: <field>: <why>". Writers build a cJSON object and hand back
 * an efc_malloc'd string. Thread-safe (no shared state).
 */
#ifndef EFC_PROTO_PROTO_INT_H
#define EFC_PROTO_PROTO_INT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/efc_status.h"

#define EFC_PROTO_NUM_MAX 9007199254740992.0 /* 2^53: largest exactly representable integer */
#define EFC_PROTO_DEPTH_MAX 8                /* messages are flat; cJSON recurses per level */
#define EFC_PROTO_F64_MAX 1e12               /* seconds / milliseconds fields */

/* A decoder's view of one parsed message. */
struct efc_proto_rd {
    const cJSON *root;
    const char *msg;    /* message name for error details ("status") */
    enum efc_status st; /* first failure; readers do nothing once it is set */
};

/* Pre-checks, parses and checks the envelope (object, version, type). *root: cJSON_Delete. */
enum efc_status efc_proto_json_parse(const void *buf, size_t len, const char *msg, const char *type,
                                     cJSON **root);

/* A message's field reader: fills *out from r->root. */
typedef enum efc_status (*efc_proto_fields_fn)(struct efc_proto_rd *r, void *out);
/* The whole decode of one message: zero *out, parse buf as `type`, read the fields, and when
 * topic_device is given require body_device (a field of *out) to equal it (RELIABILITY.md
 * rule 4). On any error *out is zeroed again. */
enum efc_status efc_proto_decode_msg(const void *buf, size_t len, const char *msg,
                                     const char *type, efc_proto_fields_fn fields, void *out,
                                     size_t out_size, const char *topic_device,
                                     const char *body_device);

/* Field readers: all required; EFC_EPROTO with a detail when missing, duplicated, of the wrong
 * JSON type or out of range. Each returns r->st: after the first failure the others are no-ops,
 * so a decoder calls them in a row and checks r->st once. */
enum efc_status efc_proto_rd_id(struct efc_proto_rd *r, const char *name, char *dst, size_t cap);
/* Printable text: no control characters (< 0x20, 0x7f), UTF-8 allowed, strlen < cap. */
enum efc_status efc_proto_rd_text(struct efc_proto_rd *r, const char *name, char *dst, size_t cap,
                                  int allow_empty);
/* Exactly 64 lowercase hex digits (or "" when allow_empty); dst has 65 bytes. */
enum efc_status efc_proto_rd_hex(struct efc_proto_rd *r, const char *name, char *dst,
                                 int allow_empty);
enum efc_status efc_proto_rd_i32(struct efc_proto_rd *r, const char *name, int64_t min, int64_t max,
                                 int32_t *out);
enum efc_status efc_proto_rd_i64(struct efc_proto_rd *r, const char *name, int64_t min, int64_t max,
                                 int64_t *out);
enum efc_status efc_proto_rd_u64(struct efc_proto_rd *r, const char *name, uint64_t min,
                                 uint64_t max, uint64_t *out);
/* Finite, in [0, max]; -0 becomes +0. */
enum efc_status efc_proto_rd_f64(struct efc_proto_rd *r, const char *name, double max, double *out);
/* JSON true / false -> 1 / 0. */
enum efc_status efc_proto_rd_bool(struct efc_proto_rd *r, const char *name, int32_t *out);

/* 1 if s is exactly 64 lowercase hex digits. */
int efc_proto_hex64_valid(const char *s);

/* Writers. A writer records its first failure in *ok = 0 and does nothing after it. */
cJSON *efc_proto_wr_begin(const char *type);
void efc_proto_wr_str(cJSON *o, const char *name, const char *s, size_t cap, int *ok);
void efc_proto_wr_num(cJSON *o, const char *name, double v, int *ok);
void efc_proto_wr_bool(cJSON *o, const char *name, int v, int *ok);
/* Prints o (unformatted) into a new efc_malloc'd string and deletes o in every case. */
enum efc_status efc_proto_wr_finish(cJSON *o, int ok, const char *msg, char **out);

/* Keeps the current error detail in buf (for re-wrapping it with efc_errf). */
void efc_proto_detail_copy(char *buf, size_t cap);

#endif
