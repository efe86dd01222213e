#!/usr/bin/env bash
# The broker harness works: mosquitto on a free loopback port, MQTT v5 publish/subscribe,
# retained messages and their deletion, two brokers at once on different ports, clean stop.
set -uo pipefail
. "$(dirname "$0")/lib/broker.sh"
tmp=$(mktemp -d)
trap 'broker_stop; rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
if ! command -v mosquitto_pub >/dev/null; then echo "SKIP: mosquitto-clients not installed"; exit 0; fi

broker_start "$tmp/b1" && ok "broker on 127.0.0.1:$BROKER_PORT" || { bad "broker start"; exit 1; }
p1=$BROKER_PORT pid1=$BROKER_PID
mosquitto_pub -V mqttv5 -p "$p1" -t efc/v1/dev/a/status -r -q 1 -m '{"online":1}' \
    && ok "retained publish (v5, QoS 1)" || bad "publish"
got=$(timeout 5 mosquitto_sub -V mqttv5 -p "$p1" -t 'efc/v1/dev/+/status' -C 1 -W 3 2>/dev/null)
[[ "$got" == '{"online":1}' ]] && ok "new subscriber gets the retained status" || bad "retained: '$got'"
mosquitto_pub -V mqttv5 -p "$p1" -t efc/v1/dev/a/status -r -n && ok "empty retained payload" || bad "clear"
got=$(timeout 3 mosquitto_sub -V mqttv5 -p "$p1" -t 'efc/v1/dev/+/status' -C 1 -W 1 2>/dev/null)
[[ -z "$got" ]] && ok "retained message deleted" || bad "still retained: '$got'"
broker_start "$tmp/b2" && [[ "$BROKER_PORT" != "$p1" ]] && ok "second broker on another port ($BROKER_PORT)" \
    || bad "second broker"
broker_stop
BROKER_PID=$pid1 BROKER_PORT=$p1
broker_stop
kill -0 "$pid1" 2>/dev/null && bad "broker still running" || ok "brokers stopped"
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
