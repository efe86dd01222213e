#!/usr/bin/env bash
# Transport security against a real mosquitto with mutual TLS (docs/security.md,
# RELIABILITY.md G1, G2, G4, G5, G6):
#  (0) deploy/pki.sh makes the PKI (keys 0600, rerun is a no-op); the broker runs
#      deploy/mosquitto/tls.conf + deploy/mosquitto/acl. A watcher with the coordinator's
#      certificate subscribes to efc/v1/# and sees everything the coordinator could see.
#  (1) G1/G5 refused: no client certificate, a certificate from a foreign CA, a self-signed one,
#      an expired one and a revoked one (in the CRL) from the right CA, plain TCP without TLS
#      (anonymous); and a client that does not trust the broker (foreign CA as its CA file)
#      refuses the broker. None of their messages reaches the watcher; a valid device's message
#      does (control).
#  (2) G2 per-device ACL: device dev-a publishes 50 messages at each of QoS 0, 1, 2 to dev-b's
#      result topic and single ones to dev-b's status and chunk/req, to a job topic, to an
#      artifact topic and outside the device tree: the watcher gets none (the control after them
#      arrives), and every QoS 1 / QoS 2 publish is answered with 0x87 (Not authorized). dev-a
#      subscribes to dev-b's job topic, to dev/+/job, to efc/v1/# and to dev-b's artifacts: of
#      the coordinator's messages it gets only its own job.
#  (3) efc-agent with a CA that does not match the broker: each attempt logged with the TLS
#      reason and retried with backoff; the process keeps running.
#  (4) end to end over mutual TLS (mqtts://): two real efc-agents and efc-coordinator run a
#      small round; both log "over TLS". While it runs, dev-a's certificate is used to forge a
#      result on dev-b's topic (refused 0x87, never seen by the watcher, never logged or stored
#      by the coordinator), and on dev-a's own topic with a body claiming dev-b (G4: delivered,
#      and dropped by the coordinator). The round completes with one result per job.
#  (5) revocation: pki.sh --revoke dev-b (twice: idempotent); the broker, restarted with the
#      new CRL, refuses dev-b and still accepts dev-a.
#  (6) G6: no private key material in any log or output; key files mode 0600.
# Usage: tls_acl.sh BUILD_DIR. Prints "N passed, M failed". SKIP (exit 0) without mosquitto,
# its clients, openssl or the Fashion-MNIST files. Bounded: every wait has a deadline (~30 s).
set -uo pipefail
build=$(cd "${1:?usage: tls_acl.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib/broker.sh"
agent_bin=$build/agent/efc-agent
coord_bin=$build/coordinator/efc-coordinator
efc_bin=$build/cli/efc
fm=${EFC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

for t in mosquitto mosquitto_pub mosquitto_sub openssl; do
    command -v $t > /dev/null || { echo "SKIP: $t not installed"; exit 0; }
done
[[ -f $fm/t10k-images-idx3-ubyte.gz && -f $fm/train-images-idx3-ubyte.gz ]] \
    || { echo "SKIP: Fashion-MNIST not found in $fm"; exit 0; }
for b in "$agent_bin" "$coord_bin" "$efc_bin"; do
    [[ -x $b ]] || { echo "FAIL: $b not built"; echo "0 passed, 1 failed"; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
    stop_all
    if [[ -n "${EFC_VERBOSE:-}" ]]; then tail -n +1 "$tmp"/*.log "$tmp"/b/mosquitto.log 2>/dev/null; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
. "$here/lib/check.sh"
# wait_for FILE REGEX SECONDS: until a line of FILE matches (extended regex).
wait_for() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -aqE -- "$2" "$1" 2>/dev/null && return 0 # -a: artifact chunks are binary
        sleep 0.1
    done
    return 1
}
pfx=efc/v1

# (0) the PKI and the broker
pki=$tmp/pki
if "$root/deploy/pki.sh" "$pki" dev-a dev-b > "$tmp/pki.out" 2>&1; then
    ok "pki.sh: CA, broker, coordinator, dev-a, dev-b, foreign/, expired/"
else
    bad "pki.sh failed"; cat "$tmp/pki.out" "$pki/pki.log"; finish
fi
sum1=$(cat "$pki"/*.crt "$pki"/*.key | sha256sum)
"$root/deploy/pki.sh" "$pki" dev-a dev-b > /dev/null 2>&1
[[ $(cat "$pki"/*.crt "$pki"/*.key | sha256sum) == "$sum1" ]] \
    && ok "pki.sh is idempotent (rerun changed nothing)" || bad "pki.sh rerun changed files"
if [[ -s $pki/expired/client.crt ]] && ! openssl verify -CAfile "$pki/ca.crt" \
        "$pki/expired/client.crt" > /dev/null 2>&1; then
    ok "expired client certificate made (the CA's own verify rejects it)"
else bad "no expired certificate"; fi

broker_start_tls "$tmp/b" "$pki" "$pfx" && ok "TLS broker on 127.0.0.1:$BROKER_PORT" \
    || { bad "broker start"; cat "$tmp/b/mosquitto.log"; finish; }
H=(-h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5)
# tpub / tsub NAME ARGS...: mosquitto_pub / mosquitto_sub over TLS with the client certificate
# NAME (a file stem under $pki: coordinator, dev-a, dev-b); a publish is bounded at 20 s
tpub() {
    local n=$1
    shift
    timeout 20 mosquitto_pub "${H[@]}" --cafile "$pki/ca.crt" --cert "$pki/$n.crt" --key "$pki/$n.key" "$@"
}
tsub() {
    local n=$1
    shift
    mosquitto_sub "${H[@]}" --cafile "$pki/ca.crt" --cert "$pki/$n.crt" --key "$pki/$n.key" "$@"
}
tsub coordinator -t "$pfx/#" -v -q 1 -W 120 \
    > "$tmp/watch.out" 2> "$tmp/watch.log" &
pids+=($!)
for _ in $(seq 30); do
    tpub coordinator -t "$pfx/probe" -m up 2> /dev/null
    grep -aq "^$pfx/probe up" "$tmp/watch.out" && break
    sleep 0.1
done
grep -aq "^$pfx/probe up" "$tmp/watch.out" && ok "watcher with the coordinator certificate subscribed" \
    || { bad "watcher did not connect"; cat "$tmp/watch.log"; finish; }

# (1) refused clients
refused() { # refused LABEL MARKER mosquitto_pub-args...: must fail to publish
    local label=$1 marker=$2
    shift 2
    if timeout 10 mosquitto_pub "${H[@]}" -q 1 -t "$pfx/dev/dev-a/result" -m "$marker" "$@" \
            > "$tmp/g1.out" 2>&1; then
        bad "G1 $label: publish succeeded"
    else
        ok "G1 $label: refused ($(head -c 60 "$tmp/g1.out" | tr '\n' ' '))"
    fi
}
refused "no client certificate" g1-nocert --cafile "$pki/ca.crt"
refused "certificate from a foreign CA (CN dev-a)" g1-foreign --cafile "$pki/ca.crt" \
    --cert "$pki/foreign/client.crt" --key "$pki/foreign/client.key"
refused "self-signed certificate (CN dev-a)" g1-selfsigned --cafile "$pki/ca.crt" \
    --cert "$pki/foreign/selfsigned.crt" --key "$pki/foreign/selfsigned.key"
refused "expired certificate of the right CA" g1-expired --cafile "$pki/ca.crt" \
    --cert "$pki/expired/client.crt" --key "$pki/expired/client.key"
refused "revoked certificate of the right CA (in ca.crl)" g1-revoked --cafile "$pki/ca.crt" \
    --cert "$pki/revoked/client.crt" --key "$pki/revoked/client.key"
refused "plain TCP, anonymous (G5)" g1-plain
refused "client that does not trust the broker's CA" g1-clientca --cafile "$pki/foreign/ca.crt" \
    --cert "$pki/dev-a.crt" --key "$pki/dev-a.key"
tpub dev-a -q 1 -t "$pfx/dev/dev-a/result" -m g1-control
if wait_for "$tmp/watch.out" "g1-control" 5; then
    n=$(grep -ac "g1-[a-z]*" "$tmp/watch.out")
    [[ $n -eq 1 ]] && ok "G1: the valid device's control message arrived, none of the 7 refused" \
        || bad "G1: $((n - 1)) message(s) of refused clients reached the watcher"
else bad "G1: control message of a valid device did not arrive"; fi

# (2) per-device ACL: dev-a writing and reading dev-b's topics
n_each=50
seq -f "g2-forged-%g" $n_each > "$tmp/lines"
for q in 0 1 2; do
    tpub dev-a -d -q $q -t "$pfx/dev/dev-b/result" -l < "$tmp/lines" \
        > "$tmp/g2-q$q.out" 2> "$tmp/g2-q$q.err"
done
# mosquitto_pub -d prints each PUBACK's reason code (stdout) and, for QoS 1 and 2, a warning
# per refused message (stderr: "Publish N failed: Not authorized", from PUBACK/PUBREC 0x87).
n135=$(grep -c "received PUBACK (Mid: [0-9]*, RC:135)" "$tmp/g2-q1.out")
nwarn=$(grep -c "Publish [0-9]* failed: Not authorized" "$tmp/g2-q1.err")
[[ $n135 -eq $n_each && $nwarn -eq $n_each ]] \
    && ok "G2: $n_each QoS 1 publishes to dev-b/result answered 0x87 (Not authorized)" \
    || bad "G2: $n135 / $nwarn of $n_each QoS 1 publishes answered 0x87"
nwarn=$(grep -c "Publish [0-9]* failed: Not authorized" "$tmp/g2-q2.err")
[[ $nwarn -eq $n_each ]] && ok "G2: $n_each QoS 2 publishes answered PUBREC 0x87 (Not authorized)" \
    || bad "G2: $nwarn of $n_each QoS 2 publishes answered PUBREC 0x87"
for t in "dev/dev-b/status" "dev/dev-b/chunk/req" "dev/dev-b/job" "dev/dev-b/ota" \
         "art/0123abcd/dev-b" "art/0123abcd/dev-a" "control" "dev/dev-b"; do
    tpub dev-a -q 0 -t "$pfx/$t" -m "g2-forged-single" 2> /dev/null
done
tpub dev-a -q 1 -t "$pfx/dev/dev-a/status" -m g2-control
if wait_for "$tmp/watch.out" "g2-control" 5; then
    n=$(grep -ac "g2-forged" "$tmp/watch.out")
    [[ $n -eq 0 ]] && ok "G2: 0 of $((3 * n_each + 8)) forged messages reached the coordinator's view" \
        || bad "G2: $n forged messages reached the watcher"
else bad "G2: dev-a's control message on its own topic did not arrive"; fi

# dev-a subscribing to other devices' topics
tsub dev-a -v -q 1 -W 20 -t "$pfx/dev/dev-b/job" -t "$pfx/dev/+/job" \
    -t "$pfx/#" -t "$pfx/art/+/dev-b" -t "$pfx/dev/dev-a/job" > "$tmp/spy.out" 2>&1 &
spy=$!
pids+=("$spy")
sleep 0.5 # its SUBSCRIBE (mosquitto 2.0's ACL file grants it and filters at delivery)
for t in dev/dev-b/job dev/dev-b/ack art/feedf00d/dev-b dev/dev-b/ota; do
    tpub coordinator -q 1 -t "$pfx/$t" -m "g2-for-b-$t"
done
tpub coordinator -q 1 -t "$pfx/dev/dev-a/job" -m g2-job-for-a
if wait_for "$tmp/spy.out" "g2-job-for-a" 5; then
    n=$(grep -c "g2-for-b" "$tmp/spy.out")
    [[ $n -eq 0 ]] && ok "G2: dev-a's subscriptions got its own job and 0 of 4 messages for dev-b" \
        || bad "G2: dev-a received $n message(s) meant for dev-b"
else bad "G2: dev-a's subscription did not get its own job"; cat "$tmp/spy.out"; fi
kill "$spy" 2> /dev/null

# (3) efc-agent with the wrong CA: logged, retried, still running
"$agent_bin" --id dev-b --broker "mqtts://127.0.0.1:$BROKER_PORT" --data "fashion-mnist:shard=3/6" \
    --state-dir "$tmp/sx" --tls-ca "$pki/foreign/ca.crt" --tls-cert "$pki/dev-b.crt" \
    --tls-key "$pki/dev-b.key" > "$tmp/agent-badca.log" 2>&1 &
badca=$!
pids+=("$badca")
n_try=0
if wait_for "$tmp/agent-badca.log" "reconnecting .*certificate verify failed" 5; then
    for _ in $(seq 50); do # the second attempt comes 0.5 s after the first failure
        n_try=$(grep -c "reconnecting .*certificate verify failed" "$tmp/agent-badca.log")
        [[ $n_try -ge 2 ]] && break
        sleep 0.1
    done
fi
if [[ $n_try -ge 2 ]] && kill -0 $badca 2> /dev/null; then
    ok "agent with a foreign CA file: $(grep -c reconnecting "$tmp/agent-badca.log") attempts logged with the reason, still running"
else
    bad "agent with a foreign CA file"; cat "$tmp/agent-badca.log"
fi
grep -m1 "reconnecting" "$tmp/agent-badca.log" | cut -c1-200 | sed 's/^/     /'
kill -TERM $badca 2> /dev/null
for _ in $(seq 30); do kill -0 $badca 2> /dev/null || break; sleep 0.1; done
kill -9 $badca 2> /dev/null; wait $badca 2> /dev/null

# (4) end to end over mutual TLS
model=$tmp/base.efm
if "$efc_bin" train --arch mlp --data fashion-mnist --epochs 1 --limit 2000 -q -o "$model" \
        > "$tmp/train.log" 2>&1; then
    ok "trained a base model ($(stat -c %s "$model") bytes)"
else
    bad "efc train"; cat "$tmp/train.log"; finish
fi
export EFC_AGENT_TIMING_LOCK=$tmp/timing.lock
url=mqtts://127.0.0.1:$BROKER_PORT
agent() { # agent ID SHARD [ARGS...]: a real efc-agent over mutual TLS with its own certificate
    local d=$1 shard=$2
    shift 2
    "$agent_bin" --id "$d" --broker "$url" --data "fashion-mnist:shard=$shard/6" \
        --state-dir "$tmp/s-$d" --tls-ca "$pki/ca.crt" --tls-cert "$pki/$d.crt" \
        --tls-key "$pki/$d.key" "$@" > "$tmp/agent-$d.log" 2>&1 &
    pids+=($!)
}
# dev-a first: with --min-devices 2 the coordinator keeps running after dev-a's jobs, so the
# forgery below meets a live coordinator; dev-b comes after it (capped at avx2 on an AVX-512
# machine: a class of its own, so it gets jobs of its own).
agent dev-a 1
isa_b=()
if grep -qw avx512f /proc/cpuinfo; then isa_b=(--isa avx2); fi
cat > "$tmp/coord.conf" << EOF
# the coordinator's TLS options from a config file, as the systemd unit gives them
broker = $url
tls-ca = $pki/ca.crt
tls-cert = $pki/coordinator.crt
tls-key = $pki/coordinator.key
EOF
grid="fp32;int8(calib=minmax,weights=tensor);int8(calib=percentile,weights=channel)"
grid="$grid;int8(calib=minmax,weights=channel)"
timeout 60 "$coord_bin" --config "$tmp/coord.conf" --db "$tmp/efc.db" round --base "$model" \
    --grid "$grid" --sla-drop 0.05 --objective bytes --per-class 1 --calib 64 --eval 200 \
    --runs 3 --batch 4 --min-devices 2 --timeout 50 --job-timeout 40 \
    > "$tmp/coord.out" 2> "$tmp/coord.log" &
coord=$!
pids+=("$coord")

# the forgery: dev-a's first genuine result, re-addressed to dev-b
if wait_for "$tmp/watch.out" "^$pfx/dev/dev-a/result \{" 40; then
    real=$(grep -a -m1 "^$pfx/dev/dev-a/result {" "$tmp/watch.out" | cut -d' ' -f2-)
    jid=$(grep -a -m1 "^$pfx/dev/dev-b/job {" "$tmp/watch.out" | grep -aoE '"job_id":"[^"]+"' \
        | cut -d'"' -f4)
    forged=${real//\"device_id\":\"dev-a\"/\"device_id\":\"dev-b\"}
    [[ -n $jid ]] && forged=$(sed -E "s/\"job_id\":\"[^\"]+\"/\"job_id\":\"$jid\"/" <<< "$forged")
    printf '%s' "$forged" > "$tmp/forged.json"
    [[ -n $real ]] || bad "dev-a's result could not be read off the watcher's output"
    tpub dev-a -d -q 1 -t "$pfx/dev/dev-b/result" -f "$tmp/forged.json" \
        > "$tmp/forge.out" 2>&1
    if grep -q "RC:135" "$tmp/forge.out"; then
        ok "forged result on dev-b's topic (job ${jid:-of dev-a}) refused: 0x87"
    else bad "forged result on dev-b's topic was not refused"; cat "$tmp/forge.out"; fi
    # G4: the same body on dev-a's own topic passes the broker; the coordinator drops it
    tpub dev-a -q 1 -t "$pfx/dev/dev-a/result" -f "$tmp/forged.json"
    wait_for "$tmp/coord.log" "dropped malformed result of dev-a" 10 \
        && ok "G4: body claiming dev-b on dev-a's topic: dropped by the coordinator" \
        || bad "G4: coordinator did not drop a result whose body names another device"
else
    bad "no result of dev-a seen"; kill -0 $coord 2> /dev/null || cat "$tmp/coord.log"
fi
agent dev-b 2 "${isa_b[@]}"

if wait $coord; then ok "round over mutual TLS completed: exit 0"
else bad "efc-coordinator round failed"; tail -20 "$tmp/coord.log"; fi
sed 's/^/     /' "$tmp/coord.out" | head -12
n_tls=$(grep -l "connected to 127.0.0.1:$BROKER_PORT over TLS" "$tmp/coord.log" \
    "$tmp/agent-dev-a.log" "$tmp/agent-dev-b.log" | wc -l)
[[ $n_tls -eq 3 ]] && ok "coordinator and both agents logged 'connected ... over TLS'" \
    || bad "$n_tls of 3 processes logged a TLS connection"
if [[ -s $tmp/forged.json ]]; then
    n=$(grep -acF -- "$(cat "$tmp/forged.json")" "$tmp/watch.out")
    [[ $n -eq 1 ]] && ok "the forged body reached the coordinator's view once: on dev-a's topic only" \
        || bad "the forged body was seen $n time(s) (want 1: the G4 copy on dev-a's topic)"
    grep -qE "result job=[^ ]+ device=dev-b (duplicate|not stored)" "$tmp/coord.log" \
        && bad "coordinator saw a second result for dev-b (the forgery?)" \
        || ok "coordinator logged no duplicate or unknown result for dev-b"
fi
counts=$(grep -E "^round .*: jobs=" "$tmp/coord.out")
[[ $counts =~ jobs=([0-9]+)\ done=([0-9]+)\ failed=0\ expired=0\ unfinished=0\ results=([0-9]+)\ distinct_jobs=([0-9]+) ]] \
    && [[ ${BASH_REMATCH[1]} == "${BASH_REMATCH[3]}" && ${BASH_REMATCH[3]} == "${BASH_REMATCH[4]}" ]] \
    && ok "store: ${counts#*: }" || bad "store counts: '$counts'"
# the coordinator's own tally: the G4 copy is the one message it rejected; nothing else forged
grep -qE "^round .*: [0-9]+ result\(s\) stored, 0 duplicate\(s\), 1 message\(s\) rejected" \
    "$tmp/coord.out" && ok "coordinator: 0 duplicates, 1 message rejected (the G4 copy)" \
    || bad "coordinator tally: $(grep -E 'duplicate' "$tmp/coord.out")"
n_b=$(grep -cE "result job=[^ ]+ device=dev-b policy=" "$tmp/coord.log")
n_bw=$(grep -ac "^$pfx/dev/dev-b/result {" "$tmp/watch.out")
[[ $n_b -ge 1 && $n_b -eq $n_bw ]] \
    && ok "dev-b: $n_b result(s) stored = $n_bw result(s) dev-b itself published" \
    || bad "dev-b: $n_b result(s) stored, $n_bw published by dev-b"
rid=$(sed -n 's/^round \([^ :]*\): jobs=.*/\1/p' "$tmp/coord.out")
if [[ -n $rid ]] && "$coord_bin" --db "$tmp/efc.db" report --round-id "$rid" > "$tmp/report.out" 2>&1 \
        && grep -qF "${counts#*: }" "$tmp/report.out"; then
    ok "report subcommand on the store: the same counts"
else bad "report subcommand"; cat "$tmp/report.out"; fi

# (5) revoking a device: pki.sh --revoke, broker restarted with the new CRL
for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null; done
sleep 0.3
if "$root/deploy/pki.sh" "$pki" --revoke dev-b > "$tmp/revoke.out" 2>&1 \
        && "$root/deploy/pki.sh" "$pki" --revoke dev-b >> "$tmp/revoke.out" 2>&1; then
    n=$(openssl crl -in "$pki/ca.crl" -noout -text | grep -c "Serial Number:")
    [[ $n -eq 2 ]] && ok "pki.sh --revoke dev-b (twice): the CRL lists 2 certificates" \
        || bad "CRL lists $n certificates after revoking dev-b, want 2"
else bad "pki.sh --revoke"; cat "$tmp/revoke.out"; fi
broker_stop
if broker_start_tls "$tmp/b2" "$pki" "$pfx"; then
    H=(-h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5)
    if tpub dev-b -q 1 -t "$pfx/dev/dev-b/status" -m revoked > /dev/null 2>&1; then
        bad "revoked dev-b could still publish"
    else ok "after revocation and a broker restart, dev-b is refused"; fi
    tpub dev-a -q 1 -t "$pfx/dev/dev-a/status" -m still-ok \
        && ok "dev-a still accepted" || bad "dev-a refused after revoking dev-b"
else bad "broker restart with the new CRL"; fi

# (6) secrets hygiene
keys=$(find "$pki" -name "*.key" | wc -l)
k600=$(find "$pki" -name "*.key" -perm 0600 | wc -l)
[[ $keys -ge 10 && $keys -eq $k600 ]] && ok "G6: all $keys key files are mode 0600" \
    || bad "G6: $k600 of $keys key files are mode 0600"
leak=0
for k in "$pki"/*.key "$pki"/*/*.key; do
    body=$(sed -n '2p' "$k") # a line of the base64 key body
    grep -rqF -- "$body" "$tmp"/*.log "$tmp"/*.out "$tmp"/b*/mosquitto.log "$pki/pki.log" \
        2> /dev/null && leak=$((leak + 1))
done
n_priv=$(cat "$tmp"/*.log "$tmp"/*.out "$tmp"/b*/mosquitto.log "$pki/pki.log" 2> /dev/null \
    | grep -c "PRIVATE KEY")
[[ $leak -eq 0 && $n_priv -eq 0 ]] && ok "G6: no key material in any log or output" \
    || bad "G6: key material in logs ($leak key(s), $n_priv 'PRIVATE KEY' lines)"
finish
