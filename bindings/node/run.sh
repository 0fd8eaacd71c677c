#!/usr/bin/env bash
# Installs the npm dependencies (from package-lock.json) if missing or stale,
# then runs the Node binding's tests against target/release/libherald.so, the
# TypeScript check of index.d.ts, the examples shown in the docs (and checks
# the docs show them verbatim), and the npm package test.
set -euo pipefail
cd "$(dirname "$0")"
export HERALD_LIB="${HERALD_LIB:-$(cd ../.. && pwd)/target/release/libherald.so}"
# koffi.node.poll (koffi >= 3) is what subscribers wait with.
if ! node -e "process.exit(typeof require('koffi').node?.poll === 'function' ? 0 : 1)" >/dev/null 2>&1 \
    || [ ! -x node_modules/.bin/tsc ] || [ ! -d node_modules/@types/node ]; then
    npm ci --no-audit --no-fund
fi
node --test test/*.test.js
npx --no-install tsc -p test/types/tsconfig.json
node examples/quickstart.js | diff -u examples/quickstart.expected -
node check_docs.js README.md ../../docs/EMBEDDING.md
./package_test.sh
