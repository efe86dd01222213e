/* model.c — IR construction, validation, shape inference and statistics. */
#include "model/model.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "common/efc_alloc.h"

#define MAX_ELEMS ((size_t)1 << 31) /* per tensor: 2^31 elements is far beyond any edge model */

size_t efc_dtype_size(enum efc_dtype t)
{
    switch (t) {
    case EFC_DTYPE_F32:
    case EFC_DTYPE_I32:
        return 4;
    case EFC_DTYPE_I8:
    case EFC_DTYPE_U8:
        return 1;
    }
    return 0;
}

const char *efc_dtype_name(enum efc_dtype t)
{
    switch (t) {
    case EFC_DTYPE_F32:
        return "f32";
    case EFC_DTYPE_I8:
        return "i8";
    case EFC_DTYPE_U8:
        return "u8";
    case EFC_DTYPE_I32:
        return "i32";
    }
    return "?";
}

const char *efc_op_name(enum efc_op op)
{
    static const char *const names[EFC_OP_COUNT] = {
        "?",       "Dense",     "Conv2d",        "ReLU",     "ReLU6",
        "MaxPool", "AvgPool",   "GlobalAvgPool", "Flatten",  "Reshape",
        "Add",     "BatchNorm", "Softmax",       "Quantize", "Dequantize",
    };
    if ((unsigned)op >= EFC_OP_COUNT)
        return "?";
    return names[op];
}

size_t efc_tensor_numel(const struct efc_tensor *t)
{
    size_t n = 1;
    for (int32_t i = 0; i < t->ndim; i++)
        n *= (size_t)t->dims[i];
    return n;
}

size_t efc_tensor_bytes(const struct efc_tensor *t)
{
    return efc_tensor_numel(t) * efc_dtype_size(t->dtype);
}

/* Bytes behind t->data: numel values dense, nnz values sparse. */
static size_t values_bytes(const struct efc_tensor *t)
{
    if (t->sparse)
        return (size_t)t->sparse->nnz * efc_dtype_size(t->dtype);
    return efc_tensor_bytes(t);
}

size_t efc_tensor_storage_bytes(const struct efc_tensor *t)
{
    const struct efc_sparse *s = t->sparse;
    if (!s)
        return efc_tensor_bytes(t);
    return values_bytes(t) + ((size_t)s->rows + 1 + (size_t)s->nnz) * sizeof(int32_t);
}

enum efc_status efc_model_new(struct efc_model **out)
{
    struct efc_model *m = efc_calloc(1, sizeof(*m));
    if (!m)
        return efc_errf(EFC_ENOMEM, "model: out of memory");
    m->input = -1;
    m->output = -1;
    *out = m;
    return EFC_OK;
}

static void qparams_free(struct efc_qparams *q)
{
    if (!q)
        return;
    efc_free(q->scale);
    efc_free(q->zero_point);
    efc_free(q);
}

static void sparse_free(struct efc_sparse *s)
{
    if (!s)
        return;
    if (s->owns_index) {
        efc_free(s->row_ptr);
        efc_free(s->col_idx);
    }
    efc_free(s);
}

void efc_model_free(struct efc_model *m)
{
    if (!m)
        return;
    for (int32_t i = 0; i < m->n_tensors; i++) {
        if (m->tensors[i].owns_data)
            efc_free(m->tensors[i].data);
        qparams_free(m->tensors[i].q);
        sparse_free(m->tensors[i].sparse);
    }
    efc_free(m->tensors);
    efc_free(m->nodes);
    efc_free(m->meta_json);
    if (m->map)
        munmap(m->map, m->map_bytes);
    efc_free(m);
}

static void copy_name(char dst[EFC_NAME_MAX], const char *src)
{
    size_t n = src ? strnlen(src, EFC_NAME_MAX - 1) : 0;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

enum efc_status efc_model_add_tensor(struct efc_model *m, const char *name, enum efc_dtype dt,
                                     int32_t ndim, const int32_t *dims, uint32_t flags,
                                     int32_t *out_idx)
{
    struct efc_tensor *t;

    if (ndim < 0 || ndim > EFC_MAX_DIMS || efc_dtype_size(dt) == 0)
        return efc_errf(EFC_EINVAL, "tensor '%s': bad ndim %d or dtype %d", name, ndim, dt);
    if (m->n_tensors == m->cap_tensors) {
        int32_t cap = m->cap_tensors ? m->cap_tensors * 2 : 16;
        void *p = efc_realloc(m->tensors, (size_t)cap * sizeof(*m->tensors));
        if (!p)
            return efc_errf(EFC_ENOMEM, "model: out of memory");
        m->tensors = p;
        m->cap_tensors = cap;
    }
    t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof(*t));
    copy_name(t->name, name);
    t->dtype = dt;
    t->flags = flags;
    t->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++)
        t->dims[i] = dims[i];
    if (flags & EFC_TENSOR_PARAM) {
        size_t n = efc_tensor_bytes(t);
        t->data = efc_malloc_aligned(64, n);
        if (!t->data)
            return efc_errf(EFC_ENOMEM, "tensor '%s': out of memory (%zu bytes)", name, n);
        memset(t->data, 0, n);
        t->owns_data = 1;
    }
    if (flags & EFC_TENSOR_INPUT)
        m->input = m->n_tensors;
    if (flags & EFC_TENSOR_OUTPUT)
        m->output = m->n_tensors;
    if (out_idx)
        *out_idx = m->n_tensors;
    m->n_tensors++;
    return EFC_OK;
}

enum efc_status efc_model_add_node(struct efc_model *m, enum efc_op op, const char *name,
                                   const int32_t *inputs, int32_t n_inputs, int32_t output,
                                   const struct efc_node_attrs *a, int32_t *out_idx)
{
    struct efc_node *n;

    if (n_inputs < 0 || n_inputs > EFC_NODE_MAX_INPUTS)
        return efc_errf(EFC_EINVAL, "node '%s': %d inputs", name, n_inputs);
    if (m->n_nodes == m->cap_nodes) {
        int32_t cap = m->cap_nodes ? m->cap_nodes * 2 : 16;
        void *p = efc_realloc(m->nodes, (size_t)cap * sizeof(*m->nodes));
        if (!p)
            return efc_errf(EFC_ENOMEM, "model: out of memory");
        m->nodes = p;
        m->cap_nodes = cap;
    }
    n = &m->nodes[m->n_nodes];
    memset(n, 0, sizeof(*n));
    n->op = op;
    copy_name(n->name, name);
    n->n_inputs = n_inputs;
    for (int32_t i = 0; i < EFC_NODE_MAX_INPUTS; i++)
        n->inputs[i] = i < n_inputs ? inputs[i] : -1;
    n->output = output;
    if (a)
        n->a = *a;
    if (out_idx)
        *out_idx = m->n_nodes;
    m->n_nodes++;
    return EFC_OK;
}

int32_t efc_model_find_tensor(const struct efc_model *m, const char *name)
{
    for (int32_t i = 0; i < m->n_tensors; i++)
        if (!strncmp(m->tensors[i].name, name, EFC_NAME_MAX))
            return i;
    return -1;
}

/* ---- sparse layouts -------------------------------------------------------------------- */

static int elem_is_zero(const uint8_t *p, size_t es)
{
    for (size_t k = 0; k < es; k++)
        if (p[k])
            return 0;
    return 1;
}

enum efc_status efc_tensor_sparsify(struct efc_model *m, int32_t ti)
{
    struct efc_tensor *t;
    struct efc_sparse *s;
    const uint8_t *src;
    uint8_t *vals;
    size_t es, numel, nnz = 0;

    if (ti < 0 || ti >= m->n_tensors)
        return efc_errf(EFC_EINVAL, "sparsify: tensor index %d out of range", ti);
    t = &m->tensors[ti];
    if (t->sparse)
        return EFC_OK;
    numel = efc_tensor_numel(t);
    if (!(t->flags & EFC_TENSOR_PARAM) || !t->data || t->ndim < 1 || numel == 0)
        return efc_errf(EFC_EINVAL, "sparsify: tensor %d '%s' is not a parameter with data", ti,
                        t->name);
    if (numel > INT32_MAX)
        return efc_errf(EFC_EINVAL,
                        "sparsify: tensor %d '%s': %zu elements, CSR indices are "
                        "32-bit",
                        ti, t->name, numel);
    es = efc_dtype_size(t->dtype);
    src = t->data;
    for (size_t i = 0; i < numel; i++)
        nnz += !elem_is_zero(src + i * es, es);
    s = efc_calloc(1, sizeof(*s));
    vals = efc_malloc_aligned(64, nnz * es);
    if (s) {
        s->owns_index = 1;
        s->row_ptr = efc_malloc(((size_t)t->dims[0] + 1) * sizeof(int32_t));
        s->col_idx = efc_malloc((nnz ? nnz : 1) * sizeof(int32_t)); /* never NULL */
    }
    if (!s || !vals || !s->row_ptr || !s->col_idx) {
        sparse_free(s);
        efc_free(vals);
        return efc_errf(EFC_ENOMEM, "sparsify: tensor '%s': out of memory", t->name);
    }
    s->layout = EFC_LAYOUT_CSR;
    s->rows = t->dims[0];
    s->cols = (int32_t)(numel / (size_t)s->rows);
    s->nnz = 0;
    for (int32_t r = 0; r < s->rows; r++) {
        s->row_ptr[r] = s->nnz;
        for (int32_t c = 0; c < s->cols; c++) {
            const uint8_t *e = src + ((size_t)r * (size_t)s->cols + (size_t)c) * es;
            if (elem_is_zero(e, es))
                continue;
            memcpy(vals + (size_t)s->nnz * es, e, es);
            s->col_idx[s->nnz++] = c;
        }
    }
    s->row_ptr[s->rows] = s->nnz;
    if (t->owns_data)
        efc_free(t->data);
    t->data = vals;
    t->owns_data = 1;
    t->sparse = s;
    return EFC_OK;
}

enum efc_status efc_tensor_densify(struct efc_model *m, int32_t ti)
{
    struct efc_tensor *t;
    const struct efc_sparse *s;
    const uint8_t *src;
    uint8_t *d;
    size_t es, n;

    if (ti < 0 || ti >= m->n_tensors)
        return efc_errf(EFC_EINVAL, "densify: tensor index %d out of range", ti);
    t = &m->tensors[ti];
    if (!(s = t->sparse))
        return EFC_OK;
    es = efc_dtype_size(t->dtype);
    n = efc_tensor_bytes(t);
    if (!(d = efc_malloc_aligned(64, n)))
        return efc_errf(EFC_ENOMEM, "densify: tensor '%s': out of memory (%zu bytes)", t->name, n);
    memset(d, 0, n);
    src = t->data;
    for (int32_t r = 0; r < s->rows; r++)
        for (int32_t k = s->row_ptr[r]; k < s->row_ptr[r + 1]; k++)
            memcpy(d + ((size_t)r * (size_t)s->cols + (size_t)s->col_idx[k]) * es,
                   src + (size_t)k * es, es);
    if (t->owns_data)
        efc_free(t->data);
    t->data = d;
    t->owns_data = 1;
    sparse_free(t->sparse);
    t->sparse = NULL;
    return EFC_OK;
}

enum efc_status efc_model_densify(struct efc_model *m)
{
    enum efc_status st;
    for (int32_t i = 0; i < m->n_tensors; i++)
        if ((st = efc_tensor_densify(m, i)))
            return st;
    return EFC_OK;
}

/* ---- checking and shape inference ---------------------------------------------------- */

#define FAIL(...) efc_errf(EFC_EPROTO, __VA_ARGS__)

static int param_ok(const struct efc_model *m, int32_t idx, enum efc_dtype dt)
{
    return idx >= 0 && idx < m->n_tensors && (m->tensors[idx].flags & EFC_TENSOR_PARAM) &&
           m->tensors[idx].dtype == dt && m->tensors[idx].data;
}

/* A u8 activation carries one finite positive scale and a zero point in 0..255. */
static int act_qparams_ok(const struct efc_tensor *t)
{
    return t->q && t->q->n == 1 && isfinite(t->q->scale[0]) && t->q->scale[0] > 0.0f &&
           t->q->zero_point[0] >= 0 && t->q->zero_point[0] <= 255;
}

static int same_qparams(const struct efc_tensor *a, const struct efc_tensor *b)
{
    return a->q && b->q && a->q->n == 1 && b->q->n == 1 && a->q->scale[0] == b->q->scale[0] &&
           a->q->zero_point[0] == b->q->zero_point[0];
}

/* i8 weights: symmetric (zero point 0), per tensor or per output channel (axis 0). */
static int weight_qparams_ok(const struct efc_tensor *w)
{
    if (!w->q || !(w->q->n == 1 || (w->q->n == w->dims[0] && w->q->axis == 0)))
        return 0;
    for (int32_t i = 0; i < w->q->n; i++)
        if (!isfinite(w->q->scale[i]) || !(w->q->scale[i] > 0.0f) || w->q->zero_point[i] != 0)
            return 0;
    return 1;
}

/* Dtype rules of one node (model.h "INT8 graphs"), before shapes are inferred. */
static enum efc_status check_dtypes(const struct efc_model *m, int32_t ni)
{
    const struct efc_node *n = &m->nodes[ni];
    const struct efc_tensor *x = &m->tensors[n->inputs[0]];
    const struct efc_tensor *y = &m->tensors[n->output];
    int q = x->dtype == EFC_DTYPE_U8;
    enum efc_dtype want_y = q ? EFC_DTYPE_U8 : EFC_DTYPE_F32;

    if (x->dtype != EFC_DTYPE_F32 && x->dtype != EFC_DTYPE_U8)
        return FAIL("node %d '%s': input must be f32 or u8, is %s", ni, n->name,
                    efc_dtype_name(x->dtype));
    if (q && !act_qparams_ok(x))
        return FAIL("node %d '%s': u8 input '%s' needs per-tensor qparams (scale > 0, zero "
                    "point 0..255)",
                    ni, n->name, x->name);
    if (n->op == EFC_OP_QUANTIZE)
        want_y = EFC_DTYPE_U8;
    if (n->op == EFC_OP_DEQUANTIZE)
        want_y = EFC_DTYPE_F32;
    if ((n->op == EFC_OP_QUANTIZE && q) || (n->op == EFC_OP_DEQUANTIZE && !q))
        return FAIL("node %d '%s' (%s): wrong input dtype %s", ni, n->name, efc_op_name(n->op),
                    efc_dtype_name(x->dtype));
    if (q && (n->op == EFC_OP_RELU || n->op == EFC_OP_RELU6 || n->op == EFC_OP_BATCHNORM ||
              n->op == EFC_OP_SOFTMAX))
        return FAIL("node %d '%s' (%s): f32 only (dequantize first)", ni, n->name,
                    efc_op_name(n->op));
    if (y->dtype != want_y)
        return FAIL("node %d '%s' (%s): output must be %s", ni, n->name, efc_op_name(n->op),
                    efc_dtype_name(want_y));
    if (want_y == EFC_DTYPE_U8 && !act_qparams_ok(y))
        return FAIL("node %d '%s': u8 output '%s' needs per-tensor qparams", ni, n->name, y->name);
    if (q &&
        (n->op == EFC_OP_MAXPOOL || n->op == EFC_OP_AVGPOOL || n->op == EFC_OP_GAVGPOOL ||
         n->op == EFC_OP_FLATTEN || n->op == EFC_OP_RESHAPE) &&
        !same_qparams(x, y))
        return FAIL("node %d '%s' (%s): u8 output must keep the input's qparams", ni, n->name,
                    efc_op_name(n->op));
    if (q && n->op == EFC_OP_ADD &&
        (m->tensors[n->inputs[1]].dtype != EFC_DTYPE_U8 ||
         !act_qparams_ok(&m->tensors[n->inputs[1]])))
        return FAIL("node %d '%s' (Add): both inputs must be u8 with qparams", ni, n->name);
    if (q && (n->op == EFC_OP_DENSE || n->op == EFC_OP_CONV2D) &&
        !weight_qparams_ok(&m->tensors[n->inputs[1]]))
        return FAIL("node %d '%s' (%s): i8 weight needs symmetric qparams per tensor or per "
                    "output channel",
                    ni, n->name, efc_op_name(n->op));
    return EFC_OK;
}

static int shape_is(const struct efc_tensor *t, int32_t ndim, const int32_t *dims)
{
    if (t->ndim != ndim)
        return 0;
    for (int32_t i = 0; i < ndim; i++)
        if (t->dims[i] != dims[i])
            return 0;
    return 1;
}

/* Output size of a windowed op along one axis; -1 if not positive. */
static int32_t window_out(int32_t in, int32_t k, int32_t s, int32_t p0, int32_t p1)
{
    int64_t span = (int64_t)in + p0 + p1 - k;
    if (k < 1 || s < 1 || p0 < 0 || p1 < 0 || span < 0)
        return -1;
    return (int32_t)(span / s + 1);
}

static enum efc_status check_window(const struct efc_node *n, int32_t ni,
                                    const struct efc_tensor *x, int32_t *oh, int32_t *ow)
{
    const struct efc_node_attrs *a = &n->a;
    if (x->ndim != 3)
        return FAIL("node %d '%s' (%s): input must be CxHxW, has %d dims", ni, n->name,
                    efc_op_name(n->op), x->ndim);
    if (a->kernel[0] > 64 || a->kernel[1] > 64 || a->stride[0] > 64 || a->stride[1] > 64 ||
        a->pad[0] > 64 || a->pad[1] > 64 || a->pad[2] > 64 || a->pad[3] > 64)
        return FAIL("node %d '%s': kernel/stride/pad out of range", ni, n->name);
    *oh = window_out(x->dims[1], a->kernel[0], a->stride[0], a->pad[0], a->pad[2]);
    *ow = window_out(x->dims[2], a->kernel[1], a->stride[1], a->pad[1], a->pad[3]);
    if (*oh < 1 || *ow < 1)
        return FAIL("node %d '%s' (%s): kernel %dx%d stride %dx%d pad %d,%d,%d,%d does not fit "
                    "input %dx%d",
                    ni, n->name, efc_op_name(n->op), a->kernel[0], a->kernel[1], a->stride[0],
                    a->stride[1], a->pad[0], a->pad[1], a->pad[2], a->pad[3], x->dims[1],
                    x->dims[2]);
    return EFC_OK;
}

static enum efc_status infer_node(struct efc_model *m, int32_t ni)
{
    struct efc_node *n = &m->nodes[ni];
    const struct efc_tensor *x = &m->tensors[n->inputs[0]];
    struct efc_tensor *y = &m->tensors[n->output];
    int32_t od[EFC_MAX_DIMS] = {0};
    int32_t ond = x->ndim;
    size_t xn = efc_tensor_numel(x);
    int32_t need_params = 0, max_in = 1;
    enum efc_status st;

    for (int32_t i = 0; i < x->ndim; i++)
        od[i] = x->dims[i];

    switch (n->op) {
    case EFC_OP_DENSE:
        need_params = 1;
        max_in = 3;
        break;
    case EFC_OP_CONV2D:
        need_params = 1;
        max_in = 3;
        break;
    case EFC_OP_BATCHNORM:
        need_params = 4;
        max_in = 5;
        break;
    case EFC_OP_ADD:
        max_in = 2;
        break;
    default:
        break;
    }
    if (n->n_inputs < 1 + need_params || n->n_inputs > max_in)
        return FAIL("node %d '%s' (%s): %d inputs, expected %d..%d", ni, n->name,
                    efc_op_name(n->op), n->n_inputs, 1 + need_params, max_in);
    for (int32_t i = 1; i < n->n_inputs; i++) {
        enum efc_dtype dt = EFC_DTYPE_F32;
        if (n->op == EFC_OP_ADD)
            break;
        if (n->inputs[i] == -1 && i == 2 && (n->op == EFC_OP_DENSE || n->op == EFC_OP_CONV2D))
            continue;
        if (x->dtype == EFC_DTYPE_U8) /* INT8 conv / dense: i8 weight, i32 bias */
            dt = i == 1 ? EFC_DTYPE_I8 : EFC_DTYPE_I32;
        if (!param_ok(m, n->inputs[i], dt))
            return FAIL("node %d '%s' (%s): input %d must be a %s parameter tensor with data", ni,
                        n->name, efc_op_name(n->op), i, efc_dtype_name(dt));
    }
    if ((unsigned)n->a.act > EFC_ACT_RELU6)
        return FAIL("node %d '%s': bad fused activation %d", ni, n->name, n->a.act);

    switch (n->op) {
    case EFC_OP_DENSE: {
        const struct efc_tensor *w = &m->tensors[n->inputs[1]];
        if (w->ndim != 2 || (size_t)w->dims[1] != xn)
            return FAIL("node %d '%s' (Dense): weight must be [out, %zu]", ni, n->name, xn);
        if (n->n_inputs > 2 && n->inputs[2] >= 0 &&
            !shape_is(&m->tensors[n->inputs[2]], 1, &w->dims[0]))
            return FAIL("node %d '%s' (Dense): bias must be [%d]", ni, n->name, w->dims[0]);
        ond = 1;
        od[0] = w->dims[0];
        break;
    }
    case EFC_OP_CONV2D: {
        const struct efc_tensor *w = &m->tensors[n->inputs[1]];
        int32_t g = n->a.groups, oh, ow;
        if ((st = check_window(n, ni, x, &oh, &ow)))
            return st;
        if (g < 1 || x->dims[0] % g)
            return FAIL("node %d '%s' (Conv2d): groups %d do not divide %d input channels", ni,
                        n->name, g, x->dims[0]);
        if (w->ndim != 4 || w->dims[1] != x->dims[0] / g || w->dims[0] % g ||
            w->dims[2] != n->a.kernel[0] || w->dims[3] != n->a.kernel[1])
            return FAIL("node %d '%s' (Conv2d): weight must be [oc, %d, %d, %d] with oc %% %d == 0",
                        ni, n->name, x->dims[0] / g, n->a.kernel[0], n->a.kernel[1], g);
        if (n->n_inputs > 2 && n->inputs[2] >= 0 &&
            !shape_is(&m->tensors[n->inputs[2]], 1, &w->dims[0]))
            return FAIL("node %d '%s' (Conv2d): bias must be [%d]", ni, n->name, w->dims[0]);
        ond = 3;
        od[0] = w->dims[0];
        od[1] = oh;
        od[2] = ow;
        break;
    }
    case EFC_OP_MAXPOOL:
    case EFC_OP_AVGPOOL: {
        int32_t oh, ow;
        if ((st = check_window(n, ni, x, &oh, &ow)))
            return st;
        if (n->a.pad[0] >= n->a.kernel[0] || n->a.pad[1] >= n->a.kernel[1] ||
            n->a.pad[2] >= n->a.kernel[0] || n->a.pad[3] >= n->a.kernel[1])
            return FAIL("node %d '%s' (%s): padding must be smaller than the kernel", ni, n->name,
                        efc_op_name(n->op));
        od[1] = oh;
        od[2] = ow;
        break;
    }
    case EFC_OP_GAVGPOOL:
        if (x->ndim != 3)
            return FAIL("node %d '%s' (GlobalAvgPool): input must be CxHxW", ni, n->name);
        ond = 1;
        break;
    case EFC_OP_FLATTEN:
        ond = 1;
        od[0] = (int32_t)xn;
        break;
    case EFC_OP_RESHAPE: {
        int32_t minus = -1;
        size_t known = 1;
        if (n->a.shape_ndim < 1 || n->a.shape_ndim > EFC_MAX_DIMS)
            return FAIL("node %d '%s' (Reshape): target rank %d", ni, n->name, n->a.shape_ndim);
        for (int32_t i = 0; i < n->a.shape_ndim; i++) {
            int32_t d = n->a.shape[i];
            if (d == -1 && minus < 0) {
                minus = i;
                continue;
            }
            if (d < 1 || known * (size_t)d > MAX_ELEMS)
                return FAIL("node %d '%s' (Reshape): bad target dim %d", ni, n->name, d);
            known *= (size_t)d;
        }
        ond = n->a.shape_ndim;
        for (int32_t i = 0; i < ond; i++)
            od[i] = n->a.shape[i];
        if (minus >= 0) {
            if (xn % known)
                return FAIL("node %d '%s' (Reshape): %zu elements do not fit", ni, n->name, xn);
            od[minus] = (int32_t)(xn / known);
        } else if (known != xn) {
            return FAIL("node %d '%s' (Reshape): %zu elements into %zu", ni, n->name, xn, known);
        }
        break;
    }
    case EFC_OP_ADD: {
        const struct efc_tensor *b;
        if (n->n_inputs != 2 || n->inputs[1] < 0 || n->inputs[1] >= m->n_tensors)
            return FAIL("node %d '%s' (Add): needs two inputs", ni, n->name);
        b = &m->tensors[n->inputs[1]];
        if (b->flags & EFC_TENSOR_PARAM || !shape_is(b, x->ndim, x->dims))
            return FAIL("node %d '%s' (Add): inputs must be activations of equal shape", ni,
                        n->name);
        break;
    }
    case EFC_OP_BATCHNORM: {
        int32_t c = x->dims[0];
        for (int32_t i = 1; i < 5; i++)
            if (!shape_is(&m->tensors[n->inputs[i]], 1, &c))
                return FAIL("node %d '%s' (BatchNorm): parameter %d must be [%d]", ni, n->name, i,
                            c);
        if (!(n->a.eps > 0.0f) || !(n->a.eps < 1.0f) || !(n->a.momentum >= 0.0f) ||
            !(n->a.momentum <= 1.0f))
            return FAIL("node %d '%s' (BatchNorm): eps/momentum out of range", ni, n->name);
        break;
    }
    case EFC_OP_RELU:
    case EFC_OP_RELU6:
    case EFC_OP_SOFTMAX:
    case EFC_OP_QUANTIZE:
    case EFC_OP_DEQUANTIZE:
        break;
    default:
        return FAIL("node %d '%s': unknown op %d", ni, n->name, n->op);
    }
    y->ndim = ond;
    for (int32_t i = 0; i < EFC_MAX_DIMS; i++)
        y->dims[i] = i < ond ? od[i] : 0;
    if (efc_tensor_numel(y) > MAX_ELEMS)
        return FAIL("node %d '%s': output too large", ni, n->name);
    return EFC_OK;
}

/* CSR structure of tensor i (numel elements, > 0): every index is checked before it is used,
 * so that densify and sparse kernels can trust it. */
static enum efc_status check_sparse(const struct efc_tensor *t, int32_t i, size_t numel)
{
    const struct efc_sparse *s = t->sparse;

    if (!(t->flags & EFC_TENSOR_PARAM) || t->ndim < 1)
        return FAIL("tensor %d '%s': sparse layout on a non-parameter tensor", i, t->name);
    if (s->layout != EFC_LAYOUT_CSR)
        return FAIL("tensor %d '%s': unknown sparse layout %d", i, t->name, (int)s->layout);
    if (s->rows != t->dims[0] || s->cols < 1 || (size_t)s->rows * (size_t)s->cols != numel)
        return FAIL("tensor %d '%s': CSR %dx%d does not match the shape (%d rows, %zu elements)", i,
                    t->name, s->rows, s->cols, t->dims[0], numel);
    if (s->nnz < 0 || (size_t)s->nnz > numel)
        return FAIL("tensor %d '%s': CSR nnz %d outside 0..%zu", i, t->name, s->nnz, numel);
    if (!s->row_ptr || !s->col_idx)
        return FAIL("tensor %d '%s': CSR without index arrays", i, t->name);
    if (s->row_ptr[0] != 0 || s->row_ptr[s->rows] != s->nnz)
        return FAIL("tensor %d '%s': CSR row_ptr runs %d..%d, must run 0..nnz %d", i, t->name,
                    s->row_ptr[0], s->row_ptr[s->rows], s->nnz);
    for (int32_t r = 0; r < s->rows; r++)
        if (s->row_ptr[r + 1] < s->row_ptr[r] || s->row_ptr[r + 1] > s->nnz)
            return FAIL("tensor %d '%s': CSR row_ptr[%d] = %d after %d: not non-decreasing "
                        "within 0..nnz %d",
                        i, t->name, r + 1, s->row_ptr[r + 1], s->row_ptr[r], s->nnz);
    for (int32_t r = 0; r < s->rows; r++)
        for (int32_t k = s->row_ptr[r]; k < s->row_ptr[r + 1]; k++) {
            int32_t c = s->col_idx[k];
            if (c < 0 || c >= s->cols)
                return FAIL("tensor %d '%s': CSR row %d: column %d outside 0..%d", i, t->name, r, c,
                            s->cols - 1);
            if (k > s->row_ptr[r] && c <= s->col_idx[k - 1])
                return FAIL("tensor %d '%s': CSR row %d: columns %d, %d not strictly "
                            "increasing",
                            i, t->name, r, s->col_idx[k - 1], c);
        }
    return EFC_OK;
}

enum efc_status efc_model_check(struct efc_model *m)
{
    /* defined[t]: activation t has a producer (or is the input) before its first use */
    uint8_t *defined;
    enum efc_status st = EFC_OK;

    if (m->n_tensors < 1 || m->n_nodes < 1)
        return FAIL("model '%s': no tensors or no nodes", m->name);
    if (m->input < 0 || m->input >= m->n_tensors || m->output < 0 || m->output >= m->n_tensors)
        return FAIL("model '%s': input/output tensor index out of range", m->name);
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct efc_tensor *t = &m->tensors[i];
        size_t n = 1;
        if (t->ndim < 0 || t->ndim > EFC_MAX_DIMS || efc_dtype_size(t->dtype) == 0)
            return FAIL("tensor %d '%s': bad rank or dtype", i, t->name);
        for (int32_t d = 0; d < t->ndim; d++) {
            if (t->dims[d] < 0 || (t->dims[d] > 0 && n > MAX_ELEMS / (size_t)t->dims[d]))
                return FAIL("tensor %d '%s': absurd shape", i, t->name);
            n *= (size_t)t->dims[d];
        }
        if ((t->flags & EFC_TENSOR_PARAM) && (!t->data || n == 0))
            return FAIL("tensor %d '%s': parameter without data", i, t->name);
        if (t->sparse && (st = check_sparse(t, i, n)))
            return st;
    }
    {
        const struct efc_tensor *in = &m->tensors[m->input];
        if ((in->flags & EFC_TENSOR_PARAM) || in->dtype != EFC_DTYPE_F32 || in->ndim < 1)
            return FAIL("model '%s': input tensor '%s' must be an f32 activation with a shape",
                        m->name, in->name);
        for (int32_t d = 0; d < in->ndim; d++)
            if (in->dims[d] < 1)
                return FAIL("model '%s': input tensor has a zero dimension", m->name);
    }
    if (m->norm.n < 0 || m->norm.n > EFC_NORM_MAX_CH)
        return FAIL("model '%s': bad input normalisation count %d", m->name, m->norm.n);
    for (int32_t c = 0; c < m->norm.n; c++)
        if (!isfinite(m->norm.scale[c]) || !isfinite(m->norm.mean[c]) || !(m->norm.std[c] > 0.0f) ||
            !isfinite(m->norm.std[c]))
            return FAIL("model '%s': bad input normalisation for channel %d", m->name, c);
    if (m->norm.n > 1 && m->norm.n != m->tensors[m->input].dims[0])
        return FAIL("model '%s': normalisation has %d channels, input has %d", m->name, m->norm.n,
                    m->tensors[m->input].dims[0]);

    defined = efc_calloc((size_t)m->n_tensors, 1);
    if (!defined)
        return efc_errf(EFC_ENOMEM, "model: out of memory");
    defined[m->input] = 1;
    for (int32_t ni = 0; ni < m->n_nodes && !st; ni++) {
        struct efc_node *n = &m->nodes[ni];
        if ((unsigned)n->op >= EFC_OP_COUNT || n->op == 0) {
            st = FAIL("node %d '%s': unknown op %d", ni, n->name, n->op);
            break;
        }
        if (n->n_inputs < 1 || n->n_inputs > EFC_NODE_MAX_INPUTS) {
            st = FAIL("node %d '%s': %d inputs", ni, n->name, n->n_inputs);
            break;
        }
        for (int32_t i = 0; i < n->n_inputs && !st; i++) {
            int32_t t = n->inputs[i];
            if (t == -1 && i > 0)
                continue;
            if (t < 0 || t >= m->n_tensors)
                st = FAIL("node %d '%s': input %d tensor index %d out of range", ni, n->name, i, t);
            else if (!(m->tensors[t].flags & EFC_TENSOR_PARAM) && !defined[t])
                st = FAIL("node %d '%s': input '%s' used before it is produced (nodes must be "
                          "in topological order)",
                          ni, n->name, m->tensors[t].name);
        }
        if (st)
            break;
        if (n->inputs[0] < 0 || (m->tensors[n->inputs[0]].flags & EFC_TENSOR_PARAM)) {
            st = FAIL("node %d '%s': first input must be an activation", ni, n->name);
            break;
        }
        if (n->output < 0 || n->output >= m->n_tensors ||
            (m->tensors[n->output].flags & EFC_TENSOR_PARAM) || defined[n->output]) {
            st = FAIL("node %d '%s': output must be a fresh activation tensor", ni, n->name);
            break;
        }
        st = check_dtypes(m, ni);
        if (!st)
            st = infer_node(m, ni);
        defined[n->output] = 1;
    }
    if (!st && !defined[m->output])
        st = FAIL("model '%s': output tensor '%s' is never produced", m->name,
                  m->tensors[m->output].name);
    efc_free(defined);
    return st;
}

#undef FAIL

enum efc_status efc_model_clone(const struct efc_model *m, struct efc_model **out)
{
    struct efc_model *c = efc_calloc(1, sizeof(*c));
    if (!c)
        return efc_errf(EFC_ENOMEM, "model clone: out of memory");
    memcpy(c->name, m->name, sizeof(c->name));
    memcpy(c->arch, m->arch, sizeof(c->arch));
    c->norm = m->norm;
    c->input = m->input;
    c->output = m->output;
    if (m->meta_json && !(c->meta_json = efc_strdup(m->meta_json)))
        goto oom;
    c->tensors = efc_calloc((size_t)(m->n_tensors ? m->n_tensors : 1), sizeof(*c->tensors));
    c->nodes = efc_calloc((size_t)(m->n_nodes ? m->n_nodes : 1), sizeof(*c->nodes));
    if (!c->tensors || !c->nodes)
        goto oom;
    c->cap_tensors = m->n_tensors ? m->n_tensors : 1;
    c->cap_nodes = m->n_nodes ? m->n_nodes : 1;
    memcpy(c->nodes, m->nodes, (size_t)m->n_nodes * sizeof(*c->nodes));
    c->n_nodes = m->n_nodes;
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct efc_tensor *s = &m->tensors[i];
        struct efc_tensor *d = &c->tensors[i];
        *d = *s;
        d->data = NULL;
        d->owns_data = 0;
        d->q = NULL;
        d->sparse = NULL;
        c->n_tensors = i + 1;
        if (s->sparse) {
            const struct efc_sparse *ss = s->sparse;
            size_t nr = ((size_t)ss->rows + 1) * sizeof(int32_t);
            size_t nc = (size_t)ss->nnz * sizeof(int32_t);
            if (!(d->sparse = efc_calloc(1, sizeof(*d->sparse))))
                goto oom;
            *d->sparse = *ss;
            d->sparse->owns_index = 1;
            d->sparse->row_ptr = efc_malloc(nr);
            d->sparse->col_idx = efc_malloc(nc ? nc : sizeof(int32_t));
            if (!d->sparse->row_ptr || !d->sparse->col_idx)
                goto oom;
            memcpy(d->sparse->row_ptr, ss->row_ptr, nr);
            memcpy(d->sparse->col_idx, ss->col_idx, nc);
        }
        if (s->data) {
            size_t n = values_bytes(s);
            if (!(d->data = efc_malloc_aligned(64, n)))
                goto oom;
            memcpy(d->data, s->data, n);
            d->owns_data = 1;
        }
        if (s->q) {
            size_t qn = (size_t)s->q->n;
            if (!(d->q = efc_calloc(1, sizeof(*d->q))))
                goto oom;
            *d->q = *s->q;
            d->q->scale = efc_malloc(qn * sizeof(float));
            d->q->zero_point = efc_malloc(qn * sizeof(int32_t));
            if (!d->q->scale || !d->q->zero_point)
                goto oom;
            memcpy(d->q->scale, s->q->scale, qn * sizeof(float));
            memcpy(d->q->zero_point, s->q->zero_point, qn * sizeof(int32_t));
        }
    }
    *out = c;
    return EFC_OK;
oom:
    efc_model_free(c);
    return efc_errf(EFC_ENOMEM, "model clone: out of memory");
}

void efc_model_normalize(const struct efc_model *m, const float *raw, float *out, int32_t n_samples)
{
    const struct efc_tensor *in = &m->tensors[m->input];
    size_t per = efc_tensor_numel(in);
    int32_t ch = in->ndim == 3 ? in->dims[0] : 1;
    size_t plane = per / (size_t)ch;

    if (m->norm.n == 0) {
        if (out != raw)
            memcpy(out, raw, per * (size_t)n_samples * sizeof(float));
        return;
    }
    for (int32_t s = 0; s < n_samples; s++) {
        for (int32_t c = 0; c < ch; c++) {
            int32_t k = m->norm.n == 1 ? 0 : c;
            float a = m->norm.scale[k] / m->norm.std[k];
            float b = -m->norm.mean[k] / m->norm.std[k];
            const float *r = raw + (size_t)s * per + (size_t)c * plane;
            float *o = out + (size_t)s * per + (size_t)c * plane;
            for (size_t i = 0; i < plane; i++)
                o[i] = r[i] * a + b;
        }
    }
}

void efc_model_param_stats(const struct efc_model *m, uint64_t *params, uint64_t *nonzero,
                           uint64_t *bytes)
{
    uint64_t p = 0, nz = 0, b = 0;
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct efc_tensor *t = &m->tensors[i];
        size_t n;
        if (!(t->flags & EFC_TENSOR_PARAM))
            continue;
        p += efc_tensor_numel(t);
        b += efc_tensor_storage_bytes(t);
        /* the stored values: all elements dense, the nnz entries sparse (the rest are 0) */
        n = t->sparse ? (size_t)t->sparse->nnz : efc_tensor_numel(t);
        if (t->dtype == EFC_DTYPE_F32) {
            const float *f = t->data;
            for (size_t j = 0; j < n; j++)
                nz += f[j] != 0.0f;
        } else {
            const uint8_t *u = t->data;
            size_t es = efc_dtype_size(t->dtype);
            for (size_t j = 0; j < n; j++)
                nz += !elem_is_zero(u + j * es, es);
        }
    }
    if (params)
        *params = p;
    if (nonzero)
        *nonzero = nz;
    if (bytes)
        *bytes = b;
}

uint64_t efc_node_macs(const struct efc_model *m, const struct efc_node *n)
{
    const struct efc_tensor *y = &m->tensors[n->output];
    switch (n->op) {
    case EFC_OP_DENSE:
    case EFC_OP_CONV2D: {
        const struct efc_tensor *w = &m->tensors[n->inputs[1]];
        uint64_t per_out = efc_tensor_numel(w) / (uint64_t)w->dims[0];
        return (uint64_t)efc_tensor_numel(y) * per_out;
    }
    default:
        return 0;
    }
}

uint64_t efc_model_macs(const struct efc_model *m)
{
    uint64_t s = 0;
    for (int32_t i = 0; i < m->n_nodes; i++)
        s += efc_node_macs(m, &m->nodes[i]);
    return s;
}
