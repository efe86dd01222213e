/* test_mqtt.c — the MQTT v5 client (proto/mqtt.h). Always: URL parsing (mqtt and mqtts) and its
 * errors, option validation (TLS: partial options, missing / non-regular / empty files, mqtts
 * without TLS options), a TLS client whose certificate OpenSSL cannot load (each attempt logged
 * with the reason and retried), the backoff schedule's bounds and jitter, and offline behaviour
 * (publish while disconnected -> EFC_ENET, a refused broker is retried without blocking longer than
 * the loop timeout). With EFC_TEST_BROKER_PORT set (tests/integration/mqtt_client.sh starts
 * mosquitto): wildcard subscription + QoS 1 publish/receive, a retained message for a late
 * subscriber, message expiry (expiry 1 s gone after 2 s, a control without expiry still there), the
 * last will of a SIGKILLed child (retained), no will after efc_mqtt_free, a persistent session
 * (session expiry) keeping a QoS 1 message across a clean disconnect. With
 * EFC_TEST_MQTT_MODE=reconnect (and EFC_TEST_MQTT_MARKER=file) only the reconnect scenario
 * runs: the script kills and restarts the broker on the same port after the "before" marker;
 * the client must reconnect, re-subscribe on its own and see its echo again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/efc_log.h"
#include "common/efc_time.h"
#include "proto/mqtt.h"

struct rx {
    int connects, disconnects, msgs;
    int session_present;
    int last_reason;
    char topic[256];
    char payload[256];
    size_t len;
    int retained;
};

static char prefix[96]; /* unique per run: retained messages of earlier runs never match */
static int broker_port;
static char url[64];

static void on_connect(void *ctx, int sp)
{
    struct rx *r = ctx;
    r->connects++;
    r->session_present = sp;
}

static void on_disconnect(void *ctx, int reason)
{
    struct rx *r = ctx;
    r->disconnects++;
    r->last_reason = reason;
}

static void on_message(void *ctx, const char *topic, const void *payload, size_t len, int retained)
{
    struct rx *r = ctx;
    r->msgs++;
    snprintf(r->topic, sizeof(r->topic), "%s", topic);
    assert_non_null(payload); /* also for an empty payload */
    r->len = len < sizeof(r->payload) - 1 ? len : sizeof(r->payload) - 1;
    memcpy(r->payload, payload, r->len);
    r->payload[r->len] = '\0';
    r->retained = retained;
}

static struct efc_mqtt *client(const char *id, struct rx *r, const char *will_topic,
                               const char *will)
{
    struct efc_mqtt_opts o = {0};
    o.url = url;
    o.client_id = id;
    o.keepalive_s = 10;
    o.clean_start = 1;
    o.will_topic = will_topic;
    o.will_payload = will;
    o.will_len = will ? strlen(will) : 0;
    o.will_retain = 1;
    o.will_qos = 1;
    o.on_connect = on_connect;
    o.on_disconnect = on_disconnect;
    o.on_message = on_message;
    o.ctx = r;
    struct efc_mqtt *m = NULL;
    enum efc_status st = efc_mqtt_new(&o, &m);
    if (st != EFC_OK) {
        fail_msg("efc_mqtt_new: %s", efc_err_detail());
    }
    assert_int_equal(efc_mqtt_connect(m), EFC_OK);
    return m;
}

/* Loop a and (optionally) b until *counter >= target or ms elapse; returns 1 if reached. */
static int pump(struct efc_mqtt *a, struct efc_mqtt *b, const int *counter, int target, int ms)
{
    uint64_t end = efc_time_ns() + (uint64_t)ms * 1000000ULL;
    while (efc_time_ns() < end) {
        if (counter && *counter >= target) {
            return 1;
        }
        assert_int_equal(efc_mqtt_loop(a, 10), EFC_OK);
        if (b) {
            assert_int_equal(efc_mqtt_loop(b, 10), EFC_OK);
        }
    }
    return counter && *counter >= target;
}

static int need_broker(void)
{
    if (broker_port == 0) {
        print_message("EFC_TEST_BROKER_PORT not set: broker case skipped\n");
        return 0;
    }
    return 1;
}

/* ---- always ------------------------------------------------------------------------- */

static void test_url_parse(void **state)
{
    (void)state;
    char host[EFC_MQTT_HOST_MAX];
    int port = 0;
    assert_int_equal(efc_mqtt_url_parse("mqtt://127.0.0.1:18830", host, sizeof(host), &port),
                     EFC_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 18830);
    assert_int_equal(efc_mqtt_url_parse("mqtt://broker.lan", host, sizeof(host), &port), EFC_OK);
    assert_string_equal(host, "broker.lan");
    assert_int_equal(port, 1883);
    assert_int_equal(efc_mqtt_url_parse("mqtt://[::1]:65535/", host, sizeof(host), &port), EFC_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);

    static const char *const bad[] = {
        "",
        "127.0.0.1:1883",
        "tcp://h:1",
        "mqtt:/h:1",
        "mqtt://",
        "mqtt://:1",
        "mqtt://h:",
        "mqtt://h:0",
        "mqtt://h:65536",
        "mqtt://h:99999999",
        "mqtt://h:1x",
        "mqtt://h:1/path",
        "mqtt://h:-1",
        "mqtt://[::1",
        "mqtt://u@h:1",
        "mqtt://h h:1",
        "mqtt://h:1?x=1",
        "MQTT://h:1",
        "mqtt://[]:1",
        "mqtt://h:1//",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        efc_err_clear();
        enum efc_status st = efc_mqtt_url_parse(bad[i], host, sizeof(host), &port);
        if (st != EFC_EINVAL) {
            fail_msg("url '%s': got %s, want EINVAL", bad[i], efc_status_str(st));
        }
        assert_non_null(strstr(efc_err_detail(), "mqtt url"));
    }
    assert_int_equal(efc_mqtt_url_parse(NULL, host, sizeof(host), &port), EFC_EINVAL);
    /* mqtts: default port 8883, an explicit one wins, same host rules */
    assert_int_equal(efc_mqtt_url_parse("mqtts://h", host, sizeof(host), &port), EFC_OK);
    assert_string_equal(host, "h");
    assert_int_equal(port, 8883);
    assert_int_equal(efc_mqtt_url_parse("mqtts://broker.lan:8884/", host, sizeof(host), &port),
                     EFC_OK);
    assert_string_equal(host, "broker.lan");
    assert_int_equal(port, 8884);
    assert_int_equal(efc_mqtt_url_parse("mqtts://[::1]", host, sizeof(host), &port), EFC_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 8883);
    static const char *const bad_s[] = {"mqtts://", "mqtts://h:0", "MQTTS://h",     "mqtts:/h",
                                        "mqtts//h", "mqttss://h",  "mqtts://h:1/x", "mqtts://u@h"};
    for (size_t i = 0; i < sizeof(bad_s) / sizeof(bad_s[0]); i++) {
        efc_err_clear();
        enum efc_status st = efc_mqtt_url_parse(bad_s[i], host, sizeof(host), &port);
        if (st != EFC_EINVAL) {
            fail_msg("url '%s': got %s, want EINVAL", bad_s[i], efc_status_str(st));
        }
        assert_non_null(strstr(efc_err_detail(), "mqtt url"));
    }
    char small[4];
    assert_int_equal(efc_mqtt_url_parse("mqtt://abcd:1", small, sizeof(small), &port), EFC_EINVAL);
    assert_int_equal(efc_mqtt_url_parse("mqtt://abc:1", small, sizeof(small), &port), EFC_OK);
    assert_string_equal(small, "abc");
}

static void test_opts_invalid(void **state)
{
    (void)state;
    struct efc_mqtt *m = (struct efc_mqtt *)&m;
    struct efc_mqtt_opts o = {0};
    o.url = "mqtt://127.0.0.1:1";
    o.client_id = "t";
    o.clean_start = 1;
    struct efc_mqtt_opts b;

    b = o;
    b.url = NULL;
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_EINVAL);
    assert_null(m);
    b = o;
    b.url = "mqtt://h:70000";
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "port"));
    b = o;
    b.keepalive_s = 3;
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_EINVAL);
    assert_non_null(strstr(efc_err_detail(), "keepalive"));
    b = o;
    b.client_id = NULL;
    b.clean_start = 0;
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_EINVAL);
    b = o;
    b.client_id = "";
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_EINVAL);
    b = o;
    b.will_topic = "a/+/status";
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_EINVAL);
    b = o;
    b.will_topic = "a/status";
    b.will_qos = 3;
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_EINVAL);
    assert_null(m);

    b = o; /* valid: creates, frees without ever connecting */
    b.will_topic = "a/status";
    b.will_payload = "x";
    b.will_len = 1;
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_OK);
    assert_non_null(m);
    assert_int_equal(efc_mqtt_connected(m), 0);
    efc_mqtt_free(m);
    efc_mqtt_free(NULL);
}

/* ---- TLS options (no broker: files are checked at efc_mqtt_new) ------------------------ */

struct tls_files {
    char dir[64];
    char ca[96], cert[96], key[96], empty[96], missing[96];
};

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void tls_files_make(struct tls_files *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/efc-test-tls-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->ca, sizeof(t->ca), "%s/ca.crt", t->dir);
    snprintf(t->cert, sizeof(t->cert), "%s/c.crt", t->dir);
    snprintf(t->key, sizeof(t->key), "%s/c.key", t->dir);
    snprintf(t->empty, sizeof(t->empty), "%s/empty", t->dir);
    snprintf(t->missing, sizeof(t->missing), "%s/no-such-file.pem", t->dir);
    /* Not valid PEM: efc_mqtt_new checks presence and readability only; the contents are
     * read by OpenSSL at connect time (test_tls_bad_cert_retried). */
    write_file(t->ca, "-----BEGIN CERTIFICATE-----\nnot a cert\n", 0644);
    write_file(t->cert, "-----BEGIN CERTIFICATE-----\nnot a cert\n", 0644);
    write_file(t->key, "not a key\n", 0600);
    write_file(t->empty, "", 0600);
}

static void tls_files_remove(const struct tls_files *t)
{
    unlink(t->ca);
    unlink(t->cert);
    unlink(t->key);
    unlink(t->empty);
    rmdir(t->dir);
}

/* efc_mqtt_new must fail with EINVAL and a detail containing both needles. */
static void want_einval(const struct efc_mqtt_opts *o, const char *n1, const char *n2)
{
    struct efc_mqtt *m = (struct efc_mqtt *)&m;
    efc_err_clear();
    enum efc_status st = efc_mqtt_new(o, &m);
    if (st != EFC_EINVAL) {
        fail_msg("got %s, want EINVAL (%s)", efc_status_str(st), n1);
    }
    assert_null(m);
    const char *d = efc_err_detail();
    if (!strstr(d, n1) || (n2 && !strstr(d, n2))) {
        fail_msg("detail '%s' lacks '%s' / '%s'", d, n1, n2 ? n2 : "");
    }
}

static void test_tls_opts(void **state)
{
    (void)state;
    struct tls_files t;
    tls_files_make(&t);
    struct efc_mqtt_opts o = {0};
    o.url = "mqtt://127.0.0.1:1";
    o.client_id = "t";
    o.clean_start = 1;
    struct efc_mqtt_opts b;

    /* only some of the three */
    b = o;
    b.tls_ca = t.ca;
    want_einval(&b, "missing: tls_cert tls_key", NULL);
    b = o;
    b.tls_ca = t.ca;
    b.tls_cert = t.cert;
    want_einval(&b, "missing: tls_key", NULL);
    b = o;
    b.tls_cert = t.cert;
    b.tls_key = t.key;
    want_einval(&b, "missing: tls_ca", NULL);
    b = o;
    b.tls_key = t.key;
    want_einval(&b, "missing: tls_ca tls_cert", NULL);

    /* all three, one of them unusable: the detail names the option and the file */
    struct efc_mqtt_opts all = o;
    all.tls_ca = t.ca;
    all.tls_cert = t.cert;
    all.tls_key = t.key;
    b = all;
    b.tls_ca = t.missing;
    want_einval(&b, "tls_ca", t.missing);
    b = all;
    b.tls_cert = t.missing;
    want_einval(&b, "tls_cert", "No such file");
    b = all;
    b.tls_key = t.missing;
    want_einval(&b, "tls_key", t.missing);
    b = all;
    b.tls_cert = t.dir;
    want_einval(&b, "tls_cert", "not a regular file");
    b = all;
    b.tls_key = t.empty;
    want_einval(&b, "tls_key", "empty file");
    b = all;
    b.tls_ca = "";
    want_einval(&b, "tls_ca", NULL);
    if (geteuid() != 0) { /* root opens a mode-000 file anyway */
        assert_int_equal(chmod(t.key, 0), 0);
        b = all;
        want_einval(&b, "tls_key", "Permission denied");
        assert_int_equal(chmod(t.key, 0600), 0);
    }

    /* mqtts needs the TLS options; with them it is accepted, as is TLS over "mqtt://" */
    b = o;
    b.url = "mqtts://127.0.0.1";
    want_einval(&b, "mqtts needs tls_ca, tls_cert and tls_key", NULL);
    b = o;
    b.url = "mqtts://127.0.0.1:8883";
    b.tls_ca = t.ca;
    want_einval(&b, "missing: tls_cert tls_key", NULL);
    struct efc_mqtt *m = NULL;
    b = all;
    b.url = "mqtts://127.0.0.1";
    assert_int_equal(efc_mqtt_new(&b, &m), EFC_OK);
    efc_mqtt_free(m);
    m = NULL;
    assert_int_equal(efc_mqtt_new(&all, &m), EFC_OK);
    assert_int_equal(efc_mqtt_connected(m), 0);
    efc_mqtt_free(m);
    tls_files_remove(&t);
}

struct log_cap {
    int n_tls_retry; /* "reconnecting ... (A TLS error ...; <libmosquitto's reason>)" lines */
    char last[512];
};

static void log_sink(enum efc_log_level lvl, const char *line, void *ctx)
{
    (void)lvl;
    struct log_cap *c = ctx;
    if (strstr(line, "reconnecting") && strstr(line, "TLS") && strstr(line, "; ")) {
        c->n_tls_retry++;
        snprintf(c->last, sizeof(c->last), "%s", line);
    }
}

/* A certificate that OpenSSL cannot load fails each attempt at connect time: logged with the
 * reason and retried with the backoff, the loop keeps its timeout, nothing crashes. A
 * listening socket that never accepts is enough: the TCP connect succeeds (backlog), then
 * libmosquitto sets up TLS and fails on the files. */
static void test_tls_bad_cert_retried(void **state)
{
    (void)state;
    struct tls_files t;
    tls_files_make(&t);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(ls >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 8), 0);
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &alen), 0);
    char u[64];
    snprintf(u, sizeof(u), "mqtts://127.0.0.1:%d", ntohs(a.sin_port));

    struct log_cap cap = {0};
    efc_log_set_sink(log_sink, &cap);
    struct rx r = {0};
    struct efc_mqtt_opts o = {0};
    o.url = u;
    o.client_id = "efc-test-tls-bad";
    o.clean_start = 1;
    o.on_connect = on_connect;
    o.ctx = &r;
    o.tls_ca = t.ca;
    o.tls_cert = t.cert;
    o.tls_key = t.key;
    struct efc_mqtt *m = NULL;
    assert_int_equal(efc_mqtt_new(&o, &m), EFC_OK);
    assert_int_equal(efc_mqtt_connect(m), EFC_OK);
    uint64_t t0 = efc_time_ns(), worst = 0;
    while (efc_time_ns() - t0 < 1300000000ULL) { /* attempts at 0, ~0.5 s, ~1 s */
        uint64_t s0 = efc_time_ns();
        assert_int_equal(efc_mqtt_loop(m, 50), EFC_OK);
        uint64_t d = efc_time_ns() - s0;
        worst = d > worst ? d : worst;
    }
    efc_mqtt_free(m);
    efc_log_set_sink(NULL, NULL);
    close(ls);
    tls_files_remove(&t);
    assert_int_equal(r.connects, 0);
    if (cap.n_tls_retry < 2) {
        fail_msg("%d TLS retry line(s), want >= 2; last: '%s'", cap.n_tls_retry, cap.last);
    }
    assert_true(worst < 300000000ULL);
    print_message("last retry line: %s\n", cap.last);
}

static void test_backoff(void **state)
{
    (void)state;
    uint32_t prev_hi = 0;
    for (unsigned a = 0; a < 40; a++) {
        uint32_t lo = UINT32_MAX, hi = 0;
        for (uint64_t r = 0; r < 2000; r++) {
            uint32_t v = efc_mqtt_backoff_ms(a, r * 0x9e3779b97f4a7c15ULL);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        assert_true(lo >= EFC_MQTT_BACKOFF_MIN_MS);
        assert_true(hi <= EFC_MQTT_BACKOFF_MAX_MS);
        assert_true(hi >= prev_hi); /* never shrinks */
        uint64_t d = 500ULL << (a < 10 ? a : 10);
        uint64_t cap = d < 30000 ? d : 30000;
        assert_int_equal(hi, cap); /* reaches the nominal delay */
        if (a >= 2) {
            assert_true(lo < hi);       /* jittered */
            assert_true(lo >= cap / 2); /* by at most half */
        }
        prev_hi = hi;
    }
    assert_int_equal(efc_mqtt_backoff_ms(0, 12345), 500);
    assert_int_equal(efc_mqtt_backoff_ms(1000, UINT64_MAX) >= 15000, 1);
}

static void test_offline(void **state)
{
    (void)state;
    struct rx r = {0};
    struct efc_mqtt_opts o = {0};
    o.url = "mqtt://127.0.0.1:1"; /* nothing listens on port 1: refused at once */
    o.client_id = "efc-test-offline";
    o.clean_start = 1;
    o.on_connect = on_connect;
    o.on_disconnect = on_disconnect;
    o.ctx = &r;
    struct efc_mqtt *m = NULL;
    assert_int_equal(efc_mqtt_new(&o, &m), EFC_OK);
    assert_int_equal(efc_mqtt_loop(m, 0), EFC_EINVAL); /* before connect */
    assert_int_equal(efc_mqtt_publish(m, "a/b", "x", 1, 1, 0, 0), EFC_ENET);
    assert_non_null(strstr(efc_err_detail(), "not connected"));
    assert_int_equal(efc_mqtt_subscribe(m, "a/+/c", 1), EFC_OK); /* kept for later */
    assert_int_equal(efc_mqtt_subscribe(m, "a/#/c", 1), EFC_EINVAL);
    assert_int_equal(efc_mqtt_subscribe(m, "a/b", 3), EFC_EINVAL);
    assert_int_equal(efc_mqtt_publish(m, "a/+", "x", 1, 1, 0, 0), EFC_EINVAL);
    assert_int_equal(efc_mqtt_publish(m, "a/b", "x", 1, 5, 0, 0), EFC_EINVAL);

    assert_int_equal(efc_mqtt_connect(m), EFC_OK); /* refused is not fatal */
    assert_int_equal(efc_mqtt_connect(m), EFC_EINVAL);
    uint64_t t0 = efc_time_ns(), worst = 0;
    while (efc_time_ns() - t0 < 1200000000ULL) {
        uint64_t a = efc_time_ns();
        assert_int_equal(efc_mqtt_loop(m, 50), EFC_OK);
        uint64_t d = efc_time_ns() - a;
        worst = d > worst ? d : worst;
    }
    assert_int_equal(efc_mqtt_connected(m), 0);
    assert_int_equal(r.connects, 0);
    assert_int_equal(r.disconnects, 0); /* never connected: no disconnect callback */
    assert_true(worst < 300000000ULL);  /* loop(50 ms) never blocked for long */
    assert_int_equal(efc_mqtt_publish(m, "a/b", "x", 1, 1, 0, 0), EFC_ENET);
    efc_mqtt_free(m);
}

/* ---- with a broker ------------------------------------------------------------------ */

static void topic_of(char *buf, size_t cap, const char *leaf)
{
    snprintf(buf, cap, "%s/%s", prefix, leaf);
}

static void test_pubsub_wildcard(void **state)
{
    (void)state;
    if (!need_broker()) {
        skip();
    }
    struct rx rs = {0}, rp = {0};
    struct efc_mqtt *s = client("efc-test-sub", &rs, NULL, NULL);
    struct efc_mqtt *p = client("efc-test-pub", &rp, NULL, NULL);
    char filt[160], t1[160], t2[160];
    topic_of(filt, sizeof(filt), "dev/+/result");
    topic_of(t1, sizeof(t1), "dev/a1/result");
    topic_of(t2, sizeof(t2), "dev/a1/status");                /* does not match the filter */
    assert_int_equal(efc_mqtt_subscribe(s, filt, 1), EFC_OK); /* before connect: kept */
    assert_true(pump(s, p, &rs.connects, 1, 3000));
    assert_true(pump(p, s, &rp.connects, 1, 3000));
    assert_int_equal(efc_mqtt_connected(s), 1);
    pump(s, p, NULL, 0, 200); /* let SUBACK arrive */
    assert_int_equal(efc_mqtt_publish(p, t2, "no", 2, 1, 0, 0), EFC_OK);
    assert_int_equal(efc_mqtt_publish(p, t1, "{\"n\":1}", 7, 1, 0, 0), EFC_OK);
    assert_true(pump(s, p, &rs.msgs, 1, 3000));
    pump(s, p, NULL, 0, 200);
    assert_int_equal(rs.msgs, 1);
    assert_string_equal(rs.topic, t1);
    assert_string_equal(rs.payload, "{\"n\":1}");
    assert_int_equal(rs.retained, 0);
    efc_mqtt_free(p);
    efc_mqtt_free(s);
    assert_int_equal(rs.disconnects, 0); /* free does not report a lost connection */
}

static void test_retained_late_subscriber(void **state)
{
    (void)state;
    if (!need_broker()) {
        skip();
    }
    struct rx rp = {0}, rs = {0};
    char t[160];
    topic_of(t, sizeof(t), "dev/r1/status");
    struct efc_mqtt *p = client("efc-test-retpub", &rp, NULL, NULL);
    assert_true(pump(p, NULL, &rp.connects, 1, 3000));
    assert_int_equal(efc_mqtt_publish(p, t, "online", 6, 1, 1, 0), EFC_OK);
    pump(p, NULL, NULL, 0, 200);
    efc_mqtt_free(p);

    struct efc_mqtt *s = client("efc-test-retsub", &rs, NULL, NULL);
    assert_int_equal(efc_mqtt_subscribe(s, t, 1), EFC_OK);
    assert_true(pump(s, NULL, &rs.msgs, 1, 3000));
    assert_string_equal(rs.payload, "online");
    assert_int_equal(rs.retained, 1);
    assert_int_equal(efc_mqtt_publish(s, t, NULL, 0, 1, 1, 0), EFC_OK); /* delete it */
    pump(s, NULL, NULL, 0, 200);
    efc_mqtt_free(s);
}

static void test_message_expiry(void **state)
{
    (void)state;
    if (!need_broker()) {
        skip();
    }
    struct rx rp = {0}, r1 = {0}, r2 = {0};
    char tx[160], tk[160];
    topic_of(tx, sizeof(tx), "exp/short");
    topic_of(tk, sizeof(tk), "exp/keep");
    char filt[160];
    topic_of(filt, sizeof(filt), "exp/+");
    /* Sanity: a subscriber present at publish time gets both (the broker's expiry clock has
     * whole seconds, so a retained read right after publishing could already miss it). */
    struct efc_mqtt *s1 = client("efc-test-exps1", &r1, NULL, NULL);
    assert_int_equal(efc_mqtt_subscribe(s1, filt, 1), EFC_OK);
    assert_true(pump(s1, NULL, &r1.connects, 1, 3000));
    pump(s1, NULL, NULL, 0, 200);
    struct efc_mqtt *p = client("efc-test-exppub", &rp, NULL, NULL);
    assert_true(pump(p, s1, &rp.connects, 1, 3000));
    assert_int_equal(efc_mqtt_publish(p, tx, "short", 5, 1, 1, 1), EFC_OK);
    assert_true(pump(s1, p, &r1.msgs, 1, 3000));
    assert_string_equal(r1.topic, tx);
    assert_string_equal(r1.payload, "short");
    assert_int_equal(efc_mqtt_publish(p, tk, "keep", 4, 1, 1, 0), EFC_OK);
    assert_true(pump(s1, p, &r1.msgs, 2, 3000));
    assert_string_equal(r1.payload, "keep");
    efc_mqtt_free(s1);

    pump(p, NULL, NULL, 0, 2100);
    struct efc_mqtt *s2 = client("efc-test-exps2", &r2, NULL, NULL);
    assert_int_equal(efc_mqtt_subscribe(s2, filt, 1), EFC_OK);
    assert_true(pump(s2, p, &r2.msgs, 1, 3000)); /* the control arrives ... */
    pump(s2, p, NULL, 0, 500);                   /* ... and nothing else */
    assert_int_equal(r2.msgs, 1);
    assert_string_equal(r2.topic, tk);
    assert_string_equal(r2.payload, "keep");
    assert_int_equal(efc_mqtt_publish(p, tk, NULL, 0, 1, 1, 0), EFC_OK);
    pump(p, s2, NULL, 0, 200);
    efc_mqtt_free(s2);
    efc_mqtt_free(p);
}

/* Child: connect with a will, report over the pipe, then loop until killed. */
static void will_child(int wfd, const char *will_topic)
{
    struct rx r = {0};
    struct efc_mqtt *m = client("efc-test-willchild", &r, will_topic, "offline");
    uint64_t end = efc_time_ns() + 5000000000ULL;
    while (!efc_mqtt_connected(m) && efc_time_ns() < end) {
        efc_mqtt_loop(m, 10);
    }
    char c = efc_mqtt_connected(m) ? 'c' : 'x';
    if (write(wfd, &c, 1) != 1) {
        _exit(2);
    }
    for (;;) {
        efc_mqtt_loop(m, 100);
    }
}

static void test_will_on_kill(void **state)
{
    (void)state;
    if (!need_broker()) {
        skip();
    }
    char wt[160];
    topic_of(wt, sizeof(wt), "dev/k1/status");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        will_child(fds[1], wt);
        _exit(3);
    }
    close(fds[1]);
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    char c = 0;
    int ready = poll(&pfd, 1, 6000) == 1 && read(fds[0], &c, 1) == 1;
    close(fds[0]);
    kill(pid, SIGKILL);
    int wst = 0;
    waitpid(pid, &wst, 0);
    assert_true(ready);
    assert_int_equal(c, 'c');
    assert_true(WIFSIGNALED(wst));

    struct rx rs = {0};
    struct efc_mqtt *s = client("efc-test-willsub", &rs, NULL, NULL);
    assert_int_equal(efc_mqtt_subscribe(s, wt, 1), EFC_OK);
    assert_true(pump(s, NULL, &rs.msgs, 1, 3000));
    assert_string_equal(rs.topic, wt);
    assert_string_equal(rs.payload, "offline");
    assert_int_equal(rs.retained, 1); /* will_retain: stored for late subscribers */
    assert_int_equal(efc_mqtt_publish(s, wt, NULL, 0, 1, 1, 0), EFC_OK);
    pump(s, NULL, NULL, 0, 200);
    efc_mqtt_free(s);
}

static void test_no_will_after_free(void **state)
{
    (void)state;
    if (!need_broker()) {
        skip();
    }
    char wt[160];
    topic_of(wt, sizeof(wt), "dev/f1/status");
    struct rx rs = {0}, rc = {0};
    struct efc_mqtt *s = client("efc-test-nowillsub", &rs, NULL, NULL);
    assert_int_equal(efc_mqtt_subscribe(s, wt, 1), EFC_OK);
    assert_true(pump(s, NULL, &rs.connects, 1, 3000));
    pump(s, NULL, NULL, 0, 200);
    struct efc_mqtt *c = client("efc-test-nowill", &rc, wt, "offline");
    assert_true(pump(c, s, &rc.connects, 1, 3000));
    efc_mqtt_free(c);
    pump(s, NULL, NULL, 0, 1000);
    assert_int_equal(rs.msgs, 0);
    efc_mqtt_free(s);
}

/* A persistent session (clean_start 0, session expiry 60 s) outlives a clean disconnect: a QoS 1
 * message published meanwhile is delivered when the same client id comes back. */
static void test_persistent_session(void **state)
{
    (void)state;
    if (!need_broker()) {
        skip();
    }
    char t[160];
    topic_of(t, sizeof(t), "dev/p1/job");
    struct efc_mqtt_opts o = {0};
    struct rx r1 = {0}, r2 = {0}, rp = {0};
    o.url = url;
    o.client_id = "efc-test-persist";
    o.keepalive_s = 10;
    o.clean_start = 0;
    o.session_expiry_s = 60;
    o.on_connect = on_connect;
    o.on_message = on_message;
    o.ctx = &r1;
    struct efc_mqtt *a = NULL;
    assert_int_equal(efc_mqtt_new(&o, &a), EFC_OK);
    assert_int_equal(efc_mqtt_subscribe(a, t, 1), EFC_OK);
    assert_int_equal(efc_mqtt_connect(a), EFC_OK);
    assert_true(pump(a, NULL, &r1.connects, 1, 3000));
    pump(a, NULL, NULL, 0, 200);
    efc_mqtt_free(a);

    struct efc_mqtt *p = client("efc-test-persist-pub", &rp, NULL, NULL);
    assert_true(pump(p, NULL, &rp.connects, 1, 3000));
    assert_int_equal(efc_mqtt_publish(p, t, "queued", 6, 1, 0, 0), EFC_OK);
    pump(p, NULL, NULL, 0, 200);
    efc_mqtt_free(p);

    o.ctx = &r2;
    o.session_expiry_s = 1; /* the broker drops the session soon after this test */
    assert_int_equal(efc_mqtt_new(&o, &a), EFC_OK);
    assert_int_equal(efc_mqtt_connect(a), EFC_OK);
    assert_true(pump(a, NULL, &r2.msgs, 1, 3000));
    assert_int_equal(r2.session_present, 1);
    assert_string_equal(r2.payload, "queued");
    assert_int_equal(r2.retained, 0);
    efc_mqtt_free(a);
}

/* ---- reconnect scenario (driven by tests/integration/mqtt_client.sh) ---------------- */

static void write_marker(const char *path, const char *what)
{
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fprintf(f, "%s\n", what);
    fclose(f);
}

/* Publish `word` to the echo topic until it comes back (resent every second). */
static int echo(struct efc_mqtt *m, struct rx *r, const char *t, const char *word, int ms)
{
    uint64_t end = efc_time_ns() + (uint64_t)ms * 1000000ULL;
    while (efc_time_ns() < end) {
        if (efc_mqtt_connected(m)) {
            efc_mqtt_publish(m, t, word, strlen(word), 1, 0, 0);
        }
        int before = r->msgs;
        pump(m, NULL, &r->msgs, before + 1, 1000);
        if (r->msgs > before && strcmp(r->payload, word) == 0) {
            return 1;
        }
    }
    return 0;
}

static void test_reconnect(void **state)
{
    (void)state;
    const char *marker = getenv("EFC_TEST_MQTT_MARKER");
    if (!need_broker() || !marker) {
        skip();
    }
    char t[160];
    topic_of(t, sizeof(t), "echo");
    struct rx r = {0};
    struct efc_mqtt *m = client("efc-test-reconnect", &r, NULL, NULL);
    assert_int_equal(efc_mqtt_subscribe(m, t, 1), EFC_OK);
    assert_true(echo(m, &r, t, "before", 5000));
    write_marker(marker, "before");
    /* The script kills the broker and restarts it on the same port. */
    uint64_t end = efc_time_ns() + 15000000000ULL;
    while (efc_time_ns() < end && !(r.disconnects >= 1 && r.connects >= 2)) {
        assert_int_equal(efc_mqtt_loop(m, 50), EFC_OK);
    }
    assert_int_equal(r.disconnects, 1);
    assert_int_equal(r.connects, 2);
    /* Fresh broker, clean start: only our automatic re-subscription can bring the echo. */
    assert_true(echo(m, &r, t, "after", 4000));
    write_marker(marker, "after");
    efc_mqtt_free(m);
}

int main(void)
{
    const char *p = getenv("EFC_TEST_BROKER_PORT");
    if (p && *p) {
        broker_port = (int)strtol(p, NULL, 10);
    }
    snprintf(url, sizeof(url), "mqtt://127.0.0.1:%d", broker_port);
    snprintf(prefix, sizeof(prefix), "efctest/%ld-%llu", (long)getpid(),
             (unsigned long long)(efc_time_ns() % 1000000007ULL));
    const char *mode = getenv("EFC_TEST_MQTT_MODE");
    if (mode && strcmp(mode, "reconnect") == 0) {
        const struct CMUnitTest rt[] = {cmocka_unit_test(test_reconnect)};
        return cmocka_run_group_tests(rt, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_opts_invalid),
        cmocka_unit_test(test_tls_opts),
        cmocka_unit_test(test_tls_bad_cert_retried),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_offline),
        cmocka_unit_test(test_pubsub_wildcard),
        cmocka_unit_test(test_retained_late_subscriber),
        cmocka_unit_test(test_message_expiry),
        cmocka_unit_test(test_will_on_kill),
        cmocka_unit_test(test_no_will_after_free),
        cmocka_unit_test(test_persistent_session),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
