/* bench_conv.c — efc_k_conv2d_f32 on the conv layers of lenet5 and cnn-bn (batch 1 and 64)
 * against, in the same run:
 *   baseline — the plain way: per image, im2col then one sgemm into y, then a scalar
 *              bias + ReLU loop;
 *   sgemm    — the raw sgemm of the same M = oc, N = batch*oh*ow, K = c*kh*kw on ready
 *              operands (no im2col, no epilogue): the floor a GEMM-based conv can reach.
 * Printed: ms per call (median of 7 reps after warm-up, each rep >= 20 ms of calls), GFLOP/s
 * of the conv, and the ratios baseline/efc and efc/sgemm. Calls efc_blas_setup() first, so
 * the OpenBLAS core is efc's choice (or EFC_BLAS_CORE); prints core and ISA path.
 *
 * Usage: bench_conv [--threads N] (default 1). EFC_ISA caps the kernels' ISA.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"
#include "common/efc_rng.h"
#include "common/efc_status.h"
#include "common/efc_time.h"
#include "kernels/blas.h"
#include "kernels/kernels.h"

struct layer {
    const char *name;
    int32_t c, h, w, oc, k, pad;
};

/* From model/arch.c (docs/architectures.md): stride 1 everywhere. */
static const struct layer g_layers[] = {
    {"lenet5 conv1", 1, 28, 28, 6, 5, 2},
    {"lenet5 conv2", 6, 14, 14, 16, 5, 0},
    {"cnn-bn conv1", 1, 28, 28, 32, 3, 1},
    {"cnn-bn conv2", 32, 28, 28, 32, 3, 1},
    {"cnn-bn conv3", 32, 14, 14, 64, 3, 1},
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct ctx {
    struct efc_conv_geom g;
    const float *x, *w, *b;
    float *y, *scratch, *col, *a_ready, *b_ready, *c_ready;
};

static void run_efc(struct ctx *c)
{
    efc_k_conv2d_f32(&c->g, c->x, c->w, c->b, c->y, c->scratch, EFC_K_ACT_RELU);
}

static void run_baseline(struct ctx *c)
{
    const struct efc_conv_geom *g = &c->g;
    int k = g->c * g->kh * g->kw, p = g->oh * g->ow;
    for (int32_t i = 0; i < g->n; i++) {
        float *yi = c->y + (size_t)i * g->oc * p;
        efc_k_im2col_f32(g, c->x, i, 1, 0, c->col);
        efc_k_sgemm(false, false, g->oc, p, k, 1.0f, c->w, k, c->col, p, 0.0f, yi, p);
        for (int32_t o = 0; o < g->oc; o++)
            for (int j = 0; j < p; j++) {
                float v = yi[(size_t)o * p + j] + c->b[o];
                yi[(size_t)o * p + j] = v > 0.0f ? v : 0.0f;
            }
    }
}

static void run_sgemm(struct ctx *c)
{
    const struct efc_conv_geom *g = &c->g;
    int k = g->c * g->kh * g->kw, n = g->n * g->oh * g->ow;
    efc_k_sgemm(false, false, g->oc, n, k, 1.0f, c->a_ready, k, c->b_ready, n, 0.0f,
                c->c_ready, n);
}

static double time_ms(void (*fn)(struct ctx *), struct ctx *c)
{
    int inner = 1;
    double t[7];
    for (int rep = -2; rep < 7; rep++) {
        double t0 = efc_time_s();
        for (int i = 0; i < inner; i++)
            fn(c);
        double dt = efc_time_s() - t0;
        if (rep < 0) {
            while (dt * inner < 0.02 && inner < (1 << 20))
                inner *= 2;
            continue;
        }
        t[rep] = dt / inner;
    }
    qsort(t, 7, sizeof(double), cmp_double);
    return t[3] * 1e3;
}

static float *alloc_f(size_t n)
{
    float *p = efc_malloc_aligned(64, (n > 0 ? n : 1) * sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "bench_conv: out of memory\n");
        exit(1);
    }
    return p;
}

int main(int argc, char **argv)
{
    int threads = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end = NULL;
            long v = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || v < 1 || v > 256) {
                fprintf(stderr, "bench_conv: bad --threads '%s'\n", argv[i]);
                return 2;
            }
            threads = (int)v;
        } else {
            fprintf(stderr, "usage: bench_conv [--threads N]\n");
            return 2;
        }
    }
    if (efc_kernels_init_env() != EFC_OK) {
        fprintf(stderr, "bench_conv: %s\n", efc_err_detail());
        return 2;
    }
    enum efc_isa cap = efc_isa_best();
    if (efc_isa_from_env(&cap) != EFC_OK) {
        fprintf(stderr, "%s\n", efc_err_detail());
        return 2;
    }
    efc_blas_setup(cap); /* before any BLAS call */
    efc_blas_set_threads(threads);
    printf("bench_conv: %s, kernels isa %s (cpu best %s), OpenBLAS core %s, %d thread(s)\n",
           efc_cpu_features()->brand, efc_isa_name(efc_kernels_isa()),
           efc_isa_name(efc_isa_best()), efc_blas_core(), efc_blas_threads());
    printf("%-14s %5s %5s %6s %4s | %9s %9s %9s | %7s | %13s %12s\n", "layer", "batch", "M",
           "N", "K", "efc ms", "base ms", "sgemm ms", "GFLOP/s", "base/efc", "efc/sgemm");

    static const int32_t batches[] = {1, 64};
    struct efc_rng r;
    efc_rng_init(&r, 7);
    for (size_t li = 0; li < sizeof(g_layers) / sizeof(g_layers[0]); li++) {
        for (size_t bi = 0; bi < 2; bi++) {
            const struct layer *L = &g_layers[li];
            struct ctx c;
            memset(&c, 0, sizeof(c));
            c.g = (struct efc_conv_geom){
                .n = batches[bi], .c = L->c, .h = L->h, .w = L->w, .oc = L->oc,
                .oh = L->h + 2 * L->pad - L->k + 1, .ow = L->w + 2 * L->pad - L->k + 1,
                .kh = L->k, .kw = L->k, .sh = 1, .sw = 1, .pt = L->pad, .pl = L->pad,
                .groups = 1,
            };
            const struct efc_conv_geom *g = &c.g;
            size_t k = (size_t)g->c * g->kh * g->kw, p = (size_t)g->oh * g->ow;
            size_t nx = (size_t)g->n * g->c * g->h * g->w, ny = (size_t)g->n * g->oc * p;
            float *x = alloc_f(nx), *w = alloc_f((size_t)g->oc * k), *b = alloc_f((size_t)g->oc);
            for (size_t i = 0; i < nx; i++)
                x[i] = efc_rng_uniform(&r) - 0.5f;
            for (size_t i = 0; i < (size_t)g->oc * k; i++)
                w[i] = efc_rng_uniform(&r) - 0.5f;
            for (int32_t i = 0; i < g->oc; i++)
                b[i] = efc_rng_uniform(&r) - 0.5f;
            c.x = x;
            c.w = w;
            c.b = b;
            c.y = alloc_f(ny);
            c.scratch = alloc_f(efc_k_conv2d_f32_scratch(g));
            c.col = alloc_f(k * p);
            c.a_ready = w;
            c.b_ready = alloc_f(k * g->n * p);
            c.c_ready = alloc_f(ny);
            efc_k_im2col_f32(g, x, 0, g->n, 0, c.b_ready);

            double t_efc = time_ms(run_efc, &c);
            double t_base = time_ms(run_baseline, &c);
            double t_gemm = time_ms(run_sgemm, &c);
            double flop = 2.0 * (double)g->oc * (double)k * (double)p * g->n;
            printf("%-14s %5d %5d %6zu %4zu | %9.4f %9.4f %9.4f | %7.1f | %12.2fx %11.2fx\n",
                   L->name, g->n, g->oc, (size_t)g->n * p, k, t_efc, t_base, t_gemm,
                   flop / (t_efc * 1e-3) * 1e-9, t_base / t_efc, t_efc / t_gemm);
            efc_free(x);
            efc_free(w);
            efc_free(b);
            efc_free(c.y);
            efc_free(c.scratch);
            efc_free(c.col);
            efc_free(c.b_ready);
            efc_free(c.c_ready);
        }
    }
    printf("base/efc > 1: efc faster than per-image im2col+sgemm; efc/sgemm: cost over the raw "
           "GEMM (im2col + epilogue + scatter)\n");
    return 0;
}
