#!/usr/bin/env bash
# efc-coordinator under faults, against a real mosquitto and real efc-agents:
#  (1) malformed messages on every subscribed kind (not JSON, wrong version, oversized, deeply
#      nested, truncated) are logged and dropped; the coordinator keeps running;
#  (2) two agents of one class (both capped at ref); dev-h's evaluation child hangs
#      (EFC_AGENT_FAULT=hang), so its first job stays assigned; meanwhile dev-h still reads
#      MQTT (a malformed job sent to it is dropped at once);
#  (3) a result of dev-g, captured off the wire, is replayed after it was stored: counted as a
#      duplicate and acked again, nothing stored twice; the same result with an unknown job id is
#      not stored (no ack); the same result under another device's topic is dropped;
#  (4) a ghost device of a third class comes online (a forged retained status), is sent a job,
#      then goes offline: its job is released, and its class, left with no live device, is
#      reported at the end ("no live devices") instead of being waited on;
#  (5) dev-h is SIGKILLed mid-job: the will marks it offline, its job is released and run by
#      dev-g (attempt 2); the round completes and exits 0;
#  (6) the store holds one result per job of the live class, every one done; the selection is
#      made for it; the `report` subcommand shows the same, and the class without live devices.
# Usage: coord_faults.sh BUILD_DIR. Prints "N passed, M failed". SKIP (exit 0) without mosquitto
# or the Fashion-MNIST files. Bounded: every wait has a deadline (< 120 s in total).
set -uo pipefail
build=$(cd "${1:?usage: coord_faults.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/broker.sh"
agent_bin=$build/agent/efc-agent
coord_bin=$build/coordinator/efc-coordinator
efc_bin=$build/cli/efc
fm=${EFC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

command -v mosquitto >/dev/null && command -v mosquitto_pub >/dev/null \
    && command -v mosquitto_sub >/dev/null \
    || { echo "SKIP: mosquitto / mosquitto_pub / mosquitto_sub not installed"; exit 0; }
[[ -f $fm/t10k-images-idx3-ubyte.gz && -f $fm/train-images-idx3-ubyte.gz ]] \
    || { echo "SKIP: Fashion-MNIST not found in $fm"; exit 0; }
for b in "$agent_bin" "$coord_bin" "$efc_bin"; do
    [[ -x $b ]] || { echo "FAIL: $b not built"; echo "0 passed, 1 failed"; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
    stop_all
    if [[ -n "${EFC_VERBOSE:-}" ]]; then tail -n +1 "$tmp"/*.log "$tmp"/*.out 2>/dev/null; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
. "$here/lib/check.sh"
# wait_for FILE REGEX SECONDS: until a line of FILE matches (extended regex).
wait_for() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

broker_start "$tmp/b" && ok "broker on 127.0.0.1:$BROKER_PORT" || { bad "broker start"; finish; }
url=mqtt://127.0.0.1:$BROKER_PORT
pfx=efc/v1
pub() { mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 "$@"; }
export EFC_AGENT_TIMING_LOCK=$tmp/timing.lock

model=$tmp/base.efm
if "$efc_bin" train --arch mlp --data fashion-mnist --epochs 1 --limit 3000 -q -o "$model" \
        > "$tmp/train.log" 2>&1; then
    ok "trained a base model ($(stat -c %s "$model") bytes)"
else
    bad "efc train"; cat "$tmp/train.log"; finish
fi

grid="fp32;int8(calib=minmax,weights=tensor);int8(calib=percentile,weights=channel)"
timeout 110 "$coord_bin" --broker "$url" --db "$tmp/efc.db" round --base "$model" \
    --grid "$grid" --sla-drop 0.02 --objective bytes --per-class 1 --calib 128 --eval 300 \
    --runs 5 --batch 8 --min-devices 2 --timeout 100 --job-timeout 60 \
    > "$tmp/coord.out" 2> "$tmp/coord.log" &
coord_pid=$!
pids+=($coord_pid)
wait_for "$tmp/coord.log" "connected to" 10 || { bad "coordinator did not connect"; finish; }
sleep 0.5 # its subscriptions

# (1) malformed messages on every kind the coordinator subscribes to
nested=$(printf '[%.0s' $(seq 3000))
big=$(head -c $((96 * 1024)) /dev/zero | tr '\0' 'A')
pub -t "$pfx/dev/evil/result" -m 'not json'
pub -t "$pfx/dev/evil/result" -m '{"version":99,"job_id":"j1"}'
pub -t "$pfx/dev/evil/result" -m "$nested"
pub -t "$pfx/dev/evil/result" -m "{\"version\":1,\"pad\":\"$big\"}"
pub -t "$pfx/dev/evil/status" -m '{"version":1,"device_id":"evil","online":"yes"}'
pub -t "$pfx/dev/evil/status" -m '{"version":1,"device_id":"evil","hw_class":"a b"'
pub -t "$pfx/dev/evil/chunk/req" -m '{"version":1,"sha256":"zz","first":-1}'
pub -t "$pfx/dev/evil/chunk/req" -m "$nested"
pub -t "$pfx/dev/../result" -m '{}'
n_drop=9
if wait_for "$tmp/coord.log" "dropped message on topic" 10; then
    sleep 0.5
    n=$(grep -cE "dropped (malformed|message on topic)" "$tmp/coord.log")
    [[ $n -ge $n_drop ]] && kill -0 $coord_pid 2>/dev/null \
        && ok "malformed messages: $n of $n_drop logged and dropped, coordinator still running" \
        || bad "malformed messages: only $n logged, or the coordinator died"
else
    bad "malformed messages not logged"; kill -0 $coord_pid 2>/dev/null || finish
fi
grep -E "dropped (malformed|message on topic)" "$tmp/coord.log" | sed 's/^/     /' | cut -c1-150

# (2) two agents of one class; dev-h's evaluation hangs
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "$pfx/dev/dev-g/result" -C 1 -W 90 \
    > "$tmp/captured.json" 2> /dev/null &
pids+=($!)
sleep 0.3
EFC_AGENT_FAULT=hang "$agent_bin" --id dev-h --broker "$url" --data "fashion-mnist:shard=1/6" \
    --state-dir "$tmp/sh" --isa ref > "$tmp/agent-h.log" 2>&1 &
h_pid=$!
pids+=($h_pid)
"$agent_bin" --id dev-g --broker "$url" --data "fashion-mnist:shard=2/6" \
    --state-dir "$tmp/sg" --isa ref > "$tmp/agent-g.log" 2>&1 &
pids+=($!)
if wait_for "$tmp/agent-h.log" "job=[^ ]+ running" 30; then
    h_job=$(grep -oE "job=[^ ]+ running" "$tmp/agent-h.log" | head -1 | sed 's/job=//; s/ running//')
    ok "dev-h is running job $h_job (its evaluation hangs)"
else
    bad "dev-h never ran a job"; finish
fi

# dev-h keeps serving MQTT while its evaluation runs: a malformed job is read and dropped now
pub -t "$pfx/dev/dev-h/job" -m 'not a job'
wait_for "$tmp/agent-h.log" "dropped malformed job" 10 \
    && ok "dev-h serves MQTT during its evaluation (a malformed job dropped meanwhile)" \
    || bad "dev-h's loop is blocked during its evaluation"

# (3) replays of a stored result
if wait_for "$tmp/captured.json" "job_id" 40 \
        && wait_for "$tmp/coord.log" "result job=.* device=dev-g policy=" 10; then
    g_job=$(grep -oE '"job_id":"[^"]+"' "$tmp/captured.json" | cut -d'"' -f4)
    ok "captured dev-g's result of job $g_job off the wire"
    pub -t "$pfx/dev/dev-g/result" -f "$tmp/captured.json"
    pub -t "$pfx/dev/dev-g/result" -f "$tmp/captured.json"
    sed "s/\"job_id\":\"$g_job\"/\"job_id\":\"j-nobody-knows\"/" "$tmp/captured.json" \
        > "$tmp/forged.json"
    pub -t "$pfx/dev/dev-g/result" -f "$tmp/forged.json"
    pub -t "$pfx/dev/dev-z/result" -f "$tmp/captured.json"
    wait_for "$tmp/coord.log" "dropped malformed result of dev-z" 10
    n_dup=$(grep -c "result job=$g_job device=dev-g duplicate, acked again" "$tmp/coord.log")
    [[ $n_dup -ge 2 ]] && ok "replayed result: $n_dup duplicate(s), acked again" \
        || bad "replayed result: $n_dup duplicate(s) logged, expected 2"
    grep -q "result job=j-nobody-knows device=dev-g not stored" "$tmp/coord.log" \
        && ok "result for an unknown job: not stored" || bad "unknown job's result not rejected"
    grep -q "dropped malformed result of dev-z" "$tmp/coord.log" \
        && ok "result under another device's topic: dropped" \
        || bad "result under another device's topic not dropped"
else
    bad "no result of dev-g captured/stored"
fi

# (4) a ghost device of a third class: online, sent a job, offline
ghost_class=x86_64-ghost
if mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "$pfx/dev/dev-g/status" -C 1 -W 5 \
        > "$tmp/g-status.json" 2> /dev/null && grep -q '"online":true' "$tmp/g-status.json"; then
    sed "s/\"device_id\":\"dev-g\"/\"device_id\":\"dev-ghost\"/;
         s/\"hw_class\":\"[^\"]*\"/\"hw_class\":\"$ghost_class\"/" "$tmp/g-status.json" \
        > "$tmp/ghost-on.json"
    sed 's/"online":true/"online":false/' "$tmp/ghost-on.json" > "$tmp/ghost-off.json"
    pub -r -t "$pfx/dev/dev-ghost/status" -f "$tmp/ghost-on.json"
    if wait_for "$tmp/coord.log" "-> device=dev-ghost" 10; then
        pub -r -t "$pfx/dev/dev-ghost/status" -f "$tmp/ghost-off.json"
        wait_for "$tmp/coord.log" "device=dev-ghost class=$ghost_class offline: 1 job" 10 \
            && ok "ghost device: sent a job, went offline, its job released" \
            || bad "ghost device's job not released when it went offline"
    else
        bad "ghost device of class $ghost_class was not sent a job"
    fi
else
    bad "no retained online status of dev-g"
fi

# (5) dev-h killed mid-job: the job goes to dev-g
kill -9 $h_pid
wait $h_pid 2>/dev/null
if wait_for "$tmp/coord.log" "device=dev-h class=[^ ]+ offline: 1 job" 30; then
    ok "dev-h SIGKILLed: the will marked it offline and its job was released"
else
    bad "dev-h's job not released after SIGKILL"
fi
if wait $coord_pid; then ok "round completed: exit 0"
else bad "efc-coordinator round failed"; fi
sed 's/^/     /' "$tmp/coord.out"
grep -qE "job=$h_job policy=.* -> device=dev-g \(attempt 2\)" "$tmp/coord.log" \
    && ok "job $h_job reassigned to dev-g (attempt 2)" || bad "job $h_job not reassigned to dev-g"
grep -qE "result job=$h_job device=dev-g policy=.* ok" "$tmp/coord.log" \
    && ok "job $h_job completed by dev-g" || bad "job $h_job not completed by dev-g"
grep -q "class $ghost_class: 3 job(s) not run: no live devices" "$tmp/coord.out" \
    && ok "class $ghost_class reported: 3 jobs not run, no live devices" \
    || bad "class with no live devices not reported"

# (6) the store: one result per job of the live class, all done; a selection for it
counts=$(grep -E "^round .*: jobs=" "$tmp/coord.out")
[[ $counts =~ jobs=6\ done=3\ failed=0\ expired=0\ unfinished=3\ results=3\ distinct_jobs=3 ]] \
    && ok "store: ${counts#*: }" || bad "store counts: $counts"
grep -qE "round .*: 3 result\(s\) stored, 2 duplicate\(s\), 11 message\(s\) rejected" "$tmp/coord.out" \
    && ok "$(grep -oE '3 result.*rejected' "$tmp/coord.out")" || bad "result/duplicate counts"
grep -qE "^generic-ref +[0-9]+ +[a-z0-9]" "$tmp/coord.out" \
    && ok "selection made for generic-ref" || bad "no selection for generic-ref"
rid=$(sed -n 's/^round \([^ :]*\): jobs=.*/\1/p' "$tmp/coord.out")
if [[ -n $rid ]] && "$coord_bin" --db "$tmp/efc.db" report --round-id "$rid" \
        > "$tmp/report.out" 2>&1 && grep -q "class $ghost_class: 3 job(s) not run" "$tmp/report.out" \
        && grep -qE "^generic-ref +[0-9]+ +[a-z0-9]" "$tmp/report.out"; then
    ok "report subcommand: the same selection, and the class without live devices"
else bad "report subcommand"; cat "$tmp/report.out"; fi
finish
