/* import.c — ONNX ModelProto -> efc model (onnx_import.h, docs/onnx.md).
 *
 * The protobuf is decoded by protobuf-c (generated code, allocations through efc_malloc), then
 * the graph is walked once in its (topological) order. Every ONNX value is either an
 * activation (an efc tensor plus its logical per-sample shape) or a constant (an initialiser
 * or a Constant node, kept as a TensorProto pointer until a node consumes it as a parameter).
 * Identity and Dropout alias their input; MatMul becomes a bias-less Dense that a following
 * Add of a constant vector completes. efc_model_check validates the result at the end.
 */
#include "onnx/onnx_import.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "onnx.pb-c.h"

#define OPSET_MIN 11
#define OPSET_MAX 17
#define MAX_VALUES 65536   /* nodes + initialisers + inputs: far above any model efc runs */
#define MAX_PARAM_ELEMS ((size_t)1 << 28)
#define MAX_NEST 32        /* protobuf nesting accepted (real models: < 10) */
#define ONNX_FLOAT 1       /* TensorProto.DataType */
#define ONNX_INT64 7

enum vkind { V_ACT = 1, V_CONST = 2 };

struct value {
    const char *name; /* points into the decoded protobuf */
    enum vkind kind;
    int32_t t;                    /* V_ACT: efc tensor */
    int32_t ndim;                 /* V_ACT: logical per-sample rank (1 or 3) */
    int32_t dims[EFC_MAX_DIMS];   /* V_ACT: logical per-sample shape */
    int32_t efc_ndim;             /* V_ACT: rank of the efc tensor (GAP gives [C] for [C,1,1]) */
    int32_t dense_node;           /* V_ACT: bias-less Dense from MatMul, else -1 */
    const Onnx__TensorProto *c;   /* V_CONST */
};

struct ctx {
    struct efc_model *m;
    struct value *v;
    int32_t n_v, cap_v;
    char (*names)[EFC_NAME_MAX + 16]; /* names of values a node adds besides its output */
    int32_t n_names, cap_names;
    const Onnx__GraphProto *g;
    int64_t opset;
    int32_t ni; /* current node index, for messages */
    const char *nname, *op;
};

/* ---- protobuf-c allocator and nesting guard ---------------------------------------------- */

static void *pb_alloc(void *data, size_t size)
{
    (void)data;
    return efc_malloc(size ? size : 1);
}

static void pb_free(void *data, void *p)
{
    (void)data;
    efc_free(p);
}

static ProtobufCAllocator pb_allocator = {pb_alloc, pb_free, NULL};

/* Message types on the recursive paths of onnx.proto (Graph -> Node -> Attribute -> Graph,
 * TypeProto -> Sequence/Map/Optional -> TypeProto, Model -> Function/TrainingInfo). protobuf-c
 * decodes recursively without a depth limit, so a few MB of nested headers would overflow the
 * stack: this walk bounds the depth before protobuf-c sees the bytes. */
enum pbm { M_MODEL, M_GRAPH, M_NODE, M_ATTR, M_VINFO, M_TYPE, M_TYPE1, M_MAP, M_FUNC, M_TRAIN,
           M_LEAF };

static enum pbm child_type(enum pbm m, uint32_t field)
{
    switch (m) {
    case M_MODEL:
        return field == 7 ? M_GRAPH : field == 25 ? M_FUNC : field == 20 ? M_TRAIN : M_LEAF;
    case M_GRAPH:
        return field == 1 ? M_NODE : (field == 11 || field == 12 || field == 13) ? M_VINFO : M_LEAF;
    case M_NODE:
        return field == 5 ? M_ATTR : M_LEAF;
    case M_ATTR:
        return (field == 6 || field == 11) ? M_GRAPH : (field == 14 || field == 15) ? M_TYPE
                                                                                    : M_LEAF;
    case M_VINFO:
        return field == 2 ? M_TYPE : M_LEAF;
    case M_TYPE:
        return (field == 4 || field == 9) ? M_TYPE1 : field == 5 ? M_MAP : M_LEAF;
    case M_TYPE1:
        return field == 1 ? M_TYPE : M_LEAF;
    case M_MAP:
        return field == 2 ? M_TYPE : M_LEAF;
    case M_FUNC:
        return field == 7 ? M_NODE : M_LEAF;
    case M_TRAIN:
        return (field == 1 || field == 2) ? M_GRAPH : M_LEAF;
    default:
        return M_LEAF;
    }
}

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int s = 0; s < 64 && *p < end; s += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* 0: fine; -1: malformed wire data or nested deeper than MAX_NEST. */
static int check_nesting(const uint8_t *p, const uint8_t *end, enum pbm m, int depth)
{
    if (depth > MAX_NEST)
        return -1;
    while (p < end) {
        uint64_t key, n;
        if (read_varint(&p, end, &key))
            return -1;
        switch (key & 7) {
        case 0:
            if (read_varint(&p, end, &n))
                return -1;
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        case 2: {
            enum pbm c;
            if (read_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return -1;
            c = child_type(m, (uint32_t)(key >> 3));
            if (c != M_LEAF && check_nesting(p, p + n, c, depth + 1))
                return -1;
            p += n;
            break;
        }
        default: /* groups: not in onnx.proto */
            return -1;
        }
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static enum efc_status node_err(const struct ctx *c, enum efc_status st, const char *what)
{
    return efc_errf(st, "onnx: node %d '%s' (%s): %s", c->ni, c->nname, c->op, what);
}

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name))
            return n->attribute[i];
    return NULL;
}

static int64_t attr_i(const Onnx__NodeProto *n, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_i ? a->i : def;
}

static float attr_f(const Onnx__NodeProto *n, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_f ? a->f : def;
}

/* ints attribute of exactly `count` entries into out (each in [lo, hi]); absent: def. */
static enum efc_status attr_ints(const struct ctx *c, const Onnx__NodeProto *n, const char *name,
                                 size_t count, int32_t lo, int32_t hi, int32_t def, int32_t *out)
{
    const Onnx__AttributeProto *a = attr(n, name);
    char msg[160];
    for (size_t i = 0; i < count; i++)
        out[i] = def;
    if (!a)
        return EFC_OK;
    if (a->n_ints != count) {
        snprintf(msg, sizeof(msg), "attribute %s has %zu values; supported: %zu (2-D only)", name,
                 a->n_ints, count);
        return node_err(c, EFC_EUNSUPPORTED, msg);
    }
    for (size_t i = 0; i < count; i++) {
        if (a->ints[i] < lo || a->ints[i] > hi) {
            snprintf(msg, sizeof(msg), "attribute %s[%zu] = %lld; supported: %d..%d", name, i,
                     (long long)a->ints[i], lo, hi);
            return node_err(c, EFC_EUNSUPPORTED, msg);
        }
        out[i] = (int32_t)a->ints[i];
    }
    return EFC_OK;
}

static struct value *find(struct ctx *c, const char *name)
{
    if (!name || !*name)
        return NULL;
    for (int32_t i = c->n_v - 1; i >= 0; i--) /* latest definition wins */
        if (!strcmp(c->v[i].name, name))
            return &c->v[i];
    return NULL;
}

static struct value *add_value(struct ctx *c, const char *name)
{
    if (c->n_v >= MAX_VALUES || c->n_v >= c->cap_v) {
        efc_errf(EFC_EUNSUPPORTED, "onnx: more than %d values", c->cap_v);
        return NULL;
    }
    memset(&c->v[c->n_v], 0, sizeof(c->v[0]));
    c->v[c->n_v].name = name;
    c->v[c->n_v].dense_node = -1;
    return &c->v[c->n_v++];
}

/* efc names are bounded: long ONNX names keep their start plus the tensor index (unique). */
static void efc_name(const struct efc_model *m, const char *src, char *dst)
{
    if (strlen(src) < EFC_NAME_MAX)
        snprintf(dst, EFC_NAME_MAX, "%s", src);
    else
        snprintf(dst, EFC_NAME_MAX, "%.48s~%d", src, m->n_tensors);
}

static const char *dtype_name(int32_t t)
{
    static const char *const names[] = {"UNDEFINED", "FLOAT",  "UINT8",   "INT8",      "UINT16",
                                        "INT16",     "INT32",  "INT64",   "STRING",    "BOOL",
                                        "FLOAT16",   "DOUBLE", "UINT32",  "UINT64",    "COMPLEX64",
                                        "COMPLEX128", "BFLOAT16"};
    return t >= 0 && t < (int32_t)(sizeof(names) / sizeof(names[0])) ? names[t] : "unknown";
}

/* Element count of a constant; -1 if a dim is negative or the product is absurd. */
static int64_t const_numel(const Onnx__TensorProto *t)
{
    size_t n = 1;
    if (t->n_dims > EFC_MAX_DIMS + 2)
        return -1;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || (t->dims[i] > 0 && n > MAX_PARAM_ELEMS / (size_t)t->dims[i]))
            return -1;
        n *= (size_t)t->dims[i];
    }
    return (int64_t)n;
}

/* Checks a constant's storage: location, data type, and that raw_data / the typed field holds
 * exactly numel values. *raw: 1 raw_data, 0 typed field. */
static enum efc_status const_check(const struct ctx *c, const Onnx__TensorProto *t, int32_t dtype,
                                   int64_t *numel, int *raw)
{
    const char *nm = t->name ? t->name : "";
    size_t esz = dtype == ONNX_INT64 ? 8 : 4;
    char msg[256];
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        snprintf(msg, sizeof(msg),
                 "tensor '%.64s' uses external data; supported: data inside the .onnx file "
                 "(re-export with save_as_external_data=False)", nm);
        return node_err(c, EFC_EUNSUPPORTED, msg);
    }
    if (!t->has_data_type || t->data_type != dtype) {
        snprintf(msg, sizeof(msg), "tensor '%.64s' has data type %s; supported: %s", nm,
                 dtype_name(t->has_data_type ? t->data_type : 0), dtype_name(dtype));
        return node_err(c, EFC_EUNSUPPORTED, msg);
    }
    if (t->segment) {
        snprintf(msg, sizeof(msg), "tensor '%.64s' is segmented; supported: whole tensors", nm);
        return node_err(c, EFC_EUNSUPPORTED, msg);
    }
    *numel = const_numel(t);
    if (*numel < 0) {
        snprintf(msg, sizeof(msg), "tensor '%.64s': bad or oversized shape", nm);
        return node_err(c, EFC_EPROTO, msg);
    }
    *raw = t->has_raw_data;
    if (*raw ? t->raw_data.len != (size_t)*numel * esz
             : (size_t)*numel != (dtype == ONNX_INT64 ? t->n_int64_data : t->n_float_data)) {
        snprintf(msg, sizeof(msg), "tensor '%.64s': data holds %zu bytes/values, shape needs %lld",
                 nm, *raw ? t->raw_data.len : (dtype == ONNX_INT64 ? t->n_int64_data
                                                                  : t->n_float_data),
                 (long long)*numel);
        return node_err(c, EFC_EPROTO, msg);
    }
    return EFC_OK;
}

/* A float32 constant's values into a new buffer (efc_free). raw_data is little-endian. */
static enum efc_status const_f32(const struct ctx *c, const Onnx__TensorProto *t, float **out,
                                 int64_t *numel)
{
    int raw;
    enum efc_status st = const_check(c, t, ONNX_FLOAT, numel, &raw);
    if (st)
        return st;
    *out = efc_malloc((size_t)*numel * sizeof(float) + 1);
    if (!*out)
        return efc_errf(EFC_ENOMEM, "onnx: out of memory");
    if (raw)
        memcpy(*out, t->raw_data.data, (size_t)*numel * sizeof(float));
    else if (*numel)
        memcpy(*out, t->float_data, (size_t)*numel * sizeof(float));
    return EFC_OK;
}

static enum efc_status const_i64(const struct ctx *c, const Onnx__TensorProto *t, int64_t *vals,
                                 int64_t max, int64_t *numel)
{
    int raw;
    enum efc_status st = const_check(c, t, ONNX_INT64, numel, &raw);
    if (st)
        return st;
    if (*numel > max)
        return node_err(c, EFC_EUNSUPPORTED, "shape constant has too many entries");
    if (raw)
        memcpy(vals, t->raw_data.data, (size_t)*numel * 8);
    else if (*numel)
        memcpy(vals, t->int64_data, (size_t)*numel * 8);
    return EFC_OK;
}

/* Input i of node n as an activation / a constant, or an error naming it. */
static enum efc_status in_act(struct ctx *c, const Onnx__NodeProto *n, size_t i, struct value **v)
{
    char msg[160];
    *v = i < n->n_input ? find(c, n->input[i]) : NULL;
    if (!*v) {
        snprintf(msg, sizeof(msg), "input %zu '%.64s' is not defined before the node", i,
                 i < n->n_input ? n->input[i] : "");
        return node_err(c, EFC_EPROTO, msg);
    }
    if ((*v)->kind != V_ACT) {
        snprintf(msg, sizeof(msg), "input %zu '%.64s' is a constant; supported: an activation", i,
                 n->input[i]);
        return node_err(c, EFC_EUNSUPPORTED, msg);
    }
    return EFC_OK;
}

static enum efc_status in_const(struct ctx *c, const Onnx__NodeProto *n, size_t i,
                                const Onnx__TensorProto **t)
{
    struct value *v = i < n->n_input ? find(c, n->input[i]) : NULL;
    char msg[160];
    if (!v || v->kind != V_CONST) {
        snprintf(msg, sizeof(msg), "input %zu '%.64s' must be an initialiser or Constant%s", i,
                 i < n->n_input ? n->input[i] : "", v ? " (it is computed by the graph)" : "");
        return node_err(c, v ? EFC_EUNSUPPORTED : EFC_EPROTO, msg);
    }
    *t = v->c;
    return EFC_OK;
}

/* A new float32 parameter tensor holding vals. */
static enum efc_status add_param(struct ctx *c, const char *name, int32_t ndim,
                                 const int32_t *dims, const float *vals, int32_t *idx)
{
    char nm[EFC_NAME_MAX];
    enum efc_status st;
    efc_name(c->m, name, nm);
    st = efc_model_add_tensor(c->m, nm, EFC_DTYPE_F32, ndim, dims, EFC_TENSOR_PARAM, idx);
    if (st)
        return st;
    memcpy(c->m->tensors[*idx].data, vals, efc_tensor_numel(&c->m->tensors[*idx]) * sizeof(float));
    return EFC_OK;
}

/* Emits a node whose output is ONNX value `out` with the given logical shape. */
static enum efc_status emit(struct ctx *c, enum efc_op op, const char *out, const int32_t *in,
                            int32_t n_in, const struct efc_node_attrs *a, int32_t ndim,
                            const int32_t *dims, int32_t efc_ndim, int32_t *node_idx)
{
    char nm[EFC_NAME_MAX], node_nm[EFC_NAME_MAX];
    int32_t t;
    struct value *v;
    enum efc_status st;
    efc_name(c->m, out, nm);
    if ((st = efc_model_add_tensor(c->m, nm, EFC_DTYPE_F32, 0, NULL, 0, &t)))
        return st;
    snprintf(node_nm, sizeof(node_nm), "%.63s", c->nname);
    if ((st = efc_model_add_node(c->m, op, node_nm, in, n_in, t, a, node_idx)))
        return st;
    if (!(v = add_value(c, out)))
        return EFC_EUNSUPPORTED;
    v->kind = V_ACT;
    v->t = t;
    v->ndim = ndim;
    memcpy(v->dims, dims, (size_t)ndim * sizeof(int32_t));
    v->efc_ndim = efc_ndim;
    return EFC_OK;
}

/* The activation with its logical shape in efc (GAP's [C] becomes [C,1,1] on demand). */
static enum efc_status materialise(struct ctx *c, struct value *v, int32_t *t)
{
    struct efc_node_attrs a = {0};
    char nm[EFC_NAME_MAX + 8];
    int32_t out, idx = (int32_t)(v - c->v);
    enum efc_status st;
    if (v->efc_ndim == v->ndim) {
        *t = v->t;
        return EFC_OK;
    }
    a.shape_ndim = v->ndim;
    memcpy(a.shape, v->dims, sizeof(a.shape));
    snprintf(nm, sizeof(nm), "%.50s.rs", c->m->tensors[v->t].name);
    if ((st = efc_model_add_tensor(c->m, nm, EFC_DTYPE_F32, 0, NULL, 0, &out)) ||
        (st = efc_model_add_node(c->m, EFC_OP_RESHAPE, nm, &c->v[idx].t, 1, out, &a, NULL)))
        return st;
    c->v[idx].t = out;
    c->v[idx].efc_ndim = c->v[idx].ndim;
    *t = out;
    return EFC_OK;
}

/* auto_pad / pads of a Conv or pool into a->pad for input h x w. */
static enum efc_status window_pads(const struct ctx *c, const Onnx__NodeProto *n, int32_t h,
                                   int32_t w, struct efc_node_attrs *a)
{
    const Onnx__AttributeProto *ap = attr(n, "auto_pad");
    char mode[16] = "NOTSET";
    enum efc_status st;
    if (ap && ap->has_s)
        snprintf(mode, sizeof(mode), "%.*s", (int)(ap->s.len < 15 ? ap->s.len : 15),
                 (const char *)ap->s.data);
    if (!strcmp(mode, "NOTSET") || !strcmp(mode, "VALID") || !*mode) {
        if ((st = attr_ints(c, n, "pads", 4, 0, 64, 0, a->pad)))
            return st;
        if (!strcmp(mode, "VALID"))
            memset(a->pad, 0, sizeof(a->pad));
        return EFC_OK;
    }
    if (strcmp(mode, "SAME_UPPER") && strcmp(mode, "SAME_LOWER"))
        return node_err(c, EFC_EUNSUPPORTED,
                        "auto_pad value; supported: NOTSET, VALID, SAME_UPPER, SAME_LOWER");
    for (int d = 0; d < 2; d++) {
        int32_t in = d ? w : h, s = a->stride[d], k = a->kernel[d];
        int32_t total = ((in + s - 1) / s - 1) * s + k - in;
        if (total < 0)
            total = 0;
        a->pad[d] = !strcmp(mode, "SAME_UPPER") ? total / 2 : total - total / 2;
        a->pad[d + 2] = total - a->pad[d];
    }
    return EFC_OK;
}

static int32_t window_out(int32_t in, int32_t k, int32_t s, int32_t p0, int32_t p1)
{
    int64_t span = (int64_t)in + p0 + p1 - k;
    return span < 0 || s < 1 ? -1 : (int32_t)(span / s + 1);
}

/* ---- ops ------------------------------------------------------------------------------------ */

static enum efc_status op_conv(struct ctx *c, const Onnx__NodeProto *n)
{
    struct efc_node_attrs a = {0};
    const Onnx__TensorProto *wt, *bt = NULL;
    struct value *x;
    float *w = NULL, *b = NULL;
    int64_t wn, bn;
    int32_t in[3] = {-1, -1, -1}, dil[2], ks[2], wd[4], od[3], xt;
    enum efc_status st;

    if ((st = in_act(c, n, 0, &x)) || (st = in_const(c, n, 1, &wt)))
        return st;
    if (n->n_input > 2 && *n->input[2] && (st = in_const(c, n, 2, &bt)))
        return st;
    if (x->ndim != 3 || wt->n_dims != 4)
        return node_err(c, EFC_EUNSUPPORTED, "supported: 2-D convolution of an NCHW input");
    if ((st = attr_ints(c, n, "dilations", 2, 1, 1, 1, dil)))
        return node_err(c, EFC_EUNSUPPORTED, "dilations must be 1; supported: dilation 1");
    for (int i = 0; i < 4; i++) {
        if (wt->dims[i] < 1 || wt->dims[i] > (i < 2 ? 1 << 16 : 64))
            return node_err(c, EFC_EUNSUPPORTED, "weight shape out of range");
        wd[i] = (int32_t)wt->dims[i];
    }
    a.kernel[0] = wd[2];
    a.kernel[1] = wd[3];
    a.groups = (int32_t)attr_i(n, "group", 1);
    if (a.groups < 1 || a.groups > x->dims[0] || x->dims[0] % a.groups ||
        wd[1] * a.groups != x->dims[0] || wd[0] % a.groups)
        return node_err(c, EFC_EPROTO, "group does not match the input and weight channels");
    if ((st = attr_ints(c, n, "kernel_shape", 2, 1, 64, 0, ks)) ||
        (st = attr_ints(c, n, "strides", 2, 1, 64, 1, a.stride)) ||
        (st = window_pads(c, n, x->dims[1], x->dims[2], &a)))
        return st;
    if ((ks[0] && ks[0] != wd[2]) || (ks[1] && ks[1] != wd[3]))
        return node_err(c, EFC_EPROTO, "kernel_shape differs from the weight's");
    od[0] = wd[0];
    od[1] = window_out(x->dims[1], a.kernel[0], a.stride[0], a.pad[0], a.pad[2]);
    od[2] = window_out(x->dims[2], a.kernel[1], a.stride[1], a.pad[1], a.pad[3]);
    if (od[1] < 1 || od[2] < 1)
        return node_err(c, EFC_EPROTO, "kernel does not fit the input");
    if ((st = materialise(c, x, &xt)) || (st = const_f32(c, wt, &w, &wn)))
        goto out;
    in[0] = xt;
    if ((st = add_param(c, wt->name ? wt->name : "conv.weight", 4, wd, w, &in[1])))
        goto out;
    if (bt) {
        if ((st = const_f32(c, bt, &b, &bn)))
            goto out;
        if (bn != wd[0]) {
            st = node_err(c, EFC_EPROTO, "bias size differs from the output channels");
            goto out;
        }
        if ((st = add_param(c, bt->name ? bt->name : "conv.bias", 1, wd, b, &in[2])))
            goto out;
    }
    st = emit(c, EFC_OP_CONV2D, n->output[0], in, bt ? 3 : 2, &a, 3, od, 3, NULL);
out:
    efc_free(w);
    efc_free(b);
    return st;
}

/* Gemm (A x B^T? * alpha + C * beta) and MatMul (A x B) with a constant B: Dense W[out, in]. */
static enum efc_status op_dense(struct ctx *c, const Onnx__NodeProto *n, int gemm)
{
    const Onnx__TensorProto *bt, *ct = NULL;
    struct value *x;
    float *bw = NULL, *w = NULL, *bias = NULL, alpha = 1.0f, beta = 1.0f;
    int64_t bn, cn;
    int32_t in[3] = {-1, -1, -1}, wd[2], k, o, node;
    int trans_b = 0;
    enum efc_status st;

    if ((st = in_act(c, n, 0, &x)) || (st = in_const(c, n, 1, &bt)))
        return st;
    if (gemm) {
        if (attr_i(n, "transA", 0))
            return node_err(c, EFC_EUNSUPPORTED, "transA = 1; supported: transA = 0");
        trans_b = attr_i(n, "transB", 0) != 0;
        alpha = attr_f(n, "alpha", 1.0f);
        beta = attr_f(n, "beta", 1.0f);
        if (n->n_input > 2 && *n->input[2] && (st = in_const(c, n, 2, &ct)))
            return st;
    }
    if (x->ndim != 1 || bt->n_dims != 2)
        return node_err(c, EFC_EUNSUPPORTED,
                        "supported: a [N, F] activation times a constant 2-D matrix "
                        "(Flatten first)");
    if (bt->dims[0] < 1 || bt->dims[1] < 1 || bt->dims[0] > INT32_MAX || bt->dims[1] > INT32_MAX)
        return node_err(c, EFC_EPROTO, "bad weight shape");
    k = (int32_t)bt->dims[trans_b ? 1 : 0];
    o = (int32_t)bt->dims[trans_b ? 0 : 1];
    if (k != x->dims[0])
        return node_err(c, EFC_EPROTO, "weight rows differ from the input features");
    if ((st = const_f32(c, bt, &bw, &bn)))
        return st;
    w = efc_malloc((size_t)bn * sizeof(float));
    if (!w) {
        st = efc_errf(EFC_ENOMEM, "onnx: out of memory");
        goto out;
    }
    for (int32_t i = 0; i < o; i++) /* W[o][k] */
        for (int32_t j = 0; j < k; j++)
            w[(size_t)i * k + j] = alpha * (trans_b ? bw[(size_t)i * k + j] : bw[(size_t)j * o + i]);
    wd[0] = o;
    wd[1] = k;
    if ((st = materialise(c, x, &in[0])) ||
        (st = add_param(c, bt->name ? bt->name : "dense.weight", 2, wd, w, &in[1])))
        goto out;
    if (ct) {
        if ((st = const_f32(c, ct, &bias, &cn)))
            goto out;
        if (cn != o) {
            st = node_err(c, EFC_EUNSUPPORTED, "C must hold one value per output "
                                               "(broadcasting supported only along the batch)");
            goto out;
        }
        for (int32_t i = 0; i < o; i++)
            bias[i] *= beta;
        if ((st = add_param(c, ct->name ? ct->name : "dense.bias", 1, &o, bias, &in[2])))
            goto out;
    }
    if ((st = emit(c, EFC_OP_DENSE, n->output[0], in, ct ? 3 : 2, NULL, 1, &o, 1, &node)))
        goto out;
    if (!gemm)
        c->v[c->n_v - 1].dense_node = node;
out:
    efc_free(bw);
    efc_free(w);
    efc_free(bias);
    return st;
}

static enum efc_status op_pool(struct ctx *c, const Onnx__NodeProto *n, enum efc_op op)
{
    struct efc_node_attrs a = {0};
    struct value *x;
    int32_t dil[2], od[3], xt;
    enum efc_status st;

    if ((st = in_act(c, n, 0, &x)))
        return st;
    if (x->ndim != 3)
        return node_err(c, EFC_EUNSUPPORTED, "supported: 2-D pooling of an NCHW input");
    if (n->n_output > 1 && *n->output[1])
        return node_err(c, EFC_EUNSUPPORTED, "the Indices output; supported: Y only");
    if (attr_i(n, "ceil_mode", 0))
        return node_err(c, EFC_EUNSUPPORTED, "ceil_mode = 1; supported: ceil_mode = 0");
    if (attr_i(n, "storage_order", 0))
        return node_err(c, EFC_EUNSUPPORTED, "storage_order = 1; supported: 0");
    if ((st = attr_ints(c, n, "dilations", 2, 1, 1, 1, dil)))
        return node_err(c, EFC_EUNSUPPORTED, "dilations must be 1; supported: dilation 1");
    if (!attr(n, "kernel_shape"))
        return node_err(c, EFC_EPROTO, "kernel_shape missing");
    if ((st = attr_ints(c, n, "kernel_shape", 2, 1, 64, 1, a.kernel)) ||
        (st = attr_ints(c, n, "strides", 2, 1, 64, 1, a.stride)) ||
        (st = window_pads(c, n, x->dims[1], x->dims[2], &a)))
        return st;
    a.count_include_pad = (int32_t)(attr_i(n, "count_include_pad", 0) != 0);
    od[0] = x->dims[0];
    od[1] = window_out(x->dims[1], a.kernel[0], a.stride[0], a.pad[0], a.pad[2]);
    od[2] = window_out(x->dims[2], a.kernel[1], a.stride[1], a.pad[1], a.pad[3]);
    if (od[1] < 1 || od[2] < 1)
        return node_err(c, EFC_EPROTO, "kernel does not fit the input");
    if ((st = materialise(c, x, &xt)))
        return st;
    return emit(c, op, n->output[0], &xt, 1, &a, 3, od, 3, NULL);
}

static enum efc_status op_gap(struct ctx *c, const Onnx__NodeProto *n)
{
    struct value *x;
    int32_t od[3], xt;
    enum efc_status st;
    if ((st = in_act(c, n, 0, &x)))
        return st;
    if (x->ndim != 3)
        return node_err(c, EFC_EUNSUPPORTED, "supported: an NCHW input");
    if ((st = materialise(c, x, &xt)))
        return st;
    od[0] = x->dims[0];
    od[1] = od[2] = 1;
    return emit(c, EFC_OP_GAVGPOOL, n->output[0], &xt, 1, NULL, 3, od, 1, NULL);
}

static int32_t numel_of(const struct value *v)
{
    int32_t k = 1;
    for (int32_t i = 0; i < v->ndim; i++)
        k *= v->dims[i];
    return k;
}

static enum efc_status op_flatten(struct ctx *c, const Onnx__NodeProto *n)
{
    struct value *x;
    int64_t axis;
    int32_t f;
    enum efc_status st;
    if ((st = in_act(c, n, 0, &x)))
        return st;
    axis = attr_i(n, "axis", 1);
    if (axis < 0)
        axis += x->ndim + 1;
    if (axis != 1)
        return node_err(c, EFC_EUNSUPPORTED, "axis other than 1; supported: axis = 1 "
                                             "(keep the batch, flatten the rest)");
    f = numel_of(x);
    return emit(c, EFC_OP_FLATTEN, n->output[0], &x->t, 1, NULL, 1, &f, 1, NULL);
}

static enum efc_status op_reshape(struct ctx *c, const Onnx__NodeProto *n)
{
    struct efc_node_attrs a = {0};
    const Onnx__TensorProto *s;
    struct value *x;
    int64_t sh[EFC_MAX_DIMS + 1], cnt;
    int32_t minus = -1, known = 1, f, xt;
    enum efc_status st;

    if ((st = in_act(c, n, 0, &x)) || (st = in_const(c, n, 1, &s)) ||
        (st = const_i64(c, s, sh, EFC_MAX_DIMS + 1, &cnt)))
        return st;
    if (cnt < 2 || (sh[0] != -1 && sh[0] != 0))
        return node_err(c, EFC_EUNSUPPORTED,
                        "target shape must keep the batch first (-1 or 0) and have 1..4 more dims");
    if (attr_i(n, "allowzero", 0))
        return node_err(c, EFC_EUNSUPPORTED, "allowzero = 1; supported: allowzero = 0");
    f = numel_of(x);
    a.shape_ndim = (int32_t)cnt - 1;
    for (int32_t i = 0; i < a.shape_ndim; i++) {
        int64_t d = sh[i + 1];
        if (d == 0 && i < x->ndim)
            d = x->dims[i];
        if (d == -1 && sh[0] != -1 && minus < 0) {
            minus = i;
            a.shape[i] = -1;
            continue;
        }
        if (d < 1 || d > f)
            return node_err(c, EFC_EUNSUPPORTED, "target shape: one -1 at most (the batch "
                                                 "counts) and positive dims");
        a.shape[i] = (int32_t)d;
        known *= (int32_t)d;
    }
    if (minus >= 0 ? f % known : f != known)
        return node_err(c, EFC_EPROTO, "target shape does not match the element count");
    if (minus >= 0)
        a.shape[minus] = f / known;
    if (a.shape_ndim != 1 && a.shape_ndim != 3)
        return node_err(c, EFC_EUNSUPPORTED, "supported: [N, F] or [N, C, H, W] results");
    if ((st = materialise(c, x, &xt)))
        return st;
    return emit(c, EFC_OP_RESHAPE, n->output[0], &xt, 1, &a, a.shape_ndim, a.shape, a.shape_ndim,
                NULL);
}

static enum efc_status op_bn(struct ctx *c, const Onnx__NodeProto *n)
{
    static const char *const what[4] = {"scale", "B", "mean", "var"};
    struct efc_node_attrs a = {0};
    struct value *x;
    int32_t in[5], ch;
    enum efc_status st = EFC_OK;

    if ((st = in_act(c, n, 0, &x)))
        return st;
    if (attr_i(n, "training_mode", 0))
        return node_err(c, EFC_EUNSUPPORTED, "training_mode = 1; supported: inference");
    for (size_t i = 1; i < n->n_output; i++)
        if (*n->output[i])
            return node_err(c, EFC_EUNSUPPORTED, "running statistics outputs; supported: Y only");
    a.eps = attr_f(n, "epsilon", 1e-5f);
    a.momentum = 1.0f - attr_f(n, "momentum", 0.9f); /* ONNX keeps the old stat's weight */
    if (!(a.momentum >= 0.0f && a.momentum <= 1.0f))
        a.momentum = 0.1f;
    ch = x->dims[0];
    if ((st = materialise(c, x, &in[0])))
        return st;
    for (int i = 0; i < 4; i++) {
        const Onnx__TensorProto *t;
        float *v = NULL;
        int64_t cnt;
        char nm[EFC_NAME_MAX];
        if ((st = in_const(c, n, (size_t)i + 1, &t)) || (st = const_f32(c, t, &v, &cnt)))
            return st;
        snprintf(nm, sizeof(nm), "%.50s.%s", c->nname, what[i]);
        if (cnt != ch)
            st = node_err(c, EFC_EPROTO, "parameter size differs from the channels");
        else
            st = add_param(c, t->name && *t->name ? t->name : nm, 1, &ch, v, &in[i + 1]);
        efc_free(v);
        if (st)
            return st;
    }
    return emit(c, EFC_OP_BATCHNORM, n->output[0], in, 5, &a, x->ndim, x->dims, x->ndim, NULL);
}

static enum efc_status op_alias(struct ctx *c, const Onnx__NodeProto *n, int dropout);

/* A scalar float constant input i, or NaN-free absence (*has = 0). */
static enum efc_status scalar_in(struct ctx *c, const Onnx__NodeProto *n, size_t i, int *has,
                                 float *out)
{
    const Onnx__TensorProto *t;
    float *v = NULL;
    int64_t cnt;
    enum efc_status st;
    *has = 0;
    if (i >= n->n_input || !*n->input[i])
        return EFC_OK;
    if ((st = in_const(c, n, i, &t)) || (st = const_f32(c, t, &v, &cnt)))
        return st;
    if (cnt != 1) {
        efc_free(v);
        return node_err(c, EFC_EPROTO, "min / max must be scalars");
    }
    *has = 1;
    *out = v[0];
    efc_free(v);
    return EFC_OK;
}

static enum efc_status op_unary(struct ctx *c, const Onnx__NodeProto *n, enum efc_op op)
{
    struct value *x;
    enum efc_status st;
    if ((st = in_act(c, n, 0, &x)))
        return st;
    return emit(c, op, n->output[0], &x->t, 1, NULL, x->ndim, x->dims, x->efc_ndim, NULL);
}

/* y = s * x + b per channel, as an inference BatchNorm (mean 0, var 1; gamma absorbs the
 * sqrt(1 + eps) of the denominator), into a new value named `out`. */
static enum efc_status emit_affine(struct ctx *c, struct value *x, float s, float b,
                                   const char *out)
{
    struct efc_node_attrs a = {0};
    int32_t in[5], ch = x->dims[0];
    enum efc_status st;
    static const char *const what[4] = {"scale", "shift", "mean", "var"};
    a.eps = 1e-5f;
    a.momentum = 0.1f;
    if ((st = materialise(c, x, &in[0])))
        return st;
    float *v = efc_malloc((size_t)ch * sizeof(float));
    if (!v)
        return node_err(c, EFC_ENOMEM, "clip: out of memory");
    for (int i = 0; i < 4 && st == EFC_OK; i++) {
        float val = i == 0 ? s * sqrtf(1.0f + a.eps) : i == 1 ? b : i == 2 ? 0.0f : 1.0f;
        char nm[EFC_NAME_MAX];
        for (int32_t k = 0; k < ch; k++)
            v[k] = val;
        snprintf(nm, sizeof(nm), "%.40s.%s.%s", c->nname, out, what[i]);
        st = add_param(c, nm, 1, &ch, v, &in[i + 1]);
    }
    efc_free(v);
    if (st)
        return st;
    return emit(c, EFC_OP_BATCHNORM, out, in, 5, &a, x->ndim, x->dims, x->ndim, NULL);
}

/* Clip(min, max): ReLU (0, none) and ReLU6 (0, 6) directly; any other bounds through the same
 * ops around an affine map: clamp(x, lo, hi) = lo + (hi - lo) / 6 * relu6(6 (x - lo) / (hi - lo)),
 * max(x, lo) = lo + relu(x - lo), min(x, hi) = hi - relu(hi - x); no bounds is Identity. */
static enum efc_status op_clip(struct ctx *c, const Onnx__NodeProto *n)
{
    int has_lo, has_hi;
    float lo = 0, hi = 0;
    struct value *x;
    enum efc_status st;
    if ((st = scalar_in(c, n, 1, &has_lo, &lo)) || (st = scalar_in(c, n, 2, &has_hi, &hi)))
        return st;
    if (has_lo && lo == 0.0f && has_hi && hi == 6.0f)
        return op_unary(c, n, EFC_OP_RELU6);
    if (has_lo && lo == 0.0f && !has_hi)
        return op_unary(c, n, EFC_OP_RELU);
    if (!has_lo && !has_hi)
        return op_alias(c, n, 0);
    if ((has_lo && !isfinite(lo)) || (has_hi && !isfinite(hi)) || (has_lo && has_hi && !(hi > lo)))
        return node_err(c, EFC_EUNSUPPORTED, "min and max must be finite with min < max");
    if ((st = in_act(c, n, 0, &x)))
        return st;
    if (c->n_names + 2 > c->cap_names)
        return node_err(c, EFC_EINTERNAL, "clip: no room for its intermediate values");
    char *t1 = c->names[c->n_names++], *t2 = c->names[c->n_names++];
    snprintf(t1, sizeof(c->names[0]), "%.50s#clip1", n->output[0]);
    snprintf(t2, sizeof(c->names[0]), "%.50s#clip2", n->output[0]);
    float s = 1.0f, b = 0.0f, s2 = 1.0f, b2 = 0.0f;
    enum efc_op mid = EFC_OP_RELU;
    if (has_lo && has_hi) {
        s = 6.0f / (hi - lo);
        b = -lo * s;
        s2 = (hi - lo) / 6.0f;
        b2 = lo;
        mid = EFC_OP_RELU6;
    } else if (has_lo) {
        b = -lo;
        b2 = lo;
    } else {
        s = -1.0f;
        b = hi;
        s2 = -1.0f;
        b2 = hi;
    }
    struct value *v1, *v2;
    if ((st = emit_affine(c, x, s, b, t1)) || !(v1 = find(c, t1)))
        return st ? st : node_err(c, EFC_EINTERNAL, "clip");
    if ((st = emit(c, mid, t2, &v1->t, 1, NULL, v1->ndim, v1->dims, v1->efc_ndim, NULL)) ||
        !(v2 = find(c, t2)))
        return st ? st : node_err(c, EFC_EINTERNAL, "clip");
    return emit_affine(c, v2, s2, b2, n->output[0]);
}

static enum efc_status op_softmax(struct ctx *c, const Onnx__NodeProto *n)
{
    struct value *x;
    int64_t axis;
    enum efc_status st;
    if ((st = in_act(c, n, 0, &x)))
        return st;
    axis = attr_i(n, "axis", c->opset >= 13 ? -1 : 1);
    if (axis < 0)
        axis += x->ndim + 1;
    /* efc's Softmax normalises over all per-sample values: ONNX's meaning for axis 1 before
     * opset 13 (inputs coerced to 2-D), and for the last axis of an [N, F] input. */
    if (!(axis == 1 && (x->ndim == 1 || c->opset < 13)))
        return node_err(c, EFC_EUNSUPPORTED, "supported: softmax over the features of an [N, F] "
                                             "input (axis 1 or -1)");
    return emit(c, EFC_OP_SOFTMAX, n->output[0], &x->t, 1, NULL, x->ndim, x->dims, x->efc_ndim,
                NULL);
}

static enum efc_status op_add(struct ctx *c, const Onnx__NodeProto *n)
{
    struct value *a = n->n_input > 0 ? find(c, n->input[0]) : NULL;
    struct value *b = n->n_input > 1 ? find(c, n->input[1]) : NULL;
    int32_t in[2];
    enum efc_status st;
    if (!a || !b || n->n_input != 2)
        return node_err(c, EFC_EPROTO, "inputs not defined before the node");
    if (a->kind == V_CONST) {
        struct value *t = a;
        a = b;
        b = t;
    }
    if (a->kind == V_ACT && b->kind == V_CONST) {
        /* MatMul + Add: the constant becomes the bias of MatMul's Dense */
        struct efc_node *d = a->dense_node >= 0 ? &c->m->nodes[a->dense_node] : NULL;
        struct value *nv;
        float *v = NULL;
        int64_t cnt;
        int32_t o;
        if (!d || d->n_inputs != 2 || d->output != a->t)
            return node_err(c, EFC_EUNSUPPORTED,
                            "adding a constant; supported: two activations of equal shape, or "
                            "a bias vector right after MatMul");
        o = a->dims[0];
        if ((st = const_f32(c, b->c, &v, &cnt)))
            return st;
        if (cnt != o) {
            efc_free(v);
            return node_err(c, EFC_EUNSUPPORTED, "bias after MatMul must hold one value per output");
        }
        st = add_param(c, b->c->name ? b->c->name : "dense.bias", 1, &o, v, &in[0]);
        efc_free(v);
        if (st)
            return st;
        d = &c->m->nodes[a->dense_node]; /* add_param may have moved nothing but be safe */
        d->inputs[2] = in[0];
        d->n_inputs = 3;
        if (!(nv = add_value(c, n->output[0])))
            return EFC_EUNSUPPORTED;
        *nv = *find(c, n->input[a == find(c, n->input[0]) ? 0 : 1]);
        nv->name = n->output[0];
        nv->dense_node = -1;
        a->dense_node = -1; /* the bias is taken */
        return EFC_OK;
    }
    if (a->kind != V_ACT || b->kind != V_ACT)
        return node_err(c, EFC_EUNSUPPORTED, "supported: two activations of equal shape");
    if (a->ndim != b->ndim || memcmp(a->dims, b->dims, (size_t)a->ndim * sizeof(int32_t)))
        return node_err(c, EFC_EUNSUPPORTED, "broadcasting; supported: equal shapes");
    if ((st = materialise(c, a, &in[0])) || (st = materialise(c, b, &in[1])))
        return st;
    return emit(c, EFC_OP_ADD, n->output[0], in, 2, NULL, a->ndim, a->dims, a->ndim, NULL);
}

/* Identity, Dropout (inference): the output names the input's value. */
static enum efc_status op_alias(struct ctx *c, const Onnx__NodeProto *n, int dropout)
{
    struct value *x = n->n_input > 0 ? find(c, n->input[0]) : NULL, *nv;
    size_t xi;
    if (!x)
        return node_err(c, EFC_EPROTO, "input not defined before the node");
    if (dropout && ((n->n_output > 1 && *n->output[1]) || (n->n_input > 2 && *n->input[2])))
        return node_err(c, EFC_EUNSUPPORTED, "mask output or training_mode input; supported: "
                                             "inference (data in, output out)");
    xi = (size_t)(x - c->v);
    if (!(nv = add_value(c, n->output[0])))
        return EFC_EUNSUPPORTED;
    *nv = c->v[xi];
    nv->name = n->output[0];
    nv->dense_node = -1;
    return EFC_OK;
}

static enum efc_status op_constant(struct ctx *c, const Onnx__NodeProto *n)
{
    const Onnx__AttributeProto *a = attr(n, "value");
    struct value *nv;
    if (!a || !a->t)
        return node_err(c, EFC_EUNSUPPORTED, "supported: the 'value' tensor attribute");
    if (!(nv = add_value(c, n->output[0])))
        return EFC_EUNSUPPORTED;
    nv->kind = V_CONST;
    nv->c = a->t;
    return EFC_OK;
}

static enum efc_status import_node(struct ctx *c, const Onnx__NodeProto *n)
{
    const char *op = c->op;
    if (n->domain && *n->domain && strcmp(n->domain, "ai.onnx"))
        return node_err(c, EFC_EUNSUPPORTED, "custom domain; supported: the default ONNX domain");
    if (n->n_output < 1 || !*n->output[0])
        return node_err(c, EFC_EPROTO, "no output");
    if (!strcmp(op, "Conv"))
        return op_conv(c, n);
    if (!strcmp(op, "Gemm"))
        return op_dense(c, n, 1);
    if (!strcmp(op, "MatMul"))
        return op_dense(c, n, 0);
    if (!strcmp(op, "Relu"))
        return op_unary(c, n, EFC_OP_RELU);
    if (!strcmp(op, "Clip"))
        return op_clip(c, n);
    if (!strcmp(op, "MaxPool"))
        return op_pool(c, n, EFC_OP_MAXPOOL);
    if (!strcmp(op, "AveragePool"))
        return op_pool(c, n, EFC_OP_AVGPOOL);
    if (!strcmp(op, "GlobalAveragePool"))
        return op_gap(c, n);
    if (!strcmp(op, "Flatten"))
        return op_flatten(c, n);
    if (!strcmp(op, "Reshape"))
        return op_reshape(c, n);
    if (!strcmp(op, "BatchNormalization"))
        return op_bn(c, n);
    if (!strcmp(op, "Softmax"))
        return op_softmax(c, n);
    if (!strcmp(op, "Add"))
        return op_add(c, n);
    if (!strcmp(op, "Identity"))
        return op_alias(c, n, 0);
    if (!strcmp(op, "Dropout"))
        return op_alias(c, n, 1);
    if (!strcmp(op, "Constant"))
        return op_constant(c, n);
    return node_err(c, EFC_EUNSUPPORTED,
                    "operator not supported; supported: Conv, Gemm, MatMul(+Add), Relu, "
                    "Clip, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape, "
                    "BatchNormalization, Softmax, Add, Identity, Dropout, Constant");
}

/* ---- graph -------------------------------------------------------------------------------- */

static int is_initializer(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_initializer; i++)
        if (g->initializer[i]->name && !strcmp(g->initializer[i]->name, name))
            return 1;
    return 0;
}

static enum efc_status add_input(struct ctx *c)
{
    const Onnx__GraphProto *g = c->g;
    const Onnx__ValueInfoProto *vi = NULL;
    const Onnx__TensorShapeProto *sh;
    struct value *v;
    int32_t dims[EFC_MAX_DIMS], nd, t;
    enum efc_status st;

    for (size_t i = 0; i < g->n_input; i++) {
        if (!g->input[i]->name || is_initializer(g, g->input[i]->name))
            continue;
        if (vi)
            return efc_errf(EFC_EUNSUPPORTED, "onnx: graph has several inputs ('%.64s', "
                            "'%.64s'); supported: one", vi->name, g->input[i]->name);
        vi = g->input[i];
    }
    if (!vi)
        return efc_errf(EFC_EPROTO, "onnx: graph has no input");
    if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
        !vi->type->tensor_type || vi->type->tensor_type->elem_type != ONNX_FLOAT)
        return efc_errf(EFC_EUNSUPPORTED, "onnx: input '%.64s' is not a float32 tensor; "
                        "supported: FLOAT", vi->name);
    sh = vi->type->tensor_type->shape;
    if (!sh || (sh->n_dim != 2 && sh->n_dim != 4))
        return efc_errf(EFC_EUNSUPPORTED, "onnx: input '%.64s' has rank %zu; supported: "
                        "[N, C, H, W] or [N, F]", vi->name, sh ? sh->n_dim : (size_t)0);
    if (sh->dim[0]->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
        sh->dim[0]->dim_value != 1)
        return efc_errf(EFC_EUNSUPPORTED, "onnx: input '%.64s' has a fixed batch of %lld; "
                        "supported: a dynamic batch or 1", vi->name,
                        (long long)sh->dim[0]->dim_value);
    nd = (int32_t)sh->n_dim - 1;
    for (int32_t i = 0; i < nd; i++) {
        const Onnx__TensorShapeProto__Dimension *d = sh->dim[i + 1];
        if (d->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ||
            d->dim_value < 1 || d->dim_value > (1 << 20))
            return efc_errf(EFC_EUNSUPPORTED, "onnx: input '%.64s' dimension %d is dynamic or "
                            "out of range; supported: fixed C, H, W (or F), only the batch "
                            "dynamic", vi->name, i + 1);
        dims[i] = (int32_t)d->dim_value;
    }
    {
        char nm[EFC_NAME_MAX];
        efc_name(c->m, vi->name, nm);
        if ((st = efc_model_add_tensor(c->m, nm, EFC_DTYPE_F32, nd, dims, EFC_TENSOR_INPUT, &t)))
            return st;
    }
    c->m->input = t;
    if (!(v = add_value(c, vi->name)))
        return EFC_EUNSUPPORTED;
    v->kind = V_ACT;
    v->t = t;
    v->ndim = v->efc_ndim = nd;
    memcpy(v->dims, dims, (size_t)nd * sizeof(int32_t));
    return EFC_OK;
}

static const char *meta(const Onnx__ModelProto *mp, const char *key)
{
    for (size_t i = 0; i < mp->n_metadata_props; i++)
        if (mp->metadata_props[i]->key && !strcmp(mp->metadata_props[i]->key, key))
            return mp->metadata_props[i]->value;
    return NULL;
}

static enum efc_status parse_list(const char *s, const char *what, const char *key, float *v,
                                  int32_t *n)
{
    const char *p = s;
    *n = 0;
    while (1) {
        char *end;
        float f;
        if (*n >= EFC_NORM_MAX_CH)
            return efc_errf(EFC_EINVAL, "%s: %s: more than %d values", what, key, EFC_NORM_MAX_CH);
        f = strtof(p, &end);
        if (end == p || !isfinite(f))
            return efc_errf(EFC_EINVAL, "%s: %s: '%.64s' is not a list of numbers", what, key, s);
        v[(*n)++] = f;
        while (*end == ' ')
            end++;
        if (!*end)
            return EFC_OK;
        if (*end != ',')
            return efc_errf(EFC_EINVAL, "%s: %s: '%.64s' is not a list of numbers", what, key, s);
        p = end + 1;
    }
}

enum efc_status efc_onnx_parse_norm(const char *scale, const char *mean, const char *std,
                                    const char *what, struct efc_input_norm *out)
{
    const char *src[3] = {scale, mean, std}, *keys[3] = {"input scale", "input mean", "input std"};
    float v[3][EFC_NORM_MAX_CH];
    int32_t cnt[3] = {0, 0, 0}, n = 0;
    enum efc_status st;
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < 3; i++) {
        if (src[i] && (st = parse_list(src[i], what, keys[i], v[i], &cnt[i])))
            return st;
        if (cnt[i] > n)
            n = cnt[i];
    }
    if (!n)
        return EFC_OK;
    for (int i = 0; i < 3; i++)
        if (cnt[i] > 1 && cnt[i] != n)
            return efc_errf(EFC_EINVAL, "%s: %s has %d values, another list %d", what, keys[i],
                            cnt[i], n);
    for (int32_t ch = 0; ch < n; ch++) {
        out->scale[ch] = cnt[0] ? v[0][cnt[0] > 1 ? ch : 0] : 1.0f;
        out->mean[ch] = cnt[1] ? v[1][cnt[1] > 1 ? ch : 0] : 0.0f;
        out->std[ch] = cnt[2] ? v[2][cnt[2] > 1 ? ch : 0] : 1.0f;
        if (!(out->std[ch] > 0.0f))
            return efc_errf(EFC_EINVAL, "%s: input std must be > 0", what);
    }
    out->n = n;
    return EFC_OK;
}

static enum efc_status import_model(const Onnx__ModelProto *mp, const struct efc_onnx_opts *o,
                                    struct efc_model *m)
{
    struct ctx c = {0};
    const Onnx__GraphProto *g = mp->graph;
    const struct value *outv;
    char nodename[EFC_NAME_MAX];
    enum efc_status st = EFC_OK;
    int have_opset = 0;

    if (!g)
        return efc_errf(EFC_EPROTO, "onnx: no graph (not an ONNX model?)");
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *os = mp->opset_import[i];
        if (os->domain && *os->domain && strcmp(os->domain, "ai.onnx"))
            continue;
        c.opset = os->version;
        have_opset = 1;
    }
    if (!have_opset || c.opset < OPSET_MIN || c.opset > OPSET_MAX)
        return efc_errf(EFC_EUNSUPPORTED, "onnx: opset %lld of the default domain; supported: "
                        "%d..%d (re-export with opset_version in that range)",
                        (long long)c.opset, OPSET_MIN, OPSET_MAX);
    if (g->n_node + g->n_initializer + g->n_input + 1 > MAX_VALUES)
        return efc_errf(EFC_EUNSUPPORTED, "onnx: graph too large (%zu nodes)", g->n_node);
    if (g->n_sparse_initializer)
        return efc_errf(EFC_EUNSUPPORTED, "onnx: sparse initialisers; supported: dense");
    if (g->n_output != 1 || !g->output[0]->name)
        return efc_errf(EFC_EUNSUPPORTED, "onnx: graph has %zu outputs; supported: one",
                        g->n_output);
    c.m = m;
    c.g = g;
    /* a node adds its output, and Clip two intermediate values */
    c.cap_v = (int32_t)(3 * g->n_node + g->n_initializer + g->n_input + 1);
    c.cap_names = (int32_t)(2 * g->n_node + 1);
    c.v = efc_calloc((size_t)c.cap_v, sizeof(*c.v));
    c.names = efc_calloc((size_t)c.cap_names, sizeof(*c.names));
    if (!c.v || !c.names) {
        st = efc_errf(EFC_ENOMEM, "onnx: out of memory");
        goto out;
    }
    for (size_t i = 0; i < g->n_initializer && !st; i++) {
        struct value *v = add_value(&c, g->initializer[i]->name ? g->initializer[i]->name : "");
        v->kind = V_CONST;
        v->c = g->initializer[i];
    }
    if ((st = add_input(&c)))
        goto out;
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        c.ni = (int32_t)i;
        c.op = n->op_type ? n->op_type : "";
        if (n->name && *n->name)
            c.nname = n->name;
        else {
            snprintf(nodename, sizeof(nodename), "%.40s_%zu", c.op, i);
            c.nname = nodename;
        }
        if ((st = import_node(&c, n)))
            goto out;
    }
    outv = find(&c, g->output[0]->name);
    if (!outv || outv->kind != V_ACT || outv->t == m->input) {
        st = efc_errf(EFC_EUNSUPPORTED, "onnx: output '%.64s' is not computed from the input",
                      g->output[0]->name);
        goto out;
    }
    m->output = outv->t;
    m->tensors[outv->t].flags |= EFC_TENSOR_OUTPUT;
    if (o && o->norm.n > 0) {
        m->norm = o->norm;
    } else if ((st = efc_onnx_parse_norm(meta(mp, "efc.input_scale"), meta(mp, "efc.input_mean"),
                                         meta(mp, "efc.input_std"), "onnx metadata_props",
                                         &m->norm))) {
        goto out;
    }
    if ((st = efc_model_check(m)))
        goto out;
out:
    efc_free(c.v);
    efc_free(c.names);
    return st;
}

enum efc_status efc_onnx_import(const void *buf, size_t len, const struct efc_onnx_opts *o,
                                struct efc_model **out)
{
    Onnx__ModelProto *mp;
    struct efc_model *m = NULL;
    enum efc_status st;
    char meta_buf[256];

    *out = NULL;
    if (!buf || len == 0)
        return efc_errf(EFC_EPROTO, "onnx: empty input");
    if (check_nesting(buf, (const uint8_t *)buf + len, M_MODEL, 0))
        return efc_errf(EFC_EPROTO, "onnx: malformed protobuf (truncated, bad field or nested "
                        "deeper than %d)", MAX_NEST);
    mp = onnx__model_proto__unpack(&pb_allocator, len, buf);
    if (!mp)
        return efc_errf(EFC_EPROTO, "onnx: malformed protobuf (not an ONNX ModelProto, or "
                        "truncated)");
    if ((st = efc_model_new(&m)))
        goto out;
    snprintf(m->name, sizeof(m->name), "%.63s",
             o && o->name ? o->name : mp->graph && mp->graph->name && *mp->graph->name
                                          ? mp->graph->name : "onnx");
    snprintf(m->arch, sizeof(m->arch), "onnx");
    if ((st = import_model(mp, o, m)))
        goto out;
    {
        /* provenance: producer names are free text, keep only safe characters for JSON */
        char prod[64] = "";
        const char *p = mp->producer_name ? mp->producer_name : "";
        size_t k = 0;
        for (; *p && k + 1 < sizeof(prod); p++)
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                *p == '.' || *p == '-' || *p == '_' || *p == ' ')
                prod[k++] = *p;
        prod[k] = 0;
        snprintf(meta_buf, sizeof(meta_buf),
                 "{\"source\":\"onnx\",\"producer\":\"%s\",\"ir_version\":%lld}", prod,
                 (long long)mp->ir_version);
        m->meta_json = efc_malloc(strlen(meta_buf) + 1);
        if (!m->meta_json) {
            st = efc_errf(EFC_ENOMEM, "onnx: out of memory");
            goto out;
        }
        memcpy(m->meta_json, meta_buf, strlen(meta_buf) + 1);
    }
out:
    onnx__model_proto__free_unpacked(mp, &pb_allocator);
    if (st) {
        efc_model_free(m);
        return st;
    }
    *out = m;
    return EFC_OK;
}

enum efc_status efc_onnx_import_file(const char *path, const struct efc_onnx_opts *o,
                                     struct efc_model **out)
{
    void *buf = NULL;
    size_t len = 0;
    enum efc_status st;
    *out = NULL;
    if ((st = efc_fs_read_all(path, EFC_ONNX_MAX_FILE_BYTES, &buf, &len)))
        return st;
    st = efc_onnx_import(buf, len, o, out);
    if (st) {
        /* prefix the file name to the detail */
        char d[512];
        snprintf(d, sizeof(d), "%s", efc_err_detail());
        efc_errf(st, "%s: %s", path, d);
    }
    efc_free(buf);
    return st;
}
