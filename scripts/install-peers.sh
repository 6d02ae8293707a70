#!/bin/sh
# Installs the Debian peers the interop tests use (GnuTLS, tshark, libcoap) and the tools that
# build tinydtls (PyPI's DTLSSocket, which `make peers` then builds into the venv: autoconf,
# automake, a C compiler and the Python headers) when they are missing and we are root. OpenSSL is
# part of the base system. Without root, the tests skip (or fail under CI).
# PYTHON: the interpreter the venv is made from (its headers are the ones the build needs).
set -e
missing=""
command -v gnutls-cli >/dev/null 2>&1 || missing="$missing gnutls-bin"
command -v tshark >/dev/null 2>&1 || missing="$missing tshark"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v coap-client-gnutls >/dev/null 2>&1 || missing="$missing libcoap3-bin"
command -v autoconf >/dev/null 2>&1 || missing="$missing autoconf"
command -v automake >/dev/null 2>&1 || missing="$missing automake"
command -v gcc >/dev/null 2>&1 || missing="$missing gcc libc6-dev"
"${PYTHON:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || missing="$missing python3-dev"
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
