/* test_agent_state.c — the agent's job journal and result outbox survive restarts, ignore
 * replays, reject path tricks, and never lose an unacked result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/state.h"

struct seen {
    int n;
    char ids[8][64];
    char payload[8][64];
};

static enum efc_status collect(void *ctx, const char *id, const void *p, size_t len)
{
    struct seen *s = ctx;
    if (s->n < 8) {
        snprintf(s->ids[s->n], 64, "%s", id);
        snprintf(s->payload[s->n], 64, "%.*s", (int)len, p ? (const char *)p : "");
    }
    s->n++;
    return EFC_OK;
}

static char *tmpdir(void)
{
    static char d[64];
    snprintf(d, sizeof(d), "/tmp/efc-test-state-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void test_lifecycle_and_restart(void **state)
{
    struct efc_agent_state *s;
    enum efc_agent_job_phase ph;
    struct seen seen = {0};
    char *d = tmpdir();
    (void)state;
    assert_int_equal(efc_agent_state_open(d, &s), EFC_OK);
    assert_int_equal(efc_agent_journal_get(s, "r1.0", &ph), EFC_OK);
    assert_int_equal(ph, EFC_AGENT_JOB_NEW);
    assert_int_equal(efc_agent_journal_set(s, "r1.0", EFC_AGENT_JOB_RUNNING), EFC_OK);
    assert_int_equal(efc_agent_outbox_put(s, "r1.0", "{\"x\":1}", 7), EFC_OK);
    assert_int_equal(efc_agent_journal_get(s, "r1.0", &ph), EFC_OK);
    assert_int_equal(ph, EFC_AGENT_JOB_DONE);
    /* a replayed job message tries to start it again: nothing moves backwards */
    assert_int_equal(efc_agent_journal_set(s, "r1.0", EFC_AGENT_JOB_RUNNING), EFC_OK);
    assert_int_equal(efc_agent_journal_get(s, "r1.0", &ph), EFC_OK);
    assert_int_equal(ph, EFC_AGENT_JOB_DONE);
    assert_int_equal(efc_agent_journal_set(s, "r1.1", EFC_AGENT_JOB_RUNNING), EFC_OK);
    efc_agent_state_close(s);

    /* restart: the unacked result is still there to resend, r1.1 was interrupted */
    assert_int_equal(efc_agent_state_open(d, &s), EFC_OK);
    assert_int_equal(efc_agent_outbox_each(s, collect, &seen), EFC_OK);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.ids[0], "r1.0");
    assert_string_equal(seen.payload[0], "{\"x\":1}");
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(efc_agent_journal_interrupted(s, collect, &seen), EFC_OK);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.ids[0], "r1.1");

    /* ack: gone from the outbox, journal ACKED; a second ack and a replay change nothing */
    assert_int_equal(efc_agent_outbox_ack(s, "r1.0"), EFC_OK);
    assert_int_equal(efc_agent_outbox_ack(s, "r1.0"), EFC_OK);
    assert_int_equal(efc_agent_outbox_ack(s, "never-seen"), EFC_OK);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(efc_agent_outbox_each(s, collect, &seen), EFC_OK);
    assert_int_equal(seen.n, 0);
    assert_int_equal(efc_agent_journal_set(s, "r1.0", EFC_AGENT_JOB_RUNNING), EFC_OK);
    assert_int_equal(efc_agent_journal_get(s, "r1.0", &ph), EFC_OK);
    assert_int_equal(ph, EFC_AGENT_JOB_ACKED);
    efc_agent_state_close(s);
}

static void test_bad_ids_and_temp_files(void **state)
{
    struct efc_agent_state *s;
    enum efc_agent_job_phase ph;
    struct seen seen = {0};
    char *d = tmpdir(), path[256];
    (void)state;
    assert_int_equal(efc_agent_state_open(d, &s), EFC_OK);
    const char *bad[] = {"", ".", "..", "../x", "a/b", "a b", "job.tmp.123",
                         "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(efc_agent_journal_get(s, bad[i], &ph), EFC_EINVAL);
        assert_int_equal(efc_agent_outbox_put(s, bad[i], "x", 1), EFC_EINVAL);
    }
    efc_agent_state_close(s);
    /* an interrupted atomic write leaves a temp file: never listed, removed at open */
    snprintf(path, sizeof(path), "%s/outbox/r2.0.tmp.999", d);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("partial", f);
    fclose(f);
    assert_int_equal(efc_agent_state_open(d, &s), EFC_OK);
    assert_int_equal(efc_agent_outbox_each(s, collect, &seen), EFC_OK);
    assert_int_equal(seen.n, 0);
    assert_int_not_equal(access(path, F_OK), 0);
    efc_agent_state_close(s);
}

/* kill -9 at random points while results go in and acks come back: after every restart each
 * result is either still in the outbox or acked, never lost, never half-written */
static void test_kill_during_writes(void **state)
{
    char *d = tmpdir();
    int progressed = 0;
    (void)state;
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            struct efc_agent_state *s;
            char id[32], payload[64];
            if (efc_agent_state_open(d, &s))
                _exit(1);
            for (int i = 0; i < 200; i++) {
                snprintf(id, sizeof(id), "j%d", i);
                snprintf(payload, sizeof(payload), "{\"job\":\"%s\",\"ok\":1}", id);
                efc_agent_journal_set(s, id, EFC_AGENT_JOB_RUNNING);
                efc_agent_outbox_put(s, id, payload, strlen(payload));
                if (i % 3 == 0)
                    efc_agent_outbox_ack(s, id);
            }
            _exit(0);
        }
        usleep((useconds_t)(2000 + 3000 * (round % 7)));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        struct efc_agent_state *s;
        struct seen seen = {0};
        assert_int_equal(efc_agent_state_open(d, &s), EFC_OK);
        assert_int_equal(efc_agent_outbox_each(s, collect, &seen), EFC_OK);
        for (int i = 0; i < seen.n && i < 8; i++) /* whole payloads only */
            assert_non_null(strstr(seen.payload[i], "\"ok\":1}"));
        for (int i = 0; i < 200; i++) {
            char id[32];
            enum efc_agent_job_phase ph;
            snprintf(id, sizeof(id), "j%d", i);
            assert_int_equal(efc_agent_journal_get(s, id, &ph), EFC_OK);
            progressed += ph != EFC_AGENT_JOB_NEW;
        }
        efc_agent_state_close(s);
    }
    printf("journal entries written across the killed runs: %d\n", progressed);
    assert_true(progressed > 0); /* the kills did land in the middle of real work */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle_and_restart),
        cmocka_unit_test(test_bad_ids_and_temp_files),
        cmocka_unit_test(test_kill_during_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
