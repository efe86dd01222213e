/* mqtt.c — MQTT v5 client over libmosquitto 2.0.x, driven by the caller's loop (mqtt.h).
 *
 * States: IDLE (created) -> CONNECTING (socket open, waiting for CONNACK) -> UP -> on loss or
 * a failed attempt -> WAIT (backoff deadline on CLOCK_MONOTONIC) -> CONNECTING ... libmosquitto
 * callbacks only record what happened; efc_mqtt_loop() acts on it after mosquitto_loop returns.
 */
#include "proto/mqtt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "common/efc_alloc.h"
#include "common/efc_log.h"
#include "common/efc_rng.h"
#include "common/efc_time.h"

#define MOD "mqtt"

#define MQTT_PORT 1883
#define MQTTS_PORT 8883 /* IANA "secure-mqtt" */
/* mosquitto_tls_opts_set's cert_reqs takes OpenSSL's SSL_VERIFY_PEER (1); the value is fixed
 * by the libmosquitto API docs, so no OpenSSL header is needed here. */
#define TLS_VERIFY_PEER 1
/* libmosquitto's minimum: TLS 1.2 or newer (1.3 when both ends have it). */
#define TLS_MIN_VERSION "tlsv1.2"

enum mqtt_state { ST_IDLE = 0, ST_CONNECTING, ST_UP, ST_WAIT };

struct mqtt_sub {
    char *pattern;
    int qos;
};

struct efc_mqtt {
    struct mosquitto *mosq;
    char host[EFC_MQTT_HOST_MAX];
    int port;
    char *client_id;
    int keepalive_s;
    uint32_t session_expiry_s;
    void (*on_connect)(void *ctx, int session_present);
    void (*on_disconnect)(void *ctx, int reason);
    void (*on_message)(void *ctx, const char *topic, const void *payload, size_t len, int retained);
    void *ctx;

    enum mqtt_state state;
    uint64_t deadline_ns; /* WAIT: next attempt; CONNECTING: give up on this attempt */
    unsigned attempt;     /* failed attempts since the last CONNACK success */
    struct efc_rng rng;
    int ev_lost; /* set by the disconnect callback */
    int ev_lost_rc;
    int ev_refused; /* CONNACK with a failure code */
    int freeing;
    int inflight;
    uint64_t n_events;  /* messages received + publishes completed (drain progress) */
    uint64_t n_pending; /* publishes accepted by libmosquitto, not yet completed */
    int tls;            /* mutual TLS configured */
    /* libmosquitto's first error log line of the current attempt (TLS: the OpenSSL reason,
     * e.g. "certificate verify failed"), added to the retry log line. */
    char last_err[200];

    struct mqtt_sub *subs;
    size_t n_subs, cap_subs;
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

/* mosquitto_lib_init once per process, never cleaned up (it only sets up the socket and TLS
 * libraries); pthread_once keeps it safe when several threads create clients. */
static void lib_init_once(void)
{
    mosquitto_lib_init();
}

static const char *who(const struct efc_mqtt *m)
{
    return m->client_id ? m->client_id : "(broker-assigned id)";
}

uint32_t efc_mqtt_backoff_ms(unsigned attempt, uint64_t rnd)
{
    uint64_t d = EFC_MQTT_BACKOFF_MIN_MS;
    for (unsigned i = 0; i < attempt && d < EFC_MQTT_BACKOFF_MAX_MS; i++) {
        d *= 2;
    }
    if (d > EFC_MQTT_BACKOFF_MAX_MS) {
        d = EFC_MQTT_BACKOFF_MAX_MS;
    }
    uint64_t half = d / 2;
    uint64_t v = d - rnd % (half + 1); /* in [d/2, d] */
    if (v < EFC_MQTT_BACKOFF_MIN_MS) {
        v = EFC_MQTT_BACKOFF_MIN_MS;
    }
    return (uint32_t)v;
}

/* efc_mqtt_url_parse, also telling whether the scheme was mqtts (*tls = 1). */
static enum efc_status url_parse(const char *url, char *host, size_t host_cap, int *port, int *tls)
{
    if (!url || !host || host_cap == 0 || !port) {
        return efc_errf(EFC_EINVAL, "mqtt url: NULL argument");
    }
    const char *p;
    long pv;
    if (strncmp(url, "mqtt://", 7) == 0) {
        p = url + 7;
        pv = MQTT_PORT;
        *tls = 0;
    } else if (strncmp(url, "mqtts://", 8) == 0) {
        p = url + 8;
        pv = MQTTS_PORT;
        *tls = 1;
    } else {
        return efc_errf(EFC_EINVAL,
                        "mqtt url '%s': expected mqtt://host[:port] or "
                        "mqtts://host[:port]",
                        url);
    }
    const char *h0, *h1, *rest;
    if (*p == '[') {
        h0 = p + 1;
        h1 = strchr(h0, ']');
        if (!h1) {
            return efc_errf(EFC_EINVAL, "mqtt url '%s': unterminated '[' in host", url);
        }
        rest = h1 + 1;
    } else {
        h0 = p;
        h1 = p + strcspn(p, ":/?#@");
        rest = h1;
    }
    size_t hlen = (size_t)(h1 - h0);
    if (hlen == 0) {
        return efc_errf(EFC_EINVAL, "mqtt url '%s': empty host", url);
    }
    if (hlen >= host_cap) {
        return efc_errf(EFC_EINVAL, "mqtt url '%s': host longer than %zu bytes", url, host_cap - 1);
    }
    for (size_t i = 0; i < hlen; i++) {
        char c = h0[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_' || (*p == '[' && c == ':');
        if (!ok) {
            return efc_errf(EFC_EINVAL, "mqtt url '%s': invalid character in host", url);
        }
    }
    if (*rest == ':') {
        const char *d = rest + 1;
        if (*d < '0' || *d > '9') {
            return efc_errf(EFC_EINVAL, "mqtt url '%s': port is not a number", url);
        }
        pv = 0;
        while (*d >= '0' && *d <= '9') {
            pv = pv * 10 + (*d - '0');
            if (pv > 65535) {
                return efc_errf(EFC_EINVAL, "mqtt url '%s': port out of range 1..65535", url);
            }
            d++;
        }
        if (pv == 0) {
            return efc_errf(EFC_EINVAL, "mqtt url '%s': port out of range 1..65535", url);
        }
        rest = d;
    }
    if (*rest == '/' && rest[1] == '\0') {
        rest++;
    }
    if (*rest != '\0') {
        return efc_errf(EFC_EINVAL, "mqtt url '%s': unexpected '%s' after host:port", url, rest);
    }
    memcpy(host, h0, hlen);
    host[hlen] = '\0';
    *port = (int)pv;
    return EFC_OK;
}

enum efc_status efc_mqtt_url_parse(const char *url, char *host, size_t host_cap, int *port)
{
    int tls;
    return url_parse(url, host, host_cap, port, &tls);
}

/* A TLS file option must name a non-empty regular file this process can open: checked once
 * here so a typo fails start-up with the file's name, instead of every connect attempt failing
 * later with libmosquitto's "A TLS error occurred". */
static enum efc_status tls_file_check(const char *what, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        return efc_errf(EFC_EINVAL, "mqtt: %s '%s': %s", what, path, strerror(errno));
    }
    struct stat sb;
    int rc = fstat(fd, &sb);
    int e = errno;
    close(fd);
    if (rc != 0) {
        return efc_errf(EFC_EINVAL, "mqtt: %s '%s': %s", what, path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        return efc_errf(EFC_EINVAL, "mqtt: %s '%s': not a regular file", what, path);
    }
    if (sb.st_size == 0) {
        return efc_errf(EFC_EINVAL, "mqtt: %s '%s': empty file", what, path);
    }
    if (strcmp(what, "tls_key") == 0 && (sb.st_mode & 077) != 0) {
        /* Not fatal (a deployment may use group-readable keys on purpose), but deploy/pki.sh
         * makes keys 0600 and RELIABILITY.md G6 expects that. */
        efc_log(EFC_LOG_WARN, MOD, "tls_key '%s' is readable by group or others (mode %03o)", path,
                (unsigned)(sb.st_mode & 0777));
    }
    return EFC_OK;
}

/* Validate the TLS options: all three or none; mqtts:// needs them. *on = 1 for mutual TLS. */
static enum efc_status tls_opts_check(const struct efc_mqtt_opts *o, int scheme_tls, int *on)
{
    int n = (o->tls_ca != NULL) + (o->tls_cert != NULL) + (o->tls_key != NULL);
    *on = 0;
    if (n == 0) {
        if (scheme_tls) {
            return efc_errf(EFC_EINVAL,
                            "mqtt url '%s': mqtts needs tls_ca, tls_cert and "
                            "tls_key (mutual TLS)",
                            o->url);
        }
        return EFC_OK;
    }
    if (n != 3) {
        return efc_errf(EFC_EINVAL,
                        "mqtt: TLS needs tls_ca, tls_cert and tls_key together; "
                        "missing:%s%s%s",
                        o->tls_ca ? "" : " tls_ca", o->tls_cert ? "" : " tls_cert",
                        o->tls_key ? "" : " tls_key");
    }
    enum efc_status st = tls_file_check("tls_ca", o->tls_ca);
    if (st == EFC_OK) {
        st = tls_file_check("tls_cert", o->tls_cert);
    }
    if (st == EFC_OK) {
        st = tls_file_check("tls_key", o->tls_key);
    }
    if (st == EFC_OK) {
        *on = 1;
    }
    return st;
}

/* ---- libmosquitto callbacks: record only ---------------------------------------------- */

/* Installed only while a TLS connection is being set up (libmosquitto formats every log line,
 * per packet too, once a log callback is set): keeps the first error, which for a TLS failure
 * names the OpenSSL reason ("certificate verify failed", "tlsv1 alert unknown ca"). */
static void cb_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
    (void)mosq;
    struct efc_mqtt *m = obj;
    if (!str || !(level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) || m->last_err[0]) {
        return; /* the first error names the cause; OpenSSL's later lines are its stack */
    }
    snprintf(m->last_err, sizeof(m->last_err), "%s", str);
}

static void cb_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct efc_mqtt *m = obj;
    if (m->freeing) {
        return;
    }
    if (rc != 0) {
        m->ev_refused = rc;
        return;
    }
    m->state = ST_UP;
    m->attempt = 0;
    if (m->tls) {
        mosquitto_log_callback_set(m->mosq, NULL);
    }
    efc_log(EFC_LOG_INFO, MOD, "%s: connected to %s:%d%s%s", who(m), m->host, m->port,
            m->tls ? " over TLS (broker certificate verified, client certificate sent)" : "",
            (flags & 1) ? " (session present)" : "");
    for (size_t i = 0; i < m->n_subs; i++) {
        int src =
            mosquitto_subscribe_v5(m->mosq, NULL, m->subs[i].pattern, m->subs[i].qos, 0, NULL);
        if (src != MOSQ_ERR_SUCCESS) {
            efc_log(EFC_LOG_WARN, MOD, "%s: re-subscribe '%s' failed: %s", who(m),
                    m->subs[i].pattern, mosquitto_strerror(src));
        }
    }
    if (m->on_connect) {
        m->on_connect(m->ctx, flags & 1);
    }
}

static void cb_disconnect(struct mosquitto *mosq, void *obj, int rc,
                          const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct efc_mqtt *m = obj;
    if (m->freeing) {
        return;
    }
    m->ev_lost = 1;
    m->ev_lost_rc = rc;
}

static void cb_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct efc_mqtt *m = obj;
    if (m->freeing || !m->on_message || !msg || !msg->topic || msg->payloadlen < 0) {
        return;
    }
    m->n_events++;
    const void *payload = msg->payloadlen > 0 ? msg->payload : ""; /* never NULL */
    m->on_message(m->ctx, msg->topic, payload, (size_t)msg->payloadlen, msg->retain ? 1 : 0);
}

/* A publish completed: QoS 0 written, QoS 1 PUBACK, QoS 2 PUBCOMP. */
static void cb_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
                       const mosquitto_property *props)
{
    (void)mosq;
    (void)mid;
    (void)reason;
    (void)props;
    struct efc_mqtt *m = obj;
    m->n_events++;
    if (m->n_pending > 0) {
        m->n_pending--;
    }
}

/* ---- state machine -------------------------------------------------------------------- */

static const char *reason_str(int rc)
{
    if (rc == MOSQ_ERR_ERRNO) {
        return strerror(errno);
    }
    return mosquitto_strerror(rc);
}

/* Why an attempt failed: libmosquitto's code, and with TLS its first error line (the OpenSSL
 * reason), so a wrong CA or a refused certificate is named in the retry line. */
static void attempt_why(const struct efc_mqtt *m, int rc, char *why, size_t cap)
{
    if (m->tls && m->last_err[0]) {
        snprintf(why, cap, "%s; %s", reason_str(rc), m->last_err);
    } else if (m->tls && rc == MOSQ_ERR_CONN_LOST) {
        /* A broker that rejects the client certificate under TLS 1.3 closes the connection
         * after the handshake: libmosquitto sees only a lost connection. */
        snprintf(why, cap,
                 "%s (over TLS: the broker may have refused this client's "
                 "certificate)",
                 reason_str(rc));
    } else {
        snprintf(why, cap, "%s", reason_str(rc));
    }
}

static void schedule_retry(struct efc_mqtt *m, const char *why)
{
    uint32_t ms = efc_mqtt_backoff_ms(m->attempt, efc_rng_u64(&m->rng));
    if (m->attempt < 64) {
        m->attempt++;
    }
    m->state = ST_WAIT;
    m->deadline_ns = efc_time_ns() + (uint64_t)ms * 1000000ULL;
    efc_log(EFC_LOG_INFO, MOD, "%s: reconnecting to %s:%d in %u ms (%s)", who(m), m->host, m->port,
            ms, why);
}

/* Start one attempt. Returns 0 if the attempt is under way, else the libmosquitto code. */
static int start_attempt(struct efc_mqtt *m)
{
    int rc;
    m->ev_lost = 0;
    m->ev_refused = 0;
    m->last_err[0] = '\0';
    if (m->tls) {
        mosquitto_log_callback_set(m->mosq, cb_log);
    }
    errno = 0;
    if (m->session_expiry_s > 0) {
        mosquitto_property *props = NULL;
        rc = mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                          m->session_expiry_s);
        if (rc == MOSQ_ERR_SUCCESS) {
            rc = mosquitto_connect_bind_v5(m->mosq, m->host, m->port, m->keepalive_s, NULL, props);
        }
        mosquitto_property_free_all(&props);
    } else {
        rc = mosquitto_connect_bind_async(m->mosq, m->host, m->port, m->keepalive_s, NULL);
    }
    if (rc == MOSQ_ERR_SUCCESS) {
        m->state = ST_CONNECTING;
        m->deadline_ns = efc_time_ns() + (uint64_t)m->keepalive_s * 1000000000ULL;
    }
    return rc;
}

static void sleep_ms(int ms)
{
    if (ms <= 0) {
        return;
    }
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

enum efc_status efc_mqtt_new(const struct efc_mqtt_opts *o, struct efc_mqtt **out)
{
    if (!o || !out) {
        return efc_errf(EFC_EINVAL, "mqtt: NULL argument");
    }
    *out = NULL;
    char host[EFC_MQTT_HOST_MAX];
    int port = 0, scheme_tls = 0, tls = 0;
    enum efc_status st = url_parse(o->url, host, sizeof(host), &port, &scheme_tls);
    if (st != EFC_OK) {
        return st;
    }
    st = tls_opts_check(o, scheme_tls, &tls);
    if (st != EFC_OK) {
        return st;
    }
    int keepalive = o->keepalive_s == 0 ? EFC_MQTT_DEFAULT_KEEPALIVE_S : o->keepalive_s;
    if (keepalive < 5 || keepalive > 65535) {
        return efc_errf(EFC_EINVAL, "mqtt: keepalive_s %d out of range 5..65535", o->keepalive_s);
    }
    if (o->client_id && (o->client_id[0] == '\0' || strlen(o->client_id) > 256)) {
        return efc_errf(EFC_EINVAL, "mqtt: client_id must be 1..256 bytes");
    }
    if (o->inflight < 0 || o->inflight > 65535) {
        return efc_errf(EFC_EINVAL, "mqtt: inflight %d out of range 0..65535", o->inflight);
    }
    if (!o->client_id && !o->clean_start) {
        return efc_errf(EFC_EINVAL, "mqtt: a persistent session (clean_start 0) needs a "
                                    "client_id");
    }
    if (o->will_topic) {
        if (o->will_qos < 0 || o->will_qos > 2) {
            return efc_errf(EFC_EINVAL, "mqtt: will_qos %d out of range 0..2", o->will_qos);
        }
        if (mosquitto_pub_topic_check(o->will_topic) != MOSQ_ERR_SUCCESS) {
            return efc_errf(EFC_EINVAL, "mqtt: invalid will topic '%s'", o->will_topic);
        }
        if (o->will_len > (size_t)MQTT_MAX_PAYLOAD || (o->will_len > 0 && !o->will_payload)) {
            return efc_errf(EFC_EINVAL, "mqtt: invalid will payload (%zu bytes)", o->will_len);
        }
    }

    struct efc_mqtt *m = efc_calloc(1, sizeof(*m));
    if (!m) {
        return efc_errf(EFC_ENOMEM, "mqtt: out of memory");
    }
    memcpy(m->host, host, sizeof(host));
    m->port = port;
    m->tls = tls;
    m->keepalive_s = keepalive;
    m->session_expiry_s = o->session_expiry_s;
    m->on_connect = o->on_connect;
    m->on_disconnect = o->on_disconnect;
    m->on_message = o->on_message;
    m->ctx = o->ctx;
    efc_rng_init(&m->rng, efc_time_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)m);
    if (o->client_id && !(m->client_id = efc_strdup(o->client_id))) {
        efc_free(m);
        return efc_errf(EFC_ENOMEM, "mqtt: out of memory");
    }
    pthread_once(&lib_once, lib_init_once);
    m->mosq = mosquitto_new(o->client_id, o->clean_start ? true : false, m);
    if (!m->mosq) {
        int e = errno;
        efc_mqtt_free(m);
        return efc_errf(e == ENOMEM ? EFC_ENOMEM : EFC_EINVAL, "mqtt: mosquitto_new: %s",
                        strerror(e));
    }
    int rc = mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    if (rc == MOSQ_ERR_SUCCESS && o->inflight > 0) {
        rc = mosquitto_int_option(m->mosq, MOSQ_OPT_SEND_MAXIMUM, o->inflight);
        if (rc == MOSQ_ERR_SUCCESS) {
            rc = mosquitto_int_option(m->mosq, MOSQ_OPT_RECEIVE_MAXIMUM, o->inflight);
        }
    }
    if (rc == MOSQ_ERR_SUCCESS && o->will_topic) {
        rc = mosquitto_will_set_v5(m->mosq, o->will_topic, (int)o->will_len, o->will_payload,
                                   o->will_qos, o->will_retain ? true : false, NULL);
    }
    if (rc == MOSQ_ERR_SUCCESS && tls) {
        /* Peer verification on, host name checked against the broker certificate (never
         * mosquitto_tls_insecure_set): a client must not talk to a broker it cannot identify. */
        rc = mosquitto_tls_set(m->mosq, o->tls_ca, NULL, o->tls_cert, o->tls_key, NULL);
        if (rc == MOSQ_ERR_SUCCESS) {
            rc = mosquitto_tls_opts_set(m->mosq, TLS_VERIFY_PEER, TLS_MIN_VERSION, NULL);
        }
        if (rc != MOSQ_ERR_SUCCESS) {
            efc_mqtt_free(m);
            return efc_errf(rc == MOSQ_ERR_NOMEM ? EFC_ENOMEM : EFC_EINVAL,
                            "mqtt: TLS setup (ca '%s', cert '%s', key '%s'): %s", o->tls_ca,
                            o->tls_cert, o->tls_key, mosquitto_strerror(rc));
        }
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        efc_mqtt_free(m);
        return efc_errf(rc == MOSQ_ERR_NOMEM ? EFC_ENOMEM : EFC_EINVAL, "mqtt: setup: %s",
                        mosquitto_strerror(rc));
    }
    mosquitto_connect_v5_callback_set(m->mosq, cb_connect);
    mosquitto_disconnect_v5_callback_set(m->mosq, cb_disconnect);
    mosquitto_message_v5_callback_set(m->mosq, cb_message);
    mosquitto_publish_v5_callback_set(m->mosq, cb_publish);
    *out = m;
    return EFC_OK;
}

enum efc_status efc_mqtt_connect(struct efc_mqtt *m)
{
    if (!m) {
        return efc_errf(EFC_EINVAL, "mqtt: NULL client");
    }
    if (m->state != ST_IDLE) {
        return efc_errf(EFC_EINVAL, "mqtt: %s: connect already started", who(m));
    }
    int rc = start_attempt(m);
    if (rc == MOSQ_ERR_NOMEM) {
        return efc_errf(EFC_ENOMEM, "mqtt: connect: out of memory");
    }
    if (rc == MOSQ_ERR_INVAL) {
        return efc_errf(EFC_EINVAL, "mqtt: connect %s:%d: %s", m->host, m->port,
                        mosquitto_strerror(rc));
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        char why[320];
        attempt_why(m, rc, why, sizeof(why));
        schedule_retry(m, why); /* refused, unreachable, DNS, TLS: the loop retries */
    }
    return EFC_OK;
}

/* Act on what the callbacks recorded during mosquitto_loop. */
static void after_io(struct efc_mqtt *m, int rc)
{
    if (m->state == ST_UP && (m->ev_lost || rc != MOSQ_ERR_SUCCESS)) {
        int reason = m->ev_lost ? m->ev_lost_rc : rc;
        efc_log(EFC_LOG_WARN, MOD, "%s: connection to %s:%d lost: %s", who(m), m->host, m->port,
                reason_str(reason));
        m->state = ST_WAIT;
        m->attempt = 0;
        m->n_pending = 0; /* resent by the session after a reconnect, or lost with it */
        if (m->on_disconnect) {
            m->on_disconnect(m->ctx, reason);
        }
        schedule_retry(m, "connection lost");
        return;
    }
    if (m->state == ST_CONNECTING) {
        char why[320];
        if (m->ev_refused) {
            snprintf(why, sizeof(why), "refused by broker: %s",
                     mosquitto_reason_string(m->ev_refused));
        } else if (m->ev_lost || rc != MOSQ_ERR_SUCCESS) {
            attempt_why(m, m->ev_lost ? m->ev_lost_rc : rc, why, sizeof(why));
        } else if (efc_time_ns() >= m->deadline_ns) {
            snprintf(why, sizeof(why), "no CONNACK within %d s", m->keepalive_s);
        } else {
            return;
        }
        schedule_retry(m, why);
    }
}

enum efc_status efc_mqtt_loop(struct efc_mqtt *m, int timeout_ms)
{
    if (!m || timeout_ms < 0) {
        return efc_errf(EFC_EINVAL, "mqtt: loop: bad argument");
    }
    if (m->state == ST_IDLE) {
        return efc_errf(EFC_EINVAL, "mqtt: %s: loop before efc_mqtt_connect", who(m));
    }
    if (m->state == ST_WAIT) {
        uint64_t now = efc_time_ns();
        if (now < m->deadline_ns) {
            uint64_t left_ms = (m->deadline_ns - now + 999999ULL) / 1000000ULL;
            if (left_ms > (uint64_t)timeout_ms) {
                sleep_ms(timeout_ms);
                return EFC_OK;
            }
            sleep_ms((int)left_ms);
        }
        int rc = start_attempt(m);
        if (rc != MOSQ_ERR_SUCCESS) {
            char why[320];
            attempt_why(m, rc, why, sizeof(why));
            schedule_retry(m, why);
        }
        return EFC_OK;
    }
    uint64_t seen = m->n_events;
    int rc = mosquitto_loop(m->mosq, timeout_ms, 1);
    after_io(m, rc);
    for (int i = 0; i < EFC_MQTT_DRAIN_MAX && m->state == ST_UP && m->n_events != seen; i++) {
        seen = m->n_events;
        rc = mosquitto_loop(m->mosq, 0, 1);
        after_io(m, rc);
    }
    return EFC_OK;
}

enum efc_status efc_mqtt_flush(struct efc_mqtt *m, int timeout_ms)
{
    if (!m || timeout_ms < 0) {
        return efc_errf(EFC_EINVAL, "mqtt: flush: bad argument");
    }
    uint64_t until = efc_time_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (m->n_pending > 0 && m->state == ST_UP && efc_time_ns() < until) {
        int rc = mosquitto_loop(m->mosq, 10, 1);
        after_io(m, rc);
    }
    if (m->n_pending == 0) {
        return EFC_OK;
    }
    return efc_errf(m->state == ST_UP ? EFC_ETIMEDOUT : EFC_ENET,
                    "mqtt: %s: %llu message(s) not delivered to the broker", who(m),
                    (unsigned long long)m->n_pending);
}

static int sub_find(const struct efc_mqtt *m, const char *pattern)
{
    for (size_t i = 0; i < m->n_subs; i++) {
        if (strcmp(m->subs[i].pattern, pattern) == 0) {
            return (int)i;
        }
    }
    return -1;
}

enum efc_status efc_mqtt_subscribe(struct efc_mqtt *m, const char *pattern, int qos)
{
    if (!m || !pattern) {
        return efc_errf(EFC_EINVAL, "mqtt: subscribe: NULL argument");
    }
    if (qos < 0 || qos > 2) {
        return efc_errf(EFC_EINVAL, "mqtt: subscribe '%s': qos %d out of range 0..2", pattern, qos);
    }
    if (mosquitto_sub_topic_check(pattern) != MOSQ_ERR_SUCCESS) {
        return efc_errf(EFC_EINVAL, "mqtt: subscribe: invalid topic filter '%s'", pattern);
    }
    int i = sub_find(m, pattern);
    if (i >= 0) {
        m->subs[i].qos = qos;
    } else {
        if (m->n_subs == m->cap_subs) {
            size_t cap = m->cap_subs ? m->cap_subs * 2 : 8;
            struct mqtt_sub *s = efc_realloc(m->subs, cap * sizeof(*s));
            if (!s) {
                return efc_errf(EFC_ENOMEM, "mqtt: subscribe: out of memory");
            }
            m->subs = s;
            m->cap_subs = cap;
        }
        char *dup = efc_strdup(pattern);
        if (!dup) {
            return efc_errf(EFC_ENOMEM, "mqtt: subscribe: out of memory");
        }
        m->subs[m->n_subs].pattern = dup;
        m->subs[m->n_subs].qos = qos;
        m->n_subs++;
    }
    if (m->state == ST_UP) {
        int rc = mosquitto_subscribe_v5(m->mosq, NULL, pattern, qos, 0, NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            /* Kept in the list: re-sent on the next connect. */
            efc_log(EFC_LOG_WARN, MOD, "%s: subscribe '%s' not sent now: %s", who(m), pattern,
                    mosquitto_strerror(rc));
        }
    }
    return EFC_OK;
}

enum efc_status efc_mqtt_publish(struct efc_mqtt *m, const char *topic, const void *payload,
                                 size_t len, int qos, int retain, uint32_t expiry_s)
{
    if (!m || !topic || (len > 0 && !payload)) {
        return efc_errf(EFC_EINVAL, "mqtt: publish: NULL argument");
    }
    if (qos < 0 || qos > 2) {
        return efc_errf(EFC_EINVAL, "mqtt: publish '%s': qos %d out of range 0..2", topic, qos);
    }
    if (len > (size_t)MQTT_MAX_PAYLOAD) {
        return efc_errf(EFC_EINVAL, "mqtt: publish '%s': payload of %zu bytes too large", topic,
                        len);
    }
    if (mosquitto_pub_topic_check(topic) != MOSQ_ERR_SUCCESS) {
        return efc_errf(EFC_EINVAL, "mqtt: publish: invalid topic '%s'", topic);
    }
    if (m->state != ST_UP) {
        return efc_errf(EFC_ENET, "mqtt: publish '%s': not connected to %s:%d", topic, m->host,
                        m->port);
    }
    mosquitto_property *props = NULL;
    int rc = MOSQ_ERR_SUCCESS;
    if (expiry_s > 0) {
        rc = mosquitto_property_add_int32(&props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, expiry_s);
    }
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_publish_v5(m->mosq, NULL, topic, (int)len, payload, qos,
                                  retain ? true : false, props);
    }
    mosquitto_property_free_all(&props);
    switch (rc) {
    case MOSQ_ERR_SUCCESS:
        m->n_pending++;
        return EFC_OK;
    case MOSQ_ERR_NOMEM:
        return efc_errf(EFC_ENOMEM, "mqtt: publish '%s': out of memory", topic);
    case MOSQ_ERR_INVAL:
    case MOSQ_ERR_PAYLOAD_SIZE:
    case MOSQ_ERR_MALFORMED_UTF8:
    case MOSQ_ERR_OVERSIZE_PACKET:
        return efc_errf(EFC_EINVAL, "mqtt: publish '%s': %s", topic, mosquitto_strerror(rc));
    case MOSQ_ERR_QOS_NOT_SUPPORTED:
        return efc_errf(EFC_EUNSUPPORTED, "mqtt: publish '%s': %s", topic, mosquitto_strerror(rc));
    default:
        return efc_errf(EFC_ENET, "mqtt: publish '%s': %s", topic, reason_str(rc));
    }
}

int efc_mqtt_connected(const struct efc_mqtt *m)
{
    return m && m->state == ST_UP;
}

void efc_mqtt_free(struct efc_mqtt *m)
{
    if (!m) {
        return;
    }
    m->freeing = 1;
    if (m->mosq) {
        if (m->state == ST_UP || m->state == ST_CONNECTING) {
            /* libmosquitto 2.0 writes DISCONNECT at once (not in a callback) and closes the
             * socket after it; a few loop rounds flush it if the socket was busy. */
            if (mosquitto_disconnect_v5(m->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL) ==
                MOSQ_ERR_SUCCESS) {
                for (int i = 0; i < 5; i++) {
                    if (mosquitto_loop(m->mosq, 20, 1) != MOSQ_ERR_SUCCESS) {
                        break;
                    }
                }
            }
        }
        mosquitto_destroy(m->mosq);
    }
    for (size_t i = 0; i < m->n_subs; i++) {
        efc_free(m->subs[i].pattern);
    }
    efc_free(m->subs);
    efc_free(m->client_id);
    efc_free(m);
}
