#!/usr/bin/env bash
# kill -9 of a real efc-agent during an OTA install (issue 7; RELIABILITY.md D1; docs/ota.md
# "A/B slots on the agent"). tests/unit/ota/test_slots.c kills the slot library in a forked
# child; this kills the whole agent: MQTT directive, URL fetch, PREPARE child, stage, switch,
# trial attempt, HEALTH child, commit, report, restart, resend.
#  (1) a fresh agent installs model A (the old one) from a signed directive, no fault; its
#      state dir is kept as a pristine snapshot;
#  (2) kill at every slot I/O step: for K = 1, 2, ... a copy of the snapshot, the agent
#      started with EFC_SLOTS_FAULT=kill:K (ota/slots.h: SIGKILL before the K-th counted
#      open / write / fsync / rename / unlink / mkdir after its first efc_slots_open, start-up
#      included), directive B published until the agent dies (exit 137). The first K at which
#      it completes the install instead gives N = K - 1, the operations of one agent run;
#  (2b) kill inside the agent's own atomic writes outside ota/ (the saved directive, the
#      golden output and the prepared model of its PREPARE child): kill -9 the moment the
#      temp file exists (bash polls for it without forking);
#  (3) kill at a random time: R runs of snapshot copy, agent without fault, directive B,
#      sleep a random 0..RANGE ms (RANGE = 1.2 x one measured install), kill -9;
#  after every kill, checks on the files the dead agent left (before anything repairs them):
#      ota/state passes its checksum, names exactly one active slot holding A or B, and every
#      install it names has its three files with their recorded sizes and SHA-256; the active
#      model.efm loads (`efc inspect`); min_version is not below A's version;
#  then the agent restarts without the fault, the same directive (same ota_id) is resent
#  until its report comes, and: the report says installed with B active, the retained status
#  names B, the state is committed (no trial, min_version = B's version) with A kept as the
#  previous install in the other slot, B's model.efm loads, and no *.tmp.* file is left
#  anywhere in the state dir (a kill may leave some; the restart must remove them).
# Usage: ota_kill.sh BUILD_DIR. Prints the figures and "N passed, M failed" (one pass or fail
# per kill run, plus the set-up steps; the loops stop after 10 failures other than temp files
# left behind, which cost no time). SKIP (exit 0) without mosquitto, python3 or the
# Fashion-MNIST files. EFC_KILL_SEED=S repeats the random times; EFC_KILL_RANDOM=R (default
# 30) sets the random runs (R = 130 gives 200+ kills); KEEP_TMP=1 keeps the work dir (a failed
# run's state dir is kept as fail-<run>). Every wait has a deadline.
set -uo pipefail
build=$(cd "${1:?usage: ota_kill.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/broker.sh"
agent_bin=$build/agent/efc-agent
efc_bin=$build/cli/efc
fm=${EFC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
py=/usr/bin/python3
n_random=${EFC_KILL_RANDOM:-30}
seed=${EFC_KILL_SEED:-$(( $(date +%s) % 100000 ))}
k_max=120 # more slot operations than this in one agent run would itself be a finding

command -v mosquitto >/dev/null && command -v mosquitto_pub >/dev/null \
    && command -v mosquitto_sub >/dev/null \
    || { echo "SKIP: mosquitto / mosquitto_pub / mosquitto_sub not installed"; exit 0; }
[[ -x $py ]] || { echo "SKIP: $py not installed"; exit 0; }
[[ -f $fm/t10k-images-idx3-ubyte.gz ]] || { echo "SKIP: Fashion-MNIST not found in $fm"; exit 0; }
for b in "$agent_bin" "$efc_bin"; do
    [[ -x $b ]] || { echo "FAIL: $b not built"; echo "0 passed, 1 failed"; exit 1; }
done

t_start=$(date +%s%N)
tmp=$(mktemp -d)
pids=()
agent_pid= wrap_pid=
cleanup() {
    [[ -n $agent_pid ]] && pids+=("$agent_pid" "$wrap_pid")
    stop_all
    [[ -n ${KEEP_TMP:-} ]] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
finish() {
    echo "total $(( $(ms_since "$t_start") / 1000 )) s"
    echo "$pass passed, $fail failed"
    [[ $fail -eq 0 ]]
    exit $?
}
echo "seed $seed (EFC_KILL_SEED=$seed repeats the random kill times)"
RANDOM=$seed

broker_start "$tmp/b" && ok "broker on 127.0.0.1:$BROKER_PORT" || { bad "broker start"; finish; }
url=mqtt://127.0.0.1:$BROKER_PORT
dev=dev-kill
topic=efc/v1/dev/$dev
export EFC_AGENT_TIMING_LOCK=$tmp/timing.lock
export EFC_SLOTS_FAULT= # only the runs below arm it

# Two models of the same architecture, different seeds: A is the old install, B the new.
mkdir -p "$tmp/www"
for m in a b; do
    "$efc_bin" train --arch mlp --data fashion-mnist --epochs 1 --limit 1000 --threads 1 \
        --no-eval --seed "$([[ $m == a ]] && echo 1 || echo 2)" -q -o "$tmp/$m.efm" \
        > "$tmp/train-$m.log" 2>&1 \
        && "$efc_bin" pack "$tmp/$m.efm" -o "$tmp/www/$m.efca" > "$tmp/pack-$m.log" 2>&1 \
        || { bad "train / pack model $m"; cat "$tmp/train-$m.log" "$tmp/pack-$m.log"; finish; }
done
sha_a=$(sha256sum "$tmp/www/a.efca" | cut -d' ' -f1)
sha_b=$(sha256sum "$tmp/www/b.efca" | cut -d' ' -f1)
[[ $sha_a != "$sha_b" ]] && ok "models A ${sha_a:0:16} and B ${sha_b:0:16} (packed .efca)" \
    || { bad "A and B are the same artifact"; finish; }
"$efc_bin" keygen -o "$tmp/keys" > "$tmp/keygen.out" 2>&1 \
    || { bad "efc keygen"; cat "$tmp/keygen.out"; finish; }

# The artifacts come by URL (no coordinator): a static server on a free port (port 0: the
# kernel picks it, the server prints it).
$py -u -m http.server 0 --bind 127.0.0.1 --directory "$tmp/www" > "$tmp/http.log" 2>&1 &
http_pid=$!
pids+=("$http_pid")
http_port=
for _ in $(seq 50); do
    http_port=$(sed -n 's/^Serving HTTP on .* port \([0-9]*\) .*/\1/p' "$tmp/http.log" | head -1)
    [[ -n $http_port ]] && break
    sleep 0.1
done
[[ -n $http_port ]] && ok "artifact server on 127.0.0.1:$http_port" \
    || { bad "http.server did not start"; cat "$tmp/http.log"; finish; }

# Every report of the whole test, one line each, in arrival order.
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -t "$topic/ota/report" \
    > "$tmp/reports.txt" 2>/dev/null &
pids+=($!)

# start_agent STATE_DIR LOG [FAULT]: the agent in the background (agent_pid), EFC_SLOTS_FAULT
# = FAULT (empty: none). It runs under a wrapper subshell that waits for it and exits with its
# status, so that bash does not print a "Killed" job notice for every kill.
start_agent() {
    local i
    rm -f "$tmp/agent.pid"
    (
        EFC_SLOTS_FAULT=${3:-} "$agent_bin" --id "$dev" --broker "$url" \
            --data fashion-mnist:shard=1/50 --state-dir "$1" --isa avx2 \
            --trust-keys "$tmp/keys/efc-sign.pub" > "$2" 2>&1 &
        echo $! > "$tmp/agent.pid"
        wait $!
    ) 2> /dev/null &
    wrap_pid=$!
    for ((i = 0; i < 200; i++)); do [[ -s $tmp/agent.pid ]] && break; sleep 0.01; done
    agent_pid=$(cat "$tmp/agent.pid" 2>/dev/null)
}
# reap_agent SECONDS: wait for the agent to exit; agent_rc = its exit status (137: SIGKILL),
# or "alive". (Not in a $(...) subshell: only this shell can wait for its children.)
reap_agent() {
    local i
    agent_rc=alive
    for ((i = 0; i < $1 * 50; i++)); do
        kill -0 "$wrap_pid" 2>/dev/null || break
        sleep 0.02
    done
    kill -0 "$wrap_pid" 2>/dev/null && return
    wait "$wrap_pid" 2>/dev/null
    agent_rc=$?
    agent_pid= wrap_pid=
}
# stop_agent: SIGTERM (a clean stop), SIGKILL after 3 s.
stop_agent() {
    [[ -n $agent_pid ]] || return 0
    kill "$agent_pid" 2>/dev/null
    reap_agent 3
    [[ $agent_rc == alive ]] && { kill -9 "$agent_pid" 2>/dev/null; reap_agent 2; }
    agent_pid=
}
# wait_online LOG SECONDS: the agent has connected (and subscribed) or died.
wait_online() {
    local i
    for ((i = 0; i < $2 * 50; i++)); do
        grep -q "status online=1" "$1" && return 0
        kill -0 "$agent_pid" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}
report_of() { grep "\"ota_id\":\"$1\"" "$tmp/reports.txt" | tail -1; }
json_field() { sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" <<< "$1" | head -1; }

# directive OTA_ID MANIFEST ARTIFACT: the install directive, on stdout (@ID@: a template).
directive() {
    $py - "$2" "$1" "http://127.0.0.1:$http_port/$3" "$dev" <<'PY'
import json, sys, time
man = open(sys.argv[1]).read().strip()
print(json.dumps({"version": 1, "type": "ota", "ota_id": sys.argv[2], "rollout_id": "kill",
    "device_id": sys.argv[4], "action": "install", "manifest": man, "url": sys.argv[3],
    "calib_samples": 0, "eval_samples": 50, "health_runs": 5, "min_accuracy": 0,
    "min_agree": 0, "max_p99_ms": 0, "max_rss_bytes": 0, "seed": 1,
    "deadline_ms": int(time.time() * 1000) + 900000, "mem_limit_bytes": 0}))
PY
}
publish() { mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -t "$topic/ota" -f "$1"; }
# deliver FILE OTA_ID SECONDS: publish the directive every 1 s (a resend of the same ota_id is
# harmless: deduplicated while it runs, answered from the outbox once done) until its report
# arrives (0) or the agent exits (1) or the deadline (2).
deliver() {
    local i
    for ((i = 0; i < $3 * 50; i++)); do
        ((i % 50 == 0)) && publish "$1"
        [[ -n $(report_of "$2") ]] && return 0
        kill -0 "$agent_pid" 2>/dev/null || return 1
        sleep 0.02
    done
    return 2
}
# status_model: active_model of the agent's retained status.
status_model() {
    mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -t "$topic/status" -C 1 -W 1 \
        2>/dev/null | sed -n 's/.*"active_model":"\([0-9a-f]*\)".*/\1/p'
}

# check_state DIR: the slot state as a dead or a live agent left it. Prints
# "<active slot> <A|B> trial=<0|1> attempts=<n> min=<v> prev=<slot|-> <A|B|->", or "BAD: why".
check_state() {
    $py - "$1" "$sha_a" "$sha_b" <<'PY'
import hashlib, json, os, sys
d, sha_a, sha_b = sys.argv[1], sys.argv[2], sys.argv[3]
def h(p):
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
try:
    raw = open(os.path.join(d, "ota", "state"), "rb").read()
    lines = raw.split(b"\n")
    if (len(lines) != 3 or lines[2] != b""
            or hashlib.sha256(lines[0]).hexdigest().encode() != lines[1]):
        sys.exit(print(f"BAD: ota/state fails its checksum ({len(raw)} bytes)"))
    st = json.loads(lines[0])
    act, prev = st["active"], st["previous"]
    if act is None or act.get("slot") not in ("a", "b"):
        sys.exit(print(f"BAD: no active slot: {lines[0][:200]}"))
    if prev is not None and prev.get("slot") == act["slot"]:
        sys.exit(print("BAD: active and previous name the same slot"))
    if int(st["min_version"]) < 1:
        sys.exit(print(f"BAD: min_version {st['min_version']} is below A's committed version 1"))
    name = {sha_a: "A", sha_b: "B"}
    out = []
    for role, r in (("active", act), ("previous", prev)):
        if r is None:
            out.append("- -")
            continue
        if r["artifact_sha256"] not in name:
            sys.exit(print(f"BAD: {role} slot {r['slot']} holds neither A nor B"))
        for f, key in (("artifact", "artifact"), ("manifest.json", "manifest"),
                       ("model.efm", "model")):
            p = os.path.join(d, "ota", r["slot"], f)
            if not os.path.isfile(p):
                sys.exit(print(f"BAD: {role} slot {r['slot']}: {f} missing"))
            want = r["artifact_sha256"] if key == "artifact" else r[key + "_sha256"]
            if os.path.getsize(p) != int(r[key + "_bytes"]) or h(p) != want:
                sys.exit(print(f"BAD: {role} slot {r['slot']}: {f} differs from its record"))
        m = json.load(open(os.path.join(d, "ota", r["slot"], "manifest.json")))
        if m["artifact_sha256"] != r["artifact_sha256"]:
            sys.exit(print(f"BAD: {role} slot {r['slot']}: manifest names another artifact"))
        out.append(f"{r['slot']} {name[r['artifact_sha256']]}")
    print(f"{out[0]} trial={st['trial']} attempts={st['trial_attempts']} "
          f"min={st['min_version']} prev={out[1]}")
except SystemExit:
    raise
except Exception as e:
    print(f"BAD: {type(e).__name__}: {e}")
PY
}
# loads DIR SLOT: the slot's device-ready model loads and compiles.
loads() { "$efc_bin" inspect "$1/ota/$2/model.efm" > "$tmp/inspect.out" 2>&1; }

# ---- (1) A on a fresh agent --------------------------------------------------------------------
start_agent "$tmp/s-fresh" "$tmp/agent-fresh.log"
wait_online "$tmp/agent-fresh.log" 15 \
    || { bad "fresh agent did not come online"; tail "$tmp/agent-fresh.log"; finish; }
cls=$(mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -t "$topic/status" -C 1 -W 2 \
    2>/dev/null | sed -n 's/.*"hw_class":"\([^"]*\)".*/\1/p')
[[ -n $cls ]] && ok "agent online, class $cls (its retained status)" \
    || { bad "no hw_class in the agent's status"; finish; }
sign() { # NAME VERSION
    "$efc_bin" sign "$tmp/www/$1.efca" --key "$tmp/keys/efc-sign.key" --model-id "kill-$1" \
        --policy fp32 --class "$cls" --version "$2" -o "$tmp/m-$1.json" > "$tmp/sign-$1.out" 2>&1
}
sign a 1 && sign b 2 && ok "manifests signed (A v1, B v2, class $cls)" \
    || { bad "efc sign"; cat "$tmp"/sign-*.out; finish; }
directive ota-a "$tmp/m-a.json" a.efca > "$tmp/d-a.json"
t0=$(date +%s%N)
deliver "$tmp/d-a.json" ota-a 30
rep=$(report_of ota-a)
if grep -q '"outcome":"installed"' <<< "$rep" \
        && [[ $(json_field "$rep" active_sha256) == "$sha_a" ]]; then
    ok "A installed on the fresh agent in $(ms_since "$t0") ms"
else bad "install of A: '$rep'"; tail -20 "$tmp/agent-fresh.log"; finish; fi
for _ in $(seq 20); do [[ $(status_model) == "$sha_a" ]] && break; sleep 0.1; done
[[ $(status_model) == "$sha_a" ]] && ok "retained status: active_model = A" \
    || bad "retained status does not name A: $(status_model)"
stop_agent
cp -a "$tmp/s-fresh" "$tmp/snap"
st=$(check_state "$tmp/snap")
[[ $st == "a A trial=0 attempts=0 min=1 prev=- -" ]] && ok "snapshot: $st" \
    || { bad "snapshot state: $st"; finish; }

# One fault-free install of B from the snapshot: its duration sets the random range.
rm -rf "$tmp/s"; cp -a "$tmp/snap" "$tmp/s"
start_agent "$tmp/s" "$tmp/agent-plain.log"
wait_online "$tmp/agent-plain.log" 15
directive ota-plain "$tmp/m-b.json" b.efca > "$tmp/d.json"
publish "$tmp/d.json"
t0=$(date +%s%N) # from the publish's return, as the random kills below count their delay
for _ in $(seq 1000); do [[ -n $(report_of ota-plain) ]] && break; sleep 0.01; done
install_ms=$(ms_since "$t0")
rep=$(report_of ota-plain)
stop_agent
if grep -q '"outcome":"installed"' <<< "$rep" \
        && [[ $(check_state "$tmp/s") == "b B trial=0"* ]]; then
    ok "B installed over A without faults in $install_ms ms"
else bad "fault-free install of B: '$rep'"; tail -20 "$tmp/agent-plain.log"; finish; fi

n_leaks=0 leaked=
# B for every kill run (its deadline is 15 min away)
directive @ID@ "$tmp/m-b.json" b.efca > "$tmp/d-b.tmpl"

# ---- one kill run ------------------------------------------------------------------------------
# kill_run LABEL MODE ARG, from a copy of the snapshot (A installed), directive B:
#   fault K     the agent runs with EFC_SLOTS_FAULT=kill:K and kills itself;
#   time MS     kill -9 MS milliseconds after the publish;
#   file GLOB   kill -9 as soon as a file matching GLOB exists in the state dir (busy-polled
#               by bash itself, no fork): the agent (or its evaluation child) is inside that
#               atomic write.
# Sets run_killed (1: the agent died of SIGKILL); run_result: killed (and every check passed) |
# completed (no kill happened: the fault never fired or the file was never seen; the install
# was checked) | fail; run_after: the state right after the kill (check_state); run_tmp: temp
# files the kill left; run_seen: the file that triggered the kill; run_boot: 1 if the agent
# died before it came online.
kill_run() {
    local label=$1 mode=$2 arg=$3 id="ota-$1" log="$tmp/agent-$1.log" rc st st2 rep why= f end
    run_result=fail run_after= run_tmp=0 run_seen= run_killed=0
    rm -rf "$tmp/s"
    cp -a "$tmp/snap" "$tmp/s"
    sed "s/@ID@/$id/" "$tmp/d-b.tmpl" > "$tmp/d.json"
    start_agent "$tmp/s" "$log" "$([[ $mode == fault ]] && echo "kill:$arg")"
    wait_online "$log" 10
    case $mode in
    fault)
        deliver "$tmp/d.json" "$id" 20
        reap_agent 1 ;;
    time)
        publish "$tmp/d.json"
        sleep "$(printf '%d.%03d' $((arg / 1000)) $((arg % 1000)))"
        kill -9 "$agent_pid" 2>/dev/null
        reap_agent 3 ;;
    file)
        publish "$tmp/d.json"
        end=$(( ${EPOCHREALTIME/./} + 10000000 ))
        while [[ -z $run_seen ]] && (( ${EPOCHREALTIME/./} < end )); do
            for f in "$tmp"/s/$arg; do
                [[ -e $f ]] && { kill -9 "$agent_pid"; run_seen=${f##*/}; }
            done
            [[ -n $(report_of "$id") ]] && break
        done 2>/dev/null
        [[ -n $run_seen ]] && reap_agent 3 || reap_agent 0 ;;
    esac
    rc=$agent_rc
    run_boot=0
    grep -q "status online=1" "$log" || run_boot=1
    if [[ $rc == alive && $mode != time && -n $(report_of "$id") ]]; then
        # no kill happened: the agent did the whole install; check it and stop
        stop_agent
        rep=$(report_of "$id")
        st=$(check_state "$tmp/s")
        if grep -q '"outcome":"installed"' <<< "$rep" \
                && [[ $st == "b B trial=0 attempts=0 min=2 prev=a A" ]]; then
            run_result=completed
        else
            bad "$label: completed without a kill but: report '$rep', state '$st'"
        fi
        return
    fi
    if [[ $rc != 137 ]]; then
        bad "$label: the agent was not killed (exit '$rc')"; tail -5 "$log"
        stop_agent
        return
    fi
    run_killed=1
    # What the dead agent left, before anything recovers it.
    st=$(check_state "$tmp/s")
    run_after=$st
    run_tmp=$(find "$tmp/s" -name '*.tmp.*' | wc -l) # the next open must remove them
    if [[ $st == BAD* ]]; then why="after the kill: $st"
    elif ! loads "$tmp/s" "${st%% *}"; then
        why="after the kill: slot ${st%% *} model.efm does not load: $(tail -1 "$tmp/inspect.out")"
    fi
    # Restart without the fault; resend the same directive until it is answered.
    start_agent "$tmp/s" "$log.2"
    wait_online "$log.2" 10
    deliver "$tmp/d.json" "$id" 20
    rep=$(report_of "$id")
    st2=$(check_state "$tmp/s")
    if [[ -z $why ]]; then
        if [[ -z $rep ]]; then
            why="no report after the restart"
        elif ! grep -q '"outcome":"installed"' <<< "$rep"; then
            why="report: $rep"
        elif [[ $(json_field "$rep" active_sha256) != "$sha_b" ]]; then
            why="report names another model: $rep"
        elif [[ $st2 != "b B trial=0 attempts=0 min=2 prev=a A" ]]; then
            why="state after the restart: $st2"
        elif ! loads "$tmp/s" b; then
            why="slot b model.efm does not load: $(tail -1 "$tmp/inspect.out")"
        fi
    fi
    if [[ -z $why ]]; then
        local sm=
        for _ in $(seq 20); do sm=$(status_model); [[ $sm == "$sha_b" ]] && break; sleep 0.1; done
        [[ $sm == "$sha_b" ]] || why="retained status active_model '${sm:0:16}' is not B"
    fi
    stop_agent
    local sl left
    if [[ -z $why ]]; then
        for sl in a b; do # every slot is named by the state (A previous, B active): none empty
            [[ -f $tmp/s/ota/$sl/model.efm ]] || why="slot $sl empty"
        done
    fi
    if [[ -n $why ]]; then
        bad "$label: $why"
        echo "     killed run log (tail):"; tail -8 "$log" | sed 's/^/       /'
        echo "     restart log (tail):"; tail -8 "$log.2" 2>/dev/null | sed 's/^/       /'
        cp -a "$tmp/s" "$tmp/fail-$label"
        return
    fi
    # Everything else is right; a temp file of the killed run must not outlive the restart.
    left=$(cd "$tmp/s" && find . -name '*.tmp.*' -printf '%P (%s bytes) ')
    if [[ -n $left ]]; then
        bad "$label: B installed and the slots are good, but the kill left a temp file that" \
            "the restart and the install did not remove: $left"
        n_leaks=$((n_leaks + 1))
        leaked+="$(cd "$tmp/s" && find . -name '*.tmp.*' -printf '%P\n' \
            | sed 's/\.tmp\..*//; s/[0-9a-f]\{64\}/<sha>/')"
        leaked+=$'\n'
        cp -a "$tmp/s" "$tmp/fail-$label"
        return
    fi
    run_result=killed
}

# tally: the state right after each kill, by phase (old active / new on trial / new committed)
declare -A after_n=()
tally() { # PHASE
    local key=old
    [[ $run_after == "b B trial=1"* ]] && key=trial
    [[ $run_after == "b B trial=0"* ]] && key=new
    after_n[$1-$key]=$(( ${after_n[$1-$key]:-0} + 1 ))
    ((run_tmp)) && after_n[$1-tmp]=$(( ${after_n[$1-tmp]:-0} + 1 ))
    after_n[$1-kills]=$(( ${after_n[$1-kills]:-0} + 1 ))
    [[ $run_result == killed ]] && after_n[$1-pass]=$(( ${after_n[$1-pass]:-0} + 1 ))
}
phase_line() { # PHASE
    echo "old active ${after_n[$1-old]:-0}, new on trial ${after_n[$1-trial]:-0}," \
        "new committed ${after_n[$1-new]:-0}; ${after_n[$1-tmp]:-0} left temp files"
}

# ---- (2) kill at every slot I/O step -----------------------------------------------------------
t0=$(date +%s%N)
n_ops=
n_boot=0
declare -A outcome_k=()
for ((k = 1; k <= k_max; k++)); do
    ((fail - n_leaks >= 10)) && { bad "stopping the kill loop after 10 failures"; break; }
    kill_run "k$k" fault "$k"
    if ((run_killed)); then
        tally k
        n_boot=$((n_boot + run_boot))
        outcome_k[${run_after#* }]=$(( ${outcome_k[${run_after#* }]:-0} + 1 ))
        [[ $run_result == killed ]] && ok "kill:$k$( ((run_boot)) && echo ' (start-up)') ->" \
            "after the kill: ${run_after% trial=*} (${run_after#* * }); B installed after restart"
    elif [[ $run_result == completed ]]; then
        n_ops=$((k - 1))
        ok "kill:$k never fired: one agent run = $n_ops slot operations, B installed"
        break
    fi
done
step_s=$(( $(ms_since "$t0") / 1000 ))
[[ -n $n_ops ]] || bad "the install did not complete within $k_max slot operations"
# The kill points must span the install, or the fault hook did not bite where it should.
((${after_n[k-old]:-0} > n_boot && ${after_n[k-trial]:-0} > 0 && ${after_n[k-new]:-0} > 0)) \
    && ok "the kill points span the install: $(phase_line k) ($n_boot in the start-up open)" \
    || bad "the kill points do not span the install: $(phase_line k)"

# ---- (2b) kill inside the agent's own atomic writes --------------------------------------------
# Outside ota/ the agent writes, with temp file + rename: the saved directive (agent), the golden
# output and the prepared model (its PREPARE child). A window is a few milliseconds (the golden
# output is 40 bytes + fsync): up to 5 tries each to catch it.
w=0
for g in 'ota-directive.json.tmp.*' 'ota-golden.bin.tmp.*' 'ota-prepared.efm.tmp.*'; do
    w=$((w + 1))
    for try in 1 2 3 4 5; do
        kill_run "w$w-$try" file "$g"
        ((run_killed)) && tally w
        [[ $run_result == killed ]] && ok "kill inside the write of $run_seen -> after the kill:" \
            "$run_after; B installed after the restart"
        [[ $run_result == completed ]] || break
    done
    [[ $run_result == completed ]] \
        && echo "note: never caught ${g%%.tmp*} being written in 5 tries (the install went through)"
done

# ---- (3) kill -9 at random times ---------------------------------------------------------------
# Uniform over one measured install (publish returned -> report) and 20 % after it.
range=$(( install_ms * 12 / 10 + 10 ))
t0=$(date +%s%N)
for ((r = 1; r <= n_random; r++)); do
    ((fail - n_leaks >= 10)) && { bad "stopping the random kills after 10 failures"; break; }
    delay=$(( (RANDOM * 32768 + RANDOM) % range ))
    kill_run "r$r" time "$delay"
    ((run_killed)) && tally r
    [[ $run_result == killed ]] && ok "random kill $r at $delay ms -> after the kill: $run_after;" \
        "B installed after the restart"
done
rand_s=$(( $(ms_since "$t0") / 1000 ))

echo "--- figures (isa avx2, class $cls)"
echo "  one fault-free install of B (publish returned -> report): $install_ms ms"
echo "  slot operations of one agent run: N = ${n_ops:-?} ($n_boot in the start-up open," \
    "the rest in the install)"
echo "  kill at each step: ${after_n[k-kills]:-0} kills, ${after_n[k-pass]:-0} passed," \
    "+ 1 clean run; $step_s s"
echo "    right after the kill: $(phase_line k)"
for key in "${!outcome_k[@]}"; do echo "      ${outcome_k[$key]} x active $key"; done | sort -k4
echo "  kills inside the agent's own atomic writes: ${after_n[w-kills]:-0} of 3," \
    "${after_n[w-pass]:-0} passed"
echo "  random kills (uniform 0..$range ms after the publish returned):" \
    "${after_n[r-kills]:-0} of $n_random runs killed, ${after_n[r-pass]:-0} passed; $rand_s s"
echo "    right after the kill: $(phase_line r)"
leaks=$(grep . <<< "$leaked" | sort | uniq -c | awk '{printf "%s%s x %s", s, $1, $2; s=", "}')
echo "  runs whose temp file outlived the restart and the install: $n_leaks${leaks:+ ($leaks)}"
echo "  kills in total:" \
    "$(( ${after_n[k-kills]:-0} + ${after_n[w-kills]:-0} + ${after_n[r-kills]:-0} ))"
finish
