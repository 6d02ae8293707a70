#!/bin/sh
# Installs the Debian peers the interop tests use (GnuTLS, tshark, libcoap) when they are missing and we
# are root. OpenSSL is part of the base system. Without root, the tests skip (or fail under CI).
set -e
missing=""
command -v gnutls-cli >/dev/null 2>&1 || missing="$missing gnutls-bin"
command -v tshark >/dev/null 2>&1 || missing="$missing tshark"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v coap-client-gnutls >/dev/null 2>&1 || missing="$missing libcoap3-bin"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "peers missing:$missing (run as root or install them; interop tests will skip)" >&2
  exit 0
fi
echo "installing peers:$missing"
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
