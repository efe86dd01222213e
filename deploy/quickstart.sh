#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, train a model on
# Fashion-MNIST, evaluate it, benchmark it at batch 1 and 64, and print a summary.
# Env: EFC_ARCH (default lenet5), EFC_EPOCHS (default: the architecture's default),
#      EFC_OUT (default out/), EFC_JOBS (build parallelism).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${EFC_ARCH:-lenet5}
out=${EFC_OUT:-out}
jobs=${EFC_JOBS:-$(nproc)}

echo "== 1/5 dependencies"
./deploy/install-deps.sh
echo "== 2/5 build (Release, portable: ISA paths chosen at run time)"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$jobs" --target efc >/dev/null
efc=build/release/cli/efc
mkdir -p "$out"

echo "== 3/5 train $arch on Fashion-MNIST (60000 images)"
epochs=()
[[ -n "${EFC_EPOCHS:-}" ]] && epochs=(--epochs "$EFC_EPOCHS")
t0=$(date +%s)
$efc train --arch "$arch" --data fashion-mnist "${epochs[@]}" -o "$out/$arch.efm"
t1=$(date +%s)

echo "== 4/5 evaluate on the 10000 test images"
$efc eval "$out/$arch.efm" --data fashion-mnist | head -14
$efc eval "$out/$arch.efm" --data fashion-mnist --json > "$out/$arch.eval.json"

echo "== 5/5 benchmark"
$efc inspect "$out/$arch.efm" --json > "$out/$arch.inspect.json"
$efc bench "$out/$arch.efm" --batch 1 --json > "$out/$arch.bench1.json"
$efc bench "$out/$arch.efm" --batch 64 --json > "$out/$arch.bench64.json"

j() { grep -oE "\"$2\":[^,}]*" "$1" | head -1 | cut -d: -f2 | tr -d '"'; }
acc=$(j "$out/$arch.eval.json" accuracy)
cat <<SUMMARY

== summary: $arch
  training        $((t1 - t0)) s wall, model $out/$arch.efm ($(j "$out/$arch.inspect.json" file_bytes) bytes, $(j "$out/$arch.inspect.json" params) parameters, $(j "$out/$arch.inspect.json" macs) MACs/image)
  test accuracy   $(awk -v a="$acc" 'BEGIN{printf "%.2f %%", a*100}') on 10000 images
  batch 1         p50 $(j "$out/$arch.bench1.json" p50_ms) ms, p99 $(j "$out/$arch.bench1.json" p99_ms) ms, $(j "$out/$arch.bench1.json" throughput_per_s) images/s
  batch 64        p50 $(j "$out/$arch.bench64.json" p50_ms) ms, p99 $(j "$out/$arch.bench64.json" p99_ms) ms, $(j "$out/$arch.bench64.json" throughput_per_s) images/s
  memory          peak activations $(j "$out/$arch.bench64.json" peak_activation_bytes) bytes at batch 64, peak RSS $(j "$out/$arch.bench64.json" peak_rss_bytes) bytes
  kernels         isa $(j "$out/$arch.bench1.json" isa), OpenBLAS core $(j "$out/$arch.bench1.json" blas_core)
  JSON reports in $out/
SUMMARY
