/* test_calib_run.c — the calibration driver on lenet5 and Fashion-MNIST (tests needing the
 * data set skip when it is not installed), and its bad-input errors (always run).
 *
 * - lenet5 trained briefly (200 Adam steps on 12 800 training images, seed fixed), 512
 *   calibration samples: the same seed gives bit-identical ranges and record, another seed
 *   another digest; every range has lo <= 0 <= hi and a valid scale / zero point; the input
 *   tensor's minmax range is the normalised pixel range; the record JSON is well formed
 *   (braces, brackets and quotes balanced outside strings) and carries the digest.
 * - Real activations, fleet style: 4 shards of the 512 samples each run pass 1, the merged
 *   pass-1 ranges are agreed, each shard runs pass 2, the merged statistics give exactly the
 *   ranges of one efc_calib_run over the 512 samples, for every calibrator.
 * - Zero spike on real ReLU outputs: efc's KL threshold is never below the naive one (zeros
 *   kept, 128 levels) and the naive one collapses on at least one tensor. The thresholds of
 *   every calibrator are printed per tensor (docs/calibration.md quotes them).
 * - Errors: NaN in the data -> EFC_EPROTO naming the input tensor; wrong sample shape ->
 *   EFC_EINVAL; empty data set -> EFC_EINVAL; more samples than the set has -> all of it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "calib/calib.h"
#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "common/efc_time.h"
#include "compress/train.h"
#include "model/arch.h"
#include "model/dataset.h"
#include "model/exec.h"

static struct efc_dataset *g_train; /* NULL: Fashion-MNIST not installed */
static struct efc_model *g_lenet;

static int setup(void **state)
{
    (void)state;
    struct efc_dataset *tr = NULL, *sub = NULL;
    assert_int_equal(efc_arch_build("lenet5", 1, &g_lenet), EFC_OK);
    if (efc_dataset_open("fashion-mnist", "train", &tr) != EFC_OK)
        return 0; /* data tests skip; the error tests use the untrained model */
    g_train = tr;
    assert_int_equal(efc_dataset_slice(tr, 0, 12800, &sub), EFC_OK);
    struct efc_train_opts o;
    struct efc_train_report rep;
    efc_train_opts_default(&o);
    o.epochs = 1;
    o.batch = 64; /* 200 steps */
    o.seed = 3;
    o.progress = 0;
    assert_int_equal(efc_train(g_lenet, sub, NULL, &o, &rep), EFC_OK);
    printf("lenet5: 200 steps, train accuracy %.3f, %.1f s\n", (double)rep.train_accuracy,
           rep.seconds);
    efc_dataset_free(sub);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    efc_dataset_free(g_train);
    efc_model_free(g_lenet);
    return 0;
}

static struct efc_calib_opts opts(enum efc_calib_method m, uint64_t seed)
{
    struct efc_calib_opts o;
    efc_calib_opts_default(&o);
    o.method = m;
    o.seed = seed;
    return o;
}

/* Well-formedness of the record: balanced {} and [] outside strings, closed strings, valid
 * escapes, one top-level object. Not a full parser, but it fails on every way a hand-written
 * emitter usually goes wrong. */
static int json_ok(const char *s)
{
    int depth = 0, in_str = 0, seen = 0;
    if (*s != '{')
        return 0;
    for (const char *c = s; *c; c++) {
        if (in_str) {
            if (*c == '\\') {
                c++;
                if (!*c || !strchr("\"\\/bfnrtu", *c))
                    return 0;
            } else if (*c == '"') {
                in_str = 0;
            } else if ((unsigned char)*c < 0x20) {
                return 0;
            }
            continue;
        }
        if (*c == '"')
            in_str = 1;
        else if (*c == '{' || *c == '[')
            depth++;
        else if (*c == '}' || *c == ']') {
            if (--depth < 0)
                return 0;
            if (depth == 0 && c[1] != '\0')
                return 0;
            seen = 1;
        } else if (strchr("nN", *c) && (strncmp(c, "nan", 3) == 0 || strncmp(c, "NaN", 3) == 0))
            return 0;
        else if (*c == 'i' && strncmp(c, "inf", 3) == 0)
            return 0;
    }
    return seen && depth == 0 && !in_str;
}

static void check_ranges(const struct efc_calib_result *r)
{
    assert_true(r->n_ranges > 0);
    for (int32_t i = 0; i < r->n_ranges; i++) {
        const struct efc_calib_range *g = &r->ranges[i];
        assert_true(g->lo <= 0.0f && g->hi >= 0.0f);
        if (g->shares < 0)
            assert_true(g->lo >= fminf(g->min, 0.0f) && g->hi <= fmaxf(g->max, 0.0f));
        else /* pools and views take their source's range */
            assert_true(g->shares < g->tensor);
        assert_true(isfinite(g->scale) && g->scale > 0.0f);
        assert_true(g->zero_point >= 0 && g->zero_point <= 255);
        assert_true(g->count > 0);
    }
}

static void test_run_lenet5(void **state)
{
    (void)state;
    if (!g_train)
        skip();
    struct efc_calib_result *a = NULL, *b = NULL, *c = NULL;
    struct efc_calib_opts o = opts(EFC_CALIB_KL, 42);
    char *ja = NULL, *jb = NULL;
    uint64_t t0 = efc_time_ns();
    assert_int_equal(efc_calib_run(g_lenet, g_train, &o, &a), EFC_OK);
    printf("efc_calib_run kl, 512 samples: %.2f s\n", (double)(efc_time_ns() - t0) * 1e-9);
    assert_int_equal(efc_calib_run(g_lenet, g_train, &o, &b), EFC_OK);
    assert_int_equal(a->samples, 512);
    assert_int_equal(a->data_n, g_train->n);
    assert_int_equal(strlen(a->data_digest), 64);
    assert_string_equal(a->data_digest, b->data_digest);
    assert_int_equal(a->n_ranges, b->n_ranges);
    assert_memory_equal(a->ranges, b->ranges, sizeof(*a->ranges) * (size_t)a->n_ranges);
    check_ranges(a);

    assert_int_equal(efc_calib_record_json(a, &ja), EFC_OK);
    assert_int_equal(efc_calib_record_json(b, &jb), EFC_OK);
    assert_string_equal(ja, jb);
    assert_true(json_ok(ja));
    assert_non_null(strstr(ja, a->data_digest));
    assert_non_null(strstr(ja, "\"calibrator\":\"kl\""));
    assert_non_null(strstr(ja, "\"seed\":42"));
    assert_non_null(strstr(ja, "\"samples\":512"));
    printf("record (%zu bytes): %.300s...\n", strlen(ja), ja);
    /* The checker can fail: truncating the record breaks it. */
    ja[strlen(ja) - 1] = '\0';
    assert_false(json_ok(ja));

    o.seed = 43;
    assert_int_equal(efc_calib_run(g_lenet, g_train, &o, &c), EFC_OK);
    assert_string_not_equal(a->data_digest, c->data_digest);

    /* The input is the normalised image: (0 - 0.2860) / 0.3530 .. (1 - 0.2860) / 0.3530,
     * assuming some of the 512 images have black and white pixels (they all do). */
    const struct efc_exec_opts eo = {.max_batch = 1};
    struct efc_exec *e = NULL;
    assert_int_equal(efc_exec_new(g_lenet, &eo, &e), EFC_OK);
    const struct efc_model *cm = efc_exec_model(e);
    const struct efc_calib_range *in = efc_calib_result_find(a, cm->tensors[cm->input].name);
    assert_non_null(in);
    assert_float_equal(in->min, -0.2860f / 0.3530f, 1e-4f);
    assert_float_equal(in->max, (1.0f - 0.2860f) / 0.3530f, 1e-4f);
    assert_null(efc_calib_result_find(a, "no such tensor"));
    /* The input keeps its exact range under KL; pools and flatten share their source's. */
    assert_true(in->exact && in->lo == in->min && in->hi == in->max);
    int shared = 0;
    for (int32_t i = 0; i < a->n_ranges; i++) {
        const struct efc_calib_range *g = &a->ranges[i];
        if (g->shares < 0)
            continue;
        const struct efc_calib_range *root = NULL;
        for (int32_t k = 0; k < a->n_ranges; k++)
            if (a->ranges[k].tensor == g->shares)
                root = &a->ranges[k];
        assert_non_null(root);
        assert_true(root->shares < 0);
        assert_true(g->lo == root->lo && g->hi == root->hi && g->scale == root->scale &&
                    g->zero_point == root->zero_point);
        shared++;
    }
    assert_int_equal(shared, 3); /* pool1, pool2, flatten */
    efc_exec_free(e);

    efc_free(ja);
    efc_free(jb);
    efc_calib_result_free(a);
    efc_calib_result_free(b);
    efc_calib_result_free(c);
}

static void test_shards_real(void **state)
{
    (void)state;
    if (!g_train)
        skip();
    enum { SHARDS = 4, N = 512 };
    struct efc_calib_result *ref[EFC_CALIB_METHOD_COUNT] = {0};
    struct efc_calib_opts o[EFC_CALIB_METHOD_COUNT];
    for (int k = 0; k < EFC_CALIB_METHOD_COUNT; k++) {
        o[k] = opts((enum efc_calib_method)k, 5);
        /* Batch 1 everywhere: FP32 GEMM blocking depends on the batch, so activations (not
         * the statistics' merge) could differ in the last bit between batch sizes. */
        o[k].batch = 1;
        assert_int_equal(efc_calib_run(g_lenet, g_train, &o[k], &ref[k]), EFC_OK);
    }
    /* The same 512 indices the driver selects: rebuild them from its documented rule. */
    int32_t *idx = efc_malloc(sizeof(int32_t) * (size_t)g_train->n);
    assert_non_null(idx);
    for (int32_t i = 0; i < g_train->n; i++)
        idx[i] = i;
    struct efc_rng rng;
    efc_rng_init(&rng, 5);
    efc_rng_shuffle(&rng, idx, g_train->n);
    for (int32_t i = 1; i < N; i++) /* insertion sort of the first N */
        for (int32_t j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
            int32_t t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }

    struct efc_calib_stats *sh[SHARDS], *p1 = NULL, *all = NULL;
    const int32_t cut[SHARDS + 1] = {0, 100, 260, 300, N};
    assert_int_equal(efc_calib_stats_new(g_lenet, &p1), EFC_OK);
    for (int s = 0; s < SHARDS; s++) {
        assert_int_equal(efc_calib_stats_new(g_lenet, &sh[s]), EFC_OK);
        assert_int_equal(
            efc_calib_stats_collect(sh[s], g_lenet, g_train, idx + cut[s], cut[s + 1] - cut[s], 1),
            EFC_OK);
        assert_int_equal(efc_calib_stats_merge(p1, sh[s]), EFC_OK);
    }
    float *R = efc_calloc((size_t)p1->n_tensors, sizeof(float));
    assert_non_null(R);
    for (int32_t t = 0; t < p1->n_tensors; t++)
        R[t] = efc_calib_obs_hist_range(&p1->obs[t]);
    assert_int_equal(efc_calib_stats_new(g_lenet, &all), EFC_OK);
    assert_int_equal(efc_calib_stats_hist_begin(all, EFC_CALIB_DEFAULT_BINS, R), EFC_OK);
    for (int s = 0; s < SHARDS; s++) {
        assert_int_equal(efc_calib_stats_hist_begin(sh[s], EFC_CALIB_DEFAULT_BINS, R), EFC_OK);
        assert_int_equal(
            efc_calib_stats_collect(sh[s], g_lenet, g_train, idx + cut[s], cut[s + 1] - cut[s], 1),
            EFC_OK);
        assert_int_equal(efc_calib_stats_merge(all, sh[s]), EFC_OK);
    }
    for (int k = 0; k < EFC_CALIB_METHOD_COUNT; k++) {
        struct efc_calib_result *m = NULL;
        assert_int_equal(efc_calib_result_from_stats(all, &o[k], &m), EFC_OK);
        assert_int_equal(m->n_ranges, ref[k]->n_ranges);
        for (int32_t i = 0; i < m->n_ranges; i++) {
            const struct efc_calib_range *x = &m->ranges[i], *y = &ref[k]->ranges[i];
            assert_int_equal(x->tensor, y->tensor);
            assert_memory_equal(&x->lo, &y->lo, sizeof(float));
            assert_memory_equal(&x->hi, &y->hi, sizeof(float));
            assert_memory_equal(&x->threshold, &y->threshold, sizeof(float));
            assert_true(x->count == y->count && x->n_zero == y->n_zero);
        }
        efc_calib_result_free(m);
    }
    printf("4 shards (100/160/40/212 samples) merged == one pass, all 4 calibrators\n");

    /* Statistics with other edges (a shard that did not agree on R) do not merge. */
    struct efc_calib_stats *odd = NULL;
    assert_int_equal(efc_calib_stats_new(g_lenet, &odd), EFC_OK);
    assert_int_equal(efc_calib_stats_hist_begin(odd, 1024, R), EFC_OK);
    assert_int_equal(efc_calib_stats_merge(all, odd), EFC_EINVAL);
    efc_calib_stats_free(odd);

    for (int s = 0; s < SHARDS; s++)
        efc_calib_stats_free(sh[s]);
    efc_calib_stats_free(p1);
    efc_calib_stats_free(all);
    efc_free(R);
    efc_free(idx);
    for (int k = 0; k < EFC_CALIB_METHOD_COUNT; k++)
        efc_calib_result_free(ref[k]);
}

static void test_threshold_table(void **state)
{
    (void)state;
    if (!g_train)
        skip();
    struct efc_calib_result *r[EFC_CALIB_METHOD_COUNT + 1] = {0};
    for (int k = 0; k <= EFC_CALIB_METHOD_COUNT; k++) {
        struct efc_calib_opts o =
            opts(k < EFC_CALIB_METHOD_COUNT ? (enum efc_calib_method)k : EFC_CALIB_KL, 0);
        if (k == EFC_CALIB_METHOD_COUNT) { /* the naive KL */
            o.keep_zeros = 1;
            o.kl_levels = 128;
        }
        assert_int_equal(efc_calib_run(g_lenet, g_train, &o, &r[k]), EFC_OK);
    }
    const struct efc_exec_opts eo = {.max_batch = 1};
    struct efc_exec *e = NULL;
    assert_int_equal(efc_exec_new(g_lenet, &eo, &e), EFC_OK);
    const struct efc_model *cm = efc_exec_model(e);
    printf("| tensor | producer | min | max | zeros | minmax T | p99.99 T | KL T | MSE T | "
           "naive KL T |\n|---|---|---|---|---|---|---|---|---|---|\n");
    int collapsed = 0;
    for (int32_t i = 0; i < r[0]->n_ranges; i++) {
        const struct efc_calib_range *g = &r[0]->ranges[i];
        const char *producer = "input";
        for (int32_t n = 0; n < cm->n_nodes; n++)
            if (cm->nodes[n].output == g->tensor) {
                producer = cm->nodes[n].name;
                break;
            }
        printf("| %s | %s | %.3f | %.3f | %.1f %% |", g->name, producer, (double)g->min,
               (double)g->max, 100.0 * (double)g->n_zero / (double)g->count);
        for (int k = 0; k <= EFC_CALIB_METHOD_COUNT; k++)
            printf(" %.3f |", (double)r[k]->ranges[i].threshold);
        printf("\n");
        float t_kl = r[EFC_CALIB_KL]->ranges[i].threshold;
        float t_naive = r[EFC_CALIB_METHOD_COUNT]->ranges[i].threshold;
        if ((double)g->n_zero > 0.2 * (double)g->count && g->min >= 0.0f) {
            /* A ReLU output: the spike must not pull efc's threshold below the naive one. */
            assert_true(t_kl >= t_naive);
            collapsed += t_naive < 0.7f * t_kl;
        }
    }
    printf("naive KL below 70 %% of efc's KL on %d ReLU tensors\n", collapsed);
    assert_true(collapsed >= 1);
    efc_exec_free(e);
    for (int k = 0; k <= EFC_CALIB_METHOD_COUNT; k++)
        efc_calib_result_free(r[k]);
}

/* A float32 data set of n samples of the given shape, filled with v (caller frees). */
static struct efc_dataset *f32_set(int32_t n, int32_t h, int32_t w, float v)
{
    struct efc_dataset *d = efc_calloc(1, sizeof(*d));
    assert_non_null(d);
    d->n = n;
    d->ndim = 3;
    d->dims[0] = 1;
    d->dims[1] = h;
    d->dims[2] = w;
    d->dtype = EFC_DTYPE_F32;
    d->data = efc_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1) * (size_t)(h * w));
    assert_non_null(d->data);
    for (size_t i = 0; i < (size_t)n * (size_t)(h * w); i++)
        ((float *)d->data)[i] = v;
    snprintf(d->source, sizeof(d->source), "test-%dx%dx%d", n, h, w);
    return d;
}

static void test_bad_input(void **state)
{
    (void)state;
    struct efc_calib_result *r = NULL;
    struct efc_calib_opts o = opts(EFC_CALIB_PERCENTILE, 1);
    struct efc_dataset *d = f32_set(10, 28, 28, 100.0f);

    /* NaN in sample 7: the observer of the input tensor reports it. */
    ((float *)d->data)[7 * 784 + 300] = NAN;
    efc_err_clear();
    assert_int_equal(efc_calib_run(g_lenet, d, &o, &r), EFC_EPROTO);
    assert_null(r);
    printf("NaN: %s\n", efc_err_detail());
    assert_non_null(strstr(efc_err_detail(), "NaN"));
    assert_non_null(strstr(efc_err_detail(), "tensor"));
    /* Inf is caught too. */
    ((float *)d->data)[7 * 784 + 300] = INFINITY;
    assert_int_equal(efc_calib_run(g_lenet, d, &o, &r), EFC_EPROTO);
    /* Finite input, but weights so large that the activations overflow to Inf inside the
     * network: the error names an inner tensor, not the input. */
    ((float *)d->data)[7 * 784 + 300] = 100.0f;
    struct efc_model *big = NULL;
    assert_int_equal(efc_model_clone(g_lenet, &big), EFC_OK);
    for (int32_t t = 0; t < big->n_tensors; t++)
        if (big->tensors[t].flags & EFC_TENSOR_PARAM)
            for (size_t i = 0; i < efc_tensor_numel(&big->tensors[t]); i++)
                ((float *)big->tensors[t].data)[i] *= 1e20f;
    assert_int_equal(efc_calib_run(big, d, &o, &r), EFC_EPROTO);
    printf("overflow: %s\n", efc_err_detail());
    assert_null(strstr(efc_err_detail(), "'input'"));
    efc_model_free(big);
    efc_dataset_free(d);

    /* Wrong shape. */
    d = f32_set(10, 32, 32, 1.0f);
    assert_int_equal(efc_calib_run(g_lenet, d, &o, &r), EFC_EINVAL);
    printf("shape: %s\n", efc_err_detail());
    assert_non_null(strstr(efc_err_detail(), "1024"));
    assert_null(r);
    efc_dataset_free(d);

    /* Empty set. */
    d = f32_set(0, 28, 28, 1.0f);
    assert_int_equal(efc_calib_run(g_lenet, d, &o, &r), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "empty"));
    assert_int_equal(efc_calib_run(g_lenet, NULL, &o, &r), EFC_EINVAL);
    efc_dataset_free(d);

    /* More samples than the set has: all of it, recorded as such. */
    d = f32_set(10, 28, 28, 7.0f);
    for (size_t i = 0; i < 10 * 784; i++)
        ((float *)d->data)[i] = (float)(i % 256);
    o.samples = 512;
    assert_int_equal(efc_calib_run(g_lenet, d, &o, &r), EFC_OK);
    assert_int_equal(r->samples, 10);
    check_ranges(r);
    char *j = NULL;
    assert_int_equal(efc_calib_record_json(r, &j), EFC_OK);
    assert_true(json_ok(j));
    assert_non_null(strstr(j, "\"selection\":\"all\""));
    efc_free(j);
    efc_calib_result_free(r);

    /* Bad options. */
    o.percentile = 0.0;
    assert_int_equal(efc_calib_run(g_lenet, d, &o, &r), EFC_EINVAL);
    efc_dataset_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_run_lenet5),
        cmocka_unit_test(test_shards_real),
        cmocka_unit_test(test_threshold_table),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
