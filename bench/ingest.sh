#!/usr/bin/env bash
# Result ingestion through the broker (issue 4): a private mosquitto on a free loopback port, a
# real efc-coordinator running a round into a fresh SQLite store, and efc-loadgen, a LOAD
# GENERATOR that plays N simulated agents (one process, one MQTT connection each) and answers
# every job at once with a synthetic result. Everything the coordinator does per result is
# real: decode, validate, SQLite commit (WAL), ack; per job: assign (SQLite), publish.
# Prints: agents connected, results stored, results/s (coordinator: first to last stored; load
# generator: first result sent to last ack received), ack latency, CPU seconds per process.
# Usage: bench/ingest.sh BUILD_DIR [AGENTS [CLASSES [K]]]   (defaults 1000 10 100)
#   jobs = CLASSES x 9 policies x K (K devices of each class run each policy).
set -euo pipefail
build=$(cd "${1:?usage: ingest.sh BUILD_DIR [AGENTS [CLASSES [K]]]}" && pwd)
agents=${2:-1000} classes=${3:-10} k=${4:-100}
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/tests/integration/lib/broker.sh"
coord=$build/coordinator/efc-coordinator
loadgen=$build/bench/efc-loadgen
efc=$build/cli/efc
for b in "$coord" "$loadgen" "$efc"; do [[ -x $b ]] || { echo "$b not built" >&2; exit 1; }; done
tmp=$(mktemp -d)
pids=()
cleanup() {
    stop_all
    rm -rf "$tmp"
}
trap cleanup EXIT
ulimit -n $((agents * 4 + 1024)) 2>/dev/null || true
cpu_s() { # utime + stime of a live pid, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

broker_start "$tmp/b"
url=mqtt://127.0.0.1:$BROKER_PORT
# Any valid model will do: the load generator never fetches it.
"$efc" train --arch mlp --data fashion-mnist --epochs 1 --limit 500 -q -o "$tmp/base.efm" \
    > "$tmp/train.log" 2>&1 || { cat "$tmp/train.log"; exit 1; }
grid="fp32"
for c in minmax percentile kl mse; do
    for g in tensor channel; do grid="$grid;int8(calib=$c,weights=$g)"; done
done
echo "ingest: mosquitto $(mosquitto -h 2>/dev/null | head -1 | grep -oE '[0-9]+\.[0-9.]+'), $agents simulated agents in $classes classes, 9 policies, K=$k: $((classes * 9 * k)) jobs; $(nproc) CPUs"
EFC_LOG_LEVEL=warn "$coord" --broker "$url" --db "$tmp/efc.db" round --base "$tmp/base.efm" \
    --grid "$grid" --sla-drop 0.01 --objective p50 --per-class "$k" \
    --min-devices "$agents" --job-timeout 300 --timeout 600 > "$tmp/coord.out" 2> "$tmp/coord.log" &
cpid=$!
pids+=($cpid)
sleep 0.5
"$loadgen" --broker "$url" --agents "$agents" --classes "$classes" --idle 3 --duration 600 \
    > "$tmp/loadgen.out" 2> "$tmp/loadgen.log" &
lpid=$!
pids+=($lpid)
# CPU time of each process, sampled just before it exits (the broker: at the end).
c_cpu=0 l_cpu=0
while kill -0 $cpid 2>/dev/null; do
    c_cpu=$(cpu_s $cpid); l_cpu=$(cpu_s $lpid); sleep 0.2
    if ! kill -0 $lpid 2>/dev/null; then # the load generator ended first: a failure
        sleep 2; kill -0 $cpid 2>/dev/null || break
        echo "load generator ended before the round:"; cat "$tmp/loadgen.out"
        tail -5 "$tmp/loadgen.log"; exit 1
    fi
done
wait $cpid || { echo "coordinator failed:"; tail -20 "$tmp/coord.log"; exit 1; }
while kill -0 $lpid 2>/dev/null; do l_cpu=$(cpu_s $lpid); sleep 0.2; done
wait $lpid || { echo "load generator failed:"; tail -20 "$tmp/loadgen.log"; exit 1; }
b_cpu=$(cpu_s "$BROKER_PID")
rid=$(sed -n 's/^round \([^ :]*\): jobs=.*/\1/p' "$tmp/coord.out" | head -1)
t0=$(date +%s.%N)
"$coord" --db "$tmp/efc.db" report --round-id "$rid" > "$tmp/report.out" 2>&1 \
    || { echo "report failed:"; cat "$tmp/report.out"; exit 1; }
t_report=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}')
grep -E "^round .*(stored|jobs=)" "$tmp/coord.out" | sed 's/^/coordinator: /'
echo "load generator: $(cat "$tmp/loadgen.out")"
grep -E "connected in" "$tmp/loadgen.log" | sed 's/^/              /' || true
echo "CPU seconds: coordinator $c_cpu, load generator $l_cpu, mosquitto $b_cpu"
echo "efc-coordinator report (selection over the stored results, from the database): $t_report s"
n_warn=$(grep -c WARN "$tmp/coord.log" || true)
[[ $n_warn -eq 0 ]] || { echo "coordinator warnings: $n_warn, e.g.:"; grep WARN "$tmp/coord.log" | head -3; }
