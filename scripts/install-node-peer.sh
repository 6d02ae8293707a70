#!/bin/sh
# Installs the Node.js peer of the interop tests (tests/test_interop_node.py): node-dtls-client,
# pinned by tests/node_peer/package-lock.json, into tests/node_peer/node_modules (git-ignored).
# Installs Debian's nodejs and npm first when they are missing and we are root. Without them and
# without root, the tests skip (or fail under CI).
set -e
dir="$(cd "$(dirname "$0")/../tests/node_peer" && pwd)"
missing=""
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "peers missing:$missing (run as root or install them; the node interop tests will skip)" >&2
    exit 0
  fi
  echo "installing peers:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq $missing >/dev/null
fi
[ -f "$dir/node_modules/node-dtls-client/package.json" ] && exit 0
echo "installing node peer: node-dtls-client (tests/node_peer)"
cd "$dir"
# Not `npm ci`: node-aead-crypto, an optional dependency of node-dtls-client, names platform
# packages that the lock file does not hold, so `npm ci` refuses the lock as out of sync. The
# lock still pins every version; --no-save leaves it as committed; --omit=optional skips that
# native module, which node-dtls-client does not load on Node.js 10 or later (it uses crypto).
npm install --no-audit --no-fund --no-save --omit=optional --loglevel=error
