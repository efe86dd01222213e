/* test_efm_delta.c — the Rice-coded gap ("delta") encoding of CSR column indices in .efm
 * files (docs/format.md, sparse section, col_idx encoding 3; model/efm.c).
 *
 * - Round trips: gaps at the Rice boundaries (v = 0, 2^k - 1, 2^k, 2^(k+1) - 1, 2^(k+1)), the
 *   byte-delta boundaries 255, 256, 510, 511, gaps of 65535 and more, empty rows (first,
 *   middle, last), a full row, the first and the last column, one-column tensors, random
 *   matrices from 0.5 % to 100 % dense: the block equals a reference encoder written from the
 *   spec, loads to the same CSR, re-encodes to the same bytes, densifies to the same values.
 * - efc_efm_tensor_file_bytes matches what the writer stores.
 * - Corrupted streams and records: truncated, too long, an empty block, a set padding bit, a
 *   quotient or a remainder past the last column, row_ptr inconsistent with the stream: each
 *   refused with EPROTO and a detail naming the file, section 'sparse', the tensor and the
 *   fault (through efc_efm_load and efc_efm_decode).
 * - Every single-bit flip and every shorter length of a stream: refused or decoded to a valid
 *   CSR that re-encodes to the flipped bytes (the code is canonical); never a crash (ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "efm_bytes.h"

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "common/efc_rng.h"
#include "common/efc_sha256.h"
#include "model/efm.h"

static char tmpdir[256];

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

/* Write buf as tmpdir/name, load it, expect `want` and a detail naming the file, section
 * 'sparse' and containing `what`; the buffer decoder must agree. */
static void expect_load(const char *name, const void *buf, size_t len, enum efc_status want,
                        const char *what)
{
    char path[512];
    struct efc_model *m = (struct efc_model *)1;
    enum efc_status st;
    int k = snprintf(path, sizeof(path), "%s/%s", tmpdir, name);

    assert_true(k > 0 && (size_t)k < sizeof(path));
    assert_int_equal(efc_fs_write_atomic(path, buf, len), EFC_OK);
    efc_err_clear();
    st = efc_efm_load(path, &m);
    if (st != want)
        fail_msg("%s: got %s, want %s (%s)", name, efc_status_str(st), efc_status_str(want),
                 efc_err_detail());
    assert_null(m);
    if (!strstr(efc_err_detail(), path) || !strstr(efc_err_detail(), "section 'sparse'") ||
        !strstr(efc_err_detail(), what))
        fail_msg("%s: detail '%s' lacks the path, the section or '%s'", name, efc_err_detail(),
                 what);
    st = efc_efm_decode(buf, len, name, &m);
    assert_int_equal(st, want);
    assert_non_null(strstr(efc_err_detail(), what));
    unlink(path);
}

/* ---- models ---- */

/* input [cols] -> Dense(W[rows, cols] CSR, b[rows]) -> output. W holds non-zeros at the
 * (row, col) pairs of ent (n pairs, rows in order, columns increasing within a row); b comes
 * after W, so W's col_idx block is followed by b's data (64-byte aligned, zero padding in
 * between) rather than ending the file. */
static struct efc_model *csr_model(int32_t rows, int32_t cols, const int32_t (*ent)[2], size_t n,
                                   int32_t *w_out)
{
    struct efc_model *m;
    int32_t x, w, b, y, wd[2], in[3];
    float *wv;

    wd[0] = rows;
    wd[1] = cols;
    assert_int_equal(efc_model_new(&m), EFC_OK);
    snprintf(m->name, sizeof(m->name), "rice");
    assert_int_equal(efc_model_add_tensor(m, "x", EFC_DTYPE_F32, 1, &cols, EFC_TENSOR_INPUT, &x),
                     EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "fc.w", EFC_DTYPE_F32, 2, wd, EFC_TENSOR_PARAM, &w),
                     EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "fc.b", EFC_DTYPE_F32, 1, &rows, EFC_TENSOR_PARAM, &b),
                     EFC_OK);
    assert_int_equal(efc_model_add_tensor(m, "y", EFC_DTYPE_F32, 1, &rows, EFC_TENSOR_OUTPUT, &y),
                     EFC_OK);
    wv = m->tensors[w].data;
    for (size_t i = 0; i < n; i++) {
        assert_true(ent[i][0] >= 0 && ent[i][0] < rows && ent[i][1] >= 0 && ent[i][1] < cols);
        wv[(size_t)ent[i][0] * (size_t)cols + (size_t)ent[i][1]] =
            1.0f + (float)ent[i][0] + (float)ent[i][1] / 1024.0f;
    }
    ((float *)m->tensors[b].data)[0] = 0.5f;
    in[0] = x, in[1] = w, in[2] = b;
    assert_int_equal(efc_model_add_node(m, EFC_OP_DENSE, "fc", in, 3, y, NULL, NULL), EFC_OK);
    assert_int_equal(efc_tensor_sparsify(m, w), EFC_OK);
    assert_int_equal(m->tensors[w].sparse->nnz, (int32_t)n);
    assert_int_equal(efc_model_check(m), EFC_OK);
    *w_out = w;
    return m;
}

/* Random W[rows, cols] with about pct_x10 / 10 % non-zeros (at least one per tensor). */
static struct efc_model *random_model(int32_t rows, int32_t cols, uint32_t pct_x10, uint64_t seed,
                                      int32_t *w_out)
{
    struct efc_rng r;
    int32_t(*ent)[2] = efc_malloc((size_t)rows * (size_t)cols * sizeof(*ent));
    size_t n = 0;
    struct efc_model *m;

    assert_non_null(ent);
    efc_rng_init(&r, seed);
    for (int32_t i = 0; i < rows; i++)
        for (int32_t c = 0; c < cols; c++)
            if (efc_rng_below(&r, 1000) < pct_x10) {
                ent[n][0] = i;
                ent[n][1] = c;
                n++;
            }
    if (n == 0) {
        ent[0][0] = rows - 1;
        ent[0][1] = cols - 1;
        n = 1;
    }
    m = csr_model(rows, cols, (const int32_t(*)[2])ent, n, w_out);
    efc_free(ent);
    return m;
}

/* ---- reference encoder, written from docs/format.md (not from efm.c) ---- */

/* Rice parameter of a row of n entries: the largest k with 2^k <= floor(cols / n). */
static uint32_t ref_k(int32_t cols, int32_t n)
{
    uint32_t q = (uint32_t)(cols / n), k = 0;
    while ((2ull << k) <= q)
        k++;
    return k;
}

/* Returns the stream's bits; writes the stream into out (zeroed, large enough) if non-NULL. */
static uint64_t ref_rice(const struct efc_sparse *s, uint8_t *out)
{
    uint64_t pos = 0;
#define PUT(bit)                                                                                   \
    do {                                                                                           \
        if (out && (bit))                                                                          \
            out[pos / 8] |= (uint8_t)(1u << (pos % 8));                                            \
        pos++;                                                                                     \
    } while (0)
    for (int32_t r = 0; r < s->rows; r++) {
        int32_t n = s->row_ptr[r + 1] - s->row_ptr[r];
        int64_t prev = -1;
        uint32_t k;
        if (n == 0)
            continue;
        k = ref_k(s->cols, n);
        for (int32_t j = s->row_ptr[r]; j < s->row_ptr[r + 1]; j++) {
            uint64_t v = (uint64_t)(s->col_idx[j] - prev - 1);
            for (uint64_t q = 0; q < v >> k; q++)
                PUT(1);
            PUT(0);
            for (uint32_t b = 0; b < k; b++)
                PUT((v >> b) & 1u);
            prev = s->col_idx[j];
        }
    }
#undef PUT
    return pos;
}

/* ---- round trips ---- */

/* Encodes m (W = tensor w, expected col_idx encoding want_enc), checks the record and, for
 * Rice, the block against the reference; decodes, compares the CSR and the values, re-encodes
 * to the same bytes. Returns the col_idx block's size. */
static uint64_t round_trip(const struct efc_model *m, int32_t w, uint32_t want_enc,
                           const char *what)
{
    const struct efc_sparse *s = m->tensors[w].sparse;
    struct efc_model *l;
    uint8_t *buf, *rec;
    void *b2;
    size_t len, len2;
    uint64_t ci_bytes;

    assert_int_equal(efc_efm_encode(m, (void **)&buf, &len), EFC_OK);
    rec = sparse_rec(buf, 0);
    if (rd32(rec + 20) != want_enc)
        fail_msg("%s: col_idx encoding %u, want %u", what, rd32(rec + 20), want_enc);
    assert_int_equal(rd32(buf + 12), want_enc == 3 ? 2u : want_enc == 2 ? 1u : 0u);
    ci_bytes = rd64(rec + 48);
    assert_int_equal(efc_efm_tensor_file_bytes(&m->tensors[w]),
                     (size_t)s->nnz * 4 + ((size_t)s->rows + 1) * 4 + (size_t)ci_bytes);
    if (want_enc == 3) {
        uint64_t bits = ref_rice(s, NULL);
        uint8_t *ref = efc_calloc(1, (size_t)(bits + 7) / 8 + 1);
        assert_non_null(ref);
        (void)ref_rice(s, ref);
        assert_int_equal(ci_bytes, (bits + 7) / 8);
        assert_memory_equal(buf + rd64(rec + 40), ref, (size_t)ci_bytes);
        efc_free(ref);
    }
    if (efc_efm_decode(buf, len, what, &l) != EFC_OK)
        fail_msg("%s: %s", what, efc_err_detail());
    {
        const struct efc_sparse *ls = l->tensors[w].sparse;
        assert_non_null(ls);
        assert_int_equal(ls->rows, s->rows);
        assert_int_equal(ls->cols, s->cols);
        assert_int_equal(ls->nnz, s->nnz);
        assert_memory_equal(ls->row_ptr, s->row_ptr, ((size_t)s->rows + 1) * 4);
        if (s->nnz)
            assert_memory_equal(ls->col_idx, s->col_idx, (size_t)s->nnz * 4);
        assert_int_equal(ls->owns_index, want_enc != 0);
        assert_memory_equal(l->tensors[w].data, m->tensors[w].data, (size_t)s->nnz * 4);
    }
    assert_int_equal(efc_efm_encode(l, &b2, &len2), EFC_OK);
    assert_int_equal(len2, len);
    assert_memory_equal(b2, buf, len);
    efc_free(b2);
    /* densified, the loaded model equals the original dense weights */
    {
        struct efc_model *c;
        assert_int_equal(efc_model_clone(m, &c), EFC_OK);
        assert_int_equal(efc_model_densify(c), EFC_OK);
        assert_int_equal(efc_model_densify(l), EFC_OK);
        assert_memory_equal(l->tensors[w].data, c->tensors[w].data,
                            efc_tensor_bytes(&c->tensors[w]));
        efc_model_free(c);
    }
    efc_model_free(l);
    efc_free(buf);
    return ci_bytes;
}

static void test_gap_boundaries(void **state)
{
    /* row 0: n = 5 in 2000 columns, k = floor(log2(400)) = 8: v = 0, 255 (2^k - 1), 256 (2^k),
     * 511 (2^(k+1) - 1), 512 (2^(k+1)); row 1: gaps 255, 256, 510, 511 (the byte-delta
     * boundaries; k = 8 again); row 2 empty; row 3: the last column alone (k = 10, v = 1999:
     * q = 1, remainder 975); row 4: columns 0 and 1999 */
    static const int32_t a[][2] = {{0, 0},   {0, 256},  {0, 513},  {0, 1025}, {0, 1538}, {1, 254},
                                   {1, 510}, {1, 1020}, {1, 1531}, {3, 1999}, {4, 0},    {4, 1999}};
    /* gaps of 65535 and more: 70000 columns (u16 impossible), k = 14 for n = 3 (v = 65535:
     * q = 3, remainder 2^14 - 1) and 16 for n = 1 (v = 69999: q = 1); first row empty */
    static const int32_t b[][2] = {{1, 0}, {1, 65536}, {1, 69999}, {2, 69999}, {3, 0}};
    /* one gap of 199999 columns (v >> k = 3 with k = 16) */
    static const int32_t c[][2] = {{0, 0}, {0, 199999}, {1, 131071}};
    /* a full row of 37 (k = 0: one bit per entry), an empty one, first column, last column,
     * and a last row that is empty */
    int32_t d[37 + 2][2];
    /* one column: every row empty or holding column 0 (k = 0) */
    static const int32_t e[][2] = {{1, 0}, {2, 0}, {4, 0}};
    int32_t w;
    struct efc_model *m;
    uint64_t bytes;
    (void)state;

    m = csr_model(5, 2000, a, sizeof(a) / sizeof(a[0]), &w);
    bytes = round_trip(m, w, 3, "boundaries.efm");
    print_message("boundaries: 12 entries in %llu bytes (u16: 24)\n", (unsigned long long)bytes);
    efc_model_free(m);

    m = csr_model(4, 70000, b, sizeof(b) / sizeof(b[0]), &w);
    (void)round_trip(m, w, 3, "gap65536.efm");
    efc_model_free(m);
    m = csr_model(2, 200000, c, sizeof(c) / sizeof(c[0]), &w);
    (void)round_trip(m, w, 3, "gap199999.efm");
    efc_model_free(m);

    for (int32_t j = 0; j < 37; j++) {
        d[j][0] = 0;
        d[j][1] = j;
    }
    d[37][0] = 2, d[37][1] = 0;
    d[38][0] = 3, d[38][1] = 36;
    m = csr_model(5, 37, (const int32_t(*)[2])d, 39, &w);
    bytes = round_trip(m, w, 3, "fullrow.efm");
    /* 37 one-bit codes, then row 2: k = 5, v = 0; row 3: k = 5, v = 36 (q = 1) */
    assert_int_equal(bytes, (37 + 6 + 7 + 7) / 8);
    efc_model_free(m);

    m = csr_model(5, 1, e, sizeof(e) / sizeof(e[0]), &w);
    assert_int_equal(round_trip(m, w, 3, "onecol.efm"), 1);
    efc_model_free(m);

    /* nnz = 0: every encoding is 0 bytes; the writer keeps i32 and sets no flag */
    m = csr_model(3, 10, a, 0, &w);
    assert_int_equal(round_trip(m, w, 0, "empty.efm"), 0);
    efc_model_free(m);
}

/* Random shapes and densities, each against the reference and byte-identical re-saves. */
static void test_random(void **state)
{
    static const struct {
        int32_t rows, cols;
    } shapes[] = {{1, 1}, {3, 7}, {17, 33}, {64, 1000}, {120, 400}, {5, 4097}};
    static const uint32_t pct_x10[] = {5, 50, 100, 200, 500, 900, 1000};
    (void)state;

    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        for (size_t p = 0; p < sizeof(pct_x10) / sizeof(pct_x10[0]); p++) {
            char what[64];
            int32_t w;
            uint64_t seed = 1000 * s + p;
            struct efc_model *m =
                random_model(shapes[s].rows, shapes[s].cols, pct_x10[p], seed, &w);
            const struct efc_sparse *sp = m->tensors[w].sparse;
            uint64_t rice = (ref_rice(sp, NULL) + 7) / 8;
            uint32_t want = 0;
            uint64_t best = (uint64_t)sp->nnz * 4;
            if ((uint64_t)sp->nnz * 2 < best) {
                want = 2;
                best = (uint64_t)sp->nnz * 2;
            }
            if (rice < best)
                want = 3;
            snprintf(what, sizeof(what), "random-%dx%d-%u-seed%llu.efm", shapes[s].rows,
                     shapes[s].cols, pct_x10[p], (unsigned long long)seed);
            (void)round_trip(m, w, want, what);
            efc_model_free(m);
        }
}

static void test_file_bytes(void **state)
{
    int32_t w;
    struct efc_model *m = random_model(9, 50, 300, 7, &w);
    (void)state;
    /* dense parameter: its dense bytes; activation: 0 */
    assert_int_equal(efc_efm_tensor_file_bytes(&m->tensors[w + 1]), 9 * 4);
    assert_int_equal(efc_efm_tensor_file_bytes(&m->tensors[0]), 0);
    assert_int_equal(efc_efm_tensor_file_bytes(NULL), 0);
    assert_int_equal(efc_efm_tensor_file_bytes(&m->tensors[w]),
                     (size_t)m->tensors[w].sparse->nnz * 4 + 10 * 4 +
                         (size_t)(ref_rice(m->tensors[w].sparse, NULL) + 7) / 8);
    efc_model_free(m);
}

/* ---- corrupted streams ---- */

/* W[4, 100]: row 0 columns 3, 40, 41, 99; row 1 empty; row 2 column 0; row 3 columns 50, 98.
 * k = 4, -, 6, 5. Stream bits: row 0 v = 3, 36, 0, 57 at [0, 5), [5, 12), [12, 17), [17, 25)
 * (the last: q = 3 one-bits, a zero-bit, remainder 9 at bits 21..24); row 2 v = 0 at
 * [25, 32); row 3 v = 50, 47 at [32, 39), [39, 46); 2 padding bits. */
static uint8_t *corrupt_base(size_t *len, uint64_t *ci_off, uint64_t *ci_bytes, uint64_t *bits)
{
    static const int32_t ent[][2] = {{0, 3}, {0, 40}, {0, 41}, {0, 99}, {2, 0}, {3, 50}, {3, 98}};
    int32_t w;
    struct efc_model *m = csr_model(4, 100, ent, sizeof(ent) / sizeof(ent[0]), &w);
    uint8_t *buf;

    *bits = ref_rice(m->tensors[w].sparse, NULL);
    assert_int_equal(efc_efm_encode(m, (void **)&buf, len), EFC_OK);
    efc_model_free(m);
    assert_int_equal(rd32(sparse_rec(buf, 0) + 20), 3);
    *ci_off = rd64(sparse_rec(buf, 0) + 40);
    *ci_bytes = rd64(sparse_rec(buf, 0) + 48);
    assert_int_equal(*ci_bytes, (*bits + 7) / 8);
    assert_true(*bits % 8 != 0); /* there are padding bits to corrupt */
    return buf;
}

static void test_corruptions(void **state)
{
    size_t len;
    uint64_t ci_off, ci_bytes, bits, rp_off;
    uint8_t *orig = corrupt_base(&len, &ci_off, &ci_bytes, &bits), *buf = efc_malloc(len);
    uint8_t *rec;
    (void)state;
    assert_non_null(buf);
    rp_off = rd64(sparse_rec(orig, 0) + 24);

#define CORRUPT(name, what, stmt)                                                                  \
    do {                                                                                           \
        memcpy(buf, orig, len);                                                                    \
        rec = sparse_rec(buf, 0);                                                                  \
        stmt;                                                                                      \
        rehash(buf, len);                                                                          \
        expect_load(name, buf, len, EFC_EPROTO, what);                                             \
    } while (0)

    /* the length field: one byte short, one byte long (zero padding follows), empty */
    CORRUPT("short.efm", "'fc.w': Rice col_idx ends in row 3 (entry 2 of 2): truncated",
            wr64(rec + 48, ci_bytes - 1));
    CORRUPT("long.efm", "trailing bytes", wr64(rec + 48, ci_bytes + 1));
    CORRUPT("empty.efm", "cannot hold 7 entries", wr64(rec + 48, 0));
    /* the block moved onto row_ptr */
    CORRUPT("overlap.efm", "col_idx offset", wr64(rec + 40, rp_off));
    /* the stream's contents */
    CORRUPT("padding.efm", "padding bit",
            buf[ci_off + ci_bytes - 1] |= (uint8_t)(0x80u)); /* bit 7 of the last byte */
    CORRUPT("ones.efm", "'fc.w': Rice col_idx: row 0 entry 1 passes column 99",
            memset(buf + ci_off, 0xff, (size_t)ci_bytes));
    /* row 0 entry 4: remainder 9 -> 15 (bits 22 and 23 set): column 41 + 1 + 48 + 15 = 105;
     * its quotient passed (48 <= 100 - 2 - 41), the remainder is refused */
    CORRUPT("rem.efm", "'fc.w': Rice col_idx: row 0 entry 4 is column 105 (100 columns)",
            buf[ci_off + 2] |= 0xc0);
    /* row_ptr inconsistent with the stream or the shape (checked before decoding) */
    CORRUPT("rp0.efm", "'fc.w': row_ptr[0] = 1, must be 0", wr32(buf + rp_off, 1));
    CORRUPT("rplong.efm", "'fc.w': row_ptr[1] = 101 after 0",
            (wr32(buf + rp_off + 4, 101), wr32(buf + rp_off + 8, 101)));
    CORRUPT("rpdecr.efm", "'fc.w': row_ptr[2] = 3 after 4", wr32(buf + rp_off + 8, 3));
    CORRUPT("rpend.efm", "'fc.w': row_ptr[4] = 6, nnz 7", wr32(buf + rp_off + 16, 6));
    /* an entry moved from row 3 to row 2: the rows' k change (5 and 6 instead of 6 and 5), the
     * stream decodes to columns 0, 10 and 59 and ends after 44 bits, where bit 44 (a
     * remainder bit of the original last entry) reads as a set padding bit */
    CORRUPT("rpmove.efm", "'fc.w': Rice col_idx: padding bit 44 is set",
            wr32(buf + rp_off + 12, 6));
#undef CORRUPT

    /* every shorter length: refused (truncated, or too few bits for the entries) */
    for (uint64_t l = 0; l < ci_bytes; l++) {
        struct efc_model *m = (struct efc_model *)1;
        memcpy(buf, orig, len);
        wr64(sparse_rec(buf, 0) + 48, l);
        rehash(buf, len);
        assert_int_equal(efc_efm_decode(buf, len, "len.efm", &m), EFC_EPROTO);
        assert_null(m);
        assert_true(strstr(efc_err_detail(), "truncated") ||
                    strstr(efc_err_detail(), "cannot hold"));
    }
    efc_free(buf);
    efc_free(orig);
}

/* Every single-bit flip of the stream of a random 6 x 45 tensor: refused with EPROTO, or a
 * valid CSR that re-encodes to exactly the flipped file (one code per gap). */
static void test_bit_flips(void **state)
{
    int32_t w;
    struct efc_model *m = random_model(6, 45, 150, 99, &w);
    uint8_t *orig, *buf;
    size_t len;
    uint64_t ci_off, ci_bytes;
    int n_ok = 0, n_bad = 0;
    (void)state;

    assert_int_equal(efc_efm_encode(m, (void **)&orig, &len), EFC_OK);
    efc_model_free(m);
    assert_int_equal(rd32(sparse_rec(orig, 0) + 20), 3);
    ci_off = rd64(sparse_rec(orig, 0) + 40);
    ci_bytes = rd64(sparse_rec(orig, 0) + 48);
    buf = efc_malloc(len);
    assert_non_null(buf);
    for (uint64_t bit = 0; bit < ci_bytes * 8; bit++) {
        struct efc_model *l = NULL;
        enum efc_status st;
        memcpy(buf, orig, len);
        buf[ci_off + bit / 8] ^= (uint8_t)(1u << (bit % 8));
        rehash(buf, len);
        st = efc_efm_decode(buf, len, "flip.efm", &l);
        if (st == EFC_OK) {
            void *b2;
            size_t len2;
            n_ok++;
            assert_int_equal(efc_efm_encode(l, &b2, &len2), EFC_OK);
            if (len2 != len || memcmp(b2, buf, len) != 0)
                fail_msg("bit %llu: decoded, but re-encodes differently", (unsigned long long)bit);
            efc_free(b2);
            efc_model_free(l);
        } else {
            n_bad++;
            if (st != EFC_EPROTO || !strstr(efc_err_detail(), "flip.efm"))
                fail_msg("bit %llu: %s (%s)", (unsigned long long)bit, efc_status_str(st),
                         efc_err_detail());
        }
    }
    print_message("%llu bits flipped: %d decode to another valid CSR, %d refused\n",
                  (unsigned long long)ci_bytes * 8, n_ok, n_bad);
    assert_true(n_bad > 0);
    efc_free(buf);
    efc_free(orig);
}

/* Fail each allocation of decoding a Rice file in turn: ENOMEM, no leak (ASan). */
static void test_alloc_failures(void **state)
{
    int32_t w;
    struct efc_model *m = random_model(7, 30, 300, 5, &w);
    void *buf;
    size_t len;
    int done = 0;
    (void)state;

    assert_int_equal(efc_efm_encode(m, &buf, &len), EFC_OK);
    efc_model_free(m);
    for (uint64_t k = 1; k < 100 && !done; k++) {
        struct efc_model *l = NULL;
        enum efc_status st;
        efc_alloc_fail_at(k);
        st = efc_efm_decode(buf, len, "oom.efm", &l);
        efc_alloc_fail_at(0);
        assert_true(st == EFC_OK || st == EFC_ENOMEM);
        done = st == EFC_OK;
        efc_model_free(l);
    }
    assert_true(done);
    efc_free(buf);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/efc_test_efm_delta.XXXXXX");
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
        cmocka_unit_test(test_gap_boundaries), cmocka_unit_test(test_random),
        cmocka_unit_test(test_file_bytes),     cmocka_unit_test(test_corruptions),
        cmocka_unit_test(test_bit_flips),      cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
