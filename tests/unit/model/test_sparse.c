/* test_sparse.c — sparse (CSR) parameter tensors: IR conversion, checks, .efm storage and the
 * consumers that densify (executor, trainer).
 *
 * - sparsify / densify round trip bit for bit (incl. -0.0f) on random tensors with 0, 50, 90
 *   and 100 % zeros and odd shapes (1x1, 1-D, an all-zero row, conv 4-D), with the CSR
 *   structure, storage bytes and parameter statistics checked against a direct count.
 * - lenet5 with fc1.weight thresholded to 90 % zeros: the sparse .efm is smaller than the
 *   dense one by the expected amount (efc_efm_tensor_file_bytes, checked against the file's
 *   own sparse record), loads with the values mapped in place and the indices decoded into
 *   owned arrays, re-encodes to the same bytes, densifies to the original values, and the
 *   executor's outputs are bit-identical to the dense model's; clones are independent.
 * - Index encoding (docs/format.md): the writer picks the smallest of i32, u16 and Rice-coded
 *   gaps (bytes checked against a reference encoder here); files written with i32 (mapped in
 *   place) or u16 indices still load and re-encode to the writer's choice; the header flags
 *   and the record's encoding field are checked both ways; the writer refuses an invalid
 *   in-memory CSR. tests/unit/model/test_efm_delta.c covers the Rice stream itself.
 * - efc_model_check rejects each malformed CSR structure with EPROTO naming the tensor.
 * - The loader rejects each corrupted sparse record / index array (checksum recomputed, as in
 *   test_efm.c) with EPROTO naming the file; a reader that ignores the sparse section (as
 *   readers older than it do) refuses the file instead of misreading it.
 * - efc_train densifies a sparse model in place and trains one step.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "efm_bytes.h"

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_rng.h"
#include "common/efc_sha256.h"
#include "compress/train.h"
#include "model/arch.h"
#include "model/efm.h"
#include "model/exec.h"

static char tmpdir[256];

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint8_t *sec_entry(uint8_t *buf, uint32_t kind)
{
    uint32_t n = rd32(buf + 24);
    for (uint32_t i = 0; i < n; i++)
        if (rd32(buf + 64 + 24 * i) == kind)
            return buf + 64 + 24 * i;
    fail_msg("section kind %u not found", kind);
    return NULL;
}

/* Record j of the sparse section (kind 7, 56-byte records). */
static uint8_t *sparse_rec(uint8_t *buf, uint32_t j)
{
    return buf + rd64(sec_entry(buf, 7) + 8) + 8 + 56 * (uint64_t)j;
}

static void path_of(char *out, size_t n, const char *name)
{
    int k = snprintf(out, n, "%s/%s", tmpdir, name);
    assert_true(k > 0 && (size_t)k < n);
}

/* Write buf as tmpdir/name, load it, expect `want` and a detail naming the file (and
 * containing `what` if non-NULL); the buffer decoder must agree. */
static void expect_load(const char *name, const void *buf, size_t len, enum efc_status want,
                        const char *what)
{
    char path[512];
    struct efc_model *m = (struct efc_model *)1;
    enum efc_status st;

    path_of(path, sizeof(path), name);
    assert_int_equal(efc_fs_write_atomic(path, buf, len), EFC_OK);
    efc_err_clear();
    st = efc_efm_load(path, &m);
    if (st != want)
        fail_msg("%s: got %s, want %s (%s)", name, efc_status_str(st), efc_status_str(want),
                 efc_err_detail());
    assert_null(m);
    assert_non_null(strstr(efc_err_detail(), name));
    if (what && !strstr(efc_err_detail(), what))
        fail_msg("%s: detail '%s' lacks '%s'", name, efc_err_detail(), what);
    st = efc_efm_decode(buf, len, name, &m);
    assert_int_equal(st, want);
    assert_non_null(strstr(efc_err_detail(), name));
    unlink(path);
}

/* ---- round trip on single tensors ---- */

static int32_t add_param(struct efc_model *m, const char *name, int32_t ndim, const int32_t *dims)
{
    int32_t idx;
    assert_int_equal(efc_model_add_tensor(m, name, EFC_DTYPE_F32, ndim, dims, EFC_TENSOR_PARAM,
                                          &idx),
                     EFC_OK);
    return idx;
}

/* Random values, `zero_pct` % of them +0.0f, some -0.0f (stored: its bits are not all zero). */
static void fill_random(struct efc_tensor *t, struct efc_rng *r, uint32_t zero_pct)
{
    float *f = t->data;
    size_t n = efc_tensor_numel(t);
    for (size_t i = 0; i < n; i++) {
        if (efc_rng_below(r, 100) < zero_pct)
            f[i] = 0.0f;
        else if (efc_rng_below(r, 50) == 0)
            f[i] = -0.0f;
        else
            f[i] = efc_rng_normal(r);
    }
}

static void check_round_trip(int32_t ndim, const int32_t *dims, uint32_t zero_pct, int zero_row,
                             uint64_t seed)
{
    struct efc_model *m;
    struct efc_rng r;
    struct efc_tensor *t;
    float *orig;
    size_t n, bytes, nnz = 0;
    uint64_t p0, nz0, b0, p1, nz1, b1;
    int32_t ti, rows, cols;

    assert_int_equal(efc_model_new(&m), EFC_OK);
    ti = add_param(m, "w", ndim, dims);
    t = &m->tensors[ti];
    efc_rng_init(&r, seed);
    fill_random(t, &r, zero_pct);
    n = efc_tensor_numel(t);
    rows = dims[0];
    cols = (int32_t)(n / (size_t)rows);
    if (zero_row) /* the middle row all zero */
        memset((float *)t->data + (size_t)(rows / 2) * (size_t)cols, 0,
               (size_t)cols * sizeof(float));
    bytes = efc_tensor_bytes(t);
    orig = efc_malloc(bytes);
    assert_non_null(orig);
    memcpy(orig, t->data, bytes);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &orig[i], 4);
        nnz += u != 0;
    }
    efc_model_param_stats(m, &p0, &nz0, &b0);

    assert_int_equal(efc_tensor_sparsify(m, ti), EFC_OK);
    t = &m->tensors[ti];
    assert_non_null(t->sparse);
    assert_int_equal(t->sparse->layout, EFC_LAYOUT_CSR);
    assert_int_equal(t->sparse->rows, rows);
    assert_int_equal(t->sparse->cols, cols);
    assert_int_equal(t->sparse->nnz, (int32_t)nnz);
    assert_int_equal(t->sparse->row_ptr[0], 0);
    assert_int_equal(t->sparse->row_ptr[rows], (int32_t)nnz);
    for (int32_t i = 0; i < rows; i++) {
        assert_true(t->sparse->row_ptr[i] <= t->sparse->row_ptr[i + 1]);
        for (int32_t k = t->sparse->row_ptr[i]; k < t->sparse->row_ptr[i + 1]; k++) {
            int32_t c = t->sparse->col_idx[k];
            assert_true(c >= 0 && c < cols);
            assert_true(k == t->sparse->row_ptr[i] || c > t->sparse->col_idx[k - 1]);
            assert_memory_equal(&((const float *)t->data)[k], &orig[(size_t)i * cols + c], 4);
        }
    }
    if (zero_row)
        assert_int_equal(t->sparse->row_ptr[rows / 2], t->sparse->row_ptr[rows / 2 + 1]);
    assert_int_equal((uintptr_t)t->data % 64, 0);
    assert_int_equal(efc_tensor_bytes(t), bytes); /* still the dense size */
    assert_int_equal(efc_tensor_storage_bytes(t), nnz * 8 + ((size_t)rows + 1) * 4);
    efc_model_param_stats(m, &p1, &nz1, &b1);
    assert_int_equal(p1, p0);
    assert_int_equal(nz1, nz0); /* -0.0f is stored but counts as zero either way */
    assert_int_equal(b0, bytes);
    assert_int_equal(b1, efc_tensor_storage_bytes(t));
    assert_int_equal(efc_tensor_sparsify(m, ti), EFC_OK); /* no-op when already sparse */
    assert_int_equal(m->tensors[ti].sparse->nnz, (int32_t)nnz);

    assert_int_equal(efc_model_densify(m), EFC_OK);
    t = &m->tensors[ti];
    assert_null(t->sparse);
    assert_int_equal(t->owns_data, 1);
    assert_memory_equal(t->data, orig, bytes);
    efc_free(orig);
    efc_model_free(m);
}

static void test_round_trip_shapes(void **state)
{
    static const uint32_t pct[] = {0, 50, 90, 100};
    static const struct {
        int32_t ndim, dims[4], zero_row;
    } shapes[] = {
        {2, {1, 1, 0, 0}, 0},  {2, {7, 13, 0, 0}, 1}, {2, {120, 400, 0, 0}, 0},
        {1, {5, 0, 0, 0}, 0},  {4, {4, 3, 5, 5}, 1},  {4, {3, 1, 1, 1}, 0},
        {3, {2, 1, 97, 0}, 1},
    };
    (void)state;
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        for (size_t p = 0; p < sizeof(pct) / sizeof(pct[0]); p++)
            check_round_trip(shapes[s].ndim, shapes[s].dims, pct[p], shapes[s].zero_row,
                             100 * s + p);
}

static void test_sparsify_rejects(void **state)
{
    struct efc_model *m;
    int32_t d = 4, a, w;
    (void)state;
    assert_int_equal(efc_model_new(&m), EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "act", EFC_DTYPE_F32, 1, &d, 0, &a), EFC_OK);
    w = add_param(m, "w", 1, &d);
    assert_int_equal(efc_tensor_sparsify(m, a), EFC_EINVAL);
    assert_int_equal(efc_tensor_sparsify(m, 7), EFC_EINVAL);
    assert_int_equal(efc_tensor_densify(m, -1), EFC_EINVAL);
    assert_int_equal(efc_tensor_densify(m, w), EFC_OK); /* dense: no-op */
    assert_null(m->tensors[w].sparse);
    efc_model_free(m);
}

/* ---- lenet5 with a 90 % sparse fc1 ---- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Zero the weights of tensor ti below the pct-th percentile of |w|. */
static void threshold(struct efc_model *m, int32_t ti, double pct)
{
    float *w = m->tensors[ti].data, *mag, cut;
    size_t n = efc_tensor_numel(&m->tensors[ti]);
    mag = efc_malloc(n * sizeof(float));
    assert_non_null(mag);
    for (size_t i = 0; i < n; i++)
        mag[i] = fabsf(w[i]);
    qsort(mag, n, sizeof(float), cmp_float);
    cut = mag[(size_t)(pct * (double)n)];
    for (size_t i = 0; i < n; i++)
        if (fabsf(w[i]) < cut)
            w[i] = 0.0f;
    efc_free(mag);
}

static long file_size(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (long)sb.st_size;
}

/* Runs the executor on the same random raw batch; returns the logits (efc_free). */
static float *run_exec(const struct efc_model *m, int32_t batch)
{
    struct efc_exec *e;
    struct efc_exec_opts o = {.max_batch = batch};
    struct efc_rng r;
    const float *y;
    float *x, *out;
    size_t nin, nout;

    assert_int_equal(efc_exec_new(m, &o, &e), EFC_OK);
    nin = (size_t)efc_exec_input_size(e) * (size_t)batch;
    nout = (size_t)efc_exec_output_size(e) * (size_t)batch;
    x = efc_malloc(nin * sizeof(float));
    out = efc_malloc(nout * sizeof(float));
    assert_non_null(x);
    assert_non_null(out);
    efc_rng_init(&r, 42);
    for (size_t i = 0; i < nin; i++)
        x[i] = (float)efc_rng_below(&r, 256);
    assert_int_equal(efc_exec_run(e, x, batch, &y), EFC_OK);
    memcpy(out, y, nout * sizeof(float));
    efc_free(x);
    efc_exec_free(e);
    return out;
}

static void test_lenet5_file(void **state)
{
    struct efc_model *dense, *sp, *l, *c;
    char pd[512], ps[512];
    int32_t fc1;
    size_t wbytes, sbytes, fbytes;
    long saved, expect;
    float *yd, *ys;
    void *b;
    size_t n;
    uint64_t p0, nz0, b0, p1, nz1, b1;
    (void)state;

    assert_int_equal(efc_arch_build("lenet5", 5, &dense), EFC_OK);
    fc1 = efc_model_find_tensor(dense, "fc1.weight");
    assert_true(fc1 >= 0);
    threshold(dense, fc1, 0.9);
    assert_int_equal(efc_model_clone(dense, &sp), EFC_OK);
    assert_int_equal(efc_tensor_sparsify(sp, fc1), EFC_OK);
    wbytes = efc_tensor_bytes(&sp->tensors[fc1]);
    sbytes = efc_tensor_storage_bytes(&sp->tensors[fc1]);
    assert_true(sp->tensors[fc1].sparse->nnz <= 48000 / 10 + 1);
    assert_true(sp->tensors[fc1].sparse->nnz >= 48000 / 10 - 100);

    path_of(pd, sizeof(pd), "lenet5-dense.efm");
    path_of(ps, sizeof(ps), "lenet5-sparse.efm");
    assert_int_equal(efc_efm_save(dense, pd), EFC_OK);
    assert_int_equal(efc_efm_save(sp, ps), EFC_OK);
    /* saving = dense bytes - the bytes the file stores for fc1 (values, row_ptr and the
     * encoded col_idx, as its sparse record states), less up to 3 x 63 bytes of alignment
     * padding and the sparse section (8 + 56 bytes, its table entry 24, up to 7 bytes
     * padding) */
    saved = file_size(pd) - file_size(ps);
    fbytes = efc_efm_tensor_file_bytes(&sp->tensors[fc1]);
    assert_int_equal(efc_efm_encode(sp, &b, &n), EFC_OK);
    assert_int_equal(fbytes, (size_t)sp->tensors[fc1].sparse->nnz * 4 +
                                 rd64(sparse_rec(b, 0) + 32) + rd64(sparse_rec(b, 0) + 48));
    assert_int_equal(rd32(sparse_rec(b, 0) + 20), 3); /* Rice: far below u16's 2 bytes */
    assert_true(rd64(sparse_rec(b, 0) + 48) < (uint64_t)sp->tensors[fc1].sparse->nnz);
    efc_free(b);
    expect = (long)(wbytes - fbytes);
    print_message("lenet5: dense %ld bytes, fc1 90 %% sparse %ld bytes (fc1 %zu -> %zu bytes "
                  "in memory, %zu in the file)\n",
                  file_size(pd), file_size(ps), wbytes, sbytes, fbytes);
    assert_true(saved <= expect && saved >= expect - 3 * 63 - 64 - 24 - 7);

    assert_int_equal(efc_efm_load(ps, &l), EFC_OK);
    {
        const struct efc_tensor *t = &l->tensors[fc1];
        const struct efc_sparse *s0 = sp->tensors[fc1].sparse;
        const char *lo = l->map, *hi = lo + l->map_bytes;
        assert_non_null(t->sparse);
        /* values in place; Rice col_idx decoded into owned arrays (row_ptr copied with them) */
        assert_int_equal(t->owns_data, 0);
        assert_true((const char *)t->data >= lo && (const char *)t->data < hi);
        assert_int_equal(t->sparse->owns_index, 1);
        assert_false((const char *)t->sparse->col_idx >= lo &&
                     (const char *)t->sparse->col_idx < hi);
        assert_int_equal(t->sparse->nnz, s0->nnz);
        assert_memory_equal(t->sparse->row_ptr, s0->row_ptr, ((size_t)s0->rows + 1) * 4);
        assert_memory_equal(t->sparse->col_idx, s0->col_idx, (size_t)s0->nnz * 4);
        for (int32_t i = 0; i < l->n_tensors; i++)
            assert_true(i == fc1 || l->tensors[i].sparse == NULL);
    }
    efc_model_param_stats(dense, &p0, &nz0, &b0);
    efc_model_param_stats(l, &p1, &nz1, &b1);
    assert_int_equal(p0, p1);
    assert_int_equal(nz0, nz1);
    assert_int_equal(b0 - b1, wbytes - sbytes);
    /* deterministic: the loaded model re-encodes to the file */
    assert_int_equal(efc_efm_encode(l, &b, &n), EFC_OK);
    assert_int_equal(n, l->map_bytes);
    assert_memory_equal(b, l->map, n);
    efc_free(b);

    /* the executor densifies to the same values: bit-identical outputs */
    yd = run_exec(dense, 3);
    ys = run_exec(l, 3);
    assert_memory_equal(yd, ys, 3 * 10 * sizeof(float));
    efc_free(ys);
    assert_non_null(l->tensors[fc1].sparse); /* the executor's copy was densified, not l */

    /* a clone owns its CSR arrays; densified it equals the dense original */
    assert_int_equal(efc_model_clone(l, &c), EFC_OK);
    assert_int_equal(c->tensors[fc1].sparse->owns_index, 1);
    assert_int_equal(c->tensors[fc1].owns_data, 1);
    assert_int_equal(efc_model_check(c), EFC_OK);
    assert_int_equal(efc_model_densify(c), EFC_OK);
    for (int32_t i = 0; i < c->n_tensors; i++)
        if (c->tensors[i].flags & EFC_TENSOR_PARAM)
            assert_memory_equal(c->tensors[i].data, dense->tensors[i].data,
                                efc_tensor_bytes(&dense->tensors[i]));
    ys = run_exec(c, 3);
    assert_memory_equal(yd, ys, 3 * 10 * sizeof(float));
    efc_free(ys);
    efc_free(yd);

    efc_model_free(c);
    efc_model_free(l);
    efc_model_free(sp);
    efc_model_free(dense);
    unlink(pd);
    unlink(ps);
}

/* ---- efc_model_check on malformed CSR ---- */

/* input [6] -> Dense(W[4, 6], b[4]) -> output; W has 2, 0, 3, 1 non-zeros per row and is
 * sparse, b too (when sparse_bias). */
static struct efc_model *small_model(int sparse_bias, int32_t *w_out)
{
    static const float wv[4][6] = {{0, 1.5f, 0, 0, -2, 0},
                                   {0, 0, 0, 0, 0, 0},
                                   {3, 0, 0.25f, 0, 0, 7},
                                   {0, 0, 0, -1, 0, 0}};
    struct efc_model *m;
    int32_t x, w, b, y, d6 = 6, d4 = 4, wd[2] = {4, 6}, in[3];

    assert_int_equal(efc_model_new(&m), EFC_OK);
    snprintf(m->name, sizeof(m->name), "small");
    assert_int_equal(efc_model_add_tensor(m, "x", EFC_DTYPE_F32, 1, &d6, EFC_TENSOR_INPUT, &x),
                     EFC_OK);
    w = add_param(m, "fc.w", 2, wd);
    b = add_param(m, "fc.b", 1, &d4);
    assert_int_equal(efc_model_add_tensor(m, "y", EFC_DTYPE_F32, 1, &d4, EFC_TENSOR_OUTPUT, &y),
                     EFC_OK);
    memcpy(m->tensors[w].data, wv, sizeof(wv));
    ((float *)m->tensors[b].data)[1] = 0.5f;
    ((float *)m->tensors[b].data)[3] = -0.5f;
    in[0] = x, in[1] = w, in[2] = b;
    assert_int_equal(efc_model_add_node(m, EFC_OP_DENSE, "fc", in, 3, y, NULL, NULL), EFC_OK);
    assert_int_equal(efc_tensor_sparsify(m, w), EFC_OK);
    if (sparse_bias)
        assert_int_equal(efc_tensor_sparsify(m, b), EFC_OK);
    assert_int_equal(efc_model_check(m), EFC_OK);
    assert_int_equal(m->tensors[w].sparse->nnz, 6);
    *w_out = w;
    return m;
}

enum corrupt {
    C_ROWPTR_DECREASING,
    C_ROWPTR_START,
    C_ROWPTR_BEYOND_NNZ,
    C_COL_TOO_BIG,
    C_COL_NEGATIVE,
    C_COLS_UNSORTED,
    C_COLS_DUPLICATE,
    C_NNZ_MISMATCH,
    C_NNZ_TOO_BIG,
    C_LAYOUT,
    C_ROWS,
    C_COLS,
    C_NOT_PARAM,
    C_COUNT
};

static void test_check_rejects_malformed(void **state)
{
    (void)state;
    for (int c = 0; c < C_COUNT; c++) {
        int32_t w;
        struct efc_model *m = small_model(0, &w);
        struct efc_sparse *s = m->tensors[w].sparse;
        /* rows: [0, 2) cols 1 4; [2, 2); [2, 5) cols 0 2 5; [5, 6) col 3 */
        switch ((enum corrupt)c) {
        case C_ROWPTR_DECREASING:
            s->row_ptr[2] = 1; /* after row_ptr[1] = 2 */
            break;
        case C_ROWPTR_START:
            s->row_ptr[0] = 1;
            break;
        case C_ROWPTR_BEYOND_NNZ:
            s->row_ptr[3] = 7;
            break;
        case C_COL_TOO_BIG:
            s->col_idx[4] = 6;
            break;
        case C_COL_NEGATIVE:
            s->col_idx[0] = -1;
            break;
        case C_COLS_UNSORTED:
            s->col_idx[2] = 2;
            s->col_idx[3] = 0;
            break;
        case C_COLS_DUPLICATE:
            s->col_idx[1] = 1;
            break;
        case C_NNZ_MISMATCH:
            s->nnz = 5;
            break;
        case C_NNZ_TOO_BIG:
            s->nnz = 25;
            break;
        case C_LAYOUT:
            s->layout = (enum efc_layout)2;
            break;
        case C_ROWS:
            s->rows = 3;
            break;
        case C_COLS:
            s->cols = 5;
            break;
        case C_NOT_PARAM: /* move the layout onto the output activation */
            m->tensors[m->output].sparse = s;
            m->tensors[w].sparse = NULL;
            break;
        case C_COUNT:
            break;
        }
        efc_err_clear();
        if (efc_model_check(m) != EFC_EPROTO)
            fail_msg("case %d: accepted", c);
        if (!strstr(efc_err_detail(), c == C_NOT_PARAM ? "'y'" : "'fc.w'"))
            fail_msg("case %d: detail '%s' does not name the tensor", c, efc_err_detail());
        efc_model_free(m);
    }
}

/* ---- the loader on corrupted sparse files ---- */

static uint8_t *encode_small(size_t *len)
{
    int32_t w;
    struct efc_model *m = small_model(1, &w);
    void *buf;
    assert_int_equal(efc_efm_encode(m, &buf, len), EFC_OK);
    efc_model_free(m);
    return buf;
}

static void test_load_small_and_corruptions(void **state)
{
    size_t len;
    uint8_t *orig = encode_small(&len), *buf = efc_malloc(len);
    struct efc_model *m;
    (void)state;
    assert_non_null(buf);

    /* the valid file loads with both tensors sparse; the bias is 4x1 CSR */
    assert_int_equal(efc_efm_decode(orig, len, "small.efm", &m), EFC_OK);
    assert_non_null(m->tensors[1].sparse);
    assert_non_null(m->tensors[2].sparse);
    assert_int_equal(m->tensors[2].sparse->cols, 1);
    assert_int_equal(m->tensors[2].sparse->nnz, 2);
    efc_model_free(m);
    assert_int_equal(rd32(sec_entry(orig, 7) + 16), 8 + 2 * 56);

#define CORRUPT(name, want, what, stmt)                                                          \
    do {                                                                                         \
        memcpy(buf, orig, len);                                                                  \
        stmt;                                                                                    \
        rehash(buf, len);                                                                        \
        expect_load(name, buf, len, want, what);                                                 \
    } while (0)

    CORRUPT("layout.efm", EFC_EPROTO, "section 'sparse'", wr32(sparse_rec(buf, 0) + 4, 2));
    CORRUPT("layout0.efm", EFC_EPROTO, "unknown layout", wr32(sparse_rec(buf, 0) + 4, 0));
    CORRUPT("notparam.efm", EFC_EPROTO, "not a parameter", wr32(sparse_rec(buf, 0), 0));
    CORRUPT("tindex.efm", EFC_EPROTO, "out of range", wr32(sparse_rec(buf, 1), 4));
    CORRUPT("dup.efm", EFC_EPROTO, "record 1: tensor 1 again", wr32(sparse_rec(buf, 1), 1));
    CORRUPT("order.efm", EFC_EPROTO, "record 1: tensor 1 again or out of order",
            (wr32(sparse_rec(buf, 0), 2), wr32(sparse_rec(buf, 1), 1)));
    CORRUPT("rows.efm", EFC_EPROTO, "'fc.w'", wr32(sparse_rec(buf, 0) + 8, 2));
    CORRUPT("cols.efm", EFC_EPROTO, "'fc.w'", wr32(sparse_rec(buf, 0) + 12, 5));
    CORRUPT("nnz.efm", EFC_EPROTO, "data size", wr32(sparse_rec(buf, 0) + 16, 5));
    CORRUPT("nnzneg.efm", EFC_EPROTO, "section 'sparse'", wr32(sparse_rec(buf, 0) + 16, ~0u));
    CORRUPT("enc1.efm", EFC_EPROTO, "col_idx encoding 1", wr32(sparse_rec(buf, 0) + 20, 1));
    CORRUPT("enc4.efm", EFC_EPROTO, "col_idx encoding 4", wr32(sparse_rec(buf, 0) + 20, 4));
    /* i32 or u16 with the Rice block: the sizes disagree */
    CORRUPT("enc0.efm", EFC_EPROTO, "col_idx", wr32(sparse_rec(buf, 0) + 20, 0));
    CORRUPT("enc2.efm", EFC_EPROTO, "col_idx",
            (wr32(sparse_rec(buf, 0) + 20, 2), wr32(buf + 12, 3)));
    /* Rice entries need the header flag, and each flag needs a record using it */
    assert_int_equal(rd32(orig + 12), 2);
    CORRUPT("noflag.efm", EFC_EPROTO, "Rice col_idx without header flag", wr32(buf + 12, 0));
    CORRUPT("flag1.efm", EFC_EPROTO, "flag 0x1 (u16 col_idx) set but no", wr32(buf + 12, 3));
    CORRUPT("flag4.efm", EFC_EVERSION, "unknown flags 0x4", wr32(buf + 12, 6));
    CORRUPT("rpsize.efm", EFC_EPROTO, "row_ptr", wr64(sparse_rec(buf, 0) + 32, 24));
    CORRUPT("cisize.efm", EFC_EPROTO, "trailing bytes", wr64(sparse_rec(buf, 0) + 48, 20));
    CORRUPT("rpalign.efm", EFC_EPROTO, "not aligned",
            wr64(sparse_rec(buf, 0) + 24, rd64(sparse_rec(buf, 0) + 24) + 4));
    CORRUPT("cibeyond.efm", EFC_EPROTO, "beyond file size",
            wr64(sparse_rec(buf, 0) + 40, (uint64_t)len));
    /* row_ptr on top of fc.w's values (tensor record 1, data_offset at +104) */
    CORRUPT("rpoverlap.efm", EFC_EPROTO, "overlaps",
            wr64(sparse_rec(buf, 0) + 24, rd64(buf + rd64(sec_entry(buf, 2) + 8) + 8 + 232)));
    CORRUPT("cibefore.efm", EFC_EPROTO, "overlaps", /* col_idx before row_ptr */
            (wr64(sparse_rec(buf, 0) + 40, rd64(sparse_rec(buf, 0) + 24))));
    CORRUPT("count.efm", EFC_EPROTO, "section 'sparse'",
            wr32(buf + rd64(sec_entry(buf, 7) + 8), 3));
    /* the index arrays' contents: row_ptr is checked before the Rice stream is decoded with
     * its row lengths; a stream of one-bits runs past the last column (more in
     * test_efm_delta.c) */
    CORRUPT("rpdecr.efm", EFC_EPROTO, "'fc.w': row_ptr[2] = 1 after 2",
            wr32(buf + rd64(sparse_rec(buf, 0) + 24) + 4 * 2, 1));
    CORRUPT("colrange.efm", EFC_EPROTO, "'fc.w': Rice col_idx: row 0 entry 1 passes column 5",
            memset(buf + rd64(sparse_rec(buf, 0) + 40), 0xff, 2));
    /* a reader that skips the section (unknown kind, as older readers do) must refuse the
     * file: the sparse tensors' data entries no longer match their shapes */
    CORRUPT("ignored.efm", EFC_EPROTO, "shape needs", wr32(sec_entry(buf, 7), 9));
#undef CORRUPT
    efc_free(buf);
    efc_free(orig);
}

/* ---- col_idx encoding in the file ---- */

/* input [cols] -> Dense(W[2, cols] sparse, b[2]) -> output, with W's tensor (and so its
 * col_idx block) last in the data section. Non-zeros at columns 0, 5 and cols - 1 in row 0,
 * cols - 2 in row 1. */
static struct efc_model *wide_model(int32_t cols, int32_t *w_out)
{
    struct efc_model *m;
    int32_t x, w, b, y, d2 = 2, wd[2] = {2, 0}, in[3];
    float *wv;

    wd[1] = cols;
    assert_int_equal(efc_model_new(&m), EFC_OK);
    snprintf(m->name, sizeof(m->name), "wide");
    assert_int_equal(efc_model_add_tensor(m, "x", EFC_DTYPE_F32, 1, &cols, EFC_TENSOR_INPUT, &x),
                     EFC_OK);
    b = add_param(m, "fc.b", 1, &d2);
    w = add_param(m, "fc.w", 2, wd);
    assert_int_equal(efc_model_add_tensor(m, "y", EFC_DTYPE_F32, 1, &d2, EFC_TENSOR_OUTPUT, &y),
                     EFC_OK);
    wv = m->tensors[w].data;
    wv[0] = 1.0f;
    wv[5] = -2.0f;
    wv[cols - 1] = 3.0f;
    wv[(size_t)cols + (size_t)cols - 2] = 4.0f;
    in[0] = x, in[1] = w, in[2] = b;
    assert_int_equal(efc_model_add_node(m, EFC_OP_DENSE, "fc", in, 3, y, NULL, NULL), EFC_OK);
    assert_int_equal(efc_tensor_sparsify(m, w), EFC_OK);
    assert_int_equal(efc_model_check(m), EFC_OK);
    *w_out = w;
    return m;
}

static void expect_same_csr(const struct efc_sparse *a, const struct efc_sparse *b)
{
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    assert_int_equal(a->nnz, b->nnz);
    assert_memory_equal(a->row_ptr, b->row_ptr, ((size_t)a->rows + 1) * 4);
    assert_memory_equal(a->col_idx, b->col_idx, (size_t)a->nnz * 4);
}

/* Reference Rice encoder written from docs/format.md (not from efm.c): returns the stream's
 * bits and writes them into out (zeroed, large enough) unless out is NULL. */
static uint64_t ref_rice(const struct efc_sparse *s, uint8_t *out)
{
    uint64_t pos = 0;
    for (int32_t r = 0; r < s->rows; r++) {
        int32_t n = s->row_ptr[r + 1] - s->row_ptr[r], prev = -1;
        uint32_t k = 0;
        if (n == 0)
            continue;
        while (((uint32_t)(s->cols / n) >> (k + 1)) != 0) /* k = floor(log2(cols / n)) */
            k++;
        for (int32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++) {
            uint32_t v = (uint32_t)(s->col_idx[j] - prev - 1);
            uint64_t bits = (uint64_t)(v >> k) + 1 + k;
            prev = s->col_idx[j];
            for (uint64_t b = 0; out && b < bits; b++) {
                /* q one-bits, a zero-bit, then v's low k bits from the least significant */
                uint64_t q = v >> k;
                int one = b < q ? 1 : b == q ? 0 : (int)((v >> (b - q - 1)) & 1u);
                if (one)
                    out[(pos + b) / 8] |= (uint8_t)(1u << ((pos + b) % 8));
            }
            pos += bits;
        }
    }
    return pos;
}

/* buf (len bytes) ends with the col_idx block of sparse record 0: a copy with that block
 * re-encoded as i32 (enc 0) or u16 (enc 2), header flag set to match, sizes and checksum
 * fixed: what efc wrote before the Rice (enc 2) or the u16 (enc 0) encoding existed. */
static uint8_t *retail(const uint8_t *buf, size_t len, const struct efc_sparse *s, uint32_t enc,
                       size_t *out_len)
{
    uint8_t *rec = sparse_rec((uint8_t *)buf, 0), *o, *dsec;
    uint64_t ci_off = rd64(rec + 40), ci_bytes = rd64(rec + 48);
    uint64_t nb = (uint64_t)s->nnz * (enc == 2 ? 2 : 4), olen = ci_off + nb;

    assert_int_equal(ci_off + ci_bytes, len); /* col_idx is the file's tail */
    o = efc_calloc(1, (size_t)olen);
    assert_non_null(o);
    memcpy(o, buf, (size_t)ci_off);
    for (int32_t k = 0; k < s->nnz; k++) {
        if (enc == 2)
            wr16(o + ci_off + 2 * (uint64_t)k, (uint16_t)s->col_idx[k]);
        else
            wr32(o + ci_off + 4 * (uint64_t)k, (uint32_t)s->col_idx[k]);
    }
    wr32(o + 12, enc == 2 ? 1 : 0);
    wr64(o + 16, olen);
    wr32(sparse_rec(o, 0) + 20, enc);
    wr64(sparse_rec(o, 0) + 48, nb);
    dsec = sec_entry(o, 5);
    wr64(dsec + 16, rd64(dsec + 16) - ci_bytes + nb);
    rehash(o, (size_t)olen);
    *out_len = (size_t)olen;
    return o;
}

static void test_index_encoding(void **state)
{
    /* 9: Rice (2 bytes); 65535, 65536: u16 (8 bytes, Rice 9: one entry per 2^15 columns in
     * row 1); 65537, 70001: Rice (9 bytes, i32 16, u16 not possible) */
    static const int32_t cols[] = {9, 65535, 65536, 65537, 70001};
    (void)state;

    for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
        int32_t w;
        struct efc_model *m = wide_model(cols[c], &w), *l;
        const struct efc_sparse *s = m->tensors[w].sparse;
        uint64_t rice = (ref_rice(s, NULL) + 7) / 8, best = (uint64_t)s->nnz * 4;
        uint32_t want = 0;
        uint8_t *buf, *rec, ref[64] = {0};
        void *b2;
        size_t len, len2;

        if (cols[c] <= 65536 && (uint64_t)s->nnz * 2 < best) {
            want = 2;
            best = (uint64_t)s->nnz * 2;
        }
        if (rice < best) {
            want = 3;
            best = rice;
        }
        assert_int_equal(want, cols[c] == 65535 || cols[c] == 65536 ? 2u : 3u);
        assert_int_equal(efc_efm_encode(m, (void **)&buf, &len), EFC_OK);
        rec = sparse_rec(buf, 0);
        assert_int_equal(rd32(buf + 12), want == 2 ? 1 : 2); /* header flag */
        assert_int_equal(rd32(rec + 20), want);              /* col_idx encoding */
        assert_int_equal(rd64(rec + 48), best);
        assert_int_equal(efc_efm_tensor_file_bytes(&m->tensors[w]),
                         (size_t)s->nnz * 4 + 3 * 4 + (size_t)best);
        if (want == 3) { /* the block holds exactly the reference stream */
            assert_true(best <= sizeof(ref));
            (void)ref_rice(s, ref);
            assert_memory_equal(buf + rd64(rec + 40), ref, (size_t)best);
        }
        assert_int_equal(efc_efm_decode(buf, len, "wide.efm", &l), EFC_OK);
        expect_same_csr(l->tensors[w].sparse, s);
        assert_int_equal(l->tensors[w].sparse->col_idx[2], cols[c] - 1);
        assert_int_equal(l->tensors[w].sparse->owns_index, 1); /* decoded, not in place */
        assert_int_equal(efc_efm_encode(l, &b2, &len2), EFC_OK);
        assert_int_equal(len2, len);
        assert_memory_equal(b2, buf, len);
        efc_free(b2);
        efc_model_free(l);

        /* The same model as files written with the older encodings (i32: no flag; u16 where
         * it fits): they load (i32 in place) and re-encode to the writer's file. */
        for (uint32_t enc = 0; enc <= 2; enc += 2) {
            uint8_t *old;
            size_t olen;
            if (enc == 2 && cols[c] > 65536)
                continue;
            old = retail(buf, len, s, enc, &olen);
            assert_int_equal(efc_efm_decode(old, olen, "old.efm", &l), EFC_OK);
            assert_int_equal(l->tensors[w].sparse->owns_index, enc != 0);
            expect_same_csr(l->tensors[w].sparse, s);
            assert_int_equal(efc_efm_encode(l, &b2, &len2), EFC_OK);
            assert_int_equal(len2, len);
            assert_memory_equal(b2, buf, len);
            efc_free(b2);
            efc_model_free(l);
            efc_free(old);
        }
        if (cols[c] > 65536) { /* claiming u16 for more than 65536 columns */
            wr32(buf + 12, 1);
            wr32(rec + 20, 2);
            rehash(buf, len);
            expect_load("wide16.efm", buf, len, EFC_EPROTO, "u16 col_idx for");
        }
        efc_free(buf);
        efc_model_free(m);
    }

    /* a flag on a file without sparse tensors */
    for (uint32_t flag = 1; flag <= 2; flag++) {
        int32_t w;
        struct efc_model *m = small_model(0, &w);
        uint8_t *buf;
        size_t len;
        assert_int_equal(efc_model_densify(m), EFC_OK);
        assert_int_equal(efc_efm_encode(m, (void **)&buf, &len), EFC_OK);
        assert_int_equal(rd32(buf + 12), 0);
        wr32(buf + 12, flag);
        rehash(buf, len);
        expect_load("flagonly.efm", buf, len, EFC_EPROTO, "no sparse record uses it");
        efc_free(buf);
        efc_model_free(m);
    }
    /* the writer refuses an invalid in-memory CSR (out of range, unsorted, broken row_ptr)
     * instead of writing a file the loader would reject */
    {
        static const struct {
            int32_t k, v; /* col_idx[k] = v, or row_ptr[-k - 1] = v when k < 0 */
            const char *detail;
        } bad[] = {
            {0, 65536 + 1, "col_idx[0] = 65537"},
            {0, -1, "col_idx[0] = -1"},
            {3, 0, "row 2: col_idx[3] = 0 not after 0"}, /* duplicate */
            {4, 1, "row 2: col_idx[4] = 1 not after 2"}, /* unsorted */
            {-3, 1, "row_ptr[2] = 1"},
            {-1, 1, "row_ptr runs 1..6"},
        };
        for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
            int32_t w;
            struct efc_model *m = small_model(0, &w);
            void *buf = NULL;
            size_t len;
            if (bad[j].k >= 0)
                m->tensors[w].sparse->col_idx[bad[j].k] = bad[j].v;
            else
                m->tensors[w].sparse->row_ptr[-bad[j].k - 1] = bad[j].v;
            assert_int_equal(efc_efm_encode(m, &buf, &len), EFC_EINVAL);
            assert_null(buf);
            if (!strstr(efc_err_detail(), bad[j].detail))
                fail_msg("case %zu: detail '%s' lacks '%s'", j, efc_err_detail(), bad[j].detail);
            efc_err_clear();
            assert_int_equal(efc_efm_tensor_file_bytes(&m->tensors[w]), SIZE_MAX);
            assert_string_equal(efc_err_detail(), ""); /* a size query leaves it alone */
            efc_model_free(m);
        }
    }
}

/* Fail the k-th allocation for k = 1, 2, ... in decode, clone, sparsify and densify: ENOMEM
 * (with the tensor unchanged for sparsify / densify), never a crash or leak (ASan), until k is
 * past the last allocation. */
static void test_alloc_failures(void **state)
{
    size_t len;
    uint8_t *buf = encode_small(&len);
    int done = 0;
    (void)state;

    for (uint64_t k = 1; k < 200 && !done; k++) {
        struct efc_model *l = NULL, *c = NULL;
        enum efc_status st, st2;
        int32_t w;
        efc_alloc_fail_at(k);
        st = efc_efm_decode(buf, len, "oom.efm", &l);
        st2 = st ? st : efc_model_clone(l, &c);
        efc_alloc_fail_at(0);
        assert_true(st2 == EFC_OK || st2 == EFC_ENOMEM);
        if (st2 == EFC_OK) {
            assert_int_equal(efc_model_check(c), EFC_OK);
            done = 1;
        }
        efc_model_free(c);
        efc_model_free(l);

        l = small_model(0, &w); /* fc.w sparse, fc.b dense */
        efc_alloc_fail_at(k);
        st = efc_tensor_densify(l, w);
        st2 = efc_tensor_sparsify(l, w + 1);
        efc_alloc_fail_at(0);
        assert_true(st == EFC_OK || st == EFC_ENOMEM);
        assert_true(st2 == EFC_OK || st2 == EFC_ENOMEM);
        assert_true((st == EFC_OK) == (l->tensors[w].sparse == NULL));
        assert_true((st2 == EFC_OK) == (l->tensors[w + 1].sparse != NULL));
        assert_int_equal(efc_model_check(l), EFC_OK);
        done &= st == EFC_OK && st2 == EFC_OK;
        efc_model_free(l);
    }
    assert_true(done);
    efc_free(buf);
}

/* ---- the trainer densifies ---- */

static void test_train_densifies(void **state)
{
    struct efc_model *m;
    struct efc_dataset *d;
    struct efc_train_opts o;
    struct efc_train_report rep;
    struct efc_rng r;
    int32_t fc1;
    (void)state;

    assert_int_equal(efc_arch_build("lenet5", 9, &m), EFC_OK);
    fc1 = efc_model_find_tensor(m, "fc1.weight");
    threshold(m, fc1, 0.9);
    assert_int_equal(efc_tensor_sparsify(m, fc1), EFC_OK);

    d = efc_calloc(1, sizeof(*d));
    assert_non_null(d);
    d->n = 8;
    d->ndim = 3;
    d->dims[0] = 1, d->dims[1] = 28, d->dims[2] = 28;
    d->dtype = EFC_DTYPE_U8;
    d->n_classes = 10;
    snprintf(d->source, sizeof(d->source), "random");
    d->data = efc_malloc(8 * 784);
    d->labels = efc_malloc(8);
    assert_non_null(d->data);
    assert_non_null(d->labels);
    efc_rng_init(&r, 3);
    for (int32_t i = 0; i < 8 * 784; i++)
        ((uint8_t *)d->data)[i] = (uint8_t)efc_rng_below(&r, 256);
    for (int32_t i = 0; i < 8; i++)
        d->labels[i] = (uint8_t)(i % 10);

    efc_train_opts_default(&o);
    o.epochs = 1;
    o.batch = 8;
    o.progress = 0;
    assert_int_equal(efc_train(m, d, NULL, &o, &rep), EFC_OK);
    assert_true(isfinite(rep.final_loss));
    assert_null(m->tensors[fc1].sparse);
    assert_int_equal(m->tensors[fc1].owns_data, 1);
    /* dense now, and the step trained the zeros too (no mask without a hook): most of the
     * 90 % zeros got a gradient step */
    {
        const float *wt = m->tensors[fc1].data;
        size_t n = efc_tensor_numel(&m->tensors[fc1]), nonzero = 0;
        for (size_t i = 0; i < n; i++)
            nonzero += wt[i] != 0.0f;
        assert_true(nonzero > n / 2);
    }
    assert_int_equal(efc_model_check(m), EFC_OK);
    efc_dataset_free(d);
    efc_model_free(m);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/efc_test_sparse.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_shapes),
        cmocka_unit_test(test_sparsify_rejects),
        cmocka_unit_test(test_lenet5_file),
        cmocka_unit_test(test_check_rejects_malformed),
        cmocka_unit_test(test_load_small_and_corruptions),
        cmocka_unit_test(test_index_encoding),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_train_densifies),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
