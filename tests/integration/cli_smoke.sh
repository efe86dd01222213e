#!/usr/bin/env bash
# End-to-end check of the efc CLI: train (small), eval, inspect, bench, run, and the error
# paths (corrupt / truncated / missing model, bad options, missing data). Usage: cli_smoke.sh BUILD_DIR
set -uo pipefail
build=${1:?build dir}
efc="$build/cli/efc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()   { pass=$((pass + 1)); echo "ok   $*"; }
bad()  { fail=$((fail + 1)); echo "FAIL $*"; }
# expect CODE DESCRIPTION -- command...   (checks the exit code)
expect() {
    local code=$1 what=$2; shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    if [[ $rc -eq $code ]]; then ok "$what (exit $rc)"; else bad "$what: exit $rc, wanted $code"; cat "$tmp/err"; fi
}
json_num() { grep -oE "\"$2\":[-0-9.e]+" "$1" | head -1 | cut -d: -f2; }

if [[ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
    echo "SKIP: dataset-fashion-mnist not installed"; exit 0
fi

expect 0 "train mlp on 3000 samples" -- "$efc" train --arch mlp --data fashion-mnist --epochs 2 --limit 3000 -q -o "$tmp/mlp.efm"
expect 0 "eval --json" -- "$efc" eval "$tmp/mlp.efm" --data fashion-mnist --json
cp "$tmp/out" "$tmp/eval.json"
acc=$(json_num "$tmp/eval.json" accuracy); samples=$(json_num "$tmp/eval.json" samples)
awk -v a="$acc" 'BEGIN{exit !(a > 0.70)}' && ok "accuracy $acc > 0.70 after 2 small epochs" || bad "accuracy $acc"
[[ "$samples" == 10000 ]] && ok "eval on 10000 test samples" || bad "samples=$samples"

expect 0 "inspect --json" -- "$efc" inspect "$tmp/mlp.efm" --json
params=$(json_num "$tmp/out" params); macs=$(json_num "$tmp/out" macs)
[[ "$params" == 266610 ]] && ok "mlp params 266610" || bad "params=$params"
[[ "$macs" == 266200 ]] && ok "mlp MACs 266200" || bad "macs=$macs"
for k in nonzero_params file_bytes; do grep -q "\"$k\":" "$tmp/out" && ok "inspect has $k" || bad "inspect lacks $k"; done

expect 0 "bench --json batch 4" -- "$efc" bench "$tmp/mlp.efm" --batch 4 --runs 20 --json
for k in p50_ms p99_ms peak_activation_bytes weight_bytes peak_rss_bytes; do
    grep -q "\"$k\":" "$tmp/out" && ok "bench has $k" || bad "bench lacks $k"
done
[[ "$(json_num "$tmp/out" allocations_during_runs)" == 0 ]] && ok "no allocation during timed runs" || bad "allocations during runs"

# write_npy FILE SHAPE BYTES: a uint8 .npy (v1.0 header padded to 64 bytes) of zero bytes
write_npy() {
    local hdr="{'descr': '|u1', 'fortran_order': False, 'shape': $2, }"
    local pad=$(( 64 - (10 + ${#hdr} + 1) % 64 ))
    { printf '\x93NUMPY\x01\x00'; printf "\\x$(printf %02x $(( (${#hdr} + pad + 1) % 256 )))\\x$(printf %02x $(( (${#hdr} + pad + 1) / 256 )))"
      printf '%s%*s\n' "$hdr" "$pad" ''; head -c "$3" /dev/zero; } > "$1"
}
write_npy "$tmp/x.npy" "(3, 1, 28, 28)" $((3 * 784))
expect 0 "run on a uint8 .npy" -- "$efc" run "$tmp/mlp.efm" --input "$tmp/x.npy" -o "$tmp/y.npy"
[[ $(stat -c %s "$tmp/y.npy") -eq $((128 + 3 * 10 * 4)) ]] && ok "run wrote [3,10] float32" || bad "y.npy size $(stat -c %s "$tmp/y.npy")"

# error paths: clear message, non-zero exit, no crash
head -c 1000 "$tmp/mlp.efm" > "$tmp/trunc.efm"
expect 1 "truncated model rejected" -- "$efc" eval "$tmp/trunc.efm" --data fashion-mnist
grep -q "trunc.efm" "$tmp/err" && ok "error names the file" || bad "error does not name the file: $(cat "$tmp/err")"
cp "$tmp/mlp.efm" "$tmp/flip.efm"
printf '\xff' | dd of="$tmp/flip.efm" bs=1 seek=5000 conv=notrunc status=none
expect 1 "corrupted model rejected" -- "$efc" inspect "$tmp/flip.efm"
expect 1 "missing model" -- "$efc" bench "$tmp/nope.efm"
expect 1 "missing data file" -- "$efc" eval "$tmp/mlp.efm" --data "$tmp/none.idx,$tmp/none2.idx"
expect 2 "unknown option" -- "$efc" eval "$tmp/mlp.efm" --bogus
expect 2 "missing -o" -- "$efc" train --arch mlp --data fashion-mnist
expect 1 "unknown arch" -- "$efc" train --arch resnet --data fashion-mnist -o "$tmp/x.efm"
expect 1 "bad --isa" -- "$efc" --isa sse9 inspect "$tmp/mlp.efm"
expect 0 "--isa ref works" -- "$efc" --isa ref eval "$tmp/mlp.efm" --data fashion-mnist --json
# FP32 sums round differently per OpenBLAS core: allow a few argmax flips in 10000
d=$(( $(json_num "$tmp/out" correct) - $(json_num "$tmp/eval.json" correct) ))
[[ ${d#-} -le 5 ]] && ok "ref path within 5 of the best path's correct count ($d)" || bad "ref path differs by $d"
# INT8: quantise on local data, evaluate, inspect, bench on every ISA path, bad calibration data
expect 0 "quantize (percentile, 256 samples)" -- "$efc" quantize "$tmp/mlp.efm" --calib percentile --calib-data fashion-mnist --calib-samples 256 -o "$tmp/mlp8.efm"
grep -q "3 layers INT8, 0 FP32" "$tmp/out" && ok "all mlp layers INT8" || bad "quantize summary: $(cat "$tmp/out")"
expect 0 "eval INT8" -- "$efc" eval "$tmp/mlp8.efm" --data fashion-mnist --json
q=$(json_num "$tmp/out" accuracy)
awk -v a="$acc" -v b="$q" 'BEGIN{exit !(a - b < 0.01)}' && ok "INT8 accuracy $q within 1 pp of FP32 $acc" || bad "INT8 accuracy $q vs $acc"
expect 0 "inspect INT8 --json" -- "$efc" inspect "$tmp/mlp8.efm" --json
grep -q '"precision":"int8"' "$tmp/out" && grep -q '"calibration":{' "$tmp/out" && grep -q '"data_digest":"' "$tmp/out" \
    && ok "inspect shows INT8 layers and the calibration record" || bad "inspect INT8 output"
for isa in ref avx2 avx512vnni; do
    expect 0 "INT8 eval on --isa $isa" -- "$efc" --isa "$isa" eval "$tmp/mlp8.efm" --data fashion-mnist --json
    c=$(json_num "$tmp/out" correct); [[ -z "${c0:-}" ]] && c0=$c
    [[ "$c" == "$c0" ]] && ok "INT8 results identical on $isa ($c correct)" || bad "INT8 $isa: $c vs $c0"
done
expect 0 "bench INT8" -- "$efc" bench "$tmp/mlp8.efm" --runs 20 --json
[[ "$(json_num "$tmp/out" allocations_during_runs)" == 0 ]] && ok "INT8: no allocation during timed runs" || bad "INT8 allocations"
write_npy "$tmp/small.npy" "(4, 10, 10)" 400
expect 1 "calibration data of the wrong shape" -- "$efc" quantize "$tmp/mlp.efm" --calib kl --calib-data "$tmp/small.npy" -o "$tmp/bad.efm"
grep -q "values per sample\|sample size\|shape" "$tmp/err" && ok "wrong shape names the problem" || bad "wrong-shape message: $(cat "$tmp/err")"
[[ ! -e "$tmp/bad.efm" ]] && ok "no model written on error" || bad "a model was written"
expect 1 "unknown calibrator" -- "$efc" quantize "$tmp/mlp.efm" --calib magic --calib-data fashion-mnist -o "$tmp/bad.efm"
expect 0 "bench-kernels --json (one shape)" -- "$efc" bench-kernels --json --shape square256 --time-ms 20
grep -q '"openblas_core"' "$tmp/out" && grep -q '"ratio"' "$tmp/out" && ok "bench-kernels JSON keys" || bad "bench-kernels JSON: $(head -c 300 "$tmp/out")"

# compress: a policy end to end (one-shot 80 % pruning + int8, no fine-tuning: seconds)
expect 0 "compress prune+int8" -- "$efc" compress "$tmp/mlp.efm" --policy "prune(sparsity=0.8)+int8(calib=percentile)" --data fashion-mnist -q -o "$tmp/mlp-p8.efm"
grep -q "prunable-weight sparsity 0.8000" "$tmp/out" && ok "compress: sparsity 0.8000" || bad "compress summary: $(cat "$tmp/out")"
[[ $(stat -c %s "$tmp/mlp-p8.efm") -lt $(stat -c %s "$tmp/mlp8.efm") ]] && ok "pruned INT8 file smaller than dense INT8 ($(stat -c %s "$tmp/mlp-p8.efm") < $(stat -c %s "$tmp/mlp8.efm") bytes)" || bad "pruned INT8 file not smaller"
expect 0 "eval pruned INT8" -- "$efc" eval "$tmp/mlp-p8.efm" --data fashion-mnist --json
p=$(json_num "$tmp/out" accuracy)
awk -v a="$p" 'BEGIN{exit !(a > 0.60)}' && ok "pruned INT8 accuracy $p > 0.60" || bad "pruned INT8 accuracy $p"
# artifacts: pack -> unpack gives the .efm back byte for byte; inspect reports the packed size
expect 0 "pack pruned INT8" -- "$efc" pack "$tmp/mlp-p8.efm" -o "$tmp/mlp-p8.efca"
expect 0 "unpack it" -- "$efc" unpack "$tmp/mlp-p8.efca" -o "$tmp/mlp-p8-unpacked.efm"
cmp -s "$tmp/mlp-p8.efm" "$tmp/mlp-p8-unpacked.efm" && ok "pack -> unpack -> cmp: identical" || bad "unpacked .efm differs"
expect 0 "inspect pruned INT8 --json" -- "$efc" inspect "$tmp/mlp-p8.efm" --json
a=$(json_num "$tmp/out" artifact_bytes)
[[ -n "$a" && "$a" == "$(stat -c %s "$tmp/mlp-p8.efca")" ]] && ok "inspect artifact_bytes $a = the packed size" || bad "artifact_bytes=$a, packed $(stat -c %s "$tmp/mlp-p8.efca")"
expect 1 "compress: impossible policy" -- "$efc" compress "$tmp/mlp.efm" --policy "prune(sparsity=1.5)" --data fashion-mnist -o "$tmp/bad.efm"
grep -q "sparsity=1.5 is not in \[0, 1)" "$tmp/err" && ok "impossible policy names the key" || bad "policy error: $(cat "$tmp/err")"
expect 1 "compress: policy syntax error" -- "$efc" compress "$tmp/mlp.efm" --policy "prune(sparsity=0.5" --data fashion-mnist -o "$tmp/bad.efm"
grep -q "column" "$tmp/err" && ok "syntax error names the column" || bad "syntax error: $(cat "$tmp/err")"

for c in train eval inspect bench run quantize bench-kernels compress pack unpack; do expect 0 "$c --help" -- "$efc" $c --help; done

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
