/* mqtt.h — a thin MQTT v5 client over libmosquitto for efc-agent and efc-coordinator.
 *
 * Owns one broker connection: URL parsing ("mqtt://host:port", "mqtts://host:port"), optional
 * mutual TLS (docs/security.md), MQTT v5 CONNECT with an
 * optional last-will, a subscription list that is re-sent after every reconnect, publishing
 * with an optional message-expiry, and reconnection with jittered exponential backoff
 * (0.5 s doubling to 30 s, CLOCK_MONOTONIC). The caller's thread owns the loop: call
 * efc_mqtt_loop() from your event loop (STYLE.md 2.6; no mosquitto_loop_start threads).
 * Callbacks run inside efc_mqtt_loop() on that thread; they may publish and subscribe but must
 * not call efc_mqtt_free(). Topic and payload pointers given to on_message are valid only for
 * the call (payload is never NULL, also when len is 0). Delivery is at-least-once at best: an MQTT
 * ack is not a commit (RELIABILITY.md Part 2) — publishing while disconnected returns EFC_ENET and
 * the caller's outbox resends. Logs one line per state change (module "mqtt"): connected, lost,
 * reconnecting in N ms. Limits (libmosquitto 2.0.11): host names are resolved with a blocking
 * getaddrinfo, and when session_expiry_s > 0 the TCP connect is blocking too (2.0.11 has no
 * asynchronous connect that carries CONNECT properties); with session_expiry_s == 0 connects are
 * non-blocking. Ownership: efc_mqtt_new() copies every string and the will payload from opts; the
 * object is freed with efc_mqtt_free(). One thread per object.
 */
#ifndef EFC_PROTO_MQTT_H
#define EFC_PROTO_MQTT_H

#include <stddef.h>
#include <stdint.h>

#include "common/efc_status.h"

#define EFC_MQTT_HOST_MAX 256 /* host name bytes incl. NUL */
#define EFC_MQTT_BACKOFF_MIN_MS 500u
#define EFC_MQTT_BACKOFF_MAX_MS 30000u
#define EFC_MQTT_DEFAULT_KEEPALIVE_S 30

struct efc_mqtt;

struct efc_mqtt_opts {
    /* "mqtt://host[:port]" (port defaults to 1883) or "mqtts://host[:port]" (8883; needs the
     * three tls_ options). TLS with "mqtt://" works too: the port is then given explicitly. */
    const char *url;
    const char *client_id;  /* NULL: the broker assigns one (requires clean_start) */
    int keepalive_s;        /* 0: EFC_MQTT_DEFAULT_KEEPALIVE_S; else 5 .. 65535 */
    const char *will_topic; /* NULL: no will */
    const void *will_payload;
    size_t will_len;
    int will_retain;
    int will_qos; /* 0 .. 2 */
    /* Called after a CONNACK success; session_present as reported by the broker. */
    void (*on_connect)(void *ctx, int session_present);
    /* Called once when an established connection is lost (not for failed attempts, not from
     * efc_mqtt_free). reason: the libmosquitto code (mosquitto_strerror). */
    void (*on_disconnect)(void *ctx, int reason);
    /* retained: 1 if the broker delivered a stored retained message (new subscription). */
    void (*on_message)(void *ctx, const char *topic, const void *payload, size_t len, int retained);
    void *ctx;
    int clean_start;           /* 1: start a fresh session on every connect */
    uint32_t session_expiry_s; /* MQTT v5 session expiry; 0: session ends on disconnect */
    /* QoS 1/2 messages in flight each way (MQTT v5 send and receive maximum), 1 .. 65535;
     * 0: libmosquitto's default of 20. A busy coordinator wants more: with 20, its acks and
     * jobs queue behind PUBACK round trips. */
    int inflight;
    /* TLS (docs/security.md): all three set = mutual TLS with the broker; all NULL = plain
     * TCP. tls_ca: CA certificate file (PEM) the broker's certificate must chain to (peer
     * and host name verification are never turned off); tls_cert / tls_key: this client's
     * certificate and unencrypted private key (PEM). Only some set: EFC_EINVAL. Each must be
     * a non-empty regular file this process can open, checked by efc_mqtt_new (EFC_EINVAL
     * naming the file); a key readable by group or others is logged as a warning. With TLS,
     * the "connected" log line says so, and a failed handshake (wrong CA, certificate refused
     * by the broker) is logged with libmosquitto's reason and retried with the backoff. */
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
};

/* Parse "mqtt://host[:port]" or "mqtts://host[:port]" ("[v6addr]" accepted; default port 1883
 * and 8883). host gets host_cap bytes (NUL-terminated). EFC_EINVAL with a detail for a
 * malformed URL or another scheme. */
enum efc_status efc_mqtt_url_parse(const char *url, char *host, size_t host_cap, int *port);

/* Validate opts and create the client (not yet connected). EFC_EINVAL with a detail for a bad
 * URL or option (partial TLS options, an unreadable TLS file, mqtts without TLS options);
 * EFC_ENOMEM. *out is freed with efc_mqtt_free. */
enum efc_status efc_mqtt_new(const struct efc_mqtt_opts *opts, struct efc_mqtt **out);

/* Start connecting (non-blocking, see the limits above). A refused or unreachable broker is
 * not an error: efc_mqtt_loop() keeps retrying with backoff. EFC_EINVAL if already started. */
enum efc_status efc_mqtt_connect(struct efc_mqtt *m);

/* One iteration: network I/O and callbacks (mosquitto_loop), or, while disconnected, waiting
 * for and starting the next attempt. Waits at most timeout_ms (>= 0) for traffic; once traffic
 * came, keeps reading without waiting while packets keep arriving (at most
 * EFC_MQTT_DRAIN_MAX rounds), so a burst is taken in one call. Returns EFC_OK unless m was
 * never connected (EFC_EINVAL); a lost connection is handled inside. */
#define EFC_MQTT_DRAIN_MAX 256
enum efc_status efc_mqtt_loop(struct efc_mqtt *m, int timeout_ms);

/* Run the loop until every message published so far has left (QoS 0: written; QoS 1/2: the
 * broker acknowledged it), or timeout_ms passed, or the connection is down. EFC_OK when all
 * left; EFC_ETIMEDOUT / EFC_ENET with the count still pending otherwise. */
enum efc_status efc_mqtt_flush(struct efc_mqtt *m, int timeout_ms);

/* Subscribe to a topic filter (wildcards allowed) at qos 0..2. Kept in a list and re-sent after
 * every reconnect; subscribing to a filter already in the list updates its qos. Allowed while
 * disconnected (sent on connect). EFC_EINVAL for an invalid filter or qos. */
enum efc_status efc_mqtt_subscribe(struct efc_mqtt *m, const char *pattern, int qos);

/* Publish len bytes (len 0 with retain deletes a retained message). expiry_s > 0 adds the
 * MQTT v5 message-expiry property. EFC_ENET while disconnected (nothing is queued); EFC_EINVAL
 * for a bad topic (wildcards, empty), qos or size. */
enum efc_status efc_mqtt_publish(struct efc_mqtt *m, const char *topic, const void *payload,
                                 size_t len, int qos, int retain, uint32_t expiry_s);

/* 1 between a successful CONNACK and the loss of that connection, else 0. */
int efc_mqtt_connected(const struct efc_mqtt *m);

/* Send a clean DISCONNECT (so the broker does not publish the will) and free. NULL is a no-op. */
void efc_mqtt_free(struct efc_mqtt *m);

/* The reconnect delay before attempt `attempt` (0-based) given a random 64-bit value:
 * min(30 s, 0.5 s * 2^attempt) jittered down by up to half, never below 0.5 s. Pure; exposed
 * for tests. */
uint32_t efc_mqtt_backoff_ms(unsigned attempt, uint64_t rnd);

#endif
