#!/usr/bin/env bash
# The test command (README): install what is missing, build with -Werror, run every test
# with ctest, then the unit tests again under ASan+UBSan, then each fuzz target briefly
# (when clang is available). Exits non-zero on the first failure.
# Env: EFC_JOBS (default: nproc), EFC_FUZZ_RUNS (iterations per fuzz target, default 5000),
#      EFC_SKIP_ASAN=1 / EFC_SKIP_FUZZ=1 to skip those stages when iterating locally.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=${EFC_JOBS:-$(nproc)}

# build DIR [cmake options...]: configure and build; on failure show the end of the log.
build() {
    local dir=$1; shift
    mkdir -p "$dir"
    if ! { cmake -S . -B "$dir" "$@" && cmake --build "$dir" -j"$jobs"; } > "$dir/build.log" 2>&1; then
        tail -60 "$dir/build.log"; echo "build failed ($dir/build.log)"; exit 1
    fi
}

./deploy/install-deps.sh --test

echo "== banned functions (STYLE.md 2.10)"
banned='\b(strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol|atof|system)\s*\('
mods=(common kernels model calib compress cli bench onnx ota proto agent coordinator)
if grep -nE "$banned" --include='*.c' --include='*.h' -r "${mods[@]}"; then
    echo "banned function used (see above)"; exit 1
fi
if grep -nE '\b(malloc|calloc|realloc|free)\s*\(' --include='*.c' -r "${mods[@]}" \
       | grep -v '^common/efc_alloc.c' | grep -vE 'efc_(malloc|calloc|realloc|free)|cJSON_free' ; then
    echo "bare allocation outside common/efc_alloc.c (see above)"; exit 1
fi

echo "== build (default, -Werror)"
build build/ci -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEFC_WERROR=ON
# group LABEL DIR [ctest args]: run one label's tests; prints "LABEL: N passed, M failed".
summary=()
group() {
    local label=$1 dir=$2; shift 2
    local log rc=0
    log=$(mktemp)
    (cd "$dir" && ctest --output-on-failure -L "$label" -j"$jobs" "$@") 2>&1 | tee "$log" || rc=1
    local total failed
    total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
    failed=$(sed -n 's/.* \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -1)
    rm -f "$log"
    summary+=("$label ($dir): $((${total:-0} - ${failed:-0})) passed, ${failed:-?} failed")
    echo "${summary[-1]}"
    [[ $rc -eq 0 ]] || { echo "== summary"; printf '%s\n' "${summary[@]}"; exit 1; }
}
echo "== ctest: unit tests"
group unit build/ci
echo "== ctest: integration tests (real mosquitto, real agents and coordinator)"
group integration build/ci

if [[ "${EFC_SKIP_ASAN:-0}" != 1 ]]; then
    echo "== build (ASan + UBSan)"
    build build/asan -DCMAKE_BUILD_TYPE=Debug -DEFC_WERROR=ON -DEFC_SANITIZE=address,undefined
    echo "== ctest (unit tests under ASan + UBSan)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        group unit build/asan
fi

if [[ "${EFC_SKIP_FUZZ:-0}" != 1 ]] && command -v clang >/dev/null; then
    echo "== fuzz targets (libFuzzer, ${EFC_FUZZ_RUNS:-5000} runs each)"
    build build/fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DEFC_FUZZ=ON
    n_fuzz=0
    for f in tests/fuzz/fuzz_*.c; do
        t=$(basename "$f" .c); c=${t#fuzz_}
        work=$(mktemp -d)
        cp -r "tests/fuzz/corpus/$c/." "$work/" 2>/dev/null || true
        dict=(); [[ -f "tests/fuzz/$c.dict" ]] && dict=(-dict="tests/fuzz/$c.dict")
        "build/fuzz/tests/$t" -runs="${EFC_FUZZ_RUNS:-5000}" -rss_limit_mb=2560 -timeout=10 \
            "${dict[@]}" "$work" 2>"build/fuzz/$t.log" || { tail -40 "build/fuzz/$t.log"; exit 1; }
        echo "$t: $(grep -oE 'Done [0-9]+ runs' "build/fuzz/$t.log" || echo ok)"
        rm -rf "$work"
        n_fuzz=$((n_fuzz + 1))
    done
    summary+=("fuzz (build/fuzz): $n_fuzz passed, 0 failed")
fi
echo "== all tests passed"; echo "== summary"
printf '%s\n' "${summary[@]}"
