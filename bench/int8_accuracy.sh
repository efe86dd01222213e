#!/usr/bin/env bash
# INT8 accuracy table (issue 3): every calibrator x weight granularity for each model, test
# accuracy on the 10,000 Fashion-MNIST test images after calibration on 512 training images,
# and the drop vs the FP32 model. Prints a Markdown table.
# Usage: bench/int8_accuracy.sh EFC_BINARY MODEL.efm...   (e.g. out/mlp.efm out/lenet5.efm)
set -euo pipefail
efc=${1:?efc binary}; shift
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export EFC_LOG_LEVEL=warn
acc() { "$efc" eval "$1" --data fashion-mnist --json | grep -oE '"accuracy":[0-9.]+' | cut -d: -f2; }
printf '| model | FP32 |'
for c in minmax percentile kl mse; do for g in channel tensor; do printf ' %s/%s |' "$c" "$g"; done; done
printf '\n|---|---|'; for i in 1 2 3 4 5 6 7 8; do printf -- '---|'; done; printf '\n'
for m in "$@"; do
    f=$(acc "$m")
    printf '| %s | %.2f %% |' "$(basename "$m" .efm)" "$(awk -v a="$f" 'BEGIN{print a*100}')"
    for c in minmax percentile kl mse; do
        for g in channel tensor; do
            flag=(); [[ $g == tensor ]] && flag=(--per-tensor)
            "$efc" quantize "$m" --calib "$c" --calib-data fashion-mnist --calib-samples 512 \
                "${flag[@]}" -o "$tmp/q.efm" >/dev/null 2>&1
            q=$(acc "$tmp/q.efm")
            printf ' %.2f (%+.2f) |' "$(awk -v a="$q" 'BEGIN{print a*100}')" \
                "$(awk -v a="$q" -v b="$f" 'BEGIN{print (a-b)*100}')"
        done
    done
    printf '\n'
done
