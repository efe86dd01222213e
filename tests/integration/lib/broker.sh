# broker.sh — start / stop a private mosquitto on a free loopback port (source this file).
#   broker_start DIR     starts mosquitto with deploy/mosquitto/dev.conf in DIR; sets
#                        BROKER_PORT and BROKER_PID; waits until it accepts connections
#                        (<= 20 x 100 ms, as mosquitto's own test harness does); retries on a
#                        port taken between the check and the bind.
#   broker_start_tls DIR PKI_DIR [PREFIX]
#                        the same with deploy/mosquitto/tls.conf (mutual TLS only, CN = user
#                        name) and deploy/mosquitto/acl for PREFIX (default efc/v1); PKI_DIR
#                        made by deploy/pki.sh. The TLS port is probed the same way (a TCP
#                        connect succeeds once the listener is up).
#   broker_stop          SIGTERM, then SIGKILL after 2 s.
#   broker_kill          SIGKILL (crash tests).
#   stop_all             SIGKILL and reap every pid in the caller's array `pids`, then
#                        broker_stop (the scripts' EXIT trap).
_efc_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)

_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

broker_start() {
    local dir=$1 try port
    command -v mosquitto >/dev/null || { echo "broker.sh: mosquitto not installed" >&2; return 1; }
    mkdir -p "$dir"
    for try in 1 2 3 4 5 6 7 8 9 10; do
        port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
        _port_free "$port" || continue
        sed "s/@PORT@/$port/" "$_efc_root/deploy/mosquitto/dev.conf" > "$dir/mosquitto.conf"
        mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
        BROKER_PID=$!
        for _ in $(seq 20); do
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi   # exited: port taken?
            if ! _port_free "$port"; then BROKER_PORT=$port; return 0; fi
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null
    done
    echo "broker.sh: could not start mosquitto (see $dir/mosquitto.log)" >&2
    return 1
}

broker_start_tls() {
    local dir=$1 pki prefix=${3:-efc/v1} try port
    command -v mosquitto >/dev/null || { echo "broker.sh: mosquitto not installed" >&2; return 1; }
    pki=$(cd "$2" && pwd) || return 1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    sed "s|@PREFIX@|$prefix|g" "$_efc_root/deploy/mosquitto/acl" > "$dir/acl"
    for try in 1 2 3 4 5 6 7 8 9 10; do
        port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
        _port_free "$port" || continue
        sed "s|@PORT@|$port|; s|@PKI@|$pki|g; s|@ACL@|$dir/acl|" \
            "$_efc_root/deploy/mosquitto/tls.conf" > "$dir/mosquitto.conf"
        # Started as root, mosquitto becomes user "mosquitto" before it reads the certificates,
        # and the PKI (0700, keys 0600) is the caller's: stay the caller (no-op when not root).
        echo "user $(id -un)" >> "$dir/mosquitto.conf"
        mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
        BROKER_PID=$!
        for _ in $(seq 20); do
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi   # exited: port taken?
            if ! _port_free "$port"; then BROKER_PORT=$port; return 0; fi
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null
    done
    echo "broker.sh: could not start mosquitto with TLS (see $dir/mosquitto.log)" >&2
    return 1
}

broker_stop() {
    [[ -n "${BROKER_PID:-}" ]] || return 0
    kill "$BROKER_PID" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=
}

broker_kill() {
    [[ -n "${BROKER_PID:-}" ]] || return 0
    kill -9 "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=
}

stop_all() {
    local p
    for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null; done
    broker_stop
}
