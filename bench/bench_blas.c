/* bench_blas.c — the OpenBLAS core trap, in numbers.
 *
 * OpenBLAS picks its kernel set ("core") once, when the library loads. This bench runs the
 * same sgemm shapes in child processes, one per core configuration:
 *   library  — OPENBLAS_CORETYPE unset and EFC_BLAS_KEEP_ENV=1: what OpenBLAS picks alone;
 *   efc      — OPENBLAS_CORETYPE unset, efc_blas_setup() sets efc's choice before OpenBLAS is opened;
 *   env      — the OPENBLAS_CORETYPE this bench was started with, if any;
 *   Prescott / Haswell / SkylakeX / Cooperlake — forced with OPENBLAS_CORETYPE.
 * and prints GFLOP/s per shape and the ratio to the efc column, with the core name each child
 * reports through openblas_get_corename(). Shapes: square 256/512/1024 and the conv layers of
 * lenet5 and cnn-bn as GEMMs (M = out channels, K = c*kh*kw, N = oh*ow*batch; batch 1 and the
 * 64-image chunk efc_k_conv2d_f32 uses). The children stay alive and the parent asks them
 * for one shape at a time, column after column, for 3 rounds: columns of a shape are timed
 * back to back so the load of other processes on this shared VM hits them alike. A child's
 * figure is the median of 5 timed reps (each >= 10 ms of calls) after 2 warm-up reps; the
 * printed figure is the median round. Compare columns of one run only (NOTES.md).
 *
 * Usage: bench_blas [--threads N] (default 1: per-core kernel quality, no threading noise).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "common/efc_time.h"
#include "kernels/blas.h"
#include "kernels/cpu_features.h"

struct shape {
    const char *name;
    int m, n, k;
};

static const struct shape g_shapes[] = {
    {"square 256", 256, 256, 256},
    {"square 512", 512, 512, 512},
    {"square 1024", 1024, 1024, 1024},
    {"lenet5 conv1 b1", 6, 784, 25},
    {"lenet5 conv2 b1", 16, 100, 150},
    {"lenet5 conv1 b64", 6, 784 * 64, 25},
    {"lenet5 conv2 b64", 16, 100 * 64, 150},
    {"cnn-bn conv1 b1", 32, 784, 9},
    {"cnn-bn conv2 b1", 32, 784, 288},
    {"cnn-bn conv3 b1", 64, 196, 288},
    {"cnn-bn conv2 b64", 32, 784 * 64, 288},
    {"cnn-bn conv3 b64", 64, 196 * 64, 288},
};
#define N_SHAPES (sizeof(g_shapes) / sizeof(g_shapes[0]))
#define N_ROUNDS 3

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double bench_shape(const struct shape *s)
{
    struct efc_rng r;
    efc_rng_init(&r, 42);
    size_t na = (size_t)s->m * s->k, nb = (size_t)s->k * s->n, nc = (size_t)s->m * s->n;
    float *a = efc_malloc_aligned(64, na * sizeof(float));
    float *b = efc_malloc_aligned(64, nb * sizeof(float));
    float *c = efc_malloc_aligned(64, nc * sizeof(float));
    if (a == NULL || b == NULL || c == NULL) {
        fprintf(stderr, "bench_blas: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < na; i++)
        a[i] = efc_rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < nb; i++)
        b[i] = efc_rng_uniform(&r) - 0.5f;
    double flop = 2.0 * s->m * s->n * s->k;
    int inner = 1;
    double t_med[5];
    for (int rep = -2; rep < 5; rep++) {
        double t0 = efc_time_s();
        for (int i = 0; i < inner; i++)
            efc_k_sgemm(false, false, s->m, s->n, s->k, 1.0f, a, s->k, b, s->n, 0.0f, c, s->n);
        double dt = efc_time_s() - t0;
        if (rep < 0) {
            /* Warm-up also sizes the inner loop to >= 20 ms per rep. */
            while (dt * inner < 0.01 && inner < (1 << 20))
                inner *= 2;
            continue;
        }
        t_med[rep] = dt / inner;
    }
    qsort(t_med, 5, sizeof(double), cmp_double);
    efc_free(a);
    efc_free(b);
    efc_free(c);
    return flop / t_med[2] * 1e-9;
}

/* Child: serve "s <idx>" lines from stdin with "r <idx> <GFLOP/s>" lines on stdout. */
static int child_main(int threads)
{
    efc_blas_setup(efc_isa_best()); /* no-op with EFC_BLAS_KEEP_ENV=1 */
    efc_blas_set_threads(threads);
    printf("core %s\n", efc_blas_core());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof(line), stdin) != NULL) {
        size_t idx;
        if (sscanf(line, "s %zu", &idx) != 1 || idx >= N_SHAPES)
            break;
        printf("r %zu %.3f\n", idx, bench_shape(&g_shapes[idx]));
        fflush(stdout);
    }
    return 0;
}

struct column {
    const char *label;
    const char *coretype; /* NULL: unset */
    int keep_env;
    char core[64];
    double gflops[N_SHAPES][N_ROUNDS];
    pid_t pid;
    FILE *to, *from;
};

static void start_column(struct column *col, const char *threads)
{
    int down[2], up[2];
    /* O_CLOEXEC: later children must not inherit this child's pipe ends (EOF on stop). */
    if (pipe2(down, O_CLOEXEC) != 0 || pipe2(up, O_CLOEXEC) != 0) {
        perror("pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        dup2(down[0], 0);
        dup2(up[1], 1);
        close(down[0]);
        close(down[1]);
        close(up[0]);
        close(up[1]);
        unsetenv("EFC_BLAS_CORE");
        if (col->coretype != NULL)
            setenv("OPENBLAS_CORETYPE", col->coretype, 1);
        else
            unsetenv("OPENBLAS_CORETYPE");
        if (col->keep_env)
            setenv("EFC_BLAS_KEEP_ENV", "1", 1);
        else
            unsetenv("EFC_BLAS_KEEP_ENV");
        char *args[] = {(char *)"bench_blas", (char *)"--child", (char *)"--threads",
                        (char *)threads, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(down[0]);
    close(up[1]);
    col->pid = pid;
    col->to = fdopen(down[1], "w");
    col->from = fdopen(up[0], "r");
    if (col->to == NULL || col->from == NULL) {
        perror("fdopen");
        exit(1);
    }
    char line[256];
    snprintf(col->core, sizeof(col->core), "?");
    if (fgets(line, sizeof(line), col->from) != NULL && strncmp(line, "core ", 5) == 0) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(col->core, sizeof(col->core), "%.63s", line + 5);
    }
}

static double measure(struct column *col, size_t idx)
{
    char line[256];
    size_t got;
    double g;
    fprintf(col->to, "s %zu\n", idx);
    fflush(col->to);
    if (fgets(line, sizeof(line), col->from) == NULL ||
        sscanf(line, "r %zu %lf", &got, &g) != 2 || got != idx)
        return 0.0;
    return g;
}

static void stop_column(struct column *col)
{
    fclose(col->to);
    fclose(col->from);
    int status = 0;
    waitpid(col->pid, &status, 0);
}

int main(int argc, char **argv)
{
    int threads = 1;
    int child = 0;
    const char *threads_s = "1";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--child") == 0) {
            child = 1;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads_s = argv[++i];
            char *end = NULL;
            long v = strtol(threads_s, &end, 10);
            if (end == threads_s || *end != '\0' || v < 1 || v > 256) {
                fprintf(stderr, "bench_blas: bad --threads '%s'\n", threads_s);
                return 2;
            }
            threads = (int)v;
        } else {
            fprintf(stderr, "usage: bench_blas [--threads N]\n");
            return 2;
        }
    }
    if (child)
        return child_main(threads);

    const struct efc_cpu_features *f = efc_cpu_features();
    const char *env_core = getenv("OPENBLAS_CORETYPE");
    struct column cols[8];
    size_t n_cols = 0;
    memset(cols, 0, sizeof(cols));
    cols[n_cols++] = (struct column){.label = "library", .coretype = NULL, .keep_env = 1};
    cols[n_cols++] = (struct column){.label = "efc", .coretype = NULL, .keep_env = 0};
    if (env_core != NULL && env_core[0] != '\0')
        cols[n_cols++] = (struct column){.label = "env", .coretype = env_core, .keep_env = 1};
    static const char *forced[] = {"Prescott", "Haswell", "SkylakeX", "Cooperlake"};
    for (size_t i = 0; i < 4; i++)
        cols[n_cols++] = (struct column){.label = forced[i], .coretype = forced[i],
                                         .keep_env = 1};

    printf("bench_blas: %s, family %d model %d, best isa %s, efc wants core %s, %d thread(s)\n",
           f->brand, f->family, f->model, efc_isa_name(efc_isa_best()),
           efc_blas_core_wanted(efc_isa_best()), threads);
    if (env_core != NULL)
        printf("  (started with OPENBLAS_CORETYPE=%s in the environment: column 'env')\n",
               env_core);
    for (size_t i = 0; i < n_cols; i++)
        start_column(&cols[i], threads_s);
    /* Rounds x shapes x columns: the columns of one shape are measured back to back, so load
     * from other processes on the VM hits them alike; the figure is the median round. */
    for (int round = 0; round < N_ROUNDS; round++)
        for (size_t s = 0; s < N_SHAPES; s++)
            for (size_t i = 0; i < n_cols; i++)
                cols[i].gflops[s][round] = measure(&cols[i], s);
    for (size_t i = 0; i < n_cols; i++)
        stop_column(&cols[i]);
    int missing = 0;
    double med[8][N_SHAPES];
    for (size_t i = 0; i < n_cols; i++)
        for (size_t s = 0; s < N_SHAPES; s++) {
            qsort(cols[i].gflops[s], N_ROUNDS, sizeof(double), cmp_double);
            med[i][s] = cols[i].gflops[s][N_ROUNDS / 2];
            missing |= cols[i].gflops[s][0] <= 0.0;
        }

    printf("\nsgemm GFLOP/s (median of %d rounds) and ratio to the efc column\n", N_ROUNDS);
    printf("%-18s %5s %6s %5s", "shape", "M", "N", "K");
    for (size_t i = 0; i < n_cols; i++)
        printf(" | %-15s", cols[i].label);
    printf("\n%-18s %5s %6s %5s", "  core", "", "", "");
    for (size_t i = 0; i < n_cols; i++)
        printf(" | %-15s", cols[i].core);
    printf("\n");
    for (size_t s = 0; s < N_SHAPES; s++) {
        printf("%-18s %5d %6d %5d", g_shapes[s].name, g_shapes[s].m, g_shapes[s].n,
               g_shapes[s].k);
        double ref = med[1][s];
        for (size_t i = 0; i < n_cols; i++) {
            double g = med[i][s];
            if (g <= 0.0)
                printf(" | %-15s", "n/a");
            else
                printf(" | %6.1f (%4.2fx)", g, ref > 0.0 ? g / ref : 0.0);
        }
        printf("\n");
    }
    if (strcasecmp(cols[0].core, cols[1].core) != 0)
        printf("\nOpenBLAS alone runs %s here; efc_blas_setup() switches to %s.\n", cols[0].core,
               cols[1].core);
    else
        printf("\nOpenBLAS alone already runs %s here (= efc's choice).\n", cols[0].core);
    return missing ? 1 : 0;
}
