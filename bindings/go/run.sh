#!/usr/bin/env bash
# Runs everything of the Go binding (needs `cargo build -p herald-ffi
# --release` and Debian's golang-go; no network: GOPROXY=off):
#  - go vet and go test of this module against target/release, with the
#    herald_nopkgconfig tag and CGO_CFLAGS/CGO_LDFLAGS (the documented
#    alternative to pkg-config), the new calls' tests again under
#    GODEBUG=cgocheck=2;
#  - the quickstart example, built and run, and the copies of it in
#    README.md and docs/EMBEDDING.md checked identical to it;
#  - module_test.sh: a module outside the repository built against an
#    installed libherald with pkg-config, shared (rpath) and static.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
lib="${HERALD_LIB_DIR:-$repo/target/release}"
# Programs linked with -lherald load it by its SONAME (libherald.so.MAJOR).
ln -sfn libherald.so "$lib/libherald.so.0"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off CGO_ENABLED=1
export CGO_CFLAGS="-I$repo/include" CGO_LDFLAGS="-L$lib -lherald -Wl,-rpath,$lib"
unset LD_LIBRARY_PATH
cd "$here"

echo "go: vet and test (herald_nopkgconfig, target/release)"
unformatted="$(gofmt -l .)"
[[ -z "$unformatted" ]] || { echo "not gofmt-formatted: $unformatted" >&2; exit 1; }
go vet -tags herald_nopkgconfig ./...
go test -tags herald_nopkgconfig -count=1 -v ./... 2>&1 | grep -v '^=== RUN'
# cgocheck=2 also catches Go pointers stored into C memory (the event
# array PublishBatch builds); slow, so only the tests of the newer calls.
GODEBUG=cgocheck=2 go test -tags herald_nopkgconfig -count=1 \
    -run 'Correlation|PublishBatch|ConsumerAck|Presence|Panic|BadCalls' .

echo "go: quickstart example"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -tags herald_nopkgconfig -o "$bin/quickstart" ./examples/quickstart
out="$("$bin/quickstart")"
printf '%s\n' "$out"
grep -q 'order.created {"id":1} correlation="req-1"' <<<"$out" ||
    { echo "quickstart: first event missing" >&2; exit 1; }

# The docs show the example verbatim: the Go block after the marker line.
for doc in "$here/README.md" "$repo/docs/EMBEDDING.md"; do
    awk '/^<!-- example: bindings\/go\/examples\/quickstart\/main.go -->$/ { m = 1; next }
         m && /^```go$/ { p = 1; next }
         p && /^```$/ { exit }
         p { print }' "$doc" >"$bin/doc.go"
    if ! cmp -s "$bin/doc.go" examples/quickstart/main.go; then
        echo "$doc: the Go example differs from examples/quickstart/main.go:" >&2
        diff -u examples/quickstart/main.go "$bin/doc.go" >&2 || true
        exit 1
    fi
done
echo "go: docs show examples/quickstart/main.go verbatim"

"$here/module_test.sh"
