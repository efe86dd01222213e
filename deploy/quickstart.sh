#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, train a model on
# Fashion-MNIST (or reuse the one in out/), evaluate it, quantise it to INT8, benchmark FP32
# and INT8, then run a fleet round: a private mosquitto, efc-coordinator and six efc-agents
# (two each capped at ref, avx2 and avx512vnni, each with its own shard of the test set)
# choose the fastest policy per hardware class; prints the table and the HTML report path.
# Env: EFC_ARCH (default lenet5), EFC_EPOCHS (default: the architecture's default),
#      EFC_OUT (default out/), EFC_JOBS (build parallelism).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${EFC_ARCH:-lenet5}
out=${EFC_OUT:-out}
jobs=${EFC_JOBS:-$(nproc)}

echo "== 1/9 dependencies"
./deploy/install-deps.sh
echo "== 2/9 build (Release, portable: ISA paths chosen at run time)"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$jobs" --target efc efc-agent efc-coordinator >/dev/null
efc=build/release/cli/efc
mkdir -p "$out"

echo "== 3/9 train $arch on Fashion-MNIST (60000 images)"
epochs=()
[[ -n "${EFC_EPOCHS:-}" ]] && epochs=(--epochs "$EFC_EPOCHS")
t0=$(date +%s)
if [[ -f "$out/$arch.efm" && -z "${EFC_EPOCHS:-}" ]] && $efc inspect "$out/$arch.efm" >/dev/null 2>&1; then
    echo "reusing $out/$arch.efm (delete it to train again)"
else
    $efc train --arch "$arch" --data fashion-mnist "${epochs[@]}" -o "$out/$arch.efm"
fi
t1=$(date +%s)

echo "== 4/9 evaluate on the 10000 test images"
$efc eval "$out/$arch.efm" --data fashion-mnist | head -14
$efc eval "$out/$arch.efm" --data fashion-mnist --json > "$out/$arch.eval.json"

echo "== 5/9 INT8: calibrate on 512 training images (percentile 99.99 %), quantise, evaluate"
$efc quantize "$out/$arch.efm" --calib percentile --calib-data fashion-mnist -o "$out/$arch-int8.efm"
$efc eval "$out/$arch-int8.efm" --data fashion-mnist --json > "$out/$arch-int8.eval.json"

echo "== 6/9 benchmark (1 thread)"
export EFC_LOG_LEVEL=${EFC_LOG_LEVEL:-warn}
$efc inspect "$out/$arch.efm" --json > "$out/$arch.inspect.json"
$efc inspect "$out/$arch-int8.efm" --json > "$out/$arch-int8.inspect.json"
for m in "$arch" "$arch-int8"; do
    $efc bench "$out/$m.efm" --batch 1 --json > "$out/$m.bench1.json"
    $efc bench "$out/$m.efm" --batch 64 --json > "$out/$m.bench64.json"
done

j() { grep -oE "\"$2\":[^,}]*" "$1" | head -1 | cut -d: -f2 | tr -d '"'; }
acc=$(j "$out/$arch.eval.json" accuracy)
acc8=$(j "$out/$arch-int8.eval.json" accuracy)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
cat <<SUMMARY

== summary: $arch
  training        $((t1 - t0)) s wall, model $out/$arch.efm ($(j "$out/$arch.inspect.json" file_bytes) bytes, $(j "$out/$arch.inspect.json" params) parameters, $(j "$out/$arch.inspect.json" macs) MACs/image)
  test accuracy   $(awk -v a="$acc" 'BEGIN{printf "%.2f %%", a*100}') on 10000 images
  batch 1         p50 $(j "$out/$arch.bench1.json" p50_ms) ms, p99 $(j "$out/$arch.bench1.json" p99_ms) ms, $(j "$out/$arch.bench1.json" throughput_per_s) images/s
  batch 64        p50 $(j "$out/$arch.bench64.json" p50_ms) ms, p99 $(j "$out/$arch.bench64.json" p99_ms) ms, $(j "$out/$arch.bench64.json" throughput_per_s) images/s
  memory          peak activations $(j "$out/$arch.bench64.json" peak_activation_bytes) bytes at batch 64, peak RSS $(j "$out/$arch.bench64.json" peak_rss_bytes) bytes
  INT8            test accuracy $(awk -v a="$acc8" -v f="$acc" 'BEGIN{printf "%.2f %% (%+.2f pp)", a*100, (a-f)*100}'), file $(j "$out/$arch-int8.inspect.json" file_bytes) bytes
  INT8 batch 1    p50 $(j "$out/$arch-int8.bench1.json" p50_ms) ms ($(ratio "$(j "$out/$arch.bench1.json" p50_ms)" "$(j "$out/$arch-int8.bench1.json" p50_ms)") faster than FP32), weights $(j "$out/$arch-int8.bench1.json" weight_bytes) vs $(j "$out/$arch.bench1.json" weight_bytes) bytes
  INT8 batch 64   p50 $(j "$out/$arch-int8.bench64.json" p50_ms) ms ($(ratio "$(j "$out/$arch.bench64.json" p50_ms)" "$(j "$out/$arch-int8.bench64.json" p50_ms)") faster than FP32)
  kernels         isa $(j "$out/$arch.bench1.json" isa), OpenBLAS core $(j "$out/$arch.bench1.json" blas_core)
  JSON reports in $out/
SUMMARY

echo
echo "== 7/9 bring your own model: import a PyTorch-exported ONNX MLP (tests/fixtures/onnx/mlp.onnx, docs/onnx.md)"
$efc import tests/fixtures/onnx/mlp.onnx -o "$out/mlp-onnx.efm"   # normalisation from the file's efc.input_* metadata
$efc eval "$out/mlp-onnx.efm" --data fashion-mnist --json > "$out/mlp-onnx.eval.json"
echo "   imported model: test accuracy $(awk -v a="$(j "$out/mlp-onnx.eval.json" accuracy)" 'BEGIN{printf "%.2f %%", a*100}') (PyTorch on the same model: $(awk '$1 == "mlp" {printf "%.2f %%", $2 / 100}' tests/fixtures/onnx/accuracy.txt))"

echo
echo "== 8/9 fleet round: mosquitto, efc-coordinator, six efc-agents (ref, ref, avx2, avx2, avx512vnni, avx512vnni)"
. tests/integration/lib/broker.sh
fleet=$out/fleet
rm -rf "$fleet"
mkdir -p "$fleet"
pids=()
stop_fleet() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    broker_stop || true
}
trap stop_fleet EXIT
broker_start "$fleet/broker"
url=mqtt://127.0.0.1:$BROKER_PORT
export EFC_AGENT_TIMING_LOCK=$fleet/timing.lock   # agents on one host take turns when timing
caps=(ref ref avx2 avx2 avx512vnni avx512vnni)
# The OTA signing key (step 9): the agents trust its public half. Made once, kept in out/.
if [[ ! -f $out/keys/efc-sign.key ]]; then
    build/release/cli/efc keygen -o "$out/keys" 2>/dev/null | sed 's/^/   signing key: /'
fi
for i in 0 1 2 3 4 5; do
    build/release/agent/efc-agent --id "agent$i" --broker "$url" --isa "${caps[$i]}" \
        --data "fashion-mnist:shard=$i/6" --state-dir "$fleet/agent$i" \
        --trust-keys "$out/keys/efc-sign.pub" > "$fleet/agent$i.log" 2>&1 &
    pids+=($!)
done
# The built-in grid (docs/policies.md): fp32, three int8 variants, and pruned, 2:4,
# filter-pruned, low-rank and distilled candidates. Their training steps run here, on the
# coordinator's own training data, once per base model (cached in out/candidates; a few
# minutes the first time); the int8 step runs on each agent with its own data.
echo "   candidates (training steps of the default grid): $out/candidates (reused when present)"
build/release/coordinator/efc-coordinator --broker "$url" --db "$fleet/efc.db" round \
    --base "$out/$arch.efm" --grid default --train-data fashion-mnist \
    --candidates "$out/candidates" --sla-drop 0.01 --objective p50 --per-class 2 \
    --calib 256 --eval 1000 --runs 50 --batch 16 --min-devices 6 --timeout 480 --job-timeout 180 \
    --report "$fleet/report.html" 2> "$fleet/coordinator.log" | tee "$fleet/round.txt"
rid=$(sed -n 's/^round \([^ :]*\): jobs=.*/\1/p' "$fleet/round.txt" | head -1)
cat <<FLEET

== fleet: per-class choice above (SLA: at most 1 pp below FP32, paired on each device's own
   data; objective: p50 latency at batch 1), measured by the agents themselves
FLEET

echo
echo "== 9/9 OTA: sign each class's choice and roll it out (waves: canary, 10 %, 50 %, 100 %),"
echo "   each device calibrating and health-checking on its own data before it commits (docs/ota.md)"
build/release/coordinator/efc-coordinator --broker "$url" --db "$fleet/efc.db" rollout \
    --round-id "$rid" --sign-key "$out/keys/efc-sign.key" --calib 256 --eval 1000 \
    --report-timeout 300 --timeout 600 2> "$fleet/rollout.log" | tee "$fleet/rollout.txt" \
    || echo "   (a rollout did not complete: see above and $fleet/rollout.log)"
echo
build/release/coordinator/efc-coordinator --db "$fleet/efc.db" status 2>/dev/null \
    | sed -n '/^devices/,/^rollouts/p' | sed '$d'
build/release/coordinator/efc-coordinator --db "$fleet/efc.db" report --round-id "$rid" \
    --report "$fleet/report.html" > /dev/null 2>&1
stop_fleet
trap - EXIT
cat <<FLEET

   report  $fleet/report.html (selection and rollout state)    database $fleet/efc.db
   logs    $fleet/*.log
FLEET
