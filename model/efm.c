/* efm.c — .efm encode/save and decode/load. The byte layout is normative in docs/format.md;
 * the offsets below must match it. Everything is written and read byte by byte in
 * little-endian order (no struct overlays), so the code is independent of padding; tensor
 * data is the exception: it is used in place after mmap, which needs a little-endian host.
 *
 * The loader is the trust boundary for model files (STYLE.md 2.1, 2.5): every count, offset,
 * size, enum and shape is checked here before the model reaches efc_model_check() and the
 * executor. Order of checks: size and magic (EPROTO), version (EVERSION, before the checksum
 * because a future version may hash differently), declared length (EPROTO, so truncation is
 * reported as such), checksum (EHASH), then structure (EPROTO).
 */
#include "model/efm.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_sha256.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "efm.c maps tensor data in place: little-endian hosts only"
#endif

/* ---- layout (docs/format.md) ---- */
static const uint8_t efm_magic[8] = {'E', 'F', 'M', '1', '\r', '\n', 0x1a, '\n'};
#define EFM_VERSION 1u
#define EFM_HDR_BYTES 64u
#define EFM_HDR_SHA_OFF 32u
#define EFM_SEC_ENTRY_BYTES 24u
#define EFM_MODEL_BYTES 192u
#define EFM_TENSOR_BYTES 128u
#define EFM_NODE_BYTES 168u
#define EFM_SPARSE_BYTES 56u
#define EFM_ARRAY_HDR_BYTES 8u /* u32 count, u32 reserved */
#define EFM_DATA_ALIGN 64u
#define EFM_SEC_ALIGN 8u
/* Header flags, one per col_idx encoding newer than i32 (docs/format.md, sparse section):
 * some sparse record stores col_idx as u16 / as Rice-coded gaps. Flags rather than a version
 * bump: files without them stay readable by every version-1 reader, and readers that predate
 * a flag refuse files with it (EVERSION) instead of misreading them. */
#define EFM_FLAG_IDX16 0x1u
#define EFM_FLAG_IDXRICE 0x2u
#define EFM_KNOWN_FLAGS (EFM_FLAG_IDX16 | EFM_FLAG_IDXRICE)
/* sparse record field col_idx_enc (formerly col_idx_width; 0 and 2 keep their meaning):
 * 0 = i32 entries (the original encoding), 2 = u16, 3 = Rice-coded gaps (bit stream) */
#define EFM_IDX_I32 0u
#define EFM_IDX_U16 2u
#define EFM_IDX_RICE 3u
#define EFM_IDX16_MAX_COLS 65536 /* column indices 0..65535 */

/* Limits: far beyond any edge model, small enough that counts times record sizes cannot
 * overflow and a hostile file cannot make the loader allocate much. */
#define EFM_MAX_SECTIONS 32u
#define EFM_MAX_TENSORS 65536u
#define EFM_MAX_NODES 65536u
#define EFM_MAX_META_BYTES ((uint64_t)16 << 20)
#define EFM_MAX_ELEMS ((uint64_t)1 << 31)
#define EFM_JSON_MAX_DEPTH 32

enum efm_kind {
    EFM_SEC_MODEL = 1,
    EFM_SEC_TENSORS = 2,
    EFM_SEC_NODES = 3,
    EFM_SEC_QPARAMS = 4,
    EFM_SEC_DATA = 5,
    EFM_SEC_META = 6,
    EFM_SEC_SPARSE = 7,
    EFM_SEC_KNOWN_MAX = 7
};

static const char *const sec_names[] = {"?",    "model", "tensors", "nodes", "qparams",
                                        "data", "meta",  "sparse"};

static const char *sec_name(uint32_t kind)
{
    return kind >= 1 && kind <= EFM_SEC_KNOWN_MAX ? sec_names[kind] : "unknown";
}

/* ---- little-endian byte access ---- */
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t rdi32(const uint8_t *p)
{
    uint32_t u = rd32(p);
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static float rdf32(const uint8_t *p)
{
    uint32_t u = rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void wri32(uint8_t *p, int32_t v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    wr32(p, u);
}

static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

static void wrf32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    wr32(p, u);
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* Digest of the file with the checksum field [32, 64) left out. */
static void efm_digest(const uint8_t *buf, size_t len, uint8_t out[EFC_SHA256_BYTES])
{
    struct efc_sha256 s;

    efc_sha256_init(&s);
    efc_sha256_update(&s, buf, EFM_HDR_SHA_OFF);
    efc_sha256_update(&s, buf + EFM_HDR_BYTES, len - EFM_HDR_BYTES);
    efc_sha256_final(&s, out);
}

/* ---- minimal JSON scanning (validation and member extents only; no tree) ---- */
static const char *json_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* p at '"'; returns the position after the closing quote, or NULL. */
static const char *json_string(const char *p, const char *e)
{
    if (p >= e || *p != '"')
        return NULL;
    for (p++; p < e; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            if (++p >= e)
                return NULL;
            if (*p == 'u') {
                if (e - p < 5 || !is_hex(p[1]) || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]))
                    return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
                return NULL;
            }
        }
    }
    return NULL;
}

static const char *json_digits(const char *p, const char *e)
{
    const char *s = p;
    while (p < e && *p >= '0' && *p <= '9')
        p++;
    return p > s ? p : NULL;
}

static const char *json_number(const char *p, const char *e)
{
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if (!(p = json_digits(p, e)))
        return NULL;
    if (p < e && *p == '.' && !(p = json_digits(p + 1, e)))
        return NULL;
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (!(p = json_digits(p, e)))
            return NULL;
    }
    return p;
}

static const char *json_value(const char *p, const char *e, int depth);

/* Iterate an object's members: p at '{'. For each member calls fn(key, key_end, val,
 * val_end, ctx) if fn is non-NULL. Returns the position after '}', or NULL. */
typedef int (*json_member_fn)(const char *k, const char *ke, const char *v, const char *ve,
                              void *ctx);

static const char *json_object(const char *p, const char *e, int depth, json_member_fn fn,
                               void *ctx)
{
    if (depth > EFM_JSON_MAX_DEPTH || p >= e || *p != '{')
        return NULL;
    p = json_ws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        const char *k = p, *ke, *v, *ve;
        if (!(ke = json_string(p, e)))
            return NULL;
        p = json_ws(ke, e);
        if (p >= e || *p != ':')
            return NULL;
        v = json_ws(p + 1, e);
        if (!(ve = json_value(v, e, depth + 1)))
            return NULL;
        if (fn && fn(k, ke, v, ve, ctx) != 0)
            return NULL;
        p = json_ws(ve, e);
        if (p < e && *p == ',') {
            p = json_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}')
            return p + 1;
        return NULL;
    }
}

static const char *json_value(const char *p, const char *e, int depth)
{
    if (depth > EFM_JSON_MAX_DEPTH || p >= e)
        return NULL;
    switch (*p) {
    case '{':
        return json_object(p, e, depth, NULL, NULL);
    case '[':
        p = json_ws(p + 1, e);
        if (p < e && *p == ']')
            return p + 1;
        for (;;) {
            if (!(p = json_value(p, e, depth + 1)))
                return NULL;
            p = json_ws(p, e);
            if (p < e && *p == ',') {
                p = json_ws(p + 1, e);
                continue;
            }
            if (p < e && *p == ']')
                return p + 1;
            return NULL;
        }
    case '"':
        return json_string(p, e);
    case 't':
        return e - p >= 4 && !memcmp(p, "true", 4) ? p + 4 : NULL;
    case 'f':
        return e - p >= 5 && !memcmp(p, "false", 5) ? p + 5 : NULL;
    case 'n':
        return e - p >= 4 && !memcmp(p, "null", 4) ? p + 4 : NULL;
    default:
        return json_number(p, e);
    }
}

/* A growable text buffer for the metadata section. */
struct tbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void tb_put(struct tbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->n + n + 1)
            cap *= 2;
        np = efc_realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void tb_puts(struct tbuf *b, const char *s)
{
    tb_put(b, s, strlen(s));
}

/* JSON string literal of a C string (control characters as \u00XX; other bytes as is). */
static void tb_json_str(struct tbuf *b, const char *s)
{
    tb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            tb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            tb_put(b, esc, 6);
        } else {
            tb_put(b, (const char *)&c, 1);
        }
    }
    tb_put(b, "\"", 1);
}

static int key_is(const char *k, const char *ke, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(ke - k) == n + 2 && !memcmp(k + 1, lit, n);
}

/* Copies every member except "name" and "arch" (those come from the model's own fields),
 * each preceded by a comma. */
static int copy_member(const char *k, const char *ke, const char *v, const char *ve, void *ctx)
{
    struct tbuf *b = ctx;
    if (key_is(k, ke, "name") || key_is(k, ke, "arch"))
        return 0;
    tb_put(b, ",", 1);
    tb_put(b, k, (size_t)(ke - k));
    tb_put(b, ":", 1);
    tb_put(b, v, (size_t)(ve - v));
    return 0;
}

static int name_ok(const char name[EFC_NAME_MAX])
{
    return memchr(name, '\0', EFC_NAME_MAX) != NULL;
}

/* ---- encode ---- */

static size_t qp_bytes(const struct efc_qparams *q)
{
    return q ? (size_t)q->n * 8u : 0;
}

/* Bytes of the tensor's own data entry: all values dense, the nnz stored values sparse. */
static uint64_t values_bytes(const struct efc_tensor *t)
{
    if (t->sparse)
        return (uint64_t)t->sparse->nnz * efc_dtype_size(t->dtype);
    return efc_tensor_bytes(t);
}

/* ---- col_idx encodings (docs/format.md, sparse section) ----
 *
 * Rice-coded gaps: row by row, each column index as its gap g = col - prev >= 1 to the
 * previous one in the row (prev = -1 at a row's start), coded as v = g - 1: v >> k one-bits,
 * a zero-bit, then the k low bits of v, least significant first; bits fill each byte from its
 * least significant bit, rows follow each other without alignment, zero bits pad the last
 * byte. k is not stored: it is floor(log2(floor(cols / n))) for a row of n entries (row_ptr
 * gives n), near the best Rice parameter for gaps of mean cols / n (on the pruned models of
 * docs/format.md within 0.3 % of the best k chosen per row). Every gap has exactly one code,
 * so an encoding is canonical and a loaded file re-encodes to its bytes. Why Rice rather than
 * gaps in bytes or a bitmask left to zstd: measured smaller both as .efm and as artifact
 * (docs/format.md, "Index encoding"); zstd codes all literals of a block with one Huffman
 * table, so byte gaps mixed with the weights never reach their own entropy. */

static uint32_t floor_log2(uint32_t v) /* v >= 1 */
{
    uint32_t k = 0;
    while (v >>= 1)
        k++;
    return k;
}

/* Rice parameter of a row of n entries (1 <= n <= cols). */
static uint32_t rice_k(int32_t cols, int32_t n)
{
    return floor_log2((uint32_t)(cols / n));
}

/* Bits of the Rice stream of a valid CSR (check_sparse_mem). Each entry takes at most
 * k + 1 + cols / 2^k bits and k < 31, so the sum stays far below 2^64. */
static uint64_t rice_bits(const struct efc_sparse *s)
{
    uint64_t bits = 0;
    for (int32_t r = 0; r < s->rows; r++) {
        int32_t n = s->row_ptr[r + 1] - s->row_ptr[r], prev = -1;
        uint32_t k;
        if (n == 0)
            continue;
        k = rice_k(s->cols, n);
        for (int32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++) {
            uint32_t v = (uint32_t)(s->col_idx[j] - prev - 1);
            bits += (uint64_t)(v >> k) + 1 + k;
            prev = s->col_idx[j];
        }
    }
    return bits;
}

/* Writes the Rice stream of a valid CSR into dst, which is zeroed and rice_bits() / 8 bytes
 * long (rounded up). */
static void rice_write(const struct efc_sparse *s, uint8_t *dst)
{
    uint64_t pos = 0;
    for (int32_t r = 0; r < s->rows; r++) {
        int32_t n = s->row_ptr[r + 1] - s->row_ptr[r], prev = -1;
        uint32_t k;
        if (n == 0)
            continue;
        k = rice_k(s->cols, n);
        for (int32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++) {
            uint32_t v = (uint32_t)(s->col_idx[j] - prev - 1);
            for (uint32_t q = v >> k; q > 0; q--, pos++)
                dst[pos >> 3] |= (uint8_t)(1u << (pos & 7));
            pos++; /* the zero-bit ending the quotient */
            for (uint32_t b = 0; b < k; b++, pos++)
                if ((v >> b) & 1u)
                    dst[pos >> 3] |= (uint8_t)(1u << (pos & 7));
            prev = s->col_idx[j];
        }
    }
}

/* The col_idx encoding the writer uses for a valid CSR, and its byte count: the smallest of
 * i32, u16 (only if every column fits) and Rice; on a tie the older one, so that a file uses
 * a newer encoding (and its header flag, closing it to older readers) only where that saves
 * bytes. Measured (docs/format.md, "Index encoding"): Rice takes 3.6-4.7 bits per entry on
 * the pruned models there (u16: 16), which cuts their artifacts by 10-20 % where u16 did not
 * change them. An entry costs about k + 2.5 bits, so u16 stays smaller only for rows with one
 * entry per 2^14 columns or fewer; i32 only for empty tensors (nnz = 0: all are 0 bytes). */
static uint32_t idx_enc(const struct efc_sparse *s, uint64_t *bytes)
{
    uint64_t wide = (uint64_t)s->nnz * 4, narrow = (uint64_t)s->nnz * 2;
    uint64_t rice = (rice_bits(s) + 7) / 8;
    uint32_t enc = EFM_IDX_I32;

    *bytes = wide;
    if (s->cols <= EFM_IDX16_MAX_COLS && narrow < *bytes) {
        enc = EFM_IDX_U16;
        *bytes = narrow;
    }
    if (rice < *bytes) {
        enc = EFM_IDX_RICE;
        *bytes = rice;
    }
    return enc;
}

/* The whole CSR structure, before anything is sized or written: the Rice and u16 encodings
 * can only represent in-range, strictly increasing indices (u16 would wrap an out-of-range
 * index into a valid-looking one), so the writer refuses an invalid in-memory CSR instead of
 * writing a file the loader would reject. quiet: no error detail (a size query must not
 * overwrite the caller's). */
#define MEMFAIL(...) (quiet ? EFC_EINVAL : efc_errf(EFC_EINVAL, __VA_ARGS__))

static enum efc_status check_sparse_mem(const struct efc_tensor *t, int32_t i, int quiet)
{
    const struct efc_sparse *s = t->sparse;
    if (!(t->flags & EFC_TENSOR_PARAM) || s->layout != EFC_LAYOUT_CSR ||
        s->rows != t->dims[0] || s->cols < 1 ||
        (size_t)s->rows * (size_t)s->cols != efc_tensor_numel(t) || s->nnz < 0 ||
        (size_t)s->nnz > efc_tensor_numel(t) || !s->row_ptr || !s->col_idx)
        return MEMFAIL("efm encode: tensor %d '%s': bad sparse layout", i, t->name);
    if (s->row_ptr[0] != 0 || s->row_ptr[s->rows] != s->nnz)
        return MEMFAIL("efm encode: tensor %d '%s': row_ptr runs %d..%d, nnz %d", i, t->name,
                       s->row_ptr[0], s->row_ptr[s->rows], s->nnz);
    for (int32_t r = 0; r < s->rows; r++) {
        if (s->row_ptr[r + 1] < s->row_ptr[r] || s->row_ptr[r + 1] > s->nnz)
            return MEMFAIL("efm encode: tensor %d '%s': row_ptr[%d] = %d", i, t->name, r + 1,
                           s->row_ptr[r + 1]);
        for (int32_t k = s->row_ptr[r]; k < s->row_ptr[r + 1]; k++) {
            if (s->col_idx[k] < 0 || s->col_idx[k] >= s->cols)
                return MEMFAIL("efm encode: tensor %d '%s': col_idx[%d] = %d, %d columns", i,
                               t->name, k, s->col_idx[k], s->cols);
            if (k > s->row_ptr[r] && s->col_idx[k] <= s->col_idx[k - 1])
                return MEMFAIL("efm encode: tensor %d '%s': row %d: col_idx[%d] = %d not after "
                               "%d",
                               i, t->name, r, k, s->col_idx[k], s->col_idx[k - 1]);
        }
    }
    return EFC_OK;
}
#undef MEMFAIL

size_t efc_efm_tensor_file_bytes(const struct efc_tensor *t)
{
    const struct efc_sparse *s;
    uint64_t idx;

    if (!t || !(t->flags & EFC_TENSOR_PARAM))
        return 0;
    if (!(s = t->sparse))
        return efc_tensor_bytes(t);
    if (check_sparse_mem(t, -1, 1) != EFC_OK)
        return SIZE_MAX;
    (void)idx_enc(s, &idx);
    return (size_t)((uint64_t)s->nnz * efc_dtype_size(t->dtype) + ((uint64_t)s->rows + 1) * 4 +
                    idx);
}

static enum efc_status check_qparams_mem(const struct efc_tensor *t, int32_t i)
{
    const struct efc_qparams *q = t->q;
    if (q->n < 1 || !q->scale || !q->zero_point)
        return efc_errf(EFC_EINVAL, "efm encode: tensor %d '%s': empty qparams", i, t->name);
    if (q->n > 1 && (q->axis < 0 || q->axis >= t->ndim || t->dims[q->axis] != q->n))
        return efc_errf(EFC_EINVAL, "efm encode: tensor %d '%s': %d qparams along axis %d", i,
                        t->name, q->n, q->axis);
    return EFC_OK;
}

static enum efc_status check_model_mem(const struct efc_model *m)
{
    if (m->n_tensors < 0 || (uint32_t)m->n_tensors > EFM_MAX_TENSORS || m->n_nodes < 0 ||
        (uint32_t)m->n_nodes > EFM_MAX_NODES)
        return efc_errf(EFC_EINVAL, "efm encode: %d tensors, %d nodes: out of range", m->n_tensors,
                        m->n_nodes);
    if (!name_ok(m->name) || !name_ok(m->arch))
        return efc_errf(EFC_EINVAL, "efm encode: model name or arch not NUL-terminated");
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct efc_tensor *t = &m->tensors[i];
        if (!name_ok(t->name))
            return efc_errf(EFC_EINVAL, "efm encode: tensor %d: name not NUL-terminated", i);
        if (efc_dtype_size(t->dtype) == 0 || t->ndim < 0 || t->ndim > EFC_MAX_DIMS)
            return efc_errf(EFC_EINVAL, "efm encode: tensor %d '%s': bad dtype or rank", i,
                            t->name);
        for (int32_t d = 0; d < t->ndim; d++)
            if (t->dims[d] < 1)
                return efc_errf(EFC_EINVAL, "efm encode: tensor %d '%s': dim %d is %d", i, t->name,
                                d, t->dims[d]);
        if ((t->flags & EFC_TENSOR_PARAM) && (!t->data || t->ndim < 1))
            return efc_errf(EFC_EINVAL, "efm encode: tensor %d '%s': parameter without data", i,
                            t->name);
        if (t->q) {
            enum efc_status st = check_qparams_mem(t, i);
            if (st)
                return st;
        }
        if (t->sparse) {
            enum efc_status st = check_sparse_mem(t, i, 0);
            if (st)
                return st;
        }
    }
    for (int32_t i = 0; i < m->n_nodes; i++) {
        const struct efc_node *n = &m->nodes[i];
        if (!name_ok(n->name) || n->n_inputs < 0 || n->n_inputs > EFC_NODE_MAX_INPUTS)
            return efc_errf(EFC_EINVAL, "efm encode: node %d: bad name or input count", i);
    }
    return EFC_OK;
}

static enum efc_status build_meta(const struct efc_model *m, struct tbuf *b)
{
    tb_puts(b, "{\"name\":");
    tb_json_str(b, m->name);
    tb_puts(b, ",\"arch\":");
    tb_json_str(b, m->arch);
    if (m->meta_json) {
        const char *s = m->meta_json, *e = s + strlen(s);
        const char *p = json_ws(s, e);
        if (!(p = json_object(p, e, 0, copy_member, b)) || json_ws(p, e) != e)
            return efc_errf(EFC_EINVAL,
                            "efm encode: model '%s': meta_json is not one JSON "
                            "object",
                            m->name);
    }
    tb_puts(b, "}");
    if (b->oom)
        return efc_errf(EFC_ENOMEM, "efm encode: out of memory");
    return EFC_OK;
}

enum efc_status efc_efm_encode(const struct efc_model *m, void **out, size_t *out_len)
{
    struct tbuf meta = {0};
    uint64_t off, qp_total = 0, data_total = 0, n_sparse = 0;
    uint32_t flags = 0;
    uint64_t sec_off[EFM_SEC_KNOWN_MAX + 1] = {0}, sec_size[EFM_SEC_KNOWN_MAX + 1] = {0};
    uint32_t kinds[EFM_SEC_KNOWN_MAX], n_sec = 0;
    uint8_t *buf, *p;
    enum efc_status st;

    if (!m || !out || !out_len)
        return efc_errf(EFC_EINVAL, "efm encode: NULL argument");
    *out = NULL;
    *out_len = 0;
    if ((st = check_model_mem(m)))
        return st;
    if ((st = build_meta(m, &meta)))
        goto fail;

    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct efc_tensor *t = &m->tensors[i];
        qp_total += qp_bytes(t->q);
        if (t->flags & EFC_TENSOR_PARAM)
            data_total = align_up(data_total, EFM_DATA_ALIGN) + values_bytes(t);
        if (t->sparse) { /* then row_ptr and col_idx, each in its own aligned block */
            uint64_t idx_bytes;
            uint32_t enc;
            n_sparse++;
            data_total = align_up(data_total, EFM_DATA_ALIGN) +
                         ((uint64_t)t->sparse->rows + 1) * 4;
            enc = idx_enc(t->sparse, &idx_bytes);
            data_total = align_up(data_total, EFM_DATA_ALIGN) + idx_bytes;
            if (enc == EFM_IDX_U16)
                flags |= EFM_FLAG_IDX16;
            if (enc == EFM_IDX_RICE)
                flags |= EFM_FLAG_IDXRICE;
        }
    }

    kinds[n_sec++] = EFM_SEC_MODEL;
    kinds[n_sec++] = EFM_SEC_TENSORS;
    kinds[n_sec++] = EFM_SEC_NODES;
    if (qp_total)
        kinds[n_sec++] = EFM_SEC_QPARAMS;
    if (n_sparse)
        kinds[n_sec++] = EFM_SEC_SPARSE;
    kinds[n_sec++] = EFM_SEC_META;
    kinds[n_sec++] = EFM_SEC_DATA;
    sec_size[EFM_SEC_MODEL] = EFM_MODEL_BYTES;
    sec_size[EFM_SEC_TENSORS] = EFM_ARRAY_HDR_BYTES + (uint64_t)m->n_tensors * EFM_TENSOR_BYTES;
    sec_size[EFM_SEC_NODES] = EFM_ARRAY_HDR_BYTES + (uint64_t)m->n_nodes * EFM_NODE_BYTES;
    sec_size[EFM_SEC_QPARAMS] = qp_total;
    sec_size[EFM_SEC_SPARSE] = EFM_ARRAY_HDR_BYTES + n_sparse * EFM_SPARSE_BYTES;
    sec_size[EFM_SEC_META] = meta.n;
    sec_size[EFM_SEC_DATA] = data_total;

    off = EFM_HDR_BYTES + (uint64_t)n_sec * EFM_SEC_ENTRY_BYTES;
    for (uint32_t s = 0; s < n_sec; s++) {
        off = align_up(off, kinds[s] == EFM_SEC_DATA ? EFM_DATA_ALIGN : EFM_SEC_ALIGN);
        sec_off[kinds[s]] = off;
        off += sec_size[kinds[s]];
    }
    if (off > EFC_EFM_MAX_FILE_BYTES) {
        st = efc_errf(EFC_EINVAL, "efm encode: model '%s' needs %llu bytes, limit %zu", m->name,
                      (unsigned long long)off, EFC_EFM_MAX_FILE_BYTES);
        goto fail;
    }
    if (!(buf = efc_calloc(1, (size_t)off))) {
        st =
            efc_errf(EFC_ENOMEM, "efm encode: out of memory (%llu bytes)", (unsigned long long)off);
        goto fail;
    }

    /* header */
    memcpy(buf, efm_magic, 8);
    wr32(buf + 8, EFM_VERSION);
    wr32(buf + 12, flags);
    wr64(buf + 16, off);
    wr32(buf + 24, n_sec);
    for (uint32_t s = 0; s < n_sec; s++) {
        p = buf + EFM_HDR_BYTES + s * EFM_SEC_ENTRY_BYTES;
        wr32(p, kinds[s]);
        wr64(p + 8, sec_off[kinds[s]]);
        wr64(p + 16, sec_size[kinds[s]]);
    }

    /* model */
    p = buf + sec_off[EFM_SEC_MODEL];
    memcpy(p, m->name, EFC_NAME_MAX);
    memcpy(p + 64, m->arch, EFC_NAME_MAX);
    wri32(p + 128, m->input);
    wri32(p + 132, m->output);
    wri32(p + 136, m->norm.n);
    for (int c = 0; c < EFC_NORM_MAX_CH; c++) {
        wrf32(p + 140 + 4 * c, m->norm.scale[c]);
        wrf32(p + 156 + 4 * c, m->norm.mean[c]);
        wrf32(p + 172 + 4 * c, m->norm.std[c]);
    }

    /* tensors, qparams, sparse, data */
    {
        uint64_t qoff = 0, doff = sec_off[EFM_SEC_DATA];
        uint8_t *qbase = buf + sec_off[EFM_SEC_QPARAMS];
        uint8_t *sp = buf + sec_off[EFM_SEC_SPARSE];
        if (n_sparse) {
            wr32(sp, (uint32_t)n_sparse);
            sp += EFM_ARRAY_HDR_BYTES;
        }
        p = buf + sec_off[EFM_SEC_TENSORS];
        wr32(p, (uint32_t)m->n_tensors);
        p += EFM_ARRAY_HDR_BYTES;
        for (int32_t i = 0; i < m->n_tensors; i++, p += EFM_TENSOR_BYTES) {
            const struct efc_tensor *t = &m->tensors[i];
            memset(p, 0, EFC_NAME_MAX);
            memcpy(p, t->name, strlen(t->name));
            wr32(p + 64, (uint32_t)t->dtype);
            wr32(p + 68, t->flags);
            wri32(p + 72, t->ndim);
            for (int32_t d = 0; d < t->ndim; d++)
                wri32(p + 76 + 4 * d, t->dims[d]);
            if (t->q) {
                wri32(p + 92, t->q->n);
                wri32(p + 96, t->q->n > 1 ? t->q->axis : 0);
                wr64(p + 120, qoff);
                for (int32_t j = 0; j < t->q->n; j++) {
                    wrf32(qbase + qoff + 4 * (uint64_t)j, t->q->scale[j]);
                    wri32(qbase + qoff + 4 * ((uint64_t)t->q->n + (uint64_t)j),
                          t->q->zero_point[j]);
                }
                qoff += qp_bytes(t->q);
            }
            if (t->flags & EFC_TENSOR_PARAM) {
                size_t nb = (size_t)values_bytes(t);
                doff = align_up(doff, EFM_DATA_ALIGN);
                wr64(p + 104, doff);
                wr64(p + 112, nb);
                memcpy(buf + doff, t->data, nb);
                doff += nb;
            }
            if (t->sparse) {
                const struct efc_sparse *s = t->sparse;
                uint64_t idx_bytes;
                uint32_t w = idx_enc(s, &idx_bytes);
                wr32(sp, (uint32_t)i);
                wr32(sp + 4, (uint32_t)s->layout);
                wri32(sp + 8, s->rows);
                wri32(sp + 12, s->cols);
                wri32(sp + 16, s->nnz);
                wr32(sp + 20, w);
                doff = align_up(doff, EFM_DATA_ALIGN);
                wr64(sp + 24, doff);
                wr64(sp + 32, ((uint64_t)s->rows + 1) * 4);
                for (int32_t r = 0; r <= s->rows; r++, doff += 4)
                    wri32(buf + doff, s->row_ptr[r]);
                doff = align_up(doff, EFM_DATA_ALIGN);
                wr64(sp + 40, doff);
                wr64(sp + 48, idx_bytes);
                if (w == EFM_IDX_RICE) { /* buf is zeroed (calloc) */
                    rice_write(s, buf + doff);
                    doff += idx_bytes;
                } else if (w == EFM_IDX_U16) { /* check_sparse_mem: 0 <= col_idx < cols */
                    for (int32_t k = 0; k < s->nnz; k++, doff += 2) {
                        buf[doff] = (uint8_t)s->col_idx[k];
                        buf[doff + 1] = (uint8_t)((uint32_t)s->col_idx[k] >> 8);
                    }
                } else {
                    for (int32_t k = 0; k < s->nnz; k++, doff += 4)
                        wri32(buf + doff, s->col_idx[k]);
                }
                sp += EFM_SPARSE_BYTES;
            }
        }
    }

    /* nodes */
    p = buf + sec_off[EFM_SEC_NODES];
    wr32(p, (uint32_t)m->n_nodes);
    p += EFM_ARRAY_HDR_BYTES;
    for (int32_t i = 0; i < m->n_nodes; i++, p += EFM_NODE_BYTES) {
        const struct efc_node *n = &m->nodes[i];
        const struct efc_node_attrs *a = &n->a;
        memset(p, 0, EFC_NAME_MAX);
        memcpy(p, n->name, strlen(n->name));
        wr32(p + 64, (uint32_t)n->op);
        wri32(p + 68, n->n_inputs);
        for (int32_t j = 0; j < EFC_NODE_MAX_INPUTS; j++)
            wri32(p + 72 + 4 * j, j < n->n_inputs ? n->inputs[j] : -1);
        wri32(p + 92, n->output);
        wri32(p + 96, a->kernel[0]);
        wri32(p + 100, a->kernel[1]);
        wri32(p + 104, a->stride[0]);
        wri32(p + 108, a->stride[1]);
        for (int j = 0; j < 4; j++)
            wri32(p + 112 + 4 * j, a->pad[j]);
        wri32(p + 128, a->groups);
        wri32(p + 132, a->count_include_pad);
        wr32(p + 136, (uint32_t)a->act);
        wrf32(p + 140, a->eps);
        wrf32(p + 144, a->momentum);
        wri32(p + 148, a->shape_ndim);
        for (int j = 0; j < EFC_MAX_DIMS; j++)
            wri32(p + 152 + 4 * j, a->shape[j]);
    }

    memcpy(buf + sec_off[EFM_SEC_META], meta.p, meta.n);
    efc_free(meta.p);

    efm_digest(buf, (size_t)off, buf + EFM_HDR_SHA_OFF);
    *out = buf;
    *out_len = (size_t)off;
    return EFC_OK;
fail:
    efc_free(meta.p);
    return st;
}

enum efc_status efc_efm_save(const struct efc_model *m, const char *path)
{
    void *buf;
    size_t len;
    enum efc_status st;

    if (!path)
        return efc_errf(EFC_EINVAL, "efm save: NULL path");
    if ((st = efc_efm_encode(m, &buf, &len)))
        return st;
    st = efc_fs_write_atomic(path, buf, len);
    efc_free(buf);
    return st;
}

/* ---- decode ---- */

struct sec {
    uint64_t off, size;
    int present;
};

struct dec {
    const uint8_t *b;
    size_t len;
    const char *what;
    uint32_t flags;   /* header flags (EFM_KNOWN_FLAGS only) */
    uint32_t n_idx16; /* sparse records with u16 col_idx */
    uint32_t n_rice;  /* sparse records with Rice-coded col_idx */
    struct sec s[EFM_SEC_KNOWN_MAX + 1];
    struct efc_model *m;
};

#define DFAIL(d, sec, ...) dfail((d), (sec), __VA_ARGS__)

static enum efc_status dfail(const struct dec *d, const char *sec, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum efc_status dfail(const struct dec *d, const char *sec, const char *fmt, ...)
{
    char msg[384];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return efc_errf(EFC_EPROTO, "%s: section '%s': %s", d->what, sec, msg);
}

static enum efc_status parse_header(struct dec *d)
{
    const uint8_t *b = d->b;
    uint32_t n_sec, table_end;
    uint8_t sum[EFC_SHA256_BYTES];

    if (d->len < EFM_HDR_BYTES)
        return DFAIL(d, "header", "truncated: %zu bytes, the header alone is %u", d->len,
                     EFM_HDR_BYTES);
    if (memcmp(b, efm_magic, 8) != 0)
        return DFAIL(d, "header", "bad magic (not an .efm file)");
    if (rd32(b + 8) != EFM_VERSION)
        return efc_errf(EFC_EVERSION,
                        "%s: section 'header': format version %u, this build "
                        "reads version %u",
                        d->what, rd32(b + 8), EFM_VERSION);
    if (rd32(b + 12) & ~EFM_KNOWN_FLAGS)
        return efc_errf(EFC_EVERSION,
                        "%s: section 'header': unknown flags 0x%x (written by a "
                        "newer efc?)",
                        d->what, rd32(b + 12) & ~EFM_KNOWN_FLAGS);
    d->flags = rd32(b + 12);
    if (rd64(b + 16) != d->len)
        return DFAIL(d, "header", "file is %zu bytes, header says %llu (truncated or padded)",
                     d->len, (unsigned long long)rd64(b + 16));
    efm_digest(b, d->len, sum);
    if (memcmp(sum, b + EFM_HDR_SHA_OFF, EFC_SHA256_BYTES) != 0)
        return efc_errf(EFC_EHASH,
                        "%s: section 'header': SHA-256 checksum mismatch (file "
                        "corrupted)",
                        d->what);
    n_sec = rd32(b + 24);
    if (rd32(b + 28) != 0)
        return DFAIL(d, "header", "reserved field is %u, must be 0", rd32(b + 28));
    if (n_sec < 1 || n_sec > EFM_MAX_SECTIONS)
        return DFAIL(d, "header", "%u sections (1..%u allowed)", n_sec, EFM_MAX_SECTIONS);
    table_end = EFM_HDR_BYTES + n_sec * EFM_SEC_ENTRY_BYTES;
    if (table_end > d->len)
        return DFAIL(d, "section table", "%u entries end at %u, beyond file size %zu", n_sec,
                     table_end, d->len);

    for (uint32_t i = 0; i < n_sec; i++) {
        const uint8_t *e = b + EFM_HDR_BYTES + i * EFM_SEC_ENTRY_BYTES;
        uint32_t kind = rd32(e);
        uint64_t off = rd64(e + 8), size = rd64(e + 16);
        const char *nm = sec_name(kind);

        if (rd32(e + 4) != 0)
            return DFAIL(d, "section table", "entry %u: reserved field not 0", i);
        if (off < table_end)
            return DFAIL(d, nm, "offset %llu overlaps the header and section table (%u bytes)",
                         (unsigned long long)off, table_end);
        if (off > d->len || size > d->len - off)
            return DFAIL(d, nm, "offset %llu+%llu beyond file size %zu", (unsigned long long)off,
                         (unsigned long long)size, d->len);
        if (off % (kind == EFM_SEC_DATA ? EFM_DATA_ALIGN : EFM_SEC_ALIGN))
            return DFAIL(d, nm, "offset %llu not aligned to %u", (unsigned long long)off,
                         kind == EFM_SEC_DATA ? EFM_DATA_ALIGN : EFM_SEC_ALIGN);
        for (uint32_t j = 0; j < i; j++) {
            const uint8_t *o = b + EFM_HDR_BYTES + j * EFM_SEC_ENTRY_BYTES;
            uint64_t ooff = rd64(o + 8), osize = rd64(o + 16);
            if (rd32(o) == kind)
                return DFAIL(d, nm, "appears twice in the section table");
            if (size && osize && off < ooff + osize && ooff < off + size)
                return DFAIL(d, nm, "overlaps section '%s'", sec_name(rd32(o)));
        }
        /* Unknown kinds are range-checked above and otherwise skipped: optional sections
         * can be added without a version bump (docs/format.md). */
        if (kind >= 1 && kind <= EFM_SEC_KNOWN_MAX) {
            d->s[kind].off = off;
            d->s[kind].size = size;
            d->s[kind].present = 1;
        }
    }
    for (uint32_t k = 1; k <= EFM_SEC_KNOWN_MAX; k++)
        if (!d->s[k].present && k != EFM_SEC_QPARAMS && k != EFM_SEC_SPARSE)
            return DFAIL(d, sec_name(k), "missing");
    return EFC_OK;
}

static enum efc_status parse_model(struct dec *d)
{
    const uint8_t *p = d->b + d->s[EFM_SEC_MODEL].off;
    struct efc_model *m = d->m;

    if (d->s[EFM_SEC_MODEL].size != EFM_MODEL_BYTES)
        return DFAIL(d, "model", "size %llu, expected %u",
                     (unsigned long long)d->s[EFM_SEC_MODEL].size, EFM_MODEL_BYTES);
    if (!memchr(p, '\0', EFC_NAME_MAX) || !memchr(p + 64, '\0', EFC_NAME_MAX))
        return DFAIL(d, "model", "name or arch not NUL-terminated");
    memcpy(m->name, p, EFC_NAME_MAX);
    memcpy(m->arch, p + 64, EFC_NAME_MAX);
    m->input = rdi32(p + 128);
    m->output = rdi32(p + 132);
    m->norm.n = rdi32(p + 136);
    if (m->norm.n < 0 || m->norm.n > EFC_NORM_MAX_CH)
        return DFAIL(d, "model", "input normalisation has %d channels (0..%d)", m->norm.n,
                     EFC_NORM_MAX_CH);
    for (int c = 0; c < EFC_NORM_MAX_CH; c++) {
        m->norm.scale[c] = rdf32(p + 140 + 4 * c);
        m->norm.mean[c] = rdf32(p + 156 + 4 * c);
        m->norm.std[c] = rdf32(p + 172 + 4 * c);
        if (c < m->norm.n && (!isfinite(m->norm.scale[c]) || !isfinite(m->norm.mean[c]) ||
                              !isfinite(m->norm.std[c]) || !(m->norm.std[c] > 0.0f)))
            return DFAIL(d, "model", "input normalisation channel %d: scale %g mean %g std %g", c,
                         (double)m->norm.scale[c], (double)m->norm.mean[c], (double)m->norm.std[c]);
    }
    return EFC_OK;
}

/* Validates a count-prefixed array section; returns the count. */
static enum efc_status parse_array_hdr(struct dec *d, uint32_t kind, uint32_t rec_bytes,
                                       uint32_t max, uint32_t *count)
{
    const struct sec *s = &d->s[kind];
    const uint8_t *p = d->b + s->off;
    uint32_t n;

    if (s->size < EFM_ARRAY_HDR_BYTES)
        return DFAIL(d, sec_name(kind), "size %llu too small", (unsigned long long)s->size);
    n = rd32(p);
    if (n > max)
        return DFAIL(d, sec_name(kind), "count %u exceeds the limit %u", n, max);
    if (rd32(p + 4) != 0)
        return DFAIL(d, sec_name(kind), "reserved field not 0");
    if (s->size != EFM_ARRAY_HDR_BYTES + (uint64_t)n * rec_bytes)
        return DFAIL(d, sec_name(kind), "size %llu does not hold %u records of %u bytes",
                     (unsigned long long)s->size, n, rec_bytes);
    *count = n;
    return EFC_OK;
}

static enum efc_status parse_qparams(struct dec *d, const uint8_t *r, struct efc_tensor *t,
                                     uint32_t i)
{
    int32_t n = rdi32(r + 92), axis = rdi32(r + 96);
    uint64_t qoff = rd64(r + 120);
    const struct sec *qs = &d->s[EFM_SEC_QPARAMS];
    const uint8_t *q;
    struct efc_qparams *qp;

    if (n == 0) {
        if (axis != 0 || qoff != 0)
            return DFAIL(d, "tensors", "tensor %u '%s': qparams fields set without qparams", i,
                         t->name);
        return EFC_OK;
    }
    if (n < 0 || (n > 1 && (axis < 0 || axis >= t->ndim || t->dims[axis] != n)) ||
        (n == 1 && axis != 0))
        return DFAIL(d, "tensors",
                     "tensor %u '%s': %d qparams along axis %d do not fit the "
                     "shape",
                     i, t->name, n, axis);
    if (!qs->present || qoff % 4 || qoff > qs->size || (uint64_t)n * 8 > qs->size - qoff)
        return DFAIL(d, "tensors",
                     "tensor %u '%s': qparams offset %llu+%llu outside section "
                     "'qparams' (%llu bytes)",
                     i, t->name, (unsigned long long)qoff, (unsigned long long)n * 8,
                     (unsigned long long)qs->size);
    q = d->b + qs->off + qoff;
    if (!(qp = efc_calloc(1, sizeof(*qp))))
        return efc_errf(EFC_ENOMEM, "%s: out of memory", d->what);
    t->q = qp;
    qp->n = n;
    qp->axis = axis;
    qp->scale = efc_malloc((size_t)n * sizeof(float));
    qp->zero_point = efc_malloc((size_t)n * sizeof(int32_t));
    if (!qp->scale || !qp->zero_point)
        return efc_errf(EFC_ENOMEM, "%s: out of memory", d->what);
    for (int32_t j = 0; j < n; j++) {
        float s = rdf32(q + 4 * (uint64_t)j);
        int32_t z = rdi32(q + 4 * ((uint64_t)n + (uint64_t)j));
        int bad_z = (t->dtype == EFC_DTYPE_I8 && (z < -128 || z > 127)) ||
                    (t->dtype == EFC_DTYPE_U8 && (z < 0 || z > 255));
        if (!isfinite(s) || !(s > 0.0f) || bad_z)
            return DFAIL(d, "tensors",
                         "tensor %u '%s': qparams %d: scale %g zero point %d out "
                         "of range",
                         i, t->name, j, (double)s, z);
        qp->scale[j] = s;
        qp->zero_point[j] = z;
    }
    return EFC_OK;
}

/* One block of the data section, [off, off + bytes): inside the file and the section,
 * 64-byte aligned, at or after the end of the previous block (*prev_end, advanced). */
static enum efc_status data_block(struct dec *d, const char *sec, uint32_t i, const char *tname,
                                  const char *what, uint64_t off, uint64_t bytes,
                                  uint64_t *prev_end)
{
    const struct sec *ds = &d->s[EFM_SEC_DATA];

    if (off > d->len || bytes > d->len - off)
        return DFAIL(d, sec, "tensor %u '%s': %s offset %llu+%llu beyond file size %zu", i,
                     tname, what, (unsigned long long)off, (unsigned long long)bytes, d->len);
    if (off < ds->off || off + bytes > ds->off + ds->size)
        return DFAIL(d, sec, "tensor %u '%s': %s offset %llu+%llu outside section 'data' "
                     "(%llu+%llu)", i, tname, what, (unsigned long long)off,
                     (unsigned long long)bytes, (unsigned long long)ds->off,
                     (unsigned long long)ds->size);
    if (off % EFM_DATA_ALIGN)
        return DFAIL(d, sec, "tensor %u '%s': %s offset %llu not aligned to %u", i, tname, what,
                     (unsigned long long)off, EFM_DATA_ALIGN);
    if (off < *prev_end)
        return DFAIL(d, sec, "tensor %u '%s': %s offset %llu overlaps the previous data block "
                     "(ends at %llu)", i, tname, what, (unsigned long long)off,
                     (unsigned long long)*prev_end);
    *prev_end = off + bytes;
    return EFC_OK;
}

/* Validates the optional sparse section's header and the fields of each record that do not
 * depend on the tensor (tensor indices strictly increasing and < n_tensors, layout, ranges);
 * the rest is checked against each tensor in parse_sparse_tensor. */
static enum efc_status parse_sparse_hdr(struct dec *d, uint32_t n_tensors, uint32_t *count)
{
    const uint8_t *r;
    uint32_t n;
    enum efc_status st;

    *count = 0;
    if (!d->s[EFM_SEC_SPARSE].present)
        return EFC_OK;
    if ((st = parse_array_hdr(d, EFM_SEC_SPARSE, EFM_SPARSE_BYTES, n_tensors, &n)))
        return st;
    r = d->b + d->s[EFM_SEC_SPARSE].off + EFM_ARRAY_HDR_BYTES;
    for (uint32_t j = 0; j < n; j++, r += EFM_SPARSE_BYTES) {
        uint32_t ti = rd32(r), layout = rd32(r + 4);
        int32_t rows = rdi32(r + 8), cols = rdi32(r + 12), nnz = rdi32(r + 16);
        if (ti >= n_tensors)
            return DFAIL(d, "sparse", "record %u: tensor %u out of range (%u tensors)", j, ti,
                         n_tensors);
        if (j > 0 && ti <= rd32(r - EFM_SPARSE_BYTES))
            return DFAIL(d, "sparse", "record %u: tensor %u again or out of order (one record "
                         "per tensor, in increasing tensor order)", j, ti);
        if (layout != EFC_LAYOUT_CSR)
            return DFAIL(d, "sparse", "record %u: tensor %u: unknown layout %u", j, ti, layout);
        if (rows < 1 || cols < 1 || nnz < 0 || (uint64_t)nnz > (uint64_t)rows * (uint64_t)cols)
            return DFAIL(d, "sparse", "record %u: tensor %u: rows %d cols %d nnz %d out of range",
                         j, ti, rows, cols, nnz);
        switch (rd32(r + 20)) {
        case EFM_IDX_I32:
            break;
        case EFM_IDX_U16:
            if (!(d->flags & EFM_FLAG_IDX16))
                return DFAIL(d, "sparse",
                             "record %u: tensor %u: u16 col_idx without header flag 0x%x", j, ti,
                             EFM_FLAG_IDX16);
            if (cols > EFM_IDX16_MAX_COLS)
                return DFAIL(d, "sparse",
                             "record %u: tensor %u: u16 col_idx for %d columns (at most %d)", j,
                             ti, cols, EFM_IDX16_MAX_COLS);
            d->n_idx16++;
            break;
        case EFM_IDX_RICE:
            if (!(d->flags & EFM_FLAG_IDXRICE))
                return DFAIL(d, "sparse",
                             "record %u: tensor %u: Rice col_idx without header flag 0x%x", j, ti,
                             EFM_FLAG_IDXRICE);
            d->n_rice++;
            break;
        default:
            return DFAIL(d, "sparse",
                         "record %u: tensor %u: col_idx encoding %u (0 = i32, 2 = u16, 3 = Rice)",
                         j, ti, rd32(r + 20));
        }
    }
    *count = n;
    return EFC_OK;
}

/* Bit reader over a Rice stream (see rice_bits): bit i is bit i % 8 of byte i / 8. */
struct bitrd {
    const uint8_t *p;
    uint64_t n_bits, pos;
};

static int bit_next(struct bitrd *b, uint32_t *bit)
{
    if (b->pos >= b->n_bits)
        return 0;
    *bit = (b->p[b->pos >> 3] >> (b->pos & 7)) & 1u;
    b->pos++;
    return 1;
}

/* Decodes tensor i's Rice-coded col_idx block [p, p + bytes) into col_idx (nnz entries),
 * row by row with the entry counts of row_ptr (validated: row_ptr[0] = 0, non-decreasing,
 * row_ptr[rows] = nnz, at most cols entries per row). Every index is checked while it is
 * decoded, before the next bit is read: in [0, cols) (so strictly increasing, gaps being
 * >= 1); the stream must end exactly in the block's last byte with zero padding bits. The
 * work is bounded by the block's bits: each loop step consumes one. */
static enum efc_status rice_decode(struct dec *d, uint32_t i, const char *tname, int32_t rows,
                                   int32_t cols, const int32_t *row_ptr, const uint8_t *p,
                                   uint64_t bytes, int32_t *col_idx)
{
    struct bitrd b = {p, bytes * 8, 0};
    uint32_t bit;

    for (int32_t r = 0; r < rows; r++) {
        int32_t n = row_ptr[r + 1] - row_ptr[r];
        int64_t prev = -1;
        uint32_t k;
        if (n == 0)
            continue;
        k = rice_k(cols, n);
        for (int32_t j = row_ptr[r]; j < row_ptr[r + 1]; j++) {
            /* col = prev + 1 + (q << k) + rem, rem < 2^k: refuse q as soon as the column
             * would pass the last one even with rem = 0 */
            int64_t room = (int64_t)cols - 2 - prev, q = 0, rem = 0;
            for (;;) {
                if (!bit_next(&b, &bit))
                    return DFAIL(d, "sparse",
                                 "tensor %u '%s': Rice col_idx ends in row %d "
                                 "(entry %d of %d): truncated",
                                 i, tname, r, j - row_ptr[r] + 1, n);
                if (!bit)
                    break;
                if (++q << k > room)
                    return DFAIL(d, "sparse",
                                 "tensor %u '%s': Rice col_idx: row %d entry %d "
                                 "passes column %d (%d columns)",
                                 i, tname, r, j - row_ptr[r] + 1, cols - 1, cols);
            }
            for (uint32_t t = 0; t < k; t++) {
                if (!bit_next(&b, &bit))
                    return DFAIL(d, "sparse",
                                 "tensor %u '%s': Rice col_idx ends in row %d "
                                 "(entry %d of %d): truncated",
                                 i, tname, r, j - row_ptr[r] + 1, n);
                rem |= (int64_t)bit << t;
            }
            prev += 1 + (q << k) + rem;
            if (prev >= cols)
                return DFAIL(d, "sparse",
                             "tensor %u '%s': Rice col_idx: row %d entry %d is "
                             "column %lld (%d columns)",
                             i, tname, r, j - row_ptr[r] + 1, (long long)prev, cols);
            col_idx[j] = (int32_t)prev;
        }
    }
    if ((b.pos + 7) / 8 != bytes)
        return DFAIL(d, "sparse",
                     "tensor %u '%s': Rice col_idx block is %llu bytes, its %llu "
                     "bits need %llu (trailing bytes)",
                     i, tname, (unsigned long long)bytes, (unsigned long long)b.pos,
                     (unsigned long long)(b.pos + 7) / 8);
    while (bit_next(&b, &bit))
        if (bit)
            return DFAIL(d, "sparse", "tensor %u '%s': Rice col_idx: padding bit %llu is set", i,
                         tname, (unsigned long long)b.pos - 1);
    return EFC_OK;
}

/* Entry counts of a row_ptr read from the file, for decoding before efc_model_check sees
 * it: starts at 0, non-decreasing, at most cols per row, ends at nnz. */
static enum efc_status check_row_ptr(struct dec *d, uint32_t i, const char *tname, int32_t rows,
                                     int32_t cols, int32_t nnz, const int32_t *row_ptr)
{
    if (row_ptr[0] != 0)
        return DFAIL(d, "sparse", "tensor %u '%s': row_ptr[0] = %d, must be 0", i, tname,
                     row_ptr[0]);
    for (int32_t r = 0; r < rows; r++)
        if (row_ptr[r + 1] < row_ptr[r] || row_ptr[r + 1] - row_ptr[r] > cols ||
            row_ptr[r + 1] > nnz)
            return DFAIL(d, "sparse",
                         "tensor %u '%s': row_ptr[%d] = %d after %d (%d columns, "
                         "nnz %d)",
                         i, tname, r + 1, row_ptr[r + 1], row_ptr[r], cols, nnz);
    if (row_ptr[rows] != nnz)
        return DFAIL(d, "sparse", "tensor %u '%s': row_ptr[%d] = %d, nnz %d", i, tname, rows,
                     row_ptr[rows], nnz);
    return EFC_OK;
}

/* Record r of the sparse section belongs to tensor i (parsed up to its data entry
 * doff/dbytes): checks the record against the tensor, then the blocks of the nnz values,
 * row_ptr and col_idx (in this order). i32 index arrays are mapped in place (their contents
 * are validated by efc_model_check before any use); u16 and Rice ones are decoded into owned
 * i32 arrays, as the IR wants (model.h). */
static enum efc_status parse_sparse_tensor(struct dec *d, const uint8_t *r, struct efc_tensor *t,
                                           uint32_t i, uint64_t numel, uint64_t doff,
                                           uint64_t dbytes, uint64_t *prev_end)
{
    int32_t rows = rdi32(r + 8), cols = rdi32(r + 12), nnz = rdi32(r + 16);
    uint32_t enc = rd32(r + 20); /* EFM_IDX_I32, _U16 or _RICE (parse_sparse_hdr) */
    uint64_t rp_off = rd64(r + 24), rp_bytes = rd64(r + 32);
    uint64_t ci_off = rd64(r + 40), ci_bytes = rd64(r + 48);
    int32_t *row_ptr = NULL, *col_idx = NULL;
    struct efc_sparse *s;
    enum efc_status st;

    if (!(t->flags & EFC_TENSOR_PARAM))
        return DFAIL(d, "sparse", "tensor %u '%s': not a parameter tensor", i, t->name);
    if (rows != t->dims[0] || (uint64_t)rows * (uint64_t)cols != numel)
        return DFAIL(d, "sparse", "tensor %u '%s': CSR %dx%d does not match the shape (%d rows, "
                     "%llu elements)", i, t->name, rows, cols, t->dims[0],
                     (unsigned long long)numel);
    if (dbytes != (uint64_t)nnz * efc_dtype_size(t->dtype))
        return DFAIL(d, "sparse", "tensor %u '%s': data size %llu, %d stored values need %llu", i,
                     t->name, (unsigned long long)dbytes, nnz,
                     (unsigned long long)nnz * efc_dtype_size(t->dtype));
    if (rp_bytes != ((uint64_t)rows + 1) * 4)
        return DFAIL(d, "sparse", "tensor %u '%s': row_ptr %llu bytes, rows %d need %llu", i,
                     t->name, (unsigned long long)rp_bytes, rows,
                     ((unsigned long long)rows + 1) * 4);
    if (enc == EFM_IDX_RICE) {
        /* the exact length is known only after decoding (rice_decode checks it); every
         * entry takes at least one bit */
        if (ci_bytes < ((uint64_t)nnz + 7) / 8)
            return DFAIL(d, "sparse",
                         "tensor %u '%s': Rice col_idx %llu bytes cannot hold %d "
                         "entries (one bit each at least)",
                         i, t->name, (unsigned long long)ci_bytes, nnz);
    } else if (ci_bytes != (uint64_t)nnz * (enc == EFM_IDX_U16 ? 2u : 4u)) {
        return DFAIL(d, "sparse", "tensor %u '%s': col_idx %llu bytes, nnz %d needs %llu", i,
                     t->name, (unsigned long long)ci_bytes, nnz,
                     (unsigned long long)nnz * (enc == EFM_IDX_U16 ? 2u : 4u));
    }
    if ((st = data_block(d, "tensors", i, t->name, "data", doff, dbytes, prev_end)) ||
        (st = data_block(d, "sparse", i, t->name, "row_ptr", rp_off, rp_bytes, prev_end)) ||
        (st = data_block(d, "sparse", i, t->name, "col_idx", ci_off, ci_bytes, prev_end)))
        return st;
    if (enc == EFM_IDX_I32) { /* used in place: 64-byte aligned, in the mapping */
        row_ptr = (int32_t *)(void *)(d->b + rp_off);
        col_idx = (int32_t *)(void *)(d->b + ci_off);
    } else {
        /* Decoded into owned arrays; row_ptr is copied too because owns_index covers both.
         * Both blocks lie inside the file (data_block) and nnz values of at least one byte
         * each do too, so a hostile file cannot make this allocate more than 4x its size. */
        const uint8_t *p = d->b + ci_off;
        row_ptr = efc_malloc((size_t)rp_bytes);
        col_idx = efc_malloc(nnz ? (size_t)nnz * sizeof(int32_t) : sizeof(int32_t));
        if (!row_ptr || !col_idx) {
            st = efc_errf(EFC_ENOMEM, "%s: out of memory", d->what);
            goto fail;
        }
        for (int32_t k = 0; k <= rows; k++)
            row_ptr[k] = rdi32(d->b + rp_off + 4 * (uint64_t)k);
        if (enc == EFM_IDX_U16) {
            for (int32_t k = 0; k < nnz; k++)
                col_idx[k] =
                    (int32_t)((uint32_t)p[2 * (size_t)k] | (uint32_t)p[2 * (size_t)k + 1] << 8);
        } else if ((st = check_row_ptr(d, i, t->name, rows, cols, nnz, row_ptr)) ||
                   (st = rice_decode(d, i, t->name, rows, cols, row_ptr, p, ci_bytes, col_idx))) {
            goto fail;
        }
    }
    if (!(s = efc_calloc(1, sizeof(*s)))) {
        st = efc_errf(EFC_ENOMEM, "%s: out of memory", d->what);
        goto fail;
    }
    s->layout = EFC_LAYOUT_CSR;
    s->rows = rows;
    s->cols = cols;
    s->nnz = nnz;
    s->row_ptr = row_ptr;
    s->col_idx = col_idx;
    s->owns_index = enc != EFM_IDX_I32;
    t->sparse = s;
    return EFC_OK;
fail:
    if (enc != EFM_IDX_I32) {
        efc_free(row_ptr);
        efc_free(col_idx);
    }
    return st;
}

static enum efc_status parse_tensors(struct dec *d)
{
    struct efc_model *m = d->m;
    uint64_t data_end_prev = d->s[EFM_SEC_DATA].off;
    const uint8_t *r, *sr;
    uint32_t n, n_sparse, j = 0;
    enum efc_status st;

    if ((st = parse_array_hdr(d, EFM_SEC_TENSORS, EFM_TENSOR_BYTES, EFM_MAX_TENSORS, &n)) ||
        (st = parse_sparse_hdr(d, n, &n_sparse)))
        return st;
    sr = d->b + d->s[EFM_SEC_SPARSE].off + EFM_ARRAY_HDR_BYTES; /* next sparse record */
    /* efc_model_new leaves the arrays empty; the loader sizes them exactly. */
    if (!(m->tensors = efc_calloc(n ? n : 1, sizeof(*m->tensors))))
        return efc_errf(EFC_ENOMEM, "%s: out of memory", d->what);
    m->cap_tensors = (int32_t)(n ? n : 1);
    r = d->b + d->s[EFM_SEC_TENSORS].off + EFM_ARRAY_HDR_BYTES;
    for (uint32_t i = 0; i < n; i++, r += EFM_TENSOR_BYTES) {
        struct efc_tensor *t = &m->tensors[i];
        uint32_t dt = rd32(r + 64), flags = rd32(r + 68);
        int32_t ndim = rdi32(r + 72);
        uint64_t doff = rd64(r + 104), dbytes = rd64(r + 112), numel = 1;

        m->n_tensors = (int32_t)i + 1; /* so that efc_model_free sees what is filled in */
        if (!memchr(r, '\0', EFC_NAME_MAX))
            return DFAIL(d, "tensors", "tensor %u: name not NUL-terminated", i);
        memcpy(t->name, r, EFC_NAME_MAX);
        if (dt < EFC_DTYPE_F32 || dt > EFC_DTYPE_I32 || efc_dtype_size((enum efc_dtype)dt) == 0)
            return DFAIL(d, "tensors", "tensor %u '%s': unknown dtype %u", i, t->name, dt);
        t->dtype = (enum efc_dtype)dt;
        if (flags & ~(EFC_TENSOR_PARAM | EFC_TENSOR_INPUT | EFC_TENSOR_OUTPUT))
            return DFAIL(d, "tensors", "tensor %u '%s': unknown flags 0x%x", i, t->name, flags);
        t->flags = flags;
        if (ndim < 0 || ndim > EFC_MAX_DIMS || ((flags & EFC_TENSOR_PARAM) && ndim < 1))
            return DFAIL(d, "tensors", "tensor %u '%s': rank %d", i, t->name, ndim);
        t->ndim = ndim;
        for (int32_t k = 0; k < EFC_MAX_DIMS; k++) {
            int32_t v = rdi32(r + 76 + 4 * k);
            if (k >= ndim) {
                if (v != 0)
                    return DFAIL(d, "tensors", "tensor %u '%s': unused dim %d is %d, must be 0", i,
                                 t->name, k, v);
                continue;
            }
            if (v < 1)
                return DFAIL(d, "tensors", "tensor %u '%s': dim %d is %d", i, t->name, k, v);
            numel *= (uint64_t)v; /* < 2^31 * 2^31: cannot overflow before the check */
            if (numel > EFM_MAX_ELEMS)
                return DFAIL(d, "tensors",
                             "tensor %u '%s': absurd shape (more than %llu "
                             "elements)",
                             i, t->name, (unsigned long long)EFM_MAX_ELEMS);
            t->dims[k] = v;
        }
        if (rd32(r + 100) != 0)
            return DFAIL(d, "tensors", "tensor %u '%s': reserved field not 0", i, t->name);
        if ((st = parse_qparams(d, r, t, i)))
            return st;
        if (j < n_sparse && rd32(sr) == i) {
            /* sparse: the data entry holds the nnz values, row_ptr and col_idx follow it */
            if ((st = parse_sparse_tensor(d, sr, t, i, numel, doff, dbytes, &data_end_prev)))
                return st;
            sr += EFM_SPARSE_BYTES;
            j++;
        } else if (!(flags & EFC_TENSOR_PARAM)) {
            if (doff || dbytes)
                return DFAIL(d, "tensors", "tensor %u '%s': activation with data", i, t->name);
            continue;
        } else {
            if (dbytes != numel * efc_dtype_size(t->dtype))
                return DFAIL(d, "tensors", "tensor %u '%s': data size %llu, shape needs %llu", i,
                             t->name, (unsigned long long)dbytes,
                             (unsigned long long)(numel * efc_dtype_size(t->dtype)));
            if ((st = data_block(d, "tensors", i, t->name, "data", doff, dbytes,
                                 &data_end_prev)))
                return st;
        }
        t->data = (void *)(d->b + doff); /* into the read-only mapping owned by the model */
        t->owns_data = 0;
    }
    if (m->input < 0 || m->input >= m->n_tensors || m->output < 0 || m->output >= m->n_tensors)
        return DFAIL(d, "model", "input/output tensor %d/%d out of range (%d tensors)", m->input,
                     m->output, m->n_tensors);
    /* one encoding per model: the flag is set exactly when some record uses it (checked after
     * the tensors so that a reader skipping the sparse section still fails on the shapes) */
    if ((d->flags & EFM_FLAG_IDX16) && d->n_idx16 == 0)
        return DFAIL(d, "header", "flag 0x%x (u16 col_idx) set but no sparse record uses it",
                     EFM_FLAG_IDX16);
    if ((d->flags & EFM_FLAG_IDXRICE) && d->n_rice == 0)
        return DFAIL(d, "header", "flag 0x%x (Rice col_idx) set but no sparse record uses it",
                     EFM_FLAG_IDXRICE);
    return EFC_OK;
}

static enum efc_status parse_nodes(struct dec *d)
{
    struct efc_model *m = d->m;
    const uint8_t *r;
    uint32_t n;
    enum efc_status st;

    if ((st = parse_array_hdr(d, EFM_SEC_NODES, EFM_NODE_BYTES, EFM_MAX_NODES, &n)))
        return st;
    if (!(m->nodes = efc_calloc(n ? n : 1, sizeof(*m->nodes))))
        return efc_errf(EFC_ENOMEM, "%s: out of memory", d->what);
    m->cap_nodes = (int32_t)(n ? n : 1);
    r = d->b + d->s[EFM_SEC_NODES].off + EFM_ARRAY_HDR_BYTES;
    for (uint32_t i = 0; i < n; i++, r += EFM_NODE_BYTES) {
        struct efc_node *nd = &m->nodes[i];
        struct efc_node_attrs *a = &nd->a;
        uint32_t op = rd32(r + 64), act = rd32(r + 136);

        m->n_nodes = (int32_t)i + 1;
        if (!memchr(r, '\0', EFC_NAME_MAX))
            return DFAIL(d, "nodes", "node %u: name not NUL-terminated", i);
        memcpy(nd->name, r, EFC_NAME_MAX);
        if (op < 1 || op >= EFC_OP_COUNT)
            return DFAIL(d, "nodes", "node %u '%s': unknown op %u", i, nd->name, op);
        nd->op = (enum efc_op)op;
        nd->n_inputs = rdi32(r + 68);
        if (nd->n_inputs < 0 || nd->n_inputs > EFC_NODE_MAX_INPUTS)
            return DFAIL(d, "nodes", "node %u '%s': %d inputs (0..%d)", i, nd->name, nd->n_inputs,
                         EFC_NODE_MAX_INPUTS);
        for (int32_t j = 0; j < EFC_NODE_MAX_INPUTS; j++) {
            int32_t t = rdi32(r + 72 + 4 * j);
            if (j >= nd->n_inputs ? t != -1 : (t < -1 || t >= m->n_tensors))
                return DFAIL(d, "nodes", "node %u '%s': input %d is tensor %d (%d tensors)", i,
                             nd->name, j, t, m->n_tensors);
            nd->inputs[j] = t;
        }
        nd->output = rdi32(r + 92);
        if (nd->output < 0 || nd->output >= m->n_tensors)
            return DFAIL(d, "nodes", "node %u '%s': output is tensor %d (%d tensors)", i, nd->name,
                         nd->output, m->n_tensors);
        a->kernel[0] = rdi32(r + 96);
        a->kernel[1] = rdi32(r + 100);
        a->stride[0] = rdi32(r + 104);
        a->stride[1] = rdi32(r + 108);
        for (int j = 0; j < 4; j++)
            a->pad[j] = rdi32(r + 112 + 4 * j);
        a->groups = rdi32(r + 128);
        a->count_include_pad = rdi32(r + 132);
        if (act > EFC_ACT_RELU6)
            return DFAIL(d, "nodes", "node %u '%s': unknown fused activation %u", i, nd->name, act);
        a->act = (enum efc_act)act;
        a->eps = rdf32(r + 140);
        a->momentum = rdf32(r + 144);
        a->shape_ndim = rdi32(r + 148);
        for (int j = 0; j < EFC_MAX_DIMS; j++)
            a->shape[j] = rdi32(r + 152 + 4 * j);
        if (a->count_include_pad != 0 && a->count_include_pad != 1)
            return DFAIL(d, "nodes", "node %u '%s': count_include_pad %d", i, nd->name,
                         a->count_include_pad);
        if (!isfinite(a->eps) || !isfinite(a->momentum))
            return DFAIL(d, "nodes", "node %u '%s': eps/momentum not finite", i, nd->name);
        if (a->shape_ndim < 0 || a->shape_ndim > EFC_MAX_DIMS)
            return DFAIL(d, "nodes", "node %u '%s': reshape rank %d", i, nd->name, a->shape_ndim);
    }
    return EFC_OK;
}

static enum efc_status parse_meta(struct dec *d)
{
    const struct sec *s = &d->s[EFM_SEC_META];
    const char *b = (const char *)d->b + s->off, *e = b + s->size, *p;
    struct tbuf t = {0};

    if (s->size > EFM_MAX_META_BYTES)
        return DFAIL(d, "meta", "%llu bytes exceeds the limit %llu", (unsigned long long)s->size,
                     (unsigned long long)EFM_MAX_META_BYTES);
    if (memchr(b, '\0', s->size))
        return DFAIL(d, "meta", "contains a NUL byte");
    tb_puts(&t, "{");
    p = json_object(json_ws(b, e), e, 0, copy_member, &t);
    if (!p || json_ws(p, e) != e) {
        efc_free(t.p);
        return DFAIL(d, "meta", "not one JSON object");
    }
    tb_puts(&t, "}");
    if (t.oom) {
        efc_free(t.p);
        return efc_errf(EFC_ENOMEM, "%s: out of memory", d->what);
    }
    if (t.n <= 2) { /* only name and arch: no free-form metadata */
        efc_free(t.p);
        return EFC_OK;
    }
    t.p[1] = '{'; /* copy_member put a comma before every member: drop the first */
    d->m->meta_json = efc_strdup(t.p + 1);
    efc_free(t.p);
    if (!d->m->meta_json)
        return efc_errf(EFC_ENOMEM, "%s: out of memory", d->what);
    return EFC_OK;
}

/* Parses the mapping [map, map + len) and takes ownership of it: on success it belongs to
 * *out, on failure it is unmapped. */
static enum efc_status decode_mapped(void *map, size_t len, const char *what,
                                     struct efc_model **out)
{
    struct dec d;
    enum efc_status st;

    memset(&d, 0, sizeof(d));
    d.b = map;
    d.len = len;
    d.what = what;
    if ((st = efc_model_new(&d.m))) {
        munmap(map, len);
        return st;
    }
    d.m->map = map;
    d.m->map_bytes = len;
    if ((st = parse_header(&d)) || (st = parse_model(&d)) || (st = parse_tensors(&d)) ||
        (st = parse_nodes(&d)) || (st = parse_meta(&d)))
        goto fail;
    if ((st = efc_model_check(d.m))) {
        char detail[512];
        snprintf(detail, sizeof(detail), "%s", efc_err_detail());
        st = efc_errf(st, "%s: graph: %s", what, detail);
        goto fail;
    }
    *out = d.m;
    return EFC_OK;
fail:
    efc_model_free(d.m);
    return st;
}

enum efc_status efc_efm_decode(const void *buf, size_t len, const char *what,
                               struct efc_model **out)
{
    void *map;

    if (!out || (!buf && len))
        return efc_errf(EFC_EINVAL, "efm decode: NULL argument");
    *out = NULL;
    if (!what)
        what = "<buffer>";
    if (len < EFM_HDR_BYTES)
        return efc_errf(EFC_EPROTO,
                        "%s: section 'header': truncated: %zu bytes, the header "
                        "alone is %u",
                        what, len, EFM_HDR_BYTES);
    if (len > EFC_EFM_MAX_FILE_BYTES)
        return efc_errf(EFC_EPROTO, "%s: %zu bytes exceeds the limit %zu", what, len,
                        EFC_EFM_MAX_FILE_BYTES);
    /* Copy into a private anonymous mapping: page-aligned (so the 64-byte data alignment
     * holds in memory) and released by efc_model_free like a file mapping. */
    map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return efc_errf(EFC_ENOMEM, "%s: cannot map %zu bytes: %s", what, len, strerror(errno));
    memcpy(map, buf, len);
    return decode_mapped(map, len, what, out);
}

enum efc_status efc_efm_load(const char *path, struct efc_model **out)
{
    struct stat st;
    void *map;
    size_t len;
    int fd;

    if (!path || !out)
        return efc_errf(EFC_EINVAL, "efm load: NULL argument");
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return efc_errf(errno == ENOENT ? EFC_ENOTFOUND : EFC_EIO, "%s: cannot open: %s", path,
                        strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return efc_errf(EFC_EIO, "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > EFC_EFM_MAX_FILE_BYTES) {
        close(fd);
        return efc_errf(EFC_EPROTO, "%s: %lld bytes exceeds the limit %zu", path,
                        (long long)st.st_size, EFC_EFM_MAX_FILE_BYTES);
    }
    len = (size_t)st.st_size;
    if (len < EFM_HDR_BYTES) {
        close(fd);
        return efc_errf(EFC_EPROTO,
                        "%s: section 'header': truncated: %zu bytes, the header "
                        "alone is %u",
                        path, len, EFM_HDR_BYTES);
    }
    /* Private copy-on-write mapping: weights are used in place, and a model that is trained
     * or pruned after loading just dirties its own pages (the file is never written through
     * it). Saving is atomic (rename), so a mapped file is never rewritten under us by efc. */
    map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return efc_errf(EFC_EIO, "%s: mmap: %s", path, strerror(errno));
    return decode_mapped(map, len, path, out);
}
