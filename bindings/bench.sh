#!/usr/bin/env bash
# Events/s received (and published) through the Node, Go and JVM bindings,
# 64-byte events, medians of 5 rounds (docs/BENCHMARKS.md, "C ABI").
#   bindings/bench.sh [EVENTS]      (default 500000)
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-500000}"
lib="$PWD/target/release"
cargo build -p herald-ffi --release --locked >/dev/null
(cd bindings/node && HERALD_LIB="$lib/libherald.so" node bench.js "$events" 5)
(cd bindings/go && GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off CGO_CFLAGS="-I$PWD/../../include" \
    CGO_LDFLAGS="-L$lib -lherald -Wl,-rpath,$lib" HERALD_BENCH="$events" \
    go test -tags herald_nopkgconfig -count=1 -run TestBenchReceive -v . | sed -n 's/^ *bench_test.go:[0-9]*: //p')
out=target/java-bench
rm -rf "$out" && mkdir -p "$out"
javac -cp /usr/share/java/jna.jar -d "$out" bindings/java/src/dev/herald/*.java bindings/java/test/dev/herald/Bench.java
java -cp "$out:/usr/share/java/jna.jar" -Djna.library.path="$lib" dev.herald.Bench "$events" 5
