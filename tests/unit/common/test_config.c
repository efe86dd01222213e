/* test_config.c — common/efc_config: defaults < file < environment < command line; every
 * kind of bad input fails naming where it came from; --print-config output loads back as a
 * config file to the same values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_config.h"

struct o {
    const char *name, *dir;
    int64_t runs, mode;
    double ratio;
};

#define F(x) offsetof(struct o, x)
static const struct efc_cfg_opt T[] = {
    {"name", EFC_CFG_STR, NULL, 0, 0, NULL, F(name), "a name"},
    {"state-dir", EFC_CFG_STR, "/var/lib/x", 0, 0, NULL, F(dir), "a directory"},
    {"runs", EFC_CFG_INT, "20", 1, 100, NULL, F(runs), "runs"},
    {"mode", EFC_CFG_ENUM, "bytes", 0, 0, "bytes|p50", F(mode), "mode"},
    {"ratio", EFC_CFG_F64, NULL, 0, 1, NULL, F(ratio), "a ratio"},
};
#define N (sizeof(T) / sizeof(T[0]))

static char g_file[64];

static void write_file(const char *text)
{
    FILE *f = fopen(g_file, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static enum efc_status load(struct o *o, struct efc_config **c, int argc, const char **argv)
{
    memset(o, 0, sizeof(*o));
    return efc_config_load(T, N, o, argc, (char **)argv, c);
}

static void clear_env(void)
{
    unsetenv("EFC_NAME");
    unsetenv("EFC_STATE_DIR");
    unsetenv("EFC_RUNS");
    unsetenv("EFC_MODE");
    unsetenv("EFC_RATIO");
}

static void test_precedence(void **state)
{
    struct o o;
    struct efc_config *c = NULL;
    (void)state;
    clear_env();
    const char *none[] = {"prog"};
    assert_int_equal(load(&o, &c, 1, none), EFC_OK);
    assert_null(o.name);
    assert_string_equal(o.dir, "/var/lib/x");
    assert_int_equal(o.runs, 20);
    assert_int_equal(o.mode, 0);
    assert_int_equal(efc_config_given(c, "runs"), 0);
    efc_config_free(c);

    write_file("# comment\n\n  name = from-file  \nstate_dir=/tmp/f#x\nruns = 30 # why\nmode = p50\n");
    const char *file[] = {"prog", "--config", g_file};
    assert_int_equal(load(&o, &c, 3, file), EFC_OK);
    assert_string_equal(o.name, "from-file");
    assert_string_equal(o.dir, "/tmp/f#x"); /* '#' not after whitespace: part of it */
    assert_int_equal(o.runs, 30);
    assert_int_equal(o.mode, 1);
    assert_int_equal(efc_config_given(c, "runs"), 1);
    assert_int_equal(efc_config_given(c, "ratio"), 0);
    efc_config_free(c);

    setenv("EFC_RUNS", "40", 1);
    setenv("EFC_NAME", "", 1); /* empty: unset */
    const char *all[] = {"prog", "round", "--config=", "--runs=50", "--ratio", "0.25",
                         "--state-dir", "/tmp/a", "x"};
    all[2] = NULL;
    char cfgarg[80];
    snprintf(cfgarg, sizeof(cfgarg), "--config=%s", g_file);
    all[2] = cfgarg;
    assert_int_equal(load(&o, &c, 9, all), EFC_OK);
    assert_string_equal(o.name, "from-file"); /* file; the empty env does not count */
    assert_int_equal(o.runs, 50);             /* argv over env over file */
    assert_string_equal(o.dir, "/tmp/a");
    assert_true(o.ratio == 0.25);
    assert_int_equal(efc_config_npos(c), 2);
    assert_string_equal(efc_config_pos(c, 0), "round");
    assert_string_equal(efc_config_pos(c, 1), "x");
    assert_null(efc_config_pos(c, 2));
    efc_config_free(c);
    const char *env_only[] = {"prog", "--config", g_file};
    assert_int_equal(load(&o, &c, 3, env_only), EFC_OK);
    assert_int_equal(o.runs, 40); /* env over file */
    efc_config_free(c);
    clear_env();
}

static void expect_error(int argc, const char **argv, const char *needle)
{
    struct o o;
    struct efc_config *c = NULL;
    enum efc_status st = load(&o, &c, argc, argv);
    assert_int_not_equal(st, EFC_OK);
    assert_null(c);
    if (!strstr(efc_err_detail(), needle))
        fail_msg("detail \"%s\" lacks \"%s\"", efc_err_detail(), needle);
}

static void test_errors(void **state)
{
    (void)state;
    clear_env();
    const char *unknown[] = {"prog", "--nope", "1"};
    expect_error(3, unknown, "unknown option --nope");
    const char *range[] = {"prog", "--runs", "101"};
    expect_error(3, range, "--runs: runs: \"101\" is not an integer in [1, 100]");
    const char *notnum[] = {"prog", "--ratio=abc"};
    expect_error(2, notnum, "--ratio");
    const char *choice[] = {"prog", "--mode", "fast"};
    expect_error(3, choice, "is not one of bytes|p50");
    const char *novalue[] = {"prog", "--runs"};
    expect_error(2, novalue, "--runs: needs a value");
    const char *nofile[] = {"prog", "--config", "/nonexistent/x.conf"};
    expect_error(3, nofile, "/nonexistent/x.conf");
    const char *file[] = {"prog", "--config", g_file};
    write_file("runs = 5\nbogus = 1\n");
    expect_error(3, file, ":2: unknown key \"bogus\"");
    write_file("runs 5\n");
    expect_error(3, file, ":1: expected key = value");
    write_file("runs = 0\n");
    expect_error(3, file, ":1: runs");
    setenv("EFC_RUNS", "many", 1);
    const char *none[] = {"prog"};
    expect_error(1, none, "env EFC_RUNS");
    clear_env();
    const char *many[] = {"prog", "a", "b", "c", "d", "e", "f", "g", "h", "i"};
    expect_error(10, many, "unexpected argument \"i\"");
}

/* --print-config output is a config file that loads back to the same values (its "# from"
 * comments included). */
static void test_print_round_trip(void **state)
{
    struct o o, back;
    struct efc_config *c = NULL, *c2 = NULL;
    char buf[2048];
    (void)state;
    clear_env();
    const char *argv[] = {"prog", "--name", "dev-1", "--runs", "7", "--mode", "p50",
                          "--help", "--print-config"};
    assert_int_equal(load(&o, &c, 9, argv), EFC_OK);
    assert_int_equal(efc_config_help(c), 1);
    assert_int_equal(efc_config_print_wanted(c), 1);
    FILE *f = fopen(g_file, "w");
    assert_non_null(f);
    efc_config_print(T, N, &o, c, f);
    fclose(f);
    f = fopen(g_file, "r");
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    print_message("%s", buf);
    assert_non_null(strstr(buf, "runs = 7    # command line\n"));
    assert_non_null(strstr(buf, "state-dir = /var/lib/x    # default\n"));
    assert_non_null(strstr(buf, "# ratio = (unset)\n"));
    const char *file[] = {"prog", "--config", g_file};
    assert_int_equal(load(&back, &c2, 3, file), EFC_OK);
    assert_string_equal(back.name, o.name);
    assert_string_equal(back.dir, o.dir);
    assert_int_equal(back.runs, o.runs);
    assert_int_equal(back.mode, o.mode);
    efc_config_free(c2);
    efc_config_free(c);
}

int main(void)
{
    snprintf(g_file, sizeof(g_file), "/tmp/efc-config-%d.conf", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_print_round_trip),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(g_file);
    return rc;
}
