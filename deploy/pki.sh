#!/usr/bin/env bash
# pki.sh — a development PKI for efc's mutual TLS (docs/security.md), with the openssl CLI.
#
# Usage: deploy/pki.sh OUT_DIR DEVICE_ID...
#        deploy/pki.sh OUT_DIR --revoke DEVICE_ID...   (adds them to ca.crl; the broker reads
#                                                        the CRL when it starts)
#
# Makes, in OUT_DIR (created 0700):
#   ca.{key,crt}           the development CA (10 years); signs everything below
#   ca.crl                 its certificate revocation list (mosquitto's crlfile; 10 years)
#   ca-db/                 the CA's `openssl ca` database (index.txt, serial, crlnumber)
#   broker.{key,crt}       mosquitto's server certificate, CN localhost,
#                          SAN DNS:localhost, IP:127.0.0.1 (libmosquitto checks the host name)
#   coordinator.{key,crt}  client certificate, CN "coordinator" (the broker's ACL gives it efc/v1/#)
#   <id>.{key,crt}         one client certificate per device, CN = the device id = MQTT user name
# and, for the TLS tests (tests/integration/tls_acl.sh), material the broker must refuse:
#   foreign/ca.{key,crt}, foreign/client.{key,crt}   another CA, and a client certificate it
#                          signed with the first device's CN (a look-alike identity)
#   foreign/selfsigned.{key,crt}                      self-signed, CN = the first device id
#   expired/client.{key,crt}                          signed by the real CA, CN = the first device
#                          id, valid only in 2020 (made with `openssl ca -startdate/-enddate`,
#                          because `openssl x509 -req -days` cannot go negative)
#   revoked/client.{key,crt}                          signed by the real CA, CN = the first device
#                          id, valid dates, listed in ca.crl
#
# Keys: EC P-256 (what libmosquitto, mosquitto and mbedTLS all handle), unencrypted PEM, mode
# 0600; certificates 0644. Idempotent: a key, certificate or CRL that exists is kept, so
# rerunning with one more device id adds that device only (delete OUT_DIR to start over). Nothing secret
# is printed: openssl's output goes to a log file that holds no key material, and keys are only
# ever written to files. Not for production: no CRL, no key protection, long validity.
set -euo pipefail

die() { echo "pki.sh: $*" >&2; exit 1; }
[[ $# -ge 2 ]] || die "usage: pki.sh OUT_DIR DEVICE_ID... | pki.sh OUT_DIR --revoke DEVICE_ID..."
command -v openssl > /dev/null || die "the openssl CLI is not installed (deploy/install-deps.sh)"
out=$1
shift
revoke=
if [[ $1 == --revoke ]]; then
    revoke=1
    shift
    [[ $# -ge 1 && -s $out/ca.key ]] || die "--revoke needs an existing PKI and device ids"
fi
# The ACL substitutes the CN for %u in topic patterns: it must be a valid single topic level
# and a valid efc device id (proto: [A-Za-z0-9][A-Za-z0-9._-]{0,62}).
for id in "$@"; do
    [[ $id =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] || die "invalid device id '$id'"
    case $id in
    ca | broker | coordinator) die "device id '$id' is reserved (it names a PKI file)" ;;
    esac
done

umask 077
mkdir -p "$out/foreign" "$out/expired" "$out/revoked"
chmod 700 "$out"
out=$(cd "$out" && pwd)
log=$out/pki.log
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ossl ARGS...: openssl with its chatter in the log (never key material: keys go to -out files).
ossl() {
    openssl "$@" >> "$log" 2>&1 || die "openssl $1 failed (see $log)"
}

newkey() { # newkey FILE
    [[ -s $1 ]] && return 0
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.tmp"
    chmod 600 "$1.tmp"
    mv "$1.tmp" "$1"
}

newca() { # newca DIR CN
    newkey "$1/ca.key"
    [[ -s $1/ca.crt ]] && return 0
    ossl req -x509 -new -key "$1/ca.key" -sha256 -days 3650 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1/ca.crt.tmp"
    chmod 644 "$1/ca.crt.tmp"
    mv "$1/ca.crt.tmp" "$1/ca.crt"
}

# leaf CA_DIR FILE_STEM CN KIND: a certificate for FILE_STEM.key signed by CA_DIR/ca.*;
# KIND server (SAN localhost) or client.
leaf() {
    local ca=$1 stem=$2 cn=$3 kind=$4 ext=$work/ext.cnf
    newkey "$stem.key"
    [[ -s $stem.crt ]] && return 0
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        if [[ $kind == server ]]; then
            echo "extendedKeyUsage=serverAuth"
            echo "subjectAltName=DNS:localhost,IP:127.0.0.1"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } > "$ext"
    ossl req -new -key "$stem.key" -subj "/CN=$cn" -out "$work/req.csr"
    ossl x509 -req -in "$work/req.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 825 -extfile "$ext" \
        -out "$stem.crt.tmp"
    chmod 644 "$stem.crt.tmp"
    mv "$stem.crt.tmp" "$stem.crt"
}

# The CA's database for `openssl ca` (expired and revoked certificates, the CRL), kept in
# OUT_DIR/ca-db so revocations accumulate across runs.
ca_conf() {
    mkdir -p "$out/ca-db"
    [[ -f $out/ca-db/index.txt ]] || : > "$out/ca-db/index.txt"
    [[ -s $out/ca-db/serial ]] || openssl rand -hex 16 > "$out/ca-db/serial"
    [[ -s $out/ca-db/crlnumber ]] || echo 1000 > "$out/ca-db/crlnumber"
    cat > "$work/ca.cnf" << EOF
[ ca ]
default_ca = dev
[ dev ]
database = $out/ca-db/index.txt
serial = $out/ca-db/serial
crlnumber = $out/ca-db/crlnumber
new_certs_dir = $work
certificate = $out/ca.crt
private_key = $out/ca.key
default_md = sha256
default_days = 825
# A development CRL must not lapse under a long-lived dev PKI: with crlfile set, mosquitto
# refuses every client once the CRL's nextUpdate has passed.
default_crl_days = 3650
policy = any
unique_subject = no
copy_extensions = none
x509_extensions = client
[ any ]
commonName = supplied
[ client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
EOF
}

gencrl() {
    ossl ca -batch -config "$work/ca.cnf" -gencrl -out "$out/ca.crl.tmp"
    chmod 644 "$out/ca.crl.tmp"
    mv "$out/ca.crl.tmp" "$out/ca.crl"
}

ca_sign() { # ca_sign KEY CN OUT_CRT [openssl ca date options...]
    local key=$1 cn=$2 crt=$3
    shift 3
    ossl req -new -key "$key" -subj "/CN=$cn" -out "$work/ca.csr"
    ossl ca -batch -config "$work/ca.cnf" -notext "$@" -in "$work/ca.csr" -out "$crt.tmp"
    chmod 644 "$crt.tmp"
    mv "$crt.tmp" "$crt"
}

ca_conf
if [[ $revoke ]]; then
    for id in "$@"; do
        [[ -s $out/$id.crt ]] || die "no certificate $out/$id.crt to revoke"
        serial=$(openssl x509 -in "$out/$id.crt" -noout -serial | cut -d= -f2)
        # already revoked (index.txt: status R, ..., serial in the 4th field): nothing to do
        awk -F'\t' -v s="$serial" '$1 == "R" && toupper($4) == toupper(s) { f = 1 } END { exit !f }' \
            "$out/ca-db/index.txt" && continue
        ossl ca -batch -config "$work/ca.cnf" -revoke "$out/$id.crt"
    done
    gencrl
    echo "pki.sh: revoked $*; $out/ca.crl updated (reload or restart the broker to apply it)"
    exit 0
fi

newca "$out" "efc development CA"
leaf "$out" "$out/broker" localhost server
leaf "$out" "$out/coordinator" coordinator client
for id in "$@"; do
    leaf "$out" "$out/$id" "$id" client
done

first=$1
newca "$out/foreign" "efc foreign CA"
leaf "$out/foreign" "$out/foreign/client" "$first" client
newkey "$out/foreign/selfsigned.key"
if [[ ! -s $out/foreign/selfsigned.crt ]]; then
    ossl req -x509 -new -key "$out/foreign/selfsigned.key" -sha256 -days 825 -subj "/CN=$first" \
        -out "$out/foreign/selfsigned.crt"
    chmod 644 "$out/foreign/selfsigned.crt"
fi

# An expired certificate from the real CA: `openssl ca` takes explicit start and end dates.
newkey "$out/expired/client.key"
if [[ ! -s $out/expired/client.crt ]]; then
    ca_sign "$out/expired/client.key" "$first" "$out/expired/client.crt" \
        -startdate 20200101000000Z -enddate 20200102000000Z
fi
# A revoked one: valid dates, listed in the CRL.
newkey "$out/revoked/client.key"
if [[ ! -s $out/revoked/client.crt ]]; then
    ca_sign "$out/revoked/client.key" "$first" "$out/revoked/client.crt"
    ossl ca -batch -config "$work/ca.cnf" -revoke "$out/revoked/client.crt"
    rm -f "$out/ca.crl"
fi
[[ -s $out/ca.crl ]] || gencrl

chmod 600 "$out"/*.key "$out"/foreign/*.key "$out"/expired/*.key "$out"/revoked/*.key
echo "pki.sh: PKI in $out (CA, CRL, broker, coordinator, $# device(s): $*;" \
    "foreign/, expired/, revoked/ for tests)"
