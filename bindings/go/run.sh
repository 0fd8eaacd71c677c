#!/usr/bin/env bash
# Runs the Go binding's tests against target/release/libherald.so
# (needs `cargo build -p herald-ffi --release` and Debian's golang-go).
set -euo pipefail
cd "$(dirname "$0")"
lib="${HERALD_LIB_DIR:-$(cd ../.. && pwd)/target/release}"
# Programs linked with -lherald load it by its SONAME (libherald.so.MAJOR).
ln -sfn libherald.so "$lib/libherald.so.0"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off CGO_ENABLED=1
export CGO_LDFLAGS="-L$lib" LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
go vet ./...
go test -count=1 -v ./... 2>&1 | grep -v '^=== RUN'
