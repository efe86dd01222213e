/* sparse.c — sparse formats (CSR, N:M) and the reference sparse kernels (sparse.h), plus the
 * helpers every variant's packer shares (pattern check, SELL-W builder).
 *
 * The reference stores the canonical layouts of sparse.h and loops over them plainly: it is the
 * definition the SIMD variants are tested against (FP32 within the sum|terms| bound, INT8
 * bit-exact). FP32 sums run in the stored order, in float. INT8 sums run in uint32 from the
 * folded bias (two's-complement wrap, as efc_k_qgemm_u8s8__ref), so any order is bit-exact.
 */
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_status.h"
#include "kernels/sparse.h"

/* ------------------------------------------------------------------------- shared helpers */

void efc_spmm_w_fini(struct efc_spmm_w *w)
{
    if (!w)
        return;
    efc_free(w->packed);
    efc_free(w->bias);
    w->packed = NULL;
    w->bias = NULL;
}

size_t efc_k_spmm_f32_scratch(int32_t out, int32_t in, int32_t n)
{
    if (n <= 1 || out < 1 || in < 1)
        return 0;
    const size_t nb = n < EFC_SPMM_NB ? (size_t)n : EFC_SPMM_NB;
    return nb * ((size_t)in + (size_t)out);
}

static int nz_f32(const void *w, int64_t e)
{
    return ((const float *)w)[e] != 0.0f;
}

static int nz_s8(const void *w, int64_t e)
{
    return ((const int8_t *)w)[e] != 0;
}

static int fmt_is_nm(const struct efc_sp_fmt *fmt)
{
    return fmt != NULL && (fmt->nm_n != 0 || fmt->nm_m != 0);
}

/* Shape, format and pattern; counts the non-zeros into *nnz. */
static enum efc_status check_common(int32_t out, int32_t in, const void *w,
                                    int (*nz)(const void *, int64_t), const struct efc_sp_fmt *fmt,
                                    int64_t *nnz)
{
    if (out < 1 || in < 1)
        return efc_errf(EFC_EINVAL, "sparse: shape out=%d in=%d (both must be >= 1)", (int)out,
                        (int)in);
    if (w == NULL)
        return efc_errf(EFC_EINVAL, "sparse: no weights");
    const int nm = fmt_is_nm(fmt);
    if (nm && !(fmt->nm_n >= 1 && fmt->nm_n < fmt->nm_m && fmt->nm_m <= 4))
        return efc_errf(EFC_EINVAL, "sparse: pattern %d:%d unsupported (1 <= N < M <= 4)",
                        (int)fmt->nm_n, (int)fmt->nm_m);
    int64_t count = 0;
    for (int32_t j = 0; j < out; j++) {
        const int64_t row = (int64_t)j * in;
        if (!nm) {
            for (int32_t k = 0; k < in; k++)
                count += nz(w, row + k);
            continue;
        }
        for (int32_t k0 = 0; k0 < in; k0 += fmt->nm_m) {
            const int32_t k1 = in - k0 < fmt->nm_m ? in : k0 + fmt->nm_m;
            int32_t c = 0;
            for (int32_t k = k0; k < k1; k++)
                c += nz(w, row + k);
            if (c > fmt->nm_n)
                return efc_errf(EFC_EINVAL,
                                "sparse: row %d group %d (columns %d..%d) has %d non-zeros, "
                                "%d:%d allows %d",
                                (int)j, (int)(k0 / fmt->nm_m), (int)k0, (int)(k1 - 1), (int)c,
                                (int)fmt->nm_n, (int)fmt->nm_m, (int)fmt->nm_n);
            count += c;
        }
    }
    if (count > INT32_MAX)
        return efc_errf(EFC_EINVAL, "sparse: %lld non-zeros (at most 2^31 - 1)", (long long)count);
    *nnz = count;
    return EFC_OK;
}

enum efc_status efc_sp_check_f32(int32_t out, int32_t in, const float *w,
                                 const struct efc_sp_fmt *fmt)
{
    int64_t nnz;
    return check_common(out, in, w, nz_f32, fmt, &nnz);
}

enum efc_status efc_sp_check_s8(int32_t out, int32_t in, const int8_t *w,
                                const struct efc_sp_fmt *fmt)
{
    int64_t nnz;
    return check_common(out, in, w, nz_s8, fmt, &nnz);
}

static void begin_fill(int32_t out, int32_t in, const struct efc_sp_fmt *fmt, int64_t nnz,
                       struct efc_spmm_w *pw)
{
    pw->out = out;
    pw->in = in;
    pw->nnz = nnz;
    if (fmt_is_nm(fmt)) {
        pw->nm_n = fmt->nm_n;
        pw->nm_m = fmt->nm_m;
    }
}

enum efc_status efc_sp_pack_begin_f32(int32_t out, int32_t in, const float *w,
                                      const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw)
{
    int64_t nnz = 0;
    memset(pw, 0, sizeof(*pw));
    enum efc_status st = check_common(out, in, w, nz_f32, fmt, &nnz);
    if (st == EFC_OK)
        begin_fill(out, in, fmt, nnz, pw);
    return st;
}

enum efc_status efc_sp_pack_begin_s8(int32_t out, int32_t in, const int8_t *w, const int32_t *bias,
                                     int32_t zp_x, const struct efc_sp_fmt *fmt,
                                     struct efc_spmm_w *pw)
{
    int64_t nnz = 0;
    memset(pw, 0, sizeof(*pw));
    if (zp_x < 0 || zp_x > 255)
        return efc_errf(EFC_EINVAL, "sparse: zp_x=%d outside 0..255", (int)zp_x);
    enum efc_status st = check_common(out, in, w, nz_s8, fmt, &nnz);
    if (st != EFC_OK)
        return st;
    pw->bias = efc_malloc((size_t)out * sizeof(int32_t));
    if (pw->bias == NULL)
        return efc_errf(EFC_ENOMEM, "sparse: bias of %d channels", (int)out);
    efc_k_qgemm_fold_bias(out, in, w, bias, zp_x, pw->bias);
    begin_fill(out, in, fmt, nnz, pw);
    return EFC_OK;
}

/* SELL-W as described in sparse.h, with per slot the dense index of its value (-1: padding). */
struct sell {
    int32_t n_panels, n_steps;
    int32_t *panel_step, *step_off;
    uint8_t *idx;
    int64_t *src;
};

static void sell_fini(struct sell *s)
{
    efc_free(s->panel_step);
    efc_free(s->step_off);
    efc_free(s->idx);
    efc_free(s->src);
    memset(s, 0, sizeof(*s));
}

static enum efc_status sell_build(int32_t out, int32_t in, int32_t lanes, int32_t win,
                                  int32_t slots, int (*nz)(const void *, int64_t), const void *w,
                                  struct sell *s)
{
    const int32_t n_seg = (in + win - 1) / win, per = lanes * slots;
    int32_t cnt[64];
    int64_t total = 0;
    memset(s, 0, sizeof(*s));
    s->n_panels = (out + lanes - 1) / lanes;

    /* Pass 1: steps per panel. */
    s->panel_step = efc_malloc(((size_t)s->n_panels + 1) * sizeof(int32_t));
    if (s->panel_step == NULL)
        goto nomem;
    for (int32_t p = 0; p < s->n_panels; p++) {
        s->panel_step[p] = (int32_t)total;
        for (int32_t g = 0; g < n_seg; g++) {
            const int32_t k0 = g * win, k1 = in - k0 < win ? in : k0 + win;
            int32_t mx = 0;
            for (int32_t l = 0; l < lanes && p * lanes + l < out; l++) {
                const int64_t row = (int64_t)(p * lanes + l) * in;
                int32_t c = 0;
                for (int32_t k = k0; k < k1; k++)
                    c += nz(w, row + k);
                mx = c > mx ? c : mx;
            }
            total += (mx + slots - 1) / slots;
        }
        if (total > INT32_MAX / 64) {
            sell_fini(s);
            return efc_errf(EFC_EINVAL, "sparse: layout of %lld steps too large", (long long)total);
        }
    }
    s->panel_step[s->n_panels] = (int32_t)total;
    s->n_steps = (int32_t)total;

    /* Pass 2: fill. */
    const size_t ns = total > 0 ? (size_t)total : 1;
    s->step_off = efc_malloc(ns * sizeof(int32_t));
    s->idx = efc_calloc(ns * (size_t)per, 1);
    s->src = efc_malloc(ns * (size_t)per * sizeof(int64_t));
    if (s->step_off == NULL || s->idx == NULL || s->src == NULL)
        goto nomem;
    for (size_t i = 0; i < ns * (size_t)per; i++)
        s->src[i] = -1;
    int32_t t = 0;
    for (int32_t p = 0; p < s->n_panels; p++) {
        for (int32_t g = 0; g < n_seg; g++) {
            const int32_t k0 = g * win, k1 = in - k0 < win ? in : k0 + win;
            const int32_t off = in < win ? 0 : (in - win < k0 ? in - win : k0);
            int32_t mx = 0;
            for (int32_t l = 0; l < lanes; l++) {
                const int32_t j = p * lanes + l;
                cnt[l] = 0;
                if (j >= out)
                    continue;
                for (int32_t k = k0; k < k1; k++) {
                    const int64_t e = (int64_t)j * in + k;
                    if (!nz(w, e))
                        continue;
                    const int32_t step = t + cnt[l] / slots;
                    const size_t at = (size_t)step * per + (size_t)l * slots + cnt[l] % slots;
                    s->idx[at] = (uint8_t)(k - off);
                    s->src[at] = e;
                    cnt[l]++;
                }
                mx = cnt[l] > mx ? cnt[l] : mx;
            }
            const int32_t nst = (mx + slots - 1) / slots;
            for (int32_t q = 0; q < nst; q++)
                s->step_off[t + q] = off;
            t += nst;
        }
    }
    return EFC_OK;
nomem:
    sell_fini(s);
    return efc_errf(EFC_ENOMEM, "sparse: SELL layout of %d x %d", (int)out, (int)in);
}

static size_t take(size_t *total, size_t bytes)
{
    size_t o = (*total + 63) & ~(size_t)63;
    *total = o + bytes;
    return o;
}

/* Where EFC_SP_ORDER_UNPACK puts natural position p of a step of `per` bytes (sparse.h). */
static size_t unpack_pos(size_t p, size_t per)
{
    const size_t lane = p / 16, b = p % 16;
    return b < 8 ? 8 * lane + b : per / 2 + 8 * lane + b - 8;
}

/* The SELL header + arrays in one block; FP32 (esz 4) also gets the CSR. */
static enum efc_status pack_simd(const void *w, size_t esz, int (*nz)(const void *, int64_t),
                                 int32_t lanes, int32_t win, int32_t slots, enum efc_sp_order order,
                                 enum efc_isa isa, struct efc_spmm_w *pw)
{
    struct sell s;
    const int32_t out = pw->out, in = pw->in, per = lanes * slots;
    const int csr = esz == sizeof(float);
    enum efc_status st = sell_build(out, in, lanes, win, slots, nz, w, &s);
    if (st != EFC_OK)
        return st;
    size_t total = 0;
    const size_t nsl = (size_t)s.n_steps * (size_t)per;
    const size_t o_hdr = take(&total, sizeof(struct efc_sp_simd));
    const size_t o_ps = take(&total, ((size_t)s.n_panels + 1) * sizeof(int32_t));
    const size_t o_off = take(&total, (size_t)s.n_steps * sizeof(int32_t));
    const size_t o_idx = take(&total, nsl);
    const size_t o_val = take(&total, nsl * esz);
    size_t o_rp = 0, o_col = 0, o_cv = 0;
    if (csr) {
        o_rp = take(&total, ((size_t)out + 1) * sizeof(int32_t));
        o_col = take(&total, (size_t)pw->nnz * sizeof(int32_t));
        o_cv = take(&total, (size_t)pw->nnz * sizeof(float));
    }
    uint8_t *blk = efc_malloc_aligned(64, total);
    if (blk == NULL) {
        sell_fini(&s);
        return efc_errf(EFC_ENOMEM, "sparse pack: %zu bytes", total);
    }
    memset(blk, 0, total);
    struct efc_sp_simd *h = (struct efc_sp_simd *)(blk + o_hdr);
    h->lanes = lanes;
    h->win = win;
    h->slots = slots;
    h->n_panels = s.n_panels;
    h->n_steps = s.n_steps;
    memcpy(blk + o_ps, s.panel_step, ((size_t)s.n_panels + 1) * sizeof(int32_t));
    memcpy(blk + o_off, s.step_off, (size_t)s.n_steps * sizeof(int32_t));
    memcpy(blk + o_idx, s.idx, nsl);
    uint8_t *val = blk + o_val;
    for (size_t t = 0; t < (size_t)s.n_steps; t++)
        for (size_t p = 0; p < (size_t)per; p++) {
            const int64_t e = s.src[t * per + p];
            if (e < 0)
                continue;
            const size_t q = order == EFC_SP_ORDER_UNPACK ? unpack_pos(p, per) : p;
            memcpy(val + (t * per + q) * esz, (const uint8_t *)w + (size_t)e * esz, esz);
        }
    h->panel_step = (const int32_t *)(blk + o_ps);
    h->step_off = (const int32_t *)(blk + o_off);
    h->idx = blk + o_idx;
    h->val = val;
    if (csr) {
        int32_t *rp = (int32_t *)(blk + o_rp), *col = (int32_t *)(blk + o_col);
        float *cv = (float *)(blk + o_cv);
        const float *wf = w;
        int32_t e = 0;
        for (int32_t j = 0; j < out; j++) {
            rp[j] = e;
            for (int32_t k = 0; k < in; k++)
                if (wf[(size_t)j * in + k] != 0.0f) {
                    col[e] = k;
                    cv[e] = wf[(size_t)j * in + k];
                    e++;
                }
        }
        rp[out] = e;
        h->row_ptr = rp;
        h->col = col;
        h->cval = cv;
    }
    sell_fini(&s);
    pw->isa = isa;
    pw->packed = blk;
    pw->packed_bytes = total;
    return EFC_OK;
}

enum efc_status efc_sp_pack_simd_f32(const float *w, int32_t lanes, int32_t win, enum efc_isa isa,
                                     struct efc_spmm_w *pw)
{
    return pack_simd(w, sizeof(float), nz_f32, lanes, win, 1, EFC_SP_ORDER_NATURAL, isa, pw);
}

enum efc_status efc_sp_pack_simd_s8(const int8_t *w, int32_t lanes, enum efc_sp_order order,
                                    enum efc_isa isa, struct efc_spmm_w *pw)
{
    return pack_simd(w, 1, nz_s8, lanes, 16, 4, order, isa, pw);
}

/* ---------------------------------------------------------------- reference: canonical layout */

/* The packed block: this header, then the arrays (64-byte aligned offsets). */
struct ref_pack {
    int32_t wide;     /* CSR col_idx: 1 = int32, 0 = uint16 */
    int32_t groups;   /* N:M: G = ceil(in / M) */
    int32_t meta_row; /* N:M: metadata bytes per row */
    int32_t *row_ptr; /* CSR [out + 1] */
    void *col_idx;    /* CSR [nnz] uint16 or int32 */
    void *values;     /* CSR [nnz]; N:M [out][G * N]; float or int8 */
    uint8_t *meta;    /* N:M [out][meta_row] */
};

/* Fill the canonical layout of w (element size esz: 4 float, 1 int8). */
static enum efc_status ref_pack_any(const void *w, size_t esz, int (*nz)(const void *, int64_t),
                                    struct efc_spmm_w *pw)
{
    const int32_t out = pw->out, in = pw->in;
    const int nm = pw->nm_m != 0;
    size_t total = 0;
    const size_t o_hdr = take(&total, sizeof(struct ref_pack));
    size_t o_rp = 0, o_col = 0, o_val, o_meta = 0;
    int32_t groups = 0, meta_row = 0, wide = in > 65536;
    (void)o_hdr;
    if (!nm) {
        o_rp = take(&total, ((size_t)out + 1) * sizeof(int32_t));
        o_col = take(&total, (size_t)pw->nnz * (wide ? 4 : 2));
        o_val = take(&total, (size_t)pw->nnz * esz);
    } else {
        groups = (in + pw->nm_m - 1) / pw->nm_m;
        meta_row = (groups * pw->nm_n + 3) / 4;
        o_val = take(&total, (size_t)out * groups * pw->nm_n * esz);
        o_meta = take(&total, (size_t)out * meta_row);
    }
    uint8_t *blk = efc_malloc_aligned(64, total);
    if (blk == NULL)
        return efc_errf(EFC_ENOMEM, "sparse pack: %zu bytes", total);
    memset(blk, 0, total);
    struct ref_pack *h = (struct ref_pack *)blk;
    h->wide = wide;
    h->groups = groups;
    h->meta_row = meta_row;
    h->values = blk + o_val;
    const uint8_t *src = w;
    uint8_t *dst = h->values;
    if (!nm) {
        h->row_ptr = (int32_t *)(blk + o_rp);
        h->col_idx = blk + o_col;
        int64_t e = 0;
        for (int32_t j = 0; j < out; j++) {
            h->row_ptr[j] = (int32_t)e;
            for (int32_t k = 0; k < in; k++) {
                const int64_t d = (int64_t)j * in + k;
                if (!nz(w, d))
                    continue;
                if (wide)
                    ((int32_t *)h->col_idx)[e] = k;
                else
                    ((uint16_t *)h->col_idx)[e] = (uint16_t)k;
                memcpy(dst + (size_t)e * esz, src + (size_t)d * esz, esz);
                e++;
            }
        }
        h->row_ptr[out] = (int32_t)e;
    } else {
        const int32_t nn = pw->nm_n, mm = pw->nm_m;
        h->meta = blk + o_meta;
        for (int32_t j = 0; j < out; j++) {
            for (int32_t g = 0; g < groups; g++) {
                const int32_t k0 = g * mm, width = in - k0 < mm ? in - k0 : mm;
                /* The non-zero columns, then the lowest unused ones (zero-valued), in order. */
                int32_t pick[4], np = 0, used[4] = {0, 0, 0, 0};
                for (int32_t c = 0; c < width; c++)
                    if (nz(w, (int64_t)j * in + k0 + c)) {
                        pick[np++] = c;
                        used[c] = 1;
                    }
                for (int32_t c = 0; c < width && np < nn; c++)
                    if (!used[c]) {
                        pick[np++] = c;
                        used[c] = 1;
                    }
                while (np < nn) /* a last group narrower than N: repeat its last column */
                    pick[np++] = width - 1;
                for (int32_t a = 1; a < nn; a++) /* insertion sort, at most 3 entries */
                    for (int32_t b = a; b > 0 && pick[b - 1] > pick[b]; b--) {
                        int32_t tmp = pick[b];
                        pick[b] = pick[b - 1];
                        pick[b - 1] = tmp;
                    }
                for (int32_t t = 0; t < nn; t++) {
                    const size_t slot = (size_t)g * nn + t;
                    const int64_t d = (int64_t)j * in + k0 + pick[t];
                    /* a repeated column (narrow last group) keeps value 0 */
                    if (nz(w, d) && (t == 0 || pick[t] != pick[t - 1]))
                        memcpy(dst + ((size_t)j * groups * nn + slot) * esz, src + (size_t)d * esz,
                               esz);
                    h->meta[(size_t)j * meta_row + slot / 4] |=
                        (uint8_t)(pick[t] << (2 * (slot % 4)));
                }
            }
        }
    }
    pw->isa = EFC_ISA_REF;
    pw->packed = blk;
    pw->packed_bytes = total;
    return EFC_OK;
}

static enum efc_status spmm_f32_pack_ref(int32_t out, int32_t in, const float *w,
                                         const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw)
{
    enum efc_status st = efc_sp_pack_begin_f32(out, in, w, fmt, pw);
    if (st == EFC_OK)
        st = ref_pack_any(w, sizeof(float), nz_f32, pw);
    if (st != EFC_OK) {
        efc_spmm_w_fini(pw);
        memset(pw, 0, sizeof(*pw));
    }
    return st;
}

static float act_f32(float v, enum efc_k_act act)
{
    if (act == EFC_K_ACT_RELU)
        return v > 0.0f ? v : 0.0f;
    if (act == EFC_K_ACT_RELU6)
        return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
    return v;
}

/* sum_k W[j][k] x[k * xs] for one row j of the canonical layout, in the stored order. */
static float row_dot_f32(const struct efc_spmm_w *w, const struct ref_pack *h, int32_t j,
                         const float *x, size_t xs)
{
    const float *v = h->values;
    float acc = 0.0f;
    if (w->nm_m == 0) {
        const int32_t e0 = h->row_ptr[j], e1 = h->row_ptr[j + 1];
        if (h->wide)
            for (int32_t e = e0; e < e1; e++)
                acc += v[e] * x[(size_t)((const int32_t *)h->col_idx)[e] * xs];
        else
            for (int32_t e = e0; e < e1; e++)
                acc += v[e] * x[(size_t)((const uint16_t *)h->col_idx)[e] * xs];
        return acc;
    }
    const int32_t nn = w->nm_n;
    const float *vr = v + (size_t)j * h->groups * nn;
    const uint8_t *mr = h->meta + (size_t)j * h->meta_row;
    int32_t e = 0; /* slot index within the row */
    for (int32_t g = 0; g < h->groups; g++) {
        const float *xg = x + (size_t)g * w->nm_m * xs;
        for (int32_t t = 0; t < nn; t++, e++)
            acc += vr[e] * xg[(size_t)((mr[e >> 2] >> (2 * (e & 3))) & 3) * xs];
    }
    return acc;
}

static void spmm_f32_run_ref(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                             const float *b, enum efc_k_act act, float *y, size_t ldy,
                             float *scratch)
{
    const struct ref_pack *h = w->packed;
    (void)scratch;
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < w->out; j++) {
            float s = row_dot_f32(w, h, j, x + (size_t)i * ldx, 1);
            y[(size_t)i * ldy + j] = act_f32(b != NULL ? s + b[j] : s, act);
        }
}

static void spmm_f32_run_t_ref(const struct efc_spmm_w *w, int32_t n, const float *x, size_t ldx,
                               const float *b, enum efc_k_act act, float *y, size_t ldy)
{
    const struct ref_pack *h = w->packed;
    for (int32_t j = 0; j < w->out; j++)
        for (int32_t i = 0; i < n; i++) {
            float s = row_dot_f32(w, h, j, x + i, ldx);
            y[(size_t)j * ldy + i] = act_f32(b != NULL ? s + b[j] : s, act);
        }
}

const struct efc_k_spmm_f32 efc_k_spmm_f32__ref = {spmm_f32_pack_ref, spmm_f32_run_ref,
                                                   spmm_f32_run_t_ref};

/* ----------------------------------------------------------------------------- INT8 */

static enum efc_status spmm_u8s8_pack_ref(int32_t out, int32_t in, const int8_t *w,
                                          const int32_t *bias, int32_t zp_x,
                                          const struct efc_sp_fmt *fmt, struct efc_spmm_w *pw)
{
    enum efc_status st = efc_sp_pack_begin_s8(out, in, w, bias, zp_x, fmt, pw);
    if (st == EFC_OK)
        st = ref_pack_any(w, 1, nz_s8, pw);
    if (st != EFC_OK) {
        efc_spmm_w_fini(pw);
        memset(pw, 0, sizeof(*pw));
    }
    return st;
}

static void spmm_u8s8_run_ref(const struct efc_spmm_w *w, const struct efc_requant *rq, int32_t n,
                              const uint8_t *x, size_t ldx, uint8_t *y, size_t ldy)
{
    const struct ref_pack *h = w->packed;
    const int8_t *v = h->values;
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *xi = x + (size_t)i * ldx;
        for (int32_t j = 0; j < w->out; j++) {
            uint32_t acc = (uint32_t)w->bias[j];
            if (w->nm_m == 0) {
                const int32_t e0 = h->row_ptr[j], e1 = h->row_ptr[j + 1];
                for (int32_t e = e0; e < e1; e++) {
                    const int32_t c = h->wide ? ((const int32_t *)h->col_idx)[e]
                                              : ((const uint16_t *)h->col_idx)[e];
                    acc += (uint32_t)((int32_t)xi[c] * (int32_t)v[e]);
                }
            } else {
                const int32_t nn = w->nm_n;
                const int8_t *vr = v + (size_t)j * h->groups * nn;
                const uint8_t *mr = h->meta + (size_t)j * h->meta_row;
                int32_t e = 0;
                for (int32_t g = 0; g < h->groups; g++) {
                    const uint8_t *xg = xi + (size_t)g * w->nm_m;
                    for (int32_t t = 0; t < nn; t++, e++)
                        acc += (uint32_t)((int32_t)xg[(mr[e >> 2] >> (2 * (e & 3))) & 3] *
                                          (int32_t)vr[e]);
                }
            }
            const int32_t ch = rq->per_tensor ? 0 : j;
            y[(size_t)i * ldy + j] = efc_k_requant__ref((int32_t)acc, rq->mult[ch], rq->shift[ch],
                                                        rq->zp_out, rq->lo, rq->hi);
        }
    }
}

const struct efc_k_spmm_u8s8 efc_k_spmm_u8s8__ref = {spmm_u8s8_pack_ref, spmm_u8s8_run_ref};
