#!/usr/bin/env bash
# ONNX import against PyTorch on the real data (issue 6): every whole model of
# tests/fixtures/onnx (exported by export.py after one epoch of training, its PyTorch test
# accuracy in accuracy.txt) is imported with `efc import` and evaluated with `efc eval` on the
# 10,000 Fashion-MNIST test images; the correct counts must agree within 10 (0.1 pp).
# Usage: onnx_accuracy.sh BUILD_DIR. Prints "N passed, M failed". SKIP without the data set.
set -uo pipefail
build=$(cd "${1:?usage: onnx_accuracy.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
fix=$here/../fixtures/onnx
efc=$build/cli/efc
fm=${EFC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
[[ -f $fm/t10k-images-idx3-ubyte.gz ]] || { echo "SKIP: Fashion-MNIST not found in $fm"; exit 0; }
[[ -f $fix/accuracy.txt ]] || { echo "FAIL: $fix/accuracy.txt missing"; echo "0 passed, 1 failed"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
while read -r name want; do
    [[ -z $name || $name == \#* ]] && continue
    if ! "$efc" import "$fix/$name.onnx" -o "$tmp/$name.efm" > "$tmp/$name.log" 2>&1 ||
       ! "$efc" eval "$tmp/$name.efm" --data fashion-mnist --json > "$tmp/$name.json" 2>> "$tmp/$name.log"; then
        bad "$name: import or eval failed"; cat "$tmp/$name.log"; continue
    fi
    got=$(grep -oE '"correct":[0-9]+' "$tmp/$name.json" | cut -d: -f2)
    d=$((got - want))
    [[ ${d#-} -le 10 ]] && ok "$name: efc $got, PyTorch $want of 10000 correct (difference $d)" \
        || bad "$name: efc $got, PyTorch $want of 10000 correct"
done < "$fix/accuracy.txt"
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
