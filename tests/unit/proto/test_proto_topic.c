/* test_proto_topic.c — topic build/parse for device topics and artifact topics: every kind
 * (two-level ones too: "chunk/req", "ota/report"), custom prefixes, bad ids, bad prefixes
 * (wildcards, empty levels), overflow, and parse of foreign or malformed topics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/chunk.h"
#include "proto/proto.h"

#define HEX_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_build_parse_all_kinds(void **state)
{
    static const char *const kinds[] = {"status",    "job", "result",    "ack",
                                        "chunk/req", "ota", "ota/report"};
    char t[256], id[EFC_PROTO_ID_MAX], kind[16];
    (void)state;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        assert_int_equal(efc_proto_topic("efc/v1", "dev-01", kinds[i], t, sizeof(t)), EFC_OK);
        assert_int_equal(efc_proto_topic_parse("efc/v1", t, id, sizeof(id), kind, sizeof(kind)),
                         EFC_OK);
        assert_string_equal(id, "dev-01");
        assert_string_equal(kind, kinds[i]);
    }
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "status", t, sizeof(t)), EFC_OK);
    assert_string_equal(t, "efc/v1/dev/dev-01/status");
    assert_int_equal(efc_proto_topic("lab/bench-3/efc", "A.b_c-9", "chunk/req", t, sizeof(t)),
                     EFC_OK);
    assert_string_equal(t, "lab/bench-3/efc/dev/A.b_c-9/chunk/req");
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "ota", t, sizeof(t)), EFC_OK);
    assert_string_equal(t, "efc/v1/dev/dev-01/ota");
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "ota/report", t, sizeof(t)), EFC_OK);
    assert_string_equal(t, "efc/v1/dev/dev-01/ota/report");
    /* Exactly fits: "efc/v1/dev/dev-01/ota/report" is 28 characters + NUL. */
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "ota/report", t, 29), EFC_OK);
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "ota/report", t, 28), EFC_EINVAL);
}

static void test_build_rejects(void **state)
{
    char t[256], small[20];
    (void)state;
    assert_int_equal(efc_proto_topic("efc/v1", "dev/01", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "dev+", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "#", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", NULL, "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(
        efc_proto_topic("efc/v1",
                        "0123456789012345678901234567890123456789012345678901234567890123", "job",
                        t, sizeof(t)),
        EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "jobs", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "report", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "ota/", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "ota/+", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", NULL, t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/+", "dev-01", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1/", "dev-01", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("/efc", "dev-01", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc//v1", "dev-01", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("", "dev-01", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc v1", "dev-01", "job", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "status", small, sizeof(small)),
                     EFC_EINVAL);
    assert_string_equal(small, "");
    /* Exactly fits: 24 characters + NUL. */
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "status", t, 25), EFC_OK);
    assert_int_equal(efc_proto_topic("efc/v1", "dev-01", "status", t, 24), EFC_EINVAL);
}

static void test_parse_rejects(void **state)
{
    static const char *const bad[] = {
        "efc/v2/dev/dev-01/job",
        "efc/v1/dev/dev-01",
        "efc/v1/dev/dev-01/",
        "efc/v1/dev//job",
        "efc/v1/dev/dev-01/jobs",
        "efc/v1/dev/dev 01/job",
        "efc/v1/dev/a+b/job",
        "efc/v1/dev/dev-01/job/x",
        "efc/v1/art/" HEX_A "/dev-01",
        "efc/v1dev/dev-01/job",
        "efc/v1/dev/dev-01/chunk",
        "efc/v1/dev/dev-01/chunk/req/x",
        "efc/v1/dev/dev-01/ota/",
        "efc/v1/dev/dev-01/ota/reports",
        "efc/v1/dev/dev-01/ota/report/x",
        "efc/v1/dev/dev-01/ota/ack",
        "efc/v1/dev/dev-01/report",
        "efc/v1/dev/dev-01/OTA",
        "efc/v1/dev/ota/report",
        "efc/v1/dev/d\xc3\xa9v/job",
        "",
        "efc/v1/dev/0123456789012345678901234567890123456789012345678901234567890123/job",
    };
    char id[EFC_PROTO_ID_MAX], kind[16];
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum efc_status st =
            efc_proto_topic_parse("efc/v1", bad[i], id, sizeof(id), kind, sizeof(kind));
        if (st != EFC_EPROTO)
            fail_msg("topic \"%s\" gave %s, want EPROTO", bad[i], efc_status_str(st));
        assert_string_equal(id, "");
    }
    /* Output buffers too small are the caller's bug. */
    assert_int_equal(
        efc_proto_topic_parse("efc/v1", "efc/v1/dev/dev-01/chunk/req", id, 4, kind, sizeof(kind)),
        EFC_EINVAL);
    assert_int_equal(
        efc_proto_topic_parse("efc/v1", "efc/v1/dev/dev-01/chunk/req", id, sizeof(id), kind, 5),
        EFC_EINVAL);
    assert_int_equal(
        efc_proto_topic_parse("efc/+", "efc/+/dev/dev-01/job", id, sizeof(id), kind, sizeof(kind)),
        EFC_EINVAL);
    /* "ota/report" needs 11 bytes of kind */
    assert_int_equal(
        efc_proto_topic_parse("efc/v1", "efc/v1/dev/dev-01/ota/report", id, sizeof(id), kind, 10),
        EFC_EINVAL);
    assert_int_equal(
        efc_proto_topic_parse("efc/v1", "efc/v1/dev/dev-01/ota/report", id, sizeof(id), kind, 11),
        EFC_OK);
    assert_string_equal(kind, "ota/report");
}

static void test_artifact_topic(void **state)
{
    char t[256], sha[EFC_PROTO_SHA256_HEX], id[EFC_PROTO_ID_MAX];
    (void)state;
    assert_int_equal(efc_chunk_topic("efc/v1", HEX_A, "dev-01", t, sizeof(t)), EFC_OK);
    assert_string_equal(t, "efc/v1/art/" HEX_A "/dev-01");
    assert_int_equal(efc_chunk_topic_parse("efc/v1", t, sha, id), EFC_OK);
    assert_string_equal(sha, HEX_A);
    assert_string_equal(id, "dev-01");
    assert_int_equal(efc_chunk_topic("efc/v1", "ABC", "dev-01", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_chunk_topic("efc/v1", HEX_A, "dev/01", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_chunk_topic("efc/#", HEX_A, "dev-01", t, sizeof(t)), EFC_EINVAL);
    assert_int_equal(efc_chunk_topic("efc/v1", HEX_A, "dev-01", t, 40), EFC_EINVAL);
    assert_int_equal(efc_chunk_topic_parse("efc/v1", "efc/v1/art/" HEX_A "/", sha, id), EFC_EPROTO);
    assert_int_equal(efc_chunk_topic_parse("efc/v1", "efc/v1/art/" HEX_A "/a/b", sha, id),
                     EFC_EPROTO);
    assert_int_equal(efc_chunk_topic_parse("efc/v1", "efc/v1/art/abc/dev-01", sha, id), EFC_EPROTO);
    assert_int_equal(efc_chunk_topic_parse("efc/v1", "efc/v1/dev/dev-01/job", sha, id), EFC_EPROTO);
    assert_string_equal(sha, "");
}

static void test_id_valid(void **state)
{
    (void)state;
    assert_true(efc_proto_id_valid("a"));
    assert_true(efc_proto_id_valid("Dev_01.x-y"));
    assert_false(efc_proto_id_valid(""));
    assert_false(efc_proto_id_valid(NULL));
    assert_false(efc_proto_id_valid("a b"));
    assert_false(efc_proto_id_valid(".."));
    assert_false(efc_proto_id_valid(".hidden"));
    assert_false(efc_proto_id_valid("-opt"));
    assert_false(efc_proto_id_valid("_x"));
    assert_true(efc_proto_id_valid("x.."));
    assert_false(efc_proto_id_valid("a/b"));
    assert_false(efc_proto_id_valid("a\xc3\xa9"));
    assert_true(
        efc_proto_id_valid("012345678901234567890123456789012345678901234567890123456789012"));
    assert_false(
        efc_proto_id_valid("0123456789012345678901234567890123456789012345678901234567890123"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_parse_all_kinds),
        cmocka_unit_test(test_build_rejects),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_artifact_topic),
        cmocka_unit_test(test_id_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
