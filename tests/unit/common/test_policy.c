/* test_policy.c — policy grammar: valid strings parse into the expected steps and print back
 * unchanged; malformed strings give EFC_EINVAL with the column and the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/efc_policy.h"

static void roundtrip(const char *s)
{
    struct efc_policy p;
    char buf[EFC_POLICY_STR_MAX];
    assert_int_equal(efc_policy_parse(s, &p), EFC_OK);
    assert_int_equal(efc_policy_format(&p, buf, sizeof(buf)), EFC_OK);
    assert_string_equal(buf, s);
}

static void test_valid(void **state)
{
    struct efc_policy p;
    (void)state;

    assert_int_equal(efc_policy_parse("fp32", &p), EFC_OK);
    assert_int_equal(p.n_steps, 1);
    assert_string_equal(p.steps[0].method, "fp32");
    assert_int_equal(p.steps[0].n_params, 0);

    assert_int_equal(efc_policy_parse("int8(calib=kl,weights=channel)", &p), EFC_OK);
    assert_int_equal(p.n_steps, 1);
    assert_string_equal(p.steps[0].method, "int8");
    assert_int_equal(p.steps[0].n_params, 2);
    assert_string_equal(p.steps[0].params[0].key, "calib");
    assert_string_equal(p.steps[0].params[0].value, "kl");
    assert_string_equal(efc_policy_get(&p.steps[0], "weights"), "channel");
    assert_null(efc_policy_get(&p.steps[0], "p"));

    assert_int_equal(efc_policy_parse("prune(sparsity=0.9,finetune=3)+int8(calib=kl)", &p),
                     EFC_OK);
    assert_int_equal(p.n_steps, 2);
    assert_string_equal(p.steps[0].method, "prune");
    assert_string_equal(efc_policy_get(&p.steps[0], "sparsity"), "0.9");
    assert_string_equal(efc_policy_get(&p.steps[0], "finetune"), "3");
    assert_string_equal(p.steps[1].method, "int8");
    assert_string_equal(efc_policy_get(&p.steps[1], "calib"), "kl");

    roundtrip("fp32");
    roundtrip("int8(calib=percentile,p=99.99,weights=tensor)");
    /* key order is kept as written, not sorted */
    roundtrip("int8(weights=tensor,calib=mse)");
    roundtrip("prune(sparsity=0.9,finetune=3)+int8(calib=kl)");
    roundtrip("distill(teacher=cnn-bn.efm,student=dwsep,t=4,alpha=0.7,epochs=10)"
              "+int8(calib=percentile)");
    roundtrip("a+b+c+d+e+f+g+h");
}

/* s must fail with EFC_EINVAL and a detail containing each of the fragments. */
static void bad(const char *s, const char *frag1, const char *frag2)
{
    struct efc_policy p;
    memset(&p, 0x5a, sizeof(p));
    efc_err_clear();
    assert_int_equal(efc_policy_parse(s, &p), EFC_EINVAL);
    assert_int_equal(p.n_steps, 0); /* zeroed on error */
    if (frag1 && !strstr(efc_err_detail(), frag1))
        fail_msg("'%s': detail '%s' lacks '%s'", s, efc_err_detail(), frag1);
    if (frag2 && !strstr(efc_err_detail(), frag2))
        fail_msg("'%s': detail '%s' lacks '%s'", s, efc_err_detail(), frag2);
}

static void test_malformed(void **state)
{
    (void)state;
    struct efc_policy p;
    assert_int_equal(efc_policy_parse("int8(calib=kl", &p), EFC_EINVAL);
    assert_string_equal(efc_err_detail(), "policy 'int8(calib=kl' at column 14: expected ')'");

    bad("", "empty", NULL);
    bad("int8(", "column 6", "key name");
    bad("int8()", "column 6", "got ')'");
    bad("int8(calib)", "column 11", "expected '='");
    bad("int8(calib=)", "column 12", "expected a value for 'calib'");
    bad("int8(calib=kl,)", "column 15", "key name");
    bad("int8(calib=kl;weights=tensor)", "column 14", "got ';'");
    bad("int8(calib=kl)x", "column 15", "expected '+'");
    bad("fp32+", "column 6", "end of policy");
    bad("+fp32", "column 1", "method name");
    bad("fp32 ", "column 5", "white space");
    bad("int8( calib=kl)", "column 6", "white space");
    bad("Int8", "column 1", "method name");
    bad("int8(calib=kl,calib=mse)", "column 15", "repeated");
    bad("int8(calib=k\x01l)", "column 13", "byte 0x01");
    bad("a+b+c+d+e+f+g+h+i", "more than 8 steps", NULL);
    bad("s(a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1)", "more than 8 parameters", NULL);
    bad("abcdefghijabcdefghijabcdefghijabcdefghij", "longer than 31", NULL);
    bad("x(k=abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij12345)",
        "value of 'k' longer", NULL);
    {
        char longs[400];
        memset(longs, 'a', sizeof(longs) - 1);
        longs[sizeof(longs) - 1] = '\0';
        bad(longs, "longer than 255", NULL);
    }
    assert_int_equal(efc_policy_parse(NULL, &p), EFC_EINVAL);
}

static void test_format_errors(void **state)
{
    struct efc_policy p;
    char small[8];
    (void)state;
    assert_int_equal(efc_policy_parse("int8(calib=kl)", &p), EFC_OK);
    assert_int_equal(efc_policy_format(&p, small, sizeof(small)), EFC_EINVAL);
    memset(&p, 0, sizeof(p));
    assert_int_equal(efc_policy_format(&p, small, sizeof(small)), EFC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_format_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
