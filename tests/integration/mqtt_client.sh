#!/usr/bin/env bash
# The MQTT v5 client (proto/mqtt.h) against a real mosquitto: (1) test_mqtt with
# EFC_TEST_BROKER_PORT (pub/sub with wildcards, QoS 1, retained, expiry, last will, no will
# after a clean free); (2) reconnect: test_mqtt in EFC_TEST_MQTT_MODE=reconnect writes "before"
# to a marker file once its echo works; this script then SIGKILLs the broker, restarts it on the
# SAME port, and the client must reconnect, re-subscribe by itself and write "after".
# Usage: mqtt_client.sh BUILD_DIR. Bounded: the reconnect scenario gives up after 20 s.
set -uo pipefail
build=$(cd "${1:?usage: mqtt_client.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/broker.sh"
bin=$build/tests/test_mqtt
[[ -x "$bin" ]] || { echo "FAIL: $bin not built"; exit 1; }
tmp=$(mktemp -d)
client_pid=
cleanup() {
    [[ -n "$client_pid" ]] && kill -9 "$client_pid" 2>/dev/null
    broker_stop
    [[ -n "${EFC_VERBOSE:-}" ]] && cat "$tmp/reconnect.log" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# Start mosquitto again on a given port (broker_start picks a random one).
broker_restart_on() {
    local dir=$1 port=$2
    sed "s/@PORT@/$port/" "$_efc_root/deploy/mosquitto/dev.conf" > "$dir/mosquitto2.conf"
    mosquitto -c "$dir/mosquitto2.conf" > "$dir/mosquitto2.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 30); do
        _port_free "$port" || return 0
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

broker_start "$tmp/b" && ok "broker on 127.0.0.1:$BROKER_PORT" || { bad "broker start"; exit 1; }
port=$BROKER_PORT

# (1) the broker cases of the unit test
if (cd "$here/.." && EFC_TEST_BROKER_PORT=$port timeout 120 "$bin") > "$tmp/unit.log" 2>&1; then
    grep -q "SKIPPED" "$tmp/unit.log" && bad "broker cases skipped" || ok "test_mqtt broker cases"
    [[ -n "${EFC_VERBOSE:-}" ]] && cat "$tmp/unit.log"
else
    bad "test_mqtt broker cases"; cat "$tmp/unit.log"
fi

# (2) reconnect after the broker is killed and restarted on the same port
marker=$tmp/marker
(cd "$here/.." && EFC_TEST_BROKER_PORT=$port EFC_TEST_MQTT_MODE=reconnect \
    EFC_TEST_MQTT_MARKER=$marker timeout 20 "$bin") > "$tmp/reconnect.log" 2>&1 &
client_pid=$!
for _ in $(seq 100); do grep -qx before "$marker" 2>/dev/null && break; sleep 0.1; done
if grep -qx before "$marker" 2>/dev/null; then
    ok "client connected and echoed (before)"
    broker_kill
    sleep 0.3
    broker_restart_on "$tmp/b" "$port" && ok "broker restarted on the same port $port" \
        || bad "broker restart on $port"
else
    bad "no 'before' marker within 10 s"
fi
wait "$client_pid"; rc=$?
client_pid=
if [[ $rc -eq 0 ]] && grep -qx after "$marker" 2>/dev/null; then
    ok "client reconnected, re-subscribed and echoed (after)"
else
    bad "reconnect scenario (exit $rc)"; cat "$tmp/reconnect.log"
fi
grep -q "connection to 127.0.0.1:$port lost" "$tmp/reconnect.log" && ok "logged: lost" \
    || bad "no 'lost' log line"
grep -q "reconnecting to 127.0.0.1:$port in [0-9]* ms" "$tmp/reconnect.log" \
    && ok "logged: reconnecting in N ms" || bad "no 'reconnecting' log line"
n=$(grep -c "connected to 127.0.0.1:$port" "$tmp/reconnect.log")
[[ $n -eq 2 ]] && ok "logged: connected twice" || bad "connected logged $n times"

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
