#!/usr/bin/env bash
# Agent footprint (issue 4 targets: stripped binary < 2 MiB, idle RSS < 8 MiB): the efc-agent
# of BUILD_DIR stripped (a copy) and its size; then the agent started against a private
# mosquitto with a Fashion-MNIST shard, left idle (connected, status published, no job) for a
# few seconds, and its memory read from /proc: VmRSS (split anonymous / file-backed), PSS
# (shared pages divided among their users), peak (VmHWM, startup included) and threads.
# Usage: bench/agent_footprint.sh BUILD_DIR [DATA_SPEC]   (default fashion-mnist:shard=1/6)
set -euo pipefail
build=$(cd "${1:?usage: agent_footprint.sh BUILD_DIR [DATA_SPEC]}" && pwd)
data=${2:-fashion-mnist:shard=1/6}
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/tests/integration/lib/broker.sh"
agent=$build/agent/efc-agent
[[ -x $agent ]] || { echo "$agent not built" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() { stop_all; rm -rf "$tmp"; }
trap cleanup EXIT

type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
cp "$agent" "$tmp/efc-agent"
strip "$tmp/efc-agent"
size=$(stat -c %s "$tmp/efc-agent")
echo "efc-agent ($build, ${type:-default} build): $(stat -c %s "$agent") bytes, stripped $size bytes ($(awk -v s="$size" 'BEGIN{printf "%.2f", s / 1048576}') MiB; target < 2 MiB)"
echo "  shared libraries: $(ldd "$agent" | awk '$1 !~ /vdso|ld-linux/ {print $1}' | tr '\n' ' ')"

broker_start "$tmp/b"
"$agent" --id footprint --broker "mqtt://127.0.0.1:$BROKER_PORT" --data "$data" \
    --state-dir "$tmp/state" > "$tmp/agent.log" 2>&1 &
pid=$!
pids+=($pid)
for _ in $(seq 100); do grep -q "status online=1" "$tmp/agent.log" && break; sleep 0.1; done
grep -q "status online=1" "$tmp/agent.log" || { echo "agent did not come online:"; cat "$tmp/agent.log"; exit 1; }
sleep 3 # idle
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
pss=$(awk '$1 == "Pss:" {print $2}' "/proc/$pid/smaps_rollup")
rss=$(kb VmRSS)
echo "idle (connected, $data loaded, no job): VmRSS $rss kB ($(awk -v r="$rss" 'BEGIN{printf "%.2f", r / 1024}') MiB; target < 8 MiB) = anonymous $(kb RssAnon) kB + files $(kb RssFile) kB; PSS $pss kB; peak VmHWM $(kb VmHWM) kB; threads $(kb Threads)"
echo "  largest mappings (kB RSS):"
awk '/^[0-9a-f]+-[0-9a-f]+ /{n=$6; if (n == "") n="[anon]"} /^Rss:/{r[n]+=$2}
     END{for (n in r) if (r[n] >= 100) printf "    %6d %s\n", r[n], n}' "/proc/$pid/smaps" | sort -rn
