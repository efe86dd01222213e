/* bench_train.c — training throughput of every built-in architecture (one epoch-slice of
 * 2560 Fashion-MNIST images at batch 128, Adam, no validation) and the fraction of OpenBLAS's
 * own sgemm rate (1024^3, measured in the same run) that training reaches.
 * Training FLOPs per image are taken as 3 x 2 x efc_model_macs (forward, input gradient,
 * weight gradient). Uses random images when the data set is not installed.
 * Usage: bench_train [images] [arch...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "common/efc_time.h"
#include "compress/train.h"
#include "kernels/blas.h"
#include "model/arch.h"
#include "model/dataset.h"

static double sgemm_gflops(void)
{
    const int n = 1024;
    float *a = efc_malloc_aligned(64, sizeof(float) * n * n);
    float *b = efc_malloc_aligned(64, sizeof(float) * n * n);
    float *c = efc_malloc_aligned(64, sizeof(float) * n * n);
    if (!a || !b || !c)
        return 0.0;
    struct efc_rng r;
    efc_rng_init(&r, 1);
    for (int i = 0; i < n * n; i++) {
        a[i] = efc_rng_uniform(&r);
        b[i] = efc_rng_uniform(&r);
    }
    efc_k_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t = efc_time_s();
        efc_k_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        t = efc_time_s() - t;
        best = t < best ? t : best;
    }
    efc_free(a);
    efc_free(b);
    efc_free(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

static struct efc_dataset *random_set(int32_t n)
{
    struct efc_dataset *d = efc_calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->n = n;
    d->ndim = 3;
    d->dims[0] = 1;
    d->dims[1] = d->dims[2] = 28;
    d->dtype = EFC_DTYPE_U8;
    d->data = efc_malloc((size_t)n * 784);
    d->labels = efc_malloc((size_t)n);
    d->n_classes = 10;
    if (!d->data || !d->labels) {
        efc_dataset_free(d);
        return NULL;
    }
    struct efc_rng r;
    efc_rng_init(&r, 2);
    for (size_t i = 0; i < (size_t)n * 784; i++)
        ((uint8_t *)d->data)[i] = (uint8_t)efc_rng_below(&r, 256);
    for (int32_t i = 0; i < n; i++)
        d->labels[i] = (uint8_t)efc_rng_below(&r, 10);
    snprintf(d->source, sizeof(d->source), "random");
    return d;
}

int main(int argc, char **argv)
{
    enum efc_isa cap = efc_isa_best();
    if (efc_isa_from_env(&cap) != EFC_OK) {
        fprintf(stderr, "%s\n", efc_err_detail());
        return 2;
    }
    efc_blas_setup(cap); /* before any BLAS call */
    int32_t n = argc > 1 ? (int32_t)strtol(argv[1], NULL, 10) : 2560;
    if (n < 128)
        n = 128;
    struct efc_dataset *full = NULL, *d = NULL;
    if (efc_dataset_open("fashion-mnist", "train", &full) == EFC_OK) {
        if (efc_dataset_slice(full, 0, n < full->n ? n : full->n, &d) != EFC_OK)
            return 1;
        efc_dataset_free(full);
    } else {
        d = random_set(n);
        if (!d)
            return 1;
    }
    double peak = sgemm_gflops();
    printf("OpenBLAS core %s, %d threads; sgemm 1024^3: %.1f GFLOP/s\n", efc_blas_core(),
           efc_blas_threads(), peak);
    printf("%-8s %8s %10s %10s %12s %10s\n", "arch", "images", "img/s", "MFLOP/img",
           "train GF/s", "of sgemm");
    for (int a = 0; efc_arch_names[a]; a++) {
        const char *name = efc_arch_names[a];
        int want = argc <= 2;
        for (int i = 2; i < argc; i++)
            want |= strcmp(argv[i], name) == 0;
        if (!want)
            continue;
        struct efc_model *m = NULL;
        if (efc_arch_build(name, 1, &m) != EFC_OK)
            return 1;
        struct efc_train_opts o;
        efc_train_opts_default(&o);
        o.epochs = 1;
        o.progress = 0;
        struct efc_train_report rep;
        if (efc_train(m, d, NULL, &o, &rep) != EFC_OK) {
            fprintf(stderr, "%s: train failed\n", name);
            return 1;
        }
        double mflop = 6.0 * (double)efc_model_macs(m) * 1e-6;
        double gfs = rep.images_per_s * mflop * 1e-3;
        printf("%-8s %8d %10.0f %10.2f %12.1f %9.1f%%\n", name, d->n, rep.images_per_s, mflop,
               gfs, peak > 0.0 ? 100.0 * gfs / peak : 0.0);
        efc_model_free(m);
    }
    efc_dataset_free(d);
    return 0;
}
