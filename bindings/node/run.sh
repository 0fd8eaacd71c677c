#!/usr/bin/env bash
# Installs the npm dependencies (from package-lock.json) if missing or stale
# and runs the Node binding's tests against target/release/libherald.so.
set -euo pipefail
cd "$(dirname "$0")"
export HERALD_LIB="${HERALD_LIB:-$(cd ../.. && pwd)/target/release/libherald.so}"
# koffi.node.poll (koffi >= 3) is what subscribers wait with.
if ! node -e "process.exit(typeof require('koffi').node?.poll === 'function' ? 0 : 1)" >/dev/null 2>&1; then
    npm ci --no-audit --no-fund
fi
node --test test/*.test.js
