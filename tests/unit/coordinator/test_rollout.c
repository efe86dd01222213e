/* test_rollout.c — the coordinator's rollout rules and tables (coordinator/rollout.h):
 * wave lists (parse, cumulative targets, rounding, caps), the wave gate on device reports
 * (every outcome, the accuracy regression with its sampling-noise allowance, the latency
 * regression with its absolute floor), and the store: round artifacts, the version counter,
 * one running rollout per class, device rows that only leave SENT / REVERTING once (a
 * duplicate report changes nothing), what each device runs (attributed to the installing
 * rollout by version), newest done / halted rollout below a version, the selections list, and
 * everything surviving a reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "coordinator/rollout.h"
#include "coordinator/store.h"

/* ---- waves ------------------------------------------------------------------------------ */

static void test_waves_parse(void **state)
{
    int32_t n = 0;
    (void)state;
    assert_int_equal(efc_coord_waves_parse("1,10%,50%,100%", &n), EFC_OK);
    assert_int_equal(n, 4);
    assert_int_equal(efc_coord_waves_parse("100%", &n), EFC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(efc_coord_waves_parse("2,5,100%", &n), EFC_OK);
    assert_int_equal(n, 3);
    static const char *const bad[] = {"",        "0,100%",   "1,50%",   "50%,10%,100%",
                                      "101%",    "1,,100%",  "x,100%",  "1%,100",
                                      "5,3,100%", "-1,100%", "100%,",   "1 ,100%",
                                      "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,100%"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum efc_status st = efc_coord_waves_parse(bad[i], &n);
        if (st != EFC_EINVAL)
            fail_msg("waves '%s' accepted", bad[i]);
    }
}

static void test_wave_target(void **state)
{
    const char *w = "1,10%,50%,100%";
    (void)state;
    /* 3 devices: canary 1, 10 % of 3 rounds up to 1, 50 % -> 2, 100 % -> 3 */
    assert_int_equal(efc_coord_wave_target(w, 0, 3), 1);
    assert_int_equal(efc_coord_wave_target(w, 1, 3), 1);
    assert_int_equal(efc_coord_wave_target(w, 2, 3), 2);
    assert_int_equal(efc_coord_wave_target(w, 3, 3), 3);
    /* 1000 devices */
    assert_int_equal(efc_coord_wave_target(w, 1, 1000), 100);
    assert_int_equal(efc_coord_wave_target(w, 2, 1000), 500);
    assert_int_equal(efc_coord_wave_target(w, 3, 1000), 1000);
    /* 101 devices: 10 % -> 11 (rounded up) */
    assert_int_equal(efc_coord_wave_target(w, 1, 101), 11);
    /* a count above the class size is capped; an empty class has no target */
    assert_int_equal(efc_coord_wave_target("5,100%", 0, 2), 2);
    assert_int_equal(efc_coord_wave_target(w, 0, 0), 0);
}

/* ---- gate ------------------------------------------------------------------------------- */

static struct efc_proto_ota_report report(int32_t outcome, int32_t correct, int32_t total,
                                          double p99)
{
    struct efc_proto_ota_report r;
    memset(&r, 0, sizeof(r));
    r.outcome = outcome;
    r.has_labels = 1;
    r.correct = correct;
    r.eval_total = total;
    r.p99_ms = p99;
    snprintf(r.reason, sizeof(r.reason), "WHY: because");
    return r;
}

static void test_gate(void **state)
{
    struct efc_coord_gate g;
    struct efc_proto_ota_report r;
    char why[256];
    (void)state;
    memset(&g, 0, sizeof(g));
    g.max_acc_drop = 0.02;
    g.max_p99_ratio = 3.0;
    g.expected_acc = 0.80;
    g.expected_p99_ms = 2.0;

    r = report(EFC_PROTO_OTA_INSTALLED, 800, 1000, 2.5);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_INSTALLED);
    assert_string_equal(why, "");
    /* 0.80 - 0.02 - 2 * sqrt(0.8 * 0.2 / 1000) = 0.7547: 755 passes, 754 fails */
    r = report(EFC_PROTO_OTA_INSTALLED, 755, 1000, 1.0);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_INSTALLED);
    r = report(EFC_PROTO_OTA_INSTALLED, 754, 1000, 1.0);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_REGRESSED);
    assert_non_null(strstr(why, "ACCURACY_REGRESSION"));
    /* fewer samples, more noise allowed: 0.72 on 100 samples passes (limit 0.70) */
    r = report(EFC_PROTO_OTA_INSTALLED, 72, 100, 1.0);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_INSTALLED);
    /* without labels there is no accuracy to judge */
    r = report(EFC_PROTO_OTA_INSTALLED, 0, 1000, 1.0);
    r.has_labels = 0;
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_INSTALLED);
    /* latency: above 3 x 2 ms (and more than 1 ms above 2 ms) */
    r = report(EFC_PROTO_OTA_INSTALLED, 800, 1000, 6.0);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_INSTALLED);
    r = report(EFC_PROTO_OTA_INSTALLED, 800, 1000, 6.01);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_REGRESSED);
    assert_non_null(strstr(why, "LATENCY_REGRESSION"));
    /* microseconds: 10 x the round's p99 but within the 1 ms floor is noise */
    g.expected_p99_ms = 0.005;
    r = report(EFC_PROTO_OTA_INSTALLED, 800, 1000, 0.05);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_INSTALLED);
    r = report(EFC_PROTO_OTA_INSTALLED, 800, 1000, 1.1);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_REGRESSED);
    /* unknown expectations: nothing to regress against */
    g.expected_acc = -1;
    g.expected_p99_ms = 0;
    r = report(EFC_PROTO_OTA_INSTALLED, 1, 1000, 100.0);
    assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), EFC_COORD_RDEV_INSTALLED);
    /* the other outcomes keep the device's reason */
    static const struct {
        int32_t outcome;
        enum efc_coord_rdev_state want;
    } other[] = {{EFC_PROTO_OTA_ROLLED_BACK, EFC_COORD_RDEV_ROLLED_BACK},
                 {EFC_PROTO_OTA_REFUSED, EFC_COORD_RDEV_REFUSED},
                 {EFC_PROTO_OTA_FAILED, EFC_COORD_RDEV_FAILED},
                 {EFC_PROTO_OTA_REVERTED, EFC_COORD_RDEV_REVERTED}};
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        r = report(other[i].outcome, 0, 0, 0);
        assert_int_equal(efc_coord_gate_report(&g, &r, why, sizeof(why)), other[i].want);
        assert_string_equal(why, "WHY: because");
    }
    assert_true(efc_coord_rdev_failed(EFC_COORD_RDEV_TIMEOUT));
    assert_true(efc_coord_rdev_failed(EFC_COORD_RDEV_REGRESSED));
    assert_false(efc_coord_rdev_failed(EFC_COORD_RDEV_INSTALLED));
    assert_false(efc_coord_rdev_failed(EFC_COORD_RDEV_REVERTED));
    assert_false(efc_coord_rdev_failed(EFC_COORD_RDEV_SENT));
}

/* ---- store ------------------------------------------------------------------------------ */

struct fx {
    char dir[64];
    char path[96];
    struct efc_coord_store *s;
};

static int setup(void **state)
{
    struct fx *f = efc_calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/efc-rollout-XXXXXX");
    if (!f || !mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/efc.db", f->dir);
    if (efc_coord_store_open(f->path, &f->s) != EFC_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char p[128];
    const char *sfx[] = {"", "-wal", "-shm", "-journal"};
    efc_coord_store_close(f->s);
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]);
        unlink(p);
    }
    rmdir(f->dir);
    efc_free(f);
    return 0;
}

static const char *sha(char c)
{
    static char buf[4][EFC_PROTO_SHA256_HEX];
    static int k;
    char *b = buf[k++ & 3];
    memset(b, c, 64);
    b[64] = '\0';
    return b;
}

static void device(struct efc_coord_store *s, const char *id, const char *cls, int online)
{
    struct efc_proto_status st;
    memset(&st, 0, sizeof(st));
    st.version = 1;
    snprintf(st.device_id, sizeof(st.device_id), "%s", id);
    snprintf(st.hw_class, sizeof(st.hw_class), "%s", cls);
    snprintf(st.isa, sizeof(st.isa), "avx2");
    snprintf(st.agent_version, sizeof(st.agent_version), "t");
    st.cores = 1;
    st.online = online;
    assert_int_equal(efc_coord_store_device_upsert(s, &st, 1, NULL), EFC_OK);
}

static void rollout(struct efc_coord_rollout *r, const char *id, const char *cls,
                    const char *policy, char art, uint64_t version)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->rollout_id, sizeof(r->rollout_id), "%s", id);
    snprintf(r->hw_class, sizeof(r->hw_class), "%s", cls);
    snprintf(r->policy, sizeof(r->policy), "%s", policy);
    snprintf(r->round_id, sizeof(r->round_id), "r1");
    snprintf(r->sha256, sizeof(r->sha256), "%s", sha(art));
    r->bytes = 100;
    r->version = version;
    snprintf(r->manifest, sizeof(r->manifest), "{\"signed\":%llu}",
             (unsigned long long)version);
    snprintf(r->waves, sizeof(r->waves), "1,100%%");
    r->gate.max_acc_drop = 0.02;
    r->gate.expected_acc = 0.8;
    r->gate.health_runs = 100;
    r->gate.report_timeout_ms = 60000;
    r->created_ms = 1000;
}

static struct efc_proto_ota_report installed(const char *dev, const char *rollout_id, char art,
                                             uint64_t version, const char *policy)
{
    struct efc_proto_ota_report r = report(EFC_PROTO_OTA_INSTALLED, 80, 100, 1.0);
    snprintf(r.device_id, sizeof(r.device_id), "%s", dev);
    snprintf(r.rollout_id, sizeof(r.rollout_id), "%s", rollout_id);
    snprintf(r.active_sha256, sizeof(r.active_sha256), "%s", sha(art));
    r.active_version = version;
    snprintf(r.active_policy, sizeof(r.active_policy), "%s", policy);
    r.reason[0] = '\0';
    return r;
}

static void test_store_counters(void **state)
{
    struct fx *f = *state;
    uint64_t v1 = 0, v2 = 0;
    char got[EFC_PROTO_SHA256_HEX];

    assert_int_equal(efc_coord_store_ota_version_next(f->s, &v1), EFC_OK);
    assert_int_equal(efc_coord_store_ota_version_next(f->s, &v2), EFC_OK);
    assert_int_equal(v1, 1);
    assert_int_equal(v2, 2);
    /* round artifacts need their model rows (foreign keys) */
    assert_int_equal(efc_coord_store_model_put(f->s, sha('a'), "/x/a.efca", 100,
                                               EFC_COORD_MODEL_BASE),
                     EFC_OK);
    assert_int_equal(efc_coord_store_round_artifact_get(f->s, "r1", "fp32", got),
                     EFC_ENOTFOUND);
    /* after a reopen the counter continues (never reuses a version) */
    efc_coord_store_close(f->s);
    assert_int_equal(efc_coord_store_open(f->path, &f->s), EFC_OK);
    assert_int_equal(efc_coord_store_ota_version_next(f->s, &v1), EFC_OK);
    assert_int_equal(v1, 3);
}

static void test_store_rollouts(void **state)
{
    struct fx *f = *state;
    struct efc_coord_rollout r, got;
    struct efc_coord_rdev d, *list = NULL;
    struct efc_coord_device_model *dm = NULL;
    struct efc_proto_ota_report rep;
    size_t n = 0;
    char busy[EFC_PROTO_ID_MAX] = "";
    int changed = -1;

    assert_int_equal(efc_coord_store_model_put(f->s, sha('a'), "/x/a.efca", 100,
                                               EFC_COORD_MODEL_CANDIDATE),
                     EFC_OK);
    assert_int_equal(efc_coord_store_model_put(f->s, sha('b'), "/x/b.efca", 100,
                                               EFC_COORD_MODEL_CANDIDATE),
                     EFC_OK);
    device(f->s, "d2", "cls", 1);
    device(f->s, "d1", "cls", 1);
    device(f->s, "d3", "cls", 0);
    device(f->s, "o1", "other", 1);

    /* online devices of a class, by id; offline ones are not offered */
    char(*ids)[EFC_PROTO_ID_MAX] = NULL;
    assert_int_equal(efc_coord_store_class_devices(f->s, "cls", &ids, &n), EFC_OK);
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], "d1");
    assert_string_equal(ids[1], "d2");
    efc_free(ids);

    rollout(&r, "ro1", "cls", "int8(calib=kl)", 'a', 1);
    assert_int_equal(efc_coord_store_rollout_create(f->s, &r, busy, sizeof(busy)), EFC_OK);
    /* one running rollout per class; another class is free */
    rollout(&r, "ro2", "cls", "fp32", 'b', 2);
    assert_int_equal(efc_coord_store_rollout_create(f->s, &r, busy, sizeof(busy)), EFC_EBUSY);
    assert_string_equal(busy, "ro1");
    rollout(&r, "ro3", "other", "fp32", 'b', 3);
    assert_int_equal(efc_coord_store_rollout_create(f->s, &r, NULL, 0), EFC_OK);
    /* a version is used once */
    rollout(&r, "ro4", "third", "fp32", 'b', 3);
    assert_int_equal(efc_coord_store_rollout_create(f->s, &r, NULL, 0), EFC_EEXIST);
    /* bad waves are refused before anything is stored */
    rollout(&r, "ro5", "fourth", "fp32", 'b', 5);
    snprintf(r.waves, sizeof(r.waves), "50%%");
    assert_int_equal(efc_coord_store_rollout_create(f->s, &r, NULL, 0), EFC_EINVAL);

    assert_int_equal(efc_coord_store_rollout_get(f->s, "ro1", &got), EFC_OK);
    assert_string_equal(got.policy, "int8(calib=kl)");
    assert_int_equal(got.state, EFC_COORD_ROLLOUT_RUNNING);
    assert_int_equal(got.wave, 0);
    assert_true(got.gate.max_acc_drop == 0.02 && got.gate.expected_acc == 0.8);
    assert_int_equal(got.gate.health_runs, 100);
    assert_string_equal(got.manifest, "{\"signed\":1}");

    /* devices of wave 0 */
    memset(&d, 0, sizeof(d));
    snprintf(d.device_id, sizeof(d.device_id), "d1");
    snprintf(d.ota_id, sizeof(d.ota_id), "ota-1-1");
    d.deadline_ms = 5000;
    assert_int_equal(efc_coord_store_rdev_add(f->s, "ro1", &d), EFC_OK);
    assert_int_equal(efc_coord_store_rdev_add(f->s, "ro1", &d), EFC_EEXIST);
    rep = installed("d1", "ro1", 'a', 1, "int8(calib=kl)");
    assert_int_equal(efc_coord_store_rdev_update(f->s, "ro1", "d1", EFC_COORD_RDEV_INSTALLED, "",
                                                 &rep, 2000, &changed),
                     EFC_OK);
    assert_int_equal(changed, 1);
    /* a duplicate report changes nothing */
    assert_int_equal(efc_coord_store_rdev_update(f->s, "ro1", "d1", EFC_COORD_RDEV_FAILED, "x",
                                                 &rep, 2001, &changed),
                     EFC_OK);
    assert_int_equal(changed, 0);
    assert_int_equal(efc_coord_store_rdev_get(f->s, "ro1", "d1", &d), EFC_OK);
    assert_int_equal(d.state, EFC_COORD_RDEV_INSTALLED);
    assert_int_equal(d.correct, 80);
    assert_int_equal(d.eval_total, 100);
    /* ordered to roll back: REVERTING with a new ota id, then REVERTED */
    assert_int_equal(efc_coord_store_rdev_revert(f->s, "ro1", "d1", "ota-1-rb-1", 9000, 3000),
                     EFC_OK);
    assert_int_equal(efc_coord_store_rdev_get(f->s, "ro1", "d1", &d), EFC_OK);
    assert_int_equal(d.state, EFC_COORD_RDEV_REVERTING);
    assert_string_equal(d.ota_id, "ota-1-rb-1");
    assert_int_equal(d.deadline_ms, 9000);
    assert_int_equal(efc_coord_store_rdev_get(f->s, "ro1", "nope", &d), EFC_ENOTFOUND);

    /* what d1 runs: attributed to the rollout that installed that version, also when another
     * rollout's report (here: refused) says so */
    memset(&d, 0, sizeof(d));
    snprintf(d.device_id, sizeof(d.device_id), "d1");
    snprintf(d.ota_id, sizeof(d.ota_id), "ota-3-1");
    assert_int_equal(efc_coord_store_rdev_add(f->s, "ro3", &d), EFC_OK);
    rep = installed("d1", "ro3", 'a', 1, "int8(calib=kl)");
    rep.outcome = EFC_PROTO_OTA_REFUSED;
    assert_int_equal(efc_coord_store_rdev_update(f->s, "ro3", "d1", EFC_COORD_RDEV_REFUSED,
                                                 "WRONG_CLASS", &rep, 2500, &changed),
                     EFC_OK);
    assert_int_equal(changed, 1);
    assert_int_equal(efc_coord_store_device_models(f->s, &dm, &n), EFC_OK);
    assert_int_equal(n, 1);
    assert_string_equal(dm[0].device_id, "d1");
    assert_string_equal(dm[0].rollout_id, "ro1");
    assert_int_equal(dm[0].version, 1);
    efc_free(dm);

    /* state changes and the newest done / halted rollout below a version */
    assert_int_equal(efc_coord_store_rollout_latest(f->s, "cls", 0, UINT64_MAX, &got),
                     EFC_ENOTFOUND);
    assert_int_equal(efc_coord_store_rollout_update(f->s, "ro1", EFC_COORD_ROLLOUT_DONE, 1,
                                                    "all in", 4000),
                     EFC_OK);
    assert_int_equal(efc_coord_store_rollout_update(f->s, "nope", EFC_COORD_ROLLOUT_DONE, 1, "",
                                                    4000),
                     EFC_ENOTFOUND);
    rollout(&r, "ro6", "cls", "fp32", 'b', 6);
    assert_int_equal(efc_coord_store_rollout_create(f->s, &r, NULL, 0), EFC_OK);
    assert_int_equal(efc_coord_store_rollout_running(f->s, "cls", &got), EFC_OK);
    assert_string_equal(got.rollout_id, "ro6");
    assert_int_equal(efc_coord_store_rollout_update(f->s, "ro6", EFC_COORD_ROLLOUT_HALTED, 0,
                                                    "wave 1: d1 refused", 5000),
                     EFC_OK);
    assert_int_equal(efc_coord_store_rollout_running(f->s, "cls", &got), EFC_ENOTFOUND);
    assert_int_equal(efc_coord_store_rollout_latest(f->s, "cls", 0, UINT64_MAX, &got), EFC_OK);
    assert_string_equal(got.rollout_id, "ro6");
    assert_string_equal(got.reason, "wave 1: d1 refused");
    assert_int_equal(efc_coord_store_rollout_latest(f->s, "cls", 1, UINT64_MAX, &got), EFC_OK);
    assert_string_equal(got.rollout_id, "ro1");
    assert_int_equal(got.wave, 1);
    assert_int_equal(efc_coord_store_rollout_latest(f->s, "cls", 1, 1, &got), EFC_ENOTFOUND);

    /* all of it survives a reopen */
    efc_coord_store_close(f->s);
    assert_int_equal(efc_coord_store_open(f->path, &f->s), EFC_OK);
    struct efc_coord_rollout *all = NULL;
    assert_int_equal(efc_coord_store_rollouts_list(f->s, &all, &n), EFC_OK);
    assert_int_equal(n, 3);
    assert_string_equal(all[0].rollout_id, "ro6"); /* newest first */
    assert_string_equal(all[2].rollout_id, "ro1");
    efc_free(all);
    assert_int_equal(efc_coord_store_rdevs_list(f->s, "ro1", &list, &n), EFC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(list[0].state, EFC_COORD_RDEV_REVERTING);
    efc_free(list);
    assert_int_equal(efc_coord_store_check(f->s), EFC_OK);
}

static void test_store_selections(void **state)
{
    struct fx *f = *state;
    struct efc_coord_class_policy *sel = NULL;
    size_t n = 0;
    struct efc_coord_round r;

    memset(&r, 0, sizeof(r));
    snprintf(r.round_id, sizeof(r.round_id), "r1");
    snprintf(r.base_sha256, sizeof(r.base_sha256), "%s", sha('a'));
    r.n_policies = 2;
    snprintf(r.policies[0], sizeof(r.policies[0]), "fp32");
    snprintf(r.policies[1], sizeof(r.policies[1]), "int8(calib=kl)");
    r.sla.kind = EFC_COORD_SLA_MAX_DROP;
    r.sla.value = 0.01;
    r.devices_per_class = 1;
    r.max_attempts = 3;
    assert_int_equal(efc_coord_store_model_put(f->s, sha('a'), "/x/a.efca", 100,
                                               EFC_COORD_MODEL_BASE),
                     EFC_OK);
    assert_int_equal(efc_coord_store_round_create(f->s, &r), EFC_OK);
    assert_int_equal(efc_coord_store_round_artifact_put(f->s, "r1", "fp32", sha('a')), EFC_OK);
    assert_int_equal(efc_coord_store_round_artifact_put(f->s, "r1", "int8(calib=kl)", sha('a')),
                     EFC_OK);
    char got[EFC_PROTO_SHA256_HEX];
    assert_int_equal(efc_coord_store_round_artifact_get(f->s, "r1", "int8(calib=kl)", got),
                     EFC_OK);
    assert_string_equal(got, sha('a'));
    /* an artifact that is not a known model is refused (foreign key) */
    assert_int_not_equal(efc_coord_store_round_artifact_put(f->s, "r1", "fp32", sha('z')),
                         EFC_OK);
    assert_int_equal(efc_coord_store_selection_put(f->s, "r1", "b-class", "fp32", "{}"), EFC_OK);
    assert_int_equal(efc_coord_store_selection_put(f->s, "r1", "a-class", "int8(calib=kl)", "{}"),
                     EFC_OK);
    assert_int_equal(efc_coord_store_selection_put(f->s, "r1", "c-class", NULL, "{}"), EFC_OK);
    assert_int_equal(efc_coord_store_selections_list(f->s, "r1", &sel, &n), EFC_OK);
    assert_int_equal(n, 2); /* the class with no policy meeting the SLA is left out */
    assert_string_equal(sel[0].hw_class, "a-class");
    assert_string_equal(sel[0].policy, "int8(calib=kl)");
    assert_string_equal(sel[1].hw_class, "b-class");
    efc_free(sel);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waves_parse),
        cmocka_unit_test(test_wave_target),
        cmocka_unit_test(test_gate),
        cmocka_unit_test_setup_teardown(test_store_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_rollouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_selections, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
