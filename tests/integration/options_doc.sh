#!/usr/bin/env bash
# The option tables of efc-agent and efc-coordinator against their docs and themselves:
#  (1) every option that --print-config lists is documented (`--name` in docs/agent.md,
#      docs/coordinator.md);
#  (2) --print-config output, fed back with --config, gives the same values;
#  (3) a bad key in a config file fails start-up naming file:line, exit status 2.
# Usage: options_doc.sh BUILD_DIR. Prints "N passed, M failed".
set -uo pipefail
build=$(cd "${1:?usage: options_doc.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
names() { sed -E 's/^# //; s/ = .*//' "$1"; }
values() { grep -v '^#' "$1" | sed 's/    #.*//'; }
check() { # binary doc args...
    local bin=$1 doc=$2; shift 2
    local name
    "$bin" "$@" --print-config > "$tmp/p1" 2>&1 || { bad "$(basename "$bin") --print-config"; return; }
    local missing=()
    for name in $(names "$tmp/p1"); do
        grep -q -- "--$name\b" "$root/$doc" || missing+=("--$name")
    done
    [[ ${#missing[@]} -eq 0 ]] && ok "$(basename "$bin"): $(names "$tmp/p1" | wc -l) options, all in $doc" \
        || bad "$(basename "$bin"): not in $doc: ${missing[*]}"
    "$bin" --config "$tmp/p1" --print-config > "$tmp/p2" 2>&1
    if diff <(values "$tmp/p1") <(values "$tmp/p2") > "$tmp/diff"; then
        ok "$(basename "$bin"): --print-config output loads back to the same values"
    else bad "$(basename "$bin"): round trip differs"; cat "$tmp/diff"; fi
    printf 'prefix = a/b\nno-such-key = 1\n' > "$tmp/bad.conf"
    "$bin" --config "$tmp/bad.conf" "$@" > "$tmp/out" 2>&1
    local rc=$?
    [[ $rc -eq 2 ]] && grep -q "bad.conf:2: unknown key \"no-such-key\"" "$tmp/out" \
        && ok "$(basename "$bin"): bad key -> exit 2, $(head -1 "$tmp/out")" \
        || { bad "$(basename "$bin"): bad key: rc=$rc"; cat "$tmp/out"; }
}
check "$build/agent/efc-agent" docs/agent.md --id d1 --broker mqtt://127.0.0.1:1 --data x --state-dir "$tmp/s"
check "$build/coordinator/efc-coordinator" docs/coordinator.md --db "$tmp/c.db" round --sla-drop 0.01 --objective p50
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
