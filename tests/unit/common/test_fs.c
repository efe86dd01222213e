/* test_fs.c — durable file helpers (common/efc_fs.h): atomic replace (content, no temp file
 * left, an unwritable directory refused with the path), whole-file reads (size cap, missing
 * file), and durable mkdir (created, existing, missing parent refused naming the path). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_alloc.h"
#include "common/efc_fs.h"

static char g_dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/efc-fs-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char p[128];
    (void)state;
    snprintf(p, sizeof(p), "%s/a/b", g_dir);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/a", g_dir);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/f", g_dir);
    unlink(p);
    rmdir(g_dir);
    return 0;
}

static int n_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_write_read(void **state)
{
    char path[128];
    void *buf = NULL;
    size_t len = 0;
    (void)state;
    snprintf(path, sizeof(path), "%s/f", g_dir);
    assert_int_equal(efc_fs_write_atomic(path, "hello", 5), EFC_OK);
    assert_int_equal(efc_fs_write_atomic(path, "bye", 3), EFC_OK); /* replaced */
    assert_int_equal(efc_fs_read_all(path, 100, &buf, &len), EFC_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "bye", 3);
    efc_free(buf);
    assert_int_equal(n_entries(g_dir), 1); /* no temp file left */
    assert_int_equal(efc_fs_read_all(path, 2, &buf, &len), EFC_EPROTO); /* over the cap */
    snprintf(path, sizeof(path), "%s/missing", g_dir);
    assert_int_equal(efc_fs_read_all(path, 100, &buf, &len), EFC_ENOTFOUND);
    snprintf(path, sizeof(path), "%s/no/such/dir/f", g_dir);
    assert_int_equal(efc_fs_write_atomic(path, "x", 1), EFC_EIO);
    assert_non_null(strstr(efc_err_detail(), "no/such/dir"));
}

static void test_mkdir_durable(void **state)
{
    char path[128];
    struct stat sb;
    (void)state;
    snprintf(path, sizeof(path), "%s/a", g_dir);
    assert_int_equal(efc_fs_mkdir_durable(path, 0700), EFC_OK);
    assert_int_equal(stat(path, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(efc_fs_mkdir_durable(path, 0700), EFC_OK); /* exists: fine */
    snprintf(path, sizeof(path), "%s/a/b", g_dir);
    assert_int_equal(efc_fs_mkdir_durable(path, 0755), EFC_OK);
    snprintf(path, sizeof(path), "%s/x/y", g_dir);
    assert_int_equal(efc_fs_mkdir_durable(path, 0700), EFC_EIO); /* no parent */
    assert_non_null(strstr(efc_err_detail(), "x/y"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_read),
        cmocka_unit_test(test_mkdir_durable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
