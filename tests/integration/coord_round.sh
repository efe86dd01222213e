#!/usr/bin/env bash
# efc-coordinator end to end against a real mosquitto and two real efc-agents:
#  (1) a tiny base model is trained; two agents with disjoint shards start (the second capped at
#      avx2 when the CPU has AVX-512, so two hardware classes appear);
#  (2) `efc-coordinator round` with a grid of fp32 + two int8 policies, K = 1, exits 0;
#  (3) the table lists every class with a chosen policy;
#  (4) the store holds exactly one result per job, every job done (printed counts, and again via
#      the `report` subcommand on the database alone);
#  (5) running `round` again with the same arguments reports the finished round (same id, no
#      new jobs or results);
#  (6) a second round in a fresh database, its coordinator SIGKILLed after the first stored
#      result and restarted: the round is resumed and completes, one result per job;
#  (7) a round whose policies have training steps (prune, lowrank): the coordinator builds the
#      candidates on its own training data, ships them as artifacts, the agents run the int8
#      step on them; a new round reuses the cached candidates;
#  (8) an ONNX base model (tests/fixtures/onnx/mlp.onnx): imported once, the round completes.
# Usage: coord_round.sh BUILD_DIR. Prints "N passed, M failed". SKIP (exit 0) without mosquitto
# or the Fashion-MNIST files. Bounded: every wait has a deadline (< 90 s in total).
set -uo pipefail
build=$(cd "${1:?usage: coord_round.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/broker.sh"
agent_bin=$build/agent/efc-agent
coord_bin=$build/coordinator/efc-coordinator
efc_bin=$build/cli/efc
fm=${EFC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

command -v mosquitto >/dev/null || { echo "SKIP: mosquitto not installed"; exit 0; }
[[ -f $fm/t10k-images-idx3-ubyte.gz && -f $fm/train-images-idx3-ubyte.gz ]] \
    || { echo "SKIP: Fashion-MNIST not found in $fm"; exit 0; }
for b in "$agent_bin" "$coord_bin" "$efc_bin"; do
    [[ -x $b ]] || { echo "FAIL: $b not built"; echo "0 passed, 1 failed"; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
    stop_all
    if [[ -n "${EFC_VERBOSE:-}" ]]; then cat "$tmp"/*.log 2>/dev/null; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
. "$here/lib/check.sh"

broker_start "$tmp/b" && ok "broker on 127.0.0.1:$BROKER_PORT" || { bad "broker start"; finish; }
url=mqtt://127.0.0.1:$BROKER_PORT
export EFC_AGENT_TIMING_LOCK=$tmp/timing.lock

model=$tmp/base.efm
if "$efc_bin" train --arch mlp --data fashion-mnist --epochs 1 --limit 3000 -q -o "$model" \
        > "$tmp/train.log" 2>&1; then
    ok "trained a base model ($(stat -c %s "$model") bytes)"
else
    bad "efc train"; cat "$tmp/train.log"; finish
fi

# (1) two agents; the second one capped at avx2 on an AVX-512 machine: two classes
isa2=()
n_classes=1
if grep -qw avx512f /proc/cpuinfo; then isa2=(--isa avx2); n_classes=2; fi
"$agent_bin" --id dev-a --broker "$url" --data "fashion-mnist:shard=1/6" \
    --state-dir "$tmp/sa" > "$tmp/agent-a.log" 2>&1 &
pids+=($!)
"$agent_bin" --id dev-b --broker "$url" --data "fashion-mnist:shard=2/6" \
    --state-dir "$tmp/sb" "${isa2[@]}" > "$tmp/agent-b.log" 2>&1 &
pids+=($!)

# (2) the round
grid="fp32;int8(calib=percentile,weights=channel);int8(calib=minmax,weights=tensor)"
n_jobs=$((3 * n_classes))
round() { # $1: stdout log
    timeout 80 "$coord_bin" --broker "$url" --db "$tmp/efc.db" round --base "$model" \
        --grid "$grid" --sla-drop 0.02 --objective bytes --per-class 1 --calib 128 --eval 300 \
        --runs 5 --batch 8 --min-devices 2 --timeout 60 --job-timeout 30 \
        --report "$tmp/report.html" > "$tmp/$1" 2> "$tmp/${1%.out}.log"
}
if round coord1.out; then ok "efc-coordinator round: exit 0"
else bad "efc-coordinator round failed"; cat "$tmp/coord1.out" "$tmp/coord1.log"; fi
cat "$tmp/coord1.out" | sed 's/^/     /'

# (3) every class in the table with a chosen policy
classes=$(sed -n 's/.*device=[^ ]* class=\([^ ]*\) .*online.*/\1/p' "$tmp/coord1.log" | sort -u)
n=$(wc -w <<< "$classes")
[[ $n -eq $n_classes ]] && ok "$n class(es) seen: $(echo $classes)" \
    || bad "expected $n_classes classes, saw '$classes'"
for cl in $classes; do
    line=$(grep -E "^ *$cl " "$tmp/coord1.out" | head -1)
    if [[ -n $line ]] && grep -qE "fp32|int8" <<< "$line"; then ok "table: $cl has a choice"
    else bad "table: no chosen policy for $cl: '$line'"; fi
done
[[ -s $tmp/report.html ]] && grep -q "<svg" "$tmp/report.html" && ok "HTML report written" \
    || bad "no HTML report"

# (4) exactly one result per job
counts=$(grep "^round .* jobs=" "$tmp/coord1.out" | head -1)
want="jobs=$n_jobs done=$n_jobs failed=0 expired=0 unfinished=0"
want="$want results=$n_jobs distinct_jobs=$n_jobs"
grep -q "$want" <<< "$counts" && ok "store: $want" || bad "counts: '$counts' (want '$want')"
rid=$(sed -n 's/^round \([^ :]*\): jobs=.*/\1/p' <<< "$counts")
if [[ -n $rid ]] && "$coord_bin" --db "$tmp/efc.db" report --round-id "$rid" \
        > "$tmp/report.out" 2>&1 && grep -q "$want" "$tmp/report.out"; then
    ok "report subcommand: same counts from the database"
else bad "report subcommand"; cat "$tmp/report.out"; fi
n=$(grep -c "job=.* -> device=" "$tmp/coord1.log")
[[ $n -eq $n_jobs ]] && ok "$n jobs published, none twice" || bad "$n job publications"

# (5) the same round again: recognised as finished, nothing new
if round coord2.out && grep -q "already finished" "$tmp/coord2.log" \
        && grep -q "$want" "$tmp/coord2.out"; then
    ok "second invocation: round $rid already finished, same counts"
else bad "second invocation"; cat "$tmp/coord2.out" "$tmp/coord2.log"; fi

# (6) killed mid-round and restarted
grid6="fp32;int8(calib=percentile,weights=channel);int8(calib=minmax,weights=tensor)"
grid6="$grid6;int8(calib=kl,weights=channel);int8(calib=mse,weights=tensor)"
n6=$((5 * n_classes))
args6=(--broker "$url" --db "$tmp/kill.db" round --base "$model" --grid "$grid6" --sla-drop 0.02
       --calib 128 --eval 2000 --runs 10 --batch 8 --min-devices 2 --timeout 60 --job-timeout 30)
"$coord_bin" "${args6[@]}" > "$tmp/kill1.out" 2> "$tmp/kill1.log" &
cpid=$!
pids+=($cpid)
for _ in $(seq 300); do grep -q "result job=" "$tmp/kill1.log" && break; sleep 0.02; done
kill -9 "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
pids=("${pids[@]:0:2}")
grep -q "result job=" "$tmp/kill1.log" && ! grep -q "jobs=" "$tmp/kill1.out" \
    && ok "coordinator SIGKILLed mid-round ($(grep -c 'result job=' "$tmp/kill1.log") result(s))" \
    || bad "coordinator was not killed mid-round"
want6="jobs=$n6 done=$n6 failed=0 expired=0 unfinished=0 results=$n6 distinct_jobs=$n6"
if timeout 80 "$coord_bin" "${args6[@]}" > "$tmp/kill2.out" 2> "$tmp/kill2.log" \
        && grep -q "resumed" "$tmp/kill2.log" && grep -q "$want6" "$tmp/kill2.out"; then
    ok "restarted coordinator resumed the round: $want6"
else bad "resume after SIGKILL"; cat "$tmp/kill2.out" "$tmp/kill2.log"; fi

# (7) policies with training steps: candidates built on the coordinator, shipped as artifacts
grid7="fp32;prune(sparsity=0.5)+int8(calib=minmax,weights=tensor);lowrank(rank=8)+int8(calib=minmax,weights=tensor)"
n7=$((3 * n_classes))
args7=(--broker "$url" --db "$tmp/cand.db" round --base "$model" --grid "$grid7" --sla-drop 0.5
       --train-data fashion-mnist --candidates "$tmp/cands" --calib 128 --eval 300 --runs 5
       --batch 8 --min-devices 2 --timeout 60 --job-timeout 30)
want7="jobs=$n7 done=$n7 failed=0 expired=0 unfinished=0 results=$n7 distinct_jobs=$n7"
if timeout 80 "$coord_bin" "${args7[@]}" > "$tmp/cand.out" 2> "$tmp/cand.log" \
        && grep -q "$want7" "$tmp/cand.out"; then
    ok "training-step policies: $want7"
else bad "round with training-step policies"; cat "$tmp/cand.out" "$tmp/cand.log"; fi
n_c=$(ls "$tmp/cands"/c-*.efm 2>/dev/null | wc -l); n_a=$(ls "$tmp/cands"/a-*.efca 2>/dev/null | wc -l)
[[ $n_c -eq 2 && $n_a -eq 3 ]] && ok "2 candidates built, 3 wire artifacts (base + 2)" \
    || bad "candidates: $n_c .efm, $n_a .efca"
shas=$(grep -ohE "artifact=[0-9a-f]{16}" "$tmp"/agent-*.log | sort -u | wc -l)
[[ $shas -ge 3 ]] && ok "agents fetched $shas distinct artifacts" || bad "agents fetched $shas artifact(s)"
grep -q "prune(sparsity=0.5): built" "$tmp/cand.out" && ok "candidate progress printed" \
    || bad "no candidate progress line"
# (a new round id: the agents rightly ignore a job id they have already been acked for)
if timeout 80 "$coord_bin" "${args7[@]}" --round-id r-cand2 > "$tmp/cand2.out" 2> "$tmp/cand2.log" \
        && grep -q "prune(sparsity=0.5): cached" "$tmp/cand2.out" && grep -q "$want7" "$tmp/cand2.out"; then
    ok "a new round reuses the cached candidates"
else bad "cached candidates"; cat "$tmp/cand2.out"; fi

# (8) an ONNX base model: imported once into the candidates directory, then a normal round
onnx=$here/../fixtures/onnx/mlp.onnx
if [[ -f $onnx ]]; then
    want8="jobs=$((2 * n_classes)) done=$((2 * n_classes)) failed=0"
    if timeout 80 "$coord_bin" --broker "$url" --db "$tmp/onnx.db" round --base "$onnx" \
            --grid "fp32;int8(calib=percentile,weights=channel)" --sla-drop 0.05 --calib 128 \
            --eval 300 --runs 5 --batch 8 --min-devices 2 --timeout 60 --job-timeout 30 \
            > "$tmp/onnx.out" 2> "$tmp/onnx.log" && grep -q "$want8" "$tmp/onnx.out" \
            && ls "$tmp/onnx.db.candidates"/base-*.efm > /dev/null 2>&1; then
        ok "ONNX base model: imported, round done ($want8)"
    else bad "round with an ONNX base"; cat "$tmp/onnx.out" "$tmp/onnx.log"; fi
fi

for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
done
pids=()
finish
