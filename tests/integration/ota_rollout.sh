#!/usr/bin/env bash
# OTA rollouts end to end, against a real mosquitto, three real efc-agents of one class and
# efc-coordinator (docs/ota.md):
#  (1) a round chooses a policy for the class; `rollout` signs it and takes it to the class in
#      waves 1 (canary), 50 %, 100 %: every device installs it (health-checked on its own data)
#      and `status` shows each device running it; the same command again changes nothing;
#  (2) a second, healthy rollout (another policy) replaces it everywhere, although the
#      coordinator is SIGKILLed after the canary's report: rerun, it continues at wave 2;
#  (3) `rollback --class`: every device returns to the policy of rollout (1);
#  (4) rollouts whose device-side health gate cannot pass (min accuracy 0.999, max p99
#      0.00001 ms, max RSS 1 byte): each time the canary rolls itself back with the reason
#      (ACCURACY, LATENCY, MEMORY), the rollout halts in wave 1, no device of wave 2 receives a
#      directive, every device still runs rollout (1)'s policy;
#  (5) forged directives (mosquitto_pub as the coordinator would send them): bad signature,
#      manifest edited after signing, unknown key, wrong class, older version, expired, and a
#      valid manifest whose artifact URL serves a truncated, a byte-flipped or a longer file:
#      each refused with its own reason, the active model unchanged and still loading; and the
#      signing key revoked on dev-c (--revoked-keys): a valid manifest is refused;
#  (6) a new model whose health check crashes (SIGSEGV), hangs past the deadline or runs out
#      of memory: rolled back with the reason, the previous model still active;
#  (7) a failing wave whose installed device dies before rolling back: the revert times out
#      as a failure and the rollout run ends.
# Usage: ota_rollout.sh BUILD_DIR. Prints "N passed, M failed". SKIP (exit 0) without
# mosquitto or the Fashion-MNIST files. Bounded: every wait has a deadline.
set -uo pipefail
build=$(cd "${1:?usage: ota_rollout.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/broker.sh"
agent_bin=$build/agent/efc-agent
coord_bin=$build/coordinator/efc-coordinator
efc_bin=$build/cli/efc
fm=${EFC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
py=/usr/bin/python3

command -v mosquitto >/dev/null && command -v mosquitto_pub >/dev/null \
    || { echo "SKIP: mosquitto / mosquitto_pub not installed"; exit 0; }
[[ -f $fm/t10k-images-idx3-ubyte.gz ]] || { echo "SKIP: Fashion-MNIST not found in $fm"; exit 0; }
for b in "$agent_bin" "$coord_bin" "$efc_bin"; do
    [[ -x $b ]] || { echo "FAIL: $b not built"; echo "0 passed, 1 failed"; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
    stop_all
    [[ -n ${KEEP_TMP:-} ]] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
. "$here/lib/check.sh"

broker_start "$tmp/b" && ok "broker on 127.0.0.1:$BROKER_PORT" || { bad "broker start"; finish; }
url=mqtt://127.0.0.1:$BROKER_PORT
export EFC_AGENT_TIMING_LOCK=$tmp/timing.lock

"$efc_bin" keygen -o "$tmp/keys" > "$tmp/keygen.out" 2>&1 && ok "signing key made" \
    || { bad "efc keygen"; cat "$tmp/keygen.out"; finish; }
"$efc_bin" keygen -o "$tmp/other" > /dev/null 2>&1 # an untrusted key, for (5)
model=$tmp/base.efm
"$efc_bin" train --arch mlp --data fashion-mnist --epochs 1 --limit 3000 -q -o "$model" \
    > "$tmp/train.log" 2>&1 && ok "trained a base model" || { bad "efc train"; finish; }

# Three agents of one class (all capped at avx2 so the class is the same on any x86 host).
devs=(dev-a dev-b dev-c)
for i in 0 1 2; do
    "$agent_bin" --id "${devs[$i]}" --broker "$url" --data "fashion-mnist:shard=$((i + 1))/6" \
        --state-dir "$tmp/s-${devs[$i]}" --isa avx2 --trust-keys "$tmp/keys/efc-sign.pub" \
        > "$tmp/agent-${devs[$i]}.log" 2>&1 &
    pids+=($!)
done

coord() { "$coord_bin" --broker "$url" --db "$tmp/efc.db" "$@"; }
# runs FILE POLICY: devices whose line in `status` output names POLICY
runs() { grep -E "^  [^ ]+ +dev-[abc] " "$1" | grep -cF " $2 "; }
gate=(--calib 128 --eval 300 --health-runs 100 --report-timeout 60 --timeout 120)
timeout 100 "$coord_bin" --broker "$url" --db "$tmp/efc.db" round --base "$model" \
    --grid "fp32;int8(calib=percentile,weights=channel)" --sla-drop 0.05 --per-class 1 \
    --calib 128 --eval 300 --runs 5 --min-devices 3 --timeout 80 > "$tmp/round.out" \
    2> "$tmp/round.log" && ok "round: exit 0" || { bad "round"; cat "$tmp/round.out"; finish; }
rid=$(sed -n 's/^round \([^ :]*\): jobs=.*/\1/p' "$tmp/round.out" | head -1)
cls=$(sed -n 's/.*device=[^ ]* class=\([^ ]*\) .*online.*/\1/p' "$tmp/round.log" | sort -u | head -1)
[[ -n $rid && -n $cls ]] && ok "round $rid, class $cls" || { bad "no round id / class"; finish; }

# (1) the round's choice, in waves
if timeout 150 "$coord_bin" --broker "$url" --db "$tmp/efc.db" rollout --round-id "$rid" \
        --sign-key "$tmp/keys/efc-sign.key" --waves 1,50%,100% "${gate[@]}" \
        > "$tmp/ro1.out" 2> "$tmp/ro1.log"; then
    ok "rollout 1: exit 0"
else bad "rollout 1 failed"; cat "$tmp/ro1.out"; tail -20 "$tmp/ro1.log"; fi
sed 's/^/     /' "$tmp/ro1.out"
grep -q "wave 1/3 passed: 1 installed" "$tmp/ro1.out" && grep -q "wave 3/3 passed" "$tmp/ro1.out" \
    && ok "rollout 1: canary, then 50 %, then 100 %" || bad "rollout 1 waves"
grep -q "outcome ro[0-9]* class $cls: done; devices: 3 installed" "$tmp/ro1.out" \
    && ok "rollout 1: 3 devices installed" || bad "rollout 1 outcome"
pol1=$(sed -n 's/^rollout ro[0-9]*: class [^ ]* -> \([^ ]*\) .*/\1/p' "$tmp/ro1.out" | head -1)
coord status > "$tmp/st1.out" 2>&1
n=$(runs "$tmp/st1.out" "$pol1")
[[ $n -eq 3 ]] && ok "status: 3 devices run $pol1" || { bad "status after rollout 1: $n"; cat "$tmp/st1.out"; }
timeout 60 "$coord_bin" --broker "$url" --db "$tmp/efc.db" rollout --round-id "$rid" \
    --sign-key "$tmp/keys/efc-sign.key" "${gate[@]}" > "$tmp/ro1b.out" 2>&1
grep -q "already done" "$tmp/ro1b.out" && ok "rollout 1 again: already done, nothing sent" \
    || { bad "rollout 1 again"; cat "$tmp/ro1b.out"; }

# (2) another policy of the round, healthy
pol2=fp32
[[ $pol1 == fp32 ]] && pol2="int8(calib=percentile,weights=channel)"
# ... with the coordinator SIGKILLed as soon as the canary reported: the same command
# continues the stored rollout at wave 2
ro2=(--broker "$url" --db "$tmp/efc.db" rollout --round-id "$rid" --class "$cls" --policy "$pol2"
     --sign-key "$tmp/keys/efc-sign.key" --waves 1,100% "${gate[@]}")
"$coord_bin" "${ro2[@]}" > "$tmp/ro2a.out" 2> "$tmp/ro2a.log" &
cpid=$!
pids+=($cpid)
for _ in $(seq 300); do grep -q "device=dev-a: installed" "$tmp/ro2a.log" && break; sleep 0.02; done
kill -9 "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
grep -q "device=dev-a: installed" "$tmp/ro2a.log" && ! grep -q "outcome" "$tmp/ro2a.out" \
    && ok "rollout 2: coordinator SIGKILLed after the canary's report" \
    || bad "rollout 2: the coordinator was not killed mid-rollout"
timeout 150 "$coord_bin" "${ro2[@]}" > "$tmp/ro2.out" 2> "$tmp/ro2.log" \
    && grep -q "continues at wave" "$tmp/ro2.out" \
    && grep -q "outcome ro[0-9]* class $cls: done; devices: 3 installed" "$tmp/ro2.out" \
    && ok "rollout 2 ($pol2): the restarted coordinator continued it to the end" \
    || { bad "rollout 2 resume"; cat "$tmp/ro2.out"; }
coord status > "$tmp/st2.out" 2>&1
n=$(runs "$tmp/st2.out" "$pol2")
[[ $n -eq 3 ]] && ok "status: 3 devices run $pol2" || { bad "status after rollout 2"; cat "$tmp/st2.out"; }

# (3) per-class rollback: back to rollout 1's policy
timeout 100 "$coord_bin" --broker "$url" --db "$tmp/efc.db" rollback --class "$cls" \
    --sign-key "$tmp/keys/efc-sign.key" --waves 100% --report-timeout 60 --timeout 90 \
    > "$tmp/rb.out" 2> "$tmp/rb.log" \
    && grep -q "outcome ro[0-9]* class $cls: done; devices: 3 installed" "$tmp/rb.out" \
    && ok "rollback: 3 devices back on $pol1 (a new signed version)" \
    || { bad "rollback"; cat "$tmp/rb.out"; }
coord status > "$tmp/st3b.out" 2>&1
n=$(runs "$tmp/st3b.out" "$pol1")
[[ $n -eq 3 ]] && ok "status: 3 devices run $pol1 again" || { bad "status after rollback"; cat "$tmp/st3b.out"; }

# (4) rollouts whose device-side health gate fails on the canary (policy 2 again, each a new
# version): accuracy floor, p99 ceiling, peak RSS ceiling
bad_gates=("ACCURACY --min-accuracy 0.999" "LATENCY --max-p99-ms 0.00001" "MEMORY --max-rss 1")
for g in "${bad_gates[@]}"; do
    read -r why opt val <<< "$g"
    timeout 150 "$coord_bin" --broker "$url" --db "$tmp/efc.db" rollout --round-id "$rid" \
        --class "$cls" --policy "$pol2" --sign-key "$tmp/keys/efc-sign.key" --waves 1,100% \
        "$opt" "$val" "${gate[@]}" > "$tmp/ro-$why.out" 2> "$tmp/ro-$why.log"
    rc=$?
    rx=$(sed -n 's/^rollout \(ro[0-9]*\): class.*/\1/p' "$tmp/ro-$why.out" | head -1)
    n=$(grep -l "ota=ota-${rx#ro}-" "$tmp"/agent-*.log 2>/dev/null | wc -l)
    if [[ $rc -eq 1 ]] && grep -q "HALTED at wave 1/2" "$tmp/ro-$why.out" \
            && grep -q "rolled_back: $why" "$tmp/ro-$why.out" && [[ $n -eq 1 ]]; then
        ok "rollout with $opt $val: the canary rolled back ($why), halted at wave 1, exit 1, no other device touched"
    else bad "rollout with $opt $val: rc=$rc, $n device(s) got it"; cat "$tmp/ro-$why.out"; fi
done
coord status > "$tmp/st3.out" 2>&1
n=$(runs "$tmp/st3.out" "$pol1")
[[ $n -eq 3 ]] && ok "status: all 3 devices still run $pol1" || { bad "status after 4"; cat "$tmp/st3.out"; }

# (5) forged directives on dev-a's topic, each refused with its own reason, nothing changed.
# The artifact of rollout 1 and the class are real: only the manifest is wrong.
art=$(ls "$tmp"/efc.db.candidates/a-*.efca | head -1)
for f in "$tmp"/efc.db.candidates/a-*.efca; do # the artifact dev-a runs now
    [[ $(sha256sum "$f" | cut -c1-16) == $(sed -n 's/.* \([0-9a-f]\{16\}\) (ro[0-9]*)$/\1/p' "$tmp/st3.out" | head -1) ]] && art=$f
done
sign() { # NAME KEY CLASS VERSION EXPIRES_IN
    "$efc_bin" sign "$art" --key "$2" --model-id forged --policy "$pol1" --class "$3" \
        --version "$4" --expires-in "$5" -o "$tmp/m-$1.json" > /dev/null 2>&1
}
sign good "$tmp/keys/efc-sign.key" "$cls" 100 3600
sign unknown "$tmp/other/efc-sign.key" "$cls" 100 3600
sign class "$tmp/keys/efc-sign.key" "riscv64-rvv" 100 3600
sign older "$tmp/keys/efc-sign.key" "$cls" 1 3600
sign expired "$tmp/keys/efc-sign.key" "$cls" 100 1
$py - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
good = open(f"{d}/m-good.json").read().strip()
m = json.loads(good)
sig = m["signature"]
m["signature"] = sig[:20] + ("0" if sig[20] != "0" else "1") + sig[21:]
open(f"{d}/m-badsig.json", "w").write(json.dumps(m, separators=(",", ":")))
m = json.loads(good)
m["version"] = str(int(m["version"]) + 1)
open(f"{d}/m-edited.json", "w").write(json.dumps(m, separators=(",", ":")))
PY
directive() { # MANIFEST OTA_ID URL DEVICE: the JSON the coordinator would send
    $py - "$@" <<'PY'
import json, os, sys, time
man = open(sys.argv[1]).read().strip()
print(json.dumps({"version": 1, "type": "ota", "ota_id": sys.argv[2], "rollout_id": "forged",
    "device_id": sys.argv[4], "action": "install", "manifest": man, "url": sys.argv[3],
    "calib_samples": 64, "eval_samples": 100, "health_runs": 10, "min_accuracy": 0,
    "min_agree": 0, "max_p99_ms": 0, "max_rss_bytes": 0, "seed": 1,
    "deadline_ms": int(time.time() * 1000) + 1000 * int(os.environ.get("DEADLINE_S", "60")),
    "mem_limit_bytes": int(os.environ.get("MEM_LIMIT", "0"))}))
PY
}
status_of() { mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -t "efc/v1/dev/$1/status" \
    -C 1 -W 3 2>/dev/null | grep -o '"active_model":"[0-9a-f]*","active_version":[0-9]*'; }
before=$(status_of dev-a)
# A new artifact (the base packed at another zstd level: new bytes, the agent has never seen
# it), signed, then served over HTTP on loopback as tampered copies.
fresh=$tmp/fresh.efca
"$efc_bin" pack "$model" -o "$fresh" --level 3 > /dev/null 2>&1
"$efc_bin" sign "$fresh" --key "$tmp/keys/efc-sign.key" --model-id fresh --policy fp32 \
    --class "$cls" --version 100 --expires-in 3600 -o "$tmp/m-fresh.json" > /dev/null 2>&1
mkdir -p "$tmp/www"
size=$(stat -c %s "$fresh")
head -c $((size / 2)) "$fresh" > "$tmp/www/truncated"
{ cat "$fresh"; head -c 16 /dev/zero; } > "$tmp/www/trailing"
cp "$fresh" "$tmp/www/flipped"
cp "$fresh" "$tmp/www/good"
printf '\xff' | dd of="$tmp/www/flipped" bs=1 seek=$((size / 3)) conv=notrunc status=none
(cd "$tmp/www" && exec $py -m http.server --bind 127.0.0.1 0 > "$tmp/http.log" 2>&1) &
pids+=($!)
for _ in $(seq 50); do grep -q "port" "$tmp/http.log" && break; sleep 0.1; done
hport=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$tmp/http.log" | head -1)
sleep 1.1 # the 1 s manifest expires
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -t "efc/v1/dev/dev-a/ota/report" \
    > "$tmp/reports.txt" 2>/dev/null &
subpid=$!
pids+=($subpid)
sleep 0.3
i=0
cases=(badsig edited unknown class older expired truncated flipped trailing)
for case in "${cases[@]}"; do
    i=$((i + 1))
    mf=$tmp/m-$case.json u=""
    [[ -f $mf ]] || { mf=$tmp/m-fresh.json; u="http://127.0.0.1:$hport/$case"; }
    directive "$mf" "ota-forged-$i" "$u" dev-a > "$tmp/d-$case.json"
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -t "efc/v1/dev/dev-a/ota" \
        -f "$tmp/d-$case.json"
done
for _ in $(seq 150); do [[ $(grep -c '"ota_id"' "$tmp/reports.txt") -ge ${#cases[@]} ]] && break; sleep 0.1; done
kill "$subpid" 2>/dev/null
want=(BAD_SIGNATURE BAD_SIGNATURE UNKNOWN_KEY WRONG_CLASS ROLLBACK EXPIRED ARTIFACT_SIZE ARTIFACT_HASH
      ARTIFACT_SIZE)
i=0
for case in "${cases[@]}"; do
    line=$(grep "\"ota-forged-$((i + 1))\"" "$tmp/reports.txt" | head -1)
    if grep -q '"outcome":"refused"' <<< "$line" && grep -q "\"reason\":\"${want[$i]}" <<< "$line"; then
        ok "forged directive ($case): refused, ${want[$i]}"
    else bad "forged directive ($case): want ${want[$i]}: $line"; fi
    i=$((i + 1))
done
coord status > "$tmp/st5.out" 2>&1
n=$(runs "$tmp/st5.out" "$pol1")
slot_model=$(ls "$tmp"/s-dev-a/ota/*/model.efm 2>/dev/null | head -1)
after=$(status_of dev-a)
if [[ -n $before && $before == "$after" && -n $slot_model ]] \
        && "$efc_bin" eval "$slot_model" --data fashion-mnist:shard=1/20 > "$tmp/eval.out" 2>&1; then
    ok "dev-a still runs ${after#*active_version\":} (same model); its slot model loads and evaluates ($(grep -o '[0-9.]* %' "$tmp/eval.out" | head -1))"
else bad "dev-a after the forged directives: before '$before' after '$after'"; cat "$tmp/eval.out" 2>/dev/null | tail -3; fi

# The same key revoked on dev-c (restarted with --revoked-keys): a valid manifest is refused.
kid=$(sed -n 's/.*key id \([0-9a-f]*\).*/\1/p' "$tmp/keygen.out" | head -1)
kill "${pids[2]}" 2>/dev/null; wait "${pids[2]}" 2>/dev/null
"$agent_bin" --id dev-c --broker "$url" --data "fashion-mnist:shard=3/6" --state-dir "$tmp/s-dev-c" \
    --isa avx2 --trust-keys "$tmp/keys/efc-sign.pub" --revoked-keys "$kid" \
    >> "$tmp/agent-dev-c.log" 2>&1 &
pids[2]=$!
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -t "efc/v1/dev/dev-c/ota/report" -C 1 \
    -W 20 > "$tmp/report-c.txt" 2>/dev/null &
subpid=$!
sleep 1
directive "$tmp/m-good.json" ota-revoked-1 "" dev-c > "$tmp/d-revoked.json"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -t "efc/v1/dev/dev-c/ota" -f "$tmp/d-revoked.json"
wait "$subpid" 2>/dev/null
if [[ -n $kid ]] && grep -q '"outcome":"refused"' "$tmp/report-c.txt" \
        && grep -q '"reason":"REVOKED_KEY' "$tmp/report-c.txt"; then
    ok "revoked key ($kid) on dev-c: refused, REVOKED_KEY"
else bad "revoked key: $(cat "$tmp/report-c.txt")"; fi

"$coord_bin" --db "$tmp/efc.db" report --round-id "$rid" --report "$tmp/report.html" \
    > /dev/null 2>&1
n=$(grep -c "<h3>ro[0-9]" "$tmp/report.html" 2>/dev/null)
grep -q "Rollouts (OTA)" "$tmp/report.html" 2>/dev/null && [[ $n -ge 4 ]] \
    && ok "HTML report: rollout state per class ($n rollouts)" || bad "HTML report without rollouts"

# (6) a new model that crashes, hangs or eats memory in its health check (EFC_AGENT_OTA_FAULT
# makes only the health child misbehave): rolled back with the reason, the old one active.
for fault in segv hang oom; do
    kill "${pids[1]}" 2>/dev/null; wait "${pids[1]}" 2>/dev/null
    EFC_AGENT_OTA_FAULT=$fault "$agent_bin" --id dev-b --broker "$url" \
        --data "fashion-mnist:shard=2/6" --state-dir "$tmp/s-dev-b" --isa avx2 \
        --trust-keys "$tmp/keys/efc-sign.pub" >> "$tmp/agent-dev-b.log" 2>&1 &
    pids[1]=$!
    sleep 1
    before=$(status_of dev-b)
    mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -t "efc/v1/dev/dev-b/ota/report" \
        -C 1 -W 30 > "$tmp/report-$fault.txt" 2>/dev/null &
    subpid=$!
    sleep 0.3
    DEADLINE_S=8 MEM_LIMIT=$((768 << 20)) directive "$tmp/m-fresh.json" "ota-fault-$fault" \
        "http://127.0.0.1:$hport/good" dev-b > "$tmp/d-fault.json"
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -t "efc/v1/dev/dev-b/ota" \
        -f "$tmp/d-fault.json"
    wait "$subpid" 2>/dev/null
    sleep 0.5
    after=$(status_of dev-b)
    why=$(grep -o '"reason":"[^"]*"' "$tmp/report-$fault.txt")
    if grep -q '"outcome":"rolled_back"' "$tmp/report-$fault.txt" \
            && grep -q '"reason":"HEALTH: ' "$tmp/report-$fault.txt" && [[ $before == "$after" ]]; then
        ok "health check $fault: rolled back ($why), the old model still active"
    else bad "health check $fault: $(cat "$tmp/report-$fault.txt") before '$before' after '$after'"; fi
done

# (7) a wave that fails while one of its devices that did install dies before it can roll
# back: the revert times out as a failure and the run still ends (not at --timeout).
kill "${pids[1]}" 2>/dev/null; wait "${pids[1]}" 2>/dev/null
EFC_AGENT_OTA_FAULT=hang "$agent_bin" --id dev-b --broker "$url" --data "fashion-mnist:shard=2/6" \
    --state-dir "$tmp/s-dev-b" --isa avx2 --trust-keys "$tmp/keys/efc-sign.pub" \
    >> "$tmp/agent-dev-b.log" 2>&1 &
pids[1]=$!
sleep 1
t0=$SECONDS
"$coord_bin" --broker "$url" --db "$tmp/efc.db" rollout --round-id "$rid" --class "$cls" \
    --policy "$pol2" --sign-key "$tmp/keys/efc-sign.key" --waves 100% --calib 128 --eval 300 \
    --health-runs 100 --report-timeout 6 --timeout 120 > "$tmp/ro7.out" 2> "$tmp/ro7.log" &
cpid=$!
pids+=($cpid)
for _ in $(seq 300); do grep -q "device=dev-a: installed" "$tmp/ro7.log" && break; sleep 0.05; done
kill -9 "${pids[0]}" 2>/dev/null; wait "${pids[0]}" 2>/dev/null
wait "$cpid"
rc=$?
dt=$((SECONDS - t0))
if [[ $rc -eq 1 ]] && grep -q "HALTED" "$tmp/ro7.out" && [[ $dt -lt 40 ]] \
        && coord status 2>/dev/null | grep -q "dev-a .*failed .*TIMEOUT: no report of the rollback"; then
    ok "halted wave whose installed device died: its revert timed out as failed, run ended in $dt s"
else bad "revert timeout: rc=$rc after $dt s"; cat "$tmp/ro7.out"; coord status | tail -8; fi

echo "--- status at the end"
sed 's/^/     /' "$tmp/st3.out"
finish
