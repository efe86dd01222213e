#!/usr/bin/env bash
# efc-agent against a real mosquitto and a fake coordinator (tests/integration/tools/fake_coord):
#  (1) two jobs (fp32, int8(calib=percentile,weights=channel)) fetched by chunks, run, both OK
#      with consistent counts (same eval samples: same eval_total and base_correct), acked;
#  (2) the retained status says online;
#  (3) a third job left un-acked, then the agent is SIGKILLed: the will marks it offline;
#  (4) restarted: the un-acked result is resent (outbox / journal) with the very same numbers
#      and the job is not run again; a replayed acked job is ignored;
#  (5) a malformed job is dropped and the agent keeps serving; SIGTERM stops it cleanly with
#      a retained offline status;
#  (6) an agent SIGKILLed while a job runs (evaluation child made to hang) and restarted: the
#      replayed job is not run again but answered with a FAILED "interrupted" result.
# Usage: agent_mqtt.sh BUILD_DIR. Prints "N passed, M failed". SKIP (exit 0) without mosquitto
# or the Fashion-MNIST files. Bounded: every wait has a deadline (< 60 s in total).
set -uo pipefail
build=$(cd "${1:?usage: agent_mqtt.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/broker.sh"
agent_bin=$build/agent/efc-agent
coord_bin=$build/tests/fake_coord
efc_bin=$build/cli/efc
fm=${EFC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null \
    || { echo "SKIP: mosquitto / mosquitto_sub not installed"; exit 0; }
[[ -f $fm/t10k-images-idx3-ubyte.gz && -f $fm/train-images-idx3-ubyte.gz ]] \
    || { echo "SKIP: Fashion-MNIST not found in $fm"; exit 0; }
for b in "$agent_bin" "$coord_bin" "$efc_bin"; do
    [[ -x $b ]] || { echo "FAIL: $b not built"; echo "0 passed, 1 failed"; exit 1; }
done

tmp=$(mktemp -d)
agent_pid= child_pid= coord_pid=
cleanup() {
    local p
    for p in $agent_pid $child_pid $coord_pid; do
        { kill -9 "$p" && wait "$p"; } 2>/dev/null
    done
    broker_stop
    if [[ -n "${EFC_VERBOSE:-}" ]]; then cat "$tmp"/agent*.log "$tmp"/coord*.log 2>/dev/null; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
. "$here/lib/check.sh"

broker_start "$tmp/b" && ok "broker on 127.0.0.1:$BROKER_PORT" || { bad "broker start"; finish; }
url=mqtt://127.0.0.1:$BROKER_PORT
dev=dev-a
status_topic=efc/v1/dev/$dev/status
export EFC_AGENT_TIMING_LOCK=$tmp/timing.lock

# A tiny base model (seconds): an MLP on 3000 training images, one epoch.
model=$tmp/base.efm
if "$efc_bin" train --arch mlp --data fashion-mnist --epochs 1 --limit 3000 -q -o "$model" \
        > "$tmp/train.log" 2>&1; then
    ok "trained a base model ($(stat -c %s "$model") bytes)"
else
    bad "efc train"; cat "$tmp/train.log"; finish
fi

start_agent() { # $1: log name
    "$agent_bin" --id "$dev" --broker "$url" --data "fashion-mnist:shard=1/6" \
        --state-dir "$tmp/state" >> "$tmp/$1" 2>&1 &
    agent_pid=$!
}
coord() { # $1: log name, rest: fake_coord options
    local log=$1; shift
    timeout 25 "$coord_bin" --broker "$url" --device "$dev" --model "$model" \
        --calib 256 --eval 500 --runs 10 --batch 16 --timeout-ms 20000 "$@" > "$tmp/$log" 2>&1
}
retained_status() { mosquitto_sub -p "$BROKER_PORT" -t "$status_topic" -C 1 -W 5 2>/dev/null; }
# The retained status once it says online true|false (the will is published when the broker
# notices the closed socket: poll, <= 15 x 0.2 s).
wait_status() {
    local s
    for _ in $(seq 15); do
        s=$(retained_status)
        grep -q "\"online\":[ ]*$1" <<< "$s" && break
        sleep 0.2
    done
    echo "$s"
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<< "$1"; }

# (1) two jobs
start_agent agent1.log
if coord coord1.log --job j1=fp32 --job "j2=int8(calib=percentile,weights=channel)" --dup-ack
then ok "fake_coord: both results arrived and decoded"
else bad "fake_coord run 1"; cat "$tmp/coord1.log"; fi
r1=$(grep "result job=j1 " "$tmp/coord1.log" | head -1)
r2=$(grep "result job=j2 " "$tmp/coord1.log" | head -1)
echo "     $r1"; echo "     $r2"
[[ $(field "$r1" status) == ok && $(field "$r2" status) == ok ]] && ok "both results OK" \
    || bad "result status: '$r1' '$r2'"
t1=$(field "$r1" correct); t2=$(field "$r2" correct)
if [[ -n $t1 && ${t1#*/} == 500 && ${t2#*/} == 500 && $(field "$r1" base) == $(field "$r2" base) \
      && ${t1%/*} == $(field "$r1" base) && ${t1%/*} -gt 300 ]]; then
    ok "consistent counts (eval 500, same base_correct $(field "$r1" base), fp32 = base)"
else
    bad "inconsistent counts: '$r1' / '$r2'"
fi
grep -q "fetched and verified" "$tmp/agent1.log" && ok "artifact fetched by chunks, verified" \
    || bad "no artifact fetch logged"

# (2) retained status online
st=$(retained_status)
grep -q '"online":[ ]*true' <<< "$st" && grep -q '"busy":[ ]*false' <<< "$st" \
    && ok "retained status: online, idle" || bad "retained status: '$st'"

# (3) an un-acked job, then SIGKILL: the will marks the device offline
if coord coord2.log --job j3=fp32 --no-ack --quiet-ms 300; then ok "job j3 done (not acked)"
else bad "fake_coord run 2"; cat "$tmp/coord2.log"; fi
r3=$(grep "result job=j3 " "$tmp/coord2.log" | head -1)
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null; agent_pid=
st=$(wait_status false)
grep -q '"online":[ ]*false' <<< "$st" && ok "last will: retained status offline" \
    || bad "after SIGKILL status: '$st'"

# (4) restart: j3 resent from the outbox / journal, not run again; acked j1 ignored
start_agent agent2.log
if coord coord3.log --job j3=fp32 --silent j1=fp32 --quiet-ms 1500; then
    ok "after restart: j3 result resent, replayed acked j1 ignored"
else bad "fake_coord run 3"; cat "$tmp/coord3.log"; fi
r3b=$(grep "result job=j3 " "$tmp/coord3.log" | head -1)
[[ -n $r3 && "$r3" == "$r3b" ]] && ok "resent j3 result identical (p50 $(field "$r3" p50_ms))" \
    || bad "j3 result differs: '$r3' vs '$r3b'"
n=$(cat "$tmp"/agent*.log | grep -c "job=j3 running")
[[ $n -eq 1 ]] && ok "j3 ran exactly once" || bad "j3 ran $n times"
grep -q "job=j1 already acked, ignored" "$tmp/agent2.log" && ok "agent logged: j1 ignored" \
    || bad "no 'j1 already acked' log line"

# (5) a malformed job is dropped; the agent still serves; SIGTERM = clean offline
mosquitto_pub -p "$BROKER_PORT" -q 1 -t "efc/v1/dev/$dev/job" -m '{"version":1,"type":"job"}'
mosquitto_pub -p "$BROKER_PORT" -q 1 -t "efc/v1/dev/$dev/job" -m 'not json'
if coord coord4.log --job j4=fp32 && grep -q "result job=j4 status=ok" "$tmp/coord4.log"; then
    ok "malformed jobs dropped, next job served"
else bad "after malformed jobs"; cat "$tmp/coord4.log"; fi
n=$(grep -c "dropped malformed job" "$tmp/agent2.log")
[[ $n -eq 2 ]] && ok "2 malformed jobs logged" || bad "malformed jobs logged $n times"
kill -TERM "$agent_pid"
for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$agent_pid" 2>/dev/null; then bad "agent did not stop on SIGTERM"
else
    wait "$agent_pid"; rc=$?; agent_pid=
    [[ $rc -eq 0 ]] && ok "SIGTERM: clean exit" || bad "SIGTERM: exit status $rc"
fi
st=$(wait_status false)
grep -q '"online":[ ]*false' <<< "$st" && ok "clean shutdown: retained status offline" \
    || bad "after SIGTERM status: '$st'"

# (6) killed mid-job: the evaluation child hangs (EFC_AGENT_FAULT=hang), the agent is killed
EFC_AGENT_FAULT=hang start_agent agent3.log
coord coord5.log --job j5=fp32 --timeout-ms 15000 &
coord_pid=$!
for _ in $(seq 100); do grep -q "job=j5 running" "$tmp/agent3.log" && break; sleep 0.1; done
child_pid=$(pgrep -P "$agent_pid" | head -1)
if grep -q "job=j5 running" "$tmp/agent3.log" && [[ -n $child_pid ]]; then
    ok "j5 running in its evaluation child"
else bad "j5 did not start"; fi
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null; agent_pid=
[[ -n $child_pid ]] && kill -9 "$child_pid" 2>/dev/null; child_pid=
kill "$coord_pid" 2>/dev/null; wait "$coord_pid" 2>/dev/null; coord_pid=
wait_status false > /dev/null
start_agent agent4.log
coord coord6.log --job j5=fp32
r5=$(grep "result job=j5 " "$tmp/coord6.log" | head -1)
[[ $(field "$r5" status) == failed ]] && grep -q "interrupted" <<< "$r5" \
    && ok "replayed interrupted job: FAILED result, not run again" || bad "j5 replay: '$r5'"
n=$(cat "$tmp"/agent*.log | grep -c "job=j5 running")
[[ $n -eq 1 ]] && ok "j5 started exactly once" || bad "j5 started $n times"
grep -q "job=j5 was interrupted by a restart" "$tmp/agent4.log" \
    && ok "restart logged the interrupted job" || bad "no interrupted-job log line"
kill -TERM "$agent_pid"
for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$agent_pid" 2>/dev/null || { wait "$agent_pid"; agent_pid=; }
finish
