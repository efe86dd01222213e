/* fetch_test.h — helpers shared by the URL download tests (test_fetch_url.c,
 * test_fetch_https.c). Include after <cmocka.h>; the includer defines RUN_LIMIT_NS (the
 * longest a test download may take). */
#ifndef EFC_TEST_FETCH_TEST_H
#define EFC_TEST_FETCH_TEST_H

#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/fetch_url.h"
#include "common/efc_status.h"
#include "common/efc_time.h"

static void assert_detail_has(const char *what)
{
    if (!strstr(efc_err_detail(), what))
        fail_msg("detail \"%s\" lacks \"%s\"", efc_err_detail(), what);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0 && write(fd, p, n) == (ssize_t)n;
    if (fd >= 0)
        close(fd);
    return ok ? 0 : -1;
}

/* Run one download with options o to its end (step timeout 20 ms): the final status, the
 * detail in efc_err_detail(), the counters in *s. */
static enum efc_status fetch_opts(const struct efc_agent_fetch_url_opts *o,
                                  struct efc_agent_fetch_url_stats *s)
{
    struct efc_agent_fetch_url *f = NULL;
    uint64_t t0 = efc_time_ns();
    enum efc_status st;
    int done = 0;

    memset(s, 0, sizeof(*s));
    st = efc_agent_fetch_url_start(o, &f);
    if (st != EFC_OK) {
        assert_null(f);
        return st;
    }
    while (!done) {
        st = efc_agent_fetch_url_step(f, 20, &done);
        assert_true(efc_time_ns() - t0 < RUN_LIMIT_NS);
    }
    efc_agent_fetch_url_stats(f, s);
    efc_agent_fetch_url_free(f);
    return st;
}

#endif
