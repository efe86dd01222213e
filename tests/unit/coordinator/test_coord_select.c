/* test_coord_select.c — per-class selection on synthetic results with known answers (a clear
 * winner, an SLA failure, an undecided case, ties, a failed candidate, a per-device exception),
 * the CI formulas against values computed by hand (Python, formulas in docs/coordinator.md),
 * and the reports (table, JSON, HTML with <svg>). */
#include <setjmp.h>
#include <stdarg.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"
#include "coordinator/select.h"

#define FP32 "fp32"
#define KL_CH "int8(calib=kl,weights=channel)"
#define MSE_CH "int8(calib=mse,weights=channel)"
#define MM_T "int8(calib=minmax,weights=tensor)"
#define PCT_CH "int8(calib=percentile,weights=channel)"

/* A labelled OK result from its 2x2 paired table. */
static struct efc_proto_result mk(const char *dev, const char *cls, const char *policy,
                                  int both, int base_only, int cand_only, int neither,
                                  double p50, uint64_t bytes)
{
    struct efc_proto_result r;
    memset(&r, 0, sizeof(r));
    r.version = 1;
    snprintf(r.job_id, sizeof(r.job_id), "j-%s-%s", dev, policy);
    snprintf(r.round_id, sizeof(r.round_id), "r1");
    snprintf(r.device_id, sizeof(r.device_id), "%s", dev);
    snprintf(r.hw_class, sizeof(r.hw_class), "%s", cls);
    snprintf(r.policy, sizeof(r.policy), "%s", policy);
    r.status = EFC_PROTO_RESULT_OK;
    r.has_labels = 1;
    r.eval_total = both + base_only + cand_only + neither;
    r.both_correct = both;
    r.base_only = base_only;
    r.cand_only = cand_only;
    r.correct = both + cand_only;
    r.base_correct = both + base_only;
    r.p50_ms = p50;
    r.p99_ms = p50 * 1.5;
    r.model_bytes = bytes;
    return r;
}

static struct efc_proto_result mk_failed(const char *dev, const char *cls, const char *policy,
                                         const char *err)
{
    struct efc_proto_result r = mk(dev, cls, policy, 0, 0, 0, 0, 0, 0);
    r.status = EFC_PROTO_RESULT_FAILED;
    r.has_labels = 0;
    snprintf(r.error, sizeof(r.error), "%s", err);
    return r;
}

static const struct efc_coord_candidate *find(const struct efc_coord_class_selection *cs,
                                              const char *policy)
{
    for (size_t i = 0; i < cs->n_cands; i++)
        if (strcmp(cs->cands[i].policy, policy) == 0)
            return &cs->cands[i];
    fail_msg("candidate %s missing", policy);
    return NULL;
}

static void test_ci_formulas(void **state)
{
    struct efc_coord_ci ci;
    (void)state;
    /* Wilson 85/100: 0.7672 .. 0.9069 (textbook value, also Python). */
    efc_coord_ci_wilson(85, 100, EFC_COORD_Z95, &ci);
    assert_true(fabs(ci.est - 0.85) < 1e-12);
    assert_true(fabs(ci.lo - 0.7671644040916763) < 1e-9);
    assert_true(fabs(ci.hi - 0.9069401471634337) < 1e-9);
    efc_coord_ci_wilson(0, 10, EFC_COORD_Z95, &ci);
    assert_true(ci.lo == 0.0 && fabs(ci.hi - 0.2775327998628892) < 1e-9);
    /* Newcombe method 10 on (both, base_only, cand_only, neither) = (800, 50, 20, 130). */
    efc_coord_ci_paired_newcombe(800, 50, 20, 130, EFC_COORD_Z95, &ci);
    assert_true(fabs(ci.est - 0.03) < 1e-12);
    assert_true(fabs(ci.lo - 0.01360885949938416) < 1e-9);
    assert_true(fabs(ci.hi - 0.04676159189270782) < 1e-9);
    /* A small, skewed table: (12, 9, 2, 4). */
    efc_coord_ci_paired_newcombe(12, 9, 2, 4, EFC_COORD_Z95, &ci);
    assert_true(fabs(ci.lo - 0.019224392657102546) < 1e-9);
    assert_true(fabs(ci.hi - 0.4614692376607097) < 1e-9);
    /* Wald on the same difference (50, 20 of 1000). */
    efc_coord_ci_paired_wald(50, 20, 1000, EFC_COORD_Z95, &ci);
    assert_true(fabs(ci.lo - 0.013707523070141728) < 1e-9);
    assert_true(fabs(ci.hi - 0.04629247692985827) < 1e-9);
    /* No discordant pairs: Wald collapses to [0, 0], Newcombe keeps a width. */
    efc_coord_ci_paired_wald(0, 0, 1000, EFC_COORD_Z95, &ci);
    assert_true(ci.lo == 0.0 && ci.hi == 0.0);
    efc_coord_ci_paired_newcombe(900, 0, 0, 100, EFC_COORD_Z95, &ci);
    assert_true(ci.lo < 0.0 && ci.hi > 0.0 && ci.hi < 0.01);
}

static void test_verdict_and_more_samples(void **state)
{
    (void)state;
    struct efc_coord_sla sla = {EFC_COORD_SLA_MAX_DROP, 0.02};
    struct efc_coord_ci ci = {0.015, 0.010, 0.025};
    int64_t more = 0;
    assert_int_equal(efc_coord_sla_verdict(&sla, &ci, 1000, &more), EFC_COORD_UNDECIDED);
    /* half-width 0.010, margin 0.005: n' = 1000 * 4 = 4000, 3000 more. */
    assert_int_equal(more, 3000);
    ci = (struct efc_coord_ci){0.01, 0.005, 0.019};
    assert_int_equal(efc_coord_sla_verdict(&sla, &ci, 1000, &more), EFC_COORD_MEETS);
    assert_int_equal(more, 0);
    ci = (struct efc_coord_ci){0.05, 0.021, 0.07};
    assert_int_equal(efc_coord_sla_verdict(&sla, &ci, 1000, NULL), EFC_COORD_FAILS);
    sla = (struct efc_coord_sla){EFC_COORD_SLA_ABSOLUTE, 0.80};
    ci = (struct efc_coord_ci){0.79, 0.77, 0.81};
    assert_int_equal(efc_coord_sla_verdict(&sla, &ci, 500, &more), EFC_COORD_UNDECIDED);
    assert_int_equal(more, 1500); /* (0.02/0.01)^2 * 500 - 500 */
}

/* Class A, objective bytes, max drop 0.02: two devices. */
static size_t class_a(struct efc_proto_result *r)
{
    size_t n = 0;
    const char *devs[2] = {"a1", "a2"};
    for (int d = 0; d < 2; d++) {
        r[n++] = mk(devs[d], "x86_64-avx2", FP32, 900, 0, 0, 100, 10.0, 400000);
        /* KL and MSE: same bytes, tiny drop; MSE faster (tie on bytes broken by p50). */
        r[n++] = mk(devs[d], "x86_64-avx2", KL_CH, 890, 10, 5, 95, 4.0, 100000);
        r[n++] = mk(devs[d], "x86_64-avx2", MSE_CH, 892, 8, 6, 94, 3.0, 100000);
        /* minmax/tensor: smallest but 10 % drop: SLA failure. */
        r[n++] = mk(devs[d], "x86_64-avx2", MM_T, 800, 100, 0, 100, 2.5, 90000);
        /* percentile: 1.5 % drop on 1000 samples: within the noise. */
        r[n++] = mk(devs[d], "x86_64-avx2", "int8(calib=percentile,weights=tensor)", 875, 25,
                    10, 90, 3.5, 95000);
    }
    r[n++] = mk("a1", "x86_64-avx2", PCT_CH, 890, 10, 5, 95, 3.0, 80000);
    r[n++] = mk_failed("a2", "x86_64-avx2", PCT_CH, "evaluation killed by SIGSEGV");
    return n;
}

static void test_select_class_a(void **state)
{
    (void)state;
    struct efc_proto_result r[16];
    size_t n = class_a(r);
    struct efc_coord_select_opts o = {{EFC_COORD_SLA_MAX_DROP, 0.02}, EFC_COORD_OBJ_BYTES, 0, 0};
    struct efc_coord_selection *sel = NULL;
    assert_int_equal(efc_coord_select(r, n, &o, &sel), EFC_OK);
    assert_int_equal(sel->n_classes, 1);
    const struct efc_coord_class_selection *cs = &sel->classes[0];
    assert_int_equal(cs->n_devices, 2);
    assert_string_equal(cs->cands[0].policy, FP32);
    assert_int_equal(cs->fp32, 0);
    assert_true(cs->chosen >= 0 && cs->runner_up >= 0);
    /* Tie on bytes (100000) broken by p50: MSE (3.0 ms) over KL (4.0 ms). */
    assert_string_equal(cs->cands[cs->chosen].policy, MSE_CH);
    assert_string_equal(cs->cands[cs->runner_up].policy, KL_CH);
    assert_int_equal(find(cs, MM_T)->verdict, EFC_COORD_FAILS);
    assert_non_null(strstr(find(cs, MM_T)->reason, "SLA"));
    const struct efc_coord_candidate *pct = find(cs, PCT_CH);
    assert_int_equal(pct->verdict, EFC_COORD_ERROR);
    assert_non_null(strstr(pct->reason, "SIGSEGV"));
    const struct efc_coord_candidate *und = find(cs, "int8(calib=percentile,weights=tensor)");
    assert_int_equal(und->verdict, EFC_COORD_UNDECIDED);
    assert_true(und->more_samples > 0);
    assert_non_null(strstr(und->reason, "within noise"));
    /* Pooled counts and the paired drop. */
    const struct efc_coord_candidate *mse = &cs->cands[cs->chosen];
    assert_int_equal(mse->total, 2000);
    assert_int_equal(mse->correct, 2 * (892 + 6));
    assert_true(fabs(mse->drop.est - (16.0 - 12.0) / 2000.0) < 1e-12);
    assert_true(fabs(mse->p50_ms - 3.0) < 1e-12);
    assert_int_equal(cs->n_exceptions, 0);
    /* Pareto: fp32 (best accuracy) and minmax/tensor (smallest) are on the bytes front. */
    assert_true(find(cs, FP32)->pareto_bytes);
    assert_true(find(cs, MM_T)->pareto_bytes);
    assert_false(find(cs, KL_CH)->pareto_bytes); /* MSE: same bytes, higher accuracy */

    /* Objective p50: minmax/tensor still fails; MSE (3.0) ties with nothing faster that meets. */
    efc_coord_selection_free(sel);
    o.objective = EFC_COORD_OBJ_P50;
    assert_int_equal(efc_coord_select(r, n, &o, &sel), EFC_OK);
    assert_string_equal(sel->classes[0].cands[sel->classes[0].chosen].policy, MSE_CH);
    efc_coord_selection_free(sel);

    /* Absolute SLA above every candidate: nothing meets. */
    o.sla = (struct efc_coord_sla){EFC_COORD_SLA_ABSOLUTE, 0.95};
    assert_int_equal(efc_coord_select(r, n, &o, &sel), EFC_OK);
    assert_int_equal(sel->classes[0].chosen, -1);
    assert_int_equal(find(&sel->classes[0], FP32)->verdict, EFC_COORD_FAILS);
    efc_coord_selection_free(sel);

    /* Absolute SLA 0.85: all but minmax/tensor (0.80) and the failed percentile/channel meet.
     * By p50: MSE (3.0 ms) beats percentile/tensor (3.5 ms); by bytes: percentile/tensor
     * (95000) beats MSE (100000). */
    o.sla = (struct efc_coord_sla){EFC_COORD_SLA_ABSOLUTE, 0.85};
    assert_int_equal(efc_coord_select(r, n, &o, &sel), EFC_OK);
    cs = &sel->classes[0];
    assert_string_equal(cs->cands[cs->chosen].policy, MSE_CH);
    assert_string_equal(cs->cands[cs->runner_up].policy, "int8(calib=percentile,weights=tensor)");
    efc_coord_selection_free(sel);
    o.objective = EFC_COORD_OBJ_BYTES;
    assert_int_equal(efc_coord_select(r, n, &o, &sel), EFC_OK);
    cs = &sel->classes[0];
    assert_string_equal(cs->cands[cs->chosen].policy, "int8(calib=percentile,weights=tensor)");
    assert_int_equal(find(cs, MM_T)->verdict, EFC_COORD_FAILS);
    efc_coord_selection_free(sel);
}

/* Class B: pooled the smallest candidate meets, but device b3's own paired results fail. */
static size_t class_b(struct efc_proto_result *r)
{
    size_t n = 0;
    const char *devs[3] = {"b1", "b2", "b3"};
    for (int d = 0; d < 3; d++) {
        int big = d < 2 ? 5 : 1; /* b1, b2: 5000 samples; b3: 1000 */
        r[n++] = mk(devs[d], "generic-ref", FP32, 900 * big, 0, 0, 100 * big, 20.0, 400000);
        r[n++] = mk(devs[d], "generic-ref", KL_CH, 900 * big, 0, 0, 100 * big, 12.0, 110000);
        if (d < 2)
            r[n++] = mk(devs[d], "generic-ref", MM_T, 4500, 0, 0, 500, 11.0, 100000);
        else
            r[n++] = mk(devs[d], "generic-ref", MM_T, 820, 80, 0, 100, 11.0, 100000);
    }
    return n;
}

static void test_select_device_exception(void **state)
{
    (void)state;
    struct efc_proto_result r[16];
    size_t n = class_b(r);
    struct efc_coord_select_opts o = {{EFC_COORD_SLA_MAX_DROP, 0.02}, EFC_COORD_OBJ_BYTES, 0, 0};
    struct efc_coord_selection *sel = NULL;
    assert_int_equal(efc_coord_select(r, n, &o, &sel), EFC_OK);
    const struct efc_coord_class_selection *cs = &sel->classes[0];
    assert_string_equal(cs->cands[cs->chosen].policy, MM_T);
    assert_int_equal(cs->n_exceptions, 1);
    assert_string_equal(cs->exceptions[0].device_id, "b3");
    assert_string_equal(cs->exceptions[0].policy, KL_CH);
    assert_int_equal(cs->exceptions[0].n, 1000);
    assert_true(cs->exceptions[0].class_choice_drop.lo > 0.02);
    assert_non_null(strstr(cs->exceptions[0].evidence, "b3"));
    efc_coord_selection_free(sel);
}

static void test_reports(void **state)
{
    (void)state;
    struct efc_proto_result r[32];
    size_t n = class_a(r);
    n += class_b(r + n);
    struct efc_coord_select_opts o = {{EFC_COORD_SLA_MAX_DROP, 0.02}, EFC_COORD_OBJ_BYTES, 0, 0};
    struct efc_coord_selection *sel = NULL;
    assert_int_equal(efc_coord_select(r, n, &o, &sel), EFC_OK);
    assert_int_equal(sel->n_classes, 2);
    assert_string_equal(sel->classes[0].hw_class, "generic-ref");

    char *txt = NULL;
    assert_int_equal(efc_coord_report_table(sel, &txt), EFC_OK);
    assert_non_null(strstr(txt, "x86_64-avx2"));
    assert_non_null(strstr(txt, MSE_CH));
    assert_non_null(strstr(txt, "3.33x")); /* fp32 10 ms / 3 ms */
    assert_non_null(strstr(txt, "0.250"));  /* 100000 / 400000 */
    assert_non_null(strstr(txt, "rejected " MM_T));
    assert_non_null(strstr(txt, "exception device b3"));
    efc_free(txt);

    assert_int_equal(efc_coord_report_json(sel, &txt), EFC_OK);
    cJSON *root = cJSON_Parse(txt);
    assert_non_null(root);
    cJSON *classes = cJSON_GetObjectItem(root, "classes");
    assert_int_equal(cJSON_GetArraySize(classes), 2);
    cJSON *c1 = cJSON_GetArrayItem(classes, 1);
    assert_string_equal(cJSON_GetObjectItem(c1, "chosen")->valuestring, MSE_CH);
    cJSON_Delete(root);
    efc_free(txt);

    char dir[] = "/tmp/efc-sel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/report.html", dir);
    assert_int_equal(efc_coord_report_html_write(sel, "round r1 <test>", NULL, path), EFC_OK);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(efc_fs_read_all(path, 1 << 20, &buf, &len), EFC_OK);
    char *html = efc_malloc(len + 1);
    memcpy(html, buf, len);
    html[len] = '\0';
    assert_non_null(strstr(html, "<svg"));
    assert_non_null(strstr(html, "<polyline"));
    assert_non_null(strstr(html, "&lt;test&gt;"));
    assert_null(strstr(html, "<test>"));
    efc_free(html);
    efc_free(buf);
    unlink(path);
    rmdir(dir);
    efc_coord_selection_free(sel);
}

static void test_bad_options(void **state)
{
    (void)state;
    struct efc_coord_selection *sel = NULL;
    struct efc_coord_select_opts o = {{EFC_COORD_SLA_MAX_DROP, 1.5}, EFC_COORD_OBJ_BYTES, 0, 0};
    assert_int_equal(efc_coord_select(NULL, 0, &o, &sel), EFC_EINVAL);
    o.sla.value = 0.01;
    assert_int_equal(efc_coord_select(NULL, 0, &o, &sel), EFC_OK);
    assert_int_equal(sel->n_classes, 0);
    efc_coord_selection_free(sel);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ci_formulas),
        cmocka_unit_test(test_verdict_and_more_samples),
        cmocka_unit_test(test_select_class_a),
        cmocka_unit_test(test_select_device_exception),
        cmocka_unit_test(test_reports),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
