#!/usr/bin/env bash
# Builds the herald-client package (ESM, CommonJS, browser bundle, types),
# type-checks it strictly, enforces the size budget, then runs its tests
# against a fresh `herald serve` per test file on free loopback ports: Node's
# test runner (the npm `ws` and `eventsource` packages standing in for the
# browser's classes) and headless Chromium (Debian's `chromium`, driven by
# playwright-core) loading the built bundle. Installs what is missing
# (idempotently).
#
#   clients/js/run.sh                          builds target/debug/herald first
#   HERALD_BIN=/path/to/herald clients/js/run.sh   uses that binary instead
set -euo pipefail
if [[ -n "${HERALD_BIN:-}" ]]; then HERALD_BIN="$(realpath "$HERALD_BIN")"; fi
cd "$(dirname "$0")"

if [[ ! -x /usr/bin/chromium ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

if [[ ! -d node_modules ]] || ! node -e "require('ws'); require('eventsource'); require('playwright-core'); require('esbuild'); require('typescript')" >/dev/null 2>&1; then
    npm ci --no-audit --no-fund
fi

# Build, strict type check and size budget (fails over budget).
node scripts/build.mjs

if [[ -z "${HERALD_BIN:-}" ]]; then
    (cd ../.. && cargo build -p herald-server --bin herald --locked)
    HERALD_BIN="$(cd ../.. && pwd)/target/debug/herald"
fi
[[ -x "$HERALD_BIN" ]] || { echo "no herald binary at $HERALD_BIN" >&2; exit 1; }
export HERALD_BIN

# Files run side by side: most of their time is waiting (expiries, backoff).
node --test --test-concurrency=4 test/*.test.js
