/* test_fetch_https.c — the URL download (agent/fetch_url.c) over real TLS on loopback
 * (RELIABILITY.md F1, F3, F4, F5, F6 over https). The test makes its own PKI with the openssl
 * CLI (EC P-256: a CA, a foreign CA, a server certificate for IP:127.0.0.1 and DNS:localhost,
 * one for another name) and starts tests/integration/tools/httpfault.py (/usr/bin/python3,
 * stdlib http.server + ssl) with one HTTPS port per certificate and a plain HTTP port.
 * Checked: a good download with ca_file, a cut over TLS resumed with Range and If-Range, an
 * object changed between attempts restarted from 0; no ca_file (system store), a foreign CA,
 * a certificate for another host name and a missing ca_file are EFC_ETLS; an https-to-http
 * and an https-to-file redirect are refused (EFC_EUNSUPPORTED) while https-to-https is
 * followed; an endless body is stopped at expected_bytes; a server idle after its headers is
 * aborted by the low-speed limit within limit + 2 s. Every test is skipped (not failed) when
 * /usr/bin/python3, openssl or httpfault.py is missing. About 4 s. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
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

#include "agent/fetch_url.h"
#include "common/efc_alloc.h"
#include "common/efc_rng.h"
#include "common/efc_sha256.h"
#include "common/efc_time.h"

#define N_BYTES 150001u
#define RUN_LIMIT_NS (20ull * 1000000000ull) /* a test download never takes this long */

#include "fetch_test.h"
#define PYTHON "/usr/bin/python3"            /* the pyenv shim on PATH may be another one */
#define OPENSSL "/usr/bin/openssl"

static const char *g_skip; /* why every test is skipped, NULL when the tools are there */
static char g_dir[64];
static char g_script[4096];
static char g_src[128], g_dest[128], g_part[140], g_etag[150];
static char g_ca[128], g_ca2[128];
static uint8_t *g_data, *g_data2;
static char g_sha[EFC_SHA256_HEX_BYTES], g_sha2[EFC_SHA256_HEX_BYTES];
static int g_port_good, g_port_wrong, g_port_plain;
static pid_t g_server = -1;
static int g_server_stdin = -1; /* closing it ends the server */

/* ---- helpers ------------------------------------------------------------------------------- */



static void in_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", g_dir, name);
}

/* Run argv (argv[0] an absolute path) in g_dir, output discarded; 0 if it exited 0. */
static int run(char *const argv[])
{
    int status = 0;
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        if (chdir(g_dir) == 0)
            execv(argv[0], argv);
        _exit(127);
    }
    if (waitpid(p, &status, 0) != p)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* A CA: self-signed EC P-256 key and certificate (names relative to g_dir). */
static int make_ca(const char *key, const char *cert, const char *cn)
{
    char subj[64];
    snprintf(subj, sizeof(subj), "/CN=%s", cn);
    char *const argv[] = {OPENSSL,
                          "req",
                          "-x509",
                          "-newkey",
                          "ec",
                          "-pkeyopt",
                          "ec_paramgen_curve:P-256",
                          "-nodes",
                          "-keyout",
                          (char *)key,
                          "-out",
                          (char *)cert,
                          "-subj",
                          subj,
                          "-days",
                          "2",
                          "-addext",
                          "basicConstraints=critical,CA:TRUE",
                          "-addext",
                          "keyUsage=critical,keyCertSign,cRLSign",
                          NULL};
    return run(argv);
}

/* A server certificate signed by ca.pem, with subjectAltName san. */
static int make_server_cert(const char *name, const char *cn, const char *san)
{
    char key[64], csr[64], cert[64], ext[64], extpath[128], line[160], subj[64];
    snprintf(key, sizeof(key), "%s.key", name);
    snprintf(csr, sizeof(csr), "%s.csr", name);
    snprintf(cert, sizeof(cert), "%s.pem", name);
    snprintf(ext, sizeof(ext), "%s.ext", name);
    snprintf(subj, sizeof(subj), "/CN=%s", cn);
    in_dir(extpath, sizeof(extpath), ext);
    snprintf(line, sizeof(line), "subjectAltName=%s\nextendedKeyUsage=serverAuth\n", san);
    if (write_file(extpath, line, strlen(line)))
        return -1;
    char *const req[] = {
        OPENSSL,  "req",     "-newkey", "ec",   "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", key,       "-out", csr,        "-subj",
        subj,     NULL};
    char *const sign[] = {
        OPENSSL,           "x509",  "-req", "-in",  csr,  "-CA",      "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2",    "-out", cert, "-extfile", ext,      NULL};
    return run(req) || run(sign) ? -1 : 0;
}

/* Start httpfault.py (HTTPS good, HTTPS wrong name, plain HTTP) and read its ports. */
static int server_start(void)
{
    int in[2], out[2];
    char line[128] = "", good[300], wrong[300];
    size_t n = 0;
    uint64_t t0 = efc_time_ns();

    snprintf(good, sizeof(good), "%s/good.pem:%s/good.key", g_dir, g_dir);
    snprintf(wrong, sizeof(wrong), "%s/wrong.pem:%s/wrong.key", g_dir, g_dir);
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
        return -1;
    g_server = fork();
    if (g_server < 0)
        return -1;
    if (g_server == 0) {
        char *const argv[] = {PYTHON, g_script, "--file", g_src,     "--tls",
                              good,   "--tls",  wrong,    "--plain", NULL};
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    g_server_stdin = in[1];
    /* "ports A B C\n" once all three listen; python starts in well under a second */
    while (!strchr(line, '\n') && n < sizeof(line) - 1 && efc_time_ns() - t0 < 10000000000ull) {
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        ssize_t k;
        if (poll(&p, 1, 100) <= 0)
            continue;
        k = read(out[0], line + n, sizeof(line) - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        line[n] = '\0';
    }
    close(out[0]);
    if (sscanf(line, "ports %d %d %d", &g_port_good, &g_port_wrong, &g_port_plain) != 3)
        return -1;
    return 0;
}

static void remove_dir(void)
{
    DIR *d = opendir(g_dir);
    struct dirent *e;
    char p[512];
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        snprintf(p, sizeof(p), "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(g_dir);
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static int setup(void **state)
{
    const char *src = getenv("EFC_SOURCE_DIR");
    struct efc_rng r;
    uint8_t d[EFC_SHA256_BYTES];
    (void)state;
    umask(022);
    signal(SIGPIPE, SIG_IGN);
    /* The script beside the sources: from ctest's EFC_SOURCE_DIR, else from this file's own
     * path (CMake compiles it by absolute path), so the binary also runs by hand. */
    if (src) {
        snprintf(g_script, sizeof(g_script), "%s/tests/integration/tools/httpfault.py", src);
    } else {
        const char *slash = strrchr(__FILE__, '/'); /* .../tests/unit/agent/test_fetch_https.c */
        snprintf(g_script, sizeof(g_script), "%.*s/../../integration/tools/httpfault.py",
                 slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    }
    if (access(PYTHON, X_OK) != 0) {
        g_skip = PYTHON " not found";
        return 0;
    }
    if (access(OPENSSL, X_OK) != 0) {
        g_skip = OPENSSL " not found";
        return 0;
    }
    if (access(g_script, R_OK) != 0) {
        g_skip = "httpfault.py not found";
        return 0;
    }
    snprintf(g_dir, sizeof(g_dir), "/tmp/efc-test-fetch-https-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    in_dir(g_src, sizeof(g_src), "object");
    in_dir(g_dest, sizeof(g_dest), "artifact");
    snprintf(g_part, sizeof(g_part), "%s.part", g_dest);
    snprintf(g_etag, sizeof(g_etag), "%s.part.etag", g_dest);
    in_dir(g_ca, sizeof(g_ca), "ca.pem");
    in_dir(g_ca2, sizeof(g_ca2), "ca2.pem");
    g_data = efc_malloc(N_BYTES);
    g_data2 = efc_malloc(N_BYTES);
    if (!g_data || !g_data2)
        return -1;
    efc_rng_init(&r, 7);
    for (size_t i = 0; i < N_BYTES; i++)
        g_data[i] = (uint8_t)efc_rng_below(&r, 256);
    memcpy(g_data2, g_data, N_BYTES);
    for (size_t i = 10; i < N_BYTES; i += 4096)
        g_data2[i] ^= 0xA5;
    efc_sha256(g_data, N_BYTES, d);
    efc_sha256_hex(d, g_sha);
    efc_sha256(g_data2, N_BYTES, d);
    efc_sha256_hex(d, g_sha2);
    if (write_file(g_src, g_data, N_BYTES))
        return -1;
    if (make_ca("ca.key", "ca.pem", "efc-test-ca") ||
        make_ca("ca2.key", "ca2.pem", "efc-foreign-ca") ||
        make_server_cert("good", "localhost", "IP:127.0.0.1,DNS:localhost") ||
        make_server_cert("wrong", "wrong.example", "DNS:wrong.example")) {
        print_message("openssl failed to make the test PKI in %s\n", g_dir);
        return -1;
    }
    return server_start();
}

static int teardown(void **state)
{
    (void)state;
    if (g_server_stdin >= 0)
        close(g_server_stdin);
    if (g_server > 0) {
        kill(g_server, SIGTERM);
        waitpid(g_server, NULL, 0);
    }
    if (g_dir[0])
        remove_dir();
    efc_free(g_data);
    efc_free(g_data2);
    return 0;
}

/* Before each test: no destination, no .part, no .etag, the object at version 1. */
static int clean(void **state)
{
    (void)state;
    if (g_skip)
        return 0;
    unlink(g_dest);
    unlink(g_part);
    unlink(g_etag);
    return write_file(g_src, g_data, N_BYTES);
}

#define SKIP_IF_NO_TOOLS()                                                                         \
    do {                                                                                           \
        if (g_skip) {                                                                              \
            print_message("skipped: %s\n", g_skip);                                                \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static int dest_is(const uint8_t *data)
{
    struct stat sb;
    uint8_t *buf;
    int fd, ok;
    if (stat(g_dest, &sb) != 0 || (uint64_t)sb.st_size != N_BYTES)
        return 0;
    buf = efc_malloc(N_BYTES);
    assert_non_null(buf);
    fd = open(g_dest, O_RDONLY | O_CLOEXEC);
    ok = fd >= 0 && read(fd, buf, N_BYTES) == (ssize_t)N_BYTES && memcmp(buf, data, N_BYTES) == 0;
    if (fd >= 0)
        close(fd);
    efc_free(buf);
    return ok;
}

static void url_at(char *out, size_t n, const char *scheme_host, int port, const char *path)
{
    snprintf(out, n, "%s:%d%s", scheme_host, port, path);
}


static enum efc_status fetch(const char *url, const char *ca, const char *sha,
                             struct efc_agent_fetch_url_stats *s)
{
    struct efc_agent_fetch_url_opts o = {.url = url,
                                         .dest_path = g_dest,
                                         .expected_bytes = N_BYTES,
                                         .sha256_hex = sha,
                                         .ca_file = ca};
    return fetch_opts(&o, s);
}


/* ---- tests --------------------------------------------------------------------------------- */

/* A good download with the test CA; then a cut at an odd offset (no close_notify) and a
 * resume from the .part with Range + If-Range, by host name this time (DNS SAN). */
static void test_https_good_and_resume(void **state)
{
    struct efc_agent_fetch_url_stats s;
    struct stat sb;
    char url[160], etag[64];
    int fd;
    ssize_t k;
    (void)state;
    SKIP_IF_NO_TOOLS();
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good, "/a");
    if (fetch(url, g_ca, g_sha, &s) != EFC_OK)
        fail_msg("%s", efc_err_detail());
    assert_true(dest_is(g_data));
    assert_int_equal(s.bytes_received, N_BYTES);
    assert_false(exists(g_part));
    assert_false(exists(g_etag));

    clean(NULL);
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good, "/a?cut=60001");
    assert_int_equal(fetch(url, g_ca, g_sha, &s), EFC_ENET);
    assert_detail_has(url);
    assert_int_equal(stat(g_part, &sb), 0);
    assert_int_equal(sb.st_size, 60001);
    fd = open(g_etag, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    k = read(fd, etag, sizeof(etag) - 1);
    close(fd);
    assert_int_equal(k, 19); /* "<16 hex>"\n: httpfault's strong ETag */
    assert_int_equal(etag[0], '"');
    assert_false(exists(g_dest));

    url_at(url, sizeof(url), "https://localhost", g_port_good, "/a");
    if (fetch(url, g_ca, g_sha, &s) != EFC_OK)
        fail_msg("%s", efc_err_detail());
    assert_true(dest_is(g_data));
    assert_int_equal(s.resumed_from, 60001);
    assert_int_equal(s.bytes_received, N_BYTES - 60001);
    assert_int_equal(s.n_restarts, 0);
    assert_false(exists(g_etag));
}

/* F3 over https: the object is rewritten between a cut and the resume; If-Range (the old
 * ETag) draws a 200 and one restart, exactly one body is received, the new object installed. */
static void test_https_object_changed(void **state)
{
    struct efc_agent_fetch_url_stats s;
    char url[160];
    (void)state;
    SKIP_IF_NO_TOOLS();
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good, "/a?cut=99999");
    assert_int_equal(fetch(url, g_ca, g_sha, &s), EFC_ENET);
    assert_true(exists(g_etag));
    assert_int_equal(write_file(g_src, g_data2, N_BYTES), 0);
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good, "/a");
    if (fetch(url, g_ca, g_sha2, &s) != EFC_OK)
        fail_msg("%s", efc_err_detail());
    assert_true(dest_is(g_data2));
    assert_int_equal(s.resumed_from, 99999);
    assert_int_equal(s.n_restarts, 1);
    assert_int_equal(s.bytes_received, N_BYTES);
}

/* F5: every certificate failure is EFC_ETLS (curl 60 / 77), nothing is installed and no
 * empty .part is left. */
static void test_https_verification_failures(void **state)
{
    struct efc_agent_fetch_url_stats s;
    char url[160], missing[160];
    (void)state;
    SKIP_IF_NO_TOOLS();
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good, "/a");
    /* no ca_file: the system store does not know the test CA */
    assert_int_equal(fetch(url, NULL, g_sha, &s), EFC_ETLS);
    assert_detail_has("curl 60");
    /* a foreign CA */
    assert_int_equal(fetch(url, g_ca2, g_sha, &s), EFC_ETLS);
    assert_detail_has(url);
    assert_detail_has("curl 60");
    assert_int_equal(s.bytes_received, 0);
    assert_false(exists(g_dest));
    assert_false(exists(g_part));
    /* a ca_file that does not exist */
    in_dir(missing, sizeof(missing), "no-such-ca.pem");
    assert_int_equal(fetch(url, missing, g_sha, &s), EFC_ETLS);
    assert_detail_has("curl 77");
    /* the right CA, a certificate for another name (connecting to 127.0.0.1) */
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_wrong, "/a");
    assert_int_equal(fetch(url, g_ca, g_sha, &s), EFC_ETLS);
    assert_detail_has("curl 60");
    assert_false(exists(g_dest));
    assert_false(exists(g_part));
    /* an empty ca_file name is a caller bug */
    assert_int_equal(fetch(url, "", g_sha, &s), EFC_EINVAL);
}

/* F5: from https, a redirect to http (to a working server) or to file:// is refused; one to
 * https is followed. */
static void test_https_redirects(void **state)
{
    struct efc_agent_fetch_url_stats s;
    char url[600];
    (void)state;
    SKIP_IF_NO_TOOLS();
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good,
           "/a?redirect=http://127.0.0.1:PLAIN/a");
    assert_int_equal(fetch(url, g_ca, g_sha, &s), EFC_EUNSUPPORTED);
    assert_detail_has(url);
    assert_int_equal(s.bytes_received, 0);
    assert_false(exists(g_dest));
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/a?redirect=file://%s", g_port_good, g_src);
    assert_int_equal(fetch(url, g_ca, g_sha, &s), EFC_EUNSUPPORTED);
    assert_false(exists(g_dest));
    /* the control: the same plain server is reachable directly, and https -> https works */
    url_at(url, sizeof(url), "http://127.0.0.1", g_port_plain, "/a");
    assert_int_equal(fetch(url, NULL, g_sha, &s), EFC_OK);
    unlink(g_dest);
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good,
           "/a?redirect=https://localhost:SELF/a");
    if (fetch(url, g_ca, g_sha, &s) != EFC_OK)
        fail_msg("%s", efc_err_detail());
    assert_true(dest_is(g_data));
}

/* F6: an endless body over TLS is stopped at expected_bytes; nothing is kept. */
static void test_https_endless(void **state)
{
    struct efc_agent_fetch_url_stats s;
    char url[160];
    (void)state;
    SKIP_IF_NO_TOOLS();
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good, "/a?stream");
    assert_int_equal(fetch(url, g_ca, g_sha, &s), EFC_EPROTO);
    assert_detail_has("larger than expected");
    assert_true(s.bytes_received <= N_BYTES);
    assert_false(exists(g_dest));
    assert_false(exists(g_part));
}

/* F4 over TLS: idle after the headers; the low-speed limit (1000 bytes/s for 2 s) aborts
 * within limit + 2 s, and no step(…, 50) blocks longer than 500 ms. */
static void test_https_idle(void **state)
{
    struct efc_agent_fetch_url_opts o = {.dest_path = g_dest,
                                         .expected_bytes = N_BYTES,
                                         .sha256_hex = g_sha,
                                         .low_speed_bytes = 1000,
                                         .low_speed_s = 2,
                                         .ca_file = g_ca};
    struct efc_agent_fetch_url *f = NULL;
    uint64_t t0, worst = 0, el;
    enum efc_status st = EFC_OK;
    char url[160];
    int done = 0, steps = 0;
    (void)state;
    SKIP_IF_NO_TOOLS();
    url_at(url, sizeof(url), "https://127.0.0.1", g_port_good, "/a?idle");
    o.url = url;
    t0 = efc_time_ns();
    assert_int_equal(efc_agent_fetch_url_start(&o, &f), EFC_OK);
    while (!done && efc_time_ns() - t0 < RUN_LIMIT_NS) {
        uint64_t t = efc_time_ns();
        st = efc_agent_fetch_url_step(f, 50, &done);
        t = efc_time_ns() - t;
        worst = t > worst ? t : worst;
        steps++;
    }
    el = efc_time_ns() - t0;
    efc_agent_fetch_url_free(f);
    print_message("https idle: aborted after %.2f s (limit 2 s), %d steps, longest step %.1f ms\n",
                  (double)el * 1e-9, steps, (double)worst * 1e-6);
    assert_true(done);
    assert_int_equal(st, EFC_ETIMEDOUT);
    assert_detail_has("curl 28");
    assert_true(el >= 1900ull * 1000000ull && el <= 4000ull * 1000000ull);
    assert_true(worst < 500ull * 1000000ull);
    assert_false(exists(g_dest));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_https_good_and_resume, clean),
        cmocka_unit_test_setup(test_https_object_changed, clean),
        cmocka_unit_test_setup(test_https_verification_failures, clean),
        cmocka_unit_test_setup(test_https_redirects, clean),
        cmocka_unit_test_setup(test_https_endless, clean),
        cmocka_unit_test_setup(test_https_idle, clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
