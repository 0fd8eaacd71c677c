#!/usr/bin/env bash
# Installs koffi (npm, from package-lock.json) if missing and runs the Node
# binding's tests against target/release/libherald.so.
set -euo pipefail
cd "$(dirname "$0")"
export HERALD_LIB="${HERALD_LIB:-$(cd ../.. && pwd)/target/release/libherald.so}"
if ! node -e "require('koffi')" >/dev/null 2>&1; then
    npm ci --no-audit --no-fund
fi
node --test test/herald.test.js
