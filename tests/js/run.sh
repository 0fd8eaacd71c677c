#!/usr/bin/env bash
# End-to-end tests of the herald server with real JavaScript clients: Node's
# test runner with the npm `ws`, `eventsource` and `@stomp/stompjs` packages, and headless
# Chromium (Debian's `chromium`) driven by playwright-core, and TLS (`https://`,
# `wss://`) with certificates made by `openssl`. Installs what is
# missing (idempotently), then runs them against a fresh `herald serve` per
# test file on free loopback ports.
#
#   tests/js/run.sh                          builds target/debug/herald first
#   HERALD_BIN=/path/to/herald tests/js/run.sh   uses that binary instead
set -euo pipefail
if [[ -n "${HERALD_BIN:-}" ]]; then HERALD_BIN="$(realpath "$HERALD_BIN")"; fi
cd "$(dirname "$0")"

if [[ ! -x /usr/bin/chromium ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

# tls.test.js makes its certificates with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi

if [[ ! -d node_modules ]] || ! node -e "require('ws'); require('eventsource'); require('playwright-core'); require('@stomp/stompjs')" >/dev/null 2>&1; then
    npm ci --no-audit --no-fund
fi

if [[ -z "${HERALD_BIN:-}" ]]; then
    (cd ../.. && cargo build -p herald-server --bin herald --locked)
    HERALD_BIN="$(cd ../.. && pwd)/target/debug/herald"
fi
[[ -x "$HERALD_BIN" ]] || { echo "no herald binary at $HERALD_BIN" >&2; exit 1; }
export HERALD_BIN

node --test test/ws.test.js test/sse.test.js test/browser.test.js test/stomp.test.js test/tls.test.js
