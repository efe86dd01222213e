#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, train a model on
# Fashion-MNIST, evaluate it, quantise it to INT8 (calibrated on 512 training images),
# benchmark FP32 and INT8 at batch 1 and 64, and print a summary.
# Env: EFC_ARCH (default lenet5), EFC_EPOCHS (default: the architecture's default),
#      EFC_OUT (default out/), EFC_JOBS (build parallelism).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${EFC_ARCH:-lenet5}
out=${EFC_OUT:-out}
jobs=${EFC_JOBS:-$(nproc)}

echo "== 1/6 dependencies"
./deploy/install-deps.sh
echo "== 2/6 build (Release, portable: ISA paths chosen at run time)"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$jobs" --target efc >/dev/null
efc=build/release/cli/efc
mkdir -p "$out"

echo "== 3/6 train $arch on Fashion-MNIST (60000 images)"
epochs=()
[[ -n "${EFC_EPOCHS:-}" ]] && epochs=(--epochs "$EFC_EPOCHS")
t0=$(date +%s)
$efc train --arch "$arch" --data fashion-mnist "${epochs[@]}" -o "$out/$arch.efm"
t1=$(date +%s)

echo "== 4/6 evaluate on the 10000 test images"
$efc eval "$out/$arch.efm" --data fashion-mnist | head -14
$efc eval "$out/$arch.efm" --data fashion-mnist --json > "$out/$arch.eval.json"

echo "== 5/6 INT8: calibrate on 512 training images (percentile 99.99 %), quantise, evaluate"
$efc quantize "$out/$arch.efm" --calib percentile --calib-data fashion-mnist -o "$out/$arch-int8.efm"
$efc eval "$out/$arch-int8.efm" --data fashion-mnist --json > "$out/$arch-int8.eval.json"

echo "== 6/6 benchmark (1 thread)"
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
