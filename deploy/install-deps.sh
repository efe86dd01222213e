#!/usr/bin/env bash
# Install the Debian packages efc needs, only those that are missing. Idempotent and quiet
# when nothing is missing. Usage: deploy/install-deps.sh [--test]   (--test adds test tools)
set -euo pipefail

pkgs=(build-essential cmake pkg-config
      libopenblas-dev libmosquitto-dev mosquitto mosquitto-clients libmbedtls-dev
      libcurl4-openssl-dev libcjson-dev libsqlite3-dev zlib1g-dev libzstd-dev libcmocka-dev
      dataset-fashion-mnist protobuf-c-compiler libprotobuf-c-dev libonnx-dev
      openssl) # the CLI: deploy/pki.sh makes the development PKI (TLS tests, docs/security.md)
if [[ "${1:-}" == "--test" ]]; then
    # clang + its sanitizer runtimes build the libFuzzer targets
    pkgs+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
